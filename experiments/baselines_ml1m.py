"""The paper's other baseline rows on ML-1M under one protocol, over several seeds: CDAE, WMF, BPR-MF and RaCT beside
Multi-VAE and EASE.

    python experiments/baselines_ml1m.py --runs runs/baselines-ml1m --seeds 0 1 2 --jobs 2

Every number comes from the plain command lines (printed as they run, logged beside their outputs), so each row can
be reproduced by hand; finished work is skipped and killed training resumed, so the script can be stopped and
started again. Tuning is the same for every trained baseline: its grid is searched on validation NDCG@100 at the
first seed, and the chosen setting is trained at the other seeds.

- Multi-VAE (the reference and RaCT's actor): ``python -m models.train --model multvae --anneal-epochs 50`` (beta
  reaches its cap of 0.2 after 50 epochs; the published 200,000-update schedule leaves beta below 0.01 on ML-1M).
- CDAE: ``python -m models.train --model cdae`` over ``--lr`` x keep rate ``--rho`` x ``--weight-decay``
  (:data:`CDAE_GRID`).
- WMF, BPR-MF: ``python -m models.baselines wmf|bpr --seed S`` with the grids :data:`WMF_GRID`, :data:`BPR_GRID`.
- RaCT: ``python -m models.ract`` on the Multi-VAE run of the same seed.
- EASE: ``python -m models.baselines ease`` (deterministic: one run).

Then ``models.evaluate`` writes each run's per-user test values and the script writes ``RESULTS.md`` and
``results.json`` in ``--runs`` (the committed copies: ``experiments/RESULTS_baselines_ml1m.md``,
``experiments/results_baselines_ml1m.json``): per model the test metrics of every seed (mean and standard error over
the 600 test users), their mean over seeds with the Student-t interval across seeds, and the paired per-user
difference from the Multi-VAE of the same seed (per seed with its SE over users; across seeds the t interval of the
per-seed means).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from analyses.results import SHARED_ERROR_CI, across_seeds_of
from models.baselines import result_per_user_path
from models.evaluate import per_user_path
from models.io import atomic_write_json
from models.trainer import run_progress

METRICS = ("recall@20", "recall@50", "ndcg@100")
CDAE_GRID = {"lr": (1e-3, 1e-2), "rho": (0.5, 0.8), "weight_decay": (0.001, 0.01)}
"""CDAE's search: the rate too, since its logistic loss over every item learns slowly at 1e-3 with the 10 updates an
epoch of ML-1M (validation NDCG@100 still rising at epoch 135 of 200 in a first try)."""
WMF_GRID = {"factors": "50,100,200", "regularization": "0.1,1,10,100", "alpha": "0.3,1,3"}
BPR_GRID = {"factors": "50,100,200", "regularization": "0.001,0.01,0.1"}
RACT_LR_ACTOR = (2e-6, 1e-5, 1e-4, 1e-3)
"""RaCT's actor rate: the authors' 2e-6 (ML-20M, 233 updates an epoch) barely moves a Multi-VAE on ML-1M (10
updates an epoch), so the rate is searched on validation like every other baseline's settings."""
MULTVAE = ["--model", "multvae", "--anneal-epochs", "50"]


def run(cmd: list[str], log: Path) -> None:
    """One command line, one BLAS thread (two run side by side on two cores), output appended to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    print("python " + " ".join(cmd[1:]), flush=True)
    with log.open("a") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env)


def log_of(out: Path) -> Path:
    return out.parent / f"{out.name}.log"  # not with_suffix: "wd0.001-seed0" would lose ".001-seed0"


def trained(flags: list[str], out: Path) -> Path:
    """A ``models.train`` run on ML-1M, resumed when killed, then evaluated on the test users."""
    done = out / "metrics.jsonl"
    planned = json.loads((out / "config.json").read_text())["epochs"] if (out / "config.json").is_file() else None
    if planned is None or len(done.read_text().splitlines()) < planned:
        cmd = [sys.executable, "-m", "models.train", "--dataset", "ml-1m", *flags, "--out", str(out), "--no-progress"]
        run([*cmd, "--resume"] if (out / "checkpoint.pt").exists() else cmd, log_of(out))
    if not per_user_path(out).is_file():
        run([sys.executable, "-m", "models.evaluate", str(out)], log_of(out))
    return out


def baseline(model: str, options: dict, seed: int, out: Path) -> Path:
    """A ``models.baselines`` result JSON (and its per-user CSV)."""
    if not out.is_file():
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        cmd = [sys.executable, "-m", "models.baselines", model, "--dataset", "ml-1m", *flags, "--out", str(out)]
        run([*cmd, "--seed", str(seed)] if model != "ease" else cmd, log_of(out))
    return out


def ract(actor: Path, lr: float, seed: int, out: Path) -> Path:
    if not per_user_path(out).is_file():
        cmd = [sys.executable, "-m", "models.ract", str(actor), "--out", str(out), "--seed", str(seed)]
        cmd += ["--lr-actor", str(lr), "--no-progress"]
        run([*cmd, "--resume"] if (out / "checkpoint.pt").exists() else cmd, log_of(out))
    return out


def one_step_beyond(values: list[float], best: float, linear_max: float | None = None) -> list[float]:
    """The values of one axis to try next: ``[best]`` when the choice is interior, else ``best`` and one grid step
    beyond the edge it sits at (the ratio of the two nearest values; with ``linear_max``, half the linear step, at
    most ``linear_max``: the keep rate rho)."""
    v = sorted(values)
    if len(v) < 2 or v[0] < best < v[-1]:
        return [best]
    up = best == v[-1]
    if linear_max is not None:
        step = (v[-1] - v[-2] if up else v[1] - v[0]) / 2
        nxt = min(linear_max, best + step) if up else best - step
        return [best, round(nxt, 4)] if nxt != best else [best]
    ratio = v[-1] / v[-2] if up else v[1] / v[0]
    nxt = best * ratio if up else best / ratio
    return [best, round(nxt) if float(best).is_integer() and best >= 1 and ratio >= 2 else float(f"{nxt:.3g}")]


def best_validation(run_folder: Path) -> float:
    return max(json.loads(line)["val_ndcg@100"] for line in (run_folder / "metrics.jsonl").read_text().splitlines())


def best_epoch(result: Path) -> str:
    """``best/planned`` epochs of a trained run (``*`` when the best is in the last fifth: training may have been
    cut short); ``-`` for a fitted baseline."""
    if not (result / "metrics.jsonl").is_file():
        return "-"
    done = json.loads((result / "test_metrics.json").read_text()) if (result / "test_metrics.json").is_file() else {}
    if done.get("model") == "ract":
        return f"{done['run']['evaluated_epoch']}/{done['run']['epochs_planned']}"
    progress = run_progress(result)
    best, planned = progress["best_epoch"], progress["epochs_planned"]
    return f"{best}/{planned}" + ("*" if best > 0.8 * planned else "")


def per_user(result: Path) -> pd.DataFrame:
    """Per-user test values of a run folder or a baseline JSON."""
    path = per_user_path(result) if result.is_dir() else result_per_user_path(result)
    return pd.read_csv(path, dtype={"user": str})


def _across(per_seed: dict[int, tuple[float, float]]) -> tuple[float, float | None, list[float] | None]:
    """Mean over seeds, its standard error and interval (:func:`analyses.results.across_seeds_of`: the spread
    between seeds plus the sampling error of the test users, the same users at every seed)."""
    spread = across_seeds_of(list(per_seed.values()))
    return spread["mean"], spread["se"], spread["ci"]


def summarise(rows: dict[str, dict[int, Path]], settings: dict[str, str], reference: str) -> tuple[dict, str]:
    """Per model: metrics per seed, mean over seeds with its interval (:func:`_across`), paired difference from
    ``reference``."""
    out: dict = {}
    lines = [
        "| model | setting | seeds | "
        + " | ".join(f"{m} (mean over seeds [95% CI])" for m in METRICS)
        + " | Δ NDCG@100 vs Multi-VAE, paired (mean over seeds [95% CI]; per-seed SE) | best epoch per seed |",
        "|---|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for label, by_seed in rows.items():
        tables = {s: per_user(p) for s, p in by_seed.items()}
        entry: dict = {"runs": {str(s): str(p) for s, p in by_seed.items()}, "metrics": {}, "paired": {}}
        cells = []
        one_fit = len(set(by_seed.values())) == 1  # a deterministic model (EASE): no spread across seeds to show
        for m in METRICS:
            seeds = {s: (float(t[m].mean()), float(t[m].std(ddof=1) / np.sqrt(len(t)))) for s, t in tables.items()}
            if one_fit:
                mean, se_users = next(iter(seeds.values()))
                entry["metrics"][m] = {"mean": mean, "se_over_users": se_users, "one_fit": True}
                cells.append(f"{mean:.4f} ± {se_users:.4f} (one fit; SE over users)")
                continue
            mean, se, ci = _across(seeds)
            entry["metrics"][m] = {"per_seed": seeds, "mean": mean, "se": se, "ci": ci, "interval": SHARED_ERROR_CI}
            cells.append(f"{mean:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{mean:.4f}")
        diffs = {}
        for s, t in tables.items():
            ref = per_user(rows[reference][s]).set_index("user")["ndcg@100"]
            d = t.set_index("user")["ndcg@100"] - ref.reindex(t["user"]).to_numpy()
            if d.isna().any():
                raise SystemExit(f"{label} seed {s}: its test users differ from the reference's")
            diffs[s] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))))
        entry["paired"]["ndcg@100"] = {"per_seed": diffs}
        if label != reference:
            mean, se, ci = _across(diffs)
            entry["paired"]["ndcg@100"].update({"mean": mean, "se": se, "ci": ci, "interval": SHARED_ERROR_CI})
            per_seed = ", ".join(f"{v[0]:+.4f} ± {v[1]:.4f}" for v in diffs.values())
            paired = f"{mean:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]; {per_seed}" if ci else per_seed
        else:
            paired = "(reference)"
        setting = settings.get(label, "")
        entry["setting"] = setting
        epochs = entry["best_epoch"] = ", ".join(best_epoch(p) for p in dict.fromkeys(by_seed.values()))
        seeds_text, cells_text = ", ".join(map(str, by_seed)), " | ".join(cells)
        lines.append(f"| {label} | {setting} | {seeds_text} | {cells_text} | {paired} | {epochs} |")
        out[label] = entry
    return out, "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/baselines-ml1m"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--models", nargs="+", default=["cdae", "wmf", "bpr", "ract", "ease"])
    args = p.parse_args()
    root, seeds = args.runs, args.seeds
    root.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(args.jobs)
    first = seeds[0]
    settings: dict[str, str] = {}
    searches: dict[str, list] = {}  # validation NDCG@100 of every setting searched at the first seed
    vae = {s: pool.submit(trained, [*MULTVAE, "--seed", str(s)], root / f"multvae-seed{s}") for s in seeds}

    def cdae_flags(lr: float, rho: float, wd: float, seed: int) -> list[str]:
        return ["--model", "cdae", "--lr", str(lr), "--rho", str(rho), "--weight-decay", str(wd), "--seed", str(seed)]

    def cdae_out(lr: float, rho: float, wd: float, seed: int) -> Path:
        return root / f"cdae-lr{lr:g}-rho{rho:g}-wd{wd:g}-seed{seed}"

    cdae_grid = {
        k: pool.submit(trained, cdae_flags(*k, first), cdae_out(*k, first))
        for k in itertools.product(CDAE_GRID["lr"], CDAE_GRID["rho"], CDAE_GRID["weight_decay"])
        if "cdae" in args.models
    }
    mf_searches = {
        name: pool.submit(baseline, name, grid, first, root / f"{name}-search-seed{first}.json")
        for name, grid in (("wmf", WMF_GRID), ("bpr", BPR_GRID))
        if name in args.models
    }
    ease = pool.submit(baseline, "ease", {}, 0, root / "ease.json") if "ease" in args.models else None
    rows: dict[str, dict[int, Path]] = {"Multi-VAE": {s: f.result() for s, f in vae.items()}}
    # submitted only once the actors exist: a worker never waits on work queued behind it
    ract_grid = {
        lr: pool.submit(ract, rows["Multi-VAE"][first], lr, first, root / f"ract-lr{lr:g}-seed{first}")
        for lr in RACT_LR_ACTOR
        if "ract" in args.models
    }
    settings["Multi-VAE"] = "rho 0.5, beta cap 0.2 reached after 50 epochs, 200 epochs"
    if cdae_grid:
        values = {k: best_validation(f.result()) for k, f in cdae_grid.items()}
        best = max(values, key=values.get)
        # a choice at the edge of an axis: one grid step beyond it (the other axes at the choice)
        axes = [
            one_step_beyond(list(CDAE_GRID[a]), b, 1.0 if a == "rho" else None)
            for a, b in zip(("lr", "rho", "weight_decay"), best, strict=True)
        ]
        more = [k for k in itertools.product(*axes) if k not in values]
        if more:
            print(f"CDAE: {best} at a grid edge; trying {more}", flush=True)
            extra = {k: pool.submit(trained, cdae_flags(*k, first), cdae_out(*k, first)) for k in more}
            values.update({k: best_validation(f.result()) for k, f in extra.items()})
            cdae_grid.update(extra)
            best = max(values, key=values.get)
        searches["CDAE"] = [{"lr": k[0], "rho": k[1], "weight_decay": k[2], "ndcg@100": v} for k, v in values.items()]
        print(f"CDAE: validation NDCG@100 by (lr, rho, weight decay) {values} -> {best}", flush=True)
        rest = {s: pool.submit(trained, cdae_flags(*best, s), cdae_out(*best, s)) for s in seeds[1:]}
        rows["CDAE"] = {first: cdae_grid[best].result(), **{s: f.result() for s, f in rest.items()}}
        settings["CDAE"] = (
            f"K 200, lr {best[0]:g}, rho {best[1]:g}, weight decay {best[2]:g} (grid {CDAE_GRID}, "
            "one step beyond an edge choice)"
        )
    for name, label in (("wmf", "WMF"), ("bpr", "BPR-MF")):
        if name not in mf_searches:
            continue
        found = json.loads(mf_searches[name].result().read_text())
        keys = ("factors", "regularization", "alpha") if name == "wmf" else ("factors", "regularization")
        grid = WMF_GRID if name == "wmf" else BPR_GRID
        searched = [
            {**{k: r[k] for k in keys}, "ndcg@100": r["validation"]["ndcg@100"]["mean"]} for r in found["validation"]
        ]
        axes = {k: one_step_beyond([float(v) for v in grid[k].split(",")], found[k]) for k in keys}
        result = mf_searches[name].result()
        if any(len(a) > 1 for a in axes.values()):
            beyond = {k: ",".join(f"{v:g}" for v in a) for k, a in axes.items()}
            print(f"{label}: { ({k: found[k] for k in keys}) } at a grid edge; searching {beyond}", flush=True)
            extended = baseline(name, beyond, first, root / f"{name}-extend-seed{first}.json")
            more = json.loads(extended.read_text())
            searched += [
                {**{k: r[k] for k in keys}, "ndcg@100": r["validation"]["ndcg@100"]["mean"]} for r in more["validation"]
            ]
            if max(r["validation"]["ndcg@100"]["mean"] for r in more["validation"]) > max(
                r["validation"]["ndcg@100"]["mean"] for r in found["validation"]
            ):
                found, result = more, extended
        chosen = {k: found[k] for k in keys}
        searches[label] = searched
        print(f"{label}: chosen on validation at seed {first}: {chosen}", flush=True)
        slug = "-".join(f"{k[:3]}{v:g}" for k, v in chosen.items())  # the setting names the file: never reuse another's
        rest = {s: pool.submit(baseline, name, chosen, s, root / f"{name}-{slug}-seed{s}.json") for s in seeds[1:]}
        rows[label] = {first: result, **{s: f.result() for s, f in rest.items()}}
        settings[label] = (
            ", ".join(f"{k} {v:g}" for k, v in chosen.items()) + f" (grid {grid}, one step beyond an edge)"
        )
    if ract_grid:
        values = {
            lr: json.loads((f.result() / "test_metrics.json").read_text())["run"]["val_ndcg@100"]
            for lr, f in ract_grid.items()
        }
        lr = max(values, key=values.get)
        searches["RaCT"] = [{"lr_actor": k, "ndcg@100": v} for k, v in values.items()]
        print(f"RaCT: best validation NDCG@100 by actor rate {values} -> {lr:g}", flush=True)
        rest = {s: pool.submit(ract, rows["Multi-VAE"][s], lr, s, root / f"ract-lr{lr:g}-seed{s}") for s in seeds[1:]}
        rows["RaCT"] = {first: ract_grid[lr].result(), **{s: f.result() for s, f in rest.items()}}
        settings["RaCT"] = (
            f"actor rate {lr:g} (grid {list(RACT_LR_ACTOR)}; the authors' 2e-6 first), the other models.ract defaults; "
            "fine-tuned from the Multi-VAE of the same seed"
        )
    if ease is not None:
        found = json.loads(ease.result().read_text())
        rows["EASE"] = dict.fromkeys(seeds, ease.result())
        settings["EASE"] = f"lambda {found['lambda']:g} (deterministic: one run, paired with each seed)"
    pool.shutdown()
    reference = "Multi-VAE"
    results, table = summarise(rows, settings, reference)
    command = f"python experiments/baselines_ml1m.py --runs {root} --seeds {' '.join(map(str, seeds))}"
    text = "\n".join(
        [
            "# ML-1M: the other baseline rows under one protocol",
            "",
            f"Command: `{command}` (2 cores, two runs side by side, one thread each).",
            "",
            "Test users (600, strong generalization); per model the mean over seeds of each seed's mean over users,",
            "with its 95% interval across seeds (the spread between seeds plus the sampling error of the 600 test",
            "users, which every seed shares: analyses.results.across_seeds); the paired difference is per user against",
            "the Multi-VAE of the same seed.",
            "",
            table,
            "",
        ]
    )
    (root / "RESULTS.md").write_text(text)
    atomic_write_json(
        root / "results.json",
        {"command": command, "seeds": seeds, "reference": reference, "models": results, "searches": searches},
    )
    print(text)


if __name__ == "__main__":
    main()
