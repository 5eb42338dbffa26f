"""Headmap's main window: model and input panels, token strip, output, linked views.

All computation goes through ``analysis/`` in worker threads (:mod:`gui.workers`); the model itself
lives in a child process (:mod:`analysis.host`) so loading and running never stall the window. This
module only routes signals and pushes results into widgets.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from analysis.consent import ConsentBook, canonical_reference, local_consent
from analysis.errors import (
    Cancelled,
    ConsentRequiredError,
    HeadmapError,
    RemoteCodeError,
    user_message,
)
from analysis.figures import ViewSpec
from analysis.host import RemoteModel, default_host, in_process

from .panels import EXAMPLES, InputPanel, ModelPanel, OutputPanel, TokenStrip
from .settings import Settings
from .views.canvas import CanvasView
from .views.head import HeadView
from .views.lines import LinesView
from .views.overview import LayerView, ModelView
from .workers import JobRunner

CMAPS = ["viridis", "magma", "inferno", "Blues", "Greys", "cividis", "plasma", "YlOrRd"]
STACK_LABELS = {
    "attentions": "self-attention",
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention (masked)",
    "cross_attentions": "cross-attention (target × source)",
}


def error_message(exc: BaseException) -> str:
    """One sentence for the user, whatever went wrong (:func:`analysis.errors.user_message`)."""
    return user_message(exc)


class MainWindow(QMainWindow):
    """The Headmap window. ``settings`` lets tests use a private settings file."""

    capture_changed = Signal(object)
    model_changed = Signal(object)
    selection_changed = Signal(object)

    def __init__(self, settings: Settings | None = None, theme: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Headmap — attention microscope")
        self.settings = settings or Settings()
        self.runner = JobRunner(self)
        # models live in a child process (analysis.host): loading and running never hold this
        # process's GIL; HEADMAP_IN_PROCESS=1 keeps them here
        self.host = None if in_process() else default_host()
        if self.host is not None:
            self.host.start()  # spawn now: it imports torch/transformers while the window opens
        self.lm = None
        self.capture = None
        self._incoming = None  # a finished run's capture whose views are drawn in the next turn
        self.last_error = ""
        self._pending_run = False
        self.max_tokens = 1024  # longest input captured (attention memory grows with its square)
        self._dialog: QMessageBox | None = None
        # consent to run a checkpoint's own code: per checkpoint and its code's sha256, never carried over
        self.consents = ConsentBook()
        self._dirty: set[int] = set()
        self._updating = False
        self.spec = ViewSpec(view="head", head=0, shared_range=True, theme=theme or self.settings.value("theme", "light"))

        # panels
        self.model_panel = ModelPanel()
        self.input_panel = InputPanel()
        self.tokens = TokenStrip()
        # seq2seq: the decoder side of the pipeline (decoder inputs and the output token each predicts)
        self.dec_tokens = TokenStrip(rows=("decoder input", "id", "predicts"))
        self.dec_label = QLabel("<b>Decoder</b> (row t reads the decoder input at t and predicts the output token t)")
        self.dec_label.setWordWrap(True)
        self.output = OutputPanel()
        # views
        self.tabs = QTabWidget()
        self.head_view = HeadView(theme=self.spec.theme)
        self.layer_view = LayerView(theme=self.spec.theme)
        self.model_view = ModelView(theme=self.spec.theme)
        self.lines_view = LinesView(theme=self.spec.theme)
        for view, name in ((self.head_view, "Head"), (self.layer_view, "Layer"), (self.model_view, "Model"), (self.lines_view, "Lines")):
            self.tabs.addTab(view, name)
        self.extra_tabs: list = []  # analysis tabs added by add_tab (alignment, masks, statistics, …)

        self._build_controls()
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addWidget(self.model_panel)
        ll.addWidget(self.input_panel)
        tok_label = QLabel("<b>Tokens</b> (preprocessing: ids and readable strings; special tokens in red;"
                           " ◌ = a piece of a character that byte-level BPE split into bytes)")
        tok_label.setWordWrap(True)
        ll.addWidget(tok_label)
        ll.addWidget(self.tokens)
        ll.addWidget(self.dec_label)
        ll.addWidget(self.dec_tokens)
        self.dec_label.setVisible(False)
        self.dec_tokens.setVisible(False)
        ll.addWidget(QLabel("<b>Output</b> (postprocessing)"))
        ll.addWidget(self.output)
        ll.addStretch(1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.tabs)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 3)
        split.setSizes([430, 900])
        self.setCentralWidget(split)
        self._build_menu()
        self.statusBar().showMessage("Ready. Choose a model and press Load.")

        # signals
        self.model_panel.load_requested.connect(self.load_model)
        self.model_panel.cancel_requested.connect(self.cancel)
        self.model_panel.trust_toggled.connect(self._on_trust_toggled)
        self.model_panel.reference_changed.connect(self._on_reference_changed)
        self.input_panel.run_requested.connect(self.run)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)
        self.runner.progress.connect(self._on_job_progress)
        self.runner.busy_changed.connect(self._on_busy)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.head_view.cell_clicked.connect(self._on_head_cell_clicked)
        self.head_view.hovered.connect(self._on_hover)
        self.layer_view.head_clicked.connect(self._on_layer_head_clicked)
        self.model_view.cell_clicked.connect(self._on_model_cell_clicked)
        self.tokens.token_clicked.connect(self._on_token_clicked)

        self._install_tabs()
        self._restore_settings()
        from analysis.loader import available_devices

        self.model_panel.device.addItems(available_devices())
        self.refresh_model_choices()

    # ------------------------------------------------------------------ building
    def _build_controls(self) -> None:
        tb = QToolBar("Selection")
        tb.setObjectName("selection-toolbar")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.stack_combo = QComboBox()
        self.stack_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.layer_spin = QSpinBox()
        self.layer_spin.setPrefix("layer ")
        self.head_spin = QSpinBox()
        self.head_spin.setPrefix("head ")
        self.agg_check = QCheckBox("all heads:")
        self.agg_combo = QComboBox()
        self.agg_combo.addItems(["mean", "max"])
        self.hide_special = QCheckBox("hide special")
        self.renorm = QCheckBox("renormalize")
        self.renorm.setChecked(True)
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(["theme"] + CMAPS)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(["linear", "log"])
        self.shared = QCheckBox("shared range")
        self.shared.setChecked(True)
        self.rows_combo = QComboBox()
        self.rows_combo.addItems(["input", "output", "both"])
        self.rows_combo.setToolTip("decoder/cross rows: the decoder input at t, the output token t it predicts, or both")
        self.mask_check = QCheckBox("mark causal mask")
        self.mask_check.setChecked(True)
        self.theme_combo = QComboBox()
        self.theme_combo.addItems(["light", "dark", "presentation"])
        self.lines_all = QCheckBox("lines: colour per head")
        for w in (QLabel("stack"), self.stack_combo, self.layer_spin, self.head_spin, self.agg_check, self.agg_combo,
                  self.hide_special, self.renorm, QLabel("rows"), self.rows_combo, self.mask_check):
            tb.addWidget(w)
        self.addToolBarBreak(Qt.ToolBarArea.TopToolBarArea)
        tb2 = QToolBar("Display")
        tb2.setObjectName("display-toolbar")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb2)
        for w in (QLabel("colours"), self.cmap_combo, self.scale_combo, self.shared, self.lines_all,
                  QLabel("theme"), self.theme_combo):
            tb2.addWidget(w)
        for sig in (self.stack_combo.currentIndexChanged, self.layer_spin.valueChanged, self.head_spin.valueChanged,
                    self.agg_check.toggled, self.agg_combo.currentIndexChanged, self.hide_special.toggled,
                    self.renorm.toggled, self.cmap_combo.currentIndexChanged, self.scale_combo.currentIndexChanged,
                    self.shared.toggled, self.rows_combo.currentIndexChanged, self.mask_check.toggled,
                    self.lines_all.toggled):
            sig.connect(self._on_controls_changed)
        self.theme_combo.currentTextChanged.connect(self.set_theme)

    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        self.file_menu = m
        for text, shortcut, slot in (
            ("&Open session…", QKeySequence.StandardKey.Open, self._on_open_session),
            ("&Save session…", QKeySequence.StandardKey.Save, self._on_save_session),
            ("&Export view…", QKeySequence("Ctrl+E"), self._on_export),
            ("&Copy image", QKeySequence("Ctrl+Shift+C"), self.copy_image),
        ):
            a = QAction(text, self)
            a.setShortcut(shortcut)
            a.triggered.connect(slot)
            m.addAction(a)
        m.addSeparator()
        act = QAction("&Quit", self)
        act.setShortcut(QKeySequence.StandardKey.Quit)
        act.triggered.connect(self.close)
        m.addAction(act)
        self.view_menu = self.menuBar().addMenu("&View")
        for key, delta, what in ((Qt.Key.Key_Up, -1, "layer"), (Qt.Key.Key_Down, 1, "layer"),
                                 (Qt.Key.Key_Left, -1, "head"), (Qt.Key.Key_Right, 1, "head")):
            a = QAction(f"{'previous' if delta < 0 else 'next'} {what}", self)
            a.setShortcut(QKeySequence(Qt.KeyboardModifier.AltModifier | key))
            a.triggered.connect(lambda _=False, d=delta, w=what: self.step(w, d))
            self.view_menu.addAction(a)
            self.tabs.addAction(a)
        # plain arrows on the four base views (a clicked canvas takes the focus); other tabs keep
        # their own arrow keys (Steps)
        for view in (self.head_view, self.layer_view, self.model_view, self.lines_view):
            view.canvas.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            for key, delta, what in ((Qt.Key.Key_Up, -1, "layer"), (Qt.Key.Key_Down, 1, "layer"),
                                     (Qt.Key.Key_Left, -1, "head"), (Qt.Key.Key_Right, 1, "head")):
                a = QAction(self)
                a.setShortcut(QKeySequence(key))
                a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                a.triggered.connect(lambda _=False, d=delta, w=what: self.step(w, d))
                view.addAction(a)

    def _install_tabs(self) -> None:
        """The analysis tabs: translation alignment and steps, mask lab, statistics/rollout/compare."""
        from .tabs import alignment, analysis_tabs, mask_lab

        for module in (alignment, mask_lab, analysis_tabs):
            module.install(self)

    def add_tab(self, widget, name: str) -> None:
        """Add an analysis tab; it gets ``show_window_state(window)`` when visible and the capture
        or the selection changed."""
        self.tabs.addTab(widget, name)
        self.extra_tabs.append(widget)

    # ------------------------------------------------------------------ settings
    def _restore_settings(self) -> None:
        s = self.settings
        geo = s.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1400, 860)
        self.model_panel.set_reference(s.value("last_model", "bundled:minilm"))
        self.input_panel.text.setPlainText(s.value("text", EXAMPLES["encoder"]))
        self.model_panel.dtype.setCurrentText(s.value("dtype", "auto"))
        self.theme_combo.setCurrentText(self.spec.theme)
        self.cmap_combo.setCurrentText(s.value("cmap", "theme"))
        self.scale_combo.setCurrentText(s.value("scale", "linear"))
        self.hide_special.setChecked(s.value("hide_special", False, bool))
        self.shared.setChecked(s.value("shared_range", True, bool))
        self.set_theme(self.spec.theme)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("last_model", self.lm.reference if self.lm is not None else self.model_panel.reference())
        s.setValue("text", self.input_panel.text.toPlainText())
        s.setValue("dtype", self.model_panel.dtype.currentText())
        s.setValue("theme", self.spec.theme)
        s.setValue("cmap", self.cmap_combo.currentText())
        s.setValue("scale", self.scale_combo.currentText())
        s.setValue("hide_special", self.hide_special.isChecked())
        s.setValue("shared_range", self.shared.isChecked())
        s.sync()

    def refresh_model_choices(self) -> None:
        from analysis.cache_scan import cached_hub_models
        from analysis.loader import bundled_choices

        self.model_panel.set_choices(bundled_choices(), self.settings.recent_models(), cached_hub_models())

    # ------------------------------------------------------------------ jobs
    def load_model(self, ref: str | None = None, allow_pickle: bool = False) -> None:
        from analysis.loader import load_model

        ref = (ref or self.model_panel.reference()).strip()
        if not ref:
            self.show_error("choose a model first: a bundled model, a folder, a .gguf file or a hub id")
            return
        if self.runner.is_busy("run"):
            self.runner.cancel("run")
            self.statusBar().showMessage("the running capture was cancelled: a new model is loading")
        self._loading_ref = ref
        self.model_panel.show_progress("resolve", 0.0, f"loading {ref}…")
        job = load_model if self.host is None else partial(self.host.load, owner=f"window-{id(self)}")
        self.runner.start("load", job, ref, dtype=self.model_panel.dtype.currentText(),
                          device=self.model_panel.device.currentText() or "auto",
                          trust_remote_code=self.consents.get(ref), allow_pickle=allow_pickle)

    def run(self) -> None:
        if self.runner.is_busy("load"):
            self._pending_run = True
            self.statusBar().showMessage("the model is still loading; the run starts when it is ready")
            return
        if self.lm is None:
            self.show_error("load a model first (choose one and press Load)")
            return
        from analysis.capture import capture

        inp = self.input_panel.inputs()
        if not inp["text"].strip():
            self.show_error("the text is empty; type a sentence to run")
            return
        kind = self.lm.kind
        kwargs = {"store_dtype": np.float16, "max_tokens": self.max_tokens}
        if kind == "seq2seq":
            if inp["generate"]:
                kwargs.update(generate=True, num_beams=inp["num_beams"], target_lang=inp["target_lang"])
            else:
                kwargs.update(target=inp["target"])
        elif kind == "decoder" and inp["max_new_tokens"] > 0:
            kwargs.update(generate=True, max_new_tokens=inp["max_new_tokens"])
        self.statusBar().showMessage("running…")
        self.runner.start("run", self.model_job(capture), self.lm, inp["text"], **kwargs)

    def model_job(self, fn):
        """``fn(lm, …)`` as a runner job: in the model process when the model lives there."""
        if isinstance(self.lm, RemoteModel) and self.lm.host is not None:
            return partial(self.lm.host.call, fn)
        return fn

    def cancel(self) -> None:
        hit = False
        for ch in ("load", "run"):
            hit = self.runner.cancel(ch) or hit
        self._pending_run = False
        self.model_panel.show_progress("cancelled", 0.0, "cancelled")
        self.model_panel.set_busy(False)
        self.statusBar().showMessage("cancelled" if hit else "nothing to cancel")

    def _on_busy(self, channel: str, busy: bool) -> None:
        if channel == "load":
            self.model_panel.set_busy(busy)

    def _on_job_progress(self, channel: str, stage: str, fraction, message: str) -> None:
        if channel == "load":
            self.model_panel.show_progress(stage, fraction, message)
        self.statusBar().showMessage(message)

    def _on_job_finished(self, channel: str, result) -> None:
        if channel == "load":
            self._set_model(result)
        elif channel == "run":
            self._deliver_capture(result)
        else:
            handler = getattr(self, f"_on_{channel}_finished", None)
            if handler:
                handler(result)

    def _on_job_failed(self, channel: str, exc) -> None:
        if isinstance(exc, Cancelled):
            self.statusBar().showMessage("cancelled")
            return
        if channel == "load":
            self.model_panel.show_progress("failed", 0.0, "")
            self._pending_run = False
            if isinstance(exc, ConsentRequiredError) and "pickle" in str(exc):
                self._ask_pickle(exc)
                return
            if isinstance(exc, RemoteCodeError) and exc.request is not None:
                self._ask_remote_code(exc)
                return
        self.show_error(error_message(exc))

    def _ask_pickle(self, exc) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Pickle weights", str(exc) + "\n\nLoad them anyway?",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.finished.connect(lambda r: r == QMessageBox.StandardButton.Yes and self.load_model(self._loading_ref, allow_pickle=True))
        self._dialog = box
        box.open()

    def _set_model(self, lm) -> None:
        self.lm = lm
        s = lm.summary
        card = "<br>".join(s.lines())
        if lm.notes:
            card += "<br><i>" + "<br>".join(lm.notes) + "</i>"
        self.model_panel.card.setText(card)
        self.model_panel.show_progress("ready", 1.0, f"loaded {lm.reference}")
        self.input_panel.set_kind(lm.kind)
        self.settings.add_recent(lm.reference)
        self.settings.setValue("last_model", lm.reference)
        self.statusBar().showMessage(f"loaded {lm.reference} ({s.kind}, {s.architecture})")
        self.model_changed.emit(lm)
        if self._pending_run or self.input_panel.text.toPlainText().strip():
            self._pending_run = False
            self.run()

    # ------------------------------------------------------------------ capture and views
    def set_capture(self, cap) -> None:
        """Show ``cap`` everywhere now (sessions, tests); a finished run goes through
        :meth:`_deliver_capture`, which splits the same work over three event-loop turns."""
        self._show_panels(cap)
        self._apply_capture(cap)

    def _deliver_capture(self, cap) -> None:
        # the token strip and output panel now, the view's data and layout in the next event-loop
        # turn, its pixels in the one after: each part stays well inside a frame and the window
        # answers input in between (a new 256-token sentence: ~5 ms of panels, ~10 ms of data and
        # layout, ~20 ms of drawing)
        self._incoming = cap
        self._show_panels(cap)
        QTimer.singleShot(0, self, self._apply_incoming)

    def _apply_incoming(self) -> None:
        cap, self._incoming = self._incoming, None
        if cap is None:
            return
        view = self.tabs.currentWidget()
        if isinstance(view, CanvasView):
            with view.deferred_draws():  # its data and layout now, its pixels in a third turn
                self._apply_capture(cap)
        else:
            self._apply_capture(cap)

    def _show_panels(self, cap) -> None:
        self.tokens.set_tokens(cap.source, cap.prompt_length if cap.generated and cap.kind == "decoder" else None)
        seq2seq = cap.decoder_inputs is not None and cap.outputs is not None
        self.dec_label.setVisible(seq2seq)
        self.dec_tokens.setVisible(seq2seq)
        if seq2seq:
            self.dec_tokens.set_tokens(cap.decoder_inputs, predicts=cap.outputs)
        self.output.set_prediction(cap)

    def _apply_capture(self, cap) -> None:
        self.capture = cap
        self._updating = True
        try:
            self.stack_combo.clear()
            for name in cap.stack_names:
                self.stack_combo.addItem(STACK_LABELS.get(name, name), name)
            self.rows_combo.setEnabled(cap.kind == "seq2seq")
            self._sync_ranges()
        finally:
            self._updating = False
        self.spec = replace(self._spec_from_controls(), alignment_layer=None, alignment_head=None)
        self._dirty = set(range(self.tabs.count()))
        self.refresh()
        msg = f"captured {len(cap.source)} tokens · " + ", ".join(f"{n} {cap.shape(n)[0]}×{cap.shape(n)[1]}" for n in cap.stack_names)
        if cap.notes:
            msg += " · " + "; ".join(cap.notes)
        self.statusBar().showMessage(msg)
        self.capture_changed.emit(cap)

    def _sync_ranges(self) -> None:
        cap = self.capture
        if cap is None:
            return
        name = self.stack_combo.currentData() or cap.stack_names[0]
        layers, heads = cap.shape(name)[:2]
        self.layer_spin.setRange(0, layers - 1)
        self.head_spin.setRange(0, heads - 1)
        self.layer_spin.setSuffix(f" / {layers - 1}")
        self.head_spin.setSuffix(f" / {heads - 1}")

    def _spec_from_controls(self) -> ViewSpec:
        cmap = self.cmap_combo.currentText()
        return replace(
            self.spec,
            stack=self.stack_combo.currentData() or None,
            layer=self.layer_spin.value(),
            head=None if self.agg_check.isChecked() else self.head_spin.value(),
            aggregation=self.agg_combo.currentText(),
            hide_special=self.hide_special.isChecked(),
            renormalize=self.renorm.isChecked(),
            cmap=None if cmap == "theme" else cmap,
            scale=self.scale_combo.currentText(),
            shared_range=self.shared.isChecked(),
            row_labels=self.rows_combo.currentText(),
            show_causal_mask=self.mask_check.isChecked(),
        )

    def _on_controls_changed(self, *_args) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self._sync_ranges()
        finally:
            self._updating = False
        self.head_spin.setEnabled(not self.agg_check.isChecked())
        if self.capture is not None:
            name = self.stack_combo.currentData() or self.capture.stack_names[0]
            self.mask_check.setEnabled(self.capture.is_causal(name))
        self.lines_view.set_all_heads(self.lines_all.isChecked())
        self.spec = self._spec_from_controls()
        self._dirty = set(range(self.tabs.count()))
        self.refresh()
        self.selection_changed.emit(self.spec)

    def refresh(self) -> None:
        """Redraw the visible view (the others redraw when they become visible)."""
        if self.capture is None:
            return
        idx = self.tabs.currentIndex()
        if idx not in self._dirty:
            return
        self._dirty.discard(idx)
        w = self.tabs.widget(idx)
        try:
            if w in self.extra_tabs:
                w.show_window_state(self)
            else:
                from analysis.figures import validate_spec

                view = {self.head_view: "head", self.layer_view: "layer", self.model_view: "model", self.lines_view: "lines"}[w]
                validate_spec(self.capture, replace(self.spec, view=view))  # one clear sentence, never an empty map
                w.display(self.capture, self.spec)
        except Exception as exc:  # noqa: BLE001 - a view failure is a message, never a dead slot
            self.show_error(error_message(exc))

    def _on_tab_changed(self, _idx: int) -> None:
        self.refresh()

    def select(self, layer: int | None = None, head: int | None = None, stack: str | None = None, tab: str | None = None) -> None:
        """Programmatic selection (clicks in the overviews, keyboard, tests)."""
        self._updating = True
        try:
            if stack is not None:
                i = self.stack_combo.findData(stack)
                if i >= 0:
                    self.stack_combo.setCurrentIndex(i)
                self._sync_ranges()
            if layer is not None:
                self.layer_spin.setValue(layer)
            if head is not None:
                self.agg_check.setChecked(False)
                self.head_spin.setValue(head)
        finally:
            self._updating = False
        if tab is not None:
            for i in range(self.tabs.count()):
                if self.tabs.tabText(i) == tab:
                    self.tabs.setCurrentIndex(i)
        self._on_controls_changed()

    def step(self, what: str, delta: int) -> None:
        spin = self.layer_spin if what == "layer" else self.head_spin
        spin.setValue(max(spin.minimum(), min(spin.maximum(), spin.value() + delta)))

    def keyPressEvent(self, event) -> None:  # arrow keys on the base views change layer / head
        on_view = self.tabs.currentWidget() in (self.head_view, self.layer_view, self.model_view, self.lines_view)
        if on_view and (self.tabs.isAncestorOf(self.focusWidget() or self.tabs) or self.focusWidget() is None):
            k = event.key()
            if k in (Qt.Key.Key_Up, Qt.Key.Key_Down):
                self.step("layer", -1 if k == Qt.Key.Key_Up else 1)
                return
            if k in (Qt.Key.Key_Left, Qt.Key.Key_Right):
                self.step("head", -1 if k == Qt.Key.Key_Left else 1)
                return
        super().keyPressEvent(event)

    def _on_head_cell_clicked(self, i: int, j: int) -> None:
        self.statusBar().showMessage(f"query {i} → key {j}")

    def _on_layer_head_clicked(self, head: int) -> None:
        self.select(head=head, tab="Head")

    def _on_model_cell_clicked(self, layer: int, head: int) -> None:
        self.select(layer=layer, head=head, tab="Head")

    def _on_token_clicked(self, index: int) -> None:
        if self.tabs.currentWidget() is self.lines_view:
            self.lines_view.focus_token("q", index)

    def _on_hover(self, text: str) -> None:
        if text:
            self.statusBar().showMessage(text)

    # ------------------------------------------------------------------ export and sessions
    VIEW_OF_TAB = {"Head": "head", "Layer": "layer", "Model": "model", "Lines": "lines", "Alignment": "alignment"}

    def current_spec(self) -> ViewSpec:
        """The visible view's current state as a ViewSpec (what Export writes)."""
        name = self.tabs.tabText(self.tabs.currentIndex())
        view = self.VIEW_OF_TAB.get(name)
        if view is None:
            raise HeadmapError(f"the {name} tab has no figure export; export the Head, Layer, Model, Lines or Alignment view")
        return replace(self.spec, view=view)

    def export_view(self, path: str, dpi: int | None = None) -> str:
        """Export the visible view to ``path`` (.png/.svg/.pdf), atomically."""
        from analysis.figures import export_figure

        if self.capture is None:
            raise HeadmapError("nothing to export yet; run a sentence first")
        spec = self.current_spec()
        if dpi is not None:
            spec = replace(spec, dpi=dpi)
        return str(export_figure(self.capture, spec, path))

    def _on_export(self) -> None:
        from PySide6.QtWidgets import QFileDialog, QInputDialog

        if self.capture is None:
            self.show_error("nothing to export yet; run a sentence first")
            return
        try:
            self.current_spec()
        except HeadmapError as exc:
            self.show_error(str(exc))
            return
        path, flt = QFileDialog.getSaveFileName(self, "Export view", f"headmap-{self.current_spec().view}.png",
                                                "PNG image (*.png);;SVG vector (*.svg);;PDF (*.pdf)")
        if not path:
            return
        dpi = self.spec.dpi
        if path.lower().endswith(".png"):
            dpi, ok = QInputDialog.getInt(self, "PNG resolution", "DPI (72–600)", 200, 72, 600)
            if not ok:
                return
        try:
            out = self.export_view(path, dpi)
        except HeadmapError as exc:
            self.show_error(str(exc))
            return
        self.statusBar().showMessage(f"exported {out}")

    def copy_image(self) -> None:
        """Copy the visible view, rendered as a figure, to the clipboard."""
        import io

        from PySide6.QtGui import QGuiApplication, QImage

        from analysis.figures import build_figure

        if self.capture is None:
            self.show_error("nothing to copy yet; run a sentence first")
            return
        try:
            fig = build_figure(self.capture, self.current_spec())
        except HeadmapError as exc:
            self.show_error(str(exc))
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.spec.dpi)
        img = QImage.fromData(buf.getvalue(), "PNG")
        QGuiApplication.clipboard().setImage(img)
        self.statusBar().showMessage("view copied to the clipboard")

    def save_session_to(self, path: str) -> None:
        from analysis.session import save_session

        if self.capture is None:
            raise HeadmapError("nothing to save yet; run a sentence first")
        inputs = self.input_panel.inputs()
        options = {"spec": {k: v for k, v in self.spec.__dict__.items()}, "dtype": self.model_panel.dtype.currentText(),
                   "tab": self.tabs.tabText(self.tabs.currentIndex())}
        save_session(path, self.capture, model_ref=self.capture.model, inputs=inputs, options=options)

    def open_session(self, path: str) -> None:
        """Reopen a session: the captured arrays come from the file, no model is needed."""
        from analysis.session import load_session

        sess = load_session(path)
        self.input_panel.text.setPlainText(sess.inputs.get("text", sess.capture.text) or "")
        self.model_panel.set_reference(sess.model_ref)
        self.input_panel.set_kind(sess.capture.kind)
        self.set_capture(sess.capture)
        spec = dict(sess.options.get("spec", {}))
        self.select(layer=spec.get("layer"), head=spec.get("head"), stack=spec.get("stack"), tab=sess.options.get("tab"))
        if "head" in spec and spec["head"] is None:
            self.agg_check.setChecked(True)
        self.statusBar().showMessage(f"reopened session {path} ({sess.model_ref}; the model is not loaded)")

    def _on_save_session(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Save session", "lesson.headmap", "Headmap session (*.headmap)")
        if path:
            try:
                self.save_session_to(path)
                self.statusBar().showMessage(f"session saved to {path}")
            except HeadmapError as exc:
                self.show_error(str(exc))

    def _on_open_session(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Open session", "", "Headmap session (*.headmap);;All files (*)")
        if path:
            try:
                self.open_session(path)
            except HeadmapError as exc:
                self.show_error(str(exc))

    # ------------------------------------------------------------------ theme, errors
    def set_theme(self, name: str) -> None:
        from .theme import apply_qt_theme

        self.spec = replace(self.spec, theme=name)
        apply_qt_theme(name)
        for v in (self.head_view, self.layer_view, self.model_view, self.lines_view):
            v.theme = __import__("analysis.themes", fromlist=["get_theme"]).get_theme(name)
            v.set_theme(name)
        self._dirty = set(range(self.tabs.count()))
        self.refresh()

    def show_error(self, message: str) -> None:
        """Status bar + a non-blocking dialog; the window stays usable."""
        self.last_error = message
        self.statusBar().showMessage(f"Error: {message}")
        if self._dialog is not None:
            self._dialog.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "Headmap", message, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self._dialog = box
        box.open()

    def _on_reference_changed(self, ref: str) -> None:
        # the trust box shows whether the model named in the box has consent: it never carries over
        self.model_panel.show_trusted(self.consents.get(ref) is not None)

    def _on_trust_toggled(self, on: bool) -> None:
        ref = self.model_panel.reference()
        if not on:
            self.consents.revoke(ref)
            return
        consent = local_consent(ref)
        code = (f" ({', '.join(consent.files)}; sha256 {consent.code_sha256[:12]}…)"
                if consent.code_sha256 and consent.files else "")
        self._ask_code_consent(
            f"Trusting remote code runs Python code from {ref or 'this repository'}{code} on this computer, with "
            "your permissions. The consent covers this model only, and only its code as it is now: another model, "
            "or a changed code file, asks again.\n\nOnly allow it for repositories whose authors you trust.",
            consent, reload=False)

    def _ask_remote_code(self, exc: RemoteCodeError) -> None:
        self.statusBar().showMessage(f"waiting for your decision: {exc}")
        self._ask_code_consent(f"{exc}.\n\nRun the code of {exc.request.reference}?", exc.request, reload=True)

    def _ask_code_consent(self, text: str, consent, reload: bool) -> None:
        """One question about one checkpoint's code; Yes records the consent (and loads again)."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Trust remote code?", text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        ref = self._loading_ref if reload else self.model_panel.reference()

        def done(result: int) -> None:
            granted = result == QMessageBox.StandardButton.Yes
            if granted:
                self.consents.grant(consent)
            if canonical_reference(self.model_panel.reference()) == consent.reference:
                self.model_panel.show_trusted(self.consents.get(consent.reference) is not None)
            if granted and reload:
                self.load_model(ref)

        box.finished.connect(done)
        if self._dialog is not None:
            self._dialog.close()
        self._dialog = box
        box.open()

    def closeEvent(self, event) -> None:
        self.save_settings()
        self.runner.wait_all(5000)
        self._release_model()
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel and wait for every worker, free the model in the model process (tests, close)."""
        done = self.runner.wait_all(timeout_ms)
        self._release_model()
        return done

    def _release_model(self) -> None:
        if isinstance(self.lm, RemoteModel) and self.lm.host is not None:
            self.lm.host.release(self.lm)

    def autostart(self, ref: str | None = None) -> None:
        """Load ``ref`` (or the last model) and run the sentence in the editor."""
        QTimer.singleShot(0, lambda: self.load_model(ref or self.model_panel.reference()))
