"""Train and evaluate every model of the ML-1M results table, with and without PIA, over several seeds.

    python experiments/ml1m_results.py --runs runs/ml1m --jobs 2 [--seeds 0 1 2] [--lambdas 0.1 1.0]

For each model (Multi-VAE, Multi-DAE, RecVAE): seed 0 without PIA and with every lambda_A of the grid; the
lambda_A with the best validation NDCG@100 (seed 0) is then trained on the other seeds, as is the model
without PIA. Every run is the plain CLI (``python -m models.train ...``), so each line of the table can be
reproduced by hand; finished runs are skipped and killed ones resumed. The script then evaluates each run
on the test users and writes ``RESULTS.md`` and ``results.json`` in ``--runs``: the test metrics (mean over
seeds of the per-run means, and the per-run standard errors), the user-group table, and the paired
difference PIA - no PIA over test users (per seed and pooled over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.evaluate import evaluate_run
from models.evaluation import USER_GROUPS, paired_difference
from models.io import atomic_write_json, load_verified

MODELS = ("multvae", "multdae", "recvae")
METRICS = ("recall@20", "recall@50", "ndcg@100")


def run_name(model: str, lam: float, seed: int) -> str:
    return f"{model}-pia{lam:g}-seed{seed}"


EPOCHS: dict[str, int] = {}  # model -> epoch cap of this invocation (--epochs MODEL=N)


def train_cmd(model: str, lam: float, seed: int, out: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "models.train", "--model", model, "--dataset", "ml-1m", "--seed", str(seed)]
    cmd += ["--pia", str(lam), "--out", str(out), "--no-progress", *extra]
    if model in EPOCHS:
        cmd += ["--epochs", str(EPOCHS[model])]
    return cmd


def ensure(model: str, lam: float, seed: int, root: Path, extra: list[str]) -> Path:
    out = root / run_name(model, lam, seed)
    log = root / f"{out.name}.log"
    cmd = train_cmd(model, lam, seed, out, extra)
    if (out / "checkpoint.pt").exists():
        state = json.loads((out / "config.json").read_text())
        done = len((out / "metrics.jsonl").read_text().splitlines())
        if done >= EPOCHS.get(model, state["epochs"]):
            return out
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(" ".join(cmd[1:]), flush=True)
    with log.open("a") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env)
    return out


def history(run: Path) -> list[dict]:
    """Epoch records up to this invocation's epoch cap (training is deterministic, so the first N epochs of a
    longer run are exactly an N-epoch run)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cap = EPOCHS.get(json.loads((run / "config.json").read_text())["model"], len(lines))
    return lines[:cap]


def best_val(run: Path) -> float:
    return max(x["val_ndcg@100"] for x in history(run))


def best_epoch(run: Path) -> int:
    h = history(run)
    return int(max(h, key=lambda x: x["val_ndcg@100"])["epoch"]) + 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/ml1m"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--epochs", nargs="+", default=[], metavar="MODEL=N", help="epoch cap per model")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to every models.train")
    args = p.parse_args()
    for item in args.epochs:
        name, _, n = item.partition("=")
        EPOCHS[name] = int(n)
    args.runs.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(args.jobs)
    first = {
        (m, lam): pool.submit(ensure, m, lam, args.seeds[0], args.runs, args.extra)
        for m in args.models
        for lam in [0.0, *args.lambdas]
    }
    rest = {
        (m, 0.0, s): pool.submit(ensure, m, 0.0, s, args.runs, args.extra) for m in args.models for s in args.seeds[1:]
    }
    chosen = {}
    for m in args.models:
        vals = {lam: best_val(first[(m, lam)].result()) for lam in args.lambdas}
        chosen[m] = max(vals, key=vals.get)
        print(f"{m}: validation NDCG@100 by lambda_A {vals} -> {chosen[m]:g}", flush=True)
        for s in args.seeds[1:]:
            rest[(m, chosen[m], s)] = pool.submit(ensure, m, chosen[m], s, args.runs, args.extra)
    for f in [*first.values(), *rest.values()]:
        f.result()
    pool.shutdown()

    results: dict = {"chosen_lambda": chosen, "seeds": args.seeds, "models": {}}
    lines = ["| model | Recall@20 | Recall@50 | NDCG@100 | best epoch per seed |", "|---|---|---|---|---|"]
    group_lines = ["| model | " + " | ".join(g[0] for g in USER_GROUPS) + " |", "|---|" + "---|" * len(USER_GROUPS)]
    diff_lines = [
        "| model | lambda_A | " + " | ".join(f"Δ {m}" for m in METRICS) + " |",
        "|---|---:|" + "---|" * len(METRICS),
    ]
    for m in args.models:
        evs = {}
        for lam in (0.0, chosen[m]):
            evs[lam] = [evaluate_run(args.runs / run_name(m, lam, s)).evaluation for s in args.seeds]
            label = f"{m}" + (f" + PIA (λ={lam:g})" if lam else "")
            summaries = [e.summary() for e in evs[lam]]
            cells = []
            for k in METRICS:
                means = [s_[k]["mean"] for s_ in summaries]
                ses = [s_[k]["se"] for s_ in summaries]
                cells.append(f"{np.mean(means):.4f} ± {np.mean(ses):.4f} (seed sd {np.std(means, ddof=1):.4f})")
            epochs = []
            for s in args.seeds:
                run = args.runs / run_name(m, lam, s)
                saved = int(load_verified(run / "best.pt")["epoch"]) + 1
                if saved != best_epoch(run):  # a longer earlier run improved after this invocation's cap
                    raise SystemExit(f"{run}: best.pt is from epoch {saved}, beyond the cap; retrain it with the cap")
                epochs.append(str(saved))
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(epochs)} |")
            groups = [e.groups() for e in evs[lam]]
            gcells = []
            for g, *_ in USER_GROUPS:
                vals = [gr[g]["ndcg@100"]["mean"] for gr in groups if gr[g]["ndcg@100"]["n"]]
                gcells.append(f"{np.mean(vals):.4f}" if vals else "-")
            group_lines.append(f"| {label} | " + " | ".join(gcells) + " |")
            results["models"][label] = {"per_seed": [e.to_dict() for e in evs[lam]]}
        diffs = {
            k: [paired_difference(b, a, k) for a, b in zip(evs[0.0], evs[chosen[m]], strict=True)] for k in METRICS
        }
        pooled = {}
        for k in METRICS:
            means = np.array([d["mean"] for d in diffs[k]])
            ses = np.array([d["se"] for d in diffs[k]])
            # Mean over seeds of the per-seed paired means; its SE combines the per-seed SEs (independent seeds).
            pooled[k] = {
                "mean": float(means.mean()),
                "se": float(np.sqrt((ses**2).sum()) / len(ses)),
                "per_seed": diffs[k],
            }
        results["models"][f"{m} paired difference"] = pooled
        diff_lines.append(
            f"| {m} | {chosen[m]:g} | "
            + " | ".join(f"{pooled[k]['mean']:+.4f} ± {pooled[k]['se']:.4f}" for k in METRICS)
            + " |"
        )
    text = "\n".join(
        [
            "# ML-1M results",
            "",
            f"Command: `python experiments/ml1m_results.py --runs {args.runs} --seeds {' '.join(map(str, args.seeds))} "
            f"--lambdas {' '.join(f'{x:g}' for x in args.lambdas)} --epochs {' '.join(args.epochs)}`",
            "",
            "Test users; mean over seeds of each run's mean ± the mean per-run standard error (seed sd in brackets).",
            "",
            *lines,
            "",
            "NDCG@100 by user group (mean over seeds):",
            "",
            *group_lines,
            "",
            "Paired difference PIA - no PIA over test users (mean over seeds ± SE):",
            "",
            *diff_lines,
            "",
        ]
    )
    (args.runs / "RESULTS.md").write_text(text)
    atomic_write_json(args.runs / "results.json", results)
    print(text)


if __name__ == "__main__":
    main()
