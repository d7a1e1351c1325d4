"""Figures of the masking job (PAPER.md section 4, Theorem 2.6): masked-distance laws and probability curves.

Every function takes plain arrays and returns a :class:`matplotlib.figure.Figure` drawn in the project style
(:mod:`figures.style`); jobs write it with :func:`figures.style.savefig`.

* :func:`masked_distance_pmf_figure`: the exact pmf of ``D' = ||x_u ⊙ b_u - x_v ⊙ b_v||_1`` of typical pairs,
  one panel per (rho, stratum), with the clean distance ``d``, ``E[D']`` and the thresholds marked and the
  contraction mass ``Pr[D' <= delta]`` shaded.
* :func:`probability_curves_figure`: mean ``Pr[D' <= delta]`` and ``Pr[D' >= delta]`` per stratum against
  rho, for the clean and the masked-neighbourhood threshold, chosen rho(s) marked.
* :func:`contraction_binned_figure`: binned mean ``Pr[D' <= delta]`` with 95% intervals against the distance
  relative to the anchor's radius, ``d / r_k(u)``, per stratum (what ``contraction_vs_distance`` shows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from figures.style import STRATUM_LABELS, new_figure, ordered_strata, stratum_colors, styled
from models.lazy import lazy_import

if TYPE_CHECKING:
    from matplotlib.figure import Figure

mlines = lazy_import("matplotlib.lines")


def _row_major(rows: Sequence[Sequence[mlines.Line2D]], ncols: int) -> list[mlines.Line2D]:
    """Legend handles laid out one given row per legend row (matplotlib fills legends column by column)."""
    blank = mlines.Line2D([], [], linestyle="", label=" ")
    grid = [list(r) + [blank] * (ncols - len(r)) for r in rows]
    return [grid[i][j] for j in range(ncols) for i in range(len(grid))]


@dataclass(frozen=True)
class TypicalPair:
    """The exact law of one pair's masked distance, for plotting.

    Attributes
    ----------
    stratum : str
    rho : float
        Keep probability.
    d, c : int
        Clean distance ``|S_u Δ S_v|`` and overlap ``|S_u ∩ S_v|``.
    pmf : numpy.ndarray, shape (d + c + 1,)
        ``Pr[D' = j]`` (:func:`geometry.masking.masked_distance_pmf`).
    delta, delta_masked : float
        Clean and masked-neighbourhood thresholds of the pair.
    """

    stratum: str
    rho: float
    d: int
    c: int
    pmf: np.ndarray
    delta: float
    delta_masked: float


def masked_distance_pmf_figure(pairs: Sequence[TypicalPair], delta_label: str = "δ", rule: str = "") -> Figure:
    """Grid of pmfs of ``D'``: rows are rho values, columns strata; contraction mass shaded.

    Parameters
    ----------
    pairs : sequence of TypicalPair
        One per (rho, stratum).
    delta_label : str
        How the clean threshold is described in the legend (e.g. ``"δ = u's 10-NN distance"``).
    rule : str
        How the typical pairs were chosen, for the title (e.g. ``"pair nearest its stratum's median (d, c)"``).
    """
    if not pairs:
        raise ValueError("masked_distance_pmf_figure needs at least one pair")
    rhos = sorted({p.rho for p in pairs})
    strata = ordered_strata([p.stratum for p in pairs])
    colours = stratum_colors(strata)
    with styled():
        fig = new_figure(len(rhos), len(strata), panel_size=(3.9, 2.9))
        axes = np.asarray(fig.axes).reshape(len(rhos), len(strata))
        for ax in axes.ravel():
            ax.set_visible(False)
        for p in pairs:
            ax = axes[rhos.index(p.rho), strata.index(p.stratum)]
            ax.set_visible(True)
            colour = colours[p.stratum]
            k = np.arange(p.pmf.size)
            mean = float(np.dot(k, p.pmf))
            # Show the bulk of the law: the support outside [0.1%, 99.9%] quantiles is invisible anyway.
            cdf = np.cumsum(p.pmf)
            lo = int(np.searchsorted(cdf, 1e-3))
            hi = int(np.searchsorted(cdf, 1.0 - 1e-3))
            lo = max(0, min(lo, int(np.floor(min(p.delta, p.delta_masked, p.d)))) - 2)
            hi = min(p.pmf.size - 1, max(hi, int(np.ceil(max(p.delta, p.delta_masked, p.d)))) + 2)
            ks, mass = k[lo : hi + 1], p.pmf[lo : hi + 1]
            # one filled step polygon per region (not one patch per bar: keeps PNG/PDF fast and small)
            edges = np.append(ks, ks[-1] + 1) - 0.5
            inside = np.where(ks <= np.floor(p.delta), mass, 0.0)
            ax.stairs(mass - inside, edges, fill=True, color=colour, alpha=0.35, linewidth=0)
            ax.stairs(inside, edges, fill=True, color=colour, alpha=0.9, linewidth=0)
            ax.stairs(mass, edges, color=colour, linewidth=0.8)
            ax.axvline(p.d, color="black", lw=1.6)
            ax.axvline(mean, color="0.35", lw=1.2, ls=(0, (1, 1.5)))
            ax.axvline(p.delta, color="black", lw=1.3, ls="--")
            if p.delta_masked != p.delta:
                ax.axvline(p.delta_masked, color="0.45", lw=1.3, ls="-.")
            contraction = float(p.pmf[: int(np.floor(p.delta)) + 1].sum()) if p.delta >= 0 else 0.0
            ax.set_title(
                f"{p.stratum}, ρ = {p.rho:g}\nd = {p.d}, c = {p.c}, Pr[D' ≤ δ] = {contraction:.2f}", fontsize=10
            )
            ax.set_xlabel("masked distance D'")
            ax.set_ylabel("Pr[D' = j]")
            ax.set_ylim(0, None)
        handles = [
            mlines.Line2D([], [], color="black", lw=1.6, label="clean distance d"),
            mlines.Line2D([], [], color="0.35", lw=1.2, ls=(0, (1, 1.5)), label="E[D'] = ρd + 2ρ(1-ρ)c"),
            mlines.Line2D([], [], color="black", lw=1.3, ls="--", label=delta_label),
            mlines.Line2D([], [], color="0.45", lw=1.3, ls="-.", label="masked-neighbourhood δ"),
            mlines.Line2D([], [], color="0.3", lw=6, alpha=0.9, label="mass with D' ≤ δ (contraction)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        title = "Exact law of the masked distance D' of typical pairs (independent masks)"
        fig.suptitle(title + (f"\ntypical: the {rule}" if rule else ""))
    return fig


def probability_curves_figure(
    rho_grid: np.ndarray,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    chosen: Sequence[float],
    delta_label: str = "δ",
) -> Figure:
    """Mean contraction and expansion probability per stratum against rho.

    Parameters
    ----------
    rho_grid : numpy.ndarray, shape (R,)
        Keep probabilities in ``(0, 1]``, increasing.
    curves : mapping stratum -> mapping
        Arrays of shape (R,) under the keys ``p_contraction``, ``p_expansion`` (clean threshold) and
        ``p_contraction_masked``, ``p_expansion_masked`` (masked-neighbourhood threshold). When every stratum
        also has ``p_expansion_strict`` and ``p_expansion_masked_strict`` (``Pr[D' > δ]``), the expansion panel
        shows those: ``Pr[D' ≥ δ]`` counts ties ``D' = δ``, which near pairs (``d ≤ δ``) have even at ρ = 1.
    chosen : sequence of float
        The rho values of the run, marked by vertical lines.
    delta_label : str
        Description of the clean threshold, for the legend.
    """
    rho_grid = np.asarray(rho_grid, dtype=np.float64)
    strata = ordered_strata(list(curves))
    colours = stratum_colors(strata)
    with styled():
        fig = new_figure(1, 2, panel_size=(4.9, 3.7), sharey=True)
        strict = all("p_expansion_strict" in c and "p_expansion_masked_strict" in c for c in curves.values())
        panels = (
            ("p_contraction", "Contraction: Pr[D' ≤ δ]"),
            ("p_expansion_strict", "Expansion: Pr[D' > δ] (strict, ties D' = δ excluded)")
            if strict
            else ("p_expansion", "Expansion: Pr[D' ≥ δ]"),
        )
        for ax, (key, title) in zip(fig.axes, panels, strict=True):
            for s in strata:
                ax.plot(rho_grid, curves[s][key], color=colours[s], lw=2.0)
                masked = key.replace("_strict", "_masked_strict") if key.endswith("_strict") else f"{key}_masked"
                ax.plot(rho_grid, curves[s][masked], color=colours[s], lw=1.6, ls="--")
            for r in chosen:
                ax.axvline(r, color="0.3", lw=1.0, ls=":")
            # the chosen rho values label the top edge, where they cannot cover a curve; close values get
            # shorter, then vertical labels so that they never overlap
            marks = sorted(chosen)
            gap = min(np.diff(marks), default=1.0)
            labels = [f"ρ = {r:g}" if gap >= 0.13 else f"{r:g}" for r in marks]
            top = ax.secondary_xaxis("top")
            top.set_xticks(marks, labels=labels, rotation=90 if gap < 0.08 else 0)
            top.tick_params(axis="x", length=3, labelsize=8.5, colors="0.25", pad=1)
            ax.set_title(title, fontsize=10.5)
            ax.set_xlabel("keep probability ρ (1 = clean input)")
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(-0.02, 1.02)
        fig.axes[0].set_ylabel("mean probability over pairs")
        first = [mlines.Line2D([], [], color=colours[s], lw=2.0, label=STRATUM_LABELS.get(s, s)) for s in strata]
        second = [
            mlines.Line2D([], [], color="0.3", lw=2.0, label=f"solid: {delta_label}"),
            mlines.Line2D([], [], color="0.3", lw=1.6, ls="--", label="dashed: masked-neighbourhood δ"),
        ]
        ncols = max(len(first), len(second))
        fig.legend(handles=_row_major([first, second], ncols), loc="outside lower center", ncols=ncols, frameon=False)
        fig.suptitle("Masking moves pairs into and out of u's sharing radius: exact probabilities per stratum")
    return fig


def contraction_binned_figure(bins, delta_label: str = "δ", radius_label: str = "u's k-NN distance") -> Figure:
    """Mean contraction probability per bin of ``d / r_k(u)`` with its 95% interval, per stratum, one panel per rho.

    Parameters
    ----------
    bins : pandas.DataFrame
        One row per (rho, stratum, bin) with ``rho``, ``stratum``, ``x_low``, ``x_high``, ``x_center`` (median
        ``d / r_k`` of the bin's pairs), ``pairs``, ``mean``, ``ci_low``, ``ci_high``
        (:func:`analyses.masking_contraction.contraction_bins`). Bins with fewer than 3 pairs are not drawn.
    delta_label : str
        How the threshold δ of ``Pr[D' ≤ δ]`` is set, for the axis label.
    radius_label : str
        What ``r_k(u)`` is, for the axis label.
    """
    required = {"rho", "stratum", "x_center", "pairs", "mean", "ci_low", "ci_high"}
    if missing := required - set(bins.columns):
        raise ValueError(f"bins lacks the columns {sorted(missing)}")
    shown = bins[bins["pairs"] >= 3]
    rhos = sorted(set(bins["rho"].tolist())) or [1.0]
    names = ordered_strata(bins["stratum"].astype(str).tolist())
    colours = stratum_colors(names)
    with styled():
        fig = new_figure(1, len(rhos), panel_size=(max(4.6, 7.5 / len(rhos)), 3.6), sharey=True)
        for ax, r in zip(fig.axes, rhos, strict=True):
            for k, s in enumerate(names):
                g = shown[(shown["rho"] == r) & (shown["stratum"] == s)].sort_values("x_center")
                if not len(g):
                    continue
                # strata side by side within a bin: a small multiplicative offset keeps the intervals apart
                x = g["x_center"].to_numpy() * 1.03 ** (k - (len(names) - 1) / 2)
                ax.vlines(x, g["ci_low"], g["ci_high"], color=colours[s], lw=1.4, alpha=0.8)
                ax.plot(x, g["mean"], color=colours[s], lw=0.9, alpha=0.6)
                ax.scatter(x, g["mean"], s=22, color=colours[s], linewidths=0, zorder=3)
            ax.axvline(1.0, color="0.3", lw=1.0, ls=":")
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel(f"d / δ,  δ = r_k(u) = {radius_label} (log)")
            ax.set_title(f"ρ = {r:g}")
        fig.axes[0].set_ylabel(f"mean Pr[D' ≤ δ] per bin\n{delta_label}")
        handles = [
            mlines.Line2D([], [], marker="o", ls="-", color=colours[s], markersize=5, label=STRATUM_LABELS.get(s, s))
            for s in names
        ]
        handles.append(mlines.Line2D([], [], color="0.3", lw=1.0, ls=":", label="d = r_k(u)"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
        fig.suptitle(
            "Contraction probability against the distance relative to u's radius\n"
            "(means per bin of d / δ, 95% Wilson intervals over anchors)",
            fontsize=11,
        )
    return fig
