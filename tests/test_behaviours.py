"""Behaviours a user sees that no other test held (issue #19: found by planting bugs in analysis/).

Each test names the behaviour it holds; each was checked by breaking the code once by hand (the
README's "Mutation testing" section lists how to look for more).

1. colour ranges: shared over the whole processed stack, cached per display option, per-view from
   the map as shown, the log floor, float16 stacks holding inf
2. special tokens added through the tokenizer's configuration
3. CLI defaults and options: ``--generate``'s 20 tokens, ``--hide-special`` renormalises,
   ``--export-npz`` is float32 for a float16 capture
4. the mask report's pad-column attention, against an independent computation
5. statistics tags at their thresholds; ``broad`` of causal heads
6. continuing a prompt near the model's maximum length
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis.aggregate import LOG_FLOOR, color_norm, hide_tokens, stack_range
from analysis.result import Capture
from analysis.views.common import shared_norm
from analysis.views.heatmap import heatmap_data
from analysis.views.overview import layer_data
from analysis.views.spec import ViewSpec
from tests.test_aggregate import token_seq
from tests.tiny_models import POSITIONS

TEXT = "I like this course"


# ============================================================================================
# 1. colour ranges
# ============================================================================================
# Six tokens, [CLS] and [SEP] special; 3 layers × 4 heads of uniform rows (1/6; 1/4 once the
# specials are hidden and the rows renormalised) with two planted rows in layer 0 (not the layer
# drawn, not the last head):
# * head 2, row 1: [CLS] 0.5, "a" 0.4, "b" "c" "d" 0.02, [SEP] 0.04 -> hidden + renormalised,
#   "a" is 0.4 / 0.46, the largest value of the processed stack
# * head 1, row 0 (the [CLS] row, hidden): "a" 0.95, the largest raw value
PLANTED = 0.4 / 0.46


def _planted_capture(dtype=np.float32) -> Capture:
    a = np.full((3, 4, 6, 6), 1.0 / 6.0)
    a[0, 2, 1] = [0.5, 0.4, 0.02, 0.02, 0.02, 0.04]
    a[0, 1, 0] = [0.01, 0.95, 0.01, 0.01, 0.01, 0.01]
    src = token_seq(["[CLS]", "a", "b", "c", "d", "[SEP]"], special=[True, False, False, False, False, True])
    return Capture(model="planted", kind="encoder", architecture="BertModel", text="a b c d", source=src,
                   stacks={"attentions": a.astype(dtype)})


def _shown(**kw) -> ViewSpec:
    """The window's Head view of the last layer, specials hidden and renormalised, shared range."""
    base = dict(view="head", layer=2, head=3, shared_range=True, hide_special=True, renormalize=True)
    return ViewSpec(**{**base, **kw})


def test_shared_range_covers_every_layer_and_head_of_the_processed_stack():
    cap = _planted_capture()
    keep = ~cap.source.special
    processed = hide_tokens(cap.stacks["attentions"], keep, keep, True)[0]
    d = heatmap_data(cap, _shown())  # layer 2 drawn: its own maps never go above 1/4
    assert d.matrix.max() == pytest.approx(0.25)
    assert d.vmax == pytest.approx(float(processed.max())) == pytest.approx(PLANTED)
    assert d.vmin == 0.0
    # the Layer view of any layer shares the same range
    assert layer_data(cap, _shown(view="layer", layer=1)).norm.vmax == pytest.approx(PLANTED)


def test_shared_range_changes_with_the_hidden_tokens_and_renormalisation():
    cap = _planted_capture()
    name = "attentions"
    # one capture, the same cache: every display option gets its own range
    assert shared_norm(cap, name, _shown(hide_special=False, renormalize=False)).vmax == pytest.approx(0.95)
    assert shared_norm(cap, name, _shown()).vmax == pytest.approx(PLANTED)
    assert shared_norm(cap, name, _shown(renormalize=False)).vmax == pytest.approx(0.4)
    assert shared_norm(cap, name, _shown(hide_special=False, renormalize=False)).vmax == pytest.approx(0.95)
    # and what the view draws follows the toggles, in either order
    assert heatmap_data(cap, _shown(hide_special=False)).vmax == pytest.approx(0.95)
    assert heatmap_data(cap, _shown()).vmax == pytest.approx(PLANTED)


def test_per_view_range_is_the_range_of_the_map_as_shown():
    cap = _planted_capture()
    spec = _shown(layer=0, head=2, shared_range=False)
    d = heatmap_data(cap, spec)
    assert d.vmax == pytest.approx(float(d.matrix.max())) == pytest.approx(PLANTED)  # raw map: 0.5
    assert heatmap_data(cap, replace(spec, renormalize=False)).vmax == pytest.approx(0.4)
    assert heatmap_data(cap, replace(spec, hide_special=False)).vmax == pytest.approx(0.5)
    # the Layer view's per-view range: its processed tiles (raw: 0.95 in the hidden [CLS] row)
    tiles = layer_data(cap, replace(spec, view="layer"))
    assert tiles.norm.vmax == pytest.approx(PLANTED)


def test_log_scale_keeps_its_floor():
    cap = _planted_capture()
    a = np.array(cap.stacks["attentions"], dtype=np.float64)
    a[1, 0, 2] = [0.0, 1e-7, 0.3, 0.3, 0.2, 0.2 - 1e-7]  # far below the floor (kept), an exact zero
    tiny = replace(cap, stacks={"attentions": a.astype(np.float32)})
    for spec in (_shown(scale="log", hide_special=False), _shown(scale="log"),
                 _shown(scale="log", shared_range=False, layer=1, head=0)):
        d = heatmap_data(tiny, spec)
        assert d.vmin == pytest.approx(LOG_FLOOR), spec
        assert float(d.norm(0.0)) == 0.0  # zero gets the lowest colour, not "bad"
    # explicit limits below the floor are raised to it
    n = color_norm(None, "log", 0.0, 0.5)
    assert n.vmin == pytest.approx(LOG_FLOOR) and n.vmax == pytest.approx(0.5)
    n = color_norm(None, "log", 1e-9, 1e-9)
    assert n.vmin == pytest.approx(LOG_FLOOR) and n.vmax > n.vmin


@pytest.mark.parametrize("hide", [False, True])
def test_a_float16_stack_holding_inf_keeps_a_finite_range(hide):
    cap = _planted_capture(np.float16)
    a = np.array(cap.stacks["attentions"])
    a[2, 3, 4, 4] = np.inf  # an overflow in a half-precision run; no NaN anywhere
    cap = replace(cap, stacks={"attentions": a})
    lo, hi = stack_range(cap.stacks["attentions"])
    assert (lo, hi) == (float(np.float16(0.01)), float(np.float16(0.95)))
    d = heatmap_data(cap, _shown(hide_special=hide, renormalize=False))
    assert np.isfinite(d.vmax) and np.isfinite(d.vmin)
    assert d.vmax == pytest.approx(0.4 if hide else 0.95, abs=1e-3)


# ============================================================================================
# 2. special tokens added through the tokenizer's configuration
# ============================================================================================
TOOL = "<|tool|>"


@pytest.fixture(scope="module")
def tool_token_model(tiny_model_dir, tmp_path_factory):
    """The tiny GPT-2 with one more token, added as special through its tokenizer files (in
    ``added_tokens`` with ``special: true``, not among the named special tokens), and its embedding
    grown to match."""
    import transformers
    from tokenizers import AddedToken

    from analysis.loader import load_model

    folder = tmp_path_factory.mktemp("tool-token") / "gpt2"
    shutil.copytree(tiny_model_dir("gpt2"), folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok.add_tokens([AddedToken(TOOL, special=True)])
    tok.save_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(folder)
    added = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert any(t["content"] == TOOL and t["special"] for t in added)
    lm = load_model(str(folder), device="cpu")
    assert lm.tokenizer.convert_tokens_to_ids(TOOL) not in lm.tokenizer.all_special_ids  # the case at hand
    return lm


def test_a_token_the_configuration_marks_special_is_special(tool_token_model):
    from analysis.capture import capture

    cap = capture(tool_token_model, f"{TOOL} I like this course")
    raw = list(cap.source.raw)
    assert TOOL in raw
    at = raw.index(TOOL)
    assert cap.source.special.tolist() == [r == TOOL for r in raw]
    assert cap.source.word_ids[at] == -1
    # hidden by "hide special" (the token is gone from both axes)
    d = heatmap_data(cap, ViewSpec(view="head", head=0, hide_special=True, renormalize=True))
    assert TOOL not in d.row_labels + d.col_labels
    assert len(d.col_labels) == len(raw) - 1
    np.testing.assert_allclose(d.matrix.sum(-1), 1.0, atol=1e-5)


def test_a_token_the_configuration_marks_special_is_shown_in_red(tool_token_model, qtbot):
    from analysis.capture import capture
    from gui.panels import TokenStrip

    cap = capture(tool_token_model, f"{TOOL} I like this course")
    strip = TokenStrip()
    qtbot.addWidget(strip)
    strip.set_tokens(cap.source)
    at = list(cap.source.raw).index(TOOL)
    red = strip.item(0, at).foreground().color().name()
    plain = strip.item(0, at + 1).foreground().color().name()
    assert red == "#b03a2e" and plain != red
    assert "special token" in strip.item(0, at).toolTip()


# ============================================================================================
# 3. CLI defaults and options (in process: the same code as `python main.py`)
# ============================================================================================
def _cli(*args: str) -> None:
    from analysis.cli import main

    assert main(list(args)) == 0


def test_cli_generate_continues_20_tokens_by_default(tiny_model_dir, loaded, tmp_path):
    from analysis.capture import capture

    folder = str(tiny_model_dir("gpt2"))
    out = tmp_path / "x.npz"
    _cli("--model", folder, "--text", TEXT, "--generate", "--device", "cpu", "--quiet", "--export-npz", str(out))
    with np.load(out, allow_pickle=False) as z:
        tokens, ids, att = z["input_tokens"], z["input_ids"], z["attentions"]
    prompt = len(loaded("gpt2").tokenizer(TEXT)["input_ids"])
    # the same as asking for 20 tokens in process (the tiny model never stops early on these)
    cap = capture(loaded("gpt2"), TEXT, generate=True, max_new_tokens=20)
    assert len(cap.source) == prompt + 20
    assert len(tokens) == prompt + 20 and att.shape[-1] == prompt + 20
    assert ids.tolist() == cap.source.ids.tolist()


def test_cli_hide_special_renormalises_as_the_window(tiny_model_dir, loaded, tmp_path):
    from analysis.capture import capture
    from analysis.cli import build_parser, figure_spec
    from analysis.figures import export_figure

    folder = str(tiny_model_dir("bert"))
    args = ["--model", folder, "--text", TEXT, "--device", "cpu", "--hide-special", "--layer", "1", "--dpi", "72"]
    spec = figure_spec(build_parser().parse_args([*args, "--export-png", "x.png"]))
    assert spec.hide_special and spec.renormalize
    cap = capture(loaded("bert"), TEXT)
    window = ViewSpec(view="head", layer=1, head=None, hide_special=True, renormalize=True, dpi=72)
    cli_map, window_map = heatmap_data(cap, spec).matrix, heatmap_data(cap, window).matrix
    np.testing.assert_array_equal(cli_map, window_map)
    np.testing.assert_allclose(cli_map.sum(-1), 1.0, atol=1e-5)  # [CLS]/[SEP] columns gone, rows rescaled
    # the PNG the CLI writes is the window's figure
    png = tmp_path / "cli.png"
    _cli(*args, "--quiet", "--export-png", str(png))
    again = export_figure(cap, window, tmp_path / "window.png")
    import matplotlib.image as mpimg

    np.testing.assert_array_equal(mpimg.imread(png), mpimg.imread(again))


def test_cli_export_npz_is_float32_for_a_float16_capture(loaded, tmp_path):
    from analysis.capture import capture
    from analysis.npz import npz_arrays
    from analysis.session import save_session

    cap = capture(loaded("bart"), TEXT, target="J'aime ce cours", store_dtype=np.float16)
    assert {a.dtype for a in cap.stacks.values()} == {np.dtype(np.float16)}
    for name, arr in npz_arrays(cap).items():
        if name.endswith("attentions"):
            assert arr.dtype == np.float32, name
            np.testing.assert_array_equal(arr, cap.stacks[name].astype(np.float32))
    session = tmp_path / "half.headmap"
    save_session(session, cap, model_ref="tiny-bart", inputs={"text": TEXT}, options={})
    out = tmp_path / "half.npz"
    _cli("--session", str(session), "--quiet", "--export-npz", str(out))
    with np.load(out, allow_pickle=False) as z:
        for name in cap.stack_names:
            assert z[name].dtype == np.float32, name
            np.testing.assert_array_equal(z[name], cap.stacks[name].astype(np.float32))


# ============================================================================================
# 4. the mask report: attention on pad columns without the mask
# ============================================================================================
@pytest.mark.parametrize("arch,side", [("bert", "right"), ("gpt2", "left")])
def test_unmasked_pad_attention_equals_an_independent_computation(arch, side, loaded, tmp_path):
    import torch

    from analysis.masks import padding_experiment, write_mask_report

    lm = loaded(arch)
    pair = "We are learning about attention in transformers and their heads"
    r = padding_experiment(lm, TEXT, pair, padding_side=side)
    tok = lm.tokenizer
    ids, other = tok(TEXT)["input_ids"], tok(pair)["input_ids"]
    n_pad = len(other) - len(ids)
    assert n_pad > 0
    row0 = [r.pad_token_id] * n_pad + ids if side == "left" else ids + [r.pad_token_id] * n_pad
    real = np.arange(n_pad, len(other)) if side == "left" else np.arange(len(ids))
    pads = np.arange(n_pad) if side == "left" else np.arange(len(ids), len(other))
    kw = {"use_cache": False} if lm.kind == "decoder" else {}
    with torch.no_grad():  # no attention mask at all: the pads look like tokens
        out = lm.model(input_ids=torch.tensor([row0, other]), output_attentions=True, **kw)
    # per layer and head, per real query row: the total weight on the pad columns; then the mean
    per_row = [layer[0].numpy()[:, real][:, :, pads].sum(-1) for layer in out.attentions]
    want = float(np.mean(per_row))
    assert r.pad_positions == tuple(pads.tolist()) and r.real_positions == tuple(real.tolist())
    assert r.unmasked_pad_attention_mass == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert r.unmasked_pad_attention_mass > 0.01  # the leak is there to be measured
    assert r.pad_attention_max == pytest.approx(0.0, abs=1e-6)  # and the mask removes it
    written = json.loads(write_mask_report(r, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert written["unmasked_pad_attention_mass"] == pytest.approx(want, rel=1e-5, abs=1e-7)


# ============================================================================================
# 5. statistics tags
# ============================================================================================
def test_tags_hold_at_exactly_their_thresholds():
    from analysis.stats import (
        BROAD_THRESHOLD,
        NEXT_THRESHOLD,
        PREVIOUS_THRESHOLD,
        SELF_THRESHOLD,
        head_tags,
        max_entropy,
    )

    rules = {"previous-token": ("to_previous", PREVIOUS_THRESHOLD), "next-token": ("to_next", NEXT_THRESHOLD),
             "self": ("to_self", SELF_THRESHOLD), "first-token": ("to_first", 0.5),
             "special": ("to_special", 0.5), "punctuation": ("to_punctuation", 0.5)}
    for tag, (stat, threshold) in rules.items():
        stats = {s: np.zeros((1, 3)) for s, _ in rules.values()}
        stats["entropy"] = np.zeros((1, 3))
        stats[stat][0] = [threshold, np.nextafter(threshold, 0.0), np.nan]
        tags = head_tags(stats, causal=False, n_keys=6)[0]
        assert tags == [(tag,), (), ()], tag
    # broad: the normalised entropy at exactly 0.9 (K = 10: ln 10 · 0.9 / ln 10 is exactly 0.9 in float64)
    top = max_entropy(10, causal=False)
    assert BROAD_THRESHOLD * top / top == BROAD_THRESHOLD
    stats = {s: np.zeros((1, 2)) for s, _ in rules.values()}
    stats["entropy"] = np.array([[BROAD_THRESHOLD * top, np.nextafter(BROAD_THRESHOLD * top, 0.0)]])
    assert head_tags(stats, causal=False, n_keys=10)[0] == [("broad",), ()]


def test_broad_of_a_causal_stack_is_against_the_causal_maximum():
    from analysis.aggregate import causal_mask
    from analysis.stats import BROAD_THRESHOLD, max_entropy, stats_rows

    S = 7
    uniform_causal = np.where(causal_mask(S, S), 0.0, 1.0) / np.arange(1, S + 1)[:, None]
    # head 0: uniform over what each row sees (normalised entropy 1 against the causal maximum,
    # 0.63 against ln 7); head 1: the same with the last row's entropy lowered a little
    a = np.stack([uniform_causal, uniform_causal])
    a[1, -1] = [0.94] + [0.01] * (S - 1)
    src = token_seq(["The", "cat", "sat", "on", "the", "mat", "today"])
    dec = Capture(model="causal", kind="decoder", architecture="GPT2LMHeadModel", text="x", source=src,
                  stacks={"attentions": a[None].astype(np.float32)})
    enc = replace(dec, kind="encoder", architecture="BertModel")
    assert np.log(S) * BROAD_THRESHOLD > max_entropy(S, causal=True)  # ln K would never call them broad
    dec_tags = [row["tags"] for row in stats_rows(dec)]
    enc_tags = [row["tags"] for row in stats_rows(enc)]
    assert "broad" in dec_tags[0].split(";")
    assert "broad" not in enc_tags[0].split(";")  # the same map, as full attention: not broad
    head1 = float(np.mean([-(r[r > 0] * np.log(r[r > 0])).sum() for r in a[1].astype(np.float32)]))
    expected = head1 / max_entropy(S, causal=True) >= BROAD_THRESHOLD
    assert ("broad" in dec_tags[1].split(";")) == expected


# ============================================================================================
# 6. continuing a prompt near the maximum length
# ============================================================================================
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_prompt_near_the_maximum_is_shortened_so_the_continuation_fits(arch, loaded):
    from analysis.capture import capture

    lm = loaded(arch)
    assert lm.summary.max_positions == POSITIONS
    long_text = " ".join(["The students are reading and writing and thinking"] * 12)
    assert len(lm.tokenizer(long_text)["input_ids"]) > POSITIONS
    new = 10
    cap = capture(lm, long_text, generate=True, max_new_tokens=new)
    assert cap.prompt_length == POSITIONS - new
    assert cap.truncated and any(f"truncated to {POSITIONS - new} tokens" in n for n in cap.notes)
    assert cap.prompt_length < len(cap.source) <= POSITIONS
    assert cap.stacks["attentions"].shape[-1] == len(cap.source)


def test_a_continuation_as_long_as_the_model_is_refused(loaded):
    from analysis.capture import capture
    from analysis.errors import InputError

    with pytest.raises(InputError, match=f"at most {POSITIONS} tokens"):
        capture(loaded("gpt2"), TEXT, generate=True, max_new_tokens=POSITIONS)
    cap = capture(loaded("gpt2"), TEXT, generate=True, max_new_tokens=POSITIONS - 8)
    assert cap.prompt_length == len(loaded("gpt2").tokenizer(TEXT)["input_ids"]) and not cap.truncated
    assert len(cap.source) <= POSITIONS


def test_tiny_models_positions_are_what_these_tests_assume(tiny_model_dir):
    cfg = json.loads((Path(tiny_model_dir("gpt2")) / "config.json").read_text(encoding="utf-8"))
    assert cfg["n_positions"] == POSITIONS
