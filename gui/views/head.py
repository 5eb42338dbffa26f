"""Head view: one heatmap, query rows × key columns, token labels, colour bar, hover tooltip.

The map is drawn by :class:`analysis.views.heatmap.HeatmapDrawer` (``live=True``) from
:func:`analysis.views.heatmap.heatmap_data`: the same data and drawer as every exported Head
figure. Switching layer/head with the same tokens only sets the image data and blits; the token
labels are laid out only when the tokens or options change. The token labels are not matplotlib
tick labels (creating ticks and rendering their text with Agg made a new sentence cost several
times the heatmap itself): :class:`~gui.views.axis_labels.AxisLabels`, a transparent Qt widget
over the canvas, paints the data's labels next to the axes box. The axis titles and the colour bar
stay matplotlib artists; the title is a label above the canvas.

Zoom: the mouse wheel zooms around the cursor, a left-drag pans the zoomed map, and a double-click,
the "Reset zoom" button in the canvas' corner or View ▸ Reset zoom (Ctrl+0) shows the whole map
again. A zoom only moves the axes' limits and blits the image, which reads the level and the
cells that fit (:class:`analysis.views.pyramid_image.PyramidImage`); the margins are sized once
for the widest token label, so the map never moves while zooming. The token labels name the rows
and columns in view, thinned so they never overlap, as long as that axis is not pooled (fewer than
two tokens per pixel); on a pooled picture they hide and the colour bar says what a cell is. The
zoom is kept while switching heads and layers of a capture and reset by a new capture.
"""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox
from PySide6.QtCore import Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import QToolButton

from analysis.views.captions import view_caption
from analysis.views.common import col_label_angle, label_extent
from analysis.views.heatmap import HeatmapData, HeatmapDrawer, View, heatmap_data, hover_text
from analysis.views.pyramid_image import axis_level, in_view

from ..tabs.base import StateTab
from .axis_labels import LABEL_PAD, AxisLabels, label_font
from .canvas import CanvasView
from .text_overlay import Placer, TextOverlay

#: the axes box: right edge (the colour bar is right of it) and top, in figure fractions
AX_RIGHT, AX_TOP = 0.84, 0.95
#: the label margins (left, bottom) never take more than this fraction of the figure
MAX_MARGIN = 0.4
#: logical pixels between the token labels and the axis title, and outside the axis title
TITLE_GAP, OUTER_PAD = 4.0, 4.0
#: one notch of the mouse wheel zooms by this factor
ZOOM_STEP = 1.25
#: zoomed in as far as it goes, the view still spans this many tokens (or the whole axis)
MIN_SPAN = 2.0
#: a press that moves less than this (logical pixels) before its release is a click, not a drag
DRAG_SLOP = 4.0


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
    """One attention map of the viewer state's selection; ``hover_at(i, j)`` is the tooltip.

    ``zoom`` is the part of the map shown (:data:`analysis.views.heatmap.View`, token
    coordinates), None for all of it; :meth:`zoom_at`, :meth:`pan_by` and :meth:`set_zoom` change it.
    """

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
        self.texts = TextOverlay(self.canvas)  # axis titles, the colour bar's ticks
        self._title_gaps = (0.0, 0.0)  # pixels between the axes and the left / bottom title
        # the live title is a QLabel above the canvas: drawing text into the figure on every
        # switch costs more than the image itself (exported figures get a real title)
        self.title = self.title_label
        self.title_label.setVisible(True)
        self.set_animated_artists([self.image, self.mask_patch])
        self.data: HeatmapData | None = None
        self.selected_cell: tuple[int, int] | None = None  # clicked (query, key), original indices
        self._cell_capture = None
        self._layout_key = None
        # zoom: the view, the capture it belongs to, a press that may become a drag
        self.zoom: View | None = None
        self._zoom_capture = None
        self._press: tuple[float, float, View] | None = None  # display pixels and the view at the press
        self._press_cell: tuple[int, int] | None = None
        self._dragged = False
        self._mouse: tuple[float, float] | None = None  # the last mouse position (display pixels)
        self._col_room = 0.0  # logical pixels below the map reserved for column labels
        self._font_px = self._pitch = 1.0
        self.reset_zoom_action = QAction("Reset zoom", self)
        self.reset_zoom_action.setShortcut(QKeySequence("Ctrl+0"))
        self.reset_zoom_action.setToolTip("show the whole map again (or double-click it)")
        self.reset_zoom_action.setEnabled(False)
        self.reset_zoom_action.triggered.connect(self.reset_zoom)
        self.addAction(self.reset_zoom_action)
        # in the canvas' top right corner (above the colour bar), only while zoomed
        self.reset_button = QToolButton(self.canvas)
        self.reset_button.setDefaultAction(self.reset_zoom_action)
        self.reset_button.setVisible(False)
        self.reset_button.raise_()
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("button_release_event", self._on_release)
        self.canvas.mpl_connect("scroll_event", self._on_scroll)
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
            self.drawer.draw(self.data, self.zoom)
            self._layout(self.data)  # the label font size may have changed: margins follow

    def _on_resize(self, _event) -> None:
        # runs inside the canvas' resizeEvent, before its queued full draw: margins, thinning and
        # the level that fits follow the new size in that same draw
        self._place_reset_button()
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
        self._new_capture(cap)
        self.show_map(heatmap_data(cap, spec, self.theme))
        self.set_caption(view_caption(cap, spec), spec.caption)
        self.say_cell()

    def _new_capture(self, cap) -> None:
        """A new capture shows all of its map; another head or layer of the same keeps the zoom."""
        if cap is not self._zoom_capture:
            self._zoom_capture = cap
            self.zoom = None

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

        self._new_capture(capture)
        self.show_map(heatmap_data(capture, replace(spec, view="head"), self.theme))

    def show_map(self, d: HeatmapData) -> None:
        """Draw ``d``: a blit when only the map changed, else a new layout and a full draw. The
        zoom is kept when ``d`` has the shape of the map shown before."""
        if self.data is None or self.data.shape != d.shape:
            self.zoom = None
        self.data = d
        changed = self.drawer.draw(d, self.zoom)
        self.title_label.setText(d.title)
        stretch = self.ctx is not None and self.state.spec.stretch
        key = (d.row_labels, d.col_labels, d.row_title, d.col_title, self.theme.name, self.canvas.get_width_height(),
               stretch)
        if key != self._layout_key:
            self._layout(d)
            self._layout_key = key
            changed = True
        elif self._place_labels():
            self.labels.update()
        self._sync_zoom_controls()
        if changed:
            self.redraw()
        else:
            self.blit()

    def _on_draw(self, event) -> None:
        super()._on_draw(event)
        self.labels.update()  # the labels that belong to the map just drawn
        self._place_texts()

    def _place_texts(self) -> None:
        """The axis titles just outside the token labels, the colour bar's ticks and label (what
        matplotlib draws in an export), painted by Qt."""
        d = self.data
        if d is None:
            self.texts.set_items([], [])
            return
        t = self.theme
        place = Placer(self.figure, self.canvas.device_pixel_ratio or 1, self.texts, t.tick_size, t.base_size,
                       _qcolor(t.text_color), _qcolor(t.grid_color))
        place.titles_outside(self.ax, d.row_title, self._title_gaps[0], d.col_title, self._title_gaps[1])
        place.colorbar_right(self.cax, self.drawer.cbar_text())
        self.texts.set_items(place.texts, place.lines)

    def _blit_bbox(self) -> Bbox:
        """Only the axes box goes to the screen on a blit: the animated image and mask live there,
        and the token labels around it (a Qt overlay) need no repaint."""
        x0, y0, x1, y1 = self.ax.bbox.extents
        pad = 2 * (self.canvas.device_pixel_ratio or 1)  # the canvas rounds to whole pixels
        box = Bbox.from_extents(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        return Bbox.intersection(box, self.figure.bbox) or self.figure.bbox

    # -- layout and labels --------------------------------------------------------------------
    def _layout(self, d: HeatmapData) -> None:
        """The margins (sized for the widest label of each axis: zoomed in, any of them may show,
        and the map must not move), the axes box, the axis titles, then the labels in view."""
        t = self.theme
        lab = self.labels
        w, h = self.canvas.get_width_height()
        w, h = max(w, 1), max(h, 1)
        dpi = self._logical_dpi()
        font_px = t.tick_size * dpi / 72.0
        q, k = d.shape
        # margins in logical pixels, from the axes edge outwards: tick, pad, labels, gap, title
        near = lab.tick_length + LABEL_PAD
        title_px = max(self.ax.yaxis.label.get_fontsize(), self.ax.xaxis.label.get_fontsize()) * dpi / 72.0 * 1.25
        fixed = near + TITLE_GAP + title_px + OUTER_PAD
        max_row_w = max(MAX_MARGIN * w - fixed, font_px)  # longer labels are elided
        max_col_w = max(MAX_MARGIN * h - fixed, font_px)
        lab.set_limits(max_row_w, max_col_w)
        row_w = min(max_row_w, max((lab.text_width(s) for s in d.row_labels), default=0.0))
        col_widths = [lab.text_width(s) for s in d.col_labels]
        col_w = min(max_col_w, max(col_widths, default=0.0))
        pitch = max(font_px * 1.15, lab.line_height())
        left = min(MAX_MARGIN, (fixed + row_w) / w)
        # the column labels' angle at the whole map's thinning (short CJK words: horizontal when
        # they fit their column, else 45°; the exports' rule): zoomed in, columns only get wider,
        # so no label in view needs more room below the map than the widest label at this angle
        smallest = self._box(left, min(MAX_MARGIN, (fixed + col_w) / h), q, k, w, h)
        xs = _tick_step(k, smallest[2] * w, font_px, pitch)
        angle = col_label_angle(list(d.col_labels), col_widths, smallest[2] * w / k * xs)
        col_room = label_extent(col_w, lab.line_height(), angle)
        bottom = min(MAX_MARGIN, (fixed + col_room) / h)
        box = self._box(left, bottom, q, k, w, h)
        self._col_room = min(col_room, bottom * h - fixed)
        self._font_px, self._pitch = font_px, pitch
        self.ax.set_position(box)
        self.cax.set_position((min(box[0] + box[2] + 0.03, 0.87), box[1], 0.025, box[3]))
        # the axis titles just outside the token labels (there are no tick labels to push them)
        self._title_gaps = (near + row_w + TITLE_GAP, near + self._col_room + TITLE_GAP)
        lab.set_box(*box)
        # the image reads the level and cells that fit the new box; the labels in view follow
        self.drawer.set_view(self.zoom)
        self._place_labels()

    def _view(self) -> View:
        """The part of the map shown (the whole map when not zoomed)."""
        assert self.data is not None
        q, k = self.data.shape
        return self.zoom or (-0.5, k - 0.5, -0.5, q - 0.5)

    def _place_labels(self) -> bool:
        """The labels of the rows and columns in view, thinned so they never overlap; none along
        an axis whose tokens share pixels (a pooled picture). True when they changed."""
        d, lab = self.data, self.labels
        if d is None:
            return False
        q, k = d.shape
        c0, c1, r0, r1 = self._view()
        w, h = self.canvas.get_width_height()
        box_w, box_h = lab.box_fraction[2] * max(w, 1), lab.box_fraction[3] * max(h, 1)
        ratio = self.canvas.device_pixel_ratio or 1
        rows: list[tuple[int, str]] = []
        cols: list[tuple[int, str]] = []
        # the image's rule (pyramid levels), along each axis: labels while every token has its own pixel
        if axis_level(q, box_h * ratio / (r1 - r0) * q) == 0:
            rows = self._axis_items(d.row_labels, r0, r1, box_h)
        if axis_level(k, box_w * ratio / (c1 - c0) * k) == 0:
            cols = self._axis_items(d.col_labels, c0, c1, box_w)
        angle = 90
        if cols:
            step = cols[1][0] - cols[0][0] if len(cols) > 1 else 1
            widths = [lab.text_width(s) for _, s in cols]
            angle = col_label_angle([s for _, s in cols], widths, box_w / (c1 - c0) * step)
            if label_extent(max(widths), lab.line_height(), angle) > self._col_room + 0.5:
                angle = 90  # (elided to the room there is)
        before = (lab.rows, lab.cols, lab.view, lab.col_angle)
        lab.set_col_angle(angle)
        lab.set_labels(rows, cols, q, k, view=(r0, r1, c0, c1))
        return (lab.rows, lab.cols, lab.view, lab.col_angle) != before

    def _axis_items(self, labels: tuple[str, ...], lo: float, hi: float, px: float) -> list[tuple[int, str]]:
        """``(index, label)`` of every k-th token whose centre is in view ``[lo, hi]`` (multiples of
        k, so panning keeps them), k the least that keeps labels ``pitch`` apart on ``px`` pixels."""
        first, stop = in_view(lo, hi, len(labels))
        first, stop = max(first, math.ceil(lo)), min(stop, math.floor(hi) + 1)
        step = _tick_step(max(1, round(hi - lo)), px, self._font_px, self._pitch)
        start = -(-first // step) * step
        return [(i, labels[i]) for i in range(start, stop, step)]

    def _box(self, left: float, bottom: float, q: int, k: int, w: int, h: int) -> tuple[float, float, float, float]:
        """The map's box (figure fractions) right of the row labels and above the column labels:
        all the room when stretching, else the largest box of square cells, at the top left."""
        width, height = AX_RIGHT - left, AX_TOP - bottom
        if self.ctx is None or self.state.spec.stretch:
            return left, bottom, width, height
        cell = min(width * w / k, height * h / q)  # pixels
        sw, sh = cell * k / w, cell * q / h
        return left, AX_TOP - sh, sw, sh

    # -- zoom -----------------------------------------------------------------------------------
    def set_zoom(self, view: View | None) -> None:
        """Show ``view`` of the map (None, or a view of all of it: the whole map)."""
        if self.data is None:
            return
        q, k = self.data.shape
        if view is not None and view[1] - view[0] >= k - 1e-9 and view[3] - view[2] >= q - 1e-9:
            view = None
        if view == self.zoom:
            return
        self.zoom = view
        full = self.drawer.set_view(view)  # the level may change: its note is on the colour bar
        labels = self._place_labels()
        self._sync_zoom_controls()
        if full:
            self.redraw()
        else:
            self.blit()
            if labels:
                self.labels.update()
        self._refresh_hover()

    def reset_zoom(self) -> None:
        """Show the whole map."""
        self.set_zoom(None)

    def zoom_at(self, x: float, y: float, factor: float) -> None:
        """Zoom by ``factor`` (> 1: in, < 1: out) around the map point (x, y) (column, row in token
        coordinates), which stays where it is; cells keep their aspect."""
        if self.data is None:
            return
        q, k = self.data.shape
        c0, c1, r0, r1 = self._view()
        # one factor for both axes: at most down to MIN_SPAN tokens, at most out to the whole map
        most_in = min((c1 - c0) / min(MIN_SPAN, k), (r1 - r0) / min(MIN_SPAN, q))
        most_out = max((c1 - c0) / k, (r1 - r0) / q)
        factor = min(max(factor, most_out), max(most_in, 1.0))

        def axis(lo: float, hi: float, at: float, n: int) -> tuple[float, float]:
            span = min((hi - lo) / factor, float(n))
            start = at - (at - lo) / factor
            start = min(max(start, -0.5), n - 0.5 - span)
            return start, start + span

        c0, c1 = axis(c0, c1, x, k)
        r0, r1 = axis(r0, r1, y, q)
        self.set_zoom((c0, c1, r0, r1))

    def pan_by(self, dx: float, dy: float, start: View | None = None) -> None:
        """Move the zoomed view by ``dx`` columns and ``dy`` rows (from ``start``, default the view
        now), never past the map's edges; nothing happens when not zoomed."""
        if self.data is None or self.zoom is None:
            return
        q, k = self.data.shape
        c0, c1, r0, r1 = start or self.zoom
        dx = min(max(dx, -0.5 - c0), k - 0.5 - c1)
        dy = min(max(dy, -0.5 - r0), q - 0.5 - r1)
        self.set_zoom((c0 + dx, c1 + dx, r0 + dy, r1 + dy))

    def _sync_zoom_controls(self) -> None:
        zoomed = self.zoom is not None
        self.reset_zoom_action.setEnabled(zoomed)
        if self.reset_button.isVisibleTo(self.canvas) != zoomed:
            self.reset_button.setVisible(zoomed)
            self._place_reset_button()

    def _place_reset_button(self) -> None:
        b = self.reset_button
        b.adjustSize()
        b.move(max(0, self.canvas.width() - b.width() - 4), 4)
        b.raise_()

    # -- the mouse -------------------------------------------------------------------------------
    def hover_at(self, i: int, j: int) -> str:
        """Tooltip text for the displayed cell (row i, column j); '' outside the map. The weight is
        the token pair's own at any zoom; on a pooled picture the drawn cell's maximum follows."""
        return "" if self.data is None else hover_text(self.data, i, j, self.drawer.level)

    def _cell(self, event) -> tuple[int, int] | None:
        if event.inaxes is not self.ax or event.xdata is None or self.data is None:
            return None
        return int(np.floor(event.ydata + 0.5)), int(np.floor(event.xdata + 0.5))

    def _on_motion(self, event) -> None:
        self._mouse = (event.x, event.y)
        if self._press is not None and self._drag(event):
            return
        cell = self._cell(event)
        text = self.hover_at(*cell) if cell else ""
        if self.set_hover(text):
            self.hovered.emit(text)

    def _refresh_hover(self) -> None:
        """The tooltip under the mouse after a zoom: another cell may be there, or another level."""
        if not self.hover_text or self._mouse is None or self.data is None:
            return
        x, y = self.ax.transData.inverted().transform(self._mouse)
        i, j = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        text = self.hover_at(i, j) if self.ax.bbox.contains(*self._mouse) else ""
        if self.set_hover(text):
            self.hovered.emit(text)

    def _drag(self, event) -> bool:
        """Pan with the pressed mouse; True while this press is a drag."""
        assert self._press is not None
        x0, y0, start = self._press
        dx, dy = event.x - x0, event.y - y0
        ratio = self.canvas.device_pixel_ratio or 1
        if not self._dragged and math.hypot(dx, dy) < DRAG_SLOP * ratio:
            return False
        self._dragged = True
        if self.zoom is not None:
            c0, c1, r0, r1 = start
            bbox = self.ax.bbox
            # the map follows the hand: right moves the view left; up (display y) moves it down
            self.pan_by(-dx * (c1 - c0) / max(bbox.width, 1.0), dy * (r1 - r0) / max(bbox.height, 1.0), start)
        return True

    def _on_click(self, event) -> None:
        if event.inaxes is not self.ax or self.data is None:
            return
        if event.dblclick:
            self._press = None
            self.reset_zoom()
            return
        if event.button == 1:
            self._press, self._dragged = (event.x, event.y, self._view()), False
            self._press_cell = self._cell(event)

    def _on_release(self, event) -> None:
        if self._press is None:
            return
        dragged, cell = self._dragged, self._press_cell
        self._press, self._press_cell, self._dragged = None, None, False
        if dragged or cell is None or self.data is None:
            return
        i, j = cell
        if 0 <= i < len(self.data.row_idx) and 0 <= j < len(self.data.col_idx):
            self.selected_cell = (int(self.data.row_idx[i]), int(self.data.col_idx[j]))
            self.cell_clicked.emit(*self.selected_cell)
            self.say_cell()

    def _on_scroll(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None or self.data is None or not event.step:
            return
        self.zoom_at(float(event.xdata), float(event.ydata), ZOOM_STEP ** float(event.step))
