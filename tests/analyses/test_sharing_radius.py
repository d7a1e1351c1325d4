"""``python -m analyses.sharing_radius``: a quick synthetic run checked against a direct SGD step."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from analyses.encoding import encode_posteriors
from analyses.model_options import model_config
from analyses.sharing_radius import QUICK, build_parser, chunked_effects, help_bins, main, reconstruction_loss
from analyses.trained import RUNS_ENV, get_trained
from geometry import estimate_sharing_radius, pair_w1_bounds, sharing_effects, sign_agreement
from geometry.sharing import ETA_GRID, FIRST_ORDER_TOL, RADIUS_RULE
from models.data import load_split
from models.vae import MultiVAE

FIGURES = ("sharing_radius",)


@pytest.fixture(scope="module")
def quick_run(quick_job) -> dict:
    """One quick run (tiny clean Multi-VAE on synthetic data) in a throw-away run cache."""
    run = quick_job(main, "sharing_radius", ["--quick"], tables=["pairs.csv", "bins.csv"])
    split = load_split("synthetic", progress=False)
    config = model_config(build_parser().parse_args(["--quick"]), rho=1.0, beta_cap=0.2)
    model = get_trained(config, split=split, train_if_missing=False).model.double()
    return {**run, "split": split, "model": model}


def test_quick_run_writes_every_file_and_names_the_folder(quick_run, check_outputs):
    check_outputs(quick_run, FIGURES)
    assert "r_share" in quick_run["stdout"] and "sign agreement" in quick_run["stdout"]


def test_values_lie_in_range(quick_run):
    p, b, j = quick_run["pairs"], quick_run["bins"], quick_run["json"]
    assert len(p) == 2 * QUICK["anchors"] and set(p["stratum"]) == {"latent-near", "random"}
    assert (p["u"] != p["v"]).all() and (p["w1_lower"] <= p["w1_upper"] + 1e-12).all()
    for col in ("help_share", "help_low", "help_high", "predicted_help_share"):
        assert ((b[col] >= 0) & (b[col] <= 1)).all(), col
    assert ((b["help_low"] <= b["help_share"]) & (b["help_share"] <= b["help_high"])).all()
    assert b["pairs"].sum() == np.isfinite(p["gain"]).sum()
    assert 0 <= j["sign_agreement"]["fraction"] <= 1 and 0 <= j["help_share"] <= 1
    assert (p["grad_norm_u"] > 0).all() and ((p["cosine"] >= -1 - 1e-12) & (p["cosine"] <= 1 + 1e-12)).all()
    r = j["radius"]
    if r["estimate"] is not None:
        assert r["estimate"] > 0 and r["ci"][0] <= r["estimate"] <= r["ci"][1]
        # the rule: slope interval below 0, intercept interval above 0
        assert r["slope_ci"][1] < 0 < r["intercept_ci"][0]
    else:
        assert r["reason"] and r["ci"] is None and r["binned_crossing"] is None
    assert r["n_clusters"] == QUICK["anchors"] and r["rule"] == RADIUS_RULE
    # first-order inequality (Cauchy-Schwarz): predicted gain >= ||g_u|| - ||g_u - g_v||
    assert (p["predicted_gain"] >= p["gain_lower_bound"] - 1e-9 * p["grad_norm_u"]).all()


def test_latent_neighbours_help_more_than_random_users(quick_run):
    s = quick_run["pairs"].groupby("stratum")
    assert s["helps"].mean()["latent-near"] > s["helps"].mean()["random"]
    assert s["w1_lower"].mean()["latent-near"] < s["w1_lower"].mean()["random"]


def test_measured_change_equals_a_direct_sgd_step(quick_run):
    p, X, model = quick_run["pairs"], quick_run["split"].train, quick_run["model"]
    mu, _ = (a[0] for a in encode_posteriors(model, X))
    z = torch.from_numpy(mu)
    rows = p.sample(6, random_state=0)

    def loss(m: MultiVAE, user: int) -> torch.Tensor:
        # -sum_{i in S_u} log softmax(decoder(mu_u))_i, written out without models.vae.multinomial_nll
        logp = torch.log_softmax(m.decode(z[user : user + 1])[0], dim=0)
        return -logp[torch.from_numpy(X[user].indices.astype(np.int64))].sum()

    eta = quick_run["json"]["resolved"]["eta"]
    for _, r in rows.iterrows():
        u, v = int(r["u"]), int(r["v"])
        stepped = copy.deepcopy(model)
        params = list(stepped.decoder.parameters())
        g_v = torch.autograd.grad(loss(stepped, v), params)
        g_u = torch.autograd.grad(loss(stepped, u), params)
        before = float(loss(stepped, u).detach())
        with torch.no_grad():
            for w, g in zip(params, g_v, strict=True):
                w -= eta * g
        measured = float(loss(stepped, u).detach()) - before
        norm_u = float(torch.sqrt(sum((g * g).sum() for g in g_u)))
        dot = float(sum((a * b).sum() for a, b in zip(g_u, g_v, strict=True)))
        assert r["measured"] == pytest.approx(measured, rel=1e-6, abs=1e-12)
        assert r["predicted"] == pytest.approx(-eta * dot, rel=1e-9)
        assert r["gain"] == pytest.approx(-measured / (eta * norm_u), rel=1e-6, abs=1e-12)


def test_summary_equals_the_library_on_the_table(quick_run):
    p, b, j = quick_run["pairs"], quick_run["bins"], quick_run["json"]
    ok = np.isfinite(p["gain"])
    w1 = p.loc[ok, "w1_lower"].to_numpy()  # default --w1 lower
    radius = estimate_sharing_radius(
        w1,
        p.loc[ok, "gain"].to_numpy(),
        clusters=p.loc[ok, "u"].to_numpy(),  # anchors resampled
        n_bins=QUICK["bins"],
        n_boot=QUICK["boot"],
        rng=0,
    )
    r = j["radius"]
    assert r["slope"] == pytest.approx(radius.slope) and r["intercept"] == pytest.approx(radius.intercept)
    assert r["estimate"] == pytest.approx(radius.radius)
    np.testing.assert_allclose(r["slope_ci"], radius.slope_ci)
    np.testing.assert_allclose(r["intercept_ci"], radius.intercept_ci)
    if radius.ci is not None:
        np.testing.assert_allclose(r["ci"], radius.ci)
    sign = sign_agreement(p["predicted"].to_numpy(), p["measured"].to_numpy())
    assert j["sign_agreement"]["fraction"] == pytest.approx(sign.fraction)
    again = help_bins(
        w1,
        p.loc[ok, "measured"].to_numpy(),
        p.loc[ok, "predicted"].to_numpy(),
        p.loc[ok, "gain"].to_numpy(),
        radius.binned.edges,
    )
    pd.testing.assert_frame_equal(again.reset_index(drop=True), b, check_dtype=False, rtol=1e-9)
    mu, logvar = (a[0] for a in encode_posteriors(quick_run["model"], quick_run["split"].train))
    lower, upper = pair_w1_bounds(mu, logvar, p[["u", "v"]].to_numpy())
    np.testing.assert_allclose(p["w1_lower"], lower, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p["w1_upper"], upper, rtol=1e-9, atol=1e-12)


def test_eta_chosen_in_the_first_order_regime_and_recorded(quick_run):
    """--eta auto (default): the largest step size of the grid whose median |remainder| is under 5% of the
    median |first-order prediction|, recorded in the JSON and the printed summary."""
    p, j = quick_run["pairs"], quick_run["json"]
    fo = j["first_order"]
    assert j["arguments"]["eta"] == "auto" and fo["eta_mode"] == "auto"
    assert fo["eta"] == j["resolved"]["eta"] in ETA_GRID
    assert fo["criterion_held"] is True and fo["remainder_ratio"] < FIRST_ORDER_TOL == fo["tol"]
    # the table's remainders give the recorded ratio
    ratio = np.median(np.abs(p["remainder"])) / np.median(np.abs(p["predicted"]))
    assert fo["remainder_ratio"] == pytest.approx(ratio, rel=1e-9)
    # every larger step size of the grid failed the criterion
    grid = {g["eta"]: g for g in fo["grid"]}
    assert sorted(grid, reverse=True) == list(ETA_GRID) and grid[fo["eta"]]["holds"]
    assert all(not grid[e]["holds"] for e in ETA_GRID if e > fo["eta"])
    assert f"eta {fo['eta']:g} (auto)" in quick_run["stdout"] and "criterion (< 0.05) held" in quick_run["stdout"]
    assert "warning" not in quick_run["stderr"]


def test_a_given_eta_outside_the_regime_is_flagged(quick_run, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(RUNS_ENV, str(quick_run["root"] / "runs"))  # the quick run's trained model
    out = tmp_path / "big-eta"
    assert main(["--quick", "--no-progress", "--eta", "0.05", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    fo = json.loads((out / "summary.json").read_text())["first_order"]
    assert fo["eta"] == 0.05 and fo["eta_mode"] == "given" and len(fo["grid"]) == 1
    assert fo["criterion_held"] is False and fo["remainder_ratio"] >= FIRST_ORDER_TOL
    assert "warning: eta = 0.05 is not in the first-order regime" in captured.err
    assert "FAILED" in captured.out


def test_chunked_effects_equal_one_call():
    torch.manual_seed(0)
    model = MultiVAE(15, (6,), 3).double().eval()
    rng = np.random.default_rng(0)
    dense = (rng.random((12, 15)) < 0.4).astype(np.float32)
    dense[np.arange(12), rng.integers(0, 15, 12)] = 1.0  # at least one positive per user
    X = sp.csr_matrix(dense)
    mu = torch.from_numpy(rng.normal(size=(12, 3)))
    loss_fn = reconstruction_loss(model, X, mu)
    params = list(model.decoder.parameters())
    pairs = np.stack([np.repeat(np.arange(6), 2), rng.integers(6, 12, 12)], axis=1)
    per_user = sum(q.numel() for q in params) * 8
    chunked = chunked_effects(loss_fn, params, pairs, 1e-3, max_bytes=4 * per_user)  # 2 pairs per call
    whole = sharing_effects(loss_fn, params, pairs, 1e-3)
    for name in ("u", "v", "loss_u", "predicted", "measured", "grad_norm_u", "cosine", "grad_distance"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--eta", "0"], "--eta"),
        (["--eta", "nan"], "--eta"),
        (["--eta", "big"], "--eta"),
        (["--anchors", "2"], "--anchors"),
        (["--w1", "middle"], "--w1"),
        (["--max-gradient-mb", "0"], "--max-gradient-mb"),
        (["--rho", "2"], "--rho"),
        (["--boot", "0"], "--boot"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(main, ["--quick", "--no-progress", *argv], needle)
