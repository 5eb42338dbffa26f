"""matplotlib's fonts as on a machine with no CJK font installed, for tests whose result depends
on the fonts (a figure golden, the bundled font's registration)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import matplotlib as mpl
from matplotlib import font_manager

import analysis.fonts as fonts


def _clear() -> None:
    fonts._cache.clear()
    fonts._bold_cache.clear()
    fonts._clear_findfont_cache()


@contextlib.contextmanager
def fonts_of_a_fresh_machine() -> Iterator[None]:
    """The system's CJK families (Debian's fonts-nanum, fonts-droid-fallback, …) taken out of
    matplotlib's font list, so Headmap falls back on its bundled NanumGothic; the font list,
    ``font.family`` and the font caches are as before afterwards."""
    fm = font_manager.fontManager
    before = fm.ttflist
    fm.ttflist = [e for e in before if e.name not in fonts.CJK_FONT_NAMES]
    _clear()
    try:
        with mpl.rc_context({"font.family": ["sans-serif"]}):
            yield
    finally:
        fm.ttflist = before
        _clear()
