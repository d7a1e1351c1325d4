"""Neighbourhoods in input and latent space, their drift under masking, and global transfer.

Definitions (PAPER.md sections 4 and 6)
---------------------------------------
* k nearest neighbours (:func:`knn`) of each query user among all other users, for

  - input histories (scipy CSR, binary): L1 ``|S_u| + |S_v| - 2 <x_u, x_v>`` = ``|S_u Δ S_v|``, cosine or
    Euclidean, computed from sparse products ``X_block X^T`` one block of query rows at a time;
  - latent codes (dense): Euclidean on the posterior means ``mu``, cosine or L1; and W2 between diagonal
    Gaussians (:func:`knn_w2`), ``W2^2 = ||mu_u - mu_v||^2 + ||sigma_u - sigma_v||^2``, which is the squared
    Euclidean distance between the concatenations ``[mu, sigma]``.

  Ties are broken towards the lower user index, so neighbour sets are well defined even for the integer
  distances of binary histories. Memory is one ``block x N`` distance block, never ``N x N``.
* Drift (:func:`knn_drift`): ``1 - |A ∩ B| / (|A| + |B| - |A ∩ B|)`` (one minus the Jaccard index) between
  two kNN sets of a user (e.g. under two mask draws, or clean versus masked input).
* Realised input drift (:func:`input_knn_drift`): the share of a user's L1 k nearest neighbours that leave
  when every user is masked independently (:func:`neighbours_leaving`), against the clean neighbourhood and
  between two independent draws.
* Mask variance (:func:`mask_variance`, Proposition 3.2): ``tr Var_b[mu(x ⊙ b)]`` per user; PIA predicts it
  shrinks by ``tau^2``, ``tau = L / (L + 2 lambda_A)``.
* Global transfer (:func:`global_transfer`): the share of a user's latent neighbours that are far in input
  space yet related (at least one shared positive, or the same planted group).
* Rank thresholds (:func:`rank_threshold`): the distance of a user's k-th nearest neighbour, used as the
  sharing radius ``delta`` of :func:`geometry.masking.contraction_probability`.

References
----------
Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from geometry.intervals import mean_t_interval
from geometry.masking import MaskMode, _binary_csr, _row_index, mask_csr, mask_input, pair_overlaps, validate_rho
from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")
spatial_distance = lazy_import("scipy.spatial.distance")

Metric = Literal["l1", "cosine", "euclidean"]

# Elements of one query-block x reference distance block (float64: 32 MiB).
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class KNNResult:
    """k nearest neighbours of query users.

    Attributes
    ----------
    indices : numpy.ndarray of int64, shape (Q, k)
        Neighbour ids, nearest first (ties: lower id first).
    distances : numpy.ndarray of float64, shape (Q, k)
        Their distances, non-decreasing along each row.
    queries : numpy.ndarray of int64, shape (Q,)
        The query users, in row order.
    """

    indices: np.ndarray
    distances: np.ndarray
    queries: np.ndarray


def _as_numpy(Z: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(Z, torch.Tensor):
        Z = Z.detach().cpu().numpy()
    arr = np.asarray(Z, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (users x dims), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _topk_rows(D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k smallest entries of each row of ``D``, ties broken towards the lower column index."""
    kth = np.partition(D, k - 1, axis=1)[:, k - 1 : k]
    less = D < kth
    room = k - less.sum(axis=1, keepdims=True)
    tied = D == kth
    # among entries tied with the k-th value, keep the first `room` ones (lowest indices)
    select = less | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= room))
    cols = np.nonzero(select)[1].reshape(D.shape[0], k)
    dist = np.take_along_axis(D, cols, axis=1)
    order = np.argsort(dist, axis=1, kind="stable")  # cols ascend, so a stable sort keeps lower ids first
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _block_size(n_ref: int, block_size: int | None) -> int:
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        return int(block_size)
    return max(1, _BLOCK_ELEMENTS // max(n_ref, 1))


class _Distances:
    """Blocks of distances from query rows to all rows, for sparse binary or dense inputs."""

    def __init__(self, X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor, metric: str) -> None:
        if metric not in ("l1", "cosine", "euclidean"):
            raise ValueError(f"metric must be 'l1', 'cosine' or 'euclidean', got {metric!r}")
        self.metric = metric
        self.sparse = sp.issparse(X)
        if self.sparse:
            self.X = _binary_csr(X)
            self.sizes = np.diff(self.X.indptr).astype(np.float64)  # |S_u| = ||x_u||_1 = ||x_u||_2^2
            self.XT = self.X.T.tocsr()  # items x users in CSR, once: CSR @ CSR is the fast sparse product
        else:
            self.X = _as_numpy(X, "X")
            self.sq_norms = np.einsum("ij,ij->i", self.X, self.X)
        self.n = self.X.shape[0]
        if metric == "cosine":
            norms = np.sqrt(self.sizes if self.sparse else self.sq_norms)
            # an all-zero row has cosine similarity 0 (distance 1) to every row
            self.inv_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)

    def gram(self, rows: np.ndarray) -> np.ndarray:
        if self.sparse:
            return (self.X[rows] @ self.XT).toarray().astype(np.float64)
        return self.X[rows] @ self.X.T

    def block(self, rows: np.ndarray) -> np.ndarray:
        if self.metric == "l1" and not self.sparse:
            return spatial_distance.cdist(self.X[rows], self.X, metric="cityblock")
        G = self.gram(rows)
        if self.metric == "cosine":
            return np.clip(1.0 - G * self.inv_norms[rows, None] * self.inv_norms[None, :], 0.0, 2.0)
        sq = self.sizes if self.sparse else self.sq_norms
        if self.metric == "l1":  # binary rows: |S_u Δ S_v| = |S_u| + |S_v| - 2 |S_u ∩ S_v|
            return sq[rows, None] + sq[None, :] - 2.0 * G
        return np.sqrt(np.clip(sq[rows, None] + sq[None, :] - 2.0 * G, 0.0, None))


def _query_blocks(queries: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, queries.size, size):
        yield start, queries[start : start + size]


def _queries(queries: np.ndarray | list[int] | None, n: int) -> np.ndarray:
    if queries is None:
        return np.arange(n, dtype=np.int64)
    return _row_index(queries, n, "queries")


def _knn_from_blocks(
    block_fn: Callable[[np.ndarray], np.ndarray], n: int, k: int, queries: np.ndarray, block_size: int
) -> KNNResult:
    if not (1 <= k <= n - 1):
        raise ValueError(f"k must be between 1 and the number of other users ({n - 1}), got {k}")
    indices = np.empty((queries.size, k), dtype=np.int64)
    distances = np.empty((queries.size, k), dtype=np.float64)
    for start, rows in _query_blocks(queries, block_size):
        D = block_fn(rows)
        D[np.arange(rows.size), rows] = np.inf  # a user is not its own neighbour
        idx, dist = _topk_rows(D, k)
        indices[start : start + rows.size] = idx
        distances[start : start + rows.size] = dist
    return KNNResult(indices=indices, distances=distances, queries=queries)


def knn(
    X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor,
    k: int,
    metric: Metric = "l1",
    queries: np.ndarray | list[int] | None = None,
    block_size: int | None = None,
) -> KNNResult:
    """Exact k nearest neighbours of each query row among the other rows, in blocks of query rows.

    Sparse input is read as binary histories (every stored non-zero is a positive) and distances come
    from the sparse Gram block ``G = X_block X^T``: L1 ``= |S_u| + |S_v| - 2 G``, cosine
    ``= 1 - G / (||x_u|| ||x_v||)`` (an empty row is at distance 1 from all), Euclidean
    ``= sqrt(|S_u| + |S_v| - 2 G)``. Dense input (latent codes) uses BLAS Gram blocks for cosine and
    Euclidean and ``scipy.spatial.distance.cdist`` for L1.

    Parameters
    ----------
    X : scipy sparse matrix (N, I) or array_like (N, dim)
        Binary histories or latent codes (torch tensors are converted).
    k : int
        Number of neighbours, ``1 <= k <= N - 1``.
    metric : {"l1", "cosine", "euclidean"}
        Distance.
    queries : array_like of int, optional
        Rows whose neighbours are wanted (default: all).
    block_size : int, optional
        Query rows per block (default: ``2^22 / N``).

    Returns
    -------
    KNNResult
    """
    dist = _Distances(X, metric)
    q = _queries(queries, dist.n)
    return _knn_from_blocks(dist.block, dist.n, int(k), q, _block_size(dist.n, block_size))


def knn_w2(
    mu: np.ndarray | torch.Tensor,
    sigma: np.ndarray | torch.Tensor,
    k: int,
    queries: np.ndarray | list[int] | None = None,
    block_size: int | None = None,
) -> KNNResult:
    """k nearest neighbours under the 2-Wasserstein distance between diagonal Gaussian posteriors.

    ``W2(N(mu_u, diag sigma_u^2), N(mu_v, diag sigma_v^2))^2 = ||mu_u - mu_v||^2 + ||sigma_u - sigma_v||^2``,
    i.e. the Euclidean distance between ``[mu_u, sigma_u]`` and ``[mu_v, sigma_v]``.

    Parameters
    ----------
    mu, sigma : array_like, shape (N, dim)
        Posterior means and standard deviations (not variances).
    k, queries, block_size
        As in :func:`knn`.

    Returns
    -------
    KNNResult
        Distances are W2.
    """
    mu_arr, sigma_arr = _as_numpy(mu, "mu"), _as_numpy(sigma, "sigma")
    if mu_arr.shape != sigma_arr.shape:
        raise ValueError(f"mu and sigma must have the same shape, got {mu_arr.shape} and {sigma_arr.shape}")
    if np.any(sigma_arr < 0):
        raise ValueError("sigma must be non-negative standard deviations (pass exp(0.5 * logvar))")
    return knn(np.hstack((mu_arr, sigma_arr)), k, "euclidean", queries=queries, block_size=block_size)


def _neighbour_array(neighbours: KNNResult | np.ndarray, name: str) -> np.ndarray:
    arr = neighbours.indices if isinstance(neighbours, KNNResult) else np.asarray(neighbours)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a KNNResult or an integer array (users x k), got {arr.shape}")
    return arr.astype(np.int64)


def knn_drift(knn_a: KNNResult | np.ndarray, knn_b: KNNResult | np.ndarray) -> np.ndarray:
    """Neighbourhood drift one minus the Jaccard index, per user.

    ``drift(u) = 1 - |A_u ∩ B_u| / (|A_u| + |B_u| - |A_u ∩ B_u|)``.

    Parameters
    ----------
    knn_a, knn_b : KNNResult or array_like of int, shapes (Q, k_a) and (Q, k_b)
        Two neighbour sets per user (same users in the same row order); entries within a row are distinct.

    Returns
    -------
    numpy.ndarray of float64, shape (Q,)
        0 for identical sets, 1 for disjoint ones.
    """
    inter, ka, kb = _intersections(knn_a, knn_b)
    return 1.0 - inter / (ka + kb - inter)


def _intersections(knn_a: KNNResult | np.ndarray, knn_b: KNNResult | np.ndarray) -> tuple[np.ndarray, int, int]:
    """``|A_u ∩ B_u|`` per row and the two set sizes, after checking shapes and distinct entries."""
    a = _neighbour_array(knn_a, "knn_a")
    b = _neighbour_array(knn_b, "knn_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"knn_a and knn_b must have the same number of users, got {a.shape[0]}, {b.shape[0]}")
    for arr, name in ((a, "knn_a"), (b, "knn_b")):
        s = np.sort(arr, axis=1)
        if np.any(s[:, 1:] == s[:, :-1]):
            raise ValueError(f"{name} repeats a neighbour within a row; neighbour sets must be distinct")
    both = np.sort(np.hstack((a, b)), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1), a.shape[1], b.shape[1]


def _dense_batch(
    X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor,
    rows: np.ndarray,
    device: torch.device | str | None,
) -> torch.Tensor:
    if sp.issparse(X):
        batch = torch.from_numpy(np.asarray(X[rows].toarray(), dtype=np.float32))
    elif isinstance(X, torch.Tensor):
        batch = X[torch.from_numpy(rows)].float()
    else:
        batch = torch.from_numpy(np.asarray(X[rows], dtype=np.float32))
    return batch if device is None else batch.to(device)


def _encode_batch(
    encode_mu: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    rho: float,
    mode: MaskMode,
    generator: torch.Generator | None,
) -> np.ndarray:
    with torch.no_grad():
        mu = encode_mu(mask_input(batch, rho, mode=mode, generator=generator, training=True))
    return mu.detach().cpu().numpy().astype(np.float64)


def _check_history_matrix(X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor) -> int:
    if sp.issparse(X):
        return X.shape[0]
    if isinstance(X, torch.Tensor | np.ndarray) and X.ndim == 2:
        return X.shape[0]
    raise ValueError(f"X must be a sparse matrix or a 2-D array/tensor (users x items), got {type(X).__name__}")


def encode_masked(
    encode_mu: Callable[[torch.Tensor], torch.Tensor],
    X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor,
    rho: float,
    mode: MaskMode = "dropout",
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Posterior means of all users under one mask draw: ``mu(mask_input(x_u, rho, mode))``.

    ``rho = 1`` gives the clean means (normalised input in ``"dropout"`` mode).

    Parameters
    ----------
    encode_mu : callable
        Deterministic map from a dense float32 batch ``(B, I)`` to ``mu`` ``(B, dim)`` (model in eval mode,
        its own dropout off). Called under ``torch.no_grad``.
    X : scipy sparse matrix or array_like, shape (N, I)
        Histories; sparse rows are densified one batch at a time.
    rho, mode, generator
        As in :func:`geometry.masking.mask_input`.
    batch_size : int
        Users per batch.
    device : torch device, optional
        Where batches are masked and encoded (the generator must live there too).

    Returns
    -------
    numpy.ndarray of float64, shape (N, dim)
    """
    rho = validate_rho(rho)
    n = _check_history_matrix(X)
    out = [
        _encode_batch(encode_mu, _dense_batch(X, np.arange(s, min(s + batch_size, n)), device), rho, mode, generator)
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(out, axis=0)


@dataclass(frozen=True)
class MaskVariance:
    """Spread of the posterior mean across mask draws (Proposition 3.2).

    Attributes
    ----------
    trace_var : numpy.ndarray, shape (N,)
        ``tr Var_b[mu(x_u ⊙ b)]`` per user (unbiased, ``n_draws - 1`` denominator).
    mean_mu : numpy.ndarray, shape (N, dim)
        ``E_b[mu(x_u ⊙ b)]`` per user.
    n_draws : int
    """

    trace_var: np.ndarray
    mean_mu: np.ndarray
    n_draws: int


def mask_variance(
    encode_mu: Callable[[torch.Tensor], torch.Tensor],
    X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor,
    rho: float,
    n_draws: int = 32,
    mode: MaskMode = "dropout",
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> MaskVariance:
    """Per-user trace of the variance of the posterior mean across masks, ``tr Var_b[mu(x ⊙ b)]``.

    For each batch of users, ``n_draws`` independent masks (:func:`geometry.masking.mask_input`) are
    encoded and the per-dimension variance is accumulated in float64 (Welford) and summed over dimensions.
    Proposition 3.2 predicts PIA shrinks it by ``tau^2``, ``tau = L / (L + 2 lambda_A)``.

    Parameters
    ----------
    encode_mu, X, mode, generator, batch_size, device
        As in :func:`encode_masked`. ``mode`` should match how the model was trained (default
        ``"dropout"``); ``"bernoulli"`` feeds ``x ⊙ b`` exactly as in the paper.
    rho : float
        Keep probability in ``(0, 1]`` (``rho = 1`` gives zero variance).
    n_draws : int
        Mask draws per user (>= 2).

    Returns
    -------
    MaskVariance
    """
    rho = validate_rho(rho)
    if int(n_draws) != n_draws or n_draws < 2:
        raise ValueError(f"n_draws must be an integer >= 2 to estimate a variance, got {n_draws!r}")
    n = _check_history_matrix(X)
    traces, means = [], []
    for s in range(0, n, batch_size):
        batch = _dense_batch(X, np.arange(s, min(s + batch_size, n)), device)
        mean = m2 = None
        for t in range(1, int(n_draws) + 1):
            mu = _encode_batch(encode_mu, batch, rho, mode, generator)
            if mean is None:
                mean, m2 = mu.copy(), np.zeros_like(mu)
                continue
            delta = mu - mean
            mean += delta / t
            m2 += delta * (mu - mean)
        traces.append(m2.sum(axis=1) / (int(n_draws) - 1))
        means.append(mean)
    return MaskVariance(trace_var=np.concatenate(traces), mean_mu=np.concatenate(means), n_draws=int(n_draws))


def masked_knn_drift(
    encode_mu: Callable[[torch.Tensor], torch.Tensor],
    X: sp.spmatrix | sp.sparray | np.ndarray | torch.Tensor,
    rho: float,
    k: int,
    n_draws: int = 4,
    reference: Literal["clean", "draws"] = "clean",
    mode: MaskMode = "dropout",
    metric: Metric = "euclidean",
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Latent kNN instability under masking: mean drift (:func:`knn_drift`) per user.

    Each draw masks every user independently and takes the kNN of the masked means. ``reference="clean"``
    compares each draw's kNN with the clean-input kNN (``n_draws`` comparisons); ``reference="draws"``
    compares draws ``2j`` and ``2j + 1`` with each other (``n_draws // 2`` comparisons).

    Parameters
    ----------
    encode_mu, X, rho, mode, generator, batch_size, device
        As in :func:`encode_masked`.
    k : int
        Neighbours per user.
    n_draws : int
        Number of mask draws (>= 1; >= 2 for ``"draws"``).
    reference : {"clean", "draws"}
        What each masked neighbourhood is compared with.
    metric : {"l1", "cosine", "euclidean"}
        Latent distance between means.

    Returns
    -------
    numpy.ndarray of float64, shape (N,)
        Mean drift per user, in ``[0, 1]``.
    """
    if reference not in ("clean", "draws"):
        raise ValueError(f"reference must be 'clean' or 'draws', got {reference!r}")
    if int(n_draws) != n_draws or n_draws < (2 if reference == "draws" else 1):
        raise ValueError(f"n_draws must be a positive integer (>= 2 for reference='draws'), got {n_draws!r}")

    def neighbours(r: float) -> np.ndarray:
        Z = encode_masked(encode_mu, X, r, mode, generator, batch_size, device)
        return knn(Z, k, metric).indices

    drifts = []
    if reference == "clean":
        clean = neighbours(1.0)
        for _ in range(int(n_draws)):
            drifts.append(knn_drift(clean, neighbours(rho)))
    else:
        for _ in range(int(n_draws) // 2):
            drifts.append(knn_drift(neighbours(rho), neighbours(rho)))
    return np.mean(drifts, axis=0)


def neighbours_leaving(knn_a: KNNResult | np.ndarray, knn_b: KNNResult | np.ndarray) -> np.ndarray:
    """Share of each user's neighbours in ``knn_a`` that are not in ``knn_b``: ``1 - |A_u ∩ B_u| / |A_u|``.

    Unlike :func:`knn_drift` (one minus Jaccard) this reads as "the share of u's neighbours that leave".

    Parameters
    ----------
    knn_a, knn_b : KNNResult or array_like of int, shapes (Q, k_a) and (Q, k_b)
        Neighbour sets per user (same rows), entries distinct within a row.

    Returns
    -------
    numpy.ndarray of float64, shape (Q,)
    """
    inter, ka, _ = _intersections(knn_a, knn_b)
    return 1.0 - inter / ka


@dataclass(frozen=True)
class InputDrift:
    """Realised neighbourhood drift of binary histories when every user is masked independently.

    Attributes
    ----------
    queries : numpy.ndarray of int64, shape (Q,)
        The users whose neighbourhoods are followed.
    clean_to_masked : numpy.ndarray of float64, shape (Q,)
        Per user, mean over the mask draws of the share of u's clean L1 k nearest neighbours that are not
        among u's k nearest neighbours once every user is masked.
    masked_to_masked : numpy.ndarray of float64, shape (Q,) or None
        Per user, mean over pairs of consecutive independent draws of the share of u's masked k nearest
        neighbours (draw j) that leave in draw j + 1; None with a single draw.
    rho : float
    k : int
    n_draws : int
    """

    queries: np.ndarray
    clean_to_masked: np.ndarray
    masked_to_masked: np.ndarray | None
    rho: float
    k: int
    n_draws: int

    @staticmethod
    def _summary(values: np.ndarray, confidence: float) -> dict:
        mean, se, ci = mean_t_interval(values, confidence)
        return {"mean": mean, "se": se, "ci": list(ci), "n_users": int(values.size)}

    def summary(self, confidence: float = 0.95) -> dict:
        """Means with t intervals over users: one value per user (its draws averaged), so a user's draws are
        one cluster, not independent samples."""
        out = {"rho": self.rho, "k": self.k, "n_draws": self.n_draws}
        out["clean_to_masked"] = self._summary(self.clean_to_masked, confidence)
        if self.masked_to_masked is not None:
            out["masked_to_masked"] = self._summary(self.masked_to_masked, confidence)
        return out


def input_knn_drift(
    X: sp.spmatrix | sp.sparray,
    rho: float,
    k: int,
    queries: np.ndarray | list[int] | None = None,
    n_draws: int = 4,
    rng: np.random.Generator | int | None = None,
    block_size: int | None = None,
) -> InputDrift:
    r"""The realised drift of input-space neighbourhoods under independent masks (PAPER.md section 4).

    Draw ``j`` masks every user independently, :math:`\tilde x_w = x_w \odot b_w^{(j)}`,
    :math:`b_w^{(j)} \sim \mathrm{Bernoulli}(\rho)^I`, and takes each query's k nearest neighbours in L1 among
    the masked rows (:func:`knn`, ties towards the lower index). Reported per query user: the share of its
    clean neighbours that leave (:func:`neighbours_leaving`, averaged over draws), and the share of its masked
    neighbours of draw ``j`` that leave in draw ``j + 1``. This is the realised counterpart of the exact
    expansion probability :math:`\Pr[D'_{uv} \ge \delta_m]` of a near pair, which holds the radius fixed
    while here every other user's distance moves too.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Binary histories (every stored entry a positive).
    rho : float
        Keep probability in (0, 1]; ``rho = 1`` gives zero drift.
    k : int
        Neighbours per user.
    queries : array_like of int, optional
        Users to follow (default all); every user is masked and is a candidate neighbour.
    n_draws : int
        Independent mask draws (>= 1).
    rng : numpy.random.Generator or int, optional
    block_size : int, optional
        As in :func:`knn`.

    Returns
    -------
    InputDrift
    """
    rho = validate_rho(rho)
    if int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
    X = _binary_csr(X)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    clean = knn(X, k, "l1", queries=queries, block_size=block_size)
    from_clean, between = [], []
    previous = None
    for _ in range(int(n_draws)):
        masked = knn(mask_csr(X, rho, gen), k, "l1", queries=clean.queries, block_size=block_size)
        from_clean.append(neighbours_leaving(clean, masked))
        if previous is not None:
            between.append(neighbours_leaving(previous, masked))
        previous = masked
    return InputDrift(
        queries=clean.queries,
        clean_to_masked=np.mean(from_clean, axis=0),
        masked_to_masked=np.mean(between, axis=0) if between else None,
        rho=rho,
        k=int(k),
        n_draws=int(n_draws),
    )


@dataclass(frozen=True)
class GlobalTransfer:
    """Latent neighbours that are far in input space yet related.

    Attributes
    ----------
    transfer : numpy.ndarray, shape (Q,)
        Share of each user's k latent neighbours that are both far and related.
    far : numpy.ndarray of bool, shape (Q, k)
        Neighbour is far from the user in input space.
    related : numpy.ndarray of bool, shape (Q, k)
        Neighbour is related to the user (shared positives or same planted group).
    queries : numpy.ndarray of int64, shape (Q,)
    """

    transfer: np.ndarray
    far: np.ndarray
    related: np.ndarray
    queries: np.ndarray


def global_transfer(
    latent_knn: KNNResult | np.ndarray,
    X: sp.spmatrix | sp.sparray,
    groups: np.ndarray | None = None,
    far_threshold: float | np.ndarray | None = None,
    input_knn: KNNResult | np.ndarray | None = None,
    min_shared: int = 1,
) -> GlobalTransfer:
    """Share of a user's latent neighbours that are far in input space yet related (global transfer).

    For user ``u`` with latent neighbours ``N_z(u)`` (size k)::

        transfer(u) = |{v in N_z(u) : far(u, v) and related(u, v)}| / k

    * far: ``||x_u - x_v||_1 > far_threshold`` (scalar, or one threshold per query user), or, when
      ``input_knn`` is given instead, ``v`` is not among ``u``'s input-space neighbours;
    * related: ``|S_u ∩ S_v| >= min_shared`` (shared positives), or ``groups[u] == groups[v]`` when the
      planted groups of synthetic data are given.

    Parameters
    ----------
    latent_knn : KNNResult or array_like of int, shape (Q, k)
        Latent neighbours (rows for ``latent_knn.queries``, or for users ``0..Q-1`` when an array).
    X : scipy sparse matrix, shape (N, I)
        Binary input histories.
    groups : array_like, shape (N,), optional
        Planted group of each user.
    far_threshold : float or array_like of shape (Q,), optional
        L1 distance above which a neighbour is far. Exactly one of ``far_threshold`` and ``input_knn``.
    input_knn : KNNResult or array_like of int, shape (Q, k_in), optional
        Input-space neighbours of the same query users (e.g. ``knn(X, k_in, "l1")``).
    min_shared : int
        Shared positives that make two users related (when ``groups`` is not given).

    Returns
    -------
    GlobalTransfer
    """
    neighbours = _neighbour_array(latent_knn, "latent_knn")
    n_q, k = neighbours.shape
    if isinstance(latent_knn, KNNResult):
        queries = latent_knn.queries
    else:
        queries = np.arange(n_q, dtype=np.int64)
    if (far_threshold is None) == (input_knn is None):
        raise ValueError("give exactly one of far_threshold (an L1 distance) and input_knn (input neighbours)")
    u = np.repeat(queries, k)
    v = neighbours.ravel()
    overlap = pair_overlaps(X, u, v)
    if far_threshold is not None:
        thr = np.asarray(far_threshold, dtype=np.float64)
        if np.any(np.isnan(thr)) or thr.ndim > 1 or (thr.ndim == 1 and thr.shape[0] != n_q):
            raise ValueError("far_threshold must be a number or one number per query user (no NaN)")
        far = overlap.d.reshape(n_q, k) > (thr[:, None] if thr.ndim == 1 else thr)
    else:
        inp = _neighbour_array(input_knn, "input_knn")
        if inp.shape[0] != n_q:
            raise ValueError(f"input_knn must have one row per query user ({n_q}), got {inp.shape[0]}")
        n = X.shape[0]
        input_keys = (queries[:, None] * n + inp).ravel()
        far = ~np.isin(u * n + v, input_keys).reshape(n_q, k)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (X.shape[0],):
            raise ValueError(f"groups must have one entry per user ({X.shape[0]}), got shape {g.shape}")
        related = (g[u] == g[v]).reshape(n_q, k)
    else:
        if min_shared < 1:
            raise ValueError(f"min_shared must be >= 1, got {min_shared}")
        related = (overlap.c >= min_shared).reshape(n_q, k)
    transfer = (far & related).mean(axis=1)
    return GlobalTransfer(transfer=transfer, far=far, related=related, queries=queries)


def rank_threshold(
    X: sp.spmatrix | sp.sparray,
    k: int,
    rho: float | None = None,
    queries: np.ndarray | list[int] | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """Neighbourhood-rank sharing radius: the distance of each user's k-th nearest neighbour.

    * ``rho=None`` (clean space): ``delta_u`` = k-th smallest ``d_uv = |S_u Δ S_v|`` over ``v != u``.
    * ``rho`` given (masked space, in expectation): ``delta_u`` = k-th smallest
      ``E[D'_uv] = rho d_uv + 2 rho (1 - rho) c_uv = rho (|S_u| + |S_v|) - 2 rho^2 c_uv``, the radius of
      ``u``'s k nearest neighbours once masking has shrunk all distances on average. It is deterministic
      (no mask draw) and usually fractional; :func:`geometry.masking.contraction_probability` floors it.

    Then ``contraction_probability(d_uv, c_uv, rho, delta_u)`` is the probability that ``v`` falls within
    ``u``'s (clean or masked) k-neighbourhood radius.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Binary histories.
    k : int
        Neighbour rank, ``1 <= k <= N - 1``.
    rho : float, optional
        Keep probability for the masked-space radius.
    queries, block_size
        As in :func:`knn`.

    Returns
    -------
    numpy.ndarray of float64, shape (Q,)
    """
    if not sp.issparse(X):
        raise ValueError(f"X must be a scipy sparse matrix of binary histories, got {type(X).__name__}")
    dist = _Distances(X, "l1")
    q = _queries(queries, dist.n)
    size = _block_size(dist.n, block_size)
    if rho is None:
        block_fn = dist.block
    else:
        r = validate_rho(rho)

        def block_fn(rows: np.ndarray) -> np.ndarray:
            return r * (dist.sizes[rows, None] + dist.sizes[None, :]) - 2.0 * r * r * dist.gram(rows)

    return _knn_from_blocks(block_fn, dist.n, int(k), q, size).distances[:, -1]
