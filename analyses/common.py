"""Helpers shared by the analysis jobs: the command line, one-line errors, dataset loading, the output folder, files.

Every job (``python -m analyses.<name>``) follows the same contract: bad options and unavailable data give
**one** line on stderr and exit code 2; numbers go to JSON and CSV, figures to PNG and PDF, all written
atomically into one output folder whose path is printed at the end. A job supplies ``build_parser()`` (with
:func:`add_job_arguments`) and ``run(args) -> output folder`` (ending with :func:`save_result` and
:func:`print_done`); its ``main(argv)`` is :func:`run_main` of the two. The options of trained models live in
:mod:`analyses.model_options`, the encoders in :mod:`analyses.encoding`.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.data import DatasetUnavailable, dataset_names, split_from_args
from models.io import atomic_write_bytes, atomic_write_json
from models.split import Split

OUT_ROOT = Path("out")
EXIT_USAGE = 2
DATASET_EPILOG = "Default dataset ml-1m is fetched and cached on first use; offline, use --dataset synthetic."


class JobError(Exception):
    """A problem the user can fix (bad option, data not available); printed as one line, exit code 2."""


class JobArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one line (``error: ...``) and exit code 2, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def one_line(text: str, limit: int = 240) -> str:
    """Collapse whitespace (e.g. a pip error dump) into one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def load_job_split(name: str, args: argparse.Namespace, *, progress: bool = True) -> Split:
    """The split of ``name`` from the dataset options; unavailable data becomes a one-line :class:`JobError`.

    Downloads happen on first use (``models.data`` prints its progress to stderr) and the split is cached.
    """
    try:
        return split_from_args(name, args, progress=progress)
    except DatasetUnavailable as exc:
        reason = one_line(str(exc))
        # models.data words it "NAME is not available offline: WHY. It is HOW. `--dataset synthetic` ..."
        for prefix in (f"{name} is not available offline: ", f"{name} is not available offline"):
            reason = reason.removeprefix(prefix)
        reason = reason.split(" It is ")[0].split(" `--dataset synthetic`")[0].rstrip(". ") or "no source reachable"
        message = f"{name} is not available offline ({one_line(reason, 160)}); run with --dataset synthetic"
        raise JobError(message) from None


def default_out_dir(job: str, dataset: str, tag: str) -> Path:
    """``out/JOB/DATASET-TAG``, with characters unsafe in a folder name (``:``, ``/``) replaced."""
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in f"{dataset}-{tag}")
    return OUT_ROOT / job / safe.strip("._")[-100:]


def to_jsonable(obj: object) -> object:
    """Numpy scalars and arrays, paths and NaN (-> None) made JSON-serialisable, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN written as null)."""
    return atomic_write_json(path, to_jsonable(obj))


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    """Write a table as CSV atomically (no index column; floats at full precision)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)  # shortest round-trip repr: values read back exactly
    return atomic_write_bytes(path, buf.getvalue().encode())


def format_table(table: pd.DataFrame, formats: Mapping[str, str], headers: Mapping[str, str] | None = None) -> str:
    """Fixed-width text table of the columns in ``formats`` (``{column: format spec}``), NaN shown as ``-``.

    ``headers`` renames columns for display. Numbers are right-aligned, text left-aligned.
    """
    headers = headers or {}
    cols = list(formats)
    cells = []
    for _, row in table.iterrows():
        line = []
        for col in cols:
            value = row[col]
            if isinstance(value, (float, np.floating)) and not np.isfinite(value):
                line.append("-")
            else:
                line.append(format(value, formats[col]))
        cells.append(line)
    names = [headers.get(c, c) for c in cols]
    widths = [max([len(n)] + [len(r[j]) for r in cells]) for j, n in enumerate(names)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in cols]

    def render(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(names), rule, *(render(r) for r in cells)])


def fail(message: str) -> int:
    """Print ``error: message`` as one line on stderr and return the usage exit code."""
    print(f"error: {one_line(message, 400)}", file=sys.stderr)
    return EXIT_USAGE


# ------------------------------------------------------------------------------------------- the command line


def job_parser(job: str, description: str, note: str = "") -> JobArgumentParser:
    """The parser of ``python -m analyses.JOB``; its epilog is ``note`` and where the default dataset comes from."""
    return JobArgumentParser(
        prog=f"python -m analyses.{job}", description=description, epilog=f"{note} {DATASET_EPILOG}".strip()
    )


def add_job_arguments(
    parser: argparse.ArgumentParser, *, out: str, seed: str, quick: str, dataset: str | None = None
) -> None:
    """The options every job takes: ``--dataset``, ``--seed``, ``--out``, ``--quick`` and ``--no-progress``.

    Parameters
    ----------
    out : str
        The default output folder in words, e.g. ``out/JOB/DATASET-rhoR``.
    seed : str
        What ``--seed`` seeds.
    quick : str
        What ``--quick`` does.
    dataset : str, optional
        Fixed default dataset; None: ml-1m, or synthetic with ``--quick``.
    """
    default = f"default {dataset}" if dataset else "default ml-1m; --quick: synthetic"
    parser.add_argument("--dataset", default=dataset, help=f"one of {', '.join(dataset_names())} ({default})")
    parser.add_argument("--seed", type=int, default=0, help=f"{seed} (0)")
    parser.add_argument("--out", type=Path, help=f"output folder (default {out})")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def option_sizes(
    args: argparse.Namespace,
    defaults: Mapping[str, object],
    quick: Mapping[str, object],
    minimum: Mapping[str, int] | None = None,
) -> dict:
    """The job's sizes: each option of ``defaults`` as given, else its default (``quick`` with ``--quick``).

    ``minimum`` maps options to their smallest valid value; a smaller one raises ValueError naming the flag.
    """
    base = quick if args.quick else defaults
    sizes = {key: getattr(args, key) if getattr(args, key) is not None else base[key] for key in base}
    for key, low in (minimum or {}).items():
        if sizes[key] < low:
            raise ValueError(f"--{key.replace('_', '-')} must be an integer >= {low}, got {sizes[key]}")
    return sizes


def run_main(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Path], argv: Sequence[str] | None
) -> int:
    """A job's ``main``: parse ``argv``, ``run`` and print the output folder; returns the exit code.

    A problem the user can fix (:class:`JobError`, ``ValueError``, ``FileNotFoundError``) is printed as one
    ``error:`` line on stderr and gives exit code 2 (bad options already do so while parsing).
    """
    args = parser.parse_args(argv)
    try:
        out = run(args)
    except (JobError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    print(f"output folder: {out}")
    return 0


# ------------------------------------------------------------------------------------------------- the data


def binary(X: sp.spmatrix) -> sp.csr_matrix:
    """``X`` as a CSR matrix with every stored entry set to 1 (float32)."""
    X = sp.csr_matrix(X)
    return sp.csr_matrix((np.ones(X.nnz, dtype=np.float32), X.indices, X.indptr), shape=X.shape)


def planted_labels(split: Split) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The synthetic generator's ground truth for the split's training rows, or None and why not.

    ``models.data`` generates the synthetic split from ``models.synthetic.make_synthetic()`` defaults; the
    interaction counts of the rows are checked against the generator, so a changed filter is detected.

    Returns
    -------
    labels : dict or None
        ``make_synthetic().labels_for(split.train_users)`` (``taste_group``, ``cohort``, ``target_activity``,
        ``n_interactions``, ... per training row), plus ``pairs`` (int64, shape (M, 2): the generator's
        far-but-related pairs whose two users are training users, as training rows) and ``cohort_activity``
        (the planted cohorts' activity). None for other datasets or when the rows are not the generator's.
    note : str or None
        Why a synthetic split has no labels.
    """
    if split.name != "synthetic":
        return None, None
    from models.synthetic import make_synthetic

    data = make_synthetic()
    ids = np.asarray(split.train_users)
    if not np.issubdtype(ids.dtype, np.integer) or ids.size == 0 or ids.min() < 0 or ids.max() >= data.n_users:
        return None, "synthetic labels skipped: the split's user ids are not the generator's ids"
    labels = data.labels_for(ids)
    if not np.array_equal(labels["n_interactions"], np.diff(sp.csr_matrix(split.train).indptr)):
        return None, "synthetic labels skipped: the split's rows differ from make_synthetic() (filters changed?)"
    row_of = np.full(data.n_users, -1, dtype=np.int64)
    row_of[ids] = np.arange(ids.size)
    rows = row_of[data.far_related_pairs]
    labels["pairs"] = rows[(rows >= 0).all(axis=1)]
    labels["cohort_activity"] = data.cohort_activity
    return labels, None


# ------------------------------------------------------------------------------------------------ the output


def save_result(out: Path, name: str, result: dict, files: Sequence[Path], timing: Mapping[str, float]) -> Path:
    """Write the job's JSON ``out/name``: ``result`` completed with ``timing_seconds`` and ``files`` (the names of
    ``files`` and of the JSON itself, i.e. everything the job wrote)."""
    result["timing_seconds"] = {k: round(v, 3) for k, v in timing.items()}
    result["files"] = [p.name for p in files] + [name]
    return write_json(out / name, result)


def print_done(out: Path, result: Mapping, timing: Mapping[str, float], notes: Sequence[str] = ()) -> None:
    """The job's closing lines: its ``notes``, one ``note:`` line each, then the total time and the number of files
    written (after :func:`save_result`)."""
    for note in notes:
        print(f"note: {note}")
    print(f"\ndone in {timing['total']:.1f} s; wrote {len(result['files'])} files to {out}")
