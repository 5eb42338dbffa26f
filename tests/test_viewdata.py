"""analysis.aggregate.stack_range: the fast stack range used for the shared colour scale."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.aggregate import stack_range, value_range


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_stack_range_matches_numpy(seed, with_zeros):
    rng = np.random.default_rng(seed)
    a = rng.random((2, 3, 5, 5)).astype(np.float16)
    if with_zeros:
        a[0, 0, 0] = 0.0
    a.setflags(write=False)
    lo, hi = stack_range(a)
    assert lo == float(a.astype(np.float32).min())
    assert hi == float(a.astype(np.float32).max())


def test_stack_range_with_negative_values_and_float32():
    a = np.array([[[[-0.5, 0.25], [1.0, 0.0]]]], dtype=np.float16)
    assert stack_range(a) == (-0.5, 1.0)
    assert stack_range(a.astype(np.float32)) == (-0.5, 1.0)


def test_stack_range_ignores_non_finite_values_like_value_range():
    a = np.array([[[[0.25, np.nan], [np.inf, 0.5]]]], dtype=np.float16)
    assert stack_range(a) == (0.25, 0.5)
    assert value_range(a)[1] == 0.5


# -- overview pooling ------------------------------------------------------------------------
@pytest.mark.parametrize("shape,max_cell", [((2, 3, 128, 128), 64), ((1, 2, 130, 97), 64), ((4, 50, 7), 3), ((5, 5), 5)])
def test_max_pooling_equals_nanmax_of_the_blocks(shape, max_cell):
    from analysis.overview import downsample

    rng = np.random.default_rng(1)
    maps = rng.random(shape).astype(np.float32)
    maps.flat[::17] = np.nan  # NaNs are ignored, as by nanmax
    q, k = shape[-2:]
    # power-of-two blocks (what a long capture's stored pyramid gives): the smallest that fits
    fq, fk = (next(2 ** e for e in range(32) if -(-n // 2 ** e) <= max_cell) for n in (q, k))
    out = downsample(maps, max_cell)
    assert out.shape == shape[:-2] + (-(-q // fq), -(-k // fk)) and out.dtype == np.float32
    for idx in np.ndindex(out.shape):
        *lead, i, j = idx
        block = maps[tuple(lead)][i * fq:(i + 1) * fq, j * fk:(j + 1) * fk]
        want = np.nan if np.all(np.isnan(block)) else np.nanmax(block)
        np.testing.assert_equal(out[idx], np.float32(want))
    assert not np.shares_memory(out, maps)
    assert max(out.shape[-2:]) <= max_cell


def test_pooling_only_the_long_axis_and_padding_negative_maps():
    from analysis.overview import downsample

    rng = np.random.default_rng(2)
    for shape in ((10, 3), (3, 10)):  # one axis pooled by 2, the other kept
        maps = rng.random(shape).astype(np.float32)
        out = downsample(maps, 5)
        assert out.shape == (5, 3) if shape == (10, 3) else out.shape == (3, 5)
        want = maps.reshape(5, 2, 3).max(1) if shape == (10, 3) else maps.reshape(3, 5, 2).max(2)
        np.testing.assert_array_equal(out, want)
    diff = -np.ones((2, 5, 5), dtype=np.float32)  # a difference map: negative everywhere
    np.testing.assert_array_equal(downsample(diff, 3), -np.ones((2, 3, 3), dtype=np.float32))
    np.testing.assert_array_equal(downsample(diff, 3, how="mean"), -np.ones((2, 3, 3), dtype=np.float32))
    small = np.full((4, 4), 0.25, dtype=np.float16)
    kept = downsample(small, 8)  # nothing to pool: a float32 copy
    assert kept.dtype == np.float32 and not np.shares_memory(kept, small)


def test_mean_pooling_keeps_the_mass_of_each_block():
    from analysis.overview import downsample

    rng = np.random.default_rng(5)
    maps = rng.random((2, 3, 12, 7)).astype(np.float16)
    maps[0, 0, :4, :4] = np.nan  # a hidden block: stays NaN
    with pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        out = downsample(maps, 3, how="mean")  # blocks of 4 × 4 (powers of two, as the stored pyramid)
    assert out.shape == (2, 3, 3, 2) and out.dtype == np.float32
    f32 = maps.astype(np.float32)
    for idx in np.ndindex(out.shape):
        *lead, i, j = idx
        block = f32[tuple(lead)][i * 4:(i + 1) * 4, j * 4:(j + 1) * 4]
        if np.isnan(block).all():
            assert np.isnan(out[idx])
        else:
            assert out[idx] == pytest.approx(float(np.nanmean(block.astype(np.float64))), rel=1e-6)


# -- overview mosaic (the Layer and Model overviews' one image) ------------------------------
def _tiles(n: int, q: int = 2, k: int = 3) -> np.ndarray:
    """``n`` tiles ``[q, k]``, tile ``i`` holding ``i + cell / 100`` (every pixel tells where it came from)."""
    return (np.arange(n)[:, None, None] + np.arange(q * k).reshape(q, k) / 100).astype(np.float32)


def test_mosaic_wraps_heads_into_rows_with_nan_gaps():
    from analysis.overview import mosaic

    tiles = _tiles(5)
    m = mosaic(tiles)  # 5 heads: ceil(sqrt(5)) = 3 columns, 2 rows, the last tile empty
    assert (m.rows, m.cols, m.cell, m.gap) == (2, 3, (2, 3), 1)
    assert m.image.shape == (2 * 3 - 1, 3 * 4 - 1) and m.image.dtype == np.float32
    assert m.image.flags.c_contiguous
    for i in range(5):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(m.image[r * 3:r * 3 + 2, c * 4:c * 4 + 3], tiles[i])
    assert np.isnan(m.image[2]).all() and np.isnan(m.image[:, 3]).all() and np.isnan(m.image[:, 7]).all()
    assert np.isnan(m.image[3:, 8:]).all()  # no sixth head
    tall = mosaic(tiles, cols=2)
    assert (tall.rows, tall.cols) == (3, 2) and tall.image.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(tall.image[6:8, 0:3], tiles[4])


def test_mosaic_of_a_grid_keeps_layers_by_heads_and_honours_gap_and_max_cell():
    from analysis.overview import mosaic

    grid = _tiles(6).reshape(2, 3, 2, 3)  # layers × heads
    m = mosaic(grid, gap=2)
    assert (m.rows, m.cols, m.gap) == (2, 3, 2) and m.image.shape == (2 * 4 - 2, 3 * 5 - 2)
    np.testing.assert_array_equal(m.image[4:6, 10:13], grid[1, 2])
    assert np.isnan(m.image[2:4]).all()
    flush = mosaic(grid, gap=0)
    assert flush.image.shape == (4, 9) and not np.isnan(flush.image).any()
    np.testing.assert_array_equal(flush.image[2:4, 6:9], grid[1, 2])
    big = np.zeros((1, 2, 8, 8), dtype=np.float16)
    big[0, 1, 5, 6] = 0.75
    small = mosaic(big, max_cell=4)  # max pooling: one strong weight stays visible
    assert small.cell == (4, 4) and small.image.shape == (4, 9)
    assert small.image[2, 5 + 3] == np.float32(0.75) and small.image.dtype == np.float32
    assert mosaic(big).image.dtype == np.float32  # a float16 capture's maps, not pooled
    with pytest.raises(ValueError, match=r"\[R, C, Q, K\] or \[N, Q, K\]; got \(3, 3\)"):
        mosaic(np.zeros((3, 3)))


def test_the_tile_and_cell_under_the_mouse():
    from analysis.overview import mosaic

    m = mosaic(_tiles(6), cols=3)  # 2 × 3 tiles of 2 × 3 pixels, 1-pixel gaps: image 5 × 11
    assert m.tile_at(0, 0) == (0, 0) and m.cell_at(0, 0) == (0, 0, 0, 0)
    assert m.tile_at(1, 2) == (0, 0) and m.cell_at(1, 2) == (0, 0, 1, 2)
    assert m.tile_at(3, 4) == (1, 1) and m.cell_at(4, 6) == (1, 1, 1, 2)
    assert m.cell_at(4, 10) == (1, 2, 1, 2)
    # pixel centres are integers: a pixel spans [i - 0.5, i + 0.5)
    assert m.cell_at(-0.4, 2.4) == (0, 0, 0, 2) and m.cell_at(1.4, 4.6) == (0, 1, 1, 1)
    assert m.tile_at(-0.6, 0) is None and m.tile_at(0, -0.6) is None
    assert m.tile_at(1.5, 0) is None and m.tile_at(2, 1) is None  # the gap row
    assert m.tile_at(0, 3) is None and m.tile_at(0, 7) is None  # gap columns
    assert m.tile_at(5, 0) is None and m.tile_at(0, 11) is None  # outside the image
    assert m.tile_at(6, 0) is None and m.tile_at(0, 12) is None  # a row or column of tiles past the last
    assert m.tile_at(-2, 0) is None and m.tile_at(0, -3) is None  # above or left of the image
    assert m.cell_at(2, 1) is None and m.cell_at(0, 3) is None
    wide = mosaic(_tiles(2, q=4, k=1), cols=2, gap=3)  # cells 4 × 1, gaps of 3
    assert wide.tile_at(3, 4) == (0, 1) and wide.tile_at(0, 1) is None and wide.cell_at(3, 4) == (0, 1, 3, 0)
