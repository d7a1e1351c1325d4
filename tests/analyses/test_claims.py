"""analyses.claims: the decision rules on simulated nulls and planted effects, and the quick ledger end to end
(planted synthetic data against the null variant with nothing planted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyses import claims
from analyses.claims import CLAIMS, VERDICTS, Claim, Measurement, combine, side, wilson
from analyses.results import across_seeds


def _claim(mode: str, direction: int = 1, threshold: float = 0.0) -> Claim:
    return Claim(
        "x",
        "x",
        "empirical",
        mode,
        "rule",
        lambda docs, folder: None,
        ("cohorts",),
        direction=direction,
        threshold=threshold,
    )


def _m(estimate: float, verdict: str = "inconclusive", ci=None) -> Measurement:
    return Measurement(estimate, ci, verdict, "source")


def test_side_reads_the_interval_against_the_threshold():
    assert side([0.1, 0.2], 0.0, +1) == "supported"
    assert side([-0.2, -0.1], 0.0, +1) == "not supported"
    assert side([-0.1, 0.1], 0.0, +1) == "inconclusive"
    assert side([-0.2, -0.1], 0.0, -1) == "supported"
    assert side(None, 0.0, +1) == "inconclusive"


def test_wilson_interval_covers_at_its_level():
    rng = np.random.default_rng(0)
    n, p, trials = 60, 0.1, 3000
    hits = sum(lo <= p <= hi for lo, hi in (wilson(k, n) for k in rng.binomial(n, p, size=trials)))
    assert 0.93 <= hits / trials <= 0.97


def test_mean_mode_needs_two_seeds_and_uses_the_across_seed_interval():
    one = combine(_claim("mean"), [(0, _m(0.5, ci=[0.4, 0.6]))], trained=True)
    assert one["verdict"] == "inconclusive" and "one seed" in one["reason"]
    # per-seed gains of +0.032 and -0.029, each "significant" within its seed: the seeds disagree
    two = combine(_claim("mean"), [(0, _m(0.032, "supported")), (1, _m(-0.029, "not supported"))], trained=True)
    assert two["verdict"] == "inconclusive"
    three = combine(_claim("mean"), [(s, _m(e)) for s, e in enumerate((0.030, 0.031, 0.029))], trained=True)
    assert three["verdict"] == "supported"
    assert three["ci"] == pytest.approx(across_seeds([0.030, 0.031, 0.029])["ci"])


def test_mean_mode_counts_the_sampling_error_the_seeds_share():
    """Seeds that agree closely while each seed's own interval is wide (the same users measured each time, as the
    ML-1M cohort probe's -0.0156, -0.0144, -0.0167 with intervals of about +-0.017): the shared sampling error
    stays in the interval, which then contains 0, where the spread between seeds alone would exclude it."""
    estimates = (-0.0156, -0.0144, -0.0167)
    per_seed = [(s, _m(e, "inconclusive", [e - 0.017, e + 0.017])) for s, e in enumerate(estimates)]
    out = combine(_claim("mean", direction=+1), per_seed, trained=True)
    assert out["verdict"] == "inconclusive" and out["ci"][0] < 0 < out["ci"][1]
    assert "sampling error" in out["ci_kind"]
    z = 1.959963984540054
    assert out["ci"] == pytest.approx(across_seeds(estimates, within_se=[0.017 / z] * 3)["ci"])
    plain = across_seeds(estimates)["ci"]
    assert plain[1] < 0  # what the rule said before it counted the shared error
    # without per-seed intervals the plain across-seed interval stands
    bare = combine(_claim("mean"), [(s, _m(e)) for s, e in enumerate(estimates)], trained=True)
    assert bare["ci"] == pytest.approx(plain) and bare["ci_kind"].startswith("Student-t")


def test_mean_mode_keeps_its_error_rate_on_a_null_and_finds_a_planted_effect():
    rng = np.random.default_rng(1)
    trials = 2000

    def supported(true_mean: float) -> float:
        count = 0
        for _ in range(trials):
            per_seed = [(s, _m(float(e))) for s, e in enumerate(rng.normal(true_mean, 0.01, size=3))]
            count += combine(_claim("mean"), per_seed, trained=True)["verdict"] == "supported"
        return count / trials

    assert supported(0.0) <= 0.04  # one-sided: 2.5% nominal
    assert supported(0.05) >= 0.95


def test_every_mode_is_a_conjunction_of_the_seeds_tests():
    claim = _claim("every")
    ok = combine(claim, [(0, _m(1.0, "supported")), (1, _m(1.1, "supported"))], trained=True)
    assert ok["verdict"] == "supported"
    mixed = combine(claim, [(0, _m(1.0, "supported")), (1, _m(1.1, "inconclusive"))], trained=True)
    assert mixed["verdict"] == "inconclusive" and "disagree" in mixed["reason"]
    lone = combine(claim, [(0, _m(1.0, "supported"))], trained=True)
    assert lone["verdict"] == "inconclusive"


def test_unit_checks_fail_on_any_violating_seed():
    claim = _claim("unit")
    assert combine(claim, [(0, _m(1.0, "supported")), (1, _m(1.0, "supported"))], trained=True)["verdict"] == (
        "supported"
    )
    bad = combine(claim, [(0, _m(1.0, "supported")), (1, _m(1.0, "not supported"))], trained=True)
    assert bad["verdict"] == "not supported" and "1" in bad["reason"]


def test_every_claim_has_a_rule_and_a_known_mode():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    for c in CLAIMS:
        assert c.rule and c.combine in ("unit", "mean", "every", "data")
        assert c.kind == ("unit check" if c.combine == "unit" else "empirical")
        assert set(c.jobs) <= set(claims.JOB_SPECS)


# ----------------------------------------------------------------------------------------- the quick ledger


REQUIRED = ("claim", "dataset", "seeds", "estimate", "ci", "verdict", "rule", "command", "reference")


@pytest.fixture(scope="module")
def ledger(quick_job):
    """The quick ledger end to end (every job on synthetic and synthetic-null, seeds 0 and 1): the longest fixture of
    the suite (322 s of a 19.5-minute run beside a training job), so the tests reading it are in the slow tier,
    which CI runs (README: the test command)."""
    run = quick_job(claims.main, "claims", ["--quick"], json_name="claims.json")
    return {"out": run["out"], "rows": run["json"], "stdout": run["stdout"]}


def _row(rows, claim, dataset):
    found = [r for r in rows if r["claim"] == claim and r["dataset"] == dataset]
    assert len(found) == 1, (claim, dataset)
    return found[0]


@pytest.mark.slow
def test_the_ledger_writes_its_files_and_every_row_has_the_keys(ledger):
    out, rows = ledger["out"], ledger["rows"]
    for name in ("claims.json", "claims.md", "ledger.json", "claims.png", "claims.pdf", "COMPLETE"):
        assert (out / name).is_file(), name
    assert {r["dataset"] for r in rows} == {"synthetic", "synthetic-null"}
    for r in rows:
        assert set(REQUIRED) <= set(r)
        assert r["verdict"] in VERDICTS and isinstance(r["seeds"], list)
        assert r["ci"] is None or (len(r["ci"]) == 2 and r["ci"][0] <= r["ci"][1])
    md = (out / "claims.md").read_text()
    assert all(r["claim"] in md for r in rows)


@pytest.mark.slow
def test_planted_claims_are_supported_on_synthetic_and_not_on_the_null(ledger):
    rows = ledger["rows"]
    planted = [c.key for c in CLAIMS if c.planted]
    assert planted
    for key in planted:
        assert _row(rows, key, "synthetic")["verdict"] == "supported", key
        assert _row(rows, key, "synthetic-null")["verdict"] != "supported", key


@pytest.mark.slow
def test_unit_checks_hold_on_both_datasets(ledger):
    for c in CLAIMS:
        if c.combine == "unit":
            for dataset in ("synthetic", "synthetic-null"):
                assert _row(ledger["rows"], c.key, dataset)["verdict"] == "supported", (c.key, dataset)


@pytest.mark.slow
def test_a_row_recomputes_from_the_jobs_files(ledger):
    """The prevalence row of the first seed, from the masking_contraction pairs the job wrote."""
    out = ledger["out"]
    row = _row(ledger["rows"], "expected_expansion_prevalence", "synthetic")
    pairs = pd.read_csv(out / "runs" / "synthetic" / f"seed{row['seeds'][0]}" / "masking_contraction" / "pairs.csv")
    near = pairs[pairs["stratum"] == "near"]
    assert row["estimate"] == pytest.approx(near["expected_expansion"].mean())
    assert row["ci"] == pytest.approx(wilson(near["expected_expansion"].sum(), len(near)))


def _kl_doc(mi_small: float, mi_large: float, se: float = 0.02, saturated: bool = False) -> dict:
    row = {
        "beta_cap": 0.2,
        "rho": 0.5,
        "draws": 3,
        "mutual_information": mi_large,
        "log_components": 8.0,
        "saturated": saturated,
        "saturation": "not identifiable" if saturated else None,
    }
    sample = [
        {"beta_cap": 0.2, "rho": 0.5, "draws": 3, "users": n, "mutual_information": mi, "mutual_information_se": se}
        for n, mi in ((500, mi_small), (1000, mi_large))
    ]
    return {"kl_budget": {"table": [row], "against_sample": sample}}


def test_the_kl_split_is_not_identified_when_the_estimate_follows_the_sample():
    from analyses.claims import measure_kl_split

    follows = measure_kl_split(_kl_doc(5.0, 5.0 + 0.9 * np.log(2)), None)  # rises almost as log N
    assert follows.verdict == "not supported" and follows.estimate == pytest.approx(0.9)
    converged = measure_kl_split(_kl_doc(3.0, 3.01), None)
    assert converged.verdict == "supported"
    assert measure_kl_split(_kl_doc(3.0, 3.01, saturated=True), None).verdict == "not supported"
    assert measure_kl_split(_kl_doc(3.0, 3.3, se=0.2), None).verdict == "inconclusive"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--seeds", "-1"], "--seeds"),
        (["--datasets", "nonsense"], "--datasets"),
        (["--seeds", "x"], "--seeds"),
        (["--workers", "0"], "--workers"),
        (["--baselines", "nonsense"], "is not DATASET=PATH"),
        (["--baselines", "ml-1m=x.json"], "ml-1m is not one of --datasets"),
        (["--baselines", "synthetic=/nonexistent/results.json"], "cannot read it"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_code_2(argv, needle, usage_error):
    usage_error(claims.main, ["--quick", *argv], needle)


def test_a_failed_job_makes_its_claims_inconclusive_with_the_jobs_error(tmp_path):
    from analyses.claims import JobRun, ledger_rows

    failed = JobRun(
        "cohorts", "synthetic", 0, "python -m analyses.cohorts ...", "failed", 1.0, "boom: no cohort", None, tmp_path
    )
    rows = ledger_rows("synthetic", [0], {0: {}}, {0: tmp_path}, [failed])
    by_claim = {r["claim"]: r for r in rows}
    for key in ("cohort_separation", "cohort_entanglement"):
        assert by_claim[key]["verdict"] == "inconclusive"
        assert "boom: no cohort" in by_claim[key]["reason"]
    # a claim of a job that did not run at all says so
    assert "did not run" in by_claim["sharing_radius"]["reason"]
    assert all(r["verdict"] == "inconclusive" for r in rows)


def test_mean_mode_ignores_tight_within_seed_intervals_when_the_seeds_disagree():
    """Per-seed intervals that leave out training noise must not decide: +0.03, -0.02, +0.01, each with a tight
    within-seed interval, is inconclusive across seeds."""
    per_seed = [
        (s, _m(e, "supported" if e > 0 else "not supported", [e - 0.002, e + 0.002]))
        for s, e in enumerate((0.03, -0.02, 0.01))
    ]
    out = combine(_claim("mean"), per_seed, trained=True)
    assert out["verdict"] == "inconclusive"
    assert out["ci"] == pytest.approx(across_seeds([0.03, -0.02, 0.01])["ci"])


def _pairs(rng, shift: float, anchors: int = 150) -> pd.DataFrame:
    """Two strata of pairs, several per anchor sharing an anchor effect (so pairs of an anchor are dependent)."""
    frames = []
    for stratum, offset in (("far", 0.0), ("far-related", shift)):
        anchor = np.repeat(np.arange(anchors), 3) + (0 if stratum == "far" else anchors)
        effect = rng.normal(0, 0.1, anchors)[anchor % anchors]
        value = np.clip(0.3 + offset + effect + rng.normal(0, 0.05, anchor.size), 0, 1)
        frames.append(pd.DataFrame({"stratum": stratum, "anchor": anchor, "p_contraction_masked": value}))
    return pd.concat(frames, ignore_index=True)


def test_the_stratum_difference_keeps_its_error_rate_on_a_null_and_finds_a_planted_shift():
    from analyses.claims import stratum_difference

    rng = np.random.default_rng(3)

    def supported(shift: float, trials: int = 300) -> float:
        hits = 0
        for _ in range(trials):
            _, ci, _ = stratum_difference(_pairs(rng, shift), "p_contraction_masked", "far-related", "far")
            hits += side(ci, 0.0, +1) == "supported"
        return hits / trials

    assert supported(0.0) <= 0.05  # one-sided 2.5% nominal; anchors as units keep it there
    assert supported(0.05) >= 0.9


def only_the_uplift_runs(uplift_doc: dict, calls: list | None = None):
    """A stand-in for ``analyses.claims.run_job``: pia_uplift returns ``uplift_doc``, every other job fails (its
    claims are inconclusive, not at stake in the tests that use it); each call is appended to ``calls``."""
    from analyses.paper_figures import JobResult

    def fake_run_job(spec, argv, out, shown_argv=None):
        if calls is not None:
            calls.append((spec.name, argv))
        ok = spec.name == "pia_uplift"
        return JobResult(
            spec.name,
            " ".join(shown_argv or argv),
            out,
            "ok" if ok else "failed",
            0 if ok else 2,
            None if ok else "not run in this test",
            0.1,
            uplift_doc if ok else None,
        )

    return fake_run_job


def test_a_dataset_budget_limits_seeds_and_epochs_and_lends_lambda(tmp_path, monkeypatch, run_cli):

    calls: list[tuple[str, list[str]]] = []
    uplift_doc = {
        "rule": "the uplift rule",
        "per_architecture": {
            "multvae": {
                "chosen_lambda": 0.3,
                "interior": True,
                "capped_models": [],
                "per_seed": [],
            }
        },
    }

    monkeypatch.setattr(claims, "run_job", only_the_uplift_runs(uplift_doc, calls))
    budget = claims.Budget(seeds=1, epochs=7, anneal_epochs=2, uplift=False, kl_users=50, why="too large for the test")
    monkeypatch.setattr(claims, "BUDGETS", {"synthetic": budget})
    out = tmp_path / "ledger"
    argv = ["--datasets", "synthetic-null", "synthetic", "--seeds", "0", "1", "--out", str(out), "--no-progress"]
    code, _, stderr = run_cli(claims.main, argv)
    assert code == 0, stderr
    on = {name: [a for n, a in calls if n == name] for name in {n for n, _ in calls}}
    # the unbudgeted dataset: pia_uplift over both seeds, every job on both seeds at the default epochs
    null_jobs = [a for n, a in calls if a[a.index("--dataset") + 1] == "synthetic-null"]
    assert len(null_jobs) == 1 + 2 * len(claims.SEED_JOBS) and not any("--epochs" in a for a in null_jobs)
    # the budgeted one: no pia_uplift, seed 0 only, the budget's epochs in every training job and no other
    budgeted = [(n, a) for n, a in calls if a[a.index("--dataset") + 1] == "synthetic"]
    assert [n for n, _ in budgeted] == list(claims.SEED_JOBS) and all(
        a[a.index("--seed") + 1] == "0" for _, a in budgeted
    )
    for name, a in budgeted:
        trains = name in claims.TRAINED_JOBS
        assert (
            (a[a.index("--epochs") + 1] == "7" and a[a.index("--anneal-epochs") + 1] == "2")
            if trains
            else "--epochs" not in a
        )
        if name in claims.PIA_JOBS:  # the lambda_A chosen on the earlier dataset
            assert a[a.index("--lambda-a") + 1] == "0.3"
        # kl_budget's users sampled by the budget; no other job takes --users from it
        assert (a[a.index("--users") + 1] == "50") if name == "kl_budget" else "--users" not in a
    assert len(on["pia_uplift"]) == 1
    rows = json.loads((out / "claims.json").read_text())
    gain = [r for r in rows if r["dataset"] == "synthetic" and r["claim"].startswith("pia_accuracy_gain")]
    # one row per architecture pia_uplift would have compared, as on every other dataset
    assert [r["claim"] for r in gain] == ["pia_accuracy_gain[multvae]", "pia_accuracy_gain[recvae]"]
    for row in gain:
        assert row["verdict"] == "inconclusive" and "too large for the test" in row["reason"]
        assert "lambda_A 0.3 chosen on synthetic-null" in row["reason"] and row["estimate"] is None
    assert all(r["seeds"] in ([], [0]) for r in rows if r["dataset"] == "synthetic")
    assert json.loads((out / "ledger.json").read_text())["budgets"]["synthetic"]["epochs"] == 7
    assert all("--users" not in a for a in null_jobs)  # the unbudgeted dataset: every training user


def _interrupting_run_job(calls: list, stop_at: int | None, uplift_doc: dict):
    """A stand-in for ``analyses.claims.run_job`` that finishes pia_uplift (its folder, JSON and marker written as a
    job writes them), fails the other jobs, and raises KeyboardInterrupt (Ctrl-C) at call number ``stop_at``."""
    from analyses.paper_figures import JobResult, command_line

    def fake_run_job(spec, argv, out, shown_argv=None):
        calls.append((spec.name, argv))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        command = command_line(spec.module, shown_argv or argv)
        if spec.name != "pia_uplift":
            return JobResult(spec.name, command, out, "failed", 2, "not run in this test", 0.1, None)
        out.mkdir(parents=True)
        (out / "uplift.json").write_text(json.dumps(uplift_doc))
        (out / "COMPLETE").write_text(json.dumps({"complete": True, "job": "pia_uplift"}))
        return JobResult(spec.name, command, out, "ok", 0, None, 12.5, uplift_doc)

    return fake_run_job


def test_an_interrupted_ledger_resumes_its_finished_jobs_under_the_same_command_and_code(
    tmp_path, monkeypatch, run_cli
):
    """Ctrl-C during the second job: the ledger keeps its staging folder; the same command takes it over and runs
    only the jobs that had not finished (pia_uplift's result read back from its folder, its time kept). Under
    other options (another seed list) or other code, an interrupted run's jobs are never reused."""
    uplift_doc = {
        "rule": "r",
        "per_architecture": {"multvae": {"chosen_lambda": 0.3, "interior": True, "capped_models": [], "per_seed": []}},
    }
    out = tmp_path / "ledger"
    argv = ["--datasets", "synthetic", "--seeds", "0", "1", "--out", str(out), "--no-progress"]
    calls: list[tuple[str, list]] = []
    monkeypatch.setattr(claims, "run_job", _interrupting_run_job(calls, 2, uplift_doc))
    code, _, stderr = run_cli(claims.main, argv)
    assert code == 130 and [n for n, _ in calls] == ["pia_uplift", claims.SEED_JOBS[0]], stderr
    assert "the same command resumes it" in stderr and not out.exists()
    (kept,) = tmp_path.glob(".ledger.partial-*")
    assert list(json.loads((kept / claims.RESUME_FILE).read_text())["jobs"]) == ["runs/synthetic/pia_uplift"]

    calls.clear()
    monkeypatch.setattr(claims, "run_job", _interrupting_run_job(calls, None, uplift_doc))
    code, _, stderr = run_cli(claims.main, argv)
    assert code == 0, stderr
    assert "1 finished job(s) kept" in stderr and [n for n, _ in calls] == list(claims.SEED_JOBS) * 2
    # the kept uplift JSON was read back: the PIA jobs take the lambda_A it chose
    assert all(a[a.index("--lambda-a") + 1] == "0.3" for n, a in calls if n in claims.PIA_JOBS)
    jobs = json.loads((out / "ledger.json").read_text())["jobs"]
    assert (jobs[0]["job"], jobs[0]["resumed"], jobs[0]["seconds"]) == ("pia_uplift", True, 12.5)
    assert not any(j["resumed"] for j in jobs[1:])
    assert not (out / claims.RESUME_FILE).exists() and not list(tmp_path.glob(".ledger.partial-*"))

    for change in ("options", "code"):
        calls.clear()
        monkeypatch.setattr(claims, "run_job", _interrupting_run_job(calls, 2, uplift_doc))
        assert run_cli(claims.main, argv)[0] == 130
        calls.clear()
        monkeypatch.setattr(claims, "run_job", _interrupting_run_job(calls, None, uplift_doc))
        if change == "code":
            monkeypatch.setattr(claims, "code_fingerprint", lambda: "0" * 16)
            again = argv
        else:
            again = [*argv[:3], "2", *argv[5:]]  # seeds 0 2
        code, _, stderr = run_cli(claims.main, again)
        assert code == 0 and calls[0][0] == "pia_uplift" and "kept" not in stderr, (change, stderr)


# --------------------------------------------- each job's headline number: planted structure against the null


def _summary(out, dataset: str, seed: int, job: str) -> dict:
    return json.loads((out / "runs" / dataset / f"seed{seed}" / job / "summary.json").read_text())


def _stratum_share(doc: dict, stratum: str) -> tuple[float, float]:
    """Wilson interval of the share of a local_vs_global stratum's pairs with v among u's 10% latent-nearest."""
    row = next(r for r in doc["strata_table"] if r["stratum"] == stratum)
    return tuple(wilson(round(row["share_latent_top10"] * row["pairs"]), row["pairs"]))


@pytest.mark.slow
@pytest.mark.parametrize("seed", claims.QUICK_SEEDS)
def test_local_vs_global_near_users_stay_near_only_where_taste_is_planted(ledger, seed):
    """Input neighbours are latent neighbours far more often on the planted data (taste groups) than on the null,
    and the planted far-but-related pairs (same group, no shared item) sit latent-near: beyond the random pairs."""
    planted = _summary(ledger["out"], "synthetic", seed, "local_vs_global")
    null = _summary(ledger["out"], "synthetic-null", seed, "local_vs_global")
    assert _stratum_share(planted, "near")[0] > _stratum_share(null, "near")[1]
    assert _stratum_share(planted, "planted")[0] > _stratum_share(planted, "random")[1]
    assert not any(r["stratum"] == "planted" for r in null["strata_table"])
    assert planted["cohorts"]["silhouette_taste_groups_latent"] > 0.25
    assert null["cohorts"]["silhouette_taste_groups_latent"] is None  # one group: nothing to separate


@pytest.mark.slow
@pytest.mark.parametrize("seed", claims.QUICK_SEEDS)
def test_sharing_radius_is_found_on_the_planted_data_and_not_on_the_null(ledger, seed):
    """The job's headline, the radius: the help of a step falls with W1 (slope interval below 0) where taste
    groups are planted; on the null the slope interval covers 0 and no radius is reported."""
    planted = _summary(ledger["out"], "synthetic", seed, "sharing_radius")["radius"]
    null = _summary(ledger["out"], "synthetic-null", seed, "sharing_radius")["radius"]
    assert planted["estimate"] is not None and planted["slope_ci"][1] < 0 < planted["intercept_ci"][0]
    assert null["estimate"] is None and null["slope_ci"][0] < 0 < null["slope_ci"][1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", claims.QUICK_SEEDS)
def test_masking_contraction_finds_expanding_near_pairs_only_where_near_users_share_items(ledger, seed):
    """Near pairs whose overlap exceeds half their distance (c/d > 1 / (2 rho)): a fifth of the planted near
    pairs, none of the null's (independent users share few items)."""
    out = ledger["out"]
    rows = {}
    for dataset in ("synthetic", "synthetic-null"):
        pairs = pd.read_csv(out / "runs" / dataset / f"seed{seed}" / "masking_contraction" / "pairs.csv")
        near = pairs[pairs["stratum"] == "near"]["expected_expansion"]
        rows[dataset] = wilson(near.sum(), len(near))
    assert rows["synthetic"][0] > claims.PREVALENCE_THRESHOLD > rows["synthetic-null"][0]
    assert rows["synthetic"][0] > rows["synthetic-null"][1]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", claims.QUICK_DATASETS)
@pytest.mark.parametrize("seed", claims.QUICK_SEEDS)
def test_kl_budget_rate_falls_when_the_kl_weight_rises(ledger, dataset, seed):
    """kl_budget's intervention: the larger beta cap trains a model whose mean KL (the rate) is lower, its
    user-clustered interval disjoint from the smaller cap's, on planted and null data alike (the objective
    plants it, not the data)."""
    table = pd.DataFrame(_summary(ledger["out"], dataset, seed, "kl_budget")["table"])
    clean = table[table["rho"] == 1.0].sort_values("beta_cap")
    small, large = clean.iloc[0], clean.iloc[-1]
    assert large["beta_cap"] > small["beta_cap"]
    assert large["mean_kl_high"] < small["mean_kl_low"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", claims.QUICK_DATASETS)
@pytest.mark.parametrize("seed", claims.QUICK_SEEDS)
def test_pia_geometry_var_b_falls_under_the_penalty(ledger, dataset, seed):
    """pia_geometry's intervention: the PIA model's tr Var_b mu is below the no-PIA model's, paired over users,
    by more than three standard errors on every seed (Proposition 3.2 is about the objective, so it holds on the
    null data too; whether the drop matters relative to the between-user spread is the ``var_b_relative`` claim)."""
    rows = _summary(ledger["out"], dataset, seed, "pia_geometry")["summary"]
    row = next(r for r in rows if r["quantity"] == "var_b" and r["cohort"] == "all")
    assert row["diff"] + 3 * row["diff_se"] < 0


def test_data_options_reach_every_job_of_a_table(tmp_path, monkeypatch, run_cli):
    """``--sep '\\t' --user-col viewer ...`` on a csv: dataset: every job (and pia_uplift) gets them; a table
    option with a named dataset is a usage error before anything runs."""
    from analyses.paper_figures import JobResult

    calls: list[list[str]] = []

    def fake_run_job(spec, argv, out, shown_argv=None):
        calls.append(argv)
        return JobResult(spec.name, " ".join(argv), out, "failed", 2, "not run in this test", 0.1, None)

    monkeypatch.setattr(claims, "run_job", fake_run_job)
    table = ["--sep", "\\t", "--user-col", "viewer", "--item-col", "film", "--min-rating", "3.5"]
    argv = ["--datasets", "csv:r.tsv", "--seeds", "0", *table, "--out", str(tmp_path / "l"), "--no-progress"]
    code, _, stderr = run_cli(claims.main, argv)
    assert code == 0, stderr
    assert len(calls) == 1 + len(claims.SEED_JOBS)
    for a in calls:
        flags = {a[i]: a[i + 1] for i in range(len(a) - 1) if a[i].startswith("--")}
        assert flags["--dataset"] == "csv:r.tsv" and flags["--sep"] == "\t" and flags["--min-rating"] == "3.5"
        assert (flags["--user-col"], flags["--item-col"]) == ("viewer", "film")
    data = json.loads((tmp_path / "l" / "ledger.json").read_text())["options"]["data"]
    assert data[data.index("--user-col") + 1] == "viewer"
    code, _, stderr = run_cli(claims.main, ["--datasets", "ml-1m", "--user-col", "v", "--out", str(tmp_path / "m")])
    assert code == 2 and "--user-col applies to csv:PATH and parquet:PATH sources only, not ml-1m" in stderr


def test_the_accuracy_comparison_joins_the_uplift_and_the_baselines_file(tmp_path, monkeypatch, run_cli):
    """comparison.json and the claims.md section: the uplift's arms and the file's models, the file's reference
    merged with the uplift baseline it equals; the claims themselves are not at stake (the other jobs fail)."""
    from tests.analyses.test_comparison import baselines_doc, uplift_doc

    doc = uplift_doc()
    doc["rule"] = "the uplift rule"
    for block in doc["per_architecture"].values():
        block.update(interior=True, capped_models=[])

    monkeypatch.setattr(claims, "run_job", only_the_uplift_runs(doc))
    path = tmp_path / "results.json"
    path.write_text(json.dumps(baselines_doc()))
    out = tmp_path / "ledger"
    argv = [
        "--datasets",
        "synthetic",
        "--seeds",
        "0",
        "1",
        "2",
        "--baselines",
        f"synthetic={path}",
        "--out",
        str(out),
        "--no-progress",
    ]
    code, _, stderr = run_cli(claims.main, argv)
    assert code == 0, stderr
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["Multi-VAE", "Multi-VAE + PIA", "WMF", "EASE"]
    assert {r["dataset"] for r in rows} == {"synthetic"} and rows[2]["compared_with"] == "Multi-VAE"
    md = (out / "claims.md").read_text()
    assert "## Accuracy comparison" in md and "| synthetic | WMF |" in md
    assert "--workers" not in json.loads((out / "ledger.json").read_text())["jobs"][0]["command"]
    # without the option the table holds the uplift's rows only
    out2 = tmp_path / "ledger2"
    code, _, stderr = run_cli(claims.main, [*argv[:5], "--out", str(out2), "--no-progress", "--workers", "2"])
    assert code == 0, stderr
    assert "--workers 2" in json.loads((out2 / "ledger.json").read_text())["jobs"][0]["command"]  # to pia_uplift
    assert [r["model"] for r in json.loads((out2 / "comparison.json").read_text())] == ["Multi-VAE", "Multi-VAE + PIA"]


# ------------------------------------------------------------------------------- ledgers measured in parts


PARTS = {
    "synthetic": ("synthetic", ()),
    "synthetic-null": ("synthetic-null", ()),
    "synthetic-null quick": ("synthetic-null", ("--quick",)),
}
"""The finished one-dataset ledgers the merge tests join: name -> (dataset, extra options)."""


@pytest.fixture(scope="module")
def finished_parts(tmp_path_factory, run_cli) -> dict[str, Path]:
    """Each ledger of ``PARTS`` run once for the module: the uplift faked (its JSON written where the job would),
    every other job failing. Tests take copies (:func:`_part`), since several edit theirs."""
    from tests.analyses.test_comparison import uplift_doc

    doc = uplift_doc()
    doc["rule"] = "the uplift rule"
    for block in doc["per_architecture"].values():
        block.update(interior=True, capped_models=[])
    fake = only_the_uplift_runs(doc)

    def writing(spec, argv, out, shown_argv=None):
        if spec.name == "pia_uplift":
            out.mkdir(parents=True, exist_ok=True)
            (out / "uplift.json").write_text(json.dumps(doc))
        return fake(spec, argv, out, shown_argv)

    root = tmp_path_factory.mktemp("parts")
    built = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(claims, "run_job", writing)
        for name, (dataset, extra) in PARTS.items():
            out = root / name.replace(" ", "-")
            argv = ["--datasets", dataset, "--seeds", "0", "1", *extra, "--out", str(out), "--no-progress"]
            code, _, stderr = run_cli(claims.main, argv)
            assert code == 0, stderr
            built[name] = out
    return built


def _part(finished_parts: dict[str, Path], tmp_path: Path, kind: str, name: str) -> Path:
    """A copy, at ``tmp_path / name``, of the finished ledger ``kind`` of ``PARTS``."""
    import shutil

    return Path(shutil.copytree(finished_parts[kind], tmp_path / name))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--dataset", "x", "--seeds", "0"], ["multvae", "recvae"]),
        (["--models", "recvae", "--seeds", "0"], ["recvae"]),
        (["--quick", "--models", "multvae"], ["multvae"]),
        (["--models", "recvae", "multvae"], ["multvae", "recvae"]),  # the job's own order
        (["python", "-m", "analyses.pia_uplift", "--models=recvae", "--out", "o"], ["recvae"]),  # a recorded command
    ],
)
def test_the_uplift_architectures_are_read_from_its_command_line(argv, expected):
    assert claims.uplift_architectures(argv) == expected


def test_ledgers_measured_in_parts_merge_into_one(tmp_path, finished_parts, run_cli):
    from analyses.claims import verdict_table

    a = _part(finished_parts, tmp_path, "synthetic-null", "a")
    b = _part(finished_parts, tmp_path, "synthetic", "b")
    # the parts' job outputs travel with their rows (the fake jobs write none: plant one per part)
    for part, dataset in ((a, "synthetic-null"), (b, "synthetic")):
        (part / "runs" / dataset / "seed0").mkdir(parents=True, exist_ok=True)
        (part / "runs" / dataset / "seed0" / "marker.json").write_text(json.dumps({"from": part.name}))
    out = tmp_path / "merged"
    code, _, stderr = run_cli(claims.main, ["--merge", str(b), str(a), "--out", str(out)])
    assert code == 0, stderr
    rows_a, rows_b = (json.loads((p / "claims.json").read_text()) for p in (a, b))
    rows = json.loads((out / "claims.json").read_text())
    assert rows == rows_b + rows_a  # the order of --merge, every row as its part wrote it
    comp = [json.loads((p / "comparison.json").read_text()) for p in (b, a)]
    assert json.loads((out / "comparison.json").read_text()) == comp[0] + comp[1] and comp[0] and comp[1]
    for part, dataset in ((a, "synthetic-null"), (b, "synthetic")):
        assert json.loads((out / "runs" / dataset / "seed0" / "marker.json").read_text()) == {"from": part.name}
    manifest = json.loads((out / "ledger.json").read_text())
    jobs = [json.loads((p / "ledger.json").read_text())["jobs"] for p in (b, a)]
    assert manifest["jobs"] == jobs[0] + jobs[1] and manifest["datasets"] == ["synthetic", "synthetic-null"]
    assert [m["folder"] for m in manifest["merged_from"]] == [str(b), str(a)]
    md = (out / "claims.md").read_text()
    assert verdict_table(rows) in md and "| synthetic-null | 0 | cohorts | failed |" in md
    assert (out / "COMPLETE").is_file() and (out / "claims.png").is_file()
    # the parts' failed jobs stay on record in the merged marker
    failed = json.loads((out / "COMPLETE").read_text())["failed_jobs"]
    assert "synthetic/0/cohorts" in failed and "synthetic-null/1/cohorts" in failed


def test_a_merge_writes_a_budget_skipped_gain_per_architecture_even_from_an_older_single_row(
    tmp_path, monkeypatch, run_cli
):
    budget = claims.Budget(seeds=1, epochs=7, anneal_epochs=2, uplift=False, kl_users=50, why="too large here")
    monkeypatch.setattr(claims, "BUDGETS", {"synthetic": budget})
    monkeypatch.setattr(claims, "run_job", only_the_uplift_runs(None))
    part = tmp_path / "part"
    argv = ["--datasets", "synthetic", "--seeds", "0", "--out", str(part), "--no-progress"]
    assert run_cli(claims.main, argv)[0] == 0
    rows = json.loads((part / "claims.json").read_text())
    gains = [r for r in rows if r["claim"].startswith("pia_accuracy_gain")]
    assert [r["claim"] for r in gains] == ["pia_accuracy_gain[multvae]", "pia_accuracy_gain[recvae]"]
    # the single row an earlier version wrote for the skipped job
    older = {**gains[0], "claim": "pia_accuracy_gain", "statement": gains[0]["statement"].removesuffix(" (multvae)")}
    (part / "claims.json").write_text(json.dumps([r for r in rows if r not in gains] + [older]))
    out = tmp_path / "merged"
    code, _, stderr = run_cli(claims.main, ["--merge", str(part), "--out", str(out)])
    assert code == 0, stderr
    merged = [r for r in json.loads((out / "claims.json").read_text()) if r["claim"].startswith("pia_accuracy")]
    assert merged == gains


def test_a_merge_recomputes_every_row_from_the_parts_job_files(tmp_path, finished_parts, run_cli):
    """The merged rows come from the jobs' files under this version's rules, not from the parts' claims.json:
    a changed job file changes the merged row, a stale row in a part's claims.json does not survive, and a
    missing job file is one error line."""
    from analyses.claims import uplift_rows

    a = _part(finished_parts, tmp_path, "synthetic", "a")
    path = a / "runs" / "synthetic" / "pia_uplift" / "uplift.json"
    doc = json.loads(path.read_text())
    for s, gain in zip(doc["per_architecture"]["multvae"]["per_seed"], (0.05, 0.06, 0.055), strict=True):
        s["paired"]["ndcg@100"]["mean"] = gain
    path.write_text(json.dumps(doc))
    rows = json.loads((a / "claims.json").read_text())
    (a / "claims.json").write_text(json.dumps([{**r, "estimate": 123.0} for r in rows]))  # stale, hand-edited
    out = tmp_path / "merged"
    code, _, stderr = run_cli(claims.main, ["--merge", str(a), "--out", str(out)])
    assert code == 0, stderr
    merged = {r["claim"]: r for r in json.loads((out / "claims.json").read_text())}
    gain = merged["pia_accuracy_gain[multvae]"]
    expected = uplift_rows(doc, "synthetic", [0, 1], gain["command"], None)[0]
    assert gain["estimate"] == pytest.approx(0.055) and gain == json.loads(json.dumps(expected))
    assert gain["verdict"] == "supported"
    assert not any(r["estimate"] == 123.0 for r in merged.values())
    path.unlink()
    code, _, stderr = run_cli(claims.main, ["--merge", str(a), "--out", str(tmp_path / "merged2")])
    assert code == 2 and "uplift.json" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case, needle",
    [
        ("same dataset twice", "synthetic is in both"),
        ("unfinished", "not a finished claims ledger"),
        ("not a folder", "not a folder"),
        ("other options", "--merge runs no job: drop --datasets"),
        ("out is a part", "is one of the merged ledgers"),
        ("quick with full", "quick and full ledgers are mixed"),
        ("broken rows", "claims.json is not a list of ledger rows"),
    ],
)
def test_a_merge_that_cannot_stand_is_refused_in_one_line(case, needle, tmp_path, finished_parts, run_cli):
    a = _part(finished_parts, tmp_path, "synthetic", "a")
    kind = {"same dataset twice": "synthetic", "quick with full": "synthetic-null quick"}.get(case, "synthetic-null")
    other = _part(finished_parts, tmp_path, kind, "b")
    argv = ["--merge", str(a), str(other), "--out", str(tmp_path / "merged")]
    if case == "unfinished":
        (other / "COMPLETE").unlink()
    elif case == "not a folder":
        argv[2] = str(tmp_path / "nowhere")
    elif case == "other options":
        argv += ["--datasets", "synthetic"]
    elif case == "out is a part":
        argv[-1] = str(other)
    elif case == "broken rows":
        (other / "claims.json").write_text(json.dumps([{"claim": "x"}]))
    code, _, stderr = run_cli(claims.main, argv)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert not (tmp_path / "merged").exists()
