"""The one immutable capture result that every view and analysis reads.

Shapes (named once, used everywhere):

* ``S``  – number of source / input tokens
* ``T``  – number of decoder positions (seq2seq only)
* ``L``  – layers of a stack, ``H`` – heads per layer
* attention stacks are ``[layer, head, query, key]`` = ``[L, H, Q, K]``

Stack names follow transformers' output names:

* ``attentions``          – encoder-only and decoder-only models, ``[L, H, S, S]``
* ``encoder_attentions``  – seq2seq encoder self-attention, ``[L, H, S, S]``
* ``decoder_attentions``  – seq2seq decoder self-attention, ``[L, H, T, T]``
* ``cross_attentions``    – seq2seq cross-attention, ``[L, H, T, S]``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from .store import is_stored

Kind = Literal["encoder", "decoder", "seq2seq"]
STACK_NAMES = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")
#: CLI/--stack names → npz stack names for seq2seq models
STACK_ALIASES = {
    "encoder": "encoder_attentions",
    "decoder": "decoder_attentions",
    "cross": "cross_attentions",
}
#: stacks whose query and key axes are the same sequence (self-attention)
SELF_STACKS = ("attentions", "encoder_attentions", "decoder_attentions")
#: stacks that are causally masked for the given kind
CAUSAL_STACKS = {"decoder": ("attentions",), "seq2seq": ("decoder_attentions",), "encoder": ()}


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


# eq=False: identity equality (generated == would compare numpy arrays elementwise and raise);
# compare contents with analysis.session.captures_equal
@dataclass(frozen=True, eq=False)
class TokenSeq:
    """One token sequence.

    Attributes
    ----------
    ids : int64 ``[N]``
    raw : the tokenizer's own token strings (``Ġlike``, ``##ing``, ``▁cours``)
    display : readable strings (``like``, ``ing``, ``cours``; Hangul for byte-level BPE)
    special : bool ``[N]``, True for special tokens ([CLS], </s>, <pad>, …)
    word_ids : per token, the index of the whitespace-separated word of the text it belongs to,
        or -1 for special tokens / tokens outside the text.
    """

    ids: np.ndarray
    raw: tuple[str, ...]
    display: tuple[str, ...]
    special: np.ndarray
    word_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _frozen(np.asarray(self.ids, dtype=np.int64)))
        object.__setattr__(self, "special", _frozen(np.asarray(self.special, dtype=bool)))
        n = len(self.ids)
        if not (len(self.raw) == len(self.display) == len(self.special) == len(self.word_ids) == n):
            raise ValueError("TokenSeq fields must all have the same length")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Prediction:
    """The post-processed output of the forward pass (the pipeline's third step).

    ``task`` is one of ``classification``, ``next_token``, ``masked_lm``, ``translation`` or
    ``none`` (a bare encoder: no head). ``items`` are ``(label, probability)`` pairs, best first;
    for ``masked_lm`` there is one list per masked position in ``per_position``.
    """

    task: str = "none"
    items: tuple[tuple[str, float], ...] = ()
    text: str = ""
    per_position: tuple[tuple[int, tuple[tuple[str, float], ...]], ...] = ()


#: in a capture's warning note when the model ran with weights filled with random values (a checkpoint
#: loaded with ``allow_missing_weights``): its maps are not reproducible, and every figure says so
RANDOM_WEIGHTS = "filled with random values"


@dataclass(frozen=True, eq=False)
class Capture:
    """Everything captured from one run of one model on one input. Immutable.

    Attributes
    ----------
    model : the model reference the user gave (``bundled:minilm``, a folder, a hub id)
    kind : ``encoder`` | ``decoder`` | ``seq2seq``
    architecture : e.g. ``BertModel``, ``LlamaForCausalLM``, ``MarianMTModel``
    text : the input text as captured (after truncation)
    source : the input tokens (decoder: prompt + continuation)
    stacks : stack name → read-only array ``[L, H, Q, K]`` (float32, or float16 to save memory), or
        for a long capture a :class:`analysis.store.StoredStack` (float16 on disk, read one map or
        pooled level at a time; :attr:`stored`)
    target : seq2seq target text (typed or generated), else None
    decoder_inputs : seq2seq decoder input tokens ``[T]`` (``decoder_start`` + labels[:-1])
    outputs : seq2seq output tokens ``[T]``; row t of decoder/cross maps predicts ``outputs[t]``
    output_text : the translation / continuation text, or ""
    prompt_length : decoder: number of prompt tokens in ``source`` (rest is continuation)
    generated : True when the target / continuation was generated by the model
    notes : human-readable notes (e.g. "text truncated to 512 tokens"); one that starts with
        ``warning: `` is a warning (most of the text unknown to the tokenizer; weights of the model
        filled with random values, which holds :data:`RANDOM_WEIGHTS` and is named in every
        figure's title)
    prediction : post-processed prediction from the same forward pass
    token_style : the tokenizer's spelling (``wordpiece``, ``sentencepiece``, ``byte-bpe``, ``word``;
        :func:`analysis.tokens.style_name`), or "" when unknown (read off the tokens then)
    group : ``pieces`` (the tokenizer's tokens) or ``words`` (:func:`analysis.words.group_capture`:
        stacks, token sequences and predictions are word-level)
    source_spans : words only: int64 ``[n_words, 2]``, each source word's half-open range of
        positions in ``pieces.source``
    output_spans : words only, seq2seq: int64 ``[n_output_words, 2]``, each output word's range of
        decoder positions in ``pieces.outputs`` (the decoder inputs are grouped by the same ranges)
    pieces : words only: the ungrouped capture
    """

    model: str
    kind: Kind
    architecture: str
    text: str
    source: TokenSeq
    stacks: Mapping[str, np.ndarray]
    target: str | None = None
    decoder_inputs: TokenSeq | None = None
    outputs: TokenSeq | None = None
    output_text: str = ""
    prompt_length: int = 0
    generated: bool = False
    truncated: bool = False
    notes: tuple[str, ...] = ()
    prediction: Prediction = field(default_factory=Prediction)
    token_style: str = ""
    group: str = "pieces"
    source_spans: np.ndarray | None = None
    output_spans: np.ndarray | None = None
    pieces: Capture | None = None

    def __post_init__(self) -> None:
        # a long capture's stacks stay on disk (analysis.store.StoredStack: read-only, read lazily)
        frozen = {name: arr if is_stored(arr) else _frozen(arr) for name, arr in self.stacks.items()}
        object.__setattr__(self, "stacks", MappingProxyType(frozen))
        for name in ("source_spans", "output_spans"):
            spans = getattr(self, name)
            if spans is not None:
                object.__setattr__(self, name, _frozen(np.asarray(spans, dtype=np.int64).reshape(-1, 2)))

    def __repr__(self) -> str:
        """Short: the model, its kind, the token counts and each stack's ``[L, H, Q, K]`` shape
        (the dataclass's own repr would print every array)."""
        stacks = ", ".join(
            f"{name}=[{', '.join(str(n) for n in self.stacks[name].shape)}] {self.stacks[name].dtype}"
            for name in self.stack_names
        )
        tokens = f"tokens={len(self.source)}"
        if self.decoder_inputs is not None:
            tokens += f", decoder_tokens={len(self.decoder_inputs)}"
        return f"Capture(model={self.model!r}, kind={self.kind!r}, {tokens}, {stacks})"

    # -- stacks -------------------------------------------------------------------------------
    @property
    def stack_names(self) -> tuple[str, ...]:
        return tuple(n for n in STACK_NAMES if n in self.stacks)

    def resolve_stack(self, stack: str | None) -> str:
        """Map ``None``/``encoder``/``decoder``/``cross``/npz names to a present stack name."""
        if stack is None:
            return self.stack_names[0]
        name = STACK_ALIASES.get(stack, stack)
        if self.kind != "seq2seq" and stack in ("encoder", "decoder"):
            name = "attentions"
        if name not in self.stacks:
            have = ", ".join(self.stack_names)
            raise KeyError(f"this {self.kind} model has no '{stack}' stack; choose one of: {have}")
        return name

    def attention(self, stack: str | None = None) -> np.ndarray:
        """Attention of one stack as float32 ``[L, H, Q, K]`` (upcast if stored as float16; a stored
        stack stays on disk and is read as float32 when indexed)."""
        arr = self.stacks[self.resolve_stack(stack)]
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    @property
    def stored(self) -> bool:
        """True when the stacks live on disk (:mod:`analysis.store`): a long capture."""
        return any(is_stored(a) for a in self.stacks.values())

    def shape(self, stack: str | None = None) -> tuple[int, int, int, int]:
        return tuple(self.stacks[self.resolve_stack(stack)].shape)

    def n_layers(self, stack: str | None = None) -> int:
        return self.shape(stack)[0]

    def n_heads(self, stack: str | None = None) -> int:
        return self.shape(stack)[1]

    # -- tokens -------------------------------------------------------------------------------
    def query_tokens(self, stack: str | None = None) -> TokenSeq:
        """Tokens of the query axis (rows). Decoder/cross rows: the decoder *inputs*."""
        name = self.resolve_stack(stack)
        if name in ("decoder_attentions", "cross_attentions"):
            assert self.decoder_inputs is not None
            return self.decoder_inputs
        return self.source

    def key_tokens(self, stack: str | None = None) -> TokenSeq:
        """Tokens of the key axis (columns)."""
        name = self.resolve_stack(stack)
        if name == "decoder_attentions":
            assert self.decoder_inputs is not None
            return self.decoder_inputs
        return self.source

    def row_labels(self, stack: str | None = None, mode: str = "input") -> list[str]:
        """Row labels. ``mode``: ``input`` (decoder input at t), ``predicts`` (the token predicted
        at t; ``output`` is the older name) or ``both`` (``input → predicted``). Only decoder/cross
        rows differ between modes."""
        name = self.resolve_stack(stack)
        q = self.query_tokens(name).display
        if name not in ("decoder_attentions", "cross_attentions") or self.outputs is None:
            return list(q)
        out = self.outputs.display
        if mode in ("predicts", "output"):
            return list(out)
        if mode == "both":
            return [f"{a} → {b}" for a, b in zip(q, out, strict=True)]
        return list(q)

    def is_causal(self, stack: str | None = None) -> bool:
        return self.resolve_stack(stack) in CAUSAL_STACKS[self.kind]

    @property
    def attention_nbytes(self) -> int:
        """Bytes of the maps (in memory, or on disk for a stored capture)."""
        return sum(a.nbytes for a in self.stacks.values())

    def with_stacks_dtype(self, dtype: np.dtype | type) -> Capture:
        """A copy whose stacks are stored as ``dtype`` (e.g. float16 to halve memory); a stored
        stack stays on disk and is read as ``dtype``."""
        from dataclasses import replace

        return replace(self, stacks={k: v.astype(dtype) for k, v in self.stacks.items()})
