"""A heatmap image that is cheap to redraw: colour the cells, then pick one cell per screen pixel.

matplotlib's :class:`~matplotlib.image.AxesImage` resamples the *values* (and a mask of them) to
the screen size in float, normalises and colour-maps every screen pixel, then converts to bytes:
~13 ms for a 256 × 256 map filling a 700 × 600 pixel box, on every blit. With nearest-neighbour
sampling that work is unnecessary: :class:`NearestImage` colour-maps the data at its own size
(256 × 256) and then builds the screen image by index lookup, like matplotlib's own
``NonUniformImage`` does (~3 ms). Anything else (RGB(A) data, other interpolations, vector
output asking for the unsampled image) falls back to :class:`AxesImage`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.image import AxesImage
from matplotlib.transforms import Bbox, IdentityTransform, TransformedBbox


def _cell_index(centers: np.ndarray, start: float, stop: float, n: int) -> np.ndarray:
    """Index of the cell under each coordinate in ``centers``; cells split [start, stop] evenly,
    cell 0 at ``start`` (either direction)."""
    idx = np.floor((centers - start) / (stop - start) * n).astype(np.intp)
    return np.clip(idx, 0, n - 1)


def pixel_box(image: AxesImage, magnification: float = 1.0) -> tuple[float, float, int, int] | None:
    """The whole output pixels (as NonUniformImage rounds them) that ``image``'s extent covers
    inside its axes: ``(left, bottom, width, height)``, the corner in display units divided by
    ``magnification``; None when it covers none."""
    x0, x1, y0, y1 = image.get_extent()
    box = TransformedBbox(Bbox.from_extents(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                          image.get_transform())
    assert image.axes is not None
    clip = Bbox.intersection(box, image.axes.bbox)
    if clip is None:
        return None
    left, b, r, t = (np.asarray(clip.extents) * magnification + 0.5).astype(int) / magnification
    width, height = int(round((r - left) * magnification)), int(round((t - b) * magnification))
    if width <= 0 or height <= 0:
        return None
    return left, b, width, height


class NearestImage(AxesImage):
    """An :class:`AxesImage` for 2-D values drawn with nearest-neighbour sampling."""

    def make_image(self, renderer, magnification=1.0, unsampled=False):
        A = self._A
        if (unsampled or A is None or A.ndim != 2 or self.get_interpolation() != "nearest"
                or self.axes is None or not self.get_transform().is_affine):
            return super().make_image(renderer, magnification, unsampled)
        box = pixel_box(self, magnification)
        if box is None:
            return None, 0, 0, None
        left, b, width, height = box
        x0, x1, y0, y1 = self.get_extent()
        inv = self.get_transform().inverted()
        xs = inv.transform(np.column_stack([left + (np.arange(width) + 0.5) / magnification, np.full(width, b)]))[:, 0]
        ys = inv.transform(np.column_stack([np.full(height, left), b + (np.arange(height) + 0.5) / magnification]))[:, 1]
        rows, cols = A.shape
        j = _cell_index(xs, x0, x1, cols)  # column 0 at the extent's left value
        # row 0 sits at the extent's "top" value for origin="upper", at its "bottom" for "lower"
        i = _cell_index(ys, y1, y0, rows) if self.origin == "upper" else _cell_index(ys, y0, y1, rows)
        if rows * cols > width * height:
            # more cells than pixels (a long input in a small box): pick the values, then colour
            sub = np.ma.getdata(A)[np.ix_(i, j)]
            if np.ma.is_masked(A):
                sub = np.ma.masked_array(sub, np.ma.getmaskarray(A)[np.ix_(i, j)])
            im = self.to_rgba(sub, alpha=self.get_alpha(), bytes=True)
        else:
            rgba = np.ascontiguousarray(self.to_rgba(A, alpha=self.get_alpha(), bytes=True))
            # one uint32 per pixel and flat indices: much faster than rgba[i[:, None], j]
            flat = rgba.view(np.uint32).reshape(rows * cols)
            im = flat[np.add.outer(i * cols, j)].view(np.uint8).reshape(height, width, 4)
        return np.ascontiguousarray(im), left, b, IdentityTransform()


def add_nearest_image(ax) -> NearestImage:
    """A :class:`NearestImage` (origin upper, placeholder data) added to ``ax``, whose aspect
    becomes "auto": what ``ax.imshow(..., aspect="auto", interpolation="nearest")`` sets up."""
    image = NearestImage(ax, interpolation="nearest", origin="upper")
    image.set_data(np.zeros((1, 1)))
    ax.add_image(image)
    ax.set_aspect("auto")
    return image
