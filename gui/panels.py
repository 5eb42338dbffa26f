"""The window's side panels: model, input, tokens and output. Widgets only – no computation."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

#: the token legend: what the strip's strings mean for the loaded tokenizer's spelling
TOKEN_LEGENDS = {
    "wordpiece": "a piece shown after <b>##</b> continues the word before it (WordPiece)",
    "sentencepiece": "a piece that starts a word is written with <b>▁</b> by the tokenizer (shown without it); "
                     "the others continue the word (SentencePiece)",
    "byte-bpe": "byte-level BPE: <b>◌</b> = a piece of a character that was split into bytes (the pieces "
                "next to it hold the rest); a piece after a space starts a word",
    "word": "one token per word (a word-level tokenizer: no pieces)",
}


def token_legend(style: str) -> str:
    """The Tokens caption for a tokenizer spelling (:data:`analysis.tokens.STYLE_NAMES`)."""
    extra = TOKEN_LEGENDS.get(style)
    return ("<b>Tokens</b> (preprocessing: ids and readable strings; special tokens in red"
            + (f"; {extra})" if extra else ")"))


EXAMPLES = {
    "encoder": "I like this course",
    "decoder": "I like this course because",
    "seq2seq": "I like this course",
}


class ModelPanel(QGroupBox):
    """Choose and load a model; shows load progress and the model card."""

    load_requested = Signal(str)
    cancel_requested = Signal()
    trust_toggled = Signal(bool)
    reference_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setToolTip("a bundled model, a recent one, a cached hub model, a hub id, a folder or a .gguf file")
        self.combo.lineEdit().setPlaceholderText("bundled:minilm, bert-base-uncased, /path/to/folder, model.gguf")
        self.folder_btn = QPushButton("Folder…")
        self.gguf_btn = QPushButton(".gguf…")
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "float32", "float16", "bfloat16"])
        self.device = QComboBox()
        for combo in (self.dtype, self.device):  # never cut to "aut" by a larger font
            combo.setMinimumContentsLength(len("bfloat16"))
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        # the model box shows a bundled name whole at any font size
        self.combo.setMinimumContentsLength(len("bundled:translator-en-fr"))
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.trust = QCheckBox("trust remote code")
        self.trust.setToolTip("let the checkpoint's own Python code run (asks for confirmation)")
        self.load_btn = QPushButton("Load")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.stage = QLabel("")
        self.loaded = QLabel("")
        self.loaded.setWordWrap(True)
        self.loaded.setTextFormat(Qt.TextFormat.RichText)
        self.show_loaded(None)
        self.card = QLabel("")
        self.card.setWordWrap(True)
        self.card.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.folder_btn)
        row.addWidget(self.gguf_btn)
        form = QFormLayout()
        opts = QHBoxLayout()
        opts.addWidget(QLabel("dtype"))
        opts.addWidget(self.dtype)
        opts.addWidget(QLabel("device"))
        opts.addWidget(self.device)
        opts.addStretch(1)
        btns = QHBoxLayout()
        btns.addWidget(self.load_btn)
        btns.addWidget(self.cancel_btn)
        btns.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addLayout(opts)
        trust_row = QHBoxLayout()  # a row of its own: never cut at a large font
        trust_row.addWidget(self.trust)
        trust_row.addStretch(1)
        lay.addLayout(trust_row)
        lay.addLayout(btns)
        lay.addWidget(self.stage)
        lay.addLayout(form)
        lay.addWidget(self.loaded)
        lay.addWidget(self.card)

        self.load_btn.clicked.connect(self._on_load)
        self.combo.lineEdit().returnPressed.connect(self._on_load)
        self.cancel_btn.clicked.connect(self.cancel_requested)
        self.folder_btn.clicked.connect(self._on_folder)
        self.gguf_btn.clicked.connect(self._on_gguf)
        self.trust.toggled.connect(self.trust_toggled)
        self.combo.editTextChanged.connect(lambda text: self.reference_changed.emit(text.strip()))

    def set_choices(self, bundled: list[tuple[str, str]], recent: list[str], cached: list[str]) -> None:
        current = self.reference()
        self.combo.clear()
        for ref, desc in bundled:
            self.combo.addItem(ref)
            self.combo.setItemData(self.combo.count() - 1, desc, Qt.ItemDataRole.ToolTipRole)
        for group, refs in (("recent", recent), ("cached", cached)):
            for ref in refs:
                if self.combo.findText(ref) < 0:
                    self.combo.addItem(ref)
                    self.combo.setItemData(self.combo.count() - 1, f"{group}", Qt.ItemDataRole.ToolTipRole)
        if current:
            self.combo.setEditText(current)

    def reference(self) -> str:
        return self.combo.currentText().strip()

    def set_reference(self, ref: str) -> None:
        self.combo.setEditText(ref)

    def show_loaded(self, reference: str | None, note: str = "") -> None:
        """Name the model that is loaded (or none), with an optional line about a failed load."""
        import html

        text = (f"Loaded: <b>{html.escape(reference)}</b>" if reference
                else "No model loaded.")
        if note:
            text += f"<br><i>{html.escape(note)}</i>"
        self.loaded.setText(text)

    def show_trusted(self, trusted: bool) -> None:
        """Tick the trust box without asking (it shows whether the model shown has consent)."""
        self.trust.blockSignals(True)
        self.trust.setChecked(trusted)
        self.trust.blockSignals(False)

    def _on_load(self) -> None:
        self.load_requested.emit(self.reference())

    def _on_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a checkpoint folder (written by save_pretrained)")
        if d:
            self.set_reference(d)
            self._on_load()

    def _on_gguf(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "", "GGUF models (*.gguf)")
        if f:
            self.set_reference(f)
            self._on_load()

    def set_busy(self, busy: bool) -> None:
        self.cancel_btn.setEnabled(busy)
        self.load_btn.setEnabled(True)  # loading another model supersedes the current load
        if not busy:
            self.progress.setRange(0, 100)

    def show_progress(self, stage: str, fraction, message: str) -> None:
        if fraction is None or fraction < 0:
            self.progress.setRange(0, 0)  # busy indicator
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(fraction * 100))
        self.progress.setFormat(stage)
        self.stage.setText(message)


class InputPanel(QGroupBox):
    """The sentence editor and the per-kind options; Ctrl+Enter runs."""

    run_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Input", parent)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Type a sentence (Korean welcome) and press Ctrl+Enter")
        self.text.setMaximumHeight(90)
        self.target = QLineEdit()
        self.target.setPlaceholderText("target sentence (teacher forcing), or tick Translate")
        self.translate = QCheckBox("Translate (generate)")
        self.translate.setChecked(True)
        self.target_lang = QLineEdit()
        self.target_lang.setPlaceholderText("target lang")
        self.target_lang.setToolTip("multilingual models: the target language code (NLLB: fra_Latn, M2M100: fr); empty for others")
        self.target_lang.setMaximumWidth(90)
        self.beams = QSpinBox()
        self.beams.setRange(1, 8)
        self.beams.setPrefix("beams ")
        self.cont = QSpinBox()
        self.cont.setRange(0, 200)
        self.cont.setPrefix("continue ")
        self.cont.setSuffix(" tokens")
        self.run_btn = QPushButton("Run  (Ctrl+Enter)")
        self.seq2seq_row = QWidget()
        r = QHBoxLayout(self.seq2seq_row)
        r.setContentsMargins(0, 0, 0, 0)
        r.addWidget(QLabel("target"))
        r.addWidget(self.target, 1)
        r.addWidget(self.translate)
        r.addWidget(self.target_lang)
        r.addWidget(self.beams)
        self.decoder_row = QWidget()
        r2 = QHBoxLayout(self.decoder_row)
        r2.setContentsMargins(0, 0, 0, 0)
        r2.addWidget(self.cont)
        r2.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text)
        lay.addWidget(self.seq2seq_row)
        lay.addWidget(self.decoder_row)
        lay.addWidget(self.run_btn)
        self.run_btn.clicked.connect(self.run_requested)
        for seq in ("Ctrl+Return", "Ctrl+Enter"):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setWhatsThis("run the sentence")
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(self.run_requested)
        self.translate.toggled.connect(lambda on: self.target.setEnabled(not on))
        self.target.setEnabled(False)
        self.set_kind(None)

    def set_kind(self, kind: str | None) -> None:
        self.seq2seq_row.setVisible(kind == "seq2seq")
        self.decoder_row.setVisible(kind == "decoder")

    def inputs(self) -> dict:
        return {
            "text": self.text.toPlainText(),
            "target": None if self.translate.isChecked() else self.target.text(),
            "generate": self.translate.isChecked(),
            "num_beams": self.beams.value(),
            "target_lang": self.target_lang.text().strip() or None,
            "max_new_tokens": self.cont.value(),
        }


class TokenStrip(QTableWidget):
    """The pipeline's first step: token ids and display strings; special tokens marked."""

    token_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None, rows: tuple[str, ...] = ("token", "id")) -> None:
        super().__init__(len(rows), 0, parent)
        self._rows = tuple(rows)
        self.setVerticalHeaderLabels(list(rows))
        self.horizontalHeader().setVisible(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectColumns)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.cellClicked.connect(lambda _r, c: self.token_clicked.emit(c))
        self.fit()

    def fit(self) -> None:
        """Columns as wide as their tokens, and exactly as tall as every row (all rows stay
        readable whatever the font: the presentation theme enlarges it)."""
        self.resizeColumnsToContents()
        self.resizeRowsToContents()
        rows = sum(self.rowHeight(r) for r in range(self.rowCount()))
        height = (rows + self.horizontalHeader().sizeHint().height() + self.horizontalScrollBar().sizeHint().height()
                  + 2 * self.frameWidth())
        self.setFixedHeight(height)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self.fit()

    def set_tokens(self, seq, prompt_length: int | None = None, predicts=None, pieces=None) -> None:
        """Show ``seq`` (display string, id); with ``predicts`` a third row: the output token each
        position predicts (seq2seq decoder). With ``pieces`` (one tuple of piece strings per entry of
        a word-level ``seq``) the second row shows the pieces that form each word instead of the id."""
        n = len(seq)
        self.setColumnCount(n)
        self.setHorizontalHeaderLabels([str(i) for i in range(n)])
        rows = self._rows
        second = rows[1] if pieces is None else ("predicted pieces" if predicts is not None else "pieces")
        self.setVerticalHeaderLabels([rows[0], second, *rows[2:]])
        for i in range(n):
            a = QTableWidgetItem(seq.display[i])
            if pieces is not None:
                a.setToolTip(f"word of {len(pieces[i])} piece(s): {' · '.join(pieces[i])}"
                             + ("\nspecial token" if seq.special[i] else ""))
                b = QTableWidgetItem("·".join(pieces[i]))
                b.setToolTip(a.toolTip())
            else:
                a.setToolTip(f"raw token: {seq.raw[i]!r}\nid: {int(seq.ids[i])}"
                             + ("\nspecial token" if seq.special[i] else ""))
                b = QTableWidgetItem(str(int(seq.ids[i])))
            pieces_special = predicts.special[i] if pieces is not None and predicts is not None else seq.special[i]
            for it, special in ((a, seq.special[i]), (b, pieces_special)):
                if special:
                    it.setForeground(QColor("#b03a2e"))
                    f = it.font()
                    f.setItalic(True)
                    it.setFont(f)
            if prompt_length is not None and i >= prompt_length:
                for it in (a, b):
                    it.setBackground(QColor(255, 235, 180, 120))
                    it.setToolTip(it.toolTip() + "\ngenerated continuation")
            self.setItem(0, i, a)
            self.setItem(1, i, b)
            if predicts is not None and self.rowCount() > 2:
                c = QTableWidgetItem(predicts.display[i])
                what = "word" if pieces is not None else "token"
                c.setToolTip(f"row {i} of the decoder and cross maps predicts this {what} (id {int(predicts.ids[i])})")
                if predicts.special[i]:
                    c.setForeground(QColor("#b03a2e"))
                self.setItem(2, i, c)
        self.fit()


class OutputPanel(QLabel):
    """The pipeline's third step: the post-processed prediction."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def set_prediction(self, capture) -> None:
        import html

        p = capture.prediction
        esc = html.escape
        if p.task == "next_token":
            items = " · ".join(f"<b>{esc(t)}</b> {pr:.1%}" for t, pr in p.items)
            cont = f"<br>continuation: <b>{esc(capture.output_text)}</b>" if capture.output_text else ""
            self.setText(f"Next token (top-5): {items}{cont}")
        elif p.task == "translation":
            self.setText(f"Translation: <b>{esc(capture.output_text)}</b>"
                         + ("" if capture.generated else " (typed target, teacher forcing)"))
        elif p.task == "classification":
            self.setText("Label: " + " · ".join(f"<b>{esc(t)}</b> {pr:.1%}" for t, pr in p.items))
        elif p.task == "masked_lm":
            if p.per_position:
                parts = []
                for pos, items in p.per_position:
                    parts.append(f"[MASK] at {pos}: " + " · ".join(f"<b>{esc(t)}</b> {pr:.1%}" for t, pr in items))
                self.setText("<br>".join(parts))
            else:
                self.setText("Masked LM: put [MASK] in the sentence to see the top-5 fillers.")
        else:
            self.setText("This checkpoint has no task head (a bare encoder): only the attention is shown.")
        if capture.notes:
            # a warning (the model cannot read the text) stands out; red stays for errors
            lines = [f"<b style='color:#b35c00'>{esc(n)}</b>" if n.startswith("warning:") else f"<i>{esc(n)}</i>"
                     for n in capture.notes]
            self.setText(self.text() + "<br>" + "<br>".join(lines))
