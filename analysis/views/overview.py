"""The Layer view (every head of one layer) and the Model view (layers × heads of a stack).

Both are ONE image: the maps tiled by :func:`analysis.overview.mosaic` (long maps max-pooled so a
30 × 9 overview stays fast), never one axes per head; a colour bar; the selected head outlined.
:func:`layer_data` / :func:`model_data` build what they show, :class:`MosaicDrawer` draws it, in
the window and in every export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..aggregate import stored_range, value_range
from ..overview import Mosaic, downsample, mosaic
from ..result import Capture
from ..store import is_stored
from ..themes import FIXED_COLOUR, Theme, get_theme
from .common import (
    GID_ATTENTION,
    GID_SELECTED,
    colorbar_label,
    processed_map,
    shared_norm,
    stack_title,
    tick_step,
    title_inches,
    view_cmap,
    view_title,
    view_tokens,
)
from .fast_image import add_nearest_image
from .spec import ViewSpec

#: largest tile side in pixels before max-pooling
MODEL_MAX_CELL = 64
LAYER_MAX_CELL = 160
#: tiles are never drawn flatter (or narrower) than this width : height ratio
MAX_TILE_ASPECT = 2.0
#: the Model view's row and column labels: (inches, pitch) given to tick_step, live and exported
ROW_LABELS = {True: (6.0, 1.3), False: (12.0, 1.3)}
COL_LABELS = (8.0, 2.2)


@dataclass(frozen=True)
class MosaicData:
    """Tiles of maps as one image.

    mosaic : the tiled image (float32, NaN gaps) with its grid; ``rows × cols`` tiles
    kind : ``layer`` (tile k = head k) or ``model`` (tile (r, c) = layer r, head c)
    n_tiles : the real tiles (the layer view's last row may be short)
    selected : (row, col) of the outlined tile, (row, None) for a whole row, or None
    row_labels, col_labels : ``L0…`` / ``H0…`` (model view); tile_labels ``H0…`` (layer view)
    layer : the layer shown (layer view)
    """

    mosaic: Mosaic
    kind: str
    n_tiles: int
    selected: tuple[int, int | None] | None
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    tile_labels: tuple[str, ...]
    row_title: str
    col_title: str
    layer: int
    title: str
    norm: Normalize
    cmap: Colormap
    cmap_name: str
    colorbar_label: str

    def tile_at(self, y: float, x: float) -> tuple[int, int] | None:
        """(row, col) of a real tile under image coordinates, or None (gap, outside, empty)."""
        t = self.mosaic.tile_at(y, x)
        if t is None or (self.kind == "layer" and t[0] * self.mosaic.cols + t[1] >= self.n_tiles):
            return None
        return t


def _norm(capture: Capture, name: str, spec: ViewSpec, tiles: np.ndarray, own: tuple[float, float] | None = None):
    from ..aggregate import color_norm

    if spec.shared_range:
        return shared_norm(capture, name, spec)
    if own is not None:  # the range of the maps themselves (their tiles are pooled already)
        return color_norm(None, spec.scale, *own)
    return color_norm(tiles, spec.scale)


def _tiles(capture: Capture, name: str, spec: ViewSpec, layer: int | None,
           max_cell: int) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The maps of ``layer`` ``[H, Q', K']`` (or of every layer, ``[L, H, Q', K']``) as shown, and,
    for a long capture's stored stack, their colour range. A stored stack gives its maps already
    pooled to ``max_cell`` (from its stored pyramid levels, or map by map when tokens are hidden),
    never a whole layer or stack at full size."""
    tok = view_tokens(capture, spec, name)
    arr = capture.stacks[name]
    if not is_stored(arr):
        maps = arr[layer] if layer is not None else arr
        if not spec.hide_special:  # as stored (float16): mosaic() pools it before converting it
            return maps, None
        return processed_map(maps, tok, spec), None
    if not spec.hide_special:
        tiles = arr.layer_tiles(layer, max_cell) if layer is not None else arr.tiles(max_cell)
        return tiles, stored_range(arr, spec.scale, layer)
    n_layers, n_heads = arr.shape[:2]
    layers = [layer] if layer is not None else list(range(n_layers))
    lo, hi, rows = math.inf, -math.inf, []
    for li in layers:
        row = []
        for h in range(n_heads):
            m = processed_map(arr[li, h], tok, spec)
            vmin, vmax = value_range(m, spec.scale)
            lo, hi = min(lo, vmin), max(hi, vmax)
            row.append(downsample(m, max_cell))
        rows.append(np.stack(row))
    tiles = np.stack(rows)
    return (tiles[0] if layer is not None else tiles), (lo, hi)


def layer_data(capture: Capture, spec: ViewSpec, theme: Theme | str | None = None) -> MosaicData:
    """Every head of ``spec.layer`` as tiles (heads wrapped into ⌈√H⌉ columns)."""
    theme = get_theme(theme or spec.theme)
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    tiles, own = _tiles(capture, name, spec, spec.layer, LAYER_MAX_CELL)  # [H, Q', K']
    n_heads = tiles.shape[0]
    cols = int(math.ceil(math.sqrt(n_heads)))
    mos = mosaic(tiles, cols=cols, gap=max(1, min(len(tok.cols), LAYER_MAX_CELL) // 12), max_cell=LAYER_MAX_CELL)
    selected = None if spec.head is None else divmod(spec.head, cols)
    what = f"{stack_title(capture, name)}, layer {spec.layer}, all {n_heads} heads"
    return MosaicData(mos, "layer", n_heads, selected, (), (), tuple(f"H{h}" for h in range(n_heads)),
                      "", "", spec.layer, view_title(capture, spec, what), _norm(capture, name, spec, tiles, own),
                      view_cmap(spec, theme, bad=theme.figure_facecolor), spec.cmap or theme.cmap, colorbar_label(spec))


def model_data(capture: Capture, spec: ViewSpec, theme: Theme | str | None = None) -> MosaicData:
    """The whole stack as layers × heads tiles (each max-pooled to at most 64 px a side)."""
    theme = get_theme(theme or spec.theme)
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    tiles, own = _tiles(capture, name, spec, None, MODEL_MAX_CELL)  # [L, H, Q', K']
    n_layers, n_heads = tiles.shape[:2]
    mos = mosaic(tiles, gap=max(1, min(len(tok.cols), MODEL_MAX_CELL) // 10), max_cell=MODEL_MAX_CELL)
    selected = (spec.layer, spec.head) if 0 <= spec.layer < n_layers else None
    what = f"{stack_title(capture, name)}, {n_layers} layers × {n_heads} heads"
    return MosaicData(mos, "model", n_layers * n_heads, selected, tuple(f"L{r}" for r in range(n_layers)),
                      tuple(f"H{c}" for c in range(n_heads)), (), "layer", "head", spec.layer,
                      view_title(capture, spec, what), _norm(capture, name, spec, tiles, own),
                      view_cmap(spec, theme, bad=theme.figure_facecolor), spec.cmap or theme.cmap, colorbar_label(spec))


def tile_inches(d: MosaicData, width_in: float) -> tuple[float, float]:
    """(tile width, tile height) in inches when the tiles share ``width_in``; the height keeps
    the tile's own aspect, clamped to :data:`MAX_TILE_ASPECT` either way."""
    m = d.mosaic
    h, w = m.cell
    tw = width_in / m.cols
    th = tw * h / max(w, 1)
    return tw, min(max(th, tw / MAX_TILE_ASPECT), tw * MAX_TILE_ASPECT)


class MosaicDrawer:
    """Draws :class:`MosaicData`: one image, tile labels, the selected tile outlined, a colour bar."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        if live:
            self.ax = fig.add_axes((0.07, 0.03, 0.82, 0.86))
            cax = fig.add_axes((0.91, 0.03, 0.02, 0.86))
            self.cbar = fig.colorbar(add_nearest_image(self.ax), cax=cax)
        else:
            self.ax = fig.add_subplot()
            self.cbar = fig.colorbar(add_nearest_image(self.ax), ax=self.ax, fraction=0.04, pad=0.02)
        self.image = self.ax.images[0]
        self.image.set_gid(GID_ATTENTION)
        self.marker = Rectangle((0, 0), 1, 1, fill=False, linewidth=2.0, zorder=5, visible=False, gid=GID_SELECTED)
        self.ax.add_patch(self.marker)
        self.labels: list = []
        #: the labels as ``(position, text)`` (image coordinates): rows, columns, and the tile names
        #: ``(x, y, text)``. A live drawer draws none of its text: matplotlib's text costs about
        #: half a millisecond each, so the window paints these (and the colour bar's ticks) with Qt
        #: (``gui.views.text_overlay``) where matplotlib would put them; exports draw them here.
        self.row_items: list[tuple[float, str]] = []
        self.col_items: list[tuple[float, str]] = []
        self.tile_items: list[tuple[float, float, str]] = []
        self._layout_key: tuple | None = None
        if live:
            for axis in (self.ax.xaxis, self.ax.yaxis, self.cbar.ax.yaxis):
                axis.set_visible(False)
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.marker.set_edgecolor(theme.line_colors[1])
        for ax in (self.ax, self.cbar.ax):
            ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)
        for spine in self.ax.spines.values():
            spine.set_visible(False)
        self._layout_key = None

    @staticmethod
    def size(d: MosaicData, theme: Theme) -> tuple[float, float]:
        width = min(16.0, max(4.0, d.mosaic.cols * (1.6 if d.kind == "layer" else 0.9)))
        tw, th = tile_inches(d, width)
        height = min(24.0, d.mosaic.rows * th)
        return width + 1.8, height + 1.0 + title_inches(theme)

    def draw(self, d: MosaicData) -> bool:
        """Show ``d``; returns True when the layout (labels, grid) changed: a full draw is needed."""
        m = d.mosaic
        self.image.set_data(m.image)
        self.image.set_extent((-0.5, m.image.shape[1] - 0.5, m.image.shape[0] - 0.5, -0.5))
        with self.image.callbacks.blocked(signal="changed"):
            self.image.set_cmap(d.cmap)
            self.image.set_norm(d.norm)
        self._draw_selected(d)
        key = (m.rows, m.cols, m.cell, m.gap, d.kind, d.n_tiles, d.cmap_name, d.norm.vmin, d.norm.vmax,
               type(d.norm), d.colorbar_label, self.theme.name)
        if key == self._layout_key:
            return False
        self.cbar.update_normal(self.image)
        self.cbar.set_label(d.colorbar_label, color=self.theme.text_color, fontsize=self.theme.base_size)
        self.ax.set_xlim(-0.5, m.image.shape[1] - 0.5)
        self.ax.set_ylim(m.image.shape[0] - 0.5, -0.5)
        self._draw_labels(d)
        self._layout_key = key
        return True

    def _draw_selected(self, d: MosaicData) -> None:
        m = d.mosaic
        h, w = m.cell
        if d.selected is None:
            self.marker.set_visible(False)
            return
        r, c = d.selected
        if c is None:  # a whole layer (the aggregate over its heads)
            x0, width = -0.5, m.image.shape[1]
        else:
            x0, width = c * (w + m.gap) - 0.5, w
        self.marker.set_bounds(x0, r * (h + m.gap) - 0.5, width, h)
        self.marker.set_visible(True)

    def _draw_labels(self, d: MosaicData) -> None:
        for t in self.labels:
            t.remove()
        self.labels = []
        m = d.mosaic
        h, w = m.cell
        ts = self.theme.tick_size
        self.row_items, self.col_items, self.tile_items = [], [], []
        if d.kind == "layer":
            self.tile_items = [(c * (w + m.gap), r * (h + m.gap), text)
                               for r, c, text in ((*divmod(k, m.cols), text) for k, text in enumerate(d.tile_labels))]
        else:
            step = tick_step(m.rows, ROW_LABELS[self.live][0], ts, pitch=ROW_LABELS[self.live][1])
            self.row_items = [(r * (h + m.gap) + (h - 1) / 2, d.row_labels[r]) for r in range(m.rows)][::step]
            cstep = tick_step(m.cols, COL_LABELS[0], ts, pitch=COL_LABELS[1])
            self.col_items = [(c * (w + m.gap) + (w - 1) / 2, d.col_labels[c]) for c in range(m.cols)][::cstep]
        self.ax.set_ylabel(d.row_title, color=self.theme.text_color, fontsize=self.theme.base_size)
        self.ax.set_xlabel(d.col_title, color=self.theme.text_color, fontsize=self.theme.base_size)
        if self.live:  # the window paints the text (see __init__)
            return
        self.ax.set_yticks([y for y, _ in self.row_items], [s for _, s in self.row_items])
        self.ax.set_xticks([x for x, _ in self.col_items], [s for _, s in self.col_items])
        if d.kind == "model":
            self.ax.xaxis.tick_top()
            self.ax.xaxis.set_label_position("top")
        for x, y, text in self.tile_items:
            self.labels.append(self.ax.text(x, y, text, color="white", fontsize=ts, va="top", ha="left", zorder=6,
                                            gid=FIXED_COLOUR, bbox=dict(facecolor="black", alpha=0.55, lw=0, pad=1)))
