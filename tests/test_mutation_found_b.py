"""Behaviours pinned down by mutation testing (group B): CLI flag checks and notes, --allow-pickle
through the CLI, a session's bundled-translator alignment defaults, composite models' configs in
eager attention, the array file's folder and the model process's plain error messages."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from analysis.cli import build_parser, main, run_headless

TEXT = "I like this course"
TARGET = "j'aime ce cours"
LONG = "This is a long sentence about language models and their heads"


# --------------------------------------------------------------------------------------------
# analysis.cli.check_args
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, name", [("--export-svg", "x.svg"), ("--export-pdf", "x.pdf")])
def test_masks_view_needs_pair_for_svg_and_pdf_too(tmp_path, capsys, flag, name):
    """--view masks without --pair is refused for an SVG or PDF export, before any model is loaded."""
    out = tmp_path / name
    rc = main(["--model", str(tmp_path / "missing"), "--text", TEXT, flag, str(out), "--view", "masks"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "error: --view masks needs --pair OTHER: a second, longer sentence to batch with --text\n"
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# analysis.cli._model_source
# --------------------------------------------------------------------------------------------
def test_allow_pickle_flag_loads_a_pickle_only_checkpoint(broken_dir, tmp_path, capsys):
    """--allow-pickle lets the CLI load a checkpoint that only has pickle weights and write the export."""
    out = tmp_path / "x.npz"
    rc = main(["--model", str(broken_dir("pickle-only")), "--text", TEXT, "--device", "cpu", "--allow-pickle",
               "--export-npz", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert out.is_file()


def test_explicit_max_tokens_adds_only_the_truncation_note(tiny_model_dir, tmp_path, capsys):
    """With --max-tokens given, a truncated text gets the truncation note and no other note."""
    out = tmp_path / "x.npz"
    rc = main(["--model", str(tiny_model_dir("bert")), "--text", LONG, "--device", "cpu", "--max-tokens", "4",
               "--export-npz", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.splitlines() == [
        "note: the text was truncated to 4 tokens (the longest input this model/capture takes)"]


# --------------------------------------------------------------------------------------------
# analysis.cli.session_source
# --------------------------------------------------------------------------------------------
def test_session_of_a_bundled_translator_exports_its_documented_alignment(loaded, tmp_path, monkeypatch):
    """--session of a bundled translator's capture writes the alignment of the translator's documented best setting."""
    import analysis.bundled
    from analysis.alignment import format_pharaoh
    from analysis.alignment_export import alignment_for_capture
    from analysis.capture import capture
    from analysis.session import save_session

    cap = replace(capture(loaded("marian"), TEXT, target=TARGET), model="bundled:translator-en-fr")
    folder = tmp_path / "translator"
    folder.mkdir()
    n_layers, n_heads = cap.shape("cross_attentions")[:2]
    # a documented setting whose links differ from the undocumented default (last layer, head mean)
    plain = format_pharaoh(alignment_for_capture(cap, None).pairs)
    for layer in range(n_layers):
        for head in range(n_heads):
            info = {"best_layer": layer, "best_head": head, "best_method": "shift", "best_threshold": 0.2}
            (folder / "alignment.json").write_text(json.dumps(info), encoding="utf-8")
            best = format_pharaoh(alignment_for_capture(cap, str(folder)).pairs)
            if best != plain:
                break
        if best != plain:
            break
    assert best != plain
    monkeypatch.setattr(analysis.bundled, "bundled_path", lambda name, verify=True: folder)
    session = tmp_path / "s.headmap"
    save_session(session, cap, model_ref="bundled:translator-en-fr", inputs={"text": TEXT, "target": TARGET},
                 options={})
    out = tmp_path / "a.txt"
    lines: list[str] = []
    rc = run_headless(build_parser().parse_args(["--session", str(session), "--export-alignment", str(out)]),
                      say=lines.append)
    assert rc == 0
    assert out.read_text(encoding="utf-8") == best + "\n"


# --------------------------------------------------------------------------------------------
# analysis.inmemory.model_configs (through eager_attention)
# --------------------------------------------------------------------------------------------
def test_eager_attention_handles_a_composite_model_with_sub_configs():
    """eager_attention runs and restores a model whose config has sub-configs (an encoder-decoder)."""
    import torch
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    from analysis.inmemory import eager_attention, model_configs

    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
             "vocab_size": 50, "max_position_embeddings": 16}
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**small), BertConfig(**small, is_decoder=True, add_cross_attention=True))
    model = EncoderDecoderModel(config=cfg)
    configs = model_configs(model)
    assert all(c is not None and hasattr(c, "to_dict") for c in configs)
    assert any(c is model.config.encoder for c in configs) and any(c is model.config.decoder for c in configs)
    model.train()
    with eager_attention(model) as m:
        assert not m.training
    assert model.training


# --------------------------------------------------------------------------------------------
# analysis.host
# --------------------------------------------------------------------------------------------
def test_big_arrays_are_written_in_the_arena_folder(tmp_path, monkeypatch):
    """dumps writes a big array's file into the arena folder, where sweep_arrays looks for stale ones."""
    import analysis.host as host

    arena = tmp_path / "arena"
    arena.mkdir()
    monkeypatch.setattr(host, "_arena_dir", lambda: str(arena))
    data, path = host.dumps({"a": np.ones(1 << 16)})
    try:
        assert path is not None and os.path.dirname(path) == str(arena)
        assert os.listdir(arena) == [os.path.basename(path)]
    finally:
        out = host.loads(data, path)
    np.testing.assert_array_equal(out["a"], np.ones(1 << 16))
    assert os.listdir(arena) == []


def test_model_process_headmap_error_text_is_the_plain_message():
    """A HeadmapError the model process could not pickle reads as its own message, without a class name."""
    from analysis.host import ModelHostError, _child_error

    exc = _child_error(("error_text", "HeadmapError", "the model is too large", "Traceback ..."))
    assert isinstance(exc, ModelHostError)
    assert str(exc) == "the model is too large"
    assert exc.__headmap_traceback__ == "Traceback ..."
    other = _child_error(("error_text", "ValueError", "bad value", "tb"))
    assert str(other) == "ValueError: bad value"
