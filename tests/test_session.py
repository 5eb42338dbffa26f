"""analysis.session: one .headmap file round-trips a capture exactly; damage is an InputError."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from analysis.errors import ExportError, InputError
from analysis.figures import ViewSpec, build_figure
from analysis.result import Prediction
from analysis.session import FORMAT, captures_equal, load_session, save_session
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq, token_seq

OPTIONS = {"view": "head", "layer": 1, "head": None, "theme": "dark", "hide_special": True}
INPUTS = {"text": "나는 이 강의를 좋아한다", "target": None}


def _save(path, cap, **kw):
    return save_session(
        path, cap, model_ref=kw.get("model_ref", "bundled:minilm"), inputs=INPUTS, options=OPTIONS
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("maker", [make_encoder, make_decoder, make_seq2seq])
def test_round_trip_is_exact(tmp_path, maker, dtype):
    cap = maker(dtype=dtype)
    path = _save(tmp_path / "s.headmap", cap)
    assert path == tmp_path / "s.headmap"
    assert [p.name for p in tmp_path.iterdir()] == ["s.headmap"]  # no temp file, no ".npz" added
    session = load_session(path)
    assert captures_equal(session.capture, cap)
    for name, arr in session.capture.stacks.items():
        assert arr.dtype == dtype and not arr.flags.writeable
        np.testing.assert_array_equal(arr, cap.stacks[name])
    assert session.capture.prediction == cap.prediction
    assert session.model_ref == "bundled:minilm"
    assert dict(session.inputs) == INPUTS and dict(session.options) == OPTIONS
    assert datetime.fromisoformat(session.created).tzinfo is not None
    assert isinstance(session.headmap_version, str) and session.headmap_version


def test_reopened_session_draws_without_a_model(tmp_path):
    cap = make_seq2seq()
    session = load_session(_save(tmp_path / "s.headmap", cap))
    fig = build_figure(session.capture, ViewSpec(stack="cross", layer=1, head=None))
    assert fig.axes


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    cap = make_seq2seq(dtype=np.float16)
    path = _save(tmp_path / "s.headmap", cap)
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        assert {
            "stack__encoder_attentions",
            "stack__decoder_attentions",
            "stack__cross_attentions",
        } <= files
        for seq in ("source", "decoder_inputs", "outputs"):
            assert z[f"{seq}__ids"].dtype == np.int64
            assert z[f"{seq}__raw"].dtype.kind == "U" and z[f"{seq}__display"].dtype.kind == "U"
            assert z[f"{seq}__special"].dtype == bool
            assert z[f"{seq}__word_ids"].dtype == np.int64
        assert z["stack__cross_attentions"].dtype == np.float16
        meta_arr = z["meta"]
        assert meta_arr.ndim == 0 and meta_arr.dtype.kind == "U"
        meta = json.loads(str(meta_arr[()]))
        assert tuple(z["outputs__display"].tolist()) == cap.outputs.display
    assert meta["format"] == FORMAT
    assert meta["capture"]["prediction"]["task"] == "translation"


def test_captures_equal_notices_every_difference():
    cap = make_seq2seq()
    assert captures_equal(cap, make_seq2seq())
    stack = np.array(cap.stacks["cross_attentions"])
    stack[0, 0, 0, 0] += np.float32(1e-7)
    assert not captures_equal(cap, replace(cap, stacks={**cap.stacks, "cross_attentions": stack}))
    assert not captures_equal(cap, cap.with_stacks_dtype(np.float16))
    assert not captures_equal(cap, replace(cap, notes=("x",)))
    assert not captures_equal(
        cap, replace(cap, prediction=Prediction(task="translation", text="다른"))
    )
    other_out = token_seq(
        ["나는", "이", "강의를", "정말", "좋아해", "</s>"], special=[False] * 5 + [True]
    )
    assert not captures_equal(cap, replace(cap, outputs=other_out))
    assert not captures_equal(cap, replace(cap, decoder_inputs=None))
    stacks = dict(cap.stacks)
    stacks.pop("decoder_attentions")
    assert not captures_equal(cap, replace(cap, stacks=stacks))


def test_prediction_with_per_position_round_trips(tmp_path):
    cap = make_encoder()
    pred = Prediction(task="masked_lm", per_position=((1, (("나", 0.75), ("너", 0.125))), (3, ())))
    cap = replace(cap, prediction=pred)
    assert load_session(_save(tmp_path / "p.headmap", cap)).capture.prediction == pred


@pytest.mark.parametrize(
    "damage", ["truncate", "flip", "text", "empty", "npy", "no-meta", "bad-meta"]
)
def test_damaged_files_raise_input_error(tmp_path, damage):
    path = _save(tmp_path / "s.headmap", make_decoder())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        # flip bytes inside the first stack's data (CRC mismatch)
        i = data.index(b"stack__attentions") + 400
        path.write_bytes(data[:i] + bytes(b ^ 0xFF for b in data[i : i + 16]) + data[i + 16 :])
    elif damage == "text":
        path.write_text("hello, not a session")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif damage == "no-meta":
        with open(path, "wb") as fh:
            np.savez(fh, x=np.zeros(3))
    elif damage == "bad-meta":
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps({"format": "something else"})))
    with pytest.raises(InputError, match="is not a Headmap session or is damaged"):
        load_session(path)


def test_missing_file_and_newer_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_session(tmp_path / "nope.headmap")
    path = tmp_path / "new.headmap"
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps({"format": FORMAT, "format_version": 99})))
    with pytest.raises(InputError, match="newer Headmap"):
        load_session(path)


def test_options_must_be_json(tmp_path):
    with pytest.raises(InputError, match="cannot be saved"):
        save_session(
            tmp_path / "x.headmap",
            make_encoder(),
            model_ref="m",
            inputs={},
            options={"f": object()},
        )
    assert not list(tmp_path.iterdir())


def test_save_is_atomic(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError):
        _save(blocker / "s.headmap", make_encoder())
    good = _save(tmp_path / "s.headmap", make_encoder())
    before = good.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(ExportError, match="disk full"):
        _save(good, make_decoder())
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "s.headmap"]
