"""analyses.results.across_seeds: the across-seed interval that decides trained-model comparisons."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _shared_sample_trials(rng, training_sd: float, trials: int, seeds: int = 3, users: int = 600):
    """Per trial: ``seeds`` estimates of 0 that share one user-sampling error (sd 1, the same test users for every
    seed) plus independent training noise, and each seed's standard error as estimated from its users."""
    for _ in range(trials):
        shared = rng.normal(0.0, 1.0)
        estimates = shared + rng.normal(0.0, training_sd, seeds) + rng.normal(0.0, 0.1, seeds)
        within = np.sqrt(rng.chisquare(users - 1, seeds) / (users - 1))
        yield estimates, within


@pytest.mark.parametrize("training_sd", [0.0, 0.3, 1.0, 3.0, 10.0])
def test_with_shared_users_the_interval_keeps_its_coverage_where_the_plain_one_does_not(training_sd):
    """Seeds that evaluate the same users share their sampling error: the interval with ``within_se`` covers the
    truth at about its level whether training noise is negligible or dominant; the plain across-seed interval
    covers far too rarely when training noise is at most the sampling error (the defect it repairs)."""
    rng = np.random.default_rng(int(training_sd * 10))
    trials = 1500
    hits = plain = 0
    for estimates, within in _shared_sample_trials(rng, training_sd, trials):
        low, high = across_seeds(estimates, within_se=within)["ci"]
        hits += low <= 0.0 <= high
        low, high = across_seeds(estimates)["ci"]
        plain += low <= 0.0 <= high
    assert 0.93 <= hits / trials <= 0.975
    if training_sd <= 1.0:
        assert plain / trials < 0.9


def test_with_shared_users_a_planted_effect_is_found():
    rng = np.random.default_rng(5)
    found = sum(
        across_seeds(estimates + 6.0, within_se=within)["ci"][0] > 0
        for estimates, within in _shared_sample_trials(rng, 0.5, 500)
    )
    assert found / 500 >= 0.9


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1, 1), min_size=2, max_size=6).filter(lambda v: np.std(v) > 1e-6),
    st.floats(0, 1),
)
def test_the_shared_error_never_narrows_the_interval_and_zero_gives_the_plain_one(values, within):
    plain = across_seeds(values)
    both = across_seeds(values, within_se=[within] * len(values))
    assert both["mean"] == pytest.approx(plain["mean"])
    assert both["ci"][0] <= plain["ci"][0] + 1e-12 and both["ci"][1] >= plain["ci"][1] - 1e-12
    assert both["se"] == pytest.approx(math.hypot(plain["se"], within))
    none = across_seeds(values, within_se=[0.0] * len(values))
    assert none["ci"] == pytest.approx(plain["ci"]) and none["df"] == pytest.approx(len(values) - 1)


def test_the_shared_error_interval_by_hand():
    """Three seeds 0.01, 0.02, 0.03 with standard errors 0.02 each: a = 0.01^2 / 3, b = 0.02^2,
    df = (a + b)^2 * 2 / a^2 = 13^2 * 2 = 338, half-width t_{0.975, 338} sqrt(a + b) (larger than t_2 sqrt(a));
    with standard errors 0.01 the plain t_2 sqrt(a) is the larger and stands."""
    out = across_seeds([0.01, 0.02, 0.03], within_se=[0.02, 0.02, 0.02])
    a, b = 0.01**2 / 3, 0.02**2
    assert out["df"] == pytest.approx(338.0)
    half = np.float64(1.9670073106672432) * math.sqrt(a + b)  # scipy.stats.t.ppf(0.975, 338)
    assert half > 4.302652729911275 * math.sqrt(a)
    assert out["ci"] == pytest.approx([0.02 - half, 0.02 + half])
    assert out["within_se"] == pytest.approx(0.02) and out["se"] == pytest.approx(math.sqrt(a + b))
    small = across_seeds([0.01, 0.02, 0.03], within_se=[0.01, 0.01, 0.01])
    half = 4.302652729911275 * math.sqrt(a)
    assert small["ci"] == pytest.approx([0.02 - half, 0.02 + half]) and small["df"] == pytest.approx(32.0)
    # seeds that agree exactly: the normal quantile of the shared error alone
    same = across_seeds([0.5, 0.5], within_se=[0.1, 0.1])
    assert same["df"] is None and same["ci"] == pytest.approx(
        [0.5 - 1.959963984540054 * 0.1, 0.5 + 1.959963984540054 * 0.1]
    )


@pytest.mark.parametrize("within", [[0.1], [0.1, float("nan")], [0.1, -0.1]])
def test_bad_standard_errors_are_refused(within):
    with pytest.raises(ValueError, match="within_se"):
        across_seeds([0.1, 0.2], within_se=within)
