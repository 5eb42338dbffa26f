"""Off-GUI-thread jobs: a QRunnable owning a separate QObject of signals.

The compute function is a plain module-level function from ``analysis/`` that takes a ``task``
keyword argument (:class:`analysis.tasks.TaskState`: progress and cancel). Exceptions become the
``failed`` signal, never a crash.
A :class:`JobRunner` gives every job an id per channel ("load", "run", …); a newer job on a channel
supersedes the older one (which is cancelled) and late results of superseded jobs are dropped.
The worker never touches a widget or a Figure.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from analysis.tasks import TaskState


class WorkerSignals(QObject):
    started = Signal(int)
    progress = Signal(int, str, float, str)  # job id, stage, fraction (-1: unknown), message
    finished = Signal(int, object)  # job id, result
    failed = Signal(int, object)  # job id, exception


class Worker(QRunnable):
    def __init__(self, job_id: int, fn: Callable[..., Any], *args, **kwargs) -> None:
        super().__init__()
        # Python keeps the runnable alive (JobRunner._all) until it is done: with auto-delete the
        # C++ side frees it under a live Python wrapper, which crashes PySide6 at random
        self.setAutoDelete(False)
        self.job_id = job_id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.cancel_event = threading.Event()
        self.signals = WorkerSignals()
        self.done = threading.Event()

    def _progress(self, stage: str, fraction, message: str) -> None:
        # never send None through a signal: PySide6 mis-counts references to None across threads
        self.signals.progress.emit(self.job_id, str(stage), -1.0 if fraction is None else float(fraction), str(message))

    def run(self) -> None:  # runs in a pool thread
        try:
            self.signals.started.emit(self.job_id)
            result = self.fn(*self.args, task=TaskState(self._progress, self.cancel_event), **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back as a signal
            exc.__headmap_traceback__ = traceback.format_exc()  # type: ignore[attr-defined]
            try:
                self.signals.failed.emit(self.job_id, exc)
            except RuntimeError:  # signals object gone (window closed)
                pass
        else:
            try:
                self.signals.finished.emit(self.job_id, result)
            except RuntimeError:
                pass
        finally:
            self.done.set()


class JobRunner(QObject):
    """Starts jobs on a private thread pool and drops results of superseded jobs.

    Signals carry the channel name so one window can route load/run/mask results.
    """

    finished = Signal(str, object)  # channel, result
    failed = Signal(str, object)  # channel, exception
    progress = Signal(str, str, float, str)  # channel, stage, fraction (-1: unknown), message
    busy_changed = Signal(str, bool)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        # keep the threads: torch warms a thread's intra-op pool on its first forward pass
        self.pool.setExpiryTimeout(-1)
        self._ids = 0
        self._current: dict[str, Worker] = {}
        self._all: list[Worker] = []

    def start(self, channel: str, fn: Callable[..., Any], *args, **kwargs) -> int:
        old = self._current.get(channel)
        if old is not None:
            old.cancel_event.set()
        self._ids += 1
        w = Worker(self._ids, fn, *args, **kwargs)
        w.signals.finished.connect(lambda jid, res, ch=channel: self._on_finished(ch, jid, res))
        w.signals.failed.connect(lambda jid, exc, ch=channel: self._on_failed(ch, jid, exc))
        w.signals.progress.connect(lambda jid, st, fr, msg, ch=channel: self._on_progress(ch, jid, st, fr, msg))
        self._current[channel] = w
        self._all = [x for x in self._all if not x.done.is_set()] + [w]
        self.busy_changed.emit(channel, True)
        self.pool.start(w)
        return w.job_id

    def is_busy(self, channel: str) -> bool:
        return channel in self._current

    def cancel(self, channel: str) -> bool:
        w = self._current.pop(channel, None)
        if w is None:
            return False
        w.cancel_event.set()
        self.busy_changed.emit(channel, False)
        return True

    def _is_current(self, channel: str, job_id: int) -> bool:
        w = self._current.get(channel)
        return w is not None and w.job_id == job_id

    def _on_finished(self, channel: str, job_id: int, result) -> None:
        if not self._is_current(channel, job_id):
            return  # superseded or cancelled: drop the late result
        self._current.pop(channel, None)
        self.busy_changed.emit(channel, False)
        self.finished.emit(channel, result)

    def _on_failed(self, channel: str, job_id: int, exc) -> None:
        if not self._is_current(channel, job_id):
            return
        self._current.pop(channel, None)
        self.busy_changed.emit(channel, False)
        self.failed.emit(channel, exc)

    def _on_progress(self, channel: str, job_id: int, stage, fraction, msg) -> None:
        if self._is_current(channel, job_id):
            self.progress.emit(channel, stage, fraction, msg)

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the pool (window close, test teardown)."""
        for w in list(self._current.values()):
            w.cancel_event.set()
        self._current.clear()
        return self.pool.waitForDone(timeout_ms)

    def active_count(self) -> int:
        return self.pool.activeThreadCount()
