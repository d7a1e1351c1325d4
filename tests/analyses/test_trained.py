"""The run cache of the analyses: trained once per configuration, reused, resumed, or a clear command."""

from __future__ import annotations

import pytest

import analyses.trained as trained
from analyses.trained import config_key, get_trained, run_folder, train_command
from models.trainer import TrainConfig, load_run_split, split_fingerprint

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
