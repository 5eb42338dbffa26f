"""Atomic file writing: a temp file in the target folder, then ``os.replace``.

An error never leaves a half-written file and never overwrites a good file with a bad one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ExportError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "", allow_empty: bool = False
) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    ``suffix`` is given to the temp file (some writers pick the format from the extension,
    e.g. numpy adds ``.npz`` when missing, matplotlib reads ``.png``).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"cannot write {target}: the folder {folder} does not exist; create it or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=folder)
        os.close(fd)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}; choose a writable folder") from exc
    try:
        write(tmp)
        if not allow_empty and os.path.getsize(tmp) == 0:
            raise ExportError(f"writing {target} produced an empty file; nothing was saved")
        os.replace(tmp, target)
    except ExportError:
        _silent_unlink(tmp)
        raise
    except OSError as exc:
        _silent_unlink(tmp)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}; choose a writable path") from exc
    except BaseException:
        _silent_unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str, allow_empty: bool = False) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, _w, allow_empty=allow_empty)


def _silent_unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
