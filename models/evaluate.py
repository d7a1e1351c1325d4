"""Evaluate a trained run on its test users: ``python -m models.evaluate runs/NAME``.

Prints Recall@20, Recall@50 and NDCG@100 with standard errors and the user-group table, and writes them to
``runs/NAME/test_metrics.json`` (top-level keys ``recall@20``, ``recall@50``, ``ndcg@100``, each with
``mean``, ``se``, ``n``; ``run`` says which epoch was evaluated and whether training had finished), and the
per-user values to ``runs/NAME/test_per_user.csv`` (columns ``user`` (raw id), ``n_interactions`` (fold-in +
targets), ``group`` (the paper's user group, empty outside every group), ``epoch`` (the one evaluated), then one
column per metric; one row per held-out user with targets, in held-out order), the input of
``python -m models.compare``. ``--on validation`` writes ``validation_*`` instead. A run that is still training or
was stopped early is evaluated at its best epoch so far, with a warning.

``python -m models.evaluate --predictions FILE --dataset NAME`` scores another toolkit's top-K lists on the same
held-out users with the same metrics (:mod:`models.predictions`), writing the same two files to ``--out``
(default ``out/predictions/FILE-STEM``) and saying what in the file could not be used.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.cli import OneLineParser, end_process, guarded
from models.data import add_dataset_arguments, given_options, split_from_args
from models.evaluation import Evaluation, evaluate, evaluate_rows, parse_metric
from models.io import FolderLock, atomic_write_bytes, atomic_write_json, resolve_device
from models.predictions import read_prediction_table, read_predictions, report_lines
from models.split import Split
from models.trainer import load_run_split, load_trained, run_progress


@dataclass(frozen=True)
class Scored:
    """A run or prediction file evaluated: the metrics, the raw ids of the held-out rows (for
    :meth:`~models.evaluation.Evaluation.per_user_table`) and the training popularity of every item (for
    :meth:`~models.evaluation.Evaluation.beyond_accuracy`)."""

    evaluation: Evaluation
    users: np.ndarray
    popularity: np.ndarray
    n_train_users: int

    def beyond_accuracy(self) -> dict:
        return self.evaluation.beyond_accuracy(self.popularity, self.n_train_users)


def _popularity(split: Split) -> np.ndarray:
    return np.asarray(split.train.sum(axis=0), dtype=np.float64).ravel()


def evaluate_run(run: Path, *, split_name: str = "test", device: str = "auto", batch_size: int = 1000) -> Scored:
    """Test (or validation) metrics of the best epoch of a run folder."""
    model, config = load_trained(run, resolve_device(device))
    split = load_run_split(config)
    heldout = split.test if split_name == "test" else split.validation
    ev = evaluate(model.score, heldout, batch_size=batch_size)
    return Scored(ev, heldout.users, _popularity(split), int(split.train.shape[0]))


def per_user_path(run: Path, split_name: str = "test") -> Path:
    """Where ``models.evaluate`` writes a run's per-user values."""
    return run / f"{split_name}_per_user.csv"


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m models.evaluate",
        description=__doc__.splitlines()[0],
        epilog="Or score another toolkit's top-K lists: python -m models.evaluate --predictions FILE --dataset NAME "
        "(user,item,rank or user,item,score with the raw ids; see models.predictions).",
    )
    p.add_argument("run", type=Path, nargs="?", help="run folder written by models.train")
    p.add_argument("--on", choices=["test", "validation"], default="test", help="held-out users to rank")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--batch-size", type=int, default=1000, help="users ranked at once (1000)")
    g = p.add_argument_group("external predictions")
    g.add_argument("--predictions", type=Path, help="CSV of top-K lists to score instead of a run")
    g.add_argument("--predictions-sep", default=",", help="field separator of the predictions file (',')")
    g.add_argument("--dataset", help="dataset whose split the predictions are for (with --predictions)")
    g.add_argument("--out", type=Path, help="output folder of --predictions (default out/predictions/FILE-STEM)")
    data_options = add_dataset_arguments(p)
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    if (args.run is None) == (args.predictions is None):
        p.error("give a run folder or --predictions FILE --dataset NAME (one of the two)")
    if args.predictions is not None and not args.dataset:
        p.error("--predictions needs --dataset NAME: the split whose held-out users the lists are for")
    if args.run is not None and (args.dataset or args.out):
        p.error("--dataset and --out go with --predictions; a run folder knows its dataset and is its own output")
    if args.run is not None and (given := given_options(data_options, args)):
        p.error(f"{given[0]}: a run folder reloads the data options it was trained with; drop {' '.join(given)}")
    what = f"evaluation of {args.run or args.predictions}"
    return guarded(lambda: _run(args) if args.run is not None else _run_predictions(args), what=what)


def _write(folder: Path, on: str, scored: Scored, epoch: int | None, extra: dict) -> Path:
    """``{on}_metrics.json`` (with ``beyond_accuracy``) and ``{on}_per_user.csv`` in ``folder``; the JSON path."""
    ev = scored.evaluation
    table = ev.per_user_table(scored.users)
    if epoch is not None:
        table.insert(3, "epoch", epoch)
    atomic_write_bytes(per_user_path(folder, on), table.to_csv(index=False).encode())
    out = folder / f"{on}_metrics.json"
    atomic_write_json(out, {**ev.to_dict(), "beyond_accuracy": scored.beyond_accuracy(), **extra})
    return out


def format_beyond(doc: dict) -> str:
    """The beyond-accuracy table: one row for all users and one per group, a column per measure."""
    names = [k for k in doc["all"] if k != "users"]
    rows = [("all", doc["all"]), *doc["groups"].items()]
    width = max(5, *(len(label) for label, _ in rows))
    lines = [f"{'group':<{width}} {'n':>7}  " + "  ".join(f"{n:>12}" for n in names)]
    lines.append("-" * len(lines[0]))
    for label, r in rows:
        cells = "  ".join(f"{'-' if r[n] is None else f'{r[n]:.4g}':>12}" for n in names)
        lines.append(f"{label:<{width}} {r['users']:>7}  {cells}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    progress = run_progress(args.run)  # a folder that is no run is one line before torch loads
    resolve_device(args.device)
    scored = evaluate_run(args.run, split_name=args.on, device=args.device, batch_size=args.batch_size)
    if not progress["finished"]:
        print(
            f"warning: {args.run} has finished {progress['epochs_done']} of its {progress['epochs_planned']} epochs; "
            f"evaluating its best epoch so far ({progress['best_epoch']})",
            file=sys.stderr,
        )
    epoch = progress["best_epoch"]
    out = _write(args.run, args.on, scored, epoch, {"run": {"evaluated_epoch": epoch, **progress}})
    print(f"{args.run} ({args.on} users, epoch {epoch})")
    print(scored.evaluation.format_table())
    print(format_beyond(scored.beyond_accuracy()))
    print(f"wrote {out} and {per_user_path(args.run, args.on).name}")
    return 0


def _run_predictions(args: argparse.Namespace) -> int:
    table = read_prediction_table(args.predictions, sep=args.predictions_sep)  # the file's errors before the data's
    split = split_from_args(args.dataset, args)
    heldout = split.test if args.on == "test" else split.validation
    predictions = read_predictions(table, heldout, split.items)
    ev = evaluate_rows(predictions.score_rows(), heldout, batch_size=args.batch_size)
    scored = Scored(ev, heldout.users, _popularity(split), int(split.train.shape[0]))
    k_max = max(parse_metric(m)[1] for m in ev.metrics)
    notes = report_lines(predictions.report, k_max)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    out_dir = args.out or Path("out") / "predictions" / args.predictions.stem
    with FolderLock(out_dir / ".lock", f"output folder {out_dir}"):
        extra = {"predictions": {**predictions.report, "dataset": args.dataset, "on": args.on, "notes": notes}}
        out = _write(out_dir, args.on, scored, None, extra)
    print(f"{args.predictions} ({args.dataset}, {args.on} users, {predictions.kind} lists)")
    print(ev.format_table())
    print(format_beyond(scored.beyond_accuracy()))
    print(f"wrote {out} and {per_user_path(out_dir, args.on).name}")
    return 0


if __name__ == "__main__":
    end_process(main())
