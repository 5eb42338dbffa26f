"""analysis.aggregate.stack_range: the fast stack range used for the shared colour scale."""

import numpy as np
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
