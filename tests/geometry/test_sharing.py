"""Tests of geometry.sharing: closed forms on quadratic losses, exact restoration, a small Multi-VAE, the radius."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from geometry.sharing import (
    RADIUS_RULE,
    estimate_sharing_radius,
    pair_w1_bounds,
    sample_pairs,
    sharing_effects,
    sign_agreement,
)
from geometry.wasserstein import w1_diag_gaussian_mc, w2_diag_gaussian
from models.batches import make_batch
from models.vae import MultiVAE

# --- quadratic losses L_u(theta) = 0.5 ||A_u theta - b_u||^2, theta = (t1 (3,), t2 (2, 2)) --------------------


class Quadratic:
    """Per-user quadratic losses with analytic gradients, steps and remainders; theta split in two tensors."""

    def __init__(self, n_users: int, seed: int, rows: int = 5) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.A = torch.randn(n_users, rows, 7, generator=gen, dtype=torch.float64)
        self.b = torch.randn(n_users, rows, generator=gen, dtype=torch.float64)
        self.t1 = torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_()
        self.t2 = torch.randn(2, 2, generator=gen, dtype=torch.float64).requires_grad_()
        self.calls = 0

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.t1, self.t2]

    def theta(self) -> torch.Tensor:
        return torch.cat([self.t1, self.t2.reshape(-1)])

    def loss(self, users) -> torch.Tensor:
        self.calls += 1
        idx = torch.as_tensor(list(users), dtype=torch.int64)
        r = torch.einsum("upk,k->up", self.A[idx], self.theta()) - self.b[idx]
        return 0.5 * (r**2).sum(-1)

    def grad(self, u: int) -> torch.Tensor:
        th = self.theta().detach()
        return self.A[u].T @ (self.A[u] @ th - self.b[u])

    def exact_change(self, u: int, v: int, eta: float) -> tuple[float, float, float]:
        """(measured, predicted, remainder) in closed form: the loss is exactly quadratic."""
        gu, gv = self.grad(u), self.grad(v)
        predicted = -eta * float(gu @ gv)
        remainder = 0.5 * eta**2 * float((self.A[u] @ gv) @ (self.A[u] @ gv))
        return predicted + remainder, predicted, remainder


def test_quadratic_matches_closed_forms():
    q = Quadratic(n_users=6, seed=0)
    pairs = np.array([[0, 1], [2, 1], [1, 0], [3, 3], [4, 5], [5, 1], [0, 1]])
    eta = 1e-2
    eff = sharing_effects(q.loss, q.params, pairs, eta)
    for k, (u, v) in enumerate(pairs):
        measured, predicted, remainder = q.exact_change(u, v, eta)
        gu, gv = q.grad(u), q.grad(v)
        scale = abs(float(q.loss([u])[0].detach())) + 1.0
        assert eff.measured[k] == pytest.approx(measured, abs=1e-12 * scale)
        assert eff.predicted[k] == pytest.approx(predicted, rel=1e-12)
        assert eff.remainder[k] == pytest.approx(remainder, rel=1e-6, abs=1e-12 * scale)
        assert eff.grad_norm_u[k] == pytest.approx(float(gu.norm()), rel=1e-12)
        assert eff.grad_norm_v[k] == pytest.approx(float(gv.norm()), rel=1e-12)
        assert eff.grad_distance[k] == pytest.approx(float((gu - gv).norm()), rel=1e-12)
        assert eff.cosine[k] == pytest.approx(float(gu @ gv / (gu.norm() * gv.norm())), rel=1e-12)
        assert eff.loss_u[k] == pytest.approx(float(q.loss([u])[0].detach()), rel=1e-14)
    # self pair: first-order gain of u from its own step is ||g_u||
    assert eff.predicted_gain[3] == pytest.approx(eff.grad_norm_u[3], rel=1e-12)
    np.testing.assert_array_equal(eff.u, pairs[:, 0])
    np.testing.assert_array_equal(eff.v, pairs[:, 1])
    np.testing.assert_allclose(eff.gain, -eff.measured / (eta * eff.grad_norm_u))


def test_remainder_is_second_order():
    q = Quadratic(n_users=5, seed=1)
    pairs = sample_pairs(5, 12, rng=3)
    r1 = sharing_effects(q.loss, q.params, pairs, 1e-2).remainder
    r2 = sharing_effects(q.loss, q.params, pairs, 5e-3).remainder
    # exactly quadratic loss: the remainder is 0.5 eta^2 ||A_u g_v||^2 >= 0, so halving eta quarters it
    assert (r1 > 0).all()
    np.testing.assert_allclose(r1 / r2, 4.0, rtol=1e-4)


def test_measured_calls_are_grouped_by_v():
    q = Quadratic(n_users=6, seed=2)
    pairs = np.array([[0, 1], [2, 1], [3, 1], [4, 5], [0, 5], [1, 2]])
    q.calls = 0
    sharing_effects(q.loss, q.params, pairs, 1e-3)
    n_distinct_users, n_distinct_v = len(np.unique(pairs)), len(np.unique(pairs[:, 1]))
    assert q.calls == n_distinct_users + 2 * n_distinct_v


def test_parameters_restored_bit_exactly():
    q = Quadratic(n_users=6, seed=3)
    before = [p.detach().clone() for p in q.params]
    ptrs = [p.data_ptr() for p in q.params]
    # a large step: an inexact "theta + eta g_v" undo would leave rounding residue
    sharing_effects(q.loss, q.params, sample_pairs(6, 20, rng=0), eta=0.37)
    for p, b, ptr in zip(q.params, before, ptrs, strict=True):
        assert torch.equal(p, b)
        assert p.data_ptr() == ptr and p.grad is None and p.requires_grad


def test_parameters_restored_when_loss_fn_raises_mid_step():
    q = Quadratic(n_users=4, seed=4)
    before = [p.detach().clone() for p in q.params]
    state = {"n": 0}

    def flaky(users):
        state["n"] += 1
        if state["n"] == 4 + 2:  # 4 gradient calls, then the first group's baseline, then its stepped call
            raise RuntimeError("boom")
        return q.loss(users)

    with pytest.raises(RuntimeError, match="boom"):
        sharing_effects(flaky, q.params, np.array([[0, 1], [2, 3]]), eta=0.5)
    for p, b in zip(q.params, before, strict=True):
        assert torch.equal(p, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), eta=st.floats(1e-4, 1e-1))
def test_first_order_bound_and_cosine_properties(seed, eta):
    q = Quadratic(n_users=4, seed=seed)
    eff = sharing_effects(q.loss, q.params, sample_pairs(4, 6, rng=seed), eta)
    # Cauchy-Schwarz form of the theorem: <g_u, g_v> / ||g_u|| >= ||g_u|| - ||g_u - g_v||
    assert (eff.predicted_gain >= eff.gain_lower_bound - 1e-9 * (1 + eff.grad_norm_u)).all()
    assert (np.abs(eff.cosine) <= 1 + 1e-12).all()
    np.testing.assert_allclose(eff.predicted, -eta * eff.cosine * eff.grad_norm_u * eff.grad_norm_v, rtol=1e-9)


def test_nondeterministic_loss_is_rejected():
    q = Quadratic(n_users=4, seed=5)
    gen = torch.Generator().manual_seed(0)

    def noisy(users):
        return q.loss(users) + torch.randn(len(users), generator=gen, dtype=torch.float64)

    with pytest.raises(ValueError, match="not deterministic"):
        sharing_effects(noisy, q.params, np.array([[0, 1], [2, 1]]), eta=1e-3)


def test_bad_inputs_raise_one_clear_error():
    q = Quadratic(n_users=4, seed=6)
    good = np.array([[0, 1]])
    with pytest.raises(ValueError, match="eta"):
        sharing_effects(q.loss, q.params, good, eta=0.0)
    with pytest.raises(ValueError, match="eta"):
        sharing_effects(q.loss, q.params, good, eta=float("nan"))
    with pytest.raises(ValueError, match="pairs"):
        sharing_effects(q.loss, q.params, np.array([0, 1]), eta=1e-3)
    with pytest.raises(ValueError, match="pairs"):
        sharing_effects(q.loss, q.params, np.array([[0.0, 1.0]]), eta=1e-3)
    with pytest.raises(ValueError, match="params"):
        sharing_effects(q.loss, [], good, eta=1e-3)
    with pytest.raises(ValueError, match="params"):
        sharing_effects(q.loss, [q.t1.detach()], good, eta=1e-3)
    with pytest.raises(ValueError, match="shape"):
        sharing_effects(lambda users: q.loss(users).sum(), q.params, good, eta=1e-3)
    with pytest.raises(ValueError, match="does not depend"):
        sharing_effects(lambda users: q.loss(users).detach(), q.params, good, eta=1e-3)
    with pytest.raises(ValueError, match="max_gradient_bytes"):
        sharing_effects(q.loss, q.params, good, eta=1e-3, max_gradient_bytes=8)


# --- sign agreement ----------------------------------------------------------------------------------------


def test_sign_agreement_counts():
    res = sign_agreement(np.array([1.0, -2.0, 3.0, 0.0, -1.0, 2.0]), np.array([0.5, -1.0, -3.0, 1.0, 0.0, 4.0]))
    assert (res.n_agree, res.n_disagree, res.n_zero) == (3, 1, 2)
    assert res.fraction == pytest.approx(0.75)
    assert sign_agreement(np.zeros(3), np.ones(3)).fraction is None
    with pytest.raises(ValueError, match="same length"):
        sign_agreement(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        sign_agreement(np.array([np.nan]), np.ones(1))


# --- a tiny Multi-VAE on planted blocks, decoder-only loss with z = mu fixed ----------------------------------

N_BLOCKS, BLOCK = 4, 10


def _planted_blocks(n_users: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """User u consumes 4-7 random items of block u % 4 (items b*10 .. b*10+9)."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    groups = np.arange(n_users) % N_BLOCKS
    for u, g in enumerate(groups):
        items = rng.choice(BLOCK, size=rng.integers(4, 8), replace=False) + g * BLOCK
        rows += [u] * len(items)
        cols += list(items)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, N_BLOCKS * BLOCK))
    return x, groups


def _double_batch(x: sp.csr_matrix, rho: float = 1.0, generator: torch.Generator | None = None):
    # make_batch emits float32 input values; the model runs in float64 so that small steps are resolved
    batch = make_batch(x, rho=rho, generator=generator)
    batch.weights = batch.weights.double()
    return batch


@pytest.fixture(scope="module")
def trained_vae():
    torch.manual_seed(0)
    x, groups = _planted_blocks(80, seed=0)
    model = MultiVAE(n_items=N_BLOCKS * BLOCK, hidden=(16,), latent_dim=4).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    # a few steps only: near convergence the per-user decoder gradients are idiosyncratic (their mean over a
    # block is ~0), so the planted locality of the gains is sharpest early in training
    for _ in range(10):
        batch = _double_batch(x, rho=0.8, generator=gen)
        fwd = model.forward_train(batch, torch.randn(80, 4, generator=gen, dtype=torch.float64))
        loss = (fwd.nll + 0.05 * fwd.kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mu, logvar = model.encode(_double_batch(x))
    return model, x, groups, mu.detach(), logvar.detach()


def _decoder_loss(model: MultiVAE, x: sp.csr_matrix, mu: torch.Tensor):
    def loss_fn(users):
        users = list(users)
        batch = _double_batch(x[users])
        return -batch.target_sum(F.log_softmax(model.decode(mu[users]), dim=-1))

    return loss_fn


def test_multivae_first_order_sign_agreement_and_locality(trained_vae):
    model, x, groups, mu, logvar = trained_vae
    params = list(model.decoder.parameters())
    pairs = sample_pairs(x.shape[0], 150, rng=7)
    before = [p.detach().clone() for p in model.parameters()]
    eff = sharing_effects(_decoder_loss(model, x, mu), params, pairs, eta=1e-4)
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)
    agree = sign_agreement(eff.predicted, eff.measured)
    assert agree.fraction > 0.9
    # first-order accuracy: the remainder is small against the predicted change
    assert np.median(np.abs(eff.remainder) / np.abs(eff.predicted)) < 0.05
    # planted locality: a step on a same-block user helps, one on another block's user mostly hurts
    same = groups[pairs[:, 0]] == groups[pairs[:, 1]]
    assert np.mean(eff.gain[same] > 0) > 0.8
    assert np.mean(eff.gain[same]) > 0 > np.mean(eff.gain[~same])
    lower, upper = pair_w1_bounds(mu, logvar, pairs)
    assert np.mean(lower[same]) < np.mean(lower[~same])
    # the gain falls with latent distance, so a radius is found
    radius = estimate_sharing_radius(upper, eff.gain, n_boot=200)
    assert radius.slope_ci[1] < 0 and radius.radius is not None
    assert radius.ci[0] <= radius.radius <= radius.ci[1]


# --- pair W1 bounds -----------------------------------------------------------------------------------------


def test_pair_w1_bounds_sandwich_mc_and_closed_form():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(6, 3)), rng.normal(scale=0.5, size=(6, 3))
    pairs = np.array([[0, 1], [2, 5], [4, 4], [3, 0]])
    low, up = pair_w1_bounds(torch.as_tensor(mu), torch.as_tensor(logvar), pairs)
    sigma = np.exp(0.5 * logvar)
    np.testing.assert_allclose(low, np.linalg.norm(mu[pairs[:, 0]] - mu[pairs[:, 1]], axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        up, w2_diag_gaussian(mu[pairs[:, 0]], sigma[pairs[:, 0]], mu[pairs[:, 1]], sigma[pairs[:, 1]])
    )
    assert low[2] == 0 and up[2] == 0
    low_p, _ = pair_w1_bounds(mu, logvar, pairs, lower="projection")
    assert (low_p >= low - 1e-12).all() and (low_p <= up + 1e-12).all()
    for k in (0, 1):
        u, v = pairs[k]
        mc = w1_diag_gaussian_mc(mu[u], sigma[u], mu[v], sigma[v], n_samples=300, rng=k)
        assert low_p[k] - 0.05 <= mc <= up[k] + 0.05
    with pytest.raises(ValueError, match="user indices"):
        pair_w1_bounds(mu, logvar, np.array([[0, 6]]))
    with pytest.raises(ValueError, match="same shape"):
        pair_w1_bounds(mu, logvar[:, :2], pairs)


def test_sample_pairs_distinct_and_in_range():
    pairs = sample_pairs(5, 2000, rng=1)
    assert pairs.shape == (2000, 2) and pairs.dtype == np.int64
    assert (pairs[:, 0] != pairs[:, 1]).all() and pairs.min() == 0 and pairs.max() == 4
    # uniform over the 20 ordered pairs
    counts = np.bincount(pairs[:, 0] * 5 + pairs[:, 1], minlength=25)
    assert counts[np.arange(5) * 6].sum() == 0
    assert counts.max() < 2 * counts[counts > 0].min()


# --- the empirical radius -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "noise", "seed"), [(2.0, 0.5, 0.3, 0), (1.0, 4.0, 0.2, 1), (0.5, 0.2, 0.1, 2)])
def test_radius_recovered_on_planted_line(a, b, noise, seed):
    rng = np.random.default_rng(seed)
    planted = a / b
    w1 = rng.uniform(0, 2 * planted, 600)
    gain = a - b * w1 + noise * rng.normal(size=600)
    est = estimate_sharing_radius(w1, gain, n_boot=500, rng=seed)
    assert est.reason is None and est.radius is not None
    assert est.ci[0] <= planted <= est.ci[1]
    assert est.radius == pytest.approx(planted, rel=0.1)
    assert est.ci[1] - est.ci[0] < 0.3 * planted
    assert est.slope_ci[0] <= -b <= est.slope_ci[1]
    assert not est.extrapolated and est.boot_no_crossing == 0.0
    assert est.residual_std == pytest.approx(noise, rel=0.15)
    # the binned mean crosses zero near the planted radius (bins of width ~ 0.2 * planted)
    assert est.binned.crossing == pytest.approx(planted, rel=0.15)
    assert est.binned.counts.sum() == 600 and len(est.binned.counts) == 10


def test_radius_matches_numpy_polyfit():
    rng = np.random.default_rng(3)
    w1 = rng.gamma(2.0, 1.0, 200)
    gain = 1.5 - 0.7 * w1 + rng.normal(size=200)
    est = estimate_sharing_radius(w1, gain, n_boot=10)
    slope, intercept = np.polyfit(w1, gain, 1)
    assert est.slope == pytest.approx(slope, rel=1e-10)
    assert est.intercept == pytest.approx(intercept, rel=1e-10)
    assert est.radius == pytest.approx(-intercept / slope, rel=1e-10)


def test_no_radius_for_a_non_decreasing_relation():
    rng = np.random.default_rng(4)
    w1 = rng.uniform(0, 3, 400)
    est = estimate_sharing_radius(w1, 0.5 + 0.4 * w1 + 0.2 * rng.normal(size=400), n_boot=200)
    assert est.radius is None and est.ci is None and "slope" in est.reason
    assert est.slope > 0 and est.boot_no_crossing == 1.0
    # the binned crossing follows the line's rule
    assert est.binned.crossing is None and est.binned.reason.startswith("not reported") and "slope" in est.binned.reason
    fields = [est.intercept, est.slope, *est.slope_ci, est.residual_std]
    assert all(math.isfinite(f) for f in fields)
    # falling but negative everywhere: no pair gains, so no radius either
    down = estimate_sharing_radius(w1, -0.5 - 0.4 * w1, n_boot=50)
    assert down.radius is None and "intercept" in down.reason
    assert down.binned.crossing is None


def test_unresolved_slope_gives_no_radius():
    """A point slope < 0 < intercept is not a radius: the slope's interval must lie below 0 (issue 10)."""
    naive = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        w1 = rng.uniform(0, 1, 100)
        est = estimate_sharing_radius(w1, 1.0 - 0.01 * w1 + rng.normal(size=100), n_boot=300, rng=seed)
        naive += est.slope < 0 < est.intercept
        assert est.radius is None and est.ci is None
        assert est.slope_ci[0] < 0 < est.slope_ci[1] and "includes 0" in est.reason
        assert est.binned.crossing is None
    assert naive >= 1  # the old rule would have reported a radius here


def test_reported_radius_has_a_finite_interval_around_it():
    rng = np.random.default_rng(11)
    w1 = rng.uniform(0, 3, 300)
    est = estimate_sharing_radius(w1, 1.0 - 0.5 * w1 + 0.5 * rng.normal(size=300), n_boot=400, rng=0)
    assert est.radius is not None and est.slope_ci[1] < 0 < est.intercept_ci[0]
    assert est.ci[0] <= est.radius <= est.ci[1] < math.inf
    assert est.boot_no_crossing <= (1 - est.level) / 2 and est.rule == RADIUS_RULE


def test_bootstrap_equals_fits_on_explicit_resamples():
    """The sufficient-statistics bootstrap gives the least-squares fit of the resampled clusters' pairs."""
    rng = np.random.default_rng(5)
    w1 = rng.gamma(2.0, 1.0, 60)
    gain = 1.0 - 0.3 * w1 + rng.normal(size=60)
    labels = rng.integers(0, 20, 60)
    est = estimate_sharing_radius(w1, gain, clusters=labels, n_boot=50, level=0.5, rng=9)
    codes = np.unique(labels, return_inverse=True)[1]
    draws = np.random.default_rng(9).integers(0, codes.max() + 1, size=(50, codes.max() + 1))
    slopes = []
    for d in draws:
        rows = np.concatenate([np.flatnonzero(codes == c) for c in d])
        slopes.append(np.polyfit(w1[rows], gain[rows], 1)[0])
    expected = np.quantile(slopes, [0.25, 0.75], method="inverted_cdf")
    np.testing.assert_allclose(est.slope_ci, expected, rtol=1e-9)


def test_radius_bad_inputs():
    w1 = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="NaN"):
        estimate_sharing_radius(w1, np.r_[np.nan, np.ones(9)])
    with pytest.raises(ValueError, match=">= 0"):
        estimate_sharing_radius(w1 - 0.5, np.ones(10))
    with pytest.raises(ValueError, match="equal"):
        estimate_sharing_radius(np.ones(10), np.ones(10))
    with pytest.raises(ValueError, match="same length"):
        estimate_sharing_radius(w1, np.ones(9))
    with pytest.raises(ValueError, match="level"):
        estimate_sharing_radius(w1, np.ones(10), level=1.0)
    with pytest.raises(ValueError, match="at least 3"):
        estimate_sharing_radius(w1[:2], np.ones(2))
