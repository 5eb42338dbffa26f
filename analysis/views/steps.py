"""The Steps view (seq2seq): the translation token by token.

At step t: the cross-attention row t (over the source tokens), the decoder self-attention row t
(over the decoder inputs; later positions are causally masked) and the model's top-5 candidates
for output token t. Row t of both maps belongs to decoder position t, which reads decoder input t
(the previous output token) and predicts output token t. Layer and head come from the selection.

:func:`steps_data` builds one step, :class:`StepsDrawer` draws it (bars created when the token
axes change, updated in place for every other step, layer or head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from ..aggregate import select_map
from ..fonts import bold_weight
from ..result import Capture
from ..themes import Theme
from .common import heads_what, panel_title, view_title
from .spec import ViewSpec


@dataclass(frozen=True)
class StepsData:
    """cross_row : ``[S]`` row t of the cross-attention; self_row : ``[T]`` row t of the decoder
    self-attention; ymax : one y range per chart for every step of this layer/head (bar heights
    compare across steps); candidates : ``((token, probability), …)`` best first."""

    step: int
    n_steps: int
    cross_row: np.ndarray
    self_row: np.ndarray
    ymax: tuple[float, float]
    source: tuple[str, ...]
    decoder_inputs: tuple[str, ...]
    decoder_input: str
    predicts: str
    candidates: tuple[tuple[str, float], ...]
    chart_titles: tuple[str, str, str]
    caption: str
    title: str


def _short(s: str, n: int = 16) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def candidates(capture: Capture, t: int) -> tuple[tuple[str, float], ...]:
    """The top-5 ``(token, probability)`` recorded for output token ``t``, best first."""
    for pos, items in capture.prediction.per_position:
        if pos == t:
            return tuple(items)
    return ()


def steps_data(capture: Capture, spec: ViewSpec) -> StepsData:
    t = int(spec.step)
    cross = select_map(capture, "cross_attentions", spec.layer, spec.head, spec.aggregation)  # [T, S]
    dec = select_map(capture, "decoder_attentions", spec.layer, spec.head, spec.aggregation)  # [T, T]
    ymax = (max(float(cross.max()) * 1.08, 0.05), max(float(dec.max()) * 1.08, 0.05))
    decoder_inputs, outputs = capture.decoder_inputs, capture.outputs
    assert decoder_inputs is not None and outputs is not None  # validate_spec: a seq2seq capture
    dec_in, out = decoder_inputs.display[t], outputs.display[t]
    cands = candidates(capture, t)
    top_title = f"top-{len(cands) or 5} candidates for output {t}"
    if cands and not any(tok == out for tok, _ in cands):
        top_title += f" ('{_short(out, 12)}' is not among them)"
    charts = (
        f"cross-attention row {t}: where the decoder looks in the source while predicting '{_short(out)}'",
        f"decoder self-attention row {t}: which earlier decoder inputs it reads",
        top_title,
    )
    how = "the chosen hypothesis" if capture.generated else "teacher forcing on the typed target"
    caption = f"step {t}: decoder input '{dec_in}' → predicts '{out}' ({how})"
    what = f"step {t}: '{dec_in}' → '{out}', layer {spec.layer}, {heads_what(spec, capture.n_heads('cross_attentions'))}"
    return StepsData(t, len(decoder_inputs), cross[t], dec[t], ymax, tuple(capture.source.display),
                     tuple(decoder_inputs.display), dec_in, out, cands, charts, caption,
                     view_title(capture, spec, what))


class StepsDrawer:
    """Three bar charts of one step: cross row t, decoder self row t, top-5 candidates."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        gs = fig.add_gridspec(2, 2, width_ratios=(1.7, 1.0))
        self.ax_cross = fig.add_subplot(gs[0, :])
        self.ax_self = fig.add_subplot(gs[1, 0])
        self.ax_top = fig.add_subplot(gs[1, 1])
        self.cross_bars: BarContainer | None = None
        self.self_bars: BarContainer | None = None
        self.top_bars: BarContainer | None = None
        self.top_values: list = []
        self.future: Rectangle | None = None
        self.future_text: Text | None = None
        self.rebuilds = 0
        self.layouts = 0
        self._layout_key: tuple | None = None
        self._tokens: tuple | None = None

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self._tokens = None  # rebuild the bars in the new colours

    @staticmethod
    def size(d: StepsData, theme: Theme) -> tuple[float, float]:
        n = max(len(d.source), len(d.decoder_inputs))
        return min(20.0, max(9.0, 0.45 * n + 4.0)), 7.5

    def _style(self, ax) -> None:
        th = self.theme
        ax.set_facecolor(th.axes_facecolor)
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.tick_size + 1)
        for side, spine in ax.spines.items():
            spine.set_visible(side in ("left", "bottom"))
            spine.set_edgecolor(th.grid_color)

    def _bar_axes(self, ax, labels: tuple[str, ...]):
        th = self.theme
        ax.clear()
        bars = ax.bar(np.arange(len(labels)), np.zeros(len(labels)), color=th.line_colors[0], width=0.75)
        rotate = len(labels) > 8 or max((len(s) for s in labels), default=0) > 6
        ax.set_xticks(np.arange(len(labels)), [_short(s, 14) for s in labels], rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel("attention", color=th.text_color, fontsize=th.base_size)
        self._style(ax)
        return bars

    def _set_tokens(self, src: tuple[str, ...], dec: tuple[str, ...]) -> None:
        if (src, dec) == self._tokens and self.cross_bars is not None:
            return
        th = self.theme
        self._tokens = (src, dec)
        self.cross_bars = self._bar_axes(self.ax_cross, src)
        self.self_bars = self._bar_axes(self.ax_self, dec)
        self.future = Rectangle((0, 0), 0, 1, transform=self.ax_self.get_xaxis_transform(), facecolor=th.masked_color,
                                alpha=0.35, hatch="//", edgecolor=th.hatch_color, linewidth=0)
        self.ax_self.add_patch(self.future)
        self.future_text = self.ax_self.text(0, 0.5, "future:\nmasked", transform=self.ax_self.get_xaxis_transform(),
                                             ha="center", va="center", fontsize=th.tick_size, color=th.grid_color,
                                             style="italic")
        self.top_bars = None
        self.rebuilds += 1

    def _top_axes(self, n: int) -> BarContainer:
        ax, th = self.ax_top, self.theme
        ax.clear()
        self.top_bars = bars = ax.barh(np.arange(n), np.zeros(n), color=th.line_colors[0], height=0.7)
        self.top_values = [ax.text(0, k, "", va="center", ha="left", fontsize=th.tick_size, color=th.text_color)
                           for k in range(n)]
        ax.set_ylim(n - 0.5, -0.5)  # best candidate on top
        ax.set_xlim(0, 1.18)
        ax.set_xlabel("probability", color=th.text_color, fontsize=th.base_size)
        self._style(ax)
        return bars

    def draw(self, d: StepsData) -> bool:
        """Heights of step ``d.step``; returns True when the layout was recomputed."""
        self._set_tokens(d.source, d.decoder_inputs)
        self._draw_bars(d)
        labels = self._draw_candidates(d)
        lines = tuple(panel_title(ax, title, self.theme, loc="left").count("\n")
                      for ax, title in zip((self.ax_cross, self.ax_self, self.ax_top), d.chart_titles, strict=True))
        # constrained layout is most of a draw: run it only when the margins may change (new bars,
        # layer/head range, canvas size, longer candidate labels, titles on more lines), then keep
        # the positions
        widest = max((len(s) for s in labels), default=0)
        key = (self.rebuilds, d.ymax, self.fig.get_size_inches().tobytes(), self.theme.name, -(-widest // 4), lines)
        if key == self._layout_key:
            return False
        self._layout_key = key
        self.layouts += 1
        return True

    def _draw_bars(self, d: StepsData) -> None:
        th, t = self.theme, d.step
        base, hi = th.line_colors[0], th.line_colors[1]
        best = int(np.argmax(d.cross_row)) if len(d.cross_row) else -1
        cross_bars, self_bars, future, future_text = self.cross_bars, self.self_bars, self.future, self.future_text
        # draw() calls _set_tokens first, which makes all four
        assert cross_bars is not None and self_bars is not None and future is not None and future_text is not None
        for k, (bar, h) in enumerate(zip(cross_bars, d.cross_row, strict=True)):
            bar.set_height(float(h))
            bar.set_color(hi if k == best else base)
        for k, (bar, h) in enumerate(zip(self_bars, d.self_row, strict=True)):
            bar.set_height(float(h))
            bar.set_color(base if k <= t else th.masked_color)
        bold = bold_weight()  # "normal" where the CJK fallback font has no bold face
        for k, lab in enumerate(self.ax_self.get_xticklabels()):
            lab.set_color(th.text_color if k <= t else th.grid_color)
            lab.set_fontweight(bold if k == t else "normal")
        n_dec = len(d.self_row)
        future.set_x(t + 0.5)
        future.set_width(max(0.0, n_dec - 0.4 - (t + 0.5)))
        future_text.set_x((t + 0.5 + n_dec - 0.4) / 2)
        future_text.set_visible(t < n_dec - 1)
        self.ax_cross.set_ylim(0, d.ymax[0])
        self.ax_self.set_ylim(0, d.ymax[1])

    def _draw_candidates(self, d: StepsData) -> list[str]:
        th = self.theme
        base, hi = th.line_colors[0], th.line_colors[1]
        cands = list(d.candidates)
        bars = self.top_bars
        if bars is None or len(bars) != max(len(cands), 1):
            bars = self._top_axes(max(len(cands), 1))
        labels = []
        for k, bar in enumerate(bars):
            tok, p = cands[k] if k < len(cands) else ("(none recorded)", 0.0)
            chosen = k < len(cands) and tok == d.predicts
            bar.set_width(float(p))
            bar.set_color(hi if chosen else base)
            self.top_values[k].set_text((f"{p:.2f}" if p >= 0.005 else "<0.01") + ("  ← chosen" if chosen else ""))
            self.top_values[k].set_x(float(p) + 0.02)
            labels.append(_short(tok, 16))
        self.ax_top.set_yticks(np.arange(len(bars)), labels)
        bold = bold_weight()
        for k, lab in enumerate(self.ax_top.get_yticklabels()):
            lab.set_fontweight(bold if k < len(cands) and cands[k][0] == d.predicts else "normal")
            lab.set_color(th.text_color)
        return labels

    def top_labels(self) -> list[str]:
        """The candidate labels drawn, best first."""
        return [lab.get_text() for lab in self.ax_top.get_yticklabels()]
