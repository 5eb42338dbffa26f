"""The Steps tab (seq2seq): step through a translation token by token.

The picture is :mod:`analysis.views.steps` (data and drawer, the same as every export): at step
t the cross-attention row t, the decoder self-attention row t and the top-5 candidates. The step
lives in the viewer state (``step``); Previous/Next, the slider, the spin box and the Left/Right
keys change it. Layer and head follow the toolbar (clamped to the decoder's layers).
"""

from __future__ import annotations

import html
from dataclasses import replace

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from analysis.errors import InputError
from analysis.views.captions import view_caption
from analysis.views.spec import is_seq2seq
from analysis.views.steps import StepsData, steps_data

from ..views.canvas import DrawnView
from .base import StateTab, TabContext, message_label

STEPS_NEED_SEQ2SEQ = "the generation steps need a seq2seq model with cross-attention"
HOW_TO_GET_ONE = "load a translator (e.g. bundled:translator-en-fr) and run a sentence"
CAPTION = (
    "Row t of the cross-attention and of the decoder self-attention belong to decoder position t: "
    "it reads decoder input t (the previous output token) and predicts output token t. "
    "Positions after t are hidden by the causal mask. Highlighted bar: the source token with "
    "the most attention; highlighted candidate: the token the translation chose. Layer and "
    "head follow the toolbar; the Left/Right keys step."
)


class StepsView(DrawnView):
    """The three bar charts; the layout engine runs only when the margins may change."""

    def __init__(self, parent: QWidget | None = None, theme: str = "light") -> None:
        super().__init__("steps", parent, theme)

    @property
    def cross_bars(self):
        return self.drawer.cross_bars

    @property
    def self_bars(self):
        return self.drawer.self_bars

    @property
    def ax_top(self):
        return self.drawer.ax_top

    @property
    def rebuilds(self) -> int:
        return self.drawer.rebuilds

    @property
    def layouts(self) -> int:
        return self.drawer.layouts

    def top_labels(self) -> list[str]:
        return self.drawer.top_labels()

    def show_data(self, data: StepsData, **options) -> None:
        import matplotlib as mpl

        self.data = data
        with mpl.rc_context(self.theme.rc()):
            relayout = self.drawer.draw(data)
        self.title_label.setText(data.title)
        if relayout:
            # constrained layout once, then fixed positions for the following steps
            self.figure.set_layout_engine("constrained")
            self.redraw()
            self.figure.set_layout_engine("none")
        else:
            self.redraw()


class StepsTab(StateTab, QWidget):
    """Step through a translation token by token (Previous/Next, slider, Left/Right keys)."""

    figure_view = "steps"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.data: StepsData | None = None
        self._sel_text = ""
        self.message = message_label()
        self.step_caption = QLabel("")
        self.step_caption.setTextFormat(Qt.TextFormat.RichText)
        big = QFont(self.step_caption.font())
        big.setPointSizeF(big.pointSizeF() * 1.3)
        self.step_caption.setFont(big)
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setPageStep(1)
        self.spin = QSpinBox()
        self.spin.setPrefix("step ")
        self.selection_label = QLabel("")
        self.caption = QLabel(CAPTION)
        self.caption.setWordWrap(True)
        self.view = StepsView()
        self.view.canvas.mpl_connect("key_press_event", self._on_canvas_key)
        self._build_layout()
        self._show_message("run a sentence through a translator to step through its translation")
        # the slider is throttled: dragging redraws at most every 30 ms
        self._slider_timer = QTimer(self)
        self._slider_timer.setSingleShot(True)
        self._slider_timer.setInterval(30)
        self._slider_timer.timeout.connect(lambda: self.set_step(self.slider.value()))
        self.slider.valueChanged.connect(lambda _v: self._slider_timer.start())
        self.spin.valueChanged.connect(self.set_step)
        self.prev_button.clicked.connect(lambda: self.set_step(self.step - 1))
        self.next_button.clicked.connect(lambda: self.set_step(self.step + 1))
        self.attach(ctx)

    def _build_layout(self) -> None:
        nav = QHBoxLayout()
        for w in (self.prev_button, self.slider, self.spin, self.next_button, self.selection_label):
            nav.addWidget(w, 1 if w is self.slider else 0)
        self.body = QWidget()
        bl = QVBoxLayout(self.body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.step_caption)
        bl.addLayout(nav)
        bl.addWidget(self.caption)
        bl.addWidget(self.view, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addWidget(self.body, 1)

    @property
    def step(self) -> int:
        return self.state.spec.step

    def tab_spec(self):
        """The steps spec: the toolbar's layer/head clamped to the decoder's layers."""
        cap, spec = self.state.capture, self.state.spec_for("steps")
        n_layers, n_heads = cap.shape("cross_attentions")[:2]
        layer = min(max(int(spec.layer), 0), n_layers - 1)
        head = spec.head if spec.head is None or spec.head < n_heads else n_heads - 1
        step = min(max(int(spec.step), 0), len(cap.decoder_inputs) - 1)
        return replace(spec, layer=layer, head=head, step=step)

    def export_request(self):
        if not is_seq2seq(self.state.capture):
            raise InputError(f"{STEPS_NEED_SEQ2SEQ}; {HOW_TO_GET_ONE}")
        from analysis.figures import ViewInputs

        return self.tab_spec(), ViewInputs()

    def refresh(self) -> None:
        cap = self.state.capture
        if not is_seq2seq(cap):
            self.data = None
            self._show_message(f"{STEPS_NEED_SEQ2SEQ}; {HOW_TO_GET_ONE}." if cap is not None
                               else f"{self.nothing_yet()}<br>Load a translator (bundled:translator-en-fr) to step through its translation.")
            return
        spec = self.tab_spec()
        self.view.set_theme(spec.theme)
        n = len(cap.decoder_inputs)
        for w in (self.slider, self.spin):
            w.blockSignals(True)
            w.setRange(0, max(n - 1, 0))
            w.setValue(spec.step)
            w.blockSignals(False)
        self.spin.setSuffix(f" / {n - 1}")
        what = f"{spec.aggregation} of heads" if spec.head is None else f"head {spec.head}"
        toolbar = self.state.spec.layer
        note = "" if spec.layer == toolbar else f" (the toolbar's layer {toolbar} does not exist in the decoder)"
        self._sel_text = f"toolbar: layer {spec.layer}, {what}{note}"
        self.selection_label.setText(self._sel_text)
        self.data = steps_data(cap, spec)
        self.view.show_data(self.data)
        self.view.set_caption(view_caption(cap, spec), spec.caption)
        self.caption.setVisible(spec.caption)
        d = self.data
        how = "the chosen hypothesis" if cap.generated else "teacher forcing on the typed target"
        self.step_caption.setText(f"step {d.step}: decoder input '<b>{html.escape(d.decoder_input)}</b>' → predicts "
                                  f"'<b>{html.escape(d.predicts)}</b>' &nbsp;<i>({how})</i>")
        self.prev_button.setEnabled(d.step > 0)
        self.next_button.setEnabled(d.step < n - 1)
        self.message.setVisible(False)
        self.body.setVisible(True)

    def set_step(self, t: int) -> None:
        """Show step ``t`` (clamped to 0..T-1)."""
        cap = self.state.capture
        if not is_seq2seq(cap):
            return
        t = max(0, min(int(t), len(cap.decoder_inputs) - 1))
        if not self.state.update(step=t):
            self.refresh_now()

    def candidates(self, t: int) -> tuple[tuple[str, float], ...]:
        from analysis.views.steps import candidates

        cap = self.state.capture
        return () if cap is None else candidates(cap, t)

    def keyPressEvent(self, event) -> None:  # Left/Right step (before the window's head keys)
        k = event.key()
        if self.data is not None and k in (Qt.Key.Key_Left, Qt.Key.Key_Right) and not event.modifiers():
            self.set_step(self.step + (1 if k == Qt.Key.Key_Right else -1))
            event.accept()
            return
        super().keyPressEvent(event)

    def _on_canvas_key(self, event) -> None:
        if event.key in ("left", "right"):
            self.set_step(self.step + (1 if event.key == "right" else -1))

    def _show_message(self, text: str) -> None:
        self.message.setText(f"<p style='font-size:13pt'>{text}</p>")
        self.message.setVisible(True)
        self.body.setVisible(False)
