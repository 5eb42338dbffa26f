"""Behaviours pinned down by mutation testing (group O, the tenth session's sample, seed 43; the
model host's own ones are in ``test_gaps_host.py``):

- a streamed capture's progress and row checks name what they run;
- the mask lab refuses an empty typed target; the padding job says what it runs;
- float16 rows of a model on another device are copied to the CPU;
- the statistics map shows every head again after a zoom;
- a CLI session keeps its beam width;
- max-flow problems may come as one pair or a grid of pairs;
- ``ps``'s state letter without its flags;
- the vocabulary is the embedding table's, not the config's number;
- a pooled cell's size at every level; attentions that are not arrays are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import analysis.capture as cap_mod
from analysis import host as host_mod
from analysis import store as store_mod
from analysis.cli import build_parser, run_headless
from analysis.errors import CaptureError, InputError, NoAttentionError
from analysis.masks import padding_experiment, padding_job, token_masking
from analysis.rollout import layered_max_flow
from analysis.session import load_session
from analysis.tasks import TaskState
from analysis.themes import get_theme
from analysis.views.heatmap import pooled_note
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
    with pytest.raises(CaptureError) as err:
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


# --------------------------------------------------------------------------------------------
# the CLI's session (in this process)
# --------------------------------------------------------------------------------------------
def test_a_cli_session_keeps_what_was_typed_and_the_beam_width(tiny_model_dir, tmp_path):
    session = tmp_path / "s.headmap"
    argv = ["--model", str(tiny_model_dir("marian")), "--text", TEXT, "--generate", "--num-beams", "2",
            "--max-new-tokens", "3", "--device", "cpu", "--save-session", str(session)]
    assert run_headless(build_parser().parse_args(argv), lambda *r: None, lambda s: None) == 0
    assert dict(load_session(session).inputs) == {"text": TEXT, "target": None, "generate": True,
                                                 "max_new_tokens": 3, "num_beams": 2}


# --------------------------------------------------------------------------------------------
# attention flow
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_max_flow_problems_may_come_as_one_pair_or_a_grid_of_pairs(layers):
    """Sinks and sources are read flat: a single (sink, source) pair, or a grid of them (every
    pair of two token lists, as ``np.meshgrid`` gives), answer as the same problems listed."""
    rng = np.random.default_rng(3)
    trans = rng.random((layers, 5, 5))
    trans /= trans.sum(-1, keepdims=True)
    listed = layered_max_flow(trans, [0, 1, 2, 3, 4, 4], [4, 3, 2, 1, 0, 4])
    assert layered_max_flow(trans, 2, 2).tolist() == [listed[2]]
    outs, ins = np.meshgrid([0, 4], [1, 3], indexing="ij")
    grid = layered_max_flow(trans, outs, ins)
    assert grid.shape == (4,)
    assert grid.tolist() == layered_max_flow(trans, [0, 0, 4, 4], [1, 3, 1, 3]).tolist()


# --------------------------------------------------------------------------------------------
# the model host's view of a process
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ps_says", ["Ss", "Z+", "Tl", "R<s"])
def test_the_state_ps_reports_is_its_first_letter_without_the_flags(without_proc, ps_says):
    """``ps -o stat=`` prints the state and its flags (``s`` session leader, ``+`` foreground,
    ``l`` threaded, ``<`` high priority): the host compares the state letter alone."""
    calls = without_proc(ps_says)
    assert host_mod._process_state(4321) == ps_says[0]
    assert calls and calls[0][0] == ["ps", "-o", "stat=", "-p", "4321"]


# --------------------------------------------------------------------------------------------
# token ids
# --------------------------------------------------------------------------------------------
def test_the_vocabulary_is_the_embedding_tables_rows_not_the_configs_number():
    """A model whose embeddings were resized (tokens added) without its config saying so: its ids
    are checked against the table it really has."""
    lm = SimpleNamespace(model=SimpleNamespace(get_input_embeddings=lambda: SimpleNamespace(weight=torch.zeros(7, 2))),
                         config=SimpleNamespace(vocab_size=5),
                         tokenizer=SimpleNamespace(convert_ids_to_tokens=lambda i: f"tok{i}"))
    assert cap_mod.vocabulary_size(lm) == 7
    assert cap_mod.check_ids(lm, [0, 5, 6], "the text") is None
    with pytest.raises(CaptureError, match="^the tokenizer turned the text into id 7 .*has only 7 entries"):
        cap_mod.check_ids(lm, [7], "the text")


# --------------------------------------------------------------------------------------------
# a pooled map's colour-bar note
# --------------------------------------------------------------------------------------------
def test_a_pooled_cell_covers_two_to_the_level_tokens_each_way():
    assert pooled_note(0) == ""
    assert [pooled_note(level) for level in (1, 2, 3, 5)] == [
        f"each cell: max of {f}×{f} tokens" for f in (2, 4, 8, 32)]


def test_attentions_that_are_not_arrays_at_all_are_refused_with_the_reason():
    """A remote-code model that returns something else (here: a plain object per layer) in place
    of its attention maps gets Headmap's own message, not a TypeError."""
    with pytest.raises(NoAttentionError) as err:
        cap_mod.stack_attentions((object(), object()), "attentions", "OddModel", None)
    assert str(err.value) == ("OddModel returned attentions of shape (), not one [head, query, key] map per layer; "
                              "its attention is not a query × key map over the tokens, so Headmap cannot show it")
