"""The Statistics, Rollout and Compare tabs of the window.

Each tab is a plain ``QWidget`` added with :meth:`gui.main_window.MainWindow.add_tab`; the window
calls ``show_window_state(window)`` when the tab is visible and the capture or the selection
changed. The tabs only ask ``analysis/`` for numbers (:mod:`analysis.stats`,
:mod:`analysis.rollout`, :mod:`analysis.viewdata`) and push them into artists of one canvas
created once. Long work (the statistics of a whole capture, attention flow) runs in the window's
:class:`gui.workers.JobRunner`; late results of superseded jobs are dropped by the runner, results
for a capture that is no longer shown are cached or ignored here.
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import replace

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from analysis import rollout as rollout_mod
from analysis import stats as stats_mod
from analysis.errors import HeadmapError
from analysis.figures import clean_label
from analysis.result import SELF_STACKS, Capture
from analysis.tasks import TaskState
from analysis.viewdata import heatmap_data

from ..views.canvas import CanvasView

#: human-readable stack names for captions
_STACK_WORDS = {
    "attentions": "self-attention",
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention",
    "cross_attentions": "cross-attention",
}


def _stack_words(capture: Capture, name: str) -> str:
    if name == "attentions" and capture.kind == "decoder":
        return "causal self-attention"
    return _STACK_WORDS.get(name, name)


def _tick_step(n: int, pixels: float, font_px: float) -> int:
    """Label every ``step``-th token so labels of ``font_px`` never overlap in ``pixels``."""
    fit = max(1, int(pixels / (font_px * 1.2)))
    return max(1, int(np.ceil(n / fit)))


def _sync_theme(view: CanvasView, name: str) -> None:
    if view.theme.name != name:
        view.set_theme(name)


class _Caption(QLabel):
    """A word-wrapped label that always gets the height its text needs at its current width
    (a plain QLabel next to an expanding canvas gets squeezed and cuts lines off)."""

    def __init__(self, text: str = "", rich: bool = False, warning: bool = False) -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.AutoText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        if warning:
            self.setStyleSheet("QLabel { color: #c0392b; font-weight: bold; }")

    def _needed(self, hint: QSize) -> QSize:
        width = self.width() if self.width() > 50 else 900
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(width)))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return self._needed(super().minimumSizeHint())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return self._needed(super().sizeHint())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.heightForWidth(self.width()) != self.height():
            self.updateGeometry()


def _fit_spin(spin: QSpinBox) -> None:
    """Wide enough for prefix, the largest value and suffix (the default cuts 'layer 11 / 11')."""
    text = f"{spin.prefix()}{spin.maximum()}{spin.suffix()}"
    spin.setMinimumWidth(spin.fontMetrics().horizontalAdvance(text) + 42)


def _report(window, exc: BaseException) -> None:
    """Send a failure to the window: one sentence, the window keeps working."""
    if isinstance(exc, HeadmapError):
        window.show_error(str(exc))
    elif isinstance(exc, KeyError):  # Capture.resolve_stack explains itself in a KeyError
        window.show_error(str(exc.args[0]) if exc.args else str(exc))
    else:
        from ..main_window import error_message

        window.show_error(error_message(exc))


def _reports_failures(method):
    """Wrap ``show_window_state(self, window)``: a failure goes to ``window.show_error``."""

    @functools.wraps(method)
    def wrapper(self, window, *args, **kwargs):
        try:
            return method(self, window, *args, **kwargs)
        except Exception as exc:  # every failure becomes a message, never a crash
            _report(window, exc)
            return None

    return wrapper


# ============================================================================================
# jobs (run in the window's worker threads: plain functions, no Qt)
# ============================================================================================
def _stats_job(capture: Capture, task: TaskState | None = None) -> list[dict]:
    """Every layer/head row of every stack of ``capture`` (:func:`analysis.stats.stats_rows`)."""
    return stats_mod.stats_rows(capture, task=task)


def _flow_job(att: np.ndarray, fusion: str, residual: float = 0.5, output_layer: int = -1,
              task: TaskState | None = None) -> np.ndarray:
    """Attention flow ``[S, S]`` of a self-attention stack ``att`` ``[L, H, S, S]``
    (:func:`analysis.rollout.attention_flow`, which reports progress to ``task`` and checks its
    cancel signal between batches of max-flow problems)."""
    return rollout_mod.attention_flow(
        att, fusion=fusion, residual=residual, output_layer=output_layer, task=task
    )


# ============================================================================================
# Statistics
# ============================================================================================
#: one line per statistic: what the number means (header tooltips and the caption)
STAT_HELP = {
    "entropy": "entropy of each query's attention row in nats, averaged over queries (low = focused, high = spread out)",
    "mean_distance": "attention-weighted distance |query − key| in tokens, averaged over queries",
    "to_first": "attention mass on the first key token ([CLS], <s>: often a 'sink' or no-op)",
    "to_previous": "attention mass on the previous token (query − 1), averaged over queries 1…",
    "to_self": "attention mass on the query's own token",
    "to_next": "attention mass on the next token (query + 1)",
    "max_weight": "largest weight of each row, averaged over queries ('confidence', Voita et al. 2019)",
    "to_special": "attention mass on special key tokens ([CLS], [SEP], </s>, …)",
    "to_punctuation": "attention mass on punctuation key tokens (. , ! ? …)",
}


def _stat_label(name: str) -> str:
    return name.replace("_", " ")


def _number(value) -> float:
    """A statistic as a float: NaN where it is undefined (``None`` in :func:`stats_rows`)."""
    return np.nan if value is None else float(value)


def _tags_text(tags) -> str:
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


class _FloatDelegate(QStyledItemDelegate):
    """Shows floats with 3 decimals while the model keeps the full value (numeric sorting)."""

    def displayText(self, value, locale) -> str:  # noqa: N802 - Qt API
        if isinstance(value, float):
            return "—" if np.isnan(value) else f"{value:.3f}"
        return super().displayText(value, locale)


class _NumberItem(QTableWidgetItem):
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


class StatsGridView(CanvasView):
    """Layers × heads of one statistic: ONE image with a colour bar; click a cell to open the head."""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.figure.set_layout_engine("constrained")
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.image = self.ax.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", origin="upper")
        self.cbar = self.figure.colorbar(self.image, ax=self.ax, fraction=0.05, pad=0.02, aspect=40)
        self.marker = Rectangle((-0.5, -0.5), 1, 1, fill=False, lw=2.0, ec="#ff3d3d")
        self.ax.add_patch(self.marker)
        self.ax.xaxis.tick_top()
        self.ax.xaxis.set_label_position("top")
        self.values: np.ndarray = np.zeros((0, 0))
        self.stat = ""
        self.on_cell = None  # callable(layer, head) set by the tab
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self._apply_theme_extra()

    def _apply_theme_extra(self) -> None:
        t = self.theme
        for ax in (self.ax, self.cbar.ax):
            ax.tick_params(colors=t.grid_color, labelcolor=t.text_color, labelsize=t.tick_size)
        self.ax.xaxis.label.set_color(t.text_color)
        self.ax.yaxis.label.set_color(t.text_color)
        self.cbar.ax.yaxis.label.set_color(t.text_color)

    def set_values(self, values: np.ndarray, stat: str, cmap: str, selected: tuple[int, int] | None) -> None:
        """Show ``values`` ``[L, H]`` of statistic ``stat``; outline the ``selected`` (layer, head)."""
        self.values = np.asarray(values, dtype=np.float64)
        self.stat = stat
        n_layers, n_heads = self.values.shape
        self.image.set_data(np.ma.masked_invalid(self.values))
        self.image.set_extent((-0.5, n_heads - 0.5, n_layers - 0.5, -0.5))
        finite = self.values[np.isfinite(self.values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-6
        self.image.set_cmap(mpl.colormaps[cmap].with_extremes(bad=self.theme.masked_color))
        self.image.set_norm(Normalize(lo, hi))
        self.cbar.update_normal(self.image)
        self.cbar.set_label(_stat_label(stat), color=self.theme.text_color)
        h, w = self.canvas.get_width_height()[::-1]
        font_px = self.theme.tick_size * self.figure.dpi / 72.0
        ys = _tick_step(n_layers, h * 0.8, font_px)
        xs = _tick_step(n_heads, w * 0.8, font_px * 2.5)
        self.ax.set_yticks(range(0, n_layers, ys), [f"L{i}" for i in range(0, n_layers, ys)])
        self.ax.set_xticks(range(0, n_heads, xs), [f"H{i}" for i in range(0, n_heads, xs)])
        self.ax.set_xlim(-0.5, n_heads - 0.5)
        self.ax.set_ylim(n_layers - 0.5, -0.5)
        self.ax.set_xlabel("head")
        self.ax.set_ylabel("layer")
        self.set_selected(selected, draw=False)
        self.redraw()

    def set_selected(self, selected: tuple[int, int] | None, draw: bool = True) -> None:
        if selected is None or not self.values.size:
            self.marker.set_visible(False)
        else:
            layer, head = selected
            self.marker.set_xy((head - 0.5, layer - 0.5))
            self.marker.set_visible(0 <= layer < self.values.shape[0] and 0 <= head < self.values.shape[1])
        if draw:
            self.redraw()

    def cell_at(self, event) -> tuple[int, int] | None:
        """(layer, head) under a mouse event, or None."""
        if event.inaxes is not self.ax or event.xdata is None or not self.values.size:
            return None
        layer, head = int(np.floor(event.ydata + 0.5)), int(np.floor(event.xdata + 0.5))
        if 0 <= layer < self.values.shape[0] and 0 <= head < self.values.shape[1]:
            return layer, head
        return None

    def describe(self, layer: int, head: int) -> str:
        v = self.values[layer, head]
        shown = "not defined" if np.isnan(v) else f"{v:.3f}"
        return f"layer {layer}, head {head}: {_stat_label(self.stat)} = {shown} (click to open the head)"

    def _on_motion(self, event) -> None:
        cell = self.cell_at(event)
        text = self.describe(*cell) if cell else ""
        self.set_hover(text)

    def _on_click(self, event) -> None:
        cell = self.cell_at(event)
        if cell is not None and self.on_cell is not None:
            self.on_cell(*cell)


class StatsTab(QWidget):
    """Per-head statistics of the selected stack: a sortable table and a layers × heads grid."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window_ = window
        self.capture: Capture | None = None  # the capture whose rows are in ``_rows``
        self._rows: list[dict] = []
        self._pending: Capture | None = None
        self.stack: str | None = None
        self.stat_names: tuple[str, ...] = tuple(stats_mod.STAT_NAMES)

        self.heading = _Caption(rich=True)
        self.stat_combo = QComboBox()
        for name in self.stat_names:
            self.stat_combo.addItem(_stat_label(name), name)
            self.stat_combo.setItemData(self.stat_combo.count() - 1, STAT_HELP.get(name, name), Qt.ItemDataRole.ToolTipRole)
        self.stat_combo.setToolTip("the statistic coloured in the layers × heads grid")
        self.stat_help = _Caption(rich=True)

        self.columns = ["layer", "head", "tags", *self.stat_names]
        self.table = QTableWidget(0, len(self.columns))
        self.table.setHorizontalHeaderLabels([_stat_label(c).replace(" ", "\n") for c in self.columns])
        for i, c in enumerate(self.columns):
            tip = STAT_HELP.get(c) or {"tags": "head types whose thresholds this head passes (see below)"}.get(c, c)
            self.table.horizontalHeaderItem(i).setToolTip(tip)
        self.table.setItemDelegate(_FloatDelegate(self.table))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        # compact fixed widths: two-line headers, numbers with 3 decimals (ResizeToContents reserves
        # room for a sort arrow in every header and pushes half the columns off screen)
        fm = self.table.fontMetrics()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for i, c in enumerate(self.columns):
            words = max((fm.horizontalAdvance(w) for w in _stat_label(c).split(" ")), default=0)
            wide = 130 if c == "tags" else max(words, fm.horizontalAdvance("00.000")) + 24
            self.table.setColumnWidth(i, wide)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setToolTip("click a column header to sort; double-click a row to open that head")

        self.grid = StatsGridView(theme=window.spec.theme)
        self.grid.on_cell = self._on_grid_cell
        self.caption = _Caption(self._caption_html(), rich=True)
        # keys hold id(capture), never the capture: Capture's dataclass == compares numpy arrays
        self._table_key = None  # (id(capture), stack) the table shows
        self._grid_key = None

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

        self.stat_combo.currentIndexChanged.connect(self._on_stat_changed)
        self.table.cellDoubleClicked.connect(self._on_row_double_clicked)
        window.runner.finished.connect(self._on_job_finished)
        window.runner.failed.connect(self._on_job_failed)
        self._on_stat_changed()

    # -- caption --------------------------------------------------------------------------------
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

    # -- window state -------------------------------------------------------------------------
    @_reports_failures
    def show_window_state(self, window) -> None:
        cap = window.capture
        if cap is None:
            return
        if self.grid.theme.name != window.spec.theme:
            _sync_theme(self.grid, window.spec.theme)
            self._grid_key = None
        self.stack = cap.resolve_stack(window.spec.stack)
        if cap is not self.capture:
            self._start(cap)
            return
        self._fill()

    def _start(self, cap: Capture) -> None:
        if self._pending is cap:
            return
        self._pending = cap
        self.heading.setText("<b>computing head statistics…</b>")
        self.window_.runner.start("stats", _stats_job, cap)

    def _on_job_finished(self, channel: str, result) -> None:
        if channel != "stats" or self._pending is None:
            return
        self.capture, self._rows, self._pending = self._pending, list(result), None
        self._table_key = self._grid_key = None
        if self.window_.capture is self.capture and self.isVisible():
            self.window_.statusBar().showMessage(f"head statistics of {len(self._rows)} heads ready")
            self._fill()
        elif self.window_.capture is not self.capture and self.isVisible():
            self.show_window_state(self.window_)

    def _on_job_failed(self, channel: str, _exc) -> None:
        if channel == "stats":  # the window already shows the message
            self._pending = None
            self.heading.setText("<b>the statistics could not be computed</b> (see the message)")

    def rows_for(self, stack: str) -> list[dict]:
        """The ``stats_rows`` of one stack (layer-major order)."""
        return [r for r in self._rows if r["stack"] == stack]

    def values(self, stat: str) -> np.ndarray:
        """``[L, H]`` of ``stat`` for the shown stack."""
        cap, name = self.capture, self.stack
        out = np.full(cap.shape(name)[:2], np.nan)
        for r in self.rows_for(name):
            out[r["layer"], r["head"]] = _number(r[stat])
        return out

    def _fill(self) -> None:
        """Refill the table when the capture or stack changed; always update the grid."""
        cap, name = self.capture, self.stack
        if self._table_key != (id(cap), name):
            self._fill_table()
            self._table_key = (id(cap), name)
        self._draw_grid()

    def _fill_table(self) -> None:
        cap, name = self.capture, self.stack
        rows = self.rows_for(name)
        n_layers, n_heads = cap.shape(name)[:2]
        self.heading.setText(
            f"<b>{html.escape(cap.model)}</b> · {_stack_words(cap, name)} · {n_layers} layers × {n_heads} heads · "
            f"{len(cap.query_tokens(name))} tokens. One row per head (click a header to sort). Double-click a row "
            "or click a grid cell to open that head; the red outline marks the head chosen in the toolbar."
        )
        t = self.table
        t.setSortingEnabled(False)
        t.clearContents()
        t.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, c in enumerate(self.columns):
                if c == "tags":
                    item = QTableWidgetItem(_tags_text(r.get("tags", "")))
                    item.setToolTip(item.text())
                elif c in ("layer", "head"):
                    item = _NumberItem(int(r[c]))
                else:
                    item = _NumberItem(_number(r[c]))
                t.setItem(i, j, item)
        t.setSortingEnabled(True)

    def _selected(self) -> tuple[int, int] | None:
        spec = self.window_.spec
        if spec.head is None or self.window_.capture is not self.capture:
            return None
        return spec.layer, spec.head

    def _draw_grid(self) -> None:
        stat = self.stat_combo.currentData()
        text = f"<i>{html.escape(_stat_label(stat))}</i>: {html.escape(STAT_HELP.get(stat, stat))}"
        if self.capture is None or self.stack is None:
            self.stat_help.setText(text)
            return
        values = self.values(stat)
        if not np.isfinite(values).any():
            why = ("cross-attention has no shared position axis"
                   if self.stack not in SELF_STACKS and stat in stats_mod.POSITIONAL_STATS else "no key token qualifies")
            text += f" <b>Not defined for this stack</b> ({why}): the grid is empty."
        self.stat_help.setText(text)
        cmap = self.window_.spec.cmap or self.grid.theme.cmap
        key = (id(self.capture), self.stack, stat, cmap, self.grid.theme.name)
        if key != self._grid_key:
            self.grid.set_values(values, stat, cmap, self._selected())
            self._grid_key = key
        else:
            self.grid.set_selected(self._selected())

    def _on_stat_changed(self, *_args) -> None:
        try:
            self._draw_grid()
        except Exception as exc:  # every failure becomes a message, never a crash
            _report(self.window_, exc)

    # -- opening a head -------------------------------------------------------------------------
    def open_head(self, layer: int, head: int) -> None:
        self.window_.select(layer=int(layer), head=int(head), stack=self.stack, tab="Head")

    def _on_grid_cell(self, layer: int, head: int) -> None:
        self.open_head(layer, head)

    def _on_row_double_clicked(self, row: int, _col: int) -> None:
        layer = self.table.item(row, self.columns.index("layer")).data(Qt.ItemDataRole.DisplayRole)
        head = self.table.item(row, self.columns.index("head")).data(Qt.ItemDataRole.DisplayRole)
        self.open_head(layer, head)


# ============================================================================================
# Rollout / flow
# ============================================================================================
METHODS = ("rollout", "flow")


class RolloutView(CanvasView):
    """Heatmap (output positions × input tokens) above per-token bars for one output position."""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.figure.set_layout_engine("constrained")
        gs = self.figure.add_gridspec(2, 1, height_ratios=(3.0, 1.4))
        self.ax = self.figure.add_subplot(gs[0])
        self.bar_ax = self.figure.add_subplot(gs[1], sharex=self.ax)
        self.image = self.ax.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", origin="upper")
        self.cbar = self.figure.colorbar(self.image, ax=self.ax, fraction=0.04, pad=0.01, aspect=30)
        self.row_marker = Rectangle((-0.5, -0.5), 1, 1, fill=False, lw=1.8, ec="#ff3d3d")
        self.ax.add_patch(self.row_marker)
        self.bars = None
        self.matrix = np.zeros((0, 0))
        self.bar_values = np.zeros(0)
        self.labels: list[str] = []
        self.output_index = 0
        self.on_row = None  # callable(row) set by the tab
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self._apply_theme_extra()

    def _apply_theme_extra(self) -> None:
        t = self.theme
        for ax in (self.ax, self.bar_ax, self.cbar.ax):
            ax.tick_params(colors=t.grid_color, labelcolor=t.text_color, labelsize=t.tick_size)
            ax.xaxis.label.set_color(t.text_color)
            ax.yaxis.label.set_color(t.text_color)
            ax.title.set_color(t.text_color)

    def set_result(self, matrix: np.ndarray, labels: list[str], output_index: int, contributions: np.ndarray,
                   cmap: str, what: str, causal: bool = False) -> None:
        """Show ``matrix`` ``[S, S]`` (rows: output positions, columns: input tokens) and the bars
        ``contributions`` ``[S]`` of row ``output_index``; ``causal`` greys the future cells."""
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.labels = list(labels)
        n = self.matrix.shape[1]
        future = np.triu(np.ones(self.matrix.shape, dtype=bool), k=1) if causal else np.zeros(self.matrix.shape, bool)
        self.image.set_data(np.ma.masked_array(self.matrix, mask=future))
        self.image.set_extent((-0.5, n - 0.5, self.matrix.shape[0] - 0.5, -0.5))
        self.image.set_cmap(mpl.colormaps[cmap].with_extremes(bad=self.theme.masked_color))
        hi = float(np.nanmax(self.matrix)) if self.matrix.size else 1.0
        self.image.set_norm(Normalize(0.0, hi if hi > 0 else 1.0))
        self.cbar.update_normal(self.image)
        self.cbar.set_label("share of the input token", color=self.theme.text_color)
        w, h = self.canvas.get_width_height()
        font_px = self.theme.tick_size * self.figure.dpi / 72.0
        xs = _tick_step(n, w * 0.8, font_px)
        ys = _tick_step(self.matrix.shape[0], h * 0.5, font_px)
        self.ax.set_yticks(range(0, self.matrix.shape[0], ys), [self.labels[i] for i in range(0, self.matrix.shape[0], ys)])
        self.bar_ax.set_xticks(range(0, n, xs), [self.labels[i] for i in range(0, n, xs)], rotation=90)
        self.ax.tick_params(labelbottom=False)
        self.ax.set_xlim(-0.5, n - 0.5)
        self.ax.set_ylim(self.matrix.shape[0] - 0.5, -0.5)
        self.ax.set_ylabel("output position (top layer)")
        self.ax.set_title(what, color=self.theme.text_color, fontsize=self.theme.base_size)
        self.bar_ax.set_xlabel("input token (embeddings)")
        self.set_output(output_index, contributions, draw=False)
        self.redraw()

    def set_output(self, output_index: int, contributions: np.ndarray, draw: bool = True) -> None:
        self.output_index = int(output_index)
        self.bar_values = np.asarray(contributions, dtype=np.float64)
        n = self.matrix.shape[1]
        self.row_marker.set_bounds(-0.5, output_index - 0.5, n, 1)
        if self.bars is not None:
            self.bars.remove()
        color = self.theme.line_colors[0]
        self.bars = self.bar_ax.bar(np.arange(len(self.bar_values)), self.bar_values, width=0.8, color=color)
        top = float(np.nanmax(self.bar_values)) if self.bar_values.size else 1.0
        self.bar_ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        self.bar_ax.set_ylabel("contribution")
        label = self.labels[output_index] if 0 <= output_index < len(self.labels) else str(output_index)
        self.bar_ax.set_title(f"contributions to output position {output_index} ('{label}')",
                              color=self.theme.text_color, fontsize=self.theme.tick_size + 1)
        if draw:
            self.redraw()

    def _row_at(self, event) -> int | None:
        if event.inaxes is not self.ax or event.ydata is None or not self.matrix.size:
            return None
        i = int(np.floor(event.ydata + 0.5))
        return i if 0 <= i < self.matrix.shape[0] else None

    def _on_click(self, event) -> None:
        i = self._row_at(event)
        if i is not None and self.on_row is not None:
            self.on_row(i)

    def _on_motion(self, event) -> None:
        text = ""
        if event.inaxes is self.ax and event.xdata is not None and self.matrix.size:
            i, j = int(np.floor(event.ydata + 0.5)), int(np.floor(event.xdata + 0.5))
            if 0 <= i < self.matrix.shape[0] and 0 <= j < self.matrix.shape[1]:
                text = f"output {i} '{self.labels[i]}' ← input {j} '{self.labels[j]}': {self.matrix[i, j]:.4f} (click: show this row)"
        elif event.inaxes is self.bar_ax and event.xdata is not None and self.bar_values.size:
            j = int(np.floor(event.xdata + 0.5))
            if 0 <= j < len(self.bar_values):
                text = f"input {j} '{self.labels[j]}': {self.bar_values[j]:.4f}"
        self.set_hover(text)


class RolloutTab(QWidget):
    """Attention rollout / flow (Abnar & Zuidema 2020) of the selected self-attention stack."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window_ = window
        self.capture: Capture | None = None
        self.stack: str | None = None
        self._token_key = None  # (id(capture), stack) the output/layer defaults were set for
        self._rollout_cache: dict[tuple, np.ndarray] = {}
        self._flow_cache: dict[tuple, np.ndarray] = {}
        self._flow_pending: tuple | None = None
        self.matrix: np.ndarray | None = None  # what the heatmap shows

        self.method_combo = QComboBox()
        self.method_combo.addItems(list(METHODS))
        self.method_combo.setToolTip("rollout: multiply the layers' maps; flow: max-flow through the layers (≤ 64 tokens, slower)")
        self.fusion_combo = QComboBox()
        self.fusion_combo.addItems(list(rollout_mod.FUSIONS))
        self.fusion_combo.setToolTip("how the heads of a layer are fused into one map before combining layers")
        self.residual_spin = QDoubleSpinBox()
        self.residual_spin.setRange(0.0, 1.0)
        self.residual_spin.setSingleStep(0.1)
        self.residual_spin.setDecimals(2)
        self.residual_spin.setValue(0.5)
        self.residual_spin.setPrefix("residual ")
        self.residual_spin.setToolTip("weight of the residual connection: each layer uses α·I + (1 − α)·A")
        self.layer_spin = QSpinBox()
        self.layer_spin.setPrefix("through layer ")
        self.layer_spin.setToolTip("combine the layers up to and including this one (default: all)")
        self.output_spin = QSpinBox()
        self.output_spin.setPrefix("output position ")
        self.output_spin.setToolTip("the output position whose input contributions the bars show (or click a heatmap row)")
        self.output_name = QLabel("")
        self.message = _Caption(warning=True)
        self.message.setVisible(False)
        self.view = RolloutView(theme=window.spec.theme)
        self.view.on_row = self.output_spin.setValue
        self.caption = _Caption()

        row = QHBoxLayout()
        for w in (QLabel("method"), self.method_combo, QLabel("heads fused by"), self.fusion_combo,
                  self.residual_spin, self.layer_spin, self.output_spin, self.output_name):
            row.addWidget(w)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.view, 1)
        lay.addStretch(0)  # takes the space while the view is hidden (messages stay on top)
        lay.addWidget(self.caption)

        for sig in (self.method_combo.currentIndexChanged, self.fusion_combo.currentIndexChanged,
                    self.residual_spin.valueChanged, self.layer_spin.valueChanged):
            sig.connect(self._on_options_changed)
        self.output_spin.valueChanged.connect(self._on_output_changed)
        window.runner.finished.connect(self._on_job_finished)
        window.runner.failed.connect(self._on_job_failed)
        window.runner.progress.connect(self._on_job_progress)

    # -- state ------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.method_combo.currentText()

    @property
    def fusion(self) -> str:
        return self.fusion_combo.currentText()

    @property
    def residual(self) -> float:
        return float(self.residual_spin.value())

    def _key(self) -> tuple:
        return (id(self.capture), self.stack, self.fusion, round(self.residual, 4))

    def _flow_key(self) -> tuple:
        return (*self._key(), self.layer_spin.value())

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    @_reports_failures
    def show_window_state(self, window) -> None:
        cap = window.capture
        if cap is None:
            return
        _sync_theme(self.view, window.spec.theme)
        name = cap.resolve_stack(window.spec.stack)
        if cap is not self.capture:
            self._rollout_cache.clear()
            self._flow_cache.clear()
        self.capture, self.stack = cap, name
        for w in (self.method_combo, self.fusion_combo, self.residual_spin, self.layer_spin, self.output_spin):
            w.setEnabled(name in SELF_STACKS)
        if name not in SELF_STACKS:
            self.matrix = None
            self.view.setVisible(False)
            self.caption.setText("")
            self.output_name.setText("")
            self._say("Rollout and flow follow one sequence through the layers, so they need self-attention; "
                      "cross-attention mixes two sequences. Choose the encoder or the decoder stack in the "
                      "toolbar.")
            return
        self.view.setVisible(True)
        if self._token_key != (id(cap), name):
            self._token_key = (id(cap), name)
            n_layers, n = cap.shape(name)[0], cap.shape(name)[-1]
            for spin, top, value in ((self.layer_spin, n_layers - 1, n_layers - 1),
                                     (self.output_spin, n - 1, n - 1 if cap.is_causal(name) else 0)):
                spin.blockSignals(True)
                spin.setRange(0, top)
                spin.setValue(value)
                spin.blockSignals(False)
            self.layer_spin.setSuffix(f" / {n_layers - 1}")
            self.output_spin.setSuffix(f" / {n - 1}")
            _fit_spin(self.layer_spin)
            _fit_spin(self.output_spin)
        self._update()

    def _update(self) -> None:
        cap, name = self.capture, self.stack
        if cap is None or name not in SELF_STACKS:
            return
        labels = [clean_label(s) for s in cap.query_tokens(name).display]
        n = len(labels)
        causal = cap.is_causal(name)
        self.caption.setText(self._caption(cap, name, causal))
        layer = self.layer_spin.value()
        layers = f"layers 0–{layer}" if layer else "layer 0"
        if self.method == "flow":
            if not rollout_mod.flow_is_available(n):
                self.matrix = None
                self.view.setVisible(False)
                self._say(f"Attention flow is limited to {rollout_mod.FLOW_MAX_TOKENS} tokens and this input has "
                          f"{n}: it solves one max-flow problem per pair of tokens. Use rollout instead (method "
                          "above), or a shorter text.")
                return
            matrix = self._flow_cache.get(self._flow_key())
            if matrix is None:
                self._start_flow()
                return
            what = f"attention flow · heads fused by {self.fusion} · {layers}"
        else:
            key = self._key()
            stacked = self._rollout_cache.get(key)
            if stacked is None:
                # the stored (float16) stack: fuse_heads upcasts per layer, no float32 copy of it all
                stacked = rollout_mod.rollout(cap.stacks[name], fusion=self.fusion, residual=self.residual)
                self._rollout_cache = {key: stacked}
            matrix = stacked[layer]
            what = f"attention rollout · heads fused by {self.fusion} · {layers}"
        self._say("")
        self.view.setVisible(True)
        self.matrix = np.asarray(matrix)
        out = min(self.output_spin.value(), n - 1)
        contrib = rollout_mod.token_contributions(self.matrix, out)
        cmap = self.window_.spec.cmap or self.view.theme.cmap
        self.view.set_result(self.matrix, labels, out, contrib, cmap,
                             f"{cap.model} · {_stack_words(cap, name)} · {what}", causal=causal)
        self._show_output_name(out, labels)

    @staticmethod
    def _caption(cap: Capture, name: str, causal: bool) -> str:
        text = ("Rollout (Abnar & Zuidema 2020) follows attention through the layers: the heads of a layer "
                "are fused, the residual connection is added as α·I + (1 − α)·A, rows are renormalised, and "
                "the layers' maps are multiplied. Row t estimates how much each input token contributes to "
                "position t at the top. Flow treats the layers as a network and computes maximum flows "
                "instead. Both are estimates from attention alone (no values, no MLPs).")
        if causal:
            text += (" This is a causal (decoder) stack and the causal structure is respected: position t only "
                     "receives from tokens 0…t, so every cell right of the diagonal is 0 (grey: future tokens).")
        return text

    def _show_output_name(self, out: int, labels: list[str]) -> None:
        self.output_name.setText(f"= “{labels[out]}”" if 0 <= out < len(labels) else "")

    def _on_options_changed(self, *_args) -> None:
        if self.capture is None:
            return
        try:
            self._update()
        except Exception as exc:  # every failure becomes a message, never a crash
            _report(self.window_, exc)

    def _on_output_changed(self, value: int) -> None:
        if self.matrix is None or self.capture is None:
            return
        try:
            contrib = rollout_mod.token_contributions(self.matrix, value)
        except HeadmapError as exc:
            _report(self.window_, exc)
            return
        self.view.set_output(value, contrib)
        self._show_output_name(value, self.view.labels)

    # -- flow in the worker ---------------------------------------------------------------
    def _start_flow(self) -> None:
        key = self._flow_key()
        self.matrix = None
        self.view.setVisible(False)
        self._say("computing attention flow in the background…")
        if self._flow_pending == key and self.window_.runner.is_busy("flow"):
            return
        self._flow_pending = key
        att = self.capture.stacks[self.stack]  # read-only, safe to share with the worker
        self.window_.runner.start("flow", _flow_job, att, self.fusion, residual=self.residual,
                                  output_layer=self.layer_spin.value())

    def _on_job_progress(self, channel: str, _stage, fraction, _message) -> None:
        if channel == "flow" and self._flow_pending is not None and fraction is not None:
            self._say(f"computing attention flow in the background… {100 * float(fraction):.0f} %")

    def _on_job_finished(self, channel: str, result) -> None:
        if channel != "flow" or self._flow_pending is None:
            return
        key, self._flow_pending = self._flow_pending, None
        self._flow_cache[key] = np.asarray(result)
        if key == self._flow_key() and self.method == "flow" and self.isVisible():
            try:
                self._update()
            except Exception as exc:  # every failure becomes a message, never a crash
                _report(self.window_, exc)

    def _on_job_failed(self, channel: str, _exc) -> None:
        if channel == "flow":  # the window already shows the message
            self._flow_pending = None
            self._say("attention flow failed (see the message); rollout still works")


# ============================================================================================
# Compare
# ============================================================================================
def _describe(cap: Capture) -> str:
    text = cap.text if len(cap.text) <= 48 else cap.text[:47] + "…"
    return f"{cap.model} · “{text}” · {len(cap.source)} tokens"


def token_mismatch(a: Capture, b: Capture, stack: str) -> str:
    """Why the maps of ``a`` and ``b`` cannot be subtracted cell by cell ('' when they can)."""
    for what, ta, tb in (("query", a.query_tokens(stack), b.query_tokens(stack)),
                         ("key", a.key_tokens(stack), b.key_tokens(stack))):
        if len(ta) != len(tb):
            return (f"A has {len(ta)} {what} tokens and B has {len(tb)}; a difference map needs the same tokens "
                    "(the same sentence, or a model with the same tokenizer)")
        diff = np.flatnonzero(ta.ids != tb.ids)
        if diff.size:
            i = int(diff[0])
            return (f"the {what} tokens differ at position {i} ('{ta.display[i]}' in A, '{tb.display[i]}' in B): "
                    "a difference map needs the same token ids (the same sentence, or a model with the same "
                    "tokenizer)")
    return ""


class CompareView(CanvasView):
    """A | B | B − A on one canvas (three axes and two colour bars created once)."""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.figure.set_layout_engine("constrained")
        self.axes = self.figure.subplots(1, 3)
        self.ax_a, self.ax_b, self.ax_d = self.axes
        self.image_a = self.ax_a.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest")
        self.image_b = self.ax_b.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest")
        self.image_d = self.ax_d.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", cmap="RdBu_r")
        self.cbar_ab = self.figure.colorbar(self.image_b, ax=[self.ax_a, self.ax_b], fraction=0.04, pad=0.01, aspect=40)
        self.cbar_d = self.figure.colorbar(self.image_d, ax=self.ax_d, fraction=0.08, pad=0.01, aspect=40)
        self.note = self.ax_d.text(0.5, 0.5, "", ha="center", va="center", wrap=True, transform=self.ax_d.transAxes)
        self.diff: np.ndarray | None = None
        self.map_a = np.zeros((0, 0))
        self.map_b = np.zeros((0, 0))
        self._apply_theme_extra()

    def _apply_theme_extra(self) -> None:
        t = self.theme
        for ax in (*self.axes, self.cbar_ab.ax, self.cbar_d.ax):
            ax.tick_params(colors=t.grid_color, labelcolor=t.text_color, labelsize=t.tick_size)
            ax.title.set_color(t.text_color)
            ax.xaxis.label.set_color(t.text_color)
            ax.yaxis.label.set_color(t.text_color)
        self.note.set_color(t.text_color)

    def _ticks(self, ax, rows: list[str], cols: list[str], show_rows: bool) -> None:
        w, h = self.canvas.get_width_height()
        font_px = self.theme.tick_size * self.figure.dpi / 72.0
        ys = _tick_step(len(rows), h * 0.7, font_px)
        xs = _tick_step(len(cols), w * 0.25, font_px)
        ax.set_yticks(range(0, len(rows), ys), [rows[i] for i in range(0, len(rows), ys)] if show_rows else [])
        ax.set_xticks(range(0, len(cols), xs), [cols[i] for i in range(0, len(cols), xs)], rotation=90)
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)

    def set_maps(self, a, b, titles: tuple[str, str], cmap: str, diff_note: str) -> None:
        """Show ``a`` and ``b`` (:class:`analysis.viewdata.HeatmapData`) and, when ``diff_note`` is
        empty, ``b − a`` on a diverging scale centred at 0 with symmetric limits."""
        self.map_a, self.map_b = a.matrix, b.matrix
        hi = max(float(np.nanmax(a.matrix)) if a.matrix.size else 0.0,
                 float(np.nanmax(b.matrix)) if b.matrix.size else 0.0)
        norm = Normalize(0.0, hi if hi > 0 else 1.0)
        same = not diff_note
        for ax, image, d, title in ((self.ax_a, self.image_a, a, titles[0]), (self.ax_b, self.image_b, b, titles[1])):
            image.set_data(d.matrix)
            image.set_extent((-0.5, d.matrix.shape[1] - 0.5, d.matrix.shape[0] - 0.5, -0.5))
            image.set_cmap(mpl.colormaps[cmap])
            image.set_norm(norm)
            ax.set_title(title, fontsize=self.theme.base_size)
            self._ticks(ax, list(d.row_labels), list(d.col_labels), show_rows=(ax is self.ax_a) or not same)
            ax.set_xlabel(d.col_title)
        self.ax_a.set_ylabel(a.row_title)
        self.cbar_ab.update_normal(self.image_b)
        self.cbar_ab.set_label("attention weight", color=self.theme.text_color)
        if same:
            self.diff = (b.matrix.astype(np.float64) - a.matrix.astype(np.float64)).astype(np.float32)
            m = float(np.nanmax(np.abs(self.diff))) if self.diff.size else 0.0
            m = m if m > 0 else 1e-6
            self.image_d.set_data(self.diff)
            self.image_d.set_extent(self.image_b.get_extent())
            self.image_d.set_norm(Normalize(-m, m))
            self.image_d.set_visible(True)
            self.cbar_d.ax.set_visible(True)
            self.cbar_d.update_normal(self.image_d)
            self.cbar_d.set_label("B − A (red: B attends more, blue: A)", color=self.theme.text_color)
            self._ticks(self.ax_d, list(b.row_labels), list(b.col_labels), show_rows=False)
            self.ax_d.set_xlabel(b.col_title)
            self.ax_d.set_title("B − A", fontsize=self.theme.base_size)
            self.ax_d.set_axis_on()
            self.note.set_text("")
        else:
            self.diff = None
            self.image_d.set_visible(False)
            self.cbar_d.ax.set_visible(False)
            self.ax_d.set_axis_off()
            self.ax_d.set_title("no difference map", fontsize=self.theme.base_size)
            self.note.set_text(_wrap_text(diff_note, 40))
        self.redraw()


def _wrap_text(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


class CompareTab(QWidget):
    """Two captures side by side (A pinned, B the current one) and their difference map."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window_ = window
        self.capture_a: Capture | None = None
        self.pin_button = QPushButton("Pin current as A")
        self.pin_button.setToolTip("keep the current capture as A; then run another sentence or load another "
                                   "model: the current capture is B")
        self.clear_button = QPushButton("Clear A")
        self.clear_button.setEnabled(False)
        self.info = _Caption(rich=True)
        self.message = _Caption(warning=True)
        self.message.setVisible(False)
        self.view = CompareView(theme=window.spec.theme)
        self.caption = _Caption(
            "A and B show the same stack, layer and head (or aggregate) chosen in the toolbar, on one colour "
            "scale. B − A uses a diverging scale centred at 0 with symmetric limits: red cells get more attention "
            "in B, blue cells more in A. A difference map needs the same tokens in A and B (the same sentence on "
            "another model with the same tokenizer, or another sentence of the same length and tokens)."
        )
        row = QHBoxLayout()
        row.addWidget(self.pin_button)
        row.addWidget(self.clear_button)
        row.addWidget(self.info, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.view, 1)
        lay.addStretch(0)  # takes the space while the view is hidden (messages stay on top)
        lay.addWidget(self.caption)
        self.pin_button.clicked.connect(self.pin_current)
        self.clear_button.clicked.connect(self.clear)
        self._show_info()

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _show_info(self) -> None:
        a = self.capture_a
        b = self.window_.capture
        parts = [f"<b>A</b>: {html.escape(_describe(a))}" if a is not None else "<b>A</b>: not pinned yet",
                 f"<b>B</b> (current): {html.escape(_describe(b))}" if b is not None else "<b>B</b>: no capture yet"]
        self.info.setText("<br>".join(parts))

    def pin_current(self) -> None:
        """Store the window's current capture as A."""
        if self.window_.capture is None:
            self.window_.show_error("nothing to pin yet; run a sentence first")
            return
        self.capture_a = self.window_.capture
        self.clear_button.setEnabled(True)
        self.window_.statusBar().showMessage("pinned the current capture as A; run another sentence or load another model for B")
        self.show_window_state(self.window_)

    def clear(self) -> None:
        self.capture_a = None
        self.clear_button.setEnabled(False)
        self.show_window_state(self.window_)

    @_reports_failures
    def show_window_state(self, window) -> None:
        _sync_theme(self.view, window.spec.theme)
        self._show_info()
        a, b = self.capture_a, window.capture
        if b is None:
            return
        if a is None:
            self.view.setVisible(False)
            self._say("Press “Pin current as A” to keep this capture; then run another sentence (or load another "
                      "model with the same tokenizer and run the same sentence): the new capture is B.")
            return
        spec = replace(window.spec, view="head")
        name = b.resolve_stack(spec.stack)
        if name not in a.stacks:
            self.view.setVisible(False)
            self._say(f"A has no {_STACK_WORDS.get(name, name)} stack (A is a {a.kind} model, B a {b.kind} model); "
                      "pin a capture of the same kind of model")
            return
        la, ha = a.shape(name)[:2]
        if spec.layer >= la or (spec.head is not None and spec.head >= ha):
            self.view.setVisible(False)
            self._say(f"A has {la} layers × {ha} heads, so layer {spec.layer}"
                      f"{'' if spec.head is None else f', head {spec.head}'} exists only in B; choose a smaller one")
            return
        # each map on its own capture's range: the two are put on one scale by the view
        spec = replace(spec, stack=name, shared_range=False)
        try:
            da = heatmap_data(a, spec, self.view.theme)
            db = heatmap_data(b, spec, self.view.theme)
        except Exception as exc:  # every failure becomes a message, never a crash
            _report(window, exc)
            return
        note = token_mismatch(a, b, name)
        if not note and da.matrix.shape != db.matrix.shape:
            note = f"the maps have different shapes ({da.matrix.shape} in A, {db.matrix.shape} in B)"
        if note:
            self._say("Side by side only: " + note + ".")
        elif a is b:
            self._say("B is still the pinned capture, so B − A is 0: run another sentence, or load another model "
                      "with the same tokenizer and run the same sentence.")
        else:
            self._say("")
        what = "head " + str(spec.head) if spec.head is not None else f"{spec.aggregation} of heads"
        titles = (f"A · {a.model}\nlayer {spec.layer}, {what}", f"B · {b.model}\nlayer {spec.layer}, {what}")
        self.view.setVisible(True)
        cmap = spec.cmap or self.view.theme.cmap
        self.view.set_maps(da, db, titles, cmap, note)


# ============================================================================================
def install(window) -> None:
    """Add the Statistics, Rollout and Compare tabs to ``window``."""
    window.add_tab(StatsTab(window), "Statistics")
    window.add_tab(RolloutTab(window), "Rollout")
    window.add_tab(CompareTab(window), "Compare")
