"""The CLI on long captures kept on disk: exports read the store, npz files over 1 GB need --force,
and no store is left behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from analysis import npz as npz_mod
from analysis.cli import main
from analysis.store import stores_root

TEXT = "The students are reading and writing and thinking about attention heads " * 3


@pytest.fixture(autouse=True)
def stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HEADMAP_STORE", "1")  # tiny models' captures are far under the size stored by default


def _left() -> list[str]:
    return os.listdir(stores_root()) if stores_root().exists() else []


@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_a_stored_capture_exports_the_same_npz_as_one_in_memory(arch, tiny_model_dir, tmp_path, monkeypatch, capsys):
    model = str(tiny_model_dir(arch))
    extra = ["--target", "Les étudiants lisent"] if arch == "marian" else []
    args = ["--model", model, "--text", TEXT, *extra, "--quiet"]
    assert main([*args, "--export-npz", str(tmp_path / "disk.npz"), "--export-stats", str(tmp_path / "disk.csv"),
                 "--export-png", str(tmp_path / "disk.png"), "--view", "model"]) == 0
    assert _left() == []  # the CLI's store goes with its capture
    monkeypatch.setenv("HEADMAP_STORE", "0")
    assert main([*args, "--export-npz", str(tmp_path / "mem.npz"), "--export-stats", str(tmp_path / "mem.csv")]) == 0
    disk, mem = np.load(tmp_path / "disk.npz"), np.load(tmp_path / "mem.npz")
    assert sorted(disk.files) == sorted(mem.files)
    for key in mem.files:
        a, b = mem[key], disk[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        if a.dtype == np.float32:  # the stored maps are float16: within its rounding
            np.testing.assert_allclose(b, a, rtol=2**-11, atol=2**-25, err_msg=key)
        else:
            np.testing.assert_array_equal(b, a, err_msg=key)
    assert (tmp_path / "disk.csv").read_text().splitlines()[0] == (tmp_path / "mem.csv").read_text().splitlines()[0]


def test_an_npz_over_the_limit_needs_force(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(npz_mod, "FORCE_BYTES", 1000)
    out = tmp_path / "big.npz"
    args = ["--model", str(tiny_model_dir("llama")), "--text", TEXT, "--quiet", "--export-npz", str(out)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GB of float32 attention maps" in err[0] and "--force" in err[0]
    assert not out.exists() and _left() == []
    assert main([*args, "--force"]) == 0
    assert np.load(out)["attentions"].dtype == np.float32


def test_words_of_a_stored_capture_are_refused_in_one_sentence(tiny_model_dir, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir("llama")), "--text", TEXT, "--quiet", "--group", "words",
            "--export-npz", str(tmp_path / "w.npz")]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "words are not available" in err[0] and "--group pieces" in err[0]
