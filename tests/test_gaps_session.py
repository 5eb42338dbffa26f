"""analysis.session: behaviours no other test reached (found by branch coverage).

Pinned down here: the Headmap version a session records when the package metadata is missing
(pyproject.toml's, else ``0+unknown``); :func:`captures_equal` of stored stacks of another dtype
or shape; the refusals, word for word, of metadata that lacks a field, has a negative or too long
prompt, malformed prediction steps, is empty, is not text, is missing, is larger than allowed
(and the size just allowed) or nests deeper than the JSON parser can follow; of a seq2seq session
with fewer outputs than decoder inputs; and of a long session (opened into a store) whose maps
hold NaNs or rows that do not sum to 1, which leaves no store behind.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from analysis import session as session_module
from analysis.archive import NPY_HEADER_MAX
from analysis.errors import InputError
from analysis.session import captures_equal, headmap_version, load_session, save_session
from analysis.store import stores_root, write_stacks
from tests.hostile_sessions import (
    HOSTILE,
    _set,
    members,
    nested,
    npy,
    save,
    with_member,
    with_meta,
    with_meta_text,
)
from tests.test_aggregate import make_decoder, make_seq2seq

#: every test writes its stores into its own cache folder (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("own_cache")


def _refusal(path) -> str:
    with pytest.raises(InputError) as info:
        load_session(path)
    return str(info.value)


def _damaged(path, detail: str) -> str:
    return f"{path} is not a Headmap session or it is damaged: {detail}; open another file or save the session again"


# --------------------------------------------------------------------------------------------
# the version a session records
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pyproject", "version"), [
    ('[project]\nname = "headmap"\nversion = "9.8.7"\n', "9.8.7"),
    (None, "0+unknown"),  # no pyproject.toml
    ('[project]\nname = "headmap"\n', "0+unknown"),  # no version in it
    ("[project\nversion = ", "0+unknown"),  # not TOML
])
def test_without_package_metadata_the_version_comes_from_pyproject(tmp_path, monkeypatch, pyproject, version):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    root = tmp_path / "checkout"
    (root / "analysis").mkdir(parents=True)
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    monkeypatch.setattr(session_module, "__file__", str(root / "analysis" / "session.py"))
    assert headmap_version() == version
    path = save_session(tmp_path / "s.headmap", make_decoder(), model_ref="m", inputs={}, options={})
    assert load_session(path).headmap_version == version


# --------------------------------------------------------------------------------------------
# equality of stored stacks
# --------------------------------------------------------------------------------------------
def test_stored_stacks_of_another_dtype_or_shape_are_not_equal():
    cap = make_decoder(dtype=np.float16)
    arr = cap.stacks["attentions"]
    stored = write_stacks({"attentions": arr}).stacks["attentions"]
    fewer_layers = write_stacks({"attentions": arr[:1]}).stacks["attentions"]
    on_disk = replace(cap, stacks={"attentions": stored})
    assert captures_equal(on_disk, cap) and captures_equal(cap, on_disk)
    as_float32 = replace(cap, stacks={"attentions": stored.astype(np.float32)})
    assert not captures_equal(as_float32, on_disk) and not captures_equal(on_disk, as_float32)
    short = replace(cap, stacks={"attentions": fewer_layers})
    assert not captures_equal(short, on_disk) and not captures_equal(short, cap)


# --------------------------------------------------------------------------------------------
# damaged metadata, word for word
# --------------------------------------------------------------------------------------------
def _drop(*path):
    def change(meta: dict) -> None:
        d = meta
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]

    return change


@pytest.mark.parametrize(("change", "detail"), [
    (_drop("model_ref"), "its metadata has no model_ref"),
    (_drop("capture", "prediction", "text"), "its metadata has no capture.prediction.text"),
    (_set("capture", "prompt_length", -1), "capture.prompt_length in its metadata is negative"),
    (_set("capture", "prompt_length", 8), "its prompt of 8 tokens is longer than its 7 tokens"),
    (_set("capture", "prediction", "per_position", [[1]]),
     "capture.prediction.per_position in its metadata is not a list of [position, items]"),
    (_set("capture", "prediction", "per_position", [[1, [], []]]),
     "capture.prediction.per_position in its metadata is not a list of [position, items]"),
    (_set("capture", "prediction", "per_position", [["1", []]]),
     "capture.prediction.per_position in its metadata is not a list of [position, items]"),
    (_set("capture", "prediction", "per_position", [[True, []]]),
     "capture.prediction.per_position in its metadata is not a list of [position, items]"),
    (_set("capture", "prediction", "per_position", [{"1": []}]),
     "capture.prediction.per_position in its metadata is not a list of [position, items]"),
])
def test_damaged_metadata_says_what_is_wrong(tmp_path, change, detail):
    path = with_meta(tmp_path, change)
    assert _refusal(path) == _damaged(path, detail)


@pytest.mark.parametrize("prompt_length", [0, 7])
def test_a_prompt_of_no_tokens_or_of_all_of_them_is_accepted(tmp_path, prompt_length):
    path = with_meta(tmp_path, _set("capture", "prompt_length", prompt_length))
    assert load_session(path).capture.prompt_length == prompt_length


@pytest.mark.parametrize(("member", "detail"), [
    (None, "it has no Headmap session metadata"),
    (npy(np.array(5)), "the metadata is not text"),
    (npy(np.array(["{}"])), "the metadata is not text"),
])
def test_missing_metadata_or_metadata_that_is_not_text_is_refused(tmp_path, member, detail):
    path = with_member(tmp_path, "meta.npy", member)
    assert _refusal(path) == _damaged(path, detail)


def test_empty_metadata_is_not_valid_json(tmp_path):
    path = with_meta_text(tmp_path, "")
    assert _refusal(path) == _damaged(path, "its metadata is not valid JSON (Expecting value, character 0)")


def test_metadata_larger_than_allowed_is_refused_by_its_size(tmp_path, monkeypatch):
    path = save(tmp_path, make_decoder(), inputs={"text": "a long text " * 2000})  # ~100 KiB of metadata
    with zipfile.ZipFile(path) as z:
        size = z.getinfo("meta.npy").file_size
    monkeypatch.setattr(session_module, "MAX_META_BYTES", size - NPY_HEADER_MAX)  # just allowed
    assert load_session(path).model_ref == "bundled:minilm"
    monkeypatch.setattr(session_module, "MAX_META_BYTES", size - NPY_HEADER_MAX - 1)
    assert _refusal(path) == _damaged(
        path, f"its metadata takes {size / 1024:.1f} KiB, more than the "
        f"{(size - NPY_HEADER_MAX - 1) / 1024:.1f} KiB a session's metadata may take")


def test_metadata_nested_deeper_than_the_parser_follows_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "MAX_META_DEPTH", 10**9)  # past the depth check: the parser's own limit
    path = nested(tmp_path)
    assert _refusal(path) == _damaged(path, "its metadata is nested too deeply")


def test_fewer_outputs_than_decoder_inputs_is_refused(tmp_path):
    path = save(tmp_path, make_seq2seq())
    files = members(path)
    for part in ("ids", "raw", "display", "special", "word_ids"):
        arr = np.load(io.BytesIO(files[f"outputs__{part}.npy"]), allow_pickle=False)
        files[f"outputs__{part}.npy"] = npy(arr[:-1])
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data, zipfile.ZIP_STORED)
    assert _refusal(path) == _damaged(path, "it has 6 decoder inputs but 5 outputs")


# --------------------------------------------------------------------------------------------
# long sessions: the maps are checked as they are copied into a store
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nan", "inf", "rows"])
def test_a_long_session_with_weights_that_are_no_softmax_is_refused_and_leaves_no_store(tmp_path, monkeypatch, name):
    build, detail = HOSTILE[name]
    path = build(tmp_path)
    monkeypatch.setenv("HEADMAP_STORE", "1")  # opened as a long capture: into a store
    assert _refusal(path) == _damaged(path, detail)
    root = stores_root()
    assert not root.exists() or os.listdir(root) == []
    monkeypatch.setenv("HEADMAP_STORE", "0")
    assert _refusal(path) == _damaged(path, detail)  # the same sentence as in memory


def test_a_long_session_that_is_sound_opens_from_its_store(tmp_path, monkeypatch):
    cap = make_decoder(dtype=np.float16)
    path = save(tmp_path, cap)
    monkeypatch.setenv("HEADMAP_STORE", "1")
    opened = load_session(path).capture
    assert opened.stored and captures_equal(opened, cap)
