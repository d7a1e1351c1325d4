"""One stratum, one cohort: the same colour in the figures of different jobs (read back from the drawn artists)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from figures.geometry import cohort_figure, far_related_figure, lipschitz_transport_figure
from figures.latent import cohort_embedding_figure
from figures.masking import contraction_binned_figure
from figures.style import cohort_colors, stratum_colors


def _scatter_colours(fig) -> set[str]:
    """Face colours of every scatter point drawn in the figure, as lower-case hex (alpha dropped)."""
    out = set()
    for ax in fig.axes:
        for coll in ax.collections:
            for rgba in np.atleast_2d(coll.get_facecolors()):
                if len(rgba):
                    out.add(to_hex(rgba[:3]))
    return out


def _legend(fig) -> dict[str, str]:
    """Legend text -> colour of the handle, over every legend of the figure."""
    out = {}
    for legend in [ax.get_legend() for ax in fig.axes] + list(fig.legends):
        if legend is None:
            continue
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            out[text.get_text()] = to_hex(colour)
    return out


def test_a_stratum_has_one_colour_in_the_masking_and_the_geometry_figures():
    rng = np.random.default_rng(0)
    strata = np.array(["near", "far-related", "planted"] * 10)
    bins = pd.DataFrame(
        {
            "rho": 0.5,
            "stratum": strata,
            "x_center": rng.random(30) * 3 + 0.5,
            "pairs": 10,
            "mean": rng.random(30),
        }
    ).assign(ci_low=lambda t: t["mean"] * 0.8, ci_high=lambda t: t["mean"] * 1.2)
    masking = contraction_binned_figure(bins)
    l1 = rng.integers(1, 50, 30).astype(float)
    bounds = lipschitz_transport_figure(l1, 0.1 * l1, 0.2 * l1, strata, 0.2 * l1 + 1, {"certificate": 1.0})
    pct = {s: rng.random(20) * 100 for s in ("near", "far-related", "planted")}
    curves = far_related_figure(pct, pct)
    want = {to_hex(c) for c in stratum_colors(["near", "far-related", "planted"]).values()}
    assert want <= _scatter_colours(masking)
    assert want <= _scatter_colours(bounds)
    drawn = {to_hex(line.get_color()) for line in curves.axes[0].get_lines()}
    assert want <= drawn


def test_a_cohort_has_one_colour_in_local_vs_global_and_cohorts():
    rng = np.random.default_rng(1)
    names = ["≈5", "≈50", "≈350"]
    labels = np.repeat(np.arange(3), 10)
    coords = rng.normal(size=(30, 2))
    sil = np.array([0.1, 0.2, 0.3])
    pca = cohort_figure(coords, labels, names, sil, sil, 0.2, 0.1)
    umap_like = cohort_embedding_figure([coords], [np.array(names)[labels]], ["clean"], names)
    want = {to_hex(c) for c in cohort_colors(names).values()}
    assert want <= _scatter_colours(pca)
    assert want <= _scatter_colours(umap_like)
    assert len(want) == 3


def test_a_certificate_far_above_the_data_is_listed_not_drawn():
    l1 = np.geomspace(2, 500, 40)
    strata = np.array(["near", "random"] * 20)
    lines = {"loose": 1e7, "tight": 1.0}
    fig = lipschitz_transport_figure(l1, 0.05 * l1, 0.1 * l1, strata, 0.1 * l1 + 1, lines)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["loose: L = 1e+07 (above the panel)", "tight: L = 1"]
    assert len(ax.get_lines()) == 1  # only the tight line
    top = ax.get_ylim()[1]
    assert top <= 0.1 * l1.max() * 1e3 * (1 + 1e-9)  # the data keep at least a third of the decades
    assert top >= 3.0 * 1.0 * l1.min() / 1.5 * (1 - 1e-9)  # the tight line enters at the left edge


def _kl_table(agg_unregularised: float, agg_regularised: float):
    import pandas as pd

    rows = []
    for rho in (1.0, 0.5):
        for beta in (0.0, 1.0):
            mi, agg = 7.0, agg_unregularised if beta == 0 else agg_regularised
            rows.append(
                {
                    "beta_cap": beta,
                    "rho": rho,
                    "mean_kl": mi + agg,
                    "mean_kl_low": mi + agg - 1,
                    "mean_kl_high": mi + agg + 1,
                    "mutual_information": mi,
                    "mutual_information_low": mi - 0.1,
                    "mutual_information_high": mi + 0.1,
                    "kl_aggregate": agg,
                    "kl_aggregate_low": agg - 1,
                    "kl_aggregate_high": agg + 1,
                    "log_components": 7.6,
                }
            )
    return pd.DataFrame(rows)


def test_the_kl_decomposition_turns_logarithmic_only_when_the_budget_spans_decades():
    from figures.geometry import KL_LOG_RATIO, kl_decomposition_figure

    wide = kl_decomposition_figure(_kl_table(900.0, 10.0)).axes[0]  # 907 nats against 7: MI bars would vanish
    narrow = kl_decomposition_figure(_kl_table(40.0, 5.0)).axes[0]  # 47 nats against 5
    assert 907 / 7 > KL_LOG_RATIO > 47 / 5
    assert wide.get_yscale() == "log" and "log scale" in wide.get_title()
    assert narrow.get_yscale() == "linear" and narrow.get_ylim()[0] == 0
    assert wide.get_ylim()[0] <= 7.0 / 2 + 1e-9  # the smallest component stays visible


@pytest.mark.parametrize(("slope", "title"), [(-1.0, "Gain falls"), (0.2, "Gain does not fall")])
def test_the_sharing_radius_title_says_what_the_fit_shows(slope, title):
    import pandas as pd

    from figures.geometry import sharing_radius_figure

    rng = np.random.default_rng(2)
    w1 = rng.random(40) * 10
    gain = 1.0 + slope * w1 + rng.normal(size=40)
    bins = pd.DataFrame(
        {
            "mean_w1": [2.5, 7.5],
            "mean_gain": [gain[w1 < 5].mean(), gain[w1 >= 5].mean()],
            "help_share": [0.5, 0.5],
            "help_low": [0.3, 0.3],
            "help_high": [0.7, 0.7],
            "predicted_help_share": [0.5, 0.5],
        }
    )
    strata = np.array(["latent-near", "random"] * 20)
    change = -(gain * 1e-3)
    fig = sharing_radius_figure(
        w1, gain, strata, change, change, bins, radius=None, radius_ci=None, intercept=1.0, slope=slope
    )
    assert fig.axes[0].get_title().startswith(title)
