"""Benchmark: several models trained one after the other with every core, or side by side in worker processes.

    python benchmarks/bench_workers.py [--dataset ml-1m] [--models 2] [--epochs 10] [--model multvae]
                                       [--out benchmarks/RESULTS_workers.md]

``pia_uplift --workers N`` (:func:`analyses.trained.train_all`) trains independent configurations in N spawned
processes with ``cores // N`` threads each. Whether that beats one process using every core depends on how well
one model's matrix products use the cores, which depends on the data's size. This script measures both routes on
the machine at hand: ``--models`` configurations (seeds 0, 1, ...) of ``--model`` for ``--epochs`` epochs each,
trained into a fresh temporary run cache

- serially in this process with ``torch.set_num_threads(cores)``, and
- by ``train_all(..., workers=cores)``,

and checks that both routes give the same validation NDCG@100 history (they are the same computation). It prints
and writes a Markdown table: wall seconds, models per hour and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from analyses.trained import available_cores, get_trained, train_all
from models.trainer import TrainConfig, load_run_split, read_history


def _histories(runs: list[Path]) -> list[list[float]]:
    return [[round(h["val_ndcg@100"], 6) for h in read_history(r)] for r in runs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--model", default="multvae", choices=("multvae", "multdae", "recvae"))
    p.add_argument("--models", type=int, default=2, help="configurations trained by each route (seeds 0, 1, ...)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_workers.md"))
    args = p.parse_args()
    cores = available_cores()
    configs = [
        TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, seed=s, device="cpu")
        for s in range(args.models)
    ]
    split = load_run_split(configs[0].resolved(), progress=False)
    rows, histories = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VAECF_RUNS_DIR"] = str(Path(tmp) / "serial")
        torch.set_num_threads(cores)
        t = time.perf_counter()
        serial = [get_trained(c, split=split, progress=False).run for c in configs]
        rows.append(("one after the other", f"1 process x {cores} threads", time.perf_counter() - t))
        histories["serial"] = _histories(serial)

        os.environ["VAECF_RUNS_DIR"] = str(Path(tmp) / "workers")
        t = time.perf_counter()
        train_all(configs, workers=cores, split=split, progress=False)
        rows.append(("side by side (train_all)", f"{cores} processes x 1 thread", time.perf_counter() - t))
        parallel = [get_trained(c, split=split, train_if_missing=False).run for c in configs]
        histories["workers"] = _histories(parallel)
    same = histories["serial"] == histories["workers"]
    base = rows[0][2]
    command = (
        f"python benchmarks/bench_workers.py --dataset {args.dataset} --model {args.model} --models {args.models} "
        f"--epochs {args.epochs}"
    )
    lines = [
        "# Training several models: one after the other, or side by side",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {cores} cores, torch {torch.__version__}. {args.models} {args.model} models "
        f"x {args.epochs} epochs on {args.dataset} ({split.train.shape[0]:,} training users x {split.n_items:,} "
        "items), each route into a fresh run cache (the split cache warm; the time includes each route's "
        "validation passes and checkpoint writes, and the workers' start-up).",
        "",
        "| route | processes x threads | wall s | models per hour | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for name, layout, seconds in rows:
        lines.append(
            f"| {name} | {layout} | {seconds:.1f} | {3600 * args.models / seconds:.1f} | {base / seconds:.2f}x |"
        )
    lines += [
        "",
        "Validation NDCG@100 histories of the two routes: "
        + ("identical (the same computation)." if same else "DIFFERENT (thread counts change summation order)."),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print(json.dumps({"rows": rows, "same_histories": same}))
    args.out.write_text(text)


if __name__ == "__main__":
    main()
