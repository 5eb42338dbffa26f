"""Headmap's derived caches: folders built once from something the user has, checked on every use,
rebuilt when damaged.

The one derived cache today is the dequantized copy of a ``.gguf`` model
(:func:`analysis.loader.dequantize_gguf`, under ``cache_dir()/gguf``). An *entry* is a folder:

* **Built aside, installed whole.** A builder writes into a temp folder next to the entry
  (``.<name>.tmp-<host>-<pid>-<random>``); every file and the folder are fsynced, the manifest
  :data:`MANIFEST` is written last, and the folder is renamed into place. A crash leaves no half
  entry under the final name, only a temp folder that a later :func:`ensure` sweeps once its
  process is gone. Two processes building the same entry each build their own temp folder; the one
  that finishes second keeps the first complete copy and drops its own.
* **Recorded.** The manifest lists every file with its size, sha256 and modification time.
* **Checked on use.** The trade-off: hashing the ~500 MB SmolLM2 copy takes about a second, too much
  for every load, so every use makes the *cheap* check (the manifest reads, every file is there
  with its recorded size — this catches truncation and deleted files, the damage a crash or a full
  disk leaves). The *full* check (every sha256) runs when a file's modification time differs from
  the manifest's (something rewrote it: a byte changed at the same size), when loading from the
  entry fails (:func:`inspect` with ``full=True``, see :func:`analysis.loader.load_model`), and
  once for an entry written before manifests recorded files. Corruption that keeps size and
  modification time (bit rot) and still loads is not caught.
* **Rebuilt with a notice.** A damaged entry is removed and rebuilt; :class:`Entry.repaired` says
  why, and the loader puts that sentence into the model's notes.
* **Disk trouble is one sentence.** A full disk says how much the entry needs, how much is free and
  where; a read-only or unwritable cache names the folder and ``HEADMAP_CACHE``. The temp folder of
  a failed attempt is always removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import CacheError, HeadmapError
from .tasks import TaskState, as_task

#: the manifest of a complete entry, written last
MANIFEST = "headmap-cache.json"
FORMAT = 1
#: temp and discarded folders of another host (a shared cache) are swept after this many seconds
STALE_AFTER_S = 24 * 3600
#: kept free beyond an entry's own size when its space is reserved
SPACE_MARGIN = 16 * 2**20

#: a builder: ``build(folder, reserve)`` writes the entry's files into ``folder``; it calls
#: ``reserve(n_bytes)`` once it knows how big they will be (checked against the free space)
Builder = Callable[[Path, Callable[[int], None]], None]

_ABSENT = "absent"
#: this machine in the names of temp folders (a shared cache sweeps other hosts' folders by age only)
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_AUX = re.compile(r"^\.(?P<entry>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[^/]*$")
_LEGACY_TMP = re.compile(r"^(?P<entry>[^.].*)\.tmp(?P<pid>\d+)$")  # the loader's temp folders before manifests


def cache_dir() -> Path:
    """Headmap's own cache (dequantized GGUF models). ``HEADMAP_CACHE`` overrides it."""
    env = os.environ.get("HEADMAP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "headmap"


@dataclass(frozen=True)
class Entry:
    """A complete entry, ready to use.

    path : its folder
    built : it was built by this call
    repaired : when it was built because the previous copy was damaged, the sentence saying so
    """

    path: Path
    built: bool = False
    repaired: str | None = None


# --------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """sha256 of a file, read now (never a cached digest: the check must see the bytes on disk)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inspect(path: Path, full: bool = False) -> str | None:
    """What is wrong with the entry at ``path``, or None when it is complete.

    Parameters
    ----------
    path : the entry's folder
    full : also compare every file's sha256 with the manifest (otherwise only when a file's
        modification time changed)

    Returns
    -------
    None, or a clause for the user (``model.safetensors is 1,024 bytes but should be 538,090,424``);
    ``"absent"`` when there is no entry at all.
    """
    if not path.exists():
        return _ABSENT
    if not path.is_dir():
        return f"{path.name} is not a folder"
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {MANIFEST}, so it was never completed"
    except (OSError, ValueError) as exc:
        return f"its {MANIFEST} cannot be read ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST} is not a record of its files"
    files = manifest.get("files")
    if files is None:
        return _adopt_legacy(path, manifest)
    if not isinstance(files, dict) or not files:
        return f"its {MANIFEST} lists no files"
    return _check_files(path, manifest, files, full)


def _check_files(path: Path, manifest: dict, files: dict, full: bool) -> str | None:
    rewritten = []
    for name, rec in files.items():
        problem = _check_one(path, name, rec, full)
        if problem == "rewritten":
            rewritten.append(name)
        elif problem is not None:
            return problem
    if rewritten:
        # the bytes are right (they were hashed): record the new times so the next use is cheap again
        for name in rewritten:
            files[name]["mtime_ns"] = os.stat(path / name).st_mtime_ns
        _try_write_manifest(path, manifest)
    return None


def _check_one(path: Path, name: str, rec, full: bool) -> str | None:
    """None (fine), ``"rewritten"`` (fine, but its time changed) or what is wrong with one file."""
    if not isinstance(rec, dict) or not isinstance(rec.get("size"), int) or not isinstance(rec.get("sha256"), str):
        return f"its {MANIFEST} has no size and sha256 for {name}"
    file = path / name
    try:
        st = file.stat()
    except OSError:
        return f"{name} is missing"
    if st.st_size != rec["size"]:
        return f"{name} is {st.st_size:,} bytes but should be {rec['size']:,}"
    moved = st.st_mtime_ns != rec.get("mtime_ns")
    if full or moved:
        try:
            digest = sha256_of(file)
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if digest != rec["sha256"]:
            return f"{name} does not match its recorded sha256"
    return "rewritten" if moved else None


def _adopt_legacy(path: Path, manifest: dict) -> str | None:
    """An entry completed before manifests listed files: check its structure once (safetensors
    headers against the file sizes, JSON files parse), then record its files. None when adopted."""
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.name != MANIFEST):
        problem = _structure_problem(file)
        if problem:
            return problem
    try:
        files = _record(path)
    except OSError as exc:
        return f"its files cannot be read ({exc.strerror or exc})"
    _try_write_manifest(path, {**manifest, "format": FORMAT, "files": files})
    return None


def _structure_problem(file: Path) -> str | None:
    """What is structurally wrong with a safetensors or JSON file (truncation, garbage), or None."""
    try:
        if file.suffix == ".safetensors":
            size = file.stat().st_size
            with open(file, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    return f"{file.name} is truncated"
                (n,) = struct.unpack("<Q", head)
                if n > min(size, 100 * 2**20):
                    return f"{file.name} has a damaged header"
                header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            if size != 8 + n + end:
                return f"{file.name} is {size:,} bytes but its header says {8 + n + end:,}"
        elif file.suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return f"{file.name} is damaged"
    return None


def _record(folder: Path) -> dict[str, dict]:
    """Size, sha256 and modification time of every file under ``folder`` (the manifest excluded)."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        if rel == MANIFEST or rel.startswith(f".{MANIFEST}."):  # the manifest, or a crashed rewrite of it
            continue
        st = file.stat()
        out[rel] = {"size": st.st_size, "sha256": sha256_of(file), "mtime_ns": st.st_mtime_ns}
    return out


def _try_write_manifest(path: Path, manifest: dict) -> None:
    """Replace an entry's manifest atomically; a cache we cannot write keeps the old one."""
    try:
        _write_manifest(path, manifest)
    except OSError:
        pass


def _write_manifest(folder: Path, manifest: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        _unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def ensure(path: Path, build: Builder, *, what: str, message: str, stage: str = "build",
           source: str = "", task: TaskState | None = None) -> Entry:
    """The complete entry at ``path``: as it is when it passes the cheap check, else (re)built.

    Parameters
    ----------
    path : the entry's folder (its parent is created when needed)
    build : writes the entry's files into a temp folder (see :data:`Builder`); any exception it
        raises ends the attempt, and the temp folder is removed
    what : the entry in words, without an article, for messages (``dequantized copy of model.gguf``)
    message : the progress message while it is built from scratch
    stage, task : progress (``task.step(stage, None, …)``) and cancellation
    source : recorded in the manifest (where the entry comes from)

    Raises
    ------
    CacheError : the cache folder is read-only, unwritable or full (one sentence: what to free, or
        where to point ``HEADMAP_CACHE``)
    whatever ``build`` raises (a :class:`~analysis.errors.HeadmapError` for the user)
    """
    task = as_task(task)
    sweep(path.parent)
    problem = inspect(path)
    if problem is None:
        return Entry(path)
    if problem != _ABSENT:
        return rebuild(path, build, what=what, problem=problem, stage=stage, source=source, task=task)
    task.step(stage, None, message)
    _build(path, build, what, source)
    return Entry(path, built=True)


def rebuild(path: Path, build: Builder, *, what: str, problem: str, stage: str = "build", source: str = "",
            task: TaskState | None = None) -> Entry:
    """Discard the damaged entry at ``path`` (``problem``: what is wrong) and build it again."""
    task = as_task(task)
    task.step(stage, None, f"the cached {what} is damaged ({problem}); rebuilding it…")
    fresh = f"a new {what} (the cached one is damaged: {problem})"
    try:
        discard(path)
    except CacheError:
        raise _disk_error(OSError(errno.EACCES, os.strerror(errno.EACCES)), path.parent, fresh, None) from None
    _build(path, build, what, source, error_what=fresh)
    return Entry(path, built=True, repaired=f"Headmap's cached {what} was damaged ({problem}) and has been rebuilt")


def discard(path: Path) -> None:
    """Remove an entry: renamed aside first (a crash never leaves half of it under its name)."""
    if not path.exists():
        return
    try:
        aside = Path(tempfile.mkdtemp(prefix=_aux_prefix(path, "old"), dir=path.parent))
        os.rename(path, aside / path.name)
    except FileNotFoundError:
        return  # another process removed it first
    except OSError as exc:
        raise _disk_error(exc, path.parent, "the damaged " + path.name, None) from exc
    shutil.rmtree(aside, ignore_errors=True)


def _aux_prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-{HOST}-{os.getpid()}-"


def _build(path: Path, build: Builder, what: str, source: str, error_what: str | None = None) -> None:
    parent = path.parent
    need: list[int] = []
    tmp: Path | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_aux_prefix(path, "tmp"), dir=parent))

        def reserve(n: int) -> None:
            need[:] = [int(n)]
            free = shutil.disk_usage(parent).free
            if free < n + SPACE_MARGIN:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        build(tmp, reserve)
        files = _record(tmp)
        for name in files:
            _fsync_file(tmp / name)
        _write_manifest(tmp, {"format": FORMAT, "source": source, "what": what, "files": files,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        _fsync_dir(tmp)
        _install(tmp, path)
        tmp = None
        _fsync_dir(parent)
    except HeadmapError:
        raise
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp = None
        err = _as_disk_error(exc, parent, error_what or f"the {what}", need[0] if need else None)
        if err is not None:
            raise err from exc
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, path: Path) -> None:
    """Rename the finished temp folder onto ``path``, unless another process finished first."""
    if inspect(path) is None:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep its copy
        return
    discard(path)  # a damaged or unfinished copy
    try:
        os.rename(tmp, path)
    except OSError:
        if inspect(path) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an identical complete copy


def _fsync_file(file: Path) -> None:
    with open(file, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # folders cannot be opened for fsync there
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# disk trouble
# --------------------------------------------------------------------------------------------
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
# writers that are not Python (safetensors' Rust writer) report the OS error only in their message
_FULL_TEXT = re.compile(r"no space left|disk quota exceeded|os error (28|122)\b|storagefull", re.IGNORECASE)
_READ_ONLY_TEXT = re.compile(r"read-only file system|permission denied|os error (30|13|1)\b", re.IGNORECASE)


def _as_disk_error(exc: BaseException, folder: Path, what: str, need: int | None) -> CacheError | None:
    if isinstance(exc, OSError) and exc.errno in _FULL + _READ_ONLY:
        return _disk_error(exc, folder, what, need)
    if isinstance(exc, Exception) and not isinstance(exc, OSError):
        text = str(exc)
        if _FULL_TEXT.search(text):
            return _disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), folder, what, need)
        if _READ_ONLY_TEXT.search(text):
            return _disk_error(OSError(errno.EACCES, os.strerror(errno.EACCES)), folder, what, need)
    return None


def _mb(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{max(n, 0) / 1e3:,.0f} kB"


def _disk_error(exc: OSError, folder: Path, what: str, need: int | None) -> CacheError:
    """The sentence for a full, read-only or unwritable cache folder."""
    if exc.errno in _FULL:
        try:
            free = shutil.disk_usage(_existing(folder)).free
        except OSError:
            free = 0
        if need:
            short = need + SPACE_MARGIN - free
            free_what = f"free at least {_mb(short)} there" if short > 0 else "free some space there"
            return CacheError(
                f"there is not enough disk space for {what} in {folder}: it needs about {_mb(need)} and "
                f"{_mb(free)} are free; {free_what}, or set HEADMAP_CACHE to a folder on a disk with more room"
            )
        return CacheError(f"the disk holding {folder} is full ({_mb(free)} free) while writing {what}; free some "
                          "space there, or set HEADMAP_CACHE to a folder on a disk with more room")
    why = "it is on a read-only disk" if exc.errno == errno.EROFS else "it is not writable"
    return CacheError(f"Headmap cannot write {what} into its cache folder {folder} ({why}); make that folder "
                      "writable, or set HEADMAP_CACHE to a writable folder")


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


# --------------------------------------------------------------------------------------------
# sweeping what crashed runs left
# --------------------------------------------------------------------------------------------
def sweep(folder: Path) -> list[Path]:
    """Remove the temp and discarded folders of processes that are gone (crashed builds).

    A folder of this host is stale when its process no longer runs; one of another host (a shared
    cache) when it is older than :data:`STALE_AFTER_S`. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return removed
    for child in children:
        if child.is_dir() and _stale(child):
            shutil.rmtree(child, ignore_errors=True)
            if not child.exists():
                removed.append(child)
    return removed


def _stale(child: Path) -> bool:
    m = _AUX.match(child.name)
    if m is not None:
        host, pid = m.group("host"), int(m.group("pid"))
    else:
        legacy = _LEGACY_TMP.match(child.name)
        if legacy is None:
            return False
        host, pid = HOST, int(legacy.group("pid"))
    if host == HOST and os.name != "nt":
        return pid != os.getpid() and not _pid_alive(pid)
    try:
        return time.time() - child.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's process)
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
