"""The package-level entry points promised by the geometry issue, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import geometry


def test_entry_points_exist():
    for name in (
        "w2_diag_gaussian",
        "masked_distance_pmf",
        "contraction_probability",
        "expansion_probability",
        "kl_to_standard_normal",
    ):
        assert callable(getattr(geometry, name)), name


def test_w2_broadcasts_and_matches_formula():
    rng = np.random.default_rng(0)
    mu_u, mu_v = rng.normal(size=(5, 1, 3)), rng.normal(size=(1, 4, 3))
    s_u, s_v = rng.uniform(0.1, 2, size=(5, 1, 3)), rng.uniform(0.1, 2, size=(1, 4, 3))
    got = geometry.w2_diag_gaussian(mu_u, s_u, mu_v, s_v)
    assert got.shape == (5, 4)
    want = np.sqrt(((mu_u - mu_v) ** 2).sum(-1) + ((s_u - s_v) ** 2).sum(-1))
    np.testing.assert_allclose(got, want)
    t = geometry.w2_diag_gaussian(*(torch.from_numpy(a) for a in (mu_u, s_u, mu_v, s_v)))
    assert isinstance(t, torch.Tensor)


def test_masked_distance_law_against_binomial_convolution():
    d, c, rho = 7, 4, 0.3
    pmf = geometry.masked_distance_pmf(d, c, rho)
    ref = np.convolve(
        stats.binom.pmf(np.arange(d + 1), d, rho), stats.binom.pmf(np.arange(c + 1), c, 2 * rho * (1 - rho))
    )
    np.testing.assert_allclose(pmf, ref, atol=1e-12)
    deltas = np.array([0, 3, 5.5, 11])
    np.testing.assert_allclose(
        geometry.contraction_probability(d, c, rho, deltas),
        [ref[: int(np.floor(x)) + 1].sum() for x in deltas],
        atol=1e-12,
    )
    np.testing.assert_allclose(
        geometry.expansion_probability(d, c, rho, deltas), [ref[int(np.ceil(x)) :].sum() for x in deltas], atol=1e-12
    )


def test_kl_to_standard_normal_matches_torch_distributions():
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    want = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(geometry.kl_to_standard_normal(mu, logvar), want)
    assert geometry.kl_to_standard_normal(np.zeros((2, 3)), np.zeros((2, 3))) == pytest.approx(0.0)
