"""Per-head statistics, pattern tags and the statistics CSV (analysis/stats.py)."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.errors import Cancelled, ExportError
from analysis.result import Capture, TokenSeq
from analysis.stats import (
    CSV_COLUMNS,
    POSITIONAL_STATS,
    STAT_NAMES,
    TAG_NAMES,
    capture_stats,
    head_stats,
    head_tags,
    is_punctuation,
    max_entropy,
    normalized_entropy,
    stats_csv_text,
    stats_rows,
    write_stats_csv,
)
from analysis.tasks import TaskState


# -- helpers -----------------------------------------------------------------------------------
def random_attention(rng, L, H, Q, K, causal=False, dtype=np.float32, peaked=1.0):
    logits = rng.normal(size=(L, H, Q, K)) * 3.0 * peaked
    if causal:
        logits = np.where(np.tril(np.ones((Q, K), dtype=bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)).astype(dtype)


def frozen(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def ref_stats(alpha, *, self_attention, special, punct):
    """One head's statistics from the definitions, with plain Python loops."""
    Q, K = len(alpha), len(alpha[0])
    rows = [[float(x) for x in r] for r in alpha]
    ent = sum(-sum(x * math.log(x) for x in r if x > 0) for r in rows) / Q
    out = {
        "entropy": ent,
        "to_first": sum(r[0] for r in rows) / Q,
        "max_weight": sum(max(r) for r in rows) / Q,
        "to_special": sum(sum(x for x, s in zip(r, special, strict=True) if s) for r in rows) / Q,
        "to_punctuation": sum(sum(x for x, p in zip(r, punct, strict=True) if p) for r in rows) / Q,
        "mean_distance": math.nan,
        "to_previous": math.nan,
        "to_self": math.nan,
        "to_next": math.nan,
    }
    if self_attention:
        out["mean_distance"] = sum(rows[i][j] * abs(i - j) for i in range(Q) for j in range(K)) / Q
        out["to_self"] = sum(rows[i][i] for i in range(Q)) / Q
        if Q >= 2:
            out["to_previous"] = sum(rows[i][i - 1] for i in range(1, Q)) / (Q - 1)
            out["to_next"] = sum(rows[i][i + 1] for i in range(Q - 1)) / (Q - 1)
    return out


def assert_close(got, want, tol=1e-9):
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=tol, abs=tol)


def tokens(displays, special=None):
    n = len(displays)
    special = [False] * n if special is None else special
    return TokenSeq(
        ids=np.arange(n),
        raw=tuple(displays),
        display=tuple(displays),
        special=np.array(special, dtype=bool),
        word_ids=tuple(-1 if s else i for i, s in enumerate(special)),
    )


SRC = ["[CLS]", "the", "cat", ",", "sat", ".", "[SEP]"]
SRC_SPECIAL = [True, False, False, False, False, False, True]
DEC = ["<s>", "le", "chat", "!", "assis"]


def seq2seq_capture(seed=0):
    rng = np.random.default_rng(seed)
    S, T = len(SRC), len(DEC)
    return Capture(
        model="test",
        kind="seq2seq",
        architecture="MarianMTModel",
        text="the cat, sat.",
        source=tokens(SRC, SRC_SPECIAL),
        stacks={
            "encoder_attentions": random_attention(rng, 2, 3, S, S),
            "decoder_attentions": random_attention(rng, 2, 3, T, T, causal=True),
            "cross_attentions": random_attention(rng, 2, 3, T, S),
        },
        target="le chat ! assis",
        decoder_inputs=tokens(DEC, [True, False, False, False, False]),
        outputs=tokens(DEC[1:] + ["</s>"], [False, False, False, False, True]),
    )


def encoder_capture(seed=1):
    rng = np.random.default_rng(seed)
    S = len(SRC)
    return Capture(
        model="test",
        kind="encoder",
        architecture="BertModel",
        text="the cat, sat.",
        source=tokens(SRC, SRC_SPECIAL),
        stacks={"attentions": random_attention(rng, 3, 2, S, S)},
    )


# -- definitions -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 2),
    H=st.integers(1, 3),
    Q=st.integers(1, 6),
    K=st.integers(1, 6),
    cross=st.booleans(),
    causal=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_head_stats_match_definitions(L, H, Q, K, cross, causal, seed, dtype):
    rng = np.random.default_rng(seed)
    if not cross:
        K = Q
    att = random_attention(rng, L, H, Q, K, causal=causal and not cross, dtype=dtype)
    special = rng.random(K) < 0.3
    punct = rng.random(K) < 0.3
    originals = (att.copy(), special.copy(), punct.copy())
    for arr in (att, special, punct):
        arr.setflags(write=False)
    got = head_stats(att, self_attention=not cross, key_special=special, key_punct=punct)
    np.testing.assert_array_equal(att, originals[0])
    np.testing.assert_array_equal(special, originals[1])
    np.testing.assert_array_equal(punct, originals[2])
    assert tuple(got) == STAT_NAMES
    for layer in range(L):
        for head in range(H):
            want = ref_stats(
                att[layer, head].astype(np.float64),
                self_attention=not cross,
                special=special,
                punct=punct,
            )
            for name in STAT_NAMES:
                assert got[name].shape == (L, H)
                assert_close(float(got[name][layer, head]), want[name])


def test_previous_token_head_is_detected():
    S = 6
    alpha = np.zeros((S, S))
    alpha[0, 0] = 1.0
    for i in range(1, S):
        alpha[i, i - 1] = 1.0
    att = frozen(alpha[None, None])
    stats = head_stats(att)
    assert stats["to_previous"][0, 0] == 1.0
    assert stats["to_self"][0, 0] == pytest.approx(1 / S)
    assert stats["to_first"][0, 0] == pytest.approx(2 / S)
    assert stats["to_next"][0, 0] == 0.0
    assert stats["entropy"][0, 0] == 0.0
    assert stats["max_weight"][0, 0] == 1.0
    assert stats["mean_distance"][0, 0] == pytest.approx((S - 1) / S)
    tags = head_tags(stats, causal=True, n_keys=S)
    assert "previous-token" in tags[0][0]
    assert "broad" not in tags[0][0] and "self" not in tags[0][0]


def test_uniform_full_attention_closed_forms():
    S = 7
    att = frozen(np.full((1, 2, S, S), 1.0 / S, dtype=np.float32))
    stats = head_stats(att)
    np.testing.assert_allclose(stats["entropy"], math.log(S), rtol=1e-6)
    np.testing.assert_allclose(stats["max_weight"], 1 / S, rtol=1e-6)
    np.testing.assert_allclose(stats["to_first"], 1 / S, rtol=1e-6)
    np.testing.assert_allclose(stats["to_self"], 1 / S, rtol=1e-6)
    np.testing.assert_allclose(stats["to_previous"], 1 / S, rtol=1e-6)
    np.testing.assert_allclose(stats["to_next"], 1 / S, rtol=1e-6)
    # Σ_i Σ_j |i − j| = S(S² − 1)/3
    np.testing.assert_allclose(stats["mean_distance"], (S * S - 1) / (3 * S), rtol=1e-6)
    tags = head_tags(stats, causal=False, n_keys=S)
    assert tags == [[("broad",), ("broad",)]]


def test_uniform_causal_attention_closed_forms():
    S = 9
    alpha = np.tril(np.ones((S, S))) / np.arange(1, S + 1)[:, None]
    stats = head_stats(frozen(alpha[None, None]))
    lengths = np.arange(1, S + 1)
    assert stats["entropy"][0, 0] == pytest.approx(np.log(lengths).mean())
    assert stats["max_weight"][0, 0] == pytest.approx((1 / lengths).mean())
    assert stats["to_first"][0, 0] == pytest.approx((1 / lengths).mean())
    assert stats["to_self"][0, 0] == pytest.approx((1 / lengths).mean())
    assert stats["to_previous"][0, 0] == pytest.approx((1 / lengths[1:]).mean())
    assert stats["to_next"][0, 0] == 0.0
    # row i: Σ_{j ≤ i} (i − j)/(i + 1) = i/2
    assert stats["mean_distance"][0, 0] == pytest.approx((S - 1) / 4)
    assert max_entropy(S, causal=True) == pytest.approx(np.log(lengths).mean())
    assert head_tags(stats, causal=True, n_keys=S)[0][0] == ("broad",)
    # against the full-attention reference (ln S) the same head is not broad
    assert "broad" not in head_tags(stats, causal=False, n_keys=S)[0][0]


def test_tags_cover_each_pattern():
    S = 6
    eye = np.eye(S)
    nxt = np.eye(S, k=1)
    nxt[-1, -1] = 1.0
    first = np.zeros((S, S))
    first[:, 0] = 1.0
    punct_col = np.zeros((S, S))
    punct_col[:, 3] = 1.0
    att = frozen(np.stack([eye, nxt, first, punct_col])[None])
    special = np.zeros(S, dtype=bool)
    special[0] = True
    punct = np.zeros(S, dtype=bool)
    punct[3] = True
    stats = head_stats(att, key_special=special, key_punct=punct)
    tags = head_tags(stats, causal=False, n_keys=S)[0]
    assert tags[0] == ("self",)
    assert tags[1] == ("next-token",)
    assert tags[2] == ("first-token", "special")
    assert tags[3] == ("punctuation",)
    assert set(TAG_NAMES) >= {t for ts in tags for t in ts}


def test_cross_attention_positional_stats_are_nan():
    rng = np.random.default_rng(3)
    att = frozen(random_attention(rng, 2, 2, 3, 5))
    stats = head_stats(att, self_attention=False)
    for name in POSITIONAL_STATS:
        assert np.isnan(stats[name]).all()
    for name in ("entropy", "max_weight", "to_first"):
        assert np.isfinite(stats[name]).all()
    # no masks given → those statistics are undefined too
    assert np.isnan(stats["to_special"]).all() and np.isnan(stats["to_punctuation"]).all()
    with pytest.raises(ValueError):
        head_stats(att)  # Q != K but self_attention=True
    tags = head_tags(stats, causal=False, n_keys=5)
    assert all("previous-token" not in t and "self" not in t for row in tags for t in row)


def test_single_token_sequence():
    stats = head_stats(frozen(np.ones((1, 1, 1, 1))))
    assert stats["entropy"][0, 0] == 0.0
    assert stats["to_self"][0, 0] == 1.0
    assert np.isnan(stats["to_previous"][0, 0]) and np.isnan(stats["to_next"][0, 0])
    assert head_tags(stats, causal=False, n_keys=1)[0][0] == ("self", "first-token")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (",", True),
        ("...", True),
        ("!?", True),
        ("—", True),
        ("«", True),
        ("」", True),
        (" .", True),
        ("a", False),
        ("a.", False),
        ("$", False),
        ("", False),
        ("   ", False),
        ("[CLS]", False),
    ],
)
def test_is_punctuation(text, expected):
    assert is_punctuation(text) is expected


# -- capture and CSV ---------------------------------------------------------------------------
def test_capture_stats_uses_key_tokens():
    cap = seq2seq_capture()
    stats = capture_stats(cap)
    assert list(stats) == ["encoder_attentions", "decoder_attentions", "cross_attentions"]
    enc = cap.stacks["encoder_attentions"].astype(np.float64)
    special = np.array(SRC_SPECIAL)
    np.testing.assert_allclose(
        stats["encoder_attentions"]["to_special"], enc[..., special].sum(-1).mean(-1)
    )
    dec = cap.stacks["decoder_attentions"].astype(np.float64)
    np.testing.assert_allclose(stats["decoder_attentions"]["to_special"], dec[..., 0].mean(-1))
    np.testing.assert_allclose(stats["decoder_attentions"]["to_punctuation"], dec[..., 3].mean(-1))
    cross = cap.stacks["cross_attentions"].astype(np.float64)
    np.testing.assert_allclose(
        stats["cross_attentions"]["to_punctuation"], cross[..., [3, 5]].sum(-1).mean(-1)
    )
    assert np.isnan(stats["cross_attentions"]["to_self"]).all()


@pytest.mark.parametrize("make", [seq2seq_capture, encoder_capture])
def test_csv_matches_definitions(tmp_path, make):
    cap = make()
    path = write_stats_csv(cap, tmp_path / "stats.csv")
    text = path.read_text(encoding="utf-8")
    header = text.splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)
    assert header.startswith(
        "stack,layer,head,entropy,mean_distance,to_first,to_previous,to_self,to_next,max_weight,"
        "to_special,to_punctuation,tags"
    )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected_count = sum(a.shape[0] * a.shape[1] for a in cap.stacks.values())
    assert len(rows) == expected_count
    assert [r["stack"] for r in rows][:1] == [cap.stack_names[0]]
    assert sorted({r["stack"] for r in rows}) == sorted(cap.stack_names)
    for r in rows:
        name, layer, head = r["stack"], int(r["layer"]), int(r["head"])
        keys = cap.key_tokens(name)
        punct = [is_punctuation(d) for d in keys.display]
        want = ref_stats(
            cap.stacks[name][layer, head].astype(np.float64),
            self_attention=name != "cross_attentions",
            special=list(keys.special),
            punct=punct,
        )
        for stat in STAT_NAMES:
            cell = r[stat]
            if math.isnan(want[stat]):
                assert cell == "", (name, stat, cell)
            else:
                assert cell not in ("", "nan")
                assert float(cell) == pytest.approx(want[stat], rel=1e-9, abs=1e-12)
    # tags column agrees with head_tags
    stats = capture_stats(cap)
    for r in rows:
        name = r["stack"]
        tags = head_tags(stats[name], causal=cap.is_causal(name), n_keys=cap.shape(name)[3])
        assert r["tags"] == ";".join(tags[int(r["layer"])][int(r["head"])])


def test_entropy_reference_of_one_and_two_keys():
    assert max_entropy(1, causal=False) == 0.0 and max_entropy(1, causal=True) == 0.0
    assert max_entropy(2, causal=False) == pytest.approx(math.log(2))
    assert max_entropy(2, causal=True) == pytest.approx(math.log(2) / 2)
    # one key: every head is trivially certain, so its normalised entropy is undefined, not 0/0
    assert np.isnan(normalized_entropy(np.array([[0.0, 0.5]]), causal=False, n_keys=1)).all()
    half = normalized_entropy(np.array([[math.log(2) / 2]], dtype=np.float32), causal=False, n_keys=2)
    assert half.dtype == np.float64 and half[0, 0] == pytest.approx(0.5, rel=1e-6)


def test_broad_tags_use_each_stacks_own_keys_and_masking():
    """Uniform decoder self-attention (causal, 5 keys) is as broad as it can be; measured against
    the encoder's 7 keys, or as if it saw every key, it would not be."""
    cap = seq2seq_capture()
    T, S = len(DEC), len(SRC)
    causal_uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    stacks = dict(cap.stacks)
    stacks["decoder_attentions"] = np.broadcast_to(causal_uniform, (2, 3, T, T)).astype(np.float32)
    stacks["cross_attentions"] = np.full((2, 3, T, S), 1 / S, dtype=np.float32)
    cap = dataclasses.replace(cap, stacks=stacks)
    rows = stats_rows(cap)
    for name in ("decoder_attentions", "cross_attentions"):
        mine = [r for r in rows if r["stack"] == name]
        assert len(mine) == 6 and all("broad" in r["tags"].split(";") for r in mine), name
    assert not any("broad" in r["tags"] for r in rows if r["stack"] == "encoder_attentions")


def test_stats_csv_lines_end_with_a_bare_newline():
    text = stats_csv_text(encoder_capture())
    assert "\r" not in text and text.endswith("\n") and text.count("\n") == 1 + 3 * 2


def test_head_stats_explain_bad_input():
    with pytest.raises(ValueError, match=r"\[layer, head, query, key\]; got \(2, 2\)"):
        head_stats(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Q=2, K=3 \(pass self_attention=False for cross-attention\)"):
        head_stats(np.ones((1, 1, 2, 3)) / 3)
    square = np.ones((1, 1, 3, 3)) / 3
    with pytest.raises(ValueError, match=r"key_special must be a bool array of shape \(3,\); got \(2,\)"):
        head_stats(square, key_special=[True, False])
    with pytest.raises(ValueError, match=r"key_punct must be a bool array of shape \(3,\); got \(4,\)"):
        head_stats(square, key_punct=[False] * 4)


def test_key_masks_of_zeros_and_ones_are_masks_not_indices():
    att = random_attention(np.random.default_rng(6), 1, 2, 4, 4)
    as_bools = head_stats(att, key_special=[True, False, False, True], key_punct=[False, True, False, False])
    as_ints = head_stats(att, key_special=[1, 0, 0, 1], key_punct=np.array([0, 1, 0, 0]))
    for name in ("to_special", "to_punctuation"):
        np.testing.assert_array_equal(as_ints[name], as_bools[name])


def test_no_keys_or_no_queries_give_undefined_statistics():
    for shape in ((1, 2, 3, 0), (1, 2, 0, 3)):
        stats = head_stats(np.zeros(shape), self_attention=False)
        assert all(v.shape == (1, 2) and np.isnan(v).all() for v in stats.values()), shape


def test_head_stats_report_each_layer_as_they_go():
    seen = []
    head_stats(random_attention(np.random.default_rng(7), 4, 1, 3, 3),
               task=TaskState(lambda st, f, m: seen.append((st, f, m))))
    assert seen == [("stats", layer / 4, f"head statistics: layer {layer + 1} of 4") for layer in range(4)]


def test_stats_rows_use_none_for_undefined():
    rows = stats_rows(seq2seq_capture())
    cross = [r for r in rows if r["stack"] == "cross_attentions"]
    assert cross and all(r[s] is None for r in cross for s in POSITIONAL_STATS)
    assert all(isinstance(r["entropy"], float) for r in rows)
    assert all(isinstance(r["layer"], int) and isinstance(r["head"], int) for r in rows)
    assert set(rows[0]) == set(CSV_COLUMNS)


def test_stats_rows_report_progress_per_stack_and_layer():
    cap = seq2seq_capture()
    seen = []
    rows = stats_rows(cap, task=TaskState(lambda st, f, m: seen.append((st, f, m))))
    assert rows == stats_rows(cap)  # the task changes nothing in the result
    assert {st for st, _, _ in seen} == {"stats"}
    fractions = [f for _, f, _ in seen]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] < 1.0
    messages = [m for _, _, m in seen]
    for name in cap.stack_names:  # one report per stack, then one per layer (2 each)
        assert f"head statistics of {name}…" in messages
    assert messages.count("head statistics: layer 2 of 2") == 3


def test_stats_rows_honour_cancel():
    import threading

    cap = encoder_capture()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        stats_rows(cap, task=TaskState(cancel=stop))
    # cancelled between layers: after the first layer of the first stack
    polls = []

    def cancel_third():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled):
        capture_stats(cap, task=TaskState(cancel=cancel_third))
    assert len(polls) == 3
    with pytest.raises(Cancelled):
        head_stats(cap.stacks["attentions"], task=TaskState(cancel=lambda: True))


def test_csv_floats_round_trip(tmp_path):
    cap = encoder_capture()
    path = write_stats_csv(cap, tmp_path / "s.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    stats = capture_stats(cap)["attentions"]
    assert float(first["entropy"]) == float(stats["entropy"][0, 0])


def test_csv_bad_folder_raises_export_error(tmp_path):
    with pytest.raises(ExportError):
        write_stats_csv(encoder_capture(), tmp_path / "missing" / "s.csv")
    assert list(tmp_path.iterdir()) == []
