"""analysis.views.lines: behaviours no other test reached. The focus on one token (the window's
hover) keeps only that token's lines, on the query or the key side, and none for an index outside
the map; no tokens have no positions."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.themes import get_theme
from analysis.views.lines import XK, XQ, LinesData, LinesDrawer, token_y


def test_no_tokens_have_no_positions():
    assert token_y(0).shape == (0,)
    assert token_y(1).tolist() == [0.5]
    assert token_y(3).tolist() == [1.0, 0.5, 0.0]


def _data() -> LinesData:
    # 3 queries × 4 keys, every weight strong enough to be drawn, each a different width
    strength = (np.arange(12, dtype=np.float32).reshape(1, 3, 4) + 1) / 12
    return LinesData(strength=strength, weights=strength[0], rows=("a", "b", "c"), cols=("w", "x", "y", "z"),
                     row_title="query", col_title="key", title="t", per_head=False)


def _lines(focus):
    drawer = LinesDrawer(Figure(figsize=(5, 4)), get_theme("light"))
    drawer.draw(_data(), focus)
    segs = [np.asarray(s) for s in drawer.lines.get_segments()]
    ends = sorted((round(float(s[0, 1]), 4), round(float(s[1, 1]), 4)) for s in segs)
    assert all(s[0, 0] == XQ and s[1, 0] == XK for s in segs)
    return drawer.n_lines, ends


def test_every_line_is_drawn_without_a_focus():
    assert _lines(None)[0] == 12


def test_a_focused_query_keeps_only_its_lines():
    n, ends = _lines(("q", 1))
    assert n == 4
    assert ends == sorted((0.5, y) for y in token_y(4).round(4).tolist())


def test_a_focused_key_keeps_only_its_lines():
    n, ends = _lines(("k", 3))
    assert n == 3
    assert ends == sorted((y, 0.0) for y in token_y(3).round(4).tolist())


@pytest.mark.parametrize("focus", [("q", 3), ("q", -1), ("k", 4), ("k", -1), ("x", 0)])
def test_a_focus_outside_the_map_keeps_no_line(focus):
    assert _lines(focus) == (0, [])


def test_a_focus_still_leaves_out_the_links_too_weak_to_draw():
    """Hovering a token shows its lines that are drawn anyway, not the faint ones left out."""
    from analysis.views.lines import MIN_STRENGTH

    strength = np.full((1, 2, 3), 0.5, np.float32)
    strength[0, 1, 0] = MIN_STRENGTH / 2  # too weak to draw
    d = LinesData(strength=strength, weights=strength[0], rows=("a", "b"), cols=("x", "y", "z"),
                  row_title="query", col_title="key", title="t", per_head=False)
    drawer = LinesDrawer(Figure(figsize=(5, 4)), get_theme("light"))
    drawer.draw(d, None)
    assert drawer.n_lines == 5
    drawer.draw(d, ("q", 1))
    assert drawer.n_lines == 2
    drawer.draw(d, ("k", 0))
    assert drawer.n_lines == 1


def test_token_labels_shrink_for_long_inputs_down_to_the_tick_size():
    from analysis.views.lines import label_size

    theme = get_theme("light")
    assert (theme.base_size, theme.tick_size) == (10.0, 8.0)
    assert label_size(0, theme) == label_size(1, theme) == label_size(42, theme) == 10.0
    assert label_size(50, theme) == pytest.approx(8.4)
    assert label_size(60, theme) == label_size(5000, theme) == 8.0
