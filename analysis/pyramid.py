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

from functools import cache
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


@cache
def _f16_table() -> np.ndarray:
    """float32 of every float16 bit pattern (65,536 values, 256 kB)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def to_float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 (``a`` itself when it is float32 already), exactly.

    float16 goes through a table of every bit pattern: numpy's own cast takes ~35 ns for each
    subnormal value, and a long map's weights are mostly subnormal in float16 (below 6.1e-5: a
    4,096-token map converts in ~90 ms instead of ~400–600 ms).
    """
    a = np.asarray(a)
    if a.dtype == np.float16:
        return _f16_table()[a.view(np.uint16)]
    return np.asarray(a, dtype=np.float32)


def pool(maps: np.ndarray, f: int) -> np.ndarray:
    """Max-pool the last two axes of ``maps`` ``[..., Q, K]`` over ``f × f`` blocks (NaN-ignoring).

    Returns float32 ``[..., ceil(Q/f), ceil(K/f)]``; ``f == 1`` returns a float32 copy.
    """
    return pool_blocks(maps, f, f)


def pool_blocks(maps: np.ndarray, fq: int, fk: int) -> np.ndarray:
    """Max-pool the last two axes of ``maps`` ``[..., Q, K]`` over ``fq × fk`` blocks (rows ×
    columns; NaN-ignoring, a block of NaN only stays NaN).

    Returns float32 ``[..., ceil(Q/fq), ceil(K/fk)]``, a new array (a copy when both are 1).
    """
    src = np.asarray(maps)
    if (fq > 1 or fk > 1) and src.dtype == np.float16 and src.size and int(src.view(np.uint16).max()) < 0x7C00:
        # non-negative finite float16 (attention): the bit patterns sort like the values, so the
        # blocks' maxima are taken on them and only the pooled cells are converted (padding with
        # +0.0 changes no maximum: every padded block holds a real, non-negative cell)
        return to_float32(_block_max(src.view(np.uint16), fq, fk, 0, np.maximum).view(np.float16))
    a = to_float32(src)
    if fq == 1 and fk == 1:
        return a.copy() if a is src else a
    return np.ascontiguousarray(_block_max(a, fq, fk, np.nan, np.fmax), dtype=np.float32)


def _block_max(a: np.ndarray, fq: int, fk: int, pad, op) -> np.ndarray:
    """``op`` (a pairwise maximum) over the ``fq × fk`` blocks of the last two axes of ``a``, the
    last blocks filled with ``pad``."""
    q, k = a.shape[-2:]
    pq, pk = (-q) % fq, (-k) % fk
    if pq or pk:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, pq), (0, pk)], constant_values=pad)
    m = a.reshape(a.shape[:-2] + (a.shape[-2] // fq, fq, a.shape[-1] // fk, fk))
    # pairwise over the block axes (np.fmax: NaN-ignoring like nanmax), much faster than one
    # reduction over two strided axes (see analysis.overview.downsample)
    r = m[..., 0]
    for i in range(1, fk):
        r = op(r, m[..., i])
    out = r[..., 0, :]
    for j in range(1, fq):
        out = op(out, r[..., j, :])
    return np.ascontiguousarray(out)


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
            # from the finest level kept (in one pass: the max of the maxima of the blocks is the
            # max of the block); a float16 map is pooled without converting every cell (pool)
            j = max(i for i in self._levels if i < k)
            self._levels[k] = pool(self._levels[j], 2 ** (k - j))
        return to_float32(self._levels[k])

    def region(self, k: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if k == 0:
            return to_float32(self._levels[0][r0:r1, c0:c1])
        return self.level(k)[r0:r1, c0:c1]
