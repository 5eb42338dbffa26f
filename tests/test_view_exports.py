"""Every tab of the window, exported, shows what the tab shows: the same data, labels, layer, head
and options, drawn by the same drawer (issue "One viewer state, one figure per view").

One tiny translator is loaded and run; every tab is brought on screen with a non-default
selection; then the tab's export (File ▸ Export / Copy image draw it the same way) is compared with
the tab: the view's data recomputed from the export request equals the data on screen, the
exported figure holds the same images (arrays) and the same title, and every label of the data is
written in the exported figure.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from analysis.figures import build_figure
from analysis.pyramid import MapSource
from analysis.views import view_data
from tests.gui_fixtures import load, use_target, wait_idle

TEXT = "I like this course"
TARGET = "I like this course"
PAIR = "the students in this course are reading a long and interesting book today"


def assert_same(a, b, where: str = "") -> None:
    """Dataclasses compared field by field (arrays by value, norms by range, colormaps by name)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(np.ma.filled(a, np.nan), np.ma.filled(b, np.nan), err_msg=where)
    elif isinstance(a, Normalize):
        assert (type(a), a.vmin, a.vmax) == (type(b), b.vmin, b.vmax), where
    elif isinstance(a, Colormap):
        assert a.name == b.name, where
    elif isinstance(a, MapSource):  # a map's pyramid: the map itself
        assert a.shape == b.shape, where
        assert_same(a.level(0), b.level(0), where)
    elif isinstance(a, tuple | list) and any(not isinstance(x, str | int | float | bool | None) for x in a):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "image") and hasattr(a, "cell"):  # a Mosaic
        assert_same(a.image, b.image, where)
        assert (a.rows, a.cols, a.cell, a.gap) == (b.rows, b.cols, b.cell, b.gap), where
    else:
        assert a == b, where


def figure_images(fig: Figure) -> list[np.ndarray]:
    return [np.ma.filled(np.ma.asarray(im.get_array(), dtype=float), np.nan)
            for ax in fig.axes for im in ax.images if im.get_visible()]


def figure_texts(fig: Figure) -> set[str]:
    out = set()
    for ax in fig.axes:
        out |= {t.get_text() for t in ax.texts}
        out |= {t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()}
        out |= {ax.get_title(loc=loc) for loc in ("left", "center", "right")}
    return out


def labels_of(data) -> list[str]:
    """Every token/word label a view's data carries."""
    names = ("row_labels", "col_labels", "rows", "cols", "src_words", "tgt_words", "labels", "source",
             "decoder_inputs", "tile_labels", "strip_cols")
    out = []
    for n in names:
        out += [s for s in getattr(data, n, ()) if isinstance(s, str)]
    return out


def live_data(tab):
    data = getattr(tab, "data", None)
    return data if data is not None else tab.view.data


def live_figure(tab) -> Figure:
    return tab.figure if hasattr(tab, "canvas") else tab.view.figure


@pytest.fixture
def marian(qtbot, window, tiny_model_dir):
    window.resize(1500, 950)
    use_target(window, TARGET)
    window.input_panel.text.setPlainText(TEXT)
    load(qtbot, window, tiny_model_dir("marian"))
    return window


def tab_named(win, name: str):
    for i in range(win.tabs.count()):
        if win.tabs.tabText(i) == name:
            win.tabs.setCurrentIndex(i)
            return win.tabs.widget(i)
    raise AssertionError(name)


def prepare(qtbot, win, name: str):
    """Put ``name`` on screen with something to show; returns the tab."""
    tab = tab_named(win, name)
    if name == "Mask lab":
        tab.pair.setText(PAIR)
        tab.run_padding()
        qtbot.waitUntil(lambda: not win.runner.is_busy("masks"), timeout=120_000)
    elif name == "Statistics":
        qtbot.waitUntil(lambda: tab.capture is win.capture and tab.data is not None, timeout=60_000)
        tab.stat_combo.setCurrentIndex(tab.stat_names.index("to_first"))
    elif name == "Rollout":
        tab.method_combo.setCurrentText("flow")
        qtbot.waitUntil(lambda: tab.matrix is not None, timeout=60_000)
    elif name == "Compare":
        tab.pin_current()
    elif name == "Steps":
        tab.set_step(2)
    elif name == "Alignment":
        tab.select(layer=0, head=1)
    qtbot.wait(10)
    return tab


TABS = ("Head", "Layer", "Model", "Lines", "Alignment", "Steps", "Mask lab", "Statistics", "Rollout", "Compare")


@pytest.mark.parametrize("stack", ["cross", "decoder"])
def test_every_tab_exports_what_it_shows(qtbot, marian, stack, tmp_path):
    win = marian
    win.select(stack={"cross": "cross_attentions", "decoder": "decoder_attentions"}[stack], layer=1, head=2)
    win.shared.setChecked(False)
    assert win.spec.rows == "both"
    for name in TABS:
        if name == "Rollout" and stack == "cross":
            win.select(stack="encoder_attentions")  # rollout and flow need self-attention
        tab = prepare(qtbot, win, name)
        assert win.last_error == "", (name, win.last_error)
        spec, inputs = tab.export_request()
        shown = live_data(tab)
        # the same data: recomputed from what Export draws, it equals what is on screen
        assert_same(view_data(win.capture, spec, inputs), shown, name)
        fig = build_figure(win.capture, spec, inputs)
        # the same pictures, drawn by the same drawer (images: the same arrays, in the same order)
        exported, live = figure_images(fig), figure_images(live_figure(tab))
        assert len(exported) == len(live), name
        for a, b in zip(exported, live, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
        # the title above the figure is the title above the tab's canvas
        assert " ".join(fig.get_suptitle().split()) == " ".join(shown.title.split()), name
        texts = figure_texts(fig)
        missing = [s for s in labels_of(shown) if s not in texts]
        assert not missing, (name, missing)
        # and the file is written
        out = win.export_view(str(tmp_path / f"{stack}-{name}.png"), dpi=72)
        assert (tmp_path / f"{stack}-{name}.png").stat().st_size > 1000, out
    wait_idle(qtbot, win)


def test_head_and_lines_exports_follow_every_option(qtbot, marian):
    win = marian
    head = tab_named(win, "Head")
    win.select(stack="decoder_attentions", layer=1)
    win.agg_check.setChecked(True)
    win.agg_combo.setCurrentText("max")
    win.hide_special.setChecked(True)
    win.scale_combo.setCurrentText("log")
    win.rows_combo.setCurrentText("predicts")
    win.cmap_combo.setCurrentText("magma")
    spec, inputs = head.export_request()
    assert (spec.view, spec.stack, spec.layer, spec.head, spec.aggregation) == ("head", "decoder_attentions", 1,
                                                                               None, "max")
    assert (spec.hide_special, spec.scale, spec.rows, spec.cmap) == (True, "log", "predicts", "magma")
    assert_same(view_data(win.capture, spec, inputs), head.data)
    fig = build_figure(win.capture, spec, inputs)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(head.data.row_labels)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(head.data.col_labels)
    assert ax.get_ylabel() == head.ax.get_ylabel() == "query: token predicted at t"
    lines = tab_named(win, "Lines")
    win.lines_all.setChecked(True)
    spec, inputs = lines.export_request()
    assert spec.lines_per_head
    d = view_data(win.capture, spec, inputs)
    assert_same(d, lines.data)
    assert d.strength.shape[0] == win.capture.n_heads("decoder_attentions")
