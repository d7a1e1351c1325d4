"""Trained models for the analyses, cached by configuration hash and reused across jobs.

``get_trained(config)`` returns the best-epoch model of the run whose resolved configuration hashes to the same
key, training it first (with a progress bar) when it is missing, resuming it when a previous attempt was
killed, or, with ``train_if_missing=False``, raising an error that prints the exact ``models.train`` command.
``run_record(trained)`` summarises the run for a job's JSON. The configurations the jobs ask for come from
:func:`analyses.model_options.model_config`.

Runs live under ``$VAECF_RUNS_DIR`` (default: ``runs/`` inside the cache root of :func:`models.data.cache_dir`),
one folder per trained model: ``<model>-<dataset>-<hash>``, the hash of the resolved configuration (the device
left out), the content of the split it trains on (:func:`models.trainer.split_fingerprint`) and the training
code's version (:data:`models.trainer.MODEL_CODE_VERSION`). So a cached model is never served for another split
(a changed file, other preprocessing options) or by older model code; a cached run whose ``split.json`` records
another split, or whose files are damaged, is trained again (with a note).

A longer run continues a shorter one: when no run of ``config`` exists yet but a finished cached run of the same
configuration with fewer epochs does (:func:`shorter_run`), its files are copied into the new run folder and
training resumes from its last checkpoint. That is the run an uninterrupted training would give, because nothing
in training depends on the number of epochs planned except where the loop stops (the beta schedule counts
``anneal_epochs`` or ``anneal_steps``, PIA's warm-up ``pia_warmup``; ``epochs`` may change on resume,
:data:`models.trainer.SAFE_ON_RESUME`); the change is recorded in ``config.json`` (``derived.changes_on_resume``).

Concurrency: the run folder's lock (:func:`models.trainer.run_lock`) is held while a model is checked, trained
and loaded, so two jobs that need the same model at the same time train it once: the second waits (saying for
whom) and then loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from models.data import cache_dir
from models.io import DamagedFile
from models.split import Split
from models.train import FLAG_FIELDS
from models.trainer import (
    MODEL_CODE_VERSION,
    ConfigError,
    TrainConfig,
    clear_run,
    config_key,
    load_run_split,
    load_trained,
    read_history,
    run_lock,
    split_fingerprint,
    train,
)

if TYPE_CHECKING:  # nn.Module subclasses: torch loads where the work starts
    from models.vae import AutoencoderBase

RUNS_ENV = "VAECF_RUNS_DIR"


def runs_dir() -> Path:
    """Root of the cached runs: ``$VAECF_RUNS_DIR``, else ``<cache>/runs``."""
    return Path(os.environ[RUNS_ENV]).expanduser() if os.environ.get(RUNS_ENV) else cache_dir() / "runs"


def run_key(config: TrainConfig, split_id: str) -> str:
    """Hash of what a cached run is: :func:`config_key`, the split's fingerprint and the model-code version."""
    blob = {"config": config_key(config), "split": split_id, "model_code": MODEL_CODE_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def run_folder(config: TrainConfig, split_id: str) -> Path:
    """The cache folder of ``config`` trained on the split whose fingerprint is ``split_id``."""
    c = config.resolved()
    safe = c.dataset.replace(":", "_").replace("/", "_")[-40:]
    return runs_dir() / f"{c.model}-{safe}-{run_key(c, split_id)}"


def train_command(config: TrainConfig, split_id: str) -> str:
    """The ``models.train`` command line that trains ``config`` into its cache folder."""
    c = config.resolved()
    defaults = TrainConfig(model=c.model).resolved()
    # the CLI's own flag table, inverted: field -> --flag
    flags = {
        field: "--" + flag.replace("_", "-") for flag, field in FLAG_FIELDS.items() if field not in ("model", "device")
    }
    parts = ["python -m models.train", f"--model {c.model}"]
    for name, flag in flags.items():
        value = getattr(c, name)
        if value != getattr(defaults, name) or name == "dataset":
            text = ",".join(str(h) for h in value) if name == "hidden" else str(value)
            parts.append(f"{flag} '{text}'" if name == "hidden" else f"{flag} {text}")
    parts.append(f"--out {run_folder(c, split_id)}")
    return " ".join(parts)


@dataclass
class TrainedModel:
    model: AutoencoderBase
    config: TrainConfig
    run: Path


def _finished(run: Path, config: TrainConfig) -> bool:
    log = run / "metrics.jsonl"
    return (
        (run / "best.pt").is_file() and log.is_file() and len(log.read_text().splitlines()) >= config.resolved().epochs
    )


def stale_reason(run: Path, split_id: str) -> str | None:
    """Why a finished cached run must not be used (another split recorded, damaged files), or None."""
    try:
        recorded = json.loads((run / "split.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return "its split.json is missing or unreadable"
    if recorded != split_id:
        return f"it was trained on another split (fingerprint {recorded}, now {split_id})"
    return None


def _identity(saved: dict) -> dict:
    """A run's configuration as saved in ``config.json``, without what a continued run may change."""
    return {k: v for k, v in saved.items() if k not in ("derived", "epochs", "device")}


def shorter_run(config: TrainConfig, split_id: str) -> Path | None:
    """The finished cached run of ``config`` with the most epochs below ``config.epochs`` that a longer run can
    continue (same settings, split and model-code version, checkpoint present), or None."""
    c = config.resolved()
    want = _identity(json.loads(json.dumps(c.to_json())))  # tuples as lists, as read back from config.json
    found: tuple[int, Path] | None = None
    prefix = run_folder(c, split_id).name[: -len(run_key(c, split_id))]
    for run in sorted(runs_dir().glob(f"{prefix}*")):
        try:
            saved = json.loads((run / "config.json").read_text())
            epochs = int(saved["epochs"])
            version = saved["derived"]["model_code_version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run, or a damaged one: never continued
        if _identity(saved) != want or version != MODEL_CODE_VERSION or not 0 < epochs < c.epochs:
            continue
        if not (run / "checkpoint.pt").is_file() or not _finished(run, replace(c, epochs=epochs)):
            continue
        if stale_reason(run, split_id) is None and (found is None or epochs > found[0]):
            found = (epochs, run)
    return None if found is None else found[1]


def _continue_from(shorter: Path, run: Path) -> None:
    """Copy a shorter run's files into ``run`` (held by this process), each atomically."""
    run.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "split.json", "metrics.jsonl", "best.pt", "checkpoint.pt"):
        tmp = run / f".{name}.copy-{os.getpid()}"
        shutil.copyfile(shorter / name, tmp)
        os.replace(tmp, run / name)


def get_trained(
    config: TrainConfig,
    *,
    split: Split | None = None,
    train_if_missing: bool = True,
    progress: bool = True,
) -> TrainedModel:
    """The trained model of ``config`` from the run cache, training (or resuming) it when needed.

    Parameters
    ----------
    config : TrainConfig
    split : Split, optional
        The split of ``config.dataset`` when already loaded (avoids reading it again). It must be the split the
        configuration trains on (:func:`models.trainer.load_run_split`).
    train_if_missing : bool
        If False, a missing model raises :class:`FileNotFoundError` naming the command that trains it.
    progress : bool
        Progress bar while training.
    """
    config.validate()
    c = config.resolved()
    split = split if split is not None else load_run_split(c, progress=progress)
    split_id = split_fingerprint(split)
    run = run_folder(c, split_id)
    if not _finished(run, c) and not train_if_missing:
        raise FileNotFoundError(f"no trained model for this configuration; train it with: {train_command(c, split_id)}")

    def waiting(holder: str) -> None:
        print(f"note: waiting for {holder}, which is training the same model into {run}", file=sys.stderr)

    with run_lock(run).acquire(wait=True, on_wait=waiting) as lock:
        if _finished(run, c):
            reason = stale_reason(run, split_id)
            if reason is None:
                try:
                    model, _ = load_trained(run)
                    return TrainedModel(model, c, run)
                except (ConfigError, DamagedFile) as exc:
                    reason = str(exc)
            if not train_if_missing:
                raise FileNotFoundError(f"the cached model in {run} is unusable ({reason}); train it again")
            print(f"note: training the cached model again: {reason}", file=sys.stderr)
            clear_run(run)
        resume = (run / "checkpoint.pt").is_file()
        shorter = None if resume else shorter_run(c, split_id)
        if shorter is not None:
            print(f"note: continuing the cached run {shorter} to {c.epochs} epochs in {run}", file=sys.stderr)
            _continue_from(shorter, run)
            resume = True
        try:
            train(c, run, resume=resume, split=split, progress=progress, lock=lock)
        except DamagedFile as exc:  # a damaged checkpoint of derived data: start over rather than stop
            print(f"note: training the cached model from scratch: {exc}", file=sys.stderr)
            clear_run(run)
            train(c, run, split=split, progress=progress, lock=lock)
        model, _ = load_trained(run)
    return TrainedModel(model, c, run)


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_in_worker(config: TrainConfig) -> str:
    """Train (or find) one configuration in a worker process; its split comes from the split cache."""
    get_trained(config, progress=False)
    return config_key(config)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def train_all(
    configs: Sequence[TrainConfig], *, workers: int, split: Split | None = None, progress: bool = True
) -> list[TrainConfig]:
    """Train every configuration of ``configs`` missing from the run cache, ``workers`` at a time.

    A job that needs many independent models (``pia_uplift``'s lambda_A grid and seeds) can train them side by
    side, a share of the cores each, instead of one after the other with every core (the small matrix products of
    these models may leave cores idle: ``benchmarks/bench_workers.py`` measures both on the machine at hand; on 2
    cores it gains 5-15%, ``benchmarks/RESULTS_workers.md``). Each
    worker is a fresh process (``spawn``) with ``available_cores() // workers`` threads that calls
    :func:`get_trained` without a split (it reads the split cache, so every model trains on the split the parent
    would use); the run folder's lock keeps two processes from training one model. A failure in one worker stops
    the others (their runs resume next time) and is raised here.

    Parameters
    ----------
    configs : sequence of TrainConfig
        Duplicates (same :func:`models.trainer.config_key`) are trained once.
    workers : int >= 1
        Processes at a time; 1 trains in this process, one after the other.
    split : Split, optional
        The split of the configurations' dataset, when loaded: cached models are then skipped without starting a
        process for them.
    progress : bool
        A line per model trained (and progress bars with ``workers == 1``).

    Returns
    -------
    list of TrainConfig
        The configurations that were not finished in the cache when called (now trained).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    split_id = split_fingerprint(split) if split is not None else None
    todo: dict[str, TrainConfig] = {}
    for config in configs:
        config.validate()
        c = config.resolved()
        if config_key(c) in todo or (split_id is not None and _finished(run_folder(c, split_id), c)):
            continue
        todo[config_key(c)] = c
    pending = list(todo.values())
    if workers == 1 or len(pending) < 2:
        for c in pending:
            get_trained(c, split=split, progress=progress)
        return pending
    import multiprocessing

    n = min(workers, len(pending))
    pool = multiprocessing.get_context("spawn").Pool(n, _worker_init, (max(1, available_cores() // n),))
    try:
        for done, key in enumerate(pool.imap_unordered(_train_in_worker, pending), 1):
            if progress:
                print(f"note: {done} of {len(pending)} models trained ({n} processes; {key})", file=sys.stderr)
        pool.close()
    except BaseException:
        pool.terminate()  # Ctrl-C, SIGTERM or a failed model: the other workers stop, their runs resume later
        raise
    finally:
        pool.join()
    return pending


def run_record(trained: TrainedModel) -> dict:
    """Run folder, configuration and the best epoch of a cached run (from its ``metrics.jsonl``)."""
    history = read_history(trained.run)
    best = max(history, key=lambda h: h["val_ndcg@100"])
    return {
        "run": str(trained.run),
        "config": trained.config.to_json(),
        "epochs_done": len(history),
        "best_epoch": int(best["epoch"]),
        "beta_at_best": float(best["beta"]),
        "val_ndcg@100": float(best["val_ndcg@100"]),
        "val_recall@20": float(best.get("val_recall@20", float("nan"))),
        "final_beta": float(history[-1]["beta"]),
    }
