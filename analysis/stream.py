"""Streaming capture: each layer's attention goes to a disk store as the forward pass makes it.

transformers' ``output_attentions=True`` keeps every layer's maps in float32 until the pass ends
(SmolLM2 at 4,096 tokens: 18 GB). Here the forward pass runs with ``output_attentions=False`` and
the weights are taken where they are computed:

* **The attention function** (most models of transformers 5: Llama and its kin, BERT, GPT-2, BART,
  Marian, T5, …, whose attention modules call ``ALL_ATTENTION_FUNCTIONS``): :data:`IMPL` is
  registered as an attention implementation. It runs the model's *own* ``eager_attention_forward``
  (found in the module that defines the attention class: same scaling, masks, position bias,
  softmax dtype, GQA) on chunks of query rows, writes each chunk's weights to the store
  (:class:`analysis.store.StoreWriter`: float16 maps, their pyramid levels and statistics) and
  returns the attention output without weights. The model process never holds more than one
  chunk of one layer's float32 weights (a few hundred MB at 8,192 tokens). Softmax is row-wise, so
  the chunks' weights are exactly eager attention's.
* **Forward hooks** (an attention module that computes its weights elsewhere): the module's output
  tuple holds its layer's weights ``[B, H, Q, K]``; a hook writes them and the model drops them.
  One layer's float32 maps at a time.

Which stack and layer a module's weights belong to is learned once per model by a *probe*: a
forward pass over the first few tokens with ``output_attentions=True`` that records every call of
the attention function (and every module's output) and matches them, by identity, to the tensors
transformers returns as ``attentions`` / ``encoder_attentions`` / ``decoder_attentions`` /
``cross_attentions``. So the streamed stacks are, by construction, what ``output_attentions=True``
returns (a test compares them on tiny models of every kind).

The same implementation also keeps a long input's *generation* (a decoder's continuation, a
seq2seq target) within memory: outside a capture it only chunks the queries.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import CaptureError

#: the attention implementation's registered name
IMPL = "headmap_stream"
#: query rows per chunk when nothing is written (generation): a 9-head, 8,192-key chunk is 75 MB
PLAIN_CHUNK_ROWS = 256
#: tokens of the probe pass that learns where each module's weights belong
PROBE_TOKENS = 4
STACKS = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")

_local = threading.local()
_registered = False
_register_lock = threading.Lock()


class StreamUnsupported(CaptureError):
    """The model's attention cannot be streamed (neither its attention function nor its modules'
    outputs give one map per layer)."""


@dataclass
class _Context:
    """What the attention function does during one forward pass."""

    #: probe: every call's (module, weights) in order; the function returns the weights
    record: list | None = None
    #: id(attention module) → (stack, layer) to write
    targets: dict[int, tuple[str, int]] = field(default_factory=dict)
    writer: Any = None
    layers: dict[str, int] = field(default_factory=dict)
    check: Callable[[Any, str, int], None] | None = None
    task: Any = None


@dataclass
class Plan:
    """Where each stack's layers come from, for one model (learned by :func:`probe`).

    mode : ``function`` (the attention function writes) or ``hooks`` (forward hooks write)
    modules : (stack, layer) → the attention module
    index : hooks only: (stack, layer) → the position of the weights in the module's output
    """

    mode: str
    modules: dict[tuple[str, int], Any]
    index: dict[tuple[str, int], int]

    def layers(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, layer in self.modules:
            out[name] = max(out.get(name, 0), layer + 1)
        return out


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register() -> None:
    """Register :data:`IMPL` with transformers' attention and mask interfaces (once)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(IMPL, stream_attention)
        AttentionMaskInterface.register(IMPL, eager_mask)
        _registered = True


def _eager_of(module) -> Callable:
    """The model's own eager attention function: ``eager_attention_forward`` of the module that
    defines the attention class (or one of its bases)."""
    for cls in type(module).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if callable(fn):
            return fn
    raise StreamUnsupported(f"{type(module).__name__} has no eager attention function to stream")


def _rows(t, r0: int, r1: int, q_len: int, k_len: int):
    """Rows ``r0:r1`` of a ``[..., Q, K]`` tensor (a mask, T5's position bias); others unchanged."""
    if getattr(t, "ndim", 0) == 4 and t.shape[-2] == q_len and t.shape[-1] == k_len and q_len > 1:
        return t[..., r0:r1, :]
    return t


def stream_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The :data:`IMPL` attention function (see the module docstring): the model's eager attention
    over chunks of query rows; weights go to the active capture's store, none are returned."""
    import torch

    eager = _eager_of(module)
    ctx: _Context | None = getattr(_local, "ctx", None)
    if ctx is not None and ctx.record is not None:
        out, weights = eager(module, query, key, value, attention_mask, *args, **kwargs)
        ctx.record.append((module, weights))
        return out, weights
    q_len, k_len = int(query.shape[-2]), int(key.shape[-2])
    target = ctx.targets.get(id(module)) if ctx is not None and ctx.writer is not None else None
    if target is not None:
        name, layer = target
        n_heads = int(query.shape[1])
        ctx.writer.begin(name, (ctx.layers[name], n_heads, q_len, k_len))
        step = ctx.writer.chunk_rows(q_len, k_len)
    else:
        step = PLAIN_CHUNK_ROWS
    outs = []
    for r0 in range(0, q_len, step):
        r1 = min(q_len, r0 + step)
        if ctx is not None and ctx.task is not None:
            ctx.task.check()
        if r1 - r0 == q_len:
            out, weights = eager(module, query, key, value, attention_mask, *args, **kwargs)
        else:
            kw = {k: _rows(v, r0, r1, q_len, k_len) for k, v in kwargs.items()}
            out, weights = eager(module, query[:, :, r0:r1], key, value, _rows(attention_mask, r0, r1, q_len, k_len),
                                 *args, **kw)
        if target is not None:
            assert ctx is not None
            if weights is None or weights.ndim != 4:
                raise StreamUnsupported(f"{type(module).__name__} returned no [batch, head, query, key] weights")
            if ctx.check is not None:
                ctx.check(weights, name, layer)
            ctx.writer.write(name, layer, r0, weights[0])
        del weights
        outs.append(out)
    if len(outs) == 1:
        return outs[0], None
    if outs[0].shape[1] != min(step, q_len):
        raise StreamUnsupported(f"{type(module).__name__}'s attention output does not put queries on its axis 1")
    return torch.cat(outs, dim=1), None


_IMPL_FIELD = "_attn_implementation_internal"


@contextmanager
def implementation(model, ctx: _Context | None = None) -> Iterator[None]:
    """Run the block with every config of ``model`` on :data:`IMPL` (and ``ctx`` active in this
    thread); the implementations are put back after, also when the block raises."""
    register()
    from .inmemory import model_configs

    configs = model_configs(model)
    before = [(cfg, cfg.__dict__.get(_IMPL_FIELD, getattr(cfg, "_attn_implementation", None))) for cfg in configs]
    old_ctx = getattr(_local, "ctx", None)
    try:
        for cfg, _ in before:
            cfg.__dict__[_IMPL_FIELD] = IMPL
        _local.ctx = ctx
        yield
    finally:
        _local.ctx = old_ctx
        for cfg, impl in before:
            cfg.__dict__[_IMPL_FIELD] = impl


def streamable(model) -> bool:
    """Whether ``model`` runs eager attention (the implementation streaming replaces)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "eager")
    return impl in ("eager", None, IMPL)


def probe(model, call: Callable[[], Any], expected: dict[str, int] | None = None) -> Plan:
    """Learn where each stack's layers come from: run ``call()`` (the model on a few tokens with
    ``output_attentions=True``) once with the attention function recording and forward hooks on
    every module, and match the returned maps to them by identity. Cached per model.

    Raises
    ------
    StreamUnsupported : some layer's maps came from neither
    """
    cached = _PLANS.get(model)
    if cached is not None:
        return cached
    ctx = _Context(record=[])
    outputs: list[tuple[Any, Any]] = []

    def hook(module, _args, output):
        outputs.append((module, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with implementation(model, ctx):
            out = call()
    finally:
        for h in handles:
            h.remove()
    plan = _match(out, ctx.record or [], outputs)
    if expected:
        have = plan.layers()
        for name, n in expected.items():
            if name in have and have[name] != n:
                raise StreamUnsupported(f"the probe found {have[name]} layers of {name}, the config {n}")
    _PLANS[model] = plan
    return plan


def _match(out, record: list, outputs: list) -> Plan:
    """The plan that matches every returned map of ``out`` to the attention-function call that
    computed it (``record``), else to the module whose output holds it (``outputs``)."""
    by_id = {id(w): m for m, w in record if w is not None}
    modules: dict[tuple[str, int], Any] = {}
    index: dict[tuple[str, int], int] = {}
    for name in STACKS:
        for layer, a in enumerate(getattr(out, name, None) or ()):
            m = by_id.get(id(a))
            if m is not None:
                modules[(name, layer)] = m
                continue
            found = _find_in_outputs(outputs, a)
            if found is None:
                raise StreamUnsupported(f"Headmap cannot tell which module computes {name} layer {layer}")
            modules[(name, layer)], index[(name, layer)] = found
    if not modules:
        raise StreamUnsupported("the model returned no attention maps")
    if not index:
        return Plan("function", modules, index)
    # hooks for every layer: the attention function is not the model's path for all of them
    for key, m in modules.items():
        if key not in index:
            position = _find_module_output(outputs, m)
            if position is None:
                raise StreamUnsupported(f"Headmap cannot stream {key[0]} layer {key[1]}")
            index[key] = position
    return Plan("hooks", modules, index)


def _find_in_outputs(outputs, tensor) -> tuple[Any, int] | None:
    """The innermost module whose output tuple holds ``tensor`` (first seen), and its position."""
    for module, out in outputs:  # hooks fire innermost first
        if isinstance(out, tuple):
            for i, v in enumerate(out):
                if v is tensor:
                    return module, i
    return None


def _find_module_output(outputs, module) -> int | None:
    for m, out in outputs:
        if m is module and isinstance(out, tuple):
            for i, v in enumerate(out):
                if getattr(v, "ndim", 0) == 4:
                    return i
    return None


def run(model, plan: Plan, call: Callable[[], Any], writer, check, task=None):
    """Run ``call()`` (the full forward pass, ``output_attentions=False``) writing every layer of
    every stack of ``plan`` into ``writer``; returns the model's output."""
    layers = plan.layers()
    if plan.mode == "function":
        ctx = _Context(targets={id(m): key for key, m in plan.modules.items()}, writer=writer, layers=layers,
                       check=check, task=task)
        with implementation(model, ctx):
            return call()
    handles = []
    try:
        for (name, layer), module in plan.modules.items():
            handles.append(module.register_forward_hook(
                _writing_hook(name, layer, plan.index[(name, layer)], writer, layers[name], check, task)))
        return call()  # as loaded (eager): the hooked modules compute their weights themselves
    finally:
        for h in handles:
            h.remove()


def _writing_hook(name: str, layer: int, index: int, writer, n_layers: int, check, task):
    def hook(_module, _args, output):
        weights = output[index]
        if weights is None or weights.ndim != 4:
            raise StreamUnsupported(f"{name} layer {layer} returned no [batch, head, query, key] weights")
        if task is not None:
            task.check()
        check(weights, name, layer)
        writer.begin(name, (n_layers, int(weights.shape[1]), int(weights.shape[2]), int(weights.shape[3])))
        writer.write(name, layer, 0, weights[0])
    return hook


@contextmanager
def chunked(model) -> Iterator[None]:
    """The block (generation) runs with the chunked attention, writing nothing: a long input's
    prefill never holds a whole layer's weights."""
    if not streamable(model):
        yield
        return
    with implementation(model, None):
        yield
