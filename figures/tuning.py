"""The tuning figure: validation NDCG@100 of every trial against each searched parameter (:mod:`models.tune`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from figures.style import new_figure, palette, styled
from models.lazy import lazy_import

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ticker = lazy_import("matplotlib.ticker")


def tuning_figure(
    params: Mapping[str, Sequence[object]],
    values: Sequence[float],
    states: Sequence[str],
    *,
    log_params: Sequence[str] = (),
    metric: str = "validation NDCG@100",
    title: str | None = None,
    ncols: int = 3,
) -> Figure:
    """One panel per searched parameter: each trial's validation value against the value it tried.

    Finished trials are filled dots, pruned ones hollow at the last value they reported (a lower bound of what
    they would have reached), the best finished trial a star. Numeric parameters are on a log axis where the
    search was (``log_params``); categorical ones at their category positions, jittered so that ties show.

    Parameters
    ----------
    params : mapping
        Parameter name -> the value of each trial (same order as ``values``).
    values : sequence of float
        Each trial's value (NaN for a trial that reported none).
    states : sequence of str
        ``"complete"`` or ``"pruned"`` per trial.
    log_params : sequence of str
        Parameters searched on a log scale.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(params)
    if not names:
        raise ValueError("no searched parameter to plot")
    y = np.asarray(values, dtype=np.float64)
    state = np.asarray(states)
    done = state == "complete"
    best = int(np.nanargmax(np.where(done, y, np.nan))) if np.any(done & np.isfinite(y)) else None
    colour = palette()[0]
    ncols = min(ncols, len(names))
    with styled():
        fig = new_figure(math.ceil(len(names) / ncols), ncols, panel_size=(3.6, 2.9))
        for ax, name in zip(fig.axes, names, strict=False):
            raw = list(params[name])
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
            if numeric:
                x = np.asarray(raw, dtype=np.float64)
                if name in log_params:
                    ax.set_xscale("log")
                    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            else:
                labels = list(dict.fromkeys(str(v) for v in raw))
                jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(raw))
                x = np.array([labels.index(str(v)) for v in raw], dtype=np.float64) + jitter
                ax.set_xticks(range(len(labels)), labels)
                ax.set_xlim(-0.5, len(labels) - 0.5)
            ax.plot(x[done], y[done], "o", color=colour, ms=5, alpha=0.85, label="finished")
            ax.plot(x[~done], y[~done], "o", mfc="none", color=colour, ms=5, alpha=0.7, label="pruned (last value)")
            if best is not None:
                ax.plot([x[best]], [y[best]], "*", color=palette()[1], ms=12, label="best")
            ax.set_xlabel(name)
            ax.set_ylabel(metric)
        for ax in fig.axes[len(names) :]:
            ax.set_visible(False)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
        fig.suptitle(title or f"{metric} of {len(y)} trials ({int(done.sum())} finished)")
    return fig
