"""The headless command line (a public contract): ``python main.py … --export-npz``.

Every run is a real subprocess. They are started together (a few at a time) when the module's
first test needs one, so the ~3 s of imports per process overlap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import BASE_ARCHS, HEADS, KIND, LAYERS

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"
TARGET = "J'aime ce cours"
#: Cyrillic: every word is <unk> to the tiny Marian's tokenizer (trained on English, French, Korean)
UNREADABLE = "Привет мир как дела"

#: extra arguments per fixture architecture: both decoder modes and both seq2seq modes are covered.
#: All run on the CPU (compared exactly with an in-process CPU capture) except llama, which uses the
#: default device (a GPU where there is one).
CPU = ["--device", "cpu"]
SUCCESS_ARGS: dict[str, list[str]] = {
    "bert": CPU, "roberta": CPU, "distilbert": CPU, "llama": [],
    "gpt2": ["--generate", "--max-new-tokens", "4", *CPU],
    "bart": ["--target", TARGET, *CPU], "t5": ["--target", TARGET, *CPU],
    "marian": ["--generate", "--max-new-tokens", "6", *CPU],
}
#: every flag the README documents; --help must show each one
FLAGS = [
    "--model", "--session", "--dtype", "--device", "--trust-remote-code", "--allow-pickle",
    "--allow-missing-weights", "--no-memory-check",
    "--text", "--target", "--generate", "--max-new-tokens", "--num-beams", "--max-tokens", "--target-lang",
    "--group", "--export-npz", "--force", "--export-alignment", "--alignment-layer", "--alignment-head", "--alignment-method",
    "--alignment-threshold", "--export-stats",
    "--save-session", "--export-png", "--export-svg", "--export-pdf", "--view", "--stack", "--layer",
    "--head", "--aggregate", "--hide-special", "--rows", "--step", "--stat", "--fusion", "--residual", "--position",
    "--flow-values", "--dpi", "--theme", "--caption", "--all-layers", "--pair", "--mask-report", "--padding-side", "--debug",
    "--quiet", "--open-session",
]
GOOD_BYTES = b"a good file from an earlier run"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Case:
    args: list[str]
    out_dir: Path
    out: Path
    future: Future | None = None

    def result(self) -> subprocess.CompletedProcess:
        return self.future.result()


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_model_dir, broken_dir):
    """Every CLI run of this module, started in the background at once."""
    root = tmp_path_factory.mktemp("cli")
    plan: dict[str, Case] = {}

    def add(name: str, model: str | None, *extra: str, text: str = TEXT, out_name: str = "out.npz") -> None:
        out_dir = root / name
        out_dir.mkdir()
        out = out_dir / out_name
        args = (["--model", model] if model else []) + ["--text", text, *extra, "--export-npz", str(out)]
        plan[name] = Case(args, out_dir, out)

    for arch, extra in SUCCESS_ARGS.items():
        add(arch, str(tiny_model_dir(arch)), *extra)
    add("missing-folder", str(root / "no" / "such" / "model"))
    add("unknown-bundled", "bundled:nope")
    add("offline-hub", "headmap-tests/no-such-model")
    add("no-tokenizer", str(broken_dir("no-tokenizer")))
    add("no-config", str(broken_dir("no-config")))
    add("corrupt-weights", str(broken_dir("truncated-weights")))
    add("remote-code", str(broken_dir("remote-code")))
    add("empty-text", str(tiny_model_dir("bert")), text="   ")
    add("target-on-encoder", str(tiny_model_dir("bert")), "--target", TARGET)
    (plan["target-on-encoder"].out).write_bytes(GOOD_BYTES)  # must survive the failed run
    add("missing-out-folder", str(tiny_model_dir("bert")))
    plan["missing-out-folder"].args[-1] = str(plan["missing-out-folder"].out_dir / "not" / "there" / "x.npz")
    add("debug", str(tiny_model_dir("bert")), "--debug", text="   ")  # fails before the heavy imports
    add("unreadable", str(tiny_model_dir("marian")), "--target", TARGET, *CPU, text=UNREADABLE)

    pool = ThreadPoolExecutor(max_workers=3)
    for case in plan.values():
        case.future = pool.submit(run_cli, *case.args)
    yield plan
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------
def test_help_documents_every_flag():
    from analysis.cli import build_parser

    res = run_cli("--help", timeout=60)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    missing = [f for f in FLAGS if f not in text]
    assert not missing, f"--help does not show {missing}"
    # and nothing the parser accepts is left out of --help or of this list
    options = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert options == set(FLAGS)
    assert "bundled:minilm" in text and "0-based" in text


# --------------------------------------------------------------------------------------------
# --export-npz for every fixture architecture
# --------------------------------------------------------------------------------------------
def _expected_keys(kind: str) -> set[str]:
    common = {"input_tokens", "input_ids", "input_special", "output_text", "kind", "model"}
    if kind == "seq2seq":
        return common | {"encoder_attentions", "decoder_attentions", "cross_attentions", "decoder_input_tokens",
                         "output_tokens", "decoder_input_ids", "output_ids"}
    return common | {"attentions"}


@pytest.mark.parametrize("arch", BASE_ARCHS)
def test_export_npz(arch, cases, loaded):
    from analysis.capture import capture

    case = cases[arch]
    res = case.result()
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in case.out_dir.iterdir()) == ["out.npz"]  # no temp files left behind

    with np.load(case.out, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    kind = KIND[arch]
    assert set(data) == _expected_keys(kind)
    assert data["kind"].shape == () and str(data["kind"]) == kind
    assert str(data["model"]) == str(case.args[1])
    s = len(data["input_tokens"])
    assert data["input_tokens"].dtype.kind == "U"
    assert data["input_ids"].dtype == np.int64 and data["input_ids"].shape == (s,)
    assert data["input_special"].dtype == bool and data["input_special"].shape == (s,)
    if kind == "seq2seq":
        t = len(data["decoder_input_tokens"])
        assert data["output_tokens"].shape == (t,) and data["decoder_input_tokens"].dtype.kind == "U"
        assert data["encoder_attentions"].shape == (LAYERS, HEADS, s, s)
        assert data["decoder_attentions"].shape == (LAYERS, HEADS, t, t)
        assert data["cross_attentions"].shape == (LAYERS, HEADS, t, s)
    else:
        assert data["attentions"].shape == (LAYERS, HEADS, s, s)
    stacks = [k for k in data if k.endswith("attentions")]
    for k in stacks:
        assert data[k].dtype == np.float32
        np.testing.assert_allclose(data[k].sum(-1), 1.0, atol=1e-3)

    # the same arrays as an in-process capture with the same options
    extra = SUCCESS_ARGS[arch]
    target = TARGET if "--target" in extra else None
    generate = "--generate" in extra or (kind == "seq2seq" and target is None)
    max_new = int(extra[extra.index("--max-new-tokens") + 1]) if "--max-new-tokens" in extra else 0
    cap = capture(loaded(arch), TEXT, target=target, generate=generate, max_new_tokens=max_new)
    assert data["input_tokens"].tolist() == list(cap.source.display)
    assert data["input_ids"].tolist() == cap.source.ids.tolist()
    assert data["input_special"].tolist() == cap.source.special.tolist()
    assert str(data["output_text"]) == cap.output_text
    if kind == "seq2seq":
        assert data["decoder_input_ids"].tolist() == cap.decoder_inputs.ids.tolist()
        assert data["decoder_input_tokens"].tolist() == list(cap.decoder_inputs.display)
        assert data["output_tokens"].tolist() == list(cap.outputs.display)
        assert data["output_ids"].tolist() == cap.outputs.ids.tolist()
    on_cpu = "--device" in extra or not _cuda_available()
    for k in stacks:
        np.testing.assert_allclose(data[k], cap.stacks[k], rtol=0, atol=1e-6 if on_cpu else 1e-4, err_msg=k)
    if arch == "gpt2":  # the continuation is part of the input axis
        assert s == len(loaded(arch).tokenizer(TEXT)["input_ids"]) + 4 and str(data["output_text"])


# --------------------------------------------------------------------------------------------
# failures: non-zero exit, one line on stderr, no file
# --------------------------------------------------------------------------------------------
FAILURES = {
    "missing-folder": "does not exist",
    "unknown-bundled": "no bundled model called 'nope'",
    "offline-hub": "not in the local cache and the hub is unreachable",
    "no-tokenizer": "has no tokenizer files",
    "no-config": "has no config.json",
    "corrupt-weights": "damaged or incomplete",
    "remote-code": "--trust-remote-code",
    "empty-text": "--text is empty",
    "target-on-encoder": "--target only applies to seq2seq models",
    "missing-out-folder": "does not exist",
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_failure_is_one_line_and_writes_nothing(name, cases):
    case = cases[name]
    res = case.result()
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and FAILURES[name] in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert res.stdout.strip() == ""
    left = sorted(p.name for p in case.out_dir.iterdir())
    if name == "target-on-encoder":
        assert left == ["out.npz"] and case.out.read_bytes() == GOOD_BYTES  # not replaced
    elif name == "missing-out-folder":
        assert left == []  # the missing folder is not created either
    else:
        assert left == [] and not case.out.exists()


def test_remote_code_did_not_run(cases, broken_dir):
    from tests.tiny_models import REMOTE_CODE_MARKER

    cases["remote-code"].result()
    marker = broken_dir("remote-code") / REMOTE_CODE_MARKER
    assert not marker.exists(), "the CLI ran a repository's code without --trust-remote-code"


def test_debug_shows_a_traceback(cases):
    res = cases["debug"].result()
    assert res.returncode != 0
    assert "Traceback (most recent call last)" in res.stderr
    assert "InputError" in res.stderr and "--text is empty" in res.stderr
    assert list(cases["debug"].out_dir.iterdir()) == []


def test_cli_main_in_process_failure_contract(tmp_path, capsys):
    """The same contract through ``analysis.cli.main`` (no subprocess): used by the window's tests."""
    from analysis.cli import main

    out = tmp_path / "x.npz"
    rc = main(["--model", str(tmp_path / "missing"), "--text", TEXT, "--export-npz", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and not out.exists()


# --------------------------------------------------------------------------------------------
# warnings: text the tokenizer cannot read
# --------------------------------------------------------------------------------------------
def _warning_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("warning: ")]


def test_unreadable_text_warns_on_stderr_and_still_writes(cases):
    case = cases["unreadable"]
    res = case.result()
    assert res.returncode == 0, res.stderr
    (line,) = _warning_lines(res)
    assert line.startswith("warning: 4 of 4 tokens of the text are unknown to this tokenizer (<unk>), so the model "
                           "cannot read it; ")
    assert "note: warning" not in res.stderr
    with np.load(case.out, allow_pickle=False) as z:
        assert z["input_tokens"].tolist().count("<unk>") == 4


@pytest.mark.bundled
def test_korean_into_the_french_translator_names_a_model_that_reads_it(tmp_path):
    out = tmp_path / "k.npz"
    res = run_cli("--model", "bundled:translator-en-fr", "--text", "나는 이 강의를 좋아한다", "--export-npz", str(out))
    assert res.returncode == 0, res.stderr
    assert _warning_lines(res) == ["warning: 4 of 4 tokens of the text are unknown to this tokenizer (<unk>), so the "
                                   "model cannot read it; for this text try bundled:smollm2"]
    assert out.is_file()
    fine = run_cli("--model", "bundled:translator-en-fr", "--text", TEXT, "--export-npz", str(tmp_path / "e.npz"))
    assert fine.returncode == 0 and _warning_lines(fine) == []


# -- what the errors say, word for word ---------------------------------------------------
def _says(capsys, *argv: str) -> tuple[int, str]:
    """The exit code and the stderr of ``analysis.cli.main(argv)`` run in this process."""
    from analysis.cli import main

    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_no_export_flag_points_to_the_window(capsys):
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT) == (
        2, "error: no export flag given; add --export-npz/--export-png/… or run `headmap` (`python main.py`) for the "
           "window\n")


def test_no_model_gives_an_example(capsys, tmp_path):
    assert _says(capsys, "--text", TEXT, "--export-npz", str(tmp_path / "x.npz")) == (
        2, "error: --model is required for exports (or --session FILE.headmap); e.g. --model bundled:minilm\n")


def test_an_empty_text_gives_an_example(capsys, tmp_path):
    assert _says(capsys, "--model", "bundled:minilm", "--text", " ", "--export-npz", str(tmp_path / "x.npz")) == (
        2, "error: --text is empty; give the sentence to run, e.g. --text 'I like this course'\n")


@pytest.mark.parametrize("extra", [("--mask-report", "m.json"), ("--export-png", "m.png", "--view", "masks")])
def test_the_padding_experiment_without_a_pair_asks_for_one(capsys, tmp_path, extra):
    flag = "--mask-report" if extra[0] == "--mask-report" else "--view masks"
    argv = ["--model", "bundled:minilm", "--text", TEXT, *[str(tmp_path / a) if "." in a else a for a in extra]]
    assert _says(capsys, *argv) == (
        2, f"error: {flag} needs --pair OTHER: a second, longer sentence to batch with --text\n")


def test_an_alignment_threshold_out_of_range_says_the_range(capsys, tmp_path):
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT, "--alignment-threshold", "1.5",
                 "--export-npz", str(tmp_path / "x.npz")) == (
        2, "error: --alignment-threshold 1.5 is out of range; choose a share P with 0 < P <= 1\n")


def test_a_dpi_out_of_range_says_the_range(capsys, tmp_path):
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT, "--dpi", "50",
                 "--export-png", str(tmp_path / "x.png")) == (2, "error: --dpi 50 is out of range; choose 72–600\n")


@pytest.mark.parametrize(("flag", "what"), [("--layer", "layers"), ("--alignment-layer", "layers"),
                                            ("--head", "heads"), ("--alignment-head", "heads"),
                                            ("--step", "steps"), ("--position", "positions")])
def test_a_negative_index_says_indices_are_0_based(capsys, tmp_path, flag, what):
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT, flag, "-2",
                 "--export-npz", str(tmp_path / "x.npz")) == (2, f"error: {flag} -2 is negative; {what} are 0-based\n")


@pytest.mark.parametrize("flag", ["model", "text"])
def test_a_session_with_a_model_or_text_says_which_to_drop(capsys, tmp_path, flag):
    assert _says(capsys, "--session", str(tmp_path / "s.headmap"), f"--{flag}", "x",
                 "--export-npz", str(tmp_path / "x.npz")) == (
        2, f"error: --session and --{flag} do not go together: the session holds the capture of its model and text; "
           f"drop --{flag}\n")


@pytest.mark.parametrize(("extra", "option", "what"), [
    (("--generate",), "--generate", "generate"),
    (("--dtype", "float16"), "--dtype", "be loaded"),
    (("--target", "x"), "--target", "run on a target"),
    (("--pair", "longer"), "--pair", "run the padding experiment"),
    (("--max-tokens", "8"), "--max-tokens", "tokenize a text"),
])
def test_a_session_with_a_flag_that_needs_the_model_says_what_to_do(capsys, tmp_path, extra, option, what):
    assert _says(capsys, "--session", str(tmp_path / "s.headmap"), *extra, "--export-npz", str(tmp_path / "x.npz")) == (
        2, f"error: {option} needs the model to {what}, and --session exports a saved capture without it; "
           f"drop {option}, or use --model and --text instead of --session\n")


def test_a_session_with_the_masks_view_says_to_export_it_from_the_model(capsys, tmp_path):
    assert _says(capsys, "--session", str(tmp_path / "s.headmap"), "--view", "masks",
                 "--export-png", str(tmp_path / "x.png")) == (
        2, "error: --view masks needs the model to run the padding experiment, which a session does not hold; "
           "export it with --model, --text and --pair instead of --session\n")


def test_an_alignment_of_an_encoder_session_names_its_kind(capsys, tmp_path):
    from tests.hostile_sessions import save
    from tests.test_aggregate import make_encoder

    path = save(tmp_path, make_encoder())
    assert _says(capsys, "--session", str(path), "--export-alignment", str(tmp_path / "a.txt")) == (
        2, f"error: --export-alignment needs a seq2seq model with cross-attention; the session {path} holds an "
           "encoder model's capture\n")


@pytest.mark.parametrize(("arch", "extra", "said"), [
    ("bert", ("--target", TARGET), "--target only applies to seq2seq models; {model} is an encoder model"),
    ("gpt2", ("--target-lang", "fr"), "--target-lang only applies to seq2seq models; {model} is a decoder model"),
    ("bert", ("--export-alignment", "a.txt"),
     "--export-alignment needs a seq2seq model with cross-attention; {model} is an encoder model"),
])
def test_seq2seq_flags_on_another_model_name_its_kind(capsys, tmp_path, tiny_model_dir, arch, extra, said):
    model = str(tiny_model_dir(arch))
    extra = tuple(str(tmp_path / a) if a.endswith(".txt") else a for a in extra)
    assert _says(capsys, "--model", model, "--text", TEXT, "--device", "cpu", *extra,
                 "--export-npz", str(tmp_path / "x.npz")) == (2, "error: " + said.format(model=model) + "\n")
    assert list(tmp_path.iterdir()) == []


def test_a_cross_stack_of_an_encoder_names_its_kind(capsys, tmp_path, tiny_model_dir):
    model = str(tiny_model_dir("bert"))
    assert _says(capsys, "--model", model, "--text", TEXT, "--device", "cpu", "--stack", "cross",
                 "--export-png", str(tmp_path / "x.png")) == (
        2, f"error: --stack cross needs a seq2seq model; {model} is an encoder model with one stack\n")


def test_a_huge_npz_asks_for_force(capsys, tmp_path, tiny_model_dir, monkeypatch):
    import analysis.npz as npz

    monkeypatch.setattr(npz, "npz_bytes", lambda cap: 2_345_000_000)
    assert _says(capsys, "--model", str(tiny_model_dir("bert")), "--text", TEXT, "--device", "cpu",
                 "--export-npz", str(tmp_path / "x.npz")) == (
        2, "error: --export-npz would write 2.3 GB of float32 attention maps (over 1 GB); add --force to write it "
           "anyway, or lower --max-tokens\n")


def test_an_interrupt_says_nothing_was_written(capsys, monkeypatch, tmp_path):
    import analysis.cli as cli_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "run_headless", interrupted)
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT, "--export-npz", str(tmp_path / "x.npz")) == (
        130, "error: interrupted; nothing was written\n")


def test_an_unexpected_error_asks_for_a_debug_run(capsys, monkeypatch, tmp_path):
    import analysis.cli as cli_mod

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_mod, "run_headless", broken)
    assert _says(capsys, "--model", "bundled:minilm", "--text", TEXT, "--export-npz", str(tmp_path / "x.npz")) == (
        1, "error: unexpected RuntimeError: boom; rerun with --debug for details\n")
