"""Readable token strings for every tokenizer family.

* WordPiece (BERT): ``##ing`` → ``ing``
* SentencePiece / Metaspace (T5, Marian, Llama-2): ``▁cours`` → ``cours``; byte fallback ``<0xEC>``
* byte-level BPE (GPT-2, Llama-3/SmolLM2, Qwen): ``Ġlike`` → ``like``, ``ìĿ´`` → ``이``

Byte-level and byte-fallback tokens are turned back into bytes and decoded *across* tokens with an
incremental UTF-8 decoder: the token that completes a character shows it; a token holding only part of
a character shows :data:`PARTIAL` — never Latin-1 mojibake.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .result import TokenSeq

PARTIAL = "◌"  # a token that holds only part of a UTF-8 character
EMPTY = "∅"
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` table (printable stand-in char → byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


@dataclass(frozen=True)
class TokenizerStyle:
    """How a tokenizer writes its tokens."""

    byte_level: bool = False
    wordpiece_prefix: str | None = None
    metaspace: str | None = None


def tokenizer_style(tokenizer) -> TokenizerStyle:
    """Inspect a (fast) tokenizer's decoder to learn its token spelling (cached on the tokenizer:
    serialising a large tokenizer.json takes a noticeable fraction of a second)."""
    cached = getattr(tokenizer, "_headmap_style", None)
    if isinstance(cached, TokenizerStyle):
        return cached
    style = _tokenizer_style(tokenizer)
    try:
        tokenizer._headmap_style = style
    except Exception:  # pragma: no cover - objects that refuse attributes
        pass
    return style


def _tokenizer_style(tokenizer) -> TokenizerStyle:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        # slow tokenizers: SentencePiece-based ones use ▁, BERT's uses ##
        # (a SentencePiece model first: AlbertTokenizer and CamembertTokenizer have "bert" in their names)
        name = type(tokenizer).__name__.lower()
        if getattr(tokenizer, "sp_model", None) is not None or "spm" in name or "marian" in name or "t5" in name:
            return TokenizerStyle(metaspace="▁")
        if "bert" in name and "roberta" not in name:
            return TokenizerStyle(wordpiece_prefix="##")
        return TokenizerStyle()
    try:
        spec = json.loads(backend.to_str())
    except Exception:  # pragma: no cover - exotic backends
        return TokenizerStyle()
    decoders = _flatten(spec.get("decoder"))
    pre = _flatten(spec.get("pre_tokenizer"))
    byte_level = any(d.get("type") == "ByteLevel" for d in decoders + pre)
    prefix = next((d.get("prefix", "##") for d in decoders if d.get("type") == "WordPiece"), None)
    if prefix is None and (spec.get("model") or {}).get("type") == "WordPiece":
        prefix = (spec.get("model") or {}).get("continuing_subword_prefix", "##")
    meta = next((d.get("replacement", "▁") for d in decoders + pre if d.get("type") == "Metaspace"), None)
    if meta is None and any(d.get("type") == "Replace" and "▁" in json.dumps(d, ensure_ascii=False) for d in decoders):
        meta = "▁"
    return TokenizerStyle(byte_level=byte_level, wordpiece_prefix=prefix, metaspace=meta)


def _flatten(node) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        out: list[dict] = []
        for key in ("decoders", "pretokenizers", "normalizers"):
            for child in node.get(key, []) or []:
                out.extend(_flatten(child))
        return out
    return [node]


def token_bytes(tok: str, style: TokenizerStyle) -> bytes:
    """The bytes of text one (non-special) token contributes; word-start markers become a space."""
    m = _BYTE_FALLBACK.match(tok)
    if m:
        return bytes([int(m.group(1), 16)])
    if style.byte_level:
        table = byte_decoder()
        if all(c in table for c in tok):
            return bytes(table[c] for c in tok)
        return tok.encode("utf-8")
    if style.wordpiece_prefix and tok.startswith(style.wordpiece_prefix) and len(tok) > len(style.wordpiece_prefix):
        return tok[len(style.wordpiece_prefix) :].encode("utf-8")
    if style.metaspace:
        tok = tok.replace(style.metaspace, " ")
    return tok.encode("utf-8")


def spaced_token_bytes(tok: str, style: TokenizerStyle) -> bytes:
    """:func:`token_bytes` with the space a word start implies where the spelling has no marker
    for it: a WordPiece piece without ``##`` and a token of a whole-word vocabulary start a new
    word (SentencePiece and byte-level pieces carry their own spaces)."""
    b = token_bytes(tok, style)
    plain = not (style.byte_level or style.metaspace or style.wordpiece_prefix)
    if plain or (style.wordpiece_prefix and not tok.startswith(style.wordpiece_prefix)):
        return b" " + b
    return b


def _visible(s: str) -> str:
    """Make whitespace-only or control-character strings visible in a label."""
    core = s.strip(" ")
    if not core:
        return "␣" if s else EMPTY
    core = core.replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵").replace("\t", "⇥")
    # other control characters: show their code point rather than nothing
    return "".join(ch if ch.isprintable() or ch in "↵⇥" else (f"\\x{ord(ch):02x}" if ord(ch) <= 0xFF else f"\\u{ord(ch):04x}")
                   for ch in core)


def display_strings(raw: Sequence[str], special: Sequence[bool], style: TokenizerStyle) -> list[str]:
    """Readable strings for a token sequence (see module docstring)."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out: list[str] = []
    for tok, is_special in zip(raw, special, strict=True):
        if is_special:
            dec.reset()
            out.append(tok)
            continue
        b = token_bytes(tok, style)
        text = dec.decode(b, final=False)
        pending = bool(dec.getstate()[0])
        if b and (not text or set(text) <= {"\ufffd"} or (pending and not text.strip())):
            out.append(PARTIAL)
        else:
            out.append(_visible(text))
    return out


def special_flags(tokenizer, ids: Sequence[int]) -> np.ndarray:
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for i, tok in added.items():
        if getattr(tok, "special", False):
            special_ids.add(int(i))
    return np.array([int(i) in special_ids for i in ids], dtype=bool)


def whitespace_word_ids(text: str, offsets: Sequence[tuple[int, int]] | None, special: Sequence[bool]) -> list[int]:
    """Index of the whitespace-separated word each token belongs to (-1 for special/unknown)."""
    n = len(special)
    if offsets is None:
        return [-1] * n
    word_of_char = np.full(len(text), -1)
    for w, m in enumerate(re.finditer(r"\S+", text)):
        word_of_char[m.start() : m.end()] = w
    ids: list[int] = []
    for (start, end), sp in zip(offsets, special, strict=True):
        w = -1  # special, empty, or only whitespace
        if not sp:
            for c in range(start, min(end, len(text))):
                if word_of_char[c] >= 0:
                    w = int(word_of_char[c])
                    break
        ids.append(w)
    return ids


def token_seq(tokenizer, ids: Sequence[int], text: str | None = None, offsets=None) -> TokenSeq:
    """Build a :class:`TokenSeq` for ``ids`` (and, when given, offsets into ``text``)."""
    ids = [int(i) for i in ids]
    raw = list(tokenizer.convert_ids_to_tokens(ids))
    raw = [r if r is not None else "<?>" for r in raw]
    special = special_flags(tokenizer, ids)
    display = display_strings(raw, list(special), tokenizer_style(tokenizer))
    if text is not None and offsets is not None:
        words = whitespace_word_ids(text, offsets, list(special))
    elif text is not None:
        words = word_ids_by_display(display, list(special))
    else:
        words = [-1] * len(ids)
    return TokenSeq(ids=np.array(ids, dtype=np.int64), raw=tuple(raw), display=tuple(display),
                    special=special, word_ids=tuple(words))


def generated_seq(tokenizer, ids: Sequence[int]) -> TokenSeq:
    """A :class:`TokenSeq` for target / generated tokens: no offsets exist, so the word ids come
    from the decoded pieces (:func:`output_word_ids`)."""
    seq = token_seq(tokenizer, ids)
    return replace(seq, word_ids=tuple(output_word_ids(tokenizer, ids, list(seq.special))))


def word_ids_by_display(raw_or_display: Sequence[str], special: Sequence[bool]) -> list[int]:
    """Fallback word ids when no offsets exist: every non-special token is its own word."""
    out, w = [], 0
    for sp in special:
        if sp:
            out.append(-1)
        else:
            out.append(w)
            w += 1
    return out


def output_word_ids(tokenizer, ids: Sequence[int], special: Sequence[bool]) -> list[int]:
    """Word ids for generated/target tokens (no offsets exist for them).

    The tokens are decoded piece by piece into one string (word-level vocabularies, which have no
    word-start marker, are joined with spaces, as their decoder does), and each token gets the index
    of the whitespace-separated word its first non-space character falls in. Special tokens: -1.
    """
    style = tokenizer_style(tokenizer)
    raw = [r or "" for r in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, offsets = "", []
    for tok, sp in zip(raw, special, strict=True):
        if sp:
            offsets.append((len(text), len(text)))
            continue
        piece = dec.decode(spaced_token_bytes(tok, style), final=False)
        offsets.append((len(text), len(text) + len(piece)))
        text += piece
    words = whitespace_word_ids(text, offsets, list(special))
    # a token holding only part of a character (or a lone word-start marker) belongs to the
    # word that the following token completes
    nxt = -1
    for k in range(len(words) - 1, -1, -1):
        if special[k]:
            continue
        if words[k] < 0:
            words[k] = nxt
        else:
            nxt = words[k]
    return words


# -- naming the token spelling (the window's token legend) ----------------------------------------
#: the token spellings :func:`style_name` tells apart
STYLE_NAMES = ("wordpiece", "sentencepiece", "byte-bpe", "word")


def style_name(style: TokenizerStyle) -> str:
    """``byte-bpe`` (GPT-2, Llama-3, SmolLM2), ``wordpiece`` (BERT ``##``), ``sentencepiece``
    (``▁``: T5, Marian) or ``word`` (whole words, no pieces)."""
    if style.byte_level:
        return "byte-bpe"
    if style.wordpiece_prefix:
        return "wordpiece"
    if style.metaspace:
        return "sentencepiece"
    return "word"


def style_of_tokens(raw: Sequence[str], display: Sequence[str]) -> str:
    """The spelling read off the tokens themselves (a reopened session has no tokenizer); ``word``
    when no piece marks show (a WordPiece sentence of whole words reads as ``word`` too)."""
    if any(PARTIAL in d for d in display) or any(ch in r for r in raw for ch in "ĠĊ"):
        return "byte-bpe"
    if any(r.startswith("##") for r in raw):
        return "wordpiece"
    if any(r.startswith("▁") for r in raw):
        return "sentencepiece"
    return "word"
