"""Publishable figures of every view, built without pyplot, and their atomic export.

A view's figure is its data (:func:`analysis.views.view_data`) drawn by its one drawer
(:data:`analysis.views.DRAWERS`) on a new constrained-layout :class:`~matplotlib.figure.Figure`,
with the data's title above it: :func:`build_figure`. The window draws the same data with the
same drawer on its canvases, so an export shows what the window shows. :func:`export_figure` /
:func:`export_all_layers` write PNG, SVG or PDF through :func:`analysis.fileio.atomic_write`.
Everything is validated by :func:`validate_spec` before anything is drawn or written.

Views: see :mod:`analysis.views` (head, layer, model, lines, alignment, steps, masks, stats,
rollout, flow, compare).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from .errors import ExportError, InputError
from .fileio import atomic_write
from .fonts import ensure_cjk_font
from .result import Capture
from .tasks import TaskState
from .themes import Theme, apply_theme, get_theme
from .views import DRAWERS, view_data
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
    validate_spec,
)

__all__ = [
    "DPI_MAX", "DPI_MIN", "FORMATS", "GID_ALIGNMENT", "GID_ATTENTION", "GID_LINES", "GID_MASK", "GID_MASK_HATCH",
    "GID_SELECTED", "PER_LAYER_VIEWS", "ROW_LABEL_MODES", "VIEWS", "ViewInputs", "ViewSpec", "build_figure",
    "clean_label", "draw_figure", "export_all_layers", "export_figure", "layer_paths", "validate_spec",
]


def draw_figure(view: str, data: Any, spec: ViewSpec, theme: Theme) -> Figure:
    """A new figure of ``data`` (a view's data) drawn by the view's drawer, titled ``data.title``.

    Sized by the drawer (``spec.figsize`` wins), widened (up to 14 in) so the title fits.
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
    return fig


def build_figure(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None,
                 task: TaskState | None = None) -> Figure:
    """Draw one view as a new :class:`~matplotlib.figure.Figure` (no pyplot, no canvas).

    Validates ``spec`` first, makes CJK labels drawable (:func:`ensure_cjk_font`), builds the
    view's data and draws it under the theme's rcParams with constrained layout, then colours it
    with :func:`apply_theme`. ``fig.dpi`` is ``spec.dpi``; the pixel size of a PNG is
    ``fig.get_size_inches() * spec.dpi``.

    Parameters
    ----------
    inputs : what the masks and compare views need (a mask report, capture A), and what the
        window already computed (statistics rows, attention flow, gold links)

    Raises
    ------
    InputError : see :func:`validate_spec`.
    """
    validate_spec(capture, spec, inputs)
    theme = get_theme(spec.theme)
    ensure_cjk_font()
    with mpl.rc_context(theme.rc()):
        data = view_data(capture, spec, inputs, task)
        fig = draw_figure(spec.view, data, spec, theme)
    return apply_theme(fig, theme)


# -- export -----------------------------------------------------------------------------------
def _format_of(path: Path, fmt: str | None) -> str:
    f = (fmt or path.suffix).lower().lstrip(".")
    if f == "jpg" or f not in FORMATS:
        shown = fmt if fmt else (path.suffix or "no extension")
        raise InputError(f"cannot export {path.name} as '{shown}': use a .png, .svg or .pdf file name (or fmt=)")
    return f


def _check_folder(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"cannot write {path}: the folder {folder} does not exist; create it or choose another path")
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder; give a file name")


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

    Everything (spec for every layer, format, folder) is validated before the first file is
    written. Only the head, layer and lines views have a per-layer form.

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
    _check_folder(target)
    for p in paths:
        if p.is_dir():
            raise ExportError(f"cannot write {p}: it is a folder; choose another file name")
    return [save_figure(build_figure(capture, s), p, f, s.dpi) for s, p in zip(specs, paths, strict=True)]
