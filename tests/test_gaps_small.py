"""Small behaviours no test reached (found by a branch-coverage run of the whole suite): the CLI's
--debug and its disk-limit note, max-flow's input checks, word ids without offsets, token styles,
and the views' edges (a layer view's empty tile, the Stats view outside its cells, Compare without
A, word-level seq2seq axis titles, an empty causal-mask outline, a damaged alignment.json, an image
scrolled out of its axes)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.result import Capture
from analysis.themes import get_theme
from analysis.views import view_data
from analysis.views.spec import ViewSpec
from tests.test_aggregate import random_stack, token_seq

TEXT = "I like this course"


# -- CLI ----------------------------------------------------------------------------------------
def _cli(*argv: str) -> int:
    from analysis.cli import main

    return main(list(argv))


def test_debug_shows_the_traceback_of_an_unexpected_error(monkeypatch, tmp_path, capsys):
    """Without --debug one line; with it the exception itself (its traceback) reaches the user."""
    import analysis.cli as cli_mod

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_mod, "run_headless", broken)
    argv = ("--model", "bundled:minilm", "--text", TEXT, "--export-npz", str(tmp_path / "x.npz"))
    assert _cli(*argv) == 1
    assert capsys.readouterr().err == "error: unexpected RuntimeError: boom; rerun with --debug for details\n"
    with pytest.raises(RuntimeError, match="boom"):
        _cli(*argv, "--debug")


def test_debug_still_says_out_of_memory_in_one_line(monkeypatch, tmp_path, capsys):
    import analysis.cli as cli_mod

    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(cli_mod, "run_headless", oom)
    assert _cli("--model", "bundled:minilm", "--text", TEXT, "--export-npz", str(tmp_path / "x.npz"), "--debug") != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_debug_leaves_the_libraries_talking(monkeypatch):
    from analysis.cli import _quiet_libraries

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    _quiet_libraries(True)
    import os

    assert "TRANSFORMERS_VERBOSITY" not in os.environ and "TQDM_DISABLE" not in os.environ
    _quiet_libraries(False)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["TQDM_DISABLE"] == "1"


def test_a_capture_cut_by_the_disk_limit_says_why_in_its_notes(monkeypatch, tmp_path, tiny_model_dir, capsys):
    """When the default token limit is lower than the model's maximum (a small disk) and the text
    was cut to it, the sentence saying why is among the run's notes; an uncut text has no such note."""
    import analysis.capture as capture_mod

    why = "the default limit is 6 tokens: the disk of the stores folder has room for no more"
    monkeypatch.setattr(capture_mod, "default_max_tokens", lambda summary, root=None, free=None: (6, why))
    model = str(tiny_model_dir("bert"))
    long = "I like this course and I like this book and that film too"
    assert _cli("--model", model, "--text", long, "--device", "cpu", "--export-npz", str(tmp_path / "a.npz")) == 0
    err = capsys.readouterr().err
    assert why in err
    with np.load(tmp_path / "a.npz") as z:
        assert z["attentions"].shape[-1] == 6
    assert _cli("--model", model, "--text", "I", "--device", "cpu", "--export-npz", str(tmp_path / "b.npz")) == 0
    assert why not in capsys.readouterr().err


# -- max flow's inputs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trans", "outs", "ins", "message"),
    [
        (np.ones((2, 3, 4)), [0], [0], r"transitions must be \[T >= 1, S, S\]; got \(2, 3, 4\)"),
        (np.ones((0, 3, 3)), [0], [0], r"transitions must be \[T >= 1, S, S\]; got \(0, 3, 3\)"),
        (np.ones((3, 3)), [0], [0], r"transitions must be \[T >= 1, S, S\]; got \(3, 3\)"),
        (np.full((1, 2, 2), np.inf), [0], [0], "capacities must be finite"),
        (np.full((1, 2, 2), np.nan), [0], [0], "capacities must be finite"),
        (-np.eye(2)[None], [0], [0], "capacities must be non-negative"),
        (np.ones((1, 2, 2)), [0, 1], [0], "outputs and inputs must have the same length"),
    ],
)
def test_max_flow_refuses_inputs_it_cannot_solve(trans, outs, ins, message):
    from analysis.rollout import layered_max_flow

    with pytest.raises(ValueError, match=message):
        layered_max_flow(trans, outs, ins)


def test_max_flow_through_zero_capacities_is_zero():
    from analysis.rollout import _integer_capacities, layered_max_flow

    trans = np.zeros((3, 4, 4))
    assert layered_max_flow(trans, [0, 3], [1, 2]).tolist() == [0.0, 0.0]
    ints, scale = _integer_capacities(trans)
    assert ints.dtype == np.int64 and not ints.any() and scale == 1.0


# -- tokens -------------------------------------------------------------------------------------
def test_without_offsets_every_non_special_token_is_its_own_word():
    from analysis.tokens import word_ids_by_display

    assert word_ids_by_display(["[CLS]", "un", "##like", "[SEP]"], [True, False, False, True]) == [-1, 0, 1, -1]
    assert word_ids_by_display([], []) == []


def test_token_seq_without_offsets_numbers_words_by_token(tiny_model_dir):
    from transformers import AutoTokenizer

    from analysis.tokens import token_seq as build

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    ids = tok("I like this course")["input_ids"]
    seq = build(tok, ids, text="I like this course", offsets=None)
    special = list(seq.special)
    assert special[0] and special[-1]
    assert list(seq.word_ids) == [-1, *range(len(ids) - 2), -1]


@pytest.mark.parametrize(
    ("style", "name"),
    [
        (dict(byte_level=True, wordpiece_prefix="##"), "byte-bpe"),
        (dict(wordpiece_prefix="##", metaspace="▁"), "wordpiece"),
        (dict(metaspace="▁"), "sentencepiece"),
        (dict(), "word"),
    ],
)
def test_token_style_names(style, name):
    from analysis.tokens import STYLE_NAMES, TokenizerStyle, style_name

    assert style_name(TokenizerStyle(**style)) == name and name in STYLE_NAMES


# -- views --------------------------------------------------------------------------------------
def _enc(n_layers: int = 2, n_heads: int = 3, n: int = 4) -> Capture:
    a = random_stack(np.random.default_rng(0), n_layers, n_heads, n, n)
    return Capture(model="m", kind="encoder", architecture="BertModel", text="a b",
                   source=token_seq([f"t{i}" for i in range(n)]), stacks={"attentions": a})


def test_the_layer_views_empty_tiles_are_no_head():
    """5 heads tile as 3 + 2: the sixth place is empty, pointing there selects nothing."""
    d = view_data(_enc(n_heads=5), ViewSpec(view="layer"))
    m = d.mosaic
    assert (m.rows, m.cols) == (2, 3)
    h, w = m.cell
    centre = lambda r, c: (r * (h + m.gap) + h // 2, c * (w + m.gap) + w // 2)  # noqa: E731
    assert d.tile_at(*centre(1, 1)) == (1, 1)
    assert d.tile_at(*centre(1, 2)) is None
    assert m.tile_at(*centre(1, 2)) == (1, 2)  # the grid has the place; the data has no head there


def test_the_stats_view_points_at_no_head_outside_its_cells():
    from analysis.views.stats import StatsData, StatsDrawer

    values = np.array([[0.2, 0.9, 0.1], [0.4, np.nan, 0.3]])
    drawer = StatsDrawer(Figure(figsize=(5, 4)), get_theme("light"))
    drawer.draw(StatsData("attentions", "entropy", values, (), (0, 0), "", "t", ""))
    assert drawer.cell_at(2.4, 1.4) == (1, 2)
    assert drawer.cell_at(-0.4, -0.4) == (0, 0)
    for x, y in ((None, 0.0), (0.0, None), (-0.6, 0.0), (3.0, 0.0), (0.0, -0.6), (0.0, 1.6)):
        assert drawer.cell_at(x, y) is None, (x, y)
    drawer.draw(StatsData("attentions", "entropy", np.zeros((0, 0)), (), None, "", "t", ""))
    assert drawer.cell_at(0.0, 0.0) is None


def test_compare_without_a_pinned_capture_says_how_to_pin_one():
    from analysis.views.compare import compare_data

    with pytest.raises(InputError, match="^pin a capture as A first \\(Compare tab: “Pin current as A”\\)$"):
        compare_data(_enc(), ViewSpec(view="compare"))


def test_an_unknown_view_is_a_key_error():
    with pytest.raises(KeyError, match="sankey"):
        view_data(_enc(), ViewSpec(view="sankey"))


@pytest.mark.parametrize(
    ("name", "mode", "row", "col"),
    [
        ("decoder_attentions", "input", "query: decoder inputs of word t", "key: decoder inputs of the word"),
        ("cross_attentions", "input", "query: decoder inputs of word t", "key: source word"),
        ("cross_attentions", "predicts", "query: word predicted at t", "key: source word"),
        ("decoder_attentions", "both", "query: input → predicted word", "key: decoder inputs of the word"),
    ],
)
def test_word_level_seq2seq_axes_say_words(name, mode, row, col):
    from analysis.views.common import axis_titles

    words = SimpleNamespace(outputs=object(), group="words")
    assert axis_titles(words, name, mode) == (row, col)  # type: ignore[arg-type]
    tokens = SimpleNamespace(outputs=object(), group="tokens")
    assert axis_titles(tokens, name, mode)[0] != row  # type: ignore[arg-type]


def test_the_outline_of_an_empty_mask_is_empty():
    from analysis.views.common import mask_path

    path = mask_path(np.zeros((3, 3), bool))
    assert path.get_extents().width == 0 and path.get_extents().height == 0
    full = mask_path(np.triu(np.ones((3, 3), bool), 1))
    assert full.get_extents().bounds == pytest.approx((0.5, -0.5, 2.0, 2.0))


def test_a_translator_not_installed_has_no_folder_and_a_damaged_alignment_json_only_loses_the_label(tmp_path):
    from analysis.views.alignment import documented_layer, model_folder_of

    cap = SimpleNamespace(model="bundled:no-such-translator")
    assert model_folder_of(cap) is None  # type: ignore[arg-type]
    assert model_folder_of(cap, "given") == "given"  # type: ignore[arg-type]
    assert model_folder_of(SimpleNamespace(model="/my/model")) is None  # type: ignore[arg-type]
    assert not documented_layer(None)
    (tmp_path / "alignment.json").write_text("{broken", encoding="utf-8")
    assert not documented_layer(str(tmp_path))
    (tmp_path / "alignment.json").write_text(json.dumps({"best_layer": 2}), encoding="utf-8")
    assert documented_layer(str(tmp_path))


def test_an_image_scrolled_out_of_its_axes_draws_nothing():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from analysis.views.fast_image import add_nearest_image, pixel_box

    fig = Figure(figsize=(3, 3), dpi=50)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = add_nearest_image(ax)
    image.set_data(np.arange(16, dtype=float).reshape(4, 4))
    image.set_extent((-0.5, 3.5, 3.5, -0.5))
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(3.5, -0.5)
    canvas.draw()
    assert pixel_box(image) is not None
    ax.set_xlim(10, 20)  # the image lies wholly left of what the axes show
    canvas.draw()
    assert pixel_box(image) is None
    assert image.make_image(canvas.get_renderer())[0] is None
