"""The model process (analysis.host): loading, running, errors, cancel, crashes, array transfer."""

from __future__ import annotations

import os
import threading
import time
from types import MappingProxyType

import numpy as np
import pytest

from analysis.capture import capture
from analysis.errors import Cancelled, ModelLoadError
from analysis.host import (
    ModelHost,
    ModelHostError,
    RemoteModel,
    _arena_dir,
    dumps,
    loads,
    sweep_arrays,
)
from analysis.tasks import TaskState

TEXT = "I like this course"


# functions the child runs (pickled by name: module level, importable there)
def _wait_for_cancel(task=None):
    task.report("waiting", None, "waiting for cancel")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        if task.cancelled:
            raise Cancelled("cancelled in the child")
        time.sleep(0.01)
    return "never cancelled"


def _report_half(task=None):
    task.step("half", 0.5, "half way")
    return type(task).__name__


def _die(task=None):
    os._exit(3)


def _env(name, task=None):
    return os.environ.get(name)


def _unpicklable_error(task=None):
    class LocalError(Exception):
        pass

    raise LocalError("made in the child")


def _hold(path, task=None):
    """Run until the file ``path`` exists (at most 60 s), then return "done"."""
    task.report("holding", None, "waiting for the file")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        if os.path.exists(path):
            return "done"
        time.sleep(0.01)
    return "never told"


def _pid(task=None):
    return os.getpid()


def _threads(task=None):
    import torch

    return torch.get_num_threads()


def _arrays(task=None):
    ro = np.arange(100_000, dtype=np.float32)
    ro.setflags(write=False)
    return {"ro": ro, "rw": np.ones((300, 300)), "small": np.arange(3), "proxy": MappingProxyType({"a": 1})}


@pytest.fixture(scope="module")
def host():
    h = ModelHost(preload=False)
    yield h
    h.close()


def _arena_files():
    return {f for f in os.listdir(_arena_dir()) if f.startswith("headmap-")}


def test_capture_through_the_host_equals_the_capture_in_this_process(host, tiny_model_dir, loaded):
    folder = str(tiny_model_dir("gpt2"))
    seen = []
    lm = host.load(folder, task=TaskState(lambda *a: seen.append(a)))
    assert isinstance(lm, RemoteModel) and lm.host is host
    assert lm.reference == folder and lm.kind == "decoder" and lm.summary.architecture
    assert seen and seen[-1][0] == "ready"
    before = _arena_files()
    remote = host.call(capture, lm, TEXT, store_dtype=np.float16)
    local = capture(loaded("gpt2"), TEXT, store_dtype=np.float16)
    assert _arena_files() == before  # the array file is mapped, then deleted
    assert remote.stack_names == local.stack_names
    for name in local.stack_names:
        a = remote.stacks[name]
        np.testing.assert_array_equal(a, local.stacks[name])
        assert a.dtype == np.float16 and not a.flags.writeable
    assert isinstance(remote.stacks, MappingProxyType)
    assert remote.source.display == local.source.display
    np.testing.assert_array_equal(remote.source.ids, local.source.ids)
    assert os.getpid() != host.call(_pid)


def test_errors_arrive_with_their_type_and_message(host, broken_dir):
    folder = broken_dir("truncated-weights")
    with pytest.raises(ModelLoadError) as remote:
        host.load(str(folder))
    from analysis.loader import load_model

    with pytest.raises(ModelLoadError) as local:
        load_model(str(folder))
    assert str(remote.value) == str(local.value)
    assert "Traceback" in remote.value.__headmap_traceback__


def test_an_exception_that_cannot_be_pickled_becomes_a_host_error(host):
    with pytest.raises(ModelHostError, match="LocalError: made in the child"):
        host.call(_unpicklable_error)


def test_cancel_reaches_the_running_job(host):
    # cancelled once the job reports that it runs in the child; without the cancel it would
    # return "never cancelled" after 30 s (``make bench`` times the cancel: model_process_cancel_s)
    ev = threading.Event()
    with pytest.raises(Cancelled, match="cancelled in the child"):
        host.call(_wait_for_cancel, task=TaskState(lambda *a: ev.set(), ev))
    # the next job is not cancelled by the old flag
    assert host.call(_env, "PATH") is not None


def test_progress_comes_back_to_the_callers_task(host):
    seen = []
    task = TaskState(lambda *a: seen.append(a)).sub(0.5, 1.0)
    assert host.call(_report_half, task=task) == "TaskState"  # the child's task
    assert seen == [("half", 0.75, "half way")]  # mapped into the caller's range
    assert host.call(_report_half) == "TaskState"  # no task here: the child still gets one
    with pytest.raises(Cancelled):
        host.call(_report_half, task=TaskState(cancel=lambda: True))


def test_environment_is_forwarded_with_each_call(host, monkeypatch):
    monkeypatch.setenv("HEADMAP_TEST_VALUE", "one")
    assert host.call(_env, "HEADMAP_TEST_VALUE") == "one"
    monkeypatch.delenv("HEADMAP_TEST_VALUE")
    assert host.call(_env, "HEADMAP_TEST_VALUE") is None


def test_a_new_model_for_the_same_owner_frees_the_old_one(host, tiny_model_dir):
    a = host.load(str(tiny_model_dir("bert")), owner="w1")
    b = host.load(str(tiny_model_dir("gpt2")), owner="w1")
    other = host.load(str(tiny_model_dir("bert")), owner="w2")
    with pytest.raises(ModelHostError, match="no longer loaded"):
        host.call(capture, a, TEXT)
    assert host.call(capture, b, TEXT).kind == "decoder"
    assert host.call(capture, other, TEXT).kind == "encoder"
    host.release(other)
    with pytest.raises(ModelHostError, match="no longer loaded"):
        host.call(capture, other, TEXT)


def test_a_dead_model_process_is_reported_and_replaced(tiny_model_dir):
    h = ModelHost(preload=False)
    try:
        lm = h.load(str(tiny_model_dir("bert")))
        pid = h.pid
        with pytest.raises(ModelHostError, match=r"stopped unexpectedly \(exit code 3"):
            h.call(_die)
        assert not h.alive()
        with pytest.raises(ModelHostError, match="load it again"):
            h.call(capture, lm, TEXT)
        assert h.pid not in (None, pid)
        lm2 = h.load(str(tiny_model_dir("bert")))
        assert h.call(capture, lm2, TEXT).kind == "encoder"
    finally:
        h.close()
    assert not h.alive()


def test_arrays_keep_their_flags_across_the_file():
    ro = np.arange(100_000, dtype=np.float32)
    ro.setflags(write=False)
    obj = {"ro": ro, "rw": np.ones((300, 300)), "small": np.arange(3), "proxy": MappingProxyType({"a": 1}),
           "view": np.arange(200_000)[::2]}
    data, path = dumps(obj)
    assert path is not None and os.path.exists(path)
    assert len(data) < 10_000  # the big arrays are not in the pickle
    out = loads(data, path)
    assert not os.path.exists(path)
    np.testing.assert_array_equal(out["ro"], ro)
    assert not out["ro"].flags.writeable
    np.testing.assert_array_equal(out["rw"], obj["rw"])
    out["rw"][0, 0] = 5  # a writeable array stays writeable (its own memory)
    np.testing.assert_array_equal(out["view"], obj["view"])
    assert out["small"].tolist() == [0, 1, 2]
    assert isinstance(out["proxy"], MappingProxyType) and out["proxy"]["a"] == 1
    assert dumps({"x": np.arange(3)})[1] is None  # nothing big: no file


def test_arrays_from_the_child(host):
    out = host.call(_arrays)
    assert not out["ro"].flags.writeable and out["rw"].flags.writeable
    assert out["ro"][-1] == 99_999 and out["rw"].sum() == 90_000


def test_array_files_of_dead_processes_are_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"headmap-{dead_pid}-abc.arrays"
    live = tmp_path / f"headmap-{os.getpid()}-abc.arrays"
    other = tmp_path / "headmap-notes.txt"
    for f in (stale, live, other):
        f.write_bytes(b"x")
    assert sweep_arrays(str(tmp_path)) == 1
    assert not stale.exists() and live.exists() and other.exists()


def test_torch_threads_follow_the_environment_of_each_call(host, tiny_model_dir, monkeypatch):
    host.load(str(tiny_model_dir("bert")))  # imports torch there
    default = host.call(_threads)
    monkeypatch.setenv("HEADMAP_TORCH_THREADS", "1")
    assert host.call(_threads) == 1
    monkeypatch.delenv("HEADMAP_TORCH_THREADS")
    assert host.call(_threads) == default


def _in_thread(fn, *args) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def test_release_does_not_wait_for_a_running_call(host, tiny_model_dir, tmp_path):
    lm = host.load(str(tiny_model_dir("bert")), owner="w9")
    go = tmp_path / "go"
    running, done = threading.Event(), []
    call = _in_thread(lambda: done.append(host.call(_hold, str(go), task=TaskState(lambda *a: running.set()))))
    try:
        assert running.wait(60), "the job did not start in the model process"
        # the job runs until told to stop, so release returns while it runs or not at all. The
        # join timeout only keeps a release that waits for the call from hanging the suite; it is
        # not a timing assertion (``make bench`` times release: model_process_release_s).
        release = _in_thread(host.release, lm)
        release.join(30)
        assert not release.is_alive(), "release waited for the running call"
        assert call.is_alive() and done == []
    finally:
        go.touch()
        call.join(60)
    assert done == ["done"]
    with pytest.raises(ModelHostError, match="no longer loaded"):
        host.call(capture, lm, TEXT)


def test_close_during_a_call_stops_the_child_and_fails_the_call(tmp_path):
    h = ModelHost(preload=False)
    running, errors, results = threading.Event(), [], []

    def job():
        try:
            results.append(h.call(_hold, str(tmp_path / "never"), task=TaskState(lambda *a: running.set())))
        except ModelHostError as exc:
            errors.append(exc)

    call = _in_thread(job)
    try:
        assert running.wait(60), "the job did not start in the model process"
        # the job would run for 60 s: close must stop the child instead of waiting for it. The
        # join timeouts only keep a close that hangs from hanging the suite; they are not timing
        # assertions (``make bench`` times it: model_process_close_busy_s).
        closing = _in_thread(h.close, 0.5)
        closing.join(30)
        assert not closing.is_alive(), "close did not return"
        call.join(30)
        assert not call.is_alive(), "the call did not fail after close"
    finally:
        h.close()
    assert results == [] and len(errors) == 1 and not h.alive()
