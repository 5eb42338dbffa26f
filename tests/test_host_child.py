"""The model process's side of :mod:`analysis.host`, run in this process.

The model process (``_Child``, ``_child_main``) normally runs in a child, where neither coverage
nor mutation testing sees it; ``tests/test_host.py`` checks it end to end through a real process.
Here the same code runs with a fake connection, so each rule is held by a test that names it: the
reader answers pings and cancels at once and queues the rest, a cancel reaches only the running job,
a job's model references become the loaded models, an owner's previous model is freed, every failure
goes back as an error message, and the main loop runs releases and calls in order.
"""

from __future__ import annotations

import os
import pickle
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import analysis.host as host
from analysis.errors import InputError


class _Stop(BaseException):
    """Ends a loop under test (the model process's loops end only with the process)."""


class FakeConn:
    """A connection: ``recv`` hands out the messages given, then says the window closed it;
    ``send`` records what the model process sends (``stop_after``: raise :class:`_Stop` once that
    many messages were sent, to end ``_child_main``)."""

    def __init__(self, incoming=(), stop_after: int | None = None, fail_send: bool = False) -> None:
        self.incoming = list(incoming)
        self.sent: list[tuple] = []
        self.stop_after = stop_after
        self.fail_send = fail_send

    def recv(self):
        if not self.incoming:
            raise EOFError
        return self.incoming.pop(0)

    def send(self, msg) -> None:
        if self.fail_send:
            raise BrokenPipeError("the window closed the connection")
        self.sent.append(msg)
        if self.stop_after is not None and len(self.sent) >= self.stop_after:
            raise _Stop


class Exited(Exception):
    """The process would end here."""


@pytest.fixture
def exits(monkeypatch):
    """``_exit_now`` records its code instead of ending this process (and returns)."""
    codes: list[int] = []

    def fake(code):
        codes.append(code)

    monkeypatch.setattr(host, "_exit_now", fake)
    return codes


@pytest.fixture
def env_kept():
    """A job's environment replaces the HEADMAP_/HF_/TRANSFORMERS_ variables: put them back."""
    before = {k: v for k, v in os.environ.items() if k.startswith(host.ENV_PREFIXES)}
    yield dict(before)
    for k in [k for k in os.environ if k.startswith(host.ENV_PREFIXES)]:
        del os.environ[k]
    os.environ.update(before)


def _model(name: str = "m"):
    return SimpleNamespace(reference=name, kind="encoder", summary={"layers": 2}, path="/models/" + name,
                           notes=["a note"])


def _result(msg):
    """The value of an ("ok", data, path) message."""
    assert msg[0] == "ok", msg
    return host.loads(msg[1], msg[2])


# --------------------------------------------------------------------------------------------
# the reader thread
# --------------------------------------------------------------------------------------------
def test_the_reader_answers_pings_and_queues_jobs_in_order_until_the_window_closes(exits):
    """A ping is answered with its own number at once (never queued); calls and releases are queued
    in the order they came; a closed connection ends the process with code 0."""
    call = ("call", 1, len, ("ab",), {}, {}, None, None)
    conn = FakeConn([("ping", 7), call, ("release", 3), ("ping", 8)])
    child = host._Child(conn)
    child.read()
    assert exits == [0]
    assert conn.sent == [("pong", 7), ("pong", 8)]
    assert [child.jobs.get_nowait(), child.jobs.get_nowait()] == [call, ("release", 3)]
    assert child.jobs.empty()


def test_a_cancel_stops_only_the_running_job_and_is_acknowledged_at_once(exits):
    """A cancel for the running job sets its cancel event; one for another job (finished, or not
    started) does not; both are acknowledged with their job's number."""
    child = host._Child(FakeConn([("cancel", 4)]))
    child.current = 5
    child.read()
    assert not child.cancel.is_set() and child.conn.sent == [("cancelling", 4)]

    child = host._Child(FakeConn([("cancel", 5)]))
    child.current = 5
    child.read()
    assert child.cancel.is_set() and child.conn.sent == [("cancelling", 5)]
    assert child.jobs.empty()


def test_quit_ends_the_process_at_once_and_queues_nothing(monkeypatch):
    """"quit" (the window closes) ends the process from the reader thread: no job after it runs."""
    ended = []

    def fake_quit():
        ended.append(True)
        raise Exited(0)

    monkeypatch.setattr(host, "_quit", fake_quit)
    child = host._Child(FakeConn([("quit",), ("release", 1)]))
    with pytest.raises(Exited):
        child.read()
    assert ended == [True] and child.jobs.empty()


def test_quit_flushes_the_standard_streams_before_ending(monkeypatch, exits):
    """What the model process printed reaches the terminal: both streams are flushed, a closed one
    is skipped, then the process ends with code 0."""
    flushed = []

    class Stream:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def flush(self):
            if self.fail:
                raise ValueError("I/O operation on closed file")
            flushed.append(self.name)

    monkeypatch.setattr("sys.stdout", Stream("out", fail=True))
    monkeypatch.setattr("sys.stderr", Stream("err"))
    host._quit()
    assert flushed == ["err"] and exits == [0]


def test_sending_on_a_closed_connection_ends_the_process(exits):
    """Nobody waits for the answer: the model process ends (code 0) instead of raising."""
    child = host._Child(FakeConn(fail_send=True))
    child.send(("pong", 1))
    assert exits == [0]


# --------------------------------------------------------------------------------------------
# models held, released, resolved
# --------------------------------------------------------------------------------------------
def test_an_owners_new_model_frees_its_previous_one_and_other_owners_keep_theirs():
    """Each window (owner) holds one model: loading another frees the first; another owner's model
    and a model without an owner stay."""
    child = host._Child(FakeConn())
    a, b, c, d = _model("a"), _model("b"), _model("c"), _model("d")
    remote = child.keep(a, 1, "window-1")
    assert (remote.reference, remote.kind, remote.handle, remote.notes) == ("a", "encoder", 1, ("a note",))
    assert remote.path == host.Path("/models/a") and remote.summary == {"layers": 2}
    child.keep(b, 2, "window-2")
    child.keep(c, 3, None)
    child.keep(d, 4, "window-1")
    assert child.models == {2: b, 3: c, 4: d}
    assert child.owners == {"window-1": 4, "window-2": 2}
    child.keep(d, 4, "window-1")  # the same model again: kept
    assert child.models[4] is d


def test_releasing_a_model_forgets_it_and_its_owner():
    child = host._Child(FakeConn())
    child.keep(_model("a"), 1, "w1")
    child.keep(_model("b"), 2, "w2")
    child.release(1)
    assert list(child.models) == [2] and child.owners == {"w2": 2}
    child.release(9)  # an unknown handle: nothing happens
    assert list(child.models) == [2]


def test_a_model_reference_becomes_the_model_and_a_released_one_says_to_load_again():
    child = host._Child(FakeConn())
    m = _model()
    child.keep(m, 5, None)
    assert child.resolve(host._ModelRef(5)) is m
    assert child.resolve("text") == "text" and child.resolve(5) == 5
    with pytest.raises(host.ModelHostError, match="no longer loaded .* load it again"):
        child.resolve(host._ModelRef(6))


# --------------------------------------------------------------------------------------------
# a job
# --------------------------------------------------------------------------------------------
def test_a_job_gets_its_models_its_environment_and_a_task_and_its_result_comes_back(env_kept):
    """``fn(*args, task=…, **kwargs)`` runs with model references resolved (positional and keyword),
    the call's environment applied, progress sent as it comes; the result comes back with its big
    arrays through the mapped file, which is then the receiver's."""
    conn = FakeConn()
    child = host._Child(conn)
    m = _model()
    child.keep(m, 3, None)
    seen = {}

    def fn(model, n, *, task, other):
        seen.update(model=model, other=other, env=os.environ.get("HEADMAP_TEST_JOB"),
                    running=child.current, task=task)
        task.step("run", 0.5, "half way")
        return {"n": n, "big": np.arange(host.ARRAY_MIN_BYTES, dtype=np.uint8)}

    env = dict(env_kept, HEADMAP_TEST_JOB="yes")
    child.call(("call", 11, fn, (host._ModelRef(3), 2), {"other": host._ModelRef(3)}, env, None, None))
    assert seen["model"] is m and seen["other"] is m and seen["env"] == "yes" and seen["running"] == 11
    assert isinstance(seen["task"], host.TaskState)
    assert conn.sent[0] == ("progress", "run", 0.5, "half way")
    assert len(conn.sent) == 2 and conn.sent[1][2] is not None  # the array went through a file
    path = conn.sent[1][2]
    assert path not in host._WRITING  # handed over: the receiver removes it
    out = _result(conn.sent[1])
    assert out["n"] == 2 and out["big"].size == host.ARRAY_MIN_BYTES
    assert child.current is None and not os.path.exists(path)


def test_a_job_clears_the_previous_cancel_and_sees_its_own(env_kept):
    """A cancel of an earlier job does not cancel the next one; the task's cancel is the event the
    reader sets."""
    conn = FakeConn()
    child = host._Child(conn)
    child.cancel.set()
    states = []

    def fn(*, task):
        states.append(task.cancelled)
        child.cancel.set()  # the reader thread's cancel, arriving while the job runs
        states.append(task.cancelled)
        return None

    child.call(("call", 1, fn, (), {}, env_kept, None, None))
    assert states == [False, True]
    assert _result(conn.sent[-1]) is None


def test_a_load_job_keeps_the_model_and_sends_its_description(env_kept):
    """A load's result (the model) stays in the model process under the handle given, for the owner;
    the window gets its description."""
    conn = FakeConn()
    child = host._Child(conn)
    m = _model("loaded")

    def load(*, task):
        return m

    child.call(("call", 2, load, (), {}, env_kept, 8, "window"))
    remote = _result(conn.sent[-1])
    assert isinstance(remote, host.RemoteModel) and remote.handle == 8 and remote.reference == "loaded"
    assert child.models == {8: m} and child.owners == {"window": 8}


def test_a_failing_job_sends_its_error_and_the_next_job_runs(env_kept):
    """The exception goes back whole (type, message, traceback); the process goes on."""
    conn = FakeConn()
    child = host._Child(conn)

    def bad(*, task):
        raise InputError("the text is empty; type a sentence")

    child.call(("call", 3, bad, (), {}, env_kept, None, None))
    kind, payload, tb = conn.sent[-1]
    assert kind == "error"
    err = pickle.loads(payload)
    assert type(err) is InputError and str(err) == "the text is empty; type a sentence"
    assert "InputError" in tb and "bad" in tb
    assert child.current is None
    child.call(("call", 4, lambda *, task: 5, (), {}, env_kept, None, None))
    assert _result(conn.sent[-1]) == 5


def test_a_job_on_a_released_model_says_to_load_it_again(env_kept):
    conn = FakeConn()
    child = host._Child(conn)
    child.call(("call", 5, lambda m, *, task: m, (host._ModelRef(1),), {}, env_kept, None, None))
    kind, payload, _ = conn.sent[-1]
    assert kind == "error" and "load it again" in str(pickle.loads(payload))


def test_a_result_that_cannot_be_pickled_is_an_error_and_leaves_no_file(env_kept):
    """A result the window cannot receive becomes an error; the array file begun for it is removed."""
    conn = FakeConn()
    child = host._Child(conn)
    before = set(host._WRITING)

    def fn(*, task):
        return {"big": np.zeros(host.ARRAY_MIN_BYTES, np.uint8), "lock": threading.Lock()}

    child.call(("call", 6, fn, (), {}, env_kept, None, None))
    kind = conn.sent[-1][0]
    assert kind in ("error", "error_text")
    assert "lock" in str(conn.sent[-1]).lower()
    assert host._WRITING == before


# --------------------------------------------------------------------------------------------
# the main loop
# --------------------------------------------------------------------------------------------
def test_the_main_loop_runs_releases_and_calls_in_the_order_they_came(monkeypatch, env_kept, exits):
    """``_child_main``: the reader queues; the main thread releases a model and runs calls, one at a
    time, in order (a release between two calls frees the model before the second)."""
    monkeypatch.setattr(host, "_quiet", lambda: None)
    m = _model()
    order = []

    def load(*, task):
        order.append("load")
        return m

    def use(model, *, task):
        order.append("use")
        return model.reference

    msgs = [("call", 1, load, (), {}, env_kept, 1, None),
            ("call", 2, use, (host._ModelRef(1),), {}, env_kept, None, None),
            ("release", 1),
            ("call", 3, use, (host._ModelRef(1),), {}, env_kept, None, None)]
    conn = FakeConn(msgs, stop_after=3)
    done = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            host._child_main(conn, False)
        except BaseException as e:  # _Stop ends the loop
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "the model process's loop did not run the jobs"
    assert [type(e) for e in errors] == [_Stop]
    assert order == ["load", "use"]
    assert [msg[0] for msg in conn.sent] == ["ok", "ok", "error"]
    assert _result(conn.sent[1]) == "m"
    assert "load it again" in str(pickle.loads(conn.sent[2][1]))


def test_stores_in_a_sent_result_become_the_receivers_and_those_of_a_failed_one_stay(monkeypatch, env_kept):
    """A stored capture pickled into a result that was sent is the window's from then on (this
    process no longer removes it); one whose result could not be sent stays this process's."""
    import sys

    said = []
    fake_store = SimpleNamespace(disown_sent=lambda: said.append("disown"), forget_sent=lambda: said.append("forget"))
    monkeypatch.setitem(sys.modules, "analysis.store", fake_store)
    child = host._Child(FakeConn())
    child.call(("call", 1, lambda *, task: 1, (), {}, env_kept, None, None))
    assert said == ["disown"]
    child.call(("call", 2, lambda *, task: threading.Lock(), (), {}, env_kept, None, None))
    assert said == ["disown", "forget"]
    assert child.conn.sent[-1][0] == "error"


# --------------------------------------------------------------------------------------------
# the model process's start: its arguments, signals and parent
# --------------------------------------------------------------------------------------------
def test_the_entry_reads_its_arguments_path_and_owner(monkeypatch):
    """``_child_entry``: FD PRELOAD PARENT PDEATH. The connection is the inherited descriptor, the
    stores it writes are the parent's (the window removes them), the extra import path comes
    first (in order, none twice) and leaves the environment, the parent-death signal is asked for
    only when PDEATH is 1."""
    import sys
    from multiprocessing.connection import Connection

    import analysis.store as store

    calls = []
    monkeypatch.setattr(host, "_exit_on_sigterm", lambda: calls.append("sigterm"))
    monkeypatch.setattr(host, "_ask_parent_death_signal", lambda parent: calls.append(("pdeath", parent)))
    monkeypatch.setattr(host, "_child_main", lambda conn, preload: calls.append(("main", conn, preload)))
    monkeypatch.setattr(store, "DEFAULT_OWNER", store.DEFAULT_OWNER)
    monkeypatch.setattr(sys, "path", ["/already", *sys.path])
    monkeypatch.setenv("HEADMAP_HOST_SYSPATH", os.pathsep.join(["/first", "", "/already", "/second"]))
    r, w = os.pipe()
    conn = None
    try:
        monkeypatch.setattr(sys, "argv", ["-c", str(r), "1", "4321", "1"])
        host._child_entry()
        assert calls[:2] == ["sigterm", ("pdeath", 4321)]
        (_, conn, preload), = calls[2:]
        assert isinstance(conn, Connection) and conn.fileno() == r and preload is True
        assert store.DEFAULT_OWNER == 4321
        assert sys.path[:3] == ["/first", "/second", "/already"] and sys.path.count("/already") == 1
        assert "HEADMAP_HOST_SYSPATH" not in os.environ

        calls.clear()
        r2, w2 = os.pipe()
        os.close(w2)
        monkeypatch.setattr(sys, "argv", ["-c", str(r2), "0", "99", "0"])
        host._child_entry()
        assert [c if isinstance(c, str) else c[0] for c in calls] == ["sigterm", "main"] and calls[1][2] is False
        calls[1][1].close()
        calls.clear()
        r3, w3 = os.pipe()
        os.close(w3)
        monkeypatch.setattr(sys, "argv", ["-c", str(r3), "0", "99"])  # no PDEATH argument: not asked
        host._child_entry()
        assert [c if isinstance(c, str) else c[0] for c in calls] == ["sigterm", "main"]
        calls[1][1].close()
    finally:
        if conn is not None:
            conn.close()
        os.close(w)


# the signals thread ends with SystemExit (our stand-in for os._exit), which pytest reports
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sigterm_ends_the_model_process_from_any_thread(monkeypatch):
    """SIGTERM's handler ends the process (code 143); so does the signals thread when the signal's
    number reaches the wakeup descriptor (the main thread may be inside a forward pass), and when
    that descriptor closes. Other signals' numbers are ignored."""
    import signal
    import time

    handlers, wakeup = {}, []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.__setitem__(sig, handler))
    monkeypatch.setattr(signal, "set_wakeup_fd", lambda fd: wakeup.append(fd))
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise SystemExit(code)  # ends the signals thread quietly

    monkeypatch.setattr(host, "_exit_now", fake_exit)

    def started():
        host._exit_on_sigterm()
        (w,) = wakeup
        wakeup.clear()
        assert not os.get_blocking(w)  # the C handler must never block on a full pipe
        return w

    def wait_for(n):
        deadline = time.monotonic() + 10
        while len(codes) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    w = started()
    with pytest.raises(SystemExit):
        handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert codes == [143]
    os.write(w, bytes([signal.SIGINT, signal.SIGHUP]))  # not SIGTERM: the thread goes on waiting
    time.sleep(0.2)
    assert codes == [143]
    os.write(w, bytes([signal.SIGUSR1, signal.SIGTERM]))
    wait_for(2)
    assert codes == [143, 143]
    os.close(w)

    w = started()
    os.close(w)  # the descriptor closed: nobody can tell us any more
    wait_for(3)
    assert codes == [143, 143, 143]


def test_the_parent_death_signal_is_asked_for_on_linux_and_a_dead_parent_ends_the_process(monkeypatch, exits):
    import ctypes
    import signal
    import sys

    asked = []

    class Libc:
        def __init__(self, name, use_errno=False):
            assert name is None  # this process's own symbols (libc's prctl)

        def prctl(self, *args):
            asked.append(args)
            return 0

    monkeypatch.setattr(ctypes, "CDLL", Libc)
    monkeypatch.setattr(sys, "platform", "linux")
    host._ask_parent_death_signal(os.getppid())
    assert asked == [(1, int(signal.SIGTERM), 0, 0, 0)] and exits == []
    host._ask_parent_death_signal(os.getppid() + 100000)  # the parent died before the request took effect
    assert exits == [0]

    asked.clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    host._ask_parent_death_signal(os.getppid() + 100000)
    assert asked == [] and exits == [0]

    def no_libc(*a, **k):
        raise OSError("no libc")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    host._ask_parent_death_signal(os.getppid() + 100000)  # cannot ask: the closed pipe still ends us
    assert exits == [0]
