"""Every figure of the toolkit in one run, and a Markdown report that embeds them with the numbers behind them.

Usage::

    python -m analyses.paper_figures --dataset ml-1m --out out/paper-ml1m      # full models: trains them once
    python -m analyses.paper_figures --quick                                    # synthetic, tiny models: minutes
    python -m analyses.paper_figures --quick --jobs masking_contraction sharing_radius

The jobs (:data:`JOBS`, in this order) run one after the other in this process, each through its own
``main(argv)`` with the same ``--dataset``, ``--seed`` and ``--quick`` and its own output folder ``OUT/<job>``:

=======================  ==================================================================================
job                      what it compares
=======================  ==================================================================================
``masking_contraction``  exact law of the masked distance (Theorem 2.6): contraction / expansion by stratum
``local_vs_global``      Lipschitz and transport bounds of a clean Multi-VAE, cohort separation (Result 2)
``kl_budget``            beta cap x keep probability: KL budget, mean pairwise W1 and its bound, NDCG@100
``sharing_radius``       measured loss change of u after one SGD step on v, against W1 (Theorem 2.3)
``pia_geometry``         Multi-VAE with and without PIA at the same masking rate: drift, variance, transfer
``cohorts``              UMAP of three activity cohorts: clean input, masking, masking + PIA
``reproduce``            results table of every model (test users, by user group) next to the paper's
=======================  ==================================================================================

The models the jobs need come from the shared run cache (:mod:`analyses.trained`): a model trained by one job
is reused by the others and by later runs. ``--dataset`` defaults to ``synthetic`` with ``--quick`` and to
``ml-1m`` otherwise, and is always passed explicitly, as in every job.

Outputs in ``--out`` (default ``out/paper_figures/DATASET-seedS[-quick]-HASH``, HASH naming the options that
change the report, ``--jobs`` included; see :mod:`analyses.common`): one folder per job (its CSV, JSON and
figures, as the job writes them), ``report.md`` (every PNG embedded by a relative link with a caption saying
what is compared, and tables of the key numbers **read from each job's JSON**: every table names the JSON file
and key it comes from, every column the JSON field), ``paper_figures.json`` (the command, each job's status,
exit code, error, seconds, folder and files) and the completion marker ``COMPLETE`` (with the failed and unrun
jobs). The report path is printed at the end. The whole folder is built aside (``.OUT.partial-PID``, the jobs
writing into it, without locks of their own) and renamed into place when the report is written, under one lock
for the whole run: Ctrl-C or SIGTERM stops every job with one line (exit code 130 / 143) and leaves the previous
report folder as it was.

A failing job (non-zero exit code, or an exception) stops the run with one error line naming the job and the
command that reruns it alone (exit code 1); the folder is still published, its report marking the failure.
With ``--keep-going`` the remaining jobs still run, the report marks the failed ones, and the exit code is 1
when any job failed; an interrupt is not a failure and stops the run with or without ``--keep-going``. Unknown
``--jobs`` names are a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from analyses.common import (
    OUT_ROOT,
    add_job_arguments,
    check_seed,
    default_out_dir,
    display_path,
    job_dataset,
    job_parser,
    mark_output,
    one_line,
    output_session,
    result_options,
    stage_output,
    write_json,
)
from models.cli import end_process, guarded
from models.io import atomic_write_bytes

JOB = "paper_figures"
EXIT_JOB_FAILED = 1
MANIFEST = "paper_figures.json"
REPORT = "report.md"
MISSING = "–"  # shown for a value the JSON holds as null (NaN) or does not hold


# ---------------------------------------------------------------------------------------------- what to show


@dataclass(frozen=True)
class Column:
    """One column of a key-number table: a JSON field of the records and its header."""

    field: str
    header: str


@dataclass(frozen=True)
class RecordTable:
    """A table of records (a JSON list of objects) from a job's JSON.

    Attributes
    ----------
    title : str
    source : str
        Path of the list in the JSON, keys separated by ``/`` (see :func:`lookup`).
    labels : tuple of Column
        Fields that identify a row (shown first).
    values : tuple of Column
        Numeric fields shown; a field no record holds is left out.
    where : tuple of (str, str)
        Keep only records whose field (formatted by :func:`format_value`) equals the text.
    """

    title: str
    source: str
    labels: tuple[Column, ...]
    values: tuple[Column, ...]
    where: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ValueTable:
    """Single numbers from a job's JSON, one row each: ``(label, path)`` with ``path`` as in :func:`lookup`."""

    title: str
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class JobSpec:
    """A job of the report: its module, the JSON it writes, what it compares and which numbers to show."""

    name: str
    title: str
    json_name: str
    intro: str
    captions: Mapping[str, str]
    tables: tuple[RecordTable | ValueTable, ...]
    texts: tuple[tuple[str, str], ...] = ()  # (label, path) of strings shown as bullets

    @property
    def module(self) -> str:
        return f"analyses.{self.name}"


def _cols(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(f, h) for f, h in pairs)


JOBS: dict[str, JobSpec] = {
    s.name: s
    for s in (
        JobSpec(
            name="masking_contraction",
            title="Masking contracts and expands user distances (Theorem 2.6)",
            json_name="summary.json",
            intro="Pairs of training users in three strata (near: one of u's 10 nearest users in L1; far: beyond u's "
            "median distance; far-related: far yet sharing as many items as u's neighbours do; on synthetic data "
            "also the generator's planted far-but-related pairs). Independent masks with keep probability ρ give "
            "the masked distance D' = Bin(d, ρ) + Bin(c, 2ρ(1-ρ)) exactly; the table gives the mean probability "
            "that masking pulls v inside u's radius (contraction) or pushes it out (expansion), against the clean "
            "radius δ and against the masked-neighbourhood radius δ_m, and how often the exact value lies inside "
            "the 95% interval of Monte Carlo masking of the real rows. No model is trained.",
            captions={
                "masked_distance_pmf": "Exact law of the masked distance D' of a typical pair of each stratum, with "
                "the clean radius δ and the masked-neighbourhood radius δ_m: the mass left of a line is the "
                "contraction probability, the mass right of it the expansion probability.",
                "probability_vs_rho": "Mean contraction and expansion probabilities of each stratum as the keep "
                "probability ρ varies, against the clean radius δ and the masked-neighbourhood radius δ_m; the "
                "expansion shown is the strict Pr[D' > δ], so that ties d = δ of near pairs do not read as "
                "expansion at ρ = 1.",
                "contraction_vs_distance": "Mean exact contraction probability Pr[D' ≤ δ] in bins of the distance "
                "relative to the anchor's k-NN radius, d / r_k(u), per stratum and ρ, with 95% Wilson intervals "
                "on the effective number of anchors.",
            },
            tables=(
                RecordTable(
                    "Contraction and expansion by stratum",
                    "table",
                    _cols(("rho", "ρ"), ("stratum", "stratum")),
                    _cols(
                        ("pairs", "pairs"),
                        ("mean_d", "mean d"),
                        ("mean_c", "mean c"),
                        ("share_expected_expansion", "share E[D'] > d"),
                        ("p_contraction", "Pr[D' ≤ δ]"),
                        ("p_expansion", "Pr[D' ≥ δ]"),
                        ("p_expansion_strict", "Pr[D' > δ]"),
                        ("p_contraction_masked", "Pr[D' ≤ δ_m]"),
                        ("p_expansion_masked", "Pr[D' ≥ δ_m]"),
                        ("hoeffding_contraction", "Hoeffding bound on Pr[D' ≤ δ]"),
                        ("mc_in_ci", "exact inside MC 95% CI"),
                    ),
                ),
            ),
            texts=(("clean radius", "delta/clean"), ("masked-neighbourhood radius", "delta/masked")),
        ),
        JobSpec(
            name="local_vs_global",
            title="Clean input: near users stay near, cohorts separate (Result 2)",
            json_name="summary.json",
            intro="A Multi-VAE trained on clean input (ρ = 1) encodes every training user. On sampled pairs it "
            "checks the Lipschitz bound W1 ≤ W2 ≤ L‖x_u - x_v‖₁ (Lemma 2.4) with a certificate computed from the "
            "weights, and the transport bound W1 ≤ W2 ≤ √(2 KL_u) + √(2 KL_v). Both hold by construction "
            "(unit checks: a violation is a bug, not a finding); the empirical part is the distribution of "
            "W2 / L1 and how loose the certificate is against it, and how much of the transport bound pairs use. It "
            "then asks how far apart far-but-related users sit in latent space (rank percentiles, 0 = u's nearest "
            "user) and how strongly the activity cohorts separate (silhouette, 1 = separated, ≤ 0 = mixed).",
            captions={
                "lipschitz_transport": "Left: latent distance of each sampled pair (a bar from ‖Δμ‖ to W2) against its "
                "input distance, with the certified and the empirical Lipschitz slopes. Right: W2 of each pair "
                "against its transport bound √(2 KL_u) + √(2 KL_v); points in the grey area would violate it.",
                "cohorts": "Posterior means of the activity cohorts (PCA of the latent means) and the silhouette "
                "of the cohort labels in latent space and in input space.",
                "far_related": "Cumulative share of pairs by v's rank percentile among u's distances to all users "
                "(0 = u's nearest), in input space (dashed) and latent space (solid), for near, random, "
                "far-related and planted pairs.",
            },
            tables=(
                ValueTable(
                    "Bounds and separation",
                    (
                        ("validation NDCG@100 of the model (best epoch)", "model/val_ndcg@100"),
                        ("certified Lipschitz constant, all inputs", "lipschitz/domain/l_w2"),
                        ("certified Lipschitz constant, encoded users", "lipschitz/encoded/l_w2"),
                        ("largest empirical W2 / L1", "lipschitz/ratios/upper/max"),
                        ("median empirical W2 / L1", "lipschitz/ratios/upper/quantiles/q0.5"),
                        ("certificate / largest ratio (looseness)", "lipschitz/looseness_upper"),
                        ("certificate / median ratio", "empirical/certificate_looseness/over_median"),
                        ("median W2 / transport bound, all pairs", "empirical/transport_usage/all/q0.5"),
                        (
                            "unit check: Lipschitz violations (encoded-users certificate, W2)",
                            "lipschitz/violations/encoded_upper",
                        ),
                        ("transport bound: pairs checked (all pairs of a user sample)", "transport/all_pairs/pairs"),
                        ("unit check: transport bound violations", "transport/all_pairs/violations"),
                        ("mean W2 over those pairs", "transport/all_pairs/mean_w2"),
                        ("mean transport bound over those pairs", "transport/all_pairs/mean_pair_bound"),
                        ("2 √(2 E KL)", "transport/all_pairs/expected_bound"),
                        ("cohort silhouette, latent space", "cohorts/silhouette_latent"),
                        ("cohort silhouette, input space (L1)", "cohorts/silhouette_input"),
                        ("taste-group silhouette, latent (synthetic only)", "cohorts/silhouette_taste_groups_latent"),
                    ),
                ),
                RecordTable(
                    "Pairs by stratum",
                    "strata_table",
                    _cols(("stratum", "stratum")),
                    _cols(
                        ("pairs", "pairs"),
                        ("mean_l1", "mean L1"),
                        ("mean_shared", "mean shared"),
                        ("mean_w1_lower", "mean ‖Δμ‖"),
                        ("mean_w1_upper", "mean W2"),
                        ("mean_transport_bound", "mean transport bound"),
                        ("median_input_pct", "median input rank pct"),
                        ("median_latent_pct", "median latent rank pct"),
                        ("share_latent_top10", "share in latent top 10%"),
                    ),
                ),
                RecordTable(
                    "Cohorts",
                    "cohorts/table",
                    _cols(("cohort", "cohort")),
                    _cols(
                        ("users", "users"),
                        ("mean_interactions", "mean interactions"),
                        ("mean_kl", "mean KL"),
                        ("silhouette_latent", "silhouette latent"),
                        ("silhouette_input", "silhouette input"),
                    ),
                ),
            ),
        ),
        JobSpec(
            name="kl_budget",
            title="β versus masking: the KL budget (section 5)",
            json_name="summary.json",
            intro="One Multi-VAE per (β cap, ρ). The mean KL to the prior splits into I(X_h; Z) + KL(q_h ‖ p) and "
            "caps the mean pairwise latent distance: mean W1 ≤ mean W2 ≤ 2√(2 mean KL). Raising β shrinks the "
            "budget and pulls users together (global sharing) until the posterior collapses (few active units); "
            "masking (ρ < 1) is the other lever.",
            captions={
                "kl_tradeoff": "Validation NDCG@100 against the mean KL of each setting, and the mean pairwise "
                "latent distance against its bound 2√(2 mean KL).",
                "kl_decomposition": "Mean KL split into the mutual information I(X_h; Z) and KL(q_h ‖ p) for each "
                "β cap and keep probability.",
            },
            tables=(
                RecordTable(
                    "One row per setting",
                    "table",
                    _cols(("beta_cap", "β cap"), ("rho", "ρ")),
                    _cols(
                        ("beta_at_best", "β at best epoch"),
                        ("val_ndcg@100", "val NDCG@100"),
                        ("mean_kl", "mean KL"),
                        ("mutual_information", "I(X_h; Z)"),
                        ("kl_aggregate", "KL(q_h ‖ p)"),
                        ("mean_w1_upper", "mean W2"),
                        ("expected_bound", "2√(2 mean KL)"),
                        ("transport_violations", "transport violations"),
                        ("active_units", "active units"),
                    ),
                ),
            ),
        ),
        JobSpec(
            name="sharing_radius",
            title="The latent sharing radius (Theorem 2.3)",
            json_name="summary.json",
            intro="One small SGD step on user v's loss changes user u's loss; the gain -ΔL_u / (η ‖g_u‖) "
            "should fall with the latent distance W1(q_u, q_v) and vanish at the sharing radius r_share. Pairs: "
            "u with one of its latent nearest neighbours, and u with a random user.",
            captions={
                "sharing_radius": "Measured gain of u after one SGD step on v against the latent distance, with the "
                "fitted line, the estimated sharing radius r_share and its bootstrap interval, and the share of "
                "pairs where v helps u by distance bin; right: measured change of u's loss against the first-order "
                "prediction -η⟨g_u, g_v⟩.",
            },
            tables=(
                ValueTable(
                    "Sharing radius",
                    (
                        ("validation NDCG@100 of the model (best epoch)", "model/val_ndcg@100"),
                        ("r_share", "radius/estimate"),
                        ("r_share, 95% interval low", "radius/ci/0"),
                        ("r_share, 95% interval high", "radius/ci/1"),
                        ("fitted gain at W1 = 0 (intercept)", "radius/intercept"),
                        ("fitted slope of the gain in W1", "radius/slope"),
                        ("share of pairs inside r_share", "radius/share_pairs_inside"),
                        ("share of pairs where v helps u", "help_share"),
                        ("sign agreement, measured vs first order", "sign_agreement/fraction"),
                        ("median relative second-order remainder", "first_order/median_relative_remainder"),
                    ),
                ),
                RecordTable(
                    "By stratum",
                    "strata",
                    _cols(("stratum", "stratum")),
                    _cols(
                        ("pairs", "pairs"),
                        ("mean_w1_lower", "mean ‖Δμ‖"),
                        ("mean_gain", "mean gain"),
                        ("help_share", "share v helps u"),
                        ("mean_cosine", "mean cos(g_u, g_v)"),
                    ),
                ),
                RecordTable(
                    "By distance bin",
                    "bins",
                    _cols(("w1_low", "W1 from"), ("w1_high", "W1 to")),
                    _cols(
                        ("pairs", "pairs"),
                        ("mean_gain", "mean gain"),
                        ("help_share", "share v helps u"),
                        ("help_low", "95% CI low"),
                        ("help_high", "95% CI high"),
                        ("predicted_help_share", "first-order share"),
                    ),
                ),
            ),
        ),
        JobSpec(
            name="pia_geometry",
            title="What PIA changes in the latent space (section 6)",
            json_name="summary.json",
            intro="Two models that differ only by PIA (same masking rate, seed and schedule) see the same masks. "
            "Per user: how much the latent neighbourhood moves between mask draws (drift, 1 - Jaccard), the "
            "variance of the posterior mean across masks (Proposition 3.2 predicts PIA shrinks it), the share of "
            "latent neighbours that are far in input space yet related (global transfer), and how mixed the "
            "activity cohorts are; then test NDCG@100, paired over the same test users.",
            captions={
                "geometry": "Distributions over users, without and with PIA: neighbourhood drift, global transfer, "
                "mask variance of the posterior mean (absolute and relative to the between-user variance), and "
                "cohort mixing.",
                "user_groups": "Test NDCG@100 by user group without and with PIA, and the paired difference with "
                "95% intervals.",
            },
            tables=(
                RecordTable(
                    "All analysed users (mean ± standard error; diff = PIA - no PIA, paired)",
                    "summary",
                    _cols(("quantity", "quantity")),
                    _cols(
                        ("n", "users"),
                        ("no PIA", "no PIA"),
                        ("no PIA_se", "se"),
                        ("PIA", "PIA"),
                        ("PIA_se", "se"),
                        ("diff", "diff"),
                        ("diff_se", "diff se"),
                        ("share_lower", "share of users lower with PIA"),
                    ),
                    where=(("cohort", "all"),),
                ),
                RecordTable(
                    "Test NDCG@100, PIA - no PIA (paired over test users)",
                    "paired",
                    _cols(("group", "group")),
                    _cols(("n", "users"), ("mean", "mean difference"), ("se", "se")),
                    where=(("metric", "ndcg@100"),),
                ),
            ),
        ),
        JobSpec(
            name="cohorts",
            title="Three activity cohorts: clean input, masking, masking + PIA",
            json_name="summary.json",
            intro="Users with about 5, 50 and 350 interactions, encoded by three models (clean input, masking, "
            "masking + PIA), aligned by a similarity transform and drawn by one shared UMAP. The numbers are "
            "computed in each latent space, not in the picture: silhouette of the cohort labels (1 = separated, "
            "≤ 0 = entangled), kNN cohort purity, and the progression of the cohort centroids (1 = in order on a "
            "line).",
            captions={
                "cohorts": "One shared UMAP of the latent means of the three cohorts under clean input, masking and "
                "masking + PIA (same axis limits in every panel).",
            },
            tables=(
                RecordTable(
                    "One row per condition",
                    "summary",
                    _cols(("label", "condition")),
                    _cols(
                        ("n", "users"),
                        ("silhouette_latent", "silhouette latent"),
                        ("silhouette_2d", "silhouette 2-D"),
                        ("purity_latent", "kNN purity latent"),
                        ("purity_2d", "kNN purity 2-D"),
                        ("progression", "progression"),
                    ),
                ),
                RecordTable(
                    "Cohorts",
                    "cohorts",
                    _cols(("cohort", "cohort")),
                    _cols(
                        ("users", "users"),
                        ("min_interactions", "min interactions"),
                        ("median_interactions", "median interactions"),
                        ("max_interactions", "max interactions"),
                    ),
                ),
            ),
        ),
        JobSpec(
            name="reproduce",
            title="Results table next to the paper's",
            json_name="results.json",
            intro="Every model on the test users (strong generalization: fold-in 80%, targets 20%), mean and "
            "standard error over users, next to the paper's published value where the paper has one (ML-20M, "
            "Netflix and MSD only; elsewhere –).",
            captions={
                "results": "Test Recall@20, Recall@50 and NDCG@100 of every model (published values marked where "
                "they exist) and NDCG@100 by user group.",
            },
            tables=(
                RecordTable(
                    "Test users",
                    "results",
                    _cols(("label", "model")),
                    _cols(
                        ("n_users", "users"),
                        ("recall@20", "Recall@20"),
                        ("recall@50", "Recall@50"),
                        ("ndcg@100", "NDCG@100"),
                        ("ndcg@100_se", "NDCG@100 se"),
                        ("paper_ndcg@100", "paper NDCG@100"),
                    ),
                ),
                RecordTable(
                    "NDCG@100, PIA - no PIA (paired over test users)",
                    "paired",
                    _cols(("comparison", "comparison"), ("group", "group")),
                    _cols(("n", "users"), ("mean", "mean difference"), ("se", "se")),
                    where=(("metric", "ndcg@100"),),
                ),
            ),
        ),
    )
}
"""The jobs of the report, in the order they run."""


# --------------------------------------------------------------------------------------------------- helpers


def lookup(obj: object, path: str) -> object:
    """The value at ``path`` in a parsed JSON document: keys separated by ``/``, integers index lists.

    Raises
    ------
    KeyError
        If a key or index along the path does not exist (the message names the path).
    """
    node = obj
    for part in path.split("/"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(f"no {part!r} at {path!r}")
    return node


def format_value(value: object) -> str:
    """How the report shows a JSON value: 4 significant digits for floats, integers in full, null as ``–``.

    Booleans read ``yes`` / ``no``; text is kept (``|`` escaped for Markdown tables).
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_record_table(table: RecordTable, doc: object, json_ref: str) -> list[str]:
    """Markdown lines of a :class:`RecordTable`: title, source line and the table (headers name the fields)."""
    try:
        records = lookup(doc, table.source)
    except KeyError:
        return [f"*{table.title}: `{table.source}` is not in `{json_ref}`.*", ""]
    if not isinstance(records, list):
        return [f"*{table.title}: `{table.source}` in `{json_ref}` is not a list.*", ""]
    rows = [
        r for r in records if isinstance(r, Mapping) and all(format_value(r.get(f)) == text for f, text in table.where)
    ]
    values = [c for c in table.values if any(c.field in r for r in rows)]
    where = ", ".join(f"`{f}` = `{text}`" for f, text in table.where)
    source = f"Source: `{json_ref}`, list `{table.source}`" + (f", rows where {where}" if where else "") + "."
    lines = [f"**{table.title}**", "", source, ""]
    columns = [*table.labels, *values]
    lines.append(_row([f"{c.header} (`{c.field}`)" for c in columns]))
    lines.append(_row(["---"] * len(table.labels) + ["---:"] * len(values)))
    for r in rows:
        lines.append(_row([format_value(r.get(c.field)) for c in columns]))
    return [*lines, ""]


def render_value_table(table: ValueTable, doc: object, json_ref: str) -> list[str]:
    """Markdown lines of a :class:`ValueTable` (rows whose path is missing are left out)."""
    source = f"Source: `{json_ref}`, one value per row (its JSON key in the last column)."
    lines = [f"**{table.title}**", "", source, ""]
    lines += [_row(["quantity", "value", "JSON key"]), _row(["---", "---:", "---"])]
    for label, path in table.rows:
        try:
            value = lookup(doc, path)
        except KeyError:
            continue
        lines.append(_row([label, format_value(value), f"`{path}`"]))
    return [*lines, ""]


def figure_stems(doc: Mapping, folder: Path) -> list[str]:
    """PNG figures of a job: those its JSON lists under ``files`` (in that order), else every PNG in ``folder``."""
    listed = [Path(f) for f in doc.get("files", []) if str(f).endswith(".png")]
    stems = [p.stem for p in listed if (folder / p.name).is_file()]
    return stems or sorted(p.stem for p in folder.glob("*.png"))


def job_argv(dataset: str, seed: int, quick: bool, out: Path, progress: bool) -> list[str]:
    """The options every job gets."""
    argv = ["--dataset", dataset, "--seed", str(seed), "--out", str(out)]
    if quick:
        argv.append("--quick")
    if not progress:
        argv.append("--no-progress")
    return argv


def command_line(module: str, argv: Sequence[str]) -> str:
    return " ".join(["python -m", module, *(shlex.quote(a) for a in argv)])


class _Tee(io.TextIOBase):
    """A text stream writing through to ``stream`` and keeping the last :data:`TAIL` characters (for the job's
    error line; progress bars of long trainings would otherwise pile up in memory)."""

    TAIL = 1 << 16

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.tail = ""

    def write(self, text: str) -> int:
        self.tail = (self.tail + text)[-self.TAIL :]
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return getattr(self._stream, "isatty", lambda: False)()

    @property
    def encoding(self) -> str:  # tqdm and print look at it
        return getattr(self._stream, "encoding", "utf-8")


@dataclass
class JobResult:
    """What running one job gave."""

    name: str
    command: str
    out: Path
    status: str = "not run"  # "ok" or "failed"
    exit_code: int | None = None
    error: str | None = None
    seconds: float = 0.0
    doc: dict | None = None
    figures: list[str] = field(default_factory=list)


def _error_line(stderr: str, exit_code: int | None, exc: BaseException | None) -> str:
    if exc is not None:
        return one_line(f"{type(exc).__name__}: {exc}", 300)
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if errors:
        return one_line(errors[-1].removeprefix("error:").strip(), 300)
    return f"exit code {exit_code}" + (f"; last output: {one_line(lines[-1], 200)}" if lines else "")


def run_job(
    spec: JobSpec,
    argv: list[str],
    out: Path,
    main: Callable[[list[str]], int] | None = None,
    shown_argv: list[str] | None = None,
) -> JobResult:
    """Run one job's ``main(argv)`` in this process; its stdout and stderr pass through (stderr also recorded).

    ``out`` is where the job writes (inside the report's staging folder); ``shown_argv`` (default ``argv``) is the
    command recorded and shown, with the final folder. Ctrl-C and SIGTERM are not failures of the job: they pass
    on and stop the whole run, ``--keep-going`` or not.
    """
    result = JobResult(spec.name, command_line(spec.module, shown_argv or argv), out)
    start = time.perf_counter()
    tee = _Tee(sys.stderr)
    exc: BaseException | None = None
    code: int | None
    try:
        main = main or importlib.import_module(spec.module).main
        with contextlib.redirect_stderr(tee):
            code = main(argv)
    except SystemExit as e:  # argparse errors of the job
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # a bug in a job must not lose the others' results under --keep-going
        exc, code = e, None
        traceback.print_exc(file=sys.stderr)
    result.seconds = time.perf_counter() - start
    result.exit_code = code
    json_path = out / spec.json_name
    if exc is None and code == 0 and json_path.is_file():
        result.status = "ok"
        result.doc = json.loads(json_path.read_text())
        result.figures = figure_stems(result.doc, out)
    else:
        result.status = "failed"
        if exc is None and code == 0:
            result.error = f"finished without writing {spec.json_name}"
        else:
            result.error = _error_line(tee.tail, code, exc)
    return result


# ---------------------------------------------------------------------------------------------------- report


def render_report(results: Sequence[JobResult], header: Mapping[str, str]) -> str:
    """The Markdown report: overview, then per job its command, key-number tables and embedded figures."""
    lines = [
        "# Paper figures",
        "",
        f"Command: `{header['command']}`",
        "",
        f"Dataset `{header['dataset']}`, seed {header['seed']}"
        + (
            ", quick mode (tiny models and few pairs: the numbers test the pipeline, they are not results)"
            if header["quick"] == "yes"
            else ""
        )
        + f". Total time {header['seconds']} s.",
        "",
        "Every number below is read from the JSON file named above its table (paths relative to this folder); "
        "each column header gives the JSON field in backticks. Each job can be rerun alone with the command "
        "shown in its section.",
        "",
        _row(["job", "status", "seconds", "figures"]),
        _row(["---", "---", "---:", "---:"]),
    ]
    for r in results:
        anchor = r.name.replace("_", "-")
        lines.append(_row([f"[{r.name}](#{anchor})", r.status, f"{r.seconds:.1f}", str(len(r.figures))]))
    lines.append("")
    for r in results:
        spec = JOBS[r.name]
        lines += [f"## {r.name}", "", f"**{spec.title}.** {spec.intro}", "", f"Command: `{r.command}`", ""]
        if r.status != "ok" or r.doc is None:
            lines += [f"**This job failed** (exit code {r.exit_code}): {r.error}", ""]
            continue
        json_ref = f"{r.name}/{spec.json_name}"
        for label, path in spec.texts:
            try:
                lines.append(f"- {label} (`{path}`): {format_value(lookup(r.doc, path))}")
            except KeyError:
                pass
        if spec.texts:
            lines.append("")
        for table in spec.tables:
            if isinstance(table, RecordTable):
                lines += render_record_table(table, r.doc, json_ref)
            else:
                lines += render_value_table(table, r.doc, json_ref)
        notes = r.doc.get("notes") or []
        if notes:
            lines += ["Notes from the job:", "", *(f"- {format_value(n)}" for n in notes), ""]
        for stem in r.figures:
            caption = spec.captions.get(stem, f"Figure `{stem}` of {r.name}.")
            lines += [f"![{stem}]({r.name}/{stem}.png)", "", f"*{r.name}/{stem}.png*: {caption}", ""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------------- CLI


def parse_jobs(values: Sequence[str] | None) -> list[str]:
    """Job names from ``--jobs`` (space- or comma-separated), in :data:`JOBS` order; ValueError naming bad ones."""
    if not values:
        return list(JOBS)
    names = [n.strip() for v in values for n in str(v).split(",") if n.strip()]
    unknown = [n for n in dict.fromkeys(names) if n not in JOBS]
    if unknown or not names:
        raise ValueError(f"unknown job(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(JOBS)}")
    return [n for n in JOBS if n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "Run every analysis job (or --jobs) with the same dataset, seed and mode, and write a Markdown report "
        "embedding every figure with the numbers behind it.",
        "Models are trained once per configuration and cached (analyses.trained); a full ml-1m run trains every "
        "model the jobs need. --quick: synthetic data and tiny models, a few minutes.",
    )
    add_job_arguments(
        parser,
        out=f"{OUT_ROOT}/{JOB}/DATASET-seedS[-quick]-HASH",
        seed="seed passed to every job",
        quick="every job in quick mode: synthetic data unless --dataset, tiny models, a few minutes",
    )
    parser.add_argument("--jobs", nargs="+", metavar="JOB", help=f"subset to run, in this order: {', '.join(JOBS)}")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining jobs when one fails")
    return parser


def run(args: argparse.Namespace) -> tuple[Path, list[JobResult]]:
    """Run the selected jobs and write the report; returns ``(report path, results)``.

    Stops at the first failing job unless ``args.keep_going`` (the report is then written with what ran). The
    whole folder is built in a staging folder (:func:`analyses.common.stage_output`), each job writing into its
    ``<job>`` subfolder there, and published when the report is written: an interrupted run leaves the previous
    report folder as it was. Must run inside :func:`analyses.common.output_session` (as :func:`main` does).
    """
    start = time.perf_counter()
    names = parse_jobs(args.jobs)
    check_seed(args)
    dataset = job_dataset(args)
    # --keep-going only decides whether jobs after a failed one run; the report says which ran
    options = result_options(args, ignore=("keep_going",), dataset=dataset, jobs=names)
    final = args.out or default_out_dir(JOB, dataset, f"seed{args.seed}", options)
    out = stage_output(final, JOB, options)
    argv_self = ["--dataset", dataset, "--seed", str(args.seed), "--out", str(final)]
    argv_self += (["--quick"] if args.quick else []) + (["--jobs", *names] if args.jobs else [])
    argv_self += ["--keep-going"] if args.keep_going else []
    results: list[JobResult] = []
    for i, name in enumerate(names, 1):
        spec = JOBS[name]
        job_out = out / name
        argv = job_argv(dataset, args.seed, args.quick, job_out, not args.no_progress)
        shown = job_argv(dataset, args.seed, args.quick, final / name, not args.no_progress)
        print(f"[{i}/{len(names)}] {name}: {command_line(spec.module, shown)}", file=sys.stderr, flush=True)
        result = run_job(spec, argv, job_out, shown_argv=shown)
        results.append(result)
        print(
            f"[{i}/{len(names)}] {name}: {result.status} in {result.seconds:.1f} s"
            + (f" ({result.error})" if result.error else ""),
            file=sys.stderr,
            flush=True,
        )
        if result.status != "ok" and not args.keep_going:
            break
    seconds = time.perf_counter() - start
    header = {
        "command": command_line(f"analyses.{JOB}", argv_self),
        "dataset": dataset,
        "seed": str(args.seed),
        "quick": "yes" if args.quick else "no",
        "seconds": f"{seconds:.1f}",
    }
    report = out / REPORT
    atomic_write_bytes(report, render_report(results, header).encode())
    manifest = {
        "job": JOB,
        "command": header["command"],
        "dataset": dataset,
        "seed": args.seed,
        "quick": args.quick,
        "jobs": [
            {
                "name": r.name,
                "status": r.status,
                "exit_code": r.exit_code,
                "error": r.error,
                "seconds": round(r.seconds, 3),
                "command": r.command,
                "out": r.name,
                "json": f"{r.name}/{JOBS[r.name].json_name}" if r.status == "ok" else None,
                "figures": [f"{r.name}/{s}.png" for s in r.figures],
            }
            for r in results
        ],
        "not_run": [n for n in names if n not in {r.name for r in results}],
        "total_seconds": round(seconds, 3),
        "report": REPORT,
    }
    write_json(out / MANIFEST, manifest)
    mark_output(failed_jobs=[r.name for r in results if r.status != "ok"], not_run=manifest["not_run"])
    return display_path(report), results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 when every job ran, 1 when a job failed, 2 for bad options, 130 / 143 when
    interrupted by Ctrl-C / SIGTERM (one line; the previous report folder stays as it was)."""

    def work() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            parse_jobs(args.jobs)
        except ValueError as exc:
            parser.error(f"--jobs: {exc}")
        given = sys.argv[1:] if argv is None else list(argv)
        # a run whose jobs failed still publishes its folder: the report says what failed and how to rerun it
        with output_session(command_line(f"analyses.{JOB}", given)):
            report, results = run(args)
        failed = [r for r in results if r.status != "ok"]
        for r in failed:
            print(
                f"error: job {r.name} failed ({r.error}); rerun it alone with: {r.command}",
                file=sys.stderr,
            )
        print(f"report: {report}")
        return EXIT_JOB_FAILED if failed else 0

    return guarded(work, what=f"analyses.{JOB} (every job it runs)")


if __name__ == "__main__":
    end_process(main())
