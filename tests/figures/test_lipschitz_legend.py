"""The Lipschitz panel of ``local_vs_global``: its legend covers neither the bound lines nor the pairs (issue 10)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox

from figures.geometry import lipschitz_transport_figure


def _quick_like_figure(n_lipschitz_violations=None):
    # pairs like the quick run's: W2 / L1 from about 0.005 to 0.36 over L1 from 2 to 600, certificates 1.7 and 59
    rng = np.random.default_rng(0)
    l1 = np.round(np.geomspace(2, 600, 400) * rng.uniform(0.8, 1.2, 400))
    upper = l1 * np.exp(rng.uniform(np.log(0.005), np.log(0.36), 400))
    lower = 0.98 * upper
    strata = np.array(["near", "random", "far-related", "planted"] * 100)
    lines = {
        "certified (all inputs)": 58.9,
        "certified (encoded users)": 1.72,
        "max empirical W2/L1": 0.36,
        "median empirical W2/L1": 0.02,
    }
    fig = lipschitz_transport_figure(l1, lower, upper, strata, 3 * upper + 1, lines, 0, n_lipschitz_violations)
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def test_the_legend_covers_no_bound_line_and_no_pair():
    fig = _quick_like_figure()
    ax = fig.axes[0]
    legend = ax.get_legend()
    box = legend.get_window_extent()
    lines = ax.get_lines()
    assert len(lines) == 4  # every line is drawn
    for line in lines:
        # the visible part of the line: its extent clipped to the panel
        visible = Bbox.intersection(line.get_window_extent(), ax.bbox)
        assert visible is None or not box.overlaps(visible), line.get_label()
    for coll in ax.collections:
        points = coll.get_offset_transform().transform(coll.get_offsets())
        if len(points):
            assert box.count_contains(points) == 0
    # the legend stays on the figure
    assert Bbox.intersection(box, fig.bbox) is not None and box.width <= fig.bbox.width


def test_the_transport_panel_names_its_count_a_unit_check():
    fig = _quick_like_figure(n_lipschitz_violations=0)
    bx = fig.axes[1]
    assert "unit check: holds by construction (a violation is a bug)" in bx.get_title()
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("unit check: holds by construction (a violation is a bug)" in t for t in texts)
