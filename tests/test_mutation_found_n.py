"""Behaviours pinned down by mutation testing (group N, the ninth session's sample, seed 41): the
options a CLI run keeps in its session and its last progress report (in this process, where
mutmut sees which tests run the CLI's code), a seq2seq's last decoder hidden state in the mask
report, a wrapped model's folder, and the Model view's selection outside the stack."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.aggregate import value_range
from analysis.alignment import AlignmentResult
from analysis.cli import build_parser, run_headless
from analysis.masks import _hidden
from analysis.result import Capture
from analysis.session import load_session
from analysis.themes import get_theme
from analysis.views import view_data
from analysis.views.alignment import AlignmentData, AlignmentDrawer
from analysis.views.lines import ROW_BLOCK
from analysis.views.spec import ViewSpec
from tests.test_aggregate import make_encoder, random_stack, token_seq
from tests.test_cli_exports import TEXT

TARGET = "j'aime ce cours"


# --------------------------------------------------------------------------------------------
# the CLI, in this process
# --------------------------------------------------------------------------------------------
def test_a_cli_run_keeps_its_options_in_the_session_and_reports_done(tiny_model_dir, tmp_path):
    session = tmp_path / "s.headmap"
    argv = ["--model", str(tiny_model_dir("marian")), "--text", TEXT, "--target", TARGET, "--device", "cpu",
            "--view", "head", "--stack", "cross", "--layer", "1", "--head", "0", "--theme", "dark",
            "--aggregate", "max", "--save-session", str(session)]
    seen, said = [], []
    assert run_headless(build_parser().parse_args(argv), lambda *r: seen.append(r), said.append) == 0
    assert seen[-1] == ("write", 1.0, "done")
    assert dict(load_session(session).options) == {
        "dtype": "auto", "device": "cpu", "view": "head", "stack": "cross", "layer": 1, "head": 0,
        "aggregate": "max", "theme": "dark", "group": "pieces"}


# --------------------------------------------------------------------------------------------
# the mask report's hidden states
# --------------------------------------------------------------------------------------------
def test_the_seq2seq_hidden_states_compared_are_the_last_layers():
    """The decoder's last hidden state is the last of ``decoder_hidden_states`` (the embeddings
    come first), taken from the batch row asked for."""
    dec = tuple(torch.full((2, 3, 4), float(i)) + torch.arange(2.0)[:, None, None] * 10 for i in range(3))
    out = SimpleNamespace(encoder_last_hidden_state=torch.full((2, 5, 4), 7.0), decoder_hidden_states=dec)
    got = _hidden(out, "seq2seq", 1)
    np.testing.assert_array_equal(got["decoder_last_hidden_state"], np.full((3, 4), 12.0, np.float32))
    np.testing.assert_array_equal(got["encoder_last_hidden_state"], np.full((5, 4), 7.0, np.float32))


# --------------------------------------------------------------------------------------------
# the Model view
# --------------------------------------------------------------------------------------------
def test_the_model_view_selects_no_tile_for_a_layer_outside_the_stack():
    """A layer from a deeper model (or below 0) selects nothing; a layer of the stack does."""
    cap = make_encoder()  # 3 layers
    assert view_data(cap, ViewSpec(view="model", layer=2, head=1)).selected == (2, 1)
    for layer in (3, 9, -1):
        assert view_data(cap, ViewSpec(view="model", layer=layer, head=1)).selected is None


# --------------------------------------------------------------------------------------------
# the Alignment view
# --------------------------------------------------------------------------------------------
def _alignment(src: tuple[str, ...], tgt: tuple[str, ...]) -> AlignmentData:
    m = np.full((len(tgt), len(src)), 1.0 / len(src))
    return AlignmentData(AlignmentResult(m, ((0, 0),), 0, None), src, tgt, None, 0, None, False, "title", "viridis")


def test_the_alignment_rows_names_take_the_themes_grid_colour():
    """"source" and "translation" beside the links are drawn in the theme's grid colour (dark
    theme, drawn outside any rc context)."""
    theme = get_theme("dark")
    drawer = AlignmentDrawer(Figure(figsize=(6, 5)), theme)
    drawer.draw(_alignment(("I", "like"), ("나는", "좋아")))
    names = {t.get_text(): t.get_color() for t in drawer.ax_links.texts}
    assert names["source"] == names["translation"] == theme.grid_color


def test_word_labels_turn_once_short_words_pass_seventy_characters_counted_three_each():
    """Words of up to three characters count three each: 23 fit upright (69), 24 turn (72)."""
    drawer = AlignmentDrawer(Figure(figsize=(6, 5)), get_theme("light"))
    for n, turned in ((23, False), (24, True)):
        words = tuple(f"w{i % 10}" for i in range(n))  # two characters each
        assert drawer._rotate(_alignment(words, words[:2])) is turned, n


# --------------------------------------------------------------------------------------------
# the Lines view
# --------------------------------------------------------------------------------------------
def test_the_lines_of_a_map_longer_than_two_row_blocks_all_have_their_strength():
    """Strengths are computed a block of rows at a time: every row, past the second block too."""
    n = 2 * ROW_BLOCK + 40
    rng = np.random.default_rng(2)
    cap = Capture(model="m", kind="encoder", architecture="BertModel", text="x",
                  source=token_seq([f"t{i}" for i in range(n)], special=[False] * n),
                  stacks={"attentions": random_stack(rng, 1, 1, n, n)})
    d = view_data(cap, ViewSpec(view="lines", layer=0, head=0))
    norm = Normalize(*value_range(cap.stacks["attentions"][0, 0]))
    np.testing.assert_allclose(d.strength[0], np.clip(norm(cap.stacks["attentions"][0, 0]), 0, 1), atol=1e-6)
    assert d.strength[0, -1].max() > 0

