"""Word alignment of a seq2seq capture, and the ``--export-alignment`` Pharaoh file.

The file holds one line of ``i-j`` pairs: ``i`` indexes the source text's whitespace-separated
words and ``j`` the translation's, both 0-based.
"""

from __future__ import annotations

from pathlib import Path

from .alignment import AlignmentResult, bundled_alignment_info, format_pharaoh, word_alignment
from .errors import InputError
from .fileio import atomic_write_text
from .result import Capture


def default_alignment_layer(capture: Capture, model_folder: str | Path | None) -> int:
    """The best documented layer (``alignment.json`` of a bundled translator), else the last layer."""
    n_layers = capture.n_layers("cross_attentions")
    if model_folder is not None:
        try:
            info = bundled_alignment_info(model_folder)
        except Exception:
            info = {}
        best = info.get("best_layer") if isinstance(info, dict) else None
        if isinstance(best, int) and 0 <= best < n_layers:
            return best
    return n_layers - 1


def alignment_for_capture(capture: Capture, model_folder: str | Path | None = None,
                          layer: int | None = None, head: int | None = None) -> AlignmentResult:
    """Align the capture's output words to its source words from cross-attention.

    ``layer`` None: the best documented layer; ``head`` None: the head average.
    """
    if capture.kind != "seq2seq" or "cross_attentions" not in capture.stacks or capture.outputs is None:
        raise InputError("a word alignment needs a seq2seq model with cross-attention; load a translator")
    n_layers, n_heads = capture.shape("cross_attentions")[:2]
    if layer is None:
        layer = default_alignment_layer(capture, model_folder)
    if not 0 <= layer < n_layers:
        raise InputError(f"alignment layer {layer} is out of range: the cross-attention has layers 0–{n_layers - 1}")
    if head is not None and not 0 <= head < n_heads:
        raise InputError(f"alignment head {head} is out of range: the cross-attention has heads 0–{n_heads - 1}")
    return word_alignment(capture.attention("cross_attentions"), capture.source.word_ids, capture.outputs.word_ids,
                          layer=layer, head=head)


def write_alignment(result: AlignmentResult, path) -> None:
    """One Pharaoh line (``0-0 1-0 2-1 3-2``) and a newline, written atomically."""
    atomic_write_text(path, format_pharaoh(result.pairs) + "\n")
