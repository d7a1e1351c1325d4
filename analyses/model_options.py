"""Model options of the analysis jobs: the command-line flags, their checks, the configuration they give, the split.

Every job that analyses trained models follows one convention, so that the same options give the same
:class:`models.trainer.TrainConfig` in every job and the run cache (:func:`analyses.trained.get_trained`, keyed
by that configuration) hands a model trained by one job to all the others:

* :func:`add_model_arguments` adds the flags (``--epochs``, ``--anneal-epochs``, ``--path``, ``--heldout``;
  ``--rho``, ``--beta-cap`` and ``--lambda-a`` where the job has them; the architecture flags of the one-Multi-VAE
  jobs);
* :func:`validate_model_options` checks them (one ``ValueError`` naming the flag) and returns the dataset;
* :func:`model_config` builds the configuration: the model's reference settings (PROTOCOL.md), or the tiny
  :data:`QUICK_MODELS` with ``--quick``, then every option given explicitly;
* :func:`load_model_split` loads the split that configuration trains on.

KL annealing (:class:`Schedule`): the geometry jobs (``local_vs_global``, ``kl_budget``, ``sharing_radius``,
``pia_geometry``, ``cohorts``) let beta reach its cap after :data:`GEOMETRY_ANNEAL_EPOCHS` epochs
(:data:`GEOMETRY`), because the reference schedule of 200,000 updates leaves beta below 0.01 on small data such as
ML-1M (PROTOCOL.md); ``reproduce`` keeps the published schedule (:data:`REFERENCE`). ``--quick`` means the same
tiny models in every job, so quick runs of different jobs reuse each other's models too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from analyses.common import JobError, check_float, check_int, check_seed, job_dataset, load_job_split
from analyses.trained import TrainedModel, get_trained, stale_reason
from models.data import DATA_DESTS, add_dataset_arguments, data_options
from models.split import Split
from models.trainer import (
    KL_FREE_MODELS,
    MODEL_DEFAULTS,
    TrainConfig,
    load_run_split,
    load_trained,
    read_run_config,
    run_progress,
    split_fingerprint,
)

GEOMETRY_ANNEAL_EPOCHS = 50
QUICK_MODELS: Mapping[str, Mapping[str, object]] = {
    "multvae": {"hidden": (64,), "latent_dim": 16, "epochs": 15, "lr": 3e-3, "anneal_epochs": 10},
    "recvae": {"hidden": (64,), "latent_dim": 16, "epochs": 6, "lr": 3e-3, "anneal_epochs": 4},
    # Multi-DAE [I-d-I]: its code is its only hidden layer, so "tiny" means a 64-wide code.
    "multdae": {"hidden": (), "latent_dim": 64, "epochs": 15, "lr": 3e-3},
    "cdae": {"hidden": (), "latent_dim": 64, "epochs": 15, "lr": 3e-3},
}
"""Tiny configurations of ``--quick`` in every job (seconds per model on the synthetic data; beta reaches its cap
before the last epoch)."""
DEFAULT_RHO = 0.5
DEFAULT_LAMBDA_A = 0.1


@dataclass(frozen=True)
class Schedule:
    """The KL annealing of a job's models when ``--anneal-epochs`` is not given (full mode).

    Attributes
    ----------
    anneal_epochs : int or None
        Epochs for beta to reach its cap; None keeps the reference ``beta = min(cap, updates / 200,000)``.
    default : str
        The default in words, for ``--help``.
    """

    anneal_epochs: int | None
    default: str


GEOMETRY = Schedule(
    GEOMETRY_ANNEAL_EPOCHS,
    f"{GEOMETRY_ANNEAL_EPOCHS}, shared by the geometry jobs so that beta reaches its cap on small data such as "
    "ML-1M, where the reference 200,000 updates leave it below 0.01",
)
REFERENCE = Schedule(
    None,
    "the reference beta = min(cap, updates / 200,000) as published, the protocol this job reproduces "
    "(beta stays below 0.01 on ML-1M)",
)


def _hidden_arg(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in str(text).replace(" ", "").split(",") if w)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden must be comma-separated widths like 600 or 64,32, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated positive widths, got {text!r}")
    return widths


def _quick(key: str, every_model: bool) -> str:
    """``--quick`` value of one configuration field, e.g. ``15, RecVAE 6`` (Multi-VAE first, then the others')."""
    values = {m: q[key] for m, q in QUICK_MODELS.items() if key in q and (every_model or m == "multvae")}
    first = values.pop("multvae")
    names = {"recvae": "RecVAE", "multdae": "Multi-DAE", "cdae": "CDAE"}
    return ", ".join([str(first), *(f"{names[m]} {v}" for m, v in values.items() if v != first)])


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    schedule: Schedule = GEOMETRY,
    rho: float | None = None,
    beta_cap: bool = False,
    pia: bool = False,
    architecture: bool = False,
) -> None:
    """The options of the job's trained models (the run-cache key) and of the data they train on.

    Every model job: ``--epochs``, ``--anneal-epochs`` (default from ``schedule``), ``--batch-size``, ``--path``
    and ``--heldout``. Where the job trains with one keep probability, ``--rho`` (default ``rho``); ``beta_cap=True``
    adds ``--beta-cap`` (0.2), ``pia=True`` ``--lambda-a`` (the jobs that compare masking and PIA).
    ``architecture=True`` (the jobs of one Multi-VAE) adds ``--hidden``, ``--latent``,
    ``--train-seed`` (those jobs seed their samples with ``--seed``) and ``--mask``.
    """
    reference = MODEL_DEFAULTS["multvae"]
    g = parser.add_argument_group("model (trained once per configuration and cached)")
    if rho is not None:
        g.add_argument(
            "--rho", type=float, default=rho, help=f"keep probability of the training mask, 1 = clean input ({rho:g})"
        )
    if beta_cap:
        cap = TrainConfig.beta_cap
        g.add_argument("--beta-cap", type=float, default=cap, help=f"KL weight cap of the model ({cap:g})")
    if pia:
        g.add_argument(
            "--lambda-a", type=float, default=DEFAULT_LAMBDA_A, help=f"PIA weight lambda_A ({DEFAULT_LAMBDA_A})"
        )
    g.add_argument(
        "--epochs",
        type=int,
        help=f"training epochs (default: the model's reference, {reference['epochs']} for Multi-VAE; "
        f"--quick {_quick('epochs', not architecture)})",
    )
    g.add_argument(
        "--anneal-epochs",
        type=int,
        help=f"epochs for the KL weight beta to reach its cap (default: {schedule.default}; "
        f"--quick {_quick('anneal_epochs', not architecture)})",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        help=f"training batch size of every model ({TrainConfig.batch_size}; on small data, where an epoch has "
        "fewer than 10 updates, training says which size gives 10)",
    )
    if architecture:
        tiny = QUICK_MODELS["multvae"]
        g.add_argument(
            "--hidden",
            type=_hidden_arg,
            help=f"encoder hidden widths, e.g. 600 or 64,32 (default {reference['hidden'][0]}; --quick "
            + ",".join(map(str, tiny["hidden"]))
            + ")",
        )
        g.add_argument(
            "--latent",
            type=int,
            help=f"latent dimension (default {TrainConfig.latent_dim}; --quick {tiny['latent_dim']})",
        )
        g.add_argument("--train-seed", type=int, default=0, help="seed of the model's training (0)")
        g.add_argument("--mask", choices=("dropout", "bernoulli"), default="dropout", help="mask mode when rho < 1")
    add_dataset_arguments(parser, refresh=False)


RUN_FIXED = ("epochs", "anneal_epochs", "hidden", "latent", "batch_size", "train_seed", "mask", "rho", "beta_cap",
             "lambda_a", *DATA_DESTS)  # fmt: skip
"""The model and data options a ``--run`` folder's own configuration sets (:func:`add_run_argument`)."""


def add_run_argument(parser: argparse.ArgumentParser, *, fixed: Sequence[str] = ()) -> None:
    """``--run DIR``: measure the Multi-VAE of a run folder trained with ``models.train`` (its best epoch, on its
    own split) instead of the job's cached model. Call after every other option is added: the model and data
    options (:data:`RUN_FIXED`) and the job's options ``fixed`` must then stay at their defaults, since the run's
    ``config.json`` sets them (:func:`validate_model_options` says which one was given)."""
    parser.add_argument(
        "--run",
        type=Path,
        metavar="DIR",
        help="a run folder of models.train (Multi-VAE): measure its model on its split instead of training one; "
        "its config.json then sets the model and data options",
    )
    parser.set_defaults(run_fixed={d: parser.get_default(d) for d in (*RUN_FIXED, *fixed)})


def _use_run(args: argparse.Namespace) -> None:
    """Check ``--run`` (a Multi-VAE run with an epoch done, no option it sets given); the job's ``--rho``,
    ``--beta-cap``, ``--lambda-a`` and ``--dataset`` become the run's."""
    # an option the job lacks is absent from args, and so is an absent --min-rating (its default is SUPPRESS)
    given = [d for d, default in args.run_fixed.items() if d in vars(args) and getattr(args, d) != default]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise JobError(f"{flag}: --run {args.run} uses its own configuration (config.json); drop {flag}")
    config, _ = read_run_config(args.run)
    if config.model != "multvae":
        raise JobError(f"--run {args.run}: this job measures a Multi-VAE, the run trained {config.model}")
    if args.dataset is not None and args.dataset != config.dataset:
        raise JobError(f"--dataset {args.dataset}: --run {args.run} was trained on {config.dataset}; drop --dataset")
    progress = run_progress(args.run)
    if progress["epochs_done"] == 0:
        raise JobError(f"--run {args.run}: no epoch finished yet; train it first (python -m models.train)")
    if not progress["finished"]:
        print(
            f"warning: {args.run} has finished {progress['epochs_done']} of its {progress['epochs_planned']} epochs; "
            f"measuring its best epoch so far ({progress['best_epoch']})",
            file=sys.stderr,
        )
    args.dataset = config.dataset
    for dest, value in (("rho", config.rho), ("beta_cap", config.beta_cap), ("lambda_a", config.pia)):
        if dest in vars(args):
            setattr(args, dest, value)


def run_config(args: argparse.Namespace) -> TrainConfig | None:
    """The resolved configuration of ``--run`` (its ``config.json``), None without ``--run``."""
    return None if vars(args).get("run") is None else read_run_config(args.run)[0].resolved()


def validate_model_options(args: argparse.Namespace) -> str:
    """Check the options of :func:`add_model_arguments` (and ``--seed``, ``--rho``, ``--beta-cap`` where the job
    has them) and return the dataset name.

    Every number is checked for range and finiteness here, before any data is loaded, so that the error names
    the flag (the training configuration's own check would name its field instead).

    Raises
    ------
    ValueError
        One message (:class:`analyses.common.JobError`) naming the flag and its valid range.
    """
    given = vars(args)
    check_seed(args)
    if "rho" in given:
        check_float("--rho", args.rho, low=0, high=1, low_open=True, why=" (keep probability; 1 = clean input)")
    if "lambda_a" in given:
        check_float("--lambda-a", args.lambda_a, low=0, low_open=True, why=" (the PIA weight)")
    if "beta_cap" in given:
        check_float("--beta-cap", args.beta_cap, low=0)
    for flag in ("epochs", "anneal_epochs", "latent", "batch_size"):
        check_int(f"--{flag.replace('_', '-')}", given.get(flag), 1)
    if given.get("run") is not None:
        _use_run(args)
    return job_dataset(args)


def model_config(
    args: argparse.Namespace,
    *,
    model: str = "multvae",
    rho: float,
    pia: float = 0.0,
    beta_cap: float = 0.2,
    schedule: Schedule = GEOMETRY,
) -> TrainConfig:
    """The training configuration of one of the job's models, resolved (every default filled in).

    Full mode: the reference settings of :class:`models.trainer.TrainConfig` (PROTOCOL.md) with beta annealed
    as ``schedule`` says; ``--quick``: :data:`QUICK_MODELS`. Then every option given on the command line:
    ``--epochs`` (outer epochs for RecVAE), ``--anneal-epochs`` (not used by Multi-DAE, which has no KL term),
    ``--hidden``, ``--latent``, ``--batch-size``, ``--mask``, ``--path`` and ``--heldout``. The training seed is
    ``--train-seed`` in the jobs that have it, else ``--seed``.

    Parameters
    ----------
    args : argparse.Namespace
        Options of :func:`add_model_arguments` (checked by :func:`validate_model_options`).
    model : {"multvae", "recvae", "multdae", "cdae"}
    rho : float
        Keep probability of the training mask (1 = clean input).
    pia : float
        PIA weight lambda_A (0 = no PIA).
    beta_cap : float
        Cap of the KL weight.
    schedule : Schedule
        :data:`GEOMETRY` or :data:`REFERENCE`.

    Raises
    ------
    ValueError
        For an impossible configuration (:class:`models.trainer.ConfigError`), naming the field.
    """
    given = vars(args)
    if (own := run_config(args)) is not None:
        return own
    fields: dict = dict(QUICK_MODELS[model]) if args.quick else {"anneal_epochs": schedule.anneal_epochs}
    explicit = {
        "epochs": args.epochs,
        "anneal_epochs": args.anneal_epochs,
        "hidden": given.get("hidden"),
        "latent_dim": given.get("latent"),
        "batch_size": given.get("batch_size"),
    }
    fields.update({k: v for k, v in explicit.items() if v is not None})
    if model in KL_FREE_MODELS:
        fields.pop("anneal_epochs", None)  # no KL term: an annealing option must not split the run cache
    config = TrainConfig(
        model=model,
        dataset=job_dataset(args),
        dataset_path=str(args.path) if args.path is not None else None,
        heldout=args.heldout,
        data=data_options(args) or None,
        rho=float(rho),
        mask_mode=given.get("mask", "dropout"),
        beta_cap=float(beta_cap),
        pia=float(pia),
        seed=int(given.get("train_seed", args.seed)),
        **fields,
    )
    config.validate()  # ConfigError (a ValueError) names the bad field
    return config.resolved()


def load_model_split(args: argparse.Namespace) -> Split:
    """The split the job's models train on: ``--dataset`` with the job's data options, the same ones
    :func:`model_config` records in the runs (:attr:`models.trainer.TrainConfig.data`), so that the cached runs
    always match it; with ``--run``, the run's split (:func:`models.trainer.load_run_split`). Unavailable data
    becomes a one-line :class:`analyses.common.JobError`."""
    if (own := run_config(args)) is not None:
        return load_run_split(own, progress=not args.no_progress)
    return load_job_split(job_dataset(args), args, progress=not args.no_progress)


def job_model(args: argparse.Namespace, config: TrainConfig, split: Split, progress: bool) -> TrainedModel:
    """The job's model of ``config``: with ``--run``, the run's (its split's fingerprint checked against the one
    it recorded), else the run cache's (:func:`analyses.trained.get_trained`, trained when missing)."""
    if vars(args).get("run") is None:
        return get_trained(config, split=split, progress=progress)
    reason = stale_reason(args.run, split_fingerprint(split))
    if reason is not None:
        raise JobError(f"--run {args.run}: {reason}; train the run again (python -m models.train)")
    model, _ = load_trained(args.run)
    return TrainedModel(model, config, Path(args.run))
