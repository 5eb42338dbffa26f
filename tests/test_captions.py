"""analysis.views.captions: every view explains itself in plain words, and ``caption=True`` writes
the caption under an exported figure (issue 18, "Views that explain themselves")."""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from analysis.figures import GID_CAPTION, ViewSpec, build_figure, wrap_caption
from analysis.themes import THEMES, get_theme
from analysis.views import VIEWS
from analysis.views.captions import view_caption
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq
from tests.test_quiet import applicable


@pytest.fixture(scope="module")
def padding_report(loaded):
    from analysis.masks import padding_experiment

    return padding_experiment(loaded("marian"), "I like this course", "the students are reading a long book today")


@pytest.fixture(scope="module")
def cases(padding_report):
    out = [(cap, spec, inputs) for cap in (make_encoder(), make_decoder(), make_seq2seq())
           for spec, inputs in applicable(cap, padding_report)]
    assert {s.view for _, s, _ in out} == set(VIEWS)
    return out


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-ZΔ])", text) if s]


def head(cap, stack=None, **kw) -> str:
    return view_caption(cap, ViewSpec(view="head", stack=stack, **kw))


# -- the words --------------------------------------------------------------------------------
def test_every_view_has_a_short_caption_that_says_what_rows_are(cases):
    for cap, spec, inputs in cases:
        text = view_caption(cap, spec, inputs)
        where = f"{cap.kind} {spec.view}"
        assert text.strip() and "\n" not in text, where
        assert 2 <= len(sentences(text)) <= 3, (where, sentences(text))
        assert "row" in text.lower(), where  # every view has rows: of a map, of a grid, of tiles


def test_encoder_decoder_and_cross_attention_are_told_apart():
    enc, dec, s2s = make_encoder(), make_decoder(), make_seq2seq()
    encoder, decoder = head(enc), head(dec)
    s_encoder, s_decoder, cross = head(s2s, "encoder"), head(s2s, "decoder"), head(s2s, "cross")
    assert "both sides" in encoder and "causal" not in encoder and encoder == s_encoder
    assert "masked self-attention" in decoder and "causal mask hides every later position" in decoder
    assert "only itself and the tokens before it" in decoder
    assert "row t reads decoder input t and predicts output token t" in s_decoder
    assert "causal mask" in s_decoder and "the translation so far" in s_decoder
    assert "row t reads decoder input t and predicts output token t" in cross
    assert "source sentence" in cross and "Nothing is masked" in cross and "causal" not in cross
    assert len({encoder, decoder, s_decoder, cross}) == 4
    for text in (encoder, decoder, s_decoder, cross):  # what a weight is
        assert "share of the row token's attention" in text and "sum to 1" in text


def test_row_labels_change_decoder_and_cross_captions_only():
    s2s, enc = make_seq2seq(), make_encoder()
    by_mode = {m: head(s2s, "cross", row_labels=m) for m in ("both", "input", "predicts")}
    assert "'input → predicted'" in by_mode["both"]
    assert "labelled by the decoder input they read" in by_mode["input"]
    assert "labelled by the token they predict" in by_mode["predicts"]
    assert len(set(by_mode.values())) == 3
    assert len({head(enc, row_labels=m) for m in ("both", "input", "predicts")}) == 1


def test_hidden_special_tokens_say_whether_rows_still_sum_to_1():
    cap = make_encoder()
    assert "each row is renormalised so it still sums to 1" in head(cap, hide_special=True, renormalize=True)
    plain = head(cap, hide_special=True, renormalize=False)
    assert "without renormalising, so a row sums to less than 1" in plain
    assert "rows not renormalised" in view_caption(cap, ViewSpec(view="layer", hide_special=True))


def test_the_causal_mask_is_grey_only_where_it_is_drawn():
    cap = make_decoder()
    assert "(the grey cells)" in head(cap)
    assert "grey" not in head(cap, show_causal_mask=False)


def test_flow_values_and_rollout():
    dec = make_decoder()
    shares = view_caption(dec, ViewSpec(view="flow", flow_values="shares"))
    raw = view_caption(dec, ViewSpec(view="flow", flow_values="raw"))
    assert "normalised to sum to 1" in shares and "raw maximum flows" in raw and "more than 1" in raw
    rollout = view_caption(dec, ViewSpec(view="rollout", residual=0.3, through_layer=0))
    assert "after layer 0" in rollout and "α = 0.3" in rollout and "causal mask carries through" in rollout
    assert "causal" not in view_caption(make_encoder(), ViewSpec(view="rollout"))


def test_steps_names_what_row_t_reads_and_predicts():
    cap = make_seq2seq()
    text = view_caption(cap, ViewSpec(view="steps", step=2))
    assert "decoder position 2 reads decoder input 2 ('이') and predicts output token 2 ('강의를')" in text


def test_the_mask_lab_caption_follows_its_experiment(padding_report):
    cap = make_seq2seq()
    padding = view_caption(cap, ViewSpec(view="masks"), SimpleNamespace(mask_report=padding_report))
    assert "padded" in padding and "attention mask" in padding and "exactly 0" in padding
    tokens = view_caption(cap, ViewSpec(view="masks"), SimpleNamespace(mask_report=SimpleNamespace(masked_positions=(1,))))
    assert "ticked tokens" in tokens and tokens != padding


# -- under the figure -------------------------------------------------------------------------
def caption_texts(fig) -> list:
    return fig.findobj(lambda a: getattr(a, "get_gid", lambda: None)() == GID_CAPTION)


def test_caption_under_every_exported_view(cases):
    for cap, spec, inputs in cases:
        where = f"{cap.kind} {spec.view}"
        plain = build_figure(cap, spec, inputs)
        fig = build_figure(cap, replace(spec, caption=True), inputs)
        assert caption_texts(plain) == [], where
        (text,) = caption_texts(fig)
        width, height = fig.get_size_inches()
        theme = get_theme(spec.theme)
        assert text.get_text() == wrap_caption(view_caption(cap, spec, inputs), width, theme), where
        assert text.get_fontsize() == theme.base_size
        assert width == plain.get_size_inches()[0] and height > plain.get_size_inches()[1], where
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        box, page = text.get_window_extent(renderer), fig.bbox
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, (where, box, page)
        for ax in fig.axes:
            if ax.get_visible():
                assert box.y1 < ax.get_tightbbox(renderer).y0, (where, "the caption overlaps an axes")


def test_caption_wraps_to_the_figure_and_takes_the_theme():
    cap = make_seq2seq()
    spec = ViewSpec(view="head", stack="cross", caption=True, theme="dark", figsize=(4.0, 3.0))
    fig = build_figure(cap, spec)
    (text,) = caption_texts(fig)
    assert text.get_text().count("\n") >= 4  # a 4-inch figure needs several lines
    assert to_rgba(text.get_color()) == to_rgba(THEMES["dark"].text_color)
    assert fig.get_size_inches()[0] == 4.0 and fig.get_size_inches()[1] > 3.0


def test_an_unknown_view_has_no_caption():
    with pytest.raises(KeyError) as info:
        view_caption(make_encoder(), ViewSpec(view="sideways"))
    assert info.value.args == ("sideways",)
