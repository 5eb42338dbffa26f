"""Mask lab: the padding experiment and token masking, shown and measured.

The experiments run in worker threads through :mod:`analysis.masks`; this tab only draws their
reports. One canvas, created once; its four axes are updated in place for the current
stack/layer/head of the window's selection.
"""

from __future__ import annotations

import html

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from analysis.fonts import ensure_cjk_font

DEFAULT_PAIR_HINT = "a longer second sentence (empty: a built-in default)"


def _select(arr: np.ndarray, layer: int, head: int | None, how: str) -> np.ndarray:
    from analysis.aggregate import select_map

    layer = min(layer, arr.shape[0] - 1)
    if head is not None:
        head = min(head, arr.shape[1] - 1)
    return select_map(arr, None, layer, head, how)


class MaskLabTab(QWidget):
    """Padding experiment (mask on / off, Δ, numbers) and token-masking what-if."""

    def __init__(self, window) -> None:
        super().__init__(window)
        ensure_cjk_font()
        self.window = window
        self.padding_report = None
        self.masking_report = None

        self.pair = QLineEdit()
        self.pair.setPlaceholderText(DEFAULT_PAIR_HINT)
        self.side = QComboBox()
        self.side.addItems(["default side", "right", "left"])
        self.side.setToolTip("default: right padding for encoders and seq2seq, left for decoders")
        self.pad_btn = QPushButton("Run padding experiment")
        self.tokens = QListWidget()
        self.tokens.setToolTip("tick tokens to hide them (attention_mask = 0)")
        self.tokens.setMaximumHeight(150)
        self.mask_btn = QPushButton("Mask ticked tokens")
        self.numbers = QLabel("Run the padding experiment (your sentence batched with a longer one), or tick "
                              "tokens and mask them. Needs a loaded model.")
        self.numbers.setWordWrap(True)
        self.numbers.setTextFormat(Qt.TextFormat.RichText)
        self.numbers.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.figure = Figure(figsize=(9, 6), dpi=100)
        self.canvas = FigureCanvasQTAgg(self.figure)
        gs = self.figure.add_gridspec(2, 3, height_ratios=[1, 6], hspace=0.45, wspace=0.35,
                                      left=0.06, right=0.98, top=0.86, bottom=0.12)
        self.ax_mask = self.figure.add_subplot(gs[0, :])
        self.ax_with = self.figure.add_subplot(gs[1, 0])
        self.ax_without = self.figure.add_subplot(gs[1, 1])
        self.ax_delta = self.figure.add_subplot(gs[1, 2])

        top = QHBoxLayout()
        top.addWidget(QLabel("pair"))
        top.addWidget(self.pair, 1)
        top.addWidget(self.side)
        top.addWidget(self.pad_btn)
        mrow = QHBoxLayout()
        mrow.addWidget(self.tokens, 1)
        mrow.addWidget(self.mask_btn)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addLayout(top)
        ll.addLayout(mrow)
        ll.addWidget(self.numbers)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(left)
        split.addWidget(self.canvas)
        split.setStretchFactor(1, 4)
        lay = QVBoxLayout(self)
        lay.addWidget(split)

        self.pad_btn.clicked.connect(self.run_padding)
        self.mask_btn.clicked.connect(self.run_masking)
        window.runner.finished.connect(self._on_finished)
        window.runner.failed.connect(self._on_failed)
        self.mode = "padding"

    # -- window protocol ---------------------------------------------------------------------
    def show_window_state(self, window) -> None:
        cap = window.capture
        if cap is not None and self.tokens.count() != len(cap.source):
            self.tokens.clear()
            for i, t in enumerate(cap.source.display):
                it = QListWidgetItem(f"{i}: {t}")
                it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                it.setCheckState(Qt.CheckState.Unchecked)
                self.tokens.addItem(it)
        self._draw()

    def checked_positions(self) -> list[int]:
        return [i for i in range(self.tokens.count()) if self.tokens.item(i).checkState() == Qt.CheckState.Checked]

    # -- experiments -------------------------------------------------------------------------
    def _ready(self) -> bool:
        w = self.window
        if w.lm is None:
            w.show_error("the mask lab runs the model: load a model first (a reopened session has only its arrays)")
            return False
        if not w.input_panel.text.toPlainText().strip():
            w.show_error("the text is empty; type a sentence to run")
            return False
        return True

    def run_padding(self) -> None:
        if not self._ready():
            return
        side = self.side.currentText()
        side = None if side.startswith("default") else side
        from analysis.masks import padding_job

        self.window.statusBar().showMessage("running the padding experiment…")
        self.window.runner.start("mask_padding", self.window.model_job(padding_job), self.window.lm, self.window.input_panel.text.toPlainText(),
                                 self.pair.text().strip(), side)

    def run_masking(self) -> None:
        if not self._ready():
            return
        pos = self.checked_positions()
        if not pos:
            self.window.show_error("tick at least one token to mask")
            return
        from analysis.masks import masking_job

        self.window.statusBar().showMessage("running with masked tokens…")
        self.window.runner.start("mask_tokens", self.window.model_job(masking_job), self.window.lm, self.window.input_panel.text.toPlainText(), pos)

    def _on_finished(self, channel: str, result) -> None:
        if channel == "mask_padding":
            self.padding_report = result
            self.mode = "padding"
        elif channel == "mask_tokens":
            self.masking_report = result
            self.mode = "tokens"
        else:
            return
        self.window.statusBar().showMessage("mask experiment done")
        self._draw()

    def _on_failed(self, channel: str, exc) -> None:
        if channel in ("mask_padding", "mask_tokens"):
            from gui.main_window import error_message

            self.window.show_error(error_message(exc))

    # -- drawing -----------------------------------------------------------------------------
    def _stack(self, report_maps) -> str:
        spec = self.window.spec
        names = list(report_maps)
        want = spec.stack
        alias = {"encoder": "encoder_attentions", "decoder": "decoder_attentions", "cross": "cross_attentions"}
        want = alias.get(want, want)
        return want if want in names else names[0]

    def _heat(self, ax, m, xlabels, ylabels, title, cmap="viridis", norm=None, mark_cols=()):
        ax.clear()
        ax.imshow(m, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm, vmin=None if norm else 0.0,
                  vmax=None if norm else 1.0)
        n = max(m.shape)
        step = max(1, int(np.ceil(n / 30)))
        size = 7 if n <= 30 else 5
        ax.set_xticks(range(0, m.shape[1], step), [xlabels[i] for i in range(0, m.shape[1], step)], rotation=90, fontsize=size)
        ax.set_yticks(range(0, m.shape[0], step), [ylabels[i] for i in range(0, m.shape[0], step)], fontsize=size)
        for j in mark_cols:
            ax.axvline(j, color="#d1495b", lw=0.6, alpha=0.5)
        ax.set_title(title, fontsize=9)

    def _draw(self) -> None:
        spec = self.window.spec
        if self.mode == "padding" and self.padding_report is not None:
            self._draw_padding(self.padding_report, spec)
        elif self.mode == "tokens" and self.masking_report is not None:
            self._draw_masking(self.masking_report, spec)
        else:
            for ax in (self.ax_mask, self.ax_with, self.ax_without, self.ax_delta):
                ax.clear()
                ax.set_axis_off()
            self.ax_with.text(0, 0.5, "Run an experiment above.", fontsize=11)
        self.canvas.draw_idle()

    def _draw_padding(self, r, spec) -> None:
        name = self._stack(r.masked)
        toks = list(r.tokens)
        rows = list(r.decoder_tokens) if name in ("decoder_attentions", "cross_attentions") else toks
        cols = list(r.decoder_tokens) if name == "decoder_attentions" else toks
        pads = [p for p in r.pad_positions] if cols is toks else []
        self.ax_mask.clear()
        self.ax_mask.set_axis_on()
        am = np.asarray(r.attention_mask)
        self.ax_mask.imshow(am, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        self.ax_mask.set_yticks([0, 1], ["sentence", "pair"], fontsize=7)
        self.ax_mask.set_xticks(range(am.shape[1]), toks, rotation=90, fontsize=6)
        self.ax_mask.set_title(f"attention mask ({r.padding_side} padding; black = 1, white = 0 = pad)", fontsize=9)
        mw = _select(r.masked[name], spec.layer, spec.head, spec.aggregation)
        mu = _select(r.unmasked[name], spec.layer, spec.head, spec.aggregation)
        d = _select(r.delta_unmasked[name], spec.layer, spec.head, "mean") if spec.head is None else \
            np.asarray(r.delta_unmasked[name][min(spec.layer, r.delta_unmasked[name].shape[0] - 1), min(spec.head, r.delta_unmasked[name].shape[1] - 1)], np.float32)
        self._heat(self.ax_with, mw, cols, rows, f"WITH mask: pad columns = {r.pad_attention_max:.1g}", mark_cols=pads)
        self._heat(self.ax_without, mu, cols, rows, "WITHOUT mask (all ones): pads get attention", mark_cols=pads)
        lim = float(np.abs(d).max()) or 1e-9
        real_rows = list(r.real_positions) if rows is toks else list(range(d.shape[0]))
        real_cols = list(r.real_positions) if cols is toks else list(range(d.shape[1]))
        self._heat(self.ax_delta, d, [cols[j] for j in real_cols][: d.shape[1]], [rows[i] for i in real_rows][: d.shape[0]],
                   "Δ = without mask − alone (real tokens)", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
        self.figure.suptitle(f"{r.model} · {name} · layer {spec.layer} · "
                             + ("mean of heads" if spec.head is None else f"head {spec.head}"), fontsize=10, y=0.995)
        esc = html.escape
        pred = ""
        if r.prediction_task != "none":
            pred = (f"<br>prediction alone: <b>{esc(' '.join(r.prediction_alone[:12]))}</b>; with mask: "
                    f"<b>{esc(' '.join(r.prediction_masked[:12]))}</b> ({'changed' if r.prediction_changed_masked else 'same'}); "
                    f"without mask: <b>{esc(' '.join(r.prediction_unmasked[:12]))}</b> "
                    f"({'CHANGED' if r.prediction_changed_unmasked else 'same'})")
        cross = "" if r.cross_pad_attention_max is None else f"<br>cross-attention on pad positions with the mask: {r.cross_pad_attention_max:.3g}"
        self.numbers.setText(
            f"<b>Padding experiment</b> ({r.padding_side} padding, pad token {esc(r.pad_token)}): "
            f"largest weight on a pad column with the mask: <b>{r.pad_attention_max:.3g}</b><br>"
            f"max |Δ attention| vs. alone — with mask: <b>{r.masked_attention_max_abs_diff:.2e}</b>, "
            f"without: <b>{r.unmasked_attention_max_abs_diff:.2e}</b><br>"
            f"max |Δ last hidden state| — with mask: <b>{r.masked_output_max_abs_diff:.2e}</b>, "
            f"without: <b>{r.unmasked_output_max_abs_diff:.2e}</b>{cross}{pred}"
            + ("<br><i>" + "<br>".join(esc(n) for n in r.notes) + "</i>" if r.notes else "")
        )

    def _draw_masking(self, r, spec) -> None:
        name = self._stack(r.masked)
        toks = list(r.tokens)
        dec = list(r.decoder_tokens)
        rows = dec if name in ("decoder_attentions", "cross_attentions") else toks
        cols = dec if name == "decoder_attentions" else toks
        marks = list(r.masked_positions) if cols is toks else []
        self.ax_mask.clear()
        am = np.asarray(r.attention_mask)[None, :]
        self.ax_mask.imshow(am, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        self.ax_mask.set_yticks([0], ["mask"], fontsize=7)
        self.ax_mask.set_xticks(range(am.shape[1]), toks, rotation=90, fontsize=6)
        self.ax_mask.set_title("attention mask with the ticked tokens hidden (white = 0)", fontsize=9)
        b = _select(r.baseline[name], spec.layer, spec.head, spec.aggregation)
        m = _select(r.masked[name], spec.layer, spec.head, spec.aggregation)
        d = m - b
        self._heat(self.ax_with, b, cols, rows, "before (all tokens visible)", mark_cols=marks)
        self._heat(self.ax_without, m, cols, rows, f"after: masked columns = {r.masked_column_max:.1g}", mark_cols=marks)
        lim = float(np.abs(d).max()) or 1e-9
        self._heat(self.ax_delta, d, cols, rows, "Δ = after − before", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
        self.figure.suptitle(f"{r.model} · {name} · layer {spec.layer} · "
                             + ("mean of heads" if spec.head is None else f"head {spec.head}"), fontsize=10)
        esc = html.escape
        parts = [f"<b>Token masking</b>: hidden {', '.join(esc(toks[i]) for i in r.masked_positions)}"]
        if r.top5_before:
            parts.append("next token before: " + " · ".join(f"{esc(t)} {p:.1%}" for t, p in r.top5_before))
            parts.append("next token after: " + " · ".join(f"{esc(t)} {p:.1%}" for t, p in r.top5_after))
        if r.translation_before or r.translation_after:
            parts.append(f"translation before: <b>{esc(r.translation_before)}</b>; after: <b>{esc(r.translation_after)}</b>")
        if len(r.hidden_positions):
            parts.append(f"hidden-state change of the visible tokens: mean L2 <b>{r.mean_hidden_l2:.3g}</b>, "
                         f"mean cosine distance <b>{r.mean_hidden_cosine_distance:.3g}</b>")
        pa = r.prediction_after
        if pa.task == "masked_lm" and pa.per_position:
            pb = dict(r.prediction_before.per_position)
            for pos, items in pa.per_position:
                before = " · ".join(f"{esc(t)} {p:.0%}" for t, p in pb.get(pos, ()))
                after = " · ".join(f"{esc(t)} {p:.0%}" for t, p in items)
                parts.append(f"[MASK] at {pos}: before {before}; after {after}")
        if r.notes:
            parts.append("<i>" + "<br>".join(esc(n) for n in r.notes) + "</i>")
        self.numbers.setText("<br>".join(parts))


def install(window) -> None:
    window.add_tab(MaskLabTab(window), "Mask lab")
