"""The window on tiny checkpoints: load, run, every view and stack, selection, hover, clicks,
display options, themes, the output panel and the settings file.

The window stores captures as float16, so expected maps are computed from the window's own
capture (``window.capture``) with the same analysis functions the views use.
"""

from __future__ import annotations

import html
from configparser import RawConfigParser
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent
from matplotlib.colors import LogNorm, to_rgba
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QApplication

from analysis.aggregate import hide_tokens, select_map
from analysis.figures import clean_label
from analysis.themes import get_theme
from tests.gui_fixtures import load, run, use_target, wait_idle

TEXT = "I like this course"
TARGET = "J'aime ce cours"


# -- helpers ---------------------------------------------------------------------------------
def shown(win):
    """The Head view's matrix for the window's current selection."""
    return win.head_view.data.matrix


def expected(win, layer=None, head="current", how=None, stack=None):
    """``select_map`` of the window's capture for its current selection (or the one given)."""
    spec = win.spec
    layer = spec.layer if layer is None else layer
    head = spec.head if head == "current" else head
    return select_map(win.capture, stack or spec.stack, layer, head, how or spec.aggregation)


def title(view) -> str:
    """A view's live title (a matplotlib Text or a QLabel above the canvas)."""
    t = view.title
    return t.get_text() if hasattr(t, "get_text") else t.text()


def switch_tab(win, name: str) -> None:
    for i in range(win.tabs.count()):
        if win.tabs.tabText(i) == name:
            win.tabs.setCurrentIndex(i)
            return
    raise AssertionError(f"no tab {name!r}")


def canvas_pos(view, ax, x: float, y: float) -> QPoint:
    """Widget pixel position of data point (x, y) of ``ax`` on ``view.canvas``."""
    dx, dy = ax.transData.transform((x, y))
    ratio = view.canvas.device_pixel_ratio or 1
    return QPoint(round(dx / ratio), round(view.canvas.height() - dy / ratio))


def tile_centre(mos, r: int, c: int) -> tuple[float, float]:
    """Image coordinates (x, y) of the centre of tile (r, c) of a mosaic."""
    h, w = mos.cell
    return c * (w + mos.gap) + (w - 1) / 2, r * (h + mos.gap) + (h - 1) / 2


@pytest.fixture
def bert_window(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("bert"))
    return window


@pytest.fixture
def gpt2_window(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("gpt2"))
    return window


@pytest.fixture
def marian_window(qtbot, window, tiny_model_dir):
    """A seq2seq capture with a typed target (teacher forcing: fast and deterministic)."""
    window.input_panel.text.setPlainText(TEXT)
    use_target(window, TARGET)
    load(qtbot, window, tiny_model_dir("marian"))
    return window


# -- load and run ----------------------------------------------------------------------------
def test_load_through_panel_then_ctrl_enter_runs(qtbot, window, tiny_model_dir):
    folder = str(tiny_model_dir("bert"))
    window.input_panel.text.setPlainText("")  # no automatic run after the load
    window.model_panel.combo.setEditText(folder)
    with qtbot.waitSignal(window.model_changed, timeout=120_000) as loaded:
        qtbot.mouseClick(window.model_panel.load_btn, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    lm = loaded.args[0]
    assert window.lm is lm and lm.reference == folder
    assert window.capture is None and window.last_error == ""

    # the model card
    card = window.model_panel.card.text()
    assert "Kind: encoder" in card
    assert "BertModel" in card
    assert "attentions: 2 layers × 4 heads" in card
    assert window.model_panel.progress.format() == "ready"
    assert not window.model_panel.cancel_btn.isEnabled()

    # type and press Ctrl+Enter in the editor
    qtbot.keyClicks(window.input_panel.text, TEXT)
    with qtbot.waitSignal(window.capture_changed, timeout=60_000) as got:
        qtbot.keyClick(window.input_panel.text, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, window)
    cap = got.args[0]
    assert cap is window.capture
    assert cap.text == TEXT and cap.kind == "encoder" and cap.model == folder
    assert cap.stack_names == ("attentions",)
    assert cap.shape() == (2, 4, 6, 6)  # [CLS] i like this course [SEP]
    assert cap.stacks["attentions"].dtype == np.float16
    np.testing.assert_allclose(cap.attention().sum(-1), 1.0, atol=5e-3)
    assert window.statusBar().currentMessage().startswith(f"captured 6 tokens with {folder} · attentions 2×4")
    # the Head view shows layer 0, head 0
    np.testing.assert_array_equal(shown(window), select_map(cap, "attentions", 0, 0))


def test_token_strip_shows_display_strings_ids_and_marks_specials(qtbot, bert_window):
    win = bert_window
    cap = win.capture
    strip = win.tokens
    n = strip.columnCount()
    assert n == 6
    texts = [strip.item(0, i).text() for i in range(n)]
    ids = [int(strip.item(1, i).text()) for i in range(n)]
    assert texts == ["[CLS]", "i", "like", "this", "course", "[SEP]"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(win.lm.path))  # the model itself lives in the model process
    assert ids == tok(TEXT)["input_ids"] == cap.source.ids.tolist()
    for i in range(n):
        special = i in (0, n - 1)
        for row in (0, 1):
            item = strip.item(row, i)
            assert item.font().italic() is special
            assert (item.foreground().color().name() == "#b03a2e") is special
        assert ("special token" in strip.item(0, i).toolTip()) is special
        assert f"id: {ids[i]}" in strip.item(0, i).toolTip()


def test_byte_level_tokens_are_readable_in_the_strip(qtbot, gpt2_window):
    strip = gpt2_window.tokens
    texts = [strip.item(0, i).text() for i in range(strip.columnCount())]
    assert texts == ["I", "like", "this", "course"]  # no Ġ
    assert "Ġlike" in strip.item(0, 1).toolTip()  # the raw token is one hover away


# -- every view, every stack -----------------------------------------------------------------
def test_every_tab_and_every_seq2seq_stack_draws(qtbot, marian_window):
    win = marian_window
    cap = win.capture
    assert cap.kind == "seq2seq" and cap.target == TARGET and not cap.generated
    names = [win.stack_combo.itemData(i) for i in range(win.stack_combo.count())]
    assert names == ["encoder_attentions", "decoder_attentions", "cross_attentions"]
    assert win.stack_combo.itemText(2) == "cross-attention (target × source)"
    win.select(layer=1, head=2)
    views = {"Head": win.head_view, "Layer": win.layer_view, "Model": win.model_view, "Lines": win.lines_view}
    for i in (1, 2, 0):  # every stack, each one a change
        name = names[i]
        before = {tab: view.full_draws + view.blits for tab, view in views.items()}
        win.stack_combo.setCurrentIndex(i)
        assert win.spec.stack == name
        stack = cap.stacks[name].astype(np.float32)
        n_layers, n_heads, q, k = stack.shape
        for tab, view in views.items():
            switch_tab(win, tab)
            assert view.full_draws + view.blits > before[tab], f"{tab} view did not draw {name}"
            if tab == "Head":
                np.testing.assert_array_equal(shown(win), select_map(cap, name, 1, 2))
                assert shown(win).shape == (q, k)
                assert win.head_view.data.row_labels == tuple(clean_label(s) for s in cap.row_labels(name, "both"))
                assert win.head_view.data.col_labels == tuple(clean_label(s) for s in cap.key_tokens(name).display)
            elif tab == "Layer":
                mos = win.layer_view.mos
                assert mos.cell == (q, k) and mos.rows * mos.cols >= n_heads
                for h in range(n_heads):
                    r, c = divmod(h, mos.cols)
                    y, x = r * (q + mos.gap), c * (k + mos.gap)
                    np.testing.assert_array_equal(mos.image[y : y + q, x : x + k], stack[1, h])
                assert "layer 1" in title(win.layer_view)
            elif tab == "Model":
                mos = win.model_view.mos
                assert (mos.rows, mos.cols, mos.cell) == (n_layers, n_heads, (q, k))
                for r in range(n_layers):
                    for c in range(n_heads):
                        y, x = r * (q + mos.gap), c * (k + mos.gap)
                        np.testing.assert_array_equal(mos.image[y : y + q, x : x + k], stack[r, c])
            else:
                from analysis.views.common import stack_title
                from analysis.views.lines import lines_data

                d = lines_data(cap, win.state.spec_for("lines"))
                assert win.lines_view.n_lines == int((d.strength >= 0.02).sum()) > 0
                np.testing.assert_array_equal(d.weights[0], stack[1, 2])
                assert f"{stack_title(cap, name)}, layer 1, head 2" in title(win.lines_view)
    # the spin boxes follow the stack's size
    assert (win.layer_spin.maximum(), win.head_spin.maximum()) == (1, 3)


# -- selection -------------------------------------------------------------------------------
def test_spin_boxes_and_select_change_the_selection(qtbot, gpt2_window):
    win = gpt2_window
    assert (win.layer_spin.minimum(), win.layer_spin.maximum()) == (0, 1)
    assert (win.head_spin.minimum(), win.head_spin.maximum()) == (0, 3)
    assert win.layer_spin.suffix() == " / 1" and win.head_spin.suffix() == " / 3"
    with qtbot.waitSignal(win.selection_changed) as sel:
        win.layer_spin.setValue(1)
    assert sel.args[0].layer == 1
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 1, 0))
    win.head_spin.setValue(3)
    assert (win.spec.layer, win.spec.head) == (1, 3)
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 1, 3))
    assert "layer 1, head 3" in title(win.head_view)
    win.select(layer=0, head=2)
    assert (win.layer_spin.value(), win.head_spin.value()) == (0, 2)
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 0, 2))
    # out-of-range values are clamped by the spin boxes
    win.layer_spin.setValue(7)
    assert win.spec.layer == 1


def test_alt_arrow_shortcuts_step_layer_and_head(qtbot, gpt2_window):
    win = gpt2_window
    win.activateWindow()
    target = win.head_view.canvas
    qtbot.keyClick(target, Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    assert win.spec.layer == 1
    qtbot.keyClick(target, Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    assert win.spec.layer == 1  # clamped at the last layer
    qtbot.keyClick(target, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    qtbot.keyClick(target, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert win.spec.head == 2
    qtbot.keyClick(target, Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier)
    qtbot.keyClick(target, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert (win.spec.layer, win.spec.head) == (0, 1)
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 0, 1))


def test_step_moves_and_clamps(qtbot, gpt2_window):
    win = gpt2_window
    win.step("head", 1)
    win.step("layer", 1)
    assert (win.spec.layer, win.spec.head) == (1, 1)
    win.step("layer", 1)
    win.step("head", -5)
    assert (win.spec.layer, win.spec.head) == (1, 0)


def test_arrow_keys_after_clicking_the_head_view(qtbot, gpt2_window):
    win = gpt2_window
    reference = win.model_panel.reference()
    canvas = win.head_view.canvas
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas_pos(win.head_view, win.head_view.ax, 0, 0))
    # the user's key goes to whatever has the keyboard focus now
    qtbot.keyClick(QApplication.focusWidget() or win, Qt.Key.Key_Down)
    qtbot.keyClick(QApplication.focusWidget() or win, Qt.Key.Key_Right)
    assert win.model_panel.reference() == reference  # the keys did not go to the model box
    assert (win.spec.layer, win.spec.head) == (1, 1)


# -- hover and clicks ------------------------------------------------------------------------
def test_hover_text_names_query_key_and_weight(qtbot, gpt2_window):
    win = gpt2_window
    win.select(layer=1, head=2)
    cap = win.capture
    disp = cap.source.display
    w = float(cap.stacks["attentions"][1, 2, 3, 1])
    assert win.head_view.hover_at(3, 1) == f"{disp[3]} → {disp[1]}: {w:.4f}"
    assert win.head_view.hover_at(1, 3).endswith("(masked: a future position)")
    assert win.head_view.hover_at(1, 3).startswith(f"{disp[1]} → {disp[3]}: 0.0000")
    assert win.head_view.hover_at(4, 0) == "" and win.head_view.hover_at(-1, 0) == ""


def test_real_mouse_move_over_a_cell_sets_hover_text(qtbot, gpt2_window):
    win = gpt2_window
    win.select(layer=1, head=2)
    view = win.head_view
    with qtbot.waitSignal(view.hovered) as hovered:
        qtbot.mouseMove(view.canvas, canvas_pos(view, view.ax, 1, 3))  # x = key 1, y = query 3
    assert hovered.args[0] == view.hover_at(3, 1) == view.hover_text
    assert view.hover_text.startswith("course → like: ")
    assert win.statusBar().currentMessage() == view.hover_text
    # matplotlib's own event path gives the same answer for another cell
    x, y = view.ax.transData.transform((0, 2))
    MouseEvent("motion_notify_event", view.canvas, x, y)._process()
    assert view.hover_text == view.hover_at(2, 0)
    # leaving the axes clears it
    MouseEvent("motion_notify_event", view.canvas, 2, 2)._process()
    assert view.hover_text == ""


def test_clicking_a_model_view_cell_opens_it_in_the_head_view(qtbot, gpt2_window):
    win = gpt2_window
    switch_tab(win, "Model")
    view = win.model_view
    assert view.mos.rows == 2 and view.mos.cols == 4
    with qtbot.waitSignal(view.cell_clicked) as clicked:
        qtbot.mouseClick(view.canvas, Qt.MouseButton.LeftButton, pos=canvas_pos(view, view.ax, *tile_centre(view.mos, 1, 2)))
    assert clicked.args == [1, 2]
    assert win.tabs.currentWidget() is win.head_view
    assert (win.layer_spin.value(), win.head_spin.value()) == (1, 2)
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 1, 2))


def test_clicking_a_layer_view_tile_selects_that_head(qtbot, gpt2_window):
    win = gpt2_window
    win.select(layer=1, tab="Layer")
    view = win.layer_view
    assert (view.mos.rows, view.mos.cols) == (2, 2)
    with qtbot.waitSignal(view.head_clicked) as clicked:
        qtbot.mouseClick(view.canvas, Qt.MouseButton.LeftButton, pos=canvas_pos(view, view.ax, *tile_centre(view.mos, 1, 1)))
    assert clicked.args == [3]
    assert win.tabs.currentWidget() is win.head_view
    assert (win.spec.layer, win.spec.head) == (1, 3)
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 1, 3))


def widget_pixels(widget) -> np.ndarray:
    """RGB of ``widget`` as it is on screen, its child widgets (text overlays) included."""
    from PySide6.QtGui import QImage

    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    return np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())[:, :img.width() * 3] \
        .reshape(img.height(), img.width(), 3)


def test_layer_view_head_labels_are_visible_on_screen(qtbot, gpt2_window):
    win = gpt2_window
    win.select(tab="Layer")
    view = win.layer_view
    labels = [t for t in view.texts.texts if t.text.startswith("H")]
    assert [t.text for t in labels] == ["H0", "H1", "H2", "H3"]
    assert len(view.ax.texts) == 0  # painted by Qt, not matplotlib
    pixels = widget_pixels(view.canvas)
    mos = view.mos
    for k, t in enumerate(labels):
        # in the top left corner of its tile
        r, c = divmod(k, mos.cols)
        at = canvas_pos(view, view.ax, c * (mos.cell[1] + mos.gap), r * (mos.cell[0] + mos.gap))
        assert abs(t.x - at.x()) <= 1 and abs(t.y - at.y()) <= 1, (t, at)
        box = view.texts.text_rect(t)
        region = pixels[int(box.top()):int(box.bottom()) + 1, int(box.left()):int(box.right()) + 1]
        # the label is white text; no colormap colour has all three channels this bright
        assert (region.min(axis=-1) > 200).any(), f"{t.text} is not visible"


# -- display options -------------------------------------------------------------------------
def test_aggregate_mean_and_max_over_heads(qtbot, gpt2_window):
    win = gpt2_window
    win.select(layer=1)
    win.agg_check.setChecked(True)
    assert win.spec.head is None and not win.head_spin.isEnabled()
    stack = win.capture.stacks["attentions"].astype(np.float32)
    np.testing.assert_allclose(shown(win), stack[1].mean(0), rtol=1e-6)
    assert "mean of 4 heads" in title(win.head_view)
    win.agg_combo.setCurrentText("max")
    np.testing.assert_array_equal(shown(win), stack[1].max(0))
    np.testing.assert_array_equal(shown(win), expected(win, layer=1, head=None, how="max"))
    assert "max of 4 heads" in title(win.head_view)
    assert not np.allclose(stack[1].max(0), stack[1].mean(0))
    win.agg_check.setChecked(False)
    assert win.spec.head == win.head_spin.value() and win.head_spin.isEnabled()


def test_hide_special_tokens_with_and_without_renormalizing(qtbot, bert_window):
    win = bert_window
    cap = win.capture
    keep = ~cap.source.special
    assert keep.tolist() == [False, True, True, True, True, False]
    full = select_map(cap, None, 0, 0)
    assert win.renorm.isChecked()  # the default
    win.hide_special.setChecked(True)
    d = win.head_view.data
    assert d.row_labels == d.col_labels == ("i", "like", "this", "course")
    assert d.row_idx.tolist() == d.col_idx.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(d.matrix, hide_tokens(full, keep, keep, True)[0], rtol=1e-6)
    np.testing.assert_allclose(d.matrix.sum(1), 1.0, atol=1e-5)
    assert "special tokens hidden, rows renormalised" in title(win.head_view)
    win.renorm.setChecked(False)
    d = win.head_view.data
    np.testing.assert_array_equal(d.matrix, full[1:5, 1:5])
    assert (d.matrix.sum(1) < 0.999).all()  # the hidden columns' share is missing
    # the overviews hide them too
    switch_tab(win, "Layer")
    assert win.layer_view.mos.cell == (4, 4)
    win.hide_special.setChecked(False)
    switch_tab(win, "Head")
    np.testing.assert_array_equal(shown(win), full)


def test_log_colour_scale(qtbot, gpt2_window):
    win = gpt2_window
    assert not isinstance(win.head_view.image.norm, LogNorm)
    win.scale_combo.setCurrentText("log")
    assert win.head_view.data.scale == "log"
    assert isinstance(win.head_view.image.norm, LogNorm)
    assert win.head_view.image.norm.vmin > 0
    assert "log" in win.head_view.cbar.ax.get_ylabel()
    win.scale_combo.setCurrentText("linear")
    assert not isinstance(win.head_view.image.norm, LogNorm)
    assert win.head_view.image.norm.vmin == 0


def test_colormap_choice(qtbot, gpt2_window):
    win = gpt2_window
    assert win.head_view.image.get_cmap().name.startswith(get_theme("light").cmap)
    win.cmap_combo.setCurrentText("magma")
    assert win.head_view.image.get_cmap().name.startswith("magma")


def test_theme_switch_recolours_every_view_and_the_window(qtbot, gpt2_window):
    win = gpt2_window
    light, dark = get_theme("light"), get_theme("dark")
    views = (win.head_view, win.layer_view, win.model_view, win.lines_view)
    for v in views:
        assert v.figure.get_facecolor() == to_rgba(light.figure_facecolor)
    window_colour = QApplication.palette().window().color().name()
    win.theme_combo.setCurrentText("dark")
    assert win.spec.theme == "dark"
    for v in views:
        assert v.figure.get_facecolor() == to_rgba(dark.figure_facecolor) != to_rgba(light.figure_facecolor)
    assert QApplication.palette().window().color().name() != window_colour
    assert QApplication.palette().window().color().name() == dark.qt_palette["window"]
    # the data did not change
    np.testing.assert_array_equal(shown(win), select_map(win.capture, None, 0, 0))
    base = QApplication.font().pointSizeF()
    win.theme_combo.setCurrentText("presentation")
    assert QApplication.font().pointSizeF() == pytest.approx(base * 1.4)
    win.theme_combo.setCurrentText("light")
    assert QApplication.font().pointSizeF() == pytest.approx(base)
    assert win.head_view.figure.get_facecolor() == to_rgba(light.figure_facecolor)


def test_causal_mask_overlay_on_a_decoder(qtbot, gpt2_window):
    win = gpt2_window
    view = win.head_view
    assert win.capture.is_causal()
    assert view.mask_patch.get_visible()
    # the patch covers exactly the masked cells: test every cell centre and a point near each corner
    path = view.mask_patch.get_path()
    ii, jj = np.mgrid[0:4, 0:4]
    for dy, dx in ((0, 0), (-0.45, -0.45), (0.45, 0.45), (-0.45, 0.45), (0.45, -0.45)):
        pts = np.stack([jj.ravel() + dx, ii.ravel() + dy], 1)
        covered = path.contains_points(pts).reshape(4, 4)
        np.testing.assert_array_equal(covered, np.triu(np.ones((4, 4), bool), 1))
    assert view.mask_patch.get_facecolor() == to_rgba(get_theme("light").masked_color)
    np.testing.assert_array_equal(view.data.mask, np.triu(np.ones((4, 4), bool), 1))
    # and it is drawn: the masked cell's pixel has the masked colour
    view.canvas.draw()
    x, y = view.ax.transData.transform((3, 0))
    rgba = np.asarray(view.canvas.buffer_rgba())
    px = rgba[int(rgba.shape[0] - y), int(x)] / 255.0
    np.testing.assert_allclose(px[:3], to_rgba(get_theme("light").masked_color)[:3], atol=0.02)
    win.mask_check.setChecked(False)
    assert not view.mask_patch.get_visible() and view.data.mask is None
    win.mask_check.setChecked(True)
    assert view.mask_patch.get_visible()


def test_no_causal_mask_on_an_encoder(qtbot, bert_window):
    assert not bert_window.head_view.mask_patch.get_visible()
    assert not bert_window.rows_combo.isEnabled()


def test_seq2seq_row_label_modes_on_the_cross_stack(qtbot, marian_window):
    win = marian_window
    cap = win.capture
    assert win.rows_combo.isEnabled()
    win.select(stack="cross_attentions", layer=1, head=0)
    # the default reads "input → the token it predicts": a reader cannot take the input for the output
    assert win.rows_combo.currentText() == "both"
    assert list(win.head_view.data.row_labels) == [clean_label(f"{a} → {b}") for a, b in
                                                   zip(cap.decoder_inputs.display, cap.outputs.display, strict=True)]
    assert win.head_view.ax.get_ylabel() == "query: input → predicted token"
    win.rows_combo.setCurrentText("input")
    d = win.head_view.data
    dec_in = [clean_label(s) for s in cap.decoder_inputs.display]
    out = [clean_label(s) for s in cap.outputs.display]
    assert list(d.row_labels) == dec_in
    assert win.head_view.ax.get_ylabel() == "query: decoder input at t"
    assert list(d.col_labels) == [clean_label(s) for s in cap.source.display]
    assert d.matrix.shape == (len(cap.outputs), len(cap.source))
    assert out[-1] == "</s>" and dec_in[0] == "<pad>"  # decoder input t predicts output t
    assert dec_in[1:] == out[:-1]
    win.rows_combo.setCurrentText("predicts")
    assert list(win.head_view.data.row_labels) == out
    assert win.head_view.ax.get_ylabel() == "query: token predicted at t"
    # the matrix is the same whatever the labels
    np.testing.assert_array_equal(win.head_view.data.matrix, select_map(cap, "cross_attentions", 1, 0))


def test_a_new_capture_never_gets_an_old_captures_colour_range(qtbot, gpt2_window):
    win = gpt2_window
    base = win.capture
    arr = base.stacks["attentions"]
    top = float(arr.astype(np.float32).max())
    half = replace(base, stacks={"attentions": (arr * 0.5).astype(np.float16)})
    win.set_capture(half)
    assert win.head_view.data.vmax == pytest.approx(top / 2, rel=1e-3)
    old_id = id(half)
    win.set_capture(base)
    del half  # nothing else holds it: its memory is free again
    kept = []  # new captures are kept alive, so each one takes another free slot
    for _ in range(200):
        again = replace(base, stacks={"attentions": arr.copy()})
        if id(again) == old_id:
            break
        kept.append(again)
    else:
        pytest.skip("Python did not reuse the freed capture's address this time")
    win.set_capture(again)
    assert win.head_view.data.vmax == pytest.approx(top, rel=1e-3)


# -- the output panel ------------------------------------------------------------------------
def test_output_panel_shows_top5_next_tokens_for_a_decoder(qtbot, gpt2_window):
    win = gpt2_window
    pred = win.capture.prediction
    assert pred.task == "next_token" and len(pred.items) == 5
    probs = [p for _, p in pred.items]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    text = win.output.text()
    assert text.startswith("Next token (top-5): ")
    for label, p in pred.items:
        assert f"<b>{html.escape(label)}</b> {p:.1%}" in text
    assert text.count(" · ") == 4


def test_output_panel_shows_the_translation_for_seq2seq(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    assert window.input_panel.translate.isChecked()  # generate by default
    cap = load(qtbot, window, tiny_model_dir("marian"))
    assert cap.generated and cap.prediction.task == "translation"
    assert cap.output_text and cap.target == cap.output_text
    text = window.output.text()
    assert text.startswith(f"Translation: <b>{html.escape(cap.output_text)}</b>")
    assert "teacher forcing" not in text
    # a typed target is labelled as such
    use_target(window, TARGET)
    cap = run(qtbot, window, TEXT)
    assert not cap.generated and cap.target == TARGET
    assert window.output.text() == f"Translation: <b>{html.escape(cap.output_text)}</b> (typed target, teacher forcing)"


# -- settings --------------------------------------------------------------------------------
def test_settings_are_saved_and_restored_by_a_second_window(qtbot, make_window, settings_path, tiny_model_dir):
    win = make_window()
    folder = str(tiny_model_dir("gpt2"))
    text = "Attention heads show which words matter"
    win.input_panel.text.setPlainText(text)
    win.model_panel.combo.setEditText(folder)
    qtbot.mouseClick(win.model_panel.load_btn, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, win, 120_000)
    assert win.lm is not None and win.capture is not None and win.last_error == ""
    win.theme_combo.setCurrentText("dark")
    win.scale_combo.setCurrentText("log")
    win.hide_special.setChecked(True)
    win.save_settings()

    raw = RawConfigParser()
    raw.read(settings_path, encoding="utf-8")
    assert raw.has_option("General", "last_model") and raw.has_option("General", "text")
    stored = QSettings(str(settings_path), QSettings.Format.IniFormat)
    assert stored.value("last_model") == folder
    assert stored.value("text") == text
    assert stored.value("theme") == "dark"

    again = make_window()
    assert again is not win
    assert again.model_panel.reference() == folder
    assert again.input_panel.text.toPlainText() == text
    assert again.theme_combo.currentText() == "dark" and again.spec.theme == "dark"
    assert again.scale_combo.currentText() == "log"
    assert again.hide_special.isChecked()
    assert again.model_panel.combo.findText(folder) >= 0  # offered as a recent model
    assert again.lm is None  # nothing is loaded until asked (HEADMAP_NO_AUTOSTART)


# -- overviews: a colour bar, the selected head marked, deep models readable ---------------------
def deep_capture(n_layers: int = 30, n_heads: int = 9, n: int = 64):
    """SmolLM2's shape: 30 layers × 9 heads, causal maps of ``n`` tokens."""
    from analysis.result import Capture
    from tests.test_aggregate import token_seq

    rng = np.random.default_rng(5)
    a = rng.random((n_layers, n_heads, n, n)) * np.tril(np.ones((n, n)))
    a /= a.sum(-1, keepdims=True)
    return Capture(model="deep", kind="decoder", architecture="LlamaForCausalLM", text="x",
                   source=token_seq([f"t{i}" for i in range(n)]), stacks={"attentions": a.astype(np.float16)})


def tile_pixels(view) -> tuple[float, float]:
    """(width, height) of one tile on screen, in pixels."""
    mos = view.data.mosaic
    box = view.ax.get_window_extent()
    return box.width * mos.cell[1] / mos.image.shape[1], box.height * mos.cell[0] / mos.image.shape[0]


@pytest.mark.parametrize("size", [(1400, 860), (900, 600)])
def test_deep_model_overview_tiles_are_never_flatter_than_2_to_1(qtbot, window, size):
    window.resize(*size)
    window.set_capture(deep_capture())
    switch_tab(window, "Model")
    view = window.model_view
    qtbot.waitUntil(lambda: view.data is not None)
    qtbot.wait(50)
    w, h = tile_pixels(view)
    assert w / h <= 2.0 + 0.05, (w, h)
    # too small a window scrolls instead of squashing the tiles
    if view.canvas.height() > view.scroll.viewport().height():
        assert view.scroll.verticalScrollBar().maximum() > 0
    # either way the tiles start the same few pixels below the top (room for the head names),
    # not a fraction of a tall scrolling canvas
    from gui.views.overview import AX_TOP

    top = view.canvas.height() - view.ax.get_window_extent().y1 / (view.canvas.device_pixel_ratio or 1)
    assert abs(top - (1 - AX_TOP) * view.scroll.viewport().height()) <= 1.5, top
    # a colour bar, and the selected head outlined
    assert view.drawer.cbar.ax.get_ylabel() == "attention weight"
    window.select(layer=7, head=4)
    marker = view.drawer.marker
    mos = view.data.mosaic
    assert marker.get_visible()
    assert marker.get_xy() == (4 * (mos.cell[1] + mos.gap) - 0.5, 7 * (mos.cell[0] + mos.gap) - 0.5)


def matplotlib_text_centres(view) -> list[tuple[str, float, float]]:
    """Turn the live mosaic view's matplotlib text back on, as an export draws it (tick labels
    of the tiles and the colour bar, the axis titles), draw, and return every drawn text with the
    centre of its box in canvas logical pixels."""
    from gui.views.text_overlay import plain_text

    dr, ax, cax = view.drawer, view.ax, view.drawer.cbar.ax
    ax.set_yticks([y for y, _ in dr.row_items], [s for _, s in dr.row_items])
    ax.set_xticks([x for x, _ in dr.col_items], [s for _, s in dr.col_items])
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    for axis in (ax.xaxis, ax.yaxis, cax.yaxis):
        axis.set_visible(True)
    view.canvas.draw()
    renderer = view.canvas.get_renderer()
    ratio = view.canvas.device_pixel_ratio or 1
    height = view.figure.bbox.height
    lo, hi = cax.get_ylim()
    # (tick labels of values outside the axis are made but not drawn)
    shown_cbar = [t for t in cax.get_yticklabels(which="both") if min(lo, hi) <= t.get_position()[1] <= max(lo, hi)]
    texts = [*ax.get_xticklabels(), *ax.get_yticklabels(), *shown_cbar, ax.xaxis.label, ax.yaxis.label,
             cax.yaxis.label]
    out = []
    for t in texts:
        if not t.get_visible() or not t.get_text():
            continue
        box = t.get_window_extent(renderer)
        out.append((plain_text(t.get_text()), (box.x0 + box.x1) / 2 / ratio, height / ratio - (box.y0 + box.y1) / 2 / ratio))
    return out


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_model_view_paints_the_text_matplotlib_would_draw_where_it_would_draw_it(qtbot, window, scale):
    window.resize(1400, 900)
    window.set_capture(deep_capture(n_layers=12, n_heads=12))
    window.scale_combo.setCurrentText(scale)
    switch_tab(window, "Model")
    view = window.model_view
    qtbot.waitUntil(lambda: view.data is not None and view.texts.texts != [])
    # the live figure draws no text itself: it is painted by Qt
    assert not (view.ax.xaxis.get_visible() or view.ax.yaxis.get_visible() or view.drawer.cbar.ax.yaxis.get_visible())
    painted = [(t.text, view.texts.text_rect(t).center()) for t in view.texts.texts]
    assert {"layer", "head", "attention weight" + (" (log scale)" if scale == "log" else "")} <= {s for s, _ in painted}
    assert {"L0", "H0", "H11"} <= {s for s, _ in painted}
    expected = matplotlib_text_centres(view)
    assert len(expected) == len(painted), (sorted(s for s, *_ in expected), sorted(s for s, _ in painted))
    for text, x, y in expected:
        near = [c for s, c in painted if s == text and abs(c.x() - x) <= 3 and abs(c.y() - y) <= 3]
        assert near, (text, x, y, [(s, c.x(), c.y()) for s, c in painted if s == text])
    # and the picture shows them: the overlay paints over the canvas
    assert view.texts.isVisible() and view.texts.geometry() == view.canvas.rect()


def test_text_of_log_tick_labels_is_plain_unicode():
    from gui.views.text_overlay import plain_text

    assert plain_text("0.2") == "0.2"
    assert plain_text("") == ""
    assert plain_text("$\\mathdefault{10^{-3}}$") == "10⁻³"
    assert plain_text("$\\mathdefault{10^{0}}$") == "10⁰"
    assert plain_text("$\\mathdefault{2\\times10^{-1}}$") == "2×10⁻¹"
    assert plain_text("$\\mathdefault{10^{12}}$") == "10¹²"


def test_layer_view_marks_the_selected_head_and_has_a_colour_bar(qtbot, gpt2_window):
    win = gpt2_window
    switch_tab(win, "Layer")
    win.select(head=3)
    view = win.layer_view
    mos = view.data.mosaic
    r, c = divmod(3, mos.cols)
    assert view.drawer.marker.get_visible()
    assert view.drawer.marker.get_xy() == (c * (mos.cell[1] + mos.gap) - 0.5, r * (mos.cell[0] + mos.gap) - 0.5)
    assert view.drawer.cbar.ax.get_ylabel() == "attention weight"
    win.agg_check.setChecked(True)  # the aggregate: no single head to mark
    assert not view.drawer.marker.get_visible()
