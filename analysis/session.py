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
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import InputError
from .fileio import atomic_write
from .result import STACK_NAMES, Capture, Prediction, TokenSeq

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
) -> Path:
    """Write ``capture`` and the window state to one ``.headmap`` file, atomically.

    Parameters
    ----------
    path : target file (``.headmap`` recommended; any name is written as given)
    capture : the capture to keep; its stacks keep their dtype (float32 or float16); a word-level
        capture is saved as its pieces (reopening groups it again when the options ask)
    model_ref : the model reference (kept for display; reopening never loads the model)
    inputs, options : JSON-compatible dicts (text, target, layer, head, theme, …)

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
    arrays: dict[str, np.ndarray] = {}
    for name, arr in capture.stacks.items():
        arrays[f"stack__{name}"] = np.asarray(arr)
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
            # no object arrays: loads with allow_pickle=False
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays to allow_pickle: bool

    return atomic_write(path, write, suffix=".npz")


# -- load -------------------------------------------------------------------------------------
class _Damaged(Exception):
    pass


def _get(data: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in data:
        raise _Damaged(f"the entry '{key}' is missing")
    return data[key]


def _seq_from(data: Mapping[str, np.ndarray], name: str) -> TokenSeq:
    ids = _get(data, f"{name}__ids")
    special = _get(data, f"{name}__special")
    word_ids = _get(data, f"{name}__word_ids")
    raw = _get(data, f"{name}__raw")
    display = _get(data, f"{name}__display")
    if ids.dtype != np.int64 or special.dtype != bool or word_ids.dtype != np.int64:
        raise _Damaged(f"the {name} tokens have the wrong types")
    if raw.dtype.kind != "U" or display.dtype.kind != "U":
        raise _Damaged(f"the {name} token strings are not text")
    try:
        return TokenSeq(
            ids=ids,
            raw=tuple(str(s) for s in raw.tolist()),
            display=tuple(str(s) for s in display.tolist()),
            special=special,
            word_ids=tuple(int(w) for w in word_ids.tolist()),
        )
    except ValueError as exc:
        raise _Damaged(f"the {name} tokens are inconsistent ({exc})") from None


def _capture_from(data: Mapping[str, np.ndarray], meta: dict) -> Capture:
    c = meta["capture"]
    seqs = {name: _seq_from(data, name) if name in c["token_seqs"] else None for name in _SEQS}
    if seqs["source"] is None:
        raise _Damaged("the source tokens are missing")
    stacks = {}
    for name in c["stacks"]:
        if name not in STACK_NAMES:
            raise _Damaged(f"unknown stack '{name}'")
        arr = _get(data, f"stack__{name}")
        if arr.ndim != 4 or arr.dtype.kind != "f":
            raise _Damaged(f"the stack {name} is not a float [layer, head, query, key] array")
        stacks[name] = arr
    capture = Capture(
        model=str(c["model"]),
        kind=c["kind"],
        architecture=str(c["architecture"]),
        text=str(c["text"]),
        source=seqs["source"],
        stacks=stacks,
        target=None if c["target"] is None else str(c["target"]),
        decoder_inputs=seqs["decoder_inputs"],
        outputs=seqs["outputs"],
        output_text=str(c["output_text"]),
        prompt_length=int(c["prompt_length"]),
        generated=bool(c["generated"]),
        truncated=bool(c["truncated"]),
        notes=tuple(str(n) for n in c["notes"]),
        prediction=_prediction_from_json(c["prediction"]),
        token_style=str(c.get("token_style", "") or ""),
    )
    if capture.kind not in ("encoder", "decoder", "seq2seq"):
        raise _Damaged(f"unknown model kind '{capture.kind}'")
    for name in capture.stack_names:
        _, _, q, k = capture.stacks[name].shape
        if q != len(capture.query_tokens(name)) or k != len(capture.key_tokens(name)):
            raise _Damaged(f"the stack {name} does not match its tokens")
    return capture


def load_session(path: str | os.PathLike) -> Session:
    """Reopen a ``.headmap`` file (no model needed).

    Returns
    -------
    Session, whose capture equals the saved one (arrays keep their dtype).

    Raises
    ------
    InputError : the file is missing, is not a Headmap session, is damaged or truncated, or was
        written by a newer Headmap.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file; choose a .headmap session file")
    try:
        npz = np.load(p, allow_pickle=False)
        if not hasattr(npz, "files"):
            raise _Damaged("it is a single array, not an archive")
        with npz:
            data = {key: npz[key] for key in npz.files}
        meta_arr = _get(data, "meta")
        if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
            raise _Damaged("the metadata is not text")
        meta = json.loads(str(meta_arr[()]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise _Damaged("it has no Headmap session metadata")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(
                f"{p} was written by a newer Headmap (session format {version}); update Headmap to open it"
            )
        capture = _capture_from(data, meta)
        return Session(
            capture=capture,
            model_ref=str(meta["model_ref"]),
            inputs=MappingProxyType(dict(meta["inputs"])),
            options=MappingProxyType(dict(meta["options"])),
            created=str(meta["created"]),
            headmap_version=str(meta["headmap_version"]),
        )
    except InputError:
        raise
    except (
        _Damaged,
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
        zlib.error,
        json.JSONDecodeError,
    ) as exc:
        detail = str(exc) or type(exc).__name__
        raise InputError(
            f"{p} is not a Headmap session or is damaged; open another file or save the session again ({detail})"
        ) from exc
