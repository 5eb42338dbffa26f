"""Save a capture and the window's state as one ``.headmap`` file; reopen it without the model.

File format (``format_version`` 1): a numpy ``.npz`` archive, uncompressed, loadable with
``np.load(path, allow_pickle=False)``:

* ``stack__<name>``              every attention stack ``[L, H, Q, K]`` in its own dtype
                                 (float32 or float16)
* ``<seq>__ids``                 int64 ``[N]``   for ``seq`` in source / decoder_inputs / outputs
* ``<seq>__raw``, ``<seq>__display``  unicode ``[N]``
* ``<seq>__special``             bool ``[N]``
* ``<seq>__word_ids``            int64 ``[N]``
* ``meta``                       0-d unicode array: JSON with the capture's scalar fields, the
                                 prediction, ``model_ref``, ``inputs``, ``options``, creation time
                                 and the Headmap version

The archive's per-member CRC catches damaged files; every problem on reading becomes an
:class:`~analysis.errors.InputError`.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .archive import NPY_HEADER_MAX, ArchiveError, Member, SafeNpz, TooBig, format_bytes
from .errors import Cancelled, InputError, a_or_an
from .fileio import atomic_write
from .result import STACK_NAMES, Capture, Prediction, TokenSeq
from .store import StoreWriter, capture_bytes, check_space, is_stored, store_wanted
from .tasks import TaskState, as_task

FORMAT = "headmap-session"
FORMAT_VERSION = 1
SUFFIX = ".headmap"
_SEQS = ("source", "decoder_inputs", "outputs")
_SEQ_PARTS = ("ids", "raw", "display", "special", "word_ids")


def headmap_version() -> str:
    """The installed Headmap version (from package metadata, else pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("headmap")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib

        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0+unknown"


@dataclass(frozen=True)
class Session:
    """A reopened session: the capture plus what is needed to show it as it was.

    Attributes
    ----------
    capture : the :class:`Capture`, equal to the one saved (see :func:`captures_equal`)
    model_ref : the model reference the capture came from (for display / re-running only)
    inputs : what the user typed (text, target, …), JSON values
    options : view and window options (layer, head, theme, …), JSON values
    created : ISO 8601 UTC time the file was written
    headmap_version : the Headmap version that wrote it
    """

    capture: Capture
    model_ref: str
    inputs: Mapping[str, Any]
    options: Mapping[str, Any]
    created: str
    headmap_version: str


# -- equality ---------------------------------------------------------------------------------
def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if is_stored(a) or is_stored(b):  # a long capture's stacks: compared a map at a time
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            return False
        return all(_arrays_equal(a[layer, head], b[layer, head])
                   for layer in range(a.shape[0]) for head in range(a.shape[1]))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _seqs_equal(a: TokenSeq | None, b: TokenSeq | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (
        _arrays_equal(a.ids, b.ids)
        and _arrays_equal(a.special, b.special)
        and tuple(a.raw) == tuple(b.raw)
        and tuple(a.display) == tuple(b.display)
        and tuple(a.word_ids) == tuple(b.word_ids)
    )


def captures_equal(a: Capture, b: Capture) -> bool:
    """True when every field of the two captures is equal; arrays bit for bit, dtype included."""
    for f in fields(Capture):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "stacks":
            if set(x) != set(y) or not all(_arrays_equal(x[k], y[k]) for k in x):
                return False
        elif isinstance(x, TokenSeq) or isinstance(y, TokenSeq) or f.name in _SEQS:
            if not _seqs_equal(x, y):
                return False
        elif x != y:
            return False
    return True


# -- save -------------------------------------------------------------------------------------
def _json_value(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"the session {what} cannot be saved ({exc}); keep them to text, numbers, lists and dicts"
        ) from None


def _prediction_to_json(p: Prediction) -> dict:
    return {
        "task": p.task,
        "items": [[str(label), float(prob)] for label, prob in p.items],
        "text": p.text,
        "per_position": [
            [int(pos), [[str(label), float(prob)] for label, prob in items]]
            for pos, items in p.per_position
        ],
    }


def _prediction_from_json(d: dict) -> Prediction:
    return Prediction(
        task=str(d["task"]),
        items=tuple((str(label), float(prob)) for label, prob in d["items"]),
        text=str(d["text"]),
        per_position=tuple(
            (int(pos), tuple((str(label), float(prob)) for label, prob in items))
            for pos, items in d["per_position"]
        ),
    )


def _str_array(values: tuple[str, ...]) -> np.ndarray:
    if any(s.endswith("\x00") for s in values):
        # numpy's fixed-width unicode would drop the trailing NULs
        raise InputError(
            "a token string ends with a NUL character and cannot be saved in a session"
        )
    return np.array(list(values), dtype=str) if values else np.zeros(0, dtype="<U1")


def save_session(
    path: str | os.PathLike,
    capture: Capture,
    *,
    model_ref: str,
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: TaskState | None = None,
) -> Path:
    """Write ``capture`` and the window state to one ``.headmap`` file, atomically.

    Parameters
    ----------
    path : target file (``.headmap`` recommended; any name is written as given)
    capture : the capture to keep; its stacks keep their dtype (float32 or float16); a word-level
        capture is saved as its pieces (reopening groups it again when the options ask)
    model_ref : the model reference (kept for display; reopening never loads the model)
    inputs, options : JSON-compatible dicts (text, target, layer, head, theme, …)
    task : progress and cancel (a long capture kept on disk is copied into the file from its store,
        a chunk at a time: it never passes through memory)

    Returns
    -------
    The path written.

    Raises
    ------
    InputError : inputs/options are not JSON-compatible
    ExportError : the file cannot be written (nothing is left behind, an old file is kept)
    """
    if capture.pieces is not None:
        capture = capture.pieces
    arrays: dict[str, Any] = {}
    for name, arr in capture.stacks.items():
        arrays[f"stack__{name}"] = arr if is_stored(arr) else np.asarray(arr)
    present = []
    for seq_name in _SEQS:
        seq: TokenSeq | None = getattr(capture, seq_name)
        if seq is None:
            continue
        present.append(seq_name)
        arrays[f"{seq_name}__ids"] = np.asarray(seq.ids, dtype=np.int64)
        arrays[f"{seq_name}__raw"] = _str_array(tuple(seq.raw))
        arrays[f"{seq_name}__display"] = _str_array(tuple(seq.display))
        arrays[f"{seq_name}__special"] = np.asarray(seq.special, dtype=bool)
        arrays[f"{seq_name}__word_ids"] = np.asarray(seq.word_ids, dtype=np.int64)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "headmap_version": headmap_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_ref": str(model_ref),
        "inputs": _json_value(dict(inputs), "inputs"),
        "options": _json_value(dict(options), "options"),
        "capture": {
            "model": capture.model,
            "kind": capture.kind,
            "architecture": capture.architecture,
            "text": capture.text,
            "target": capture.target,
            "output_text": capture.output_text,
            "prompt_length": int(capture.prompt_length),
            "generated": bool(capture.generated),
            "truncated": bool(capture.truncated),
            "notes": list(capture.notes),
            "prediction": _prediction_to_json(capture.prediction),
            "token_style": capture.token_style,
            "stacks": [n for n in capture.stacks],
            "token_seqs": present,
        },
    }
    arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would append ".npz" to a name
            if capture.stored:
                _write_members(fh, arrays, as_task(task))
            else:
                # no object arrays: loads with allow_pickle=False
                np.savez(fh, **arrays)

    return atomic_write(path, write, suffix=".npz")


#: bytes copied at a time from a store into a session file
COPY_CHUNK = 16 * 2**20


def _write_members(fh, arrays: Mapping[str, Any], task: TaskState) -> None:
    """The archive ``np.savez`` writes, with every stored stack copied from its store's ``.npy``
    file (a valid ``.npy`` member already) a chunk at a time."""
    total = sum(a.nbytes for a in arrays.values()) or 1
    done = 0
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                if not is_stored(arr):
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
                    continue
                with open(arr.store.path / arr.store.manifest["stacks"][arr.name]["file"], "rb") as src:
                    while chunk := src.read(COPY_CHUNK):
                        task.check()
                        member.write(chunk)
                        done += len(chunk)
                        task.report("session", min(1.0, done / total), "saving the session…")


# -- load -------------------------------------------------------------------------------------
#: the most bytes of arrays one session may declare, all members together; a file declaring more
#: is refused before anything is read. The maps of a session over 256 MiB are not read into
#: memory: they go to a store on disk (:mod:`analysis.store`) and are read a map at a time, so the
#: limit is the disk's: SmolLM2 (30 layers × 9 heads) at 8,192 tokens takes 36 GB as float16.
MAX_SESSION_BYTES = 64 << 30
#: the most bytes the JSON metadata may take in the file (numpy stores it as UTF-32: 4 million
#: characters; a 1024-token capture's metadata takes well under 1 MB)
MAX_META_BYTES = 16 << 20
#: the deepest nesting the metadata may have (the format's own is 7 levels: prediction steps)
MAX_META_DEPTH = 32
#: how far an attention weight may lie outside 0…1, and a row's sum away from 1 (see
#: :func:`_check_weights` for why this much)
WEIGHT_TOLERANCE = 1e-2

_KEYS = ("meta", *(f"stack__{n}" for n in STACK_NAMES), *(f"{s}__{part}" for s in _SEQS for part in _SEQ_PARTS))
#: the stacks and token sequences of each kind of capture (as analysis.capture makes them)
_KIND_STACKS = {
    "encoder": ("attentions",),
    "decoder": ("attentions",),
    "seq2seq": ("encoder_attentions", "decoder_attentions", "cross_attentions"),
}
_KIND_SEQS = {"encoder": ("source",), "decoder": ("source",), "seq2seq": _SEQS}
#: the token sequence along the query and the key axis of each stack (analysis.result)
_AXES = {
    "attentions": ("source", "source"),
    "encoder_attentions": ("source", "source"),
    "decoder_attentions": ("decoder_inputs", "decoder_inputs"),
    "cross_attentions": ("decoder_inputs", "source"),
}
#: the dtype kind of each part of a token sequence
_PART_KINDS = {"ids": "int64", "raw": "text", "display": "text", "special": "bool", "word_ids": "int64"}
_Kinds = type | tuple[type, ...]
#: the metadata's fields and their JSON types (bool is never taken for int)
_META_FIELDS: dict[str, _Kinds] = {
    "format": str, "format_version": int, "headmap_version": str, "created": str, "model_ref": str,
    "inputs": dict, "options": dict, "capture": dict,
}
_CAPTURE_FIELDS: dict[str, _Kinds] = {
    "model": str, "kind": str, "architecture": str, "text": str, "target": (str, type(None)),
    "output_text": str, "prompt_length": int, "generated": bool, "truncated": bool, "notes": list,
    "prediction": dict, "stacks": list, "token_seqs": list,
}
#: capture fields added after format 1 was first written: typed when present
_LATER_CAPTURE_FIELDS: dict[str, _Kinds] = {"token_style": str}
_PREDICTION_FIELDS: dict[str, _Kinds] = {"task": str, "items": list, "text": str, "per_position": list}
#: inputs and options are free JSON objects; these keys, when present, are read as these types
_INPUT_FIELDS: dict[str, _Kinds] = {"text": (str, type(None)), "target": (str, type(None))}
_OPTION_FIELDS: dict[str, _Kinds] = {"spec": dict, "tab": str}
_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


class _Damaged(Exception):
    pass


def _damaged(p: Path, detail: str) -> InputError:
    return InputError(
        f"{p} is not a Headmap session or it is damaged: {detail}; open another file or save the session again"
    )


def _is(value: Any, kinds: _Kinds) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def _words(kinds: _Kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)


def _check_fields(d: dict, spec: Mapping[str, _Kinds], where: str, exact: bool = True) -> None:
    """``d`` has exactly the keys of ``spec`` (``exact``; else any keys, those of ``spec`` typed)."""
    extra = sorted(set(d) - set(spec)) if exact else []
    if extra:
        raise _Damaged(f"its metadata has unexpected entries in {where or 'its top level'}: {', '.join(extra)[:80]}")
    for key, kinds in spec.items():
        name = f"{where}.{key}" if where else key
        if key not in d:
            if exact:
                raise _Damaged(f"its metadata has no {name}")
        elif not _is(d[key], kinds):
            found = _TYPE_WORDS.get(type(d[key]), type(d[key]).__name__)
            raise _Damaged(f"{name} in its metadata is {found}, not {_words(kinds)}")


def _check_pairs(items: Any, where: str) -> None:
    if not isinstance(items, list) or not all(
        isinstance(it, list) and len(it) == 2 and _is(it[0], str) and _is(it[1], (int, float)) for it in items
    ):
        raise _Damaged(f"{where} in its metadata is not a list of [label, probability] pairs")


def _check_names(names: list, allowed: tuple[str, ...], what: str, kind: str) -> None:
    if sorted(n for n in names if isinstance(n, str)) != sorted(allowed) or len(names) != len(allowed):
        shown = ", ".join(str(n)[:40] for n in names)
        raise _Damaged(f"its metadata lists the {what} [{shown}], not those of {a_or_an(kind)} model ({', '.join(allowed)})")


def _check_meta(meta: dict) -> None:
    """Every field of the metadata has the type the format says; nothing else is there."""
    _check_fields(meta, _META_FIELDS, "")
    _check_fields(meta["inputs"], _INPUT_FIELDS, "inputs", exact=False)
    _check_fields(meta["options"], _OPTION_FIELDS, "options", exact=False)
    c = meta["capture"]
    _check_fields({k: v for k, v in c.items() if k not in _LATER_CAPTURE_FIELDS}, _CAPTURE_FIELDS, "capture")
    _check_fields(c, _LATER_CAPTURE_FIELDS, "capture", exact=False)
    if not all(isinstance(n, str) for n in c["notes"]):
        raise _Damaged("capture.notes in its metadata is not a list of text")
    if c["kind"] not in _KIND_STACKS:
        raise _Damaged(f"its metadata names an unknown model kind '{c['kind'][:40]}'")
    if c["prompt_length"] < 0:
        raise _Damaged("capture.prompt_length in its metadata is negative")
    _check_names(c["stacks"], _KIND_STACKS[c["kind"]], "stacks", c["kind"])
    _check_names(c["token_seqs"], _KIND_SEQS[c["kind"]], "token sequences", c["kind"])
    pred = c["prediction"]
    _check_fields(pred, _PREDICTION_FIELDS, "capture.prediction")
    _check_pairs(pred["items"], "capture.prediction.items")
    for step in pred["per_position"]:
        if not (isinstance(step, list) and len(step) == 2 and _is(step[0], int)):
            raise _Damaged("capture.prediction.per_position in its metadata is not a list of [position, items]")
        _check_pairs(step[1], "capture.prediction.per_position")


def _json_depth(text: str) -> int:
    """The deepest nesting of brackets outside strings in JSON ``text``, found without parsing
    it (so that no nesting can exhaust a parser's stack), in linear time."""
    c = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    if not len(c):
        return 0
    idx = np.arange(len(c), dtype=np.int32)  # at most MAX_META_BYTES / 4 characters
    # a quote is escaped when an odd run of backslashes ends right before it
    run = idx - np.maximum.accumulate(np.where(c == 0x5C, -1, idx))  # backslashes ending at i
    escaped = np.zeros(len(c), dtype=bool)
    escaped[1:] = run[:-1] % 2 == 1
    inside = np.cumsum((c == 0x22) & ~escaped, dtype=np.int32) % 2 == 1  # an opening quote and its string
    step = ((c == 0x5B) | (c == 0x7B)).astype(np.int8) - ((c == 0x5D) | (c == 0x7D)).astype(np.int8)
    step[inside] = 0
    return int(np.cumsum(step, dtype=np.int32).max())


def _read_meta(npz: SafeNpz, p: Path) -> dict:
    """The metadata member, size- and depth-limited, every field typed."""
    info = npz.members.get("meta")
    if info is None:
        raise _Damaged("it has no Headmap session metadata")
    if info.file_size > MAX_META_BYTES + NPY_HEADER_MAX:
        raise _Damaged(f"its metadata takes {format_bytes(info.file_size)}, more than the "
                       f"{format_bytes(MAX_META_BYTES)} a session's metadata may take")
    member = npz.header("meta")
    if member.dtype.kind != "U" or member.shape != ():
        raise _Damaged("the metadata is not text")
    text = str(npz.read(member)[()])
    depth = _json_depth(text)
    if depth > MAX_META_DEPTH:
        raise _Damaged(f"its metadata is nested {depth} levels deep, more than the {MAX_META_DEPTH} allowed")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Damaged(f"its metadata is not valid JSON ({exc.msg}, character {exc.pos})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Damaged("it has no Headmap session metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Damaged("its format version is not a positive whole number")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{p} was written by a newer Headmap (session format {version}); update Headmap to open it"
        )
    _check_meta(meta)
    return meta


def _dtype_is(dtype: np.dtype, kind: str) -> bool:
    if kind == "float":
        return dtype.kind == "f" and dtype.itemsize in (2, 4)  # float16 or float32
    if kind == "int64":
        return dtype.kind == "i" and dtype.itemsize == 8
    if kind == "bool":
        return dtype.kind == "b"
    return dtype.kind == "U" and dtype.itemsize > 0


def _check_headers(headers: Mapping[str, Member], c: dict) -> None:
    """Dtypes and shapes of every member, from their headers alone: token sequences of one length
    each (not empty), stacks ``[L, H, Q, K]`` with ``L, H ≥ 1`` and ``Q``, ``K`` the lengths of
    their query and key tokens."""
    lengths: dict[str, int] = {}
    for seq in c["token_seqs"]:
        n = headers[f"{seq}__ids"].shape[0] if len(headers[f"{seq}__ids"].shape) == 1 else -1
        for part, kind in _PART_KINDS.items():
            m = headers[f"{seq}__{part}"]
            if not _dtype_is(m.dtype, kind):
                raise _Damaged(f"the {seq} tokens' {part} are {m.dtype}, not {kind}")
            if m.shape != (n,):
                raise _Damaged(f"the {seq} tokens' {part} have the shape {m.shape}, unlike their ids")
        if n < 1:
            raise _Damaged(f"it has no {seq} tokens")
        lengths[seq] = n
    if "outputs" in lengths and lengths["outputs"] != lengths["decoder_inputs"]:
        raise _Damaged(f"it has {lengths['decoder_inputs']} decoder inputs but {lengths['outputs']} outputs")
    if c["prompt_length"] > lengths["source"]:
        raise _Damaged(f"its prompt of {c['prompt_length']} tokens is longer than its {lengths['source']} tokens")
    for name in c["stacks"]:
        m = headers[f"stack__{name}"]
        if not _dtype_is(m.dtype, "float"):
            raise _Damaged(f"the {name} stack is {m.dtype}, not float16 or float32")
        if len(m.shape) != 4:
            raise _Damaged(f"the {name} stack has {len(m.shape)} axes, not [layer, head, query, key]")
        n_layers, n_heads, q, k = m.shape
        if n_layers < 1 or n_heads < 1:
            raise _Damaged(f"the {name} stack has {n_layers} layers × {n_heads} heads")
        q_seq, k_seq = _AXES[name]
        if (q, k) != (lengths[q_seq], lengths[k_seq]):
            raise _Damaged(f"the {name} stack has {q} × {k} query × key positions, but its tokens are "
                           f"{lengths[q_seq]} × {lengths[k_seq]}")


def _check_weights(name: str, stack: np.ndarray, task: TaskState) -> None:
    """Every weight of ``stack`` ``[L, H, Q, K]`` is finite and within 0…1, and every row sums
    to 1, up to :data:`WEIGHT_TOLERANCE`; checked a layer at a time (no copy of the stack).

    Why 1e-2: :func:`analysis.capture.stack_attentions` accepts a row whose sum is off by up to
    ``max(1e-3, eps)`` of the model's dtype — 2^-7 ≈ 0.0078 for bfloat16 — and the window then
    stores the maps as float16, which moves each weight by at most 2^-11 of itself (a row by at
    most 2^-11 ≈ 0.0005). A valid row is therefore within 0.0084 of 1, and softmax weights
    never leave 0…1. A row that is off by more was not made by a softmax.

    No row is exempt: a capture runs one sentence without padding (its attention mask is all
    ones), so no query is fully masked and there are no all-zero rows; capture refuses any row
    that does not sum to 1.
    """
    tol = WEIGHT_TOLERANCE
    for layer in range(stack.shape[0]):
        task.check()
        # numpy computes on float16 slowly: one layer as float32 (its row sums are exact to ~1e-6)
        maps = stack[layer].astype(np.float32, copy=False)
        lo, hi = float(maps.min()), float(maps.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise _Damaged(f"the {name} stack has weights that are not numbers (NaN or infinity) in layer {layer}")
        if lo < -tol or hi > 1 + tol:
            raise _Damaged(f"the {name} stack has weights from {lo:.3g} to {hi:.3g} in layer {layer}, "
                           "outside 0–1")
        off = float(np.abs(maps.sum(axis=-1) - 1.0).max())
        if off > tol:
            raise _Damaged(f"rows of the {name} stack in layer {layer} do not sum to 1 (off by {off:.3g})")


def _check_map(name: str, layer: int, m: np.ndarray) -> None:
    """:func:`_check_weights` of one map ``[Q, K]`` (float32) of layer ``layer``."""
    tol = WEIGHT_TOLERANCE
    lo, hi = float(m.min()), float(m.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise _Damaged(f"the {name} stack has weights that are not numbers (NaN or infinity) in layer {layer}")
    if lo < -tol or hi > 1 + tol:
        raise _Damaged(f"the {name} stack has weights from {lo:.3g} to {hi:.3g} in layer {layer}, outside 0–1")
    off = float(np.abs(m.sum(axis=-1) - 1.0).max()) if m.size else 0.0
    if off > tol:
        raise _Damaged(f"rows of the {name} stack in layer {layer} do not sum to 1 (off by {off:.3g})")


def _store_stacks(npz: SafeNpz, stacks: Mapping[str, Member], p: Path, task: TaskState) -> dict[str, Any]:
    """The stack members of a long session copied, a map at a time, into a new store this process
    owns (float16, with the pyramid levels and ranges views read; :mod:`analysis.store`), each map
    checked like :func:`_check_weights` on the way. Returns ``stack__<name>`` → the stored stack."""
    writer = StoreWriter()
    n_maps = sum(m.shape[0] * m.shape[1] for m in stacks.values()) or 1
    done = 0
    try:
        for key, member in stacks.items():
            name = key[len("stack__"):]
            n_layers, n_heads, q, k = member.shape
            writer.begin(name, member.shape)
            step = writer.chunk_rows(q, k)
            dtype = member.dtype
            with npz.open(member) as fp:
                for layer in range(n_layers):
                    for head in range(n_heads):
                        task.check()
                        raw = fp.read(q * k * dtype.itemsize)
                        if len(raw) != q * k * dtype.itemsize:
                            raise ArchiveError(f"its member '{member.info.filename}' is truncated")
                        m = np.frombuffer(raw, dtype=dtype).reshape(q, k).astype(np.float32)
                        _check_map(name, layer, m)
                        for r0 in range(0, q, step):
                            writer.write(name, layer, r0, m[r0:r0 + step], head=head)
                        done += 1
                        task.report("session", 0.8 * done / n_maps, f"checking and storing the maps of {p.name}…")
                if fp.read(1):
                    raise ArchiveError(f"its member '{member.info.filename}' holds more than its array")
        store = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return {f"stack__{name}": stack for name, stack in store.stacks.items()}


def _seq_from(arrays: Mapping[str, np.ndarray], name: str) -> TokenSeq:
    word_ids = arrays[f"{name}__word_ids"]
    if int(word_ids.min()) < -1:
        raise _Damaged(f"the {name} tokens have word numbers below -1")
    return TokenSeq(
        ids=arrays[f"{name}__ids"],
        raw=tuple(str(s) for s in arrays[f"{name}__raw"].tolist()),
        display=tuple(str(s) for s in arrays[f"{name}__display"].tolist()),
        special=arrays[f"{name}__special"],
        word_ids=tuple(int(w) for w in word_ids.tolist()),
    )


def _capture_from(arrays: Mapping[str, np.ndarray], c: dict, task: TaskState) -> Capture:
    """The capture of checked metadata ``c`` and arrays whose shapes were checked; the weights
    are checked here."""
    seqs = {name: _seq_from(arrays, name) if name in c["token_seqs"] else None for name in _SEQS}
    stacks = {name: arrays[f"stack__{name}"] for name in c["stacks"]}
    for name, stack in stacks.items():
        if not is_stored(stack):  # a stored stack was checked while it was copied
            _check_weights(name, stack, task)
    source = seqs["source"]
    assert source is not None  # every kind has source tokens (_check_meta)
    return Capture(
        model=c["model"],
        kind=c["kind"],
        architecture=c["architecture"],
        text=c["text"],
        source=source,
        stacks=stacks,
        target=c["target"],
        decoder_inputs=seqs["decoder_inputs"],
        outputs=seqs["outputs"],
        output_text=c["output_text"],
        prompt_length=c["prompt_length"],
        generated=c["generated"],
        truncated=c["truncated"],
        notes=tuple(c["notes"]),
        prediction=_prediction_from_json(c["prediction"]),
        token_style=str(c.get("token_style", "") or ""),
    )


def _native(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _read(p: Path, task: TaskState) -> Session:
    size = p.stat().st_size
    task.report("session", 0.0, f"checking {p.name}…")
    with open(p, "rb") as fh, SafeNpz(fh, size, _KEYS, MAX_SESSION_BYTES) as npz:
        meta = _read_meta(npz, p)
        c = meta["capture"]
        expected = {"meta", *(f"stack__{n}" for n in c["stacks"])}
        expected |= {f"{s}__{part}" for s in c["token_seqs"] for part in _SEQ_PARTS}
        for key in sorted(expected - set(npz.members)):
            raise _Damaged(f"the member '{key}.npy' is missing")
        for key in sorted(set(npz.members) - expected):
            raise _Damaged(f"it holds a member '{key}.npy' that its metadata does not name")
        headers = {key: npz.header(key) for key in sorted(expected - {"meta"})}
        _check_headers(headers, c)
        total, done = sum(m.nbytes for m in headers.values()) or 1, 0
        stacks = {key: m for key, m in headers.items() if key.startswith("stack__")}
        stored = store_wanted([m.shape for m in stacks.values()], None)
        arrays: dict[str, Any] = {}
        if stored:  # a long capture: its maps go to a store on disk, checked as they are copied
            check_space(capture_bytes(m.shape for m in stacks.values()), what=f"opening {p.name}")
            arrays.update(_store_stacks(npz, stacks, p, task))  # reports up to 0.8
        for key, member in headers.items():
            if key in arrays:
                continue
            task.check()
            # (after a store, only the token sequences are left: a few bytes, read at 0.8)
            task.report("session", 0.8 if stored else 0.8 * done / total, f"reading {p.name}…")
            arrays[key] = _native(npz.read(member))
            done += member.nbytes
    task.report("session", 0.8, f"checking the attention weights of {p.name}…")
    capture = _capture_from(arrays, c, task)
    return Session(
        capture=capture,
        model_ref=meta["model_ref"],
        inputs=MappingProxyType(dict(meta["inputs"])),
        options=MappingProxyType(dict(meta["options"])),
        created=meta["created"],
        headmap_version=meta["headmap_version"],
    )


def load_session(path: str | os.PathLike, *, task: TaskState | None = None) -> Session:
    """Reopen a ``.headmap`` file (no model needed). The file is untrusted input: nothing is
    returned until all of it was checked, and no check needs more memory than the arrays the
    file may hold (:data:`MAX_SESSION_BYTES`).

    Checked, in this order: the archive's directory (known member names only, uncompressed, the
    declared sizes within :data:`MAX_SESSION_BYTES` and the file; see
    :class:`analysis.archive.SafeNpz`); the JSON metadata (at most :data:`MAX_META_BYTES`, nested
    at most :data:`MAX_META_DEPTH` deep, every field of the type the format says); the members
    against the metadata (exactly the stacks and token sequences of its kind of model); every
    member's header (dtype, shape and size, before it is read: tokens int64 / text / bool, stacks
    float16 or float32 ``[L, H, Q, K]`` with ``L, H ≥ 1`` and ``Q``, ``K`` the lengths of their
    query and key tokens, as in :mod:`analysis.result`); then the arrays (CRC) and the weights
    (:func:`_check_weights`).

    Parameters
    ----------
    path : the ``.headmap`` file
    task : progress and cancelling (the window runs this as a job)

    Returns
    -------
    Session, whose capture equals the saved one (arrays keep their dtype).

    Raises
    ------
    InputError : one sentence: the file is missing, is not a Headmap session, is damaged,
        truncated or too big, holds anything the format does not, was written by a newer Headmap,
        or does not fit in memory.
    Cancelled : the task was cancelled.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file; choose a .headmap session file")
    task = as_task(task)
    try:
        return _read(p, task)
    except (InputError, Cancelled):
        raise
    except TooBig as exc:
        raise InputError(
            f"{p} is not a session Headmap can open: {exc.what} declares {format_bytes(exc.size)} of arrays, "
            f"more than the {format_bytes(exc.limit)} a session may hold; open another file"
        ) from None
    except MemoryError:
        pass  # raised below, outside this block: the error's traceback holds what was read
    except RecursionError:
        raise _damaged(p, "its metadata is nested too deeply") from None
    except (
        _Damaged,
        ArchiveError,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OverflowError,
        struct.error,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        json.JSONDecodeError,
    ) as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0][:200] if text else type(exc).__name__
        raise _damaged(p, detail) from exc
    raise InputError(
        f"{p} does not fit in the memory available ({format_bytes(p.stat().st_size)}); "
        "close other programs and open it again, or open another file"
    )
