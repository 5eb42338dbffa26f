"""The one progress/cancel context of long analysis functions (analysis.tasks.TaskState)."""

from __future__ import annotations

import threading

import pytest

from analysis.errors import Cancelled
from analysis.tasks import TaskState, as_task


def recorder():
    seen = []
    return seen, lambda stage, fraction, message: seen.append((stage, fraction, message))


def test_report_sends_stage_fraction_and_message():
    seen, progress = recorder()
    task = TaskState(progress)
    task.report("load", 0.25, "loading the weights…")
    task.report("load", None, "unknown share")
    task.report("ready")
    assert seen == [
        ("load", 0.25, "loading the weights…"),
        ("load", None, "unknown share"),  # None stays None: the window shows a busy bar
        ("ready", None, "ready"),  # no message: the stage name
    ]


def test_fractions_are_clipped_to_the_unit_range():
    seen, progress = recorder()
    task = TaskState(progress)
    task.report("x", -1.0)
    task.report("x", 1.5)
    assert [f for _, f, _ in seen] == [0.0, 1.0]


def test_sub_maps_fractions_into_the_parent_range():
    seen, progress = recorder()
    task = TaskState(progress)
    half = task.sub(0.5, 1.0)
    half.report("run", 0.0)
    half.report("run", 0.5)
    half.report("run", 1.0)
    half.report("run", None)
    quarter = half.sub(0.0, 0.5)  # nested: [0.5, 0.75] of the whole job
    quarter.report("run", 0.5)
    quarter.report("run", 1.0)
    assert [f for _, f, _ in seen] == [0.5, 0.75, 1.0, None, 0.625, 0.75]
    with pytest.raises(ValueError):
        task.sub(0.6, 0.4)
    with pytest.raises(ValueError):
        task.sub(-0.1, 0.5)


def test_check_raises_cancelled_with_an_event():
    ev = threading.Event()
    seen, progress = recorder()
    task = TaskState(progress, ev)
    assert not task.cancelled
    task.check()
    task.step("run", 0.1, "first")
    ev.set()
    assert task.cancelled and task.sub(0.2, 0.3).cancelled  # a sub-task shares the signal
    with pytest.raises(Cancelled, match="cancelled"):
        task.check()
    with pytest.raises(Cancelled):
        task.step("run", 0.2, "second")  # step checks before it reports
    assert seen == [("run", 0.1, "first")]


def test_check_raises_cancelled_with_a_callable():
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) >= 2

    task = TaskState(cancel=cancel)
    task.check()
    with pytest.raises(Cancelled):
        task.check()
    assert len(polls) == 2
    assert TaskState(cancel=lambda: 0).cancelled is False
    assert TaskState(cancel=lambda: 1).cancelled is True


def test_no_task_reports_nowhere_and_is_never_cancelled():
    task = as_task(None)
    assert isinstance(task, TaskState) and not task.cancelled
    task.step("run", 0.5, "nothing happens")
    task.sub(0.1, 0.2).step("run", 1.0)
    mine = TaskState()
    assert as_task(mine) is mine
    assert TaskState().progress is None


def test_a_task_range_must_be_ordered_inside_zero_one():
    with pytest.raises(ValueError):
        TaskState(start=0.5, end=0.2)
    with pytest.raises(ValueError):
        TaskState(end=1.5)
    with pytest.raises(ValueError, match=r"a task's range must satisfy 0 <= start <= end <= 1; got \[0.5, 0.2\]"):
        TaskState(start=0.5, end=0.2)
    seen, progress = recorder()
    point = TaskState(progress, start=0.5, end=0.5)  # an empty range is a range: reports land on 0.5
    point.report("x", 0.9)
    assert seen == [("x", 0.5, "x")]


def test_a_sub_range_must_be_ordered_inside_zero_one():
    task = TaskState()
    with pytest.raises(ValueError, match=r"a sub-task's range must satisfy 0 <= start <= end <= 1; got \[0.6, 0.4\]"):
        task.sub(0.6, 0.4)
    with pytest.raises(ValueError, match="sub-task"):
        task.sub(0.2, 1.5)
    seen, progress = recorder()
    TaskState(progress).sub(0.3, 0.3).report("x", 1.0)  # empty: allowed
    TaskState(progress).sub(0.5, 1.0).report("y", 1.0)  # up to the end: allowed
    assert seen == [("x", 0.3, "x"), ("y", 1.0, "y")]


def test_step_checks_then_reports_with_the_stage_as_its_default_message():
    seen, progress = recorder()
    task = TaskState(progress)
    task.step("load", 0.5)
    task.step("run", 0.75, "running the model…")
    assert seen == [("load", 0.5, "load"), ("run", 0.75, "running the model…")]


def test_cancelled_says_cancelled():
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled) as caught:
        TaskState(cancel=event).check()
    assert str(caught.value) == "cancelled"
