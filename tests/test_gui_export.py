"""Export from the window (the visible view in its current state), copy image, sessions."""

import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtGui import QGuiApplication

from analysis.errors import HeadmapError
from analysis.session import captures_equal, load_session
from tests.gui_fixtures import load, open_session

TEXT = "나는 이 강의를 좋아한다"


@pytest.fixture
def gpt2(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("gpt2"))
    return window


def test_export_current_view_png_svg_pdf(gpt2, tmp_path):
    win = gpt2
    win.select(layer=1, head=3, tab="Head")
    png = win.export_view(str(tmp_path / "h.png"), dpi=100)
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w100, h100 = struct.unpack(">II", data[16:24])
    png2 = win.export_view(str(tmp_path / "h2.png"), dpi=200)
    w200, h200 = struct.unpack(">II", open(png2, "rb").read()[16:24])
    assert abs(w200 - 2 * w100) <= 2 and abs(h200 - 2 * h100) <= 2
    spec = win.current_spec()
    assert (spec.view, spec.layer, spec.head) == ("head", 1, 3)
    win.select(tab="Model")
    svg = win.export_view(str(tmp_path / "m.svg"))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    win.select(tab="Layer")
    pdf = win.export_view(str(tmp_path / "l.pdf"))
    assert open(pdf, "rb").read()[:5] == b"%PDF-"


def test_export_to_an_unwritable_path_keeps_the_good_file(gpt2, tmp_path):
    win = gpt2
    out = tmp_path / "out"
    out.mkdir()
    good = out / "h.png"
    win.export_view(str(good))
    before = good.read_bytes()
    blocker = out / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(HeadmapError):
        win.export_view(str(blocker / "h.png"))
    assert good.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["h.png", "not-a-folder"]  # no temp files left


def test_a_tab_with_nothing_to_draw_says_so(gpt2, tmp_path):
    gpt2.select(tab="Mask lab")
    with pytest.raises(HeadmapError, match="run the padding experiment or mask some tokens first"):
        gpt2.export_view(str(tmp_path / "m.png"))
    gpt2.select(tab="Compare")
    with pytest.raises(HeadmapError, match="pin a capture as A"):
        gpt2.current_spec()
    assert not (tmp_path / "m.png").exists()


def test_copy_image_puts_the_view_on_the_clipboard(gpt2):
    QGuiApplication.clipboard().clear()
    gpt2.select(tab="Head")
    gpt2.copy_image()
    img = QGuiApplication.clipboard().image()
    assert not img.isNull() and img.width() > 100


def test_session_round_trip_without_the_model(qtbot, gpt2, make_window, tmp_path):
    win = gpt2
    win.select(layer=1, head=2, tab="Head")
    path = tmp_path / "lesson.headmap"
    win.save_session_to(str(path))
    sess = load_session(path)
    assert captures_equal(sess.capture, win.capture)
    other = make_window()
    assert other.lm is None
    open_session(qtbot, other, path)
    assert other.lm is None  # reopening does not need the model
    assert captures_equal(other.capture, win.capture)
    assert (other.spec.layer, other.spec.head) == (1, 2)
    assert other.input_panel.text.toPlainText() == TEXT
    np.testing.assert_array_equal(other.head_view.data.matrix, win.head_view.data.matrix)


def test_damaged_session_is_a_message(qtbot, window, tmp_path):
    bad = tmp_path / "bad.headmap"
    bad.write_bytes(b"PK\x03\x04 damaged")
    open_session(qtbot, window, bad, ok=False)
    assert "not a Headmap session" in window.last_error
    assert window._dialog is not None and window._dialog.isVisible()
    assert window.capture is None
