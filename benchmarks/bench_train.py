"""Benchmark: training throughput on an ML-20M-shaped problem against the machine's own GEMM floor.

    python benchmarks/bench_train.py [--users 116677] [--items 20108] [--updates 30] [--out benchmarks/RESULTS_train.md]

Problem: a random binary matrix of ``users x items`` with about 70 positives per user and power-law
(Zipf 1.0) item popularity, held as CSR. Measured in one process:

- the sustained float32 GEMM rate of this machine on the decoder's output-layer shape ``(B, 600) @ (600, I)``;
- the floor: ``users/s = GEMM rate / (3 x forward FLOPs per user)`` (forward + backward of the dense layers;
  the sparse first layer and the softmax are not counted, so the floor is optimistic);
- Multi-VAE training throughput (users/s, seconds per epoch) with and without PIA (lambda_A = 0.1), batch 500;
- RecVAE encoder-phase throughput;
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


def gemm_rate(batch: int, hidden: int, n_items: int, reps: int = 10) -> float:
    a = torch.randn(batch, hidden)
    b = torch.randn(hidden, n_items)
    a @ b  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * batch * hidden * n_items * reps / (time.perf_counter() - t)


def dense_forward_flops(model: torch.nn.Module) -> float:
    """Forward FLOPs per user of the dense layers (2 x in x out each)."""
    return float(sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)))


def train_throughput(model, x: sp.csr_matrix, updates: int, batch: int, pia: float, recvae: bool = False) -> float:
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
        fwd = model.forward_train(b, torch.randn(b.n_rows, model.latent_dim, generator=gen))
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
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS_train.md"))
    args = parser.parse_args()
    t = time.perf_counter()
    x = power_law_matrix(args.users + 10_000, args.items, args.per_user)
    train_x, held = x[: args.users], x[args.users :]
    setup = time.perf_counter() - t
    rate = gemm_rate(500, 600, args.items)
    rows = []
    vae = build_model(TrainConfig(model="multvae"), args.items)
    flops = 3 * dense_forward_flops(vae)
    floor = rate / flops
    for label, pia in (("Multi-VAE", 0.0), ("Multi-VAE + PIA", 0.1)):
        ups = train_throughput(vae, train_x, args.updates, 500, pia)
        rows.append((label, ups, args.users / ups, ups / floor))
    rec = build_model(TrainConfig(model="recvae"), args.items)
    rec_floor = rate / (3 * dense_forward_flops(rec))
    ups = train_throughput(rec, train_x, args.updates, 500, 0.0, recvae=True)
    rows.append(("RecVAE (encoder phase)", ups, args.users / ups, ups / rec_floor))
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
    pia_overhead = rows[0][1] / rows[1][1] - 1.0
    lines = [
        "# Training benchmark",
        "",
        "Command: `python benchmarks/bench_train.py "
        f"--users {args.users} --items {args.items} --updates {args.updates}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads. Problem: {args.users:,} training users x {args.items:,} items, "
        f"{train_x.nnz / args.users:.1f} positives per user (power-law popularity); built in {setup:.1f} s.",
        "",
        f"Sustained float32 GEMM rate (500x600 @ 600x{args.items}): **{rate / 1e9:.1f} GFLOP/s**. "
        f"Multi-VAE dense forward: {flops / 3 / 1e6:.1f} MFLOP per user, so the floor (3 x forward at the GEMM rate) "
        f"is **{floor:,.0f} users/s**.",
        "",
        "| model | users/s | s/epoch | share of GEMM floor |",
        "|---|---:|---:|---:|",
        *[f"| {label} | {u:,.0f} | {s:,.1f} | {share:.0%} |" for label, u, s, share in rows],
        "",
        f"PIA overhead (Multi-VAE): {pia_overhead:+.1%} time per user.",
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
