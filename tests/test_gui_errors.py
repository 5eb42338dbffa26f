"""The window under bad input and impatient users: every failure is one sentence in the status bar
and a dialog, the window keeps working, cancelled and superseded jobs leave no trace."""

from __future__ import annotations

import signal

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.gui_fixtures import load, run, wait_idle

TEXT = "I like this course"
OTHER = "The cat sat on the mat"
HANGUL = range(0xAC00, 0xD7A4)


def strip_texts(win) -> list[str]:
    return [win.tokens.item(0, i).text() for i in range(win.tokens.columnCount())]


def assert_error_shown(win, fragment: str) -> None:
    """The error is in ``last_error``, the status bar and an open (non-blocking) dialog."""
    assert fragment in win.last_error, win.last_error
    assert win.statusBar().currentMessage() == f"Error: {win.last_error}"
    assert win._dialog is not None and win._dialog.isVisible()
    assert win._dialog.text() == win.last_error
    assert win.isEnabled()


def settle(qtbot, win) -> None:
    """Wait for every worker, including cancelled/superseded ones, and deliver their signals."""
    assert win.runner.pool.waitForDone(60_000)
    qtbot.wait(50)


# -- bad model references ---------------------------------------------------------------------
BAD_REFS = {
    "hub-offline": ("headmap-test/no-such-model", "is not in the local cache and the hub is unreachable"),
    "missing-folder": ("/nonexistent/headmap/model", "does not exist; check the path"),
    "unknown-bundled": ("bundled:no-such-model", "there is no bundled model called 'no-such-model'"),
    "no-tokenizer": ("broken:no-tokenizer", "has no tokenizer files"),
    "no-config": ("broken:no-config", "has no config.json"),
    "truncated-weights": ("broken:truncated-weights", "are damaged or incomplete"),
    "garbage-weights": ("broken:garbage-weights", "are damaged or incomplete"),
}


@pytest.mark.parametrize("case", list(BAD_REFS))
def test_bad_model_reference_shows_one_sentence_and_the_window_still_works(qtbot, window, broken_dir, tiny_model_dir, case):
    ref, fragment = BAD_REFS[case]
    if ref.startswith("broken:"):
        ref = str(broken_dir(ref.split(":", 1)[1]))
    window.input_panel.text.setPlainText(TEXT)
    window.load_model(ref)
    wait_idle(qtbot, window)
    assert_error_shown(window, fragment)
    if not ref.startswith("bundled:"):
        assert ref in window.last_error  # the message names what the user typed
    assert "\n" not in window.last_error and "Traceback" not in window.last_error
    assert window.lm is None and window.capture is None
    assert window.model_panel.progress.format() == "failed"
    assert window.model_panel.load_btn.isEnabled() and not window.model_panel.cancel_btn.isEnabled()
    if case in ("hub-offline", "garbage-weights"):
        # a good model loads afterwards and its automatic run works
        cap = load(qtbot, window, tiny_model_dir("gpt2"))
        assert cap.text == TEXT and cap.shape() == (2, 4, 4, 4)
        assert window.statusBar().currentMessage().startswith("captured 4 tokens")


def test_remote_code_is_refused_without_trust_and_never_runs(qtbot, window, broken_dir):
    from tests.tiny_models import REMOTE_CODE_MARKER

    folder = broken_dir("remote-code")
    window.load_model(str(folder))
    wait_idle(qtbot, window)
    # refused, and a question names the model and its code files (default: No)
    box = window._dialog
    assert box is not None and box.isVisible() and window.isEnabled()
    assert "needs custom Python code" in box.text() and str(folder) in box.text() and "modeling_custom.py" in box.text()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    assert window.model_panel.progress.format() == "failed"
    box.button(QMessageBox.StandardButton.No).click()
    settle(qtbot, window)
    assert not (folder / REMOTE_CODE_MARKER).exists()
    assert window.lm is None and not window.model_panel.trust.isChecked()


def test_pickle_weights_ask_first_and_load_only_after_yes(qtbot, window, broken_dir):
    folder = str(broken_dir("pickle-only"))
    window.input_panel.text.setPlainText(TEXT)
    window.load_model(folder)
    wait_idle(qtbot, window)
    box = window._dialog
    assert box is not None and box.isVisible() and "pickle" in box.text()
    assert window.last_error == "" and window.lm is None
    box.button(QMessageBox.StandardButton.No).click()
    settle(qtbot, window)
    assert window.lm is None and not window.runner.is_busy("load")

    window.load_model(folder)
    wait_idle(qtbot, window)
    window._dialog.button(QMessageBox.StandardButton.Yes).click()
    wait_idle(qtbot, window)
    assert window.lm is not None and window.lm.reference == folder
    assert window.capture is not None and window.capture.text == TEXT


# -- bad input text -----------------------------------------------------------------------------
def test_run_without_a_model_says_load_first(qtbot, window):
    window.input_panel.text.setPlainText(TEXT)
    window.run()
    assert_error_shown(window, "load a model first")
    assert not window.runner.is_busy("run") and window.capture is None


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_text_is_an_error_not_a_crash(qtbot, window, tiny_model_dir, text):
    window.input_panel.text.setPlainText(TEXT)
    first = load(qtbot, window, tiny_model_dir("gpt2"))
    window.input_panel.text.setPlainText(text)
    qtbot.keyClick(window.input_panel.text, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert_error_shown(window, "the text is empty")
    assert not window.runner.is_busy("run")
    assert window.capture is first  # the last good capture stays on screen
    assert run(qtbot, window, OTHER).text == OTHER


def test_long_text_is_truncated_with_a_note(qtbot, window, tiny_model_dir):
    load(qtbot, window, tiny_model_dir("gpt2"))
    long = ("I like this course very much and " * 400)[:10_000]
    assert len(long) == 10_000
    cap = run(qtbot, window, long)
    assert cap.truncated
    assert len(cap.source) == window.lm.summary.max_positions == 64
    assert cap.shape() == (2, 4, 64, 64)
    assert 0 < len(cap.text) < len(long) and long.startswith(cap.text)
    note = "the text was truncated to 64 tokens"
    assert any(n.startswith(note) for n in cap.notes)
    assert note in window.statusBar().currentMessage()
    assert note in window.output.text()
    assert window.tokens.columnCount() == 64


def test_control_chars_emoji_rtl_and_korean_run_fine(qtbot, window, tiny_model_dir):
    load(qtbot, window, tiny_model_dir("gpt2"))
    text = "Hi\x07\x1b there 😀 שלום עולם مرحبا 나는 이 강의를 좋아한다 \u202e\u200f end"
    cap = run(qtbot, window, text)
    assert cap.text == text and not cap.truncated
    shown = strip_texts(window)
    assert shown == list(cap.source.display)
    hangul = [s for s in shown if any(ord(ch) in HANGUL for ch in s)]
    assert hangul == ["나는", "이", "강의를", "좋아한다"]
    assert "😀" in shown and "ש" in shown and "م" in shown
    # control characters are visible escapes, never raw
    assert "\\x07" in shown and "\\x1b" in shown
    assert not any(ch in s for s in shown for ch in "\x07\x1b")
    # no byte-level stand-ins (Ġ, Ċ, Ã …) leak into what the student reads
    assert not any(ch in "ĠĊ" or 0xC0 <= ord(ch) <= 0xFF for s in shown for ch in s)
    for tab in ("Layer", "Model", "Lines", "Head"):
        window.select(tab=tab)
    assert window.head_view.data.matrix.shape == (len(cap.source), len(cap.source))
    assert window.last_error == ""


def test_hiding_special_tokens_of_an_all_special_capture_says_so(qtbot, window, tiny_model_dir):
    load(qtbot, window, tiny_model_dir("bert"))
    window.hide_special.setChecked(True)
    window.input_panel.text.setPlainText("\x07\x1b")  # BERT's normalizer drops control characters
    window.run()
    wait_idle(qtbot, window)
    cap = window.capture
    assert cap.source.display == ("[CLS]", "[SEP]")
    assert "every token is a special token" in window.last_error  # said at once, on the Head view
    for tab in ("Lines", "Layer", "Model", "Head"):
        window.last_error = ""
        window.select(tab=tab)
        assert "every token is a special token" in window.last_error, tab


# -- cancelling and superseding -------------------------------------------------------------------
def test_cancel_during_load_leaves_no_model_and_no_error(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(TEXT)
    models = []
    window.model_changed.connect(models.append)
    window.load_model(str(tiny_model_dir("llama")))
    assert window.model_panel.cancel_btn.isEnabled()
    qtbot.mouseClick(window.model_panel.cancel_btn, Qt.MouseButton.LeftButton)
    assert not window.runner.is_busy("load")
    assert window.statusBar().currentMessage() == "cancelled"
    settle(qtbot, window)
    assert window.lm is None and models == [] and window.capture is None
    assert window.last_error == "" and window._dialog is None  # a cancel is not an error
    assert window.model_panel.progress.format() == "cancelled"
    assert not window.model_panel.cancel_btn.isEnabled()
    # and the window still loads and runs
    assert load(qtbot, window, tiny_model_dir("gpt2")).text == TEXT


def test_cancel_while_the_loader_is_reporting_progress(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText("")
    stages = []

    def on_progress(stage, _fraction, _message):
        stages.append(stage)
        if stage == "load":
            window.cancel()

    window.load_model(str(tiny_model_dir("bart")))
    window.runner.current("load").progress.connect(on_progress)
    settle(qtbot, window)
    assert "load" in stages and "ready" not in stages
    assert window.lm is None and window.last_error == "" and window._dialog is None


@pytest.mark.bundled
def test_cancel_loading_the_bundled_smollm2(qtbot, window):
    window.load_model("bundled:smollm2")
    window.cancel()
    settle(qtbot, window)
    assert window.lm is None and window.last_error == "" and window._dialog is None
    assert window.statusBar().currentMessage() == "cancelled"


def test_cancel_with_nothing_running(qtbot, window):
    window.cancel()
    assert window.statusBar().currentMessage() == "nothing to cancel"
    assert window.last_error == ""


def test_a_second_run_supersedes_the_first(qtbot, window, tiny_model_dir):
    load(qtbot, window, tiny_model_dir("gpt2"))
    caps = []
    window.capture_changed.connect(caps.append)
    window.input_panel.text.setPlainText(TEXT)
    window.run()
    window.input_panel.text.setPlainText(OTHER)
    window.run()
    wait_idle(qtbot, window)
    settle(qtbot, window)  # the first run's late result arrives now, and must be dropped
    assert [c.text for c in caps] == [OTHER]
    assert window.capture.text == OTHER
    assert strip_texts(window) == list(window.capture.source.display)
    assert window.last_error == ""


def test_run_while_loading_runs_when_the_model_is_ready(qtbot, window, tiny_model_dir):
    window.input_panel.text.setPlainText(OTHER)
    caps = []
    window.capture_changed.connect(caps.append)
    window.load_model(str(tiny_model_dir("gpt2")))
    window.run()
    assert window.statusBar().currentMessage() == "the model is still loading; the run starts when it is ready"
    assert window.capture is None and window.last_error == ""
    wait_idle(qtbot, window)
    settle(qtbot, window)
    assert [c.text for c in caps] == [OTHER]  # one run, after the load
    assert window.lm.reference == window.capture.model


def test_loading_another_model_cancels_the_running_capture(qtbot, window, tiny_model_dir):
    gpt2, bert = str(tiny_model_dir("gpt2")), str(tiny_model_dir("bert"))
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, gpt2)
    caps = []
    window.capture_changed.connect(caps.append)
    window.input_panel.text.setPlainText(OTHER)
    window.run()
    assert window.runner.is_busy("run")
    window.load_model(bert)
    assert not window.runner.is_busy("run")
    assert window.statusBar().currentMessage() == "the running capture was cancelled: a new model is loading"
    wait_idle(qtbot, window)
    settle(qtbot, window)
    assert window.lm.reference == bert and window.last_error == ""
    # only the new model's automatic run reached the views
    assert [(c.model, c.text) for c in caps] == [(bert, OTHER)]
    assert window.capture.kind == "encoder"
    assert strip_texts(window)[0] == "[CLS]"


def test_loading_twice_keeps_only_the_second_model(qtbot, window, tiny_model_dir):
    gpt2, bert = str(tiny_model_dir("gpt2")), str(tiny_model_dir("bert"))
    models = []
    window.model_changed.connect(models.append)
    window.input_panel.text.setPlainText(TEXT)
    window.load_model(gpt2)
    window.load_model(bert)
    wait_idle(qtbot, window)
    settle(qtbot, window)
    assert [m.reference for m in models] == [bert]
    assert window.lm.reference == bert and window.capture.model == bert


# -- a model process that stops answering ------------------------------------------------------
STUCK_WAIT_MS = 120_000  # a guard against a hang, never a timing assertion


def _stop_model_process(window):
    """SIGSTOP the window's model process (our own child); returns its Popen to clean up."""
    proc = window.host._proc
    assert proc is not None and proc.poll() is None
    proc.send_signal(signal.SIGSTOP)
    return proc


def _reap(proc) -> None:
    if proc.poll() is None:  # only when the test failed: nothing may outlive it
        proc.kill()
        proc.wait()


def test_a_stopped_model_process_is_one_sentence_the_model_is_dropped_and_load_works(qtbot, window, tiny_model_dir):
    gpt2 = str(tiny_model_dir("gpt2"))
    window.input_panel.text.setPlainText("")
    load(qtbot, window, gpt2)
    proc = _stop_model_process(window)
    try:
        window.input_panel.text.setPlainText(TEXT)
        window.run()
        qtbot.waitUntil(lambda: not window.runner.is_busy("run"), timeout=STUCK_WAIT_MS)
        qtbot.waitUntil(lambda: window.last_error != "", timeout=STUCK_WAIT_MS)
        assert_error_shown(window, "the model process stopped answering")
        assert window.last_error.endswith("; it was ended — load the model again")
        assert proc.poll() is not None
        assert window.lm is None and "No model loaded." in window.model_panel.loaded.text()
        window._dialog.close()
        window.run()  # no model any more: Run says to load one
        assert_error_shown(window, "load a model first")
        window._dialog.close()
        assert load(qtbot, window, gpt2).text == TEXT  # a fresh process
        assert window.host._proc is not proc
    finally:
        _reap(proc)


def test_cancel_of_a_run_whose_model_process_is_stopped_ends_it_and_says_so(qtbot, window, tiny_model_dir):
    gpt2 = str(tiny_model_dir("gpt2"))
    window.input_panel.text.setPlainText("")
    load(qtbot, window, gpt2)
    proc = _stop_model_process(window)
    try:
        window.input_panel.text.setPlainText(TEXT)
        window.run()
        # Cancel once the run waits on the stopped process (a cancel before that never reaches it)
        qtbot.waitUntil(lambda: window.host.job_in_flight is not None, timeout=STUCK_WAIT_MS)
        window.cancel()
        assert window.statusBar().currentMessage() == "cancelled"
        qtbot.waitUntil(lambda: window.lm is None, timeout=STUCK_WAIT_MS)
        assert window.statusBar().currentMessage().endswith("; it was ended — load the model again")
        assert window.last_error == "" and window._dialog is None  # a cancel is not an error
        settle(qtbot, window)
        assert proc.poll() is not None
        assert load(qtbot, window, gpt2).text == TEXT
    finally:
        _reap(proc)


# -- trust remote code ------------------------------------------------------------------------------
def test_trust_remote_code_asks_naming_the_repo_and_no_keeps_it_off(qtbot, window):
    repo = "acme-research/custom-attention-model"
    window.model_panel.set_reference(repo)
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    box = window._dialog
    assert box is not None and box.isVisible()
    assert repo in box.text()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    box.button(QMessageBox.StandardButton.No).click()
    qtbot.wait(10)
    assert not window.model_panel.trust.isChecked()

    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    window._dialog.button(QMessageBox.StandardButton.Yes).click()
    qtbot.wait(10)
    assert window.model_panel.trust.isChecked()
    # switching it off asks nothing
    dialog = window._dialog
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    assert not window.model_panel.trust.isChecked() and window._dialog is dialog and not dialog.isVisible()
