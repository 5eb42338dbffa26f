"""Token grouping: pieces → words, for every view, export and analysis.

A tokenizer cuts words into pieces (WordPiece ``##ing``, SentencePiece ``▁cours``, byte-level BPE
pieces that hold a third of a Hangul syllable). :func:`word_spans` finds the words, and
:func:`group_capture` turns a capture of pieces into a capture of words: the same
:class:`~analysis.result.Capture` type, so every view, statistic, rollout, flow and export reads it
unchanged.

Words
-----
* WordPiece: a ``##`` continuation joins the word before it; any other piece starts a word.
* SentencePiece (Metaspace): a piece that starts with ``▁`` starts a word; others join it.
* byte-level BPE: the pieces' bytes are joined (so a character split across pieces is whole
  again) and a piece whose bytes start with whitespace starts a word.
* whole-word vocabularies: every token is a word.
* special tokens are groups of their own, and the piece after one starts a word.

The rule for a map (Clark et al. 2019, "What Does BERT Look At?", ``get_word_word_attention``,
mode "mean"): attention *to* a word is the **sum** over its pieces (columns) and attention *from*
a word is the **mean** over its pieces (rows). A row of pieces sums to 1, so a row of words does.

seq2seq
-------
Source words group the encoder maps (rows and columns) and the columns of cross-attention.
Decoder positions are grouped by the **output word** they predict: the rows of the decoder and
cross maps of word j are the positions that predict its pieces. The decoder's own columns (its
inputs) use the *same* position groups, so the decoder map stays square and causal: the column
group of word j holds the decoder inputs read while word j was produced (the last piece of word
j−1, or the start token, and the pieces of word j but its last). For a word of one token that
is simply the previous word; in the teaching translators' ``je n'aime pas`` the inputs read while
``n'aime`` (``n'`` ``##aime``) was produced are ``je`` and ``n'``.

Causal masks
------------
The first piece of a word cannot see the word's later pieces, but its last piece sees them all,
so a word row has weight on its own word and on earlier words only: the word-level causal mask
marks the keys of *later* words, the same triangle as for pieces.

Shapes: spans are int64 ``[n_words, 2]`` half-open ranges ``[start, end)`` of piece positions;
they cover every piece exactly once, in order.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .errors import InputError
from .result import Capture, Prediction, TokenSeq
from .tokens import (
    STYLE_NAMES,
    TokenizerStyle,
    byte_decoder,
    spaced_token_bytes,
    style_of_tokens,
    token_bytes,
)

#: the ``--group`` choices
GROUPS = ("pieces", "words")
#: how each style name spells its pieces
_STYLES = {
    "byte-bpe": TokenizerStyle(byte_level=True),
    "wordpiece": TokenizerStyle(wordpiece_prefix="##"),
    "sentencepiece": TokenizerStyle(metaspace="▁"),
    "word": TokenizerStyle(),
}
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def check_group(group: str) -> None:
    if group not in GROUPS:
        raise InputError(f"unknown grouping '{group}': choose one of {', '.join(GROUPS)}")


# -- spans ------------------------------------------------------------------------------------
def _starts_word(tok: str, style: str, after_special: bool) -> bool:
    if after_special:
        return True
    if style == "wordpiece":
        return not tok.startswith("##")
    if style == "sentencepiece":
        return tok.startswith("▁")
    if style == "byte-bpe":
        if _BYTE_FALLBACK.match(tok):
            return False
        b = token_bytes(tok, _STYLES["byte-bpe"])
        return bool(b) and b[:1].isspace()
    return True  # whole words


def word_spans(raw: Sequence[str], special: Sequence[bool] | np.ndarray, style: str) -> np.ndarray:
    """The words of a token sequence as half-open piece ranges.

    Parameters
    ----------
    raw : the tokenizer's own token strings ``[N]`` (``Ġlike``, ``##ing``, ``▁cours``)
    special : ``[N]``, True for special tokens (each is a group of its own)
    style : ``wordpiece`` | ``sentencepiece`` | ``byte-bpe`` | ``word``
        (:func:`analysis.tokens.style_name`)

    Returns
    -------
    int64 ``[n_words, 2]``: ``[start, end)`` of each word; the spans cover ``0…N`` once, in order.
    """
    if style not in STYLE_NAMES:
        raise InputError(f"unknown token style '{style}': choose one of {', '.join(STYLE_NAMES)}")
    starts: list[int] = []
    prev_special = True  # the first token starts a word, as one after a special token does
    for i, (tok, sp) in enumerate(zip(raw, special, strict=True)):
        if sp or _starts_word(tok, style, prev_special):
            starts.append(i)
        prev_special = bool(sp)
    ends = starts[1:] + [len(raw)] if starts else []  # no tokens: no words
    return np.array(list(zip(starts, ends, strict=True)), dtype=np.int64).reshape(-1, 2)


def capture_style(capture: Capture) -> str:
    """The capture's token spelling: recorded at capture time, else read off all its tokens."""
    if capture.token_style in STYLE_NAMES:
        return capture.token_style
    seqs = [s for s in (capture.source, capture.decoder_inputs, capture.outputs) if s is not None]
    raw = [r for s in seqs for r, sp in zip(s.raw, s.special, strict=True) if not sp]
    display = [d for s in seqs for d in s.display]
    style = style_of_tokens(raw, display)
    table = byte_decoder()
    if style == "word" and any(ord(c) > 0xFF and c in table for r in raw for c in r):
        return "byte-bpe"  # a sentence of one-piece words still shows byte stand-ins (ì, ë …)
    return style


# -- words ------------------------------------------------------------------------------------
def _decoded(pieces: Sequence[str], style: str) -> str:
    """The text of consecutive pieces, with a space before each piece that starts a word (a
    decoder-input group can hold the end of one word and the start of the next); the caller
    strips the ends."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return dec.decode(b"".join(spaced_token_bytes(p, _STYLES[style]) for p in pieces), final=True)


def _word_text(raw: Sequence[str], special: Sequence[bool], style: str) -> str:
    """A word's readable text: its pieces' bytes decoded together (special tokens as written)."""
    parts: list[str] = []
    run: list[str] = []
    for tok, sp in zip(raw, special, strict=True):
        if sp:
            if run:
                parts.append(_decoded(run, style).strip())
                run = []
            parts.append(tok)
        else:
            run.append(tok)
    if run:
        parts.append(_decoded(run, style).strip())
    text = " ".join(p for p in parts if p)
    text = "".join(ch if ch.isprintable() else "↵" if ch in "\r\n" else " " for ch in text).strip()
    return text or "␣"


def group_seq(seq: TokenSeq, spans: np.ndarray, style: str) -> TokenSeq:
    """``seq`` with one entry per span: the word's text, the id of its first piece, special when
    all its pieces are, the whitespace word of its first piece that has one."""
    raw, display, ids, special, words = [], [], [], [], []
    for s, e in spans.tolist():
        sp = [bool(x) for x in seq.special[s:e]]
        raw.append("".join(seq.raw[s:e]))
        display.append(_word_text(seq.raw[s:e], sp, style))
        ids.append(int(seq.ids[s]))
        special.append(all(sp))
        words.append(next((w for w in seq.word_ids[s:e] if w >= 0), -1))
    return TokenSeq(ids=np.array(ids, dtype=np.int64), raw=tuple(raw), display=tuple(display),
                    special=np.array(special, dtype=bool), word_ids=tuple(words))


def piece_strings(seq: TokenSeq, spans: np.ndarray) -> list[tuple[str, ...]]:
    """The display strings of each word's pieces (what the token strip shows under a word)."""
    return [tuple(seq.display[s:e]) for s, e in spans.tolist()]


# -- maps -------------------------------------------------------------------------------------
def group_map(arr: np.ndarray, row_spans: np.ndarray, col_spans: np.ndarray) -> np.ndarray:
    """Group the last two axes of ``arr`` (``[..., Q, K]``): columns summed over a word's pieces,
    rows averaged over a word's pieces. Returns ``[..., n_row_words, n_col_words]`` in the dtype
    of ``arr`` (computed in float32 or wider)."""
    a = np.asarray(arr)
    work = a.astype(np.float32) if a.dtype.itemsize < 4 else a
    cols = np.add.reduceat(work, col_spans[:, 0], axis=-1)
    rows = np.add.reduceat(cols, row_spans[:, 0], axis=-2)
    rows /= (row_spans[:, 1] - row_spans[:, 0])[:, None]
    return rows.astype(a.dtype, copy=False)


def _group_stack(arr: np.ndarray, row_spans: np.ndarray, col_spans: np.ndarray) -> np.ndarray:
    # one layer at a time: a float16 1024-token stack would need a float32 copy of all of it
    return np.stack([group_map(layer, row_spans, col_spans) for layer in arr]) if len(arr) else \
        group_map(arr, row_spans, col_spans)


def _word_of(spans: np.ndarray) -> np.ndarray:
    """``[N]`` the word index of every piece."""
    return np.repeat(np.arange(len(spans)), spans[:, 1] - spans[:, 0])


def _group_prediction(pred: Prediction, spans: np.ndarray, first_piece_only: bool) -> Prediction:
    """Per-position predictions moved to word positions (seq2seq: a word's candidates are those
    of its first piece; masked LM: of the first masked piece in a word)."""
    word_of = _word_of(spans)
    starts = set(spans[:, 0].tolist())
    out: list = []
    seen: set[int] = set()
    for pos, items in pred.per_position:
        if not 0 <= pos < len(word_of) or (first_piece_only and pos not in starts):
            continue
        w = int(word_of[pos])
        if w not in seen:
            seen.add(w)
            out.append((w, items))
    return replace(pred, per_position=tuple(out))


def group_capture(capture: Capture, group: str = "words") -> Capture:
    """The capture at the given grouping (a new immutable :class:`Capture`; the input is not
    modified).

    ``words``: stacks ``[L, H, n_row_words, n_col_words]`` (see the module docstring for the rule
    and for seq2seq), token sequences of words, ``source_spans`` (and for seq2seq
    ``output_spans``, which also group the decoder inputs), ``group="words"`` and ``pieces`` (the
    ungrouped capture). ``pieces``: the ungrouped capture. Grouping twice is the same as once.
    """
    check_group(group)
    if group == "pieces":
        return capture.pieces if capture.pieces is not None else capture
    if capture.group == "words":
        return capture
    if capture.stored:
        raise InputError(
            f"words are not available for a long capture kept on disk ({len(capture.source)} tokens): grouping would "
            "need every map in memory; show pieces (--group pieces), or run a shorter text")
    style = capture_style(capture)
    src = word_spans(capture.source.raw, capture.source.special, style)
    stacks: dict[str, np.ndarray] = {}
    dec_in, outputs = capture.decoder_inputs, capture.outputs
    out_spans = None if outputs is None or dec_in is None else word_spans(outputs.raw, outputs.special, style)
    for name, arr in capture.stacks.items():
        if name in ("attentions", "encoder_attentions"):
            stacks[name] = _group_stack(arr, src, src)
        elif name == "cross_attentions" and out_spans is not None:
            stacks[name] = _group_stack(arr, out_spans, src)
        elif name == "decoder_attentions" and out_spans is not None:
            stacks[name] = _group_stack(arr, out_spans, out_spans)
        else:  # pragma: no cover - a seq2seq stack without its decoder tokens
            stacks[name] = arr
    prompt = int(np.sum(src[:, 0] < capture.prompt_length)) if capture.prompt_length else 0
    if out_spans is not None and dec_in is not None and outputs is not None:
        pred = _group_prediction(capture.prediction, out_spans, first_piece_only=True)
        dec_in, outputs = group_seq(dec_in, out_spans, style), group_seq(outputs, out_spans, style)
    else:
        pred = _group_prediction(capture.prediction, src, first_piece_only=False)
        dec_in = outputs = None
    return replace(
        capture,
        source=group_seq(capture.source, src, style),
        stacks=stacks,
        decoder_inputs=dec_in,
        outputs=outputs,
        prompt_length=prompt,
        prediction=pred,
        token_style=style,
        group="words",
        source_spans=src,
        output_spans=out_spans,
        pieces=capture,
    )


def grouped(capture: Capture, group: str) -> Capture:
    """:func:`group_capture`, remembered on the capture (a window switching views or a toggle
    back and forth groups a capture once)."""
    check_group(group)
    if group == "pieces" or capture.group == "words":
        return group_capture(capture, group)
    cached = capture.__dict__.get("_words")
    if cached is None:
        cached = group_capture(capture, "words")
        object.__setattr__(capture, "_words", cached)
    return cached


def group_note(capture: Capture) -> str:
    """The note a title carries for a word-level capture ("" for pieces)."""
    if capture.group != "words":
        return ""
    return "words: pieces grouped, columns summed, rows averaged"
