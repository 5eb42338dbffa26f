"""Off-GUI-thread jobs, each with its own handle.

:meth:`Jobs.start` runs a plain module-level function from ``analysis/`` on a worker thread as
``fn(*args, task=TaskState(...), **kwargs)`` (:class:`analysis.tasks.TaskState`: the one
progress/cancel context every long analysis function takes) and returns a :class:`JobHandle`
with its own typed signals: ``finished(result)``, ``failed(exception)``,
``progress(stage, fraction, message)``. A newer job of the same *kind* ("load", "run", "flow",
"stats", "masks", …) supersedes the older one: the older is cancelled and its late result is
dropped (its handle never emits again). Exceptions inside a job become ``failed``, never a crash.

Like superqt's ``create_worker`` (a worker with its own signals) and Orange3's ``TaskState``; the
worker never touches a widget or a Figure.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from analysis.tasks import TaskState


class _WorkerSignals(QObject):
    # created in the GUI thread and emitted from a pool thread: delivered queued to the handle
    progress = Signal(str, float, str)  # stage, fraction (-1: unknown), message
    finished = Signal(object)
    failed = Signal(object)


class _Worker(QRunnable):
    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        super().__init__()
        # Python keeps the runnable alive (Jobs._all) until it is done: with auto-delete the C++
        # side frees it under a live Python wrapper, which crashes PySide6 at random
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.cancel_event = threading.Event()
        self.signals = _WorkerSignals()
        self.done = threading.Event()

    def _progress(self, stage: str, fraction, message: str) -> None:
        # never send None through a signal: PySide6 mis-counts references to None across threads
        self.signals.progress.emit(str(stage), -1.0 if fraction is None else float(fraction), str(message))

    def run(self) -> None:  # runs in a pool thread
        try:
            task = TaskState(self._progress, self.cancel_event)
            result = self.fn(*self.args, task=task, **self.kwargs)
        except BaseException as exc:  # every failure goes back as a signal
            exc.__headmap_traceback__ = traceback.format_exc()  # type: ignore[attr-defined]
            self._emit(self.signals.failed, exc)
        else:
            self._emit(self.signals.finished, result)
        finally:
            self.done.set()

    @staticmethod
    def _emit(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # signals object gone (window closed)
            pass


class JobHandle(QObject):
    """One job. Its signals fire at most once for ``finished``/``failed`` and never after the
    job was cancelled or superseded.

    Signals
    -------
    finished(object) : the function's result
    failed(object) : the exception it raised (``Cancelled`` included)
    progress(str, float, str) : stage, fraction (``-1`` when unknown), message
    """

    finished = Signal(object)
    failed = Signal(object)
    progress = Signal(str, float, str)

    def __init__(self, kind: str, worker: _Worker, jobs: Jobs) -> None:
        super().__init__(jobs)
        self.kind = kind
        self._worker = worker
        self._jobs = jobs
        self._live = True
        worker.signals.progress.connect(self._on_progress)
        worker.signals.finished.connect(self._on_finished)
        worker.signals.failed.connect(self._on_failed)

    @property
    def running(self) -> bool:
        """True until the job finished, failed, was cancelled or superseded."""
        return self._live

    def cancel(self) -> None:
        """Ask the job to stop (its function sees ``task.cancelled``); it will not emit again."""
        if self._live:
            self._worker.cancel_event.set()
            self._end()

    def _end(self) -> None:
        self._live = False
        self._jobs._ended(self)

    def _on_progress(self, stage: str, fraction: float, message: str) -> None:
        if self._live:
            self.progress.emit(stage, fraction, message)

    def _on_finished(self, result) -> None:
        if self._live:
            self._end()
            self.finished.emit(result)

    def _on_failed(self, exc) -> None:
        if self._live:
            self._end()
            self.failed.emit(exc)


class Jobs(QObject):
    """Starts jobs on a private thread pool; one current job per kind.

    Signals
    -------
    busy_changed(str, bool) : a kind started or stopped having a current job
    """

    busy_changed = Signal(str, bool)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        # keep the threads: torch warms a thread's intra-op pool on its first forward pass
        self.pool.setExpiryTimeout(-1)
        self._current: dict[str, JobHandle] = {}
        self._all: list[_Worker] = []

    def start(self, kind: str, fn: Callable[..., Any], *args, **kwargs) -> JobHandle:
        """Run ``fn(*args, task=…, **kwargs)``; a running job of the same kind is superseded."""
        old = self._current.get(kind)
        if old is not None:
            old.cancel()
        worker = _Worker(fn, args, kwargs)
        handle = JobHandle(kind, worker, self)
        self._current[kind] = handle
        self._all = [w for w in self._all if not w.done.is_set()] + [worker]
        self.busy_changed.emit(kind, True)
        self.pool.start(worker)
        return handle

    def current(self, kind: str) -> JobHandle | None:
        return self._current.get(kind)

    def is_busy(self, kind: str) -> bool:
        return kind in self._current

    def cancel(self, *kinds: str) -> bool:
        """Cancel the current jobs of these kinds (all kinds when none given); True if any ran."""
        hit = False
        for kind in kinds or tuple(self._current):
            handle = self._current.get(kind)
            if handle is not None:
                handle.cancel()
                hit = True
        return hit

    def _ended(self, handle: JobHandle) -> None:
        if self._current.get(handle.kind) is handle:
            del self._current[handle.kind]
            self.busy_changed.emit(handle.kind, False)

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and wait for the pool (window close, test teardown)."""
        self.cancel()
        return self.pool.waitForDone(timeout_ms)

    def active_count(self) -> int:
        return self.pool.activeThreadCount()
