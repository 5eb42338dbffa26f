"""analysis.views.pyramid_image: behaviours no other test reached. Nothing is wanted without a map,
for an empty map or for a view beside the map; a view beside the map shows one blank cell and
draws no pixels; an unsampled or interpolated image is drawn by matplotlib itself."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from analysis.pyramid import ArrayPyramid
from analysis.views.pyramid_image import Shown, add_pyramid_image


def _image(matrix=None, size=(4, 4)):
    fig = Figure(figsize=size, dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    im = add_pyramid_image(ax)
    if matrix is not None:
        im.set_source(ArrayPyramid(matrix))
        q, k = np.asarray(matrix).shape
        ax.set_xlim(-0.5, max(k, 1) - 0.5)
        ax.set_ylim(max(q, 1) - 0.5, -0.5)
    return fig, ax, im


def test_nothing_is_wanted_without_a_map_or_from_an_empty_one():
    _, _, im = _image()
    assert im.wanted() is None and im.fit() is False and im.reads == 0
    _, _, empty = _image(np.zeros((0, 3), np.float32))
    assert empty.wanted() is None


def test_a_view_beside_the_map_shows_one_blank_cell_and_draws_no_pixels():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    fig, ax, im = _image(m)
    levels = []
    im.on_level = levels.append
    assert im.wanted() == Shown(0, 0, 4, 0, 4)
    assert im.fit() is True and levels == [0] and im.reads == 1
    np.testing.assert_array_equal(im.get_array(), m)
    ax.set_xlim(10.5, 20.5)  # to the right of the map
    assert im.wanted() is None
    assert im.fit() is True
    assert im.shown is None and im.level == 0 and im.reads == 2 and levels == [0]
    a = im.get_array()
    assert a.shape == (1, 1) and a.dtype == np.float32 and np.isnan(np.ma.getdata(a)[0, 0])
    assert tuple(im.get_extent()) == (-0.5, 0.5, 0.5, -0.5)
    assert im.fit() is False  # shown already
    renderer = fig.canvas.get_renderer()
    assert im.make_image(renderer) == (None, 0, 0, None)
    ax.set_ylim(-10.5, -20.5)
    ax.set_xlim(-0.5, 3.5)  # above the map
    assert im.wanted() is None


def test_an_unsampled_image_gives_its_cells_not_its_pixels():
    """600 cells on 400 pixels a side (level 0 fits: under two cells a pixel): sampled, one value a
    pixel; unsampled, every cell, as matplotlib colours them."""
    m = np.random.default_rng(0).random((600, 600)).astype(np.float32)
    fig, _, im = _image(m, size=(8, 8))  # 400 pixels a side
    renderer = fig.canvas.get_renderer()
    sampled = im.make_image(renderer)[0]
    assert sampled.shape == (400, 400, 4) and im.level == 0
    raw = im.make_image(renderer, unsampled=True)[0]
    assert raw.shape == (600, 600, 4)
    np.testing.assert_array_equal(raw, AxesImage.make_image(im, renderer, 1.0, True)[0])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_an_interpolated_image_is_resampled_by_matplotlib(interpolation):
    """Not the largest cell per pixel: matplotlib's own resampling, with fewer cells than pixels
    (a smooth ramp between the cells' colours) and with more."""
    m = np.array([[0.0, 1.0]], np.float32)
    fig, _, im = _image(m, size=(8, 2))
    im.set_interpolation(interpolation)
    out = im.make_image(fig.canvas.get_renderer())[0]
    assert out.shape[1] == 400
    row = out[out.shape[0] // 2, :, :3].astype(int)
    assert len({tuple(c) for c in row}) > 2  # more colours than the two cells'
    big = np.random.default_rng(1).random((600, 600)).astype(np.float32)
    fig, _, im = _image(big, size=(8, 8))
    im.set_interpolation(interpolation)
    renderer = fig.canvas.get_renderer()
    np.testing.assert_array_equal(im.make_image(renderer)[0], AxesImage.make_image(im, renderer)[0])
