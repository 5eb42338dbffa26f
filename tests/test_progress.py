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


# -- the bar itself, in this process (what mutation testing can see) --------------------------
class PtyStream:
    """A text stream on a pseudo-terminal of ``columns`` × 24 (0: a terminal without a size),
    and everything the terminal received, read on a thread."""

    def __init__(self, columns: int) -> None:
        self.master, slave = pty.openpty()
        self.slave = slave
        if columns:
            self.resize(columns)
        self.stream = os.fdopen(slave, "w", encoding="utf-8")
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def resize(self, columns: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self, settle: float = 0.2) -> str:
        import time

        time.sleep(settle)  # the reader catches up
        return b"".join(self._chunks).decode(errors="replace")

    def close(self) -> None:
        self.stream.close()
        self._reader.join(timeout=5)
        os.close(self.master)


@pytest.fixture
def terminal():
    made: list[PtyStream] = []

    def make(columns: int = 60) -> PtyStream:
        made.append(PtyStream(columns))
        return made[-1]

    yield make
    for t in made:
        t.close()


def segments(out: str) -> list[str]:
    """What each redraw wrote (the terminal's lines between carriage returns and newlines)."""
    return [s for s in re.split(r"[\r\n]+", out) if s]


LONG = "running the model over a rather long sentence so that the line is wider than any terminal here " * 2


def test_a_terminal_is_detected_and_gets_the_bar_by_default(terminal):
    t = terminal(60)
    assert is_terminal(t.stream) is True
    closed = open(os.devnull, "w")
    closed.close()
    assert is_terminal(closed) is False  # isatty() of a closed file raises: no terminal
    with TerminalProgress(t.stream, tick_s=10) as bar:
        assert bar.enabled
        bar("run", 0.5, "running the model…")
    assert "running the model…  50%|" in t.text()


def test_a_terminal_without_a_size_on_stderr_still_shows_the_bar(terminal, monkeypatch):
    """A bare pseudo-terminal (0 × 0): on stderr tqdm asks it for its size, and would hide a bar
    on a screen it believes one row high."""
    t = terminal(0)
    monkeypatch.setattr(sys, "stderr", t.stream)
    with TerminalProgress(tick_s=10) as bar:
        bar("run", 0.5, "running the model…")
        bar("run", 0.6, LONG)
    shown = segments(t.text())
    assert not any("more hidden" in s for s in shown), shown
    assert any(s.startswith("running the model…  50%|") for s in shown) and max(map(len, shown)) == 80


def test_the_bar_goes_to_stderr_by_default(capsys):
    with TerminalProgress(enabled=True, tick_s=10) as bar:
        bar("run", 0.25, "running the model…")
    captured = capsys.readouterr()
    assert "running the model…  25%|" in captured.err and captured.out == ""


def test_the_bar_follows_the_terminals_width(terminal):
    t = terminal(60)
    with TerminalProgress(t.stream, tick_s=10) as bar:
        bar("run", 0.5, LONG)
        before = t.text()
        assert 50 < max(map(len, segments(before))) <= 60  # a long line is cut to the window
        t.resize(100)  # a wider window: the next redraw uses the room
        bar("run", 0.6, LONG)
        assert 90 < max(map(len, segments(t.text()[len(before):]))) <= 100


def test_a_stream_without_a_width_gets_80_columns():
    out = io.StringIO()
    with TerminalProgress(out, enabled=True, tick_s=10) as bar:
        bar("run", 0.5, LONG)
    shown = segments(out.getvalue())
    assert any("…" in s or "run" in s for s in shown)
    assert max(map(len, shown)) == 80


def test_a_new_stage_is_never_shown_with_the_last_ones_share():
    out = io.StringIO()
    with TerminalProgress(out, enabled=True, tick_s=10) as bar:
        bar("a", 0.2, "first")
        bar("b", 0.9, "second")
        bar("c", 1.7, "third")  # shares outside [0, 1] are clamped
        bar("d", -0.5, "fourth")
    shown = segments(out.getvalue())
    assert any(s.startswith("second  90%|") for s in shown)
    assert not any(s.startswith("second  20%") for s in shown), shown
    assert any(s.startswith("third 100%|") for s in shown) and not any("170%" in s for s in shown)
    assert any(s.startswith("fourth   0%|") for s in shown)


def test_a_stage_without_shares_still_shows_time_passing():
    out = io.StringIO()
    bar = TerminalProgress(out, enabled=True, tick_s=0.02)
    bar("dequantize", None, "dequantizing the GGUF weights…")
    ticker = [t for t in threading.enumerate() if t.name == "headmap-progress"]
    # a daemon thread: a program that never closes the bar still exits
    assert len(ticker) == 1 and ticker[0].daemon
    import time

    time.sleep(0.4)
    redraws = out.getvalue().count("dequantizing the GGUF weights…")
    bar.close()
    assert redraws >= 5, redraws
    assert not ticker[0].is_alive()


def test_by_default_the_elapsed_time_moves_twice_a_second():
    out = io.StringIO()
    with TerminalProgress(out, enabled=True) as bar:
        bar("dequantize", None, "dequantizing the GGUF weights…")
        import time

        time.sleep(1.2)
        redraws = out.getvalue().count("dequantizing the GGUF weights…")
    assert redraws >= 3, redraws  # the report itself, then a tick at 0.5 s and at 1.0 s


def test_closing_erases_the_bar_and_may_be_repeated():
    out = io.StringIO()
    bar = TerminalProgress(out, enabled=True, tick_s=10)
    bar("run", 0.5, "running the model…")
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert not text.endswith("\n")  # erased, not left on its own line
    assert text.rsplit("\r", 2)[-2].strip() == "" and text.endswith("\r")
    bar.say("error: something")  # after the bar: a plain line
    assert out.getvalue().endswith("\rerror: something\n")


def test_a_note_is_written_above_the_bar_and_flushed_at_once():
    class Flushes(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    plain = Flushes()
    with TerminalProgress(plain) as bar:  # no terminal: no bar, the note alone
        bar.say("note: hello")
        assert plain.getvalue() == "note: hello\n" and plain.flushes >= 1
    out = io.StringIO()
    with TerminalProgress(out, enabled=True, tick_s=10) as bar:
        bar("run", 0.5, "running the model…")
        bar.say("warning: careful")
        bar("run", 0.7, "running the model…")
    # the bar is cleared before the note: the note is a line of its own, the bar comes back below it
    assert "warning: careful" in segments(out.getvalue())
    text = out.getvalue()
    assert text.index("warning: careful") < text.index("running the model…  70%")


def test_the_bar_is_drawn_even_where_every_other_tqdm_bar_is_disabled(monkeypatch):
    """The CLI silences the libraries' bars with TQDM_DISABLE, which changes tqdm's default for
    ``disable``; the Headmap bar asks to be drawn (as ``TQDM_DISABLE`` would, here in-process)."""
    from tqdm import std

    original = std.tqdm.__init__

    def disabled_by_default(self, *args, **kwargs):
        kwargs.setdefault("disable", True)
        original(self, *args, **kwargs)

    monkeypatch.setattr(std.tqdm, "__init__", disabled_by_default)
    out = io.StringIO()
    with TerminalProgress(out, enabled=True, tick_s=10) as bar:
        bar("run", 0.5, "running the model…")
    assert "running the model…  50%|" in out.getvalue()
