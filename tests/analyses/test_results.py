"""analyses.results.across_seeds: the across-seed interval that decides trained-model comparisons."""

import math

import numpy as np
import pytest

from analyses.results import across_seeds


def test_three_seeds_give_the_student_t_interval():
    out = across_seeds([0.01, 0.02, 0.03])
    assert out["mean"] == pytest.approx(0.02)
    assert out["sd"] == pytest.approx(0.01)
    # t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert out["ci"] == pytest.approx([0.02 - half, 0.02 + half])
    assert out["df"] == 2 and out["n"] == 3


def test_one_seed_has_no_interval_and_says_why():
    out = across_seeds([0.5])
    assert out["ci"] is None and out["se"] is None
    assert "one seed" in out["reason"]


def test_coverage_of_the_across_seed_interval_by_simulation():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 2000
    for _ in range(trials):
        low, high = across_seeds(rng.normal(1.0, 0.3, size=3))["ci"]
        hits += low <= 1.0 <= high
    assert 0.93 <= hits / trials <= 0.97


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [float("inf")]])
def test_bad_estimates_are_refused(bad):
    with pytest.raises(ValueError):
        across_seeds(bad)
