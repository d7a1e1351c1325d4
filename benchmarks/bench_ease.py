"""Benchmark: the EASE lambda search, one inverse per lambda against one eigendecomposition for the whole grid.

Usage::

    python benchmarks/bench_ease.py --items 5000 17000 --lambdas 2 --out benchmarks/RESULTS_ease.md

Data: the real Gowalla split (``../shared/data/gowalla``; 23,858 training and 3,000 validation users) restricted to
its ``I`` most popular training items, so that the Gram matrix has the sparsity of real data; without the
folder, a power-law synthetic problem of the same shape. For each ``I``:

- ``inverse``: seconds per lambda of :func:`models.baselines.ease_weights` (an ``I x I`` LU inverse) plus the
  validation scoring, the route ``models.baselines ease`` used before;
- ``eigen``: seconds of one ``torch.linalg.eigh`` of the Gram matrix, then per lambda the validation scoring from
  it (:class:`models.baselines.EigenEASE`: ``2 n I^2`` flops for ``n`` validation users), then the chosen
  lambda's weights (one ``I x I`` product);
- the grid total of each route for the default grid of 7 lambdas (``EASE_LAMBDAS``), from those measured parts;
- the largest difference of validation NDCG@100 between the routes (same numbers up to rounding);
- the machine's floor: the sustained float32 ``I x I`` GEMM rate, and what share of it the inverse reaches
  (an LU inverse is ``2 I^3`` flops);
- peak resident memory of the process (``getrusage``).

Only ``--lambdas`` values of the default grid are timed (each takes the same time), to keep a 17k-item run
within minutes; the totals scale the per-lambda mean by 7.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.baselines import EASE, EASE_LAMBDAS, EigenEASE, GramEigen, ease_weights, gram  # noqa: E402
from models.evaluation import evaluate  # noqa: E402
from models.split import HeldOut  # noqa: E402


def problem(items: int, seed: int = 0) -> tuple[sp.csr_matrix, HeldOut, str]:
    """Training matrix and validation users on the ``items`` most popular items."""
    from models.data import DatasetUnavailable, load_split, locate

    try:
        source = locate("gowalla")
        if source is None:
            raise DatasetUnavailable("no Gowalla")
        split = load_split("gowalla", progress=False)
        top = np.sort(np.argsort(-np.asarray(split.train.sum(axis=0)).ravel(), kind="stable")[:items])
        v = split.validation
        held = HeldOut(fold_in=v.fold_in[:, top].tocsr(), targets=v.targets[:, top].tocsr(), users=v.users)
        return split.train[:, top].tocsr(), held, f"Gowalla, {items:,} most popular items"
    except DatasetUnavailable:
        rng = np.random.default_rng(seed)
        pop = 1.0 / np.arange(1, items + 1) ** 0.8
        pop /= pop.sum()

        def users(n: int) -> sp.csr_matrix:
            rows = [rng.choice(items, size=int(rng.integers(10, 80)), replace=False, p=pop) for _ in range(n)]
            indptr = np.cumsum([0, *map(len, rows)])
            return sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(rows), indptr), shape=(n, items))

        fold_in, targets = users(3000), users(3000)
        held = HeldOut(fold_in=fold_in, targets=targets - targets.multiply(fold_in), users=np.arange(3000))
        return users(24000), held, f"synthetic power law, {items:,} items"


def gemm_rate(n: int, reps: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def ndcg(score, held: HeldOut) -> float:
    return evaluate(score, held, metrics=("ndcg@100",), batch_size=1000).summary()["ndcg@100"]["mean"]


def measure(items: int, lambdas: list[float]) -> dict:
    train, held, what = problem(items)
    cpu = torch.device("cpu")
    g = gram(train, cpu)
    row: dict = {"items": items, "data": what, "validation users": held.n_users}
    inverse_s, inverse_ndcg = [], {}
    for lam in lambdas:
        start = time.perf_counter()
        inverse_ndcg[lam] = ndcg(EASE(ease_weights(g, lam), lam).score, held)
        inverse_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    eig = GramEigen.of(g)
    row["eigh s"] = time.perf_counter() - start
    eigen_s, diffs = [], []
    for lam in lambdas:
        start = time.perf_counter()
        diffs.append(abs(ndcg(EigenEASE(eig, lam).score, held) - inverse_ndcg[lam]))
        eigen_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    EigenEASE(eig, lambdas[0]).to_ease()
    row["final weights s"] = time.perf_counter() - start
    rate = gemm_rate(items)
    grid = len(EASE_LAMBDAS)
    row |= {
        "inverse s/lambda": float(np.mean(inverse_s)),
        "eigen s/lambda": float(np.mean(eigen_s)),
        "gemm GFLOP/s": rate / 1e9,
        "inverse share of GEMM rate": 2 * items**3 / rate / float(np.mean(inverse_s)),
        "max |d NDCG@100|": max(diffs),
    }
    row["inverse grid s"] = grid * row["inverse s/lambda"]
    row["eigen grid s"] = row["eigh s"] + grid * row["eigen s/lambda"] + row["final weights s"]
    row["peak RSS MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[5000, 17000])
    parser.add_argument("--lambdas", type=int, default=2, help="how many lambdas of the default grid to time")
    parser.add_argument("--out", type=Path, help="write the results table (Markdown) here")
    args = parser.parse_args()
    lambdas = [float(v) for v in EASE_LAMBDAS[2 : 2 + args.lambdas]]
    rows = []
    for items in args.items:
        rows.append(measure(items, lambdas))
        print(rows[-1], file=sys.stderr)
    lines = [
        "# EASE lambda search benchmark",
        "",
        f"Command: `python benchmarks/bench_ease.py --items {' '.join(map(str, args.items))} --lambdas {args.lambdas}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, float32. "
        f"Timed lambdas: {', '.join(f'{v:g}' for v in lambdas)}; grid totals for the default grid of "
        f"{len(EASE_LAMBDAS)} lambdas. Peak RSS is the process's high-water mark after that size.",
        "",
        "| items | data | val. users | inverse s/λ | inverse grid s | eigh s | eigen s/λ | final B s | eigen grid s "
        "| faster | GEMM GFLOP/s | inverse share of GEMM | max Δ NDCG@100 | peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        faster = "eigen" if r["eigen grid s"] < r["inverse grid s"] else "inverse"
        lines.append(
            f"| {r['items']:,} | {r['data']} | {r['validation users']:,} | {r['inverse s/lambda']:.1f} "
            f"| {r['inverse grid s']:.0f} | {r['eigh s']:.1f} | {r['eigen s/lambda']:.1f} | {r['final weights s']:.1f} "
            f"| {r['eigen grid s']:.0f} | {faster} | {r['gemm GFLOP/s']:.0f} | {r['inverse share of GEMM rate']:.0%} "
            f"| {r['max |d NDCG@100|']:.1e} | {r['peak RSS MB']:,.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
