"""Layer view (all heads of one layer) and Model view (layers × heads of a stack).

Both draw ONE image – the maps tiled by :func:`analysis.overview.mosaic` – never one axes per head,
through :class:`analysis.views.overview.MosaicDrawer` from :func:`~analysis.views.overview.layer_data`
/ :func:`~analysis.views.overview.model_data`: the data and drawer of every exported overview. A
colour bar shows the range; the selected head is outlined. Tiles are never drawn flatter than 2:1:
when the window is too small for a deep model (SmolLM2's 30 × 9) the canvas grows and scrolls.
"""

from __future__ import annotations

import math

from matplotlib.transforms import Bbox
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QScrollArea, QSizePolicy

from analysis.views.captions import view_caption
from analysis.views.overview import (
    MAX_TILE_ASPECT,
    MosaicData,
    MosaicDrawer,
    layer_data,
    model_data,
)

from ..tabs.base import StateTab
from .canvas import CanvasView
from .text_overlay import Placer, TextOverlay

#: the axes box inside the canvas (figure fractions): left, bottom, width, top margin
AX_LEFT, AX_BOTTOM, AX_WIDTH, AX_TOP = 0.07, 0.03, 0.82, 0.92
CBAR_GAP, CBAR_WIDTH = 0.02, 0.02


class _MosaicView(StateTab, CanvasView):
    hovered = Signal(str)
    kind = ""

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.title_label.setVisible(True)
        # the canvas scrolls when a deep model's tiles would be flatter than 2:1
        lay = self.layout()
        lay.removeWidget(self.canvas)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.canvas)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay.addWidget(self.scroll)
        self.drawer = MosaicDrawer(self.figure, self.theme, live=True)
        self.ax, self.image = self.drawer.ax, self.drawer.image
        self.set_animated_artists([self.image, self.drawer.marker])
        # every text of the figure (names, titles, the colour bar's ticks) is painted by Qt
        self.texts = TextOverlay(self.canvas)
        self.data: MosaicData | None = None
        self.mos = None
        self._fit_key = None
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("resize_event", lambda _e: self._fit())
        # the viewport changes size without the canvas (shown again, a taller window): fit again
        self.scroll.viewport().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if watched is self.scroll.viewport() and event.type() == QEvent.Type.Resize and self._fit():
            self.redraw()
        return False

    def content_widgets(self) -> list:
        return [self.title_label, self.scroll]

    def _apply_theme_extra(self) -> None:
        self.drawer.set_theme(self.theme)
        if self.data is not None:
            self.drawer.draw(self.data)

    def _build(self, spec):  # pragma: no cover - overridden
        raise NotImplementedError

    def refresh(self) -> None:
        shown = self.capture_and_spec(self.kind)
        if shown is None:
            return
        cap, spec = shown
        if spec.theme != self.theme.name:
            self.set_theme(spec.theme)
        self.set_caption(view_caption(cap, spec), spec.caption)  # first: the canvas's size depends on it
        self.show_mosaic(self._build(cap, spec))

    def display(self, capture, spec) -> None:
        """Show ``spec`` of ``capture`` directly (benchmarks, tests without a window)."""
        from dataclasses import replace

        self.show_mosaic(self._build(capture, replace(spec, view=self.kind)))

    def show_mosaic(self, d: MosaicData) -> None:
        self.data, self.mos = d, d.mosaic
        changed = self.drawer.draw(d)
        self.title_label.setText(d.title)
        if self._fit() or changed:
            self.redraw()
        else:
            self.blit()

    # -- tiles never flatter than 2:1 --------------------------------------------------------------
    def _fit(self) -> bool:
        """Place the axes so tiles keep an aspect between 1:2 and 2:1 (a taller canvas scrolls);
        True when the box or the canvas height changed."""
        d = self.data
        if d is None:
            return False
        m = d.mosaic
        width = max(self.scroll.viewport().width(), 100)
        height = max(self.scroll.viewport().height(), 100)
        # margins in pixels of the viewport: a taller, scrolling canvas keeps them (the names above
        # the tiles stay under the title, not a fraction of the whole canvas below it)
        top_px, bottom_px = (1.0 - AX_TOP) * height, AX_BOTTOM * height
        room = height - top_px - bottom_px
        tile_w = AX_WIDTH * width / m.cols
        h_cells, w_cells = m.cell  # pooled cells are square: the tile's own aspect
        ideal = min(max(tile_w * h_cells / max(w_cells, 1), tile_w / MAX_TILE_ASPECT), tile_w * MAX_TILE_ASPECT)
        flattest = m.rows * tile_w / MAX_TILE_ASPECT  # axes pixels with 2:1 tiles
        if m.rows * ideal <= room:  # fits at its own aspect
            canvas_h, box_px = height, m.rows * ideal
        elif flattest <= room:  # fits when squashed, up to 2:1
            canvas_h, box_px = height, room
        else:  # scroll rather than squash further
            canvas_h = int(math.ceil(flattest + top_px + bottom_px))
            box_px = flattest
        top, box_h = 1.0 - top_px / canvas_h, box_px / canvas_h
        key = (canvas_h, round(box_h, 4), round(top, 4), width)
        if key == self._fit_key:
            return False
        self._fit_key = key
        self.canvas.setMinimumHeight(canvas_h if canvas_h > height else 0)
        self.ax.set_position((AX_LEFT, top - box_h, AX_WIDTH, box_h))
        self.drawer.cbar.ax.set_position((AX_LEFT + AX_WIDTH + CBAR_GAP, top - box_h, CBAR_WIDTH, box_h))
        return True

    # -- text ---------------------------------------------------------------------------------
    def _on_draw(self, event) -> None:
        super()._on_draw(event)
        self._place_texts()  # the layout is final once drawn

    def _blit_bbox(self) -> Bbox:
        """A blit repaints the mosaic's axes only (the image, the outline of the selected tile and
        the tile names over it); the text around it does not change."""
        x0, y0, x1, y1 = self.ax.bbox.extents
        pad = 3 * (self.canvas.device_pixel_ratio or 1)  # the outline's half width, rounding
        return Bbox.intersection(Bbox.from_extents(x0 - pad, y0 - pad, x1 + pad, y1 + pad),
                                 self.figure.bbox) or self.figure.bbox

    def _place_texts(self) -> None:
        """The figure's text where matplotlib would draw it (what an export shows): row names left
        of the tiles, column names above them, the axis titles beyond them, tile names in the top
        left corner of each tile, the colour bar's ticks and its label on its right."""
        d = self.data
        if d is None:
            self.texts.set_items([], [])
            return
        t, dr = self.theme, self.drawer
        place = Placer(self.figure, self.canvas.device_pixel_ratio or 1, self.texts, t.tick_size, t.base_size,
                       QColor(t.text_color), QColor(t.grid_color))
        place.left_ticks(self.ax, dr.row_items, d.row_title)
        place.top_ticks(self.ax, dr.col_items, d.col_title)
        place.boxed(self.ax, dr.tile_items)
        place.colorbar_right(dr.cbar.ax, d.colorbar_label)
        self.texts.set_items(place.texts, place.lines)

    # -- mouse ---------------------------------------------------------------------------------
    def _tile(self, event) -> tuple[int, int] | None:
        if event.inaxes is not self.ax or event.xdata is None or self.data is None:
            return None
        return self.data.tile_at(event.ydata, event.xdata)

    def _on_motion(self, event) -> None:
        t = self._tile(event)
        text = self.describe(*t) if t else ""
        if self.set_hover(text):
            self.hovered.emit(text)

    def describe(self, r: int, c: int) -> str:  # pragma: no cover - overridden
        return ""

    def _on_click(self, event) -> None:  # pragma: no cover - overridden
        pass


class LayerView(_MosaicView):
    """All heads of one layer as small multiples (one tiled image); click a head to open it."""

    kind = figure_view = "layer"
    head_clicked = Signal(int)

    def _build(self, cap, spec) -> MosaicData:
        return layer_data(cap, spec, self.theme)

    def describe(self, r: int, c: int) -> str:
        return f"layer {self.data.layer}, head {r * self.data.mosaic.cols + c} (click to open it)"

    def _on_click(self, event) -> None:
        t = self._tile(event)
        if t:
            self.head_clicked.emit(t[0] * self.data.mosaic.cols + t[1])


class ModelView(_MosaicView):
    """The layers × heads overview of a whole stack; clicking a cell opens it in the Head view."""

    kind = figure_view = "model"
    cell_clicked = Signal(int, int)  # layer, head

    def _build(self, cap, spec) -> MosaicData:
        return model_data(cap, spec, self.theme)

    def describe(self, r: int, c: int) -> str:
        return f"layer {r}, head {c} (click to open it)"

    def _on_click(self, event) -> None:
        t = self._tile(event)
        if t:
            self.cell_clicked.emit(t[0], t[1])
