"""Apply a Headmap theme (analysis.themes) to the whole Qt application."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

from analysis.themes import get_theme

_ROLES = {
    "window": QPalette.ColorRole.Window,
    "window_text": QPalette.ColorRole.WindowText,
    "base": QPalette.ColorRole.Base,
    "alternate_base": QPalette.ColorRole.AlternateBase,
    "text": QPalette.ColorRole.Text,
    "button": QPalette.ColorRole.Button,
    "button_text": QPalette.ColorRole.ButtonText,
    "highlight": QPalette.ColorRole.Highlight,
    "highlighted_text": QPalette.ColorRole.HighlightedText,
    "tooltip_base": QPalette.ColorRole.ToolTipBase,
    "tooltip_text": QPalette.ColorRole.ToolTipText,
    "light": QPalette.ColorRole.Light,
    "midlight": QPalette.ColorRole.Midlight,
    "mid": QPalette.ColorRole.Mid,
    "dark": QPalette.ColorRole.Dark,
    "shadow": QPalette.ColorRole.Shadow,
}
_BASE_POINT_SIZE: list[float] = []


def apply_qt_theme(name: str) -> None:
    app = QApplication.instance()
    if app is None:
        return
    theme = get_theme(name)
    app.setStyle("Fusion")
    pal = QPalette()
    for key, role in _ROLES.items():
        if key in theme.qt_palette:
            pal.setColor(role, QColor(theme.qt_palette[key]))
    app.setPalette(pal)
    if not _BASE_POINT_SIZE:
        _BASE_POINT_SIZE.append(app.font().pointSizeF() if app.font().pointSizeF() > 0 else 10.0)
    f = QFont(app.font())
    f.setPointSizeF(_BASE_POINT_SIZE[0] * (1.4 if name == "presentation" else 1.0))
    app.setFont(f)
