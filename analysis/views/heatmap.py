"""The Head view: one map ``[Q, K]`` (a head, or the mean/max over a layer's heads).

:func:`heatmap_data` builds what the view shows; :class:`HeatmapDrawer` draws it on a Figure.
The window's Head view and every export (File ▸ Export, Copy image, the CLI) use both.

The drawer creates its artists once and updates only what changed, so the window can switch
heads by ``set_data`` and a blit. In the window (``live=True``) the token labels are painted by a
Qt overlay from the same :class:`HeatmapData` labels and the title sits above the canvas; an
exported figure gets matplotlib tick labels (thinned so they never overlap) and a title.

Long maps: the data hold the map as a :class:`~analysis.pyramid.MapSource` (a long capture's
stored pyramid, read lazily, or an in-memory :class:`~analysis.pyramid.ArrayPyramid`), and the
drawer's image (:class:`~analysis.views.pyramid_image.PyramidImage`) reads the level that fits
its pixels, and zoomed in only the region in view, in the window and in every export alike. When
that level pools cells, the colour bar's label says so ("each cell: max of 4×4 tokens").
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

from ..aggregate import check_layer_head, color_norm, select_map, stack_range, value_range
from ..pyramid import ArrayPyramid, MapSource, n_levels, to_float32
from ..result import Capture
from ..themes import Theme, get_theme
from .common import (
    GID_ATTENTION,
    GID_MASK,
    GID_MASK_HATCH,
    ViewTokens,
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
    shared_norm,
    stack_title,
    text_inches,
    title_inches,
    view_cmap,
    view_title,
    view_tokens,
)
from .pyramid_image import add_pyramid_image
from .spec import ViewSpec

#: an exported map is at most this long per side (inches); longer token axes thin their labels
MAX_SIDE_IN = 14.0
#: hatch the masked cells in exports up to this many cells per side (denser hatching is noise)
HATCH_MAX_CELLS = 256
#: what part of a map the window shows: ``(col_lo, col_hi, row_lo, row_hi)``, the edges of the view
#: in token coordinates (cell (i, j) spans x ∈ [j − ½, j + ½], y ∈ [i − ½, i + ½]); None = all of it
View = tuple[float, float, float, float]


@dataclass(frozen=True)
class HeatmapData:
    """One map ready to draw.

    map_source : the map as shown ``[Q', K']`` (special tokens removed when hidden, renormalised, the
        mean/max over heads): its levels and regions (:class:`~analysis.pyramid.MapSource`)
    matrix : float32 ``[Q', K']``, the whole map (read from ``map_source`` on first use)
    row_idx, col_idx : original indices of the shown rows / columns
    mask : bool ``[Q', K']`` cells the causal mask forbids, or None (read-only, shared)
    """

    map_source: MapSource
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

    @property
    def shape(self) -> tuple[int, int]:
        """``(Q', K')``"""
        return self.map_source.shape

    @cached_property
    def matrix(self) -> np.ndarray:
        """The whole map, float32 ``[Q', K']`` (a long capture's map is read from disk here once;
        drawing and the hover never need it)."""
        return self.map_source.level(0)

    def value(self, i: int, j: int) -> float:
        """The weight of cell (row i, column j) of the map itself (level 0, never a pooled cell)."""
        return float(self.map_source.region(0, i, i + 1, j, j + 1)[0, 0])


def map_what(capture: Capture, spec: ViewSpec, name: str) -> str:
    n_heads = capture.stacks[name].shape[1]
    return f"{stack_title(capture, name)}, layer {spec.layer}, {heads_what(spec, n_heads)}"


def stored_source(capture: Capture, name: str, spec: ViewSpec) -> MapSource | None:
    """The stored pyramid of the map ``spec`` shows, when the capture's stack has one and the view
    shows that map as it is: a single head, nothing hidden, and a colour range that needs no full
    read (linear, or shared by the stack); else None (the map is read and processed)."""
    if spec.head is None or spec.hide_special or not (spec.scale == "linear" or spec.shared_range):
        return None
    map_source = getattr(capture.stacks[name], "map_source", None)
    return None if map_source is None else map_source(spec.layer, spec.head)


# per capture (weakly): the causal mask of a 4,096-token map is 16 MB; every head shares it
_MASK_CACHE: weakref.WeakKeyDictionary[Capture, dict[tuple, np.ndarray | None]] = weakref.WeakKeyDictionary()


def _mask(capture: Capture, name: str, spec: ViewSpec) -> np.ndarray | None:
    per_capture = _MASK_CACHE.setdefault(capture, {})
    key = (name, spec.hide_special, spec.rows, spec.show_causal_mask)
    if key not in per_capture:
        mask = causal_cells(capture, name, view_tokens(capture, spec, name), spec)
        if mask is not None:
            mask.setflags(write=False)
        per_capture[key] = mask
    return per_capture[key]


def _linear_range(values: np.ndarray) -> tuple[float, float]:
    """:func:`value_range` of ``values`` (linear) without its float64 copy of every cell."""
    return value_range(np.array(stack_range(values)), "linear")


def _map_and_norm(capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec) -> tuple[MapSource, Normalize]:
    """The map ``spec`` shows, as a :class:`MapSource`, and its colour range."""
    stored = stored_source(capture, name, spec)
    if stored is not None:
        if spec.shared_range:
            return stored, shared_norm(capture, name, spec)
        # linear (stored_source): attention is >= 0, so the range is 0 … its largest weight,
        # which every max-pooled level keeps: the coarsest, tiny, is enough
        top = stored.level(n_levels(*stored.shape) - 1)
        return stored, color_norm(None, "linear", *_linear_range(top))
    if spec.head is not None and not spec.hide_special:
        # one head as it is: the stack's own map (no copy; converted to float32 where it is read)
        stack = capture.stacks[name]
        check_layer_head(stack.shape[0], stack.shape[1], spec.layer, spec.head)
        m = stack[spec.layer, spec.head]
    else:
        m = processed_map(select_map(capture, name, spec.layer, spec.head, spec.aggregation), tok, spec)
    if spec.shared_range:
        norm = shared_norm(capture, name, spec)
    elif spec.scale == "linear":
        norm = color_norm(None, "linear", *_linear_range(m))
    else:
        norm = color_norm(to_float32(m), spec.scale)
    return ArrayPyramid(m), norm


def heatmap_data(capture: Capture, spec: ViewSpec, theme: Theme | str | None = None) -> HeatmapData:
    """Everything the Head view draws for ``spec`` (layer, head/aggregation, hidden tokens, …).

    A single head's map shown as it is comes from the stack's stored pyramid when it has one
    (``stack.map_source(layer, head)``, a long capture's store): nothing but its coarsest level is
    read here (its largest weight is the map's, max pooling keeps it); the drawer reads the level
    that fits its pixels. Any other map is wrapped in an :class:`~analysis.pyramid.ArrayPyramid`:
    a single head's straight from the stack, the others read and processed first.
    """
    theme = get_theme(theme or spec.theme)
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    source, norm = _map_and_norm(capture, name, tok, spec)
    assert norm.vmin is not None and norm.vmax is not None  # color_norm always sets both
    return HeatmapData(
        map_source=source, row_labels=tuple(tok.rows), col_labels=tuple(tok.cols), row_idx=tok.row_idx,
        col_idx=tok.col_idx, row_title=tok.row_title, col_title=tok.col_title, mask=_mask(capture, name, spec),
        title=view_title(capture, spec, map_what(capture, spec, name)),
        norm=norm, vmin=float(norm.vmin), vmax=float(norm.vmax), scale=spec.scale, cmap=view_cmap(spec, theme),
        cmap_name=spec.cmap or theme.cmap, colorbar_label=colorbar_label(spec),
    )


def pooled_note(level: int) -> str:
    """What a cell of ``level`` is, for the colour bar's label ('' at level 0)."""
    f = 2 ** level
    return f"each cell: max of {f}×{f} tokens" if level > 0 else ""


def hover_text(d: HeatmapData, i: int, j: int, level: int = 0) -> str:
    """``query → key: weight`` of the shown cell (row i, column j: tokens, at any zoom); '' outside
    the map. The weight is the token pair's own (level 0); with ``level`` > 0 (the picture is
    pooled) the drawn cell's value, the largest of its block, follows."""
    q, k = d.shape
    if not (0 <= i < q and 0 <= j < k):
        return ""
    extra = " (masked: a future position)" if d.mask is not None and d.mask[i, j] else ""
    text = f"{d.row_labels[i]} → {d.col_labels[j]}: {d.value(i, j):.4f}{extra}"
    if level > 0:
        f = 2 ** level
        cell = float(d.map_source.region(level, i // f, i // f + 1, j // f, j // f + 1)[0, 0])
        text += f" · cell drawn: {cell:.4f}, the max of its {f}×{f} tokens"
    return text


class HeatmapDrawer:
    """Draws :class:`HeatmapData` on a Figure; artists are created once, :meth:`draw` updates them.

    ``live``: in the window the axes are placed by the view (no layout engine), token labels, axis
    titles, the colour bar's ticks and the title are painted by Qt; otherwise the figure gets tick
    labels and a title.
    """

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        if live:
            self.ax = fig.add_axes((0.18, 0.2, 0.66, 0.75))
            cax = fig.add_axes((0.87, 0.2, 0.025, 0.72))
        else:
            self.ax = fig.add_subplot()
            cax = None
        # the level of the map that fits the pixels, the cells in view, coloured, then one cell per
        # output pixel (analysis.views.pyramid_image, analysis.views.fast_image)
        self.image = add_pyramid_image(self.ax)
        self.image.set_gid(GID_ATTENTION)
        self.image.on_level = self._on_level
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
            # no text drawn by matplotlib in the window (about half a millisecond a text): the
            # view paints the token labels, the axis titles and the colour bar's ticks with Qt
            for axis in (self.ax.xaxis, self.ax.yaxis, self.cbar.ax.yaxis):
                axis.set_visible(False)
            self.ax.set_xticks([])
            self.ax.set_yticks([])
        else:
            self.cbar = fig.colorbar(self.image, ax=self.ax, fraction=0.05, pad=0.02)
        self._mask_cells: np.ndarray | None = None
        self._shown: tuple | None = None  # (cmap, norm, labels, titles) last drawn
        self._cbar_base: str | None = None  # the data's colour bar label (the pooled note follows it)
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

    def draw(self, d: HeatmapData, view: View | None = None) -> bool:
        """Show ``d``, the whole map or (the window, zoomed) ``view``; returns True when more than
        the map changed (labels, colours, layout, the pooled note), i.e. when a blit of the image
        alone would not do."""
        q, k = d.shape
        self.image.set_source(d.map_source)
        self._set_limits(view, q, k)
        self._cbar_base = d.colorbar_label
        self.image.fit()  # the level and cells these axes fit now (re-fitted when drawn)
        self._draw_mask(d)
        label = self.cbar_text()
        key = (d.cmap_name, d.vmin, d.vmax, d.scale, d.row_labels, d.col_labels, d.row_title, d.col_title,
               label, self.theme.name)
        if key == self._shown:
            return False
        with self.image.callbacks.blocked(signal="changed"):
            self.image.set_cmap(d.cmap)
            self.image.set_norm(d.norm)
        self.cbar.update_normal(self.image)  # one colour bar update for the cmap and the norm
        th = self.theme
        # sizes from the theme, not rcParams: the window draws outside the theme's rc_context
        self.cbar.set_label(label, color=th.text_color, fontsize=th.base_size)
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

    def set_view(self, view: View | None) -> bool:
        """Show ``view`` of the map drawn last (None: all of it), reading the level and cells that
        fit; True when the pooled note changed too (the colour bar needs a full draw), False when a
        blit of the image will do."""
        if self.image.source is None:
            return False
        before = self.cbar_text()
        self._set_limits(view, *self.image.source.shape)
        self.image.fit()
        if self.cbar_text() == before:
            return False
        self._shown = None  # the next draw() sets everything again
        return True

    @property
    def level(self) -> int:
        """The pyramid level drawn (0: one cell per token; k: the max of 2**k × 2**k tokens)."""
        return self.image.level

    def cbar_text(self) -> str:
        """The colour bar's label: the data's, and what a cell is when the level drawn pools them."""
        base = self._cbar_base or ""
        note = pooled_note(self.image.level)
        return f"{base}\n({note})" if note else base

    def _on_level(self, _level: int) -> None:
        # the image found another level while being drawn (an export's final layout): the colour
        # bar, drawn after the map, says what its cells are
        if self._cbar_base is not None:
            self.cbar.ax.yaxis.label.set_text(self.cbar_text())

    def _set_limits(self, view: View | None, q: int, k: int) -> None:
        c0, c1, r0, r1 = (-0.5, k - 0.5, -0.5, q - 0.5) if view is None else view
        self.ax.set_xlim(c0, c1)
        self.ax.set_ylim(r1, r0)  # row 0 at the top

    def _draw_mask(self, d: HeatmapData) -> None:
        hatch = self.hatch_patch
        if d.mask is None:
            self.mask_patch.set_visible(False)
            if hatch is not None:
                hatch.set_visible(False)
            return
        if self._mask_cells is not d.mask and (self._mask_cells is None
                                               or not np.array_equal(self._mask_cells, d.mask)):
            path = mask_path(d.mask)
            self.mask_patch.set_path(path)
            if hatch is not None:
                hatch.set_path(path)
            self._mask_cells = d.mask
        self.mask_patch.set_visible(True)
        if hatch is not None:
            hatch.set_visible(max(d.mask.shape) <= HATCH_MAX_CELLS)
