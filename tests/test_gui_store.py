"""The window on a long capture stored on disk: it comes from the model process as a store this
window owns, every tab shows it, and the store is removed with the capture."""

from __future__ import annotations

import gc
import os

import pytest

from analysis.store import stores_root
from tests.gui_fixtures import load, run, use_target

TEXT = "The students are reading and writing and thinking about attention heads " * 3


@pytest.fixture(autouse=True)
def stored(tmp_path, monkeypatch):
    """Every capture of these tests is stored (tiny models' maps are far under the size that is)."""
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HEADMAP_STORE", "1")


@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_a_stored_capture_shows_in_every_tab_and_goes_with_its_capture(arch, window, qtbot, tiny_model_dir):
    load(qtbot, window, tiny_model_dir(arch))
    if arch == "marian":
        use_target(window, "Les étudiants lisent")
    cap = run(qtbot, window, TEXT)
    assert cap.stored
    folder = cap.stacks[cap.stack_names[0]].store.path
    assert folder.parent == stores_root() and folder.name.startswith(f"{os.getpid()}-w")
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        qtbot.wait(50)
        assert window.last_error == "", f"tab {window.tabs.tabText(i)}: {window.last_error}"
    cap = run(qtbot, window, "I like this course")
    del cap
    gc.collect()
    qtbot.waitUntil(lambda: not folder.exists(), timeout=10_000)  # the first capture's store is gone
    assert len(os.listdir(stores_root())) == 1  # the one on screen


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setenv("HEADMAP_IN_PROCESS", "1")  # the model in this process: the disk can be faked


def test_a_run_the_disk_has_no_room_for_removes_the_capture_on_screen_first(in_process, window, qtbot,
                                                                              tiny_model_dir, monkeypatch):
    import analysis.store as store_mod

    load(qtbot, window, tiny_model_dir("llama"))
    first = run(qtbot, window, TEXT)
    folder = first.stacks["attentions"].store.path
    size = first.stacks["attentions"].store.nbytes

    def used() -> int:
        return sum(f.stat().st_size for d in stores_root().iterdir() for f in d.iterdir())

    # room for one capture of this size, not two
    monkeypatch.setattr(store_mod, "free_bytes", lambda root=None: store_mod.SPACE_MARGIN + int(1.5 * size) - used())
    window.last_error = ""
    second = run(qtbot, window, TEXT.replace("students", "teachers"))
    assert second is not first and second.stored and not folder.exists()
