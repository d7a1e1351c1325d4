"""The PIA uplift job, ``python -m analyses.pia_uplift``: its decision rule under a null and a planted gain, the
configurations it shares with ``pia_geometry`` and ``reproduce``, its option checks and a quick run end to end."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest

from analyses import pia_geometry, reproduce
from analyses.model_options import GEOMETRY_ANNEAL_EPOCHS, QUICK_MODELS
from analyses.pia_uplift import (
    ARCHITECTURES,
    CAP_FRACTION,
    EDGE_REASON,
    NEGLIGIBLE_GAIN,
    RULE,
    build_parser,
    choose_lambda,
    is_capped,
    job_configs,
    main,
    uplift_verdict,
)
from analyses.pia_uplift import _resolve as resolve
from analyses.results import MODEL_SPECS, across_seeds
from analyses.trained import config_key, get_trained

# ------------------------------------------------------------------------------------------------ the rule


def _experiment(rng: np.random.Generator, gain: float, seeds: int, users: int, train_sd: float, user_sd: float):
    """Per-seed paired gains: the true gain, plus one training-noise draw per seed, plus the mean of per-user noise
    over the test users (as the job measures it). Returns ``(gains, per-seed standard errors)``."""
    shift = gain + rng.normal(0.0, train_sd, size=seeds)
    per_user = shift[:, None] + rng.normal(0.0, user_sd, size=(seeds, users))
    return per_user.mean(axis=1), per_user.std(axis=1, ddof=1) / math.sqrt(users)


def _binomial_slack(p: float, n: int) -> float:
    return p + 3 * math.sqrt(p * (1 - p) / n)


def test_null_gain_is_rarely_supported_although_single_seeds_look_significant():
    """True gain 0, training noise larger than the per-user SE: the rule says 'supported' at most about 5% of the
    time (the one-sided share of a 95% interval is 2.5%), while a single-seed z-test on the per-user SE finds a
    'significant' gain far more often: the training noise is real in this simulation."""
    rng = np.random.default_rng(0)
    n, supported, naive = 400, 0, 0
    for _ in range(n):
        gains, ses = _experiment(rng, 0.0, seeds=3, users=500, train_sd=0.02, user_sd=0.15)
        verdict, _ = uplift_verdict(gains, interior=True)
        supported += verdict == "supported"
        naive += gains[0] / ses[0] > 1.96
    assert supported / n <= _binomial_slack(0.05, n)
    assert naive / n > 0.2


def test_null_gain_on_shared_test_users_is_rarely_supported_with_their_sampling_error():
    """Every seed is evaluated on the same test users, so the users' noise is one draw shared by the seeds; with
    little training noise the seeds agree and the plain across-seed interval is far too narrow (it calls the
    shared noise a gain), while the rule, which adds the shared sampling error (``within_se``), keeps its rate."""
    rng = np.random.default_rng(3)
    n, supported, plain = 400, 0, 0
    for _ in range(n):
        users = rng.normal(0.0, 0.15, size=500)  # the same test users' paired noise for every seed
        per_user = rng.normal(0.0, 0.002, size=(3, 1)) + users + rng.normal(0.0, 0.02, size=(3, 500))
        gains, ses = per_user.mean(axis=1), per_user.std(axis=1, ddof=1) / math.sqrt(500)
        supported += uplift_verdict(gains, interior=True, within_se=ses)[0] == "supported"
        plain += uplift_verdict(gains, interior=True)[0] == "supported"
    assert supported / n <= _binomial_slack(0.05, n)
    assert plain / n > 0.2


def test_planted_gain_is_found_nearly_always():
    rng = np.random.default_rng(1)
    n = 200
    verdicts = [
        uplift_verdict(_experiment(rng, 0.03, seeds=5, users=500, train_sd=0.005, user_sd=0.15)[0], interior=True)[0]
        for _ in range(n)
    ]
    assert verdicts.count("supported") / n >= 0.95
    assert "not supported" not in verdicts


def test_a_clear_loss_is_not_supported_and_a_tiny_gain_too():
    assert uplift_verdict([-0.03, -0.031, -0.029], interior=True)[0] == "not supported"
    verdict, reason = uplift_verdict([0.0008, -0.0002, 0.0003], interior=True)  # around 0, far below +0.002
    assert verdict == "not supported" and f"+{NEGLIGIBLE_GAIN:g}" in reason
    verdict, reason = uplift_verdict([0.0005, 0.0006, 0.0004], interior=True)  # above 0, yet below +0.002
    assert verdict == "supported" and "smaller than" in reason


def test_the_two_seed_example_of_issue_10_is_inconclusive():
    """Single-seed paired gains of +0.032 and -0.029 both looked significant; together they decide nothing."""
    verdict, reason = uplift_verdict([0.032, -0.029], interior=True)
    assert verdict == "inconclusive" and "contains 0" in reason
    for single in ([0.032], [-0.029]):
        verdict, reason = uplift_verdict(single, interior=True)
        assert verdict == "inconclusive" and "fewer than 2 seeds" in reason


def test_gates_make_even_a_large_gain_inconclusive():
    big = [0.05, 0.051, 0.049]
    assert uplift_verdict(big, interior=True)[0] == "supported"
    verdict, reason = uplift_verdict(big, interior=False)
    assert verdict == "inconclusive" and EDGE_REASON in reason
    verdict, reason = uplift_verdict(big, interior=True, capped=["PIA seed 1"])
    assert verdict == "inconclusive" and "PIA seed 1" in reason
    verdict, reason = uplift_verdict([0.05], interior=False, capped=["baseline seed 0"])
    assert verdict == "inconclusive" and reason.count("; ") >= 2  # every failed gate is named
    assert EDGE_REASON in RULE and f"{CAP_FRACTION:g}" in RULE


def test_choose_lambda_and_the_cap():
    assert choose_lambda({0.1: 0.40, 1.0: 0.42, 10.0: 0.41}) == (1.0, True)
    assert choose_lambda({10.0: 0.5, 0.1: 0.4, 1.0: 0.45}) == (10.0, False)  # the largest: at the edge
    assert choose_lambda({0.1: 0.5, 1.0: 0.45, 10.0: 0.4}) == (0.1, False)
    assert choose_lambda({0.1: 0.4, 1.0: 0.42, 3.0: 0.42, 10.0: 0.3}) == (1.0, True)  # a tie: the smaller
    assert choose_lambda({1.0: 0.3}) == (1.0, False)
    with pytest.raises(ValueError):
        choose_lambda({1.0: float("nan")})
    assert is_capped({"best_epoch": 13, "epochs_done": 15})  # 12 epochs before it: one of the last 20%
    assert not is_capped({"best_epoch": 12, "epochs_done": 15})
    assert is_capped({"best_epoch": 7, "epochs_done": 7}) and not is_capped({"best_epoch": 6, "epochs_done": 7})


# ------------------------------------------------------------------------------- shared configurations


@pytest.mark.parametrize("quick", [True, False])
def test_the_models_are_those_of_pia_geometry_and_reproduce(quick):
    """Same seed, lambda_A and rho: the uplift job's Multi-VAE (and RecVAE) without and with PIA are the cache
    entries of pia_geometry; its published-schedule models are reproduce's."""
    flags = ["--quick"] if quick else []
    args = build_parser().parse_args([*flags, "--seeds", "2", "1", "--lambdas", "0.3", "1", "--rho", "0.4"])
    sizes = resolve(args)
    configs = job_configs(args, {**sizes, "reference_seeds": [1, 2]})
    for model in ARCHITECTURES:
        for seed in (1, 2):
            for lam in (0.0, 0.3, 1.0):
                geo = pia_geometry.build_parser().parse_args(
                    [*flags, "--model", model, "--seed", str(seed), "--lambda-a", str(lam or 0.1), "--rho", "0.4"]
                )
                theirs = pia_geometry.model_config(geo, model=model, rho=geo.rho, pia=lam)
                role = "pia" if lam else "baseline"
                assert config_key(configs[(model, "geometry", role, seed, lam)]) == config_key(theirs)
                rep = reproduce.build_parser().parse_args(
                    [*flags, "--seed", str(seed), "--lambda-a", str(lam or 0.1), "--rho", "0.4"]
                )
                spec = MODEL_SPECS[f"{model}-pia" if lam else model]
                assert config_key(configs[(model, "reference", role, seed, lam)]) == config_key(
                    reproduce.spec_config(spec, rep)
                )
    c = configs[("multvae", "geometry", "pia", 2, 1.0)]
    ref = configs[("multvae", "reference", "pia", 2, 1.0)]
    clean = configs[("multvae", "geometry", "clean", 2, 0.0)]
    assert c.seed == 2 and c.pia == 1.0 and c.rho == 0.4 and clean.rho == 1.0 and clean.pia == 0.0
    if quick:
        assert c.anneal_epochs == QUICK_MODELS["multvae"]["anneal_epochs"] and c == ref  # quick: one schedule
    else:
        assert c.anneal_epochs == GEOMETRY_ANNEAL_EPOCHS and ref.anneal_epochs is None


def test_defaults_resolve_as_documented():
    full = resolve(build_parser().parse_args([]))
    assert full["lambdas"] == [0.03, 0.1, 0.3, 1.0, 3.0, 10.0] and full["seeds"] == [0, 1, 2]
    assert full["reference_seeds"] == [0] and full["models"] == list(ARCHITECTURES)
    quick = resolve(build_parser().parse_args(["--quick", "--reference-seeds", "none"]))
    assert quick["lambdas"] == [0.1, 1.0, 10.0] and quick["seeds"] == [0, 1] and quick["reference_seeds"] == []
    assert resolve(build_parser().parse_args(["--seeds", "4", "3"]))["tuning_seed"] == 4


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lambdas", "0"], "--lambdas"),
        (["--lambdas", "1", "inf"], "--lambdas"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "1", "1"], "--seeds"),
        (["--reference-seeds", "x"], "--reference-seeds"),
        (["--reference-seeds", "-2"], "--reference-seeds"),
        (["--seed", "3"], "--seeds 3"),
        (["--rho", "0"], "--rho"),
        (["--epochs", "0"], "--epochs"),
        (["--models", "ease"], "--models"),
        (["--epochs-for", "recvae=0"], "--epochs-for"),
        (["--epochs-for", "ease=10"], "--epochs-for"),
        (["--extend-grid", "-1"], "--extend-grid"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_options_stop_before_any_work(usage_error, argv, flag):
    usage_error(main, ["--quick", *argv], flag)


def test_help_renders():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and out.getvalue().startswith("usage: python -m analyses.pia_uplift")
    assert "%(" not in out.getvalue() and "--reference-seeds" in out.getvalue()


# ------------------------------------------------------------------------------------------ a quick run

SEEDS = [0, 1]
LAMBDAS = [0.1, 1.0, 10.0]
ARGV = ["--quick", "--epochs", "3", "--seeds", *map(str, SEEDS)]


@pytest.fixture(scope="module")
def quick_run(quick_job):
    tables = ["per_seed.csv", "paired.csv", "lambda_search.csv", "ablation.csv", "reference_schedule.csv"]
    return quick_job(main, "uplift", ARGV, tables=tables, json_name="uplift.json")


@pytest.mark.slow
def test_every_file_is_written_and_the_folder_named(quick_run, check_outputs):
    check_outputs(quick_run, ("uplift",))
    doc = quick_run["json"]
    for key in ("options", "options_hash", "rule", "rule_constants", "per_architecture", "verdicts"):
        assert key in doc, key
    assert doc["rule"] == RULE and set(doc["per_architecture"]) == set(ARCHITECTURES)
    assert doc["options"]["lambdas"] == LAMBDAS and doc["options"]["seeds"] == SEEDS


@pytest.mark.slow
def test_per_seed_has_one_entry_per_seed_and_architecture(quick_run):
    doc = quick_run["json"]
    for part in doc["per_architecture"].values():
        for key in ("lambda_search", "chosen_lambda", "interior", "per_seed", "across_seeds", "verdict", "reason"):
            assert key in part, key
        assert "ablation" in part and "reference_schedule" in part and "tuning_effort" in part
        assert [p["seed"] for p in part["per_seed"]] == SEEDS
        assert part["tuning_effort"]["pia"]["configurations"] == len(LAMBDAS)
        assert part["tuning_effort"]["baseline"]["configurations"] == 1
        for p in part["per_seed"]:
            assert p["lambda_a"] == part["chosen_lambda"] and p["tuning_seed"] == (p["seed"] == SEEDS[0])
            for role in ("baseline", "pia"):
                run = p[role]["run"]
                assert {"best_epoch", "epochs_done", "capped", "final_beta"} <= set(run)
                assert run["epochs_done"] == 3 and run["capped"] == is_capped(run)
                assert run["config"]["seed"] == p["seed"]
            assert p["pia"]["run"]["config"]["pia"] == part["chosen_lambda"]
            assert p["baseline"]["run"]["config"]["pia"] == 0.0
            # every test user is scored by both models: the paired mean is the difference of the two means
            diff = p["pia"]["test"]["ndcg@100"]["mean"] - p["baseline"]["test"]["ndcg@100"]["mean"]
            assert p["paired"]["ndcg@100"]["mean"] == pytest.approx(diff, abs=1e-12)
    per_seed = quick_run["per_seed"]
    assert len(per_seed) == len(SEEDS) * len(ARCHITECTURES)
    assert sorted(zip(per_seed["architecture"], per_seed["seed"], strict=True)) == sorted(
        (a, s) for a in ARCHITECTURES for s in SEEDS
    )


@pytest.mark.slow
def test_lambda_is_chosen_on_validation_and_the_verdict_obeys_the_rule(quick_run):
    doc = quick_run["json"]
    for arch, part in doc["per_architecture"].items():
        search = part["lambda_search"]
        curve = {c["lambda_a"]: c["val_ndcg@100"] for c in search["curve"]}
        assert sorted(curve) == LAMBDAS and search["seed"] == SEEDS[0]
        assert search["capped"] == [
            c["lambda_a"] for c in search["curve"] if c["best_epoch"] - 1 >= 0.8 * c["epochs_done"]
        ]
        assert (part["chosen_lambda"], part["interior"]) == choose_lambda(curve)
        assert part["interior"] == (part["chosen_lambda"] not in (min(LAMBDAS), max(LAMBDAS)))
        gains = [p["paired"]["ndcg@100"]["mean"] for p in part["per_seed"]]
        ses = [p["paired"]["ndcg@100"]["se"] for p in part["per_seed"]]
        recomputed = across_seeds(gains, within_se=ses)  # the test users' sampling error, shared by the seeds
        assert part["across_seeds"]["ndcg@100"]["se"] > across_seeds(gains)["se"]
        for key in ("mean", "sd", "se", "n", "df", "within_se"):
            assert part["across_seeds"]["ndcg@100"][key] == pytest.approx(recomputed[key]), key
        assert part["across_seeds"]["ndcg@100"]["ci"] == pytest.approx(recomputed["ci"])
        capped = [
            f"{name} seed {p['seed']}"
            for p in part["per_seed"]
            for role, name in (("baseline", "baseline"), ("pia", "PIA"))
            if p[role]["run"]["capped"]
        ]
        assert part["capped_models"] == capped
        assert (part["verdict"], part["reason"]) == uplift_verdict(
            gains, interior=part["interior"], capped=capped, within_se=ses
        )
        assert doc["verdicts"][arch] == part["verdict"]
        if not part["interior"]:
            assert part["verdict"] == "inconclusive" and EDGE_REASON in part["reason"]
    ls = quick_run["lambda_search"]
    assert len(ls) == len(ARCHITECTURES) * (1 + len(LAMBDAS)) and ls["chosen"].sum() == len(ARCHITECTURES)


@pytest.mark.slow
def test_ablation_and_reference_schedule(quick_run):
    doc = quick_run["json"]
    for part in doc["per_architecture"].values():
        ab = part["ablation"]
        assert ab["conditions"] == ["clean input", "masking", "masking + PIA"]
        assert [e["seed"] for e in ab["per_seed"]] == SEEDS
        for e, p in zip(ab["per_seed"], part["per_seed"], strict=True):
            assert e["masking"]["mean"] == p["baseline"]["test"]["ndcg@100"]["mean"]
            assert e["masking + PIA"]["mean"] == p["pia"]["test"]["ndcg@100"]["mean"]
        for cond in ab["conditions"]:
            est = across_seeds([e[cond]["mean"] for e in ab["per_seed"]])
            assert ab["across_seeds"][cond]["mean"] == pytest.approx(est["mean"])
        assert ab["comparable"] is False  # synthetic data: the ML-20M row is shown, not compared
        ref = part["reference_schedule"]
        assert ref["seeds"] == [SEEDS[0]] and ref["in_verdict"] is False
        (row,) = ref["per_seed"]
        assert row["same_models_as_main"] is True  # --quick: one schedule, the same cached models
        assert row["final_beta"]["baseline"] == row["baseline"]["run"]["final_beta"]
        assert row["paired"]["ndcg@100"] == part["per_seed"][0]["paired"]["ndcg@100"]
    ablation = quick_run["ablation"]
    assert set(ablation["scope"]) == {"seed", "across seeds"}
    assert len(ablation) == len(ARCHITECTURES) * 3 * (len(SEEDS) + 1)
    assert len(quick_run["reference_schedule"]) == len(ARCHITECTURES)
    paired = quick_run["paired"]
    assert set(paired["schedule"]) == {"geometry", "reference"} and "all" in set(paired["group"])


@pytest.mark.slow
def test_pia_geometry_finds_the_models_in_the_cache(quick_run, no_training):
    """The models the quick run trained are exactly those pia_geometry asks for (loaded, never trained again)."""
    doc = quick_run["json"]
    lam = doc["per_architecture"]["multvae"]["chosen_lambda"]
    for seed in SEEDS:
        geo = pia_geometry.build_parser().parse_args([*ARGV[:3], "--seed", str(seed), "--lambda-a", str(lam)])
        for pia in (0.0, lam):
            trained = get_trained(pia_geometry.model_config(geo, rho=geo.rho, pia=pia), progress=False)
            assert trained.config.seed == seed and trained.config.pia == pia
    per_seed = pd.DataFrame(doc["per_architecture"]["multvae"]["per_seed"])
    assert len(per_seed) == len(SEEDS)


def test_extend_grid_steps_beyond_the_edge_of_the_choice():
    from analyses.pia_uplift import extend_grid

    grid = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    assert extend_grid(grid, 0.03) == pytest.approx(0.009)
    assert extend_grid(grid, 10.0) == pytest.approx(100 / 3)
    assert extend_grid(grid, 0.3) is None
    assert extend_grid([1.0], 1.0) is None


def test_the_search_widens_the_grid_until_the_choice_is_interior():
    """A validation curve peaking at 0.004 (below the grid): steps down by the grid's ratio (0.009, 0.0027,
    0.00081) until a value beyond the best one was measured; with no extension allowed the edge choice stays."""
    from analyses.pia_uplift import search_lambda

    def validation(lam):
        return {"lambda_a": lam, "val_ndcg@100": -abs(np.log(lam) - np.log(0.004))}

    announced = []
    curve, chosen, interior, added = search_lambda(validation, [0.03, 0.1, 0.3, 1.0], 3, announced.append)
    assert chosen == pytest.approx(0.0027) and interior
    assert added == pytest.approx([0.009, 0.0027, 0.00081]) and announced == added
    assert [c["lambda_a"] for c in curve] == sorted(c["lambda_a"] for c in curve)
    _, chosen, interior, added = search_lambda(validation, [0.03, 0.1, 0.3, 1.0], 0, announced.append)
    assert chosen == 0.03 and not interior and added == []


def test_epochs_for_one_architecture_leave_the_other_alone():
    args = build_parser().parse_args(["--seeds", "0", "--lambdas", "0.1", "--epochs-for", "recvae=100"])
    configs = job_configs(args, resolve(args))
    assert {c.epochs for k, c in configs.items() if k[0] == "recvae"} == {100}
    reference = job_configs(build_parser().parse_args(["--seeds", "0", "--lambdas", "0.1"]), resolve(args))
    multvae = {k: c for k, c in configs.items() if k[0] == "multvae"}
    assert multvae == {k: c for k, c in reference.items() if k[0] == "multvae"}


@pytest.mark.slow
def test_workers_train_the_same_models_and_give_the_same_result(tmp_path, monkeypatch, run_cli):
    """--workers 2 trains the grid, baselines and clean models side by side, then the chosen lambda_A's seeds; the
    uplift is the one of --workers 1 (fresh run caches for both, so both really train), and the option leaves the
    options hash alone."""
    import json

    argv = ["--quick", "--models", "multvae", "--epochs", "3", "--seeds", "0", "1"]
    docs = {}
    for workers in (2, 1):
        monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / f"runs{workers}"))
        out = tmp_path / f"out{workers}"
        code, _, stderr = run_cli(main, [*argv, "--workers", str(workers), "--out", str(out)])
        assert code == 0, stderr
        assert ("processes;" in stderr) == (workers == 2)
        docs[workers] = json.loads((out / "uplift.json").read_text())
    assert docs[1]["options_hash"] == docs[2]["options_hash"]
    two, one = docs[2]["per_architecture"]["multvae"], docs[1]["per_architecture"]["multvae"]
    assert two["chosen_lambda"] == one["chosen_lambda"]
    assert [c["val_ndcg@100"] for c in two["lambda_search"]["curve"]] == pytest.approx(
        [c["val_ndcg@100"] for c in one["lambda_search"]["curve"]], abs=1e-6
    )
    for a, b in zip(two["per_seed"], one["per_seed"], strict=True):
        assert a["paired"]["ndcg@100"]["mean"] == pytest.approx(b["paired"]["ndcg@100"]["mean"], abs=1e-6)
