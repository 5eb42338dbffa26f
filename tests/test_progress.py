"""Progress on the terminal (issue 16): the CLI draws one bar on stderr while stderr is a
terminal, and nothing when it is not or with ``--quiet``; the API hands the stages to a callback.

The terminal cases run the real CLI with its stderr on a pseudo-terminal (``pty``).
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from analysis.progress import TerminalProgress, is_terminal
from analysis.tasks import TaskState

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"


def cli_on_a_terminal(*args: str, cwd: Path, columns: int = 100) -> tuple[int, str, str]:
    """Run ``python main.py ARGS`` with stderr on a pseudo-terminal; (exit code, stdout, what the
    terminal received)."""
    master, slave = pty.openpty()
    if columns:  # a terminal window has a size; a bare pseudo-terminal has 0 × 0
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], stdout=subprocess.PIPE, stderr=slave,
                              stdin=subprocess.DEVNULL, cwd=cwd, env=env, timeout=600)
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, proc.stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_the_stages_and_quiet_shows_nothing(tiny_model_dir, tmp_path):
    folder = str(tiny_model_dir("marian"))
    argv = ["--model", folder, "--text", TEXT, "--export-npz", str(tmp_path / "x.npz")]
    code, _, shown = cli_on_a_terminal(*argv, cwd=tmp_path)
    assert code == 0, shown
    for stage in ("finding", "loading the weights", "generating the target", "running the model", "writing the files"):
        assert stage in shown, (stage, shown)
    assert "%|" in shown  # tqdm's bar
    assert "Traceback" not in shown

    (tmp_path / "x.npz").unlink()
    code, _, shown = cli_on_a_terminal(*argv, cwd=tmp_path, columns=0)  # a terminal that reports no size
    assert code == 0 and "running the model" in shown and "%|" in shown

    (tmp_path / "x.npz").unlink()
    code, _, shown = cli_on_a_terminal(*argv, "--quiet", cwd=tmp_path)
    assert code == 0
    assert shown == ""
    assert (tmp_path / "x.npz").exists()


def test_an_error_on_a_terminal_is_still_one_line_after_the_bar(tiny_model_dir, tmp_path):
    code, _, shown = cli_on_a_terminal("--model", str(tiny_model_dir("bert")), "--text", TEXT, "--export-png",
                                       str(tmp_path / "h.png"), "--layer", "9", cwd=tmp_path)
    assert code == 2
    # what the terminal shows: the bar erased (\r, blanks, \r), then the error on its own line
    segments = [seg.strip() for seg in re.split(r"[\r\n]+", shown)]
    errors = [seg for seg in segments if "error:" in seg]
    assert errors == [segments[-2] if segments[-1] == "" else segments[-1]], shown
    assert len(errors) == 1 and errors[0].startswith("error: layer 9 is out of range")
    assert not (tmp_path / "h.png").exists()


def test_not_a_terminal_means_no_progress(tiny_model_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--model", str(tiny_model_dir("gpt2")), "--text", TEXT,
                          "--generate", "--max-new-tokens", "3", "--export-npz", str(tmp_path / "x.npz")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0
    assert res.stderr == ""


def test_terminal_progress_draws_only_when_enabled():
    quiet = io.StringIO()
    with TerminalProgress(quiet) as bar:  # a StringIO is no terminal
        bar("load", 0.5, "loading the weights…")
        bar.say("note: hello")
    assert not bar.enabled and bar.stages == ["load"]
    assert quiet.getvalue() == "note: hello\n"

    forced = io.StringIO()
    with TerminalProgress(forced, enabled=True, tick_s=0.05) as bar:
        task = TaskState(bar)
        task.sub(0.0, 0.5).report("load", 0.5, "loading the weights…")
        task.report("run", 0.8, "running the model…")
        bar.say("warning: careful")
    out = forced.getvalue()
    assert "loading the weights…  25%|" in out and "running the model…  80%|" in out
    assert "warning: careful\n" in out
    assert bar.stages == ["load", "run"]


@pytest.mark.parametrize("stream, expected", [(io.StringIO(), False), (None, False)])
def test_is_terminal(stream, expected):
    assert is_terminal(stream) is expected


def test_the_cli_silences_the_libraries_bars_but_not_its_own():
    """transformers dequantizes a GGUF under its own tqdm bar (not its progress setting): the CLI
    turns every tqdm bar off through TQDM_DISABLE, and its own bar asks to be drawn."""
    script = (
        "import io, sys\n"
        "from analysis import cli\n"
        "cli._quiet_libraries(False)\n"
        "from tqdm.auto import tqdm\n"
        "for _ in tqdm(range(3), desc='a library bar'): pass\n"
        "from analysis.progress import TerminalProgress\n"
        "out = io.StringIO()\n"
        "with TerminalProgress(out, enabled=True) as bar: bar('run', 0.5, 'running the model…')\n"
        "print('running the model' in out.getvalue())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and res.stdout.strip() == "True"
