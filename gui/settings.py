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

    def problem(self) -> str:
        """Why the settings file could not be read ('' when it could)."""
        status = self.status()
        if status == QSettings.Status.AccessError:
            return f"the settings file {self.fileName()} could not be read (no access, or it is not a file)"
        if status == QSettings.Status.FormatError:
            return f"the settings file {self.fileName()} is damaged"
        return ""

    def value(self, key: str, default=None, type_=None):
        try:
            if type_ is bool:
                v = super().value(key, default)
                return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
            return super().value(key, default)
        except Exception:  # a damaged settings file never stops the window
            return default

    def _recent(self, key: str) -> list[str]:
        v = self.value(key, [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or []) if str(x).strip()][:MAX_RECENT]

    def _add(self, key: str, item: str) -> None:
        items = [item] + [r for r in self._recent(key) if r != item]
        self.setValue(key, items[:MAX_RECENT])

    def recent_models(self) -> list[str]:
        return self._recent("recent_models")

    def add_recent(self, ref: str) -> None:
        self._add("recent_models", ref)

    def recent_sessions(self) -> list[str]:
        return self._recent("recent_sessions")

    def add_recent_session(self, path: str) -> None:
        self._add("recent_sessions", path)
