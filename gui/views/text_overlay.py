"""Figure text painted by Qt over a matplotlib canvas: tick labels, axis titles, tick marks.

matplotlib 3.11 lays out and renders one text in about half a millisecond on this machine; the
Model view of a 12 × 12 model has some thirty of them (row and column names, the colour bar's
ticks, three titles), which made its full draw 35 ms of the 40 ms it may take. A
:class:`TextOverlay` is a transparent child widget of the canvas that paints them in a fraction of
that. The view says what to paint in canvas logical pixels (:class:`Text`, :class:`Line`), placed as
matplotlib places its own; exported figures keep matplotlib's text (``analysis.figures``), so the
two show the same words at the same places and sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QWidget

from .axis_labels import CanvasOverlay, label_font

_H = {"left": 0.0, "center": 0.5, "right": 1.0}
_V = {"top": 0.0, "center": 0.5, "bottom": 1.0}


@dataclass(frozen=True)
class Text:
    """``text`` at ``(x, y)`` (logical pixels, y down) aligned there by its box: ``h`` is where
    the anchor is across the box (left/center/right), ``v`` down it (top/center/bottom, or
    baseline: the text's baseline at ``y``, unrotated text only). ``rotation``
    90 reads bottom to top (the alignment applies to the rotated box, as in matplotlib).
    ``background``: a filled box ``pad`` pixels around the text (tile names over a map)."""

    text: str
    x: float
    y: float
    size: float  # font pixel size
    color: QColor
    h: str = "left"
    v: str = "center"
    rotation: int = 0
    background: QColor | None = None
    pad: float = 0.0


@dataclass(frozen=True)
class Line:
    """A straight line (a tick mark) from ``(x0, y0)`` to ``(x1, y1)``, logical pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    color: QColor
    width: float = 1.0


_SUPERSCRIPT = str.maketrans("0123456789-−+.", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁻⁺·")


def plain_text(label: str) -> str:
    """A tick label as matplotlib would render it, in plain Unicode: ``$\\mathdefault{10^{-3}}$``
    (a log colour bar) becomes ``10⁻³``, ``2\\times10^{-1}`` becomes ``2×10⁻¹``."""
    if "$" not in label:
        return label
    s = label.replace("$", "")
    s = re.sub(r"\\mathdefault\{(.*)\}", r"\1", s)
    s = s.replace("\\times", "×").replace("\\cdot", "·").replace("\\,", " ").replace("\\;", " ")
    s = re.sub(r"\^\{([^}]*)\}", lambda m: m.group(1).translate(_SUPERSCRIPT), s)
    s = re.sub(r"\^(\S)", lambda m: m.group(1).translate(_SUPERSCRIPT), s)
    return s.replace("{", "").replace("}", "").replace("\\", "")


class TextOverlay(CanvasOverlay):
    """A transparent child of ``canvas``, covering it, painting :class:`Text` and :class:`Line`
    items (set with :meth:`set_items`); mouse events go through to the canvas."""

    def __init__(self, canvas: QWidget) -> None:
        super().__init__(canvas)
        self.texts: list[Text] = []
        self.lines: list[Line] = []
        self._fonts: dict[float, tuple[QFont, QFontMetricsF]] = {}

    def set_items(self, texts: list[Text], lines: list[Line]) -> None:
        """What to paint from now on; repaints when it changed."""
        if texts != self.texts or lines != self.lines:
            self.texts, self.lines = list(texts), list(lines)
            self.update()

    # -- measuring ----------------------------------------------------------------------------
    def font_at(self, size: float) -> tuple[QFont, QFontMetricsF]:
        """The label font at ``size`` pixels (Latin first, then the CJK fallbacks) and its metrics."""
        key = round(size, 2)
        got = self._fonts.get(key)
        if got is None:
            f = label_font(size)
            got = self._fonts[key] = (f, QFontMetricsF(f))
        return got

    def text_size(self, text: str, size: float) -> tuple[float, float]:
        """(advance, height) of ``text`` unrotated, logical pixels."""
        _, m = self.font_at(size)
        if "\n" in text:
            r = m.boundingRect(QRectF(0, 0, 1e6, 1e6), int(Qt.AlignmentFlag.AlignLeft), text)
            return r.width(), r.height()
        return m.horizontalAdvance(text), m.height()

    def text_rect(self, t: Text) -> QRectF:
        """The box ``t`` covers (its background included), logical pixels."""
        w, h = self.text_size(t.text, t.size)
        w, h = w + 2 * t.pad, h + 2 * t.pad
        if t.rotation == 90:
            w, h = h, w
        if t.v == "baseline":  # (unrotated text) the baseline at y
            return QRectF(t.x - _H[t.h] * w, t.y - self.font_at(t.size)[1].ascent() - t.pad, w, h)
        return QRectF(t.x - _H[t.h] * w, t.y - _V[t.v] * h, w, h)

    def ink_height(self, size: float) -> float:
        """Height of the ink of "lp" (ascender to descender) at ``size`` pixels: the height
        matplotlib gives a one-line label's box."""
        return self.font_at(size)[1].tightBoundingRect("lp").height()

    # -- painting -----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        if not (self.texts or self.lines):
            return
        self.paints += 1
        clip = QRectF(event.rect())
        p = QPainter(self)
        try:
            p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
            for ln in self.lines:
                pen = QPen(ln.color)
                pen.setWidthF(ln.width)
                pen.setCapStyle(Qt.PenCapStyle.FlatCap)
                p.setPen(pen)
                p.drawLine(QPointF(ln.x0, ln.y0), QPointF(ln.x1, ln.y1))
            for t in self.texts:
                r = self.text_rect(t)
                if not r.intersects(clip):
                    continue
                if t.background is not None:
                    p.fillRect(r, t.background)
                p.setFont(self.font_at(t.size)[0])
                p.setPen(t.color)
                inner = r.adjusted(t.pad, t.pad, -t.pad, -t.pad)
                if t.rotation == 90:
                    p.save()
                    p.translate(inner.center())
                    p.rotate(-90.0)
                    p.drawText(QRectF(-inner.height() / 2, -inner.width() / 2, inner.height(), inner.width()),
                               Qt.AlignmentFlag.AlignCenter, t.text)
                    p.restore()
                else:
                    p.drawText(inner, Qt.AlignmentFlag.AlignCenter, t.text)
        finally:
            p.end()


@dataclass
class Placer:
    """Places text around matplotlib axes where matplotlib itself would draw it, in canvas
    logical pixels (y down): tick marks ``ytick.major.size`` long, labels ``ytick.major.pad``
    beyond them, axis titles ``axes.labelpad`` beyond the labels; ``small``/``big`` are the tick
    label and title sizes in points. Collects :class:`Text` and :class:`Line` items."""

    figure: Figure
    ratio: float  # device pixel ratio of the canvas
    overlay: TextOverlay
    small_pt: float
    big_pt: float
    text_color: QColor
    tick_color: QColor
    texts: list[Text] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)

    def __post_init__(self) -> None:
        rc = mpl.rcParams
        self.pt = self.figure.dpi / self.ratio / 72.0  # logical pixels per point
        self.tick = rc["ytick.major.size"] * self.pt
        self.minor = rc["ytick.minor.size"] * self.pt
        self.pad = rc["ytick.major.pad"] * self.pt
        self.labelpad = rc["axes.labelpad"] * self.pt
        self.tick_width = rc["ytick.major.width"] * self.pt
        self.small, self.big = self.small_pt * self.pt, self.big_pt * self.pt

    # -- coordinates ------------------------------------------------------------------------------
    def box(self, ax) -> tuple[float, float, float, float]:
        """``ax``'s box: left, top, right, bottom."""
        h = self.figure.bbox.height
        x0, y0, x1, y1 = ax.bbox.extents
        return x0 / self.ratio, (h - y1) / self.ratio, x1 / self.ratio, (h - y0) / self.ratio

    def points(self, ax, xs, ys) -> np.ndarray:
        """Data coordinates of ``ax`` → ``[n, 2]`` canvas points."""
        pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
        return np.column_stack([pts[:, 0] / self.ratio, (self.figure.bbox.height - pts[:, 1]) / self.ratio])

    def width(self, text: str) -> float:
        return self.overlay.text_size(text, self.small)[0]

    # -- what matplotlib draws --------------------------------------------------------------------
    def left_ticks(self, ax, items: list[tuple[float, str]], title: str = "") -> None:
        """Tick labels left of ``ax`` at data y ``items[i][0]``, and its rotated title beyond them."""
        left, top, _, bottom = self.box(ax)
        if items:
            ys = self.points(ax, np.zeros(len(items)), [y for y, _ in items])[:, 1]
            for y, (_, s) in zip(ys, items, strict=True):
                self.lines.append(Line(left - self.tick, y, left, y, self.tick_color, self.tick_width))
                self.texts.append(Text(s, left - self.tick - self.pad, y, self.small, self.text_color, "right", "center"))
        if title:
            widest = max((self.width(s) for _, s in items), default=0.0)
            x = left - self.tick - self.pad - widest - self.labelpad
            self.texts.append(Text(title, x, (top + bottom) / 2, self.big, self.text_color, "right", "center", 90))

    def top_ticks(self, ax, items: list[tuple[float, str]], title: str = "") -> None:
        """Tick labels above ``ax`` at data x ``items[i][0]``, and its title above them."""
        left, top, right, _ = self.box(ax)
        if items:
            xs = self.points(ax, [x for x, _ in items], np.zeros(len(items)))[:, 0]
            for x, (_, s) in zip(xs, items, strict=True):
                self.lines.append(Line(x, top - self.tick, x, top, self.tick_color, self.tick_width))
                self.texts.append(Text(s, x, top - self.tick - self.pad, self.small, self.text_color, "center", "bottom"))
        if title:  # (matplotlib: the title's baseline labelpad above the labels' boxes)
            tall = self.overlay.ink_height(self.small) if items else 0.0
            y = top - self.tick - self.pad - tall - self.labelpad
            self.texts.append(Text(title, (left + right) / 2, y, self.big, self.text_color, "center", "baseline"))

    def titles_outside(self, ax, left: str, left_gap: float, bottom: str, bottom_gap: float) -> None:
        """``left`` rotated, its box ending ``left_gap`` pixels left of ``ax``; ``bottom`` centred,
        its box starting ``bottom_gap`` pixels below it (a view that placed its own labels)."""
        x0, top, x1, y1 = self.box(ax)
        if left:
            self.texts.append(Text(left, x0 - left_gap, (top + y1) / 2, self.big, self.text_color, "right", "center", 90))
        if bottom:
            self.texts.append(Text(bottom, (x0 + x1) / 2, y1 + bottom_gap, self.big, self.text_color, "center", "top"))

    def boxed(self, ax, items: list[tuple[float, float, str]]) -> None:
        """Names at data ``(x, y)``, their top left corner there, white on translucent black."""
        if not items:
            return
        xy = self.points(ax, [x for x, _, _ in items], [y for _, y, _ in items])
        for (x, y), (_, _, s) in zip(xy, items, strict=True):
            self.texts.append(Text(s, x, y, self.small, QColor("white"), "left", "top",
                                   background=QColor(0, 0, 0, round(0.55 * 255)), pad=self.pt))

    def colorbar_right(self, cax, label: str) -> None:
        """A vertical colour bar's ticks (major and minor, with their formatters' labels and
        offset) on its right, and ``label`` beyond them."""
        left, top, right, bottom = self.box(cax)
        axis = cax.yaxis
        lo, hi = sorted(axis.get_view_interval())
        eps = (hi - lo) * 1e-9
        widest = 0.0
        for locs, fmt, length in ((axis.get_majorticklocs(), axis.get_major_formatter(), self.tick),
                                  (axis.get_minorticklocs(), axis.get_minor_formatter(), self.minor)):
            locs = [v for v in locs if lo - eps <= v <= hi + eps]
            if not locs:
                continue
            ys = self.points(cax, np.full(len(locs), 0.5), locs)[:, 1]
            for y, s in zip(ys, fmt.format_ticks(locs), strict=True):
                self.lines.append(Line(right, y, right + length, y, self.tick_color, self.tick_width))
                s = plain_text(s)
                if s:
                    self.texts.append(Text(s, right + length + self.pad, y, self.small, self.text_color, "left", "center"))
                    widest = max(widest, self.width(s))
            offset = plain_text(fmt.get_offset()) if length == self.tick and hasattr(fmt, "get_offset") else ""
            if offset:
                self.texts.append(Text(offset, left, top - self.pad, self.small, self.text_color, "left", "bottom"))
        if label:
            x = right + self.tick + self.pad + widest + self.labelpad
            self.texts.append(Text(label, x, (top + bottom) / 2, self.big, self.text_color, "left", "center", 90))
