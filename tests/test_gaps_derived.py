"""The derived cache's checks, one kind of damage at a time (analysis.derived.inspect): each says in
one clause what is wrong, and that clause is what the rebuild notice shows. Also the sweep of
crashed builds at its edges and the disk-trouble sentences' fallbacks. (Found by a coverage run:
no test reached these branches.)"""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path

import pytest

from analysis import derived
from analysis.errors import CacheError


def _entry(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A complete entry holding ``files``."""
    entry = tmp_path / "cache" / "thing"

    def build(folder: Path, reserve) -> None:
        for name, data in files.items():
            (folder / name).write_bytes(data)

    derived.ensure(entry, build, what="thing", message="building")
    assert derived.inspect(entry) is None
    return entry


def _safetensors(n_bytes: int, extra: bytes = b"") -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_bytes // 4], "data_offsets": [0, n_bytes]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * n_bytes + extra


def _manifest(entry: Path) -> Path:
    return entry / derived.MANIFEST


# -- what inspect says --------------------------------------------------------------------------
def test_a_file_where_the_entry_should_be_is_not_a_folder(tmp_path):
    file = tmp_path / "thing"
    file.write_text("x")
    assert derived.inspect(file) == "thing is not a folder"


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ("{not json", f"its {derived.MANIFEST} cannot be read (JSONDecodeError)"),
        ("[1, 2]", f"its {derived.MANIFEST} is not a record of its files"),
        ('{"files": {}}', f"its {derived.MANIFEST} lists no files"),
        ('{"files": ["data.bin"]}', f"its {derived.MANIFEST} lists no files"),
        ('{"files": {"data.bin": {"size": 3}}}', f"its {derived.MANIFEST} has no size and sha256 for data.bin"),
        ('{"files": {"data.bin": {"size": "3", "sha256": "ab"}}}',
         f"its {derived.MANIFEST} has no size and sha256 for data.bin"),
        ('{"files": {"data.bin": "3 bytes"}}', f"its {derived.MANIFEST} has no size and sha256 for data.bin"),
    ],
)
def test_a_damaged_manifest_says_what_is_wrong_with_it(tmp_path, manifest, problem):
    entry = _entry(tmp_path, {"data.bin": b"abc"})
    _manifest(entry).write_text(manifest, encoding="utf-8")
    assert derived.inspect(entry) == problem


def test_a_file_that_cannot_be_read_says_so(tmp_path, monkeypatch):
    """A rewritten file (new time) is hashed; when reading it fails, the clause says why."""
    entry = _entry(tmp_path, {"data.bin": b"abc"})
    os.utime(entry / "data.bin", ns=(1, 1))

    def unreadable(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(derived, "sha256_of", unreadable)
    assert derived.inspect(entry) == f"data.bin cannot be read ({os.strerror(errno.EACCES)})"


def test_a_damaged_entry_is_rebuilt_and_the_notice_quotes_the_clause(tmp_path):
    entry = _entry(tmp_path, {"data.bin": b"abc"})
    _manifest(entry).write_text("[]", encoding="utf-8")
    got = derived.ensure(entry, lambda folder, reserve: (folder / "data.bin").write_bytes(b"new"),
                         what="thing", message="building")
    assert got == derived.Entry(entry, built=True, repaired=(
        f"Headmap's cached thing was damaged (its {derived.MANIFEST} is not a record of its files) and has been "
        "rebuilt"))
    assert (entry / "data.bin").read_bytes() == b"new" and derived.inspect(entry) is None


# -- entries from before manifests listed files: checked by their structure once ---------------
def _legacy(tmp_path: Path, files: dict[str, bytes]) -> Path:
    entry = tmp_path / "legacy"
    entry.mkdir()
    for name, data in files.items():
        (entry / name).write_bytes(data)
    _manifest(entry).write_text(json.dumps({"source": "model.gguf"}), encoding="utf-8")
    return entry


def test_an_intact_legacy_entry_is_adopted_with_its_files_recorded(tmp_path):
    weights = _safetensors(16)
    entry = _legacy(tmp_path, {"model.safetensors": weights, "config.json": b'{"a": 1}'})
    assert derived.inspect(entry) is None
    manifest = json.loads(_manifest(entry).read_text(encoding="utf-8"))
    assert manifest["source"] == "model.gguf" and manifest["format"] == derived.FORMAT
    assert manifest["files"]["model.safetensors"]["size"] == len(weights)
    assert manifest["files"]["model.safetensors"]["sha256"] == derived.sha256_of(entry / "model.safetensors")
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"model.safetensors": b"\1\2\3"}, "model.safetensors is truncated"),
        ({"model.safetensors": struct.pack("<Q", 10**6) + b"{}"}, "model.safetensors has a damaged header"),
        ({"model.safetensors": _safetensors(16)[:-4]}, None),  # filled in below: the sizes disagree
        ({"model.safetensors": _safetensors(16, extra=b"\0" * 8)}, None),
        ({"model.safetensors": struct.pack("<Q", 2) + b"[x"}, "model.safetensors is damaged"),
        ({"model.safetensors": _safetensors(16), "config.json": b"{broken"}, "config.json is damaged"),
    ],
)
def test_a_damaged_legacy_entry_says_which_file_is_damaged_and_how(tmp_path, files, problem):
    entry = _legacy(tmp_path, files)
    if problem is None:
        size = len(files["model.safetensors"])
        header = len(_safetensors(16)) - 16
        problem = f"model.safetensors is {size:,} bytes but its header says {header + 16:,}"
    assert derived.inspect(entry) == problem
    assert "files" not in json.loads(_manifest(entry).read_text(encoding="utf-8"))  # not adopted


def test_a_legacy_entry_adopts_files_of_other_kinds_unread(tmp_path):
    """Only safetensors and JSON files have a structure to check; others are recorded as they are."""
    entry = _legacy(tmp_path, {"tokenizer.model": b"\xff\xfe not json", "config.json": b"{}"})
    assert derived.inspect(entry) is None
    assert sorted(json.loads(_manifest(entry).read_text(encoding="utf-8"))["files"]) == ["config.json",
                                                                                          "tokenizer.model"]


def test_a_safetensors_file_of_a_header_alone_is_intact(tmp_path):
    """No tensors: the file is the 8-byte length and the header, nothing more, and that is whole."""
    header = b'{"__metadata__": {}}'
    entry = _legacy(tmp_path, {"model.safetensors": struct.pack("<Q", len(header)) + header})
    assert derived.inspect(entry) is None  # no tensors: 8 + header bytes exactly


def test_a_legacy_entry_whose_files_cannot_be_read_says_so(tmp_path, monkeypatch):
    entry = _legacy(tmp_path, {"config.json": b"{}"})

    def unreadable(folder):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(derived, "_record", unreadable)
    assert derived.inspect(entry) == f"its files cannot be read ({os.strerror(errno.EACCES)})"


# -- the disk-trouble sentences -----------------------------------------------------------------
def test_a_damaged_entry_that_cannot_be_moved_aside_is_one_sentence(tmp_path, monkeypatch):
    entry = _entry(tmp_path, {"data.bin": b"abc"})
    (entry / "data.bin").unlink()

    def no_rename(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(derived.os, "rename", no_rename)
    with pytest.raises(CacheError) as err:
        derived.ensure(entry, lambda folder, reserve: None, what="thing", message="building")
    assert str(err.value) == (
        f"Headmap cannot write a new thing (the cached one is damaged: data.bin is missing) into its cache folder "
        f"{entry.parent} (it is not writable); make that folder writable, or set HEADMAP_CACHE to a writable folder")


def test_a_full_disk_whose_free_space_cannot_be_read_says_zero(tmp_path, monkeypatch):
    def no_usage(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(derived.shutil, "disk_usage", no_usage)
    err = derived._disk_error(OSError(errno.ENOSPC, "full"), tmp_path / "a" / "b", "the thing", None)
    assert str(err) == (f"the disk holding {tmp_path / 'a' / 'b'} is full (0 kB free) while writing the thing; free "
                        "some space there, or set HEADMAP_CACHE to a folder on a disk with more room")


@pytest.mark.parametrize(("n", "text"), [(0, "0 kB"), (-5, "0 kB"), (999_999, "1,000 kB"), (10**6, "1 MB"),
                                         (999_999_999, "1,000 MB"), (10**9, "1.0 GB"), (12_345_678_901, "12.3 GB")])
def test_sizes_in_disk_messages(n, text):
    assert derived._mb(n) == text


def test_the_free_space_of_a_folder_not_made_yet_is_read_on_its_nearest_existing_parent(tmp_path):
    assert derived._existing(tmp_path / "x" / "y" / "z") == tmp_path
    assert derived._existing(tmp_path) == tmp_path


# -- races and interruptions -------------------------------------------------------------------
def test_discarding_an_entry_another_process_removed_meanwhile_is_fine(tmp_path, monkeypatch):
    entry = _entry(tmp_path, {"data.bin": b"abc"})

    def gone(src, dst):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))

    monkeypatch.setattr(derived.os, "rename", gone)
    derived.discard(entry)  # no error
    monkeypatch.undo()
    assert derived.inspect(entry) is None


def _rename_then(monkeypatch, *, other_copy: bool):
    """Renaming a finished temp folder onto the entry fails (another process got there first, or
    the disk refused); with ``other_copy`` that other process installed a complete copy."""
    real = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".thing.tmp-"):
            if other_copy:
                import shutil

                shutil.copytree(src, dst)
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))
        return real(src, dst)

    monkeypatch.setattr(derived.os, "rename", rename)


def test_losing_the_install_race_to_a_complete_copy_keeps_that_copy(tmp_path, monkeypatch):
    entry = tmp_path / "cache" / "thing"
    _rename_then(monkeypatch, other_copy=True)
    got = derived.ensure(entry, lambda folder, reserve: (folder / "data.bin").write_bytes(b"abc"),
                         what="thing", message="building")
    assert got == derived.Entry(entry, built=True)
    assert derived.inspect(entry) is None
    assert sorted(p.name for p in entry.parent.iterdir()) == ["thing"]  # our temp folder removed


def test_an_install_that_fails_with_no_copy_in_place_raises_and_leaves_nothing(tmp_path, monkeypatch):
    entry = tmp_path / "cache" / "thing"
    _rename_then(monkeypatch, other_copy=False)
    with pytest.raises(OSError) as err:
        derived.ensure(entry, lambda folder, reserve: (folder / "data.bin").write_bytes(b"abc"),
                       what="thing", message="building")
    assert err.value.errno == errno.ENOTEMPTY and not isinstance(err.value, CacheError)
    assert list(entry.parent.iterdir()) == []


def test_an_interrupted_build_leaves_nothing_and_the_interrupt_goes_on(tmp_path):
    entry = tmp_path / "cache" / "thing"

    def build(folder: Path, reserve) -> None:
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        derived.ensure(entry, build, what="thing", message="building")
    assert list(entry.parent.iterdir()) == []


# -- the sweep ----------------------------------------------------------------------------------
def test_the_sweep_of_a_folder_that_cannot_be_listed_removes_nothing(tmp_path):
    assert derived.sweep(tmp_path / "absent") == []
    (tmp_path / "file").write_text("x")
    assert derived.sweep(tmp_path / "file") == []


def test_the_sweep_leaves_files_and_folders_it_could_not_remove(tmp_path, monkeypatch):
    dead = _dead_pid()
    crashed = tmp_path / f".thing.tmp-{derived.HOST}-{dead}-abc"
    crashed.mkdir()
    lookalike = tmp_path / f".thing.tmp-{derived.HOST}-{dead}-file"
    lookalike.write_text("a file, not a build")
    monkeypatch.setattr(derived.shutil, "rmtree", lambda path, ignore_errors=False: None)  # cannot remove
    assert derived.sweep(tmp_path) == []
    monkeypatch.undo()
    assert derived.sweep(tmp_path) == [crashed]
    assert lookalike.exists()


def test_an_old_folder_of_another_host_that_vanishes_meanwhile_is_not_stale(tmp_path, monkeypatch):
    other = tmp_path / ".thing.tmp-otherhost-1-abc"
    other.mkdir()
    old = other.stat().st_mtime - derived.STALE_AFTER_S - 60
    os.utime(other, (old, old))
    assert derived._stale(other)
    other.rmdir()
    assert not derived._stale(other)  # its time cannot be read: another process removed it


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(derived.os, "kill", denied)
    assert derived._pid_alive(12345)


def test_removing_a_temporary_file_that_is_already_gone_is_quiet(tmp_path):
    derived._unlink(str(tmp_path / "never-there"))
    (tmp_path / "f").write_text("x")
    derived._unlink(str(tmp_path / "f"))
    assert not (tmp_path / "f").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
