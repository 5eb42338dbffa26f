"""Fonts in figures scale together (issue 18, "Themes"): in the presentation theme every text a
view writes takes its size from the theme, in exported figures and in the window (whose drawers
run outside the theme's ``rc_context``, so rcParams cannot do it)."""

from __future__ import annotations

from dataclasses import replace

import matplotlib as mpl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from analysis.figures import build_figure
from analysis.fonts import ensure_cjk_font
from analysis.themes import PRESENTATION, Theme
from analysis.views import DRAWERS, VIEWS, view_data
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq
from tests.test_quiet import applicable


@pytest.fixture(scope="module")
def padding_report(loaded):
    from analysis.masks import padding_experiment

    return padding_experiment(loaded("marian"), "I like this course", "the students are reading a long book today")


@pytest.fixture(scope="module")
def cases(padding_report):
    out = [(cap, replace(spec, theme="presentation"), inputs)
           for cap in (make_encoder(), make_decoder(), make_seq2seq())
           for spec, inputs in applicable(cap, padding_report)]
    assert {s.view for _, s, _ in out} == set(VIEWS)
    return out


def shown_texts(fig: Figure) -> tuple[list[Text], list[Text]]:
    """(every visible, non-empty text of the drawn figure; the axis labels among them)."""
    FigureCanvasAgg(fig).draw()
    texts = [t for t in fig.texts]
    labels: list[Text] = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            labels += [ax.xaxis.label, ax.yaxis.label]
            texts += [*ax.get_xticklabels(), *ax.get_yticklabels()]

    def shown(t: Text) -> bool:
        return t.get_visible() and bool(t.get_text().strip())

    labels = [t for t in labels if shown(t)]
    return [t for t in texts + labels if shown(t)], labels


def check_sizes(fig: Figure, theme: Theme, where: str) -> None:
    texts, labels = shown_texts(fig)
    assert texts, where
    small = [(t.get_text()[:30], t.get_fontsize()) for t in texts if t.get_fontsize() < theme.tick_size]
    assert small == [], f"{where}: smaller than the theme's tick size {theme.tick_size}: {small}"
    off = [(t.get_text()[:30], t.get_fontsize()) for t in labels if t.get_fontsize() != theme.base_size]
    assert off == [], f"{where}: axis labels not at the theme's base size {theme.base_size}: {off}"


def test_exported_figures_scale_every_text(cases):
    for cap, spec, inputs in cases:
        check_sizes(build_figure(cap, spec, inputs), PRESENTATION, f"export {cap.kind} {spec.view}")


def test_window_drawers_scale_every_text_outside_the_themes_rc_context(cases):
    ensure_cjk_font()
    assert mpl.rcParams["font.size"] < PRESENTATION.tick_size  # rcParams alone would draw them small
    for cap, spec, inputs in cases:
        fig = Figure(figsize=(12, 8))
        drawer = DRAWERS[spec.view](fig, PRESENTATION, live=True)
        drawer.draw(view_data(cap, spec, inputs))
        check_sizes(fig, PRESENTATION, f"window {cap.kind} {spec.view}")


def test_the_check_can_fail():
    fig = Figure()
    ax = fig.add_subplot()
    ax.set_xlabel("rcParams size")
    with pytest.raises(AssertionError, match="smaller than the theme's tick size"):
        check_sizes(fig, PRESENTATION, "plain")
    ax.tick_params(labelsize=PRESENTATION.tick_size)
    ax.set_xlabel("a tick-sized axis label", fontsize=PRESENTATION.tick_size)
    with pytest.raises(AssertionError, match="base size"):
        check_sizes(fig, PRESENTATION, "plain")
