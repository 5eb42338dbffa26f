"""The Alignment and Steps tabs for translation (seq2seq) captures.

* :class:`AlignmentTab` – the word alignment read off one cross-attention layer (one head or the
  head average): source words above, translation words below, a line per word pair (opacity ∝
  weight, the argmax link of each target word bold), the word heatmap, the list of pairs, and –
  with a gold Pharaoh line – the alignment error rate of every layer × head.
* :class:`StepsTab` – the translation token by token: at step ``t`` the cross-attention row ``t``
  (over the source tokens), the decoder self-attention row ``t`` (over the decoder inputs; later
  positions are causally masked) and the model's top-5 candidates for output token ``t``.

Row convention (see :mod:`analysis.result`): row ``t`` of the decoder and cross maps belongs to
decoder position ``t``, which reads decoder input ``t`` and predicts output token ``t``.

Everything is computed by ``analysis/`` (:func:`analysis.alignment_export.alignment_for_capture`,
:func:`analysis.alignment.aer_grid`, :func:`analysis.aggregate.select_map`); the tabs only pick rows
and draw. Register both with :func:`install`.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from analysis.aggregate import select_map
from analysis.alignment import aer, aer_grid, bundled_alignment_info, format_pharaoh, split_pharaoh
from analysis.alignment_export import alignment_for_capture, default_alignment_layer
from analysis.errors import InputError

from ..views.canvas import CanvasView

NEEDS_SEQ2SEQ = "alignment needs a seq2seq model with cross-attention"
STEPS_NEED_SEQ2SEQ = "the generation steps need a seq2seq model with cross-attention"
HOW_TO_GET_ONE = "load a translator (e.g. bundled:translator-en-fr) and run a sentence"
#: word-pair weights below this are not drawn as lines (they would be invisible anyway)
MIN_LINK_WEIGHT = 0.02
#: the heatmap writes its values into the cells up to this many cells
MAX_ANNOTATED_CELLS = 200
ROW_CAPTION = (
    "Row t of the cross-attention belongs to decoder position t: it reads output token t−1 and "
    "<b>predicts output token t</b>, so a translation word's links show where the model looked "
    "while producing that word. Thick line and boxed cell: the source word with the most attention "
    "(argmax); faint lines: the other weights (opacity ∝ weight); dashed: gold links. Word weights "
    "sum a source word's pieces and average a translation word's pieces."
)


def is_seq2seq(capture) -> bool:
    """True when ``capture`` has what both tabs need (cross-attention, decoder inputs, outputs)."""
    return (
        capture is not None
        and capture.kind == "seq2seq"
        and "cross_attentions" in capture.stacks
        and "decoder_attentions" in capture.stacks
        and capture.outputs is not None
        and capture.decoder_inputs is not None
    )


def _words(text: str, n: int) -> list[str]:
    """``n`` word labels from ``text.split()``; missing words get ``w<i>``."""
    have = (text or "").split()
    return [have[i] if i < len(have) else f"w{i}" for i in range(n)]


def _short(s: str, n: int = 18) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _report(window, exc: BaseException) -> None:
    """Show ``exc`` through the window (one sentence), or re-raise without one."""
    if window is None or not hasattr(window, "show_error"):
        raise exc
    from gui.main_window import error_message  # lazy: main_window imports this module

    window.show_error(error_message(exc))


def _message_label() -> QLabel:
    lab = QLabel("")
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lab.setWordWrap(True)
    lab.setTextFormat(Qt.TextFormat.RichText)
    return lab


def _caption(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextFormat(Qt.TextFormat.RichText)
    return lab


def _item(text: str, data=None, align_right: bool = False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if data is not None:
        it.setData(Qt.ItemDataRole.UserRole, data)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def _table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return t


# ==============================================================================================
# Alignment
# ==============================================================================================
class AlignmentView(CanvasView):
    """Source words above, target words below with a line per word pair; the heatmap beneath.

    Both axes, the three line collections, the image and its colour bar are created once; a new
    alignment updates them and replaces only the word labels and cell annotations.
    """

    def __init__(self, parent: QWidget | None = None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.figure.set_layout_engine("constrained")
        gs = self.figure.add_gridspec(2, 1, height_ratios=(1.0, 1.5))
        self.ax_links = self.figure.add_subplot(gs[0])
        self.ax_heat = self.figure.add_subplot(gs[1])
        self.ax_links.set_axis_off()
        self.soft_lines = LineCollection([], linewidths=1.3, capstyle="round")
        self.best_lines = LineCollection([], linewidths=4.0, capstyle="round")
        # gold on top: a gold link the model found shows as dashes over its thick line
        self.gold_lines = LineCollection([], linewidths=2.0, linestyles=(0, (4, 3)))
        for c in (self.soft_lines, self.best_lines, self.gold_lines):
            self.ax_links.add_collection(c)
        # a figure title: constrained layout keeps it clear of rotated source words
        self.title = self.figure.suptitle("", fontsize=self.theme.title_size)
        self.image = self.ax_heat.imshow(np.zeros((1, 1)), aspect="auto", interpolation="nearest",
                                         vmin=0.0, vmax=1.0, cmap=self.theme.cmap)
        self.colorbar = self.figure.colorbar(self.image, ax=self.ax_heat, label="word attention",
                                             shrink=0.9)
        self._dynamic: list = []  # word labels, cell values, argmax boxes: replaced on each show
        self.n_soft = 0
        self.n_best = 0

    def show_alignment(self, matrix: np.ndarray, pairs, src_words: list[str], tgt_words: list[str],
                       gold: set | None, title: str, cmap: str | None = None) -> None:
        """Draw the word matrix ``[n_tgt, n_src]`` with its argmax ``pairs`` ``(i_src, j_tgt)``;
        ``gold`` links dashed; ``cmap`` None: the theme's colormap."""
        th = self.theme
        for a in self._dynamic:
            a.remove()
        self._dynamic = []
        m = np.asarray(matrix, dtype=np.float64)
        n_tgt, n_src = m.shape
        top = float(m.max()) if m.size and m.max() > 0 else 1.0

        def xs(n: int) -> np.ndarray:
            return np.array([0.5]) if n == 1 else np.linspace(0.0, 1.0, max(n, 1))

        xs_src, xs_tgt = xs(n_src), xs(n_tgt)
        base = np.array(to_rgba(th.line_colors[0]))
        jj, ii = np.nonzero(m >= max(MIN_LINK_WEIGHT, 0.1 * top))
        self.soft_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in zip(ii, jj, strict=True)])
        soft = np.tile(base, (len(ii), 1))
        strength = np.clip(m[jj, ii] / top, 0, 1)
        soft[:, 3] = 0.85 * strength
        self.soft_lines.set_color(soft if len(ii) else "none")
        self.soft_lines.set_linewidths(0.8 + 2.2 * strength if len(ii) else 1.0)
        self.n_soft = len(ii)
        best = [(i, j) for i, j in pairs if i < n_src and j < n_tgt]
        self.best_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in best])
        strong = np.tile(base, (len(best), 1))
        if best:
            strong[:, 3] = 0.45 + 0.55 * np.clip([m[j, i] / top for i, j in best], 0, 1)
        self.best_lines.set_color(strong if best else "none")
        self.n_best = len(best)
        gold_ok = sorted((i, j) for i, j in (gold or ()) if i < n_src and j < n_tgt)
        self.gold_lines.set_segments([[(xs_src[i], 1.0), (xs_tgt[j], 0.0)] for i, j in gold_ok])
        self.gold_lines.set_color(th.line_colors[2])

        n = max(n_src, n_tgt, 1)
        longest = max((len(w) for w in src_words + tgt_words), default=1)
        rotate = n * max(longest, 3) > 70
        rot, size = (35 if rotate else 0), th.base_size + (0 if n <= 12 else -2)
        for i, w in enumerate(src_words):
            self._dynamic.append(self.ax_links.text(
                xs_src[i], 1.06, _short(w), ha="left" if rotate else "center", va="bottom",
                rotation=rot, rotation_mode="anchor", fontsize=size, color=th.text_color))
        for j, w in enumerate(tgt_words):
            self._dynamic.append(self.ax_links.text(
                xs_tgt[j], -0.06, _short(w), ha="right" if rotate else "center", va="top",
                rotation=rot, rotation_mode="anchor", fontsize=size, color=th.text_color,
                fontweight="bold"))
        self._dynamic += self.ax_links.plot(xs_src, np.ones(n_src), "o", color=th.grid_color, markersize=4)
        self._dynamic += self.ax_links.plot(xs_tgt, np.zeros(n_tgt), "o", color=th.grid_color, markersize=4)
        self._dynamic.append(self.ax_links.text(-0.04, 1.0, "source", ha="right", va="center",
                                                fontsize=th.tick_size, color=th.grid_color, style="italic"))
        self._dynamic.append(self.ax_links.text(-0.04, 0.0, "translation", ha="right", va="center",
                                                fontsize=th.tick_size, color=th.grid_color, style="italic"))
        self.ax_links.set_xlim(-0.06, 1.06)
        self.ax_links.set_ylim(-0.1, 1.1)
        self.title.set_text(title)
        self.title.set_color(th.text_color)
        self.title.set_fontsize(th.title_size)

        # heatmap: target words (rows) × source words (columns), source on top as above
        ax = self.ax_heat
        self.image.set_data(m if m.size else np.zeros((1, 1)))
        self.image.set_extent((-0.5, n_src - 0.5, n_tgt - 0.5, -0.5))
        self.image.set_cmap(cmap or th.cmap)
        self.image.set_clim(0.0, top)
        ax.set_xlim(-0.5, n_src - 0.5)
        ax.set_ylim(n_tgt - 0.5, -0.5)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xticks(range(n_src), [_short(w) for w in src_words], rotation=35 if rotate else 0,
                      ha="left" if rotate else "center", rotation_mode="anchor")
        ax.set_yticks(range(n_tgt), [_short(w) for w in tgt_words])
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.base_size)
        ax.set_xlabel("source word", color=th.text_color)
        ax.set_ylabel("translation word (being predicted)", color=th.text_color)
        cmap = self.image.get_cmap()
        if 0 < m.size <= MAX_ANNOTATED_CELLS:
            for j in range(n_tgt):
                for i in range(n_src):
                    r, g, b, _ = cmap(m[j, i] / top)
                    light = 0.299 * r + 0.587 * g + 0.114 * b > 0.55
                    self._dynamic.append(ax.text(i, j, f"{m[j, i]:.2f}", ha="center", va="center",
                                                 fontsize=th.tick_size, color="black" if light else "white"))
        for i, j in best:
            box = Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor=th.line_colors[1], linewidth=2.2)
            ax.add_patch(box)
            self._dynamic.append(box)
        self.colorbar.ax.tick_params(labelcolor=th.text_color, colors=th.grid_color)
        self.colorbar.set_label("word attention", color=th.text_color)
        self.redraw()


class AlignmentTab(QWidget):
    """Word alignment from cross-attention, with gold comparison (AER) and Pharaoh export."""

    def __init__(self, window=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self._capture = None
        self._default_layer = 0
        self._documented = False
        self._gold: tuple[set, set] | None = None
        self._gold_key = None
        self._gold_name = ""
        self._shown_key = None
        self.result = None  # the AlignmentResult on screen
        self.aer_values: np.ndarray | None = None  # [L, H + 1] with a gold line

        self.message = _message_label()
        self.layer_combo = QComboBox()
        self.head_combo = QComboBox()
        self.layer_combo.setToolTip("cross-attention layer the alignment is read from")
        self.head_combo.setToolTip("one head, or the average of the layer's heads")
        self.gold_button = QPushButton("Load gold (Pharaoh)…")
        self.gold_button.setToolTip("a text file whose first line is the gold alignment of this "
                                    "sentence, e.g. 0-0 1-0 2-1 3-2 (source-target word indices)")
        self.copy_button = QPushButton("Copy Pharaoh")
        self.copy_button.setToolTip("copy the links shown as one Pharaoh line (i-j: source word i, translation word j)")
        self.aer_label = QLabel("")
        self.caption = _caption(ROW_CAPTION)
        self.view = AlignmentView()
        self.pairs_table = _table(["source", "translation", "weight"])
        self.aer_table = QTableWidget(0, 0)
        self.aer_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.aer_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.aer_table.setToolTip("click a cell to show that layer and head")
        self.aer_caption = _caption("")

        controls = QHBoxLayout()
        for w in (QLabel("layer"), self.layer_combo, QLabel("head"), self.head_combo, self.gold_button,
                  self.copy_button):
            controls.addWidget(w)
        controls.addWidget(self.aer_label, 1)
        side = QWidget()
        side.setMinimumWidth(330)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(QLabel("<b>Aligned words</b> (one link per translation word)"))
        sl.addWidget(self.pairs_table, 3)
        sl.addWidget(self.aer_caption)
        sl.addWidget(self.aer_table, 2)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 2)
        self.body = QWidget()
        bl = QVBoxLayout(self.body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addLayout(controls)
        bl.addWidget(self.caption)
        bl.addWidget(split, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addWidget(self.body, 1)
        self._show_message("run a sentence through a translator to see its word alignment")

        self.layer_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.head_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.gold_button.clicked.connect(self._on_load_gold)
        self.copy_button.clicked.connect(self.copy_pharaoh)
        self.aer_table.cellClicked.connect(self._on_aer_cell_clicked)

    # -- window protocol --------------------------------------------------------------------
    def show_window_state(self, window) -> None:
        """Show the window's capture (called when this tab is visible and something changed)."""
        self._window = window
        cap = getattr(window, "capture", None)
        try:
            if not is_seq2seq(cap):
                self._capture = None
                self._shown_key = None
                self._show_message(f"{NEEDS_SEQ2SEQ}; {HOW_TO_GET_ONE}." if cap is not None
                                   else "run a sentence through a translator to see its word alignment")
                return
            theme = getattr(getattr(window, "spec", None), "theme", None)
            if theme and theme != self.view.theme.name:
                self.view.set_theme(theme)
                self._shown_key = None
                if self._capture is cap:
                    self._compute_aer()  # the best cell's highlight follows the theme
            if cap is not self._capture:
                self._set_capture(cap, window)
            self.message.setVisible(False)
            self.body.setVisible(True)
            self._update()
        except Exception as exc:  # noqa: BLE001 - the window shows it and keeps working
            _report(window, exc)

    # -- selection --------------------------------------------------------------------------
    @property
    def layer(self) -> int:
        """The layer shown (the default layer resolved)."""
        data = self.layer_combo.currentData()
        return self._default_layer if data is None else int(data)

    @property
    def head(self) -> int | None:
        """The head shown, or None for the average of heads."""
        data = self.head_combo.currentData()
        return None if data is None else int(data)

    def select(self, layer: int | None = None, head: int | None = None, average: bool = False) -> None:
        """Choose ``layer`` (None: keep) and ``head`` (``average=True``: the head average)."""
        if layer is not None:
            i = self.layer_combo.findData(int(layer))
            if i >= 0:
                self.layer_combo.setCurrentIndex(i)
        if average:
            self.head_combo.setCurrentIndex(0)
        elif head is not None:
            i = self.head_combo.findData(int(head))
            if i >= 0:
                self.head_combo.setCurrentIndex(i)

    def _set_capture(self, cap, window) -> None:
        n_layers, n_heads = cap.shape("cross_attentions")[:2]
        old = self._capture
        same_model = old is not None and old.model == cap.model and old.shape("cross_attentions")[:2] == (n_layers, n_heads)
        keep_layer, keep_head = self.layer_combo.currentData(), self.head_combo.currentData()
        lm = getattr(window, "lm", None)
        folder = lm.summary.source_path if lm is not None and getattr(lm, "reference", cap.model) == cap.model else None
        self._default_layer = default_alignment_layer(cap, folder)
        try:
            self._documented = folder is not None and "best_layer" in bundled_alignment_info(folder)
        except Exception:  # noqa: BLE001 - a damaged alignment.json only loses the label
            self._documented = False
        self._capture = cap
        for combo in (self.layer_combo, self.head_combo):
            combo.blockSignals(True)
        try:
            self.layer_combo.clear()
            what = "best documented" if self._documented else "default: last layer"
            self.layer_combo.addItem(f"{what} ({self._default_layer})", None)
            for li in range(n_layers):
                self.layer_combo.addItem(f"layer {li}", li)
            self.head_combo.clear()
            self.head_combo.addItem("average of heads", None)
            for h in range(n_heads):
                self.head_combo.addItem(f"head {h}", h)
            if same_model:
                self.layer_combo.setCurrentIndex(max(0, self.layer_combo.findData(keep_layer)))
                self.head_combo.setCurrentIndex(max(0, self.head_combo.findData(keep_head)))
        finally:
            for combo in (self.layer_combo, self.head_combo):
                combo.blockSignals(False)
        key = (cap.text, cap.output_text)
        if self._gold is not None and key != self._gold_key:
            self._gold = None
            self._gold_name = ""
        self._compute_aer()
        self._shown_key = None

    def _on_selection_changed(self, *_args) -> None:
        if self._capture is None:
            return
        try:
            self._update()
        except Exception as exc:  # noqa: BLE001
            _report(self._window, exc)

    def _on_aer_cell_clicked(self, row: int, col: int) -> None:
        if self._capture is None:
            return
        n_heads = self._capture.n_heads("cross_attentions")
        self.select(layer=row, head=None if col >= n_heads else col, average=col >= n_heads)

    # -- drawing ----------------------------------------------------------------------------
    def _update(self) -> None:
        cap = self._capture
        cmap = getattr(getattr(self._window, "spec", None), "cmap", None)
        key = (id(cap), self.layer, self.head, self._gold_key if self._gold else None, self.view.theme.name, cmap)
        if key == self._shown_key:
            return
        res = alignment_for_capture(cap, None, layer=self.layer, head=self.head)
        self.result = res
        n_tgt, n_src = res.matrix.shape
        src, tgt = _words(cap.text, n_src), _words(cap.output_text, n_tgt)
        head = "average of heads" if res.head is None else f"head {res.head}"
        gold = self._gold[1] if self._gold else None
        self.view.show_alignment(res.matrix, res.pairs, src, tgt, gold,
                                 f"cross-attention layer {res.layer}, {head}", cmap)
        self._fill_pairs(res, src, tgt)
        self._update_aer_label()
        self._sync_export_spec()
        self._shown_key = key

    def _fill_pairs(self, res, src: list[str], tgt: list[str]) -> None:
        gold = self._gold
        cols = ["source", "translation", "weight"] + (["gold?"] if gold else [])
        t = self.pairs_table
        t.clear()
        t.setColumnCount(len(cols))
        t.setHorizontalHeaderLabels(cols)
        pairs = sorted(res.pairs, key=lambda p: (p[1], p[0]))  # in translation order
        t.setRowCount(len(pairs))
        for r, (i, j) in enumerate(pairs):
            t.setItem(r, 0, _item(f"{src[i]}  ({i})", (i, j)))
            t.setItem(r, 1, _item(f"{tgt[j]}  ({j})", (i, j)))
            t.setItem(r, 2, _item(f"{res.matrix[j, i]:.3f}", float(res.matrix[j, i]), align_right=True))
            if gold:
                sure, possible = gold
                mark = "sure ✓" if (i, j) in sure else ("possible ✓" if (i, j) in possible else "✗")
                t.setItem(r, 3, _item(mark))

    def listed_pairs(self) -> list[tuple[int, int]]:
        """The ``(source word, translation word)`` pairs in the table, in table order."""
        t = self.pairs_table
        return [tuple(t.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(t.rowCount())]

    def _sync_export_spec(self) -> None:
        """Export (Ctrl+E) of the Alignment tab draws ``spec.alignment_layer/head``: keep them on
        what this tab shows."""
        w = self._window
        spec = getattr(w, "spec", None)
        if spec is not None and hasattr(spec, "alignment_layer") and self.result is not None:
            w.spec = replace(spec, alignment_layer=self.result.layer, alignment_head=self.result.head)

    # -- gold and AER -----------------------------------------------------------------------
    def _on_load_gold(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Gold alignment (Pharaoh)", "",
                                              "Pharaoh alignments (*.txt *.align *.pharaoh *.wa);;All files (*)")
        if path:
            try:
                self.load_gold(path)
            except Exception as exc:  # noqa: BLE001
                _report(self._window, exc)

    def load_gold(self, path: str | Path) -> None:
        """Read the gold alignment of this sentence: the first line of ``path`` (Pharaoh)."""
        cap = self._capture
        if cap is None:
            raise InputError("run a sentence through a translator before loading its gold alignment")
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the gold file {p.name}: {exc}; choose a UTF-8 text file") from exc
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise InputError(f"the first line of {p.name} is empty; write the gold links there, e.g. 0-0 1-1")
        sure, possible = split_pharaoh(lines[0])
        n_src, n_tgt = len(cap.text.split()), len(cap.output_text.split())
        bad = sorted((i, j) for i, j in possible if i >= n_src or j >= n_tgt)
        if bad:
            i, j = bad[0]
            raise InputError(
                f"the gold link {i}-{j} does not fit this sentence ({n_src} source and {n_tgt} translation "
                "words); is the first line the gold alignment of this sentence?"
            )
        self._gold = (sure, possible)
        self._gold_key = (cap.text, cap.output_text)
        self._gold_name = p.name
        self._compute_aer()
        self._shown_key = None
        self._update()

    def _compute_aer(self) -> None:
        cap, gold = self._capture, self._gold
        t = self.aer_table
        t.clear()
        if cap is None or gold is None:
            self.aer_values = None
            t.setRowCount(0)
            t.setColumnCount(0)
            t.setVisible(False)
            self.aer_caption.setText("<b>Alignment error rate</b>: load the gold alignment of this "
                                     "sentence to compare every layer and head with it")
            return
        sure, possible = gold
        grid = aer_grid(cap.attention("cross_attentions"), list(cap.source.word_ids),
                        list(cap.outputs.word_ids), sure, possible)  # [L, H + 1]
        self.aer_values = grid
        n_layers, n_cols = grid.shape
        t.setRowCount(n_layers)
        t.setColumnCount(n_cols)
        t.setHorizontalHeaderLabels([f"head {h}" for h in range(n_cols - 1)] + ["average"])
        t.setVerticalHeaderLabels([f"layer {li}" for li in range(n_layers)])
        best = np.unravel_index(int(np.argmin(grid)), grid.shape)
        hl = QColor(self.view.theme.qt_palette.get("highlight", "#2f6fb5"))
        hl_text = QColor(self.view.theme.qt_palette.get("highlighted_text", "#ffffff"))
        for li in range(n_layers):
            for c in range(n_cols):
                it = _item(f"{grid[li, c]:.2f}", float(grid[li, c]), align_right=True)
                if (li, c) == best:
                    f = QFont(it.font())
                    f.setBold(True)
                    it.setFont(f)
                    it.setBackground(QBrush(hl))
                    it.setForeground(QBrush(hl_text))
                    it.setToolTip("lowest AER: the layer/head that agrees best with the gold")
                t.setItem(li, c, it)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.setVisible(True)
        head = "average of heads" if best[1] == n_cols - 1 else f"head {best[1]}"
        self.aer_caption.setText(
            f"<b>Alignment error rate</b> vs. {html.escape(self._gold_name or 'gold')} (0 = perfect, lower is better); "
            f"best: layer {best[0]}, {head} = {grid[best]:.2f}. Click a cell to show it."
        )

    def _update_aer_label(self) -> None:
        if self._gold is None or self.result is None:
            self.aer_label.setText("")
            return
        sure, possible = self._gold
        self.aer_label.setText(f"AER of the links shown: <b>{aer(self.result.pairs, sure, possible):.2f}</b>")

    # -- actions ----------------------------------------------------------------------------
    def copy_pharaoh(self) -> str:
        """Copy the links shown to the clipboard as one Pharaoh line; returns the line."""
        if self.result is None:
            return ""
        line = format_pharaoh(self.result.pairs)
        QGuiApplication.clipboard().setText(line)
        w = self._window
        if w is not None and hasattr(w, "statusBar"):
            w.statusBar().showMessage(f"copied the alignment (source-translation word indices): {line}")
        return line

    def _show_message(self, text: str) -> None:
        self.message.setText(f"<p style='font-size:13pt'>{text}</p>")
        self.message.setVisible(True)
        self.body.setVisible(False)
        self.result = None


# ==============================================================================================
# Generation steps
# ==============================================================================================
class StepsView(CanvasView):
    """Three bar charts of one step: cross row t, decoder self row t, top-5 candidates.

    The bars are created when the capture's lengths change and updated in place
    (``set_height`` / ``set_width``) for every other step, layer or head.
    """

    def __init__(self, parent: QWidget | None = None, theme: str = "light") -> None:
        super().__init__(parent, theme)
        self.figure.set_layout_engine("constrained")
        gs = self.figure.add_gridspec(2, 2, width_ratios=(1.7, 1.0))
        self.ax_cross = self.figure.add_subplot(gs[0, :])
        self.ax_self = self.figure.add_subplot(gs[1, 0])
        self.ax_top = self.figure.add_subplot(gs[1, 1])
        self.cross_bars = None
        self.self_bars = None
        self.top_bars = None
        self.top_values: list = []
        self.future = None
        self.future_text = None
        self.rebuilds = 0
        self.layouts = 0
        self._layout_key = None
        self._src: list[str] = []
        self._dec: list[str] = []

    def _bar_axes(self, ax, labels: list[str], ylabel: str):
        th = self.theme
        ax.clear()
        bars = ax.bar(np.arange(len(labels)), np.zeros(len(labels)), color=th.line_colors[0], width=0.75)
        rotate = len(labels) > 8 or max((len(s) for s in labels), default=0) > 6
        ax.set_xticks(np.arange(len(labels)), [_short(s, 14) for s in labels], rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(ylabel, color=th.text_color)
        self._style(ax)
        return bars

    def _style(self, ax) -> None:
        th = self.theme
        ax.set_facecolor(th.axes_facecolor)
        ax.tick_params(colors=th.grid_color, labelcolor=th.text_color, labelsize=th.tick_size + 1)
        for side, spine in ax.spines.items():
            spine.set_visible(side in ("left", "bottom"))
            spine.set_edgecolor(th.grid_color)

    def set_tokens(self, src: list[str], dec: list[str]) -> None:
        """(Re)build the bars when the token axes change."""
        if src == self._src and dec == self._dec and self.cross_bars is not None:
            return
        self._src, self._dec = list(src), list(dec)
        self.cross_bars = self._bar_axes(self.ax_cross, self._src, "attention")
        self.self_bars = self._bar_axes(self.ax_self, self._dec, "attention")
        self.future = Rectangle((0, 0), 0, 1, transform=self.ax_self.get_xaxis_transform(),
                                facecolor=self.theme.masked_color, alpha=0.35, hatch="//",
                                edgecolor=self.theme.hatch_color, linewidth=0)
        self.ax_self.add_patch(self.future)
        self.future_text = self.ax_self.text(0, 0.5, "future:\nmasked", transform=self.ax_self.get_xaxis_transform(),
                                             ha="center", va="center", fontsize=self.theme.tick_size,
                                             color=self.theme.grid_color, style="italic")
        self.top_bars = None
        self.rebuilds += 1

    def _top_axes(self, n: int) -> None:
        ax = self.ax_top
        ax.clear()
        self.top_bars = ax.barh(np.arange(n), np.zeros(n), color=self.theme.line_colors[0], height=0.7)
        self.top_values = [ax.text(0, k, "", va="center", ha="left", fontsize=self.theme.tick_size,
                                   color=self.theme.text_color) for k in range(n)]
        ax.set_ylim(n - 0.5, -0.5)  # best candidate on top
        ax.set_xlim(0, 1.18)
        ax.set_xlabel("probability", color=self.theme.text_color)
        self._style(ax)

    def show_step(self, t: int, cross_row: np.ndarray, self_row: np.ndarray, ymax: tuple[float, float],
                  candidates, chosen: str, titles: tuple[str, str, str]) -> None:
        """Heights of step ``t``: ``cross_row`` ``[S]``, ``self_row`` ``[T]``; ``candidates``
        ``((token, prob), …)`` best first; ``chosen`` the output token ``t``."""
        th = self.theme
        base, hi = th.line_colors[0], th.line_colors[1]
        best = int(np.argmax(cross_row)) if len(cross_row) else -1
        for k, (bar, h) in enumerate(zip(self.cross_bars, cross_row, strict=True)):
            bar.set_height(float(h))
            bar.set_color(hi if k == best else base)
        for k, (bar, h) in enumerate(zip(self.self_bars, self_row, strict=True)):
            bar.set_height(float(h))
            bar.set_color(base if k <= t else th.masked_color)
        for k, lab in enumerate(self.ax_self.get_xticklabels()):
            lab.set_color(th.text_color if k <= t else th.grid_color)
            lab.set_fontweight("bold" if k == t else "normal")
        n_dec = len(self_row)
        self.future.set_x(t + 0.5)
        self.future.set_width(max(0.0, n_dec - 0.4 - (t + 0.5)))
        self.future_text.set_x((t + 0.5 + n_dec - 0.4) / 2)
        self.future_text.set_visible(t < n_dec - 1)
        self.ax_cross.set_ylim(0, ymax[0])
        self.ax_self.set_ylim(0, ymax[1])
        for ax, title in zip((self.ax_cross, self.ax_self, self.ax_top), titles, strict=True):
            ax.set_title(title, color=th.text_color, fontsize=th.base_size, loc="left")

        cands = list(candidates)
        if self.top_bars is None or len(self.top_bars) != max(len(cands), 1):
            self._top_axes(max(len(cands), 1))
        labels = []
        for k, bar in enumerate(self.top_bars):
            tok, p = cands[k] if k < len(cands) else ("(none recorded)", 0.0)
            is_chosen = k < len(cands) and tok == chosen
            bar.set_width(float(p))
            bar.set_color(hi if is_chosen else base)
            self.top_values[k].set_text((f"{p:.2f}" if p >= 0.005 else "<0.01") + ("  ← chosen" if is_chosen else ""))
            self.top_values[k].set_x(float(p) + 0.02)
            labels.append(_short(tok, 16))
        self.ax_top.set_yticks(np.arange(len(self.top_bars)), labels)
        for k, lab in enumerate(self.ax_top.get_yticklabels()):
            is_chosen = k < len(cands) and cands[k][0] == chosen
            lab.set_fontweight("bold" if is_chosen else "normal")
            lab.set_color(th.text_color)
        # constrained layout is most of a draw: run it only when the margins may change (new
        # bars, layer/head range, canvas size, longer candidate labels), then keep the positions
        widest = max((len(s) for s in labels), default=0)
        key = (self.rebuilds, ymax, self.canvas.get_width_height(), th.name, -(-widest // 4))
        if key != self._layout_key:
            self.figure.set_layout_engine("constrained")
            self.redraw()
            self.figure.set_layout_engine("none")
            self._layout_key = key
            self.layouts += 1
        else:
            self.redraw()

    def top_labels(self) -> list[str]:
        """The candidate labels on screen, best first."""
        return [lab.get_text() for lab in self.ax_top.get_yticklabels()]


class StepsTab(QWidget):
    """Step through a translation token by token (Previous/Next, slider, Left/Right keys)."""

    def __init__(self, window=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self._capture = None
        self._maps_key = None
        self._cross: np.ndarray | None = None  # [T, S]
        self._self: np.ndarray | None = None  # [T, T]
        self._ymax = (1.0, 1.0)
        self._sel_text = ""
        self.step = 0
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        self.message = _message_label()
        self.step_caption = QLabel("")
        self.step_caption.setTextFormat(Qt.TextFormat.RichText)
        big = QFont(self.step_caption.font())
        big.setPointSizeF(big.pointSizeF() * 1.3)
        self.step_caption.setFont(big)
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setPageStep(1)
        self.spin = QSpinBox()
        self.spin.setPrefix("step ")
        self.selection_label = QLabel("")
        self.caption = _caption(
            "Row t of the cross-attention and of the decoder self-attention belong to decoder position t: "
            "it reads decoder input t (the previous output token) and predicts output token t. "
            "Positions after t are hidden by the causal mask. Highlighted bar: the source token with "
            "the most attention; highlighted candidate: the token the translation chose. Layer and "
            "head follow the toolbar; the Left/Right keys step."
        )
        self.view = StepsView()
        self.view.canvas.mpl_connect("key_press_event", self._on_canvas_key)

        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.slider, 1)
        nav.addWidget(self.spin)
        nav.addWidget(self.next_button)
        nav.addWidget(self.selection_label)
        self.body = QWidget()
        bl = QVBoxLayout(self.body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.step_caption)
        bl.addLayout(nav)
        bl.addWidget(self.caption)
        bl.addWidget(self.view, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addWidget(self.body, 1)
        self._show_message("run a sentence through a translator to step through its translation")

        # the slider is throttled: dragging redraws at most every 30 ms
        self._slider_timer = QTimer(self)
        self._slider_timer.setSingleShot(True)
        self._slider_timer.setInterval(30)
        self._slider_timer.timeout.connect(lambda: self.set_step(self.slider.value()))
        self.slider.valueChanged.connect(lambda _v: self._slider_timer.start())
        self.spin.valueChanged.connect(self.set_step)
        self.prev_button.clicked.connect(lambda: self.set_step(self.step - 1))
        self.next_button.clicked.connect(lambda: self.set_step(self.step + 1))

    # -- window protocol --------------------------------------------------------------------
    def show_window_state(self, window) -> None:
        """Show the window's capture at the current step with the toolbar's layer/head."""
        self._window = window
        cap = getattr(window, "capture", None)
        try:
            if not is_seq2seq(cap):
                self._capture = None
                self._maps_key = None
                self._show_message(f"{STEPS_NEED_SEQ2SEQ}; {HOW_TO_GET_ONE}." if cap is not None
                                   else "run a sentence through a translator to step through its translation")
                return
            spec = window.spec
            if spec.theme != self.view.theme.name:
                self.view.set_theme(spec.theme)
                self.view.cross_bars = None  # rebuild the bars in the new colours
            if cap is not self._capture:
                self._capture = cap
                self.step = 0
                n = len(cap.decoder_inputs)
                for w in (self.slider, self.spin):
                    w.blockSignals(True)
                    w.setRange(0, max(n - 1, 0))
                    w.setValue(0)
                    w.blockSignals(False)
                self.spin.setSuffix(f" / {n - 1}")
            self.view.set_tokens(list(cap.source.display), list(cap.decoder_inputs.display))
            self._select_maps(cap, spec)
            self.message.setVisible(False)
            self.body.setVisible(True)
            self._draw()
        except Exception as exc:  # noqa: BLE001 - the window shows it and keeps working
            _report(window, exc)

    def _select_maps(self, cap, spec) -> None:
        n_layers, n_heads = cap.shape("cross_attentions")[:2]
        layer = min(max(int(spec.layer), 0), n_layers - 1)
        head = spec.head if spec.head is None or spec.head < n_heads else n_heads - 1
        how = spec.aggregation if spec.aggregation in ("mean", "max") else "mean"
        key = (id(cap), layer, head, how)
        if key == self._maps_key:
            return
        self._cross = select_map(cap, "cross_attentions", layer, head, how)  # [T, S]
        self._self = select_map(cap, "decoder_attentions", layer, head, how)  # [T, T]
        # one y range for every step of this layer/head, so bar heights compare across steps
        self._ymax = (max(float(self._cross.max()) * 1.08, 0.05), max(float(self._self.max()) * 1.08, 0.05))
        what = f"{how} of heads" if head is None else f"head {head}"
        note = "" if layer == spec.layer else f" (the toolbar's layer {spec.layer} does not exist in the decoder)"
        self._sel_text = f"toolbar: layer {layer}, {what}{note}"
        self.selection_label.setText(self._sel_text)
        self._maps_key = key

    # -- stepping ---------------------------------------------------------------------------
    def set_step(self, t: int) -> None:
        """Show step ``t`` (clamped to 0..T-1)."""
        cap = self._capture
        if cap is None:
            return
        t = max(0, min(int(t), len(cap.decoder_inputs) - 1))
        self.step = t
        for w in (self.slider, self.spin):
            if w.value() != t:
                w.blockSignals(True)
                w.setValue(t)
                w.blockSignals(False)
        try:
            self._draw()
        except Exception as exc:  # noqa: BLE001
            _report(self._window, exc)

    def candidates(self, t: int) -> tuple[tuple[str, float], ...]:
        """The top-5 ``(token, probability)`` recorded for output token ``t``, best first."""
        cap = self._capture
        for pos, items in (cap.prediction.per_position if cap is not None else ()):
            if pos == t:
                return tuple(items)
        return ()

    def _draw(self) -> None:
        cap, t = self._capture, self.step
        if cap is None or self._cross is None:
            return
        dec_in, out = cap.decoder_inputs.display[t], cap.outputs.display[t]
        how = "the chosen hypothesis" if cap.generated else "teacher forcing on the typed target"
        self.step_caption.setText(
            f"step {t}: decoder input '<b>{html.escape(dec_in)}</b>' → predicts '<b>{html.escape(out)}</b>'"
            f" &nbsp;<i>({how})</i>"
        )
        cands = self.candidates(t)
        in_top = any(tok == out for tok, _ in cands)
        top_title = f"top-{len(cands) or 5} candidates for output {t}"
        if cands and not in_top:
            top_title += f" ('{_short(out, 12)}' is not among them)"
        titles = (
            f"cross-attention row {t}: where the decoder looks in the source while predicting '{_short(out, 16)}'",
            f"decoder self-attention row {t}: which earlier decoder inputs it reads",
            top_title,
        )
        self.view.show_step(t, self._cross[t], self._self[t], self._ymax, cands, out, titles)
        self.prev_button.setEnabled(t > 0)
        self.next_button.setEnabled(t < len(cap.decoder_inputs) - 1)

    def keyPressEvent(self, event) -> None:  # Left/Right step (before the window's head keys)
        k = event.key()
        if self._capture is not None and k in (Qt.Key.Key_Left, Qt.Key.Key_Right) and not event.modifiers():
            self.set_step(self.step + (1 if k == Qt.Key.Key_Right else -1))
            event.accept()
            return
        super().keyPressEvent(event)

    def _on_canvas_key(self, event) -> None:
        if event.key in ("left", "right"):
            self.set_step(self.step + (1 if event.key == "right" else -1))

    def _show_message(self, text: str) -> None:
        self.message.setText(f"<p style='font-size:13pt'>{text}</p>")
        self.message.setVisible(True)
        self.body.setVisible(False)


# ==============================================================================================
def install(window) -> None:
    """Add the Alignment and Steps tabs to ``window`` (a :class:`gui.main_window.MainWindow`).

    Idempotent: a tab the window already has is not added twice.
    """
    have = {type(w) for w in getattr(window, "extra_tabs", ())}
    if AlignmentTab not in have:
        window.add_tab(AlignmentTab(window), "Alignment")
    if StepsTab not in have:
        window.add_tab(StepsTab(window), "Steps")
