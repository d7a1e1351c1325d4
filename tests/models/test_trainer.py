"""Training core: resumption after a real kill, PIA is training-only, data parallelism, configuration errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.batches import make_batch
from models.io import load_verified, save_verified
from models.pia import ItemAnchors, LambdaSchedule, alignment_loss, alignment_loss_monte_carlo
from models.train import main as train_main
from models.trainer import ConfigError, TrainConfig, beta_at, build_model, load_trained, train
from models.vae import MultiVAE

TINY = {"hidden": (32,), "latent_dim": 8, "batch_size": 64, "eval_batch_size": 50}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_stop_matches_uninterrupted(tmp_path, tiny_split):
    config = TrainConfig(model="multvae", epochs=4, rho=0.5, pia=0.2, pia_warmup=2, seed=3, **TINY)
    full = train(config, tmp_path / "full", split=tiny_split, progress=False)
    train(config, tmp_path / "cut", split=tiny_split, progress=False, stop_after_epochs=2)
    resumed = train(config, tmp_path / "cut", split=tiny_split, progress=False, resume=True)
    assert [h["val_ndcg@100"] for h in resumed.history] == [h["val_ndcg@100"] for h in full.history]
    a = load_verified(tmp_path / "full" / "checkpoint.pt")["model"]
    b = load_verified(tmp_path / "cut" / "checkpoint.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_a_run_written_with_epochs_from_zero_reads_and_resumes_numbered_from_one(tmp_path, tiny_split):
    """Runs written before the one-based convention (metrics.jsonl, checkpoint history and best epoch from 0):
    their progress reads numbered from 1, and a resumed one continues as an uninterrupted run numbers it."""
    from models.trainer import read_history, run_progress

    config = TrainConfig(model="multvae", epochs=3, seed=4, **TINY)
    full = train(config, tmp_path / "full", split=tiny_split, progress=False)
    old = tmp_path / "old"
    train(config, old, split=tiny_split, progress=False, stop_after_epochs=2)
    ckpt = load_verified(old / "checkpoint.pt")
    ckpt["history"] = [{**h, "epoch": h["epoch"] - 1} for h in ckpt["history"]]
    ckpt["best_epoch"] -= 1
    save_verified(old / "checkpoint.pt", ckpt)
    (old / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in ckpt["history"]))
    assert [h["epoch"] for h in read_history(old)] == [1, 2]
    assert run_progress(old)["best_epoch"] == int(np.argmax([h["val_ndcg@100"] for h in ckpt["history"]])) + 1
    resumed = train(config, old, split=tiny_split, progress=False, resume=True)
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in run.history] for run in (resumed, full)]
    assert timeless[0] == timeless[1] and resumed.best_epoch == full.best_epoch >= 1
    assert [json.loads(line)["epoch"] for line in (old / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_finished_legacy_run_keeps_its_best_epoch_numbered_from_one(tmp_path, tiny_split):
    """A finished run resumed with nothing left to train returns its own best epoch: a one-based run's as it is, and
    one written with epochs from 0 moved to the one-based numbering (not left at its old number, nor moved by more
    than one)."""
    config = TrainConfig(model="multvae", epochs=3, seed=4, **TINY)
    run = tmp_path / "run"
    done = train(config, run, split=tiny_split, progress=False)
    assert train(config, run, split=tiny_split, progress=False, resume=True).best_epoch == done.best_epoch  # as is
    ckpt = load_verified(run / "checkpoint.pt")
    ckpt["history"] = [{**h, "epoch": h["epoch"] - 1} for h in ckpt["history"]]
    ckpt["best_epoch"] -= 1
    save_verified(run / "checkpoint.pt", ckpt)
    again = train(config, run, split=tiny_split, progress=False, resume=True)
    assert again.best_epoch == done.best_epoch and [h["epoch"] for h in again.history] == [1, 2, 3]


def _half_run(tmp_path, tiny_split, **changes) -> tuple[TrainConfig, Path]:
    """One epoch of a two-epoch run: a folder to resume."""
    config = TrainConfig(model="multvae", epochs=2, seed=1, **{**TINY, **changes})
    train(config, tmp_path / "run", split=tiny_split, progress=False, stop_after_epochs=1)
    return config, tmp_path / "run"


def test_resume_with_other_settings_names_each_change_from_the_runs_value_to_the_new(tmp_path, tiny_split):
    config, run = _half_run(tmp_path, tiny_split)
    with pytest.raises(ConfigError, match=r"trained with other settings \(rho 0\.5 -> 0\.3\); resume with"):
        train(dataclasses.replace(config, rho=0.3), run, split=tiny_split, progress=False, resume=True)


@pytest.mark.parametrize("damage", ["extra optimiser", "renamed weights"])
def test_a_checkpoint_that_does_not_fit_is_refused_with_its_reason_cut_to_120_characters(tmp_path, tiny_split, damage):
    """A checkpoint with one optimiser state more than the model's phases (``zip`` is strict: the extra state is
    not dropped silently), or a state dict whose weights carry other names, is a damaged file; the loader's
    reason, whitespace folded, is quoted up to its first 120 characters."""
    from models.io import DamagedFile

    config, run = _half_run(tmp_path, tiny_split)
    ckpt = load_verified(run / "checkpoint.pt")
    if damage == "extra optimiser":
        ckpt["optimizers"].append(ckpt["optimizers"][0])
    else:
        ckpt["model"] = {f"old.{k}": v for k, v in ckpt["model"].items()}  # every key missing, every key unknown
    save_verified(run / "checkpoint.pt", ckpt)
    with pytest.raises(DamagedFile, match="does not fit this model") as caught:
        train(config, run, split=tiny_split, progress=False, resume=True)
    reason = re.search(r"does not fit this model \((.*)\); restore it", str(caught.value)).group(1)
    if damage == "extra optimiser":
        assert "longer" in reason  # zip(strict=True)'s own words
    else:
        assert reason.startswith("Error(s) in loading state_dict") and len(reason) == 120


@pytest.mark.slow
def test_resume_after_kill_of_cli_run(tmp_path, tiny_split):
    """Kill a real `python -m models.train` process mid-run, resume it, compare with an uninterrupted run."""
    data = np.column_stack([tiny_split.train.nonzero()[0], tiny_split.train.nonzero()[1]])
    csv = tmp_path / "plays.csv"
    csv.write_text("user,item\n" + "\n".join(f"{u},{i}" for u, i in data) + "\n")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"hidden": [32], "latent_dim": 8, "batch_size": 32, "eval_batch_size": 50}))
    env = {**os.environ, "VAECF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    base = [
        sys.executable,
        "-m",
        "models.train",
        "--config",
        str(cfg),
        "--dataset",
        f"csv:{csv}",
        "--heldout",
        "0.1",
        "--epochs",
        "6",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*base, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        log = killed / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((killed / "metrics.jsonl").read_text().splitlines())
    assert 2 <= done < 6, "the kill must land mid-run"
    assert subprocess.run([*base, "--out", str(killed), "--resume"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([*base, "--out", str(tmp_path / "whole")], env=env, capture_output=True).returncode == 0
    a = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [x["val_ndcg@100"] for x in a] == [x["val_ndcg@100"] for x in b]
    assert [x["nll"] for x in a] == [x["nll"] for x in b]


def test_pia_scores_do_not_depend_on_anchors(tmp_path, tiny_split):
    config = TrainConfig(model="multvae", epochs=2, pia=0.5, **TINY)
    run = tmp_path / "pia"
    train(config, run, split=tiny_split, progress=False)
    fold_in = tiny_split.test.fold_in
    before = load_trained(run)[0].score(fold_in)
    # The inference model is the plain Multi-VAE: same parameters and shapes as a run without PIA, so the same
    # inference cost, and nothing in it refers to the anchors.
    plain = build_model(TrainConfig(model="multvae", pia=0.0, **TINY), tiny_split.n_items)
    model = load_trained(run)[0]
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    best = load_verified(run / "best.pt")
    assert best["anchors"] is not None and float(best["anchors"].abs().sum()) > 0, "the anchors were saved"

    def rescored(change) -> torch.Tensor:  # scores of the run after `change` edited what best.pt holds
        edited = load_verified(run / "best.pt")
        change(edited)
        save_verified(run / "best.pt", edited)
        return load_trained(run)[0].score(fold_in)

    # the anchors best.pt holds, scrambled: the scores the run gives do not move
    assert torch.equal(rescored(lambda b: b["anchors"].normal_()), before)
    # positive control: the same edit of an encoder weight does move them
    after = rescored(lambda b: b["model"]["input.bag.weight"].normal_())
    assert not torch.allclose(after, before)


def test_alignment_closed_form_equals_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    rows = (torch.rand(6, 30, generator=gen) < 0.3).numpy().astype(np.float32)
    rows[:, 0] = 1
    import scipy.sparse as sp

    batch = make_batch(sp.csr_matrix(rows), rho=0.5, generator=gen)
    mu = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    logvar = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 0.5
    anchors = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    exact = alignment_loss(mu, logvar, anchors, batch)
    mc = alignment_loss_monte_carlo(mu, logvar, anchors, batch, n_samples=40_000, generator=gen)
    torch.testing.assert_close(mc, exact, rtol=0.02, atol=0.02)
    # Definition check without sampling: sigma = 0 reduces L_A to the mean squared distance to the anchors, also
    # for anchors as close together as at initialisation (spread far below 1: a mutation testing survivor)
    zero_var = torch.full_like(logvar, -200.0)
    for scale in (1.0, 0.01):
        near = anchors * scale
        direct = torch.stack(
            [((mu[u] - near[torch.from_numpy(np.flatnonzero(rows[u]))]) ** 2).sum(1).mean() for u in range(6)]
        )
        torch.testing.assert_close(alignment_loss(mu, zero_var, near, batch), direct)


def test_alignment_of_users_with_no_one_and_several_positives():
    """A user without positives contributes 0; one positive gives ||mu - e||^2 + tr Sigma (no spread); three give
    the definition (mutation survivors: ``counts > 0`` as ``>= 0`` or ``> 1`` passed every test)."""
    import scipy.sparse as sp

    rows = np.zeros((3, 5), dtype=np.float32)
    rows[1, 2] = 1
    rows[2, [0, 3, 4]] = 1
    batch = make_batch(sp.csr_matrix(rows))
    gen = torch.Generator().manual_seed(3)
    mu = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    logvar = torch.randn(3, 2, generator=gen, dtype=torch.float64) * 0.3
    anchors = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    loss = alignment_loss(mu, logvar, anchors, batch)
    trace = logvar.exp().sum(1)
    assert float(loss[0]) == 0.0
    torch.testing.assert_close(loss[1], ((mu[1] - anchors[2]) ** 2).sum() + trace[1])
    torch.testing.assert_close(loss[2], ((mu[2] - anchors[[0, 3, 4]]) ** 2).sum(1).mean() + trace[2])
    # the sampling estimate agrees for each of them, the one-positive user included
    mc = alignment_loss_monte_carlo(mu, logvar, anchors, batch, n_samples=40_000, generator=gen)
    torch.testing.assert_close(mc, loss, rtol=0.03, atol=0.03)


def test_separate_anchors_start_at_their_scale():
    """``e_i ~ N(0, init_std^2)``: default 0.01 (mutation survivors: 0.02, and ``/ init_std`` for ``*``)."""
    torch.manual_seed(0)
    for anchors, scale in ((ItemAnchors(4000, 8), 0.01), (ItemAnchors(4000, 8, init_std=0.2), 0.2)):
        assert float(anchors.weight.detach().std()) == pytest.approx(scale, rel=0.03)


def test_lambda_schedule_and_beta():
    sched = LambdaSchedule(0.4, warmup_epochs=4)
    assert [sched.value(e) for e in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert LambdaSchedule(0.4).value(0) == 0.4
    with pytest.raises(ValueError, match="lambda_A must be >= 0"):
        LambdaSchedule(-0.1)
    # a schedule is a value: frozen, so the trainer cannot change it in the middle of a run, and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.lambda_a = 1.0  # type: ignore[misc]
    assert hash(sched) == hash(LambdaSchedule(0.4, warmup_epochs=4))
    c = TrainConfig(beta_cap=0.2, anneal_steps=1000)
    assert beta_at(c, 100, 10) == pytest.approx(0.1)
    assert beta_at(c, 10_000, 10) == pytest.approx(0.2)
    c = TrainConfig(beta_cap=0.2, anneal_epochs=5)
    assert beta_at(c, 5 * 10, 10) == pytest.approx(0.2)
    assert beta_at(c, 25, 10) == pytest.approx(0.1)


def test_tied_anchors_are_the_decoder_weights_themselves_and_not_parameters_of_their_own():
    decoder = torch.nn.Linear(8, 50)
    anchors = ItemAnchors(50, 8, tied_to=decoder)
    assert anchors.tied and anchors.weight is decoder.weight  # the same tensor: a decoder step moves the anchors
    assert list(anchors.parameters()) == []  # the decoder's weights are stepped (and saved) by the decoder only
    separate = ItemAnchors(50, 8)
    assert not separate.tied and separate.weight is separate.weight_param and len(list(separate.parameters())) == 1


def test_tied_anchors_need_a_linear_decoder():
    with pytest.raises(ValueError, match="tied"):
        ItemAnchors(50, 8, tied_to=MultiVAE(50, (32,), 8).decoder[-1])
    with pytest.raises(ConfigError, match="linear decoder"):
        TrainConfig(model="multvae", pia=0.1, pia_anchors="tied").validate()
    with pytest.raises(ConfigError, match="linear decoder"):
        TrainConfig(model="multvae", pia=1.0, pia_anchors="tied").validate()
    TrainConfig(model="multvae", pia=0.0, pia_anchors="tied").validate()  # no PIA: the anchor kind is moot
    TrainConfig(model="recvae", pia=0.1, pia_anchors="tied").validate()


def test_multdae_weight_decay_is_in_the_loss(tmp_path, tiny_split):
    """With a huge weight decay and no data signal, the weights must shrink: the L2 term reaches the update."""
    config = TrainConfig(model="multdae", epochs=1, weight_decay=10.0, lr=1e-2, **{**TINY, "hidden": ()})
    model0 = build_model(config, tiny_split.n_items)
    norm0 = float(model0.weight_penalty().detach())
    train(config, tmp_path / "dae", split=tiny_split, progress=False)
    ckpt = load_verified(tmp_path / "dae" / "checkpoint.pt")
    model0.load_state_dict(ckpt["model"])
    assert float(model0.weight_penalty()) < 0.5 * norm0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "nope"], "unknown model"),
        (["--dataset", "nope"], "unknown dataset"),
        (["--rho", "0"], "rho (--rho) must lie in (0, 1]"),
        (["--rho", "1.2"], "rho (--rho) must lie in (0, 1]"),
        (["--pia", "-0.1"], "pia (--pia) must be >= 0"),
    ],
)
def test_cli_rejects_bad_configurations(tmp_path, capsys, flags, message):
    assert train_main([*flags, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "r").exists(), "nothing is written before the configuration is valid"


def test_not_a_run_folder(tmp_path, capsys):
    from models.evaluate import main as eval_main

    (tmp_path / "empty").mkdir()
    assert eval_main([str(tmp_path / "empty")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path / "empty"), "--resume", "--dataset", "synthetic"]) == 2
    assert "no run to resume there" in capsys.readouterr().err


def test_config_file_values_are_overridden_by_flags(tmp_path):
    from models.train import config_from_args, parse_args

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "multdae", "rho": 0.3, "epochs": 7}))
    config = config_from_args(parse_args(["--config", str(cfg), "--rho", "0.8", "--out", "x"]))
    assert (config.model, config.rho, config.epochs) == ("multdae", 0.8, 7)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rhoo": 0.3}))
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_args(parse_args(["--config", str(bad), "--out", "x"]))


# weight decay too: each rank adds 1/world of the L2 penalty, so the all-reduced gradient holds it once
DDP = {"model": "multvae", "epochs": 3, "pia": 0.3, "weight_decay": 0.05, "seed": 5, "device": "cpu", **TINY}


def _join_gloo(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _on_two_gloo_ranks(worker, out: Path, split) -> None:
    """``worker(rank, 2, port, out, split)`` in two processes of one gloo group on this machine (a free port)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, str(out), split), nprocs=2, join=True)


def _ddp_worker(rank: int, world: int, port: int, out: str, split) -> None:
    import torch.distributed as dist

    _join_gloo(rank, world, port)
    try:
        config = TrainConfig(**DDP)
        state = train(config, Path(out), split=split, progress=False, on_epoch=_stop_after_two)
        # what each rank ends with: rank 0 decides the best epoch and the stop, and the others must agree
        shown = {"epoch": state.epoch, "best_epoch": state.best_epoch, "best_value": state.best_value}
        (Path(out).parent / f"rank{rank}.json").write_text(json.dumps(shown))
    finally:
        dist.destroy_process_group()


def _stop_after_two(record: dict) -> bool:
    return record["epoch"] >= 2


def test_data_parallel_gloo_matches_single_process(tmp_path, tiny_split):
    _on_two_gloo_ranks(_ddp_worker, tmp_path / "ddp", tiny_split)
    config = TrainConfig(**DDP)
    single = train(config, tmp_path / "single", split=tiny_split, progress=False, on_epoch=_stop_after_two)
    # both ranks stopped where rank 0's on_epoch said, after epoch 2 of 3, with rank 0's best epoch and value
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["epoch"] == single.epoch == 2
    assert ranks[0]["best_epoch"] == single.best_epoch
    assert ranks[0]["best_value"] == pytest.approx(single.best_value, abs=1e-4)
    a = load_verified(tmp_path / "ddp" / "checkpoint.pt")
    b = load_verified(tmp_path / "single" / "checkpoint.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["anchors"]["weight_param"], b["anchors"]["weight_param"], rtol=1e-4, atol=1e-5)
    assert a["history"][-1]["val_ndcg@100"] == pytest.approx(b["history"][-1]["val_ndcg@100"], abs=1e-4)
    # each epoch's record is over every training user, not rank 0's half of each batch: the ranks' sums and counts
    # are all-reduced before the per-user means
    assert len(a["history"]) == len(b["history"]) == 2
    for ddp, single in zip(a["history"], b["history"], strict=True):
        for key in ("nll", "kl", "pia", "loss"):
            assert ddp[key] == pytest.approx(single[key], rel=1e-4), (ddp["epoch"], key)


def _ddp_leave_worker(rank: int, world: int, port: int, out: str, split) -> None:
    import torch.distributed as dist

    import models.trainer as trainer_module

    _join_gloo(rank, world, port)
    try:
        shown: dict = {}
        # the ranks would decide differently (another device or library on each; fixed here, so that a machine
        # whose own auto choice is bf16 changes nothing): each must end with rank 0's choice
        mine = "fp32" if rank == 0 else "bf16"
        trainer_module.resolve_precision = lambda precision, device: (mine, {"requested": "auto", "chosen": mine})
        decide = trainer_module._run_precision

        def recorded_precision(*args, **kwargs):
            chosen = decide(*args, **kwargs)
            shown["precision"] = chosen[0]
            return chosen

        trainer_module._run_precision = recorded_precision
        if rank == 0:
            # rank 0 writes the run's files slowly: the other rank must not return before they are written
            save = trainer_module.save_verified

            def slow_save(*args, **kwargs):
                time.sleep(0.5)
                save(*args, **kwargs)
                shown["saved"] = time.time()

            trainer_module.save_verified = slow_save
        config = TrainConfig(model="multvae", epochs=1, seed=5, device="cpu", precision="auto", **TINY)
        train(config, Path(out), split=split, progress=False)
        shown["returned"] = time.time()
        (Path(out).parent / f"leave{rank}.json").write_text(json.dumps(shown))
    finally:
        dist.destroy_process_group()


def test_data_parallel_ranks_take_rank_0s_precision_and_return_after_its_files_are_written(tmp_path, tiny_split):
    """The precision an ``auto`` run chose on rank 0 is broadcast to the others, and the final barrier keeps a rank
    from returning (and tearing its process group down) while rank 0 still writes the run's files: a mutation run
    skipped the broadcast and the barrier and no test noticed."""
    _on_two_gloo_ranks(_ddp_leave_worker, tmp_path / "ddp", tiny_split)
    ranks = [json.loads((tmp_path / f"leave{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["precision"] == ranks[1]["precision"] == "fp32"
    assert ranks[1]["returned"] >= ranks[0]["saved"]


def test_on_epoch_sees_each_record_and_stops_the_run_when_it_returns_true(tmp_path, tiny_split):
    from models.trainer import read_history, run_progress

    seen: list[dict] = []

    def on_epoch(record: dict) -> bool:
        seen.append(dict(record))
        return record["epoch"] >= 2

    config = TrainConfig(model="multvae", epochs=4, seed=3, **TINY)
    started = time.perf_counter()
    state = train(config, tmp_path / "run", split=tiny_split, progress=False, on_epoch=on_epoch)
    elapsed = time.perf_counter() - started
    history = read_history(tmp_path / "run")
    assert [r["epoch"] for r in seen] == [1, 2] and state.epoch == 2 and seen == history
    # each epoch's wall time, in seconds to the millisecond, within the call's
    assert all(0 < r["seconds"] <= elapsed and r["seconds"] == round(r["seconds"], 3) for r in history)
    stopped = run_progress(tmp_path / "run")
    assert stopped == {"epochs_done": 2, "epochs_planned": 4, "finished": False, "best_epoch": state.best_epoch}
    train(config, tmp_path / "run", split=tiny_split, progress=False, resume=True)
    assert run_progress(tmp_path / "run")["finished"] is True and len(read_history(tmp_path / "run")) == 4


def test_a_later_epoch_that_only_ties_the_best_validation_value_does_not_replace_it(tmp_path, tiny_split, monkeypatch):
    import models.trainer as trainer_module

    class Tied:
        def summary(self) -> dict:
            return {m: {"mean": 0.25} for m in trainer_module.VALIDATION_METRICS}

    monkeypatch.setattr(trainer_module, "evaluate", lambda *args, **kwargs: Tied())
    state = train(
        TrainConfig(model="multvae", epochs=3, seed=3, **TINY), tmp_path / "run", split=tiny_split, progress=False
    )
    assert state.best_epoch == 1 and load_verified(tmp_path / "run" / "best.pt")["epoch"] == 1


def test_the_anchors_of_a_pia_runs_best_epoch_are_loaded_and_a_run_without_pia_has_none(tmp_path, tiny_split):
    from models.trainer import load_anchors

    train(TrainConfig(model="multvae", epochs=1, pia=0.3, **TINY), tmp_path / "pia", split=tiny_split, progress=False)
    anchors = load_anchors(tmp_path / "pia")
    stored = load_verified(tmp_path / "pia" / "best.pt")["anchors"]
    assert anchors.dtype == np.float64 and anchors.shape == (tiny_split.n_items, TINY["latent_dim"])
    np.testing.assert_array_equal(anchors, stored.double().numpy())
    train(TrainConfig(model="multvae", epochs=1, **TINY), tmp_path / "plain", split=tiny_split, progress=False)
    assert load_anchors(tmp_path / "plain") is None


def test_a_best_model_that_does_not_fit_its_configuration_is_refused_with_its_reason_cut(tmp_path, tiny_split):
    from models.io import DamagedFile

    _, run = _half_run(tmp_path, tiny_split)
    best = load_verified(run / "best.pt")
    best["model"] = {f"old.{k}": v for k, v in best["model"].items()}
    save_verified(run / "best.pt", best)
    with pytest.raises(DamagedFile, match=r"does not fit the model of config\.json") as caught:
        load_trained(run)
    message = str(caught.value)
    reason = re.search(r"does not fit the model of config.json \((.*)\); resume the run", message).group(1)
    assert message.startswith(f"{run / 'best.pt'}: ") and len(reason) == 120


def test_the_defaults_are_the_reference_hyperparameters():
    """PROTOCOL.md: Multi-VAE and Multi-DAE Adam lr 1e-3, batch 500, 200 epochs, beta = min(0.2, updates / 200,000),
    [I-600-200-600-I]; Multi-DAE [I-200-I] with weight decay 0.01, and CDAE with Multi-DAE's schedule; RecVAE lr
    5e-4, about 50 outer epochs of 3 encoder passes, hidden 600, gamma 0.005."""
    vae = TrainConfig(model="multvae").resolved()
    assert (vae.lr, vae.epochs, vae.weight_decay, vae.hidden, vae.latent_dim) == (1e-3, 200, 0.0, (600,), 200)
    assert (vae.batch_size, vae.beta_cap, vae.anneal_steps, vae.anneal_epochs) == (500, 0.2, 200_000, None)
    assert (vae.rho, vae.mask_mode, vae.pia, vae.pia_warmup, vae.pia_anchors) == (0.5, "dropout", 0.0, 0, "separate")
    assert (vae.pia_init_std, vae.seed, vae.eval_batch_size, vae.device) == (0.01, 0, 1000, "auto")
    dae = TrainConfig(model="multdae").resolved()
    assert (dae.lr, dae.epochs, dae.weight_decay, dae.hidden, dae.latent_dim) == (1e-3, 200, 0.01, (), 200)
    # CDAE [I-K-I] (models/cdae.py) takes Multi-DAE's schedule
    cdae = TrainConfig(model="cdae").resolved()
    assert (cdae.lr, cdae.epochs, cdae.weight_decay, cdae.hidden, cdae.latent_dim) == (1e-3, 200, 0.01, (), 200)
    rec = TrainConfig(model="recvae").resolved()
    assert (rec.lr, rec.epochs, rec.weight_decay, rec.hidden) == (5e-4, 50, 0.0, (600,))
    assert (rec.gamma, rec.enc_epochs, rec.latent_dim) == (0.005, 3, 200)
    # a value given is kept, not replaced by the reference
    assert TrainConfig(model="recvae", lr=1e-2, hidden=(64,), epochs=3).resolved().lr == 1e-2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 2.5, "epochs (--epochs) must be an integer, got 2.5"),
        ("epochs", 3.0, "epochs (--epochs) must be an integer, got 3.0"),
        ("epochs", True, "must be an integer, got True"),
        ("epochs", "3", "must be an integer, got '3'"),
        ("rho", "x", "rho (--rho) must be a finite number, got 'x'"),
        ("rho", float("inf"), "must be a finite number, got inf"),
        ("rho", float("nan"), "must be a finite number, got nan"),
        ("rho", True, "must be a finite number, got True"),
        ("rho", None, "rho must be set, got null"),
        ("model", 3, "model (--model) must be a string, got 3"),
        ("data", {"nope": 1}, "data must be a table of data options"),
        ("data", [["min_uc", 5]], "data must be a table of data options"),
        ("hidden", "600", "hidden (--hidden) must be a list of integer widths"),
        ("hidden", [600, True], "must be a list of integer widths"),
        ("hidden", [600, 2.0], "must be a list of integer widths"),
    ],
)
def test_each_field_refuses_values_of_another_type(field, value, message):
    with pytest.raises(ConfigError) as exc:
        TrainConfig(**{field: value}).validate()
    assert message in str(exc.value)


def test_values_of_the_right_type_pass_and_the_config_is_frozen():
    TrainConfig(epochs=3, rho=1, hidden=[64, 32], data={"min_uc": 5}, lr=None, heldout=100).validate()
    TrainConfig(hidden=()).validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().rho = 0.3  # a config is a value: runs are keyed by it


@pytest.mark.parametrize(
    ("field", "allowed", "refused"),
    [
        ("rho", [1.0, 1e-6], [0.0, 1.0000001]),
        ("beta_cap", [0.0], [-1e-9]),
        ("anneal_steps", [1], [0]),
        ("anneal_epochs", [1, None], [0]),
        ("pia", [0.0], [-1e-9]),
        ("pia_warmup", [0], [-1]),
        ("pia_init_std", [1e-9], [0.0]),
        ("epochs", [1], [0]),
        ("batch_size", [1], [0]),
        ("eval_batch_size", [1], [0]),
        ("lr", [1e-12], [0.0]),
        ("weight_decay", [0.0], [-1e-9]),
        ("latent_dim", [1], [0]),
        ("hidden", [(1,), ()], [(0,), (5, 0)]),
        ("gamma", [0.0], [-1e-9]),
        ("enc_epochs", [1], [0]),
        ("seed", [0], [-1]),
        ("heldout", [1, 0.49, 1e-3, None], [0.5, 0, 1.5, -1]),
    ],
)
def test_each_range_check_sits_at_its_boundary(field, allowed, refused):
    """The value on the boundary of each range passes, the nearest value beyond it is one line naming the field."""
    for value in allowed:
        TrainConfig(model="multvae", **{field: value}).validate()
    for value in refused:
        with pytest.raises(ConfigError, match=field):
            TrainConfig(model="multvae", **{field: value}).validate()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"epochs": 0}, r"epochs \(--epochs\) must be > 0"),
        ({"pia": 0.1, "pia_anchors": "tied"}, "linear decoder"),
    ],
)
def test_train_refuses_an_impossible_configuration_before_it_makes_the_run_folder(
    tmp_path, tiny_split, changes, needle
):
    """train() itself validates (library callers do not go through the CLI's checks): without that, zero epochs
    ran and wrote a run, and tied anchors on Multi-VAE failed deep inside with another error (a mutation run
    dropped the call and nothing noticed)."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=needle):
        train(TrainConfig(model="multvae", **{**TINY, **changes}), out, split=tiny_split, progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"data": {"sep": "\t"}}, "--sep applies to csv:PATH and lists:PATH sources only, not ml-1m"),
        ({"data": {"min_uc": -1}}, "min_uc must be an integer >= 1, got -1"),
        ({"dataset": "csv:x.csv", "data": {"user_col": ""}}, "--user-col must not be empty"),
        ({"device": "tpu"}, "device 'tpu' is not a device name"),
    ],
)
def test_the_data_options_and_the_device_are_checked_with_the_configuration(changes, needle):
    """validate() checks the data options against the dataset (models.data.check_data_options), the split and
    table options themselves (SplitConfig / TableOptions.validate) and an explicit device (resolve_device): a
    mutation run dropped each call and no test of the trainer's files noticed."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig(**{"model": "multvae", "dataset": "ml-1m", **changes}).validate()
    TrainConfig(model="multvae", dataset="csv:x.csv", data={"sep": "\t", "min_uc": 2}).validate()  # all allowed


def test_the_json_of_a_configuration_names_a_precision_other_than_fp32():
    """fp32 (the published protocol) is left out of the JSON, so older run keys stand; any other precision is kept."""
    assert "precision" not in TrainConfig().to_json()
    assert TrainConfig(precision="bf16").to_json()["precision"] == "bf16"
    assert TrainConfig(precision="auto").to_json()["precision"] == "auto"


def test_one_based_leaves_runs_numbered_from_1_alone_and_says_so():
    from models.trainer import one_based

    assert one_based([{"epoch": 1}, {"epoch": 2}]) == ([{"epoch": 1}, {"epoch": 2}], False)
    assert one_based([{"epoch": 0}, {"epoch": 1}]) == ([{"epoch": 1}, {"epoch": 2}], True)
    assert one_based([]) == ([], False)


def test_the_cache_key_of_a_configuration_stays_the_same():
    """config_key names every cached run (with the split and MODEL_CODE_VERSION): a configuration must keep its key
    from one version of the code to the next, or every run cache is silently lost (a change of what a
    configuration trains bumps MODEL_CODE_VERSION instead). Pinned for two configurations: 12 hex digits of the
    sha256 of the resolved configuration's JSON with sorted keys and the device left out."""
    from models.trainer import config_key

    vae = TrainConfig(model="multvae", dataset="ml-1m")
    assert config_key(vae) == "5ffe133f3958"
    assert config_key(TrainConfig(model="recvae", dataset="synthetic", seed=3)) == "cdb1d4dbd295"
    assert config_key(dataclasses.replace(vae, device="cpu")) == config_key(vae)


def test_split_config_of_carries_the_data_options_and_a_whole_heldout_count():
    from models.trainer import split_config_of

    assert split_config_of(TrainConfig(dataset="ml-1m")) is None  # the preset, untouched
    only_data = split_config_of(TrainConfig(dataset="ml-1m", data={"min_uc": 7}))
    assert only_data is not None and only_data.min_uc == 7
    one = split_config_of(TrainConfig(dataset="ml-1m", heldout=1.0)).n_heldout
    assert one == 1 and isinstance(one, int)  # one user, not the fraction 1.0
    assert split_config_of(TrainConfig(dataset="ml-1m", heldout=0.2)).n_heldout == 0.2
    many = split_config_of(TrainConfig(dataset="ml-1m", heldout=600.0)).n_heldout
    assert many == 600 and isinstance(many, int)


def test_the_split_fingerprint_sees_every_array_of_every_matrix(tiny_split):
    """Two splits that differ only in a matrix's shape, only in its row pointers or only in its column indices
    get different fingerprints (the run cache must never serve a model of another split)."""
    import scipy.sparse as sp

    from models.trainer import split_fingerprint

    base = split_fingerprint(tiny_split)
    t = tiny_split.train.tocsr()
    wider = sp.csr_matrix((t.data, t.indices, t.indptr), shape=(t.shape[0], t.shape[1] + 1))
    moved = t.indices.copy()
    row0 = set(t.indices[t.indptr[0] : t.indptr[1]].tolist())
    moved[t.indptr[0]] = next(j for j in range(t.shape[1]) if j not in row0)  # one item of user 0 replaced
    shifted = sp.csr_matrix((t.data, moved, t.indptr), shape=t.shape)
    indptr = t.indptr.copy()
    first = int(np.flatnonzero(np.diff(indptr) > 1)[0])  # a row with two items: give one to the next row
    indptr[first + 1] -= 1
    regrouped = sp.csr_matrix((t.data, t.indices, indptr), shape=t.shape)
    for other in (wider, shifted, regrouped):
        assert split_fingerprint(dataclasses.replace(tiny_split, train=other)) != base
    assert split_fingerprint(dataclasses.replace(tiny_split, train=t.copy())) == base
    assert len(base) == 16 and int(base, 16) >= 0  # 16 hex digits, as every cached run's split.json records it


@pytest.mark.parametrize(("batch_size", "noted"), [(30, False), (34, True)])
def test_fewer_than_ten_updates_an_epoch_are_announced(tmp_path, tiny_split, capsys, monkeypatch, batch_size, noted):
    """300 training users: batch 30 makes 10 updates an epoch (no note), batch 34 makes 9 (the note). Multi-DAE has
    no beta, so the note says nothing of its schedule; a second run of the same data in the process (a tuning
    study's next trial) is not noted again."""
    import models.trainer

    monkeypatch.setattr(models.trainer, "_NOTED", set())
    assert tiny_split.train.shape[0] == 300
    config = TrainConfig(
        model="multdae", epochs=1, seed=0, device="cpu", hidden=(), latent_dim=8, batch_size=batch_size
    )
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    err = capsys.readouterr().err
    assert ("(fewer than 10)" in err) == noted and "schedule of beta" not in err
    train(config, tmp_path / "again", split=tiny_split, progress=False)
    assert "(fewer than 10)" not in capsys.readouterr().err


def test_the_suggested_batch_size_is_at_least_one(tmp_path, tiny_split):
    """9 training users make one update an epoch at any batch size; 9 // 10 is 0, the suggestion is batch 1."""
    nine = dataclasses.replace(tiny_split, train=tiny_split.train[:9])
    config = TrainConfig(model="multdae", epochs=1, seed=0, device="cpu", hidden=(), latent_dim=8, batch_size=64)
    train(config, tmp_path / "run", split=nine, progress=False)
    derived = json.loads((tmp_path / "run" / "config.json").read_text())["derived"]
    assert derived["few_updates"] == {"updates_per_epoch": 1, "suggested_batch_size": 1}


def test_a_run_folders_lock_is_its_lock_file_named_for_the_folder(tmp_path):
    from models.trainer import run_lock

    lock = run_lock(tmp_path / "run")
    assert lock.path == tmp_path / "run" / ".lock" and lock.label == f"run folder {tmp_path / 'run'}"


def test_a_run_folders_configuration_is_validated_when_read(tmp_path):
    """A config.json whose values are impossible (edited by hand, written by another tool) is refused in one line
    naming the file, not trained or loaded."""
    from models.trainer import read_run_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**TrainConfig(model="multvae").to_json(), "lr": -1.0}))
    with pytest.raises(ConfigError, match=re.escape(f"{run / 'config.json'}: lr (--lr) must be > 0")):
        read_run_config(run)
