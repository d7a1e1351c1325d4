r"""Is a label recoverable from latent codes? Cross-validated probes with a permutation null (PAPER.md section 7).

The paper's cohort claim is that clean inputs *separate* activity cohorts in latent space and masking
*entangles* them. A silhouette measures cluster shape, not separability; the statistic that matches the claim is
how well a simple classifier recovers the cohort label from the latent means of users it was not fitted on:

.. math::
    \mathrm{acc} = \frac1N \sum_u \mathbb 1\{\hat y_{-f(u)}(z_u) = y_u\},

where :math:`\hat y_{-f}` is fitted on every fold but u's (stratified K-fold). Two probes: ``"logistic"``
(multinomial logistic regression on standardised codes: linear separability) and ``"knn"`` (majority of the k
nearest training codes, Euclidean: local separability).

Uncertainty and the null: a Wilson interval over users for the accuracy, and a permutation test of "the label
carries no information": the same cross-validation on ``n_permutations`` random relabellings (label counts
kept), :math:`p = (1 + \#\{\mathrm{acc}_\pi \ge \mathrm{acc}\}) / (1 + n_\pi)`. The verdict is ``"separated"``
when :math:`p \le \alpha`, else ``"inconclusive"``: a null (labels unrelated to codes) says ``"separated"`` at rate
at most :math:`\alpha`. :func:`paired_accuracy_difference` compares two conditions on the same users (paired per
user, e.g. clean minus masked: entanglement).

Reference: Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026, figure of
section 7; Ojala and Garriga, "Permutation tests for studying classifier performance", JMLR 2010.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from geometry.intervals import mean_t_interval
from models.lazy import lazy_import

stats = lazy_import("scipy.stats")

Probe = Literal["logistic", "knn"]

__all__ = ["PairedDifference", "ProbeResult", "paired_accuracy_difference", "probe_accuracy"]


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated probe accuracy of a label from codes.

    Attributes
    ----------
    probe : {"logistic", "knn"}
    accuracy : float
        Share of users whose out-of-fold prediction is their label.
    ci : tuple of float
        Wilson interval of the accuracy over users at ``confidence``.
    chance : float
        Share of the most frequent label (what predicting it for everyone scores).
    p_value : float
        Permutation p-value of "labels carry no information about the codes".
    verdict : {"separated", "inconclusive"}
        ``"separated"`` when ``p_value <= alpha`` (a valid level-alpha test: ``P(p <= alpha) <= alpha`` under the null).
    correct : numpy.ndarray of bool, shape (N,)
        Per user: out-of-fold prediction correct (for paired comparisons).
    n_permutations, folds, alpha, confidence
    """

    probe: str
    accuracy: float
    ci: tuple[float, float]
    chance: float
    p_value: float
    verdict: str
    correct: np.ndarray
    n_permutations: int
    folds: int
    alpha: float
    confidence: float

    def to_dict(self) -> dict:
        return {
            "probe": self.probe,
            "accuracy": self.accuracy,
            "ci": list(self.ci),
            "chance": self.chance,
            "p_value": self.p_value,
            "verdict": self.verdict,
            "n_users": int(self.correct.size),
            "n_permutations": self.n_permutations,
            "folds": self.folds,
            "alpha": self.alpha,
            "rule": f"separated if the permutation p-value <= {self.alpha:g} ({self.n_permutations} relabellings)",
        }


def _wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _out_of_fold(Z: np.ndarray, probe: Probe, folds: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``labels -> per-user correctness`` of out-of-fold predictions (models fitted on the other folds).

    The kNN probe depends on the labels only through the neighbours' votes, so each user's k nearest codes in the
    other folds are found once (ties towards the lower index) and every relabelling of the permutation test is one
    vectorised vote; ties between labels go to the smallest label. The logistic probe is refitted per labelling.
    """
    if probe == "knn":
        from scipy.spatial.distance import cdist

        D = cdist(Z, Z)
        D[folds[:, None] == folds[None, :]] = np.inf  # a user's own fold (itself included) is not training data
        order = np.argsort(D, axis=1, kind="stable")
        nbr = order[:, : min(k, int(np.isfinite(D).sum(axis=1).min()))]

        def knn_correct(y: np.ndarray) -> np.ndarray:
            values, codes = np.unique(y, return_inverse=True)
            votes = np.zeros((y.size, values.size), dtype=np.int64)
            np.add.at(votes, (np.repeat(np.arange(y.size), nbr.shape[1]), codes[nbr].ravel()), 1)
            return votes.argmax(axis=1) == codes

        return knn_correct

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logistic_correct(y: np.ndarray) -> np.ndarray:
        correct = np.zeros(y.size, dtype=bool)
        for f in np.unique(folds):
            test = folds == f
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            model.fit(Z[~test], y[~test])
            correct[test] = model.predict(Z[test]) == y[test]
        return correct

    return logistic_correct


def _stratified_folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    folds = np.empty(y.size, dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        folds[rng.permutation(idx)] = np.arange(idx.size) % n_folds
    return folds


def probe_accuracy(
    Z: np.ndarray,
    labels: np.ndarray,
    *,
    probe: Probe = "logistic",
    folds: int = 5,
    k: int = 10,
    n_permutations: int = 99,
    alpha: float = 0.05,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> ProbeResult:
    """Cross-validated accuracy of ``labels`` from codes ``Z``, with a Wilson interval and a permutation test.

    Parameters
    ----------
    Z : array_like, shape (N, d)
        Codes (e.g. posterior means), one row per user.
    labels : array_like, shape (N,)
        Labels (e.g. activity cohorts); at least two, each with at least ``folds`` users.
    probe : {"logistic", "knn"}
    folds : int
        Stratified folds (>= 2); the same folds for the data and every relabelling.
    k : int
        Neighbours of the kNN probe.
    n_permutations : int
        Relabellings of the permutation test (>= 1; the smallest attainable p is ``1 / (1 + n)``).
    alpha, confidence : float in (0, 1)
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    ProbeResult
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(labels)
    if Z.ndim != 2 or y.shape != (Z.shape[0],):
        raise ValueError(f"Z must be (N, d) and labels (N,); got {Z.shape} and {y.shape}")
    if not np.isfinite(Z).all():
        raise ValueError("Z holds NaN or infinite values")
    if probe not in ("logistic", "knn"):
        raise ValueError(f"probe must be 'logistic' or 'knn', got {probe!r}")
    values, counts = np.unique(y, return_counts=True)
    if values.size < 2 or counts.min() < folds or folds < 2:
        raise ValueError(f"need >= 2 labels with >= folds (= {folds} >= 2) users each; got counts {counts.tolist()}")
    if n_permutations < 1 or not 0 < alpha < 1 or not 0 < confidence < 1:
        raise ValueError("n_permutations must be >= 1 and alpha, confidence in (0, 1)")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    fold_of = _stratified_folds(y, folds, gen)
    score = _out_of_fold(Z, probe, fold_of, k)
    correct = score(y)
    acc = float(correct.mean())
    null = np.array([score(gen.permutation(y)).mean() for _ in range(n_permutations)])
    p = float((1 + np.sum(null >= acc - 1e-12)) / (1 + n_permutations))
    return ProbeResult(
        probe=probe,
        accuracy=acc,
        ci=_wilson(int(correct.sum()), y.size, confidence),
        chance=float(counts.max() / y.size),
        p_value=p,
        verdict="separated" if p <= alpha else "inconclusive",
        correct=correct,
        n_permutations=int(n_permutations),
        folds=int(folds),
        alpha=float(alpha),
        confidence=float(confidence),
    )


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-user difference of two conditions' correctness (a - b) with a t interval over users."""

    mean: float
    se: float
    ci: tuple[float, float]
    n_users: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "se": self.se, "ci": list(self.ci), "n_users": self.n_users}


def paired_accuracy_difference(a: ProbeResult, b: ProbeResult, confidence: float = 0.95) -> PairedDifference:
    """``acc(a) - acc(b)`` on the same users, paired per user: the SE of the mean of ``1[a_u] - 1[b_u]``.

    Positive: condition ``a`` recovers the label better (e.g. clean minus masked > 0: masking entangles).
    """
    if a.correct.shape != b.correct.shape:
        raise ValueError(f"the two probes must score the same users; got {a.correct.size} and {b.correct.size}")
    diff = a.correct.astype(np.float64) - b.correct.astype(np.float64)
    mean, se, ci = mean_t_interval(diff, confidence)
    return PairedDifference(mean, se, ci, diff.size)
