"""Benchmark: preparing a 20M-row ML-20M-format ratings file (time and peak memory).

    python benchmarks/bench_data.py [--rows 20000263] [--out benchmarks/RESULTS_data.md]

Writes a synthetic ``ratings.csv`` shaped like MovieLens 20M (138,493 users, 26,744 movies, half-star
ratings, power-law item popularity, rows sorted by user then movie), then builds its strong-generalization
split in a fresh subprocess (so its peak RSS is the preparation's alone) and reports the time and peak RSS.
Target (issue 2): under 4 GB peak memory. Then it loads the split again (a cache hit) and times the two costs of
the verified cache (issue 9): hashing the content of ratings.csv for the cache key, and checking split.npz against
its manifest.
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
from models.data import content_digest, load_split, read_split
path, root = Path(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
split = load_split("ml-20m", path=path, root=root, progress=False)
build = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
again = load_split("ml-20m", path=path, root=root, progress=False)
cached = time.perf_counter() - t
t = time.perf_counter()
content_digest(path)
digest = time.perf_counter() - t
folder = Path(split.report["cache"])
t = time.perf_counter()
read_split(folder, "ml-20m")
verified_read = time.perf_counter() - t
npz_mb = (folder / "split.npz").stat().st_size / 1e6
r = split.report
print(build, rss, r["rows_read"], r["after_filtering"]["users"], split.n_items, split.train.shape[0], cached, digest,
      verified_read, npz_mb, path.stat().st_size / 1e6)
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
            check=False,
        )
        if res.returncode != 0:
            sys.exit(f"the preparation failed:\n{res.stderr}")
        fields = res.stdout.split()
    seconds, rss_mb, rows, users, items, train_users = fields[:6]
    cached, digest, verified_read, npz_mb, csv_mb = (float(f) for f in fields[6:])
    table = (
        "| rows | users kept | items | train users | seconds | peak RSS (MB) |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {int(rows):,} | {int(users):,} | {int(items):,} | {int(train_users):,} | {float(seconds):.1f} | "
        f"{float(rss_mb):,.0f} |\n"
    )
    cache = (
        "| step | seconds |\n"
        "|---|---:|\n"
        f"| second load (cache hit: content key of ratings.csv + verified read) | {cached:.2f} |\n"
        f"| of which: sha256 of ratings.csv ({csv_mb:,.0f} MB), the cache key | {digest:.2f} |\n"
        f"| of which: read of split.npz ({npz_mb:,.0f} MB) checked against its manifest | {verified_read:.2f} |\n"
    )
    text = (
        "# Data preparation benchmark\n\n"
        f"Command: `python benchmarks/bench_data.py --rows {args.rows}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Preparation = read ratings.csv, binarise, filter, split, "
        "write the cache "
        "(one subprocess; peak RSS from getrusage).\n\n" + table + "\n"
        "Verified cache (issue 9): the split's cache key hashes the content of ratings.csv (sha256, streamed) "
        "instead of trusting its size and mtime, and every read checks split.npz and report.json against the "
        "sizes and sha256 in manifest.json. Both costs are paid on every load, cached or not:\n\n" + cache
    )
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
