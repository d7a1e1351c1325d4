"""Compare models on the same held-out users: ``python -m models.compare A B [C ...]``.

Each of ``A B ...`` is a run folder (its ``test_per_user.csv`` from ``python -m models.evaluate``; a run without
one is evaluated here first, in memory) or a per-user CSV (columns ``user`` and one per metric, e.g.
``recall@20``; ``group`` when present). The first is the baseline; every other one is compared with it user by
user: ``d_u = other_u - baseline_u``.

For each model and metric: the mean of ``d`` with its standard error and Student-t interval over users
(:func:`geometry.intervals.mean_t_interval`; users are the independent units), the paired t-test and the
Wilcoxon signed-rank test p-values (two-sided), each corrected by Holm's step-down method across all the
metrics and models compared (:func:`holm`), and the mean difference per user group. The users must be the same
in every input (the same split and held-out set); otherwise one error line says how they differ.

Outputs (folder ``--out``, default ``out/compare/LABELS``): ``compare.json`` (``baseline``, ``models``,
``metrics``, ``users``, ``rows``: one per model and metric with ``mean_baseline``, ``mean_model``, ``diff``,
``se``, ``ci``, ``t_p``, ``t_p_holm``, ``wilcoxon_p``, ``wilcoxon_p_holm``, ``n``, ``n_nonzero``, ``groups``),
``compare.md`` (the table, printed too).

A single seed's paired test measures the users' noise only, not the training's: to order two models, compare
several seeds of each (``analyses.pia_uplift`` does) or read the interval with that in mind.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geometry.intervals import mean_t_interval
from models.cli import OneLineParser, end_process, guarded
from models.evaluation import parse_metric
from models.io import FolderLock, atomic_write_bytes, atomic_write_json
from models.lazy import lazy_import

pd = lazy_import("pandas")
stats = lazy_import("scipy.stats")

LEVEL = 0.95
NOT_METRICS = ("user", "group", "n_interactions", "epoch")
"""Columns of a per-user file that are not metrics."""


@dataclass(frozen=True)
class PerUser:
    """Per-user values of one model: ``table`` has the columns ``user`` (str), ``group`` (str, ``""`` when
    unknown) and one float column per metric, one row per user."""

    label: str
    table: pd.DataFrame
    source: str

    @property
    def metrics(self) -> list[str]:
        return [c for c in self.table.columns if c not in NOT_METRICS]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence between the tests).

    With ``p_(1) <= ... <= p_(m)`` sorted, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, returned in
    the input order; rejecting where ``adj <= alpha`` keeps the probability of any false rejection at most
    alpha (Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6).

    Parameters
    ----------
    p_values : sequence of float in [0, 1], length m

    Returns
    -------
    numpy.ndarray, shape (m,)
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def paired_test(baseline: np.ndarray, other: np.ndarray, level: float = LEVEL) -> dict:
    """Paired comparison of two models' per-user values on the same users.

    ``d = other - baseline``; mean, standard error ``std(d, ddof=1) / sqrt(n)`` and the Student-t interval;
    the paired t-test p-value (two-sided, ``t = mean / se`` on ``n - 1`` degrees of freedom) and the Wilcoxon
    signed-rank p-value (two-sided; zero differences dropped, as Wilcoxon's original test does, so
    ``n_nonzero`` users take part; exact for small samples, normal approximation otherwise, as
    :func:`scipy.stats.wilcoxon` chooses). Differences that are all zero give p = 1 for both tests.

    Parameters
    ----------
    baseline, other : numpy.ndarray, shape (n,), n >= 2, aligned by user

    Returns
    -------
    dict with keys ``mean_baseline``, ``mean_model``, ``diff``, ``se``, ``ci``, ``t_p``, ``wilcoxon_p``, ``n``,
    ``n_nonzero``.
    """
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError(f"a paired test needs at least 2 users, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-user values contain NaN or infinity: re-evaluate the runs")
    d = b - a
    mean, se, ci = mean_t_interval(d, level)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        t_p = w_p = 1.0
    else:
        t_p = 0.0 if se == 0 else float(2 * stats.t.sf(abs(mean / se), d.size - 1))  # se 0: all d equal, not 0
        w_p = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    return {
        "mean_baseline": float(a.mean()),
        "mean_model": float(b.mean()),
        "diff": mean,
        "se": se,
        "ci": [float(ci[0]), float(ci[1])],
        "t_p": t_p,
        "wilcoxon_p": w_p,
        "n": int(d.size),
        "n_nonzero": nonzero,
    }


def _groups(d: np.ndarray, groups: np.ndarray, level: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for label in sorted({g for g in groups if g}, key=_group_order):
        values = d[groups == label]
        mean, se, ci = mean_t_interval(values, level)
        finite = not math.isnan(se)
        out[label] = {
            "diff": mean,
            "se": se if finite else None,
            "ci": list(ci) if finite else None,
            "n": int(values.size),
        }
    return out


def _group_order(label: str) -> tuple[float, str]:
    """``[5-10]`` before ``[11-50]``: by the first number in the label, then by the label."""
    found = re.search(r"\d+", label)
    return (float(found.group()) if found else math.inf, label)


def _align(results: Sequence[PerUser]) -> list[PerUser]:
    """Every input's rows in the baseline's user order; one error line when the user sets differ."""
    base = results[0]
    for r in results:
        dup = r.table["user"][r.table["user"].duplicated()]
        if len(dup):
            raise ValueError(
                f"{r.source}: user {dup.iloc[0]!r} appears {int((r.table['user'] == dup.iloc[0]).sum())} times"
            )
    order = base.table["user"].tolist()
    keys = set(order)
    aligned = [base]
    for r in results[1:]:
        theirs = set(r.table["user"])
        if theirs != keys:
            only_a, only_b = sorted(keys - theirs), sorted(theirs - keys)
            raise ValueError(
                f"{base.label} and {r.label} were evaluated on different users ({len(only_a)} only in {base.label}"
                f"{', e.g. ' + ', '.join(only_a[:3]) if only_a else ''}; {len(only_b)} only in {r.label}"
                f"{', e.g. ' + ', '.join(only_b[:3]) if only_b else ''}): compare models evaluated on the same "
                "split and held-out set (--on)"
            )
        aligned.append(PerUser(r.label, r.table.set_index("user").loc[order].reset_index(), r.source))
    return aligned


def compare(results: Sequence[PerUser], metrics: Sequence[str] | None = None, level: float = LEVEL) -> dict:
    """Every model against the first on the same users: :func:`paired_test` per model and metric, Holm-corrected
    across all of them (per test), with per-group mean differences.

    Parameters
    ----------
    results : sequence of PerUser, length >= 2
        The baseline first; labels distinct.
    metrics : sequence of str, optional
        Metric columns to compare (default: those every input has, in the baseline's order).

    Returns
    -------
    dict, the content of ``compare.json`` (see the module docstring).
    """
    if len(results) < 2:
        raise ValueError("compare needs a baseline and at least one model to compare with it")
    labels = [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}: name them with --labels")
    shared = [m for m in results[0].metrics if all(m in r.metrics for r in results[1:])]
    if metrics is None:
        metrics = shared
    for m in metrics:
        for r in results:
            if m not in r.metrics:
                raise ValueError(f"{r.source} has no column {m!r} (it has {', '.join(r.metrics) or 'no metric'})")
    if not metrics:
        raise ValueError("the inputs share no metric column (recall@K, ndcg@K): nothing to compare")
    aligned = _align(results)
    base = aligned[0]
    groups = base.table["group"].to_numpy(dtype=object)
    rows = []
    for other in aligned[1:]:
        for m in metrics:
            a, b = base.table[m].to_numpy(), other.table[m].to_numpy()
            row = {"model": other.label, "metric": m, **paired_test(a, b, level)}
            row["groups"] = _groups(b - a, groups, level)
            rows.append(row)
    for test in ("t_p", "wilcoxon_p"):
        for row, adjusted in zip(rows, holm([r[test] for r in rows]), strict=True):
            row[f"{test}_holm"] = float(adjusted)
    return {
        "baseline": base.label,
        "models": labels[1:],
        "metrics": list(metrics),
        "users": len(base.table),
        "level": level,
        "sources": {r.label: r.source for r in results},
        "correction": f"Holm across {len(rows)} comparisons ({len(labels) - 1} models x {len(metrics)} metrics), "
        "separately for the t-test and the Wilcoxon test",
        "rows": rows,
    }


def read_per_user(path: Path, label: str | None = None, on: str = "test", device: str = "cpu") -> PerUser:
    """The per-user values of a run folder or a CSV file (see the module docstring)."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        csv = path / f"{on}_per_user.csv"
        if csv.is_file():
            table, source = _read_csv(csv), str(csv)
        else:
            from models.evaluate import evaluate_run

            print(f"{path}: no {csv.name}; evaluating its best epoch on the {on} users", file=sys.stderr)
            scored = evaluate_run(path, split_name=on, device=device)
            table = scored.evaluation.per_user_table(scored.users)
            table["user"] = table["user"].astype(str)
    elif path.is_file():
        table = _read_csv(path)
    else:
        raise ValueError(f"{path}: no such run folder or per-user CSV")
    if "group" not in table.columns:
        table["group"] = ""
    for m in [c for c in table.columns if c not in NOT_METRICS]:
        try:
            parse_metric(m)
        except ValueError:
            raise ValueError(f"{source}: column {m!r} is not a metric (recall@K, ndcg@K); drop it") from None
        table[m] = pd.to_numeric(table[m], errors="coerce")
        if table[m].isna().any():
            raise ValueError(
                f"{source}: column {m!r} has empty or non-numeric values (row {int(table[m].isna().idxmax()) + 2})"
            )
    return PerUser(label or (path.name if path.is_dir() else path.stem), table, source)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"user": str, "group": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    if "user" not in table.columns:
        raise ValueError(f"{path}: no 'user' column (columns: {', '.join(map(str, table.columns))})")
    if table.empty:
        raise ValueError(f"{path}: no rows")
    return table


def _p(x: float) -> str:
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def render_markdown(doc: dict) -> str:
    """The comparison as a Markdown table (one row per model and metric) and the per-group differences."""
    pct = f"{doc['level']:.0%}"
    lines = [
        f"Paired per-user differences against **{doc['baseline']}** on {doc['users']} users "
        f"(model - baseline; {doc['correction']}).",
        "",
        f"| model | metric | {doc['baseline']} | model | diff | SE | {pct} CI | t p (Holm) | Wilcoxon p (Holm) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['model']} | {r['metric']} | {r['mean_baseline']:.4f} | {r['mean_model']:.4f} | {r['diff']:+.4f} "
            f"| {r['se']:.4f} | [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {_p(r['t_p'])} ({_p(r['t_p_holm'])}) "
            f"| {_p(r['wilcoxon_p'])} ({_p(r['wilcoxon_p_holm'])}) |"
        )
    labels = sorted({g for r in doc["rows"] for g in r["groups"]}, key=_group_order)
    if labels:
        lines += ["", "Mean difference per user group (SE):", ""]
        lines.append("| model | metric | " + " | ".join(f"{g} (n)" for g in labels) + " |")
        lines.append("|---|---|" + "---:|" * len(labels))
        for r in doc["rows"]:
            cells = []
            for g in labels:
                s = r["groups"].get(g)
                cells.append("-" if s is None or s["se"] is None else f"{s['diff']:+.4f} ({s['se']:.4f}; {s['n']})")
            lines.append(f"| {r['model']} | {r['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m models.compare", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", type=Path, help="run folders or per-user CSV files; the first is the baseline")
    p.add_argument("--labels", nargs="+", help="names of the inputs in the tables (default: folder or file names)")
    p.add_argument("--metrics", nargs="+", help="metrics to compare (default: every one the inputs share)")
    p.add_argument("--on", choices=["test", "validation"], default="test", help="held-out users of run folders")
    p.add_argument("--level", type=float, default=LEVEL, help="confidence level of the intervals (0.95)")
    p.add_argument("--out", type=Path, help="output folder (default out/compare/LABELS)")
    p.add_argument("--device", default="cpu", help="where runs without per-user values are evaluated (cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: _run(args), what="the comparison")


def _run(args: argparse.Namespace) -> int:
    if len(args.inputs) < 2:
        raise ValueError("give a baseline and at least one model to compare with it (python -m models.compare A B)")
    if args.labels is not None and len(args.labels) != len(args.inputs):
        raise ValueError(f"--labels names {len(args.labels)} inputs, but {len(args.inputs)} were given")
    if not 0 < args.level < 1:
        raise ValueError(f"--level must lie in (0, 1), got {args.level}")
    if args.metrics:
        for m in args.metrics:
            parse_metric(m)
    labels = args.labels or [None] * len(args.inputs)
    results = [
        read_per_user(path, label, args.on, args.device) for path, label in zip(args.inputs, labels, strict=True)
    ]
    doc = compare(results, args.metrics, args.level)
    out = args.out or Path("out") / "compare" / re.sub(r"[^\w.-]+", "_", "-vs-".join([doc["baseline"], *doc["models"]]))
    with FolderLock(out / ".lock", f"output folder {out}"):
        atomic_write_json(out / "compare.json", doc)
        md = render_markdown(doc)
        atomic_write_bytes(out / "compare.md", md.encode())
    print(md, end="")
    print(f"wrote {out / 'compare.json'} and compare.md")
    return 0


if __name__ == "__main__":
    end_process(main())
