"""--tensorboard: each epoch's record as TensorBoard scalars, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest

from models import train as train_cli
from models.tracking import read_scalars, scalar_tag
from models.trainer import read_history

ARGS = ["--model", "multvae", "--dataset", "synthetic", "--heldout", "100", "--hidden", "16", "--latent", "4"]


def test_scalar_tags_group_the_record_keys():
    assert scalar_tag("loss") == "train/loss" and scalar_tag("lambda_a") == "schedule/lambda_a"
    assert scalar_tag("val_ndcg@100") == "validation/ndcg@100" and scalar_tag("seconds") == "time/seconds"
    assert scalar_tag("epoch") is None and scalar_tag("updates") is None


def test_train_writes_every_epoch_record_and_a_resume_appends_to_it(tmp_path):
    run, logs = tmp_path / "run", tmp_path / "tb"
    common = ["--out", str(run), "--tensorboard", str(logs), "--no-progress"]
    assert train_cli.main([*ARGS, "--epochs", "2", "--pia", "0.3", "--anneal-epochs", "2", *common]) == 0
    assert train_cli.main(["--resume", "--epochs", "3", *common]) == 0
    history = read_history(run)
    scalars = read_scalars(logs)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for key in ("loss", "nll", "kl", "pia", "beta", "lambda_a", "seconds", "val_ndcg@100", "val_recall@20"):
        assert scalars[scalar_tag(key)] == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in history], key
    assert scalars["schedule/beta"][0][1] > 0  # beta in epochs (--anneal-epochs): not a constant zero series


def test_an_unwritable_log_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = train_cli.main([*ARGS, "--epochs", "1", "--out", str(tmp_path / "run"), "--tensorboard", str(blocker)])
    err = capsys.readouterr().err
    assert code != 0 and "--tensorboard" in err and "Traceback" not in err
