"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in
Transformers", ACL).

Both treat a stack of self-attention maps as a layered graph: tokens at layer 0 (the inputs)
… layer ``L`` (after the last attention layer), where token ``j`` at layer ``l`` feeds token ``i``
at layer ``l + 1`` with weight ``Â_l[i, j]``. The residual connection is modelled by mixing in the
identity (:func:`augmented_attention`)::

    Â_l = residual · I + (1 − residual) · fuse(A_l)        rows renormalised to sum to 1

* **rollout** multiplies the layers: ``R_l = Â_l · R_{l−1}`` with ``R_{−1} = I``; ``R_l[i, j]`` is
  how much of input token ``j`` reaches token ``i`` after layer ``l`` if attention mixes linearly.
* **flow** reads the weights as edge capacities and takes the maximum flow from input token ``j``
  (layer 0) to output token ``i`` (top layer), one max-flow problem per ``(i, j)``.

Shapes: a stack is ``[L, H, S, S]`` (layer, head, query, key; self-attention only), a layer
transition ``[S, S]`` is (to = query, from = key). Causal (decoder) stacks are lower-triangular;
both rollout and flow stay lower-triangular (a product of lower-triangular matrices is
lower-triangular; flow can only move from a token to itself or later tokens).

Cost: rollout is ``L`` matrix products (milliseconds). Flow is ``S²`` max-flow problems on a graph
of ``(T − 1)·S`` inner nodes and ``T·S²`` edges, solved by scipy's Dinic solver on integer
capacities (:func:`_scipy_layered_flow`; never above the exact flow and within ``1e-7`` of it on
typical maps, ``2e-7`` at worst seen). Measured on the 2-core reference machine with 64 tokens and
random peaked maps (12 heads, mean-fused): the whole matrix of a 6-layer encoder in about 1 s, of
a 30-layer decoder in about 1.5 s and of a 30-layer encoder in about 2.5 s, one row
(``rows=[i]``) in under 0.1 s. Single sharp heads are the hard case: about 7 s for the whole
matrix of a 6-layer encoder. Views should ask for the row in view and compute the full matrix in
a worker (``task``: progress and cancel, :class:`analysis.tasks.TaskState`).

Everything here is numpy (plus scipy's max-flow solver) and never modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .errors import InputError
from .store import is_stored
from .tasks import TaskState, as_task

Fusion = Literal["mean", "max", "min"]
FUSIONS = ("mean", "max", "min")
#: attention flow solves S² max-flow problems; above this many tokens it is refused
FLOW_MAX_TOKENS = 64

# a problem whose flow cannot exceed this (the smaller of its source's out-capacity and its
# sink's in-capacity) is 0 without being solved
_EPS_BOUND = 1e-12

# capacities become int32 (scipy's Dinic needs integers)
_INT32_MAX = 2**31 - 1
_MAX_SCALE = 2.0**62  # tiny capacities: keep the scale finite
# edges of the problems solved together in one scipy call, on subgraphs / on full graphs
# (amortises scipy's ~0.5 ms overhead per call; larger unions cost more Dinic phases than that)
_UNION_EDGES = 50_000
_UNION_EDGES_FULL = 20_000
# bytes of one batch's [P, S, S]-sized edge masks (also caps the problems per batch)
_MASK_BYTES = 16 * 2**20
# dense maps are first solved on subgraphs of the k strongest in- and out-edges of every node,
# k from _CERTIFY_TOPS, sparsest first; a pass is given up once a run of _CERTIFY_TRIAL tried
# problems had under _CERTIFY_RATE of them settled by it
_CERTIFY_TOPS = (2, 4, 8)
_CERTIFY_TRIAL = 64
_CERTIFY_RATE = 0.5


class SelfAttentionRequired(InputError, ValueError):
    """Rollout and flow need a self-attention stack (as many queries as keys)."""


#: rollout of a long capture kept on disk stops here: it multiplies one N × N float64 matrix per
#: layer (N³ operations each) and keeps every layer's product (L · N² · 8 bytes: 250 MB for SmolLM2 at 1,024)
ROLLOUT_MAX_STORED_TOKENS = 1024


def _check_stack(att: np.ndarray, what: str) -> Any:
    """``att`` as an ``[L, H, S, S]`` self-attention stack (an array, or a long capture's stored stack)."""
    arr: Any
    if is_stored(att):  # a long capture on disk: read a layer at a time (fuse_heads)
        if att.shape[2] > ROLLOUT_MAX_STORED_TOKENS and att.shape[2] == att.shape[3]:
            raise InputError(
                f"{what} of this long capture ({att.shape[2]} tokens) is not computed: it multiplies an "
                f"{att.shape[2]} × {att.shape[2]} matrix per layer; run a text of at most {ROLLOUT_MAX_STORED_TOKENS} "
                "tokens (--max-tokens) for it")
        arr = att
    else:
        arr = np.asarray(att)
    if arr.ndim != 4:
        raise InputError(f"an attention stack must be [layer, head, query, key]; got {arr.shape}")
    if arr.shape[2] != arr.shape[3]:
        raise SelfAttentionRequired(
            f"{what} needs a self-attention stack (queries = keys); got {arr.shape[2]} queries "
            f"and {arr.shape[3]} keys: choose the encoder or decoder stack, not cross-attention"
        )
    return arr


def fuse_heads(att: np.ndarray, how: Fusion = "mean") -> np.ndarray:
    """Fuse the heads of every layer into one map.

    Parameters
    ----------
    att : ``[L, H, Q, K]`` attention weights (any float dtype)
    how : ``mean``, ``max`` or ``min`` over the heads

    Returns
    -------
    float64 ``[L, Q, K]``, a new array.
    """
    if is_stored(att):  # a long capture on disk: one layer in memory at a time
        out = np.empty((att.shape[0], *att.shape[2:]), dtype=np.float64)
        for layer in range(att.shape[0]):
            out[layer] = fuse_heads(att[layer][None], how)[0]
        return out
    arr = np.asarray(att)
    if arr.ndim != 4:
        raise InputError(f"an attention stack must be [layer, head, query, key]; got {arr.shape}")
    if how not in FUSIONS:
        raise InputError(f"unknown head fusion '{how}'; choose one of: {', '.join(FUSIONS)}")
    if arr.shape[1] == 0:
        raise InputError("the attention stack has no heads to fuse")
    if how == "mean":
        return arr.mean(axis=1, dtype=np.float64)
    reduced = arr.max(axis=1) if how == "max" else arr.min(axis=1)
    return reduced.astype(np.float64)


def augmented_attention(
    att: np.ndarray, fusion: Fusion = "mean", residual: float = 0.5
) -> np.ndarray:
    """Per-layer transition matrices ``Â_l`` with the residual connection mixed in.

    Parameters
    ----------
    att : self-attention stack ``[L, H, S, S]``
    fusion : how heads are fused (:func:`fuse_heads`)
    residual : weight of the identity, in ``[0, 1]`` (Abnar & Zuidema use 0.5)

    Returns
    -------
    float64 ``[L, S, S]``; every row sums to 1 (a row that is all zero stays zero).
    """
    arr = _check_stack(att, "rollout")
    if not 0.0 <= float(residual) <= 1.0:
        raise InputError(f"residual must be between 0 and 1; got {residual}")
    fused = fuse_heads(arr, fusion)
    n = arr.shape[2]
    mixed = float(residual) * np.eye(n) + (1.0 - float(residual)) * fused
    sums = mixed.sum(axis=-1, keepdims=True)
    return np.divide(mixed, sums, out=np.zeros_like(mixed), where=sums > 0)


def rollout(
    att: np.ndarray, fusion: Fusion = "mean", residual: float = 0.5, start_layer: int = 0
) -> np.ndarray:
    """Attention rollout after every layer.

    Parameters
    ----------
    att : self-attention stack ``[L, H, S, S]``; cross-attention raises
        :class:`SelfAttentionRequired` (a ``ValueError``)
    fusion : how heads are fused (:func:`fuse_heads`)
    residual : weight of the identity in ``Â_l`` (:func:`augmented_attention`)
    start_layer : first layer multiplied in; layers before it count as the identity

    Returns
    -------
    float64 ``[L, S, S]``: ``out[l] = Â_l · … · Â_start`` (the identity for ``l < start_layer``).
    ``out[-1]`` is the usual rollout. Rows sum to 1. For a causal (lower-triangular) stack every
    ``out[l]`` is lower-triangular.
    """
    trans = augmented_attention(att, fusion, residual)
    n_layers, n = trans.shape[0], trans.shape[1]
    if n_layers and not 0 <= int(start_layer) < n_layers:
        raise InputError(f"start_layer {start_layer} is out of range: layers are 0–{n_layers - 1}")
    out = np.empty_like(trans)
    current = np.eye(n)
    for layer in range(n_layers):
        if layer >= start_layer:
            current = trans[layer] @ current
        out[layer] = current
    return out


def flow_is_available(n_tokens: int, max_tokens: int = FLOW_MAX_TOKENS) -> bool:
    """Whether :func:`attention_flow` accepts an input of ``n_tokens`` tokens."""
    return 0 < n_tokens <= max_tokens


def attention_flow(
    att: np.ndarray,
    fusion: Fusion = "mean",
    residual: float = 0.5,
    max_tokens: int = FLOW_MAX_TOKENS,
    output_layer: int = -1,
    *,
    rows: Sequence[int] | None = None,
    task: TaskState | None = None,
) -> np.ndarray:
    """Attention flow: max-flow from every input token to every output token.

    Nodes are the tokens at layers ``0 … T`` with ``T = output_layer + 1``; the edge from token
    ``j`` at layer ``l`` to token ``i`` at layer ``l + 1`` has capacity ``Â_l[i, j]``
    (:func:`augmented_attention`). ``out[i, j]`` is the maximum flow from input token ``j``
    (layer 0) to token ``i`` at layer ``T``.

    Parameters
    ----------
    att : self-attention stack ``[L, H, S, S]``
    fusion, residual : as in :func:`augmented_attention`
    max_tokens : refuse inputs longer than this (:class:`InputError`); flow costs S² max-flows
    output_layer : the layer whose output is the sink layer (``-1`` = the last layer)
    rows : only these output tokens (0-based); the other rows of the result are NaN. The
        per-token bars of one output token need only its row, which is ``S`` times cheaper.
    task : progress and cancel (:class:`analysis.tasks.TaskState`): stage ``flow``, fraction
        ``done / total`` of the ``(i, j)`` problems, message ``attention flow: 12 of 40 token
        pairs``; cancellation is checked before every batch of problems (raises
        :class:`analysis.errors.Cancelled`)

    Returns
    -------
    float64 ``[S, S]``, every value in ``[0, 1]``: scipy's Dinic solver on integer capacities,
    never above the exact flow and within ``1e-7`` of it on typical maps (``2e-7`` at worst
    seen, see :func:`_scipy_layered_flow`). For a causal stack ``out[i, j] = 0`` for ``j > i``.
    Weights that make ``Â`` infinite or NaN raise :class:`InputError`.
    """
    arr = _check_stack(att, "attention flow")
    n = arr.shape[2]
    if n > max_tokens:
        raise InputError(
            f"attention flow is limited to {max_tokens} tokens and this input has {n}; "
            "use rollout instead, or shorten the text"
        )
    n_layers = arr.shape[0]
    if n_layers == 0:
        raise InputError("the attention stack has no layers")
    last = output_layer + n_layers if output_layer < 0 else output_layer
    if not 0 <= last < n_layers:
        raise InputError(
            f"output_layer {output_layer} is out of range: layers are 0–{n_layers - 1} (or -1)"
        )
    trans = augmented_attention(arr[: last + 1], fusion, residual)
    if not np.isfinite(trans).all():
        raise InputError(
            "the attention weights contain infinities, so flow is undefined; recapture the input"
        )
    wanted = range(n) if rows is None else sorted({int(r) for r in rows})
    for r in wanted:
        if not 0 <= r < n:
            raise InputError(f"output token {r} is out of range: tokens are 0–{n - 1}")
    out = np.full((n, n), np.nan)
    out[list(wanted)] = 0.0
    outputs = np.repeat(np.asarray(list(wanted), dtype=np.int64), n)
    inputs = np.tile(np.arange(n, dtype=np.int64), len(wanted))
    values = layered_max_flow(trans, outputs, inputs, task=task)
    out[outputs, inputs] = values
    return out


def flow_shares(flow: np.ndarray) -> np.ndarray:
    """Each output token's attention flow as shares of the input tokens.

    Abnar & Zuidema's reference code reads a flow matrix row by row this way: row ``i`` divided by
    its sum says which part of what reaches output token ``i`` comes from each input token.

    Parameters
    ----------
    flow : ``[S, S]`` (output token, input token) non-negative flow values, e.g.
        :func:`attention_flow`; rows left uncomputed there (NaN) stay NaN

    Returns
    -------
    float64 ``[S, S]``, a new array: every row sums to 1, except a row of zeros, which stays
    zero, and a row holding NaN, which is all NaN.
    """
    m = np.asarray(flow, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InputError(f"expected an [S, S] flow matrix; got shape {m.shape}")
    sums = m.sum(axis=-1, keepdims=True)
    out = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    out[np.isnan(sums[:, 0])] = np.nan
    return out


def token_contributions(matrix: np.ndarray, output_index: int) -> np.ndarray:
    """Per-input-token bars for one output token.

    Parameters
    ----------
    matrix : ``[S, S]`` rollout (one layer of :func:`rollout`) or :func:`attention_flow`
    output_index : the output token (row), 0-based

    Returns
    -------
    float64 ``[S]``: row ``output_index`` normalised to sum to 1 (all zeros if the row is zero).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise InputError(f"expected an [S, S] matrix; got shape {m.shape}")
    if not 0 <= int(output_index) < m.shape[0]:
        raise InputError(
            f"output token {output_index} is out of range: tokens are 0–{m.shape[0] - 1}"
        )
    row = np.nan_to_num(m[int(output_index)], nan=0.0).clip(min=0.0)
    total = row.sum()
    return row / total if total > 0 else np.zeros_like(row)


# -- max-flow on a layered graph ---------------------------------------------------------------
def layered_max_flow(
    transitions: np.ndarray,
    outputs: np.ndarray,
    inputs: np.ndarray,
    *,
    task: TaskState | None = None,
) -> np.ndarray:
    """Max-flow values on the layered graph of ``transitions``.

    Parameters
    ----------
    transitions : ``[T, S, S]`` finite non-negative capacities, ``T ≥ 1``; the edge from token
        ``j`` at layer ``l`` to token ``i`` at layer ``l + 1`` has capacity ``transitions[l, i, j]``
    outputs : int ``[P]``, sink token of each problem (at layer ``T``)
    inputs : int ``[P]``, source token of each problem (at layer 0)
    task : progress and cancel, as in :func:`attention_flow`

    Returns
    -------
    float64 ``[P]``: the max-flow value of each ``(outputs[p], inputs[p])`` problem.

    ``T = 1`` is the edge itself, ``T = 2`` has the closed form ``Σ_k min(cap0[k, j], cap1[i, k])``
    (both exact). Deeper graphs go to scipy's Dinic solver on integer capacities
    (:func:`_scipy_layered_flow`: never above the exact value, below it by under ``5e-10`` per
    edge of the minimum cut, relative to the largest capacity).
    """
    trans = np.asarray(transitions, dtype=np.float64)
    if trans.ndim != 3 or trans.shape[1] != trans.shape[2] or trans.shape[0] < 1:
        raise ValueError(f"transitions must be [T >= 1, S, S]; got {trans.shape}")
    if not np.isfinite(trans).all():
        raise ValueError("capacities must be finite")
    if (trans < 0).any():
        raise ValueError("capacities must be non-negative")
    outs = np.asarray(outputs, dtype=np.int64).reshape(-1)
    ins = np.asarray(inputs, dtype=np.int64).reshape(-1)
    if outs.shape != ins.shape:
        raise ValueError("outputs and inputs must have the same length")
    task = as_task(task)
    n_layers, n, _ = trans.shape
    total = outs.size
    if n_layers == 1:
        values = trans[0][outs, ins].copy()
        _report(task, total, total)
        return values
    supply = trans[0][:, ins].T  # [P, S]: source j → token k at layer 1
    demand = trans[-1][outs, :]  # [P, S]: token k at layer T-1 → sink i
    if n_layers == 2:
        values = np.minimum(supply, demand).sum(axis=-1)
        _report(task, total, total)
        return values

    values = np.zeros(total)
    bound = np.minimum(supply.sum(-1), demand.sum(-1))
    todo = np.flatnonzero(bound > _EPS_BOUND)
    if not any(np.triu(t, 1).any() for t in trans):
        # causal: capacity only from a token to itself or later ones, so j > i carries nothing
        todo = todo[ins[todo] <= outs[todo]]
    done = total - todo.size
    _report(task, done, total)
    values[todo] = _scipy_layered_flow(
        trans, outs[todo], ins[todo], task=task, done=done, total=total
    )
    return values


def _report(task: TaskState, done: int, total: int) -> None:
    """Progress of :func:`layered_max_flow`: ``done`` of ``total`` ``(i, j)`` problems solved."""
    task.report(
        "flow", done / total if total else 1.0, f"attention flow: {done} of {total} token pairs"
    )


# -- integer Dinic (scipy) on one graph per batch of problems ---------------------------------
def _integer_capacities(trans: np.ndarray) -> tuple[np.ndarray, float]:
    """``floor(trans · scale)`` as int64 and ``scale = (2**31 - 1) / trans.max()``: the largest
    capacity just fits int32. Rounding down loses under ``1 / scale`` per edge (``4.7e-10``
    when capacities are at most 1)."""
    top = float(trans.max(initial=0.0))
    if top <= 0.0:
        return np.zeros(trans.shape, dtype=np.int64), 1.0
    scale = min(_INT32_MAX / top, _MAX_SCALE)
    caps = np.minimum(np.floor(trans * scale), _INT32_MAX)
    return caps.astype(np.int64), scale


def _strongest_edges(cap_mid: np.ndarray, k: int) -> np.ndarray:
    """bool ``[D, from, to]``: the ``k`` largest out-edges and in-edges of every node (a sparse
    subgraph that usually carries the whole max flow)."""
    n = cap_mid.shape[1]
    if n <= k:
        return cap_mid > 0
    keep = np.zeros(cap_mid.shape, dtype=bool)
    order = -cap_mid
    np.put_along_axis(keep, np.argpartition(order, k - 1, axis=2)[:, :, :k], True, axis=2)
    np.put_along_axis(keep, np.argpartition(order, k - 1, axis=1)[:, :k, :], True, axis=1)
    return keep & (cap_mid > 0)


def _reachability(caps: np.ndarray, mid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which inner nodes each input token reaches and each output token is reached from.

    ``caps`` ``[T, S, S]`` (to, from) capacities, ``mid`` float32 0/1 ``[T - 2, to, from]`` the
    open edges between inner layers. Returns bool ``[T - 1, S, S]`` twice: ``forward[m, j, k]``
    (token ``k`` of inner layer ``m`` is reachable from input token ``j`` along edges of positive
    capacity) and ``backward[m, i, k]`` (output token ``i`` is reachable from it). A node of
    problem ``(i, j)`` carries flow only if both hold (the graph has no cycles).
    """
    n_mid = mid.shape[0] + 1
    forward = np.empty((n_mid,) + caps.shape[1:], dtype=bool)
    forward[0] = caps[0].T > 0
    for m in range(1, n_mid):
        forward[m] = forward[m - 1].astype(np.float32) @ mid[m - 1].T > 0
    backward = np.empty_like(forward)
    backward[-1] = caps[-1] > 0
    for m in range(n_mid - 2, -1, -1):
        backward[m] = backward[m + 1].astype(np.float32) @ mid[m] > 0
    return forward, backward


def _solve_union(
    caps: np.ndarray,
    cap_mid: np.ndarray,
    edge_lists: Sequence[tuple[np.ndarray, ...]],
    outs: np.ndarray,
    ins: np.ndarray,
    alive: np.ndarray,
) -> np.ndarray:
    """Integer max-flow of a batch of problems with one scipy call.

    ``caps`` int ``[T, S, S]`` (to, from), ``cap_mid`` the inner transitions ``caps[1:-1]`` as
    ``[T - 2, from, to]``, ``edge_lists[m]`` the sorted ``(from, to)`` inner edges used between
    inner layers ``m`` and ``m + 1``, ``alive`` bool ``[T - 1, P, S]`` the inner nodes of each
    problem's graph. The problems' graphs are laid side by side, disjoint, between one
    super-source (node 0, joined to each copy's first inner layer by that copy's source edges)
    and one super-sink (the last node, joined from each copy's last inner layer by its sink
    edges). The copies share no edge, so a maximum flow of the union is a maximum flow of every
    copy (this is not the super-source trick for one shared graph, where problems would compete
    for capacity): the value of problem ``p`` is the flow from the super-source into copy ``p``.

    Returns int64 ``[P]`` in units of the integer capacities.
    """
    # imported on first use: scipy's graph module is not needed until a flow is computed
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n_problems = alive.shape[1]
    n_nodes = int(alive.sum())
    ids = np.zeros(alive.shape, dtype=np.int64)
    ids[alive] = np.arange(1, n_nodes + 1)  # numbered layer by layer, so rows come out sorted
    sink = n_nodes + 1
    src_problem, src_token = np.nonzero(alive[0])
    rows = [np.zeros(src_problem.size, dtype=np.int64)]
    heads = [ids[0][src_problem, src_token]]
    data = [caps[0][src_token, ins[src_problem]]]
    for m, (frm, to) in enumerate(edge_lists):
        problem, edge = np.nonzero(alive[m][:, frm] & alive[m + 1][:, to])  # sorted by row
        rows.append(ids[m][problem, frm[edge]])
        heads.append(ids[m + 1][problem, to[edge]])
        data.append(cap_mid[m][frm[edge], to[edge]])
    problem, frm = np.nonzero(alive[-1])
    rows.append(ids[-1][problem, frm])
    heads.append(np.full(problem.size, sink, dtype=np.int64))
    data.append(caps[-1][outs[problem], frm])
    indptr = np.zeros(n_nodes + 3, dtype=np.int64)
    np.cumsum(np.bincount(np.concatenate(rows), minlength=n_nodes + 2), out=indptr[1:])
    graph = csr_matrix(
        (
            np.concatenate(data).astype(np.int32),
            np.concatenate(heads).astype(np.int32),
            indptr.astype(np.int32),
        ),
        shape=(n_nodes + 2, n_nodes + 2),
    )
    graph.has_sorted_indices = True
    flow = maximum_flow(graph, 0, sink, method="dinic").flow
    start, stop = int(flow.indptr[0]), int(flow.indptr[1])
    head = np.asarray(flow.indices[start:stop], dtype=np.int64)
    amount = np.asarray(flow.data[start:stop], dtype=np.float64)
    first = (head >= 1) & (head <= src_problem.size)  # the super-source's edges into layer 1
    sums = np.bincount(src_problem[head[first] - 1], weights=amount[first], minlength=n_problems)
    return np.rint(sums).astype(np.int64)


def _batches(
    problems: np.ndarray, sizes: np.ndarray, budget: int, most: int, *, largest_first: bool = False
) -> list[np.ndarray]:
    """``problems`` grouped by graph size into batches of at most ``budget`` edges (a larger
    problem goes alone) and at most ``most`` problems; ``sizes`` is indexed by problem."""
    order = problems[np.argsort(sizes[problems], kind="stable")]
    if largest_first:
        order = order[::-1]
    out: list[np.ndarray] = []
    start, edges = 0, 0
    for pos, problem in enumerate(order):
        size = int(sizes[problem])
        if pos > start and (edges + size > budget or pos - start >= most):
            out.append(order[start:pos])
            start, edges = pos, 0
        edges += size
    if start < order.size:
        out.append(order[start:])
    return out


def _scipy_layered_flow(
    trans: np.ndarray,
    outs: np.ndarray,
    ins: np.ndarray,
    *,
    task: TaskState,
    done: int,
    total: int,
) -> np.ndarray:
    """Max-flow values of the ``(outs[p], ins[p])`` problems (``T ≥ 3``) with scipy's Dinic
    solver (:func:`scipy.sparse.csgraph.maximum_flow`, which needs int32 capacities).

    Accuracy: capacities are scaled so the largest is ``2**31 - 1`` and rounded down
    (:func:`_integer_capacities`). Every value is then a feasible flow of the real graph —
    never above the exact max flow — and below it by less than ``(edges crossing the minimum
    cut) / scale``, each edge losing under ``1 / scale`` (``4.7e-10`` for attention, whose
    capacities are at most 1): under ``3e-8`` when that cut is the ``S ≤ 64`` edges out of the
    source or into the sink (the usual case with mean-fused heads), under ``5e-7`` for cuts of
    up to 1000 edges (seen: ``2e-7`` with single sharp heads). Only a cut of over 2000 edges
    could miss by ``1e-6``; the bound over all cuts is ``T · S² / scale`` (``5.7e-5`` for 30
    layers of 64 tokens). No int32 overflows: every edge fits, an edge's flow is at most its
    capacity, and scipy adds no capacities (the graph has no opposite edge pairs).

    Graphs: each problem gets its own, holding only the inner nodes on some source → sink path
    of positive integer capacity (for a causal stack the tokens ``j … i``); problems without
    one are 0 unsolved. Problems with up to :data:`_UNION_EDGES` edges in all
    (:data:`_UNION_EDGES_FULL` on full graphs) go to one scipy call as disjoint copies
    (:func:`_solve_union`), amortising scipy's per-call overhead.

    Passes: problems with a dense graph are first solved on subgraphs that keep only the ``k``
    strongest in- and out-edges of every inner node (``k`` in :data:`_CERTIFY_TOPS`, sparsest
    first, largest problems first). A flow there is a flow of the full graph, so one that
    reaches the upper bound ``min(source out-capacity, sink in-capacity)`` is maximal: the
    problem is settled. That is nearly always so for mean-fused heads, and a 30-layer subgraph
    with ``k = 2`` is ~25 times smaller than the full graph. A pass stops once fewer than
    :data:`_CERTIFY_RATE` of a run of :data:`_CERTIFY_TRIAL` problems were settled (smaller
    problems are settled less often); whatever is left is solved on the full graphs.
    """
    caps, scale = _integer_capacities(trans)
    cap_mid = np.ascontiguousarray(np.transpose(caps[1:-1], (0, 2, 1)))  # [D, from, to]
    n = trans.shape[1]
    most = max(1, _MASK_BYTES // (n * n))  # problems per batch: bounds its [P, E] edge masks
    graphs = _subgraphs(cap_mid)
    # [D, to, from] open edges of each graph
    reach = [_reachability(caps, g.transpose(0, 2, 1).astype(np.float32)) for g in graphs]
    upper, sizes = _problem_sizes(caps, graphs, reach, outs, ins, most)
    flows = np.zeros(outs.size, dtype=np.int64)
    edge_lists = [[np.nonzero(layer) for layer in g] for g in graphs]

    def solve(g: int, part: np.ndarray) -> np.ndarray:
        """Solve ``part`` on graph ``g``; returns the problems it settled (flow = upper bound)."""
        task.check()
        forward, backward = reach[g]
        alive = forward[:, ins[part]] & backward[:, outs[part]]
        flows[part] = _solve_union(caps, cap_mid, edge_lists[g], outs[part], ins[part], alive)
        return part[flows[part] >= upper[part]]

    def advance(solved: int) -> None:
        nonlocal done
        done += solved
        _report(task, done, total)

    pending = np.flatnonzero(upper > 0)
    advance(outs.size - pending.size)
    for g in range(len(graphs) - 1, 0, -1):  # the sparsest subgraph first
        eligible = pending[2 * sizes[g][pending] <= sizes[0][pending]]
        batches = _batches(eligible, sizes[g], _UNION_EDGES, most, largest_first=True)
        settled = _certify(batches, lambda part, g=g: solve(g, part), advance)
        if settled:
            pending = np.setdiff1d(pending, np.concatenate(settled))
    for part in _batches(pending, sizes[0], _UNION_EDGES_FULL, most):
        solve(0, part)
        advance(part.size)
    return flows / scale


def _subgraphs(cap_mid: np.ndarray) -> list[np.ndarray]:
    """bool ``[D, from, to]`` open inner edges: the full graph, then ever sparser subgraphs of
    the strongest edges (:data:`_CERTIFY_TOPS`), each kept only if it drops edges."""
    graphs = [cap_mid > 0]
    for top in sorted(_CERTIFY_TOPS, reverse=True):
        strong = _strongest_edges(cap_mid, top)
        if strong.sum() < graphs[-1].sum():
            graphs.append(strong)
    return graphs


def _problem_sizes(
    caps: np.ndarray,
    graphs: list[np.ndarray],
    reach: list[tuple[np.ndarray, np.ndarray]],
    outs: np.ndarray,
    ins: np.ndarray,
    most: int,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each problem's upper bound on its flow, int64 ``[P]`` (``min(source out-capacity, sink
    in-capacity)`` over the nodes that can carry flow), and the estimated edges of its graph in
    each of ``graphs`` (float ``[P]`` each), computed ``most`` problems at a time."""
    density = [g.mean(axis=(1, 2)) for g in graphs]  # [D]: share of open inner edges
    count = outs.size
    upper = np.zeros(count, dtype=np.int64)
    sizes = [np.zeros(count) for _ in graphs]
    for start in range(0, count, most):
        part = slice(start, start + most)
        supply, demand = caps[0][:, ins[part]].T, caps[-1][outs[part]]
        for g, (forward, backward) in enumerate(reach):
            nodes = (forward[:, ins[part]] & backward[:, outs[part]]).sum(-1)  # [M, P]
            if g == 0:
                first = forward[0, ins[part]] & backward[0, outs[part]]
                last = forward[-1, ins[part]] & backward[-1, outs[part]]
                upper[part] = np.minimum((supply * first).sum(-1), (demand * last).sum(-1))
            inner = (nodes[:-1] * nodes[1:] * density[g][:, None]).sum(0)
            sizes[g][part] = nodes[0] + nodes[-1] + inner
    return upper, sizes


def _certify(batches, solve, advance) -> list[np.ndarray]:
    """One pass on a subgraph: ``solve(part)`` each batch (largest problems first) and collect
    the problems it settled; ``advance(n)`` reports them. The pass is given up once a run of
    :data:`_CERTIFY_TRIAL` tried problems had under :data:`_CERTIFY_RATE` of them settled."""
    settled: list[np.ndarray] = []
    tried, hits = 0, 0
    for part in batches:
        settled.append(solve(part))
        advance(settled[-1].size)
        tried, hits = tried + part.size, hits + settled[-1].size
        if tried >= _CERTIFY_TRIAL:
            if hits < _CERTIFY_RATE * tried:
                break  # smaller graphs are settled even less often: leave them to the next
            tried, hits = 0, 0
    return settled
