"""Behaviours pinned down by mutation testing (group A): npz token arrays, the derived cache's
entries and disk-space sentences, view captions (the mask lab's progress messages: in
tests/test_progress_reports.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import derived
from analysis.errors import CacheError
from analysis.figures import ViewSpec
from analysis.result import Capture
from analysis.views.captions import view_caption
from tests.test_aggregate import make_seq2seq, random_stack, token_seq


# -- analysis.npz -----------------------------------------------------------------------------
def test_npz_output_tokens_are_a_str_array_even_when_empty():
    """The npz's output_tokens is a str array (as documented) even for a translation of no tokens."""
    from analysis.npz import npz_arrays

    rng = np.random.default_rng(0)
    src = token_seq(["I", "</s>"], special=[False, True])
    empty = token_seq([])
    cap = Capture(model="toy", kind="seq2seq", architecture="MarianMTModel", text="I", source=src,
                  stacks={"encoder_attentions": random_stack(rng, 1, 1, 2, 2),
                          "decoder_attentions": np.zeros((1, 1, 0, 0), np.float32),
                          "cross_attentions": np.zeros((1, 1, 0, 2), np.float32)},
                  decoder_inputs=empty, outputs=empty)
    arrays = npz_arrays(cap)
    assert arrays["output_tokens"].dtype.kind == "U" and arrays["output_tokens"].shape == (0,)
    assert arrays["decoder_input_tokens"].dtype.kind == "U"


# -- analysis.derived -------------------------------------------------------------------------
def _writer(text: str):
    def build(folder: Path, reserve) -> None:
        reserve(10)
        (folder / "data.txt").write_text(text)

    return build


def test_ensure_says_it_built_a_new_entry(tmp_path):
    """ensure() of an absent entry returns an Entry marked built (and not repaired); a second call does not."""
    entry = tmp_path / "cache" / "thing"
    first = derived.ensure(entry, _writer("a"), what="thing", message="building")
    assert first == derived.Entry(entry, built=True)
    assert derived.ensure(entry, _writer("b"), what="thing", message="building") == derived.Entry(entry)


def test_a_rebuilt_entry_keeps_its_source_in_the_manifest(tmp_path):
    """A damaged entry rebuilt by ensure() records the caller's source in its manifest."""
    entry = tmp_path / "cache" / "thing"
    derived.ensure(entry, _writer("abc"), what="thing", message="building", source="model.gguf")
    (entry / "data.txt").write_text("a")  # truncated: the cheap check sees the size
    got = derived.ensure(entry, _writer("abc"), what="thing", message="building", source="model.gguf")
    assert got.built and got.repaired
    manifest = json.loads((entry / derived.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["source"] == "model.gguf"


def test_too_little_space_for_tens_of_megabytes_is_said_in_mb(tmp_path, monkeypatch):
    """The not-enough-space sentence gives a 50 MB need as '50 MB' and the shortfall as '67 MB'."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(derived.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    entry = tmp_path / "cache" / "thing"

    def build(folder: Path, reserve) -> None:
        reserve(50_000_000)

    with pytest.raises(CacheError) as exc:
        derived.ensure(entry, build, what="thing", message="building")
    assert str(exc.value) == (
        f"there is not enough disk space for the thing in {entry.parent}: it needs about 50 MB and 4 kB are "
        "free; free at least 67 MB there, or set HEADMAP_CACHE to a folder on a disk with more room"
    )


# -- analysis.views.captions --------------------------------------------------------------------
def test_alignment_caption_wording():
    """The alignment view's caption reads exactly as written."""
    assert view_caption(make_seq2seq(), ViewSpec(view="alignment")) == (
        "A word alignment read off cross-attention: cross-attention row t reads decoder input t and predicts "
        "output token t, so a translation word's lines show where in the source the model looked while "
        "producing it. In the matrix each row is a translation word and each column a source word (their "
        "pieces' weights added up on the source side and averaged on the translation side); the thick lines "
        "and boxes mark each translation word's strongest source word."
    )


def test_steps_caption_past_the_last_step_names_no_tokens():
    """A step one past the last output still gets a caption, without quoting tokens."""
    cap = make_seq2seq()
    t = len(cap.outputs)
    text = view_caption(cap, ViewSpec(view="steps", step=t))
    assert text.startswith(f"Step {t} of the translation: decoder position {t} reads decoder input {t} and "
                           f"predicts output token {t}. Top:")


def test_stats_caption_says_positional_statistics_are_empty_only_for_cross_attention():
    """The statistics caption of cross-attention adds the 'left empty' sentence for positional stats only."""
    cap = make_seq2seq()
    note = (" Cross-attention's rows and columns are different sentences, so statistics about positions are "
            "left empty.")
    assert view_caption(cap, ViewSpec(view="stats", stack="cross", stat="mean_distance")).endswith(note)
    assert note not in view_caption(cap, ViewSpec(view="stats", stack="cross", stat="entropy"))
    assert note not in view_caption(cap, ViewSpec(view="stats", stack="encoder", stat="mean_distance"))
