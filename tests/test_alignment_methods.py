"""Alignment methods (issue #14, part 2): predict vs. Shift-Att rows, the link threshold, and the
documented defaults."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from analysis.alignment import (
    aer_grid,
    best_setting,
    corpus_aer_grid,
    format_pharaoh,
    word_alignment,
)
from analysis.errors import InputError


def cross_of(rows: list[list[float]]) -> np.ndarray:
    """``[1, 1, T, S]`` from rows."""
    return np.array(rows, dtype=np.float32)[None, None]


# output tokens: w0 w1 </s>; source: a b </s>
SRC_IDS, TGT_IDS = [0, 1, -1], [0, 1, -1]
ROWS = [[0.8, 0.1, 0.1],   # predicting w0: looks at a
        [0.2, 0.7, 0.1],   # predicting w1 (input w0): looks at b
        [0.1, 0.2, 0.7]]   # predicting </s> (input w1)


def test_predict_reads_row_t_and_shift_reads_row_t_plus_one():
    cross = cross_of(ROWS)
    pred = word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0)
    shift = word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0, method="shift")
    assert pred.method == "predict" and shift.method == "shift"
    np.testing.assert_allclose(pred.matrix, [[0.8, 0.1], [0.2, 0.7]], atol=1e-6)
    np.testing.assert_allclose(shift.matrix, [[0.2, 0.7], [0.1, 0.2]], atol=1e-6)  # rows 1 and 2
    assert pred.pairs == ((0, 0), (1, 1))
    assert shift.pairs == ((1, 0), (1, 1))


def test_shift_leaves_a_last_word_without_a_row_unaligned():
    cross = cross_of(ROWS[:2])
    res = word_alignment(cross, SRC_IDS, [0, 1], layer=0, head=0, method="shift")
    assert res.matrix.shape == (2, 2)  # word 1 keeps its (empty) row
    assert res.pairs == ((1, 0),)


def test_threshold_adds_links_by_share_of_the_word_row():
    cross = cross_of([[0.45, 0.35, 0.2], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7]])
    argmax = word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0)
    assert argmax.pairs == ((0, 0), (1, 1))
    # row 0 over the words: 0.45 / 0.8 = 0.5625 and 0.35 / 0.8 = 0.4375
    many = word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0, threshold=0.4)
    assert many.pairs == ((0, 0), (1, 0), (1, 1)) and many.threshold == 0.4
    assert word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0, threshold=0.5).pairs == argmax.pairs
    assert word_alignment(cross, SRC_IDS, TGT_IDS, layer=0, head=0, threshold=1.0).pairs == argmax.pairs
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="0 < P"):
            word_alignment(cross, SRC_IDS, TGT_IDS, threshold=bad)
    with pytest.raises(InputError, match="predict, shift"):
        word_alignment(cross, SRC_IDS, TGT_IDS, method="next")


def test_aer_grids_follow_the_method_and_best_setting_picks_the_lowest():
    rng = np.random.default_rng(0)
    cross = rng.dirichlet(np.ones(3), size=(2, 3, 3)).astype(np.float32)  # [L=2, H=3, T=3, S=3]
    gold = {(0, 0), (1, 1)}
    grids = {}
    for method in ("predict", "shift"):
        for threshold in (None, 0.3):
            grid = aer_grid(cross, SRC_IDS, TGT_IDS, gold, None, method, threshold)
            assert grid.shape == (2, 4)
            for layer in range(2):
                for col in range(4):
                    head = None if col == 3 else col
                    res = word_alignment(cross, SRC_IDS, TGT_IDS, layer, head, method, threshold)
                    a = set(res.pairs)
                    want = 1 - (2 * len(a & gold)) / (len(a) + len(gold))
                    assert grid[layer, col] == pytest.approx(want)
            corpus = corpus_aer_grid([(cross, SRC_IDS, TGT_IDS, gold)] * 2, method, threshold)
            np.testing.assert_allclose(corpus, grid)
            grids[(method, threshold)] = grid
    best = best_setting(grids)
    assert best["aer"] == pytest.approx(min(float(g.min()) for g in grids.values()))
    g = grids[(best["method"], best["threshold"])]
    col = 3 if best["head"] is None else best["head"]
    assert g[best["layer"], col] == pytest.approx(best["aer"])


def test_cli_alignment_method_and_threshold(tiny_model_dir, tmp_path, loaded):
    from analysis.alignment_export import alignment_for_capture
    from analysis.capture import capture
    from analysis.cli import main

    folder = str(tiny_model_dir("marian"))
    base = ["--model", folder, "--text", "I like this course", "--target", "I like this course",
            "--alignment-layer", "1", "--alignment-head", "2"]
    cap = capture(loaded("marian"), "I like this course", target="I like this course")
    for extra, method, threshold in ((["--alignment-method", "shift"], "shift", None),
                                     (["--alignment-threshold", "0.2"], "predict", 0.2),
                                     (["--alignment-method", "shift", "--alignment-threshold", "0.3"], "shift", 0.3)):
        out = tmp_path / "a.txt"
        assert main([*base, *extra, "--export-alignment", str(out)]) == 0
        want = alignment_for_capture(cap, folder, 1, 2, method, threshold)
        assert out.read_text() == format_pharaoh(want.pairs) + "\n"
    assert main([*base, "--alignment-threshold", "0", "--export-alignment", str(tmp_path / "b.txt")]) != 0
    assert not (tmp_path / "b.txt").exists()


def test_documented_defaults_are_read_from_alignment_json(tiny_model_dir, tmp_path, loaded):
    from analysis.alignment_export import alignment_defaults, alignment_for_capture
    from analysis.capture import capture

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir("marian"), folder)
    cap = capture(loaded("marian"), "I like this course", target="I like this course")
    assert alignment_defaults(cap, str(folder)).documented is False
    (folder / "alignment.json").write_text(json.dumps(
        {"best_layer": 0, "best_head": 3, "best_method": "shift", "best_threshold": 0.25}))
    d = alignment_defaults(cap, str(folder))
    assert (d.layer, d.head, d.method, d.threshold, d.documented) == (0, 3, "shift", 0.25, True)
    res = alignment_for_capture(cap, str(folder))
    assert (res.layer, res.head, res.method, res.threshold) == (0, 3, "shift", 0.25)
    # an explicit layer takes the head average unless a head is given; explicit method wins
    res = alignment_for_capture(cap, str(folder), layer=1, method="predict")
    assert (res.layer, res.head, res.method, res.threshold) == (1, None, "predict", 0.25)


# -- what the errors say, word for word (a partial match lets a changed message through) ------
def test_alignment_errors_say_exactly_what_to_do(tmp_path):
    import re

    from analysis.alignment import (
        bundled_alignment_info,
        check_method,
        corpus_aer_counts,
        split_pharaoh,
    )
    from analysis.errors import ModelLoadError

    def says(exc_type, text, fn, *args, **kw):
        with pytest.raises(exc_type) as info:
            fn(*args, **kw)
        assert str(info.value) == text

    says(InputError, "unknown alignment method 'next': choose one of predict, shift", check_method, "next")
    says(InputError, "the alignment threshold 1.5 is out of range: choose a share P with 0 < P ≤ 1",
         check_method, "predict", 1.5)
    says(InputError, "the alignment threshold True is out of range: choose a share P with 0 < P ≤ 1",
         check_method, "predict", True)
    check_method("shift", 1.0)
    cross = np.ones((2, 3, 1, 1), dtype=np.float32)
    says(InputError, "layer 2 is out of range; this model has 2 layers (0 to 1)", word_alignment, cross, [0], [0], layer=2)
    says(InputError, "head -4 is out of range; this model has 3 heads (0 to 2)", word_alignment, cross, [0], [0],
         layer=0, head=-4)
    says(InputError, "cross-attention must be a [layer, head, target, source] array, got 3 dimensions; pass the "
         "capture's cross_attentions stack", word_alignment, cross[0], [0], [0])
    says(InputError, "word ids do not match the cross-attention shape (2, 3, 1, 1): got 2 target and 1 source ids; "
         "give one word id per output token and per source token", word_alignment, cross, [0], [0, 1])
    says(InputError, "'0:1' is not a Pharaoh link; write links as i-j (source-target word indices)",
         split_pharaoh, "0-0 0:1")
    says(InputError, "no sentences given; pass at least one (cross, src ids, tgt ids, gold) sample",
         corpus_aer_counts, [])
    other = np.ones((2, 2, 1, 1), dtype=np.float32)
    says(InputError, "all sentences must come from the same model (same layers and heads)", corpus_aer_counts,
         [(cross, [0], [0], {(0, 0)}), (other, [0], [0], {(0, 0)})])
    says(InputError, "no AER grids given", best_setting, {})
    path = tmp_path / "alignment.json"
    path.write_text(json.dumps({"best_layer": True}), encoding="utf-8")
    says(ModelLoadError, f"{path} has no integer 'best_layer'; retrain the model or restore the file",
         bundled_alignment_info, tmp_path)
    for head in ("1", 1.0, False):
        path.write_text(json.dumps({"best_layer": 1, "best_head": head}), encoding="utf-8")
        says(ModelLoadError, f"{path} has a non-integer 'best_head'; retrain the model or restore the file",
             bundled_alignment_info, tmp_path)
    path.write_text("[1]", encoding="utf-8")
    says(ModelLoadError, f"{path} has no integer 'best_layer'; retrain the model or restore the file",
         bundled_alignment_info, tmp_path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ModelLoadError) as bad:
        bundled_alignment_info(tmp_path)
    assert re.fullmatch(rf"cannot read {re.escape(str(path))}: .+; retrain the model or restore the file", str(bad.value))


def test_best_setting_breaks_ties_by_first_key_lower_layer_then_head_average():
    a = np.array([[0.5, 0.2, 0.2], [0.2, 0.2, 0.2]])  # [L=2, H=2 + average]
    b = np.array([[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]])
    best = best_setting({("predict", None): a, ("shift", 0.3): b})
    assert best == {"method": "predict", "threshold": None, "layer": 0, "head": None, "aer": 0.2}
    best = best_setting({("predict", None): np.array([[0.5, 0.3, 0.4]]), ("shift", 0.3): np.array([[0.5, 0.29, 0.3]])})
    assert best == {"method": "shift", "threshold": 0.3, "layer": 0, "head": 1, "aer": 0.29}
