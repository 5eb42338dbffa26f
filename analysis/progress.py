"""Progress of long work on a terminal: one tqdm bar fed by a :class:`~analysis.tasks.TaskState`.

The CLI shows where a long job is (finding and loading a model, dequantizing a GGUF the first
time, generating, running, writing) on stderr when stderr is a terminal, and nothing when it is
not (a pipe, a file, CI) or with ``--quiet``. :class:`TerminalProgress` is a
:data:`~analysis.tasks.ProgressFn`: hand it to ``TaskState(progress=...)`` and every
``task.report(stage, fraction, message)`` moves the bar and names the stage.

A stage without fractions (dequantizing calls one transformers function for ~20 s) still shows
time passing: a small ticker redraws the bar's elapsed time twice a second.

Pure Python and tqdm: no Qt, no numpy.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

#: what the bar shows: the stage's message, the share done, the bar, the time so far
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:24}| {elapsed}"


def is_terminal(stream: IO[str] | None) -> bool:
    """True when ``stream`` is an interactive terminal (progress is shown only there)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or replaced streams
        return False


def _columns(stream: IO[str]) -> int:
    """The terminal's width in columns, 0 when unknown (a pseudo-terminal without a size)."""
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


class TerminalProgress:
    """A progress callback ``progress(stage, fraction, message)`` drawn as one tqdm bar.

    Parameters
    ----------
    stream : where the bar goes (default ``sys.stderr``)
    enabled : draw at all; default: only when ``stream`` is a terminal (:func:`is_terminal`).
        Disabled, every call does nothing and nothing is ever written.
    tick_s : how often the elapsed time is redrawn while a stage reports nothing (seconds)

    Use it as a context manager (or call :meth:`close`): the bar is removed from the terminal at
    the end, so the lines printed after it (notes, errors) stand alone.

    Examples
    --------
    >>> import io
    >>> with TerminalProgress(io.StringIO()) as progress:   # not a terminal: draws nothing
    ...     progress("load", 0.5, "loading the weights…")
    """

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool | None = None, tick_s: float = 0.5) -> None:
        self._stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self._stream) if enabled is None else bool(enabled)
        self._tick_s = float(tick_s)
        self._bar: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._lock = threading.Lock()
        #: the stages reported, in order, each once (what the bar named)
        self.stages: list[str] = []

    def _open(self) -> Any:
        from tqdm import tqdm

        # follow the terminal's width; one that reports none (0 columns) gets 80
        sized = _columns(self._stream) > 0
        # disable=False: the CLI silences every other tqdm bar with TQDM_DISABLE. leave=False: the
        # bar is erased when closed. nrows: on stderr tqdm asks a terminal without a size for its
        # height too, and shows "... (more hidden) ..." instead of the bar on a screen one row high.
        # (No mininterval: the bar is only ever refresh()ed, which does not look at it.)
        bar = tqdm(total=100, file=self._stream, bar_format=BAR_FORMAT, leave=False, disable=False, dynamic_ncols=sized,
                   ncols=None if sized else 80, nrows=None if sized else 24)
        self._ticker = threading.Thread(target=self._tick, name="headmap-progress", daemon=True)
        self._ticker.start()
        return bar

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def __call__(self, stage: str, fraction: float | None, message: str) -> None:
        if not self.stages or self.stages[-1] != stage:
            self.stages.append(stage)
        if not self.enabled:
            return
        with self._lock:
            if self._bar is None:
                self._bar = self._open()
            bar = self._bar
            bar.set_description_str(message or stage, refresh=False)
            if fraction is not None:
                bar.n = round(100 * min(max(float(fraction), 0.0), 1.0))
            bar.refresh()

    def say(self, line: str) -> None:
        """Print ``line`` on the stream (a note, a warning) above the bar, which stays below it."""
        with self._lock:
            if self._bar is None:
                print(line, file=self._stream, flush=True)
                return
            from tqdm import tqdm

            tqdm.write(line, file=self._stream)

    def close(self) -> None:
        """Stop the ticker and remove the bar (idempotent)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * self._tick_s + 1)
            self._ticker = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BAR_FORMAT", "TerminalProgress", "is_terminal"]
