"""geometry.intervals.mean_t_interval: coverage on simulated data, the n = 1 case and bad input."""

import math

import numpy as np
import pytest

from geometry.intervals import mean_t_interval


def test_the_interval_covers_the_mean_at_its_level():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 2.0 <= hi for _, _, (lo, hi) in (mean_t_interval(rng.normal(2.0, 1.0, 5)) for _ in range(3000)))
    assert 0.93 <= hits / 3000 <= 0.97


def test_known_values_and_one_value():
    mean, se, (lo, hi) = mean_t_interval([1.0, 2.0, 3.0])
    assert mean - lo == pytest.approx(hi - mean)
    assert (mean, se) == pytest.approx((2.0, 1 / math.sqrt(3)))
    assert hi - mean == pytest.approx(4.302652729911275 / math.sqrt(3))
    mean, se, ci = mean_t_interval([5.0])
    assert mean == 5.0 and math.isnan(se) and all(math.isnan(c) for c in ci)
    with pytest.raises(ValueError):
        mean_t_interval([])


def test_two_values_give_the_one_degree_of_freedom_interval_and_the_level_is_checked():
    # the smallest sample with an interval (a mutation testing survivor: n = 2 was untested)
    mean, se, (lo, hi) = mean_t_interval([1.0, 3.0])
    assert (mean, se) == pytest.approx((2.0, 1.0)) and hi - mean == pytest.approx(12.706204736174707) == mean - lo
    for level in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence"):
            mean_t_interval([1.0, 2.0], level)
