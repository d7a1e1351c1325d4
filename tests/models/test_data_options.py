"""One set of data options through training and evaluation: a tab-separated file with other column names and
explicit ratings trains, its options are recorded in the run, and every later reader rebuilds exactly its split
(one cache entry)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.data import TableOptions, load_split
from models.data import main as data_main
from models.evaluate import main as eval_main
from models.split import SplitConfig
from models.train import main as train_main
from models.trainer import ConfigError, TrainConfig, config_key, load_run_split, split_fingerprint

OPTIONS = ["--sep", "\t", "--user-col", "viewer", "--item-col", "film", "--rating-col", "stars", "--min-rating", "3.5"]


@pytest.fixture
def ratings_tsv(tmp_path):
    """300 users rating 60 films 1-5 (tab-separated, columns viewer, film, stars, plus a timestamp)."""
    rng = np.random.default_rng(0)
    rows = [
        (f"v{u}", f"f{i}", int(rng.integers(1, 6)), 1_000 + u) for u in range(300) for i in rng.choice(60, 25, False)
    ]
    path = tmp_path / "ratings.tsv"
    pd.DataFrame(rows, columns=["viewer", "film", "stars", "time"]).to_csv(path, sep="\t", index=False)
    return path


def test_a_tsv_with_other_columns_and_ratings_trains_and_evaluates_on_its_own_split(
    tmp_path, capsys, cache_root, ratings_tsv
):
    run = tmp_path / "run"
    flags = ["--hidden", "16", "--latent", "4", "--epochs", "2", "--batch-size", "50", "--no-progress"]
    assert train_main(["--dataset", f"csv:{ratings_tsv}", *OPTIONS, "--heldout", "30", *flags, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == {"sep": "\t", "user_col": "viewer", "item_col": "film", "rating_col": "stars",
                              "min_rating": 3.5}  # fmt: skip
    # the split the run reloads is the one built from the options, ratings above 3.5 only
    table = TableOptions("viewer", "film", "stars", "\t")
    direct = load_split(
        f"csv:{ratings_tsv}", config=SplitConfig(min_rating=3.5, n_heldout=30), table=table, progress=False
    )
    reloaded = load_run_split(TrainConfig.from_json({k: v for k, v in config.items() if k != "derived"}))
    assert (
        split_fingerprint(reloaded)
        == split_fingerprint(direct)
        == json.loads((run / "split.json").read_text())["fingerprint"]
    )
    kept = pd.read_csv(ratings_tsv, sep="\t")
    assert direct.report["binarise"]["rows_kept"] == (kept["stars"] > 3.5).sum()
    assert eval_main([str(run)]) == 0
    per_user = pd.read_csv(run / "test_per_user.csv", dtype={"user": str})
    assert set(per_user["user"]) <= set(direct.test.users.astype(str)) and len(per_user) > 0
    # a second seed on the same file compares with the first on the same users, paired
    from models.compare import main as compare_main

    run_b = tmp_path / "run_b"
    argv = ["--dataset", f"csv:{ratings_tsv}", *OPTIONS, "--heldout", "30", *flags, "--seed", "1", "--out", str(run_b)]
    assert train_main(argv) == 0 and eval_main([str(run_b)]) == 0
    capsys.readouterr()
    assert compare_main([str(run), str(run_b), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "ndcg@100" in table and "Holm" in table
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert compared["users"] == len(per_user)
    # one split, one cache entry: models.data info with the same options reads the trainer's
    assert data_main(["info", f"csv:{ratings_tsv}", *OPTIONS, "--heldout", "30"]) == 0
    entries = [f for f in (cache_root / "splits").iterdir() if f.is_dir() and not f.name.startswith(".")]
    assert len(entries) == 1, entries


def test_configurations_without_data_options_keep_their_json_and_run_key():
    config = TrainConfig(dataset="ml-1m", epochs=3)
    assert "data" not in config.to_json()
    with_data = TrainConfig(dataset="ml-1m", epochs=3, data={"min_uc": 5})
    assert with_data.to_json()["data"] == {"min_uc": 5} and config_key(with_data) != config_key(config)
    # a config.json written before data options existed reads as the same configuration
    assert TrainConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dataset", "ml-1m", "--user-col", "viewer"], "--user-col applies to csv:PATH and parquet:PATH sources"),
        (["--dataset", "ml-1m", "--min-uc", "0"], "argument --min-uc: must be an integer >= 1"),
    ],
)
def test_data_options_that_cannot_apply_give_one_line(tmp_path, capsys, argv, needle):
    try:
        code = train_main([*argv, "--out", str(tmp_path / "r")])
    except SystemExit as exc:  # refused by the parser itself
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_a_config_file_may_carry_the_data_options(tmp_path):
    from models.train import config_from_args, parse_args

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"dataset": "csv:x.tsv", "data": {"sep": "\t", "min_uc": 3}}))
    config = config_from_args(parse_args(["--config", str(cfg), "--min-uc", "4", "--out", "x"]))
    assert config.data == {"sep": "\t", "min_uc": 4}  # the flag overrides the file, key by key
    with pytest.raises(ConfigError, match="table of data options"):
        TrainConfig(data={"colour": "red"}).validate()


def test_an_analysis_job_trains_and_measures_on_the_tsv(tmp_path, monkeypatch, cache_root):
    """kl_budget on the file (the shell's '\\t' for a tab): its model's run records the data options, and the
    job's split is that run's split."""
    import analyses.trained as trained
    from analyses.kl_budget import main as kl_main

    rng = np.random.default_rng(1)
    pairs = [(u, i) for u in range(600) for i in rng.choice(80, int(rng.integers(15, 40)), replace=False)]
    rows = [(f"v{u}", f"f{i}", int(rng.integers(1, 6))) for u, i in pairs]
    path = tmp_path / "big.tsv"
    pd.DataFrame(rows, columns=["viewer", "film", "stars"]).to_csv(path, sep="\t", index=False)
    monkeypatch.setenv(trained.RUNS_ENV, str(tmp_path / "runs"))
    options = [o if o != "\t" else "\\t" for o in OPTIONS]
    argv = ["--quick", "--dataset", f"csv:{path}", *options, "--betas", "0.2", "--rhos", "0.5", "--no-progress"]
    assert kl_main([*argv, "--out", str(tmp_path / "kl")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["sep"] == "\t" and config["data"]["min_rating"] == 3.5
    summary = json.loads((tmp_path / "kl" / "summary.json").read_text())
    assert summary["dataset"]["train_users"] == config["derived"]["train_users"]


def test_every_command_refuses_a_table_option_for_a_named_dataset(capsys, cache_root):
    """The one check (models.data.check_data_options) in models.data info, not only in training: before any file
    is read."""
    assert data_main(["info", "synthetic", "--sep", ";"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sep applies to csv:PATH and lists:PATH sources only, not synthetic" in err[0]
    assert not (cache_root / "splits").exists()


def test_a_header_less_file_and_item_lists_train_and_reload_their_split(tmp_path, capsys, cache_root):
    """The header-less options (--no-header, --columns) and the item-list source are data options like the
    others: recorded in the run, reloaded by evaluate, one cache entry with models.data info."""
    rng = np.random.default_rng(2)
    lines = [(u, i, int(rng.integers(1, 6))) for u in range(300) for i in rng.choice(60, 20, replace=False)]
    tsv = tmp_path / "plain.tsv"
    tsv.write_text("".join(f"u{u}\ti{i}\t{r}\n" for u, i, r in lines))
    flags = ["--hidden", "16", "--latent", "4", "--epochs", "1", "--batch-size", "50", "--no-progress"]
    header_less = ["--sep", "\t", "--no-header", "--columns", "who,what,stars", "--user-col", "who"]
    header_less += ["--item-col", "what", "--rating-col", "stars", "--min-rating", "2.5"]
    run = tmp_path / "run"
    assert train_main(["--dataset", f"csv:{tsv}", *header_less, "--heldout", "30", *flags, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["no_header"] is True and config["data"]["columns"] == "who,what,stars"
    assert config["derived"]["train_users"] == 240
    assert eval_main([str(run)]) == 0
    assert data_main(["info", f"csv:{tsv}", *header_less, "--heldout", "30"]) == 0
    kept = sum(r > 2.5 for _, _, r in lines)
    reloaded = load_run_split(TrainConfig.from_json({k: v for k, v in config.items() if k != "derived"}))
    assert reloaded.report["binarise"]["rows_kept"] == kept

    counts = tmp_path / "users.dat"
    baskets = [rng.choice(50, int(rng.integers(6, 15)), replace=False) for _ in range(200)]
    counts.write_text("".join(f"{len(b)} " + " ".join(map(str, b)) + "\n" for b in baskets))
    run2 = tmp_path / "run2"
    listed = ["--dataset", f"lists:{counts}", "--list-layout", "count", "--heldout", "20"]
    assert train_main([*listed, *flags, "--out", str(run2)]) == 0
    assert json.loads((run2 / "config.json").read_text())["data"] == {"list_layout": "count"}
    assert eval_main([str(run2)]) == 0
    capsys.readouterr()
    assert data_main(["info", *listed[1:], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["users_read"] == 200
    entries = [f for f in (cache_root / "splits").iterdir() if f.is_dir() and not f.name.startswith(".")]
    assert len(entries) == 2, entries


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dataset", "parquet:x.parquet", "--sep", ";"], "--sep applies to csv:PATH and lists:PATH sources only"),
        (["--dataset", "lists:x.txt", "--rating-col", "r"], "--rating-col applies to csv:PATH and parquet:PATH"),
        (["--dataset", "lists:x.txt", "--no-header"], "--no-header applies to csv:PATH sources only"),
        (["--dataset", "csv:x.csv", "--list-layout", "count"], "--list-layout applies to lists:PATH sources only"),
        (["--dataset", "csv:x.csv", "--columns", "a,b"], "--columns names the fields of a csv without a header"),
    ],
)
def test_table_options_of_another_kind_of_source_give_one_line(tmp_path, capsys, cache_root, argv, needle):
    for name in ("x.parquet", "x.txt", "x.csv"):
        (tmp_path / name).write_text("1,2\n")
    argv = [a if ":" not in a else a.split(":")[0] + ":" + str(tmp_path / a.split(":")[1]) for a in argv]
    assert train_main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_given_data_options_pass_on_as_arguments_that_parse_back_to_them():
    """data_argv is how the ledger hands its options to every job: flags (--no-header) included."""
    import argparse

    from models.data import add_dataset_arguments, data_argv, data_options

    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    given = ["--sep", ";", "--no-header", "--columns", "a,b,c", "--user-col", "a", "--item-col", "b",
             "--min-rating", "none", "--min-uc", "3", "--list-layout", "user", "--heldout", "0.2"]  # fmt: skip
    args = parser.parse_args(given)
    again = parser.parse_args(data_argv(args))
    assert data_options(again) == data_options(args) and again.heldout == args.heldout
    assert data_options(args)["no_header"] is True and "list_layout" not in data_options(args)  # the default


@pytest.mark.slow
def test_the_ledger_runs_every_job_on_the_tsv(tmp_path, monkeypatch, cache_root, ratings_tsv):
    """The done-when of the data options: the claims ledger (every job, --quick, one seed) on the tab-separated
    file with other column names and explicit ratings, nothing rewritten (about 2-4 minutes on 2 cores)."""
    import analyses.trained as trained
    from analyses.claims import main as claims_main

    rng = np.random.default_rng(1)
    pairs = [(u, i) for u in range(600) for i in rng.choice(80, int(rng.integers(15, 40)), replace=False)]
    path = tmp_path / "big.tsv"
    rows = [(f"v{u}", f"f{i}", int(rng.integers(1, 6))) for u, i in pairs]
    pd.DataFrame(rows, columns=["viewer", "film", "stars"]).to_csv(path, sep="\t", index=False)
    monkeypatch.setenv(trained.RUNS_ENV, str(tmp_path / "runs"))
    options = [o if o != "\t" else "\\t" for o in OPTIONS]
    argv = ["--quick", "--datasets", f"csv:{path}", "--seeds", "0", *options, "--no-progress"]
    assert claims_main([*argv, "--out", str(tmp_path / "ledger")]) == 0
    ledger = json.loads((tmp_path / "ledger" / "ledger.json").read_text())
    assert [j["status"] for j in ledger["jobs"]] == ["ok"] * 7, ledger["jobs"]
    for run in (tmp_path / "runs").iterdir():
        assert json.loads((run / "config.json").read_text())["data"]["user_col"] == "viewer"
