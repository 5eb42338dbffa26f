"""analysis.session: one .headmap file round-trips a capture exactly; damage is an InputError."""

from __future__ import annotations

import json
import tracemalloc
import zipfile
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from analysis import session as session_module
from analysis.archive import SafeNpz
from analysis.errors import ExportError, InputError
from analysis.figures import ViewSpec, build_figure
from analysis.result import Prediction
from analysis.session import FORMAT, captures_equal, load_session, save_session
from tests.hostile_sessions import HOSTILE, compressed_bomb
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
    with pytest.raises(InputError, match="is not a Headmap session or it is damaged"):
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


# -- untrusted files ---------------------------------------------------------------------------
#: refusals that come before any array but the metadata is read
_VALUE_CASES = {"nan", "inf", "negative", "above-one", "rows", "word-ids"}


def _one_sentence(message: str, path) -> None:
    assert "\n" not in message and message.startswith(str(path))
    assert message.endswith(("; open another file or save the session again", "; open another file"))


#: refused for their declared size, with their own sentence
_TOO_BIG = {"four-terabytes"}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_one_sentence_before_anything_big(tmp_path, monkeypatch, name):
    build, needle = HOSTILE[name]
    path = build(tmp_path)
    read: list[str] = []
    real_read = SafeNpz.read
    monkeypatch.setattr(SafeNpz, "read", lambda self, member: read.append(member.key) or real_read(self, member))
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            load_session(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    if name in _TOO_BIG:
        assert message == f"{path} is not a session Headmap can open: {needle}; open another file"
    else:
        assert message == (
            f"{path} is not a Headmap session or it is damaged: {needle}; open another file or save the session again")
    _one_sentence(message, path)
    assert peak < 16 << 20  # the file's declared sizes were never allocated
    if name not in _VALUE_CASES:
        assert set(read) <= {"meta"}  # refused before any array was read


def test_a_compressed_member_is_never_inflated(tmp_path, monkeypatch):
    path = compressed_bomb(tmp_path)
    assert path.stat().st_size < 1 << 20
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **kw: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **kw))
    with pytest.raises(InputError, match="'stack__attentions.npy' is compressed"):
        load_session(path)
    assert opened == []  # refused from the directory alone


def test_the_size_limit_is_named(tmp_path, monkeypatch):
    path = _save(tmp_path / "s.headmap", make_seq2seq())
    monkeypatch.setattr(session_module, "MAX_SESSION_BYTES", 2048)
    with pytest.raises(InputError, match=r"declares \d+\.\d KiB of arrays, more than the 2\.0 KiB a session may hold"):
        load_session(path)


def test_out_of_memory_is_one_sentence(tmp_path, monkeypatch):
    path = _save(tmp_path / "s.headmap", make_encoder())

    def no_memory(self, member):
        raise MemoryError

    monkeypatch.setattr(SafeNpz, "read", no_memory)
    with pytest.raises(InputError, match="does not fit in the memory available") as info:
        load_session(path)
    assert "\n" not in str(info.value) and info.value.__context__ is None


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rounding_of_low_precision_maps_is_accepted(tmp_path, dtype):
    # a bfloat16 model's rows may be off by up to 2^-7, which capture accepts; float16 storage
    # adds up to 2^-11: such a session still opens
    cap = make_decoder()
    stack = np.array(cap.stacks["attentions"], dtype=np.float64)
    stack[0, 0] *= 1 + 2**-7 + 2**-11
    stack[1, 1] *= 1 - 2**-7 - 2**-11
    cap = replace(cap, stacks={"attentions": stack.astype(dtype)})
    assert captures_equal(load_session(_save(tmp_path / "s.headmap", cap)).capture, cap)


def test_json_depth_skips_strings():
    for text, depth in [("{}", 1), ("[]", 1), ("1", 0), ('["[[", "\\"[", {"a": [1]}]', 3),
                        ('{"a\\\\": ["]"]}', 2), ('"\\\\\\"[["', 0), ("[" * 50 + "]" * 50, 50)]:
        assert session_module._json_depth(text) == depth, text


# -- what the errors say, word for word ---------------------------------------------------
def _refusal(call, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    return str(info.value)


def _meta_file(path, meta_text: str):
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(meta_text))
    return path


def test_a_missing_session_asks_for_a_session_file(tmp_path):
    p = tmp_path / "nope.headmap"
    assert _refusal(load_session, p) == f"{p} does not exist or is not a file; choose a .headmap session file"


def test_a_newer_session_asks_to_update(tmp_path):
    p = _meta_file(tmp_path / "new.headmap", json.dumps({"format": FORMAT, "format_version": 7}))
    assert _refusal(load_session, p) == (
        f"{p} was written by a newer Headmap (session format 7); update Headmap to open it")


@pytest.mark.parametrize(("meta", "detail"), [
    (json.dumps({"format": "other"}), "it has no Headmap session metadata"),
    ("{not json", "its metadata is not valid JSON (Expecting property name enclosed in double quotes, character 1)"),
    (json.dumps({"format": FORMAT, "format_version": 0}), "its format version is not a positive whole number"),
    ("[" * 40 + "]" * 40, "its metadata is nested 40 levels deep, more than the 32 allowed"),
])
def test_a_damaged_session_says_what_is_wrong_and_what_to_do(tmp_path, meta, detail):
    p = _meta_file(tmp_path / "bad.headmap", meta)
    assert _refusal(load_session, p) == (
        f"{p} is not a Headmap session or it is damaged: {detail}; open another file or save the session again")


def test_too_big_a_session_names_the_sizes(tmp_path, monkeypatch):
    import re

    path = _save(tmp_path / "s.headmap", make_seq2seq())
    monkeypatch.setattr(session_module, "MAX_SESSION_BYTES", 2048)
    msg = _refusal(load_session, path)
    assert re.fullmatch(re.escape(f"{path} is not a session Headmap can open: ") + r"\S.* declares \d+\.\d KiB "
                        + re.escape("of arrays, more than the 2.0 KiB a session may hold; open another file"),
                        msg), msg


def test_a_session_that_does_not_fit_in_memory_names_its_size(tmp_path, monkeypatch):
    from analysis.archive import format_bytes

    path = _save(tmp_path / "s.headmap", make_encoder())

    def no_memory(self, member):
        raise MemoryError

    monkeypatch.setattr(SafeNpz, "read", no_memory)
    assert _refusal(load_session, path) == (
        f"{path} does not fit in the memory available ({format_bytes(path.stat().st_size)}); "
        "close other programs and open it again, or open another file")


@pytest.mark.parametrize("what", ["inputs", "options"])
def test_inputs_or_options_that_are_not_json_say_what_they_may_hold(tmp_path, what):
    import re

    kwargs = {"inputs": {}, "options": {}, what: {"f": object()}}
    msg = _refusal(save_session, tmp_path / "x.headmap", make_encoder(), model_ref="m", **kwargs)
    assert re.fullmatch(f"the session {what} cannot be saved " + r"\(Object of type object is not JSON serializable\)"
                        + re.escape("; keep them to text, numbers, lists and dicts"), msg), msg


def test_a_token_ending_in_nul_cannot_be_saved(tmp_path):
    cap = make_encoder()
    raw = ("[CLS]", "a\x00", *cap.source.raw[2:])
    cap = replace(cap, source=replace(cap.source, raw=raw))
    assert _refusal(_save, tmp_path / "s.headmap", cap) == (
        "a token string ends with a NUL character and cannot be saved in a session")
