"""The captured maps are the model's attention: recomputed here from the weights, by hand.

For every layer and head: ``softmax(Q Kᵀ / √d + mask)``, with Q and K projected from the hidden
states that enter the layer (``output_hidden_states=True``), in float64, independently of
transformers' attention code.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.capture import capture
from tests.tiny_models import HEADS, HIDDEN, LAYERS

TEXTS = ["I like this course", "The students are reading and writing and thinking about attention"]


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy()


def _heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """``[S, H·d]`` → ``[H, S, d]``"""
    s, hd = x.shape
    return x.reshape(s, n_heads, hd // n_heads).transpose(1, 0, 2)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def _hidden_states(lm, text):
    import torch

    enc = lm.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model(**enc, output_hidden_states=True)
    return [_np(h[0]) for h in out.hidden_states]


@pytest.mark.parametrize("text", TEXTS)
def test_bert_maps_from_the_weights(text, loaded):
    lm = loaded("bert")
    cap = capture(lm, text)
    att = cap.attention()
    hidden = _hidden_states(lm, text)
    assert len(hidden) == LAYERS + 1  # embeddings + one per layer
    s = len(cap.source)
    d = HIDDEN // HEADS
    for li, layer in enumerate(lm.model.encoder.layer):
        sa = layer.attention.self
        x = hidden[li]  # what enters layer li
        q = _heads(x @ _np(sa.query.weight).T + _np(sa.query.bias), HEADS)
        k = _heads(x @ _np(sa.key.weight).T + _np(sa.key.bias), HEADS)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)  # no padding: nothing is masked
        want = _softmax(scores)
        assert want.shape == (HEADS, s, s)
        np.testing.assert_allclose(att[li], want, rtol=0, atol=1e-5, err_msg=f"layer {li}")


@pytest.mark.parametrize("text", TEXTS)
def test_gpt2_maps_from_the_weights(text, loaded):
    lm = loaded("gpt2")
    cap = capture(lm, text)
    att = cap.attention()
    hidden = _hidden_states(lm, text)
    s = len(cap.source)
    d = HIDDEN // HEADS
    causal = np.triu(np.ones((s, s), dtype=bool), k=1)
    for li, block in enumerate(lm.model.transformer.h):
        x = _layer_norm(hidden[li], _np(block.ln_1.weight), _np(block.ln_1.bias), block.ln_1.eps)
        # Conv1D: y = x @ W + b with W [in, out]; c_attn packs q, k, v along the output axis
        qkv = x @ _np(block.attn.c_attn.weight) + _np(block.attn.c_attn.bias)
        q, k, _ = np.split(qkv, 3, axis=-1)
        scores = _heads(q, HEADS) @ _heads(k, HEADS).transpose(0, 2, 1) / np.sqrt(d)
        scores = np.where(causal, -np.inf, scores)
        want = _softmax(scores)
        np.testing.assert_allclose(att[li], want, rtol=0, atol=1e-5, err_msg=f"layer {li}")
        assert np.all(att[li][:, causal] == 0)


def test_recomputation_is_sensitive(loaded):
    """The recomputation above would notice a map from the wrong layer or a transposed map."""
    lm = loaded("bert")
    att = capture(lm, TEXTS[1]).attention()
    assert np.abs(att[0] - att[1]).max() > 1e-3
    assert np.abs(att[0] - att[0].transpose(0, 2, 1)).max() > 1e-3
