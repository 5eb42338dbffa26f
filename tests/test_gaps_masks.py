"""analysis.masks: behaviours no other test reached. A sentence that gives no tokens, the hidden
states a model without ``hidden_states`` (or without any) offers for the comparison, no labels for no
ids, no prediction for an encoder whose logits are not per token, and the note of a masked text that
was truncated."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from analysis import masks
from analysis.errors import CaptureError, InputError


def test_a_sentence_that_gives_no_tokens_asks_for_another():
    lm = SimpleNamespace(tokenizer=lambda text, add_special_tokens: {"input_ids": []})
    with pytest.raises(InputError) as err:
        masks._ids(lm, "\u200b", "sentence", 64)
    assert str(err.value) == "the sentence gives no tokens; type a sentence"
    lm = SimpleNamespace(tokenizer=lambda text, add_special_tokens: {"input_ids": [5, 6]})
    assert masks._ids(lm, "a b", "sentence", 2) == [5, 6]


def test_hidden_states_come_from_the_last_hidden_state_without_hidden_states():
    last = torch.arange(12, dtype=torch.float64).reshape(2, 3, 2)
    for out in (SimpleNamespace(last_hidden_state=last), SimpleNamespace(hidden_states=(), last_hidden_state=last)):
        got = masks._hidden(out, "encoder", 1)
        assert list(got) == ["last_hidden_state"]
        assert got["last_hidden_state"].dtype == np.float32
        np.testing.assert_array_equal(got["last_hidden_state"], last[1].numpy())
    # hidden_states win when there are some: their last layer
    first = torch.zeros(2, 3, 2)
    got = masks._hidden(SimpleNamespace(hidden_states=(first, last), last_hidden_state=first), "encoder", 0)
    np.testing.assert_array_equal(got["last_hidden_state"], last[0].numpy())


def test_a_model_without_hidden_states_cannot_be_compared():
    with pytest.raises(CaptureError) as err:
        masks._hidden(SimpleNamespace(hidden_states=None), "decoder", 0)
    assert str(err.value) == "this model returned no hidden states; it cannot be compared"
    with pytest.raises(CaptureError) as err:
        masks._hidden(SimpleNamespace(decoder_hidden_states=(), encoder_last_hidden_state=torch.zeros(1, 2, 2)),
                      "seq2seq", 0)
    assert str(err.value) == "this seq2seq model returned no decoder hidden states; it cannot be compared"


def test_no_ids_have_no_labels():
    lm = SimpleNamespace(tokenizer=None)  # not consulted
    assert masks._labels(lm, []) == ()


def test_an_encoder_whose_logits_are_not_per_token_predicts_nothing():
    """Logits ``[B, C]`` without a classification head: no prediction to compare."""
    lm = SimpleNamespace(kind="encoder", summary=SimpleNamespace(head_kind="none"))
    out = SimpleNamespace(logits=torch.zeros(1, 3))
    assert masks._padding_predictions(lm, out, out, out, np.arange(2)) == {}


def test_a_masked_text_longer_than_the_model_is_truncated_with_a_note(loaded):
    long = "The students are reading and writing and thinking about attention heads " * 12
    report = masks.token_masking(loaded("bert"), long, [1])
    assert len(report.tokens) == 64
    assert "the text was truncated to 64 tokens (the longest input this model takes)" in report.notes
    short = masks.token_masking(loaded("bert"), "I like this course", [1])
    assert not any("truncated" in n for n in short.notes)
