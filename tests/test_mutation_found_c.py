"""Behaviours pinned down by mutation testing (group C): what a hub download asks for, the progress
stage of a rebuilt GGUF copy, the remote-code message, a disowned store, regions of small stored
maps, and the writer's O_DIRECT descriptor being closed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import loader
from analysis.errors import RemoteCodeError
from analysis.loader import load_model, resolve_reference
from analysis.pyramid import pool
from analysis.store import StoreWriter, write_stacks
from analysis.tasks import TaskState
from tests.tiny_models import build_tiny_gguf


# --------------------------------------------------------------------------------------------
# loader
# --------------------------------------------------------------------------------------------
def test_a_hub_download_asks_only_for_the_files_a_checkpoint_needs(tmp_path, monkeypatch):
    """A hub id missing from the cache is downloaded with the allow-list (no pickle weights, no extras)."""
    import huggingface_hub

    calls: list[dict] = []
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model.safetensors").write_bytes(b"")

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(dict(kwargs, repo_id=repo_id))
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not in the cache")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(loader, "hub_reachable", lambda timeout=2.0: True)
    res = resolve_reference("someone/tiny-model")
    assert res.folder == snap
    download = [c for c in calls if not c.get("local_files_only")]
    assert len(download) == 1 and download[0]["repo_id"] == "someone/tiny-model"
    patterns = download[0]["allow_patterns"]
    assert patterns is not None and "*.safetensors" in patterns and "*.json" in patterns
    assert "*.bin" not in patterns


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_model_dir) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_model_dir("llama"))


def test_rebuilding_a_damaged_gguf_copy_reports_the_dequantize_stage(tmp_path, monkeypatch, tiny_gguf):
    """A damaged dequantized copy found after a failed load is rebuilt under progress stage 'dequantize'."""
    from analysis import derived

    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
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


def test_a_config_that_demands_remote_code_is_one_sentence_naming_the_model(tiny_model_dir, monkeypatch):
    """When transformers asks for trust_remote_code, the error names the model and the setting."""
    import transformers

    def demands_code(*args, **kwargs):
        raise ValueError("Loading this model requires you to execute custom code; pass trust_remote_code=True")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", demands_code)
    folder = str(tiny_model_dir("llama"))
    with pytest.raises(RemoteCodeError) as info:
        load_model(folder, device="cpu")
    assert str(info.value) == (f"{folder} needs custom code (trust_remote_code) to load; "
                               "enable it only if you trust its author")


# --------------------------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------------------------
@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_disowned_store_closes_and_keeps_its_folder(own_cache):
    """After disown, close() closes the store without error and leaves its folder for the new owner."""
    st = write_stacks({"attentions": np.full((1, 1, 4, 4), 0.25, np.float32)})
    try:
        assert st.owned
        st.disown()
        assert not st.owned
        st.close()
        assert st.closed and st.path.is_dir()
    finally:
        shutil.rmtree(st.path, ignore_errors=True)


def test_regions_of_coarse_levels_of_a_small_stored_map(own_cache):
    """A map small enough to store no levels still serves regions of levels above 1 (pooled from the map)."""
    rng = np.random.default_rng(5)
    arr = rng.random((1, 2, 20, 30)).astype(np.float16)  # at most 32 a side: no stored levels
    st = write_stacks({"attentions": arr})
    try:
        stack = st.stacks["attentions"]
        assert stack.levels == ()
        src = stack.map_source(0, 1)
        for k in (2, 3):
            want = pool(arr[0, 1].astype(np.float32), 2**k)
            np.testing.assert_array_equal(src.region(k, 1, 3, 0, 4), want[1:3, 0:4], err_msg=f"level {k}")
    finally:
        st.close()


def test_the_writers_direct_descriptor_is_closed_with_the_store(own_cache):
    """No descriptor of this process still points into a store once it is written and closed."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    arr = np.random.default_rng(6).random((1, 2, 20, 30)).astype(np.float32)
    with StoreWriter() as writer:
        writer.begin("attentions", arr.shape)
        writer.write("attentions", 0, 0, arr[0])
        st = writer.finish()
    folder = str(st.path)
    np.testing.assert_array_equal(np.asarray(st.stacks["attentions"]), arr.astype(np.float16))
    st.close()
    assert not os.path.exists(folder)

    def target(fd: str) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    left = [t for t in map(target, os.listdir("/proc/self/fd")) if t.startswith(folder)]
    assert left == []
