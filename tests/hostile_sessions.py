"""Hostile and damaged ``.headmap`` files, built from valid sessions (tests/test_session.py and the
window's tests).

Each builder ``f(folder) -> Path`` writes one file into ``folder``; :data:`HOSTILE` names them
all, with the detail its refusal must give, word for word.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from analysis.result import Capture
from analysis.session import save_session
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq, token_seq


def save(folder: Path, cap: Capture, name: str = "s.headmap", **kw) -> Path:
    return save_session(folder / name, cap, model_ref=kw.get("model_ref", "bundled:minilm"),
                        inputs=kw.get("inputs", {"text": cap.text}), options=kw.get("options", {}))


def members(path: Path) -> dict[str, bytes]:
    """The raw bytes of every member of a valid session, by name (``stack__attentions.npy``)."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path: Path, files: dict[str, bytes], compressed: frozenset[str] = frozenset()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data, zipfile.ZIP_DEFLATED if name in compressed else zipfile.ZIP_STORED)
    return path


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An ``.npy`` header alone, declaring ``shape`` of ``descr``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def meta_of(path: Path) -> dict:
    return json.loads(str(np.load(io.BytesIO(members(path)["meta.npy"]))[()]))


def with_meta(folder: Path, change: Callable[[dict], object], cap: Capture | None = None) -> Path:
    """A valid session whose metadata ``change(meta)`` edited in place."""
    path = save(folder, cap or make_decoder())
    meta = meta_of(path)
    change(meta)
    files = members(path)
    files["meta.npy"] = npy(np.array(json.dumps(meta)))
    return write_zip(path, files)


def with_meta_text(folder: Path, text: str) -> Path:
    path = save(folder, make_decoder())
    files = members(path)
    files["meta.npy"] = npy(np.array(text))
    return write_zip(path, files)


def with_member(folder: Path, name: str, data: bytes | None, cap: Capture | None = None) -> Path:
    """A valid session with member ``name`` replaced by ``data`` (added when new, dropped when None)."""
    path = save(folder, cap or make_decoder())
    files = members(path)
    if data is None:
        files.pop(name)
    else:
        files[name] = data
    return write_zip(path, files)


def with_stack(folder: Path, stack: np.ndarray, maker=make_decoder, name: str = "attentions") -> Path:
    """A session saved from a capture whose stack ``name`` is ``stack`` (Capture checks nothing)."""
    cap = maker()
    return save(folder, replace(cap, stacks={**cap.stacks, name: stack}))


def declared_huge(folder: Path) -> Path:
    """A valid session whose directory says its stack member takes 3.75 GiB (it holds 1 KiB)."""
    path = save(folder, make_decoder())
    data = bytearray(path.read_bytes())
    name = b"stack__attentions.npy"
    at = data.index(b"PK\x01\x02")  # the directory entries: 46 bytes, then the name
    while data[at + 46: at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<LL", data, at + 20, 0xF0000000, 0xF0000000)  # compressed and uncompressed size
    path.write_bytes(bytes(data))
    return path


def compressed_bomb(folder: Path, mib: int = 64) -> Path:
    """A valid session whose stack member is replaced by a deflated member of ``mib`` MiB of
    zeros (a few hundred KiB in the file)."""
    path = save(folder, make_decoder())
    files = members(path)
    files["stack__attentions.npy"] = npy_header("<f4", (mib << 18,)) + bytes(mib << 20)
    return write_zip(path, files, compressed=frozenset({"stack__attentions.npy"}))


def four_terabytes(folder: Path) -> Path:
    """A stack member whose header declares 2^40 float32 weights (4 TiB) and holds 64 bytes."""
    return with_member(folder, "stack__attentions.npy", npy_header("<f4", (1024, 1024, 1024, 1024)) + bytes(64))


def nested(folder: Path, depth: int = 100_000) -> Path:
    meta = meta_of(save(folder, make_decoder()))
    text = json.dumps({**meta, "options": {}})
    text = text.replace('"options": {}', '"options": {"x": ' + "[" * depth + "]" * depth + "}")
    return with_meta_text(folder, text)


def _zero_tokens() -> Capture:
    cap = make_encoder()
    return replace(cap, source=token_seq([]), stacks={"attentions": np.zeros((3, 4, 0, 0), np.float32)})


def _set(*path_and_value):
    *path, value = path_and_value

    def change(meta: dict) -> None:
        d = meta
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return change


def _stack_values(value: float) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        stack = np.array(make_decoder().stacks["attentions"])
        stack[1, 2, 3, 0] = value
        return with_stack(folder, stack)

    return build


def _rows_off(folder: Path) -> Path:
    stack = np.array(make_decoder().stacks["attentions"])
    stack[1, 0, 4] *= 0.9  # weights still in 0…1, the row sums to 0.9
    return with_stack(folder, stack)


_RNG = np.random.default_rng(5)


def _normalized(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    a = _RNG.random(shape) + 0.1
    return (a / a.sum(-1, keepdims=True)).astype(dtype)


#: name → (builder, a piece of its one sentence)
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    # the archive
    "declared-huge": (declared_huge, "its members declare 3.8 GiB but the file holds 5.7 KiB"),
    "compressed": (compressed_bomb, "its member 'stack__attentions.npy' is compressed, which a session never is"),
    "four-terabytes": (four_terabytes, "its member 'stack__attentions.npy' declares 4.0 TiB of arrays, more than the 64.0 GiB a session may hold"),
    "extra-member": (lambda f: with_member(f, "notes.npy", npy(np.zeros(3))), "it holds a member 'notes.npy' that does not belong there"),
    "unnamed-stack": (lambda f: with_member(f, "stack__cross_attentions.npy", npy(_normalized((2, 3, 7, 7)))),
                      "it holds a member 'stack__cross_attentions.npy' that its metadata does not name"),
    "missing-member": (lambda f: with_member(f, "source__raw.npy", None), "the member 'source__raw.npy' is missing"),
    "pickle": (lambda f: with_member(f, "source__raw.npy", npy_header("|O", (7,)) + bytes(56)),
               "its member 'source__raw.npy' holds Python objects"),
    # the metadata
    "nested": (nested, "its metadata is nested 100002 levels deep, more than the 32 allowed"),
    "meta-not-json": (lambda f: with_meta_text(f, '{"format": "headmap-session", "x": "\\"'), "its metadata is not valid JSON (Unterminated string starting at, character 35)"),
    "kind-type": (lambda f: with_meta(f, _set("capture", "kind", 5)), "capture.kind in its metadata is a whole number, not text"),
    "prompt-type": (lambda f: with_meta(f, _set("capture", "prompt_length", "4")), "capture.prompt_length in its metadata is text, not a whole number"),
    "bool-type": (lambda f: with_meta(f, _set("capture", "generated", 1)), "capture.generated in its metadata is a whole number, not true or false"),
    "notes-type": (lambda f: with_meta(f, _set("capture", "notes", [1])), "capture.notes in its metadata is not a list of text"),
    "items-type": (lambda f: with_meta(f, _set("capture", "prediction", "items", [["rug", "high"]])),
                   "capture.prediction.items in its metadata is not a list of [label, probability] pairs"),
    "stacks-type": (lambda f: with_meta(f, _set("capture", "stacks", "attentions")), "capture.stacks in its metadata is text, not a list"),
    "inputs-type": (lambda f: with_meta(f, _set("inputs", [])), "inputs in its metadata is a list, not an object"),
    "spec-type": (lambda f: with_meta(f, _set("options", "spec", [1, 2])), "options.spec in its metadata is a list, not an object"),
    "text-type": (lambda f: with_meta(f, _set("inputs", "text", 7)), "inputs.text in its metadata is a whole number, not text or null"),
    "model-ref-null": (lambda f: with_meta(f, _set("model_ref", None)), "model_ref in its metadata is null, not text"),
    "token-style-type": (lambda f: with_meta(f, _set("capture", "token_style", 3)),
                         "capture.token_style in its metadata is a whole number, not text"),
    "unknown-key": (lambda f: with_meta(f, _set("capture", "secret", 1)), "its metadata has unexpected entries in capture: secret"),
    "unknown-kind": (lambda f: with_meta(f, _set("capture", "kind", "vision")), "its metadata names an unknown model kind 'vision'"),
    "kind-stacks": (lambda f: with_meta(f, _set("capture", "kind", "seq2seq")), "its metadata lists the stacks [attentions], not those of a seq2seq model (encoder_attentions, decoder_attentions, cross_attentions)"),
    # shapes and dtypes
    "zero-layers": (lambda f: with_stack(f, np.zeros((0, 3, 7, 7), np.float32)), "the attentions stack has 0 layers × 3 heads"),
    "zero-heads": (lambda f: with_stack(f, np.zeros((2, 0, 7, 7), np.float32)), "the attentions stack has 2 layers × 0 heads"),
    "zero-tokens": (lambda f: save(f, _zero_tokens()), "it has no source tokens"),
    "three-axes": (lambda f: with_stack(f, _normalized((2, 7, 7))), "the attentions stack has 3 axes, not [layer, head, query, key]"),
    "key-mismatch": (lambda f: with_stack(f, _normalized((2, 3, 7, 6))), "the attentions stack has 7 × 6 query × key positions, but its tokens are 7 × 7"),
    "cross-swapped": (lambda f: with_stack(f, _normalized((2, 4, 7, 6)), make_seq2seq, "cross_attentions"),
                      "the cross_attentions stack has 7 × 6 query × key positions, but its tokens are 6 × 7"),
    "float64": (lambda f: with_stack(f, _normalized((2, 3, 7, 7), np.float64)), "the attentions stack is float64, not float16 or float32"),
    "ids-int32": (lambda f: with_member(f, "source__ids.npy", npy(np.arange(7, dtype=np.int32))), "the source tokens' ids are int32, not int64"),
    "display-length": (lambda f: with_member(f, "source__display.npy", npy(np.array(["a", "b"]))),
                       "the source tokens' display have the shape (2,), unlike their ids"),
    "word-ids": (lambda f: with_member(f, "source__word_ids.npy", npy(np.full(7, -5))), "the source tokens have word numbers below -1"),
    # values
    "nan": (_stack_values(float("nan")), "the attentions stack has weights that are not numbers (NaN or infinity) in layer 1"),
    "inf": (_stack_values(float("inf")), "the attentions stack has weights that are not numbers (NaN or infinity) in layer 1"),
    "negative": (_stack_values(-2.0), "the attentions stack has weights from -2 to 1 in layer 1, outside 0–1"),
    "above-one": (_stack_values(3.0), "the attentions stack has weights from 0 to 3 in layer 1, outside 0–1"),
    "rows": (_rows_off, "rows of the attentions stack in layer 1 do not sum to 1 (off by 0.1)"),
}
