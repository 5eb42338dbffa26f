"""The CLI's figure, statistics and alignment exports (public contracts), end to end."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def assert_clean_failure(res: subprocess.CompletedProcess, folder: Path) -> None:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr
    assert list(folder.iterdir()) == []  # no output file, no temp file


def test_export_png_svg_pdf_and_all_layers(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("gpt2")
    out = tmp_path / "out"
    out.mkdir()
    res = cli("--model", str(folder), "--text", "나는 이 강의를 좋아한다", "--export-png", str(out / "h.png"),
              "--view", "head", "--layer", "1", "--head", "2", "--dpi", "100")
    assert res.returncode == 0, res.stderr
    w, h = png_size(out / "h.png")
    assert w > 100 and h > 100
    res = cli("--model", str(folder), "--text", TEXT, "--export-svg", str(out / "m.svg"), "--view", "model",
              "--theme", "dark")
    assert res.returncode == 0, res.stderr
    ET.parse(out / "m.svg")
    res = cli("--model", str(folder), "--text", TEXT, "--export-pdf", str(out / "l.pdf"), "--view", "layer")
    assert res.returncode == 0, res.stderr
    assert (out / "l.pdf").read_bytes()[:5] == b"%PDF-"
    res = cli("--model", str(folder), "--text", TEXT, "--export-png", str(out / "all.png"), "--view", "head",
              "--all-layers", "--dpi", "72")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.glob("all-L*.png")) == ["all-L00.png", "all-L01.png"]


def test_png_pixel_size_follows_dpi(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("bert")
    sizes = {}
    for dpi in (72, 144):
        p = tmp_path / f"h{dpi}.png"
        res = cli("--model", str(folder), "--text", TEXT, "--export-png", str(p), "--dpi", str(dpi))
        assert res.returncode == 0, res.stderr
        sizes[dpi] = png_size(p)
    assert abs(sizes[144][0] - 2 * sizes[72][0]) <= 2
    assert abs(sizes[144][1] - 2 * sizes[72][1]) <= 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--layer", "9"), "layer 9 is out of range"),
        (("--head", "4"), "head 4 is out of range"),
        (("--view", "alignment"), "seq2seq"),
        (("--stack", "cross"), "seq2seq"),
        (("--dpi", "20"), "dpi"),
    ],
)
def test_figure_errors_exit_nonzero_without_files(tiny_model_dir, tmp_path, extra, needle):
    folder = tiny_model_dir("bert")
    out = tmp_path / "out"
    out.mkdir()
    res = cli("--model", str(folder), "--text", TEXT, "--export-png", str(out / "x.png"), *extra)
    assert_clean_failure(res, out)
    assert needle in res.stderr


def test_export_stats_csv_matches_definitions(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("bart")
    out = tmp_path / "s.csv"
    npz = tmp_path / "a.npz"
    res = cli("--model", str(folder), "--text", TEXT, "--target", "j'aime ce cours", "--export-stats", str(out),
              "--export-npz", str(npz))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:10] == ["stack", "layer", "head", "entropy", "mean_distance", "to_first", "to_previous",
                           "to_self", "to_next", "max_weight"]
    data = np.load(npz, allow_pickle=False)
    stacks = {r["stack"] for r in rows}
    assert stacks == {"encoder_attentions", "decoder_attentions", "cross_attentions"}
    for r in rows:
        a = data[r["stack"]][int(r["layer"]), int(r["head"])].astype(np.float64)
        q, k = a.shape
        ent = float(np.mean([-sum(x * math.log(x) for x in row if x > 0) for row in a]))
        assert float(r["entropy"]) == pytest.approx(ent, abs=1e-5)
        assert float(r["max_weight"]) == pytest.approx(float(a.max(1).mean()), abs=1e-6)
        assert float(r["to_first"]) == pytest.approx(float(a[:, 0].mean()), abs=1e-6)
        if r["stack"] == "cross_attentions":
            for col in ("mean_distance", "to_previous", "to_self", "to_next"):
                assert r[col] == ""
        else:
            i, j = np.indices(a.shape)
            assert float(r["mean_distance"]) == pytest.approx(float((a * abs(i - j)).sum(1).mean()), abs=1e-5)
            assert float(r["to_self"]) == pytest.approx(float(np.diag(a).mean()), abs=1e-6)
            assert float(r["to_previous"]) == pytest.approx(float(np.mean([a[x, x - 1] for x in range(1, q)])), abs=1e-6)
            assert float(r["to_next"]) == pytest.approx(float(np.mean([a[x, x + 1] for x in range(q - 1)])), abs=1e-6)


def test_export_alignment_on_tiny_seq2seq(tiny_model_dir, tmp_path):
    """The Pharaoh line indexes source and translation words and agrees with the npz maps."""
    folder = tiny_model_dir("marian")
    out = tmp_path / "a.txt"
    npz = tmp_path / "a.npz"
    res = cli("--model", str(folder), "--text", TEXT, "--target", "j'aime ce cours", "--export-alignment", str(out),
              "--alignment-layer", "1", "--alignment-head", "0", "--export-npz", str(npz))
    assert res.returncode == 0, res.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    pairs = [tuple(map(int, p.split("-"))) for p in lines[0].split()]
    assert pairs, "an alignment has at least one link"
    assert all(0 <= i < 4 and 0 <= j < 3 for i, j in pairs)
    assert sorted({j for _, j in pairs}) == [0, 1, 2]  # one link per translation word
    data = np.load(npz, allow_pickle=False)
    assert str(data["output_text"]) == "j'aime ce cours"


def test_export_alignment_errors(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    res = cli("--model", str(tiny_model_dir("bert")), "--text", TEXT, "--export-alignment", str(out / "a.txt"))
    assert_clean_failure(res, out)
    assert "seq2seq" in res.stderr
    res = cli("--model", str(tiny_model_dir("marian")), "--text", TEXT, "--generate", "--export-alignment",
              str(out / "a.txt"), "--alignment-layer", "5")
    assert_clean_failure(res, out)
    assert "out of range" in res.stderr


def test_save_session_from_cli_reopens(tiny_model_dir, tmp_path):
    from analysis.session import load_session

    p = tmp_path / "lesson.headmap"
    res = cli("--model", str(tiny_model_dir("llama")), "--text", TEXT, "--save-session", str(p))
    assert res.returncode == 0, res.stderr
    s = load_session(p)
    assert s.capture.kind == "decoder"
    assert s.inputs["text"] == TEXT
    assert s.capture.attention().shape[:2] == (2, 4)


def test_mask_report_json_keys(tiny_model_dir, tmp_path):
    p = tmp_path / "m.json"
    res = cli("--model", str(tiny_model_dir("bert")), "--text", TEXT, "--pair",
              "the students in this course are reading a long book", "--mask-report", str(p))
    assert res.returncode == 0, res.stderr
    d = json.loads(p.read_text(encoding="utf-8"))
    for k in ("padding_side", "pad_attention_max", "masked_attention_max_abs_diff", "unmasked_attention_max_abs_diff",
              "masked_output_max_abs_diff", "unmasked_output_max_abs_diff"):
        assert k in d
    assert d["padding_side"] == "right"
    assert d["pad_attention_max"] == 0.0
    assert d["masked_attention_max_abs_diff"] <= 1e-5 < 1e-3 < d["unmasked_attention_max_abs_diff"]


# -- every view of the window from the CLI, drawn by the same data and drawer ----------------------
PAIR = "the students in this course are reading a long and interesting book today"
VIEW_FLAGS = {
    "steps": ("--step", "2", "--layer", "1", "--head", "0"),
    "stats": ("--stat", "to_first", "--stack", "decoder"),
    "rollout": ("--stack", "encoder", "--fusion", "max", "--residual", "0.3", "--position", "2"),
    "flow": ("--stack", "decoder", "--layer", "0"),
    "alignment": ("--alignment-layer", "0", "--alignment-head", "1"),
    "masks": ("--pair", PAIR, "--layer", "1"),
    "head": ("--stack", "cross", "--layer", "1", "--head", "3"),
}


def pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))


@pytest.mark.parametrize("view", list(VIEW_FLAGS))
def test_every_view_from_the_cli_is_the_windows_figure(tiny_model_dir, tmp_path, view):
    from analysis.cli import build_parser, figure_spec
    from analysis.figures import ViewInputs, export_figure
    from analysis.loader import load_model
    from analysis.masks import padding_experiment
    from analysis.session import load_session

    folder = str(tiny_model_dir("marian"))
    png, session = tmp_path / f"{view}.png", tmp_path / f"{view}.headmap"
    argv = ["--model", folder, "--text", TEXT, "--target", "j'aime ce cours", "--export-png", str(png),
            "--view", view, "--dpi", "72", "--save-session", str(session), *VIEW_FLAGS[view]]
    res = cli(*argv)
    assert res.returncode == 0, res.stderr
    spec = figure_spec(build_parser().parse_args(argv))
    assert spec.rows == "both"  # seq2seq rows read "input → predicted" unless --rows says otherwise
    cap = load_session(session).capture
    inputs = ViewInputs(model_folder=folder)
    if view == "masks":
        lm = load_model(folder, device="cpu")
        inputs = ViewInputs(mask_report=padding_experiment(lm, TEXT, PAIR))
    again = export_figure(cap, spec, tmp_path / f"{view}-window.png", inputs=inputs)
    np.testing.assert_array_equal(pixels(png), pixels(again))


def test_cli_flags_map_to_the_view_spec():
    from analysis.cli import build_parser, figure_spec

    base = ["--model", "m", "--text", "t", "--export-png", "x.png"]
    spec = figure_spec(build_parser().parse_args(base))
    assert (spec.view, spec.layer, spec.head, spec.rows, spec.step) == ("head", 0, None, "both", 0)
    spec = figure_spec(build_parser().parse_args(base + ["--view", "rollout", "--layer", "3", "--position", "4"]))
    assert (spec.through_layer, spec.position, spec.layer) == (3, 4, 0)
    spec = figure_spec(build_parser().parse_args(base + ["--view", "flow", "--flow-values", "raw"]))
    assert (spec.through_layer, spec.flow_values) == (None, "raw")
    spec = figure_spec(build_parser().parse_args(base + ["--rows", "input", "--step", "5", "--stat", "to_self"]))
    assert (spec.rows, spec.step, spec.stat) == ("input", 5, "to_self")
    assert figure_spec(build_parser().parse_args(base)).caption is False
    assert figure_spec(build_parser().parse_args(base + ["--caption"])).caption is True


def test_caption_goes_under_the_png(tiny_model_dir, tmp_path):
    folder = str(tiny_model_dir("marian"))
    base = ["--model", folder, "--text", TEXT, "--target", "j'aime ce cours", "--view", "head", "--stack", "cross",
            "--dpi", "72", "--device", "cpu"]
    plain, captioned = tmp_path / "plain.png", tmp_path / "caption.png"
    assert cli(*base, "--export-png", str(plain)).returncode == 0
    res = cli(*base, "--export-png", str(captioned), "--caption")
    assert res.returncode == 0, res.stderr
    (w0, h0), (w1, h1) = png_size(plain), png_size(captioned)
    assert w1 == w0 and h1 > h0 + 40  # a few lines of caption at 72 dpi


@pytest.mark.parametrize(
    "extra, needle",
    [
        (("--view", "masks"), "--view masks needs --pair"),
        (("--view", "steps", "--step", "99"), "step 99 is out of range"),
        (("--view", "rollout", "--stack", "cross"), "need self-attention"),
        (("--view", "stats", "--layer", "-1"), "--layer -1 is negative"),
    ],
)
def test_new_view_errors_exit_nonzero_without_files(tiny_model_dir, tmp_path, extra, needle):
    out = tmp_path / "out"
    out.mkdir()
    res = cli("--model", str(tiny_model_dir("marian")), "--text", TEXT, "--target", "j'aime ce cours",
              "--export-png", str(out / "x.png"), *extra)
    assert_clean_failure(res, out)
    assert needle in res.stderr


@pytest.mark.bundled
def test_cli_alignment_is_the_tabs_best_documented_layer(tmp_path):
    from analysis.alignment import bundled_alignment_info
    from analysis.bundled import bundled_path
    from analysis.figures import ViewSpec, build_figure
    from analysis.session import load_session

    png, session = tmp_path / "a.png", tmp_path / "a.headmap"
    res = cli("--model", "bundled:translator-en-fr", "--text", TEXT, "--export-png", str(png), "--view", "alignment",
              "--dpi", "72", "--save-session", str(session))
    assert res.returncode == 0, res.stderr
    best = bundled_alignment_info(bundled_path("translator-en-fr"))["best_layer"]
    cap = load_session(session).capture
    fig = build_figure(cap, ViewSpec(view="alignment"))
    assert f"layer {best} (best documented)" in fig.get_suptitle()
    assert len(fig.axes) == 3  # the links, the word matrix and its colour bar, as in the tab
