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

from typing import Any, Protocol

from matplotlib.figure import Figure

from ..result import Capture
from ..tasks import TaskState
from ..themes import Theme
from .alignment import AlignmentDrawer, alignment_data
from .compare import CompareDrawer, compare_data
from .heatmap import HeatmapDrawer, heatmap_data
from .lines import LinesDrawer, lines_data
from .masks import MasksDrawer, masks_data
from .overview import MosaicDrawer, layer_data, model_data
from .rollout import RolloutDrawer, rollout_data
from .spec import VIEWS, ViewInputs, ViewSpec, for_spec, validate_spec
from .stats import StatsDrawer, stats_data
from .steps import StepsDrawer, steps_data


class Drawer(Protocol):
    """The shape every drawer has (see above); ``d`` is its view's data."""

    def __init__(self, fig: Figure, theme: Theme, live: bool = False) -> None: ...

    @staticmethod
    def size(d: Any, theme: Theme) -> tuple[float, float]: ...

    def draw(self, d: Any) -> bool: ...

    def set_theme(self, theme: Theme) -> None: ...


DRAWERS: dict[str, type[Drawer]] = {
    "head": HeatmapDrawer,
    "layer": MosaicDrawer,
    "model": MosaicDrawer,
    "lines": LinesDrawer,
    "alignment": AlignmentDrawer,
    "steps": StepsDrawer,
    "masks": MasksDrawer,
    "stats": StatsDrawer,
    "rollout": RolloutDrawer,
    "flow": RolloutDrawer,
    "compare": CompareDrawer,
}


def view_data(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
              task: TaskState | None = None) -> Any:
    """The data of ``spec.view`` (see the table above) from the capture at ``spec.group``
    (:func:`for_spec`); ``spec`` is not validated here (call :func:`validate_spec` first for one
    clear sentence on bad input)."""
    capture, inputs = for_spec(capture, spec, inputs)
    view = spec.view
    if view == "head":
        return heatmap_data(capture, spec)
    if view == "layer":
        return layer_data(capture, spec)
    if view == "model":
        return model_data(capture, spec)
    if view == "lines":
        return lines_data(capture, spec)
    if view == "alignment":
        return alignment_data(capture, spec, inputs)
    if view == "steps":
        return steps_data(capture, spec)
    if view == "masks":
        return masks_data(inputs.mask_report, spec)
    if view == "stats":
        return stats_data(capture, spec, inputs, task)
    if view in ("rollout", "flow"):
        return rollout_data(capture, spec, inputs, task)
    if view == "compare":
        return compare_data(capture, spec, inputs)
    raise KeyError(view)


__all__ = ["DRAWERS", "VIEWS", "ViewInputs", "ViewSpec", "for_spec", "validate_spec", "view_data"]
