"""analysis.fileio: outputs respect what the path names (links, pipes, devices, modes) and a
group of writes appears together or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from analysis import fileio
from analysis.errors import ExportError
from analysis.fileio import atomic_write, atomic_write_text, check_output_path, staged_writes


def temp_files(*folders: Path) -> list[Path]:
    """Hidden files (Headmap's temp files start with a dot) left in ``folders``."""
    return [p for folder in folders for p in folder.iterdir() if p.name.startswith(".")]


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# -- symbolic links -----------------------------------------------------------------------------
def test_a_symlink_stays_a_link_and_its_target_is_written_in_its_own_folder(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    real = there / "real.csv"
    real.write_text("old")
    link = here / "out.csv"
    link.symlink_to(real)
    temps: list[Path] = []

    def write(tmp: str) -> None:
        temps.append(Path(tmp))
        Path(tmp).write_text("new")

    assert atomic_write(link, write) == link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and link.read_text() == "new"
    assert temps[0].parent == there  # atomically there: a rename within the target's folder
    assert temp_files(here, there) == []
    assert check_output_path(link) == real.resolve()


def test_chained_relative_and_absolute_links_are_followed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    real = tmp_path / "b" / "real.txt"
    real.write_text("old")
    mid = tmp_path / "b" / "mid.txt"
    mid.symlink_to("real.txt")  # relative, same folder
    first = tmp_path / "a" / "first.txt"
    first.symlink_to(Path("..") / "b" / "mid.txt")  # relative, another folder
    top = tmp_path / "top.txt"
    top.symlink_to(first)  # absolute
    atomic_write_text(top, "new")
    assert [p.is_symlink() for p in (top, first, mid)] == [True, True, True]
    assert os.readlink(first) == str(Path("..") / "b" / "mid.txt") and os.readlink(mid) == "real.txt"
    assert real.read_text() == "new" and not real.is_symlink()
    assert temp_files(tmp_path, tmp_path / "a", tmp_path / "b") == []


def test_a_dangling_link_creates_the_file_it_names(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to("made.json")
    with umask(0o022):
        atomic_write_text(link, "{}")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "{}"
    assert mode(tmp_path / "made.json") == 0o644
    assert temp_files(tmp_path) == []


def test_a_dangling_link_into_a_missing_folder_is_refused(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(ExportError, match=r"symbolic link to .*nowhere.*does not exist; create that folder"):
        atomic_write_text(link, "{}")
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_link_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(ExportError, match="loops back on itself"):
        atomic_write_text(tmp_path / "a", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# -- things that are not regular files -----------------------------------------------------------
def _never(tmp: str) -> None:
    raise AssertionError("the writer must not run for a refused path")


def test_a_fifo_is_refused_and_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    link = tmp_path / "link.npz"
    link.symlink_to(fifo)
    with pytest.raises(ExportError, match=r"pipe\.npz: it is a named pipe \(FIFO\), not a regular file"):
        atomic_write(fifo, _never)
    with pytest.raises(ExportError, match=r"symbolic link to .*pipe\.npz, which is a named pipe"):
        atomic_write(link, _never)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "pipe.npz"]


def test_a_socket_is_refused(tmp_path):
    with tempfile.TemporaryDirectory(prefix="hm") as short:  # AF_UNIX paths are short
        path = Path(short) / "s.csv"
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))
            with pytest.raises(ExportError, match="it is a socket"):
                atomic_write_text(path, "x")
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
        finally:
            sock.close()


def test_a_device_is_refused_and_left_untouched(tmp_path):
    before = os.stat("/dev/null")
    assert stat.S_ISCHR(before.st_mode)
    link = tmp_path / "fig.png"
    link.symlink_to("/dev/null")
    with pytest.raises(ExportError, match="symbolic link to /dev/null, which is a character device"):
        atomic_write(link, _never)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert link.is_symlink() and temp_files(tmp_path) == []


def test_a_device_node_at_the_path_is_refused(tmp_path):
    node = tmp_path / "null.png"
    try:  # a copy of /dev/null's node (harmless even if written); only where we may create one
        os.mknod(node, 0o600 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    try:
        with pytest.raises(ExportError, match="it is a character device"):
            atomic_write(node, _never)
        assert stat.S_ISCHR(os.lstat(node).st_mode)
    finally:
        node.unlink()


def test_a_folder_is_refused(tmp_path):
    (tmp_path / "d.png").mkdir()
    (tmp_path / "l.png").symlink_to("d.png")
    with pytest.raises(ExportError, match="it is a folder, not a regular file; give a file name"):
        atomic_write(tmp_path / "d.png", _never)
    with pytest.raises(ExportError, match="which is a folder"):
        atomic_write(tmp_path / "l.png", _never)
    assert (tmp_path / "d.png").is_dir() and (tmp_path / "l.png").is_symlink()


# -- modes and owners -------------------------------------------------------------------------
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_says(tmp_path, mask, expected):
    with umask(mask):
        atomic_write_text(tmp_path / "new.csv", "x")
        atomic_write(tmp_path / "new.bin", lambda tmp: Path(tmp).write_bytes(b"\0"))
    assert mode(tmp_path / "new.csv") == expected and mode(tmp_path / "new.bin") == expected


@pytest.mark.parametrize("old_mode", [0o640, 0o600, 0o666, 0o444])
def test_an_existing_file_keeps_its_mode(tmp_path, old_mode):
    target = tmp_path / "kept.csv"
    target.write_text("old")
    os.chmod(target, old_mode)
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)
    with umask(0o022):
        atomic_write_text(target, "new")
        assert mode(target) == old_mode
        atomic_write_text(link, "newer")
    assert mode(target) == old_mode and target.read_text() == "newer" and link.is_symlink()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root may give a file away")
def test_an_existing_file_keeps_its_owner_when_we_may_give_it(tmp_path):
    target = tmp_path / "theirs.csv"
    target.write_text("old")
    os.chown(target, 12345, 23456)
    atomic_write_text(target, "new")
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (12345, 23456) and target.read_text() == "new"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root may make a file of another group")
def test_an_existing_file_keeps_its_group_when_only_the_group_may_be_given(tmp_path, monkeypatch):
    """As a user who may not give a file away but belongs to its group: the new file keeps the
    old one's group; when not even that is allowed, it is simply ours and still written."""
    target = tmp_path / "shared.csv"
    target.write_text("old")
    os.chown(target, os.getuid(), 23456)
    real_chown, calls = os.chown, []

    def chown(path, uid, gid):
        calls.append((uid, gid))
        if uid != -1:  # giving the file to a user: root only
            raise PermissionError(1, "Operation not permitted")
        real_chown(path, uid, gid)

    monkeypatch.setattr(os, "chown", chown)
    atomic_write_text(target, "new")
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (os.getuid(), 23456) and target.read_text() == "new"
    assert calls == [(os.getuid(), 23456), (-1, 23456)]

    def refuse(path, uid, gid):
        raise PermissionError(1, "Operation not permitted")

    real_chown(target, os.getuid(), 34567)
    monkeypatch.setattr(os, "chown", refuse)
    atomic_write_text(target, "newer")
    assert os.stat(target).st_gid == os.getgid() and target.read_text() == "newer"


def test_aborted_staged_writes_leave_nothing_and_take_no_more_writes(tmp_path):
    from analysis.fileio import StagedWrites

    sw = StagedWrites()
    sw.write_text(tmp_path / "a.txt", "a")
    sw.write_text(tmp_path / "b.txt", "b")
    assert len(temp_files(tmp_path)) == 2
    sw.abort()
    assert temp_files(tmp_path) == [] and list(tmp_path.iterdir()) == [] and sw.paths == ()
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        sw.write_text(tmp_path / "c.txt", "c")
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        sw.commit()
    assert list(tmp_path.iterdir()) == []


# -- all or nothing ---------------------------------------------------------------------------------
def test_staged_writes_appear_together_at_the_end(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("old")
    with staged_writes() as tx:
        atomic_write_text(old, "new")
        atomic_write_text(tmp_path / "new.txt", "fresh")
        assert tx.paths == (old, tmp_path / "new.txt")
        assert old.read_text() == "old" and not (tmp_path / "new.txt").exists()  # not yet
    assert old.read_text() == "new" and (tmp_path / "new.txt").read_text() == "fresh"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("error", [OSError("disk full"), RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_second_write_leaves_no_output_and_keeps_old_files(tmp_path, error):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")
    second.write_text("old b")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise error

    with pytest.raises(ExportError if isinstance(error, OSError) else type(error)):
        with staged_writes():
            atomic_write_text(first, "new a")
            atomic_write_text(tmp_path / "c.txt", "new c")
            atomic_write(second, broken)
    assert first.read_text() == "old a" and second.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_an_error_in_the_block_after_the_writes_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with staged_writes():
            atomic_write_text(tmp_path / "a.txt", "a")
            raise ValueError("later")
    assert list(tmp_path.iterdir()) == []


def test_a_nested_block_joins_the_outer_one(tmp_path):
    with staged_writes() as outer:
        atomic_write_text(tmp_path / "a.txt", "a")
        with staged_writes() as inner:
            assert inner is outer
            atomic_write_text(tmp_path / "b.txt", "b")
        assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []  # the inner end moves nothing
        with contextlib.suppress(RuntimeError), staged_writes():
            atomic_write_text(tmp_path / "c.txt", "c")
            raise RuntimeError("only this block's files go")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_two_outputs_naming_one_file_are_refused(tmp_path):
    (tmp_path / "link.txt").symlink_to("x.txt")
    with pytest.raises(ExportError, match="already writes .*x.txt to the same file; give each output its own path"):
        with staged_writes():
            atomic_write_text(tmp_path / "x.txt", "1")
            atomic_write_text(tmp_path / "link.txt", "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt"]


def test_a_target_that_changes_before_the_renames_aborts_everything(tmp_path):
    with pytest.raises(ExportError, match="named pipe"):
        with staged_writes():
            atomic_write_text(tmp_path / "a.txt", "a")
            atomic_write_text(tmp_path / "p.txt", "p")
            os.mkfifo(tmp_path / "p.txt")  # appears while the run is still busy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_a_failing_rename_names_what_was_written_and_leaves_no_temp(tmp_path, monkeypatch):
    real_replace = os.replace
    calls: list[str] = []

    def replace(src, dst):
        calls.append(str(dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(ExportError, match=r"b\.txt: No space left on device \(outputs already written: .*a\.txt\)"):
        with staged_writes():
            for name in "abc":
                atomic_write_text(tmp_path / f"{name}.txt", name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failing_rename_lists_every_output_written_or_none(tmp_path, monkeypatch):
    from analysis.fileio import StagedWrites

    real_replace = os.replace
    for fail_at, written in ((3, r"\(outputs already written: \S*a\.txt, \S*b\.txt\)"),
                             (1, r"\(outputs already written: none\)")):
        folder = tmp_path / str(fail_at)
        folder.mkdir()
        calls: list[str] = []

        def replace(src, dst, calls=calls, fail_at=fail_at):
            calls.append(str(dst))
            if len(calls) == fail_at:
                raise OSError(28, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(fileio.os, "replace", replace)
        sw = StagedWrites()
        for name in "abcd":
            sw.write_text(folder / f"{name}.txt", name)
        with pytest.raises(ExportError, match=written):
            sw.commit()
        assert temp_files(folder) == [] and len(list(folder.iterdir())) == fail_at - 1
        with pytest.raises(RuntimeError, match="already committed or aborted"):  # a failed commit is final
            sw.write_text(folder / "e.txt", "e")


def test_committed_staged_writes_take_no_more_writes(tmp_path):
    from analysis.fileio import StagedWrites

    sw = StagedWrites()
    sw.write_text(tmp_path / "a.txt", "a")
    assert sw.commit() == [tmp_path / "a.txt"]
    with pytest.raises(RuntimeError, match="^these staged writes are already committed or aborted$"):
        sw.write_text(tmp_path / "b.txt", "b")
    with pytest.raises(RuntimeError, match="^these staged writes are already committed or aborted$"):
        sw.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_link_retargeted_before_the_renames_aborts_and_says_where_it_points(tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to("first.csv")
    with pytest.raises(ExportError, match=r"out\.csv: it now points to \S*second\.csv instead of \S*first\.csv; "
                                          r"run again"):
        with staged_writes():
            atomic_write_text(link, "x")
            link.unlink()
            link.symlink_to("second.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# -- what each refusal says (one sentence that says what to do) -----------------------------------
def test_refusals_say_what_to_do(tmp_path):
    with pytest.raises(ExportError, match=r"the folder \S*missing does not exist; create it or choose another path$"):
        check_output_path(tmp_path / "missing" / "x.csv")
    dangling = tmp_path / "to-missing.csv"
    dangling.symlink_to(tmp_path / "gone" / "x.csv")
    with pytest.raises(ExportError, match=r"to-missing\.csv: it is a symbolic link to \S*x\.csv, whose folder \S*gone "
                                          r"does not exist; create that folder or choose another path$"):
        check_output_path(dangling)
    loop = tmp_path / "loop.csv"
    loop.symlink_to("loop.csv")
    with pytest.raises(ExportError, match=r"loop\.csv: it is a symbolic link that loops back on itself; "
                                          r"remove the link or choose another path$"):
        check_output_path(loop)
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(ExportError, match=r"pipe\.csv: it is a named pipe \(FIFO\), not a regular file; choose another path$"):
        check_output_path(tmp_path / "pipe.csv")
    with pytest.raises(ExportError, match=r"not a regular file; give a file name$"):
        check_output_path(tmp_path)


def test_a_path_the_system_refuses_is_named_with_the_reason(tmp_path):
    long = tmp_path / ("x" * 300 + ".csv")
    with pytest.raises(ExportError, match=r"^cannot write \S*xxxx\.csv: File name too long; choose a writable path$"):
        atomic_write_text(long, "x")
    link = tmp_path / "link.csv"
    link.symlink_to("y" * 300)
    with pytest.raises(ExportError, match=r"^cannot write \S*link\.csv: File name too long; choose a writable path$"):
        atomic_write_text(link, "x")


def test_a_writer_that_fails_is_named_with_the_reason_and_leaves_no_temp(tmp_path):
    def full(tmp: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match=r"^cannot write \S*out\.bin: No space left on device; choose a writable path$"):
        atomic_write(tmp_path / "out.bin", full)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_we_cannot_write_in_is_named(tmp_path, monkeypatch):
    def refuse(path, flags, mode=0o777, *, dir_fd=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio.os, "open", refuse)
    with pytest.raises(ExportError, match=r"^cannot write \S*out\.csv: no temp file can be created in \S+ "
                                          r"\(Permission denied\); choose a writable folder$"):
        atomic_write_text(tmp_path / "out.csv", "x")


def test_a_temp_file_that_cannot_be_made_private_is_removed(tmp_path, monkeypatch):
    def refuse(path, mode, **kw):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "chmod", refuse)
    with pytest.raises(ExportError, match=r"^cannot write \S*out\.csv: Operation not permitted; choose a writable folder$"):
        atomic_write_text(tmp_path / "out.csv", "x")
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_tried_until_one_is_free_and_never_reused(tmp_path, monkeypatch):
    names = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: next(names))
    taken = tmp_path / ".out.csv.aaaaaaaa.csv"
    taken.write_text("someone else's")
    atomic_write_text(tmp_path / "out.csv", "mine")
    assert (tmp_path / "out.csv").read_text() == "mine" and taken.read_text() == "someone else's"
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: "aaaaaaaa")
    with pytest.raises(ExportError, match=r"out\.csv: no free temp file name in its folder; "
                                          r"remove the hidden temp files there$"):
        atomic_write_text(tmp_path / "out.csv", "again")
    assert taken.read_text() == "someone else's" and (tmp_path / "out.csv").read_text() == "mine"


def test_staged_write_defaults_keep_the_extension_and_refuse_empty_files(tmp_path):
    from analysis.fileio import StagedWrites

    seen: list[str] = []

    def write(tmp: str) -> None:
        seen.append(Path(tmp).name)
        Path(tmp).write_bytes(b"x")

    sw = StagedWrites()
    sw.write(tmp_path / "map.png", write)
    with pytest.raises(ExportError, match="empty file"):
        sw.write(tmp_path / "none.bin", lambda tmp: None)
    sw.commit()
    assert len(seen) == 1 and re.fullmatch(r"\.map\.png\.[0-9a-f]{8}\.png", seen[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]


def test_an_empty_file_is_refused_unless_allowed(tmp_path):
    with pytest.raises(ExportError, match="empty file"):
        atomic_write(tmp_path / "e.bin", lambda tmp: None)
    atomic_write_text(tmp_path / "e.txt", "", allow_empty=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.txt"]


def test_text_is_refused_when_empty_unless_allowed():
    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(ExportError, match="empty file"):
            atomic_write_text(Path(d) / "e.txt", "")
        with pytest.raises(ExportError, match="empty file"), staged_writes() as tx:
            tx.write_text(Path(d) / "f.txt", "")
        assert list(Path(d).iterdir()) == []


def test_text_is_utf8_with_its_own_newlines_whatever_the_platform_defaults(tmp_path, monkeypatch):
    """As on a Windows machine (cp1252 text, ``\n`` written as ``\r\n`` by default): the file
    holds exactly the text's UTF-8 bytes."""
    def windows_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True,
                     opener=None):
        if "b" not in mode:
            encoding = encoding or "cp1252"
            newline = "\r\n" if newline is None else newline
        return open(file, mode, buffering, encoding, errors, newline, closefd, opener)

    monkeypatch.setattr(fileio, "open", windows_open, raising=False)
    text = "token,weight\ntête → 0.5\r\nend\n"
    atomic_write_text(tmp_path / "a.csv", text)
    with staged_writes() as tx:
        tx.write_text(tmp_path / "b.csv", text)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes() == text.encode("utf-8")


def test_the_writer_sees_the_extension_it_needs(tmp_path):
    """Writers pick the format from the temp file's extension (matplotlib, numpy)."""
    seen: list[str] = []

    def write(tmp: str) -> None:
        seen.append(Path(tmp).suffix)
        Path(tmp).write_bytes(b"x")

    atomic_write(tmp_path / "map.png", write)
    atomic_write(tmp_path / "arrays.data", write, suffix=".npz")
    assert seen == [".png", ".npz"]
    atomic_write(tmp_path / "empty.bin", lambda tmp: None, allow_empty=True)
    assert (tmp_path / "empty.bin").read_bytes() == b""


def test_the_temp_file_is_private_while_it_is_written(tmp_path):
    seen: list[int] = []

    def write(tmp: str) -> None:
        seen.append(mode(Path(tmp)))
        Path(tmp).write_text("secret until complete")

    (tmp_path / "old.txt").write_text("old")
    os.chmod(tmp_path / "old.txt", 0o644)
    with umask(0o022):
        atomic_write(tmp_path / "new.txt", write)
        atomic_write(tmp_path / "old.txt", write)
    assert seen == [0o600, 0o600]
    assert mode(tmp_path / "new.txt") == 0o644 and mode(tmp_path / "old.txt") == 0o644
