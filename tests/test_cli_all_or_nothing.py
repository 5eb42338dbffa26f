"""The CLI's promise: one invocation's outputs appear together or not at all (in-process, through
``analysis.cli.main``, so that a writer can be made to fail after another one succeeded)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.cli import main

TEXT = "I like this course"
PAIR = "the students in this course are reading a long book"
OLD = {"x.npz": b"old npz", "a.txt": b"old alignment", "s.csv": b"old stats", "f-L00.png": b"old layer 0",
       "f-L01.png": b"old layer 1", "m.json": b"old report", "x.headmap": b"old session"}


def outputs(folder: Path) -> list[str]:
    return ["--export-npz", str(folder / "x.npz"), "--export-alignment", str(folder / "a.txt"),
            "--export-stats", str(folder / "s.csv"), "--export-png", str(folder / "f.png"), "--all-layers",
            "--view", "head", "--dpi", "72", "--pair", PAIR, "--mask-report", str(folder / "m.json"),
            "--save-session", str(folder / "x.headmap")]


@pytest.fixture
def folder(tmp_path) -> Path:
    """An output folder where every output of :func:`outputs` already exists with old bytes."""
    out = tmp_path / "out"
    out.mkdir()
    for name, data in OLD.items():
        (out / name).write_bytes(data)
    return out


def run(model: Path, *args: str) -> int:
    return main(["--model", str(model), "--text", TEXT, "--generate", *args])


def assert_untouched(folder: Path, capsys, needle: str) -> None:
    """One error line naming ``needle``; the folder holds exactly the old outputs, with their old bytes."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert sorted(p.name for p in folder.iterdir()) == sorted(OLD)  # no new file, no temp file
    regular = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert regular == {name: data for name, data in OLD.items() if name in regular}


def test_a_run_replaces_every_output_together(tiny_model_dir, folder, capsys):
    os.chmod(folder / "s.csv", 0o640)
    assert run(tiny_model_dir("marian"), *outputs(folder)) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == sorted(OLD)  # no temp file left
    for name, old in OLD.items():
        assert (folder / name).read_bytes() != old, name
    with np.load(folder / "x.npz", allow_pickle=False) as z:
        assert z["cross_attentions"].shape[:2] == (2, 4)
    assert (folder / "f-L01.png").read_bytes()[:4] == b"\x89PNG"
    assert stat.S_IMODE(os.stat(folder / "s.csv").st_mode) == 0o640


def test_a_second_output_that_cannot_be_written_leaves_every_file_as_it_was(tiny_model_dir, folder, capsys):
    (folder / "s.csv").unlink()
    os.mkfifo(folder / "s.csv")  # refused after the npz and the alignment were written
    assert run(tiny_model_dir("marian"), *outputs(folder)) == 2
    assert stat.S_ISFIFO(os.lstat(folder / "s.csv").st_mode)
    assert_untouched(folder, capsys, "s.csv: it is a named pipe (FIFO)")
    assert len([p for p in folder.iterdir() if p.is_file()]) == len(OLD) - 1


def test_a_full_disk_at_the_last_output_leaves_every_file_as_it_was(tiny_model_dir, folder, capsys, monkeypatch):
    real_savez = np.savez
    calls = []

    def savez(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the npz went fine; the session (the last output) hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", savez)
    assert run(tiny_model_dir("marian"), *outputs(folder)) == 2
    assert len(calls) == 2
    assert_untouched(folder, capsys, "No space left on device")


def test_a_writer_that_raises_after_others_succeeded_leaves_every_file_as_it_was(tiny_model_dir, folder, capsys,
                                                                                  monkeypatch):
    import analysis.masks

    def broken(report, path):
        raise RuntimeError("the report writer broke")

    monkeypatch.setattr(analysis.masks, "write_mask_report", broken)
    assert run(tiny_model_dir("marian"), *outputs(folder)) == 1
    assert_untouched(folder, capsys, "the report writer broke")


def test_all_layers_failing_at_the_second_layer_leaves_every_file_as_it_was(tiny_model_dir, folder, capsys,
                                                                             monkeypatch):
    real_savefig = Figure.savefig
    calls = []

    def savefig(self, fname, *args, **kwargs):
        calls.append(fname)
        if len(calls) == 2:
            Path(fname).write_bytes(b"\x89PN")  # a few bytes, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    assert run(tiny_model_dir("marian"), *outputs(folder)) == 2
    assert len(calls) == 2
    assert_untouched(folder, capsys, "f-L01.png: No space left on device")
