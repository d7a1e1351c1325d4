"""figures.uplift: the lambda_A panel marks the grid models that peaked at the training cap."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgba

from figures.uplift import UpliftArm, uplift_figure


def _arm(capped=()) -> UpliftArm:
    return UpliftArm(
        label="RecVAE",
        lambdas=[0.1, 0.3, 1.0],
        val_ndcg=[0.53, 0.51, 0.47],
        baseline_val_ndcg=0.52,
        chosen=0.1,
        seeds=[0, 1],
        gains=[0.01, 0.02],
        gain_ses=[0.005, 0.006],
        mean=0.015,
        ci=(-0.05, 0.08),
        verdict="inconclusive",
        capped=capped,
    )


def _hollow_points(fig) -> list[tuple[float, float]]:
    ax = fig.axes[0]
    white = to_rgba("white")
    return [
        tuple(xy)
        for coll in ax.collections
        if len(coll.get_facecolors()) and np.allclose(coll.get_facecolors()[0], white)
        for xy in coll.get_offsets()
    ]


def test_capped_grid_models_are_drawn_hollow_and_named_on_the_axis():
    fig = uplift_figure([_arm(capped=[0.3, 1.0])])
    assert sorted(_hollow_points(fig)) == [(0.3, 0.51), (1.0, 0.47)]
    assert "epoch cap" in fig.axes[0].get_xlabel()
    plain = uplift_figure([_arm()])
    assert _hollow_points(plain) == [] and "epoch cap" not in plain.axes[0].get_xlabel()
