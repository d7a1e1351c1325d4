"""Tests of geometry.neighbourhoods: kNN, drift, mask variance, global transfer and rank thresholds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from geometry.masking import contraction_probability, mask_csr, pair_overlaps
from geometry.neighbourhoods import (
    KNNResult,
    encode_masked,
    global_transfer,
    input_knn_drift,
    knn,
    knn_drift,
    knn_w2,
    mask_variance,
    masked_knn_drift,
    neighbours_leaving,
    rank_threshold,
)


def random_binary_csr(n: int, m: int, density: float, seed: int) -> sp.csr_matrix:
    X = sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data[:] = 1.0
    return X


def brute_knn(D: np.ndarray, k: int, queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference kNN: full sort of each row by (distance, index), self excluded."""
    D = D.copy()
    q = np.arange(D.shape[0]) if queries is None else queries
    D = D[q]
    D[np.arange(q.size), q] = np.inf
    idx = np.empty((q.size, k), dtype=int)
    for r in range(q.size):
        order = np.lexsort((np.arange(D.shape[1]), D[r]))
        idx[r] = order[:k]
    return idx, np.take_along_axis(D, idx, axis=1)


# ---------------------------------------------------------------------------------------------------------
# kNN
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["l1", "cosine", "euclidean"])
def test_sparse_knn_matches_brute_force_with_ties_to_lower_ids(metric):
    X = random_binary_csr(90, 40, 0.1, 0)
    X = sp.vstack((X, sp.csr_matrix((1, 40), dtype=np.float32))).tocsr()  # an empty row
    dense = X.toarray().astype(np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(dense, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(norms[:, None] > 0, dense / norms[:, None], 0.0)
        D = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    else:
        D = cdist(dense, dense, "cityblock" if metric == "l1" else "euclidean")
    res = knn(X, 7, metric, block_size=16)
    idx, dist = brute_knn(D, 7)
    np.testing.assert_allclose(res.distances, dist, atol=1e-9)
    if metric == "l1":  # integer distances: many ties, the lower id must win
        np.testing.assert_array_equal(res.indices, idx)
    assert res.indices.dtype == np.int64 and (res.indices != np.arange(91)[:, None]).all()


@pytest.mark.parametrize("metric", ["l1", "cosine", "euclidean"])
def test_dense_knn_matches_brute_force(metric):
    Z = np.random.default_rng(1).normal(size=(70, 5))
    D = cdist(Z, Z, {"l1": "cityblock", "cosine": "cosine", "euclidean": "euclidean"}[metric])
    res = knn(torch.from_numpy(Z), 5, metric, block_size=9)
    idx, dist = brute_knn(D, 5)
    np.testing.assert_array_equal(res.indices, idx)
    np.testing.assert_allclose(res.distances, dist, atol=1e-9)


def test_query_subset_matches_rows_of_the_full_result():
    X = random_binary_csr(60, 30, 0.15, 2)
    full = knn(X, 4)
    q = np.array([5, 0, 59, 17])
    part = knn(X, 4, queries=q)
    np.testing.assert_array_equal(part.indices, full.indices[q])
    np.testing.assert_array_equal(part.queries, q)


def test_planted_neighbours_are_found():
    # users 0-2 share items 0-9 (minus one each); users 3-5 share items 10-19; so neighbours stay in-group
    rows, cols = [], []
    for u in range(6):
        base = 0 if u < 3 else 10
        items = [base + i for i in range(10) if i != u % 3]
        rows += [u] * len(items)
        cols += items
    X = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(6, 20))
    res = knn(X, 2)
    for u in range(6):
        assert set(res.indices[u]) == ({0, 1, 2} if u < 3 else {3, 4, 5}) - {u}
    np.testing.assert_array_equal(res.distances, np.full((6, 2), 2.0))


def test_knn_rejects_bad_k_and_metric():
    X = random_binary_csr(10, 5, 0.5, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn(X, 10)
    with pytest.raises(ValueError, match="metric"):
        knn(X, 2, "hamming")
    with pytest.raises(ValueError, match="NaN"):
        knn(np.array([[0.0, np.nan], [1.0, 2.0]]), 1)


def test_w2_knn_uses_the_closed_form_between_diagonal_gaussians():
    rng = np.random.default_rng(4)
    mu, sigma = rng.normal(size=(50, 3)), rng.uniform(0.1, 2.0, size=(50, 3))
    W2 = np.sqrt(((mu[:, None] - mu[None]) ** 2).sum(-1) + ((sigma[:, None] - sigma[None]) ** 2).sum(-1))
    res = knn_w2(mu, sigma, 6)
    idx, dist = brute_knn(W2, 6)
    np.testing.assert_array_equal(res.indices, idx)
    np.testing.assert_allclose(res.distances, dist, atol=1e-9)
    with pytest.raises(ValueError, match="sigma"):
        knn_w2(mu, -sigma, 3)


# ---------------------------------------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------------------------------------


def test_knn_drift_planted_values():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    b = np.array([[4, 3, 2, 1], [5, 6, 7, 8], [1, 2, 9, 10]])
    np.testing.assert_allclose(knn_drift(a, b), [0.0, 1.0, 1 - 2 / 6])
    np.testing.assert_allclose(knn_drift(b, a), knn_drift(a, b))
    res = KNNResult(indices=a, distances=np.zeros(a.shape), queries=np.arange(3))
    np.testing.assert_allclose(knn_drift(res, a[:, :2]), [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="repeats"):
        knn_drift(np.array([[1, 1]]), np.array([[1, 2]]))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(st.sets(st.integers(0, 15), min_size=3, max_size=3), min_size=2, max_size=2))
def test_knn_drift_equals_set_jaccard(sets):
    a, b = sets
    got = knn_drift(np.array([sorted(a)]), np.array([sorted(b)]))[0]
    assert got == pytest.approx(1 - len(a & b) / len(a | b))


# ---------------------------------------------------------------------------------------------------------
# mask variance and masked drift
# ---------------------------------------------------------------------------------------------------------


def test_mask_variance_of_a_linear_encoder_matches_the_closed_form():
    # mu(x ⊙ b) = (x ⊙ b) W  =>  tr Var_b = sum_i x_i^2 rho (1 - rho) ||W_i||^2
    rng = np.random.default_rng(5)
    X = random_binary_csr(12, 30, 0.3, 6)
    W = torch.from_numpy(rng.normal(size=(30, 4)).astype(np.float32))
    rho = 0.6
    g = torch.Generator().manual_seed(0)
    res = mask_variance(lambda x: x @ W, X, rho, n_draws=1500, mode="bernoulli", batch_size=6, generator=g)
    expected = X.toarray() @ ((W.numpy().astype(np.float64) ** 2).sum(1)) * rho * (1 - rho)
    np.testing.assert_allclose(res.trace_var, expected, rtol=0.2)
    np.testing.assert_allclose(res.mean_mu, rho * X.toarray() @ W.numpy(), atol=0.15)
    clean = mask_variance(lambda x: x @ W, X, 1.0, n_draws=3, mode="bernoulli")
    np.testing.assert_allclose(clean.trace_var, 0.0, atol=1e-12)


def test_encode_masked_dropout_clean_is_the_normalised_input():
    X = random_binary_csr(9, 15, 0.4, 7)
    Z = encode_masked(lambda x: x, X, 1.0, mode="dropout", batch_size=4)
    dense = X.toarray()
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(Z, np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0), atol=1e-6)


def test_masked_knn_drift_is_zero_without_masking_and_positive_with_it():
    X = random_binary_csr(80, 50, 0.2, 8)
    W = torch.from_numpy(np.random.default_rng(9).normal(size=(50, 6)).astype(np.float32))
    g = torch.Generator().manual_seed(1)
    none = masked_knn_drift(lambda x: x @ W, X, 1.0, k=5, n_draws=2, generator=g)
    np.testing.assert_array_equal(none, 0.0)
    some = masked_knn_drift(lambda x: x @ W, X, 0.5, k=5, n_draws=2, reference="draws", generator=g)
    assert some.shape == (80,) and ((some >= 0) & (some <= 1)).all() and some.mean() > 0.1


# ---------------------------------------------------------------------------------------------------------
# global transfer
# ---------------------------------------------------------------------------------------------------------


def test_global_transfer_on_a_planted_fixture():
    # user: items                  0: {0,1,2,3}  1: {0,1,2}  2: {3,10,11,12,13}  3: {20,21}
    rows = [0] * 4 + [1] * 3 + [2] * 5 + [3] * 2
    cols = [0, 1, 2, 3, 0, 1, 2, 3, 10, 11, 12, 13, 20, 21]
    X = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(4, 30))
    latent = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    # d(0,1)=1, d(0,2)=7, d(0,3)=6, d(1,2)=8, d(1,3)=5, d(2,3)=7; shared: (0,1)=3, (0,2)=1, others 0
    res = global_transfer(latent, X, far_threshold=4)
    np.testing.assert_array_equal(res.far, [[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(res.related, [[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(res.transfer, [1 / 3, 0, 1 / 3, 0])
    groups = np.array([0, 1, 0, 1])
    by_group = global_transfer(latent, X, groups=groups, far_threshold=4)
    np.testing.assert_allclose(by_group.transfer, [1 / 3, 1 / 3, 1 / 3, 1 / 3])
    # far = outside the input kNN (k=1: 0->1, 1->0, 2->0, 3->1)
    input_nn = knn(X, 1)
    np.testing.assert_array_equal(input_nn.indices.ravel(), [1, 0, 0, 1])
    by_knn = global_transfer(latent, X, input_knn=input_nn)
    np.testing.assert_array_equal(by_knn.far, [[0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_allclose(by_knn.transfer, [1 / 3, 0, 0, 0])
    with pytest.raises(ValueError, match="exactly one"):
        global_transfer(latent, X)


def test_global_transfer_uses_knn_queries_and_per_user_thresholds():
    X = random_binary_csr(40, 25, 0.2, 10)
    q = np.array([3, 8, 30])
    lat = knn(np.random.default_rng(2).normal(size=(40, 3)), 5, queries=q)
    thr = np.array([0.0, 100.0, 4.0])
    res = global_transfer(lat, X, far_threshold=thr)
    po = pair_overlaps(X, np.repeat(q, 5), lat.indices.ravel())
    far = po.d.reshape(3, 5) > thr[:, None]
    np.testing.assert_array_equal(res.far, far)
    np.testing.assert_allclose(res.transfer, (far & (po.c.reshape(3, 5) >= 1)).mean(1))
    assert not res.far[1].any()


# ---------------------------------------------------------------------------------------------------------
# rank thresholds
# ---------------------------------------------------------------------------------------------------------


def test_rank_threshold_clean_and_expected_masked():
    X = random_binary_csr(50, 30, 0.2, 11)
    dense = X.toarray()
    C = dense @ dense.T
    s = dense.sum(1)
    D = s[:, None] + s[None, :] - 2 * C
    np.fill_diagonal(D, np.inf)
    np.testing.assert_allclose(rank_threshold(X, 3, block_size=7), np.sort(D, axis=1)[:, 2])
    rho = 0.4
    E = rho * D + 2 * rho * (1 - rho) * C
    np.fill_diagonal(E, np.inf)
    delta = rank_threshold(X, 3, rho=rho)
    np.testing.assert_allclose(delta, np.sort(E, axis=1)[:, 2], atol=1e-9)
    # usable as the sharing radius of the exact law
    p = contraction_probability(D[0, 1:], C[0, 1:].astype(int), rho, delta[0])
    assert p.shape == (49,) and ((p >= 0) & (p <= 1)).all()
    with pytest.raises(ValueError, match="sparse"):
        rank_threshold(dense, 3)


# ------------------------------------------------------------------------------------ realised input drift


def _dense_knn(D: np.ndarray, k: int) -> np.ndarray:
    """Reference kNN of every row of a dense distance matrix: sort by (distance, index), self excluded."""
    D = D.astype(np.float64).copy()
    np.fill_diagonal(D, np.inf)
    return np.stack([np.lexsort((np.arange(D.shape[1]), row))[:k] for row in D])


def test_neighbours_leaving_counts_the_share_that_leaves():
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = np.array([[4, 3, 9, 10], [5, 6, 7, 8]])
    np.testing.assert_array_equal(neighbours_leaving(a, b), [0.5, 0.0])
    np.testing.assert_allclose(knn_drift(a, b), [1 - 2 / 6, 0.0])


def test_input_drift_matches_a_dense_reference():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((60, 40)) < 0.2).astype(np.float32))
    got = input_knn_drift(X, 0.5, 4, n_draws=3, rng=np.random.default_rng(7))
    gen = np.random.default_rng(7)

    def l1(M: sp.csr_matrix) -> np.ndarray:
        A = M.toarray()
        return np.abs(A[:, None, :] - A[None, :, :]).sum(2)

    clean = _dense_knn(l1(X), 4)
    draws = [_dense_knn(l1(mask_csr(X, 0.5, gen)), 4) for _ in range(3)]

    def leave(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([1 - len(set(a) & set(b)) / len(a) for a, b in zip(x, y, strict=True)])

    from_clean = [leave(clean, d) for d in draws]
    between = [leave(x, y) for x, y in itertools.pairwise(draws)]
    np.testing.assert_allclose(got.clean_to_masked, np.mean(from_clean, axis=0))
    np.testing.assert_allclose(got.masked_to_masked, np.mean(between, axis=0))


def test_input_drift_is_zero_unmasked_small_with_planted_groups_and_large_on_a_null():
    rng = np.random.default_rng(1)
    k, size, n_items = 5, 6, 400
    # planted: groups of six users with the same 60 items (disjoint between groups): their neighbours are
    # each other, and masking at rho = 0.5 keeps them far closer than any outsider
    rows, cols = [], []
    for g in range(20):
        items = rng.choice(np.arange(g * 20, g * 20 + 400) % n_items, size=60, replace=False)
        for u in range(size):
            rows += [g * size + u] * 60
            cols += list(items)
    planted = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(20 * size, n_items))
    planted.sum_duplicates()
    # null: the same row sizes, items drawn uniformly: no neighbourhood structure to keep
    null_rows = [rng.choice(n_items, size=int(n), replace=False) for n in np.diff(planted.indptr)]
    null = sp.csr_matrix(
        (np.ones(sum(map(len, null_rows)), np.float32),
         (np.repeat(np.arange(len(null_rows)), [len(r) for r in null_rows]), np.concatenate(null_rows))),
        shape=planted.shape,
    )  # fmt: skip
    assert input_knn_drift(planted, 1.0, k, n_draws=2, rng=0).clean_to_masked.max() == 0.0
    kept = input_knn_drift(planted, 0.5, k, n_draws=4, rng=2).summary()
    lost = input_knn_drift(null, 0.5, k, n_draws=4, rng=2).summary()
    assert kept["clean_to_masked"]["ci"][1] < 0.05 and kept["masked_to_masked"]["ci"][1] < 0.05
    assert lost["clean_to_masked"]["ci"][0] > 0.7 and lost["masked_to_masked"]["ci"][0] > 0.7
    assert lost["clean_to_masked"]["n_users"] == planted.shape[0] and kept["n_draws"] == 4
