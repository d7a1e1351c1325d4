"""Figure of :mod:`analyses.comparison`: every model's test NDCG@100 across seeds, and its paired difference from
the model it is compared with.

:func:`comparison_figure` takes the comparison rows (plain dicts, :func:`analyses.comparison.comparison_rows`) and
returns a :class:`matplotlib.figure.Figure` in the project style (:mod:`figures.style`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from figures.style import model_colors, new_figure, styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _bar(ax, y: float, value: float, ci: Sequence[float] | None, colour: str, marker: str) -> None:
    err = None if ci is None else [[value - ci[0]], [ci[1] - value]]
    ax.errorbar(
        [value],
        [y],
        xerr=err,
        fmt=marker,
        color=colour,
        markeredgecolor="black",
        markersize=7,
        elinewidth=2.2,
        capsize=4,
    )


def comparison_figure(rows: Sequence[dict], *, level: float = 0.95, title: str | None = None) -> Figure:
    """Left: test NDCG@100 per model, the mean over seeds with its interval across seeds (a square with a thin
    +- 1 SE-over-users bar: one deterministic fit, no spread across seeds), the seeds as small dots. Right: the
    paired difference from the model each row names, per seed (dots, +- 1 SE over users) and across seeds
    (diamond with its interval), a zero line. One line per row, top to bottom in the rows' order (never sorted by
    value).

    Raises
    ------
    ValueError
        No rows.
    """
    if not rows:
        raise ValueError("comparison_figure needs at least one row")
    labels = [r["model"] if len({x["dataset"] for x in rows}) == 1 else f"{r['model']} ({r['dataset']})" for r in rows]
    colours = model_colors([r["model"] for r in rows])
    y = -np.arange(len(rows), dtype=float)
    with styled():
        fig = new_figure(1, 2, panel_size=(5.0, 0.45 * len(rows) + 1.4), sharey=True)
        ax, bx = fig.axes
        for yi, r in zip(y, rows, strict=True):
            c = colours[r["model"]]
            seeds = [p["mean"] for p in r["per_seed"]]
            if len(set(seeds)) > 1:
                ax.scatter(seeds, np.full(len(seeds), yi + 0.18), s=12, color=c, alpha=0.8)
            if r["ci"] is None and r.get("se_over_users") is not None:  # one fit: its SE over users, thin
                se = r["se_over_users"]
                ax.errorbar([r["ndcg@100"]], [yi], xerr=[se], color=c, linewidth=0.9, capsize=2)
            _bar(ax, yi, r["ndcg@100"], r["ci"], c, "s" if r["ci"] is None else "o")
            if r["delta"] is None:
                continue
            d = [p["mean"] for p in r["delta_per_seed"]]
            se = [p["se_over_users"] for p in r["delta_per_seed"]]
            bx.errorbar(d, np.full(len(d), yi + 0.18), xerr=se, fmt="o", color=c, markersize=3.5, capsize=2, alpha=0.8)
            _bar(bx, yi, r["delta"], r["delta_ci"], c, "D")
        ax.set_yticks(y, labels)
        ax.set_xlabel(f"test NDCG@100 (mean over seeds, {level:.0%} interval)")
        ax.set_title("accuracy")
        bx.axvline(0.0, color="black", linewidth=0.9)
        versus = sorted({r["compared_with"] for r in rows if r["compared_with"]})
        bx.set_xlabel(f"paired Δ vs {', '.join(versus) or 'reference'} (• seeds ± 1 SE, ◆ across seeds)")
        bx.set_title("paired difference")
        if title:
            fig.suptitle(title)
    return fig
