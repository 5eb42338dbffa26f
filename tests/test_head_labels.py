"""The Head view's token labels: painted by a Qt overlay (``HeadView.labels``), not matplotlib ticks.

Geometry is checked against matplotlib's own transform of the heatmap (``ax.transData``), in the
canvas' logical pixels (Qt: y down from the top; matplotlib display: y up, physical pixels).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PySide6.QtCore import QPoint, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QRegion, QResizeEvent
from PySide6.QtWidgets import QWidget

from analysis.figures import ViewSpec, clean_label
from analysis.result import Capture, TokenSeq
from analysis.themes import get_theme
from tests.gui_fixtures import load, run

HANGUL_TEXT = "I like this course 나는 이 강의를 좋아한다"
WORDS = ["나는", "이", "강의를", "좋아한다", "attention", "the", "course", "teacher", "explains", "I"]


# -- helpers ---------------------------------------------------------------------------------
def synthetic_capture(n: int = 256, seed: int = 0, layers: int = 2, heads: int = 2) -> Capture:
    """An encoder capture with ``n`` distinct labels (Latin and Hangul) and random maps."""
    rng = np.random.default_rng(seed)
    toks = [f"{WORDS[int(rng.integers(len(WORDS)))]}{i}" for i in range(n)]
    a = rng.random((layers, heads, n, n)).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    src = TokenSeq(ids=np.arange(n), raw=tuple(toks), display=tuple(toks), special=np.zeros(n, bool),
                   word_ids=tuple(range(n)))
    return Capture(model=f"synthetic-{seed}", kind="encoder", architecture="BertModel", text=" ".join(toks),
                   source=src, stacks={"attentions": a})


def show(qtbot, view, capture, spec=None):
    view.display(capture, spec or ViewSpec(shared_range=True))
    qtbot.wait(1)  # paint events (the overlay paints in Qt's paint cycle)


def logical_box(view) -> QRectF:
    """The heatmap's axes box in canvas logical pixels, from matplotlib."""
    ratio = view.canvas.device_pixel_ratio or 1
    x0, y0, x1, y1 = view.ax.get_window_extent().extents
    h = view.canvas.height()
    return QRectF(x0 / ratio, h - y1 / ratio, (x1 - x0) / ratio, (y1 - y0) / ratio)


def data_to_logical(view, x: float, y: float) -> tuple[float, float]:
    """Canvas logical pixel of data point (x, y) of the heatmap (x = column, y = row)."""
    ratio = view.canvas.device_pixel_ratio or 1
    dx, dy = view.ax.transData.transform((x, y))
    return dx / ratio, view.canvas.height() - dy / ratio


def step_of(items: list[tuple[int, str]]) -> int:
    return items[1][0] - items[0][0] if len(items) > 1 else 1


def assert_thinned(items, labels) -> int:
    """``items`` are every k-th of ``labels`` from the first; returns k."""
    k = step_of(items)
    assert k >= 1
    assert items == [(i, labels[i]) for i in range(0, len(labels), k)]
    return k


def assert_no_overlap(rects: list[QRectF]) -> None:
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            inter = rects[a].intersected(rects[b])
            assert inter.width() <= 1e-6 or inter.height() <= 1e-6, f"labels {a} and {b} overlap: {rects[a]} {rects[b]}"


def assert_geometry(view) -> None:
    """Labels centred on their rows/columns, outside the heatmap, inside the canvas, no overlaps,
    axis titles outside the labels."""
    d = view.data
    lab = view.labels
    q, k = d.matrix.shape
    rows, cols = lab.label_rects()
    assert len(rows) == len(lab.rows) and len(cols) == len(lab.cols)
    box = logical_box(view)
    canvas = QRectF(0, 0, view.canvas.width(), view.canvas.height())
    half_row = box.height() / q / 2
    half_col = box.width() / k / 2
    for (i, _), r in zip(lab.rows, rows, strict=True):
        _, cy = data_to_logical(view, 0, i)
        assert abs(r.center().y() - cy) <= half_row + 1e-6, (i, r, cy)
        assert r.right() <= box.left() + 1e-6  # left of the heatmap
        assert canvas.contains(r), (i, r, canvas)
        assert r.height() == pytest.approx(lab.line_height()) and r.width() > 0
    # column labels: rotated 90°, or (short CJK words, analysis.views.common.col_label_angle)
    # horizontal when they fit their column, else at 45° ending under their column
    angle = lab.col_angle
    assert angle in (0, 45, 90)
    for (j, _), r in zip(lab.cols, cols, strict=True):
        cx, _ = data_to_logical(view, j, 0)
        assert r.top() >= box.bottom() - 1e-6  # below the heatmap
        assert canvas.contains(r), (j, r, canvas)
        if angle == 90:
            assert abs(r.center().x() - cx) <= half_col + 1e-6, (j, r, cx)
            assert r.width() == pytest.approx(lab.line_height()) and r.height() > 0
        elif angle == 0:
            assert abs(r.center().x() - cx) <= 1e-6 and r.width() <= 2 * half_col * step_of(lab.cols), (j, r, cx)
            assert r.height() == pytest.approx(lab.line_height())
        else:
            assert abs(r.right() - cx) <= lab.line_height(), (j, r, cx)
    assert_no_overlap(rows)
    if angle != 45:  # the boxes of slanted labels overlap where their text does not
        assert_no_overlap(cols)
        assert_no_overlap(rows + cols)
    # the axis titles (painted by Qt too) sit outside the token labels, inside the canvas
    titles = {t.text: view.texts.text_rect(t) for t in view.texts.texts}
    ytitle, xtitle = titles[view.data.row_title], titles[view.data.col_title]
    assert ytitle.right() <= min(r.left() for r in rows) + 1e-6
    assert xtitle.top() >= max(r.bottom() for r in cols) - 1e-6
    assert canvas.contains(ytitle) and canvas.contains(xtitle)
    # the overlay covers the canvas exactly
    assert lab.geometry() == view.canvas.rect()


def render_overlay(view) -> QImage:
    """What the overlay paints, on a transparent image (no canvas below it)."""
    lab = view.labels
    img = QImage(lab.size(), QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    lab.render(img, QPoint(0, 0), QRegion(), QWidget.RenderFlag(0))
    return img


def ink_colours(img: QImage, rect: QRectF) -> list[QColor]:
    """Colours (unpremultiplied) of the well-covered pixels inside ``rect`` (glyph strokes)."""
    out = []
    r = rect.toAlignedRect().intersected(img.rect())
    for y in range(r.top(), r.bottom() + 1):
        for x in range(r.left(), r.right() + 1):
            c = img.pixelColor(x, y)
            if c.alpha() >= 128:
                out.append(c)
    return out


def assert_painted_in(img: QImage, rects: list[QRectF], colour: str) -> None:
    """The labels in ``rects`` are painted, all in ``colour`` (up to antialiasing rounding)."""
    want = QColor(colour)
    got = [c for r in rects for c in ink_colours(img, r)]
    assert got, "no label pixels painted"
    off = [c.name() for c in got if max(abs(c.red() - want.red()), abs(c.green() - want.green()),
                                         abs(c.blue() - want.blue())) > 3]
    assert not off, f"label pixels not in {colour}: {sorted(set(off))[:5]}"


def assert_ink_only_in_labels_and_ticks(view, img: QImage) -> None:
    """Every pixel the overlay paints belongs to a label rectangle (1 px of antialiasing around
    it) or is a tick mark in the theme's tick colour."""
    h, w = img.height(), img.width()
    bgra = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :w]
    allowed = np.zeros((h, w), bool)
    rows, cols = view.labels.label_rects()
    for r in rows + cols:
        a = r.adjusted(-1.5, -1.5, 1.5, 1.5).toAlignedRect().intersected(img.rect())
        allowed[a.top():a.bottom() + 1, a.left():a.right() + 1] = True
    stray = (bgra[..., 3] > 0) & ~allowed
    assert stray.any(), "no tick marks painted"
    tick = view.labels.tick_color
    px = bgra[stray].astype(int)  # premultiplied: colour × alpha
    want = np.array([tick.blue(), tick.green(), tick.red()])
    expect = want[None, :] * px[:, 3:4] / 255
    assert np.abs(px[:, :3] - expect).max() <= 3, "ink outside the label rectangles that is not a tick mark"


def inked(img: QImage, rect: QRectF) -> int:
    r = rect.toAlignedRect().intersected(img.rect())
    return sum(img.pixelColor(x, y).alpha() > 0 for y in range(r.top(), r.bottom() + 1)
               for x in range(r.left(), r.right() + 1))


def has_hangul(s: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in s)


# -- the overlay alone (synthetic 256-token maps) ---------------------------------------------
def test_no_matplotlib_tick_labels_only_the_overlay(qtbot, head):
    show(qtbot, head, synthetic_capture(256))
    assert head.ax.get_xticklabels() == [] and head.ax.get_yticklabels() == []
    assert list(head.ax.get_xticks()) == [] and list(head.ax.get_yticks()) == []
    assert len(head.figure.axes) == 2 and len(head.ax.images) == 1 and len(head.ax.patches) == 1
    lab = head.labels
    assert lab.parent() is head.canvas
    assert lab.testAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
    assert not lab.autoFillBackground()
    assert lab.isVisible() and lab.geometry() == head.canvas.rect()
    # no matplotlib text at all: the axis titles and the colour bar's ticks are painted by Qt too,
    # where matplotlib puts the colour bar's ticks
    assert not (head.ax.xaxis.get_visible() or head.ax.yaxis.get_visible() or head.cax.yaxis.get_visible())
    painted = {t.text: head.texts.text_rect(t).center() for t in head.texts.texts}
    assert {head.data.row_title, head.data.col_title, "attention weight"} <= set(painted)
    head.cax.yaxis.set_visible(True)
    head.canvas.draw()
    renderer, ratio = head.canvas.get_renderer(), head.canvas.device_pixel_ratio or 1
    lo, hi = sorted(head.cax.get_ylim())
    ticks = [t for t in head.cax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
    assert len(ticks) >= 3
    for t in ticks:
        box = t.get_window_extent(renderer)
        x, y = (box.x0 + box.x1) / 2 / ratio, (head.figure.bbox.height - (box.y0 + box.y1) / 2) / ratio
        c = painted[t.get_text()]
        assert abs(c.x() - x) <= 3 and abs(c.y() - y) <= 3, (t.get_text(), c, x, y)
    # the titles sit outside the token labels, the colour bar's label right of its ticks
    rows, cols = lab.label_rects()
    assert painted[head.data.row_title].x() < min(r.left() for r in rows)
    assert painted[head.data.col_title].y() > max(r.bottom() for r in cols)
    assert painted["attention weight"].x() > max(painted[t.get_text()].x() for t in ticks)


def test_256_tokens_are_thinned_aligned_and_do_not_overlap(qtbot, head):
    show(qtbot, head, synthetic_capture(256))
    d = head.data
    ks = assert_thinned(head.labels.rows, list(d.row_labels))
    kc = assert_thinned(head.labels.cols, list(d.col_labels))
    assert ks > 1 and kc > 1  # 256 labels cannot all fit
    # thinned no more than needed: consecutive shown labels are less than 2.5 lines apart
    box = logical_box(head)
    line = head.labels.line_height()
    assert box.height() / 256 * ks < 2.5 * line
    assert box.width() / 256 * kc < 2.5 * line
    assert_geometry(head)


def test_short_input_shows_every_label(qtbot, head):
    cap = synthetic_capture(12)
    show(qtbot, head, cap)
    assert head.labels.rows == list(enumerate(head.data.row_labels))
    assert head.labels.cols == list(enumerate(head.data.col_labels))
    assert_geometry(head)


def test_margins_follow_the_real_label_widths(qtbot, head):
    show(qtbot, head, synthetic_capture(12))
    narrow = head.ax.get_position().x0
    cap = synthetic_capture(12, seed=1)
    long = replace(cap.source, display=tuple(s + "_a_much_longer_token" for s in cap.source.display))
    show(qtbot, head, replace(cap, source=long))
    assert head.ax.get_position().x0 > narrow
    assert head.ax.get_position().y0 <= 0.4 + 1e-9 and head.ax.get_position().x0 <= 0.4 + 1e-9
    assert_geometry(head)


def test_very_long_labels_are_elided_not_clipped(qtbot, head):
    cap = synthetic_capture(6)
    long = replace(cap.source, display=tuple(f"{i}" + "x" * 300 for i in range(6)))
    show(qtbot, head, replace(cap, source=long))
    assert head.ax.get_position().x0 <= 0.4 + 1e-9  # capped like before
    assert_geometry(head)  # still inside the canvas, titles outside


def test_the_overlay_follows_a_resize(qtbot, head):
    show(qtbot, head, synthetic_capture(256))
    before = head.labels.label_rects()
    head.resize(700, 560)
    qtbot.waitUntil(lambda: head.labels.size() == head.canvas.size() and head.canvas.width() < 900)
    qtbot.wait(20)  # the canvas' queued full draw
    rows, cols = head.labels.label_rects()
    assert (rows, cols) != before
    assert_thinned(head.labels.rows, list(head.data.row_labels))
    assert_geometry(head)


def test_logical_pixels_with_a_device_pixel_ratio_of_two(qtbot, head):
    show(qtbot, head, synthetic_capture(64))
    font_px = head.labels.text_font.pixelSize()
    canvas = head.canvas
    try:
        canvas._set_device_pixel_ratio(2.0)
        canvas.resizeEvent(QResizeEvent(canvas.size(), canvas.size()))
        assert canvas.get_width_height(physical=True)[0] == 2 * canvas.width()
        head._layout_key = None  # a fresh layout, as display() would do for a new capture
        show(qtbot, head, synthetic_capture(64, seed=3))
        head._apply_theme_extra()
        assert head.labels.text_font.pixelSize() == font_px  # logical size: unchanged
        assert_geometry(head)
    finally:
        canvas._set_device_pixel_ratio(1.0)
        canvas.resizeEvent(QResizeEvent(canvas.size(), canvas.size()))


def test_overlay_paints_the_labels_in_the_theme_colour(qtbot, head):
    show(qtbot, head, synthetic_capture(40))
    rows, cols = head.labels.label_rects()
    img = render_overlay(head)
    light = to_hex(get_theme("light").text_color)
    assert head.labels.color == QColor(light)
    assert_painted_in(img, rows + cols, light)
    assert_ink_only_in_labels_and_ticks(head, img)
    head.set_theme("dark")
    dark = to_hex(get_theme("dark").text_color)
    assert dark != light and head.labels.color == QColor(dark)
    img = render_overlay(head)
    assert_painted_in(img, head.labels.label_rects()[0], dark)
    # nothing painted inside the heatmap (the matplotlib image shows through)
    assert inked(img, logical_box(head).adjusted(2, 2, -2, -2)) == 0


def test_label_font_follows_the_theme_size(qtbot, head):
    show(qtbot, head, synthetic_capture(40))
    dpi = head.figure.dpi / (head.canvas.device_pixel_ratio or 1)
    assert head.labels.text_font.pixelSize() == round(get_theme("light").tick_size * dpi / 72)
    head.set_theme("presentation")
    assert head.labels.text_font.pixelSize() == round(get_theme("presentation").tick_size * dpi / 72)
    show(qtbot, head, synthetic_capture(40), ViewSpec(shared_range=True, theme="presentation"))
    assert_thinned(head.labels.rows, list(head.data.row_labels))
    assert_geometry(head)


def test_head_switch_keeps_the_labels_and_only_blits(qtbot, head):
    cap = synthetic_capture(256, layers=2, heads=3)
    spec = ViewSpec(shared_range=True)
    show(qtbot, head, cap, spec)
    rows, cols = list(head.labels.rows), list(head.labels.cols)
    rects = head.labels.label_rects()
    full, blits = head.full_draws, head.blits
    show(qtbot, head, cap, replace(spec, layer=1, head=2))
    assert head.blits == blits + 1 and head.full_draws == full
    assert head.labels.rows == rows and head.labels.cols == cols
    assert head.labels.label_rects() == rects
    np.testing.assert_array_equal(head.image.get_array(), np.asarray(cap.stacks["attentions"][1, 2]))


# -- in the window, with a real (tiny) model --------------------------------------------------
@pytest.fixture
def gpt2_window(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(HANGUL_TEXT)
    load(qtbot, window, tiny_model_dir("gpt2"))
    return window


def test_window_head_view_has_hangul_labels_on_the_overlay(qtbot, gpt2_window):
    win = gpt2_window
    view = win.head_view
    qtbot.wait(1)
    assert view.ax.get_xticklabels() == [] and view.ax.get_yticklabels() == []
    d = view.data
    assert d.row_labels == tuple(clean_label(s) for s in win.capture.row_labels("attentions"))
    assert_thinned(view.labels.rows, list(d.row_labels))
    assert_thinned(view.labels.cols, list(d.col_labels))
    hangul = [(k, s) for k, s in view.labels.rows if has_hangul(s)]
    assert hangul, view.labels.rows
    # a font of the label font's fallback list has these glyphs, and they are painted
    families = view.labels.text_font.families()
    for _, s in hangul:
        for ch in (c for c in s if has_hangul(c)):
            assert any(QFontMetricsF(QFont(f)).inFontUcs4(ord(ch)) for f in families), (ch, families)
    img = render_overlay(view)
    rows, _ = view.labels.label_rects()
    for (_, s), r in zip(view.labels.rows, rows, strict=True):
        assert inked(img, r) > 0, s
    assert_ink_only_in_labels_and_ticks(view, img)
    assert_geometry(view)


def test_window_long_text_is_thinned_and_switching_heads_only_blits(qtbot, gpt2_window):
    win = gpt2_window
    run(qtbot, win, " ".join([HANGUL_TEXT] * 12))  # truncated to the tiny model's 64 positions
    view = win.head_view
    qtbot.wait(1)
    d = view.data
    assert d.matrix.shape[0] > 40
    k = assert_thinned(view.labels.rows, list(d.row_labels))
    assert_thinned(view.labels.cols, list(d.col_labels))
    assert_geometry(view)
    rows, cols, rects = list(view.labels.rows), list(view.labels.cols), view.labels.label_rects()
    full, blits = view.full_draws, view.blits
    win.select(layer=1, head=2)
    assert view.blits > blits and view.full_draws == full
    assert (view.labels.rows, view.labels.cols, view.labels.label_rects()) == (rows, cols, rects)
    assert step_of(view.labels.rows) == k


def test_window_theme_switch_recolours_the_labels(qtbot, gpt2_window):
    win = gpt2_window
    view = win.head_view
    assert view.labels.color == QColor(to_hex(get_theme("light").text_color))
    win.theme_combo.setCurrentText("dark")
    dark = to_hex(get_theme("dark").text_color)
    assert view.labels.color == QColor(dark)
    assert view.labels.tick_color == QColor(to_hex(get_theme("dark").grid_color))
    img = render_overlay(view)
    assert_painted_in(img, view.labels.label_rects()[0] + view.labels.label_rects()[1], dark)
    assert_ink_only_in_labels_and_ticks(view, img)
    assert_geometry(view)


def test_hover_and_click_reach_the_canvas_through_the_overlay(qtbot, gpt2_window):
    win = gpt2_window
    view = win.head_view
    x, y = data_to_logical(view, 1, 3)
    pos = QPoint(round(x), round(y))
    assert view.canvas.childAt(pos) is None  # transparent for the mouse: the canvas gets it
    with qtbot.waitSignal(view.cell_clicked) as clicked:
        qtbot.mouseClick(view.canvas, Qt.MouseButton.LeftButton, pos=pos)
    assert clicked.args == [int(view.data.row_idx[3]), int(view.data.col_idx[1])]
