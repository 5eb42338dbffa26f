"""Words, not pieces (issue #14, part 1): word spans, word maps, exports and the window's toggle.

The word maps are checked against an independent loop computation from the piece maps, written
here after Clark et al. 2019's ``get_word_word_attention`` ("mean" mode): attention *to* a word is
the sum over its pieces, attention *from* a word the mean over its pieces.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.capture import capture
from analysis.result import Capture
from analysis.words import group_capture, grouped, word_spans

KOREAN = "나는 이 강의를 좋아한다"


# -- the independent computation -------------------------------------------------------------
def clark_word_word(attn: np.ndarray, row_words: list[list[int]], col_words: list[list[int]]) -> np.ndarray:
    """``attn`` ``[Q, K]`` of pieces → words: first the columns (sum over a word's pieces), then the
    rows (mean over a word's pieces), one loop per word, as in Clark et al.'s attention-analysis code."""
    by_cols = []
    for q in range(attn.shape[0]):
        row = []
        for word in col_words:
            total = 0.0
            for k in word:
                total += float(attn[q, k])
            row.append(total)
        by_cols.append(row)
    out = []
    for word in row_words:
        acc = [0.0] * len(col_words)
        for q in word:
            for j in range(len(col_words)):
                acc[j] += by_cols[q][j]
        out.append([v / len(word) for v in acc])
    return np.array(out)


def words_of(spans: np.ndarray) -> list[list[int]]:
    return [list(range(s, e)) for s, e in spans.tolist()]


def assert_cover_once(spans: np.ndarray, n: int) -> None:
    covered = [p for s, e in spans.tolist() for p in range(s, e)]
    assert covered == list(range(n)), spans.tolist()
    assert all(e > s for s, e in spans.tolist())


# -- spans ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "special", "style", "expected"), [
    (["[CLS]", "play", "##ing", "chess", "##ly", "[SEP]"], [1, 0, 0, 0, 0, 1], "wordpiece",
     [[0, 1], [1, 3], [3, 5], [5, 6]]),
    (["▁j", "'", "aime", "▁ce", "▁cours", "</s>"], [0, 0, 0, 0, 0, 1], "sentencepiece",
     [[0, 3], [3, 4], [4, 5], [5, 6]]),
    (["<s>", "ëĤ", "ĺëĬĶ", "ĠìĿ´", "Ġê°ķ", "ìĿĺë¥¼"], [1, 0, 0, 0, 0, 0], "byte-bpe",
     [[0, 1], [1, 3], [3, 4], [4, 6]]),
    (["<pad>", "je", "aime", "ce", "</s>"], [1, 0, 0, 0, 1], "word", [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]),
    (["[CLS]", "##odd", "[SEP]", "##x"], [1, 0, 1, 0], "wordpiece", [[0, 1], [1, 2], [2, 3], [3, 4]]),
])
def test_word_spans_per_tokenizer_style(raw, special, style, expected):
    spans = word_spans(raw, [bool(s) for s in special], style)
    assert spans.tolist() == expected
    assert_cover_once(spans, len(raw))


# -- word maps of the three kinds of model ----------------------------------------------------
CASES = {
    "bert": ("I like this course unbelievably", {}),
    "llama": (KOREAN, {}),
    "gpt2": ("I like this course", {"generate": True, "max_new_tokens": 4}),
    "marian": ("I like this course", {"target": "I like this course"}),
    "t5": ("I like this course", {"target": "I like this course"}),
}


def _capture(loaded, arch: str) -> Capture:
    text, kw = CASES[arch]
    return capture(loaded(arch), text, **kw)


def _check_stack(cap: Capture, words: Capture, name: str, rows: np.ndarray, cols: np.ndarray) -> None:
    pieces = cap.attention(name)
    got = words.attention(name)
    n_layers, n_heads = pieces.shape[:2]
    assert got.shape == (n_layers, n_heads, len(rows), len(cols)), name
    for layer in range(n_layers):
        for head in range(n_heads):
            want = clark_word_word(pieces[layer, head], words_of(rows), words_of(cols))
            np.testing.assert_allclose(got[layer, head], want, rtol=1e-5, atol=1e-6, err_msg=f"{name} {layer} {head}")
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("arch", list(CASES))
def test_word_maps_are_clarks_word_word_attention(loaded, arch):
    cap = _capture(loaded, arch)
    words = group_capture(cap, "words")
    assert isinstance(words, Capture) and words.group == "words" and words.pieces is cap
    src = words.source_spans
    assert src is not None
    assert_cover_once(src, len(cap.source))
    assert len(words.source) == len(src)
    if cap.kind == "seq2seq":
        out = words.output_spans
        assert out is not None and cap.outputs is not None
        assert_cover_once(out, len(cap.outputs))
        _check_stack(cap, words, "encoder_attentions", src, src)
        _check_stack(cap, words, "cross_attentions", out, src)
        _check_stack(cap, words, "decoder_attentions", out, out)
        assert len(words.outputs) == len(words.decoder_inputs) == len(out)
        assert [w for w in words.outputs.display if w != "</s>"] == ["I", "like", "this", "course"] or arch == "t5"
    else:
        _check_stack(cap, words, "attentions", src, src)
    # the pieces are untouched, grouping is idempotent and reversible
    assert cap.group == "pieces" and cap.pieces is None
    assert group_capture(words, "words") is words and group_capture(words, "pieces") is cap
    assert grouped(cap, "words") is grouped(cap, "words")


@pytest.mark.parametrize("arch", ["llama", "gpt2", "marian"])
def test_word_level_causal_mask_hides_later_words_only(loaded, arch):
    cap = _capture(loaded, arch)
    words = group_capture(cap)
    name = "decoder_attentions" if cap.kind == "seq2seq" else "attentions"
    a = words.attention(name)
    n = a.shape[-1]
    later = np.triu(np.ones((n, n), dtype=bool), k=1)
    assert np.all(a[..., later] == 0.0)
    assert words.is_causal(name)


def test_korean_byte_level_words(loaded):
    cap = capture(loaded("llama"), KOREAN)
    assert "◌" in cap.source.display  # the pieces split a syllable
    words = group_capture(cap)
    assert [w for w, sp in zip(words.source.display, words.source.special, strict=True) if not sp] == \
        ["나는", "이", "강의를", "좋아한다"]


@pytest.mark.bundled
def test_smollm2_korean_gives_four_words(bundled_smollm2):
    cap = capture(bundled_smollm2, KOREAN)
    words = group_capture(cap)
    assert len(cap.source) > 8
    assert [w for w, sp in zip(words.source.display, words.source.special, strict=True) if not sp] == \
        ["나는", "이", "강의를", "좋아한다"]
    np.testing.assert_allclose(words.attention().sum(-1), 1.0, atol=2e-3)


def test_hidden_special_tokens_and_renormalisation_on_words(loaded):
    from analysis.figures import ViewSpec
    from analysis.views import view_data

    cap = _capture(loaded, "bert")
    spec = ViewSpec(view="head", head=None, hide_special=True, renormalize=True, group="words")
    d = view_data(cap, spec)
    assert list(d.col_labels) == ["i", "like", "this", "course", "unbelievably"]
    np.testing.assert_allclose(np.ma.filled(d.matrix, 0).sum(axis=1), 1.0, atol=1e-5)
    assert "words" in d.title


def test_steps_go_by_output_word_with_first_piece_candidates(loaded):
    cap = capture(loaded("marian"), "I like this course", generate=True)
    words = group_capture(cap)
    assert words.output_spans is not None
    starts = words.output_spans[:, 0].tolist()
    got = dict(words.prediction.per_position)
    for pos, items in cap.prediction.per_position:
        if pos in starts:
            assert got[starts.index(pos)] == items


# -- exports ---------------------------------------------------------------------------------
def test_npz_words_and_pieces(tiny_model_dir, tmp_path):
    from analysis.cli import main

    folder = str(tiny_model_dir("marian"))
    base = ["--model", folder, "--text", "I like this course", "--target", "I like this course"]
    assert main([*base, "--export-npz", str(tmp_path / "p.npz")]) == 0
    assert main([*base, "--export-npz", str(tmp_path / "w.npz"), "--group", "words"]) == 0
    p = np.load(tmp_path / "p.npz", allow_pickle=False)
    w = np.load(tmp_path / "w.npz", allow_pickle=False)
    assert "input_word_spans" not in p and "output_word_spans" not in p
    assert set(w.files) == set(p.files) | {"input_word_spans", "output_word_spans"}
    src, out = w["input_word_spans"], w["output_word_spans"]
    assert src.dtype == np.int32 and out.dtype == np.int32 and src.shape[1] == 2 and out.shape[1] == 2
    assert_cover_once(src, len(p["input_tokens"]))
    assert_cover_once(out, len(p["output_tokens"]))
    np.testing.assert_array_equal(w["input_ids"], p["input_ids"])  # spans index the piece ids
    assert w["encoder_attentions"].shape[2:] == (len(src), len(src))
    assert w["cross_attentions"].shape[2:] == (len(out), len(src))
    assert w["decoder_attentions"].shape[2:] == (len(out), len(out))
    assert len(w["input_tokens"]) == len(w["input_special"]) == len(src)
    assert len(w["output_tokens"]) == len(w["decoder_input_tokens"]) == len(out)
    assert list(w["input_tokens"]) == ["I", "like", "this", "course", "</s>"]
    for layer in range(p["cross_attentions"].shape[0]):
        for head in range(p["cross_attentions"].shape[1]):
            want = clark_word_word(p["cross_attentions"][layer, head], words_of(out), words_of(src))
            np.testing.assert_allclose(w["cross_attentions"][layer, head], want, rtol=1e-5, atol=1e-6)


def test_npz_without_group_is_unchanged(loaded):
    from analysis.npz import npz_arrays

    cap = _capture(loaded, "bert")
    arrays = npz_arrays(cap)
    assert set(arrays) == {"attentions", "input_tokens", "input_ids", "input_special", "output_text", "kind", "model"}
    np.testing.assert_array_equal(arrays["attentions"], cap.attention())


VIEWS = ("head", "layer", "model", "lines", "alignment", "steps", "stats", "rollout", "flow")


@pytest.mark.parametrize("view", VIEWS)
def test_cli_group_words_on_every_view(tiny_model_dir, loaded, tmp_path, view):
    from matplotlib.image import imread

    from analysis.cli import build_parser, figure_spec, main
    from analysis.figures import ViewInputs, build_figure, save_figure

    folder = str(tiny_model_dir("marian"))
    args = ["--model", folder, "--text", "I like this course", "--target", "I like this course",
            "--view", view, "--group", "words", "--dpi", "72"]
    if view in ("rollout", "flow", "stats"):
        args += ["--stack", "encoder"]
    out = tmp_path / f"{view}.png"
    assert main([*args, "--export-png", str(out)]) == 0
    # the same picture as the figure of the word-level capture
    cap = capture(loaded("marian"), "I like this course", target="I like this course")
    spec = figure_spec(build_parser().parse_args(args))
    assert spec.group == "words"
    fig = build_figure(group_capture(cap), spec, ViewInputs(model_folder=folder))
    ref = save_figure(fig, tmp_path / f"{view}-ref.png", dpi=72)
    np.testing.assert_array_equal(imread(out), imread(ref))
    if view in ("stats", "rollout", "flow", "head"):
        assert "words" in fig.get_suptitle()


def test_session_keeps_the_pieces(loaded, tmp_path):
    from analysis.session import load_session, save_session

    cap = _capture(loaded, "llama")
    save_session(tmp_path / "s.headmap", group_capture(cap), model_ref="x", inputs={}, options={"group": "words"})
    back = load_session(tmp_path / "s.headmap").capture
    assert back.group == "pieces" and len(back.source) == len(cap.source)
    assert back.token_style == cap.token_style == "byte-bpe"


# -- the window ------------------------------------------------------------------------------
def test_words_toggle_changes_the_head_view_and_export_matches(qtbot, window, tiny_model_dir, tmp_path):
    from analysis.figures import build_figure
    from analysis.views import view_data
    from tests.gui_fixtures import load, use_target
    from tests.test_view_exports import (
        assert_same,
        figure_images,
        live_data,
        live_figure,
        tab_named,
    )

    win = window
    use_target(win, "I like this course")
    win.input_panel.text.setPlainText("I like this course")
    load(qtbot, win, tiny_model_dir("marian"))
    head = tab_named(win, "Head")
    qtbot.wait(10)
    pieces_labels = list(live_data(head).col_labels)
    assert len(pieces_labels) == 8  # ▁ I ▁like ▁thi s ▁cours e </s>
    win.toolbar.words.setChecked(True)
    qtbot.wait(10)
    assert win.state.spec.group == "words" and win.capture.group == "words"
    assert list(live_data(head).col_labels) == ["I", "like", "this", "course", "</s>"]
    assert win.tokens.item(0, 2).text() == "this" and win.tokens.item(1, 2).text() == "thi·s"
    for name in ("Head", "Layer", "Lines", "Steps", "Statistics"):
        tab = tab_named(win, name)
        if name == "Statistics":
            qtbot.waitUntil(lambda t=tab: t.capture is win.capture and t.data is not None, timeout=60_000)
        qtbot.wait(10)
        spec, inputs = tab.export_request()
        assert spec.group == "words"
        assert_same(view_data(win.state.pieces, spec, inputs), live_data(tab), name)
        fig = build_figure(win.state.pieces, spec, inputs)
        for a, b in zip(figure_images(fig), figure_images(live_figure(tab)), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    win.toolbar.words.setChecked(False)
    qtbot.wait(10)
    tab_named(win, "Head")
    qtbot.wait(10)
    assert list(live_data(head).col_labels) == pieces_labels


def test_a_group_across_words_reads_with_a_space_between_them():
    """A decoder-input group holds the last piece of one word and the first of the next: its
    label keeps them apart in every spelling; the pieces of one word stay joined."""
    from analysis.words import _word_text

    assert _word_text(["나는", "매"], [False, False], "wordpiece") == "나는 매"
    assert _word_text(["j'", "##aime"], [False, False], "wordpiece") == "j'aime"
    assert _word_text(["ce", "j'", "##aime"], [False] * 3, "wordpiece") == "ce j'aime"
    assert _word_text(["le", "chat"], [False, False], "word") == "le chat"
    assert _word_text(["▁le", "▁ch", "at"], [False] * 3, "sentencepiece") == "le chat"
    assert _word_text(["Ġthe", "Ġcat"], [False, False], "byte-bpe") == "the cat"
    assert _word_text(["<pad>", "나는"], [True, False], "wordpiece") == "<pad> 나는"


@pytest.mark.parametrize("arch", ["bert", "llama", "gpt2", "marian"])
def test_a_capture_without_a_recorded_style_groups_the_same(loaded, arch):
    """Sessions saved before the token style was recorded: the style is read off the tokens, and
    the words come out as from the recorded style."""
    from dataclasses import replace

    from analysis.words import capture_style

    cap = _capture(loaded, arch)
    assert cap.token_style
    old = replace(cap, token_style="")
    assert capture_style(old) == cap.token_style
    got, want = group_capture(old), group_capture(cap)
    np.testing.assert_array_equal(got.source_spans, want.source_spans)
    assert got.source.display == want.source.display
    if cap.kind == "seq2seq":
        np.testing.assert_array_equal(got.output_spans, want.output_spans)
    assert capture_style(replace(cap, token_style="wordpiece")) == "wordpiece"  # a recorded style wins


def test_one_word_of_one_piece_reads_as_byte_bpe_when_its_bytes_say_so():
    """A byte-level capture whose words are all one piece looks like a whole-word vocabulary;
    its byte stand-ins (ì …) give it away."""
    from analysis.result import Prediction, TokenSeq
    from analysis.words import capture_style

    raw = ("ìĿ´",)
    seq = TokenSeq(ids=np.array([5]), raw=raw, display=("이",), special=np.array([False]), word_ids=(0,))
    a = np.ones((1, 1, 1, 1), dtype=np.float32)
    cap = Capture(model="m", kind="decoder", architecture="LlamaForCausalLM", text="이", source=seq,
                  stacks={"attentions": a}, token_style="",
                  prediction=Prediction(per_position=((0, (("x", 1.0),)),)))
    assert capture_style(cap) == "byte-bpe"
    words = group_capture(cap)
    assert words.source_spans.tolist() == [[0, 1]]
    assert words.prediction.per_position == ((0, (("x", 1.0),)),)



@pytest.mark.parametrize(
    "raw, style",
    [
        (("hello", "world"), "word"),  # plain words stay words
        (("나는", "좋아한다"), "word"),  # Hangul is above U+00FF but no byte stand-in
        (("ÿes",), "word"),  # U+00FF is a byte that stands for itself, not a stand-in
        (("Āb",), "byte-bpe"),  # U+0100, the first stand-in (byte 0)
    ],
)
def test_only_byte_stand_ins_above_latin1_make_one_piece_words_byte_bpe(raw, style):
    """A whole-word spelling turns byte-level only for a character above U+00FF that the byte
    table maps (a stand-in); Hangul and Latin-1 letters keep it whole-word, and the grouped
    capture keeps the style it was read with."""
    from analysis.result import TokenSeq
    from analysis.words import capture_style

    n = len(raw)
    seq = TokenSeq(ids=np.arange(n), raw=raw, display=raw, special=np.zeros(n, dtype=bool),
                   word_ids=tuple(range(n)))
    cap = Capture(model="m", kind="decoder", architecture="LlamaForCausalLM", text=" ".join(raw),
                  source=seq, stacks={"attentions": np.full((1, 1, n, n), 1 / n, dtype=np.float32)},
                  token_style="")
    assert capture_style(cap) == style
    assert group_capture(replace(cap, token_style=style)).token_style == style

# -- the parts, one at a time -----------------------------------------------------------------
def test_unknown_grouping_and_style_say_what_to_choose():
    from analysis.errors import InputError
    from analysis.words import check_group

    with pytest.raises(InputError, match=r"^unknown grouping 'letters': choose one of pieces, words$"):
        check_group("letters")
    with pytest.raises(InputError, match=r"^unknown token style 'bpe': choose one of wordpiece, sentencepiece, "
                                         r"byte-bpe, word$"):
        word_spans(["a"], [False], "bpe")
    check_group("pieces")
    check_group("words")


def test_byte_level_words_join_byte_fallback_pieces_and_start_at_a_space():
    # <0xEB> is a byte of the character before it; Ġ (a space byte) starts a word; Ċ (a newline) too
    raw = ["Ġa", "<0xEB>", "<0x8A>", "b", "Ġc", "Ċ", "d", "<s>", "e"]
    special = [False] * 7 + [True, False]
    assert word_spans(raw, special, "byte-bpe").tolist() == [[0, 4], [4, 5], [5, 7], [7, 8], [8, 9]]
    # the same pieces in a whole-word vocabulary: every token is a word
    assert word_spans(raw, special, "word").tolist() == [[i, i + 1] for i in range(9)]


def test_word_text_writes_line_breaks_as_arrows_and_other_controls_as_spaces():
    from analysis.words import _word_text

    assert _word_text(["a\nb"], [False], "word") == "a↵b"
    assert _word_text(["a\rb"], [False], "word") == "a↵b"
    assert _word_text(["a\tb"], [False], "word") == "a b"
    assert _word_text(["Ġ"], [False], "byte-bpe") == "␣"  # a word of a space alone
    assert _word_text(["ìĿ", "´"], [False, False], "byte-bpe") == "이"  # bytes of one syllable joined


def test_group_map_sums_columns_and_averages_rows_in_the_input_dtype():
    from analysis.words import group_map

    a = np.array([[0.1, 0.2, 0.3, 0.4],
                  [0.4, 0.3, 0.2, 0.1],
                  [0.25, 0.25, 0.25, 0.25],
                  [0.0, 0.0, 0.5, 0.5]], dtype=np.float32)
    rows = np.array([[0, 1], [1, 4]])
    cols = np.array([[0, 3], [3, 4]])
    want = np.array([[0.6, 0.4], [(0.9 + 0.75 + 0.5) / 3, (0.1 + 0.25 + 0.5) / 3]])
    got = group_map(a, rows, cols)
    assert got.dtype == np.float32 and got.shape == (2, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    half = group_map(a.astype(np.float16), rows, cols)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, want, rtol=2e-3)
    stack = np.stack([a, a[::-1]])[None]  # [1, 2, 4, 4]
    np.testing.assert_allclose(group_map(stack, rows, cols)[0, 1], group_map(a[::-1], rows, cols), rtol=1e-6)
    none = np.zeros((0, 2), dtype=np.int64)
    empty = group_map(np.zeros((3, 2, 0), dtype=np.float16), np.array([[0, 2]]), none)  # no keys
    assert empty.shape == (3, 1, 0) and empty.dtype == np.float16
    empty = group_map(np.zeros((3, 0, 4), dtype=np.float16), none, cols)  # no queries
    assert empty.shape == (3, 0, 2) and empty.dtype == np.float16


def test_group_seq_keeps_the_first_piece_id_and_is_special_only_when_every_piece_is():
    from analysis.result import TokenSeq
    from analysis.words import group_seq, piece_strings

    seq = TokenSeq(ids=np.array([1, 7, 8, 9, 2]), raw=("[CLS]", "play", "##ing", "chess", "[SEP]"),
                   display=("[CLS]", "play", "ing", "chess", "[SEP]"),
                   special=np.array([True, False, False, False, True]), word_ids=(-1, 0, 0, 1, -1))
    spans = np.array([[0, 1], [1, 3], [3, 5]])  # a group of a word and a special token, for the rule
    got = group_seq(seq, spans, "wordpiece")
    assert got.ids.tolist() == [1, 7, 9] and got.ids.dtype == np.int64
    assert got.raw == ("[CLS]", "play##ing", "chess[SEP]")
    assert got.display == ("[CLS]", "playing", "chess [SEP]")
    assert got.special.tolist() == [True, False, False]
    assert got.word_ids == (-1, 0, 1)
    assert piece_strings(seq, spans) == [("[CLS]",), ("play", "ing"), ("chess", "[SEP]")]


def test_prompt_length_counts_the_words_of_the_prompt(loaded):
    cap = _capture(loaded, "gpt2")
    assert 0 < cap.prompt_length < len(cap.source)
    words = group_capture(cap)
    starts = words.source_spans[:, 0]
    assert words.prompt_length == sum(1 for s in starts if s < cap.prompt_length)
    # a word never straddles the prompt's end here: the prompt's words are exactly its pieces' words
    assert words.source_spans[words.prompt_length - 1, 1] == cap.prompt_length


def test_a_long_capture_on_disk_cannot_be_grouped_and_says_what_to_do(loaded):
    from dataclasses import replace

    from analysis.errors import InputError

    class OnDisk:
        __headmap_stored__ = True
        shape = (1, 1, 3, 3)
        dtype = np.float16

    cap = _capture(loaded, "bert")
    long = replace(cap, stacks={"attentions": OnDisk()})
    with pytest.raises(InputError) as info:
        group_capture(long)
    assert str(info.value) == (
        f"words are not available for a long capture kept on disk ({len(cap.source)} tokens): grouping would need "
        "every map in memory; show pieces (--group pieces), or run a shorter text")
    assert group_capture(long, "pieces") is long


def test_group_note_names_the_rule_on_words_only(loaded):
    from analysis.words import group_note

    cap = _capture(loaded, "bert")
    assert group_note(cap) == ""
    assert group_note(group_capture(cap)) == "words: pieces grouped, columns summed, rows averaged"
    encoder_words = group_capture(cap)
    assert encoder_words.prompt_length == len(encoder_words.source) and cap.prompt_length == len(cap.source)
    from dataclasses import replace

    assert group_capture(replace(cap, prompt_length=0)).prompt_length == 0  # a capture that records none
    assert encoder_words.decoder_inputs is None and encoder_words.outputs is None
    words = grouped(cap, "words")
    assert grouped(cap, "pieces") is cap and grouped(words, "words") is words and grouped(words, "pieces") is cap


def test_group_map_of_float16_is_computed_in_float32():
    """Summing hundreds of float16 pieces in float16 loses the last bit; the docstring promises
    float32 arithmetic, rounded once to float16 at the end."""
    from analysis.words import group_map

    rng = np.random.default_rng(0)
    a = rng.random((600, 600)).astype(np.float32)
    half = (a / a.sum(-1, keepdims=True)).astype(np.float16)
    spans = np.array([[0, 300], [300, 600]])
    want = group_map(half.astype(np.float32), spans, spans).astype(np.float16)
    np.testing.assert_array_equal(group_map(half, spans, spans), want)


def test_a_stack_without_layers_groups_to_an_empty_stack():
    from analysis.words import _group_stack

    spans = np.array([[0, 2], [2, 3]])
    got = _group_stack(np.zeros((0, 4, 3, 3), dtype=np.float16), spans, spans[:1])
    assert got.shape == (0, 4, 2, 1) and got.dtype == np.float16


def test_no_tokens_are_no_words():
    """An empty sequence has no word spans (an int64 [0, 2] array), in every spelling."""
    for style in ("wordpiece", "sentencepiece", "byte-bpe", "word"):
        spans = word_spans([], [], style)
        assert spans.shape == (0, 2) and spans.dtype == np.int64

def test_group_seq_of_no_tokens_keeps_the_types():
    from analysis.result import TokenSeq
    from analysis.words import group_seq

    empty = TokenSeq(ids=np.zeros(0, dtype=np.int64), raw=(), display=(), special=np.zeros(0, dtype=bool),
                     word_ids=())
    got = group_seq(empty, np.zeros((0, 2), dtype=np.int64), "word")
    assert got.ids.dtype == np.int64 and got.special.dtype == bool and len(got.ids) == len(got.special) == 0


def test_predictions_move_to_the_word_of_their_first_position():
    from analysis.result import Prediction
    from analysis.words import _group_prediction

    spans = np.array([[0, 1], [1, 4], [4, 5]])
    a, b, c, d = (("a", 0.5),), (("b", 0.5),), (("c", 0.5),), (("d", 0.5),)
    pred = Prediction(task="masked_lm", per_position=((2, a), (3, b), (4, c), (5, d), (-1, d)))
    # masked LM: the first masked piece of a word speaks for it; positions past the end are dropped
    assert _group_prediction(pred, spans, first_piece_only=False).per_position == ((1, a), (2, c))
    # seq2seq: only a word's first piece predicts it
    assert _group_prediction(pred, spans, first_piece_only=True).per_position == ((2, c),)
    assert _group_prediction(pred, np.zeros((0, 2), dtype=np.int64), first_piece_only=False).per_position == ()
    assert _group_prediction(Prediction(task="none"), spans, first_piece_only=False) == Prediction(task="none")


def test_group_map_of_one_row_or_one_column_and_of_float64():
    from analysis.words import group_map

    one = np.array([[0, 1], [1, 3]])
    col = np.array([[1.0], [1.0], [1.0]], dtype=np.float32)  # three queries, one key
    np.testing.assert_array_equal(group_map(col, one, np.array([[0, 1]])), [[1.0], [1.0]])
    row = np.array([[0.25, 0.5, 0.25]], dtype=np.float32)  # one query
    np.testing.assert_array_equal(group_map(row, np.array([[0, 1]]), np.array([[0, 2], [2, 3]])), [[0.75, 0.25]])
    # float64 stays float64 all the way (no float32 rounding on the way)
    rng = np.random.default_rng(1)
    a = rng.random((5, 7))
    a /= a.sum(-1, keepdims=True)
    rows, cols = np.array([[0, 2], [2, 5]]), np.array([[0, 3], [3, 7]])
    got = group_map(a, rows, cols)
    assert got.dtype == np.float64
    want = np.array([[a[r0:r1, c0:c1].sum(1).mean() for c0, c1 in cols] for r0, r1 in rows])
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_a_word_cut_inside_a_character_reads_with_a_replacement_mark():
    """A capture cut short (truncation, a continuation stopped by its length) can end inside a
    character: the word shows U+FFFD for the missing bytes instead of failing or vanishing."""
    from analysis.words import _word_text

    assert _word_text(["ìĿ"], [False], "byte-bpe") == "\ufffd"          # two of the three bytes of 이
    assert _word_text(["Ġa", "ìĿ"], [False, False], "byte-bpe") == "a\ufffd"
    assert _word_text(["<0xFF>"], [False], "byte-bpe") == "\ufffd"       # a byte that is never UTF-8


def test_pieces_and_their_flags_must_pair_up():
    from analysis.words import _word_text

    with pytest.raises(ValueError):
        word_spans(["a", "b"], [False], "word")
    with pytest.raises(ValueError):
        _word_text(["a", "b"], [False], "word")
    # a special token between pieces of one group keeps both sides
    assert _word_text(["a", "<s>", "b"], [False, True, False], "word") == "a <s> b"
    # a first token that continues a word still starts the first word
    assert word_spans(["##x", "##y"], [False, False], "wordpiece").tolist() == [[0, 2]]


def test_seq2seq_words_with_a_target_unlike_the_source(loaded):
    """Source and target of other lengths and other words: each stack is grouped by its own rows
    and columns (the decoder's by the output words, the cross map's rows by them and its columns
    by the source words)."""
    cap = capture(loaded("marian"), "I like this course", target="the students are reading a long book today")
    words = group_capture(cap)
    src, out = words.source_spans, words.output_spans
    assert len(src) != len(out)
    _check_stack(cap, words, "encoder_attentions", src, src)
    _check_stack(cap, words, "cross_attentions", out, src)
    _check_stack(cap, words, "decoder_attentions", out, out)
    assert words.token_style == cap.token_style
    assert words.prompt_length == sum(1 for s in src[:, 0] if s < cap.prompt_length)


def test_prompt_length_in_words_of_a_korean_prompt(loaded):
    """A prompt of byte pieces: its length in words is the number of words it starts."""
    cap = capture(loaded("llama"), KOREAN, generate=True, max_new_tokens=3)
    words = group_capture(cap)
    n_words = sum(1 for s, sp in zip(words.source_spans[:, 0], words.source.special, strict=True)
                  if s < cap.prompt_length)
    assert words.prompt_length == n_words < cap.prompt_length
