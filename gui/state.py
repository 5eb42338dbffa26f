"""The viewer state: the one place that knows what the window shows.

:class:`ViewerState` owns the capture on screen, the loaded model and the whole display
selection as one :class:`analysis.figures.ViewSpec` (stack, layer, head, aggregation, hidden
tokens, row labels, colours, scale, range, theme, and the options of the analysis tabs). Widgets
edit it (:meth:`ViewerState.update`, :meth:`select`, :meth:`step`) and listen to its signals;
views and tabs only listen and read. The selection is always valid for the capture: a layer or
head beyond the stack is clamped, a stack the capture lacks falls back to its first one.

Like napari's ``Dims`` model and its ``QtDims`` widget: the truth of "which layer and head is
shown" lives here, never in a QSpinBox.
"""

from __future__ import annotations

from dataclasses import fields, replace

from PySide6.QtCore import QObject, Signal

from analysis.result import Capture
from analysis.views.spec import ViewSpec
from analysis.words import GROUPS, grouped

#: ViewSpec fields that describe the display and persist in the settings
PERSISTED = ("hide_special", "renormalize", "cmap", "scale", "shared_range", "row_labels", "show_causal_mask",
             "lines_per_head", "stretch", "caption", "theme", "group")


class ViewerState(QObject):
    """Capture, model and display selection of one window, with change signals.

    Signals
    -------
    capture_changed(Capture | None) : a new capture is on screen (also when the grouping changes:
        :attr:`capture` is then the same run at the other grouping)
    model_changed(object) : a model was loaded (a ``LoadedModel`` or ``RemoteModel``) or dropped
    selection_changed(ViewSpec) : the selection changed (once per change; a new capture emits only
        ``capture_changed``, after which the selection is already valid for it)
    tab_requested(str) : a view asks for another tab (a click in an overview opens "Head")
    """

    capture_changed = Signal(object)
    #: the capture a new one replaced (the window removes a long capture's store it no longer shows)
    capture_replaced = Signal(object)
    model_changed = Signal(object)
    selection_changed = Signal(object)
    tab_requested = Signal(str)

    def __init__(self, spec: ViewSpec | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._capture: Capture | None = None
        self._model = None
        self._spec = spec or ViewSpec(view="head", head=0, shared_range=True)

    # -- reading ------------------------------------------------------------------------------
    @property
    def capture(self) -> Capture | None:
        """The capture on screen, at the selection's grouping (``spec.group``: pieces or words,
        :func:`analysis.words.grouped`): every view, tab and export reads this one."""
        if self._capture is None:
            return None
        return grouped(self._capture, self._spec.group)

    @property
    def pieces(self) -> Capture | None:
        """The capture as the model produced it (the tokenizer's pieces): what sessions keep and
        what the mask lab's experiments rerun."""
        return self._capture

    @property
    def model(self):
        """The loaded model (``LoadedModel`` in process, ``RemoteModel`` in the model process), or None."""
        return self._model

    @property
    def spec(self) -> ViewSpec:
        """The display selection (``view`` is whatever tab asks: use :meth:`spec_for`)."""
        return self._spec

    def spec_for(self, view: str) -> ViewSpec:
        """The selection as the spec of one view (what that tab shows and exports)."""
        return replace(self._spec, view=view)

    @property
    def stack(self) -> str | None:
        """The resolved stack name of the selection (None without a capture)."""
        return None if self._capture is None else self._capture.resolve_stack(self._spec.stack)

    def shape(self) -> tuple[int, int]:
        """(layers, heads) of the selected stack; (0, 0) without a capture."""
        if self._capture is None:
            return 0, 0
        return self._capture.shape(self.stack)[:2]

    # -- changing -------------------------------------------------------------------------------
    def set_model(self, model) -> None:
        self._model = model
        self.model_changed.emit(model)

    def set_capture(self, capture: Capture | None) -> None:
        """Show ``capture``; the selection is clamped to it and the alignment layer/head reset.
        ``capture_replaced`` then names the capture it replaced."""
        old = self._capture
        self._capture = capture if capture is None or capture.pieces is None else capture.pieces
        self._spec = self._valid(replace(self._spec, alignment_layer=None, alignment_head=None, step=0, position=None,
                                         through_layer=None))
        self.capture_changed.emit(self.capture)  # listeners treat it as a new selection too
        if old is not None and old is not self._capture:
            self.capture_replaced.emit(old)

    def update(self, **changes) -> bool:
        """Change selection fields (``layer=3``, ``theme="dark"``, …); returns True when it
        changed. Unknown names raise TypeError, like ``dataclasses.replace``."""
        new = self._valid(replace(self._spec, **changes))
        if new == self._spec:
            return False
        regrouped = new.group != self._spec.group
        if regrouped:  # positions count pieces or words: the step and the bars' position start over
            new = replace(new, step=0, position=None)
        self._spec = new
        if regrouped and self._capture is not None:
            self.capture_changed.emit(self.capture)  # the same run, at the other grouping
        else:
            self.selection_changed.emit(new)
        return True

    def select(self, layer: int | None = None, head: int | None = None, stack: str | None = None,
               aggregate: bool = False) -> bool:
        """Pick a stack, layer and head (``aggregate``: the mean/max over the layer's heads)."""
        changes: dict = {}
        if stack is not None:
            changes["stack"] = stack
        if layer is not None:
            changes["layer"] = int(layer)
        if aggregate:
            changes["head"] = None
        elif head is not None:
            changes["head"] = int(head)
        return self.update(**changes)

    def step(self, what: str, delta: int) -> bool:
        """Move the layer or the head by ``delta`` (clamped); the aggregate steps from head 0."""
        if what == "layer":
            return self.update(layer=self._spec.layer + delta)
        head = self._spec.head if self._spec.head is not None else 0
        return self.update(head=head + delta)

    def restore(self, values: dict) -> None:
        """Set persisted fields from settings (unknown keys and bad values are ignored)."""
        names = {f.name for f in fields(ViewSpec)}
        good = {k: v for k, v in values.items() if k in names and k in PERSISTED}
        try:
            self.update(**good)
        except (TypeError, ValueError):
            pass

    def _valid(self, spec: ViewSpec) -> ViewSpec:
        if spec.group not in GROUPS:
            spec = replace(spec, group="pieces")
        cap = self._capture
        if cap is None:
            return spec
        if cap.stored and spec.group != "pieces":  # a long capture on disk has no words (analysis.words)
            spec = replace(spec, group="pieces")
        try:
            name = cap.resolve_stack(spec.stack)
        except KeyError:
            name = cap.stack_names[0]
            spec = replace(spec, stack=name)
        layers, heads = cap.shape(name)[:2]
        layer = min(max(int(spec.layer), 0), layers - 1)
        head = None if spec.head is None else min(max(int(spec.head), 0), heads - 1)
        if (layer, head) != (spec.layer, spec.head):
            spec = replace(spec, layer=layer, head=head)
        return spec
