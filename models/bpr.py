"""BPR-MF (Rendle et al. 2009): matrix factorisation trained with Bayesian personalised ranking, with
strong-generalization fold-in. The paper's "MF" row.

Which MF: the results table's MF row is a factorisation of the binary matrix; BPR-MF is the ranking-loss MF
that strong-generalization reproductions run beside WMF (the squared-loss one, :mod:`models.wmf`), and the two
together cover both losses. Training users fit the item factors ``y_i`` and biases ``b_i`` (``implicit``'s BPR on
the CPU: for sampled triples ``(u, i in S_u, j not in S_u)``, ascend ``log sigmoid(x_ui - x_uj)`` with L2
weight ``lambda``, ``x_ui = w_u . y_i + b_i``).

Fold-in (no closed form exists for BPR): a held-out user's vector ``w_u`` starts at 0 and takes
``fold_in_steps`` stochastic gradient steps of the same objective on their fold-in items, the item factors and
biases frozen: per step one positive ``i`` drawn from the fold-in items and one item ``j`` drawn uniformly (a
draw that is itself a positive is skipped), ``w_u += lr (sigmoid(-(x_ui - x_uj)) (y_i - y_j) - lambda w_u)``. All
users of a batch step together (vectorised); a user with no fold-in item keeps ``w_u = 0``, ranked by the item
biases. The steps and their rate are options (:class:`BPRMF`), documented in the results JSON.

Training runs on one thread, so that a seed fixes the factors (implicit's several-thread SGD is lock-free and its
result depends on how the threads interleave).

Reference: S. Rendle, C. Freudenthaler, Z. Gantner, L. Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.lazy import lazy_import
from models.split import Split
from models.wmf import one_blas_thread, search_settings

sp = lazy_import("scipy.sparse")
special = lazy_import("scipy.special")

BPR_FACTORS = (100, 200)
BPR_REGULARIZATIONS = (0.001, 0.01, 0.1)
BPR_LEARNING_RATE = 0.01
BPR_ITERATIONS = 100
FOLD_IN_STEPS = 200
FOLD_IN_LR = 0.05


@dataclass
class BPRMF:
    """Item factors and biases fitted on the training users, and the fold-in of new users (module docstring)."""

    model: object  # implicit.cpu.bpr.BayesianPersonalizedRanking
    factors: int
    regularization: float
    fold_in_steps: int = FOLD_IN_STEPS
    fold_in_lr: float = FOLD_IN_LR
    seed: int = 0

    @classmethod
    def fit(
        cls,
        train: sp.csr_matrix,
        factors: int = 100,
        regularization: float = 0.01,
        *,
        learning_rate: float = BPR_LEARNING_RATE,
        iterations: int = BPR_ITERATIONS,
        seed: int = 0,
        fold_in_steps: int = FOLD_IN_STEPS,
        fold_in_lr: float = FOLD_IN_LR,
    ) -> BPRMF:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        if not (factors >= 1 and regularization >= 0 and learning_rate > 0 and iterations >= 1):
            raise ValueError(
                f"BPR needs factors >= 1, regularization >= 0, learning rate > 0 and iterations >= 1; got {factors}, "
                f"{regularization}, {learning_rate}, {iterations}"
            )
        if fold_in_steps < 0 or not fold_in_lr > 0:
            raise ValueError(f"the fold-in needs steps >= 0 and a rate > 0, got {fold_in_steps} and {fold_in_lr}")
        binary = sp.csr_matrix(train, dtype=np.float32, copy=True)
        binary.data[:] = 1.0
        with one_blas_thread():
            model = BayesianPersonalizedRanking(
                factors=factors,
                learning_rate=learning_rate,
                regularization=regularization,
                iterations=iterations,
                random_state=seed,
                # one thread: with several, implicit's lock-free (Hogwild) updates interleave in a different order on
                # every run, so the seed would not fix the factors (measured: two fits differed)
                num_threads=1,
            )
            model.fit(binary, show_progress=False)
        return cls(model, factors, regularization, fold_in_steps, fold_in_lr, seed)

    def item_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Y, b)``: the item factors (I x k) and biases (I,) (``implicit`` keeps the bias as a last column)."""
        full = np.asarray(self.model.item_factors, dtype=np.float64)
        return full[:, : self.factors], full[:, self.factors]

    def fold_in(self, fold_in: sp.csr_matrix) -> np.ndarray:
        """User vectors ``w_u`` (n x k) of new users by SGD on their fold-in items, items frozen (module docstring)."""
        rows = sp.csr_matrix(fold_in)
        y, b = self.item_parts()
        n, n_items = rows.shape[0], y.shape[0]
        w = np.zeros((n, self.factors))
        counts = np.diff(rows.indptr)
        active = np.flatnonzero(counts > 0)
        if active.size == 0 or self.fold_in_steps == 0:
            return w
        rng = np.random.default_rng([self.seed, n, int(rows.nnz)])
        positives = rows.copy()
        positives.data = np.ones_like(positives.data, dtype=bool)
        for _ in range(self.fold_in_steps):
            pick = rows.indptr[active] + (rng.random(active.size) * counts[active]).astype(np.int64)
            i = rows.indices[pick]
            j = rng.integers(0, n_items, size=active.size)
            real = ~np.asarray(positives[active, j]).ravel()  # skip a "negative" that is a positive
            diff = y[i] - y[j]
            x = np.einsum("nk,nk->n", w[active], diff) + b[i] - b[j]
            grad = (real * special.expit(-x))[:, None] * diff - self.regularization * w[active]
            w[active] += self.fold_in_lr * grad
        return w

    def score(self, fold_in: sp.csr_matrix) -> np.ndarray:
        """Scores (n x I) ``w_u . y_i + b_i`` of held-out users from their fold-in rows."""
        y, b = self.item_parts()
        return (self.fold_in(fold_in) @ y.T + b).astype(np.float32)


def select_bpr(
    split: Split,
    factors: Sequence[int] = BPR_FACTORS,
    regularizations: Sequence[float] = BPR_REGULARIZATIONS,
    *,
    learning_rate: float = BPR_LEARNING_RATE,
    iterations: int = BPR_ITERATIONS,
    seed: int = 0,
    fold_in_steps: int = FOLD_IN_STEPS,
    fold_in_lr: float = FOLD_IN_LR,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple[BPRMF, dict]:
    """Fit BPR-MF for every (factors, regularization) of the grid; keep the best validation NDCG@100
    (:func:`models.wmf.search_settings`)."""
    settings = [{"factors": int(k), "regularization": float(r)} for k, r in itertools.product(factors, regularizations)]

    def fit(factors: int, regularization: float) -> BPRMF:
        return BPRMF.fit(
            split.train,
            factors,
            regularization,
            learning_rate=learning_rate,
            iterations=iterations,
            seed=seed,
            fold_in_steps=fold_in_steps,
            fold_in_lr=fold_in_lr,
        )

    return search_settings(split, settings, fit, batch_size=batch_size, progress=progress)
