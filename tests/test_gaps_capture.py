"""analysis.capture: behaviours no other test reached. The window's default token limit when the
disk is small or cannot be measured, ids of a model without a vocabulary size, the memory fallback
when /proc/meminfo cannot be read, the empty prediction of a head-less model with logits, models
whose forward cannot be inspected, non-streamable models stored whole, a streamed model that lacks
a stack or has other head counts than its config, the decoder start token's fallbacks and the
trailing padding dropped from a generated target."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

import analysis.capture as capture_mod
import analysis.store as store_mod
from analysis.capture import (
    check_ids,
    decoder_start_id,
    default_max_tokens,
    prediction_for,
    seq2seq_target,
)
from analysis.errors import CaptureError, NoAttentionError
from analysis.result import Prediction

TEXT = "I like this course"


def _summary(max_positions, layers=30, heads=9, kind="decoder"):
    return SimpleNamespace(max_positions=max_positions, kind=kind,
                           stacks=[SimpleNamespace(name="attentions", layers=layers, heads=heads)])


# --------------------------------------------------------------------------------------------
# default_max_tokens
# --------------------------------------------------------------------------------------------
def test_a_stores_folder_that_cannot_be_measured_keeps_the_models_limit(monkeypatch):
    """No disk to measure (the run itself will say what is wrong): the model's own maximum, capped
    at LONG_MAX_TOKENS, and no sentence."""
    import analysis.store as store_mod

    def broken(root=None):
        raise OSError("no such folder")

    monkeypatch.setattr(store_mod, "free_bytes", broken)
    assert default_max_tokens(_summary(100_000)) == (16384, "")
    assert default_max_tokens(_summary(512)) == (512, "")
    assert default_max_tokens(_summary(None)) == (1024, "")


def test_a_small_disk_caps_the_limit_at_what_stays_in_memory_and_says_how_to_get_more(tmp_path):
    """A disk without room: the longest capture that is held in memory (no store needed), and the
    sentence names the folder, both lengths and the two ways out."""
    from analysis.store import SPACE_MARGIN, STORE_MIN_BYTES, tokens_that_fit

    stacks = [("attentions", 30, 9)]
    in_memory = tokens_that_fit(stacks, "decoder", 16384, free=STORE_MIN_BYTES + SPACE_MARGIN)
    assert 1 < in_memory < 8192
    limit, why = default_max_tokens(_summary(32768), root=tmp_path, free=0)
    assert limit == in_memory
    assert why == (f"inputs are capped at {in_memory} tokens: the disk of {tmp_path} has room for the attention "
                   f"maps of {in_memory} tokens (the model takes 32768); free space or set HEADMAP_CACHE to a "
                   "bigger disk")
    # a disk with more room than memory gives its own, longer limit
    room = tokens_that_fit(stacks, "decoder", 8192, free=4 * (STORE_MIN_BYTES + SPACE_MARGIN))
    assert in_memory < room < 8192
    assert default_max_tokens(_summary(8192), root=tmp_path, free=4 * (STORE_MIN_BYTES + SPACE_MARGIN))[0] == room


def test_the_capped_limit_names_the_default_stores_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    limit, why = default_max_tokens(_summary(8192), free=0)
    assert why.startswith(f"inputs are capped at {limit} tokens: the disk of {tmp_path / 'cache' / 'stores'} has room")


# --------------------------------------------------------------------------------------------
# ids, memory, prediction, forward signature
# --------------------------------------------------------------------------------------------
def test_ids_of_a_model_without_a_known_vocabulary_size_are_all_accepted():
    def no_embeddings():
        raise AttributeError("no accessor")

    lm = SimpleNamespace(model=SimpleNamespace(get_input_embeddings=no_embeddings),
                         config=SimpleNamespace(vocab_size=None),
                         tokenizer=SimpleNamespace(convert_ids_to_tokens=lambda i: f"tok{i}"))
    assert check_ids(lm, [3, 10**9, -1], "the text") is None


def test_available_memory_falls_back_to_the_free_pages(monkeypatch):
    """Without /proc/meminfo: free pages × page size; None when the system says neither."""
    def no_file(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(capture_mod, "open", no_file, raising=False)
    sizes = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(capture_mod.os, "sysconf", lambda name: sizes[name])
    assert capture_mod.available_memory() == 4_096_000

    def unknown(name):
        raise ValueError(name)

    monkeypatch.setattr(capture_mod.os, "sysconf", unknown)
    assert capture_mod.available_memory() is None


def test_available_memory_without_a_memavailable_line_uses_the_free_pages(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemFree: 50 kB\n", encoding="ascii")
    real_open = open
    monkeypatch.setattr(capture_mod, "open", lambda path, *a, **k: real_open(meminfo, *a, **k), raising=False)
    monkeypatch.setattr(capture_mod.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 10}[name])
    assert capture_mod.available_memory() == 30


def test_an_encoder_without_a_head_predicts_nothing_even_with_logits():
    import torch

    lm = SimpleNamespace(kind="encoder", tokenizer=None, config=None, summary=SimpleNamespace(head_kind="none"))
    out = SimpleNamespace(logits=torch.zeros(1, 3, 5))
    assert prediction_for(lm, out, [1, 2, 3], 0, "") == Prediction()


def test_a_forward_that_cannot_be_inspected_takes_no_keyword():
    def forward(input_ids, logits_to_keep=0):
        return input_ids

    assert capture_mod._takes(SimpleNamespace(forward=forward), "logits_to_keep") is True
    assert capture_mod._takes(SimpleNamespace(forward=forward), "labels") is False
    assert capture_mod._takes(SimpleNamespace(forward=3), "logits_to_keep") is False


# --------------------------------------------------------------------------------------------
# stored captures
# --------------------------------------------------------------------------------------------
def test_a_model_that_is_not_streamable_is_stored_from_all_its_maps_at_once(loaded, monkeypatch, own_cache):
    from analysis import stream

    lm = loaded("bert")
    memory = capture_mod.capture(lm, TEXT, store=False)

    def no_probe(*a, **k):
        raise AssertionError("a model that does not run eager attention is not probed")

    monkeypatch.setattr(stream, "streamable", lambda model: False)
    monkeypatch.setattr(stream, "probe", no_probe)
    disk = capture_mod.capture(lm, TEXT, store=True)
    assert list(disk.stacks) == ["attentions"]
    np.testing.assert_allclose(np.asarray(disk.stacks["attentions"], np.float32), memory.stacks["attentions"],
                               rtol=2**-10, atol=2**-20)
    # the store belongs to the process that will show it (the window), not to the writer
    shown_by = capture_mod.capture(lm, TEXT, store=True, store_owner=4243)
    assert shown_by.stacks["attentions"].store.owner == 4243
    monkeypatch.setattr(store_mod, "DEFAULT_OWNER", 4244)  # the model process's window
    assert capture_mod.capture(lm, TEXT, store=True).stacks["attentions"].store.owner == 4244


def test_a_streamed_model_without_one_of_its_stacks_is_refused_by_name(loaded, monkeypatch, own_cache):
    from analysis import stream

    lm = loaded("bert")
    plan = stream.Plan("function", {("encoder_attentions", 0): object()}, {})
    monkeypatch.setattr(stream, "probe", lambda *a, **k: plan)
    with pytest.raises(NoAttentionError) as err:
        capture_mod.capture(lm, TEXT, store=True)
    assert str(err.value) == ("BertModel returned no attentions; this architecture does not expose attention maps, "
                              "so Headmap cannot show it")


def test_streamed_maps_of_other_head_counts_than_the_config_are_refused(tiny_model_dir, own_cache):
    from analysis.loader import StackInfo, load_model

    lm = load_model(str(tiny_model_dir("bert")), device="cpu")
    lm = dataclasses.replace(lm, summary=dataclasses.replace(lm.summary, stacks=(StackInfo("attentions", 2, 8),)))
    with pytest.raises(CaptureError) as err:
        capture_mod.capture(lm, TEXT, store=True)
    assert str(err.value) == (
        "BertModel returned attentions of 2 layers × 4 heads but its config describes 2 × 8; its attention is not "
        "one map per configured layer and head (or the config does not belong to the model), so Headmap cannot "
        "show it")


# --------------------------------------------------------------------------------------------
# seq2seq decoder start and generated targets
# --------------------------------------------------------------------------------------------
def _seq2seq(pad=None, bos=None, tok_pad=None, start=None):
    return SimpleNamespace(model=SimpleNamespace(generation_config=SimpleNamespace(decoder_start_token_id=start)),
                           config=SimpleNamespace(decoder_start_token_id=None, pad_token_id=pad, bos_token_id=bos),
                           tokenizer=SimpleNamespace(pad_token_id=tok_pad))


def test_the_decoder_start_falls_back_to_pad_then_bos_then_the_tokenizers_pad():
    assert decoder_start_id(_seq2seq(pad=3, bos=7, tok_pad=5, start=9)) == 9
    assert decoder_start_id(_seq2seq(pad=3, bos=7, tok_pad=5)) == 3
    assert decoder_start_id(_seq2seq(pad=0, bos=7, tok_pad=5)) == 0
    assert decoder_start_id(_seq2seq(bos=7, tok_pad=5)) == 7
    assert decoder_start_id(_seq2seq(tok_pad=5)) == 5


def _generating(seq, pad, start):
    import torch

    lm = _seq2seq(start=start)
    lm.model.generation_config.max_length = None
    lm.model.generate = lambda **kw: torch.tensor([seq])
    lm.tokenizer.pad_token_id = pad
    lm.tokenizer.decode = lambda ids, skip_special_tokens=True: " ".join(str(i) for i in ids)
    return lm


def test_a_generated_target_loses_its_trailing_padding_but_keeps_its_end_token():
    """Beam search pads finished hypotheses: the pads after the EOS (3) go, the EOS stays."""
    lm = _generating([2, 10, 11, 3, 1, 1], pad=1, start=2)
    assert seq2seq_target(lm, {}, None, True, 5, 1, 64, []) == ([2, 10, 11], [10, 11, 3], "10 11 3", True)
    # a pad that is also the start token cannot be told from it: nothing is dropped
    lm = _generating([2, 10, 11, 3, 2, 2], pad=2, start=2)
    assert seq2seq_target(lm, {}, None, True, 5, 1, 64, []) == ([2, 10, 11, 3, 2], [10, 11, 3, 2, 2],
                                                                 "10 11 3 2 2", True)
