"""Tests for geometry.wasserstein: closed forms against POT and scipy, the sandwich, all-pairs chunking."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geometry.wasserstein import (
    iter_pairwise_w1_bounds,
    mean_distance,
    pairwise_w1_bounds,
    pairwise_w1_bounds_dense,
    sliced_w1_diag_gaussian,
    w1_bounds,
    w1_diag_gaussian_mc,
    w1_gaussian_1d,
    w1_samples,
    w2_diag_gaussian,
)

finite = st.floats(-5, 5, allow_nan=False)
positive = st.floats(0.05, 3, allow_nan=False)


def _pair(d: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=d), rng.uniform(0.2, 2.0, d), rng.normal(size=d), rng.uniform(0.2, 2.0, d)


# --- closed-form W2 -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 6), data=st.data())
def test_w2_matches_pot_bures_on_diagonal_covariances(d, data):
    mu_u, mu_v = (data.draw(arrays(np.float64, d, elements=finite)) for _ in range(2))
    s_u, s_v = (data.draw(arrays(np.float64, d, elements=positive)) for _ in range(2))
    expected = ot.gaussian.bures_wasserstein_distance(mu_u, mu_v, np.diag(s_u**2), np.diag(s_v**2))
    assert w2_diag_gaussian(mu_u, s_u, mu_v, s_v) == pytest.approx(float(expected), rel=1e-6, abs=1e-6)


def test_w2_broadcasts_like_pot_pairwise():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    s_a, s_b = rng.uniform(0.3, 2, (4, 3)), rng.uniform(0.3, 2, (5, 3))
    got = w2_diag_gaussian(mu_a[:, None], s_a[:, None], mu_b[None], s_b[None])
    cov_a = np.stack([np.diag(s**2) for s in s_a])
    cov_b = np.stack([np.diag(s**2) for s in s_b])
    expected = ot.gaussian.bures_wasserstein_distance(mu_a, mu_b, cov_a, cov_b)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_torch_in_torch_out_and_differentiable():
    rng = np.random.default_rng(2)
    mu_u = torch.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    s_u, mu_v, s_v = rng.uniform(0.5, 1, (3, 4)), rng.normal(size=(3, 4)), rng.uniform(0.5, 1, (3, 4))
    out = w2_diag_gaussian(mu_u, s_u, mu_v, s_v)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    np.testing.assert_allclose(out.detach().numpy(), w2_diag_gaussian(mu_u.detach().numpy(), s_u, mu_v, s_v))
    out.sum().backward()
    # d W2 / d mu_u = (mu_u - mu_v) / W2
    expected = (mu_u.detach().numpy() - mu_v) / out.detach().numpy()[:, None]
    np.testing.assert_allclose(mu_u.grad.numpy(), expected, rtol=1e-10)
    lo = mean_distance(mu_u.detach(), mu_v)
    assert isinstance(lo, torch.Tensor)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([np.nan, 0.0]), np.ones(2), np.zeros(2), np.ones(2)), "NaN"),
        ((np.zeros(2), -np.ones(2), np.zeros(2), np.ones(2)), ">= 0"),
        ((np.zeros(2), np.ones(2), np.zeros(3), np.ones(3)), "broadcast"),
        ((np.float64(0.0), np.float64(1.0), np.float64(0.0), np.float64(1.0)), "last"),
    ],
)
def test_w2_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        w2_diag_gaussian(*args)


# --- one dimension --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m_u", "s_u", "m_v", "s_v"), [(0, 1, 0, 2), (0.3, 1, -1, 0.4), (2, 0.5, 0, 0.5)])
def test_1d_closed_form_matches_scipy_on_quantile_grids(m_u, s_u, m_v, s_v):
    # deterministic samples at the mid-quantiles approximate the two Gaussians to O(log n / n)
    t = (np.arange(20_000) + 0.5) / 20_000
    q = scipy.stats.norm.ppf(t)
    expected = scipy.stats.wasserstein_distance(m_u + s_u * q, m_v + s_v * q)
    assert w1_gaussian_1d(m_u, s_u, m_v, s_v) == pytest.approx(expected, rel=2e-3)


def test_1d_closed_form_special_cases_and_projection_bound_is_exact_in_1d():
    assert w1_gaussian_1d(1.5, 0.7, -0.5, 0.7) == pytest.approx(2.0)  # equal sigma: |mu difference|
    assert w1_gaussian_1d(0.0, 1.0, 0.0, 3.0) == pytest.approx(2.0 * np.sqrt(2 / np.pi))  # E|2 Z|
    mu_u, s_u, mu_v, s_v = np.array([0.4]), np.array([1.3]), np.array([-0.2]), np.array([0.5])
    lower, upper = w1_bounds(mu_u, s_u, mu_v, s_v, lower="projection")
    assert lower == pytest.approx(float(w1_gaussian_1d(0.4, 1.3, -0.2, 0.5)), rel=1e-12)
    assert upper == pytest.approx(np.hypot(0.6, 0.8))


def test_pot_emd_equals_scipy_on_1d_samples_with_weights():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=60), rng.gamma(2.0, size=45)
    a, b = rng.uniform(0.1, 1, 60), rng.uniform(0.1, 1, 45)
    assert w1_samples(x, y) == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-10)
    assert w1_samples(x, y, a, b) == pytest.approx(scipy.stats.wasserstein_distance(x, y, a, b), rel=1e-10)


def test_emd_of_a_translated_cloud_is_the_translation_length():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 5))
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    assert w1_samples(x, x + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-9)


def test_w1_samples_rejects_bad_input():
    with pytest.raises(ValueError, match="same d"):
        w1_samples(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="weights"):
        w1_samples(np.zeros((3, 2)), np.zeros((3, 2)), a=np.array([1.0, -1.0, 1.0]))


# --- sandwich and Monte Carlo -----------------------------------------------------------------------------


@pytest.mark.parametrize(("d", "seed"), [(2, 0), (3, 1), (5, 2), (10, 3), (50, 4)])
def test_mc_w1_lies_in_the_sandwich_up_to_sampling_error(d, seed):
    mu_u, s_u, mu_v, s_v = _pair(d, seed)
    n = 400
    est = w1_diag_gaussian_mc(mu_u, s_u, mu_v, s_v, n, rng=seed)
    lower, upper = w1_bounds(mu_u, s_u, mu_v, s_v)
    proj, _ = w1_bounds(mu_u, s_u, mu_v, s_v, lower="projection")
    # the empirical mean of (sigma_u - sigma_v) * eps has norm ~ ||sigma_u - sigma_v|| / sqrt(n)
    tol = 4.0 * np.linalg.norm(s_u - s_v) / np.sqrt(n)
    assert lower <= proj <= upper
    assert proj - tol <= est <= upper + tol


def test_mc_w1_is_exact_when_sigmas_agree():
    rng = np.random.default_rng(5)
    mu_u, mu_v, s = rng.normal(size=20), rng.normal(size=20), rng.uniform(0.5, 2, 20)
    est = w1_diag_gaussian_mc(mu_u, s, mu_v, s, 200, rng=0)
    assert est == pytest.approx(np.linalg.norm(mu_u - mu_v), rel=1e-9)


def test_mc_w1_converges_to_the_1d_closed_form():
    exact = float(w1_gaussian_1d(0.3, 1.0, -0.4, 2.0))
    errors = {}
    for n in (50, 800):
        errs = [
            abs(w1_diag_gaussian_mc([0.3], [1.0], [-0.4], [2.0], n, rng=r, coupling="independent") - exact)
            for r in range(8)
        ]
        errors[n] = np.mean(errs)
    # error ~ n^-1/2: a 16-fold increase of n should cut it about 4-fold; demand at least 2-fold
    assert errors[800] < 0.5 * errors[50]
    common = w1_diag_gaussian_mc([0.3], [1.0], [-0.4], [2.0], 2000, rng=0)
    assert common == pytest.approx(exact, rel=0.05)


def test_mc_w1_spread_shrinks_with_samples_in_several_dimensions():
    mu_u, s_u, mu_v, s_v = _pair(4, 7)
    spread = {n: np.std([w1_diag_gaussian_mc(mu_u, s_u, mu_v, s_v, n, rng=r) for r in range(8)]) for n in (50, 800)}
    assert spread[800] < 0.5 * spread[50]


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 8), data=st.data())
def test_bounds_are_ordered_and_w2_is_a_metric(d, data):
    mus = [data.draw(arrays(np.float64, d, elements=finite)) for _ in range(3)]
    sig = [data.draw(arrays(np.float64, d, elements=positive)) for _ in range(3)]
    lo, up = w1_bounds(mus[0], sig[0], mus[1], sig[1])
    proj, up2 = w1_bounds(mus[0], sig[0], mus[1], sig[1], lower="projection")
    assert lo <= proj * (1 + 1e-12) + 1e-12
    assert proj <= up * (1 + 1e-12)
    assert up == up2
    w = lambda i, j: w2_diag_gaussian(mus[i], sig[i], mus[j], sig[j])  # noqa: E731
    assert w(0, 2) <= w(0, 1) + w(1, 2) + 1e-9


def test_projection_lower_bound_sees_pure_scale_differences():
    mu = np.zeros(3)
    lo, up = w1_bounds(mu, np.ones(3), mu, np.array([1.0, 1.0, 3.0]))
    proj, _ = w1_bounds(mu, np.ones(3), mu, np.array([1.0, 1.0, 3.0]), lower="projection")
    assert lo == 0.0
    assert proj == pytest.approx(2.0 * np.sqrt(2 / np.pi))  # the third axis alone: E|2 Z|
    assert up == pytest.approx(2.0)


def test_sliced_w1_pot_agrees_with_exact_projections_and_is_below_w2():
    mu_u, s_u, mu_v, s_v = _pair(6, 8)
    rng = np.random.default_rng(9)
    proj = rng.normal(size=(6, 64))
    proj /= np.linalg.norm(proj, axis=0)
    exact = sliced_w1_diag_gaussian(mu_u, s_u, mu_v, s_v, projections=proj, n_samples=None)
    pot = sliced_w1_diag_gaussian(mu_u, s_u, mu_v, s_v, projections=proj, n_samples=20_000, rng=1)
    assert pot == pytest.approx(exact, rel=0.03)
    assert exact <= w2_diag_gaussian(mu_u, s_u, mu_v, s_v)
    # in one dimension the only direction is +-1 and sliced W1 is W1
    one = sliced_w1_diag_gaussian([0.5], [1.0], [0.0], [2.0], projections=np.ones((1, 1)), n_samples=None)
    assert one == pytest.approx(float(w1_gaussian_1d(0.5, 1.0, 0.0, 2.0)))


# --- all pairs ----------------------------------------------------------------------------------------------


def _posteriors(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.uniform(0.1, 1.5, (n, d))


def test_chunked_pairs_match_direct_broadcasting():
    mu, sigma = _posteriors(37, 5, 10)
    lower = np.zeros((37, 37))
    upper = np.zeros((37, 37))
    for ch in iter_pairwise_w1_bounds(mu, sigma, chunk_size=8):
        lower[ch.start : ch.stop] = ch.lower
        upper[ch.start : ch.stop] = ch.upper
    np.testing.assert_allclose(lower, mean_distance(mu[:, None], mu[None]), atol=1e-10)
    np.testing.assert_allclose(upper, w2_diag_gaussian(mu[:, None], sigma[:, None], mu[None], sigma[None]), atol=1e-10)
    assert (np.diag(upper) == 0).all() and (lower <= upper).all()
    dense_lo, dense_up = pairwise_w1_bounds_dense(torch.tensor(mu), torch.tensor(sigma), chunk_size=5)
    assert dense_up.dtype == np.float32
    np.testing.assert_allclose(dense_up, upper, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dense_lo, lower, rtol=1e-6, atol=1e-6)


def test_cross_set_chunks_have_the_other_set_as_columns():
    mu, sigma = _posteriors(9, 4, 11)
    mu_o, sigma_o = _posteriors(6, 4, 12)
    chunks = list(iter_pairwise_w1_bounds(mu, sigma, mu_other=mu_o, sigma_other=sigma_o, chunk_size=4))
    upper = np.concatenate([c.upper for c in chunks])
    assert upper.shape == (9, 6)
    np.testing.assert_allclose(upper, w2_diag_gaussian(mu[:, None], sigma[:, None], mu_o[None], sigma_o[None]))


def test_summary_exact_means_and_quantiles_on_small_sets():
    mu, sigma = _posteriors(40, 6, 13)
    full_up = w2_diag_gaussian(mu[:, None], sigma[:, None], mu[None], sigma[None])
    full_lo = mean_distance(mu[:, None], mu[None])
    iu = np.triu_indices(40, 1)
    s = pairwise_w1_bounds(mu, sigma, chunk_size=7, quantiles=(0.1, 0.5, 0.9))
    assert s.quantiles_exact and s.n_pairs == 780
    assert s.mean_upper == pytest.approx(full_up[iu].mean(), rel=1e-12)
    assert s.mean_lower == pytest.approx(full_lo[iu].mean(), rel=1e-12)
    assert s.min_lower == pytest.approx(full_lo[iu].min()) and s.max_upper == pytest.approx(full_up[iu].max())
    np.testing.assert_allclose(s.quantiles_upper, np.quantile(full_up[iu], [0.1, 0.5, 0.9]), rtol=1e-10)
    np.testing.assert_allclose(s.quantiles_lower, np.quantile(full_lo[iu], [0.1, 0.5, 0.9]), rtol=1e-10)
    np.testing.assert_allclose(s.row_mean_upper, full_up.sum(1) / 39, rtol=1e-10)


def test_summary_sampled_quantiles_are_close_to_exact_ones():
    mu, sigma = _posteriors(300, 4, 14)
    exact = pairwise_w1_bounds(mu, sigma, quantiles=(0.05, 0.5, 0.95))
    sampled = pairwise_w1_bounds(mu, sigma, quantiles=(0.05, 0.5, 0.95), n_quantile_pairs=20_000, rng=0)
    assert exact.quantiles_exact and not sampled.quantiles_exact
    assert sampled.mean_upper == pytest.approx(exact.mean_upper, rel=1e-12)  # means stay exact
    iu = np.triu_indices(300, 1)
    all_up = w2_diag_gaussian(mu[iu[0]], sigma[iu[0]], mu[iu[1]], sigma[iu[1]])
    # rank error of a 20,000-pair sample: sd sqrt(q (1 - q) / 20,000) <= 0.0036; allow 4 sd
    ranks = np.searchsorted(np.sort(all_up), sampled.quantiles_upper) / all_up.size
    np.testing.assert_allclose(ranks, [0.05, 0.5, 0.95], atol=0.015)


def test_pairwise_rejects_bad_input():
    mu, sigma = _posteriors(5, 3, 15)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_w1_bounds(mu, sigma[:, :2])
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_w1_bounds(mu[:1], sigma[:1])
    with pytest.raises(ValueError, match="max_bytes"):
        pairwise_w1_bounds_dense(mu, sigma, max_bytes=10)
    with pytest.raises(ValueError, match=">= 0"):
        list(iter_pairwise_w1_bounds(mu, -sigma))
