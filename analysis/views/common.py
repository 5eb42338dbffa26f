"""What the views share: token labels, titles, colour ranges, the causal-mask shape, sizes.

Pure functions of a capture and a :class:`~analysis.views.spec.ViewSpec` (plus matplotlib's colour
and path helpers); no figure is created here.
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Colormap, Normalize
from matplotlib.path import Path as MplPath

from ..aggregate import color_norm, hide_tokens, stack_range, stored_range, value_range
from ..result import RANDOM_WEIGHTS, Capture
from ..store import is_stored
from ..themes import Theme
from ..words import group_note
from .spec import STACK_TITLES, ViewSpec

#: longer token labels are shortened with "…"
MAX_LABEL_CHARS = 24
#: artist ids (``Artist.get_gid``) tests and the window can look for
GID_ATTENTION = "attention"
GID_MASK = "causal-mask"
GID_MASK_HATCH = "causal-mask-hatch"
GID_LINES = "attention-lines"
GID_ALIGNMENT = "alignment-lines"
GID_SELECTED = "selected"

#: decoder/cross stacks: their rows are decoder positions
DECODER_ROW_STACKS = ("decoder_attentions", "cross_attentions")


# -- labels -----------------------------------------------------------------------------------
def clean_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A token as a figure label: control characters escaped, at most ``limit`` characters,
    ``$`` escaped (a pair would switch matplotlib into mathtext)."""
    s = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def text_inches(labels: Sequence[str], size_pt: float) -> float:
    """Rough width of the longest label (wide CJK glyphs count as 1 em, others as 0.6 em)."""
    widest = 0.0
    for s in labels:
        ems = sum(1.0 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in s.replace("\\$", "$"))
        widest = max(widest, ems)
    return widest * size_pt / 72.0


def axis_plan(n: int, tick_pt: float, max_in: float) -> tuple[int, float]:
    """``(label step, axis length in inches)`` so labels of ``tick_pt`` never overlap."""
    pitch = tick_pt * 1.5 / 72.0
    length = max(n * pitch, 1.2)
    if length <= max_in:
        return 1, length
    return max(1, math.ceil(n * pitch / max_in)), max_in


def labels_that_fit(length_in: float, tick_pt: float, pitch: float = 1.5) -> int:
    """How many labels of ``tick_pt`` points fit along ``length_in`` inches (see :func:`tick_step`)."""
    return max(1, int(length_in * 72.0 / (tick_pt * pitch)))


def tick_step(n: int, length_in: float, tick_pt: float, pitch: float = 1.5) -> int:
    """Label every k-th of ``n`` items along ``length_in`` inches so labels never overlap."""
    return max(1, math.ceil(n / labels_that_fit(length_in, tick_pt, pitch)))


#: column labels of CJK words up to this many characters are written horizontally or at 45°
SHORT_CJK_CHARS = 8


def has_wide(text: str) -> bool:
    """True when ``text`` has a wide (CJK) character."""
    return any(unicodedata.east_asian_width(c) in "WF" for c in text)


def col_label_angle(labels: Sequence[str], widths: Sequence[float], pitch: float) -> int:
    """The rotation of x-axis labels (one rule for the window and every export): short CJK words
    (a Korean sentence in words) are written horizontally when each fits its column (``widths``
    and ``pitch``, the distance between shown labels, in one unit), else at 45°; any other label
    set is rotated 90°, as before (a long row of Latin pieces needs it)."""
    shown = [(s, w) for s, w in zip(labels, widths, strict=True) if s]
    if not shown or not any(has_wide(s) for s, _ in shown) or any(len(s) > SHORT_CJK_CHARS for s, _ in shown):
        return 90
    return 0 if max(w for _, w in shown) <= 0.92 * pitch else 45


def label_extent(width: float, line: float, angle: int) -> float:
    """How far labels of ``width`` (and ``line`` height) reach below the axis at ``angle``."""
    if angle == 0:
        return line
    if angle == 45:
        return (width + line) * 0.7072
    return width


def set_col_ticks(ax, labels: Sequence[str], step: int, pitch_in: float, size_pt: float) -> int:
    """x ticks of every ``step``-th label, rotated by :func:`col_label_angle` (``pitch_in``: inches
    between neighbouring columns); returns the angle."""
    pos = np.arange(0, len(labels), step)
    shown = [labels[int(i)] for i in pos]
    angle = col_label_angle(shown, [text_inches([s], size_pt) for s in shown], pitch_in * step)
    ha = {0: "center", 45: "right", 90: "center"}[angle]
    ax.set_xticks(pos, shown, rotation=angle, ha=ha, rotation_mode="anchor" if angle == 45 else "default")
    return angle


def set_ticks(axis, labels: Sequence[str], step: int) -> None:
    pos = np.arange(0, len(labels), step)
    axis.set_ticks(pos, [labels[int(i)] for i in pos])


def wrap(text: str, width_in: float, size_pt: float, break_words: bool = True) -> str:
    """``text`` wrapped to about ``width_in`` inches at ``size_pt`` (at least 20 characters a
    line); ``break_words=False`` keeps a long word (a model name) whole."""
    chars = max(20, int(width_in * 72.0 / (size_pt * 0.6)))
    lines = []
    for line in text.split("\n"):
        lines.extend(textwrap.wrap(line, chars, break_long_words=break_words, break_on_hyphens=False) or [""])
    return "\n".join(lines)


def stack_title(capture: Capture, name: str) -> str:
    if name == "attentions":
        return "causal self-attention" if capture.kind == "decoder" else "self-attention"
    return STACK_TITLES.get(name, name)


def heads_what(spec: ViewSpec, n_heads: int) -> str:
    return f"{spec.aggregation} of {n_heads} heads" if spec.head is None else f"head {spec.head}"


def notes(spec: ViewSpec) -> list[str]:
    out = []
    if spec.hide_special and spec.view not in ("alignment", "steps", "rollout", "flow", "stats", "masks"):
        out.append("special tokens hidden, rows renormalised" if spec.renormalize
                   else "special tokens hidden, rows not renormalised")
    if spec.scale == "log" and spec.view in ("head", "layer", "model", "lines", "compare"):
        out.append("log colour scale")
    if spec.shared_range and spec.view in ("head", "layer", "model", "lines"):
        out.append("colour range shared by all layers and heads")
    return out


def view_title(capture: Capture, spec: ViewSpec, what: str, extra: str = "") -> str:
    """The title: the user's or ``model · what``; notes (hidden tokens, renormalization, …) last."""
    head = spec.title if spec.title is not None else f"{capture.model} · {what}"
    word_note = group_note(capture)
    ns = ([word_note] if word_note else []) + notes(spec) + ([extra] if extra else [])
    if any(RANDOM_WEIGHTS in n for n in capture.notes):
        ns.insert(0, "some weights random: not reproducible")
    return head + ("\n" + " ".join(f"({n})" for n in ns) if ns else "")


def view_cmap(spec: ViewSpec, theme: Theme, bad: str | None = None) -> Colormap:
    cmap = mpl.colormaps[spec.cmap or theme.cmap]
    return cmap.with_extremes(bad=bad or theme.gap_color)


def colorbar_label(spec: ViewSpec) -> str:
    return "attention weight" + (" (log scale)" if spec.scale == "log" else "")


# -- tokens shown -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewTokens:
    """The rows and columns a map of one stack shows.

    rows, cols : display labels of the kept rows / columns
    row_idx, col_idx : their original indices; row_keep, col_keep : bool masks over the originals
    row_title, col_title : what the rows and columns are (axis titles)
    """

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    row_idx: np.ndarray
    col_idx: np.ndarray
    row_keep: np.ndarray
    col_keep: np.ndarray
    row_title: str
    col_title: str


ROW_TITLES = {
    "input": "query: decoder input at t",
    "predicts": "query: token predicted at t",
    "both": "query: input → predicted token",
}


def axis_titles(capture: Capture, name: str, mode: str) -> tuple[str, str]:
    """What the rows and the columns of a map of stack ``name`` are (words of a word-level capture)."""
    if name in DECODER_ROW_STACKS and capture.outputs is not None:
        col = "key: decoder input" if name == "decoder_attentions" else "key: source token"
        row = ROW_TITLES[mode]
        if capture.group == "words":
            col = "key: decoder inputs of the word" if name == "decoder_attentions" else "key: source word"
            row = row.replace("token", "word").replace("input at t", "inputs of word t")
        return row, col
    if capture.group == "words":
        return "query word", "key word"
    return "query token", "key token"


# per capture (weakly): switching heads must not rebuild hundreds of labels each time
_TOKENS_CACHE: weakref.WeakKeyDictionary[Capture, dict[tuple, ViewTokens]] = weakref.WeakKeyDictionary()


def view_tokens(capture: Capture, spec: ViewSpec, name: str) -> ViewTokens:
    """The rows and columns a map of stack ``name`` shows (cached per capture and options)."""
    per_capture = _TOKENS_CACHE.setdefault(capture, {})
    key = (name, spec.hide_special, spec.rows)
    tok = per_capture.get(key)
    if tok is None:
        tok = per_capture[key] = _view_tokens(capture, spec, name)
    return tok


def _view_tokens(capture: Capture, spec: ViewSpec, name: str) -> ViewTokens:
    q, k = capture.query_tokens(name), capture.key_tokens(name)
    mode = spec.rows
    row_special = q.special
    if name in DECODER_ROW_STACKS and capture.outputs is not None:
        # row t predicts outputs[t]: labelled by its output, the row is special when that is
        if mode == "predicts":
            row_special = capture.outputs.special
        elif mode == "both":
            row_special = q.special & capture.outputs.special
    row_keep = ~row_special if spec.hide_special else np.ones(len(q), bool)
    col_keep = ~k.special if spec.hide_special else np.ones(len(k), bool)
    row_idx, col_idx = np.flatnonzero(row_keep), np.flatnonzero(col_keep)
    for a in (row_keep, col_keep, row_idx, col_idx):  # shared by every map of the capture: read-only
        a.setflags(write=False)
    all_rows = capture.row_labels(name, mode)
    rows = tuple(clean_label(all_rows[i]) for i in row_idx)
    cols = tuple(clean_label(k.display[i]) for i in col_idx)
    row_title, col_title = axis_titles(capture, name, mode)
    return ViewTokens(rows, cols, row_idx, col_idx, row_keep, col_keep, row_title, col_title)


def processed_map(arr: np.ndarray, tok: ViewTokens, spec: ViewSpec, row0: int | None = None) -> np.ndarray:
    """``arr`` ``[..., Q, K]`` as shown: float32, hidden rows/columns dropped (renormalised). With
    ``row0``, ``arr`` holds the rows ``row0, row0 + 1, …`` of the maps only (rows are hidden and
    renormalised one by one, so a long map can be processed a block of rows at a time)."""
    if not spec.hide_special:
        return np.asarray(arr, dtype=np.float32)
    rows = tok.row_keep if row0 is None else tok.row_keep[row0:row0 + np.shape(arr)[-2]]
    return hide_tokens(arr, rows, tok.col_keep, spec.renormalize)[0]


# -- colour ranges ----------------------------------------------------------------------------
def stack_norm(capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec) -> Normalize:
    """The colour range over the whole stack, processed like the view (layer by layer; a long
    capture's stored stack from its recorded ranges, or map by map when tokens are hidden)."""
    arr = capture.stacks[name]
    if not spec.hide_special and spec.scale == "linear":
        # nothing hidden: the range of the stored stack itself, without per-layer float copies
        lo, hi = value_range(np.array(stack_range(arr)), "linear")  # same rules as value_range(arr)
        return color_norm(None, "linear", lo, hi)
    if not spec.hide_special and is_stored(arr):
        return color_norm(None, spec.scale, *stored_range(arr, spec.scale))
    lo, hi = math.inf, -math.inf
    for maps in _layers_or_maps(arr):
        vmin, vmax = value_range(processed_map(maps, tok, spec), spec.scale)
        lo, hi = min(lo, vmin), max(hi, vmax)
    return color_norm(None, spec.scale, lo, hi)


def _layers_or_maps(arr):
    """Every layer ``[H, Q, K]`` of an in-memory stack; every map ``[Q, K]`` of a stored one (a
    stored layer of a long capture is too big to read at once)."""
    n_layers, n_heads = arr.shape[:2]
    if not is_stored(arr):
        yield from (arr[layer] for layer in range(n_layers))
        return
    for layer in range(n_layers):
        for head in range(n_heads):
            yield arr[layer, head]


# per capture (weakly: a new capture must never inherit a dead one's ranges through a reused id)
_NORM_CACHE: weakref.WeakKeyDictionary[Capture, dict[tuple, Normalize]] = weakref.WeakKeyDictionary()


def shared_norm(capture: Capture, name: str, spec: ViewSpec) -> Normalize:
    """The stack-wide colour range (cached per capture, stack and display options)."""
    per_capture = _NORM_CACHE.setdefault(capture, {})
    key = (name, spec.hide_special, spec.renormalize, spec.scale, spec.rows)
    norm = per_capture.get(key)
    if norm is None:
        norm = stack_norm(capture, name, view_tokens(capture, spec, name), spec)
        per_capture[key] = norm
    return norm


def view_norm(values: np.ndarray, capture: Capture, name: str, spec: ViewSpec) -> Normalize:
    """The shared stack range, or the range of ``values`` (what this view shows)."""
    if spec.shared_range:
        return shared_norm(capture, name, spec)
    return color_norm(values, spec.scale)


# -- the causal mask --------------------------------------------------------------------------
def causal_cells(capture: Capture, name: str, tok: ViewTokens, spec: ViewSpec) -> np.ndarray | None:
    """bool ``[Q', K']`` of causally masked cells among the shown ones, or None."""
    if not (spec.show_causal_mask and capture.is_causal(name)):
        return None
    mask = tok.col_idx[None, :] > tok.row_idx[:, None]
    return mask if mask.any() else None


def mask_path(mask: np.ndarray) -> MplPath:
    """One path covering the True cells of ``mask`` ``[rows, cols]`` (cell (i, j) spans
    x ∈ [j − ½, j + ½], y ∈ [i − ½, i + ½]): a rectangle per run of True cells in a row."""
    m = np.asarray(mask, dtype=bool)
    padded = np.zeros((m.shape[0], m.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = m
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row order: each run has one start and one end
    if len(rows) == 0:
        return MplPath(np.zeros((1, 2)))
    x0, x1 = starts - 0.5, ends - 0.5
    y0, y1 = rows - 0.5, rows + 0.5
    verts = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                      np.stack([x0, y1], 1), np.stack([x0, y0], 1)], axis=1).reshape(-1, 2)
    codes = np.tile([MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY], len(rows))
    return MplPath(verts, codes)


# -- sizes --------------------------------------------------------------------------------------
def title_inches(theme: Theme, lines: int = 3) -> float:
    return lines * theme.title_size * 1.4 / 72


# per character and font chain: its advance width in ems (measured once with Agg)
_EMS: dict[tuple[str, tuple[str, ...]], float] = {}
_MEASURE: list = []


def text_width(text: str, size_pt: float) -> float:
    """Width of one line of ``text`` in inches at ``size_pt`` in the current font chain (the sum
    of its characters' advance widths, measured once each; within about 1 % of the drawn text)."""
    chain = tuple(mpl.rcParams["font.family"])
    missing = {c for c in text if (c, chain) not in _EMS}
    if missing:
        from matplotlib.backends.backend_agg import RendererAgg
        from matplotlib.font_manager import FontProperties

        if not _MEASURE:
            _MEASURE.append(RendererAgg(1, 1, 72))  # 72 dpi: pixels are points
        prop = FontProperties(size=100)
        for c in missing:
            _EMS[(c, chain)] = _MEASURE[0].get_text_width_height_descent(c, prop, ismath=False)[0] / 100
    return sum(_EMS[(c, chain)] for c in text) * size_pt / 72


def wrap_to_width(text: str, width_in: float, size_pt: float) -> str:
    """``text`` wrapped at spaces so every line is at most ``width_in`` inches at ``size_pt``
    (:func:`text_width`); a word longer than a line stays whole; line breaks are kept."""
    out = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and text_width(trial, size_pt) > width_in:
                out.append(line)
                line = word
            else:
                line = trial
        out.append(line)
    return "\n".join(out)


#: under constrained layout an axes gets about this much of its grid cell (labels and colour bars
#: take the rest); :func:`axes_width`
CELL_SHARE = 0.75


def axes_width(ax) -> float:
    """About how wide ``ax`` is drawn, in inches: :data:`CELL_SHARE` of its grid cell under
    constrained layout (which ignores the subplot margins), else its position."""
    fig = ax.get_figure()
    fig_w = float(fig.get_size_inches()[0]) if fig is not None else 6.0
    spec = ax.get_subplotspec()
    if spec is not None and fig is not None and fig.get_layout_engine() is not None:
        grid = spec.get_gridspec()
        ratios = list(grid.get_width_ratios() or [1] * grid.ncols)
        return fig_w * sum(ratios[c] for c in spec.colspan) / sum(ratios) * CELL_SHARE - 0.3
    return ax.get_position().width * fig_w


def panel_title(ax, text: str, theme: Theme, loc: str = "center") -> str:
    """Title ``ax`` with ``text`` at the theme's title size, or at its base size where that
    needs fewer lines, wrapped to the axes' width (a panel's title must not run into its
    neighbour's); returns the wrapped text.

    The size is set here rather than taken from rcParams: the window draws outside the theme's
    ``rc_context``.
    """
    width = max(axes_width(ax), 1.0)
    size = theme.title_size
    wrapped = wrap_to_width(text, width, size)
    if wrapped.count("\n") > text.count("\n"):
        smaller = wrap_to_width(text, width, theme.base_size)
        if smaller.count("\n") < wrapped.count("\n"):
            size, wrapped = theme.base_size, smaller
    ax.set_title(wrapped, fontsize=size, color=theme.text_color, loc=loc)
    return wrapped
