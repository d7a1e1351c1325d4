"""Latent space of three activity cohorts under clean input, masking, and masking + PIA (PAPER.md section 7 figure).

Usage::

    python -m analyses.cohorts                                   # ML-1M, UMAP, rho 0.5, lambda_A 0.1
    python -m analyses.cohorts --method tsne --per-cohort 200
    python -m analyses.cohorts --quick                           # synthetic data, tiny models: under a minute

The paper's observation: with clean input the cohorts of users with about 5, 50 and 350 interactions separate;
masking entangles them and loosens neighbourhoods; PIA gives a smooth, stable progression. This job draws it.

**Users.** Training users in cohorts around ``--targets`` (default 5, 50, 350 interactions), ``--per-cohort`` each
(fixed seed). On the synthetic data (``--cohort-rule auto`` or ``planted``) the cohorts are the generator's planted
activity cohorts, ``per-cohort`` users drawn uniformly from each. Otherwise (``nearest``) for each target ``a``
in increasing order, the users not yet taken whose number of training interactions ``n`` is closest to ``a``
(smallest ``|n - a|``; ties in a seeded random order) are taken. The achieved range of ``n`` per cohort is
printed and saved, since real data may have few users near 350.

**Conditions.** Three models of the same architecture, seed and schedule from the run cache
(:func:`analyses.model_options.model_config`; beta reaches its cap after ``--anneal-epochs``, default 50, as in
every geometry job): trained on clean input (``rho = 1``), with masking (``--rho``), and with masking + PIA
(``--lambda-a``). Each encodes the users' clean histories, ``z = mu(x)`` (inference).

**One shared reducer.** The three latent spaces are separate models, so their coordinates are unrelated (any
rotation of a latent space is an equally good model). With ``--align procrustes`` (default) each condition is
centred, scaled to unit root-mean-square norm and rotated (orthogonal Procrustes) onto the clean condition; a
similarity transform changes no within-condition distance ratio, neighbour set or silhouette, and makes the
conditions share one frame. Then **one** reducer is fitted on the union of the three conditions' points
(duplicates fitted once, so identical inputs get identical coordinates) and the result is split into the three
panels, drawn on identical axis limits: ``umap.UMAP(metric="euclidean", random_state=seed)`` (``--method umap``)
or ``sklearn.manifold.TSNE(init="pca", random_state=seed)`` (``--method tsne``). Fitting on the union rather than
fitting on the clean condition and transforming the others treats the conditions symmetrically (``transform``
pulls new points onto the clean condition's manifold, which would hide the entanglement the figure is about),
and t-SNE cannot transform new points at all. The price of a shared fit: a user's three aligned codes are often each
other's neighbours, which pulls the three layouts towards one another, so the picture understates differences
between conditions; the silhouettes computed in each latent space (below) carry no such coupling.
``--fit separate`` fits one reducer per condition instead (each condition's own structure, positions not
comparable across panels).

**Numbers** (per condition): silhouette of the cohort labels in latent space and in the 2-D embedding
(``sklearn.metrics.silhouette_score``, Euclidean; 1 = separated, <= 0 = entangled), kNN cohort purity (share of
``--k`` latent neighbours in the same cohort), and the distances between cohort centroids in the standardised
(unit-RMS) latent space with their ``progression`` = ``d(first, last) / sum of consecutive distances`` (1 = the
cohorts lie in order on a line).

**The claim's statistic** (:func:`cohort_probes`): separation is whether the cohort label can be recovered from the
latent means of users a classifier was not fitted on: 5-fold cross-validated accuracy of a kNN probe (``--k``
neighbours, 199 relabellings) and of a logistic probe (19 relabellings), with Wilson intervals and permutation
p-values (:mod:`geometry.probes`). Entanglement under masking is the paired per-user difference clean - masked
of the kNN probe's correctness (and PIA - masked), with a verdict by the rule written into ``summary.json``
(``entanglement``). The silhouette describes cluster shape and is kept for the figure.

Outputs (folder printed at the end, default
``out/cohorts/DATASET-METHOD-MODEL-rhoR-lamL-seedS[-quick]-HASH``): ``embedding.csv`` (one row
per condition and user: cohort, interactions, 2-D coordinates), ``summary.csv`` (one row per condition),
``cohorts.csv`` (cohort sizes and interaction ranges), ``summary.json`` and the figure ``cohorts`` (PNG, PDF).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analyses.common import (
    add_job_arguments,
    check_float,
    check_int,
    default_out_dir,
    format_table,
    job_parser,
    parsed_arguments,
    planted_labels,
    print_done,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_csv,
)
from analyses.encoding import mu_encoder
from analyses.model_options import (
    DEFAULT_RHO,
    add_model_arguments,
    load_model_split,
    model_config,
    validate_model_options,
)
from analyses.results import MODEL_SPECS
from analyses.trained import get_trained
from figures.latent import cohort_embedding_figure
from figures.style import savefig
from geometry.neighbourhoods import encode_masked, knn
from geometry.probes import paired_accuracy_difference, probe_accuracy
from models.cli import end_process
from models.lazy import lazy_import
from models.split import Split

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")
scipy_linalg = lazy_import("scipy.linalg")
skmetrics = lazy_import("sklearn.metrics")

JOB = "cohorts"
TARGETS = (5, 50, 350)
DEFAULTS = {"per_cohort": 300}
QUICK = {"per_cohort": 60}
METHODS = {"umap": "UMAP", "tsne": "t-SNE"}


# ------------------------------------------------------------------------------------------------ cohort users


def nearest_cohorts(
    n_interactions: np.ndarray, targets: Sequence[int], per_cohort: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint cohorts of the users whose history length is closest to each target.

    For each target ``a`` in increasing order: among users not yet taken, the ``per_cohort`` with the smallest
    ``|n - a|``, ties in a random order drawn from ``rng``.

    Parameters
    ----------
    n_interactions : numpy.ndarray of int, shape (N,)
    targets : sequence of int
        Target activity levels (distinct).
    per_cohort : int
        Users per cohort (fewer when not enough users remain).
    rng : numpy.random.Generator

    Returns
    -------
    list of numpy.ndarray of int64
        Row indices of each cohort (sorted), in the order of ``sorted(targets)``.
    """
    n = np.asarray(n_interactions, dtype=np.int64)
    if len(set(targets)) != len(targets) or any(a < 1 for a in targets):
        raise ValueError(f"--targets must be distinct positive interaction counts, got {list(targets)}")
    if per_cohort < 1:
        raise ValueError(f"--per-cohort must be >= 1, got {per_cohort}")
    taken = np.zeros(n.size, dtype=bool)
    tie = rng.random(n.size)
    out = []
    for a in sorted(targets):
        free = np.flatnonzero(~taken)
        order = free[np.lexsort((tie[free], np.abs(n[free] - a)))]
        pick = np.sort(order[:per_cohort])
        taken[pick] = True
        out.append(pick)
    return out


def planted_cohorts(
    target_activity: np.ndarray, targets: Sequence[int], per_cohort: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``per_cohort`` users drawn uniformly from each planted cohort whose target activity is in ``targets``."""
    out = []
    for a in sorted(targets):
        members = np.flatnonzero(np.asarray(target_activity) == a)
        if members.size == 0:
            raise ValueError(f"the synthetic data has no planted cohort of {a} interactions; use --cohort-rule nearest")
        out.append(np.sort(rng.choice(members, size=min(per_cohort, members.size), replace=False)))
    return out


def select_cohorts(
    split: Split, targets: Sequence[int], per_cohort: int, rule: str, seed: int
) -> tuple[list[np.ndarray], str]:
    """Training rows of each cohort and the rule that picked them (``auto``: planted on synthetic, else nearest)."""
    rng = np.random.default_rng([seed, 7])
    planted, _ = planted_labels(split)
    if rule == "planted" and planted is None:
        raise ValueError("--cohort-rule planted needs the synthetic dataset (its planted cohorts); use nearest")
    if rule in ("auto", "planted") and planted is not None:
        return planted_cohorts(planted["target_activity"], targets, per_cohort, rng), "planted"
    return nearest_cohorts(np.diff(split.train.indptr), targets, per_cohort, rng), "nearest"


# ------------------------------------------------------------------------------------------ alignment, reducer


def standardise(Z: np.ndarray) -> np.ndarray:
    """Centre and scale to unit root-mean-square norm: ``(Z - mean) / sqrt(mean_u ||z_u - mean||^2)``."""
    Z = np.asarray(Z, dtype=np.float64)
    C = Z - Z.mean(axis=0)
    rms = float(np.sqrt((C**2).sum(axis=1).mean()))
    return C / rms if rms > 0 else C


def procrustes_align(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other`` standardised and rotated (orthogonal ``R`` minimising ``||other_s R - reference_s||_F``) onto the
    standardised ``reference``; rows are the same users. A similarity transform: distance ratios are unchanged.

    Latent spaces of different widths are zero-padded to the wider one.
    """
    A, B = standardise(reference), standardise(other)
    d = max(A.shape[1], B.shape[1])
    A = np.pad(A, ((0, 0), (0, d - A.shape[1])))
    B = np.pad(B, ((0, 0), (0, d - B.shape[1])))
    R, _ = scipy_linalg.orthogonal_procrustes(B, A)
    return B @ R


def shared_embedding(
    blocks: Sequence[np.ndarray],
    method: str = "umap",
    seed: int = 0,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
) -> list[np.ndarray]:
    """2-D coordinates of several point sets from **one** reducer fitted on their union.

    The blocks (shape ``(n_i, d)`` each, same ``d``) are stacked, identical rows are fitted once
    (``numpy.unique``), and the coordinates are split back per block: a point that appears in several blocks gets
    the same coordinates in each, and all blocks share one frame.

    Parameters
    ----------
    blocks : sequence of numpy.ndarray
    method : {"umap", "tsne"}
        ``umap.UMAP(n_neighbors, min_dist, metric="euclidean", random_state=seed)`` or
        ``sklearn.manifold.TSNE(perplexity, init="pca", random_state=seed)``; both reduced when the data are few.
    seed : int

    Returns
    -------
    list of numpy.ndarray, shape (n_i, 2)
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
    if not blocks or any(b.ndim != 2 for b in blocks) or len({b.shape[1] for b in blocks}) != 1:
        raise ValueError("blocks must be non-empty 2-D arrays with the same number of columns")
    stacked = np.concatenate(blocks)
    if not np.all(np.isfinite(stacked)):
        raise ValueError("the embeddings contain NaN or infinite values")
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    n = unique.shape[0]
    if n < 4:
        raise ValueError(f"a 2-D embedding needs at least 4 distinct points, got {n}")
    if method == "umap":
        import umap

        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=int(min(n_neighbors, n - 1)),
            min_dist=min_dist,
            metric="euclidean",
            random_state=seed,
            n_jobs=1,
        )
        with warnings.catch_warnings():
            # a fixed random_state makes UMAP single-threaded and says so; that is the point of fixing it
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            coords = reducer.fit_transform(unique)
    else:
        from sklearn.manifold import TSNE

        reducer = TSNE(n_components=2, perplexity=float(min(perplexity, (n - 1) / 3)), init="pca", random_state=seed)
        coords = reducer.fit_transform(unique)
    coords = np.asarray(coords, dtype=np.float64)[inverse]
    bounds = np.cumsum([0, *[b.shape[0] for b in blocks]])
    return [coords[bounds[i] : bounds[i + 1]] for i in range(len(blocks))]


# ------------------------------------------------------------------------------------------------- statistics


def knn_purity(Z: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean share of each point's ``k`` nearest neighbours (Euclidean) that carry its label."""
    labels = np.asarray(labels)
    neighbours = knn(Z, k, "euclidean").indices
    return float((labels[neighbours] == labels[:, None]).mean())


def centroid_distances(Z: np.ndarray, labels: np.ndarray, order: Sequence[str]) -> dict[str, float]:
    """Distances between consecutive cohort centroids and between the first and last, in the standardised space,
    and ``progression = d(first, last) / sum of consecutive distances`` (1 = collinear and in order)."""
    S = standardise(Z)
    cents = [S[np.asarray(labels) == c].mean(axis=0) for c in order]
    out = {}
    steps = []
    for a, b, ca, cb in zip(order[:-1], order[1:], cents[:-1], cents[1:], strict=True):
        steps.append(float(np.linalg.norm(cb - ca)))
        out[f"centroid_{a}_{b}"] = steps[-1]
    if len(order) > 2:
        span = float(np.linalg.norm(cents[-1] - cents[0]))
        out[f"centroid_{order[0]}_{order[-1]}"] = span
        out["progression"] = span / sum(steps) if sum(steps) > 0 else float("nan")
    return out


def _silhouette(Z: np.ndarray, labels: np.ndarray) -> float:
    k = np.unique(labels).size
    return float(skmetrics.silhouette_score(Z, labels)) if 2 <= k <= len(labels) - 1 else float("nan")


# -------------------------------------------------------------------------------------------------- the job


PROBES = {"knn": 199, "logistic": 19}
"""Cohort probes of :mod:`geometry.probes` and their permutations (the logistic probe is refitted per relabelling;
19 relabellings still reach p = 0.05)."""


def cohort_probes(
    latent: dict[str, np.ndarray], cohort: np.ndarray, k: int, seed: int
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Cross-validated probe accuracy of the cohort label per condition (:func:`geometry.probes.probe_accuracy`),
    and the paired per-user differences that decide the claims.

    ``entanglement["clean_minus_masked"]`` > 0 means masking entangles the cohorts (the label is harder to recover
    from the masked model's codes of the same users); ``"pia_minus_masked"`` says what PIA changes. Each carries a
    ``verdict`` by a rule fixed here: ``supported`` when the paired 95% interval of the kNN probe lies above 0 and
    the clean condition is ``separated``, ``not supported`` when it lies below 0, otherwise ``inconclusive``.
    """
    results = {
        name: {
            kind: probe_accuracy(Z, cohort, probe=kind, k=k, n_permutations=n, rng=seed) for kind, n in PROBES.items()
        }
        for name, Z in latent.items()
    }
    entanglement = {}
    for key, (a, b) in {"clean_minus_masked": ("clean", "masked"), "pia_minus_masked": ("pia", "masked")}.items():
        diffs = {kind: paired_accuracy_difference(results[a][kind], results[b][kind]).to_dict() for kind in PROBES}
        low, high = diffs["knn"]["ci"]
        if low > 0 and results[a]["knn"].verdict == "separated":
            verdict = "supported"
        elif high < 0:
            verdict = "not supported"
        else:
            verdict = "inconclusive"
        rule = (
            f"supported if the paired 95% interval of {a} - {b} ({k}-NN probe accuracy, per user) lies above 0 and "
            f"{a} is separated (permutation p <= 0.05); not supported if it lies below 0; else inconclusive"
        )
        entanglement[key] = {**diffs, "verdict": verdict, "rule": rule}
    return {n: {kind: r.to_dict() for kind, r in rs.items()} for n, rs in results.items()}, entanglement


def _print_probes(probes: dict, entanglement: dict, conditions: dict) -> None:
    print("\ncohort label recovered from latent means (5-fold cross-validated accuracy [95% Wilson], permutation p):")
    for name, (label, _, _) in conditions.items():
        cells = [
            f"{kind} {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] p={r['p_value']:.3f}"
            for kind, r in probes[name].items()
        ]
        chance = next(iter(probes[name].values()))["chance"]
        print(f"  {label:<28} " + "; ".join(cells) + f"  (chance {chance:.3f})")
    for key, e in entanglement.items():
        k = e["knn"]
        print(
            f"  {key.replace('_', ' ')}: kNN {k['mean']:+.3f} [{k['ci'][0]:+.3f}, {k['ci'][1]:+.3f}] -> {e['verdict']}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "UMAP / t-SNE of the about-5, 50 and 350-interaction cohorts under clean input, masking and "
        "masking + PIA, with one shared reducer.",
    )
    parser.add_argument("--method", choices=list(METHODS), default="umap", help="reducer (umap)")
    parser.add_argument("--model", choices=["multvae", "recvae"], default="multvae", help="model (multvae)")
    parser.add_argument("--targets", type=int, nargs="+", default=list(TARGETS), help="cohort activity levels")
    parser.add_argument("--per-cohort", type=int, help=f"users per cohort (default {DEFAULTS['per_cohort']})")
    parser.add_argument(
        "--cohort-rule",
        choices=["auto", "planted", "nearest"],
        default="auto",
        help="auto: planted cohorts on synthetic data, else the users nearest each target (auto)",
    )
    parser.add_argument(
        "--align",
        choices=["procrustes", "none"],
        default="procrustes",
        help="map every condition onto the clean one by a similarity transform before the shared fit (procrustes)",
    )
    parser.add_argument(
        "--fit",
        choices=["union", "separate"],
        default="union",
        help="union: one reducer on all conditions (shared frame, default); separate: one per condition",
    )
    parser.add_argument("--k", type=int, default=10, help="neighbours of the kNN cohort purity (10)")
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors (15)")
    parser.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (0.1)")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (30)")
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-METHOD-MODEL-rhoR-lamL-seedS[-quick]-HASH",
        seed="seed of the training runs and of the analysis",
        quick="tiny models, few epochs, synthetic data unless --dataset: seconds to a minute",
    )
    add_model_arguments(parser, rho=DEFAULT_RHO, pia=True)
    return parser


def _resolve(args: argparse.Namespace) -> int:
    per = args.per_cohort if args.per_cohort is not None else (QUICK if args.quick else DEFAULTS)["per_cohort"]
    if per < 2:
        raise ValueError(f"--per-cohort must be >= 2, got {per}")
    if len(set(args.targets)) != len(args.targets) or min(args.targets) < 1 or len(args.targets) < 2:
        raise ValueError(f"--targets must be at least two distinct positive interaction counts, got {args.targets}")
    check_int("--k", args.k, 1)
    check_int("--n-neighbors", args.n_neighbors, 2)
    check_float("--min-dist", args.min_dist, low=0)
    check_float("--perplexity", args.perplexity, low=0, low_open=True)
    return per


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    dataset = validate_model_options(args)
    per_cohort = _resolve(args)
    progress = not args.no_progress
    conditions = {
        "clean": ("clean input (ρ = 1)", 1.0, 0.0),
        "masked": (f"masking (ρ = {args.rho:g})", args.rho, 0.0),
        "pia": (f"masking + PIA (λ_A = {args.lambda_a:g})", args.rho, args.lambda_a),
    }
    configs = {
        name: model_config(args, model=args.model, rho=rho, pia=pia) for name, (_, rho, pia) in conditions.items()
    }
    tag = f"{args.method}-{args.model}-rho{args.rho:g}-lam{args.lambda_a:g}-seed{args.seed}"
    options = result_options(args, dataset=dataset, per_cohort=per_cohort)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)

    split = load_model_split(args)
    timing = {"load": time.perf_counter() - start}
    cohort_rows, rule = select_cohorts(split, args.targets, per_cohort, args.cohort_rule, args.seed)
    names = [f"≈{a}" for a in sorted(args.targets)]
    rows = np.concatenate(cohort_rows)
    cohort = np.concatenate([np.full(r.size, name) for r, name in zip(cohort_rows, names, strict=True)])
    X = sp.csr_matrix(split.train[rows])
    n_int = np.diff(X.indptr)
    if args.k > rows.size - 1:
        raise ValueError(f"--k = {args.k} needs more than k users in the cohorts, got {rows.size}")

    t = time.perf_counter()
    latent = {}
    for name, config in configs.items():
        trained = get_trained(config, split=split, progress=progress)
        latent[name] = encode_masked(mu_encoder(trained.model, config.mask_mode), X, 1.0)
        latent[f"{name}_run"] = trained.run
    timing["train_or_load"] = time.perf_counter() - t

    t = time.perf_counter()
    if args.align == "procrustes":
        inputs = [standardise(latent["clean"])] + [
            procrustes_align(latent["clean"], latent[n]) for n in ("masked", "pia")
        ]
    else:
        inputs = [latent[n] for n in conditions]
    if progress:
        print(f"fitting one {METHODS[args.method]} on {3 * rows.size} points ...", file=sys.stderr)
    options = {"n_neighbors": args.n_neighbors, "min_dist": args.min_dist, "perplexity": args.perplexity}
    if args.fit == "union":
        coords = shared_embedding(inputs, args.method, args.seed, **options)
    else:
        coords = [shared_embedding([z], args.method, args.seed, **options)[0] for z in inputs]
    timing["reducer"] = time.perf_counter() - t

    summary_rows, frames = [], []
    for (name, (label, rho, pia)), emb in zip(conditions.items(), coords, strict=True):
        Z = latent[name]
        summary_rows.append(
            {
                "condition": name,
                "label": label,
                "rho": rho,
                "lambda_a": pia,
                "n": int(rows.size),
                "silhouette_latent": _silhouette(Z, cohort),
                "silhouette_2d": _silhouette(emb, cohort),
                "purity_latent": knn_purity(Z, cohort, args.k),
                "purity_2d": knn_purity(emb, cohort, args.k),
                **centroid_distances(Z, cohort, names),
            }
        )
        frames.append(
            pd.DataFrame(
                {
                    "condition": name,
                    "row": rows,
                    "user": split.train_users[rows],
                    "cohort": cohort,
                    "n_interactions": n_int,
                    "x": emb[:, 0],
                    "y": emb[:, 1],
                }
            )
        )
    t = time.perf_counter()
    probes, entanglement = cohort_probes({n: latent[n] for n in conditions}, cohort, args.k, args.seed)
    for row in summary_rows:
        for kind in PROBES:
            r = probes[row["condition"]][kind]
            row[f"probe_{kind}"], row[f"probe_{kind}_p"] = r["accuracy"], r["p_value"]
            row[f"probe_{kind}_low"], row[f"probe_{kind}_high"] = r["ci"]
    timing["probes"] = time.perf_counter() - t
    summary = pd.DataFrame(summary_rows)
    embedding = pd.concat(frames, ignore_index=True)
    cohorts_table = pd.DataFrame(
        [
            {
                "cohort": name,
                "target": a,
                "users": int(r.size),
                "min_interactions": int(n_int[cohort == name].min()),
                "median_interactions": float(np.median(n_int[cohort == name])),
                "max_interactions": int(n_int[cohort == name].max()),
            }
            for name, a, r in zip(names, sorted(args.targets), cohort_rows, strict=True)
        ]
    )

    t = time.perf_counter()
    method = METHODS[args.method]
    fig = cohort_embedding_figure(
        coords,
        [cohort] * len(coords),
        [conditions[n][0] for n in conditions],
        names,
        method=method,
        subtitles=[
            f"silhouette {s:.2f} latent, {q:.2f} 2-D"
            for s, q in zip(summary["silhouette_latent"], summary["silhouette_2d"], strict=True)
        ],
        title=f"{dataset}: {MODEL_SPECS[args.model].label} latent means of three activity cohorts, "
        + (f"one shared {method}" if args.fit == "union" else f"one {method} per panel")
        + (" (quick mode)" if args.quick else ""),
    )
    figures = savefig(fig, out, "cohorts")
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "embedding.csv", embedding),
        write_csv(out / "summary.csv", summary),
        write_csv(out / "cohorts.csv", cohorts_table),
    ]
    timing["total"] = time.perf_counter() - start
    rule_text = (
        "planted activity cohorts of the synthetic data, users drawn uniformly"
        if rule == "planted"
        else "for each target in increasing order, the users not yet taken with the closest number of training "
        "interactions (ties in a seeded random order)"
    )
    notes = []
    if args.quick:
        notes.append("quick mode: tiny models and few epochs; the picture tests the pipeline, it is not a result")
    short = cohorts_table[cohorts_table["users"] < per_cohort]
    for _, r in short.iterrows():
        notes.append(f"cohort {r['cohort']} has only {r['users']} users (asked for {per_cohort})")
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "dataset": {
            "name": dataset,
            "train_users": int(split.train.shape[0]),
            "items": split.n_items,
            "split_cache": split.report.get("cache"),
        },
        "cohort_rule": {"rule": rule, "description": rule_text},
        "cohorts": cohorts_table.to_dict(orient="records"),
        "conditions": {
            n: {"label": conditions[n][0], "run": latent[f"{n}_run"], "config": configs[n].to_json()}
            for n in conditions
        },
        "reducer": {
            "method": args.method,
            "fit": args.fit,
            "fit_meaning": "one reducer fitted on the union of the three conditions (duplicate rows once)"
            if args.fit == "union"
            else "one reducer per condition (same settings and seed): positions are not comparable across panels",
            "align": args.align,
            "seed": args.seed,
            "parameters": {"n_neighbors": args.n_neighbors, "min_dist": args.min_dist, "metric": "euclidean"}
            if args.method == "umap"
            else {"perplexity": args.perplexity, "init": "pca"},
        },
        "summary": summary.to_dict(orient="records"),
        "probes": probes,
        "entanglement": entanglement,
        "notes": notes,
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)

    print(
        f"Cohorts on {dataset}: {MODEL_SPECS[args.model].label} under clean input, masking (ρ = {args.rho:g}) and "
        f"masking + PIA (λ_A = {args.lambda_a:g}); z = μ(x) of clean histories; one {method} (seed {args.seed}) "
        + ("fitted on all three conditions" if args.fit == "union" else "fitted on each condition separately")
        + (", Procrustes-aligned" if args.align == "procrustes" else "")
    )
    print(f"cohort rule: {rule_text}")
    print(
        format_table(
            cohorts_table,
            {"cohort": "s", "users": "d", "min_interactions": "d", "median_interactions": "g", "max_interactions": "d"},
            {"min_interactions": "min n", "median_interactions": "median n", "max_interactions": "max n"},
        )
    )
    print()
    fmt = {"label": "s", "silhouette_latent": ".3f", "silhouette_2d": ".3f", "purity_latent": ".3f", "purity_2d": ".3f"}
    if "progression" in summary:
        fmt["progression"] = ".3f"
    print(
        format_table(
            summary,
            fmt,
            {
                "label": "condition",
                "silhouette_latent": "silhouette (latent)",
                "silhouette_2d": "silhouette (2-D)",
                "purity_latent": f"{args.k}-NN purity (latent)",
                "purity_2d": f"{args.k}-NN purity (2-D)",
            },
        )
    )
    print("silhouette: 1 = cohorts separated, <= 0 = entangled; progression: 1 = cohort centroids in order on a line")
    _print_probes(probes, entanglement, conditions)
    print_done(out, result, timing, notes)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
