"""Tests of geometry.masking that pin what its mutation run showed untested.

``python -m tests.mutate geometry/masking.py`` left 162 of 495 mutants alive against
``tests/geometry/test_masking.py`` (see ``docs/testing.md``). The tests here pin, each against an
independent reference (closed forms from the docstrings, textbook formulas written out here, scipy, or a
simulation written out here that reads the same numpy / torch random stream):

* argument checks at their boundaries: the offending ``rho`` values quoted in the error, float and string
  counts, 1-D integer row indices (an empty list allowed), ``n >= 1`` trials and ``0 < confidence < 1`` in
  :func:`~geometry.masking.wilson_interval`, ``n_draws >= 1``, ``ratio >= 0``, one pair in
  :func:`~geometry.masking.masked_distance_pmf`, and that a refused Monte Carlo call draws nothing;
* :func:`~geometry.masking._binary_csr`: duplicates summed, explicit zeros dropped, any stored value read
  as a positive, float32 ones out, and no copy when the input is already so;
* the exact law: probabilities of sure events exactly 1, a cdf never above 1, the FFT path normalised, a
  single pmf longer than one batch of the binomial cache, and the grouping of repeated queries exact even
  where its mixed-radix key would overflow int64;
* the Hoeffding bounds and the Wilson interval against the formulas of their docstrings, defaults included;
* the Monte Carlo estimators against a simulation that draws the masks the documented way (one uniform per
  stored entry of the rows the pairs touch, or per touched item for a shared mask; an entry is kept when
  its uniform is ``< rho``, which on numpy's grid of multiples of 2^-53 is probability ``rho`` exactly),
  across chunks of draws, with counts, means, standard errors and intervals recomputed in numpy;
* the mask operators: ``mask_input``'s ``1e-12`` floor of the row norm, ``mask_csr`` and
  ``mask_sparse_values`` keeping exactly the entries whose uniform is below ``rho`` (ties dropped), and
  drawing nothing at ``rho = 1``; single-item rows and a non-empty last row of a sparse batch;
* frozen result dataclasses.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats as stats
import torch

from geometry.masking import (
    PairOverlap,
    _binary_csr,
    _distinct_queries,
    contraction_probability,
    expansion_probability,
    hoeffding_contraction_bound,
    hoeffding_expansion_bound,
    mask_csr,
    mask_input,
    mask_sparse_values,
    masked_distance_cdf,
    masked_distance_moments,
    masked_distance_pmf,
    monte_carlo_probabilities,
    pair_overlaps,
    relative_threshold,
    sample_masked_distances,
    wilson_interval,
)

EPS = np.finfo(np.float64).eps


def dense_csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """A binary float32 CSR matrix whose row ``r`` holds the items ``rows[r]``."""
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for r, items in enumerate(rows):
        dense[r, items] = 1.0
    return sp.csr_matrix(dense)


def simulate_masked_distances(X, u, v, rho, n_draws, seed, shared):
    """Reference sampler: masks drawn from ``default_rng(seed)`` the documented way, distances by sets.

    Per draw, independent masks take one uniform per stored entry of the rows the pairs touch (rows in
    increasing order, items in increasing order within a row); a shared mask takes one uniform per item
    those rows touch (increasing order). An entry or item is kept when its uniform is ``< rho``.
    """
    dense = X.toarray() != 0
    u, v = np.asarray(u), np.asarray(v)
    rows = np.unique(np.concatenate((u, v)))
    items = np.flatnonzero(dense[rows].any(axis=0))
    gen = np.random.default_rng(seed)
    out = np.empty((n_draws, u.size), dtype=np.int64)
    for j in range(n_draws):
        kept = np.zeros_like(dense)
        if shared:
            item_kept = np.zeros(dense.shape[1], dtype=bool)
            item_kept[items] = gen.random(items.size) < rho
            kept[rows] = dense[rows] & item_kept
        else:
            for r in rows:
                cols = np.flatnonzero(dense[r])
                kept[r, cols] = gen.random(cols.size) < rho
        out[j] = (kept[u] ^ kept[v]).sum(axis=1)
    return out


def wilson_reference(successes, n, confidence):
    """Wilson score interval, written out from Wilson (1927) with scipy's normal quantile."""
    p = np.asarray(successes, dtype=np.float64) / n
    z = stats.norm.ppf((1.0 + confidence) / 2.0)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def hoeffding_reference(d, c, rho, delta, upper, integer):
    """The Hoeffding bound of the docstrings, one pair at a time in plain Python."""
    n = d + c
    m = rho * d + 2 * rho * (1 - rho) * c
    if upper:
        s = m - (math.ceil(delta) - 1 if integer else delta)
    else:
        s = (math.floor(delta) + 1 if integer else delta) - m
    if s <= 0:
        return 0.0
    if n == 0:
        return 1.0
    return 1.0 - math.exp(-2.0 * s * s / n)


# ---------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------


def test_rho_error_quotes_the_first_three_values_outside_the_unit_interval():
    rho = np.array([1.0, 0.0, 1.5, 2.0, -1.0, 3.0])  # 1.0 is allowed; the next three are the first bad ones
    expected = str(np.array([0.0, 1.5, 2.0]))
    with pytest.raises(ValueError) as err:
        masked_distance_moments(1, 1, rho)
    assert str(err.value).endswith("e.g. " + expected)


def test_counts_may_be_integral_floats_but_not_strings_or_fractions():
    mean, var = masked_distance_moments(np.array([3.0, 0.0]), np.array([2.0, 4.0]), 0.5)
    q = 2 * 0.5 * 0.5
    np.testing.assert_allclose(mean, [0.5 * 3 + q * 2, q * 4])
    np.testing.assert_allclose(var, [3 * 0.25 + 2 * q * (1 - q), 4 * q * (1 - q)])
    with pytest.raises(ValueError, match="got dtype <U1"):
        masked_distance_moments(np.array(["3"]), 1, 0.5)
    with pytest.raises(ValueError, match="non-integer"):
        masked_distance_moments(2.5, 1, 0.5)


def test_row_indices_must_be_one_dimensional_integers_and_may_be_empty():
    X = dense_csr([[0, 1], [1, 2]], 3)
    empty = pair_overlaps(X, [], [])
    assert empty.d.shape == empty.c.shape == (0,)
    assert sample_masked_distances(X, [], [], 0.5, n_draws=2, rng=0).shape == (2, 0)
    for bad in ([0.0], [[0]]):
        with pytest.raises(ValueError, match="1-D array of integer row indices"):
            pair_overlaps(X, bad, bad)
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        sample_masked_distances(X, [0, 1], [1], 0.5, n_draws=2)


def test_n_draws_boundary_one_draw_is_allowed():
    X = dense_csr([[0, 1, 2], [2, 3]], 4)
    draws = sample_masked_distances(X, [0], [1], 0.5, n_draws=1, rng=3)
    assert np.array_equal(draws, simulate_masked_distances(X, [0], [1], 0.5, 1, 3, shared=False))
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_draws must be a positive integer"):
            sample_masked_distances(X, [0], [1], 0.5, n_draws=bad)


def test_relative_threshold_allows_a_zero_ratio_and_refuses_negative_ones():
    np.testing.assert_array_equal(relative_threshold(np.array([0, 4, 9]), 0.0), [0.0, 0.0, 0.0])
    for bad in (-1e-300, float("nan")):
        with pytest.raises(ValueError, match="non-negative"):
            relative_threshold(3, bad)


def test_masked_distance_pmf_takes_scalars_only():
    for d, c in ((np.array([3, 4]), 2), (3, np.array([1, 2]))):
        with pytest.raises(ValueError, match="one pair"):
            masked_distance_pmf(d, c, 0.5)


def test_result_dataclasses_are_frozen():
    X = dense_csr([[0], [1]], 2)
    po = pair_overlaps(X, [0], [1])
    mc = monte_carlo_probabilities(X, [0], [1], 0.5, 1.0, n_draws=2, rng=0)
    assert isinstance(po, PairOverlap)
    with pytest.raises(dataclasses.FrozenInstanceError):
        po.d = np.zeros(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mc.mean = np.zeros(1)


# ---------------------------------------------------------------------------------------------------------
# binary support of sparse input
# ---------------------------------------------------------------------------------------------------------


def support_pairs(X, u, v):
    """d and c from the dense support (any non-zero value, duplicates summed, is a positive)."""
    S = X.toarray() != 0
    c = (S[u] & S[v]).sum(axis=1)
    return S[u].sum(axis=1) + S[v].sum(axis=1) - 2 * c, c


def test_duplicates_explicit_zeros_and_values_other_than_one_are_read_as_a_support():
    # row 0 stores item 1 twice (non-canonical); row 1 stores an explicit zero at item 0
    dup = sp.csr_matrix((np.ones(5, dtype=np.float32), np.array([1, 1, 2, 0, 2]), np.array([0, 3, 5])), shape=(2, 3))
    dup.data[3] = 0.0
    twos = sp.csr_matrix(np.array([[2, 2, 0], [0, 2, 2]], dtype=np.float32))  # no stored one at all
    zeros_and_others = sp.csr_matrix(
        (np.array([0, 2, 3, 0, 3], dtype=np.float32), np.array([0, 1, 2, 0, 2]), np.array([0, 3, 5])), shape=(2, 3)
    )
    only_zeros = sp.csr_matrix((np.zeros(3, dtype=np.float32), np.array([0, 1, 2]), np.array([0, 2, 3])), shape=(2, 3))
    for X in (dup, twos, zeros_and_others, only_zeros):
        po = pair_overlaps(X, [0, 1, 0], [1, 1, 0])
        d, c = support_pairs(X, [0, 1, 0], [1, 1, 0])
        np.testing.assert_array_equal(po.d, d)
        np.testing.assert_array_equal(po.c, c)
        B = _binary_csr(X)
        assert B.dtype == np.float32 and B.has_canonical_format
        np.testing.assert_array_equal(B.toarray(), (X.toarray() != 0).astype(np.float32))
        assert (B.data == 1).all()
    assert _binary_csr(only_zeros).nnz == 0


def test_binary_csr_converts_float64_ones_and_copies_nothing_when_already_binary_float32():
    X64 = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float64))
    assert _binary_csr(X64).dtype == np.float32
    X32 = X64.astype(np.float32)
    B = _binary_csr(X32)
    assert np.shares_memory(B.data, X32.data) and np.shares_memory(B.indices, X32.indices)


def test_pair_overlaps_do_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(13)
    X = sp.csr_matrix((rng.random((50, 40)) < 0.3).astype(np.float32))
    u, v = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    d, c = support_pairs(X, u, v)
    for chunk_size in (1, 2, 7, 299, 300, 301, None):
        po = pair_overlaps(X, u, v, chunk_size=chunk_size)
        np.testing.assert_array_equal(po.d, d)
        np.testing.assert_array_equal(po.c, c)


# ---------------------------------------------------------------------------------------------------------
# the exact law
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("d", "c", "rho"), [(5, 25, 0.25), (5, 33, 0.4), (8, 37, 0.6), (5, 5, 0.3), (32, 13, 0.76)])
def test_sure_events_have_probability_exactly_one_and_the_cdf_never_exceeds_one(d, c, rho):
    # the summed pmf of these laws rounds to just above or just below 1
    for delta in (d + c, d + c + 0.5, np.inf):
        assert contraction_probability(d, c, rho, delta) == 1.0
    for delta in (0, -0.5, -3, -np.inf):
        assert expansion_probability(d, c, rho, delta) == 1.0
    cdf = masked_distance_cdf(d, c, rho)
    assert cdf.max() <= 1.0 and cdf[-1] == pytest.approx(1.0, abs=1e-14)


def test_clean_input_is_a_step_at_the_clean_distance():
    d = np.array([0, 3, 0, 4, 6])
    c = np.array([0, 0, 5, 2, 6])
    for delta in (-1, 0, 2.5, 3, 4, 5.5, 6, 20):
        np.testing.assert_array_equal(contraction_probability(d, c, 1.0, delta), (d <= delta).astype(float))
        np.testing.assert_array_equal(expansion_probability(d, c, 1.0, delta), (d >= delta).astype(float))


def test_fft_convolution_path_returns_a_normalised_pmf():
    d, c, rho = 1100, 1000, 0.7  # (d + 1)(c + 1) is above the direct-convolution limit of 2^20
    pmf = masked_distance_pmf(d, c, rho)
    direct = np.convolve(stats.binom.pmf(np.arange(d + 1), d, rho), stats.binom.pmf(np.arange(c + 1), c, 0.42))
    assert abs(pmf.sum() - 1.0) <= 2 * EPS
    np.testing.assert_allclose(pmf, direct, rtol=0, atol=1e-15)


def test_a_pmf_longer_than_one_batch_of_the_binomial_cache():
    d = (1 << 22) + 1  # d + 1 entries: more than the 2^22 elements of one batch
    k = np.array([d // 2 - 1500, d // 2, d // 2 + 700])
    got = contraction_probability(d, 1, 0.5, k)
    q = 0.5  # 2 rho (1 - rho)
    expected = (1 - q) * stats.binom.cdf(k, d, 0.5) + q * stats.binom.cdf(k - 1, d, 0.5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_pmf_and_cdf_of_unequal_d_and_c_match_exhaustive_enumeration():
    d, c, rho = 3, 1, 0.3
    # u = {0, 1, 2, 3}, v = {3}: three items only in u, one shared
    pmf = np.zeros(d + c + 1)
    for bu in itertools.product((0, 1), repeat=4):
        for bv in itertools.product((0, 1), repeat=1):
            w = math.prod(rho if b else 1 - rho for b in bu + bv)
            pmf[sum(bu[:3]) + (bu[3] != bv[0])] += w
    np.testing.assert_allclose(masked_distance_pmf(d, c, rho), pmf, atol=1e-15)
    np.testing.assert_allclose(masked_distance_cdf(d, c, rho), np.cumsum(pmf), atol=1e-15)


def check_grouping(d, c, rho, k):
    groups = _distinct_queries(d, c, rho, k)
    if groups is None:
        return False
    first, inverse = groups
    for a in (d, c, rho, k):
        np.testing.assert_array_equal(a[first][inverse], a)
    assert np.unique(np.stack((d, c, k, rho)), axis=1).shape[1] == first.size
    return True


def test_grouping_of_repeated_queries_is_exact_and_never_merges_distinct_ones_by_key_overflow():
    rng = np.random.default_rng(0)
    # moderate counts, many repeats: grouped, exactly
    d = rng.integers(0, 6, 5000)
    c = rng.integers(0, 6, 5000)
    k = rng.integers(0, 11, 5000)
    assert check_grouping(d, c, np.full(5000, 0.5), k)
    assert check_grouping(d, c, rng.choice([0.25, 0.5, 0.75], 5000), k)
    top = (1 << 31) - 1  # counts as large as scipy's binomial tails take
    # a wrapped key (d * r1 + c) * r2 + k would merge each pair of rows below: d or c differs by 2^64 / (r1 r2)
    cases = [
        [(top, 0, top), (0, 7, 1), ((1 << 30) + 10, 0, 5), (10, 0, 5)],  # r0 = r2 = 2^31, r1 = 8
        [(0, top, (1 << 20) - 1), ((1 << 13) + 10, 0, 5), (10, 0, 5)],  # r0 = 2^13 + 11, r1 = 2^31, r2 = 2^20
    ]
    for queries in cases:
        reps = np.array(queries * (5000 // len(queries)), dtype=np.int64)
        check_grouping(reps[:, 0], reps[:, 1], np.full(len(reps), 0.5), reps[:, 2])


# ---------------------------------------------------------------------------------------------------------
# Hoeffding bounds and the Wilson interval
# ---------------------------------------------------------------------------------------------------------


def test_hoeffding_bounds_match_their_docstring_formulas():
    laws = [(0, 0), (1, 0), (0, 1), (3, 7), (7, 3), (12, 0), (2, 15)]
    deltas = [-1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 4.0, 6.3, 9.0, 14.0]
    for (d, c), rho, delta in itertools.product(laws, (0.3, 0.8), deltas):
        for integer in (True, False):
            lo = hoeffding_contraction_bound(d, c, rho, delta, integer=integer)
            hi = hoeffding_expansion_bound(d, c, rho, delta, integer=integer)
            assert lo == pytest.approx(hoeffding_reference(d, c, rho, delta, False, integer), abs=1e-14)
            assert hi == pytest.approx(hoeffding_reference(d, c, rho, delta, True, integer), abs=1e-14)
        # the default is the integer-aware gap
        assert hoeffding_contraction_bound(d, c, rho, delta) == pytest.approx(
            hoeffding_reference(d, c, rho, delta, False, True), abs=1e-14
        )
        assert hoeffding_expansion_bound(d, c, rho, delta) == pytest.approx(
            hoeffding_reference(d, c, rho, delta, True, True), abs=1e-14
        )


@pytest.mark.parametrize("n", [1, 2, 7, 100])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.999])
def test_wilson_interval_matches_the_textbook_formula_with_exact_ends(n, confidence):
    successes = np.arange(n + 1)
    low, high = wilson_interval(successes, n, confidence)
    ref_low, ref_high = wilson_reference(successes, n, confidence)
    inner = (successes > 0) & (successes < n)
    np.testing.assert_allclose(low[successes > 0], ref_low[successes > 0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(high[successes < n], ref_high[successes < n], rtol=1e-12, atol=1e-15)
    assert low[0] == 0.0 and high[-1] == 1.0  # the rounded formula may miss 0 and 1 by an ulp
    assert (low[inner] > 0).all() and (high[inner] < 1).all()


def test_wilson_interval_defaults_and_argument_boundaries():
    for s, n in ((0, 1), (30, 100)):  # the default confidence is 0.95; one trial is enough
        low, high = wilson_interval(s, n)
        ref_low, ref_high = wilson_reference(s, n, 0.95)
        assert low == pytest.approx(max(ref_low, 0.0), rel=1e-12, abs=1e-15)
        assert high == pytest.approx(ref_high, rel=1e-12)
    with pytest.raises(ValueError, match="n must be a positive number of trials, got 0"):
        wilson_interval(0, 0)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="confidence must be in"):
            wilson_interval(1, 2, bad)
    for ok in (1e-9, 1 - 1e-9):
        low, high = wilson_interval(1, 2, ok)
        assert 0.0 < low <= 0.5 <= high < 1.0


# ---------------------------------------------------------------------------------------------------------
# Monte Carlo against a reference simulation of the same random stream
# ---------------------------------------------------------------------------------------------------------


def mc_reference(draws, delta, confidence):
    n = draws.shape[0]
    n_le = (draws <= delta).sum(axis=0)
    n_ge = (draws >= delta).sum(axis=0)
    c_lo, c_hi = wilson_reference(n_le, n, confidence)
    e_lo, e_hi = wilson_reference(n_ge, n, confidence)
    c_lo, e_lo = np.where(n_le == 0, 0.0, c_lo), np.where(n_ge == 0, 0.0, e_lo)
    c_hi, e_hi = np.where(n_le == n, 1.0, c_hi), np.where(n_ge == n, 1.0, e_hi)
    stderr = draws.std(axis=0, ddof=1) / np.sqrt(n)
    return n_le / n, c_lo, c_hi, n_ge / n, e_lo, e_hi, draws.mean(axis=0), stderr


PAIRS_X = dense_csr([[0, 1, 2, 3], [2, 3, 4], [0, 1, 2, 3], [5], [], [1, 4, 6, 7, 8]], 9)
PAIRS_U = [0, 0, 1, 3, 4, 5, 0]
PAIRS_V = [1, 2, 2, 4, 4, 0, 5]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("rho", "n_draws", "seed"), [(0.5, 2, 1), (0.3, 40, 2), (0.85, 13, 3), (1.0, 5, 4)])
def test_sample_masked_distances_follow_the_documented_draws(shared, rho, n_draws, seed):
    got = sample_masked_distances(PAIRS_X, PAIRS_U, PAIRS_V, rho, n_draws, rng=seed, shared=shared)
    expected = simulate_masked_distances(PAIRS_X, PAIRS_U, PAIRS_V, rho, n_draws, seed, shared)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_independent_masks_are_the_default():
    X = dense_csr([list(range(20)), list(range(20))], 20)  # identical rows: only independent masks separate them
    got = sample_masked_distances(X, [0], [1], 0.5, n_draws=10, rng=5)
    np.testing.assert_array_equal(got, simulate_masked_distances(X, [0], [1], 0.5, 10, 5, shared=False))
    assert got.max() > 0


def test_a_shared_mask_over_one_item_takes_one_uniform_per_draw():
    X = dense_csr([[5], [], [5]], 7)
    got = sample_masked_distances(X, [0, 0], [1, 2], 0.5, n_draws=40, rng=6, shared=True)
    np.testing.assert_array_equal(got, simulate_masked_distances(X, [0, 0], [1, 2], 0.5, 40, 6, shared=True))


@pytest.mark.parametrize("shared", [False, True])
def test_a_uniform_equal_to_rho_drops_its_entry(shared):
    # rho is the first uniform of the stream: independent masks, row 0's first item; shared, item 0 (only in u)
    seed = 11
    rho = float(np.random.default_rng(seed).random())
    X = dense_csr([[0, 1, 2], [1, 2, 3]], 4)
    got = sample_masked_distances(X, [0], [1], rho, n_draws=3, rng=seed, shared=shared)
    np.testing.assert_array_equal(got, simulate_masked_distances(X, [0], [1], rho, 3, seed, shared))


def test_draws_in_several_chunks_are_stacked_in_order():
    # 2^20 + 2 stored entries: three draws per chunk, so four draws come in two chunks
    half = (1 << 19) + 1
    a, b = np.arange(half), np.arange(half // 2, half // 2 + half)
    X = sp.csr_matrix(
        (np.ones(2 * half, dtype=np.float32), np.concatenate((a, b)), np.array([0, half, 2 * half])),
        shape=(2, b[-1] + 1),
    )
    got = sample_masked_distances(X, [0], [1], 0.5, n_draws=4, rng=7)
    uniforms = np.random.default_rng(7).random((4, 2 * half)) < 0.5
    kept_u = np.zeros((4, X.shape[1]), dtype=bool)
    kept_v = np.zeros((4, X.shape[1]), dtype=bool)
    kept_u[:, a] = uniforms[:, :half]
    kept_v[:, b] = uniforms[:, half:]
    assert got.shape == (4, 1)
    np.testing.assert_array_equal(got[:, 0], (kept_u ^ kept_v).sum(axis=1))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("rho", "n_draws", "seed"), [(0.5, 2, 21), (0.4, 3, 22), (0.7, 60, 23), (1.0, 4, 24)])
def test_monte_carlo_counts_means_errors_and_intervals_match_numpy(shared, rho, n_draws, seed):
    delta = np.array([2.0, 1.5, 0.0, 1.0, 0.0, 4.0, 3.0])
    draws = simulate_masked_distances(PAIRS_X, PAIRS_U, PAIRS_V, rho, n_draws, seed, shared)
    mc = monte_carlo_probabilities(PAIRS_X, PAIRS_U, PAIRS_V, rho, delta, n_draws, rng=seed, shared=shared)
    assert mc.n_draws == n_draws and mc.confidence == 0.95
    fields = ("contraction", "contraction_low", "contraction_high", "expansion", "expansion_low", "expansion_high")
    reference = mc_reference(draws, delta, 0.95)
    for name, ref in zip((*fields, "mean", "mean_stderr"), reference, strict=True):
        np.testing.assert_allclose(getattr(mc, name), ref, rtol=1e-12, atol=1e-15, err_msg=name)


def test_monte_carlo_refuses_a_confidence_of_one_before_drawing():
    X = dense_csr([[0, 1], [1, 2]], 3)
    for bad in (0.0, 1.0):
        gen = np.random.default_rng(8)
        with pytest.raises(ValueError, match="confidence must be in"):
            monte_carlo_probabilities(X, [0], [1], 0.5, 1.0, n_draws=5, rng=gen, confidence=bad)
        assert gen.random() == np.random.default_rng(8).random()
    mc = monte_carlo_probabilities(X, [0], [1], 0.5, 1.0, n_draws=5, rng=8, confidence=0.999)
    assert mc.confidence == 0.999


# ---------------------------------------------------------------------------------------------------------
# mask operators
# ---------------------------------------------------------------------------------------------------------


def test_mask_input_floors_the_row_norm_at_1e_12():
    x = torch.tensor([[1.5e-12, 0.0, 0.0], [0.5e-12, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64)
    got = mask_input(x, 1.0)
    norm = np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), x.numpy() / np.maximum(norm, 1e-12), rtol=1e-12)


@pytest.mark.parametrize("shared", [False, True])
def test_mask_csr_keeps_exactly_the_entries_whose_uniform_is_below_rho(shared):
    X = dense_csr([[0, 2, 3], [1, 2], [0, 1, 2, 3, 4]], 5)
    seed = 12
    uniforms = np.random.default_rng(seed).random(X.shape[1] if shared else X.nnz)
    per_entry = uniforms[X.indices] if shared else uniforms
    for rho in (0.5, float(per_entry[2])):  # the second: an exact tie, dropped
        kept = per_entry < rho
        got = mask_csr(X, rho, rng=seed, shared=shared)
        expected = sp.csr_matrix((X.data * kept, X.indices, X.indptr), shape=X.shape)
        np.testing.assert_array_equal(got.toarray(), expected.toarray())


def test_mask_csr_at_rho_one_draws_nothing():
    X = dense_csr([[0, 2], [1]], 3)
    gen = np.random.default_rng(9)
    out = mask_csr(X, 1.0, rng=gen)
    assert out is not X and np.array_equal(out.toarray(), X.toarray())
    assert gen.random() == np.random.default_rng(9).random()


def sparse_rows(sizes: list[int]) -> torch.Tensor:
    return torch.tensor(np.concatenate(([0], np.cumsum(sizes))), dtype=torch.int64)


@pytest.mark.parametrize("mode", ["dropout", "bernoulli"])
def test_mask_sparse_values_match_the_documented_formulas(mode):
    sizes = [1, 3, 0, 1, 2, 4]  # single-item rows, an empty row, a non-empty last row
    indptr = sparse_rows(sizes)
    nnz = sum(sizes)
    row = np.repeat(np.arange(len(sizes)), sizes)
    uniforms = torch.rand(nnz, generator=torch.Generator().manual_seed(4)).numpy()
    for rho in (0.6, float(uniforms[0])):  # the second: an exact tie in float32, dropped
        keep, values = mask_sparse_values(indptr, rho, mode=mode, generator=torch.Generator().manual_seed(4))
        expected_keep = uniforms < np.float32(rho)
        assert keep.shape == values.shape == (nnz,)
        np.testing.assert_array_equal(keep.numpy(), expected_keep)
        if mode == "dropout":
            expected = expected_keep / (rho * np.sqrt(np.asarray(sizes, dtype=float)[row]))
        else:
            kept_per_row = np.bincount(row, weights=expected_keep, minlength=len(sizes))
            expected = expected_keep / np.sqrt(np.maximum(kept_per_row[row], 1.0))
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["dropout", "bernoulli"])
def test_mask_sparse_values_at_rho_one_draws_nothing(mode):
    sizes = [1, 3, 2]
    gen = torch.Generator().manual_seed(10)
    state = gen.get_state().clone()
    keep, values = mask_sparse_values(sparse_rows(sizes), 1.0, mode=mode, generator=gen)
    assert torch.equal(gen.get_state(), state)
    assert bool(keep.all())
    expected = 1.0 / np.sqrt(np.repeat(sizes, sizes).astype(float))
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)
