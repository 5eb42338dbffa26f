"""Headmap's main window: it only assembles the parts.

* :class:`gui.state.ViewerState` – the capture, the model and the display selection;
* :class:`gui.toolbar.SelectionToolbar` – the controls that edit the selection;
* :class:`gui.controller.ModelController` – loading, running, cancelling (jobs of
  :class:`gui.workers.Jobs`, the model in the process of :mod:`analysis.host`);
* :class:`gui.actions.FileActions` – export, copy image, sessions;
* the panels (:mod:`gui.panels`), the map views (:mod:`gui.views`) and the analysis tabs
  (:mod:`gui.tabs`), which get a :class:`gui.tabs.base.TabContext`, never the window.

``MainWindow(staged=True)`` (``python main.py``) builds only what its first frame shows: the
panels, the menus, the toolbar and one "Preparing…" page per tab. Matplotlib's figure and axes
modules, the views themselves, the devices of the model process and the models in the Hugging Face
cache come after that frame (:meth:`MainWindow.finish_start`): imported off the GUI thread, then
one view per event-loop turn, while the status bar says so. Without it everything is built at
once (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from analysis.errors import user_message
from analysis.host import default_host, in_process
from analysis.views.spec import ViewSpec

from .actions import FileActions, saved_selection
from .controller import ModelController
from .panels import EXAMPLES, InputPanel, ModelPanel, OutputPanel, TokenStrip, token_legend
from .settings import Settings
from .state import PERSISTED, ViewerState
from .tabs.base import TabContext
from .toolbar import SelectionToolbar
from .workers import JobHandle, Jobs

ARROWS = ((Qt.Key.Key_Up, -1, "layer"), (Qt.Key.Key_Down, 1, "layer"), (Qt.Key.Key_Left, -1, "head"),
          (Qt.Key.Key_Right, 1, "head"))
#: the window's tabs, in order: the four map views, then the analysis tabs
TAB_NAMES = ("Head", "Layer", "Model", "Lines", "Alignment", "Steps", "Mask lab", "Statistics", "Rollout", "Compare")
PREPARING = "Preparing the views…"


def import_views(task=None) -> None:
    """Import what the views are made of (matplotlib's figure, axes and Qt canvas, every tab's
    module) and register the fallback fonts: a job, so that the window answers meanwhile. Qt
    widgets are only *defined* here; the GUI thread creates them."""
    import importlib

    from analysis.fonts import ensure_cjk_font

    for name in ("matplotlib.backends.backend_qtagg", "analysis.figures", "gui.views.head", "gui.views.lines",
                 "gui.views.overview", "gui.tabs.alignment", "gui.tabs.steps", "gui.tabs.mask_lab", "gui.tabs.stats",
                 "gui.tabs.rollout", "gui.tabs.compare"):
        importlib.import_module(name)
        if task is not None:
            task.check()
    ensure_cjk_font()


def cached_models(task=None) -> list[str]:
    """The models in the local Hugging Face cache (a job: scanning it takes a while)."""
    from analysis.cache_scan import cached_hub_models

    return cached_hub_models()


def valid_theme(name) -> str:
    """A theme name from the settings, or ``light`` when it is not one."""
    from analysis.themes import THEMES

    return name if isinstance(name, str) and name in THEMES else "light"


def first_size(available) -> tuple[int, int]:
    """The window's size at its first start: 1400 × 860, or less where the screen is smaller."""
    if available is None:
        return 1400, 860
    return min(1400, int(available.width() * 0.95)), min(860, int(available.height() * 0.92))


#: a stored option that cannot be used
BAD = object()


def readable_option(settings, key: str):
    """The display option ``key`` of the settings, checked (``BAD`` when it makes no sense)."""
    from dataclasses import replace

    from analysis.errors import InputError
    from analysis.views.spec import check_options

    kinds = {f.name: f.type for f in fields(ViewSpec)}
    is_bool = "bool" in str(kinds[key])
    raw = settings.value(key, None)
    if is_bool:
        if str(raw).lower() not in ("true", "false", "1", "0", "yes", "no"):
            return BAD
        return settings.value(key, None, bool)
    value = None if key == "cmap" and raw in ("", "theme", None) else raw
    if value is not None and not isinstance(value, str):
        return BAD
    try:
        check_options(replace(ViewSpec(), **{key: value}))
    except (InputError, TypeError, ValueError):
        return BAD
    return value


class MainWindow(QMainWindow):
    """The Headmap window. ``settings`` lets tests use a private settings file; ``staged``: build
    the views after the first frame (:meth:`finish_start`), else at once.

    Signals
    -------
    views_ready() : a staged start built the views (the window is complete)
    """

    views_ready = Signal()

    def __init__(self, settings: Settings | None = None, theme: str | None = None, staged: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("Headmap — attention microscope")
        self.settings = settings or Settings()
        # captions on: the window is for learning (exports write them only when asked, --caption)
        self.state = ViewerState(ViewSpec(view="head", head=0, shared_range=True, renormalize=True, caption=True,
                                          theme=theme or valid_theme(self.settings.value("theme", "light"))), self)
        self.capture_changed = self.state.capture_changed
        self.model_changed = self.state.model_changed
        self.selection_changed = self.state.selection_changed
        self.runner = Jobs(self)
        # models live in a child process (analysis.host): loading and running never hold this
        # process's GIL; HEADMAP_IN_PROCESS=1 keeps them here
        self.host = None if in_process() else default_host()
        if self.host is not None and not staged:
            self.host.start()  # spawn now: it imports torch/transformers while the window opens
        self.last_error = ""
        self.settings_problem = ""  # what could not be read from the settings file (said once)
        self._dialog: QMessageBox | None = None
        self._incoming = None  # a finished run's capture whose views are drawn in the next turn
        self._theme = self.state.spec.theme

        self._build_panels()
        self.controller = ModelController(self, self.state, self.runner, self.host, self.model_panel,
                                          self.input_panel, self.settings, self.open_dialog)
        self.toolbar = SelectionToolbar(self, self.state)
        for name in ("stack_combo", "layer_spin", "head_spin", "agg_check", "agg_combo", "hide_special", "renorm",
                     "cmap_combo", "scale_combo", "shared", "rows_combo", "mask_check", "theme_combo", "lines_all",
                     "stretch"):
            setattr(self, name, getattr(self.toolbar, name))
        self.ctx = TabContext(self.state, self.runner, self.show_error, self.statusBar().showMessage,
                              self.controller.model_job)
        self._views: dict = {}  # tab name → its view, as they are built
        self._then: Callable[[], None] | None = None
        self._painted = False  # the first frame is on the screen
        self._deferred: Callable[[], None] | None = None  # what waits for it
        self.tabs = QTabWidget()
        for name in TAB_NAMES:  # a page that says what is coming, until the view takes its place
            page = QLabel(f"Preparing the {name} view…")
            page.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.tabs.addTab(page, name)
        self.views_built = False
        self.actions = FileActions(self, self.state, self.runner, self.tabs.currentWidget, self.input_panel.inputs,
                                   self._session_options, self._open_capture, self.statusBar().showMessage,
                                   self.show_error, self.settings.add_recent_session)
        self._build_layout()
        self._build_menu()
        self._connect()
        self.setAcceptDrops(True)  # a checkpoint folder, a .gguf or a .headmap dropped on the window opens
        self.statusBar().showMessage(PREPARING if staged else "Ready. Choose a model and press Load.")
        self._restore_settings()
        if staged:  # the model process says later whether it has more (finish_start)
            self.model_panel.device.addItems(["auto", "cpu"])
            self._show_choices([])
            return
        from analysis.loader import available_devices

        self.model_panel.device.addItems(available_devices())
        self.refresh_model_choices()
        self._build_views()

    # ------------------------------------------------------------------ staged start
    def finish_start(self, first: Callable[[], None] | None = None,
                     then: Callable[[], None] | None = None) -> None:
        """The rest of a ``staged`` start, once the first frame is painted (nothing competes with
        it for the CPU or the GIL before): the model process starts, ``first()`` runs (the first
        load: it goes on next to the views), the views and the cached models are prepared without
        holding the event loop for long, then the model process's devices are asked; ``then()``
        once the views are ready (a session to show). Call it after :meth:`show`."""
        self._then = then
        if not self.settings_problem:  # that sentence is said first, and once
            self.statusBar().showMessage(PREPARING)

        def start() -> None:
            if self.host is not None:
                self.host.start()  # it imports torch and transformers meanwhile
            if first is not None:
                first()
            job = self.runner.start("views", import_views)
            job.finished.connect(lambda _r: QTimer.singleShot(0, self, self._build_next_view))
            job.failed.connect(self.show_error)  # a broken matplotlib: said in one sentence
            self.runner.start("choices", cached_models).finished.connect(self._show_choices)

        self._after_first_frame(start)

    def _after_first_frame(self, fn: Callable[[], None]) -> None:
        """``fn()`` in the turn after the first frame was painted (at once when it was); half a
        second at most after now when no frame comes (a window that is never exposed)."""
        if self._painted:
            QTimer.singleShot(0, self, fn)
            return
        self._deferred = fn
        QTimer.singleShot(500, self, self._run_deferred)

    def _run_deferred(self) -> None:
        fn, self._deferred = self._deferred, None
        if fn is not None:
            fn()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            if self._deferred is not None:  # after every widget of this frame has painted
                QTimer.singleShot(0, self, self._run_deferred)

    def _build_next_view(self) -> None:
        """One view per event-loop turn (tens of milliseconds each), the window answers between."""
        if self.views_built:
            return
        made = self._views
        name = TAB_NAMES[len(made)]
        made[name] = self._new_view(name)
        self._put_view(name, made[name])
        if len(made) < len(TAB_NAMES):
            QTimer.singleShot(0, self, self._build_next_view)
            return
        self._views_done(made)
        if self.statusBar().currentMessage() == PREPARING:
            self.statusBar().showMessage("Ready. Choose a model and press Load.")
        from analysis.loader import device_choices

        if self.host is None:
            devices = self.runner.start("devices", device_choices)
        else:  # the devices that count are the model process's (it imports torch, this one never does)
            devices = self.runner.start("devices", self.host.call, device_choices)
        devices.finished.connect(self._add_devices)
        self.views_ready.emit()
        then, self._then = self._then, None
        if then is not None:
            then()

    def _add_devices(self, devices: list[str]) -> None:
        combo = self.model_panel.device
        for name in devices:
            if combo.findText(name) < 0:
                combo.addItem(name)

    def _show_choices(self, cached: list[str]) -> None:
        from analysis.loader import bundled_choices

        self.model_panel.set_choices(bundled_choices(), self.settings.recent_models(), cached)

    # ------------------------------------------------------------------ building
    def _build_panels(self) -> None:
        self.model_panel = ModelPanel()
        self.input_panel = InputPanel()
        self.tokens = TokenStrip()
        # seq2seq: the decoder side of the pipeline (decoder inputs and the output token each predicts)
        self.dec_tokens = TokenStrip(rows=("decoder input", "id", "predicts"))
        self.dec_label = QLabel("<b>Decoder</b> (row t reads the decoder input at t and predicts the output token t)")
        self.dec_label.setWordWrap(True)
        self.output = OutputPanel()

    def _new_view(self, name: str):
        """The view or tab ``name`` of :data:`TAB_NAMES`, attached to the viewer state."""
        theme = self.state.spec.theme
        if name in ("Head", "Layer", "Model", "Lines"):
            from .views.head import HeadView
            from .views.lines import LinesView
            from .views.overview import LayerView, ModelView

            view = {"Head": HeadView, "Layer": LayerView, "Model": ModelView, "Lines": LinesView}[name](theme=theme)
            view.attach(self.ctx)
            return view
        from .tabs.alignment import AlignmentTab
        from .tabs.compare import CompareTab
        from .tabs.mask_lab import MaskLabTab
        from .tabs.rollout import RolloutTab
        from .tabs.stats import StatsTab
        from .tabs.steps import StepsTab

        return {"Alignment": AlignmentTab, "Steps": StepsTab, "Mask lab": MaskLabTab, "Statistics": StatsTab,
                "Rollout": RolloutTab, "Compare": CompareTab}[name](self.ctx)

    def _put_view(self, name: str, view) -> None:
        """``view`` takes the place of its "Preparing…" page (the same tab stays selected)."""
        i = TAB_NAMES.index(name)
        current = self.tabs.currentIndex()
        page = self.tabs.widget(i)
        self.tabs.removeTab(i)
        self.tabs.insertTab(i, view, name)
        self.tabs.setCurrentIndex(current)
        page.deleteLater()

    def _build_views(self) -> None:
        """Every view at once (a window that is not ``staged``)."""
        made = self._views
        for name in TAB_NAMES:
            made[name] = self._new_view(name)
            self._put_view(name, made[name])
        self._views_done(made)

    def _views_done(self, made: dict) -> None:
        self.head_view, self.layer_view = made["Head"], made["Layer"]
        self.model_view, self.lines_view = made["Model"], made["Lines"]
        self.extra_tabs = [made[name] for name in TAB_NAMES[4:]]
        self.view_menu.addAction(self.head_view.reset_zoom_action)  # the Head view's zoom (Ctrl+0)
        self.views_built = True
        self._add_view_keys()
        self._connect_views()

    def _build_layout(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addWidget(self.model_panel)
        ll.addWidget(self.input_panel)
        self.tok_label = QLabel(token_legend(""))
        self.tok_label.setWordWrap(True)
        ll.addWidget(self.tok_label)
        ll.addWidget(self.tokens)
        ll.addWidget(self.dec_label)
        ll.addWidget(self.dec_tokens)
        self.dec_label.setVisible(False)
        self.dec_tokens.setVisible(False)
        ll.addWidget(QLabel("<b>Output</b> (postprocessing)"))
        ll.addWidget(self.output)
        ll.addStretch(1)
        # the panels scroll rather than cut their content (a large font, a small screen)
        self.left_scroll = QScrollArea()
        self.left_scroll.setWidgetResizable(True)
        self.left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.left_scroll.setWidget(left)
        left.setMinimumWidth(380)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.left_scroll)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 3)
        split.setSizes([430, 900])
        self.setCentralWidget(split)

    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        self.file_menu = m
        for text, shortcut, slot in (
            ("&Open session…", QKeySequence.StandardKey.Open, self.actions.on_open_session),
            ("&Save session…", QKeySequence.StandardKey.Save, self.actions.on_save_session),
            ("&Export view…", QKeySequence("Ctrl+E"), self.actions.on_export),
            ("&Copy image", QKeySequence("Ctrl+Shift+C"), self.copy_image),
        ):
            a = QAction(text, self)
            a.setShortcut(shortcut)
            a.triggered.connect(slot)
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        m.addSeparator()
        act = QAction("&Quit", self)
        act.setShortcut(QKeySequence.StandardKey.Quit)
        act.triggered.connect(self.close)
        m.addAction(act)
        self.captions_action = QAction("Show &captions", self)
        self.captions_action.setCheckable(True)
        self.captions_action.setShortcut(QKeySequence("Ctrl+K"))
        self.captions_action.setToolTip("say under each view, in plain words, what its rows, columns and weights are")
        self.captions_action.toggled.connect(lambda on: self.state.update(caption=on))
        self.state.selection_changed.connect(lambda spec: self.captions_action.setChecked(spec.caption))
        help_menu = self.menuBar().addMenu("&Help")
        keys = QAction("&Keys", self)
        keys.setShortcut(QKeySequence(Qt.Key.Key_F1))
        keys.triggered.connect(self.show_keys)
        help_menu.addAction(keys)
        self.view_menu = self.menuBar().addMenu("&View")
        self.view_menu.addAction(self.captions_action)
        self.captions_action.setChecked(self.state.spec.caption)
        for key, delta, what in ARROWS:
            a = QAction(f"{'previous' if delta < 0 else 'next'} {what}", self)
            a.setShortcut(QKeySequence(Qt.KeyboardModifier.AltModifier | key))
            a.triggered.connect(lambda _=False, d=delta, w=what: self.state.step(w, d))
            self.view_menu.addAction(a)
            self.tabs.addAction(a)

    def _add_view_keys(self) -> None:
        # plain arrows on the four map views (a clicked canvas takes the focus); other tabs keep
        # their own arrow keys (Steps)
        for view in self.map_views():
            view.canvas.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            for key, delta, what in ARROWS:
                a = QAction(self)
                a.setShortcut(QKeySequence(key))
                a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                a.triggered.connect(lambda _=False, d=delta, w=what: self.state.step(w, d))
                view.addAction(a)

    def _fill_recent(self) -> None:
        """File ▸ Open recent: the recent models and sessions."""
        menu = self.recent_menu
        menu.clear()
        models, sessions = self.settings.recent_models(), self.settings.recent_sessions()
        for ref in models:
            menu.addAction(f"model: {ref}").triggered.connect(lambda _=False, r=ref: self.open_path(r, model=True))
        if models and sessions:
            menu.addSeparator()
        for path in sessions:
            menu.addAction(f"session: {path}").triggered.connect(lambda _=False, p=path: self.open_path(p))
        if not (models or sessions):
            menu.addAction("(nothing yet)").setEnabled(False)

    def open_path(self, path: str, model: bool = False) -> None:
        """Open what ``path`` is: a ``.headmap`` session, or a model (a checkpoint folder, a
        ``.gguf`` file, or with ``model`` any reference); otherwise say what can be opened."""
        from pathlib import Path

        p = Path(path)
        if not model and p.suffix.lower() == ".headmap":
            self.open_session(str(p))
            return
        if model or p.is_dir() or p.suffix.lower() == ".gguf":
            self.model_panel.set_reference(str(path))
            self.load_model(str(path))
            return
        self.show_error(f"{p.name} is not a checkpoint folder, a .gguf model or a .headmap session; "
                        "drop one of those to open it")

    @staticmethod
    def _dropped_path(mime) -> str | None:
        urls = mime.urls() if mime.hasUrls() else []
        return urls[0].toLocalFile() or None if len(urls) == 1 else None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_path(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = self._dropped_path(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.open_path(path)

    def _connect(self) -> None:
        self.controller.capture_ready.connect(self._deliver_capture)
        self.controller.error.connect(self.show_error)
        self.controller.status.connect(self.statusBar().showMessage)
        self.state.capture_changed.connect(self._on_capture_changed)
        self.state.capture_replaced.connect(self._on_capture_replaced)
        self.state.selection_changed.connect(self._on_selection_changed)
        self.state.tab_requested.connect(self.show_tab)
        self.tokens.token_clicked.connect(self._on_token_clicked)

    def _connect_views(self) -> None:
        # a clicked cell in words, as the hover says it, and again after every layer/head change
        self.head_view.cell_status.connect(self.statusBar().showMessage)
        self.head_view.hovered.connect(lambda text: text and self.statusBar().showMessage(text))
        self.layer_view.head_clicked.connect(lambda head: self.select(head=head, tab="Head"))
        self.model_view.cell_clicked.connect(lambda layer, head: self.select(layer=layer, head=head, tab="Head"))

    def map_views(self) -> tuple:
        """The four map views (none while a staged start still prepares them)."""
        if not self.views_built:
            return ()
        return (self.head_view, self.layer_view, self.model_view, self.lines_view)

    # ------------------------------------------------------------------ the state, as before
    @property
    def capture(self):
        return self.state.capture

    @property
    def lm(self):
        return self.state.model

    @property
    def spec(self) -> ViewSpec:
        return self.state.spec

    @property
    def max_tokens(self) -> int | None:
        """The longest input a run captures; None: the model's maximum where the disk has room."""
        return self.controller.max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int | None) -> None:
        self.controller.max_tokens = None if value is None else int(value)

    # ------------------------------------------------------------------ settings
    def _restore_settings(self) -> None:
        """Everything the settings file holds that can be read and makes sense; the rest keeps its
        default, and one line in the status bar says so (never a dialog: the window starts)."""
        s = self.settings
        bad = self._restore_panels(s)
        saved = {}
        for key in PERSISTED:
            if key == "theme":
                if s.contains(key) and valid_theme(s.value(key)) != s.value(key):
                    bad.append(key)
                continue  # chosen at start (argument, else the settings)
            if not s.contains(key):
                continue
            value = readable_option(s, key)
            if value is BAD:
                bad.append(key)
            else:
                saved[key] = value
        self.state.restore(saved)
        self.set_theme(self.state.spec.theme)
        problem = s.problem()
        if problem or bad:
            parts = ([problem] if problem else []) + ([f"some settings could not be read ({', '.join(bad)})"]
                                                      if bad else [])
            self.settings_problem = f"{'; '.join(parts)}; the window starts with their defaults"
            self.statusBar().showMessage(self.settings_problem)

    def _restore_panels(self, s) -> list[str]:
        bad = []
        geo = s.value("geometry")
        if geo is None or not self.restoreGeometry(geo):
            if geo is not None:
                bad.append("geometry")
            self.resize(*first_size(self.screen().availableGeometry() if self.screen() else None))
        for key, default, put in (("last_model", "bundled:minilm", self.model_panel.set_reference),
                                  ("text", EXAMPLES["encoder"], self.input_panel.text.setPlainText)):
            value = s.value(key, default)
            if not isinstance(value, str):
                bad.append(key)
                value = default
            put(value)
        dtype = s.value("dtype", "auto")
        if self.model_panel.dtype.findText(str(dtype)) < 0:
            bad.append("dtype")
            dtype = "auto"
        self.model_panel.dtype.setCurrentText(str(dtype))
        return bad

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("last_model", self.lm.reference if self.lm is not None else self.model_panel.reference())
        s.setValue("text", self.input_panel.text.toPlainText())
        s.setValue("dtype", self.model_panel.dtype.currentText())
        spec = asdict(self.state.spec)
        for key in PERSISTED:
            s.setValue(key, "theme" if key == "cmap" and spec[key] is None else spec[key])
        s.sync()

    def refresh_model_choices(self) -> None:
        self._show_choices(cached_models())

    # ------------------------------------------------------------------ model work
    def load_model(self, ref: str | None = None, allow_pickle: bool = False) -> None:
        self.controller.load_model(ref, allow_pickle)

    def run(self) -> None:
        self.controller.run()

    def cancel(self) -> None:
        self.controller.cancel()

    def model_job(self, fn):
        return self.controller.model_job(fn)

    @property
    def consents(self):
        return self.controller.consents

    # ------------------------------------------------------------------ captures
    def set_capture(self, cap) -> None:
        """Show ``cap`` everywhere now (sessions, tests); a finished run goes through
        :meth:`_deliver_capture`, which splits the same work over three event-loop turns."""
        self._show_panels(cap)
        self.state.set_capture(cap)

    def _deliver_capture(self, cap) -> None:
        # the token strip and output panel now, the view's data and layout in the next event-loop
        # turn, its pixels in the one after: each part stays well inside a frame and the window
        # answers input in between
        self._incoming = cap
        self._show_panels(cap)
        QTimer.singleShot(0, self, self._apply_incoming)

    def _apply_incoming(self) -> None:
        cap, self._incoming = self._incoming, None
        if cap is None:
            return
        view = self.tabs.currentWidget()
        if hasattr(view, "deferred_draws"):  # a canvas view (not a page still being prepared)
            with view.deferred_draws():  # its data and layout now, its pixels in a third turn
                self.state.set_capture(cap)
        else:
            self.state.set_capture(cap)

    def _show_panels(self, cap) -> None:
        from analysis.tokens import style_of_tokens
        from analysis.words import grouped, piece_strings

        cap = grouped(cap, self.state.spec.group)  # the strip shows what the views show
        self._strip_for = cap
        lm = self.lm
        if lm is not None and lm.reference == cap.model and getattr(lm.summary, "token_style", ""):
            style = lm.summary.token_style
        else:  # a reopened session: read the spelling off the tokens
            style = style_of_tokens(cap.source.raw, cap.source.display)
        self.tok_label.setText(token_legend(style))
        words = cap.pieces
        self.tokens.set_tokens(cap.source, cap.prompt_length if cap.generated and cap.kind == "decoder" else None,
                               pieces=None if words is None or cap.source_spans is None
                               else piece_strings(words.source, cap.source_spans))
        seq2seq = cap.decoder_inputs is not None and cap.outputs is not None
        self.dec_label.setVisible(seq2seq)
        self.dec_tokens.setVisible(seq2seq)
        if seq2seq:
            pieces = None
            if words is not None and words.outputs is not None and cap.output_spans is not None:
                pieces = piece_strings(words.outputs, cap.output_spans)
            self.dec_tokens.set_tokens(cap.decoder_inputs, predicts=cap.outputs, pieces=pieces)
        self.output.set_prediction(cap)

    def _on_capture_changed(self, cap) -> None:
        if cap is None:
            return
        if cap is not getattr(self, "_strip_for", None):  # the grouping changed: the strip follows
            self._show_panels(cap)
        msg = f"captured {len(cap.source)} tokens with {cap.model} · " + ", ".join(
            f"{n} {cap.shape(n)[0]}×{cap.shape(n)[1]}" for n in cap.stack_names)
        if cap.notes:
            msg += " · " + "; ".join(cap.notes)
        warnings = [n for n in cap.notes if n.startswith("warning:")]
        self.statusBar().showMessage(warnings[0] if warnings else msg)

    def _on_capture_replaced(self, old) -> None:
        """A long capture replaced on screen takes its store off the disk now (a hidden tab may
        still hold the capture until it is shown again; a store is as big as 38 GB), unless it is
        still shown or pinned as A in Compare."""
        from analysis.store import stores_of

        from .tabs.compare import CompareTab

        pinned = next((t.capture_a for t in self.extra_tabs if isinstance(t, CompareTab)), None)
        keep = stores_of(self.state.capture) | stores_of(pinned)
        for store in stores_of(old) - keep:
            store.close()

    def _on_selection_changed(self, spec: ViewSpec) -> None:
        if spec.theme != self._theme:
            self.set_theme(spec.theme)

    # ------------------------------------------------------------------ selection
    def select(self, layer: int | None = None, head: int | None = None, stack: str | None = None,
               tab: str | None = None) -> None:
        """Programmatic selection (clicks in the overviews, keyboard, tests)."""
        self.state.select(layer=layer, head=head, stack=stack)
        if tab is not None:
            self.show_tab(tab)

    def step(self, what: str, delta: int) -> None:
        self.state.step(what, delta)

    def show_tab(self, name: str) -> None:
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i) == name:
                self.tabs.setCurrentIndex(i)

    def shortcuts(self) -> list[tuple[str, str]]:
        """Every keyboard shortcut of the window: (keys, what it does), from its actions."""
        from PySide6.QtGui import QShortcut

        out: dict[str, str] = {}
        for a in self.findChildren(QAction):
            for seq in a.shortcuts():
                keys = seq.toString(QKeySequence.SequenceFormat.NativeText)
                what = a.text().replace("&", "").rstrip("…") or a.toolTip()
                if keys and what:
                    out.setdefault(keys, what)
        for sc in self.findChildren(QShortcut):
            keys = sc.key().toString(QKeySequence.SequenceFormat.NativeText)
            if keys:
                out.setdefault(keys, sc.whatsThis() or "run the sentence")
        for keys, what in (("Up / Down", "previous / next layer (on a clicked map view)"),
                           ("Left / Right", "previous / next head (on a clicked map view); previous / next step (Steps)")):
            out[keys] = what
        return sorted(out.items(), key=lambda kv: kv[0])

    def show_keys(self) -> None:
        """Help ▸ Keys: every shortcut, in a non-blocking dialog."""
        import html

        rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>&nbsp;{html.escape(w)}</td></tr>"
                       for k, w in self.shortcuts())
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keys", f"<table>{rows}</table>", QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        self.open_dialog(box)

    def keyPressEvent(self, event) -> None:  # arrow keys on the map views change layer / head
        on_view = self.tabs.currentWidget() in self.map_views()
        if on_view and (self.tabs.isAncestorOf(self.focusWidget() or self.tabs) or self.focusWidget() is None):
            for key, delta, what in ARROWS:
                if event.key() == key:
                    self.state.step(what, delta)
                    return
        super().keyPressEvent(event)

    def _on_token_clicked(self, index: int) -> None:
        if self.views_built and self.tabs.currentWidget() is self.lines_view:
            self.lines_view.focus_token("q", index)

    # ------------------------------------------------------------------ export and sessions
    def current_spec(self) -> ViewSpec:
        """What Export writes for the visible tab (its view and selection)."""
        return self.actions.export_request()[0]

    def export_view(self, path: str, dpi: int | None = None) -> str:
        """Export the visible tab to ``path`` (.png/.svg/.pdf), atomically."""
        return self.actions.export_view(path, dpi)

    def copy_image(self) -> None:
        self.actions.copy_image()

    def save_session_to(self, path: str) -> None:
        self.actions.save_session_to(path)

    def open_session(self, path: str) -> JobHandle:
        """Read and check the session ``path`` as a job; show it when all of it passed (see
        :meth:`gui.actions.FileActions.open_session`). Returns the job's handle."""
        return self.actions.open_session(path)

    def _session_options(self) -> dict:
        return {"dtype": self.model_panel.dtype.currentText(), "tab": self.tabs.tabText(self.tabs.currentIndex())}

    def _open_capture(self, sess) -> None:
        """Show a checked session: its capture, text, model reference, selection and tab."""
        # decided before anything changes: what of the saved selection fits this capture
        changes = saved_selection(sess.capture, sess.options.get("spec"))
        tab = sess.options.get("tab")
        self.input_panel.text.setPlainText(sess.inputs.get("text", sess.capture.text) or "")
        self.model_panel.set_reference(sess.model_ref)
        self.input_panel.set_kind(sess.capture.kind)
        self.set_capture(sess.capture)
        self.state.update(**changes)
        if isinstance(tab, str) and tab:
            self.show_tab(tab)

    # ------------------------------------------------------------------ theme, errors, life
    def set_theme(self, name: str) -> None:
        from .theme import apply_qt_theme

        self._theme = name
        apply_qt_theme(name)
        self.state.update(theme=name)
        # once the new font reached every widget, the side panels get the width their content needs
        QTimer.singleShot(0, self, self._fit_side_panels)

    def _fit_side_panels(self) -> None:
        need = (self.left_scroll.widget().minimumSizeHint().width()
                + self.left_scroll.verticalScrollBar().sizeHint().width() + 2 * self.left_scroll.frameWidth())
        split = self.centralWidget()
        sizes = split.sizes()
        if sum(sizes) and sizes[0] < need:
            split.setSizes([need, max(sum(sizes) - need, 200)])

    def open_dialog(self, box: QMessageBox) -> None:
        """Show a non-blocking dialog, closing the one before."""
        if self._dialog is not None:
            self._dialog.close()
        box.setWindowModality(Qt.WindowModality.WindowModal)
        self._dialog = box
        box.open()

    def show_error(self, error) -> None:
        """One sentence in the status bar and a non-blocking dialog; the window stays usable."""
        message = error if isinstance(error, str) else user_message(error)
        self.last_error = message
        self.statusBar().showMessage(f"Error: {message}")
        self.open_dialog(QMessageBox(QMessageBox.Icon.Warning, "Headmap", message, QMessageBox.StandardButton.Ok, self))

    def closeEvent(self, event) -> None:
        self.save_settings()
        self.runner.wait_all(5000)
        self.controller.release()
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel and wait for every worker, free the model in the model process (tests, close)."""
        done = self.runner.wait_all(timeout_ms)
        self.controller.release()
        return done

    def autostart(self, ref: str | None = None) -> None:
        """Load ``ref`` (or the last model) and run the sentence in the editor."""
        QTimer.singleShot(0, lambda: self.controller.load_model(ref or self.model_panel.reference(), quiet=ref is None))
