"""``--session FILE.headmap``: every export from a saved session, with no model loaded; the flags
that need the model are refused with one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.cli import build_parser, figure_spec, run_headless
from analysis.errors import InputError
from analysis.session import captures_equal, load_session
from tests.hostile_sessions import HOSTILE
from tests.test_cli_exports import TEXT, assert_clean_failure, cli, pixels

TARGET = "j'aime ce cours"
#: every export the model run writes, with the flags that name its file
EXPORTS = ("--export-npz", "a.npz", "--export-stats", "a.csv", "--export-alignment", "a.txt")
FIGURE = ("--export-png", "a.png", "--view", "alignment", "--alignment-head", "1", "--dpi", "72")


def _in(folder: Path, args: tuple[str, ...]) -> list[str]:
    """``args`` with every output file name put into ``folder``."""
    return [str(folder / a) if "." in a and not a.startswith("-") else a for a in args]


@pytest.fixture(scope="module")
def made(tiny_model_dir, tmp_path_factory) -> Path:
    """A folder with a session saved by the CLI from the tiny Marian, and the exports of that run."""
    folder = tmp_path_factory.mktemp("from-model")
    res = cli("--model", str(tiny_model_dir("marian")), "--text", TEXT, "--target", TARGET, "--device", "cpu",
              "--save-session", str(folder / "s.headmap"), *_in(folder, EXPORTS + FIGURE))
    assert res.returncode == 0, res.stderr
    return folder


def test_every_export_from_the_session_equals_the_model_run(made, tmp_path):
    again = tmp_path
    res = cli("--session", str(made / "s.headmap"), "--save-session", str(again / "s.headmap"),
              *_in(again, EXPORTS + FIGURE))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    with np.load(made / "a.npz", allow_pickle=False) as a, np.load(again / "a.npz", allow_pickle=False) as b:
        assert a.files == b.files
        for key in a.files:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])
    assert (again / "a.csv").read_bytes() == (made / "a.csv").read_bytes()
    assert (again / "a.txt").read_bytes() == (made / "a.txt").read_bytes()
    np.testing.assert_array_equal(pixels(again / "a.png"), pixels(made / "a.png"))
    # the re-saved session holds the same capture, model reference, inputs and options
    first, second = load_session(made / "s.headmap"), load_session(again / "s.headmap")
    assert captures_equal(first.capture, second.capture)
    assert (second.model_ref, dict(second.inputs), dict(second.options)) == (
        first.model_ref, dict(first.inputs), dict(first.options))


#: figures at other sizes, themes and options, each drawn from the session as in Python
VIEWS = {
    "layer": ("--view", "layer", "--stack", "decoder", "--layer", "1", "--theme", "dark", "--dpi", "100"),
    "head": ("--view", "head", "--stack", "cross", "--head", "2", "--hide-special", "--rows", "input",
             "--theme", "presentation", "--caption", "--dpi", "72"),
    "lines": ("--view", "lines", "--all-layers", "--dpi", "72"),
    "steps": ("--view", "steps", "--step", "2", "--layer", "1", "--dpi", "72"),
    "stats": ("--view", "stats", "--stat", "to_first", "--stack", "decoder", "--dpi", "72"),
    "flow": ("--view", "flow", "--stack", "encoder", "--fusion", "max", "--residual", "0.3", "--position", "2",
             "--flow-values", "raw", "--dpi", "72"),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_from_a_session(made, tmp_path, view):
    from analysis.figures import export_all_layers, export_figure

    argv = ["--session", str(made / "s.headmap"), "--export-png", str(tmp_path / "x.png"), *VIEWS[view]]
    res = cli(*argv)
    assert res.returncode == 0, res.stderr
    cap = load_session(made / "s.headmap").capture
    spec = figure_spec(build_parser().parse_args(argv))
    mine = tmp_path / "mine"
    mine.mkdir()
    if "--all-layers" in argv:
        export_all_layers(cap, spec, mine / "x.png")
    else:
        export_figure(cap, spec, mine / "x.png")
    written = sorted(p.name for p in mine.iterdir())
    assert sorted(p.name for p in tmp_path.glob("x*.png")) == written
    for name in written:
        np.testing.assert_array_equal(pixels(tmp_path / name), pixels(mine / name))


def test_svg_and_pdf_from_a_session(made, tmp_path):
    res = cli("--session", str(made / "s.headmap"), "--export-svg", str(tmp_path / "m.svg"), "--view", "model")
    assert res.returncode == 0, res.stderr
    assert b"<svg" in (tmp_path / "m.svg").read_bytes()[:400]
    res = cli("--session", str(made / "s.headmap"), "--export-pdf", str(tmp_path / "r.pdf"), "--view", "rollout")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--model", "bundled:minilm"), "--session and --model do not go together"),
        (("--text", TEXT), "--session and --text do not go together"),
        (("--generate",), "--generate needs the model"),
        (("--target", TARGET), "--target needs the model"),
        (("--target-lang", "fr"), "--target-lang needs the model"),
        (("--max-new-tokens", "5"), "--max-new-tokens needs the model"),
        (("--num-beams", "3"), "--num-beams needs the model"),
        (("--max-tokens", "8"), "--max-tokens needs the model"),
        (("--dtype", "float16"), "--dtype needs the model"),
        (("--device", "cpu"), "--device needs the model"),
        (("--trust-remote-code",), "--trust-remote-code needs the model"),
        (("--allow-pickle",), "--allow-pickle needs the model"),
        (("--pair", "a much longer sentence"), "--pair needs the model"),
        (("--mask-report", "m.json"), "--mask-report needs the model"),
        (("--padding-side", "left"), "--padding-side needs the model"),
        (("--export-png", "m.png", "--view", "masks"), "--view masks needs the model"),
    ],
)
def test_flags_that_need_the_model_are_refused(made, tmp_path, extra, needle):
    argv = ["--session", str(made / "s.headmap"), "--export-npz", str(tmp_path / "x.npz"), *_in(tmp_path, extra)]
    with pytest.raises(InputError, match=needle) as info:
        run_headless(build_parser().parse_args(argv))
    assert "\n" not in str(info.value) and str(info.value).count("; ") >= 1
    assert list(tmp_path.iterdir()) == []


def test_refusals_are_one_line_and_write_nothing(made, tmp_path):
    res = cli("--session", str(made / "s.headmap"), "--generate", "--export-npz", str(tmp_path / "x.npz"))
    assert_clean_failure(res, tmp_path)
    assert res.returncode == 2 and "--generate needs the model" in res.stderr
    res = cli("--session", str(tmp_path / "none.headmap"), "--export-npz", str(tmp_path / "x.npz"))
    assert_clean_failure(res, tmp_path)
    assert "does not exist" in res.stderr


@pytest.mark.parametrize("name", ["four-terabytes", "nested", "nan", "kind-type"])
def test_a_hostile_session_is_one_line(tmp_path, name):
    build, needle = HOSTILE[name]
    src = tmp_path / "in"
    src.mkdir()
    path = build(src)
    out = tmp_path / "out"
    out.mkdir()
    res = cli("--session", str(path), "--export-png", str(out / "x.png"), "--export-npz", str(out / "x.npz"))
    assert_clean_failure(res, out)
    assert res.returncode == 2 and needle in res.stderr


def test_alignment_of_a_decoder_session_is_refused(tiny_model_dir, tmp_path):
    from tests.hostile_sessions import save
    from tests.test_aggregate import make_decoder

    path = save(tmp_path, make_decoder())
    argv = ["--session", str(path), "--export-alignment", str(tmp_path / "a.txt")]
    with pytest.raises(InputError, match="needs a seq2seq model with cross-attention; the session .* holds a decoder"):
        run_headless(build_parser().parse_args(argv))


@pytest.mark.bundled
def test_a_bundled_translators_session_finds_the_best_documented_layer(tmp_path):
    from analysis.figures import ViewSpec, build_figure

    made, again = tmp_path / "made", tmp_path / "again"
    made.mkdir()
    again.mkdir()
    figure = ("--export-png", "a.png", "--view", "alignment", "--dpi", "72", "--export-alignment", "a.txt")
    res = cli("--model", "bundled:translator-en-fr", "--text", TEXT, "--save-session", str(made / "s.headmap"),
              *_in(made, figure))
    assert res.returncode == 0, res.stderr
    res = cli("--session", str(made / "s.headmap"), *_in(again, figure))
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(pixels(again / "a.png"), pixels(made / "a.png"))
    assert (again / "a.txt").read_text() == (made / "a.txt").read_text()
    fig = build_figure(load_session(made / "s.headmap").capture, ViewSpec(view="alignment"))
    assert "(best documented)" in fig.get_suptitle()
