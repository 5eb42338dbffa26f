"""Head view: one heatmap, query rows × key columns, token labels, colour bar, hover tooltip.

The map is drawn by :class:`analysis.views.heatmap.HeatmapDrawer` (``live=True``) from
:func:`analysis.views.heatmap.heatmap_data`: the same data and drawer as every exported Head
figure. Switching layer/head with the same tokens only sets the image data and blits; the token
labels are laid out only when the tokens or options change. The token labels are not matplotlib
tick labels (creating ticks and rendering their text with Agg made a new sentence cost several
times the heatmap itself): :class:`~gui.views.axis_labels.AxisLabels`, a transparent Qt widget
over the canvas, paints the data's labels next to the axes box. The axis titles and the colour bar
stay matplotlib artists; the title is a label above the canvas.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor

from analysis.views.captions import view_caption
from analysis.views.common import col_label_angle, label_extent
from analysis.views.heatmap import HeatmapData, HeatmapDrawer, heatmap_data, hover_text

from ..tabs.base import StateTab
from .axis_labels import LABEL_PAD, AxisLabels, label_font
from .canvas import CanvasView

#: the axes box: right edge (the colour bar is right of it) and top, in figure fractions
AX_RIGHT, AX_TOP = 0.84, 0.95
#: the label margins (left, bottom) never take more than this fraction of the figure
MAX_MARGIN = 0.4
#: logical pixels between the token labels and the axis title, and outside the axis title
TITLE_GAP, OUTER_PAD = 4.0, 4.0


def _tick_step(n: int, pixels: float, font_px: float, pitch: float | None = None) -> int:
    """Show every k-th of ``n`` labels along ``pixels`` so that labels ``pitch`` pixels apart
    (default ``1.15 × font_px``) do not overlap; returns k."""
    pitch = font_px * 1.15 if pitch is None else pitch
    fit = max(1, int(pixels / max(pitch, 1e-6)))
    return max(1, int(np.ceil(n / fit)))


def _qcolor(color) -> QColor:
    r, g, b, a = to_rgba(color)
    return QColor.fromRgbF(r, g, b, a)


class HeadView(StateTab, CanvasView):
    """One attention map of the viewer state's selection; ``hover_at(i, j)`` is the tooltip."""

    figure_view = "head"
    hovered = Signal(str)
    cell_clicked = Signal(int, int)  # original query index, key index
    cell_status = Signal(str)  # the clicked cell in words: layer, head, tokens and weight

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.drawer = HeatmapDrawer(self.figure, self.theme, live=True)
        self.ax, self.cax = self.drawer.ax, self.drawer.cbar.ax
        self.image, self.mask_patch, self.cbar = self.drawer.image, self.drawer.mask_patch, self.drawer.cbar
        self.labels = AxisLabels(self.canvas)
        # the live title is a QLabel above the canvas: drawing text into the figure on every
        # switch costs more than the image itself (exported figures get a real title)
        self.title = self.title_label
        self.title_label.setVisible(True)
        self.set_animated_artists([self.image, self.mask_patch])
        self.data: HeatmapData | None = None
        self.selected_cell: tuple[int, int] | None = None  # clicked (query, key), original indices
        self._cell_capture = None
        self._layout_key = None
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("resize_event", self._on_resize)
        self._apply_theme_extra()

    def _logical_dpi(self) -> float:
        """Figure dots per inch in logical pixels (matplotlib scales ``figure.dpi`` by the
        device pixel ratio; the overlay paints in logical pixels)."""
        return self.figure.dpi / (self.canvas.device_pixel_ratio or 1)

    def _apply_theme_extra(self) -> None:
        t = self.theme
        self.drawer.set_theme(t)
        dpi = self._logical_dpi()
        # font and tick length as matplotlib would draw them: points → logical pixels
        tick_len = float(mpl.rcParams["xtick.major.size"]) * dpi / 72.0
        self.labels.set_style(label_font(t.tick_size * dpi / 72.0), _qcolor(t.text_color), _qcolor(t.grid_color), tick_len)
        self._layout_key = None
        if self.data is not None:
            self.drawer.draw(self.data)
            self._layout(self.data)  # the label font size may have changed: margins follow

    def _on_resize(self, _event) -> None:
        # runs inside the canvas' resizeEvent, before its queued full draw: margins and thinning
        # follow the new size in that same draw
        if self.data is not None:
            self._layout(self.data)

    # -- the state ----------------------------------------------------------------------------
    def refresh(self) -> None:
        shown = self.capture_and_spec("head")
        if shown is None:
            return
        cap, spec = shown
        if spec.theme != self.theme.name:
            self.set_theme(spec.theme)
        if cap is not self._cell_capture:  # a clicked cell belongs to one capture
            self.selected_cell, self._cell_capture = None, cap
        self.show_map(heatmap_data(cap, spec, self.theme))
        self.set_caption(view_caption(cap, spec), spec.caption)
        self.say_cell()

    def cell_text(self) -> str:
        """The clicked cell as the hover names it, for the selection shown ('' when none)."""
        d, cell = self.data, self.selected_cell
        if d is None or cell is None or self.ctx is None:
            return ""
        rows, cols = np.flatnonzero(d.row_idx == cell[0]), np.flatnonzero(d.col_idx == cell[1])
        if not (rows.size and cols.size):
            return ""
        spec = self.state.spec
        head = f"{spec.aggregation} of heads" if spec.head is None else f"head {spec.head}"
        return f"layer {spec.layer}, {head} · {hover_text(d, int(rows[0]), int(cols[0]))}"

    def say_cell(self) -> None:
        text = self.cell_text()
        if text:
            self.cell_status.emit(text)

    def display(self, capture, spec) -> None:
        """Show ``spec`` of ``capture`` directly (benchmarks, tests without a window)."""
        from dataclasses import replace

        self.show_map(heatmap_data(capture, replace(spec, view="head"), self.theme))

    def show_map(self, d: HeatmapData) -> None:
        """Draw ``d``: a blit when only the map changed, else a new layout and a full draw."""
        self.data = d
        changed = self.drawer.draw(d)
        self.title_label.setText(d.title)
        stretch = self.ctx is not None and self.state.spec.stretch
        key = (d.row_labels, d.col_labels, d.row_title, d.col_title, self.theme.name, self.canvas.get_width_height(),
               stretch)
        if changed or key != self._layout_key:
            self._layout(d)
            self._layout_key = key
            self.redraw()
        else:
            self.blit()

    def _on_draw(self, event) -> None:
        super()._on_draw(event)
        self.labels.update()  # the labels that belong to the map just drawn

    def _blit_bbox(self) -> Bbox:
        """Only the axes box goes to the screen on a blit: the animated image and mask live there,
        and the token labels around it (a Qt overlay) need no repaint."""
        x0, y0, x1, y1 = self.ax.bbox.extents
        pad = 2 * (self.canvas.device_pixel_ratio or 1)  # the canvas rounds to whole pixels
        box = Bbox.from_extents(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        return Bbox.intersection(box, self.figure.bbox) or self.figure.bbox

    def _layout(self, d: HeatmapData) -> None:
        t = self.theme
        lab = self.labels
        w, h = self.canvas.get_width_height()
        w, h = max(w, 1), max(h, 1)
        dpi = self._logical_dpi()
        font_px = t.tick_size * dpi / 72.0
        q, k = d.matrix.shape
        # margins in logical pixels, from the axes edge outwards: tick, pad, labels, gap, title
        near = lab.tick_length + LABEL_PAD
        title_px = max(self.ax.yaxis.label.get_fontsize(), self.ax.xaxis.label.get_fontsize()) * dpi / 72.0 * 1.25
        fixed = near + TITLE_GAP + title_px + OUTER_PAD
        max_row_w = max(MAX_MARGIN * w - fixed, font_px)  # longer labels are elided
        max_col_w = max(MAX_MARGIN * h - fixed, font_px)
        lab.set_limits(max_row_w, max_col_w)

        def widest(texts, limit: float) -> float:
            return min(limit, max((lab.text_width(s) for s in texts), default=0.0))

        # thinning from the box left by the widest of all labels (the smallest box), then the
        # margins from the labels actually shown: the box only grows, labels never overlap
        pitch = max(font_px * 1.15, lab.line_height())
        left = min(MAX_MARGIN, (fixed + widest(d.row_labels, max_row_w)) / w)
        bottom = min(MAX_MARGIN, (fixed + widest(d.col_labels, max_col_w)) / h)
        smallest = self._box(left, bottom, q, k, w, h)
        ys = _tick_step(q, smallest[3] * h, font_px, pitch)
        xs = _tick_step(k, smallest[2] * w, font_px, pitch)
        rows = [(i, d.row_labels[i]) for i in range(0, q, ys)]
        cols = [(j, d.col_labels[j]) for j in range(0, k, xs)]
        row_w = widest([s for _, s in rows], max_row_w)
        col_w = widest([s for _, s in cols], max_col_w)
        # short CJK words: horizontal when they fit their column, else 45° (the exports' rule)
        angle = col_label_angle([s for _, s in cols], [lab.text_width(s) for _, s in cols], smallest[2] * w / k * xs)
        col_w = label_extent(col_w, lab.line_height(), angle)
        left = min(MAX_MARGIN, (fixed + row_w) / w)
        bottom = min(MAX_MARGIN, (fixed + col_w) / h)
        box = self._box(left, bottom, q, k, w, h)
        lab.set_col_angle(angle)
        self.ax.set_position(box)
        self.cax.set_position((min(box[0] + box[2] + 0.03, 0.87), box[1], 0.025, box[3]))
        # the axis titles just outside the token labels (there are no tick labels to push them)
        self.ax.yaxis.set_label_coords(-(near + row_w + TITLE_GAP) / max(box[2] * w, 1.0), 0.5)
        self.ax.xaxis.set_label_coords(0.5, -(near + col_w + TITLE_GAP) / max(box[3] * h, 1.0))
        lab.set_box(*box)
        lab.set_labels(rows, cols, q, k)

    def _box(self, left: float, bottom: float, q: int, k: int, w: int, h: int) -> tuple[float, float, float, float]:
        """The map's box (figure fractions) right of the row labels and above the column labels:
        all the room when stretching, else the largest box of square cells, at the top left."""
        width, height = AX_RIGHT - left, AX_TOP - bottom
        if self.ctx is None or self.state.spec.stretch:
            return left, bottom, width, height
        cell = min(width * w / k, height * h / q)  # pixels
        sw, sh = cell * k / w, cell * q / h
        return left, AX_TOP - sh, sw, sh

    def hover_at(self, i: int, j: int) -> str:
        """Tooltip text for the displayed cell (row i, column j); '' outside the map."""
        return "" if self.data is None else hover_text(self.data, i, j)

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
                self.selected_cell = (int(self.data.row_idx[i]), int(self.data.col_idx[j]))
                self.cell_clicked.emit(*self.selected_cell)
                self.say_cell()
