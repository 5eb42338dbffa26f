"""The Lines view (bertviz's "head view"): query tokens left, key tokens right, a line from
query i to key j whose opacity and width grow with the attention weight.

One map (a head, or the mean/max of a layer's heads) in one colour, or every head of the layer in
its own colour. :func:`lines_data` builds it, :class:`LinesDrawer` draws it (in the window, with
the lines of the token under the mouse highlighted; in every export).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from ..aggregate import color_norm
from ..result import Capture
from ..store import is_stored
from ..themes import Theme
from .common import (
    GID_LINES,
    heads_what,
    processed_map,
    stack_title,
    text_inches,
    tick_step,
    title_inches,
    view_norm,
    view_title,
    view_tokens,
)
from .spec import ViewSpec

#: lines whose strength (0–1) is below this are not drawn (they would be invisible anyway)
MIN_STRENGTH = 0.02
#: at most this many lines are drawn (the strongest)
MAX_LINES = 4000
#: x of the query and key columns
XQ, XK = 0.3, 0.7


@dataclass(frozen=True)
class LinesData:
    """strength : ``[G, Q', K']`` in 0–1 (the colour scale's position of each weight); G = 1 for
    one map, = heads with ``lines_per_head``. weights : the attention values themselves."""

    strength: np.ndarray
    weights: np.ndarray
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    row_title: str
    col_title: str
    title: str
    per_head: bool


def lines_data(capture: Capture, spec: ViewSpec) -> LinesData:
    name = capture.resolve_stack(spec.stack)
    tok = view_tokens(capture, spec, name)
    arr = capture.stacks[name]
    n_heads = arr.shape[1]
    weights: np.ndarray
    if is_stored(arr):  # a long capture on disk: a block of rows at a time (every head's as float16)
        layer = None
        if spec.lines_per_head:
            weights = np.concatenate([_stored_rows(arr, spec.layer, [h], tok, spec, "one", np.float16)
                                      for h in range(n_heads)])
        elif spec.head is not None:
            weights = _stored_rows(arr, spec.layer, [spec.head], tok, spec, "one")
        else:  # the heads as shown, aggregated one by one (as the in-memory mean/max over axis 0)
            weights = _stored_rows(arr, spec.layer, list(range(n_heads)), tok, spec, spec.aggregation)
    else:
        layer = processed_map(arr[spec.layer], tok, spec)  # [H, Q', K']
    if spec.lines_per_head:
        if layer is not None:
            weights = layer
        norm = color_norm(weights, "linear")
        what = f"all {n_heads} heads, one colour each"
    else:
        if layer is not None:
            if spec.head is None:
                one = layer.mean(0) if spec.aggregation == "mean" else layer.max(0)
            else:
                one = layer[spec.head]
            weights = one[None]
        norm = view_norm(weights, capture, name, spec)
        what = heads_what(spec, n_heads)
    # a block of rows of one map at a time (a LogNorm takes 2-D values only; a long map's
    # temporaries stay small)
    strength = np.zeros(weights.shape, dtype=np.float32)
    for g in range(weights.shape[0]):
        for r0 in range(0, weights.shape[1], ROW_BLOCK):
            scaled = np.ma.filled(norm(weights[g, r0:r0 + ROW_BLOCK]), 0.0)
            strength[g, r0:r0 + ROW_BLOCK] = np.nan_to_num(np.clip(np.asarray(scaled, dtype=np.float32), 0.0, 1.0))
    title = view_title(capture, spec, f"{stack_title(capture, name)}, layer {spec.layer}, {what}",
                       "line opacity ∝ attention")
    return LinesData(strength, weights, tuple(tok.rows), tuple(tok.cols), tok.row_title, tok.col_title, title,
                     spec.lines_per_head)


#: rows of a map processed at a time (a long capture's 8,192² map is 268 MB as float32; hiding
#: tokens with renormalisation takes twice that again in float64)
ROW_BLOCK = 512


def _stored_rows(arr, layer: int, heads: list[int], tok, spec: ViewSpec, how: str, dtype=np.float32) -> np.ndarray:
    """``[1, Q', K']``: the maps of ``heads`` of ``layer`` of a stored stack as shown (hidden tokens
    dropped, rows renormalised), combined by ``how`` (``one``: the only head; ``mean``; ``max``)
    exactly as whole maps would be (float32, heads in order), read and processed a block of rows at
    a time so only the result is the map's size."""
    q = arr.shape[2]
    row_keep = np.asarray(tok.row_keep, dtype=bool)
    out = np.empty((1, int(row_keep.sum()), len(tok.col_idx)), dtype=dtype)
    at = 0
    for r0 in range(0, q, ROW_BLOCK):
        r1 = min(q, r0 + ROW_BLOCK)
        acc = None
        for h in heads:
            m = processed_map(arr[layer, h, r0:r1], tok, spec, row0=r0)
            if acc is None:
                acc = m
            elif how == "mean":
                acc += m
            else:
                np.maximum(acc, m, out=acc)
        assert acc is not None
        if how == "mean":
            acc = acc / np.float32(len(heads))
        out[0, at:at + acc.shape[0]] = acc
        at += acc.shape[0]
    return out


def token_y(n: int) -> np.ndarray:
    """Vertical positions of ``n`` tokens (first on top), in axes units 0–1."""
    if n == 0:
        return np.empty(0)
    return np.linspace(1.0, 0.0, n) if n > 1 else np.array([0.5])


def label_size(n: int, theme: Theme) -> float:
    """Token labels: the theme's base size, smaller for long inputs, never below its tick size
    (long inputs label every k-th token instead)."""
    return max(theme.tick_size, min(theme.base_size, 420.0 / max(n, 1)))


#: ylim of the lines axes: the tokens fill 0–1 of this span, the column titles sit above
_YLIM = (-0.03, 1.08)


class LinesDrawer:
    """Draws :class:`LinesData` (``focus``: only the lines of one token, ("q"|"k", index))."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        self.ax = fig.add_axes((0.02, 0.02, 0.96, 0.94)) if live else fig.add_subplot()
        self.ax.set_axis_off()
        self.lines = LineCollection([], capstyle="round", gid=GID_LINES)
        self.ax.add_collection(self.lines)
        self.texts: list = []
        self.n_lines = 0
        self._labels_key: tuple | None = None

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self._labels_key = None

    @staticmethod
    def size(d: LinesData, theme: Theme) -> tuple[float, float]:
        n = max(len(d.rows), len(d.cols), 1)
        lab = text_inches(list(d.rows + d.cols), label_size(n, theme))
        height = min(20.0, max(3.0, n * label_size(n, theme) * 1.5 / 72.0))
        return max(5.0, 2 * lab + 3.5), height + title_inches(theme) + 0.8

    def draw(self, d: LinesData, focus: tuple[str, int] | None = None) -> bool:
        labels_changed = self._draw_labels(d)
        self._draw_lines(d, focus)
        return labels_changed

    def _label_height(self) -> float:
        """Inches the token column spans (the axes' share of the figure, before any layout)."""
        return self.ax.get_position().height * float(self.fig.get_size_inches()[1]) / (_YLIM[1] - _YLIM[0])

    def _draw_labels(self, d: LinesData) -> bool:
        th = self.theme
        n = max(len(d.rows), len(d.cols), 1)
        size = label_size(n, th)
        # labels that would overlap are thinned to every k-th token (as the heatmap's ticks are)
        step = tick_step(n, self._label_height(), size, pitch=1.25)
        key = (d.rows, d.cols, d.row_title, d.col_title, self.theme.name, step)
        if key == self._labels_key:
            return False
        for t in self.texts:
            t.remove()
        self.texts = []
        for x, labels, ha in ((XQ - 0.01, d.rows, "right"), (XK + 0.01, d.cols, "left")):
            for k, (y, s) in enumerate(zip(token_y(len(labels)), labels, strict=True)):
                if k % step == 0:
                    self.texts.append(self.ax.text(x, y, s, ha=ha, va="center", fontsize=size, color=th.text_color))
        # the column titles are the axis titles of this view
        self.texts.append(self.ax.text(XQ - 0.01, 1.035, d.row_title, ha="right", va="bottom",
                                       fontsize=th.base_size, color=th.grid_color, style="italic"))
        self.texts.append(self.ax.text(XK + 0.01, 1.035, d.col_title, ha="left", va="bottom",
                                       fontsize=th.base_size, color=th.grid_color, style="italic"))
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(*_YLIM)
        self._labels_key = key
        return True

    def _draw_lines(self, d: LinesData, focus: tuple[str, int] | None) -> None:
        g, q, k = d.strength.shape
        yq, yk = token_y(q), token_y(k)
        segs, colors, widths = [], [], []
        palette = self.theme.line_colors
        for gi in range(g):
            s = d.strength[gi]
            keep = s >= MIN_STRENGTH
            if focus is not None:
                side, idx = focus
                sel = np.zeros_like(keep)
                if side == "q" and 0 <= idx < q:
                    sel[idx, :] = True
                elif side == "k" and 0 <= idx < k:
                    sel[:, idx] = True
                keep &= sel
            ii, jj = np.nonzero(keep)
            w = s[ii, jj]
            if w.size > MAX_LINES // g:
                top = np.argpartition(w, -(MAX_LINES // g))[-(MAX_LINES // g):]
                ii, jj, w = ii[top], jj[top], w[top]
            order = np.argsort(w, kind="stable")  # strongest drawn last, on top
            ii, jj, w = ii[order], jj[order], w[order]
            segs.append(np.stack([np.stack([np.full(w.size, XQ), yq[ii]], 1), np.stack([np.full(w.size, XK), yk[jj]], 1)], 1))
            c = np.tile(to_rgba(palette[gi % len(palette)]), (w.size, 1))
            c[:, 3] = (0.08 + 0.92 * w) if g == 1 else 0.8 * w
            colors.append(c)
            widths.append(0.4 + 2.6 * w)
        seg = np.concatenate(segs) if segs else np.zeros((0, 2, 2))
        self.lines.set_segments(seg)  # type: ignore[arg-type]  # the stubs take no ndarray; matplotlib does
        self.lines.set_color(np.concatenate(colors) if seg.size else "none")  # type: ignore[arg-type]  # the stubs take no ndarray; matplotlib does
        self.lines.set_linewidths(np.concatenate(widths) if seg.size else 1.0)  # type: ignore[attr-defined]  # alias of set_linewidth, missing from the stubs
        self.n_lines = len(seg)
