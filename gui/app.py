"""Start the Qt application and the main window."""

from __future__ import annotations

import os
import sys


def run_window(args) -> int:
    """Open the window; ``args`` may carry ``model`` / ``text`` to load and run at start, or
    ``open_session`` (or ``session`` without export flags): a ``.headmap`` file to show instead
    (nothing is loaded then).

    The window's first frame comes before its views and its model process
    (``MainWindow(staged=True)``): the first load starts after that frame, next to the views'
    preparation; a session is opened once the views are ready. With ``HEADMAP_PROBE`` the window
    reports its start and obeys ``close`` (:mod:`gui.probe`, for benchmarks and tests)."""
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow
    from .probe import install

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Headmap")
    app.setOrganizationName("Headmap")
    win = MainWindow(theme=getattr(args, "theme", None) if "--theme" in sys.argv else None, staged=True)
    if getattr(args, "text", None):
        win.input_panel.text.setPlainText(args.text)
    model = getattr(args, "model", None)
    if model:
        win.model_panel.set_reference(model)
    install(win)
    win.show()
    session = getattr(args, "open_session", None) or getattr(args, "session", None)

    def show_session() -> None:
        try:
            win.open_session(session)
        except Exception as exc:  # a missing or damaged file: one sentence, the window stays
            win.show_error(exc)

    # a saved capture (headmap.show hands one over) is shown as it is once the views are there,
    # and no model is loaded; else the first load starts after the first frame, next to the views
    autoload = not session and not os.environ.get("HEADMAP_NO_AUTOSTART")
    win.finish_start(first=(lambda: win.autostart(model)) if autoload else None,
                     then=show_session if session else None)
    code = app.exec()
    # the window is closed (its settings saved, its jobs cancelled): the model process ends now,
    # not in an atexit handler after the rest of this interpreter's teardown
    if win.host is not None:
        win.host.close(timeout=1.0)
    return code
