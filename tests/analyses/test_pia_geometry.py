"""The PIA geometry job, ``python -m analyses.pia_geometry``: a quick synthetic run checked against the library."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import silhouette_samples

from analyses.encoding import mask_generator, mu_encoder
from analyses.model_options import model_config
from analyses.pia_geometry import QUANTITIES, QUICK, STREAMS, build_parser, cohort_labels, main, summarise
from analyses.trained import get_trained
from geometry.neighbourhoods import encode_masked, mask_variance, masked_knn_drift
from models.data import load_split
from models.evaluation import USER_GROUPS, evaluate, paired_difference
from models.split import HeldOut, Split

EPOCHS = 4
USERS = 300
SEED = 3
LAMBDA = 0.5


ARGV = ["--quick", "--epochs", str(EPOCHS), "--users", str(USERS), "--seed", str(SEED), "--lambda-a", str(LAMBDA)]


@pytest.fixture(scope="module")
def quick_run(quick_job):
    return quick_job(main, "pia", ARGV, tables=["users.csv", "summary.csv", "groups.csv", "paired.csv"])


@pytest.fixture
def cached_models(no_training):
    """The job's two models from its run cache (training again would mean another configuration was used)."""
    args = build_parser().parse_args(ARGV)
    configs = {label: model_config(args, rho=0.5, pia=pia) for label, pia in (("no PIA", 0.0), ("PIA", LAMBDA))}
    return {label: get_trained(c, progress=False).model for label, c in configs.items()}


def test_every_file_is_written_and_the_folder_named(quick_run, check_outputs):
    check_outputs(quick_run, ("geometry", "user_groups"))


def test_values_lie_in_range(quick_run):
    u = quick_run["users"]
    assert len(u) == 2 * USERS and set(u["model"]) == {"no PIA", "PIA"}
    for q in ("drift_draws", "drift_clean", "transfer_clean", "transfer_masked", "purity_clean", "purity_masked"):
        assert u[q].between(0, 1).all(), q
    assert (u["var_b"] >= 0).all() and (u["var_b_relative"] >= 0).all()
    assert u["silhouette_clean"].between(-1, 1).all() and u["silhouette_masked"].between(-1, 1).all()
    g = quick_run["groups"]
    for m in ("recall@20", "recall@50", "ndcg@100"):
        assert g[m].dropna().between(0, 1).all()
    s = quick_run["summary"]
    assert (s["share_lower"].dropna().between(0, 1)).all()


def test_users_are_the_same_for_both_models_and_the_cohorts_are_planted(quick_run):
    u = quick_run["users"]
    a, b = u[u["model"] == "no PIA"], u[u["model"] == "PIA"]
    assert np.array_equal(a["row"].to_numpy(), b["row"].to_numpy()) and a["row"].is_unique
    from models.synthetic import make_synthetic

    truth = make_synthetic().labels_for(a["user"].to_numpy())
    assert (a["cohort"].to_numpy() == np.array([f"≈{t}" for t in truth["target_activity"]])).all()
    assert (a["n_interactions"].to_numpy() == truth["n_interactions"]).all()


def test_per_user_numbers_recompute_with_the_library(quick_run, cached_models):
    u = quick_run["users"]
    split = load_split("synthetic", progress=False)
    rows = u.loc[u["model"] == "PIA", "row"].to_numpy()
    X = sp.csr_matrix(split.train[rows])
    rho = 0.5
    pia = u[u["model"] == "PIA"]
    encode = mu_encoder(cached_models["PIA"])
    var = mask_variance(
        encode, X, rho, QUICK["var_draws"], generator=mask_generator(SEED, STREAMS["variance"])
    ).trace_var
    np.testing.assert_allclose(pia["var_b"].to_numpy(), var, rtol=1e-10)
    base = u[u["model"] == "no PIA"]
    drift = masked_knn_drift(
        mu_encoder(cached_models["no PIA"]),
        X,
        rho,
        10,
        QUICK["drift_draws"],
        "draws",
        generator=mask_generator(SEED, STREAMS["drift_draws"]),
    )
    np.testing.assert_allclose(base["drift_draws"].to_numpy(), drift, rtol=1e-12)
    clean = encode_masked(encode, X, 1.0)
    sil = silhouette_samples(clean, pia["cohort"].to_numpy())
    np.testing.assert_allclose(pia["silhouette_clean"].to_numpy(), sil, rtol=1e-9, atol=1e-12)
    between = clean.var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(pia["var_b_relative"].to_numpy(), var / between, rtol=1e-10)


def test_summary_is_the_mean_of_the_per_user_table(quick_run):
    u, s = quick_run["users"], quick_run["summary"]
    a = u[u["model"] == "no PIA"].set_index("row")
    b = u[u["model"] == "PIA"].set_index("row").loc[a.index]
    allu = s[s["cohort"] == "all"].set_index("quantity")
    assert list(allu.index) == list(QUANTITIES)
    for q in QUANTITIES:
        assert math.isclose(allu.loc[q, "no PIA"], a[q].mean(), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(allu.loc[q, "PIA"], b[q].mean(), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(allu.loc[q, "diff"], (b[q] - a[q]).mean(), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(allu.loc[q, "share_lower"], float((b[q] < a[q]).mean()))
    # a cohort row averages only that cohort's users
    cohort = s.loc[s["cohort"] != "all", "cohort"].iloc[0]
    row = s[(s["cohort"] == cohort) & (s["quantity"] == "var_b")].iloc[0]
    assert math.isclose(row["PIA"], b.loc[b["cohort"] == cohort, "var_b"].mean(), rel_tol=1e-9)


def test_test_metrics_and_paired_differences_equal_the_library(quick_run, cached_models):
    split = load_split("synthetic", progress=False)
    evs = {label: evaluate(m.score, split.test) for label, m in cached_models.items()}
    g = quick_run["groups"].set_index(["label", "group"])
    for label, key_label in (("no PIA", "Multi-VAE"), ("PIA", "Multi-VAE + PIA")):
        for group, s in evs[label].groups(USER_GROUPS).items():
            if s["ndcg@100"]["n"]:
                assert math.isclose(g.loc[(key_label, group), "ndcg@100"], s["ndcg@100"]["mean"], rel_tol=1e-12)
    p = quick_run["paired"].set_index(["group", "metric"])
    d = paired_difference(evs["PIA"], evs["no PIA"], "ndcg@100")
    assert math.isclose(p.loc[("all", "ndcg@100"), "mean"], d["mean"], rel_tol=1e-9, abs_tol=1e-15)
    assert p.loc[("all", "ndcg@100"), "n"] == d["n"]


def test_cohorts_of_real_data_are_the_paper_user_groups():
    lengths = np.array([5, 10, 11, 50, 51, 100, 101, 400])
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    indices = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
    X = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=(lengths.size, 500))
    empty = HeldOut(sp.csr_matrix((0, 500), dtype=np.float32), sp.csr_matrix((0, 500), dtype=np.float32), np.array([]))
    split = Split("csv:x", X, np.arange(lengths.size), empty, empty, np.arange(500))
    labels, order, rule = cohort_labels(split, np.arange(lengths.size))
    assert list(labels) == ["[5-10]", "[5-10]", "[11-50]", "[11-50]", "[51-100]", "[51-100]", "[100+]", "[100+]"]
    assert order == [g[0] for g in USER_GROUPS] and "user groups" in rule


def test_summarise_pairs_users_by_row():
    rng = np.random.default_rng(0)
    rows = np.arange(6)
    base = {q: rng.random(6) for q in QUANTITIES}
    a = pd.DataFrame({"model": "A", "row": rows, "cohort": ["x", "y"] * 3, **base})
    shifted = {q: v + 0.25 for q, v in base.items()}
    b = pd.DataFrame(
        {"model": "B", "row": rows[::-1], "cohort": (["x", "y"] * 3)[::-1], **{q: v[::-1] for q, v in shifted.items()}}
    )
    s = summarise(pd.concat([a, b]), ("A", "B"), ["x", "y"])
    np.testing.assert_allclose(s["diff"], 0.25)
    assert (s["share_lower"] == 0).all() and (s["diff_se"] < 1e-12).all()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--rho", "1.5"], "--rho"),
        (["--lambda-a", "0"], "--lambda-a"),
        (["--var-draws", "1"], "--var-draws"),
        (["--drift-draws", "1"], "--drift-draws"),
        (["--users", "2"], "--users"),
        (["--k", "0"], "--k"),
        (["--model", "ease"], "--model"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(main, ["--quick", *argv], needle)


def test_centroid_alignment_recomputes_from_the_runs_anchors(quick_run):
    """Proposition 3.1 on the job's PIA model: the stored best-epoch anchors and the clean means give the JSON's
    paired difference (own centroid - another user's); a PIA model aligns (interval below 0)."""
    from geometry.alignment import centroid_alignment
    from models.trainer import load_anchors, load_trained

    doc = quick_run["json"]
    block = doc["centroid_alignment"]
    run = doc["models"]["PIA"]["run"]
    anchors = load_anchors(run)
    assert anchors is not None and load_anchors(doc["models"]["no PIA"]["run"]) is None
    model, _ = load_trained(run)
    u = quick_run["users"]
    rows = u.loc[u["model"] == "PIA", "row"].to_numpy()
    X = sp.csr_matrix(load_split("synthetic", progress=False).train[rows])
    mu = encode_masked(mu_encoder(model), X, 1.0).astype(np.float64)
    again = centroid_alignment(mu, X, anchors, np.random.default_rng([SEED, STREAMS["centroid"]]))
    assert block["mean"] == pytest.approx(again.mean, rel=1e-9)
    assert block["ci"][1] < 0
