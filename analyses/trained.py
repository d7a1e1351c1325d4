"""Trained models for the analyses, cached by configuration hash and reused across jobs.

``get_trained(config)`` returns the best-epoch model of the run whose resolved configuration hashes to the same
key, training it first (with a progress bar) when it is missing, resuming it when a previous attempt was
killed, or, with ``train_if_missing=False``, raising an error that prints the exact ``models.train`` command.
``run_record(trained)`` summarises the run for a job's JSON. The configurations the jobs ask for come from
:func:`analyses.model_options.model_config`.

Runs live under ``$VAECF_RUNS_DIR`` (default: ``runs/`` inside the cache root of :func:`models.data.cache_dir`),
one folder per configuration: ``<model>-<dataset>-<hash>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from models.data import cache_dir
from models.split import Split
from models.train import FLAG_FIELDS
from models.trainer import TrainConfig, load_trained, train
from models.vae import AutoencoderBase

RUNS_ENV = "VAECF_RUNS_DIR"


def runs_dir() -> Path:
    """Root of the cached runs: ``$VAECF_RUNS_DIR``, else ``<cache>/runs``."""
    return Path(os.environ[RUNS_ENV]).expanduser() if os.environ.get(RUNS_ENV) else cache_dir() / "runs"


def config_key(config: TrainConfig) -> str:
    """Hash of the resolved configuration; the device does not change the trained model's identity."""
    blob = replace(config.resolved(), device="auto").to_json()
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def run_folder(config: TrainConfig) -> Path:
    c = config.resolved()
    safe = c.dataset.replace(":", "_").replace("/", "_")[-40:]
    return runs_dir() / f"{c.model}-{safe}-{config_key(c)}"


def train_command(config: TrainConfig) -> str:
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
    parts.append(f"--out {run_folder(c)}")
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
        The split of ``config.dataset`` when already loaded (avoids reading it again).
    train_if_missing : bool
        If False, a missing model raises :class:`FileNotFoundError` naming the command that trains it.
    progress : bool
        Progress bar while training.
    """
    config.validate()
    c = config.resolved()
    run = run_folder(c)
    if not _finished(run, c):
        if not train_if_missing:
            raise FileNotFoundError(f"no trained model for this configuration; train it with: {train_command(c)}")
        resume = (run / "checkpoint.pt").is_file()
        if not resume and run.exists():
            shutil.rmtree(run)  # killed before its first checkpoint: nothing worth keeping
        train(c, run, resume=resume, split=split, progress=progress)
    model, _ = load_trained(run)
    return TrainedModel(model, c, run)


def run_record(trained: TrainedModel) -> dict:
    """Run folder, configuration and the best epoch of a cached run (from its ``metrics.jsonl``)."""
    history = [json.loads(line) for line in (trained.run / "metrics.jsonl").read_text().splitlines() if line]
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
