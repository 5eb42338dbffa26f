"""Pick, aggregate, trim and colour-scale attention maps for display.

Shapes follow :mod:`analysis.result`: a stack is ``[L, H, Q, K]`` (layer, head, query, key), one
map is ``[Q, K]``. Everything here is pure numpy (plus :mod:`matplotlib.colors` for the norms);
inputs are never modified and results never share memory with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from .errors import InputError
from .result import Capture
from .store import is_stored

if TYPE_CHECKING:  # imported where a norm is made: the window's first frame needs no matplotlib
    from matplotlib.colors import Normalize

Aggregation = Literal["mean", "max"]
Scale = Literal["linear", "log"]

AGGREGATIONS = ("mean", "max")
SCALES = ("linear", "log")
#: smallest value a log colour scale shows; anything below (including exact zeros) is clipped
LOG_FLOOR = 1e-4


def _stack_of(capture_or_array: Capture | np.ndarray, stack: str | None) -> np.ndarray:
    if isinstance(capture_or_array, Capture):
        try:
            name = capture_or_array.resolve_stack(stack)
        except KeyError as exc:
            raise InputError(str(exc.args[0]) if exc.args else str(exc)) from None
        return capture_or_array.stacks[name]
    arr = np.asarray(capture_or_array)
    if arr.ndim != 4:
        raise InputError(
            f"an attention stack must be [layer, head, query, key]; got shape {arr.shape}"
        )
    return arr


def check_layer_head(n_layers: int, n_heads: int, layer: int, head: int | None) -> None:
    """Raise :class:`InputError` when ``layer``/``head`` are not valid 0-based indices."""
    if (
        isinstance(layer, bool)
        or not isinstance(layer, int | np.integer)
        or not 0 <= layer < n_layers
    ):
        raise InputError(f"layer {layer} is out of range: this stack has layers 0–{n_layers - 1}")
    if head is not None and (
        isinstance(head, bool) or not isinstance(head, int | np.integer) or not 0 <= head < n_heads
    ):
        raise InputError(
            f"head {head} is out of range: this stack has heads 0–{n_heads - 1} "
            "(or none for the aggregate over heads)"
        )


def select_map(
    capture_or_array: Capture | np.ndarray,
    stack: str | None,
    layer: int,
    head: int | None,
    how: Aggregation = "mean",
) -> np.ndarray:
    """One attention map: a single head, or all heads of a layer aggregated.

    Parameters
    ----------
    capture_or_array : a :class:`Capture` or a stack ``[L, H, Q, K]`` (then ``stack`` is ignored)
    stack : stack name or alias (``None`` = the capture's first stack)
    layer : 0-based layer index
    head : 0-based head index, or ``None`` to aggregate over the heads of ``layer``
    how : ``mean`` or ``max`` over heads (only used when ``head`` is ``None``)

    Returns
    -------
    float32 ``[Q, K]``, a new array.
    """
    arr = _stack_of(capture_or_array, stack)
    check_layer_head(arr.shape[0], arr.shape[1], layer, head)
    if head is not None:
        return np.array(arr[layer, head], dtype=np.float32, copy=True)
    if how not in AGGREGATIONS:
        raise InputError(f"unknown aggregation '{how}': choose mean or max")
    if is_stored(arr):  # a long capture: the heads' rows a block at a time, never a layer at once
        q, k = arr.shape[2:]
        out = np.empty((q, k), dtype=np.float32)
        step = max(1, AGGREGATE_BLOCK_CELLS // max(1, arr.shape[1] * k))
        for r0 in range(0, q, step):
            out[r0:r0 + step] = _aggregate(np.asarray(arr[layer, :, r0:r0 + step], dtype=np.float32), how)
        return out
    return _aggregate(np.asarray(arr[layer], dtype=np.float32), how).copy()


#: a stored layer is aggregated over its heads in blocks of rows of at most this many cells
AGGREGATE_BLOCK_CELLS = 1 << 22


def _aggregate(heads: np.ndarray, how: Aggregation) -> np.ndarray:
    """The mean (accumulated in float64) or max over axis 0 of ``heads`` ``[H, ...]``, float32."""
    out = heads.mean(axis=0, dtype=np.float64) if how == "mean" else heads.max(axis=0)
    return np.asarray(out, dtype=np.float32)


def hide_tokens(
    matrix: np.ndarray,
    row_keep: np.ndarray,
    col_keep: np.ndarray,
    renormalize: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop rows/columns for display (e.g. special tokens), optionally re-scaling the rows.

    Parameters
    ----------
    matrix : ``[..., Q, K]`` (one map, or a whole stack ``[L, H, Q, K]``)
    row_keep : bool ``[Q]``, True for the query positions to keep
    col_keep : bool ``[K]``, True for the key positions to keep
    renormalize : when True each kept row is divided by its sum over the kept columns so it sums
        to 1 again; rows whose kept sum is 0 stay 0.

    Returns
    -------
    matrix : float32 ``[..., Q', K']`` (new array)
    row_idx : int64 ``[Q']`` original query indices of the kept rows
    col_idx : int64 ``[K']`` original key indices of the kept columns
    """
    m = np.asarray(matrix)
    row_keep = np.asarray(row_keep, dtype=bool)
    col_keep = np.asarray(col_keep, dtype=bool)
    if m.ndim < 2 or row_keep.shape != (m.shape[-2],) or col_keep.shape != (m.shape[-1],):
        raise InputError(
            f"keep masks of shapes {row_keep.shape} and {col_keep.shape} do not fit a map of shape {m.shape}"
        )
    row_idx = np.flatnonzero(row_keep).astype(np.int64)
    col_idx = np.flatnonzero(col_keep).astype(np.int64)
    out = np.asarray(m[..., row_idx, :][..., col_idx], dtype=np.float32).copy()
    if renormalize and out.size:
        sums = out.sum(axis=-1, keepdims=True, dtype=np.float64)
        scaled = np.divide(out, sums, out=np.zeros(out.shape, np.float64), where=sums > 0)
        out = scaled.astype(np.float32)
    return out, row_idx, col_idx


def causal_mask(q: int, k: int) -> np.ndarray:
    """Cells a decoder's causal mask forbids.

    Returns
    -------
    bool ``[q, k]``, True where key ``j`` is after query ``i`` (``j > i``).
    """
    return np.triu(np.ones((q, k), dtype=bool), k=1)


def value_range(
    values: np.ndarray, scale: Scale = "linear", floor: float = LOG_FLOOR
) -> tuple[float, float]:
    """``(vmin, vmax)`` for colouring ``values`` (any shape; NaNs ignored).

    Linear: ``vmin`` is 0 for non-negative data (attention), else the minimum. Log: ``vmin`` is
    the smallest positive value, but at least ``floor``. ``vmax > vmin`` always.
    """
    if scale not in SCALES:
        raise InputError(f"unknown colour scale '{scale}': choose linear or log")
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if scale == "log":
        pos = finite[finite > 0]
        lo = max(floor, float(pos.min())) if pos.size else floor
        hi = float(pos.max()) if pos.size else 1.0
        if hi <= lo:
            hi = lo * 10.0
        return lo, hi
    if not finite.size:
        return 0.0, 1.0
    lo = min(0.0, float(finite.min()))
    hi = float(finite.max())
    if hi <= lo:
        hi = lo + 1.0 if lo == 0 else lo + abs(lo) * 1e-6
    return lo, hi


def stack_range(arr: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values of a stack, as :func:`value_range` reads them.

    float16 reductions are slow in numpy; for non-negative finite float16 data (attention) the bit
    patterns sort like the values, so integer min/max over a ``uint16`` view are exact and ~8× faster.
    A long capture's stored stack (:class:`analysis.store.StoredStack`) answers from the ranges
    recorded with its maps, reading none of them.
    """
    if is_stored(arr):
        stats = arr.map_stats()
        return float(stats[..., 0].min()), float(stats[..., 1].max())
    a = np.asarray(arr)
    if a.dtype == np.float16 and a.size:
        bits = a.view(np.uint16)
        hi_bits = bits.max()
        if hi_bits < 0x7C00:  # no sign bit, no inf/NaN: every value is finite and >= 0
            lo = np.array(bits.min(), dtype=np.uint16).view(np.float16)
            return float(lo), float(np.array(hi_bits, dtype=np.uint16).view(np.float16))
    finite = a[np.isfinite(a)]
    if not finite.size:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def stored_range(arr, scale: Scale = "linear", layer: int | None = None, floor: float = LOG_FLOOR) -> tuple[float, float]:
    """:func:`value_range` of a stored stack (or of one ``layer`` of it) from the ranges recorded
    with its maps (:meth:`analysis.store.StoredStack.map_stats`): the same numbers, no map read."""
    stats = arr.map_stats() if layer is None else arr.map_stats()[layer]
    lo, hi, lo_pos = float(stats[..., 0].min()), float(stats[..., 1].max()), float(stats[..., 2].min())
    if scale == "log":  # the smallest positive weight and the largest: what value_range reads
        return value_range(np.array([lo_pos, hi]), "log", floor)
    return value_range(np.array([lo, hi]), scale, floor)


def color_norm(
    values: np.ndarray | None,
    scale: Scale = "linear",
    vmin: float | None = None,
    vmax: float | None = None,
    floor: float = LOG_FLOOR,
) -> Normalize:
    """The colour normalisation for a view.

    Parameters
    ----------
    values : the data the range is taken from: the shown map(s) for a per-view range, or the
        whole (trimmed) stack ``[L, H, Q, K]`` for a range shared by every layer/head. May be
        ``None`` when both ``vmin`` and ``vmax`` are given.
    scale : ``linear`` (:class:`~matplotlib.colors.Normalize`) or ``log``
        (:class:`~matplotlib.colors.LogNorm`, values below ``floor`` – zeros too – are clipped
        to the lowest colour instead of disappearing)
    vmin, vmax : explicit limits; ``None`` = taken from ``values``

    Returns
    -------
    A new norm with ``clip=True``.
    """
    if vmin is None or vmax is None:
        if values is None:
            raise InputError("color_norm needs values when vmin or vmax is not given")
        lo, hi = value_range(values, scale, floor)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if scale not in SCALES:
        raise InputError(f"unknown colour scale '{scale}': choose linear or log")
    from matplotlib.colors import LogNorm, Normalize

    if scale == "log":
        vmin, vmax = max(float(vmin), floor), float(vmax)
        if vmax <= vmin:
            vmax = vmin * 10.0
        return LogNorm(vmin=vmin, vmax=vmax, clip=True)
    if vmax <= vmin:
        vmax = vmin + 1.0
    return Normalize(vmin=float(vmin), vmax=float(vmax), clip=True)
