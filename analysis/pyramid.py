"""Pyramids of max-pooled maps: how a long map is drawn fast and read lazily.

A map ``[Q, K]`` of a 4,096-token capture has 16.8 M cells; a screen shows about a million pixels.
Level ``k`` of a map's pyramid is the map max-pooled over blocks of ``2**k × 2**k`` cells (level 0
is the map itself): ``ceil(Q / 2**k) × ceil(K / 2**k)``. Max pooling keeps one-token patterns
visible at any level (a diagonal, a sink column, a retrieval head's single key), so a cell of a
coarse level shows the largest weight of the tokens it covers. NaN cells (hidden tokens, padding
of the last block) are ignored; a block of NaN only stays NaN.

A :class:`MapSource` gives a map's levels and regions of them without promising where they come
from: :class:`ArrayPyramid` pools an in-memory map on demand (and keeps what it pooled); a long
capture's disk store gives its stored levels (:mod:`analysis.store`). Drawers ask for the level
that fits the pixels they have (:func:`level_for`) and, zoomed in, only the region in view.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

#: pyramids stop at the first level whose longest side is at most this many cells
MIN_SIDE = 16


def block_for(n: int, max_cells: int) -> int:
    """The smallest power of two ``f`` such that ``ceil(n / f) <= max_cells`` (1 when ``n`` fits)."""
    if n <= 0 or max_cells <= 0:
        raise ValueError(f"block_for needs n > 0 and max_cells > 0, got n={n}, max_cells={max_cells}")
    f = 1
    while -(-n // f) > max_cells:
        f *= 2
    return f


def level_for(n_rows: int, n_cols: int, px_rows: float, px_cols: float) -> int:
    """The coarsest level whose cells are still at most one pixel each: no detail below a pixel is
    pooled away, and nothing finer than the screen is read. 0 when the map fits its pixels; on
    one pixel (or none: a collapsed widget) the level of one cell."""
    def one(n: int, px: float) -> int:
        px, k = max(1, int(px)), 0
        while -(-n // 2 ** (k + 1)) >= px and 2 ** k < n:  # the next level still fills the pixels
            k += 1
        return k
    return min(one(n_rows, px_rows), one(n_cols, px_cols))


def n_levels(n_rows: int, n_cols: int, min_side: int = MIN_SIDE) -> int:
    """How many levels a pyramid of an ``n_rows × n_cols`` map has (level 0 included)."""
    side, k = max(n_rows, n_cols), 1
    while side > min_side:
        side = -(-side // 2)
        k += 1
    return k


def level_shape(n_rows: int, n_cols: int, k: int) -> tuple[int, int]:
    f = 2 ** k
    return -(-n_rows // f), -(-n_cols // f)


def pool(maps: np.ndarray, f: int) -> np.ndarray:
    """Max-pool the last two axes of ``maps`` ``[..., Q, K]`` over ``f × f`` blocks (NaN-ignoring).

    Returns float32 ``[..., ceil(Q/f), ceil(K/f)]``; ``f == 1`` returns a float32 copy.
    """
    a = np.asarray(maps, dtype=np.float32)
    if f == 1:
        return a.copy()
    q, k = a.shape[-2:]
    pq, pk = (-q) % f, (-k) % f
    if pq or pk:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pq), (0, pk)], constant_values=np.nan)
    m = a.reshape(a.shape[:-2] + (a.shape[-2] // f, f, a.shape[-1] // f, f))
    # pairwise np.fmax over the block axes: NaN-ignoring like nanmax, and much faster than one
    # reduction over two strided axes (see analysis.overview.downsample)
    r = m[..., 0]
    for i in range(1, f):
        r = np.fmax(r, m[..., i])
    out = r[..., 0, :]
    for j in range(1, f):
        out = np.fmax(out, r[..., j, :])
    return np.ascontiguousarray(out, dtype=np.float32)


@runtime_checkable
class MapSource(Protocol):
    """One map's pyramid, read on demand."""

    #: ``(Q, K)`` of level 0
    shape: tuple[int, int]

    def level(self, k: int) -> np.ndarray:
        """Level ``k`` whole (float32 ``level_shape(Q, K, k)``); level 0 is the map itself."""
        ...

    def region(self, k: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1`` and columns ``c0:c1`` of level ``k`` (in level-``k`` cells), float32."""
        ...


class ArrayPyramid:
    """A :class:`MapSource` over an in-memory map: levels are pooled from the next finer one on
    first use and kept."""

    def __init__(self, matrix: np.ndarray) -> None:
        m = np.asarray(matrix)
        if m.ndim != 2:
            raise ValueError(f"a pyramid is built from one [Q, K] map, got shape {m.shape}")
        self._levels: dict[int, np.ndarray] = {0: m}
        self.shape = (int(m.shape[0]), int(m.shape[1]))

    def level(self, k: int) -> np.ndarray:
        if k < 0:
            raise ValueError(f"pyramid levels start at 0, got {k}")
        if k not in self._levels:
            self._levels[k] = pool(self.level(k - 1), 2)
        out = self._levels[k]
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def region(self, k: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if k == 0:
            return np.asarray(self._levels[0][r0:r1, c0:c1], dtype=np.float32)
        return self.level(k)[r0:r1, c0:c1]
