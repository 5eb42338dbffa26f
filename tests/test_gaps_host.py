"""Corners of :mod:`analysis.host` that no other test reaches, pinned down without a real model.

The array files: the padding that keeps every array aligned (odd sizes round-trip exactly, flags
kept), an empty file, a system without ``MAP_POPULATE``, a result file removed before it is read,
array references without a file, the fallback folder, and the sweep's edge cases (odd names, a
file gone before its age is read, an unreadable folder). Processes: ``pid_alive`` for pid 0, a
foreign process and a zombie; ``_process_state`` without ``/proc``; spawning elsewhere than Linux
and a spawn that fails; ending a process that vanished or will not go. The model process's helpers
(its environment, torch's threads, an exception that cannot be rebuilt, stores sent without the
store module, an unreadable cache).

The parent's side of :class:`ModelHost` runs against a *stand-in*: a ``sleep`` process as the child
and the far end of a real socket pair played by a thread of this test, so every message, death and
broken pipe is real and deterministic. It pins down the sentences that say how to go on ("could not
start the model process …; set HEADMAP_IN_PROCESS=1", "could not send the job …; try again", "this
model belongs to another model process; load it again", a child error that cannot be unpickled,
closed meanwhile), that a failing listener never fails the call, that releasing anything but this
host's model does nothing, and that closing copes with a child that ignores "quit".
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import analysis.host as host
from analysis.host import CLOSED, Liveness, ModelHost, ModelHostError, RemoteModel
from analysis.tasks import as_task

#: a guard against a hang, never a timing assertion
GUARD_S = 20


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _echo(*args, task=None, **kwargs):
    """What a stand-in runs for a call (pickled by name, like every job's function)."""
    return {"args": args, "kwargs": kwargs}


def _fake_loader(reference, *, task=None, **kwargs):
    return SimpleNamespace(reference=reference, kind="encoder", summary={"layers": 1}, path="/models/" + reference,
                           notes=["a note"])


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt: its constructor wants two arguments, its args hold one."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def _exited(code: int = 3) -> subprocess.Popen:
    """A process that has exited with ``code`` (not reaped yet: ``poll`` reaps it)."""
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    deadline = time.monotonic() + GUARD_S
    while host._process_state(proc.pid) not in ("Z", None) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def _ended(proc: subprocess.Popen) -> bool:
    try:
        proc.wait(GUARD_S)
    except subprocess.TimeoutExpired:
        return False
    return True


class StandIn:
    """Plays the model process at the far end of ``peer``: records every message and answers a
    call with ``on_call(msg, peer)`` (it never answers pings: a stand-in that goes quiet is ended
    after the host's ping timeout instead of hanging the test)."""

    def __init__(self, peer: Connection, on_call) -> None:
        self.peer, self.on_call = peer, on_call
        self.got: list[tuple] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.peer.poll(0.02):
                    continue
                msg = self.peer.recv()
                self.got.append(msg)
            except (EOFError, OSError):
                return
            if msg[0] == "call":
                try:
                    self.on_call(msg, self.peer)
                except Exception as exc:  # a broken stand-in fails the call at once, not after a timeout
                    try:
                        host._send_error(self.peer.send, exc)
                    except OSError:
                        return

    def calls(self) -> list[tuple]:
        return [m for m in self.got if m[0] == "call"]


def _run_echo(msg, peer):
    """A stand-in's call: run the job's function as the model process would (no models)."""
    _, _job, fn, args, kwargs, _env, _handle, _owner = msg
    data, path = host.dumps(fn(*args, task=None, **kwargs))
    peer.send(("ok", data, path))


@pytest.fixture
def wired(monkeypatch, tmp_path):
    """A host whose child is a stand-in: a ``sleep`` process, and the far end of a real socket pair
    (``peer``) for the test to play the model process on."""
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))  # the host sweeps stores on ending a child
    h = ModelHost(preload=False, liveness=Liveness(ping_interval=60.0, ping_timeout=5.0, term_grace=0.5))
    proc = _sleeper()
    ours, theirs = socket.socketpair()
    h._proc, h._conn, h._generation = proc, Connection(ours.detach()), 1
    peer = Connection(theirs.detach())
    yield SimpleNamespace(host=h, proc=proc, peer=peer)
    h._discard()
    peer.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _model(h, handle: int = 1, process: int = 1) -> RemoteModel:
    return RemoteModel(reference="m", kind="encoder", summary={}, path=Path("/models/m"), notes=(), handle=handle,
                       host=h, process=process)


class FakeProc:
    """A process handle whose signals fail or whose waits never end (what a real process does only
    in a race or in uninterruptible sleep)."""

    def __init__(self, *, vanished: bool = False, stuck: bool = False) -> None:
        self.vanished, self.stuck = vanished, stuck
        self.pid = 999_999_999
        self.calls: list[str] = []

    def poll(self):
        return None

    def terminate(self):
        self.calls.append("terminate")
        if self.vanished:
            raise ProcessLookupError("no such process")

    def send_signal(self, sig):
        self.calls.append(f"signal {sig}")

    def kill(self):
        self.calls.append("kill")

    def wait(self, timeout=None):
        self.calls.append(f"wait {timeout}")
        if self.stuck:
            raise subprocess.TimeoutExpired("model", timeout)
        return 0


# --------------------------------------------------------------------------------------------
# array files
# --------------------------------------------------------------------------------------------
def test_array_files_go_to_the_temp_folder_when_dev_shm_is_not_writable(monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if p == "/dev/shm" else real_access(p, mode))
    assert host._arena_dir() == tempfile.gettempdir()
    data, path = host.dumps({"a": np.ones(1 << 16)})
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
    finally:
        out = host.loads(data, path)
    assert out["a"].sum() == 1 << 16 and not os.path.exists(path)


def test_arrays_of_odd_sizes_round_trip_exactly_each_aligned_and_with_its_flags():
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 255, host.ARRAY_MIN_BYTES + 1, dtype=np.uint8),  # 65537 bytes: the next one needs padding
        rng.standard_normal(8193),  # 65544 bytes, float64
        rng.integers(-1000, 1000, (3, 10923), dtype=np.int16),  # 65538 bytes
        np.arange(16411, dtype=np.float32),  # 65644 bytes
    ]
    writeable = [False, True, False, False]
    for a, w in zip(arrays, writeable, strict=True):
        a.setflags(write=w)
    data, path = host.dumps(arrays)
    expected_size = 0
    for a in arrays:
        expected_size += (-expected_size) % 64 + a.nbytes
    assert os.path.getsize(path) == expected_size  # padding only between arrays, none after the last
    out = host.loads(data, path)
    for a, b, w in zip(arrays, out, writeable, strict=True):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(b, a)
        assert b.flags.writeable == w
        if not w:  # a view on the mapping (page-aligned): its offset in the file is a multiple of 64
            assert b.ctypes.data % 64 == 0


def test_array_references_without_an_array_file_or_of_an_unknown_kind_are_refused(tmp_path):
    data, path = host.dumps({"a": np.ones(1 << 16)})
    try:
        with pytest.raises(pickle.UnpicklingError, match="unknown array reference 'nd'"):
            host.loads(data, None)
    finally:
        host.loads(data, path)

    class OddPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("zz", 0, "<f8", (1,), True) if isinstance(obj, np.ndarray) else None

    buf = io.BytesIO()
    OddPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(np.ones(1))
    arrays = tmp_path / "headmap-odd.arrays"
    arrays.write_bytes(np.ones(8).tobytes())
    with pytest.raises(pickle.UnpicklingError, match="unknown array reference 'zz'"):
        host.loads(buf.getvalue(), str(arrays))
    assert not arrays.exists()


def test_an_empty_array_file_is_read_as_no_arrays_and_removed(tmp_path):
    empty = tmp_path / "headmap-empty.arrays"
    empty.write_bytes(b"")
    assert host.loads(pickle.dumps({"x": [1, 2]}), str(empty)) == {"x": [1, 2]}
    assert not empty.exists()


def test_without_map_populate_arrays_are_mapped_read_only_and_copied_when_writeable(monkeypatch):
    monkeypatch.delattr(mmap, "MAP_POPULATE", raising=False)  # macOS
    ro = np.arange(100_000, dtype=np.float32)
    ro.setflags(write=False)
    rw = np.ones((300, 300))
    data, path = host.dumps({"ro": ro, "rw": rw})
    out = host.loads(data, path)
    assert not os.path.exists(path)
    np.testing.assert_array_equal(out["ro"], ro)
    np.testing.assert_array_equal(out["rw"], rw)
    assert not out["ro"].flags.writeable and out["rw"].flags.writeable


def test_a_result_whose_array_file_was_removed_says_to_run_it_again():
    data, path = host.dumps({"a": np.ones(1 << 16)})
    os.unlink(path)  # swept: its writer died right after sending it
    with pytest.raises(ModelHostError) as err:
        host.loads(data, path)
    assert str(err.value) == ("the model process's result was removed before it could be read "
                              "(the process ended meanwhile); run it again")
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_sweeping_a_folder_that_cannot_be_read_removes_nothing(tmp_path):
    assert host.sweep_arrays(str(tmp_path / "missing")) == 0
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"x")
    assert host.sweep_arrays(str(not_a_folder)) == 0


@pytest.mark.parametrize("name, pids", [
    ("headmap-12-w34-abc.arrays", (12, 34)),
    ("headmap-12-abc.arrays", (12, None)),
    ("headmap-12-x34-abc.arrays", None),  # four parts, the third no writer
    ("headmap-12-w-abc.arrays", None),  # a writer without digits
    ("headmap-12-w3x-abc.arrays", None),
    ("headmap-12-w34-a-b.arrays", None),  # five parts
    ("headmap-12.arrays", None),  # two parts
    ("headmap-.arrays", None),
    ("headmap-12-abc.arrays.part", None),
    ("other-12-abc.arrays", None),
])
def test_only_array_files_of_either_naming_name_their_processes(name, pids):
    assert host._arena_pids(name) == pids


def test_files_with_odd_names_are_never_swept_though_the_pids_in_them_are_dead(tmp_path):
    dead = _exited(0)
    dead.wait()
    names = [f"headmap-{dead.pid}-x{dead.pid}-abc.arrays", f"headmap-{dead.pid}-w{dead.pid}-a-b.arrays",
             f"headmap-{dead.pid}.arrays"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f"headmap-{dead.pid}-w{dead.pid}-abc.arrays").write_bytes(b"x")  # a real one, to see the sweep works
    assert host.sweep_arrays(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(names)


def test_a_file_of_the_older_naming_gone_before_its_age_is_read_is_not_counted(tmp_path, monkeypatch):
    name = f"headmap-{os.getpid()}-gone.arrays"  # a live receiver: its age decides
    monkeypatch.setattr(os, "listdir", lambda d: [name])  # listed, then removed by another sweeper
    assert host._age(str(tmp_path / name)) == 0.0
    assert host.sweep_arrays(str(tmp_path)) == 0


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def test_pid_0_and_negative_pids_count_as_alive_and_are_never_signalled(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert host.pid_alive(0) and host.pid_alive(-1)
    assert sent == []  # signal 0 to pid 0 or -1 would ask about a whole group, or everyone


def test_a_process_owned_by_someone_else_counts_as_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", denied)
    assert host.pid_alive(12345)


def test_a_zombie_counts_as_dead_and_so_does_a_reaped_process():
    proc = _exited(0)
    try:
        assert host._process_state(proc.pid) == "Z"
        assert not host.pid_alive(proc.pid)
    finally:
        proc.wait()
    assert not host.pid_alive(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux process's state comes from /proc")
def test_process_state_on_linux_is_read_from_proc_only(monkeypatch):
    dead = _exited(0)
    dead.wait()
    assert host._process_state(dead.pid) is None  # no /proc entry

    def no_ps(*a, **k):
        raise AssertionError("ps asked on Linux")

    monkeypatch.setattr(subprocess, "run", no_ps)
    monkeypatch.setattr(host, "open", lambda *a, **k: io.BytesIO(b"garbage without a paren"), raising=False)
    assert host._process_state(os.getpid()) is None  # unreadable stat: unknown, and ps is not asked


@pytest.mark.skipif(shutil.which("ps") is None, reason="needs ps")
def test_process_state_elsewhere_asks_ps(monkeypatch, tmp_path, request):
    proc = _sleeper()
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + GUARD_S
        while host._process_state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        request.getfixturevalue("without_proc")  # the real ps from here on
        assert host._process_state(proc.pid) == "T"  # stopped, says ps
        assert host._process_state(proc.pid, ask_ps=False) is None
        dead = _exited(0)
        dead.wait()
        assert host._process_state(dead.pid) is None  # ps prints nothing
        monkeypatch.setenv("PATH", str(tmp_path))  # no ps at all
        assert host._process_state(proc.pid) is None
    finally:
        proc.kill()
        proc.wait()


def test_spawning_elsewhere_than_linux_starts_the_process_in_the_calling_thread(monkeypatch):
    threads = []

    def popen(args, **kwargs):
        threads.append(threading.current_thread())
        return "started"

    monkeypatch.setattr(host, "sys", SimpleNamespace(platform="darwin"))
    monkeypatch.setattr(host, "subprocess", SimpleNamespace(Popen=popen))
    assert host._spawn(["model"]) == "started"
    assert threads == [threading.current_thread()]


def test_a_process_that_cannot_be_spawned_raises_in_the_caller():
    with pytest.raises(FileNotFoundError):
        host._spawn(["/nonexistent/headmap-model-process"])
    proc = host._spawn([sys.executable, "-c", "pass"])  # the spawner goes on
    assert proc.wait(GUARD_S) == 0


def test_ending_a_process_that_vanished_meanwhile_still_waits_for_it():
    proc = FakeProc(vanished=True)
    host._end_process(proc, 0.1)
    assert proc.calls == ["terminate", "wait 0.1", "wait 5"]


def test_ending_a_process_that_will_not_go_kills_it_and_gives_up_waiting():
    proc = FakeProc(stuck=True)
    host._end_process(proc, 0.1)  # no exception: a process in uninterruptible sleep is left to the kernel
    assert proc.calls == ["terminate", f"signal {signal.SIGCONT}", "wait 0.1", "kill", "wait 5"]


# --------------------------------------------------------------------------------------------
# the model process's helpers
# --------------------------------------------------------------------------------------------
def test_a_jobs_environment_replaces_the_forwarded_variables(monkeypatch):
    monkeypatch.setenv("HEADMAP_GAPS_OLD", "1")
    monkeypatch.setenv("HF_GAPS_KEPT", "old")
    monkeypatch.setenv("GAPS_OTHER", "mine")
    before = {k: v for k, v in os.environ.items() if k.startswith(host.ENV_PREFIXES)}
    try:
        host._apply_env({"HF_GAPS_KEPT": "new", "HEADMAP_GAPS_NEW": "2"})
        assert {k: v for k, v in os.environ.items() if k.startswith(host.ENV_PREFIXES)} == {
            "HF_GAPS_KEPT": "new", "HEADMAP_GAPS_NEW": "2"}
        assert os.environ["GAPS_OTHER"] == "mine"  # not forwarded: left alone
    finally:
        for k in [k for k in os.environ if k.startswith(host.ENV_PREFIXES)]:
            del os.environ[k]
        os.environ.update(before)


def test_torch_threads_are_left_alone_without_torch_and_follow_the_call_with_it(monkeypatch):
    default: list[int] = []
    monkeypatch.setitem(sys.modules, "torch", None)  # not imported in the model process
    host._torch_threads(default)
    assert default == []

    torch = SimpleNamespace(n=4, sets=[])
    torch.get_num_threads = lambda: torch.n

    def set_num_threads(n):
        torch.sets.append(n)
        torch.n = n

    torch.set_num_threads = set_num_threads
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setenv("HEADMAP_TORCH_THREADS", "2")
    host._torch_threads(default)
    host._torch_threads(default)  # already so: not set again
    monkeypatch.delenv("HEADMAP_TORCH_THREADS")
    host._torch_threads(default)
    assert default == [4] and torch.sets == [2, 4]


def test_stores_sent_without_the_store_module_is_nothing_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "analysis.store", None)
    host._stores_sent(True)
    host._stores_sent(False)
    said = []
    monkeypatch.setitem(sys.modules, "analysis.store", SimpleNamespace(disown_sent=lambda: said.append("disown"),
                                                                       forget_sent=lambda: said.append("forget")))
    host._stores_sent(True)
    host._stores_sent(False)
    assert said == ["disown", "forget"]


def test_an_unreadable_cache_sweeps_no_stores(monkeypatch):
    import analysis.store as store

    def unreadable():
        raise PermissionError(13, "Permission denied", "/cache/stores")

    monkeypatch.setattr(store, "sweep_stores", unreadable)
    assert host.sweep_stores() == 0
    monkeypatch.setattr(store, "sweep_stores", lambda: 2)
    assert host.sweep_stores() == 2


# --------------------------------------------------------------------------------------------
# the host, with a stand-in child
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("local", [False, True], ids=["cannot-be-rebuilt", "cannot-be-pickled"])
def test_a_child_exception_that_cannot_travel_arrives_as_a_host_error_with_its_class_name(wired, local):
    class LocalError(Exception):
        pass

    def on_call(msg, peer):
        try:
            raise LocalError("made in the child") if local else NeedsTwo("x", "y")
        except Exception as exc:
            host._send_error(peer.send, exc)

    stand_in = StandIn(wired.peer, on_call)
    with pytest.raises(ModelHostError) as err:
        wired.host.call(_echo)
    assert str(err.value) == ("LocalError: made in the child" if local else "NeedsTwo: x/y")
    assert ("LocalError" if local else "NeedsTwo") in err.value.__headmap_traceback__
    stand_in.stop.set()


def test_a_child_error_that_cannot_be_unpickled_says_to_see_the_log(wired):
    stand_in = StandIn(wired.peer, lambda msg, peer: peer.send(("error", b"\x80\x05not a pickle", "Traceback: boom")))
    with pytest.raises(ModelHostError) as err:
        wired.host.call(_echo)
    assert str(err.value) == "the model process failed; see the log"
    assert err.value.__headmap_traceback__ == "Traceback: boom"
    stand_in.stop.set()


def test_a_message_of_an_unknown_kind_is_ignored_and_the_result_after_it_arrives(wired):
    def on_call(msg, peer):
        peer.send(("news-from-a-newer-version", 1))
        _run_echo(msg, peer)

    stand_in = StandIn(wired.peer, on_call)
    assert wired.host.call(_echo, 5, k="v") == {"args": (5,), "kwargs": {"k": "v"}}
    stand_in.stop.set()


def test_the_host_counts_the_pongs_of_the_child_during_a_call(wired):
    def on_call(msg, peer):
        peer.send(("pong", 1))
        peer.send(("pong", 2))
        _run_echo(msg, peer)

    stand_in = StandIn(wired.peer, on_call)
    assert wired.host.pongs == 0
    assert wired.host.call(_echo, 1) == {"args": (1,), "kwargs": {}}
    assert wired.host.pongs == 2
    stand_in.stop.set()


def test_closing_the_host_waits_for_a_running_call_before_it_tells_the_child_to_quit(wired):
    h = wired.host
    h._lock.acquire()  # a call is running
    closing = threading.Thread(target=h.close, kwargs={"timeout": 30.0}, daemon=True)
    closing.start()
    try:
        assert not wired.peer.poll(0.5)  # the child is not told to quit while the call runs
    finally:
        h._lock.release()  # the call is done
    assert wired.peer.poll(10.0) and wired.peer.recv() == ("quit",)
    wired.proc.kill()  # the child quits
    closing.join(10.0)
    assert not closing.is_alive() and not h.alive()


def test_a_model_process_that_cannot_start_says_to_run_models_in_the_window(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    pairs = []
    real_pair = socket.socketpair

    def socketpair():
        pairs.append(real_pair())
        return pairs[-1]

    def no_fork(*a, **k):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(host.socket, "socketpair", socketpair)
    monkeypatch.setattr(host, "_spawn", no_fork)
    h = ModelHost(preload=False)
    with pytest.raises(ModelHostError) as err:
        h.start()
    assert str(err.value) == ("could not start the model process ([Errno 11] Resource temporarily unavailable); "
                              "set HEADMAP_IN_PROCESS=1 to run models inside the window")
    assert [s.fileno() for s in pairs[0]] == [-1, -1]  # both ends closed: no file descriptor leaks
    assert not h.alive() and h._conn is None


def test_closing_a_host_whose_connection_fails_to_close_still_ends_the_child(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))

    class BadConn:
        def send(self, msg):
            raise BrokenPipeError(32, "Broken pipe")

        def close(self):
            raise OSError(9, "Bad file descriptor")

    h = ModelHost(preload=False, liveness=Liveness(term_grace=0.5))
    proc = _sleeper()
    h._proc, h._conn = proc, BadConn()
    h.close(timeout=0.5)
    assert h._conn is None and not h.alive() and _ended(proc)


@pytest.mark.parametrize("peer_gone", [False, True], ids=["ignores-quit", "cannot-be-told"])
def test_close_ends_a_child_that_ignores_quit_or_cannot_be_told(wired, peer_gone):
    if peer_gone:
        wired.peer.close()
    wired.host.close(timeout=0.2)
    assert not wired.host.alive() and _ended(wired.proc)
    if not peer_gone:
        assert wired.peer.recv() == ("quit",)


def test_a_child_found_dead_whose_exit_code_cannot_be_read_is_still_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    h = ModelHost(preload=False, liveness=Liveness(term_grace=0.1))
    heard = []
    h.add_listener(heard.append)
    proc = FakeProc(stuck=True)
    h._proc = proc
    err = h._stopped(proc)
    sentence = "the model process stopped unexpectedly (exit code None; out of memory?); load the model again"
    assert str(err) == sentence and heard == [sentence]
    assert "kill" in proc.calls and h._proc is None


def test_a_stuck_child_that_close_already_forgot_is_still_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    h = ModelHost(preload=False, liveness=Liveness(term_grace=0.5))
    heard = []
    h.add_listener(heard.append)
    proc = _sleeper()
    try:
        err = h._end_stuck(proc, "the model process stopped answering (no reply for 15 s)")
        assert proc.poll() is not None  # ended though the host no longer knew it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sentence = "the model process stopped answering (no reply for 15 s); it was ended — load the model again"
    assert str(err) == sentence and heard == [sentence]


def test_sending_without_a_connection_raises_for_callers_and_trying_is_silent():
    h = ModelHost(preload=False)
    with pytest.raises(AttributeError, match="connection is closed"):
        h._send(("ping", 1))
    assert h._try_send(("ping", 1)) is None


def test_load_with_a_loader_of_its_own_sends_that_loader_and_returns_this_hosts_model(wired):
    def on_call(msg, peer):
        _, _job, fn, args, kwargs, _env, handle, owner = msg
        peer.send(("ok", *host.dumps(host._describe(fn(*args, **kwargs), handle))))

    stand_in = StandIn(wired.peer, on_call)
    lm = wired.host.load("tiny", loader=_fake_loader, owner="window-1")
    (call,) = stand_in.calls()
    assert call[2] is _fake_loader and call[3] == ("tiny",) and call[7] == "window-1"
    assert lm.reference == "tiny" and lm.handle == call[6] and lm.notes == ("a note",)
    assert lm.host is wired.host and lm.process == 1 and wired.host.holds(lm)
    stand_in.stop.set()


def test_releasing_anything_but_this_hosts_model_does_nothing(wired):
    h = wired.host
    other = ModelHost(preload=False)
    h.release(_model(other, handle=5))
    h.release(_model(None, handle=6))
    h.release("not a model")
    h.release(_model(h, handle=7))
    assert wired.peer.poll(GUARD_S) and wired.peer.recv() == ("release", 7)
    assert not wired.peer.poll(0.1)  # nothing else was sent
    h._discard()
    h.release(_model(h, handle=8))  # no child: nothing to free, and none is started for it
    assert h._proc is None and not h.alive()


def test_releasing_on_a_broken_connection_does_not_fail(wired):
    wired.peer.close()
    wired.host.release(_model(wired.host))


def test_a_model_of_another_host_says_to_load_it_again(wired):
    stand_in = StandIn(wired.peer, _run_echo)
    other = ModelHost(preload=False)
    msg = "this model belongs to another model process; load it again"
    with pytest.raises(ModelHostError, match=msg):
        wired.host.call(_echo, _model(other))
    with pytest.raises(ModelHostError, match=msg):
        wired.host.call(_echo, model=_model(other))
    assert stand_in.calls() == []  # refused before anything was sent
    out = wired.host.call(_echo, _model(wired.host, handle=3), model=_model(None, handle=4))
    assert out == {"args": (host._ModelRef(3),), "kwargs": {"model": host._ModelRef(4)}}  # ours and a bare one go
    stand_in.stop.set()


def test_a_call_whose_child_was_closed_meanwhile_fails_as_closed(wired, monkeypatch):
    h = wired.host
    real_ensure = h._ensure

    def ensure_then_closed():  # close() on another thread (it gave up waiting for the lock)
        real_ensure()
        h._discard()

    monkeypatch.setattr(h, "_ensure", ensure_then_closed)
    with pytest.raises(ModelHostError) as err:
        h.call(_echo)
    assert str(err.value) == CLOSED


def test_a_job_that_cannot_be_sent_says_to_try_again(wired):
    h = wired.host
    cannot_send = r"^could not send the job to the model process \(.*{}.*\); try again$"
    with pytest.raises(ModelHostError, match=cannot_send.format("lambda")):
        h.call(lambda task=None: 1)  # not importable by name: cannot be pickled
    assert h.alive()  # nothing wrong with the child: it stays
    stand_in = StandIn(wired.peer, _run_echo)
    assert h.call(_echo, 1) == {"args": (1,), "kwargs": {}}
    stand_in.stop.set()
    stand_in.thread.join(GUARD_S)

    wired.peer.close()  # the child's end is gone
    with pytest.raises(ModelHostError, match=cannot_send.format("Broken pipe")):
        h.call(_echo, 2)
    assert not h.alive() and _ended(wired.proc)  # a broken connection: the child is given up


#: what a call and the listeners are told when the child was killed (SIGKILL)
KILLED = "the model process stopped unexpectedly (exit code -9; out of memory?); load the model again"


def _listeners(h) -> list[str]:
    """A listener that fails (a closed window) and, after it, one that records what it hears."""
    heard: list[str] = []

    def gone(sentence):
        raise RuntimeError("the window is closed")

    h.add_listener(gone)
    h.add_listener(heard.append)
    return heard


def test_a_child_that_died_while_idle_fails_a_call_on_its_models_and_a_failing_listener_fails_nothing(wired,
                                                                                                      monkeypatch):
    h = wired.host
    heard = _listeners(h)
    lm = _model(h)
    wired.proc.kill()
    wired.proc.wait()
    with pytest.raises(ModelHostError) as err:
        h.call(_echo, lm)
    assert str(err.value) == KILLED and heard == [KILLED]
    assert not h.holds(lm)
    with pytest.raises(EOFError):
        wired.peer.recv()  # nothing was sent to the dead child, and its connection was closed

    # a call on no model goes on in a fresh process (here: one that cannot start)
    def no_fork(*a, **k):
        raise OSError("no more processes")

    monkeypatch.setattr(host, "_spawn", no_fork)
    with pytest.raises(ModelHostError, match="could not start the model process"):
        h.call(_echo)


def test_a_child_that_dies_mid_call_with_nothing_in_the_pipe_is_reported_to_every_listener(wired):
    h = wired.host
    heard = _listeners(h)
    stand_in = StandIn(wired.peer, lambda msg, peer: os.kill(wired.proc.pid, signal.SIGKILL))
    with pytest.raises(ModelHostError) as err:
        h.call(_echo)
    assert str(err.value) == KILLED and heard == [KILLED]
    assert not h.alive() and len(stand_in.calls()) == 1
    stand_in.stop.set()


def test_a_connection_that_fails_while_waiting_counts_as_the_child_stopping(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    h = ModelHost(preload=False, liveness=Liveness(term_grace=0.1))
    proc = _exited(3)
    ours, theirs = socket.socketpair()
    conn = Connection(ours.detach())
    conn.close()  # polling it raises OSError
    h._proc = proc
    try:
        with pytest.raises(ModelHostError) as err:
            h._await(1, conn, proc, as_task(None))
    finally:
        theirs.close()
    assert str(err.value) == ("the model process stopped unexpectedly (exit code 3; out of memory?); "
                              "load the model again")
    assert isinstance(err.value.__cause__, OSError)  # noticed when reading, not by a later look
