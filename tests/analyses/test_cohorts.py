"""The cohort-embedding job, ``python -m analyses.cohorts``: a quick synthetic run checked against the library.

The module run uses t-SNE (about a second). The job's default reducer, UMAP, runs too, on the same tiny case, in
the default suite: its numba compilation takes 15-40 s in a fresh process on a busy 2-core machine, paid once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import silhouette_score

import analyses.trained as trained
from analyses.cohorts import (
    build_parser,
    centroid_distances,
    knn_purity,
    main,
    nearest_cohorts,
    procrustes_align,
    shared_embedding,
    standardise,
)
from analyses.encoding import mu_encoder
from analyses.model_options import model_config
from analyses.trained import get_trained
from figures.latent import cohort_embedding_figure
from geometry.neighbourhoods import encode_masked
from models.data import load_split
from models.synthetic import make_synthetic

EPOCHS = 4
PER_COHORT = 40
SEED = 2
CONDITIONS = ("clean", "masked", "pia")


ARGV = ["--quick", "--epochs", str(EPOCHS), "--per-cohort", str(PER_COHORT), "--seed", str(SEED)]


def _quick(quick_job, method: str) -> dict:
    tables = ["embedding.csv", "summary.csv", "cohorts.csv"]
    return quick_job(main, f"cohorts-{method}", [*ARGV, "--method", method], tables=tables)


@pytest.fixture(scope="module")
def quick_run(quick_job):
    return _quick(quick_job, "tsne")


def test_every_file_is_written_and_the_folder_named(quick_run, check_outputs):
    check_outputs(quick_run, ("cohorts",))


def test_values_lie_in_range(quick_run):
    s = quick_run["summary"]
    assert list(s["condition"]) == list(CONDITIONS)
    for col in ("silhouette_latent", "silhouette_2d"):
        assert s[col].between(-1, 1).all()
    for col in ("purity_latent", "purity_2d"):
        assert s[col].between(0, 1).all()
    assert (s["progression"] > 0).all() and (s["progression"] <= 1 + 1e-12).all()
    assert np.isfinite(quick_run["embedding"][["x", "y"]].to_numpy()).all()


def test_cohorts_are_the_planted_ones_and_the_same_users_in_every_panel(quick_run):
    e = quick_run["embedding"]
    panels = [e[e["condition"] == c] for c in CONDITIONS]
    for p in panels[1:]:
        assert np.array_equal(p["row"].to_numpy(), panels[0]["row"].to_numpy())
        assert np.array_equal(p["cohort"].to_numpy(), panels[0]["cohort"].to_numpy())
    first = panels[0]
    assert first["row"].is_unique
    truth = make_synthetic().labels_for(first["user"].to_numpy())
    assert (first["cohort"].to_numpy() == np.array([f"≈{a}" for a in truth["target_activity"]])).all()
    c = quick_run["cohorts"]
    assert list(c["cohort"]) == ["≈5", "≈50", "≈350"] and (c["users"] == PER_COHORT).all()
    assert quick_run["json"]["cohort_rule"]["rule"] == "planted"


def test_statistics_recompute_from_the_cached_models(quick_run, monkeypatch, no_training):
    monkeypatch.setenv(trained.RUNS_ENV, str(quick_run["root"] / "runs"))
    e = quick_run["embedding"]
    pia = e[e["condition"] == "pia"]
    split = load_split("synthetic", progress=False)
    X = sp.csr_matrix(split.train[pia["row"].to_numpy()])
    config = model_config(build_parser().parse_args(ARGV), rho=0.5, pia=0.1)
    Z = encode_masked(mu_encoder(get_trained(config, progress=False).model), X, 1.0)
    labels = pia["cohort"].to_numpy()
    s = quick_run["summary"].set_index("condition")
    assert math.isclose(s.loc["pia", "silhouette_latent"], silhouette_score(Z, labels), rel_tol=1e-9)
    assert math.isclose(s.loc["pia", "purity_latent"], knn_purity(Z, labels, 10), rel_tol=1e-12)
    emb = pia[["x", "y"]].to_numpy()
    assert math.isclose(s.loc["pia", "silhouette_2d"], silhouette_score(emb, labels), rel_tol=1e-9)
    for key, value in centroid_distances(Z, labels, ["≈5", "≈50", "≈350"]).items():
        assert math.isclose(s.loc["pia", key], value, rel_tol=1e-9)


def test_panels_share_identical_axis_limits(quick_run):
    e = quick_run["embedding"]
    coords = [e.loc[e["condition"] == c, ["x", "y"]].to_numpy() for c in CONDITIONS]
    labels = [e.loc[e["condition"] == c, "cohort"].to_numpy() for c in CONDITIONS]
    fig = cohort_embedding_figure(coords, labels, list(CONDITIONS), ["≈5", "≈50", "≈350"], method="t-SNE")
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes}
    assert len(limits) == 1
    (x0, x1), (y0, y1) = limits.pop()
    pts = np.concatenate(coords)
    assert x0 <= pts[:, 0].min() and pts[:, 0].max() <= x1 and y0 <= pts[:, 1].min() and pts[:, 1].max() <= y1


def _blocks(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(40, 6))
    B = A.copy()
    B[20:] = rng.normal(size=(20, 6)) + 3.0  # first half shared with A, second half new
    C = rng.normal(size=(40, 6)) - 3.0
    return A, B, C


def _check_shared(method: str) -> None:
    A, B, C = _blocks()
    out = shared_embedding([A, A, B], method, seed=5)
    assert [o.shape for o in out] == [(40, 2)] * 3
    # the same input point has the same coordinates in every panel: one fit, one frame
    assert np.array_equal(out[0], out[1])
    assert np.array_equal(out[0][:20], out[2][:20])
    # fitted jointly: a panel's coordinates depend on the other panels' points
    other = shared_embedding([A, C], method, seed=5)
    assert not np.allclose(shared_embedding([A, B], method, seed=5)[0], other[0])
    # fixed seed: the same call gives the same picture
    assert np.array_equal(shared_embedding([A, A, B], method, seed=5)[2], out[2])


def test_shared_reducer_tsne():
    _check_shared("tsne")


def test_shared_embedding_rejects_bad_input():
    A, _, _ = _blocks()
    with pytest.raises(ValueError, match="--method"):
        shared_embedding([A], "pca")
    with pytest.raises(ValueError, match="same number of columns"):
        shared_embedding([A, A[:, :3]], "tsne")
    with pytest.raises(ValueError, match="NaN"):
        shared_embedding([np.full((5, 2), np.nan)], "tsne")


def test_nearest_cohorts_take_the_closest_users_disjointly():
    n = np.array([5, 6, 5, 7, 48, 52, 50, 51, 300, 360, 20, 340, 5])
    rng = np.random.default_rng(0)
    five, fifty, big = nearest_cohorts(n, (350, 5, 50), 3, rng)
    assert set(n[five]) == {5} and len(five) == 3  # the three users with exactly 5 interactions
    assert set(five) <= {0, 2, 12}
    assert sorted(n[fifty]) == [50, 51, 52] or sorted(n[fifty]) == [48, 50, 51]
    assert sorted(n[big]) == [300, 340, 360]
    taken = np.concatenate([five, fifty, big])
    assert np.unique(taken).size == taken.size
    # |n - 50| ties (48 and 52 are both 2 away) are broken by the seeded random order, reproducibly
    again = nearest_cohorts(n, (5, 50, 350), 3, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(again, (five, fifty, big), strict=True))
    with pytest.raises(ValueError, match="--targets"):
        nearest_cohorts(n, (5, 5), 3, rng)


def test_procrustes_alignment_undoes_a_similarity_transform():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(50, 4))
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    moved = 3.5 * Z @ Q + rng.normal(size=4)
    np.testing.assert_allclose(procrustes_align(Z, moved), standardise(Z), atol=1e-10)
    S = standardise(moved)
    np.testing.assert_allclose((S**2).sum(axis=1).mean(), 1.0)
    np.testing.assert_allclose(S.mean(axis=0), 0.0, atol=1e-12)


def test_progression_is_one_for_collinear_ordered_centroids():
    Z = np.concatenate([np.zeros((5, 2)), np.ones((5, 2)), 3 * np.ones((5, 2))])
    labels = np.repeat(["a", "b", "c"], 5)
    d = centroid_distances(Z, labels, ["a", "b", "c"])
    assert math.isclose(d["progression"], 1.0)
    d = centroid_distances(Z, labels, ["b", "a", "c"])  # out of order: a detour
    assert d["progression"] < 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--per-cohort", "1"], "--per-cohort"),
        (["--targets", "5", "5"], "--targets"),
        (["--method", "pca"], "--method"),
        (["--rho", "0"], "--rho"),
        (["--k", "0"], "--k"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(main, ["--quick", *argv], needle)


def test_umap_run_and_shared_reducer(quick_job, check_outputs):
    run = _quick(quick_job, "umap")
    check_outputs(run, ("cohorts",))
    assert run["json"]["reducer"]["method"] == "umap"
    s = run["summary"]
    assert s["silhouette_2d"].between(-1, 1).all()
    _check_shared("umap")


def test_probes_recover_the_planted_cohorts_and_decide_by_the_stated_rule(quick_run):
    """The cohort claim is decided by probe accuracy, not the silhouette: the planted activity cohorts are recovered
    from the clean model's means, every verdict follows its rule, and summary.csv carries the same numbers."""
    j, s = quick_run["json"], quick_run["summary"].set_index("condition")
    assert set(j["probes"]) == set(CONDITIONS)
    for name, probes in j["probes"].items():
        for kind, r in probes.items():
            assert r["ci"][0] <= r["accuracy"] <= r["ci"][1] and r["chance"] == pytest.approx(1 / 3)
            assert s.loc[name, f"probe_{kind}"] == pytest.approx(r["accuracy"])
            assert s.loc[name, f"probe_{kind}_p"] == pytest.approx(r["p_value"])
    assert j["probes"]["clean"]["knn"]["verdict"] == "separated"
    for e in j["entanglement"].values():
        low, high = e["knn"]["ci"]
        expected = "supported" if low > 0 else "not supported" if high < 0 else "inconclusive"
        assert e["verdict"] == expected and "paired 95% interval" in e["rule"]


def test_cohort_probes_on_a_null_are_inconclusive():
    """Codes unrelated to the cohorts in every condition: nothing separated, masking 'entangles' nothing."""
    from analyses.cohorts import cohort_probes

    rng = np.random.default_rng(0)
    cohort = np.repeat(np.array(["≈5", "≈50", "≈350"]), 40)
    latent = {n: rng.standard_normal((cohort.size, 8)) for n in CONDITIONS}
    probes, entanglement = cohort_probes(latent, cohort, 10, seed=1)
    assert all(abs(p["knn"]["accuracy"] - 1 / 3) < 0.15 for p in probes.values())
    assert {e["verdict"] for e in entanglement.values()} == {"inconclusive"}
    # planted: the clean codes carry the cohort, the masked ones do not -> masking entangles: supported
    shift = np.eye(8)[np.searchsorted(["≈350", "≈5", "≈50"], cohort)] * 5
    latent["clean"] = latent["clean"] + shift
    _, planted = cohort_probes(latent, cohort, 10, seed=1)
    assert planted["clean_minus_masked"]["verdict"] == "supported"
