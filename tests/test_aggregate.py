"""analysis.aggregate: head selection/aggregation, hiding tokens, causal masks, colour norms.

The ``make_*`` builders here are also used by test_figures / test_session: small synthetic
captures with seeded, row-stochastic stacks (no model needed).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from matplotlib.colors import LogNorm, Normalize

from analysis.aggregate import (
    LOG_FLOOR,
    causal_mask,
    color_norm,
    hide_tokens,
    select_map,
    value_range,
)
from analysis.errors import InputError
from analysis.result import Capture, Prediction, TokenSeq


# -- builders (shared with the other test files) ----------------------------------------------
def token_seq(display, special=None, word_ids=None) -> TokenSeq:
    n = len(display)
    special = [False] * n if special is None else list(special)
    if word_ids is None:
        word_ids, w = [], 0
        for sp in special:
            word_ids.append(-1 if sp else w)
            w += 0 if sp else 1
    return TokenSeq(
        ids=np.arange(100, 100 + n),
        raw=tuple("▁" + d for d in display),
        display=tuple(display),
        special=special,
        word_ids=tuple(word_ids),
    )


def random_stack(rng, n_layers, n_heads, q, k, causal=False, dtype=np.float32) -> np.ndarray:
    a = rng.random((n_layers, n_heads, q, k)) ** 3 + 1e-3
    if causal:
        a = a * np.tril(np.ones((q, k)))
    return (a / a.sum(-1, keepdims=True)).astype(dtype)


def make_encoder(dtype=np.float32, seed=0) -> Capture:
    rng = np.random.default_rng(seed)
    toks = ["[CLS]", "나는", "이", "강의를", "좋아한다", "[SEP]"]
    src = token_seq(toks, special=[True, False, False, False, False, True])
    return Capture(
        model="toy-bert",
        kind="encoder",
        architecture="BertModel",
        text="나는 이 강의를 좋아한다",
        source=src,
        stacks={"attentions": random_stack(rng, 3, 4, 6, 6, dtype=dtype)},
        notes=("synthetic",),
        prediction=Prediction(task="masked_lm", per_position=((2, (("이", 0.5), ("그", 0.25))),)),
    )


def make_decoder(dtype=np.float32, seed=1) -> Capture:
    rng = np.random.default_rng(seed)
    toks = ["<s>", "The", "cat", "sat", "on", "the", "mat"]
    src = token_seq(toks, special=[True] + [False] * 6)
    return Capture(
        model="toy-gpt",
        kind="decoder",
        architecture="GPT2LMHeadModel",
        text="The cat sat on the mat",
        source=src,
        stacks={"attentions": random_stack(rng, 2, 3, 7, 7, causal=True, dtype=dtype)},
        prompt_length=4,
        generated=True,
        prediction=Prediction(task="next_token", items=(("rug", 0.6), ("floor", 0.1))),
    )


def make_seq2seq(dtype=np.float32, seed=2) -> Capture:
    rng = np.random.default_rng(seed)
    src = token_seq(
        ["I", "really", "like", "this", "course", ".", "</s>"], special=[False] * 6 + [True]
    )
    dec_in = token_seq(
        ["<pad>", "나는", "이", "강의를", "정말", "좋아한다"], special=[True] + [False] * 5
    )
    out = token_seq(
        ["나는", "이", "강의를", "정말", "좋아한다", "</s>"], special=[False] * 5 + [True]
    )
    return Capture(
        model="toy-marian",
        kind="seq2seq",
        architecture="MarianMTModel",
        text="I really like this course .",
        source=src,
        stacks={
            "encoder_attentions": random_stack(rng, 2, 4, 7, 7, dtype=dtype),
            "decoder_attentions": random_stack(rng, 2, 4, 6, 6, causal=True, dtype=dtype),
            "cross_attentions": random_stack(rng, 2, 4, 6, 7, dtype=dtype),
        },
        target="나는 이 강의를 정말 좋아한다",
        decoder_inputs=dec_in,
        outputs=out,
        output_text="나는 이 강의를 정말 좋아한다",
        generated=True,
        prediction=Prediction(task="translation", text="나는 이 강의를 정말 좋아한다"),
    )


# -- select_map -------------------------------------------------------------------------------
def test_select_single_head_matches_stack():
    cap = make_encoder()
    arr = cap.stacks["attentions"]
    m = select_map(cap, None, 2, 1)
    assert m.dtype == np.float32 and m.shape == (6, 6)
    np.testing.assert_array_equal(m, arr[2, 1])
    assert not np.shares_memory(m, arr)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_aggregate_over_heads_matches_numpy(how):
    cap = make_seq2seq(dtype=np.float16)
    arr = cap.stacks["cross_attentions"]
    m = select_map(cap, "cross", 1, None, how)
    expected = (
        arr[1].astype(np.float64).mean(0) if how == "mean" else arr[1].astype(np.float32).max(0)
    )
    assert m.dtype == np.float32 and m.shape == (6, 7)
    np.testing.assert_allclose(m, expected, rtol=1e-6)


def test_select_from_plain_array_and_inputs_untouched():
    rng = np.random.default_rng(5)
    arr = random_stack(rng, 2, 3, 4, 4)
    before = arr.copy()
    m = select_map(arr, "ignored", 0, None, "max")
    m[:] = -1  # the result is a new array
    np.testing.assert_array_equal(arr, before)


@pytest.mark.parametrize(
    ("layer", "head", "message"),
    [
        (3, 0, "layer 3 is out of range: this stack has layers 0–2"),
        (-1, 0, "layer -1 is out of range"),
        (0, 4, "head 4 is out of range: this stack has heads 0–3"),
    ],
)
def test_select_out_of_range(layer, head, message):
    with pytest.raises(InputError, match=message):
        select_map(make_encoder(), None, layer, head)


def test_select_bad_aggregation_and_stack():
    with pytest.raises(InputError, match="mean or max"):
        select_map(make_encoder(), None, 0, None, "median")
    with pytest.raises(InputError, match="cross"):
        select_map(make_encoder(), "cross", 0, 0)


# -- hide_tokens ------------------------------------------------------------------------------
def test_hide_tokens_renormalizes_rows_over_kept_columns():
    m = np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0], [0.2, 0.6, 0.2]], dtype=np.float32)
    row_keep = np.array([True, True, False])
    col_keep = np.array([True, True, False])
    out, rows, cols = hide_tokens(m, row_keep, col_keep, renormalize=True)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(cols, [0, 1])
    # row 0: 0.5, 0.25 → 2/3, 1/3 ; row 1 keeps nothing → stays 0
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3], [0.0, 0.0]], rtol=1e-6)
    assert out.dtype == np.float32


def test_hide_tokens_without_renormalize_is_a_plain_subset():
    cap = make_encoder()
    m = select_map(cap, None, 0, 0)
    keep = ~cap.source.special
    out, rows, cols = hide_tokens(m, keep, keep, renormalize=False)
    np.testing.assert_array_equal(out, m[1:5, 1:5])
    np.testing.assert_array_equal(rows, [1, 2, 3, 4])


def test_hide_tokens_on_a_whole_stack():
    cap = make_seq2seq()
    arr = cap.stacks["cross_attentions"]
    rk, ck = ~cap.decoder_inputs.special, ~cap.source.special
    out, _, _ = hide_tokens(arr, rk, ck, renormalize=True)
    assert out.shape == (2, 4, 5, 6)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_hide_tokens_shape_mismatch():
    with pytest.raises(InputError):
        hide_tokens(np.ones((3, 3)), np.ones(2, bool), np.ones(3, bool), True)


@settings(max_examples=40, deadline=None)
@given(
    m=arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(0, 1, width=32),
    ),
    data=st.data(),
)
def test_hide_tokens_property_rows_sum_to_one_or_zero(m, data):
    q, k = m.shape
    rk = np.array(data.draw(st.lists(st.booleans(), min_size=q, max_size=q)))
    ck = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    before = m.copy()
    out, rows, cols = hide_tokens(m, rk, ck, renormalize=True)
    np.testing.assert_array_equal(m, before)  # input never modified
    assert out.shape == (rk.sum(), ck.sum())
    sums = out.sum(-1)
    kept = m[np.ix_(rows, cols)].astype(np.float64).sum(-1)
    np.testing.assert_allclose(sums[kept > 0], 1.0, rtol=1e-4)
    assert np.all(sums[kept == 0] == 0)


# -- causal mask ------------------------------------------------------------------------------
def test_causal_mask_is_j_greater_than_i():
    mask = causal_mask(4, 5)
    i, j = np.indices((4, 5))
    np.testing.assert_array_equal(mask, j > i)
    assert mask.dtype == bool


# -- colour norms -----------------------------------------------------------------------------
def test_linear_norm_from_values_and_explicit():
    v = np.array([[0.1, 0.7], [0.3, np.nan]])
    n = color_norm(v)
    assert type(n) is Normalize and (n.vmin, n.vmax) == (0.0, pytest.approx(0.7))
    n2 = color_norm(None, "linear", 0.0, 0.5)
    assert (n2.vmin, n2.vmax) == (0.0, 0.5) and n2.clip


def test_log_norm_has_floor_and_clips_zero():
    v = np.array([0.0, 1e-7, 0.02, 0.9])
    n = color_norm(v, "log")
    assert isinstance(n, LogNorm)
    assert n.vmin == pytest.approx(LOG_FLOOR) and n.vmax == pytest.approx(0.9)
    assert float(n(0.0)) == 0.0  # zero gets the lowest colour, not "bad"
    n2 = color_norm(np.array([0.0, 0.05, 0.5]), "log")
    assert n2.vmin == pytest.approx(0.05)


def test_shared_range_covers_the_stack():
    cap = make_encoder()
    arr = cap.stacks["attentions"]
    shared = color_norm(arr)
    per_view = color_norm(select_map(cap, None, 0, 0))
    assert shared.vmax == pytest.approx(float(arr.max()))
    assert per_view.vmax <= shared.vmax


def test_value_range_degenerate_and_bad_scale():
    assert value_range(np.zeros(3)) == (0.0, 1.0)
    lo, hi = value_range(np.zeros(3), "log")
    assert lo == LOG_FLOOR and hi > lo
    with pytest.raises(InputError, match="linear or log"):
        color_norm(np.ones(2), "sqrt")


# -- degenerate ranges and one explicit limit (mutation testing found these untested) ---------
def test_one_explicit_limit_keeps_it_and_takes_the_other_from_the_values():
    v = np.array([0.1, 0.3, 0.7])
    n = color_norm(v, vmin=0.2)
    assert (n.vmin, n.vmax) == (0.2, pytest.approx(0.7))
    n = color_norm(v, vmax=0.5)
    assert (n.vmin, n.vmax) == (0.0, 0.5)
    n = color_norm(v, "log", vmax=0.5)
    assert (n.vmin, n.vmax) == (pytest.approx(0.1), 0.5)


def test_equal_limits_are_widened_exactly():
    n = color_norm(None, "linear", 0.3, 0.3)
    assert (n.vmin, n.vmax) == (0.3, 1.3)
    n = color_norm(None, "log", 0.01, 0.01)
    assert (n.vmin, n.vmax) == (0.01, 0.1)
    assert value_range(np.array([0.5, 0.5]), "log") == (0.5, 5.0)
    assert value_range(np.array([-0.5, -0.5])) == (-0.5, -0.5 + 0.5e-6)


def test_ranges_of_no_finite_values():
    from analysis.aggregate import stack_range

    nothing = np.full((1, 1, 2, 2), np.nan, dtype=np.float32)
    assert value_range(nothing) == (0.0, 1.0)
    assert value_range(nothing, "log") == (LOG_FLOOR, 1.0)
    assert value_range(np.zeros(3), "log") == (LOG_FLOOR, 1.0)
    assert stack_range(nothing) == (0.0, 0.0)
    assert stack_range(nothing.astype(np.float16)) == (0.0, 0.0)


def test_stack_range_of_small_float32_values():
    from analysis.aggregate import stack_range

    # float32 whose 16-bit halves would look like small float16 values: never the float16 shortcut
    a = np.array([[[[0.25, 0.5], [0.375, 0.25]]]], dtype=np.float32)
    assert stack_range(a) == (0.25, 0.5)


def test_color_norm_errors_say_what_to_do():
    with pytest.raises(InputError, match="color_norm needs values when vmin or vmax is not given"):
        color_norm(None, "linear", 0.0)
    with pytest.raises(InputError, match="unknown colour scale 'sqrt': choose linear or log"):
        color_norm(None, "sqrt", 0.0, 1.0)


def test_maps_of_a_float16_stack_are_float32_and_mean_is_the_default():
    cap = make_encoder(dtype=np.float16)
    for m in (select_map(cap, None, 1, 2), select_map(cap, None, 1, None), select_map(cap, None, 1, None, "max")):
        assert m.dtype == np.float32
    np.testing.assert_array_equal(select_map(cap, None, 1, None), select_map(cap, None, 1, None, "mean"))
    keep = np.ones(6, dtype=bool)
    assert hide_tokens(cap.stacks["attentions"], keep, keep, False)[0].dtype == np.float32


@pytest.mark.parametrize("layer,head", [(True, 0), (0, True), (0.0, 0), (0, 1.0)])
def test_layer_and_head_must_be_integers(layer, head):
    with pytest.raises(InputError, match="out of range"):
        select_map(make_encoder(), None, layer, head)


def test_input_errors_say_exactly_what_to_do():
    cap = make_encoder()
    with pytest.raises(InputError, match=r"^an attention stack must be \[layer, head, query, key\]; got shape \(2, 2\)$"):
        select_map(np.zeros((2, 2)), None, 0, 0)
    with pytest.raises(InputError, match=r"^head 9 is out of range: this stack has heads 0–3 \(or none for the aggregate over heads\)$"):
        select_map(cap, None, 0, 9)
    with pytest.raises(InputError, match=r"^keep masks of shapes \(2,\) and \(6,\) do not fit a map of shape \(6, 6\)$"):
        hide_tokens(np.zeros((6, 6)), np.ones(2, bool), np.ones(6, bool), False)
    with pytest.raises(InputError, match="^color_norm needs values when vmin or vmax is not given$"):
        color_norm(None, "linear", 0.0)
