"""Behaviours pinned down by mutation testing (group M, the second sample of the eighth session):
Compare's layer check against A's own stack, the colour-bar label's colour, the mask strip's
labels, a stored stack's range, and a tokenizer's segment ids for a model without segments."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.aggregate import stack_range
from analysis.capture import encode
from analysis.errors import InputError
from analysis.store import write_stacks
from analysis.themes import get_theme
from analysis.views.compare import CompareDrawer, compare_data
from analysis.views.masks import MasksDrawer
from analysis.views.spec import ViewInputs, ViewSpec
from tests.test_aggregate import make_seq2seq, random_stack
from tests.test_mutation_found_d import _cap, _masks


# --------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------
def test_compare_checks_the_layer_against_as_own_stack_not_its_first():
    """A seq2seq A whose decoder is shallower than its encoder: a cross layer past A's decoder
    exists only in B, although A's encoder has it."""
    rng = np.random.default_rng(5)
    b = make_seq2seq(seed=3)
    b = replace(b, stacks={"encoder_attentions": random_stack(rng, 3, 4, 7, 7),
                           "decoder_attentions": random_stack(rng, 3, 4, 6, 6, causal=True),
                           "cross_attentions": random_stack(rng, 3, 4, 6, 7)})
    a = make_seq2seq(seed=4)
    a = replace(a, stacks={**a.stacks, "encoder_attentions": random_stack(rng, 3, 4, 7, 7)})
    assert a.n_layers() == 3 and a.n_layers("cross") == 2
    with pytest.raises(InputError, match="A has 2 layers × 4 heads, so layer 2, head 0 exists only in B"):
        compare_data(b, ViewSpec(view="compare", stack="cross", layer=2), ViewInputs(compare_with=a))
    compare_data(b, ViewSpec(view="compare", stack="encoder", layer=2), ViewInputs(compare_with=a))


def test_compare_colour_bar_labels_take_the_themes_text_colour():
    """On the dark theme both colour-bar labels are light (drawn outside any rc context)."""
    theme = get_theme("dark")
    a, b = _cap(2, 0), _cap(2, 1)
    d = compare_data(b, ViewSpec(view="compare", layer=1, head=0, theme="dark"), ViewInputs(compare_with=a))
    drawer = CompareDrawer(Figure(figsize=(12, 5)), theme)
    drawer.draw(d)
    for cbar in (drawer.cbar_ab, drawer.cbar_d):
        assert cbar.ax.yaxis.label.get_color() == theme.text_color


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def test_the_mask_strips_token_labels_stand_upright():
    """The strip's tokens are written vertically (they would overlap lying down)."""
    drawer = MasksDrawer(Figure(figsize=(12, 6)), get_theme("light"))
    drawer.draw(_masks(np.zeros((2, 2), np.float32), n_strip=9))
    labels = drawer.ax_mask.get_xticklabels()
    assert len(labels) == 9 and {t.get_rotation() for t in labels} == {90.0}


# --------------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------------
def test_a_stored_stacks_range_is_the_range_of_its_weights():
    """The range read from a stored stack's recorded map ranges equals the in-memory one."""
    arr = random_stack(np.random.default_rng(9), 2, 3, 40, 40).astype(np.float16)
    arr[0, 1, 3, 4] = 0.0  # one map's minimum far below every map's maximum
    stored = write_stacks({"attentions": arr}).stacks["attentions"]
    assert stack_range(stored) == stack_range(arr) == (0.0, float(arr.max()))


# --------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_vocab_size, kept", [(0, False), (None, False), (1, True), (2, True)])
def test_segment_ids_go_to_a_model_only_when_it_has_segments(tiny_model_dir, type_vocab_size, kept):
    """A tokenizer's token_type_ids reach the model only when its config has a segment table."""
    from analysis.loader import load_model

    lm = load_model(str(tiny_model_dir("bert")), device="cpu")  # a fresh one: its tokenizer is changed
    lm.tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT's
    lm = replace(lm, config=SimpleNamespace(type_vocab_size=type_vocab_size))
    enc, _, _, _ = encode(lm, "the cat sat", 32)
    assert ("token_type_ids" in enc) is kept
    assert "input_ids" in enc and "attention_mask" in enc
