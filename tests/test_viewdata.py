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
