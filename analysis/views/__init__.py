"""Every view of Headmap as one data function and one drawer.

A view is (1) a pure function that turns a capture, a :class:`ViewSpec` (the display selection)
and the :class:`ViewInputs` some views need into the view's data (arrays, labels, titles), and
(2) one drawer class that puts that data on a matplotlib :class:`~matplotlib.figure.Figure`.
The window's tabs, File ▸ Export, Copy image, the CLI and the Python API all call the same pair
(:func:`view_data`, :data:`DRAWERS`), so what the window shows is what every export shows.

==========  ==========================================  =================================
view        data                                        drawer
==========  ==========================================  =================================
head        :func:`heatmap.heatmap_data`                :class:`heatmap.HeatmapDrawer`
layer       :func:`overview.layer_data`                 :class:`overview.MosaicDrawer`
model       :func:`overview.model_data`                 :class:`overview.MosaicDrawer`
lines       :func:`lines.lines_data`                    :class:`lines.LinesDrawer`
alignment   :func:`alignment.alignment_data`            :class:`alignment.AlignmentDrawer`
steps       :func:`steps.steps_data`                    :class:`steps.StepsDrawer`
masks       :func:`masks.masks_data`                    :class:`masks.MasksDrawer`
stats       :func:`stats.stats_data`                    :class:`stats.StatsDrawer`
rollout     :func:`rollout.rollout_data`                :class:`rollout.RolloutDrawer`
flow        :func:`rollout.rollout_data`                :class:`rollout.RolloutDrawer`
compare     :func:`compare.compare_data`                :class:`compare.CompareDrawer`
==========  ==========================================  =================================

Every drawer has the same shape: ``Drawer(fig, theme, live=False)`` creates its artists once,
``draw(data) -> bool`` updates them (True when more than the data changed: a full redraw is due),
``set_theme(theme)`` recolours, and ``Drawer.size(data, theme)`` gives an exported figure's
inches. Drawers never draw the title: exports put ``data.title`` above the figure, the window
above its canvas. :func:`captions.view_caption` says in plain words what each view shows
(exports write it under the figure with ``ViewSpec(caption=True)``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..result import Capture
from ..tasks import TaskState
from ..themes import Theme
from .spec import VIEWS, ViewInputs, ViewSpec, for_spec, validate_spec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Drawer(Protocol):
    """The shape every drawer has (see above); ``d`` is its view's data."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None: ...

    @staticmethod
    def size(d: Any, theme: Theme) -> tuple[float, float]: ...

    def draw(self, d: Any) -> bool: ...

    def set_theme(self, theme: Theme) -> None: ...


class _Drawers(Mapping[str, "type[Drawer]"]):
    """``DRAWERS[view]``: each drawer's module (and matplotlib's figure and axes with it) is
    imported when its view is first drawn, not when the view's spec is, so the window's first
    frame (which needs the selection, not a figure) waits for none of it."""

    _WHERE = {"head": "heatmap:HeatmapDrawer", "layer": "overview:MosaicDrawer", "model": "overview:MosaicDrawer",
              "lines": "lines:LinesDrawer", "alignment": "alignment:AlignmentDrawer", "steps": "steps:StepsDrawer",
              "masks": "masks:MasksDrawer", "stats": "stats:StatsDrawer", "rollout": "rollout:RolloutDrawer",
              "flow": "rollout:RolloutDrawer", "compare": "compare:CompareDrawer"}

    def __getitem__(self, view: str) -> type[Drawer]:
        module, name = self._WHERE[view].split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._WHERE)

    def __len__(self) -> int:
        return len(self._WHERE)


DRAWERS: Mapping[str, type[Drawer]] = _Drawers()


def view_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
              task: TaskState | None = None) -> Any:
    """The data of ``spec.view`` (see the table above) from the capture at ``spec.group``
    (:func:`for_spec`); ``spec`` is not validated here (call :func:`validate_spec` first for one
    clear sentence on bad input)."""
    capture, inputs = for_spec(capture, spec, inputs)
    view = spec.view
    if view == "head":
        from .heatmap import heatmap_data

        return heatmap_data(capture, spec)
    if view in ("layer", "model"):
        from .overview import layer_data, model_data

        return layer_data(capture, spec) if view == "layer" else model_data(capture, spec)
    if view == "lines":
        from .lines import lines_data

        return lines_data(capture, spec)
    if view == "alignment":
        from .alignment import alignment_data

        return alignment_data(capture, spec, inputs)
    if view == "steps":
        from .steps import steps_data

        return steps_data(capture, spec)
    if view == "masks":
        from .masks import masks_data

        return masks_data(inputs.mask_report, spec)
    if view == "stats":
        from .stats import stats_data

        return stats_data(capture, spec, inputs, task)
    if view in ("rollout", "flow"):
        from .rollout import rollout_data

        return rollout_data(capture, spec, inputs, task)
    if view == "compare":
        from .compare import compare_data

        return compare_data(capture, spec, inputs)
    raise KeyError(view)


__all__ = ["DRAWERS", "VIEWS", "ViewInputs", "ViewSpec", "for_spec", "validate_spec", "view_data"]
