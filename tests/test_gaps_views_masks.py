"""analysis.views.masks: behaviours no other test reached. The mask lab without a report, the
encoder/decoder stack names on a one-stack model, and the numbers under the maps: no prediction
line without a prediction, the next-token, translation, hidden-state and ``[MASK]`` lines of a
token-masking report, each only when the report has them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from analysis.errors import InputError
from analysis.result import Prediction
from analysis.views.masks import _masking_numbers, _padding_numbers, masks_data, report_stack
from analysis.views.spec import ViewSpec


def test_the_mask_lab_without_a_report_says_what_to_run():
    with pytest.raises(InputError) as err:
        masks_data(None, ViewSpec(view="masks"))
    assert str(err.value) == "run the padding experiment or mask some tokens first"


@pytest.mark.parametrize("stack", ["encoder", "decoder", "encoder_attentions", "decoder_attentions"])
def test_the_encoder_or_decoder_stack_of_a_one_stack_model_is_its_attentions(stack):
    assert report_stack({"cross_attentions": 0, "attentions": 0}, ViewSpec(view="masks", stack=stack)) == "attentions"


def test_the_cross_stack_is_not_renamed_and_an_unknown_one_falls_back_to_the_first():
    maps = {"cross_attentions": 0, "attentions": 0}
    assert report_stack(maps, ViewSpec(view="masks", stack="cross")) == "cross_attentions"
    assert report_stack({"encoder_attentions": 0, "decoder_attentions": 0},
                        ViewSpec(view="masks", stack="decoder")) == "decoder_attentions"
    assert report_stack({"x": 0, "y": 0}, ViewSpec(view="masks", stack="decoder")) == "x"


def _padding_report(**kw):
    base = dict(padding_side="right", pad_token="[PAD]", pad_attention_max=0.0, masked_attention_max_abs_diff=1e-7,
                unmasked_attention_max_abs_diff=0.25, masked_output_max_abs_diff=2e-6,
                unmasked_output_max_abs_diff=0.5, cross_pad_attention_max=None, prediction_task="none",
                prediction_alone=(), prediction_masked=(), prediction_unmasked=(),
                prediction_changed_masked=None, prediction_changed_unmasked=None, notes=("a note",))
    return SimpleNamespace(**{**base, **kw})


def test_the_padding_numbers_have_no_prediction_line_without_a_prediction():
    assert _padding_numbers(_padding_report()) == (
        "Padding experiment (right padding, pad token [PAD]): largest weight on a pad column with the mask: 0",
        "max |Δ attention| vs. alone — with mask: 1.00e-07, without: 2.50e-01",
        "max |Δ last hidden state| — with mask: 2.00e-06, without: 5.00e-01",
        "a note",
    )


def _masking_report(**kw):
    base = dict(tokens=("[CLS]", "I", "like", "it", "[SEP]"), masked_positions=(1, 3), top5_before=(),
                top5_after=(), translation_before="", translation_after="", hidden_positions=(),
                mean_hidden_l2=0.0, mean_hidden_cosine_distance=0.0, prediction_before=Prediction(),
                prediction_after=Prediction(), notes=())
    return SimpleNamespace(**{**base, **kw})


def test_the_masking_numbers_of_a_report_with_nothing_more_name_the_hidden_tokens():
    assert _masking_numbers(_masking_report(notes=("n",))) == ("Token masking: hidden I, it", "n")


def test_the_masking_numbers_give_the_next_token_before_and_after():
    r = _masking_report(top5_before=(("a", 0.5), ("b", 0.25)), top5_after=(("c", 0.125), ("a", 0.0625)))
    assert _masking_numbers(r) == ("Token masking: hidden I, it", "next token before: a 50.0% · b 25.0%",
                                   "next token after: c 12.5% · a 6.2%")


@pytest.mark.parametrize("before, after", [("le chat", ""), ("", "un chat"), ("le chat", "un chat")])
def test_the_masking_numbers_give_the_translation_when_either_run_has_one(before, after):
    r = _masking_report(translation_before=before, translation_after=after)
    assert _masking_numbers(r)[1:] == (f"translation before: {before}; after: {after}",)


def test_the_masking_numbers_give_the_hidden_state_change_of_the_visible_tokens():
    r = _masking_report(hidden_positions=(0, 2), mean_hidden_l2=1.23456, mean_hidden_cosine_distance=0.0012345)
    assert _masking_numbers(r)[1:] == (
        "hidden-state change of the visible tokens: mean L2 1.23, mean cosine distance 0.00123",)


def test_the_masking_numbers_give_each_mask_positions_candidates_before_and_after():
    before = Prediction("masked_lm", (("x", 0.5),), "", ((2, (("x", 0.5), ("y", 0.25))),))
    after = Prediction("masked_lm", (("z", 0.75),), "", ((2, (("z", 0.75),)), (4, (("w", 1.0),))))
    r = _masking_report(prediction_before=before, prediction_after=after, notes=("n",))
    assert _masking_numbers(r) == ("Token masking: hidden I, it", "[MASK] at 2: before x 50% · y 25%; after z 75%",
                                   "[MASK] at 4: before ; after w 100%", "n")
    # another task's per-position predictions are not [MASK] lines
    other = Prediction("translation", (), "", ((0, (("z", 0.75),)),))
    assert _masking_numbers(_masking_report(prediction_after=other)) == ("Token masking: hidden I, it",)
