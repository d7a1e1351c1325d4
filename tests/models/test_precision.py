"""--precision: bf16 autocast of the dense layers, float32 where it matters, auto only where bf16 is native."""

from __future__ import annotations

import json

import pytest
import torch

from models import precision
from models.batches import make_batch
from models.io import load_verified
from models.recvae import RecVAE
from models.trainer import ConfigError, TrainConfig, config_key, read_history, train
from models.vae import MultiVAE

TINY = {"hidden": (32,), "latent_dim": 8, "batch_size": 64, "eval_batch_size": 50}


@pytest.mark.parametrize("make", [lambda n: MultiVAE(n, (64,), 16), lambda n: RecVAE(n, hidden=64, latent_dim=16)])
def test_a_bf16_forward_is_close_to_float32_and_its_loss_terms_are_float32(tiny_split, make):
    torch.manual_seed(0)
    model = make(tiny_split.n_items)
    batch = make_batch(tiny_split.train[:64], rho=1.0)
    eps = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = model.forward_train(batch, eps)
        with precision.autocast("bf16", torch.device("cpu")):
            low = model.forward_train(batch, eps)
    for name in ("nll", "kl", "mu", "logvar"):  # computed in float32 from the bf16 layers' outputs
        assert getattr(low, name).dtype == torch.float32, name
    rel = float((low.nll - exact.nll).abs().max() / exact.nll.abs().max())
    assert 0 < rel < 2e-2  # bf16 products (8-bit mantissa) moved it, a little
    assert float((low.mu - exact.mu).abs().max()) < 5e-2 * float(exact.mu.abs().max()) + 1e-3


def test_a_bf16_run_keeps_float32_weights_and_records_its_precision(tmp_path, tiny_split):
    config = TrainConfig(model="multvae", epochs=2, pia=0.3, precision="bf16", **TINY)
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    history = read_history(tmp_path / "run")
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["precision"] == "bf16" and saved["derived"]["precision"]["chosen"] == "bf16"
    weights = load_verified(tmp_path / "run" / "best.pt")["model"]
    assert {t.dtype for t in weights.values()} == {torch.float32}  # master weights; Adam stepped float32
    # the float32 run of the same settings is another model: another cache key; fp32 leaves the key as before
    assert config_key(config) != config_key(TrainConfig(model="multvae", epochs=2, pia=0.3, **TINY))
    assert "precision" not in TrainConfig(**TINY).to_json()
    # the steps ran under bf16 autocast: the float32 run of the same settings records other losses (a little)
    train(TrainConfig(model="multvae", epochs=2, pia=0.3, **TINY), tmp_path / "fp32", split=tiny_split, progress=False)
    exact = read_history(tmp_path / "fp32")
    assert all(0 < abs(a["nll"] - b["nll"]) < 2e-2 * b["nll"] for a, b in zip(history, exact, strict=True))


def test_a_resumed_auto_run_keeps_the_precision_it_chose_without_deciding_again(tmp_path, tiny_split, monkeypatch):
    import models.trainer as trainer_module

    asked: list[str] = []

    def decide(requested: str, device: torch.device, chosen: str) -> tuple[str, dict]:
        asked.append(requested)
        return chosen, {"requested": requested, "chosen": chosen}

    config = TrainConfig(model="multvae", epochs=2, precision="auto", **TINY)
    monkeypatch.setattr(trainer_module, "resolve_precision", lambda r, d: decide(r, d, "bf16"))
    train(config, tmp_path / "run", split=tiny_split, progress=False, stop_after_epochs=1)
    assert asked == ["auto"]
    # the machine would now choose float32 (another machine, or a slower measurement): the run stays bf16
    monkeypatch.setattr(trainer_module, "resolve_precision", lambda r, d: decide(r, d, "fp32"))
    train(config, tmp_path / "run", split=tiny_split, progress=False, resume=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert asked == ["auto"] and saved["derived"]["precision"]["chosen"] == "bf16"
    assert len(read_history(tmp_path / "run")) == 2


def test_auto_takes_bf16_only_with_native_units_and_a_measured_speedup(monkeypatch):
    cpu = torch.device("cpu")
    rates = {torch.float32: 40.0, torch.bfloat16: 200.0}
    monkeypatch.setattr(precision, "gemm_rate", lambda dtype, device, shape=precision.BENCH_SHAPE: rates[dtype])
    for flags, expected in [(set(), "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")]:
        precision._auto_choice.cache_clear()
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: flags)
        chosen, record = precision.resolve_precision("auto", cpu)
        assert chosen == expected and record["requested"] == "auto" and record["native_bf16"] == bool(flags)
    rates[torch.bfloat16] = 41.0  # native but not faster: float32
    precision._auto_choice.cache_clear()
    assert precision.resolve_precision("auto", cpu)[0] == "fp32"
    precision._auto_choice.cache_clear()


def test_auto_on_this_machine_follows_its_cpu_flags():
    precision._auto_choice.cache_clear()
    chosen, record = precision.resolve_precision("auto", torch.device("cpu"))
    native = bool(precision.cpu_flags() & set(precision.BF16_CPU_FLAGS))
    assert record["native_bf16"] == native and record["fp32_gflops"] > 0 and record["bf16_gflops"] > 0
    if not native:  # emulated bf16 is slower: auto must fall back
        assert chosen == "fp32"
    precision._auto_choice.cache_clear()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx512f avx512_bf16\nbugs\t: x\n")
    assert precision.cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert precision.cpu_model(info) == "Some CPU 9000"
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_an_unknown_precision_is_one_line():
    with pytest.raises(ConfigError, match=r"precision \(--precision\) must be one of fp32, bf16, auto, got 'fp16'"):
        TrainConfig(precision="fp16").validate()
