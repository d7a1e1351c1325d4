"""The main job, ``python -m analyses.masking_contraction``: a quick synthetic run checked against the library."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from analyses.common import planted_labels
from analyses.masking_contraction import (
    COLUMN_NOTES,
    PROBABILITIES,
    QUICK,
    DeltaRule,
    anchor_neighbourhoods,
    main,
    parse_delta,
    rho_grid,
)
from geometry import (
    contraction_probability,
    expansion_probability,
    hoeffding_contraction_bound,
    hoeffding_expansion_bound,
    masked_distance_moments,
    pair_overlaps,
    rank_threshold,
)
from models.data import load_split
from models.synthetic import make_synthetic

RHOS = (0.5, 0.8)
K = 10
MIN_SHARED = 3
FIGURES = ("masked_distance_pmf", "probability_vs_rho", "contraction_vs_distance")


@pytest.fixture(scope="module")
def quick_run(quick_job) -> dict:
    """One quick run on synthetic data with two rho values (in the session's throw-away cache)."""
    argv = ["--dataset", "synthetic", "--quick", "--rho", *map(str, RHOS)]
    run = quick_job(main, "masking", argv, tables=["summary.csv", "pairs.csv", "curves.csv"])
    split = load_split("synthetic", progress=False)
    return {**run, "split": split, "X": split.train, "train_users": split.train_users}


def test_quick_run_writes_every_file_and_names_the_folder(quick_run, check_outputs):
    check_outputs(quick_run, FIGURES)
    # the printed table shows every stratum at every rho
    for rho in RHOS:
        assert f"ρ = {rho:g}" in quick_run["stdout"]
    for stratum in ("near", "far", "far-related", "planted"):
        assert quick_run["stdout"].count(f"\n{stratum} ") == len(RHOS)


def test_summary_values_lie_in_range(quick_run):
    s = quick_run["summary"]
    assert sorted(s["rho"].unique()) == list(RHOS)
    assert set(s["stratum"]) == {"near", "far", "far-related", "planted"}
    bounded = [*PROBABILITIES, *(f"hoeffding_{p[2:]}" for p in PROBABILITIES), "share_expected_expansion"]
    bounded += ["mc_in_ci", "mc_max_abs_diff"]
    values = s[bounded].to_numpy()
    assert np.all((values >= 0) & (values <= 1))
    assert (s["pairs"] >= 1).all() and (s.loc[s["stratum"] == "near", "pairs"] == QUICK["pairs"]).all()
    assert (s["mc_pairs"] == np.minimum(s["pairs"], QUICK["mc_pairs"])).all()
    assert (s["mc_draws"] == QUICK["mc_draws"]).all()
    assert set(COLUMN_NOTES) <= set(s.columns)


def test_summary_recomputes_from_pairs_csv(quick_run):
    s = quick_run["summary"].set_index(["rho", "stratum"]).sort_index()
    p = quick_run["pairs"]
    g = p.groupby(["rho", "stratum"])
    means = {
        "mean_d": "d",
        "mean_c": "c",
        "share_expected_expansion": "expected_expansion",
        "mean_expected_distance": "expected_distance",
        "mean_delta": "delta",
        "mean_delta_masked": "delta_masked",
        **{c: c for c in PROBABILITIES},
        **{f"hoeffding_{c[2:]}": f"hoeffding_{c[2:]}" for c in PROBABILITIES},
    }
    for column, source in means.items():
        np.testing.assert_allclose(s[column], g[source].mean().sort_index(), rtol=1e-9, err_msg=column)
    np.testing.assert_array_equal(s["pairs"], g.size().sort_index())
    mc = p[p["mc"]].groupby(["rho", "stratum"])
    np.testing.assert_allclose(s["mc_in_ci"], mc["mc_in_ci"].mean().sort_index(), rtol=1e-9)
    np.testing.assert_allclose(s["mc_max_abs_diff"], mc["mc_max_abs_diff"].max().sort_index(), rtol=1e-9)


def test_pair_geometry_and_probabilities_equal_the_library(quick_run):
    p, X = quick_run["pairs"], quick_run["X"]
    overlap = pair_overlaps(X, p["anchor"].to_numpy(), p["other"].to_numpy())
    np.testing.assert_array_equal(p["d"], overlap.d)
    np.testing.assert_array_equal(p["c"], overlap.c)
    np.testing.assert_array_equal(p["anchor_user"], quick_run["train_users"][p["anchor"]])
    sample = p.groupby(["rho", "stratum"]).head(4)
    for rho, rows in sample.groupby("rho"):
        d, c, anchors = rows["d"].to_numpy(), rows["c"].to_numpy(), rows["anchor"].to_numpy()
        # --delta rank: u's k-th neighbour distance, clean and in expected masked distances
        np.testing.assert_array_equal(rows["delta"], rank_threshold(X, K, queries=anchors))
        np.testing.assert_array_equal(rows["delta_masked"], rank_threshold(X, K, rho=rho, queries=anchors))
        delta, delta_m = rows["delta"].to_numpy(), rows["delta_masked"].to_numpy()
        for column, fn, threshold in (
            ("p_contraction", contraction_probability, delta),
            ("p_expansion", expansion_probability, delta),
            ("p_contraction_masked", contraction_probability, delta_m),
            ("p_expansion_masked", expansion_probability, delta_m),
            ("hoeffding_contraction", hoeffding_contraction_bound, delta),
            ("hoeffding_expansion_masked", hoeffding_expansion_bound, delta_m),
        ):
            np.testing.assert_allclose(rows[column], fn(d, c, rho, threshold), rtol=1e-12, atol=1e-15, err_msg=column)
        np.testing.assert_allclose(rows["expected_distance"], masked_distance_moments(d, c, rho)[0], rtol=1e-12)
        np.testing.assert_array_equal(rows["expected_expansion"], (c / np.maximum(d, 1e-300)) > 1 / (2 * rho))


def test_monte_carlo_agrees_with_the_exact_law(quick_run):
    s, p = quick_run["summary"], quick_run["pairs"]
    assert (s["mc_in_ci"] >= 0.8).all()  # about 0.95 expected
    mc = p[p["mc"]]
    for name in PROBABILITIES:
        key = f"mc_{name[2:]}"
        assert ((mc[f"{key}_low"] <= mc[key]) & (mc[key] <= mc[f"{key}_high"])).all()
        assert np.all(np.abs(mc[key] - mc[name]) <= mc["mc_max_abs_diff"] + 1e-12)
    assert p.loc[~p["mc"], "mc_contraction"].isna().all()


def test_near_pairs_are_closer_than_far_pairs(quick_run):
    p = quick_run["pairs"]
    p = p[p["rho"] == RHOS[0]]
    near = p[p["stratum"] == "near"].set_index("anchor")
    far = p[p["stratum"] == "far"].set_index("anchor")
    assert (near["d"] <= near["anchor_knn_radius"]).all()
    assert (far["d"] > far["anchor_median_distance"]).all()
    both = pd.merge(near, far, left_index=True, right_index=True, suffixes=("_near", "_far"))
    assert len(both) == len(near) and (both["d_near"] < both["d_far"]).all()
    assert near["d"].median() < far["d"].median()


def test_far_related_pairs_follow_the_documented_rule(quick_run):
    p = quick_run["pairs"]
    rel = p[p["stratum"] == "far-related"]
    assert len(rel) > 0
    assert (rel["related_min"] >= MIN_SHARED).all() and (rel["c"] >= rel["related_min"]).all()
    assert (rel["d"] > rel["anchor_median_distance"]).all()
    # related_min is u's median overlap with its kNN (when above MIN_SHARED)
    X = quick_run["X"]
    anchors = rel["anchor"].unique()[:5]
    from geometry import knn

    nbrs = knn(X, K, "l1", queries=anchors).indices
    overlaps = pair_overlaps(X, np.repeat(anchors, K), nbrs.ravel()).c.reshape(-1, K)
    expected = np.maximum(MIN_SHARED, np.median(overlaps, axis=1))
    got = rel.drop_duplicates("anchor").set_index("anchor").loc[anchors, "related_min"]
    np.testing.assert_allclose(got, expected)


def test_planted_pairs_are_the_generators_far_related_pairs(quick_run):
    p = quick_run["pairs"]
    planted = p[(p["stratum"] == "planted") & (p["rho"] == RHOS[0])]
    truth = {tuple(r) for r in make_synthetic().far_related_pairs.tolist()}
    assert len(planted) > 0
    assert all((a, b) in truth for a, b in zip(planted["anchor_user"], planted["other_user"], strict=True))
    assert planted["same_group"].all() and (planted["c"] <= 1).all()


def test_curves_pass_through_the_table_at_the_chosen_rho(quick_run):
    s = quick_run["summary"].set_index(["rho", "stratum"])
    curves = quick_run["curves"].set_index(["rho", "stratum"])
    assert sorted(curves.index.get_level_values(0).unique()) == list(rho_grid(QUICK["grid"], list(RHOS)))
    for name in PROBABILITIES:
        np.testing.assert_allclose(curves.loc[s.index, name], s[name], rtol=1e-12)
    assert (curves[list(PROBABILITIES)].to_numpy() >= 0).all() and (curves[list(PROBABILITIES)].to_numpy() <= 1).all()


def test_summary_json_records_arguments_dataset_and_timing(quick_run):
    j = quick_run["json"]
    assert j["arguments"]["dataset"] == "synthetic" and j["arguments"]["rho"] == list(RHOS)
    assert j["resolved"]["pairs"] == QUICK["pairs"] and j["resolved"]["k"] == K
    assert j["dataset"]["train_users"] == quick_run["X"].shape[0]
    assert Path(j["dataset"]["split_cache"]).name.startswith("synthetic-")
    assert j["timing_seconds"]["total"] > 0 and j["delta"]["rule"] == "rank"
    assert len(j["table"]) == len(quick_run["summary"])


def test_anchor_neighbourhoods_match_brute_force():
    rng = np.random.default_rng(3)
    X = sp.random(40, 30, density=0.25, random_state=4, format="csr", dtype=np.float32)
    X.data[:] = 1.0
    queries = np.array([0, 5, 17, 39])
    grid = np.array([0.3, 0.5, 1.0])
    nb = anchor_neighbourhoods(X, queries, 3, 1, grid, rng)
    dense = X.toarray().astype(np.int64)
    D = np.abs(dense[:, None, :] - dense[None, :, :]).sum(axis=2)
    C = dense @ dense.T
    for row, u in enumerate(queries):
        others = np.delete(np.arange(40), u)
        assert nb.median[row] == np.median(D[u, others])
        for j, rho in enumerate(grid):
            assert nb.masked_rank[j, row] == rank_threshold(X, 3, rho=rho, queries=[u])[0]
        v = nb.far[row]
        if v >= 0:
            assert v != u and D[u, v] > nb.median[row] and v not in nb.knn.indices[row]
        else:
            assert not np.any(D[u, others] > nb.median[row])
        w = nb.far_related[row]
        if w >= 0:
            assert D[u, w] > nb.median[row] and C[u, w] >= nb.related_min[row] >= 1


def test_delta_rules():
    d = np.array([0, 4, 10])
    assert parse_delta("rank") == DeltaRule("rank")
    rule = parse_delta("relative:1.5")
    delta, delta_m = rule.thresholds(d, np.zeros(3), np.zeros(3), 0.5)
    np.testing.assert_allclose(delta, 1.5 * d)
    np.testing.assert_allclose(delta_m, 0.75 * d)
    delta, delta_m = parse_delta("7").thresholds(d, np.zeros(3), np.zeros(3), 0.4)
    np.testing.assert_allclose(delta, 7.0)
    np.testing.assert_allclose(delta_m, 2.8)
    for bad in ("foo", "relative:0", "relative:x", "-3", "nan", "inf"):
        with pytest.raises(ValueError, match="--delta must be"):
            parse_delta(bad)


def test_offline_dataset_gives_one_line_and_exit_code_2(offline_error):
    offline_error(main, ["--rho", "0.5"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--rho", "0"], "--rho"),
        (["--rho", "0.5", "1.5"], "--rho"),
        (["--rho", "nan"], "--rho"),
        (["--rho", "abc"], "--rho"),
        (["--pairs", "0"], "--pairs"),
        (["--delta", "foo"], "--delta"),
        (["--delta", "relative:-1"], "--delta"),
        (["--mc-draws", "0"], "--mc-draws"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(main, ["--dataset", "synthetic", *argv], needle)


def test_planted_labels_detect_a_split_that_is_not_the_default_generator(quick_run):
    split = quick_run["split"]
    X = split.train
    truth, note = planted_labels(split)
    assert note is None and truth["taste_group"].shape == (X.shape[0],)
    assert truth["pairs"].shape[1] == 2 and truth["pairs"].min() >= 0
    trimmed = sp.csr_matrix(X[:, : X.shape[1] - 50])  # as if an item filter had dropped items
    truth, note = planted_labels(replace(split, train=trimmed))
    assert truth is None and "make_synthetic()" in note
    assert planted_labels(replace(split, name="csv:elsewhere")) == (None, None)


def test_realised_drift_is_the_library_value_for_the_anchors_beside_the_exact_law(quick_run):
    """summary.json's realised drift: the library's input_knn_drift over the job's anchors, one entry per rho, with
    the near pairs' exact Pr[D' >= delta_m] beside it; more masking loses more neighbours."""
    from geometry.neighbourhoods import input_knn_drift

    drifts = quick_run["json"]["realised_drift"]
    assert [d["rho"] for d in drifts] == list(RHOS)
    pairs = quick_run["pairs"]
    anchors = np.unique(pairs["anchor"].to_numpy())
    for d in drifts:
        assert d["n_draws"] == QUICK["drift_draws"] and d["k"] == K
        assert d["clean_to_masked"]["n_users"] == anchors.size
        low, high = d["clean_to_masked"]["ci"]
        assert 0 <= low <= d["clean_to_masked"]["mean"] <= high <= 1
        near = pairs[(pairs["rho"] == d["rho"]) & (pairs["stratum"] == "near")]["p_expansion_masked"].mean()
        assert d["near_p_expansion_masked"] == pytest.approx(near)
    # the same anchors with more draws: the job's estimate lies inside the library's interval
    ref = input_knn_drift(quick_run["X"], RHOS[0], K, anchors, n_draws=6, rng=123).summary()["clean_to_masked"]
    assert abs(drifts[0]["clean_to_masked"]["mean"] - ref["mean"]) < 4 * max(ref["se"], 1e-3)
    assert drifts[0]["clean_to_masked"]["mean"] > drifts[1]["clean_to_masked"]["mean"]  # rho 0.5 vs 0.8


# ----------------------------------------------------------------------------------- issue 10: figures and ties


def test_typical_pair_is_typical_in_both_d_and_c():
    """The old rule (d nearest the median d, then c) could pick a pair whose c is extreme."""
    from analyses.masking_contraction import typical_index

    d = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    c = np.array([10, 11, 12, 13, 100, 14, 15, 16, 17])  # the pair at the median d has by far the largest c
    j = typical_index(d, c)
    for values in (d, c):
        assert np.percentile(values, 25) <= values[j] <= np.percentile(values, 75)


def test_typical_pairs_lie_inside_their_strata_quartiles(quick_run):
    p, j = quick_run["pairs"], quick_run["json"]
    assert "median" in j["typical_pair_rule"]
    for pair in j["typical_pairs"]:
        g = p[(p["stratum"] == pair["stratum"]) & (p["rho"] == pair["rho"])]
        for key in ("d", "c"):
            low, high = np.percentile(g[key], [25, 75])
            assert low <= pair[key] <= high, (pair, key)
            assert 25 <= pair[f"{key}_percentile"] <= 75
            assert pair[f"stratum_median_{key}"] == pytest.approx(g[key].median())


def test_strict_expansion_is_zero_for_near_pairs_at_rho_1(quick_run):
    """Near pairs have d <= delta, so without masking Pr[D' > delta] = 0; Pr[D' >= delta] counts the ties d = delta
    (the k-th neighbour itself among them). The figure's expansion panel shows the strict probability."""
    from analyses.masking_contraction import STRICT
    from figures.masking import probability_curves_figure

    curves = quick_run["curves"]
    at_one = curves[(curves["rho"] == 1.0)].set_index("stratum")
    assert at_one.loc["near", "p_expansion_strict"] == 0.0
    assert at_one.loc["near", "p_expansion_masked_strict"] == 0.0
    assert at_one.loc["near", "p_expansion"] > 0  # ties d = delta on the quick data: the artefact the key avoids
    p = quick_run["pairs"]
    np.testing.assert_allclose(p["p_expansion_strict"], 1.0 - p["p_contraction"], atol=1e-12)
    np.testing.assert_allclose(p["p_expansion_masked_strict"], 1.0 - p["p_contraction_masked"], atol=1e-12)
    s = quick_run["summary"]
    assert set(STRICT) <= set(s.columns) and set(STRICT) <= set(COLUMN_NOTES)
    arrays = {name: {k: g[k].to_numpy() for k in (*PROBABILITIES, *STRICT)} for name, g in curves.groupby("stratum")}
    grid = np.sort(curves["rho"].unique())
    fig = probability_curves_figure(grid, arrays, list(RHOS))
    expansion = fig.axes[1]
    assert "Pr[D' > δ]" in expansion.get_title()
    near_colour = expansion.get_lines()[0].get_color()
    near_lines = [ln for ln in expansion.get_lines() if ln.get_color() == near_colour and len(ln.get_xdata()) > 2]
    assert near_lines
    for line in near_lines:
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert y[x == 1.0][0] == 0.0
    delta = quick_run["json"]["delta"]
    assert "Pr[D' > delta]" in delta["expansion_strict"] and "Pr[D' >= delta]" in delta["expansion"]
    assert "p_expansion_strict" in delta["shown_in_figures"]


def test_contraction_bins_are_clustered_means_against_the_relative_distance(quick_run):
    from analyses.masking_contraction import CONTRACTION_BINS_RULE

    bins, p = pd.read_csv(quick_run["out"] / "contraction_bins.csv"), quick_run["pairs"]
    assert "Wilson" in CONTRACTION_BINS_RULE and quick_run["json"]["contraction_bins"]["rule"] == CONTRACTION_BINS_RULE
    x = p["d"] / p["anchor_knn_radius"]
    for (rho, stratum), g in bins.groupby(["rho", "stratum"]):
        sel = p[(p["rho"] == rho) & (p["stratum"] == stratum)]
        xs = x[sel.index]
        assert g["pairs"].sum() == len(sel)
        for _, b in g.iterrows():
            inside = sel[(xs > b["x_low"]) & (xs <= b["x_high"])] if b["x_low"] > 0 else sel[xs <= b["x_high"]]
            assert len(inside) == b["pairs"] and inside["anchor"].nunique() == b["anchors"]
            assert b["mean"] == pytest.approx(inside["p_contraction"].mean())
            assert 0 <= b["ci_low"] <= b["mean"] <= b["ci_high"] <= 1
            assert 1 <= b["n_eff"] <= b["pairs"]
        if stratum == "near":
            assert (g["x_low"] < 1).all()  # near pairs lie inside the anchor's radius: d / delta <= 1
    assert np.isclose(bins["x_high"], 1.0).any()  # 1 is a bin edge


def test_contraction_figure_shows_binned_means_with_intervals():
    from figures.masking import contraction_binned_figure

    bins = pd.DataFrame(
        {
            "rho": 0.5,
            "stratum": ["near", "near", "far", "far"],
            "x_low": [0.0, 0.5, 1.0, 2.0],
            "x_high": [0.5, 1.0, 2.0, 4.0],
            "x_center": [0.3, 0.8, 1.5, 3.0],
            "pairs": [10, 12, 8, 9],
            "anchors": [10, 12, 8, 9],
            "n_eff": [10.0, 12.0, 8.0, 9.0],
            "mean": [0.9, 0.7, 0.2, 0.05],
            "ci_low": [0.6, 0.4, 0.05, 0.01],
            "ci_high": [0.98, 0.88, 0.5, 0.3],
        }
    )
    fig = contraction_binned_figure(bins, "δ = u's 10-NN distance")
    ax = fig.axes[0]
    assert "d / δ" in ax.get_xlabel()
    from matplotlib.collections import PathCollection

    means = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)])
    assert sorted(means.tolist()) == sorted(bins["mean"].tolist())
