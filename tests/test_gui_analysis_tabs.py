"""The Statistics, Rollout and Compare tabs (gui/tabs/stats.py, rollout.py, compare.py) in a real MainWindow.

Captures are synthetic (random row-stochastic stacks, causal zeros for decoders), set with
``window.set_capture``; the expected numbers come from the same ``analysis`` functions the tabs call.
Set ``HEADMAP_SCREENSHOT_DIR`` to keep the screenshots of the tabs (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from analysis.aggregate import select_map
from analysis.result import Capture, TokenSeq
from analysis.rollout import attention_flow, rollout, token_contributions
from analysis.stats import stats_rows

pytest.importorskip("pytestqt")

ENC_TOKENS = ["[CLS]", "the", "cat", ",", "sat", "on", "the", "mat", ".", "[SEP]"]
DEC_TOKENS = ["<s>", "Once", "upon", "a", "time", ",", "a", "fox", "ran", "."]


# ------------------------------------------------------------------------------------ helpers
def _seq(display: list[str], ids=None) -> TokenSeq:
    special = [d.startswith(("[", "<")) for d in display]
    ids = np.arange(100, 100 + len(display)) if ids is None else np.asarray(ids)
    word_ids, w = [], -1
    for s in special:
        if s:
            word_ids.append(-1)
        else:
            w += 1
            word_ids.append(w)
    return TokenSeq(ids=ids, raw=tuple(display), display=tuple(display), special=np.array(special),
                    word_ids=tuple(word_ids))


def _stochastic(rng, shape, causal: bool = False) -> np.ndarray:
    a = rng.random(shape) ** 3 + 1e-3
    if causal:
        a = a * np.tril(np.ones(shape[-2:]))
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def encoder_capture(seed: int = 0, tokens=ENC_TOKENS, ids=None, layers: int = 3, heads: int = 4,
                    model: str = "synthetic-bert", dtype=np.float16) -> Capture:
    """Random heads, except head 0 of layer 0 (previous token) and head 1 of layer 1 (first token)."""
    rng = np.random.default_rng(seed)
    n = len(tokens)
    att = _stochastic(rng, (layers, heads, n, n)).astype(np.float64)
    att[0, 0] += 30 * np.eye(n, k=-1)
    att[1, 1, :, 0] += 20
    att /= att.sum(-1, keepdims=True)
    return Capture(model=model, kind="encoder", architecture="BertModel", text=" ".join(tokens[1:-1]),
                   source=_seq(list(tokens), ids), stacks={"attentions": att.astype(dtype)})


def decoder_capture(seed: int = 1, tokens=DEC_TOKENS, layers: int = 2, heads: int = 3) -> Capture:
    rng = np.random.default_rng(seed)
    n = len(tokens)
    att = _stochastic(rng, (layers, heads, n, n), causal=True)
    return Capture(model="synthetic-llama", kind="decoder", architecture="LlamaForCausalLM",
                   text=" ".join(tokens[1:]), source=_seq(list(tokens)), stacks={"attentions": att})


def seq2seq_capture(seed: int = 2) -> Capture:
    rng = np.random.default_rng(seed)
    src = ["▁I", "▁like", "▁this", "▁course", "</s>"]
    dec = ["<pad>", "▁J", "'", "aime", "▁ce", "▁cours"]
    out = ["▁J", "'", "aime", "▁ce", "▁cours", "</s>"]
    s, t = len(src), len(dec)
    stacks = {
        "encoder_attentions": _stochastic(rng, (2, 2, s, s)),
        "decoder_attentions": _stochastic(rng, (2, 2, t, t), causal=True),
        "cross_attentions": _stochastic(rng, (2, 2, t, s)),
    }
    return Capture(model="synthetic-marian", kind="seq2seq", architecture="MarianMTModel", text="I like this course",
                   source=_seq(src), stacks=stacks, target="J'aime ce cours", decoder_inputs=_seq(dec),
                   outputs=_seq(out, ids=np.arange(200, 200 + t)))


def long_capture(n: int = 70) -> Capture:
    """An encoder capture of ``n`` tokens: heads 0–1 look near the diagonal, the others far."""
    rng = np.random.default_rng(3)
    att = _stochastic(rng, (2, 4, n, n)).astype(np.float64)
    near = np.eye(n) * 20 + np.eye(n, k=-1) * 5
    att[:, :2] = att[:, :2] + near
    att /= att.sum(-1, keepdims=True)
    toks = ["[CLS]"] + [f"w{i}" for i in range(n - 2)] + ["[SEP]"]
    return Capture(model="synthetic-long", kind="encoder", architecture="BertModel", text="long",
                   source=_seq(toks), stacks={"attentions": att.astype(np.float32)})


def _shown(tab) -> np.ndarray:
    """The numbers behind the Rollout heatmap (masked future cells included)."""
    return np.ma.getdata(tab.view.image.get_array())


def _tab(window, name: str):
    for i in range(window.tabs.count()):
        if window.tabs.tabText(i) == name:
            return window.tabs.widget(i)
    raise AssertionError(f"no tab {name}")


def _open(window, name: str):
    tab = _tab(window, name)
    window.tabs.setCurrentWidget(tab)
    return tab


def _current_tab(window) -> str:
    return window.tabs.tabText(window.tabs.currentIndex())


def _shot(qtbot, window, tmp_path: Path, name: str) -> Path:
    qtbot.wait(50)  # let pending layout requests run, as they would before the user sees the window
    folder = Path(os.environ.get("HEADMAP_SCREENSHOT_DIR") or tmp_path)
    path = folder / name
    assert window.grab().save(str(path))
    assert path.stat().st_size > 10_000
    return path


def _click_axes(qtbot, view, ax, x: float, y: float, double: bool = False) -> None:
    """Click data point (x, y) of ``ax`` on ``view``'s canvas, like a user would."""
    view.redraw()
    px, py = ax.transData.transform((x, y))
    canvas = view.canvas
    ratio = canvas.device_pixel_ratio
    height = canvas.figure.bbox.height
    pos = QPoint(int(round(px / ratio)), int(round((height - py) / ratio)))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=pos)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADMAP_NO_AUTOSTART", "1")
    from gui.main_window import MainWindow
    from gui.settings import Settings

    win = MainWindow(settings=Settings(str(tmp_path / "s.ini")))
    qtbot.addWidget(win)
    win.resize(1500, 900)
    win.show()
    qtbot.waitExposed(win)
    yield win
    assert win.shutdown(), "a worker outlived the test"
    if win._dialog is not None:
        win._dialog.close()


def _wait_stats(qtbot, tab, cap) -> None:
    qtbot.waitUntil(lambda: tab.capture is cap and tab.table.rowCount() > 0, timeout=20000)


def _table_rows(tab) -> list[dict]:
    t = tab.table
    out = []
    for i in range(t.rowCount()):
        row = {}
        for j, c in enumerate(tab.columns):
            item = t.item(i, j)
            row[c] = item.text() if c == "tags" else item.data(Qt.ItemDataRole.DisplayRole)
        out.append(row)
    return out


def _same(a, b) -> bool:
    return (np.isnan(a) and np.isnan(b)) if isinstance(a, float) and np.isnan(a) else a == pytest.approx(b, abs=0)


# ------------------------------------------------------------------------------------ statistics
def test_stats_table_has_every_head_of_every_stack_with_stats_rows_values(window, qtbot):
    tab = _open(window, "Statistics")
    cap = seq2seq_capture()
    window.set_capture(cap)
    _wait_stats(qtbot, tab, cap)
    expected = stats_rows(cap)
    for stack in cap.stack_names:
        window.select(stack=stack)
        assert tab.stack == stack
        n_layers, n_heads = cap.shape(stack)[:2]
        shown = _table_rows(tab)
        assert tab.table.rowCount() == n_layers * n_heads
        want = {(r["layer"], r["head"]): r for r in expected if r["stack"] == stack}
        assert {(r["layer"], r["head"]) for r in shown} == set(want)
        for r in shown:
            w = want[(r["layer"], r["head"])]
            for stat in tab.stat_names:
                want_value = np.nan if w[stat] is None else w[stat]
                assert _same(r[stat], want_value), (stack, r["layer"], r["head"], stat)
            assert r["tags"] == w["tags"].replace(";", ", ")
        # the grid shows the chosen statistic as [L, H]
        stat = tab.stat_names[0]
        tab.stat_combo.setCurrentIndex(0)
        grid = np.ma.filled(tab.grid.image.get_array().astype(float), np.nan)
        want_grid = np.array([[np.nan if want[(layer, h)][stat] is None else want[(layer, h)][stat]
                               for h in range(n_heads)] for layer in range(n_layers)])
        np.testing.assert_array_equal(grid, want_grid)


def test_stats_numbers_show_three_decimals_and_sort_numerically(window, qtbot):
    tab = _open(window, "Statistics")
    cap = long_capture()
    window.set_capture(cap)
    _wait_stats(qtbot, tab, cap)
    col = tab.columns.index("mean_distance")
    values = [tab.table.item(i, col).data(Qt.ItemDataRole.DisplayRole) for i in range(tab.table.rowCount())]
    assert all(isinstance(v, float) for v in values)
    # near-diagonal heads (< 10 tokens) and far ones (> 10): a text sort would put "12.3" before "2.1"
    assert min(values) < 10 < max(values)
    tab.table.sortItems(col, Qt.SortOrder.AscendingOrder)
    got = [tab.table.item(i, col).data(Qt.ItemDataRole.DisplayRole) for i in range(tab.table.rowCount())]
    assert got == sorted(values)
    tab.table.sortItems(col, Qt.SortOrder.DescendingOrder)
    got = [tab.table.item(i, col).data(Qt.ItemDataRole.DisplayRole) for i in range(tab.table.rowCount())]
    assert got == sorted(values, reverse=True)
    # shown with 3 decimals
    index = tab.table.model().index(0, col)
    shown = tab.table.itemDelegate().displayText(index.data(), tab.table.locale())
    assert shown == f"{got[0]:.3f}"
    # sorting the layer column too is numeric, and the grid is unaffected by the sort
    assert tab.grid.values.shape == (2, 4)


def test_number_cells_sort_numbers_and_undefined_values(qtbot):
    from PySide6.QtWidgets import QTableWidget

    from gui.tabs.stats import NumberItem as _NumberItem

    table = QTableWidget(5, 1)
    qtbot.addWidget(table)
    for i, v in enumerate([0.5, float("nan"), 12.0, 2.0, float("nan")]):
        table.setItem(i, 0, _NumberItem(v))
    table.sortItems(0, Qt.SortOrder.AscendingOrder)
    got = [table.item(i, 0).data(Qt.ItemDataRole.DisplayRole) for i in range(5)]
    assert got[:3] == [0.5, 2.0, 12.0] and all(np.isnan(got[3:]))


def test_clicking_a_grid_cell_opens_that_head(window, qtbot, tmp_path):
    tab = _open(window, "Statistics")
    cap = encoder_capture()
    window.set_capture(cap)
    _wait_stats(qtbot, tab, cap)
    tab.stat_combo.setCurrentIndex(tab.stat_names.index("to_first"))
    tags = {(r["layer"], r["head"]): r["tags"] for r in _table_rows(tab)}
    assert "previous-token" in tags[(0, 0)] and "first-token" in tags[(1, 1)]
    _shot(qtbot, window, tmp_path, "stats-tab.png")
    _click_axes(qtbot, tab.grid, tab.grid.ax, 3, 2)  # x = head 3, y = layer 2
    assert _current_tab(window) == "Head"
    assert (window.layer_spin.value(), window.head_spin.value()) == (2, 3)
    assert window.spec.head == 3 and window.spec.layer == 2
    # coming back, the opened head is outlined in the grid
    _open(window, "Statistics")
    assert tab.grid.marker.get_visible()
    assert tab.grid.marker.get_xy() == (2.5, 1.5)


def test_double_clicking_a_table_row_opens_that_head(window, qtbot):
    tab = _open(window, "Statistics")
    cap = decoder_capture()
    window.set_capture(cap)
    _wait_stats(qtbot, tab, cap)
    col = tab.columns.index("entropy")
    tab.table.sortItems(col, Qt.SortOrder.DescendingOrder)
    # the window starts at layer 0, head 0: pick another head so the test can fail
    row = next(i for i in range(tab.table.rowCount()) if (tab.table.item(i, 0).data(Qt.ItemDataRole.DisplayRole),
                                                           tab.table.item(i, 1).data(Qt.ItemDataRole.DisplayRole)) != (0, 0))
    layer = tab.table.item(row, 0).data(Qt.ItemDataRole.DisplayRole)
    head = tab.table.item(row, 1).data(Qt.ItemDataRole.DisplayRole)
    rect = tab.table.visualItemRect(tab.table.item(row, col))
    # a real double click starts with a press (the view only accepts one on the pressed cell)
    qtbot.mouseClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert _current_tab(window) == "Head"
    assert (window.layer_spin.value(), window.head_spin.value()) == (layer, head)


def test_the_three_tabs_are_installed_once(window):
    names = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    for name in ("Statistics", "Rollout", "Compare"):
        assert names.count(name) == 1, names


def test_stats_caption_lists_thresholds_and_citations(window):
    import analysis.stats as stats

    tab = _tab(window, "Statistics")
    text = tab.caption.text()
    assert "Clark et al. 2019" in text and "Xiao et al. 2023" in text
    numbers = [v for k, v in vars(stats).items() if k.isupper() and isinstance(v, float)]
    assert numbers, "analysis.stats has no threshold constants"
    for v in numbers:
        assert f"{v:g}" in text


# ------------------------------------------------------------------------------------ rollout
def test_rollout_heatmap_is_the_last_layer_and_bars_are_token_contributions(window, qtbot):
    tab = _open(window, "Rollout")
    cap = encoder_capture()
    window.set_capture(cap)
    att = cap.attention("attentions")
    want = rollout(att, fusion="mean", residual=0.5)[-1]
    np.testing.assert_allclose(_shown(tab), want, rtol=1e-6, atol=1e-9)
    assert tab.output_spin.value() == 0  # encoder: [CLS]
    np.testing.assert_allclose(tab.view.bar_values, token_contributions(want, 0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([b.get_height() for b in tab.view.bars], token_contributions(want, 0), rtol=1e-6)
    tab.output_spin.setValue(4)
    np.testing.assert_allclose(tab.view.bar_values, token_contributions(want, 4), rtol=1e-6, atol=1e-9)
    tab.fusion_combo.setCurrentText("max")
    want_max = rollout(att, fusion="max", residual=0.5)[-1]
    np.testing.assert_allclose(_shown(tab), want_max, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tab.view.bar_values, token_contributions(want_max, 4), rtol=1e-6, atol=1e-9)
    tab.layer_spin.setValue(0)
    np.testing.assert_allclose(_shown(tab), rollout(att, fusion="max", residual=0.5)[0], rtol=1e-6)
    assert "causal" not in tab.view.caption_label.text() and tab.view.caption_label.text()


def test_rollout_of_a_decoder_defaults_to_the_last_token_and_says_causal(window, qtbot, tmp_path):
    tab = _open(window, "Rollout")
    cap = decoder_capture()
    window.set_capture(cap)
    n = len(cap.source)
    assert tab.output_spin.value() == n - 1
    want = rollout(cap.attention(), fusion="mean", residual=0.5)[-1]
    np.testing.assert_allclose(_shown(tab), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(tab.view.bar_values, token_contributions(want, n - 1), rtol=1e-6, atol=1e-9)
    assert "The causal mask carries through" in tab.view.caption_label.text()
    # the future cells are greyed (masked), the others are not
    mask = np.ma.getmaskarray(tab.view.image.get_array())
    np.testing.assert_array_equal(mask, np.triu(np.ones((n, n), bool), k=1))
    _shot(qtbot, window, tmp_path, "rollout-tab.png")


def test_flow_runs_in_the_worker_and_matches_attention_flow(window, qtbot, tmp_path):
    from analysis.rollout import flow_shares

    tab = _open(window, "Rollout")
    cap = encoder_capture()
    window.set_capture(cap)
    tab.method_combo.setCurrentText("flow")
    assert window.runner.is_busy("flow") and "computing attention flow" in tab.message.text()
    qtbot.waitUntil(lambda: tab.matrix is not None, timeout=60000)
    want = attention_flow(cap.attention(), fusion="mean", residual=0.5)
    # as in the paper's code: each output row shown as shares of the input, and the bar says so
    np.testing.assert_allclose(_shown(tab), flow_shares(want), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_shown(tab).sum(1), 1.0, rtol=1e-6)
    assert "each row normalised" in tab.view.cbar.ax.get_ylabel()
    np.testing.assert_allclose(tab.view.bar_values, token_contributions(want, 0), rtol=1e-5, atol=1e-7)
    _shot(qtbot, window, tmp_path, "flow-tab.png")
    # raw max-flow values on request (the same job's result: no new one)
    tab.values_combo.setCurrentIndex(tab.values_combo.findData("raw"))
    assert not window.runner.is_busy("flow")
    np.testing.assert_allclose(_shown(tab), want, rtol=1e-5, atol=1e-7)
    assert "raw" in tab.view.cbar.ax.get_ylabel()
    # flow through an earlier layer: another job, the first result stays cached
    tab.layer_spin.setValue(1)
    assert window.runner.is_busy("flow")
    qtbot.waitUntil(lambda: tab.matrix is not None, timeout=60000)
    want1 = attention_flow(cap.attention(), fusion="mean", residual=0.5, output_layer=1)
    np.testing.assert_allclose(_shown(tab), want1, rtol=1e-5, atol=1e-7)
    tab.layer_spin.setValue(2)
    assert not window.runner.is_busy("flow")
    np.testing.assert_allclose(_shown(tab), want, rtol=1e-5, atol=1e-7)


def test_flow_can_be_cancelled(window, qtbot):
    tab = _open(window, "Rollout")
    window.set_capture(long_capture(60))
    tab.method_combo.setCurrentText("flow")
    job = window.runner.current("flow")
    assert job is not None and tab.cancel_btn.isVisible()
    tab.cancel_btn.click()
    assert not job.running and not window.runner.is_busy("flow")
    assert window.runner.pool.waitForDone(60000)
    qtbot.wait(20)
    assert tab.matrix is None and window.last_error == ""


def test_flow_above_64_tokens_says_use_rollout(window, qtbot):
    tab = _open(window, "Rollout")
    window.set_capture(long_capture(70))
    tab.method_combo.setCurrentText("flow")
    assert tab.message.isVisible()
    assert "64 tokens" in tab.message.text() and "rollout" in tab.message.text()
    assert not window.runner.is_busy("flow")
    tab.method_combo.setCurrentText("rollout")
    assert not tab.message.isVisible() and tab.matrix is not None


def test_rollout_needs_self_attention_and_follows_the_seq2seq_stack(window, qtbot):
    tab = _open(window, "Rollout")
    cap = seq2seq_capture()
    window.set_capture(cap)
    assert tab.stack == "encoder_attentions" and tab.output_spin.value() == 0
    np.testing.assert_allclose(_shown(tab),
                               rollout(cap.attention("encoder_attentions"), fusion="mean", residual=0.5)[-1], rtol=1e-6)
    window.select(stack="cross_attentions")
    assert tab.message.isVisible() and "self-attention" in tab.message.text()
    assert not tab.view.isVisible() and not tab.method_combo.isEnabled()
    window.select(stack="decoder_attentions")
    assert not tab.message.isVisible() and tab.method_combo.isEnabled()
    t = len(cap.decoder_inputs)
    assert tab.output_spin.value() == t - 1
    np.testing.assert_allclose(_shown(tab),
                               rollout(cap.attention("decoder_attentions"), fusion="mean", residual=0.5)[-1], rtol=1e-6)
    assert "The causal mask carries through" in tab.view.caption_label.text()


def test_a_failing_flow_goes_to_the_window_message(window, qtbot, monkeypatch):
    from analysis.errors import InputError
    from analysis.views import rollout as rollout_view

    def broken(*_a, **_k):
        raise InputError("flow broke; use rollout")

    monkeypatch.setattr(rollout_view.rollout_mod, "attention_flow", broken)
    tab = _open(window, "Rollout")
    window.set_capture(encoder_capture())
    tab.method_combo.setCurrentText("flow")
    qtbot.waitUntil(lambda: window.last_error == "flow broke; use rollout", timeout=20000)
    assert "failed" in tab.message.text()


# ------------------------------------------------------------------------------------ compare
def test_compare_difference_map_is_b_minus_a(window, qtbot, tmp_path):
    tab = _open(window, "Compare")
    a = encoder_capture(seed=10, model="model-A")
    window.set_capture(a)
    assert "Pin current as A" in tab.message.text()
    tab.pin_button.click()
    b = encoder_capture(seed=11, model="model-B")
    window.set_capture(b)
    window.select(layer=1, head=2)
    assert not tab.message.isVisible()
    want = select_map(b, None, 1, 2) - select_map(a, None, 1, 2)
    np.testing.assert_allclose(tab.view.diff, want, atol=1e-6)
    np.testing.assert_allclose(tab.view.image_d.get_array(), want, atol=1e-6)
    np.testing.assert_allclose(tab.view.image_a.get_array(), select_map(a, None, 1, 2))
    np.testing.assert_allclose(tab.view.image_b.get_array(), select_map(b, None, 1, 2))
    norm = tab.view.image_d.norm
    assert norm.vmin == -norm.vmax and norm.vmax == pytest.approx(np.abs(want).max(), rel=1e-5)
    assert tab.view.image_d.get_cmap().name.startswith("RdBu_r")
    assert [t.get_text() for t in tab.view.ax_a.get_yticklabels()] == ENC_TOKENS
    _shot(qtbot, window, tmp_path, "compare-tab.png")
    # the aggregate over heads, as chosen in the toolbar
    window.agg_check.setChecked(True)
    want = select_map(b, None, 1, None, "mean") - select_map(a, None, 1, None, "mean")
    np.testing.assert_allclose(tab.view.diff, want, atol=1e-6)


def test_compare_with_other_tokens_is_side_by_side_only(window, qtbot):
    tab = _open(window, "Compare")
    a = encoder_capture(seed=10)
    window.set_capture(a)
    tab.pin_current()
    longer = ENC_TOKENS[:-1] + ["again", "[SEP]"]
    window.set_capture(encoder_capture(seed=12, tokens=longer))
    assert tab.message.isVisible() and "Side by side only" in tab.message.text()
    assert "10 query tokens" in tab.message.text() and "11" in tab.message.text()
    assert tab.view.diff is None and not tab.view.image_d.get_visible()
    # same length, other ids: named position
    ids = np.arange(100, 100 + len(ENC_TOKENS))
    ids[2] = 7
    other = ENC_TOKENS[:2] + ["dog"] + ENC_TOKENS[3:]
    window.set_capture(encoder_capture(seed=13, tokens=other, ids=ids))
    assert "position 2" in tab.message.text() and "'dog'" in tab.message.text()
    assert tab.view.diff is None
    # clearing A asks to pin again
    tab.clear_button.click()
    assert "Pin current as A" in tab.message.text()


def test_compare_a_decoder_against_an_encoder_explains_the_missing_stack(window, qtbot):
    tab = _open(window, "Compare")
    window.set_capture(encoder_capture())
    tab.pin_current()
    window.set_capture(seq2seq_capture())
    assert "A has no" in tab.message.text()


def test_tabs_follow_the_window_theme(window, qtbot):
    tab = _open(window, "Rollout")
    window.set_capture(decoder_capture())
    window.theme_combo.setCurrentText("dark")
    assert tab.view.theme.name == "dark"
    assert tab.view.figure.get_facecolor()[:3] != (1.0, 1.0, 1.0)
