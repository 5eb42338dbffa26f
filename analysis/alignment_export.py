"""Word alignment of a seq2seq capture, and the ``--export-alignment`` Pharaoh file.

The file holds one line of ``i-j`` pairs: ``i`` indexes the source text's whitespace-separated
words and ``j`` the translation's, both 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .alignment import (
    ALIGNMENT_METHODS,
    AlignmentResult,
    bundled_alignment_info,
    format_pharaoh,
    word_alignment,
)
from .errors import InputError
from .fileio import atomic_write_text
from .result import Capture


@dataclass(frozen=True)
class AlignmentDefaults:
    """The alignment setting used when none is chosen: the one with the lowest AER on a bundled
    translator's gold files (its ``alignment.json``), else the last layer's head average read by
    ``predict`` with argmax links only. ``documented``: it comes from ``alignment.json``."""

    layer: int
    head: int | None = None
    method: str = "predict"
    threshold: float | None = None
    documented: bool = False


def alignment_defaults(capture: Capture, model_folder: str | Path | None) -> AlignmentDefaults:
    """The documented best setting of ``model_folder`` (see :class:`AlignmentDefaults`)."""
    n_layers, n_heads = capture.shape("cross_attentions")[:2]
    info: dict = {}
    if model_folder is not None:
        try:
            info = bundled_alignment_info(model_folder)  # a dict, or it raises
        except Exception:  # a damaged alignment.json: as if there were none
            info = {}
    best = info.get("best_layer")
    if not (isinstance(best, int) and 0 <= best < n_layers):
        return AlignmentDefaults(layer=n_layers - 1)
    head = info.get("best_head")
    method = info.get("best_method")
    threshold = info.get("best_threshold")
    return AlignmentDefaults(
        layer=best,
        head=head if isinstance(head, int) and 0 <= head < n_heads else None,
        method=method if method in ALIGNMENT_METHODS else "predict",
        threshold=float(threshold) if isinstance(threshold, int | float) and 0 < threshold <= 1 else None,
        documented=True,
    )


def default_alignment_layer(capture: Capture, model_folder: str | Path | None) -> int:
    """The best documented layer (``alignment.json`` of a bundled translator), else the last layer."""
    return alignment_defaults(capture, model_folder).layer


def alignment_for_capture(capture: Capture, model_folder: str | Path | None = None,
                          layer: int | None = None, head: int | None = None, method: str | None = None,
                          threshold: float | None = None) -> AlignmentResult:
    """Align the capture's output words to its source words from cross-attention.

    ``layer`` None: the documented best layer, and then ``head`` None the documented best head
    (else the head average); ``method`` / ``threshold`` None: the documented ones (else
    ``predict``, argmax links only). See :func:`analysis.alignment.word_alignment`.
    """
    if capture.kind != "seq2seq" or "cross_attentions" not in capture.stacks or capture.outputs is None:
        raise InputError("a word alignment needs a seq2seq model with cross-attention; load a translator")
    n_layers, n_heads = capture.shape("cross_attentions")[:2]
    defaults = alignment_defaults(capture, model_folder)
    if layer is None:
        layer = defaults.layer
        head = defaults.head if head is None else head
    if not 0 <= layer < n_layers:
        raise InputError(f"alignment layer {layer} is out of range: the cross-attention has layers 0–{n_layers - 1}")
    if head is not None and not 0 <= head < n_heads:
        raise InputError(f"alignment head {head} is out of range: the cross-attention has heads 0–{n_heads - 1}")
    method = defaults.method if method is None else method
    threshold = defaults.threshold if threshold is None else threshold
    # (word_alignment checks the method and the threshold)
    return word_alignment(capture.attention("cross_attentions"), capture.source.word_ids, capture.outputs.word_ids,
                          layer=layer, head=head, method=method, threshold=threshold)


def write_alignment(result: AlignmentResult, path) -> None:
    """One Pharaoh line (``0-0 1-0 2-1 3-2``) and a newline, written atomically."""
    atomic_write_text(path, format_pharaoh(result.pairs) + "\n")
