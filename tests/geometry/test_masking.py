"""Tests of geometry.masking: mask operators, pair distances, the exact law of D' and Monte Carlo checks."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geometry.masking import (
    contraction_probability,
    expansion_probability,
    hoeffding_contraction_bound,
    hoeffding_expansion_bound,
    mask_csr,
    mask_input,
    masked_distance_cdf,
    masked_distance_moments,
    masked_distance_pmf,
    monte_carlo_probabilities,
    pair_overlaps,
    relative_threshold,
    sample_masked_distances,
    validate_rho,
    wilson_interval,
)

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
rhos = st.floats(min_value=0.02, max_value=1.0, allow_nan=False)


def pair_matrix(d: int, c: int, split: int | None = None) -> sp.csr_matrix:
    """Two rows with |S_u Δ S_v| = d and |S_u ∩ S_v| = c (u owns `split` of the d differing items)."""
    a = d // 2 if split is None else split
    shared = list(range(c))
    only_u = list(range(c, c + a))
    only_v = list(range(c + a, c + d))
    rows = [0] * (c + a) + [1] * (c + d - a)
    cols = shared + only_u + shared + only_v
    return sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(2, max(c + d, 1)), dtype=np.float32
    )


def brute_force_pmf(d: int, c: int, split: int, rho: float) -> np.ndarray:
    """Enumerate every pair of masks over the two actual rows and add up the probability of each D'."""
    X = pair_matrix(d, c, split).toarray().astype(bool)
    su, sv = np.flatnonzero(X[0]), np.flatnonzero(X[1])
    pmf = np.zeros(d + c + 1)
    for bu in itertools.product((0, 1), repeat=su.size):
        for bv in itertools.product((0, 1), repeat=sv.size):
            xu = np.zeros(X.shape[1], dtype=int)
            xv = np.zeros(X.shape[1], dtype=int)
            xu[su] = bu
            xv[sv] = bv
            kept = sum(bu) + sum(bv)
            weight = rho**kept * (1 - rho) ** (su.size + sv.size - kept)
            pmf[np.abs(xu - xv).sum()] += weight
    return pmf


def exact_tail_fraction(d: int, c: int, rho: Fraction, t: int) -> Fraction:
    """Pr[D' >= t] in exact rational arithmetic."""
    q = 2 * rho * (1 - rho)
    pa = [math.comb(d, i) * rho**i * (1 - rho) ** (d - i) for i in range(d + 1)]
    pb = [math.comb(c, j) * q**j * (1 - q) ** (c - j) for j in range(c + 1)]
    return sum(pa[i] * pb[j] for i in range(d + 1) for j in range(c + 1) if i + j >= t)


# ---------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), "a", None])
def test_validate_rho_rejects_values_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="rho"):
        validate_rho(bad)


def test_validate_rho_accepts_one_and_small_values():
    assert validate_rho(1) == 1.0
    assert validate_rho(1e-6) == 1e-6


@pytest.mark.parametrize(
    ("d", "c", "rho", "delta", "match"),
    [
        (-1, 0, 0.5, 1, "d must be non-negative"),
        (1.5, 0, 0.5, 1, "integer"),
        (3, -2, 0.5, 1, "c must be non-negative"),
        (3, 2, 0.0, 1, "rho"),
        (3, 2, np.array([0.5, 1.2]), 1, "rho"),
        (3, 2, 0.5, float("nan"), "delta"),
        (np.ones(3, int), 2, 0.5, np.ones(2), "broadcast"),
    ],
)
def test_law_rejects_bad_arguments(d, c, rho, delta, match):
    with pytest.raises(ValueError, match=match):
        contraction_probability(d, c, rho, delta)


# ---------------------------------------------------------------------------------------------------------
# mask operators
# ---------------------------------------------------------------------------------------------------------


def test_mask_input_dropout_normalises_then_scales_kept_entries():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 300, generator=g) < 0.3).float()
    out = mask_input(x, 0.4, mode="dropout", generator=g)
    xn = x / x.norm(dim=1, keepdim=True)
    kept = out != 0
    torch.testing.assert_close(out[kept], xn[kept] / 0.4)
    assert not bool((kept & (x == 0)).any())
    rate = kept.sum().item() / (x != 0).sum().item()
    n = (x != 0).sum().item()
    assert abs(rate - 0.4) < 5 * math.sqrt(0.4 * 0.6 / n)


def test_mask_input_empty_row_stays_zero_without_nan():
    x = torch.zeros(3, 10)
    x[1, :4] = 1.0
    for mode in ("dropout", "bernoulli"):
        out = mask_input(x, 0.5, mode=mode, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(out).all()
        assert out[0].abs().sum() == 0 and out[2].abs().sum() == 0


def test_mask_input_bernoulli_keeps_values_unscaled():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(32, 100, generator=g) * (torch.rand(32, 100, generator=g) < 0.5)
    out = mask_input(x, 0.3, mode="bernoulli", generator=g)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept])
    assert kept.sum() < (x != 0).sum()


def test_mask_input_rho_one_and_eval_apply_no_mask():
    x = (torch.rand(8, 20, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    x[0] = 0.0
    normalised = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(mask_input(x, 1.0), normalised)
    torch.testing.assert_close(mask_input(x, 0.2, training=False), normalised)
    assert mask_input(x, 1.0, mode="bernoulli") is x
    assert mask_input(x, 0.2, mode="bernoulli", training=False) is x


def test_mask_input_is_reproducible_with_a_seeded_generator():
    x = torch.ones(16, 50)
    a = mask_input(x, 0.5, generator=torch.Generator().manual_seed(7))
    b = mask_input(x, 0.5, generator=torch.Generator().manual_seed(7))
    c = mask_input(x, 0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mask_input_rejects_bad_mode_shape_and_rho():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="mode"):
        mask_input(x, 0.5, mode="gaussian")
    with pytest.raises(ValueError, match="2-D"):
        mask_input(torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="rho"):
        mask_input(x, 0.0)


def random_binary_csr(n: int, m: int, density: float, seed: int) -> sp.csr_matrix:
    X = sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data[:] = 1.0
    X.indices = X.indices.astype(np.int32)
    X.indptr = X.indptr.astype(np.int32)
    return X


def test_mask_csr_keeps_a_subset_at_rate_rho():
    X = random_binary_csr(200, 300, 0.1, 0)
    M = mask_csr(X, 0.3, rng=0)
    assert M.shape == X.shape and M.indices.dtype == np.int32
    assert (M - M.multiply(X)).nnz == 0  # every kept entry was in X
    n = X.nnz
    assert abs(M.nnz / n - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    row_sizes = np.diff(M.indptr)
    assert np.array_equal(row_sizes, np.asarray((M != 0).sum(axis=1)).ravel())


def test_mask_csr_shared_mask_is_the_same_for_every_row():
    X = sp.csr_matrix(np.ones((50, 40), dtype=np.float32))
    shared = mask_csr(X, 0.5, rng=1, shared=True).toarray()
    assert (shared == shared[0]).all()
    independent = mask_csr(X, 0.5, rng=1, shared=False).toarray()
    assert not (independent == independent[0]).all()


def test_mask_csr_rho_one_copies_and_seed_reproduces():
    X = random_binary_csr(30, 20, 0.3, 2)
    same = mask_csr(X, 1.0)
    assert same is not X and (same != X).nnz == 0
    assert (mask_csr(X, 0.5, rng=4) != mask_csr(X, 0.5, rng=4)).nnz == 0
    with pytest.raises(ValueError, match="sparse"):
        mask_csr(X.toarray(), 0.5)


# ---------------------------------------------------------------------------------------------------------
# pair distances
# ---------------------------------------------------------------------------------------------------------


def test_pair_overlaps_match_dense_computation():
    X = random_binary_csr(120, 90, 0.15, 5)
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 120, 3000), rng.integers(0, 120, 3000)
    po = pair_overlaps(X, u, v, chunk_size=700)
    D = X.toarray()
    assert np.array_equal(po.c, (D[u] * D[v]).sum(axis=1).astype(int))
    assert np.array_equal(po.d, np.abs(D[u] - D[v]).sum(axis=1).astype(int))
    same = pair_overlaps(X, np.arange(5), np.arange(5))
    assert np.array_equal(same.d, np.zeros(5)) and np.array_equal(same.c, np.diff(X.indptr)[:5])


def test_pair_overlaps_read_stored_nonzeros_as_positives():
    X = sp.csr_matrix((np.array([3.0, 0.0, 2.5, 1.0]), np.array([0, 1, 1, 2]), np.array([0, 2, 4])), shape=(2, 3))
    po = pair_overlaps(X, [0], [1])  # row 0 = {0} (explicit zero ignored), row 1 = {1, 2}
    assert po.c.tolist() == [0] and po.d.tolist() == [3]
    with pytest.raises(ValueError, match="same length"):
        pair_overlaps(X, [0, 1], [1])
    with pytest.raises(ValueError, match="outside"):
        pair_overlaps(X, [0], [2])


# ---------------------------------------------------------------------------------------------------------
# exact law
# ---------------------------------------------------------------------------------------------------------


@SETTINGS
@given(d=st.integers(0, 6), c=st.integers(0, 3), rho=rhos, data=st.data())
def test_pmf_matches_enumeration_of_all_masks(d, c, rho, data):
    split = data.draw(st.integers(0, d))
    np.testing.assert_allclose(masked_distance_pmf(d, c, rho), brute_force_pmf(d, c, split, rho), atol=1e-12)


@SETTINGS
@given(d=st.integers(0, 400), c=st.integers(0, 200), rho=rhos)
def test_pmf_is_normalised_with_closed_form_moments(d, c, rho):
    pmf = masked_distance_pmf(d, c, rho)
    k = np.arange(pmf.size)
    mean, var = masked_distance_moments(d, c, rho)
    assert pmf.shape == (d + c + 1,) and (pmf >= 0).all()
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert (k * pmf).sum() == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert ((k - mean) ** 2 * pmf).sum() == pytest.approx(var, rel=1e-7, abs=1e-9)


def test_fft_convolution_path_agrees_with_direct_convolution():
    d, c, rho = 2000, 600, 0.3
    pmf = masked_distance_pmf(d, c, rho)  # (d+1)(c+1) above the direct-convolution limit
    from scipy.stats import binom

    direct = np.convolve(binom.pmf(np.arange(d + 1), d, rho), binom.pmf(np.arange(c + 1), c, 2 * rho * 0.7))
    np.testing.assert_allclose(pmf, direct, atol=1e-13)


@pytest.mark.parametrize("rho", [0.5, 0.25, 0.75, 0.125])
@pytest.mark.parametrize(("d", "c"), [(10, 0), (10, 3), (10, 12), (4, 30), (1, 1), (7, 7)])
def test_mean_exceeds_clean_distance_exactly_when_overlap_ratio_exceeds_half_inverse_rho(d, c, rho):
    mean, _ = masked_distance_moments(d, c, rho)
    if 2 * rho * c == d:
        assert mean == pytest.approx(d)
    else:
        assert (mean > d) == (c / d > 1 / (2 * rho))


@SETTINGS
@given(d=st.integers(0, 60), c=st.integers(0, 60), rho=rhos, t=st.integers(-3, 130))
def test_contraction_and_expansion_split_the_integers(d, c, rho, t):
    total = contraction_probability(d, c, rho, t) + expansion_probability(d, c, rho, t + 1)
    assert total == pytest.approx(1.0, abs=1e-12)
    cdf = masked_distance_cdf(d, c, rho)
    expected = 0.0 if t < 0 else cdf[min(t, d + c)]
    assert contraction_probability(d, c, rho, t) == pytest.approx(expected, abs=1e-12)


def test_real_thresholds_use_floor_for_contraction_and_ceil_for_expansion():
    d, c, rho = 9, 4, 0.6
    assert contraction_probability(d, c, rho, 3.7) == contraction_probability(d, c, rho, 3)
    assert expansion_probability(d, c, rho, 3.2) == expansion_probability(d, c, rho, 4)
    assert contraction_probability(d, c, rho, np.inf) == 1.0
    assert contraction_probability(d, c, rho, -np.inf) == 0.0
    assert expansion_probability(d, c, rho, -np.inf) == 1.0
    assert expansion_probability(d, c, rho, np.inf) == 0.0


def test_vectorised_probabilities_equal_one_pair_at_a_time():
    rng = np.random.default_rng(11)
    n = 400
    d = rng.integers(0, 25, n)
    c = rng.integers(0, 12, n)
    c[::5] = 0
    d[::7] = 0
    d[1::3], c[1::3] = 8, 3  # many identical pairs exercise the grouping
    rho = rng.choice([0.3, 0.5, 1.0], n)
    delta = rng.uniform(-2, 40, n)
    le = contraction_probability(d, c, rho, delta)
    ge = expansion_probability(d, c, rho, delta)
    for i in range(n):
        cdf = masked_distance_cdf(int(d[i]), int(c[i]), float(rho[i]))
        lo, hi = math.floor(delta[i]), math.ceil(delta[i])
        want_le = 0.0 if lo < 0 else cdf[min(lo, d[i] + c[i])]
        want_ge = 1.0 if hi <= 0 else (0.0 if hi > d[i] + c[i] else 1.0 - cdf[hi - 1])
        assert le[i] == pytest.approx(want_le, abs=1e-12)
        assert ge[i] == pytest.approx(want_ge, abs=1e-12)


def test_grouped_evaluation_of_many_repeated_queries_matches_per_law_cdfs():
    rng = np.random.default_rng(12)
    n = 30_000  # above the size at which identical (d, c, rho, delta) queries are grouped
    d, c = rng.integers(0, 30, n), rng.integers(0, 6, n)
    rho = rng.choice([0.3, 0.7, 1.0], n)
    delta = rng.integers(-1, 40, n)
    le = contraction_probability(d, c, rho, delta)
    ge = expansion_probability(d, c, rho, delta)
    want_le, want_ge = np.empty(n), np.empty(n)
    for key in set(zip(d.tolist(), c.tolist(), rho.tolist(), strict=True)):
        rows = (d == key[0]) & (c == key[1]) & (rho == key[2])
        # padded[t + 1] = Pr[D' <= t] for t = -1..d+c+1
        padded = np.concatenate(([0.0], masked_distance_cdf(*key), [1.0]))
        t = np.minimum(delta[rows], key[0] + key[1] + 1)
        want_le[rows] = padded[t + 1]
        want_ge[rows] = 1.0 - padded[np.maximum(t, 0)]
    np.testing.assert_allclose(le, want_le, atol=1e-12)
    np.testing.assert_allclose(ge, want_ge, atol=1e-12)


def test_probabilities_broadcast_and_return_scalars_for_scalars():
    out = contraction_probability(np.arange(4)[:, None], 2, 0.5, np.array([0.0, 1.0, 5.0]))
    assert out.shape == (4, 3)
    assert np.ndim(contraction_probability(3, 1, 0.5, 2)) == 0
    # rho = 1: D' = d surely
    assert contraction_probability(5, 3, 1.0, 4.9) == 0.0 and contraction_probability(5, 3, 1.0, 5) == 1.0


@pytest.mark.parametrize(("d", "c", "t"), [(60, 20, 50), (70, 0, 40), (0, 40, 30), (30, 25, 1)])
def test_small_upper_tails_keep_relative_accuracy(d, c, t):
    rho = Fraction(1, 10)
    exact = float(exact_tail_fraction(d, c, rho, t))
    got = expansion_probability(d, c, 0.1, t)
    assert got == pytest.approx(exact, rel=1e-9)
    lower = float(1 - exact_tail_fraction(d, c, rho, t))
    assert contraction_probability(d, c, 0.1, t - 1) == pytest.approx(lower, rel=1e-9)


def test_relative_threshold_scales_the_clean_distance():
    d = np.array([0, 3, 10])
    np.testing.assert_array_equal(relative_threshold(d, 0.5), [0.0, 1.5, 5.0])
    assert contraction_probability(10, 0, 0.5, relative_threshold(10, 1.0)) == 1.0  # no overlap: D' <= d
    with pytest.raises(ValueError, match="ratio"):
        relative_threshold(d, -1.0)


# ---------------------------------------------------------------------------------------------------------
# Hoeffding bounds
# ---------------------------------------------------------------------------------------------------------


@SETTINGS
@given(d=st.integers(0, 200), c=st.integers(0, 200), rho=rhos, frac=st.floats(-0.2, 1.2))
def test_hoeffding_bounds_never_exceed_exact_probabilities(d, c, rho, frac):
    delta = frac * (d + c)
    for exact_fn, bound_fn in (
        (contraction_probability, hoeffding_contraction_bound),
        (expansion_probability, hoeffding_expansion_bound),
    ):
        exact = exact_fn(d, c, rho, delta)
        tight = bound_fn(d, c, rho, delta)
        plain = bound_fn(d, c, rho, delta, integer=False)
        assert 0.0 <= plain <= tight + 1e-15
        assert tight <= exact + 1e-12


def test_hoeffding_bounds_are_vacuous_on_the_wrong_side_of_the_mean():
    d, c, rho = 40, 10, 0.5
    mean, _ = masked_distance_moments(d, c, rho)  # 25
    assert hoeffding_contraction_bound(d, c, rho, mean - 5, integer=False) == 0.0
    assert hoeffding_expansion_bound(d, c, rho, mean + 5, integer=False) == 0.0
    gap = 10.0
    want = 1 - math.exp(-2 * gap**2 / (d + c))
    assert hoeffding_contraction_bound(d, c, rho, mean + gap, integer=False) == pytest.approx(want)
    assert hoeffding_expansion_bound(d, c, rho, mean - gap, integer=False) == pytest.approx(want)
    # d = c = 0: D' = 0 surely
    assert hoeffding_contraction_bound(0, 0, 0.5, 0) == 1.0
    assert hoeffding_expansion_bound(0, 0, 0.5, 1) == 0.0


# ---------------------------------------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    d=st.integers(0, 30),
    c=st.integers(0, 30),
    rho=st.floats(0.05, 1.0),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_exact_law_lies_in_the_monte_carlo_interval(d, c, rho, frac, seed):
    X = pair_matrix(d, c)
    delta = frac * (d + c)
    mc = monte_carlo_probabilities(X, [0], [1], rho, delta, n_draws=3000, rng=seed, confidence=0.9999)
    exact_le = contraction_probability(d, c, rho, delta)
    exact_ge = expansion_probability(d, c, rho, delta)
    assert mc.contraction_low[0] <= exact_le <= mc.contraction_high[0]
    assert mc.expansion_low[0] <= exact_ge <= mc.expansion_high[0]
    mean, _ = masked_distance_moments(d, c, rho)
    assert abs(mc.mean[0] - mean) <= 4.5 * mc.mean_stderr[0] + 1e-12


@settings(max_examples=15, deadline=None, derandomize=True)
@given(d=st.integers(1, 30), c=st.integers(1, 30), rho=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_shared_mask_only_shrinks_distances_and_follows_binomial_d_rho(d, c, rho, seed):
    X = pair_matrix(d, c)
    draws = sample_masked_distances(X, [0], [1], rho, n_draws=2000, rng=seed, shared=True)
    assert draws.max() <= d
    delta = rho * d
    mc = monte_carlo_probabilities(X, [0], [1], rho, delta, 3000, rng=seed, shared=True, confidence=0.9999)
    exact = contraction_probability(d, 0, rho, delta)  # Bin(d, rho): the overlap never counts
    assert mc.contraction_low[0] <= exact <= mc.contraction_high[0]


def test_monte_carlo_on_many_real_pairs_covers_the_exact_law():
    X = random_binary_csr(300, 200, 0.08, 9)
    rng = np.random.default_rng(3)
    u = rng.integers(0, 300, 400)
    v = (u + rng.integers(1, 300, 400)) % 300
    # include close pairs (large overlap), where masking expands distances
    u = np.concatenate((u, np.arange(20)))
    v = np.concatenate((v, np.arange(20)))
    X = sp.vstack((X, X[:20])).tocsr()
    v[-20:] = np.arange(300, 320)
    X = mask_csr(X, 0.9, rng=5)  # near-duplicates, not identical rows
    po = pair_overlaps(X, u, v)
    delta = po.d.astype(float)
    mc = monte_carlo_probabilities(X, u, v, 0.5, delta, n_draws=2000, rng=17, confidence=0.999)
    exact = contraction_probability(po.d, po.c, 0.5, delta)
    covered = (mc.contraction_low <= exact) & (exact <= mc.contraction_high)
    assert covered.mean() >= 0.99
    exact_ge = expansion_probability(po.d, po.c, 0.5, delta)
    covered_ge = (mc.expansion_low <= exact_ge) & (exact_ge <= mc.expansion_high)
    assert covered_ge.mean() >= 0.99


def test_sample_masked_distances_shape_clean_limit_and_seed():
    X = random_binary_csr(40, 60, 0.2, 4)
    u, v = np.arange(20), np.arange(20, 40)
    po = pair_overlaps(X, u, v)
    clean = sample_masked_distances(X, u, v, 1.0, n_draws=3, rng=0)
    assert clean.shape == (3, 20) and (clean == po.d).all()
    a = sample_masked_distances(X, u, v, 0.5, n_draws=5, rng=1)
    b = sample_masked_distances(X, u, v, 0.5, n_draws=5, rng=1)
    assert np.array_equal(a, b) and (a <= po.d + 2 * po.c).all()
    with pytest.raises(ValueError, match="n_draws"):
        sample_masked_distances(X, u, v, 0.5, n_draws=0)


def test_a_user_in_several_pairs_uses_one_mask_per_draw():
    X = pair_matrix(6, 4)
    draws = sample_masked_distances(X, [0, 0], [1, 1], 0.5, n_draws=200, rng=2)
    assert np.array_equal(draws[:, 0], draws[:, 1])


def test_wilson_interval_contains_the_estimate_and_narrows_with_n():
    lo, hi = wilson_interval(np.array([0, 5, 50, 100]), 100, 0.95)
    p = np.array([0, 5, 50, 100]) / 100
    assert ((lo <= p) & (p <= hi)).all() and lo[0] == 0.0 and hi[-1] == 1.0
    assert hi[0] > 0.0 and lo[-1] < 1.0
    lo2, hi2 = wilson_interval(500, 1000, 0.95)
    assert hi2 - lo2 < hi[2] - lo[2]
    # textbook value: 50 / 100 at 95% gives (0.4038, 0.5962)
    assert hi[2] - 0.5 == pytest.approx(0.0962, abs=1e-4)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, 1.0)


# ---------------------------------------------------------------------------------------------------------
# sparse twin of mask_input (used by the training batches)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dropout", "bernoulli"])
@pytest.mark.parametrize("rho", [0.4, 1.0])
def test_mask_sparse_values_agrees_with_the_dense_mask_on_the_same_keep_pattern(mode, rho):
    from geometry.masking import mask_sparse_values

    X = random_binary_csr(40, 30, 0.2, 13)
    X = sp.vstack((X, sp.csr_matrix((1, 30), dtype=np.float32))).tocsr()  # an empty row
    indptr = torch.from_numpy(X.indptr.astype(np.int64))
    keep, values = mask_sparse_values(indptr, rho, mode=mode, generator=torch.Generator().manual_seed(0))
    assert keep.shape == values.shape == (X.nnz,) and torch.isfinite(values).all()
    masked = sp.csr_matrix((keep.numpy().astype(np.float32), X.indices, X.indptr), shape=X.shape).toarray()
    dense = torch.from_numpy(masked)
    if mode == "dropout":  # normalise the full row, then scale the kept entries by 1 / rho
        expected = torch.nn.functional.normalize(torch.from_numpy(X.toarray()), dim=1) * dense / rho
    else:  # x ⊙ b, then the encoder's L2 normalisation
        expected = torch.nn.functional.normalize(dense, dim=1)
    got = torch.from_numpy(
        sp.csr_matrix((values.numpy(), X.indices, X.indptr), shape=X.shape).toarray().astype(np.float32)
    )
    torch.testing.assert_close(got, expected.float())
    if rho == 1.0:
        assert bool(keep.all())
