"""Per-head attention statistics, pattern tags and their CSV export.

Shapes follow :mod:`analysis.result`: a stack is ``[L, H, Q, K]`` (layer, head, query, key).
Every statistic is computed for one head's map ``α`` (``[Q, K]``, rows = query positions ``i``,
columns = key positions ``j``) and averaged over the query rows, giving one ``[L, H]`` array per
statistic:

===================  ==========================================================================
``entropy``          mean_i −Σ_j α_ij ln α_ij  (natural log, 0·ln 0 = 0)
``mean_distance``    mean_i Σ_j α_ij |i − j|  (in tokens)
``to_first``         mean_i α_i0  (attention to the first key token)
``to_previous``      mean over i ≥ 1 of α_i,i−1
``to_self``          mean_i α_ii
``to_next``          mean over i ≤ Q−2 of α_i,i+1
``max_weight``       mean_i max_j α_ij  ("confidence", Voita et al. 2019)
``to_special``       mean_i Σ_{j special} α_ij  (special key tokens: [CLS], </s>, …)
``to_punctuation``   mean_i Σ_{j punctuation} α_ij  (see :func:`is_punctuation`)
===================  ==========================================================================

Cross-attention (``cross_attentions``: queries are decoder positions, keys are source tokens) has
no shared position axis, so the four *positional* statistics ``mean_distance``, ``to_previous``,
``to_self`` and ``to_next`` are undefined there and are NaN (empty cells in the CSV). ``entropy``,
``max_weight``, ``to_first`` (the first *source* token), ``to_special`` and ``to_punctuation`` are
defined for every stack. Statistics that need at least two positions (``to_previous``,
``to_next``) are NaN for a one-token sequence.

Causal (decoder) stacks use the same plain definitions over all rows; row ``i`` can only see keys
``0..i``, which :func:`head_tags` accounts for when it normalises the entropy.

Everything here is pure numpy and never modifies its inputs.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write_text
from .result import SELF_STACKS, Capture
from .store import is_stored
from .tasks import TaskState, as_task

#: the statistics, in CSV column order
STAT_NAMES = (
    "entropy",
    "mean_distance",
    "to_first",
    "to_previous",
    "to_self",
    "to_next",
    "max_weight",
    "to_special",
    "to_punctuation",
)
#: statistics that need queries and keys on one position axis (NaN for cross-attention)
POSITIONAL_STATS = ("mean_distance", "to_previous", "to_self", "to_next")
#: the CSV header written by :func:`write_stats_csv`
CSV_COLUMNS = ("stack", "layer", "head", *STAT_NAMES, "tags")

# -- pattern tags ------------------------------------------------------------------------------
# Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention" (BlackboxNLP),
# sec. 3: they single out heads that put most of their attention on the previous / next token,
# on [SEP] / [CLS], on periods and commas, and "broad" heads whose attention entropy is high.
# "Most" is made concrete here as at least half of the attention mass averaged over the rows.

#: ``to_previous`` ≥ this → ``previous-token`` (Clark et al. 2019, positional heads)
PREVIOUS_THRESHOLD = 0.5
#: ``to_next`` ≥ this → ``next-token`` (Clark et al. 2019, positional heads)
NEXT_THRESHOLD = 0.5
#: ``to_self`` ≥ this → ``self``
SELF_THRESHOLD = 0.5
#: ``to_first`` ≥ this → ``first-token``: an attention sink (Xiao et al. 2023, "Efficient
#: Streaming Language Models with Attention Sinks") or a [CLS]-attending head (Clark et al. 2019)
FIRST_THRESHOLD = 0.5
#: ``to_special`` ≥ this → ``special``: heads that park attention on [SEP]/[CLS]/</s>, which
#: Clark et al. 2019 read as a "no-op"
SPECIAL_THRESHOLD = 0.5
#: ``to_punctuation`` ≥ this → ``punctuation`` (Clark et al. 2019: heads attending to . and ,)
PUNCTUATION_THRESHOLD = 0.5
#: normalised entropy ≥ this → ``broad`` (Clark et al. 2019, sec. 3.3 "broad attention"): the
#: head's mean row entropy is at least 90 % of the mean entropy of uniform attention over the
#: keys each row can see (``ln K``; ``ln(i+1)`` for row ``i`` of a causal stack)
BROAD_THRESHOLD = 0.9

#: all tags, in the order :func:`head_tags` lists them
TAG_NAMES = (
    "previous-token",
    "next-token",
    "self",
    "first-token",
    "special",
    "punctuation",
    "broad",
)
_TAG_RULES = (
    ("previous-token", "to_previous", PREVIOUS_THRESHOLD),
    ("next-token", "to_next", NEXT_THRESHOLD),
    ("self", "to_self", SELF_THRESHOLD),
    ("first-token", "to_first", FIRST_THRESHOLD),
    ("special", "to_special", SPECIAL_THRESHOLD),
    ("punctuation", "to_punctuation", PUNCTUATION_THRESHOLD),
)


# -- tokens ------------------------------------------------------------------------------------
def is_punctuation(display: str) -> bool:
    """True when a token is punctuation: after stripping surrounding whitespace the display
    string is non-empty and every character is in a Unicode punctuation category (``P*``)."""
    text = display.strip()
    return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def punctuation_mask(displays: Sequence[str]) -> np.ndarray:
    """bool ``[N]``: :func:`is_punctuation` of each display string."""
    return np.array([is_punctuation(d) for d in displays], dtype=bool)


# -- statistics --------------------------------------------------------------------------------
def _key_mask(mask: np.ndarray | None, n_keys: int, what: str) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != (n_keys,):
        raise ValueError(f"{what} must be a bool array of shape ({n_keys},); got {m.shape}")
    return m


def head_stats(
    att: np.ndarray,
    *,
    self_attention: bool = True,
    key_special: np.ndarray | None = None,
    key_punct: np.ndarray | None = None,
    task: TaskState | None = None,
) -> dict[str, np.ndarray]:
    """Per-head statistics of one attention stack.

    Parameters
    ----------
    att : ``[L, H, Q, K]`` attention weights (any float dtype; computed in float64)
    self_attention : True when queries and keys are the same sequence (then ``Q == K`` is
        required); False for cross-attention, where the positional statistics are NaN
    key_special : bool ``[K]``, True for special key tokens; ``None`` → ``to_special`` is NaN
    key_punct : bool ``[K]``, True for punctuation key tokens; ``None`` → ``to_punctuation``
        is NaN
    task : progress (stage ``stats``, one report per layer) and cancel, checked before every
        layer (:class:`analysis.tasks.TaskState`; raises :class:`~analysis.errors.Cancelled`)

    Returns
    -------
    dict mapping each name of :data:`STAT_NAMES` to a new float64 ``[L, H]`` array.
    """
    arr = att if is_stored(att) else np.asarray(att)
    if arr.ndim != 4:
        raise ValueError(f"an attention stack must be [layer, head, query, key]; got {arr.shape}")
    n_layers, n_heads, n_q, n_k = arr.shape
    if self_attention and n_q != n_k:
        raise ValueError(
            f"self-attention needs as many queries as keys; got Q={n_q}, K={n_k} "
            "(pass self_attention=False for cross-attention)"
        )
    special = _key_mask(key_special, n_k, "key_special")
    punct = _key_mask(key_punct, n_k, "key_punct")
    out = {name: np.full((n_layers, n_heads), np.nan) for name in STAT_NAMES}
    if n_q == 0 or n_k == 0:
        return out

    task = as_task(task)
    if is_stored(arr):
        _stored_stats(arr, out, self_attention, special, punct, task)
        return out
    rows = np.arange(n_q)
    distance = np.abs(rows[:, None] - np.arange(n_k)[None, :]).astype(np.float64)
    # one layer at a time keeps the float64 working copy small for long inputs
    for layer in range(n_layers):
        task.step("stats", layer / n_layers, f"head statistics: layer {layer + 1} of {n_layers}")
        a = np.asarray(arr[layer], dtype=np.float64)  # [H, Q, K]
        logs = np.zeros_like(a)
        np.log(a, out=logs, where=a > 0)
        out["entropy"][layer] = -(a * logs).sum(-1).mean(-1)
        out["to_first"][layer] = a[:, :, 0].mean(-1)
        out["max_weight"][layer] = a.max(-1).mean(-1)
        if special is not None:
            out["to_special"][layer] = a[:, :, special].sum(-1).mean(-1)
        if punct is not None:
            out["to_punctuation"][layer] = a[:, :, punct].sum(-1).mean(-1)
        if self_attention:
            out["mean_distance"][layer] = (a * distance).sum(-1).mean(-1)
            out["to_self"][layer] = np.diagonal(a, 0, 1, 2).mean(-1)
            if n_q >= 2:
                # diagonal(offset=-1) holds α[i+1, i]; offset=+1 holds α[i, i+1]
                out["to_previous"][layer] = np.diagonal(a, -1, 1, 2).mean(-1)
                out["to_next"][layer] = np.diagonal(a, 1, 1, 2).mean(-1)
    return out


#: a stored (long) stack's statistics are computed on blocks of rows of at most this many cells
STATS_BLOCK_CELLS = 1 << 21


def _stored_stats(arr, out: dict[str, np.ndarray], self_attention: bool, special: np.ndarray | None,
                  punct: np.ndarray | None, task: TaskState) -> None:
    """:func:`head_stats` of a long capture's stored stack, into ``out``: every map read once, a
    block of rows of every head at a time (float64 sums over the rows, divided at the end), so no
    layer is ever held whole."""
    n_layers, n_heads, n_q, n_k = arr.shape
    step = max(1, STATS_BLOCK_CELLS // max(1, n_heads * n_k))
    cols = np.arange(n_k)
    names = ("entropy", "to_first", "max_weight", "to_special", "to_punctuation", "mean_distance", "to_self",
             "to_previous", "to_next")
    for layer in range(n_layers):
        task.step("stats", layer / n_layers, f"head statistics: layer {layer + 1} of {n_layers}")
        sums = {name: np.zeros(n_heads) for name in names}
        for r0 in range(0, n_q, step):
            task.check()
            a = np.asarray(arr[layer, :, r0:r0 + step], dtype=np.float64)  # [H, r, K]
            rows = np.arange(r0, r0 + a.shape[1])
            logs = np.zeros_like(a)
            np.log(a, out=logs, where=a > 0)
            sums["entropy"] += -(a * logs).sum(-1).sum(-1)
            del logs
            sums["to_first"] += a[:, :, 0].sum(-1)
            sums["max_weight"] += a.max(-1).sum(-1)
            if special is not None:
                sums["to_special"] += a[:, :, special].sum(-1).sum(-1)
            if punct is not None:
                sums["to_punctuation"] += a[:, :, punct].sum(-1).sum(-1)
            if self_attention:
                local = np.arange(a.shape[1])
                sums["mean_distance"] += (a * np.abs(rows[:, None] - cols[None, :])).sum(-1).sum(-1)
                sums["to_self"] += a[:, local, rows].sum(-1)
                prev = rows >= 1
                sums["to_previous"] += a[:, local[prev], rows[prev] - 1].sum(-1)
                nxt = rows <= n_q - 2
                sums["to_next"] += a[:, local[nxt], rows[nxt] + 1].sum(-1)
        for name in ("entropy", "to_first", "max_weight"):
            out[name][layer] = sums[name] / n_q
        for name, mask in (("to_special", special), ("to_punctuation", punct)):
            if mask is not None:
                out[name][layer] = sums[name] / n_q
        if self_attention:
            out["mean_distance"][layer] = sums["mean_distance"] / n_q
            out["to_self"][layer] = sums["to_self"] / n_q
            if n_q >= 2:
                out["to_previous"][layer] = sums["to_previous"] / (n_q - 1)
                out["to_next"][layer] = sums["to_next"] / (n_q - 1)


def capture_stats(
    capture: Capture, *, task: TaskState | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`head_stats` of every stack of a capture.

    Parameters
    ----------
    capture : the capture
    task : progress (stage ``stats``: one report per stack and per layer) and cancel, checked
        before every layer (:class:`analysis.tasks.TaskState`; raises
        :class:`~analysis.errors.Cancelled`)

    Returns
    -------
    stack name (npz names, in :data:`analysis.result.STACK_NAMES` order) → statistic name →
    float64 ``[L, H]``. Special/punctuation masks come from each stack's key tokens;
    ``cross_attentions`` is treated as cross-attention (positional statistics NaN).
    """
    task = as_task(task)
    names = capture.stack_names
    result: dict[str, dict[str, np.ndarray]] = {}
    for i, name in enumerate(names):
        task.step("stats", i / len(names), f"head statistics of {name}…")
        keys = capture.key_tokens(name)
        result[name] = head_stats(
            capture.stacks[name],
            self_attention=name in SELF_STACKS,
            key_special=keys.special,
            key_punct=punctuation_mask(keys.display),
            task=task.sub(i / len(names), (i + 1) / len(names)),
        )
    return result


# -- tags --------------------------------------------------------------------------------------
def max_entropy(n_keys: int, *, causal: bool) -> float:
    """Mean over rows of the entropy of uniform attention over the keys a row can see.

    ``ln(n_keys)`` for full attention; ``mean_{i=0..n_keys-1} ln(i + 1)`` for a causal stack
    (``Q == K == n_keys``). 0 for ``n_keys <= 1``.
    """
    if n_keys <= 1:
        return 0.0
    if causal:
        return float(np.log(np.arange(1, n_keys + 1, dtype=np.float64)).mean())
    return float(np.log(n_keys))


def normalized_entropy(entropy: np.ndarray, *, causal: bool, n_keys: int) -> np.ndarray:
    """``entropy / max_entropy(n_keys, causal=causal)`` (float64, same shape); NaN when the
    maximum is 0 (one key: every head is trivially certain)."""
    top = max_entropy(n_keys, causal=causal)
    ent = np.asarray(entropy, dtype=np.float64)
    if top <= 0.0:
        return np.full(ent.shape, np.nan)
    return ent / top


def head_tags(
    stats: dict[str, np.ndarray], *, causal: bool, n_keys: int
) -> list[list[tuple[str, ...]]]:
    """Pattern tags of every head.

    Parameters
    ----------
    stats : :func:`head_stats` output for one stack (each ``[L, H]``)
    causal : whether the stack is causally masked (changes the uniform-entropy reference)
    n_keys : ``K``, the length of the key axis

    Returns
    -------
    ``tags[layer][head]``: a tuple of tag names in :data:`TAG_NAMES` order, empty when the head
    matches no pattern. A head can carry several tags. NaN statistics never match (so
    cross-attention heads get no positional tags). Thresholds: the ``*_THRESHOLD`` constants.
    """
    entropy = np.asarray(stats["entropy"], dtype=np.float64)
    n_layers, n_heads = entropy.shape
    with np.errstate(invalid="ignore"):
        hits = {
            tag: np.asarray(stats[stat], dtype=np.float64) >= threshold
            for tag, stat, threshold in _TAG_RULES
        }
        hits["broad"] = normalized_entropy(entropy, causal=causal, n_keys=n_keys) >= BROAD_THRESHOLD
    return [
        [tuple(tag for tag in TAG_NAMES if hits[tag][layer, head]) for head in range(n_heads)]
        for layer in range(n_layers)
    ]


# -- rows and CSV ------------------------------------------------------------------------------
def _cell(value: float) -> float | None:
    v = float(value)
    return None if np.isnan(v) else v


def stats_rows(capture: Capture, *, task: TaskState | None = None) -> list[dict[str, Any]]:
    """One row per stack, layer and head (in that order).

    Parameters
    ----------
    capture : the capture
    task : progress (stage ``stats``) and cancel, checked before every stack and layer
        (:class:`analysis.tasks.TaskState`; raises :class:`~analysis.errors.Cancelled`)

    Returns
    -------
    dicts with the keys of :data:`CSV_COLUMNS`: ``stack`` (npz name), ``layer`` and ``head``
    (0-based ints), one float per statistic (``None`` where undefined) and ``tags`` (the head's
    tags joined with ``;``, ``""`` for none).
    """
    task = as_task(task)
    rows: list[dict[str, Any]] = []
    for name, stats in capture_stats(capture, task=task.sub(0.0, 0.95)).items():
        task.check()
        n_keys = capture.shape(name)[3]
        tags = head_tags(stats, causal=capture.is_causal(name), n_keys=n_keys)
        n_layers, n_heads = stats["entropy"].shape
        for layer in range(n_layers):
            for head in range(n_heads):
                row: dict[str, Any] = {"stack": name, "layer": layer, "head": head}
                for stat in STAT_NAMES:
                    row[stat] = _cell(stats[stat][layer, head])
                row["tags"] = ";".join(tags[layer][head])
                rows.append(row)
    return rows


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else repr(value)
    return str(value)


def stats_csv_text(capture: Capture) -> str:
    """The CSV text :func:`write_stats_csv` writes (header :data:`CSV_COLUMNS`; undefined
    statistics are empty cells; floats are written with ``repr`` so they read back exactly)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in stats_rows(capture):
        writer.writerow([_csv_value(row[col]) for col in CSV_COLUMNS])
    return buf.getvalue()


def write_stats_csv(capture: Capture, path: str | os.PathLike) -> Path:
    """Write the per-head statistics of every stack of ``capture`` to ``path`` atomically.

    Returns the path written. Raises :class:`analysis.errors.ExportError` when the file cannot
    be written.
    """
    return atomic_write_text(path, stats_csv_text(capture))
