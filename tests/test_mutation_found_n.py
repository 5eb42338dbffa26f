"""Behaviours pinned down by mutation testing (group N, the ninth session's sample, seed 41): the
options a CLI run keeps in its session and its last progress report (in this process, where
mutmut sees which tests run the CLI's code), a seq2seq's last decoder hidden state in the mask
report, a wrapped model's folder, and the Model view's selection outside the stack."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from analysis.cli import build_parser, run_headless
from analysis.masks import _hidden
from analysis.session import load_session
from analysis.views import view_data
from analysis.views.spec import ViewSpec
from tests.test_aggregate import make_encoder
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
