"""Train a model: ``python -m models.train --model multvae --dataset ml-1m --rho 0.5 --out runs/NAME``.

Flags override values of ``--config FILE`` (JSON, or TOML on Python >= 3.11), which override the model's
reference defaults. Data-parallel training: ``torchrun --nproc_per_node N -m models.train ...`` (gloo on CPU,
NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path

from models.cli import OneLineParser, end_process, guarded
from models.data import add_dataset_arguments, data_options, dataset_names, known_dataset, unknown_dataset
from models.interchange import LIANG_PREFIX
from models.io import resolve_device
from models.lazy import lazy_import
from models.precision import PRECISIONS
from models.tracking import EpochLog
from models.trainer import (
    FIELD_FLAGS,
    MASK_MODES,
    MODELS,
    SAFE_ON_RESUME,
    ConfigError,
    TrainConfig,
    read_run_config,
    train,
)

dist = lazy_import("torch.distributed")

# CLI flag (argparse dest) -> TrainConfig field: the inverse of the trainer's table.
FLAG_FIELDS = {flag.removeprefix("--").replace("-", "_"): name for name, flag in FIELD_FLAGS.items()}


def read_config_file(path: Path, known: Collection[str] | None = None, option: str = "--config") -> dict:
    """A JSON or TOML file of :class:`TrainConfig` fields (or of the top-level keys ``known``), for ``option``."""
    takes = f"{option} takes a JSON or TOML file"
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; {takes}")
    if not path.exists():
        raise ConfigError(f"{path}: file not found ({option})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; {takes}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"{path}: TOML files need Python >= 3.11; use a JSON file") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys")
    known = {f.name for f in fields(TrainConfig)} if known is None else set(known)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
    return data


def _hidden_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integer widths like 600 or 64,32, got {text!r}"
        ) from None


def add_training_arguments(p: argparse.ArgumentParser, models: tuple[str, ...] = MODELS) -> None:
    """The options of a training configuration (``--config``, ``--model`` ... ``--device``; each
    :class:`TrainConfig` field), shared by ``models.train`` and ``models.tune``; a flag not given is absent from
    the namespace (``argparse.SUPPRESS``), so :func:`given_values` keeps only what was said."""
    p.add_argument("--config", type=Path, help="JSON/TOML file of settings (flags override it)")
    p.add_argument("--model", default=argparse.SUPPRESS, help=f"{', '.join(models)} (default multvae)")
    p.add_argument("--dataset", default=argparse.SUPPRESS, help=f"{', '.join(dataset_names())} (default ml-1m)")
    p.add_argument(
        "--rho", type=float, default=argparse.SUPPRESS, help="keep probability of the input mask (1 = clean)"
    )
    p.add_argument("--mask", choices=MASK_MODES, default=argparse.SUPPRESS, help="mask mode (default dropout)")
    p.add_argument("--beta-cap", type=float, default=argparse.SUPPRESS, help="KL weight cap (default 0.2)")
    p.add_argument("--anneal-steps", type=int, default=argparse.SUPPRESS, help="beta = min(cap, updates/N) (200000)")
    p.add_argument("--anneal-epochs", type=int, default=argparse.SUPPRESS, help="reach the cap after N epochs instead")
    p.add_argument("--pia", type=float, default=argparse.SUPPRESS, help="lambda_A of PIA (0 = off)")
    p.add_argument("--pia-warmup", type=int, default=argparse.SUPPRESS, help="linear lambda_A warm-up epochs")
    p.add_argument("--pia-anchors", choices=["separate", "tied"], default=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=argparse.SUPPRESS, help="default 500")
    p.add_argument("--lr", type=float, default=argparse.SUPPRESS)
    p.add_argument("--weight-decay", type=float, default=argparse.SUPPRESS, help="explicit L2 on weights")
    p.add_argument("--latent", type=int, default=argparse.SUPPRESS, help="latent dimension (200)")
    p.add_argument(
        "--hidden",
        type=_hidden_widths,
        default=argparse.SUPPRESS,
        help="hidden widths, comma-separated (multvae 600, multdae none: '', recvae 600)",
    )
    p.add_argument("--gamma", type=float, default=argparse.SUPPRESS, help="RecVAE KL weight per interaction")
    p.add_argument("--enc-epochs", type=int, default=argparse.SUPPRESS, help="RecVAE encoder passes per epoch")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    p.add_argument("--device", default=argparse.SUPPRESS, help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=argparse.SUPPRESS,
        help="fp32 (default, the published protocol), bf16 (autocast of the dense layers; float32 weights, "
        "likelihood, KL and PIA) or auto (bf16 only where native bf16 units make it faster; recorded in config.json)",
    )


def add_tensorboard_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="also write each epoch's losses, beta, lambda_A and validation metrics as TensorBoard events in DIR "
        "(view with: tensorboard --logdir DIR)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m models.train",
        description="Train Multi-VAE / Multi-DAE / RecVAE with masking rate rho and optional PIA.",
        epilog="Defaults follow the references (PROTOCOL.md): multvae lr 1e-3, 200 epochs; multdae weight decay "
        "0.01; recvae lr 5e-4, 50 outer epochs of 3 encoder + 1 decoder passes.",
    )
    add_training_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its own config.json; of the other flags only "
        + ", ".join("--" + f.replace("_", "-") for f in SAFE_ON_RESUME if f != "eval_batch_size")
        + " may change (e.g. more epochs)",
    )
    add_tensorboard_argument(p)
    p.add_argument("--no-progress", action="store_true")
    add_dataset_arguments(p, refresh=False)
    return p.parse_args(argv)


def given_values(args: argparse.Namespace) -> dict:
    """The settings given explicitly: the ``--config`` file, then the flags (which override it)."""
    values = read_config_file(args.config) if args.config else {}
    # data options given as flags override the file's, key by key; those not given keep the file's or the default
    if getattr(args, "path", None) is not None:
        values["dataset_path"] = str(args.path)
    if getattr(args, "heldout", None) is not None:
        values["heldout"] = args.heldout
    data = {**(values.get("data") or {}), **data_options(args)}
    if data:
        values["data"] = data
    for flag, name in FLAG_FIELDS.items():
        if flag in vars(args) and flag not in ("path", "heldout"):  # the data options are read above
            values[name] = getattr(args, flag)
    h = values.get("heldout")
    if isinstance(h, float) and math.isfinite(h) and h >= 1 and h.is_integer():
        values["heldout"] = int(h)  # a count of users (argparse reads every --heldout as a float)
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration of a new run: the model's reference defaults, the ``--config`` file, then the flags."""
    values = given_values(args)
    dataset = values.get("dataset", "ml-1m")
    if not isinstance(dataset, str) or not known_dataset(dataset):
        raise ConfigError(unknown_dataset(str(dataset)))
    if dataset.startswith(LIANG_PREFIX):  # the run reloads its split from anywhere: record the folder absolute
        values["dataset"] = LIANG_PREFIX + str(Path(dataset[len(LIANG_PREFIX) :]).expanduser().resolve())
    if values.get("model", "multvae") not in MODELS:
        raise ConfigError(f"unknown model {values['model']!r}; choose one of {', '.join(MODELS)}")
    config = TrainConfig.from_json(values)
    config.validate()
    return config


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration of a resumed run: the run's own ``config.json``, with the explicitly given settings that
    may change on resume (:data:`models.trainer.SAFE_ON_RESUME`) applied; any other given setting that differs
    from the run's is an error naming it."""
    if not (args.out / "config.json").is_file():
        raise ConfigError(f"{args.out}: no run to resume there; start it without --resume")
    saved, _ = read_run_config(args.out)
    values = given_values(args)
    base = saved.to_json()
    merged = {**base, **values}
    if "hidden" in values and values["hidden"] is not None:
        merged["hidden"] = list(values["hidden"])
    config = TrainConfig.from_json(merged)
    config.validate()
    r_saved, r_new = saved.resolved(), config.resolved()
    bad = [
        f"{FIELD_FLAGS.get(k, k)} {getattr(r_new, k)!r} (the run has {getattr(r_saved, k)!r})"
        for k in values
        if k not in SAFE_ON_RESUME and getattr(r_new, k) != getattr(r_saved, k)
    ]
    if bad:
        raise ConfigError(
            f"--resume continues {args.out} with its own settings, but {'; '.join(bad)} differ; drop them to "
            "resume, or choose another --out for a new run"
        )
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    resume = f"python -m models.train --out {args.out} --resume"
    return guarded(lambda: _run(args), what=f"training into {args.out}; continue it with: {resume}")


def _run(args: argparse.Namespace) -> int:
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    config = resume_config(args) if args.resume else config_from_args(args)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"{args.out} is a file, not a run folder; choose another --out")
    lead = not distributed or int(os.environ["RANK"]) == 0
    log = EpochLog(args.tensorboard) if args.tensorboard is not None and lead else None
    try:
        if distributed:
            backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        state = train(config, args.out, resume=args.resume, progress=not args.no_progress, on_epoch=log)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
        if log is not None:
            log.close()
    if lead:
        print(
            f"best validation NDCG@100 {state.best_value:.4f} at epoch {state.best_epoch} "
            f"({state.epoch} epochs done); run folder {args.out}"
        )
        print(f"evaluate on test users with: python -m models.evaluate {args.out}")
    return 0


if __name__ == "__main__":
    end_process(main())
