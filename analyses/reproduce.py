"""The results table of every model on one dataset, side by side with the paper's published numbers.

Usage::

    python -m analyses.reproduce                                   # ML-1M, every model (long: trains 5 models)
    python -m analyses.reproduce --dataset ml-20m --models multvae,multvae-pia,ease
    python -m analyses.reproduce --quick                           # synthetic data, tiny models: seconds

Models (``--models``, comma-separated; default all): ``ease`` (EASE, lambda chosen on validation NDCG@100 by
:func:`models.baselines.select_ease_lambda`), ``multvae``, ``multvae-pia``, ``recvae``, ``recvae-pia``, ``multdae``,
``cdae`` (CDAE, :mod:`models.cdae`), ``wmf`` and ``bpr`` (WMF and BPR-MF with the strong-generalization fold-in, their
grids of :mod:`models.baselines` searched on validation NDCG@100; ``--quick``: one small setting, :data:`QUICK_MF`)
and ``ract`` (the ``multvae`` row's run fine-tuned by RaCT, :mod:`models.ract`, with the authors' settings;
``--quick``: :data:`QUICK_RACT`; its folder ``ract-RUN-HASH`` sits beside the run in the run cache and is resumed or
reused like a cached run). The neural models come from the run cache (:func:`analyses.trained.get_trained`), trained
on first use with the configurations of :func:`analyses.model_options.model_config`: the reference settings of
PROTOCOL.md, masking keep probability ``--rho``, PIA weight ``--lambda-a``, and the **reference KL schedule** ``beta =
min(0.2, updates / 200,000)`` of the published protocol (:data:`analyses.model_options.REFERENCE`), not the 50-epoch
annealing of the geometry jobs; so with the default options their full-size models are not this job's
(``--anneal-epochs 50`` makes them the same). Quick mode uses the same tiny models as every job.

Every model is evaluated on the test users (strong generalization: fold-in 80%, targets 20%; Recall@20, Recall@50,
NDCG@100 as mean ± standard error over users, by :func:`models.evaluation.evaluate`), overall and per user group
(``[5-10]``, ``[11-50]``, ``[51-100]``, ``[100+]`` interactions), with the paired difference PIA - no PIA on the
same test users (:func:`models.evaluation.paired_difference`).

The published numbers (:data:`analyses.results.PUBLISHED`, :data:`analyses.results.PUBLISHED_GROUPS`) are the
paper's tables as transcribed in the project's ``PAPER.md`` (section 7). They exist for ML-20M, Netflix and MSD only
(user groups and the ablation for ML-20M only), so the comparison is like for like only on ``--dataset ml-20m``,
``netflix`` and ``msd`` with the full configurations; on any other dataset (ML-1M, synthetic, ...) the paper columns
read "n/a".

Outputs (folder printed at the end, default ``out/reproduce/DATASET-seedS[-quick]-HASH``): ``results.csv`` (one row per
model: our means and standard errors, the published value or empty), ``groups.csv`` (model x user group),
``paired.csv`` (PIA - no PIA, overall and per group), ``results.json`` (all of it, plus the configurations, run
folders, the EASE lambda search and the full published tables with their source) and the figure ``results``
(PNG and PDF).

With ``--quick`` (synthetic data unless ``--dataset`` is given): hidden (64,), latent 16, 15 epochs (RecVAE 6), lr 3e-3
and the KL weight annealed to its cap within 10 epochs (:data:`analyses.model_options.QUICK_MODELS`): a smoke test
of the pipeline, not a result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from analyses.common import (
    add_job_arguments,
    default_out_dir,
    format_table,
    job_parser,
    parsed_arguments,
    print_done,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_csv,
)
from analyses.model_options import (
    DEFAULT_RHO,
    REFERENCE,
    add_model_arguments,
    load_model_split,
    model_config,
    validate_model_options,
)
from analyses.results import (
    METRICS,
    MODEL_SPECS,
    PUBLISHED,
    PUBLISHED_ABLATION,
    PUBLISHED_BASELINES,
    PUBLISHED_BASELINES_SOURCE,
    PUBLISHED_GROUPS,
    PUBLISHED_SOURCE,
    ModelSpec,
    groups_table,
    paired_table,
    parse_models,
    results_table,
)
from analyses.trained import get_trained
from figures.latent import results_figure
from figures.style import savefig
from models.baselines import EASE_LAMBDAS, MF_DEFAULTS, grid_edges, select_ease_lambda
from models.bpr import select_bpr
from models.cli import end_process
from models.evaluation import USER_GROUPS, Evaluation, evaluate
from models.lazy import lazy_import
from models.trainer import TrainConfig
from models.wmf import WMF_ALPHAS, select_wmf

pd = lazy_import("pandas")

JOB = "reproduce"
QUICK_MF = {"factors": [8], "regularization": [0.1], "alpha": [10.0], "iterations": 5}
"""WMF and BPR-MF in ``--quick`` mode: one tiny setting (a smoke test of the pipeline, as the tiny neural models)."""
QUICK_RACT = {"critic_epochs": 3, "actor_epochs": 3, "lr_actor": 1e-4}
"""RaCT in ``--quick`` mode: a few epochs of each phase."""


def ract_run(actor_run: Path, quick: bool, split, progress: bool) -> tuple:
    """RaCT on a cached Multi-VAE run: trained (or resumed, or reused when finished) in ``ract-RUN-HASH`` beside the
    run, HASH naming the settings; returns the fine-tuned actor's score function and the folder's record."""
    from models.ract import RactSettings, load_ract, train_ract

    settings = {**asdict(RactSettings()), **(QUICK_RACT if quick else {})}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    out = actor_run.parent / f"ract-{actor_run.name}-{digest}"
    train_ract(actor_run, out, resume=(out / "checkpoint.pt").is_file(), split=split, progress=progress, **settings)
    done = json.loads((out / "test_metrics.json").read_text())
    return load_ract(out).score, {"run": str(out), "actor_run": str(actor_run), "settings": settings, **done["run"]}


def fit_factorisation(key: str, split, quick: bool, seed: int) -> tuple:
    """WMF or BPR-MF (``key``) chosen on validation NDCG@100 over the grid of ``models.baselines`` (``quick``: the
    one setting :data:`QUICK_MF`); returns the score function and the search record (setting and grid)."""
    grid = QUICK_MF if quick else {**MF_DEFAULTS[key], "alpha": list(WMF_ALPHAS)}
    common = {"iterations": grid["iterations"], "seed": seed}
    if key == "wmf":
        model, search = select_wmf(split, grid["factors"], grid["regularization"], grid["alpha"], **common)
    else:
        model, search = select_bpr(split, grid["factors"], grid["regularization"], **common)
    edges = grid_edges(
        search["best"], {k: grid[k] for k in ("factors", "regularization", "alpha") if k in search["best"]}
    )
    record = {
        "setting": search["best"],
        "iterations": grid["iterations"],
        "validation_ndcg@100": [
            {**{k: v for k, v in r.items() if k != "validation"}, "ndcg@100": r["validation"]["ndcg@100"]["mean"]}
            for r in search["grid"]
        ],
        "at_grid_edge": edges,
    }
    return model.score, record


def spec_config(spec: ModelSpec, args: argparse.Namespace) -> TrainConfig:
    """The configuration of one table row from the job's options, with the published KL schedule."""
    assert spec.model is not None
    pia = args.lambda_a if spec.pia else 0.0
    return model_config(args, model=spec.model, rho=args.rho, pia=pia, schedule=REFERENCE)


# -------------------------------------------------------------------------------------------------- the job


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "Results table of every model (test users, overall and by user group) next to the paper's published numbers.",
        note="The paper publishes ML-20M, Netflix and MSD only: elsewhere its columns read n/a.",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODEL_SPECS),
        help=f"comma-separated subset of {','.join(MODEL_SPECS)} (default: all)",
    )
    parser.add_argument(
        "--ease-lambdas",
        type=str,
        default=",".join(f"{v:g}" for v in EASE_LAMBDAS),
        help="EASE lambda grid searched on validation NDCG@100 (default %(default)s)",
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-seedS[-quick]-HASH",
        seed="seed of the training runs and of the analysis",
        quick="tiny models, few epochs, synthetic data unless --dataset: seconds to a minute",
    )
    add_model_arguments(parser, schedule=REFERENCE, rho=DEFAULT_RHO, pia=True)
    return parser


def _lambdas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--ease-lambdas must be comma-separated numbers > 0, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"--ease-lambdas must be comma-separated numbers > 0, got {text!r}")
    return values


def _cell(mean: float, se: float) -> str:
    return f"{mean:.4f} ± {se:.4f}"


def _print_summary(table: pd.DataFrame, groups: pd.DataFrame, paired: pd.DataFrame, header: list[str]) -> None:
    print("\n".join(header))
    show = pd.DataFrame({"model": table["label"], "n": table["n_users"]})
    for m in METRICS:
        show[m] = [_cell(a, b) for a, b in zip(table[m], table[f"{m}_se"], strict=True)]
        show[f"paper {m}"] = ["n/a" if not np.isfinite(v) else f"{v:.3f}" for v in table[f"paper_{m}"]]
    print(format_table(show, {c: "s" if c != "n" else "d" for c in show.columns}))
    print("\nUser groups (test users by number of interactions; NDCG@100, mean ± se; paper: ML-20M only)")
    g = groups.pivot(index="label", columns="group", values="ndcg@100").reindex(
        index=list(dict.fromkeys(groups["label"])), columns=[b[0] for b in USER_GROUPS]
    )
    gse = groups.pivot(index="label", columns="group", values="ndcg@100_se").reindex_like(g)
    gn = groups.pivot(index="label", columns="group", values="n").reindex_like(g)
    gshow = pd.DataFrame({"model": g.index})
    for col in g.columns:
        gshow[f"{col} (n={int(gn[col].iloc[0])})"] = [
            "-" if not np.isfinite(m) else _cell(m, s) for m, s in zip(g[col], gse[col], strict=True)
        ]
    print(format_table(gshow, dict.fromkeys(gshow.columns, "s")))
    if len(paired):
        print("\nPaired differences on the same test users (PIA - no PIA, RaCT - its actor; mean ± se)")
        p = paired[paired["metric"] == "ndcg@100"]
        pshow = pd.DataFrame(
            {
                "comparison": p["comparison"],
                "group": p["group"],
                "n": p["n"],
                "ΔNDCG@100": [f"{a:+.4f} ± {b:.4f}" for a, b in zip(p["mean"], p["se"], strict=True)],
            }
        )
        print(format_table(pshow, {"comparison": "s", "group": "s", "n": "d", "ΔNDCG@100": "s"}))


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    dataset = validate_model_options(args)
    keys = parse_models(args.models)
    lambdas = _lambdas(args.ease_lambdas)
    progress = not args.no_progress
    configs = {k: spec_config(MODEL_SPECS[k], args) for k in keys if MODEL_SPECS[k].model is not None}
    options = result_options(args, dataset=dataset, models=keys, ease_lambdas=lambdas)
    out = stage_output(args.out or default_out_dir(JOB, dataset, f"seed{args.seed}", options), JOB, options)

    split = load_model_split(args)
    timing = {"load": time.perf_counter() - start}
    evaluations: dict[str, Evaluation] = {}
    runs: dict[str, dict] = {}
    for key in keys:
        t = time.perf_counter()
        if key == "ease":
            if progress:
                print(f"EASE: searching lambda in {lambdas} on validation NDCG@100", file=sys.stderr)
            model, search = select_ease_lambda(split, lambdas)
            score = model.score
            runs[key] = {
                "lambda": search.best,
                "validation_ndcg@100": {f"{lam:g}": s["ndcg@100"]["mean"] for lam, s in search.scores.items()},
                "lambda_at_grid_edge": len(lambdas) > 1 and search.best in (min(lambdas), max(lambdas)),
            }
        elif key in ("wmf", "bpr"):
            if progress:
                print(f"{MODEL_SPECS[key].label}: searching its grid on validation NDCG@100", file=sys.stderr)
            score, runs[key] = fit_factorisation(key, split, args.quick, args.seed)
        elif key == "ract":
            actor = get_trained(configs[key], split=split, progress=progress)
            if progress:
                print(f"RaCT: fine-tuning {actor.run.name}", file=sys.stderr)
            score, runs[key] = ract_run(actor.run, args.quick, split, progress)
        else:
            trained = get_trained(configs[key], split=split, progress=progress)
            score = trained.model.score
            runs[key] = {"run": trained.run, "config": trained.config.to_json()}
        evaluations[key] = evaluate(score, split.test)
        timing[key] = time.perf_counter() - t

    table = results_table(evaluations, dataset)
    groups = groups_table(evaluations, dataset)
    paired_parts = [
        paired_table(
            evaluations[f"{base}-pia"],
            evaluations[base],
            f"{MODEL_SPECS[f'{base}-pia'].label} - {MODEL_SPECS[base].label}",
        )
        for base in ("multvae", "recvae")
        if base in evaluations and f"{base}-pia" in evaluations
    ]
    if "ract" in evaluations and "multvae" in evaluations:  # RaCT fine-tunes the Multi-VAE row's own run
        paired_parts.append(paired_table(evaluations["ract"], evaluations["multvae"], "RaCT - Multi-VAE"))
    paired = (
        pd.concat(paired_parts, ignore_index=True)
        if paired_parts
        else pd.DataFrame(columns=["comparison", "group", "metric", "mean", "se", "n"])
    )

    t = time.perf_counter()
    labels = list(table["label"])
    group_labels = [b[0] for b in USER_GROUPS]
    gm = groups.pivot(index="model", columns="group", values="ndcg@100").reindex(index=keys, columns=group_labels)
    gs = groups.pivot(index="model", columns="group", values="ndcg@100_se").reindex(index=keys, columns=group_labels)
    fig = results_figure(
        labels,
        list(METRICS),
        table[list(METRICS)].to_numpy(),
        table[[f"{m}_se" for m in METRICS]].to_numpy(),
        table[[f"paper_{m}" for m in METRICS]].to_numpy(),
        group_labels,
        gm.to_numpy(),
        gs.to_numpy(),
        title=f"{dataset}: test users" + (" (quick mode: tiny models)" if args.quick else ""),
        paper_label=f"paper ({dataset})",
    )
    figures = savefig(fig, out, "results")
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "results.csv", table),
        write_csv(out / "groups.csv", groups),
        write_csv(out / "paired.csv", paired),
    ]
    timing["total"] = time.perf_counter() - start
    comparable = dataset in PUBLISHED
    notes = []
    if not comparable:
        notes.append(
            f"the paper publishes no number for {dataset}: its columns read n/a; the comparison is like for like "
            "only on ml-20m, netflix and msd"
        )
    if args.quick:
        notes.append("quick mode: tiny models and few epochs; the numbers test the pipeline, they are not results")
    for key, r in runs.items():
        if r.get("lambda_at_grid_edge"):
            notes.append(f"EASE: the best lambda {r['lambda']:g} is at the edge of the grid; widen --ease-lambdas")
        if key == "ract" and r.get("evaluated_epoch") == 0:
            notes.append(
                "RaCT: no fine-tuned epoch beat the unchanged actor on validation (best epoch 0), so its row is the "
                "Multi-VAE's"
            )
        if r.get("at_grid_edge"):
            edges = ", ".join(r["at_grid_edge"])
            notes.append(
                f"{MODEL_SPECS[key].label}: the chosen {edges} at the edge of its grid "
                f"(python -m models.baselines {key} searches wider grids)"
            )
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "dataset": {
            "name": dataset,
            "train_users": int(split.train.shape[0]),
            "items": split.n_items,
            "test_users": split.test.n_users,
            "split_cache": split.report.get("cache"),
        },
        "metrics": list(METRICS),
        "user_groups": [list(b) for b in USER_GROUPS],
        "results": table.to_dict(orient="records"),
        "groups": groups.to_dict(orient="records"),
        "paired": paired.to_dict(orient="records"),
        "runs": runs,
        "published": {
            "source": PUBLISHED_SOURCE,
            "comparable": comparable,
            "datasets": sorted(PUBLISHED),
            "table": PUBLISHED,
            "baselines": PUBLISHED_BASELINES,
            "baselines_source": PUBLISHED_BASELINES_SOURCE,
            "groups": PUBLISHED_GROUPS,
            "ablation_ndcg@100": PUBLISHED_ABLATION,
        },
        "notes": notes,
    }
    save_result(out, "results.json", result, [*files, *figures], timing)

    header = [
        f"Results on {dataset} ({split.train.shape[0]:,} training users, {split.n_items:,} items; "
        f"{split.test.n_users:,} test users), mean ± se over test users",
        f"masking keep probability rho = {args.rho:g}, PIA lambda_A = {args.lambda_a:g}, seed {args.seed}"
        + (", quick mode" if args.quick else ""),
        f"paper: {'PAPER.md section 7, ' + dataset if comparable else 'n/a for ' + dataset}",
    ]
    _print_summary(table, groups, paired, header)
    print_done(out, result, timing, notes)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
