"""Behaviours pinned down by mutation testing (group F): beam search stops early, a short Rollout
figure keeps its minimum size, a NaN weight draws no line on a log scale, and per-head lines'
opacity."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis.capture import capture
from analysis.loader import load_model
from analysis.result import Capture
from analysis.themes import get_theme
from analysis.views.lines import LinesData, LinesDrawer, lines_data
from analysis.views.rollout import RolloutData, RolloutDrawer
from analysis.views.spec import ViewSpec
from tests.test_aggregate import token_seq


# --------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------
def test_beam_search_translation_stops_early(tiny_model_dir, monkeypatch):
    """Translating with several beams asks generate for early stopping (greedy decoding does not)."""
    lm = load_model(str(tiny_model_dir("marian")), device="cpu")  # a fresh model: generate is patched
    real = lm.model.generate
    calls: list[dict] = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.model, "generate", recording)
    capture(lm, "I like this course", generate=True, max_new_tokens=4, num_beams=3)
    capture(lm, "I like this course", generate=True, max_new_tokens=4, num_beams=1)
    assert [(c["num_beams"], c["early_stopping"]) for c in calls] == [(3, True), (1, False)]


# --------------------------------------------------------------------------------------------
# rollout
# --------------------------------------------------------------------------------------------
def test_rollout_figure_of_few_tokens_keeps_its_minimum_size():
    """A 3-token Rollout figure is sized from the 4-inch minimum square, not the 14-inch maximum."""
    theme = get_theme("light")
    m = np.full((3, 3), 1 / 3)
    d = RolloutData("rollout", m, ("a", "b", "c"), 0, m[0], False, 0, "share", "title", "")
    w, h = RolloutDrawer.size(d, theme)
    assert w == 4.0 + 2.5
    assert h > 4.0 * 1.45 + 1.5 and h < 14.0 * 1.45


# --------------------------------------------------------------------------------------------
# lines
# --------------------------------------------------------------------------------------------
def test_lines_nan_weight_has_no_strength_on_a_log_scale():
    """On a log colour scale a NaN attention weight gets strength 0 (no line), not full strength."""
    a = np.array([[0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]], np.float32)[None, None].copy()
    a[0, 0, 0, 1] = np.nan
    cap = Capture(model="m", kind="encoder", architecture="BertModel", text="a b c",
                  source=token_seq(["a", "b", "c"], special=[False] * 3), stacks={"attentions": a})
    d = lines_data(cap, ViewSpec(view="lines", layer=0, head=0, scale="log"))
    assert d.strength[0, 0, 1] == 0.0
    assert d.strength[0, 0, 2] > 0.9  # the strongest weight of the map is drawn at full strength


def test_lines_per_head_opacity_is_four_fifths_of_strength():
    """With one colour per head, a line's alpha is 0.8 × its strength."""
    strength = np.zeros((2, 2, 2), np.float32)
    strength[0, 0, 0] = 0.5
    strength[1, 1, 1] = 0.25
    d = LinesData(strength, strength, ("a", "b"), ("a", "b"), "queries", "keys", "title", True)
    drawer = LinesDrawer(Figure(figsize=(6, 4)), get_theme("light"))
    drawer.draw(d)
    assert drawer.n_lines == 2
    alphas = sorted(drawer.lines.get_colors()[:, 3].tolist())
    np.testing.assert_allclose(alphas, [0.2, 0.4], rtol=1e-6)
