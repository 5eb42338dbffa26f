"""Base for matplotlib views: one FigureCanvasQTAgg created once, themed, with blitting.

Subclasses hold one drawer of :mod:`analysis.views` (artists created once, updated in place).
Artists that change on every selection (the image) may be *animated*: a full ``canvas.draw()``
skips them and caches the background; :meth:`blit` restores the background and draws only them.
:class:`DrawnView` is a canvas showing one view's data through its drawer, with the data's title
above the canvas (what exports put above the figure).
"""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib as mpl
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from analysis.fonts import ensure_cjk_font
from analysis.themes import Theme, apply_theme, get_theme
from analysis.views import DRAWERS


class CanvasView(QWidget):
    """A QWidget holding one figure canvas."""

    def __init__(self, parent: QWidget | None = None, theme: str = "light") -> None:
        super().__init__(parent)
        ensure_cjk_font()
        self.theme: Theme = get_theme(theme)
        self.figure = Figure(figsize=(6, 5), dpi=100, facecolor=self.theme.figure_facecolor)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.title_label = QLabel("")
        self.title_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title_label.setWordWrap(True)
        self.title_label.setVisible(False)
        # a fixed height: a title that wraps must not resize the canvas (a resize is a full redraw)
        self.title_label.setFixedHeight(2 * self.title_label.fontMetrics().lineSpacing() + 6)
        lay.addWidget(self.title_label)
        self.title = self.title_label  # the live title (exports draw it above the figure)
        lay.addWidget(self.canvas)
        # the view's caption in plain words (analysis.views.captions), under the figure
        self.caption_label = QLabel("")
        self.caption_label.setWordWrap(True)
        self.caption_label.setVisible(False)
        self.caption_label.setContentsMargins(8, 4, 8, 4)
        lay.addWidget(self.caption_label)
        # the empty state: words instead of axes until there is something to show
        self.empty_label = QLabel("")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.RichText)
        self.empty_label.setVisible(False)
        lay.addWidget(self.empty_label, 1)
        self.empty = False
        self._background = None
        self._animated: list = []
        self.canvas.mpl_connect("draw_event", self._on_draw)
        self.hover_text = ""  # the tooltip under the mouse ('' when none)
        self.full_draws = 0  # counted for tests/benchmarks
        self.blits = 0
        self._defer = False
        self.draw_pending = ""  # "redraw" / "blit" while a deferred draw waits for its turn

    # -- empty state ---------------------------------------------------------------------------
    def content_widgets(self) -> list[QWidget]:
        """What the empty state hides (the title and the canvas, or what holds the canvas)."""
        return [self.title_label, self.canvas]

    def set_caption(self, text: str, shown: bool) -> None:
        """The caption under the figure (``shown``: the window's "Show captions")."""
        self.caption_label.setText(text)
        visible = shown and bool(text) and not self.empty
        if visible != self.caption_label.isVisibleTo(self):
            self.caption_label.setVisible(visible)
            self._settle()

    def _settle(self) -> None:
        """Give the canvas its place now rather than in a later event-loop turn (after a part of
        the view was shown or hidden): a full draw at the size the canvas had before would be
        thrown away at once."""
        if self.isVisible():
            self.layout().activate()

    def show_empty(self, text: str) -> None:
        """Show ``text`` in words where the figure would be (no axes, no colour bar)."""
        self.empty_label.setText(f"<p style='font-size:13pt'>{text}</p>")
        if not self.empty:
            self.empty = True
            self._title_was_visible = not self.title_label.isHidden()
            for w in self.content_widgets():
                w.setVisible(False)
            self.caption_label.setVisible(False)
            self.empty_label.setVisible(True)

    def show_content(self) -> None:
        """Back from the empty state to the figure."""
        if self.empty:
            self.empty = False
            self.empty_label.setVisible(False)
            for w in self.content_widgets():
                w.setVisible(w is not self.title_label or self._title_was_visible)
            self._settle()

    # -- hover ------------------------------------------------------------------------------
    def set_hover(self, text: str) -> bool:
        """Show ``text`` as the canvas tooltip ('' hides it); True when it changed."""
        if text == self.hover_text:
            return False
        self.hover_text = text
        if text:
            QToolTip.showText(QCursor.pos(), text, self.canvas)
        else:
            QToolTip.hideText()
        return True

    # -- theme ------------------------------------------------------------------------------
    def set_theme(self, name: str) -> None:
        self.theme = get_theme(name)
        apply_theme(self.figure, self.theme)
        self._apply_theme_extra()
        self.redraw()

    def _apply_theme_extra(self) -> None:
        """Subclasses recolour their own artists here."""

    # -- drawing ----------------------------------------------------------------------------
    def set_animated_artists(self, artists: list) -> None:
        self._animated = [a for a in artists if a is not None]
        for a in self._animated:
            a.set_animated(True)

    def _on_draw(self, _event) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_animated()
        self.full_draws += 1

    def _draw_animated(self) -> None:
        for a in self._animated:
            if a.get_visible() and a.figure is not None:  # a removed artist is no longer drawn
                fig = a.figure
                if a.axes is not None:
                    a.axes.draw_artist(a)
                else:
                    fig.draw_artist(a)

    @contextmanager
    def deferred_draws(self):
        """Inside, :meth:`redraw` / :meth:`blit` only schedule the draw for the next event-loop
        turn (a new capture: its data and layout now, its pixels in the next turn, so that
        neither part holds the event loop for long). ``draw_pending`` says one is scheduled."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def _schedule(self, kind: str) -> None:
        if not self.draw_pending:
            QTimer.singleShot(0, self, self._flush)
        if self.draw_pending != "redraw":
            self.draw_pending = kind

    def _flush(self) -> None:
        kind, self.draw_pending = self.draw_pending, ""
        if kind == "redraw":
            self.redraw()
        elif kind == "blit":
            self.blit()

    def redraw(self) -> None:
        """Full synchronous draw (layout, ticks, labels), then the animated artists."""
        if self._defer:
            self._schedule("redraw")
            return
        w, h = self.canvas.get_width_height()
        if w < 8 or h < 8:  # not laid out yet: the canvas draws itself when it gets its size
            self.canvas.draw_idle()
            return
        self.canvas.draw()
        # artists changed before this draw queued a draw_idle: it would repeat the same full draw
        self.canvas._draw_pending = False

    def blit(self) -> None:
        """Redraw only the animated artists over the cached background."""
        if self._defer:
            self._schedule("blit")
            return
        if self._background is None or self._stale_size():
            self.redraw()
            return
        self.canvas.restore_region(self._background)
        self._draw_animated()
        self.canvas.blit(self._blit_bbox())
        self.blits += 1

    def _blit_bbox(self):
        """The part of the canvas a blit repaints (subclasses may narrow it)."""
        return self.figure.bbox

    def _stale_size(self) -> bool:
        w, h = self.canvas.get_width_height(physical=True)
        bg = self._background
        try:
            x0, y0, x1, y1 = bg.get_extents()
        except Exception:
            return False
        # the figure's size in inches × dpi can round one pixel down (961.9999 → 961)
        return abs((x1 - x0) - w) > 1 or abs((y1 - y0) - h) > 1


class DrawnView(CanvasView):
    """A canvas showing the data of one :mod:`analysis.views` view through that view's drawer.

    ``show_data(data)`` draws; the drawer is recreated (on the same canvas) when the theme changes.
    """

    def __init__(self, view: str, parent: QWidget | None = None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.view_name = view
        self.title_label.setVisible(True)
        self.data = None
        self._new_drawer()

    def __getattr__(self, name: str):
        # the drawer's artists read as the view's own (``view.image``, ``view.ax``, ``view.diff``)
        drawer = self.__dict__.get("drawer")
        if drawer is not None and not name.startswith("__"):
            try:
                return getattr(drawer, name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _new_drawer(self) -> None:
        # built under the theme's rcParams, like an exported figure
        with mpl.rc_context(self.theme.rc()):
            self.drawer = DRAWERS[self.view_name](self.figure, self.theme, live=True)
        apply_theme(self.figure, self.theme)

    def set_theme(self, name: str) -> None:
        if name == self.theme.name:
            return
        self.theme = get_theme(name)
        self.figure.clear()
        self._new_drawer()
        if self.data is not None:
            self.show_data(self.data)

    def show_data(self, data, **options) -> None:
        """Draw ``data`` (the view's data) and its title; a full draw."""
        self.data = data
        with mpl.rc_context(self.theme.rc()):
            self.drawer.draw(data, **options)
        self.title_label.setText(data.title)
        self.redraw()
