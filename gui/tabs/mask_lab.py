"""Mask lab tab: the padding experiment and token masking, shown and measured.

The experiments run next to the model (:func:`analysis.masks.padding_job` /
:func:`~analysis.masks.masking_job`) as one job kind, "masks": a new experiment supersedes the
running one, and Cancel (here, or the model panel's) stops it. The picture is
:mod:`analysis.views.masks` (data and drawer, the same as every export) for the selection's
stack, layer and head; the numbers are listed beside it.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from analysis.errors import Cancelled, HeadmapError
from analysis.figures import ViewInputs
from analysis.views.captions import view_caption
from analysis.views.masks import masks_data

from ..views.canvas import DrawnView
from .base import StateTab, TabContext

DEFAULT_PAIR_HINT = "a longer second sentence (empty: a built-in default)"
START = ("Run the padding experiment (your sentence batched with a longer one), or tick tokens and mask them. "
         "Needs a loaded model.")


class MaskLabTab(StateTab, QWidget):
    """Padding experiment (mask on / off, Δ, numbers) and token-masking what-if."""

    figure_view = "masks"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report = None  # the PaddingReport or MaskingReport on screen
        self.job = None
        self.pair = QLineEdit()
        self.pair.setPlaceholderText(DEFAULT_PAIR_HINT)
        self.side = QComboBox()
        self.side.addItems(["default side", "right", "left"])
        self.side.setToolTip("default: right padding for encoders and seq2seq, left for decoders")
        self.pad_btn = QPushButton("Run padding experiment")
        self.tokens = QListWidget()
        self.tokens.setToolTip("tick tokens to hide them (attention_mask = 0)")
        self.tokens.setMaximumHeight(150)
        self.mask_btn = QPushButton("Mask ticked tokens")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.numbers = QLabel(START)
        self.numbers.setWordWrap(True)
        self.numbers.setTextFormat(Qt.TextFormat.RichText)
        self.numbers.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.view = DrawnView("masks")
        self.view.setVisible(False)
        self._build_layout()
        self.pad_btn.clicked.connect(self.run_padding)
        self.mask_btn.clicked.connect(self.run_masking)
        self.cancel_btn.clicked.connect(self.cancel)
        self._tokens_for = None  # the capture whose tokens are listed (filled when the tab is shown)
        self.attach(ctx)

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(QLabel("pair"))
        top.addWidget(self.pair, 1)
        top.addWidget(self.side)
        top.addWidget(self.pad_btn)
        mrow = QHBoxLayout()
        mrow.addWidget(self.tokens, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.mask_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addStretch(1)
        mrow.addLayout(buttons)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addLayout(top)
        ll.addLayout(mrow)
        ll.addWidget(self.numbers)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(left)
        split.addWidget(self.view)
        split.setStretchFactor(1, 4)
        lay = QVBoxLayout(self)
        lay.addWidget(split)

    # -- reports ------------------------------------------------------------------------------
    @property
    def padding_report(self):
        return self.report if hasattr(self.report, "pad_positions") else None

    @property
    def masking_report(self):
        return self.report if self.report is not None and not hasattr(self.report, "pad_positions") else None

    def _list_tokens(self, cap) -> None:
        if cap is self._tokens_for:
            return
        self._tokens_for = cap
        self.tokens.clear()
        if cap is None:
            return
        for i, t in enumerate(cap.source.display):
            it = QListWidgetItem(f"{i}: {t}")
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked)
            self.tokens.addItem(it)

    def checked_positions(self) -> list[int]:
        return [i for i in range(self.tokens.count()) if self.tokens.item(i).checkState() == Qt.CheckState.Checked]

    def export_request(self):
        if self.report is None:
            raise HeadmapError("run the padding experiment or mask some tokens first; then export the mask lab")
        return self.state.spec_for("masks"), ViewInputs(mask_report=self.report)

    # -- experiments -------------------------------------------------------------------------
    def _text(self) -> str | None:
        if self.state.model is None:
            self.ctx.report("the mask lab runs the model: load a model first (a reopened session has only its arrays)")
            return None
        cap = self.state.capture
        if cap is None or not cap.text.strip():
            self.ctx.report("run a sentence first; the mask lab uses the sentence on screen")
            return None
        return cap.text

    def run_padding(self) -> None:
        text = self._text()
        if text is None:
            return
        side = self.side.currentText()
        from analysis.masks import padding_job

        self._start("running the padding experiment…", padding_job, text, self.pair.text().strip(),
                    None if side.startswith("default") else side)

    def run_masking(self) -> None:
        text = self._text()
        if text is None:
            return
        pos = self.checked_positions()
        if not pos:
            self.ctx.report("tick at least one token to mask")
            return
        from analysis.masks import masking_job

        self._start("running with masked tokens…", masking_job, text, pos)

    def _start(self, message: str, fn, *args) -> None:
        self.ctx.status(message)
        self.job = self.ctx.jobs.start("masks", self.ctx.model_job(fn), self.state.model, *args)
        self.job.finished.connect(self._on_finished)
        self.job.failed.connect(self._on_failed)
        self.job.progress.connect(lambda _s, _f, msg: self.ctx.status(msg))
        self.cancel_btn.setEnabled(True)

    def cancel(self) -> None:
        if self.ctx.jobs.cancel("masks"):
            self.ctx.status("mask experiment cancelled")
        self.cancel_btn.setEnabled(False)

    def _on_finished(self, report) -> None:
        self.report = report
        self.cancel_btn.setEnabled(False)
        self.ctx.status("mask experiment done")
        self.refresh_now()

    def _on_failed(self, exc) -> None:
        self.cancel_btn.setEnabled(False)
        if isinstance(exc, Cancelled):
            self.ctx.status("mask experiment cancelled")
        else:
            self.ctx.report(exc)

    # -- drawing -----------------------------------------------------------------------------
    def refresh(self) -> None:
        self._list_tokens(self.state.pieces)  # the experiments mask the tokens the model reads: pieces
        if self.report is None:
            self.view.setVisible(False)
            self.numbers.setText(START)
            return
        spec = self.state.spec_for("masks")
        self.view.set_theme(spec.theme)
        d = masks_data(self.report, spec)
        self.view.setVisible(True)
        self.view.show_data(d)
        self.view.set_caption(view_caption(self.state.capture, spec, ViewInputs(mask_report=self.report))
                             if self.state.capture is not None else "", spec.caption)
        head, *rest = d.numbers
        self.numbers.setText("<b>" + html.escape(head) + "</b><br>" + "<br>".join(html.escape(n) for n in rest))
