"""Opening sessions in the window: a job off the GUI thread; a hostile or damaged file is one
sentence in a dialog and leaves the current capture, selection and panels as they were."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from analysis import session as session_module
from analysis.session import captures_equal
from gui.actions import saved_selection
from tests.gui_fixtures import open_session
from tests.hostile_sessions import HOSTILE, save
from tests.test_aggregate import make_decoder, make_seq2seq


def _state(win) -> tuple:
    return (win.capture, win.spec, win.input_panel.text.toPlainText(), win.model_panel.reference(),
            win.tabs.currentIndex(), win.tok_label.text())


def test_every_hostile_file_is_a_dialog_and_changes_nothing(qtbot, window, tmp_path):
    good = save(tmp_path, make_seq2seq(), name="good.headmap",
                options={"spec": {"stack": "cross", "layer": 1, "head": 2}, "tab": "Layer"})
    open_session(qtbot, window, good)
    assert captures_equal(window.capture, make_seq2seq())
    assert (window.spec.stack, window.spec.layer, window.spec.head) == ("cross", 1, 2)
    before = _state(window)
    for i, (name, (build, needle)) in enumerate(HOSTILE.items()):
        folder = tmp_path / f"h{i}"
        folder.mkdir()
        path = build(folder)
        open_session(qtbot, window, path, ok=False)
        assert needle in window.last_error, name
        assert window._dialog is not None and window._dialog.isVisible(), name
        assert window._dialog.text() == window.last_error
        assert window.statusBar().currentMessage() == f"Error: {window.last_error}"
        assert _state(window) == before, name  # the same capture object, selection and panels
        window._dialog.close()
    np.testing.assert_array_equal(window.head_view.data.matrix,
                                  make_seq2seq().attention("cross")[1, 2])


def test_a_session_is_read_off_the_gui_thread_with_progress(qtbot, window, tmp_path, monkeypatch):
    path = save(tmp_path, make_decoder())
    threads, messages = [], []
    real = session_module.load_session

    def spy(p, *, task=None):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(p, task=task)

    monkeypatch.setattr(session_module, "load_session", spy)
    window.statusBar().messageChanged.connect(messages.append)
    open_session(qtbot, window, path)
    assert threads == [False]
    assert captures_equal(window.capture, make_decoder())
    assert any(m.startswith(("checking", "reading")) and m.endswith("%") for m in messages), messages
    assert messages[-1].startswith(f"reopened session {path}")


def test_a_newer_open_supersedes_an_older_one(qtbot, window, tmp_path, monkeypatch):
    first, second = save(tmp_path, make_seq2seq(), "first.headmap"), save(tmp_path, make_decoder(), "second.headmap")
    gate = threading.Event()
    real = session_module.load_session

    def slow(p, *, task=None):
        if p.endswith("first.headmap"):
            gate.wait(10)
        return real(p, task=task)

    monkeypatch.setattr(session_module, "load_session", slow)
    job1 = window.open_session(str(first))
    open_session(qtbot, window, second)
    assert not job1.running
    gate.set()
    assert window.runner.pool.waitForDone(10_000)
    qtbot.wait(50)  # the older job's late result would arrive now: it is dropped
    assert captures_equal(window.capture, make_decoder())
    assert window.last_error == ""


@pytest.mark.parametrize(
    "saved, kept",
    [
        ({"layer": 1, "head": None, "hide_special": True, "cmap": "magma"},
         {"layer": 1, "head": None, "hide_special": True, "cmap": "magma"}),
        ({"layer": "1", "head": True, "hide_special": 1, "cmap": 5, "alignment_layer": "x", "residual": 0.25},
         {"residual": 0.25}),
        ({"layer": 7, "stack": "cross", "aggregation": "median", "cmap": "no-such-map", "view": "steps",
          "theme": "dark", "unknown": 1}, {}),
        ([1, 2], {}),
        (None, {}),
    ],
)
def test_only_a_fitting_saved_selection_is_applied(saved, kept):
    assert saved_selection(make_decoder(), saved) == kept
