"""Hyperparameter search with Optuna: ``python -m models.tune --model multvae --dataset ml-1m --space FILE --trials N``.

The search space is a TOML or JSON file over any training option (a :class:`models.trainer.TrainConfig` field or
its ``models.train`` flag: ``pia``, ``beta_cap``, ``anneal_epochs``, ``rho``, ``lr``, ``mask_mode``,
``batch_size``, ...), or EASE's ``lambda`` with ``--model ease``::

    [params.pia]              # lambda_A, log-uniform
    low = 0.03
    high = 10.0
    log = true
    [params.rho]              # uniform on [low, high]
    low = 0.3
    high = 1.0
    [params.batch_size]       # integers when low and high are (step optional)
    low = 100
    high = 1000
    step = 100
    [params.mask_mode]        # categorical
    choices = ["dropout", "bernoulli"]
    [fixed]                   # settings every trial shares (flags such as --epochs override them)
    epochs = 50

Trials are sampled by TPE (``TPESampler``, seeded by ``--sampler-seed``) and pruned by the median rule on the
validation NDCG@100 of each epoch (``MedianPruner``: a trial stops when its best-so-far value at an epoch lies
below the median of earlier trials' values at that epoch, after ``--startup-trials`` finished trials and
``--warmup-epochs`` epochs). The objective is the best validation NDCG@100 of the run (the epoch ``best.pt``
keeps); test users are never looked at.

The study folder ``--out`` (default ``out/tune/MODEL-DATASET-KEY``, KEY a hash of the space and the fixed
settings) holds ``study.db`` (Optuna's SQLite storage), ``trials/`` (each trial an ordinary ``models.train`` run
folder named by its configuration, which ``models.evaluate`` reads; EASE trials a results JSON), ``trials.csv``
(one row per trial: state, value, parameters, best epoch, epochs run, run folder), ``best.json`` (the best
configuration, a file ``python -m models.train --config best.json`` accepts), ``study.json`` and
``tuning.png``/``.pdf`` (validation NDCG@100 against each parameter). ``--trials N`` is the study's total: run
again, it adds trials until N have finished. A killed study resumes where it stopped: its interrupted trial is
tried again with the same parameters, and as the run folder is the same, training continues from that run's last
checkpoint. One process per study folder (a lock names the holder).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.cli import OneLineParser, end_process, guarded
from models.data import add_dataset_arguments, known_dataset, unknown_dataset
from models.io import FolderLock, atomic_write_bytes, atomic_write_json
from models.train import FLAG_FIELDS, add_tensorboard_argument, add_training_arguments, given_values, read_config_file
from models.trainer import MODELS, ConfigError, TrainConfig, config_key, read_history

TUNE_MODELS = (*MODELS, "ease")
OBJECTIVE = "ndcg@100"
NOT_SEARCHED = ("model", "dataset", "dataset_path", "heldout", "data", "seed", "device", "eval_batch_size")
"""Fields a space may not search: they define the data, the identity of the runs, or nothing about the model."""
STUDY_NAME = "tune"


@dataclass(frozen=True)
class Param:
    """One searched parameter: a float or int range (``log`` for a log-uniform one, ``step`` for a grid) or
    a list of ``choices``."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` samples for this parameter (``trial.suggest_*``)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list:
        """The values at the edges of the range, or every choice: checked before any trial runs."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Space:
    """A search space: the parameters and the settings every trial shares (``[fixed]``)."""

    params: tuple[Param, ...]
    fixed: dict

    def to_json(self) -> dict:
        return {
            "params": {
                p.name: {k: v for k, v in vars(p).items() if k != "name" and v not in (None, (), False)}
                for p in self.params
            },
            "fixed": self.fixed,
        }


def field_name(key: str) -> str:
    """A training option as written in a space (``beta_cap``, ``beta-cap``, ``--beta-cap``, ``mask``) -> its
    :class:`TrainConfig` field (``beta_cap``, ``mask_mode``); unknown names are returned unchanged."""
    dest = key.removeprefix("--").replace("-", "_")
    return FLAG_FIELDS.get(dest, dest)


def _param(name: str, spec: object, where: str) -> Param:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a table such as {{low = 0.1, high = 1.0}} or {{choices = [...]}}")
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices", "type"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; use low, high, log, step, or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if {"low", "high", "log", "step"} & set(spec):
            raise ConfigError(f"{where}: give either choices or low/high, not both")
        return Param(name, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: needs low and high (or choices)")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    for key, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low {low} and high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-uniform range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0 and cannot go with log")
    kind = spec.get("type") or ("int" if all(isinstance(v, int) for v in (low, high, step or 1)) else "float")
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be int or float, got {kind!r}")
    return Param(name, kind, float(low), float(high), log, None if step is None else float(step))


def read_space(path: Path, model: str) -> Space:
    """Read and check a space file (TOML or JSON; see the module docstring) for ``model``.

    Raises
    ------
    ConfigError
        One line naming the file, the parameter and what to change.
    """
    data = read_config_file(path, known=("params", "fixed"), option="--space")
    params_table = data.get("params")
    if not isinstance(params_table, Mapping) or not params_table:
        raise ConfigError(f"{path}: no [params] table; declare at least one searched parameter")
    fixed_table = data.get("fixed") or {}
    if not isinstance(fixed_table, Mapping):
        raise ConfigError(f"{path}: [fixed] must be a table of training settings")
    known = {f.name for f in fields(TrainConfig)}
    params = []
    for key, spec in params_table.items():
        name = "lambda" if model == "ease" else field_name(key)
        where = f"{path}: params.{key}"
        if model == "ease" and key != "lambda":
            raise ConfigError(f"{where}: EASE has one hyperparameter, lambda; search params.lambda")
        if model != "ease" and name not in known:
            raise ConfigError(f"{where}: not a training option; valid: {sorted(known - set(NOT_SEARCHED))}")
        if name in NOT_SEARCHED:
            raise ConfigError(f"{where}: {name} is not searched (it defines the data or the run); set it with a flag")
        params.append(_param(name, spec, where))
    fixed = {field_name(k): v for k, v in fixed_table.items()}
    if model == "ease" and fixed:
        raise ConfigError(f"{path}: [fixed] has no meaning for EASE; drop it")
    bad = sorted(set(fixed) - known)
    if bad:
        raise ConfigError(f"{path}: [fixed] has unknown settings {bad}; valid: {sorted(known)}")
    clash = sorted(set(fixed) & {p.name for p in params})
    if clash:
        raise ConfigError(f"{path}: {clash} both searched and fixed; keep one")
    return Space(tuple(params), dict(fixed))


def check_space(space: Space, base: dict) -> None:
    """Every parameter's range edges (or choices) must make a valid configuration with the fixed settings: an
    impossible range is one line before any trial trains."""
    for p in space.params:
        for value in p.extremes():
            try:
                if p.name == "lambda":
                    if not value > 0:
                        raise ConfigError(f"EASE lambda must be > 0, got {value}")
                else:
                    TrainConfig.from_json({**base, p.name: int(value) if p.kind == "int" else value}).validate()
            except ConfigError as exc:
                raise ConfigError(f"params.{p.name} = {value!r}: {exc}") from None


def study_key(model: str, base: dict, space: Space) -> str:
    """Hash of what defines a study: the model, the shared settings and the space (12 hex digits)."""
    blob = {"model": model, "base": base, "space": space.to_json()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _retry_interrupted(study: Any) -> list[int]:
    """Fail every trial left running by a killed process and every failed trial not yet retried, and enqueue each
    once with its parameters; returns the numbers retried. Only the lock holder gets here, so a running trial in
    the storage is one whose process is gone."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            out.append(t.number)
    return out


def _objective(args: argparse.Namespace, base: dict, space: Space, out: Path):
    """The function Optuna maximises: one trial's best validation NDCG@100."""
    import optuna

    from models.tracking import EpochLog
    from models.trainer import load_run_split, train

    split_config = TrainConfig.from_json({**base, "model": "multvae" if args.model == "ease" else args.model})
    split = load_run_split(split_config, progress=not args.no_progress)
    eigen: list = []  # EASE: the Gram matrix's eigendecomposition, made once and shared by every lambda

    def ease_trial(trial: Any) -> float:
        import torch

        from models.baselines import EigenEASE, GramEigen, gram
        from models.evaluation import evaluate

        lam = space.params[0].suggest(trial)
        if not eigen:
            dtype = torch.float64 if args.dtype == "float64" else torch.float32
            eigen.append(GramEigen.of(gram(split.train, torch.device("cpu"), dtype)))
        ev = evaluate(EigenEASE(eigen[0], lam).score, split.validation)
        summary = ev.summary()
        name = f"ease-lambda-{lam:.6g}.json"
        atomic_write_json(out / "trials" / name, {"lambda": lam, "validation": summary, "dataset": args.dataset})
        trial.set_user_attr("run", f"trials/{name}")
        return summary[OBJECTIVE]["mean"]

    def vae_trial(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in space.params}
        config = TrainConfig.from_json({**base, **values})
        config.validate()
        run = out / "trials" / f"{config.model}-{config_key(config)}"
        trial.set_user_attr("run", f"trials/{run.name}")
        history = read_history(run) if (run / "checkpoint.pt").is_file() else []
        for record in history:  # a retried trial continues its run: the epochs trained before count as reported
            trial.report(record[f"val_{OBJECTIVE}"], step=record["epoch"])
        if history and len(history) < config.resolved().epochs and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {len(history)}")
        log = EpochLog(args.tensorboard / f"trial-{trial.number:04d}") if args.tensorboard is not None else None

        def on_epoch(record: dict) -> bool:
            if log is not None:
                log(record)
            trial.report(record[f"val_{OBJECTIVE}"], step=record["epoch"])
            return trial.should_prune()

        try:
            state = train(
                config, run, resume=bool(history), split=split, progress=not args.no_progress, on_epoch=on_epoch
            )
        finally:
            if log is not None:
                log.close()
        trial.set_user_attr("best_epoch", state.best_epoch)
        trial.set_user_attr("epochs_run", state.epoch)
        if state.epoch < config.resolved().epochs:
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch}")
        return state.best_value

    return ease_trial if args.model == "ease" else vae_trial


def trial_rows(study: Any, space: Space) -> list[dict]:
    """One row per trial: number, state, value (a pruned trial's last reported value), parameters, best epoch,
    epochs run, run folder, seconds."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": value,
                **{p.name: t.params.get(p.name) for p in space.params},
                "best_epoch": t.user_attrs.get("best_epoch"),
                "epochs_run": t.user_attrs.get("epochs_run", len(t.intermediate_values) or None),
                "retry_of": t.user_attrs.get("retry_of"),
                "run": t.user_attrs.get("run"),
                "seconds": None if seconds is None else round(seconds, 1),
            }
        )
    return rows


def write_results(study: Any, space: Space, base: dict, args: argparse.Namespace, out: Path) -> dict:
    """``trials.csv``, ``best.json``, ``study.json`` and the figure; returns the summary written to ``study.json``."""
    from figures.style import savefig
    from figures.tuning import tuning_figure

    rows = trial_rows(study, space)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["number"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "trials.csv", buffer.getvalue().encode())
    finished = [r for r in rows if r["state"] == "complete"]
    summary: dict = {
        "model": args.model,
        "dataset": args.dataset,
        "objective": f"validation {OBJECTIVE} (best epoch of each run)",
        "space": space.to_json(),
        "base": base,
        "sampler": {"name": "TPESampler", "seed": args.sampler_seed},
        "pruner": {
            "name": "MedianPruner" if args.pruner == "median" else "NopPruner",
            "startup_trials": args.startup_trials,
            "warmup_epochs": args.warmup_epochs,
        },
        "trials": {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail")},
        "best": None,
    }
    if finished:
        best = max(finished, key=lambda r: r["value"])
        params = {p.name: best[p.name] for p in space.params}
        summary["best"] = {"number": best["number"], "value": best["value"], "params": params, "run": best["run"]}
        if args.model != "ease":
            atomic_write_json(out / "best.json", TrainConfig.from_json({**base, **params}).to_json())
        else:
            atomic_write_json(out / "best.json", {"model": "ease", "lambda": params["lambda"], "dataset": args.dataset})
    plotted = [r for r in rows if r["state"] in ("complete", "pruned") and r["value"] is not None]
    if plotted:
        fig = tuning_figure(
            {p.name: [r[p.name] for r in plotted] for p in space.params},
            [r["value"] for r in plotted],
            [r["state"] for r in plotted],
            log_params=[p.name for p in space.params if p.log],
            title=f"{args.model} on {args.dataset}: validation NDCG@100 of {len(plotted)} trials",
        )
        savefig(fig, out, "tuning")
    atomic_write_json(out / "study.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m models.tune",
        description="Search training options (or EASE's lambda) with Optuna: TPE sampling, median pruning on "
        "validation NDCG@100 by epoch, a SQLite study that a killed run resumes.",
        epilog="Space file: [params.NAME] tables with low/high (log = true, step) or choices, and an optional "
        "[fixed] table; see the module docstring. Outputs in --out: trials.csv, best.json (for models.train "
        "--config), tuning.png, study.json, trials/ (one run folder per trial).",
    )
    p.add_argument("--space", type=Path, required=True, help="TOML/JSON file of the searched parameters")
    p.add_argument("--trials", type=int, default=20, help="trials the study should have finished (default 20)")
    p.add_argument("--out", type=Path, help="study folder (default out/tune/MODEL-DATASET-KEY)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    p.add_argument("--pruner", choices=("median", "none"), default="median", help="median pruning or none")
    p.add_argument("--startup-trials", type=int, default=5, help="finished trials before pruning starts (5)")
    p.add_argument("--warmup-epochs", type=int, default=5, help="epochs of a trial before it may be pruned (5)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="EASE precision (float32)")
    add_training_arguments(p, models=TUNE_MODELS)
    add_tensorboard_argument(p)
    p.add_argument("--no-progress", action="store_true")
    add_dataset_arguments(p, refresh=False)
    return p


def _base(args: argparse.Namespace, space: Space) -> dict:
    """The settings every trial shares: the space's [fixed], then ``--config``, then the flags."""
    values = {**space.fixed, **given_values(args)}
    values["model"] = args.model
    values.setdefault("dataset", "ml-1m")
    args.dataset = values["dataset"]
    if not isinstance(args.dataset, str) or not known_dataset(args.dataset):
        raise ConfigError(unknown_dataset(str(args.dataset)))
    if args.model == "ease":
        extra = sorted(set(values) - {"model", "dataset", "dataset_path", "heldout", "data"})
        if extra:
            raise ConfigError(f"--model ease takes only data options, not {', '.join(extra)}")
    return values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: _run(args), what="the tuning study; run the same command again to resume it")


def _run(args: argparse.Namespace) -> int:
    args.model = getattr(args, "model", "multvae")
    if args.model not in TUNE_MODELS:
        raise ConfigError(f"unknown model {args.model!r}; choose one of {', '.join(TUNE_MODELS)}")
    for flag, value, least in (
        ("--trials", args.trials, 1),
        ("--startup-trials", args.startup_trials, 0),
        ("--warmup-epochs", args.warmup_epochs, 0),
    ):
        if value < least:
            raise ConfigError(f"{flag} must be an integer >= {least}, got {value}")
    space = read_space(args.space, args.model)
    base = _base(args, space)
    check_space(space, base)
    safe = str(args.dataset).replace(":", "_").replace("/", "_")[-40:]
    out = args.out or Path("out") / "tune" / f"{args.model}-{safe}-{study_key(args.model, base, space)}"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    with FolderLock(out / ".lock", str(out)).acquire():
        return _study(args, space, base, out)


def _study(args: argparse.Namespace, space: Space, base: dict, out: Path) -> int:
    import optuna

    identity = {"model": args.model, "base": base, "space": space.to_json()}
    recorded = out / "definition.json"
    if recorded.is_file():
        if json.loads(recorded.read_text()) != json.loads(json.dumps(identity, default=str)):
            raise ConfigError(f"{out} holds a study of another space or settings; choose another --out")
    else:
        atomic_write_json(recorded, identity)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=args.warmup_epochs)
        if args.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=STUDY_NAME,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=pruner,
        load_if_exists=True,
    )
    retried = _retry_interrupted(study)
    if retried:
        print(f"resuming: trial(s) {', '.join(map(str, retried))} interrupted, tried again", file=sys.stderr)
    from optuna.trial import TrialState

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    todo = max(0, args.trials - done)
    print(f"study {out}: {done} trial(s) finished, {todo} to run", file=sys.stderr)
    start = time.perf_counter()
    if todo:
        study.optimize(_objective(args, base, space, out), n_trials=todo, catch=())
    summary = write_results(study, space, base, args, out)
    best = summary["best"]
    counts = summary["trials"]
    print(
        f"{counts['complete']} finished, {counts['pruned']} pruned, {counts['fail']} failed "
        f"({time.perf_counter() - start:.0f} s this call)"
    )
    if best is None:
        print("no trial finished yet; run the command again to continue")
        return 0
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in best["params"].items())
    print(f"best: trial {best['number']}, validation NDCG@100 {best['value']:.4f} ({shown})")
    if args.model == "ease":
        print(f"results in {out}; the best lambda is in {out / 'best.json'}")
    else:
        print(f"train it: python -m models.train --config {out / 'best.json'} --out runs/best")
    return 0


if __name__ == "__main__":
    end_process(main())
