"""Attention rollout and attention flow (analysis/rollout.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analysis.rollout as rollout_mod
from analysis.errors import Cancelled, InputError
from analysis.rollout import (
    FLOW_MAX_TOKENS,
    attention_flow,
    augmented_attention,
    flow_is_available,
    flow_shares,
    fuse_heads,
    layered_max_flow,
    rollout,
    token_contributions,
)
from analysis.tasks import TaskState

nx = pytest.importorskip("networkx")
pytest.importorskip("scipy.sparse.csgraph")

#: how far the max flow may be from the exact value (for capacities of at most 1); scipy's Dinic
#: solver runs on capacities rounded down to multiples of 1 / (2**31 - 1), so it is never above
TOL = 1e-6


def random_attention(rng, L, H, S, causal=False, peaked=1.0, Q=None):
    Q = S if Q is None else Q
    logits = rng.normal(size=(L, H, Q, S)) * 3.0 * peaked
    if causal:
        logits = np.where(np.tril(np.ones((Q, S), dtype=bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def frozen(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def layered_graph(trans):
    """The layered graph of ``trans`` ``[T, S, S]`` (to, from) as a networkx DiGraph: input token
    ``j`` is node ``("in", j)``, output token ``i`` is ``("out", i)``. Input nodes have no
    in-edges and output nodes no out-edges, so one graph serves every ``(i, j)`` problem."""
    T, S, _ = trans.shape
    g = nx.DiGraph()
    for layer in range(T):
        for to in range(S):
            for frm in range(S):
                src = ("in", frm) if layer == 0 else (layer, frm)
                dst = ("out", to) if layer == T - 1 else (layer + 1, to)
                g.add_edge(src, dst, capacity=float(trans[layer, to, frm]))
    return g


def networkx_flow(trans, i, j):
    """Max flow from token j (layer 0) to token i (layer T) with networkx."""
    return nx.maximum_flow_value(layered_graph(trans), ("in", j), ("out", i))


def networkx_flows(trans):
    """``[S, S]`` exact max flows of every (output i, input j) pair with networkx."""
    g = layered_graph(trans)
    n = trans.shape[1]
    return np.array(
        [[nx.maximum_flow_value(g, ("in", j), ("out", i)) for j in range(n)] for i in range(n)]
    )


# -- fusion and rollout ------------------------------------------------------------------------
def test_fuse_heads():
    rng = np.random.default_rng(0)
    att = frozen(random_attention(rng, 3, 4, 5).astype(np.float32))
    np.testing.assert_allclose(fuse_heads(att, "mean"), att.astype(np.float64).mean(1), rtol=1e-12)
    np.testing.assert_array_equal(fuse_heads(att, "max"), att.max(1).astype(np.float64))
    np.testing.assert_array_equal(fuse_heads(att, "min"), att.min(1).astype(np.float64))
    for how in ("mean", "max", "min"):
        out = fuse_heads(att, how)
        assert out.shape == (3, 5, 5) and out.dtype == np.float64
        assert not np.shares_memory(out, att)
    with pytest.raises(InputError):
        fuse_heads(att, "median")


@pytest.mark.parametrize("layers, heads", [(3, 2), (2, 5)])
def test_fuse_heads_of_a_stored_stack_equals_that_of_the_array(layers, heads):
    """A long capture's stack on disk is fused one layer at a time: one fused map per layer,
    whether there are more layers than heads or fewer."""
    from analysis.store import write_stacks

    att = random_attention(np.random.default_rng(1), layers, heads, 6).astype(np.float16)
    stored = write_stacks({"attentions": att}).stacks["attentions"]
    for how in ("mean", "max", "min"):
        out = fuse_heads(stored, how)
        assert out.shape == (layers, 6, 6) and out.dtype == np.float64
        np.testing.assert_allclose(out, fuse_heads(att, how), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    L=st.integers(1, 4),
    S=st.integers(1, 6),
    residual=st.floats(0.0, 1.0),
    fusion=st.sampled_from(["mean", "max", "min"]),
)
def test_rollout_of_identity_is_identity(L, S, residual, fusion):
    att = frozen(np.broadcast_to(np.eye(S), (L, 2, S, S)))
    out = rollout(att, fusion, residual)
    assert out.shape == (L, S, S)
    for layer in range(L):
        np.testing.assert_allclose(out[layer], np.eye(S), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 5),
    H=st.integers(1, 3),
    S=st.integers(1, 8),
    causal=st.booleans(),
    residual=st.floats(0.0, 1.0),
    fusion=st.sampled_from(["mean", "max", "min"]),
    start=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_rollout_rows_sum_to_one(L, H, S, causal, residual, fusion, start, seed):
    rng = np.random.default_rng(seed)
    att = random_attention(rng, L, H, S, causal=causal)
    copy = att.copy()
    att.setflags(write=False)
    start = min(start, L - 1)
    out = rollout(att, fusion, residual, start_layer=start)
    np.testing.assert_array_equal(att, copy)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-9)
    assert (out >= 0).all()
    for layer in range(start):
        np.testing.assert_array_equal(out[layer], np.eye(S))
    if causal:
        assert np.abs(np.triu(out, 1)).max(initial=0.0) == 0.0


def test_rollout_is_the_product_of_augmented_layers():
    rng = np.random.default_rng(5)
    att = frozen(random_attention(rng, 3, 2, 4))
    trans = augmented_attention(att, "mean", 0.5)
    fused = att.mean(1)
    np.testing.assert_allclose(trans, 0.5 * np.eye(4) + 0.5 * fused, atol=1e-12)
    out = rollout(att)
    np.testing.assert_allclose(out[0], trans[0])
    np.testing.assert_allclose(out[1], trans[1] @ trans[0])
    np.testing.assert_allclose(out[2], trans[2] @ trans[1] @ trans[0])
    late = rollout(att, start_layer=1)
    np.testing.assert_array_equal(late[0], np.eye(4))
    np.testing.assert_allclose(late[2], trans[2] @ trans[1])


def test_max_fusion_rows_are_renormalised():
    rng = np.random.default_rng(6)
    att = frozen(random_attention(rng, 2, 4, 5))
    trans = augmented_attention(att, "max", 0.0)
    np.testing.assert_allclose(trans.sum(-1), 1.0)
    np.testing.assert_allclose(trans, att.max(1) / att.max(1).sum(-1, keepdims=True))


def test_rollout_rejects_cross_attention_and_bad_options():
    rng = np.random.default_rng(1)
    cross = frozen(random_attention(rng, 2, 2, 5, Q=3))
    with pytest.raises(ValueError, match="self-attention"):
        rollout(cross)
    with pytest.raises(InputError):
        rollout(cross)
    with pytest.raises(ValueError):
        attention_flow(cross)
    square = frozen(random_attention(rng, 2, 2, 4))
    with pytest.raises(InputError):
        rollout(square, residual=1.5)
    with pytest.raises(InputError):
        rollout(square, start_layer=2)
    with pytest.raises(InputError):
        rollout(square[0])


# -- max flow ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(1, 4),
    S=st.integers(1, 5),
    causal=st.booleans(),
    sparse=st.booleans(),
    magnitude=st.sampled_from([1.0, 7.5, 1e-3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_layered_max_flow_matches_networkx(T, S, causal, sparse, magnitude, seed):
    rng = np.random.default_rng(seed)
    trans = rng.random((T, S, S)) * magnitude
    if sparse:
        trans *= rng.random((T, S, S)) < 0.4
    if causal:
        trans = np.tril(trans)
    copy = trans.copy()
    trans.setflags(write=False)
    outs = np.repeat(np.arange(S), S)
    ins = np.tile(np.arange(S), S)
    want = np.array([networkx_flow(trans, i, j) for i, j in zip(outs, ins, strict=True)])
    got = layered_max_flow(trans, outs, ins)
    np.testing.assert_array_equal(trans, copy)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL * magnitude)
    # integer capacities rounded down: a feasible flow, never above the maximum
    assert (got <= want + 1e-12 * magnitude).all()


def test_flow_matches_networkx_on_peaked_attention():
    # sharper, more realistic maps exercise many Dinic phases
    rng = np.random.default_rng(11)
    att = frozen(random_attention(rng, 5, 3, 7, peaked=2.0))
    flow = attention_flow(att)
    trans = augmented_attention(att)
    for i in range(7):
        for j in range(7):
            assert flow[i, j] == pytest.approx(networkx_flow(trans, i, j), abs=TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_scipy_flow_matches_networkx_on_a_wider_map(causal):
    # 12 tokens: wide enough for the solver's first pass on the strongest edges
    rng = np.random.default_rng(21 + causal)
    att = frozen(random_attention(rng, 4, 4, 12, causal=causal, peaked=1.5))
    flow = attention_flow(att)
    trans = augmented_attention(att)
    for i, j in [(0, 0), (3, 1), (11, 0), (11, 11), (7, 9), (5, 5), (10, 2)]:
        want = networkx_flow(trans, i, j)
        assert flow[i, j] == pytest.approx(want, abs=1e-6)
        assert flow[i, j] <= want + 1e-12


@settings(max_examples=15, deadline=None)
@given(
    L=st.integers(3, 6),
    H=st.integers(1, 3),
    S=st.integers(2, 8),
    causal=st.booleans(),
    peaked=st.sampled_from([0.5, 1.0, 2.5]),
    residual=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    fusion=st.sampled_from(["mean", "max", "min"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_flow_matches_networkx_for_any_options(L, H, S, causal, peaked, residual, fusion, seed):
    rng = np.random.default_rng(seed)
    att = frozen(random_attention(rng, L, H, S, causal=causal, peaked=peaked))
    exact = networkx_flows(augmented_attention(att, fusion, residual))
    fast = attention_flow(att, fusion, residual)
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-6)
    assert (fast <= exact + 1e-9).all()
    if causal:
        assert np.abs(np.triu(fast, 1)).max(initial=0.0) == 0.0


@pytest.mark.parametrize("causal", [False, True])
def test_scipy_passes_and_batches_match_networkx(monkeypatch, causal):
    # 16 tokens, dense mean-fused maps: the passes on the strongest edges of every node settle
    # most problems; other subgraphs, early give-ups and one problem per scipy call must agree
    rng = np.random.default_rng(3 + causal)
    att = frozen(random_attention(rng, 5, 4, 16, causal=causal, peaked=1.5))
    exact = networkx_flows(augmented_attention(att))
    calls = []
    solve = rollout_mod._solve_union

    def spy(caps, cap_mid, edge_lists, outs, ins, alive):
        calls.append((sum(len(frm) for frm, _ in edge_lists), len(outs)))
        return solve(caps, cap_mid, edge_lists, outs, ins, alive)

    monkeypatch.setattr(rollout_mod, "_solve_union", spy)
    settings_ = [
        {},
        {"_CERTIFY_TOPS": (2,)},
        {"_CERTIFY_TOPS": (1, 2, 3), "_CERTIFY_TRIAL": 1, "_CERTIFY_RATE": 1.0},
        {"_CERTIFY_TRIAL": 1, "_CERTIFY_RATE": 1.1},  # every pass given up after its first batch
        {"_UNION_EDGES": 1, "_UNION_EDGES_FULL": 1},
        {"_CERTIFY_TOPS": (16,)},  # the "strong" subgraph is the whole graph: one pass
    ]
    for options in settings_:
        calls.clear()
        with monkeypatch.context() as m:
            for name, value in options.items():
                m.setattr(rollout_mod, name, value)
            fast = attention_flow(att)
        np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-6, err_msg=str(options))
        assert (fast <= exact + 1e-9).all()
        graphs = {edges for edges, _ in calls}
        if options.get("_CERTIFY_TOPS") == (2,):
            assert len(graphs) == 2  # both passes ran
        if options.get("_CERTIFY_TOPS") == (16,):
            assert len(graphs) == 1
        if "_UNION_EDGES" in options:
            assert all(problems == 1 for _, problems in calls)
        # every pair with a path is solved at least once (causal: only j <= i)
        assert sum(problems for _, problems in calls) >= (136 if causal else 256)


def test_flow_rejects_non_finite_weights():
    att = np.broadcast_to(np.eye(4), (3, 1, 4, 4)).copy()
    att[1, 0, 2, 2] = np.inf
    with pytest.raises(InputError, match="infinit"), np.errstate(invalid="ignore"):
        attention_flow(att)
    trans = np.full((3, 2, 2), 0.5)
    trans[1, 0, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        layered_max_flow(trans, np.array([0]), np.array([0]))


def test_flow_of_a_small_graph_by_hand():
    # two layers, two tokens: flow(i←j) = Σ_k min(Â0[k, j], Â1[i, k])
    a0 = np.array([[0.7, 0.4], [0.3, 0.6]])
    a1 = np.array([[0.9, 0.2], [0.1, 0.8]])
    trans = np.stack([a0, a1])
    got = layered_max_flow(trans, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(got, [0.7 + 0.2, 0.4 + 0.2, 0.1 + 0.3, 0.1 + 0.6])


@settings(max_examples=15, deadline=None)
@given(
    L=st.integers(1, 4),
    S=st.integers(1, 7),
    causal=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_flow_is_bounded_and_causal(L, S, causal, seed):
    rng = np.random.default_rng(seed)
    att = frozen(random_attention(rng, L, 2, S, causal=causal))
    flow = attention_flow(att)
    assert flow.shape == (S, S)
    assert (flow >= 0).all() and (flow <= 1 + 1e-9).all()
    trans = augmented_attention(att)
    # a flow never beats the source's out-edges (column sums of Â_0) nor the sink's in-edges (1)
    bound = np.minimum(trans[0].sum(0)[None, :], 1.0)
    assert (flow <= bound + 1e-9).all()
    if causal:
        assert np.abs(np.triu(flow, 1)).max(initial=0.0) == 0.0


def test_flow_of_identity_is_identity():
    att = frozen(np.broadcast_to(np.eye(5), (4, 2, 5, 5)))
    np.testing.assert_allclose(attention_flow(att), np.eye(5), atol=1e-12)


def test_flow_output_layer_and_rows():
    rng = np.random.default_rng(2)
    att = frozen(random_attention(rng, 4, 2, 6))
    full = attention_flow(att)
    part = attention_flow(att, rows=[4, 1])
    np.testing.assert_allclose(part[[1, 4]], full[[1, 4]], atol=1e-12)
    assert np.isnan(part[[0, 2, 3, 5]]).all()
    np.testing.assert_allclose(attention_flow(att, output_layer=3), full, atol=1e-12)
    np.testing.assert_allclose(
        attention_flow(att, output_layer=0), augmented_attention(att)[0], atol=1e-12
    )
    np.testing.assert_allclose(
        attention_flow(att, output_layer=-3), attention_flow(att[:2]), atol=1e-12
    )
    with pytest.raises(InputError):
        attention_flow(att, output_layer=4)
    with pytest.raises(InputError):
        attention_flow(att, rows=[6])


def test_flow_is_limited_to_64_tokens():
    assert FLOW_MAX_TOKENS == 64
    assert flow_is_available(64) and not flow_is_available(65) and not flow_is_available(0)
    att = np.broadcast_to(np.eye(65), (1, 1, 65, 65))
    with pytest.raises(InputError, match="64 tokens") as err:
        attention_flow(att)
    assert "rollout" in str(err.value)
    with pytest.raises(InputError):
        attention_flow(np.broadcast_to(np.eye(5), (1, 1, 5, 5)), max_tokens=4)


def test_flow_reports_progress_and_can_be_cancelled(monkeypatch):
    rng = np.random.default_rng(4)
    att = frozen(random_attention(rng, 3, 2, 5))
    seen = []

    def progress(stage, fraction, message):
        seen.append((stage, fraction, message))

    def fractions():
        return [f for _, f, _ in seen]

    attention_flow(att, task=TaskState(progress))
    assert seen and seen[-1] == ("flow", 1.0, "attention flow: 25 of 25 token pairs")
    assert {st for st, _, _ in seen} == {"flow"} and fractions() == sorted(fractions())
    with pytest.raises(Cancelled):
        attention_flow(att, task=TaskState(cancel=lambda: True))
    # small batches: progress after every few problems, cancel honoured mid-way
    monkeypatch.setattr(rollout_mod, "_UNION_EDGES", 1)
    monkeypatch.setattr(rollout_mod, "_UNION_EDGES_FULL", 1)
    seen.clear()
    attention_flow(att, task=TaskState(progress))
    assert len(seen) >= 10 and seen[-1] == ("flow", 1.0, "attention flow: 25 of 25 token pairs")
    assert fractions() == sorted(fractions())
    for _, fraction, message in seen:
        done = int(message.split()[2])
        assert message == f"attention flow: {done} of 25 token pairs" and fraction == done / 25
    polls = []
    seen.clear()

    def cancel_third():
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled):
        attention_flow(att, task=TaskState(progress, cancel_third))
    assert len(polls) == 3 and 0 < fractions()[-1] < 1
    # a sub-task: the same fractions, mapped into its part of the caller's range
    seen.clear()
    attention_flow(att, task=TaskState(progress).sub(0.5, 1.0))
    assert min(fractions()) >= 0.5 and fractions()[-1] == 1.0


def test_flow_of_one_or_two_layers_reports_once():
    rng = np.random.default_rng(7)
    for layers in (1, 2):
        seen = []
        att = frozen(random_attention(rng, layers, 2, 4))
        attention_flow(att, task=TaskState(lambda *a, seen=seen: seen.append(a)))
        assert seen == [("flow", 1.0, "attention flow: 16 of 16 token pairs")]


# -- flow shares -------------------------------------------------------------------------------
def test_flow_shares_rows_sum_to_one():
    rng = np.random.default_rng(12)
    flow = frozen(attention_flow(random_attention(rng, 4, 2, 6)))
    copy = flow.copy()
    shares = flow_shares(flow)
    np.testing.assert_array_equal(flow, copy)  # input not modified
    assert not np.shares_memory(shares, flow) and shares.dtype == np.float64
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(shares, flow / flow.sum(-1, keepdims=True), rtol=1e-12)
    for i in range(6):
        np.testing.assert_allclose(shares[i], token_contributions(flow, i), rtol=1e-12)


def test_flow_shares_keep_zero_and_uncomputed_rows():
    m = frozen(np.array([[0.0, 0.0, 0.0], [0.2, 0.6, 0.0], [1.0, 1.0, 2.0]]))
    np.testing.assert_allclose(flow_shares(m), [[0, 0, 0], [0.25, 0.75, 0], [0.25, 0.25, 0.5]])
    rng = np.random.default_rng(13)
    part = attention_flow(random_attention(rng, 3, 2, 5), rows=[1, 3])
    shares = flow_shares(part)
    assert np.isnan(shares[[0, 2, 4]]).all()
    np.testing.assert_allclose(shares[[1, 3]].sum(-1), 1.0, atol=1e-12)
    with pytest.raises(InputError):
        flow_shares(np.ones((2, 3)))


# -- per-token bars ----------------------------------------------------------------------------
def test_token_contributions():
    m = frozen(np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 2.0]]))
    np.testing.assert_allclose(token_contributions(m, 0), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(token_contributions(m, 1), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(token_contributions(m, 2), [0.25, 0.25, 0.5])
    with pytest.raises(InputError):
        token_contributions(m, 3)
    rng = np.random.default_rng(9)
    roll = rollout(random_attention(rng, 2, 2, 6))[-1]
    for i in range(6):
        assert token_contributions(roll, i).sum() == pytest.approx(1.0)


def test_flow_is_available_from_one_token_up_to_the_limit():
    assert flow_is_available(1) and flow_is_available(2, max_tokens=2) and not flow_is_available(3, max_tokens=2)


def test_flow_shares_of_float32_flow_and_of_many_zero_rows():
    rng = np.random.default_rng(14)
    for n in (3, 8, 20, 40):
        junk = rng.random((n, n)) + 1.0  # what the memory held before: zero rows must not show it
        m = np.where(np.arange(n)[:, None] % 2 == 0, junk, 0.0).astype(np.float32)
        del junk
        shares = flow_shares(m)
        assert shares.dtype == np.float64
        np.testing.assert_array_equal(shares[1::2], 0.0)
        np.testing.assert_allclose(shares[::2].sum(-1), 1.0, rtol=1e-12)
    with pytest.raises(InputError, match=r"\[S, S\] flow matrix; got shape \(2, 3\)"):
        flow_shares(np.ones((2, 3)))


def test_token_contributions_skip_uncomputed_and_negative_cells_and_say_the_range():
    m = np.array([[np.nan, 1.0, 3.0], [-1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    first = token_contributions(m, 0)
    assert first.dtype == np.float64
    np.testing.assert_array_equal(first, [0.0, 0.25, 0.75])  # an uncomputed cell adds nothing
    np.testing.assert_array_equal(token_contributions(m, 1), [0.0, 0.5, 0.5])  # nor a negative one
    zero = token_contributions(m, 2)
    assert zero.shape == (3,) and zero.dtype == np.float64 and not zero.any()
    with pytest.raises(InputError, match="output token 3 is out of range: tokens are 0–2"):
        token_contributions(m, 3)
    with pytest.raises(InputError, match="output token -1 is out of range"):
        token_contributions(m, -1)
    with pytest.raises(InputError, match=r"\[S, S\] matrix; got shape \(3,\)"):
        token_contributions(m[0], 0)


def test_rollout_names_the_layers_a_start_layer_may_be():
    square = frozen(random_attention(np.random.default_rng(2), 2, 2, 4))
    with pytest.raises(InputError, match="start_layer 2 is out of range: layers are 0–1"):
        rollout(square, start_layer=2)


def test_flow_refusals_say_what_to_do():
    rng = np.random.default_rng(3)
    with pytest.raises(InputError, match=r"^attention flow needs a self-attention stack \(queries = keys\); "
                                         r"got 3 queries and 5 keys: choose the encoder or decoder stack"):
        attention_flow(random_attention(rng, 2, 2, 5, Q=3))
    with pytest.raises(InputError, match=r"limited to 64 tokens and this input has 65; use rollout instead, "
                                         r"or shorten the text$"):
        attention_flow(np.broadcast_to(np.eye(65), (1, 1, 65, 65)))
    with pytest.raises(InputError, match=r"^the attention stack has no layers$"):
        attention_flow(np.zeros((0, 1, 3, 3)))
    with pytest.raises(InputError, match=r"^output_layer 2 is out of range: layers are 0–1 \(or -1\)$"):
        attention_flow(random_attention(rng, 2, 2, 4), output_layer=2)


def test_flow_takes_exactly_as_many_tokens_as_allowed():
    out = attention_flow(np.broadcast_to(np.eye(4), (1, 1, 4, 4)), max_tokens=4)
    np.testing.assert_allclose(out, np.eye(4), atol=1e-7)


def test_a_token_that_attends_nowhere_stays_zero_without_the_residual():
    rng = np.random.default_rng(15)
    for n in (3, 8, 20):
        att = random_attention(rng, 2, 2, n).astype(np.float64)
        att[:, :, 1::2] = 0.0  # rows of padding: they attend nowhere
        junk = rng.random((2, n, n)) + 1.0  # what the memory held before must not show
        del junk
        aug = augmented_attention(att, residual=0.0)
        np.testing.assert_array_equal(aug[:, 1::2], 0.0)
        np.testing.assert_allclose(aug[:, ::2].sum(-1), 1.0, atol=1e-12)


def test_rollout_refusals_say_what_to_do():
    rng = np.random.default_rng(4)
    square = frozen(random_attention(rng, 2, 2, 4))
    with pytest.raises(InputError, match=r"^an attention stack must be \[layer, head, query, key\]; got \(2, 4, 4\)$"):
        rollout(square[0])
    with pytest.raises(InputError, match=r"^rollout needs a self-attention stack \(queries = keys\); got 3 queries"):
        rollout(random_attention(rng, 2, 2, 5, Q=3))
    with pytest.raises(InputError, match=r"^residual must be between 0 and 1; got 1\.5$"):
        rollout(square, residual=1.5)
    with pytest.raises(InputError, match=r"^output token 6 is out of range: tokens are 0–5$"):
        attention_flow(random_attention(rng, 2, 2, 6), rows=[6])
    att = np.broadcast_to(np.eye(4), (3, 1, 4, 4)).copy()
    att[1, 0, 2, 2] = np.inf
    with pytest.raises(InputError, match=r"^the attention weights contain infinities, so flow is undefined; "
                                         r"recapture the input$"), np.errstate(invalid="ignore"):
        attention_flow(att)


def test_fuse_heads_defaults_to_the_mean_and_says_what_it_takes():
    att = frozen(random_attention(np.random.default_rng(5), 2, 3, 4))
    np.testing.assert_array_equal(fuse_heads(att), att.mean(axis=1, dtype=np.float64))
    with pytest.raises(InputError, match=r"^an attention stack must be \[layer, head, query, key\]; got \(3, 4, 4\)$"):
        fuse_heads(att[0])
    with pytest.raises(InputError, match=r"^unknown head fusion 'median'; choose one of: mean, max, min$"):
        fuse_heads(att, "median")
    with pytest.raises(InputError, match=r"^the attention stack has no heads to fuse$"):
        fuse_heads(np.zeros((2, 0, 4, 4)))


def test_flow_of_a_map_with_no_weight_at_all_is_zero():
    """Residual 0 and attention that goes nowhere (all padding): nothing flows, and nothing fails."""
    np.testing.assert_array_equal(attention_flow(np.zeros((2, 1, 3, 3)), residual=0.0), np.zeros((3, 3)))
