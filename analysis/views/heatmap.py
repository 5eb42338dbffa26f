"""The Head view: one map ``[Q, K]`` (a head, or the mean/max over a layer's heads).

:func:`heatmap_data` builds what the view shows; :class:`HeatmapDrawer` draws it on a Figure.
The window's Head view and every export (File ▸ Export, Copy image, the CLI) use both.

The drawer creates its artists once and updates only what changed, so the window can switch
heads by ``set_data`` and a blit. In the window (``live=True``) the token labels are painted by a
Qt overlay from the same :class:`HeatmapData` labels and the title sits above the canvas; an
exported figure gets matplotlib tick labels (thinned so they never overlap) and a title.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

from ..aggregate import select_map
from ..result import Capture
from ..themes import Theme, get_theme
from .common import (
    GID_ATTENTION,
    GID_MASK,
    GID_MASK_HATCH,
    axis_plan,
    causal_cells,
    col_label_angle,
    colorbar_label,
    heads_what,
    label_extent,
    mask_path,
    processed_map,
    set_col_ticks,
    set_ticks,
    stack_title,
    text_inches,
    title_inches,
    view_cmap,
    view_norm,
    view_title,
    view_tokens,
)
from .fast_image import add_nearest_image
from .spec import ViewSpec

#: an exported map is at most this long per side (inches); longer token axes thin their labels
MAX_SIDE_IN = 14.0
#: hatch the masked cells in exports up to this many cells per side (denser hatching is noise)
HATCH_MAX_CELLS = 256


@dataclass(frozen=True)
class HeatmapData:
    """One map ready to draw.

    matrix : float32 ``[Q', K']`` (special tokens removed when hidden)
    row_idx, col_idx : original indices of the shown rows / columns
    mask : bool ``[Q', K']`` cells the causal mask forbids, or None
    """

    matrix: np.ndarray
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    row_idx: np.ndarray
    col_idx: np.ndarray
    row_title: str
    col_title: str
    mask: np.ndarray | None
    title: str
    norm: Normalize
    vmin: float
    vmax: float
    scale: str
    cmap: Colormap
    cmap_name: str
    colorbar_label: str


def map_what(capture: Capture, spec: ViewSpec, name: str) -> str:
    n_heads = capture.stacks[name].shape[1]
    return f"{stack_title(capture, name)}, layer {spec.layer}, {heads_what(spec, n_heads)}"


def heatmap_data(capture: Capture, spec: ViewSpec, theme: Theme | str | None = None) -> HeatmapData:
    """Everything the Head view draws for ``spec`` (layer, head/aggregation, hidden tokens, …)."""
    theme = get_theme(theme or spec.theme)
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    m = processed_map(select_map(capture, name, spec.layer, spec.head, spec.aggregation), tok, spec)
    norm = view_norm(m, capture, name, spec)
    assert norm.vmin is not None and norm.vmax is not None  # color_norm always sets both
    return HeatmapData(
        matrix=m, row_labels=tuple(tok.rows), col_labels=tuple(tok.cols), row_idx=tok.row_idx, col_idx=tok.col_idx,
        row_title=tok.row_title, col_title=tok.col_title, mask=causal_cells(capture, name, tok, spec),
        title=view_title(capture, spec, map_what(capture, spec, name)),
        norm=norm, vmin=float(norm.vmin), vmax=float(norm.vmax), scale=spec.scale, cmap=view_cmap(spec, theme),
        cmap_name=spec.cmap or theme.cmap, colorbar_label=colorbar_label(spec),
    )


def hover_text(d: HeatmapData, i: int, j: int) -> str:
    """``query → key: weight`` of the shown cell (row i, column j); '' outside the map."""
    if not (0 <= i < d.matrix.shape[0] and 0 <= j < d.matrix.shape[1]):
        return ""
    extra = " (masked: a future position)" if d.mask is not None and d.mask[i, j] else ""
    return f"{d.row_labels[i]} → {d.col_labels[j]}: {float(d.matrix[i, j]):.4f}{extra}"


class HeatmapDrawer:
    """Draws :class:`HeatmapData` on a Figure; artists are created once, :meth:`draw` updates them.

    ``live``: in the window the axes are placed by the view (no layout engine), token labels and
    the title are painted by Qt; otherwise the figure gets tick labels and a title.
    """

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        if live:
            self.ax = fig.add_axes((0.18, 0.2, 0.66, 0.75))
            cax = fig.add_axes((0.87, 0.2, 0.025, 0.72))
        else:
            self.ax = fig.add_subplot()
            cax = None
        # colour the cells, then one cell per output pixel (analysis.views.fast_image)
        self.image = add_nearest_image(self.ax)
        self.image.set_gid(GID_ATTENTION)
        # the causally masked cells: one filled path of per-row rectangles, hatched on paper
        self.mask_patch = PathPatch(MplPath(np.zeros((1, 2))), linewidth=0, edgecolor="none",
                                    antialiased=False, visible=False, zorder=3, gid=GID_MASK)
        self.ax.add_patch(self.mask_patch)
        # on paper the masked cells are hatched too (in the window the grey fill is enough, and cheaper)
        self.hatch_patch: PathPatch | None = None
        if not live:
            self.hatch_patch = PathPatch(MplPath(np.zeros((1, 2))), facecolor="none", linewidth=0, hatch="///",
                                         visible=False, zorder=4, gid=GID_MASK_HATCH)
            self.ax.add_patch(self.hatch_patch)
        if cax is not None:
            self.cbar = fig.colorbar(self.image, cax=cax)
            self.ax.set_xticks([])
            self.ax.set_yticks([])
        else:
            self.cbar = fig.colorbar(self.image, ax=self.ax, fraction=0.05, pad=0.02)
        self._mask_cells: np.ndarray | None = None
        self._shown: tuple | None = None  # (cmap, norm, labels, titles) last drawn
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.mask_patch.set_facecolor(theme.masked_color)
        if self.hatch_patch is not None:
            self.hatch_patch.set_edgecolor(theme.hatch_color)
        for ax in (self.ax, self.cbar.ax):
            ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)
        self._shown = None

    @staticmethod
    def size(d: HeatmapData, theme: Theme) -> tuple[float, float]:
        """Inches for an exported figure: cells sized so every shown label fits."""
        _, width = axis_plan(len(d.col_labels), theme.tick_size, MAX_SIDE_IN)
        _, height = axis_plan(len(d.row_labels), theme.tick_size, MAX_SIDE_IN)
        ylab = text_inches(d.row_labels, theme.tick_size) + 0.6
        xstep, _ = axis_plan(len(d.col_labels), theme.tick_size, MAX_SIDE_IN)
        shown = list(d.col_labels[::xstep])
        widths = [text_inches([s], theme.tick_size) for s in shown]
        angle = col_label_angle(shown, widths, (max(4.0, width + ylab + 1.6) - ylab - 1.6) / max(len(shown), 1))
        xlab = label_extent(max(widths, default=0.0), theme.tick_size * 1.3 / 72, angle) + 0.6
        return max(4.0, width + ylab + 1.6), max(3.5, height + xlab + title_inches(theme) + 0.4)

    def draw(self, d: HeatmapData) -> bool:
        """Show ``d``; returns True when more than the map changed (labels, colours, layout), i.e.
        when a blit of the image alone would not do."""
        q, k = d.matrix.shape
        self.image.set_data(d.matrix)
        self.image.set_extent((-0.5, k - 0.5, q - 0.5, -0.5))
        self._draw_mask(d)
        key = (d.cmap_name, d.vmin, d.vmax, d.scale, d.row_labels, d.col_labels, d.row_title, d.col_title,
               d.colorbar_label, self.theme.name)
        if key == self._shown:
            return False
        with self.image.callbacks.blocked(signal="changed"):
            self.image.set_cmap(d.cmap)
            self.image.set_norm(d.norm)
        self.cbar.update_normal(self.image)  # one colour bar update for the cmap and the norm
        th = self.theme
        # sizes from the theme, not rcParams: the window draws outside the theme's rc_context
        self.cbar.set_label(d.colorbar_label, color=th.text_color, fontsize=th.base_size)
        self.ax.set_xlim(-0.5, k - 0.5)
        self.ax.set_ylim(q - 0.5, -0.5)
        self.ax.set_xlabel(d.col_title, color=th.text_color, fontsize=th.base_size)
        self.ax.set_ylabel(d.row_title, color=th.text_color, fontsize=th.base_size)
        if not self.live:
            xstep, _ = axis_plan(k, self.theme.tick_size, MAX_SIDE_IN)
            ystep, _ = axis_plan(q, self.theme.tick_size, MAX_SIDE_IN)
            # the axes' width in the exported figure (sized by size(): labels, colour bar, margins)
            ylab = text_inches(d.row_labels, self.theme.tick_size) + 0.6
            width = max(float(self.fig.get_size_inches()[0]) - ylab - 1.6, 0.5)
            set_col_ticks(self.ax, d.col_labels, xstep, width / max(k, 1), self.theme.tick_size)
            set_ticks(self.ax.yaxis, d.row_labels, ystep)
        self._shown = key
        return True

    def _draw_mask(self, d: HeatmapData) -> None:
        hatch = self.hatch_patch
        if d.mask is None:
            self.mask_patch.set_visible(False)
            if hatch is not None:
                hatch.set_visible(False)
            return
        if self._mask_cells is None or not np.array_equal(self._mask_cells, d.mask):
            path = mask_path(d.mask)
            self.mask_patch.set_path(path)
            if hatch is not None:
                hatch.set_path(path)
            self._mask_cells = d.mask
        self.mask_patch.set_visible(True)
        if hatch is not None:
            hatch.set_visible(max(d.mask.shape) <= HATCH_MAX_CELLS)
