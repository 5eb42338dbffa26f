"""The Mask lab view: what the padding mask (or a token mask) changes, for the selected map.

Padding experiment (:class:`analysis.masks.PaddingReport`): the attention mask of the batch,
the sentence's map WITH the mask (pad columns exactly 0), WITHOUT it (all ones: pads get
attention), and Δ = without − alone on the real tokens, with the key numbers. Token masking
(:class:`analysis.masks.MaskingReport`): the mask with the ticked tokens hidden, the map before,
after, and Δ = after − before. Stack, layer and head (or the aggregate) follow the selection.

:func:`masks_data` builds it from a report, :class:`MasksDrawer` draws it (the Mask lab tab and
``--view masks --pair OTHER``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from ..aggregate import Aggregation, select_map
from ..errors import InputError
from ..result import STACK_ALIASES
from ..themes import Theme
from .common import (
    GID_ATTENTION,
    STACK_TITLES,
    clean_label,
    heads_what,
    panel_title,
    text_inches,
    tick_step,
    title_inches,
)
from .spec import ViewSpec


@dataclass(frozen=True)
class MaskPanel:
    matrix: np.ndarray
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    title: str
    diverging: bool
    marked: tuple[int, ...]


@dataclass(frozen=True)
class MasksData:
    """mode : ``padding`` | ``tokens``; strip : the attention mask ``[rows, Sb]`` (1 = seen);
    panels : with / without (before / after) / Δ; numbers : the key numbers, one line each."""

    mode: str
    stack: str
    strip: np.ndarray
    strip_rows: tuple[str, ...]
    strip_cols: tuple[str, ...]
    strip_title: str
    panels: tuple[MaskPanel, MaskPanel, MaskPanel]
    numbers: tuple[str, ...]
    title: str


def report_stack(report_maps, spec: ViewSpec) -> str:
    """The spec's stack among the report's (its first when the report has no such stack)."""
    names = list(report_maps)
    want = STACK_ALIASES.get(spec.stack, spec.stack) if spec.stack else None
    if want in ("encoder_attentions", "decoder_attentions") and "attentions" in names:
        want = "attentions"
    return want if want is not None and want in names else names[0]


def _select(arr: np.ndarray, spec: ViewSpec, how: Aggregation | None = None) -> np.ndarray:
    layer = min(spec.layer, arr.shape[0] - 1)
    head = None if spec.head is None else min(spec.head, arr.shape[1] - 1)
    return select_map(arr, None, layer, head, how or spec.aggregation)


def _axes_tokens(report, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    toks = tuple(clean_label(t) for t in report.tokens)
    dec = tuple(clean_label(t) for t in report.decoder_tokens)
    rows = dec if name in ("decoder_attentions", "cross_attentions") else toks
    cols = dec if name == "decoder_attentions" else toks
    return rows, cols


def _pick(seq: tuple[str, ...], idx) -> tuple[str, ...]:
    return tuple(seq[i] for i in idx)


def _padding_panels(r, spec: ViewSpec, name: str) -> tuple[MaskPanel, MaskPanel, MaskPanel]:
    rows, cols = _axes_tokens(r, name)
    source_cols = name != "decoder_attentions"
    pads = tuple(r.pad_positions) if source_cols else ()
    with_mask = _select(r.masked[name], spec)
    without = _select(r.unmasked[name], spec)
    delta = _select(r.delta_unmasked[name], spec, "mean") if spec.head is None else np.asarray(
        r.delta_unmasked[name][min(spec.layer, r.delta_unmasked[name].shape[0] - 1),
                               min(spec.head, r.delta_unmasked[name].shape[1] - 1)], np.float32)
    real = list(r.real_positions)
    d_rows = _pick(rows, real) if name in ("attentions", "encoder_attentions") else rows
    d_cols = _pick(cols, real) if source_cols else cols
    return (MaskPanel(with_mask, rows, cols, f"WITH mask: pad columns = {r.pad_attention_max:.1g}", False, pads),
            MaskPanel(without, rows, cols, "WITHOUT mask (all ones): pads get attention", False, pads),
            MaskPanel(delta, d_rows[: delta.shape[0]], d_cols[: delta.shape[1]],
                      "Δ = without mask − alone (real tokens)", True, ()))


def _padding_numbers(r) -> tuple[str, ...]:
    lines = [f"Padding experiment ({r.padding_side} padding, pad token {r.pad_token}): largest weight on a pad "
             f"column with the mask: {r.pad_attention_max:.3g}",
             f"max |Δ attention| vs. alone — with mask: {r.masked_attention_max_abs_diff:.2e}, "
             f"without: {r.unmasked_attention_max_abs_diff:.2e}",
             f"max |Δ last hidden state| — with mask: {r.masked_output_max_abs_diff:.2e}, "
             f"without: {r.unmasked_output_max_abs_diff:.2e}"]
    if r.cross_pad_attention_max is not None:
        lines.append(f"cross-attention on pad positions with the mask: {r.cross_pad_attention_max:.3g}")
    if r.prediction_task != "none":
        lines.append(f"prediction alone: {' '.join(r.prediction_alone[:12])}; with mask: "
                     f"{' '.join(r.prediction_masked[:12])} ({'changed' if r.prediction_changed_masked else 'same'}); "
                     f"without mask: {' '.join(r.prediction_unmasked[:12])} "
                     f"({'CHANGED' if r.prediction_changed_unmasked else 'same'})")
    return tuple(lines) + tuple(r.notes)


def _masking_panels(r, spec: ViewSpec, name: str) -> tuple[MaskPanel, MaskPanel, MaskPanel]:
    rows, cols = _axes_tokens(r, name)
    marks = tuple(r.masked_positions) if name != "decoder_attentions" else ()
    before = _select(r.baseline[name], spec)
    after = _select(r.masked[name], spec)
    return (MaskPanel(before, rows, cols, "before (all tokens visible)", False, marks),
            MaskPanel(after, rows, cols, f"after: masked columns = {r.masked_column_max:.1g}", False, marks),
            MaskPanel(after - before, rows, cols, "Δ = after − before", True, ()))


def _masking_numbers(r) -> tuple[str, ...]:
    lines = [f"Token masking: hidden {', '.join(r.tokens[i] for i in r.masked_positions)}"]
    if r.top5_before:
        lines.append("next token before: " + " · ".join(f"{t} {p:.1%}" for t, p in r.top5_before))
        lines.append("next token after: " + " · ".join(f"{t} {p:.1%}" for t, p in r.top5_after))
    if r.translation_before or r.translation_after:
        lines.append(f"translation before: {r.translation_before}; after: {r.translation_after}")
    if len(r.hidden_positions):
        lines.append(f"hidden-state change of the visible tokens: mean L2 {r.mean_hidden_l2:.3g}, "
                     f"mean cosine distance {r.mean_hidden_cosine_distance:.3g}")
    pa = r.prediction_after
    if pa.task == "masked_lm" and pa.per_position:
        pb = dict(r.prediction_before.per_position)
        for pos, items in pa.per_position:
            before = " · ".join(f"{t} {p:.0%}" for t, p in pb.get(pos, ()))
            after = " · ".join(f"{t} {p:.0%}" for t, p in items)
            lines.append(f"[MASK] at {pos}: before {before}; after {after}")
    return tuple(lines) + tuple(r.notes)


def masks_data(report, spec: ViewSpec) -> MasksData:
    """The mask lab's picture of ``report`` for the spec's stack, layer and head."""
    if report is None:
        raise InputError("run the padding experiment or mask some tokens first")
    padding = hasattr(report, "pad_positions")
    maps = report.masked
    name = report_stack(maps, spec)
    toks = tuple(clean_label(t) for t in report.tokens)
    if padding:
        strip = np.asarray(report.attention_mask)
        strip_rows: tuple[str, ...] = ("sentence", "pair")
        strip_title = f"attention mask ({report.padding_side} padding; dark = 1, light = 0 = pad)"
        panels, numbers = _padding_panels(report, spec, name), _padding_numbers(report)
    else:
        strip = np.asarray(report.attention_mask)[None, :]
        strip_rows = ("mask",)
        strip_title = "attention mask with the ticked tokens hidden (light = 0)"
        panels, numbers = _masking_panels(report, spec, name), _masking_numbers(report)
    arr = maps[name]
    layer = min(spec.layer, arr.shape[0] - 1)
    title = (f"{report.model} · mask lab · {STACK_TITLES.get(name, name)}, layer {layer}, "
             f"{heads_what(spec, arr.shape[1])}")
    return MasksData("padding" if padding else "tokens", name, strip, strip_rows, toks, strip_title, panels,
                     numbers, spec.title if spec.title is not None else title)


class MasksDrawer:
    """The attention mask strip on top, three maps below, the numbers at the bottom."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None:
        self.fig, self.theme, self.live = fig, theme, live
        fig.set_layout_engine("constrained")
        gs = fig.add_gridspec(3 if not live else 2, 3, height_ratios=[1, 6] + ([1.4] if not live else []))
        self.ax_mask = fig.add_subplot(gs[0, :])
        self.ax_panels = [fig.add_subplot(gs[1, i]) for i in range(3)]
        self.ax_numbers = None if live else fig.add_subplot(gs[2, :])
        # colour bars made once: attention (0–1) for the first two maps, the Δ's diverging scale
        self.unit = ScalarMappable(Normalize(0.0, 1.0), theme.cmap)
        self.delta = ScalarMappable(TwoSlopeNorm(0.0, -1.0, 1.0), "RdBu_r")
        self.cbar_unit = fig.colorbar(self.unit, ax=self.ax_panels[:2], fraction=0.03, pad=0.01, aspect=40)
        self.cbar_delta = fig.colorbar(self.delta, ax=self.ax_panels[2], fraction=0.05, pad=0.01, aspect=40)
        self.set_theme(theme)

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        self.unit.set_cmap(theme.cmap)
        self.cbar_unit.update_normal(self.unit)
        # sizes from the theme, not rcParams: the window draws outside the theme's rc_context
        for cbar, label in ((self.cbar_unit, "attention weight"), (self.cbar_delta, "Δ attention")):
            cbar.set_label(label, color=theme.text_color, fontsize=theme.base_size)
            cbar.ax.tick_params(colors=theme.grid_color, labelcolor=theme.text_color, labelsize=theme.tick_size)

    @staticmethod
    def size(d: MasksData, theme: Theme) -> tuple[float, float]:
        n = max(len(d.strip_cols), max(len(p.cols) for p in d.panels))
        side = min(6.0, max(3.0, n * theme.tick_size * 1.4 / 72.0))
        # room for what surrounds the maps, at the theme's sizes: the strip's and the maps'
        # token labels (written upright), two lines of title each, the numbers
        labels = 2 * (text_inches(list(d.strip_cols), theme.tick_size) + 0.2)
        titles = 2 * 2 * theme.title_size * 1.4 / 72
        numbers = (len(d.numbers) + 1) * theme.tick_size * 1.5 / 72
        strip = len(d.strip_rows) * theme.tick_size * 1.6 / 72
        return 3 * side + 1.5, side + labels + titles + numbers + strip + title_inches(theme) + 0.4

    def _heat(self, ax, p: MaskPanel) -> None:
        th = self.theme
        ax.clear()
        m = p.matrix
        if p.diverging:
            lim = float(np.abs(m).max()) or 1e-9
            im = ax.imshow(m, aspect="auto", interpolation="nearest", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
            self.delta.set_norm(im.norm)
            self.cbar_delta.update_normal(self.delta)
        else:
            im = ax.imshow(m, aspect="auto", interpolation="nearest", cmap=th.cmap, norm=Normalize(0.0, 1.0))
        im.set_gid(GID_ATTENTION)
        # labels thinned to what a third of the figure holds at the theme's tick size
        w, h = self.fig.get_size_inches()
        across = max(float(w) / 3 - text_inches(list(p.rows), th.tick_size) - 0.9, 0.8)
        xstep = tick_step(m.shape[1], across, th.tick_size, pitch=1.3)
        ystep = tick_step(m.shape[0], max(float(h) * 0.35, 0.8), th.tick_size, pitch=1.3)
        ax.set_xticks(range(0, m.shape[1], xstep), [p.cols[i] for i in range(0, m.shape[1], xstep)], rotation=90)
        ax.set_yticks(range(0, m.shape[0], ystep), [p.rows[i] for i in range(0, m.shape[0], ystep)])
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.tick_size)
        if p.marked:  # the pad (masked) columns, in data coordinates (drawable before any layout)
            ax.vlines(list(p.marked), -0.5, m.shape[0] - 0.5, color="#d1495b", lw=0.6, alpha=0.5)
            ax.set_ylim(m.shape[0] - 0.5, -0.5)
        panel_title(ax, p.title, th)

    def draw(self, d: MasksData) -> bool:
        th = self.theme
        ax = self.ax_mask
        ax.clear()
        ax.imshow(d.strip, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(d.strip_rows)), list(d.strip_rows))
        step = tick_step(len(d.strip_cols), 12.0, th.tick_size, pitch=1.2)
        ax.set_xticks(range(0, len(d.strip_cols), step), [d.strip_cols[i] for i in range(0, len(d.strip_cols), step)],
                      rotation=90)
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.tick_size)
        panel_title(ax, d.strip_title, th)
        for a, p in zip(self.ax_panels, d.panels, strict=True):
            self._heat(a, p)
        if self.ax_numbers is not None:
            self.ax_numbers.clear()
            self.ax_numbers.set_axis_off()
            self.ax_numbers.text(0.0, 1.0, "\n".join(d.numbers), ha="left", va="top", fontsize=th.tick_size,
                                 color=th.text_color, transform=self.ax_numbers.transAxes, wrap=True)
        return True
