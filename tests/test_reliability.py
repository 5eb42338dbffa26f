"""Bad inputs that are not covered elsewhere, and the no-eval/no-shell rule."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.capture import capture
from analysis.errors import InputError, ModelLoadError
from analysis.loader import load_model

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_gguf_that_fails_to_dequantize(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(2000))
    with pytest.raises(ModelLoadError, match="could not dequantize broken.gguf"):
        load_model(str(bad))
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


def test_gguf_failure_from_cli(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    out = tmp_path / "out"
    out.mkdir()
    env_cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HEADMAP_CACHE=str(env_cache))
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--model", str(bad), "--text", "hi",
                          "--export-npz", str(out / "x.npz")], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "dequantize" in res.stderr
    assert list(out.iterdir()) == []


def test_target_longer_than_positions_is_truncated(loaded):
    lm = loaded("marian")
    limit = lm.summary.max_positions
    long_target = " ".join(["cours"] * (limit * 2))
    cap = capture(lm, "I like this course", target=long_target)
    assert len(cap.outputs) <= limit
    assert any("target was truncated" in n for n in cap.notes)


def test_ten_thousand_characters_are_truncated_with_a_message(tiny_model_dir, tmp_path):
    text = ("I like this course. 나는 이 강의를 좋아한다. " * 400)[:10_000]
    out = tmp_path / "x.npz"
    res = cli("--model", str(tiny_model_dir("bert")), "--text", text, "--export-npz", str(out))
    assert res.returncode == 0, res.stderr
    assert "truncated" in res.stderr
    data = np.load(out, allow_pickle=False)
    assert data["attentions"].shape[-1] <= 64


def test_mixed_scripts_controls_emoji_rtl(tiny_model_dir, tmp_path):
    text = "I like\tthis\x07 course 😀 مرحبا שלום 나는 이 강의를 좋아한다\u200f!"
    out = tmp_path / "x.npz"
    res = cli("--model", str(tiny_model_dir("gpt2")), "--text", text, "--export-npz", str(out))
    assert res.returncode == 0, res.stderr
    tokens = "".join(np.load(out, allow_pickle=False)["input_tokens"].tolist())
    for ch in "나는이강의를좋아한다":
        assert ch in tokens
    assert not re.search("[ĠĊìëíê]", tokens)


def test_whitespace_only_text(loaded):
    with pytest.raises(InputError, match="empty"):
        capture(loaded("bert"), " \n\t ")


PATTERNS = [r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"os\.system\(", r"shell\s*=\s*True", r"os\.popen\(", r"pickle\.loads?\("]


def test_no_eval_exec_or_shell_in_the_app():
    files = [ROOT / "main.py"] + sorted((ROOT / "analysis").rglob("*.py")) + sorted((ROOT / "gui").rglob("*.py"))
    hits = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for pat in PATTERNS:
            for m in re.finditer(pat, text):
                line = text[: m.start()].count("\n") + 1
                hits.append(f"{f.relative_to(ROOT)}:{line}: {m.group(0)}")
    # the one exception: results and errors of our own model process, which arrive over a private
    # socketpair (analysis/host.py); no file, no network, nothing a user opens is ever unpickled
    host = [h for h in hits if h.startswith("analysis/host.py:") and h.endswith("pickle.loads(")]
    assert len(host) <= 3
    assert [h for h in hits if h not in host] == []
    text = (ROOT / "analysis" / "host.py").read_text(encoding="utf-8")
    assert "socket.socketpair()" in text and "Listener" not in text and "AF_INET" not in text


def test_target_language_is_forced_for_multilingual_generation(loaded):
    """M2M100/NLLB need a forced target-language token; any vocabulary token shows the mechanism."""
    from analysis.capture import language_token_id

    lm = loaded("marian")
    tok = lm.tokenizer
    word = next(t for t in ("▁cours", "▁ce", "▁j") if tok.convert_tokens_to_ids(t) != tok.unk_token_id)
    cap = capture(lm, "I like this course", generate=True, max_new_tokens=5, target_lang=word)
    assert int(cap.outputs.ids[0]) == language_token_id(tok, word) == tok.convert_tokens_to_ids(word)
    with pytest.raises(InputError, match="no language token"):
        capture(lm, "I like this course", generate=True, target_lang="xx_Nope")
