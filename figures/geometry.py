"""Figures of the latent-geometry jobs: local versus global sharing, the KL budget and the sharing radius.

Every function takes plain arrays and returns a :class:`matplotlib.figure.Figure` drawn in the project style
(:mod:`figures.style`); jobs write it with :func:`figures.style.savefig`.

``analyses.local_vs_global`` (PAPER.md section 3):

* :func:`lipschitz_transport_figure`: W1 sandwich of pairs against their input distance with the Lipschitz
  lines, and W2 against the transport bound.
* :func:`cohort_figure`: latent means of the activity cohorts (2-D PCA) and their silhouettes.
* :func:`far_related_figure`: where partners sit among a user's neighbours, in input and latent space.

``analyses.kl_budget`` (section 5):

* :func:`kl_tradeoff_figure`: NDCG@100 against the mean KL, and the mean pairwise W1 against its bound.
* :func:`kl_decomposition_figure`: mean KL = I(X_h; Z) + KL(q_h || p) per setting, with intervals.

``analyses.sharing_radius`` (section 2):

* :func:`sharing_radius_figure`: normalised gain of u from a step on v against W1 with the fitted line and
  r_share, the share of pairs where v's step helps u by W1 bin, and measured against predicted changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from figures.style import STRATUM_LABELS, cohort_colors, new_figure, ordered_strata, palette, stratum_colors, styled
from models.lazy import lazy_import

if TYPE_CHECKING:
    from matplotlib.figure import Figure

mcollections = lazy_import("matplotlib.collections")
mlines = lazy_import("matplotlib.lines")
mpatches = lazy_import("matplotlib.patches")
ticker = lazy_import("matplotlib.ticker")
mtransforms = lazy_import("matplotlib.transforms")

# How a count that holds by construction is labelled (the same words as analyses.local_vs_global.UNIT_CHECK).
UNIT_CHECK = "unit check: holds by construction (a violation is a bug)"
# Drop of the Lipschitz legend under its panel, in points: below the tick labels and the axis label.
_LEGEND_DROP_PT = 38
# Line styles of reference lines (certificates solid, empirical dashed).
_LINE_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (3, 1, 1, 1)), "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _alpha(n: int) -> float:
    """Marker opacity that keeps dense clouds of ``n`` points readable."""
    return float(np.clip(250.0 / max(n, 1), 0.25, 0.6))


def _size(n: int) -> float:
    return 10.0 if n <= 500 else 6.0


# --------------------------------------------------------------------------------------------- local vs global


def lipschitz_transport_figure(
    l1: np.ndarray,
    w1_lower: np.ndarray,
    w1_upper: np.ndarray,
    strata: np.ndarray,
    transport_bound: np.ndarray,
    lines: Mapping[str, float],
    n_violations: int = 0,
    n_lipschitz_violations: int | None = None,
    transport_usage_median: float | None = None,
) -> Figure:
    """Pairs' W1 sandwich against ``|S_u Δ S_v|`` with lines ``W = L * L1``, and W2 against the transport bound.

    Parameters
    ----------
    l1 : numpy.ndarray, shape (P,)
        Input distances ``|S_u Δ S_v|``.
    w1_lower, w1_upper : numpy.ndarray, shape (P,)
        ``||mu_u - mu_v||`` and ``W2(q_u, q_v)``, the ends of the W1 sandwich.
    strata : numpy.ndarray of str, shape (P,)
    transport_bound : numpy.ndarray, shape (P,)
        ``sqrt(2 KL_u) + sqrt(2 KL_v)``.
    lines : mapping label -> slope
        Lipschitz lines to draw (e.g. the certificates and the largest empirical ratio), in this order.
    n_violations : int
        Pairs above the transport bound (shown in the panel title as a unit check: it holds by construction).
    n_lipschitz_violations : int, optional
        Pairs above any of the certificates; when given, the Lipschitz legend lists it as a unit check.
    transport_usage_median : float, optional
        Median ``W2 / bound`` over the pairs; when given, shown in the transport panel.

    The Lipschitz legend sits under the panel, outside the axes, so that it covers neither the lines nor the
    pairs (the lines all enter at the panel's left edge, where a legend inside would sit on them).
    """
    l1 = np.asarray(l1, dtype=np.float64)
    lo = np.asarray(w1_lower, dtype=np.float64)
    up = np.asarray(w1_upper, dtype=np.float64)
    tb = np.asarray(transport_bound, dtype=np.float64)
    strata = np.asarray(strata).astype(str)
    if not (l1.shape == lo.shape == up.shape == strata.shape == tb.shape) or l1.ndim != 1:
        raise ValueError("l1, w1_lower, w1_upper, strata and transport_bound must be 1-D arrays of one length")
    names = ordered_strata(strata.tolist())
    colours = stratum_colors(names)
    keep = l1 > 0  # log axes: identical histories (L1 = 0) cannot be drawn
    with styled():
        fig = new_figure(1, 2, panel_size=(5.4, 4.3))
        ax, bx = fig.axes
        for s in names:
            sel = keep & (strata == s)
            segs = np.stack([np.stack([l1[sel], lo[sel]], 1), np.stack([l1[sel], up[sel]], 1)], axis=1)
            ax.add_collection(mcollections.LineCollection(segs, colors=colours[s], alpha=0.25, linewidths=0.8))
            ax.scatter(l1[sel], up[sel], s=_size(sel.sum()), color=colours[s], alpha=_alpha(sel.sum()), linewidths=0)
        x = np.geomspace(max(l1[keep].min() / 1.5, 0.5), l1[keep].max() * 1.5, 50)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ymin = max(lo[keep & (lo > 0)].min() / 2, 1e-4) if (keep & (lo > 0)).any() else 1e-3
        top = max(up[keep].max(), 1e-3)
        slopes = [v for v in lines.values() if np.isfinite(v) and v > 0]
        # every line enters the panel at its left edge, unless that would squash the data into the bottom
        # decade of the panel: a line that starts more than 3 decades above the data is listed, not drawn
        ytop = max(top * 20, min(3.0 * max(slopes, default=0.0) * x[0], top * 1e3))
        handles = []
        for i, (label, slope) in enumerate(lines.items()):
            if not np.isfinite(slope) or slope <= 0:
                continue
            style = _LINE_STYLES[i % len(_LINE_STYLES)]
            above = slope * x[0] > ytop
            if not above:
                ax.plot(x, slope * x, color="0.15", lw=1.3, ls=style)
            text = f"{label}: L = {slope:.3g}" + (" (above the panel)" if above else "")
            handles.append(mlines.Line2D([], [], color="0.15", lw=1.3, ls=style, label=text))
        ax.set_ylim(ymin, ytop)
        ax.set_xlim(x[0], x[-1])
        ax.set_xlabel("input distance |S_u Δ S_v| (log)")
        ax.set_ylabel("W1(q_u, q_v): bar from ||Δμ|| to W2 (log)")
        ax.set_title("Lipschitz encoder: W1 ≤ W2 ≤ L · L1")
        if n_lipschitz_violations is not None:
            s_ = "s" if n_lipschitz_violations != 1 else ""
            text = f"{n_lipschitz_violations} pair{s_} above a certificate ({UNIT_CHECK})"
            handles.append(mlines.Line2D([], [], linestyle="", label=text))
        # under the panel, outside the axes, below the axis label (a fixed offset in points, as the label's own
        # position is): no line and no pair is covered, and constrained layout makes room for it
        below = ax.transAxes + mtransforms.ScaledTranslation(0, -_LEGEND_DROP_PT / 72, fig.dpi_scale_trans)
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            bbox_transform=below,
            fontsize=7.5,
            frameon=False,
            handlelength=2.6,
        )

        for s in names:
            sel = strata == s
            bx.scatter(tb[sel], up[sel], s=_size(sel.sum()), color=colours[s], alpha=_alpha(sel.sum()), linewidths=0)
        lim = max(tb.max(), up.max()) * 1.05
        bx.fill_between([0, lim], [0, lim], [lim, lim], color="0.85", alpha=0.6, linewidth=0)
        bx.plot([0, lim], [0, lim], color="0.15", lw=1.3)
        bx.text(0.04 * lim, 0.9 * lim, "bound violated", fontsize=8.5, color="0.3", va="top")
        bx.set_xlim(0, lim)
        bx.set_ylim(0, lim)
        bx.set_aspect("equal")
        bx.set_xlabel("transport bound √(2 KL_u) + √(2 KL_v)")
        bx.set_ylabel("W2(q_u, q_v) ≥ W1")
        title = f"Transport bound: {n_violations} violation{'s' if n_violations != 1 else ''}\n({UNIT_CHECK})"
        bx.set_title(title, fontsize=10)
        if transport_usage_median is not None:
            bx.text(
                0.04 * lim,
                0.82 * lim,
                f"(empty by construction)\nmedian W2 / bound = {transport_usage_median:.2f}",
                fontsize=8.5,
                color="0.3",
                va="top",
            )
        legend = [
            mlines.Line2D([], [], marker="o", ls="", color=colours[s], label=STRATUM_LABELS.get(s, s)) for s in names
        ]
        fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), frameon=False)
        fig.suptitle("Clean input: latent distances are bounded by input distance and by the KL to the prior")
    return fig


def cohort_figure(
    coords: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    silhouette_latent: np.ndarray,
    silhouette_input: np.ndarray,
    overall_latent: float,
    overall_input: float,
) -> Figure:
    """Latent means of the activity cohorts in 2-D and the silhouette of each cohort in latent and input space.

    Parameters
    ----------
    coords : numpy.ndarray, shape (n, 2)
        2-D projection (e.g. PCA) of the sampled users' ``mu``.
    labels : numpy.ndarray of int, shape (n,)
        Cohort index of each sampled user, into ``names``.
    names : sequence of str
    silhouette_latent, silhouette_input : numpy.ndarray, shape (len(names),)
        Mean silhouette of each cohort's users.
    overall_latent, overall_input : float
        Silhouette scores of all sampled users.
    """
    coords = np.asarray(coords, dtype=np.float64)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != labels.shape[0]:
        raise ValueError("coords must have shape (n, 2) and labels shape (n,)")
    colours = list(cohort_colors(list(names)).values())  # the cohorts' colours in every figure
    with styled():
        fig = new_figure(1, 2, panel_size=(4.9, 4.0))
        ax, bx = fig.axes
        order = np.random.default_rng(0).permutation(labels.size)  # no cohort hidden under another
        ax.scatter(
            coords[order, 0],
            coords[order, 1],
            c=[colours[int(i)] for i in labels[order]],
            s=9,
            alpha=0.65,
            linewidths=0,
        )
        ax.set_xlabel("PC 1 of μ")
        ax.set_ylabel("PC 2 of μ")
        ax.set_title("Latent means of the cohorts (PCA)")
        ax.legend(
            handles=[mlines.Line2D([], [], marker="o", ls="", color=colours[i], label=n) for i, n in enumerate(names)],
            title="interactions",
            loc="best",
        )
        x = np.arange(len(names))
        width = 0.38
        bx.bar(x - width / 2, silhouette_latent, width, color=colours, edgecolor="0.2", linewidth=0.6)
        bx.bar(
            x + width / 2,
            silhouette_input,
            width,
            color=colours,
            alpha=0.35,
            edgecolor="0.2",
            linewidth=0.6,
            hatch="//",
        )
        bx.axhline(0, color="0.2", lw=0.8)
        bx.set_xticks(x, labels=names)
        bx.set_ylim(min(-0.1, np.nanmin([*silhouette_latent, *silhouette_input]) - 0.05), 1.0)
        bx.set_ylabel("mean silhouette of the cohort")
        bx.set_title(f"Silhouette: latent {overall_latent:.2f}, input {overall_input:.2f}")
        bx.legend(
            handles=[
                mpatches.Patch(facecolor="0.5", edgecolor="0.2", label="latent (Euclidean on μ)"),
                mpatches.Patch(
                    facecolor="0.5", alpha=0.35, edgecolor="0.2", hatch="//", label="input (L1 on histories)"
                ),
            ],
            loc="upper right",
        )
        fig.suptitle("Cohorts by interaction level in latent space (clean input)")
    return fig


def far_related_figure(latent_pct: Mapping[str, np.ndarray], input_pct: Mapping[str, np.ndarray]) -> Figure:
    """Cumulative distribution of v's rank percentile among u's neighbours, latent (solid) and input (dashed).

    Parameters
    ----------
    latent_pct, input_pct : mapping stratum -> numpy.ndarray
        Rank percentiles in [0, 100] (0 = u's nearest user) of the pairs of each stratum.
    """
    names = ordered_strata(list(latent_pct))
    colours = stratum_colors(names)
    with styled():
        fig = new_figure(1, 1, panel_size=(7.8, 4.4))
        ax = fig.axes[0]
        for s in names:
            for values, ls, lw in ((latent_pct[s], "-", 2.0), (input_pct.get(s), "--", 1.4)):
                if values is None or len(values) == 0:
                    continue
                xs = np.sort(np.asarray(values, dtype=np.float64))
                ys = np.arange(1, xs.size + 1) / xs.size
                ax.step(np.r_[0.0, xs], np.r_[0.0, ys], where="post", color=colours[s], ls=ls, lw=lw)
        ax.axvline(10, color="0.5", lw=0.8, ls=":")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("rank percentile of v among u's distances to all users (0 = u's nearest)")
        ax.set_ylabel("share of pairs at or below")
        ax.set_title("Where partners sit: input space (dashed) and latent space (solid)")
        handles = [mlines.Line2D([], [], color=colours[s], lw=2.0, label=STRATUM_LABELS.get(s, s)) for s in names]
        handles += [
            mlines.Line2D([], [], color="0.3", lw=2.0, label="latent ||μ_u - μ_w||"),
            mlines.Line2D([], [], color="0.3", lw=1.4, ls="--", label="input |S_u Δ S_w|"),
            mlines.Line2D([], [], color="0.5", lw=0.8, ls=":", label="u's nearest 10%"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=8.5)
    return fig


# ---------------------------------------------------------------------------------------------------- KL budget


KL_LOG_RATIO = 30.0
"""Range of the KL decomposition above which its y axis turns logarithmic."""


def _rho_colours(rhos: Sequence[float]) -> dict[float, str]:
    colours = palette()
    return {r: colours[i % len(colours)] for i, r in enumerate(sorted(set(rhos), reverse=True))}


def _rho_label(rho: float) -> str:
    return "ρ = 1 (clean)" if rho == 1 else f"ρ = {rho:g}"


def kl_tradeoff_figure(table) -> Figure:
    """NDCG@100 against the mean KL per (beta cap, rho), and the mean pairwise W1 against ``2 sqrt(2 E KL)``.

    Colour marks rho, the marker shape the beta cap.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per setting with columns ``beta_cap``, ``rho``, ``val_ndcg@100``, ``mean_kl``,
        ``mean_kl_low``, ``mean_kl_high``, ``mean_w1_lower``, ``mean_w1_upper`` and ``expected_bound``.
    """
    colours = _rho_colours(table["rho"].tolist())
    betas = sorted(set(table["beta_cap"].tolist()))
    markers = {b: _MARKERS[i % len(_MARKERS)] for i, b in enumerate(betas)}
    with styled():
        fig = new_figure(1, 2, panel_size=(5.2, 4.2))
        ax, bx = fig.axes
        for rho, g in table.groupby("rho", sort=False):
            g = g.sort_values("beta_cap")
            c = colours[rho]
            ax.plot(g["mean_kl"], g["val_ndcg@100"], color=c, lw=1.4, zorder=1)
            bx.vlines(g["expected_bound"], g["mean_w1_lower"], g["mean_w1_upper"], color=c, lw=2.5, alpha=0.7)
            for _, r in g.iterrows():
                m = markers[r["beta_cap"]]
                xerr = [[r["mean_kl"] - r["mean_kl_low"]], [r["mean_kl_high"] - r["mean_kl"]]]
                ax.errorbar(r["mean_kl"], r["val_ndcg@100"], xerr=xerr, color=c, marker=m, ms=7, capsize=2, lw=1)
                bx.scatter(r["expected_bound"], r["mean_w1_upper"], color=c, marker=m, s=45, zorder=3)
        if (table["mean_kl_low"] > 0).all():
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel("mean KL(q(z | x ⊙ b) || p)  (log)")
        else:
            ax.set_xlabel("mean KL(q(z | x ⊙ b) || p)")
        ax.set_ylabel("validation NDCG@100")
        ax.set_title("Ranking quality against the KL budget")
        lim = max(float(max(table["expected_bound"].max(), table["mean_w1_upper"].max())) * 1.08, 1e-3)
        bx.fill_between([0, lim], [0, lim], [lim, lim], color="0.85", alpha=0.6, linewidth=0)
        bx.plot([0, lim], [0, lim], color="0.15", lw=1.2)
        bx.text(0.04 * lim, 0.92 * lim, "bound violated", fontsize=8.5, color="0.3", va="top")
        bx.set_xlim(0, lim)
        bx.set_ylim(0, lim)
        bx.set_xlabel("bound 2 √(2 E KL)")
        bx.set_ylabel("mean pairwise W1: bar from E||Δμ|| to E W2")
        bx.set_title("Mean pairwise W1 under its KL bound")
        handles = [mlines.Line2D([], [], color=colours[r], lw=2.5, label=_rho_label(r)) for r in colours]
        handles += [
            mlines.Line2D([], [], color="0.3", marker=markers[b], ls="", ms=7, label=f"β cap {b:g}") for b in betas
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        fig.suptitle("β versus masking: KL budget, latent spread and ranking quality")
    return fig


def _split_error_bars(ax, x: float, mi: float, agg: float, r) -> None:
    """The intervals of I(X_h; Z) (left, at the top of its bar) and KL(q_h || p) (right, at the top of the stack).

    An interval end on the wrong side of its estimate (the clustered interval is not centred on the all-sample
    estimate, so this happens near the edges) is drawn at the estimate: an error bar has no negative length.
    """
    for dx, base, estimate, name in ((-0.12, 0.0, mi, "mutual_information"), (0.12, mi, agg, "kl_aggregate")):
        low, high = max(estimate - r[f"{name}_low"], 0.0), max(r[f"{name}_high"] - estimate, 0.0)
        ax.errorbar(x + dx, base + estimate, yerr=[[low], [high]], color="0.15", capsize=2, lw=1)


def kl_decomposition_figure(table) -> Figure:
    """Mean KL split into I(X_h; Z) and KL(q_h || p) per (beta cap, rho), with 95% intervals and log K.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per setting with columns ``beta_cap``, ``rho``, ``mean_kl``, ``mutual_information``,
        ``kl_aggregate``, their ``_low`` / ``_high`` interval ends, and ``log_components``; optionally
        ``saturated`` (:attr:`geometry.kl.KLBudget.saturated`).

    Error bars are 95% user-clustered intervals: left of each bar for I(X_h; Z), right of it for
    KL(q_h || p) (drawn at the top of the stack), and the diamond's for the analytic mean KL. A saturated
    setting (I within 5% of log K, intervals NaN) gets no interval for the split and the label "not
    identifiable" instead.
    The y axis is logarithmic when the largest mean KL is more than :data:`KL_LOG_RATIO` times the smallest
    positive component, so that I(X_h; Z) (a few nats, at most log K) stays visible next to an unregularised
    KL of hundreds of nats.
    """
    colours = _rho_colours(table["rho"].tolist())
    parts = np.r_[table["mutual_information"].to_numpy(float), table["kl_aggregate"].to_numpy(float)]
    smallest = parts[parts > 0].min() if (parts > 0).any() else 1.0
    log_axis = float(table["mean_kl"].max()) > KL_LOG_RATIO * smallest
    t = table.sort_values(["rho", "beta_cap"], ascending=[False, True]).reset_index(drop=True)
    x = np.arange(len(t), dtype=np.float64)
    # a gap between rho groups
    x += np.cumsum(np.r_[0, (np.diff(t["rho"].to_numpy()) != 0).astype(float)]) * 0.6
    with styled():
        fig = new_figure(1, 1, panel_size=(max(5.5, 0.8 * len(t) + 2.5), 4.4))
        ax = fig.axes[0]
        for i, r in t.iterrows():
            c = colours[r["rho"]]
            mi = max(r["mutual_information"], 0.0)
            agg = max(r["kl_aggregate"], 0.0)
            ax.bar(x[i], mi, 0.7, color=c, edgecolor="0.2", linewidth=0.6)
            ax.bar(x[i], agg, 0.7, bottom=mi, color=c, alpha=0.35, hatch="//", edgecolor="0.2", linewidth=0.6)
            if bool(r.get("saturated", False)) or not np.isfinite(r["mutual_information_low"]):
                ax.annotate(
                    "not\nidentifiable",
                    (x[i], mi),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="0.15",
                )
            else:
                _split_error_bars(ax, x[i], mi, agg, r)
            ax.errorbar(
                x[i],
                r["mean_kl"],
                yerr=[[r["mean_kl"] - r["mean_kl_low"]], [r["mean_kl_high"] - r["mean_kl"]]],
                color="black",
                marker="D",
                ms=5,
                capsize=3,
                lw=1.2,
            )
            ax.hlines(r["log_components"], x[i] - 0.38, x[i] + 0.38, color="0.3", lw=1.2, ls=(0, (2, 1.5)))
        ax.set_xticks(x, labels=[f"β={b:g}\nρ={r:g}" for b, r in zip(t["beta_cap"], t["rho"], strict=True)])
        if log_axis:
            ax.set_yscale("log")
            ax.set_ylim(smallest / 2, None)
        else:
            ax.set_ylim(0, None)
        ax.set_ylabel("nats (log)" if log_axis else "nats")
        ax.set_title("Mean KL = I(X_h; Z) + KL(q_h || p)" + (", log scale" if log_axis else ""))
        handles = [
            mpatches.Patch(facecolor="0.5", edgecolor="0.2", label="I(X_h; Z)"),
            mpatches.Patch(facecolor="0.5", alpha=0.35, hatch="//", edgecolor="0.2", label="KL(q_h || p)"),
            mlines.Line2D([], [], color="black", marker="D", ls="", label="mean KL (analytic)"),
            mlines.Line2D([], [], color="0.3", ls=(0, (2, 1.5)), label="log K (ceiling of I)"),
            mlines.Line2D(
                [],
                [],
                color="0.15",
                marker="|",
                ls="",
                label="95% intervals (user-clustered):\nleft I, right KL(q_h || p)",
            ),
            *[mpatches.Patch(facecolor=colours[r], label=_rho_label(r)) for r in colours],
        ]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------- sharing radius


def _symlog_axis(ax, axis, thresh: float, lim: float) -> None:
    """Symmetric log scale on ``axis`` (linear inside ``±thresh``) with at most 3 labelled decades per sign."""
    setter = ax.set_xscale if axis is ax.xaxis else ax.set_yscale
    setter("symlog", linthresh=thresh)
    (ax.set_xlim if axis is ax.xaxis else ax.set_ylim)(-lim, lim)
    lo, hi = int(np.floor(np.log10(thresh))), int(np.ceil(np.log10(lim)))
    step = max(1, int(np.ceil((hi - lo + 1) / 3)))
    decades = list(range(hi, lo - 1, -step))[::-1]
    ticks = [-(10.0**k) for k in decades[::-1]] + [0.0] + [10.0**k for k in decades]
    labels = [f"-1e{k}" for k in decades[::-1]] + ["0"] + [f"1e{k}" for k in decades]
    axis.set_ticks(ticks, labels=labels)
    axis.set_minor_locator(ticker.NullLocator())


def sharing_radius_figure(
    w1: np.ndarray,
    gain: np.ndarray,
    strata: np.ndarray,
    predicted: np.ndarray,
    measured: np.ndarray,
    bins,
    *,
    radius: float | None,
    radius_ci: tuple[float, float] | None,
    intercept: float,
    slope: float,
    w1_label: str = "W1(q_u, q_v)",
) -> Figure:
    """Gain of u from one step on v against W1 with r_share, help share by W1 bin, measured against predicted.

    Parameters
    ----------
    w1, gain, predicted, measured : numpy.ndarray, shape (P,)
        Per pair: W1 (or the chosen end of its sandwich), normalised gain ``-measured / (eta ||g_u||)`` (NaN
        pairs are skipped), first-order change ``-eta <g_u, g_v>`` and measured change of u's loss.
    strata : numpy.ndarray of str, shape (P,)
    bins : pandas.DataFrame
        Columns ``mean_w1``, ``mean_gain``, ``help_share``, ``help_low``, ``help_high``, ``predicted_help_share``,
        ``w1_low``, ``w1_high`` (one row per W1 bin).
    radius, radius_ci : float or None, (low, high) or None
        Estimated r_share and its interval (the upper end may be inf).
    intercept, slope : float
        The fitted line ``gain = intercept + slope * W1``.
    w1_label : str
        Axis label of W1.
    """
    w1 = np.asarray(w1, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    strata = np.asarray(strata).astype(str)
    if not (w1.shape == gain.shape == strata.shape == predicted.shape == measured.shape) or w1.ndim != 1:
        raise ValueError("w1, gain, strata, predicted and measured must be 1-D arrays of one length")
    names = ordered_strata(strata.tolist())
    colours = stratum_colors(names)
    ok = np.isfinite(gain)
    with styled():
        fig = new_figure(1, 3, panel_size=(4.6, 4.0))
        ax, bx, cx = fig.axes
        for s in names:
            sel = ok & (strata == s)
            ax.scatter(w1[sel], gain[sel], s=_size(sel.sum()), color=colours[s], alpha=_alpha(sel.sum()), linewidths=0)
        xmax = float(w1[ok].max()) * 1.05
        if radius is not None and np.isfinite(radius):
            xmax = max(xmax, radius * 1.1)
        xs = np.linspace(0.0, xmax, 50)
        ax.plot(xs, intercept + slope * xs, color="0.15", lw=1.5, label="least-squares line")
        ax.plot(bins["mean_w1"], bins["mean_gain"], color="0.15", marker="s", ms=5, lw=1.0, ls=":", label="bin means")
        ax.axhline(0.0, color="0.4", lw=0.8)
        if radius is not None:
            lo, hi = radius_ci if radius_ci is not None else (radius, radius)
            ax.axvspan(lo, min(hi, xmax), color="0.6", alpha=0.25, linewidth=0)
            ax.axvline(radius, color="0.15", lw=1.3, ls="--", label=f"r_share = {radius:.3g}")
        ax.set_xlim(0.0, xmax)
        lo_y, hi_y = np.nanpercentile(gain[ok], [1, 99])
        pad = 0.15 * (hi_y - lo_y + 1e-12)
        ax.set_ylim(min(lo_y - pad, -pad), hi_y + pad)
        ax.set_xlabel(w1_label)
        ax.set_ylabel("gain of u: -ΔL_u / (η ||g_u||)")
        # the title states what the fit shows: on real data the gain need not fall with W1 at all
        ax.set_title("Gain falls with latent distance" if slope < 0 else "Gain does not fall with latent distance")
        ax.legend(loc="upper right", fontsize=8)

        centres = bins["mean_w1"].to_numpy()
        share = bins["help_share"].to_numpy()
        err = np.stack([share - bins["help_low"].to_numpy(), bins["help_high"].to_numpy() - share])
        bx.errorbar(centres, share, yerr=err, color="0.15", marker="o", ms=5, capsize=3, lw=1.3, label="measured")
        bx.plot(
            centres,
            bins["predicted_help_share"],
            color="0.45",
            marker="o",
            mfc="none",
            ms=9,
            lw=1.0,
            ls="--",
            zorder=3,
            label="first-order prediction",
        )
        bx.axhline(0.5, color="0.6", lw=0.8, ls=":")
        if radius is not None:
            bx.axvline(radius, color="0.15", lw=1.3, ls="--")
        bx.set_ylim(-0.02, 1.02)
        bx.set_xlim(0.0, xmax)
        bx.set_xlabel(f"{w1_label}, bin mean")
        bx.set_ylabel("share of pairs where v's step lowers L_u")
        bx.set_title("Does v's step help u? (95% Wilson)")
        bx.legend(loc="lower left", fontsize=8)

        for s in names:
            sel = strata == s
            cx.scatter(
                predicted[sel],
                measured[sel],
                s=_size(sel.sum()),
                color=colours[s],
                alpha=_alpha(sel.sum()),
                linewidths=0,
            )
        both = np.concatenate([predicted, measured])
        lim = float(np.abs(both).max()) * 1.5 or 1.0
        small = np.abs(both[both != 0])
        thresh = 10.0 ** np.floor(np.log10(np.quantile(small, 0.05))) if small.size else 1e-12
        cx.plot([-lim, lim], [-lim, lim], color="0.15", lw=1.0)
        for axis in (cx.xaxis, cx.yaxis):
            _symlog_axis(cx, axis, thresh, lim)
        cx.axhline(0, color="0.5", lw=0.6)
        cx.axvline(0, color="0.5", lw=0.6)
        nz = (predicted != 0) & (measured != 0)
        agree = float(np.mean(np.sign(predicted[nz]) == np.sign(measured[nz]))) if nz.any() else float("nan")
        cx.set_xlabel("first-order change -η <g_u, g_v> (symlog)")
        cx.set_ylabel("measured change ΔL_u (symlog)")
        cx.set_title(f"Measured vs first order: {100 * agree:.1f}% same sign")
        handles = [
            mlines.Line2D([], [], marker="o", ls="", color=colours[s], label=STRATUM_LABELS.get(s, s)) for s in names
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        fig.suptitle("Latent sharing radius: one SGD step on v and the change of u's loss")
    return fig
