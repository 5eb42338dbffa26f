"""Checkpoints that are not what they claim: weights missing for layers the config describes, a
tokenizer that does not belong to the weights, and architectures whose attention is not one
query × key map per layer (each family refused with its own reason)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.capture import capture, stack_attentions
from analysis.errors import CaptureError, MissingWeightsError, NoAttentionError
from analysis.loader import load_model, missing_groups
from analysis.result import RANDOM_WEIGHTS
from tests.tiny_models import HIDDEN, build_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _drop(folder: Path, source: Path, drop) -> Path:
    """A copy of ``source`` whose safetensors lack the tensors ``drop(name)`` picks."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if not drop(k)}, str(weights), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def no_layer_1(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny BERT without the weights of its second layer."""
    return _drop(tmp_path_factory.mktemp("claims") / "bert-no-layer-1", tiny_model_dir("bert"),
                 lambda name: ".layer.1." in name)


# --------------------------------------------------------------------------------------------
# missing weights
# --------------------------------------------------------------------------------------------
def test_weights_missing_a_layer_are_refused_naming_them(no_layer_1):
    with pytest.raises(MissingWeightsError) as exc:
        load_model(str(no_layer_1), device="cpu")
    msg = str(exc.value)
    assert "lack 16 tensors that its config describes (encoder.layer.1 (16 tensors))" in msg, msg
    assert "attention maps would change from run to run" in msg and "--allow-missing-weights" in msg
    assert "\n" not in msg
    assert len(exc.value.missing) == 16 and all(".layer.1." in k for k in exc.value.missing)


def test_a_config_with_more_layers_than_the_weights_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "llama-3-layers"
    shutil.copytree(tiny_model_dir("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MissingWeightsError, match=r"lack 9 tensors .*\(model\.layers\.2 \(9 tensors\)\)"):
        load_model(str(folder), device="cpu")


def test_allowed_missing_weights_load_with_a_warning_on_every_capture_and_figure(no_layer_1):
    from analysis.figures import build_figure
    from analysis.views.spec import ViewSpec

    lm = load_model(str(no_layer_1), device="cpu", allow_missing_weights=True)
    warning = lm.notes[0]
    assert warning.startswith("warning: 16 weights of") and "(encoder.layer.1 (16 tensors))" in warning
    assert RANDOM_WEIGHTS in warning and "change from run to run" in warning
    cap = capture(lm, TEXT)
    assert cap.notes[0] == warning
    assert cap.shape() == (2, 4, len(cap.source), len(cap.source))
    from matplotlib.text import Text

    for view in ("head", "model", "stats"):
        fig = build_figure(cap, ViewSpec(view=view, layer=1, head=0))
        assert "some weights random: not reproducible" in " ".join(t.get_text() for t in fig.findobj(Text)), view


def test_the_cli_refuses_or_warns(no_layer_1, tmp_path):
    out = tmp_path / "x.npz"
    refused = _cli("--model", str(no_layer_1), "--text", TEXT, "--device", "cpu", "--export-npz", str(out))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "encoder.layer.1 (16 tensors)" in lines[0] and "--allow-missing-weights" in lines[0]
    assert not out.exists()

    allowed = _cli("--model", str(no_layer_1), "--text", TEXT, "--device", "cpu", "--allow-missing-weights",
                   "--export-npz", str(out))
    assert allowed.returncode == 0, allowed.stderr
    lines = allowed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: 16 weights of") and RANDOM_WEIGHTS in lines[0]
    assert np.load(out, allow_pickle=False)["attentions"].shape[0] == 2


def test_a_missing_task_head_loads_with_a_warning_about_the_predictions(tiny_model_dir, tmp_path):
    """The maps do not depend on a classifier: it loads, and the warning says what is random."""
    folder = _drop(tmp_path / "bert-cls-no-head", tiny_model_dir("bert-cls"), lambda name: name.startswith("classifier"))
    lm = load_model(str(folder), device="cpu")
    assert lm.notes[0].startswith("warning: ") and "no weights for its task head (classifier" in lm.notes[0]
    assert "predictions are meaningless (the attention maps are not affected)" in lm.notes[0]
    assert RANDOM_WEIGHTS not in lm.notes[0]
    ref = capture(load_model(str(tiny_model_dir("bert-cls")), device="cpu"), TEXT)
    cap = capture(lm, TEXT)
    np.testing.assert_array_equal(cap.attention(), ref.attention())
    assert cap.notes[0] == lm.notes[0]


def test_missing_groups():
    names = ["model.layers.10.mlp.up.weight", "model.layers.2.mlp.up.weight", "model.layers.2.attn.q.weight",
             "lm_head.weight"]
    assert missing_groups(names) == ["lm_head.weight", "model.layers.2 (2 tensors)", "model.layers.10"]


# --------------------------------------------------------------------------------------------
# a tokenizer that does not belong to the weights
# --------------------------------------------------------------------------------------------
def test_token_ids_beyond_the_vocabulary_are_one_sentence(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "gpt2-other-tokenizer"
    shutil.copytree(tiny_model_dir("gpt2"), folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_tokens(["zyzzyva"])  # id 400: the model has 400 embeddings
    tok.save_pretrained(str(folder))
    lm = load_model(str(folder), device="cpu")
    with pytest.raises(CaptureError) as exc:
        capture(lm, "I like zyzzyva")
    msg = str(exc.value)
    assert msg.startswith("the tokenizer turned the text into id 400 ('zyzzyva'), but the model's vocabulary has only "
                          "400 entries, so this tokenizer does not belong to these weights"), msg
    assert "unexpected" not in msg and "IndexError" not in msg
    assert capture(lm, TEXT).shape()[0] == 2  # text the model can embed still runs


def test_target_ids_beyond_the_decoder_vocabulary(loaded):
    from types import SimpleNamespace

    lm = loaded("marian")
    small = SimpleNamespace(**{k: getattr(lm, k) for k in ("reference", "kind", "model", "tokenizer", "summary",
                                                           "path", "notes")})
    small.config = SimpleNamespace(**{**lm.config.to_dict(), "decoder_vocab_size": 5})
    small.device = lm.device
    with pytest.raises(CaptureError, match="turned the target into id .* has only 5 entries"):
        capture(small, TEXT, target="J'aime ce cours")


# --------------------------------------------------------------------------------------------
# attention that is not one query × key map: each family's own reason
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizers():
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tokenizer(family)
        return cache[family]

    return get


def _save(folder: Path, model, tok) -> Path:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg))
    return folder


def _family(name: str, tok):
    """A tiny random model of a family whose attention is not a query × key map."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    v, h = len(tok), HIDDEN
    if name == "funnel":
        return tf.FunnelModel(tf.FunnelConfig(vocab_size=v, block_sizes=[1, 1], d_model=h, n_head=4, d_head=8,
                                              d_inner=64, num_decoder_layers=1))
    if name == "prophetnet":
        return tf.ProphetNetForConditionalGeneration(tf.ProphetNetConfig(
            vocab_size=v, hidden_size=h, encoder_ffn_dim=64, decoder_ffn_dim=64, num_encoder_layers=1,
            num_decoder_layers=1, num_encoder_attention_heads=4, num_decoder_attention_heads=4,
            max_position_embeddings=64, ngram=2, num_buckets=8, relative_max_distance=16, pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0))
    if name == "longformer":
        return tf.LongformerModel(tf.LongformerConfig(vocab_size=v, hidden_size=h, num_hidden_layers=2,
                                                      num_attention_heads=4, intermediate_size=64, attention_window=4,
                                                      max_position_embeddings=66, pad_token_id=1))
    if name == "big_bird":
        return tf.BigBirdModel(tf.BigBirdConfig(vocab_size=v, hidden_size=h, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=64, max_position_embeddings=64, block_size=2,
                                                num_random_blocks=1, attention_type="block_sparse"))
    if name == "reformer":
        return tf.ReformerModelWithLMHead(tf.ReformerConfig(
            vocab_size=v, hidden_size=h, attn_layers=["local", "lsh"], num_attention_heads=4, attention_head_size=8,
            feed_forward_size=64, axial_pos_embds=False, max_position_embeddings=64, local_attn_chunk_length=4,
            lsh_attn_chunk_length=4, is_decoder=True, num_buckets=4))
    if name == "mamba":
        return tf.MambaForCausalLM(tf.MambaConfig(vocab_size=v, hidden_size=h, state_size=4, num_hidden_layers=2,
                                                  expand=2, conv_kernel=2))
    if name == "rwkv":
        return tf.RwkvForCausalLM(tf.RwkvConfig(vocab_size=v, hidden_size=h, num_hidden_layers=2, context_length=64,
                                                attention_hidden_size=h, intermediate_size=64))
    raise ValueError(name)


FAMILIES = {  # family: (tokenizer, what its refusal must say)
    "funnel": ("wordpiece", "pools the sequence between its blocks, so its later layers attend over fewer positions"),
    "prophetnet": ("unigram", "ProphetNet predicts n-gram streams"),
    "longformer": ("roberta", "attends within a sliding window"),
    "big_bird": ("wordpiece", "block-sparse attention"),
    "reformer": ("gpt2", "hashed buckets (LSH)"),
    "mamba": ("gpt2", "state-space model with no attention at all"),
    "rwkv": ("gpt2", "recurrent model with no attention at all"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_refused_with_its_own_reason(family, tokenizers, tmp_path):
    tok_family, reason = FAMILIES[family]
    folder = _save(tmp_path / family, _family(family, tokenizers(tok_family)), tokenizers(tok_family))
    with pytest.raises(NoAttentionError) as exc:
        load_model(str(folder), device="cpu")
    msg = str(exc.value)
    assert msg.startswith(f"Headmap cannot show {folder} ({family}): ") and reason in msg, msg
    assert "query × key map" in msg and "\n" not in msg
    for misleading in ("disagree", "try dtype", "unexpected"):
        assert misleading not in msg


def test_a_sliding_window_decoder_still_loads(tokenizers, tmp_path):
    """Mistral's sliding window masks a full map: it is shown, the window as zeros."""
    import transformers as tf

    tok = tokenizers("llama")
    model = tf.MistralForCausalLM(tf.MistralConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                   max_position_embeddings=64, sliding_window=3))
    lm = load_model(str(_save(tmp_path / "mistral", model, tok)), device="cpu")
    att = capture(lm, "I like this course and the students").attention()[0, 0]
    assert att.shape[0] > 4 and np.all(np.tril(att, k=-3) == 0) and np.allclose(att.sum(-1), 1, atol=1e-5)


def test_generic_stack_checks_name_the_real_problem():
    import torch

    good = torch.softmax(torch.randn(1, 4, 5, 5), -1)
    with pytest.raises(CaptureError) as exc:
        stack_attentions((good * 0.5,), "attentions", "OddModel", (1, 4))
    assert "OddModel's attention weights are not one softmax over the tokens" in str(exc.value)
    assert "try dtype" not in str(exc.value)
    with pytest.raises(CaptureError, match="try dtype float32"):
        stack_attentions(((good * 0.9).to(torch.float16),), "attentions", "OddModel", (1, 4))
    with pytest.raises(NoAttentionError, match=r"OddModel returned attentions of shape \(1, 4, 5, 2, 2\)"):
        stack_attentions((torch.zeros(1, 4, 5, 2, 2),), "attentions", "OddModel", (1, 4))


# --------------------------------------------------------------------------------------------
# the window asks, like for pickle weights
# --------------------------------------------------------------------------------------------
def test_the_window_asks_before_loading_with_missing_weights(qtbot, window, no_layer_1):
    from PySide6.QtWidgets import QMessageBox

    from tests.gui_fixtures import wait_idle

    folder = str(no_layer_1)
    window.input_panel.text.setPlainText(TEXT)
    window.load_model(folder)
    wait_idle(qtbot, window)
    box = window._dialog
    assert box is not None and box.isVisible() and box.windowTitle() == "Missing weights"
    assert "encoder.layer.1 (16 tensors)" in box.text() and "Load it anyway?" in box.text()
    assert window.last_error == "" and window.lm is None
    box.button(QMessageBox.StandardButton.No).click()
    assert window.runner.pool.waitForDone(60_000)
    assert window.lm is None and not window.runner.is_busy("load")

    window.load_model(folder)
    wait_idle(qtbot, window)
    window._dialog.button(QMessageBox.StandardButton.Yes).click()
    wait_idle(qtbot, window)
    assert window.lm is not None and window.lm.reference == folder
    assert window.lm.notes[0].startswith("warning: 16 weights of")
    assert window.capture is not None and window.capture.notes[0] == window.lm.notes[0]
    assert RANDOM_WEIGHTS in window.output.text()  # the output panel shows the warning under the prediction
