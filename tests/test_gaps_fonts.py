"""analysis.fonts: behaviours no other test reached. Where the bundled font is looked for (a package
that cannot be found, a module without a package folder, folders without the file), registering it
without its bold face or with a matplotlib whose font cache has no ``cache_clear``, no CJK font at
all, and the minus sign when the Latin font lacks U+2212 or cannot be read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib as mpl
import pytest
from matplotlib import font_manager

import analysis.fonts as fonts


@pytest.fixture(autouse=True)
def _restore_rc():
    with mpl.rc_context():
        yield


def _find_spec(monkeypatch, result):
    def find_spec(name):
        assert name == "koreanize_matplotlib"
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(fonts.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("result", [ImportError("broken parent"), ValueError("no spec"), None])
def test_no_bundled_font_when_its_package_cannot_be_found(monkeypatch, result):
    _find_spec(monkeypatch, result)
    assert fonts.bundled_font_path() is None


def test_the_bundled_font_is_looked_for_in_each_package_folder_then_beside_the_module(monkeypatch, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "fonts").mkdir(parents=True)
    (second / "fonts" / "NanumGothic.ttf").write_bytes(b"ttf")
    (first / "fonts").mkdir(parents=True)
    (first / "fonts" / "NanumGothic.ttf").mkdir()  # not a file
    _find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(first), str(second)], origin=None))
    assert fonts.bundled_font_path() == second / "fonts" / "NanumGothic.ttf"
    assert fonts.bundled_font_path("NanumGothicBold.ttf") is None
    # a plain module (no package folders): the folder of its file
    _find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=None, origin=str(second / "mod.py")))
    assert fonts.bundled_font_path() == second / "fonts" / "NanumGothic.ttf"
    _find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[], origin=None))
    assert fonts.bundled_font_path() is None
    # a package's own folders are the only place looked in, not its __init__'s folder besides
    _find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(first)],
                                            origin=str(second / "__init__.py")))
    assert fonts.bundled_font_path() is None


def _fake_font_manager(monkeypatch, entries=(), cached=None):
    added: list[str] = []
    fm = SimpleNamespace(ttflist=list(entries), addfont=added.append, _findfont_cached=cached)
    monkeypatch.setattr(font_manager, "fontManager", fm)
    return fm, added


def test_the_bundled_font_is_registered_without_a_bold_face_and_an_uncleared_cache(monkeypatch, tmp_path):
    regular = tmp_path / "NanumGothic.ttf"
    regular.write_bytes(b"ttf")
    monkeypatch.setattr(fonts, "bundled_font_path", lambda file="NanumGothic.ttf": regular
                        if file == "NanumGothic.ttf" else None)
    fm, added = _fake_font_manager(monkeypatch, cached=lambda *a: None)  # no cache_clear
    assert fonts._register_bundled() == "NanumGothic"
    assert added == [str(regular.resolve())]


def test_a_known_bundled_font_is_not_added_again_and_its_bold_face_is_made_bold(monkeypatch, tmp_path):
    regular, bold = tmp_path / "NanumGothic.ttf", tmp_path / "NanumGothicBold.ttf"
    regular.write_bytes(b"ttf")
    bold.write_bytes(b"ttf")
    monkeypatch.setattr(fonts, "bundled_font_path", lambda file="NanumGothic.ttf": tmp_path / file)
    entry = font_manager.FontEntry(fname=str(bold), name="NanumGothic", weight=600)
    other = font_manager.FontEntry(fname=str(tmp_path / "x.ttf"), name="NanumGothic", weight=600)
    cleared = []
    cached = SimpleNamespace(cache_clear=lambda: cleared.append(1))
    fm, added = _fake_font_manager(monkeypatch, [font_manager.FontEntry(fname=str(regular), name="NanumGothic"),
                                                 entry, other], cached)
    assert fonts._register_bundled() == "NanumGothic"
    assert added == []
    assert [e.weight for e in fm.ttflist] == ["normal", 700, 600]
    assert cleared == [1]


def test_no_cjk_font_anywhere_leaves_the_fonts_alone(monkeypatch):
    monkeypatch.setattr(fonts, "_cache", {})
    monkeypatch.setattr(fonts, "bundled_font_path", lambda file="NanumGothic.ttf": None)
    mpl.rcParams["font.family"] = ["serif"]
    assert fonts.ensure_cjk_font(include_system=False) is None
    assert list(mpl.rcParams["font.family"]) == ["serif"]


@pytest.mark.parametrize("has_minus, after", [(False, False), (True, True)])
def test_the_unicode_minus_is_turned_off_when_the_latin_font_lacks_it(monkeypatch, has_minus, after):
    monkeypatch.setattr(fonts, "_has_unicode_minus", lambda: has_minus)
    mpl.rcParams["axes.unicode_minus"] = True
    fonts._apply(("NanumGothic",))
    assert mpl.rcParams["axes.unicode_minus"] is after


def test_a_font_that_cannot_be_read_keeps_the_unicode_minus(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("damaged font")

    monkeypatch.setattr(font_manager, "findfont", broken)
    assert fonts._has_unicode_minus() is True


def test_the_default_latin_font_has_the_unicode_minus(monkeypatch, tmp_path):
    mpl.rcParams["font.family"] = ["DejaVu Sans"]
    assert fonts._has_unicode_minus() is True
    # a font without U+2212: the charmap of a font that maps no such code point
    monkeypatch.setattr(font_manager, "get_font", lambda path: SimpleNamespace(get_charmap=lambda: {0x2D: 1}))
    assert fonts._has_unicode_minus() is False
    assert Path(font_manager.findfont(font_manager.FontProperties(family=["DejaVu Sans"]))).is_file()
