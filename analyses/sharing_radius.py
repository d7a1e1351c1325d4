"""Result 1: the latent sharing radius. One SGD step on user v, measured change of user u's loss, against W1.

Usage::

    python -m analyses.sharing_radius                       # ML-1M, clean Multi-VAE (trained once, cached)
    python -m analyses.sharing_radius --quick               # synthetic data, tiny model: seconds
    python -m analyses.sharing_radius --eta 1e-4 --w1 upper --anchors 500   # a given step size, checked

Theorem 2.3 (PAPER.md section 2): a step ``theta+ = theta - eta g_v`` on v's loss changes u's loss by

    L_u(theta+) - L_u(theta) = -eta <g_u, g_v> + O(eta^2)  <=  -eta ||g_u|| (||g_u|| - D_uv) + O(eta^2),
    D_uv = L_thz W1(q_u, q_v) + Delta_x(u, v),

so v helps u (to first order) while ``W1(q_u, q_v) < r_share(u, v) = [||g_u|| - Delta_x]_+ / L_thz``.

Measured here on a Multi-VAE from the run cache (:func:`analyses.trained.get_trained`, options of
:mod:`analyses.model_options`; by default the clean model of :mod:`analyses.local_vs_global`): ``theta`` are
the decoder's parameters and ``L_u(theta) = -sum_i x_ui log softmax(f_theta(mu_u))_i``, u's reconstruction
loss as a **deterministic** function of theta with ``z = mu_u`` fixed (the clean-input posterior mean,
computed once; the KL term does not depend on the decoder). The model runs in float64 so that the measured
change, a difference of two losses, is not drowned in rounding (``geometry.sharing`` docs). For ``--anchors``
users u, two partners each:

* ``latent-near``: v uniform among u's ``--k`` nearest users in latent space (Euclidean on mu), so that small
  W1 is represented;
* ``random``: v uniform among all other training users.

For every pair (:func:`geometry.sharing.sharing_effects`): the first-order prediction ``-eta <g_u, g_v>``,
the measured change after one real step on v, gradient norms and cosine, and the normalised gain
``-(measured) / (eta ||g_u||)``. Then:

* ``r_share``: where the least-squares line of gain against W1 crosses zero, and the crossing of the binned
  mean gain (:func:`geometry.sharing.estimate_sharing_radius`; an empirical population-level estimate, see
  its assumptions). **Reported only when** the 95% bootstrap interval of the slope lies below 0 and that of the
  intercept above 0 (``geometry.sharing.RADIUS_RULE``, recorded as ``radius.rule``); otherwise ``r_share`` is
  none with the reason (``radius.reason``). The bootstrap resamples **anchors**, keeping both pairs of a drawn
  anchor, since the two pairs of u share ``||g_u||`` and u's latent neighbourhood. W1 is taken at the
  ``--w1`` end of the closed form sandwich ``||mu_u - mu_v|| <= W1 <= W2`` (default ``lower``: with
  ``z = mu`` the losses see the means only; ``upper``: W2);
* the share of pairs where v's step helps u (measured change < 0) in quantile bins of W1, with 95% Wilson
  intervals, next to the share the first-order prediction gives;
* sign agreement of measured and predicted changes (:func:`geometry.sharing.sign_agreement`);
* the first-order regime: the gain is a first-order quantity only while the second-order remainder
  ``measured - predicted`` is small. ``--eta auto`` (default) takes the largest step size of
  ``geometry.sharing.ETA_GRID`` (1e-3, 1e-4, 1e-5, 1e-6; the gradients are computed once) with
  ``median |remainder| < 0.05 median |predicted|`` (:func:`geometry.sharing.first_order_check`), or the
  smallest with a warning when none does; a given ``--eta`` is checked against the same criterion and a
  warning printed when it fails. ``first_order`` in the JSON records the step size, the ratio, whether the
  criterion held, and the ratio of every step size tried.

Outputs (folder printed at the end, default
``out/sharing_radius/DATASET-betaB[-rhoR]-etaE[-quick]-HASH``): ``pairs.csv`` (one row
per pair), ``bins.csv`` (W1 bins), ``summary.json`` (arguments, model run, radius with interval, line fit,
sign agreement, timing) and the figure ``sharing_radius`` (PNG and PDF).

Reference: Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026,
Theorem 2.3.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analyses.common import (
    JobError,
    add_job_arguments,
    binary,
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
    validate_model_options,
)
from analyses.trained import run_record
from figures.geometry import sharing_radius_figure
from figures.style import savefig
from geometry.masking import wilson_interval
from geometry.neighbourhoods import knn
from geometry.sharing import (
    ETA_GRID,
    FIRST_ORDER_TOL,
    FirstOrderCheck,
    SharingEffects,
    estimate_sharing_radius,
    first_order_check,
    pair_w1_bounds,
    select_eta,
    sharing_effects_grid,
    sign_agreement,
)
from models.batches import make_batch
from models.cli import end_process
from models.lazy import lazy_import

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")

if TYPE_CHECKING:  # nn.Module subclasses: torch loads where the work starts
    from models.vae import MultiVAE

JOB = "sharing_radius"
DEFAULTS = {"anchors": 300, "bins": 8, "boot": 1000}
QUICK = {"anchors": 60, "bins": 6, "boot": 300}
STRATA = ("latent-near", "random")

BIN_NOTES = {
    "w1_low, w1_high": "bin edges (quantiles of W1 over the pairs)",
    "pairs": "pairs in the bin",
    "mean_w1": "mean W1 of the pairs in the bin",
    "mean_gain": "mean normalised gain -(measured change) / (eta ||g_u||)",
    "help_share": "share of pairs where v's step lowers u's loss (measured change < 0)",
    "help_low, help_high": "95% Wilson interval of help_share",
    "predicted_help_share": "share with a negative first-order prediction -eta <g_u, g_v>",
}


def reconstruction_loss(model: MultiVAE, X: sp.csr_matrix, mu: torch.Tensor):
    """``loss_fn(users)``: each user's multinomial reconstruction loss with ``z = mu_u`` fixed.

    Deterministic in the decoder's parameters, and a user's loss does not depend on the other users of the
    call (what :func:`geometry.sharing.sharing_effects` needs).
    """
    from models.vae import multinomial_nll

    def loss_fn(users) -> torch.Tensor:
        rows = np.asarray(users, dtype=np.int64)
        batch = make_batch(X[rows], rho=1.0)
        return multinomial_nll(model.decode(mu[torch.from_numpy(rows)]), batch)

    return loss_fn


def chunked_effects(
    loss_fn, params: list[torch.Tensor], pairs: np.ndarray, eta: float, max_bytes: int
) -> SharingEffects:
    """:func:`geometry.sharing.sharing_effects` on consecutive chunks of pairs whose distinct users' gradients
    fit in ``max_bytes``, concatenated in the order of ``pairs``."""
    return chunked_effects_grid(loss_fn, params, pairs, [eta], max_bytes)[0]


def chunked_effects_grid(
    loss_fn, params: list[torch.Tensor], pairs: np.ndarray, etas: Sequence[float], max_bytes: int
) -> list[SharingEffects]:
    """:func:`geometry.sharing.sharing_effects_grid` (gradients computed once for every step size) on
    consecutive chunks of pairs whose distinct users' gradients fit in ``max_bytes``; one
    :class:`~geometry.sharing.SharingEffects` per step size, concatenated in the order of ``pairs``."""
    n_params = sum(p.numel() for p in params)
    per_user = n_params * torch.finfo(params[0].dtype).bits // 8
    max_users = max_bytes // per_user
    if max_users < 3:
        raise JobError(
            f"one user's gradient needs {per_user / 2**20:.0f} MiB: raise --max-gradient-mb to at least "
            f"{math.ceil(3 * per_user / 2**20)}"
        )
    parts, start = [], 0
    while start < len(pairs):
        # grow the chunk while its distinct users fit (pairs come anchor by anchor: <= 2 new users per pair)
        stop = min(len(pairs), start + max(1, max_users // 2))
        parts.append(sharing_effects_grid(loss_fn, params, pairs[start:stop], etas, max_gradient_bytes=max_bytes))
        start = stop
    fields = ("u", "v", "loss_u", "predicted", "measured", "grad_norm_u", "grad_norm_v", "cosine", "grad_distance")
    out = []
    for k, eta in enumerate(etas):
        joined = {f: np.concatenate([getattr(p[k], f) for p in parts]) for f in (*fields, "loss_resolution")}
        out.append(SharingEffects(eta=float(eta), **joined))
    return out


def eta_option(text: str) -> str | float:
    """``--eta``: ``auto`` or a number (checked for range in :func:`_resolve`, before any work)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a step size > 0, got {text!r}") from None


def _check_record(check: FirstOrderCheck) -> dict:
    return {
        "eta": check.eta,
        "remainder_ratio": check.remainder_ratio,
        "median_relative_remainder": check.median_relative_remainder,
        "holds": check.holds,
    }


def help_bins(w1: np.ndarray, measured: np.ndarray, predicted: np.ndarray, gain: np.ndarray, edges: np.ndarray):
    """Per W1 bin (right-closed interior edges, as ``estimate_sharing_radius``): the help share with its
    Wilson interval, the first-order help share and the mean gain."""
    which = np.clip(np.searchsorted(edges, w1, side="left") - 1, 0, edges.size - 2)
    rows = []
    for b in range(edges.size - 1):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            continue
        helps = int((measured[sel] < 0).sum())
        low, high = wilson_interval(helps, n)
        rows.append(
            {
                "w1_low": edges[b],
                "w1_high": edges[b + 1],
                "pairs": n,
                "mean_w1": float(w1[sel].mean()),
                "mean_gain": float(gain[sel].mean()),
                "help_share": helps / n,
                "help_low": float(low),
                "help_high": float(high),
                "predicted_help_share": float((predicted[sel] < 0).mean()),
            }
        )
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    """The job's command line (one-line errors, exit code 2)."""
    parser = job_parser(
        JOB,
        "Measured change of user u's loss after one SGD step on user v, against W1(q_u, q_v): "
        "the empirical latent sharing radius r_share (Theorem 2.3).",
    )
    parser.add_argument("--anchors", type=int, help=f"users u, two partners each ({DEFAULTS['anchors']})")
    parser.add_argument("--k", type=int, default=10, help="latent neighbourhood of the latent-near partners (10)")
    parser.add_argument(
        "--eta",
        type=eta_option,
        default="auto",
        help="SGD step size on v's loss, or auto (default): the largest of "
        + ", ".join(f"{e:g}" for e in ETA_GRID)
        + f" whose median second-order remainder is under {FIRST_ORDER_TOL:.0%}% of the median first-order "
        "prediction; a given value is checked against the same criterion and flagged when it fails",
    )
    parser.add_argument(
        "--w1",
        choices=("lower", "upper"),
        default="lower",
        help="end of the W1 sandwich to fit against: lower ||Δmu|| (default) or upper W2",
    )
    parser.add_argument("--bins", type=int, help=f"quantile bins of W1 ({DEFAULTS['bins']})")
    parser.add_argument("--boot", type=int, help=f"bootstrap resamples of the radius ({DEFAULTS['boot']})")
    parser.add_argument("--max-gradient-mb", type=int, default=1024, help="memory for per-user gradients (1024)")
    add_job_arguments(
        parser,
        out=f"out/{JOB}/DATASET-betaB-etaE[-quick]-HASH",
        seed="seed of the pairs and the bootstrap",
        quick="synthetic data, tiny model, few pairs: seconds",
    )
    add_model_arguments(parser, rho=1.0, beta_cap=True, architecture=True)
    add_run_argument(parser)
    return parser


def _resolve(args: argparse.Namespace) -> dict:
    sizes = option_sizes(args, DEFAULTS, QUICK, {"anchors": 3, "bins": 1, "boot": 1})
    if args.eta != "auto" and not (math.isfinite(args.eta) and args.eta > 0):
        raise ValueError(f"--eta must be 'auto' or a finite step size > 0, got {args.eta}")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.max_gradient_mb < 1:
        raise ValueError(f"--max-gradient-mb must be >= 1, got {args.max_gradient_mb}")
    return sizes


def run(args: argparse.Namespace) -> Path:
    """Run the job from parsed arguments; returns the output folder. Raises JobError / ValueError."""
    start = time.perf_counter()
    timing: dict[str, float] = {}
    sizes = _resolve(args)
    progress = not args.no_progress
    dataset = validate_model_options(args)
    config = model_config(args, rho=args.rho, beta_cap=args.beta_cap)
    eta_tag = "auto" if args.eta == "auto" else f"{args.eta:g}"
    tag = f"beta{args.beta_cap:g}" + ("" if args.rho == 1 else f"-rho{args.rho:g}") + f"-eta{eta_tag}"
    # --max-gradient-mb only splits the gradient computation into chunks (same numbers, tested)
    options = result_options(args, ignore=("max_gradient_mb",), dataset=dataset, **sizes)
    out = stage_output(args.out or default_out_dir(JOB, dataset, tag, options), JOB, options)
    rng = np.random.default_rng(args.seed)

    split = load_model_split(args)
    X = binary(split.train)
    n = X.shape[0]
    if args.k > n - 1:
        raise JobError(f"--k must be at most {n - 1} (the other training users), got {args.k}")
    timing["load"] = time.perf_counter() - start
    t = time.perf_counter()
    trained = job_model(args, config, split, progress)
    record = run_record(trained)
    model = trained.model.double()  # measured changes are differences of two losses: float64
    timing["model"] = time.perf_counter() - t

    t = time.perf_counter()
    mu, logvar = (a[0] for a in encode_posteriors(model, X))
    anchors = np.sort(rng.choice(n, size=min(sizes["anchors"], n), replace=False)).astype(np.int64)
    neighbours = knn(mu, args.k, "euclidean", queries=anchors).indices
    near = neighbours[np.arange(anchors.size), rng.integers(0, args.k, size=anchors.size)]
    other = rng.integers(0, n - 1, size=anchors.size)
    random = other + (other >= anchors)
    # anchor by anchor, so that consecutive chunks of pairs share users
    pairs = np.stack([np.repeat(anchors, 2), np.stack([near, random], axis=1).ravel()], axis=1)
    stratum = np.tile(np.array(STRATA), anchors.size)
    lower, upper = pair_w1_bounds(mu, logvar, pairs)
    timing["pairs"] = time.perf_counter() - t

    t = time.perf_counter()
    mu_t = torch.from_numpy(mu)
    params = list(model.decoder.parameters())
    auto = args.eta == "auto"
    etas = list(ETA_GRID) if auto else [float(args.eta)]
    candidates = chunked_effects_grid(
        reconstruction_loss(model, X, mu_t), params, pairs, etas, args.max_gradient_mb * 2**20
    )
    grid_checks = [first_order_check(e, FIRST_ORDER_TOL) for e in candidates]
    choice = select_eta(candidates, FIRST_ORDER_TOL)
    effects, check = choice.effects, choice.check
    if not check.holds:
        ratio = "undefined" if check.remainder_ratio is None else f"{check.remainder_ratio:.3g}"
        print(
            f"warning: eta = {check.eta:g} is not in the first-order regime: median |remainder| / median |first "
            f"order| = {ratio}, not under {FIRST_ORDER_TOL:g}"
            + ("" if not auto else f" (no step size of {', '.join(f'{e:g}' for e in ETA_GRID)} is)"),
            file=sys.stderr,
        )
    timing["effects"] = time.perf_counter() - t

    t = time.perf_counter()
    gain = effects.gain
    w1 = lower if args.w1 == "lower" else upper
    ok = np.isfinite(gain)
    if ok.sum() < 3:
        raise JobError("fewer than 3 pairs with a non-zero gradient of u: nothing to fit")
    # each anchor u has two pairs: resample anchors, keeping both pairs (geometry.sharing docs)
    radius = estimate_sharing_radius(
        w1[ok], gain[ok], clusters=pairs[ok, 0], n_bins=sizes["bins"], n_boot=sizes["boot"], rng=args.seed
    )
    sign = sign_agreement(effects.predicted, effects.measured)
    bins = help_bins(w1[ok], effects.measured[ok], effects.predicted[ok], gain[ok], radius.binned.edges)
    resolved = np.abs(effects.measured) > 100 * effects.loss_resolution
    table = pd.DataFrame(
        {
            "stratum": stratum,
            "u": pairs[:, 0],
            "v": pairs[:, 1],
            "u_user": split.train_users[pairs[:, 0]],
            "v_user": split.train_users[pairs[:, 1]],
            "w1_lower": lower,
            "w1_upper": upper,
            "loss_u": effects.loss_u,
            "predicted": effects.predicted,
            "measured": effects.measured,
            "remainder": effects.remainder,
            "gain": gain,
            "predicted_gain": effects.predicted_gain,
            "gain_lower_bound": effects.gain_lower_bound,
            "grad_norm_u": effects.grad_norm_u,
            "grad_norm_v": effects.grad_norm_v,
            "cosine": effects.cosine,
            "grad_distance": effects.grad_distance,
            "helps": effects.measured < 0,
            "loss_resolution": effects.loss_resolution,
        }
    )
    strata = (
        table.groupby("stratum", sort=False)
        .agg(
            pairs=("u", "size"),
            mean_w1_lower=("w1_lower", "mean"),
            mean_w1_upper=("w1_upper", "mean"),
            mean_gain=("gain", "mean"),
            help_share=("helps", "mean"),
            mean_cosine=("cosine", "mean"),
        )
        .reset_index()
    )
    timing["fit"] = time.perf_counter() - t

    t = time.perf_counter()
    figures = savefig(
        sharing_radius_figure(
            w1,
            gain,
            stratum,
            effects.predicted,
            effects.measured,
            bins,
            radius=radius.radius,
            radius_ci=radius.ci,
            intercept=radius.intercept,
            slope=radius.slope,
            w1_label="||μ_u - μ_v|| (W1 lower end)" if args.w1 == "lower" else "W2(q_u, q_v) (W1 upper end)",
        ),
        out,
        "sharing_radius",
    )
    timing["figures"] = time.perf_counter() - t
    files = [write_csv(out / "pairs.csv", table), write_csv(out / "bins.csv", bins)]
    timing["total"] = time.perf_counter() - start
    n_params = sum(p.numel() for p in params)
    result = {
        "job": JOB,
        "arguments": parsed_arguments(args),
        "resolved": {
            **sizes,
            "dataset": dataset,
            "k": args.k,
            "eta": effects.eta,
            "eta_mode": "auto" if auto else "given",
            "w1": args.w1,
        },
        "dataset": {
            "name": dataset,
            "train_users": n,
            "items": int(X.shape[1]),
            "interactions": int(X.nnz),
            "split_cache": split.report.get("cache"),
        },
        "model": record,
        "loss": "L_u(theta) = -sum_i x_ui log softmax(decoder(mu_u))_i, z = mu_u of the clean input fixed; theta = "
        f"the decoder's {n_params:,} parameters; float64",
        "radius": {
            "w1": args.w1,
            "estimate": radius.radius,
            "ci": radius.ci,
            "level": radius.level,
            "intercept": radius.intercept,
            "slope": radius.slope,
            "slope_ci": radius.slope_ci,
            "intercept_ci": radius.intercept_ci,
            "rule": radius.rule,
            "resampled": "anchors u (clusters of pairs; both pairs of a drawn anchor kept)",
            "n_clusters": radius.n_clusters,
            "residual_std": radius.residual_std,
            "extrapolated": radius.extrapolated,
            "boot_no_crossing": radius.boot_no_crossing,
            "binned_crossing": radius.binned.crossing,
            "binned_reason": radius.binned.reason,
            "reason": radius.reason,
            "n_pairs": radius.n_pairs,
            "n_boot": radius.n_boot,
            "share_pairs_inside": float((w1[ok] < radius.radius).mean()) if radius.radius is not None else None,
        },
        "sign_agreement": {
            "fraction": sign.fraction,
            "agree": sign.n_agree,
            "disagree": sign.n_disagree,
            "zero": sign.n_zero,
        },
        "first_order": {
            "eta": check.eta,
            "eta_mode": "auto" if auto else "given",
            "remainder_ratio": check.remainder_ratio,
            "tol": FIRST_ORDER_TOL,
            "criterion_held": check.holds,
            "criterion": f"median |measured - predicted| / median |predicted| < {FIRST_ORDER_TOL:g}"
            + (
                f"; eta = the largest of {', '.join(f'{e:g}' for e in ETA_GRID)} that satisfies it (else the smallest)"
                if auto
                else "; eta given by --eta and checked"
            ),
            "grid": [_check_record(c) for c in grid_checks],
            "median_relative_remainder": check.median_relative_remainder,
            "share_resolved": float(resolved.mean()),
            "note": "remainder_ratio: median |second-order remainder| over median |first-order prediction| (the "
            "criterion); median_relative_remainder: median of the per-pair ratio |measured - predicted| / "
            "|predicted| (heavy-tailed where the prediction is near 0); share_resolved: measured changes above "
            "100x the float64 rounding scale",
        },
        "help_share": float(table["helps"].mean()),
        "strata": strata.to_dict(orient="records"),
        "bins": bins.to_dict(orient="records"),
        "bin_columns": BIN_NOTES,
    }
    save_result(out, "summary.json", result, [*files, *figures], timing)
    _print_summary(result, strata, bins, dataset, n, X.shape[1])
    print_done(out, result, timing)
    return out


def _print_summary(result: dict, strata: pd.DataFrame, bins: pd.DataFrame, dataset: str, n: int, items: int) -> None:
    m, r, s, fo = result["model"], result["radius"], result["sign_agreement"], result["first_order"]
    c = m["config"]
    print(
        f"Sharing radius on {dataset}: {n:,} training users, {items:,} items; Multi-VAE hidden {tuple(c['hidden'])}, "
        f"latent {c['latent_dim']}, rho {c['rho']:g}, beta cap {c['beta_cap']:g} (best epoch {m['best_epoch']}, "
        f"val NDCG@100 {m['val_ndcg@100']:.4f})"
    )
    print(f"one SGD step on v (eta = {result['resolved']['eta']:g}) on the decoder; {result['loss'].split(';')[0]}")
    ratio = "-" if fo["remainder_ratio"] is None else f"{fo['remainder_ratio']:.3g}"
    print(
        f"eta {fo['eta']:g} ({fo['eta_mode']}): median |remainder| / median |first order| = {ratio}, first-order "
        f"criterion (< {fo['tol']:g}) " + ("held" if fo["criterion_held"] else "FAILED: the gains are not first order")
    )
    print()
    print(
        format_table(
            strata,
            {
                "stratum": "s",
                "pairs": "d",
                "mean_w1_lower": ".3f",
                "mean_w1_upper": ".3f",
                "mean_gain": ".4g",
                "help_share": ".3f",
                "mean_cosine": ".3f",
            },
            {
                "mean_w1_lower": "||Δμ||",
                "mean_w1_upper": "W2",
                "mean_gain": "mean gain",
                "help_share": "v helps u",
                "mean_cosine": "cos(g_u,g_v)",
            },
        )
    )
    w = "||Δμ||" if r["w1"] == "lower" else "W2"
    print(f"\nShare of pairs where v's step helps u, by {w} bin (95% Wilson interval)")
    shown = bins.assign(
        interval=[f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(bins["help_low"], bins["help_high"], strict=True)]
    )
    print(
        format_table(
            shown,
            {
                "w1_low": ".3f",
                "w1_high": ".3f",
                "pairs": "d",
                "mean_gain": ".4g",
                "help_share": ".3f",
                "interval": "s",
                "predicted_help_share": ".3f",
            },
            {
                "w1_low": f"{w} from",
                "w1_high": "to",
                "mean_gain": "mean gain",
                "help_share": "helps",
                "interval": "95% CI",
                "predicted_help_share": "1st order",
            },
        )
    )
    print()
    if r["estimate"] is not None:
        lo, hi = r["ci"]
        print(
            f"r_share ({w}): {r['estimate']:.4g}, {100 * r['level']:.0f}% bootstrap interval [{lo:.4g}, {hi:.4g}]"
            + ("  (extrapolated beyond the largest W1)" if r["extrapolated"] else "")
            + f"; {100 * r['share_pairs_inside']:.0f}% of the pairs lie inside"
        )
    else:
        print(f"r_share ({w}): none, {r['reason']}")
    print(
        f"  gain = {r['intercept']:.4g} + ({r['slope']:.4g}) x {w};  binned mean gain crosses 0 at "
        + (f"{r['binned_crossing']:.4g}" if r["binned_crossing"] is not None else f"- ({r['binned_reason']})")
    )
    frac = "-" if s["fraction"] is None else f"{s['fraction']:.3f}"
    print(
        f"  slope {100 * r['level']:.0f}% interval [{r['slope_ci'][0]:.4g}, {r['slope_ci'][1]:.4g}], intercept "
        f"[{r['intercept_ci'][0]:.4g}, {r['intercept_ci'][1]:.4g}] ({r['n_clusters']} anchors resampled)"
    )
    print(
        f"  sign agreement of measured and first-order changes: {frac} ({s['agree']} of {s['agree'] + s['disagree']})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0, or 2 with one error line on stderr)."""
    return run_main(build_parser(), run, argv)


if __name__ == "__main__":
    end_process(main())
