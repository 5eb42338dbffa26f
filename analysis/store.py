"""Long captures on disk: attention stacks written map by map, read back one map (or level) at a time.

A capture of SmolLM2 (30 layers × 9 heads) at 4,096 tokens holds 9 GiB of float16 maps, at 8,192
tokens 36 GiB: more than any window should hold. A *store* keeps them on disk instead, in a folder
under the cache (:func:`stores_root`, ``cache_dir()/stores``), and the capture holds
:class:`StoredStack` objects that read only what a view asks for.

A store folder, ``<owner pid>-w<writer pid>-<random>``, holds per stack ``name``:

* ``<name>.npy``          float16 ``[L, H, Q, K]``, the maps (numpy's ``.npy`` format: self-describing)
* ``<name>.level<k>.npy`` float16 ``[L, H, ceil(Q/2^k), ceil(K/2^k)]`` for k = 2, 3, … up to the
  first level whose longest side is at most :data:`analysis.pyramid.MIN_SIDE`: each map max-pooled
  over ``2^k × 2^k`` blocks (:mod:`analysis.pyramid`). Level 1 is not stored (it would cost 25 % of
  the maps again); it is pooled from the maps when asked for.
* ``<name>.stats.npy``    float32 ``[L, H, 3]``: each map's minimum, maximum and smallest positive
  weight (colour ranges without reading the maps)

and ``manifest.json``, written last: a folder without it is incomplete.

**Who writes, who owns.** The model process writes (:class:`StoreWriter`) with plain ``pwrite``
calls from a background thread — no writable mapping, so written pages count in no process's
memory, only in the page cache — and hands the finished store to the window by its path (a
:class:`Store` pickles as its path). The *owner* (the window, or the CLI's own process) removes
the folder when the capture is dropped (the last :class:`Store` object of it is collected or
:meth:`Store.close` d). A failed or cancelled capture removes its half-written store at once.
Stores are named after their owner and writer: :func:`sweep_stores` removes those whose owner is
dead, and those whose writer died before handing them over; two windows never share a store.

**Disk space.** :func:`check_space` refuses a capture before it starts when the disk lacks room,
in one sentence naming the bytes needed, the bytes free and what to do.

No torch at import time: the window reads stores with numpy only; the writer imports torch when it
is given torch tensors.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import secrets
import shutil
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from .errors import CaptureError, InputError
from .pyramid import MIN_SIDE, block_for, level_shape, n_levels, pool, pool_blocks

FORMAT = "headmap-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: the lowest pyramid level kept on disk (level 1 would cost 25 % of the maps again)
FIRST_STORED_LEVEL = 2
#: kept free on the disk beyond a store's own size (the page cache, other programs)
SPACE_MARGIN = 256 * 2**20
#: rows of one map per chunk: the levels up to 2**CHUNK_LEVEL rows are pooled per chunk, coarser
#: ones (maps over 4,096 tokens) when a map's last chunk is in, from the finest of those
CHUNK_LEVEL = 8
CHUNK_ROWS = 2**CHUNK_LEVEL
#: a capture whose float16 maps would take more than this is stored on disk (the window and the
#: CLI; ``HEADMAP_STORE=1`` stores every capture, ``HEADMAP_STORE=0`` none)
STORE_MIN_BYTES = 256 * 2**20
#: the alignment (file offset, length, memory) of the writes that go past the page cache: the full
#: maps (level 0, nine tenths of a store) are written with ``O_DIRECT`` where they are aligned. The
#: page cache's copy costs the writer thread ~1.2–2.5 s of CPU per 2 GB on this 2-core machine,
#: time the model's forward pass needs (measured: 0.08 s direct); the views read the maps back at
#: the disk's speed (1.8 GB/s here) and the pyramid levels they draw from stay cached
DIRECT_ALIGN = 4096
#: writes of at least this many bytes are sent on to the disk at once (:func:`_write_behind`)
WRITE_BEHIND_BYTES = 1 << 20
#: chunks queued for the writer thread at most (each is one chunk's rows of every head)
QUEUE_CHUNKS = 2
_DTYPE = np.dtype("<f2")
#: the owner of stores written when the caller names none (the model process sets its window's pid)
DEFAULT_OWNER: int | None = None


# --------------------------------------------------------------------------------------------
# where stores live, sizes, the disk rule
# --------------------------------------------------------------------------------------------
def stores_root() -> Path:
    """The folder that holds every store: ``cache_dir()/stores`` (``HEADMAP_CACHE`` moves it)."""
    from .derived import cache_dir

    return cache_dir() / "stores"


def stored_levels(q: int, k: int) -> tuple[int, ...]:
    """The pyramid levels a store keeps for a ``q × k`` map (none for maps of at most 64 cells a side)."""
    return tuple(range(FIRST_STORED_LEVEL, n_levels(q, k)))


def map_bytes(q: int, k: int) -> int:
    """Disk bytes of one stored ``q × k`` map: float16 cells, its stored levels and its statistics."""
    cells = q * k + sum(a * b for a, b in (level_shape(q, k, lv) for lv in stored_levels(q, k)))
    return cells * _DTYPE.itemsize + 12


def capture_bytes(shapes: Iterable[Sequence[int]]) -> int:
    """Disk bytes of a store holding stacks of these ``[L, H, Q, K]`` shapes (without the margin)."""
    total = 4096  # the manifest and the files' headers
    for n_layers, n_heads, q, k in shapes:
        total += int(n_layers) * int(n_heads) * map_bytes(int(q), int(k)) + 4 * 128
    return total


def stack_shapes(stacks: Iterable[tuple[str, int, int]], kind: str, n_source: int,
                 n_target: int | None = None) -> list[tuple[int, int, int, int]]:
    """``[L, H, Q, K]`` of each stack of a capture of ``kind``, from ``(name, layers, heads)`` and
    the token counts (seq2seq: ``n_target`` decoder positions, default ``n_source``)."""
    t = n_source if n_target is None else n_target
    axes = {"attentions": (n_source, n_source), "encoder_attentions": (n_source, n_source),
            "decoder_attentions": (t, t), "cross_attentions": (t, n_source)}
    return [(layers, heads, *axes[name]) for name, layers, heads in stacks if name in axes]


def free_bytes(root: Path | None = None) -> int:
    """Free bytes on the disk of ``root`` (default :func:`stores_root`; its nearest existing folder)."""
    p = Path(root or stores_root())
    while not p.exists() and p.parent != p:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def _gb(n: float) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{max(n, 0) / 1e3:.0f} kB"


class DiskSpaceError(InputError):
    """A store does not fit the free disk: ``needed`` and ``free`` bytes (the margin excluded)."""

    def __init__(self, message: str, needed: int = 0, free: int = 0) -> None:
        super().__init__(message, needed, free)
        self.needed, self.free = int(needed), int(free)

    def __str__(self) -> str:
        return str(self.args[0])


def check_space(needed: int, root: Path | None = None, what: str = "this capture") -> None:
    """Refuse a store of ``needed`` bytes when the disk of ``root`` lacks room (with the margin).

    Raises
    ------
    InputError : one sentence: how much is needed, where, how much is free, and what to do
    """
    root = Path(root or stores_root())
    free = free_bytes(root)
    if needed + SPACE_MARGIN > free:
        raise DiskSpaceError(
            f"{what} needs {_gb(needed)} of disk for its attention maps in {root} (and {_gb(SPACE_MARGIN)} kept free), "
            f"but only {_gb(free)} is free; "
            "free some space, set HEADMAP_CACHE (or XDG_CACHE_HOME) to a folder on a disk with room, "
            "or lower the token limit (--max-tokens)", needed, free)


def tokens_that_fit(stacks: Sequence[tuple[str, int, int]], kind: str, limit: int,
                    root: Path | None = None, free: int | None = None) -> int:
    """The longest input (at most ``limit`` tokens) whose store fits the free disk of ``root``.

    Parameters
    ----------
    stacks : ``(name, layers, heads)`` of each stack of the model
    kind : the model's kind (seq2seq stores are sized with as many target as source tokens)
    limit : the model's own maximum
    free : free bytes (default: measured)

    Returns
    -------
    ``limit`` when it fits, else the largest length that does (at least 1).
    """
    room = (free_bytes(root) if free is None else free) - SPACE_MARGIN

    def fits(n: int) -> bool:
        return capture_bytes(stack_shapes(stacks, kind, n)) <= room

    if fits(limit):
        return int(limit)
    lo, hi = 1, int(limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def stack_cells(shapes: Iterable[Sequence[int]]) -> int:
    """Weights in stacks of these shapes (one per map cell)."""
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes)


def store_wanted(shapes: Iterable[Sequence[int]], store: bool | None) -> bool:
    """Whether a capture of these stack shapes goes to a store: ``store`` when given, else
    ``HEADMAP_STORE`` (``1``/``0``), else when its float16 maps exceed :data:`STORE_MIN_BYTES`."""
    if store is not None:
        return bool(store)
    env = os.environ.get("HEADMAP_STORE", "").strip()
    if env in ("0", "1"):
        return env == "1"
    return stack_cells(shapes) * 2 > STORE_MIN_BYTES


# --------------------------------------------------------------------------------------------
# sweeping
# --------------------------------------------------------------------------------------------
#: folders this process holds open (Store objects alive) or is writing: never swept by it
_HELD: dict[str, int] = {}
_HELD_LOCK = threading.Lock()
#: folders this process is writing (removed if the process is ended: analysis.host._exit_now)
WRITING: set[str] = set()


def _hold(path: str) -> None:
    with _HELD_LOCK:
        _HELD[path] = _HELD.get(path, 0) + 1


def _release(path: str) -> None:
    with _HELD_LOCK:
        n = _HELD.get(path, 0) - 1
        if n > 0:
            _HELD[path] = n
        else:
            _HELD.pop(path, None)


def _store_pids(name: str) -> tuple[int, int] | None:
    """(owner pid, writer pid) of a store folder's name, or None for any other name."""
    parts = name.split("-")
    if len(parts) != 3 or not parts[0].isdigit() or parts[1][:1] != "w" or not parts[1][1:].isdigit():
        return None
    return int(parts[0]), int(parts[1][1:])


def _alive(pid: int) -> bool:
    from .host import pid_alive

    return pid_alive(pid)


def sweep_stores(root: Path | None = None) -> int:
    """Remove stores nobody will read; returns how many were removed.

    A store goes when its owner (the window that shows it) is dead and its writer too, or when
    this process owns it, does not hold it, and its writer (a model process) is dead or this
    process (a store a crash left half-written, or one never handed over). Stores this process
    holds or writes, and those of other live owners, stay.
    """
    root = Path(root or stores_root())
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    me, removed = os.getpid(), 0
    for name in names:
        pids = _store_pids(name)
        path = root / name
        if pids is None or str(path) in _HELD or str(path) in WRITING:
            continue
        owner, writer = pids
        if owner == me:
            stale = writer == me or not _alive(writer)
        else:
            stale = not _alive(owner) and (writer == owner or not _alive(writer))
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# low-level file access
# --------------------------------------------------------------------------------------------
def _pread_into(fd: int, buf: np.ndarray, offset: int) -> None:
    """Fill ``buf`` (contiguous) from ``fd`` at ``offset`` (loops over short reads)."""
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers
    done, total = 0, view.nbytes
    while done < total:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise CaptureError("a stored attention file is shorter than its header says (the store was "
                               "damaged or removed); run the capture again")
        done += n


def _pwrite_all(fd: int, data: np.ndarray, offset: int, behind: bool = True) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")  # type: ignore[arg-type]
    done, total = 0, view.nbytes
    while done < total:
        done += os.pwrite(fd, view[done:], offset + done)
    if behind:
        _write_behind(fd, offset, total)


@functools.cache
def _libc(name: str, *argtypes: str) -> Callable[..., int] | None:
    """Linux libc's function ``name`` taking these ctypes types (``"c_int"``, …) and returning an
    int, looked up once on first use; None elsewhere, or where libc lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = [getattr(ctypes, t) for t in argtypes]
    fn.restype = ctypes.c_int
    return fn


def _open_direct(path: Path) -> int | None:
    """A second descriptor of ``path`` that writes past the page cache (``O_DIRECT``), or None where
    the system or the file system has none (tmpfs, macOS, Windows)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def aligned_empty(shape: Sequence[int], dtype) -> np.ndarray:
    """An uninitialised C-ordered array whose data starts on a :data:`DIRECT_ALIGN` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + DIRECT_ALIGN, dtype=np.uint8)
    at = (-raw.ctypes.data) % DIRECT_ALIGN
    return raw[at:at + nbytes].view(dtype).reshape(tuple(shape))


def _allocate(fd: int, size: int) -> bool:
    """Give a new store file its blocks at once (True), where the file system can: writing into
    allocated blocks takes about half the CPU time of growing a file (ext4 measured here: 1.2 s
    instead of 2.5 s per 2 GB), and a store takes gigabytes."""
    # Linux's fallocate(fd, 0, 0, size): never emulated by writing zeros, unlike posix_fallocate
    fallocate = _libc("fallocate", "c_int", "c_int", "c_int64", "c_int64")
    return fallocate is not None and size > 0 and fallocate(fd, 0, 0, size) == 0


def _write_behind(fd: int, offset: int, nbytes: int) -> None:
    """Start writing what was just written to the disk (a store is gigabytes: left to the kernel,
    its writeback would start only once about a tenth of the memory is dirty, and then throttle
    the writer while the disk catches up; started at once, the disk writes while the model runs).
    The pages stay in the page cache for the views to read."""
    if nbytes < WRITE_BEHIND_BYTES:
        return
    # Linux's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE): start writing, never wait
    start_write = _libc("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")
    if start_write is not None:
        start_write(fd, offset, nbytes, 2)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, size: int | None = None) -> bytes:
    """A ``.npy`` (1.0) header; with ``size``, padded with spaces to ``size`` bytes (so the data
    starts on a disk block: :data:`DIRECT_ALIGN`)."""
    import io
    import struct

    fh = io.BytesIO()
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    head = fh.getvalue()
    if size is None or size <= len(head):
        return head
    # magic (6), version (2), header length (2), the dict, spaces, a newline: numpy's own padding
    return head[:8] + struct.pack("<H", size - 10) + head[10:-1] + b" " * (size - len(head)) + b"\n"


def _npy_open(path: Path) -> tuple[int, tuple[int, ...], np.dtype, int]:
    """(read-only fd, shape, dtype, data offset) of a C-ordered ``.npy`` file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
        if fortran:
            raise CaptureError(f"{path.name} is not a C-ordered array; the store is damaged")
        return fd, tuple(int(s) for s in shape), np.dtype(dtype), offset
    except BaseException:
        os.close(fd)
        raise


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
class _Array:
    """One ``.npy`` file of a store, read by ``pread``: maps ``[L, H, q, k]`` by rows."""

    def __init__(self, path: Path) -> None:
        self.fd, self.shape, self.dtype, self.offset = _npy_open(path)
        _, _, self.q, self.k = self.shape
        self.heads = self.shape[1]

    def rows(self, layer: int, head: int, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of map (layer, head), in the file's dtype ``[r1 - r0, k]`` (a new array)."""
        r0, r1 = max(0, r0), min(self.q, r1)
        out = np.empty((max(0, r1 - r0), self.k), dtype=self.dtype)
        if out.size:
            start = ((layer * self.heads + head) * self.q + r0) * self.k * self.dtype.itemsize
            _pread_into(self._fd(), out, self.offset + start)
        return out

    def maps(self, layer: int) -> np.ndarray:
        """Every map of ``layer`` ``[H, q, k]`` (one read)."""
        out = np.empty(self.shape[1:], dtype=self.dtype)
        if out.size:
            _pread_into(self._fd(), out, self.offset + layer * out.nbytes)
        return out

    def everything(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        if out.size:
            _pread_into(self._fd(), out, self.offset)
        return out

    def _fd(self) -> int:
        if self.fd < 0:  # never read a closed descriptor: its number may belong to another file now
            raise CaptureError("this capture's attention maps were removed from the disk (a newer capture "
                               "replaced it); run it again")
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _close_and_remove(path: str, arrays: list[_Array], owned: bool) -> None:
    for a in arrays:
        a.close()
    _release(path)
    if owned:
        shutil.rmtree(path, ignore_errors=True)


class Store:
    """A finished store, open for reading (see the module docstring).

    Use :func:`open_store`; the stacks are :attr:`stacks` (name → :class:`StoredStack`). An
    *owned* store removes its folder when this object is collected or :meth:`close` d; a
    :class:`Store` pickles as its path and the receiving process owns it (the model process hands
    it to the window that way, :func:`disown` ing its own copy).
    """

    __headmap_store__ = True

    def __init__(self, path: str | os.PathLike, owned: bool = True) -> None:
        self.path = Path(path)
        try:
            manifest = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CaptureError(f"the stored capture in {self.path} is gone or incomplete ({exc}); "
                               "run the capture again") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise CaptureError(f"{self.path} is not a store of this Headmap version; run the capture again")
        self.manifest = manifest
        self._arrays: list[_Array] = []
        self._files: dict[str, _Array] = {}
        self._levels: dict[str, dict[int, _Array]] = {}
        self._stats: dict[str, np.ndarray] = {}
        _hold(str(self.path))
        self._owned = owned
        self._finalizer = weakref.finalize(self, _close_and_remove, str(self.path), self._arrays, owned)
        try:
            for name, info in manifest["stacks"].items():
                raw = self._open(self.path / info["file"])
                if raw.shape != tuple(info["shape"]) or raw.dtype != _DTYPE:
                    raise CaptureError(f"{info['file']} in {self.path} does not match its manifest; "
                                       "run the capture again")
                self._files[name] = raw
                self._levels[name] = {int(k): self._open(self.path / f) for k, f in info["levels"].items()}
                stats = np.load(self.path / info["stats"], allow_pickle=False)
                stats.setflags(write=False)
                self._stats[name] = stats
        except BaseException:
            self.close()
            raise
        self.stacks = {name: StoredStack(self, name) for name in manifest["stacks"]}

    def _open(self, path: Path) -> _Array:
        a = _Array(path)
        self._arrays.append(a)
        return a

    @property
    def owned(self) -> bool:
        return self._owned

    def disown(self) -> None:
        """This process no longer removes the folder (it was handed to another process)."""
        if self._owned:
            self._owned = False
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_and_remove, str(self.path), self._arrays, False)

    def close(self) -> None:
        """Close the files; an owned store's folder is removed."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def nbytes(self) -> int:
        """Bytes of the store's files on disk."""
        total = 0
        for f in self.path.iterdir():
            try:
                total += f.stat().st_size
            except OSError:
                pass
        return total

    @property
    def owner(self) -> int:
        """The pid of the process the store was written for (it removes the store)."""
        return int(self.manifest.get("owner", 0))

    def __reduce__(self):
        # handed over: an owned store pickled by a process that is not its owner (the model
        # process sending a capture to its window). The owner then owns what it unpickles, and
        # the sender stops owning it once it is sent (disown_sent). Any other pickle (the window
        # sending a capture to the model process, a copy in one process) gives a reader only.
        handing = self._owned and os.getpid() != self.owner
        if handing:
            _SENT.append(self)
        return (_reopen, (str(self.path), handing))

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, stacks={list(self.manifest['stacks'])})"


#: stores pickled by this process since the last :func:`disown_sent` (the model process's results)
_SENT: list[Store] = []


def _reopen(path: str, handed: bool = False) -> Store:
    store = Store(path, owned=False)
    if handed and os.getpid() == store.owner:
        store._owned = True
        store._finalizer.detach()
        store._finalizer = weakref.finalize(store, _close_and_remove, str(store.path), store._arrays, True)
    return store


def disown_sent() -> None:
    """The stores pickled since the last call were handed over (the model process sent them):
    they are the receiver's now, and this process no longer removes them."""
    while _SENT:
        _SENT.pop().disown()


def forget_sent() -> None:
    """The stores pickled since the last call were not handed over: they stay this process's."""
    _SENT.clear()


def open_store(path: str | os.PathLike, owned: bool = True) -> Store:
    """Open a finished store folder; ``owned``: remove it when the returned object is dropped."""
    return Store(path, owned=owned)


def _key_list(k: Any, n: int) -> tuple[list[int], bool]:
    """Indices along an axis of length ``n`` and whether the axis stays (False for an int)."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        i = int(k)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
        return [i % n], False
    if isinstance(k, slice):
        return list(range(*k.indices(n))), True
    a = np.asarray(k)
    if a.ndim == 1 and a.size == 0 and a.dtype != bool:  # ``[]``: numpy reads it as an empty index array
        return [], True
    if a.dtype == bool:
        if a.shape != (n,):
            raise IndexError(f"a boolean index of shape {a.shape} does not fit an axis of size {n}")
        return [int(i) for i in np.flatnonzero(a)], True
    if a.dtype.kind in "iu" and a.ndim == 1:
        if a.size and not (-n <= a.min() and a.max() < n):
            raise IndexError(f"an index is out of bounds for an axis of size {n}")
        return [int(i) % n for i in a], True
    raise IndexError(f"a stored attention stack takes ints, slices and 1-D index arrays, not {k!r}")


def _full_key(key: tuple) -> tuple:
    """``key`` for the 4 axes of a stack: ``...`` expanded, missing trailing axes whole."""
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (4 - len(key) + 1) + key[i + 1:]
    if len(key) > 4 or any(k is None for k in key):
        raise IndexError(f"too many indices for a stored stack of 4 axes: {key!r}")
    return key + (slice(None),) * (4 - len(key))


class StoredStack:
    """One attention stack ``[L, H, Q, K]`` of a :class:`Store`, read on demand.

    It quacks like the read-only numpy array of an in-memory capture for the code that exists:
    ``shape``, ``ndim``, ``dtype`` (float16, or float32 when made by :meth:`astype`), ``size``,
    ``nbytes``, ``len()``, and indexing with ints, slices and 1-D index arrays
    (``stack[l, h]``, ``stack[l]``, ``stack[l, :, i]``, ``stack[l, h, r0:r1]`` …), which reads only
    the rows asked for and returns a new read-only array. ``np.asarray(stack)`` reads everything:
    allowed, but no view of a long capture does it. Beyond the array: :meth:`map_source` (one
    map's pyramid, :class:`analysis.pyramid.MapSource`), :meth:`tiles` (every map pooled for the
    Layer and Model overviews, from the stored levels) and :meth:`map_stats` (each map's range).
    """

    ndim = 4
    __headmap_stored__ = True

    def __init__(self, store: Store, name: str, dtype: np.dtype | type = np.float16) -> None:
        self.store, self.name = store, name
        self._raw = store._files[name]
        self._levels = store._levels[name]
        self.dtype = np.dtype(dtype)
        self.shape: tuple[int, int, int, int] = tuple(self._raw.shape)  # type: ignore[assignment]

    # -- the array protocol -----------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoredStack({self.name!r}, shape={self.shape}, dtype={self.dtype}, path={str(self.store.path)!r})"

    def astype(self, dtype, copy: bool = True) -> StoredStack:
        """The same stack read as ``dtype`` (float16 or float32), still lazy."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise TypeError(f"a stored attention stack reads as float16 or float32, not {dt}")
        return self if dt == self.dtype else StoredStack(self.store, self.name, dt)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._raw.everything()
        return out.astype(dtype or self.dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        key = _full_key(key if isinstance(key, tuple) else (key,))
        arrays = [i for i, k in enumerate(key) if not isinstance(k, (slice, int, np.integer))]
        if len(arrays) > 1:
            # numpy pairs several index arrays element by element; reading every combination
            # instead would hand back other maps than the in-memory array does
            raise IndexError("a stored attention stack takes one index array at most (numpy would pair several "
                             "element by element); index one axis at a time, e.g. stack[[0, 1]][:, [2, 3]]")
        out = self._select(key)
        # numpy: an index array with ints apart from it (a slice between them) puts the array's axis
        # first, e.g. stack[1, :, [2, 3], 0] is [2, H] (the ints drop their axes either way)
        if arrays:
            advanced = [i for i, k in enumerate(key) if not isinstance(k, slice)]
            if advanced[-1] - advanced[0] + 1 != len(advanced):
                out = np.moveaxis(out, sum(isinstance(k, slice) for k in key[:arrays[0]]), 0)
        return out

    def _select(self, key: tuple) -> np.ndarray:
        """``key`` (of :func:`_full_key`) read orthogonally: each axis's indices apply on their own
        (every combination)."""
        n_layers, n_heads, q, k = self.shape
        layers, keep_l = _key_list(key[0], n_layers)
        heads, keep_h = _key_list(key[1], n_heads)
        rows, keep_q = _key_list(key[2], q)
        cols_key = key[3]
        r0, r1 = (min(rows), max(rows) + 1) if rows else (0, 0)
        rel = np.asarray(rows, dtype=np.int64) - r0
        contiguous = len(rows) == r1 - r0
        cols, keep_k = _key_list(cols_key, k)
        if not isinstance(cols_key, slice):
            cols_key = np.asarray(cols, dtype=np.int64)  # an int is kept as an axis of one, dropped below
        n_cols = len(cols)
        out = np.empty((len(layers), len(heads), len(rows), n_cols), dtype=self.dtype)
        for i, layer in enumerate(layers):
            for j, head in enumerate(heads):
                block = self._raw.rows(layer, head, r0, r1)
                if not contiguous:
                    block = block[rel]
                out[i, j] = block[:, cols_key]
        shape = [s for s, keep in zip(out.shape, (keep_l, keep_h, keep_q, keep_k), strict=True) if keep]
        result = out.reshape(shape)
        result.setflags(write=False)
        return result

    # -- beyond the array ---------------------------------------------------------------------
    def map_stats(self) -> np.ndarray:
        """float32 ``[L, H, 3]``: each map's minimum, maximum and smallest positive weight
        (``inf`` when none is positive), as of the float16 maps."""
        return self.store._stats[self.name]

    @property
    def levels(self) -> tuple[int, ...]:
        """The pyramid levels kept on disk (see the module docstring)."""
        return tuple(sorted(self._levels))

    def level(self, k: int, layers: Any = slice(None), heads: Any = slice(None)) -> np.ndarray:
        """Level ``k`` of the pyramids of the maps selected by ``layers`` and ``heads``, each on its
        own (two lists give every layer with every head), float32 ``[..., ceil(Q/2^k), ceil(K/2^k)]``."""
        if k == 0:
            return np.asarray(self._select(_full_key((layers, heads))), dtype=np.float32)
        if k in self._levels:
            arr = self._levels[k]
            ls, keep_l = _key_list(layers, self.shape[0])
            hs, keep_h = _key_list(heads, self.shape[1])
            out = np.empty((len(ls), len(hs), arr.q, arr.k), dtype=np.float32)
            for i, layer in enumerate(ls):
                if len(hs) == self.shape[1] and hs == list(range(self.shape[1])):
                    out[i] = arr.maps(layer)
                else:
                    for j, head in enumerate(hs):
                        out[i, j] = arr.rows(layer, head, 0, arr.q)
            lead = [s for s, keep in zip(out.shape[:2], (keep_l, keep_h), strict=True) if keep]
            return out.reshape(lead + list(out.shape[2:]))
        below = [lv for lv in self._levels if lv < k]
        if below:
            base = max(below)
            return pool(self.level(base, layers, heads), 2 ** (k - base))
        if k == 1 or not self._levels:
            return pool(self.level(0, layers, heads), 2 ** k)
        raise ValueError(f"pyramid levels start at 0, got {k}")

    def tiles(self, max_cell: int) -> np.ndarray:
        """Every map max-pooled to at most ``max_cell`` cells a side, float32 ``[L, H, q', k']``:
        blocks of powers of two per axis (:func:`analysis.pyramid.block_for`), read from the
        coarsest stored level that is still fine enough — the same values as
        :func:`analysis.overview.downsample` of the maps."""
        return self.layer_tiles(slice(None), max_cell)

    def layer_tiles(self, layers: Any, max_cell: int) -> np.ndarray:
        """:meth:`tiles` of the layers selected by ``layers`` (an int drops the layer axis)."""
        _, _, q, k = self.shape
        fq, fk = block_for(q, max_cell), block_for(k, max_cell)
        base = min(fq, fk).bit_length() - 1  # the finer axis decides the level read
        stored = [lv for lv in self._levels if lv <= base]
        start = max(stored) if stored else 0
        src = self.level(start, layers)
        f = 2 ** start
        return pool_blocks(src, fq // f, fk // f)

    def map_source(self, layer: int, head: int) -> StoredMap:
        """One map's pyramid (:class:`analysis.pyramid.MapSource`), read from the store."""
        n_layers, n_heads = self.shape[:2]
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise IndexError(f"map ({layer}, {head}) is outside this stack of {n_layers} layers × {n_heads} heads")
        return StoredMap(self, int(layer), int(head))

    def __reduce__(self):
        return (_stack_of, (self.store, self.name, self.dtype.str))


def _stack_of(store: Store, name: str, dtype: str) -> StoredStack:
    return StoredStack(store, name, np.dtype(dtype))


def stores_of(capture: Any) -> set[Store]:
    """The stores a capture's stacks (and its pieces') read from; empty for an in-memory capture or None."""
    out: set[Store] = set()
    while capture is not None:
        out.update(a.store for a in capture.stacks.values() if is_stored(a))
        capture = capture.pieces
    return out


def is_stored(arr: Any) -> TypeGuard[StoredStack]:
    """Whether ``arr`` is a :class:`StoredStack` (read lazily) rather than an in-memory array."""
    return getattr(arr, "__headmap_stored__", False) is True


class StoredMap:
    """A :class:`analysis.pyramid.MapSource` of one stored map: stored levels are read from disk,
    level 0 and 1 (and their regions) from the maps."""

    def __init__(self, stack: StoredStack, layer: int, head: int) -> None:
        self.stack, self.layer, self.head = stack, layer, head
        self.shape = (stack.shape[2], stack.shape[3])

    def level(self, k: int) -> np.ndarray:
        if k < 0:
            raise ValueError(f"pyramid levels start at 0, got {k}")
        return self.stack.level(k, self.layer, self.head)

    def region(self, k: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if k < 0:
            raise ValueError(f"pyramid levels start at 0, got {k}")
        q, n = self.shape
        levels = self.stack._levels
        if k in levels:
            arr = levels[k]
            return arr.rows(self.layer, self.head, r0, r1)[:, c0:c1].astype(np.float32)
        if k <= 1 or not levels or k < min(levels):
            f = 2 ** k
            rows = self.stack._raw.rows(self.layer, self.head, r0 * f, min(q, r1 * f))
            return pool_blocks(rows[:, c0 * f:min(n, c1 * f)], f, f)
        return self.level(k)[r0:r1, c0:c1]


# --------------------------------------------------------------------------------------------
# writing (the model process)
# --------------------------------------------------------------------------------------------
class _StackFile:
    """The files of one stack being written."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, int, int, int]) -> None:
        self.name, self.shape = name, shape
        n_layers, n_heads, q, k = shape
        self.levels = stored_levels(q, k)
        #: levels pooled per chunk; the coarser rest from the last of them once a map is complete
        self.direct = tuple(lv for lv in self.levels if lv <= CHUNK_LEVEL)
        self.deferred = tuple(lv for lv in self.levels if lv > CHUNK_LEVEL)
        self.align = 2 ** max(self.direct) if self.direct else 1
        #: the writer thread's rows done per map, and the finest direct level's rows of maps with
        #: deferred levels (tiny: 1/65536 of the map)
        self.rows_in = np.zeros((n_layers, n_heads), dtype=np.int64)
        self.pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        self.files: dict[int, tuple[str, int, int, tuple[int, int]]] = {}
        self.fds: list[int] = []
        #: level 0 opened with O_DIRECT (None: written through the page cache)
        self.direct_fd: int | None = None
        for lv in (0, *self.levels):
            fname = f"{name}.npy" if lv == 0 else f"{name}.level{lv}.npy"
            lq, lk = level_shape(q, k, lv)
            header = _npy_header((n_layers, n_heads, lq, lk), _DTYPE, DIRECT_ALIGN if lv == 0 else None)
            fd = os.open(folder / fname, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            self.fds.append(fd)
            _pwrite_all(fd, np.frombuffer(header, dtype=np.uint8), 0)
            size = len(header) + n_layers * n_heads * lq * lk * _DTYPE.itemsize
            allocated = _allocate(fd, size)
            if not allocated:
                os.ftruncate(fd, size)
            self.files[lv] = (fname, fd, len(header), (lq, lk))
            if lv == 0 and allocated:  # (direct writes into a file's holes may go through the cache anyway)
                self.direct_fd = _open_direct(folder / fname)
                if self.direct_fd is not None:
                    self.fds.append(self.direct_fd)
        self.stats = np.empty((n_layers, n_heads, 3), dtype=np.float32)
        self.stats[..., 0] = np.inf
        self.stats[..., 1] = -np.inf
        self.stats[..., 2] = np.inf
        self.cells_done = np.zeros(n_layers, dtype=np.int64)  # rows × heads written, per layer

    def offset(self, lv: int, layer: int, head: int, row: int) -> int:
        _, _, header, (lq, lk) = self.files[lv]
        n_heads = self.shape[1]
        return header + ((layer * n_heads + head) * lq + row) * lk * _DTYPE.itemsize

    def write_map_rows(self, rows: np.ndarray, offset: int) -> None:
        """Level-0 rows at ``offset``: past the page cache when they are aligned (see
        :data:`DIRECT_ALIGN`; chunks cast by :func:`_torch_half` are, where a row block's bytes
        are whole blocks), else through it."""
        fd = self.direct_fd
        if (fd is not None and offset % DIRECT_ALIGN == 0 and rows.nbytes % DIRECT_ALIGN == 0
                and rows.flags.c_contiguous and rows.ctypes.data % DIRECT_ALIGN == 0):
            try:
                _pwrite_all(fd, rows, offset, behind=False)
                return
            except OSError as exc:
                import errno

                if exc.errno != errno.EINVAL:
                    raise
                self.direct_fd = None  # this file system refuses them after all: the page cache
        _pwrite_all(self.files[0][1], rows, offset)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


class StoreWriter:
    """Writes one capture's stacks into a new store folder (the model process's side).

    Parameters
    ----------
    owner : the pid of the process that will show the capture (default: this one); the folder is
        named after it and after this process (the writer)
    root : the stores folder (default :func:`stores_root`)
    on_layer : ``on_layer(name, layer)`` after every layer of a stack is complete (progress)

    :meth:`write` takes each chunk of rows of every head of one layer; :meth:`finish` returns the
    open :class:`Store`; :meth:`abort` (any failure, a cancel) removes the folder.
    """

    def __init__(self, owner: int | None = None, root: Path | None = None, on_layer=None) -> None:
        root = Path(root or stores_root())
        root.mkdir(parents=True, exist_ok=True)
        sweep_stores(root)
        self.owner = int(owner or os.getpid())
        self.path = root / f"{self.owner}-w{os.getpid()}-{secrets.token_hex(6)}"
        self.path.mkdir(mode=0o700)
        WRITING.add(str(self.path))
        self.on_layer = on_layer
        self.stacks: dict[str, _StackFile] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    # -- layout --------------------------------------------------------------------------------
    def begin(self, name: str, shape: Sequence[int]) -> _StackFile:
        """Create the files of stack ``name`` of ``shape`` ``[L, H, Q, K]`` (once)."""
        if name not in self.stacks:
            self.stacks[name] = _StackFile(self.path, name, tuple(int(s) for s in shape))  # type: ignore[arg-type]
        return self.stacks[name]

    def chunk_rows(self, q: int, k: int) -> int:
        """Rows per chunk for a ``q × k`` stack: :data:`CHUNK_ROWS`, whole blocks of the levels
        pooled per chunk (all of a short map)."""
        return min(q, CHUNK_ROWS)

    # -- writing -------------------------------------------------------------------------------
    def write(self, name: str, layer: int, r0: int, weights, head: int | None = None) -> None:
        """Rows ``r0 : r0 + r`` of every head of ``layer`` of stack ``name``: ``weights`` ``[H, r, K]``
        (a torch tensor or a numpy array, any float dtype), or of one ``head`` only: ``[r, K]``.
        ``r0`` must be a multiple of the coarsest stored level's block (chunks of
        :meth:`chunk_rows` rows are)."""
        if self._error is not None:
            raise self._error
        sf = self.stacks[name]
        n_layers, n_heads, q, k = sf.shape
        heads = list(range(n_heads)) if head is None else [int(head)]
        if head is not None:
            weights = weights[None]
        r = int(weights.shape[1])
        if tuple(weights.shape) != (len(heads), r, k) or r0 % sf.align or r0 + r > q or not 0 <= heads[0] < n_heads:
            raise CaptureError(f"{name} layer {layer}: rows {r0}–{r0 + r} of shape {tuple(weights.shape)} do not fit "
                               f"the stack's maps of {n_heads} heads × {q} × {k}")
        # the float16 cast here (torch: multi-threaded); pooling, ranges and the writes in the
        # writer thread, while the model computes the next chunk
        half = _torch_half(weights) if hasattr(weights, "detach") else _numpy_half(weights)
        self._put((sf, layer, heads, r0, half))
        sf.cells_done[layer] += r * len(heads)
        if sf.cells_done[layer] == q * n_heads and self.on_layer is not None:
            self.on_layer(name, layer)

    def _put(self, job: tuple) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="headmap-store-writer", daemon=True)
            self._thread.start()
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(job, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue
            try:
                self._store(*job)
            except BaseException as exc:  # a full disk: the capture fails with one sentence
                self._error = _write_error(exc, self.path)

    @staticmethod
    def _store(sf: _StackFile, layer: int, heads: list[int], r0: int, half: np.ndarray) -> None:
        """One chunk's float16 rows ``[h, r, K]``: its levels and ranges computed, everything written."""
        levels, stats = _half_parts(half, sf.direct)
        st = sf.stats[layer, heads]
        st[:, 0] = np.minimum(st[:, 0], stats[0])
        st[:, 1] = np.maximum(st[:, 1], stats[1])
        st[:, 2] = np.minimum(st[:, 2], stats[2])
        sf.stats[layer, heads] = st
        for i, h in enumerate(heads):
            sf.write_map_rows(half[i], sf.offset(0, layer, h, r0))
        for lv, arr in zip(sf.direct, levels, strict=True):
            row = r0 // 2 ** lv
            for i, h in enumerate(heads):
                _pwrite_all(sf.files[lv][1], arr[i], sf.offset(lv, layer, h, row))
        q = sf.shape[2]
        for i, h in enumerate(heads):
            sf.rows_in[layer, h] += half.shape[1]
            if not sf.deferred:
                continue
            blocks = sf.pending.setdefault((layer, h), [])
            blocks.append((r0, levels[-1][i]))
            if sf.rows_in[layer, h] == q:  # the map is complete: its coarsest levels from the finest direct one
                del sf.pending[(layer, h)]
                cur = np.concatenate([b for _, b in sorted(blocks, key=lambda x: x[0])]).view(np.uint16)[None]
                at = sf.direct[-1]
                for lv in sf.deferred:
                    cur = _pool_bits(cur, 2 ** (lv - at))
                    at = lv
                    _pwrite_all(sf.files[lv][1], cur[0].view(np.float16), sf.offset(lv, layer, h, 0))

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self, owned: bool = True) -> Store:
        """Wait for the writes, check every map was written, write the statistics and the manifest;
        returns the open :class:`Store` (``owned``: this process removes it when it is dropped)."""
        try:
            self._stop_thread()
            if self._error is not None:
                raise self._error
            stacks = {}
            for name, sf in self.stacks.items():
                missing = np.flatnonzero(sf.cells_done != sf.shape[2] * sf.shape[1])
                if missing.size:
                    raise CaptureError(f"the model computed {name} for {sf.shape[0] - missing.size} of its "
                                       f"{sf.shape[0]} layers only; Headmap cannot show this architecture's maps")
                sf.close()
                stats_name = f"{name}.stats.npy"
                np.save(self.path / stats_name, sf.stats)
                stacks[name] = {"file": sf.files[0][0], "shape": list(sf.shape), "dtype": _DTYPE.str,
                                "levels": {str(lv): sf.files[lv][0] for lv in sf.levels}, "stats": stats_name}
            manifest = {"format": FORMAT, "version": FORMAT_VERSION, "owner": self.owner, "writer": os.getpid(),
                        "stacks": stacks}
            tmp = self.path / (MANIFEST + ".tmp")
            tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            os.replace(tmp, self.path / MANIFEST)
            store = Store(self.path, owned=owned)
        except BaseException:
            self.abort()
            raise
        WRITING.discard(str(self.path))
        self._closed = True
        return store

    def abort(self) -> None:
        """Stop writing and remove the folder (a failure, a cancel)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_thread()
        finally:
            for sf in self.stacks.values():
                sf.close()
            shutil.rmtree(self.path, ignore_errors=True)
            WRITING.discard(str(self.path))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _row_ends(level2: np.ndarray, r: int, k: int) -> np.ndarray:
    """``[h, r]``: for every row of a chunk, the columns up to which it may hold a nonzero weight,
    read off the chunk's level 2 (4 × 4 maxima: a zero cell there is 16 zero weights)."""
    nz = level2.view(np.uint16) != 0  # [h, ceil(r/4), ceil(k/4)]
    groups = nz.shape[-1]
    last = groups - 1 - np.argmax(nz[..., ::-1], axis=-1)
    ends = np.where(nz.any(axis=-1), np.minimum(k, 4 * (last + 1)), 0)
    return np.repeat(ends, 4, axis=-1)[:, :r]


def _write_error(exc: BaseException, path: Path) -> BaseException:
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"the disk of {path.parent} filled up while the attention maps were written; free "
                          "some space, set HEADMAP_CACHE to a disk with room, or lower the token limit (--max-tokens)")
    if isinstance(exc, OSError):
        return CaptureError(f"the attention maps could not be written to {path} ({exc.strerror or exc}); "
                            "check the cache folder (HEADMAP_CACHE)")
    return exc


def _numpy_half(weights: np.ndarray) -> np.ndarray:
    """Float16 rows of a numpy chunk (numpy's float32 → float16 cast is slow: prefer float16 input)."""
    w = np.asarray(weights)
    return np.ascontiguousarray(w if w.dtype == np.float16 else w.astype(np.float16))


def _torch_half(weights) -> np.ndarray:
    """Float16 rows of a torch chunk as numpy: torch casts (numpy's cast is ~50× slower) into an
    array aligned for direct writes (:func:`aligned_empty`)."""
    import torch

    w = weights.detach()
    if w.device.type != "cpu":
        w = w.to("cpu")
    out = aligned_empty(tuple(w.shape), np.float16)  # (written past the page cache: aligned)
    torch.from_numpy(out).copy_(w)
    return out


def _pool_bits(bits: np.ndarray, f: int) -> np.ndarray:
    """Max-pool ``[H, a, b]`` uint16 bit patterns of non-negative float16 values over ``f × f``
    blocks (such patterns sort like the values; padding is 0, the pattern of +0.0)."""
    n, a, b = bits.shape
    pa, pb = (-a) % f, (-b) % f
    if pa or pb:
        bits = np.pad(bits, ((0, 0), (0, pa), (0, pb)))
    rows = bits.reshape(n, bits.shape[1] // f, f, bits.shape[2])
    m = rows[:, :, 0].copy()
    for i in range(1, f):
        np.maximum(m, rows[:, :, i], out=m)
    cols = m.reshape(n, m.shape[1], m.shape[2] // f, f)
    out = cols[..., 0].copy()
    for i in range(1, f):
        np.maximum(out, cols[..., i], out=out)
    return out


def _half_parts(half: np.ndarray, levels: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """The stored levels (float16) and statistics ``[3, H]`` (minimum, maximum, smallest positive;
    float32) of float16 rows ``[H, r, K]``.

    Attention weights are never negative, so their float16 bit patterns, read as uint16, sort like
    the values: pooling and the statistics are integer maxima and minima over half the bytes of
    float32 (~20× faster). The maximum is the coarsest level's; the smallest positive weight is
    looked for only left of where the rows' nonzero weights end (a causal map's upper triangle is
    zero). Rows with negative or non-finite values (no softmax) take the float path.
    """
    n, r, k = half.shape
    bits = half.view(np.uint16)
    flat = bits.reshape(n, -1)
    if not flat.shape[1]:
        return [np.zeros((n, 0, 0), np.float16) for _ in levels], np.stack(
            [np.full(n, np.inf), np.full(n, -np.inf), np.full(n, np.inf)]).astype(np.float32)
    out_bits, cur_bits, at = [], bits, 0
    for lv in levels:
        cur_bits = _pool_bits(cur_bits, 2 ** (lv - at))
        at = lv
        out_bits.append(cur_bits)
    top = out_bits[-1].reshape(n, -1) if out_bits else flat
    hi = top.max(axis=1)
    if int(hi.max()) >= 0x7C00:  # a negative, infinite or NaN weight: not bit-sortable
        w = half.astype(np.float32)
        out, cur, at = [], w, 0
        for lv in levels:
            cur = pool(cur, 2 ** (lv - at))
            at = lv
            out.append(np.ascontiguousarray(cur.astype(np.float16)))
        return out, _stats_of(w)
    lo = flat.min(axis=1)
    pos = lo.astype(np.uint32)
    zero = lo == 0
    if zero.any():  # the smallest positive pattern: zero wraps to the largest under uint16 subtraction
        end = k
        if levels and levels[0] == 2:
            end = max(1, int(_row_ends(out_bits[0].view(np.float16), r, k).max()))
        part = bits[zero, :, :end].reshape(int(zero.sum()), -1)
        pos[zero] = np.subtract(part, 1, dtype=np.uint16).min(axis=1).astype(np.uint32) + 1
    # all zero: the subtraction wrapped every pattern to 0xFFFF (no positive weight)
    pos_val = np.where(pos == 0x10000, np.inf, (pos & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float32))
    stats = np.stack([lo.view(np.float16).astype(np.float32), hi.view(np.float16).astype(np.float32),
                      pos_val.astype(np.float32)])
    return [lv_bits.view(np.float16) for lv_bits in out_bits], stats


def _stats_of(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1)
    pos = np.where(flat > 0, flat, np.inf).min(axis=1)
    return np.stack([flat.min(axis=1), flat.max(axis=1), pos]).astype(np.float32)


def write_stacks(stacks: dict[str, np.ndarray], owner: int | None = None, root: Path | None = None,
                 task=None) -> Store:
    """A store of in-memory stacks ``{name: [L, H, Q, K]}`` (written layer by layer; tests, and
    sessions opened as stored captures). Returns the open, owned :class:`Store`."""
    from .tasks import as_task

    task = as_task(task)
    with StoreWriter(owner, root) as w:
        for name, arr in stacks.items():
            sf = w.begin(name, arr.shape)
            step = w.chunk_rows(sf.shape[2], sf.shape[3])
            for layer in range(sf.shape[0]):
                task.check()
                for r0 in range(0, sf.shape[2], step):
                    w.write(name, layer, r0, np.asarray(arr[layer, :, r0:r0 + step]))
        return w.finish()


__all__ = [
    "FORMAT_VERSION", "MIN_SIDE", "DiskSpaceError", "STORE_MIN_BYTES", "Store", "StoreWriter", "StoredMap", "StoredStack",
    "capture_bytes", "check_space", "disown_sent", "forget_sent", "free_bytes", "is_stored", "open_store",
    "stack_cells", "stack_shapes", "store_wanted", "stores_root", "sweep_stores", "tokens_that_fit", "write_stacks",
]
