"""Alignment of posterior means with the centroid of the user's item anchors (PIA, Proposition 3.1).

PIA's alignment term (PAPER.md section 6) is, in closed form,

    L_A(x_h, x) = ||mu(x_h) - ebar_x||^2 + tr Sigma(x_h) + (1 / |S_x|) sum_{i in S_x} ||e_i - ebar_x||^2,

    ebar_x = (1 / |S_x|) sum_{i in S_x} e_i,

so minimising it pulls the posterior mean toward the centroid of the anchors of the user's own items. Whether a
trained model shows this is measured against a null that keeps everything but the pairing: the distance of
``mu_u`` to its own centroid ``ebar_u`` against the distance to the centroid ``ebar_{pi(u)}`` of another user
(``pi`` a random permutation without fixed points). If the means were unrelated to the anchors, the two would
have the same distribution, so the paired difference would be 0 in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.intervals import mean_t_interval
from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")


@dataclass(frozen=True)
class CentroidAlignment:
    """Paired comparison ``||mu_u - ebar_u|| - ||mu_u - ebar_{pi(u)}||`` over users.

    Attributes
    ----------
    own, other : numpy.ndarray, shape (n,)
        Distance of each user's mean to its own anchor centroid and to another user's.
    mean, se : float
        Mean of ``own - other`` and its standard error (users independent; ``ddof = 1``).
    ci : tuple of float
        Student-t interval at ``confidence``.
    confidence : float
    """

    own: np.ndarray
    other: np.ndarray
    mean: float
    se: float
    ci: tuple[float, float]
    confidence: float

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "se": self.se,
            "ci": list(self.ci),
            "confidence": self.confidence,
            "n_users": int(self.own.size),
            "own": float(self.own.mean()),
            "other": float(self.other.mean()),
            "relative": float(self.own.mean() / self.other.mean()) if self.other.mean() > 0 else None,
        }


def anchor_centroids(X: sp.spmatrix, anchors: np.ndarray) -> np.ndarray:
    """``ebar_u = (1 / |S_u|) sum_{i in S_u} e_i`` for every row of the binary matrix ``X``.

    Parameters
    ----------
    X : scipy.sparse matrix, shape (n, I)
        Interactions (any stored value counts as a positive).
    anchors : numpy.ndarray, shape (I, d)

    Returns
    -------
    numpy.ndarray, shape (n, d)

    Raises
    ------
    ValueError
        Shapes that do not match, or a row without positives (its centroid is undefined).
    """
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    E = np.asarray(anchors, dtype=np.float64)
    if E.ndim != 2 or X.shape[1] != E.shape[0]:
        raise ValueError(f"anchors of shape {E.shape} do not fit {X.shape[1]} items")
    X.data[:] = 1.0
    counts = np.diff(X.indptr)
    if np.any(counts == 0):
        raise ValueError(f"{int(np.sum(counts == 0))} row(s) without positives: no anchor centroid")
    return np.asarray(X @ E) / counts[:, None]


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` followed by a cyclic shift of its order: ``pi(u) != u``
    for every ``u`` (n >= 2)."""
    if n < 2:
        raise ValueError(f"a permutation without fixed points needs n >= 2, got {n}")
    order = rng.permutation(n)
    pi = np.empty(n, dtype=np.int64)
    pi[order] = np.roll(order, -1)
    return pi


def centroid_alignment(
    mu: np.ndarray,
    X: sp.spmatrix,
    anchors: np.ndarray,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> CentroidAlignment:
    """Distance of posterior means to their own anchor centroid against another user's (Proposition 3.1).

    Parameters
    ----------
    mu : numpy.ndarray, shape (n, d)
        Posterior means of the users (clean input).
    X : scipy.sparse matrix, shape (n, I)
        The same users' positives (the full history ``S_u``).
    anchors : numpy.ndarray, shape (I, d)
        The trained PIA anchors ``e_i``.
    rng : numpy.random.Generator
        Draws the permutation ``pi``.
    confidence : float in (0, 1)

    Returns
    -------
    CentroidAlignment
        ``mean < 0`` (interval below 0) when means sit closer to their own items' centroid than to others'.
    """
    mu = np.asarray(mu, dtype=np.float64)
    ebar = anchor_centroids(X, anchors)
    if mu.shape != ebar.shape:
        raise ValueError(f"mu of shape {mu.shape} does not match {ebar.shape} (users x latent)")
    pi = derangement(mu.shape[0], rng)
    own = np.linalg.norm(mu - ebar, axis=1)
    other = np.linalg.norm(mu - ebar[pi], axis=1)
    mean, se, ci = mean_t_interval(own - other, confidence)
    return CentroidAlignment(own, other, mean, se, ci, confidence)
