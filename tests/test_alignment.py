"""analysis.alignment: word alignment from cross-attention, Pharaoh I/O, AER."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.alignment import (
    AlignmentResult,
    aer,
    aer_count_grid,
    aer_counts,
    aer_grid,
    bundled_alignment_info,
    corpus_aer_grid,
    format_pharaoh,
    parse_pharaoh,
    split_pharaoh,
    word_alignment,
    word_matrix,
)
from analysis.errors import InputError, ModelLoadError


def _cross(rows: list[list[float]], layers: int = 1, heads: int = 1) -> np.ndarray:
    """``[L, H, T, S]`` with the same ``[T, S]`` map in every layer and head."""
    m = np.asarray(rows, dtype=np.float32)
    return np.broadcast_to(m, (layers, heads, *m.shape)).copy()


# -- word_alignment ---------------------------------------------------------------------------
def test_identity_alignment():
    cross = _cross([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    res = word_alignment(cross, [0, 1, -1], [0, 1, -1], layer=0, head=0)
    assert isinstance(res, AlignmentResult)
    assert res.pairs == ((0, 0), (1, 1))
    assert res.matrix.shape == (2, 2)
    np.testing.assert_allclose(res.matrix, [[0.9, 0.05], [0.1, 0.8]], rtol=1e-6)
    assert (res.layer, res.head) == (0, 0)


def test_source_pieces_are_summed():
    # source word 0 has two pieces with 0.3 each: 0.6 beats word 1's single 0.4 token
    cross = _cross([[0.3, 0.3, 0.4, 0.0]])
    res = word_alignment(cross, [0, 0, 1, -1], [0], layer=0)
    np.testing.assert_allclose(res.matrix, [[0.6, 0.4]], rtol=1e-6)
    assert res.pairs == ((0, 0),)


def test_target_pieces_are_averaged():
    # target word 0 = rows 0 and 1; row 0 leans to source 1, row 1 strongly to source 0
    cross = _cross([[0.4, 0.6], [1.0, 0.0], [0.2, 0.8]])
    res = word_alignment(cross, [0, 1], [0, 0, 1], layer=0)
    np.testing.assert_allclose(res.matrix, [[0.7, 0.3], [0.2, 0.8]], rtol=1e-6)
    assert res.pairs == ((0, 0), (1, 1))


def test_special_tokens_are_ignored():
    # most attention goes to </s> (column 2); it must not count as a word
    cross = _cross([[0.1, 0.2, 0.7], [0.25, 0.05, 0.7], [0.0, 0.0, 1.0]])
    res = word_alignment(cross, [0, 1, -1], [0, 1, -1], layer=0)
    assert res.matrix.shape == (2, 2)
    assert res.pairs == ((0, 1), (1, 0))


def test_head_average_and_single_head():
    head0 = [[0.9, 0.1], [0.9, 0.1]]
    head1 = [[0.0, 1.0], [0.2, 0.8]]
    cross = np.array([[head0, head1]], dtype=np.float32)  # [1, 2, 2, 2]
    assert word_alignment(cross, [0, 1], [0, 1], layer=0, head=0).pairs == ((0, 0), (0, 1))
    assert word_alignment(cross, [0, 1], [0, 1], layer=0, head=1).pairs == ((1, 0), (1, 1))
    avg = word_alignment(cross, [0, 1], [0, 1], layer=0, head=None)
    np.testing.assert_allclose(avg.matrix, [[0.45, 0.55], [0.55, 0.45]], rtol=1e-6)
    assert avg.pairs == ((0, 1), (1, 0))
    assert avg.head is None


def test_layer_selection_negative_and_mean():
    first = [[1.0, 0.0]]
    last = [[0.0, 1.0]]
    cross = np.array([[first], [first], [last]], dtype=np.float32)  # [3, 1, 1, 2]
    assert word_alignment(cross, [0, 1], [0], layer=-1).pairs == ((1, 0),)
    assert word_alignment(cross, [0, 1], [0], layer=-1).layer == 2
    mean = word_alignment(cross, [0, 1], [0], layer=None)
    assert mean.layer is None
    np.testing.assert_allclose(mean.matrix, [[2 / 3, 1 / 3]], rtol=1e-6)
    assert mean.pairs == ((0, 0),)


def test_ties_pick_lower_source_index():
    res = word_alignment(_cross([[0.5, 0.5]]), [0, 1], [0], layer=0)
    assert res.pairs == ((0, 0),)


def test_row_without_word_attention_has_no_link():
    cross = _cross([[0.0, 0.0, 1.0], [0.6, 0.4, 0.0]])
    res = word_alignment(cross, [0, 1, -1], [0, 1], layer=0)
    assert res.pairs == ((0, 1),)


def test_missing_word_index_gives_empty_row_and_column():
    # target word 1 and source word 1 have no tokens
    cross = _cross([[0.2, 0.8], [0.7, 0.3]])
    res = word_alignment(cross, [0, 2], [0, 2], layer=0)
    assert res.matrix.shape == (3, 3)
    assert res.matrix[1].sum() == 0 and res.matrix[:, 1].sum() == 0
    assert res.pairs == ((0, 2), (2, 0))


def test_result_matrix_is_read_only():
    res = word_alignment(_cross([[1.0]]), [0], [0], layer=0)
    with pytest.raises(ValueError):
        res.matrix[0, 0] = 2.0


def test_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    cross = rng.random((2, 3, 4, 5)).astype(np.float32)
    before = cross.copy()
    src = [0, 0, 1, 2, -1]
    tgt = [0, 1, 1, -1]
    word_alignment(cross, src, tgt, layer=1, head=None)
    aer_grid(cross, src, tgt, {(0, 0), (2, 1)})
    np.testing.assert_array_equal(cross, before)
    assert src == [0, 0, 1, 2, -1] and tgt == [0, 1, 1, -1]
    # read-only input (as in a Capture) works too
    cross.setflags(write=False)
    word_alignment(cross, src, tgt, layer=0, head=2)


@pytest.mark.parametrize(
    "kwargs",
    [dict(layer=2), dict(layer=-3), dict(head=3), dict(layer=0, head=-4)],
)
def test_out_of_range_layer_or_head(kwargs):
    cross = np.ones((2, 3, 1, 1), dtype=np.float32)
    with pytest.raises(InputError, match="out of range"):
        word_alignment(cross, [0], [0], **kwargs)


def test_shape_mismatch_is_an_input_error():
    cross = np.ones((1, 1, 2, 3), dtype=np.float32)
    with pytest.raises(InputError, match="word ids"):
        word_alignment(cross, [0, 1], [0, 1], layer=0)
    with pytest.raises(InputError, match="dimensions"):
        word_alignment(cross[0], [0, 1, 2], [0, 1], layer=0)


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 6),
    s=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_property_one_link_per_target_word_rows_sum_to_one(t, s, seed):
    rng = np.random.default_rng(seed)
    cross = rng.random((2, 2, t, s)) + 1e-3
    cross /= cross.sum(-1, keepdims=True)
    src = np.sort(rng.integers(0, s, size=s)).tolist()
    tgt = np.sort(rng.integers(0, t, size=t)).tolist()
    res = word_alignment(cross, src, tgt, layer=0)
    has = sorted(set(tgt))
    assert sorted(j for _, j in res.pairs) == has
    for i, j in res.pairs:
        assert res.matrix[j, i] == res.matrix[j].max()
    np.testing.assert_allclose(res.matrix[has].sum(1), 1.0, rtol=1e-9)


def test_word_matrix_matches_manual_pooling():
    attn = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    m = word_matrix(attn, [0, 1, 1, -1], [0, 0])
    np.testing.assert_allclose(m, [[0.25, 0.5]])


# -- Pharaoh ----------------------------------------------------------------------------------
def test_pharaoh_roundtrip():
    links = {(0, 0), (1, 0), (3, 2), (2, 1)}
    text = format_pharaoh(links)
    assert parse_pharaoh(text) == links
    assert text == "0-0 1-0 2-1 3-2"


def test_pharaoh_parsing_details():
    assert parse_pharaoh("") == set()
    assert parse_pharaoh("  0-0\t1-2  ") == {(0, 0), (1, 2)}
    assert format_pharaoh([(1, 1), (1, 1), (0, 2)]) == "0-2 1-1"
    sure, possible = split_pharaoh("0-0 1p1 2?2")
    assert sure == {(0, 0)}
    assert possible == {(0, 0), (1, 1), (2, 2)}
    assert parse_pharaoh("0-0 1p1") == {(0, 0), (1, 1)}


@pytest.mark.parametrize("bad", ["0", "0-", "a-1", "1-2-3", "-1-2", "0:1"])
def test_pharaoh_rejects_bad_links(bad):
    with pytest.raises(InputError, match="Pharaoh"):
        parse_pharaoh(bad)


# -- AER --------------------------------------------------------------------------------------
def test_aer_closed_form():
    gold = {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert aer(gold, gold) == 0.0
    assert aer({(0, 1), (1, 0)}, gold) == 1.0
    # 2 of 4 predicted correct, |A| = 4: 1 - 4/8
    assert aer({(0, 0), (1, 1), (2, 3), (3, 2)}, gold) == pytest.approx(0.5)
    # 3 predictions, all correct, 4 gold: 1 - 6/7
    assert aer({(0, 0), (1, 1), (2, 2)}, gold) == pytest.approx(1 / 7)
    assert aer(set(), set()) == 0.0
    assert aer({(0, 0)}, set()) == 1.0


def test_aer_with_possible_links():
    sure = {(0, 0)}
    possible = {(1, 0)}
    # A = {0-0, 1-0}: |A∩S| = 1, |A∩P| = 2 (P ⊇ S), |A| + |S| = 3 → 1 - 3/3
    assert aer({(0, 0), (1, 0)}, sure, possible) == 0.0
    # only the possible link: 1 - (0 + 1) / (1 + 1)
    assert aer({(1, 0)}, sure, possible) == pytest.approx(0.5)
    np.testing.assert_array_equal(aer_counts({(1, 0)}, sure, possible), [0, 1, 1, 1])


def test_aer_grid_matches_word_alignment():
    rng = np.random.default_rng(3)
    cross = rng.random((2, 3, 4, 4))
    cross /= cross.sum(-1, keepdims=True)
    src, tgt = [0, 1, 2, -1], [0, 1, 2, -1]
    gold = {(0, 0), (1, 1), (2, 2), (1, 2)}
    grid = aer_grid(cross, src, tgt, gold)
    assert grid.shape == (2, 4)
    for li in range(2):
        for h in range(3):
            expect = aer(word_alignment(cross, src, tgt, layer=li, head=h).pairs, gold)
            assert grid[li, h] == pytest.approx(expect)
        expect = aer(word_alignment(cross, src, tgt, layer=li, head=None).pairs, gold)
        assert grid[li, -1] == pytest.approx(expect)


def test_corpus_aer_sums_counts_not_ratios():
    # sentence 1: one target word, wrong (AER 1); sentence 2: three words, all right (AER 0)
    wrong = _cross([[0.0, 1.0]])
    right = _cross([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    samples = [
        (wrong, [0, 1], [0], {(0, 0)}),
        (right, [0, 1, 2], [0, 1, 2], {(0, 0), (1, 1), (2, 2)}),
    ]
    grid = corpus_aer_grid(samples)
    assert grid.shape == (1, 2)
    # counts: |A∩S| = 3, |A| = 4, |S| = 4 → 1 - 6/8; a mean of ratios would give 0.5
    assert grid[0, 0] == pytest.approx(0.25)
    np.testing.assert_array_equal(aer_count_grid(*samples[0])[0, 0], [0, 0, 1, 1])
    with pytest.raises(InputError):
        corpus_aer_grid([])
    # a fifth item gives possible links: the wrong link 1-0 becomes possible
    grid_p = corpus_aer_grid([(*samples[0], {(1, 0)}), samples[1]])
    # |A∩S| = 3, |A∩P| = 4, |A| + |S| = 8 → 1 - 7/8
    assert grid_p[0, 0] == pytest.approx(0.125)


# -- bundled info -----------------------------------------------------------------------------
def test_bundled_alignment_info(tmp_path):
    assert bundled_alignment_info(tmp_path) == {}
    info = {"best_layer": 1, "best_head": None, "aer_by_layer": [0.5, 0.1], "exact_match": 0.99}
    (tmp_path / "alignment.json").write_text(json.dumps(info), encoding="utf-8")
    assert bundled_alignment_info(tmp_path) == info
    (tmp_path / "alignment.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError):
        bundled_alignment_info(tmp_path)
    (tmp_path / "alignment.json").write_text(json.dumps({"best_layer": "1"}), encoding="utf-8")
    with pytest.raises(ModelLoadError):
        bundled_alignment_info(tmp_path)
