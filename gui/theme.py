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
#: check boxes of the dark theme: a light frame on the dark field, filled when ticked
DARK_INDICATORS = (
    "QCheckBox::indicator { width: 12px; height: 12px; border: 1px solid #a0a3a9; border-radius: 2px;"
    " background: #16171a; }"
    " QCheckBox::indicator:checked { background: #d9822b; border-color: #f0a35b; }"
    " QCheckBox::indicator:disabled { border-color: #5a5d63; }"
)


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
    # Fusion outlines check boxes with a shade darker than the window: invisible on a dark one
    app.setStyleSheet(DARK_INDICATORS if name == "dark" else "")
    if not _BASE_POINT_SIZE:
        _BASE_POINT_SIZE.append(app.font().pointSizeF() if app.font().pointSizeF() > 0 else 10.0)
    f = QFont(app.font())
    f.setPointSizeF(_BASE_POINT_SIZE[0] * (1.4 if name == "presentation" else 1.0))
    app.setFont(f)
