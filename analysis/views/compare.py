"""The Compare view: a pinned capture A, the current capture B, and B − A.

A and B show the same stack, layer and head (or aggregate) on one colour scale; B − A uses a
diverging scale centred at 0 with symmetric limits. A difference map needs the same tokens in A
and B; otherwise the maps stand side by side and a note says why. :func:`compare_data` builds
it, :class:`CompareDrawer` draws it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..errors import InputError, a_or_an
from ..result import Capture
from ..themes import Theme, get_theme
from .common import (
    CELL_SHARE,
    GID_ATTENTION,
    STACK_TITLES,
    heads_what,
    panel_title,
    set_col_ticks,
    text_inches,
    text_width,
    tick_step,
    title_inches,
)
from .heatmap import HeatmapData, heatmap_data
from .spec import ViewInputs, ViewSpec

#: the difference map's colour-bar label
DIFF_LABEL = "B − A (red: B attends more, blue: A)"


@dataclass(frozen=True)
class CompareData:
    """diff : ``b − a`` ``[Q', K']`` when the tokens match, else None (``note`` says why)."""

    a: HeatmapData
    b: HeatmapData
    diff: np.ndarray | None
    note: str
    same_capture: bool
    titles: tuple[str, str]
    title: str
    cmap_name: str


def describe(cap: Capture) -> str:
    text = cap.text if len(cap.text) <= 48 else cap.text[:47] + "…"
    return f"{cap.model} · “{text}” · {len(cap.source)} tokens"


def token_mismatch(a: Capture, b: Capture, stack: str) -> str:
    """Why the maps of ``a`` and ``b`` cannot be subtracted cell by cell ('' when they can)."""
    for what, ta, tb in (("query", a.query_tokens(stack), b.query_tokens(stack)),
                         ("key", a.key_tokens(stack), b.key_tokens(stack))):
        if len(ta) != len(tb):
            return (f"A has {len(ta)} {what} tokens and B has {len(tb)}; a difference map needs the same tokens "
                    "(the same sentence, or a model with the same tokenizer)")
        diff = np.flatnonzero(ta.ids != tb.ids)
        if diff.size:
            i = int(diff[0])
            return (f"the {what} tokens differ at position {i} ('{ta.display[i]}' in A, '{tb.display[i]}' in B): "
                    "a difference map needs the same token ids (the same sentence, or a model with the same "
                    "tokenizer)")
    return ""


def check_pair(a: Capture, b: Capture, spec: ViewSpec, name: str) -> None:
    """A must have the stack, layer and head that B shows (one sentence otherwise)."""
    if name not in a.stacks:
        raise InputError(f"A has no {STACK_TITLES.get(name, name)} stack (A is {a_or_an(a.kind)} model, B {a_or_an(b.kind)} model); "
                         "pin a capture of the same kind of model")
    la, ha = a.shape(name)[:2]
    if spec.layer >= la or (spec.head is not None and spec.head >= ha):
        raise InputError(f"A has {la} layers × {ha} heads, so layer {spec.layer}"
                         f"{'' if spec.head is None else f', head {spec.head}'} exists only in B; choose a smaller one")


def compare_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None) -> CompareData:
    """B = ``capture``, A = ``inputs.compare_with``; each map on its own range, put on one scale
    by the drawer."""
    a, b = (inputs or ViewInputs()).compare_with, capture
    if a is None:
        raise InputError("pin a capture as A first (Compare tab: “Pin current as A”)")
    name = b.resolve_stack(spec.stack)
    check_pair(a, b, spec, name)
    one = replace(spec, view="head", stack=name, shared_range=False)
    theme = get_theme(spec.theme)
    da, db = heatmap_data(a, one, theme), heatmap_data(b, one, theme)
    note = token_mismatch(a, b, name)
    if not note and da.matrix.shape != db.matrix.shape:
        note = f"the maps have different shapes ({da.matrix.shape} in A, {db.matrix.shape} in B)"
    diff = None if note else (db.matrix.astype(np.float64) - da.matrix.astype(np.float64)).astype(np.float32)
    # each panel counts its own capture's heads; the figure's title only when they agree
    what_a, what_b = heads_what(spec, a.n_heads(name)), heads_what(spec, b.n_heads(name))
    titles = (f"A · {a.model}\nlayer {spec.layer}, {what_a}", f"B · {b.model}\nlayer {spec.layer}, {what_b}")
    what = what_b if what_a == what_b else f"{spec.aggregation} of the heads"
    title = spec.title if spec.title is not None else (
        f"Compare · {STACK_TITLES.get(name, name)}, layer {spec.layer}, {what}\nA: {describe(a)}\nB: {describe(b)}")
    return CompareData(da, db, diff, note, a is b, titles, title, spec.cmap or "")


class CompareDrawer:
    """A | B | B − A on one figure (three axes and two colour bars created once)."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        fig.set_layout_engine("constrained")
        self.axes = fig.subplots(1, 3)
        self.ax_a, self.ax_b, self.ax_d = self.axes
        self.image_a = self.ax_a.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest")
        self.image_b = self.ax_b.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest")
        self.image_d = self.ax_d.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", cmap="RdBu_r")
        for im in (self.image_a, self.image_b, self.image_d):
            im.set_gid(GID_ATTENTION)
        self.cbar_ab = fig.colorbar(self.image_b, ax=[self.ax_a, self.ax_b], fraction=0.04, pad=0.01, aspect=40)
        self.cbar_d = fig.colorbar(self.image_d, ax=self.ax_d, fraction=0.08, pad=0.01, aspect=40)
        self.note = self.ax_d.text(0.5, 0.5, "", ha="center", va="center", transform=self.ax_d.transAxes)
        self.diff: np.ndarray | None = None
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        for ax in (*self.axes, self.cbar_ab.ax, self.cbar_d.ax):
            ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)
        self.note.set_color(theme.text_color)
        self.note.set_fontsize(theme.base_size)

    @staticmethod
    def size(d: CompareData, theme: Theme) -> tuple[float, float]:
        n = max(d.b.matrix.shape)
        side = min(7.0, max(2.8, n * theme.tick_size * 1.4 / 72.0))
        # a panel (a third of the figure, less its labels) holds its title at the base size at
        # least, and is as tall as the difference's colour-bar label
        title = max(text_width(s, theme.base_size) for t in d.titles for s in t.split("\n"))
        side = max(side, (title + 0.3) / CELL_SHARE - 1.0)
        tall = max(side, text_inches([DIFF_LABEL], theme.base_size) + 0.4)
        ticks = text_inches(list(d.b.col_labels), theme.tick_size) + 0.3
        panel_titles = 2 * theme.title_size * 1.4 / 72
        return 3 * side + 3.0, tall + ticks + panel_titles + title_inches(theme) + 2 * theme.base_size / 72 + 0.3

    def _ticks(self, ax, rows: tuple[str, ...], cols: tuple[str, ...], show_rows: bool) -> None:
        w, h = self.fig.get_size_inches()
        ys = tick_step(len(rows), h * 0.7, self.theme.tick_size, pitch=1.3)
        xs = tick_step(len(cols), w * 0.25, self.theme.tick_size, pitch=1.3)
        ax.set_yticks(range(0, len(rows), ys), [rows[i] for i in range(0, len(rows), ys)] if show_rows else [])
        set_col_ticks(ax, cols, xs, w * 0.25 / max(len(cols), 1), self.theme.tick_size)
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)

    def draw(self, d: CompareData) -> bool:
        th = self.theme
        cmap = mpl.colormaps[d.cmap_name or th.cmap]
        a, b = d.a, d.b
        hi = max(float(np.nanmax(a.matrix)) if a.matrix.size else 0.0, float(np.nanmax(b.matrix)) if b.matrix.size else 0.0)
        norm = Normalize(0.0, hi if hi > 0 else 1.0)
        same = d.diff is not None
        for ax, image, m, title in ((self.ax_a, self.image_a, a, d.titles[0]), (self.ax_b, self.image_b, b, d.titles[1])):
            image.set_data(m.matrix)
            image.set_extent((-0.5, m.matrix.shape[1] - 0.5, m.matrix.shape[0] - 0.5, -0.5))
            image.set_cmap(cmap)
            image.set_norm(norm)
            panel_title(ax, title, th)
            self._ticks(ax, m.row_labels, m.col_labels, show_rows=(ax is self.ax_a) or not same)
            ax.set_xlabel(m.col_title, color=th.text_color, fontsize=th.base_size)
        self.ax_a.set_ylabel(a.row_title, color=th.text_color, fontsize=th.base_size)
        self.cbar_ab.update_normal(self.image_b)
        self.cbar_ab.set_label("attention weight", color=th.text_color, fontsize=th.base_size)
        if d.diff is not None:
            self._draw_diff(d, d.diff)
        else:
            self.diff = None
            self.image_d.set_visible(False)
            self.cbar_d.ax.set_visible(False)
            self.ax_d.set_axis_off()
            panel_title(self.ax_d, "no difference map", th)
            self.note.set_text("\n".join(textwrap.wrap(d.note, 40)))
        return True

    def _draw_diff(self, d: CompareData, diff: np.ndarray) -> None:
        th = self.theme
        self.diff = diff
        m = float(np.nanmax(np.abs(diff))) if diff.size else 0.0
        m = m if m > 0 else 1e-6
        self.image_d.set_data(diff)
        self.image_d.set_extent(self.image_b.get_extent())
        self.image_d.set_norm(Normalize(-m, m))
        self.image_d.set_visible(True)
        self.cbar_d.ax.set_visible(True)
        self.cbar_d.update_normal(self.image_d)
        self.cbar_d.set_label(DIFF_LABEL, color=th.text_color, fontsize=th.base_size)
        self._ticks(self.ax_d, d.b.row_labels, d.b.col_labels, show_rows=False)
        self.ax_d.set_xlabel(d.b.col_title, color=th.text_color, fontsize=th.base_size)
        panel_title(self.ax_d, "B − A", th)
        self.ax_d.set_axis_on()
        self.note.set_text("")
