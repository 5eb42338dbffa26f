"""Behaviours pinned down by mutation testing (group D): config names read for layers and positions,
the exception type in a failed load's message, the mask lab's Δ scale and strip labels, Compare's
layer check and colour-bar label, and the Stats view's colour range."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis import loader
from analysis.errors import InputError, ModelLoadError
from analysis.loader import StackInfo, max_positions, stack_infos
from analysis.result import Capture
from analysis.themes import get_theme
from analysis.views.compare import CompareDrawer, compare_data
from analysis.views.masks import MaskPanel, MasksData, MasksDrawer
from analysis.views.spec import ViewInputs, ViewSpec
from analysis.views.stats import StatsData, StatsDrawer
from tests.test_aggregate import random_stack, token_seq


# --------------------------------------------------------------------------------------------
# loader
# --------------------------------------------------------------------------------------------
def test_layers_are_read_from_an_n_layers_config():
    """A config naming its depth only ``n_layers`` gives that many layers."""
    cfg = SimpleNamespace(n_layers=5, n_heads=3)
    assert stack_infos(cfg, "decoder") == (StackInfo("attentions", 5, 3),)


def test_max_positions_reads_max_position_embeddings():
    """A config with only ``max_position_embeddings`` bounds the input to it."""
    assert max_positions(SimpleNamespace(max_position_embeddings=128)) == 128


def test_a_failed_load_names_the_exception_type(tmp_path, monkeypatch):
    """A checkpoint that fails for an unrecognised reason says which exception was raised."""
    class Failing:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise KeyError("some_weird_key")

    monkeypatch.setattr(loader, "_auto_class", lambda kind, config: Failing)
    with pytest.raises(ModelLoadError, match=r"could not be loaded \(KeyError: 'some_weird_key'\)"):
        loader._read_weights("my/model", tmp_path, "encoder", None, None, False, device_map=False)


# --------------------------------------------------------------------------------------------
# mask lab
# --------------------------------------------------------------------------------------------
def _masks(delta: np.ndarray, n_strip: int = 4) -> MasksData:
    toks = tuple(f"t{i}" for i in range(n_strip))
    rows = tuple(f"r{i}" for i in range(delta.shape[0]))
    cols = tuple(f"c{i}" for i in range(delta.shape[1]))
    unit = np.full(delta.shape, 0.5, np.float32)
    panels = (MaskPanel(unit, rows, cols, "before", False, ()), MaskPanel(unit, rows, cols, "after", False, ()),
              MaskPanel(delta, rows, cols, "Δ", True, ()))
    return MasksData("tokens", "attentions", np.ones((1, n_strip)), ("mask",), toks, "strip", panels, ("n",), "t")


def test_mask_lab_delta_scale_is_symmetric_around_zero():
    """The Δ map and its colour bar run from −max|Δ| to +max|Δ|, white at 0."""
    delta = np.array([[-0.1, 0.5], [0.2, 0.0]], np.float32)
    drawer = MasksDrawer(Figure(figsize=(12, 6)), get_theme("light"))
    drawer.draw(_masks(delta))
    norm = drawer.ax_panels[2].images[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((-0.5, 0.5))
    assert float(norm(0.0)) == pytest.approx(0.5)
    assert (drawer.delta.norm.vmin, drawer.delta.norm.vmax) == pytest.approx((-0.5, 0.5))


def test_mask_strip_labels_every_other_token_past_twelve_inches():
    """95 strip tokens at 8 pt: more than 12 inches hold, so every other one is labelled."""
    theme = get_theme("light")
    assert theme.tick_size == 8.0
    drawer = MasksDrawer(Figure(figsize=(12, 6)), theme)
    drawer.draw(_masks(np.zeros((2, 2), np.float32), n_strip=95))
    labels = [t.get_text() for t in drawer.ax_mask.get_xticklabels()]
    assert labels == [f"t{i}" for i in range(0, 95, 2)]


# --------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------
def _cap(layers: int, seed: int) -> Capture:
    a = random_stack(np.random.default_rng(seed), layers, 2, 4, 4)
    src = token_seq(["[CLS]", "a", "b", "[SEP]"], special=[True, False, False, True])
    return Capture(model=f"m{seed}", kind="encoder", architecture="BertModel", text="a b", source=src,
                   stacks={"attentions": a})


def test_compare_refuses_a_layer_just_past_a():
    """Compare at B's layer equal to A's layer count says that layer exists only in B."""
    a, b = _cap(2, 0), _cap(3, 1)
    with pytest.raises(InputError, match="A has 2 layers × 2 heads, so layer 2, head 0 exists only in B"):
        compare_data(b, ViewSpec(view="compare", layer=2), ViewInputs(compare_with=a))


def test_compare_colour_bar_is_labelled_attention_weight():
    """The A | B colour bar is labelled 'attention weight'."""
    a, b = _cap(2, 0), _cap(2, 1)
    d = compare_data(b, ViewSpec(view="compare", layer=1, head=0), ViewInputs(compare_with=a))
    drawer = CompareDrawer(Figure(figsize=(12, 5)), get_theme("light"))
    drawer.draw(d)
    assert drawer.cbar_ab.ax.get_ylabel() == "attention weight"


# --------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------
def test_stats_colour_range_spans_the_values():
    """The Stats view's colours (and colour bar) run from the smallest to the largest value."""
    values = np.array([[0.2, 0.9], [0.4, np.nan]])
    d = StatsData("attentions", "entropy", values, (), (0, 0), "", "t", "")
    drawer = StatsDrawer(Figure(figsize=(5, 4)), get_theme("light"))
    drawer.draw(d)
    assert (drawer.image.norm.vmin, drawer.image.norm.vmax) == pytest.approx((0.2, 0.9))
