"""Result 2: with clean input, near users stay near, far users stay apart, and cohorts separate by activity.

Usage::

    python -m analyses.local_vs_global                          # ML-1M, clean Multi-VAE (trained once, cached)
    python -m analyses.local_vs_global --quick                  # synthetic data, tiny model: seconds

The model is a Multi-VAE trained with clean input (``rho = 1``, KL weight annealed to ``--beta-cap``) taken
from the run cache (:func:`analyses.trained.get_trained`, options of :mod:`analyses.model_options`), so other
jobs reuse it. Every training user is
encoded with clean input into ``q_u = N(mu_u, diag sigma_u^2)`` (``z = mu`` at evaluation, as the model is
used). Then, on sampled pairs:

* **Lipschitz bound** (Lemma 2.4): ``W1(q_u, q_v) <= W2(q_u, q_v) <= L_phi ||x_u - x_v||_1``, with
  ``||x_u - x_v||_1 = |S_u Δ S_v|`` and ``L_phi`` certified from the weights
  (:func:`geometry.bounds.certified_lipschitz` on the encoder chain ``x / ||x||_2 -> Linear -> tanh -> ...
  -> (mu, logvar)``). Two certificates: *domain-wide* (the logvar bound from interval propagation over every
  binary input with at least one positive) and *within the encoded users* (the logvar bound = the largest
  logvar seen per coordinate; valid for pairs of encoded users only). Both are products of operator norms:
  valid, usually loose. **The evidence is empirical** (summary.json ``empirical``): the distribution of the
  ratio ``W / L1`` over the sampled pairs, for ``W`` the lower (``||mu_u - mu_v||``) and the upper (``W2``)
  end of the W1 sandwich, per stratum and pooled (quantiles 0.5, 0.9, 0.99 with 95% percentile-bootstrap
  intervals that resample **anchor users** with all their pairs, :func:`clustered_quantiles`; the maximum
  without an interval, a sample maximum has no bootstrap interval), and how loose the certificate is: the
  certified constant divided by the largest and by the median ``W2 / L1``.
* **Transport bound**: ``W1 <= W2 <= sqrt(2 KL(q_u || p)) + sqrt(2 KL(q_v || p))`` (T2 inequality of the
  standard normal prior, C = 1). The evidence is how much of the bound the pairs use: the distribution of
  ``W2 / (sqrt(2 KL_u) + sqrt(2 KL_v))`` per stratum (``empirical.transport_usage``, the pairs' column
  ``transport_usage``).
* **Unit checks** (summary.json ``unit_checks``, each with its count and ``kind`` :data:`UNIT_CHECK`): no pair
  above either certificate, no sampled pair above the transport bound and none among all pairs of
  ``--all-pairs-users`` users (:func:`geometry.bounds.transport_bound_check`). These hold **by
  construction** (the certificates are products of operator norms over every valid input, the encoded one
  with the largest logvar of the very users it is checked on; the transport bound is a theorem for the
  closed-form W2 of Gaussians), so 0 violations is not evidence about the model: a violation is a bug.
* **Cohorts by interaction level**: silhouette score of the cohort labels in latent space (Euclidean on
  ``mu``, ``sklearn.metrics.silhouette_score``) on a balanced sample of ``--cohort-users`` users per cohort,
  next to the same score in input space (L1 on the binary rows). Cohorts: on synthetic data the generator's
  planted cohorts (about 5, 50 and 350 interactions); on real data the paper's figure's cohorts, users with
  5-10, 40-60 and 280-420 training interactions, or activity tertiles when one of those has fewer than
  ``MIN_COHORT`` users (``--cohorts`` chooses). On synthetic data the silhouette of the planted taste groups is
  reported too: local structure (taste) against global structure (activity).
* **Far-but-related users**: how far apart they sit in latent space. For each pair the *rank percentile* of
  v among u's distances to all other encoded users (0 = u's nearest user, 100 = the farthest), in input
  space (L1) and in latent space (``||mu_u - mu_v||``), and the *global percentile* of the pair's latent
  distance among the random pairs.

Pairs (``--anchors`` anchors u, drawn without replacement from the training users; one partner v each):

=================  =========================================================================================
stratum            partner v of anchor u
=================  =========================================================================================
``near``           uniform among u's ``k`` nearest users in L1 (ties towards the lower row)
``random``         uniform among all other users
``far-related``    uniform among users beyond u's median L1 distance, outside its kNN, sharing at least
                   ``max(--min-shared, median overlap of u with its kNN)`` positives (none: no pair)
``planted``        synthetic data only: the generator's far-but-related pairs (same taste group, at most one
                   shared item, beyond the same-group median distance) with both users in training
=================  =========================================================================================

Outputs (folder printed at the end, default
``out/local_vs_global/DATASET-betaB[-rhoR][-quick]-HASH``): ``pairs.csv`` (one row
per pair), ``strata.csv`` (per-stratum summary), ``cohorts.csv`` (per-cohort silhouettes), ``summary.json``
(arguments, model run, the empirical ratio and transport-usage distributions, certificates and what they
assume, the unit checks, silhouettes, timing) and
the figures ``lipschitz_transport``, ``cohorts`` and ``far_related`` (PNG and PDF).

Reference: Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026,
Lemma 2.4, Theorem 2.5 and the transport bound of section 2.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analyses.common import (
    JobError,
    add_job_arguments,
    binary,
    default_out_dir,
    format_table,
    job_parser,
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
from analyses.encoding import encode_posteriors
from analyses.model_options import (
    add_model_arguments,
    add_run_argument,
    job_model,
    load_model_split,
    model_config,
    validate_model_options,
)
from analyses.trained import run_record
from figures.geometry import UNIT_CHECK, cohort_figure, far_related_figure, lipschitz_transport_figure
from figures.style import savefig
from geometry.bounds import (
    Linear,
    LipschitzCertificate,
    certified_lipschitz,
    count_lipschitz_violations,
    empirical_lipschitz_ratios,
    layers_from_torch,
    split_head,
    transport_bound,
    transport_bound_check,
)
from geometry.kl import kl_to_standard_normal
from geometry.masking import pair_overlaps
from geometry.sharing import pair_w1_bounds
from models.cli import end_process
from models.lazy import lazy_import

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")
decomposition = lazy_import("sklearn.decomposition")
skmetrics = lazy_import("sklearn.metrics")

if TYPE_CHECKING:  # nn.Module subclasses: torch loads where the work starts
    from models.vae import MultiVAE

JOB = "local_vs_global"
STRATA = ("near", "random", "far-related", "planted")
DEFAULTS = {"anchors": 1000, "cohort_users": 500, "all_pairs_users": 2000}
QUICK = {"anchors": 150, "cohort_users": 150, "all_pairs_users": 400}
PAPER_COHORTS = (("≈5 (5-10)", 5, 10), ("≈50 (40-60)", 40, 60), ("≈350 (280-420)", 280, 420))
MIN_COHORT = 20
# The quantiles of the empirical distributions and the bootstrap behind their intervals.
QUANTILE_LEVELS = (0.5, 0.9, 0.99)
BOOTSTRAP = 2000
CONFIDENCE = 0.95
UNIT_CHECK_WHY = (
    "the certificates are products of operator norms valid for every binary input (the 'encoded' one with the "
    "largest logvar of the very users it is checked on) and the transport bound is a theorem for the closed-form "
    "W2 between Gaussians, so no pair can violate them unless the code is wrong: 0 violations is no evidence "
    "about the model; the evidence is in 'empirical'"
)
EMPIRICAL_WHAT = (
    "ratio_quantiles: distribution of W / |S_u Δ S_v| over the sampled pairs, 'upper' for W = W2 (the end the "
    "certificate bounds), 'lower' for W = ||mu_u - mu_v|| (W1 lies between them), per stratum and pooled ('all'); "
    "quantiles by numpy's default (linear) rule, 95% percentile-bootstrap intervals resampling anchor users u "
    "with all their pairs (pairs of one anchor are dependent); the max has no interval (a sample maximum has "
    "no valid bootstrap interval; the population maximum can only be larger). certificate_looseness: the "
    "certified L (encoded users; 'domain': all inputs) over the largest and over the median W2 / L1. "
    "transport_usage: W2 / (sqrt(2 KL_u) + sqrt(2 KL_v)) per pair, the share of the transport bound used."
)
# Elements of one anchor-block x users distance block (float64: 16 MiB per working array).
_BLOCK_ELEMENTS = 1 << 21

CERTIFICATE_ASSUMES = (
    "binary inputs with at least one positive, L2-normalised before the first layer (the Multi-VAE input at "
    "rho = 1); the evaluation-time encoder (no dropout); the bound is on W2 between the Gaussian posteriors, "
    "which dominates W1; Lipschitz constants of the layers multiply (operator norms, tanh 1-Lipschitz), so "
    "the certificate is valid but loose; sigma = exp(logvar / 2) is bounded through an upper bound of logvar: "
    "'domain' propagates intervals over every valid input, 'encoded' uses the largest logvar over the encoded "
    "users and only certifies pairs among them"
)

STRATUM_NOTES = {
    "pairs": "pairs in the stratum",
    "mean_l1": "mean input distance |S_u Δ S_v|",
    "mean_shared": "mean number of shared positives |S_u ∩ S_v|",
    "mean_w1_lower": "mean ||mu_u - mu_v|| (lower end of the W1 sandwich)",
    "mean_w1_upper": "mean W2(q_u, q_v) (upper end of the W1 sandwich)",
    "mean_transport_bound": "mean sqrt(2 KL_u) + sqrt(2 KL_v)",
    "transport_violations": f"pairs with W2 above the transport bound ({UNIT_CHECK})",
    "median_input_pct": "median rank percentile of v among u's input (L1) distances (0 = u's nearest user)",
    "median_latent_pct": "median rank percentile of v among u's latent distances ||mu_u - mu_w||",
    "share_latent_top10": "share of pairs with v among u's 10% latent-nearest users",
    "median_global_pct": "median percentile of the pair's latent distance among the random pairs",
}


# ------------------------------------------------------------------------------------ encoder certificate


def encoder_layers(model: MultiVAE) -> tuple[list, Linear, Linear]:
    """Multi-VAE encoder as ``(trunk, mu_head, logvar_head)`` for :func:`geometry.bounds.certified_lipschitz`.

    The sparse input layer computes ``W_in^T n + b`` on the normalised row ``n`` (its ``EmbeddingBag`` weight is
    stored (I, H)); then ``tanh -> Linear`` for every further encoder layer; the last layer emits
    ``[mu, logvar]`` and is split with :func:`geometry.bounds.split_head`.
    """
    from models.vae import MultiVAE

    if not isinstance(model, MultiVAE):
        raise JobError(f"the encoder certificate is written for Multi-VAE, got {type(model).__name__}")
    trunk: list = [Linear(model.input.weight.detach().T, model.input.bias.detach())]
    for layer in model.encoder[:-1]:
        trunk += ["tanh", *layers_from_torch([layer])]
    trunk.append("tanh")
    head = model.encoder[-1]
    mu_head, logvar_head = split_head(Linear(head.weight.detach(), head.bias.detach()), model.latent_dim)
    return trunk, mu_head, logvar_head


def encoder_certificate(model: MultiVAE, logvar_max: np.ndarray | None = None) -> LipschitzCertificate:
    """Certified ``L`` with ``W2(q_u, q_v) <= L |S_u Δ S_v|`` for the clean Multi-VAE encoder (module docstring)."""
    trunk, mu_head, logvar_head = encoder_layers(model)
    return certified_lipschitz(trunk, mu_head, logvar_head, input_domain="l2_normalised_binary", logvar_max=logvar_max)


# ------------------------------------------------------------------------------------------- pair sample


@dataclass(frozen=True)
class Partners:
    """One partner per anchor and stratum (-1: none), from the anchors' input distances.

    Attributes
    ----------
    anchors : numpy.ndarray of int64, shape (A,)
    near, random, far_related : numpy.ndarray of int64, shape (A,)
    median : numpy.ndarray, shape (A,)
        Median L1 distance from the anchor to the other users.
    related_min : numpy.ndarray, shape (A,)
        Shared positives that make a far user related: ``max(min_shared, median overlap with the kNN)``.
    """

    anchors: np.ndarray
    near: np.ndarray
    random: np.ndarray
    far_related: np.ndarray
    median: np.ndarray
    related_min: np.ndarray


def _input_blocks(X: sp.csr_matrix, rows: np.ndarray):
    """Yield ``(start, G, D)`` per block of ``rows``: overlaps ``G = X_rows X^T`` and ``D = |S_u Δ S_w|``."""
    sizes = np.diff(X.indptr).astype(np.float64)
    XT = X.T.tocsr()
    block = max(1, _BLOCK_ELEMENTS // X.shape[0])
    for start in range(0, rows.size, block):
        r = rows[start : start + block]
        G = (X[r] @ XT).toarray().astype(np.float64)
        yield start, G, sizes[r, None] + sizes[None, :] - 2.0 * G


def sample_partners(
    X: sp.csr_matrix, anchors: np.ndarray, k: int, min_shared: int, rng: np.random.Generator
) -> Partners:
    """Partners of the anchors for the strata near, random and far-related (module docstring)."""
    n = X.shape[0]
    a = anchors.size
    out = {name: np.full(a, -1, dtype=np.int64) for name in ("near", "random", "far_related")}
    median, related_min = np.empty(a), np.empty(a)
    lo, hi = (n - 2) // 2, (n - 1) // 2  # middle order statistics of the n - 1 other users
    for start, G, D in _input_blocks(X, anchors):
        r = np.arange(G.shape[0])
        rows = anchors[start : start + r.size]
        D[r, rows] = np.inf  # the anchor itself sorts last and is never drawn
        # stable sort: ties go to the lower row, as geometry.neighbourhoods.knn
        nbr = np.argsort(D, axis=1, kind="stable")[:, :k]
        part = np.partition(D, [lo, hi], axis=1)
        med = 0.5 * (part[:, lo] + part[:, hi])
        rel = np.maximum(float(min_shared), np.median(G[r[:, None], nbr], axis=1))
        candidates = (D > med[:, None]) & np.isfinite(D)
        candidates[r[:, None], nbr] = False
        related = candidates & (G >= rel[:, None])
        # uniform choice per row: the largest of i.i.d. uniform keys over the allowed users
        pick = np.where(related, rng.random(related.shape), -1.0).argmax(axis=1)
        sl = slice(start, start + r.size)
        out["far_related"][sl] = np.where(related.any(axis=1), pick, -1)
        out["near"][sl] = nbr[r, rng.integers(0, k, size=r.size)]
        other = rng.integers(0, n - 1, size=r.size)
        out["random"][sl] = other + (other >= rows)
        median[sl], related_min[sl] = med, rel
    return Partners(anchors, out["near"], out["random"], out["far_related"], median, related_min)


def rank_percentiles(distance_rows, n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``100 * #{w != u : dist(u, w) < dist(u, v)} / (n - 1)`` per pair: 0 when v is u's nearest user.

    ``distance_rows(rows)`` returns the (len(rows), n) distances of ``rows`` to every user.
    """
    out = np.empty(u.size)
    users, inverse = np.unique(u, return_inverse=True)
    block = max(1, _BLOCK_ELEMENTS // n)
    for s in range(0, users.size, block):
        rows = users[s : s + block]
        D = distance_rows(rows)
        for j in range(rows.size):
            idx = np.flatnonzero(inverse == s + j)
            dv = D[j, v[idx]]
            below = (D[j][None, :] < dv[:, None]).sum(axis=1)
            below -= (D[j, rows[j]] < dv).astype(np.int64)  # u itself (distance 0) is not a competitor
            out[idx] = 100.0 * below / (n - 1)
    return out


def input_distance_rows(X: sp.csr_matrix):
    """``rows -> |S_u Δ S_w|`` for the given rows against every row of binary ``X``, shape (len(rows), N)."""
    sizes = np.diff(X.indptr).astype(np.float64)
    XT = X.T.tocsr()

    def rows_fn(rows: np.ndarray) -> np.ndarray:
        return sizes[rows, None] + sizes[None, :] - 2.0 * (X[rows] @ XT).toarray().astype(np.float64)

    return rows_fn


def latent_distance_rows(mu: np.ndarray):
    """``rows -> ||mu_u - mu_w||`` for the given rows against every row of ``mu``, shape (len(rows), N)."""
    t = torch.from_numpy(mu)

    def rows_fn(rows: np.ndarray) -> np.ndarray:
        return torch.cdist(t[torch.from_numpy(rows)], t).numpy()

    return rows_fn


# ------------------------------------------------------------------------------------- empirical distributions


def clustered_quantiles(
    values: np.ndarray,
    clusters: np.ndarray,
    levels: Sequence[float],
    n_boot: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> dict:
    """Quantiles of ``values`` with percentile-bootstrap intervals that resample whole clusters (anchor users).

    Each resample draws as many clusters as there are, with replacement, and keeps all values of a drawn cluster;
    the interval of a quantile is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of its
    resampled values. Quantiles use numpy's default (linear) rule. The maximum is reported without an interval: a
    bootstrap interval of a sample maximum is not valid (its upper end is always the maximum itself).

    Returns
    -------
    dict
        ``n_pairs``, ``n_anchors``, ``q<level>`` and ``q<level>_ci`` (``[low, high]``) per level, ``max`` and
        ``max_ci`` (None), ``mean``.
    """
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray(clusters)
    keep = np.isfinite(values)
    values, clusters = values[keep], clusters[keep]
    out: dict = {"n_pairs": int(values.size), "n_anchors": int(np.unique(clusters).size)}
    if values.size == 0:
        for lv in levels:
            out[f"q{lv:g}"], out[f"q{lv:g}_ci"] = None, None
        out.update(max=None, max_ci=None, mean=None)
        return out
    order = np.argsort(clusters, kind="stable")
    values = values[order]
    _, starts, lengths = np.unique(clusters[order], return_index=True, return_counts=True)
    a = starts.size
    boot = np.empty((n_boot, len(levels)))
    for b in range(n_boot):
        drawn = rng.integers(0, a, size=a)
        size = lengths[drawn]
        offsets = np.repeat(np.cumsum(size) - size, size)
        idx = np.arange(size.sum()) - offsets + np.repeat(starts[drawn], size)
        boot[b] = np.quantile(values[idx], levels)
    tails = [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0]
    point = np.quantile(values, levels)
    for i, lv in enumerate(levels):
        low, high = np.quantile(boot[:, i], tails)
        out[f"q{lv:g}"] = float(point[i])
        out[f"q{lv:g}_ci"] = [float(low), float(high)]
    out.update(max=float(values.max()), max_ci=None, mean=float(values.mean()))
    return out


def empirical_summary(table: pd.DataFrame, cert_encoded: float, cert_domain: float, rng: np.random.Generator) -> dict:
    """The ``empirical`` section of summary.json (see :data:`EMPIRICAL_WHAT`) from the pair table."""
    groups = {"all": table, **{s: table[table["stratum"] == s] for s in STRATA if s in set(table["stratum"])}}

    def by_group(column: str) -> dict:
        return {
            name: clustered_quantiles(g[column].to_numpy(), g["u"].to_numpy(), QUANTILE_LEVELS, BOOTSTRAP, rng)
            for name, g in groups.items()
        }

    quantiles = {"upper": by_group("ratio_upper"), "lower": by_group("ratio_lower")}
    pooled = quantiles["upper"]["all"]
    median, largest = pooled["q0.5"], pooled["max"]
    low, high = pooled["q0.5_ci"]

    def over(cert: float, value: float | None) -> float | None:
        return cert / value if value else None

    looseness = {
        "certificate": "encoded users (the tighter certificate)",
        "l_w2": cert_encoded,
        "over_max": over(cert_encoded, largest),
        "over_median": over(cert_encoded, median),
        # a larger median gives a smaller ratio: the interval's ends swap
        "over_median_ci": [over(cert_encoded, high), over(cert_encoded, low)],
        "domain": {
            "l_w2": cert_domain,
            "over_max": over(cert_domain, largest),
            "over_median": over(cert_domain, median),
        },
    }
    return {
        "what": EMPIRICAL_WHAT,
        "confidence": CONFIDENCE,
        "bootstrap_resamples": BOOTSTRAP,
        "resampled_unit": "anchor user u (all its pairs together)",
        "ratio_quantiles": quantiles,
        "certificate_looseness": looseness,
        "transport_usage": by_group("transport_usage"),
    }


def unit_checks(
    table: pd.DataFrame,
    violations: dict[str, int],
    n_lipschitz_pairs: int,
    all_pairs_check,
) -> dict:
    """The ``unit_checks`` section of summary.json: every check with its count and :data:`UNIT_CHECK`."""
    what = {
        "domain": "the certificate over all valid inputs",
        "encoded": "the certificate of the encoded users",
        "lower": "||mu_u - mu_v||",
        "upper": "W2(q_u, q_v)",
    }
    checks = {}
    for key, count in violations.items():
        cert, end = key.split("_")
        checks[f"lipschitz_{key}"] = {
            "what": f"sampled pairs with {what[end]} above {what[cert]} times |S_u Δ S_v|",
            "pairs": n_lipschitz_pairs,
            "violations": int(count),
            "kind": UNIT_CHECK,
        }
    checks["transport_sampled"] = {
        "what": "sampled pairs with W2 above sqrt(2 KL_u) + sqrt(2 KL_v)",
        "pairs": len(table),
        "violations": int(table["transport_violation"].sum()),
        "kind": UNIT_CHECK,
    }
    checks["transport_all_pairs"] = {
        "what": f"all pairs of {all_pairs_check.n} users with W2 above sqrt(2 KL_u) + sqrt(2 KL_v)",
        "pairs": all_pairs_check.n_pairs,
        "violations": int(all_pairs_check.n_violations),
        "kind": UNIT_CHECK,
    }
    return {
        "kind": UNIT_CHECK,
        "why": UNIT_CHECK_WHY,
        "checks": checks,
        "total_violations": int(sum(c["violations"] for c in checks.values())),
    }


# ------------------------------------------------------------------------------------------------ cohorts


def cohort_labels(
    mode: str, n_interactions: np.ndarray, planted: dict | None
) -> tuple[np.ndarray, list[str], str, list[str]]:
    """Cohort index per user (-1: in none), names, the rule used and notes.

    ``mode``: ``auto`` (planted on synthetic data, else paper, else quantile), ``planted``, ``paper``
    (:data:`PAPER_COHORTS` on the number of training interactions) or ``quantile`` (activity tertiles).
    """
    notes = []
    if mode in ("auto", "planted") and planted is not None:
        names = [f"≈{a} (planted)" for a in planted["cohort_activity"]]
        return planted["cohort"].astype(np.int64), names, "planted", notes
    if mode == "planted":
        raise JobError("--cohorts planted needs the synthetic dataset (the generator's labels)")
    if mode in ("auto", "paper"):
        labels = np.full(n_interactions.size, -1, dtype=np.int64)
        for i, (_, lo, hi) in enumerate(PAPER_COHORTS):
            labels[(n_interactions >= lo) & (n_interactions <= hi)] = i
        counts = np.bincount(labels[labels >= 0], minlength=len(PAPER_COHORTS))
        if counts.min() >= MIN_COHORT:
            return labels, [c[0] for c in PAPER_COHORTS], "paper", notes
        small = ", ".join(f"{c[0]}: {k}" for c, k in zip(PAPER_COHORTS, counts, strict=True) if k < MIN_COHORT)
        if mode == "paper":
            raise JobError(f"--cohorts paper: too few users ({small}; need {MIN_COHORT}); use --cohorts quantile")
        notes.append(f"paper cohorts too small ({small}); activity tertiles used instead")
    edges = np.quantile(n_interactions, [1 / 3, 2 / 3])
    labels = np.searchsorted(edges, n_interactions, side="right").astype(np.int64)
    bounds = [n_interactions.min(), *edges, n_interactions.max()]
    names = [f"T{i + 1} ({bounds[i]:.0f}-{bounds[i + 1]:.0f})" for i in range(3)]
    return labels, names, "quantile", notes


def balanced_sample(labels: np.ndarray, per_label: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_label`` rows of every label >= 0, drawn without replacement, sorted."""
    picks = []
    for lab in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == lab)
        picks.append(rng.choice(rows, size=min(per_label, rows.size), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)


def silhouettes(points_or_distances: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, np.ndarray]:
    """Overall silhouette and the per-sample values (``sklearn.metrics.silhouette_samples``)."""
    values = skmetrics.silhouette_samples(points_or_distances, labels, metric=metric)
    return float(values.mean()), values


# ------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """The job's command line (one-line errors, exit code 2)."""
    parser = job_parser(
        JOB,
        "Clean-input Multi-VAE: Lipschitz and transport bounds on user pairs, cohort separation by "
        "interaction level (silhouette), and how far apart far-but-related users sit in latent space.",
    )
    parser.add_argument("--anchors", type=int, help=f"anchor users, one pair per stratum each ({DEFAULTS['anchors']})")
    parser.add_argument("--k", type=int, default=10, help="input neighbourhood size of near pairs (10)")
    parser.add_argument("--min-shared", type=int, default=3, help="far-related pairs share >= this many items (3)")
    parser.add_argument(
        "--cohorts",
        choices=("auto", "planted", "paper", "quantile"),
        default="auto",
        help="cohort rule: planted (synthetic), paper (5-10, 40-60, 280-420 interactions) or activity tertiles",
    )
    parser.add_argument(
        "--cohort-users", type=int, help=f"users per cohort for silhouettes ({DEFAULTS['cohort_users']})"
    )
    parser.add_argument(
        "--all-pairs-users",
        type=int,
        help=f"users whose pairs all get the transport check ({DEFAULTS['all_pairs_users']})",
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-betaB[-quick]-HASH",
        seed="seed of the samples",
        quick="synthetic data, tiny model, few pairs: seconds",
    )
    add_model_arguments(parser, rho=1.0, beta_cap=True, architecture=True)
    add_run_argument(parser)
    return parser


def _resolve(args: argparse.Namespace) -> dict:
    sizes = option_sizes(args, DEFAULTS, QUICK, {"anchors": 1, "cohort_users": 2, "all_pairs_users": 2})
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.min_shared < 1:
        raise ValueError(f"--min-shared must be >= 1, got {args.min_shared}")
    return sizes


def summarise_strata(table: pd.DataFrame) -> pd.DataFrame:
    """One row per stratum of the pair table (the columns of :data:`STRATUM_NOTES`)."""
    rows = []
    for stratum in [s for s in STRATA if s in set(table["stratum"])]:
        g = table[table["stratum"] == stratum]
        rows.append(
            {
                "stratum": stratum,
                "pairs": len(g),
                "mean_l1": g["l1"].mean(),
                "mean_shared": g["shared"].mean(),
                "mean_w1_lower": g["w1_lower"].mean(),
                "mean_w1_upper": g["w1_upper"].mean(),
                "mean_transport_bound": g["transport_bound"].mean(),
                "transport_violations": int(g["transport_violation"].sum()),
                "median_input_pct": g["input_pct"].median(),
                "median_latent_pct": g["latent_pct"].median(),
                "share_latent_top10": (g["latent_pct"] < 10).mean(),
                "median_global_pct": g["global_pct"].median(),
            }
        )
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    timing: dict[str, float] = {}
    sizes = _resolve(args)
    progress = not args.no_progress
    dataset = validate_model_options(args)
    config = model_config(args, rho=args.rho, beta_cap=args.beta_cap)
    options = result_options(args, dataset=dataset, **sizes)
    tag = f"beta{args.beta_cap:g}" + ("" if args.rho == 1 else f"-rho{args.rho:g}")
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)
    rng = np.random.default_rng(args.seed)

    split = load_model_split(args)
    X = binary(split.train)
    n = X.shape[0]
    if not 1 <= args.k <= (n - 1) // 2:
        raise JobError(f"--k must lie in [1, {(n - 1) // 2}] for {n} training users (kNN inside the median half)")
    timing["load"] = time.perf_counter() - start
    t = time.perf_counter()
    trained = job_model(args, config, split, progress)
    model = trained.model
    record = run_record(trained)
    timing["model"] = time.perf_counter() - t

    t = time.perf_counter()
    mu, logvar = (a[0] for a in encode_posteriors(model.double(), X))
    kl = kl_to_standard_normal(mu, logvar)
    timing["encode"] = time.perf_counter() - t

    # ---- pairs
    t = time.perf_counter()
    notes: list[str] = []
    planted, note = planted_labels(split)
    if note:
        notes.append(note)
    anchors = np.sort(rng.choice(n, size=min(sizes["anchors"], n), replace=False)).astype(np.int64)
    partners = sample_partners(X, anchors, args.k, args.min_shared, rng)
    parts = []
    for name, partner in (("near", partners.near), ("random", partners.random), ("far-related", partners.far_related)):
        ok = partner >= 0
        parts.append((name, anchors[ok], partner[ok]))
    if planted is not None and planted["pairs"].shape[0]:
        pp = planted["pairs"]
        if pp.shape[0] > sizes["anchors"]:
            pp = pp[np.sort(rng.choice(pp.shape[0], size=sizes["anchors"], replace=False))]
        parts.append(("planted", pp[:, 0], pp[:, 1]))
    stratum = np.concatenate([np.full(p[1].size, p[0], dtype=object) for p in parts]).astype(str)
    u = np.concatenate([p[1] for p in parts]).astype(np.int64)
    v = np.concatenate([p[2] for p in parts]).astype(np.int64)
    overlap = pair_overlaps(X, u, v)
    lower, upper = pair_w1_bounds(mu, logvar, np.stack([u, v], axis=1))
    bound = transport_bound(kl[u], kl[v])
    input_pct = rank_percentiles(input_distance_rows(X), n, u, v)
    latent_pct = rank_percentiles(latent_distance_rows(mu), n, u, v)
    random_sorted = np.sort(lower[stratum == "random"])
    global_pct = 100.0 * np.searchsorted(random_sorted, lower, side="left") / max(random_sorted.size, 1)
    n_interactions = np.diff(X.indptr)
    table = pd.DataFrame(
        {
            "stratum": stratum,
            "u": u,
            "v": v,
            "u_user": split.train_users[u],
            "v_user": split.train_users[v],
            "u_interactions": n_interactions[u],
            "v_interactions": n_interactions[v],
            "l1": overlap.d,
            "shared": overlap.c,
            "w1_lower": lower,
            "w1_upper": upper,
            "kl_u": kl[u],
            "kl_v": kl[v],
            "transport_bound": bound,
            "transport_violation": upper > bound * (1.0 + 1e-9) + 1e-12,
            # identical histories (L1 = 0) have no ratio
            "ratio_lower": np.where(overlap.d > 0, lower / np.maximum(overlap.d, 1), np.nan),
            "ratio_upper": np.where(overlap.d > 0, upper / np.maximum(overlap.d, 1), np.nan),
            # share of the transport bound used (the bound is positive unless both posteriors are the prior)
            "transport_usage": np.where(bound > 0, upper / np.where(bound > 0, bound, 1.0), np.nan),
            "input_pct": input_pct,
            "latent_pct": latent_pct,
            "global_pct": global_pct,
        }
    )
    if planted is not None:
        table["same_group"] = planted["taste_group"][u] == planted["taste_group"][v]
    strata = summarise_strata(table)
    timing["pairs"] = time.perf_counter() - t

    # ---- bounds
    t = time.perf_counter()
    cert_domain = encoder_certificate(model)
    cert_encoded = encoder_certificate(model, logvar_max=logvar.max(axis=0))
    ratios = {
        "lower": empirical_lipschitz_ratios(lower, overlap.d),
        "upper": empirical_lipschitz_ratios(upper, overlap.d),
    }
    violations = {
        f"{cert}_{end}": count_lipschitz_violations(w, overlap.d, c.l_w2)
        for cert, c in (("domain", cert_domain), ("encoded", cert_encoded))
        for end, w in (("lower", lower), ("upper", upper))
    }
    check_users = np.sort(rng.choice(n, size=min(sizes["all_pairs_users"], n), replace=False))
    check = transport_bound_check(mu[check_users], logvar[check_users])
    empirical = empirical_summary(table, cert_encoded.l_w2, cert_domain.l_w2, rng)
    checks = unit_checks(table, violations, len(table), check)
    timing["bounds"] = time.perf_counter() - t

    # ---- cohorts
    t = time.perf_counter()
    labels, names, rule, cohort_notes = cohort_labels(args.cohorts, n_interactions, planted)
    notes += cohort_notes
    sample = balanced_sample(labels, sizes["cohort_users"], rng)
    lab = labels[sample]
    if np.unique(lab).size < 2:
        raise JobError("fewer than two non-empty cohorts: silhouettes need at least two; try --cohorts quantile")
    sil_latent, sil_latent_values = silhouettes(mu[sample], lab, "euclidean")
    D_in = input_distance_rows(X[sample])(np.arange(sample.size))  # sample x sample, never sample x N
    np.fill_diagonal(D_in, 0.0)
    sil_input, sil_input_values = silhouettes(D_in, lab, "precomputed")
    cohort_rows = []
    for i, name in enumerate(names):
        sel = lab == i
        members = labels == i
        cohort_rows.append(
            {
                "cohort": name,
                "users": int(members.sum()),
                "sampled": int(sel.sum()),
                "min_interactions": int(n_interactions[members].min()) if members.any() else 0,
                "max_interactions": int(n_interactions[members].max()) if members.any() else 0,
                "mean_interactions": float(n_interactions[members].mean()) if members.any() else float("nan"),
                "mean_kl": float(kl[members].mean()) if members.any() else float("nan"),
                "mean_mu_norm": float(np.linalg.norm(mu[members], axis=1).mean()) if members.any() else float("nan"),
                "silhouette_latent": float(sil_latent_values[sel].mean()) if sel.any() else float("nan"),
                "silhouette_input": float(sil_input_values[sel].mean()) if sel.any() else float("nan"),
            }
        )
    cohorts = pd.DataFrame(cohort_rows)
    taste = None
    if planted is not None:
        taste_sample = balanced_sample(planted["taste_group"], sizes["cohort_users"], rng)
        taste = silhouettes(mu[taste_sample], planted["taste_group"][taste_sample], "euclidean")[0]
    coords = decomposition.PCA(n_components=2, random_state=args.seed).fit_transform(mu[sample])
    timing["cohorts"] = time.perf_counter() - t

    # ---- figures
    t = time.perf_counter()
    loose = empirical["certificate_looseness"]

    def times(x: float | None) -> str:
        return f", {x:.3g}x the max ratio" if x else ""

    lines = {
        "certified (all inputs)" + times(loose["domain"]["over_max"]): cert_domain.l_w2,
        "certified (encoded users)" + times(loose["over_max"]): cert_encoded.l_w2,
        "max empirical W2/L1": ratios["upper"].max,
        "median empirical W2/L1": float(ratios["upper"].quantiles[0]),
    }
    figures = []
    figures += savefig(
        lipschitz_transport_figure(
            table["l1"].to_numpy(),
            lower,
            upper,
            stratum,
            bound,
            lines,
            n_violations=int(table["transport_violation"].sum()),
            n_lipschitz_violations=int(sum(violations.values())),
            transport_usage_median=empirical["transport_usage"]["all"]["q0.5"],
        ),
        out,
        "lipschitz_transport",
    )
    figures += savefig(
        cohort_figure(
            coords,
            lab,
            names,
            cohorts["silhouette_latent"].to_numpy(),
            cohorts["silhouette_input"].to_numpy(),
            sil_latent,
            sil_input,
        ),
        out,
        "cohorts",
    )
    figures += savefig(
        far_related_figure(
            {s: table.loc[table["stratum"] == s, "latent_pct"].to_numpy() for s in STRATA if s in set(stratum)},
            {s: table.loc[table["stratum"] == s, "input_pct"].to_numpy() for s in STRATA if s in set(stratum)},
        ),
        out,
        "far_related",
    )
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "pairs.csv", table),
        write_csv(out / "strata.csv", strata),
        write_csv(out / "cohorts.csv", cohorts),
    ]
    timing["total"] = time.perf_counter() - start

    def cert_dict(c: LipschitzCertificate) -> dict:
        return {
            "l_w2": c.l_w2,
            "l_mu": c.l_mu,
            "l_sigma": c.l_sigma,
            "l_trunk": c.l_trunk,
            "input_factor": c.input_factor,
            "input_route": c.input_route,
            "logvar_max_source": c.logvar_max_source,
            "logvar_max_max": float(c.logvar_max.max()),
        }

    def ratio_dict(r) -> dict:
        return {
            "n_pairs": r.n_pairs,
            "n_zero_distance": r.n_zero_distance,
            "max": r.max,
            "quantiles": dict(zip((f"q{lv:g}" for lv in r.quantile_levels), r.quantiles, strict=True)),
        }

    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {**sizes, "dataset": dataset, "k": args.k, "min_shared": args.min_shared},
        "dataset": {
            "name": dataset,
            "train_users": n,
            "items": int(X.shape[1]),
            "interactions": int(X.nnz),
            "split_cache": split.report.get("cache"),
        },
        "model": record,
        "empirical": empirical,
        "unit_checks": checks,
        "lipschitz": {
            "certificate_assumes": CERTIFICATE_ASSUMES,
            "domain": cert_dict(cert_domain),
            "encoded": cert_dict(cert_encoded),
            "ratios": {"lower": ratio_dict(ratios["lower"]), "upper": ratio_dict(ratios["upper"])},
            "violations": violations,
            "looseness_upper": cert_encoded.l_w2 / ratios["upper"].max if ratios["upper"].max > 0 else None,
        },
        "transport": {
            "sampled_pairs": len(table),
            "sampled_violations": int(table["transport_violation"].sum()),
            "all_pairs": {
                "users": check.n,
                "pairs": check.n_pairs,
                "violations": check.n_violations,
                "min_relative_slack": check.min_relative_slack,
                "mean_w2": check.mean_w2,
                "mean_pair_bound": check.mean_pair_bound,
                "expected_bound": check.expected_bound,
                "mean_kl": check.mean_kl,
            },
        },
        "cohorts": {
            "rule": rule,
            "names": names,
            "silhouette_latent": sil_latent,
            "silhouette_input": sil_input,
            "silhouette_taste_groups_latent": taste,
            "table": cohorts.to_dict(orient="records"),
        },
        "strata": {
            "near": f"v uniform among u's {args.k} nearest users (L1)",
            "random": "v uniform among all other users",
            "far-related": f"beyond u's median L1 distance, outside its kNN, sharing >= max({args.min_shared}, "
            "median kNN overlap) positives",
            "planted": "make_synthetic() far_related_pairs with both users in training (synthetic only)",
        },
        "strata_columns": STRATUM_NOTES,
        "strata_table": strata.to_dict(orient="records"),
        "notes": notes,
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)
    _print_summary(result, strata, cohorts, dataset, n, X.shape[1])
    print_done(out, result, timing, notes)
    return out


def _print_summary(result: dict, strata: pd.DataFrame, cohorts: pd.DataFrame, dataset: str, n: int, items: int) -> None:
    m, lip, tr, co = result["model"], result["lipschitz"], result["transport"], result["cohorts"]
    c = m["config"]
    print(
        f"Local versus global on {dataset}: {n:,} training users, {items:,} items; Multi-VAE hidden "
        f"{tuple(c['hidden'])}, latent {c['latent_dim']}, rho {c['rho']:g}, beta cap {c['beta_cap']:g} "
        f"(best epoch {m['best_epoch']}, beta there {m['beta_at_best']:.3g}, val NDCG@100 {m['val_ndcg@100']:.4f})"
    )
    print(f"run: {m['run']}")
    emp, checks = result["empirical"], result["unit_checks"]
    level = f"{100 * emp['confidence']:.0f}%"
    print("\nLipschitz bound W1 <= W2 <= L |S_u Δ S_v| (Lemma 2.4): the empirical ratio W2/L1 over the sampled pairs")
    print(
        _quantile_table(emp["ratio_quantiles"]["upper"], ".3g")
        + f"\n  quantiles with {level} bootstrap intervals resampling anchor users; the max has no interval"
    )
    lo = emp["ratio_quantiles"]["lower"]["all"]
    print(f"  ||Δmu||/L1 (lower end of the W1 sandwich), all pairs: median {lo['q0.5']:.4g}, max {lo['max']:.4g}")
    loose = emp["certificate_looseness"]
    ci = loose["over_median_ci"]
    print(
        f"  certified L, the encoded users:  {lip['encoded']['l_w2']:.4g} = {loose['over_max']:.3g}x the max ratio, "
        f"{loose['over_median']:.3g}x the median [{ci[0]:.3g}, {ci[1]:.3g}]  (logvar bound = largest observed)"
    )
    print(
        f"  certified L, all valid inputs:   {lip['domain']['l_w2']:.4g} = {loose['domain']['over_max']:.3g}x the max "
        f"ratio, {loose['domain']['over_median']:.3g}x the median  (logvar bound by interval propagation)"
    )
    a = tr["all_pairs"]
    print("\nTransport bound W1 <= W2 <= sqrt(2 KL_u) + sqrt(2 KL_v): share of the bound used, W2 / bound")
    print(_quantile_table(emp["transport_usage"], ".3f"))
    print(
        f"  all {a['pairs']:,} pairs of {a['users']:,} users: mean W2 {a['mean_w2']:.3g} <= mean bound "
        f"{a['mean_pair_bound']:.3g} <= 2 sqrt(2 E KL) {a['expected_bound']:.3g}; min relative slack "
        f"{a['min_relative_slack']:.3g}"
    )
    print(f"\nUnit checks ({UNIT_CHECK}): violations / pairs checked")
    for name, c in checks["checks"].items():
        print(f"  {name:<26} {c['violations']} / {c['pairs']:,}")
    print("\nPairs by stratum")
    formats = {
        "stratum": "s",
        "pairs": "d",
        "mean_l1": ".1f",
        "mean_shared": ".1f",
        "mean_w1_lower": ".3f",
        "mean_w1_upper": ".3f",
        "mean_transport_bound": ".3f",
        "median_input_pct": ".1f",
        "median_latent_pct": ".1f",
        "share_latent_top10": ".2f",
        "median_global_pct": ".1f",
    }
    headers = {
        "mean_l1": "L1",
        "mean_shared": "shared",
        "mean_w1_lower": "|Δmu|",
        "mean_w1_upper": "W2",
        "mean_transport_bound": "T-bound",
        "median_input_pct": "in pct",
        "median_latent_pct": "lat pct",
        "share_latent_top10": "lat<10%",
        "median_global_pct": "glob pct",
    }
    print(format_table(strata, formats, headers))
    print(
        "  in pct / lat pct: median rank percentile of v among u's distances to all users, in input (L1) and\n"
        "  latent space (0 = u's nearest user); lat<10%: share of pairs with v in u's latent top 10%;\n"
        "  glob pct: percentile of the pair's ||Δmu|| among the random pairs"
    )
    print(f"\nCohorts by interaction level ({co['rule']}): silhouette of the cohort labels")
    print(
        format_table(
            cohorts,
            {
                "cohort": "s",
                "users": "d",
                "mean_interactions": ".1f",
                "mean_kl": ".2f",
                "silhouette_latent": ".3f",
                "silhouette_input": ".3f",
            },
            {
                "mean_interactions": "interactions",
                "mean_kl": "mean KL",
                "silhouette_latent": "sil latent",
                "silhouette_input": "sil input",
            },
        )
    )
    line = f"  overall: latent {co['silhouette_latent']:.3f}, input (L1) {co['silhouette_input']:.3f}"
    if co["silhouette_taste_groups_latent"] is not None:
        line += f"; planted taste groups in latent space {co['silhouette_taste_groups_latent']:.3f}"
    print(line)


def _quantile_table(groups: dict, fmt: str) -> str:
    """One row per group (``all`` and the strata) of :func:`clustered_quantiles` results, as text."""

    def cell(q: dict, key: str) -> str:
        if q[key] is None:
            return "-"
        low, high = q[f"{key}_ci"]
        return f"{q[key]:{fmt}} [{low:{fmt}}, {high:{fmt}}]"

    rows = [
        {
            "group": name,
            "pairs": q["n_pairs"],
            **{f"q{lv:g}": cell(q, f"q{lv:g}") for lv in QUANTILE_LEVELS},
            "max": "-" if q["max"] is None else f"{q['max']:{fmt}}",
        }
        for name, q in groups.items()
    ]
    formats = {"group": "s", "pairs": "d", **{f"q{lv:g}": "s" for lv in QUANTILE_LEVELS}, "max": "s"}
    headers = {"group": "pairs of", **{f"q{lv:g}": f"q{lv:g} [{100 * CONFIDENCE:.0f}% CI]" for lv in QUANTILE_LEVELS}}
    return format_table(pd.DataFrame(rows), formats, headers)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
