"""analysis.masks: the padding experiment and token masking, checked against transformers itself.

What must hold (and can fail):

* with the attention mask, pad key columns are exactly 0.0 for every real query row (eager softmax
  of ``finfo.min`` underflows to 0), and cross-attention to encoder pads too;
* the causal upper triangle of decoder maps is exactly 0.0;
* with the mask, the sentence's attention and outputs in the padded batch equal the unbatched run up
  to float32 noise (≤ 1e-5), padded left or right; without the mask they clearly differ (> 1e-3);
* the module's numbers equal numbers recomputed here with plain transformers calls and the
  tokenizer's own padding;
* token masking hides exactly the chosen key columns and leaves positions alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.aggregate import causal_mask
from analysis.errors import InputError
from analysis.masks import (
    DEFAULT_PAIR,
    MaskingReport,
    PaddingReport,
    padding_experiment,
    token_masking,
    write_mask_report,
)
from analysis.tasks import TaskState
from tests.tiny_models import KIND

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"
PAIR = "The students are reading and writing and thinking about attention"
TARGET = "J'aime ce cours"
BUNDLED_PAIR = (
    "The students in this course are reading a long and interesting book about attention."
)
SHORT_PAIR = "The students are reading a long book."  # SmolLM2: 8 tokens, fewer FLOPs on a CPU
TRANSLATOR = REPO_ROOT / "analysis" / "bundled_models" / "translator-en-fr" / "config.json"

#: (arch, side) where the masked padded run must match the run alone. BART and Marian are left out
#: on the left: their encoders take no position ids, so left padding shifts absolute positions
#: (tested separately); T5's positions are relative, so it matches on both sides.
MATCHING = [
    (a, s)
    for a in ("bert", "roberta", "distilbert", "gpt2", "llama", "t5")
    for s in ("left", "right")
]
MATCHING += [("bart", "right"), ("marian", "right")]
NOISE = 1e-5
CLEAR = 1e-3


def _target(arch: str) -> str | None:
    return TARGET if KIND[arch] == "seq2seq" else None


@pytest.fixture(scope="module")
def padded(loaded):
    """Factory ``padded(arch, side) -> PaddingReport`` on the tiny models, cached for the module."""
    cache: dict[tuple[str, str], PaddingReport] = {}

    def get(arch: str, side: str) -> PaddingReport:
        if (arch, side) not in cache:
            cache[(arch, side)] = padding_experiment(
                loaded(arch), TEXT, PAIR, padding_side=side, target=_target(arch)
            )
        return cache[(arch, side)]

    return get


# --------------------------------------------------------------------------------------------
# an independent implementation: the tokenizer's own padding and plain model calls
# --------------------------------------------------------------------------------------------
def _independent(
    lm, text: str, pair: str, side: str, target: str | None = None
) -> dict[str, float]:
    """Max |batch − alone| of every stack on the sentence's real positions, masked and unmasked."""
    import torch

    tok = copy.deepcopy(lm.tokenizer)  # never touch the shared tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    alone = tok(text, return_tensors="pt")["input_ids"]
    batch = tok([text, pair], padding=True, padding_side=side, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask[0].bool()
    assert int(real.sum()) == alone.shape[1] < ids.shape[1]
    kw: dict = {"output_attentions": True}
    extra: dict = {}
    names = ("attentions",)
    if lm.kind == "seq2seq":
        labels = tok(text_target=target)["input_ids"]
        start = lm.model.generation_config.decoder_start_token_id
        if start is None:
            start = lm.config.decoder_start_token_id
        dec = [start] + labels[:-1]
        kw["decoder_input_ids"] = torch.tensor([dec])
        extra["decoder_input_ids"] = torch.tensor([dec, dec])
        names = ("encoder_attentions", "decoder_attentions", "cross_attentions")
    elif side == "left":  # BERT and Llama alike: real tokens keep their unbatched positions
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if lm.kind != "encoder":
        kw["use_cache"] = False
    with torch.no_grad():
        out_a = lm.model(input_ids=alone, **kw)
        kw.pop("decoder_input_ids", None)
        out_m = lm.model(input_ids=ids, attention_mask=mask, **extra, **kw)
        extra.pop("position_ids", None)
        out_u = lm.model(input_ids=ids, **extra, **kw)  # no mask at all: pads look like tokens
    res = {"masked": 0.0, "unmasked": 0.0}
    for name in names:
        for a_l, m_l, u_l in zip(
            getattr(out_a, name), getattr(out_m, name), getattr(out_u, name), strict=True
        ):
            for key, b_l in (("masked", m_l), ("unmasked", u_l)):
                b = b_l[0]
                if name != "decoder_attentions":
                    b = b[..., real]
                if name in ("attentions", "encoder_attentions"):
                    b = b[:, real]
                res[key] = max(res[key], float((b - a_l[0]).abs().max()))
    return res


# --------------------------------------------------------------------------------------------
# the padding experiment on the tiny models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch", ["bert", "roberta", "distilbert", "gpt2", "llama", "bart", "t5", "marian"]
)
@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_columns_are_exactly_zero_with_the_mask(arch, side, padded):
    r = padded(arch, side)
    real, pads = list(r.real_positions), list(r.pad_positions)
    assert len(pads) > 0 and len(real) + len(pads) == len(r.tokens) == r.attention_mask.shape[1]
    assert (
        r.attention_mask[0, pads].sum() == 0
        and r.attention_mask[0, real].all()
        and r.attention_mask[1].all()
    )
    if side == "left":
        assert pads == list(range(len(pads)))
    else:
        assert real == list(range(len(real)))
    for name in r.stack_names:
        m = r.masked[name]
        if name in ("attentions", "encoder_attentions"):
            block = m[:, :, real][:, :, :, pads]
            assert np.all(block == 0.0), f"{name}: a real token attends to a pad"
            # without the mask the same cells carry weight
            assert r.unmasked[name][:, :, real][:, :, :, pads].max() > CLEAR or (
                KIND[arch] == "decoder" and side == "right"
            )
        if name == "cross_attentions":
            assert np.all(m[..., pads] == 0.0), "cross-attention reaches an encoder pad"
            assert r.unmasked[name][..., pads].max() > CLEAR
    assert r.pad_attention_max == 0.0
    if KIND[arch] == "seq2seq":
        assert r.cross_pad_attention_max == 0.0
    else:
        assert r.cross_pad_attention_max is None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "t5"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_causal_upper_triangle_is_exactly_zero(arch, side, padded):
    r = padded(arch, side)
    name = "decoder_attentions" if KIND[arch] == "seq2seq" else "attentions"
    a = r.alone[name]
    assert np.all(a[..., causal_mask(a.shape[2], a.shape[3])] == 0.0)
    assert np.all(r.delta_masked[name][..., causal_mask(a.shape[2], a.shape[3])] == 0.0)
    for run in (r.masked, r.unmasked):
        m = run[name]
        if name == "attentions":
            real = list(r.real_positions)
            m = m[:, :, real][:, :, :, real]
        assert np.all(m[..., causal_mask(m.shape[2], m.shape[3])] == 0.0)


@pytest.mark.parametrize(("arch", "side"), MATCHING)
def test_masked_batch_matches_the_sentence_alone(arch, side, padded):
    r = padded(arch, side)
    s = len(r.real_positions)
    for name in r.stack_names:
        assert r.delta_masked[name].shape == r.alone[name].shape
        assert r.delta_unmasked[name].shape == r.alone[name].shape
        assert r.masked[name].dtype == np.float32
        if name in ("attentions", "encoder_attentions"):
            assert r.alone[name].shape[2:] == (s, s)
            assert r.masked[name].shape[2:] == (len(r.tokens), len(r.tokens))
        assert float(np.abs(r.delta_masked[name]).max()) == pytest.approx(
            r.stack_diffs[name]["masked"]
        )
    assert r.masked_attention_max_abs_diff <= NOISE
    assert r.masked_output_max_abs_diff <= NOISE
    assert r.masked_attention_max_abs_diff == max(
        float(np.abs(d).max()) for d in r.delta_masked.values()
    )
    if r.masked_logits_max_abs_diff is not None:
        assert r.masked_logits_max_abs_diff <= NOISE
        assert r.prediction_changed_masked is False
        assert r.prediction_masked == r.prediction_alone


@pytest.mark.parametrize(("arch", "side"), MATCHING)
def test_without_the_mask_the_batch_changes_the_sentence(arch, side, padded):
    r = padded(arch, side)
    if KIND[arch] == "decoder" and side == "right":
        # the causal mask alone already hides trailing pads from every real token
        assert r.unmasked_attention_max_abs_diff <= NOISE
        assert r.unmasked_output_max_abs_diff <= NOISE
        assert r.unmasked_pad_attention_mass == 0.0
        assert any("causal mask" in n for n in r.notes)
        return
    assert r.unmasked_attention_max_abs_diff > CLEAR
    assert r.unmasked_output_max_abs_diff > CLEAR
    assert r.unmasked_pad_attention_mass > CLEAR
    assert r.unmasked_attention_max_abs_diff == max(
        float(np.abs(d).max()) for d in r.delta_unmasked.values()
    )
    if r.unmasked_logits_max_abs_diff is not None:
        assert r.unmasked_logits_max_abs_diff > CLEAR


@pytest.mark.parametrize(
    ("arch", "side"),
    [
        ("bert", "right"),
        ("bert", "left"),
        ("gpt2", "left"),
        ("llama", "left"),
        ("marian", "right"),
        ("t5", "left"),
    ],
)
def test_numbers_equal_an_independent_recomputation(arch, side, loaded, padded):
    r = padded(arch, side)
    mine = _independent(loaded(arch), TEXT, PAIR, side, _target(arch))
    assert r.masked_attention_max_abs_diff == pytest.approx(mine["masked"], abs=1e-7)
    assert r.unmasked_attention_max_abs_diff == pytest.approx(mine["unmasked"], abs=1e-6)
    assert mine["masked"] <= NOISE < CLEAR < mine["unmasked"]


@pytest.mark.parametrize("arch", ["bart", "marian"])
def test_left_padding_shifts_absolute_positions_of_seq2seq_encoders(arch, padded):
    r = padded(arch, "left")
    assert r.position_ids is None
    assert any("position" in n for n in r.notes)
    assert r.pad_attention_max == 0.0 and r.cross_pad_attention_max == 0.0  # the mask still works…
    assert r.masked_attention_max_abs_diff > CLEAR  # …but the positions moved


def test_position_ids_follow_the_mask_for_left_padding(padded):
    r = padded("llama", "left")
    n_pad = len(r.pad_positions)
    assert r.position_ids is not None
    np.testing.assert_array_equal(
        r.position_ids[0], [0] * n_pad + list(range(len(r.real_positions)))
    )
    np.testing.assert_array_equal(r.position_ids[1], np.arange(len(r.tokens)))
    assert padded("llama", "right").position_ids is None
    # RoBERTa derives its positions from the pad ids: nothing is passed, and it still matches
    assert padded("roberta", "left").position_ids is None


def test_default_padding_side_and_pad_token(loaded):
    gpt2 = loaded("gpt2")
    r = padding_experiment(gpt2, TEXT, PAIR)
    assert r.padding_side == "left" and r.kind == "decoder"
    assert r.pad_token == gpt2.tokenizer.eos_token and r.pad_token_id == gpt2.tokenizer.eos_token_id
    assert any("EOS" in n for n in r.notes)
    assert r.tokens[: len(r.pad_positions)] == (gpt2.tokenizer.eos_token,) * len(r.pad_positions)
    assert r.prediction_task == "next_token" and len(r.prediction_alone) == 1
    bert = padding_experiment(loaded("bert"), TEXT, PAIR)
    assert bert.padding_side == "right" and bert.pad_token == "[PAD]"
    assert bert.tokens[len(bert.real_positions) :] == ("[PAD]",) * len(bert.pad_positions)
    assert bert.prediction_task == "none" and bert.masked_logits_max_abs_diff is None
    assert bert.prediction_changed_masked is None


def test_seq2seq_uses_the_same_target_for_both_rows_and_generates_one(loaded, padded):
    r = padded("marian", "right")
    lm = loaded("marian")
    labels = lm.tokenizer(text_target=TARGET)["input_ids"]
    t = len(labels)
    assert r.target == TARGET and len(r.decoder_tokens) == t
    assert r.masked["decoder_attentions"].shape[2:] == (t, t)
    assert r.masked["cross_attentions"].shape[2:] == (t, len(r.tokens))
    assert r.alone["cross_attentions"].shape[2:] == (t, len(r.real_positions))
    assert r.prediction_task == "translation" and len(r.prediction_alone) == t
    assert set(r.output_diffs) == {"encoder_last_hidden_state", "decoder_last_hidden_state"}
    # no target: the greedy translation of the sentence alone is used
    gen = padding_experiment(loaded("bart"), TEXT, PAIR)
    assert gen.target is not None and len(gen.decoder_tokens) >= 1
    assert gen.masked_attention_max_abs_diff <= NOISE and gen.cross_pad_attention_max == 0.0


def test_prediction_fields_for_heads(tiny_model_dir):
    from analysis.loader import load_model

    mlm = padding_experiment(
        load_model(str(tiny_model_dir("bert-mlm"))), "I like [MASK] course", PAIR
    )
    assert mlm.prediction_task == "masked_lm"
    assert len(mlm.prediction_alone) == len(mlm.real_positions)
    assert mlm.masked_logits_max_abs_diff <= NOISE < CLEAR < mlm.unmasked_logits_max_abs_diff
    cls = padding_experiment(load_model(str(tiny_model_dir("bert-cls"))), TEXT, PAIR)
    assert cls.prediction_task == "classification"
    assert cls.prediction_alone[0] in ("negative", "neutral", "positive")
    assert cls.prediction_changed_masked is False
    assert cls.masked_logits_max_abs_diff <= NOISE < cls.unmasked_logits_max_abs_diff


def test_bad_inputs_raise_input_errors(loaded):
    bert = loaded("bert")
    with pytest.raises(InputError, match="longer"):
        padding_experiment(bert, PAIR, TEXT)
    with pytest.raises(InputError, match="longer"):
        padding_experiment(bert, TEXT, TEXT)  # equally long: nothing gets padded
    with pytest.raises(InputError, match="empty"):
        padding_experiment(bert, "   ", PAIR)
    with pytest.raises(InputError, match="empty"):
        padding_experiment(bert, TEXT, "")
    with pytest.raises(InputError, match="left or right"):
        padding_experiment(bert, TEXT, PAIR, padding_side="middle")
    with pytest.raises(InputError, match="seq2seq"):
        padding_experiment(bert, TEXT, PAIR, target=TARGET)
    with pytest.raises(InputError, match="at most"):
        padding_experiment(bert, TEXT, PAIR * 20)


def test_default_pair_is_longer_even_for_a_long_sentence(loaded):
    bert = loaded("bert")
    r = padding_experiment(bert, TEXT)
    assert r.pair == DEFAULT_PAIR and len(r.pad_positions) > 0
    r2 = padding_experiment(bert, DEFAULT_PAIR)  # as long as the default: it gets repeated
    assert len(r2.pair) > len(DEFAULT_PAIR) and len(r2.pad_positions) > 0
    assert r2.masked_attention_max_abs_diff <= NOISE


def test_report_is_immutable_and_inputs_untouched(loaded, padded):
    import torch

    lm = loaded("gpt2")
    pad_before, side_before = lm.tokenizer.pad_token, lm.tokenizer.padding_side
    params = [p.detach().clone() for p in lm.model.parameters()]
    r = padding_experiment(lm, TEXT, PAIR, padding_side="left")
    token_masking(lm, TEXT, [1])
    assert lm.tokenizer.pad_token == pad_before and lm.tokenizer.padding_side == side_before
    assert not lm.model.training and torch.is_grad_enabled()
    assert all(torch.equal(a, b) for a, b in zip(params, lm.model.parameters(), strict=True))
    assert all(p.grad is None for p in lm.model.parameters())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.padding_side = "right"  # type: ignore[misc]
    for arrays in (r.alone, r.masked, r.unmasked, r.delta_masked, r.delta_unmasked):
        with pytest.raises(ValueError):
            arrays["attentions"][0, 0, 0, 0] = 1.0
        with pytest.raises(TypeError):
            arrays["attentions"] = np.zeros(1)  # type: ignore[index]
    with pytest.raises(ValueError):
        r.attention_mask[0, 0] = 1


def test_progress_and_cancel(loaded):
    import threading

    from analysis.errors import Cancelled

    seen: list[tuple[str, float | None]] = []
    padding_experiment(
        loaded("bert"), TEXT, PAIR, task=TaskState(lambda st, f, msg: seen.append((st, f)))
    )
    fractions = [f for _, f in seen]
    assert {st for st, _ in seen} == {"run"} and len(seen) >= 3 and fractions == sorted(fractions)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        padding_experiment(loaded("bert"), TEXT, PAIR, task=TaskState(cancel=stop))
    with pytest.raises(Cancelled):
        token_masking(loaded("bert"), TEXT, [1], task=TaskState(cancel=stop))


def test_the_window_jobs_report_and_forward_their_task(loaded):
    import threading

    from analysis.errors import Cancelled
    from analysis.masks import masking_job, padding_job

    seen: list[tuple[str, float | None]] = []
    report = padding_job(
        loaded("bert"), TEXT, "", "right", task=TaskState(lambda st, f, m: seen.append((st, f)))
    )
    assert report.pair.startswith(DEFAULT_PAIR)  # an empty pair: the default one
    assert seen[0] == ("padding", None) and {st for st, _ in seen[1:]} == {"run"}
    seen.clear()
    masking_job(loaded("bert"), TEXT, [1], task=TaskState(lambda st, f, m: seen.append((st, f))))
    assert seen[0] == ("masking", None) and {st for st, _ in seen[1:]} == {"run"}
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        padding_job(loaded("bert"), TEXT, PAIR, "right", task=TaskState(cancel=stop))
    with pytest.raises(Cancelled):
        masking_job(loaded("bert"), TEXT, [1], task=TaskState(cancel=stop))
    # without a task they still run
    assert padding_job(loaded("bert"), TEXT, PAIR, "left").padding_side == "left"


def test_write_mask_report_is_utf8_json(tmp_path, loaded):
    r = padding_experiment(loaded("llama"), "나는 이 강의를 좋아한다", PAIR)
    path = write_mask_report(r, tmp_path / "mask.json")
    text = path.read_text(encoding="utf-8")
    assert "나는 이 강의를 좋아한다" in text  # ensure_ascii=False
    data = json.loads(text)
    assert data == json.loads(json.dumps(r.to_json()))
    assert data["tokens"] == list(r.tokens) and data["padding_side"] == "left"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.json"]  # no temp file left behind
    # numpy numbers (as a caller's own report may hold) are written as plain JSON numbers and lists
    from dataclasses import replace

    r2 = replace(r, pad_attention_max=np.float32(0.25), pad_positions=(np.int64(0), np.int64(1)),
                 output_scale=np.array([1.5, 2.0]))
    data = json.loads(write_mask_report(r2, tmp_path / "np.json").read_text(encoding="utf-8"))
    assert data["pad_attention_max"] == 0.25 and data["pad_positions"] == [0, 1] and data["output_scale"] == [1.5, 2.0]
    with pytest.raises(TypeError, match="^object is not JSON serialisable$"):
        write_mask_report(replace(r, output_scale=object()), tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_cli_writes_the_mask_report(tmp_path, tiny_model_dir):
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [
        sys.executable,
        "main.py",
        "--model",
        str(tiny_model_dir("bert")),
        "--text",
        TEXT,
        "--pair",
        PAIR,
        "--mask-report",
        str(out),
        "--padding-side",
        "left",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    required = {
        "padding_side",
        "pad_attention_max",
        "masked_attention_max_abs_diff",
        "unmasked_attention_max_abs_diff",
        "masked_output_max_abs_diff",
        "unmasked_output_max_abs_diff",
        "kind",
        "model",
        "text",
        "pair",
        "cross_pad_attention_max",
        "tokens",
        "prediction_changed_masked",
        "prediction_changed_unmasked",
        "masked_logits_max_abs_diff",
        "unmasked_logits_max_abs_diff",
    }
    assert required <= set(data)
    assert data["padding_side"] == "left" and data["kind"] == "encoder" and data["pair"] == PAIR
    assert data["pad_attention_max"] == 0.0 and data["cross_pad_attention_max"] is None
    assert (
        data["masked_attention_max_abs_diff"]
        <= NOISE
        < CLEAR
        < data["unmasked_attention_max_abs_diff"]
    )
    assert (
        data["masked_output_max_abs_diff"] <= NOISE < CLEAR < data["unmasked_output_max_abs_diff"]
    )
    assert data["tokens"][0] == "[PAD]" and data["tokens"][-1] == "[SEP]"


# --------------------------------------------------------------------------------------------
# token masking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "positions"),
    [("bert", [2]), ("bert", [1, 3]), ("gpt2", [1]), ("llama", [2, 3]), ("bart", [0, 2])],
)
def test_masked_key_columns_are_exactly_zero(arch, positions, loaded):
    lm = loaded(arch)
    r = token_masking(lm, TEXT, positions, target=_target(arch))
    assert isinstance(r, MaskingReport)
    assert r.masked_positions == tuple(positions)
    assert list(np.flatnonzero(r.attention_mask == 0)) == positions
    assert r.masked_column_max == 0.0
    for name in r.stack_names:
        base, after = r.baseline[name], r.masked[name]
        assert base.shape == after.shape == r.delta[name].shape
        np.testing.assert_array_equal(r.delta[name], after - base)
        np.testing.assert_allclose(after.sum(-1), 1.0, atol=1e-5)
        if name == "decoder_attentions":
            continue
        assert np.all(after[..., positions] == 0.0), f"{name}: a masked token is still attended to"
        assert base[..., positions].max() > CLEAR
        if name in ("attentions", "encoder_attentions"):
            # layer 0 sees the same inputs in both runs: each row is the baseline row renormalised
            keep = np.flatnonzero(r.attention_mask)
            b0 = base[0][:, :, keep]
            want = b0 / b0.sum(-1, keepdims=True)
            np.testing.assert_allclose(after[0][:, :, keep], want, atol=1e-6)


def test_decoder_top5_changes_and_matches_capture(loaded):
    from analysis.capture import capture

    lm = loaded("gpt2")
    r = token_masking(lm, TEXT, [0, 2])
    cap = capture(lm, TEXT)
    assert len(r.top5_before) == 5 and len(r.top5_after) == 5
    assert [lab for lab, _ in r.top5_before] == [lab for lab, _ in cap.prediction.items]
    np.testing.assert_allclose(
        [p for _, p in r.top5_before], [p for _, p in cap.prediction.items], atol=1e-6
    )
    assert r.top5_before != r.top5_after
    assert r.mean_hidden_l2 > 0


def test_decoder_first_token_masked_keeps_positions(loaded):
    import torch

    lm = loaded("llama")
    r = token_masking(lm, TEXT, [0])
    assert r.blind_rows["attentions"] == (0,)
    assert any("see no token" in n for n in r.notes)
    after = r.masked["attentions"]
    assert np.all(after[:, :, 1:, 0] == 0.0)
    # positions unchanged: the masked run equals a direct call with positions 0..S-1
    ids = lm.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    with torch.no_grad():
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.arange(ids.shape[1])[None],
            output_attentions=True,
            use_cache=False,
        )
    for layer, a in enumerate(out.attentions):
        np.testing.assert_allclose(after[layer, :, 1:], a[0, :, 1:].numpy(), atol=1e-6)


def test_encoder_hidden_distance(loaded):
    r = token_masking(loaded("bert"), TEXT, [2])
    n = len(r.tokens)
    assert r.hidden_positions == tuple(i for i in range(n) if i != 2)
    assert r.hidden_l2.shape == r.hidden_cosine_distance.shape == (n - 1,)
    assert np.all(r.hidden_l2 > 0) and r.mean_hidden_l2 == pytest.approx(
        float(r.hidden_l2.mean()), rel=1e-6
    )
    assert np.all((r.hidden_cosine_distance >= 0) & (r.hidden_cosine_distance <= 2))
    assert r.mean_hidden_cosine_distance > 0
    assert r.top5_before == () and r.translation_before == ""


def test_masked_lm_top5_at_mask_positions(tiny_model_dir):
    from analysis.loader import load_model

    lm = load_model(str(tiny_model_dir("bert-mlm")))
    r = token_masking(lm, "I like [MASK] course", [2])
    mask_pos = r.tokens.index("[MASK]")
    assert r.prediction_before.task == "masked_lm"
    assert [p for p, _ in r.prediction_before.per_position] == [mask_pos]
    before, after = r.prediction_before.per_position[0][1], r.prediction_after.per_position[0][1]
    assert len(before) == len(after) == 5 and before != after


def test_seq2seq_translation_before_and_after(loaded):
    r = token_masking(loaded("bart"), TEXT, [1, 2])
    assert isinstance(r.translation_before, str) and isinstance(r.translation_after, str)
    assert r.target is not None and len(r.decoder_tokens) >= 1
    assert np.all(r.masked["cross_attentions"][..., [1, 2]] == 0.0)
    assert r.mean_hidden_l2 > 0


@pytest.mark.parametrize("bad", [[99], [-1], [], [0, 1, 2, 3, 4, 5], [True], "1"])
def test_token_masking_rejects_bad_indices(bad, loaded):
    lm = loaded("bert")  # "I like this course" → 6 tokens with [CLS]/[SEP]
    with pytest.raises(InputError):
        token_masking(lm, TEXT, bad)


def test_token_masking_messages(loaded):
    lm = loaded("bert")
    with pytest.raises(InputError, match="out of range.*6 tokens"):
        token_masking(lm, TEXT, [6])
    with pytest.raises(InputError, match="every token"):
        token_masking(lm, TEXT, range(6))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="seq2seq"):
        token_masking(lm, TEXT, [1], target=TARGET)


# --------------------------------------------------------------------------------------------
# the real bundled models
# --------------------------------------------------------------------------------------------
@pytest.mark.bundled
@pytest.mark.parametrize("side", ["right", "left"])
def test_bundled_minilm_padding(side, bundled_minilm):
    r = padding_experiment(bundled_minilm, TEXT, BUNDLED_PAIR, padding_side=side)
    real, pads = list(r.real_positions), list(r.pad_positions)
    assert (
        np.all(r.masked["attentions"][:, :, real][:, :, :, pads] == 0.0)
        and r.pad_attention_max == 0.0
    )
    assert r.masked_attention_max_abs_diff <= NOISE and r.masked_output_max_abs_diff <= NOISE
    assert r.unmasked_attention_max_abs_diff > CLEAR and r.unmasked_output_max_abs_diff > CLEAR
    mine = _independent(bundled_minilm, TEXT, BUNDLED_PAIR, side)
    assert r.masked_attention_max_abs_diff == pytest.approx(mine["masked"], abs=1e-7)
    assert r.unmasked_attention_max_abs_diff == pytest.approx(mine["unmasked"], abs=1e-6)


@pytest.mark.bundled
def test_bundled_minilm_token_masking(bundled_minilm):
    r = token_masking(bundled_minilm, TEXT, [2])
    assert r.masked_column_max == 0.0 and np.all(r.masked["attentions"][..., 2] == 0.0)
    assert r.mean_hidden_l2 > 0.1 and r.mean_hidden_cosine_distance > 0


@pytest.mark.bundled
@pytest.mark.parametrize("side", ["left", "right"])
def test_bundled_smollm2_padding(side, bundled_smollm2):
    r = padding_experiment(bundled_smollm2, TEXT, SHORT_PAIR, padding_side=side)
    real, pads = list(r.real_positions), list(r.pad_positions)
    a = r.masked["attentions"][:, :, real]
    assert np.all(a[..., pads] == 0.0) and r.pad_attention_max == 0.0
    s = len(real)
    assert np.all(a[..., real][..., causal_mask(s, s)] == 0.0)
    assert r.masked_attention_max_abs_diff <= NOISE
    # 30 layers: float32 noise in hidden states of size ~output_scale stays ~1e-7 relative
    assert r.masked_output_max_abs_diff <= NOISE * max(1.0, r.output_scale)
    assert r.prediction_changed_masked is False and r.prediction_masked == r.prediction_alone
    if side == "left":
        mine = _independent(bundled_smollm2, TEXT, SHORT_PAIR, side)
        assert r.masked_attention_max_abs_diff == pytest.approx(mine["masked"], abs=1e-7)
        assert r.unmasked_attention_max_abs_diff == pytest.approx(mine["unmasked"], abs=1e-6)
        assert r.unmasked_attention_max_abs_diff > CLEAR and r.unmasked_output_max_abs_diff > CLEAR
        assert r.unmasked_logits_max_abs_diff > CLEAR
    else:
        assert r.unmasked_attention_max_abs_diff <= NOISE


@pytest.mark.bundled
def test_bundled_smollm2_token_masking(bundled_smollm2):
    r = token_masking(bundled_smollm2, TEXT, [1])
    assert r.masked_column_max == 0.0 and np.all(r.masked["attentions"][..., 1] == 0.0)
    assert len(r.top5_before) == 5 and r.top5_before != r.top5_after


@pytest.mark.bundled
@pytest.mark.skipif(not TRANSLATOR.exists(), reason="bundled:translator-en-fr is not trained yet")
def test_bundled_translator_padding():
    from analysis.loader import load_model

    lm = load_model("bundled:translator-en-fr")
    r = padding_experiment(lm, TEXT, BUNDLED_PAIR)
    assert (
        r.padding_side == "right"
        and r.cross_pad_attention_max == 0.0
        and r.pad_attention_max == 0.0
    )
    assert r.masked_attention_max_abs_diff <= NOISE and r.masked_output_max_abs_diff <= NOISE
    assert r.unmasked_attention_max_abs_diff > CLEAR


# --------------------------------------------------------------------------------------------
# what the errors say, word for word
# --------------------------------------------------------------------------------------------
def _padding_error(lm, *args, **kwargs) -> str:
    with pytest.raises(InputError) as excinfo:
        padding_experiment(lm, *args, **kwargs)
    return str(excinfo.value)


def _masking_error(lm, masked, **kwargs) -> str:
    with pytest.raises(InputError) as excinfo:
        token_masking(lm, TEXT, masked, **kwargs)
    return str(excinfo.value)


def test_a_second_sentence_that_is_not_longer_says_both_lengths(loaded):
    bert = loaded("bert")  # TEXT: 6 tokens with [CLS]/[SEP]; PAIR's count depends on the trained vocabulary
    n = len(bert.tokenizer(PAIR)["input_ids"])
    assert _padding_error(bert, PAIR, TEXT) == (
        f"the second sentence has 6 tokens and the sentence {n}; the second one must be longer so that the "
        "sentence gets padded — give a longer second sentence"
    )
    assert _padding_error(bert, TEXT, TEXT) == (
        "the second sentence has 6 tokens and the sentence 6; the second one must be longer so that the "
        "sentence gets padded — give a longer second sentence"
    )


def test_an_empty_sentence_says_which_one_and_to_type_one(loaded):
    bert = loaded("bert")
    assert _padding_error(bert, "   ", PAIR) == "the sentence is empty; type a sentence"
    assert _padding_error(bert, TEXT, "") == "the second sentence (--pair) is empty; type a sentence"


def test_too_long_a_sentence_says_how_many_tokens_it_has_and_the_models_limit(loaded):
    bert = loaded("bert")  # the tiny BERT takes 64 tokens
    n = len(bert.tokenizer(PAIR * 20)["input_ids"])
    assert n > 64
    assert _padding_error(bert, TEXT, PAIR * 20) == (
        f"the second sentence (--pair) has {n} tokens but this model takes at most 64; use a shorter sentence"
    )
    assert _padding_error(bert, PAIR * 20, None) == (
        f"the sentence has {n} tokens but this model takes at most 64; use a shorter sentence"
    )


def test_an_unknown_padding_side_says_left_or_right(loaded):
    assert _padding_error(loaded("bert"), TEXT, PAIR, padding_side="middle") == (
        "unknown padding side 'middle'; choose left or right"
    )


def test_a_target_for_a_decoder_says_to_drop_it(loaded):
    gpt2 = loaded("gpt2")
    message = "a target only applies to seq2seq models; this is a decoder model — drop the target"
    assert _padding_error(gpt2, TEXT, PAIR, target=TARGET) == message
    assert _masking_error(gpt2, [1], target=TARGET) == message


@pytest.mark.parametrize(
    ("masked", "message"),
    [
        ([6], "token index 6 is out of range: this sentence has 6 tokens (0–5)"),
        ([1, -1], "token index -1 is out of range: this sentence has 6 tokens (0–5)"),
        ([True], "token index True is not an integer; give 0-based token indices"),
        ([1.0], "token index 1.0 is not an integer; give 0-based token indices"),
        ("1", "give the tokens to mask as a list of 0-based token indices"),
        (1, "give the tokens to mask as a list of 0-based token indices"),
        ([], "no token chosen; choose at least one token to mask"),
        (
            [0, 1, 2, 3, 4, 5, 5],
            "masking every token leaves nothing to attend to; keep at least one token unmasked",
        ),
    ],
)
def test_bad_tokens_to_mask_say_what_to_give(masked, message, loaded):
    assert _masking_error(loaded("bert"), masked) == message  # TEXT: 6 tokens with [CLS]/[SEP]


def test_the_mask_report_file_holds_every_number_under_its_documented_name(loaded):
    """``--mask-report``'s JSON is read by other tools: every key, each value the report's own."""
    r = padding_experiment(loaded("marian"), "I like this course", PAIR)
    d = json.loads(json.dumps(r.to_json()))
    plain = ("model", "kind", "text", "pair", "padding_side", "pad_token", "target", "pad_attention_max",
             "unmasked_pad_attention_mass", "masked_attention_max_abs_diff", "unmasked_attention_max_abs_diff",
             "masked_output_max_abs_diff", "unmasked_output_max_abs_diff", "cross_pad_attention_max", "output_scale",
             "prediction_task", "prediction_changed_masked", "prediction_changed_unmasked",
             "masked_logits_max_abs_diff", "unmasked_logits_max_abs_diff")
    listed = ("tokens", "pad_positions", "real_positions", "prediction_alone", "prediction_masked",
              "prediction_unmasked", "notes")
    assert set(d) == {*plain, *listed, "position_ids_passed", "stacks", "outputs"}
    for key in plain:
        assert d[key] == getattr(r, key), key
    for key in listed:
        assert d[key] == list(getattr(r, key)), key
    assert d["position_ids_passed"] is (r.position_ids is not None) and d["kind"] == "seq2seq"
    assert d["stacks"] == {k: dict(v) for k, v in r.stack_diffs.items()}
    assert set(d["stacks"]) == {"encoder_attentions", "decoder_attentions", "cross_attentions"}
    assert d["outputs"] == {k: dict(v) for k, v in r.output_diffs.items()}
    assert set(d["outputs"]) == {"encoder_last_hidden_state", "decoder_last_hidden_state"}
    assert all(set(v) == {"masked", "unmasked"} for v in (*d["stacks"].values(), *d["outputs"].values()))
    assert isinstance(d["prediction_changed_masked"], bool) and isinstance(d["cross_pad_attention_max"], float)
