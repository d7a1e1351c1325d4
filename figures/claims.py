"""The claims ledger figure: one panel per claim, each dataset's estimate with its interval, coloured by verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from figures.style import new_figure, palette, savefig, styled
from models.lazy import lazy_import

ticker = lazy_import("matplotlib.ticker")

VERDICT_ORDER = ("supported", "not supported", "inconclusive")


def verdict_colors() -> dict[str, str]:
    """Fixed colours of the three verdicts (colour-blind safe palette: blue, vermilion, grey)."""
    colours = palette()
    return {"supported": colours[0], "not supported": colours[1], "inconclusive": "#8c8c8c"}


def plot_ledger(rows: Sequence[Mapping], stem: Path, ncols: int = 4) -> list[Path]:
    """Forest plot of the ledger: a panel per claim, a row per dataset, the point estimate with its interval
    (none drawn where the row has none) and the verdict as colour, the value the rule compares with as a dotted
    line (``reference``); unit checks are marked in the title.

    Parameters
    ----------
    rows : sequence of mapping
        Rows of ``claims.json`` (keys ``claim``, ``dataset``, ``estimate``, ``ci``, ``verdict``, ``kind``).
    stem : Path
        Output path without suffix (PNG and PDF are written).

    Returns
    -------
    list of Path
    """
    claims = list(dict.fromkeys(r["claim"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    colours = verdict_colors()
    n = max(1, len(claims))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    with styled():
        fig = new_figure(nrows, ncols, panel_size=(3.6, 0.45 * len(datasets) + 1.3))
        axes = fig.axes
        for ax, claim in zip(axes, claims, strict=False):
            sub = [r for r in rows if r["claim"] == claim]
            kind = sub[0]["kind"]
            reference = sub[0].get("reference")
            if reference is not None:
                ax.axvline(reference, color="0.35", lw=0.9, ls=":")
            for r in sub:
                y = datasets.index(r["dataset"])
                c = colours[r["verdict"]]
                if r["estimate"] is None:
                    ax.text(
                        0.5, y, "not measured", color=c, ha="center", va="center", transform=ax.get_yaxis_transform()
                    )

                    continue
                if r["ci"] is not None:
                    ax.plot(r["ci"], [y, y], color=c, lw=2, solid_capstyle="butt")
                ax.plot([r["estimate"]], [y], "o", color=c, ms=5)
            ax.set_yticks(np.arange(len(datasets)), datasets)
            ax.set_ylim(len(datasets) - 0.5, -0.5)
            ax.set_title(claim + (" (unit check)" if kind == "unit check" else ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
        for ax in axes[len(claims) :]:
            ax.set_visible(False)
        handles = [axes[0].plot([], [], "o-", color=colours[v], label=v)[0] for v in VERDICT_ORDER]
        fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
        fig.suptitle("Claims ledger: estimate and interval per dataset (colour = verdict)")
        return savefig(fig, stem.parent, stem.name)
