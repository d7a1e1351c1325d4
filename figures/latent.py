"""Figures of the latent-space jobs: PIA geometry, cohort embeddings and the results table.

Every function takes plain arrays and returns a :class:`matplotlib.figure.Figure` drawn in the project style
(:mod:`figures.style`); jobs write it with :func:`figures.style.savefig`.

* :func:`geometry_figure` (``analyses.pia_geometry``): per-user distributions (neighbourhood drift, mask variance
  of the posterior mean, ...) of several models overlaid, one panel per quantity, and bar panels of summary
  numbers (cohort mixing, global transfer) with their standard errors.
* :func:`group_comparison_figure` (``analyses.pia_geometry``): a metric by user group for two models, and the
  paired difference between them with 95% intervals.
* :func:`cohort_embedding_figure` (``analyses.cohorts``): 2-D embeddings of user cohorts, one panel per condition,
  all panels on the same axis limits (one shared reducer makes the positions comparable).
* :func:`results_figure` (``analyses.reproduce``): test metrics of every model with published values marked, and
  NDCG@100 by user group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from figures.style import cohort_colors, model_colors, new_figure, palette, styled
from models.lazy import lazy_import

if TYPE_CHECKING:
    from matplotlib.figure import Figure

mlines = lazy_import("matplotlib.lines")

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def condition_colors(labels: Sequence[str]) -> dict[str, str]:
    """One palette colour per model / condition label, in the given order (first: blue, second: vermillion)."""
    return dict(zip(labels, palette(len(labels)), strict=True))


# ----------------------------------------------------------------------------------------------- PIA geometry


@dataclass(frozen=True)
class DistributionPanel:
    """Per-user values of several models for one quantity, drawn as overlaid histograms with medians.

    Attributes
    ----------
    title, xlabel : str
    values : Mapping[str, numpy.ndarray]
        Model label -> per-user values, shape (n,) each (NaN ignored).
    log : bool
        Histogram of ``log10`` of the (positive) values, e.g. variances spanning decades.
    bounds : tuple of float, optional
        Fixed histogram range (e.g. ``(0, 1)`` for a drift); default: the data range.
    bins : int
    """

    title: str
    xlabel: str
    values: Mapping[str, np.ndarray]
    log: bool = False
    bounds: tuple[float, float] | None = None
    bins: int = 20


@dataclass(frozen=True)
class BarPanel:
    """Summary numbers of several models, grouped by quantity, with standard errors (error bars: 95%).

    Attributes
    ----------
    title, ylabel : str
    quantities : Sequence[str]
        Group labels along the x axis.
    means, ses : Mapping[str, numpy.ndarray]
        Model label -> values of shape (len(quantities),); NaN standard errors draw no bar.
    reference : float, optional
        A horizontal reference line (e.g. 0).
    """

    title: str
    ylabel: str
    quantities: Sequence[str]
    means: Mapping[str, np.ndarray]
    ses: Mapping[str, np.ndarray]
    reference: float | None = None


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _draw_distribution(ax, panel: DistributionPanel) -> None:
    colours = condition_colors(list(panel.values))
    data = {}
    for label, v in panel.values.items():
        v = _finite(v)
        if panel.log:
            v = np.log10(v[v > 0])
        data[label] = v
    pooled = np.concatenate([v for v in data.values()]) if data else np.empty(0)
    if panel.bounds is not None:
        lo, hi = panel.bounds
    elif pooled.size:
        lo, hi = float(pooled.min()), float(pooled.max())
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, panel.bins + 1)
    for label, v in data.items():
        if v.size == 0:
            continue
        weights = np.full(v.size, 1.0 / v.size)
        c = colours[label]
        ax.hist(v, bins=edges, weights=weights, color=c, alpha=0.3, histtype="stepfilled")
        ax.hist(v, bins=edges, weights=weights, color=c, histtype="step", linewidth=1.5)
        med = float(np.median(v))
        shown = 10**med if panel.log else med
        ax.axvline(med, color=c, linestyle="--", linewidth=1.4, label=f"{label}: median {shown:.3g}")
    ax.set_title(panel.title)
    ax.set_xlabel(f"log10 {panel.xlabel}" if panel.log else panel.xlabel)
    ax.set_ylabel("share of users")
    ax.set_xlim(lo, hi)
    # Head-room above the bars for the legend, on the side away from most of the mass.
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.3)
    mass_right = pooled.size > 0 and float(np.median(pooled)) > (lo + hi) / 2
    ax.legend(loc="upper left" if mass_right else "upper right")


def _draw_bars(ax, panel: BarPanel) -> None:
    labels = list(panel.means)
    colours = condition_colors(labels)
    x = np.arange(len(panel.quantities), dtype=float)
    width = 0.8 / max(len(labels), 1)
    tops = [0.0]
    for j, label in enumerate(labels):
        means = np.asarray(panel.means[label], dtype=float)
        ses = np.asarray(panel.ses.get(label, np.full(means.shape, np.nan)), dtype=float)
        pos = x - 0.4 + width * (j + 0.5)
        err = np.where(np.isfinite(ses), Z95 * ses, 0.0)
        ax.bar(pos, means, width=width * 0.92, color=colours[label], label=label, yerr=err, capsize=3, ecolor="0.2")
        tops.extend((means + err)[np.isfinite(means + err)].tolist())
    if panel.reference is not None:
        ax.axhline(panel.reference, color="0.3", linewidth=1.0)
    ax.set_xticks(x, list(panel.quantities))
    ax.set_title(panel.title)
    ax.set_ylabel(panel.ylabel)
    # bars fill the panel's width, so the legend gets a band of head-room above the tallest bar instead
    bottom = ax.get_ylim()[0]
    top = max(tops)
    ax.set_ylim(bottom, top + 0.22 * (top - bottom))
    ax.legend(loc="upper center", ncols=len(labels))


def geometry_figure(
    panels: Sequence[DistributionPanel | BarPanel], *, ncols: int = 2, title: str | None = None
) -> Figure:
    """Distribution and bar panels in a grid (row-major), e.g. drift and mask variance with and without PIA.

    Parameters
    ----------
    panels : sequence of DistributionPanel or BarPanel
    ncols : int
        Panels per row.
    title : str, optional
        Figure title.
    """
    if not panels:
        raise ValueError("geometry_figure needs at least one panel")
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    with styled():
        fig = new_figure(nrows, ncols, panel_size=(4.9, 3.6))
        axes = fig.axes
        for ax, panel in zip(axes, panels, strict=False):
            if isinstance(panel, DistributionPanel):
                _draw_distribution(ax, panel)
            else:
                _draw_bars(ax, panel)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
    return fig


def group_comparison_figure(
    groups: Sequence[str],
    means: Mapping[str, np.ndarray],
    ses: Mapping[str, np.ndarray],
    diff_mean: np.ndarray,
    diff_se: np.ndarray,
    *,
    counts: Sequence[int] | None = None,
    metric_label: str = "NDCG@100",
    diff_label: str = "PIA - no PIA",
    title: str | None = None,
) -> Figure:
    """Left: a metric by user group for each model (bars, 95% error bars). Right: paired differences with 95% CI.

    Parameters
    ----------
    groups : sequence of str
        Group labels (e.g. ``"all"``, ``"[5-10]"``, ...).
    means, ses : Mapping[str, numpy.ndarray]
        Model label -> values per group, shape (G,).
    diff_mean, diff_se : numpy.ndarray, shape (G,)
        Paired difference per group and its standard error (NaN: no users).
    counts : sequence of int, optional
        Users per group, shown under the labels.
    """
    groups = list(groups)
    ticks = [f"{g}\nn={n}" for g, n in zip(groups, counts, strict=True)] if counts is not None else groups
    with styled():
        fig = new_figure(1, 2, panel_size=(5.2, 3.8))
        ax, bx = fig.axes
        _draw_bars(ax, BarPanel(f"{metric_label} by user group", metric_label, ticks, means, ses))
        ax.set_xlabel("user group (interactions)")
        x = np.arange(len(groups), dtype=float)
        d = np.asarray(diff_mean, dtype=float)
        e = np.asarray(diff_se, dtype=float)
        colour = palette(3)[2]
        ok = np.isfinite(d)
        bx.errorbar(
            x[ok],
            d[ok],
            yerr=np.where(np.isfinite(e[ok]), Z95 * e[ok], 0.0),
            fmt="o",
            color=colour,
            capsize=4,
            markersize=6,
            label="mean ± 95% CI",
        )
        bx.axhline(0.0, color="0.3", linewidth=1.0)
        bx.set_xticks(x, ticks)
        bx.set_xlim(-0.5, len(groups) - 0.5)
        bx.set_title(f"paired difference, {diff_label}")
        bx.set_ylabel(f"Δ {metric_label}")
        bx.set_xlabel("user group (interactions)")
        bx.legend(loc="best")
        if title:
            fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------------- cohorts


def shared_limits(embeddings: Sequence[np.ndarray], margin: float = 0.05) -> tuple[tuple[float, float], ...]:
    """Common ``(xlim, ylim)`` covering every panel's points (plus ``margin`` of the range on each side), so that
    all panels share one frame; with an equal aspect ratio one unit is the same length along both axes."""
    pts = np.concatenate([np.asarray(e, dtype=float).reshape(-1, 2) for e in embeddings])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-9 + 0.5 * (hi == lo))
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def cohort_embedding_figure(
    embeddings: Sequence[np.ndarray],
    cohorts: Sequence[np.ndarray],
    titles: Sequence[str],
    cohort_order: Sequence[str],
    *,
    method: str = "UMAP",
    subtitles: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """One scatter panel per condition, points coloured by cohort, identical axis limits and equal aspect on all panels.

    Parameters
    ----------
    embeddings : sequence of numpy.ndarray, shape (n_i, 2)
        2-D coordinates of each condition, from **one** shared reducer.
    cohorts : sequence of numpy.ndarray of str, shape (n_i,)
        Cohort label of every point.
    titles : sequence of str
        Panel titles (conditions).
    cohort_order : sequence of str
        Cohorts in legend order (e.g. ``["≈5", "≈50", "≈350"]``).
    method : str
        Axis label prefix (``"UMAP"`` or ``"t-SNE"``).
    subtitles : sequence of str, optional
        A second line per panel (e.g. the cohort silhouette).
    """
    if not (len(embeddings) == len(cohorts) == len(titles)) or not embeddings:
        raise ValueError("embeddings, cohorts and titles must be non-empty and of the same length (one per panel)")
    colours = cohort_colors(list(cohort_order))
    xlim, ylim = shared_limits(embeddings)
    with styled():
        # Panel height follows the data's aspect ratio (equal aspect), plus room for the two-line titles.
        aspect = (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])
        fig = new_figure(1, len(embeddings), panel_size=(4.2, float(np.clip(3.5 * aspect + 1.6, 2.8, 6.5))))
        for j, (ax, emb, lab) in enumerate(zip(fig.axes, embeddings, cohorts, strict=True)):
            emb = np.asarray(emb, dtype=float)
            lab = np.asarray(lab).astype(str)
            # Draw the largest cohort first so that small cohorts stay visible on top.
            order = sorted(cohort_order, key=lambda c: -int(np.count_nonzero(lab == c)))
            for c in order:
                sel = lab == c
                ax.scatter(emb[sel, 0], emb[sel, 1], s=9, alpha=0.75, color=colours[c], linewidths=0, label=c)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel(f"{method} 1")
            ax.set_ylabel(f"{method} 2" if j == 0 else "")
            ax.set_title(titles[j] if subtitles is None else f"{titles[j]}\n{subtitles[j]}")
        handles = [
            mlines.Line2D([], [], marker="o", linestyle="", color=colours[c], markersize=7, label=c)
            for c in cohort_order
        ]
        fig.legend(handles=handles, loc="outside right center", title="cohort\n(interactions)")
        if title:
            fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------ results table


def results_figure(
    labels: Sequence[str],
    metrics: Sequence[str],
    means: np.ndarray,
    ses: np.ndarray,
    published: np.ndarray,
    groups: Sequence[str],
    group_means: np.ndarray,
    group_ses: np.ndarray,
    *,
    title: str | None = None,
    paper_label: str = "paper",
) -> Figure:
    """Left: every metric of every model (bars, 95% error bars; published values as black diamonds where they
    exist). Right: NDCG@100 by user group, one line per model.

    Parameters
    ----------
    labels : sequence of str, length M
        Model names.
    metrics : sequence of str, length K
    means, ses, published : numpy.ndarray, shape (M, K)
        Our means, standard errors, and the published numbers (NaN = none).
    groups : sequence of str, length G
    group_means, group_ses : numpy.ndarray, shape (M, G)
        NDCG@100 per user group (NaN = empty group).
    """
    means, ses, published = (np.asarray(a, dtype=float) for a in (means, ses, published))
    group_means, group_ses = np.asarray(group_means, dtype=float), np.asarray(group_ses, dtype=float)
    m, k = len(labels), len(metrics)
    if means.shape != (m, k) or ses.shape != (m, k) or published.shape != (m, k):
        raise ValueError(f"means, ses and published must have shape (models, metrics) = {(m, k)}")
    if group_means.shape != (m, len(groups)) or group_ses.shape != group_means.shape:
        raise ValueError(f"group_means and group_ses must have shape (models, groups) = {(m, len(groups))}")
    colours = model_colors(labels)
    with styled():
        fig = new_figure(1, 2, panel_size=(5.6, 4.0))
        ax, bx = fig.axes
        x = np.arange(k, dtype=float)
        width = 0.84 / max(m, 1)
        shown_paper = False
        for i, label in enumerate(labels):
            pos = x - 0.42 + width * (i + 0.5)
            ax.bar(
                pos,
                means[i],
                width * 0.92,
                color=colours[label],
                label=label,
                yerr=Z95 * ses[i],
                capsize=2,
                ecolor="0.2",
            )
            ok = np.isfinite(published[i])
            if ok.any():
                ax.scatter(
                    pos[ok],
                    published[i, ok],
                    marker="D",
                    s=22,
                    color="black",
                    zorder=3,
                    label=paper_label if not shown_paper else None,
                )
                shown_paper = True
        ax.set_xticks(x, list(metrics))
        ax.set_ylabel("test metric")
        ax.set_title("test metrics (mean, 95% CI)")
        ax.set_ylim(0, max(1e-3, float(np.nanmax(np.concatenate([means.ravel(), published.ravel()])) * 1.25)))
        gx = np.arange(len(groups), dtype=float)
        for i, label in enumerate(labels):
            ok = np.isfinite(group_means[i])
            bx.errorbar(
                gx[ok] + (i - (m - 1) / 2) * 0.07,
                group_means[i, ok],
                yerr=Z95 * np.nan_to_num(group_ses[i, ok]),
                marker="o",
                markersize=4,
                color=colours[label],
                capsize=2,
                linewidth=1.4,
            )
        bx.set_xticks(gx, list(groups))
        bx.set_xlabel("user group (interactions)")
        bx.set_ylabel("NDCG@100")
        bx.set_title("NDCG@100 by user group (mean, 95% CI)")
        handles, names = ax.get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 7))
        if title:
            fig.suptitle(title)
    return fig
