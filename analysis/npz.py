"""The ``--export-npz`` file format (a public contract).

Keys
----
``attentions`` | ``encoder_attentions``, ``decoder_attentions``, ``cross_attentions``
    float32 ``[layer, head, query, key]``, one per stack present
``input_tokens``
    display strings of the input tokens (str array ``[S]``)
``decoder_input_tokens``, ``output_tokens``
    seq2seq only: display strings of the decoder inputs and of the output token each row predicts
``output_text``
    the translation (seq2seq) or the continuation (decoder with ``--generate``), else ""
``kind``, ``model``
    0-d str arrays: ``encoder``/``decoder``/``seq2seq`` and the model reference
``input_ids``, ``input_special`` (and ``decoder_input_ids``, ``output_ids`` for seq2seq)
    int64 / bool arrays

Loadable with ``numpy.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import numpy as np

from .fileio import atomic_write
from .result import Capture


def npz_arrays(cap: Capture) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {name: cap.attention(name) for name in cap.stack_names}
    out["input_tokens"] = np.array(cap.source.display, dtype=str)
    out["input_ids"] = np.asarray(cap.source.ids, dtype=np.int64)
    out["input_special"] = np.asarray(cap.source.special, dtype=bool)
    if cap.decoder_inputs is not None and cap.outputs is not None:
        out["decoder_input_tokens"] = np.array(cap.decoder_inputs.display, dtype=str)
        out["output_tokens"] = np.array(cap.outputs.display, dtype=str)
        out["decoder_input_ids"] = np.asarray(cap.decoder_inputs.ids, dtype=np.int64)
        out["output_ids"] = np.asarray(cap.outputs.ids, dtype=np.int64)
    out["output_text"] = np.array(cap.output_text, dtype=str)
    out["kind"] = np.array(cap.kind, dtype=str)
    out["model"] = np.array(cap.model, dtype=str)
    return out


def write_npz(cap: Capture, path) -> None:
    arrays = npz_arrays(cap)

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy must not append ".npz" to the temp name
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays to allow_pickle: bool

    atomic_write(path, _w)
