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

With ``--group words`` (a word-level capture, :func:`analysis.words.group_capture`) the stacks are
``[layer, head, query_word, key_word]``, the token lists (``input_tokens``, ``decoder_input_tokens``,
``output_tokens``) and ``input_special`` hold words, the ``*_ids`` arrays keep the tokenizer's piece
ids, and two more keys say which pieces form each word:

``input_word_spans`` (and for seq2seq ``output_word_spans``)
    int32 ``[n_words, 2]``: each word's half-open range ``[start, end)`` of piece positions in the
    ungrouped sequence (``input_ids``; ``output_ids``, whose ranges also group the decoder inputs)

Loadable with ``numpy.load(path, allow_pickle=False)``.

A long capture kept on disk (:mod:`analysis.store`) is written map by map into the archive (the
same format, float32 as always); the whole stack is never in memory. The CLI refuses an npz whose
float32 maps exceed :data:`FORCE_BYTES` unless ``--force`` is given.
"""

from __future__ import annotations

import numpy as np

from .fileio import atomic_write
from .result import Capture
from .tasks import TaskState, as_task

#: the float32 maps of an --export-npz bigger than this are written only with --force (1 GB)
FORCE_BYTES = 10**9


def npz_bytes(cap: Capture) -> int:
    """Bytes of the npz file's float32 attention maps (the file is barely bigger)."""
    return sum(int(a.size) * 4 for a in cap.stacks.values())


def npz_arrays(cap: Capture, stacks: bool = True) -> dict[str, np.ndarray]:
    """The npz file's arrays (see the module docstring) of a capture of pieces or of words
    (``stacks=False``: all but the attention stacks)."""
    ids = cap.pieces if cap.pieces is not None else cap  # ids stay the tokenizer's pieces
    out: dict[str, np.ndarray] = {name: cap.attention(name) for name in cap.stack_names} if stacks else {}
    out["input_tokens"] = np.array(cap.source.display, dtype=str)
    out["input_ids"] = np.asarray(ids.source.ids, dtype=np.int64)
    out["input_special"] = np.asarray(cap.source.special, dtype=bool)
    if cap.decoder_inputs is not None and cap.outputs is not None:
        out["decoder_input_tokens"] = np.array(cap.decoder_inputs.display, dtype=str)
        out["output_tokens"] = np.array(cap.outputs.display, dtype=str)
        assert ids.decoder_inputs is not None and ids.outputs is not None
        out["decoder_input_ids"] = np.asarray(ids.decoder_inputs.ids, dtype=np.int64)
        out["output_ids"] = np.asarray(ids.outputs.ids, dtype=np.int64)
    if cap.source_spans is not None:
        out["input_word_spans"] = np.asarray(cap.source_spans, dtype=np.int32)
    if cap.output_spans is not None:
        out["output_word_spans"] = np.asarray(cap.output_spans, dtype=np.int32)
    out["output_text"] = np.array(cap.output_text, dtype=str)
    out["kind"] = np.array(cap.kind, dtype=str)
    out["model"] = np.array(cap.model, dtype=str)
    return out


def write_npz(cap: Capture, path, task: TaskState | None = None) -> None:
    """Write the npz file of ``cap`` to ``path`` (atomically); a stored capture map by map."""
    if cap.stored:
        atomic_write(path, lambda tmp: _write_streamed(cap, tmp, as_task(task)))
        return
    arrays = npz_arrays(cap)

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy must not append ".npz" to the temp name
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays to allow_pickle: bool

    atomic_write(path, _w)


def _write_streamed(cap: Capture, tmp: str, task: TaskState) -> None:
    """The npz file of a stored capture, as ``np.savez`` lays it out (an uncompressed zip of
    ``.npy`` members), each stack written one float32 map at a time."""
    import zipfile

    with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in cap.stack_names:
            arr = cap.stacks[name]
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                              "fortran_order": False, "shape": tuple(arr.shape)})
                n_layers, n_heads = arr.shape[:2]
                for layer in range(n_layers):
                    task.check()
                    for head in range(n_heads):
                        member.write(np.ascontiguousarray(arr[layer, head], dtype=np.float32).data)
        for key, value in npz_arrays(cap, stacks=False).items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
