"""Colour themes shared by exported figures and the window: light, dark, presentation.

A :class:`Theme` holds figure colours, font sizes, the default colormap, how causally masked
cells are drawn, line colours for the lines/alignment views, and a palette hint the GUI uses to
style the window the same way (hex colours only: no Qt here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:  # matplotlib's figure module is heavy: the window's first frame needs none of it
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType


@dataclass(frozen=True)
class Theme:
    """One look for figures and the window.

    Attributes
    ----------
    name : ``light`` | ``dark`` | ``presentation``
    figure_facecolor, axes_facecolor : backgrounds (hex)
    text_color : titles, labels, tick labels
    grid_color : grid lines, spines and ticks
    cmap : default colormap of the heatmaps
    base_size, title_size, tick_size : font sizes in points
    masked_color : fill of causally masked cells (distinct from any colormap value)
    hatch_color : hatch drawn over masked cells
    line_colors : colours of the lines/alignment views (first = single head / aggregate)
    gap_color : colour of the gaps between tiles of the model overview
    qt_palette : hint for the window: ``window``, ``window_text``, ``base``, ``alternate_base``,
        ``text``, ``button``, ``button_text``, ``highlight``, ``highlighted_text``,
        ``tooltip_base``, ``tooltip_text`` and optionally the frame shades ``light``,
        ``midlight``, ``mid``, ``dark``, ``shadow`` → ``#rrggbb``
    """

    name: str
    figure_facecolor: str
    axes_facecolor: str
    text_color: str
    grid_color: str
    cmap: str
    base_size: float
    title_size: float
    tick_size: float
    masked_color: str
    hatch_color: str
    line_colors: tuple[str, ...]
    gap_color: str
    qt_palette: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "qt_palette", MappingProxyType(dict(self.qt_palette)))

    def rc(self) -> dict[RcKeyType, Any]:
        """rcParams for :func:`matplotlib.rc_context` while a figure of this theme is built."""
        return {
            "figure.facecolor": self.figure_facecolor,
            "figure.edgecolor": self.figure_facecolor,
            "savefig.facecolor": self.figure_facecolor,
            "savefig.edgecolor": self.figure_facecolor,
            "axes.facecolor": self.axes_facecolor,
            "axes.edgecolor": self.grid_color,
            "axes.labelcolor": self.text_color,
            "axes.titlecolor": self.text_color,
            "text.color": self.text_color,
            "xtick.color": self.grid_color,
            "ytick.color": self.grid_color,
            "xtick.labelcolor": self.text_color,
            "ytick.labelcolor": self.text_color,
            "grid.color": self.grid_color,
            "font.size": self.base_size,
            "axes.titlesize": self.title_size,
            "axes.labelsize": self.base_size,
            "figure.titlesize": self.title_size,
            "xtick.labelsize": self.tick_size,
            "ytick.labelsize": self.tick_size,
            "hatch.color": self.hatch_color,
            "image.cmap": self.cmap,
        }


_LIGHT_PALETTE = {
    "window": "#f5f5f5",
    "window_text": "#1a1a1a",
    "base": "#ffffff",
    "alternate_base": "#eef1f5",
    "text": "#1a1a1a",
    "button": "#e9e9e9",
    "button_text": "#1a1a1a",
    "highlight": "#2f6fb5",
    "highlighted_text": "#ffffff",
    "tooltip_base": "#ffffe1",
    "tooltip_text": "#1a1a1a",
}
_DARK_PALETTE = {
    "window": "#1e1f22",
    "window_text": "#e6e6e6",
    "base": "#16171a",
    "alternate_base": "#25272b",
    "text": "#e6e6e6",
    "button": "#2b2d31",
    "button_text": "#e6e6e6",
    "highlight": "#d9822b",
    "highlighted_text": "#101010",
    "tooltip_base": "#2b2d31",
    "tooltip_text": "#e6e6e6",
    # the frames of check boxes, spin boxes and table grids: light enough to see on the dark base
    "light": "#8a8d93",
    "midlight": "#6b6e74",
    "mid": "#7d8087",
    "dark": "#5a5d63",
    "shadow": "#0c0c0e",
}
_LINES_LIGHT = (
    "#1f5fa8",
    "#d1495b",
    "#2a9d8f",
    "#e9a03b",
    "#6a4c93",
    "#5c946e",
    "#8d6e63",
    "#c2185b",
)
_LINES_DARK = (
    "#ffb454",
    "#5ec8f2",
    "#9ee493",
    "#f07178",
    "#c3a6ff",
    "#ffd866",
    "#80cbc4",
    "#f48fb1",
)

LIGHT = Theme(
    name="light",
    figure_facecolor="#ffffff",
    axes_facecolor="#ffffff",
    text_color="#1a1a1a",
    grid_color="#555555",
    cmap="viridis",
    base_size=10.0,
    title_size=11.0,
    tick_size=8.0,
    masked_color="#c8c8c8",
    hatch_color="#8a8a8a",
    line_colors=_LINES_LIGHT,
    gap_color="#ffffff",
    qt_palette=_LIGHT_PALETTE,
)
DARK = Theme(
    name="dark",
    figure_facecolor="#1e1f22",
    axes_facecolor="#16171a",
    text_color="#e6e6e6",
    grid_color="#9a9a9a",
    cmap="magma",
    base_size=10.0,
    title_size=11.0,
    tick_size=8.0,
    masked_color="#4a4d52",
    hatch_color="#8c9096",
    line_colors=_LINES_DARK,
    gap_color="#1e1f22",
    qt_palette=_DARK_PALETTE,
)
PRESENTATION = Theme(
    name="presentation",
    figure_facecolor="#ffffff",
    axes_facecolor="#ffffff",
    text_color="#000000",
    grid_color="#333333",
    cmap="viridis",
    base_size=18.0,
    title_size=22.0,
    tick_size=16.0,
    masked_color="#c8c8c8",
    hatch_color="#7a7a7a",
    line_colors=_LINES_LIGHT,
    gap_color="#ffffff",
    qt_palette=_LIGHT_PALETTE,
)

THEMES: Mapping[str, Theme] = MappingProxyType(
    {"light": LIGHT, "dark": DARK, "presentation": PRESENTATION}
)


def get_theme(name: str | Theme) -> Theme:
    """The theme called ``name`` (a :class:`Theme` is returned as is).

    Raises
    ------
    InputError : unknown name; the message lists the valid ones.
    """
    if isinstance(name, Theme):
        return name
    try:
        return THEMES[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown theme '{name}': choose one of {', '.join(THEMES)}") from None


#: ``Artist.set_gid`` of texts whose colour :func:`apply_theme` leaves alone
FIXED_COLOUR = "fixed-colour"


def apply_theme(fig: Figure, theme: Theme | str) -> Figure:
    """Colour an existing figure (background, every axes, spines, ticks, titles, labels).

    Figures built inside ``rc_context(theme.rc())`` already have these colours; this also
    re-colours a figure the window created earlier (switching themes without rebuilding).
    Colour bars are axes of the figure and are coloured too; tick labels get the theme's size.
    Returns ``fig``.
    """
    theme = get_theme(theme)
    fig.set_facecolor(theme.figure_facecolor)
    fig.set_edgecolor(theme.figure_facecolor)
    for figure_text in fig.texts:  # the title, a caption
        if figure_text.get_gid() != FIXED_COLOUR:
            figure_text.set_color(theme.text_color)
    for ax in fig.axes:
        ax.set_facecolor(theme.axes_facecolor)
        for spine in ax.spines.values():
            spine.set_edgecolor(theme.grid_color)
        # ticks are created lazily at draw time: tick_params makes new ones themed as well
        ax.tick_params(
            which="both",
            colors=theme.grid_color,
            labelcolor=theme.text_color,
            labelsize=theme.tick_size,
        )
        titles = [ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)]
        for text in [*titles, ax.xaxis.label, ax.yaxis.label, *ax.texts]:
            # texts drawn on a coloured background (cell values, tile names) keep their colour
            if text is not None and text.get_gid() != FIXED_COLOUR:
                text.set_color(theme.text_color)
    return fig
