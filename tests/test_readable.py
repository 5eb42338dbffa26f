"""analysis.readable: a text the tokenizer cannot read gets a warning naming a bundled model
that reads it (issue 18, "Input the model cannot read")."""

from __future__ import annotations

import pytest

import analysis.readable as readable
from analysis.capture import capture
from analysis.readable import (
    SUGGEST_ORDER,
    WARNING,
    UnknownCount,
    bundled_reader,
    installed_readers,
    suggest_bundled,
    tokenizer_reads,
    unknown_count,
    unknown_warning,
)
from tests.tiny_models import build_tokenizer

KOREAN = "나는 이 강의를 좋아한다"
ENGLISH = "I like this course"
RUSSIAN = "Привет мир как дела"


def word_level(words=("i", "like", "this", "course", "the", "cat")):
    """A tiny word-level tokenizer like the toy translators': lowercase, whitespace split,
    ``$A </s>``; <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: 3 + i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")


def count(tok, text: str, offsets: bool = True) -> UnknownCount:
    enc = tok(text, return_offsets_mapping=offsets)
    return unknown_count(tok, enc["input_ids"], enc["offset_mapping"] if offsets else None)


# -- counting -------------------------------------------------------------------------------
@pytest.mark.parametrize("offsets", [True, False])
def test_unknown_tokens_of_the_text_are_counted_without_added_tokens(offsets):
    tok = word_level()
    assert count(tok, KOREAN, offsets) == UnknownCount(4, 4, "<unk>")  # </s> is not the text's
    assert count(tok, ENGLISH, offsets) == UnknownCount(0, 4, "<unk>")
    assert count(tok, "I like this dog", offsets) == UnknownCount(1, 4, "<unk>")


def test_most_means_more_than_half():
    assert UnknownCount(3, 4, "<unk>").mostly_unknown
    assert not UnknownCount(2, 4, "<unk>").mostly_unknown  # exactly half: the model still reads half
    assert not UnknownCount(0, 0, "<unk>").mostly_unknown
    tok = word_level()
    assert count(tok, "I like pizza and pasta").mostly_unknown  # 3 of 5
    assert not count(tok, "I like this pasta").mostly_unknown


def test_a_sentencepiece_word_start_marker_is_not_a_token_of_its_own():
    """SentencePiece writes an unknown word as ``▁`` + ``<unk>``: one unknown word, not half."""
    tok = build_tokenizer("unigram")
    enc = tok(RUSSIAN)
    assert tok.convert_ids_to_tokens(enc["input_ids"]).count("▁") == 4
    assert count(tok, RUSSIAN) == UnknownCount(4, 4, "<unk>")
    assert not count(tok, ENGLISH).mostly_unknown


def test_wordpiece_unknown_characters():
    tok = build_tokenizer("wordpiece")
    c = count(tok, "我喜欢这门课")
    assert c == UnknownCount(6, 6, "[UNK]")
    assert count(tok, "我喜欢这门课", offsets=False) == c
    assert count(tok, KOREAN).unknown == 0  # trained on Korean too


def test_byte_level_tokenizers_have_no_unknown_token():
    """GPT-2 names <|endoftext|> as its unknown token, which is its EOS: nothing is ever unknown."""
    tok = build_tokenizer("gpt2")
    assert readable.unknown_id(tok) is None
    c = count(tok, "我喜欢这门课 🙂")
    assert c.unknown == 0 and c.total > 0 and c.token is None
    assert tokenizer_reads(tok, "我喜欢这门课 🙂")


# -- suggestions ----------------------------------------------------------------------------
def tiny_readers() -> dict:
    return {"words": lambda t: tokenizer_reads(word_level(), t),
            "wordpiece": lambda t: tokenizer_reads(build_tokenizer("wordpiece"), t),
            "bytes": lambda t: True}


def test_the_first_reader_in_order_is_suggested_and_the_model_itself_never():
    readers = tiny_readers()
    assert suggest_bundled(ENGLISH, readers=readers) == "bundled:words"
    assert suggest_bundled(KOREAN, readers=readers) == "bundled:wordpiece"  # the word list has no Korean
    assert suggest_bundled(KOREAN, exclude="bundled:wordpiece", readers=readers) == "bundled:bytes"
    assert suggest_bundled("我喜欢这门课", readers=readers) == "bundled:bytes"
    assert suggest_bundled("我喜欢这门课", readers={"words": readers["words"]}) is None


def test_the_warning_says_how_many_and_what_to_load():
    text = unknown_warning(UnknownCount(5, 5, "<unk>"), KOREAN, "bundled:translator-en-fr",
                           readers={"translator-en-fr": lambda t: False, "smollm2": lambda t: True})
    assert text == ("warning: 5 of 5 tokens of the text are unknown to this tokenizer (<unk>), so the model "
                    "cannot read it; for this text try bundled:smollm2")
    assert text.startswith(WARNING) and "\n" not in text
    none = unknown_warning(UnknownCount(3, 4, "[UNK]"), "x", readers={})
    assert none is not None and none.endswith("; none of the installed bundled models reads it either")
    assert unknown_warning(UnknownCount(2, 4, "<unk>"), "x", readers={}) is None


def test_a_model_that_is_not_installed_is_not_suggested(monkeypatch):
    real = readable._bundled_location
    monkeypatch.setattr(readable, "_bundled_location", lambda name: None if name == "smollm2" else real(name))
    assert "smollm2" not in installed_readers()
    assert bundled_reader("smollm2") is None
    assert suggest_bundled("🙂 🙂 🙂") != "bundled:smollm2"


def test_the_capture_of_an_unreadable_text_warns_first(loaded):
    lm = loaded("marian")
    cap = capture(lm, RUSSIAN, target="J'aime ce cours")
    assert cap.notes and cap.notes[0].startswith("warning: 4 of 4 tokens of the text are unknown to this tokenizer (<unk>)")
    assert capture(lm, ENGLISH, target="J'aime ce cours").notes == ()
    # a byte-level model reads everything: never a warning
    assert not any(n.startswith(WARNING) for n in capture(loaded("gpt2"), "Привет 🙂 我").notes)


# -- the real bundled tokenizers ------------------------------------------------------------
@pytest.mark.bundled
def test_bundled_readers_on_their_tokenizers():
    readers = installed_readers()
    assert list(readers) == list(SUGGEST_ORDER)
    assert readers["smollm2"]("我喜欢这门课 🙂 나는")  # byte-level: every script
    assert readers["minilm"](ENGLISH) and not readers["minilm"]("我喜欢这门课")
    assert not readers["minilm"](KOREAN)  # jamo pieces, but one [UNK]
    for name in ("translator-en-fr", "translator-en-ko"):
        assert readers[name](ENGLISH)
        assert not readers[name]("the quick brown fox")
    # the translators' vocabulary holds their target language, but they translate from English
    assert not readers["translator-en-ko"](KOREAN)
    assert not readers["translator-en-fr"]("j'aime ce cours")
    assert suggest_bundled(KOREAN) == "bundled:smollm2"
    without = {k: v for k, v in readers.items() if k != "smollm2"}
    assert suggest_bundled("I like this course", exclude="bundled:minilm", readers=without) == "bundled:translator-en-fr"
    assert suggest_bundled(KOREAN, readers=without) is None


@pytest.mark.bundled
def test_korean_into_the_french_translator_warns():
    from analysis.loader import load_model

    lm = load_model("bundled:translator-en-fr", device="cpu")
    cap = capture(lm, KOREAN, generate=True)
    assert cap.notes[0] == ("warning: 4 of 4 tokens of the text are unknown to this tokenizer (<unk>), so the model "
                            "cannot read it; for this text try bundled:smollm2")
    assert not any(n.startswith(WARNING) for n in capture(lm, ENGLISH, generate=True).notes)


# -- the pieces of the rules (what mutation testing asked for) ----------------------------------
def test_only_word_start_markers_are_bare():
    raw = ["▁", "Ġ", "▁Ġ", " ", "X", "ġ", "▁x", None]
    keep = readable.from_text(list(range(len(raw))), [False] * len(raw), None, None, raw)
    assert keep.tolist() == [False, False, False, False, True, True, True, True]


@pytest.mark.parametrize("role", ["bos", "eos", "pad", "cls", "sep"])
def test_an_unknown_token_shared_with_a_template_token_is_none(role):
    from types import SimpleNamespace

    assert readable.unknown_id(SimpleNamespace(unk_token_id=7, **{f"{role}_token_id": 7})) is None
    assert readable.unknown_id(SimpleNamespace(unk_token_id=7, **{f"{role}_token_id": 3})) == 7


def test_a_tokenizer_without_the_attributes_has_no_unknown_token_or_a_plain_one():
    from types import SimpleNamespace

    assert readable.unknown_id(SimpleNamespace()) is None
    assert readable.unknown_id(SimpleNamespace(unk_token_id=5)) == 5  # no bos/eos/pad/cls/sep at all


@pytest.mark.parametrize("kind", ["unigram", "gpt2", "wordpiece"])
def test_raw_tokenizers_of_every_model_kind_read_what_they_know(kind):
    """A Unigram model has no ``unk_token`` attribute (only an unk_id it does not expose), a
    byte-level BPE one has None: the same unknown token as the transformers tokenizer, or none."""
    tok = build_tokenizer(kind)
    raw = tok.backend_tokenizer
    assert readable.raw_unknown_id(raw) == readable.unknown_id(tok)
    assert readable.raw_tokenizer_reads(raw, ENGLISH)
    assert readable.raw_tokenizer_reads(raw, "我喜欢这门课 🙂") is (kind == "gpt2")


def test_a_unigram_model_without_an_unknown_token_has_none():
    from tokenizers import Tokenizer, models

    raw = Tokenizer(models.Unigram([("a", -1.0), ("b", -2.0)], unk_id=None))
    assert readable.raw_unknown_id(raw) is None
    assert readable.raw_tokenizer_reads(raw, "ab")


def test_the_warning_asks_the_readers_about_this_text_and_never_suggests_the_model_itself():
    readers = {"a": lambda t: t == KOREAN, "b": lambda t: t == KOREAN}
    many = UnknownCount(4, 4, "<unk>")
    assert unknown_warning(many, KOREAN, "bundled:c", readers=readers).endswith("try bundled:a")
    assert unknown_warning(many, KOREAN, "bundled:a", readers=readers).endswith("try bundled:b")
    assert unknown_warning(many, ENGLISH, "bundled:c", readers=readers).endswith("reads it either")


@pytest.mark.bundled
def test_finding_a_reader_never_reads_the_weights(monkeypatch):
    """Only the tokenizer decides who reads a text: the weights are not hashed (a suggestion must
    not read 100 MB), so even a model whose weights would fail the check is a reader."""
    import analysis.bundled as bundled

    monkeypatch.setattr(bundled, "sha256_file", lambda path: "0" * 64)
    for name in ("minilm", "translator-en-fr"):
        assert bundled_reader(name) is not None, name


@pytest.mark.bundled
def test_only_the_toy_translators_are_limited_to_their_grammars_words():
    readers = installed_readers()
    assert readers["minilm"]("the quick brown fox")  # MiniLM reads any English word
    assert not readers["translator-en-fr"]("the quick brown fox")
