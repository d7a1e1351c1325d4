"""Student-t interval of a mean, the one every estimator of the toolkit reports over independent units."""

from __future__ import annotations

import math

import numpy as np

from models.lazy import lazy_import

stats = lazy_import("scipy.stats")


def mean_t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """Mean of ``values`` (independent units: users, anchors or seeds), its standard error and Student-t interval.

    ``se = std(values, ddof=1) / sqrt(n)`` and ``mean -+ t_{(1+confidence)/2, n-1} se``; with ``n = 1`` the
    standard error and the interval are NaN.

    Parameters
    ----------
    values : array_like, shape (n,), n >= 1
    confidence : float in (0, 1)

    Returns
    -------
    mean, se : float
    ci : tuple of float
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_t_interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = v.size
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, (math.nan, math.nan)
    se = float(v.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return mean, se, (mean - half, mean + half)
