"""The Mask lab tab: padding experiment and token masking run in the worker and are drawn."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from tests.gui_fixtures import load, wait_idle

PAIR = "the students in this course are reading a long and interesting book"


def _tab(window):
    for i in range(window.tabs.count()):
        if window.tabs.tabText(i) == "Mask lab":
            window.tabs.setCurrentIndex(i)
            return window.tabs.widget(i)
    raise AssertionError("no Mask lab tab")


def _wait_channel(qtbot, window, channel):
    qtbot.waitUntil(lambda: not window.runner.is_busy(channel), timeout=120_000)


def test_padding_experiment_in_window(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("I like this course")
    load(qtbot, window, tiny_model_dir("gpt2"))
    tab = _tab(window)
    tab.pair.setText(PAIR)
    tab.run_padding()
    _wait_channel(qtbot, window, "masks")
    r = tab.padding_report
    assert r is not None, window.last_error
    assert r.padding_side == "left"  # decoders pad on the left by default
    assert r.pad_attention_max == 0.0
    assert r.masked_attention_max_abs_diff <= 1e-5 < 1e-3 < r.unmasked_attention_max_abs_diff
    text = tab.numbers.text()
    assert window.last_error == ""
    assert "with mask" in text and f"{r.unmasked_attention_max_abs_diff:.2e}" in text
    # the WITH-mask panel shows the sentence row's map: real rows give pad columns exactly zero
    shown = np.asarray(tab.view.drawer.ax_panels[0].images[0].get_array())
    assert np.all(shown[np.ix_(list(r.real_positions), list(r.pad_positions))] == 0.0)
    # switching the padding side re-runs with right padding
    tab.side.setCurrentText("right")
    tab.run_padding()
    _wait_channel(qtbot, window, "masks")
    assert tab.padding_report.padding_side == "right"


def test_token_masking_in_window(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("I like this course")
    load(qtbot, window, tiny_model_dir("bert"))
    wait_idle(qtbot, window)
    tab = _tab(window)
    assert tab.tokens.count() == len(window.capture.source)
    tab.tokens.item(2).setCheckState(Qt.CheckState.Checked)
    assert tab.checked_positions() == [2]
    tab.run_masking()
    _wait_channel(qtbot, window, "masks")
    r = tab.masking_report
    assert r is not None, window.last_error
    assert r.masked_positions == (2,)
    assert r.masked_column_max == 0.0
    after = np.asarray(tab.view.drawer.ax_panels[1].images[0].get_array())
    assert np.all(after[:, 2] == 0.0)
    assert "hidden-state change" in tab.numbers.text()


def test_a_new_run_cancels_the_experiment_and_cancel_stops_it(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("I like this course")
    load(qtbot, window, tiny_model_dir("gpt2"))
    tab = _tab(window)
    tab.pair.setText(PAIR)
    tab.run_padding()
    job = window.runner.current("masks")
    assert job is not None and tab.cancel_btn.isEnabled()
    tab.cancel()  # the tab's own Cancel
    assert not job.running and not window.runner.is_busy("masks") and not tab.cancel_btn.isEnabled()
    tab.run_padding()
    job = window.runner.current("masks")
    window.run()  # a new run supersedes the experiment that would hold the model process
    assert not job.running and not window.runner.is_busy("masks")
    wait_idle(qtbot, window)
    assert window.runner.pool.waitForDone(60_000)
    assert tab.report is None and window.last_error == ""


def test_mask_lab_needs_a_model(qtbot, window):
    tab = _tab(window)
    tab.run_padding()
    assert "load a model first" in window.last_error
