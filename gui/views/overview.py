"""Layer view (all heads of one layer) and Model view (layers × heads of a stack).

Both draw ONE image – the maps tiled by :func:`analysis.overview.mosaic` – never one axes per head.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PySide6.QtCore import Signal

from analysis.overview import Mosaic, mosaic
from analysis.viewdata import shared_norm, stack_tiles

from .canvas import CanvasView
from .fast_image import add_nearest_image

_LABELS = {"attentions": "self-attention", "encoder_attentions": "encoder self-attention",
           "decoder_attentions": "decoder self-attention", "cross_attentions": "cross-attention"}


def _label(name: str) -> str:
    return _LABELS.get(name, name)


#: largest tile side in pixels before max-pooling (keeps 30 × 9 overviews of long inputs fast)
MODEL_MAX_CELL = 64
LAYER_MAX_CELL = 160


class _MosaicView(CanvasView):
    hovered = Signal(str)

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.ax = self.figure.add_axes((0.08, 0.06, 0.84, 0.84))
        self.ax.set_xticks([])
        self.ax.set_yticks([])
        # one image of all tiles, coloured before it is sampled to the screen (gui.views.fast_image)
        self.image = add_nearest_image(self.ax)
        self.title = self.figure.text(0.5, 0.985, "", ha="center", va="top")
        self.set_animated_artists([self.image, self.title])
        self.mos: Mosaic | None = None
        self.capture = None
        self.spec = None
        self._key = None
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self._apply_theme_extra()

    def _apply_theme_extra(self) -> None:
        self.title.set_color(self.theme.text_color)
        self.title.set_fontsize(self.theme.title_size)
        self.ax.tick_params(colors=self.theme.grid_color, labelcolor=self.theme.text_color, labelsize=self.theme.tick_size)
        self._key = None

    def _set_image(self, mos: Mosaic, norm, cmap, title: str, layout_key) -> None:
        self.mos = mos
        self.image.set_data(mos.image)
        self.image.set_extent((-0.5, mos.image.shape[1] - 0.5, mos.image.shape[0] - 0.5, -0.5))
        self.image.set_cmap(cmap)
        self.image.set_norm(norm)
        self.title.set_text(title)
        if layout_key != self._key:
            self._layout(mos)
            self._key = layout_key
            self.redraw()
        else:
            self.blit()

    def _layout(self, mos: Mosaic) -> None:  # pragma: no cover - overridden
        pass

    def _tile_and_cell(self, event):
        if event.inaxes is not self.ax or event.xdata is None or self.mos is None:
            return None
        return self.mos.cell_at(event.ydata, event.xdata)

    def _on_motion(self, event) -> None:
        hit = self._tile_and_cell(event)
        text = self.describe(*hit) if hit else ""
        if self.set_hover(text):
            self.hovered.emit(text)

    def describe(self, r: int, c: int, y: int, x: int) -> str:  # pragma: no cover - overridden
        return ""

    def _on_click(self, event) -> None:  # pragma: no cover - overridden
        pass


class LayerView(_MosaicView):
    """All heads of one layer as small multiples (one tiled image)."""

    head_clicked = Signal(int)

    def display(self, capture, spec) -> None:
        self.capture, self.spec = capture, spec
        name = capture.resolve_stack(spec.stack)
        tiles, tok = stack_tiles(capture, spec, spec.layer)
        self._tok = tok
        n_heads = tiles.shape[0]
        cols = int(np.ceil(np.sqrt(n_heads)))
        mos = mosaic(tiles, cols=cols, gap=max(1, tiles.shape[-1] // 12), max_cell=LAYER_MAX_CELL)
        norm = shared_norm(capture, name, replace(spec, view="head"))
        cmap = self._cmap(spec)
        title = f"{capture.model} · {_label(name)} · layer {spec.layer}: all {n_heads} heads (click one to open it)"
        self._set_image(mos, norm, cmap, title, (mos.rows, mos.cols, mos.cell, n_heads, self.theme.name))

    def _cmap(self, spec):
        import matplotlib as mpl

        return mpl.colormaps[spec.cmap or self.theme.cmap].with_extremes(bad=self.theme.figure_facecolor)

    def _layout(self, mos: Mosaic) -> None:
        for t in list(self.ax.texts):
            t.remove()
        h, w = mos.cell
        n = self.capture.n_heads(self.spec.stack)
        labels = []
        for k in range(n):
            r, c = divmod(k, mos.cols)
            labels.append(self.ax.text(c * (w + mos.gap), r * (h + mos.gap), f"H{k}", color="white",
                                       fontsize=self.theme.tick_size, va="top", ha="left",
                                       bbox=dict(facecolor="black", alpha=0.55, lw=0, pad=1)))
        # drawn over the (animated) image on every blit, not into the cached background below it
        self.set_animated_artists([self.image, *labels, self.title])

    def describe(self, r, c, y, x) -> str:
        head = r * self.mos.cols + c
        if head >= self.capture.n_heads(self.spec.stack):
            return ""
        return f"head {head} (click to open)"

    def _on_click(self, event) -> None:
        hit = self._tile_and_cell(event)
        if hit:
            head = hit[0] * self.mos.cols + hit[1]
            if head < self.capture.n_heads(self.spec.stack):
                self.head_clicked.emit(head)


class ModelView(_MosaicView):
    """The layers × heads overview of a whole stack; clicking a cell opens it in the Head view."""

    cell_clicked = Signal(int, int)  # layer, head

    def display(self, capture, spec) -> None:
        self.capture, self.spec = capture, spec
        name = capture.resolve_stack(spec.stack)
        tiles, _tok = stack_tiles(capture, spec)
        n_layers, n_heads = tiles.shape[:2]
        mos = mosaic(tiles, gap=max(1, min(tiles.shape[-1], MODEL_MAX_CELL) // 10), max_cell=MODEL_MAX_CELL)
        norm = shared_norm(capture, name, replace(spec, view="head"))
        import matplotlib as mpl

        cmap = mpl.colormaps[spec.cmap or self.theme.cmap].with_extremes(bad=self.theme.figure_facecolor)
        title = f"{capture.model} · {_label(name)}: {n_layers} layers × {n_heads} heads (click a cell to open it)"
        self._set_image(mos, norm, cmap, title, (mos.rows, mos.cols, mos.cell, self.theme.name))

    def _layout(self, mos: Mosaic) -> None:
        h, w = mos.cell
        ts = self.theme.tick_size
        rows = range(mos.rows)
        step = max(1, int(np.ceil(mos.rows / 32)))
        self.ax.set_yticks([r * (h + mos.gap) + h / 2 for r in rows][::step], [f"L{r}" for r in rows][::step], fontsize=ts)
        self.ax.set_xticks([c * (w + mos.gap) + w / 2 for c in range(mos.cols)], [f"H{c}" for c in range(mos.cols)], fontsize=ts)
        self.ax.xaxis.tick_top()
        self.ax.set_xlim(-0.5, mos.image.shape[1] - 0.5)
        self.ax.set_ylim(mos.image.shape[0] - 0.5, -0.5)
        self.ax.set_position((0.08, 0.03, 0.88, 0.86))

    def describe(self, r, c, y, x) -> str:
        return f"layer {r}, head {c} (click to open)"

    def _on_click(self, event) -> None:
        hit = self._tile_and_cell(event)
        if hit:
            self.cell_clicked.emit(hit[0], hit[1])
