"""The Statistics tab: per-head statistics of the selected stack, a sortable table and a grid.

The statistics of a capture are computed once in a job (kind "stats", superseded by a newer
capture's, cancellable); the grid is :mod:`analysis.views.stats` (data and drawer, the same as
every export), coloured by the statistic chosen here (kept in the viewer state as ``stat``).
Double-clicking a row or clicking a grid cell opens that head.
"""

from __future__ import annotations

import html
import math

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from analysis import stats as stats_mod
from analysis.errors import Cancelled, HeadmapError
from analysis.figures import ViewInputs
from analysis.result import Capture
from analysis.views.captions import view_caption
from analysis.views.stats import STAT_HELP, StatsData, stat_label, stats_data

from ..views.canvas import DrawnView
from .base import Caption, StateTab, TabContext


def stats_job(capture: Capture, task=None) -> list[dict]:
    """Every layer/head row of every stack of ``capture`` (:func:`analysis.stats.stats_rows`)."""
    if task is not None:
        task.report("stats", None, "computing head statistics…")
    return stats_mod.stats_rows(capture, task=task)


def tags_text(tags) -> str:
    """``stats_rows`` joins tags with ';'; the table lists them with commas."""
    if isinstance(tags, str):
        return ", ".join(t for t in tags.split(";") if t)
    return ", ".join(tags)


def tag_rules() -> list[str]:
    """One line per tag of :mod:`analysis.stats`, with the threshold it uses."""
    s = stats_mod
    rules = [
        ("previous-token", f"to previous ≥ {s.PREVIOUS_THRESHOLD:g}"),
        ("next-token", f"to next ≥ {s.NEXT_THRESHOLD:g}"),
        ("self", f"to self ≥ {s.SELF_THRESHOLD:g}"),
        ("first-token", f"to first ≥ {s.FIRST_THRESHOLD:g} (an attention sink or a [CLS] head)"),
        ("special", f"to special ≥ {s.SPECIAL_THRESHOLD:g} ([SEP]/[CLS]/</s> as a 'no-op')"),
        ("punctuation", f"to punctuation ≥ {s.PUNCTUATION_THRESHOLD:g}"),
        ("broad", f"entropy ≥ {s.BROAD_THRESHOLD:g} × the entropy of uniform attention over the keys each "
                  "row can see (ln K; ln(i+1) for row i of a causal stack)"),
    ]
    return [f"{tag}: {rule}" for tag, rule in rules]


class FloatDelegate(QStyledItemDelegate):
    """Shows floats with 3 decimals while the model keeps the full value (numeric sorting)."""

    def displayText(self, value, locale) -> str:
        if isinstance(value, float):
            return "—" if np.isnan(value) else f"{value:.3f}"
        return super().displayText(value, locale)


class NumberItem(QTableWidgetItem):
    """A numeric cell: sorts by value; NaN (not defined for this head) counts as above every number."""

    def __init__(self, value: float | int) -> None:
        super().__init__()
        self.setData(Qt.ItemDataRole.DisplayRole, value)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a = self.data(Qt.ItemDataRole.DisplayRole)
        b = other.data(Qt.ItemDataRole.DisplayRole)
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return str(a) < str(b)
        # Python bools only: a numpy bool returned to Qt's sort crashes PySide
        if math.isnan(fa) or math.isnan(fb):
            return bool(not math.isnan(fa) and math.isnan(fb))
        return bool(fa < fb)


class StatsGridView(DrawnView):
    """The layers × heads grid; click a cell to open the head."""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__("stats", parent, theme)
        self.on_cell = None  # callable(layer, head) set by the tab
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

    @property
    def values(self) -> np.ndarray:
        return self.drawer.values

    def cell_at(self, event) -> tuple[int, int] | None:
        if event.inaxes is not self.drawer.ax:
            return None
        return self.drawer.cell_at(event.xdata, event.ydata)

    def describe(self, layer: int, head: int) -> str:
        v = self.values[layer, head]
        shown = "not defined" if np.isnan(v) else f"{v:.3f}"
        return f"layer {layer}, head {head}: {stat_label(self.data.stat)} = {shown} (click to open the head)"

    def _on_motion(self, event) -> None:
        cell = self.cell_at(event)
        self.set_hover(self.describe(*cell) if cell else "")

    def _on_click(self, event) -> None:
        cell = self.cell_at(event)
        if cell is not None and self.on_cell is not None:
            self.on_cell(*cell)


class StatsTab(StateTab, QWidget):
    """Per-head statistics of the selected stack: a sortable table and a layers × heads grid."""

    figure_view = "stats"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.capture: Capture | None = None  # the capture whose rows are in ``_rows``
        self._rows: list[dict] = []
        self._pending: Capture | None = None
        self.data: StatsData | None = None
        self.stat_names: tuple[str, ...] = tuple(stats_mod.STAT_NAMES)
        self.heading = Caption(rich=True)
        self.stat_combo = QComboBox()
        for name in self.stat_names:
            self.stat_combo.addItem(stat_label(name), name)
            self.stat_combo.setItemData(self.stat_combo.count() - 1, STAT_HELP.get(name, name), Qt.ItemDataRole.ToolTipRole)
        self.stat_combo.setToolTip("the statistic coloured in the layers × heads grid")
        self.stat_help = Caption(rich=True)
        self.columns = ["layer", "head", "tags", *self.stat_names]
        self.table = self._make_table()
        self.grid = StatsGridView()
        self.view = self.grid  # the tab's figure (every tab has a ``view``)
        self.grid.on_cell = self.open_head
        self.caption = Caption(self._caption_html(), rich=True)
        self._table_key = None  # (id(capture), stack) the table shows: never the capture (== compares arrays)
        self._build_layout()
        self.stat_combo.currentIndexChanged.connect(lambda _i: self.state.update(stat=self.stat_combo.currentData()))
        self.table.cellDoubleClicked.connect(self._on_row_double_clicked)
        self.attach(ctx)

    @property
    def stack(self) -> str | None:
        return self.state.stack

    def _make_table(self) -> QTableWidget:
        t = QTableWidget(0, len(self.columns))
        t.setHorizontalHeaderLabels([stat_label(c).replace(" ", "\n") for c in self.columns])
        for i, c in enumerate(self.columns):
            tip = STAT_HELP.get(c) or {"tags": "head types whose thresholds this head passes (see below)"}.get(c, c)
            t.horizontalHeaderItem(i).setToolTip(tip)
        t.setItemDelegate(FloatDelegate(t))
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.verticalHeader().setVisible(False)
        # compact fixed widths: two-line headers, numbers with 3 decimals
        fm = t.fontMetrics()
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for i, c in enumerate(self.columns):
            words = max((fm.horizontalAdvance(w) for w in stat_label(c).split(" ")), default=0)
            t.setColumnWidth(i, 130 if c == "tags" else max(words, fm.horizontalAdvance("00.000")) + 24)
        t.setSortingEnabled(True)
        t.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        t.setToolTip("click a column header to sort; double-click a row to open that head")
        return t

    def _build_layout(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.table, 1)
        ll.addWidget(self.caption)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("colour the grid by"))
        row.addWidget(self.stat_combo)
        row.addStretch(1)
        rl.addLayout(row)
        rl.addWidget(self.stat_help)
        rl.addWidget(self.grid, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([700, 360])
        lay = QVBoxLayout(self)
        lay.addWidget(self.heading)
        lay.addWidget(split, 1)

    @staticmethod
    def _caption_html() -> str:
        items = "".join(f"<br>• {html.escape(r)}" for r in tag_rules())
        return (
            "<b>Tags</b>: a head gets every tag whose threshold its statistic reaches (averaged over the "
            f"query rows).{items}<br>"
            "Head types after Clark et al. 2019, <i>What does BERT look at?</i> (heads attending to the "
            "previous/next token, to [SEP] and to punctuation, broad heads) and Xiao et al. 2023, "
            "<i>Efficient streaming language models with attention sinks</i> (heads that park attention "
            "on the first token)."
        )

    # -- state --------------------------------------------------------------------------------
    def export_request(self):
        cap = self.state.capture
        if cap is None:
            raise HeadmapError("nothing to export yet; run a sentence first")
        rows = self._rows if self.capture is cap else None
        return self.state.spec_for("stats"), ViewInputs(stats_rows=rows)

    def refresh(self) -> None:
        cap = self.state.capture
        if cap is None:
            self.heading.setText("")
            self.grid.show_empty(self.nothing_yet())
            return
        self.grid.show_content()
        spec = self.state.spec_for("stats")
        self.grid.set_theme(spec.theme)
        i = self.stat_combo.findData(spec.stat)
        if i >= 0 and i != self.stat_combo.currentIndex():
            self.stat_combo.blockSignals(True)
            self.stat_combo.setCurrentIndex(i)
            self.stat_combo.blockSignals(False)
        if cap is not self.capture:
            self._start(cap)
            return
        self._fill(spec)

    def _start(self, cap: Capture) -> None:
        if self._pending is cap:
            return
        self._pending = cap
        self.heading.setText("<b>computing head statistics…</b>")
        job = self.ctx.jobs.start("stats", stats_job, cap)
        job.finished.connect(lambda rows, c=cap: self._on_rows(c, rows))
        job.failed.connect(self._on_failed)

    def _on_rows(self, cap: Capture, rows) -> None:
        self.capture, self._rows, self._pending = cap, list(rows), None
        self._table_key = None
        if self.state.capture is cap:
            self.ctx.status(f"head statistics of {len(self._rows)} heads ready")
        self.mark_stale()

    def _on_failed(self, exc) -> None:
        self._pending = None
        if isinstance(exc, Cancelled):
            self.heading.setText("<b>the statistics were cancelled</b>; they are computed again when this tab is shown")
            self._stale = True
            return
        self.heading.setText("<b>the statistics could not be computed</b> (see the message)")
        self.ctx.report(exc)

    def rows_for(self, stack: str) -> list[dict]:
        """The ``stats_rows`` of one stack (layer-major order)."""
        return [r for r in self._rows if r["stack"] == stack]

    def values(self, stat: str) -> np.ndarray:
        """``[L, H]`` of ``stat`` for the shown stack."""
        out = np.full(self.capture.shape(self.stack)[:2], np.nan)
        for r in self.rows_for(self.stack):
            out[r["layer"], r["head"]] = np.nan if r[stat] is None else float(r[stat])
        return out

    def _fill(self, spec) -> None:
        self.data = stats_data(self.capture, spec, ViewInputs(stats_rows=self._rows))
        if self._table_key != (id(self.capture), self.data.stack):
            self._fill_table()
            self._table_key = (id(self.capture), self.data.stack)
        text = f"<i>{html.escape(stat_label(spec.stat))}</i>: {html.escape(STAT_HELP.get(spec.stat, spec.stat))}"
        if self.data.undefined:
            text += f" <b>Not defined for this stack</b> ({self.data.undefined}): the grid is empty."
        self.stat_help.setText(text)
        self.grid.show_data(self.data)
        self.grid.set_caption(view_caption(self.capture, spec, ViewInputs(stats_rows=self._rows)), spec.caption)
        self.caption.setVisible(spec.caption)

    def _fill_table(self) -> None:
        cap, name = self.capture, self.data.stack
        rows = self.data.rows
        n_layers, n_heads = cap.shape(name)[:2]
        from analysis.views.common import stack_title

        self.heading.setText(
            f"<b>{html.escape(cap.model)}</b> · {stack_title(cap, name)} · {n_layers} layers × {n_heads} heads · "
            f"{len(cap.query_tokens(name))} tokens. One row per head (click a header to sort). Double-click a row "
            "or click a grid cell to open that head; the outline marks the head chosen in the toolbar."
        )
        t = self.table
        t.setSortingEnabled(False)
        t.clearContents()
        t.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, c in enumerate(self.columns):
                if c == "tags":
                    it = QTableWidgetItem(tags_text(r.get("tags", "")))
                    it.setToolTip(it.text())
                elif c in ("layer", "head"):
                    it = NumberItem(int(r[c]))
                else:
                    it = NumberItem(np.nan if r[c] is None else float(r[c]))
                t.setItem(i, j, it)
        t.setSortingEnabled(True)

    # -- opening a head -------------------------------------------------------------------------
    def open_head(self, layer: int, head: int) -> None:
        self.state.select(layer=int(layer), head=int(head), stack=self.stack)
        self.state.tab_requested.emit("Head")

    def _on_row_double_clicked(self, row: int, _col: int) -> None:
        layer = self.table.item(row, self.columns.index("layer")).data(Qt.ItemDataRole.DisplayRole)
        head = self.table.item(row, self.columns.index("head")).data(Qt.ItemDataRole.DisplayRole)
        self.open_head(layer, head)
