"""Fonts for token labels in any script: Latin keeps matplotlib's look, CJK never goes missing.

matplotlib (≥ 3.6) falls back glyph by glyph through the families listed in
``rcParams["font.family"]``. :func:`ensure_cjk_font` keeps the current families (``sans-serif``
→ DejaVu Sans by default) in front, so Latin text looks exactly as before, and puts an installed
CJK font right behind it, so Hangul / kana / hanzi are drawn instead of "Glyph … missing" boxes.
Where the machine has no CJK font, the NanumGothic TTF shipped inside the
``koreanize_matplotlib`` package is registered (that package itself is never imported: importing
it replaces the global font). Its bold face declares weight 600 (semibold) although it is the
family's bold; it is registered as weight 700, so a bold label finds it exactly instead of
logging "findfont: Failed to find font weight bold for NanumGothic, now using 600".
:func:`bold_weight` says whether every family in the chain has a bold face (drawers then write
bold, else normal).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl
from matplotlib import font_manager

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: CJK families in order of preference (Korean first: Headmap's first users read Hangul)
CJK_FONT_NAMES: tuple[str, ...] = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "Source Han Sans KR",
    "Source Han Sans K",
    "NanumGothic",
    "NanumBarunGothic",
    "Malgun Gothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK HK",
    "Source Han Sans",
    "Source Han Sans JP",
    "Source Han Sans SC",
    "Source Han Sans TC",
    "Noto Sans JP",
    "Noto Sans SC",
    "Noto Sans TC",
    "Hiragino Sans",
    "Hiragino Kaku Gothic ProN",
    "Yu Gothic",
    "Meiryo",
    "MS Gothic",
    "Microsoft YaHei",
    "Microsoft JhengHei",
    "SimHei",
    "PingFang SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "UnDotum",
    "Baekmuk Gulim",
    "Arial Unicode MS",
)
#: family name of the TTF shipped in koreanize_matplotlib
BUNDLED_FONT_NAME = "NanumGothic"
#: matplotlib's weight for "bold"
BOLD = 700
#: generic family names and the rcParams list each resolves through
GENERIC_FAMILIES: dict[str, RcKeyType] = {
    "sans-serif": "font.sans-serif",
    "serif": "font.serif",
    "monospace": "font.monospace",
    "cursive": "font.cursive",
    "fantasy": "font.fantasy",
}

_cache: dict[tuple, tuple[str, ...]] = {}


def bundled_font_path(file: str = "NanumGothic.ttf") -> Path | None:
    """Path of ``NanumGothic.ttf`` (or ``file``) inside the installed ``koreanize_matplotlib``.

    Found through :func:`importlib.util.find_spec` without importing the package.
    """
    try:
        spec = importlib.util.find_spec("koreanize_matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / "fonts" / file
        if path.is_file():
            return path
    return None


def installed_cjk_fonts(entries: Iterable[font_manager.FontEntry] | None = None) -> list[str]:
    """Names of the CJK families known to matplotlib, most preferred first.

    Parameters
    ----------
    entries : font entries to look through (default: ``fontManager.ttflist``)
    """
    if entries is None:
        entries = font_manager.fontManager.ttflist
    have = {e.name for e in entries}
    return [name for name in CJK_FONT_NAMES if name in have]


def _register_bundled() -> str | None:
    regular = bundled_font_path()
    if regular is None:
        return None
    fm = font_manager.fontManager
    known = {str(Path(e.fname).resolve()) for e in fm.ttflist}
    bold = bundled_font_path("NanumGothicBold.ttf")
    # the bold face too, so bold labels do not fall back to a synthetic weight with a warning
    for path in (regular, bold):
        if path is not None and str(path.resolve()) not in known:
            fm.addfont(str(path.resolve()))
    _promote_bold_faces((BUNDLED_FONT_NAME,))
    # older matplotlib does not clear findfont's cache on addfont (and ttflist changed in place)
    _clear_findfont_cache()
    return BUNDLED_FONT_NAME


def _clear_findfont_cache() -> None:
    cached = getattr(font_manager.fontManager, "_findfont_cached", None)
    cache_clear = getattr(cached, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def _promote_bold_faces(families: Iterable[str]) -> bool:
    """Make the bold face of each of ``families`` weigh 700 (bold) where its file says less.

    Nanum's bold faces (NanumGothicBold.ttf, bundled or installed by a package such as Debian's
    fonts-nanum, and NanumBarunGothicBold.ttf) say usWeightClass 600 in their OS/2 table: matplotlib
    would log "Failed to find font weight bold … now using 600" for every bold label, and
    :func:`bold_weight` would find no bold face and drop the emphasis. A family without a 700 face
    whose heaviest face is a file named bold, weighing 600 or more, has it as its bold face.
    Returns whether an entry changed (findfont's cache then holds old answers: clear it).
    """
    fm = font_manager.fontManager
    changed = False
    for name in families:
        faces = [(i, e) for i, e in enumerate(fm.ttflist) if e.name == name]
        weights = [_weight_of(e) for _, e in faces]
        if not faces or BOLD in weights:
            continue
        for i, entry in faces:
            if 600 <= _weight_of(entry) < BOLD and "bold" in Path(entry.fname).stem.lower():
                fm.ttflist[i] = dataclasses.replace(entry, weight=BOLD)
                changed = True
    return changed


def _weight_of(entry: font_manager.FontEntry) -> int:
    w = entry.weight
    return w if isinstance(w, int) else font_manager.weight_dict.get(str(w), -1)


def _apply(cjk: tuple[str, ...]) -> None:
    rc = mpl.rcParams
    # matplotlib falls back glyph by glyph through the *families* of a text (font.family); a
    # generic entry such as "sans-serif" resolves to one font (DejaVu Sans by default), so the
    # CJK families go behind the existing entries and Latin text keeps its font.
    families = list(rc["font.family"]) or ["sans-serif"]
    latin = [f for f in families if f not in CJK_FONT_NAMES and f not in cjk]
    wanted = latin + list(cjk) + [f for f in families if f not in latin and f not in cjk]
    if families != wanted:
        rc["font.family"] = wanted
    # the first (Latin) family draws the minus sign; use U+2212 only where it has the glyph
    if rc["axes.unicode_minus"] and not _has_unicode_minus():
        rc["axes.unicode_minus"] = False


def _has_unicode_minus() -> bool:
    try:
        prop = font_manager.FontProperties(family=list(mpl.rcParams["font.family"])[:1])
        path = font_manager.findfont(prop, fallback_to_default=True)
        return 0x2212 in font_manager.get_font(path).get_charmap()
    except Exception:  # a broken font must not break drawing
        return True


def ensure_cjk_font(include_system: bool = True) -> str | None:
    """Make matplotlib draw CJK glyphs while Latin text keeps its default font.

    Idempotent and cheap after the first call (the font search is cached; rcParams are only
    written when they changed, e.g. after an ``rc_context``).

    Parameters
    ----------
    include_system : look for CJK fonts already known to matplotlib (system fonts). False
        behaves like a fresh machine: only the bundled NanumGothic is registered and used.

    Returns
    -------
    The CJK family name now used as the first fallback, or ``None`` when no CJK font exists at all
    (Latin text is unaffected then; CJK glyphs would be reported as missing).
    """
    ttflist = font_manager.fontManager.ttflist
    key = (include_system, id(ttflist), len(ttflist))
    cjk = _cache.get(key)
    if cjk is None:
        found = installed_cjk_fonts(ttflist) if include_system else []
        if found:
            if _promote_bold_faces(found):  # ttflist changed in place
                _clear_findfont_cache()
        else:
            bundled = _register_bundled()
            found = [bundled] if bundled else []
        cjk = tuple(found)
        ttflist = font_manager.fontManager.ttflist
        _cache[(include_system, id(ttflist), len(ttflist))] = cjk
    if not cjk:
        return None
    _apply(cjk)
    return cjk[0]


def _resolve_family(family: str) -> str | None:
    """The family matplotlib uses for ``family`` (a generic name resolves to the first of its
    ``rcParams["font.<generic>"]`` list that is installed)."""
    have = {e.name for e in font_manager.fontManager.ttflist}
    if family in GENERIC_FAMILIES:
        return next((f for f in mpl.rcParams[GENERIC_FAMILIES[family]] if f in have), None)
    return family if family in have else None


_bold_cache: dict[tuple, str] = {}


def bold_weight() -> str:
    """``"bold"`` when every family of ``rcParams["font.family"]`` has a bold (700) face, else
    ``"normal"``.

    matplotlib looks a bold text up in every family of the fallback chain and logs "findfont:
    Failed to find font weight bold for …" for a family without one; a drawer that would write
    bold asks here first, so a CJK fallback without a bold face costs the emphasis, not a warning.
    Cached per font list and family chain.
    """
    ttflist = font_manager.fontManager.ttflist
    families = tuple(mpl.rcParams["font.family"])
    key = (id(ttflist), len(ttflist), families, *(tuple(mpl.rcParams[k]) for k in GENERIC_FAMILIES.values()))
    weight = _bold_cache.get(key)
    if weight is None:
        weights: dict[str, set[int]] = {}
        for e in ttflist:
            weights.setdefault(e.name, set()).add(_weight_of(e))
        resolved = [_resolve_family(f) for f in families]
        ok = all(name is None or BOLD in weights.get(name, set()) for name in resolved)
        weight = _bold_cache[key] = "bold" if ok else "normal"
    return weight
