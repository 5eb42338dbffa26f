"""Loading, running and cancelling: the window's model work.

:class:`ModelController` starts the "load" and "run" jobs (in the model process of
:mod:`analysis.host`, or in this process with ``HEADMAP_IN_PROCESS=1``), asks the questions a load
may need (pickle weights; weights missing from the checkpoint; consent to run a checkpoint's own
code, given per checkpoint and its code's sha256, :mod:`analysis.consent`), puts the loaded model into the viewer state and hands
finished captures to the window (``capture_ready``). A new load or run cancels the running model
jobs it would otherwise wait behind (a mask experiment). When the model process is ended (stuck,
or a Cancel it did not answer) or dies, the host tells the controller: the model is dropped from
the viewer state (Run then asks for a Load) and the status bar says what happened, even when the
job that noticed it was cancelled; the next Load starts a fresh process.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from analysis.consent import ConsentBook, canonical_reference, local_consent
from analysis.errors import Cancelled, ConsentRequiredError, MissingWeightsError, RemoteCodeError
from analysis.host import RemoteModel
from analysis.store import DiskSpaceError

from .panels import InputPanel, ModelPanel
from .state import ViewerState
from .workers import Jobs


def capture_and_prepare(run, spec, *args, task=None, **kwargs):
    """``run(*args)`` (a capture), then, still in the worker thread, what the first view of it
    needs: its token labels and shared colour range for ``spec`` (cached with the capture), so the
    window's thread only draws."""
    from analysis.views.common import shared_norm, view_tokens

    cap = run(*args, task=task, **kwargs)
    try:
        name = cap.resolve_stack(spec.stack)
    except KeyError:
        name = cap.stack_names[0]
    view_tokens(cap, spec, name)
    if spec.shared_range:
        shared_norm(cap, name, spec)
    return cap


class ModelController(QObject):
    """The model panel's Load/Cancel, the input panel's Run, and their jobs.

    Signals
    -------
    capture_ready(Capture) : a run finished (the window shows it)
    error(object) : an exception or sentence for the user
    status(str) : a status-bar line
    """

    capture_ready = Signal(object)
    error = Signal(object)
    status = Signal(str)
    # the host's listener runs in the worker thread that noticed the end: queued to this thread
    _process_ended = Signal(str)

    def __init__(self, parent: QWidget, state: ViewerState, jobs: Jobs, host, model_panel: ModelPanel,
                 input_panel: InputPanel, settings, open_dialog) -> None:
        super().__init__(parent)
        self.open_dialog = open_dialog  # shows a non-blocking dialog (closing the previous one)
        self.parent_widget = parent
        self.state, self.jobs, self.host = state, jobs, host
        self.model_panel, self.input_panel, self.settings = model_panel, input_panel, settings
        # consent to run a checkpoint's own code: per checkpoint and its code's sha256, never carried over
        self.consents = ConsentBook()
        # longest input captured; None: the model's maximum where the disk has room for its maps
        # (long captures are stored on disk, analysis.store: memory follows what is shown)
        self.max_tokens: int | None = None
        self.pending_run = False
        self.loading_ref = ""
        self.loading_allowed: dict[str, bool] = {}  # the answers this load was started with
        model_panel.load_requested.connect(self.load_model)
        model_panel.cancel_requested.connect(self.cancel)
        model_panel.trust_toggled.connect(self._on_trust_toggled)
        model_panel.reference_changed.connect(self._on_reference_changed)
        input_panel.run_requested.connect(self.run)
        jobs.busy_changed.connect(lambda kind, busy: kind == "load" and model_panel.set_busy(busy))
        self._process_ended.connect(self._on_process_ended)
        self._listener = self._process_ended.emit  # one object: removed again by release()
        if host is not None:
            host.add_listener(self._listener)

    # -- jobs ---------------------------------------------------------------------------------
    def model_job(self, fn):
        """``fn(model, …)`` as a job function: in the model process when the model lives there."""
        lm = self.state.model
        if isinstance(lm, RemoteModel) and lm.host is not None:
            return partial(lm.host.call, fn)
        return fn

    def load_model(self, ref: str | None = None, allow_pickle: bool = False, quiet: bool = False,
                   allow_missing_weights: bool = False) -> None:
        """Load ``ref`` (default: the one in the box). ``quiet``: a failure is a line in the model
        panel, not a dialog (the last model, opened at start, may be gone). ``allow_pickle`` and
        ``allow_missing_weights``: the user said Yes to that question for this load."""
        from analysis.loader import load_model

        ref = (ref or self.model_panel.reference()).strip()
        if not ref:
            self.error.emit("choose a model first: a bundled model, a folder, a .gguf file or a hub id")
            return
        ran = self.jobs.cancel("run")
        if self.jobs.cancel("masks") or ran:
            what = "capture" if ran else "mask experiment"
            self.status.emit(f"the running {what} was cancelled: a new model is loading")
        self.loading_ref = ref
        self.loading_allowed = {"allow_pickle": allow_pickle, "allow_missing_weights": allow_missing_weights}
        self.model_panel.show_progress("resolve", 0.0, f"loading {ref}…")
        fn = load_model if self.host is None else partial(self.host.load, owner=f"window-{id(self.parent_widget)}")
        job = self.jobs.start("load", fn, ref, dtype=self.model_panel.dtype.currentText(),
                              device=self.model_panel.device.currentText() or "auto",
                              trust_remote_code=self.consents.get(ref), **self.loading_allowed)
        job.progress.connect(self._on_load_progress)
        job.finished.connect(self._set_model)
        job.failed.connect(lambda exc, q=quiet, r=ref: self._on_load_failed(exc, quiet=q, ref=r))

    def run(self, _made_room: bool = False) -> None:
        if self.jobs.is_busy("load"):
            self.pending_run = True
            self.status.emit("the model is still loading; the run starts when it is ready")
            return
        lm = self.state.model
        if lm is None:
            self.error.emit("load a model first (choose one and press Load)")
            return
        from analysis.capture import capture

        inp = self.input_panel.inputs()
        if not inp["text"].strip():
            self.error.emit("the text is empty; type a sentence to run")
            return
        from analysis.capture import default_max_tokens

        limit, why = (self.max_tokens, "") if self.max_tokens is not None else default_max_tokens(lm.summary)
        # long captures go to a store on disk that this window owns (it removes it with the capture)
        kwargs = {"store_dtype": np.float16, "max_tokens": limit, "store": None, "store_owner": os.getpid()}
        if lm.kind == "seq2seq":
            if inp["generate"]:
                kwargs.update(generate=True, num_beams=inp["num_beams"], target_lang=inp["target_lang"])
            else:
                kwargs.update(target=inp["target"])
        elif lm.kind == "decoder" and inp["max_new_tokens"] > 0:
            kwargs.update(generate=True, max_new_tokens=inp["max_new_tokens"])
        self.jobs.cancel("masks")  # it would hold the model process
        self.status.emit(f"running… ({why})" if why else "running…")
        job = self.jobs.start("run", partial(capture_and_prepare, self.model_job(capture), self.state.spec), lm,
                              inp["text"], **kwargs)
        job.progress.connect(lambda _s, _f, msg: self.status.emit(msg))
        job.finished.connect(self.capture_ready)
        job.failed.connect(lambda exc, again=not _made_room: self._on_run_failed(exc, again))

    def cancel(self) -> None:
        """The model panel's Cancel: every running job stops (load, run, experiments, flow, statistics)."""
        hit = self.jobs.cancel()
        self.pending_run = False
        self.model_panel.show_progress("cancelled", 0.0, "cancelled")
        self.model_panel.set_busy(False)
        self.status.emit("cancelled" if hit else "nothing to cancel")

    def release(self) -> None:
        """Free the loaded model in the model process and stop listening to it (close, tests)."""
        lm = self.state.model
        if isinstance(lm, RemoteModel) and lm.host is not None:
            lm.host.release(lm)
        if self.host is not None:
            self.host.remove_listener(self._listener)

    # -- results ------------------------------------------------------------------------------
    def _on_load_progress(self, stage: str, fraction: float, message: str) -> None:
        self.model_panel.show_progress(stage, None if fraction < 0 else fraction, message)
        self.status.emit(message)

    def _set_model(self, lm) -> None:
        s = lm.summary
        card = "<br>".join(s.lines())
        if lm.notes:
            card += "<br><i>" + "<br>".join(lm.notes) + "</i>"
        self.model_panel.card.setText(card)
        self.model_panel.set_reference(lm.reference)
        self.model_panel.show_loaded(lm.reference)
        self.model_panel.show_progress("ready", 1.0, "")  # the panel names the loaded model below
        self.input_panel.set_kind(lm.kind)
        self.settings.add_recent(lm.reference)
        self.settings.setValue("last_model", lm.reference)
        self.status.emit(f"loaded {lm.reference} ({s.kind}, {s.architecture})")
        self.state.set_model(lm)
        if self.pending_run or self.input_panel.text.toPlainText().strip():
            self.pending_run = False
            self.run()

    def _on_load_failed(self, exc, quiet: bool = False, ref: str = "") -> None:
        if isinstance(exc, Cancelled):
            self.status.emit("cancelled")
            return
        self.model_panel.show_progress("failed", 0.0, "")
        self.pending_run = False
        if isinstance(exc, MissingWeightsError):
            again = {**self.loading_allowed, "allow_missing_weights": True}
            self._ask(QMessageBox.Icon.Warning, "Missing weights",
                      str(exc) + "\n\nLoad it anyway? The missing weights start random: every figure of it "
                      "carries a warning.", lambda: self.load_model(self.loading_ref, **again),
                      lambda: self._failed(ref))
            return
        if isinstance(exc, ConsentRequiredError) and "pickle" in str(exc):
            self._ask(QMessageBox.Icon.Warning, "Pickle weights", str(exc) + "\n\nLoad them anyway?",
                      lambda: self.load_model(self.loading_ref, **{**self.loading_allowed, "allow_pickle": True}),
                      lambda: self._failed(ref))
            return
        if isinstance(exc, RemoteCodeError) and exc.request is not None:
            self.status.emit(f"waiting for your decision: {exc}")
            self._ask_code_consent(f"{exc}.\n\nRun the code of {exc.request.reference}?", exc.request, reload=True,
                                   on_no=lambda: self._failed(ref))
            return
        self._failed(ref)
        lm = self.state.model
        if quiet:
            from analysis.errors import user_message

            message = f"The last model, {ref}, could not be opened: {user_message(exc)}. Choose a model and press Load."
            self.model_panel.show_loaded(lm.reference if lm is not None else None, message)
            self.status.emit(message)
            return
        self.error.emit(exc)

    def _failed(self, ref: str) -> None:
        """After a failed (or declined) load, the box and the panel name the model that is still
        loaded, or none: Run uses that one."""
        lm = self.state.model
        self.model_panel.set_reference(lm.reference if lm is not None else ref)
        self.model_panel.show_loaded(lm.reference if lm is not None else None, f"{ref} could not be loaded")

    def _on_process_ended(self, sentence: str) -> None:
        """The model process was ended or died: the model that lived there is gone."""
        lm = self.state.model
        if isinstance(lm, RemoteModel) and lm.host is not None and not lm.host.holds(lm):
            self.state.set_model(None)
            self.model_panel.show_loaded(None, sentence)
        self.status.emit(sentence)

    def _on_run_failed(self, exc, make_room: bool = False) -> None:
        if isinstance(exc, Cancelled):
            self.status.emit("cancelled")
        elif make_room and isinstance(exc, DiskSpaceError) and self._make_room(exc):
            self.status.emit("the maps of the capture on screen were removed from the disk to make room for this one")
            self.run(_made_room=True)
        else:
            self.error.emit(exc)

    def _make_room(self, exc: DiskSpaceError) -> bool:
        """When removing the long capture on screen (its store) frees enough disk for the run that
        ``exc`` refused, remove it (the views empty) and return True."""
        from analysis.store import SPACE_MARGIN, stores_of

        stores = stores_of(self.state.capture)
        if not stores or exc.free + sum(st.nbytes for st in stores) < exc.needed + SPACE_MARGIN:
            return False
        self.state.set_capture(None)  # the window closes what it no longer shows (capture_replaced)
        for st in stores:  # also when something else still holds the capture
            st.close()
        return True

    # -- questions ----------------------------------------------------------------------------
    def _ask(self, icon, title: str, text: str, on_yes, on_no=None) -> QMessageBox:
        """A non-blocking Yes/No question (default No); ``on_yes()`` after Yes, ``on_no()`` after No."""
        box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                          self.parent_widget)
        box.setDefaultButton(QMessageBox.StandardButton.No)

        def done(result: int) -> None:
            if result == QMessageBox.StandardButton.Yes:
                on_yes()
            elif on_no is not None:
                on_no()

        box.finished.connect(done)
        self.open_dialog(box)
        return box

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

    def _ask_code_consent(self, text: str, consent, reload: bool, on_no=None) -> None:
        """One question about one checkpoint's code; Yes records the consent (and loads again)."""
        ref = self.loading_ref if reload else self.model_panel.reference()

        def yes() -> None:
            self.consents.grant(consent)
            if reload:
                self.load_model(ref)

        box = self._ask(QMessageBox.Icon.Warning, "Trust remote code?", text, yes, on_no)

        def shown(_result: int) -> None:  # after Yes or No, the box shows the truth
            if canonical_reference(self.model_panel.reference()) == consent.reference:
                self.model_panel.show_trusted(self.consents.get(consent.reference) is not None)

        box.finished.connect(shown)
