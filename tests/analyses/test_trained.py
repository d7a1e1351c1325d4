"""The run cache of the analyses: trained once per configuration, reused, resumed, or a clear command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import analyses.trained as trained
from analyses.trained import get_trained, run_folder, train_command
from models.trainer import TrainConfig, config_key, load_run_split, split_fingerprint

TINY = TrainConfig(model="multvae", dataset="synthetic", epochs=1, hidden=(16,), latent_dim=4, batch_size=256)


def test_key_ignores_device_but_not_settings():
    assert config_key(TINY) == config_key(TrainConfig(**{**TINY.to_json(), "hidden": (16,), "device": "cpu"}))
    assert config_key(TINY) != config_key(TrainConfig(**{**TINY.to_json(), "hidden": (16,), "rho": 0.7}))


def test_trains_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "runs"))
    first = get_trained(TINY, progress=False)
    assert first.run == run_folder(TINY, split_fingerprint(load_run_split(TINY))) and (first.run / "best.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be trained again")

    monkeypatch.setattr(trained, "train", no_training)
    again = get_trained(TINY, progress=False)
    for (k, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert (a == b).all(), k


def test_missing_model_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match=r"python -m models\.train --model multvae") as err:
        get_trained(TINY, train_if_missing=False)
    split_id = split_fingerprint(load_run_split(TINY))
    assert str(run_folder(TINY, split_id)) in str(err.value)
    assert "--epochs 1" in train_command(TINY, split_id) and "--dataset synthetic" in train_command(TINY, split_id)


def _log(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_longer_run_continues_a_shorter_cached_one_exactly(tmp_path, monkeypatch, capsys):
    longer = replace(TINY, epochs=4, seed=3)
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "fresh"))
    fresh = get_trained(longer, progress=False)  # trained from scratch: nothing shorter in this cache
    assert "continuing" not in capsys.readouterr().err
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "runs"))
    short = get_trained(replace(longer, epochs=2), progress=False)
    other = get_trained(replace(longer, epochs=3, rho=0.7), progress=False)  # other settings: never continued
    before = (short.run / "metrics.jsonl").read_bytes()
    continued = get_trained(longer, progress=False)
    assert f"continuing the cached run {short.run} to 4 epochs" in capsys.readouterr().err
    assert continued.run not in (short.run, other.run) and (short.run / "metrics.jsonl").read_bytes() == before
    assert _log(continued.run) == _log(fresh.run) and len(_log(continued.run)) == 4
    for (k, a), (_, b) in zip(fresh.model.state_dict().items(), continued.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    derived = json.loads((continued.run / "config.json").read_text())["derived"]
    assert derived["changes_on_resume"] == [{"at_epoch": 2, "epochs": [2, 4]}]


@pytest.mark.slow
def test_train_all_in_two_processes_gives_the_models_of_one_process(tmp_path, monkeypatch, capsys):
    """Two spawned workers train what get_trained trains here, bit for bit (one thread each, as here on 2 cores),
    duplicates once; with the split given, cached models start no process and the call trains nothing."""
    configs = [replace(TINY, epochs=2, seed=s) for s in (0, 1)]
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "parallel"))
    done = trained.train_all([*configs, configs[0]], workers=2, progress=True)
    assert [c.seed for c in done] == [0, 1]
    assert capsys.readouterr().err.count("models trained (2 processes") == 2
    split = load_run_split(TINY)
    assert trained.train_all(configs, workers=2, split=split) == []  # all cached now
    parallel = [get_trained(c, train_if_missing=False) for c in configs]
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "serial"))
    torch.set_num_threads(1)
    serial = [get_trained(c, split=split, progress=False) for c in configs]
    for a, b in zip(parallel, serial, strict=True):
        assert a.run.parent != b.run.parent and a.run.name == b.run.name
        for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    assert _log(parallel[0].run) == _log(serial[0].run)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        trained.train_all(configs, workers=0)


def test_a_failing_model_in_a_worker_stops_train_all_with_its_error(tmp_path, monkeypatch):
    """A model that cannot train (its run folder is a file) fails in its worker; the error reaches the caller."""
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "runs"))
    split_id = split_fingerprint(load_run_split(TINY))
    bad = replace(TINY, seed=7)
    folder = run_folder(bad, split_id)
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    with pytest.raises(OSError):
        trained.train_all([replace(TINY, seed=8), bad], workers=2, progress=False)
