"""Input the model cannot read: unknown tokens, and which bundled model reads the text instead.

A word-level or WordPiece tokenizer turns what its vocabulary lacks into its unknown token
(``<unk>``, ``[UNK]``): Korean typed into the English→French toy translator becomes five
``<unk>`` and a made-up translation. :func:`unknown_count` counts the unknown tokens among the
tokens that come from the text (not the ``</s>`` or ``[CLS]`` the tokenizer adds);
:func:`unknown_warning` turns "most of them are unknown" into one note for the capture, naming a
bundled model that reads the text (:func:`suggest_bundled`).

Which bundled model reads a text is decided from the tokenizers on disk, without loading a model:

* ``smollm2`` – byte-level BPE: every text becomes byte pieces, never an unknown token, so it reads
  every script once installed (its GGUF is not opened for this);
* ``minilm`` – its WordPiece ``tokenizer.json`` (``[UNK]`` for a character outside its vocabulary);
* ``translator-en-fr`` / ``translator-en-ko`` – their ``tokenizer.json`` (whole words and a few
  word pieces) shares one vocabulary between English and the target language, but only English
  goes in: a text fits when no token is unknown and every token is an English word of their
  grammar.

They are tried in that order (the widest reader first); a model that is not installed is never
suggested. Tokenizers are loaded once per process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

#: a note that starts with this is a warning (the CLI prints it as is, on stderr)
WARNING = "warning: "
#: the text is unreadable when more than this share of its tokens is the unknown token
UNKNOWN_SHARE = 0.5
#: bundled models in the order they are suggested (the widest reader first)
SUGGEST_ORDER = ("smollm2", "minilm", "translator-en-fr", "translator-en-ko")
#: bundled models whose byte-level tokenizer never produces an unknown token
READS_ANY_TEXT = frozenset({"smollm2"})
#: bundled toy translators: they read only the English words of their grammar
TOY_TRANSLATORS = frozenset({"translator-en-fr", "translator-en-ko"})

#: ``reader(text) -> True`` when a tokenizer reads ``text`` without unknown tokens
Reader = Callable[[str], bool]


@dataclass(frozen=True)
class UnknownCount:
    """How many of the tokens that come from a text are the tokenizer's unknown token.

    Attributes
    ----------
    unknown : unknown tokens among them
    total : tokens that come from the text (the tokens a tokenizer adds, such as ``</s>``, not
        counted)
    token : the unknown token's spelling (``<unk>``), or None when the tokenizer has none
    """

    unknown: int
    total: int
    token: str | None

    @property
    def mostly_unknown(self) -> bool:
        """More than :data:`UNKNOWN_SHARE` of the text's tokens are unknown."""
        return self.total > 0 and self.unknown > UNKNOWN_SHARE * self.total


def unknown_id(tokenizer) -> int | None:
    """The id of a transformers tokenizer's unknown token, or None when it has none of its own.

    A tokenizer whose ``unk_token`` is also its BOS/EOS/PAD/CLS/SEP token (GPT-2 names
    ``<|endoftext|>`` for all of them) has no unknown token: byte-level BPE never needs one.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    others = {getattr(tokenizer, f"{role}_token_id", None) for role in ("bos", "eos", "pad", "cls", "sep")}
    return None if unk in others else int(unk)


def _bare_marker(raw: str | None) -> bool:
    """A token that is only a word-start marker (SentencePiece ``▁`` before an ``<unk>``)."""
    return raw is not None and not raw.strip("▁Ġ ")


def from_text(ids: Sequence[int], special: Sequence[bool] | np.ndarray, offsets: Sequence[tuple[int, int]] | None,
              unk: int | None, raw: Sequence[str | None] | None = None) -> np.ndarray:
    """bool ``[N]``: which tokens come from the text rather than from the tokenizer's template.

    With ``offsets`` (fast tokenizers): the tokens that cover some characters. Without: the
    tokens that are not special, and the unknown tokens (special tokens themselves). With
    ``raw`` (the token strings), a lone word-start marker does not count: SentencePiece writes
    an unknown word as ``▁`` + ``<unk>``, one word, not one known and one unknown token.
    """
    if offsets is not None:
        out = np.array([end > start for start, end in offsets], dtype=bool)
    else:
        out = ~np.asarray(special, dtype=bool)
        if unk is not None:
            out |= np.asarray(ids) == unk
    if raw is not None:
        out &= ~np.array([_bare_marker(r) for r in raw], dtype=bool)
    return out


def unknown_count(tokenizer, ids: Sequence[int], offsets: Sequence[tuple[int, int]] | None = None) -> UnknownCount:
    """Count the unknown tokens among the tokens of ``ids`` ``[N]`` that come from the text
    (:func:`from_text`).

    Parameters
    ----------
    tokenizer : the transformers tokenizer that produced ``ids``
    ids : token ids ``[N]`` with the tokenizer's special tokens
    offsets : ``[N]`` character spans of a fast tokenizer (``(0, 0)`` for added tokens), or None
    """
    from .tokens import special_flags

    unk = unknown_id(tokenizer)
    ids = [int(i) for i in ids]
    raw = tokenizer.convert_ids_to_tokens(ids)
    keep = from_text(ids, special_flags(tokenizer, ids), offsets, unk, raw)
    total = int(keep.sum())
    if unk is None:
        return UnknownCount(0, total, None)
    unknown = int((keep & (np.asarray(ids) == unk)).sum())
    return UnknownCount(unknown, total, str(tokenizer.unk_token))


# -- who reads a text -------------------------------------------------------------------------
def raw_tokenizer_reads(tokenizer, text: str, words: frozenset[str] | None = None) -> bool:
    """True when a ``tokenizers.Tokenizer`` turns ``text`` into tokens none of which is its
    unknown token (and, with ``words``, every token is one of ``words``)."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    unk = raw_unknown_id(tokenizer)
    if unk is not None and unk in enc.ids:
        return False
    return words is None or all(t in words for t in enc.tokens)


def raw_unknown_id(tokenizer) -> int | None:
    """The unknown token's id of a ``tokenizers.Tokenizer``, or None when its model has none
    (byte-level BPE). WordLevel, WordPiece and BPE models name their ``unk_token``; a Unigram
    (SentencePiece) model has only an ``unk_id``, which it does not expose but writes."""
    model = tokenizer.model
    unk_token = getattr(model, "unk_token", None)
    if isinstance(unk_token, str):
        return tokenizer.token_to_id(unk_token)
    if type(model).__name__ == "Unigram":
        import json

        unk = json.loads(tokenizer.to_str())["model"].get("unk_id")
        return int(unk) if unk is not None else None
    return None


def tokenizer_reads(tokenizer, text: str) -> bool:
    """True when a transformers tokenizer turns ``text`` into tokens none of which is unknown."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = unknown_id(tokenizer)
    return unk is None or unk not in ids


@lru_cache(maxsize=1)
def toy_source_words() -> frozenset[str]:
    """The English words the toy translators read (their grammar's source side, lowercased)."""
    from .toy_translation import grammar

    return frozenset(w for m in grammar.covering_meanings() for w in grammar.render(m, "fr").src.lower().split())


def _bundled_location(name: str) -> Path | None:
    from .bundled import bundled_path
    from .errors import HeadmapError

    try:
        return bundled_path(name, verify=False)  # the tokenizer only: the weights are not read
    except HeadmapError:
        return None


@cache
def _bundled_raw_tokenizer(name: str, path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    # MiniLM's tokenizer.json pads every text to 128 tokens: count the text alone
    tok.no_padding()
    tok.no_truncation()
    return tok


def bundled_reader(name: str) -> Reader | None:
    """How bundled model ``name`` reads a text, from its tokenizer on disk; None when the model
    is not installed (or its tokenizer cannot be read)."""
    path = _bundled_location(name)
    if path is None:
        return None
    if name in READS_ANY_TEXT:
        return lambda text: True
    if not (path / "tokenizer.json").is_file():
        return None
    try:
        tok = _bundled_raw_tokenizer(name, str(path))
    except Exception:  # tokenizers raises a bare Exception on a damaged file: then it is no candidate
        return None
    words = toy_source_words() if name in TOY_TRANSLATORS else None
    return lambda text: raw_tokenizer_reads(tok, text, words)


def installed_readers(names: Sequence[str] = SUGGEST_ORDER) -> dict[str, Reader]:
    """The readers of the installed bundled models among ``names``, in that order."""
    out: dict[str, Reader] = {}
    for name in names:
        reader = bundled_reader(name)
        if reader is not None:
            out[name] = reader
    return out


def suggest_bundled(text: str, exclude: str | None = None, readers: Mapping[str, Reader] | None = None) -> str | None:
    """The first bundled model (in :data:`SUGGEST_ORDER`) that reads ``text`` without unknown
    tokens, as ``bundled:NAME``; None when no installed one does.

    Parameters
    ----------
    text : the text
    exclude : a model reference not to suggest (the model that could not read it)
    readers : name → reader, in order of preference (default: :func:`installed_readers`)
    """
    if readers is None:
        readers = installed_readers()
    for name, reads in readers.items():
        if f"bundled:{name}" != exclude and reads(text):
            return f"bundled:{name}"
    return None


def unknown_warning(count: UnknownCount, text: str, model: str | None = None,
                    readers: Mapping[str, Reader] | None = None) -> str | None:
    """The capture's warning when most of the text's tokens are unknown, else None.

    ``warning: 5 of 5 tokens of the text are unknown to this tokenizer (<unk>), so the model cannot
    read it; for this text try bundled:smollm2``

    Parameters
    ----------
    count : :func:`unknown_count` of the text's tokens
    text : the text (to find a bundled model that reads it)
    model : the reference of the model that could not read it (never suggested)
    readers : see :func:`suggest_bundled`
    """
    if not count.mostly_unknown:
        return None
    what = (f"{WARNING}{count.unknown} of {count.total} tokens of the text are unknown to this tokenizer "
            f"({count.token}), so the model cannot read it")
    other = suggest_bundled(text, exclude=model, readers=readers)
    return what + (f"; for this text try {other}" if other else "; none of the installed bundled models reads it either")


__all__ = [
    "READS_ANY_TEXT", "SUGGEST_ORDER", "UNKNOWN_SHARE", "WARNING", "UnknownCount", "bundled_reader",
    "installed_readers", "raw_tokenizer_reads", "raw_unknown_id", "suggest_bundled", "tokenizer_reads", "unknown_count",
    "unknown_id", "unknown_warning",
]
