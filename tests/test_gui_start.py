"""Opening and closing the window (issue 15): the first frame comes before the views, and what is
deferred still happens; closing leaves no model process and no array files behind.

No timings here (they are benchmarks: ``startup_window_ms``, ``quit_ms``); these tests check
what is done and in which order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import headmap
from tests.gui_fixtures import wait_idle

ROOT = Path(__file__).resolve().parent.parent
TEXT = "I like this course"
#: what the window's first frame must not wait for (imported by then: the start is slow again)
HEAVY = ("torch", "transformers", "matplotlib", "huggingface_hub")


def test_the_window_module_imports_none_of_what_only_the_views_and_models_need():
    code = ("import json, sys; import headmap, analysis.cli, gui.main_window, gui.app, gui.probe; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


@pytest.fixture(name="staged")
def staged_fixture(qtbot, settings_path, one_torch_thread):
    """Factory ``staged() -> MainWindow(staged=True)``, shown, views not built yet."""
    from gui.main_window import MainWindow
    from gui.settings import Settings

    def make():
        win = MainWindow(settings=Settings(str(settings_path)), staged=True)
        qtbot.addWidget(win, before_close_func=lambda w: w.shutdown(30_000))
        win.show()
        qtbot.waitExposed(win)
        return win

    return make


def test_a_staged_window_shows_its_panels_and_says_the_views_are_coming(staged):
    from gui.main_window import PREPARING, TAB_NAMES

    win = staged()
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())] == list(TAB_NAMES)
    assert not win.views_built and win.map_views() == ()
    for i, name in enumerate(TAB_NAMES):
        assert win.tabs.widget(i).text() == f"Preparing the {name} view…"
    assert win.statusBar().currentMessage() == PREPARING
    # usable now: the panels, the model list (bundled models), the devices every machine has
    combo = win.model_panel.combo
    assert combo.findText("bundled:minilm") >= 0
    assert [win.model_panel.device.itemText(i) for i in range(win.model_panel.device.count())] == ["auto", "cpu"]
    win.input_panel.text.setPlainText(TEXT)
    assert win.input_panel.inputs()["text"] == TEXT
    win.select(layer=0, head=0, tab="Model")  # the selection and the tabs answer before the views exist
    assert win.tabs.tabText(win.tabs.currentIndex()) == "Model"


def test_the_deferred_start_builds_every_view_fills_the_lists_then_calls_back(staged, qtbot, monkeypatch):
    import analysis.fonts
    import gui.main_window
    from analysis.loader import available_devices
    from gui.main_window import TAB_NAMES
    from gui.tabs.base import StateTab
    from gui.views.head import HeadView
    from gui.views.lines import LinesView
    from gui.views.overview import LayerView, ModelView

    monkeypatch.setattr(gui.main_window, "cached_models", lambda task=None: ["someone/cached-model"])
    fonts: list[bool] = []
    real = analysis.fonts.ensure_cjk_font
    monkeypatch.setattr(analysis.fonts, "ensure_cjk_font", lambda: fonts.append(True) or real())
    win = staged()
    assert fonts == []  # nothing of matplotlib's before the first frame
    win.show_tab("Layer")
    called: list[tuple[str, bool]] = []
    with qtbot.waitSignal(win.views_ready, timeout=120_000):
        win.finish_start(first=lambda: called.append(("first", win.views_built)),
                         then=lambda: called.append(("then", win.views_built)))
    # the first load starts before the views are built (next to them), a session after them; once each
    assert called == [("first", False), ("then", True)]
    assert win.host is None or win.host.alive()  # the model process started with them
    assert win.views_built and win.tabs.count() == len(TAB_NAMES)
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())] == list(TAB_NAMES)
    assert win.tabs.tabText(win.tabs.currentIndex()) == "Layer"  # the tab the user chose stays
    assert [type(v) for v in win.map_views()] == [HeadView, LayerView, ModelView, LinesView]
    for i in range(win.tabs.count()):
        assert isinstance(win.tabs.widget(i), StateTab)
    assert win.extra_tabs == [win.tabs.widget(i) for i in range(4, len(TAB_NAMES))]
    assert win.statusBar().currentMessage() == "Ready. Choose a model and press Load."
    assert win.head_view.actions(), "the arrow keys of the map views"
    assert fonts, "the CJK fallback fonts are registered while the views are prepared"
    # the cached models (a job) and the model process's devices (asked once the views are there)
    combo = win.model_panel.combo
    qtbot.waitUntil(lambda: combo.findText("someone/cached-model") >= 0, timeout=60_000)
    qtbot.waitUntil(lambda: not win.runner.is_busy("devices"), timeout=120_000)
    devices = [win.model_panel.device.itemText(i) for i in range(win.model_panel.device.count())]
    assert devices == available_devices()


def test_a_capture_that_arrives_before_the_views_is_drawn_when_they_are_built(staged, qtbot, loaded):
    win = staged()
    cap = headmap.capture(loaded("bert"), TEXT)
    win.set_capture(cap)  # a run or a session that finished while the views were being prepared
    assert win.capture is cap
    with qtbot.waitSignal(win.views_ready, timeout=120_000):
        win.finish_start()
    wait_idle(qtbot, win)
    assert not win.head_view.empty and win.head_view.data is not None
    assert win.head_view.canvas.isVisible()
    win.show_tab("Model")
    assert not win.model_view.empty and win.model_view.data is not None


def test_settings_problems_are_said_before_the_views_are_ready(staged, settings_path):
    from gui.main_window import PREPARING

    settings_path.write_text("[General]\ntheme=nonsense\n")
    win = staged()
    win.finish_start()
    assert "theme" in win.statusBar().currentMessage()
    assert win.statusBar().currentMessage() != PREPARING


# -- the real application: python main.py ------------------------------------------------------
def _events(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and parts and parts[0] not in out:
                out[parts[0]] = parts[1:]
    return out


def _alive(pid: int) -> bool:
    from analysis.host import _pid_alive

    return _pid_alive(pid)


def test_python_main_opens_loads_runs_and_closes_leaving_nothing_behind(tmp_path, tiny_model_dir):
    """``python main.py --model M --text T`` with fresh settings: the first frame, then the views,
    the load and the run; the window's close (the probe's ``close``, as the close button) saves
    the settings and ends the window and its model process, with no array file left in /dev/shm."""
    model = str(tiny_model_dir("bert"))
    probe = tmp_path / "probe.txt"
    config = tmp_path / "config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HEADMAP_NO_AUTOSTART", "HEADMAP_SETTINGS")}
    env.update(XDG_CONFIG_HOME=str(config), HEADMAP_PROBE=str(probe), QT_QPA_PLATFORM="offscreen",
               HEADMAP_TORCH_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    log = open(tmp_path / "log.txt", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--model", model, "--text", TEXT],
                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while "capture" not in _events(probe):
            assert proc.poll() is None, (tmp_path / "log.txt").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"no capture; the window said {_events(probe)}"
            time.sleep(0.05)
        ev = _events(probe)
        order = sorted(("shown", "ready", "model", "capture"), key=lambda e: float(ev[e][0]))
        assert order[0] == "shown"  # the first frame before anything else
        assert float(ev["ready"][0]) < float(ev["capture"][0])
        child = int(ev["model"][1])
        assert ev["model"][2] == model and child > 0 and _alive(child)
        proc.stdin.write(b"close\n")
        proc.stdin.flush()
        assert proc.wait(120) == 0
        gone = time.monotonic() + 60  # a liveness deadline, not a timing: the process must end
        while _alive(child) and time.monotonic() < gone:
            time.sleep(0.02)
        assert not _alive(child), "the model process outlived its window"
        if os.path.isdir("/dev/shm"):  # headmap-<receiver>-w<writer>-….arrays
            assert [f for f in os.listdir("/dev/shm")
                    if f.startswith(f"headmap-{proc.pid}-") or f"-w{child}-" in f] == []
        assert "closing" in _events(probe)
        conf = (config / "Headmap" / "Headmap.conf").read_text(encoding="utf-8")
        assert f"last_model={model}" in conf and "geometry=" in conf  # the settings were flushed
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        log.close()
