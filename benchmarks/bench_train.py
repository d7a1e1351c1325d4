"""Benchmark: training throughput on an ML-20M-shaped problem against the machine's own GEMM floor, per precision.

    python benchmarks/bench_train.py [--users 116677] [--items 20108] [--updates 30] [--precision fp32 bf16]
                                     [--out benchmarks/RESULTS_train.md]

Problem: a random binary matrix of ``users x items`` with about 70 positives per user and power-law
(Zipf 1.0) item popularity, held as CSR. Measured in one process:

- the sustained GEMM rate of this machine on the decoder's output-layer shape ``(B, 600) @ (600, I)`` in each
  precision (``--precision``: float32 and bf16 by default), and whether the CPU reports bf16 units;
- the floor: ``users/s = GEMM rate / (3 x forward FLOPs per user)`` (forward + backward of the dense layers;
  the sparse first layer and the softmax are not counted, so the floor is optimistic);
- Multi-VAE training throughput (users/s, seconds per epoch) with and without PIA (lambda_A = 0.1), batch 500,
  and RecVAE encoder-phase throughput, each in each precision (bf16: the forward pass under autocast, as
  ``models.train --precision bf16``; the floor of a bf16 row is the bf16 GEMM rate's);
- full-ranking evaluation of 10,000 held-out users (Recall@20/50, NDCG@100);
- peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from models import precision
from models.batches import make_batch
from models.evaluation import evaluate
from models.pia import alignment_loss
from models.split import HeldOut
from models.trainer import TrainConfig, adam, build_model


def power_law_matrix(n_users: int, n_items: int, per_user: int, seed: int = 0) -> sp.csr_matrix:
    """Binary CSR with about ``per_user`` distinct positives per user and Zipf(1) item popularity.

    Popular items are drawn repeatedly, so draws are rescaled once (measured duplicate rate) to hit the target.
    """
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    draws = float(per_user)
    for _ in range(2):
        rng = np.random.default_rng(seed)
        counts = np.clip(rng.poisson(draws, n_users), 5, n_items)
        cols = rng.choice(n_items, size=int(counts.sum()), p=p)
        rows = np.repeat(np.arange(n_users), counts)
        m = sp.csr_matrix((np.ones(cols.size, np.float32), (rows, cols)), shape=(n_users, n_items))
        m.sum_duplicates()
        draws *= per_user / (m.nnz / n_users)
    m.data[:] = 1.0
    m.indices = m.indices.astype(np.int32)
    return m


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def dense_forward_flops(model: torch.nn.Module) -> float:
    """Forward FLOPs per user of the dense layers (2 x in x out each)."""
    return float(sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)))


def train_throughput(
    model, x: sp.csr_matrix, updates: int, batch: int, pia: float, recvae: bool = False, chosen: str = "fp32"
) -> float:
    params = list(model.encoder_parameters()) if recvae else list(model.parameters())
    anchors = torch.nn.Parameter(torch.randn(x.shape[1], model.latent_dim) * 0.01)
    opt = adam([*params, anchors] if pia else params, 1e-3)
    gen = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(x.shape[0])
    start = None
    for step in range(updates + 2):
        if step == 2:  # two warm-up updates
            start = time.perf_counter()
        rows = x[order[step * batch : (step + 1) * batch]]
        b = make_batch(rows, rho=0.5, generator=gen)
        eps = torch.randn(b.n_rows, model.latent_dim, generator=gen)
        with precision.autocast(chosen, torch.device("cpu")):
            fwd = model.forward_train(b, eps)
        kl_w = model.kl_weights(b, 0.2) if recvae else 0.2
        loss = (fwd.nll.sum() + (kl_w * fwd.kl).sum()) / b.n_rows
        if pia:
            loss = loss + pia * alignment_loss(fwd.mu, fwd.logvar, anchors, b).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return updates * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=116_677)
    parser.add_argument("--items", type=int, default=20_108)
    parser.add_argument("--per-user", type=int, default=70)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS_train.md"))
    args = parser.parse_args()
    t = time.perf_counter()
    x = power_law_matrix(args.users + 10_000, args.items, args.per_user)
    train_x, held = x[: args.users], x[args.users :]
    setup = time.perf_counter() - t
    cpu = torch.device("cpu")
    rates = {p: precision.gemm_rate(DTYPES[p], cpu, (500, 600, args.items)) * 1e9 for p in args.precision}
    rate = rates[args.precision[0]]
    rows = []
    vae = build_model(TrainConfig(model="multvae"), args.items)
    rec = build_model(TrainConfig(model="recvae"), args.items)
    flops = 3 * dense_forward_flops(vae)
    floor = rate / flops
    for chosen in args.precision:
        vae_floor = rates[chosen] / flops
        for label, pia in (("Multi-VAE", 0.0), ("Multi-VAE + PIA", 0.1)):
            ups = train_throughput(vae, train_x, args.updates, 500, pia, chosen=chosen)
            rows.append((label, chosen, ups, args.users / ups, ups / vae_floor))
        rec_floor = rates[chosen] / (3 * dense_forward_flops(rec))
        ups = train_throughput(rec, train_x, args.updates, 500, 0.0, recvae=True, chosen=chosen)
        rows.append(("RecVAE (encoder phase)", chosen, ups, args.users / ups, ups / rec_floor))
    # Evaluation: 10,000 held-out users, 80/20 fold-in / targets.
    rng = np.random.default_rng(1)
    coo = held.tocoo()
    is_target = rng.random(coo.nnz) < 0.2

    def part(mask):
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=held.shape)

    heldout = HeldOut(part(~is_target), part(is_target), np.arange(held.shape[0]))
    t = time.perf_counter()
    ev = evaluate(vae.score, heldout, batch_size=1000)
    eval_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pia_overhead = rows[0][2] / rows[1][2] - 1.0
    found = sorted(precision.cpu_flags() & set(precision.BF16_CPU_FLAGS))
    units = f"reports {', '.join(found)}" if found else f"reports none of {', '.join(precision.BF16_CPU_FLAGS)}"
    per_precision = len(rows) // len(args.precision)  # the same models in each precision, in order
    speedups = []
    if args.precision[:2] == ["fp32", "bf16"]:
        pairs = zip(rows[:per_precision], rows[per_precision : 2 * per_precision], strict=True)
        speedups = [f"{f[0]}: bf16 {b[2] / f[2]:.2f}x the float32 users/s" for f, b in pairs]
    lines = [
        "# Training benchmark",
        "",
        "Command: `python benchmarks/bench_train.py "
        f"--users {args.users} --items {args.items} --updates {args.updates} --precision {' '.join(args.precision)}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads. Problem: {args.users:,} training users x {args.items:,} items, "
        f"{train_x.nnz / args.users:.1f} positives per user (power-law popularity); built in {setup:.1f} s.",
        "",
        f"CPU: {precision.cpu_model() or platform.machine()}; it {units} (bf16 matrix units).",
        "",
        "Sustained GEMM rate (500x600 @ 600x"
        f"{args.items}): "
        + "; ".join(f"{p} **{r / 1e9:.1f} GFLOP/s**" for p, r in rates.items())
        + f". Multi-VAE dense forward: {flops / 3 / 1e6:.1f} MFLOP per user, so the {args.precision[0]} floor "
        f"(3 x forward at the GEMM rate) is **{floor:,.0f} users/s**.",
        "",
        "| model | precision | users/s | s/epoch | share of that precision's GEMM floor |",
        "|---|---|---:|---:|---:|",
        *[f"| {label} | {p} | {u:,.0f} | {s:,.1f} | {share:.0%} |" for label, p, u, s, share in rows],
        "",
        *([f"Speed-up of bf16: {'; '.join(speedups)}."] if speedups else []),
        f"PIA overhead (Multi-VAE, {args.precision[0]}): {pia_overhead:+.1%} time per user.",
        f"Full-ranking evaluation of {heldout.n_users:,} held-out users (batch 1000): {eval_s:.1f} s "
        f"(NDCG@100 {ev.summary()['ndcg@100']['mean']:.4f} after the benchmark's updates: popularity is learnt first).",
        f"Peak RSS: {rss:,.0f} MB.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
