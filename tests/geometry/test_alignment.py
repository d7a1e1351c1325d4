"""geometry.alignment: the Proposition 3.1 check (means closer to their own anchor centroid than to others')."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geometry.alignment import anchor_centroids, centroid_alignment, derangement


def _data(rng, n=200, items=60, d=4, density=0.1):
    X = sp.random(n, items, density=density, format="csr", random_state=np.random.RandomState(rng.integers(1 << 31)))
    X.data[:] = 1.0
    for u in np.flatnonzero(np.diff(X.indptr) == 0):
        X[u, rng.integers(items)] = 1.0
    return sp.csr_matrix(X), rng.normal(size=(items, d))


def test_centroids_match_a_dense_average():
    rng = np.random.default_rng(0)
    X, E = _data(rng, n=30)
    dense = X.toarray()
    expected = np.stack([E[row > 0].mean(axis=0) for row in dense])
    np.testing.assert_allclose(anchor_centroids(X, E), expected, rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 300), seed=st.integers(0, 10_000))
def test_derangement_is_a_permutation_without_fixed_points(n, seed):
    pi = derangement(n, np.random.default_rng(seed))
    assert np.array_equal(np.sort(pi), np.arange(n))
    assert not np.any(pi == np.arange(n))


def test_planted_alignment_is_found():
    rng = np.random.default_rng(1)
    X, E = _data(rng)
    mu = anchor_centroids(X, E) + rng.normal(scale=0.1, size=(X.shape[0], E.shape[1]))
    out = centroid_alignment(mu, X, E, rng)
    assert out.ci[1] < 0


def test_null_alignment_keeps_its_error_rate():
    rng = np.random.default_rng(2)
    hits, trials = 0, 300
    for _ in range(trials):
        X, E = _data(rng, n=80)
        mu = rng.normal(size=(80, E.shape[1]))  # unrelated to the anchors
        high = centroid_alignment(mu, X, E, rng).ci[1]
        hits += high < 0  # a false "aligned" verdict
    assert hits / trials <= 0.05  # one-sided error of a two-sided 95% interval: about 2.5%


def test_rows_without_positives_are_refused():
    with pytest.raises(ValueError, match="without positives"):
        anchor_centroids(sp.csr_matrix((2, 3)), np.zeros((3, 2)))
