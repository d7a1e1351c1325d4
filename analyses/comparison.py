"""The ledger's accuracy comparison: every model measured on one dataset under one protocol, test NDCG@100 over
seeds, with the paired per-user difference from the model it is compared with.

Two sources feed it, both written by commands anyone can rerun:

* the JSON of ``python -m analyses.pia_uplift`` (the ledger runs it once per dataset): for each architecture its
  masked baseline and its PIA model at the lambda_A chosen on validation, per seed, and the paired difference
  PIA - baseline of each seed;
* optionally a baselines file, the ``results.json`` of ``python experiments/baselines_ml1m.py`` (committed as
  ``experiments/results_baselines_ml1m.json``): CDAE, WMF, BPR-MF, RaCT and EASE beside a Multi-VAE, each with
  its test NDCG@100 per seed and the paired per-user difference from that Multi-VAE of the same seed (its
  ``reference``).

Per model the row gives the mean over seeds of each seed's mean over the test users with its interval across
seeds (:func:`analyses.results.across_seeds`: training noise and the test users' sampling error, which every seed
shares), and the paired difference: its per-seed means (each with its standard error over users) and their mean
with the same kind of interval. A
deterministic model fitted once (EASE) has no spread across seeds: its row says so and carries the standard
error over users instead. When the baselines' reference is the uplift's Multi-VAE baseline (same test values
at every common seed, to 1e-9) the two are one row; otherwise both are shown and the row says which is which.
No row is ordered against another: the intervals say what the seeds allow.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from analyses.common import (
    JobArgumentParser,
    JobError,
    default_out_dir,
    read_json_doc,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_json,
)
from analyses.results import SHARED_ERROR_CI, across_seeds_of
from models.cli import end_process
from models.io import atomic_write_bytes

METRIC = "ndcg@100"
LEVEL = 0.95
SAME_MODEL_TOL = 1e-9
"""Two reference models are the same when their per-seed test means agree to this (a deterministic retraining of
one configuration reproduces them to rounding)."""


def read_baselines(path: Path, dataset: str) -> dict:
    """A baselines file (the ``results.json`` of ``experiments/baselines_ml1m.py``), checked.

    Raises
    ------
    JobError
        One line naming the file and what is wrong: unreadable, not JSON, no ``reference`` or ``models``, the
        reference not among the models, a model without test NDCG@100 per seed or without its paired values.
    """
    where = f"--baselines {dataset}={path}"
    doc = read_json_doc(Path(path), where, "the results.json of experiments/baselines_ml1m.py")
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict) or not doc["models"]:
        raise JobError(f"{where}: no 'models' table; give the results.json of experiments/baselines_ml1m.py")
    reference = doc.get("reference")
    if reference not in doc["models"]:
        raise JobError(
            f"{where}: its 'reference' ({reference!r}) is not one of its models; rerun experiments/baselines_ml1m.py "
            "(files before it named the reference have none)"
        )
    for name, block in doc["models"].items():
        try:
            metric = block["metrics"][METRIC]
            paired = block["paired"][METRIC]["per_seed"]
            values = [metric["mean"]] if metric.get("one_fit") else [v[0] for v in metric["per_seed"].values()]
            values += [v[0] for v in paired.values()]
        except (KeyError, TypeError, IndexError):
            raise JobError(
                f"{where}: model {name!r} lacks test {METRIC} per seed or its paired values; rerun the script"
            ) from None
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise JobError(f"{where}: model {name!r} has a non-finite {METRIC}; rerun the script")
    return doc


def _interval(per_seed: Sequence[tuple[float, float]]) -> tuple[float, list[float] | None, str | None]:
    """Mean over seeds of ``(mean, se over users)`` pairs and its interval: the spread between seeds plus the
    sampling error of the test users, which every seed shares (:func:`analyses.results.across_seeds`)."""
    spread = across_seeds_of(per_seed, LEVEL)
    return spread["mean"], spread["ci"], spread["reason"]


def _row(dataset: str, model: str, setting: str, per_seed: Mapping[int, tuple[float, float]], **extra) -> dict:
    """A row from the per-seed test means (mean, SE over users) of one model."""
    mean, ci, reason = _interval(list(per_seed.values()))
    return {
        "dataset": dataset,
        "model": model,
        "setting": setting,
        "seeds": list(per_seed),
        METRIC: mean,
        "ci": ci,
        "ci_kind": SHARED_ERROR_CI if ci is not None else reason,
        "per_seed": [{"seed": s, "mean": m, "se_over_users": se} for s, (m, se) in per_seed.items()],
        "compared_with": None,
        "delta": None,
        "delta_ci": None,
        "delta_per_seed": [],
        "note": None,
        **extra,
    }


def _with_delta(row: dict, versus: str, deltas: Mapping[int, tuple[float, float]]) -> dict:
    mean, ci, _ = _interval(list(deltas.values()))
    row.update(
        compared_with=versus,
        delta=mean,
        delta_ci=ci,
        delta_per_seed=[{"seed": s, "mean": m, "se_over_users": se} for s, (m, se) in deltas.items()],
    )
    return row


def uplift_comparison(dataset: str, doc: Mapping, source: str, command: str) -> list[dict]:
    """Two rows per architecture of a ``pia_uplift`` JSON: its masked baseline and its PIA model (paired
    difference PIA - baseline of the same seed)."""
    rows = []
    for arch, block in doc["per_architecture"].items():
        seeds = block["per_seed"]
        if not seeds:  # nothing was evaluated (the job stopped before its seeds): no row to show
            continue
        label, lam = block["label"], block["chosen_lambda"]
        base = {s["seed"]: (s["baseline"]["test"][METRIC]["mean"], s["baseline"]["test"][METRIC]["se"]) for s in seeds}
        pia = {s["seed"]: (s["pia"]["test"][METRIC]["mean"], s["pia"]["test"][METRIC]["se"]) for s in seeds}
        paired = {s["seed"]: (s["paired"][METRIC]["mean"], s["paired"][METRIC]["se"]) for s in seeds}
        where = f"{source}: per_architecture.{arch}.per_seed"
        rows.append(
            _row(
                dataset,
                label,
                "masked input, beta reaching its cap (pia_uplift baseline)",
                base,
                source=where,
                command=command,
                key=arch,
            )
        )
        pia_row = _row(
            dataset,
            f"{label} + PIA",
            f"lambda_A {lam:g} chosen on validation",
            pia,
            source=where,
            command=command,
            key=f"{arch}+pia",
        )
        rows.append(_with_delta(pia_row, label, paired))
    return rows


def _by_seed(table: Mapping) -> dict[int, tuple]:
    """A baselines file's ``{"seed": [mean, se]}`` as ``{seed: (mean, se)}``."""
    return {int(s): tuple(v) for s, v in table.items()}


def baselines_comparison(dataset: str, doc: Mapping, source: str, reference_rows: Sequence[dict] = ()) -> list[dict]:
    """One row per model of a baselines file; the paired difference of each from the file's reference.

    ``reference_rows`` are rows already in the table (:func:`uplift_comparison`): when one of them has the
    reference's name and the same per-seed test means (to :data:`SAME_MODEL_TOL`) the reference is that row (its
    ``note`` is set to say so, in place) and is not repeated; otherwise it gets its own row, named as the file's run.
    """
    reference = doc["reference"]
    ref_block = doc["models"][reference]
    ref_values = {int(s): v[0] for s, v in ref_block["metrics"][METRIC]["per_seed"].items()}
    twin = next(
        (
            r
            for r in reference_rows
            if r["model"] == reference
            and {p["seed"] for p in r["per_seed"]} & set(ref_values)
            and all(
                abs(p["mean"] - ref_values[p["seed"]]) <= SAME_MODEL_TOL
                for p in r["per_seed"]
                if p["seed"] in ref_values
            )
        ),
        None,
    )
    versus = reference if twin is not None else f"{reference} (baselines run)"
    command = doc.get("command")
    rows = []
    for name, block in doc["models"].items():
        metric = block["metrics"][METRIC]
        where = f"{source}: models.{name}"
        if name == reference:
            if twin is not None:
                twin["note"] = f"also the reference of the baselines below ({source}: the same test values)"
                continue
            per_seed = _by_seed(metric["per_seed"])
            row = _row(dataset, versus, block.get("setting", ""), per_seed, source=where, command=command, key=name)
            row["note"] = "not the pia_uplift baseline: the paired differences of the baselines are against this run"
            rows.append(row)
            continue
        deltas = _by_seed(block["paired"][METRIC]["per_seed"])
        if metric.get("one_fit"):  # deterministic (EASE): the one fit stands beside every seed's reference
            one = (metric["mean"], metric["se_over_users"])
            row = _row(
                dataset,
                name,
                block.get("setting", ""),
                dict.fromkeys(deltas, one),
                source=where,
                command=command,
                key=name,
            )
            row.update(ci=None, ci_kind="one deterministic fit: no spread across seeds", se_over_users=one[1])
        else:
            per_seed = _by_seed(metric["per_seed"])
            row = _row(dataset, name, block.get("setting", ""), per_seed, source=where, command=command, key=name)
        rows.append(_with_delta(row, versus, deltas))
    return rows


def comparison_rows(
    dataset: str,
    uplift: Mapping | None,
    uplift_source: str,
    uplift_command: str,
    baselines: Mapping | None = None,
    baselines_source: str = "",
) -> list[dict]:
    """The comparison rows of one dataset: the uplift's models, then the baselines file's."""
    rows = uplift_comparison(dataset, uplift, uplift_source, uplift_command) if uplift is not None else []
    if baselines is not None:
        rows += baselines_comparison(dataset, baselines, baselines_source, rows)
    return rows


def _num(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def _bracket(ci: Sequence[float] | None, signed: bool = False) -> str:
    return "" if ci is None else f" [{_num(ci[0], signed)}, {_num(ci[1], signed)}]"


def comparison_table(rows: Sequence[dict]) -> str:
    """The rows as one Markdown table (what ``claims.md`` shows)."""
    lines = [
        "| dataset | model | setting | seeds | test NDCG@100 [95% CI across seeds] | paired Δ vs | Δ [95% CI across "
        "seeds]; per seed ± SE over users |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        value = _num(r[METRIC]) + _bracket(r["ci"])
        if r["ci"] is None:
            se = r.get("se_over_users")
            value += ("" if se is None else f" ± {se:.4f} SE over users") + f" ({r['ci_kind']})"
        if r["delta"] is None:
            delta, versus = "(reference)" + ("" if r["note"] is None else f"; {r['note']}"), ""
        else:
            per_seed = ", ".join(f"{d['mean']:+.4f} ± {d['se_over_users']:.4f}" for d in r["delta_per_seed"])
            delta, versus = f"{_num(r['delta'], True)}{_bracket(r['delta_ci'], True)}; {per_seed}", r["compared_with"]
        setting = str(r["setting"]).replace("|", "/")
        seeds = " ".join(map(str, r["seeds"]))
        lines.append(f"| {r['dataset']} | {r['model']} | {setting} | {seeds} | {value} | {versus} | {delta} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- the job

JOB = "comparison"


def read_uplift(path: Path) -> dict:
    """A ``pia_uplift`` JSON (``uplift.json`` or the job's output folder), checked for the keys the table reads."""
    file = Path(path) / "uplift.json" if Path(path).is_dir() else Path(path)
    doc = read_json_doc(file, f"--uplift {path}", "the uplift.json of analyses.pia_uplift")
    if not isinstance(doc, dict) or doc.get("job") != "pia_uplift" or not isinstance(doc.get("per_architecture"), dict):
        raise JobError(f"--uplift {path}: not a pia_uplift result; give the uplift.json of analyses.pia_uplift")
    return doc


def build_parser() -> JobArgumentParser:
    parser = JobArgumentParser(
        prog=f"python -m analyses.{JOB}",
        description="The accuracy comparison of one dataset from finished results: the models of a pia_uplift run "
        "and of a baselines file, test NDCG@100 across seeds with intervals and paired per-user differences "
        "(the table the claims ledger shows, without rerunning the ledger).",
        epilog="e.g. python -m analyses.comparison --uplift docs/claims/runs/ml-1m/pia_uplift "
        "--baselines experiments/results_baselines_ml1m.json",
    )
    parser.add_argument("--uplift", type=Path, help="a pia_uplift output folder or its uplift.json")
    parser.add_argument("--baselines", type=Path, help="the results.json of experiments/baselines_ml1m.py")
    parser.add_argument(
        "--dataset", help="the dataset's name in the table (default: the one the uplift ran on; required without it)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default out/comparison/DATASET-HASH)")
    return parser


def run(args: argparse.Namespace) -> Path:
    from figures.comparison import comparison_figure  # matplotlib: only where the work starts
    from figures.style import savefig

    start = time.perf_counter()
    if args.uplift is None and args.baselines is None:
        raise JobError("give --uplift, --baselines or both: the comparison reads finished results")
    uplift = read_uplift(args.uplift) if args.uplift is not None else None
    dataset = args.dataset or (uplift or {}).get("dataset", {}).get("name")
    if not dataset:
        raise JobError("--dataset: name the dataset of the baselines file (no --uplift to take it from)")
    baselines = read_baselines(args.baselines, dataset) if args.baselines is not None else None
    if uplift is not None and uplift.get("dataset", {}).get("name") not in (None, dataset):
        raise JobError(f"--dataset {dataset}: the uplift ran on {uplift['dataset']['name']}; compare one dataset")
    options = result_options(args, dataset=dataset)
    out = stage_output(args.out or default_out_dir(JOB, dataset, "", options), JOB, options)
    rows = comparison_rows(
        dataset,
        uplift,
        str(args.uplift),
        "" if uplift is None else str(uplift.get("command") or "python -m analyses.pia_uplift"),
        baselines,
        str(args.baselines or ""),
    )
    if not rows:
        raise JobError(f"{args.uplift}: the uplift has no evaluated seed and no baselines file was given")
    table = comparison_table(rows)
    files = [write_json(out / "comparison.json", rows)]
    atomic_write_bytes(out / "comparison.md", f"# Accuracy comparison: {dataset}\n\n{table}".encode())
    files.append(out / "comparison.md")
    files += savefig(comparison_figure(rows, title=f"{dataset}: test NDCG@100 under one protocol"), out, "comparison")
    save_result(
        out,
        "result.json",
        {"job": JOB, "dataset": dataset, "rows": len(rows)},
        files,
        {"total": time.perf_counter() - start},
    )
    print(table)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
