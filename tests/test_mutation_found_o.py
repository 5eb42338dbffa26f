"""Behaviours pinned down by mutation testing (group O, the tenth session's sample, seed 43): a
streamed capture's progress and row checks name what they run, an empty typed target in the mask
lab is refused, the padding job says what it runs, float16 rows of a model on another device are
copied to the CPU, and the statistics map shows every head again after a zoom."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import analysis.capture as cap_mod
from analysis import store as store_mod
from analysis.errors import InputError
from analysis.masks import padding_experiment, padding_job, token_masking
from analysis.tasks import TaskState
from analysis.themes import get_theme
from analysis.views.stats import StatsData, StatsDrawer

TEXT = "I like this course"

pytestmark = pytest.mark.usefixtures("own_cache")


# --------------------------------------------------------------------------------------------
# a streamed (stored) capture
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "marian"])
def test_a_streamed_capture_reports_each_layer_and_checks_each_stacks_rows_by_name(arch, loaded, monkeypatch):
    lm = loaded(arch)
    checked, seen = [], []
    real_check = cap_mod.check_rows

    def check_rows(m, name, layer, architecture):
        checked.append((name, layer))
        real_check(m, name, layer, architecture)

    monkeypatch.setattr(cap_mod, "check_rows", check_rows)
    target = "j'aime ce cours" if arch == "marian" else None
    cap = cap_mod.capture(lm, TEXT, target=target, store=True, task=TaskState(lambda *r: seen.append(r)))
    layers = {name: cap.stacks[name].shape[0] for name in cap.stacks}
    # every layer of every stack checked once, under its own stack's name (the message of a bad row
    # names it)
    assert sorted(checked) == sorted((name, i) for name, n in layers.items() for i in range(n))
    total = sum(layers.values())
    runs = [r for r in seen if r[2].startswith("running the model: layer")]
    assert runs == [("run", pytest.approx(0.1 + 0.85 * i / total), f"running the model: layer {i} of {total}…")
                    for i in range(1, total + 1)]


def test_a_bad_row_of_a_streamed_stack_is_named_by_its_stack(loaded, monkeypatch):
    lm = loaded("marian")
    real_check = cap_mod.check_rows

    def check_rows(m, name, layer, architecture):
        if name == "cross_attentions" and layer == 1:
            m = m * 2  # rows that sum to 2
        real_check(m, name, layer, architecture)

    monkeypatch.setattr(cap_mod, "check_rows", check_rows)
    with pytest.raises(Exception) as err:
        cap_mod.capture(lm, TEXT, target="j'aime ce cours", store=True)
    assert str(err.value).startswith("cross_attentions layer 1: attention rows do not sum to 1 (off by 1")


# --------------------------------------------------------------------------------------------
# the mask lab
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["", "   "])
def test_an_empty_typed_target_is_refused_by_the_mask_lab(loaded, target):
    """An empty target is not "translate it for me" (None is): the lab says what to do."""
    lm = loaded("marian")
    want = "the target is empty; type a target sentence or choose Translate"
    with pytest.raises(InputError, match=f"^{want}$"):
        padding_experiment(lm, TEXT, target=target)
    with pytest.raises(InputError, match=f"^{want}$"):
        token_masking(lm, TEXT, [1], target=target)
    assert padding_experiment(lm, TEXT).target  # None: the sentence's own translation


def test_the_padding_job_says_what_it_runs(loaded):
    seen = []
    report = padding_job(loaded("bert"), TEXT, "", "right", TaskState(lambda *r: seen.append(r)))
    assert seen[0] == ("padding", None, "running the padding experiment (alone, batched with and without the mask)…")
    assert report.padding_side == "right" and len(report.pair_tokens) > len(report.real_positions)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------
def test_rows_of_a_model_on_another_device_are_copied_to_the_cpu():
    """``_torch_half`` moves a GPU chunk to the CPU by the device's name (a stand-in chunk: no GPU here)."""
    rows = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    moved = []

    class OnGpu:
        device = SimpleNamespace(type="cuda")
        shape = rows.shape

        def detach(self):
            return self

        def to(self, device):
            moved.append(device)
            torch.device(device)  # a name torch knows
            return rows

    out = store_mod._torch_half(OnGpu())
    assert moved == ["cpu"]
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, rows.numpy().astype(np.float16))


# --------------------------------------------------------------------------------------------
# the statistics map
# --------------------------------------------------------------------------------------------
def test_the_statistics_map_shows_every_head_again_after_a_zoom():
    fig = Figure(figsize=(6, 4))
    drawer = StatsDrawer(fig, get_theme("light"))
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = StatsData(stack="attentions", stat="entropy", values=values, rows=(), selected=None, undefined="",
                     title="t", cmap_name="")
    drawer.draw(data)
    drawer.ax.set_xlim(1.5, 2.5)  # the reader zoomed in (the toolbar's zoom)
    drawer.ax.set_ylim(1.5, 0.5)
    drawer.draw(data)
    assert drawer.ax.get_xlim() == (-0.5, 3.5)
    assert drawer.ax.get_ylim() == (2.5, -0.5)
