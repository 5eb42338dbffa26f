"""analysis.tokens: readable token strings for every tokenizer family, never mojibake."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from analysis.capture import capture
from analysis.tokens import (
    EMPTY,
    PARTIAL,
    TokenizerStyle,
    byte_decoder,
    display_strings,
    output_word_ids,
    special_flags,
    token_bytes,
    token_seq,
    tokenizer_style,
    whitespace_word_ids,
)
from tests.tiny_models import build_byte_fallback_tokenizer

KOREAN = "나는 이 강의를 좋아한다"
WORDPIECE = TokenizerStyle(wordpiece_prefix="##")
METASPACE = TokenizerStyle(metaspace="▁")
BYTE_LEVEL = TokenizerStyle(byte_level=True)


def _gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's published byte → printable-character table (written out independently here)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _bl(text: str) -> str:
    """``text`` spelled as one byte-level token."""
    table = _gpt2_bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def _mojibake(s: str) -> list[str]:
    """Characters that betray bytes shown as Latin-1 / GPT-2 stand-ins (U+0080–U+017F: 'ì', 'ë',
    'Ġ', 'Ĥ', …)."""
    return [c for c in s if 0x80 <= ord(c) <= 0x17F]


def _hangul(s: str) -> list[str]:
    return [c for c in s if "\uac00" <= c <= "\ud7a3"]


def _shown(seq) -> str:
    """Concatenated display strings of the non-special, non-placeholder tokens (``◌`` partial
    characters and ``␣`` lone word-start markers dropped)."""
    return "".join(d for d, sp in zip(seq.display, seq.special, strict=True) if not sp and d not in (PARTIAL, "␣"))


# --------------------------------------------------------------------------------------------
# the three spellings, as pure functions
# --------------------------------------------------------------------------------------------
def test_byte_decoder_is_the_inverse_of_gpt2s_table():
    table = _gpt2_bytes_to_unicode()
    dec = byte_decoder()
    assert len(dec) == 256
    assert all(dec[ch] == b for b, ch in table.items())
    assert dec["Ġ"] == 0x20 and dec["Ċ"] == 0x0A


def test_wordpiece_display():
    raw = ["[CLS]", "learn", "##ing", "##s", "[SEP]"]
    assert display_strings(raw, [True, False, False, False, True], WORDPIECE) == ["[CLS]", "learn", "ing", "s", "[SEP]"]
    # a bare "##" is a real token (the characters), not a continuation marker
    assert display_strings(["##"], [False], WORDPIECE) == ["##"]


def test_metaspace_display():
    raw = ["▁J", "'", "aime", "▁ce", "▁cours", "</s>"]
    assert display_strings(raw, [False] * 5 + [True], METASPACE) == ["J", "'", "aime", "ce", "cours", "</s>"]
    assert display_strings(["▁"], [False], METASPACE) == ["␣"]


def test_byte_level_display():
    raw = ["I", _bl(" like"), _bl(" this"), _bl(" course")]
    assert raw[1] == "Ġlike"
    assert display_strings(raw, [False] * 4, BYTE_LEVEL) == ["I", "like", "this", "course"]


def test_byte_level_hangul_split_inside_a_character():
    b = " 이".encode()  # 20 EC 9D B4
    table = _gpt2_bytes_to_unicode()
    raw = [table[b[0]] + table[b[1]], table[b[2]], table[b[3]]]  # "Ġì", "Ŀ", "´"
    assert display_strings(raw, [False] * 3, BYTE_LEVEL) == [PARTIAL, PARTIAL, "이"]
    # a special token in between resets the decoder: no stale bytes leak into the next token
    raw2 = [table[0xEC], "<|endoftext|>", _bl("이")]
    assert display_strings(raw2, [False, True, False], BYTE_LEVEL) == [PARTIAL, "<|endoftext|>", "이"]


def test_byte_fallback_tokens():
    raw = ["▁", "<0xEC>", "<0x9D>", "<0xB4>", "▁course"]
    assert display_strings(raw, [False] * 5, METASPACE) == ["␣", PARTIAL, PARTIAL, "이", "course"]
    assert token_bytes("<0xEC>", METASPACE) == b"\xec"
    assert token_bytes("<0x0A>", TokenizerStyle()) == b"\n"


def test_whitespace_and_control_tokens_are_visible():
    assert display_strings(["Ċ", "ĉ", "Ġ", "ĊĊ", "č"], [False] * 5, BYTE_LEVEL) == ["↵", "⇥", "␣", "↵↵", "↵"]
    assert display_strings([""], [False], TokenizerStyle()) == [EMPTY]
    assert display_strings(["<0x07>"], [False], METASPACE) == ["\\x07"]


def test_invalid_utf8_is_a_placeholder_not_replacement_chars():
    # a lone continuation byte can never become a character
    out = display_strings([_gpt2_bytes_to_unicode()[0x9D]], [False], BYTE_LEVEL)
    assert out == [PARTIAL]
    assert "\ufffd" not in "".join(out)


# --------------------------------------------------------------------------------------------
# real tokenizers of each family (the tiny fixtures)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,style", [
    ("bert", WORDPIECE), ("distilbert", WORDPIECE), ("roberta", BYTE_LEVEL), ("gpt2", BYTE_LEVEL),
    ("llama", BYTE_LEVEL), ("bart", BYTE_LEVEL), ("t5", METASPACE), ("marian", METASPACE),
])
def test_tokenizer_style_detection(arch, style, loaded):
    assert tokenizer_style(loaded(arch).tokenizer) == style


def test_tokenizer_style_of_a_llama2_style_replace_decoder():
    assert tokenizer_style(build_byte_fallback_tokenizer()) == METASPACE


def test_wordpiece_fixture(loaded):
    cap = capture(loaded("bert"), "I like this coursework")
    cont = [i for i, r in enumerate(cap.source.raw) if r.startswith("##")]
    assert cont, cap.source.raw  # "coursework" is not in the tiny vocabulary
    for i in cont:
        assert cap.source.display[i] == cap.source.raw[i][2:]
    assert cap.source.display[0] == "[CLS]" and cap.source.display[-1] == "[SEP]"
    assert cap.source.special.tolist() == [True] + [False] * (len(cap.source) - 2) + [True]


def test_metaspace_fixture(loaded):
    cap = capture(loaded("t5"), "I like this course")
    assert "▁cours" in cap.source.raw
    assert cap.source.display[cap.source.raw.index("▁cours")] == "cours"
    assert not any("▁" in d for d in cap.source.display)
    assert cap.source.raw[-1] == "</s>" and cap.source.special[-1]


@pytest.mark.parametrize("arch", ["gpt2", "roberta", "llama", "bart"])
def test_byte_level_fixture(arch, loaded):
    cap = capture(loaded(arch), "I like this course")
    assert "Ġlike" in cap.source.raw
    assert cap.source.display[cap.source.raw.index("Ġlike")] == "like"
    assert _shown(cap.source) == "Ilikethiscourse"


@pytest.mark.parametrize("arch", ["gpt2", "roberta", "llama"])
def test_korean_through_byte_level_bpe_shows_hangul(arch, loaded):
    cap = capture(loaded(arch), KOREAN)
    src = cap.source
    assert any(_mojibake(r) for r in src.raw)  # the raw tokens are byte stand-ins…
    shown = _shown(src)
    assert not _mojibake("".join(src.display)), src.display  # …the display strings never are
    assert set(_hangul(KOREAN)) <= set(shown)
    assert shown == KOREAN.replace(" ", "")
    assert PARTIAL in src.display  # the tiny vocabulary splits at least one character
    assert "\ufffd" not in "".join(src.display)


def test_partial_tokens_complete_in_the_next_token(loaded):
    src = capture(loaded("gpt2"), KOREAN).source
    for i, d in enumerate(src.display):
        if d == PARTIAL:
            # the bytes of a partial token are not valid UTF-8 on their own
            with pytest.raises(UnicodeDecodeError):
                token_bytes(src.raw[i], BYTE_LEVEL).decode("utf-8")


@pytest.mark.parametrize("arch", ["gpt2", "roberta"])
def test_emoji(arch, loaded):
    src = capture(loaded(arch), "I like 😀 emoji").source
    assert "😀" in src.display
    k = src.display.index("😀")
    assert all(d == PARTIAL for d in src.display[k - 3 : k])  # 4 bytes, one token each here
    assert not _mojibake("".join(src.display))


def test_byte_fallback_fixture():
    tok = build_byte_fallback_tokenizer()
    text = "이 course 😀"
    enc = tok(text, return_offsets_mapping=True)
    seq = token_seq(tok, enc["input_ids"], text, enc["offset_mapping"])
    assert "<0xEC>" in seq.raw and "<0xF0>" in seq.raw
    assert not seq.special[list(seq.raw).index("<0xEC>")]  # byte tokens are ordinary vocabulary
    assert seq.display[list(seq.raw).index("<0xB4>")] == "이"
    assert seq.display[list(seq.raw).index("<0xEC>")] == PARTIAL
    assert "😀" in seq.display and "course" in seq.display
    assert not any(re.fullmatch(r"<0x[0-9A-F]{2}>", d) for d in seq.display)
    assert _shown(seq) == "이course😀"


@pytest.mark.parametrize("arch", ["gpt2", "roberta"])
def test_newlines_tabs_and_double_spaces_are_visible(arch, loaded):
    src = capture(loaded(arch), "I like\nthis  course\tnow").source
    assert "↵" in src.display and "⇥" in src.display and "␣" in src.display
    assert all(d.strip() for d in src.display)  # no blank label


@pytest.mark.parametrize("arch", ["bert", "gpt2", "t5"])
def test_display_never_blank_or_mojibake_for_any_text(arch, loaded):
    tok = loaded(arch).tokenizer
    for text in ["Ça va? Très bien.", "naïve café", "x\r\ny", "🙂🙃 ok", "日本語", KOREAN]:
        ids = tok(text)["input_ids"]
        seq = token_seq(tok, ids)
        assert all(d for d in seq.display), (text, seq.display)
        # Latin-1-range characters may only come from the text itself (é, ç, ï), never from bytes
        stray = [c for c in _mojibake("".join(seq.display)) if c not in text + text.lower()]
        assert not stray, (text, seq.display)


# --------------------------------------------------------------------------------------------
# word ids
# --------------------------------------------------------------------------------------------
def _words_from_tokens(text, seq):
    """Join each word's tokens' display strings back together (placeholders dropped)."""
    words: dict[int, str] = {}
    for d, w, sp in zip(seq.display, seq.word_ids, seq.special, strict=True):
        if w >= 0 and not sp and d not in (PARTIAL, "␣"):
            words[w] = words.get(w, "") + d
    return [words.get(i, "") for i in range(len(text.split()))]


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "llama", "t5", "marian", "bart"])
def test_word_ids_map_tokens_to_whitespace_words(arch, loaded):
    text = "I like this coursework"
    src = capture(loaded(arch), text).source
    words = text.split()
    assert all(w == -1 for w, sp in zip(src.word_ids, src.special, strict=True) if sp)
    ids = [w for w in src.word_ids if w >= 0]
    assert ids == sorted(ids) and set(ids) == set(range(len(words)))
    joined = _words_from_tokens(text, src)
    if arch == "bert":  # the uncased vocabulary lowercases
        words = [w.lower() for w in words]
    assert joined == words


def test_word_ids_korean(loaded):
    src = capture(loaded("gpt2"), KOREAN).source
    assert _words_from_tokens(KOREAN, src) == KOREAN.split()


def test_whitespace_word_ids_function():
    text = "ab  cd\nef"
    offsets = [(0, 0), (0, 2), (2, 4), (4, 6), (6, 7), (7, 9), (0, 0)]
    special = [True, False, False, False, False, False, True]
    # (2, 4) holds only the two spaces, (6, 7) only the newline: no word
    assert whitespace_word_ids(text, offsets, special) == [-1, 0, -1, 1, -1, 2, -1]
    # a token whose offsets include the leading space belongs to the word after it
    assert whitespace_word_ids(text, [(0, 2), (3, 6)], [False, False]) == [0, 1]
    assert whitespace_word_ids(text, None, special) == [-1] * 7


@pytest.mark.parametrize("arch", ["t5", "marian", "bart"])
def test_output_word_ids_of_a_target(arch, loaded):
    lm = loaded(arch)
    target = "J'aime beaucoup ce cours"
    cap = capture(lm, "I like this course", target=target)
    out = cap.outputs
    assert list(out.word_ids) == output_word_ids(lm.tokenizer, out.ids.tolist(), list(out.special))
    assert all(w == -1 for w, sp in zip(out.word_ids, out.special, strict=True) if sp)
    assert _words_from_tokens(target, out) == target.split()
    ids = [w for w in out.word_ids if w >= 0]
    assert ids == sorted(ids)


def test_output_word_ids_wordpiece_and_word_level():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "le": 3, "chat": 4, "noir": 5}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    ids = [3, 4, 5, 1]
    assert output_word_ids(tok, ids, list(special_flags(tok, ids))) == [0, 1, 2, -1]


def test_special_flags(loaded):
    tok = loaded("roberta").tokenizer
    ids = tok("I like <mask>")["input_ids"]
    flags = special_flags(tok, ids).tolist()
    raw = tok.convert_ids_to_tokens(ids)
    assert flags == [r in ("<s>", "</s>", "<mask>") for r in raw]
    assert raw[0] == "<s>" and raw[-1] == "</s>" and "<mask>" in raw


# --------------------------------------------------------------------------------------------
# the real bundled byte-level BPE (SmolLM2, Llama-3 style)
# --------------------------------------------------------------------------------------------
@pytest.mark.bundled
def test_korean_through_smollm2_shows_hangul(bundled_smollm2):
    tok = bundled_smollm2.tokenizer
    assert tokenizer_style(tok).byte_level
    enc = tok(KOREAN, return_offsets_mapping=True)
    seq = token_seq(tok, enc["input_ids"], KOREAN, enc["offset_mapping"])
    assert any(_mojibake(r) for r in seq.raw)
    assert not _mojibake("".join(seq.display)), seq.display
    shown = _shown(seq)
    assert set(_hangul(KOREAN)) <= set(shown)
    assert unicodedata.normalize("NFC", shown) == KOREAN.replace(" ", "")
    assert _words_from_tokens(KOREAN, seq) == KOREAN.split()


def test_whitespace_word_ids_of_a_special_token_with_offsets_and_of_mismatched_lists():
    from analysis.tokens import whitespace_word_ids

    # a special token that covers text (an added special token typed in the sentence) is no word
    assert whitespace_word_ids("ab <x> cd", [(0, 2), (3, 6), (7, 9)], [False, True, False]) == [0, -1, 2]
    # offsets past the end of the text, an empty token inside a word
    assert whitespace_word_ids("ab cd", [(3, 9), (1, 1)], [False, False]) == [1, -1]
    with pytest.raises(ValueError):
        whitespace_word_ids("ab cd", [(0, 2)], [False, False])


def test_word_ids_by_display_numbers_the_tokens_that_are_not_special():
    from analysis.tokens import word_ids_by_display

    assert word_ids_by_display(["[CLS]", "a", "b", "[SEP]", "c"], [True, False, False, True, False]) == [-1, 0, 1, -1, 2]
    assert word_ids_by_display([], []) == []


@pytest.mark.parametrize(("raw", "display", "style"), [
    (["<s>", "a", "b"], ["<s>", "◌", "b"], "byte-bpe"),      # a part of a character shows
    (["Ġa", "b"], ["a", "b"], "byte-bpe"),                   # a space byte
    (["a", "Ċ"], ["a", "↵"], "byte-bpe"),                    # a newline byte
    (["[CLS]", "play", "##ing"], ["[CLS]", "play", "ing"], "wordpiece"),
    (["▁play", "ing", "</s>"], ["play", "ing", "</s>"], "sentencepiece"),
    (["je", "aime"], ["je", "aime"], "word"),
    (["x##", "y▁"], ["x##", "y▁"], "word"),                  # a marker inside a token is no marker
    ([], [], "word"),
])
def test_style_of_tokens_reads_the_spelling_off_the_tokens(raw, display, style):
    from analysis.tokens import style_of_tokens

    assert style_of_tokens(raw, display) == style


# -- the spelling of tokenizers without a tokenizer.json, and of unusual ones -------------------
def _slow(name: str, **attrs):
    return type(name, (), attrs)()


@pytest.mark.parametrize(("name", "attrs", "want"), [
    ("BertTokenizer", {}, TokenizerStyle(wordpiece_prefix="##")),
    ("DistilBertTokenizer", {}, TokenizerStyle(wordpiece_prefix="##")),
    ("RobertaTokenizer", {}, TokenizerStyle()),                       # byte-level, not ##
    ("MarianTokenizer", {}, TokenizerStyle(metaspace="▁")),
    ("T5Tokenizer", {}, TokenizerStyle(metaspace="▁")),
    ("XLMSpmTokenizer", {}, TokenizerStyle(metaspace="▁")),
    ("AlbertTokenizer", {"sp_model": object()}, TokenizerStyle(metaspace="▁")),   # "bert" in its name
    ("CamembertTokenizer", {"sp_model": object()}, TokenizerStyle(metaspace="▁")),
    ("SomeTokenizer", {"sp_model": None}, TokenizerStyle()),
    ("CharTokenizer", {}, TokenizerStyle()),
])
def test_slow_tokenizers_are_read_by_their_class(name, attrs, want):
    assert tokenizer_style(_slow(name, **attrs)) == want


class _Backend:
    def __init__(self, spec):
        self.spec = spec
        self.calls = 0

    def to_str(self):
        self.calls += 1
        return json.dumps(self.spec, ensure_ascii=False)


def _fast(spec):
    return _slow("PreTrainedTokenizerFast", backend_tokenizer=_Backend(spec))


@pytest.mark.parametrize(("spec", "want"), [
    # a WordPiece decoder with its own prefix, inside a Sequence
    ({"decoder": {"type": "Sequence", "decoders": [{"type": "Strip"}, {"type": "WordPiece", "prefix": "@@"}]}},
     TokenizerStyle(wordpiece_prefix="@@")),
    ({"decoder": {"type": "WordPiece"}}, TokenizerStyle(wordpiece_prefix="##")),
    # no decoder: the WordPiece model's prefix
    ({"model": {"type": "WordPiece", "continuing_subword_prefix": "__"}}, TokenizerStyle(wordpiece_prefix="__")),
    ({"model": {"type": "WordPiece"}}, TokenizerStyle(wordpiece_prefix="##")),
    ({"model": {"type": "BPE"}}, TokenizerStyle()),
    # byte level in the pre-tokenizer only, inside a Sequence of pretokenizers
    ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}},
     TokenizerStyle(byte_level=True)),
    ({"decoder": {"type": "Metaspace", "replacement": "_"}}, TokenizerStyle(metaspace="_")),
    ({"pre_tokenizer": {"type": "Metaspace"}}, TokenizerStyle(metaspace="▁")),
    ({"decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}]}},
     TokenizerStyle(metaspace="▁")),
    ({"decoder": {"type": "Replace", "pattern": {"String": "_"}, "content": " "}}, TokenizerStyle()),
    ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Metaspace"}]}}, TokenizerStyle()),
    ({}, TokenizerStyle()),
])
def test_fast_tokenizers_are_read_by_their_decoder_and_model(spec, want):
    assert tokenizer_style(_fast(spec)) == want


def test_the_style_is_read_once_per_tokenizer():
    tok = _fast({"decoder": {"type": "ByteLevel"}})
    assert tokenizer_style(tok) == BYTE_LEVEL and tokenizer_style(tok) == BYTE_LEVEL
    assert tok.backend_tokenizer.calls == 1


@pytest.mark.parametrize(("tok", "style", "want"), [
    ("##", TokenizerStyle(wordpiece_prefix="##"), b"##"),         # the prefix alone is text
    ("##ing", TokenizerStyle(wordpiece_prefix="##"), b"ing"),
    ("play", TokenizerStyle(wordpiece_prefix="##"), b"play"),
    ("▁le▁chat", TokenizerStyle(metaspace="▁"), b" le chat"),
    ("Ġ한", BYTE_LEVEL, "Ġ한".encode()),                          # not all stand-ins: the text as written
    ("ĠìĿ´", BYTE_LEVEL, " 이".encode()),
    ("<0xeb>", TokenizerStyle(), b"\xeb"),
    ("<0xZZ>", TokenizerStyle(), b"<0xZZ>"),
])
def test_token_bytes(tok, style, want):
    assert token_bytes(tok, style) == want


@pytest.mark.parametrize(("tok", "style", "want"), [
    ("play", TokenizerStyle(wordpiece_prefix="##"), b" play"),   # a WordPiece word start
    ("##ing", TokenizerStyle(wordpiece_prefix="##"), b"ing"),
    ("chat", TokenizerStyle(), b" chat"),                         # a whole-word vocabulary
    ("▁chat", TokenizerStyle(metaspace="▁"), b" chat"),
    ("chat", TokenizerStyle(metaspace="▁"), b"chat"),
    ("Ġchat", BYTE_LEVEL, b" chat"),
    ("chat", BYTE_LEVEL, b"chat"),
])
def test_spaced_token_bytes(tok, style, want):
    from analysis.tokens import spaced_token_bytes

    assert spaced_token_bytes(tok, style) == want


@pytest.mark.parametrize(("text", "want"), [
    ("", EMPTY), ("   ", "␣"), (" a ", "a"), ("a\r\nb", "a↵b"), ("a\rb", "a↵b"), ("\tx", "⇥x"),
    ("a\x07", "a\\x07"), ("a\x85", "a\\x85"), ("a\u2028", "a\\u2028"), ("\u200b", "\\u200b"),
])
def test_visible_labels(text, want):
    from analysis.tokens import _visible

    assert _visible(text) == want


def test_a_special_token_cuts_a_pending_character():
    # the first two bytes of 이, a special token, then the last byte: three placeholders, no 이
    raw = ["<0xEC>", "<0x9D>", "</s>", "<0xB4>", "a"]
    assert display_strings(raw, [False, False, True, False, False], METASPACE) == [PARTIAL, PARTIAL, "</s>", PARTIAL, "a"]
