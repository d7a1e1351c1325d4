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


def _scored(mu: np.ndarray, logvar: np.ndarray, s: int, seed: int) -> dict[str, np.ndarray]:
    """The draws of ``kl_budget(mu, logvar, n_samples_per_user=s, rng=seed)`` scored in dense numpy, float64.

    Components c = m N + n (mask draw m, user n), queries q = c S + j; ``comp[q, c]`` is log q_c(z_q) computed
    centred, the own term from the standardised draw itself (as the module documents).
    """
    d = mu.shape[-1]
    mu, logvar = mu.reshape(-1, d), logvar.reshape(-1, d)
    k = len(mu)
    sigma = np.exp(0.5 * logvar)
    eps = np.random.default_rng(seed).standard_normal((k * s, d))
    own = np.repeat(np.arange(k), s)
    z = mu[own] + sigma[own] * eps
    comp = -0.5 * ((((z[:, None] - mu[None]) / sigma[None]) ** 2) + logvar[None] + np.log(2 * np.pi)).sum(-1)
    rows = np.arange(k * s)
    comp[rows, own] = -0.5 * ((eps**2).sum(1) + logvar[own].sum(1) + d * np.log(2 * np.pi))
    log_qh = logsumexp(comp, axis=1) - math.log(k)
    log_p = norm.logpdf(z).sum(1)
    return {"comp": comp, "own": own, "z": z, "log_own": comp[rows, own], "log_qh": log_qh, "log_p": log_p}


def _flagged_pairs(mu: np.ndarray, logvar: np.ndarray, s: int, seed: int) -> int:
    """The number of (sample, other component) pairs the module docstring says are recomputed centred: rounding
    bound of the expanded form (d + 4) u (|z|^2 max_k 1/sigma_ck^2 + sum_k mu_ck^2 / sigma_ck^2 + |sum_k logvar_ck|
    + d log 2 pi) nats above EXACT_TOLERANCE = 1e-9, and the log density plus that bound within LSE_MARGIN + log K
    (50 + log K) nats of the sample's own log density. The two constants are written out: the count pins them."""
    d = mu.shape[-1]
    mu, logvar = mu.reshape(-1, d), logvar.reshape(-1, d)
    k = len(mu)
    sc = _scored(mu, logvar, s, seed)
    u = np.finfo(np.float64).eps / 2
    ivar = np.exp(-logvar)
    terms = (mu**2 * ivar).sum(1) + np.abs(logvar.sum(1)) + d * np.log(2 * np.pi)
    bound = (d + 4) * u * ((sc["z"] ** 2).sum(1)[:, None] * ivar.max(1)[None] + terms[None])
    matters = sc["comp"] + bound >= sc["log_own"][:, None] - (50.0 + math.log(k))
    flagged = (bound > 1e-9) & matters
    flagged[np.arange(k * s), sc["own"]] = False  # the own term is never recomputed: it is exact
    return int(flagged.sum())


def _tiny_variance_posteriors(k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # sigma ~ e^-15 around means 30 (|mu| / sigma ~ 1e8), a sigma or so apart: every other component is within
    # the margin of every sample, and its expanded-form value is off by nats
    rng = np.random.default_rng(seed)
    logvar = np.full((k, 2), -30.0) + 0.2 * rng.normal(size=(k, 2))
    mu = 30.0 + np.exp(-15.0) * rng.normal(size=(k, 2))
    return mu, logvar


def test_exact_recomputation_matches_a_centred_float64_reference_across_uneven_chunks():
    # 23 components x 2 samples in query chunks of 7 (last 4) and component chunks of 5 (last 3)
    k, s, seed = 23, 2, 11
    mu, logvar = _tiny_variance_posteriors(k, 0)
    b = kl_budget(mu, logvar, n_samples_per_user=s, chunk_size=7, component_chunk_size=5, rng=seed)
    sc = _scored(mu, logvar, s, seed)
    assert b.n_exact_recomputed == k * s * (k - 1) == _flagged_pairs(mu, logvar, s, seed)
    assert 0.2 < np.mean(sc["log_own"] - sc["log_qh"]) < math.log(k) - 0.2  # overlapping: not at the ceiling
    assert b.mutual_information == pytest.approx(np.mean(sc["log_own"] - sc["log_qh"]), abs=1e-9)
    assert b.kl_aggregate == pytest.approx(np.mean(sc["log_qh"] - sc["log_p"]), rel=1e-12)
    one_chunk = kl_budget(mu, logvar, n_samples_per_user=s, rng=seed)
    assert one_chunk.n_exact_recomputed == b.n_exact_recomputed
    assert one_chunk.mutual_information == pytest.approx(b.mutual_information, abs=1e-12)


def test_exact_recomputation_of_more_pairs_than_one_batch_holds():
    # 300 x 299 = 89,700 pairs flagged in one block: more than the 65,536 recomputed per batch
    k, seed = 300, 1
    mu, logvar = _tiny_variance_posteriors(k, 0)
    b = kl_budget(mu, logvar, rng=seed)
    sc = _scored(mu, logvar, 1, seed)
    assert b.n_exact_recomputed == k * (k - 1) > 65_536
    assert b.mutual_information == pytest.approx(np.mean(sc["log_own"] - sc["log_qh"]), abs=1e-9)
    assert b.kl_aggregate == pytest.approx(np.mean(sc["log_qh"] - sc["log_p"]), rel=1e-12)


def test_recomputed_pairs_are_those_the_documented_bound_flags():
    # d = 1000: the rounding bound is about 1e-9 nats at |mu| / sigma ~ 1.75, where its constant term d log 2 pi
    # is a fifth of it; means 1.5 to 2.0 per coordinate put some pairs below the tolerance, some above, and some
    # (those more than about 0.33 apart) beyond the margin
    rng = np.random.default_rng(12)
    k, d, s, seed = 30, 1000, 2, 13
    mu = np.linspace(1.5, 2.0, k)[:, None] + 0.05 * rng.normal(size=(k, d))
    logvar = 0.05 * rng.normal(size=(k, d))
    b = kl_budget(mu, logvar, n_samples_per_user=s, rng=seed)
    expected = _flagged_pairs(mu, logvar, s, seed)
    assert 0 < expected < k * s * (k - 1)
    assert b.n_exact_recomputed == expected
    # well-conditioned posteriors: nothing is recomputed
    assert kl_budget(rng.normal(size=(20, 3)), rng.normal(scale=0.3, size=(20, 3)), rng=0).n_exact_recomputed == 0


def test_standard_errors_match_numpy_for_mask_draws_and_several_samples():
    # M = 2 draws of N = 3 users, S = 2 samples: user-clustered se = sd_n(mean over m, s) / sqrt(N) (ddof 1);
    # Monte Carlo se = sqrt(sum_c var_c(ddof 1) / S) / K over the K = 6 components
    rng = np.random.default_rng(14)
    m, n, s, d, seed = 2, 3, 2, 2, 15
    mu, logvar = rng.normal(size=(m, n, d)), rng.normal(scale=0.3, size=(m, n, d))
    b = kl_budget(mu, logvar, n_samples_per_user=s, rng=seed)
    sc = _scored(mu, logvar, s, seed)
    users = sc["own"] % n  # each sample against the M components of its own user
    log_qbar = logsumexp(sc["comp"].reshape(-1, m, n)[np.arange(m * n * s), :, users], axis=1) - math.log(m)
    terms = {
        "kl_aggregate": sc["log_qh"] - sc["log_p"],
        "mutual_information": sc["log_own"] - sc["log_qh"],
        "mutual_information_users": log_qbar - sc["log_qh"],
    }
    for name, t in terms.items():
        t = t.reshape(m, n, s)
        assert getattr(b, name) == pytest.approx(t.mean(), rel=1e-10)
        per_user = t.mean(axis=(0, 2))
        assert getattr(b, f"{name}_se") == pytest.approx(per_user.std(ddof=1) / math.sqrt(n), rel=1e-8)
        by_component = t.reshape(m * n, s)
        mc = math.sqrt(by_component.var(axis=1, ddof=1).sum() / s) / (m * n)
        assert getattr(b, f"{name}_mc_se") == pytest.approx(mc, rel=1e-8)
    assert b.mi_gap_to_ceiling == pytest.approx(math.log(m * n) - b.mutual_information, abs=1e-14)
    assert b.mi_users_gap_to_ceiling == pytest.approx(math.log(n) - b.mutual_information_users, abs=1e-14)


def test_standard_errors_of_two_users_with_one_sample_each():
    # N = 2, S = 1: both standard errors are finite, the Monte Carlo one the conservative sd(t) / sqrt(K)
    mu, logvar = np.array([[0.3, -0.2], [1.1, 0.4]]), np.array([[0.1, -0.4], [0.2, 0.3]])
    b = kl_budget(mu, logvar, rng=16)
    sc = _scored(mu, logvar, 1, 16)
    rows = kl_to_standard_normal(mu, logvar)
    assert b.mean_kl_se == pytest.approx(abs(rows[0] - rows[1]) / 2, rel=1e-10)  # sd(ddof 1) / sqrt 2 of two
    t = sc["log_qh"] - sc["log_p"]
    assert b.kl_aggregate_se == pytest.approx(t.std(ddof=1) / math.sqrt(2), rel=1e-8)
    assert b.kl_aggregate_mc_se == pytest.approx(t.std(ddof=1) / math.sqrt(2), rel=1e-8)
    assert b.mutual_information_mc_se == pytest.approx(
        (sc["log_own"] - sc["log_qh"]).std(ddof=1) / math.sqrt(2), rel=1e-8
    )


def test_a_single_posterior_has_no_standard_error_and_sits_at_its_ceiling():
    # K = 1: q_h = q_1, so I = 0 = log K exactly; the gap 0 is at most 5% of log K = 0: flagged
    b = kl_budget(np.array([[0.5, -1.0]]), np.array([[0.2, -0.3]]), n_samples_per_user=3, rng=17)
    assert b.mutual_information == 0.0 and b.log_n_components == 0.0 and b.mi_gap_to_ceiling == 0.0
    assert b.saturated is True and b.saturated_users is True
    assert math.isnan(b.mean_kl_se) and math.isnan(b.mutual_information_se)
    one_sample = kl_budget(np.array([[0.5]]), np.array([[0.2]]), rng=17)
    assert math.isnan(one_sample.kl_aggregate_mc_se)  # S = 1 and K = 1: no spread to estimate


@pytest.mark.parametrize(("spacing", "band"), [(3.6, (0.06, 0.09)), (4.5, (0.015, 0.04))])
def test_saturation_flag_is_set_at_a_gap_of_five_percent_of_log_k(spacing, band):
    # 10 unit-variance components on a line: the gap log K - I falls with their spacing; a gap between 5% and 10%
    # of log K is not flagged, one of 1.5% to 4% is
    mu = (spacing * np.arange(10.0))[:, None]
    b = kl_budget(mu, np.zeros_like(mu), n_samples_per_user=200, rng=0)
    share = b.mi_gap_to_ceiling / b.log_n_components
    assert band[0] < share < band[1]
    assert b.saturated is b.saturated_users is (share <= 0.05)
