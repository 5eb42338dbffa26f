"""The Rollout tab: attention rollout and attention flow (Abnar & Zuidema 2020).

The picture is :mod:`analysis.views.rollout` (data and drawer, the same as every export). The
options (fusion, residual, through which layer, which output position, flow as shares or raw
values) live in the viewer state; the method chooses the view (``rollout`` or ``flow``). Flow runs
in a job (kind "flow": a newer setting supersedes it, it reports progress and can be cancelled);
its raw matrix is kept per setting and handed to the view.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from analysis import rollout as rollout_mod
from analysis.errors import Cancelled, HeadmapError
from analysis.figures import ViewInputs
from analysis.result import SELF_STACKS
from analysis.views.captions import view_caption
from analysis.views.rollout import RolloutData, raw_flow, rollout_data, through_layer

from ..views.canvas import DrawnView
from .base import Caption, StateTab, TabContext

METHODS = ("rollout", "flow")
def fit_spin(spin: QSpinBox) -> None:
    """Wide enough for prefix, the largest value and suffix (the default cuts 'layer 11 / 11')."""
    text = f"{spin.prefix()}{spin.maximum()}{spin.suffix()}"
    spin.setMinimumWidth(spin.fontMetrics().horizontalAdvance(text) + 42)


def flow_job(capture, spec, task=None) -> np.ndarray:
    """The raw attention flow of the spec's stack and options (:func:`analysis.views.rollout.raw_flow`)."""
    return raw_flow(capture, spec, task)


class RolloutView(DrawnView):
    """Heatmap above the bars; click a row to show its contributions."""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__("rollout", parent, theme)
        self.on_row = None  # callable(row) set by the tab
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

    @property
    def matrix(self) -> np.ndarray:
        return self.drawer.matrix

    @property
    def labels(self) -> tuple[str, ...]:
        return self.drawer.labels

    @property
    def bar_values(self) -> np.ndarray:
        return self.drawer.bar_values

    def _on_click(self, event) -> None:
        if event.inaxes is self.drawer.ax and event.ydata is not None and self.matrix.size and self.on_row:
            i = int(np.floor(event.ydata + 0.5))
            if 0 <= i < self.matrix.shape[0]:
                self.on_row(i)

    def _on_motion(self, event) -> None:
        text, m = "", self.matrix
        if event.inaxes is self.drawer.ax and event.xdata is not None and m.size:
            i, j = int(np.floor(event.ydata + 0.5)), int(np.floor(event.xdata + 0.5))
            if 0 <= i < m.shape[0] and 0 <= j < m.shape[1]:
                text = f"output {i} '{self.labels[i]}' ← input {j} '{self.labels[j]}': {m[i, j]:.4f} (click: show this row)"
        elif event.inaxes is self.drawer.bar_ax and event.xdata is not None and self.bar_values.size:
            j = int(np.floor(event.xdata + 0.5))
            if 0 <= j < len(self.bar_values):
                text = f"input {j} '{self.labels[j]}': {self.bar_values[j]:.4f}"
        self.set_hover(text)


class RolloutTab(StateTab, QWidget):
    """Attention rollout / flow of the selected self-attention stack."""

    figure_view = "rollout"

    def __init__(self, ctx: TabContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._flows: dict[tuple, np.ndarray] = {}  # raw flow per (capture id, settings)
        self._flow_for = None  # the capture the cached flows belong to
        self._flow_key: tuple | None = None  # the setting being computed
        self.data: RolloutData | None = None
        self._make_controls()
        self.message = Caption(notice=True)
        self.message.setVisible(False)
        self.view = RolloutView()
        self.view.on_row = lambda i: self.state.update(position=int(i))
        row = QHBoxLayout()
        for w in (QLabel("method"), self.method_combo, QLabel("heads fused by"), self.fusion_combo, self.residual_spin,
                  self.layer_spin, self.output_spin, self.output_name, self.values_combo, self.cancel_btn):
            row.addWidget(w)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.message)
        lay.addWidget(self.view, 1)
        lay.addStretch(0)  # takes the space while the view is hidden (messages stay on top)
        self.method_combo.currentIndexChanged.connect(self._on_method)
        self.fusion_combo.currentIndexChanged.connect(lambda _i: self.state.update(fusion=self.fusion_combo.currentText()))
        self.residual_spin.valueChanged.connect(lambda v: self.state.update(residual=round(float(v), 4)))
        self.layer_spin.valueChanged.connect(lambda v: self.state.update(through_layer=int(v)))
        self.output_spin.valueChanged.connect(lambda v: self.state.update(position=int(v)))
        self.values_combo.currentIndexChanged.connect(lambda _i: self.state.update(flow_values=self.values_combo.currentData()))
        self.cancel_btn.clicked.connect(lambda: self.ctx.jobs.cancel("flow"))
        self.attach(ctx)

    def _make_controls(self) -> None:
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
        self.values_combo = QComboBox()
        self.values_combo.addItem("flow as shares", "shares")
        self.values_combo.addItem("raw max-flow", "raw")
        self.values_combo.setToolTip("shares: each output row normalised to sum 1 (as the reference code); raw: max-flow values")
        self.cancel_btn = QPushButton("Cancel flow")
        self.cancel_btn.setVisible(False)

    # -- state ------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.method_combo.currentText()

    @property
    def stack(self) -> str | None:
        return self.state.stack

    @property
    def matrix(self) -> np.ndarray | None:
        return None if self.data is None else self.data.matrix

    def _on_method(self, _i: int) -> None:
        self.figure_view = self.method
        self.mark_stale()

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _settings(self, spec) -> tuple:
        cap = self.state.capture
        return (cap.resolve_stack(spec.stack), spec.fusion, round(float(spec.residual), 4), through_layer(cap, spec))

    def inputs(self, spec) -> ViewInputs:
        cap = self.state.capture
        flow = self._flows.get(self._settings(spec)) if self._flow_for is cap else None
        return ViewInputs(flow=flow)

    def export_request(self):
        spec = self.state.spec_for(self.method)
        if self.state.capture is None:
            raise HeadmapError("nothing to export yet; run a sentence first")
        return spec, self.inputs(spec)

    def refresh(self) -> None:
        cap = self.state.capture
        if cap is None:
            self._hide(self.nothing_yet())
            return
        spec = self.state.spec_for(self.method)
        self.view.set_theme(spec.theme)
        name = cap.resolve_stack(spec.stack)
        self._sync_controls(cap, name, spec)
        if name not in SELF_STACKS:
            self._hide("Rollout and flow follow one sequence through the layers, so they need self-attention; "
                       "cross-attention mixes two sequences. Choose the encoder or the decoder stack in the toolbar.")
            return
        n = cap.shape(name)[-1]
        if self.method == "flow" and not rollout_mod.flow_is_available(n):
            self._hide(f"Attention flow is limited to {rollout_mod.FLOW_MAX_TOKENS} tokens and this input has {n}: it "
                       "solves one max-flow problem per pair of tokens. Use rollout instead (method above), or a "
                       "shorter text.")
            return
        inputs = self.inputs(spec)
        if self.method == "flow" and inputs.flow is None:
            self._start_flow(cap, spec)
            return
        self.data = rollout_data(cap, spec, inputs)
        self._say("")
        self.view.setVisible(True)
        self.view.show_data(self.data)
        self.view.set_caption(view_caption(cap, spec, inputs), spec.caption)
        labels = self.data.labels
        p = self.data.position
        self.output_name.setText(f"= “{labels[p]}”" if 0 <= p < len(labels) else "")

    def _hide(self, text: str) -> None:
        self.data = None
        self.view.setVisible(False)
        self.output_name.setText("")
        self._say(text)

    def _sync_controls(self, cap, name: str, spec) -> None:
        on = name in SELF_STACKS
        for w in (self.method_combo, self.fusion_combo, self.residual_spin, self.layer_spin, self.output_spin,
                  self.values_combo):
            w.setEnabled(on)
        self.values_combo.setVisible(self.method == "flow")
        n_layers, n = cap.shape(name)[0], cap.shape(name)[-1]
        position = spec.position if spec.position is not None else (n - 1 if cap.is_causal(name) else 0)
        values = ((self.layer_spin, n_layers - 1, n_layers - 1 if spec.through_layer is None else spec.through_layer),
                  (self.output_spin, n - 1, position))
        for spin, top, value in values:
            spin.blockSignals(True)
            spin.setRange(0, top)
            spin.setValue(value)
            spin.blockSignals(False)
        self.layer_spin.setSuffix(f" / {n_layers - 1}")
        self.output_spin.setSuffix(f" / {n - 1}")
        fit_spin(self.layer_spin)
        fit_spin(self.output_spin)
        for combo, value in ((self.fusion_combo, spec.fusion), (self.values_combo, spec.flow_values)):
            i = combo.findData(value) if combo is self.values_combo else combo.findText(value)
            if i >= 0 and i != combo.currentIndex():
                combo.blockSignals(True)
                combo.setCurrentIndex(i)
                combo.blockSignals(False)
        if abs(self.residual_spin.value() - spec.residual) > 1e-9:
            self.residual_spin.blockSignals(True)
            self.residual_spin.setValue(spec.residual)
            self.residual_spin.blockSignals(False)

    # -- flow in a job ----------------------------------------------------------------------
    def _start_flow(self, cap, spec) -> None:
        key = self._settings(spec)
        self.data = None
        self.view.setVisible(False)
        self._say("computing attention flow in the background…")
        if self._flow_key == key and self.ctx.jobs.is_busy("flow"):
            return
        self._flow_key = key
        job = self.ctx.jobs.start("flow", flow_job, cap, spec)
        self.cancel_btn.setVisible(True)
        job.progress.connect(lambda _s, f, _m: f >= 0 and self._say(
            f"computing attention flow in the background… {100 * f:.0f} %"))
        job.finished.connect(lambda flow, c=cap, k=key: self._on_flow(c, k, flow))
        job.failed.connect(self._on_flow_failed)

    def _on_flow(self, cap, key: tuple, flow) -> None:
        self.cancel_btn.setVisible(False)
        self._flow_key = None
        if self._flow_for is not cap:
            self._flows, self._flow_for = {}, cap
        self._flows[key] = np.asarray(flow)
        self.mark_stale()

    def _on_flow_failed(self, exc) -> None:
        self.cancel_btn.setVisible(False)
        self._flow_key = None
        if isinstance(exc, Cancelled):
            self._say("attention flow cancelled; change an option or choose flow again to restart it")
            return
        self._say("attention flow failed (see the message); rollout still works")
        self.ctx.report(exc)
