"""CLI fuzz: random combinations of the CLI's flags and values through ``main.py``.

Whatever the combination (wrong types, values out of range, contradictions, flags that do not
apply to the model's kind, output paths that exist, do not, sit in a missing folder, are folders,
symbolic links or pipes; models and sessions that exist, do not, or are not what they claim),
every run either exits 0 with every output it was asked for, or exits non-zero with exactly one
line on stderr (``error: …``) and none of its outputs: files that did not exist still do not,
files that did (or that a symbolic link points to) keep their content, no temp file is left. Never
a traceback.

The property test runs ``main.main`` in this process (hundreds of runs in about a minute: no torch
import per run); a few generated combinations also run as real ``python main.py`` subprocesses,
where the interpreter's own exit is part of the contract.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main as entry
from analysis.cli import _VIEWS

ROOT = Path(__file__).resolve().parent.parent
OLD = b"an earlier file: must survive a failing run\n"

#: flag → (valid values, values of the wrong type, range or choice)
VALUES: dict[str, tuple[list[str], list[str]]] = {
    "--view": (list(_VIEWS), ["bogus"]),
    "--stack": (["encoder", "decoder", "cross"], ["middle"]),
    "--layer": (["0", "1"], ["-1", "99", "x", "1.5"]),
    "--head": (["0", "1"], ["-2", "99", "x"]),
    "--alignment-layer": (["0", "1"], ["-1", "99", "x"]),
    "--alignment-head": (["0", "1"], ["-1", "99"]),
    "--step": (["0", "1"], ["-1", "999", "x"]),
    "--position": (["0", "2"], ["-1", "999"]),
    "--aggregate": (["mean", "max"], ["median"]),
    "--rows": (["input", "predicts", "both"], ["all"]),
    "--stat": (["entropy", "mean_distance"], ["nonsense"]),
    "--fusion": (["mean", "max", "min"], ["sum"]),
    "--residual": (["0.5", "0", "1"], ["-0.1", "1.5", "nan", "inf", "x"]),
    "--flow-values": (["shares", "raw"], ["both"]),
    "--dpi": (["72", "100"], ["71", "601", "0", "x"]),
    "--theme": (["light", "dark", "presentation"], ["neon"]),
    "--max-new-tokens": (["0", "2"], ["-1", "x"]),
    "--num-beams": (["1", "2"], ["0", "-3"]),
    "--max-tokens": (["4", "100000"], ["1", "0", "-1", "x"]),
    "--target": (["J'aime ce cours", "나는 이 강의를 좋아한다"], [""]),
    "--target-lang": (["fr"], ["xx_Nope"]),
    "--pair": (["a longer sentence to batch with the first one"], [""]),
    "--padding-side": (["left", "right"], ["up"]),
    "--dtype": (["auto", "float32", "bfloat16"], ["int8"]),
    "--device": (["cpu", "auto"], ["cuda", "mps", "tpu"]),
    "--group": (["pieces", "words"], ["letters"]),
    "--alignment-method": (["predict", "shift"], ["guess"]),
    "--alignment-threshold": (["0.3", "1"], ["0", "-0.5", "1.5", "nan", "x"]),
}
SWITCHES = ["--hide-special", "--caption", "--all-layers", "--generate", "--allow-pickle",
            "--allow-missing-weights", "--no-memory-check", "--trust-remote-code", "--quiet"]
#: output flag → the extension of its file
OUTPUTS = {"--export-npz": ".npz", "--export-stats": ".csv", "--save-session": ".headmap",
           "--export-alignment": ".txt", "--export-png": ".png", "--export-svg": ".svg",
           "--export-pdf": ".pdf", "--mask-report": ".json"}
GOOD_PATHS = ["new", "existing", "symlink", "dangling"]
BAD_PATHS = ["no-folder", "folder", "fifo"]
GOOD_MODELS = ["bert", "gpt2", "marian", "bart", "model-link", "session"]
BAD_MODELS = ["missing", "not-a-model", "bad-session", "missing-session"]
GOOD_TEXTS = ["I like this course", "나는 이 강의를 좋아한다", "x " * 150]
BAD_TEXTS = ["", "   "]


@dataclass
class Output:
    flag: str
    path: Path
    kind: str
    #: the file whose content the run writes or must keep (a link's target)
    real: Path = field(init=False)

    def __post_init__(self) -> None:
        self.real = self.path.parent / f"target-{self.path.name}" if self.kind in ("symlink", "dangling") else self.path

    def prepare(self) -> None:
        if self.kind == "existing":
            self.path.write_bytes(OLD)
        elif self.kind == "symlink":
            self.real.write_bytes(OLD)
            self.path.symlink_to(self.real.name)
        elif self.kind == "dangling":
            self.path.symlink_to(self.real.name)
        elif self.kind == "folder":
            self.path.mkdir()
        elif self.kind == "fifo":
            os.mkfifo(self.path)

    def written(self) -> list[Path]:
        """The files a successful run must have written for this flag."""
        if self.flag in ("--export-png", "--export-svg", "--export-pdf") and self.all_layers:
            # OUT-L00.png, … beside the path given (a link there is not written through)
            return sorted(self.path.parent.glob(f"{self.path.stem}-L*{self.path.suffix}"))
        return [self.real]

    all_layers: bool = False


@st.composite
def invocations(draw):
    """(model choice, text, [(flag, value-or-None)], [(output flag, path kind, good extension)]).

    Each choice is hostile with probability 1/6, so that runs fail in every way and still about
    half of them succeed with several flags at once."""

    def pick(good, bad):
        # (hypothesis favours small integers: the hostile branch is the largest)
        return draw(st.sampled_from(bad)) if draw(st.integers(0, 5)) == 5 else draw(st.sampled_from(good))

    model = pick(GOOD_MODELS, BAD_MODELS)
    text = pick(GOOD_TEXTS, BAD_TEXTS)
    flags = draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True))
    options = [(f, draw(st.sampled_from(VALUES[f][1])) if draw(st.integers(0, 9)) == 9
                else draw(st.sampled_from(VALUES[f][0]))) for f in flags]
    options += [(s, None) for s in draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))]
    # at least one output: without one, main.py opens the window
    outs = draw(st.lists(st.sampled_from(sorted(OUTPUTS)), min_size=1, max_size=3, unique=True))
    figures = [o for o in outs if o in ("--export-png", "--export-svg", "--export-pdf")]
    if len(figures) > 1 and draw(st.integers(0, 2)) < 2:  # two figure flags contradict: sometimes
        outs = [o for o in outs if o not in figures[1:]]
    outputs = [(o, pick(GOOD_PATHS, BAD_PATHS), draw(st.integers(0, 9)) < 9) for o in outs]
    return model, text, options, outputs


@pytest.fixture(scope="module")
def sources(tiny_model_dir, tmp_path_factory):
    """The models and sessions a run can name: tiny checkpoints, and hostile stand-ins."""
    d = tmp_path_factory.mktemp("fuzz-sources")
    found = {arch: str(tiny_model_dir(arch)) for arch in ("bert", "gpt2", "marian", "bart")}
    (d / "model-link").symlink_to(found["gpt2"], target_is_directory=True)
    (d / "not-a-model").mkdir()
    (d / "not-a-model" / "config.json").write_text("{ this is not json")
    session = d / "saved.headmap"
    with contextlib.redirect_stderr(io.StringIO()):
        assert entry.main(["--model", found["marian"], "--text", "I like this course", "--generate",
                           "--max-new-tokens", "3", "--device", "cpu", "--save-session", str(session)]) == 0
    (d / "bad.headmap").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    found.update({"missing": str(d / "no-such-model"), "not-a-model": str(d / "not-a-model"),
                  "model-link": str(d / "model-link"), "session": str(session),
                  "bad-session": str(d / "bad.headmap"), "missing-session": str(d / "gone.headmap")})
    return found


def build_argv(sources, folder: Path, model: str, text: str, options, outputs) -> tuple[list[str], list[Output]]:
    argv = (["--session", sources[model]] if "session" in model else ["--model", sources[model], "--text", text])
    for flag, value in options:
        argv += [flag] if value is None else [flag, value]
    outs = []
    for i, (flag, kind, good_ext) in enumerate(outputs):
        ext = OUTPUTS[flag] if good_ext else ".bin"
        path = folder / ("missing-folder" if kind == "no-folder" else "") / f"out{i}{ext}"
        out = Output(flag, path, kind)
        out.all_layers = "--all-layers" in argv
        out.prepare()
        outs.append(out)
        argv += [flag, str(path)]
    return argv, outs


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: a regular file's bytes, else None (links, pipes, folders)."""
    found: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        found[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return found


def check_outcome(code: int, err: str, folder: Path, before: dict, outs: list[Output], argv: list[str]) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, (argv, err)
    after = snapshot(folder)
    if code == 0:
        assert all(ln.startswith(("note: ", "warning: ")) for ln in lines), (argv, err)
        for out in outs:
            files = out.written()
            assert files, (argv, out)
            for f in files:
                assert f.is_file() and f.stat().st_size > 0 and f.read_bytes() != OLD, (argv, out, f)
            if out.kind in ("symlink", "dangling"):
                assert out.path.is_symlink(), (argv, "the link was replaced")
        return
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, code, err)
    # none of its outputs: the folder is exactly as before (no new file, no temp file, old content kept)
    assert after == before, (argv, err, set(after) ^ set(before))


OUTCOMES: list[int] = []
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(invocation=invocations())
def test_every_combination_of_flags_writes_all_its_outputs_or_says_one_line_and_writes_none(sources, invocation):
    model, text, options, outputs = invocation
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv, outs = build_argv(sources, folder, model, text, options, outputs)
        before = snapshot(folder)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = entry.main(argv)
            except SystemExit as exc:  # argparse: a bad flag or value
                code = exc.code if isinstance(exc.code, int) else 1
        check_outcome(code, err.getvalue(), folder, before, outs, argv)
        OUTCOMES.append(code)


#: a few combinations as real processes (the interpreter's exit is part of the contract), and
#: whether each succeeds
SUBPROCESS_CASES = [
    ("gpt2", "I like this course", [("--view", "flow"), ("--position", "999")], [("--export-png", "new", True)], False),
    ("marian", "I like this course", [("--generate", None), ("--view", "steps"), ("--step", "1")],
     [("--export-png", "symlink", True), ("--export-npz", "new", True)], True),
    ("bert", "I like this course", [("--dpi", "x")], [("--export-png", "new", True)], False),
    ("bert", "I like this course", [], [("--export-npz", "new", True), ("--export-stats", "fifo", True)], False),
    ("session", "", [("--theme", "dark"), ("--all-layers", None)], [("--export-png", "new", True)], True),
    ("bad-session", "", [], [("--export-npz", "existing", True)], False),
    ("not-a-model", "I like this course", [], [("--export-npz", "new", True)], False),
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SUBPROCESS_CASES)])
def test_the_contract_holds_for_real_processes(sources, tmp_path, case):
    model, text, options, outputs, succeeds = case
    argv, outs = build_argv(sources, tmp_path, model, text, options, outputs)
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    check_outcome(res.returncode, res.stderr, tmp_path, before, outs, argv)
    assert (res.returncode == 0) == succeeds, res.stderr


def test_the_fuzzing_reached_both_outcomes():
    """The generator is not so hostile that every run fails at the flags (runs after the property test)."""
    if not OUTCOMES:
        pytest.skip("the property test did not run in this session")
    assert OUTCOMES.count(0) >= 30 and len(OUTCOMES) - OUTCOMES.count(0) >= 30, OUTCOMES

