"""A map's image drawn from its pyramid: the level that fits the pixels, only the cells in view.

:class:`PyramidImage` is a :class:`~analysis.views.fast_image.NearestImage` whose values come
from a :class:`~analysis.pyramid.MapSource` instead of one array. Whenever it is drawn it works
out, from its axes' view limits and pixels, which level fits (:func:`analysis.pyramid.level_for`:
cells of at most one pixel) and which cells of that level are in view, and reads only those
(``source.region``) when they differ from what it shows. Its extent stays in token coordinates at
every level (cell ``(i, j)`` of the map spans x ∈ [j − ½, j + ½], y ∈ [i − ½, i + ½]), so axes,
the causal-mask outline, labels and the hover keep token units whether the picture is pooled or
not. The window (zoomed or not) and every export draw through it alike, so both show the level
their pixels fit; a map that fits its pixels is drawn from level 0, exactly as a plain image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.transforms import IdentityTransform

from ..pyramid import MapSource, level_for
from .fast_image import NearestImage, pixel_box


@dataclass(frozen=True)
class Shown:
    """What a :class:`PyramidImage` shows: cells ``r0:r1`` × ``c0:c1`` of ``level`` (level cells)."""

    level: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def block(self) -> int:
        """Tokens per level cell along each axis (``2 ** level``)."""
        return 2 ** self.level


def in_view(lo: float, hi: float, n: int) -> tuple[int, int]:
    """The half-open range of the ``n`` tokens whose cells ``[t − ½, t + ½]`` meet the view
    ``[lo, hi]`` (token coordinates, ``lo < hi``)."""
    first = min(max(math.floor(lo + 0.5), 0), n)
    stop = min(max(math.ceil(hi + 0.5), 0), n)
    return first, stop


def axis_level(n: int, px: float) -> int:
    """The pyramid level that fits ``n`` tokens on ``px`` pixels along one axis (0: every token
    has a pixel or more than half of one)."""
    return level_for(n, n, px, px)


class PyramidImage(NearestImage):
    """A nearest-neighbour image of one map (:class:`MapSource`), read at the level and region
    that fit its axes (see the module docstring).

    Attributes
    ----------
    source : the map (``None`` until :meth:`set_source`)
    shown : the level and cells shown now (:class:`Shown`), or None
    reads : how many regions it has read (counted for tests)
    on_level : called with the new level whenever a draw changes it (a drawer's note follows it)
    """

    def __init__(self, ax) -> None:
        super().__init__(ax, interpolation="nearest", origin="upper")
        self.set_data(np.zeros((1, 1)))
        self.source: MapSource | None = None
        self.shown: Shown | None = None
        self.reads = 0
        self.on_level: Callable[[int], None] | None = None
        self._dirty = True  # the source changed since the last read

    def set_source(self, source: MapSource) -> None:
        """Show ``source`` (read when it is fitted: :meth:`fit`, or the next draw)."""
        if source is not self.source:
            self.source = source
            self._dirty = True

    def wanted(self, magnification: float = 1.0) -> Shown | None:
        """The level and cells that fit the axes now (their view limits and size in pixels,
        times ``magnification``: the renderer's image resolution); None when no cell is in view."""
        ax, src = self.axes, self.source
        if ax is None or src is None:
            return None
        q, k = src.shape
        x0, x1 = sorted(ax.get_xlim())
        y0, y1 = sorted(ax.get_ylim())
        if q <= 0 or k <= 0 or x1 <= x0 or y1 <= y0:
            return None
        # the pixels the whole map would take at this zoom (pixels per token × tokens)
        px_cols = ax.bbox.width * magnification / (x1 - x0) * k
        px_rows = ax.bbox.height * magnification / (y1 - y0) * q
        level = level_for(q, k, px_rows, px_cols)
        f = 2 ** level
        r_first, r_stop = in_view(y0, y1, q)
        c_first, c_stop = in_view(x0, x1, k)
        if r_stop <= r_first or c_stop <= c_first:
            return None
        return Shown(level, r_first // f, -(-r_stop // f), c_first // f, -(-c_stop // f))

    def fit(self, magnification: float = 1.0) -> bool:
        """Read what fits now unless it is shown already; True when it read."""
        if self.source is None:
            return False
        want = self.wanted(magnification)
        if want == self.shown and not self._dirty:
            return False
        before = None if self.shown is None else self.shown.level
        if want is None:
            data = np.full((1, 1), np.nan, dtype=np.float32)
            extent = (-0.5, 0.5, 0.5, -0.5)
        else:
            f = want.block
            data = self.source.region(want.level, want.r0, want.r1, want.c0, want.c1)
            # a level's last cell may cover fewer tokens (the padding of its block): the extent
            # runs to the block's end and the axes' limits clip the part beyond the map
            extent = (want.c0 * f - 0.5, want.c1 * f - 0.5, want.r1 * f - 0.5, want.r0 * f - 0.5)
        self.set_data(data)  # (marks the image stale: harmless inside a draw, it ends fresh)
        # the extent set directly: set_extent would autoscale the axes (this may run inside a draw)
        self._extent = extent
        self.shown, self._dirty = want, False
        self.reads += 1
        level = None if want is None else want.level
        if level != before and level is not None and self.on_level is not None:
            self.on_level(level)
        return True

    @property
    def level(self) -> int:
        """The level shown (0 before anything is)."""
        return 0 if self.shown is None else self.shown.level

    def make_image(self, renderer, magnification=1.0, unsampled=False):
        # the exact pixels are known only here (an export's layout, a vector backend's image dpi)
        self.fit(magnification)
        A = self._A
        if (unsampled or A is None or A.ndim != 2 or self.axes is None or not self.get_transform().is_affine
                or self.get_interpolation() != "nearest"):
            return super().make_image(renderer, magnification, unsampled)
        box = pixel_box(self, magnification)  # whole output pixels, as NearestImage does
        if box is None:
            return None, 0, 0, None
        left, b, width, height = box
        x0, x1, y0, y1 = self.get_extent()
        rows, cols = A.shape
        if rows <= height and cols <= width:
            # every cell has a pixel or more: colour the cells, then pick one per pixel
            return super().make_image(renderer, magnification, unsampled)
        # more cells than pixels along an axis (the level that fits leaves up to two cells per
        # pixel): a pixel shows the largest of the cells it covers there, so no cell is dropped,
        # as picking one cell per pixel would drop a one-token line
        inv = self.get_transform().inverted()
        xs = inv.transform(np.column_stack([left + np.arange(width + 1) / magnification, np.full(width + 1, b)]))[:, 0]
        ys = inv.transform(np.column_stack([np.full(height + 1, left), b + np.arange(height + 1) / magnification]))[:, 1]
        # cell coordinates of the pixels' edges: column 0 at x0; row 0 at y1 (origin upper) or y0
        col_pos = (xs - x0) / (x1 - x0) * cols
        row_pos = (ys - y1) / (y0 - y1) * rows if self.origin == "upper" else (ys - y0) / (y1 - y0) * rows
        data = np.ma.filled(A.astype(np.float32), np.nan) if np.ma.isMaskedArray(A) else np.asarray(A, np.float32)
        data = _sample(data, row_pos, 0)
        data = _sample(data, col_pos, 1)
        im = self.to_rgba(np.ma.masked_invalid(data), alpha=self.get_alpha(), bytes=True)
        return np.ascontiguousarray(im), left, b, IdentityTransform()


def _sample(a: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """``a`` along ``axis`` at the pixels whose edges lie at cell coordinates ``pos`` (monotone,
    ``len(pos) - 1`` pixels): where there are more cells than pixels, each pixel gets the largest
    of the cells whose start it covers (each cell lands in exactly one pixel); else the cell under
    the pixel's centre, as :class:`NearestImage` picks it."""
    n = a.shape[axis]
    pixels = len(pos) - 1
    if n <= pixels:
        centres = np.clip(np.floor((pos[:-1] + pos[1:]) / 2).astype(np.intp), 0, n - 1)
        return np.take(a, centres, axis=axis)
    flip = pos[-1] < pos[0]
    p = pos[::-1] if flip else pos
    starts = np.clip(np.floor(p[:-1]).astype(np.intp), 0, n - 1)
    starts = np.maximum.accumulate(starts)  # (rounding may not make them monotone)
    stop = min(max(math.ceil(p[-1]), int(starts[-1]) + 1), n)
    # pixel i takes the cells starts[i] … ends[i] − 1 (at least its first: a pixel inside one
    # cell, equal starts, gets that cell); the level that fits leaves one to three cells a pixel,
    # so a few gathers and np.fmax (NaN-ignoring) beat a reduceat (~8 ms at 1,024² cells)
    ends = np.maximum(np.append(starts[1:], stop), starts + 1)
    width = int((ends - starts).max())
    if width > 4:  # (a level finer than the one that fits)
        out = np.fmax.reduceat(np.take(a, np.arange(stop), axis=axis), starts, axis=axis)
    else:
        out = np.take(a, starts, axis=axis)
        for k in range(1, width):
            more = starts + k < ends
            if more.any():
                np.fmax(out, np.take(a, np.where(more, starts + k, starts), axis=axis), out=out)
    return np.flip(out, axis=axis) if flip else out


def add_pyramid_image(ax) -> PyramidImage:
    """A :class:`PyramidImage` added to ``ax``, whose aspect becomes "auto" (as
    :func:`~analysis.views.fast_image.add_nearest_image`)."""
    image = PyramidImage(ax)
    ax.add_image(image)
    ax.set_aspect("auto")
    return image
