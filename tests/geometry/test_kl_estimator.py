"""geometry.kl.kl_budget as an estimator (issue 10, finding 1): planted mixtures against quadrature, the saturation
flag, user-clustered standard errors (coverage by simulation) and stable evaluation at tiny variances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from geometry.kl import SATURATION_FRACTION, kl_budget, kl_to_standard_normal


def _log_normal_pdf(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log N(z; mu, diag sigma^2) for grid points z (G, d) and components (K, d): shape (G, K)."""
    quad = (((z[:, None, :] - mu[None]) / sigma[None]) ** 2).sum(-1)
    return -0.5 * (quad + 2 * np.log(sigma).sum(-1)[None] + mu.shape[1] * np.log(2 * np.pi))


def test_planted_1d_mixture_matches_quadrature():
    # overlapping components: the true I lies strictly between 0 and log K
    mu = np.array([-1.5, -0.9, -0.2, 0.4, 1.1, 1.6])[:, None]
    sigma = np.array([0.6, 0.5, 0.8, 0.55, 0.7, 0.65])[:, None]
    logvar = 2 * np.log(sigma)
    grid = np.linspace(-12.0, 12.0, 48_001)[:, None]
    log_comp = _log_normal_pdf(grid, mu, sigma)
    log_qh = logsumexp(log_comp, axis=1) - math.log(len(mu))
    log_p = norm.logpdf(grid[:, 0])
    kl_agg_true = np.trapezoid(np.exp(log_qh) * (log_qh - log_p), grid[:, 0])
    mi_true = float(kl_to_standard_normal(mu, logvar).mean()) - kl_agg_true
    assert 0.2 < mi_true < math.log(len(mu)) - 0.5

    b = kl_budget(mu, logvar, n_samples_per_user=20_000, rng=0)
    assert abs(b.mutual_information - mi_true) < 4 * b.mutual_information_mc_se
    assert abs(b.kl_aggregate - kl_agg_true) < 4 * b.kl_aggregate_mc_se
    # the Monte Carlo error for fixed posteriors is small; the population (user-clustered) one is not
    assert b.mutual_information_mc_se < 0.01 < b.mutual_information_se
    assert b.saturated is False and b.saturation_message is None
    assert b.mi_gap_to_ceiling == pytest.approx(math.log(6) - b.mutual_information)


def test_planted_2d_mixture_with_mask_draws_matches_quadrature():
    # N = 3 users x M = 2 draws; I(X_h; Z) and the user-level I(X; Z) against a 2-D grid
    mu = np.array([[[-1.0, 0.0], [0.3, 0.8], [1.0, -0.5]], [[-0.6, 0.4], [0.5, 0.2], [1.2, -1.0]]])
    sigma = np.full_like(mu, 0.7)
    sigma[1] = 0.5
    logvar = 2 * np.log(sigma)
    m, n, d = mu.shape
    ax = np.linspace(-8.0, 8.0, 641)
    g1, g2 = np.meshgrid(ax, ax, indexing="ij")
    grid = np.c_[g1.ravel(), g2.ravel()]
    cell = (ax[1] - ax[0]) ** 2
    log_comp = _log_normal_pdf(grid, mu.reshape(-1, d), sigma.reshape(-1, d)).reshape(-1, m, n)
    log_qh = logsumexp(log_comp, axis=(1, 2)) - math.log(m * n)
    log_p = norm.logpdf(grid).sum(1)
    kl_agg_true = float((np.exp(log_qh) * (log_qh - log_p)).sum() * cell)
    mi_true = float(kl_to_standard_normal(mu, logvar).mean()) - kl_agg_true
    log_qbar = logsumexp(log_comp, axis=1) - math.log(m)  # (G, N)
    mi_users_true = float((np.exp(log_qbar) * (log_qbar - log_qh[:, None])).sum(0).mean() * cell)
    assert 0.2 < mi_users_true < mi_true < math.log(m * n) - 0.3

    b = kl_budget(mu, logvar, n_samples_per_user=8_000, rng=1)
    assert abs(b.mutual_information - mi_true) < 4 * b.mutual_information_mc_se
    assert abs(b.kl_aggregate - kl_agg_true) < 4 * b.kl_aggregate_mc_se
    assert abs(b.mutual_information_users - mi_users_true) < 4 * b.mutual_information_users_mc_se
    assert b.saturated is False and b.saturated_users is False


def test_well_separated_components_are_flagged_not_identifiable():
    n = 40
    mu = np.zeros((n, 2))
    mu[:, 0] = 50.0 * np.arange(n)
    b = kl_budget(mu, np.zeros((n, 2)), n_samples_per_user=2, rng=2)
    assert b.mutual_information == pytest.approx(math.log(n), abs=1e-9)
    assert b.saturated is True and b.saturated_users is True
    assert 0.0 <= b.mi_gap_to_ceiling < 1e-9
    assert b.saturation_message.startswith("not identifiable at this sample size: Î = log K - ")
    # the rule: the gap to the ceiling is below a fixed fraction of log K
    assert b.mi_gap_to_ceiling <= SATURATION_FRACTION * b.log_n_components


def test_mean_kl_standard_error_is_clustered_by_user():
    rng = np.random.default_rng(3)
    m, n, d = 4, 30, 3
    mu = rng.normal(size=(1, n, d)) + 0.2 * rng.normal(size=(m, n, d))
    logvar = rng.normal(scale=0.3, size=(m, n, d))
    b = kl_budget(mu, logvar, rng=4)
    per_user = kl_to_standard_normal(mu, logvar).mean(0)  # average a user's M draws first
    assert b.mean_kl_se == pytest.approx(per_user.std(ddof=1) / math.sqrt(n), rel=1e-10)
    assert b.n_users == n and b.n_mask_draws == m


def test_clustered_interval_covers_the_population_mean_kl():
    # 200 replicated posterior sets: user effect a_n ~ N(0, 1) and draw noise b_mn ~ N(0, 0.3^2) in every
    # coordinate, logvar 0, so KL = |mu|^2 / 2 and the population mean is d (1 + 0.3^2) / 2
    m, n, d, reps = 5, 40, 2, 200
    truth = 0.5 * d * (1.0 + 0.3**2)
    rng = np.random.default_rng(5)
    z = norm.ppf(0.975)
    covered = naive_covered = 0
    for r in range(reps):
        mu = rng.normal(size=(1, n, d)) + 0.3 * rng.normal(size=(m, n, d))
        b = kl_budget(mu, np.zeros_like(mu), rng=r)
        lo, hi = b.ci("mean_kl")
        covered += lo <= truth <= hi
        rows = kl_to_standard_normal(mu, np.zeros_like(mu)).ravel()
        naive = z * rows.std(ddof=1) / math.sqrt(rows.size)  # treats a user's M draws as independent
        naive_covered += abs(b.mean_kl - truth) <= naive
    # 95% within binomial error (sd 1.5 points at 200 replications); the naive interval under-covers
    assert 0.90 <= covered / reps <= 0.99
    assert naive_covered / reps < 0.85


@pytest.mark.parametrize(("seed", "spread"), [(0, 2.0), (1, 2.0), (2, 20.0)])
def test_tiny_variances_never_push_information_above_log_k(seed, spread):
    # sigma = e^-15 ~ 3e-7 around means of size 30: the expanded quadratic form loses all its digits (before the
    # fix, spread 20 gave I = log K + 1.6 and spread 2 values far off the centred computation)
    rng = np.random.default_rng(seed)
    k, d, s = 24, 3, 3
    logvar = np.full((k, d), -30.0) + 0.5 * rng.normal(size=(k, d))
    sigma = np.exp(0.5 * logvar)
    mu = 30.0 + spread * np.exp(-15.0) * rng.normal(size=(k, d))  # spread 2: a few sigma apart, overlapping
    b = kl_budget(mu, logvar, n_samples_per_user=s, rng=seed)
    assert b.mutual_information <= math.log(k) + 1e-12
    assert b.mutual_information_users <= math.log(k) + 1e-12
    # the same draws scored centred per component, (z - mu_c) / sigma_c, in dense numpy
    eps = np.random.default_rng(seed).standard_normal((k * s, d))
    own = np.repeat(np.arange(k), s)
    zc = (mu[own][:, None] - mu[None] + (sigma[own] * eps)[:, None]) / sigma[None]  # (queries, components, d)
    comp = -0.5 * (zc**2 + logvar[None] + np.log(2 * np.pi)).sum(-1).T  # (components, queries)
    log_qh = logsumexp(comp, axis=0) - math.log(k)
    log_own = comp[own, np.arange(k * s)]
    if spread < 10:
        assert 0.1 < np.mean(log_own - log_qh) < math.log(k) - 0.1
    assert b.mutual_information == pytest.approx(np.mean(log_own - log_qh), abs=1e-6)
    z = mu[own] + sigma[own] * eps
    log_p = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1)
    assert b.kl_aggregate == pytest.approx(np.mean(log_qh - log_p), rel=1e-9)
