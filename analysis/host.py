"""Model work in a child process, so the window's interpreter never waits on it.

Loading a checkpoint parses a tokenizer (Rust), a JSON file (C) and imports hundreds of modules;
a forward pass runs for hundreds of milliseconds. In the window's own process all of that competes
with the event loop for the GIL, and C code that holds it freezes the window (the Performance issue
measured 240-300 ms stalls). A :class:`ModelHost` runs that work in a separate Python process
(a fresh interpreter started with ``subprocess``, never a fork of the Qt process; the two talk
over a socket pair with ``multiprocessing.connection``):

* :meth:`ModelHost.load` loads a model there and returns a :class:`RemoteModel` — the model's
  description (reference, kind, summary, notes) and a handle, no weights;
* :meth:`ModelHost.call` runs a plain ``analysis`` function there, ``fn(lm, *args, task=…,
  **kwargs)``, with every :class:`RemoteModel` argument replaced by the loaded model, and returns
  its result. The caller passes its own :class:`analysis.tasks.TaskState` as ``task``; the function
  gets one in the child whose progress messages stream back to the caller's task while it runs and
  whose cancel event is set when the caller's task is cancelled. Large numpy arrays (attention
  stacks) do not go through the pipe: the child writes them into one memory file (``/dev/shm``
  where it exists) that this process maps and unlinks, so a capture arrives without a copy and
  read-only arrays stay read-only.

Errors raised in the child arrive as the same exception type (or a :class:`ModelHostError` with
the message when the type cannot be pickled). If the child dies (killed, out of memory), the call
raises :class:`ModelHostError` saying to load the model again; the next call starts a new child.

What is recovered without the user:

* **A stuck child.** While a call waits, it pings the child every :data:`PING_INTERVAL_S`; a
  thread of the child's own answers at once, whatever the job is doing, so a long forward pass is
  never taken for a hang. A child that is stopped (SIGSTOP: state ``T``) for
  :data:`STOPPED_GRACE_S`, that leaves a ping unanswered for :data:`PING_TIMEOUT_S`, or that does
  not acknowledge a Cancel within :data:`CANCEL_GRACE_S` is ended (SIGTERM and SIGCONT, SIGKILL
  after :data:`TERM_GRACE_S`) and the call raises :class:`ModelHostError` in one sentence ("the
  model process stopped answering …; it was ended — load the model again"). Callers waiting for
  the lock meanwhile go on with a new child. :class:`Liveness` overrides the constants (tests).
  Callbacks given to :meth:`ModelHost.add_listener` hear that sentence whenever a child is ended or
  found dead, so a window can drop a model whose process is gone even when the call was cancelled.
* **Orphans.** The child exits when this process is gone: on Linux it asks for SIGTERM at its
  parent's death (``prctl(PR_SET_PDEATHSIG)``; children are started from one long-lived thread,
  since Linux sends that signal when the starting *thread* ends), and everywhere its reader thread
  exits the process when the connection closes. Both paths first remove a half-written array file
  and work while a forward pass runs (they never wait for the main thread).
* **Stale array files.** Array files are named ``headmap-<receiver pid>-w<writer pid>-*.arrays``;
  :func:`sweep_arrays` (run whenever a child starts or is ended) removes those whose writer is dead,
  whoever the receiver was, and files of the older naming (``headmap-<receiver pid>-*.arrays``)
  whose receiver is dead or that nobody touched for :data:`ORPHAN_AGE_S`.

Pure Python: no Qt. The window calls these methods from its worker threads; calls are serialised.
``HEADMAP_*`` environment variables (cache folder, settings) are sent with every call.
"""

from __future__ import annotations

import atexit
import gc
import io
import itertools
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import HeadmapError
from .tasks import TaskState, as_task

if TYPE_CHECKING:
    import mmap
    from multiprocessing.connection import Connection

#: arrays at least this big travel through the shared memory file instead of the pipe
ARRAY_MIN_BYTES = 1 << 16
_ALIGN = 64
#: environment variables forwarded with every call (prefixes)
ENV_PREFIXES = ("HEADMAP_", "HF_", "TRANSFORMERS_")

#: a waiting call pings the model process this often (one small message each way; a late answer
#: is also when the call looks whether the process is stopped)
PING_INTERVAL_S = 1.0
#: a ping unanswered this long means the process hangs. Generous, because the answering thread
#: needs the GIL: C code that holds it (loading torch's libraries from a cold disk, parsing a big
#: tokenizer) delays an answer by seconds, and a slow answer must never cost the user the model
PING_TIMEOUT_S = 15.0
#: a process found stopped (state ``T``: SIGSTOP) for this long is stuck. Not zero: a terminal's
#: Ctrl+Z stops the window together with it, and after ``fg`` the two resume a moment apart
STOPPED_GRACE_S = 2.0
#: after Cancel, the model process has this long to acknowledge it (its reader thread answers at
#: once), else it is ended: the user asked to stop, so this is shorter than PING_TIMEOUT_S
CANCEL_GRACE_S = 5.0
#: an ended process gets SIGTERM (it removes a half-written array file and exits) and this long
#: before SIGKILL (a process whose GIL is held by C code cannot run its handler)
TERM_GRACE_S = 1.0
#: array files of the older naming (no writer pid) untouched this long are swept even when the
#: process named in them lives (an orphaned writer named its file after PID 1 or a subreaper); a
#: receiver maps its file within a second of the writer's last write
ORPHAN_AGE_S = 600.0


#: why a call fails when the model process was closed (the window closed, the model changed)
CLOSED = "the model process was closed; load the model again"


class ModelHostError(HeadmapError):
    """The model process failed in a way that has no better error type."""

    #: set on errors that stand for a failure in the child: the child's traceback
    __headmap_traceback__: str


@dataclass(frozen=True)
class Liveness:
    """How a waiting call watches its model process, in seconds (defaults: the module constants
    :data:`PING_INTERVAL_S`, :data:`PING_TIMEOUT_S`, :data:`STOPPED_GRACE_S`,
    :data:`CANCEL_GRACE_S`, :data:`TERM_GRACE_S`). Tests shorten or lengthen them."""

    ping_interval: float = PING_INTERVAL_S
    ping_timeout: float = PING_TIMEOUT_S
    stopped_grace: float = STOPPED_GRACE_S
    cancel_grace: float = CANCEL_GRACE_S
    term_grace: float = TERM_GRACE_S


@dataclass(frozen=True, eq=False)
class RemoteModel:
    """A model loaded in a :class:`ModelHost`: what the window shows about it, and its handle.

    ``process`` counts the host's child processes: the model lives only as long as that one
    (:meth:`ModelHost.holds`)."""

    reference: str
    kind: str
    summary: Any
    path: Path
    notes: tuple[str, ...]
    handle: int
    host: ModelHost | None = field(default=None, repr=False)
    process: int = 0


@dataclass(frozen=True)
class _ModelRef:
    handle: int


# --------------------------------------------------------------------------------------------
# pickling with out-of-band arrays
# --------------------------------------------------------------------------------------------
def _arena_dir() -> str:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def _mappingproxy(d: dict) -> MappingProxyType:
    return MappingProxyType(d)


class _ArenaPickler(pickle.Pickler):
    """Pickles big arrays by reference into a file written alongside."""

    def __init__(self, buf, min_bytes: int = ARRAY_MIN_BYTES) -> None:
        super().__init__(buf, protocol=pickle.HIGHEST_PROTOCOL)
        self.min_bytes = min_bytes
        self.file = None
        self.path: str | None = None
        self.size = 0

    def reducer_override(self, obj):
        if type(obj) is MappingProxyType:
            return _mappingproxy, (dict(obj),)
        return NotImplemented

    def persistent_id(self, obj):
        if not isinstance(obj, np.ndarray) or obj.dtype.hasobject or obj.nbytes < self.min_bytes:
            return None
        if self.file is None:
            # named after the receiving process and the writer (this one): a file whose writer died
            # can be swept, whoever received it (:func:`sweep_arrays`)
            fd, self.path = tempfile.mkstemp(prefix=f"headmap-{os.getppid()}-w{os.getpid()}-", suffix=".arrays",
                                             dir=_arena_dir())
            _WRITING.add(self.path)  # removed by _exit_now if this process is ended mid-write
            self.file = os.fdopen(fd, "wb")
        pad = (-self.size) % _ALIGN
        if pad:
            self.file.write(b"\0" * pad)
            self.size += pad
        offset = self.size
        data = np.ascontiguousarray(obj)
        self.file.write(memoryview(data).cast("B"))
        self.size += data.nbytes
        return ("nd", offset, data.dtype.str, data.shape, bool(obj.flags.writeable))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


#: array files this process is writing or has not handed over yet (removed when it is ended)
_WRITING: set[str] = set()


def dumps(obj) -> tuple[bytes, str | None]:
    """Pickle ``obj``; big arrays go to a file whose path is returned (None when there are none).

    The file stays this process's own (removed if the process is ended, :func:`_exit_now`) until
    :func:`handed_over` says the receiver has it."""
    buf = io.BytesIO()
    p = _ArenaPickler(buf)
    try:
        p.dump(obj)
    except BaseException:
        p.close()
        if p.path:
            _unlink(p.path)
            _WRITING.discard(p.path)
        raise
    p.close()
    return buf.getvalue(), p.path


def handed_over(path: str | None) -> None:
    """The array file ``path`` from :func:`dumps` belongs to its receiver now."""
    if path is not None:
        _WRITING.discard(path)


class _ArenaUnpickler(pickle.Unpickler):
    def __init__(self, buf, mm) -> None:
        super().__init__(buf)
        self.mm = mm

    def persistent_load(self, pid):
        tag, offset, dtype, shape, writeable = pid
        if tag != "nd" or self.mm is None:
            raise pickle.UnpicklingError(f"unknown array reference {tag!r}")
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        a = np.frombuffer(self.mm, dtype=dt, count=count, offset=offset).reshape(shape)
        if writeable:
            return a.copy()  # the receiver may change it: give it its own memory
        return a  # read-only view on the mapping (frombuffer of a read-only mapping)


def loads(data: bytes, path: str | None):
    """The inverse of :func:`dumps`; maps and then deletes the array file."""
    mm: bytes | mmap.mmap | None = None
    if path is not None:
        import mmap

        handed_over(path)  # written by this process (a test's round trip)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if not size:
                    mm = b""
                elif hasattr(mmap, "MAP_POPULATE"):
                    # the kernel maps every page now, in this (worker) thread and without the GIL:
                    # the first look at the arrays on the GUI thread takes no page faults
                    mm = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
                else:
                    mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        except FileNotFoundError as exc:  # swept: its writer died right after sending it
            raise ModelHostError("the model process's result was removed before it could be read "
                                 "(the process ended meanwhile); run it again") from exc
        finally:
            _unlink(path)  # the mapping stays valid; nothing is left on disk
    return _ArenaUnpickler(io.BytesIO(data), mm).load()


def sweep_arrays(directory: str | None = None) -> int:
    """Delete array files nobody will read; returns how many were removed.

    A file named ``headmap-<receiver>-w<writer>-*.arrays`` goes when its writer (a model process)
    is dead, whoever its receiver was: a live writer may still be writing it or handing it over,
    and one that is ended removes its own. A file of the older naming,
    ``headmap-<receiver>-*.arrays``, goes when its receiver is dead or nobody touched it for
    :data:`ORPHAN_AGE_S`. Other files are left alone.
    """
    directory = directory or _arena_dir()
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        pids = _arena_pids(name)
        if pids is None:
            continue
        receiver, writer = pids
        path = os.path.join(directory, name)
        if writer is not None:
            stale = not _pid_alive(writer)
        else:
            stale = not _pid_alive(receiver) or _age(path) > ORPHAN_AGE_S
        if stale:
            _unlink(path)
            removed += 1
    return removed


def _arena_pids(name: str) -> tuple[int, int | None] | None:
    """(receiver pid, writer pid or None for the older naming) of an array file, None for any other
    name. (``mkstemp``'s random part has no ``-``.)"""
    if not (name.startswith("headmap-") and name.endswith(".arrays")):
        return None
    parts = name[: -len(".arrays")].split("-")
    if not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[2][:1] == "w" and parts[2][1:].isdigit():
        return int(parts[1]), int(parts[2][1:])
    if len(parts) == 3:
        return int(parts[1]), None
    return None


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (unknown pids, such as 0, count as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return _process_state(pid, ask_ps=False) != "Z"


_pid_alive = pid_alive  # the older private name (tests, benchmarks)


def _process_state(pid: int, ask_ps: bool = True) -> str | None:
    """The one-letter state of process ``pid`` (``R``, ``S``, ``T`` stopped, ``Z`` zombie…) from
    ``/proc`` (Linux), else from ``ps`` when ``ask_ps``; None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1].decode() or None
    except (OSError, ValueError):
        pass
    if not ask_ps or sys.platform.startswith("linux"):
        return None
    try:
        out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()[:1] or None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# the child
# --------------------------------------------------------------------------------------------
def _describe(lm, handle: int) -> RemoteModel:
    return RemoteModel(reference=lm.reference, kind=lm.kind, summary=lm.summary, path=Path(lm.path),
                       notes=tuple(lm.notes), handle=handle)


def _apply_env(env: dict[str, str]) -> None:
    for k in [k for k in os.environ if k.startswith(ENV_PREFIXES) and k not in env]:
        del os.environ[k]
    os.environ.update(env)


def _torch_threads(default: list[int]) -> None:
    """``HEADMAP_TORCH_THREADS=n`` (sent with the call) sets torch's intra-op threads for it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if not default:
        default.append(torch.get_num_threads())
    want = os.environ.get("HEADMAP_TORCH_THREADS", "")
    n = int(want) if want.isdigit() and int(want) > 0 else default[0]
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _send_error(send: Callable[[tuple], None], exc: BaseException) -> None:
    tb = traceback.format_exc()
    try:
        payload = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # an exception that cannot be rebuilt would fail on the other side
        send(("error", payload, tb))
    except Exception:
        send(("error_text", type(exc).__name__, str(exc), tb))


def _exit_now(code: int) -> None:  # pragma: no cover - runs in the child
    """End this (model) process at once, from any thread: remove the array files it has not
    handed over and the stores it is writing, then ``os._exit`` (no waiting for a job in the main
    thread)."""
    for path in list(_WRITING):
        _unlink(path)
    store = sys.modules.get("analysis.store")
    if store is not None:
        import shutil

        for folder in list(store.WRITING):
            shutil.rmtree(folder, ignore_errors=True)
    os._exit(code)


def _quit() -> None:  # pragma: no cover - runs in the child
    """``quit`` (ModelHost.close): end at once, from the reader thread. Whatever the main thread
    still does is of no use to anyone now (freeing a released model, a job whose caller gave up),
    and the interpreter's own teardown of torch and transformers would keep a closing window
    waiting for a second; nothing of ours is left to flush but the standard streams."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    _exit_now(0)


def _stores_sent(sent: bool) -> None:
    """The stores pickled into a result were sent (they are the receiver's now) or not."""
    store = sys.modules.get("analysis.store")
    if store is not None:
        store.disown_sent() if sent else store.forget_sent()


def sweep_stores() -> int:
    """:func:`analysis.store.sweep_stores` (stores of dead windows, or half-written by dead model
    processes); 0 when it cannot look."""
    try:
        from .store import sweep_stores as sweep

        return sweep()
    except Exception:  # an unreadable cache: the next capture says so in its own words
        return 0


class _Child:  # pragma: no cover - runs in the child
    """The model process's state: the loaded models, whose they are, the running job's cancel."""

    def __init__(self, conn) -> None:
        import queue

        self.conn = conn
        self.send_lock = threading.Lock()  # the reader thread answers pings while a job sends
        self.models: dict[int, Any] = {}
        self.owners: dict[str, int] = {}  # owner → its current model's handle
        self.jobs: queue.Queue = queue.Queue()
        self.cancel = threading.Event()
        self.current: int | None = None  # id of the running job
        self.default_threads: list[int] = []  # torch's own thread count, once torch is imported

    def send(self, msg: tuple) -> None:
        """Send ``msg`` to the window; a connection it closed means nobody waits for us: exit."""
        try:
            with self.send_lock:
                self.conn.send(msg)
        except OSError:
            _exit_now(0)

    def read(self) -> None:
        """The reader thread: queue the jobs; answer pings and acknowledge a cancel at once (the
        running job's cancel event is set here); exit the process on "quit" and when the
        connection closes (the window is gone, or it gave up on this process)."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                _exit_now(0)
                return
            if msg[0] == "ping":
                self.send(("pong", msg[1]))
                continue
            if msg[0] == "cancel":
                if msg[1] == self.current:
                    self.cancel.set()
                self.send(("cancelling", msg[1]))
                continue
            if msg[0] == "quit":  # the window closes (see _quit)
                _quit()
            self.jobs.put(msg)

    def release(self, handle: int) -> None:
        self.models.pop(handle, None)
        for o in [o for o, h in self.owners.items() if h == handle]:
            del self.owners[o]
        gc.collect()

    def resolve(self, v):
        """A model reference becomes the loaded model; anything else stays."""
        if not isinstance(v, _ModelRef):
            return v
        if v.handle not in self.models:
            raise ModelHostError("the model is no longer loaded in the model process "
                                 "(it was replaced or the process restarted); load it again")
        return self.models[v.handle]

    def keep(self, lm, handle: int, owner: str | None) -> RemoteModel:
        """Hold a loaded model under ``handle``; the owner's previous model is freed."""
        self.models[handle] = lm
        if owner is not None:
            old = self.owners.get(owner)
            self.owners[owner] = handle
            if old is not None and old != handle:
                self.models.pop(old, None)
                gc.collect()
        return _describe(lm, handle)

    def call(self, msg) -> None:
        """Run one job, ``fn(*args, task=…, **kwargs)``, and send its result or its error back."""
        _, job, fn, args, kwargs, env, load_handle, owner = msg
        self.cancel.clear()
        self.current = job
        _apply_env(env)
        _torch_threads(self.default_threads)

        def progress(stage, fraction, message):
            self.send(("progress", stage, fraction, message))

        try:
            args = [self.resolve(a) for a in args]
            kwargs = {k: self.resolve(v) for k, v in kwargs.items()}
            result = fn(*args, task=TaskState(progress, self.cancel), **kwargs)
            if load_handle is not None:
                result = self.keep(result, load_handle, owner)
            try:
                data, path = dumps(result)
            except BaseException:
                _stores_sent(False)
                raise
            # a stored capture's store is its window's from here on (if the window never gets it,
            # the window's sweep removes it once this process is gone)
            _stores_sent(True)
            del result
            self.send(("ok", data, path))
            handed_over(path)
        except BaseException as exc:  # every failure goes back to the caller
            _send_error(self.send, exc)
        finally:
            self.current = None


def _preload() -> None:  # pragma: no cover - runs in the child
    """The heavy imports, while the window starts (nobody waits on them here)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from . import capture, loader  # noqa: F401
    except Exception:  # a real load reports the problem
        pass


def _quiet() -> None:  # pragma: no cover - runs in the child
    """No progress bars on the window's terminal: the window shows its own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantizing calls tqdm directly
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()
    except Exception:  # a broken install is reported by the first load, with its own words
        pass


def _child_main(conn, preload: bool) -> None:  # pragma: no cover - runs in the child
    """The host loop: one job at a time in this (main) thread, until "quit" or the pipe closes
    (the reader thread then ends the process).

    A reader thread receives messages, so a "cancel" for the running job arrives while it runs.
    """
    child = _Child(conn)
    threading.Thread(target=child.read, name="headmap-host-reader", daemon=True).start()
    _quiet()
    if preload:
        _preload()
    while True:
        msg = child.jobs.get()
        if msg[0] == "release":
            child.release(msg[1])
        elif msg[0] == "call":
            child.call(msg)


def _exit_on_sigterm() -> None:  # pragma: no cover - runs in the child
    """SIGTERM (from the window ending this process, or the parent-death signal) ends the process
    at once, whatever the main thread is doing.

    A Python signal handler runs only in the main thread, between bytecodes: never during a
    forward pass. Python's C-level handler also writes the signal's number to the wakeup fd, from
    whichever thread the signal hit; a thread of our own waits on it.
    """
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGTERM, lambda *_: _exit_now(128 + signal.SIGTERM))

    def wait() -> None:
        while True:
            data = os.read(r, 64)
            if not data or int(signal.SIGTERM) in data:
                _exit_now(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="headmap-host-signals", daemon=True).start()


def _ask_parent_death_signal(parent: int) -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM to this process when its parent (the thread that started it) ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the reader thread still notices the closed connection
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        _exit_now(0)


def _child_entry() -> None:  # pragma: no cover - runs in the child
    """``python -c "from analysis.host import _child_entry; _child_entry()" FD PRELOAD PARENT PDEATH``."""
    from multiprocessing.connection import Connection

    _exit_on_sigterm()
    if len(sys.argv) > 4 and sys.argv[4] == "1":
        _ask_parent_death_signal(int(sys.argv[3]))
    extra = os.environ.pop("HEADMAP_HOST_SYSPATH", "")
    for p in reversed([p for p in extra.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    conn = Connection(int(sys.argv[1]))
    from . import store

    store.DEFAULT_OWNER = int(sys.argv[3])  # stored captures are the window's: it removes them
    _child_main(conn, sys.argv[2] == "1")


# --------------------------------------------------------------------------------------------
# the parent side
# --------------------------------------------------------------------------------------------
def supported() -> bool:
    """A model process needs POSIX file-descriptor passing (Linux, macOS)."""
    return os.name == "posix"


_spawner: tuple[int, queue.Queue] | None = None
_spawner_lock = threading.Lock()


def _spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(args, **kwargs)``, on Linux from one thread that lives as long as this
    process: Linux sends a child its parent-death signal when the *thread* that started it ends
    (prctl(2)), and a model process restarted from a window's worker thread must not end with it."""
    global _spawner
    if not sys.platform.startswith("linux"):
        return subprocess.Popen(args, **kwargs)
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or a forked copy of this process
            _spawner = (os.getpid(), queue.Queue())
            threading.Thread(target=_spawn_loop, args=(_spawner[1],), name="headmap-host-spawner",
                             daemon=True).start()
        jobs = _spawner[1]
    done = threading.Event()
    box: list[Any] = []
    jobs.put((args, kwargs, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _spawn_loop(jobs: queue.Queue) -> None:
    while True:
        args, kwargs, box, done = jobs.get()
        try:
            box.append(subprocess.Popen(args, **kwargs))
        except BaseException as exc:  # handed to the caller
            box.append(exc)
        done.set()


def _end_process(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM (and SIGCONT: a stopped process handles it only once continued), SIGKILL after
    ``grace`` seconds; reaped either way."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.send_signal(signal.SIGCONT)
        except OSError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        proc.wait(5)  # a process in uninterruptible sleep may take a moment even after SIGKILL
    except subprocess.TimeoutExpired:
        pass


class _Watch:
    """Whether the model process of one waiting call still answers (see :class:`Liveness`).

    Time here is *watched* time: a gap between two looks counts at most :attr:`MAX_GAP_S`, so a
    window that was itself suspended (Ctrl+Z, a laptop's sleep) never blames its child for the
    time it was away.
    """

    MAX_GAP_S = 0.5

    def __init__(self, liveness: Liveness, pid: int, seqs: Iterator[int]) -> None:
        self.lv, self.pid, self.seqs = liveness, pid, seqs
        self.now = 0.0
        self._clock = time.monotonic()
        self.unanswered: deque[tuple[int, float]] = deque()  # (ping number, sent at)
        self.next_ping = 0.0  # the first ping goes with the job
        self.next_look = 0.0
        self.stopped_since: float | None = None
        self.cancel_sent: float | None = None
        self.cancel_acked = False

    def tick(self) -> None:
        t = time.monotonic()
        self.now += min(max(t - self._clock, 0.0), self.MAX_GAP_S)
        self._clock = t

    def ping(self) -> int | None:
        """The number of a ping to send now, or None (one per ping interval)."""
        if self.now < self.next_ping:
            return None
        self.next_ping = self.now + self.lv.ping_interval
        seq = next(self.seqs)
        self.unanswered.append((seq, self.now))
        return seq

    def pong(self, seq: int) -> None:
        while self.unanswered and self.unanswered[0][0] <= seq:
            self.unanswered.popleft()

    def verdict(self) -> str | None:
        """None while the process answers; else why it counts as stuck (the start of a sentence)."""
        lv = self.lv
        late = self.now - self.unanswered[0][1] if self.unanswered else 0.0
        if late <= lv.ping_interval:
            self.stopped_since = None
        elif self.now >= self.next_look:  # an answer is late: is the process stopped?
            self.next_look = self.now + lv.ping_interval
            if _process_state(self.pid) != "T":
                self.stopped_since = None
            elif self.stopped_since is None:
                self.stopped_since = self.now
        if self.stopped_since is not None and self.now - self.stopped_since >= lv.stopped_grace:
            return STUCK_SUSPENDED
        if late >= lv.ping_timeout:
            return f"the model process stopped answering (no reply for {late:.0f} s)"
        if self.cancel_sent is not None and not self.cancel_acked and self.now - self.cancel_sent >= lv.cancel_grace:
            return f"the model process did not answer Cancel within {lv.cancel_grace:g} s"
        return None


_PENDING = object()
STUCK_SUSPENDED = "the model process stopped answering (it was suspended, e.g. by SIGSTOP)"


def _has_message(conn) -> bool:
    try:
        return bool(conn.poll(0))
    except (OSError, EOFError):
        return False


class ModelHost:
    """A child process that holds loaded models and runs analysis functions on them.

    Parameters
    ----------
    preload : import torch and transformers in the child as soon as it starts
    liveness : how calls watch the child (:class:`Liveness`; default: the module constants)
    parent_death_signal : Linux: the child also asks for SIGTERM when this process dies (tests
        turn it off to check that the reader thread alone ends an orphan)
    """

    def __init__(self, preload: bool = True, *, liveness: Liveness | None = None,
                 parent_death_signal: bool = True) -> None:
        self.preload = preload
        self.liveness = liveness or Liveness()
        self.parent_death_signal = parent_death_signal
        self._lock = threading.Lock()  # one call at a time
        self._send_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        #: the child close() is stopping (a call it ends fails as closed, not as a crash)
        self._closing: subprocess.Popen | None = None
        self._handles = itertools.count(1)
        self._jobs = itertools.count(1)
        self._pings = itertools.count(1)
        self._generation = 0  # counts the children started: a RemoteModel lives in one of them
        self._listeners: list[Callable[[str], None]] = []
        #: pongs received so far (how often the child proved alive during calls; tests read it)
        self.pongs = 0
        #: the number of the job the child is running now (sent, no answer yet), else None
        self.job_in_flight: int | None = None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child now (it imports torch and transformers while nobody waits)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> None:
        if self.alive():
            return
        self._discard()
        sweep_arrays()
        sweep_stores()
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["HEADMAP_HOST_SYSPATH"] = os.pathsep.join(p for p in sys.path if p)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        code = "from analysis.host import _child_entry; _child_entry()"
        argv = [sys.executable, "-c", code, str(theirs.fileno()), "1" if self.preload else "0", str(os.getpid()),
                "1" if self.parent_death_signal else "0"]
        try:
            proc = _spawn(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        except OSError as exc:
            ours.close()
            raise ModelHostError(f"could not start the model process ({exc}); set HEADMAP_IN_PROCESS=1 "
                                 "to run models inside the window") from exc
        finally:
            theirs.close()
        self._proc, self._conn = proc, Connection(ours.detach())
        self._generation += 1

    def _discard(self) -> None:
        """Forget the child: close the connection (it exits), end it if it does not, reap it, and
        sweep the array files it may have left."""
        conn, proc = self._conn, self._proc
        self._proc = self._conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        if proc is not None:
            _end_process(proc, self.liveness.term_grace)
            sweep_arrays()
            sweep_stores()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.alive() else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def holds(self, lm) -> bool:
        """Whether ``lm`` (a :class:`RemoteModel` of this host) lives in the running child: False
        once its process died or was ended (load it again)."""
        return isinstance(lm, RemoteModel) and lm.host is self and lm.process == self._generation and self.alive()

    def add_listener(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(sentence)`` whenever a child is ended as stuck or found dead (from the thread
        whose call noticed it; not on :meth:`close`). The sentence says what happened and to load
        the model again."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[str], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, sentence: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(sentence)
            except Exception:  # a listener that is gone (a closed window) must not fail the call
                pass

    def _stopped(self, proc: subprocess.Popen) -> ModelHostError:
        """The error for a child that died during a call (after reaping and forgetting it)."""
        if proc is self._closing or self._proc is not proc:  # close() ended it: no crash to tell
            return ModelHostError(CLOSED)
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        sentence = (f"the model process stopped unexpectedly (exit code {code}; out of memory?); "
                    "load the model again")
        self._discard()
        self._notify(sentence)
        return ModelHostError(sentence)

    def _end_stuck(self, proc: subprocess.Popen, reason: str) -> ModelHostError:
        """End a child that stopped answering; the error (and the listeners) say so."""
        if self._proc is proc:
            self._discard()
        else:  # close() on another thread forgot it already
            _end_process(proc, self.liveness.term_grace)
        sentence = f"{reason}; it was ended — load the model again"
        self._notify(sentence)
        return ModelHostError(sentence)

    def _send(self, msg) -> None:
        """Every message to the child goes through here: one writer at a time on the socket."""
        with self._send_lock:
            conn = self._conn
            if conn is None:  # closed meanwhile: callers catch this AttributeError for that case
                raise AttributeError("the model process's connection is closed")
            conn.send(msg)

    def _try_send(self, msg) -> None:
        """:meth:`_send`, for messages whose loss the waiting call notices by itself."""
        try:
            self._send(msg)
        except (OSError, AttributeError):
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child. Waits up to ``timeout`` for a running call; after that the child is
        ended (the call then raises :class:`ModelHostError`)."""
        idle = self._lock.acquire(timeout=timeout)
        try:
            proc = self._proc
            self._closing = proc
            if self._conn is not None and proc is not None and self.alive():
                try:
                    self._send(("quit",))
                    proc.wait(timeout if idle else 0.5)
                except (OSError, AttributeError, subprocess.TimeoutExpired):
                    pass
            self._discard()
        finally:
            if idle:
                self._lock.release()

    # -- calls -------------------------------------------------------------------------------
    def load(self, reference: str, *, task: TaskState | None = None, owner: str | None = None,
             loader: Callable[..., Any] | None = None, **kwargs) -> RemoteModel:
        """Load ``reference`` in the child (``analysis.loader.load_model`` keyword arguments).

        ``task`` (:class:`analysis.tasks.TaskState`) receives the loader's progress and its cancel
        signal is forwarded to the child, as in :meth:`call`. ``owner`` (a window): the child keeps
        one model per owner; once this one has loaded, the owner's previous model is freed (a
        failed load keeps it).
        """
        if loader is None:
            from .loader import load_model as loader
        handle = next(self._handles)
        return self._request(loader, (reference,), kwargs, task, load_handle=handle, owner=owner)

    def release(self, lm) -> None:
        """Free a model in the child (a closed window)."""
        if not isinstance(lm, RemoteModel) or lm.host is not self:
            return
        # no waiting for a running call (a window closing during a long run): the child frees the
        # model when that call is done
        if self._conn is not None and self.alive():
            self._try_send(("release", lm.handle))

    def call(self, fn: Callable[..., Any], *args, task: TaskState | None = None, **kwargs):
        """Run ``fn(*args, task=…, **kwargs)`` in the child; RemoteModel args become models.

        ``fn`` must be a module-level function importable without Qt (it is pickled by name). In
        the child it gets ``task=TaskState(progress, cancel)`` whose progress comes back here to
        ``task.report`` and whose cancel event is set once ``task`` here is cancelled (polled while
        the call runs; a call cancelled before it starts raises :class:`Cancelled` at once). A
        child that stops answering meanwhile is ended and the call raises
        :class:`ModelHostError` (see :class:`Liveness`).
        """
        return self._request(fn, args, kwargs, task)

    def _request(self, fn, args, kwargs, task: TaskState | None, load_handle=None, owner=None):
        task = as_task(task)

        def ref(v):
            if isinstance(v, RemoteModel):
                if v.host is not None and v.host is not self:
                    raise ModelHostError("this model belongs to another model process; load it again")
                return _ModelRef(v.handle)
            return v

        uses_model = any(isinstance(v, RemoteModel) for v in (*args, *kwargs.values()))
        args = tuple(ref(a) for a in args)
        kwargs = {k: ref(v) for k, v in kwargs.items()}
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        # a call that holds the lock ends within the liveness limits, so waiting here is bounded
        while not self._lock.acquire(timeout=0.05):
            task.check()
        try:
            task.check()
            self._check_idle(uses_model)
            self._ensure()
            job = next(self._jobs)
            conn, proc, generation = self._conn, self._proc, self._generation
            if conn is None or proc is None:  # close() on another thread stopped the child meanwhile
                raise ModelHostError(CLOSED)
            try:
                self._send(("call", job, fn, args, kwargs, env, load_handle, owner))
            except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
                if isinstance(exc, OSError):
                    self._discard()
                raise ModelHostError(f"could not send the job to the model process ({exc}); try again") from exc
            self.job_in_flight = job
            try:
                result = self._await(job, conn, proc, task)
            finally:
                self.job_in_flight = None
            if load_handle is not None:
                result = RemoteModel(**{**result.__dict__, "host": self, "process": generation})
            return result
        finally:
            self._lock.release()

    def _check_idle(self, uses_model: bool) -> None:
        """Before a call: notice what happened to the child while nobody waited on it.

        Died (killed, out of memory): said once, as for a death during a call; a load goes on in a
        fresh process, a call on the dead process's models raises. Suspended (SIGSTOP): a load, or
        a call that needs no model, ends it and goes on in a fresh process; a call on its models is
        sent and fails once the liveness check notices (a Cancel meanwhile ends it sooner)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is not None:
            err = self._stopped(proc)
            if uses_model:
                raise err
        elif not uses_model and _process_state(proc.pid, ask_ps=False) == "T":
            self._end_stuck(proc, STUCK_SUSPENDED)

    def _await(self, job: int, conn, proc: subprocess.Popen, task: TaskState):
        """Relay the child's progress to ``task`` and its cancel to the child until the result;
        watch that the child still answers meanwhile."""
        watch = _Watch(self.liveness, proc.pid, self._pings)
        while True:
            try:
                ready = conn.poll(0.02)
            except (OSError, EOFError):
                ready = True
            watch.tick()
            if ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError) as exc:
                    raise self._stopped(proc) from exc
                result = self._receive(msg, job, watch, task)
                if result is not _PENDING:
                    return result
            self._look(job, conn, proc, task, watch)

    def _receive(self, msg: tuple, job: int, watch: _Watch, task: TaskState):
        """One message from the child: the call's result (or its error raised), else _PENDING."""
        kind = msg[0]
        if kind == "pong":
            self.pongs += 1
            watch.pong(msg[1])
        elif kind == "cancelling":
            watch.cancel_acked = watch.cancel_acked or msg[1] == job
        elif kind == "progress":
            task.report(msg[1], msg[2], msg[3])
        elif kind == "ok":
            return loads(msg[1], msg[2])
        elif kind in ("error", "error_text"):
            raise _child_error(msg)
        return _PENDING

    def _look(self, job: int, conn, proc: subprocess.Popen, task: TaskState, watch: _Watch) -> None:
        """Between messages: forward a cancel, notice a dead or stuck child, ping it."""
        if task.cancelled and watch.cancel_sent is None:
            watch.cancel_sent = watch.now
            self._try_send(("cancel", job))
        if proc.poll() is not None and not _has_message(conn):  # a last message may still be in the pipe
            raise self._stopped(proc)
        reason = watch.verdict()
        if reason is not None:
            raise self._end_stuck(proc, reason)
        seq = watch.ping()
        if seq is not None:
            self._try_send(("ping", seq))


def _child_error(msg: tuple) -> BaseException:
    """The exception an ``error`` / ``error_text`` message from the child stands for, carrying the
    child's traceback as ``__headmap_traceback__``."""
    if msg[0] == "error":
        try:
            exc = pickle.loads(msg[1])
        except Exception:
            exc = ModelHostError("the model process failed; see the log")
        exc.__headmap_traceback__ = msg[2]
        return exc
    exc = ModelHostError(msg[2] if msg[1] == "HeadmapError" else f"{msg[1]}: {msg[2]}")
    exc.__headmap_traceback__ = msg[3]
    return exc


_default: ModelHost | None = None
_default_lock = threading.Lock()


def default_host() -> ModelHost:
    """The process-wide host every window shares (started on first use, stopped at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelHost()
            atexit.register(_default.close)
        return _default


def in_process() -> bool:
    """Models run in the window's own process: ``HEADMAP_IN_PROCESS=1`` (debugging), or no POSIX."""
    return os.environ.get("HEADMAP_IN_PROCESS", "") not in ("", "0") or not supported()
