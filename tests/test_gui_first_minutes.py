"""The first ten minutes (issue 18): empty and failed states, themes, keys, the token legend, fit,
opening things by drag and drop or from File ▸ Open recent."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QAction, QDropEvent, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox

from analysis.themes import get_theme
from tests.gui_fixtures import load, open_session, run, use_target, wait_idle

TEXT = "I like this course"


def tab(win, name: str):
    win.show_tab(name)
    return win.tabs.currentWidget()


def map_views(win):
    return (win.head_view, win.layer_view, win.model_view, win.lines_view)


# -- 1. empty state ----------------------------------------------------------------------------
def test_views_say_in_words_what_to_do_before_anything_is_loaded(qtbot, window):
    for view in map_views(window):
        window.show_tab({window.head_view: "Head", window.layer_view: "Layer", window.model_view: "Model",
                         window.lines_view: "Lines"}[view])
        assert view.empty and view.empty_label.isVisible() and not view.canvas.isVisible()
        assert "Load a model" in view.empty_label.text() and "Ctrl+Enter" in view.empty_label.text()
    stats = tab(window, "Statistics")
    assert stats.grid.empty and "Load a model" in stats.grid.empty_label.text()
    rollout = tab(window, "Rollout")
    assert not rollout.view.isVisible() and "Load a model" in rollout.message.text()
    compare = tab(window, "Compare")
    assert "Load a model" in compare.message.text()
    for name in ("Alignment", "Steps"):
        assert "Load a model" in tab(window, name).message.text()
    assert window.last_error == "" and window._dialog is None


def test_after_a_load_the_words_ask_for_a_sentence_then_the_map_shows(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("")
    load(qtbot, window, tiny_model_dir("bert"))
    window.show_tab("Head")
    assert window.head_view.empty and "Type a sentence" in window.head_view.empty_label.text()
    run(qtbot, window, TEXT)
    assert not window.head_view.empty and window.head_view.canvas.isVisible()


def test_a_missing_last_model_is_a_line_in_the_panel_not_a_dialog(qtbot, make_window, settings_path):
    from gui.settings import Settings

    s = Settings(str(settings_path))
    s.setValue("last_model", "/nonexistent/headmap/last-model")
    s.sync()
    win = make_window()
    assert win.model_panel.reference() == "/nonexistent/headmap/last-model"
    win.autostart()
    qtbot.waitUntil(lambda: "could not be opened" in win.model_panel.loaded.text(), timeout=60_000)
    wait_idle(qtbot, win)
    assert win._dialog is None and win.last_error == ""
    assert "/nonexistent/headmap/last-model" in win.model_panel.loaded.text()
    assert "No model loaded" in win.model_panel.loaded.text()
    assert "could not be opened" in win.statusBar().currentMessage()


# -- 2. a failed load ---------------------------------------------------------------------------
def test_after_a_failed_load_the_panel_and_the_box_name_the_model_still_loaded(qtbot, window, tiny_model_dir):
    bert = str(tiny_model_dir("bert"))
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, bert)
    assert f"Loaded: <b>{bert}</b>" in window.model_panel.loaded.text()
    window.model_panel.set_reference("/nonexistent/model")
    window.load_model()
    wait_idle(qtbot, window)
    assert "does not exist" in window.last_error  # the failure is said, once
    assert window.model_panel.reference() == bert  # the box shows what Run will use
    assert bert in window.model_panel.loaded.text() and "/nonexistent/model could not be loaded" in \
        window.model_panel.loaded.text()
    window._dialog.close()
    run(qtbot, window, "the cat sat")
    assert window.statusBar().currentMessage().startswith(f"captured 5 tokens with {bert} ·")


# -- 4. themes -----------------------------------------------------------------------------------
def test_presentation_theme_keeps_tokens_and_boxes_readable(qtbot, window, tiny_model_dir):
    use_target(window, "j'aime ce cours")
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("marian"))
    window.theme_combo.setCurrentText("presentation")
    qtbot.wait(50)
    for strip in (window.tokens, window.dec_tokens):
        fm = strip.fontMetrics()
        for r in range(strip.rowCount()):
            for c in range(strip.columnCount()):
                item = strip.item(r, c)
                assert fm.horizontalAdvance(item.text()) <= strip.columnWidth(c), (r, c, item.text())
        rows = sum(strip.rowHeight(r) for r in range(strip.rowCount()))
        assert strip.height() >= rows + strip.horizontalHeader().height()  # every row, "predicts" included
    combo = window.model_panel.device
    assert combo.width() >= combo.fontMetrics().horizontalAdvance(combo.currentText())
    # the figures' fonts follow: axis titles grow with the tick labels
    theme = get_theme("presentation")
    assert window.head_view.ax.xaxis.label.get_fontsize() == pytest.approx(theme.base_size)
    window.theme_combo.setCurrentText("light")


def test_dark_theme_frames_are_visible_and_red_is_for_errors(qtbot, window):
    window.theme_combo.setCurrentText("dark")
    pal = QApplication.palette()
    dark = get_theme("dark").qt_palette
    assert pal.color(QPalette.ColorRole.Mid).name() == dark["mid"]
    # a check box frame stands out from the field it is drawn on
    assert abs(pal.color(QPalette.ColorRole.Mid).lightness() - pal.color(QPalette.ColorRole.Base).lightness()) > 60
    window.theme_combo.setCurrentText("light")
    for name in ("Rollout", "Compare"):
        assert "#c0392b" not in tab(window, name).message.styleSheet()


# -- 5. keys and hover ------------------------------------------------------------------------------
def test_a_clicked_cell_is_named_like_the_hover_and_follows_the_keys(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("gpt2"))
    window.show_tab("Head")
    view = window.head_view
    view.redraw()
    x, y = view.ax.transData.transform((1, 3))  # column 1, row 3
    ratio = view.canvas.device_pixel_ratio
    pos = QPoint(int(round(x / ratio)), int(round((view.figure.bbox.height - y) / ratio)))
    qtbot.mouseClick(view.canvas, Qt.MouseButton.LeftButton, pos=pos)
    assert view.selected_cell == (3, 1)
    d = view.data
    want = f"{d.row_labels[3]} → {d.col_labels[1]}: {float(d.matrix[3, 1]):.4f}"
    assert window.statusBar().currentMessage() == f"layer 0, head 0 · {want}"
    window.step("head", 1)
    d = view.data
    assert window.statusBar().currentMessage() == \
        f"layer 0, head 1 · {d.row_labels[3]} → {d.col_labels[1]}: {float(d.matrix[3, 1]):.4f}"


def test_help_keys_lists_every_shortcut(qtbot, window):
    window.show_keys()
    box = window._dialog
    assert isinstance(box, QMessageBox) and box.isVisible()
    text = box.text()
    shortcuts = {seq.toString(QKeySequence.SequenceFormat.NativeText)
                 for a in window.findChildren(QAction) for seq in a.shortcuts()}
    assert shortcuts and all(s in text for s in shortcuts if s)
    for needed in ("Ctrl+Return", "Ctrl+E", "Alt+Up", "Left / Right"):
        assert needed in text, needed


# -- 6. token legend ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch, mark, absent", [("bert", "##", "◌"), ("gpt2", "◌", "##"), ("marian", "▁", "##")])
def test_the_token_legend_explains_the_loaded_tokenizer_only(qtbot, window, tiny_model_dir, arch, mark, absent):
    if arch == "marian":
        use_target(window, "j'aime ce cours")
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir(arch))
    legend = window.tok_label.text()
    assert mark in legend and absent not in legend


def test_the_legend_of_a_reopened_session_comes_from_its_tokens(qtbot, window, make_window, tiny_model_dir,
                                                               tmp_path):
    window.input_panel.text.setPlainText("나는 이 강의를 좋아한다")
    load(qtbot, window, tiny_model_dir("gpt2"))
    path = tmp_path / "s.headmap"
    window.save_session_to(str(path))
    other = make_window()
    open_session(qtbot, other, path)
    assert "◌" in other.tok_label.text() and "##" not in other.tok_label.text()


# -- 7. fit -------------------------------------------------------------------------------------
def test_head_view_cells_are_square_unless_stretched(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("the cat sat on the mat because it was warm")
    load(qtbot, window, tiny_model_dir("gpt2"))
    window.show_tab("Head")
    view = window.head_view
    q, k = view.data.matrix.shape
    box = view.ax.get_window_extent()
    assert box.width / k == pytest.approx(box.height / q, abs=1.0)
    window.stretch.setChecked(True)
    box = view.ax.get_window_extent()
    assert abs(box.width / k - box.height / q) > 1.0  # the wide canvas stretches the cells again
    window.stretch.setChecked(False)


def test_the_first_start_fits_the_screen(qtbot, window):
    from gui.main_window import first_size

    avail = window.screen().availableGeometry()
    w, h = first_size(avail)
    assert w <= avail.width() and h <= avail.height()
    assert first_size(None) == (1400, 860)


# -- 8. opening things -----------------------------------------------------------------------------
def drop(win, path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    win.dropEvent(event)


def test_drop_a_checkpoint_folder_or_a_session_to_open_it(qtbot, window, make_window, tiny_model_dir, tmp_path):
    folder = tiny_model_dir("bert")
    window.input_panel.text.setPlainText(TEXT)
    drop(window, folder)
    wait_idle(qtbot, window, 120_000)
    assert window.lm is not None and window.lm.reference == str(folder)
    path = tmp_path / "lesson.headmap"
    window.save_session_to(str(path))
    other = make_window()
    drop(other, path)
    wait_idle(qtbot, other)
    assert other.last_error == ""
    assert other.capture is not None and other.capture.text == window.capture.text
    # anything else is one sentence
    junk = tmp_path / "notes.txt"
    junk.write_text("x")
    drop(other, junk)
    assert "not a checkpoint folder, a .gguf model or a .headmap session" in other.last_error


def test_open_recent_lists_models_and_sessions(qtbot, window, tiny_model_dir, tmp_path):
    folder = str(tiny_model_dir("bert"))
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, folder)
    path = tmp_path / "lesson.headmap"
    window.save_session_to(str(path))
    window._fill_recent()
    texts = [a.text() for a in window.recent_menu.actions() if not a.isSeparator()]
    assert f"model: {folder}" in texts and f"session: {path}" in texts
    before = window.capture
    [a for a in window.recent_menu.actions() if a.text() == f"session: {path}"][0].trigger()
    wait_idle(qtbot, window)
    assert window.last_error == ""
    assert window.capture is not before and np.array_equal(window.capture.stacks["attentions"],
                                                           before.stacks["attentions"])


# -- 9. views that explain themselves -----------------------------------------------------------------
def test_every_view_has_its_caption_and_the_toggle_hides_them(qtbot, window, tiny_model_dir, tmp_path):
    from analysis.views.captions import view_caption

    use_target(window, "j'aime ce cours")
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("marian"))
    assert window.captions_action.isChecked() and window.spec.caption
    canvases = {"Head": window.head_view, "Layer": window.layer_view, "Model": window.model_view,
                "Lines": window.lines_view}
    for name, view in canvases.items():
        window.show_tab(name)
        spec = window.state.spec_for(view.figure_view)
        assert view.caption_label.isVisible()
        assert view.caption_label.text() == view_caption(window.capture, spec)
    for name in ("Alignment", "Steps", "Statistics"):
        t = tab(window, name)
        qtbot.waitUntil(lambda t=t: t.view.caption_label.text() != "", timeout=60_000)
        assert t.view.caption_label.isVisible() and "row" in t.view.caption_label.text()
    # the export of a tab carries the caption the tab shows
    window.show_tab("Head")
    fig = window.actions.build_figure()
    (caption,) = [t for t in fig.texts if t.get_gid() == "caption"]
    assert " ".join(caption.get_text().split()) == " ".join(window.head_view.caption_label.text().split())
    # Show captions off: none in the window, none in the export
    window.captions_action.trigger()
    assert not window.spec.caption and not window.head_view.caption_label.isVisible()
    assert not [t for t in window.actions.build_figure().texts if t.get_gid() == "caption"]
    window.show_tab("Layer")
    assert not window.layer_view.caption_label.isVisible()
