"""The model process (analysis.host): loading, running, errors, cancel, crashes, array transfer,
a stuck process, orphans and stale array files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from analysis.capture import capture
from analysis.errors import Cancelled, ModelLoadError
from analysis.host import (
    Liveness,
    ModelHost,
    ModelHostError,
    RemoteModel,
    _arena_dir,
    _end_process,
    _pid_alive,
    _process_state,
    _spawn,
    dumps,
    loads,
    sweep_arrays,
)
from analysis.tasks import TaskState

TEXT = "I like this course"
ROOT = Path(__file__).resolve().parent.parent
#: how long a test waits for a call or a process that should end; a guard that keeps a hang from
#: hanging the suite, never a timing assertion (``make bench`` times these: model_process_*)
GUARD_S = 120


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


def _hold_gil(seconds, task=None):
    """Sleep in C *holding the GIL* (``PyDLL`` never releases it): no thread of the process can
    answer a ping meanwhile, though the process is not stopped."""
    import ctypes

    task.report("holding the GIL", None, "asleep")
    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke"


def _busy(path, task=None):
    """Compute (torch and Python bytecode, like a forward pass and its bookkeeping) until the file
    ``path`` exists (at most 120 s); returns how many rounds ran."""
    import torch

    torch.set_num_threads(1)
    a = torch.rand(128, 128)
    task.report("busy", None, "computing")
    rounds, t0 = 0, time.monotonic()
    while not os.path.exists(path) and time.monotonic() - t0 < 120:
        a = (a @ a).softmax(-1)
        sum(i * i for i in range(2000))
        rounds += 1
    return rounds


class _SlowToPickle:
    """Pickled after a big array went into the array file: writes ``marker``, then computes like a
    forward pass for up to 120 s, so the model process stays in the middle of writing its file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import torch

        torch.set_num_threads(1)
        Path(self.marker).write_text(str(os.getpid()))
        a, t0 = torch.rand(128, 128), time.monotonic()
        while time.monotonic() - t0 < 120:
            a = (a @ a).softmax(-1)
        return str, ("never reached",)


def _mid_write(marker, task=None):
    return [np.ones(1 << 20, dtype=np.float32), _SlowToPickle(marker)]


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
    with pytest.raises(ModelHostError, match="^LocalError: made in the child$"):
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
    with pytest.raises(ModelHostError, match=f"^{re.escape(NOT_LOADED)}$"):
        host.call(capture, a, TEXT)
    assert host.call(capture, b, TEXT).kind == "decoder"
    assert host.call(capture, other, TEXT).kind == "encoder"
    host.release(other)
    with pytest.raises(ModelHostError, match=f"^{re.escape(NOT_LOADED)}$"):
        host.call(capture, other, TEXT)


def test_a_dead_model_process_is_reported_and_replaced(tiny_model_dir):
    h = ModelHost(preload=False)
    try:
        lm = h.load(str(tiny_model_dir("bert")))
        pid = h.pid
        with pytest.raises(ModelHostError, match="^" + re.escape(
                "the model process stopped unexpectedly (exit code 3; out of memory?); load the model again") + "$"):
            h.call(_die)
        assert not h.alive()
        with pytest.raises(ModelHostError, match=f"^{re.escape(NOT_LOADED)}$"):
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


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(dead.stdout)


def test_array_files_whose_writer_is_dead_are_swept_whoever_received_them(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    names = {
        # headmap-<receiver>-w<writer>-*.arrays: the writer decides
        f"headmap-1-w{dead}-abc.arrays": False,  # an orphan's file (its receiver was PID 1)
        f"headmap-{me}-w{dead}-abc.arrays": False,  # a live receiver: the writer died anyway
        f"headmap-{dead}-w{dead}-abc.arrays": False,
        f"headmap-1-w{me}-abc.arrays": True,  # a live writer may still be writing or handing it over
        f"headmap-{dead}-w{me}-abc.arrays": True,
        # the older naming, headmap-<receiver>-*.arrays: the receiver decides
        f"headmap-{dead}-abc.arrays": False,
        f"headmap-{me}-abc.arrays": True,
        # not array files
        "headmap-notes.txt": True,
        f"headmap-x-w{dead}-abc.arrays": True,
        f"other-{dead}-abc.arrays": True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sweep_arrays(str(tmp_path)) == list(names.values()).count(False)
    assert {name: (tmp_path / name).exists() for name in names} == names


def test_array_files_of_the_older_naming_left_by_orphans_are_swept_when_old(tmp_path):
    # an orphaned writer of the older naming named its file after PID 1 (or a subreaper), which
    # lives: such a file goes once nobody touched it for ORPHAN_AGE_S
    old, new = tmp_path / "headmap-1-old.arrays", tmp_path / "headmap-1-new.arrays"
    for f in (old, new):
        f.write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert sweep_arrays(str(tmp_path)) == 1
    assert not old.exists() and new.exists()


def test_array_files_are_named_after_their_receiver_and_writer():
    data, path = dumps({"a": np.ones(1 << 16)})
    try:
        assert Path(path).name.startswith(f"headmap-{os.getppid()}-w{os.getpid()}-")
        assert sweep_arrays() >= 0 and os.path.exists(path)  # its writer (this process) lives
    finally:
        loads(data, path)
    assert not os.path.exists(path)


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
    with pytest.raises(ModelHostError, match=f"^{re.escape(NOT_LOADED)}$"):
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
    # a close the caller asked for is no crash: not "stopped unexpectedly (exit code 0; out of memory?)"
    assert str(errors[0]) == "the model process was closed; load the model again"


# -- a model process that stops answering ------------------------------------------------------
def _outcome(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread: its result or the exception it raised. The join
    timeout only keeps a call that hangs from hanging the suite; it is not a timing assertion."""
    box: list = []

    def job():
        try:
            box.append(fn(*args, **kwargs))
        except BaseException as exc:  # the test looks at it
            box.append(exc)

    t = threading.Thread(target=job, daemon=True)
    t.start()
    return t, box


def _joined(t: threading.Thread, box: list):
    t.join(GUARD_S)
    assert not t.is_alive(), "the call hangs"
    return box[0]


def _ended(proc: subprocess.Popen) -> bool:
    """Whether our child ``proc`` has ended (a stuck test kills it, so nothing outlives the test)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return False
    return True


NOT_LOADED = ("the model is no longer loaded in the model process (it was replaced or the process restarted); "
              "load it again")
STOPPED = "the model process stopped answering (it was suspended, e.g. by SIGSTOP); it was ended — load the model again"


def test_a_model_process_stopped_while_idle_fails_the_next_call_and_the_next_load_works(tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    h = ModelHost(preload=False)
    heard: list[str] = []
    h.add_listener(heard.append)
    proc = None
    try:
        lm = h.load(folder)
        assert h.holds(lm)
        proc = h._proc
        proc.send_signal(signal.SIGSTOP)
        err = _joined(*_outcome(h.call, capture, lm, TEXT))
        assert isinstance(err, ModelHostError) and str(err) == STOPPED
        assert heard == [STOPPED]  # a window hears it even when its job was cancelled
        assert _ended(proc) and not h.holds(lm)
        lm2 = h.load(folder)  # a fresh process
        assert h.holds(lm2) and h.pid != proc.pid
        assert h.call(capture, lm2, TEXT).kind == "encoder"
    finally:
        h.close()
        if proc is not None:
            _ended(proc)


def test_a_load_after_the_idle_model_process_was_stopped_goes_on_in_a_fresh_one(tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    h = ModelHost(preload=False)
    heard: list[str] = []
    h.add_listener(heard.append)
    proc = None
    try:
        old = h.load(folder)
        proc = h._proc
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + GUARD_S  # the signal is delivered asynchronously
        while _process_state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        lm = h.load(folder)  # no error: the stopped process is ended before the load is sent
        assert heard == [STOPPED] and _ended(proc)
        assert h.holds(lm) and not h.holds(old) and h.pid != proc.pid
        assert h.call(capture, lm, TEXT).kind == "encoder"
    finally:
        h.close()
        if proc is not None:
            _ended(proc)


def test_a_model_process_stopped_mid_call_fails_that_call_and_the_one_waiting_for_it_goes_on(tmp_path):
    h = ModelHost(preload=False)
    running = threading.Event()
    proc = None
    try:
        first = _outcome(h.call, _hold, str(tmp_path / "never"), task=TaskState(lambda *a: running.set()))
        assert running.wait(GUARD_S), "the job did not start in the model process"
        proc = h._proc
        proc.send_signal(signal.SIGSTOP)
        second = _outcome(h.call, _pid)  # waits for the lock the stuck call holds
        err = _joined(*first)
        assert isinstance(err, ModelHostError) and str(err) == STOPPED
        assert _ended(proc)
        assert _joined(*second) == h.pid != proc.pid  # ran in a fresh process
    finally:
        h.close()
        if proc is not None:
            _ended(proc)


def test_cancel_of_a_call_whose_process_does_not_answer_ends_the_process(tmp_path):
    # only the cancel can notice here: a stopped process or a missing pong would take 10 minutes
    h = ModelHost(preload=False, liveness=Liveness(stopped_grace=600, ping_timeout=600, cancel_grace=1.0))
    heard: list[str] = []
    h.add_listener(heard.append)
    running, cancel = threading.Event(), threading.Event()
    proc = None
    try:
        call = _outcome(h.call, _hold, str(tmp_path / "never"), task=TaskState(lambda *a: running.set(), cancel))
        assert running.wait(GUARD_S), "the job did not start in the model process"
        proc = h._proc
        proc.send_signal(signal.SIGSTOP)
        cancel.set()
        err = _joined(*call)
        sentence = "the model process did not answer Cancel within 1 s; it was ended — load the model again"
        assert isinstance(err, ModelHostError) and str(err) == sentence and heard == [sentence]
        assert _ended(proc) and not h.alive()
    finally:
        h.close()
        if proc is not None:
            _ended(proc)


def test_a_process_that_answers_no_ping_is_ended_though_it_is_not_stopped():
    # the GIL is held in C: the process is asleep (state S), not stopped, but nothing in it can
    # answer; it cannot run its SIGTERM handler either, so it takes the SIGKILL
    h = ModelHost(preload=False)
    proc = None
    try:
        # start the process and import this module in it under the default limits: a slow start
        # (imports hold the GIL too) must not be what ends it
        assert h.call(_pid) == h.pid
        h.liveness = Liveness(ping_timeout=1.0, term_grace=0.5)
        running = threading.Event()
        call = _outcome(h.call, _hold_gil, 600, task=TaskState(lambda *a: running.set()))
        assert running.wait(GUARD_S), "the job did not start in the model process"
        proc = h._proc
        err = _joined(*call)
        assert isinstance(err, ModelHostError)
        assert str(err).startswith("the model process stopped answering (no reply for ")
        assert str(err).endswith("; it was ended — load the model again")
        assert _ended(proc)
    finally:
        h.close()
        if proc is not None:
            _ended(proc)


def test_a_busy_process_that_answers_pings_is_not_ended(tmp_path):
    # pings every 50 ms, a hang after 2 s: the job computes until the host has seen 80 answers
    # (4 s of pinging), so a process that did not answer would have been ended twice over
    h = ModelHost(preload=False, liveness=Liveness(ping_interval=0.05, ping_timeout=2.0))
    go = tmp_path / "go"
    running = threading.Event()
    try:
        pid = h.call(_pid)
        call = _outcome(h.call, _busy, str(go), task=TaskState(lambda *a: running.set()))
        assert running.wait(GUARD_S), "the job did not start in the model process"
        start = h.pongs
        t0 = time.monotonic()
        while h.pongs < start + 80 and call[0].is_alive() and time.monotonic() - t0 < GUARD_S:
            time.sleep(0.02)
        go.touch()
        rounds = _joined(*call)
        assert isinstance(rounds, int) and rounds > 0, rounds
        assert h.pongs >= start + 80
        assert h.pid == pid and h.call(_pid) == pid  # the same process
    finally:
        h.close()


def test_ending_a_process_continues_a_stopped_one_and_kills_one_that_ignores_sigterm(tmp_path):
    handles = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: os._exit(7)); "
               "print('ready', flush=True); time.sleep(600)")
    ignores = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(600)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for code in (handles, ignores)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        stopped, stubborn = procs
        stopped.send_signal(signal.SIGSTOP)
        _end_process(stopped, GUARD_S)  # without SIGCONT it would wait the whole grace, then SIGKILL
        assert stopped.returncode == 7
        _end_process(stubborn, 0.2)
        assert stubborn.returncode == -signal.SIGKILL
    finally:
        for proc in procs:
            _ended(proc)
            proc.stdout.close()


# -- orphans ------------------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_model_processes_are_started_from_one_thread_that_outlives_the_callers(monkeypatch):
    # Linux sends the parent-death signal when the *thread* that started a child ends: a model
    # process restarted from a worker thread must not end with that thread
    starters = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: starters.append(threading.current_thread()) or "proc")
    callers = [threading.Thread(target=_spawn, args=(["true"],)) for _ in range(2)]
    for t in callers:
        t.start()
        t.join(GUARD_S)
    assert len(starters) == 2 and starters[0] is starters[1]
    assert starters[0] not in callers and starters[0] is not threading.current_thread()
    assert starters[0].is_alive() and starters[0].daemon


ORPHAN_SCRIPT = """
import os, signal, threading, time
from analysis.host import ModelHost, _arena_dir
from tests.test_host import _mid_write
host = ModelHost(preload=False, parent_death_signal={pdeath})
host.start()
child = host.pid
threading.Thread(target=host.call, args=(_mid_write, {marker!r}), daemon=True).start()
t0 = time.monotonic()
while not os.path.exists({marker!r}) and time.monotonic() - t0 < 120:
    time.sleep(0.01)
files = [f for f in os.listdir(_arena_dir()) if f"-w{{child}}-" in f]
print(child, *files, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the window dies mid-run
"""


@pytest.mark.parametrize("pdeath", [True, False], ids=["parent-death-signal", "connection-closed"])
def test_the_model_process_of_a_killed_window_exits_and_removes_its_half_written_file(tmp_path, pdeath):
    marker = tmp_path / "mid-write"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    script = ORPHAN_SCRIPT.format(pdeath=pdeath, marker=str(marker))
    window = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=env)
    assert window.returncode == -signal.SIGKILL, window.stderr[-3000:]
    child, *files = window.stdout.split()
    pid = int(child)
    try:
        assert marker.exists() and files, "the model process was not writing its array file when the window died"
        # the orphan exits by itself (with the first path off, the closed connection alone ends
        # it); the wait is bounded only so a test that fails does not hang
        t0 = time.monotonic()
        while _pid_alive(pid) and time.monotonic() - t0 < GUARD_S:
            time.sleep(0.05)
        assert not _pid_alive(pid), "the model process outlived its window"
        assert [f for f in files if os.path.exists(os.path.join(_arena_dir(), f))] == []  # it removed its file
        sweep_arrays()
        assert [f for f in os.listdir(_arena_dir()) if f"-w{pid}-" in f] == []
    finally:
        if _pid_alive(pid):  # our grandchild, left running only if the test failed
            os.kill(pid, signal.SIGKILL)
