"""Publishable figures of every view, built without pyplot, and their atomic export.

A view's figure is its data (:func:`analysis.views.view_data`) drawn by its one drawer
(:data:`analysis.views.DRAWERS`) on a new constrained-layout :class:`~matplotlib.figure.Figure`,
with the data's title above it and, with ``ViewSpec(caption=True)``, the view's caption
(:func:`analysis.views.captions.view_caption`) below it: :func:`build_figure`. The window draws
the same data with the same drawer on its canvases, so an export shows what the window shows. :func:`export_figure` /
:func:`export_all_layers` write PNG, SVG or PDF through :func:`analysis.fileio.atomic_write`
(a symbolic link is followed, pipes and devices are refused; all of a run's layer files appear
together or none does). Everything is validated by :func:`validate_spec` before anything is drawn
or written.

Views: see :mod:`analysis.views` (head, layer, model, lines, alignment, steps, masks, stats,
rollout, flow, compare).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine
from matplotlib.text import Text

from .errors import InputError
from .fileio import atomic_write, check_output_path, staged_writes
from .fonts import ensure_cjk_font
from .result import Capture
from .tasks import TaskState
from .themes import Theme, apply_theme, get_theme
from .views import DRAWERS, view_data
from .views.captions import view_caption
from .views.common import (
    GID_ALIGNMENT,
    GID_ATTENTION,
    GID_LINES,
    GID_MASK,
    GID_MASK_HATCH,
    GID_SELECTED,
    clean_label,
    text_inches,
    wrap,
    wrap_to_width,
)
from .views.spec import (
    DPI_MAX,
    DPI_MIN,
    FORMATS,
    PER_LAYER_VIEWS,
    ROW_LABEL_MODES,
    VIEWS,
    ViewInputs,
    ViewSpec,
    for_spec,
    validate_spec,
)

__all__ = [
    "DPI_MAX", "DPI_MIN", "FORMATS", "GID_ALIGNMENT", "GID_ATTENTION", "GID_CAPTION", "GID_LINES", "GID_MASK",
    "GID_MASK_HATCH", "GID_SELECTED", "PER_LAYER_VIEWS", "ROW_LABEL_MODES", "VIEWS", "ViewInputs", "ViewSpec",
    "add_caption", "build_figure", "clean_label", "draw_figure", "export_all_layers", "export_figure", "layer_paths",
    "validate_spec", "view_caption", "wrap_caption",
]

#: ``Artist.get_gid`` of the caption written under an exported figure
GID_CAPTION = "caption"
#: the caption's margins: left and right of it, and above and below it (inches)
CAPTION_MARGIN = 0.2
CAPTION_PAD = 0.12
#: height of one caption line, in font sizes (matplotlib's line spacing 1.2, plus descenders)
CAPTION_LINE = 1.3


def wrap_caption(caption: str, width_in: float, theme: Theme) -> str:
    """``caption`` wrapped to a figure ``width_in`` inches wide (less the margins) at the theme's
    base size: the text :func:`add_caption` writes."""
    return wrap_to_width(caption, (width_in - 2 * CAPTION_MARGIN) * 0.98, theme.base_size)


def add_caption(fig: Figure, caption: str, theme: Theme) -> Text:
    """Write ``caption`` under everything on ``fig``: wrapped to the figure's width, at the
    theme's base size, in a strip the figure grows by; the layout engine keeps the axes (and
    their labels) above the strip. Returns the Text (gid :data:`GID_CAPTION`)."""
    width, height = (float(v) for v in fig.get_size_inches())
    wrapped = wrap_caption(caption, width, theme)
    lines = wrapped.count("\n") + 1
    strip = lines * theme.base_size * CAPTION_LINE / 72 + 2 * CAPTION_PAD
    total = height + strip
    fig.set_size_inches(width, total)
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine | TightLayoutEngine):
        engine.set(rect=(0.0, strip / total, 1.0, 1.0 - strip / total))
    return fig.text(CAPTION_MARGIN / width, CAPTION_PAD / total, wrapped, ha="left", va="bottom", ma="left",
                    fontsize=theme.base_size, color=theme.text_color, gid=GID_CAPTION)


def draw_figure(view: str, data: Any, spec: ViewSpec, theme: Theme, caption: str = "") -> Figure:
    """A new figure of ``data`` (a view's data) drawn by the view's drawer, titled ``data.title``.

    Sized by the drawer (``spec.figsize`` wins), widened (up to 14 in) so the title fits. With
    ``spec.caption`` and a ``caption`` (:func:`view_caption`), the caption goes under it
    (:func:`add_caption`: the figure grows by its height).
    """
    drawer_cls = DRAWERS[view]
    if spec.figsize is not None:
        width, height = (float(v) for v in spec.figsize)
    else:
        width, height = drawer_cls.size(data, theme)
        need = max(text_inches([line], theme.title_size) for line in data.title.split("\n")) + 0.4
        width = max(width, min(need, 14.0))
    fig = Figure(figsize=(round(width, 2), round(height, 2)), dpi=spec.dpi, layout="constrained")
    drawer_cls(fig, theme).draw(data)
    fig.suptitle(wrap(data.title, width - 0.3, theme.title_size), color=theme.text_color, fontsize=theme.title_size)
    if spec.caption and caption:
        add_caption(fig, caption, theme)
    return fig


def build_figure(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
                 task: TaskState | None = None) -> Figure:
    """Draw one view as a new :class:`~matplotlib.figure.Figure` (no pyplot, no canvas).

    Validates ``spec`` first, makes CJK labels drawable (:func:`ensure_cjk_font`), builds the
    view's data and draws it under the theme's rcParams with constrained layout (with
    ``spec.caption``, the view's caption under it), then colours it with :func:`apply_theme`.
    ``fig.dpi`` is ``spec.dpi``; the pixel size of a PNG is ``fig.get_size_inches() * spec.dpi``.

    Parameters
    ----------
    inputs : what the masks and compare views need (a mask report, capture A), and what the
        window already computed (statistics rows, attention flow, gold links)

    Raises
    ------
    InputError : see :func:`validate_spec`.
    """
    validate_spec(capture, spec, inputs)
    capture, inputs = for_spec(capture, spec, inputs)
    theme = get_theme(spec.theme)
    ensure_cjk_font()
    with mpl.rc_context(theme.rc()):
        data = view_data(capture, spec, inputs, task)
        caption = view_caption(capture, spec, inputs) if spec.caption else ""
        fig = draw_figure(spec.view, data, spec, theme, caption)
    return apply_theme(fig, theme)


# -- export -----------------------------------------------------------------------------------
def _format_of(path: Path, fmt: str | None) -> str:
    f = (fmt or path.suffix).lower().lstrip(".")
    if f == "jpg" or f not in FORMATS:
        shown = fmt if fmt else (path.suffix or "no extension")
        raise InputError(f"cannot export {path.name} as '{shown}': use a .png, .svg or .pdf file name (or fmt=)")
    return f


def _check_folder(path: Path) -> None:
    """Refuse a missing folder, a folder, a pipe or a device at ``path`` before drawing anything."""
    check_output_path(path)


def save_figure(fig: Figure, path: str | Path, fmt: str | None = None, dpi: int | None = None) -> Path:
    """Write ``fig`` atomically as PNG, SVG or PDF (format from ``fmt`` or the extension)."""
    target = Path(path)
    f = _format_of(target, fmt)
    _check_folder(target)

    def write(tmp: str) -> None:
        fig.savefig(tmp, format=f, dpi=dpi or fig.dpi, facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor())

    return atomic_write(target, write, suffix=f".{f}")


def export_figure(capture: Capture, spec: ViewSpec, path: str | Path, fmt: str | None = None,
                  inputs: ViewInputs | None = None) -> Path:
    """Build the view and write it atomically as PNG, SVG or PDF.

    Parameters
    ----------
    path : target file; an existing file is only replaced by a complete new one
    fmt : ``png`` | ``svg`` | ``pdf``; None = from the extension of ``path``
    inputs : see :func:`build_figure`

    Returns
    -------
    The path written.

    Raises
    ------
    InputError : bad spec, unknown format, dpi outside 72–600 (nothing is written)
    ExportError : the folder is missing / not writable or writing failed (no file is left
        behind, an existing file is kept)
    """
    target = Path(path)
    f = _format_of(target, fmt)
    validate_spec(capture, spec, inputs)
    _check_folder(target)
    return save_figure(build_figure(capture, spec, inputs), target, f, spec.dpi)


def layer_paths(path: str | Path, n_layers: int) -> list[Path]:
    """``OUT.png`` → ``OUT-L00.png``, ``OUT-L01.png``, … (at least 2 digits)."""
    target = Path(path)
    digits = max(2, len(str(n_layers - 1)))
    return [target.with_name(f"{target.stem}-L{i:0{digits}d}{target.suffix}") for i in range(n_layers)]


def export_all_layers(capture: Capture, spec: ViewSpec, path: str | Path, fmt: str | None = None) -> list[Path]:
    """One file per layer of the spec's stack: ``OUT-L00.png``, ``OUT-L01.png``, …

    Everything (spec for every layer, format, folder, what each path names) is validated before
    the first figure is drawn. The files appear together or not at all
    (:func:`analysis.fileio.staged_writes`): should one layer fail, no layer's file is created
    or replaced. Only the head, layer and lines views have a per-layer form.

    Returns
    -------
    The paths written, in layer order.
    """
    if spec.view not in PER_LAYER_VIEWS:
        raise InputError(
            f"the {spec.view} view has no per-layer form; export all layers from the head, layer or lines view"
        )
    target = Path(path)
    f = _format_of(target, fmt)
    name = validate_spec(capture, spec)
    n_layers = capture.stacks[name].shape[0]
    specs = [replace(spec, layer=i) for i in range(n_layers)]
    for s in specs:
        validate_spec(capture, s)
    paths = layer_paths(target, n_layers)
    for p in paths:
        _check_folder(p)
    # every layer's file is complete before the first one is moved into place (inside the CLI's
    # run, with the run's other outputs)
    with staged_writes():
        return [save_figure(build_figure(capture, s), p, f, s.dpi) for s, p in zip(specs, paths, strict=True)]
