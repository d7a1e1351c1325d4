"""The claims ledger: every claim of the paper the toolkit checks, one row per claim and dataset, with a verdict
that a null could not have produced.

Usage::

    # the full run (its ML-1M accuracy comparison with the baselines of experiments/baselines_ml1m.py)
    python -m analyses.claims --datasets ml-1m ml-100k gowalla synthetic --seeds 0 1 2 \\
        --baselines ml-1m=experiments/results_baselines_ml1m.json
    python -m analyses.claims --quick            # synthetic and synthetic-null, tiny models, seeds 0 1: minutes
    # a ledger measured in parts (one dataset per session): merged, every row recomputed from the jobs' files
    python -m analyses.claims --merge out/claims-ml1m out/claims-ml100k --out out/claims-all

For every dataset and seed the ledger runs the jobs that measure the claims (:data:`SEED_JOBS`, each with
``--dataset D --seed S`` and, for the jobs of one Multi-VAE, ``--train-seed S``, so that every seed is another
trained model as well as another sample), and once per dataset ``pia_uplift`` over all the seeds (it chooses
lambda_A on validation; ``pia_geometry`` and ``cohorts`` then run with that lambda_A, so mechanism and gain are
measured on the same models). Trained models come from the run cache (:mod:`analyses.trained`): what the
other jobs trained is reused, and a killed ledger resumes where its models stopped. Each job writes its own
folder under ``OUT/runs/DATASET/seedS/JOB`` (``OUT/runs/DATASET/pia_uplift``); the ledger reads their JSON.

Each claim (:data:`CLAIMS`) has a decision rule written here before any result is seen (its ``rule`` text is
copied into every row). Per seed a claim gives an estimate, a within-seed interval and a per-seed verdict; the
seeds are combined by the claim's ``combine`` mode:

``unit``
    a check that holds by construction (a violation is a bug, not a finding): ``supported`` when it holds on
    every seed, else ``not supported``. Kind ``unit check``; listed, never counted as evidence.
``mean``
    an effect size of trained models: the mean of the per-seed estimates with an interval across seeds
    (:func:`analyses.results.across_seeds`: training noise included and, when every seed has its own interval,
    the sampling error those intervals measure, which seeds share when they measure overlapping users; each
    seed's standard error is taken as its interval's half-width over z_0.975), compared with the claim's threshold:
    ``supported`` when the interval lies on the claimed side, ``not supported`` when it lies on the other side,
    else ``inconclusive``; fewer than two seeds is ``inconclusive`` (one training's noise is unmeasured).
``every``
    a claim with its own within-seed test (a permutation p-value, a bootstrap interval): ``supported`` when the
    test supports it on every seed (a conjunction of level-alpha tests keeps the false-positive rate at most
    alpha), ``not supported`` when every seed rejects it, else ``inconclusive``; a trained claim on fewer than two
    seeds is ``inconclusive``. The row's interval is the hull of the seeds' own intervals (it lies on the claimed
    side exactly when every seed's does).
``data``
    a property of the data alone (no trained model): the first seed's sample and its interval decide; the other
    seeds' estimates are listed.

A claim a job could not measure on a dataset (the job failed, a stratum is empty) is ``inconclusive`` with the
reason. Rows carry ``planted``: the property of the synthetic generator that makes the claim true on
``synthetic`` (None when the generator does not decide it); ``synthetic-null`` (:func:`models.synthetic.
make_null_synthetic`) plants nothing, and the tests check that the planted claims are ``supported`` on
``synthetic`` and not on ``synthetic-null``.

Outputs (folder printed at the end; default ``out/claims/DATASETS-seedsS[-quick]-HASH``): ``claims.json`` (a
list of rows with the keys ``claim``, ``statement``, ``kind``, ``dataset``, ``seeds``, ``estimate``, ``ci``,
``ci_kind``, ``verdict``, ``reason``, ``rule``, ``command``, ``source`` (job JSON and key), ``per_seed``,
``planted``, ``seconds``), ``comparison.json`` (the accuracy comparison of :mod:`analyses.comparison`: per
dataset the models of ``pia_uplift`` and of the ``--baselines`` file, test NDCG@100 across seeds and the paired
difference of each from its reference), ``claims.md`` (the table by claim and dataset, the accuracy comparison,
the rules, the cost of each job),
``ledger.json`` (the jobs run, their status, seconds and commands), the figure ``claims`` (estimates and
intervals per claim and dataset, coloured by verdict) and ``COMPLETE``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from analyses.common import (
    COMPLETE_MARKER,
    JobError,
    check_int,
    default_out_dir,
    display_path,
    job_parser,
    mark_output,
    options_hash,
    read_json_doc,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_json,
)
from analyses.comparison import comparison_rows, comparison_table, read_baselines
from analyses.paper_figures import JOBS as REPORT_JOBS
from analyses.paper_figures import JobResult, JobSpec, command_line, figure_stems, lookup, run_job
from analyses.results import SHARED_ERROR_CI, across_seeds
from geometry.masking import wilson_interval
from models.cli import end_process
from models.data import (
    DATA_DESTS,
    add_dataset_arguments,
    check_data_options,
    data_argv,
    data_options,
    known_dataset,
    unknown_dataset,
)
from models.io import atomic_write_bytes
from models.lazy import lazy_import

pd = lazy_import("pandas")
stats = lazy_import("scipy.stats")

JOB = "claims"
VERDICTS = ("supported", "not supported", "inconclusive")
LEVEL = 0.95
FULL_DATASETS = ("ml-1m", "ml-100k", "gowalla", "synthetic")
QUICK_DATASETS = ("synthetic", "synthetic-null")
FULL_SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)
SEED_JOBS = ("masking_contraction", "local_vs_global", "kl_budget", "sharing_radius", "pia_geometry", "cohorts")
"""Jobs run once per dataset and seed (in this order, after ``pia_uplift``)."""
TRAIN_SEED_JOBS = frozenset({"local_vs_global", "kl_budget", "sharing_radius"})
"""Jobs of one Multi-VAE whose training seed is ``--train-seed`` (their ``--seed`` seeds only the samples)."""
JOB_OPTIONS: Mapping[str, tuple[str, ...]] = {"kl_budget": ("--betas", "0.2", "1", "--rhos", "1", "0.5")}
"""Options the ledger gives a job beyond the common ones: ``kl_budget`` trains only the beta caps its two claims
read (0.2 and 1 at rho 1 and 0.5; beta 0.2 are the models of ``local_vs_global`` and ``pia_geometry``), two new
models per seed instead of six."""
FULL_UPLIFT = ("--epochs-for", "recvae=150")
"""``pia_uplift`` options of the full ledger: RecVAE for 150 outer epochs (its reference 50 leave the best epoch at
the cap on ML-100K and ML-1M, and so do 100 for two of its three PIA models on ML-100K, best epochs 80 and 82;
a capped comparison is inconclusive by rule). The run cache continues 100-epoch runs to 150."""
QUICK_UPLIFT = ("--models", "multvae")
"""``pia_uplift`` options of the quick ledger (Multi-VAE only, to keep CI short; the full run has both)."""


@dataclass(frozen=True)
class Budget:
    """What the full ledger trains on a dataset too large for 2 cores at the default (fixed before its results).

    ``seeds``: at most this many of ``--seeds`` (the first ones); ``epochs`` / ``anneal_epochs``: ``--epochs`` and
    ``--anneal-epochs`` of every training job (beta reaches its cap at the same share of training as the default
    50 of 200); ``uplift``: whether ``pia_uplift`` runs (its rule needs at least 2 seeds, so with one it could only
    say inconclusive: its row says why it was not run, and the PIA jobs use the lambda_A that an earlier dataset
    of the same ledger chose for Multi-VAE); ``kl_users``: ``--users`` of ``kl_budget``, a random sample of the
    training users (its KL budget, pair bounds and transport check grow as (users x mask draws)^2).
    """

    seeds: int | None = None
    epochs: int | None = None
    anneal_epochs: int | None = None
    uplift: bool = True
    kl_users: int | None = None
    why: str = ""

    def seeds_of(self, seeds: Sequence[int]) -> list[int]:
        """The seeds this dataset runs: the first ``self.seeds`` of ``seeds`` (all when unset)."""
        return list(seeds[: self.seeds] if self.seeds else seeds)

    def train_options(self) -> list[str]:
        argv = [] if self.epochs is None else ["--epochs", str(self.epochs)]
        return argv + ([] if self.anneal_epochs is None else ["--anneal-epochs", str(self.anneal_epochs)])

    def job_options(self, job: str) -> list[str]:
        """Options of ``job`` beyond training: ``--users`` of ``kl_budget``."""
        return ["--users", str(self.kl_users)] if job == "kl_budget" and self.kl_users is not None else []


BUDGETS: Mapping[str, Budget] = {
    "gowalla": Budget(
        seeds=1,
        epochs=50,
        anneal_epochs=12,
        uplift=False,
        kl_users=10_000,
        why="23,858 training users x 40,981 items: 40-44 s per Multi-VAE epoch on 2 quiet cores (measured), so one "
        "seed, 50 epochs and no lambda_A search; kl_budget on 10,000 of the training users (all 23,858 x 5 mask "
        "draws would take about an hour per rho < 1 setting: benchmarks/RESULTS_geometry.md scaled by K^2)",
    )
}
"""Per-dataset budgets of the full ledger (``--quick`` ignores them). Claims decided across seeds are inconclusive
on a one-seed dataset by their rule (the training noise is not measured); data claims and per-seed ones are not."""
PIA_JOBS = frozenset({"pia_geometry", "cohorts"})
"""Jobs given the lambda_A that ``pia_uplift`` chose for Multi-VAE."""
UPLIFT = JobSpec("pia_uplift", "PIA accuracy gain, like for like", "uplift.json", "", {}, ())
JOB_SPECS: dict[str, JobSpec] = {**{n: REPORT_JOBS[n] for n in SEED_JOBS}, "pia_uplift": UPLIFT}
PREVALENCE_THRESHOLD = 0.01
KL_GROWTH_LIMIT = 0.5
"""Growth of Î(X_h; Z) per unit of log(users) above which the split is taken to follow the sample (a fully
separated mixture grows by 1, log N itself)."""
DRIFT_THRESHOLD = 0.5
MC_COVERAGE_FLOOR = 0.93
"""The Monte Carlo check of Theorem 2.6 fails when even the 99% Wilson upper end of the share of exact
probabilities inside their MC 95% intervals is below this (0.95 nominal, less an allowance for the discrete
binomial intervals)."""


class Unmeasurable(Exception):
    """A claim that cannot be measured on this dataset and seed (the reason is the message)."""


@dataclass
class Measurement:
    """One seed's measurement of a claim."""

    estimate: float
    ci: list[float] | None
    verdict: str
    source: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    kind: str  # "unit check" or "empirical"
    combine: str  # "unit", "mean", "every", "data"
    rule: str
    measure: Callable[[Mapping[str, dict], Path], Measurement]
    jobs: tuple[str, ...]
    planted: str | None = None
    direction: int = 1  # mean mode: +1 the claim says estimate > threshold, -1 below
    threshold: float = 0.0

    @property
    def reference(self) -> float | None:
        """The value the verdict compares the estimate with (None for unit checks), shown in the figure."""
        return {
            "unit": None,
            "expected_expansion_prevalence": PREVALENCE_THRESHOLD,
            "near_expansion_drift": DRIFT_THRESHOLD,
            "kl_decomposition": KL_GROWTH_LIMIT,
        }.get(self.combine if self.combine == "unit" else self.key, self.threshold)


# ------------------------------------------------------------------------------------------- the statistics


def wilson(successes: float, n: int, level: float = LEVEL) -> list[float]:
    """Wilson score interval of ``successes / n`` as a list (:func:`geometry.masking.wilson_interval`)."""
    low, high = wilson_interval(round(successes), n, level)
    return [float(low), float(high)]


def side(ci: Sequence[float] | None, threshold: float, direction: int) -> str:
    """``supported`` when ``ci`` lies strictly on the claimed side of ``threshold`` (``direction`` +1: above,
    -1: below), ``not supported`` when it lies strictly on the other side, else ``inconclusive``."""
    if ci is None:
        return "inconclusive"
    low, high = ci
    if direction > 0:
        return "supported" if low > threshold else "not supported" if high < threshold else "inconclusive"
    return "supported" if high < threshold else "not supported" if low > threshold else "inconclusive"


def normal_ci(mean: float, se: float, level: float = LEVEL) -> list[float]:
    z = float(stats.norm.ppf(0.5 + level / 2))
    return [mean - z * se, mean + z * se]


def clustered_mean(values: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` and its standard error with clusters (e.g. pairs of one anchor) as the units:
    cluster means, then their mean and standard error (equal weight per cluster)."""
    frame = pd.DataFrame({"v": values, "g": clusters}).groupby("g")["v"].mean()
    if frame.size < 2:
        raise Unmeasurable(f"{frame.size} cluster(s): no standard error")
    return float(frame.mean()), float(frame.std(ddof=1) / math.sqrt(frame.size))


def seeds_ci_kind(spread: Mapping) -> str:
    """How an :func:`analyses.results.across_seeds` interval was made, for a row's ``ci_kind``."""
    if "within_se" in spread:
        return f"{SHARED_ERROR_CI}, {spread['n']} seeds"
    return f"Student-t across {spread['n']} seeds"


def combine(claim: Claim, per_seed: Sequence[tuple[int, Measurement]], trained: bool) -> dict:
    """The row fields ``estimate``, ``ci``, ``ci_kind``, ``verdict`` and ``reason`` from the seeds'
    measurements, by the claim's ``combine`` mode (module docstring)."""
    verdicts = [m.verdict for _, m in per_seed]
    first = per_seed[0][1]
    if claim.combine == "unit":
        holds = all(v == "supported" for v in verdicts)
        return {
            "estimate": first.estimate,
            "ci": None,
            "ci_kind": None,
            "verdict": "supported" if holds else "not supported",
            "reason": "unit check: holds by construction on every seed"
            if holds
            else "violated on seed(s) " + ", ".join(str(s) for s, m in per_seed if m.verdict != "supported"),
        }
    if claim.combine == "data":
        return {
            "estimate": first.estimate,
            "ci": first.ci,
            "ci_kind": f"within the first seed's sample ({per_seed[0][0]})",
            "verdict": first.verdict,
            "reason": None,
        }
    finite = [(m.estimate, m.ci) for _, m in per_seed if m.estimate is not None and math.isfinite(m.estimate)]
    within = None
    if claim.combine == "mean" and all(ci is not None for _, ci in finite):
        # each seed's own interval is its sampling error, which seeds measuring overlapping users share
        z = float(stats.norm.ppf(0.5 + LEVEL / 2))
        within = [(ci[1] - ci[0]) / (2 * z) for _, ci in finite]
    spread = across_seeds([e for e, _ in finite], LEVEL, within) if finite else None
    if claim.combine == "mean":
        if spread is None or spread["ci"] is None:
            return {
                "estimate": spread["mean"] if spread else None,
                "ci": first.ci,
                "ci_kind": "within one seed (training noise not included)",
                "verdict": "inconclusive",
                "reason": "one seed: the variation between trainings is not measured",
            }
        return {
            "estimate": spread["mean"],
            "ci": spread["ci"],
            "ci_kind": seeds_ci_kind(spread),
            "verdict": side(spread["ci"], claim.threshold, claim.direction),
            "reason": None,
        }
    # every
    if len(per_seed) < 2 and trained:
        verdict, reason = "inconclusive", "one seed: the variation between trainings is not measured"
    elif all(v == "supported" for v in verdicts):
        verdict, reason = "supported", "supported on every seed"
    elif all(v == "not supported" for v in verdicts):
        verdict, reason = "not supported", "rejected on every seed"
    else:
        verdict, reason = "inconclusive", "seeds disagree: " + ", ".join(f"{s}: {m.verdict}" for s, m in per_seed)
    # the interval that matches a conjunction of per-seed tests: the hull of the seeds' own intervals
    cis = [m.ci for _, m in per_seed]
    hull = None if any(ci is None for ci in cis) else [min(ci[0] for ci in cis), max(ci[1] for ci in cis)]
    return {
        "estimate": spread["mean"] if spread else first.estimate,
        "ci": hull,
        "ci_kind": "hull of the per-seed intervals" if len(cis) > 1 else "within one seed",
        "verdict": verdict,
        "reason": reason,
    }


# ------------------------------------------------------------------------------------- per-seed measurements


def _doc(docs: Mapping[str, dict], job: str) -> dict:
    doc = docs.get(job)
    if doc is None:
        raise Unmeasurable(f"job {job} did not run")
    return doc


def _unit_check(estimate: float, violations: int, source: str, **detail: object) -> Measurement:
    """A check that holds by construction: supported exactly when nothing violates it."""
    return Measurement(
        estimate,
        None,
        "supported" if violations == 0 else "not supported",
        source,
        {"violations": violations, **detail},
    )


def measure_lipschitz(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "local_vs_global")
    return _unit_check(
        float(lookup(doc, "lipschitz/looseness_upper")),
        int(sum(int(v) for v in lookup(doc, "lipschitz/violations").values())),
        "local_vs_global/summary.json: lipschitz.looseness_upper, lipschitz.violations",
        max_ratio=lookup(doc, "lipschitz/ratios/upper/max"),
    )


def measure_transport(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "local_vs_global")
    return _unit_check(
        1.0 - float(lookup(doc, "transport/all_pairs/min_relative_slack")),
        int(lookup(doc, "transport/all_pairs/violations")) + int(lookup(doc, "transport/sampled_violations")),
        "local_vs_global/summary.json: transport.all_pairs.min_relative_slack, transport.*violations",
        pairs=lookup(doc, "transport/all_pairs/pairs"),
    )


def measure_masked_law(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "masking_contraction")
    rows = [r for r in lookup(doc, "table") if r.get("mc_pairs")]
    if not rows:
        raise Unmeasurable("no Monte Carlo pairs")
    n = int(sum(r["mc_pairs"] for r in rows))
    share = float(sum(r["mc_in_ci"] * r["mc_pairs"] for r in rows) / n)
    ci = wilson(share * n, n, 0.99)
    return Measurement(
        share,
        ci,
        "supported" if ci[1] >= MC_COVERAGE_FLOOR else "not supported",
        "masking_contraction/summary.json: table[].mc_in_ci (weighted by mc_pairs)",
        {"mc_pairs": n},
    )


def _stratum(doc: Mapping, stratum: str) -> dict:
    rows = [r for r in lookup(doc, "table") if r["stratum"] == stratum]
    if not rows or not rows[0]["pairs"]:
        raise Unmeasurable(f"no {stratum} pairs")
    return rows[0]


def measure_prevalence(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "masking_contraction")
    row = _stratum(doc, "near")
    n = int(row["pairs"])
    share = float(row["share_expected_expansion"])
    ci = wilson(share * n, n)
    return Measurement(
        share,
        ci,
        side(ci, PREVALENCE_THRESHOLD, +1),
        "masking_contraction/summary.json: table[stratum=near].share_expected_expansion",
        {"pairs": n, "rho": row["rho"]},
    )


def stratum_difference(pairs: pd.DataFrame, column: str, a: str, b: str) -> tuple[float, list[float], dict]:
    """Mean of ``column`` over stratum ``a`` minus over stratum ``b`` of a ``pairs.csv`` table, with a normal
    interval whose standard errors take each stratum's anchors as the units (:func:`clustered_mean`); also the two
    means by stratum."""
    means, ses = {}, []
    for stratum in (a, b):
        part = pairs[pairs["stratum"] == stratum]
        means[stratum], se = clustered_mean(part[column].to_numpy(float), part["anchor"].to_numpy())
        ses.append(se)
    diff = means[a] - means[b]
    return diff, normal_ci(diff, math.hypot(*ses)), means


def measure_far_related(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "masking_contraction")
    for stratum in ("far", "far-related"):
        _stratum(doc, stratum)
    pairs = pd.read_csv(folder / "masking_contraction" / "pairs.csv")
    diff, ci, means = stratum_difference(pairs, "p_contraction_masked", "far-related", "far")
    return Measurement(
        diff,
        ci,
        side(ci, 0.0, +1),
        "masking_contraction/pairs.csv: p_contraction_masked by stratum (far-related - far), clustered by anchor",
        means,
    )


def measure_drift(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "masking_contraction")
    drift = lookup(doc, "realised_drift")
    if not drift:
        raise Unmeasurable("no realised drift (--drift-draws 0)")
    clean = drift[0]["clean_to_masked"]
    return Measurement(
        float(clean["mean"]),
        list(clean["ci"]),
        side(clean["ci"], DRIFT_THRESHOLD, +1),
        "masking_contraction/summary.json: realised_drift[0].clean_to_masked",
        {"n_users": clean["n_users"], "rho": drift[0]["rho"], "k": drift[0]["k"]},
    )


def _kl_row(doc: Mapping, beta: float, rho: float) -> dict:
    for row in lookup(doc, "table"):
        if math.isclose(row["beta_cap"], beta) and math.isclose(row["rho"], rho):
            return row
    raise Unmeasurable(f"no kl_budget row at beta cap {beta:g}, rho {rho:g}")


def sample_growth(doc: Mapping, beta: float, rho: float) -> dict:
    """How much Î(X_h; Z) still rises with the number of users, per unit of log(users): from the two largest user
    counts of ``kl_budget``'s ``against_sample`` table (at the most mask draws that has two of them),
    ``growth = (Î(N2) - Î(N1)) / log(N2 / N1)``. A separated mixture gives 1 (each doubling adds log 2: the
    estimate follows the sample), a converged one 0. Its standard error treats the two estimates as
    independent (conservative: the smaller sample is part of the larger)."""
    rows = [
        r for r in lookup(doc, "against_sample") if math.isclose(r["beta_cap"], beta) and math.isclose(r["rho"], rho)
    ]
    by_draws: dict[int, list[dict]] = {}
    for r in rows:
        by_draws.setdefault(int(r["draws"]), []).append(r)
    usable = [d for d, rs in by_draws.items() if len({r["users"] for r in rs}) >= 2]
    if not usable:
        raise Unmeasurable("against_sample has fewer than two user counts")
    series = sorted(by_draws[max(usable)], key=lambda r: r["users"])
    small, large = series[-2], series[-1]
    span = math.log(large["users"] / small["users"])
    growth = (large["mutual_information"] - small["mutual_information"]) / span
    se = math.hypot(large["mutual_information_se"], small["mutual_information_se"]) / span
    return {"growth": growth, "se": se, "users": [small["users"], large["users"]], "draws": max(usable)}


def measure_kl_split(docs: Mapping[str, dict], folder: Path) -> Measurement:
    """Is the split of E KL into I(X_h; Z) and KL(q_h || p) identified at the sampled size (beta cap 0.2, rho 0.5,
    the geometry jobs' model)? The estimate is how fast Î still rises with the number of users
    (:func:`sample_growth`); the saturation flag of ``kl_budget`` (Î within 5% of log K) decides on its own."""
    doc = _doc(docs, "kl_budget")
    row = _kl_row(doc, 0.2, 0.5)
    growth = sample_growth(doc, 0.2, 0.5)
    ci = normal_ci(growth["growth"], growth["se"])
    detail = {
        "mutual_information": row["mutual_information"],
        "log_components": row["log_components"],
        "saturation": row["saturation"],
        "growth_users": growth["users"],
    }
    source = (
        "kl_budget/summary.json: table[beta_cap=0.2, rho=0.5].saturated and against_sample (Î against users at "
        "beta_cap=0.2, rho=0.5)"
    )
    if row["saturated"]:
        return Measurement(growth["growth"], ci, "not supported", source, detail)
    return Measurement(growth["growth"], ci, side(ci, KL_GROWTH_LIMIT, -1), source, detail)


def measure_beta_w1(docs: Mapping[str, dict], folder: Path) -> Measurement:
    """Mean pairwise W2 (upper end of W1) at the largest beta cap minus at the smallest, clean input."""
    doc = _doc(docs, "kl_budget")
    rows = sorted((r for r in lookup(doc, "table") if math.isclose(r["rho"], 1.0)), key=lambda r: r["beta_cap"])
    if len(rows) < 2:
        raise Unmeasurable("fewer than two beta caps at rho = 1")
    low, high = rows[0], rows[-1]
    diff = float(high["mean_w1_upper"] - low["mean_w1_upper"])
    return Measurement(
        diff,
        None,
        "supported" if diff < 0 else "not supported",
        "kl_budget/summary.json: table[rho=1].mean_w1_upper (largest - smallest beta cap)",
        {"beta_caps": [low["beta_cap"], high["beta_cap"]], "w1": [low["mean_w1_upper"], high["mean_w1_upper"]]},
    )


def measure_radius(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "sharing_radius")
    radius = lookup(doc, "radius")
    slope_ci = radius.get("slope_ci")
    if radius.get("estimate") is not None:
        verdict = "supported"
    elif slope_ci is not None and slope_ci[0] > 0:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return Measurement(
        float(radius["slope"]),
        list(slope_ci) if slope_ci is not None else None,
        verdict,
        "sharing_radius/summary.json: radius.slope, radius.slope_ci, radius.estimate",
        {"radius": radius.get("estimate"), "radius_ci": radius.get("ci"), "reason": radius.get("reason")},
    )


def _pia_row(doc: Mapping, quantity: str) -> dict:
    for row in lookup(doc, "summary"):
        if row["quantity"] == quantity and row["cohort"] == "all":
            return row
    raise Unmeasurable(f"pia_geometry has no {quantity} row")


def _pia_measure(quantity: str) -> Callable[[Mapping[str, dict], Path], Measurement]:
    def measure(docs: Mapping[str, dict], folder: Path) -> Measurement:
        row = _pia_row(_doc(docs, "pia_geometry"), quantity)
        ci = normal_ci(row["diff"], row["diff_se"])
        return Measurement(
            float(row["diff"]),
            ci,
            side(ci, 0.0, -1),
            f"pia_geometry/summary.json: summary[quantity={quantity}, cohort=all].diff (PIA - no PIA), diff_se",
            {"no_pia": row["no PIA"], "pia": row["PIA"], "n": row["n"]},
        )

    return measure


def measure_centroid(docs: Mapping[str, dict], folder: Path) -> Measurement:
    doc = _doc(docs, "pia_geometry")
    block = lookup(doc, "centroid_alignment")
    if block.get("mean") is None:
        raise Unmeasurable(block.get("reason") or "no centroid alignment measured")
    ci = list(block["ci"])
    return Measurement(
        float(block["mean"]),
        ci,
        side(ci, 0.0, -1),
        "pia_geometry/summary.json: centroid_alignment (own - other users' anchor centroid distance)",
        {k: block[k] for k in ("n_users", "own", "other") if k in block},
    )


def measure_separation(docs: Mapping[str, dict], folder: Path) -> Measurement:
    probe = lookup(_doc(docs, "cohorts"), "probes/clean/knn")
    return Measurement(
        float(probe["accuracy"] - probe["chance"]),
        [probe["ci"][0] - probe["chance"], probe["ci"][1] - probe["chance"]],
        "supported" if probe["verdict"] == "separated" else "inconclusive",
        "cohorts/summary.json: probes.clean.knn (accuracy - chance, permutation p-value)",
        {"accuracy": probe["accuracy"], "chance": probe["chance"], "p_value": probe["p_value"]},
    )


def measure_entanglement(docs: Mapping[str, dict], folder: Path) -> Measurement:
    block = lookup(_doc(docs, "cohorts"), "entanglement/clean_minus_masked/knn")
    return Measurement(
        float(block["mean"]),
        list(block["ci"]),
        side(block["ci"], 0.0, +1),
        "cohorts/summary.json: entanglement.clean_minus_masked.knn (paired per user)",
        {"n_users": block["n_users"]},
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "lemma_2_4_lipschitz",
        "Lemma 2.4: W1(q_u, q_v) <= L ||x_u - x_v||_1 with L certified from the encoder's weights",
        "unit check",
        "unit",
        "holds (supported) when no sampled pair exceeds the certificate on any seed; the estimate is how loose the "
        "certificate is (certified L / the largest empirical ratio)",
        measure_lipschitz,
        ("local_vs_global",),
    ),
    Claim(
        "transport_bound",
        "W2(q_u, q_v) <= sqrt(2 KL_u) + sqrt(2 KL_v) for every pair",
        "unit check",
        "unit",
        "holds when no pair of the all-pairs sample violates it on any seed; the estimate is the largest share "
        "of the bound a pair uses (1 - min relative slack)",
        measure_transport,
        ("local_vs_global",),
    ),
    Claim(
        "theorem_2_6_law",
        "Theorem 2.6: D' = Bin(d, rho) + Bin(c, 2 rho (1 - rho)) is the law of the masked distance",
        "unit check",
        "unit",
        f"holds when the 99% Wilson upper end of the share of exact probabilities inside their Monte Carlo 95% "
        f"intervals is >= {MC_COVERAGE_FLOOR} on every seed",
        measure_masked_law,
        ("masking_contraction",),
    ),
    Claim(
        "expected_expansion_prevalence",
        "near pairs with c/d > 1/(2 rho), whose expected masked distance grows, are not rare (> 1%)",
        "empirical",
        "data",
        f"supported if the 95% Wilson interval of the share among sampled near pairs lies above "
        f"{PREVALENCE_THRESHOLD}, not supported if below, else inconclusive (first seed's sample)",
        measure_prevalence,
        ("masking_contraction",),
        planted="taste clusters: near users share most of their items",
    ),
    Claim(
        "far_related_contraction",
        "masking brings far-but-related pairs into the anchor's masked 10-NN radius more often than far pairs",
        "empirical",
        "data",
        "supported if the 95% interval (clustered by anchor) of mean Pr[D' <= delta_m], far-related minus far, "
        "lies above 0, not supported if below, else inconclusive",
        measure_far_related,
        ("masking_contraction",),
    ),
    Claim(
        "near_expansion_drift",
        "masking pushes genuine neighbours out: most of an anchor's clean 10 nearest are not among its masked 10",
        "empirical",
        "data",
        f"supported if the 95% interval over anchors of the realised drift (every user masked independently) lies "
        f"above {DRIFT_THRESHOLD}, not supported if below, else inconclusive",
        measure_drift,
        ("masking_contraction",),
    ),
    Claim(
        "kl_decomposition",
        "the split E KL = I(X_h; Z) + KL(q_h || p) is identified at the sampled size (beta cap 0.2, rho 0.5): "
        "Î is below its ceiling log K and no longer follows the sample",
        "empirical",
        "every",
        f"per seed: not supported when kl_budget flags the split saturated (Î within 5% of log K); else the growth "
        f"of Î per unit of log(users) between the two largest user samples decides: supported if its 95% interval "
        f"lies below {KL_GROWTH_LIMIT}, not supported if above (the estimate follows the sample, as log N does), "
        f"else inconclusive; combined over seeds (every)",
        measure_kl_split,
        ("kl_budget",),
    ),
    Claim(
        "beta_shrinks_w1",
        "a larger beta cap shrinks the mean pairwise latent distance (clean input)",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of mean W2 (largest beta cap) - mean W2 (smallest) lies below 0",
        measure_beta_w1,
        ("kl_budget",),
        direction=-1,
    ),
    Claim(
        "sharing_radius",
        "Result 1: a step on v helps u only within a latent sharing radius (help falls with W1)",
        "empirical",
        "every",
        "supported on a seed when the sharing_radius job reports a radius (bootstrap slope interval below 0 and "
        "intercept interval above 0), not supported when the slope interval lies above 0; combined over seeds "
        "(every)",
        measure_radius,
        ("sharing_radius",),
        planted="taste clusters: a step on a user's items helps users of its own taste group, latent-near",
    ),
    Claim(
        "pia_centroid",
        "Proposition 3.1: PIA pulls mu toward the centroid of the user's own item anchors",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of mean ||mu_u - ebar_u|| - mean ||mu_u - ebar_v|| (v another "
        "user) lies below 0",
        measure_centroid,
        ("pia_geometry",),
        direction=-1,
    ),
    Claim(
        "pia_var_b",
        "Proposition 3.2: PIA shrinks tr Var_b mu(x ⊙ b)",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of the paired difference PIA - no PIA lies below 0",
        _pia_measure("var_b"),
        ("pia_geometry",),
        direction=-1,
    ),
    Claim(
        "pia_var_b_relative",
        "Proposition 3.2, scale-free: PIA shrinks tr Var_b mu relative to the between-user spread",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of the paired difference PIA - no PIA lies below 0",
        _pia_measure("var_b_relative"),
        ("pia_geometry",),
        direction=-1,
    ),
    Claim(
        "pia_drift",
        "PIA stabilises neighbourhoods: less kNN drift between two mask draws",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of the paired difference PIA - no PIA lies below 0",
        _pia_measure("drift_draws"),
        ("pia_geometry",),
        direction=-1,
    ),
    Claim(
        "cohort_separation",
        "clean input separates interaction-level cohorts in latent space",
        "empirical",
        "every",
        "supported on a seed when the 10-NN probe's permutation p-value <= 0.05 (cross-validated accuracy of the "
        "cohort label from clean latent means); combined over seeds (every)",
        measure_separation,
        ("cohorts",),
        planted="activity cohorts of about 5, 50 and 350 interactions",
    ),
    Claim(
        "cohort_entanglement",
        "masking entangles cohorts: the probe separates them less under masking than on clean input",
        "empirical",
        "mean",
        "supported if the across-seed 95% interval of the paired clean - masked 10-NN probe accuracy lies above 0",
        measure_entanglement,
        ("cohorts",),
    ),
)
"""The claims, in ledger order; the PIA accuracy gain rows come from ``pia_uplift`` (:func:`uplift_rows`)."""
TRAINED_JOBS = frozenset({"local_vs_global", "kl_budget", "sharing_radius", "pia_geometry", "cohorts"})


def uplift_architectures(argv: Sequence[str]) -> list[str]:
    """The architectures a ``pia_uplift`` command line compares, in the job's order, read by the job's own parser
    (``--models``, else its default; words it does not know, such as ``python -m ...``, are left aside)."""
    from analyses.pia_uplift import ARCHITECTURES, build_parser

    models = build_parser().parse_known_args(list(argv))[0].models
    return [m for m in ARCHITECTURES if m in models]


def uplift_rows(
    doc: dict | None,
    dataset: str,
    seeds: Sequence[int],
    command: str,
    error: str | None,
    architectures: Sequence[str] = (),
) -> list[dict]:
    """The PIA accuracy-gain rows (one per architecture) from ``pia_uplift``'s JSON, its verdict and rule; without
    the JSON (the job failed, or a budget skipped it), one ``inconclusive`` row per architecture of
    ``architectures`` saying why, so that every dataset has the same claims."""
    statement = "PIA raises test NDCG@100 over a like-for-like masked baseline (paired per user, across seeds)"
    if doc is None:
        return [
            {
                "claim": f"pia_accuracy_gain[{arch}]",
                "statement": statement + f" ({arch})",
                "kind": "empirical",
                "dataset": dataset,
                "seeds": list(seeds),
                "estimate": None,
                "ci": None,
                "ci_kind": None,
                "verdict": "inconclusive",
                "reason": f"not measured: {error}",
                "rule": "see analyses.pia_uplift",
                "command": command,
                "source": "pia_uplift/uplift.json",
                "per_seed": [],
                "planted": None,
            }
            for arch in architectures
        ]
    from analyses.pia_uplift import uplift_verdict

    rows = []
    for arch, block in doc["per_architecture"].items():
        # the current rule on the job's per-seed gains (a pia_uplift JSON of an earlier version reads the same)
        gains = [s["paired"]["ndcg@100"]["mean"] for s in block["per_seed"]]
        ses = [s["paired"]["ndcg@100"]["se"] for s in block["per_seed"]]
        if not gains:  # the job stopped before evaluating a seed
            spread = {"mean": None, "ci": None}
            verdict, reason = "inconclusive", "no seed was evaluated"
        else:
            spread = across_seeds(gains, LEVEL, ses)
            verdict, reason = uplift_verdict(
                gains, interior=block["interior"], capped=block["capped_models"], within_se=ses
            )
        rows.append(
            {
                "claim": f"pia_accuracy_gain[{arch}]",
                "statement": statement + f" ({arch}, lambda_A {block['chosen_lambda']:g} chosen on validation)",
                "kind": "empirical",
                "dataset": dataset,
                "seeds": list(seeds),
                "estimate": spread["mean"],
                "ci": spread["ci"],
                "ci_kind": seeds_ci_kind(spread) if spread["ci"] else "none",
                "verdict": verdict,
                "reason": reason,
                "rule": doc["rule"],
                "command": command,
                "source": f"pia_uplift/uplift.json: per_architecture.{arch}.per_seed[].paired.ndcg@100 (mean, se), "
                "interior, capped_models",
                "per_seed": [
                    {
                        "seed": s["seed"],
                        "estimate": s["paired"]["ndcg@100"]["mean"],
                        "se": s["paired"]["ndcg@100"]["se"],
                    }
                    for s in block["per_seed"]
                ],
                "planted": None,
                "reference": 0.0,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------- running


def parse_datasets(values: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(values))
    for name in names:
        if not known_dataset(name):
            raise JobError(f"--datasets: {unknown_dataset(name)}")
    return names


def job_argv(
    job: str,
    dataset: str,
    seed: int,
    out: Path,
    quick: bool,
    progress: bool,
    lam: float | None,
    budget: Budget | None = None,
    data: Sequence[str] = (),
) -> list:
    argv = ["--dataset", dataset, *data, "--seed", str(seed), "--out", str(out)]
    if job in TRAIN_SEED_JOBS:
        argv += ["--train-seed", str(seed)]
    if job in PIA_JOBS and lam is not None:
        argv += ["--lambda-a", f"{lam:g}"]
    if job in TRAINED_JOBS and budget is not None:
        argv += budget.train_options()
    argv += [] if budget is None else budget.job_options(job)
    argv += list(JOB_OPTIONS.get(job, ()))
    return argv + (["--quick"] if quick else []) + ([] if progress else ["--no-progress"])


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "The claims ledger: one row per claim and dataset with estimate, interval, a verdict fixed by a rule "
        "written before the results, and the command that measured it.",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        help=f"datasets (default {' '.join(FULL_DATASETS)}; --quick: {' '.join(QUICK_DATASETS)})",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help=f"seeds: each is a training seed and a sample seed (default {' '.join(map(str, FULL_SEEDS))}; "
        f"--quick: {' '.join(map(str, QUICK_SEEDS))})",
    )
    parser.add_argument("--out", type=Path, help="output folder (default out/claims/DATASETS-seedsS[-quick]-HASH)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, synthetic and synthetic-null unless --datasets: minutes"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that train pia_uplift's models side by side (its --workers; default 1)",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        metavar="DATASET=PATH",
        default=[],
        help="a baselines file for a dataset of --datasets (the results.json of experiments/baselines_ml1m.py, "
        "e.g. ml-1m=experiments/results_baselines_ml1m.json): its models join the accuracy comparison "
        "(comparison.json, claims.md) beside pia_uplift's, each with its paired difference from its reference",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="LEDGER",
        default=[],
        help="no jobs: join finished ledger folders (each one ledger's --out, e.g. one dataset per session) into "
        "one, in the order given: every row and the accuracy comparison recomputed from their job files under the "
        "current rules, their runs/ copied; every other option but --out is refused",
    )
    add_dataset_arguments(parser, refresh=False)  # passed on to every job (tables: csv:PATH with its columns)
    return parser


def parse_baselines(values: Sequence[str], datasets: Sequence[str]) -> dict[str, tuple[str, dict]]:
    """``--baselines DATASET=PATH ...`` read and checked before any job runs: dataset -> (path, document)."""
    found: dict[str, tuple[str, dict]] = {}
    for value in values:
        dataset, sep, path = value.partition("=")
        if not sep or not dataset or not path:
            raise JobError(
                f"--baselines: {value!r} is not DATASET=PATH, e.g. ml-1m=experiments/results_baselines_ml1m.json"
            )
        if dataset not in datasets:
            raise JobError(f"--baselines: {dataset} is not one of --datasets ({' '.join(datasets)})")
        if dataset in found:
            raise JobError(f"--baselines: {dataset} is given twice; give one file per dataset")
        found[dataset] = (path, read_baselines(Path(path), dataset))
    return found


@dataclass
class JobRun:
    job: str
    dataset: str
    seed: int | None
    command: str
    status: str
    seconds: float
    error: str | None
    doc: dict | None
    folder: Path
    resumed: bool = False


RESUME_FILE = "resume.json"
"""The journal of a ledger's staging folder: its options hash, the code it ran and the jobs it finished."""
CODE_PACKAGES = ("analyses", "geometry", "models", "figures")


def code_fingerprint() -> str:
    """SHA-256 (16 hex digits) of every ``.py`` file of the toolkit's packages, names and contents: a resumed ledger
    keeps a finished job only when the code that ran it is the code running now."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class ResumeJournal:
    """What a ledger run has finished, kept in its staging folder (``RESUME_FILE``) so that the same command, run
    again after a kill, a failure or the end of a session, reuses each finished job instead of running it again.

    A staging folder is taken over only when its journal has the same options hash (the same command's results)
    and the same :func:`code_fingerprint`; a job is reused only when its recorded command is the one it would run
    now and its folder is a finished output (``COMPLETE``). Models come from the run cache either way.
    """

    def __init__(self, options: Mapping[str, object]) -> None:
        self.head = {"options_hash": options_hash(options), "code": code_fingerprint()}
        self.jobs: dict[str, dict] = {}
        self.path: Path | None = None

    def _journal(self, staging: Path) -> dict | None:
        """The journal in ``staging`` if it is an interrupted run of this ledger under this code, else None."""
        try:
            doc = json.loads((staging / RESUME_FILE).read_text())
        except (OSError, ValueError):
            return None
        ours = isinstance(doc, dict) and all(doc.get(k) == v for k, v in self.head.items())
        return doc if ours and isinstance(doc.get("jobs", {}), dict) else None

    def matches(self, staging: Path) -> bool:
        """Whether ``staging`` is an interrupted run of this ledger under this code."""
        return self._journal(staging) is not None

    def open(self, staging: Path) -> int:
        """Read the journal of a taken-over staging folder (or start one); the number of finished jobs in it."""
        self.path = staging / RESUME_FILE
        doc = self._journal(staging)
        self.jobs = dict(doc.get("jobs") or {}) if doc is not None else {}
        self._write()
        return len(self.jobs)

    def _write(self) -> None:
        assert self.path is not None
        write_json(self.path, {**self.head, "jobs": self.jobs})

    def finished(self, spec: JobSpec, where: Path, command: str) -> JobResult | None:
        """The recorded result of the job writing ``where`` with ``command``, if it finished in an earlier run."""
        entry = self.jobs.get(self._key(where))
        if entry is None or entry.get("command") != command or not (where / COMPLETE_MARKER).is_file():
            return None
        try:
            doc = json.loads((where / spec.json_name).read_text())
        except (OSError, ValueError):
            return None
        seconds = float(entry["seconds"])
        return JobResult(spec.name, command, where, "ok", 0, None, seconds, doc, figure_stems(doc, where))

    def record(self, result: JobResult) -> None:
        if result.status == "ok":
            self.jobs[self._key(result.out)] = {"command": result.command, "seconds": round(result.seconds, 3)}
            self._write()

    def close(self) -> None:
        """The ledger finished: its folder carries no journal."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _key(self, where: Path) -> str:
        assert self.path is not None
        return Path(where).relative_to(self.path.parent).as_posix()


@dataclass
class LedgerPart:
    """A finished ledger read back from its folder (:func:`read_ledger`)."""

    folder: Path
    rows: list[dict]
    comparison: list[dict]
    manifest: dict
    marker: dict


def read_ledger(folder: Path) -> LedgerPart:
    """A finished ledger folder (an ``analyses.claims`` output), checked.

    Raises
    ------
    JobError
        One line naming the folder and the problem: not a folder, unfinished (no ``COMPLETE`` of job ``claims``),
        ``claims.json`` or ``ledger.json`` missing or not what the ledger writes.
    """
    where = f"--merge {folder}"
    if not Path(folder).is_dir():
        raise JobError(f"{where}: not a folder; give the --out folder of a finished analyses.claims run")
    if not (Path(folder) / COMPLETE_MARKER).is_file():
        raise JobError(
            f"{where}: not a finished claims ledger (no {COMPLETE_MARKER}); rerun its command until it completes "
            "(trained models come from the run cache)"
        )
    marker = read_json_doc(Path(folder) / COMPLETE_MARKER, where, "a finished ledger (rerun it until it completes)")
    if not isinstance(marker, dict) or marker.get("job") != JOB or marker.get("complete") is not True:
        raise JobError(f"{where}: not a finished claims ledger (its {COMPLETE_MARKER} names no finished 'claims')")
    rows = read_json_doc(Path(folder) / "claims.json", where, "a folder with the ledger's claims.json")
    needed = {"claim", "dataset", "seeds", "estimate", "ci", "verdict", "rule", "command"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and needed <= r.keys() for r in rows):
        raise JobError(f"{where}: claims.json is not a list of ledger rows (keys {', '.join(sorted(needed))})")
    manifest = read_json_doc(Path(folder) / "ledger.json", where, "a folder with the ledger's ledger.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("jobs"), list):
        raise JobError(f"{where}: ledger.json has no list of jobs; rerun the ledger")
    comparison: object = []
    if (Path(folder) / "comparison.json").exists():  # ledgers before the accuracy comparison have none
        comparison = read_json_doc(Path(folder) / "comparison.json", where, "the ledger's comparison.json")
        if not isinstance(comparison, list):
            raise JobError(f"{where}: comparison.json is not a list of rows; rerun the ledger")
    return LedgerPart(Path(folder), rows, comparison, manifest, marker)


def merge_parts(parts: Sequence[LedgerPart]) -> tuple[list[dict], list[dict]]:
    """The rows and comparison rows of ``parts`` in their order, each recomputed from its part's job files
    (:func:`rows_from_jobs`).

    A ledger measured in parts (one dataset per session, say) reads as one, under this version's rules; each row
    keeps its own command and seeds. Raises :class:`JobError` when two parts hold the same dataset (which one
    would stand is unclear) or when quick and full ledgers are mixed (tiny models are not results).
    """
    seen: dict[str, Path] = {}
    for part in parts:
        for dataset in dict.fromkeys(r["dataset"] for r in part.rows):
            if dataset in seen:
                raise JobError(
                    f"--merge: {dataset} is in both {seen[dataset]} and {part.folder}; give each dataset once"
                )
            seen[dataset] = part.folder
    quick = {bool(p.manifest.get("quick")) for p in parts}
    if len(quick) > 1:
        raise JobError("--merge: quick and full ledgers are mixed (tiny models are not results); merge like with like")
    rows, comparison = [], []
    for part in parts:
        for dataset in dict.fromkeys(r["dataset"] for r in part.rows):
            got, compared = rows_from_jobs(part, dataset)
            rows += got
            comparison += compared
    return rows, comparison


def dataset_folder(dataset: str) -> str:
    """The folder name of a dataset under ``OUT/runs`` (a table's path made one name)."""
    return dataset.replace(":", "_").replace("/", "_")


def _job_run(job: Mapping, folder: Path) -> JobRun:
    """A job of a ledger's ``ledger.json`` as the :class:`JobRun` the row builders read (its JSON not loaded)."""
    fields = ("job", "dataset", "seed", "command", "status", "seconds")
    return JobRun(*(job[k] for k in fields), job.get("error"), None, folder)


def _part_file(part: LedgerPart, rel: Path) -> dict:
    return read_json_doc(
        part.folder / rel, f"--merge {part.folder}", f"{rel} (the merge recomputes every row from the jobs' files)"
    )


def _baselines_of(options: Mapping) -> dict[str, str]:
    """The ``--baselines`` files of a ledger's options, by dataset (a merged ledger: those of its parts)."""
    found = dict(v.partition("=")[::2] for v in options.get("baselines") or [])
    for merged in options.get("merge") or []:
        found.update(_baselines_of(merged.get("options") or {}))
    return found


def rows_from_jobs(part: LedgerPart, dataset: str) -> tuple[list[dict], list[dict]]:
    """The rows and accuracy comparison of ``dataset`` recomputed by this version's rules from the job files of a
    finished ledger (``runs/DATASET/...``, as :func:`run` leaves them): a ledger measured in parts reads as one
    applied with one set of rules. A dataset whose budget skipped ``pia_uplift`` keeps its written gain row.

    Raises
    ------
    JobError
        A JSON file that a finished job wrote is missing or unreadable (one line naming it).
    OSError
        A finished ``masking_contraction``'s ``pairs.csv`` is missing (the far-related claim reads it).
    """
    runs = [_job_run(j, part.folder) for j in part.manifest["jobs"] if j["dataset"] == dataset]
    base = Path("runs") / dataset_folder(dataset)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    docs: dict[int, dict[str, dict]] = {s: {} for s in seeds}
    for r in runs:
        if r.seed is not None and r.status == "ok":
            docs[r.seed][r.job] = _part_file(part, base / f"seed{r.seed}" / r.job / JOB_SPECS[r.job].json_name)
    rows = ledger_rows(dataset, seeds, docs, {s: part.folder / base / f"seed{s}" for s in seeds}, runs)
    uplift = next((r for r in runs if r.job == "pia_uplift"), None)
    if uplift is None:  # a budget skipped it: the written rows, one per architecture as a run writes them now
        for row in (r for r in part.rows if r["dataset"] == dataset and r["claim"].startswith("pia_accuracy_gain")):
            if row["claim"] != "pia_accuracy_gain":
                rows.append(row)
                continue
            error = str(row.get("reason") or "").removeprefix("not measured: ")
            archs = uplift_architectures(shlex.split(row["command"]))
            rows += uplift_rows(None, dataset, row["seeds"], row["command"], error, archs)
        return rows, []
    doc = _part_file(part, base / "pia_uplift" / "uplift.json") if uplift.status == "ok" else None
    archs = uplift_architectures(shlex.split(uplift.command))
    rows += uplift_rows(doc, dataset, seeds, uplift.command, uplift.error, archs)
    path = _baselines_of(part.marker.get("options") or {}).get(dataset, "")
    compared = comparison_rows(
        dataset,
        doc,
        str(base / "pia_uplift" / "uplift.json"),
        uplift.command,
        read_baselines(Path(path), dataset) if path else None,
        path,
    )
    return rows, compared


def run_merge(args: argparse.Namespace) -> Path:
    """``--merge``: one ledger from finished ones (rows, comparison, job costs and ``runs/``), no job run."""
    defaults = vars(build_parser().parse_args([]))
    given = [
        f"--{k.replace('_', '-')}"
        for k, v in vars(args).items()
        if k not in ("merge", "out", "no_progress") and v != defaults.get(k)
    ]
    if given:
        raise JobError(f"--merge runs no job: drop {' '.join(given)} (the merged ledgers keep their own options)")
    folders = list(dict.fromkeys(Path(f) for f in args.merge))
    parts = [read_ledger(f) for f in folders]
    rows, comparison = merge_parts(parts)
    options = {
        "merge": [{"options_hash": p.marker.get("options_hash"), "options": p.marker.get("options")} for p in parts]
    }
    final = args.out or default_out_dir(
        JOB, "merged", "-".join(str(d) for d in dict.fromkeys(r["dataset"] for r in rows)), options
    )
    if any(Path(os.path.abspath(final)) == Path(os.path.abspath(f)) for f in folders):
        raise JobError(f"--out {final}: is one of the merged ledgers; write the merged one elsewhere")
    out = stage_output(final, JOB, options)
    runs = [_job_run(j, p.folder) for p in parts for j in p.manifest["jobs"]]
    for p in parts:  # the job outputs the rows' sources name, so the merged folder stands alone
        for dataset in dict.fromkeys(r["dataset"] for r in p.rows):
            src = p.folder / "runs" / dataset_folder(dataset)
            if src.is_dir():
                shutil.copytree(src, out / "runs" / src.name)
    seconds = sum(float(p.manifest.get("timing_seconds", {}).get("total", 0.0)) for p in parts)
    write_json(out / "claims.json", rows)
    write_json(out / "comparison.json", comparison)
    atomic_write_bytes(out / "claims.md", render_markdown(rows, runs, seconds, comparison).encode())
    files = [out / "claims.json", out / "comparison.json", out / "claims.md", *plot_claims(rows, out)]
    manifest = {
        "job": JOB,
        "datasets": list(dict.fromkeys(r["dataset"] for r in rows)),
        "seeds": sorted({s for r in rows for s in r["seeds"]}),
        "quick": bool(parts[0].manifest.get("quick")),
        "merged_from": [
            {"folder": str(p.folder), "command": p.marker.get("command"), "finished": p.marker.get("finished")}
            for p in parts
        ],
        "jobs": [j for p in parts for j in p.manifest["jobs"]],
        "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS},
    }
    save_result(out, "ledger.json", manifest, files, {"total": seconds})
    mark_output(failed_jobs=[f for p in parts for f in p.marker.get("failed_jobs", [])])
    print(render_table(rows))
    print(f"\nmerged {len(parts)} ledgers ({len(rows)} rows); claims: {display_path(final / 'claims.md')}")
    return out


def run(args: argparse.Namespace) -> Path:
    if args.merge:
        return run_merge(args)
    start = time.perf_counter()
    datasets = parse_datasets(args.datasets or (QUICK_DATASETS if args.quick else FULL_DATASETS))
    seeds = list(dict.fromkeys(args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else FULL_SEEDS)))
    for s in seeds:
        check_int("--seeds", s, 0)
    check_int("--workers", args.workers, 1)
    budgets = {} if args.quick else {d: BUDGETS[d] for d in datasets if d in BUDGETS}
    data = data_argv(args)
    baselines = parse_baselines(args.baselines, datasets)
    for dataset in datasets:  # before any job runs: each job would refuse it on its own
        try:
            check_data_options(dataset, data_options(args))
        except ValueError as exc:
            raise JobError(f"{exc}; run the ledger on the tables apart") from None
    # the data options enter the options (and their hash) only when given, so earlier ledgers keep theirs
    options = result_options(
        args, ignore=DATA_DESTS, datasets=datasets, seeds=seeds, budgets={d: asdict(b) for d, b in budgets.items()}
    )
    if data:
        options["data"] = data
    tag = "-".join(datasets) + "-seeds" + "-".join(map(str, seeds))
    final = args.out or default_out_dir(JOB, datasets[0] if len(datasets) == 1 else "all", tag, options)
    journal = ResumeJournal(options)
    out = stage_output(final, JOB, options, resume_from=journal.matches)
    if (kept := journal.open(out)) > 0:
        print(f"note: resuming an interrupted run of this ledger: {kept} finished job(s) kept", file=sys.stderr)
    progress = not args.no_progress
    runs: list[JobRun] = []
    rows: list[dict] = []
    comparison: list[dict] = []
    total_jobs = sum(
        (d not in budgets or budgets[d].uplift)
        + len(budgets[d].seeds_of(seeds) if d in budgets else seeds) * len(SEED_JOBS)
        for d in datasets
    )
    done = 0

    def run_one(job: str, dataset: str, seed: int | None, argv: list, where: Path, shown: Path) -> JobRun:
        nonlocal done
        done += 1
        spec = JOB_SPECS[job]
        shown_argv = [str(shown) if a == str(where) else a for a in argv]
        print(f"[{done}/{total_jobs}] {dataset} seed {seed if seed is not None else 'all'}: {job}", file=sys.stderr)
        kept = journal.finished(spec, where, command_line(spec.module, shown_argv))
        if kept is None:
            shutil.rmtree(where, ignore_errors=True)  # what an interrupted run left of this job
            result = run_job(spec, argv, where, shown_argv=shown_argv)
            journal.record(result)
            said = f"    {result.status} in {result.seconds:.1f} s" + (f" ({result.error})" if result.error else "")
        else:
            result, said = kept, f"    ok, finished by the interrupted run in {kept.seconds:.1f} s (kept)"
        print(said, file=sys.stderr, flush=True)
        record = JobRun(
            job,
            dataset,
            seed,
            result.command,
            result.status,
            result.seconds,
            result.error,
            result.doc,
            where,
            resumed=kept is not None,
        )
        runs.append(record)
        return record

    borrowed: tuple[str, float] | None = None  # the first Multi-VAE lambda_A chosen in this ledger, and where
    for dataset in datasets:
        budget = budgets.get(dataset)
        ds_seeds = seeds if budget is None else budget.seeds_of(seeds)
        base = Path("runs") / dataset_folder(dataset)
        uplift_argv = ["--dataset", dataset, *data, "--seeds", *map(str, ds_seeds)]
        uplift_argv += ["--out", str(out / base / "pia_uplift")]
        uplift_argv += ["--quick", *QUICK_UPLIFT] if args.quick else list(FULL_UPLIFT)
        uplift_argv += [] if budget is None else budget.train_options()
        uplift_argv += [] if progress else ["--no-progress"]
        uplift_argv += ["--workers", str(args.workers)] if args.workers != 1 else []
        uplift, lam, skipped = None, None, None
        if budget is None or budget.uplift:
            uplift = run_one(
                "pia_uplift", dataset, None, uplift_argv, out / base / "pia_uplift", final / base / "pia_uplift"
            )
            if uplift.doc is not None:
                lam = uplift.doc["per_architecture"].get("multvae", {}).get("chosen_lambda")
                if lam is not None and borrowed is None:
                    borrowed = (dataset, lam)
        else:
            lam = borrowed[1] if borrowed is not None else None
            taken = f"lambda_A {lam:g} chosen on {borrowed[0]}" if borrowed else "the jobs' default lambda_A"
            skipped = f"not run on {dataset} by its budget ({budget.why}); the PIA jobs use {taken}"
            print(f"note: pia_uplift {skipped}", file=sys.stderr)
        per_seed_docs: dict[int, dict[str, dict]] = {}
        folders: dict[int, Path] = {}
        for seed in ds_seeds:
            folder = out / base / f"seed{seed}"
            folders[seed] = folder
            docs: dict[str, dict] = {}
            for job in SEED_JOBS:
                argv = job_argv(job, dataset, seed, folder / job, args.quick, progress, lam, budget, data)
                record = run_one(job, dataset, seed, argv, folder / job, final / base / f"seed{seed}" / job)
                if record.doc is not None:
                    docs[job] = record.doc
            per_seed_docs[seed] = docs
        rows += ledger_rows(dataset, ds_seeds, per_seed_docs, folders, runs)
        path, doc = baselines.get(dataset, ("", None))
        try:
            comparison += comparison_rows(
                dataset,
                uplift.doc if uplift is not None else None,
                str(base / "pia_uplift" / "uplift.json"),
                uplift.command if uplift is not None else "",
                doc,
                path,
            )
        except (KeyError, TypeError, IndexError) as exc:  # an uplift JSON of another layout: the claims still stand
            print(f"note: no accuracy comparison on {dataset}: unexpected pia_uplift JSON ({exc!r})", file=sys.stderr)
        archs = uplift_architectures(uplift_argv)
        if uplift is not None:
            rows += uplift_rows(uplift.doc, dataset, ds_seeds, uplift.command, uplift.error, archs)
        else:
            shown = [
                str(final / base / "pia_uplift") if a == str(out / base / "pia_uplift") else a for a in uplift_argv
            ]
            rows += uplift_rows(
                None, dataset, ds_seeds, shlex.join(["python", "-m", "analyses.pia_uplift", *shown]), skipped, archs
            )
    seconds = time.perf_counter() - start
    write_json(out / "claims.json", rows)
    write_json(out / "comparison.json", comparison)
    atomic_write_bytes(out / "claims.md", render_markdown(rows, runs, seconds, comparison).encode())
    files = [out / "claims.json", out / "comparison.json", out / "claims.md"]
    files += plot_claims(rows, out)
    manifest = {
        "job": JOB,
        "datasets": datasets,
        "seeds": seeds,
        "quick": args.quick,
        "budgets": {d: asdict(b) for d, b in budgets.items()},
        "jobs": [
            {
                "job": r.job,
                "dataset": r.dataset,
                "seed": r.seed,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "error": r.error,
                "command": r.command,
                "resumed": r.resumed,
            }
            for r in runs
        ],
        "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS},
    }
    save_result(out, "ledger.json", manifest, files, {"total": seconds})
    journal.close()
    mark_output(failed_jobs=[f"{r.dataset}/{r.seed}/{r.job}" for r in runs if r.status != "ok"])
    print(render_table(rows))
    print(f"\ndone in {seconds:.1f} s; claims: {display_path(final / 'claims.md')}")
    return out


def ledger_rows(
    dataset: str,
    seeds: Sequence[int],
    per_seed_docs: Mapping[int, Mapping[str, dict]],
    folders: Mapping[int, Path],
    runs: Sequence[JobRun],
) -> list[dict]:
    """One row per claim of :data:`CLAIMS` on ``dataset`` from the seeds' job documents."""
    rows = []
    for claim in CLAIMS:
        measured: list[tuple[int, Measurement]] = []
        problems: list[str] = []
        for seed in seeds:
            try:
                measured.append((seed, claim.measure(per_seed_docs[seed], folders[seed])))
            except (Unmeasurable, KeyError, TypeError, IndexError) as exc:  # the job did not give the numbers
                errors = [
                    r.error for r in runs if r.dataset == dataset and r.seed == seed and r.job in claim.jobs and r.error
                ]
                why = exc if isinstance(exc, Unmeasurable) else f"unexpected job JSON ({type(exc).__name__}: {exc})"
                problems.append(f"seed {seed}: {errors[0] if errors else why}")
        trained = any(j in TRAINED_JOBS for j in claim.jobs)
        commands = sorted({r.command for r in runs if r.dataset == dataset and r.job in claim.jobs})
        seconds = sum(r.seconds for r in runs if r.dataset == dataset and r.job in claim.jobs)
        row = {
            "claim": claim.key,
            "statement": claim.statement,
            "kind": claim.kind,
            "dataset": dataset,
            "seeds": [s for s, _ in measured],
            "rule": claim.rule,
            "command": commands[0] if commands else None,
            "commands": commands,
            "planted": claim.planted,
            "reference": claim.reference,
            "seconds": round(seconds, 1),
        }
        if problems:
            row.update(
                estimate=None,
                ci=None,
                ci_kind=None,
                verdict="inconclusive",
                reason="not measurable: " + "; ".join(problems),
                source=None,
            )
        else:
            row.update(combine(claim, measured, trained))
            row["source"] = measured[0][1].source
        row["per_seed"] = [
            {"seed": s, "estimate": m.estimate, "ci": m.ci, "verdict": m.verdict, **m.detail} for s, m in measured
        ]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- outputs


def _fmt(x: object) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _ci(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def render_table(rows: Sequence[dict]) -> str:
    lines = [f"{'claim':34} {'dataset':16} {'estimate':>10} {'interval':>24}  verdict"]
    for r in rows:
        lines.append(
            f"{r['claim'][:34]:34} {r['dataset'][:16]:16} {_fmt(r['estimate']):>10} {_ci(r['ci']):>24}  {r['verdict']}"
        )
    return "\n".join(lines)


def verdict_table(rows: Sequence[dict]) -> str:
    """The ledger as one Markdown table, a row per claim and a column per dataset, each cell
    ``verdict: estimate [interval]``: what README and the walkthrough embed (a test rebuilds it from the
    committed ``claims.json`` and compares)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    claims_in_order = list(dict.fromkeys(r["claim"] for r in rows))
    cell = {(r["claim"], r["dataset"]): r for r in rows}
    lines = ["| claim | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for claim in claims_in_order:
        cells = []
        for d in datasets:
            r = cell.get((claim, d))
            if r is None:
                cells.append("")
                continue
            interval = "" if r["ci"] is None else f" {_ci(r['ci'])}"
            cells.append(f"**{r['verdict']}**: {_fmt(r['estimate'])}{interval}")
        kind = next(r["kind"] for r in rows if r["claim"] == claim)
        label = f"`{claim}`" + (" (unit check)" if kind == "unit check" else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(
    rows: Sequence[dict], runs: Sequence[JobRun], seconds: float, comparison: Sequence[dict] = ()
) -> str:
    lines = ["# Claims ledger", "", f"Built in {seconds:.0f} s. Every row: `claims.json` (same order).", ""]
    lines += [verdict_table(rows)]
    if comparison:
        lines += [
            "## Accuracy comparison (test NDCG@100, strong generalization)",
            "",
            "Every row: `comparison.json`. Mean over seeds of each seed's mean over the test users, 95% "
            "interval across seeds (training noise and the test users' sampling error, which the seeds share); Δ is "
            "the paired per-user difference from the model named, per seed (± its SE "
            "over users) and across seeds. Rows are not ranked: read the intervals.",
            "",
            comparison_table(comparison),
        ]
    lines += ["## Every row", ""]
    lines += [
        "| claim | kind | dataset | seeds | estimate | interval | verdict | reason |",
        "|---|---|---|---|---:|---|---|---|",
    ]
    for r in rows:
        reason = (r.get("reason") or "").replace("|", "/")
        lines.append(
            f"| {r['claim']} | {r['kind']} | {r['dataset']} | {' '.join(map(str, r['seeds']))} | {_fmt(r['estimate'])} "
            f"| {_ci(r['ci'])} | **{r['verdict']}** | {reason} |"
        )
    lines += ["", "## Rules (fixed in analyses/claims.py before any result)", ""]
    for key, rule in dict.fromkeys((r["claim"], r["rule"]) for r in rows):
        lines.append(f"- `{key}`: {rule}")
    lines += ["", "## What each job cost", "", "| dataset | seed | job | status | seconds |", "|---|---|---|---|---:|"]
    for r in runs:
        lines.append(
            f"| {r.dataset} | {r.seed if r.seed is not None else 'all'} | {r.job} | {r.status} | {r.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_claims(rows: Sequence[dict], out: Path) -> list[Path]:
    from figures.claims import plot_ledger

    return plot_ledger(rows, out / "claims")


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
