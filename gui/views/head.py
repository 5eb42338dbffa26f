"""Head view: one heatmap, query rows × key columns, token labels, colour bar, hover tooltip.

Switching layer/head with the same tokens only calls ``set_data`` on the (animated) image and
blits; tick labels are laid out only when the tokens or options change.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from matplotlib.colors import to_rgba
from PySide6.QtCore import Signal

from analysis.viewdata import HeatmapData, heatmap_data

from .canvas import CanvasView


def _tick_step(n: int, pixels: float, font_px: float) -> int:
    fit = max(1, int(pixels / (font_px * 1.15)))
    return max(1, int(np.ceil(n / fit)))


class HeadView(CanvasView):
    """One attention map. ``display(capture, spec)`` draws; ``hover_at(i, j)`` is the tooltip logic."""

    hovered = Signal(str)
    cell_clicked = Signal(int, int)  # original query index, key index

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.ax = self.figure.add_axes((0.18, 0.2, 0.66, 0.75))
        self.cax = self.figure.add_axes((0.87, 0.2, 0.025, 0.72))
        self.image = self.ax.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest", origin="upper")
        self.mask_image = self.ax.imshow(np.zeros((1, 1, 4)), aspect="auto", interpolation="nearest", origin="upper")
        self.cbar = self.figure.colorbar(self.image, cax=self.cax)
        # the live title is a QLabel above the canvas: drawing text into the figure on every
        # switch costs more than the image itself (exported figures get a real title)
        self.title = self.title_label
        self.title_label.setVisible(True)
        self.set_animated_artists([self.image, self.mask_image])
        self.data: HeatmapData | None = None
        self._layout_key = None
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self._apply_theme_extra()

    def _apply_theme_extra(self) -> None:
        t = self.theme
        for ax in (self.ax, self.cax):
            ax.tick_params(colors=t.grid_color, labelcolor=t.text_color, labelsize=t.tick_size)
        self._layout_key = None

    # -- public -------------------------------------------------------------------------------
    def display(self, capture, spec) -> None:
        """Show ``spec`` (an :class:`analysis.figures.ViewSpec`, view ignored) of ``capture``."""
        spec = replace(spec, view="head")
        d = heatmap_data(capture, spec, self.theme)
        old = self.data
        self.data = d
        self.image.set_data(d.matrix)
        if old is None or old.cmap_name != d.cmap_name or self._layout_key is None:
            self.image.set_cmap(d.cmap)
        self.image.set_extent((-0.5, d.matrix.shape[1] - 0.5, d.matrix.shape[0] - 0.5, -0.5))
        self.mask_image.set_extent(self.image.get_extent())
        if d.mask is not None:
            rgba = np.zeros(d.mask.shape + (4,), dtype=np.float32)
            rgba[d.mask] = to_rgba(self.theme.masked_color)
            self.mask_image.set_data(rgba)
            self.mask_image.set_visible(True)
        else:
            self.mask_image.set_visible(False)
        self.title_label.setText(d.title)
        key = (d.row_labels, d.col_labels, d.row_title, d.col_title, self.theme.name, d.cmap_name,
               d.vmin, d.vmax, d.scale, self.canvas.get_width_height())
        if key != self._layout_key:
            self._layout(d)
            self._layout_key = key
            self.redraw()
        else:
            self.blit()

    def _layout(self, d: HeatmapData) -> None:
        t = self.theme
        w, h = self.canvas.get_width_height()
        font_px = t.tick_size * self.figure.dpi / 72.0
        q, k = d.matrix.shape
        ys = _tick_step(q, h * 0.72, font_px)
        xs = _tick_step(k, w * 0.66, font_px)
        self.ax.set_yticks(range(0, q, ys), [d.row_labels[i] for i in range(0, q, ys)], fontsize=t.tick_size)
        self.ax.set_xticks(range(0, k, xs), [d.col_labels[i] for i in range(0, k, xs)], rotation=90, fontsize=t.tick_size)
        self.ax.set_xlim(-0.5, k - 0.5)
        self.ax.set_ylim(q - 0.5, -0.5)
        self.ax.set_ylabel(d.row_title, color=t.text_color)
        self.ax.set_xlabel(d.col_title, color=t.text_color)
        longest_row = max((len(s) for s in d.row_labels), default=4)
        longest_col = max((len(s) for s in d.col_labels), default=4)
        left = min(0.4, 0.06 + longest_row * font_px * 0.62 / max(w, 1))
        bottom = min(0.4, 0.07 + longest_col * font_px * 0.62 / max(h, 1))
        top = 0.95
        self.ax.set_position((left, bottom, 0.84 - left, top - bottom))
        self.cax.set_position((0.87, bottom, 0.025, top - bottom))
        self.image.set_norm(d.norm)
        self.cbar.update_normal(self.image)
        self.cbar.set_label(d.colorbar_label, color=t.text_color)

    def hover_at(self, i: int, j: int) -> str:
        """Tooltip text for the displayed cell (row i, column j); '' outside the map."""
        d = self.data
        if d is None or not (0 <= i < d.matrix.shape[0] and 0 <= j < d.matrix.shape[1]):
            return ""
        w = float(d.matrix[i, j])
        extra = " (masked: a future position)" if d.mask is not None and d.mask[i, j] else ""
        return f"{d.row_labels[i]} → {d.col_labels[j]}: {w:.4f}{extra}"

    def _cell(self, event) -> tuple[int, int] | None:
        if event.inaxes is not self.ax or event.xdata is None or self.data is None:
            return None
        return int(np.floor(event.ydata + 0.5)), int(np.floor(event.xdata + 0.5))

    def _on_motion(self, event) -> None:
        cell = self._cell(event)
        text = self.hover_at(*cell) if cell else ""
        if self.set_hover(text):
            self.hovered.emit(text)

    def _on_click(self, event) -> None:
        cell = self._cell(event)
        if cell and self.data is not None:
            i, j = cell
            if 0 <= i < len(self.data.row_idx) and 0 <= j < len(self.data.col_idx):
                self.cell_clicked.emit(int(self.data.row_idx[i]), int(self.data.col_idx[j]))
