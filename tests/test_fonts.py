"""analysis.fonts: CJK token labels never lose glyphs, Latin text keeps DejaVu Sans."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.fonts import (
    BUNDLED_FONT_NAME,
    bold_weight,
    bundled_font_path,
    ensure_cjk_font,
    installed_cjk_fonts,
)
from tests.font_env import fonts_of_a_fresh_machine

KOREAN = ["나는", "이", "강의를", "좋아한다", "강의"]
# kana and hanzi that every supported CJK font (the bundled NanumGothic included) has
JAPANESE = ["日本語", "ひらがな", "カタカナ"]
CHINESE = ["中文", "漢字", "大學"]
MIXED = ["attention 강의", "GPT-2의 head", "layer 3 → 나는", "東京 Tokyo"]


@pytest.fixture(autouse=True)
def _restore_rc():
    with mpl.rc_context():
        yield
    font_manager.fontManager._findfont_cached.cache_clear()


def _figure_with(labels: list[str]) -> Figure:
    fig = Figure(figsize=(6, 3), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.random.default_rng(0).random((len(labels), len(labels))))
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(" ".join(labels))
    return fig


def _missing_glyph_reports(fig: Figure, fmt: str, caplog) -> list[str]:
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format=fmt)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    return [m for m in messages if "missing from" in m or "findfont" in m]


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
@pytest.mark.parametrize(
    "labels", [KOREAN, JAPANESE, CHINESE, MIXED], ids=["ko", "ja", "zh", "mixed"]
)
def test_no_missing_glyphs_in_any_format(labels, fmt, caplog):
    caplog.set_level(logging.WARNING)
    assert ensure_cjk_font() is not None
    assert _missing_glyph_reports(_figure_with(labels), fmt, caplog) == []


def test_without_the_fallback_glyphs_would_be_missing(caplog):
    """The check above can fail: plain DejaVu Sans reports the Hangul glyphs as missing."""
    caplog.set_level(logging.WARNING)
    with mpl.rc_context({"font.family": ["sans-serif"]}):
        reports = _missing_glyph_reports(_figure_with(KOREAN), "png", caplog)
    assert any("missing from" in m for m in reports)


def _render(text: str) -> np.ndarray:
    fig = Figure(figsize=(3, 0.6), dpi=100)
    fig.text(0.02, 0.3, text, fontsize=14)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_latin_text_keeps_dejavu_sans():
    with mpl.rc_context({"font.family": ["sans-serif"]}):
        before = _render("Attention head 3: 0.25 -1")
    ensure_cjk_font()
    families = list(mpl.rcParams["font.family"])
    assert families[0] == "sans-serif" and len(families) > 1
    paths = font_manager.fontManager._find_fonts_by_props(
        font_manager.FontProperties(family=families)
    )
    assert Path(paths[0]).name == "DejaVuSans.ttf"
    np.testing.assert_array_equal(_render("Attention head 3: 0.25 -1"), before)


def test_simulated_fresh_machine_uses_the_bundled_nanum_gothic(caplog):
    with fonts_of_a_fresh_machine():  # a machine with fonts-nanum would find its own NanumGothic
        _fresh_machine_uses_the_bundled_nanum_gothic(caplog)


def _fresh_machine_uses_the_bundled_nanum_gothic(caplog):
    caplog.set_level(logging.WARNING)
    bundled = bundled_font_path()
    assert bundled is not None and bundled.name == "NanumGothic.ttf"
    assert ensure_cjk_font(include_system=False) == BUNDLED_FONT_NAME
    families = list(mpl.rcParams["font.family"])
    assert families[:2] == ["sans-serif", BUNDLED_FONT_NAME]
    registered = {str(Path(e.fname).resolve()) for e in font_manager.fontManager.ttflist}
    assert str(bundled.resolve()) in registered
    found = font_manager.findfont(
        font_manager.FontProperties(family=BUNDLED_FONT_NAME), fallback_to_default=False
    )
    assert Path(found).resolve() == bundled.resolve()
    # Hangul is drawn with NanumGothic: same pixels as asking for NanumGothic directly (no space:
    # the space glyph comes from DejaVu Sans, which is the point of the fallback)
    with_fallback = _render("나는강의를")
    with mpl.rc_context({"font.family": [BUNDLED_FONT_NAME]}):
        direct = _render("나는강의를")
    np.testing.assert_array_equal(with_fallback, direct)
    assert (with_fallback[..., :3] < 128).any()  # something dark was drawn
    assert _missing_glyph_reports(_figure_with(KOREAN + JAPANESE), "pdf", caplog) == []
    # the package itself is never imported (it would replace the global font)
    assert "koreanize_matplotlib" not in sys.modules


def test_an_installed_system_cjk_font_is_preferred(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    bundled = str(bundled_font_path())
    fake = font_manager.FontEntry(
        fname=bundled,
        name="Noto Sans CJK KR",
        style="normal",
        variant="normal",
        weight=400,
        stretch="normal",
        size="scalable",
    )
    monkeypatch.setattr(
        font_manager.fontManager, "ttflist", [*font_manager.fontManager.ttflist, fake]
    )
    font_manager.fontManager._findfont_cached.cache_clear()
    assert ensure_cjk_font() == "Noto Sans CJK KR"
    assert list(mpl.rcParams["font.family"])[:2] == ["sans-serif", "Noto Sans CJK KR"]
    assert _missing_glyph_reports(_figure_with(KOREAN), "png", caplog) == []


def test_installed_cjk_fonts_order():
    def entry(name):
        return font_manager.FontEntry(fname="x.ttf", name=name)

    entries = [
        entry("DejaVu Sans"),
        entry("Noto Sans CJK JP"),
        entry("NanumGothic"),
        entry("Noto Sans CJK KR"),
    ]
    assert installed_cjk_fonts(entries) == ["Noto Sans CJK KR", "NanumGothic", "Noto Sans CJK JP"]
    assert installed_cjk_fonts([entry("DejaVu Sans")]) == []


def test_idempotent_and_the_font_search_is_cached(monkeypatch):
    """Cheap after the first call: later calls reuse the search (``make bench`` times a call as
    ``font_fallback_ms``; tests do not assert on timings)."""
    import analysis.fonts as fonts

    first = ensure_cjk_font()
    families = list(mpl.rcParams["font.family"])

    def searched(*args, **kwargs):
        raise AssertionError("ensure_cjk_font searched the fonts again")

    monkeypatch.setattr(fonts, "installed_cjk_fonts", searched)
    monkeypatch.setattr(fonts, "_register_bundled", searched)
    for _ in range(50):
        assert ensure_cjk_font() == first
    assert list(mpl.rcParams["font.family"]) == families
    assert families.count(first) == 1


def test_the_bundled_bold_face_is_found_as_bold(caplog):
    """NanumGothicBold.ttf declares weight 600; registered as 700, a bold Hangul label finds it
    without "findfont: Failed to find font weight bold for NanumGothic, now using 600"."""
    caplog.set_level(logging.WARNING)
    with fonts_of_a_fresh_machine():  # (a CJK fallback installed without a bold face would cost the bold)
        assert ensure_cjk_font(include_system=False) == BUNDLED_FONT_NAME
        font_manager.fontManager._findfont_cached.cache_clear()
        weights = {e.weight for e in font_manager.fontManager.ttflist if e.name == BUNDLED_FONT_NAME}
        assert {400, 700} <= weights
        found = font_manager.findfont(font_manager.FontProperties(family=BUNDLED_FONT_NAME, weight="bold"))
        assert Path(found).name == "NanumGothicBold.ttf"
        assert bold_weight() == "bold"
        fig = Figure(figsize=(3, 1))
        fig.text(0.1, 0.5, "나는 강의를 Bold", fontweight=bold_weight())
        FigureCanvasAgg(fig).draw()
    assert [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()] == []


def test_an_installed_nanum_bold_face_is_found_as_bold(caplog):
    """Debian's fonts-nanum installs the same NanumGothicBold.ttf (weight 600): found as a system
    font, its bold face is bold too, so the Alignment and Steps views keep their emphasis, drawn
    without a findfont warning."""
    caplog.set_level(logging.WARNING)
    with fonts_of_a_fresh_machine():
        fm = font_manager.fontManager
        for name in ("NanumGothic.ttf", "NanumGothicBold.ttf"):  # as the package installs them
            fm.addfont(str(bundled_font_path(name)))
        assert sorted(e.weight for e in fm.ttflist if e.name == "NanumGothic") == [400, 600]
        assert ensure_cjk_font() == "NanumGothic"  # a system font: the bundled one is not registered
        assert sorted(e.weight for e in fm.ttflist if e.name == "NanumGothic") == [400, 700]
        assert bold_weight() == "bold"
        fig = Figure(figsize=(3, 1))
        fig.text(0.1, 0.5, "나는 강의를 Bold", fontweight=bold_weight())
        FigureCanvasAgg(fig).draw()
    assert [r.getMessage() for r in caplog.records if "findfont" in r.getMessage()] == []

def test_bold_weight_is_normal_when_a_fallback_family_has_no_bold(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    regular = font_manager.FontEntry(fname=str(bundled_font_path()), name="Headmap Regular Only", weight=400)
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [*font_manager.fontManager.ttflist, regular])
    font_manager.fontManager._findfont_cached.cache_clear()
    with mpl.rc_context({"font.family": ["sans-serif", "Headmap Regular Only"]}):
        assert bold_weight() == "normal"
        # what bold would have cost: the warning this choice avoids
        fig = Figure(figsize=(3, 1))
        fig.text(0.1, 0.5, "나는", fontweight="bold")
        FigureCanvasAgg(fig).draw()
    assert any("Failed to find font weight bold" in r.getMessage() for r in caplog.records)
    with mpl.rc_context({"font.family": ["sans-serif"]}):
        assert bold_weight() == "bold"  # DejaVu Sans has its bold face
