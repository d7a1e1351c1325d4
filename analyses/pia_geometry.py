"""What PIA does to the latent space: Multi-VAE with and without PIA at the same masking rate (PAPER.md section 6).

Usage::

    python -m analyses.pia_geometry                              # ML-1M, rho 0.5, lambda_A 0.1
    python -m analyses.pia_geometry --lambda-a 1.0 --rho 0.3 --model recvae
    python -m analyses.pia_geometry --quick                      # synthetic data, tiny models: seconds

Two models that differ only by PIA (same ``--model``, keep probability ``--rho``, seed and schedule; lambda_A =
``--lambda-a`` or 0) come from the run cache (:func:`analyses.trained.get_trained`, configurations of
:func:`analyses.model_options.model_config`; beta reaches its cap after ``--anneal-epochs``, default 50, as in
every geometry job). On ``--users`` training users drawn uniformly (seeded), with the
posterior mean ``mu`` as the code and the masks of the model's training mode (``dropout`` by default):

* **neighbourhood drift** (:func:`geometry.neighbourhoods.masked_knn_drift`): ``1 - Jaccard`` of a user's ``k``
  latent nearest neighbours (Euclidean on ``mu``) between two independent mask draws (``drift_draws``), and
  between clean and masked input (``drift_clean``), averaged over ``--drift-draws`` draws;
* **mask variance** (:func:`geometry.neighbourhoods.mask_variance`): ``tr Var_b[mu(x ⊙ b)]`` per user over
  ``--var-draws`` masks (``var_b``). Proposition 3.2 predicts PIA shrinks it by ``tau^2``,
  ``tau = L / (L + 2 lambda_A)``. Because PIA can also shrink the latent space as a whole, ``var_b_relative``
  divides it by the between-user variance ``tr Cov_u[mu(x_u)]`` of the clean means (scale-free);
* **global transfer** (:func:`geometry.neighbourhoods.global_transfer`): share of a user's ``k`` latent neighbours
  that are far in input space (L1 distance above the user's median distance to the analysed users) yet related
  (same planted taste group on synthetic data; at least ``--min-shared`` shared positives otherwise), for the
  clean means (``transfer_clean``) and one mask draw (``transfer_masked``);
* **cohort mixing**: silhouette of the cohort labels in latent space (``sklearn.metrics.silhouette_samples``,
  Euclidean; near 1 = separated cohorts, near 0 or below = entangled) and kNN cohort purity (share of the ``k``
  latent neighbours in the user's own cohort), clean and masked. Cohorts: the planted activity cohorts (about
  5, 50, 350 interactions) on synthetic data, otherwise the paper's user groups by history length
  (``[5-10]``, ``[11-50]``, ``[51-100]``, ``[100+]``);
* **alignment with the item centroid** (Proposition 3.1, the PIA model only): mean over users of
  ``||mu_u - ebar_u|| - ||mu_u - ebar_pi(u)||`` with ``ebar_u`` the mean of the best epoch's anchors over the
  user's items and ``pi`` a permutation without fixed points (:func:`geometry.alignment.centroid_alignment`):
  below 0 when the means sit closer to their own items' centroid than to another user's (JSON
  ``centroid_alignment``);
* **NDCG@100 by user group** on the test users (:func:`models.evaluation.evaluate`) and the paired difference
  PIA - no PIA (:func:`models.evaluation.paired_difference`), overall and per group.

Both models see the same masks (one seeded generator per quantity, :func:`analyses.encoding.mask_generator`), so
per-user differences are paired. Outputs (folder printed at the end, default
``out/pia_geometry/DATASET-MODEL-rhoR-lamL-seedS[-quick]-HASH``):
``users.csv`` (one row per model and user), ``summary.csv``
(quantity x cohort: both models, paired difference, share of users where PIA is lower), ``groups.csv`` and
``paired.csv`` (test metrics), ``summary.json`` and the figures ``geometry`` (distributions and cohort mixing) and
``user_groups`` (NDCG@100 by group), PNG and PDF.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analyses.common import (
    add_job_arguments,
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
from analyses.encoding import mask_generator, mu_encoder
from analyses.model_options import (
    DEFAULT_RHO,
    add_model_arguments,
    load_model_split,
    model_config,
    validate_model_options,
)
from analyses.results import MODEL_SPECS, groups_table, paired_table
from analyses.trained import TrainedModel, get_trained
from figures.latent import BarPanel, DistributionPanel, geometry_figure, group_comparison_figure
from figures.style import savefig
from geometry.alignment import centroid_alignment
from geometry.neighbourhoods import (
    encode_masked,
    global_transfer,
    knn,
    mask_variance,
    masked_knn_drift,
    rank_threshold,
)
from models.cli import end_process
from models.evaluation import USER_GROUPS, evaluate
from models.lazy import lazy_import
from models.split import Split
from models.trainer import load_anchors

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")
skmetrics = lazy_import("sklearn.metrics")

if TYPE_CHECKING:  # nn.Module subclasses: torch loads where the work starts
    from models.vae import AutoencoderBase

JOB = "pia_geometry"
DEFAULTS = {"users": 2000, "var_draws": 32, "drift_draws": 8}
QUICK = {"users": 600, "var_draws": 16, "drift_draws": 4}
# One seeded generator per quantity, identical for both models: the same masks, so differences are paired.
STREAMS = {"users": 0, "drift_draws": 1, "drift_clean": 2, "variance": 3, "masked": 4, "centroid": 5}
QUANTITIES: dict[str, str] = {
    "drift_draws": "1 - Jaccard of the k latent neighbours between two independent mask draws",
    "drift_clean": "1 - Jaccard of the k latent neighbours between clean and masked input",
    "var_b": "tr Var_b[mu(x ⊙ b)] over mask draws (Proposition 3.2: PIA shrinks it)",
    "var_b_relative": "var_b / tr Cov_u[mu(x_u)] (between-user variance of the clean means): scale-free",
    "transfer_clean": "share of the k latent neighbours (clean means) far in input space yet related",
    "transfer_masked": "the same for the means of one mask draw",
    "silhouette_clean": "silhouette of the user's cohort among the clean means (1 separated, <= 0 entangled)",
    "silhouette_masked": "the same for the means of one mask draw",
    "purity_clean": "share of the k latent neighbours (clean means) in the user's own cohort",
    "purity_masked": "the same for the means of one mask draw",
}


# --------------------------------------------------------------------------------------------- building blocks


def cohort_labels(split: Split, rows: np.ndarray) -> tuple[np.ndarray, list[str], str]:
    """Cohort of each training row in ``rows``: planted cohorts on synthetic data, else the paper's user groups.

    Returns
    -------
    labels : numpy.ndarray of str, shape (len(rows),)
    order : list of str
        Cohorts in increasing activity.
    rule : str
        How the cohorts were defined, in words.
    """
    planted, _ = planted_labels(split)
    if planted is not None:
        activity = planted["target_activity"][rows]
        order = [f"≈{a}" for a in sorted(set(planted["target_activity"].tolist()))]
        return np.array([f"≈{a}" for a in activity]), order, "planted activity cohorts of the synthetic data"
    n = np.diff(split.train.indptr)[rows]
    labels = np.full(rows.size, "other", dtype=object)
    for label, lo, hi in USER_GROUPS:
        labels[(n >= lo) & (n <= hi)] = label
    order = [g[0] for g in USER_GROUPS if np.any(labels == g[0])] + (["other"] if np.any(labels == "other") else [])
    return labels.astype(str), order, "user groups by number of training interactions ([5-10], ..., [100+])"


def median_distance(X: sp.spmatrix) -> np.ndarray:
    """Each user's median L1 distance to the other rows of ``X`` (the ``floor(N/2)``-th nearest), shape (N,)."""
    n = X.shape[0]
    return rank_threshold(X, max(1, n // 2))


def cohort_mixing(mu: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user silhouette of the cohort labels (Euclidean) and kNN cohort purity among the means ``mu``.

    Returns ``(silhouette, purity)``, each shape (N,); the silhouette is NaN when fewer than two cohorts are
    present (it is undefined).
    """
    labels = np.asarray(labels)
    n_labels = np.unique(labels).size
    silhouette = (
        skmetrics.silhouette_samples(mu, labels) if 2 <= n_labels <= len(labels) - 1 else np.full(len(labels), np.nan)
    )
    neighbours = knn(mu, k, "euclidean").indices
    purity = (labels[neighbours] == labels[:, None]).mean(axis=1)
    return silhouette, purity


def user_geometry(
    model: AutoencoderBase,
    X: sp.csr_matrix,
    *,
    rho: float,
    k: int,
    var_draws: int,
    drift_draws: int,
    seed: int,
    cohorts: np.ndarray,
    far_threshold: np.ndarray,
    groups: np.ndarray | None = None,
    min_shared: int = 3,
    mode: str = "dropout",
) -> pd.DataFrame:
    """Every per-user quantity of :data:`QUANTITIES` for one model on the histories ``X`` (rows = users).

    Masks come from :func:`analyses.encoding.mask_generator` ``(seed, STREAMS[...])``, so two models get the same masks.
    """
    encode = mu_encoder(model, mode)
    clean = encode_masked(encode, X, 1.0, mode)
    masked = encode_masked(encode, X, rho, mode, mask_generator(seed, STREAMS["masked"]))
    out: dict[str, np.ndarray] = {}
    out["drift_draws"] = masked_knn_drift(
        encode, X, rho, k, drift_draws, "draws", mode, generator=mask_generator(seed, STREAMS["drift_draws"])
    )
    out["drift_clean"] = masked_knn_drift(
        encode, X, rho, k, drift_draws, "clean", mode, generator=mask_generator(seed, STREAMS["drift_clean"])
    )
    mv = mask_variance(encode, X, rho, var_draws, mode, generator=mask_generator(seed, STREAMS["variance"]))
    out["var_b"] = mv.trace_var
    between = float(clean.var(axis=0, ddof=1).sum())
    out["var_b_relative"] = mv.trace_var / between if between > 0 else np.full(X.shape[0], np.nan)
    for name, mu in (("clean", clean), ("masked", masked)):
        nb = knn(mu, k, "euclidean")
        out[f"transfer_{name}"] = global_transfer(
            nb, X, groups=groups, far_threshold=far_threshold, min_shared=min_shared
        ).transfer
        out[f"silhouette_{name}"], out[f"purity_{name}"] = cohort_mixing(mu, cohorts, k)
    return pd.DataFrame(out)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0


def summarise(users: pd.DataFrame, labels: Sequence[str], cohort_order: Sequence[str]) -> pd.DataFrame:
    """Quantity x cohort table: mean ± se of each model, paired difference (second - first model), share lower.

    ``users`` has one row per (model, user) with columns ``model``, ``row``, ``cohort`` and the quantities; the
    two models' rows are matched on ``row``.
    """
    a_label, b_label = labels
    a = users[users["model"] == a_label].set_index("row")
    b = users[users["model"] == b_label].set_index("row").loc[a.index]
    rows = []
    for q in QUANTITIES:
        for cohort in ["all", *cohort_order]:
            sel = np.ones(len(a), dtype=bool) if cohort == "all" else (a["cohort"] == cohort).to_numpy()
            va, vb = a[q].to_numpy()[sel], b[q].to_numpy()[sel]
            ma, sa = _mean_se(va)
            mb, sb = _mean_se(vb)
            md, sd = _mean_se(vb - va)
            both = np.isfinite(va) & np.isfinite(vb)
            rows.append(
                {
                    "quantity": q,
                    "cohort": cohort,
                    "n": int(both.sum()),
                    a_label: ma,
                    f"{a_label}_se": sa,
                    b_label: mb,
                    f"{b_label}_se": sb,
                    "diff": md,
                    "diff_se": sd,
                    "share_lower": float(np.mean(vb[both] < va[both])) if both.any() else float("nan"),
                }
            )
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------- the job


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "Latent geometry with and without PIA at the same masking rate: neighbourhood drift, mask "
        "variance of the posterior mean, global transfer, cohort mixing and NDCG@100 by user group.",
    )
    parser.add_argument("--model", choices=["multvae", "recvae"], default="multvae", help="model (multvae)")
    parser.add_argument("--users", type=int, help=f"training users analysed (default {DEFAULTS['users']})")
    parser.add_argument("--k", type=int, default=10, help="latent neighbours per user (10)")
    parser.add_argument("--var-draws", type=int, help=f"mask draws of the variance (default {DEFAULTS['var_draws']})")
    parser.add_argument(
        "--drift-draws", type=int, help=f"mask draws of the drift (default {DEFAULTS['drift_draws']}; even)"
    )
    parser.add_argument(
        "--min-shared", type=int, default=3, help="shared positives that make two users related (real data; 3)"
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-MODEL-rhoR-lamL-seedS[-quick]-HASH",
        seed="seed of the training runs and of the analysis",
        quick="tiny models, few epochs, synthetic data unless --dataset: seconds to a minute",
    )
    add_model_arguments(parser, rho=DEFAULT_RHO, pia=True)
    return parser


def _resolve(args: argparse.Namespace) -> dict:
    sizes = option_sizes(args, DEFAULTS, QUICK)
    if sizes["users"] < 3:
        raise ValueError(f"--users must be >= 3, got {sizes['users']}")
    if sizes["var_draws"] < 2:
        raise ValueError(f"--var-draws must be >= 2 (a variance needs two draws), got {sizes['var_draws']}")
    if sizes["drift_draws"] < 2:
        raise ValueError(f"--drift-draws must be >= 2 (two draws make one comparison), got {sizes['drift_draws']}")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.min_shared < 1:
        raise ValueError(f"--min-shared must be >= 1, got {args.min_shared}")
    return sizes


def _print_summary(summary: pd.DataFrame, labels: Sequence[str], cohort_order: Sequence[str], header: list[str]):
    a, b = labels
    print("\n".join(header))

    def cell(m: float, s: float, signed: bool = False) -> str:
        if not np.isfinite(m):
            return "-"
        return f"{m:+.4g} ± {s:.2g}" if signed else f"{m:.4g} ± {s:.2g}"

    allu = summary[summary["cohort"] == "all"]
    show = pd.DataFrame(
        {
            "quantity": allu["quantity"],
            a: [cell(m, s) for m, s in zip(allu[a], allu[f"{a}_se"], strict=True)],
            b: [cell(m, s) for m, s in zip(allu[b], allu[f"{b}_se"], strict=True)],
            f"{b} - {a}": [cell(m, s, True) for m, s in zip(allu["diff"], allu["diff_se"], strict=True)],
            "PIA lower": allu["share_lower"],
        }
    )
    print(format_table(show, {**{c: "s" for c in show.columns[:-1]}, "PIA lower": ".0%"}))
    print("\nBy cohort (mean; paired difference in brackets)")
    key = ["drift_draws", "var_b_relative", "transfer_masked", "silhouette_clean", "purity_clean"]
    by = summary[summary["quantity"].isin(key) & (summary["cohort"] != "all")]
    table = pd.DataFrame({"cohort": list(cohort_order)})
    for q in key:
        part = by[by["quantity"] == q].set_index("cohort").reindex(cohort_order)
        table[q] = [
            "-" if not np.isfinite(x) else f"{x:.3g} → {y:.3g} ({d:+.2g})"
            for x, y, d in zip(part[a], part[b], part["diff"], strict=True)
        ]
    print(format_table(table, dict.fromkeys(table.columns, "s")))


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    dataset = validate_model_options(args)
    sizes = _resolve(args)
    progress = not args.no_progress
    base_key, pia_key = args.model, f"{args.model}-pia"
    labels = ("no PIA", "PIA")
    configs = {
        key: model_config(args, model=args.model, rho=args.rho, pia=args.lambda_a if key == pia_key else 0.0)
        for key in (base_key, pia_key)
    }
    tag = f"{args.model}-rho{args.rho:g}-lam{args.lambda_a:g}-seed{args.seed}"
    options = result_options(args, dataset=dataset, **sizes)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)

    split = load_model_split(args)
    timing = {"load": time.perf_counter() - start}
    n_train = split.train.shape[0]
    if sizes["users"] > n_train:
        sizes["users"] = n_train
    if args.k > sizes["users"] - 1:
        raise ValueError(f"--k = {args.k} needs at least k + 1 analysed users, got {sizes['users']}")
    rng = np.random.default_rng([args.seed, STREAMS["users"]])
    rows = np.sort(rng.choice(n_train, size=sizes["users"], replace=False))
    X = sp.csr_matrix(split.train[rows])
    cohorts, cohort_order, cohort_rule = cohort_labels(split, rows)
    planted, _ = planted_labels(split)
    taste = planted["taste_group"][rows] if planted is not None else None
    far = median_distance(X)

    t = time.perf_counter()
    models = {key: get_trained(configs[key], split=split, progress=progress) for key in (base_key, pia_key)}
    timing["train_or_load"] = time.perf_counter() - t

    t = time.perf_counter()
    frames = []
    for key, label in zip((base_key, pia_key), labels, strict=True):
        if progress:
            print(f"geometry of {MODEL_SPECS[key].label} on {X.shape[0]} users ...", file=sys.stderr)
        geo = user_geometry(
            models[key].model,
            X,
            rho=args.rho,
            k=args.k,
            var_draws=sizes["var_draws"],
            drift_draws=sizes["drift_draws"],
            seed=args.seed,
            cohorts=cohorts,
            far_threshold=far,
            groups=taste,
            min_shared=args.min_shared,
            mode=configs[key].mask_mode,
        )
        head = pd.DataFrame(
            {
                "model": label,
                "row": rows,
                "user": split.train_users[rows],
                "cohort": cohorts,
                "n_interactions": np.diff(X.indptr),
                "far_threshold": far,
            }
        )
        frames.append(pd.concat([head, geo], axis=1))
    users = pd.concat(frames, ignore_index=True)
    summary = summarise(users, labels, cohort_order)
    alignment = pia_centroid_alignment(models[pia_key], X, args.seed)
    timing["geometry"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluations = {key: evaluate(models[key].model.score, split.test) for key in (base_key, pia_key)}
    groups = groups_table(evaluations, dataset)
    paired = paired_table(evaluations[pia_key], evaluations[base_key], "PIA - no PIA")
    timing["evaluation"] = time.perf_counter() - t

    t = time.perf_counter()
    per_model = {label: users[users["model"] == label] for label in labels}

    def values(q: str) -> dict[str, np.ndarray]:
        return {label: per_model[label][q].to_numpy() for label in labels}

    allu = summary[summary["cohort"] == "all"].set_index("quantity")
    mix = ["silhouette_clean", "silhouette_masked", "purity_clean", "purity_masked"]
    bar = BarPanel(
        "cohort mixing (lower = more entangled)",
        "mean over users",
        ["silhouette\nclean", "silhouette\nmasked", "kNN purity\nclean", "kNN purity\nmasked"],
        {label: allu.loc[mix, label].to_numpy() for label in labels},
        {label: allu.loc[mix, f"{label}_se"].to_numpy() for label in labels},
        reference=0.0,
    )
    transfer_bins = args.k + 1
    panels = [
        DistributionPanel(
            f"kNN drift between mask draws (k={args.k})", "1 - Jaccard", values("drift_draws"), bounds=(0, 1)
        ),
        DistributionPanel("kNN drift, clean vs masked input", "1 - Jaccard", values("drift_clean"), bounds=(0, 1)),
        DistributionPanel(
            "global transfer (masked input)",
            "share of latent kNN far yet related",
            values("transfer_masked"),
            bounds=(-0.5 / args.k, 1 + 0.5 / args.k),
            bins=transfer_bins,
        ),
        DistributionPanel("mask variance of the posterior mean", "tr Var_b[μ(x ⊙ b)]", values("var_b"), log=True),
        DistributionPanel(
            "mask variance / between-user variance", "tr Var_b[μ] / tr Cov_u[μ]", values("var_b_relative"), log=True
        ),
        bar,
    ]
    model_label = MODEL_SPECS[base_key].label
    title = f"{dataset}: {model_label}, ρ = {args.rho:g}, without and with PIA (λ_A = {args.lambda_a:g})"
    figures = savefig(geometry_figure(panels, ncols=3, title=title), out, "geometry")
    group_order = ["all", *[g[0] for g in USER_GROUPS]]
    ev_means, ev_ses, counts = {}, {}, []
    for key, label in zip((base_key, pia_key), labels, strict=True):
        ev = evaluations[key]
        s = {"all": ev.summary(), **ev.groups(USER_GROUPS)}
        ev_means[label] = np.array(
            [np.nan if s[g]["ndcg@100"]["mean"] is None else s[g]["ndcg@100"]["mean"] for g in group_order]
        )
        ev_ses[label] = np.array(
            [np.nan if s[g]["ndcg@100"]["se"] is None else s[g]["ndcg@100"]["se"] for g in group_order]
        )
        counts = [s[g]["ndcg@100"]["n"] for g in group_order]
    pn = paired[paired["metric"] == "ndcg@100"].set_index("group").reindex(group_order)
    figures += savefig(
        group_comparison_figure(
            group_order,
            ev_means,
            ev_ses,
            pn["mean"].to_numpy(dtype=float),
            pn["se"].to_numpy(dtype=float),
            counts=counts,
            title=f"{dataset}: test NDCG@100 of {model_label} without and with PIA",
        ),
        out,
        "user_groups",
    )
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "users.csv", users),
        write_csv(out / "summary.csv", summary),
        write_csv(out / "groups.csv", groups),
        write_csv(out / "paired.csv", paired),
    ]
    timing["total"] = time.perf_counter() - start
    notes = []
    if args.quick:
        notes.append("quick mode: tiny models and few epochs; the numbers test the pipeline, they are not results")
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {"dataset": dataset, **sizes, "k": args.k, "min_shared": args.min_shared},
        "dataset": {
            "name": dataset,
            "train_users": int(n_train),
            "items": split.n_items,
            "test_users": split.test.n_users,
            "split_cache": split.report.get("cache"),
        },
        "models": {
            label: {"key": key, "run": models[key].run, "config": models[key].config.to_json()}
            for key, label in zip((base_key, pia_key), labels, strict=True)
        },
        "cohorts": {
            "rule": cohort_rule,
            "order": cohort_order,
            "counts": {c: int(np.sum(cohorts == c)) for c in cohort_order},
        },
        "related": "same planted taste group" if taste is not None else f">= {args.min_shared} shared positives",
        "far": "L1 distance above the user's median distance to the analysed users",
        "quantities": QUANTITIES,
        "streams": STREAMS,
        "summary": summary.to_dict(orient="records"),
        "groups": groups.to_dict(orient="records"),
        "paired": paired.to_dict(orient="records"),
        "centroid_alignment": alignment,
        "notes": notes,
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)

    header = [
        f"PIA geometry on {dataset}: {model_label} at ρ = {args.rho:g} without and with PIA (λ_A = {args.lambda_a:g}), "
        f"{X.shape[0]:,} training users, k = {args.k}, {sizes['var_draws']} variance draws, "
        f"{sizes['drift_draws']} drift draws",
        f"cohorts: {cohort_rule}; related = {result['related']}; far = beyond the user's median L1 distance",
    ]
    _print_summary(summary, labels, cohort_order, header)
    pall = paired[(paired["metric"] == "ndcg@100")]
    print("\nTest NDCG@100, PIA - no PIA (paired over test users)")
    print(
        format_table(
            pall.assign(cell=[f"{m:+.4f} ± {s:.4f}" for m, s in zip(pall["mean"], pall["se"], strict=True)]),
            {"group": "s", "n": "d", "cell": "s"},
            {"cell": "ΔNDCG@100"},
        )
    )
    print_done(out, result, timing, notes)
    return out


def pia_centroid_alignment(trained: TrainedModel, X: sp.csr_matrix, seed: int) -> dict:
    """Proposition 3.1 on the PIA model: ``||mu_u - ebar_u|| - ||mu_u - ebar_pi(u)||`` over the analysed users
    (clean means, the anchors of the best epoch; :func:`geometry.alignment.centroid_alignment`), or a record
    with ``mean`` None and the reason when the run has no stored anchors."""
    anchors = load_anchors(trained.run)
    if anchors is None:
        reason = f"{trained.run}: best.pt stores no anchors (trained before they were)"
        return {"mean": None, "ci": None, "reason": reason}
    keep = np.diff(X.indptr) > 0
    encode = mu_encoder(trained.model, trained.config.mask_mode)
    mu = encode_masked(encode, X[keep], 1.0, trained.config.mask_mode).astype(np.float64)
    rng = np.random.default_rng([seed, STREAMS["centroid"]])
    out = centroid_alignment(mu, X[keep], anchors, rng).to_dict()
    out["reason"] = None
    out["meaning"] = (
        "mean over users of ||mu_u - ebar_u|| - ||mu_u - ebar_pi(u)|| (clean means of the PIA model; ebar the "
        "mean anchor of the user's items; pi a permutation without fixed points): < 0 when PIA aligned means with "
        "their own items' centroid (Proposition 3.1)"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
