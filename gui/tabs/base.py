"""What every tab gets from the window, and how a tab follows the viewer state.

A tab never sees the main window. It receives a :class:`TabContext`: the :class:`ViewerState`
(read the capture and the selection, change the selection), :class:`~gui.workers.Jobs` to start
long work (and ``model_job`` to run a function next to the loaded model), and two ways to speak to
the user (``report``: one sentence in the status bar and a dialog; ``status``: a status-bar line).

:class:`StateTab` is the mixin of every tab: it marks itself stale when the capture or the
selection changes and redraws when it is on screen (at once when visible, else when shown).
A tab that shows one of :mod:`analysis.views` names it in ``figure_view``; :meth:`export_request`
says what File ▸ Export and Copy image draw for it (the same spec and inputs it draws with).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy

from analysis.errors import HeadmapError
from analysis.views.spec import ViewInputs, ViewSpec

from ..state import ViewerState
from ..workers import Jobs

#: the empty state: what a tab says before there is anything to show
NO_MODEL = ("Nothing to show yet.<br>Load a model (choose one on the left and press <b>Load</b>), "
            "type a sentence and press <b>Ctrl+Enter</b>.")
NO_CAPTURE = "Nothing to show yet.<br>Type a sentence and press <b>Ctrl+Enter</b> (Run)."


@dataclass(frozen=True)
class TabContext:
    """The small typed interface a tab gets (never the window).

    state : the viewer state
    jobs : starts long work; one current job per kind
    report : ``report(exc_or_sentence)``: one sentence in the status bar and a dialog
    status : ``status(text)``: a status-bar message
    model_job : ``model_job(fn)`` → a job function running ``fn(model, …)`` next to the loaded
        model (in the model process, or in this process)
    """

    state: ViewerState
    jobs: Jobs
    report: Callable[[object], None]
    status: Callable[[str], None]
    model_job: Callable[[Callable], Callable]


class StateTab:
    """Mixin for a QWidget tab that follows the viewer state (call :meth:`attach` once)."""

    #: the :mod:`analysis.views` view this tab draws and exports ("" = none)
    figure_view: str = ""
    ctx: TabContext | None = None  # None until attached: a view used on its own never refreshes
    _stale: bool = True

    def attach(self, ctx: TabContext) -> None:
        self.ctx = ctx
        self._stale = True
        ctx.state.capture_changed.connect(self._on_state_changed)
        ctx.state.selection_changed.connect(self._on_state_changed)
        ctx.state.model_changed.connect(self._on_state_changed)  # the empty state's words change
        self.refresh_now()

    def nothing_yet(self) -> str:
        """What to do before there is anything to show (the empty state's words)."""
        if self.state.model is None:
            return NO_MODEL
        return NO_CAPTURE

    def capture_and_spec(self, kind: str):
        """For a map view that is its own canvas: ``(capture, spec)`` of view ``kind`` to draw, the
        empty state switched off; None after showing in words that there is nothing yet. A spec
        the capture cannot show is said in words where the map would be, and raised (one clear
        sentence, never an empty map)."""
        from analysis.errors import InputError
        from analysis.figures import validate_spec

        cap = self.state.capture
        if cap is None:
            self.show_empty(self.nothing_yet())  # type: ignore[attr-defined]
            return None
        spec = self.state.spec_for(kind)
        try:
            validate_spec(cap, spec)
        except InputError as exc:
            self.show_empty(str(exc))  # type: ignore[attr-defined]
            raise
        self.show_content()  # type: ignore[attr-defined]
        return cap, spec

    @property
    def state(self) -> ViewerState:
        return self.ctx.state

    def on_screen(self) -> bool:
        return self.isVisibleTo(self.window())  # type: ignore[attr-defined]

    def _on_state_changed(self, *_args) -> None:
        self._stale = True
        if self.on_screen():
            self.refresh_now()
        else:
            self.follow_theme(self.state.spec.theme)

    def follow_theme(self, name: str) -> None:
        """Recolour now, even while hidden (the window changes its theme everywhere at once)."""
        for canvas in self.canvases():
            if canvas.theme.name != name:
                canvas.set_theme(name)

    def canvases(self) -> list:
        """The canvas views of this tab (a map view is its own canvas)."""
        from ..views.canvas import CanvasView

        if isinstance(self, CanvasView):
            return [self]
        return [v for v in vars(self).values() if isinstance(v, CanvasView)]

    def mark_stale(self) -> None:
        """Redraw at once if on screen, else when shown (a tab's own option changed)."""
        self._on_state_changed()

    def showEvent(self, event) -> None:
        super().showEvent(event)  # type: ignore[misc]
        if self._stale and self.ctx is not None:
            self.refresh_now()

    def refresh_now(self) -> None:
        """Redraw from the state now; a failure is one sentence to the user, never a dead slot."""
        self._stale = False
        try:
            self.refresh()
        except Exception as exc:  # every failure becomes a message
            self._stale = True  # shown again, it tries again (and says why it cannot draw)
            self.ctx.report(exc)

    def refresh(self) -> None:  # pragma: no cover - every tab overrides it
        raise NotImplementedError

    def export_request(self) -> tuple[ViewSpec, ViewInputs]:
        """The spec and inputs of what this tab shows (File ▸ Export, Copy image)."""
        if not self.figure_view:
            raise HeadmapError("this tab has no figure to export")
        if self.state.capture is None:
            raise HeadmapError("nothing to export yet; run a sentence first")
        return self.state.spec_for(self.figure_view), ViewInputs()


class Caption(QLabel):
    """A word-wrapped label that always gets the height its text needs at its current width
    (a plain QLabel next to an expanding canvas gets squeezed and cuts lines off)."""

    def __init__(self, text: str = "", rich: bool = False, notice: bool = False) -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.AutoText)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        if notice:  # instructions and progress stand out, in the theme's text colour (red is for errors)
            self.setStyleSheet("QLabel { font-weight: bold; }")

    def _needed(self, hint: QSize) -> QSize:
        width = self.width() if self.width() > 50 else 900
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(width)))

    def minimumSizeHint(self) -> QSize:
        return self._needed(super().minimumSizeHint())

    def sizeHint(self) -> QSize:
        return self._needed(super().sizeHint())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.heightForWidth(self.width()) != self.height():
            self.updateGeometry()


def message_label() -> QLabel:
    lab = QLabel("")
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lab.setWordWrap(True)
    lab.setTextFormat(Qt.TextFormat.RichText)
    return lab
