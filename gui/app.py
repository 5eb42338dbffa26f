"""Start the Qt application and the main window."""

from __future__ import annotations

import os
import sys


def run_window(args) -> int:
    """Open the window; ``args`` may carry ``model`` / ``text`` to load and run at start, or
    ``open_session`` (or ``session`` without export flags): a ``.headmap`` file to show instead
    (nothing is loaded then)."""
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Headmap")
    app.setOrganizationName("Headmap")
    win = MainWindow(theme=getattr(args, "theme", None) if "--theme" in sys.argv else None)
    if getattr(args, "text", None):
        win.input_panel.text.setPlainText(args.text)
    model = getattr(args, "model", None)
    if model:
        win.model_panel.set_reference(model)
    win.show()
    session = getattr(args, "open_session", None) or getattr(args, "session", None)
    if session:  # a saved capture (headmap.show hands one over): shown as it is, no model is loaded
        try:
            win.open_session(session)
        except Exception as exc:  # a missing or damaged file: one sentence, the window stays
            win.show_error(exc)
    elif not os.environ.get("HEADMAP_NO_AUTOSTART"):
        win.autostart(model)
    return app.exec()
