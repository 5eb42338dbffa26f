"""Behaviours pinned down by mutation testing (group L, the eighth session's sample, seed 31): a bad
flag's exit status in this process, the model host's liveness check that never runs ``ps``, a hub
model found in the local cache without the network, the mask lab's head beyond the report's heads,
the Steps view's candidate values in the theme's text colour, the model process's command line, the
tokens a view shows as bool masks, the Alignment map after a source without words."""

from __future__ import annotations

import os
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

import analysis.host as host
from analysis import cli
from analysis.themes import get_theme
from analysis.views import DRAWERS, view_data
from analysis.views.masks import _select
from analysis.views.spec import ViewSpec


# --------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------
def test_a_bad_flag_exits_with_the_user_error_status_and_one_line(capsys):
    """argparse's own errors keep the CLI's contract: status 2 (not 0: a script must see the
    failure) and one line on stderr that says where the help is."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--no-such-flag"])
    assert info.value.code == cli.EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == ("error: unrecognized arguments: --no-such-flag; "
                                       "see python main.py --help\n")


# --------------------------------------------------------------------------------------------
# the model host
# --------------------------------------------------------------------------------------------
def test_the_liveness_check_never_runs_ps(without_proc):
    """``pid_alive`` runs for every file of the arena folder when stale ones are swept: without
    ``/proc`` (macOS) it does not start a ``ps`` per file; a process that exists counts as alive."""
    calls = without_proc("Z")
    assert host.pid_alive(os.getpid()) is True
    assert calls == []
    assert host._process_state(os.getpid()) == "Z" and len(calls) == 1  # (the state itself asks ps there)


# --------------------------------------------------------------------------------------------
# the loader
# --------------------------------------------------------------------------------------------
def test_a_hub_model_in_the_local_cache_is_found_without_the_network(tmp_path, monkeypatch):
    """A hub id already downloaded is one offline look-up: the hub is not asked whether it is
    reachable, nothing is downloaded, no "downloading" progress."""
    import huggingface_hub

    import analysis.loader as loader
    from analysis.tasks import TaskState

    snap = tmp_path / "snap"
    snap.mkdir()
    calls: list[dict] = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(dict(kwargs, repo_id=repo_id))
        if not kwargs.get("local_files_only"):
            raise AssertionError("the network was asked for a cached model")
        return str(snap)

    def reachable(timeout=2.0):
        raise AssertionError("the hub was asked whether it is reachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(loader, "hub_reachable", reachable)
    messages: list[str] = []
    assert loader._hub_snapshot("someone/cached", TaskState(lambda s, f, m: messages.append(m))) == snap
    assert [(c["repo_id"], c["local_files_only"]) for c in calls] == [("someone/cached", True)]
    assert messages == []


# --------------------------------------------------------------------------------------------
# the mask lab
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, head, want", [(5, 3, (1, 2)), (1, 4, (1, 2)), (0, 2, (0, 2)), (9, 0, (1, 0))])
def test_the_mask_lab_shows_the_last_layer_and_head_for_a_choice_beyond_the_report(layer, head, want):
    """The window's layer and head come from the capture on screen; a report of fewer layers or
    heads shows its last one rather than failing."""
    arr = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(_select(arr, ViewSpec(view="masks", layer=layer, head=head)), arr[want])


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("theme_name", ["dark", "light"])
def test_steps_candidate_values_are_written_in_the_themes_text_colour(theme_name):
    """The probabilities next to the candidate bars are in the text colour in the window too,
    which draws outside the theme's matplotlib settings (black on the dark theme was unreadable)."""
    from analysis.fonts import ensure_cjk_font
    from tests.test_mutation_found_k import _steps_capture

    ensure_cjk_font()  # the Korean decoder tokens
    theme = get_theme(theme_name)
    cap = _steps_capture((("a", 0.6), ("b", 0.3)))
    drawer = DRAWERS["steps"](Figure(figsize=(9, 7.5)), theme)
    drawer.draw(view_data(cap, ViewSpec(view="steps", step=0)))
    values = [(t.get_text(), t.get_color()) for t in drawer.top_values]
    assert values == [("0.60", theme.text_color), ("0.30", theme.text_color)]


def test_the_check_before_each_call_never_runs_ps(monkeypatch, without_proc):
    """Before every call the host looks whether its idle child was suspended; that look reads
    ``/proc`` only and starts no ``ps`` (without ``/proc`` a suspended child is noticed by the
    liveness check during the call instead), and it does not end a child it cannot see."""
    ended: list = []
    h = host.ModelHost(preload=False)
    monkeypatch.setattr(h, "_proc", SimpleNamespace(poll=lambda: None, pid=os.getpid()))
    monkeypatch.setattr(h, "_end_stuck", lambda proc, why: ended.append(why))
    calls = without_proc("T")
    h._check_idle(uses_model=False)
    assert calls == [] and ended == []


@pytest.mark.parametrize("pdeath", [True, False])
@pytest.mark.parametrize("preload", [True, False])
def test_the_model_process_is_told_its_socket_preload_parent_and_parent_death_signal(monkeypatch, pdeath, preload):
    """The child's command line carries what ``_child_entry`` reads: its socket, whether to
    preload torch, the window's pid, and whether to ask for the parent-death signal."""
    argvs = []

    def spawn(argv, **kwargs):
        argvs.append((argv, kwargs["pass_fds"]))
        raise OSError("not started in this test")

    monkeypatch.setattr(host, "_spawn", spawn)
    h = host.ModelHost(preload=preload, parent_death_signal=pdeath)
    with pytest.raises(host.ModelHostError, match=r"could not start the model process \(not started in this test\)"):
        h.start()
    (argv, fds), = argvs
    assert argv[:3] == [sys.executable, "-c", "from analysis.host import _child_entry; _child_entry()"]
    assert argv[3:] == [str(fds[0]), "1" if preload else "0", str(os.getpid()), "1" if pdeath else "0"]


# --------------------------------------------------------------------------------------------
# the tokens a view shows
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hide_special", [False, True])
def test_the_keep_masks_of_the_tokens_shown_are_bool_masks_that_select_the_shown_tokens(hide_special):
    """``ViewTokens.row_keep`` / ``col_keep`` are bool masks over the original tokens (as
    documented), so that ``arr[..., tok.col_keep]`` keeps the columns shown, with or without
    hidden special tokens."""
    from analysis.result import Capture
    from analysis.views.common import view_tokens
    from tests.test_aggregate import random_stack, token_seq

    names = ["[CLS]", "I", "like", "it", "[SEP]"]
    a = random_stack(np.random.default_rng(1), 1, 2, 5, 5)
    cap = Capture(model="m", kind="encoder", architecture="BertModel", text="I like it",
                  source=token_seq(names, special=[True, False, False, False, True]), stacks={"attentions": a})
    tok = view_tokens(cap, ViewSpec(hide_special=hide_special), "attentions")
    want = [1, 2, 3] if hide_special else [0, 1, 2, 3, 4]
    for keep, idx, labels in ((tok.row_keep, tok.row_idx, tok.rows), (tok.col_keep, tok.col_idx, tok.cols)):
        assert keep.dtype == np.bool_ and keep.shape == (5,)
        assert np.flatnonzero(keep).tolist() == idx.tolist() == want
        assert list(labels) == [names[i] for i in want]
    np.testing.assert_array_equal(a[0, 0][tok.row_keep][:, tok.col_keep], a[0, 0][np.ix_(want, want)])


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------
def test_the_alignment_map_fills_its_axes_after_a_source_without_words():
    """A source of special tokens only (``</s>`` typed into a translator) has no words: its map is
    one blank cell, drawn without warnings. The next sentence drawn in the same tab fills the axes
    from its first column again."""
    from analysis.alignment import AlignmentResult
    from analysis.views.alignment import AlignmentData, AlignmentDrawer

    def data(m, src, tgt):
        return AlignmentData(AlignmentResult(m, (), 0, None), src, tgt, None, 0, None, False, "title", "viridis")

    drawer = AlignmentDrawer(Figure(figsize=(6, 5)), get_theme("light"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "identical low and high xlims" warning
        drawer.draw(data(np.zeros((0, 0)), (), ()))
    assert drawer.ax_heat.get_xlim() == (-0.5, 0.5) and drawer.ax_heat.get_ylim() == (0.5, -0.5)  # one blank cell
    m = np.full((2, 3), 0.25)
    drawer.draw(data(m, ("I", "like", "it"), ("나는", "좋아")))
    assert drawer.ax_heat.get_xlim() == (-0.5, 2.5)
    assert drawer.ax_heat.get_ylim() == (1.5, -0.5)
    assert tuple(drawer.image.get_extent()) == (-0.5, 2.5, 1.5, -0.5)
