"""File ▸ Export, Copy image, Save and Open session.

Export and Copy image draw the visible tab through the same view data and drawer as the tab
itself (:func:`analysis.figures.build_figure` with the tab's :meth:`export_request`: its spec and
inputs), so the file shows what the tab shows. Sessions save the capture with the viewer state's
selection and reopen without a model: a session file is untrusted input, read and checked as a job
off the GUI thread (:func:`analysis.session.load_session`), and shown only once all of it passed.
"""

from __future__ import annotations

import io
import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog, QWidget

from analysis.errors import HeadmapError
from analysis.views.spec import ViewSpec

from .state import ViewerState
from .workers import JobHandle, Jobs

#: selection fields a session does not restore: the window's own view, theme and figure size
_NOT_RESTORED = frozenset({"view", "figsize", "dpi", "title", "theme"})


def _fits(value: Any, hint: Any) -> bool:
    """True when the JSON ``value`` has the type ``hint`` of a :class:`ViewSpec` field."""
    origin = get_origin(hint)
    if origin is Literal:
        return isinstance(value, str) and value in get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return type(value) in (int, float)
    return hint in (bool, int, str) and type(value) is hint  # never a bool for an int


def saved_selection(capture, saved: Any) -> dict:
    """The fields of a session's saved selection (``options["spec"]``) that the window applies:
    :class:`ViewSpec` fields of their own type that are valid for ``capture``. Anything else (an
    older or a hand-edited file) is dropped, and the current selection keeps those fields."""
    from analysis.views.spec import validate_spec

    if not isinstance(saved, Mapping):
        return {}
    hints = get_type_hints(ViewSpec)
    out = {}
    for key, value in saved.items():
        if key in _NOT_RESTORED or key not in hints or not _fits(value, hints[key]):
            continue
        try:
            validate_spec(capture, replace(ViewSpec(), **{key: value}))
        except (HeadmapError, KeyError, TypeError, ValueError):
            continue
        out[key] = value
    return out


def _size_words(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


class FileActions(QObject):
    """Export / copy the visible tab; save / reopen sessions.

    ``jobs`` runs the reading of a session (kind ``session``), ``current_tab()`` returns the
    visible tab (a :class:`gui.tabs.base.StateTab`), ``inputs()`` the input panel's values,
    ``options()`` extra session options (dtype, tab name), ``open_capture(session)`` shows a
    reopened session's capture and selection.
    """

    def __init__(self, parent: QWidget, state: ViewerState, jobs: Jobs, current_tab: Callable, inputs: Callable,
                 options: Callable, open_capture: Callable, status: Callable, report: Callable,
                 remember: Callable[[str], None] = lambda _path: None) -> None:
        super().__init__(parent)
        self.parent_widget = parent
        self.state = state
        self.jobs = jobs
        self.current_tab, self.inputs, self.options = current_tab, inputs, options
        self.open_capture, self.status, self.report = open_capture, status, report
        self.remember = remember  # a session saved or opened goes to File ▸ Open recent

    # -- figures ------------------------------------------------------------------------------
    def export_request(self):
        """(spec, inputs) of the visible tab; one sentence when it has nothing to export."""
        if self.state.capture is None:
            raise HeadmapError("nothing to export yet; run a sentence first")
        tab = self.current_tab()
        if not hasattr(tab, "export_request"):
            raise HeadmapError("this tab has no figure to export")
        return tab.export_request()

    def export_view(self, path: str, dpi: int | None = None) -> str:
        """Export the visible tab to ``path`` (.png/.svg/.pdf), atomically."""
        from analysis.figures import export_figure

        spec, inputs = self.export_request()
        if dpi is not None:
            spec = replace(spec, dpi=dpi)
        return str(export_figure(self.state.capture, spec, path, inputs=inputs))

    def build_figure(self):
        """The visible tab as a new Figure (what Export writes)."""
        from analysis.figures import build_figure

        spec, inputs = self.export_request()
        return build_figure(self.state.capture, spec, inputs)

    def copy_image(self) -> None:
        """Copy the visible tab, rendered as its exported figure, to the clipboard."""
        from PySide6.QtGui import QGuiApplication, QImage

        try:
            fig = self.build_figure()
        except HeadmapError as exc:
            self.report(exc)
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi)
        QGuiApplication.clipboard().setImage(QImage.fromData(buf.getvalue(), "PNG"))
        self.status("view copied to the clipboard")

    def on_export(self) -> None:
        try:
            spec, _ = self.export_request()
        except HeadmapError as exc:
            self.report(exc)
            return
        path, _flt = QFileDialog.getSaveFileName(self.parent_widget, "Export view", f"headmap-{spec.view}.png",
                                                 "PNG image (*.png);;SVG vector (*.svg);;PDF (*.pdf)")
        if not path:
            return
        dpi = spec.dpi
        if path.lower().endswith(".png"):
            dpi, ok = QInputDialog.getInt(self.parent_widget, "PNG resolution", "DPI (72–600)", 200, 72, 600)
            if not ok:
                return
        try:
            out = self.export_view(path, dpi)
        except HeadmapError as exc:
            self.report(exc)
            return
        self.status(f"exported {out}")

    # -- sessions -------------------------------------------------------------------------------
    def save_session_to(self, path: str) -> None:
        from analysis.session import save_session

        cap = self.state.pieces  # a session keeps the pieces; its options say how they were grouped
        if cap is None:
            raise HeadmapError("nothing to save yet; run a sentence first")
        options = {"spec": asdict(self.state.spec), **self.options()}
        save_session(path, cap, model_ref=cap.model, inputs=self.inputs(), options=options)
        self.remember(str(path))

    def open_session(self, path: str) -> JobHandle:
        """Reopen a session: the captured arrays come from the file, no model is needed.

        The file is read and checked as a job (kind ``session``; a newer open supersedes it) with
        its progress in the status bar. Only a session that passed every check is shown; a failure
        is one sentence (``report``) and leaves the capture, the selection and the panels as
        they were. Returns the job's handle.
        """
        from analysis.session import load_session

        path = str(path)
        job = self.jobs.start("session", load_session, path)
        job.progress.connect(self._on_session_progress)
        job.finished.connect(lambda sess: self._on_session_opened(path, sess))
        job.failed.connect(self.report)
        self.status(f"opening session {path}…")
        return job

    def _on_session_progress(self, _stage: str, fraction: float, message: str) -> None:
        self.status(f"{message} {fraction:.0%}" if fraction >= 0 else message)

    def _on_session_opened(self, path: str, sess) -> None:
        self.open_capture(sess)
        self.remember(path)
        self.status(f"reopened session {path} ({sess.model_ref}; the model is not loaded)")

    def on_save_session(self) -> None:
        cap = self.state.pieces
        stored = cap is not None and cap.stored
        # a long capture's session holds its float16 maps: the dialog says how big it will be first
        caption = "Save session" + (f" ({_size_words(cap.attention_nbytes)} of attention maps)" if stored else "")
        path, _ = QFileDialog.getSaveFileName(self.parent_widget, caption, "lesson.headmap",
                                              "Headmap session (*.headmap)")
        if not path:
            return
        if stored:  # gigabytes: copied from the store in the background, with progress
            self.save_session_job(path)
            return
        try:
            self.save_session_to(path)
            self.status(f"session saved to {path}")
        except HeadmapError as exc:
            self.report(exc)

    def save_session_job(self, path: str) -> JobHandle:
        """Save a long (stored) capture's session as a job (kind ``save``): its maps are copied
        from the store into the file with progress in the status bar."""
        from analysis.session import save_session

        cap = self.state.pieces
        if cap is None:
            raise HeadmapError("nothing to save yet; run a sentence first")
        options = {"spec": asdict(self.state.spec), **self.options()}
        job = self.jobs.start("save", save_session, path, cap, model_ref=cap.model, inputs=self.inputs(),
                              options=options)
        job.progress.connect(self._on_session_progress)
        job.finished.connect(lambda _p: (self.remember(str(path)), self.status(f"session saved to {path}")))
        job.failed.connect(self.report)
        self.status(f"saving session {path}…")
        return job

    def on_open_session(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.parent_widget, "Open session", "",
                                              "Headmap session (*.headmap);;All files (*)")
        if path:
            self.open_session(path)
