"""Behaviours pinned down by mutation testing (group E): a model process that ignores SIGTERM is
killed on close, the cached-models list keeps 50 names, the Steps view's bar/row check and its
hatched "future" region, and the Stats view's thinned layer labels."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.cache_scan import cached_hub_models
from analysis.host import Liveness, ModelHost
from analysis.themes import get_theme
from analysis.views.stats import StatsData, StatsDrawer
from analysis.views.steps import StepsData, StepsDrawer

#: keeps a hang from hanging the suite; not a timing assertion
GUARD_S = 60


# --------------------------------------------------------------------------------------------
# host
# --------------------------------------------------------------------------------------------
def test_close_kills_a_model_process_that_ignores_sigterm():
    """Closing the host SIGKILLs a model process that ignores SIGTERM instead of waiting for it forever."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        h = ModelHost(preload=False, liveness=Liveness(term_grace=0.2))
        h._proc = proc  # a child whose connection is already gone
        t = threading.Thread(target=h.close, daemon=True)
        t.start()
        t.join(GUARD_S)
        assert not t.is_alive(), "close() hangs on a process that ignores SIGTERM"
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# --------------------------------------------------------------------------------------------
# cache_scan
# --------------------------------------------------------------------------------------------
def test_cached_hub_models_lists_at_most_50_models(monkeypatch):
    """The cached-models list shows the first 50 model ids (sorted) of a larger cache."""
    repos = [SimpleNamespace(repo_id=f"org/m{i:03d}", repo_type="model") for i in range(60)]
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", lambda: SimpleNamespace(repos=repos))
    assert cached_hub_models() == [f"org/m{i:03d}" for i in range(50)]


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
def _steps(step: int, cross_row, n_src: int = 4, n_dec: int = 5) -> StepsData:
    src = tuple(f"s{i}" for i in range(n_src))
    dec = tuple(f"d{i}" for i in range(n_dec))
    self_row = np.linspace(0.1, 0.5, n_dec)
    return StepsData(step, n_dec, np.asarray(cross_row, dtype=float), self_row, (1.0, 1.0), src, dec,
                     dec[step], "out", (("out", 0.9),), ("a", "b", "c"), "caption", "title")


def test_steps_refuses_a_cross_row_that_does_not_match_the_source_tokens():
    """Drawing a step whose cross-attention row is shorter than the source raises instead of keeping stale bars."""
    drawer = StepsDrawer(Figure(figsize=(9, 7.5)), get_theme("light"))
    drawer.draw(_steps(0, [0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError):
        drawer.draw(_steps(1, [0.5, 0.6, 0.7]))


@pytest.mark.parametrize("step", [0, 2])
def test_steps_future_region_reaches_the_right_edge_of_the_decoder_chart(step):
    """The hatched 'future: masked' region runs from just after step t to the decoder chart's right edge."""
    drawer = StepsDrawer(Figure(figsize=(9, 7.5)), get_theme("light"))
    drawer.draw(_steps(step, [0.1, 0.2, 0.3, 0.4], n_dec=5))
    future = drawer.future
    assert future.get_x() == pytest.approx(step + 0.5)
    assert future.get_x() + future.get_width() == pytest.approx(drawer.ax_self.get_xlim()[1])


# --------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------
def test_stats_labels_every_kth_layer_of_a_deep_model():
    """A deep model's Stats grid labels every k-th layer (L0, Lk, …) at those rows, no more."""
    n_layers = 48
    values = np.linspace(0.0, 1.0, n_layers * 2).reshape(n_layers, 2)
    d = StatsData("attentions", "entropy", values, (), None, "", "t", "")
    drawer = StatsDrawer(Figure(figsize=(5, 4)), get_theme("light"))
    drawer.draw(d)
    ticks = list(drawer.ax.get_yticks())
    labels = [lab.get_text() for lab in drawer.ax.get_yticklabels()]
    k = ticks[1] - ticks[0]
    assert k > 1
    assert ticks == list(range(0, n_layers, int(k)))
    assert labels == [f"L{i}" for i in range(0, n_layers, int(k))]
