"""A model object the user already holds (a notebook's fine-tuned model), ready for capture.

:func:`wrap_model` turns a transformers model and its tokenizer into the
:class:`~analysis.loader.LoadedModel` that :func:`analysis.capture.capture` reads, without copying
or reloading anything. :func:`eager_attention` switches such a model to what a capture needs for
the length of a ``with`` block and puts it back as it was:

* eager attention (transformers 5 loads with SDPA by default, and SDPA returns no maps), on the
  model and on every sub-model and sub-config (an encoder-decoder's halves);
* evaluation mode (a model built with ``Model(config)`` is in training mode, and dropout on the
  attention probabilities would return rows that do not sum to 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError, NoAttentionError, a_or_an
from .loader import LoadedModel, detect_kind, model_summary
from .result import Kind

_DECODER_CLASS_ENDINGS = ("ForCausalLM", "LMHeadModel")


def model_kind(model: Any) -> Kind:
    """``encoder`` / ``decoder`` / ``seq2seq`` of a model object: its class first (a model built
    from a config has no ``architectures``), then :func:`analysis.loader.detect_kind`."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if type(model).__name__.endswith(_DECODER_CLASS_ENDINGS):
        return "decoder"
    return detect_kind(config)


def model_reference(model: Any) -> str:
    """How a capture names an in-memory model: the checkpoint it came from
    (``name_or_path``) when it has one, else its class, marked as held in memory."""
    name = str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "")
    return f"{name} (in memory)" if name else f"{type(model).__name__} (in memory)"


def _check_objects(model: Any, tokenizer: Any) -> None:
    if isinstance(model, str | Path):
        raise InputError("wrap_model takes a model object; pass a reference string to load_model instead")
    if not hasattr(model, "config") or not callable(model) or not hasattr(model, "parameters"):
        raise InputError(
            f"{a_or_an(type(model).__name__)} is not a transformers model; pass a model from "
            "transformers (e.g. AutoModel.from_pretrained(...)) or a reference string"
        )
    if tokenizer is None:
        raise InputError(
            f"{type(model).__name__} needs its tokenizer; pass tokenizer=AutoTokenizer.from_pretrained(...) "
            "with the model object"
        )
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InputError(
            f"tokenizer= must be a transformers tokenizer (AutoTokenizer.from_pretrained(...)); got {a_or_an(type(tokenizer).__name__)}"
        )


def wrap_model(model: Any, tokenizer: Any, reference: str | None = None) -> LoadedModel:
    """A :class:`~analysis.loader.LoadedModel` around a model object and its tokenizer.

    Parameters
    ----------
    model : a transformers ``PreTrainedModel`` (encoder, decoder or encoder-decoder, with or
        without a head), on any device; it is not copied, moved or changed here
    tokenizer : its tokenizer
    reference : how captures name the model (default :func:`model_reference`)

    Returns
    -------
    LoadedModel whose summary is read off the model and its config (stacks, parameters, device).
    Capture it inside :func:`eager_attention`.

    Raises
    ------
    InputError : not a transformers model, or no tokenizer
    """
    _check_objects(model, tokenizer)
    kind = model_kind(model)
    ref = reference or model_reference(model)
    name = str(getattr(model, "name_or_path", "") or "")
    folder = Path(name) if name and Path(name).is_dir() else Path()
    summary = model_summary(ref, kind, model, model.config, tokenizer, folder)
    if not name or not Path(name).is_dir():
        from dataclasses import replace

        summary = replace(summary, source_path="")  # no folder: no alignment.json to read
    return LoadedModel(ref, kind, model, tokenizer, model.config, summary, folder)


def model_configs(model: Any) -> list[Any]:
    """Every config the model and its sub-models use, sub-configs included (each once)."""
    seen: dict[int, Any] = {}
    todo = [model.config] + [m.config for m in model.modules() if hasattr(m, "config") and hasattr(m.config, "to_dict")]
    while todo:
        cfg = todo.pop()
        if id(cfg) in seen:
            continue
        seen[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", None) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None:
                todo.append(sub)
    return list(seen.values())


_IMPL = "_attn_implementation_internal"


@contextmanager
def eager_attention(model: Any) -> Iterator[Any]:
    """Run the block with ``model`` in eager attention and evaluation mode; restore both after.

    The attention implementation of every config (the model's, its sub-models' and their
    sub-configs') is recorded and written back exactly, and the training flag of every module is
    restored, also when the block raises.

    Raises
    ------
    NoAttentionError : the model cannot switch to eager attention (no maps to capture)
    """
    configs = model_configs(model)
    impls = [(cfg, cfg.__dict__.get(_IMPL, getattr(cfg, "_attn_implementation", None))) for cfg in configs]
    training = [(m, m.training) for m in model.modules()]
    try:
        if getattr(model.config, "_attn_implementation", "eager") not in ("eager", None):
            setter = getattr(model, "set_attn_implementation", None)
            if setter is None:
                raise NoAttentionError(
                    f"{type(model).__name__} runs with '{model.config._attn_implementation}' attention and cannot switch; "
                    "load it with attn_implementation='eager'"
                )
            setter("eager")
            now = getattr(model.config, "_attn_implementation", None)
            if now not in ("eager", None):
                raise NoAttentionError(
                    f"{type(model).__name__} stays on '{now}' attention, which returns no maps; "
                    "load it with attn_implementation='eager'"
                )
        model.eval()
        yield model
    finally:
        for cfg, impl in impls:
            if _IMPL in cfg.__dict__ or impl is not None:
                cfg.__dict__[_IMPL] = impl
        for m, flag in training:
            m.training = flag


__all__ = ["eager_attention", "model_kind", "model_reference", "wrap_model"]
