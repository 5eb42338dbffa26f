"""analysis.alignment_export: the documented alignment defaults of a translator folder and the
alignment of a capture, on synthetic seq2seq captures (no model): what the window's Alignment
tab and ``--export-alignment`` use when the user chooses nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from analysis.alignment import word_alignment
from analysis.alignment_export import (
    AlignmentDefaults,
    alignment_defaults,
    alignment_for_capture,
    write_alignment,
)
from analysis.errors import InputError
from tests.test_aggregate import make_seq2seq


@pytest.fixture
def cap():
    return make_seq2seq()  # 2 layers × 4 heads of cross-attention, 6 output tokens × 7 source tokens


def folder_with(tmp_path, **info):
    (tmp_path / "alignment.json").write_text(json.dumps({"aer_by_layer": [0.5, 0.4], **info}), encoding="utf-8")
    return tmp_path


def test_without_a_documented_setting_the_last_layers_head_average_and_predict(cap, tmp_path):
    last = AlignmentDefaults(layer=1, head=None, method="predict", threshold=None, documented=False)
    assert alignment_defaults(cap, None) == last
    assert alignment_defaults(cap, tmp_path) == last  # a folder without alignment.json
    (tmp_path / "alignment.json").write_text("{not json", encoding="utf-8")
    assert alignment_defaults(cap, tmp_path) == last  # a broken file: as if there were none
    (tmp_path / "alignment.json").write_text("[1, 2]", encoding="utf-8")
    assert alignment_defaults(cap, tmp_path) == last  # not an object
    for layer in (2, -1, "1", None):  # out of range, or not an int
        assert alignment_defaults(cap, folder_with(tmp_path, best_layer=layer)) == last, layer
    # a model with three cross-attention layers: the last is 2
    three = replace(cap, stacks={**cap.stacks, "cross_attentions": np.concatenate(
        [cap.stacks["cross_attentions"], cap.stacks["cross_attentions"][:1]])})
    assert alignment_defaults(three, None).layer == 2


def test_the_documented_setting_is_read_and_checked(cap, tmp_path):
    got = alignment_defaults(cap, folder_with(tmp_path, best_layer=0, best_head=3, best_method="shift",
                                               best_threshold=0.25))
    assert got == AlignmentDefaults(layer=0, head=3, method="shift", threshold=0.25, documented=True)
    got = alignment_defaults(cap, folder_with(tmp_path, best_layer=1, best_head=0, best_threshold=1))
    assert (got.head, got.method, got.threshold) == (0, "predict", 1.0)  # head 0 and a threshold of 1 are valid
    assert isinstance(got.threshold, float)
    # what is not a valid head, method or threshold falls back, the layer stays
    for head in (4, -1, "2", 1.5):
        assert alignment_defaults(cap, folder_with(tmp_path, best_layer=1, best_head=head)).head is None, head
    for method in ("PREDICT", "attention", None):
        assert alignment_defaults(cap, folder_with(tmp_path, best_layer=1, best_method=method)).method == "predict"
    for threshold in (0, -0.5, 1.5, "0.3"):
        got = alignment_defaults(cap, folder_with(tmp_path, best_layer=1, best_threshold=threshold))
        assert got.threshold is None and got.layer == 1 and got.documented, threshold


def test_the_alignment_uses_the_documented_setting_unless_told_otherwise(cap, tmp_path):
    folder = folder_with(tmp_path, best_layer=0, best_head=2, best_method="shift", best_threshold=0.2)
    cross = cap.attention("cross_attentions")
    src, out = cap.source.word_ids, cap.outputs.word_ids

    def expect(**kw):
        return word_alignment(cross, src, out, **kw)

    res = alignment_for_capture(cap, folder)
    want = expect(layer=0, head=2, method="shift", threshold=0.2)
    assert (res.layer, res.head, res.method, res.threshold) == (0, 2, "shift", 0.2)
    np.testing.assert_array_equal(res.matrix, want.matrix)
    assert res.pairs == want.pairs
    # a chosen head keeps the documented layer; a chosen layer drops the documented head
    assert alignment_for_capture(cap, folder, head=1).head == 1
    chosen = alignment_for_capture(cap, folder, layer=1)
    assert (chosen.layer, chosen.head) == (1, None)
    assert alignment_for_capture(cap, folder, layer=1, head=3).head == 3
    # a chosen method or threshold replaces the documented one
    assert alignment_for_capture(cap, folder, method="predict").method == "predict"
    picked = alignment_for_capture(cap, folder, threshold=0.9)
    assert picked.threshold == 0.9
    assert picked.pairs == expect(layer=0, head=2, method="shift", threshold=0.9).pairs
    # without a folder: the last layer's head average, predict, argmax links
    plain = alignment_for_capture(cap)
    assert (plain.layer, plain.head, plain.method, plain.threshold) == (1, None, "predict", None)
    np.testing.assert_array_equal(plain.matrix, expect(layer=1, head=None).matrix)


def test_out_of_range_choices_say_the_range(cap):
    for layer in (2, -1):
        with pytest.raises(InputError, match=rf"alignment layer {layer} is out of range: the cross-attention has layers 0–1$"):
            alignment_for_capture(cap, layer=layer)
    for head in (4, -1):
        with pytest.raises(InputError, match=rf"alignment head {head} is out of range: the cross-attention has heads 0–3$"):
            alignment_for_capture(cap, layer=0, head=head)
    assert alignment_for_capture(cap, layer=0, head=0).head == 0  # the first ones are in range
    with pytest.raises(InputError, match="threshold"):
        alignment_for_capture(cap, threshold=1.5)


def test_the_ranges_are_the_cross_attentions(cap):
    """An encoder with more layers and fewer heads than the cross-attention changes nothing."""
    rng = np.random.default_rng(0)
    cap = replace(cap, stacks={**cap.stacks, "encoder_attentions": rng.random((5, 2, 7, 7)).astype(np.float32)})
    assert alignment_for_capture(cap, layer=1, head=3).head == 3
    with pytest.raises(InputError, match="layers 0–1"):
        alignment_for_capture(cap, layer=3)
    assert alignment_defaults(cap, None).layer == 1


def test_only_a_translation_has_a_word_alignment(cap):
    message = "a word alignment needs a seq2seq model with cross-attention; load a translator"
    without_cross = replace(cap, stacks={k: v for k, v in cap.stacks.items() if k != "cross_attentions"})
    for broken in (replace(cap, kind="encoder"), without_cross, replace(cap, outputs=None)):
        with pytest.raises(InputError) as err:
            alignment_for_capture(broken)
        assert str(err.value) == message


def test_the_pharaoh_file_is_one_line(cap, tmp_path):
    res = alignment_for_capture(cap, layer=0, head=0)
    path = tmp_path / "a.txt"
    write_alignment(res, path)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.split() == [f"{i}-{j}" for i, j in res.pairs]


def test_the_default_layer_is_the_documented_one(cap, tmp_path):
    from analysis.alignment_export import default_alignment_layer

    assert default_alignment_layer(cap, None) == 1
    assert default_alignment_layer(cap, folder_with(tmp_path, best_layer=0)) == 0
