"""The accuracy gain of PIA measured like for like: lambda_A tuned on validation, several seeds, a fixed rule.

Usage::

    python -m analyses.pia_uplift                                  # ML-1M, Multi-VAE and RecVAE, seeds 0 1 2
    python -m analyses.pia_uplift --models multvae --seeds 0 1 2 3 4 --lambdas 0.1 0.3 1 3
    python -m analyses.pia_uplift --quick                          # synthetic data, tiny models: 1-2 minutes

Why (issue 10, finding 3): the README's "+0.0186 NDCG@100 on ML-1M for PIA" compared PIA against a Multi-VAE
whose KL weight beta never exceeded 0.01 (the reference 200,000-update schedule on small data), at the edge
value lambda_A = 1 of the grid, with a single-seed per-user standard error that ignores the variation between
trainings (on a small dataset the model without PIA alone moved by 0.057 NDCG@100 between two seeds).

What is compared, per architecture (``--models``, default Multi-VAE and RecVAE), every model from the run cache
(:func:`analyses.trained.get_trained`) with the configurations of :func:`analyses.model_options.model_config`:

* **baseline**: masking with keep probability ``--rho`` (0.5), no PIA; **PIA**: the same with lambda_A chosen
  below. Both with the geometry jobs' KL schedule (beta reaches its cap 0.2 after ``--anneal-epochs``, default 50,
  :data:`analyses.model_options.GEOMETRY`), so the baseline is regularised as intended. These are exactly the
  models of ``python -m analyses.pia_geometry --seed S --lambda-a L --rho R`` (same configuration, same cache
  entry): the two jobs share them.
* **lambda_A** is chosen on the *validation* users: the best-epoch validation NDCG@100 of the PIA model at each
  value of ``--lambdas`` (default 0.03 0.1 0.3 1 3 10), trained at the tuning seed (the first of ``--seeds``).
  The curve, the choice and whether it is interior (neither the smallest nor the largest grid value) are
  recorded, and the tuning effort of each arm (configurations tried: 1 for the baseline, the grid size for PIA).
  Ties go to the smaller lambda_A. The test users are never used for the choice. When the choice is the
  smallest or largest value, the search goes one grid step further that way (the outermost value times the
  ratio of the two outermost ones: 0.03 -> 0.009 -> 0.0027 ...) until the choice is interior, at most
  ``--extend-grid`` times (default 3, ``--quick`` 0); the added values are recorded
  (``lambda_search.extended_with``) and count in the tuning effort. Grid models whose best epoch is at the cap
  are listed (``lambda_search.capped``): their validation values are lower bounds (on ML-100K, RecVAE with
  lambda_A >= 0.3 peaks at epochs 94-99 of 100). ``--epochs-for recvae=100`` trains one
  architecture longer than ``--epochs`` (RecVAE's reference 50 outer epochs leave its best epoch at the cap on
  ML-100K and ML-1M).
* **per seed** (``--seeds``, default 0 1 2; the training seed is the seed): baseline and PIA at the chosen
  lambda_A are evaluated on the test users (strong generalisation, :func:`models.evaluation.evaluate`) and
  compared by the paired per-user difference PIA - baseline with its standard error
  (:func:`models.evaluation.paired_difference`; NDCG@100, Recall@20, Recall@50; per user group by
  :func:`analyses.results.paired_table`);
* **across seeds**: the mean of the per-seed paired mean differences with a 95% interval across seeds
  (:func:`analyses.results.across_seeds` with the per-seed SEs): it contains the training noise the per-user SE
  ignores and the sampling error of the test users, which every seed shares (the same users), so the spread
  between seeds does not contain it;
* **ablation** (the paper's row): clean input (rho = 1, no PIA) / masking / masking + PIA, test NDCG@100 mean +-
  SE per seed and across seeds, beside the published ML-20M row (:data:`analyses.results.PUBLISHED_ABLATION`,
  Multi-VAE; like for like only on ``--dataset ml-20m``);
* **the published step schedule** (``beta = min(cap, updates / 200,000)``, :data:`analyses.model_options.REFERENCE`,
  the models of ``analyses.reproduce``): baseline and PIA at the chosen lambda_A at ``--reference-seeds``
  (default the tuning seed; ``none`` skips it), reported beside the main comparison with the final beta of each
  model, so a reader sees how far beta got (below 0.01 on ML-1M). It never enters the verdict. With ``--quick``
  or an explicit ``--anneal-epochs`` both schedules give the same configuration, so these are the main models.

The decision rule (:data:`RULE`, :func:`uplift_verdict`), per architecture, on the across-seed 95% interval of
the NDCG@100 gain: ``supported`` if it lies above 0 (the reason says so when the gain is nonetheless below
+0.002); ``not supported`` if it lies below +0.002, the smallest PIA gain the paper publishes (RecVAE on Netflix):
PIA lowers NDCG@100, or its gain is smaller than any the paper claims; ``inconclusive`` otherwise. Always
``inconclusive`` when fewer than 2 seeds were run, when lambda_A is at the edge of the grid, or when a compared
model's best epoch is at the training cap (best epoch, counted from 0, >= 0.8 x epochs run: the model was still
improving, and a capped run can fake a gain). The per-user standard errors enter the interval only as the
sampling error the seeds share; no seed decides alone.

Outputs (folder printed at the end, default ``out/pia_uplift/DATASET-rhoR-seedsS[-quick]-HASH``):
``uplift.json`` (everything: ``rule``, ``per_architecture.ARCH.{lambda_search, chosen_lambda, interior,
tuning_effort, per_seed, across_seeds, verdict, reason, ablation, reference_schedule}``, ``options``,
``options_hash``), ``per_seed.csv`` (architecture x seed: both models' test NDCG@100, the paired gains, best
epochs), ``paired.csv`` (the paired differences per user group and metric, both schedules), ``lambda_search.csv``,
``ablation.csv``, ``reference_schedule.csv`` and the figure ``uplift`` (PNG and PDF).

Cost on ML-1M (measured on this 2-core machine under a load average of about 4, niced: 4,834 training users x
3,497 items; about 4.7 s per Multi-VAE epoch with or without PIA, validation included, 28-43 s per RecVAE epoch,
0.2-0.5 s per test evaluation). With the defaults each architecture trains 16 models: at the tuning seed the
baseline and the 6 PIA models of the grid (7), a clean-input model per seed (3), baseline and PIA at seeds 1 and 2
(4), and baseline and PIA with the published schedule (2). Multi-VAE: 16 x 200 epochs x 4.7 s, about 4.2 hours;
RecVAE: 16 x 50 epochs x about 35 s, about 7.8 hours; so about 12 hours for both under that load (a quiet machine
is about 3 times faster: one 200-epoch Multi-VAE took 306 s in docs/walkthrough.md). Models already in the cache
(those of ``pia_geometry`` and ``reproduce`` at the same seed, rho and lambda_A) are loaded, not trained again.
``--quick`` (16 tiny models on the synthetic data, torch on one thread): about 90 s on the same busy machine.

``--seed``, which every job has, is refused here: the training seeds are ``--seeds``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from analyses.common import (
    JobError,
    add_job_arguments,
    check_float,
    check_int,
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
    GEOMETRY,
    REFERENCE,
    Schedule,
    add_model_arguments,
    load_model_split,
    model_config,
    validate_model_options,
)
from analyses.results import METRICS, MODEL_SPECS, PUBLISHED_ABLATION, PUBLISHED_SOURCE, across_seeds, paired_table
from analyses.trained import TrainedModel, config_key, get_trained, run_record, train_all
from figures.style import savefig
from figures.uplift import UpliftArm, uplift_figure
from models.cli import end_process
from models.evaluation import Evaluation, evaluate, paired_difference
from models.lazy import lazy_import
from models.trainer import TrainConfig

pd = lazy_import("pandas")
torch = lazy_import("torch")

JOB = "pia_uplift"
ARCHITECTURES = ("multvae", "recvae")
DEFAULTS: dict = {"lambdas": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "seeds": [0, 1, 2], "extend_grid": 3}
QUICK: dict = {"lambdas": [0.1, 1.0, 10.0], "seeds": [0, 1], "extend_grid": 0}
LEVEL = 0.95
"""Confidence level of the across-seed interval the rule reads."""
CAP_FRACTION = 0.8
"""A run is capped when the epochs it ran before its best one are at least this fraction of all it ran."""
NEGLIGIBLE_GAIN = 0.002
"""The smallest PIA gain of test NDCG@100 the paper publishes (RecVAE on Netflix, 0.394 -> 0.396)."""
DECISION_METRIC = "ndcg@100"
EDGE_REASON = "lambda at the edge of the grid; widen --lambdas or raise --extend-grid"
RULE = (
    f"Per architecture, on the across-seed {LEVEL:.0%} interval of the mean of the per-seed paired gains "
    "(PIA - no PIA, test NDCG@100, one mean over test users per seed; the spread between seeds plus the test "
    "users' sampling error that every seed shares, Satterthwaite's degrees of freedom, never narrower than the "
    "Student-t interval across seeds): "
    "'supported' if the interval lies above 0 (even when it also lies below the next threshold: the reason says so); "
    f"'not supported' if it lies below +{NEGLIGIBLE_GAIN:g} (PIA lowers the metric, or its gain is below the smallest "
    "the paper publishes); 'inconclusive' otherwise. Always 'inconclusive' when fewer than 2 seeds were run (no "
    f"training noise measured), when the chosen lambda_A is the smallest or largest of the grid ({EDGE_REASON}), "
    f"or when a compared model ran >= {CAP_FRACTION:g} x its epochs before its best epoch (capped: still "
    "improving, which can fake a gain). No seed's per-user interval decides alone."
)
"""The decision rule in words (recorded in the JSON); :func:`uplift_verdict` is its code."""
ROLES = {"baseline": "masking, no PIA", "pia": "masking + PIA", "clean": "clean input (rho = 1), no PIA"}
ABLATION = {"clean": "clean input", "baseline": "masking", "pia": "masking + PIA"}  # PUBLISHED_ABLATION's names


# ------------------------------------------------------------------------------------------------ the rule


def is_capped(record: Mapping[str, object], fraction: float = CAP_FRACTION) -> bool:
    """True when the epochs a run ran before its best one (``best_epoch - 1``, epochs numbered from 1) are at least
    ``fraction`` of its epochs run (``run_record``)."""
    return int(record["best_epoch"]) - 1 >= fraction * int(record["epochs_done"])


def choose_lambda(curve: Mapping[float, float]) -> tuple[float, bool]:
    """The lambda_A of the highest validation value (ties: the smaller lambda_A) and whether it is interior.

    Interior means neither the smallest nor the largest value of the grid (a grid of one or two values has no
    interior).

    Raises
    ------
    ValueError
        An empty curve or a non-finite validation value.
    """
    if not curve:
        raise ValueError("choose_lambda needs at least one lambda_A")
    grid = sorted(curve)
    values = [float(curve[lam]) for lam in grid]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite validation value in the lambda_A search: {dict(zip(grid, values, strict=True))}")
    best = int(np.argmax(values))  # first maximum: the smaller lambda_A on a tie
    return grid[best], 0 < best < len(grid) - 1


def search_lambda(
    validation: Callable[[float], dict],
    grid: Sequence[float],
    max_extend: int,
    add: Callable[[float], None],
) -> tuple[list[dict], float, bool, list[float]]:
    """lambda_A by validation over ``grid``, extended while the choice sits at an edge.

    ``validation(lam)`` returns a record with ``"lambda_a"`` and ``"val_ndcg@100"``. When the best value is the
    smallest or largest of the grid, the next value beyond that edge (:func:`extend_grid`) is announced with
    ``add(lam)`` (so its models can be configured), measured, and the choice made again, at most ``max_extend``
    times. Returns the curve sorted by lambda_A, the choice, whether it is interior and the values added.
    """
    curve = [validation(lam) for lam in grid]
    values = sorted(grid)
    chosen, interior = choose_lambda({c["lambda_a"]: c["val_ndcg@100"] for c in curve})
    added: list[float] = []
    while not interior and len(added) < max_extend:
        lam = extend_grid(values, chosen)
        if lam is None:
            break
        add(lam)
        curve.append(validation(lam))
        values, added = sorted([*values, lam]), [*added, lam]
        chosen, interior = choose_lambda({c["lambda_a"]: c["val_ndcg@100"] for c in curve})
    return sorted(curve, key=lambda c: c["lambda_a"]), chosen, interior, added


def uplift_verdict(
    gains: Sequence[float],
    *,
    interior: bool,
    capped: Sequence[str] = (),
    level: float = LEVEL,
    negligible: float = NEGLIGIBLE_GAIN,
    within_se: Sequence[float] | None = None,
) -> tuple[str, str]:
    """The verdict of :data:`RULE` on the per-seed gains of one architecture: ``(verdict, reason)``.

    Parameters
    ----------
    gains : sequence of float
        Per seed, the mean paired per-user difference PIA - no PIA of test NDCG@100.
    interior : bool
        Whether the chosen lambda_A is inside the grid (:func:`choose_lambda`).
    capped : sequence of str
        Names of the compared models whose best epoch is at the cap (:func:`is_capped`); empty: none.
    level : float
        Level of the across-seed interval.
    negligible : float
        An interval entirely below this gain is ``not supported``.
    within_se : sequence of float, optional
        Per seed, the standard error over test users of its gain: the sampling error the seeds share (the same
        test users), added to the interval (:func:`analyses.results.across_seeds`).

    Returns
    -------
    verdict : {"supported", "not supported", "inconclusive"}
    reason : str
        Why, with the interval; every gate that failed, joined by ``"; "``.
    """
    est = across_seeds(gains, level, within_se)
    gates = []
    if est["n"] < 2:
        gates.append(f"fewer than 2 seeds ({est['n']}): the variation between trainings is not measured")
    if not interior:
        gates.append(EDGE_REASON)
    if capped:
        gates.append(f"best epoch at the training cap for {', '.join(capped)}; train longer (--epochs)")
    if gates:
        return "inconclusive", "; ".join(gates)
    low, high = est["ci"]
    span = f"the {level:.0%} interval across {est['n']} seeds [{low:+.4f}, {high:+.4f}]"
    if low > 0:
        small = (
            f", though the gain is smaller than +{negligible:g}, the smallest the paper publishes"
            if high < negligible
            else ""
        )
        return "supported", f"{span} lies above 0{small}"
    if high < 0:
        return "not supported", f"{span} lies below 0: PIA lowers the metric"
    if high < negligible:
        return "not supported", f"{span} lies below +{negligible:g}, the smallest gain the paper publishes"
    return "inconclusive", f"{span} contains 0"


# -------------------------------------------------------------------------------------------------- the job


def _reference_seeds(values: Sequence[str] | None) -> list[int] | None:
    """``--reference-seeds``: integers >= 0, or the single word ``none`` (no reference models); None: default."""
    if values is None:
        return None
    words = [str(v).strip().lower() for v in values]
    if words == ["none"]:
        return []
    seeds = []
    for w in words:
        try:
            seeds.append(int(w))
        except ValueError:
            raise JobError(f"--reference-seeds must be integers >= 0 or the single word none, got {w!r}") from None
        check_int("--reference-seeds", seeds[-1], 0)
    return sorted(set(seeds))


def _arch_epochs(text: str) -> tuple[str, int]:
    arch, sep, value = str(text).partition("=")
    if not sep or arch not in ARCHITECTURES or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f"--epochs-for takes ARCH=N with ARCH one of {', '.join(ARCHITECTURES)} and N >= 1, got {text!r}"
        )
    return arch, int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser(
        JOB,
        "The PIA accuracy gain measured like for like: lambda_A chosen on validation NDCG@100, baseline and PIA "
        "trained with the same properly annealed KL weight at several seeds, paired test differences per seed and an "
        "interval across seeds (training noise and the test users' shared sampling error), decided by a fixed rule; "
        "the paper's ablation row and the published KL schedule beside it.",
        note="Each configuration trains one model once (cached and shared with pia_geometry and reproduce).",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=ARCHITECTURES,
        default=list(ARCHITECTURES),
        help="architectures (default: multvae recvae)",
    )
    parser.add_argument(
        "--lambdas",
        type=float,
        nargs="+",
        help="lambda_A grid searched on validation NDCG@100, > 0 (default 0.03 0.1 0.3 1 3 10; --quick 0.1 1 10)",
    )
    parser.add_argument(
        "--epochs-for",
        type=_arch_epochs,
        nargs="+",
        metavar="ARCH=N",
        help="training epochs of one architecture, e.g. recvae=100 (outer epochs for RecVAE), overriding --epochs "
        "for it: for an architecture whose best epochs reach the cap (default: --epochs, else the reference)",
    )
    parser.add_argument(
        "--extend-grid",
        type=int,
        help="when the chosen lambda_A is the smallest or largest of the grid, search up to this many more values "
        f"beyond it, one grid step each (default {DEFAULTS['extend_grid']}; --quick {QUICK['extend_grid']}; 0: never)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="training seeds of the main comparison, the first one tunes lambda_A (default 0 1 2; --quick 0 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that train the models side by side, a share of the cores each (analyses.trained.train_all): "
        "the lambda_A grid, baselines and clean models first, the chosen lambda_A's seeds next; the results do not "
        "depend on it (default 1: one after the other)",
    )
    parser.add_argument(
        "--reference-seeds",
        nargs="+",
        help="seeds of the comparison with the published KL schedule, or none (default: the first of --seeds)",
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-rhoR-seedsS[-quick]-HASH",
        seed="not used by this job, which trains every seed of --seeds: give --seeds instead",
        quick="tiny models, few epochs, synthetic data unless --dataset, lambda_A grid 0.1 1 10, seeds 0 1, torch "
        "on one thread: 1-2 minutes",
    )
    for action in parser._actions:  # the job's seeds are --seeds: a --seed given by habit is refused, not ignored
        if action.dest == "seed":
            action.default = None
            action.help = "not used by this job (it trains every seed of --seeds); give --seeds instead"
    add_model_arguments(parser, rho=DEFAULT_RHO)
    return parser


def _resolve(args: argparse.Namespace) -> dict:
    """The job's lists (defaults filled in, checked, sorted) before any work; JobError naming the flag."""
    if args.seed is not None:
        raise JobError(f"--seed: this job trains one model per seed of --seeds; give --seeds {args.seed} instead")
    base = QUICK if args.quick else DEFAULTS
    lambdas = list(args.lambdas) if args.lambdas is not None else list(base["lambdas"])
    seeds = list(args.seeds) if args.seeds is not None else list(base["seeds"])
    for lam in lambdas:
        check_float("--lambdas", lam, low=0, low_open=True, why=" (PIA weights; the baseline is trained anyway)")
    for s in seeds:
        check_int("--seeds", s, 0)
    if len(set(seeds)) != len(seeds):
        raise JobError(f"--seeds must be distinct, got {' '.join(map(str, seeds))}")
    reference = _reference_seeds(args.reference_seeds)
    extend = args.extend_grid if args.extend_grid is not None else base["extend_grid"]
    check_int("--extend-grid", extend, 0)
    check_int("--workers", args.workers, 1)
    return {
        "extend_grid": extend,
        "models": [m for m in ARCHITECTURES if m in args.models],
        "lambdas": sorted({float(v) for v in lambdas}),
        "seeds": seeds,
        "tuning_seed": seeds[0],
        "reference_seeds": [seeds[0]] if reference is None else reference,
    }


def _seed_args(args: argparse.Namespace, seed: int, arch: str) -> argparse.Namespace:
    """The job's options as one model job at ``seed`` sees them (``model_config`` seeds training with ``--seed``),
    with the epochs of ``--epochs-for`` for ``arch`` when given."""
    epochs = dict(args.epochs_for or ()).get(arch, args.epochs)
    return argparse.Namespace(**{**vars(args), "seed": int(seed), "epochs": epochs})


def lambda_configs(args: argparse.Namespace, sizes: Mapping[str, object], arch: str, lam: float) -> dict:
    """The PIA configurations of one lambda_A for one architecture: every seed of the main comparison (geometry
    schedule) and every reference seed (published schedule), keyed as in :func:`job_configs`."""
    configs: dict[tuple, TrainConfig] = {}
    for name, schedule, seeds in (
        ("geometry", GEOMETRY, sizes["seeds"]),
        ("reference", REFERENCE, sizes["reference_seeds"]),
    ):
        for seed in seeds:
            a = _seed_args(args, seed, arch)
            configs[(arch, name, "pia", seed, lam)] = model_config(
                a, model=arch, rho=args.rho, pia=lam, schedule=schedule
            )
    return configs


def job_configs(args: argparse.Namespace, sizes: Mapping[str, object]) -> dict[tuple, TrainConfig]:
    """Every configuration the job may train, keyed ``(arch, schedule, role, seed, lambda_A)``.

    ``schedule`` is ``"geometry"`` or ``"reference"``; ``role`` ``"baseline"``, ``"pia"`` or ``"clean"``; lambda_A is
    0 for the models without PIA. Built before any work, so an impossible configuration fails first (the values
    a grid extension adds, :func:`extend_grid`, are built when they are needed).
    """
    configs: dict[tuple, TrainConfig] = {}
    schedules: dict[str, Schedule] = {"geometry": GEOMETRY, "reference": REFERENCE}
    for arch in sizes["models"]:
        for seed in sorted({*sizes["seeds"], *sizes["reference_seeds"]}):
            a = _seed_args(args, seed, arch)
            for name, schedule in schedules.items():
                if name == "geometry" and seed not in sizes["seeds"]:
                    continue
                if name == "reference" and seed not in sizes["reference_seeds"]:
                    continue
                configs[(arch, name, "baseline", seed, 0.0)] = model_config(
                    a, model=arch, rho=args.rho, pia=0.0, schedule=schedule
                )
                if name == "geometry":
                    configs[(arch, name, "clean", seed, 0.0)] = model_config(
                        a, model=arch, rho=1.0, pia=0.0, schedule=schedule
                    )
        for lam in sizes["lambdas"]:
            configs.update(lambda_configs(args, sizes, arch, lam))
    return configs


def extend_grid(grid: Sequence[float], chosen: float) -> float | None:
    """The next lambda_A beyond the edge the choice sits on: the outermost value times (or divided by) the ratio
    of the two outermost values on that side; None when the choice is interior or the grid has one value."""
    g = sorted(grid)
    if len(g) < 2 or g[0] < chosen < g[-1]:
        return None
    if chosen == g[0]:
        return g[0] * g[0] / g[1]
    return g[-1] * g[-1] / g[-2]


def _record(trained: TrainedModel) -> dict:
    rec = run_record(trained)
    rec["capped"] = is_capped(rec)
    return rec


def _test(ev: Evaluation) -> dict:
    return {m: v for m, v in ev.summary().items()}


def _paired(pia: Evaluation, base: Evaluation) -> dict:
    return {m: paired_difference(pia, base, m) for m in METRICS}


class _Models:
    """Trains or loads each configuration once and evaluates each model on the test users at most once."""

    def __init__(self, configs: Mapping[tuple, TrainConfig], split, progress: bool, workers: int = 1) -> None:
        self.configs, self.split, self.progress, self.workers = configs, split, progress, workers
        self.trained: dict[str, TrainedModel] = {}  # by config_key: two keys of one configuration share a model
        self.evals: dict[str, Evaluation] = {}
        self.seconds = {"train_or_load": 0.0, "evaluation": 0.0}

    def get(self, key: tuple) -> TrainedModel:
        ident = config_key(self.configs[key])
        if ident not in self.trained:
            t = time.perf_counter()
            arch, schedule, role, seed, lam = key
            if self.progress:
                what = f"{MODEL_SPECS[arch].label}, {ROLES[role]}" + (f", lambda_A {lam:g}" if role == "pia" else "")
                print(f"{JOB}: {what}, seed {seed}, {schedule} schedule", file=sys.stderr)
            self.trained[ident] = get_trained(self.configs[key], split=self.split, progress=self.progress)
            self.seconds["train_or_load"] += time.perf_counter() - t
        return self.trained[ident]

    def prefetch(self, keys: Sequence[tuple]) -> None:
        """With several workers, train the models of ``keys`` missing from the run cache side by side now
        (:func:`analyses.trained.train_all`); with one, nothing: :meth:`get` trains each when it is needed."""
        if self.workers > 1:
            t = time.perf_counter()
            train_all([self.configs[k] for k in keys], workers=self.workers, split=self.split, progress=self.progress)
            self.seconds["train_or_load"] += time.perf_counter() - t

    def evaluation(self, key: tuple) -> Evaluation:
        ident = config_key(self.configs[key])
        if ident not in self.evals:
            model = self.get(key).model
            t = time.perf_counter()
            self.evals[ident] = evaluate(model.score, self.split.test)
            self.seconds["evaluation"] += time.perf_counter() - t
        return self.evals[ident]


def _arm(models: _Models, key: tuple) -> dict:
    return {"test": _test(models.evaluation(key)), "run": _record(models.get(key))}


def analyse_architecture(
    models: _Models,
    arch: str,
    sizes: Mapping,
    dataset: str,
    add_lambda: Callable[[str, float], None],
) -> tuple[dict, dict]:
    """Everything of one architecture: lambda search, per-seed comparison, verdict, ablation, reference schedule.

    Returns the JSON part and the rows of the job's tables (``{table: [rows]}``).
    """
    tuning, lambdas, seeds = sizes["tuning_seed"], sizes["lambdas"], sizes["seeds"]
    label = MODEL_SPECS[arch].label
    rows: dict[str, list] = {"per_seed": [], "paired": [], "lambda_search": [], "ablation": [], "reference": []}

    # every model that does not depend on the choice of lambda_A, side by side when there are several workers
    models.prefetch(
        [k for k in models.configs if k[0] == arch and (k[2] != "pia" or (k[1], k[3]) == ("geometry", tuning))]
    )

    # lambda_A on validation at the tuning seed
    base_rec = _record(models.get((arch, "geometry", "baseline", tuning, 0.0)))

    def validation(lam: float) -> dict:
        rec = _record(models.get((arch, "geometry", "pia", tuning, lam)))
        return {"lambda_a": lam, "val_ndcg@100": rec["val_ndcg@100"], **_brief(rec)}

    curve, chosen, interior, added = search_lambda(
        validation, lambdas, sizes["extend_grid"], lambda lam: add_lambda(arch, lam)
    )
    lambdas = [c["lambda_a"] for c in curve]
    search = {
        "seed": tuning,
        "metric": "val_ndcg@100 (best epoch)",
        "grid": lambdas,
        "extended_with": added,
        "curve": curve,
        "baseline_val_ndcg@100": base_rec["val_ndcg@100"],
        "chosen_lambda": chosen,
        "interior": interior,
        # a capped grid model was still improving: its validation value is a lower bound, so a slowly converging
        # lambda_A (PIA with a large weight) can lose the search only for lack of epochs
        "capped": [c["lambda_a"] for c in curve if c["capped"]],
    }
    baseline_row = {"architecture": arch, "arm": "baseline", "lambda_a": 0.0, "chosen": False}
    rows["lambda_search"].append({**baseline_row, "val_ndcg@100": base_rec["val_ndcg@100"], **_brief(base_rec)})
    for c in curve:
        rows["lambda_search"].append({"architecture": arch, "arm": "pia", "chosen": c["lambda_a"] == chosen, **c})

    # the chosen lambda_A at every other seed and under the published schedule
    models.prefetch([k for k in models.configs if k[0] == arch and k[2] == "pia" and k[4] == chosen])

    # the main comparison, seed by seed
    per_seed, capped = [], []
    for seed in seeds:
        kb, kp = (arch, "geometry", "baseline", seed, 0.0), (arch, "geometry", "pia", seed, chosen)
        base, pia = _arm(models, kb), _arm(models, kp)
        paired = _paired(models.evaluation(kp), models.evaluation(kb))
        groups = paired_table(models.evaluation(kp), models.evaluation(kb), "PIA - no PIA")
        per_seed.append(
            {
                "seed": seed,
                "tuning_seed": seed == tuning,
                "lambda_a": chosen,
                "baseline": base,
                "pia": pia,
                "paired": paired,
                "paired_groups": groups.to_dict(orient="records"),
            }
        )
        capped += [f"{role} seed {seed}" for role, arm in (("baseline", base), ("PIA", pia)) if arm["run"]["capped"]]
        rows["per_seed"].append(_seed_row(arch, seed, seed == tuning, chosen, base, pia, paired))
        rows["paired"] += [
            {"architecture": arch, "schedule": "geometry", "seed": seed, **r} for r in groups.to_dict("records")
        ]
    across = {
        m: across_seeds([p["paired"][m]["mean"] for p in per_seed], LEVEL, [p["paired"][m]["se"] for p in per_seed])
        for m in METRICS
    }
    others = [p["paired"][DECISION_METRIC] for p in per_seed if not p["tuning_seed"]]
    verdict, reason = uplift_verdict(
        [p["paired"][DECISION_METRIC]["mean"] for p in per_seed],
        interior=interior,
        capped=capped,
        within_se=[p["paired"][DECISION_METRIC]["se"] for p in per_seed],
    )

    # the ablation row: clean input / masking / masking + PIA
    ablation_seeds = []
    for seed in seeds:
        entry = {"seed": seed}
        for role in ABLATION:
            key = (arch, "geometry", role, seed, chosen if role == "pia" else 0.0)
            t = _test(models.evaluation(key))[DECISION_METRIC]
            rec = _record(models.get(key))
            entry[ABLATION[role]] = {**t, **_brief(rec)}
            head = {"architecture": arch, "condition": ABLATION[role], "scope": "seed", "seed": seed}
            cells = {"ndcg@100": t["mean"], "se": t["se"], "n": t["n"], "ci_low": np.nan, "ci_high": np.nan}
            rows["ablation"].append({**head, **cells, **_brief(rec)})
        ablation_seeds.append(entry)
    published = PUBLISHED_ABLATION.get(dataset) if arch == "multvae" else None
    ablation_across = {}
    for cond in ABLATION.values():
        est = across_seeds([e[cond]["mean"] for e in ablation_seeds], LEVEL, [e[cond]["se"] for e in ablation_seeds])
        ablation_across[cond] = est
        ci = est["ci"] or [np.nan, np.nan]
        head = {"architecture": arch, "condition": cond, "scope": "across seeds", "seed": np.nan}
        se = np.nan if est["se"] is None else est["se"]
        cells = {"ndcg@100": est["mean"], "se": se, "n": est["n"], "ci_low": ci[0], "ci_high": ci[1]}
        rows["ablation"].append({**head, **cells})
    for r in rows["ablation"]:
        r["published"] = np.nan if published is None else published.get(r["condition"], np.nan)
    ablation = {
        "conditions": list(ABLATION.values()),
        "metric": "test ndcg@100",
        "lambda_a": chosen,
        "per_seed": ablation_seeds,
        "across_seeds": ablation_across,
        "published": published,
        "published_dataset": "ml-20m" if arch == "multvae" else None,
        "comparable": published is not None,
    }

    # the published step schedule, beside (never in) the verdict
    reference_rows = []
    for seed in sizes["reference_seeds"]:
        kb, kp = (arch, "reference", "baseline", seed, 0.0), (arch, "reference", "pia", seed, chosen)
        base, pia = _arm(models, kb), _arm(models, kp)
        paired = _paired(models.evaluation(kp), models.evaluation(kb))
        groups = paired_table(models.evaluation(kp), models.evaluation(kb), "PIA - no PIA")
        same = (
            models.configs[kb] == models.configs[(arch, "geometry", "baseline", seed, 0.0)] if seed in seeds else None
        )
        reference_rows.append(
            {
                "seed": seed,
                "lambda_a": chosen,
                "baseline": base,
                "pia": pia,
                "paired": paired,
                "paired_groups": groups.to_dict(orient="records"),
                "final_beta": {"baseline": base["run"]["final_beta"], "pia": pia["run"]["final_beta"]},
                "same_models_as_main": same,
            }
        )
        row = _seed_row(arch, seed, seed == tuning, chosen, base, pia, paired)
        row.update({"baseline_final_beta": base["run"]["final_beta"], "pia_final_beta": pia["run"]["final_beta"]})
        rows["reference"].append(row)
        rows["paired"] += [
            {"architecture": arch, "schedule": "reference", "seed": seed, **r} for r in groups.to_dict("records")
        ]
    reference = {
        "label": "published step schedule: beta = min(cap, updates / 200,000) (the models of analyses.reproduce)",
        "in_verdict": False,
        "seeds": sizes["reference_seeds"],
        "per_seed": reference_rows,
    }

    part = {
        "label": label,
        "lambda_search": search,
        "chosen_lambda": chosen,
        "interior": interior,
        "tuning_effort": {
            "baseline": {"configurations": 1, "searched": f"nothing: rho = {sizes['rho']:g} fixed, no PIA"},
            "pia": {
                "configurations": len(lambdas),
                "searched": f"lambda_A in {lambdas} on validation NDCG@100 at seed {tuning}",
            },
        },
        "per_seed": per_seed,
        "across_seeds": across,
        "across_seeds_without_tuning_seed": (
            across_seeds([o["mean"] for o in others], LEVEL, [o["se"] for o in others]) if others else None
        ),
        "capped_models": capped,
        "verdict": verdict,
        "reason": reason,
        "ablation": ablation,
        "reference_schedule": reference,
    }
    return part, rows


def _brief(rec: Mapping) -> dict:
    return {k: rec[k] for k in ("best_epoch", "epochs_done", "capped", "final_beta")} | {"run": rec["run"]}


def _seed_row(arch: str, seed: int, tuning: bool, lam: float, base: dict, pia: dict, paired: dict) -> dict:
    row: dict = {"architecture": arch, "seed": seed, "tuning_seed": tuning, "lambda_a": lam}
    for name, arm in (("baseline", base), ("pia", pia)):
        row[f"{name}_ndcg@100"] = arm["test"]["ndcg@100"]["mean"]
        row[f"{name}_ndcg@100_se"] = arm["test"]["ndcg@100"]["se"]
    row["n_users"] = paired[DECISION_METRIC]["n"]
    for m in (DECISION_METRIC, *(m for m in METRICS if m != DECISION_METRIC)):
        row[f"gain_{m}"], row[f"gain_{m}_se"] = paired[m]["mean"], paired[m]["se"]
    for name, arm in (("baseline", base), ("pia", pia)):
        for k in ("best_epoch", "epochs_done", "capped"):
            row[f"{name}_{k}"] = arm["run"][k]
    return row


def _g(value: float) -> str:
    return f"{value:g}"


def _pm(summary: Mapping, signed: bool = False) -> str:
    """``mean ± se`` of a ``{"mean", "se", "n"}`` summary."""
    return f"{summary['mean']:{'+' if signed else ''}.4f} ± {summary['se']:.4f}"


def _ci_text(est: Mapping) -> str:
    if est["ci"] is None:
        return f"{est['mean']:+.4f} (one seed: no interval)"
    low, high = est["ci"]
    return f"{est['mean']:+.4f}, {est['level']:.0%} interval [{low:+.4f}, {high:+.4f}] over {est['n']} seeds"


def _print_architecture(part: Mapping, dataset: str) -> None:
    s = part["lambda_search"]
    label = part["label"]
    print(f"\n== {label} ==")
    curve = "  ".join(
        f"{c['lambda_a']:g}{'*' if c['lambda_a'] == s['chosen_lambda'] else ''}: {c['val_ndcg@100']:.4f}"
        for c in s["curve"]
    )
    print(f"lambda_A on validation NDCG@100 (seed {s['seed']}; no PIA {s['baseline_val_ndcg@100']:.4f}): {curve}")
    where = "interior" if part["interior"] else "AT THE EDGE of the grid"
    print(f"chosen lambda_A = {part['chosen_lambda']:g} ({where}); tuning effort: baseline 1, PIA {len(s['grid'])}")
    if s["capped"]:
        print(
            f"note: the lambda_A {' '.join(f'{lam:g}' for lam in s['capped'])} models peak at the training cap "
            "(still improving): their validation values are lower bounds; train longer to rule out a later winner"
        )
    table = pd.DataFrame(
        [
            {
                "seed": p["seed"],
                "no PIA": _pm(p["baseline"]["test"]["ndcg@100"]),
                "PIA": _pm(p["pia"]["test"]["ndcg@100"]),
                "gain": _pm(p["paired"]["ndcg@100"], signed=True),
                "best epochs": f"{p['baseline']['run']['best_epoch']}/{p['baseline']['run']['epochs_done']}, "
                f"{p['pia']['run']['best_epoch']}/{p['pia']['run']['epochs_done']}",
            }
            for p in part["per_seed"]
        ]
    )
    print("test NDCG@100 (mean ± se over test users; gain = paired PIA - no PIA)")
    print(format_table(table, {"seed": "d", **dict.fromkeys(list(table.columns)[1:], "s")}))
    print(f"across seeds: {_ci_text(part['across_seeds']['ndcg@100'])}")
    others = part["across_seeds_without_tuning_seed"]
    if others is not None:
        print(f"  without the tuning seed (its PIA model won the search): {_ci_text(others)}")
    print(f"verdict: {part['verdict']} ({part['reason']})")
    ab = part["ablation"]
    cells = []
    for cond in ab["conditions"]:
        est = ab["across_seeds"][cond]
        se = f" ± {est['se']:.2g}" if est["se"] is not None else ""
        pub = f" (paper {ab['published_dataset']}: {ab['published'][cond]:.3f})" if ab["published"] else ""
        cells.append(f"{cond} {est['mean']:.4f}{se}{pub}")
    print("ablation, test NDCG@100 across seeds: " + " / ".join(cells))
    if part["ablation"]["published_dataset"] and not part["ablation"]["comparable"]:
        row = " / ".join(f"{k} {v:.3f}" for k, v in PUBLISHED_ABLATION["ml-20m"].items())
        print(f"  published ablation (Multi-VAE, ml-20m; not like for like on {dataset}): {row}")
    for r in part["reference_schedule"]["per_seed"]:
        same = " (same models as above: the schedules coincide)" if r["same_models_as_main"] else ""
        print(
            f"published step schedule, seed {r['seed']}: no PIA {r['baseline']['test']['ndcg@100']['mean']:.4f}, "
            f"PIA {r['pia']['test']['ndcg@100']['mean']:.4f}, gain {r['paired']['ndcg@100']['mean']:+.4f} ± "
            f"{r['paired']['ndcg@100']['se']:.4f}; final beta {r['final_beta']['baseline']:.3g} / "
            f"{r['final_beta']['pia']:.3g}{same}"
        )


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError.

    With ``--quick`` torch runs on one thread for the job and is put back afterwards: the tiny models gain nothing
    from a thread pool, which on two busy cores made the quick run 4 times slower (340 s against 87 s).
    """
    if not args.quick:
        return _run(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> Path:
    start = time.perf_counter()
    dataset = validate_model_options(args)
    sizes = _resolve(args)
    sizes["rho"] = float(args.rho)
    progress = not args.no_progress
    configs = job_configs(args, sizes)
    tag = f"rho{args.rho:g}-seeds{'-'.join(map(str, sizes['seeds']))}"
    resolved = {k: sizes[k] for k in ("models", "lambdas", "seeds", "reference_seeds", "extend_grid")}
    options = result_options(args, ignore=("seed",), dataset=dataset, **resolved)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)

    split = load_model_split(args)
    timing = {"load": time.perf_counter() - start}
    models = _Models(configs, split, progress, args.workers)
    per_architecture, tables = {}, {k: [] for k in ("per_seed", "paired", "lambda_search", "ablation", "reference")}
    for arch in sizes["models"]:
        part, rows = analyse_architecture(
            models, arch, sizes, dataset, lambda a, lam: models.configs.update(lambda_configs(args, sizes, a, lam))
        )
        per_architecture[arch] = part
        for k, v in rows.items():
            tables[k] += v
    timing.update(models.seconds)

    t = time.perf_counter()
    arms = []
    for part in per_architecture.values():
        s, est = part["lambda_search"], part["across_seeds"][DECISION_METRIC]
        arms.append(
            UpliftArm(
                label=part["label"],
                lambdas=[c["lambda_a"] for c in s["curve"]],
                val_ndcg=[c["val_ndcg@100"] for c in s["curve"]],
                baseline_val_ndcg=s["baseline_val_ndcg@100"],
                chosen=part["chosen_lambda"],
                seeds=[p["seed"] for p in part["per_seed"]],
                gains=[p["paired"][DECISION_METRIC]["mean"] for p in part["per_seed"]],
                gain_ses=[p["paired"][DECISION_METRIC]["se"] for p in part["per_seed"]],
                mean=est["mean"],
                ci=None if est["ci"] is None else tuple(est["ci"]),
                verdict=part["verdict"],
                capped=part["lambda_search"]["capped"],
            )
        )
    title = f"{dataset}: PIA gain at ρ = {args.rho:g}, β reaching its cap (geometry schedule)"
    figures = savefig(
        uplift_figure(arms, level=LEVEL, title=title + (" — quick mode" if args.quick else "")), out, "uplift"
    )
    timing["figures"] = time.perf_counter() - t

    files = [
        write_csv(out / "per_seed.csv", pd.DataFrame(tables["per_seed"])),
        write_csv(out / "paired.csv", pd.DataFrame(tables["paired"])),
        write_csv(out / "lambda_search.csv", pd.DataFrame(tables["lambda_search"])),
        write_csv(out / "ablation.csv", pd.DataFrame(tables["ablation"])),
        write_csv(out / "reference_schedule.csv", pd.DataFrame(tables["reference"])),
    ]
    timing["total"] = time.perf_counter() - start
    notes = []
    if args.quick:
        notes.append("quick mode: tiny models and few epochs; the numbers test the pipeline, they are not results")
    if dataset not in PUBLISHED_ABLATION:
        notes.append(f"the published ablation is ML-20M's (Multi-VAE): beside {dataset} it is not like for like")
    if any(r["same_models_as_main"] for p in per_architecture.values() for r in p["reference_schedule"]["per_seed"]):
        notes.append(
            "the published step schedule gives the main models here (--quick or --anneal-epochs fixes the schedule)"
        )
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {"dataset": dataset, **sizes, "schedule": f"geometry: {GEOMETRY.default}"},
        "dataset": {
            "name": dataset,
            "train_users": int(split.train.shape[0]),
            "items": split.n_items,
            "validation_users": split.validation.n_users,
            "test_users": split.test.n_users,
            "split_cache": split.report.get("cache"),
        },
        "rule": RULE,
        "rule_constants": {
            "level": LEVEL,
            "cap_fraction": CAP_FRACTION,
            "negligible_gain": NEGLIGIBLE_GAIN,
            "metric": f"test {DECISION_METRIC}",
        },
        "verdicts": {arch: part["verdict"] for arch, part in per_architecture.items()},
        "per_architecture": per_architecture,
        "published_ablation": {
            "source": PUBLISHED_SOURCE,
            "table": PUBLISHED_ABLATION,
            "model": "multvae",
            "comparable": dataset in PUBLISHED_ABLATION,
        },
        "notes": notes,
    }
    save_result(out, "uplift.json", result, [*files, *figures], timing)

    print(
        f"PIA uplift on {dataset} ({split.train.shape[0]:,} training users, {split.n_items:,} items, "
        f"{split.test.n_users:,} test users): rho = {args.rho:g}, lambda_A grid {' '.join(map(_g, sizes['lambdas']))}, "
        f"seeds {' '.join(map(str, sizes['seeds']))} (tuning seed {sizes['tuning_seed']})"
    )
    print(f"rule: {RULE}")
    for part in per_architecture.values():
        _print_architecture(part, dataset)
    print_done(out, result, timing, notes)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
