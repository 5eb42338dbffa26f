"""The selection and display tool bars: widgets that edit the viewer state and follow it.

Every control writes one field of :class:`gui.state.ViewerState` (``state.update(...)``) and is
set back from the state when it changes elsewhere (a click in an overview, the keyboard, a
reopened session), with its signals blocked so nothing loops. No value lives only in a widget.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QMainWindow, QSpinBox, QToolBar

from analysis.views.spec import STACK_TITLES

from .state import ViewerState

CMAPS = ["viridis", "magma", "inferno", "Blues", "Greys", "cividis", "plasma", "YlOrRd"]
STACK_LABELS = {
    "attentions": "self-attention",
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention (masked)",
    "cross_attentions": "cross-attention (target × source)",
}
ROW_MODES = ("input", "predicts", "both")
WORDS_TIP = ("group the tokenizer's pieces into words in every view, tab and export: attention to a word is the "
             "sum over its pieces, attention from a word the mean over its pieces (Clark et al. 2019)")
ROWS_TIP = ("decoder and cross-attention rows: the decoder input at t, the token predicted at t, "
            "or both (input → predicted)")


class SelectionToolbar(QObject):
    """Builds the "Selection" and "Display" tool bars on ``window`` for ``state``."""

    def __init__(self, window: QMainWindow, state: ViewerState) -> None:
        super().__init__(window)
        self.state = state
        self._ranges_for = None  # (id(capture), stack) the spin ranges were set for
        self._make_widgets()
        tb = QToolBar("Selection")
        tb.setObjectName("selection-toolbar")
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        for w in (QLabel("stack"), self.stack_combo, self.layer_spin, self.head_spin, self.agg_check, self.agg_combo,
                  self.words, self.hide_special, self.renorm, QLabel("rows"), self.rows_combo, self.mask_check):
            tb.addWidget(w)
        window.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
        tb2 = QToolBar("Display")
        tb2.setObjectName("display-toolbar")
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb2)
        for w in (QLabel("colours"), self.cmap_combo, self.scale_combo, self.shared, self.lines_all, self.stretch,
                  QLabel("theme"), self.theme_combo):
            tb2.addWidget(w)
        self.bars = (tb, tb2)
        self._connect()
        state.capture_changed.connect(self._on_capture)
        state.selection_changed.connect(self.sync)
        self._on_capture(state.capture)

    def _make_widgets(self) -> None:
        self.stack_combo = QComboBox()
        self.stack_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.layer_spin = QSpinBox()
        self.layer_spin.setPrefix("layer ")
        self.head_spin = QSpinBox()
        self.head_spin.setPrefix("head ")
        self.agg_check = QCheckBox("all heads:")
        self.agg_combo = QComboBox()
        self.agg_combo.addItems(["mean", "max"])
        self.words = QCheckBox("Words")
        self.words.setToolTip(WORDS_TIP)
        self.hide_special = QCheckBox("hide special")
        self.renorm = QCheckBox("renormalise")
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(["theme"] + CMAPS)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(["linear", "log"])
        self.shared = QCheckBox("shared range")
        self.rows_combo = QComboBox()
        self.rows_combo.addItems(list(ROW_MODES))
        self.rows_combo.setToolTip(ROWS_TIP)
        self.mask_check = QCheckBox("mark causal mask")
        self.theme_combo = QComboBox()
        self.theme_combo.addItems(["light", "dark", "presentation"])
        self.lines_all = QCheckBox("lines: colour per head")
        self.stretch = QCheckBox("stretch cells")
        self.stretch.setToolTip("let the Head view's cells fill the view instead of staying square")

    def _connect(self) -> None:
        s = self.state
        self.stack_combo.currentIndexChanged.connect(lambda _i: self.stack_combo.currentData() and s.update(
            stack=self.stack_combo.currentData()))
        self.layer_spin.valueChanged.connect(lambda v: s.update(layer=int(v)))
        self.head_spin.valueChanged.connect(lambda v: s.update(head=int(v)))
        self.agg_check.toggled.connect(lambda on: s.update(head=None if on else self.head_spin.value()))
        self.agg_combo.currentTextChanged.connect(lambda t: s.update(aggregation=t))
        self.words.toggled.connect(lambda on: s.update(group="words" if on else "pieces"))
        self.hide_special.toggled.connect(lambda on: s.update(hide_special=on))
        self.renorm.toggled.connect(lambda on: s.update(renormalize=on))
        self.cmap_combo.currentTextChanged.connect(lambda t: s.update(cmap=None if t == "theme" else t))
        self.scale_combo.currentTextChanged.connect(lambda t: s.update(scale=t))
        self.shared.toggled.connect(lambda on: s.update(shared_range=on))
        self.rows_combo.currentTextChanged.connect(lambda t: s.update(row_labels=t))
        self.mask_check.toggled.connect(lambda on: s.update(show_causal_mask=on))
        self.lines_all.toggled.connect(lambda on: s.update(lines_per_head=on))
        self.stretch.toggled.connect(lambda on: s.update(stretch=on))
        self.theme_combo.currentTextChanged.connect(lambda t: s.update(theme=t))

    def _on_capture(self, cap) -> None:
        combo = self.stack_combo
        combo.blockSignals(True)
        combo.clear()
        for name in (cap.stack_names if cap is not None else ()):
            combo.addItem(STACK_LABELS.get(name, STACK_TITLES.get(name, name)), name)
        combo.blockSignals(False)
        self.rows_combo.setEnabled(cap is not None and cap.kind == "seq2seq")
        # a long capture kept on disk has no words: grouping would need every map in memory
        self.words.setEnabled(cap is None or not cap.stored)
        self._ranges_for = None
        self.sync(self.state.spec)

    def sync(self, spec) -> None:
        """Set every control from ``spec`` (signals blocked: the state is already right)."""
        cap = self.state.capture
        layers, heads = self.state.shape()
        widgets = (self.stack_combo, self.layer_spin, self.head_spin, self.agg_check, self.agg_combo, self.words,
                   self.hide_special,
                   self.renorm, self.cmap_combo, self.scale_combo, self.shared, self.rows_combo, self.mask_check,
                   self.lines_all, self.stretch, self.theme_combo)
        for w in widgets:
            w.blockSignals(True)
        try:
            if cap is not None and self._ranges_for != (id(cap), self.state.stack):
                self._ranges_for = (id(cap), self.state.stack)
                i = self.stack_combo.findData(self.state.stack)
                self.stack_combo.setCurrentIndex(max(i, 0))
                for spin, n in ((self.layer_spin, layers), (self.head_spin, heads)):
                    spin.setRange(0, max(n - 1, 0))
                    spin.setSuffix(f" / {n - 1}")
                self.mask_check.setEnabled(cap.is_causal(self.state.stack))
            self.layer_spin.setValue(spec.layer)
            if spec.head is not None:
                self.head_spin.setValue(spec.head)
            self.head_spin.setEnabled(spec.head is not None)
            self.agg_check.setChecked(spec.head is None)
            self.agg_combo.setCurrentText(spec.aggregation)
            self.words.setChecked(spec.group == "words")
            self.hide_special.setChecked(spec.hide_special)
            self.renorm.setChecked(spec.renormalize)
            self.cmap_combo.setCurrentText(spec.cmap or "theme")
            self.scale_combo.setCurrentText(spec.scale)
            self.shared.setChecked(spec.shared_range)
            self.rows_combo.setCurrentText(spec.rows)
            self.mask_check.setChecked(spec.show_causal_mask)
            self.lines_all.setChecked(spec.lines_per_head)
            self.stretch.setChecked(spec.stretch)
            self.theme_combo.setCurrentText(spec.theme)
        finally:
            for w in widgets:
                w.blockSignals(False)
