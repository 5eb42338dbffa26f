"""Soak: 200 captures shown in one window with layer/head/tab switching must not leak.

Run with ``-s`` to see the RSS growth figure.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import psutil

from analysis.aggregate import select_map
from analysis.capture import capture

RUNS = 200
WARM_UP = 20
MAX_GROWTH_MB = 150
TEXTS = (
    "I like this course",
    "The quick brown fox jumps over the lazy dog.",
    "나는 이 강의를 좋아한다",
    "Attention heads show which words matter, and the model looks at every token in the sentence",
)
TABS = ("Head", "Layer", "Model", "Lines")


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def test_soak_200_runs_with_selection_switching(qtbot, window, loaded):
    lm = loaded("gpt2")
    n_layers, n_heads = lm.summary.stacks[0].layers, lm.summary.stacks[0].heads
    start = time.perf_counter()
    before = None
    for i in range(RUNS):
        if i == WARM_UP:
            before = rss_mb()
        text = TEXTS[i % len(TEXTS)]
        cap = capture(lm, text, store_dtype=np.float16)
        window.set_capture(cap)
        layer, head = i % n_layers, (i // n_layers) % n_heads
        # every 10th run visits another view, so every view keeps redrawing new captures
        tab = TABS[(i // 10) % len(TABS)] if i % 10 == 0 else None
        window.select(layer=layer, head=head, tab=tab)
        assert window.capture is cap and (window.spec.layer, window.spec.head) == (layer, head)
        if window.tabs.currentWidget() is window.head_view:
            np.testing.assert_array_equal(window.head_view.data.matrix, select_map(cap, None, layer, head))
        assert window.tokens.columnCount() == len(cap.source)
        if i % 20 == 0:
            qtbot.wait(1)  # let queued paint/resize events through, as a user's event loop would
    after = rss_mb()
    elapsed = time.perf_counter() - start
    growth = after - before
    print(f"soak RSS growth: {growth:.1f} MB ({RUNS - WARM_UP} runs after a warm-up of {WARM_UP}; "
          f"{before:.0f} → {after:.0f} MB, {elapsed:.1f} s)")
    assert growth < MAX_GROWTH_MB
    # the views keep a bounded number of artists (no tick labels or texts piling up)
    assert len(window.layer_view.ax.texts) <= n_heads
    # a label per token on both sides, and the two column titles
    assert len(window.lines_view.ax.texts) <= 2 * max(len(lm.tokenizer(t)["input_ids"]) for t in TEXTS) + 2
    assert len(window.head_view.figure.axes) == 2 and len(window.head_view.ax.images) == 1
    assert len(window.head_view.ax.patches) == 1  # the causal-mask path, updated in place
    assert window.last_error == ""


KILL_EVERY = 20
#: long enough for arrays of at least host.ARRAY_MIN_BYTES: results travel through /dev/shm files
LONG_TEXT = " ".join(["the model looks at every token in the sentence and attention heads show it"] * 8)


def _own_array_files() -> list[str]:
    import os

    from analysis.host import _arena_dir

    return [n for n in os.listdir(_arena_dir()) if n.startswith(f"headmap-{os.getpid()}-")]


def test_soak_200_window_runs_with_a_model_process_kill_every_20(qtbot, window, tiny_model_dir):
    """200 runs through the window's model process; every 20th run the process is killed (SIGKILL,
    alternately while idle and in the middle of a run). Each kill is one sentence, a Load brings
    a fresh process, and at the end the window still works, its memory is flat and no result file
    is left in shared memory."""
    import signal

    from tests.gui_fixtures import load, run, wait_idle

    gpt2 = str(tiny_model_dir("gpt2"))
    window.input_panel.text.setPlainText("")
    load(qtbot, window, gpt2)
    texts = (*TEXTS, LONG_TEXT)
    before = None
    kills = 0
    for i in range(RUNS):
        if i == WARM_UP:
            before = rss_mb()
        if i and i % KILL_EVERY == 0:
            proc = window.host._proc
            window.last_error = ""
            window.input_panel.text.setPlainText(texts[i % len(texts)])
            if kills % 2:  # in the middle of a run (or just after it, when it was that quick)
                window.run()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            wait_idle(qtbot, window)
            if not window.last_error:  # killed while idle: the next run notices it
                window.run()
                wait_idle(qtbot, window)
            # one sentence, also after an idle kill (noticed by the next run)
            assert window.last_error.startswith("the model process stopped unexpectedly (exit code -9"), \
                window.last_error
            assert window.last_error.endswith("load the model again")
            assert window.lm is None and proc.poll() is not None
            window._dialog.close()
            window.input_panel.text.setPlainText("")
            load(qtbot, window, gpt2)  # a fresh process
            assert window.host._proc is not proc
        cap = run(qtbot, window, texts[i % len(texts)])
        layer, head = i % 2, (i // 2) % 4
        window.select(layer=layer, head=head)
        np.testing.assert_array_equal(window.head_view.data.matrix, select_map(cap, None, layer, head))
    wait_idle(qtbot, window)
    growth = rss_mb() - before
    print(f"soak with kills: window RSS growth {growth:.1f} MB over {RUNS - WARM_UP} runs, {kills} kills")
    assert kills == RUNS // KILL_EVERY - 1
    assert growth < MAX_GROWTH_MB
    assert _own_array_files() == []  # nothing left in shared memory
    assert run(qtbot, window, "I like this course").source  # still usable
