"""Benchmark: preparing a 20M-row ML-20M-format ratings file (time and peak memory).

    python benchmarks/bench_data.py [--rows 20000263] [--out benchmarks/RESULTS_data.md]

Writes a synthetic ``ratings.csv`` shaped like MovieLens 20M (138,493 users, 26,744 movies, half-star
ratings, power-law item popularity, rows sorted by user then movie), then builds its strong-generalization
split in a fresh subprocess (so its peak RSS is the preparation's alone) and reports the time and peak RSS.
Target (issue 2): under 4 GB peak memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = """
import resource, sys, time
from pathlib import Path
from models.data import load_split
t = time.perf_counter()
split = load_split("ml-20m", path=Path(sys.argv[1]), root=Path(sys.argv[2]), progress=False)
t = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
r = split.report
print(t, rss, r["rows_read"], r["after_filtering"]["users"], split.n_items, split.train.shape[0])
"""


def write_ratings(path: Path, n_rows: int, n_users: int = 138_493, n_items: int = 26_744, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # Users with log-normal activity, items drawn with Zipf-like popularity, duplicates removed per user.
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * n_rows * 1.3)).astype(np.int64)
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=users.size, p=popularity / popularity.sum()) + 1
    frame = pd.DataFrame({"userId": users, "movieId": items})
    frame = frame.drop_duplicates()
    frame = frame.sample(n=min(n_rows, len(frame)), random_state=seed).sort_values(["userId", "movieId"])
    frame["rating"] = rng.integers(1, 11, size=len(frame)) / 2.0
    frame["timestamp"] = rng.integers(8 * 10**8, 14 * 10**8, size=len(frame))
    frame.to_csv(path, index=False, float_format="%.1f")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_263)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS_data.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "ratings.csv"
        t = time.perf_counter()
        write_ratings(csv, args.rows)
        print(
            f"wrote {csv} ({csv.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
        repo = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": str(repo)}
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(csv), str(Path(tmp) / "cache")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        seconds, rss_mb, rows, users, items, train_users = res.stdout.split()
    table = (
        "| rows | users kept | items | train users | seconds | peak RSS (MB) |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {int(rows):,} | {int(users):,} | {int(items):,} | {int(train_users):,} | {float(seconds):.1f} | "
        f"{float(rss_mb):,.0f} |\n"
    )
    text = (
        "# Data preparation benchmark\n\n"
        f"Command: `python benchmarks/bench_data.py --rows {args.rows}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Preparation = read ratings.csv, binarise, filter, split, "
        "write the cache "
        "(one subprocess; peak RSS from getrusage).\n\n" + table
    )
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
