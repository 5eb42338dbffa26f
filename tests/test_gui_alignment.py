"""The Alignment and Steps tabs (gui/tabs/alignment.py, steps.py) on a synthetic translation capture.

The capture is built by hand so the expected alignment is known: every target word attends mostly
(0.7 of each of its token rows) to one chosen source word, chosen per layer and – in the last
layer – differently for one head.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pytest

from analysis.aggregate import select_map
from analysis.alignment import aer, format_pharaoh, split_pharaoh
from analysis.alignment_export import alignment_for_capture
from analysis.result import Capture, Prediction, TokenSeq

os.environ.setdefault("HEADMAP_NO_AUTOSTART", "1")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SRC_TOKENS = ["▁I", "▁like", "▁this", "▁cour", "se", "</s>"]
SRC_WORDS = (0, 1, 2, 3, 3, -1)
OUT_TOKENS = ["▁나는", "▁이", "▁강의", "를", "▁좋아한다", "</s>"]
OUT_WORDS = (0, 1, 2, 2, 3, -1)
DEC_TOKENS = ["<pad>", "▁나는", "▁이", "▁강의", "를", "▁좋아한다"]
DEC_WORDS = (-1, 0, 1, 2, 2, 3)
TEXT = "I like this course"
TRANSLATION = "나는 이 강의를 좋아한다"
N_LAYERS, N_HEADS = 2, 3
#: target word j → source word it attends to, per layer (layer 1, head 2 differs)
PERM = {0: (0, 1, 2, 3), 1: (0, 3, 2, 1)}
PERM_L1_H2 = (1, 0, 3, 2)


def _seq(tokens, words) -> TokenSeq:
    display = [t.lstrip("▁") for t in tokens]
    special = [t in ("</s>", "<pad>") for t in tokens]
    return TokenSeq(np.arange(len(tokens)) + 10, tuple(tokens), tuple(display), special, tuple(words))


def _rows(rng, n_rows: int, n_cols: int, causal: bool = False) -> np.ndarray:
    m = rng.random((n_rows, n_cols)) + 0.05
    if causal:
        m = np.tril(m)
    return m / m.sum(-1, keepdims=True)


def _cross(rng) -> np.ndarray:
    """``[L, H, T, S]``: target token t of word j puts 0.7 on the first token of its source word."""
    t_len, s_len = len(OUT_TOKENS), len(SRC_TOKENS)
    out = np.zeros((N_LAYERS, N_HEADS, t_len, s_len))
    for li in range(N_LAYERS):
        for h in range(N_HEADS):
            perm = PERM_L1_H2 if (li, h) == (1, 2) else PERM[li]
            m = 0.3 * _rows(rng, t_len, s_len)
            for t, j in enumerate(OUT_WORDS):
                if j >= 0:
                    m[t, SRC_WORDS.index(perm[j])] += 0.7
                else:
                    m[t, -1] += 0.7
            out[li, h] = m
    return out


def make_capture(seed: int = 0) -> Capture:
    rng = np.random.default_rng(seed)
    s_len, t_len = len(SRC_TOKENS), len(OUT_TOKENS)
    enc = np.stack([np.stack([_rows(rng, s_len, s_len) for _ in range(N_HEADS)]) for _ in range(N_LAYERS)])
    dec = np.stack([np.stack([_rows(rng, t_len, t_len, causal=True) for _ in range(N_HEADS)]) for _ in range(N_LAYERS)])
    outputs = _seq(OUT_TOKENS, OUT_WORDS)
    steps = []
    for t, tok in enumerate(outputs.display):
        if t == 2:  # the chosen token is not among the top 5 here
            items = (("책을", 0.4), ("수업을", 0.3), ("영화를", 0.1), ("음악을", 0.05), ("</s>", 0.02))
        else:
            items = ((tok, 0.8), ("그", 0.08), ("우리", 0.05), ("책", 0.03), ("</s>", 0.01))
        steps.append((t, items))
    return Capture(
        model="synthetic-translator", kind="seq2seq", architecture="MarianMTModel", text=TEXT,
        source=_seq(SRC_TOKENS, SRC_WORDS),
        stacks={"encoder_attentions": enc, "decoder_attentions": dec, "cross_attentions": _cross(rng)},
        target=TRANSLATION, decoder_inputs=_seq(DEC_TOKENS, DEC_WORDS), outputs=outputs,
        output_text=TRANSLATION, generated=True,
        prediction=Prediction("translation", steps[0][1], TRANSLATION, tuple(steps)),
    ).with_stacks_dtype(np.float16)  # the window stores float16 stacks


def encoder_capture() -> Capture:
    rng = np.random.default_rng(1)
    src = _seq(["[CLS]", "▁hello", "▁world", "[SEP]"], (-1, 0, 1, -1))
    att = np.stack([np.stack([_rows(rng, 4, 4) for _ in range(2)]) for _ in range(2)])
    return Capture(model="enc", kind="encoder", architecture="BertModel", text="hello world", source=src,
                   stacks={"attentions": att})


@pytest.fixture
def window(qtbot, tmp_path):
    from gui.main_window import MainWindow
    from gui.settings import Settings

    win = MainWindow(settings=Settings(str(tmp_path / "s.ini")))
    names = [win.tabs.tabText(i) for i in range(win.tabs.count())]
    assert names.count("Alignment") == 1 and names.count("Steps") == 1
    qtbot.addWidget(win)
    win.resize(1500, 900)
    win.show()
    yield win
    assert win.shutdown(), "a worker outlived the test"


def _tab(win, name: str):
    for i in range(win.tabs.count()):
        if win.tabs.tabText(i) == name:
            win.tabs.setCurrentIndex(i)
            return win.tabs.widget(i)
    raise AssertionError(f"no tab {name}")


def _expected_pairs(layer: int, head: int | None) -> set[tuple[int, int]]:
    perm = PERM_L1_H2 if (layer, head) == (1, 2) else PERM[layer]
    return {(perm[j], j) for j in range(4)}


# -- Alignment --------------------------------------------------------------------------------
def test_alignment_pairs_follow_layer_and_head(window):
    cap = make_capture()
    window.set_capture(cap)
    tab = _tab(window, "Alignment")
    assert tab.body.isVisible() and not tab.message.isVisible()
    # default: the last layer (no alignment.json for this synthetic model), average of heads
    assert tab.layer_combo.currentText() == "default: last layer (1)"
    assert tab.head_combo.currentText() == "average of heads"
    ref = alignment_for_capture(cap, None)
    assert sorted(tab.listed_pairs()) == sorted(ref.pairs)
    assert set(tab.listed_pairs()) == _expected_pairs(1, None)
    for layer, head in ((0, None), (0, 1), (1, 0), (1, 2), (1, None)):
        tab.select(layer=layer, head=head, average=head is None)
        assert (tab.layer, tab.head) == (layer, head)
        ref = alignment_for_capture(cap, None, layer=layer, head=head)
        assert sorted(tab.listed_pairs()) == sorted(ref.pairs)
        assert set(tab.listed_pairs()) == _expected_pairs(layer, head)
        # the weight column is the word matrix entry
        t = tab.pairs_table
        for r in range(t.rowCount()):
            i, j = tab.listed_pairs()[r]
            assert float(t.item(r, 2).text()) == pytest.approx(ref.matrix[j, i], abs=1e-3)
        np.testing.assert_allclose(tab.view.image.get_array(), ref.matrix, atol=1e-6)
        assert tab.view.n_best == len(ref.pairs)
    # words: source on top from capture.text, Korean translation words below
    texts = {t.get_text() for t in tab.view.ax_links.texts}
    assert {"I", "like", "this", "course", "나는", "강의를", "좋아한다"} <= texts
    # the pair table shows words with their indices, in translation order
    assert tab.pairs_table.item(0, 1).text() == "나는  (0)"
    # Export of this tab draws the layer/head shown
    assert (window.spec.alignment_layer, window.spec.alignment_head) == (1, None)
    assert window.last_error == ""


def test_copy_pharaoh_and_export(window, tmp_path):
    from PySide6.QtGui import QGuiApplication

    cap = make_capture()
    window.set_capture(cap)
    tab = _tab(window, "Alignment")
    tab.select(layer=0, head=1)
    line = tab.copy_pharaoh()
    assert line == format_pharaoh(_expected_pairs(0, 1)) == "0-0 1-1 2-2 3-3"
    assert QGuiApplication.clipboard().text() == line
    # File ▸ Export of this tab draws the alignment view of the layer/head shown
    spec = window.current_spec()
    assert (spec.view, spec.alignment_layer, spec.alignment_head) == ("alignment", 0, 1)
    out = window.export_view(str(tmp_path / "alignment.png"), dpi=72)
    assert Path(out).stat().st_size > 1000


def test_gold_aer_table(window, tmp_path):
    cap = make_capture()
    window.set_capture(cap)
    tab = _tab(window, "Alignment")
    assert tab.aer_values is None and not tab.aer_table.isVisible()
    gold_line = "0-0 1-1 2-2 3-3 3p2"  # layer 0's alignment is the gold (one possible link extra)
    path = tmp_path / "gold.txt"
    path.write_text(gold_line + "\n9-9 this line belongs to the next sentence\n", encoding="utf-8")
    tab.load_gold(path)
    sure, possible = split_pharaoh(gold_line)
    t = tab.aer_table
    # every layer × head of each method: predict's layers first, then shift's
    assert (t.rowCount(), t.columnCount()) == (2 * N_LAYERS, N_HEADS + 1)
    assert t.horizontalHeaderItem(N_HEADS).text() == "average"
    assert t.verticalHeaderItem(N_LAYERS).text() == "shift · layer 0"
    for m, method in enumerate(("predict", "shift")):
        for layer in range(N_LAYERS):
            for col in range(N_HEADS + 1):
                head = None if col == N_HEADS else col
                want = aer(alignment_for_capture(cap, None, layer, head, method).pairs, sure, possible)
                got = t.item(m * N_LAYERS + layer, col).data(0x0100)  # Qt.UserRole
                assert got == pytest.approx(want)
                assert t.item(m * N_LAYERS + layer, col).text() == f"{want:.2f}"
    # layer 0 is perfect; the best cell (first minimum) is highlighted in bold
    assert tab.aer_values[0].max() == 0.0 and tab.aer_values[1].min() > 0
    assert t.item(0, 0).font().bold() and not t.item(1, 0).font().bold()
    # the AER of what is shown (layer 1, average) and a gold column in the pairs table
    want = aer(alignment_for_capture(cap, None, 1, None).pairs, sure, possible)
    assert f"{want:.2f}" in tab.aer_label.text()
    assert tab.pairs_table.horizontalHeaderItem(3).text() == "gold?"
    # clicking a cell shows that layer/head
    t.cellClicked.emit(0, N_HEADS)
    assert (tab.layer, tab.head) == (0, None)
    assert set(tab.listed_pairs()) == _expected_pairs(0, None)
    assert "0.00" in tab.aer_label.text()
    # a shift row shows that method
    t.cellClicked.emit(N_LAYERS + 1, 0)
    assert (tab.layer, tab.head, window.spec.alignment_method) == (1, 0, "shift")
    assert tab.result.method == "shift"
    assert window.last_error == ""


def test_gold_that_does_not_fit_is_an_error(window, tmp_path):
    from analysis.errors import InputError

    window.set_capture(make_capture())
    tab = _tab(window, "Alignment")
    path = tmp_path / "gold.txt"
    path.write_text("0-0 7-1\n", encoding="utf-8")
    with pytest.raises(InputError, match="7-1 does not fit"):
        tab.load_gold(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="empty"):
        tab.load_gold(path)
    assert tab.aer_values is None


def test_a_source_without_words_is_said_where_the_map_would_be(window, tmp_path):
    """A text of special tokens only (``</s>`` typed into a translator) has no words to align: the
    tab says so in the words the export uses (no empty map, no error dialog), and the next
    translation is drawn again."""
    from dataclasses import replace

    from analysis.errors import InputError
    from analysis.figures import export_figure

    cap = make_capture()
    blank = replace(cap, text="</s>", source=_seq(["</s>"], (-1,)),
                    stacks={**cap.stacks, "encoder_attentions": cap.stacks["encoder_attentions"][..., :1, :1],
                            "cross_attentions": cap.stacks["cross_attentions"][..., :1]})
    window.set_capture(blank)
    tab = _tab(window, "Alignment")
    want = "there are no words to align (the source or the output has no word tokens); type a longer text"
    assert tab.message.isVisible() and not tab.body.isVisible()
    assert html.unescape(tab.message.text()) == f"<p style='font-size:13pt'>{want}</p>"
    assert tab.data is None and tab.listed_pairs() == [] and window.last_error == ""
    with pytest.raises(InputError) as err:  # the export refuses it in the same words
        spec, inputs = tab.export_request()
        export_figure(blank, spec, tmp_path / "a.png", inputs=inputs)
    assert str(err.value) == want
    window.set_capture(make_capture())
    assert tab.body.isVisible() and not tab.message.isVisible() and tab.listed_pairs()


def test_encoder_capture_shows_message(window):
    window.set_capture(encoder_capture())
    tab = _tab(window, "Alignment")
    assert tab.message.isVisible() and not tab.body.isVisible()
    assert "alignment needs a seq2seq model with cross-attention" in tab.message.text()
    steps = _tab(window, "Steps")
    assert steps.message.isVisible() and not steps.body.isVisible()
    assert "seq2seq model with cross-attention" in steps.message.text()
    assert window.last_error == ""
    # and back to a translation: both tabs show it
    window.set_capture(make_capture())
    assert steps.body.isVisible() and not steps.message.isVisible()
    tab = _tab(window, "Alignment")
    assert tab.body.isVisible() and tab.listed_pairs()


# -- Steps ------------------------------------------------------------------------------------
def _heights(bars) -> np.ndarray:
    return np.array([b.get_height() for b in bars])


def test_steps_bars_follow_rows(window, qtbot):
    from PySide6.QtCore import Qt

    cap = make_capture()
    window.set_capture(cap)
    steps = _tab(window, "Steps")
    view = steps.view
    assert steps.step == 0 and steps.slider.maximum() == len(OUT_TOKENS) - 1
    rebuilds = view.rebuilds
    bars_before = list(view.cross_bars)
    for t in range(len(OUT_TOKENS)):
        steps.set_step(t)
        cross = select_map(cap, "cross_attentions", 0, 0)[t]  # toolbar: layer 0, head 0
        dec = select_map(cap, "decoder_attentions", 0, 0)[t]
        np.testing.assert_allclose(_heights(view.cross_bars), cross, atol=1e-6)
        np.testing.assert_allclose(_heights(view.self_bars), dec, atol=1e-6)
        assert np.all(_heights(view.self_bars)[t + 1:] == 0)  # the causal mask
        assert (f"step {t}: decoder input '<b>{html.escape(cap.decoder_inputs.display[t])}</b>' → predicts "
                f"'<b>{html.escape(cap.outputs.display[t])}</b>'") in steps.step_caption.text()
        assert "the chosen hypothesis" in steps.step_caption.text()
        want = [tok for tok, _ in cap.prediction.per_position[t][1]]
        assert view.top_labels() == want
        widths = [b.get_width() for b in view.top_bars]
        assert widths == pytest.approx([p for _, p in cap.prediction.per_position[t][1]])
        chosen = [v.get_text().endswith("← chosen") for v in view.top_values]
        assert chosen == [tok == cap.outputs.display[t] for tok in want]
    assert view.rebuilds == rebuilds and list(view.cross_bars) == bars_before  # updated in place
    assert "is not among them" in view.ax_top.get_title(loc="left") or steps.step != 2
    steps.set_step(2)
    assert "'강의' is not among them" in view.ax_top.get_title(loc="left").replace("\n", " ")  # wrapped to the panel

    # layer/head from the toolbar; head None → mean of heads
    window.select(layer=1, head=2)
    steps.set_step(3)
    np.testing.assert_allclose(_heights(view.cross_bars), select_map(cap, "cross_attentions", 1, 2)[3], atol=1e-6)
    window.agg_check.setChecked(True)
    assert window.spec.head is None
    np.testing.assert_allclose(_heights(view.cross_bars),
                               cap.attention("cross_attentions")[1, :, 3].mean(0), atol=1e-5)
    np.testing.assert_allclose(_heights(view.self_bars),
                               cap.attention("decoder_attentions")[1, :, 3].mean(0), atol=1e-5)
    assert steps.step == 3 and "mean of heads" in steps.selection_label.text()
    assert view.rebuilds == rebuilds

    # Previous / Next and the Left/Right keys
    steps.next_button.click()
    assert steps.step == 4 and steps.spin.value() == 4 and steps.slider.value() == 4
    steps.prev_button.click()
    steps.prev_button.click()
    assert steps.step == 2
    qtbot.keyClick(steps, Qt.Key.Key_Right)
    assert steps.step == 3
    qtbot.keyClick(steps, Qt.Key.Key_Left)
    qtbot.keyClick(steps, Qt.Key.Key_Left)
    assert steps.step == 1
    steps.set_step(99)
    assert steps.step == len(OUT_TOKENS) - 1 and not steps.next_button.isEnabled()
    steps.spin.setValue(0)
    assert steps.step == 0 and not steps.prev_button.isEnabled()
    assert window.last_error == ""


def test_screenshots_synthetic(window):
    window.set_capture(make_capture())
    tab = _tab(window, "Alignment")
    tab.select(layer=1, head=None, average=True)
    window.grab().save("/tmp/alignment-tab-synthetic.png")
    steps = _tab(window, "Steps")
    steps.set_step(3)
    window.grab().save("/tmp/steps-tab-synthetic.png")
    assert Path("/tmp/alignment-tab-synthetic.png").stat().st_size > 10_000


# -- the bundled English→French translator ----------------------------------------------------
TRANSLATOR = Path(__file__).resolve().parent.parent / "analysis" / "bundled_models" / "translator-en-fr"


@pytest.mark.bundled
@pytest.mark.skipif(not (TRANSLATOR / "config.json").is_file(), reason="the bundled translator-en-fr is not built")
def test_bundled_translator_alignment(window, qtbot):
    check_translator(window, qtbot, "bundled:translator-en-fr")


def check_translator(window, qtbot, ref: str) -> None:
    """Load the English→French translator ``ref``, translate, check the links, take screenshots."""
    window.input_panel.text.setPlainText("I like this course")
    window.input_panel.translate.setChecked(True)
    with qtbot.waitSignal(window.capture_changed, timeout=120_000):
        window.load_model(ref)
    cap = window.capture
    assert cap.kind == "seq2seq" and cap.generated
    assert cap.output_text == "j'aime ce cours", window.last_error
    tab = _tab(window, "Alignment")
    assert tab.layer_combo.currentText().startswith("best documented")
    pairs = set(tab.listed_pairs())
    assert pairs == set(alignment_for_capture(cap, window.lm.summary.source_path).pairs)
    src, tgt = cap.text.split(), cap.output_text.split()
    aime, cours = tgt.index("j'aime"), tgt.index("cours")
    # one link per translation word: j'aime comes from "I" or "like", and "like" looks most at it
    assert any(src[i] in ("I", "like") and j == aime for i, j in pairs)
    assert int(np.argmax(tab.result.matrix[:, src.index("like")])) == aime
    assert int(np.argmax(tab.result.matrix[:, src.index("I")])) == aime
    assert (src.index("course"), cours) in pairs
    window.grab().save("/tmp/alignment-tab.png")
    steps = _tab(window, "Steps")
    steps.set_step(1)
    assert steps.view.top_labels()[0] == cap.outputs.display[1]
    window.grab().save("/tmp/steps-tab.png")
    assert window.last_error == ""
