"""The Compare tab: two captures side by side (A pinned, B the current one) and B − A.

The picture is :mod:`analysis.views.compare` (data and drawer, the same as every export) for the
toolbar's stack, layer and head; the pinned capture A is what this tab holds.
"""

from __future__ import annotations

import html

from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from analysis.errors import HeadmapError, InputError
from analysis.figures import ViewInputs
from analysis.result import Capture
from analysis.views.captions import view_caption
from analysis.views.compare import CompareData, compare_data, describe

from ..views.canvas import DrawnView
from .base import Caption, StateTab, TabContext

PIN_FIRST = ("Press “Pin current as A” to keep this capture; then run another sentence (or load another "
             "model with the same tokenizer and run the same sentence): the new capture is B.")


class CompareTab(StateTab, QWidget):
    """A (pinned) | B (current) | B − A."""

    figure_view = "compare"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.capture_a: Capture | None = None
        self.data: CompareData | None = None
        self.pin_button = QPushButton("Pin current as A")
        self.pin_button.setToolTip("keep the current capture as A; then run another sentence or load another "
                                   "model: the current capture is B")
        self.clear_button = QPushButton("Clear A")
        self.clear_button.setEnabled(False)
        self.info = Caption(rich=True)
        self.message = Caption(notice=True)
        self.message.setVisible(False)
        self.view = DrawnView("compare")
        row = QHBoxLayout()
        row.addWidget(self.pin_button)
        row.addWidget(self.clear_button)
        row.addWidget(self.info, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.view, 1)
        lay.addStretch(0)  # takes the space while the view is hidden (messages stay on top)
        self.pin_button.clicked.connect(self.pin_current)
        self.clear_button.clicked.connect(self.clear)
        self.attach(ctx)
        self._show_info()

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _show_info(self) -> None:
        a, b = self.capture_a, self.state.capture
        parts = [f"<b>A</b>: {html.escape(describe(a))}" if a is not None else "<b>A</b>: not pinned yet",
                 f"<b>B</b> (current): {html.escape(describe(b))}" if b is not None else "<b>B</b>: no capture yet"]
        self.info.setText("<br>".join(parts))

    def pin_current(self) -> None:
        """Store the current capture as A."""
        if self.state.capture is None:
            self.ctx.report("nothing to pin yet; run a sentence first")
            return
        self.capture_a = self.state.capture
        self.clear_button.setEnabled(True)
        self.ctx.status("pinned the current capture as A; run another sentence or load another model for B")
        self.refresh_now()

    def clear(self) -> None:
        self.capture_a = None
        self.clear_button.setEnabled(False)
        self.refresh_now()

    def export_request(self):
        if self.capture_a is None or self.state.capture is None:
            raise HeadmapError("pin a capture as A and run another one before exporting the comparison")
        return self.state.spec_for("compare"), ViewInputs(compare_with=self.capture_a)

    def refresh(self) -> None:
        self._show_info()
        b = self.state.capture
        if b is None:
            self.view.setVisible(False)
            self._say(self.nothing_yet())
            return
        spec = self.state.spec_for("compare")
        self.view.set_theme(spec.theme)
        if self.capture_a is None:
            self.data = None
            self.view.setVisible(False)
            self._say(PIN_FIRST)
            return
        try:
            self.data = compare_data(b, spec, ViewInputs(compare_with=self.capture_a))
        except InputError as exc:  # A lacks the stack, layer or head: say so here, not in a dialog
            self.data = None
            self.view.setVisible(False)
            self._say(str(exc))
            return
        d = self.data
        if d.note:
            self._say("Side by side only: " + d.note + ".")
        elif d.same_capture:
            self._say("B is still the pinned capture, so B − A is 0: run another sentence, or load another model "
                      "with the same tokenizer and run the same sentence.")
        else:
            self._say("")
        self.view.setVisible(True)
        self.view.show_data(d)
        self.view.set_caption(view_caption(b, spec, ViewInputs(compare_with=self.capture_a)), spec.caption)
