"""The Alignment view (seq2seq): the word alignment read off one cross-attention layer.

Source words above, translation words below, a line per word pair (opacity ∝ weight, the argmax
link of each translation word bold, gold links dashed), and the word matrix beneath with its
values. :func:`alignment_data` builds it (layer: ``spec.alignment_layer``, default the best
documented layer of a bundled translator, else the last; head: ``spec.alignment_head``, default
the mean of heads); :class:`AlignmentDrawer` draws it in the Alignment tab and in every export.

Row t of the cross-attention belongs to decoder position t: it reads output token t−1 and
predicts output token t, so with the ``predict`` method a translation word's links show where the
model looked while producing that word; with ``shift`` (Shift-Att, Chen et al. 2020) they show
where it looked at the next step, when the word was its input. A threshold adds links to every
source word with at least that share of the word's row. Word weights sum a source word's pieces and average a translation word's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..alignment import AlignmentResult, bundled_alignment_info
from ..alignment_export import alignment_for_capture, default_alignment_layer
from ..fonts import bold_weight
from ..result import Capture
from ..themes import FIXED_COLOUR, Theme
from .common import GID_ALIGNMENT, view_title
from .spec import ViewInputs, ViewSpec

#: word-pair weights below this (and below 10 % of the strongest) are not drawn as lines
MIN_LINK_WEIGHT = 0.02
#: how the title names each way of reading the rows
METHOD_TITLES = {"predict": "predict rows", "shift": "Shift-Att rows"}
#: the word matrix writes its values into the cells up to this many cells
MAX_ANNOTATED_CELLS = 200


@dataclass(frozen=True)
class AlignmentData:
    """matrix : ``[n_tgt_words, n_src_words]`` word attention; pairs : ``(i_src, j_tgt)`` argmax
    links; gold : the gold links drawn dashed (possible ⊇ sure), or None."""

    result: AlignmentResult
    src_words: tuple[str, ...]
    tgt_words: tuple[str, ...]
    gold: frozenset | None
    layer: int
    head: int | None
    documented: bool
    title: str
    cmap_name: str

    @property
    def matrix(self) -> np.ndarray:
        return self.result.matrix

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        return self.result.pairs


def words(text: str, n: int) -> tuple[str, ...]:
    """``n`` word labels from ``text.split()``; missing words get ``w<i>``."""
    have = (text or "").split()
    return tuple(have[i] if i < len(have) else f"w{i}" for i in range(n))


def model_folder_of(capture: Capture, given: str | None = None) -> str | None:
    """The checkpoint folder whose ``alignment.json`` documents the best layer: the given one, or
    that of a bundled translator named by the capture (a session needs no loaded model)."""
    if given is not None or not capture.model.startswith("bundled:"):
        return given
    try:
        from ..bundled import bundled_path

        path = Path(bundled_path(capture.model.split(":", 1)[1]))
    except Exception:  # not installed: the last layer is the default
        return None
    return str(path if path.is_dir() else path.parent)


def documented_layer(folder: str | None) -> bool:
    try:
        return folder is not None and "best_layer" in bundled_alignment_info(folder)
    except Exception:  # a damaged alignment.json only loses the label
        return False


def alignment_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None) -> AlignmentData:
    inputs = inputs or ViewInputs()
    folder = model_folder_of(capture, inputs.model_folder)
    layer = spec.alignment_layer if spec.alignment_layer is not None else default_alignment_layer(capture, folder)
    documented = spec.alignment_layer is None and documented_layer(folder)
    res = alignment_for_capture(capture, folder, layer=spec.alignment_layer, head=spec.alignment_head,
                                method=spec.alignment_method, threshold=spec.alignment_threshold)
    n_tgt, n_src = res.matrix.shape
    head = "mean of heads" if res.head is None else f"head {res.head}"
    which = " (best documented)" if documented else (" (the last)" if spec.alignment_layer is None else "")
    how = METHOD_TITLES[res.method] + ("" if res.threshold is None else f", links ≥ {res.threshold:g}")
    what = f"word alignment from cross-attention, layer {res.layer}{which}, {head}, {how}"
    gold = frozenset(inputs.gold[1]) if inputs.gold is not None else None
    return AlignmentData(res, words(capture.text, n_src), words(capture.output_text, n_tgt), gold, int(layer),
                         res.head, documented, view_title(capture, spec, what), spec.cmap or "")


def _short(s: str, n: int = 18) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _xs(n: int) -> np.ndarray:
    return np.array([0.5]) if n == 1 else np.linspace(0.0, 1.0, max(n, 1))


class AlignmentDrawer:
    """Links above, the word matrix below; both axes, the line collections, the image and its
    colour bar are created once; a new alignment replaces only words, values and boxes."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        fig.set_layout_engine("constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=(1.0, 1.5))
        self.ax_links = fig.add_subplot(gs[0])
        self.ax_heat = fig.add_subplot(gs[1])
        self.ax_links.set_axis_off()
        self.soft_lines = LineCollection([], linewidths=1.3, capstyle="round")
        self.best_lines = LineCollection([], linewidths=4.0, capstyle="round", gid=GID_ALIGNMENT)
        # gold on top: a gold link the model found shows as dashes over its thick line
        self.gold_lines = LineCollection([], linewidths=2.0, linestyles=(0, (4, 3)))
        for c in (self.soft_lines, self.best_lines, self.gold_lines):
            self.ax_links.add_collection(c)
        self.image = self.ax_heat.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0)
        self.colorbar = fig.colorbar(self.image, ax=self.ax_heat, shrink=0.9)
        self._dynamic: list = []
        self.n_soft = self.n_best = 0

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme

    @staticmethod
    def size(d: AlignmentData, theme: Theme) -> tuple[float, float]:
        n_tgt, n_src = d.matrix.shape
        n = max(n_src, n_tgt, 1)
        width = min(20.0, max(6.0, n * 0.9 + 2.5))
        return width, min(16.0, 3.0 + 0.45 * n_tgt + 2.4)

    def draw(self, d: AlignmentData) -> bool:
        for a in self._dynamic:
            a.remove()
        self._dynamic = []
        m = np.asarray(d.matrix, dtype=np.float64)
        top = float(m.max()) if m.size and m.max() > 0 else 1.0
        self._draw_links(d, m, top)
        self._draw_words(d)
        self._draw_matrix(d, m, top)
        return True

    def _draw_links(self, d: AlignmentData, m: np.ndarray, top: float) -> None:
        th = self.theme
        n_tgt, n_src = m.shape
        xs_src, xs_tgt = _xs(n_src), _xs(n_tgt)
        base = np.array(to_rgba(th.line_colors[0]))
        jj, ii = np.nonzero(m >= max(MIN_LINK_WEIGHT, 0.1 * top))
        self.soft_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in zip(ii, jj, strict=True)])
        soft = np.tile(base, (len(ii), 1))
        strength = np.clip(m[jj, ii] / top, 0, 1)
        soft[:, 3] = 0.85 * strength
        self.soft_lines.set_color(soft if len(ii) else "none")  # type: ignore[arg-type]  # the stubs take no ndarray; matplotlib does
        self.soft_lines.set_linewidths(0.8 + 2.2 * strength if len(ii) else 1.0)  # type: ignore[attr-defined]  # alias of set_linewidth, missing from the stubs
        self.n_soft = len(ii)
        best = [(i, j) for i, j in d.pairs if i < n_src and j < n_tgt]
        self.best_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in best])
        strong = np.tile(base, (len(best), 1))
        if best:
            strong[:, 3] = 0.45 + 0.55 * np.clip([m[j, i] / top for i, j in best], 0, 1)
        self.best_lines.set_color(strong if best else "none")  # type: ignore[arg-type]  # the stubs take no ndarray; matplotlib does
        self.n_best = len(best)
        gold_ok = sorted((i, j) for i, j in (d.gold or ()) if i < n_src and j < n_tgt)
        self.gold_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in gold_ok])
        self.gold_lines.set_color(th.line_colors[2])

    def _rotate(self, d: AlignmentData) -> bool:
        n = max(len(d.src_words), len(d.tgt_words), 1)
        longest = max((len(w) for w in d.src_words + d.tgt_words), default=1)
        return n * max(longest, 3) > 70

    def _draw_words(self, d: AlignmentData) -> None:
        th, ax = self.theme, self.ax_links
        xs_src, xs_tgt = _xs(len(d.src_words)), _xs(len(d.tgt_words))
        rotate = self._rotate(d)
        rot = 35 if rotate else 0
        # long sentences: a little smaller, never below the theme's tick size
        size = max(th.tick_size, th.base_size - (0 if max(len(d.src_words), len(d.tgt_words)) <= 12 else 2))
        bold = bold_weight()  # "normal" where the CJK fallback font has no bold face
        for i, w in enumerate(d.src_words):
            self._dynamic.append(ax.text(xs_src[i], 1.06, _short(w), ha="left" if rotate else "center", va="bottom",
                                         rotation=rot, rotation_mode="anchor", fontsize=size, color=th.text_color))
        for j, w in enumerate(d.tgt_words):
            self._dynamic.append(ax.text(xs_tgt[j], -0.06, _short(w), ha="right" if rotate else "center", va="top",
                                         rotation=rot, rotation_mode="anchor", fontsize=size, color=th.text_color,
                                         fontweight=bold))
        self._dynamic += ax.plot(xs_src, np.ones(len(xs_src)), "o", color=th.grid_color, markersize=4)
        self._dynamic += ax.plot(xs_tgt, np.zeros(len(xs_tgt)), "o", color=th.grid_color, markersize=4)
        for y, text in ((1.0, "source"), (0.0, "translation")):
            self._dynamic.append(ax.text(-0.04, y, text, ha="right", va="center", fontsize=th.tick_size,
                                         color=th.grid_color, style="italic"))
        ax.set_xlim(-0.06, 1.06)
        ax.set_ylim(-0.1, 1.1)

    def _draw_matrix(self, d: AlignmentData, m: np.ndarray, top: float) -> None:
        th, ax = self.theme, self.ax_heat
        n_tgt, n_src = m.shape
        rotate = self._rotate(d)
        self.image.set_data(m if m.size else np.zeros((1, 1)))
        # a source or translation without words (special tokens only) is one blank cell wide, not
        # zero (limits of zero width: matplotlib warns and widens them)
        right, bottom = max(n_src, 1) - 0.5, max(n_tgt, 1) - 0.5
        self.image.set_extent((-0.5, right, bottom, -0.5))
        self.image.set_cmap(d.cmap_name or th.cmap)
        self.image.set_clim(0.0, top)
        ax.set_xlim(-0.5, right)
        ax.set_ylim(bottom, -0.5)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xticks(range(n_src), [_short(w) for w in d.src_words], rotation=35 if rotate else 0,
                      ha="left" if rotate else "center", rotation_mode="anchor")
        ax.set_yticks(range(n_tgt), [_short(w) for w in d.tgt_words])
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.base_size)
        ax.set_xlabel("source word", color=th.text_color, fontsize=th.base_size)
        ax.set_ylabel("translation word\n(being predicted)", color=th.text_color, fontsize=th.base_size)
        cmap = self.image.get_cmap()
        if 0 < m.size <= MAX_ANNOTATED_CELLS:
            for j in range(n_tgt):
                for i in range(n_src):
                    r, g, b, _ = cmap(m[j, i] / top)
                    light = 0.299 * r + 0.587 * g + 0.114 * b > 0.55
                    self._dynamic.append(ax.text(i, j, f"{m[j, i]:.2f}", ha="center", va="center", gid=FIXED_COLOUR,
                                                 fontsize=th.tick_size, color="black" if light else "white"))
        for i, j in d.pairs:
            if i < n_src and j < n_tgt:
                box = Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor=th.line_colors[1], linewidth=2.2)
                ax.add_patch(box)
                self._dynamic.append(box)
        self.colorbar.ax.tick_params(labelcolor=th.text_color, colors=th.grid_color, labelsize=th.tick_size)
        self.colorbar.set_label("word attention", color=th.text_color, fontsize=th.base_size)
