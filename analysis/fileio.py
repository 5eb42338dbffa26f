"""Writing output files: atomically, onto what the path really names, and all-or-nothing per run.

Every file Headmap writes (figures, npz, statistics CSV, alignment, mask report, sessions) goes
through :func:`atomic_write`: the content is written to a temp file next to the file it will
replace, then moved onto it with ``os.replace``. An error never leaves a half-written file and
never overwrites a good file with a bad one.

What the output path names is respected (:func:`check_output_path`):

* **a symbolic link** (or a chain of them, relative or absolute) stays a link: the file it points
  to is written, atomically in *that* file's folder. A dangling link creates the file it names
  when that file's folder exists, and is refused otherwise.
* **a folder, named pipe (FIFO), socket or character/block device** (as the path or at the end of
  its links) is refused with one sentence before anything is written, and left untouched.
* **mode and owner**: a new file gets the mode a new file gets in that folder (``0o666`` less the
  umask, e.g. ``0o644`` with the usual umask 022, or what the folder's default ACL says); it is read
  from the kernel, which applies the umask when the temp file is created, so there is no
  ``os.umask`` round trip and no race with other threads. An existing regular file keeps its
  permission bits, and its owner and group where the process may give them (root; otherwise its
  group when we belong to it); otherwise the new file is ours. A hard link is not kept: the path
  gets the new file, other names of the old file keep the old content.

:func:`staged_writes` groups the writes of one job (the CLI's run, :func:`analysis.figures.export_all_layers`)
so that they appear together or not at all: inside it, :func:`atomic_write` prepares its temp file
(complete and flushed to disk) but leaves it aside; when the block ends without an error every
target is checked once more and the temp files are moved into place one after the other, in the
order they were written; when anything fails, every temp file is removed and no output (new or
replaced) is left. The final renames are not one atomic operation across files: a crash (or
power loss) between two of them leaves the outputs moved so far, each of them complete. Everything
slow happens before the first rename, so that window is a few ``rename`` calls long.
"""

from __future__ import annotations

import contextvars
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError

__all__ = ["StagedWrites", "atomic_write", "atomic_write_text", "check_output_path", "staged_writes"]

#: what each kind of file that is not a regular file is called in a message
_NOT_REGULAR = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_TEMP_TRIES = 100


@dataclass(frozen=True)
class _Target:
    """An output path and the file it names."""

    path: Path  # as given
    real: Path  # the file written: ``path``, or where its links lead
    existing: os.stat_result | None  # the regular file that will be replaced, if any


def _kind(st: os.stat_result) -> str | None:
    """What ``st`` is when it is not a regular file (None for a regular file)."""
    for test, name in _NOT_REGULAR:
        if test(st.st_mode):
            return name
    return None


def _lstat(p: Path, shown: Path) -> os.stat_result | None:
    """``os.lstat(p)``, or None when nothing is there (a missing folder is reported later)."""
    try:
        return os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ExportError(f"cannot write {shown}: {exc.strerror or exc}; choose a writable path") from exc


def _resolve(path: str | os.PathLike) -> _Target:
    target = Path(path)
    st = _lstat(target, target)
    real = target
    if st is not None and stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(target))
        st = _lstat(real, target)
        if st is not None and stat.S_ISLNK(st.st_mode):  # realpath stops at a loop
            raise ExportError(f"cannot write {target}: it is a symbolic link that loops back on itself; "
                              "remove the link or choose another path")
    if st is not None:
        kind = _kind(st)
        if kind is not None:
            where = "it is" if real == target else f"it is a symbolic link to {real}, which is"
            todo = "give a file name" if stat.S_ISDIR(st.st_mode) else "choose another path"
            raise ExportError(f"cannot write {target}: {where} {kind}, not a regular file; {todo}")
        return _Target(target, real, st)
    folder = real.parent if str(real.parent) else Path(".")
    if not folder.is_dir():
        if real != target:
            raise ExportError(f"cannot write {target}: it is a symbolic link to {real}, whose folder {folder} "
                              "does not exist; create that folder or choose another path")
        raise ExportError(f"cannot write {target}: the folder {folder} does not exist; create it or choose another path")
    return _Target(target, real, None)


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be an output file and return the file that would be written.

    That is ``path`` itself, or, when ``path`` is a symbolic link (or a chain of links), the file
    it points to, resolved to an absolute path; a dangling link names a new file, allowed when its
    folder exists. Nothing is written.

    Raises
    ------
    ExportError : the folder is missing; the path (or where its links lead) is a folder, a named
        pipe, a socket or a device; the links loop. One sentence that says what to do.
    """
    return _resolve(path).real


def _create_temp(target: _Target, suffix: str) -> tuple[str, int]:
    """An empty temp file next to ``target.real``, writable by us only (0600, so nothing the writer
    puts in it is readable by others before it is complete), and the mode the finished file gets.

    A new file is created with mode 0666 so that the kernel applies the umask (or the folder's
    default ACL) exactly as for any new file; that mode is read back and kept for the end.
    """
    folder = target.real.parent if str(target.real.parent) else Path(".")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_TEMP_TRIES):
        tmp = str(folder / f".{target.real.name}.{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, flags, 0o600 if target.existing is not None else 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ExportError(f"cannot write {target.path}: no temp file can be created in {folder} "
                              f"({exc.strerror or exc}); choose a writable folder") from exc
        try:
            mode = stat.S_IMODE((target.existing or os.fstat(fd)).st_mode)
            os.chmod(tmp, 0o600)
        except OSError as exc:
            os.close(fd)
            _silent_unlink(tmp)
            raise ExportError(f"cannot write {target.path}: {exc.strerror or exc}; choose a writable folder") from exc
        os.close(fd)
        return tmp, mode
    raise ExportError(f"cannot write {target.path}: no free temp file name in its folder; "
                      "remove the hidden temp files there")


def _finish(tmp: str, mode: int, existing: os.stat_result | None) -> None:
    """Flush ``tmp`` to disk, then give it the owner (when we may) and mode of the file it replaces."""
    fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if existing is not None and hasattr(os, "chown"):
        _keep_owner(tmp, existing)
    os.chmod(tmp, mode)  # after chown, which may clear the set-id bits


def _keep_owner(tmp: str, existing: os.stat_result) -> None:
    st = os.stat(tmp)
    if (st.st_uid, st.st_gid) == (existing.st_uid, existing.st_gid):
        return
    try:
        os.chown(tmp, existing.st_uid, existing.st_gid)  # root only
    except PermissionError:
        try:
            os.chown(tmp, -1, existing.st_gid)  # a group we belong to
        except PermissionError:
            pass  # the new file is ours: documented


def _prepare(target: _Target, write: Callable[[str], None], suffix: str, allow_empty: bool) -> str:
    """The complete temp file for ``target`` (written, flushed, with its final mode); its path."""
    tmp, mode = _create_temp(target, suffix or target.path.suffix)
    try:
        write(tmp)
        if not allow_empty and os.path.getsize(tmp) == 0:
            raise ExportError(f"writing {target.path} produced an empty file; nothing was saved")
        _finish(tmp, mode, target.existing)
    except ExportError:
        _silent_unlink(tmp)
        raise
    except OSError as exc:
        _silent_unlink(tmp)
        raise ExportError(f"cannot write {target.path}: {exc.strerror or exc}; choose a writable path") from exc
    except BaseException:
        _silent_unlink(tmp)
        raise
    return tmp


@dataclass(frozen=True)
class _Staged:
    target: _Target
    tmp: str


class StagedWrites:
    """Output files prepared as complete temp files, moved into place together by :meth:`commit`.

    Use it through :func:`staged_writes`; :func:`atomic_write` inside that block adds to it.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._closed = False

    @property
    def paths(self) -> tuple[Path, ...]:
        """The output paths staged so far (as given), in the order they will be moved into place."""
        return tuple(s.target.path for s in self._staged)

    def write(self, path: str | os.PathLike, write: Callable[[str], None], suffix: str = "",
              allow_empty: bool = False) -> Path:
        """Stage one output: check ``path``, call ``write(tmp_path)``, keep the finished temp file.

        A second output naming the same file (directly or through links) is refused: only one of
        them could survive. Returns ``path``. Raises :class:`ExportError` (nothing of this output
        is left; what was staged before stays staged).
        """
        if self._closed:
            raise RuntimeError("these staged writes are already committed or aborted")
        target = _resolve(path)
        same = os.path.realpath(target.real)
        for s in self._staged:
            if os.path.realpath(s.target.real) == same:
                raise ExportError(f"cannot write {target.path}: this run already writes {s.target.path} to the "
                                  "same file; give each output its own path")
        self._staged.append(_Staged(target, _prepare(target, write, suffix, allow_empty)))
        return target.path

    def write_text(self, path: str | os.PathLike, text: str, allow_empty: bool = False) -> Path:
        """Stage ``text`` as a UTF-8 file (newlines as given)."""
        def _w(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)

        return self.write(path, _w, allow_empty=allow_empty)

    def abort(self) -> None:
        """Remove every staged temp file; nothing is moved, and no more writes are taken."""
        self._discard(0)
        self._closed = True

    def _discard(self, start: int) -> None:
        """Remove the temp files staged from index ``start`` on (a nested block failed)."""
        for s in self._staged[start:]:
            _silent_unlink(s.tmp)
        del self._staged[start:]

    def commit(self) -> list[Path]:
        """Move every staged file into place, in the order staged; returns the paths (as given).

        Every target is checked again first (a path that became a folder, a pipe, a device or a
        different link target meanwhile aborts everything, nothing moved). The renames then run back
        to back; should one of them fail, the temp files not yet moved are removed and the error
        names the outputs already written (the renames are one ``os.replace`` each, not one atomic
        operation across files).
        """
        if self._closed:
            raise RuntimeError("these staged writes are already committed or aborted")
        try:
            for s in self._staged:
                now = _resolve(s.target.path)
                if now.real != s.target.real:
                    raise ExportError(f"cannot write {s.target.path}: it now points to {now.real} instead of "
                                      f"{s.target.real}; run again")
        except BaseException:
            self.abort()
            raise
        done = self._move_all()
        self._closed = True
        return done

    def _move_all(self) -> list[Path]:
        done: list[Path] = []
        for i, s in enumerate(self._staged):
            try:
                os.replace(s.tmp, s.target.real)
            except OSError as exc:
                for rest in self._staged[i:]:
                    _silent_unlink(rest.tmp)
                self._staged.clear()
                self._closed = True
                written = ", ".join(str(p) for p in done) or "none"
                raise ExportError(f"cannot write {s.target.path}: {exc.strerror or exc} (outputs already written: "
                                  f"{written}); fix that and run again") from exc
            done.append(s.target.path)
        for folder in dict.fromkeys(s.target.real.parent for s in self._staged):
            _fsync_dir(folder)
        self._staged.clear()
        return done


_current: contextvars.ContextVar[StagedWrites | None] = contextvars.ContextVar("headmap_staged_writes", default=None)


@contextmanager
def staged_writes() -> Iterator[StagedWrites]:
    """A block whose output files appear together, when it ends without an error, or not at all.

    Every :func:`atomic_write` (and so every writer of Headmap) inside the block, in this thread
    or task, only prepares its complete temp file. On a normal exit they are all moved into place
    (:meth:`StagedWrites.commit`); on any exception, KeyboardInterrupt included, every temp file of
    the block is removed, no output is created or replaced, and the exception propagates.

    Nested blocks join the outer one: their files move with the outer block's, and an exception
    leaving a nested block removes only the files that block staged.
    """
    outer = _current.get()
    if outer is not None:
        mark = len(outer.paths)
        try:
            yield outer
        except BaseException:
            outer._discard(mark)
            raise
        return
    tx = StagedWrites()
    token = _current.set(tx)
    try:
        yield tx
    except BaseException:
        _current.reset(token)
        tx.abort()
        raise
    _current.reset(token)
    tx.commit()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "", allow_empty: bool = False
) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    ``path`` is checked first (:func:`check_output_path`): a symbolic link is followed and the file
    it points to is written (the link stays), a dangling link creates the file it names when that
    folder exists, and folders, pipes, sockets and devices are refused before anything is written.
    The temp file lies next to the file written; a new file gets the mode the umask gives, an
    existing one keeps its mode (and owner where allowed); see the module docstring.

    ``suffix`` is given to the temp file (some writers pick the format from the extension,
    e.g. numpy adds ``.npz`` when missing, matplotlib reads ``.png``). Inside
    :func:`staged_writes` the finished temp file waits for the block to end.

    Raises
    ------
    ExportError : the path is refused, the folder is not writable, writing failed or produced an
        empty file (unless ``allow_empty``); nothing is left behind and an existing file is kept.
    """
    with staged_writes() as tx:
        return tx.write(path, write, suffix=suffix, allow_empty=allow_empty)


def atomic_write_text(path: str | os.PathLike, text: str, allow_empty: bool = False) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8 (newlines as given)."""
    with staged_writes() as tx:
        return tx.write_text(path, text, allow_empty=allow_empty)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable where the platform allows it (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _silent_unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
