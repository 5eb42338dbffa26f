"""The Python API (issue 16): ``headmap.capture`` / ``figure`` / ``head_stats`` / sessions / ``show``.

Captures of the three kinds from a reference string and from model objects are compared with
transformers' own eager ``output_attentions=True`` maps; ``figure`` and ``head_stats`` with what
the CLI writes for the same flags.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headmap
from analysis.errors import InputError
from analysis.session import captures_equal
from tests.test_cli_exports import cli, pixels

TEXT = "I like this course"
TARGET = "J'aime ce cours"
ROOT = Path(__file__).resolve().parent.parent


def eager_maps(folder: Path, kind: str, text: str = TEXT, target: str | None = None) -> dict[str, list[np.ndarray]]:
    """transformers' own eager attention maps (batch row 0) of the checkpoint in ``folder``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cls = {"encoder": AutoModel, "decoder": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}[kind]
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        if kind == "seq2seq":
            labels = tok(text_target=target, return_tensors="pt")["input_ids"]
            start = model.config.decoder_start_token_id
            dec = torch.cat([torch.tensor([[start]]), labels[:, :-1]], dim=1)
            out = model(**enc, decoder_input_ids=dec, output_attentions=True)
            names = ("encoder_attentions", "decoder_attentions", "cross_attentions")
        else:
            out = model(**enc, output_attentions=True)
            names = ("attentions",)
    return {n: [a[0].numpy() for a in getattr(out, n)] for n in names}


def assert_same_maps(cap, expected: dict[str, list[np.ndarray]]) -> None:
    assert set(cap.stacks) == set(expected)
    for name, layers in expected.items():
        arr = cap.stacks[name]
        assert arr.shape[0] == len(layers)
        for i, want in enumerate(layers):
            np.testing.assert_allclose(arr[i], want, atol=1e-6, err_msg=f"{name} layer {i}")


# -- capture ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, kind", [("bert", "encoder"), ("gpt2", "decoder"), ("marian", "seq2seq")])
def test_capture_of_a_reference_equals_transformers_eager_maps(tiny_model_dir, arch, kind):
    folder = tiny_model_dir(arch)
    target = TARGET if kind == "seq2seq" else None
    cap = headmap.capture(str(folder), TEXT, target=target, device="cpu")
    assert cap.kind == kind and cap.model == str(folder)
    assert_same_maps(cap, eager_maps(folder, kind, target=target))
    for arr in cap.stacks.values():
        assert not arr.flags.writeable
        np.testing.assert_allclose(arr.sum(-1), 1.0, atol=1e-5)


# T5: its encoder and decoder stacks hold configs of their own (copies), which must switch too
@pytest.mark.parametrize("arch, kind", [("bert", "encoder"), ("llama", "decoder"), ("marian", "seq2seq"),
                                        ("t5", "seq2seq")])
def test_capture_of_a_model_object_loaded_with_sdpa_is_switched_and_put_back(tiny_model_dir, arch, kind):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = tiny_model_dir(arch)
    cls = {"encoder": AutoModel, "decoder": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}[kind]
    model = cls.from_pretrained(folder)  # transformers 5's default: SDPA, which returns no maps
    tok = AutoTokenizer.from_pretrained(folder)
    before = model.config._attn_implementation
    assert before == "sdpa"
    target = TARGET if kind == "seq2seq" else None
    cap = headmap.capture(model, TEXT, tokenizer=tok, target=target)
    assert cap.kind == kind
    assert cap.model.endswith("(in memory)")
    assert_same_maps(cap, eager_maps(folder, kind, target=target))
    assert model.config._attn_implementation == before
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            assert cfg._attn_implementation == before, type(m).__name__
    # and it equals the capture of the same checkpoint by reference (tokens included)
    ref = headmap.capture(str(folder), TEXT, target=target, device="cpu")
    assert ref.source.display == cap.source.display
    for name in ref.stacks:
        np.testing.assert_allclose(ref.stacks[name], cap.stacks[name], atol=1e-6)


def test_a_model_built_in_training_mode_is_captured_in_eval_mode_and_put_back(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tiny_model_dir("bert")
    config = BertConfig.from_pretrained(folder)
    assert config.attention_probs_dropout_prob > 0  # dropout would break the rows in training mode
    torch.manual_seed(0)
    model = BertModel(config)  # a model built in a notebook: training mode, no architectures
    assert model.training
    cap = headmap.capture(model, TEXT, tokenizer=AutoTokenizer.from_pretrained(folder))
    assert cap.kind == "encoder" and cap.model == "BertModel (in memory)"
    assert model.training and all(m.training for m in model.modules())
    np.testing.assert_allclose(cap.stacks["attentions"].sum(-1), 1.0, atol=1e-5)


def test_a_wrapped_model_from_a_folder_keeps_the_folder_and_one_built_in_memory_has_none(tiny_model_dir):
    """A model read from a folder is summarised with that folder (where an alignment.json is
    looked for); one built from a config has no folder."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from analysis.inmemory import wrap_model

    folder = tiny_model_dir("bert")
    tok = AutoTokenizer.from_pretrained(folder)
    lm = wrap_model(AutoModel.from_pretrained(folder), tok)
    assert (lm.summary.source_path, lm.path) == (str(folder), Path(folder))
    built = wrap_model(BertModel(BertConfig.from_pretrained(folder)), tok)
    assert (built.summary.source_path, built.path) == ("", Path())

def test_capture_of_a_loaded_model_and_progress(tiny_model_dir):
    seen: list[tuple] = []
    lm = headmap.load(str(tiny_model_dir("gpt2")), device="cpu", progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen][0] == "resolve" and seen[-1][:2] == ("ready", 1.0)
    seen.clear()
    cap = headmap.capture(lm, TEXT, generate=True, max_new_tokens=3, progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == ["run", "generate"]
    assert cap.generated and len(cap.source) == cap.prompt_length + 3
    seen.clear()
    headmap.capture(str(tiny_model_dir("bert")), TEXT, device="cpu", progress=lambda *a: seen.append(a))
    stages = [s[0] for s in seen]
    assert stages[0] == "resolve" and "load" in stages and stages[-1] == "run"
    fractions = [s[1] for s in seen if s[1] is not None]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0


def test_capture_groups_words_as_the_cli_does(loaded):
    from analysis.words import group_capture

    pieces = headmap.capture(loaded("bert"), TEXT)
    words = headmap.capture(loaded("bert"), TEXT, group="words")
    expected = group_capture(pieces, "words")
    assert words.group == "words" and list(words.source.display) == list(expected.source.display)
    for name, stack in expected.stacks.items():
        np.testing.assert_array_equal(words.stacks[name], stack)


def test_capture_errors_say_what_to_do(tiny_model_dir, loaded):
    with pytest.raises(ValueError, match="unknown group 'tokens'; choose 'pieces'"):
        headmap.capture(loaded("bert"), TEXT, group="tokens")
    with pytest.raises(InputError, match="needs its tokenizer; pass tokenizer="):
        headmap.capture(loaded("bert").model, TEXT)
    with pytest.raises(InputError, match="tokenizer= is only for model objects"):
        headmap.capture(str(tiny_model_dir("bert")), TEXT, tokenizer=loaded("bert").tokenizer)
    with pytest.raises(InputError, match="is not a transformers model"):
        headmap.capture(42, TEXT, tokenizer=loaded("bert").tokenizer)


def test_capture_repr_is_short_and_names_the_stacks(loaded):
    cap = headmap.capture(loaded("marian"), TEXT, target=TARGET)
    text = repr(cap)
    s, t = len(cap.source), len(cap.decoder_inputs)
    assert text == (f"Capture(model={cap.model!r}, kind='seq2seq', tokens={s}, decoder_tokens={t}, "
                    f"encoder_attentions=[2, 4, {s}, {s}] float32, decoder_attentions=[2, 4, {t}, {t}] float32, "
                    f"cross_attentions=[2, 4, {t}, {s}] float32)")
    assert "\n" not in text and len(text) < 400
    enc = headmap.capture(loaded("bert"), TEXT)
    assert repr(enc).endswith(f"tokens={len(enc.source)}, attentions=[2, 4, {len(enc.source)}, {len(enc.source)}] float32)")


# -- figure and statistics ----------------------------------------------------------------------
@pytest.mark.parametrize("flags, call", [
    (("--view", "layer", "--layer", "1", "--head", "2"), dict(view="layer", layer=1, head=2)),
    (("--view", "head", "--stack", "cross", "--layer", "1", "--theme", "dark", "--hide-special"),
     dict(view="head", stack="cross", layer=1, head=None, theme="dark", hide_special=True)),
    (("--view", "rollout", "--layer", "0", "--caption"), dict(view="rollout", through_layer=0, caption=True)),
])
def test_figure_is_the_png_the_cli_writes(tiny_model_dir, tmp_path, flags, call):
    from analysis.figures import save_figure

    folder = str(tiny_model_dir("marian"))
    png, session = tmp_path / "cli.png", tmp_path / "cli.headmap"
    res = cli("--model", folder, "--text", TEXT, "--target", TARGET, "--export-png", str(png), "--dpi", "72",
              "--save-session", str(session), *flags)
    assert res.returncode == 0, res.stderr
    cap = headmap.load_session(session)
    fig = headmap.figure(cap, **call, dpi=72)
    mine = save_figure(fig, tmp_path / "api.png")
    np.testing.assert_array_equal(pixels(png), pixels(mine))
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # shown inline in a notebook


def test_figure_options_are_checked(loaded):
    cap = headmap.capture(loaded("bert"), TEXT)
    with pytest.raises(TypeError, match="figure\\(\\) has no option 'colour'"):
        headmap.figure(cap, colour="red")
    with pytest.raises(InputError, match="layer 7"):
        headmap.figure(cap, layer=7)
    fig = headmap.figure(cap, "model", aggregate="max", cmap="magma")
    assert fig.get_axes()


def test_head_stats_are_the_rows_of_export_stats(tiny_model_dir, tmp_path):
    folder = str(tiny_model_dir("gpt2"))
    out, session = tmp_path / "s.csv", tmp_path / "s.headmap"
    res = cli("--model", folder, "--text", TEXT, "--export-stats", str(out), "--save-session", str(session))
    assert res.returncode == 0, res.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    rows = headmap.head_stats(headmap.load_session(session))
    assert len(rows) == len(written) == 2 * 4
    for mine, theirs in zip(rows, written, strict=True):
        assert list(mine) == list(theirs)
        for key, value in mine.items():
            if value is None:
                assert theirs[key] == ""
            elif isinstance(value, float):
                assert float(theirs[key]) == pytest.approx(value, abs=1e-6)
            else:
                assert str(value) == theirs[key]


# -- sessions and show --------------------------------------------------------------------------
def test_session_round_trip(loaded, tmp_path):
    cap = headmap.capture(loaded("marian"), TEXT, target=TARGET)
    path = headmap.save_session(cap, tmp_path / "x.headmap")
    again = headmap.load_session(path)
    assert captures_equal(cap, again)
    with pytest.raises(InputError):
        headmap.load_session(tmp_path / "missing.headmap")


class FakePopen:
    calls: list[tuple[list[str], dict]] = []

    def __init__(self, cmd, **kwargs):
        FakePopen.calls.append((list(cmd), kwargs))
        self.args = cmd


def test_show_hands_the_window_a_session_file(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(headmap, "_popen", FakePopen)
    FakePopen.calls.clear()
    cap = headmap.capture(loaded("bert"), TEXT)
    proc = headmap.show(cap, view="layer", layer=1, head=2)
    (cmd, kwargs), = FakePopen.calls
    assert proc.args == cmd
    assert cmd[:2] == [sys.executable, str(Path(headmap.__file__).resolve())]
    assert cmd[2] == "--open-session" and cmd[3].endswith(".headmap")
    assert kwargs["stdin"] == subprocess.DEVNULL and kwargs["stderr"] == subprocess.STDOUT
    assert Path(kwargs["stdout"].name) == Path(cmd[3]).with_suffix(".log")  # not the caller's pipes
    from analysis.session import load_session

    sess = load_session(cmd[3])
    assert captures_equal(sess.capture, cap)
    assert sess.options == {"spec": {"layer": 1, "head": 2}, "tab": "Layer"}
    # with a model: captures first (kwargs go to capture), at the path asked for
    FakePopen.calls.clear()
    headmap.show(str(loaded("gpt2").path), "I like", device="cpu", session=tmp_path / "s.headmap", head=None)
    assert FakePopen.calls[0][0][3] == str(tmp_path / "s.headmap")
    assert headmap.load_session(tmp_path / "s.headmap").text == "I like"
    assert load_session(tmp_path / "s.headmap").options == {"spec": {"head": None}}  # None: the mean over heads
    with pytest.raises(InputError, match="needs the text"):
        headmap.show(loaded("bert"))
    with pytest.raises(InputError, match="unknown view"):
        headmap.show(cap, view="sideways")


def test_show_never_imports_qt_into_the_caller(tiny_model_dir, tmp_path):
    """In a fresh interpreter (as a notebook's kernel): capture, then show with the launch
    replaced by a recorder; PySide6 is never imported."""
    script = (
        "import sys, headmap\n"
        "seen = []\n"
        "headmap._popen = lambda cmd, **kw: seen.append(cmd)\n"
        f"headmap.show({str(tiny_model_dir('bert'))!r}, 'I like this course', device='cpu')\n"
        "assert len(seen) == 1, seen\n"
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken6', 'gui'))))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_window_opens_a_session_from_the_command_line(loaded, tmp_path, qtbot, monkeypatch, settings_path):
    """``--open-session FILE`` (what ``show`` starts): the window shows the saved capture, on the
    tab and selection saved with it, and loads no model."""
    from PySide6.QtWidgets import QApplication

    import gui.app
    import gui.main_window

    cap = headmap.capture(loaded("bert"), TEXT)
    path = headmap.save_session(cap, tmp_path / "x.headmap", options={"spec": {"layer": 1}, "tab": "Model"})
    made = []

    class Recorded(gui.main_window.MainWindow):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

        def autostart(self, ref=None):  # pragma: no cover - must not be called
            raise AssertionError("a session window must not load a model")

    monkeypatch.setattr(gui.main_window, "MainWindow", Recorded)
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)
    args = headmap_args(["--open-session", str(path)])
    assert gui.app.run_window(args) == 0
    (win,) = made
    qtbot.addWidget(win, before_close_func=lambda w: w.shutdown(30_000))
    # the window opens sessions as a job (checked off the GUI thread), shown once all of it passed
    def where() -> str:  # what the window was doing, should it not get there
        return (f"status {win.statusBar().currentMessage()!r}, error {getattr(win, 'last_error', None)!r}, "
                f"views built {win.views_built}, jobs {sorted(win.runner._current)}")

    try:
        qtbot.waitUntil(lambda: win.state.capture is not None or bool(win.last_error), timeout=60_000)
    except Exception as exc:
        raise AssertionError(f"the session was not shown: {where()}") from exc
    assert win.state.capture is not None, where()
    assert captures_equal(win.state.capture, cap)
    assert win.state.spec.layer == 1
    assert win.tabs.tabText(win.tabs.currentIndex()) == "Model"
    assert win.lm is None


def headmap_args(argv):
    from analysis.cli import build_parser

    return build_parser("headmap").parse_args(argv)


def test_main_py_and_the_command_share_one_parser():
    from analysis.cli import build_parser

    assert build_parser("headmap").format_usage().startswith("usage: headmap")
    assert build_parser().format_usage().startswith("usage: python main.py")
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0 and "--quiet" in res.stdout and "--open-session" in res.stdout
    assert json.dumps(headmap.__all__)  # the public names are plain strings


# -- what the errors say, word for word (analysis.inmemory) -------------------------------------
def _wrap_error(model, tokenizer) -> str:
    from analysis.inmemory import wrap_model

    with pytest.raises(InputError) as excinfo:
        wrap_model(model, tokenizer)
    return str(excinfo.value)


def test_wrapping_something_else_than_a_model_and_its_tokenizer_says_what_to_pass(tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_model_dir("bert")
    tok = AutoTokenizer.from_pretrained(folder)
    for reference in (str(folder), folder):
        assert _wrap_error(reference, tok) == (
            "wrap_model takes a model object; pass a reference string to load_model instead"
        )
    assert _wrap_error({"config": None}, tok) == (
        "a dict is not a transformers model; pass a model from transformers (e.g. AutoModel.from_pretrained(...)) "
        "or a reference string"
    )
    model = AutoModel.from_pretrained(folder)
    assert _wrap_error(model, None) == (
        "BertModel needs its tokenizer; pass tokenizer=AutoTokenizer.from_pretrained(...) with the model object"
    )
    assert _wrap_error(model, "bert") == (
        "tokenizer= must be a transformers tokenizer (AutoTokenizer.from_pretrained(...)); got a str"
    )


@pytest.mark.parametrize(
    ("setter", "message"),
    [
        (None, "BertModel runs with 'sdpa' attention and cannot switch; load it with attn_implementation='eager'"),
        (
            lambda impl: None,
            "BertModel stays on 'sdpa' attention, which returns no maps; load it with attn_implementation='eager'",
        ),
    ],
)
def test_a_model_that_cannot_leave_sdpa_says_to_load_it_with_eager_attention(setter, message, tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    from analysis.errors import NoAttentionError

    folder = tiny_model_dir("bert")
    model = AutoModel.from_pretrained(folder)  # SDPA: transformers 5's default
    model.set_attn_implementation = setter  # a model without the switch, or one that ignores it
    with pytest.raises(NoAttentionError) as excinfo:
        headmap.capture(model, TEXT, tokenizer=AutoTokenizer.from_pretrained(folder))
    assert str(excinfo.value) == message
    assert model.config._attn_implementation == "sdpa"
