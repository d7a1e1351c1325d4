"""Tests for geometry.kl: the analytic KL and the KL budget decomposition on cases with known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from geometry.kl import KLBudget, kl_budget, kl_to_standard_normal


def test_kl_matches_torch_distributions():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    q = torch.distributions.Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * logvar)))
    p = torch.distributions.Normal(torch.zeros(7, 5, dtype=torch.float64), torch.ones(7, 5, dtype=torch.float64))
    expected = torch.distributions.kl_divergence(q, p).sum(-1).numpy()
    np.testing.assert_allclose(kl_to_standard_normal(mu, logvar), expected, rtol=1e-12)
    out = kl_to_standard_normal(torch.tensor(mu, requires_grad=True), torch.tensor(logvar))
    assert isinstance(out, torch.Tensor) and out.shape == (7,)
    out.sum().backward()  # differentiable


def test_kl_is_zero_at_the_prior_and_precise_near_it():
    assert kl_to_standard_normal(np.zeros(4), np.zeros(4)) == 0.0
    # 0.5 (e^l - 1 - l) ~ l^2 / 4: with expm1 the value survives at l = 1e-6
    assert kl_to_standard_normal(np.zeros(1), np.full(1, 1e-6)) == pytest.approx(0.25e-12, rel=1e-5)


def test_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        kl_to_standard_normal(np.array([np.nan]), np.zeros(1))
    with pytest.raises(ValueError, match="broadcast"):
        kl_to_standard_normal(np.zeros((2, 3)), np.zeros((2, 4)))


def test_identical_posteriors_have_zero_information():
    mu = np.tile([0.5, -1.0, 0.3], (60, 1))
    logvar = np.tile([-0.5, 0.2, 0.0], (60, 1))
    b = kl_budget(mu, logvar, n_samples_per_user=4, rng=0)
    assert abs(b.mutual_information) < 1e-9  # log q_n(z) == log q_h(z) exactly, up to rounding
    # q_h = q_n, so KL(q_h || p) is the analytic KL
    assert abs(b.kl_aggregate - b.mean_kl) < 4 * b.kl_aggregate_se
    lo, hi = b.ci("kl_aggregate")
    assert hi - lo == pytest.approx(2 * 1.959964 * b.kl_aggregate_se, rel=1e-6)


def test_well_separated_posteriors_reach_log_n():
    n = 50
    mu = np.zeros((n, 3))
    mu[:, 0] = 100.0 * np.arange(n)  # 100 standard deviations apart
    b = kl_budget(mu, np.zeros((n, 3)), rng=1)
    assert b.mutual_information == pytest.approx(math.log(n), abs=1e-9)
    assert b.log_n_components == pytest.approx(math.log(n))


def test_two_separated_groups_carry_log_2():
    mu = np.zeros((20, 2))
    mu[10:, 1] = 60.0
    logvar = np.full((20, 2), -0.3)
    b = kl_budget(mu, logvar, n_samples_per_user=3, rng=2)
    assert b.mutual_information == pytest.approx(math.log(2.0), abs=1e-9)


def test_chunked_log_sum_exp_equals_brute_force():
    rng = np.random.default_rng(3)
    n, d, s, seed = 30, 3, 2, 7
    mu, logvar = rng.normal(size=(n, d)), rng.normal(scale=0.5, size=(n, d))
    b = kl_budget(mu, logvar, n_samples_per_user=s, chunk_size=7, component_chunk_size=4, rng=seed)
    # the same draws, scored with dense numpy
    eps = np.random.default_rng(seed).standard_normal((n * s, d))
    own = np.repeat(np.arange(n), s)
    sigma = np.exp(0.5 * logvar)
    z = mu[own] + sigma[own] * eps
    comp = -0.5 * (((z[:, None] - mu[None]) / sigma[None]) ** 2 + logvar[None] + np.log(2 * np.pi)).sum(-1)
    log_qh = logsumexp(comp, axis=1) - np.log(n)
    log_p = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1)
    log_own = comp[np.arange(n * s), own]
    assert b.kl_aggregate == pytest.approx(np.mean(log_qh - log_p), rel=1e-10)
    assert b.mutual_information == pytest.approx(np.mean(log_own - log_qh), rel=1e-10)
    assert b.mean_kl == pytest.approx(kl_to_standard_normal(mu, logvar).mean(), rel=1e-12)


def test_results_do_not_depend_on_chunk_sizes():
    rng = np.random.default_rng(4)
    mu, logvar = rng.normal(size=(50, 4)), rng.normal(scale=0.5, size=(50, 4))
    a = kl_budget(mu, logvar, n_samples_per_user=2, chunk_size=9, component_chunk_size=5, rng=5)
    b = kl_budget(mu, logvar, n_samples_per_user=2, chunk_size=1000, component_chunk_size=1000, rng=5)
    assert a.kl_aggregate == pytest.approx(b.kl_aggregate, rel=1e-11)
    assert a.mutual_information == pytest.approx(b.mutual_information, rel=1e-11)


def test_the_three_terms_add_up():
    rng = np.random.default_rng(6)
    mu, logvar = rng.normal(size=(200, 6)), rng.normal(scale=0.7, size=(200, 6))
    b = kl_budget(mu, logvar, n_samples_per_user=4, rng=7)
    # the two estimates of I (the mixture's, and E[KL] - KL(q || p) from the aggregate) agree up to Monte Carlo
    # error: the decomposition holds on data, not only as the definition of the gap
    assert abs(b.additivity_gap) < 4 * b.additivity_gap_se
    assert abs(b.mutual_information_identity - b.mutual_information) < 4 * b.additivity_gap_se
    assert 0 < b.mutual_information < b.log_n_components and b.kl_aggregate > 0
    lo, hi = b.ci("mutual_information")
    assert lo < b.mutual_information < hi


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 25),
    d=st.integers(1, 4),
    scale=st.floats(0.01, 30.0),
    lv_scale=st.floats(0.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_information_never_exceeds_log_n(n, d, scale, lv_scale, seed):
    rng = np.random.default_rng(seed)
    mu, logvar = scale * rng.normal(size=(n, d)), lv_scale * rng.normal(size=(n, d))
    b = kl_budget(mu, logvar, n_samples_per_user=2, rng=seed)
    assert b.mutual_information <= math.log(n) + 1e-9
    assert b.mutual_information_users <= math.log(n) + 1e-9


def test_mask_draws_are_mixture_components():
    rng = np.random.default_rng(8)
    m, n, d = 3, 40, 3
    # identical draws: the user-level information equals the component-level one sample by sample
    base_mu, base_lv = rng.normal(size=(n, d)), rng.normal(scale=0.3, size=(n, d))
    same = kl_budget(np.stack([base_mu] * m), np.stack([base_lv] * m), rng=9)
    assert same.n_mask_draws == m and same.log_n_components == pytest.approx(math.log(m * n))
    assert same.mutual_information_users == pytest.approx(same.mutual_information, abs=1e-9)
    # distinct draws far apart: I(X_h; Z) ~ log(M N) but the user part stays <= log N
    shift = 80.0 * np.arange(m)[:, None, None] * np.array([1.0, 0.0, 0.0])
    far = np.stack([base_mu] * m) + shift
    b = kl_budget(far, np.stack([base_lv] * m), rng=10)
    assert b.mutual_information_users <= math.log(n) + 1e-9
    assert b.mutual_information - b.mutual_information_users == pytest.approx(math.log(m), abs=1e-6)


def test_kl_budget_rejects_bad_input():
    with pytest.raises(ValueError, match="share shape"):
        kl_budget(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        kl_budget(np.full((4, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="confidence"):
        kl_budget(np.zeros((4, 2)), np.zeros((4, 2)), confidence=1.5)
    with pytest.raises(ValueError, match="no interval"):
        kl_budget(np.zeros((4, 2)), np.zeros((4, 2)), rng=0).ci("log_n_components")


def test_kl_checks_the_latent_axis_before_numpy_or_torch_do():
    # without the check torch raises a RuntimeError and numpy an AxisError with messages of their own
    with pytest.raises(ValueError, match="do not broadcast"):
        kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="last \\(latent\\) axis"):
        kl_to_standard_normal(np.float64(0.5), np.float64(0.0))


def test_kl_budget_is_frozen_and_its_defaults_are_documented_values():
    b = kl_budget(np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros((2, 2)), rng=0)
    assert b.n_samples_per_component == 1 and b.confidence == 0.95  # one sample per component by default
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.mutual_information = 0.0
    required = {f.name: 0.0 for f in dataclasses.fields(KLBudget) if f.default is dataclasses.MISSING}
    bare = KLBudget(**required)
    assert bare.confidence == 0.95 and bare.n_exact_recomputed == 0
    assert bare.saturated is False and bare.saturated_users is False
    assert math.isnan(bare.mi_gap_to_ceiling) and math.isnan(bare.kl_aggregate_mc_se)


def test_kl_budget_argument_checks_sit_at_their_boundaries():
    mu, logvar = np.zeros((3, 2)), np.zeros((3, 2))
    for name in ("n_samples_per_user", "chunk_size", "component_chunk_size"):
        with pytest.raises(ValueError, match="must all be >= 1"):
            kl_budget(mu, logvar, **{name: 0})
    one = kl_budget(mu, logvar, n_samples_per_user=1, chunk_size=1, component_chunk_size=1, rng=0)
    assert one.mutual_information == pytest.approx(0.0, abs=1e-12)  # identical posteriors
    for shape in ((0, 2), (3, 0), (2, 0, 2)):
        with pytest.raises(ValueError, match="at least one posterior and one latent dimension"):
            kl_budget(np.zeros(shape), np.zeros(shape))
    single = kl_budget(np.zeros((1, 1)), np.zeros((1, 1)), rng=0)  # K = 1 and d = 1 are allowed
    assert single.log_n_components == 0.0 and single.mean_kl == 0.0
