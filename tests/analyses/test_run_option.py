"""``--run DIR``: the single-Multi-VAE jobs (local_vs_global, sharing_radius, kl_budget) measure a run folder trained
with ``models.train`` instead of training their own model, on that run's split; the options the run's
configuration sets are refused beside it, one line each."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import analyses.trained as trained
from analyses import kl_budget, local_vs_global, sharing_radius
from analyses.common import result_options
from models.train import main as train_main
from models.trainer import read_history

# the --quick Multi-VAE of the jobs (QUICK_MODELS), trained by models.train with a beta cap of its own
QUICK_FLAGS = ["--hidden", "64", "--latent", "16", "--epochs", "15", "--lr", "3e-3", "--anneal-epochs", "10"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-option")
    run = root / "mine"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAECF_CACHE_DIR", str(root / "cache"))
        argv = ["--dataset", "synthetic", "--beta-cap", "0.3", *QUICK_FLAGS, "--no-progress", "--out", str(run)]
        assert train_main(argv) == 0
    return run


@pytest.fixture
def jobs_env(tmp_path, monkeypatch, run_dir):
    """An empty run cache: a job that trains anything leaves a folder in it."""
    monkeypatch.setenv("VAECF_CACHE_DIR", str(run_dir.parent / "cache"))
    monkeypatch.setenv(trained.RUNS_ENV, str(tmp_path / "runs"))
    return tmp_path


@pytest.mark.parametrize("job", [local_vs_global, sharing_radius])
def test_a_job_measures_the_run_it_is_given_and_trains_nothing(job, run_cli, jobs_env, run_dir):
    out = jobs_env / "out"
    code, _, stderr = run_cli(job.main, ["--quick", "--run", str(run_dir), "--out", str(out), "--no-progress"])
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    best = max(read_history(run_dir), key=lambda h: h["val_ndcg@100"])
    model = summary["model"]
    assert model["run"] == str(run_dir) and model["config"]["beta_cap"] == 0.3
    assert (model["best_epoch"], model["val_ndcg@100"]) == (best["epoch"], best["val_ndcg@100"])
    assert summary["options"]["run"] == str(run_dir)
    assert not (jobs_env / "runs").exists()


def test_kl_budget_of_a_run_is_that_of_the_same_model_from_the_cache(run_cli, jobs_env, run_dir):
    """The run folder and the run cache are two ways to one model: trained by the cache with the run's settings,
    the same budget to the last digit; the run's beta cap and keep probability (0.3 and models.train's default
    0.5, not the job's grids) are its one row."""
    sizes = ["--quick", "--users", "120", "--no-progress"]
    code, _, stderr = run_cli(kl_budget.main, [*sizes, "--run", str(run_dir), "--out", str(jobs_env / "a")])
    assert code == 0, stderr
    assert not (jobs_env / "runs").exists()
    cached = [*sizes, "--betas", "0.3", "--rhos", "0.5", "--hidden", "64", "--latent", "16", "--epochs", "15"]
    code, _, stderr = run_cli(kl_budget.main, [*cached, "--anneal-epochs", "10", "--out", str(jobs_env / "b")])
    assert code == 0, stderr
    a, b = (pd.read_csv(jobs_env / d / "budget.csv") for d in ("a", "b"))
    assert a["beta_cap"].tolist() == [0.3] and a["rho"].tolist() == [0.5]
    assert a["run"].tolist() == [str(run_dir)] and b["run"].tolist() != a["run"].tolist()
    numbers = [c for c in a.columns if c != "run" and pd.api.types.is_numeric_dtype(a[c])]
    pd.testing.assert_frame_equal(a[numbers], b[numbers])


@pytest.mark.parametrize(
    ("job", "extra", "needle"),
    [
        (local_vs_global, ["--epochs", "5"], "--epochs: --run {run} uses its own configuration"),
        (local_vs_global, ["--rho", "0.5"], "--rho: --run {run} uses its own configuration (config.json); drop --rho"),
        (sharing_radius, ["--heldout", "30"], "--heldout: --run {run} uses its own configuration"),
        (kl_budget, ["--betas", "0.1"], "--betas: --run {run} uses its own configuration"),
        (kl_budget, ["--min-rating", "none"], "--min-rating: --run {run} uses its own configuration"),
        (kl_budget, ["--dataset", "ml-1m"], "--dataset ml-1m: --run {run} was trained on synthetic"),
    ],
)
def test_options_the_run_sets_are_refused_in_one_line(job, extra, needle, run_cli, jobs_env, run_dir):
    code, stdout, stderr = run_cli(job.main, ["--quick", "--run", str(run_dir), *extra, "--out", str(jobs_env / "o")])
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle.format(run=run_dir) in lines[0], stderr
    assert not (jobs_env / "o").exists() and not (jobs_env / "runs").exists()


def test_a_run_of_another_model_or_no_run_at_all_is_refused(run_cli, jobs_env, tmp_path):
    dae = tmp_path / "dae"
    flags = ["--model", "multdae", "--hidden", "", "--latent", "16", "--epochs", "1", "--no-progress"]
    assert train_main(["--dataset", "synthetic", *flags, "--out", str(dae)]) == 0
    code, _, stderr = run_cli(local_vs_global.main, ["--quick", "--run", str(dae), "--out", str(tmp_path / "o")])
    assert code == 2 and "this job measures a Multi-VAE, the run trained multdae" in stderr, stderr
    code, _, stderr = run_cli(local_vs_global.main, ["--quick", "--run", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "is not a run folder (no config.json)" in stderr, stderr


def test_without_run_the_options_of_earlier_results_are_unchanged():
    """--run is new: absent, it adds nothing to a job's options, so earlier results keep their hash and folder."""
    args = local_vs_global.build_parser().parse_args(["--quick"])
    options = result_options(args)
    assert not {"run", "run_fixed", "run_config"} & set(options)
