"""Evaluate a trained run on its test users: ``python -m models.evaluate runs/NAME``.

Prints Recall@20, Recall@50 and NDCG@100 with standard errors and the user-group table, and writes them to
``runs/NAME/test_metrics.json`` (top-level keys ``recall@20``, ``recall@50``, ``ndcg@100``, each with
``mean``, ``se``, ``n``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.evaluation import Evaluation, evaluate
from models.io import atomic_write_json, resolve_device
from models.trainer import load_run_split, load_trained


def evaluate_run(run: Path, *, split_name: str = "test", device: str = "auto", batch_size: int = 1000) -> Evaluation:
    """Test (or validation) metrics of the best epoch of a run folder."""
    model, config = load_trained(run, resolve_device(device))
    split = load_run_split(config)
    heldout = split.test if split_name == "test" else split.validation
    return evaluate(model.score, heldout, batch_size=batch_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder written by models.train")
    p.add_argument("--on", choices=["test", "validation"], default="test", help="held-out users to rank")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args(argv)
    try:
        ev = evaluate_run(args.run, split_name=args.on, device=args.device, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.run / f"{args.on}_metrics.json"
    atomic_write_json(out, ev.to_dict())
    print(f"{args.run} ({args.on} users)")
    print(ev.format_table())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
