"""Token labels of the Head view drawn by Qt over the matplotlib canvas.

Creating matplotlib ``Tick`` objects and rendering their text with Agg cost far more than the
heatmap itself (≈ 150 ms for a 256-token input against ≈ 30 ms without tick labels), so the live
Head view has no matplotlib tick labels at all. :class:`AxisLabels` is a transparent child widget
of the canvas that paints the (thinned) row and column labels with :class:`QPainter`, next to the
axes box whose position it is given in figure fractions. Everything is in logical pixels, so a
device pixel ratio other than 1 needs no special care. Exported figures keep real tick labels
(``analysis.figures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QWidget

#: gap between a tick mark and its label, logical pixels
LABEL_PAD = 2.0


@dataclass(frozen=True)
class Geometry:
    """Label positions in canvas logical pixels (computed from the widget size on demand)."""

    box: QRectF  # the heatmap (axes box)
    rows: list[QRectF]  # one per shown row label
    cols: list[QRectF]  # one per shown column label


@lru_cache(maxsize=1)
def _register_bundled_font() -> str | None:
    """Family name of the NanumGothic TTF shipped with ``koreanize_matplotlib`` when Qt does not
    know a NanumGothic already; registered once. None when there is none or it fails."""
    try:
        from analysis.fonts import BUNDLED_FONT_NAME, bundled_font_path

        if QFontDatabase.hasFamily(BUNDLED_FONT_NAME):
            return BUNDLED_FONT_NAME
        path = bundled_font_path()
        if path is None:
            return None
        font_id = QFontDatabase.addApplicationFont(str(path))
        if font_id < 0:
            return None
        families = QFontDatabase.applicationFontFamilies(font_id)
        return families[0] if families else None
    except Exception:  # a missing or broken font must never break the view
        return None


@lru_cache(maxsize=1)
def label_families() -> tuple[str, ...]:
    """Font families for token labels: matplotlib's Latin font first (the figure's look), then
    the CJK fallbacks matplotlib uses (Hangul, kana, hanzi), then the bundled NanumGothic."""
    families: list[str] = []
    try:
        import matplotlib as mpl
        from matplotlib import font_manager

        from analysis.fonts import ensure_cjk_font, installed_cjk_fonts

        ensure_cjk_font()
        first = list(mpl.rcParams["font.family"])[:1] or ["sans-serif"]
        path = font_manager.findfont(font_manager.FontProperties(family=first), fallback_to_default=True)
        families.append(font_manager.get_font(path).family_name)
        families.extend(installed_cjk_fonts()[:3])
    except Exception:
        pass
    bundled = _register_bundled_font()
    if bundled:
        families.append(bundled)
    out: list[str] = []
    for f in families:
        if f and f not in out:
            out.append(f)
    return tuple(out)


def label_font(pixel_size: float) -> QFont:
    """The label font at ``pixel_size`` logical pixels, with fallback families for any script."""
    font = QFont()
    families = label_families()
    if families:
        font.setFamilies(list(families))
    font.setPixelSize(max(1, round(pixel_size)))
    return font


class CanvasOverlay(QWidget):
    """A transparent child widget of a canvas that covers it exactly and follows its size: no
    background, every mouse event goes through to the canvas. Subclasses paint on it."""

    def __init__(self, canvas: QWidget) -> None:
        super().__init__(canvas)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground, True)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        self.setAutoFillBackground(False)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.paints = 0  # counted for tests
        self._canvas = canvas
        self.setGeometry(canvas.rect())
        canvas.installEventFilter(self)
        self.raise_()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._canvas and event.type() == QEvent.Type.Resize:
            self.setGeometry(0, 0, event.size().width(), event.size().height())
        return False


class AxisLabels(CanvasOverlay):
    """Row labels left of the heatmap, column labels (rotated 90°) below it, with tick marks.

    A child of the canvas covering it exactly; it has no background and lets every mouse event
    through to the canvas. Set the content with :meth:`set_labels`, the axes box with
    :meth:`set_box` and the look with :meth:`set_style`; each schedules a repaint.

    Attributes
    ----------
    rows, cols : ``(index, text)`` of the labels shown (index = row/column of the shown map)
    n_rows, n_cols : size of the map (rows × columns)
    view : ``(row_lo, row_hi, col_lo, col_hi)``, the map's rows and columns at the box's edges in
        token coordinates (row i spans [i − ½, i + ½]); the whole map unless zoomed
    box_fraction : (left, bottom, width, height) of the axes box in figure fractions
    text_font, color, tick_color, tick_length : the look (logical pixels)
    """

    def __init__(self, canvas: QWidget) -> None:
        super().__init__(canvas)
        self.rows: list[tuple[int, str]] = []
        self.cols: list[tuple[int, str]] = []
        self.n_rows = 0
        self.n_cols = 0
        self.view: tuple[float, float, float, float] = (-0.5, -0.5, -0.5, -0.5)
        self.box_fraction: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
        self.text_font = label_font(11)
        self.color = QColor("#000000")
        self.tick_color = QColor("#000000")
        self.tick_length = 4.0
        self.col_angle = 90  # column labels: 90 (bottom to top), 45 or 0 (analysis.views.common.col_label_angle)
        self.max_row_width = 1e9  # longer labels are elided (…) to these widths
        self.max_col_width = 1e9
        self._metrics = QFontMetricsF(self.text_font)
        self._elided: dict[tuple[str, float], str] = {}
        self._widths: dict[str, float] = {}

    # -- content and look ---------------------------------------------------------------------
    # (setting labels, box or limits repaints nothing by itself: the view repaints the overlay
    # when its canvas has drawn, so new labels never show over the previous map)
    def set_labels(self, rows: list[tuple[int, str]], cols: list[tuple[int, str]], n_rows: int, n_cols: int,
                   view: tuple[float, float, float, float] | None = None) -> None:
        """The labels shown, the map's size and the part of it in the box (None: all of it)."""
        self.rows, self.cols = list(rows), list(cols)
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        r0, r1, c0, c1 = (-0.5, n_rows - 0.5, -0.5, n_cols - 0.5) if view is None else view
        self.view = (float(r0), float(r1), float(c0), float(c1))

    def set_box(self, left: float, bottom: float, width: float, height: float) -> None:
        self.box_fraction = (float(left), float(bottom), float(width), float(height))

    def set_col_angle(self, angle: int) -> None:
        self.col_angle = int(angle)

    def set_limits(self, max_row_width: float, max_col_width: float) -> None:
        self.max_row_width, self.max_col_width = float(max_row_width), float(max_col_width)
        self._elided.clear()

    def set_style(self, font: QFont, color: QColor, tick_color: QColor, tick_length: float) -> None:
        if font != self.text_font:
            self.text_font = QFont(font)
            self._metrics = QFontMetricsF(self.text_font)
            self._elided.clear()
            self._widths.clear()
        self.color, self.tick_color = QColor(color), QColor(tick_color)
        self.tick_length = float(tick_length)
        self.update()

    # -- measuring ----------------------------------------------------------------------------
    @property
    def metrics(self) -> QFontMetricsF:
        return self._metrics

    def line_height(self) -> float:
        """Height of one label across the text direction (ascent + descent), logical pixels."""
        return self._metrics.height()

    def text_width(self, text: str) -> float:
        """Advance of ``text`` in the label font, logical pixels (cached per font)."""
        width = self._widths.get(text)
        if width is None:
            if len(self._widths) > 20_000:
                self._widths.clear()
            width = self._widths[text] = self._metrics.horizontalAdvance(text)
        return width

    def shown_text(self, text: str, limit: float) -> str:
        """``text`` elided with … to fit ``limit`` pixels (cached)."""
        key = (text, limit)
        out = self._elided.get(key)
        if out is None:
            out = text
            if self.text_width(text) > limit:
                out = self._metrics.elidedText(text, Qt.TextElideMode.ElideRight, max(limit, 1.0))
            self._elided[key] = out
        return out

    def box_rect(self) -> QRectF:
        """The axes box in canvas logical pixels (Qt's y axis: down from the top)."""
        w, h = self.width(), self.height()
        left, bottom, bw, bh = self.box_fraction
        return QRectF(left * w, (1.0 - bottom - bh) * h, bw * w, bh * h)

    def row_centre(self, i: int, box: QRectF | None = None) -> float:
        box = self.box_rect() if box is None else box
        lo, hi = self.view[0], self.view[1]
        return box.top() + (i - lo) / max(hi - lo, 1e-9) * box.height()

    def col_centre(self, j: int, box: QRectF | None = None) -> float:
        box = self.box_rect() if box is None else box
        lo, hi = self.view[2], self.view[3]
        return box.left() + (j - lo) / max(hi - lo, 1e-9) * box.width()

    def label_geometry(self) -> Geometry:
        """Where every shown label is drawn, for the current widget size."""
        box = self.box_rect()
        lh = self.line_height()
        off = self.tick_length + LABEL_PAD
        rows = []
        for i, text in self.rows:
            tw = self.text_width(self.shown_text(text, self.max_row_width))
            rows.append(QRectF(box.left() - off - tw, self.row_centre(i, box) - lh / 2, tw, lh))
        cols = []
        for j, text in self.cols:
            tw = self.text_width(self.shown_text(text, self.max_col_width))
            cx, top = self.col_centre(j, box), box.bottom() + off
            if self.col_angle == 0:
                cols.append(QRectF(cx - tw / 2, top, tw, lh))
            elif self.col_angle == 45:
                reach = (tw + lh) * 0.7072
                cols.append(QRectF(cx - reach, top, reach, reach))
            else:
                cols.append(QRectF(cx - lh / 2, top, lh, tw))
        return Geometry(box, rows, cols)

    def label_rects(self) -> tuple[list[QRectF], list[QRectF]]:
        """(row label rectangles, column label rectangles) in canvas logical pixels."""
        g = self.label_geometry()
        return g.rows, g.cols

    # -- painting -----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        if not (self.rows or self.cols) or self.n_rows <= 0 or self.n_cols <= 0:
            return
        box = self.box_rect()
        clip = QRectF(event.rect())
        if box.contains(clip):
            return  # inside the heatmap: nothing of ours there
        self.paints += 1  # (a blit of the heatmap repaints its rim: ticks only, labels are skipped)
        lh = self.line_height()
        tick = self.tick_length
        off = tick + LABEL_PAD
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
            p.setFont(self.text_font)
            if tick > 0:
                pen = QPen(self.tick_color)
                pen.setWidthF(1.0)
                pen.setCapStyle(Qt.PenCapStyle.FlatCap)
                p.setPen(pen)
                x0, y1 = box.left(), box.bottom()
                for i, _ in self.rows:
                    y = round(self.row_centre(i, box)) + 0.5
                    p.drawLine(QPointF(x0 - tick, y), QPointF(x0, y))
                for j, _ in self.cols:
                    x = round(self.col_centre(j, box)) + 0.5
                    p.drawLine(QPointF(x, y1), QPointF(x, y1 + tick))
            p.setPen(self.color)
            right = box.left() - off
            align_r = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            for i, text in self.rows:
                r = QRectF(0.0, self.row_centre(i, box) - lh / 2, right, lh)
                if r.intersects(clip):
                    p.drawText(r, align_r, self.shown_text(text, self.max_row_width))
            top = box.bottom() + off
            col_len = max(self.height() - top, 1.0)
            for j, text in self.cols:
                cx = self.col_centre(j, box)
                shown = self.shown_text(text, self.max_col_width)
                if self.col_angle == 0:  # short CJK words that fit their column: horizontal
                    tw = self.text_width(shown)
                    p.drawText(QRectF(cx - tw / 2 - 1, top, tw + 2, lh), Qt.AlignmentFlag.AlignCenter, shown)
                    continue
                if not QRectF(cx - col_len, top, col_len + lh, col_len).intersects(clip):
                    continue
                p.save()
                # 90: reading bottom-to-top (matplotlib's rotation=90); 45: rising to the right;
                # either way the text ends next to the axes, below its column
                p.translate(cx, top)
                p.rotate(-float(self.col_angle))
                if self.col_angle == 45:
                    p.translate(-lh * 0.5, 0.0)
                p.drawText(QRectF(-col_len, -lh / 2, col_len, lh), align_r, shown)
                p.restore()
        finally:
            p.end()
