"""Publishable figures of every view, built without pyplot, and their atomic export.

One :class:`ViewSpec` describes what a view shows (view, stack, layer, head or aggregate, token
hiding, colours, theme, dpi); :func:`build_figure` turns it into a
:class:`matplotlib.figure.Figure`; :func:`export_figure` / :func:`export_all_layers` write PNG,
SVG or PDF through :func:`analysis.fileio.atomic_write`. Everything is validated by
:func:`validate_spec` before anything is drawn or written.

Views
-----
``head``       one heatmap ``[Q, K]`` (a head, or the mean/max over the heads of a layer)
``layer``      every head of one layer as small multiples with one colour bar
``model``      the whole stack ``[L, H, Q, K]`` tiled into one image (layers × heads)
``lines``      two token columns (queries left, keys right) joined by lines ∝ attention
``alignment``  source words above, output words below, lines between aligned words (seq2seq)
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Colormap, Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

from .aggregate import (
    AGGREGATIONS,
    SCALES,
    check_layer_head,
    color_norm,
    hide_tokens,
    select_map,
    stack_range,
    value_range,
)
from .errors import ExportError, InputError
from .fileio import atomic_write
from .fonts import ensure_cjk_font
from .result import Capture
from .themes import Theme, apply_theme, get_theme

VIEWS = ("head", "layer", "model", "lines", "alignment")
ROW_LABEL_MODES = ("input", "output", "both")
FORMATS = ("png", "svg", "pdf")
DPI_MIN, DPI_MAX = 72, 600
#: longer token labels are shortened with "…"
MAX_LABEL_CHARS = 24
#: the lines view draws at most this many lines (the strongest)
MAX_LINES = 4000
#: model overview: the tiled image is at most about this many pixels per side
MODEL_IMAGE_PIXELS = 2400
#: artist ids (``Artist.get_gid``) tests and the window can look for
GID_ATTENTION = "attention"
GID_MASK = "causal-mask"
GID_MASK_HATCH = "causal-mask-hatch"
GID_LINES = "attention-lines"
GID_ALIGNMENT = "alignment-lines"

_STACK_TITLES = {
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention",
    "cross_attentions": "cross-attention",
}


@dataclass(frozen=True)
class ViewSpec:
    """What one view shows; enough to rebuild it as a figure.

    Attributes
    ----------
    view : ``head`` | ``layer`` | ``model`` | ``lines`` | ``alignment``
    stack : stack name or alias accepted by :meth:`Capture.resolve_stack` (None = first stack)
    layer : 0-based layer (head, layer and lines views)
    head : 0-based head, or None for the aggregate over the layer's heads (head, lines views)
    aggregation : ``mean`` | ``max`` over heads when ``head`` is None
    hide_special : drop special-token rows/columns from the display (decoder/cross rows labelled
        by their ``output`` count as special when the predicted token is; ``both``: when the
        input and the output are)
    renormalize : with ``hide_special``, re-scale rows to sum 1 over the kept columns
    cmap : matplotlib colormap name; None = the theme's
    scale : ``linear`` | ``log`` colour scale
    shared_range : one colour range for the whole stack (comparable across layers/heads)
        instead of the range of what this view shows
    row_labels : decoder/cross rows labelled by ``input`` token, ``output`` token or ``both``
    show_causal_mask : grey + hatch the cells a causal mask forbids (causal stacks only)
    theme : ``light`` | ``dark`` | ``presentation``
    dpi : 72–600, pixel density of PNG output (and of images inside SVG/PDF)
    title : None = automatic (model, stack, layer, head/aggregation, notes)
    alignment_layer, alignment_head : cross-attention layer/head for the alignment view
        (None = mean over layers / heads)
    figsize : (width, height) in inches; None = sized from the number of tokens
    """

    view: str = "head"
    stack: str | None = None
    layer: int = 0
    head: int | None = 0
    aggregation: str = "mean"
    hide_special: bool = False
    renormalize: bool = False
    cmap: str | None = None
    scale: str = "linear"
    shared_range: bool = False
    row_labels: str = "input"
    show_causal_mask: bool = True
    theme: str = "light"
    dpi: int = 150
    title: str | None = None
    alignment_layer: int | None = None
    alignment_head: int | None = None
    figsize: tuple[float, float] | None = None


# -- validation -------------------------------------------------------------------------------
def _one_of(value: object, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise InputError(f"unknown {what} '{value}': choose one of {', '.join(allowed)}")


def validate_spec(capture: Capture, spec: ViewSpec) -> str:
    """Check ``spec`` against ``capture`` before anything is drawn or written.

    Returns
    -------
    The resolved stack name (``cross_attentions`` for the alignment view).

    Raises
    ------
    InputError : one sentence saying what is wrong and what to choose instead (unknown view,
        stack, theme, colormap; layer/head out of range; alignment without cross-attention;
        dpi outside 72–600; nothing left after hiding special tokens).
    """
    _one_of(spec.view, VIEWS, "view")
    get_theme(spec.theme)
    _one_of(spec.aggregation, AGGREGATIONS, "aggregation")
    _one_of(spec.scale, SCALES, "colour scale")
    _one_of(spec.row_labels, ROW_LABEL_MODES, "row label mode")
    if (
        isinstance(spec.dpi, bool)
        or not isinstance(spec.dpi, int | np.integer)
        or not DPI_MIN <= spec.dpi <= DPI_MAX
    ):
        raise InputError(
            f"dpi {spec.dpi} is out of range: choose a whole number from {DPI_MIN} to {DPI_MAX}"
        )
    if spec.cmap is not None and spec.cmap not in mpl.colormaps:
        raise InputError(
            f"unknown colormap '{spec.cmap}': use a matplotlib colormap such as viridis, magma or Blues"
        )
    if spec.title is not None and not isinstance(spec.title, str):
        raise InputError("the title must be text; leave it empty for the automatic title")
    if spec.figsize is not None:
        try:
            w, h = (float(v) for v in spec.figsize)
        except (TypeError, ValueError):
            raise InputError("figsize must be (width, height) in inches") from None
        if not (0.5 <= w <= 100 and 0.5 <= h <= 100):
            raise InputError(
                f"figsize {spec.figsize} is out of range: choose 0.5–100 inches per side"
            )

    if spec.view == "alignment":
        name = "cross_attentions"
        if capture.kind != "seq2seq" or name not in capture.stacks or capture.outputs is None:
            raise InputError(
                "the alignment view needs a seq2seq model with cross-attention; "
                f"this is a {capture.kind} model ({capture.architecture}): choose the head, layer, model or lines view"
            )
        n_layers, n_heads = capture.stacks[name].shape[:2]
        if spec.alignment_layer is not None:
            check_layer_head(n_layers, n_heads, spec.alignment_layer, spec.alignment_head)
        elif spec.alignment_head is not None:
            check_layer_head(n_layers, n_heads, 0, spec.alignment_head)
        src = np.asarray(capture.source.word_ids)
        tgt = np.asarray(capture.outputs.word_ids)
        if not (src >= 0).any() or not (tgt >= 0).any():
            raise InputError(
                "there are no words to align (the source or the output has no word tokens); type a longer text"
            )
        return name

    try:
        name = capture.resolve_stack(spec.stack)
    except KeyError as exc:
        raise InputError(str(exc.args[0]) if exc.args else str(exc)) from None
    n_layers, n_heads = capture.stacks[name].shape[:2]
    if spec.view in ("head", "layer", "lines"):
        check_layer_head(n_layers, n_heads, spec.layer, spec.head if spec.view != "layer" else None)
    if spec.hide_special:
        if capture.query_tokens(name).special.all() or capture.key_tokens(name).special.all():
            raise InputError(
                "every token is a special token, so hiding them leaves nothing to show; show special tokens"
            )
    return name


# -- labels, sizes, titles --------------------------------------------------------------------
def clean_label(text: str) -> str:
    s = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )
    if len(s) > MAX_LABEL_CHARS:
        s = s[: MAX_LABEL_CHARS - 1] + "…"
    # a '$' pair would switch matplotlib into mathtext
    return s.replace("$", r"\$")


def _text_inches(labels: Sequence[str], size_pt: float) -> float:
    """Rough width of the longest label (wide CJK glyphs count as 1 em, others as 0.6 em)."""
    widest = 0.0
    for s in labels:
        ems = sum(
            1.0 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in s.replace("\\$", "$")
        )
        widest = max(widest, ems)
    return widest * size_pt / 72.0


def _axis_plan(n: int, tick_pt: float, max_in: float) -> tuple[int, float]:
    """``(label step, axis length in inches)`` so labels of ``tick_pt`` never overlap."""
    pitch = tick_pt * 1.5 / 72.0
    length = max(n * pitch, 1.2)
    if length <= max_in:
        return 1, length
    return max(1, math.ceil(n * pitch / max_in)), max_in


def _set_ticks(axis, labels: Sequence[str], step: int) -> None:
    pos = np.arange(0, len(labels), step)
    axis.set_ticks(pos, [labels[i] for i in pos])


def _stack_title(capture: Capture, name: str) -> str:
    if name == "attentions":
        return "causal self-attention" if capture.kind == "decoder" else "self-attention"
    return _STACK_TITLES.get(name, name)


def _notes(spec: ViewSpec) -> list[str]:
    notes = []
    if spec.hide_special and spec.view != "alignment":  # word alignment never uses special tokens
        notes.append(
            "special tokens hidden, rows renormalized"
            if spec.renormalize
            else "special tokens hidden, rows not renormalized"
        )
    if spec.scale == "log" and spec.view != "alignment":
        notes.append("log colour scale")
    if spec.shared_range and spec.view in ("head", "layer", "lines"):
        notes.append("colour range shared by all layers and heads")
    return notes


def view_title(capture: Capture, spec: ViewSpec, what: str, extra: str = "") -> str:
    """The title: the user's or ``model · what``; notes (hidden tokens, renormalization, …) last."""
    head = spec.title if spec.title is not None else f"{capture.model} · {what}"
    notes = _notes(spec) + ([extra] if extra else [])
    return head + ("\n" + " ".join(f"({n})" for n in notes) if notes else "")


def _wrap(text: str, width_in: float, size_pt: float) -> str:
    chars = max(20, int(width_in * 72.0 / (size_pt * 0.6)))
    lines = []
    for line in text.split("\n"):
        lines.extend(
            textwrap.wrap(line, chars, break_long_words=True, break_on_hyphens=False) or [""]
        )
    return "\n".join(lines)


def view_what(capture: Capture, spec: ViewSpec, name: str) -> str:
    stack = _stack_title(capture, name)
    if spec.view == "model":
        return f"{stack}, all layers × heads"
    if spec.view == "layer":
        return f"{stack}, layer {spec.layer}, all heads"
    if spec.head is None:
        return f"{stack}, layer {spec.layer}, {spec.aggregation} of {capture.stacks[name].shape[1]} heads"
    return f"{stack}, layer {spec.layer}, head {spec.head}"


def view_cmap(spec: ViewSpec, theme: Theme) -> Colormap:
    cmap = mpl.colormaps[spec.cmap or theme.cmap]
    return cmap.with_extremes(bad=theme.gap_color)


def colorbar_label(spec: ViewSpec) -> str:
    return "attention weight" + (" (log scale)" if spec.scale == "log" else "")


# -- shared data preparation ------------------------------------------------------------------
@dataclass(frozen=True)
class ViewTokens:
    rows: list[str]  # display labels of the kept rows
    cols: list[str]
    row_idx: np.ndarray  # original indices
    col_idx: np.ndarray
    row_keep: np.ndarray  # bool [Q] over the original rows
    col_keep: np.ndarray
    row_title: str
    col_title: str


def view_tokens(capture: Capture, spec: ViewSpec, name: str) -> ViewTokens:
    q, k = capture.query_tokens(name), capture.key_tokens(name)
    row_special = q.special
    if name in ("decoder_attentions", "cross_attentions") and capture.outputs is not None:
        # row t predicts outputs[t]: labelled by its output, the row is special when that is
        if spec.row_labels == "output":
            row_special = capture.outputs.special
        elif spec.row_labels == "both":
            row_special = q.special & capture.outputs.special
    row_keep = ~row_special if spec.hide_special else np.ones(len(q), bool)
    col_keep = ~k.special if spec.hide_special else np.ones(len(k), bool)
    row_idx, col_idx = np.flatnonzero(row_keep), np.flatnonzero(col_keep)
    all_rows = capture.row_labels(name, spec.row_labels)
    rows = [clean_label(all_rows[i]) for i in row_idx]
    cols = [clean_label(k.display[i]) for i in col_idx]
    if name in ("decoder_attentions", "cross_attentions"):
        row_title = {
            "input": "query: decoder input",
            "output": "query: predicted token",
            "both": "query: decoder input → predicted token",
        }[spec.row_labels]
        col_title = "key: decoder input" if name == "decoder_attentions" else "key: source"
    else:
        row_title, col_title = "query", "key"
    return ViewTokens(rows, cols, row_idx, col_idx, row_keep, col_keep, row_title, col_title)


def processed_map(arr: np.ndarray, tok: ViewTokens, spec: ViewSpec) -> np.ndarray:
    if not spec.hide_special:
        return np.asarray(arr, dtype=np.float32)
    return hide_tokens(arr, tok.row_keep, tok.col_keep, spec.renormalize)[0]


def stack_norm(capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec) -> Normalize:
    """The colour range over the whole stack, processed like the view (layer by layer)."""
    arr = capture.stacks[name]
    if not spec.hide_special and spec.scale == "linear":
        # nothing hidden: the range of the stored stack itself, without per-layer float copies
        lo, hi = value_range(np.array(stack_range(arr)), "linear")  # same rules as value_range(arr)
        return color_norm(None, "linear", lo, hi)
    lo, hi = math.inf, -math.inf
    for layer in range(arr.shape[0]):
        vmin, vmax = value_range(processed_map(arr[layer], tok, spec), spec.scale)
        lo, hi = min(lo, vmin), max(hi, vmax)
    return color_norm(None, spec.scale, lo, hi)


def _view_norm(
    values: np.ndarray, capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec
) -> Normalize:
    if spec.shared_range:
        return stack_norm(capture, name, tok, spec)
    return color_norm(values, spec.scale)


def causal_cells(capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec) -> np.ndarray | None:
    """bool ``[Q', K']`` of causally masked cells among the shown ones, or None."""
    if not (spec.show_causal_mask and capture.is_causal(name)):
        return None
    mask = tok.col_idx[None, :] > tok.row_idx[:, None]
    return mask if mask.any() else None


def _draw_mask(ax, mask: np.ndarray, theme: Theme, hatch: bool = True) -> None:
    """Grey (and hatch) the masked cells so they read differently from near-zero attention."""
    rgba = np.zeros(mask.shape + (4,), dtype=np.float32)
    rgba[mask] = to_rgba(theme.masked_color)
    img = ax.imshow(rgba, aspect="auto", interpolation="nearest", zorder=2)
    img.set_gid(GID_MASK)
    if not hatch:
        return
    polys = []
    for i, row in enumerate(mask):
        edges = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
        for start, stop in zip(
            np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True
        ):
            x0, x1, y0, y1 = start - 0.5, stop - 0.5, i - 0.5, i + 0.5
            polys.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
    path = MplPath.make_compound_path_from_polys(np.asarray(polys, dtype=float))
    patch = PathPatch(
        path, facecolor="none", edgecolor=theme.hatch_color, hatch="///", linewidth=0, zorder=3
    )
    patch.set_gid(GID_MASK_HATCH)
    ax.add_patch(patch)


# -- the views --------------------------------------------------------------------------------
def _new_figure(spec: ViewSpec, size: tuple[float, float], title: str, theme: Theme) -> Figure:
    """A constrained-layout figure, widened (up to 14 in) so the title fits, with the title set."""
    if spec.figsize is not None:
        width, height = (float(v) for v in spec.figsize)
    else:
        width, height = size
        need = max(_text_inches([line], theme.title_size) for line in title.split("\n")) + 0.4
        width = max(width, min(need, 14.0))
    fig = Figure(figsize=(round(width, 2), round(height, 2)), dpi=spec.dpi, layout="constrained")
    fig.suptitle(
        _wrap(title, width - 0.3, theme.title_size),
        color=theme.text_color,
        fontsize=theme.title_size,
    )
    return fig


def _head_view(capture: Capture, spec: ViewSpec, name: str, theme: Theme) -> Figure:
    tok = view_tokens(capture, spec, name)
    data = processed_map(select_map(capture, name, spec.layer, spec.head, spec.aggregation), tok, spec)
    norm = _view_norm(data, capture, name, tok, spec)

    max_side = 14.0
    xstep, width = _axis_plan(len(tok.cols), theme.tick_size, max_side)
    ystep, height = _axis_plan(len(tok.rows), theme.tick_size, max_side)
    ylab = _text_inches(tok.rows, theme.tick_size) + 0.6
    xlab = _text_inches(tok.cols, theme.tick_size) + 0.6
    title_in = 3 * theme.title_size * 1.4 / 72
    title = view_title(capture, spec, view_what(capture, spec, name))
    fig = _new_figure(
        spec, (max(4.0, width + ylab + 1.6), max(3.5, height + xlab + title_in + 0.4)), title, theme
    )
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap=view_cmap(spec, theme), norm=norm, aspect="auto", interpolation="nearest")
    im.set_gid(GID_ATTENTION)
    mask = causal_cells(capture, name, tok, spec)
    if mask is not None:
        _draw_mask(ax, mask, theme)
    _set_ticks(ax.xaxis, tok.cols, xstep)
    _set_ticks(ax.yaxis, tok.rows, ystep)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel(tok.col_title)
    ax.set_ylabel(tok.row_title)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label(colorbar_label(spec))
    return fig


def _layer_view(capture: Capture, spec: ViewSpec, name: str, theme: Theme) -> Figure:
    tok = view_tokens(capture, spec, name)
    maps = processed_map(capture.stacks[name][spec.layer], tok, spec)  # [H, Q', K']
    norm = _view_norm(maps, capture, name, tok, spec)
    n_heads = maps.shape[0]
    ncols = math.ceil(math.sqrt(n_heads))
    nrows = math.ceil(n_heads / ncols)
    labelled = max(len(tok.rows), len(tok.cols)) <= 24
    cell = 2.4 if labelled else 1.8
    lab = _text_inches(tok.rows + tok.cols, theme.tick_size) + 0.3 if labelled else 0.2
    title_in = 3 * theme.title_size * 1.4 / 72
    size = (min(30.0, ncols * cell + lab + 1.2), min(30.0, nrows * cell + lab + title_in))
    fig = _new_figure(spec, size, view_title(capture, spec, view_what(capture, spec, name)), theme)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    mask = causal_cells(capture, name, tok, spec)
    cmap = view_cmap(spec, theme)
    im = None
    for h, ax in enumerate(axes.ravel()):
        if h >= n_heads:
            ax.remove()
            continue
        im = ax.imshow(maps[h], cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        im.set_gid(GID_ATTENTION)
        if mask is not None:
            _draw_mask(ax, mask, theme, hatch=max(mask.shape) <= 64)
        ax.set_title(f"head {h}", fontsize=theme.base_size)
        if labelled:
            _set_ticks(ax.xaxis, tok.cols, 1)
            _set_ticks(ax.yaxis, tok.rows, 1)
            ax.tick_params(axis="x", labelrotation=90)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    cb = fig.colorbar(im, ax=list(fig.axes), fraction=0.04, pad=0.02)
    cb.set_label(colorbar_label(spec))
    return fig


def _bins(n: int, t: int) -> np.ndarray:
    return np.linspace(0, n, t + 1).round().astype(np.int64)[:-1]


def _pool(m: np.ndarray, tq: int, tk: int) -> np.ndarray:
    """Mean-pool ``[Q, K]`` down to ``[tq, tk]`` (identity when already that size)."""
    q, k = m.shape
    out = np.asarray(m, dtype=np.float64)
    if tq < q:
        edges = _bins(q, tq)
        out = np.add.reduceat(out, edges, axis=0) / np.diff(np.append(edges, q))[:, None]
    if tk < k:
        edges = _bins(k, tk)
        out = np.add.reduceat(out, edges, axis=1) / np.diff(np.append(edges, k))[None, :]
    return out


def _upsample(m: np.ndarray, rep: int) -> np.ndarray:
    return m if rep == 1 else np.repeat(np.repeat(m, rep, axis=0), rep, axis=1)


def _model_view(capture: Capture, spec: ViewSpec, name: str, theme: Theme) -> Figure:
    tok = view_tokens(capture, spec, name)
    arr = capture.stacks[name]
    n_layers, n_heads = arr.shape[:2]
    q, k = len(tok.row_idx), len(tok.col_idx)
    pq = max(1, min(q, MODEL_IMAGE_PIXELS // n_layers - 1))  # pooled tile size
    pk = max(1, min(k, MODEL_IMAGE_PIXELS // n_heads - 1))
    # tiny tiles are enlarged so the 1-pixel gaps stay thin next to them
    rep = max(
        1,
        min(
            math.ceil(16 / max(pq, pk)),
            MODEL_IMAGE_PIXELS // (max(n_layers, n_heads) * max(pq, pk)),
        ),
    )
    tq, tk = pq * rep, pk * rep
    canvas = np.full((n_layers * (tq + 1) - 1, n_heads * (tk + 1) - 1), np.nan, dtype=np.float32)
    for layer in range(n_layers):
        maps = processed_map(arr[layer], tok, spec)
        for h in range(n_heads):
            y, x = layer * (tq + 1), h * (tk + 1)
            canvas[y : y + tq, x : x + tk] = _upsample(_pool(maps[h], pq, pk), rep)
    norm = color_norm(canvas, spec.scale)

    tile_w = min(1.4, max(0.35, 14.0 / n_heads))
    tile_h = min(1.4, max(0.25, tile_w * pq / pk, 10.0 / n_layers if n_layers < 8 else 0.25))
    title_in = 3 * theme.title_size * 1.4 / 72
    size = (min(24.0, n_heads * tile_w + 2.6), min(24.0, n_layers * tile_h + 1.2 + title_in))
    fig = _new_figure(spec, size, view_title(capture, spec, view_what(capture, spec, name)), theme)
    ax = fig.add_subplot()
    im = ax.imshow(
        canvas, cmap=view_cmap(spec, theme), norm=norm, aspect="auto", interpolation="nearest"
    )
    im.set_gid(GID_ATTENTION)
    mask = causal_cells(capture, name, tok, spec)
    if mask is not None:
        pooled = _upsample(_pool(mask.astype(np.float64), pq, pk), rep) >= 1.0 - 1e-9
        full = np.zeros(canvas.shape, dtype=bool)
        for layer in range(n_layers):
            for h in range(n_heads):
                y, x = layer * (tq + 1), h * (tk + 1)
                full[y : y + tq, x : x + tk] = pooled
        _draw_mask(ax, full, theme, hatch=False)
    lstep, _ = _axis_plan(n_layers, theme.tick_size, size[1] - 1.5)
    hstep, _ = _axis_plan(n_heads, theme.tick_size, size[0] - 2.0)
    ax.set_yticks(
        np.arange(0, n_layers, lstep) * (tq + 1) + (tq - 1) / 2,
        [str(i) for i in range(0, n_layers, lstep)],
    )
    ax.set_xticks(
        np.arange(0, n_heads, hstep) * (tk + 1) + (tk - 1) / 2,
        [str(i) for i in range(0, n_heads, hstep)],
    )
    ax.set_ylabel("layer")
    ax.set_xlabel("head")
    for spine in ax.spines.values():
        spine.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label(colorbar_label(spec))
    return fig


def _lines_view(capture: Capture, spec: ViewSpec, name: str, theme: Theme) -> Figure:
    tok = view_tokens(capture, spec, name)
    data = processed_map(select_map(capture, name, spec.layer, spec.head, spec.aggregation), tok, spec)
    norm = _view_norm(data, capture, name, tok, spec)
    weights = np.nan_to_num(
        np.clip(np.asarray(np.ma.filled(norm(data), 0.0), dtype=np.float64), 0.0, 1.0)
    )  # [Q', K'] in 0..1
    nq, nk = len(tok.rows), len(tok.cols)
    n = max(nq, nk)
    step, height = _axis_plan(n, theme.tick_size, 20.0)
    lab = _text_inches(tok.rows + tok.cols, theme.tick_size)
    title_in = 3 * theme.title_size * 1.4 / 72
    title = view_title(capture, spec, view_what(capture, spec, name), "line opacity ∝ attention")
    fig = _new_figure(
        spec, (max(5.0, 2 * lab + 3.5), max(3.0, height + title_in + 0.8)), title, theme
    )
    ax = fig.add_subplot()

    ii, jj = np.nonzero(weights > 0.02)
    w = weights[ii, jj]
    if w.size > MAX_LINES:
        keep = np.argpartition(w, -MAX_LINES)[-MAX_LINES:]
        ii, jj, w = ii[keep], jj[keep], w[keep]
    order = np.argsort(w, kind="stable")  # strongest drawn last, on top
    ii, jj, w = ii[order], jj[order], w[order]
    segments = np.stack(
        [
            np.stack([np.zeros_like(w), -ii.astype(float)], 1),
            np.stack([np.ones_like(w), -jj.astype(float)], 1),
        ],
        1,
    )
    colors = np.tile(to_rgba(theme.line_colors[0]), (w.size, 1))
    colors[:, 3] = 0.08 + 0.92 * w
    lines = LineCollection(
        segments.reshape(-1, 2, 2), colors=colors, linewidths=0.4 + 2.6 * w, capstyle="round"
    )
    lines.set_gid(GID_LINES)
    ax.add_collection(lines)
    for i in range(0, nq, step):
        ax.text(-0.03, -i, tok.rows[i], ha="right", va="center", fontsize=theme.tick_size)
    for j in range(0, nk, step):
        ax.text(1.03, -j, tok.cols[j], ha="left", va="center", fontsize=theme.tick_size)
    ax.text(-0.03, 1.0, tok.row_title, ha="right", va="bottom", fontsize=theme.base_size)
    ax.text(1.03, 1.0, tok.col_title, ha="left", va="bottom", fontsize=theme.base_size)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-(n - 1) - 0.6, 1.6)
    ax.set_axis_off()
    return fig


def _alignment_view(capture: Capture, spec: ViewSpec, name: str, theme: Theme) -> Figure:
    from .alignment import word_alignment  # lazy: only this view needs it

    assert capture.outputs is not None
    result = word_alignment(
        capture.attention(name),
        list(capture.source.word_ids),
        list(capture.outputs.word_ids),
        spec.alignment_layer,
        spec.alignment_head,
    )
    matrix = np.asarray(result.matrix, dtype=np.float64)  # [n_tgt_words, n_src_words]
    n_tgt, n_src = matrix.shape
    src_words = capture.text.split()
    tgt_words = capture.output_text.split()
    src = [clean_label(src_words[i] if i < len(src_words) else f"w{i}") for i in range(n_src)]
    tgt = [clean_label(tgt_words[j] if j < len(tgt_words) else f"w{j}") for j in range(n_tgt)]

    def xs(n: int) -> np.ndarray:
        return np.array([0.5]) if n == 1 else np.linspace(0.0, 1.0, n)

    xs_src, xs_tgt = xs(n_src), xs(n_tgt)
    n = max(n_src, n_tgt, 1)
    words_in = _text_inches(src + tgt, theme.tick_size)
    rotate = n * (words_in / 2 + 0.15) > 16
    width = min(24.0, max(5.0, n * (0.45 if rotate else words_in + 0.3) + 1.5))
    title_in = 3 * theme.title_size * 1.4 / 72
    layer = "mean of all layers" if result.layer is None else f"layer {result.layer}"
    head = "mean of heads" if result.head is None else f"head {result.head}"
    what = f"word alignment from cross-attention, {layer}, {head} (source above, output below)"
    fig = _new_figure(
        spec,
        (width, 2.6 + (2 * words_in if rotate else 0.6) + title_in),
        view_title(capture, spec, what),
        theme,
    )
    ax = fig.add_subplot()

    top = matrix.max() if matrix.size and matrix.max() > 0 else 1.0
    pairs = [(i, j) for i, j in result.pairs if 0 <= i < n_src and 0 <= j < n_tgt]
    strength = np.array([matrix[j, i] / top for i, j in pairs], dtype=np.float64)
    segments = [[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in pairs]
    colors = np.tile(to_rgba(theme.line_colors[0]), (len(pairs), 1))
    if len(pairs):
        colors[:, 3] = 0.35 + 0.65 * np.clip(strength, 0, 1)
    lines = LineCollection(segments, colors=colors, linewidths=1.0 + 2.0 * np.clip(strength, 0, 1))
    lines.set_gid(GID_ALIGNMENT)
    ax.add_collection(lines)
    rot = 60 if rotate else 0
    for i, word in enumerate(src):
        ax.text(
            xs_src[i],
            1.04,
            word,
            ha="left" if rotate else "center",
            va="bottom",
            rotation=rot,
            rotation_mode="anchor",
            fontsize=theme.tick_size,
        )
    for j, word in enumerate(tgt):
        ax.text(
            xs_tgt[j],
            -0.04,
            word,
            ha="right" if rotate else "center",
            va="top",
            rotation=rot,
            rotation_mode="anchor",
            fontsize=theme.tick_size,
        )
    ax.plot(xs_src, np.ones(n_src), "o", color=theme.grid_color, markersize=3)
    ax.plot(xs_tgt, np.zeros(n_tgt), "o", color=theme.grid_color, markersize=3)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.3, 1.3)
    ax.set_axis_off()
    return fig


_BUILDERS = {
    "head": _head_view,
    "layer": _layer_view,
    "model": _model_view,
    "lines": _lines_view,
    "alignment": _alignment_view,
}


def build_figure(capture: Capture, spec: ViewSpec) -> Figure:
    """Draw one view as a new :class:`~matplotlib.figure.Figure` (no pyplot, no canvas).

    Validates ``spec`` first, makes CJK labels drawable (:func:`ensure_cjk_font`), builds the
    figure under the theme's rcParams with constrained layout and colours it with
    :func:`apply_theme`. ``fig.dpi`` is ``spec.dpi``; the pixel size of a PNG is
    ``fig.get_size_inches() * spec.dpi``.

    Raises
    ------
    InputError : see :func:`validate_spec`.
    """
    name = validate_spec(capture, spec)
    theme = get_theme(spec.theme)
    ensure_cjk_font()
    with mpl.rc_context(theme.rc()):
        fig = _BUILDERS[spec.view](capture, spec, name, theme)
    return apply_theme(fig, theme)


# -- export -----------------------------------------------------------------------------------
def _format_of(path: Path, fmt: str | None) -> str:
    f = (fmt or path.suffix).lower().lstrip(".")
    if f == "jpg" or f not in FORMATS:
        shown = fmt if fmt else (path.suffix or "no extension")
        raise InputError(
            f"cannot export {path.name} as '{shown}': use a .png, .svg or .pdf file name (or fmt=)"
        )
    return f


def _check_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(
            f"cannot write {path}: the folder {folder} does not exist; create it or choose another path"
        )
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder; give a file name")


def _save(fig: Figure, path: Path, fmt: str, dpi: int) -> Path:
    def write(tmp: str) -> None:
        fig.savefig(
            tmp, format=fmt, dpi=dpi, facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor()
        )

    return atomic_write(path, write, suffix=f".{fmt}")


def export_figure(
    capture: Capture, spec: ViewSpec, path: str | Path, fmt: str | None = None
) -> Path:
    """Build the view and write it atomically as PNG, SVG or PDF.

    Parameters
    ----------
    path : target file; an existing file is only replaced by a complete new one
    fmt : ``png`` | ``svg`` | ``pdf``; None = from the extension of ``path``

    Returns
    -------
    The path written.

    Raises
    ------
    InputError : bad spec, unknown format, dpi outside 72–600 (nothing is written)
    ExportError : the folder is missing / not writable or writing failed (no file is left
        behind, an existing file is kept)
    """
    target = Path(path)
    f = _format_of(target, fmt)
    validate_spec(capture, spec)
    _check_folder(target)
    fig = build_figure(capture, spec)
    return _save(fig, target, f, spec.dpi)


def layer_paths(path: str | Path, n_layers: int) -> list[Path]:
    """``OUT.png`` → ``OUT-L00.png``, ``OUT-L01.png``, … (at least 2 digits)."""
    target = Path(path)
    digits = max(2, len(str(n_layers - 1)))
    return [
        target.with_name(f"{target.stem}-L{i:0{digits}d}{target.suffix}") for i in range(n_layers)
    ]


def export_all_layers(
    capture: Capture, spec: ViewSpec, path: str | Path, fmt: str | None = None
) -> list[Path]:
    """One file per layer of the spec's stack: ``OUT-L00.png``, ``OUT-L01.png``, …

    Everything (spec for every layer, format, folder) is validated before the first file is
    written. Only the head, layer and lines views have a per-layer form.

    Returns
    -------
    The paths written, in layer order.
    """
    if spec.view not in ("head", "layer", "lines"):
        raise InputError(
            f"the {spec.view} view has no per-layer form; export all layers from the head, layer or lines view"
        )
    target = Path(path)
    f = _format_of(target, fmt)
    name = validate_spec(capture, spec)
    n_layers = capture.stacks[name].shape[0]
    specs = [replace(spec, layer=i) for i in range(n_layers)]
    for s in specs:
        validate_spec(capture, s)
    paths = layer_paths(target, n_layers)
    _check_folder(target)
    for p in paths:
        if p.is_dir():
            raise ExportError(f"cannot write {p}: it is a folder; choose another file name")
    written = []
    for s, p in zip(specs, paths, strict=True):
        written.append(_save(build_figure(capture, s), p, f, s.dpi))
    return written
