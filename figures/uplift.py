"""Figure of :mod:`analyses.pia_uplift`: how lambda_A was chosen, and the PIA gain seed by seed and across seeds.

:func:`uplift_figure` takes plain numbers and returns a :class:`matplotlib.figure.Figure` drawn in the project style
(:mod:`figures.style`); the job writes it with :func:`figures.style.savefig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from figures.style import model_colors, new_figure, styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class UpliftArm:
    """What the figure shows of one architecture.

    Attributes
    ----------
    label : str
        Model name, e.g. ``"Multi-VAE"`` (its colour comes from :data:`figures.style.MODEL_COLORS`).
    lambdas : sequence of float
        The lambda_A grid (> 0), increasing.
    val_ndcg : sequence of float
        Best-epoch validation NDCG@100 of the PIA model at each lambda_A (tuning seed).
    baseline_val_ndcg : float
        The same for the model without PIA (a horizontal line; NaN: not drawn).
    chosen : float
        The chosen lambda_A (marked).
    seeds : sequence of int
        The seeds of the main comparison.
    gains, gain_ses : sequence of float
        Per seed: mean paired per-user difference PIA - no PIA of test NDCG@100 and its standard error.
    mean : float
        Mean of the per-seed gains.
    ci : (float, float) or None
        Student-t interval of that mean across seeds (None: one seed, no interval).
    verdict : str
        The decision rule's verdict, printed under the architecture.
    capped : sequence of float
        The lambda_A values whose model peaked at the training cap (drawn hollow: lower bounds).
    """

    label: str
    lambdas: Sequence[float]
    val_ndcg: Sequence[float]
    baseline_val_ndcg: float
    chosen: float
    seeds: Sequence[int]
    gains: Sequence[float]
    gain_ses: Sequence[float]
    mean: float
    ci: tuple[float, float] | None
    verdict: str
    capped: Sequence[float] = ()


def uplift_figure(arms: Sequence[UpliftArm], *, level: float = 0.95, title: str | None = None) -> Figure:
    """Left: validation NDCG@100 against lambda_A (log axis) per architecture, the choice marked by a star, the
    values of models that peaked at the training cap hollow (lower bounds), the model without PIA as a dashed line.
    Right: the per-seed paired gains (dots, +- 1 standard error over test users) and their mean across seeds with
    its Student-t interval (diamond, thick bar), a zero line.

    Raises
    ------
    ValueError
        No architecture, or arrays of mismatched lengths.
    """
    if not arms:
        raise ValueError("uplift_figure needs at least one architecture")
    for arm in arms:
        if len(arm.lambdas) != len(arm.val_ndcg):
            raise ValueError(f"{arm.label}: {len(arm.lambdas)} lambdas but {len(arm.val_ndcg)} validation values")
        if not len(arm.seeds) == len(arm.gains) == len(arm.gain_ses):
            raise ValueError(f"{arm.label}: seeds, gains and gain_ses must have the same length")
    # each model and its PIA variant share a hue (figures.style.MODEL_COLORS): the PIA curve light, the model dark
    colours: Mapping[str, str] = model_colors([name for a in arms for name in (a.label, f"{a.label} + PIA")])
    with styled():
        fig = new_figure(1, 2, panel_size=(5.2, 3.9))
        ax, bx = fig.axes
        any_capped = False
        for arm in arms:
            c = colours[arm.label]
            light = colours[f"{arm.label} + PIA"]
            lam = np.asarray(arm.lambdas, dtype=float)
            val = np.asarray(arm.val_ndcg, dtype=float)
            ax.plot(lam, val, marker="o", markersize=4, color=light, label=f"{arm.label} + PIA")
            if np.isfinite(arm.baseline_val_ndcg):
                ax.axhline(arm.baseline_val_ndcg, color=c, linestyle="--", linewidth=1.1, label=f"{arm.label}, no PIA")
            pick = np.flatnonzero(np.isclose(lam, arm.chosen))
            if pick.size:
                ax.scatter(lam[pick], val[pick], marker="*", s=170, color=light, edgecolor="black", zorder=4)
            capped = np.isin(lam, np.asarray(arm.capped, dtype=float))
            if capped.any():
                ax.scatter(lam[capped], val[capped], s=42, facecolor="white", edgecolor=light, linewidth=1.6, zorder=3)
                any_capped = True
        ax.set_xscale("log")
        ax.set_xlabel("λ_A (log scale; ★ chosen" + ("; ○ peaked at the epoch cap)" if any_capped else ")"))
        ax.set_ylabel("validation NDCG@100 (best epoch)")
        ax.set_title("λ_A chosen on validation (tuning seed)")
        ax.legend(loc="best")

        ticks, names = [], []
        for i, arm in enumerate(arms):
            c = colours[arm.label]
            n = len(arm.seeds)
            offsets = np.linspace(-0.3, 0.05, n) if n > 1 else np.array([-0.12])
            g = np.asarray(arm.gains, dtype=float)
            e = np.asarray(arm.gain_ses, dtype=float)
            bx.errorbar(
                i + offsets,
                g,
                yerr=np.nan_to_num(e),
                fmt="o",
                color=c,
                markersize=5,
                capsize=3,
                label="per seed ± 1 SE (users)" if i == 0 else None,
            )
            if arm.ci is not None:
                low, high = arm.ci
                bx.errorbar(
                    [i + 0.25],
                    [arm.mean],
                    yerr=[[arm.mean - low], [high - arm.mean]],
                    fmt="D",
                    color=c,
                    markeredgecolor="black",
                    markersize=7,
                    elinewidth=2.5,
                    capsize=5,
                    label=f"across seeds, {level:.0%} interval" if i == 0 else None,
                )
            else:
                bx.scatter([i + 0.25], [arm.mean], marker="D", s=45, color=c, edgecolor="black", zorder=3)
            ticks.append(i)
            names.append(f"{arm.label}\nλ_A = {arm.chosen:g}\n{arm.verdict}")
        bx.axhline(0.0, color="0.3", linewidth=1.0)
        bx.set_xticks(ticks, names)
        bx.set_xlim(-0.6, len(arms) - 0.4)
        bx.set_ylabel("Δ test NDCG@100, PIA - no PIA")
        bx.set_title("paired gain per seed and across seeds")
        bx.legend(loc="best")
        if title:
            fig.suptitle(title)
    return fig
