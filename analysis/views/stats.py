"""The Statistics view: one per-head statistic of a stack as a layers × heads grid.

The Statistics tab shows the same rows as a sortable table next to this grid; the grid is what
exports draw. :func:`stats_data` builds it from :func:`analysis.stats.stats_rows` (given, or
computed from the capture), :class:`StatsDrawer` draws it: ONE image with a colour bar, the
selected head outlined, undefined cells (cross-attention has no position axis) grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import stats as stats_mod
from ..result import SELF_STACKS, Capture
from ..tasks import TaskState
from ..themes import Theme
from .common import GID_ATTENTION, GID_SELECTED, stack_title, tick_step, title_inches, view_title
from .spec import ViewInputs, ViewSpec

#: one line per statistic: what the number means (the tab's header tooltips and captions)
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


def stat_label(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class StatsData:
    """values : float64 ``[L, H]`` of ``stat`` (NaN where undefined); rows : the stack's
    :func:`analysis.stats.stats_rows` (layer-major) for the table."""

    stack: str
    stat: str
    values: np.ndarray
    rows: tuple[dict, ...]
    selected: tuple[int, int] | None
    undefined: str
    title: str
    cmap_name: str


def stack_rows(rows: Sequence[dict], stack: str) -> tuple[dict, ...]:
    return tuple(r for r in rows if r["stack"] == stack)


def stats_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
               task: TaskState | None = None) -> StatsData:
    """The grid of ``spec.stat`` for ``spec.stack``; ``inputs.stats_rows`` when already computed."""
    inputs = inputs or ViewInputs()
    name = capture.resolve_stack(spec.stack)
    all_rows = inputs.stats_rows if inputs.stats_rows is not None else stats_mod.stats_rows(capture, task=task)
    rows = stack_rows(all_rows, name)
    values = np.full(capture.shape(name)[:2], np.nan)
    for r in rows:
        v = r[spec.stat]
        values[r["layer"], r["head"]] = np.nan if v is None else float(v)
    undefined = ""
    if not np.isfinite(values).any():
        undefined = ("cross-attention has no shared position axis"
                     if name not in SELF_STACKS and spec.stat in stats_mod.POSITIONAL_STATS else "no key token qualifies")
    selected = None if spec.head is None else (spec.layer, spec.head)
    n_layers, n_heads = values.shape
    what = f"{stack_title(capture, name)}, {stat_label(spec.stat)} per head ({n_layers} layers × {n_heads} heads)"
    return StatsData(name, spec.stat, values, rows, selected, undefined, view_title(capture, spec, what),
                     spec.cmap or "")


class StatsDrawer:
    """Layers × heads of one statistic: one image, a colour bar, the selected head outlined."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        fig.set_layout_engine("constrained")
        self.ax = fig.add_subplot(1, 1, 1)
        self.image = self.ax.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", origin="upper")
        self.image.set_gid(GID_ATTENTION)
        self.cbar = fig.colorbar(self.image, ax=self.ax, fraction=0.05, pad=0.02, aspect=40)
        self.marker = Rectangle((-0.5, -0.5), 1, 1, fill=False, lw=2.0, gid=GID_SELECTED)
        self.ax.add_patch(self.marker)
        self.ax.xaxis.tick_top()
        self.ax.xaxis.set_label_position("top")
        self.values = np.zeros((0, 0))
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.marker.set_edgecolor(theme.line_colors[1])
        for ax in (self.ax, self.cbar.ax):
            ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)

    @staticmethod
    def size(d: StatsData, theme: Theme) -> tuple[float, float]:
        n_layers, n_heads = d.values.shape
        width = min(14.0, max(4.5, 0.45 * n_heads + 2.5))
        return width, min(16.0, max(3.5, 0.32 * n_layers + 1.6 + title_inches(theme)))

    def draw(self, d: StatsData) -> bool:
        th = self.theme
        self.values = np.asarray(d.values, dtype=np.float64)
        n_layers, n_heads = self.values.shape
        self.image.set_data(np.ma.masked_invalid(self.values))
        self.image.set_extent((-0.5, n_heads - 0.5, n_layers - 0.5, -0.5))
        finite = self.values[np.isfinite(self.values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self.image.set_cmap(mpl.colormaps[d.cmap_name or th.cmap].with_extremes(bad=th.masked_color))
        self.image.set_norm(Normalize(lo, hi if hi > lo else lo + 1e-6))
        self.cbar.update_normal(self.image)
        self.cbar.set_label(stat_label(d.stat), color=th.text_color, fontsize=th.base_size)
        w, h = self.fig.get_size_inches()
        ys = tick_step(n_layers, h * 0.75, th.tick_size, pitch=1.3)
        xs = tick_step(n_heads, w * 0.75, th.tick_size, pitch=2.5)
        self.ax.set_yticks(range(0, n_layers, ys), [f"L{i}" for i in range(0, n_layers, ys)])
        self.ax.set_xticks(range(0, n_heads, xs), [f"H{i}" for i in range(0, n_heads, xs)])
        self.ax.set_xlim(-0.5, n_heads - 0.5)
        self.ax.set_ylim(n_layers - 0.5, -0.5)
        self.ax.set_xlabel("head", color=th.text_color, fontsize=th.base_size)
        self.ax.set_ylabel("layer", color=th.text_color, fontsize=th.base_size)
        self.set_selected(d.selected)
        return True

    def set_selected(self, selected: tuple[int, int] | None) -> None:
        if selected is None or not self.values.size:
            self.marker.set_visible(False)
            return
        layer, head = selected
        self.marker.set_xy((head - 0.5, layer - 0.5))
        self.marker.set_visible(0 <= layer < self.values.shape[0] and 0 <= head < self.values.shape[1])

    def cell_at(self, xdata: float | None, ydata: float | None) -> tuple[int, int] | None:
        """(layer, head) under data coordinates, or None."""
        if xdata is None or ydata is None or not self.values.size:
            return None
        layer, head = int(np.floor(ydata + 0.5)), int(np.floor(xdata + 0.5))
        if 0 <= layer < self.values.shape[0] and 0 <= head < self.values.shape[1]:
            return layer, head
        return None
