"""analysis.capture: stacks named and shaped like transformers', equal to its eager maps, immutable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.capture import capture, decoder_start_id, stack_attentions
from analysis.errors import CaptureError, InputError
from analysis.result import Capture
from analysis.tasks import TaskState
from tests.tiny_models import (
    BASE_ARCHS,
    CLS_LABELS,
    DECODERS,
    ENCODERS,
    HEADS,
    KIND,
    LAYERS,
    SEQ2SEQ,
)

TEXT = "I like this course"
TARGET = "J'aime ce cours"
LONG = "The students are reading and writing and thinking about attention heads " * 12
SEQ2SEQ_STACKS = ("encoder_attentions", "decoder_attentions", "cross_attentions")


def _direct(lm, text, target=None, decoder_input_ids=None):
    """transformers' own eager maps: the model called directly, without Headmap in between."""
    import torch

    enc = lm.tokenizer(text, return_tensors="pt")
    kw = {}
    if target is not None:
        kw["labels"] = lm.tokenizer(text_target=target, return_tensors="pt")["input_ids"]
    if decoder_input_ids is not None:
        kw["decoder_input_ids"] = torch.tensor([decoder_input_ids])
    with torch.inference_mode():
        out = lm.model(**enc, **kw, output_attentions=True)
    return enc, kw, out


def _assert_equal_to_transformers(cap, out, names):
    for name in names:
        ref = getattr(out, name)
        arr = cap.stacks[name]
        assert len(ref) == arr.shape[0]
        for layer, a in enumerate(ref):
            np.testing.assert_allclose(arr[layer], a[0].float().numpy(), rtol=0, atol=1e-6,
                                       err_msg=f"{name} layer {layer}")


# --------------------------------------------------------------------------------------------
# every architecture: names, shapes, dtype, rows, immutability, equality with transformers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_capture_matches_transformers(arch, loaded):
    lm = loaded(arch)
    seq2seq = KIND[arch] == "seq2seq"
    cap = capture(lm, TEXT, target=TARGET if seq2seq else None)
    enc, kw, out = _direct(lm, TEXT, TARGET if seq2seq else None)

    assert isinstance(cap, Capture)
    assert cap.kind == KIND[arch]
    assert cap.architecture == type(lm.model).__name__
    assert cap.model == lm.reference
    names = SEQ2SEQ_STACKS if seq2seq else ("attentions",)
    assert tuple(cap.stacks) == names and cap.stack_names == names

    ids = enc["input_ids"][0].tolist()
    assert cap.source.ids.tolist() == ids
    s = len(ids)
    if seq2seq:
        labels = kw["labels"][0].tolist()
        t = len(labels)
        assert cap.stacks["encoder_attentions"].shape == (LAYERS, HEADS, s, s)
        assert cap.stacks["decoder_attentions"].shape == (LAYERS, HEADS, t, t)
        assert cap.stacks["cross_attentions"].shape == (LAYERS, HEADS, t, s)
        assert (cap.n_layers("encoder"), cap.n_heads("cross")) == (LAYERS, HEADS)
    else:
        assert cap.stacks["attentions"].shape == (LAYERS, HEADS, s, s)
        assert cap.shape() == (lm.summary.stacks[0].layers, lm.summary.stacks[0].heads, s, s)

    for name, arr in cap.stacks.items():
        assert arr.dtype == np.float32, name
        np.testing.assert_allclose(arr.sum(-1), 1.0, atol=1e-3)
        assert np.all(arr >= 0)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0, 0, 0, 0] = 0.5
    _assert_equal_to_transformers(cap, out, names)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "bart"])
def test_capture_is_frozen(arch, loaded):
    lm = loaded(arch)
    cap = capture(lm, TEXT, target=TARGET if KIND[arch] == "seq2seq" else None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.text = "something else"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.stacks = {}
    with pytest.raises(TypeError):
        cap.stacks["attentions"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError):
        cap.source.ids[0] = 7
    with pytest.raises(ValueError):
        cap.source.special[0] = True
    # a float16 copy leaves the original untouched
    before = cap.attention().copy()
    half = cap.with_stacks_dtype(np.float16)
    assert half is not cap and half.attention().dtype == np.float32
    np.testing.assert_array_equal(cap.attention(), before)
    assert cap.stacks[cap.stack_names[0]].dtype == np.float32


@pytest.mark.parametrize("arch", DECODERS)
def test_decoder_maps_are_causal(arch, loaded):
    cap = capture(loaded(arch), "The students are reading and writing")
    att = cap.attention()
    assert cap.is_causal()
    assert np.all(np.triu(att, k=1) == 0.0)  # exactly 0, not just small
    assert np.all(np.diagonal(att, axis1=2, axis2=3) > 0)
    np.testing.assert_allclose(att[:, :, 0, 0], 1.0, atol=1e-6)  # the first token sees only itself


@pytest.mark.parametrize("arch", ENCODERS)
def test_encoder_maps_are_not_causal(arch, loaded):
    cap = capture(loaded(arch), TEXT)
    assert not cap.is_causal()
    assert np.all(np.triu(cap.attention(), k=1).sum(axis=(-1, -2)) > 0)


# --------------------------------------------------------------------------------------------
# seq2seq: teacher forcing and generation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", SEQ2SEQ)
def test_seq2seq_typed_target_rows(arch, loaded):
    lm = loaded(arch)
    cap = capture(lm, TEXT, target=TARGET)
    labels = lm.tokenizer(text_target=TARGET)["input_ids"]
    start = decoder_start_id(lm)
    assert start == lm.config.decoder_start_token_id
    assert cap.decoder_inputs.ids.tolist() == [start] + labels[:-1]
    assert cap.outputs.ids.tolist() == labels
    assert labels[-1] == lm.tokenizer.eos_token_id  # "$A </s>"
    assert cap.target == TARGET and not cap.generated
    assert cap.output_text == lm.tokenizer.decode(labels, skip_special_tokens=True)
    assert cap.is_causal("decoder") and not cap.is_causal("cross") and not cap.is_causal("encoder")
    assert np.all(np.triu(cap.attention("decoder"), k=1) == 0.0)
    # query/key tokens and row labels of each stack
    assert cap.query_tokens("cross") is cap.decoder_inputs and cap.key_tokens("cross") is cap.source
    assert cap.query_tokens("encoder") is cap.source
    assert cap.row_labels("decoder", "output") == list(cap.outputs.display)
    assert cap.row_labels("decoder", "input") == list(cap.decoder_inputs.display)
    both = cap.row_labels("cross", "both")
    assert both[0] == f"{cap.decoder_inputs.display[0]} → {cap.outputs.display[0]}"


@pytest.mark.parametrize("arch", SEQ2SEQ)
def test_seq2seq_generate_uses_the_generated_tokens(arch, loaded):
    import torch

    lm = loaded(arch)
    n = 6
    cap = capture(lm, TEXT, generate=True, max_new_tokens=n)
    enc = lm.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        gen = lm.model.generate(**enc, max_new_tokens=n, num_beams=1, do_sample=False)[0].tolist()
    assert cap.generated
    assert cap.decoder_inputs.ids.tolist() == gen[:-1]
    assert cap.outputs.ids.tolist() == gen[1:]
    assert cap.output_text == lm.tokenizer.decode(gen[1:], skip_special_tokens=True)
    assert cap.target == cap.output_text
    assert 1 <= len(cap.outputs) <= n
    # the maps are one teacher-forced pass over the generated tokens: full matrices
    _, _, out = _direct(lm, TEXT, decoder_input_ids=gen[:-1])
    _assert_equal_to_transformers(cap, out, SEQ2SEQ_STACKS)


def test_seq2seq_beam_search(loaded):
    import torch

    lm = loaded("marian")
    cap = capture(lm, TEXT, generate=True, max_new_tokens=5, num_beams=3)
    enc = lm.tokenizer(TEXT, return_tensors="pt")
    with torch.inference_mode():
        gen = lm.model.generate(**enc, max_new_tokens=5, num_beams=3, do_sample=False, early_stopping=True)[0].tolist()
    pad = lm.tokenizer.pad_token_id
    while len(gen) > 2 and gen[-1] == pad:
        gen.pop()
    assert cap.decoder_inputs.ids.tolist() == gen[:-1]
    assert cap.outputs.ids.tolist() == gen[1:]


def test_seq2seq_empty_target(loaded):
    lm = loaded("marian")
    with pytest.raises(InputError, match="target is empty"):
        capture(lm, TEXT, target="   ")
    # an empty target with generate: translate instead
    cap = capture(lm, TEXT, target="", generate=True, max_new_tokens=3)
    assert cap.generated


# --------------------------------------------------------------------------------------------
# decoder continuation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", DECODERS)
def test_decoder_continuation(arch, loaded):
    import torch

    lm = loaded(arch)
    n = 5
    prompt = lm.tokenizer(TEXT)["input_ids"]
    cap = capture(lm, TEXT, generate=True, max_new_tokens=n)
    with torch.inference_mode():
        enc = lm.tokenizer(TEXT, return_tensors="pt")
        gen = lm.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
    gen = gen[0].tolist()
    assert len(gen) == len(prompt) + n  # the seeded fixture does not stop early
    assert cap.prompt_length == len(prompt)
    assert len(cap.source) == len(prompt) + n
    assert cap.source.ids.tolist() == gen
    assert cap.generated
    assert cap.output_text == lm.tokenizer.decode(gen[len(prompt):], skip_special_tokens=True)
    assert cap.shape() == (LAYERS, HEADS, len(gen), len(gen))
    assert len(cap.source.display) == len(gen) and len(cap.source.word_ids) == len(gen)
    # continuation tokens get word ids after the prompt's words
    assert max(cap.source.word_ids[len(prompt):]) >= max(cap.source.word_ids[:len(prompt)])
    # per-step predictions for each continuation token
    steps = dict(cap.prediction.per_position)
    assert sorted(steps) == list(range(len(prompt), len(gen)))


def test_decoder_continuation_too_long(loaded):
    with pytest.raises(InputError, match="cannot continue 64 tokens"):
        capture(loaded("gpt2"), TEXT, generate=True, max_new_tokens=64)


# --------------------------------------------------------------------------------------------
# truncation and bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "t5"])
def test_truncation_to_the_models_positions(arch, loaded):
    lm = loaded(arch)
    kw = {"target": TARGET} if KIND[arch] == "seq2seq" else {}
    cap = capture(lm, LONG, **kw)
    assert cap.truncated
    assert len(cap.source) == lm.summary.max_positions == 64
    assert any("truncated to 64 tokens" in n for n in cap.notes)
    assert LONG.startswith(cap.text) and len(cap.text) < len(LONG)
    assert cap.attention().shape[-1] == 64
    short = capture(lm, TEXT, **kw)
    assert not short.truncated and short.notes == () and short.text == TEXT


def test_max_tokens_option(loaded):
    lm = loaded("bert")
    cap = capture(lm, LONG, max_tokens=10)
    assert cap.truncated and len(cap.source) == 10
    assert cap.source.raw[-1] == "[SEP]"  # the post-processor's specials survive truncation
    assert any("truncated to 10 tokens" in n for n in cap.notes)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
@pytest.mark.parametrize("arch", ["bert", "gpt2", "marian"])
def test_empty_text(arch, text, loaded):
    with pytest.raises(InputError, match="the text is empty"):
        capture(loaded(arch), text)


@pytest.mark.parametrize(("arch", "kind"), [("bert", "an encoder"), ("gpt2", "a decoder")])
def test_target_for_a_non_seq2seq_model(arch, kind, loaded):
    with pytest.raises(InputError) as info:
        capture(loaded(arch), TEXT, target=TARGET)
    assert str(info.value) == f"a target only applies to seq2seq models; this is {kind} model — drop the target"


def test_float16_storage_halves_memory(loaded):
    lm = loaded("bart")
    full = capture(lm, TEXT, target=TARGET)
    half = capture(lm, TEXT, target=TARGET, store_dtype=np.float16)
    assert all(a.dtype == np.float16 for a in half.stacks.values())
    assert half.attention_nbytes * 2 == full.attention_nbytes
    assert full.attention_nbytes == sum(4 * np.prod(a.shape) for a in full.stacks.values())
    for name in full.stack_names:
        up = half.attention(name)
        assert up.dtype == np.float32
        np.testing.assert_allclose(up, full.attention(name), atol=1e-3)
    assert full.with_stacks_dtype(np.float16).attention_nbytes == half.attention_nbytes


def test_invalid_rows_are_refused():
    import torch

    good = torch.softmax(torch.randn(1, 4, 5, 5), -1)
    assert stack_attentions((good, good), "attentions", "M", (2, 4)).shape == (2, 4, 5, 5)
    with pytest.raises(CaptureError, match="rows do not sum to 1"):
        stack_attentions((good, good * 0.5), "attentions", "M", (2, 4))
    with pytest.raises(CaptureError, match="rows do not sum to 1"):
        stack_attentions((good.to(torch.bfloat16) * 0.9,), "attentions", "M", (1, 4))
    # bfloat16 rounding is not an invalid map
    assert stack_attentions((good.to(torch.bfloat16),), "attentions", "M", (1, 4)).dtype == np.float32
    with pytest.raises(CaptureError, match="3 layers × 4 heads but its config describes 2 × 4"):
        stack_attentions((good, good, good), "attentions", "M", (2, 4))
    with pytest.raises(CaptureError, match="layer 1 has shape"):
        stack_attentions((good, good[:, :, :4]), "attentions", "M", (2, 4))


def test_progress_and_cancel(loaded):
    from analysis.errors import Cancelled

    stages = []
    capture(loaded("bert"), TEXT, task=TaskState(lambda st, f, m: stages.append(st)))
    assert "run" in stages
    with pytest.raises(Cancelled):
        capture(loaded("bert"), TEXT, task=TaskState(cancel=lambda: True))


# --------------------------------------------------------------------------------------------
# predictions from the same forward pass
# --------------------------------------------------------------------------------------------
def _assert_topk(items, k=5):
    probs = [p for _, p in items]
    assert len(items) == k
    assert all(0 < p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-6
    assert probs == sorted(probs, reverse=True)
    assert all(isinstance(label, str) and label for label, _ in items)


@pytest.mark.parametrize("arch", DECODERS)
def test_decoder_next_token_prediction(arch, loaded):
    import torch

    lm = loaded(arch)
    cap = capture(lm, TEXT)
    pred = cap.prediction
    assert pred.task == "next_token"
    _assert_topk(pred.items)
    _, _, out = _direct(lm, TEXT)
    probs = torch.softmax(out.logits[0, -1].float(), -1)
    top = torch.topk(probs, 5)
    np.testing.assert_allclose([p for _, p in pred.items], top.values.numpy(), atol=1e-6)


@pytest.mark.parametrize("arch", SEQ2SEQ)
def test_seq2seq_per_step_prediction(arch, loaded):
    import torch

    lm = loaded(arch)
    cap = capture(lm, TEXT, target=TARGET)
    pred = cap.prediction
    assert pred.task == "translation"
    assert [t for t, _ in pred.per_position] == list(range(len(cap.outputs)))
    for _, items in pred.per_position:
        _assert_topk(items)
    assert pred.items == pred.per_position[0][1]
    _, _, out = _direct(lm, TEXT, TARGET)
    last = torch.softmax(out.logits[0, -1].float(), -1).max().item()
    assert pred.per_position[-1][1][0][1] == pytest.approx(last, abs=1e-6)


def test_masked_lm_prediction(loaded):
    import torch

    lm = loaded("bert-mlm")
    text = "I like this [MASK] very much"
    cap = capture(lm, text)
    pred = cap.prediction
    mask_pos = cap.source.raw.index("[MASK]")
    assert pred.task == "masked_lm"
    assert pred.text == ""  # a masked LM writes no continuation (the session file stores a string)
    assert [i for i, _ in pred.per_position] == [mask_pos]
    _assert_topk(pred.items)
    _, _, out = _direct(lm, text)
    top = torch.topk(torch.softmax(out.logits[0, mask_pos], -1), 5)
    np.testing.assert_allclose([p for _, p in pred.items], top.values.numpy(), atol=1e-6)
    assert capture(lm, TEXT).prediction.per_position == ()


def test_classification_prediction(loaded):
    import torch

    lm = loaded("bert-cls")
    cap = capture(lm, TEXT)
    pred = cap.prediction
    assert pred.task == "classification"
    assert {label for label, _ in pred.items} == set(CLS_LABELS.values())
    assert sum(p for _, p in pred.items) == pytest.approx(1.0, abs=1e-5)
    _, _, out = _direct(lm, TEXT)
    probs = torch.softmax(out.logits[0], -1).tolist()
    want = sorted(((CLS_LABELS[i], p) for i, p in enumerate(probs)), key=lambda x: -x[1])
    assert [label for label, _ in pred.items] == [label for label, _ in want]
    np.testing.assert_allclose([p for _, p in pred.items], [p for _, p in want], atol=1e-6)


def test_bare_encoder_has_no_prediction(loaded):
    assert capture(loaded("bert"), TEXT).prediction.task == "none"


# --------------------------------------------------------------------------------------------
# on a GPU (skipped on machines without CUDA)
# --------------------------------------------------------------------------------------------
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("arch", ["bert", "gpt2", "bart", "t5"])
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_gpu_capture_matches_the_cpu(arch, device, tiny_model_dir, loaded):
    from analysis.loader import load_model

    lm = load_model(str(tiny_model_dir(arch)), device=device)
    assert lm.device.type == "cuda"
    assert "cuda" in lm.summary.device or lm.summary.device.startswith("auto (")
    kw = {"target": TARGET} if KIND[arch] == "seq2seq" else {}
    cap = capture(lm, TEXT, **kw)
    ref = capture(loaded(arch), TEXT, **kw)
    assert cap.stack_names == ref.stack_names
    assert cap.source.ids.tolist() == ref.source.ids.tolist()
    for name in cap.stack_names:
        assert cap.stacks[name].dtype == np.float32
        np.testing.assert_allclose(cap.stacks[name], ref.stacks[name], rtol=0, atol=1e-4, err_msg=name)
    if KIND[arch] == "decoder":
        assert np.all(np.triu(cap.attention(), k=1) == 0.0)
        gen = capture(lm, TEXT, generate=True, max_new_tokens=4)
        assert len(gen.source) == len(ref.source) + 4
    if KIND[arch] == "seq2seq":
        gen = capture(lm, TEXT, generate=True, max_new_tokens=4)
        assert gen.generated and len(gen.outputs) >= 1


@needs_cuda
def test_gpu_auto_dtype_follows_a_half_precision_config(tiny_model_dir, tmp_path):
    import json
    import shutil

    from analysis.loader import load_model

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(cfg))
    lm = load_model(str(folder), device="cuda")
    assert lm.summary.dtype == "bfloat16"
    cap = capture(lm, LONG)  # 64-token rows of bfloat16 weights: still accepted as valid maps
    assert cap.attention().dtype == np.float32
    np.testing.assert_allclose(cap.attention().sum(-1), 1.0, atol=1e-2)


@needs_cuda
def test_gpu_memory_guard(tiny_model_dir, monkeypatch):
    from types import SimpleNamespace

    import psutil
    import torch

    from analysis.errors import ConsentRequiredError
    from analysis.loader import load_model

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1000))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (1000, 10**10))
    with pytest.raises(ConsentRequiredError, match="GiB are free"):
        load_model(str(tiny_model_dir("bert")), device="cuda")


@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_an_in_memory_capture_that_cannot_fit_is_refused_before_the_model_runs(arch, loaded, monkeypatch):
    """transformers' float32 maps plus the capture's copy, against the memory available: a capture
    held in memory (the Python API's) that would not fit says so instead of being killed."""
    import analysis.capture as capture_mod

    lm = loaded(arch)
    cap = capture(lm, TEXT, store=False)
    cells = sum(int(np.prod(a.shape)) for a in cap.stacks.values())
    runs = []
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: runs.append(1))  # must not be reached
    monkeypatch.setattr(capture_mod, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"held in memory need about .* GB .* available; lower max_tokens"):
        capture(lm, TEXT, store=False)
    assert not runs
    monkeypatch.undo()
    if arch == "llama":  # a decoder's maps are known before it runs: float32 + float32 per cell
        monkeypatch.setattr(capture_mod, "available_memory", lambda: cells * 8 - 1)
        with pytest.raises(InputError, match="held in memory"):
            capture(lm, TEXT, store=False)
        monkeypatch.setattr(capture_mod, "available_memory", lambda: cells * 8)  # exactly enough
        assert capture(lm, TEXT, store=False).stacks.keys() == cap.stacks.keys()
        assert capture(lm, TEXT, store=False, store_dtype=np.float16).stacks.keys() == cap.stacks.keys()


def test_available_memory_is_read_from_the_system():
    from analysis.capture import available_memory

    have = available_memory()
    assert have is None or have > 0


# -- what the errors say, word for word ---------------------------------------------------
def _message(call, *args, error, **kwargs) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    return str(info.value)


def _maps(*shape, value=None):
    import torch

    if value is not None:
        return torch.full(shape, value)
    return torch.softmax(torch.randn(*shape), -1)


def test_an_empty_text_asks_for_a_sentence(loaded):
    assert _message(capture, loaded("bert"), " \n", error=InputError) == "the text is empty; type a sentence to run"


def test_a_token_id_beyond_the_vocabulary_names_the_id_its_token_and_the_fix():
    from types import SimpleNamespace

    from analysis.capture import check_ids

    def no_embeddings():
        raise AttributeError("no accessor")

    lm = SimpleNamespace(
        model=SimpleNamespace(get_input_embeddings=no_embeddings),
        config=SimpleNamespace(vocab_size=10, decoder_vocab_size=20),
        tokenizer=SimpleNamespace(convert_ids_to_tokens=lambda i: f"tok{i}"),
    )
    assert _message(check_ids, lm, [3, 12, 30], "the text", error=CaptureError) == (
        "the tokenizer turned the text into id 12 ('tok12'), but the model's vocabulary has only 10 entries, "
        "so this tokenizer does not belong to these weights; save the model's own tokenizer into its folder "
        "(tokenizer.save_pretrained)")
    # a negative id has no token to show; a seq2seq decoder has its own vocabulary
    assert _message(check_ids, lm, [3, 12, -1, 30], "the target", decoder=True, error=CaptureError) == (
        "the tokenizer turned the target into id -1, but the model's vocabulary has only 20 entries, "
        "so this tokenizer does not belong to these weights; save the model's own tokenizer into its folder "
        "(tokenizer.save_pretrained)")


def test_no_attention_maps_says_the_architecture_exposes_none():
    from analysis.errors import NoAttentionError

    assert _message(stack_attentions, None, "cross_attentions", "FancyModel", (2, 4), error=NoAttentionError) == (
        "FancyModel returned no cross_attentions; this architecture does not expose attention maps, "
        "so Headmap cannot show it")


def test_maps_that_are_not_one_per_layer_name_their_shape():
    from analysis.errors import NoAttentionError

    maps = _maps(4, 5, 5)
    assert _message(stack_attentions, (maps, maps), "attentions", "M", (2, 4), error=NoAttentionError) == (
        "M returned attentions of shape (4, 5, 5), not one [head, query, key] map per layer; its attention is not "
        "a query × key map over the tokens, so Headmap cannot show it")


def test_maps_against_the_config_name_both_counts():
    good = _maps(1, 4, 5, 5)
    assert _message(stack_attentions, (good, good, good), "attentions", "M", (2, 4), error=CaptureError) == (
        "M returned attentions of 3 layers × 4 heads but its config describes 2 × 4; its attention is not one map "
        "per configured layer and head (or the config does not belong to the model), so Headmap cannot show it")


def test_a_layer_of_another_shape_names_both_shapes():
    good = _maps(1, 4, 5, 5)
    assert _message(stack_attentions, (good, good[:, :, :, :4]), "attentions", "M", (2, 4), error=CaptureError) == (
        "attentions layer 1 has shape (4, 5, 4), expected (4, 5, 5)")


def test_rows_that_do_not_sum_to_one_say_how_far_off_and_why():
    import torch

    good = _maps(1, 4, 5, 5)
    assert _message(stack_attentions, (good, _maps(1, 4, 5, 5, value=0.1234)), "attentions", "M", (2, 4),
                    error=CaptureError) == (
        "attentions layer 1: attention rows do not sum to 1 (off by 0.38); M's attention weights are not one softmax "
        "over the tokens per query, so Headmap cannot show them")
    half = _maps(1, 4, 5, 5, value=0.25).to(torch.bfloat16)
    assert _message(stack_attentions, (half,), "attentions", "M", (1, 4), error=CaptureError) == (
        "attentions layer 0: attention rows do not sum to 1 (off by 0.25); try dtype float32")


def test_maps_that_cannot_fit_in_memory_name_both_sizes_and_the_ways_out(monkeypatch):
    import analysis.capture as capture_mod

    monkeypatch.setattr(capture_mod, "available_memory", lambda: 3 * 10**9)
    shapes = [(10, 10, 5000, 5000), (10, 10, 5000, 4000)]
    assert _message(capture_mod.check_memory, shapes, error=InputError) == (
        "at 5000 tokens the attention maps held in memory need about 36.0 GB (transformers' float32 maps and the "
        "capture's copy) but 3.0 GB is available; lower max_tokens, or run it in the window or with the CLI "
        "(python main.py), which keep long captures on disk (store=True in analysis.capture.capture)")


def test_a_continuation_past_the_models_length_asks_for_fewer(loaded):
    assert _message(capture, loaded("gpt2"), TEXT, generate=True, max_new_tokens=70, error=InputError) == (
        "cannot continue 70 tokens: this model takes at most 64 tokens; ask for fewer")


def test_a_seq2seq_model_without_a_start_token_says_where_to_set_one():
    from types import SimpleNamespace

    lm = SimpleNamespace(
        model=SimpleNamespace(generation_config=None),
        config=SimpleNamespace(decoder_start_token_id=None, pad_token_id=None, bos_token_id=None),
        tokenizer=SimpleNamespace(pad_token_id=None),
    )
    assert _message(decoder_start_id, lm, error=CaptureError) == (
        "this seq2seq model has no decoder_start_token_id in its config; set one in config.json")


def test_an_unknown_target_language_gives_examples_of_language_codes(loaded):
    assert _message(capture, loaded("marian"), TEXT, generate=True, target_lang="klingon", error=InputError) == (
        "this tokenizer has no language token for 'klingon'; use the model's own code "
        "(e.g. fra_Latn for NLLB, fr for M2M100)")


def test_an_empty_target_asks_for_one_or_a_translation(loaded):
    assert _message(capture, loaded("marian"), TEXT, target=" ", error=InputError) == (
        "the target is empty; type a target sentence or choose Translate")


def test_a_generation_of_nothing_asks_for_another_sentence(loaded, monkeypatch):
    import torch

    lm = loaded("marian")
    start = decoder_start_id(lm)
    monkeypatch.setattr(lm.model, "generate", lambda *a, **k: torch.tensor([[start]]))
    assert _message(capture, lm, TEXT, generate=True, error=CaptureError) == (
        "the model generated nothing; try another sentence")


def test_maps_over_other_tokens_than_the_text_are_refused_by_name():
    from analysis.capture import _check_lengths

    stacks = {"attentions": np.zeros((1, 1, 3, 3), dtype=np.float32)}
    assert _message(_check_lengths, stacks, [0, 0, 0, 0], None, error=CaptureError) == (
        "attentions has query×key (3, 3) but the tokens say (4, 4); the model's attention is not one map over all "
        "the tokens (windowed, chunked or pooled), so Headmap refuses to show it")
