"""Calibration of the sharing radius (issue 10, finding 2): no radius in noise, a planted radius found, eta checked.

The data sets mimic the job's design (:mod:`analyses.sharing_radius`): anchors u with two partners each, so the
pairs of one anchor share its gradient norm (an anchor-level gain effect) and its position in latent space (an
anchor-level W1 scale). The intervals must resample anchors, not pairs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geometry.sharing import (
    choose_eta,
    estimate_sharing_radius,
    first_order_check,
    sharing_effects,
)


def clustered_pairs(rng: np.random.Generator, n_anchors: int, a: float, b: float) -> tuple[np.ndarray, ...]:
    """(w1, gain, anchor) for anchors with a latent-near and a random partner; gain = a - b W1 + anchor + noise."""
    scale = rng.gamma(4.0, 0.25, n_anchors)  # anchor-level W1 scale (dense or sparse region)
    w1 = np.stack([scale * rng.uniform(0.1, 1.0, n_anchors), scale * rng.uniform(1.0, 3.0, n_anchors)], 1).ravel()
    anchor = np.repeat(np.arange(n_anchors), 2)
    effect = rng.normal(0.0, 0.5, n_anchors)[anchor]  # ||g_u|| differs between anchors
    gain = a - b * w1 + effect + rng.normal(0.0, 0.3, w1.size)
    return w1, gain, anchor


def test_false_radius_rate_at_most_5_percent_on_null_data():
    """Gain independent of W1 (gain = 0.5 + anchor effect + noise): a radius in at most 5% of 500 data sets."""
    found = naive = 0
    n_sets = 500
    for seed in range(n_sets):
        rng = np.random.default_rng(seed)
        w1, gain, anchor = clustered_pairs(rng, 100, a=0.5, b=0.0)
        est = estimate_sharing_radius(w1, gain, clusters=anchor, n_boot=400, n_bins=6, rng=seed)
        found += est.radius is not None
        naive += est.slope < 0 < est.intercept  # the rule before issue 10: about half of the null data sets
        if est.radius is None:
            assert est.ci is None and est.reason and est.binned.crossing is None and est.binned.reason
    assert found / n_sets <= 0.05, f"radius found in {found} of {n_sets} null data sets"
    assert naive / n_sets > 0.3  # the null is not trivially radius-free: a slope < 0 < intercept rule fires


def test_planted_radius_found_and_covered():
    """gain = a - b W1 + anchor effect + noise with r = a / b = 2: found in >= 90% of 200 replicates, CI covers r."""
    a, b = 1.0, 0.5
    planted = a / b
    found = covered = 0
    n_sets = 200
    for seed in range(n_sets):
        rng = np.random.default_rng(1000 + seed)
        w1, gain, anchor = clustered_pairs(rng, 100, a=a, b=b)
        est = estimate_sharing_radius(w1, gain, clusters=anchor, n_boot=400, n_bins=6, rng=seed)
        if est.radius is None:
            continue
        found += 1
        assert est.reason is None and est.slope_ci[1] < 0 < est.intercept_ci[0]
        assert est.n_clusters == 100
        covered += est.ci[0] <= planted <= est.ci[1]
    assert found >= 0.9 * n_sets, f"planted radius found in {found} of {n_sets}"
    assert covered >= 0.88 * found, f"interval covers the planted radius in {covered} of {found}"


def test_binned_crossing_follows_the_rule():
    """The binned crossing is reported only when the line's rule reports a radius."""
    rng = np.random.default_rng(7)
    w1, gain, anchor = clustered_pairs(rng, 100, a=0.5, b=0.0)
    est = estimate_sharing_radius(w1, gain, clusters=anchor, n_boot=300, rng=0)
    assert est.radius is None and est.binned.crossing is None and "interval" in est.binned.reason
    assert "interval" in est.reason and "includes 0" in est.reason


def test_clusters_change_the_interval_not_the_fit():
    rng = np.random.default_rng(3)
    w1, gain, anchor = clustered_pairs(rng, 80, a=1.0, b=0.5)
    by_pair = estimate_sharing_radius(w1, gain, n_boot=300, rng=0)
    by_anchor = estimate_sharing_radius(w1, gain, clusters=anchor, n_boot=300, rng=0)
    assert by_pair.slope == by_anchor.slope and by_pair.intercept == by_anchor.intercept
    assert by_pair.n_clusters == w1.size and by_anchor.n_clusters == 80
    with pytest.raises(ValueError, match="clusters"):
        estimate_sharing_radius(w1, gain, clusters=anchor[:-1])


# --- the first-order regime: L_u(theta) = 0.5 (theta - c_u)^T H (theta - c_u), remainder 0.5 eta^2 g_v^T H g_v ---


class SharedQuadratic:
    """Per-user quadratic losses with one curvature H: the second-order remainder is exact."""

    def __init__(self, n_users: int, seed: int, curvature: float) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.h = curvature * (1.0 + torch.rand(6, generator=gen, dtype=torch.float64))  # diagonal of H
        self.c = torch.randn(n_users, 6, generator=gen, dtype=torch.float64)
        self.theta = (torch.randn(6, generator=gen, dtype=torch.float64) + 2.0).requires_grad_()

    def loss(self, users) -> torch.Tensor:
        d = self.theta - self.c[torch.as_tensor(list(users), dtype=torch.int64)]
        return 0.5 * (d * d * self.h).sum(-1)

    def ratio(self, pairs: np.ndarray, eta: float) -> float:
        """Closed form: median |0.5 eta^2 g_v^T H g_v| / median |eta <g_u, g_v>|."""
        g = ((self.theta.detach() - self.c) * self.h).numpy()
        gu, gv = g[pairs[:, 0]], g[pairs[:, 1]]
        remainder = 0.5 * eta**2 * (gv * gv * self.h.numpy()).sum(1)
        predicted = eta * (gu * gv).sum(1)
        return float(np.median(np.abs(remainder)) / np.median(np.abs(predicted)))


def test_auto_eta_satisfies_the_criterion_and_a_large_eta_is_flagged():
    q = SharedQuadratic(12, seed=0, curvature=300.0)
    rng = np.random.default_rng(0)
    pairs = np.stack([np.repeat(np.arange(6), 2), rng.integers(0, 12, 12)], 1)
    grid = (1e-3, 1e-4, 1e-5, 1e-6)
    exact = {eta: q.ratio(pairs, eta) for eta in grid}
    assert exact[1e-3] > 0.05 > exact[1e-5]  # the grid straddles the criterion
    expected = max(eta for eta in grid if exact[eta] < 0.05)
    choice = choose_eta(q.loss, [q.theta], pairs, grid=grid, tol=0.05)
    assert choice.eta == expected and choice.holds
    assert choice.check.remainder_ratio == pytest.approx(exact[expected], rel=1e-4)
    assert choice.check.remainder_ratio < 0.05
    assert choice.effects.eta == expected and choice.effects.n_pairs == len(pairs)
    assert [c.eta for c in choice.tried] == [eta for eta in grid if eta >= expected]
    # a given eta outside the regime is flagged, with the exact ratio
    big = first_order_check(sharing_effects(q.loss, [q.theta], pairs, 1e-3), tol=0.05)
    assert not big.holds and big.remainder_ratio == pytest.approx(exact[1e-3], rel=1e-4)
    # no eta on the grid in the regime: the smallest is used, and flagged
    none = choose_eta(q.loss, [q.theta], pairs, grid=(1e-2, 1e-3), tol=0.05)
    assert none.eta == 1e-3 and not none.holds and len(none.tried) == 2
