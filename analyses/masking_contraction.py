"""Masking contracts and expands user distances (Theorem 2.6): exact law against Monte Carlo on real rows.

Usage::

    python -m analyses.masking_contraction --rho 0.5                       # ML-1M, fetched on first use
    python -m analyses.masking_contraction --rho 0.3 0.5 0.8 --dataset synthetic --delta relative:1

With independent masks ``b_u, b_v ~ Bernoulli(rho)^I`` (``rho`` = keep probability), ``d = |S_u Δ S_v|`` and
``c = |S_u ∩ S_v|``, the masked distance is exactly (PAPER.md section 4)

    D' = ||x_u ⊙ b_u - x_v ⊙ b_v||_1 ~ Binomial(d, rho) + Binomial(c, 2 rho (1 - rho)),
    E[D'] = rho d + 2 rho (1 - rho) c,   E[D'] > d  <=>  c / d > 1 / (2 rho)  (rho < 1).

Pairs (training users of the split, L1 distance on the binary rows), ``--pairs`` per stratum:

* **near**: anchor ``u`` drawn uniformly (without replacement), ``v`` uniform among u's ``k`` nearest
  neighbours (``geometry.neighbourhoods.knn``, ties towards the lower row);
* **far**: ``v`` uniform among the users beyond u's median distance (``d_uv > median_w d_uw``) and outside
  u's kNN;
* **far-related**: far as above **and** sharing at least ``max(--min-shared, median overlap of u with its k
  nearest neighbours)`` positives with ``u``: a far user that shares as many items with ``u`` as u's own
  neighbours do. Anchors without such a user give no pair;
* **planted** (synthetic data only): the generator's far-but-related pairs (same taste group, at most one
  shared item, distance above the same-group median) whose two users are training users.

Thresholds (``--delta``) of pair ``(u, v)`` and their masked-neighbourhood counterparts (masking shrinks all
distances on average, so a fixed radius alone overstates contraction):

=============  ====================================  ==============================================
``--delta``    clean threshold ``delta``             masked-neighbourhood threshold ``delta_m``
=============  ====================================  ==============================================
``rank``       u's k-th nearest-neighbour distance    k-th smallest ``E[D'_uw]`` over all ``w != u``
               (``rank_threshold(X, k)``)             (``rank_threshold(X, k, rho)``)
``relative:R`` ``R d``                                ``R rho d`` (``E[D']`` of a pair without overlap)
number         that distance                          ``rho`` times it
=============  ====================================  ==============================================

For every pair and rho: exact ``Pr[D' <= delta]`` (contraction), ``Pr[D' >= delta]`` (expansion, ties
``D' = delta`` included) and ``Pr[D' > delta]`` (strict expansion, ``p_expansion_strict``) for both thresholds.
Ties matter: near pairs have ``d <= delta`` (the anchor's k-th neighbour has ``d = delta``), so at ``rho = 1``
(no masking, ``D' = d``) ``Pr[D' >= delta]`` is the share of near pairs with ``d = delta``, not expansion; the
strict ``Pr[D' > delta]`` is 0 there and is the expansion the figures show (summary.json ``delta`` says which
inequality each column uses). Also their Hoeffding lower bounds, and for the first ``--mc-pairs`` pairs of each
stratum a Monte Carlo
estimate that masks the real CSR rows ``--mc-draws`` times (``geometry.masking.monte_carlo_probabilities``)
with 95% Wilson intervals. Outputs (folder printed at the end, default
``out/masking_contraction/DATASET-rhoR[-quick]-HASH``, HASH naming every option that changes the results, see
:mod:`analyses.common`; ``--quick`` runs on synthetic data unless ``--dataset`` is given):
``summary.csv`` (stratum x rho table), ``pairs.csv`` (one row per pair and rho), ``curves.csv`` (mean
probabilities per stratum on a rho grid), ``contraction_bins.csv`` (mean contraction probability in bins of
``d / r_k(u)`` with Wilson intervals over anchors, :data:`CONTRACTION_BINS_RULE`), ``summary.json`` (arguments,
dataset, split cache, table, typical pairs and their rule :data:`TYPICAL_PAIR_RULE`, timing) and the figures
``masked_distance_pmf``, ``probability_vs_rho`` and ``contraction_vs_distance`` (PNG and PDF).

Reference: Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026,
Theorem 2.6.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyses.common import (
    JobError,
    add_job_arguments,
    binary,
    check_int,
    check_seed,
    default_out_dir,
    format_table,
    job_dataset,
    job_parser,
    load_job_split,
    option_sizes,
    parsed_arguments,
    planted_labels,
    print_done,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_csv,
)
from figures.masking import (
    TypicalPair,
    contraction_binned_figure,
    masked_distance_pmf_figure,
    probability_curves_figure,
)
from figures.style import savefig
from geometry.masking import (
    contraction_probability,
    expansion_probability,
    hoeffding_contraction_bound,
    hoeffding_expansion_bound,
    masked_distance_moments,
    masked_distance_pmf,
    monte_carlo_probabilities,
    pair_overlaps,
    relative_threshold,
    validate_rho,
)
from geometry.neighbourhoods import KNNResult, input_knn_drift, knn
from models.cli import end_process
from models.data import add_dataset_arguments
from models.lazy import lazy_import

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")

JOB = "masking_contraction"
STRATA = ("near", "far", "far-related", "planted")
DEFAULTS = {"pairs": 2000, "mc_pairs": 300, "mc_draws": 1000, "grid": 20, "drift_draws": 4}
QUICK = {"pairs": 120, "mc_pairs": 40, "mc_draws": 200, "grid": 8, "drift_draws": 2}
PROBABILITIES = ("p_contraction", "p_expansion", "p_contraction_masked", "p_expansion_masked")
# Strict expansion Pr[D' > delta]: without ties D' = delta. Near pairs have d <= delta (the k-th neighbour has
# d = delta), so at rho = 1 Pr[D' >= delta] is the share of ties, not expansion; Pr[D' > delta] is 0 there.
STRICT = ("p_expansion_strict", "p_expansion_masked_strict")
TYPICAL_PAIR_RULE = (
    "per stratum the pair whose d and c are jointly nearest the stratum's medians in rank terms: minimise "
    "max(|F_d(d) - 1/2|, |F_c(c) - 1/2|), F the stratum's mid-distribution function (share below plus half the "
    "share equal), ties broken by the sum of squares of the same gaps, then by the first such pair; a pair with "
    "both d and c between the stratum's quartiles is chosen whenever one exists"
)
CONTRACTION_BINS_RULE = (
    "pairs binned by d / r_k(u), r_k(u) = the anchor's k-NN distance, per rho and stratum at quantiles of the "
    "stratum's ratios (up to 8 bins of about 15 pairs or more, tied edges merged; bins (low, high], the first one "
    "holding the smallest value); per bin the mean exact Pr[D' <= delta] and a 95% Wilson score interval "
    "with n = Kish's effective number of anchors (sum m)^2 / sum m^2 over the bin's anchors (m pairs each): "
    "conservative, as a value in [0, 1] with mean p has variance at most p (1 - p) and pairs of one anchor count "
    "as one; pairs whose anchor has r_k = 0 have no ratio and are left out (counted)"
)
CONTRACTION_BINS = 8  # most bins per stratum and rho
CONTRACTION_BIN_PAIRS = 15  # fewer bins when a stratum has under 15 pairs per bin
# Elements of one anchor-block x users distance block (float64: 16 MiB per working array).
_BLOCK_ELEMENTS = 1 << 21

COLUMN_NOTES = {
    "pairs": "number of sampled pairs (u, v) in the stratum",
    "mean_d": "mean clean distance d = |S_u Δ S_v|",
    "mean_c": "mean overlap c = |S_u ∩ S_v|",
    "share_expected_expansion": "share of pairs with E[D'] > d, i.e. c/d > 1/(2 rho): masking pushes them apart "
    "on average",
    "mean_expected_distance": "mean E[D'] = rho d + 2 rho (1 - rho) c",
    "mean_delta": "mean clean threshold delta",
    "mean_delta_masked": "mean masked-neighbourhood threshold delta_m",
    "p_contraction": "mean exact Pr[D' <= delta]: masking brings v within u's radius",
    "p_expansion": "mean exact Pr[D' >= delta]: masking puts v at or beyond u's radius (ties D' = delta count: "
    "near pairs with d = delta give it at rho = 1, without masking)",
    "p_expansion_strict": "mean exact Pr[D' > delta]: masking puts v beyond u's radius (strict: 0 for near pairs "
    "at rho = 1; the expansion shown in the figures)",
    "p_contraction_masked": "mean exact Pr[D' <= delta_m], against u's masked neighbourhood",
    "p_expansion_masked": "mean exact Pr[D' >= delta_m] (ties D' = delta_m count)",
    "p_expansion_masked_strict": "mean exact Pr[D' > delta_m]",
    "hoeffding_contraction": "mean Hoeffding lower bound on Pr[D' <= delta] (0 = vacuous)",
    "hoeffding_expansion": "mean Hoeffding lower bound on Pr[D' >= delta] (0 = vacuous)",
    "hoeffding_contraction_masked": "mean Hoeffding lower bound on Pr[D' <= delta_m]",
    "hoeffding_expansion_masked": "mean Hoeffding lower bound on Pr[D' >= delta_m]",
    "mc_pairs": "pairs checked by Monte Carlo masking of the real rows",
    "mc_draws": "independent mask draws per Monte Carlo pair",
    "mc_in_ci": "share of the 4 exact probabilities per MC pair inside the 95% Wilson interval (about 0.95 expected)",
    "mc_max_abs_diff": "largest |Monte Carlo - exact| over those probabilities",
}


# ------------------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class DeltaRule:
    """How the sharing radius ``delta`` of a pair is set (see the module docstring).

    Attributes
    ----------
    kind : {"rank", "relative", "absolute"}
    value : float
        ``R`` for ``relative``, the distance for ``absolute``, NaN for ``rank``.
    """

    kind: str
    value: float = float("nan")

    def describe(self, k: int) -> str:
        if self.kind == "rank":
            return f"δ = u's {k}-NN distance"
        if self.kind == "relative":
            return "δ = d" if self.value == 1 else f"δ = {self.value:g} d"
        return f"δ = {self.value:g}"

    def describe_masked(self, k: int) -> str:
        if self.kind == "rank":
            return f"δ_m = u's {k}-th smallest E[D'_uw]"
        if self.kind == "relative":
            return "δ_m = ρ d" if self.value == 1 else f"δ_m = {self.value:g} ρ d"
        return f"δ_m = {self.value:g} ρ"

    def masked_meaning(self) -> str:
        """Why the masked-neighbourhood threshold is the fair comparison, in words."""
        if self.kind == "rank":
            return "the radius of u's k nearest neighbours once masking has shrunk every distance on average"
        if self.kind == "relative":
            return "the pair's distance if masking only thinned both histories (ρ d: what a pair without overlap gets)"
        return "the radius shrunk by ρ, as masking shrinks the distance of a pair without overlap"

    def thresholds(
        self, d: np.ndarray, clean_rank: np.ndarray, masked_rank: np.ndarray, rho: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(delta, delta_m)`` per pair, shape (P,), from the anchors' clean and masked rank radii."""
        if self.kind == "rank":
            return np.asarray(clean_rank, dtype=np.float64), np.asarray(masked_rank, dtype=np.float64)
        if self.kind == "relative":
            return relative_threshold(d, self.value), relative_threshold(d, self.value * rho)
        full = np.full(np.shape(d), self.value, dtype=np.float64)
        return full, rho * full


def parse_delta(text: str) -> DeltaRule:
    """``rank``, ``relative:R`` (``R > 0``) or a non-negative number; anything else raises ValueError."""
    raw = str(text).strip().lower()
    if raw == "rank":
        return DeltaRule("rank")
    message = f"--delta must be 'rank', 'relative:R' with R > 0 (e.g. relative:1) or a distance >= 0, got {text!r}"
    if raw.startswith("relative:"):
        try:
            ratio = float(raw.partition(":")[2])
        except ValueError:
            raise ValueError(message) from None
        if not (np.isfinite(ratio) and ratio > 0):
            raise ValueError(message)
        return DeltaRule("relative", ratio)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(message) from None
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(message)
    return DeltaRule("absolute", value)


# ------------------------------------------------------------------------------------------------ pair sample


@dataclass(frozen=True)
class AnchorNeighbourhoods:
    """What the pair sampling needs to know about each query (anchor) user.

    Attributes
    ----------
    queries : numpy.ndarray of int64, shape (Q,)
        Anchor rows, sorted.
    knn : KNNResult
        Their k nearest neighbours in L1 (``knn.distances[:, -1]`` is the clean rank radius).
    median : numpy.ndarray, shape (Q,)
        Median L1 distance from the anchor to all other users.
    related_min : numpy.ndarray, shape (Q,)
        Shared positives a far user needs to count as related: ``max(min_shared, median overlap with kNN)``.
    far, far_related : numpy.ndarray of int64, shape (Q,)
        A uniformly drawn far / far-and-related user (-1 when there is none).
    rho_grid : numpy.ndarray, shape (R,)
    masked_rank : numpy.ndarray, shape (R, Q)
        k-th smallest ``E[D'_uw] = rho (|S_u| + |S_w|) - 2 rho^2 c_uw`` over ``w != u``, per grid rho
        (the same values as ``geometry.neighbourhoods.rank_threshold(X, k, rho, queries)``).
    """

    queries: np.ndarray
    knn: KNNResult
    median: np.ndarray
    related_min: np.ndarray
    far: np.ndarray
    far_related: np.ndarray
    rho_grid: np.ndarray
    masked_rank: np.ndarray


def anchor_neighbourhoods(
    X: sp.spmatrix,
    queries: np.ndarray,
    k: int,
    min_shared: int,
    rho_grid: np.ndarray,
    rng: np.random.Generator,
) -> AnchorNeighbourhoods:
    """kNN, median distance, far and far-related draws and masked rank radii of the anchors, in one pass.

    Distances come from sparse Gram blocks ``G = X_block X^T`` (``d = |S_u| + |S_w| - 2 G``), one block of
    anchors at a time, so memory is ``block x N``, never ``N x N``.
    """
    X = binary(X)
    n = X.shape[0]
    queries = np.unique(np.asarray(queries, dtype=np.int64))
    rho_grid = np.asarray(rho_grid, dtype=np.float64)
    neighbours = knn(X, k, "l1", queries=queries)
    sizes = np.diff(X.indptr).astype(np.float64)
    XT = X.T.tocsr()
    q = queries.size
    median = np.empty(q)
    related_min = np.empty(q)
    far = np.full(q, -1, dtype=np.int64)
    far_related = np.full(q, -1, dtype=np.int64)
    masked_rank = np.empty((rho_grid.size, q))
    lo, hi = (n - 2) // 2, (n - 1) // 2  # middle order statistics of the n - 1 other users
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, q, block):
        rows = queries[start : start + block]
        r = np.arange(rows.size)
        G = (X[rows] @ XT).toarray().astype(np.float64)
        D = sizes[rows, None] + sizes[None, :] - 2.0 * G
        D[r, rows] = np.inf  # the anchor itself sorts last and is never drawn
        part = np.partition(D, [lo, hi], axis=1)
        med = 0.5 * (part[:, lo] + part[:, hi])
        nbr = neighbours.indices[start : start + rows.size]
        rel_min = np.maximum(float(min_shared), np.median(G[r[:, None], nbr], axis=1))
        candidates = D > med[:, None]
        candidates[r[:, None], nbr] = False
        candidates &= np.isfinite(D)
        related = candidates & (G >= rel_min[:, None])
        for mask, out in ((candidates, far), (related, far_related)):
            # uniform choice per row: the largest of i.i.d. uniform keys over the allowed users
            pick = np.where(mask, rng.random(mask.shape), -1.0).argmax(axis=1)
            out[start : start + rows.size] = np.where(mask.any(axis=1), pick, -1)
        for j, rho in enumerate(rho_grid):
            # same expression as geometry.neighbourhoods.rank_threshold, so the radii agree bit for bit
            E = rho * (sizes[rows, None] + sizes[None, :]) - 2.0 * rho * rho * G
            E[r, rows] = np.inf
            masked_rank[j, start : start + rows.size] = np.partition(E, k - 1, axis=1)[:, k - 1]
        median[start : start + rows.size] = med
        related_min[start : start + rows.size] = rel_min
    return AnchorNeighbourhoods(queries, neighbours, median, related_min, far, far_related, rho_grid, masked_rank)


@dataclass(frozen=True)
class PairSample:
    """Sampled pairs of training rows and their clean geometry.

    Attributes
    ----------
    stratum : numpy.ndarray of str, shape (P,)
    u, v : numpy.ndarray of int64, shape (P,)
        Anchor and partner rows of ``split.train``.
    anchor : numpy.ndarray of int64, shape (P,)
        Index of ``u`` in :attr:`AnchorNeighbourhoods.queries`.
    d, c : numpy.ndarray of int64, shape (P,)
        ``|S_u Δ S_v|`` and ``|S_u ∩ S_v|`` (``geometry.masking.pair_overlaps``).
    """

    stratum: np.ndarray
    u: np.ndarray
    v: np.ndarray
    anchor: np.ndarray
    d: np.ndarray
    c: np.ndarray


def sample_pairs(
    X: sp.spmatrix,
    n_pairs: int,
    k: int,
    min_shared: int,
    rho_grid: np.ndarray,
    rng: np.random.Generator,
    planted: np.ndarray | None = None,
) -> tuple[PairSample, AnchorNeighbourhoods]:
    """Draw up to ``n_pairs`` pairs per stratum (see the module docstring) and compute their ``d`` and ``c``.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Binary training histories.
    n_pairs : int
        Pairs per stratum (anchors are drawn without replacement, so at most N).
    k : int
        Neighbourhood size, ``1 <= k <= (N - 1) // 2`` so that the kNN lie inside the median half.
    min_shared : int
        Minimum shared positives of a far-related pair.
    rho_grid : numpy.ndarray
        Keep probabilities for the masked rank radii.
    rng : numpy.random.Generator
    planted : numpy.ndarray of int64, shape (M, 2), optional
        Planted far-related pairs as training rows.
    """
    n = X.shape[0]
    if not 1 <= k <= (n - 1) // 2:
        raise JobError(f"--k must lie in [1, {(n - 1) // 2}] for {n} training users (kNN inside the median half)")
    anchors = np.sort(rng.choice(n, size=min(n_pairs, n), replace=False)).astype(np.int64)
    if planted is not None and planted.shape[0] > n_pairs:
        planted = planted[np.sort(rng.choice(planted.shape[0], size=n_pairs, replace=False))]
    extra = planted[:, 0] if planted is not None else np.empty(0, dtype=np.int64)
    nb = anchor_neighbourhoods(X, np.concatenate((anchors, extra)), k, min_shared, rho_grid, rng)
    qa = np.searchsorted(nb.queries, anchors)
    near = nb.knn.indices[qa, rng.integers(0, k, size=anchors.size)]
    parts = [("near", anchors, near, qa)]
    for name, partner in (("far", nb.far[qa]), ("far-related", nb.far_related[qa])):
        ok = partner >= 0
        parts.append((name, anchors[ok], partner[ok], qa[ok]))
    if planted is not None and planted.shape[0]:
        parts.append(("planted", planted[:, 0], planted[:, 1], np.searchsorted(nb.queries, planted[:, 0])))
    stratum = np.concatenate([np.full(p[1].size, p[0], dtype=object) for p in parts]).astype(str)
    u = np.concatenate([p[1] for p in parts]).astype(np.int64)
    v = np.concatenate([p[2] for p in parts]).astype(np.int64)
    anchor = np.concatenate([p[3] for p in parts]).astype(np.int64)
    overlap = pair_overlaps(X, u, v)
    return PairSample(stratum, u, v, anchor, overlap.d, overlap.c), nb


# ---------------------------------------------------------------------------------------------- probabilities


def exact_probabilities(d: np.ndarray, c: np.ndarray, rho: float, delta: np.ndarray, delta_m: np.ndarray) -> dict:
    """Exact contraction and expansion probabilities of each pair for both thresholds (PROBABILITIES and STRICT).

    Each call gets both thresholds at once, so the library convolves each pair's law once, not twice.
    """
    d2, c2, thresholds = np.concatenate((d, d)), np.concatenate((c, c)), np.concatenate((delta, delta_m))
    contraction = contraction_probability(d2, c2, rho, thresholds)
    expansion = expansion_probability(d2, c2, rho, thresholds)
    # D' is integer-valued: Pr[D' > t] = Pr[D' >= floor(t) + 1], from the upper tail (exact 0 where it is 0)
    strict = expansion_probability(d2, c2, rho, np.floor(thresholds) + 1.0)
    p = d.size
    return {
        "p_contraction": contraction[:p],
        "p_expansion": expansion[:p],
        "p_contraction_masked": contraction[p:],
        "p_expansion_masked": expansion[p:],
        "p_expansion_strict": strict[:p],
        "p_expansion_masked_strict": strict[p:],
    }


def exact_columns(d: np.ndarray, c: np.ndarray, rho: float, delta: np.ndarray, delta_m: np.ndarray) -> dict:
    """Per-pair exact law summaries at one rho: ``E[D']``, probabilities and Hoeffding bounds."""
    expected, _ = masked_distance_moments(d, c, rho)
    return {
        "expected_distance": expected,
        # E[D'] - d = (1 - rho) (2 rho c - d): the sign test avoids comparing two rounded floats
        "expected_expansion": (rho < 1.0) & (2.0 * rho * c > d),
        "delta": delta,
        "delta_masked": delta_m,
        **exact_probabilities(d, c, rho, delta, delta_m),
        "hoeffding_contraction": hoeffding_contraction_bound(d, c, rho, delta),
        "hoeffding_expansion": hoeffding_expansion_bound(d, c, rho, delta),
        "hoeffding_contraction_masked": hoeffding_contraction_bound(d, c, rho, delta_m),
        "hoeffding_expansion_masked": hoeffding_expansion_bound(d, c, rho, delta_m),
    }


def mc_subset(stratum: np.ndarray, per_stratum: int) -> np.ndarray:
    """Indices of the first ``per_stratum`` pairs of each stratum (pairs are in random anchor order)."""
    keep = [np.flatnonzero(stratum == s)[:per_stratum] for s in dict.fromkeys(stratum.tolist())]
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, dtype=np.int64)


def monte_carlo_columns(
    X: sp.spmatrix,
    pairs: PairSample,
    idx: np.ndarray,
    rho: float,
    exact: dict,
    n_draws: int,
    rng: np.random.Generator,
) -> dict:
    """Monte Carlo estimates (masking the real rows) of the 4 probabilities of the pairs ``idx``.

    Both thresholds are checked against the same masks: each pair enters the estimator twice, once with
    ``delta`` and once with ``delta_m`` (a row's mask is shared by all its pairs within a draw).
    """
    p = pairs.u.size
    out = {f"mc_{name[2:]}{tail}": np.full(p, np.nan) for name in PROBABILITIES for tail in ("", "_low", "_high")}
    out["mc"] = np.zeros(p, dtype=bool)
    out["mc_in_ci"] = np.full(p, np.nan)
    out["mc_max_abs_diff"] = np.full(p, np.nan)
    if idx.size == 0:
        return out
    m = idx.size
    est = monte_carlo_probabilities(
        X,
        np.concatenate((pairs.u[idx], pairs.u[idx])),
        np.concatenate((pairs.v[idx], pairs.v[idx])),
        rho,
        np.concatenate((exact["delta"][idx], exact["delta_masked"][idx])),
        n_draws,
        rng=rng,
    )
    inside, diffs = [], []
    for name, half in (
        ("p_contraction", slice(0, m)),
        ("p_expansion", slice(0, m)),
        ("p_contraction_masked", slice(m, 2 * m)),
        ("p_expansion_masked", slice(m, 2 * m)),
    ):
        kind = "contraction" if "contraction" in name else "expansion"
        value = getattr(est, kind)[half]
        low = getattr(est, f"{kind}_low")[half]
        high = getattr(est, f"{kind}_high")[half]
        key = f"mc_{name[2:]}"
        out[key][idx], out[f"{key}_low"][idx], out[f"{key}_high"][idx] = value, low, high
        truth = exact[name][idx]
        inside.append((low - 1e-12 <= truth) & (truth <= high + 1e-12))
        diffs.append(np.abs(value - truth))
    out["mc"][idx] = True
    out["mc_in_ci"][idx] = np.mean(inside, axis=0)
    out["mc_max_abs_diff"][idx] = np.max(diffs, axis=0)
    return out


def summarise(table: pd.DataFrame, mc_draws: int) -> pd.DataFrame:
    """Stratum x rho summary of the per-pair table (the columns of :data:`COLUMN_NOTES`)."""
    rows = []
    order = {s: i for i, s in enumerate(STRATA)}
    for (rho, stratum), g in table.groupby(["rho", "stratum"], sort=False):
        mc = g[g["mc"]]
        row = {
            "rho": rho,
            "stratum": stratum,
            "pairs": len(g),
            "mean_d": g["d"].mean(),
            "mean_c": g["c"].mean(),
            "share_expected_expansion": g["expected_expansion"].mean(),
            "mean_expected_distance": g["expected_distance"].mean(),
            "mean_delta": g["delta"].mean(),
            "mean_delta_masked": g["delta_masked"].mean(),
        }
        for col in (*PROBABILITIES, *STRICT, *(f"hoeffding_{p[2:]}" for p in PROBABILITIES)):
            row[col] = g[col].mean()
        row["mc_pairs"] = len(mc)
        row["mc_draws"] = mc_draws if len(mc) else 0
        row["mc_in_ci"] = mc["mc_in_ci"].mean() if len(mc) else float("nan")
        row["mc_max_abs_diff"] = mc["mc_max_abs_diff"].max() if len(mc) else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_order"] = out["stratum"].map(lambda s: order.get(s, len(order)))
    return out.sort_values(["rho", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def rho_grid(points: int, chosen: list[float]) -> np.ndarray:
    """``points`` evenly spaced keep probabilities ``1/points, ..., 1`` with the chosen values put in exactly."""
    grid = np.linspace(1.0 / points, 1.0, points)
    grid = grid[~np.isclose(grid[:, None], np.asarray(chosen)[None, :], rtol=0, atol=1e-9).any(axis=1)]
    return np.sort(np.concatenate((grid, chosen)))


def mid_percentile(values: np.ndarray) -> np.ndarray:
    """``100 * (share of values below + half the share equal)`` for each value: 50 at the median."""
    values = np.asarray(values)
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    equal = np.searchsorted(ordered, values, side="right") - below
    return 100.0 * (below + 0.5 * equal) / values.size


def typical_index(d: np.ndarray, c: np.ndarray) -> int:
    """The pair jointly nearest the stratum's median ``(d, c)`` in rank terms (:data:`TYPICAL_PAIR_RULE`)."""
    gap_d = np.abs(mid_percentile(d) - 50.0)
    gap_c = np.abs(mid_percentile(c) - 50.0)
    return int(np.lexsort((np.arange(gap_d.size), gap_d**2 + gap_c**2, np.maximum(gap_d, gap_c)))[0])


def _bin_edges(x: np.ndarray, bins: int, min_pairs: int) -> np.ndarray:
    """Quantile bin edges of ``x``: up to ``bins`` bins of at least about ``min_pairs`` values, ties merged.

    Bins are ``(low, high]``; the first edge sits just below the smallest value, so that it falls in the first bin.
    """
    count = int(np.clip(x.size // max(min_pairs, 1), 1, bins))
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, count + 1)))
    if edges.size == 1:
        edges = np.append(edges, edges[0])
    edges[0] = np.nextafter(edges[0], -np.inf)
    return edges


def _wilson(p: np.ndarray, n: np.ndarray, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a mean ``p`` of ``[0, 1]`` values with (possibly fractional) sample size ``n``."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def contraction_bins(table: pd.DataFrame, bins: int = CONTRACTION_BINS) -> tuple[pd.DataFrame, int]:
    """Binned mean contraction probability against ``d / r_k(u)`` per rho and stratum (:data:`CONTRACTION_BINS_RULE`).

    Returns the bin table (rho, stratum, x_low, x_high, x_center, pairs, anchors, n_eff, mean, ci_low, ci_high)
    and the number of pair rows left out for an anchor radius of 0.
    """
    radius = table["anchor_knn_radius"].to_numpy(dtype=np.float64)
    ok = radius > 0
    x = np.where(ok, table["d"].to_numpy(dtype=np.float64) / np.where(ok, radius, 1.0), np.nan)
    rows = []
    order = {s: i for i, s in enumerate(STRATA)}
    data = table.assign(_x=x)[ok]
    for (rho, stratum), group in data.groupby(["rho", "stratum"], sort=True):
        xs = group["_x"].to_numpy()
        edges = _bin_edges(xs, bins, CONTRACTION_BIN_PAIRS)
        which = np.clip(np.searchsorted(edges, xs, side="left") - 1, 0, edges.size - 2)
        for b, g in group.groupby(which, sort=True):
            m = g.groupby("anchor").size().to_numpy(dtype=np.float64)
            n_eff = m.sum() ** 2 / (m**2).sum()
            mean = float(g["p_contraction"].mean())
            low, high = _wilson(np.array(mean), np.array(n_eff))
            rows.append(
                {
                    "rho": rho,
                    "stratum": stratum,
                    "x_low": float(edges[b]),
                    "x_high": float(edges[b + 1]),
                    "x_center": float(np.median(g["_x"])),
                    "pairs": len(g),
                    "anchors": int(m.size),
                    "n_eff": float(n_eff),
                    "mean": mean,
                    # the Wilson interval contains the mean; min / max only guard the rounding
                    "ci_low": float(min(low, mean)),
                    "ci_high": float(max(high, mean)),
                }
            )
    out = pd.DataFrame(rows)
    if len(out):
        out["_order"] = out["stratum"].map(lambda s: order.get(s, len(order)))
        out = out.sort_values(["rho", "_order", "x_low"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return out, int((~ok).sum())


# ------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "Exact and Monte Carlo contraction/expansion probabilities of masked user distances "
        "(Theorem 2.6) for near, far and far-but-related pairs.",
    )
    parser.add_argument(
        "--rho", type=float, nargs="+", default=[0.5], help="keep probabilities in (0, 1] (default: 0.5)"
    )
    parser.add_argument("--pairs", type=int, help=f"pairs per stratum (default {DEFAULTS['pairs']})")
    parser.add_argument(
        "--delta",
        default="rank",
        help="sharing radius: 'rank' (u's k-NN distance, default), 'relative:R' (R times the pair's d) or a distance",
    )
    parser.add_argument("--k", type=int, default=10, help="neighbourhood size for near pairs and rank radii (10)")
    parser.add_argument(
        "--min-shared",
        type=int,
        default=3,
        help="far-related pairs share >= max(this, u's median kNN overlap) positives (3)",
    )
    parser.add_argument("--mc-pairs", type=int, help=f"Monte Carlo pairs per stratum (default {DEFAULTS['mc_pairs']})")
    parser.add_argument("--mc-draws", type=int, help=f"Monte Carlo mask draws (default {DEFAULTS['mc_draws']})")
    parser.add_argument("--grid", type=int, help=f"rho grid points of the curves (default {DEFAULTS['grid']})")
    parser.add_argument(
        "--drift-draws",
        type=int,
        help="independent maskings of every user for the realised drift of the anchors' k-NN "
        f"(default {DEFAULTS['drift_draws']}; 1: against the clean neighbourhood only)",
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-rhoR[-quick]-HASH",
        seed="seed of the pair sample and the masks",
        quick="synthetic data unless --dataset, few pairs and draws (tests, CI): seconds",
    )
    add_dataset_arguments(parser)
    return parser


def _resolve(args: argparse.Namespace) -> tuple[list[float], DeltaRule, dict]:
    """Validated rho values, threshold rule and sizes (and the dataset options); ValueError with one clear message
    naming the flag otherwise."""
    rhos = []
    for r in args.rho:
        try:
            rhos.append(validate_rho(r))
        except ValueError as exc:
            raise ValueError(f"--rho: {exc}") from None
    rhos = sorted(set(rhos))
    rule = parse_delta(args.delta)
    sizes = option_sizes(args, DEFAULTS, QUICK, {"pairs": 1, "mc_pairs": 0, "mc_draws": 1, "grid": 2, "drift_draws": 1})
    check_int("--k", args.k, 1)
    check_int("--min-shared", args.min_shared, 1)
    check_seed(args)
    return rhos, rule, sizes


def _print_summary(summary: pd.DataFrame, header: list[str], rule: DeltaRule, k: int) -> None:
    formats = {
        "stratum": "s",
        "pairs": "d",
        "mean_d": ".1f",
        "mean_c": ".1f",
        "share_expected_expansion": ".3f",
        "p_contraction": ".3f",
        "p_expansion": ".3f",
        "p_expansion_strict": ".3f",
        "p_contraction_masked": ".3f",
        "p_expansion_masked": ".3f",
        "p_expansion_masked_strict": ".3f",
        "hoeffding_contraction": ".3f",
        "mc_pairs": "d",
        "mc_in_ci": ".3f",
        "mc_max_abs_diff": ".3f",
    }
    headers = {
        "mean_d": "mean d",
        "mean_c": "mean c",
        "share_expected_expansion": "E[D']>d",
        "p_contraction": "P[D'<=δ]",
        "p_expansion": "P[D'>=δ]",
        "p_expansion_strict": "P[D'>δ]",
        "p_contraction_masked": "P[D'<=δm]",
        "p_expansion_masked": "P[D'>=δm]",
        "p_expansion_masked_strict": "P[D'>δm]",
        "hoeffding_contraction": "Hoeff<=δ",
        "mc_pairs": "MC pairs",
        "mc_in_ci": "MC in CI",
        "mc_max_abs_diff": "MC max|Δ|",
    }
    print("\n".join(header))
    for rho, g in summary.groupby("rho", sort=True):
        print(f"\nρ = {rho:g}   (E[D'] > d  <=>  c/d > 1/(2ρ) = {1 / (2 * rho):.3g})")
        print(format_table(g, formats, headers))
    legend = [
        "E[D']>d    share of pairs that masking pushes apart on average (c/d > 1/(2ρ))",
        f"P[D'<=δ]   mean exact contraction probability, {rule.describe(k)}; P[D'>=δ]: expansion, ties D' = δ "
        "included (near pairs with d = δ count at ρ = 1); P[D'>δ]: strict expansion, shown in the figures",
        f"P[D'<=δm]  the same against the masked-neighbourhood radius {rule.describe_masked(k)}: "
        f"{rule.masked_meaning()}",
        "Hoeff<=δ   mean Hoeffding lower bound on P[D'<=δ] (0 when vacuous)",
        "MC in CI   share of exact probabilities inside the 95% Wilson interval of Monte Carlo masking of the "
        "real rows (about 0.95 expected); MC max|Δ|: largest |MC - exact|",
    ]
    print("\nColumns:")
    for item in legend:
        print(textwrap.fill(item, width=110, initial_indent="  ", subsequent_indent=" " * 13))


def _print_drift(drifts: list[dict], k: int) -> None:
    print(
        f"\nRealised drift of the anchors' {k}-NN when every user is masked independently (mean [95% CI] over anchors):"
    )
    for d in drifts:
        line = f"  ρ = {d['rho']:g}: clean -> masked {_ci_text(d['clean_to_masked'])}"
        if "masked_to_masked" in d:
            line += f"; masked -> masked {_ci_text(d['masked_to_masked'])}"
        if d["near_p_expansion_masked"] is not None:
            line += (
                f"; exact Pr[D' > δm] of near pairs {d['near_p_expansion_masked_strict']:.3f} "
                f"(Pr[D' >= δm] {d['near_p_expansion_masked']:.3f}, ties included)"
            )
        print(line)


def _ci_text(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    from tqdm import tqdm

    start = time.perf_counter()
    timing: dict[str, float] = {}
    rhos, rule, sizes = _resolve(args)
    progress = not args.no_progress
    dataset = job_dataset(args)
    options = result_options(args, dataset=dataset, rho=rhos, **sizes)
    tag = "rho" + "-".join(f"{r:g}" for r in rhos)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)

    split = load_job_split(dataset, args, progress=progress)
    X = binary(split.train)
    timing["load"] = time.perf_counter() - start
    truth, note = planted_labels(split)
    notes = [note] if note else []
    grid = rho_grid(sizes["grid"], rhos)
    seeds = np.random.SeedSequence(args.seed).spawn(1 + 2 * len(rhos))
    steps = 1 + 3 * len(rhos) + grid.size + 3
    bar = tqdm(total=steps, desc="pairs and neighbourhoods", unit="step", disable=not progress, file=sys.stderr)

    t = time.perf_counter()
    planted = truth["pairs"] if truth is not None else None
    pairs, nb = sample_pairs(X, sizes["pairs"], args.k, args.min_shared, grid, np.random.default_rng(seeds[0]), planted)
    clean_rank = nb.knn.distances[:, -1]
    timing["sample"] = time.perf_counter() - t
    bar.update()
    base = {
        "stratum": pairs.stratum,
        "anchor": pairs.u,
        "other": pairs.v,
        "anchor_user": split.train_users[pairs.u],
        "other_user": split.train_users[pairs.v],
        "d": pairs.d,
        "c": pairs.c,
        "anchor_knn_radius": clean_rank[pairs.anchor],
        "anchor_median_distance": nb.median[pairs.anchor],
        "related_min": nb.related_min[pairs.anchor],
    }
    if truth is not None:
        base["same_group"] = truth["taste_group"][pairs.u] == truth["taste_group"][pairs.v]
    idx_mc = mc_subset(pairs.stratum, sizes["mc_pairs"])
    tables, typical, typical_stats, drifts, t_exact, t_mc, t_drift = [], [], [], [], 0.0, 0.0, 0.0
    for i, rho in enumerate(rhos):
        bar.set_description(f"exact laws ρ={rho:g}")
        t = time.perf_counter()
        g = int(np.flatnonzero(grid == rho)[0])
        delta, delta_m = rule.thresholds(pairs.d, clean_rank[pairs.anchor], nb.masked_rank[g, pairs.anchor], rho)
        exact = exact_columns(pairs.d, pairs.c, rho, delta, delta_m)
        t_exact += time.perf_counter() - t
        bar.update()
        bar.set_description(f"Monte Carlo ρ={rho:g}")
        t = time.perf_counter()
        mc = monte_carlo_columns(X, pairs, idx_mc, rho, exact, sizes["mc_draws"], np.random.default_rng(seeds[1 + i]))
        t_mc += time.perf_counter() - t
        bar.update()
        tables.append(pd.DataFrame({"rho": rho, **base, **exact, **mc}))
        bar.set_description(f"realised drift ρ={rho:g}")
        t = time.perf_counter()
        drift = input_knn_drift(
            X, rho, args.k, nb.queries, sizes["drift_draws"], np.random.default_rng(seeds[1 + len(rhos) + i])
        )
        near = pairs.stratum == "near"
        drifts.append(
            {
                **drift.summary(),
                "near_p_expansion_masked": float(exact["p_expansion_masked"][near].mean()) if near.any() else None,
                "near_p_expansion_masked_strict": (
                    float(exact["p_expansion_masked_strict"][near].mean()) if near.any() else None
                ),
            }
        )
        t_drift += time.perf_counter() - t
        bar.update()
        for s in dict.fromkeys(pairs.stratum.tolist()):
            sel = np.flatnonzero(pairs.stratum == s)
            i_typ = typical_index(pairs.d[sel], pairs.c[sel])
            j = sel[i_typ]
            typical.append(
                TypicalPair(
                    s,
                    rho,
                    int(pairs.d[j]),
                    int(pairs.c[j]),
                    masked_distance_pmf(int(pairs.d[j]), int(pairs.c[j]), rho),
                    float(delta[j]),
                    float(delta_m[j]),
                )
            )
            typical_stats.append(
                {
                    "d_percentile": float(mid_percentile(pairs.d[sel])[i_typ]),
                    "c_percentile": float(mid_percentile(pairs.c[sel])[i_typ]),
                    "stratum_median_d": float(np.median(pairs.d[sel])),
                    "stratum_median_c": float(np.median(pairs.c[sel])),
                    "stratum_mean_d": float(pairs.d[sel].mean()),
                    "stratum_mean_c": float(pairs.c[sel].mean()),
                }
            )
    timing["exact"], timing["monte_carlo"], timing["drift"] = t_exact, t_mc, t_drift
    table = pd.concat(tables, ignore_index=True)
    summary = summarise(table, sizes["mc_draws"])

    t = time.perf_counter()
    curve_rows = []
    for j, rho in enumerate(grid):
        bar.set_description(f"curves ρ={rho:.2f}")
        delta, delta_m = rule.thresholds(pairs.d, clean_rank[pairs.anchor], nb.masked_rank[j, pairs.anchor], rho)
        probs = exact_probabilities(pairs.d, pairs.c, rho, delta, delta_m)
        for s in dict.fromkeys(pairs.stratum.tolist()):
            sel = pairs.stratum == s
            curve_rows.append({"rho": float(rho), "stratum": s, **{k: float(v[sel].mean()) for k, v in probs.items()}})
        bar.update()
    curves = pd.DataFrame(curve_rows)
    timing["curves"] = time.perf_counter() - t

    t = time.perf_counter()
    figures = []
    bar.set_description("figures")
    figures += savefig(
        masked_distance_pmf_figure(typical, rule.describe(args.k), rule="pair nearest its stratum's median (d, c)"),
        out,
        "masked_distance_pmf",
    )
    bar.update()
    curve_arrays = {
        s: {k: g[k].to_numpy() for k in (*PROBABILITIES, *STRICT)} for s, g in curves.groupby("stratum", sort=False)
    }
    figures += savefig(
        probability_curves_figure(grid, curve_arrays, rhos, rule.describe(args.k)), out, "probability_vs_rho"
    )
    bar.update()
    bins, no_radius = contraction_bins(table)
    figures += savefig(
        contraction_binned_figure(bins, rule.describe(args.k), radius_label=f"u's {args.k}-NN distance"),
        out,
        "contraction_vs_distance",
    )
    bar.update()
    bar.close()
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "summary.csv", summary),
        write_csv(out / "pairs.csv", table),
        write_csv(out / "curves.csv", curves),
        write_csv(out / "contraction_bins.csv", bins),
    ]
    timing["total"] = time.perf_counter() - start
    report = split.report
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {"rho": rhos, **sizes, "k": args.k, "min_shared": args.min_shared},
        "dataset": {
            "name": dataset,
            "train_users": int(X.shape[0]),
            "items": int(X.shape[1]),
            "interactions": int(X.nnz),
            "split_cache": report.get("cache"),
            "acquisition": report.get("acquisition"),
        },
        "delta": {
            "rule": rule.kind,
            "value": rule.value,
            "clean": rule.describe(args.k),
            "masked": rule.describe_masked(args.k),
            "masked_meaning": rule.masked_meaning(),
            "contraction": "p_contraction = Pr[D' <= delta] (ties D' = delta count as contraction)",
            "expansion": "p_expansion = Pr[D' >= delta]: ties D' = delta count as expansion too, so near pairs "
            "with d = delta (the k-th neighbour itself among them) give it without masking, at rho = 1",
            "expansion_strict": "p_expansion_strict = Pr[D' > delta] = 1 - Pr[D' <= delta]: strict, 0 for near "
            "pairs at rho = 1 (d <= delta)",
            "shown_in_figures": "probability_vs_rho: p_contraction and p_expansion_strict (and their _masked "
            "versions, p_expansion_masked_strict); masked_distance_pmf shades Pr[D' <= delta]",
        },
        "strata": {
            "near": f"v uniform among u's {args.k} nearest neighbours (L1)",
            "far": "v uniform among users beyond u's median L1 distance, outside u's kNN",
            "far-related": f"far, and sharing >= max({args.min_shared}, median overlap of u with its kNN) positives",
            "planted": "make_synthetic() far_related_pairs with both users in the training rows (synthetic only)",
        },
        "rho_grid": grid,
        "columns": COLUMN_NOTES,
        "table": summary.to_dict(orient="records"),
        "realised_drift": drifts,
        "typical_pair_rule": TYPICAL_PAIR_RULE,
        "typical_pairs": [
            {
                "stratum": p.stratum,
                "rho": p.rho,
                "d": p.d,
                "c": p.c,
                "delta": p.delta,
                "delta_masked": p.delta_masked,
                **stats,
            }
            for p, stats in zip(typical, typical_stats, strict=True)
        ],
        "contraction_bins": {
            "rule": CONTRACTION_BINS_RULE,
            "pairs_without_radius": no_radius,
            "table": "contraction_bins.csv",
        },
        "notes": notes,
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)

    header = [
        f"Masking contraction/expansion on {dataset}: {X.shape[0]:,} training users, {X.shape[1]:,} items; "
        f"independent masks, keep probability ρ in {', '.join(f'{r:g}' for r in rhos)}",
        f"pairs per stratum: near = one of u's {args.k} nearest (L1); far = beyond u's median distance; "
        f"far-related = far yet sharing >= max({args.min_shared}, u's median kNN overlap) positives"
        + ("; planted = generator's far-but-related pairs" if "planted" in set(pairs.stratum.tolist()) else ""),
        f"thresholds: {rule.describe(args.k)}; {rule.describe_masked(args.k)};  Monte Carlo: "
        f"{sizes['mc_pairs']} pairs per stratum x {sizes['mc_draws']} draws on the real rows",
    ]
    _print_summary(summary, header, rule, args.k)
    _print_drift(drifts, args.k)
    print_done(out, result, timing, notes)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
