"""Behaviours no test reached (group I, sixth session).

mutmut's statistics run records which tests call each function of ``analysis/``; 33 functions were
called by none. Those that run in the model process are now tested in ``tests/test_host_child.py``;
the rest are here: a drawer switched to another theme, a store of maps that are not probabilities
(negative or infinite weights: the float path of its levels and ranges), a streaming plan whose
layers come partly from the attention function and partly from hooks, the model process's thread
count and quiet set-up.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from types import SimpleNamespace

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.fonts import ensure_cjk_font
from analysis.pyramid import pool
from analysis.themes import apply_theme, get_theme
from analysis.views import DRAWERS, view_data
from analysis.views.spec import for_spec
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq
from tests.test_figure_geometry_golden import signature
from tests.test_quiet import applicable


# --------------------------------------------------------------------------------------------
# drawers: a theme switched in place
# --------------------------------------------------------------------------------------------
def _drawn(view, data_before, data_after, first: str, then: str) -> dict:
    """A drawer made for ``first``, drawn, switched to ``then`` and drawn again (as the window's
    head and overview tabs do); ``first == then``: one new drawer of that theme."""
    fig = Figure(figsize=DRAWERS[view].size(data_after, get_theme(then)), layout="constrained")
    drawer = DRAWERS[view](fig, get_theme(first))
    if first != then:
        with mpl.rc_context(get_theme(first).rc()):
            drawer.draw(data_before)
        drawer.set_theme(get_theme(then))
    with mpl.rc_context(get_theme(then).rc()):
        drawer.draw(data_after)
    return signature(apply_theme(fig, get_theme(then)))


def _themed_cases():
    for cap in (make_encoder(), make_decoder(), make_seq2seq()):
        for spec, inputs in applicable(cap, None):
            if spec.view == "masks":  # needs a real model's padding report: tests/test_gui_mask_lab.py
                continue
            yield pytest.param(cap, spec, inputs, id=f"{cap.kind}-{spec.view}")


@pytest.mark.parametrize(("cap", "spec", "inputs"), list(_themed_cases()))
@pytest.mark.parametrize(("first", "then"), [("light", "dark"), ("dark", "presentation")])
def test_a_drawer_switched_to_another_theme_draws_what_a_new_one_would(cap, spec, inputs, first, then):
    """Every drawer keeps its artists between draws; after ``set_theme`` the next draw must look
    exactly as a new drawer of that theme draws it (colours, sizes of text, bars and labels)."""
    def data(theme):
        s = replace(spec, theme=theme)
        c, i = for_spec(cap, s, inputs)
        return view_data(c, s, i)

    ensure_cjk_font()
    switched = _drawn(spec.view, data(first), data(then), first, then)
    fresh = _drawn(spec.view, None, data(then), then, then)
    assert switched == fresh


# --------------------------------------------------------------------------------------------
# store: maps that are not probabilities
# --------------------------------------------------------------------------------------------
def test_a_store_of_maps_with_negative_or_infinite_values_keeps_their_levels_and_ranges():
    """Raw scores, not softmax weights: a negative or infinite value cannot be pooled as bit
    patterns; the levels are the maxima of the values and each map's minimum, maximum and smallest
    positive value are the values' own."""
    from analysis.store import write_stacks

    rng = np.random.default_rng(11)
    arr = rng.random((2, 3, 300, 300)).astype(np.float16)
    arr[0, 1, 5, 7] = -0.75  # a negative value: the float path for the whole layer
    arr[1, 0, 200, 3] = np.inf  # an infinite one in the other layer
    arr[1, 2] = 0.0
    arr[1, 2, 10, 10] = -2.0  # a map of no positive value
    stack = write_stacks({"attentions": arr}).stacks["attentions"]
    np.testing.assert_array_equal(np.asarray(stack), arr)
    f = arr.astype(np.float32)
    assert stack.levels
    for lv in stack.levels:
        np.testing.assert_array_equal(stack.level(lv), pool(f, 2**lv), err_msg=f"level {lv}")
    stats = stack.map_stats()
    np.testing.assert_array_equal(stats[..., 0], f.min(axis=(2, 3)))
    np.testing.assert_array_equal(stats[..., 1], f.max(axis=(2, 3)))
    np.testing.assert_array_equal(stats[..., 2], np.where(f > 0, f, np.inf).min(axis=(2, 3)))
    assert stats[0, 1, 0] == -0.75 and stats[1, 0, 1] == np.inf and stats[1, 2, 2] == np.inf


# --------------------------------------------------------------------------------------------
# stream: a plan of function calls and hooks
# --------------------------------------------------------------------------------------------
def test_a_plan_hooks_every_layer_when_some_layer_is_not_computed_by_the_attention_function():
    """Layer 0's map came from the attention function, layer 1's only from a module's output: the
    plan hooks both modules (the function is not the model's path for every layer), each at the
    position of its 4-d weights in its output."""
    from analysis.stream import Plan, StreamUnsupported, _match

    m0, m1, inner = object(), object(), object()
    a0, a1 = np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3))
    hidden = np.zeros((1, 3, 8))
    out = SimpleNamespace(attentions=(a0, a1))
    outputs = [(inner, (hidden,)), (m1, (hidden, a1)), (m0, (hidden, None, np.zeros((1, 2, 3, 3))))]
    plan = _match(out, [(m0, a0)], outputs)
    assert plan == Plan("hooks", {("attentions", 0): m0, ("attentions", 1): m1},
                        {("attentions", 1): 1, ("attentions", 0): 2})

    # every layer from the function: no hooks
    assert _match(out, [(m0, a0), (m1, a1)], outputs) == Plan(
        "function", {("attentions", 0): m0, ("attentions", 1): m1}, {})

    # layer 0's module returns no 4-d weights to hook
    outputs[2] = (m0, (hidden,))
    with pytest.raises(StreamUnsupported, match="^Headmap cannot stream attentions layer 0$"):
        _match(out, [(m0, a0)], outputs)
    # a module's output that is not a tuple holds nothing to hook
    outputs[2] = (m0, np.zeros((1, 2, 3, 3)))
    with pytest.raises(StreamUnsupported, match="^Headmap cannot stream attentions layer 0$"):
        _match(out, [(m0, a0)], outputs)


# --------------------------------------------------------------------------------------------
# host: the model process's thread count and quiet set-up
# --------------------------------------------------------------------------------------------
def test_each_call_sets_torchs_threads_from_its_environment(monkeypatch):
    """HEADMAP_TORCH_THREADS=n sent with a call sets torch's threads for it; a call without it (or
    with a value that is not a positive number) gets torch's own count back."""
    import torch

    import analysis.host as host

    own = torch.get_num_threads()
    default: list[int] = []
    try:
        monkeypatch.setenv("HEADMAP_TORCH_THREADS", "1")
        host._torch_threads(default)
        assert default == [own] and torch.get_num_threads() == 1
        for value in ("", "0", "-2", "two"):
            monkeypatch.setenv("HEADMAP_TORCH_THREADS", value)
            torch.set_num_threads(1)
            host._torch_threads(default)
            assert torch.get_num_threads() == own, value
        assert default == [own]  # learnt once
    finally:
        torch.set_num_threads(own)


def test_the_model_process_shows_no_progress_bars_or_chatter(monkeypatch):
    """The window shows its own progress: the model process turns off the hub's and transformers'
    progress bars and their info messages, unless the user set those variables."""
    import transformers

    import analysis.host as host

    for k in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own choice stays
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    try:
        transformers.logging.set_verbosity_info()
        with warnings.catch_warnings():  # the hub's own switch, set for the tests, wins: it says so
            warnings.simplefilter("ignore")
            transformers.logging.enable_progress_bar()
        host._quiet()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert os.environ["TQDM_DISABLE"] == "0"
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        transformers.logging.set_verbosity(verbosity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()


# --------------------------------------------------------------------------------------------
# small contracts no test called
# --------------------------------------------------------------------------------------------
def test_a_store_and_its_stacks_say_what_they_are():
    """``repr`` of a store names its folder and stacks, of a stack its name, shape, dtype and folder
    (what a notebook user sees); ``len`` of a stack is its number of layers, as of an array."""
    from analysis.store import write_stacks

    st = write_stacks({"attentions": np.full((3, 2, 4, 4), 0.25, np.float32),
                       "cross_attentions": np.full((3, 2, 2, 4), 0.25, np.float32)})
    assert repr(st) == f"Store({str(st.path)!r}, stacks=['attentions', 'cross_attentions'])"
    stack = st.stacks["cross_attentions"]
    assert repr(stack) == (f"StoredStack('cross_attentions', shape=(3, 2, 2, 4), dtype=float16, "
                           f"path={str(st.path)!r})")
    assert len(stack) == 3 == len(np.asarray(stack))


def test_every_view_has_a_drawer():
    from analysis.views import VIEWS

    assert list(DRAWERS) == list(DRAWERS._WHERE) and len(DRAWERS) == len(VIEWS)
    assert set(DRAWERS) == set(VIEWS)


def test_numpy_numbers_and_arrays_in_a_mask_report_are_written_as_json_numbers():
    from analysis.masks import _json_default

    assert _json_default(np.float32(0.5)) == 0.5 and type(_json_default(np.float32(0.5))) is float
    assert _json_default(np.int64(3)) == 3 and type(_json_default(np.int64(3))) is int
    assert _json_default(np.array([[1, 2]], np.int16)) == [[1, 2]]
    with pytest.raises(TypeError, match="^set is not JSON serialisable$"):
        _json_default({1})


def test_a_derived_manifest_that_cannot_be_written_leaves_the_old_one_and_no_temporary_file(tmp_path, monkeypatch):
    """The cache's manifest is replaced atomically: a failure mid-write removes the temporary file
    and keeps the old manifest (which the next check then judges)."""
    import json

    from analysis import derived

    derived._write_manifest(tmp_path, {"v": 1})
    old = (tmp_path / derived.MANIFEST).read_text(encoding="utf-8")
    assert json.loads(old) == {"v": 1}

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(derived.json, "dump", broken)
    with pytest.raises(OSError):
        derived._write_manifest(tmp_path, {"v": 2})
    derived._try_write_manifest(tmp_path, {"v": 3})  # the same failure, said nothing of
    assert sorted(p.name for p in tmp_path.iterdir()) == [derived.MANIFEST]
    assert (tmp_path / derived.MANIFEST).read_text(encoding="utf-8") == old


def test_a_closed_pipe_holds_no_message():
    """The model process ended: a last message still in the pipe is read; a closed or broken pipe
    holds none."""
    from analysis.host import _has_message

    class Conn:
        def __init__(self, result):
            self.result = result
            self.asked = []

        def poll(self, timeout):
            self.asked.append(timeout)
            if isinstance(self.result, BaseException):
                raise self.result
            return self.result

    waiting = Conn(True)
    assert _has_message(waiting) is True and waiting.asked == [0]  # never waits
    assert _has_message(Conn(False)) is False
    assert _has_message(Conn(EOFError())) is False
    assert _has_message(Conn(OSError("handle is closed"))) is False
