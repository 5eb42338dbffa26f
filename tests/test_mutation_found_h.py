"""Behaviours pinned down by mutation testing (group H, fifth session): devices a Mac or a GPU
offers, the boundary of truncation, control characters in a word, a link exactly at the drawing
threshold, and flow through a graph that is causal but for a band above the diagonal."""

from __future__ import annotations

import numpy as np
import pytest

# --------------------------------------------------------------------------------------------
# loader: the devices offered
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (False, False, ["auto", "cpu"]),
    (True, False, ["auto", "cpu", "cuda"]),
    (False, True, ["auto", "cpu", "mps"]),
    (True, True, ["auto", "cpu", "cuda", "mps"]),
])
def test_the_devices_offered_are_the_ones_torch_has(monkeypatch, cuda, mps, expected):
    """A Mac's GPU (mps) and an NVIDIA GPU (cuda) are offered when torch reports them."""
    import torch

    from analysis.loader import available_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert available_devices() == expected


# --------------------------------------------------------------------------------------------
# capture: truncation at exactly the limit
# --------------------------------------------------------------------------------------------
def test_an_input_of_exactly_the_limit_is_not_truncated(loaded):
    """A text whose tokens fill the limit exactly is kept whole (no "truncated" note); one token
    more is cut to the limit."""
    from analysis.capture import encode

    lm = loaded("bert")
    text = "I like this course"
    n = len(lm.tokenizer(text)["input_ids"])
    enc, _, truncated, kept = encode(lm, text, n)
    assert not truncated and kept == text and enc["input_ids"].shape[-1] == n
    enc, _, truncated, kept = encode(lm, text, n - 1)
    assert truncated and enc["input_ids"].shape[-1] == n - 1 and kept != text


# --------------------------------------------------------------------------------------------
# words: control characters inside a word
# --------------------------------------------------------------------------------------------
def test_a_words_control_characters_are_shown_as_marks_or_spaces():
    """A line break inside a word's text shows as ↵, a tab or other control character as a space
    (a label never breaks a figure's line)."""
    from analysis.words import _word_text

    assert _word_text(["a\nb"], [False], "word") == "a↵b"
    assert _word_text(["a\tb"], [False], "word") == "a b"
    assert _word_text(["a\x07b"], [False], "word") == "a b"


# --------------------------------------------------------------------------------------------
# alignment view: the drawing threshold is inclusive
# --------------------------------------------------------------------------------------------
def test_a_link_exactly_at_the_drawing_threshold_is_drawn():
    """Links of at least a tenth of the strongest weight are drawn: one of exactly a tenth too."""
    from matplotlib.figure import Figure

    from analysis.alignment import AlignmentResult
    from analysis.themes import get_theme
    from analysis.views.alignment import AlignmentData, AlignmentDrawer

    m = np.array([[0.5, 0.05, 0.0], [0.0, 0.0, 0.5]])  # 0.05 = 0.1 × 0.5 exactly
    res = AlignmentResult(m, ((0, 0), (2, 1)), 0, None)  # (source, translation) word pairs
    d = AlignmentData(res, ("I", "like", "it"), ("나는", "좋아"), None, 0, None, False, "title", "viridis")
    drawer = AlignmentDrawer(Figure(figsize=(6, 5)), get_theme("light"))
    drawer.draw(d)
    assert drawer.n_soft == len(drawer.soft_lines.get_segments()) == 3  # 0.5, 0.05 and 0.5
    assert drawer.n_best == 2


# --------------------------------------------------------------------------------------------
# rollout: a graph with a band above the diagonal is not causal
# --------------------------------------------------------------------------------------------
def test_flow_reaches_a_later_token_through_a_band_above_the_diagonal():
    """Each token attends to itself and to the next one (a band just above the diagonal): the
    graph is not causal, and flow from a later input token to an earlier output is not zero."""
    from analysis.rollout import layered_max_flow

    n = 5
    band = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)
    band[-1, -1] = 1.0
    trans = np.stack([band] * 3)
    outs, ins = np.array([0, 0, 1, 0]), np.array([2, 3, 2, 4])
    got = layered_max_flow(trans, outs, ins)
    # three layers reach at most three tokens ahead (0 ← 1 ← 2 ← 3), not four
    assert got[0] > 0.1 and got[1] > 0.1 and got[2] > 0.1 and got[3] == 0.0


# --------------------------------------------------------------------------------------------
# stream: which models stream
# --------------------------------------------------------------------------------------------
def test_a_model_whose_config_names_no_attention_runs_eager_and_streams():
    """transformers' default is eager attention: a config without ``_attn_implementation`` (or no
    config) streams; SDPA and flash attention do not."""
    from types import SimpleNamespace

    from analysis.stream import streamable

    assert streamable(SimpleNamespace(config=SimpleNamespace()))
    assert streamable(SimpleNamespace())
    assert streamable(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager")))
    assert not streamable(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")))
    assert not streamable(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))


# --------------------------------------------------------------------------------------------
# pyramid image: sampling cells into pixels, both ways and both axes
# --------------------------------------------------------------------------------------------
def test_fewer_cells_than_pixels_take_the_cell_under_each_pixels_centre():
    from analysis.views.pyramid_image import _sample

    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    pos = np.linspace(0.0, 3.0, 7)  # 6 pixels over 3 cells: two each
    np.testing.assert_array_equal(_sample(a, pos, 1), [[1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6]])
    np.testing.assert_array_equal(_sample(a, np.linspace(0.0, 2.0, 5), 0), [[1, 2, 3], [1, 2, 3], [4, 5, 6], [4, 5, 6]])
    np.testing.assert_array_equal(_sample(a, pos[::-1], 1), [[3, 3, 2, 2, 1, 1], [6, 6, 5, 5, 4, 4]])


@pytest.mark.parametrize("axis", [0, 1])
def test_many_cells_a_pixel_take_their_largest_along_either_axis(axis):
    """Ten cells in one pixel (the reduction path) and five in each of two: the largest of each,
    NaN ignored, along the axis sampled and not the other."""
    from analysis.views.pyramid_image import _sample

    a = np.arange(30.0).reshape(3, 10)
    a[1, 9] = np.nan
    a = a if axis == 1 else a.T
    one = _sample(a, np.array([0.0, 10.0]), axis)
    np.testing.assert_array_equal(one.ravel(), [9.0, 18.0, 29.0])
    assert one.shape == ((3, 1) if axis == 1 else (1, 3))
    two = _sample(a, np.array([0.0, 5.0, 10.0]), axis)
    expected = np.array([[4.0, 9.0], [14.0, 18.0], [24.0, 29.0]])
    np.testing.assert_array_equal(two, expected if axis == 1 else expected.T)


# --------------------------------------------------------------------------------------------
# cli: a session is named in its errors
# --------------------------------------------------------------------------------------------
def test_a_sessions_error_names_the_session_file(tmp_path):
    """``--session enc.headmap --stack cross``: the error names the session file, as it names
    ``--model``'s reference."""
    from analysis.cli import build_parser, run_headless
    from analysis.errors import InputError
    from analysis.session import save_session
    from tests.test_aggregate import make_encoder

    path = save_session(tmp_path / "enc.headmap", make_encoder(), model_ref="toy-bert", inputs={"text": "x"},
                        options={})
    args = build_parser().parse_args(["--session", str(path), "--stack", "cross", "--export-png",
                                      str(tmp_path / "out.png")])
    with pytest.raises(InputError) as err:
        run_headless(args)
    assert str(err.value) == (f"--stack cross needs a seq2seq model; the session {path} is an encoder model "
                              "with one stack")
    assert not (tmp_path / "out.png").exists()


# --------------------------------------------------------------------------------------------
# host: a model process that ends at once leaves nothing half-written
# --------------------------------------------------------------------------------------------
def test_ending_the_model_process_at_once_removes_its_half_written_files_and_stores(tmp_path, monkeypatch):
    """``_exit_now`` (the model process's end from any thread) removes the array files it has not
    handed over and the store folders it is writing, then exits with the code given. Run here with
    ``os._exit`` caught, as the model process would run it."""
    import os

    import analysis.host as host
    import analysis.store as store

    array = tmp_path / "arena-w1-0.npy"
    array.write_bytes(b"half")
    folder = tmp_path / "store-half"
    (folder / "maps").mkdir(parents=True)
    (folder / "maps" / "layer0.bin").write_bytes(b"half")
    monkeypatch.setattr(host, "_WRITING", {str(array)})
    monkeypatch.setattr(store, "WRITING", {str(folder)})

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(Exited) as ended:
        host._exit_now(3)
    assert ended.value.args == (3,)
    assert not array.exists() and not folder.exists()


# --------------------------------------------------------------------------------------------
# masks: the padding report's fields
# --------------------------------------------------------------------------------------------
def test_the_padding_report_holds_the_pairs_tokens_and_the_position_ids_passed(loaded):
    """Left padding in a decoder that takes position ids: the masked run's ids follow the mask
    (cumsum − 1, as generate does) and the report holds them; the pair's row is labelled by its
    own tokens."""
    from analysis.capture import capture
    from analysis.masks import padding_experiment

    lm = loaded("llama")
    pair = "the students are reading a long book today"
    r = padding_experiment(lm, "I like this course", pair, padding_side="left")
    assert r.pair_tokens == capture(lm, pair).source.display  # the pair's tokens, as a capture shows them
    assert r.position_ids is not None and r.position_ids.shape == r.attention_mask.shape
    np.testing.assert_array_equal(r.position_ids, np.maximum(np.cumsum(r.attention_mask, -1) - 1, 0))
    assert r.to_json()["position_ids_passed"] is True
    right = padding_experiment(lm, "I like this course", pair, padding_side="right")
    assert right.position_ids is None and right.to_json()["position_ids_passed"] is False


def test_a_tokenizer_without_pad_or_eos_pads_with_the_configured_id():
    """Neither a pad nor an EOS token: the batch is padded with the config's pad id (else 0), named
    by its token."""
    from types import SimpleNamespace

    from analysis.masks import _pad_token

    class Tok:
        pad_token_id = eos_token_id = None

        @staticmethod
        def convert_ids_to_tokens(ids):
            return [f"<tok{i}>" for i in ids]

    lm = SimpleNamespace(tokenizer=Tok(), config=SimpleNamespace(pad_token_id=7))
    assert _pad_token(lm) == (7, "<tok7>", "this tokenizer has neither a pad nor an EOS token; the batch is "
                                           "padded with id 7 ('<tok7>')")
    lm = SimpleNamespace(tokenizer=Tok(), config=SimpleNamespace())
    assert _pad_token(lm)[:2] == (0, "<tok0>")


# --------------------------------------------------------------------------------------------
# cli: what --save-session records of the inputs
# --------------------------------------------------------------------------------------------
def test_a_saved_session_records_the_target_and_the_other_inputs(tiny_model_dir, tmp_path):
    """A session saved by the CLI holds the inputs the window puts back into its fields."""
    from analysis.session import load_session
    from tests.test_cli_exports import cli

    path = tmp_path / "s.headmap"
    res = cli("--model", str(tiny_model_dir("marian")), "--text", "I like this course", "--target", "j'aime ce cours",
              "--device", "cpu", "--save-session", str(path))
    assert res.returncode == 0, res.stderr
    inputs = load_session(path).inputs
    assert inputs["text"] == "I like this course" and inputs["target"] == "j'aime ce cours"
    assert inputs["generate"] is False


def test_flow_progress_counts_each_token_pair_once():
    """Pairs settled on a sparser subgraph are not solved again: the progress never counts more
    pairs than there are, and ends at all of them."""
    import re

    from analysis.rollout import layered_max_flow
    from analysis.tasks import TaskState

    rng = np.random.default_rng(0)
    n = 16
    a = rng.random((4, n, n)) ** 6
    a /= a.sum(-1, keepdims=True)
    seen: list[str] = []
    layered_max_flow(a, np.repeat(np.arange(n), n), np.tile(np.arange(n), n),
                     task=TaskState(lambda stage, fraction, message: seen.append(message)))
    counts = [tuple(map(int, re.fullmatch(r"attention flow: (\d+) of (\d+) token pairs", m).groups())) for m in seen]
    assert len(counts) > 2 and all(done <= total == n * n for done, total in counts)
    assert counts[-1] == (n * n, n * n) and [d for d, _ in counts] == sorted(d for d, _ in counts)


# --------------------------------------------------------------------------------------------
# loader: RoBERTa's position table starts after the padding index
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert"])
def test_roberta_family_inputs_are_two_positions_shorter_than_the_table(model_type):
    from types import SimpleNamespace

    from analysis.loader import max_positions

    assert max_positions(SimpleNamespace(model_type=model_type, max_position_embeddings=514)) == 512
    assert max_positions(SimpleNamespace(model_type="bert", max_position_embeddings=512)) == 512


@pytest.mark.parametrize(("config", "expected"), [
    # T5's own names, as a configuration written by remote code spells them (no attribute map)
    ({"num_layers": 2, "num_decoder_layers": 3, "num_heads": 4}, ((2, 4), (3, 4), (3, 4))),
    # BART's
    ({"encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 8, "decoder_attention_heads": 2},
     ((2, 8), (1, 2), (1, 2))),
    # only the generic names
    ({"num_hidden_layers": 5, "num_attention_heads": 6}, ((5, 6), (5, 6), (5, 6))),
])
def test_seq2seq_stacks_read_every_spelling_of_layers_and_heads(config, expected):
    from types import SimpleNamespace

    from analysis.loader import stack_infos

    got = stack_infos(SimpleNamespace(**config), "seq2seq")
    assert [s.name for s in got] == ["encoder_attentions", "decoder_attentions", "cross_attentions"]
    assert tuple((s.layers, s.heads) for s in got) == expected


# --------------------------------------------------------------------------------------------
# loader: dtype "auto" follows the checkpoint's half precision on a GPU only
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("device", "stored", "expected"), [
    ("cuda", "torch.bfloat16", "bfloat16"), ("cuda", "bfloat16", "bfloat16"), ("mps", "torch.float16", "float16"),
    ("cuda", "float16", "float16"), ("cuda", "torch.float32", "float32"), ("cuda", None, "float32"),
    ("cpu", "torch.bfloat16", "float32"), ("cpu", "float16", "float32"),
])
def test_auto_dtype_keeps_a_half_precision_checkpoint_half_on_a_gpu(device, stored, expected):
    from types import SimpleNamespace

    import torch

    from analysis.loader import _torch_dtype

    value = getattr(torch, stored.split(".")[1]) if stored and stored.startswith("torch.") else stored
    assert _torch_dtype("auto", device, SimpleNamespace(dtype=value)) == getattr(torch, expected)
    assert _torch_dtype("float16", "cpu", SimpleNamespace(dtype=value)) == torch.float16  # asked for: kept


# --------------------------------------------------------------------------------------------
# mask lab: the view data names the stack it shows
# --------------------------------------------------------------------------------------------
def test_the_mask_labs_data_names_the_stack_it_shows(loaded):
    from analysis.figures import ViewSpec
    from analysis.masks import padding_experiment
    from analysis.views.masks import masks_data

    report = padding_experiment(loaded("marian"), "I like this course", "the students are reading a long book")
    assert masks_data(report, ViewSpec(view="masks")).stack == "encoder_attentions"
    assert masks_data(report, ViewSpec(view="masks", stack="decoder")).stack == "decoder_attentions"
    assert masks_data(report, ViewSpec(view="masks", stack="cross")).stack == "cross_attentions"
    assert masks_data(report, ViewSpec(view="masks", stack="cross")).mode == "padding"
