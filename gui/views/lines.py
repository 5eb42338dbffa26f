"""Lines view: the two-column token view (bertviz's "head view").

Drawn by :class:`analysis.views.lines.LinesDrawer` from :func:`~analysis.views.lines.lines_data`
(the data and drawer of every exported Lines figure). Hovering a token highlights its lines.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal

from analysis.views.captions import view_caption
from analysis.views.lines import XK, XQ, lines_data, token_y

from ..tabs.base import StateTab
from .canvas import DrawnView


class LinesView(StateTab, DrawnView):
    figure_view = "lines"
    hovered = Signal(str)

    def __init__(self, parent=None, theme: str = "light") -> None:
        super().__init__("lines", parent, theme)
        self.focus: tuple[str, int] | None = None  # ("q" | "k", index) under the mouse
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

    @property
    def ax(self):
        return self.drawer.ax

    @property
    def n_lines(self) -> int:
        return self.drawer.n_lines

    def refresh(self) -> None:
        shown = self.capture_and_spec("lines")
        if shown is None:
            return
        cap, spec = shown
        self.set_theme(spec.theme)
        self.focus = None
        self.show_data(lines_data(cap, spec))
        self.set_caption(view_caption(cap, spec), spec.caption)

    def display(self, capture, spec) -> None:
        from dataclasses import replace

        self.show_data(lines_data(capture, replace(spec, view="lines")))

    def focus_token(self, side: str | None, index: int | None) -> None:
        """Highlight the lines of one token (``side`` 'q' for left, 'k' for right), or clear."""
        new = (side, index) if side is not None and index is not None else None
        if new != self.focus and self.data is not None:
            self.focus = new
            self.show_data(self.data, focus=new)

    def _on_motion(self, event) -> None:
        d = self.data
        if d is None or event.inaxes is not self.drawer.ax or event.xdata is None:
            self.focus_token(None, None)
            return
        side = "q" if event.xdata < (XQ + XK) / 2 else "k"
        labels = d.rows if side == "q" else d.cols
        if not labels:
            return
        idx = int(np.argmin(np.abs(token_y(len(labels)) - event.ydata)))
        self.focus_token(side, idx)
        self.hover_text = f"{'query' if side == 'q' else 'key'} {labels[idx]}"
        self.hovered.emit(self.hover_text)
