"""The README's "From Python" snippet runs as printed (issue 16).

The snippet is taken from the README itself (the first ``python`` code block under
``## From Python``) and executed with ``CHECKPOINT`` set to a tiny BERT checkpoint on disk (the
snippet's "a model you hold"), in a temporary folder, with the window's launch recorded instead
of started.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import headmap
from analysis.session import load_session

README = Path(__file__).resolve().parent.parent / "README.md"


def python_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    (code, *_) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_snippet_is_in_the_readme():
    code = python_snippet()
    for needed in ("headmap.capture(", "headmap.figure(", "headmap.head_stats(", "headmap.save_session(",
                   "headmap.load_session(", "headmap.show(", "tokenizer=tokenizer", "output_attentions=True"):
        assert needed in code, needed


def test_the_readme_python_snippet_runs(tiny_model_dir, tmp_path, monkeypatch):
    launched: list[list[str]] = []

    class Recorder:
        def __init__(self, cmd, **kwargs):
            launched.append(list(cmd))

    monkeypatch.setattr(headmap, "_popen", Recorder)
    monkeypatch.chdir(tmp_path)
    scope: dict = {"CHECKPOINT": str(tiny_model_dir("bert")), "__name__": "readme"}
    exec(compile(python_snippet(), str(README), "exec"), scope)

    first = headmap.load_session(tmp_path / "lesson.headmap")
    assert first.model == "bundled:translator-en-fr" and first.output_text == "j'aime ce cours"
    assert (tmp_path / "cross.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert scope["rows"] and {"stack", "layer", "head", "entropy"} <= set(scope["rows"][0])
    cap = scope["cap"]  # the capture of the model object
    assert cap.kind == "encoder" and cap.model.endswith("(in memory)")
    assert scope["model"].config._attn_implementation == "sdpa"
    (cmd,) = launched
    assert cmd[2] == "--open-session"
    sess = load_session(cmd[3])
    np.testing.assert_array_equal(sess.capture.stacks["attentions"], cap.stacks["attentions"])
    assert sess.options["tab"] == "Layer"
