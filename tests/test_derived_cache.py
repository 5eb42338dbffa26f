"""Self-healing derived caches (analysis.derived): the dequantized copy of a GGUF model is built aside
and renamed into place, records its files, is checked on every use, rebuilt with a notice when
damaged, and a full or read-only cache is one sentence with nothing left behind.

Every test has its own ``HEADMAP_CACHE`` under ``tmp_path``: the user's cache (and the bundled
SmolLM2 copy other tests reuse) is never touched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import derived
from analysis.capture import capture
from analysis.errors import CacheError
from analysis.loader import load_model
from analysis.tasks import TaskState
from tests.tiny_models import build_tiny_gguf

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny llama fixture as an F32 GGUF file (dequantized, it equals the llama checkpoint)."""
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_model_dir("llama"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HEADMAP_CACHE", str(folder))
    return folder


def _load(gguf: Path):
    """``load_model`` of ``gguf`` on the CPU, with the progress messages it reported."""
    messages: list[str] = []
    lm = load_model(str(gguf), device="cpu", task=TaskState(lambda stage, fraction, msg: messages.append(msg)))
    return lm, messages


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "gguf").iterdir())


def _rebuilt(lm, messages: list[str], what: str) -> None:
    """The notes and the progress messages say that the cached copy was damaged and rebuilt."""
    note = next(n for n in lm.notes if "rebuilt" in n)
    assert "cached dequantized copy of tiny.gguf was damaged" in note and what in note
    assert any("damaged" in m and "rebuilding" in m for m in messages), messages
    assert "rebuilt" in messages[-1]
    assert "download or copy" not in " ".join(lm.notes)


def test_the_dequantized_copy_records_its_files_and_equals_the_checkpoint(cache, tiny_gguf, loaded):
    events: list[tuple[str, float | None, str]] = []
    lm = load_model(str(tiny_gguf), device="cpu", task=TaskState(lambda *event: events.append(event)))
    # the progress says each phase of the first load, in order
    assert events == [
        ("resolve", 0.0, f"finding {tiny_gguf}…"),
        ("dequantize", None, "dequantizing tiny.gguf (once; reused next time)…"),
        ("dequantize", 0.9, "writing the dequantized cache…"),
        ("load", 0.1, "reading the config…"),
        ("load", 0.3, "loading the tokenizer…"),
        ("load", 0.5, "loading the weights…"),
        ("ready", 1.0, f"loaded {tiny_gguf}"),
    ]
    entry = lm.path
    assert entry.parent == cache / "gguf" and _entries(cache) == [entry.name]  # no temp folder left
    manifest = json.loads((entry / derived.MANIFEST).read_text())
    files = manifest["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    # the copy is an ordinary checkpoint folder: its config names its model class, unquantized
    config = json.loads((entry / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    for name, rec in files.items():
        assert rec["size"] == (entry / name).stat().st_size
        assert rec["sha256"] == derived.sha256_of(entry / name)
    assert lm.notes == []
    # the dequantized model is the llama checkpoint it was written from
    cap, ref = capture(lm, TEXT), capture(loaded("llama"), TEXT)
    assert cap.source.ids.tolist() == ref.source.ids.tolist()
    np.testing.assert_array_equal(cap.attention(), ref.attention())

    # the second load reuses it: no rebuild, no dequantizing
    mtime = (entry / "model.safetensors").stat().st_mtime_ns
    again, messages = _load(tiny_gguf)
    assert again.path == entry and again.notes == []
    assert not any("dequantiz" in m for m in messages)
    assert (entry / "model.safetensors").stat().st_mtime_ns == mtime


def test_truncated_weights_are_rebuilt_with_a_notice(cache, tiny_gguf):
    entry = _load(tiny_gguf)[0].path
    weights = entry / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])  # what a crash or a full disk leaves
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, f"model.safetensors is {len(good) // 3:,} bytes but should be {len(good):,}")
    assert weights.read_bytes() == good
    assert _entries(cache) == [entry.name]
    assert capture(lm, TEXT).shape()[0] == 2


def test_a_missing_file_is_rebuilt(cache, tiny_gguf):
    entry = _load(tiny_gguf)[0].path
    (entry / "tokenizer.json").unlink()
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, "tokenizer.json is missing")
    assert (entry / "tokenizer.json").exists()


def test_a_changed_byte_of_the_same_size_is_caught_by_the_full_check_after_the_load_fails(cache, tiny_gguf):
    entry = _load(tiny_gguf)[0].path
    weights = entry / "model.safetensors"
    good = weights.read_bytes()
    st = weights.stat()
    bad = bytearray(good)
    bad[9] = 0xFF  # inside the JSON header: safetensors cannot read the file
    weights.write_bytes(bytes(bad))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same time: the cheap check passes
    assert derived.inspect(entry) is None
    assert derived.inspect(entry, full=True) == "model.safetensors does not match its recorded sha256"
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, "model.safetensors does not match its recorded sha256")
    assert weights.read_bytes() == good


def test_a_rewritten_file_is_hashed_even_when_it_still_loads(cache, tiny_gguf):
    """A file whose time changed is hashed on use: a changed weight of the same size is found before
    it could draw wrong maps."""
    entry = _load(tiny_gguf)[0].path
    weights = entry / "model.safetensors"
    good = weights.read_bytes()
    bad = bytearray(good)
    bad[-3] ^= 0x40  # a weight's byte: the file still loads
    weights.write_bytes(bytes(bad))
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, "does not match its recorded sha256")
    assert weights.read_bytes() == good


def test_a_touched_but_intact_file_is_hashed_once_and_kept(cache, tiny_gguf):
    entry = _load(tiny_gguf)[0].path
    weights = entry / "model.safetensors"
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))  # a copy without -p, a backup restore
    assert derived.inspect(entry) is None  # hashed: the bytes are right
    assert json.loads((entry / derived.MANIFEST).read_text())["files"]["model.safetensors"]["mtime_ns"] == 1_000_000_000
    lm, _ = _load(tiny_gguf)
    assert lm.notes == [] and weights.stat().st_mtime_ns == 1_000_000_000


def test_an_entry_without_manifest_or_from_before_manifests(cache, tiny_gguf):
    entry = _load(tiny_gguf)[0].path
    manifest = entry / derived.MANIFEST
    # written before manifests listed files, intact: adopted (its files recorded), not rebuilt
    manifest.write_text(json.dumps({"source": str(tiny_gguf)}))
    mtime = (entry / "model.safetensors").stat().st_mtime_ns
    lm, _ = _load(tiny_gguf)
    assert lm.notes == [] and (entry / "model.safetensors").stat().st_mtime_ns == mtime
    assert "model.safetensors" in json.loads(manifest.read_text())["files"]
    # the same, truncated: its header shows it
    manifest.write_text(json.dumps({"source": str(tiny_gguf)}))
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, "model.safetensors is")
    # no manifest at all: never completed
    manifest.unlink()
    lm, messages = _load(tiny_gguf)
    _rebuilt(lm, messages, "never completed")


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only; as root (where permission bits do not apply) the kernel's answer to
    a non-root user is simulated where Headmap creates folders there."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    real_mkdtemp = derived.tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(derived.tempfile, "mkdtemp", mkdtemp)


def test_a_read_only_cache_is_one_sentence_naming_the_folder_and_headmap_cache(cache, tiny_gguf, monkeypatch):
    (cache / "gguf").mkdir(parents=True)
    _read_only(monkeypatch, cache / "gguf")
    try:
        with pytest.raises(CacheError) as exc:
            load_model(str(tiny_gguf), device="cpu")
    finally:
        (cache / "gguf").chmod(0o755)
    msg = str(exc.value)
    assert f"cache folder {cache / 'gguf'}" in msg and "HEADMAP_CACHE" in msg and "writable" in msg, msg
    assert "\n" not in msg and "unexpected" not in msg
    assert _entries(cache) == []  # no temp folder left


def test_a_damaged_copy_in_a_read_only_cache_says_so(cache, tiny_gguf, monkeypatch):
    entry = _load(tiny_gguf)[0].path
    (entry / "tokenizer.json").unlink()
    _read_only(monkeypatch, cache / "gguf")
    try:
        with pytest.raises(CacheError, match="cannot write a new dequantized copy of tiny.gguf \\(the cached one is "
                           "damaged: tokenizer.json is missing\\) into its cache folder .*HEADMAP_CACHE"):
            load_model(str(tiny_gguf), device="cpu")
    finally:
        (cache / "gguf").chmod(0o755)
    assert _entries(cache) == [entry.name]


def _enospc_writer(monkeypatch) -> None:
    """safetensors' writer on a full disk: part of the file, then its own error (not an OSError)."""
    import safetensors.torch
    from safetensors import SafetensorError

    def save_model(model, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 1000)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)


def test_a_full_disk_says_how_much_space_is_needed_and_where(cache, tiny_gguf, monkeypatch):
    _enospc_writer(monkeypatch)
    with pytest.raises(CacheError) as exc:
        load_model(str(tiny_gguf), device="cpu")
    msg = str(exc.value)
    assert msg.startswith(f"there is not enough disk space for the dequantized copy of tiny.gguf in {cache / 'gguf'}")
    assert re.search(r": it needs about 1[0-9]{2} kB and [0-9,.]+ [kMG]B are free; ", msg), msg
    assert msg.endswith("or set HEADMAP_CACHE to a folder on a disk with more room")
    assert "\n" not in msg and "SafetensorError" not in msg
    assert _entries(cache) == []  # the half-written temp folder is gone


def test_too_little_free_space_is_refused_before_writing(cache, tiny_gguf, monkeypatch):
    usage = shutil.disk_usage(ROOT)
    monkeypatch.setattr(derived.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    writes = []
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_model", lambda *a, **k: writes.append(a))
    with pytest.raises(CacheError, match=r"needs about .* and 4 kB are free; free at least .* there, or set HEADMAP_CACHE"):
        load_model(str(tiny_gguf), device="cpu")
    assert writes == [] and _entries(cache) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_folders_of_crashed_builds_are_swept(cache, tiny_gguf):
    gguf_dir = cache / "gguf"
    gguf_dir.mkdir(parents=True)
    dead = _dead_pid()
    crashed = gguf_dir / f".tiny-abc.tmp-{derived.HOST}-{dead}-x1y2z3"
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"\0" * 100)  # a half build
    old_style = gguf_dir / f"tiny-abc.tmp{dead}"  # how the loader named them before
    old_style.mkdir()
    discarded = gguf_dir / f".tiny-abc.old-{derived.HOST}-{dead}-q9"
    discarded.mkdir()
    running = gguf_dir / f".tiny-abc.tmp-{derived.HOST}-{os.getppid()}-live"  # its process still runs
    running.mkdir()
    other_host = gguf_dir / f".tiny-abc.tmp-otherhost-{dead}-far"  # a shared cache: only by age
    other_host.mkdir()
    unrelated = gguf_dir / "notes"
    unrelated.mkdir()

    lm, _ = _load(tiny_gguf)
    assert sorted(_entries(cache)) == sorted([lm.path.name, running.name, other_host.name, unrelated.name])
    old = os.stat(other_host).st_mtime - derived.STALE_AFTER_S - 60
    os.utime(other_host, (old, old))
    assert derived.sweep(gguf_dir) == [other_host]


def _writer(tag: str, log: list[str], during=None):
    def build(folder: Path, reserve) -> None:
        reserve(10)
        (folder / "data.txt").write_text(tag)
        log.append(tag)
        if during is not None:
            during()

    return build


def test_a_second_builder_keeps_the_first_complete_copy(tmp_path):
    """Two processes build the same entry at once: the one that finishes second drops its own copy."""
    entry = tmp_path / "cache" / "thing"
    log: list[str] = []
    # B starts and finishes while A is still building
    inner = _writer("B", log)
    outer = _writer("A", log, during=lambda: derived.ensure(entry, inner, what="the thing", message="building"))
    result = derived.ensure(entry, outer, what="the thing", message="building")
    assert log == ["A", "B"]
    assert result.path == entry and (entry / "data.txt").read_text() == "B"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["thing"]
    assert derived.inspect(entry) is None


def test_a_builder_that_fails_leaves_nothing(tmp_path):
    entry = tmp_path / "cache" / "thing"

    def build(folder: Path, reserve) -> None:
        (folder / "half").write_text("x")
        raise RuntimeError("the deriver failed")

    with pytest.raises(RuntimeError, match="the deriver failed"):
        derived.ensure(entry, build, what="the thing", message="building")
    assert list(entry.parent.iterdir()) == []


def test_cli_rebuilds_the_damaged_copy_and_says_so(cache, tiny_gguf, tmp_path):
    entry = _load(tiny_gguf)[0].path
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    out = tmp_path / "x.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HEADMAP_CACHE=str(cache))
    res = subprocess.run([sys.executable, "main.py", "--model", str(tiny_gguf), "--text", TEXT, "--device", "cpu",
                          "--export-npz", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: Headmap's cached dequantized copy of tiny.gguf was damaged")
    assert "rebuilt" in lines[0] and out.exists()


def test_rebuilding_a_damaged_gguf_copy_reports_the_dequantize_stage(cache, tiny_gguf):
    """A damaged dequantized copy found after a failed load is rebuilt under progress stage 'dequantize'."""
    entry = load_model(str(tiny_gguf), device="cpu").path
    weights = entry / "model.safetensors"
    st = weights.stat()
    bad = bytearray(weights.read_bytes())
    bad[9] = 0xFF  # inside the JSON header: the load fails, the cheap check passes
    weights.write_bytes(bytes(bad))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert derived.inspect(entry) is None
    reports: list[tuple[str, str]] = []
    lm = load_model(str(tiny_gguf), device="cpu", task=TaskState(lambda stage, fraction, msg: reports.append((stage, msg))))
    assert any("rebuilt" in n for n in lm.notes)
    rebuilding = [stage for stage, msg in reports if "damaged" in msg and "rebuilding" in msg]
    assert rebuilding == ["dequantize"], reports


# --------------------------------------------------------------------------------------------
# what the errors say, word for word
# --------------------------------------------------------------------------------------------
def _cache_error(entry: Path, build) -> str:
    with pytest.raises(CacheError) as excinfo:
        derived.ensure(entry, build, what="copy of data.bin", message="building")
    assert not [p for p in entry.parent.iterdir() if p.name != entry.name]  # no temp folder left
    return str(excinfo.value)


def _failing(exc: BaseException, need: int | None = None):
    def build(folder: Path, reserve) -> None:
        if need is not None:
            reserve(need)
        (folder / "data.bin").write_bytes(b"\0" * 100)
        raise exc

    return build


def test_too_little_room_says_how_much_is_needed_free_and_short(tmp_path, monkeypatch):
    usage = shutil.disk_usage(ROOT)
    monkeypatch.setattr(derived.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    entry = tmp_path / "cache" / "thing"
    # 2 MB needed + the 16 MiB margin − 4 kB free: 19 MB short
    assert _cache_error(entry, _failing(AssertionError("never reached"), need=2_000_000)) == (
        f"there is not enough disk space for the copy of data.bin in {entry.parent}: it needs about 2 MB and "
        "4 kB are free; free at least 19 MB there, or set HEADMAP_CACHE to a folder on a disk with more room"
    )


def test_a_full_disk_with_room_by_the_count_says_to_free_some_space(tmp_path, monkeypatch):
    usage = shutil.disk_usage(ROOT)
    monkeypatch.setattr(derived.shutil, "disk_usage", lambda path: usage._replace(free=5 * 10**9))
    entry = tmp_path / "cache" / "thing"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _cache_error(entry, _failing(full, need=2_000_000)) == (
        f"there is not enough disk space for the copy of data.bin in {entry.parent}: it needs about 2 MB and "
        "5.0 GB are free; free some space there, or set HEADMAP_CACHE to a folder on a disk with more room"
    )
    assert _cache_error(entry, _failing(full)) == (  # the builder did not say how much it needs
        f"the disk holding {entry.parent} is full (5.0 GB free) while writing the copy of data.bin; free some "
        "space there, or set HEADMAP_CACHE to a folder on a disk with more room"
    )


@pytest.mark.parametrize(
    ("exc", "why"),
    [
        (OSError(errno.EROFS, os.strerror(errno.EROFS)), "it is on a read-only disk"),
        (OSError(errno.EACCES, os.strerror(errno.EACCES)), "it is not writable"),
        (RuntimeError("IoError(Os { code: 13, kind: PermissionDenied })... os error 13"), "it is not writable"),
    ],
)
def test_an_unwritable_cache_says_why_and_what_to_do(exc, why, tmp_path):
    entry = tmp_path / "cache" / "thing"
    assert _cache_error(entry, _failing(exc)) == (
        f"Headmap cannot write the copy of data.bin into its cache folder {entry.parent} ({why}); make that "
        "folder writable, or set HEADMAP_CACHE to a writable folder"
    )


def test_a_damaged_entry_that_cannot_be_rebuilt_says_what_was_damaged(tmp_path):
    entry = tmp_path / "cache" / "thing"
    derived.ensure(entry, _writer("A", []), what="copy of data.bin", message="building")
    (entry / "data.txt").unlink()
    assert _cache_error(entry, _failing(OSError(errno.EACCES, os.strerror(errno.EACCES)))) == (
        "Headmap cannot write a new copy of data.bin (the cached one is damaged: data.txt is missing) into its "
        f"cache folder {entry.parent} (it is not writable); make that folder writable, or set HEADMAP_CACHE to a "
        "writable folder"
    )
    assert not entry.exists()  # the damaged copy was discarded before the new one failed
    derived.ensure(entry, _writer("B", []), what="copy of data.bin", message="building")
    (entry / "data.txt").write_text("changed")  # one byte ('B') became seven
    rebuilt = derived.ensure(entry, _writer("C", []), what="copy of data.bin", message="building")
    assert rebuilt.repaired == (
        "Headmap's cached copy of data.bin was damaged (data.txt is 7 bytes but should be 1) and has been rebuilt"
    )
