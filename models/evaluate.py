"""Evaluate a trained run on its test users: ``python -m models.evaluate runs/NAME``.

Prints Recall@20, Recall@50 and NDCG@100 with standard errors and the user-group table, and writes them to
``runs/NAME/test_metrics.json`` (top-level keys ``recall@20``, ``recall@50``, ``ndcg@100``, each with
``mean``, ``se``, ``n``; ``run`` says which epoch was evaluated and whether training had finished), and the
per-user values to ``runs/NAME/test_per_user.csv`` (columns ``user`` (raw id), ``n_interactions`` (fold-in +
targets), ``group`` (the paper's user group, empty outside every group), ``epoch`` (the one evaluated), then one
column per metric; one row per held-out user with targets, in held-out order), the input of
``python -m models.compare``. ``--on validation`` writes ``validation_*`` instead. A run that is still training or
was stopped early is evaluated at its best epoch so far, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from models.cli import OneLineParser, end_process, guarded
from models.evaluation import Evaluation, evaluate
from models.io import atomic_write_bytes, atomic_write_json, resolve_device
from models.trainer import load_run_split, load_trained, run_progress


def evaluate_run(
    run: Path, *, split_name: str = "test", device: str = "auto", batch_size: int = 1000
) -> tuple[Evaluation, np.ndarray]:
    """Test (or validation) metrics of the best epoch of a run folder, and the raw ids of the held-out rows
    (for :meth:`~models.evaluation.Evaluation.per_user_table`)."""
    model, config = load_trained(run, resolve_device(device))
    split = load_run_split(config)
    heldout = split.test if split_name == "test" else split.validation
    return evaluate(model.score, heldout, batch_size=batch_size), heldout.users


def per_user_path(run: Path, split_name: str = "test") -> Path:
    """Where ``models.evaluate`` writes a run's per-user values."""
    return run / f"{split_name}_per_user.csv"


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m models.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder written by models.train")
    p.add_argument("--on", choices=["test", "validation"], default="test", help="held-out users to rank")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--batch-size", type=int, default=1000, help="users ranked at once (1000)")
    args = p.parse_args(argv)
    return guarded(lambda: _run(args), what=f"evaluation of {args.run}")


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    resolve_device(args.device)
    progress = run_progress(args.run)
    ev, users = evaluate_run(args.run, split_name=args.on, device=args.device, batch_size=args.batch_size)
    if not progress["finished"]:
        print(
            f"warning: {args.run} has finished {progress['epochs_done']} of its {progress['epochs_planned']} epochs; "
            f"evaluating its best epoch so far ({progress['best_epoch']})",
            file=sys.stderr,
        )
    out = args.run / f"{args.on}_metrics.json"
    table = ev.per_user_table(users)
    table.insert(3, "epoch", progress["best_epoch"])
    per_user = per_user_path(args.run, args.on)
    atomic_write_bytes(per_user, table.to_csv(index=False).encode())
    atomic_write_json(out, {**ev.to_dict(), "run": {"evaluated_epoch": progress["best_epoch"], **progress}})
    print(f"{args.run} ({args.on} users, epoch {progress['best_epoch']})")
    print(ev.format_table())
    print(f"wrote {out} and {per_user.name}")
    return 0


if __name__ == "__main__":
    end_process(main())
