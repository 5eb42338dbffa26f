"""The Head view zooms and pans, and long maps are drawn from the pyramid level that fits the pixels
(issue 15): the wheel zooms around the cursor, a drag pans, a double-click, the button or Ctrl+0
resets; the token labels name the rows and columns in view when each token has its pixels; the
hover names the token pair and its own weight at any zoom; the window and an export read the same
level for their pixels, and a stored pyramid's whole map is never read to draw it.
"""

from __future__ import annotations

import io
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from analysis.figures import ViewSpec, build_figure
from analysis.pyramid import ArrayPyramid, level_for, n_levels
from analysis.result import Capture, TokenSeq
from analysis.themes import get_theme
from analysis.views.heatmap import HeatmapDrawer, heatmap_data, hover_text
from tests.test_head_labels import assert_geometry, data_to_logical, show, synthetic_capture


# -- a stand-in for a long capture's store -----------------------------------------------------
class StoredPyramid:
    """A map's levels kept as float16, as a disk store keeps them; every read is recorded, and
    reading level 0 whole fails (a long map is never read whole to draw it)."""

    def __init__(self, m: np.ndarray) -> None:
        p = ArrayPyramid(m)
        self.shape = p.shape
        self._levels = [p.level(k).astype(np.float16) for k in range(n_levels(*p.shape))]
        self.calls: list[tuple] = []

    def level(self, k: int) -> np.ndarray:
        self.calls.append(("level", k))
        if k == 0:
            raise AssertionError("the whole map was read")
        return self._levels[k].astype(np.float32)

    def region(self, k: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        self.calls.append(("region", k, r0, r1, c0, c1))
        return self._levels[k][r0:r1, c0:c1].astype(np.float32)


class LazyStack:
    """``[L, H, Q, K]`` with ``map_source(layer, head)`` (the store's lazy stack)."""

    def __init__(self, maps: np.ndarray) -> None:
        self._maps = maps
        self.shape, self.dtype, self.ndim = maps.shape, maps.dtype, 4
        self.sources = {(lay, h): StoredPyramid(maps[lay, h]) for lay in range(maps.shape[0])
                        for h in range(maps.shape[1])}

    def map_source(self, layer: int, head: int) -> StoredPyramid:
        return self.sources[(layer, head)]

    def __getitem__(self, idx):
        raise AssertionError("a map was read from the stack")


def stored_capture(n: int, layers: int = 1, heads: int = 2, seed: int = 0) -> tuple[Capture, np.ndarray]:
    """A capture of ``n`` tokens whose stack is a :class:`LazyStack` (and the maps it holds)."""
    cap = synthetic_capture(n, seed=seed, layers=layers, heads=heads)
    maps = np.asarray(cap.stacks["attentions"]).astype(np.float16)
    object.__setattr__(cap, "stacks", MappingProxyType({"attentions": LazyStack(maps)}))
    return cap, maps


# -- helpers -------------------------------------------------------------------------------------
def wheel(view, x: float, y: float, notches: int = 1) -> None:
    """Turn the wheel over the map's data point (x = column, y = row)."""
    lx, ly = data_to_logical(view, x, y)
    pos = QPointF(lx, ly)
    ev = QWheelEvent(pos, view.canvas.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120 * notches),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.canvas, ev)


def limits(view) -> tuple[float, float, float, float]:
    """(col_lo, col_hi, row_lo, row_hi) the axes show."""
    x0, x1 = view.ax.get_xlim()
    y1, y0 = view.ax.get_ylim()  # row 0 at the top
    return x0, x1, y0, y1


def point(view, x: float, y: float) -> QPoint:
    lx, ly = data_to_logical(view, x, y)
    return QPoint(round(lx), round(ly))


def hover(view, i: int, j: int) -> str:
    """The tooltip of the mouse over cell (row i, column j), through the canvas' own events."""
    from matplotlib.backend_bases import MouseEvent

    dx, dy = view.ax.transData.transform((j, i))  # display pixels, as the canvas' events have them
    MouseEvent("motion_notify_event", view.canvas, dx, dy)._process()
    return view.hover_text


# -- zoom, pan, reset --------------------------------------------------------------------------
def test_the_wheel_zooms_around_the_cursor_and_reads_a_finer_level(qtbot, head):
    cap, maps = stored_capture(2048)
    show(qtbot, head, cap, ViewSpec())  # (a colour range of this map: the store's stack-wide one is its own)
    full = limits(head)
    assert full == (-0.5, 2047.5, -0.5, 2047.5)
    before = head.drawer.level
    assert before >= 1  # 2,048 tokens on ~580 pixels: pooled
    src = cap.stacks["attentions"].map_source(0, 0)
    at = data_to_logical(head, 700, 300)
    wheel(head, 700, 300, notches=3)
    c0, c1, r0, r1 = limits(head)
    assert head.zoom == pytest.approx((c0, c1, r0, r1))
    assert c1 - c0 == pytest.approx(2048 / 1.25 ** 3) and r1 - r0 == pytest.approx(2048 / 1.25 ** 3)
    # the point under the cursor stays under it
    assert data_to_logical(head, 700, 300) == pytest.approx(at, abs=0.5)
    # a finer level, and only the cells in view of it
    shown = head.image.shown
    assert shown.level < before
    f = 2 ** shown.level
    assert shown.c0 * f <= c0 + 0.5 and shown.c1 * f >= c1 - 0.5 and (shown.c1 - shown.c0) * f < 2048
    assert src.calls[-1] == ("region", shown.level, shown.r0, shown.r1, shown.c0, shown.c1)
    np.testing.assert_array_equal(head.image.get_array(),
                                  ArrayPyramid(maps[0, 0]).level(shown.level)[shown.r0:shown.r1, shown.c0:shown.c1])
    # far enough in, level 0; zooming out as far as it goes is the whole map again
    wheel(head, 700, 300, notches=16)
    assert head.drawer.level == 0 and limits(head)[1] - limits(head)[0] < 100
    wheel(head, 700, 300, notches=-40)
    assert head.zoom is None and limits(head) == full and head.drawer.level == before
    assert ("level", 0) not in src.calls


def test_zoom_stops_at_two_tokens_and_at_the_edges(qtbot, head):
    show(qtbot, head, synthetic_capture(64))
    head.zoom_at(0.25, 0.25, 1e6)
    c0, c1, r0, r1 = limits(head)
    assert c1 - c0 == pytest.approx(2.0) and r1 - r0 == pytest.approx(2.0)
    assert c0 < 0.25 < c1 and r0 < 0.25 < r1  # the point stays in view
    head.pan_by(-10, -10)
    assert limits(head) == pytest.approx((-0.5, 1.5, -0.5, 1.5))  # not past the map's corner
    head.pan_by(1000, 1000)
    assert limits(head) == pytest.approx((61.5, 63.5, 61.5, 63.5))


def test_a_drag_pans_and_is_no_click(qtbot, head):
    show(qtbot, head, synthetic_capture(200))
    head.zoom_at(100, 100, 4.0)
    c0, c1, r0, r1 = limits(head)
    ratio = head.canvas.device_pixel_ratio or 1
    per_px = (c1 - c0) / head.ax.bbox.width * ratio  # tokens per logical pixel, across
    per_py = (r1 - r0) / head.ax.bbox.height * ratio  # and down
    start = point(head, 100, 100)
    clicked = []
    head.cell_clicked.connect(lambda *a: clicked.append(a))
    qtbot.mousePress(head.canvas, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(head.canvas, start + QPoint(20, 0))
    qtbot.mouseMove(head.canvas, start + QPoint(60, -30))
    qtbot.mouseRelease(head.canvas, Qt.MouseButton.LeftButton, pos=start + QPoint(60, -30))
    d0, d1, s0, s1 = limits(head)
    # the map follows the hand: dragged right and up, the view moved left and down
    assert d0 == pytest.approx(c0 - 60 * per_px, abs=2 * per_px)
    assert s0 == pytest.approx(r0 + 30 * per_py, abs=2 * per_py)
    assert (d1 - d0, s1 - s0) == pytest.approx((c1 - c0, r1 - r0))
    assert clicked == []
    # a click without a drag still selects the cell
    qtbot.mouseClick(head.canvas, Qt.MouseButton.LeftButton, pos=point(head, 90, 110))
    assert clicked == [(110, 90)]


def test_double_click_button_and_ctrl_0_reset_the_zoom(qtbot, head):
    show(qtbot, head, synthetic_capture(100))
    assert not head.reset_button.isVisible() and not head.reset_zoom_action.isEnabled()
    head.zoom_at(50, 50, 3.0)
    assert head.zoom is not None and head.reset_button.isVisible() and head.reset_zoom_action.isEnabled()
    # the button sits in the canvas' top right corner, clear of the map
    b = head.reset_button.geometry()
    assert head.canvas.rect().contains(b) and b.bottom() < data_to_logical(head, 0, limits(head)[2])[1]
    qtbot.mouseClick(head.reset_button, Qt.MouseButton.LeftButton)
    assert head.zoom is None and limits(head) == (-0.5, 99.5, -0.5, 99.5) and not head.reset_button.isVisible()
    head.zoom_at(50, 50, 3.0)
    qtbot.mouseDClick(head.canvas, Qt.MouseButton.LeftButton, pos=point(head, 50, 50))
    assert head.zoom is None
    head.zoom_at(50, 50, 3.0)
    head.canvas.setFocus()
    qtbot.keyClick(head.canvas, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    assert head.zoom is None


def test_zooming_blits_only_the_map(qtbot, head):
    show(qtbot, head, synthetic_capture(256))
    full, blits = head.full_draws, head.blits
    head.zoom_at(100, 100, 2.0)
    head.zoom_at(100, 100, 2.0)
    head.pan_by(5, 5)
    assert head.full_draws == full and head.blits == blits + 3
    assert head.labels.isVisible()


# -- labels and the hover ----------------------------------------------------------------------
def test_labels_name_the_rows_and_columns_in_view(qtbot, head):
    cap = synthetic_capture(300)
    show(qtbot, head, cap)
    d = head.data
    step = head.labels.rows[1][0] - head.labels.rows[0][0]
    assert step > 1  # the whole map: every k-th label (300 tokens on ~560 pixels: one pixel each or more)
    head.zoom_at(150, 120, 20.0)  # 15 tokens in view
    c0, c1, r0, r1 = limits(head)
    rows, cols = head.labels.rows, head.labels.cols
    want_rows = [i for i in range(300) if r0 <= i <= r1]
    want_cols = [j for j in range(300) if c0 <= j <= c1]
    assert [i for i, _ in rows] == want_rows and [j for j, _ in cols] == want_cols  # every one
    assert all(s == d.row_labels[i] for i, s in rows) and all(s == d.col_labels[j] for j, s in cols)
    assert_geometry_in_view(head)
    # panned: the labels follow
    head.pan_by(3, 0)
    assert [j for j, _ in head.labels.cols] == [j for j in range(300) if c0 + 3 <= j <= c1 + 3]
    assert_geometry_in_view(head)
    head.reset_zoom()
    assert head.labels.rows[1][0] - head.labels.rows[0][0] == step
    assert_geometry(head)


def assert_geometry_in_view(view) -> None:
    """Every label centred on its row/column as matplotlib draws it, outside the map, in the canvas."""
    lab = view.labels
    rows, cols = lab.label_rects()
    canvas = view.canvas.rect()
    box = lab.box_rect()
    for (i, _), r in zip(lab.rows, rows, strict=True):
        assert r.center().y() == pytest.approx(data_to_logical(view, 0, i)[1], abs=1.0)
        assert r.right() <= box.left() and canvas.contains(r.toAlignedRect())
    for (j, _), r in zip(lab.cols, cols, strict=True):
        assert r.center().x() == pytest.approx(data_to_logical(view, j, 0)[0], abs=1.0)
        assert r.top() >= box.bottom() and canvas.contains(r.toAlignedRect())


def test_labels_appear_when_the_tokens_get_their_pixels(qtbot, head):
    head.resize(300, 260)  # a small view: 300 tokens share pixels, the picture is pooled
    qtbot.waitUntil(lambda: head.canvas.width() <= 300)
    cap = synthetic_capture(300)
    show(qtbot, head, cap)
    assert head.drawer.level >= 1
    assert head.labels.rows == [] and head.labels.cols == []
    assert "max of" in head.cbar.ax.get_ylabel()  # the colour bar says what a cell is
    head.zoom_at(150, 150, 2.5)
    assert head.drawer.level == 0 and head.labels.rows and head.labels.cols
    assert "max of" not in head.cbar.ax.get_ylabel()
    head.zoom_at(150, 150, 20.0)
    c0, c1, r0, r1 = limits(head)
    assert [i for i, _ in head.labels.rows] == [i for i in range(300) if r0 <= i <= r1]


def test_the_hover_names_the_tokens_and_their_own_weight_at_any_zoom(qtbot, head):
    cap, maps = stored_capture(2048, seed=3)
    show(qtbot, head, cap, ViewSpec())
    d = head.data
    k = head.drawer.level
    assert k >= 1
    i, j = 1517, 266
    text = hover(head, i, j)
    f = 2 ** k
    pooled = ArrayPyramid(maps[0, 0]).level(k)[i // f, j // f]
    assert text == (f"{d.row_labels[i]} → {d.col_labels[j]}: {float(maps[0, 0, i, j]):.4f}"
                    f" · cell drawn: {pooled:.4f}, the max of its {f}×{f} tokens")
    head.zoom_at(j, i, 40.0)
    assert head.drawer.level == 0
    assert hover(head, i, j) == f"{d.row_labels[i]} → {d.col_labels[j]}: {float(maps[0, 0, i, j]):.4f}"
    assert hover(head, i + 1, j - 1).startswith(f"{d.row_labels[i + 1]} → {d.col_labels[j - 1]}: ")
    assert ("level", 0) not in cap.stacks["attentions"].map_source(0, 0).calls


# -- the zoom and the selection ----------------------------------------------------------------
def test_a_head_switch_keeps_the_zoom_a_new_capture_resets_it(qtbot, head):
    cap = synthetic_capture(120, layers=2, heads=3)
    spec = ViewSpec(shared_range=True)
    show(qtbot, head, cap, spec)
    head.zoom_at(60, 40, 4.0)
    zoom = head.zoom
    blits = head.blits
    show(qtbot, head, cap, replace(spec, layer=1, head=2))
    assert head.zoom == zoom and limits(head) == pytest.approx(zoom) and head.blits == blits + 1
    np.testing.assert_array_equal(head.image.get_array(),
                                  np.asarray(cap.stacks["attentions"][1, 2])[head.image.shown.r0:head.image.shown.r1,
                                                                             head.image.shown.c0:head.image.shown.c1])
    other = synthetic_capture(120, seed=5, layers=2, heads=3)
    show(qtbot, head, other, spec)  # the same size, a new capture
    assert head.zoom is None and limits(head) == (-0.5, 119.5, -0.5, 119.5)
    head.zoom_at(60, 40, 4.0)
    show(qtbot, head, other, replace(spec, hide_special=True, head=0))  # nothing to hide here: same size, kept
    assert head.zoom is not None


def test_the_window_keeps_the_zoom_across_heads_and_resets_it_for_a_new_capture(qtbot, window):
    window.set_capture(synthetic_capture(150, layers=2, heads=2))
    window.show_tab("Head")
    view = window.head_view
    qtbot.waitUntil(lambda: view.data is not None)
    assert view.reset_zoom_action in window.view_menu.actions()
    assert ("Ctrl+0", "Reset zoom") in window.shortcuts()
    view.zoom_at(70, 70, 5.0)
    zoom = view.zoom
    window.select(layer=1, head=1)
    assert view.zoom == zoom and "layer 1, head 1" in view.data.title
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)  # View ▸ Reset zoom
    assert view.zoom is None
    view.zoom_at(70, 70, 5.0)
    window.set_capture(synthetic_capture(150, seed=9, layers=2, heads=2))
    qtbot.waitUntil(lambda: view.zoom is None)
    assert limits(view) == (-0.5, 149.5, -0.5, 149.5)


def test_the_mask_outline_follows_the_zoom(qtbot, head):
    cap = replace(synthetic_capture(80), kind="decoder", architecture="GPT2LMHeadModel")
    show(qtbot, head, cap, ViewSpec(shared_range=True, show_causal_mask=True))
    assert head.mask_patch.get_visible()
    head.zoom_at(40, 40, 4.0)
    # the outline is in token coordinates: the masked cell right of the diagonal, in view, is covered
    path = head.mask_patch.get_path()
    assert path.contains_point((41, 40)) and not path.contains_point((39, 40))
    x, y = head.ax.transData.transform((41, 40))
    assert head.ax.bbox.contains(x, y)


# -- the level rule in exports -------------------------------------------------------------------
def test_an_export_draws_the_level_that_fits_its_pixels(tmp_path):
    cap, maps = stored_capture(2000, heads=1)
    spec = ViewSpec(view="head", figsize=(6.0, 5.0), dpi=100)
    fig = build_figure(cap, spec)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=spec.dpi)
    (im,) = [im for ax in fig.axes for im in ax.images]
    ax = im.axes
    want = level_for(2000, 2000, ax.bbox.height, ax.bbox.width)
    assert want >= 2 and im.shown.level == want
    np.testing.assert_array_equal(im.get_array(), ArrayPyramid(maps[0, 0]).level(want))
    assert f"max of {2 ** want}×{2 ** want} tokens" in fig.axes[1].get_ylabel()
    assert ("level", 0) not in cap.stacks["attentions"].map_source(0, 0).calls
    # the same capture held in memory: the same picture
    mem = synthetic_capture(2000, heads=1)
    mem = replace(mem, stacks={"attentions": maps})
    fig2 = build_figure(mem, spec)
    fig2.savefig(io.BytesIO(), format="png", dpi=spec.dpi)
    (im2,) = [im for ax in fig2.axes for im in ax.images]
    assert im2.shown == im.shown
    np.testing.assert_array_equal(im2.get_array(), im.get_array())


def test_a_short_export_is_drawn_whole_at_level_0():
    cap = synthetic_capture(64)
    fig = build_figure(cap, ViewSpec(view="head"))
    FigureCanvasAgg(fig).draw()
    (im,) = [im for ax in fig.axes for im in ax.images]
    assert im.shown.level == 0 and (im.shown.r0, im.shown.r1, im.shown.c0, im.shown.c1) == (0, 64, 0, 64)
    np.testing.assert_array_equal(im.get_array(), np.asarray(cap.stacks["attentions"][0, 0], dtype=np.float32))
    assert fig.axes[1].get_ylabel() == "attention weight"


def test_the_drawer_never_reads_a_stored_map_whole():
    from matplotlib.figure import Figure

    cap, maps = stored_capture(1500, heads=2)
    for spec in (ViewSpec(view="head", head=1), ViewSpec(view="head", head=1, cmap="magma")):
        d = heatmap_data(cap, spec)
        fig = Figure(figsize=(5, 4), dpi=100)
        drawer = HeatmapDrawer(fig, get_theme("light"))
        drawer.draw(d)
        FigureCanvasAgg(fig).draw()
        assert drawer.level >= 1
        assert hover_text(d, 700, 3, drawer.level).endswith(f"the max of its {2 ** drawer.level}×{2 ** drawer.level} tokens")
    src = cap.stacks["attentions"].map_source(0, 1)
    assert ("level", 0) not in src.calls
    assert src.calls[0] == ("level", n_levels(1500, 1500) - 1)  # the colour range: the coarsest level
    assert d.vmax == pytest.approx(float(maps[0, 1].max()), rel=1e-3)


def test_a_one_token_line_survives_every_level_and_pixel():
    """Where cells outnumber pixels, a pixel shows the largest of the cells it covers: a single
    token's column and row stay drawn at full brightness (picking one cell per pixel drops them)."""
    from matplotlib.figure import Figure

    n = 3001
    m = np.zeros((n, n), np.float32)
    m[:, 1234] = 1.0
    m[2222, :] = 1.0
    cap = replace(synthetic_capture(8), stacks={"attentions": m[None, None]})
    object.__setattr__(cap, "source", TokenSeq(ids=np.arange(n), raw=("t",) * n, display=("t",) * n,
                                                special=np.zeros(n, bool), word_ids=tuple(range(n))))
    for size in ((4.0, 3.5), (7.3, 6.1), (13.0, 12.0)):
        fig = Figure(figsize=size, dpi=100)
        drawer = HeatmapDrawer(fig, get_theme("light"))
        drawer.draw(heatmap_data(cap, ViewSpec(view="head")))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        img = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
        x0, y0, x1, y1 = (int(round(v)) for v in drawer.ax.bbox.extents)
        inside = img[img.shape[0] - y1 + 3:img.shape[0] - y0 - 3, x0 + 3:x1 - 3]  # (not the spines)
        top = np.array(drawer.image.cmap(1.0, bytes=True)[:3], int)
        bright = (np.abs(inside - top).sum(-1) <= 3)
        assert drawer.level >= 1 or n > drawer.ax.bbox.width
        assert bright.all(axis=0).sum() >= 1, size  # the column, top to bottom
        assert bright.all(axis=1).sum() >= 1, size  # the row, left to right
        assert bright.mean() < 0.05
