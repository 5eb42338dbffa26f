"""Word alignment from seq2seq cross-attention, Pharaoh I/O and alignment error rate (AER).

Shapes (see :mod:`analysis.result`):

* ``cross`` – cross-attention ``[L, H, T, S]``: row ``t`` is the decoder position that predicts
  *output* token ``t``, column ``s`` is source token ``s``
* word ids – per token, the index of the whitespace word it belongs to, ``-1`` to ignore it
  (special tokens such as ``</s>``)

Two readings of the rows (``method``):

* ``predict`` – output token ``t`` reads row ``t``, the row computed while predicting it;
* ``shift`` – Shift-Att (Chen et al., EMNLP 2020, "Accurate Word Alignment Induction from Neural
  Machine Translation"): output token ``t`` reads row ``t + 1``, the row at which ``t`` is the
  decoder *input* (the last output token, usually ``</s>``, has no such row and is not aligned).

Links: each target word links to its argmax source word; with a ``threshold`` P (0 < P ≤ 1) also to
every source word whose share of the word row (the row over the source words, normalised to sum
to 1) is at least P, so one target word may link to several source words and a source word to
several target words, as gold alignments do.

Alignment pairs are Pharaoh style ``(i, j)``: ``i`` = source word index, ``j`` = target word
index, both 0-based. AER follows Och & Ney (2003):
``AER = 1 − (|A∩S| + |A∩P|) / (|A| + |S|)`` with sure links ``S`` ⊆ possible links ``P``.

Pure numpy; input arrays are never modified.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ModelLoadError

Link = tuple[int, int]

#: name of the file in a bundled translator folder that records the best alignment layer
ALIGNMENT_FILE = "alignment.json"
#: how rows are read (see the module docstring)
ALIGNMENT_METHODS = ("predict", "shift")
#: thresholds the bundled translators' defaults are chosen among (None: the argmax link only)
THRESHOLDS = (None, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1)


@dataclass(frozen=True)
class AlignmentResult:
    """Word-level alignment read off one layer (and one head or the head average).

    Attributes
    ----------
    matrix : float64 ``[n_tgt_words, n_src_words]``, read-only. Row ``j`` is the attention of
        target word ``j`` (mean over its pieces) on source word ``i`` (sum over its pieces).
        Word counts are ``max(word id) + 1``; a word without tokens has an all-zero row/column.
    pairs : ``(i_src_word, j_tgt_word)`` links, one per target word that has tokens and some
        attention on a source word (its argmax), sorted by source then target index
    layer : the layer used (non-negative), or None when all layers were averaged
    head : the head used (non-negative), or None for the mean over heads
    method : ``predict`` or ``shift`` (which row a target token reads)
    threshold : the share P above which further links are made, or None (argmax only)
    """

    matrix: np.ndarray
    pairs: tuple[Link, ...]
    layer: int | None
    head: int | None
    method: str = "predict"
    threshold: float | None = None

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    @property
    def n_src_words(self) -> int:
        return self.matrix.shape[1]

    @property
    def n_tgt_words(self) -> int:
        return self.matrix.shape[0]


# -- attention → words ------------------------------------------------------------------------
def _check_cross(
    cross: np.ndarray, src_word_ids: Sequence[int], tgt_word_ids: Sequence[int]
) -> np.ndarray:
    arr = np.asarray(cross)
    if arr.ndim != 4:
        raise InputError(
            f"cross-attention must be a [layer, head, target, source] array, got {arr.ndim} dimensions; "
            "pass the capture's cross_attentions stack"
        )
    _, _, t, s = arr.shape
    if len(src_word_ids) != s or len(tgt_word_ids) != t:
        raise InputError(
            f"word ids do not match the cross-attention shape {arr.shape}: got {len(tgt_word_ids)} target "
            f"and {len(src_word_ids)} source ids; give one word id per output token and per source token"
        )
    return arr


def _index(value: int, n: int, what: str) -> int:
    if not -n <= value < n:
        raise InputError(
            f"{what} {value} is out of range; this model has {n} {what}s (0 to {n - 1})"
        )
    return value % n


def select_map(
    cross: np.ndarray, layer: int | None = None, head: int | None = None
) -> tuple[np.ndarray, int | None, int | None]:
    """One ``[T, S]`` map out of ``[L, H, T, S]``.

    Parameters
    ----------
    cross : ``[L, H, T, S]``
    layer : layer index (negative counts from the end) or None for the mean over layers
    head : head index (negative counts from the end) or None for the mean over heads

    Returns
    -------
    (map ``[T, S]`` float64, layer used or None, head used or None)
    """
    arr = np.asarray(cross)
    n_layers, n_heads = arr.shape[0], arr.shape[1]
    li = None if layer is None else _index(int(layer), n_layers, "layer")
    hi = None if head is None else _index(int(head), n_heads, "head")
    sub = (
        arr.astype(np.float64) if li is None else arr[li].astype(np.float64)
    )  # [L, H, T, S] or [H, T, S]
    if li is None:
        sub = sub.mean(axis=0)
    out = sub.mean(axis=0) if hi is None else sub[hi]
    return out, li, hi


def _n_words(word_ids: Sequence[int] | np.ndarray) -> int:
    ids = np.asarray(word_ids, dtype=np.int64).reshape(-1)
    return int(ids.max()) + 1 if ids.size and ids.max() >= 0 else 0


def _pooling(word_ids: Sequence[int], mean: bool, n_words: int | None = None) -> np.ndarray:
    """``[n_words, N]`` matrix summing (or averaging) the token axis into words."""
    ids = np.asarray(word_ids, dtype=np.int64).reshape(-1)
    n_words = _n_words(ids) if n_words is None else n_words
    pool = np.zeros((n_words, ids.size), dtype=np.float64)
    tok = np.flatnonzero(ids >= 0)
    pool[ids[tok], tok] = 1.0
    if mean:
        counts = pool.sum(axis=1, keepdims=True)
        np.divide(pool, counts, out=pool, where=counts > 0)
    return pool


def word_matrix(
    attn: np.ndarray, src_word_ids: Sequence[int], tgt_word_ids: Sequence[int]
) -> np.ndarray:
    """Merge a token map into a word map.

    Parameters
    ----------
    attn : ``[T, S]`` (rows = output tokens, columns = source tokens)
    src_word_ids : ``[S]`` word index per source token, -1 to ignore
    tgt_word_ids : ``[T]`` word index per output token, -1 to ignore

    Returns
    -------
    float64 ``[n_tgt_words, n_src_words]``: sum over a source word's pieces, mean over a
    target word's pieces.
    """
    a = np.asarray(attn, dtype=np.float64)
    return _pooling(tgt_word_ids, mean=True) @ a @ _pooling(src_word_ids, mean=False).T


def check_method(method: str, threshold: float | None = None) -> None:
    if method not in ALIGNMENT_METHODS:
        raise InputError(f"unknown alignment method '{method}': choose one of {', '.join(ALIGNMENT_METHODS)}")
    if threshold is not None and (isinstance(threshold, bool) or not 0.0 < float(threshold) <= 1.0):
        raise InputError(f"the alignment threshold {threshold} is out of range: choose a share P with 0 < P ≤ 1")


def method_rows(cross: np.ndarray, tgt_word_ids: Sequence[int], method: str) -> tuple[np.ndarray, list[int]]:
    """The rows each output token reads under ``method``, and the word ids that still apply.

    Parameters
    ----------
    cross : ``[..., T, S]``
    tgt_word_ids : ``[T]`` word id per output token

    Returns
    -------
    (``[..., T, S]`` with row t = the row output token t reads, word ids ``[T]``): ``predict``
    returns both unchanged; ``shift`` moves row t + 1 to t and ignores the last output token (it
    is never a decoder input).
    """
    check_method(method)
    ids = [int(w) for w in tgt_word_ids]
    if method == "predict":
        return cross, ids
    arr = np.asarray(cross)
    out = np.zeros_like(arr)
    out[..., :-1, :] = arr[..., 1:, :]
    if ids:
        ids[-1] = -1
    return out, ids


def _argmax_pairs(matrix: np.ndarray, tgt_has_tokens: np.ndarray, threshold: float | None = None) -> tuple[Link, ...]:
    pairs = set()
    for j in range(matrix.shape[0]):
        row = matrix[j]
        if not tgt_has_tokens[j] or row.size == 0 or not np.any(row > 0):
            continue
        pairs.add((int(np.argmax(row)), j))
        if threshold is not None:
            share = row / row.sum()
            pairs.update((int(i), j) for i in np.flatnonzero(share >= threshold - 1e-12))
    return tuple(sorted(pairs))


def word_alignment(
    cross: np.ndarray,
    src_word_ids: Sequence[int],
    tgt_word_ids: Sequence[int],
    layer: int | None = None,
    head: int | None = None,
    method: str = "predict",
    threshold: float | None = None,
) -> AlignmentResult:
    """Align output words to source words by the argmax of cross-attention.

    Parameters
    ----------
    cross : ``[L, H, T, S]`` cross-attention; row ``t`` predicts output token ``t``
    src_word_ids : ``[S]`` source word index per source token (-1: ignore, e.g. ``</s>``)
    tgt_word_ids : ``[T]`` target word index per *output* token (-1: ignore)
    layer : layer to read (negative counts from the end); None averages all layers
    head : head to read; None averages the heads of the layer
    method : ``predict`` (row t for output token t) or ``shift`` (row t + 1; Shift-Att)
    threshold : also link every source word with at least this share of the word row (0 < P ≤ 1)

    Returns
    -------
    AlignmentResult
        The ``[n_tgt_words, n_src_words]`` word matrix (source pieces summed, target pieces
        averaged, rows read by ``method``) and for each target word the source word with the most
        attention (ties: the lower index), plus, with a threshold, every source word at or above
        it. Target words whose row has no attention on any source word get no link.

    Raises
    ------
    InputError
        When ``cross`` is not 4-D, the word ids do not match its shape, or layer/head is out of
        range.
    """
    arr = _check_cross(cross, src_word_ids, tgt_word_ids)
    check_method(method, threshold)
    attn, li, hi = select_map(arr, layer, head)
    attn, tgt_ids = method_rows(attn, tgt_word_ids, method)
    n_tgt = _n_words(tgt_word_ids)  # a word shifted off the end keeps its (empty) row
    matrix = _pooling(tgt_ids, True, n_tgt) @ np.asarray(attn, dtype=np.float64) @ _pooling(src_word_ids, False).T
    has_tokens = _pooling(tgt_ids, False, n_tgt).sum(axis=1) > 0
    return AlignmentResult(
        matrix=matrix, pairs=_argmax_pairs(matrix, has_tokens, threshold), layer=li, head=hi, method=method,
        threshold=None if threshold is None else float(threshold),
    )


# -- Pharaoh format ---------------------------------------------------------------------------
def split_pharaoh(line: str) -> tuple[set[Link], set[Link]]:
    """Parse a Pharaoh line into ``(sure, possible)`` with ``possible ⊇ sure``.

    ``"0-0 1-2"`` are sure links; ``"1p2"`` or ``"1?2"`` mark possible-only links.

    Raises
    ------
    InputError
        On a token that is not ``i-j`` / ``ipj`` / ``i?j`` with non-negative integers.
    """
    sure: set[Link] = set()
    possible: set[Link] = set()
    for tok in line.split():
        sep = next((c for c in ("-", "p", "?") if c in tok), None)
        parts = tok.split(sep) if sep else []
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise InputError(
                f"'{tok}' is not a Pharaoh link; write links as i-j (source-target word indices)"
            )
        link = (int(parts[0]), int(parts[1]))
        possible.add(link)
        if sep == "-":
            sure.add(link)
    return sure, possible


def parse_pharaoh(line: str) -> set[Link]:
    """All links of a Pharaoh line (``"0-0 1-0 2-1"`` → ``{(0, 0), (1, 0), (2, 1)}``).

    Possible links (``ipj`` / ``i?j``) are included; use :func:`split_pharaoh` to tell them apart.
    """
    return split_pharaoh(line)[1]


def format_pharaoh(pairs: Iterable[Link]) -> str:
    """``"i-j i-j …"``, duplicates removed, sorted by source index then target index."""
    return " ".join(f"{i}-{j}" for i, j in sorted({(int(i), int(j)) for i, j in pairs}))


# -- AER --------------------------------------------------------------------------------------
def aer_counts(
    predicted: Iterable[Link], sure: Iterable[Link], possible: Iterable[Link] | None = None
) -> np.ndarray:
    """``[|A∩S|, |A∩P|, |A|, |S|]`` as int64 ``[4]``; ``P`` is ``possible ∪ sure``.

    Counts add up over sentences, which gives corpus-level AER (not a mean of ratios).
    """
    a = {(int(i), int(j)) for i, j in predicted}
    s = {(int(i), int(j)) for i, j in sure}
    p = s | ({(int(i), int(j)) for i, j in possible} if possible is not None else set())
    return np.array([len(a & s), len(a & p), len(a), len(s)], dtype=np.int64)


def aer_from_counts(counts: np.ndarray) -> np.ndarray | float:
    """AER from counts ``[..., 4]`` (see :func:`aer_counts`); 0 where ``|A| + |S| = 0``."""
    out = _aer_array(counts)
    return float(out) if out.ndim == 0 else out


def _aer_array(counts: np.ndarray) -> np.ndarray:
    """:func:`aer_from_counts` as float64 ``[...]``, also for one alignment (0-d)."""
    c = np.asarray(counts, dtype=np.float64)
    denom = c[..., 2] + c[..., 3]
    ratio = np.divide(c[..., 0] + c[..., 1], denom, out=np.ones_like(denom), where=denom > 0)
    return 1.0 - ratio


def aer(
    predicted: Iterable[Link], sure: Iterable[Link], possible: Iterable[Link] | None = None
) -> float:
    """Alignment error rate ``1 − (|A∩S| + |A∩P|) / (|A| + |S|)`` of one alignment.

    Parameters
    ----------
    predicted : links ``A``
    sure : gold sure links ``S``
    possible : gold possible links; ``P = possible ∪ sure``. None: ``P = S``.

    Returns
    -------
    float in ``[0, 1]``; 0.0 when both ``A`` and ``S`` are empty.
    """
    return float(aer_from_counts(aer_counts(predicted, sure, possible)))


def aer_count_grid(
    cross: np.ndarray,
    src_word_ids: Sequence[int],
    tgt_word_ids: Sequence[int],
    gold: Iterable[Link],
    possible: Iterable[Link] | None = None,
    method: str = "predict",
    threshold: float | None = None,
) -> np.ndarray:
    """AER counts of every layer and head of one sentence (rows read by ``method``, links with
    ``threshold``: see :func:`word_alignment`).

    Returns
    -------
    int64 ``[L, H + 1, 4]``: column ``h < H`` is head ``h``, the last column the head average;
    the last axis is ``[|A∩S|, |A∩P|, |A|, |S|]``.
    """
    arr = _check_cross(cross, src_word_ids, tgt_word_ids)
    check_method(method, threshold)
    n_layers, n_heads = arr.shape[:2]
    sure = {(int(i), int(j)) for i, j in gold}
    poss = None if possible is None else list(possible)
    _, tgt_ids = method_rows(arr[:0], tgt_word_ids, method)
    n_tgt = _n_words(tgt_word_ids)
    src_pool = _pooling(src_word_ids, mean=False)
    tgt_pool = _pooling(tgt_ids, True, n_tgt)
    has_tokens = tgt_pool.sum(axis=1) > 0
    out = np.zeros((n_layers, n_heads + 1, 4), dtype=np.int64)
    for li in range(n_layers):
        per_head, _ = method_rows(arr[li].astype(np.float64), tgt_word_ids, method)  # [H, T, S]
        maps = list(per_head) + [per_head.mean(axis=0)]
        for col, attn in enumerate(maps):
            matrix = tgt_pool @ attn @ src_pool.T
            out[li, col] = aer_counts(_argmax_pairs(matrix, has_tokens, threshold), sure, poss)
    return out


def aer_grid(
    cross: np.ndarray,
    src_word_ids: Sequence[int],
    tgt_word_ids: Sequence[int],
    gold: Iterable[Link],
    possible: Iterable[Link] | None = None,
    method: str = "predict",
    threshold: float | None = None,
) -> np.ndarray:
    """AER of every layer and head of one sentence.

    Parameters
    ----------
    cross : ``[L, H, T, S]``
    src_word_ids, tgt_word_ids : word index per source / output token (-1: ignore)
    gold : sure gold links ``(i_src_word, j_tgt_word)``
    possible : optional possible links
    method, threshold : see :func:`word_alignment`

    Returns
    -------
    float64 ``[L, H + 1]``; the last column is the head average.
    """
    return _aer_array(aer_count_grid(cross, src_word_ids, tgt_word_ids, gold, possible, method, threshold))


def corpus_aer_grid(
    samples: Iterable[tuple],
    method: str = "predict",
    threshold: float | None = None,
) -> np.ndarray:
    """Corpus-level AER of every layer and head: counts are summed over sentences first.

    Parameters
    ----------
    samples : ``(cross [L, H, T_k, S_k], src_word_ids, tgt_word_ids, gold)`` per sentence, or
        with a fifth item, the sentence's possible links; all with the same ``L`` and ``H``
    method, threshold : see :func:`word_alignment`

    Returns
    -------
    float64 ``[L, H + 1]``; the last column is the head average.
    """
    return _aer_array(corpus_aer_counts(samples, method, threshold))


def corpus_aer_counts(samples: Iterable[tuple], method: str = "predict", threshold: float | None = None) -> np.ndarray:
    """The summed AER counts ``[L, H + 1, 4]`` behind :func:`corpus_aer_grid`."""
    total: np.ndarray | None = None
    for sample in samples:
        cross, src, tgt, gold, *rest = sample
        counts = aer_count_grid(cross, src, tgt, gold, rest[0] if rest else None, method, threshold)
        if total is not None and counts.shape != total.shape:
            raise InputError("all sentences must come from the same model (same layers and heads)")
        total = counts if total is None else total + counts
    if total is None:
        raise InputError(
            "no sentences given; pass at least one (cross, src ids, tgt ids, gold) sample"
        )
    return total


def best_setting(grids: dict[tuple[str, float | None], np.ndarray]) -> dict:
    """The (method, threshold, layer, head) with the lowest AER among ``grids`` (each
    ``[L, H + 1]``, keyed by ``(method, threshold)``); ties: the first key, the lower layer, the
    head average before single heads, then the lower head.

    Returns
    -------
    dict with ``method``, ``threshold``, ``layer``, ``head`` (None: the head average) and ``aer``.
    """
    best: dict | None = None
    for (method, threshold), grid in grids.items():
        n_heads = grid.shape[1] - 1
        for li in range(grid.shape[0]):
            for col in [n_heads, *range(n_heads)]:
                value = float(grid[li, col])
                if best is None or value < best["aer"] - 1e-12:
                    best = {"method": method, "threshold": threshold, "layer": li,
                            "head": None if col == n_heads else col, "aer": value}
    if best is None:
        raise InputError("no AER grids given")
    return best


# -- bundled models ---------------------------------------------------------------------------
def bundled_alignment_info(folder: str | os.PathLike) -> dict:
    """The ``alignment.json`` of a bundled translator folder.

    Returns
    -------
    dict with ``best_layer`` (int), ``best_head`` (int or None), ``aer_by_layer`` (list of float),
    ``exact_match`` (float) and any further keys the file has; an empty dict when the folder has
    no ``alignment.json`` (e.g. a user's own model).

    Raises
    ------
    ModelLoadError
        When the file exists but is not valid JSON or lacks an integer ``best_layer``.
    """
    path = Path(folder) / ALIGNMENT_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot read {path}: {exc}; retrain the model or restore the file"
        ) from exc
    best = info.get("best_layer") if isinstance(info, dict) else None
    if not isinstance(best, int) or isinstance(best, bool):
        raise ModelLoadError(
            f"{path} has no integer 'best_layer'; retrain the model or restore the file"
        )
    head = info.get("best_head")
    if head is not None and (not isinstance(head, int) or isinstance(head, bool)):
        raise ModelLoadError(
            f"{path} has a non-integer 'best_head'; retrain the model or restore the file"
        )
    return info
