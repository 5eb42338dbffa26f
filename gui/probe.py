"""What the window tells a benchmark or a test that started it (``HEADMAP_PROBE=FILE``).

``python main.py`` with ``HEADMAP_PROBE`` set appends one line per event to ``FILE``, each
``EVENT MONOTONIC [DETAIL]`` (``time.monotonic()``: one clock for every process on Linux and
macOS, so the starting process can subtract its own reading):

* ``shown T`` – the first frame of the main window was painted (the last widget painted in it);
* ``ready T`` – the views are built and the deferred start-up work is done;
* ``model T PID REFERENCE`` – a model was loaded (``PID``: the model process, 0 in process);
* ``capture T`` – a capture is shown (the automatic run after the first load, a session);
* ``closing T`` – the window's close began.

It also reads commands from its standard input, one a line: ``close`` closes the main window as
the user's click on its close button does (so a benchmark times a real close). Without
``HEADMAP_PROBE`` none of this exists.
"""

from __future__ import annotations

import os
import sys
import time

from PySide6.QtCore import QEvent, QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication, QWidget


def install(win) -> Probe | None:
    """A :class:`Probe` on ``win`` when ``HEADMAP_PROBE`` names a file, else None."""
    path = os.environ.get("HEADMAP_PROBE", "")
    return Probe(win, path) if path else None


class Probe(QObject):
    """Writes the window's events to ``path`` and obeys ``close`` on standard input."""

    def __init__(self, win, path: str) -> None:
        super().__init__(win)
        self.win, self.path = win, path
        self._painted = 0.0  # when the first frame's last widget was painted (0: not yet)
        self._frame_done = False
        QApplication.instance().installEventFilter(self)
        win.state.model_changed.connect(self._on_model)
        win.state.capture_changed.connect(lambda cap: cap is not None and self.write("capture"))
        win.views_ready.connect(lambda: self.write("ready"))
        self._notifier = None
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # no standard input to read commands from
            return
        self._fd = fd
        self._notifier = QSocketNotifier(fd, QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._on_command)

    def write(self, event: str, *detail, at: float | None = None) -> None:
        line = " ".join([event, repr(time.monotonic() if at is None else at), *map(str, detail)])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def eventFilter(self, obj, event) -> bool:
        # every widget of the first frame paints in one synchronous pass: the frame is done when
        # the event loop comes back (the single shot), and the last paint's time is its time
        if (event.type() == QEvent.Type.Paint and isinstance(obj, QWidget) and obj.window() is self.win
                and not self._frame_done):
            if not self._painted:
                QTimer.singleShot(0, self, self._on_first_frame)
            self._painted = time.monotonic()
        return False

    def _on_first_frame(self) -> None:
        self._frame_done = True
        QApplication.instance().removeEventFilter(self)
        self.write("shown", at=self._painted)

    def _on_model(self, lm) -> None:
        if lm is not None:
            host = getattr(lm, "host", None)
            self.write("model", (host.pid if host is not None else 0) or 0, lm.reference)

    def _on_command(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        if not data:  # the other end closed: no more commands
            self._notifier.setEnabled(False)
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip() == "close":
                self.write("closing")
                self.win.close()
