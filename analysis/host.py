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
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
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


class ModelHostError(HeadmapError):
    """The model process failed in a way that has no better error type."""

    #: set on errors that stand for a failure in the child: the child's traceback
    __headmap_traceback__: str


@dataclass(frozen=True, eq=False)
class RemoteModel:
    """A model loaded in a :class:`ModelHost`: what the window shows about it, and its handle."""

    reference: str
    kind: str
    summary: Any
    path: Path
    notes: tuple[str, ...]
    handle: int
    host: ModelHost | None = field(default=None, repr=False)


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
            # named after the receiving process: files left by one that died can be swept
            fd, self.path = tempfile.mkstemp(prefix=f"headmap-{os.getppid()}-", suffix=".arrays", dir=_arena_dir())
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


def dumps(obj) -> tuple[bytes, str | None]:
    """Pickle ``obj``; big arrays go to a file whose path is returned (None when there are none)."""
    buf = io.BytesIO()
    p = _ArenaPickler(buf)
    try:
        p.dump(obj)
    except BaseException:
        p.close()
        if p.path:
            _unlink(p.path)
        raise
    p.close()
    return buf.getvalue(), p.path


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
        finally:
            _unlink(path)  # the mapping stays valid; nothing is left on disk
    return _ArenaUnpickler(io.BytesIO(data), mm).load()


def sweep_arrays(directory: str | None = None) -> int:
    """Delete array files whose receiving process no longer exists (it died between the child's
    write and its own unlink); returns how many were removed."""
    directory = directory or _arena_dir()
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        parts = name.split("-")
        if not (name.startswith("headmap-") and name.endswith(".arrays") and len(parts) >= 3 and parts[1].isdigit()):
            continue
        if _pid_alive(int(parts[1])):
            continue
        _unlink(os.path.join(directory, name))
        removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


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


def _send_error(conn, exc: BaseException) -> None:
    tb = traceback.format_exc()
    try:
        payload = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # an exception that cannot be rebuilt would fail on the other side
        conn.send(("error", payload, tb))
    except Exception:
        conn.send(("error_text", type(exc).__name__, str(exc), tb))


class _Child:  # pragma: no cover - runs in the child
    """The model process's state: the loaded models, whose they are, the running job's cancel."""

    def __init__(self, conn) -> None:
        import queue

        self.conn = conn
        self.models: dict[int, Any] = {}
        self.owners: dict[str, int] = {}  # owner → its current model's handle
        self.jobs: queue.Queue = queue.Queue()
        self.cancel = threading.Event()
        self.current: int | None = None  # id of the running job
        self.default_threads: list[int] = []  # torch's own thread count, once torch is imported

    def read(self) -> None:
        """The reader thread: queue the jobs, set the running job's cancel event at once."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.jobs.put(("quit",))
                return
            if msg[0] == "cancel":
                if msg[1] == self.current:
                    self.cancel.set()
                continue
            self.jobs.put(msg)
            if msg[0] == "quit":
                return

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
        conn = self.conn

        def progress(stage, fraction, message):
            conn.send(("progress", stage, fraction, message))

        try:
            args = [self.resolve(a) for a in args]
            kwargs = {k: self.resolve(v) for k, v in kwargs.items()}
            result = fn(*args, task=TaskState(progress, self.cancel), **kwargs)
            if load_handle is not None:
                result = self.keep(result, load_handle, owner)
            data, path = dumps(result)
            del result
            conn.send(("ok", data, path))
        except BaseException as exc:  # every failure goes back to the caller
            _send_error(conn, exc)
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
    """The host loop: one job at a time in this (main) thread, until "quit" or the pipe closes.

    A reader thread receives messages, so a "cancel" for the running job arrives while it runs.
    """
    child = _Child(conn)
    threading.Thread(target=child.read, name="headmap-host-reader", daemon=True).start()
    _quiet()
    if preload:
        _preload()
    while True:
        msg = child.jobs.get()
        if msg[0] == "quit":
            return
        if msg[0] == "release":
            child.release(msg[1])
        elif msg[0] == "call":
            child.call(msg)


def _child_entry() -> None:  # pragma: no cover - runs in the child
    """``python -c "from analysis.host import _child_entry; _child_entry()" FD PRELOAD``."""
    from multiprocessing.connection import Connection

    extra = os.environ.pop("HEADMAP_HOST_SYSPATH", "")
    for p in reversed([p for p in extra.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    conn = Connection(int(sys.argv[1]))
    _child_main(conn, sys.argv[2] == "1")


# --------------------------------------------------------------------------------------------
# the parent side
# --------------------------------------------------------------------------------------------
def supported() -> bool:
    """A model process needs POSIX file-descriptor passing (Linux, macOS)."""
    return os.name == "posix"


class ModelHost:
    """A child process that holds loaded models and runs analysis functions on them."""

    def __init__(self, preload: bool = True) -> None:
        self.preload = preload
        self._lock = threading.Lock()  # one call at a time
        self._send_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._handles = itertools.count(1)
        self._jobs = itertools.count(1)

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
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["HEADMAP_HOST_SYSPATH"] = os.pathsep.join(p for p in sys.path if p)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        code = "from analysis.host import _child_entry; _child_entry()"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno()), "1" if self.preload else "0"],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                                    close_fds=True)
        except OSError as exc:
            ours.close()
            raise ModelHostError(f"could not start the model process ({exc}); set HEADMAP_IN_PROCESS=1 "
                                 "to run models inside the window") from exc
        finally:
            theirs.close()
        self._proc, self._conn = proc, Connection(ours.detach())

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = self._conn = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.alive() else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _stopped(self, proc: subprocess.Popen) -> ModelHostError:
        """The error for a child that died during a call (after reaping and forgetting it)."""
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self._discard()
        return ModelHostError(f"the model process stopped unexpectedly (exit code {code}; out of memory?); "
                              "load the model again")

    def _send(self, msg) -> None:
        """Every message to the child goes through here: one writer at a time on the socket."""
        with self._send_lock:
            conn = self._conn
            if conn is None:  # closed meanwhile: callers catch this AttributeError for that case
                raise AttributeError("the model process's connection is closed")
            conn.send(msg)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child. Waits up to ``timeout`` for a running call; after that the child is
        terminated (the call then raises :class:`ModelHostError`)."""
        idle = self._lock.acquire(timeout=timeout)
        try:
            proc = self._proc
            if self._conn is not None and proc is not None and self.alive():
                try:
                    self._send(("quit",))
                    proc.wait(timeout if idle else 0.5)
                except (OSError, subprocess.TimeoutExpired):
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
        desc = self._request(loader, (reference,), kwargs, task, load_handle=handle, owner=owner)
        return RemoteModel(**{**desc.__dict__, "host": self})

    def release(self, lm) -> None:
        """Free a model in the child (a closed window)."""
        if not isinstance(lm, RemoteModel) or lm.host is not self:
            return
        # no waiting for a running call (a window closing during a long run): the child frees the
        # model when that call is done
        if self._conn is not None and self.alive():
            try:
                self._send(("release", lm.handle))
            except (OSError, AttributeError):
                pass

    def call(self, fn: Callable[..., Any], *args, task: TaskState | None = None, **kwargs):
        """Run ``fn(*args, task=…, **kwargs)`` in the child; RemoteModel args become models.

        ``fn`` must be a module-level function importable without Qt (it is pickled by name). In
        the child it gets ``task=TaskState(progress, cancel)`` whose progress comes back here to
        ``task.report`` and whose cancel event is set once ``task`` here is cancelled (polled while
        the call runs; a call cancelled before it starts raises :class:`Cancelled` at once).
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

        args = tuple(ref(a) for a in args)
        kwargs = {k: ref(v) for k, v in kwargs.items()}
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        while not self._lock.acquire(timeout=0.05):
            task.check()
        try:
            task.check()
            self._ensure()
            job = next(self._jobs)
            conn, proc = self._conn, self._proc
            if conn is None or proc is None:  # close() on another thread stopped the child meanwhile
                raise ModelHostError("the model process was closed; load the model again")
            try:
                self._send(("call", job, fn, args, kwargs, env, load_handle, owner))
            except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
                if isinstance(exc, OSError):
                    self._discard()
                raise ModelHostError(f"could not send the job to the model process ({exc}); try again") from exc
            return self._await(job, conn, proc, task)
        finally:
            self._lock.release()

    def _await(self, job: int, conn, proc: subprocess.Popen, task: TaskState):
        """Relay the child's progress to ``task`` and its cancel to the child until the result."""
        forwarded = False
        while True:
            try:
                ready = conn.poll(0.02)
            except (OSError, EOFError):
                ready = True
            if not ready:
                if not forwarded and task.cancelled:
                    try:
                        self._send(("cancel", job))
                    except (OSError, AttributeError):  # closed meanwhile
                        pass
                    forwarded = True
                if proc.poll() is not None and not conn.poll(0):  # a last message may still be in the pipe
                    raise self._stopped(proc)
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError) as exc:
                raise self._stopped(proc) from exc
            if msg[0] == "progress":
                task.report(msg[1], msg[2], msg[3])
            elif msg[0] == "ok":
                return loads(msg[1], msg[2])
            elif msg[0] in ("error", "error_text"):
                raise _child_error(msg)


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
