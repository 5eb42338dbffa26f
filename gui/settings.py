"""QSettings wrapper. ``HEADMAP_SETTINGS`` (or the ``path`` argument) points at a private .ini file,
so tests never touch the user's settings."""

from __future__ import annotations

import os

from PySide6.QtCore import QSettings

MAX_RECENT = 10


class Settings(QSettings):
    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get("HEADMAP_SETTINGS")
        if path:
            super().__init__(path, QSettings.Format.IniFormat)
        else:
            super().__init__("Headmap", "Headmap")

    def value(self, key: str, default=None, type_=None):
        try:
            if type_ is bool:
                v = super().value(key, default)
                return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
            return super().value(key, default)
        except Exception:  # a damaged settings file never stops the window
            return default

    def recent_models(self) -> list[str]:
        v = self.value("recent_models", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or []) if str(x).strip()][:MAX_RECENT]

    def add_recent(self, ref: str) -> None:
        items = [ref] + [r for r in self.recent_models() if r != ref]
        self.setValue("recent_models", items[:MAX_RECENT])
