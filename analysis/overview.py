"""Tiling many attention maps into one image (the Layer and Model overviews).

Drawing one image is what keeps a 30 × 9 overview fast: never hundreds of axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pyramid import block_for, pool_blocks


def downsample(maps: np.ndarray, max_cell: int, how: str = "max") -> np.ndarray:
    """Shrink the last two axes of ``maps`` ``[..., Q, K]`` to at most ``max_cell`` by block pooling.

    Blocks are powers of two per axis (:func:`analysis.pyramid.block_for`), so an overview pooled
    here equals one read off a long capture's stored pyramid (:meth:`analysis.store.StoredStack.tiles`).
    ``max`` pooling keeps sharp patterns (a diagonal stays visible); ``mean`` keeps mass.
    Returns a new float32 array ``[..., q', k']``.
    """
    q, k = maps.shape[-2:]
    fq = block_for(q, max_cell) if q else 1
    fk = block_for(k, max_cell) if k else 1
    if fq == 1 and fk == 1:
        return np.asarray(maps, dtype=np.float32).copy()
    if how == "max":
        return pool_blocks(maps, fq, fk)
    pq, pk = (-q) % fq, (-k) % fk
    pad = [(0, 0)] * (maps.ndim - 2) + [(0, pq), (0, pk)]
    m = np.pad(np.asarray(maps, dtype=np.float32), pad, constant_values=np.nan)
    m = m.reshape(m.shape[:-2] + (m.shape[-2] // fq, fq, m.shape[-1] // fk, fk))
    with np.errstate(all="ignore"):
        out = np.nanmean(m, axis=(-3, -1))
    return out.astype(np.float32)


@dataclass(frozen=True)
class Mosaic:
    """One image of ``rows × cols`` tiles separated by ``gap`` NaN pixels.

    ``image`` is float32 ``[rows*(h+gap)-gap, cols*(w+gap)-gap]``; ``cell`` = (h, w) in pixels.
    """

    image: np.ndarray
    rows: int
    cols: int
    cell: tuple[int, int]
    gap: int

    def tile_at(self, y: float, x: float) -> tuple[int, int] | None:
        """(row, col) of the tile under image coordinates (y, x), or None on a gap/outside."""
        h, w = self.cell
        yi, xi = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        if yi < 0 or xi < 0:
            return None
        r, ry = divmod(yi, h + self.gap)
        c, rx = divmod(xi, w + self.gap)
        if r >= self.rows or c >= self.cols or ry >= h or rx >= w:
            return None
        return r, c

    def cell_at(self, y: float, x: float) -> tuple[int, int, int, int] | None:
        """(row, col, y-in-tile, x-in-tile) under image coordinates, or None."""
        t = self.tile_at(y, x)
        if t is None:
            return None
        h, w = self.cell
        yi, xi = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        return t[0], t[1], yi - t[0] * (h + self.gap), xi - t[1] * (w + self.gap)


def mosaic(tiles: np.ndarray, cols: int | None = None, gap: int = 1, max_cell: int | None = None) -> Mosaic:
    """Tile ``tiles`` into one image.

    Parameters
    ----------
    tiles : ``[R, C, Q, K]`` (a grid, e.g. layers × heads) or ``[N, Q, K]`` (wrapped into
        ``cols`` columns, e.g. the heads of one layer)
    cols : columns when ``tiles`` is 3-D (default: ``ceil(sqrt(N))``)
    gap : NaN pixels between tiles
    max_cell : downsample each tile to at most this many pixels per side (max pooling)
    """
    t = np.asarray(tiles)
    if t.ndim == 3:
        n = t.shape[0]
        cols = cols or int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        grid = np.full((rows * cols,) + t.shape[1:], np.nan, dtype=np.float32)
        grid[:n] = t
        t = grid.reshape(rows, cols, *t.shape[1:])
    if t.ndim != 4:
        raise ValueError(f"tiles must be [R, C, Q, K] or [N, Q, K]; got {t.shape}")
    if max_cell is not None:
        t = downsample(t, max_cell)
    rows, cols, h, w = t.shape
    padded = np.pad(np.asarray(t, dtype=np.float32), ((0, 0), (0, 0), (0, gap), (0, gap)), constant_values=np.nan)
    img = padded.transpose(0, 2, 1, 3).reshape(rows * (h + gap), cols * (w + gap))
    if gap:
        img = img[:-gap, :-gap]
    img = np.ascontiguousarray(img)
    return Mosaic(img, rows, cols, (h, w), gap)
