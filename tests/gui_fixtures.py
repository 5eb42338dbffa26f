"""Fixtures and helpers for the window tests (pytest-qt, offscreen).

The fixtures are registered once for the whole suite (``pytest_plugins`` in ``tests/conftest.py``):
a test just names ``window``, ``make_window``, ``settings_path``, ``one_torch_thread`` or ``head`` as an
argument. The functions are ``*_fixture`` and pytest finds them under their ``name``, so nothing
imports them. A test module imports only the plain helpers it uses::

    from tests.gui_fixtures import load, run, wait_idle

A module may still define its own ``window`` fixture; pytest prefers the module's.

* ``window`` – a shown :class:`gui.main_window.MainWindow` whose settings live in ``tmp_path``
  (``HEADMAP_SETTINGS`` points there too, and ``HEADMAP_NO_AUTOSTART`` is set). At teardown the
  window is shut down and the test FAILS if any worker outlives it (like napari's conftest).
* ``make_window`` – a factory for more windows on the same settings file (restore tests);
  every window it makes gets the same teardown check.
* ``one_torch_thread`` – torch on one intra-op thread while the test runs (used by the above).
* ``head`` – a shown :class:`gui.views.head.HeadView` of the Head tab's size, without a window.
* ``load`` / ``run`` / ``wait_idle`` – drive the window through its public slots and wait for the
  workers, failing with the window's own error message when something went wrong.
* ``open_session`` – open a ``.headmap`` file as the window does (a job) and wait for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: generous: the first load in a session waits for the model process to import torch and
#: transformers, on a shared 2-core machine
LOAD_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 60_000
SHUTDOWN_TIMEOUT_MS = 30_000


@pytest.fixture(name="one_torch_thread")
def one_torch_thread_fixture():
    """Run torch on one intra-op thread for the test (here and in the window's model process,
    through ``HEADMAP_TORCH_THREADS``), then restore the setting.

    The tiny checkpoints gain nothing from threads, and on a busy shared machine torch's
    spinning intra-op threads make a 20 ms capture take over a second.
    """
    import os

    import torch

    before = torch.get_num_threads()
    env_before = os.environ.get("HEADMAP_TORCH_THREADS")
    torch.set_num_threads(1)
    os.environ["HEADMAP_TORCH_THREADS"] = "1"  # the window's model process, with each call
    yield
    torch.set_num_threads(before)
    if env_before is None:
        os.environ.pop("HEADMAP_TORCH_THREADS", None)
    else:
        os.environ["HEADMAP_TORCH_THREADS"] = env_before


@pytest.fixture(name="head")
def head_fixture(qtbot):
    """A shown HeadView of a realistic size (the window's Head tab is about this big)."""
    from gui.views.head import HeadView

    view = HeadView(theme="light")
    qtbot.addWidget(view)
    view.resize(960, 760)
    view.show()
    qtbot.waitExposed(view)
    return view


@pytest.fixture(name="settings_path")
def settings_path_fixture(tmp_path, monkeypatch) -> Path:
    """A private settings file; the user's settings are never touched."""
    path = tmp_path / "settings.ini"
    monkeypatch.setenv("HEADMAP_SETTINGS", str(path))
    monkeypatch.setenv("HEADMAP_NO_AUTOSTART", "1")
    return path


@pytest.fixture(name="make_window")
def make_window_fixture(qtbot, settings_path, one_torch_thread):
    """Factory ``make_window(theme=None) -> MainWindow`` on the test's settings file."""
    from gui.main_window import MainWindow
    from gui.settings import Settings

    problems: list[str] = []

    def check_workers(win) -> None:
        # pytest-qt calls this before it closes the window, i.e. before the window's own
        # closeEvent waits for the pool: a worker that is still running here is a leak
        if win._dialog is not None:  # a dialog left open must not outlive the test
            win._dialog.close()
        finished = win.shutdown(SHUTDOWN_TIMEOUT_MS)
        qtbot.wait(10)  # queued finished/failed signals of the last jobs arrive (and are dropped)
        active = win.runner.active_count()
        if not finished or active != 0:
            problems.append(f"{win.windowTitle()}: shutdown() returned {finished}, {active} worker(s) still active")

    def make(theme: str | None = None):
        win = MainWindow(settings=Settings(str(settings_path)), theme=theme)
        qtbot.addWidget(win, before_close_func=check_workers)
        win.show()
        qtbot.waitExposed(win)
        return win

    yield make

    # runs after pytest-qt has called check_workers and closed every window
    from gui.theme import apply_qt_theme

    apply_qt_theme("light")  # the theme is application-wide: leave the next test the default
    if problems:
        pytest.fail("a worker outlived its window: " + "; ".join(problems), pytrace=False)


@pytest.fixture(name="window")
def window_fixture(make_window):
    """One shown main window with private settings (see module docstring)."""
    return make_window()


# -- helpers ---------------------------------------------------------------------------------
def is_idle(win) -> bool:
    # a finished run's views are updated one event-loop turn after its result arrives, and drawn
    # in the next one
    return (not win.runner.is_busy("load") and not win.runner.is_busy("run") and not win.runner.is_busy("session")
            and win._incoming is None and not getattr(win.tabs.currentWidget(), "draw_pending", ""))


def wait_idle(qtbot, win, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Wait until no load or run job is current (results are delivered by then)."""
    qtbot.waitUntil(lambda: is_idle(win), timeout=timeout)


def load(qtbot, win, ref, timeout: int = LOAD_TIMEOUT_MS):
    """``win.load_model(ref)`` and wait for the model and, when the editor has text, for the
    automatic run. Returns the window's capture (None when the editor is empty)."""
    ref = str(ref)
    win.last_error = ""
    win.load_model(ref)
    wait_idle(qtbot, win, timeout)
    assert win.last_error == "", f"loading {ref} failed: {win.last_error}"
    assert win.lm is not None and win.lm.reference == ref
    if win.input_panel.text.toPlainText().strip():
        assert win.capture is not None and win.capture.model == ref, "the automatic run after the load did not happen"
    return win.capture


def run(qtbot, win, text: str, timeout: int = RUN_TIMEOUT_MS):
    """Put ``text`` in the editor, ``win.run()`` and wait for its capture; returns it."""
    win.last_error = ""
    got = []
    win.capture_changed.connect(got.append)
    try:
        win.input_panel.text.setPlainText(text)
        win.run()
        wait_idle(qtbot, win, timeout)
    finally:
        win.capture_changed.disconnect(got.append)
    assert win.last_error == "", f"running {text[:40]!r} failed: {win.last_error}"
    assert got, f"running {text[:40]!r} gave no capture"
    assert got[-1] is win.capture
    return win.capture


def use_target(win, target: str) -> None:
    """seq2seq: teacher-force ``target`` instead of generating (fast and deterministic)."""
    win.input_panel.translate.setChecked(False)
    win.input_panel.target.setText(target)


def open_session(qtbot, win, path, timeout: int = RUN_TIMEOUT_MS, ok: bool = True):
    """``win.open_session(path)`` (a job, as File ▸ Open session runs it) and wait until it
    finished or failed. With ``ok``, fail with the window's message unless the session was shown;
    returns the window's capture."""
    win.last_error = ""
    job = win.open_session(str(path))
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)
    if ok:
        assert win.last_error == "", f"opening {path} failed: {win.last_error}"
    return win.capture
