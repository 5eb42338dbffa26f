"""Lines view: the two-column token view (bertviz's "head view").

Left column: query tokens; right column: key tokens; a line from query i to key j with opacity
proportional to the attention weight. One colour for a single head or the aggregate, or one colour
per head ("all heads"). Hovering a token highlights its lines.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from PySide6.QtCore import Signal

from analysis.viewdata import stack_tiles

from .canvas import CanvasView

#: lines lighter than this are not drawn (they would be invisible anyway)
MIN_WEIGHT = 0.01
MAX_TOKENS = 256


class LinesView(CanvasView):
    hovered = Signal(str)

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.ax = self.figure.add_axes((0.02, 0.02, 0.96, 0.9))
        self.ax.set_axis_off()
        self.lines = LineCollection([], linewidths=2.0)
        self.ax.add_collection(self.lines)
        self.title = self.figure.text(0.5, 0.985, "", ha="center", va="top")
        self.all_heads = False
        self.focus: tuple[str, int] | None = None  # ("q" | "k", index) under the mouse
        self._weights = None  # [G, Q, K] (G colour groups)
        self._rows: list[str] = []
        self._cols: list[str] = []
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

    def _apply_theme_extra(self) -> None:
        self.title.set_color(self.theme.text_color)

    def set_all_heads(self, on: bool) -> None:
        self.all_heads = on

    def display(self, capture, spec) -> None:
        name = capture.resolve_stack(spec.stack)
        layer_maps, tok = stack_tiles(capture, spec, spec.layer)  # [H, Q', K']
        if self.all_heads:
            w = layer_maps
            label = "all heads, one colour each"
        elif spec.head is None:
            w = (layer_maps.mean(0) if spec.aggregation == "mean" else layer_maps.max(0))[None]
            label = f"{spec.aggregation} of heads"
        else:
            w = layer_maps[spec.head][None]
            label = f"head {spec.head}"
        self._weights = w
        self._rows, self._cols = list(tok.rows), list(tok.cols)
        from .overview import _label

        self.title.set_text(f"{capture.model} · {_label(name)} · layer {spec.layer} · {label}")
        self.title.set_color(self.theme.text_color)
        self._draw_tokens()
        self._update_lines()
        self.redraw()

    def _y(self, n: int) -> np.ndarray:
        if n == 0:
            return np.empty(0)
        return np.linspace(1.0, 0.0, n) if n > 1 else np.array([0.5])

    def _draw_tokens(self) -> None:
        for t in list(self.ax.texts):
            t.remove()
        n = max(len(self._rows), len(self._cols), 1)
        size = max(5.0, min(self.theme.base_size, 420.0 / n))
        for x, labels, ha in ((0.3, self._rows, "right"), (0.7, self._cols, "left")):
            for y, s in zip(self._y(len(labels)), labels, strict=True):
                self.ax.text(x + (-0.01 if ha == "right" else 0.01), y, s, ha=ha, va="center",
                             fontsize=size, color=self.theme.text_color)
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(-0.03, 1.03)

    def _update_lines(self) -> None:
        w = self._weights
        if w is None:
            return
        g, q, k = w.shape
        yq, yk = self._y(q), self._y(k)
        segs, cols = [], []
        palette = self.theme.line_colors
        for gi in range(g):
            base = np.array(to_rgba(palette[gi % len(palette)]))
            wi = w[gi]
            keep = wi >= MIN_WEIGHT
            if self.focus is not None:
                side, idx = self.focus
                sel = np.zeros_like(keep)
                if side == "q":
                    sel[idx, :] = True
                else:
                    sel[:, idx] = True
                keep &= sel
            ii, jj = np.nonzero(keep)
            alpha = np.clip(wi[ii, jj], 0, 1) * (1.0 if g == 1 else 0.8)
            for i, j, a in zip(ii, jj, alpha, strict=True):
                segs.append(((0.3, yq[i]), (0.7, yk[j])))
                c = base.copy()
                c[3] = a
                cols.append(c)
        self.lines.set_segments(segs)
        self.lines.set_color(cols if cols else "none")
        self.n_lines = len(segs)

    def focus_token(self, side: str | None, index: int | None) -> None:
        """Highlight the lines of one token (``side`` 'q' for left, 'k' for right), or clear."""
        new = (side, index) if side is not None and index is not None else None
        if new != self.focus:
            self.focus = new
            self._update_lines()
            self.redraw()

    def _on_motion(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None:
            self.focus_token(None, None)
            return
        side = "q" if event.xdata < 0.5 else "k"
        labels = self._rows if side == "q" else self._cols
        if not labels:
            return
        ys = self._y(len(labels))
        idx = int(np.argmin(np.abs(ys - event.ydata)))
        self.focus_token(side, idx)
        self.hover_text = f"{'query' if side == 'q' else 'key'} {labels[idx]}"
        self.hovered.emit(self.hover_text)
