"""The Rollout and Flow views (Abnar & Zuidema 2020) of a self-attention stack.

A heatmap of output positions × input tokens (rollout: the layers' maps multiplied; flow: the
maximum flow through the layers) above per-token bars for one output position.

Flow values: by default each output token's row is normalised to shares of the input, as the
paper's reference code does (``flow_values="shares"``); ``raw`` shows the max-flow values
themselves (a row sums to far more than 1), and the colour bar says which. Rollout rows already
sum to 1.

:func:`rollout_data` builds either view (flow from ``inputs.flow`` when the window computed it in
a worker, else here), :class:`RolloutDrawer` draws it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import rollout as rollout_mod
from ..result import Capture
from ..tasks import TaskState
from ..themes import Theme
from .common import (
    GID_ATTENTION,
    GID_SELECTED,
    clean_label,
    panel_title,
    set_col_ticks,
    stack_title,
    tick_step,
    title_inches,
    view_title,
)
from .spec import ViewInputs, ViewSpec

COLORBAR_LABELS = {
    "rollout": "share of the input token",
    "shares": "share of the input token (each row normalised)",
    "raw": "maximum flow (raw, rows not normalised)",
}


@dataclass(frozen=True)
class RolloutData:
    """matrix : ``[S, S]`` (rows: output positions at the top layer, columns: input tokens);
    contributions : ``[S]`` row ``position`` normalised to sum 1."""

    method: str
    matrix: np.ndarray
    labels: tuple[str, ...]
    position: int
    contributions: np.ndarray
    causal: bool
    through_layer: int
    colorbar_label: str
    title: str
    cmap_name: str


# rollout of every layer, per capture and (stack, fusion, residual): L products of S × S maps
_ROLLOUTS: weakref.WeakKeyDictionary[Capture, dict[tuple, np.ndarray]] = weakref.WeakKeyDictionary()


def rollout_layers(capture: Capture, name: str, fusion: rollout_mod.Fusion, residual: float) -> np.ndarray:
    """:func:`analysis.rollout.rollout` of a stack, ``[L, S, S]``, cached for the capture."""
    per = _ROLLOUTS.setdefault(capture, {})
    key = (name, fusion, round(float(residual), 6))
    if key not in per:
        per.clear()  # one setting at a time: a 1,024-token stack is 30 × 8 MB
        # the stored (float16) stack: fuse_heads upcasts per layer, no float32 copy of it all
        per[key] = rollout_mod.rollout(capture.stacks[name], fusion=fusion, residual=residual)
    return per[key]


def through_layer(capture: Capture, spec: ViewSpec) -> int:
    n_layers = capture.n_layers(spec.stack)
    return n_layers - 1 if spec.through_layer is None else int(spec.through_layer)


def raw_flow(capture: Capture, spec: ViewSpec, task: TaskState | None = None) -> np.ndarray:
    """The max-flow matrix ``[S, S]`` of the spec's stack, fusion, residual and layers."""
    name = capture.resolve_stack(spec.stack)
    return rollout_mod.attention_flow(capture.stacks[name], fusion=spec.fusion, residual=spec.residual,
                                      output_layer=through_layer(capture, spec), task=task)


def rollout_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
                 task: TaskState | None = None) -> RolloutData:
    inputs = inputs or ViewInputs()
    name = capture.resolve_stack(spec.stack)
    layer = through_layer(capture, spec)
    n = capture.shape(name)[-1]
    causal = capture.is_causal(name)
    layers = f"layers 0–{layer}" if layer else "layer 0"
    if spec.view == "flow":
        flow = inputs.flow if inputs.flow is not None else raw_flow(capture, spec, task)
        matrix = rollout_mod.flow_shares(flow) if spec.flow_values == "shares" else np.asarray(flow, dtype=np.float64)
        values = "rows normalised to shares" if spec.flow_values == "shares" else "raw max-flow values"
        what = f"attention flow ({values}), heads fused by {spec.fusion}, {layers}"
        label = COLORBAR_LABELS[spec.flow_values]
    else:
        matrix = rollout_layers(capture, name, spec.fusion, spec.residual)[layer]
        what = f"attention rollout, heads fused by {spec.fusion}, {layers}"
        label = COLORBAR_LABELS["rollout"]
    position = spec.position if spec.position is not None else (n - 1 if causal else 0)
    labels = tuple(clean_label(s) for s in capture.query_tokens(name).display)
    title = view_title(capture, spec, f"{stack_title(capture, name)}, {what}, residual {spec.residual:g}")
    return RolloutData(spec.view, np.asarray(matrix), labels, position,
                       rollout_mod.token_contributions(matrix, position), causal, layer, label, title, spec.cmap or "")


class RolloutDrawer:
    """Heatmap (output positions × input tokens) above per-token bars for one output position."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        fig.set_layout_engine("constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=(3.0, 1.4))
        self.ax = fig.add_subplot(gs[0])
        self.bar_ax = fig.add_subplot(gs[1], sharex=self.ax)
        self.image = self.ax.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", origin="upper")
        self.image.set_gid(GID_ATTENTION)
        self.cbar = fig.colorbar(self.image, ax=self.ax, fraction=0.04, pad=0.01, aspect=30)
        self.row_marker = Rectangle((-0.5, -0.5), 1, 1, fill=False, lw=1.8, gid=GID_SELECTED)
        self.ax.add_patch(self.row_marker)
        self.bars: BarContainer | None = None
        self.matrix = np.zeros((0, 0))
        self.bar_values = np.zeros(0)
        self.labels: tuple[str, ...] = ()
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.row_marker.set_edgecolor(theme.line_colors[1])
        for ax in (self.ax, self.bar_ax, self.cbar.ax):
            ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)

    @staticmethod
    def size(d: RolloutData, theme: Theme) -> tuple[float, float]:
        n = len(d.labels)
        side = min(14.0, max(4.0, n * theme.tick_size * 1.5 / 72.0))
        return side + 2.5, side * 1.45 + 1.5 + title_inches(theme)

    def draw(self, d: RolloutData) -> bool:
        th = self.theme
        self.matrix = np.asarray(d.matrix, dtype=np.float64)
        self.labels = d.labels
        q, n = self.matrix.shape
        future = np.triu(np.ones(self.matrix.shape, dtype=bool), k=1) if d.causal else np.zeros(self.matrix.shape, bool)
        self.image.set_data(np.ma.masked_array(self.matrix, mask=future))
        self.image.set_extent((-0.5, n - 0.5, q - 0.5, -0.5))
        self.image.set_cmap(mpl.colormaps[d.cmap_name or th.cmap].with_extremes(bad=th.masked_color))
        hi = float(np.nanmax(self.matrix)) if self.matrix.size else 1.0
        self.image.set_norm(Normalize(0.0, hi if hi > 0 else 1.0))
        self.cbar.update_normal(self.image)
        self.cbar.set_label(d.colorbar_label, color=th.text_color, fontsize=th.base_size)
        w, h = self.fig.get_size_inches()
        xs = tick_step(n, w * 0.8, th.tick_size, pitch=1.3)
        ys = tick_step(q, h * 0.5, th.tick_size, pitch=1.3)
        self.ax.set_yticks(range(0, q, ys), [d.labels[i] for i in range(0, q, ys)])
        set_col_ticks(self.bar_ax, d.labels, xs, w * 0.8 / max(n, 1), th.tick_size)
        self.ax.tick_params(labelbottom=False)
        self.ax.set_xlim(-0.5, n - 0.5)
        self.ax.set_ylim(q - 0.5, -0.5)
        self.ax.set_ylabel(f"output position (after layer {d.through_layer})", color=th.text_color, fontsize=th.base_size)
        self.bar_ax.set_xlabel("input token (embeddings)", color=th.text_color, fontsize=th.base_size)
        self.set_output(d.position, d.contributions)
        return True

    def set_output(self, position: int, contributions: np.ndarray) -> None:
        th = self.theme
        self.bar_values = np.asarray(contributions, dtype=np.float64)
        n = self.matrix.shape[1]
        self.row_marker.set_bounds(-0.5, position - 0.5, n, 1)
        if self.bars is not None:
            self.bars.remove()
        self.bars = self.bar_ax.bar(np.arange(len(self.bar_values)), self.bar_values, width=0.8, color=th.line_colors[0])
        top = float(np.nanmax(self.bar_values)) if self.bar_values.size else 1.0
        self.bar_ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        self.bar_ax.set_ylabel("contribution", color=th.text_color, fontsize=th.base_size)
        label = self.labels[position] if 0 <= position < len(self.labels) else str(position)
        panel_title(self.bar_ax, f"contributions to output position {position} ('{label}')", th)
