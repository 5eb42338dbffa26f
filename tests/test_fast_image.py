"""analysis.views.fast_image.NearestImage draws the same pixels as matplotlib's nearest AxesImage."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure

from analysis.views.fast_image import NearestImage

RNG = np.random.default_rng(0)


def render(A, norm, fast: bool, origin: str = "upper", limits=None, cmap="viridis"):
    fig = Figure(figsize=(9.6, 7.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.15, 0.74, 0.8))
    q, k = A.shape[:2]
    extent = (-0.5, k - 0.5, q - 0.5, -0.5) if origin == "upper" else (-0.5, k - 0.5, -0.5, q - 0.5)
    if fast:
        im = NearestImage(ax, interpolation="nearest", origin=origin, norm=norm, cmap=cmap)
        im.set_data(A)
        ax.add_image(im)
        ax.set_aspect("auto")
    else:
        im = ax.imshow(A, aspect="auto", interpolation="nearest", origin=origin, norm=norm, cmap=cmap)
        im.set_interpolation_stage("data")
    im.set_extent(extent)
    xl, yl = limits or ((-0.5, k - 0.5), (extent[2], extent[3]))
    ax.set_xlim(*xl)
    ax.set_ylim(*yl)
    ax.set_axis_off()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def _index_colormap(n: int) -> ListedColormap:
    """n colours with distinct RGB bytes: a rendered pixel tells which cell it shows."""
    i = np.arange(n)
    return ListedColormap(np.stack([(i % 32) / 31, (i // 32 % 32) / 31, np.full(n, 0.5)], 1))


def _decode(img: np.ndarray, n: int) -> np.ndarray:
    cmap = _index_colormap(n)
    lut = {tuple(c): k for k, c in enumerate(cmap(np.arange(n), bytes=True)[:, :3].tolist())}
    return np.array([[lut.get(tuple(p), -1) for p in row] for row in img[..., :3].tolist()])


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (17, 17), (30, 70), (100, 100)])
@pytest.mark.parametrize("norm", [Normalize(0, 1), LogNorm(1e-3, 1)])
def test_pixel_identical_for_small_maps(shape, norm):
    A = RNG.random(shape).astype(np.float32)
    np.testing.assert_array_equal(render(A, norm, True), render(A, norm, False))


@pytest.mark.parametrize("n", [256, 1024])
def test_large_maps_differ_only_where_a_pixel_centre_sits_on_a_cell_edge(n):
    """matplotlib's resampler decides pixels whose centre lies on a cell edge in fixed point: there
    the two may show neighbouring cells, nowhere else (each cell's colour encodes its row/column)."""
    cmap = _index_colormap(n)
    norm = Normalize(0, n - 1)
    rows = np.repeat(np.arange(n, dtype=np.float32)[:, None], n, 1)
    for A in (rows, rows.T.copy()):
        fast = _decode(render(A, norm, True, cmap=cmap), n)
        ref = _decode(render(A, norm, False, cmap=cmap), n)
        inside = (fast >= 0) & (ref >= 0)
        assert np.array_equal(fast >= 0, ref >= 0)  # the same pixels belong to the map
        d = np.abs(fast - ref)[inside]
        assert d.max() <= 1 and (d == 0).mean() > 0.97


def test_masked_and_invalid_cells_use_the_bad_colour():
    A = RNG.random((20, 20)).astype(np.float32)
    A[3, 4] = np.nan
    A = np.ma.masked_array(A, mask=np.eye(20, dtype=bool))
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="red")
    np.testing.assert_array_equal(render(A, Normalize(0, 1), True, cmap=cmap),
                                  render(A, Normalize(0, 1), False, cmap=cmap))
    # zeros under a log norm are masked too
    B = RNG.random((20, 20)).astype(np.float32)
    B[np.triu_indices(20, 1)] = 0
    np.testing.assert_array_equal(render(B, LogNorm(1e-3, 1), True, cmap=cmap),
                                  render(B, LogNorm(1e-3, 1), False, cmap=cmap))


def test_origin_lower_and_axes_wider_than_the_image():
    A = RNG.random((12, 9)).astype(np.float32)
    np.testing.assert_array_equal(render(A, Normalize(0, 1), True, origin="lower"),
                                  render(A, Normalize(0, 1), False, origin="lower"))
    lim = ((-3, 12), (15, -4))  # the image covers part of the axes only
    np.testing.assert_array_equal(render(A, Normalize(0, 1), True, limits=lim),
                                  render(A, Normalize(0, 1), False, limits=lim))


def test_rgba_data_falls_back_to_axes_image():
    A = RNG.random((10, 10, 4)).astype(np.float32)
    A[..., 3] = 1
    np.testing.assert_array_equal(render(A, None, True), render(A, None, False))
