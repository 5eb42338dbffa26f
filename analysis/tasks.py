"""One progress/cancel context for long analysis functions (in the spirit of Orange3's TaskState).

A long function (loading, capture, the mask experiments, attention flow, statistics) takes one
keyword argument ``task: TaskState | None = None`` and, between its stages, calls
:meth:`TaskState.step` (raise :class:`~analysis.errors.Cancelled` if the user cancelled, then
report). The caller decides where the messages go (a Qt signal, the model process's pipe, a test's
list) and what cancels (a ``threading.Event`` or a function); the function never knows.

Progress is ``progress(stage, fraction, message)``: ``stage`` a short name (``load``, ``run``,
``flow``…), ``fraction`` in ``[0, 1]`` or ``None`` when unknown, ``message`` one line for the user.
:meth:`TaskState.sub` hands a part of the work its own ``[0, 1]`` that lands in a range of the
parent's.

Pure Python: no Qt, no numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import overload

from .errors import Cancelled

#: ``progress(stage, fraction or None, message)``
ProgressFn = Callable[[str, float | None, str], None]
#: what cancels: an Event that is set, or a function that returns True
CancelSignal = threading.Event | Callable[[], bool]


class TaskState:
    """The progress callback and cancel signal of one long job.

    Parameters
    ----------
    progress : ``progress(stage, fraction, message)`` or None (reports go nowhere)
    cancel : a ``threading.Event`` (set = cancelled) or a zero-argument callable returning True
        when cancelled, or None (never cancelled)
    start, end : the part of the caller's ``[0, 1]`` this task's fractions are mapped into
        (:meth:`sub` sets them; ``0 <= start <= end <= 1``)

    Examples
    --------
    >>> seen = []
    >>> task = TaskState(lambda *a: seen.append(a))
    >>> task.step("run", 0.5, "half way")
    >>> task.sub(0.5, 1.0).report("run", 0.5)
    >>> seen
    [('run', 0.5, 'half way'), ('run', 0.75, 'run')]
    """

    __slots__ = ("_cancel", "_end", "_progress", "_start")

    def __init__(
        self,
        progress: ProgressFn | None = None,
        cancel: CancelSignal | None = None,
        *,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"a task's range must satisfy 0 <= start <= end <= 1; got [{start}, {end}]")
        self._progress = progress
        self._cancel = cancel
        self._start = float(start)
        self._end = float(end)

    @property
    def progress(self) -> ProgressFn | None:
        """The progress callback (None: reports go nowhere)."""
        return self._progress

    @property
    def cancelled(self) -> bool:
        """True once the cancel signal is set (an Event) or returns True (a callable)."""
        cancel = self._cancel
        if cancel is None:
            return False
        if isinstance(cancel, threading.Event):
            return cancel.is_set()
        return bool(cancel())

    def check(self) -> None:
        """Raise :class:`~analysis.errors.Cancelled` if the job was cancelled.

        Raises
        ------
        Cancelled : ``"cancelled"``
        """
        if self.cancelled:
            raise Cancelled("cancelled")

    def report(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        """Send ``(stage, fraction, message)`` to the progress callback, if any.

        Parameters
        ----------
        stage : short name of the stage (``load``, ``run``, ``flow``…)
        fraction : done share of this task in ``[0, 1]`` (clipped), mapped into the range the task
            covers in its parent; None when unknown (sent as None)
        message : one line for the user; empty: the stage name
        """
        if self._progress is None:
            return
        self._progress(stage, self._map(fraction), message or stage)

    def step(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        """:meth:`check`, then :meth:`report`: the call between two stages of a job."""
        self.check()
        self.report(stage, fraction, message)

    def sub(self, start: float, end: float) -> TaskState:
        """A task for one part of this job: its fractions ``0 … 1`` land in ``start … end`` of ours.

        Parameters
        ----------
        start, end : the sub-task's range in this task's own fractions, ``0 <= start <= end <= 1``

        Returns
        -------
        TaskState with the same progress callback and cancel signal.
        """
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"a sub-task's range must satisfy 0 <= start <= end <= 1; got [{start}, {end}]")
        lo, hi = self._map(start), self._map(end)
        return TaskState(self._progress, self._cancel, start=lo, end=hi)

    @overload
    def _map(self, fraction: float) -> float: ...
    @overload
    def _map(self, fraction: None) -> None: ...
    def _map(self, fraction: float | None) -> float | None:
        if fraction is None:
            return None
        f = min(max(float(fraction), 0.0), 1.0)
        return self._start + (self._end - self._start) * f

    def __repr__(self) -> str:
        # not ``cancelled``: asking a cancel callable may have side effects
        return f"TaskState(range=[{self._start:g}, {self._end:g}])"


_NO_TASK = TaskState()


def as_task(task: TaskState | None) -> TaskState:
    """``task``, or a task that reports nowhere and is never cancelled when it is None."""
    return _NO_TASK if task is None else task


__all__ = ["CancelSignal", "ProgressFn", "TaskState", "as_task"]
