"""Copy a finished claims ledger into the repository (``docs/claims``): the files the ledger's rows are read from,
without the bulk.

    python -m analyses.claims --merge out/claims-ml1m docs/claims out/claims-synthetic --out out/claims-all
    python experiments/publish_claims.py out/claims-all docs/claims

Kept: the ledger's own files (``claims.json``, ``claims.md``, ``comparison.json``, ``ledger.json``, the ``claims``
figure, ``COMPLETE``); per dataset ``runs/DATASET/pia_uplift/uplift.json`` and its figure; per seed and job the
job's JSON (``summary.json``); and ``masking_contraction/pairs.csv`` cut to the three columns the ledger reads
(``stratum``, ``anchor``, ``p_contraction_masked``: 0.2 MB instead of 1.5 MB per seed on ML-1M). Left out: the
jobs' figures and other tables (rerun a row's ``command`` to get them). With these files
``tests/test_docs.py`` recomputes every committed row with :func:`analyses.claims.ledger_rows`.

The destination is replaced as a whole (written beside it, then swapped), so it never mixes two ledgers.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

LEDGER_FILES = ("claims.json", "claims.md", "comparison.json", "ledger.json", "claims.png", "COMPLETE")
UPLIFT_FILES = ("uplift.json", "uplift.png")
PAIRS_COLUMNS = ("stratum", "anchor", "p_contraction_masked")
"""The columns of ``pairs.csv`` that :func:`analyses.claims.measure_far_related` reads."""


def publish(ledger: Path, dest: Path) -> list[Path]:
    """Copy the selection of ``ledger`` (a finished ``analyses.claims`` folder) to ``dest``; returns the files."""
    from analyses.claims import JOB_SPECS, SEED_JOBS

    marker = json.loads((ledger / "COMPLETE").read_text())
    if marker.get("job") != "claims" or marker.get("complete") is not True:
        raise ValueError(f"{ledger}: not a finished claims ledger")
    staging = dest.with_name(f".{dest.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    written = []

    def take(rel: Path) -> None:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ledger / rel, staging / rel)
        written.append(dest / rel)

    for name in LEDGER_FILES:
        if (ledger / name).is_file():
            take(Path(name))
    for dataset in sorted(p for p in (ledger / "runs").iterdir() if p.is_dir()):
        for name in UPLIFT_FILES:
            rel = Path("runs", dataset.name, "pia_uplift", name)
            if (ledger / rel).is_file():
                take(rel)
        for seed in sorted(p for p in dataset.iterdir() if p.name.startswith("seed")):
            for job in SEED_JOBS:
                rel = Path("runs", dataset.name, seed.name, job, JOB_SPECS[job].json_name)
                if (ledger / rel).is_file():
                    take(rel)
            pairs = Path("runs", dataset.name, seed.name, "masking_contraction", "pairs.csv")
            if (ledger / pairs).is_file():
                with open(ledger / pairs, newline="") as src, open(staging / pairs, "w", newline="") as out:
                    reader = csv.DictReader(src)
                    writer = csv.writer(out)
                    writer.writerow(PAIRS_COLUMNS)
                    writer.writerows([row[c] for c in PAIRS_COLUMNS] for row in reader)
                written.append(dest / pairs)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path, help="a finished analyses.claims output folder")
    parser.add_argument("dest", type=Path, help="where the selection goes (replaced), e.g. docs/claims")
    args = parser.parse_args(argv)
    try:
        files = publish(args.ledger, args.dest)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
