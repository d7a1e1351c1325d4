"""WMF (Hu, Koren and Volinsky 2008): weighted matrix factorisation by alternating least squares, with
strong-generalization fold-in as Liang et al. (2018) ran it.

Training users only fit the item factors ``Y`` (``implicit``'s ALS on the CPU, exact Cholesky solves: confidence
``c_ui = 1 + alpha x_ui``, preference ``p_ui = 1[x_ui > 0]``, L2 weight ``lambda`` on both factor matrices;
``implicit`` takes the confidence of a positive as the matrix value, so it is given ``1 + alpha`` there with its
own ``alpha`` at 1). A held-out user is never seen in
training: their factor is one closed-form ALS solve on their fold-in items with ``Y`` fixed,

    u = (Y^T C_u Y + lambda I)^{-1} Y^T C_u p_u,   Y^T C_u Y = Y^T Y + alpha sum_{i in S_u} y_i y_i^T,

and their scores are ``u Y^T`` over every item (the evaluation masks the fold-in items). ``factors``,
``regularization`` and ``alpha`` are chosen on validation NDCG@100 (:func:`select_wmf`).

Reference: Y. Hu, Y. Koren, C. Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.evaluation import evaluate
from models.lazy import lazy_import
from models.split import Split

sp = lazy_import("scipy.sparse")

WMF_FACTORS = (100, 200)
WMF_REGULARIZATIONS = (0.01, 0.1, 1.0)
WMF_ALPHAS = (1.0, 10.0, 50.0)
WMF_ITERATIONS = 15
SELECTION_METRIC = "ndcg@100"


@dataclass
class WMF:
    """Item factors ``Y`` (I x k) fitted on the training users, and the ALS model that folds users in."""

    model: object  # implicit.cpu.als.AlternatingLeastSquares
    factors: int
    regularization: float
    alpha: float

    @classmethod
    def fit(
        cls,
        train: sp.csr_matrix,
        factors: int = 100,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = WMF_ITERATIONS,
        seed: int = 0,
    ) -> WMF:
        """ALS on the binary training matrix (users x items); ``seed`` fixes the factors' initialisation."""
        from implicit.cpu.als import AlternatingLeastSquares

        if not (factors >= 1 and regularization >= 0 and alpha > 0 and iterations >= 1):
            raise ValueError(
                f"WMF needs factors >= 1, regularization >= 0, alpha > 0 and iterations >= 1; got {factors}, "
                f"{regularization}, {alpha}, {iterations}"
            )
        with one_blas_thread():  # implicit checks the BLAS threads when the model is made
            model = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=1.0,  # the confidences are the matrix values (_confidence)
                iterations=iterations,
                random_state=seed,
                use_cg=False,  # the exact Cholesky solve for every user and item, as the paper's ALS
            )
            model.fit(_confidence(train, alpha), show_progress=False)
        return cls(model, factors, regularization, alpha)

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.model.item_factors)

    def fold_in(self, fold_in: sp.csr_matrix) -> np.ndarray:
        """User factors (n x k) of new users: one closed-form ALS solve each on their fold-in items, ``Y`` fixed."""
        rows = _confidence(fold_in, self.alpha)
        with one_blas_thread():
            return np.asarray(self.model.recalculate_user(np.arange(rows.shape[0]), rows))

    def score(self, fold_in: sp.csr_matrix) -> np.ndarray:
        """Scores (n x I) of held-out users from their fold-in rows."""
        return self.fold_in(fold_in) @ self.item_factors.T


def _confidence(x: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """``c_ui = 1 + alpha`` on every stored positive of ``x`` (binarised), as ``implicit`` reads confidences."""
    out = sp.csr_matrix(x, dtype=np.float32, copy=True)
    out.data[:] = 1.0 + alpha
    return out


def one_blas_thread():
    """``implicit`` runs its own threads over users; a BLAS thread pool inside each would oversubscribe the cores
    (``implicit`` warns), so BLAS gets one thread while it runs."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


def search_settings(
    split: Split, settings: Sequence[dict], fit: Callable[..., Any], *, batch_size: int = 1000, progress: bool = False
) -> tuple[Any, dict]:
    """Fit ``fit(**setting)`` for every setting, score each on the validation users, keep the best NDCG@100.

    Returns the chosen model and ``{"best": setting, "grid": [{**setting, "validation": summary}, ...]}``.
    """
    if not settings:
        raise ValueError("the grid is empty; give at least one value of each searched option")
    best, best_value, chosen, rows = None, -np.inf, None, []
    for setting in settings:
        start = time.perf_counter()
        model = fit(**setting)
        summary = evaluate(model.score, split.validation, batch_size=batch_size).summary()
        value = summary[SELECTION_METRIC]["mean"]
        rows.append({**setting, "validation": summary})
        if progress:
            shown = ", ".join(f"{k} {v:g}" for k, v in setting.items())
            print(
                f"  {shown}: validation {SELECTION_METRIC} {value:.4f} ({time.perf_counter() - start:.1f} s)",
                file=sys.stderr,
            )
        if value > best_value:
            best, best_value, chosen = model, value, setting
    return best, {"best": dict(chosen), "grid": rows}


def select_wmf(
    split: Split,
    factors: Sequence[int] = WMF_FACTORS,
    regularizations: Sequence[float] = WMF_REGULARIZATIONS,
    alphas: Sequence[float] = WMF_ALPHAS,
    *,
    iterations: int = WMF_ITERATIONS,
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = False,
) -> tuple[WMF, dict]:
    """Fit WMF for every (factors, regularization, alpha) of the grid; keep the best validation NDCG@100
    (:func:`search_settings`)."""
    settings = [
        {"factors": int(k), "regularization": float(r), "alpha": float(a)}
        for k, r, a in itertools.product(factors, regularizations, alphas)
    ]

    def fit(factors: int, regularization: float, alpha: float) -> WMF:
        return WMF.fit(split.train, factors, regularization, alpha, iterations=iterations, seed=seed)

    return search_settings(split, settings, fit, batch_size=batch_size, progress=progress)
