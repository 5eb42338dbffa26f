"""The mask effects lab: what the padding mask and a token mask change, as arrays and numbers.

Two experiments, both pure functions of a loaded model (no Qt; the window draws the figures):

* :func:`padding_experiment` – the user's sentence is batched with a second, *longer* sentence and
  padded. It runs three times: alone (batch of one, no padding – the reference), batched *with* the
  attention mask and batched *without* it (an all-ones mask: the model sees the pads as real tokens).
  With the mask, every real query row is exactly renormalised over the real keys, so the sentence's
  attention and outputs match the unbatched run up to float32 noise (~1e-7); without it they do not.
* :func:`token_masking` – hide chosen tokens of one sentence (``attention_mask`` 0 there) and report
  how every other token's attention and the model's output change.

Shapes follow :mod:`analysis.result`: a stack is ``[L, H, Q, K]`` (layer, head, query, key). In the
padding experiment ``S`` is the sentence's own length (its real tokens) and ``Sb`` the padded batch
length; ``T`` is the number of seq2seq decoder positions.

Choices worth knowing (they are what the numbers mean):

* **Padding side** – right for encoders and seq2seq, left for decoders (what ``generate`` needs),
  unless ``padding_side`` says otherwise. The batch is padded here, not by the tokenizer, so the
  tokenizer's own ``padding_side`` is never changed.
* **Pad token** – the tokenizer's pad token; decoders that have none (GPT-2, Llama) pad with their
  EOS token, as ``generate`` does. Pads are found from the attention mask, never from their id.
* **Positions with left padding** – in the masked run the position ids follow the mask,
  ``(attention_mask.cumsum(-1) - 1).clamp(min=0)`` as ``generate`` does, so each real token keeps the
  position it has alone. They are passed only to models whose ``forward`` takes ``position_ids`` and
  that do not derive positions from the pad ids themselves (RoBERTa does). Right padding needs nothing:
  real tokens keep positions ``0..S-1``. Seq2seq models take no position ids; with left padding their
  absolute positions shift (relative ones, T5, do not) and the report's ``notes`` say so.
  (Rotary models such as Llama would match even without them – RoPE scores depend only on the
  distance between tokens, which a uniform shift keeps – but GPT-2 and BERT would not.)
* **Without the mask** – an all-ones mask and the model's default positions: exactly what a model
  sees when the mask is forgotten. (For a decoder padded on the right the causal mask alone already
  hides the trailing pads from every real token, so there the unmasked run also matches.)
* **Seq2seq** – the encoder batch is padded; both rows get the same teacher-forced decoder input (the
  ``target``, or the greedy translation of the sentence alone). The encoder padding mask also removes
  the pads from cross-attention: ``cross_pad_attention_max`` is 0.0 with the mask.
* **Fully masked query rows** (a left pad in a decoder, or tokens before the first visible one in
  :func:`token_masking`) see no key at all; transformers then spreads them evenly over every key. Such
  rows carry no information and are left out of every number here.
"""

from __future__ import annotations

import inspect
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .capture import (
    encode,
    generation_length,
    prediction_for,
    seq2seq_target,
    stack_attentions,
    to_device,
    token_limit,
)
from .errors import CaptureError, InputError, a_or_an
from .fileio import atomic_write_text
from .loader import LoadedModel
from .result import Kind, Prediction, TokenSeq
from .tasks import TaskState, as_task
from .tokens import TokenizerStyle, display_strings, special_flags, token_seq, tokenizer_style

#: the second sentence when none is given (repeated when the user's sentence is longer)
DEFAULT_PAIR = "The students in this course are reading a long and interesting book about attention in transformers."
PADDING_SIDES = ("left", "right")
#: stacks whose query axis is the (padded) source sequence
_SOURCE_QUERY = ("attentions", "encoder_attentions")
#: stacks whose key axis is the (padded) source sequence
_SOURCE_KEY = ("attentions", "encoder_attentions", "cross_attentions")
_SEQ2SEQ_STACKS = ("encoder_attentions", "decoder_attentions", "cross_attentions")


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _frozen_map(d: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    return MappingProxyType({k: _frozen(v) for k, v in d.items()})


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaddingReport:
    """What padding does to one sentence, with and without the attention mask. Immutable.

    Attributes
    ----------
    model, kind, text, pair : the model reference, its kind, the sentence and the longer sentence
    padding_side : ``left`` | ``right``
    pad_token, pad_token_id : the token used as padding (EOS for decoders without a pad token)
    row : batch row of the sentence (0; the pair is row 1)
    tokens : display strings of the sentence's row in the batch, pads included, ``[Sb]``
    pair_tokens : display strings of the pair's row, ``[Sb]``
    pad_positions, real_positions : indices into ``tokens`` (the pads / the sentence's own tokens)
    attention_mask : int64 ``[2, Sb]``, the mask of the masked run (row 0: the sentence)
    position_ids : int64 ``[2, Sb]`` passed in the masked run, or None when the model's own were used
    target : seq2seq: the teacher-forced target text (typed or generated), else None
    decoder_tokens : seq2seq: display strings of the decoder inputs ``[T]``, else ()
    alone : stack → float32 ``[L, H, Q, K]`` of the sentence run alone (``Q``, ``K`` ∈ {S, T})
    masked, unmasked : stack → float32 ``[L, H, Q, K]`` of the sentence's batch row
        (``Sb`` on source axes)
    delta_masked, delta_unmasked : stack → float32, batch − alone on the real query and key
        positions (same shape as ``alone``)
    pad_attention_max : largest weight any real query row gives a pad column with the mask, over all
        self-attention stacks (0.0 exactly for eager attention)
    unmasked_pad_attention_mass : mean over layers, heads and real query rows of the total weight on
        pad columns without the mask – how much attention leaks to pads
    masked_attention_max_abs_diff, unmasked_attention_max_abs_diff : max |batch − alone| over every
        stack, layer, head and real query/key position
    masked_output_max_abs_diff, unmasked_output_max_abs_diff : max |batch − alone| of the last hidden
        states of the real tokens (seq2seq: encoder's and decoder's, the larger)
    output_scale : the largest |value| of those hidden states alone – float32 noise in the masked
        Δ grows with it (a large model's ~1e-5 is still ~1e-7 relative)
    cross_pad_attention_max : seq2seq: largest cross-attention weight on a pad column with the mask
    stack_diffs : stack → ``{"masked": …, "unmasked": …}`` attention max |Δ| per stack
    output_diffs : output name → ``{"masked": …, "unmasked": …}`` (``last_hidden_state``;
        seq2seq: ``encoder_last_hidden_state`` and ``decoder_last_hidden_state``)
    prediction_task : ``next_token`` | ``translation`` | ``classification`` | ``masked_lm`` | ``none``
    prediction_alone, prediction_masked, prediction_unmasked : argmax labels – the next token
        (decoder), one token per decoder step (seq2seq), the label (classifier) or one token per real
        position (masked LM); () without a head
    prediction_changed_masked, prediction_changed_unmasked : argmax ids differ from alone (None
        without a head)
    masked_logits_max_abs_diff, unmasked_logits_max_abs_diff : max |Δ logits| on the real positions
        (None without a head)
    notes : human-readable remarks (pad token choice, position handling)
    """

    model: str
    kind: Kind
    text: str
    pair: str
    padding_side: str
    pad_token: str
    pad_token_id: int
    row: int
    tokens: tuple[str, ...]
    pair_tokens: tuple[str, ...]
    pad_positions: tuple[int, ...]
    real_positions: tuple[int, ...]
    attention_mask: np.ndarray
    position_ids: np.ndarray | None
    target: str | None
    decoder_tokens: tuple[str, ...]
    alone: Mapping[str, np.ndarray]
    masked: Mapping[str, np.ndarray]
    unmasked: Mapping[str, np.ndarray]
    delta_masked: Mapping[str, np.ndarray]
    delta_unmasked: Mapping[str, np.ndarray]
    pad_attention_max: float
    unmasked_pad_attention_mass: float
    masked_attention_max_abs_diff: float
    unmasked_attention_max_abs_diff: float
    masked_output_max_abs_diff: float
    unmasked_output_max_abs_diff: float
    cross_pad_attention_max: float | None
    output_scale: float
    stack_diffs: Mapping[str, Mapping[str, float]]
    output_diffs: Mapping[str, Mapping[str, float]]
    prediction_task: str = "none"
    prediction_alone: tuple[str, ...] = ()
    prediction_masked: tuple[str, ...] = ()
    prediction_unmasked: tuple[str, ...] = ()
    prediction_changed_masked: bool | None = None
    prediction_changed_unmasked: bool | None = None
    masked_logits_max_abs_diff: float | None = None
    unmasked_logits_max_abs_diff: float | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("alone", "masked", "unmasked", "delta_masked", "delta_unmasked"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))
        object.__setattr__(
            self, "attention_mask", _frozen(np.asarray(self.attention_mask, dtype=np.int64))
        )
        if self.position_ids is not None:
            object.__setattr__(
                self, "position_ids", _frozen(np.asarray(self.position_ids, dtype=np.int64))
            )
        for name in ("stack_diffs", "output_diffs"):
            d = getattr(self, name)
            object.__setattr__(
                self, name, MappingProxyType({k: MappingProxyType(dict(v)) for k, v in d.items()})
            )

    @property
    def stack_names(self) -> tuple[str, ...]:
        return tuple(self.alone)

    def to_json(self) -> dict[str, Any]:
        """The numbers as a JSON-ready dict (what ``--mask-report`` writes)."""
        return {
            "model": self.model,
            "kind": self.kind,
            "text": self.text,
            "pair": self.pair,
            "padding_side": self.padding_side,
            "pad_token": self.pad_token,
            "tokens": list(self.tokens),
            "pad_positions": list(self.pad_positions),
            "real_positions": list(self.real_positions),
            "position_ids_passed": self.position_ids is not None,
            "target": self.target,
            "pad_attention_max": self.pad_attention_max,
            "unmasked_pad_attention_mass": self.unmasked_pad_attention_mass,
            "masked_attention_max_abs_diff": self.masked_attention_max_abs_diff,
            "unmasked_attention_max_abs_diff": self.unmasked_attention_max_abs_diff,
            "masked_output_max_abs_diff": self.masked_output_max_abs_diff,
            "unmasked_output_max_abs_diff": self.unmasked_output_max_abs_diff,
            "cross_pad_attention_max": self.cross_pad_attention_max,
            "output_scale": self.output_scale,
            "stacks": {k: dict(v) for k, v in self.stack_diffs.items()},
            "outputs": {k: dict(v) for k, v in self.output_diffs.items()},
            "prediction_task": self.prediction_task,
            "prediction_alone": list(self.prediction_alone),
            "prediction_masked": list(self.prediction_masked),
            "prediction_unmasked": list(self.prediction_unmasked),
            "prediction_changed_masked": self.prediction_changed_masked,
            "prediction_changed_unmasked": self.prediction_changed_unmasked,
            "masked_logits_max_abs_diff": self.masked_logits_max_abs_diff,
            "unmasked_logits_max_abs_diff": self.unmasked_logits_max_abs_diff,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class MaskingReport:
    """What hiding some tokens of one sentence changes. Immutable.

    Attributes
    ----------
    model, kind, text : the model reference, its kind and the sentence (as run, after truncation)
    tokens : display strings of the sentence ``[S]``
    masked_positions : the hidden token indices (sorted, unique)
    attention_mask : int64 ``[S]`` of the masked run (0 at ``masked_positions``)
    blind_rows : stack → query rows that see no key in the masked run (their maps are meaningless:
        transformers spreads them evenly; decoder rows before the first visible token)
    target : seq2seq: the teacher-forced decoder target (typed, or the translation of the full
        sentence), shared by both runs so the maps compare; else None
    decoder_tokens : seq2seq decoder input display strings ``[T]``, else ()
    baseline, masked : stack → float32 ``[L, H, Q, K]``, without / with the token mask
    delta : stack → float32 ``masked − baseline`` on all positions
    masked_column_max : largest weight on a masked key column in the masked run, over every stack with
        source keys and every query row that sees a key (0.0 exactly for eager attention)
    prediction_before, prediction_after : the post-processed output of both runs
        (:class:`analysis.result.Prediction`: decoder next-token top-5, masked-LM top-5 at ``[MASK]``
        positions, classifier labels, seq2seq teacher-forced steps)
    top5_before, top5_after : decoder: next-token top-5 ``(label, probability)``; else ()
    translation_before, translation_after : seq2seq greedy translations without / with the encoder
        mask; else ""
    hidden_positions : the unmasked token indices the distances are measured on ``[U]``
    hidden_l2 : float32 ``[U]``, L2 distance of each unmasked token's last hidden state
        (seq2seq: encoder's) between the runs
    hidden_cosine_distance : float32 ``[U]``, 1 − cosine similarity of the same vectors
    mean_hidden_l2, mean_hidden_cosine_distance : their means
    notes : human-readable remarks
    """

    model: str
    kind: Kind
    text: str
    tokens: tuple[str, ...]
    masked_positions: tuple[int, ...]
    attention_mask: np.ndarray
    blind_rows: Mapping[str, tuple[int, ...]]
    target: str | None
    decoder_tokens: tuple[str, ...]
    baseline: Mapping[str, np.ndarray]
    masked: Mapping[str, np.ndarray]
    delta: Mapping[str, np.ndarray]
    masked_column_max: float
    prediction_before: Prediction = field(default_factory=Prediction)
    prediction_after: Prediction = field(default_factory=Prediction)
    top5_before: tuple[tuple[str, float], ...] = ()
    top5_after: tuple[tuple[str, float], ...] = ()
    translation_before: str = ""
    translation_after: str = ""
    hidden_positions: tuple[int, ...] = ()
    hidden_l2: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    hidden_cosine_distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    mean_hidden_l2: float = 0.0
    mean_hidden_cosine_distance: float = 0.0
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("baseline", "masked", "delta"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))
        object.__setattr__(
            self, "attention_mask", _frozen(np.asarray(self.attention_mask, dtype=np.int64))
        )
        object.__setattr__(self, "blind_rows", MappingProxyType(dict(self.blind_rows)))
        for name in ("hidden_l2", "hidden_cosine_distance"):
            object.__setattr__(
                self, name, _frozen(np.asarray(getattr(self, name), dtype=np.float32))
            )

    @property
    def stack_names(self) -> tuple[str, ...]:
        return tuple(self.baseline)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False


def _positions_from_pad_ids(model) -> bool:
    """True for models (RoBERTa family) whose embeddings derive positions from the pad ids."""
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    return emb is not None and hasattr(emb, "create_position_ids_from_input_ids")


def _pad_token(lm: LoadedModel) -> tuple[int, str, str | None]:
    """(pad id, its token string, a note or None). Decoders without a pad token pad with EOS."""
    tok = lm.tokenizer
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id), str(tok.pad_token), None
    if tok.eos_token_id is not None:
        note = f"this tokenizer has no pad token, so the batch is padded with its EOS token {tok.eos_token!r}, as generate does"
        return int(tok.eos_token_id), str(tok.eos_token), note
    cfg = getattr(lm.config, "pad_token_id", None)
    pid = int(cfg) if cfg is not None else 0
    raw = tok.convert_ids_to_tokens([pid])[0] or str(pid)
    return (
        pid,
        raw,
        f"this tokenizer has neither a pad nor an EOS token; the batch is padded with id {pid} ({raw!r})",
    )


def _ids(lm: LoadedModel, text: str, what: str, limit: int) -> list[int]:
    if text is None or not str(text).strip():
        raise InputError(f"the {what} is empty; type a sentence")
    ids = list(lm.tokenizer(str(text), add_special_tokens=True)["input_ids"])
    if len(ids) > limit:
        raise InputError(
            f"the {what} has {len(ids)} tokens but this model takes at most {limit}; use a shorter sentence"
        )
    if not ids:
        raise InputError(f"the {what} gives no tokens; type a sentence")
    return ids


def _row_stacks(out, names: Sequence[str], lm: LoadedModel, row: int) -> dict[str, np.ndarray]:
    expected = {s.name: (s.layers, s.heads) for s in lm.summary.stacks}
    arch = lm.summary.architecture
    return {
        n: stack_attentions(
            getattr(out, n, None), n, arch, expected.get(n), np.float32, batch_index=row
        )
        for n in names
    }


def _hidden(out, kind: str, row: int) -> dict[str, np.ndarray]:
    """Last hidden states of batch row ``row`` as float32 ``[N, D]``, by output name."""
    import torch

    def f(t) -> np.ndarray:
        return t[row].detach().to("cpu", torch.float32).numpy()

    if kind == "seq2seq":
        dec = getattr(out, "decoder_hidden_states", None)
        if not dec:
            raise CaptureError(
                "this seq2seq model returned no decoder hidden states; it cannot be compared"
            )
        return {
            "encoder_last_hidden_state": f(out.encoder_last_hidden_state),
            "decoder_last_hidden_state": f(dec[-1]),
        }
    hs = getattr(out, "hidden_states", None)
    if hs:
        return {"last_hidden_state": f(hs[-1])}
    last = getattr(out, "last_hidden_state", None)
    if last is None:
        raise CaptureError("this model returned no hidden states; it cannot be compared")
    return {"last_hidden_state": f(last)}


def _logits(out, row: int) -> np.ndarray | None:
    import torch

    lg = getattr(out, "logits", None)
    return None if lg is None else lg[row].detach().to("cpu", torch.float32).numpy()


_STYLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _style(tokenizer) -> TokenizerStyle:
    """The tokenizer's spelling, inspected once (parsing a large tokenizer.json takes a while)."""
    try:
        return _STYLES[tokenizer]
    except (KeyError, TypeError):
        style = tokenizer_style(tokenizer)
    try:
        _STYLES[tokenizer] = style
    except TypeError:  # pragma: no cover - not weak-referenceable
        pass
    return style


def _labels(lm: LoadedModel, ids: Sequence[int]) -> tuple[str, ...]:
    """Display strings of ``ids`` (special tokens as written, e.g. ``[PAD]``)."""
    ids = [int(i) for i in ids]
    if not ids:
        return ()
    raw = [r if r is not None else "<?>" for r in lm.tokenizer.convert_ids_to_tokens(ids)]
    special = special_flags(lm.tokenizer, ids)
    return tuple(display_strings(raw, list(special), _style(lm.tokenizer)))


def _max(a: np.ndarray) -> float:
    return float(np.max(a)) if a.size else 0.0


def _max_abs(a: np.ndarray) -> float:
    return float(np.max(np.abs(a))) if a.size else 0.0


# --------------------------------------------------------------------------------------------
# the padding experiment
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PaddedPair:
    """The sentence alone and padded in a batch of two with the longer sentence."""

    ids: list[int]  # the sentence alone [S]
    other: str
    other_ids: list[int]  # the pair [Sb]
    row0: list[int]  # the sentence padded [Sb]
    mask0: list[int]  # its attention mask [Sb]
    real: np.ndarray  # int64 positions of the sentence's own tokens in row0
    pads: np.ndarray  # int64 positions of the pads in row0
    pad_id: int
    pad_tok: str


@dataclass(frozen=True)
class _PaddingRuns:
    """The three forward passes of the padding experiment and what they were run with."""

    alone: Any
    masked: Any
    unmasked: Any
    names: tuple[str, ...]
    mask: Any  # torch int64 [2, Sb], the masked run's attention mask
    position_ids: Any  # torch int64 [2, Sb] or None
    decoder_tokens: tuple[str, ...]
    target: str | None


def padding_experiment(
    lm: LoadedModel,
    text: str,
    other: str | None = None,
    padding_side: str | None = None,
    target: str | None = None,
    task: TaskState | None = None,
) -> PaddingReport:
    """Batch ``text`` with a longer sentence and compare its attention with and without the mask.

    Parameters
    ----------
    lm : a loaded model (:func:`analysis.loader.load_model`)
    text : the sentence under study (batch row 0)
    other : a second sentence with more tokens than ``text`` (batch row 1); default
        :data:`DEFAULT_PAIR` (repeated when ``text`` is longer)
    padding_side : ``left`` | ``right``; default right for encoders and seq2seq, left for decoders
    target : seq2seq only – the teacher-forced target; default: the greedy translation of ``text``
    task : progress (stage ``run``) and cancel, checked between the runs
        (:class:`analysis.tasks.TaskState`; raises :class:`~analysis.errors.Cancelled`)

    Returns
    -------
    PaddingReport with stacks ``[L, H, Q, K]`` for the sentence alone (``S`` tokens) and for its
    batch row (``Sb`` tokens) with and without the mask, the Δs on real positions and the numbers.

    Raises
    ------
    InputError : empty text, ``other`` not longer than ``text``, too many tokens, bad side, a target
        for a model that is not seq2seq.
    """
    padding_side = _padding_side(lm, padding_side, target)
    limit = token_limit(lm)
    notes: list[str] = []
    pair = _padded_pair(lm, text, other, padding_side, limit, notes)
    runs = _padding_runs(lm, pair, padding_side, target, limit, notes, as_task(task))
    return _padding_report(lm, text, padding_side, pair, runs, notes)


def _padding_side(lm: LoadedModel, padding_side: str | None, target: str | None) -> str:
    """The side to pad on (checked), default right for encoders and seq2seq, left for decoders."""
    if padding_side is None:
        padding_side = "left" if lm.kind == "decoder" else "right"
    if padding_side not in PADDING_SIDES:
        raise InputError(f"unknown padding side '{padding_side}'; choose left or right")
    _check_target(lm, target)
    return padding_side


def _check_target(lm: LoadedModel, target: str | None) -> None:
    if target is not None and lm.kind != "seq2seq":
        raise InputError(
            f"a target only applies to seq2seq models; this is {a_or_an(lm.kind)} model — drop the target"
        )


def _padded_pair(
    lm: LoadedModel, text: str, other: str | None, padding_side: str, limit: int, notes: list[str]
) -> _PaddedPair:
    """Tokenize both sentences and pad the sentence to the pair's length (a pad note to ``notes``)."""
    ids = _ids(lm, text, "sentence", limit)
    if other is None:
        other = DEFAULT_PAIR
        while (
            len(lm.tokenizer(other)["input_ids"]) <= len(ids)
            and len(other) < 20 * len(str(text)) + 1000
        ):
            other = other + " " + DEFAULT_PAIR
    other_ids = _ids(lm, other, "second sentence (--pair)", limit)
    if len(other_ids) <= len(ids):
        raise InputError(
            f"the second sentence has {len(other_ids)} tokens and the sentence {len(ids)}; the second one must be "
            "longer so that the sentence gets padded — give a longer second sentence"
        )
    pad_id, pad_tok, pad_note = _pad_token(lm)
    if pad_note:
        notes.append(pad_note)
    s, n_pad = len(ids), len(other_ids) - len(ids)
    if padding_side == "left":
        row0, mask0 = [pad_id] * n_pad + ids, [0] * n_pad + [1] * s
    else:
        row0, mask0 = ids + [pad_id] * n_pad, [1] * s + [0] * n_pad
    real = np.flatnonzero(np.array(mask0)).astype(np.int64)
    pads = np.flatnonzero(np.array(mask0) == 0).astype(np.int64)
    return _PaddedPair(ids, other, other_ids, row0, mask0, real, pads, pad_id, pad_tok)


def _masked_positions(lm: LoadedModel, mask, padding_side: str, notes: list[str]):
    """Position ids for the masked run (None: the model's own) and why (a note to ``notes``)."""
    model = lm.model
    position_ids = None
    if padding_side == "left":
        if _positions_from_pad_ids(model):
            notes.append(
                "this model derives its positions from the pad ids, so left padding keeps them by itself"
            )
        elif _accepts(model, "position_ids"):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            notes.append(
                "left padding: position ids follow the mask ((cumsum − 1), as generate does) in the masked run"
            )
        else:
            notes.append(
                "left padding: this model takes no position ids, so unless its positions are relative (T5) the "
                "sentence's positions shift and even the masked run differs from the run alone"
            )
    if lm.kind == "decoder" and padding_side == "right":
        notes.append(
            "right padding in a decoder: the causal mask alone hides the trailing pads from every real "
            "token, so the run without the padding mask matches too; predict from the last real token"
        )
    return position_ids


def _run_options(lm: LoadedModel) -> dict[str, Any]:
    """Keyword arguments of every forward pass here: attention maps and hidden states, no cache."""
    kw: dict[str, Any] = {"output_attentions": True, "output_hidden_states": True}
    if lm.kind != "encoder":
        kw["use_cache"] = False
    return kw


def _teacher_target(
    lm: LoadedModel,
    single: dict,
    target: str | None,
    limit: int,
    notes: list[str],
    task: TaskState,
    what: str,
) -> tuple[list[int], str, bool]:
    """Seq2seq: the decoder input ids of the typed ``target``, or of ``single``'s greedy translation.

    Returns (decoder input ids ``[T]``, the target text, whether it was generated).
    """
    task.step("run", 0.05, f"translating {what}…" if target is None else "preparing the target…")
    dec_ids, _out_ids, tgt_text, generated = seq2seq_target(
        lm, single, target, target is None, 0, 1, limit, notes
    )
    return dec_ids, (target if target is not None else tgt_text), generated


def _padding_runs(
    lm: LoadedModel,
    pair: _PaddedPair,
    padding_side: str,
    target: str | None,
    limit: int,
    notes: list[str],
    task: TaskState,
) -> _PaddingRuns:
    """Run the sentence alone, then the padded batch with and without the attention mask."""
    import torch

    dev, model = lm.device, lm.model
    batch_ids = torch.tensor([pair.row0, pair.other_ids], device=dev)
    mask = torch.tensor([pair.mask0, [1] * len(pair.other_ids)], device=dev)
    position_ids = _masked_positions(lm, mask, padding_side, notes)
    kw = _run_options(lm)
    alone_ids = torch.tensor([pair.ids], device=dev)
    with torch.inference_mode():
        extra, names, decoder_tokens, tgt_text = _padding_extras(
            lm, alone_ids, position_ids, target, limit, notes, task
        )
        task.step("run", 0.2, "running the sentence alone…")
        out_alone = model(
            input_ids=alone_ids, attention_mask=torch.ones_like(alone_ids), **extra[0], **kw
        )
        task.step("run", 0.45, "running the padded batch with the attention mask…")
        out_masked = model(input_ids=batch_ids, attention_mask=mask, **extra[1], **kw)
        task.step("run", 0.7, "running the padded batch without the mask…")
        out_unmasked = model(
            input_ids=batch_ids, attention_mask=torch.ones_like(mask), **extra[2], **kw
        )
    task.step("run", 0.9, "comparing…")
    return _PaddingRuns(
        out_alone, out_masked, out_unmasked, names, mask, position_ids, decoder_tokens, tgt_text
    )


def _padding_extras(
    lm: LoadedModel,
    alone_ids,
    position_ids,
    target: str | None,
    limit: int,
    notes: list[str],
    task: TaskState,
) -> tuple[tuple[dict, dict, dict], tuple[str, ...], tuple[str, ...], str | None]:
    """What the three runs get besides ids and mask (alone, masked, unmasked), the stack names,
    and for seq2seq the shared decoder input's tokens and its target text."""
    import torch

    if lm.kind != "seq2seq":
        masked = {"position_ids": position_ids} if position_ids is not None else {}
        return ({}, masked, {}), ("attentions",), (), None
    single = {"input_ids": alone_ids, "attention_mask": torch.ones_like(alone_ids)}
    dec_ids, tgt_text, _ = _teacher_target(
        lm, single, target, limit, notes, task, "the sentence alone"
    )
    dec1 = torch.tensor([dec_ids], device=lm.device)
    dec2 = torch.tensor([dec_ids, dec_ids], device=lm.device)
    extra = ({"decoder_input_ids": dec1}, {"decoder_input_ids": dec2}, {"decoder_input_ids": dec2})
    return extra, _SEQ2SEQ_STACKS, _labels(lm, dec_ids), tgt_text


def _restrict(name: str, arr: np.ndarray, real: np.ndarray) -> np.ndarray:
    """A batch row's stack cut to the sentence's real positions on its source axes."""
    if name in _SOURCE_QUERY:
        arr = arr[:, :, real, :]
    if name in _SOURCE_KEY:
        arr = arr[:, :, :, real]
    return arr


def _padding_attention(lm: LoadedModel, runs: _PaddingRuns, pair: _PaddedPair) -> dict[str, Any]:
    """The report's attention fields: the sentence's stacks in the three runs, the Δs on its real
    positions and their numbers (see :class:`PaddingReport`)."""
    names, real, pads = runs.names, pair.real, pair.pads
    alone, masked, unmasked = (
        _row_stacks(o, names, lm, 0) for o in (runs.alone, runs.masked, runs.unmasked)
    )
    delta_m = {n: _restrict(n, masked[n], real) - alone[n] for n in names}
    delta_u = {n: _restrict(n, unmasked[n], real) - alone[n] for n in names}
    diffs = {n: {"masked": _max_abs(delta_m[n]), "unmasked": _max_abs(delta_u[n])} for n in names}
    pad_max, leak, cross_max = 0.0, [], None
    for n in names:
        if n in _SOURCE_QUERY:
            pad_max = max(pad_max, _max(masked[n][:, :, real][:, :, :, pads]))
            leak.append(unmasked[n][:, :, real][:, :, :, pads].sum(-1).ravel())
        elif n == "cross_attentions":
            cross_max = _max(masked[n][:, :, :, pads])
    return {
        "alone": alone,
        "masked": masked,
        "unmasked": unmasked,
        "delta_masked": delta_m,
        "delta_unmasked": delta_u,
        "stack_diffs": diffs,
        "pad_attention_max": pad_max,
        "unmasked_pad_attention_mass": float(np.mean(np.concatenate(leak))) if leak else 0.0,
        "masked_attention_max_abs_diff": max(d["masked"] for d in diffs.values()),
        "unmasked_attention_max_abs_diff": max(d["unmasked"] for d in diffs.values()),
        "cross_pad_attention_max": cross_max,
    }


def _padding_outputs(lm: LoadedModel, runs: _PaddingRuns, real: np.ndarray) -> dict[str, Any]:
    """The report's output fields: max |batch − alone| of the last hidden states of the real
    tokens, per output name and overall, and their scale."""
    h_alone, h_m, h_u = (_hidden(o, lm.kind, 0) for o in (runs.alone, runs.masked, runs.unmasked))
    diffs = {}
    for name, ref in h_alone.items():
        # the decoder side of seq2seq has no padding: every position is real
        sel = (lambda a: a) if name == "decoder_last_hidden_state" else (lambda a: a[real])
        diffs[name] = {
            "masked": _max_abs(sel(h_m[name]) - ref),
            "unmasked": _max_abs(sel(h_u[name]) - ref),
        }
    return {
        "output_diffs": diffs,
        "masked_output_max_abs_diff": max(d["masked"] for d in diffs.values()),
        "unmasked_output_max_abs_diff": max(d["unmasked"] for d in diffs.values()),
        "output_scale": max(_max_abs(v) for v in h_alone.values()),
    }


def _padding_report(
    lm: LoadedModel,
    text: str,
    padding_side: str,
    pair: _PaddedPair,
    runs: _PaddingRuns,
    notes: list[str],
) -> PaddingReport:
    """Compare the three runs on the sentence's real positions and gather the numbers."""
    return PaddingReport(
        model=lm.reference,
        kind=lm.kind,
        text=str(text),
        pair=str(pair.other),
        padding_side=padding_side,
        pad_token=pair.pad_tok,
        pad_token_id=pair.pad_id,
        row=0,
        tokens=_labels(lm, pair.row0),
        pair_tokens=_labels(lm, pair.other_ids),
        pad_positions=tuple(int(i) for i in pair.pads),
        real_positions=tuple(int(i) for i in pair.real),
        attention_mask=runs.mask.cpu().numpy(),
        position_ids=None if runs.position_ids is None else runs.position_ids.cpu().numpy(),
        target=runs.target,
        decoder_tokens=runs.decoder_tokens,
        notes=tuple(notes),
        **_padding_attention(lm, runs, pair),
        **_padding_outputs(lm, runs, pair.real),
        **_padding_predictions(lm, runs.alone, runs.masked, runs.unmasked, pair.real),
    )


def _padding_predictions(
    lm: LoadedModel, out_alone, out_masked, out_unmasked, real: np.ndarray
) -> dict[str, Any]:
    """Argmax predictions of the three runs (see :class:`PaddingReport`)."""
    la, lm_, lu = _logits(out_alone, 0), _logits(out_masked, 0), _logits(out_unmasked, 0)
    if la is None or lm_ is None or lu is None:  # one model: all three runs have logits, or none
        return {}
    head = lm.summary.head_kind
    if lm.kind == "seq2seq":
        task = "translation"  # every decoder step; the decoder side has no padding
    elif lm.kind == "decoder":
        task = "next_token"
    elif head == "classification":
        task = "classification"
    elif la.ndim == 2:
        task = "masked_lm"
    else:
        return {}
    if task in ("next_token", "masked_lm"):
        lm_, lu = lm_[real], lu[real]  # the sentence's own tokens
    logits: tuple[np.ndarray, ...] = (la, lm_, lu)
    if task == "next_token":
        logits = tuple(x[-1:] for x in logits)  # the token after the last real one
    ida, idm, idu = (np.atleast_1d(np.argmax(x, axis=-1)).tolist() for x in logits)
    ra, rm, ru = la, lm_, lu

    def labels(ix: list[int]) -> tuple[str, ...]:
        if task == "classification":
            id2label = getattr(lm.config, "id2label", {}) or {}
            return tuple(str(id2label.get(i, f"LABEL_{i}")) for i in ix)
        return _labels(lm, ix)

    return {
        "prediction_task": task,
        "prediction_alone": labels(ida),
        "prediction_masked": labels(idm),
        "prediction_unmasked": labels(idu),
        "prediction_changed_masked": ida != idm,
        "prediction_changed_unmasked": ida != idu,
        "masked_logits_max_abs_diff": _max_abs(rm - ra),
        "unmasked_logits_max_abs_diff": _max_abs(ru - ra),
    }


def write_mask_report(report: PaddingReport, path: str | os.PathLike) -> Path:
    """Write ``report.to_json()`` to ``path`` as UTF-8 JSON (indent 2), atomically."""
    data = report.to_json()
    # JSON has no NaN/inf; a non-finite number would make the file unreadable for strict parsers
    text = (
        json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False, default=_json_default)
        + "\n"
    )
    return atomic_write_text(path, text)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------
# token masking
# --------------------------------------------------------------------------------------------
def _check_positions(masked: Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(masked, str | bytes) or not isinstance(masked, Sequence | np.ndarray):
        raise InputError("give the tokens to mask as a list of 0-based token indices")
    out = set()
    for i in masked:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise InputError(f"token index {i!r} is not an integer; give 0-based token indices")
        if not 0 <= int(i) < n:
            raise InputError(
                f"token index {int(i)} is out of range: this sentence has {n} tokens (0–{n - 1})"
            )
        out.add(int(i))
    if not out:
        raise InputError("no token chosen; choose at least one token to mask")
    if len(out) == n:
        raise InputError(
            "masking every token leaves nothing to attend to; keep at least one token unmasked"
        )
    return tuple(sorted(out))


def _blind_rows(kind: str, name: str, mask: np.ndarray, t: int) -> tuple[int, ...]:
    """Query rows that see no key once the masked tokens are hidden."""
    if name == "decoder_attentions":
        return ()
    if name == "attentions" and kind == "decoder":
        first = int(np.argmax(mask))  # first visible token; rows before it see nothing
        return tuple(range(first))
    if name == "cross_attentions":
        return () if mask.any() else tuple(range(t))
    return ()


@dataclass(frozen=True)
class _MaskingInput:
    """The sentence as run and the tokens to hide."""

    text: str  # the text kept after truncation
    source: TokenSeq
    positions: tuple[int, ...]  # the hidden token indices
    keep: np.ndarray  # int64 [S], the masked run's attention mask
    encoding: dict  # the tokenizer's tensors, batch of one


@dataclass(frozen=True)
class _MaskingRuns:
    """The forward passes without and with the token mask."""

    before: Any
    after: Any
    names: tuple[str, ...]
    decoder_tokens: tuple[str, ...] = ()
    target: str | None = None
    translation_before: str = ""
    translation_after: str = ""


def token_masking(
    lm: LoadedModel,
    text: str,
    masked: Sequence[int],
    target: str | None = None,
    task: TaskState | None = None,
) -> MaskingReport:
    """Hide the tokens at ``masked`` (attention mask 0) and compare with the unmasked run.

    Position ids are left as they are: masking only hides keys (a decoder keeps positions
    ``0..S-1`` even when its first token is hidden).

    Parameters
    ----------
    lm : a loaded model
    text : the sentence (truncated to the model's maximum like :func:`analysis.capture.capture`)
    masked : 0-based indices of the tokens to hide (into the tokens *with* special tokens)
    target : seq2seq only – the teacher-forced target; default the greedy translation of the full
        sentence (shared by both runs so the decoder and cross maps compare row by row)
    task : progress (stage ``run``) and cancel, checked between the runs
        (:class:`analysis.tasks.TaskState`; raises :class:`~analysis.errors.Cancelled`)

    Returns
    -------
    MaskingReport with ``baseline``, ``masked`` and ``delta`` stacks ``[L, H, Q, K]`` and the output
    changes.

    Raises
    ------
    InputError : an index out of range, no index, every token masked, an empty text, a target for a
        model that is not seq2seq.
    """
    _check_target(lm, target)
    limit = token_limit(lm)
    notes: list[str] = []
    inp = _masking_input(lm, text, masked, limit, notes)
    runs = _masking_runs(lm, inp, target, limit, notes, as_task(task))
    return _masking_report(lm, inp, runs, notes)


def _masking_input(
    lm: LoadedModel, text: str, masked: Sequence[int], limit: int, notes: list[str]
) -> _MaskingInput:
    """Tokenize ``text`` (a truncation note to ``notes``) and check the positions to hide."""
    enc, offsets, truncated, kept = encode(lm, text, limit)
    if truncated:
        notes.append(
            f"the text was truncated to {limit} tokens (the longest input this model takes)"
        )
    ids = enc["input_ids"][0].tolist()
    positions = _check_positions(masked, len(ids))
    keep = np.ones(len(ids), dtype=np.int64)
    keep[list(positions)] = 0
    return _MaskingInput(kept, token_seq(lm.tokenizer, ids, kept, offsets), positions, keep, enc)


def _masking_batches(lm: LoadedModel, inp: _MaskingInput) -> tuple[dict, dict]:
    """The model inputs without and with the token mask (same ids, same positions)."""
    import torch

    dev, n = lm.device, len(inp.keep)
    batch = to_device(inp.encoding, lm)
    batch["attention_mask"] = torch.ones((1, n), dtype=torch.long, device=dev)
    batch_m = dict(batch)
    batch_m["attention_mask"] = torch.tensor([inp.keep.tolist()], device=dev)
    if lm.kind == "decoder" and _accepts(lm.model, "position_ids"):
        # explicit 0..S-1 so no model derives positions from the mask: masking only hides keys
        pos = torch.arange(n, device=dev)[None]
        batch["position_ids"] = pos
        batch_m["position_ids"] = pos
    return batch, batch_m


def _masking_runs(
    lm: LoadedModel,
    inp: _MaskingInput,
    target: str | None,
    limit: int,
    notes: list[str],
    task: TaskState,
) -> _MaskingRuns:
    """Run the sentence without and with the token mask (seq2seq: also translate both ways)."""
    import torch

    batch, batch_m = _masking_batches(lm, inp)
    kw = _run_options(lm)
    with torch.inference_mode():
        if lm.kind == "seq2seq":
            runs = _masking_seq2seq_runs(lm, batch, batch_m, kw, target, limit, notes, task)
        else:
            task.step("run", 0.2, "running without the token mask…")
            out_b = lm.model(**batch, **kw)
            task.step("run", 0.55, "running with the token mask…")
            runs = _MaskingRuns(out_b, lm.model(**batch_m, **kw), ("attentions",))
    task.step("run", 0.9, "comparing…")
    return runs


def _masking_seq2seq_runs(
    lm: LoadedModel,
    batch: dict,
    batch_m: dict,
    kw: dict,
    target: str | None,
    limit: int,
    notes: list[str],
    task: TaskState,
) -> _MaskingRuns:
    """Seq2seq: both runs share the decoder input (the target, or the full sentence's translation)."""
    import torch

    model = lm.model
    single = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    hidden = {"input_ids": batch_m["input_ids"], "attention_mask": batch_m["attention_mask"]}
    dec_ids, tgt_text, generated = _teacher_target(
        lm, single, target, limit, notes, task, "the full sentence"
    )
    dec = torch.tensor([dec_ids], device=lm.device)
    task.step("run", 0.3, "running without the token mask…")
    out_b = model(**single, decoder_input_ids=dec, **kw)
    task.step("run", 0.45, "running with the token mask…")
    out_m = model(**hidden, decoder_input_ids=dec, **kw)
    task.step("run", 0.6, "translating with the token mask…")
    before = tgt_text if generated else _translate(lm, single, limit)
    after = _translate(lm, hidden, limit)
    return _MaskingRuns(
        out_b, out_m, _SEQ2SEQ_STACKS, _labels(lm, dec_ids), tgt_text, before, after
    )


def _masked_column_max(
    after: Mapping[str, np.ndarray],
    blind: Mapping[str, tuple[int, ...]],
    positions: tuple[int, ...],
) -> float:
    """The largest weight on a hidden key column, over the stacks with source keys and the query
    rows that see a key."""
    cols = np.array(positions, dtype=np.int64)
    col_max = 0.0
    for k, att in after.items():
        if k not in _SOURCE_KEY:
            continue
        rows = np.setdiff1d(np.arange(att.shape[2]), np.array(blind[k], dtype=np.int64))
        col_max = max(col_max, _max(att[:, :, rows][:, :, :, cols]))
    return col_max


def _hidden_distances(lm: LoadedModel, runs: _MaskingRuns, keep: np.ndarray) -> dict[str, Any]:
    """The report's hidden-state fields: L2 and cosine distances ``[U]`` between the runs of the
    last hidden states (seq2seq: the encoder's) of the tokens that stay visible, and their means."""
    hname = "encoder_last_hidden_state" if lm.kind == "seq2seq" else "last_hidden_state"
    hb, hm = _hidden(runs.before, lm.kind, 0)[hname], _hidden(runs.after, lm.kind, 0)[hname]
    vis = np.flatnonzero(keep).astype(np.int64)
    a, b = hb[vis].astype(np.float64), hm[vis].astype(np.float64)
    l2 = np.linalg.norm(b - a, axis=-1)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    cos = np.where(denom > 0, np.sum(a * b, axis=-1) / np.where(denom > 0, denom, 1.0), 1.0)
    cos_dist = np.clip(1.0 - cos, 0.0, 2.0)
    return {
        "hidden_positions": tuple(int(i) for i in vis),
        "hidden_l2": l2.astype(np.float32),
        "hidden_cosine_distance": cos_dist.astype(np.float32),
        "mean_hidden_l2": float(np.mean(l2)) if l2.size else 0.0,
        "mean_hidden_cosine_distance": float(np.mean(cos_dist)) if cos_dist.size else 0.0,
    }


def _masking_predictions(lm: LoadedModel, inp: _MaskingInput, runs: _MaskingRuns) -> dict[str, Any]:
    """The report's output fields: both runs' predictions (decoder: their top-5, seq2seq: the
    translations)."""
    ids, n = inp.source.ids.tolist(), len(inp.keep)
    pb = prediction_for(lm, runs.before, ids, n, runs.translation_before)
    pa = prediction_for(lm, runs.after, ids, n, runs.translation_after)
    decoder = lm.kind == "decoder"
    return {
        "prediction_before": pb,
        "prediction_after": pa,
        "top5_before": pb.items if decoder else (),
        "top5_after": pa.items if decoder else (),
        "translation_before": runs.translation_before,
        "translation_after": runs.translation_after,
    }


def _masking_report(
    lm: LoadedModel, inp: _MaskingInput, runs: _MaskingRuns, notes: list[str]
) -> MaskingReport:
    """Compare the two runs: attention, hidden states and predictions."""
    names = runs.names
    base = _row_stacks(runs.before, names, lm, 0)
    after = _row_stacks(runs.after, names, lm, 0)
    blind = {k: _blind_rows(lm.kind, k, inp.keep, after[k].shape[2]) for k in names}
    col_max = _masked_column_max(after, blind, inp.positions)
    for k, r in blind.items():
        if r:
            notes.append(
                f"{k}: query rows {list(r)} see no token once the chosen tokens are hidden; "
                "transformers spreads them evenly over every key, so ignore those rows"
            )
    return MaskingReport(
        model=lm.reference,
        kind=lm.kind,
        text=inp.text,
        tokens=inp.source.display,
        masked_positions=inp.positions,
        attention_mask=inp.keep,
        blind_rows=blind,
        target=runs.target,
        decoder_tokens=runs.decoder_tokens,
        baseline=base,
        masked=after,
        delta={k: after[k] - base[k] for k in names},
        masked_column_max=col_max,
        notes=tuple(notes),
        **_hidden_distances(lm, runs, inp.keep),
        **_masking_predictions(lm, inp, runs),
    )


def _translate(lm: LoadedModel, batch: dict, limit: int) -> str:
    """Greedy translation of one (possibly masked) source."""
    new = min(limit, 256)
    gen = lm.model.generate(**batch, **generation_length(lm.model, new, 1), num_beams=1, do_sample=False)
    return lm.tokenizer.decode(gen[0].tolist(), skip_special_tokens=True)


__all__ = [
    "DEFAULT_PAIR",
    "MaskingReport",
    "PaddingReport",
    "padding_experiment",
    "token_masking",
    "write_mask_report",
]


# --------------------------------------------------------------------------------------------
# jobs for the window (run in the model process: plain functions, no Qt)
# --------------------------------------------------------------------------------------------
def padding_job(
    lm: LoadedModel,
    text: str,
    pair: str | None,
    padding_side: str,
    task: TaskState | None = None,
) -> PaddingReport:
    """:func:`padding_experiment` for the window's worker: an empty ``pair`` means the default."""
    task = as_task(task)
    task.report(
        "padding",
        None,
        "running the padding experiment (alone, batched with and without the mask)…",
    )
    return padding_experiment(lm, text, pair or None, padding_side=padding_side, task=task)


def masking_job(
    lm: LoadedModel, text: str, positions: Sequence[int], task: TaskState | None = None
) -> MaskingReport:
    """:func:`token_masking` for the window's worker."""
    task = as_task(task)
    task.report("masking", None, "running with the chosen tokens masked…")
    return token_masking(lm, text, positions, task=task)
