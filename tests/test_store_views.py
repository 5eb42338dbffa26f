"""Views of a long capture stored on disk: the same data as of the same maps in memory, and never
the whole stack read (a 4,096-token capture of a tiny decoder, whose StoredStack.__array__ raises)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.capture import capture
from analysis.errors import InputError
from analysis.result import Capture
from analysis.stats import capture_stats
from analysis.store import StoredStack, write_stacks
from analysis.views import ViewSpec, view_data

TEXT = "The students are reading and writing and thinking about attention heads " * 4
TARGET = "Les étudiants lisent et écrivent et pensent aux têtes d'attention"


#: every test writes its stores into its own cache folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("own_cache")


def stored_copy(cap: Capture) -> Capture:
    """``cap`` with its (float16) stacks written to a store and read back lazily."""
    st = write_stacks({name: np.asarray(a) for name, a in cap.stacks.items()})
    return dataclasses.replace(cap, stacks=dict(st.stacks))


@pytest.fixture(scope="module")
def pair(loaded):
    """(in-memory, stored) captures of the same float16 maps, per architecture."""
    out = {}

    def get(arch):
        if arch not in out:
            lm = loaded(arch)
            mem = capture(lm, TEXT, target=TARGET if lm.kind == "seq2seq" else None, store_dtype=np.float16)
            out[arch] = mem
        mem = out[arch]
        return mem, stored_copy(mem)

    return get


SPECS = [
    ViewSpec(),
    ViewSpec(head=None, aggregation="mean", layer=1),
    ViewSpec(head=None, aggregation="max"),
    ViewSpec(shared_range=True, head=2),
    ViewSpec(scale="log", head=1),
    ViewSpec(scale="log", shared_range=True),
    ViewSpec(hide_special=True, renormalize=True, shared_range=True),
    ViewSpec(hide_special=True, scale="log"),
]


@pytest.mark.parametrize("arch", ["llama", "bert", "marian"])
@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_map_views_of_a_stored_capture_equal_the_in_memory_ones(arch, spec, pair):
    mem, disk = pair(arch)
    stacks = mem.stack_names if arch == "marian" else (None,)
    for stack in stacks:
        s = dataclasses.replace(spec, stack=stack)
        a, b = view_data(mem, dataclasses.replace(s, view="head")), view_data(disk, dataclasses.replace(s, view="head"))
        np.testing.assert_array_equal(a.matrix, b.matrix)
        assert (a.vmin, a.vmax) == (b.vmin, b.vmax)
        for per_head in (False, True):
            ls = dataclasses.replace(s, view="lines", lines_per_head=per_head)
            a, b = view_data(mem, ls), view_data(disk, ls)
            np.testing.assert_allclose(b.weights.astype(np.float32), a.weights,
                                       rtol=2**-11 if per_head else 0, atol=0, err_msg="lines")
            if not per_head:
                np.testing.assert_array_equal(a.strength, b.strength)
        for view in ("layer", "model"):
            a, b = view_data(mem, dataclasses.replace(s, view=view)), view_data(disk, dataclasses.replace(s, view=view))
            np.testing.assert_array_equal(a.mosaic.image, b.mosaic.image, err_msg=f"{view} {stack}")
            assert a.mosaic.cell == b.mosaic.cell and a.mosaic.gap == b.mosaic.gap
            assert (a.norm.vmin, a.norm.vmax) == pytest.approx((b.norm.vmin, b.norm.vmax), rel=1e-6)


def test_rollout_of_a_stored_capture_equals_the_in_memory_one(pair):
    mem, disk = pair("llama")
    for spec in (ViewSpec(view="rollout"), ViewSpec(view="rollout", fusion="max", through_layer=0)):
        np.testing.assert_array_equal(view_data(disk, spec).matrix, view_data(mem, spec).matrix)


@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_statistics_of_a_stored_capture_equal_the_in_memory_ones(arch, pair):
    mem, disk = pair(arch)
    a, b = capture_stats(mem), capture_stats(disk)
    for name in a:
        for stat in a[name]:
            np.testing.assert_allclose(b[name][stat], a[name][stat], rtol=1e-9, atol=1e-12, err_msg=f"{name} {stat}")


# --------------------------------------------------------------------------------------------
# 4,096 tokens through a tiny decoder, never reading the whole stack
# --------------------------------------------------------------------------------------------
LONG_TOKENS = 4096


@pytest.fixture(scope="module")
def long_decoder(tiny_model_dir, tmp_path_factory):
    """A tiny Llama (2 layers × 2 heads, hidden 16) that takes 4,096 positions."""
    import torch
    import transformers as tf

    from analysis.loader import load_model

    src = tiny_model_dir("llama")
    tok = tf.AutoTokenizer.from_pretrained(src, model_max_length=LONG_TOKENS)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=LONG_TOKENS,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("long-llama")
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder), device="cpu")


def test_a_4096_token_capture_runs_and_every_view_reads_only_what_it_shows(long_decoder, monkeypatch):
    monkeypatch.setenv("HEADMAP_STORE", "1")  # 134 MB of maps: under the size stored by default
    cap = capture(long_decoder, "attention heads read every token " * 1200, max_tokens=LONG_TOKENS, store=None)
    n = len(cap.source)
    assert n == LONG_TOKENS and cap.stored and cap.truncated
    stack = cap.stacks["attentions"]
    assert stack.shape == (2, 2, n, n)

    def refuse(self, dtype=None, copy=None):
        raise AssertionError("a view read the whole stored stack")

    monkeypatch.setattr(StoredStack, "__array__", refuse)
    for spec in (ViewSpec(layer=1, head=1), ViewSpec(head=None), ViewSpec(shared_range=True),
                 ViewSpec(view="layer"), ViewSpec(view="model"), ViewSpec(view="model", scale="log")):
        d = view_data(cap, spec)
        if spec.view == "head":
            assert d.matrix.shape == (n, n) and d.mask is not None
            np.testing.assert_allclose(d.matrix.sum(-1), 1.0, atol=2e-3)
        else:
            assert max(d.mosaic.cell) <= 160 and np.nanmax(d.mosaic.image) > 0
    with pytest.raises(InputError, match="at most 1024 tokens"):
        view_data(cap, ViewSpec(view="rollout"))
    lines = view_data(cap, ViewSpec(view="lines", head=None))
    assert lines.weights.shape == (1, n, n)
    stats = capture_stats(cap)["attentions"]
    assert np.all(np.isfinite(stats["entropy"])) and stats["entropy"].shape == (2, 2)
    np.testing.assert_allclose(stats["to_first"] + 0, stats["to_first"])  # computed, not NaN
    src = stack.map_source(1, 0)
    assert src.level(6).shape == (64, 64) and src.region(0, 100, 110, 0, 50).shape == (10, 50)
