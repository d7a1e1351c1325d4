"""Helpers shared by the analysis jobs: one-line CLI errors, dataset loading, the output folder, files.

Every job (``python -m analyses.<name>``) follows the same contract: bad options and unavailable data give
**one** line on stderr and exit code 2; numbers go to JSON and CSV, figures to PNG and PDF, all written
atomically into one output folder whose path is printed at the end.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from models.data import DatasetUnavailable, split_from_args
from models.io import atomic_write_bytes, atomic_write_json
from models.split import Split

OUT_ROOT = Path("out")
EXIT_USAGE = 2


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
