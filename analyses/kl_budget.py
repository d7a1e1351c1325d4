"""beta versus masking: the KL budget, the pairwise latent distance it allows, and the ranking quality it buys.

Usage::

    python -m analyses.kl_budget                                   # ML-1M, beta caps 0 0.2 0.5 1 x rho 1 0.5
    python -m analyses.kl_budget --quick                           # synthetic data, tiny models: about a minute
    python -m analyses.kl_budget --betas 0.1 0.2 --rhos 0.3 0.5 0.8 --dataset synthetic

PAPER.md section 5: for independent users and masks,

    E_{u,v,b} W1(q(.|x_u ⊙ b_u), q(.|x_v ⊙ b_v))  <=  2 sqrt(2C) sqrt( E_{x,b} KL(q(.|x ⊙ b) || p) ),
    E_{x,b} KL(q(.|x ⊙ b) || p)  =  I_q(X_h; Z) + KL(q_h || p),

so the KL budget caps how far apart users can sit on average (C = 1 for the prior N(0, I)). Two levers move
it: the KL weight beta (its cap ``--betas``) and the keep probability rho of the input mask (``--rhos``).
For every (beta cap, rho) of the grid a Multi-VAE is taken from the run cache
(:func:`analyses.trained.get_trained`, options of :mod:`analyses.model_options`; trained once, reused by every
job) and the training users (all of them by default; ``--users U`` for a random sample of U, the same for every
setting) are encoded as the model sees them in training: with rho < 1 under
``--mask-draws`` independent mask draws each (:func:`models.batches.make_batch`, the trainer's masking), with
rho = 1 once. On the K = draws x users posteriors:

* mean KL, I_q(X_h; Z) (<= log K), I(X; Z) (mask draws of a user pooled, <= log users) and KL(q_h || p), with
  95% user-clustered intervals (a user's mask draws and samples averaged first), from
  :func:`geometry.kl.kl_budget` (exact log-sum-exp over all K components, no minibatch bias, centred where the
  expanded form loses digits); the additivity gap mean KL - (I + KL(q_h || p)) is zero up to Monte Carlo error;
* **saturation**: the plug-in I_q is at most log K. When it sits within 5% of log K
  (:data:`geometry.kl.SATURATION_FRACTION`) the split of the mean KL into I and KL(q_h || p) reflects the
  sample size, not the model: the row is flagged (``saturated``, ``saturation``: "not identifiable at this
  sample size: Î = log K - x"), the message is printed, and the intervals of I and KL(q_h || p) are written as
  null instead of a zero-width interval;
* **against the sample size**: I_q, I(X; Z) and KL(q_h || p) recomputed on the first ``--vs-draws`` mask draws
  and on nested random subsamples of ``--vs-users`` fractions of the users (``sample_size.csv``, JSON key
  ``against_sample``), so one sees whether they move with M and N for the same model;
* the mean over all pairs of the K posteriors of the W1 sandwich ``||Δmu|| <= W1 <= W2``
  (:func:`geometry.wasserstein.pairwise_w1_bounds`) against the bound ``2 sqrt(2 E KL)``, and the per-pair
  transport bound checked on every pair (:func:`geometry.bounds.transport_bound_check`; violations must be 0);
* active units: latent dimensions whose posterior mean varies across users (variance > 0.01, Burda et al.
  2016), the symptom of posterior collapse at large beta;
* validation NDCG@100 of the model: the best epoch's value from the run's ``metrics.jsonl`` (the epoch whose
  weights are used), with the beta in force at that epoch (``beta_at_best``: below the cap when the best
  epoch comes before the end of the annealing).

Cost: the KL budget, the all-pairs W1 bounds and the transport check each grow as K^2. On ML-1M with all
4,834 training users x 5 draws (K = 24,170, d = 200) the KL budget of one rho < 1 setting takes about 20-60 s
on 2 shared cores (measured on synthetic posteriors of that size), the pair checks about a minute
(benchmarks/RESULTS_geometry.md, scaled by K^2), the sample-size grid about 0.6 x the KL budget: a few minutes
per setting, so the default is all users; ``--users`` subsamples when that is too slow.

Outputs (folder printed at the end, default
``out/kl_budget/DATASET-betasB-rhosR[-quick]-HASH``): ``budget.csv`` (one row
per setting), ``sample_size.csv`` (one row per setting, number of draws and of users), ``summary.json``
(arguments, runs, table, against_sample, column notes, timing) and the figures ``kl_tradeoff`` (NDCG@100
against mean KL; mean pairwise W1 against its bound) and ``kl_decomposition``
(mean KL = I + KL(q_h || p) per setting), PNG and PDF.

Reference: Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026,
section 2 (beta-KL versus masking); Hoffman & Johnson (2016), "ELBO surgery".
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analyses.common import (
    JobError,
    add_job_arguments,
    binary,
    check_float,
    check_int,
    default_out_dir,
    format_table,
    job_parser,
    option_sizes,
    parsed_arguments,
    print_done,
    result_options,
    run_main,
    save_result,
    stage_output,
    write_csv,
)
from analyses.encoding import encode_posteriors
from analyses.model_options import (
    add_model_arguments,
    add_run_argument,
    job_model,
    load_model_split,
    model_config,
    run_config,
    validate_model_options,
)
from analyses.trained import run_record
from figures.geometry import kl_decomposition_figure, kl_tradeoff_figure
from figures.style import savefig
from geometry.bounds import expected_pairwise_bound, transport_bound_check
from geometry.kl import KLBudget, kl_budget
from geometry.masking import validate_rho
from geometry.wasserstein import pairwise_w1_bounds
from models.cli import end_process
from models.lazy import lazy_import

pd = lazy_import("pandas")
torch = lazy_import("torch")

JOB = "kl_budget"
DEFAULTS = {
    "betas": [0.0, 0.2, 0.5, 1.0],
    "rhos": [1.0, 0.5],
    "users": None,  # all training users
    "mask_draws": 5,
    "samples": 1,
    "vs_draws": [1, 2],
    "vs_users": [0.25, 0.5],
}
QUICK = {
    "betas": [0.0, 0.2, 1.0],
    "rhos": [1.0, 0.5],
    "users": 300,
    "mask_draws": 3,
    "samples": 2,
    "vs_draws": [1, 2],
    "vs_users": [0.25, 0.5],
}
SPLIT_NAMES = ("mean_kl", "mutual_information", "mutual_information_users", "kl_aggregate", "additivity_gap")
"""The quantities of :class:`geometry.kl.KLBudget` written with their standard error and 95% interval."""
ACTIVE_UNIT_THRESHOLD = 0.01

COLUMN_NOTES = {
    "beta_cap": "cap of the KL weight beta (reached after anneal_epochs)",
    "rho": "keep probability of the training mask (1 = clean input)",
    "draws": "mask draws per user (1 when rho = 1)",
    "components": "K = draws x users posteriors (mixture components of q_h)",
    "best_epoch": "epoch of the weights used (best validation NDCG@100)",
    "beta_at_best": "beta in force at the best epoch",
    "val_ndcg@100": "validation NDCG@100 at the best epoch (metrics.jsonl of the run)",
    "mean_kl": "mean KL(q(z|x ⊙ b) || N(0, I)) over the K posteriors (analytic)",
    "mutual_information": "I_q(X_h; Z), direct estimate (<= log K)",
    "mutual_information_users": "I(X; Z): the mask draws of each user pooled (<= log users)",
    "kl_aggregate": "KL(q_h || p), q_h the mixture of the K posteriors",
    "mutual_information_identity": "mean_kl - kl_aggregate (the identity's estimate of I)",
    "additivity_gap": "mean_kl - (mutual_information + kl_aggregate): zero up to Monte Carlo error",
    "*_low, *_high": "95% normal intervals, user-clustered (a user's draws and samples averaged first); null for "
    "I and KL(q_h || p) when saturated",
    "*_mc_se": "Monte Carlo standard error for the fixed posteriors of the sample",
    "mi_gap_to_ceiling": "log K - mutual_information (>= 0)",
    "saturated": "mi_gap_to_ceiling <= 5% of log K: the split of mean_kl into I and KL(q_h || p) is not "
    "identifiable at this sample size",
    "saturated_users": "the same rule for mutual_information_users against log users",
    "saturation": "the message 'not identifiable at this sample size: Î = log K - x' when saturated, else null",
    "log_components": "log K, the ceiling of mutual_information",
    "mean_w1_lower": "mean ||mu_i - mu_j|| over all pairs of the K posteriors (lower end of mean W1)",
    "mean_w1_upper": "mean W2(q_i, q_j) over all pairs (upper end of mean W1)",
    "expected_bound": "2 sqrt(2 mean_kl), the bound on the mean pairwise W1",
    "bound_holds": "mean_w1_upper <= expected_bound (must be true)",
    "transport_violations": "pairs with W2 > sqrt(2 KL_i) + sqrt(2 KL_j) (must be 0)",
    "active_units": f"latent dimensions whose mean varies across users (variance > {ACTIVE_UNIT_THRESHOLD})",
}


def _beta_caps(values: list[float]) -> list[float]:
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"--betas values must be finite KL weights >= 0, got {v}")
    return sorted({float(v) for v in values})


def build_parser() -> argparse.ArgumentParser:
    """The job's command line (one-line errors, exit code 2)."""
    parser = job_parser(
        JOB,
        "Sweep the KL weight cap beta and the mask keep probability rho: mean KL, I(X_h; Z), KL(q_h || p), mean "
        "pairwise W1 against 2 sqrt(2 E KL), and validation NDCG@100 per setting.",
        note="Each setting trains one Multi-VAE once (cached for every later run and job).",
    )
    parser.add_argument("--betas", type=float, nargs="+", help="beta caps, >= 0 (default 0 0.2 0.5 1; --quick 0 0.2 1)")
    parser.add_argument("--rhos", type=float, nargs="+", help="keep probabilities in (0, 1] (default 1 0.5)")
    parser.add_argument("--users", type=int, help="training users encoded per setting (default all; --quick 300)")
    parser.add_argument("--mask-draws", type=int, help=f"mask draws per user when rho < 1 ({DEFAULTS['mask_draws']})")
    parser.add_argument("--samples", type=int, help="samples per posterior for the KL(q_h || p) estimate (1)")
    parser.add_argument(
        "--vs-draws",
        type=int,
        nargs="+",
        help="numbers of mask draws (<= --mask-draws) at which I and KL(q_h || p) are recomputed (default 1 2)",
    )
    parser.add_argument(
        "--vs-users",
        type=float,
        nargs="+",
        help="fractions in (0, 1) of the users at which I and KL(q_h || p) are recomputed (default 0.25 0.5)",
    )
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-betasB-rhosR[-quick]-HASH",
        seed="seed of the user sample, masks and samples",
        quick="synthetic data, tiny models, few users",
    )
    add_model_arguments(parser, architecture=True)
    add_run_argument(parser, fixed=("betas", "rhos"))
    return parser


def _resolve(args: argparse.Namespace) -> dict:
    sizes = option_sizes(args, DEFAULTS, QUICK, {"users": 2, "mask_draws": 1, "samples": 1})
    for m in sizes["vs_draws"]:
        check_int("--vs-draws", m, 1, sizes["mask_draws"], why=" (at most --mask-draws)")
    for f in sizes["vs_users"]:
        check_float("--vs-users", f, low=0.0, high=1.0, low_open=True, high_open=True)
    sizes["vs_draws"] = sorted({int(m) for m in sizes["vs_draws"]})
    sizes["vs_users"] = sorted({float(f) for f in sizes["vs_users"]})
    sizes["betas"] = _beta_caps(sizes["betas"])
    try:
        sizes["rhos"] = sorted({validate_rho(r) for r in sizes["rhos"]}, reverse=True)
    except ValueError as exc:
        raise ValueError(f"--rhos: {exc}") from None
    return sizes


def sample_users(n: int, users: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the encoded training users: all ``n`` when ``users`` is None, else a random sample."""
    if users is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=users, replace=False))


def budget_columns(budget: KLBudget) -> dict:
    """The table columns of one :class:`geometry.kl.KLBudget`: estimates, standard errors and 95% intervals.

    When the budget is ``saturated`` (:data:`geometry.kl.SATURATION_FRACTION`) the intervals of I(X_h; Z),
    KL(q_h || p) and the identity estimate are NaN (null in JSON) and ``saturation`` holds the message; when
    ``saturated_users``, so is the interval of I(X; Z).
    """
    row: dict = {}
    for name in SPLIT_NAMES:
        low, high = budget.ci(name)
        row.update({name: getattr(budget, name), f"{name}_se": getattr(budget, f"{name}_se")})
        row.update({f"{name}_low": low, f"{name}_high": high})
        if name != "mean_kl":
            row[f"{name}_mc_se"] = getattr(budget, f"{name}_mc_se")
    hidden = (["mutual_information", "kl_aggregate"] if budget.saturated else []) + (
        ["mutual_information_users"] if budget.saturated_users else []
    )
    for name in hidden:
        row[f"{name}_low"] = row[f"{name}_high"] = float("nan")
    row.update(
        {
            "mutual_information_identity": budget.mutual_information_identity,
            "log_components": budget.log_n_components,
            "log_users": math.log(budget.n_users),
            "mi_gap_to_ceiling": budget.mi_gap_to_ceiling,
            "mi_users_gap_to_ceiling": budget.mi_users_gap_to_ceiling,
            "saturated": budget.saturated,
            "saturated_users": budget.saturated_users,
            "saturation": budget.saturation_message,
        }
    )
    return row


def encode_setting(
    model: torch.nn.Module, X_users, *, rho: float, mode: str, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (M, N, d) of ``X_users`` as the model sees them in training (M = 1 when rho = 1)."""
    draws = draws if rho < 1.0 else 1
    gen = torch.Generator().manual_seed(seed)
    return encode_posteriors(model, X_users, rho=rho, mode=mode, draws=draws, generator=gen)


def measure_posteriors(mu: np.ndarray, logvar: np.ndarray, *, samples: int, seed: int) -> tuple[dict, KLBudget]:
    """KL budget, mean pairwise W1 bounds, transport check and active units of posteriors (M, N, d)."""
    budget = kl_budget(mu, logvar, n_samples_per_user=samples, rng=np.random.default_rng(seed))
    d = mu.shape[-1]
    flat_mu, flat_lv = mu.reshape(-1, d), logvar.reshape(-1, d)
    pairs = pairwise_w1_bounds(flat_mu, np.exp(0.5 * flat_lv), quantiles=(0.5,), rng=seed)
    check = transport_bound_check(flat_mu, flat_lv)
    bound = expected_pairwise_bound(budget.mean_kl)
    row = {
        "draws": mu.shape[0],
        "users": mu.shape[1],
        "components": mu.shape[0] * mu.shape[1],
        **budget_columns(budget),
    }
    row.update(
        {
            "mean_w1_lower": pairs.mean_lower,
            "mean_w1_upper": pairs.mean_upper,
            "median_w1_upper": float(pairs.quantiles_upper[0]),
            "expected_bound": bound,
            "mean_pair_bound": check.mean_pair_bound,
            "bound_holds": bool(pairs.mean_upper <= bound * (1 + 1e-9)),
            "transport_pairs": check.n_pairs,
            "transport_violations": check.n_violations,
            "min_relative_slack": check.min_relative_slack,
            # activity of each latent dimension: variance across users of the (mask-averaged) mean
            "active_units": int((mu.mean(axis=0).var(axis=0) > ACTIVE_UNIT_THRESHOLD).sum()),
            "latent_dim": d,
        }
    )
    return row, budget


def measure_setting(
    model: torch.nn.Module,
    X_users,
    *,
    rho: float,
    mode: str,
    draws: int,
    samples: int,
    seed: int,
) -> dict:
    """KL budget, mean pairwise W1 bounds, transport check and active units of one trained model.

    ``X_users`` are the binary rows of the sampled users; rho < 1 encodes them under ``draws`` mask draws.
    """
    mu, logvar = encode_setting(model, X_users, rho=rho, mode=mode, draws=draws, seed=seed)
    return measure_posteriors(mu, logvar, samples=samples, seed=seed)[0]


def against_sample(
    mu: np.ndarray,
    logvar: np.ndarray,
    full: KLBudget,
    *,
    draws: Sequence[int],
    user_fractions: Sequence[float],
    samples: int,
    seed: int,
) -> list[dict]:
    """I_q(X_h; Z), I(X; Z) and KL(q_h || p) on the first m mask draws and nested user subsamples.

    For every m in ``draws`` (those <= M; M itself always) and every fraction f in ``user_fractions`` (and 1),
    the posteriors ``mu[:m, perm[:round(f N)]]`` with one random permutation ``perm`` of the N users (so the
    subsamples are nested). The full (M, N) row is ``full`` itself. For an unchanged model, an estimate that
    moves with m or N reflects the sample, not the model (see :attr:`geometry.kl.KLBudget.saturated`).
    """
    m_all, n_all = mu.shape[:2]
    perm = np.random.default_rng(seed).permutation(n_all)
    counts = sorted({max(2, round(f * n_all)) for f in user_fractions if f < 1} | {n_all})
    rows = []
    for m in sorted({m for m in draws if m <= m_all} | {m_all}):
        for n in counts:
            if (m, n) == (m_all, n_all):
                budget = full
            else:
                idx = np.sort(perm[:n])
                budget = kl_budget(
                    mu[:m, idx], logvar[:m, idx], n_samples_per_user=samples, rng=np.random.default_rng(seed)
                )
            cols = budget_columns(budget)
            rows.append(
                {
                    "draws": m,
                    "users": n,
                    "components": m * n,
                    **{key: cols[key] for key in ("log_components", "mean_kl", "mean_kl_se")},
                    **{
                        f"{name}{suffix}": cols[f"{name}{suffix}"]
                        for name in ("mutual_information", "mutual_information_users", "kl_aggregate")
                        for suffix in ("", "_se", "_low", "_high")
                    },
                    **{key: cols[key] for key in ("mi_gap_to_ceiling", "saturated", "saturated_users", "saturation")},
                }
            )
    return rows


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    timing: dict[str, float] = {"train": 0.0, "measure": 0.0}
    sizes = _resolve(args)
    progress = not args.no_progress
    dataset = validate_model_options(args)
    if (own := run_config(args)) is not None:  # the run's one model: its beta cap and keep probability
        sizes["betas"], sizes["rhos"] = [own.beta_cap], [own.rho]
    configs = {
        (beta, rho): model_config(args, rho=rho, beta_cap=beta) for rho in sizes["rhos"] for beta in sizes["betas"]
    }
    tag = "betas" + "-".join(f"{b:g}" for b in sizes["betas"]) + "-rhos" + "-".join(f"{r:g}" for r in sizes["rhos"])
    options = result_options(args, dataset=dataset, **sizes)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)

    split = load_model_split(args)
    X = binary(split.train)
    n = X.shape[0]
    if sizes["users"] is not None and sizes["users"] > n:
        raise JobError(f"--users {sizes['users']} exceeds the {n} training users of {dataset}")
    users = sample_users(n, sizes["users"], args.seed)
    X_users = X[users]
    timing["load"] = time.perf_counter() - start

    rows, grid = [], []
    for i, ((beta, rho), config) in enumerate(configs.items()):
        if progress:
            print(f"[{i + 1}/{len(configs)}] beta cap {beta:g}, rho {rho:g}", file=sys.stderr)
        t = time.perf_counter()
        trained = job_model(args, config, split, progress)
        record = run_record(trained)
        timing["train"] += time.perf_counter() - t
        t = time.perf_counter()
        # float64 posteriors: the KL budget subtracts log-densities of nearly equal size
        mu, logvar = encode_setting(
            trained.model.double(),
            X_users,
            rho=rho,
            mode=config.mask_mode,
            draws=sizes["mask_draws"],
            seed=args.seed + 1,
        )
        measured, budget = measure_posteriors(mu, logvar, samples=sizes["samples"], seed=args.seed + 1)
        timing["measure"] += time.perf_counter() - t
        t = time.perf_counter()
        for g in against_sample(
            mu,
            logvar,
            budget,
            draws=sizes["vs_draws"],
            user_fractions=sizes["vs_users"],
            samples=sizes["samples"],
            seed=args.seed + 1,
        ):
            grid.append({"beta_cap": beta, "rho": rho, **g})
        timing["against_sample"] = timing.get("against_sample", 0.0) + time.perf_counter() - t
        rows.append(
            {
                "beta_cap": beta,
                "rho": rho,
                "best_epoch": record["best_epoch"],
                "beta_at_best": record["beta_at_best"],
                "val_ndcg@100": record["val_ndcg@100"],
                **measured,
                "run": record["run"],
            }
        )
    table = pd.DataFrame(rows)
    sample_table = pd.DataFrame(grid)

    t = time.perf_counter()
    figures = savefig(kl_tradeoff_figure(table), out, "kl_tradeoff")
    figures += savefig(kl_decomposition_figure(table), out, "kl_decomposition")
    timing["figures"] = time.perf_counter() - t
    files = [write_csv(out / "budget.csv", table), write_csv(out / "sample_size.csv", sample_table)]
    timing["total"] = time.perf_counter() - start
    first = next(iter(configs.values()))
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {**sizes, "dataset": dataset},
        "dataset": {
            "name": dataset,
            "train_users": n,
            "items": int(X.shape[1]),
            "interactions": int(X.nnz),
            "split_cache": split.report.get("cache"),
        },
        "model": {
            "architecture": f"Multi-VAE hidden {first.hidden}, latent {first.latent_dim}",
            "epochs": first.epochs,
            "anneal_epochs": first.anneal_epochs,
            "batch_size": first.batch_size,
            "mask_mode": first.mask_mode,
            "train_seed": first.seed,
        },
        "columns": COLUMN_NOTES,
        "table": table.to_dict(orient="records"),
        "against_sample": sample_table.to_dict(orient="records"),
        "notes": [
            "pairs are all pairs of the K posteriors (users x mask draws), so a user's own mask draws pair too; "
            "the bound holds for every pair",
            "intervals are user-clustered (a user's mask draws and samples averaged first, then the standard "
            "error over users); *_mc_se columns give the Monte Carlo error for the fixed posteriors",
            "saturated: I(X_h; Z) within 5% of its ceiling log K; the split of mean KL into I and KL(q_h || p) is "
            "then not identifiable at this sample size and its intervals are null (against_sample shows how both "
            "move with the numbers of mask draws and users)",
        ],
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)
    _print_summary(table, sample_table, dataset, n, X.shape[1], first, sizes)
    print_done(out, result, timing)
    return out


def _print_summary(
    table: pd.DataFrame, sample_table: pd.DataFrame, dataset: str, n: int, items: int, config, sizes: dict
) -> None:
    users = "all" if sizes["users"] is None else f"{sizes['users']:,}"
    print(
        f"KL budget on {dataset}: {n:,} training users, {items:,} items; Multi-VAE hidden {config.hidden}, latent "
        f"{config.latent_dim}, {config.epochs} epochs (beta reaches its cap after {config.anneal_epochs}); "
        f"{users} users x {sizes['mask_draws']} mask draws when rho < 1"
    )
    formats = {
        "beta_cap": "g",
        "rho": "g",
        "beta_at_best": ".3g",
        "val_ndcg@100": ".4f",
        "mean_kl": ".3f",
        "mutual_information": ".3f",
        "kl_aggregate": ".3f",
        "additivity_gap": ".3f",
        "mean_w1_lower": ".3f",
        "mean_w1_upper": ".3f",
        "expected_bound": ".3f",
        "transport_violations": "d",
        "active_units": "d",
    }
    headers = {
        "beta_cap": "β cap",
        "rho": "ρ",
        "beta_at_best": "β@best",
        "val_ndcg@100": "NDCG@100",
        "mean_kl": "E KL",
        "mutual_information": "I(X_h;Z)",
        "kl_aggregate": "KL(q_h||p)",
        "additivity_gap": "gap",
        "mean_w1_lower": "E|Δμ|",
        "mean_w1_upper": "E W2",
        "expected_bound": "2√(2E KL)",
        "transport_violations": "T-viol",
        "active_units": "AU",
    }
    print(format_table(table, formats, headers))
    print(
        "  E KL = I(X_h;Z) + KL(q_h||p) up to the Monte Carlo gap; mean pairwise W1 lies in [E|Δμ|, E W2] and must\n"
        "  stay under 2√(2 E KL); T-viol: pairs above the per-pair transport bound (must be 0); AU: active latent\n"
        "  dimensions; NDCG@100 on validation users at the best epoch (β@best: beta in force there)"
    )
    for r in table.itertuples():
        if r.saturated:
            print(f"  β cap {r.beta_cap:g}, ρ {r.rho:g} (K = {r.components:,}): I(X_h;Z) {r.saturation}")
    print("Against the sample size (first m mask draws, nested user subsamples; same models):")
    print(
        format_table(
            sample_table,
            {
                "beta_cap": "g",
                "rho": "g",
                "draws": "d",
                "users": "d",
                "log_components": ".3f",
                "mutual_information": ".3f",
                "mi_gap_to_ceiling": ".3g",
                "kl_aggregate": ".3f",
                "mutual_information_users": ".3f",
                "saturated": "",
            },
            {
                "beta_cap": "β cap",
                "rho": "ρ",
                "draws": "M",
                "users": "N",
                "log_components": "log K",
                "mutual_information": "I(X_h;Z)",
                "mi_gap_to_ceiling": "log K - I",
                "kl_aggregate": "KL(q_h||p)",
                "mutual_information_users": "I(X;Z)",
                "saturated": "saturated",
            },
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
