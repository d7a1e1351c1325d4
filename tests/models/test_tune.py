"""The tuning CLI (models.tune): space files, a tiny study on synthetic data, pruning, kill and resume, EASE."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models import tune
from models.baselines import select_ease_lambda
from models.train import config_from_args, parse_args
from models.trainer import ConfigError, TrainConfig, config_key, load_run_split, read_history

ROOT = Path(__file__).resolve().parents[2]
SPACE = """
[params.pia]
low = 0.03
high = 10.0
log = true
[params.rho]
low = 0.3
high = 1.0
[params.mask]
choices = ["dropout", "bernoulli"]
[fixed]
epochs = {epochs}
hidden = [16]
latent_dim = 4
batch_size = 250
"""
DATA = ["--dataset", "synthetic", "--heldout", "100"]


def space_file(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows_of(study: Path) -> list[dict]:
    with (study / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------ space files
def test_a_space_reads_ranges_log_ranges_integer_steps_and_choices_by_field_or_flag(tmp_path):
    text = (
        SPACE.format(epochs=3).replace("batch_size = 250\n", "")
        + "[params.batch-size]\nlow = 100\nhigh = 500\nstep = 100\n"
    )
    space = tune.read_space(space_file(tmp_path, text), "multvae")
    by_name = {p.name: p for p in space.params}
    assert by_name["pia"] == tune.Param("pia", "float", 0.03, 10.0, True)
    assert by_name["rho"] == tune.Param("rho", "float", 0.3, 1.0, False)
    assert by_name["mask_mode"] == tune.Param("mask_mode", "categorical", choices=("dropout", "bernoulli"))  # --mask
    assert by_name["batch_size"] == tune.Param("batch_size", "int", 100.0, 500.0, False, 100.0)  # --batch-size
    assert space.fixed == {"epochs": 3, "hidden": [16], "latent_dim": 4}
    as_json = space_file(tmp_path, json.dumps({"params": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}), "s.json")
    assert tune.read_space(as_json, "multvae").params == (tune.Param("lr", "float", 1e-4, 1e-2, True),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[params.pia]\nlow = 1.0\nhigh = 0.5\n", "params.pia: low must be below high"),
        ("[params.pia]\nlow = 0.0\nhigh = 1.0\nlog = true\n", "log-uniform range needs low > 0"),
        ("[params.pia]\nlow = 0.1\n", "needs low and high"),
        ("[params.pia]\nlow = 0.1\nhigh = 1.0\nmean = 3\n", "unknown keys ['mean']"),
        ("[params.pia]\nchoices = []\n", "choices must be a non-empty list"),
        ("[params.dropout_rate]\nlow = 0.1\nhigh = 0.5\n", "params.dropout_rate: not a training option"),
        ("[params.seed]\nlow = 0\nhigh = 5\n", "seed is not searched"),
        ("[params.pia]\nlow = 0.1\nhigh = 1.0\n[fixed]\npia = 0.5\n", "both searched and fixed"),
        ("[fixed]\nepochs = 3\n", "no [params] table"),
        ("[params.pia\nlow = 1\n", "invalid TOML"),
        ("[other]\nx = 1\n", "unknown keys ['other']"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_parameter(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        tune.read_space(space_file(tmp_path, text), "multvae")


def test_ease_spaces_search_lambda_only(tmp_path):
    good = tune.read_space(space_file(tmp_path, "[params.lambda]\nlow = 10.0\nhigh = 5000.0\nlog = true\n"), "ease")
    assert good.params == (tune.Param("lambda", "float", 10.0, 5000.0, True),)
    with pytest.raises(ConfigError, match="EASE has one hyperparameter, lambda"):
        tune.read_space(space_file(tmp_path, "[params.rho]\nlow = 0.1\nhigh = 1.0\n"), "ease")


def test_an_impossible_range_edge_is_refused_before_any_trial(tmp_path, capsys):
    path = space_file(tmp_path, "[params.rho]\nlow = 0.5\nhigh = 1.5\n")
    code = tune.main(["--space", str(path), *DATA, "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code != 0 and "params.rho = 1.5" in err and "rho" in err and "Traceback" not in err
    assert not (tmp_path / "study" / "study.db").exists()


# ------------------------------------------------------------------------------------------------ a tiny study
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tune")
    path = space_file(tmp, SPACE.format(epochs=3))
    out = tmp / "study"
    argv = ["--space", str(path), "--trials", "3", "--out", str(out), "--no-progress", *DATA]
    assert tune.main([*argv, "--pruner", "none", "--tensorboard", str(tmp / "tb")]) == 0
    return out


def test_each_trial_is_a_run_folder_and_the_best_config_trains_again(study):
    rows = rows_of(study)
    assert [r["state"] for r in rows] == ["complete"] * 3
    for r in rows:  # the value is the run's best validation NDCG@100, from its own metrics.jsonl
        history = read_history(study / r["run"])
        assert len(history) == 3 and int(r["epochs_run"]) == 3
        assert float(r["value"]) == pytest.approx(max(h["val_ndcg@100"] for h in history))
        config = json.loads((study / r["run"] / "config.json").read_text())
        assert config["pia"] == pytest.approx(float(r["pia"])) and config["mask_mode"] == r["mask_mode"]
    best = max(rows, key=lambda r: float(r["value"]))
    summary = json.loads((study / "study.json").read_text())
    assert summary["best"]["number"] == int(best["number"]) and summary["trials"]["complete"] == 3
    # best.json is a models.train --config file that names the best trial's run exactly
    config = config_from_args(parse_args(["--config", str(study / "best.json"), "--out", "unused"]))
    assert f"multvae-{config_key(config)}" == Path(best["run"]).name
    assert (study / "tuning.png").stat().st_size > 10_000


def test_tensorboard_events_of_each_trial_read_back_as_its_metrics(study):
    from models.tracking import read_scalars

    row = rows_of(study)[1]
    scalars = read_scalars(study.parent / "tb" / f"trial-{int(row['number']):04d}")
    history = read_history(study / row["run"])
    assert scalars["validation/ndcg@100"] == [(h["epoch"], pytest.approx(h["val_ndcg@100"])) for h in history]
    assert scalars["schedule/beta"] == [(h["epoch"], pytest.approx(h["beta"])) for h in history]
    assert {"train/loss", "train/nll", "train/kl", "schedule/lambda_a", "validation/recall@20"} <= set(scalars)


def test_running_the_study_again_adds_trials_up_to_the_total(study, capsys):
    space = study.parent / "space.toml"
    argv = ["--space", str(space), "--out", str(study), "--no-progress", "--pruner", "none", *DATA]
    assert tune.main([*argv, "--trials", "3"]) == 0
    assert "0 to run" in capsys.readouterr().err and len(rows_of(study)) == 3
    other = space_file(study.parent, SPACE.format(epochs=4), "other.toml")
    assert tune.main(["--space", str(other), "--out", str(study), *DATA, "--trials", "3"]) != 0
    assert "holds a study of another space" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ pruning
class PruneAt:
    """A stand-in Optuna trial that samples fixed values and asks to prune once epoch ``at`` is reported."""

    def __init__(self, values: dict, at: int) -> None:
        self.values, self.at, self.number = values, at, 0
        self.reported: list[tuple[int, float]] = []
        self.user_attrs: dict = {}

    def suggest_float(self, name, *a, **k):
        return self.values[name]

    suggest_categorical = suggest_float

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return bool(self.reported) and self.reported[-1][0] >= self.at

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def test_a_pruned_trial_stops_at_the_epoch_the_pruner_says_and_its_run_can_continue(tmp_path):
    import optuna

    space = tune.read_space(space_file(tmp_path, SPACE.format(epochs=6)), "multvae")
    args = tune.build_parser().parse_args(["--space", "unused", "--no-progress", *DATA])
    args.model = "multvae"
    base = tune._base(args, space)
    objective = tune._objective(args, base, space, tmp_path)
    trial = PruneAt({"pia": 0.5, "rho": 0.6, "mask_mode": "dropout"}, at=2)
    with pytest.raises(optuna.TrialPruned):
        objective(trial)
    run = tmp_path / trial.user_attrs["run"]
    assert [h["epoch"] for h in read_history(run)] == [1, 2]  # stopped right after epoch 2, checkpointed
    assert [s for s, _ in trial.reported] == [1, 2]
    # the same parameters again (a retried trial) continue that run: epochs 1-2 are reported from its log first
    again = PruneAt(trial.values, at=99)
    value = objective(again)
    assert [h["epoch"] for h in read_history(run)] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in again.reported] == [1, 2, 3, 4, 5, 6] and again.reported[:2] == trial.reported
    assert value == pytest.approx(max(v for _, v in again.reported))


# ------------------------------------------------------------------------------------------------ kill, resume
@pytest.mark.slow
def test_a_killed_study_resumes_its_interrupted_trial_from_the_run_checkpoint(tmp_path):
    space = space_file(tmp_path, SPACE.format(epochs=40))
    out = tmp_path / "study"
    argv = ["--space", str(space), "--trials", "2", "--out", str(out), "--no-progress", "--pruner", "none", *DATA]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "models.tune", *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    run = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((out / "trials").glob("multvae-*/metrics.jsonl")) if (out / "trials").is_dir() else []
        if runs and len(runs[0].read_text().splitlines()) >= 3:
            run = runs[0].parent
            break
        time.sleep(0.2)
    assert run is not None, "the study never trained 3 epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_history(run)
    assert 3 <= len(before) < 40
    with sqlite3.connect(out / "study.db") as db:  # the killed trial is left running in the storage
        assert db.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0] == 1
    assert tune.main(argv) == 0
    rows = rows_of(out)
    retry = [r for r in rows if r["retry_of"] == "0"]
    assert [r["state"] for r in rows] == ["fail", "complete", "complete"] and len(retry) == 1
    assert retry[0]["run"] == f"trials/{run.name}"  # the same run folder ...
    after = read_history(run)
    assert [h["epoch"] for h in after] == list(range(1, 41)) and after[: len(before)] == before  # ... continued


# ------------------------------------------------------------------------------------------------ EASE
def test_an_ease_study_scores_lambda_as_the_ease_baseline_does(tmp_path):
    space = space_file(tmp_path, "[params.lambda]\nlow = 5.0\nhigh = 2000.0\nlog = true\n")
    out = tmp_path / "ease"
    argv = ["--model", "ease", "--space", str(space), "--trials", "3", "--out", str(out), "--no-progress", *DATA]
    argv += ["--dtype", "float64"]  # float32 rounding reorders the synthetic items' near-tied scores
    assert tune.main(argv) == 0
    rows = rows_of(out)
    assert [r["state"] for r in rows] == ["complete"] * 3
    best = json.loads((out / "best.json").read_text())
    split = load_run_split(TrainConfig(model="multvae", dataset="synthetic", heldout=100))
    for r in rows:  # the independent path: the baseline's own lambda search (inverse solver) at that lambda
        _, search = select_ease_lambda(split, [float(r["lambda"])], solver="inverse", dtype=torch.float64)
        assert float(r["value"]) == pytest.approx(search.scores[float(r["lambda"])]["ndcg@100"]["mean"], abs=1e-9)
    assert best["lambda"] == pytest.approx(float(max(rows, key=lambda r: float(r["value"]))["lambda"]))


@pytest.mark.parametrize("name", ["multvae-pia.toml", "ease.toml"])
def test_the_committed_spaces_read_and_their_edges_are_valid(name):
    model = "ease" if name.startswith("ease") else "multvae"
    space = tune.read_space(ROOT / "docs" / "spaces" / name, model)
    tune.check_space(space, {**space.fixed, "model": model, "dataset": "ml-1m"})
    assert space.params
