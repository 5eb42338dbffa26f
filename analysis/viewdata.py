"""What a heatmap view shows, computed once for the window and the exported figures alike.

The window's views call :func:`heatmap_data` and only push the arrays into their artists;
they never compute attention themselves.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import Colormap, Normalize

from .aggregate import select_map
from .figures import (
    ViewSpec,
    causal_cells,
    colorbar_label,
    processed_map,
    stack_norm,
    view_cmap,
    view_title,
    view_tokens,
    view_what,
)
from .result import Capture
from .themes import Theme, get_theme


@dataclass(frozen=True)
class HeatmapData:
    """One map ready to draw.

    matrix : float32 ``[Q', K']`` (special tokens removed when hidden)
    row_idx, col_idx : original indices of the shown rows / columns
    mask : bool ``[Q', K']`` cells the causal mask forbids, or None
    """

    matrix: np.ndarray
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    row_idx: np.ndarray
    col_idx: np.ndarray
    row_title: str
    col_title: str
    mask: np.ndarray | None
    title: str
    norm: Normalize
    vmin: float
    vmax: float
    scale: str
    cmap: Colormap
    cmap_name: str
    colorbar_label: str


# per capture (weakly: a new capture must never inherit a dead one's ranges through a reused id)
_NORM_CACHE: weakref.WeakKeyDictionary[Capture, dict[tuple, Normalize]] = weakref.WeakKeyDictionary()


def shared_norm(capture: Capture, name: str, spec: ViewSpec) -> Normalize:
    """The stack-wide colour range (cached per capture, stack and display options)."""
    per_capture = _NORM_CACHE.setdefault(capture, {})
    key = (name, spec.hide_special, spec.renormalize, spec.scale, spec.row_labels)
    norm = per_capture.get(key)
    if norm is None:
        norm = stack_norm(capture, name, view_tokens(capture, spec, name), spec)
        per_capture[key] = norm
    return norm


def heatmap_data(capture: Capture, spec: ViewSpec, theme: Theme | str | None = None) -> HeatmapData:
    """Everything the Head view draws for ``spec`` (layer, head/aggregation, hidden tokens, …)."""
    theme = get_theme(theme or spec.theme)
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    raw = select_map(capture, name, spec.layer, spec.head, spec.aggregation)
    m = processed_map(raw, tok, spec)
    if spec.shared_range:
        norm = shared_norm(capture, name, spec)
    else:
        from .aggregate import color_norm

        norm = color_norm(m, spec.scale)
    cmap = view_cmap(spec, theme)
    title = view_title(capture, spec, view_what(capture, spec, name))
    return HeatmapData(
        matrix=m, row_labels=tuple(tok.rows), col_labels=tuple(tok.cols), row_idx=tok.row_idx, col_idx=tok.col_idx,
        row_title=tok.row_title, col_title=tok.col_title, mask=causal_cells(capture, name, tok, spec), title=title,
        norm=norm, vmin=float(norm.vmin), vmax=float(norm.vmax), scale=spec.scale, cmap=cmap,
        cmap_name=spec.cmap or theme.cmap, colorbar_label=colorbar_label(spec),
    )


def stack_tiles(capture: Capture, spec: ViewSpec, layer: int | None = None) -> tuple[np.ndarray, object]:
    """The (processed) maps of a whole stack ``[L, H, Q', K']`` or of one layer ``[H, Q', K']``,
    with hidden tokens removed as in the Head view. Returns (array, token info)."""
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    arr = capture.stacks[name] if layer is None else capture.stacks[name][layer]
    return processed_map(arr, tok, spec), tok
