"""The Alignment tab (seq2seq): word alignment read off cross-attention, with gold comparison.

The picture is :mod:`analysis.views.alignment` (data and drawer, the same as every export); the
tab adds the layer/head choice (kept in the viewer state as ``alignment_layer``/``alignment_head``),
the list of aligned pairs, a gold Pharaoh line with the alignment error rate of every layer ×
head, and Copy Pharaoh.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from analysis.alignment import ALIGNMENT_METHODS, aer, aer_grid, format_pharaoh, split_pharaoh
from analysis.errors import InputError
from analysis.figures import ViewInputs
from analysis.views.alignment import (
    AlignmentData,
    alignment_data,
    documented_layer,
    model_folder_of,
)
from analysis.views.captions import view_caption
from analysis.views.spec import check_words_to_align, is_seq2seq

from ..views.canvas import DrawnView
from .base import StateTab, TabContext, message_label

#: the link thresholds the tab offers (besides the documented one and "argmax only")
THRESHOLD_CHOICES = (0.5, 0.4, 0.3, 0.2, 0.1)
NEEDS_SEQ2SEQ = "alignment needs a seq2seq model with cross-attention"
HOW_TO_GET_ONE = "load a translator (e.g. bundled:translator-en-fr) and run a sentence"
ROW_CAPTION = (
    "Row t of the cross-attention belongs to decoder position t: it reads output token t−1 and "
    "<b>predicts output token t</b>, so a translation word's links show where the model looked "
    "while producing that word. Thick line and boxed cell: the source word with the most attention "
    "(argmax); faint lines: the other weights (opacity ∝ weight); dashed: gold links. Word weights "
    "sum a source word's pieces and average a translation word's pieces."
)


def item(text: str, data=None, align_right: bool = False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if data is not None:
        it.setData(Qt.ItemDataRole.UserRole, data)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return t


class AlignmentTab(StateTab, QWidget):
    """Word alignment from cross-attention, with gold comparison (AER) and Pharaoh export."""

    figure_view = "alignment"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._gold: tuple[set, set] | None = None
        self._gold_key = None
        self._gold_name = ""
        self._combos_for = None  # (model, layers, heads) the combos were filled for
        self.data: AlignmentData | None = None
        self.aer_values: np.ndarray | None = None  # [L, H + 1] with a gold line

        self.message = message_label()
        self.layer_combo = QComboBox()
        self.head_combo = QComboBox()
        self.method_combo = QComboBox()
        self.threshold_combo = QComboBox()
        self.layer_combo.setToolTip("cross-attention layer the alignment is read from")
        self.head_combo.setToolTip("one head, or the average of the layer's heads")
        self.method_combo.setToolTip("predict: output word t reads row t, computed while predicting it; shift "
                                     "(Shift-Att, Chen et al. 2020): row t+1, where word t is the decoder input")
        self.threshold_combo.setToolTip("besides the argmax link, link every source word with at least this share "
                                        "of the word's row (1 = the argmax link only)")
        self.gold_button = QPushButton("Load gold (Pharaoh)…")
        self.gold_button.setToolTip("a text file whose first line is the gold alignment of this "
                                    "sentence, e.g. 0-0 1-0 2-1 3-2 (source-target word indices)")
        self.copy_button = QPushButton("Copy Pharaoh")
        self.copy_button.setToolTip("copy the links shown as one Pharaoh line (i-j: source word i, translation word j)")
        self.aer_label = QLabel("")
        self.caption = QLabel(ROW_CAPTION)
        self.caption.setWordWrap(True)
        self.view = DrawnView("alignment")
        self.pairs_table = table(["source", "translation", "weight"])
        self.aer_table = QTableWidget(0, 0)
        self.aer_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.aer_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.aer_table.setToolTip("click a cell to show that layer and head")
        self.aer_caption = QLabel("")
        self.aer_caption.setWordWrap(True)
        self._build_layout()
        self._show_message("run a sentence through a translator to see its word alignment")

        self.layer_combo.currentIndexChanged.connect(self._on_combo_changed)
        self.head_combo.currentIndexChanged.connect(self._on_combo_changed)
        self.method_combo.currentIndexChanged.connect(self._on_combo_changed)
        self.threshold_combo.currentIndexChanged.connect(self._on_combo_changed)
        self.gold_button.clicked.connect(self._on_load_gold)
        self.copy_button.clicked.connect(self.copy_pharaoh)
        self.aer_table.cellClicked.connect(self._on_aer_cell_clicked)
        self.attach(ctx)

    def _build_layout(self) -> None:
        controls = QHBoxLayout()
        for w in (QLabel("layer"), self.layer_combo, QLabel("head"), self.head_combo, QLabel("method"),
                  self.method_combo, QLabel("links"), self.threshold_combo, self.gold_button, self.copy_button):
            controls.addWidget(w)
        controls.addWidget(self.aer_label, 1)
        side = QWidget()
        side.setMinimumWidth(330)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel("<b>Aligned words</b> (one link per translation word)"))
        sl.addWidget(self.pairs_table, 3)
        sl.addWidget(self.aer_caption)
        sl.addWidget(self.aer_table, 2)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 2)
        self.body = QWidget()
        bl = QVBoxLayout(self.body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addLayout(controls)
        bl.addWidget(self.caption)
        bl.addWidget(split, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addWidget(self.body, 1)

    # -- what is shown ------------------------------------------------------------------------
    @property
    def result(self):
        """The AlignmentResult on screen, or None."""
        return None if self.data is None else self.data.result

    @property
    def layer(self) -> int:
        return 0 if self.data is None else self.data.layer

    @property
    def head(self) -> int | None:
        return None if self.data is None else self.data.head

    def _folder(self) -> str | None:
        cap, lm = self.state.capture, self.state.model
        given = lm.summary.source_path if lm is not None and getattr(lm, "reference", None) == cap.model else None
        return model_folder_of(cap, given)

    def inputs(self) -> ViewInputs:
        gold = (*self._gold, self._gold_name) if self._gold else None
        return ViewInputs(gold=gold, model_folder=self._folder())

    def export_request(self):
        if not is_seq2seq(self.state.capture):
            raise InputError(f"{NEEDS_SEQ2SEQ}; {HOW_TO_GET_ONE}")
        return self.state.spec_for("alignment"), self.inputs()

    def refresh(self) -> None:
        cap = self.state.capture
        if not is_seq2seq(cap):
            self._show_nothing(f"{NEEDS_SEQ2SEQ}; {HOW_TO_GET_ONE}." if cap is not None
                               else f"{self.nothing_yet()}<br>Load a translator (bundled:translator-en-fr) to see its word alignment.")
            return
        spec = self.state.spec_for("alignment")
        self.view.set_theme(spec.theme)
        try:
            check_words_to_align(cap)
        except InputError as exc:  # said where the map would be, in the export's words
            self._show_nothing(html.escape(str(exc)))
            return
        if (self._gold_key is not None) and self._gold_key != (cap.text, cap.output_text):
            self._gold, self._gold_key, self._gold_name = None, None, ""
        self._fill_combos(cap)
        self._sync_combos(spec)
        self.data = alignment_data(cap, spec, self.inputs())
        self.view.show_data(self.data)
        self.view.set_caption(view_caption(cap, spec, self.inputs()), spec.caption)
        self.caption.setVisible(spec.caption)
        self._fill_pairs()
        self._compute_aer()
        self._update_aer_label()
        self.message.setVisible(False)
        self.body.setVisible(True)

    def _show_nothing(self, text: str) -> None:
        """No map: ``text`` (HTML) where it would be; the combos are filled again for the next one."""
        self.data = None
        self._combos_for = None
        self._show_message(text)

    def _fill_combos(self, cap) -> None:
        n_layers, n_heads = cap.shape("cross_attentions")[:2]
        folder = self._folder()
        key = (cap.model, n_layers, n_heads, folder)
        if key == self._combos_for:
            return
        self._combos_for = key
        from analysis.alignment_export import alignment_defaults

        d = alignment_defaults(cap, folder)
        what = "best documented" if documented_layer(folder) else "default: last layer"
        combos = (self.layer_combo, self.head_combo, self.method_combo, self.threshold_combo)
        for combo in combos:
            combo.blockSignals(True)
        try:
            self.layer_combo.clear()
            head = "" if not d.documented else (", average" if d.head is None else f", head {d.head}")
            self.layer_combo.addItem(f"{what} ({d.layer}{head})", None)
            for li in range(n_layers):
                self.layer_combo.addItem(f"layer {li}", li)
            self.head_combo.clear()
            self.head_combo.addItem("average of heads", None)
            for h in range(n_heads):
                self.head_combo.addItem(f"head {h}", h)
            self.method_combo.clear()
            self.method_combo.addItem(f"{'best documented' if d.documented else 'default'} ({d.method})", None)
            for m in ALIGNMENT_METHODS:
                self.method_combo.addItem(m, m)
            self.threshold_combo.clear()
            shown = "argmax only" if d.threshold is None else f"≥ {d.threshold:g}"
            self.threshold_combo.addItem(f"{'best documented' if d.documented else 'default'} ({shown})", None)
            self.threshold_combo.addItem("argmax only", 1.0)
            for p in THRESHOLD_CHOICES:
                self.threshold_combo.addItem(f"argmax + share ≥ {p:g}", p)
        finally:
            for combo in combos:
                combo.blockSignals(False)

    def _sync_combos(self, spec) -> None:
        for combo, value in ((self.layer_combo, spec.alignment_layer), (self.head_combo, spec.alignment_head),
                             (self.method_combo, spec.alignment_method),
                             (self.threshold_combo, spec.alignment_threshold)):
            i = combo.findData(value) if value is not None else 0
            if i >= 0 and combo.currentIndex() != i:
                combo.blockSignals(True)
                combo.setCurrentIndex(i)
                combo.blockSignals(False)

    def select(self, layer: int | None = None, head: int | None = None, average: bool = False,
               method: str | None = None) -> None:
        """Choose ``layer`` (None: keep), ``head`` (``average=True``: the head average) and the
        ``method`` (None: keep)."""
        changes: dict = {} if method is None else {"alignment_method": method}
        if layer is not None:
            changes["alignment_layer"] = int(layer)
        if average:
            changes["alignment_head"] = None
        elif head is not None:
            changes["alignment_head"] = int(head)
        self.state.update(**changes)

    def _on_combo_changed(self, *_args) -> None:
        self.state.update(alignment_layer=self.layer_combo.currentData(), alignment_head=self.head_combo.currentData(),
                          alignment_method=self.method_combo.currentData(),
                          alignment_threshold=self.threshold_combo.currentData())

    def _on_aer_cell_clicked(self, row: int, col: int) -> None:
        cap = self.state.capture
        if cap is None:
            return
        n_layers, n_heads = cap.shape("cross_attentions")[:2]
        self.select(layer=row % n_layers, head=None if col >= n_heads else col, average=col >= n_heads,
                    method=ALIGNMENT_METHODS[row // n_layers])

    def _fill_pairs(self) -> None:
        d, gold = self.data, self._gold
        cols = ["source", "translation", "weight"] + (["gold?"] if gold else [])
        t = self.pairs_table
        t.clear()
        t.setColumnCount(len(cols))
        t.setHorizontalHeaderLabels(cols)
        pairs = sorted(d.pairs, key=lambda p: (p[1], p[0]))  # in translation order
        t.setRowCount(len(pairs))
        for r, (i, j) in enumerate(pairs):
            t.setItem(r, 0, item(f"{d.src_words[i]}  ({i})", (i, j)))
            t.setItem(r, 1, item(f"{d.tgt_words[j]}  ({j})", (i, j)))
            t.setItem(r, 2, item(f"{d.matrix[j, i]:.3f}", float(d.matrix[j, i]), align_right=True))
            if gold:
                sure, possible = gold
                mark = "sure ✓" if (i, j) in sure else ("possible ✓" if (i, j) in possible else "✗")
                t.setItem(r, 3, item(mark))

    def listed_pairs(self) -> list[tuple[int, int]]:
        """The ``(source word, translation word)`` pairs in the table, in table order."""
        t = self.pairs_table
        return [tuple(t.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(t.rowCount())]

    # -- gold and AER -----------------------------------------------------------------------
    def _on_load_gold(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Gold alignment (Pharaoh)", "",
                                              "Pharaoh alignments (*.txt *.align *.pharaoh *.wa);;All files (*)")
        if path:
            try:
                self.load_gold(path)
            except Exception as exc:  # one sentence to the user
                self.ctx.report(exc)

    def load_gold(self, path: str | Path) -> None:
        """Read the gold alignment of this sentence: the first line of ``path`` (Pharaoh)."""
        cap = self.state.capture
        if not is_seq2seq(cap):
            raise InputError("run a sentence through a translator before loading its gold alignment")
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the gold file {p.name}: {exc}; choose a UTF-8 text file") from exc
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise InputError(f"the first line of {p.name} is empty; write the gold links there, e.g. 0-0 1-1")
        sure, possible = split_pharaoh(lines[0])
        n_src, n_tgt = len(cap.text.split()), len(cap.output_text.split())
        bad = sorted((i, j) for i, j in possible if i >= n_src or j >= n_tgt)
        if bad:
            i, j = bad[0]
            raise InputError(
                f"the gold link {i}-{j} does not fit this sentence ({n_src} source and {n_tgt} translation "
                "words); is the first line the gold alignment of this sentence?"
            )
        self._gold = (sure, possible)
        self._gold_key = (cap.text, cap.output_text)
        self._gold_name = p.name
        self.refresh_now()

    def _compute_aer(self) -> None:
        cap, gold = self.state.capture, self._gold
        t = self.aer_table
        t.clear()
        if gold is None:
            self.aer_values = None
            t.setRowCount(0)
            t.setColumnCount(0)
            t.setVisible(False)
            self.aer_caption.setText("<b>Alignment error rate</b>: load the gold alignment of this "
                                     "sentence to compare every layer and head with it")
            return
        sure, possible = gold
        threshold = self.data.result.threshold if self.data is not None else None
        cross = cap.attention("cross_attentions")
        grid = np.concatenate([aer_grid(cross, list(cap.source.word_ids), list(cap.outputs.word_ids), sure, possible,
                                        method, threshold) for method in ALIGNMENT_METHODS])  # [M·L, H + 1]
        self.aer_values = grid
        n_rows, n_cols = grid.shape
        n_layers = n_rows // len(ALIGNMENT_METHODS)
        t.setRowCount(n_rows)
        t.setColumnCount(n_cols)
        t.setHorizontalHeaderLabels([f"head {h}" for h in range(n_cols - 1)] + ["average"])
        t.setVerticalHeaderLabels([f"{m} · layer {li}" for m in ALIGNMENT_METHODS for li in range(n_layers)])
        best = np.unravel_index(int(np.argmin(grid)), grid.shape)
        palette = self.view.theme.qt_palette
        hl, hl_text = QColor(palette.get("highlight", "#2f6fb5")), QColor(palette.get("highlighted_text", "#ffffff"))
        for li in range(n_rows):
            for c in range(n_cols):
                it = item(f"{grid[li, c]:.2f}", float(grid[li, c]), align_right=True)
                if (li, c) == best:
                    f = QFont(it.font())
                    f.setBold(True)
                    it.setFont(f)
                    it.setBackground(QBrush(hl))
                    it.setForeground(QBrush(hl_text))
                    it.setToolTip("lowest AER: the layer/head that agrees best with the gold")
                t.setItem(li, c, it)
        t.setVisible(True)
        head = "average of heads" if best[1] == n_cols - 1 else f"head {best[1]}"
        links = "argmax links" if threshold is None else f"argmax links and shares ≥ {threshold:g}"
        self.aer_caption.setText(
            f"<b>Alignment error rate</b> vs. {html.escape(self._gold_name or 'gold')} (0 = perfect, lower is better) "
            f"of every method, layer and head, with {links}; best: {ALIGNMENT_METHODS[best[0] // n_layers]}, layer "
            f"{best[0] % n_layers}, {head} = {grid[best]:.2f}. Click a cell to show it."
        )

    def _update_aer_label(self) -> None:
        if self._gold is None or self.data is None:
            self.aer_label.setText("")
            return
        sure, possible = self._gold
        self.aer_label.setText(f"AER of the links shown: <b>{aer(self.data.pairs, sure, possible):.2f}</b>")

    # -- actions ----------------------------------------------------------------------------
    def copy_pharaoh(self) -> str:
        """Copy the links shown to the clipboard as one Pharaoh line; returns the line."""
        if self.data is None:
            return ""
        line = format_pharaoh(self.data.pairs)
        QGuiApplication.clipboard().setText(line)
        self.ctx.status(f"copied the alignment (source-translation word indices): {line}")
        return line

    def _show_message(self, text: str) -> None:
        self.message.setText(f"<p style='font-size:13pt'>{text}</p>")
        self.message.setVisible(True)
        self.body.setVisible(False)
