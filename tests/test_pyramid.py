"""Pyramids of max-pooled maps (analysis.pyramid), checked against a direct computation."""

import numpy as np
import pytest

from analysis.overview import downsample
from analysis.pyramid import (
    ArrayPyramid,
    MapSource,
    block_for,
    level_for,
    level_shape,
    n_levels,
    pool,
    to_float32,
)


def _direct_max(a: np.ndarray, f: int) -> np.ndarray:
    q, k = a.shape
    out = np.full((-(-q // f), -(-k // f)), np.nan, dtype=np.float32)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = a[i * f:(i + 1) * f, j * f:(j + 1) * f]
            if not np.all(np.isnan(block)):
                out[i, j] = np.nanmax(block)
    return out


@pytest.mark.parametrize("shape", [(7, 7), (8, 8), (13, 5), (33, 64), (1, 9)])
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_pool_is_the_max_of_each_block(shape, f):
    rng = np.random.default_rng(sum(shape) * f)
    a = rng.random(shape).astype(np.float32)
    a[rng.random(shape) < 0.2] = np.nan
    np.testing.assert_array_equal(pool(a, f), _direct_max(a, f))


def test_pool_keeps_leading_axes_and_agrees_with_downsample_on_powers_of_two():
    a = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float16)
    p = pool(a, 4)
    assert p.shape == (3, 2, 16, 16) and p.dtype == np.float32
    np.testing.assert_array_equal(p, downsample(a, 16))


def test_a_single_peak_survives_every_level():
    a = np.zeros((100, 100), dtype=np.float32)
    a[37, 91] = 0.9
    pyr = ArrayPyramid(a)
    for k in range(n_levels(100, 100)):
        lev = pyr.level(k)
        assert lev.shape == level_shape(100, 100, k)
        assert lev.max() == np.float32(0.9)
        assert lev[37 >> k, 91 >> k] == np.float32(0.9)


def test_levels_and_regions():
    a = np.random.default_rng(1).random((50, 30)).astype(np.float32)
    pyr = ArrayPyramid(a)
    assert isinstance(pyr, MapSource)
    assert pyr.shape == (50, 30)
    np.testing.assert_array_equal(pyr.level(2), pool(pool(a, 2), 2))
    np.testing.assert_array_equal(pyr.level(2), _direct_max(a, 4))
    np.testing.assert_array_equal(pyr.region(0, 3, 9, 4, 20), a[3:9, 4:20])
    np.testing.assert_array_equal(pyr.region(1, 2, 5, 1, 7), _direct_max(a, 2)[2:5, 1:7])
    with pytest.raises(ValueError):
        pyr.level(-1)
    with pytest.raises(ValueError):
        ArrayPyramid(np.zeros((2, 2, 2)))


def test_block_level_and_counts():
    assert block_for(64, 64) == 1 and block_for(65, 64) == 2 and block_for(4096, 64) == 64
    assert block_for(300, 64) == 8
    with pytest.raises(ValueError):
        block_for(0, 4)
    assert level_for(4096, 4096, 1000, 1000) == 2   # 1024 rows on 1000 pixels: 2 rows per pixel
    assert level_for(4096, 4096, 1024, 1024) == 2
    assert level_for(4096, 4096, 1025, 1025) == 1
    assert level_for(4096, 4096, 4096, 4096) == 0
    assert level_for(500, 500, 600, 600) == 0
    assert level_for(4096, 128, 500, 500) == 0      # the narrow side decides: never pool below a pixel
    assert n_levels(16, 16) == 1 and n_levels(17, 3) == 2 and n_levels(4096, 4096) == 9


def test_float16_converts_exactly_subnormals_included():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    every = bits.view(np.float16)
    np.testing.assert_array_equal(to_float32(every), every.astype(np.float32))  # NaNs too (equal_nan)
    a = np.array([[1.0, 2.5], [3.0, 4.0]], dtype=np.float32)
    assert to_float32(a) is a and to_float32(a[:, ::-1]).dtype == np.float32
    strided = (np.random.default_rng(2).random((6, 8)) * 1e-5).astype(np.float16)[::2, 1::3]
    np.testing.assert_array_equal(to_float32(strided), strided.astype(np.float32))


@pytest.mark.parametrize("f", [2, 4, 8])
def test_pooling_float16_is_exact_on_every_path(f):
    rng = np.random.default_rng(f)
    tiny = (rng.random((2, 37, 29)) ** 6 / 4096).astype(np.float16)  # mostly subnormal: the bits path
    assert ((tiny > 0) & (tiny < np.float16(6.1e-5))).mean() > 0.3
    np.testing.assert_array_equal(pool(tiny, f), pool(tiny.astype(np.float32), f))
    for k in range(2):
        np.testing.assert_array_equal(pool(tiny, f)[k], _direct_max(tiny[k].astype(np.float32), f))
    # negative values or NaN: the float path (NaN-ignoring), the same answers
    odd = tiny.copy()
    odd[0, 3, 4], odd[1, 5:9, 0:9] = -0.5, np.nan
    for k in range(2):
        np.testing.assert_array_equal(pool(odd, f)[k], _direct_max(odd[k].astype(np.float32), f))


def test_a_float16_pyramid_keeps_its_map_and_pools_from_the_finest_level_kept():
    a = (np.random.default_rng(5).random((70, 45)) / 4096).astype(np.float16)
    pyr = ArrayPyramid(a)
    np.testing.assert_array_equal(pyr.level(3), _direct_max(a.astype(np.float32), 8))  # straight from level 0
    np.testing.assert_array_equal(pyr.level(2), _direct_max(a.astype(np.float32), 4))
    np.testing.assert_array_equal(pyr.level(4), _direct_max(a.astype(np.float32), 16))
    np.testing.assert_array_equal(pyr.region(0, 5, 9, 40, 45), a[5:9, 40:45].astype(np.float32))
    assert pyr.level(0).dtype == np.float32 and np.shares_memory(pyr._levels[0], a)
def test_block_for_takes_one_cell_and_one_pixel_and_says_what_it_needs():
    assert block_for(1, 1) == 1 and block_for(5, 1) == 8 and block_for(1, 64) == 1
    with pytest.raises(ValueError, match="n > 0 and max_cells > 0"):
        block_for(4, 0)
    with pytest.raises(ValueError, match="max_cells=-1"):
        block_for(4, -1)


def test_level_for_fills_odd_pixel_counts_and_never_hangs_on_a_collapsed_view():
    # 5 rows on 3 pixels: level 1 (3 cells of 2 rows) still has a cell per pixel
    assert level_for(5, 5, 3, 3) == 1
    assert level_for(9, 9, 5, 5) == 1 and level_for(9, 9, 4, 4) == 1 and level_for(9, 9, 3, 3) == 2
    # one pixel, or none (a widget not laid out yet): the level of one cell, at once
    assert level_for(100, 100, 1, 1) == 7 and level_shape(100, 100, 7) == (1, 1)
    assert level_for(100, 40, 0, 0) == 6 and level_for(1, 1, 0.5, 0.5) == 0


def test_pool_pads_with_nan_not_zero_and_keeps_every_leading_axis():
    neg = -np.ones((3, 5), dtype=np.float32)  # a difference map: negative everywhere
    np.testing.assert_array_equal(pool(neg, 2), -np.ones((2, 3), dtype=np.float32))
    hidden = np.full((3, 3), np.nan, dtype=np.float32)
    hidden[:2, :2] = 0.5  # the last row and column are hidden tokens
    out = pool(hidden, 2)
    assert out[0, 0] == np.float32(0.5) and np.isnan(out[1, 1]) and np.isnan(out[0, 1])
    rng = np.random.default_rng(3)
    maps = rng.random((2, 3, 5, 7)).astype(np.float32)
    p = pool(maps, 2)
    assert p.shape == (2, 3, 3, 4)
    for i, j in np.ndindex(2, 3):
        np.testing.assert_array_equal(p[i, j], _direct_max(maps[i, j], 2))


def test_float16_maps_come_back_as_float32_at_every_level_and_region():
    a = np.random.default_rng(4).random((20, 12)).astype(np.float16)
    assert pool(a, 1).dtype == np.float32 and not np.shares_memory(pool(a, 1), a)
    np.testing.assert_array_equal(pool(a, 1), a.astype(np.float32))
    pyr = ArrayPyramid(a)
    for k in range(3):
        assert pyr.level(k).dtype == np.float32
        assert pyr.region(k, 0, 2, 0, 2).dtype == np.float32
    np.testing.assert_array_equal(pyr.level(0), a.astype(np.float32))
    np.testing.assert_array_equal(pyr.level(1), _direct_max(a.astype(np.float32), 2))


def test_pyramid_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match=r"one \[Q, K\] map, got shape \(2, 2, 2\)"):
        ArrayPyramid(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="start at 0, got -2"):
        ArrayPyramid(np.zeros((4, 4))).level(-2)
