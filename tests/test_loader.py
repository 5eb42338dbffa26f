"""analysis.loader: kind detection, head classes, eager attention, the summary, and every bad input."""

from __future__ import annotations

import builtins
import json
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.capture import capture, stack_attentions
from analysis.errors import (
    Cancelled,
    ConsentRequiredError,
    HeadmapError,
    InputError,
    ModelLoadError,
    NoAttentionError,
    RemoteCodeError,
)
from analysis.loader import detect_kind, load_model, stack_infos
from analysis.tasks import TaskState
from tests.tiny_models import (
    BASE_ARCHS,
    DECODERS,
    HEADS,
    KIND,
    LAYERS,
    REMOTE_CODE_MARKER,
    SEQ2SEQ,
    build_broken,
)

TEXT = "I like this course"


# --------------------------------------------------------------------------------------------
# kind detection: from the config, never from names
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_kind_of_every_fixture(arch, loaded):
    lm = loaded(arch)
    assert lm.kind == KIND[arch]
    assert lm.summary.kind == KIND[arch]
    assert detect_kind(lm.config) == KIND[arch]


def test_kind_comes_from_the_config_not_the_architecture_names(tiny_model_dir):
    from transformers import AutoConfig, BertConfig, GPT2Config, LlamaConfig, T5Config

    gpt2 = AutoConfig.from_pretrained(tiny_model_dir("gpt2"))
    gpt2.architectures = None
    assert detect_kind(gpt2) == "decoder"
    assert detect_kind(GPT2Config()) == "decoder"
    assert detect_kind(LlamaConfig()) == "decoder"
    assert detect_kind(BertConfig()) == "encoder"
    assert detect_kind(BertConfig(is_decoder=True)) == "decoder"
    assert detect_kind(T5Config()) == "seq2seq"
    # an encoder config whose architectures name a causal-LM head is a decoder (BertLMHeadModel)
    assert detect_kind(BertConfig(architectures=["BertLMHeadModel"])) == "decoder"
    # a name that merely *looks* like GPT is not trusted: the flags decide
    assert detect_kind(BertConfig(architectures=["GPTLikeEncoderModel"])) == "encoder"


def test_bert_with_is_decoder_loads_as_a_causal_lm(tiny_model_dir, tmp_path):
    folder = tmp_path / "bert-decoder"
    shutil.copytree(tiny_model_dir("bert"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["is_decoder"] = True
    cfg["architectures"] = None
    (folder / "config.json").write_text(json.dumps(cfg))
    lm = load_model(str(folder), device="cpu")
    assert lm.kind == "decoder"
    assert type(lm.model).__name__ == "BertLMHeadModel"
    cap = capture(lm, TEXT)
    att = cap.attention()
    assert np.all(np.triu(att, k=1) == 0)  # a decoder BERT is causally masked


# --------------------------------------------------------------------------------------------
# head classes, eager attention, the summary
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", DECODERS)
def test_decoders_keep_their_lm_head_and_generate(arch, loaded):
    import torch

    lm = loaded(arch)
    name = type(lm.model).__name__
    assert name.endswith(("ForCausalLM", "LMHeadModel")), name
    assert lm.summary.has_lm_head and lm.summary.head_kind == "lm"
    enc = lm.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
    assert out.shape == (1, enc["input_ids"].shape[1] + 3)


@pytest.mark.parametrize("arch", SEQ2SEQ)
def test_seq2seq_keep_their_lm_head_and_generate(arch, loaded):
    import torch

    lm = loaded(arch)
    name = type(lm.model).__name__
    assert name.endswith("ForConditionalGeneration") or name == "MarianMTModel", name
    assert lm.summary.head_kind == "lm"
    enc = lm.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1 and out.shape[1] == 4  # decoder start + 3 new tokens


@pytest.mark.parametrize("arch", ["bert", "bert-mlm", "bert-cls", "distilbert", "roberta"])
def test_encoders_keep_the_saved_head_class(arch, loaded):
    lm = loaded(arch)
    want = {"bert": ("BertModel", "none"), "bert-mlm": ("BertForMaskedLM", "masked_lm"),
            "bert-cls": ("BertForSequenceClassification", "classification"),
            "distilbert": ("DistilBertModel", "none"), "roberta": ("RobertaModel", "none")}[arch]
    assert (type(lm.model).__name__, lm.summary.head_kind) == want
    assert lm.summary.architecture == want[0]


@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_attention_is_eager_and_model_in_eval_mode(arch, loaded):
    lm = loaded(arch)
    assert lm.model.config._attn_implementation == "eager"
    assert not lm.model.training


@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_summary(arch, loaded):
    lm = loaded(arch)
    s = lm.summary
    n_params = sum(p.numel() for p in lm.model.parameters())
    assert s.n_params == n_params and n_params > 10_000
    assert s.dtype == "float32"
    assert s.device == "cpu"
    assert s.memory_bytes >= 4 * n_params * 0.9
    assert s.max_positions == 64
    if KIND[arch] == "seq2seq":
        assert [(x.name, x.layers, x.heads) for x in s.stacks] == [
            ("encoder_attentions", LAYERS, HEADS), ("decoder_attentions", LAYERS, HEADS),
            ("cross_attentions", LAYERS, HEADS)]
    else:
        assert [(x.name, x.layers, x.heads) for x in s.stacks] == [("attentions", LAYERS, HEADS)]
    assert stack_infos(lm.config, lm.kind) == s.stacks
    lines = "\n".join(s.lines())
    assert f"Kind: {KIND[arch]}" in lines
    assert f"{LAYERS} layers × {HEADS} heads" in lines
    assert "device: cpu" in lines and "dtype: float32" in lines


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_option(dtype, tiny_model_dir):
    import torch

    lm = load_model(str(tiny_model_dir("gpt2")), dtype=dtype, device="cpu")
    assert next(lm.model.parameters()).dtype == getattr(torch, dtype)
    assert lm.summary.dtype == dtype
    # a long row: bfloat16 rounding of 60 weights must not be mistaken for invalid maps
    cap = capture(lm, "I like this course and the students are learning about attention " * 4)
    att = cap.attention()
    assert cap.shape()[2] == 64
    assert att.dtype == np.float32  # stored maps are float32 whatever the compute dtype
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-2)


def test_float32_on_cpu_by_default_even_for_half_configs(tiny_model_dir, tmp_path):
    folder = tmp_path / "half"
    shutil.copytree(tiny_model_dir("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load_model(str(folder), device="cpu").summary.dtype == "float32"


def test_unknown_dtype_and_device_are_input_errors(tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    with pytest.raises(InputError, match="unknown device 'tpu'.*choose one of"):
        load_model(folder, device="tpu")
    with pytest.raises(InputError, match="unknown dtype 'float8'"):
        load_model(folder, dtype="float8")


def test_unavailable_device_is_an_input_error(tiny_model_dir, monkeypatch):
    import analysis.loader as loader

    monkeypatch.setattr(loader, "available_devices", lambda: ["auto", "cpu"])
    with pytest.raises(InputError, match="device 'cuda' is not available"):
        load_model(str(tiny_model_dir("bert")), device="cuda")


# --------------------------------------------------------------------------------------------
# bad inputs: each one the right error with a sentence that says what to do
# --------------------------------------------------------------------------------------------
def test_nonexistent_folder(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelLoadError, match="does not exist; check the path"):
        load_model(str(missing))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("./nothing-here/at-all/")


def test_empty_reference():
    with pytest.raises(InputError, match="no model given"):
        load_model("   ")


def test_a_file_that_is_not_gguf(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a .gguf model; give the checkpoint folder"):
        load_model(str(f))


def test_unknown_hub_id_offline_fails_without_touching_the_network(monkeypatch):
    """HF_HUB_OFFLINE (set by conftest): the loader answers from the cache, with no DNS lookup and
    no connection to wait on (``make bench`` times it: loader_offline_unknown_id_s)."""
    import socket

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelLoadError, match="not in the local cache and the hub is unreachable"):
        load_model("headmap-tests/no-such-model")
    assert calls == []


def test_offline_hub_probe_is_one_quick_connection(monkeypatch):
    """Without HF_HUB_OFFLINE the loader probes the hub once (DNS+TCP, at most 5 s) instead of
    letting huggingface_hub retry for half a minute (``make bench`` times it:
    loader_unreachable_hub_s)."""
    import socket

    calls = []

    def refuse(address, timeout=None, *a, **k):
        calls.append((address, timeout))
        raise OSError("network unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelLoadError, match="not in the local cache and the hub is unreachable"):
        load_model("headmap-tests/no-such-model")
    assert len(calls) == 1 and calls[0][0][1] == 443 and calls[0][1] <= 5


def test_folder_without_config(broken_dir):
    with pytest.raises(ModelLoadError, match="has no config.json.*choose the folder that holds config.json"):
        load_model(str(broken_dir("no-config")))


def test_folder_without_tokenizer(broken_dir):
    with pytest.raises(ModelLoadError, match="has no tokenizer files.*tokenizer.save_pretrained"):
        load_model(str(broken_dir("no-tokenizer")))


@pytest.mark.parametrize("kind", ["truncated-weights", "garbage-weights"])
def test_corrupt_safetensors(kind, broken_dir):
    with pytest.raises(ModelLoadError, match="weights of .* are damaged or incomplete.*again") as exc:
        load_model(str(broken_dir(kind)))
    assert not isinstance(exc.value, (RemoteCodeError, ConsentRequiredError))


def test_unknown_bundled_name():
    with pytest.raises(ModelLoadError, match="no bundled model called 'nope'.*bundled:minilm"):
        load_model("bundled:nope")


def test_remote_code_refused_unless_trusted(tiny_model_dir, tmp_path, monkeypatch):
    # a folder of its own: the trusted load below leaves the marker file behind
    folder = build_broken("remote-code", tmp_path / "remote", tiny_model_dir("bert"))
    marker = folder / REMOTE_CODE_MARKER
    with pytest.raises(RemoteCodeError, match="needs custom Python code.*--trust-remote-code"):
        load_model(str(folder))
    assert not marker.exists(), "the repository's code ran without consent"

    # with consent the repo's own class is used, and nobody is asked on stdin
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda *a, **k: prompts.append(a) or "n")
    lm = load_model(str(folder), trust_remote_code=True, device="cpu")
    assert marker.exists()
    assert prompts == []
    assert type(lm.model).__name__ == "HeadmapCustomModel"
    cap = capture(lm, TEXT)
    assert cap.shape() == (LAYERS, HEADS, len(cap.source), len(cap.source))


def test_pickle_only_needs_consent(broken_dir):
    folder = broken_dir("pickle-only")
    with pytest.raises(ConsentRequiredError, match="only has pickle weights.*--allow-pickle"):
        load_model(str(folder))
    lm = load_model(str(folder), allow_pickle=True, device="cpu")
    assert lm.kind == "encoder" and type(lm.model).__name__ == "BertModel"


def test_pickle_weights_equal_the_safetensors_weights(broken_dir, loaded):
    import torch

    lm = load_model(str(broken_dir("pickle-only")), allow_pickle=True, device="cpu")
    ref = loaded("bert").model.state_dict()
    got = lm.model.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_memory_guard(tiny_model_dir, monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=10_000, total=10_000))
    with pytest.raises(ConsentRequiredError, match="choose dtype bfloat16 or float16"):
        load_model(str(tiny_model_dir("bert")), device="cpu")
    with pytest.raises(ConsentRequiredError, match="choose dtype a smaller model"):
        load_model(str(tiny_model_dir("bert")), dtype="float16", device="cpu")
    # the user's explicit decision skips the guard
    lm = load_model(str(tiny_model_dir("bert")), memory_check=False, device="cpu")
    assert lm.kind == "encoder"


def test_memory_warning_note(tiny_model_dir, monkeypatch):
    import psutil

    from analysis.loader import estimate_params

    lm = load_model(str(tiny_model_dir("bert")), device="cpu")
    n = estimate_params(lm.config, "encoder")
    assert n == lm.summary.n_params  # built on the meta device: exact
    # between half and 90 % of the free memory: load, with a note
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=int(4 * n / 0.6)))
    lm = load_model(str(tiny_model_dir("bert")), device="cpu")
    assert any("free memory" in note for note in lm.notes)


def _without_attentions(lm, empty: bool):
    original = lm.model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        for name in ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions"):
            if name in out:
                out[name] = () if empty else None
        return out

    lm.model.forward = forward
    return lm


@pytest.mark.parametrize("arch,empty", [("bert", False), ("gpt2", True), ("t5", False)])
def test_model_without_attentions(arch, empty, tiny_model_dir):
    lm = _without_attentions(load_model(str(tiny_model_dir(arch))), empty)
    arch_name = type(lm.model).__name__
    kw = {"target": "J'aime ce cours"} if KIND[arch] == "seq2seq" else {}
    with pytest.raises(NoAttentionError, match=f"{arch_name} returned no .*attentions") as exc:
        capture(lm, TEXT, **kw)
    assert "cannot show it" in str(exc.value)


def test_stack_attentions_rejects_missing_maps():
    for atts in (None, (), (None, None)):
        with pytest.raises(NoAttentionError, match="FancyModel returned no attentions"):
            stack_attentions(atts, "attentions", "FancyModel", (2, 4))


def test_cancel_before_load(tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    with pytest.raises(Cancelled):
        load_model(folder, task=TaskState(cancel=lambda: True))
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        load_model(folder, task=TaskState(cancel=ev))


def test_progress_stages(tiny_model_dir):
    stages = []
    load_model(str(tiny_model_dir("bert")), task=TaskState(lambda stage, frac, msg: stages.append((stage, frac, msg))))
    names = [s for s, _, _ in stages]
    assert names[0] == "resolve" and names[-1] == "ready"
    assert "load" in names
    assert all(isinstance(m, str) and m for _, _, m in stages)


def test_every_error_is_a_headmap_error_with_one_sentence(tmp_path, broken_dir):
    refs = [str(tmp_path / "missing"), "bundled:nope", str(broken_dir("no-config")), str(broken_dir("no-tokenizer")),
            str(broken_dir("truncated-weights")), str(broken_dir("remote-code")), str(broken_dir("pickle-only"))]
    for ref in refs:
        with pytest.raises(HeadmapError) as exc:
            load_model(ref)
        msg = str(exc.value)
        assert msg and "\n" not in msg and len(msg) < 400, msg


# --------------------------------------------------------------------------------------------
# the fixtures themselves look like the real families
# --------------------------------------------------------------------------------------------
_TEMPLATES = {  # (first, last) token of an encoded sentence, None = a text token
    "bert": ("[CLS]", "[SEP]"), "distilbert": ("[CLS]", "[SEP]"), "roberta": ("<s>", "</s>"),
    "bart": ("<s>", "</s>"), "gpt2": (None, None), "llama": ("<s>", None), "t5": (None, "</s>"),
    "marian": (None, "</s>"),
}


@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_fixture_tokenizer_and_config_agree(arch, loaded):
    lm = loaded(arch)
    tok, cfg = lm.tokenizer, lm.config
    assert 150 <= len(tok) <= 500
    assert cfg.vocab_size == len(tok)
    assert tok.model_max_length == 64
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(cfg, name, None) is not None:
            assert getattr(cfg, name) == getattr(tok, name), name
    if KIND[arch] == "seq2seq":
        assert cfg.decoder_start_token_id in (tok.pad_token_id, tok.eos_token_id)
    if arch in ("t5", "marian"):
        assert tok.pad_token_id == 0
    raw = tok.convert_ids_to_tokens(tok(TEXT)["input_ids"])
    first, last = _TEMPLATES[arch]
    assert (raw[0] if first else None) == first and (raw[-1] if last else None) == last, raw
    if first is None:
        assert not raw[0].startswith("<")
    if last is None:
        assert raw[-1].endswith("course")


# -- what the errors say, word for word ---------------------------------------------------
def _message(call, *args, error=HeadmapError, **kwargs) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_an_unknown_device_or_dtype_names_every_choice(tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    assert _message(load_model, folder, device="tpu", error=InputError) == (
        "unknown device 'tpu'; choose one of: auto, cpu, cuda, mps")
    assert _message(load_model, folder, dtype="float8", device="cpu", error=InputError) == (
        "unknown dtype 'float8'; choose one of: auto, float32, float16, bfloat16")


def test_a_device_this_machine_lacks_names_the_ones_it_has(tiny_model_dir, monkeypatch):
    import analysis.loader as loader

    monkeypatch.setattr(loader, "available_devices", lambda: ["auto", "cpu"])
    assert _message(load_model, str(tiny_model_dir("bert")), device="mps", error=InputError) == (
        "device 'mps' is not available on this machine; choose one of: auto, cpu")


def test_no_reference_says_what_to_give():
    assert _message(load_model, "  ", error=InputError) == (
        "no model given; choose a bundled model, a folder, a .gguf file or a hub id")


def test_a_file_that_is_not_gguf_asks_for_the_checkpoint_folder(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("hello")
    assert _message(load_model, str(f), error=ModelLoadError) == (
        f"{f} is a file but not a .gguf model; give the checkpoint folder that holds config.json instead")


def test_a_path_that_does_not_exist_suggests_a_hub_id(tmp_path):
    missing = str(tmp_path / "no" / "such-model")
    assert _message(load_model, missing, error=ModelLoadError) == (
        f"{missing} does not exist; check the path, or give a hub id like 'bert-base-uncased'")
    assert _message(load_model, "not a hub id!", error=ModelLoadError) == (
        "not a hub id! does not exist; check the path, or give a hub id like 'bert-base-uncased'")


def test_a_hub_id_out_of_reach_says_how_to_get_it():
    assert _message(load_model, "headmap-tests/no-such-model", error=ModelLoadError) == (
        "'headmap-tests/no-such-model' is not in the local cache and the hub is unreachable; "
        "connect to the internet once, or open a local folder or a bundled model")


def _hub_fails(monkeypatch, *failures):
    """The hub reachable, and ``snapshot_download`` failing offline (cache miss), then with each of
    ``failures`` in turn (None: a folder without safetensors)."""
    import huggingface_hub

    import analysis.loader as loader

    answers = [OSError("not cached"), *failures]

    def snapshot_download(repo_id, **kwargs):
        exc = answers.pop(0)
        if exc is None:
            return str(Path(kwargs.get("cache_dir") or ".").resolve())
        raise exc

    monkeypatch.setattr(loader, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def _hub_error(cls, text: str):
    exc = cls.__new__(cls)  # no HTTP response needed to raise one
    Exception.__init__(exc, text)
    return exc


def test_a_gated_hub_model_says_how_to_get_access(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    _hub_fails(monkeypatch, _hub_error(GatedRepoError, "401 gated"))
    assert _message(load_model, "someone/gated-model", error=ModelLoadError) == (
        "'someone/gated-model' is gated on the hub; accept its licence and log in with `hf auth login`")


def test_a_hub_id_that_does_not_exist_asks_to_check_the_spelling(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_fails(monkeypatch, _hub_error(RepositoryNotFoundError, "404"))
    assert _message(load_model, "someone/no-such-model", error=ModelLoadError) == (
        "there is no model 'someone/no-such-model' on the Hugging Face hub; check the spelling")


def test_a_failed_download_quotes_the_failure(monkeypatch):
    _hub_fails(monkeypatch, OSError("connection reset"))
    assert _message(load_model, "someone/model", error=ModelLoadError) == (
        "downloading 'someone/model' failed (connection reset); check your connection and try again")


def test_a_failed_download_of_pickle_weights_quotes_the_failure(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the fake download's folder: no safetensors in it
    _hub_fails(monkeypatch, None, OSError("disk quota exceeded"))
    assert _message(load_model, "someone/model", error=ModelLoadError) == (
        "downloading the weights of 'someone/model' failed (disk quota exceeded); try again")


def test_a_folder_without_config_asks_for_the_right_folder(broken_dir):
    folder = broken_dir("no-config")
    assert _message(load_model, str(folder), error=ModelLoadError) == (
        f"{folder} has no config.json, so it is not a checkpoint written by save_pretrained; "
        "choose the folder that holds config.json")


def test_a_folder_without_tokenizer_says_how_to_save_one(broken_dir):
    folder = broken_dir("no-tokenizer")
    assert _message(load_model, str(folder), error=ModelLoadError) == (
        f"{folder} has no tokenizer files (tokenizer.json, vocab.txt, …); "
        "save the tokenizer into the folder with tokenizer.save_pretrained(folder)")


def test_a_folder_without_weights_says_the_download_is_incomplete(broken_dir):
    folder = broken_dir("no-weights")
    assert _message(load_model, str(folder), error=ModelLoadError) == (
        f"{folder} has no weights (model.safetensors); the download may be incomplete — fetch it again")


def test_pickle_weights_ask_for_consent_in_both_interfaces(broken_dir):
    folder = broken_dir("pickle-only")
    assert _message(load_model, str(folder), error=ConsentRequiredError) == (
        f"{folder} only has pickle weights (pytorch_model.bin), which can run code when loaded; "
        "load them only if you trust the source (window: confirm; CLI: --allow-pickle)")


def test_a_config_that_is_not_json_quotes_the_parser(broken_dir):
    folder = broken_dir("config-not-json")
    msg = _message(load_model, str(folder), error=ModelLoadError)
    assert re.fullmatch(re.escape(f"{folder / 'config.json'} is not valid JSON (") + r"Expecting .+"
                        + re.escape("); the download may be incomplete"), msg), msg


def test_a_config_transformers_cannot_read_asks_whether_the_folder_is_complete(broken_dir):
    folder = broken_dir("unknown-model-type")
    msg = _message(load_model, str(folder), device="cpu", error=ModelLoadError)
    assert re.fullmatch(re.escape(f"the config of {folder} cannot be read (") + r".+"
                        + re.escape("); is the folder complete?"), msg, re.S), msg
    assert "no-such-architecture" in msg


def test_a_tokenizer_that_fails_quotes_the_first_160_characters(tiny_model_dir, monkeypatch):
    import transformers

    def fail(*args, **kwargs):
        raise OSError("x" * 150 + "0123456789" + "cut off")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    folder = str(tiny_model_dir("bert"))
    assert _message(load_model, folder, device="cpu", error=ModelLoadError) == (
        f"the tokenizer of {folder} cannot be loaded (OSError: {'x' * 150}0123456789); "
        "save it with tokenizer.save_pretrained")


def test_damaged_weights_say_to_copy_the_model_again(broken_dir):
    folder = broken_dir("truncated-weights")
    msg = _message(load_model, str(folder), device="cpu", error=ModelLoadError)
    assert re.fullmatch(re.escape(f"the weights of {folder} are damaged or incomplete (") + r".{1,160}"
                        + re.escape("); download or copy the model again"), msg, re.S), msg


def test_weights_that_fail_otherwise_quote_the_first_200_characters(tiny_model_dir, monkeypatch):
    import analysis.loader as loader

    class Refusing:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise RuntimeError("y" * 190 + "0123456789" + "cut off")

    monkeypatch.setattr(loader, "_auto_class", lambda kind, config: Refusing)
    folder = str(tiny_model_dir("bert"))
    assert _message(load_model, folder, device="cpu", memory_check=False, error=ModelLoadError) == (
        f"{folder} could not be loaded (RuntimeError: {'y' * 190}0123456789); "
        "check that it is a transformers checkpoint")


def test_missing_weights_are_named_by_layer_with_both_ways_out():
    from analysis.loader import missing_weights_error

    missing = tuple(f"encoder.layer.{i}.attention.{p}" for i in range(6) for p in ("query.weight", "key.weight"))
    err = missing_weights_error("my-model", missing)
    assert str(err) == (
        "the weights of my-model lack 12 tensors that its config describes (encoder.layer.0 (2 tensors), "
        "encoder.layer.1 (2 tensors), encoder.layer.2 (2 tensors), encoder.layer.3 (2 tensors) and 2 more); "
        "transformers would fill them with random values, so its attention maps would change from run to run — "
        "use a complete checkpoint (or a config with no more layers than the weights hold), or load it anyway "
        "(CLI: --allow-missing-weights; window: confirm)")
    assert err.missing == missing


def test_missing_weights_warnings_say_what_is_random():
    from analysis.loader import missing_weights_warning

    assert missing_weights_warning("my-model", ("cls.predictions.bias", "pooler.dense.weight")) == (
        "warning: my-model has no weights for its task head (cls.predictions.bias, pooler.dense.weight); they were "
        "initialised at random, so its predictions are meaningless (the attention maps are not affected)")
    missing = ("encoder.layer.1.output.dense.weight", "encoder.layer.1.output.dense.bias", "embeddings.word.weight")
    assert missing_weights_warning("my-model", missing) == (
        "warning: 3 weights of my-model are missing from its checkpoint (embeddings.word.weight, "
        "encoder.layer.1 (2 tensors)) and "
        "were filled with random values, so its attention maps and predictions change from run to run")
    assert missing_weights_warning("my-model", ("embeddings.word.weight",)) == (
        "warning: 1 weight of my-model is missing from its checkpoint (embeddings.word.weight) and "
        "was filled with random values, so its attention maps and predictions change from run to run")


def test_one_missing_tensor_is_one_tensor():
    from analysis.loader import missing_weights_error

    assert str(missing_weights_error("my-model", ("encoder.layer.0.attention.query.weight",))).startswith(
        "the weights of my-model lack 1 tensor that its config describes (encoder.layer.0); ")


def test_too_little_memory_names_the_sizes_and_a_smaller_dtype(tiny_model_dir, monkeypatch):
    import psutil

    import analysis.loader as loader

    monkeypatch.setattr(loader, "estimate_params", lambda *a, **k: 2**30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=3 * 2**30))
    folder = str(tiny_model_dir("bert"))
    assert _message(load_model, folder, device="cpu", error=ConsentRequiredError) == (
        "this model needs about 4.0 GiB in float32 but only 3.0 GiB are free; "
        "choose dtype bfloat16 or float16, or close other programs")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=2**30))
    assert _message(load_model, folder, dtype="bfloat16", device="cpu", error=ConsentRequiredError) == (
        "this model needs about 2.0 GiB in bfloat16 but only 1.0 GiB are free; "
        "choose dtype a smaller model, or close other programs")


def test_a_large_model_loads_with_a_note_of_its_share_of_memory(monkeypatch):
    import psutil
    import torch

    import analysis.loader as loader
    from analysis.loader import check_memory

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=6 * 2**30))
    monkeypatch.setattr(loader, "estimate_params", lambda *a, **k: 2**30)
    need, warn = check_memory(None, "encoder", torch.float32, "cpu")
    assert need == 4 * 2**30
    assert warn == "this model takes about 4.0 GiB of the 6.0 GiB free memory"


def test_sdpa_attention_left_on_is_refused_by_name(tiny_model_dir, monkeypatch):
    import analysis.loader as loader

    read = loader._read_weights

    def sdpa(*args, **kwargs):
        model, missing = read(*args, **kwargs)
        model.config._attn_implementation = "sdpa"
        return model, missing

    monkeypatch.setattr(loader, "_read_weights", sdpa)
    msg = _message(load_model, str(tiny_model_dir("bert")), device="cpu", error=NoAttentionError)
    assert msg == ("BertModel runs with 'sdpa' attention, which returns no attention maps; it cannot be shown")


@pytest.mark.parametrize(("config", "shown"), [
    (SimpleNamespace(model_type="fnet", num_attention_heads=4),
     "(fnet): FNet mixes tokens with Fourier transforms instead of attention, so there are no attention maps to show"),
    (SimpleNamespace(model_type="big_bird", attention_type="block_sparse", num_attention_heads=4),
     "(big_bird): BigBird's block-sparse attention attends to blocks of neighbouring, global and random tokens and "
     "returns no map over the whole sentence (set \"attention_type\": \"original_full\" in its config.json to see "
     "full attention)"),
    (SimpleNamespace(), "(unknown type): its config names no attention heads, so it has no attention maps to show"),
])
def test_an_architecture_without_one_map_per_layer_is_refused_with_its_reason(config, shown):
    from analysis.loader import check_attention

    assert _message(check_attention, "my-model", config, error=NoAttentionError) == (
        f"Headmap cannot show my-model {shown}; it shows models whose every layer's attention is one query × key "
        "map over the tokens (BERT, GPT-2, Llama, BART, T5, Marian, …)")


def test_an_unknown_bundled_name_lists_the_bundled_models():
    from analysis.bundled import BUNDLED

    assert set(BUNDLED) == {"minilm", "smollm2", "translator-en-fr", "translator-en-ko"}
    msg = _message(load_model, "bundled:nope", error=ModelLoadError)
    assert msg == ("there is no bundled model called 'nope'; choose one of: bundled:minilm, bundled:smollm2, "
                   "bundled:translator-en-fr, bundled:translator-en-ko")


def test_a_gguf_that_cannot_be_dequantized_quotes_the_first_200_characters(tmp_path, monkeypatch):
    import transformers

    def fail(*args, **kwargs):
        raise ValueError("z" * 190 + "0123456789" + "cut off")

    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    assert _message(load_model, str(gguf), device="cpu", error=ModelLoadError) == (
        f"could not dequantize tiny.gguf (ValueError: {'z' * 190}0123456789); "
        "the file may be damaged or use a quantization transformers cannot read")
