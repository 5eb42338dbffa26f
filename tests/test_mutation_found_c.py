"""Behaviours pinned down by mutation testing (group C): what a hub download asks for and the
remote-code message (the GGUF rebuild stage lives in test_derived_cache.py, the store's in
test_store.py, beside their fixtures)."""

from __future__ import annotations

import pytest

from analysis import loader
from analysis.errors import RemoteCodeError
from analysis.loader import load_model, resolve_reference


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
