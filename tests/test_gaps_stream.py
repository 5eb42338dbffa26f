"""analysis.stream: behaviours no other test reached. The eager attention function found on a base
class's module (or its absence named), chunks written without a row check, an attention output
whose queries are not on axis 1, the probe's layer count against the config, maps no module can be
found for, a forward hook's missing weights, and ``chunked`` leaving a model that does not run
eager attention alone."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch

from analysis import stream


def _attention_module(monkeypatch, name, eager):
    mod = types.ModuleType(name)
    mod.eager_attention_forward = eager
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_the_eager_function_is_looked_up_along_the_attention_classs_bases(monkeypatch):
    def eager(*a, **k):
        return None

    _attention_module(monkeypatch, "headmap_test_base_attention", eager)
    monkeypatch.setitem(sys.modules, "headmap_test_sub_attention", types.ModuleType("headmap_test_sub_attention"))
    Base = type("BaseAttention", (), {"__module__": "headmap_test_base_attention"})
    Sub = type("SubAttention", (Base,), {"__module__": "headmap_test_sub_attention"})
    assert stream._eager_of(Sub()) is eager

    Lone = type("LoneAttention", (), {"__module__": "headmap_test_sub_attention"})
    with pytest.raises(stream.StreamUnsupported) as err:
        stream._eager_of(Lone())
    assert str(err.value) == "LoneAttention has no eager attention function to stream"


class _Writer:
    def __init__(self, rows):
        self.rows, self.log = rows, []

    def begin(self, name, shape):
        self.log.append(("begin", name, shape))

    def chunk_rows(self, q, k):
        return self.rows

    def write(self, name, layer, r0, weights):
        self.log.append(("write", name, layer, r0, tuple(weights.shape)))


def _peculiar(monkeypatch, queries_on_axis=1):
    def eager_attention_forward(module, query, key, value, mask, *a, **k):
        b, h, q, d = query.shape
        out = torch.full((b, q, h, d), float(q)) if queries_on_axis == 1 else torch.zeros(b, h, q, d)
        w = torch.full((b, h, q, key.shape[2]), 1.0 / key.shape[2])
        return out, w

    mod = _attention_module(monkeypatch, "headmap_test_gap_attention", eager_attention_forward)
    return type("PeculiarAttention", (), {"__module__": mod.__name__})()


def test_chunks_are_written_without_a_row_check_when_none_is_given(monkeypatch):
    module = _peculiar(monkeypatch)
    writer = _Writer(rows=2)
    ctx = stream._Context(targets={id(module): ("attentions", 1)}, writer=writer, layers={"attentions": 2})
    monkeypatch.setattr(stream._local, "ctx", ctx, raising=False)
    q = torch.zeros(1, 3, 5, 4)
    out, weights = stream.stream_attention(module, q, q, q, None)
    assert weights is None
    assert out.shape == (1, 5, 3, 4)
    assert out[0, :, 0, 0].tolist() == [2.0, 2.0, 2.0, 2.0, 1.0]  # three chunks of 2, 2 and 1 rows
    assert writer.log == [("begin", "attentions", (2, 3, 5, 5)), ("write", "attentions", 1, 0, (3, 2, 5)),
                          ("write", "attentions", 1, 2, (3, 2, 5)), ("write", "attentions", 1, 4, (3, 1, 5))]


def test_an_attention_output_without_queries_on_axis_1_cannot_be_chunked(monkeypatch):
    module = _peculiar(monkeypatch, queries_on_axis=2)
    ctx = stream._Context(targets={id(module): ("attentions", 0)}, writer=_Writer(rows=2), layers={"attentions": 1})
    monkeypatch.setattr(stream._local, "ctx", ctx, raising=False)
    q = torch.zeros(1, 3, 5, 4)
    with pytest.raises(stream.StreamUnsupported) as err:
        stream.stream_attention(module, q, q, q, None)
    assert str(err.value) == "PeculiarAttention's attention output does not put queries on its axis 1"


# --------------------------------------------------------------------------------------------
# probe and plan
# --------------------------------------------------------------------------------------------
def test_the_probe_refuses_a_layer_count_other_than_the_configs(tiny_model_dir):
    from analysis.loader import load_model

    lm = load_model(str(tiny_model_dir("bert")), device="cpu")  # a fresh model: plans are cached per model
    enc = lm.tokenizer("I like it", return_tensors="pt")

    def call():
        return lm.model(**enc, output_attentions=True)

    with pytest.raises(stream.StreamUnsupported) as err:
        stream.probe(lm.model, call, {"attentions": 3})
    assert str(err.value) == "the probe found 2 layers of attentions, the config 3"
    assert lm.model not in stream._PLANS  # a refused plan is not kept
    plan = stream.probe(lm.model, call)  # no layer counts to check
    assert plan.mode == "function" and plan.layers() == {"attentions": 2}
    assert stream.probe(lm.model, call, {"attentions": 3}) is plan  # cached: the model is not run again


def test_a_map_that_no_module_returned_cannot_be_streamed():
    a = torch.zeros(1, 2, 3, 3)
    out = SimpleNamespace(attentions=(a,))
    other = object()
    with pytest.raises(stream.StreamUnsupported) as err:
        stream._match(out, [(other, torch.zeros(1, 2, 3, 3))], [(other, (torch.zeros(1, 3, 8), a.clone())),
                                                                 (other, a)])
    assert str(err.value) == "Headmap cannot tell which module computes attentions layer 0"


def test_a_model_that_returns_no_maps_cannot_be_streamed():
    for out in (SimpleNamespace(), SimpleNamespace(attentions=None, cross_attentions=())):
        with pytest.raises(stream.StreamUnsupported) as err:
            stream._match(out, [], [])
        assert str(err.value) == "the model returned no attention maps"


def test_a_hooked_layer_writes_its_weights_and_refuses_none():
    writer = _Writer(rows=0)
    checked = []
    hook = stream._writing_hook("attentions", 1, 1, writer, 2, lambda w, n, lay: checked.append((n, lay)), None)
    weights = torch.zeros(1, 3, 4, 5)
    hook(None, (), (torch.zeros(1, 4, 8), weights))
    assert checked == [("attentions", 1)]
    assert writer.log == [("begin", "attentions", (2, 3, 4, 5)), ("write", "attentions", 1, 0, (3, 4, 5))]
    for bad in (None, torch.zeros(3, 4, 5)):
        with pytest.raises(stream.StreamUnsupported) as err:
            hook(None, (), (torch.zeros(1, 4, 8), bad))
        assert str(err.value) == "attentions layer 1 returned no [batch, head, query, key] weights"


def test_chunked_leaves_a_model_that_does_not_run_eager_attention_alone():
    cfg = SimpleNamespace(_attn_implementation="sdpa")
    model = SimpleNamespace(config=cfg)
    with stream.chunked(model):
        assert vars(cfg) == {"_attn_implementation": "sdpa"}
        assert getattr(stream._local, "ctx", None) is None
    assert vars(cfg) == {"_attn_implementation": "sdpa"}
