"""analysis.loader: behaviours no other test reached. The model card of a model without a stated
maximum, the device choices the window offers, a reachable hub, the dequantized cache's config
(architectures kept, no generation config) and a cancel during dequantization, the parameter
estimate when the model cannot be built on the meta device, a GPU's memory counted with the RAM,
a dequantized copy found intact or rebuilt without a note, the weights' loading errors and
``device_map``, the device label of a model spread by accelerate and the summary's fallbacks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import analysis.loader as loader
from analysis.errors import (
    Cancelled,
    ConsentRequiredError,
    InputError,
    ModelLoadError,
    RemoteCodeError,
)
from analysis.loader import ModelSummary, StackInfo
from analysis.tasks import TaskState


def test_the_model_card_of_a_model_without_a_maximum_length_names_none():
    s = ModelSummary(reference="m", kind="encoder", architecture="BertModel", model_type="bert",
                     stacks=(StackInfo("attentions", 2, 4),), n_params=1_500_000, dtype="float32", device="cpu",
                     memory_bytes=3 * 2**20, max_positions=None, has_lm_head=False, head_kind="none",
                     source_path="/m")
    assert s.lines() == ["Kind: encoder", "Architecture: BertModel (bert)", "attentions: 2 layers × 4 heads",
                         "Parameters: 1.5 M", "Memory: 3 MiB", "dtype: float32   device: cpu"]


def test_the_device_choices_are_the_devices_this_machine_has(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert loader.device_choices() == ["auto", "cpu", "cuda", "mps"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert loader.device_choices(TaskState()) == ["auto", "cpu"]


@pytest.mark.parametrize("offline", ["0", "", "false", "False"])
def test_the_hub_is_reachable_when_its_host_answers_on_port_443(monkeypatch, offline):
    calls = []

    def connect(address, timeout):
        calls.append((address, timeout))
        return contextlib.nullcontext()

    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/some/path")
    monkeypatch.setattr(loader.socket, "create_connection", connect)
    assert loader.hub_reachable(timeout=0.5) is True
    assert calls == [(("hf-mirror.example", 443), 0.5)]


# --------------------------------------------------------------------------------------------
# dequantized GGUF cache
# --------------------------------------------------------------------------------------------
def _fake_gguf_readers(monkeypatch, model, tokenizer, seen):
    import transformers

    class Tok:
        @staticmethod
        def from_pretrained(path, gguf_file):
            seen.append(("tokenizer", path, gguf_file))
            return tokenizer

    class Model:
        @staticmethod
        def from_pretrained(path, gguf_file):
            seen.append(("model", path, gguf_file))
            return model

    monkeypatch.setattr(transformers, "AutoTokenizer", Tok)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Model)


def test_the_dequantized_cache_keeps_the_models_architectures_and_needs_no_generation_config(
        tiny_model_dir, monkeypatch, tmp_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tiny_model_dir("llama")
    model = AutoModelForCausalLM.from_pretrained(str(src))
    tok = AutoTokenizer.from_pretrained(str(src))
    model.config.architectures = ["MyOwnCausalLM"]
    model.generation_config = None
    seen: list = []
    _fake_gguf_readers(monkeypatch, model, tok, seen)
    out = tmp_path / "out"
    out.mkdir()
    reserved: list[int] = []
    loader._write_dequantized(tmp_path / "m.gguf", TaskState(), out, reserved.append)
    assert seen == [("tokenizer", str(tmp_path), "m.gguf"), ("model", str(tmp_path), "m.gguf")]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["MyOwnCausalLM"] and "quantization_config" not in cfg
    assert not (out / "generation_config.json").exists()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert len(reserved) == 1 and reserved[0] > sum(p.numel() * 4 for p in model.parameters()) // 2


def test_a_cancel_while_dequantizing_is_a_cancel_not_a_damaged_file(monkeypatch, tmp_path):
    seen: list = []
    _fake_gguf_readers(monkeypatch, object(), object(), seen)
    with pytest.raises(Cancelled) as err:
        loader._write_dequantized(tmp_path / "m.gguf", TaskState(cancel=lambda: True), tmp_path, lambda n: None)
    assert str(err.value) == "cancelled"
    assert [s[0] for s in seen] == ["tokenizer"]  # the weights are not read after the cancel


def test_an_intact_dequantized_copy_gives_the_load_error_back(monkeypatch, tmp_path):
    exc = ModelLoadError("the real reason")
    monkeypatch.setattr(loader.derived, "inspect", lambda folder, full=False: None)

    def no_rebuild(*a, **k):
        raise AssertionError("an intact copy is not rebuilt")

    monkeypatch.setattr(loader.derived, "rebuild", no_rebuild)
    res = loader.Resolved(folder=tmp_path, gguf_file="m.gguf")
    with pytest.raises(ModelLoadError) as err:
        loader._repair_gguf(res, tmp_path / "cache", exc, TaskState(), [])
    assert err.value is exc


@pytest.mark.parametrize("repaired, notes", [("", []), ("rebuilt it", ["rebuilt it"])])
def test_a_damaged_dequantized_copy_is_rebuilt_and_noted_when_it_says_so(monkeypatch, tmp_path, repaired, notes):
    calls = []
    monkeypatch.setattr(loader.derived, "inspect", lambda folder, full=False: "a file is missing")

    def rebuild(folder, build, **kw):
        calls.append((folder, kw))
        return SimpleNamespace(repaired=repaired)

    monkeypatch.setattr(loader.derived, "rebuild", rebuild)
    task = TaskState()
    got: list[str] = []
    loader._repair_gguf(loader.Resolved(folder=tmp_path, gguf_file="m.gguf"), tmp_path / "cache",
                        ModelLoadError("x"), task, got)
    assert got == notes
    assert calls == [(tmp_path / "cache", {"what": "dequantized copy of m.gguf", "problem": "a file is missing",
                                           "stage": "dequantize", "source": str(tmp_path / "m.gguf"), "task": task})]


# --------------------------------------------------------------------------------------------
# memory guard
# --------------------------------------------------------------------------------------------
def test_the_parameter_estimate_falls_back_to_the_configs_sizes(monkeypatch):
    """A model that cannot be built on the meta device: 12·h² per layer (encoder and decoder
    layers, not the cross-attention ones again) plus the embedding table."""
    from transformers import BartConfig, BertConfig

    class Broken:
        @staticmethod
        def from_config(config, **kw):
            raise RuntimeError("cannot build")

    monkeypatch.setattr(loader, "_auto_class", lambda kind, config: Broken)
    bert = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, vocab_size=100)
    assert loader.estimate_params(bert, "encoder") == 12 * 32 * 32 * 3 + 100 * 32
    bart = BartConfig(d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
                      decoder_attention_heads=2, vocab_size=50)
    assert loader.estimate_params(bart, "seq2seq") == 12 * 16 * 16 * 5 + 50 * 16


def test_a_gpus_free_memory_counts_with_the_ram(monkeypatch):
    """device_map="auto" spills to the CPU: on cuda the GPU's free memory and the RAM together;
    without a GPU only the RAM."""
    import psutil
    import torch

    gib = 2**30
    monkeypatch.setattr(loader, "estimate_params", lambda *a, **k: gib)  # 4 GiB in float32
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=2 * gib))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (4 * gib, 8 * gib))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loader.check_memory(None, "encoder", torch.float32, "cuda") == (
        4 * gib, "this model takes about 4.0 GiB of the 6.0 GiB free memory")
    with pytest.raises(ConsentRequiredError) as err:
        loader.check_memory(None, "encoder", torch.float32, "cpu")
    assert str(err.value) == ("this model needs about 4.0 GiB in float32 but only 2.0 GiB are free; choose dtype "
                              "bfloat16 or float16, or close other programs")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConsentRequiredError, match="only 2.0 GiB are free"):
        loader.check_memory(None, "encoder", torch.float32, "cuda")


# --------------------------------------------------------------------------------------------
# reading the weights
# --------------------------------------------------------------------------------------------
def _weights_class(monkeypatch, behaviour):
    calls = []

    class Cls:
        @staticmethod
        def from_pretrained(path, **kw):
            calls.append((path, kw))
            return behaviour()

    monkeypatch.setattr(loader, "_auto_class", lambda kind, config: Cls)
    return calls


def test_weights_spread_by_accelerate_are_asked_for_with_device_map_auto(monkeypatch, tmp_path):
    model = object()
    calls = _weights_class(monkeypatch, lambda: (model, {"missing_keys": ["b.weight", "a.weight"]}))
    got = loader._read_weights("m", tmp_path, "decoder", None, "float16", False, device_map=True)
    assert got == (model, ("a.weight", "b.weight"))
    assert calls == [(str(tmp_path), {"attn_implementation": "eager", "dtype": "float16", "trust_remote_code": False,
                                      "output_loading_info": True, "use_safetensors": False, "device_map": "auto"})]
    (tmp_path / "model.safetensors").write_bytes(b"")
    calls.clear()
    loader._read_weights("m", tmp_path, "decoder", None, "float16", False, device_map=False)
    assert "device_map" not in calls[0][1] and "use_safetensors" not in calls[0][1]


def test_weights_that_need_remote_code_say_so(monkeypatch, tmp_path):
    def needs_code():
        raise ValueError("The repository contains custom code; pass trust_remote_code=True to load it")

    _weights_class(monkeypatch, needs_code)
    with pytest.raises(RemoteCodeError) as err:
        loader._read_weights("org/custom", tmp_path, "encoder", None, "float32", False, device_map=False)
    assert str(err.value) == ("org/custom needs custom code (trust_remote_code) to load; enable it only if you "
                              "trust its author")


def test_headmaps_own_errors_while_reading_weights_pass_unchanged(monkeypatch, tmp_path):
    exc = InputError("the weights file is a pickle")

    def own():
        raise exc

    _weights_class(monkeypatch, own)
    with pytest.raises(InputError) as err:
        loader._read_weights("m", tmp_path, "encoder", None, "float32", False, device_map=False)
    assert err.value is exc


# --------------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------------
def test_a_model_spread_by_accelerate_names_each_device_once():
    model = SimpleNamespace(hf_device_map={"embed": 0, "layers.0": "cpu", "layers.1": 0, "lm_head": "disk"})
    assert loader._device_label(model) == "auto (0, cpu, disk)"


def test_the_summary_counts_parameter_bytes_and_leaves_an_unknown_token_style_empty(loaded, monkeypatch):
    import analysis.tokens as tokens

    lm = loaded("bert")
    normal = loader.model_summary("m", "encoder", lm.model, lm.config, lm.tokenizer, Path("/m"))
    assert normal.token_style == "wordpiece"

    def no_footprint():
        raise RuntimeError("no footprint")

    def no_style(tokenizer):
        raise RuntimeError("cannot inspect")

    monkeypatch.setattr(lm.model, "get_memory_footprint", no_footprint)
    monkeypatch.setattr(tokens, "tokenizer_style", no_style)
    s = loader.model_summary("m", "encoder", lm.model, lm.config, lm.tokenizer, Path("/m"))
    assert s.memory_bytes == sum(p.numel() * p.element_size() for p in lm.model.parameters())
    assert s.token_style == ""
    assert dict(vars(s), memory_bytes=0, token_style="") == dict(vars(normal), memory_bytes=0, token_style="")
