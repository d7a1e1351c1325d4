"""models.interchange: a split written in Liang et al.'s layout reads back identical (matrices, ids, fingerprint),
a folder made by Liang et al.'s own notebook (no toolkit metadata) reads by their convention, and a run trains
and evaluates on ``--dataset liang:DIR``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.data import load_split
from models.data import main as data_main
from models.interchange import read_liang, write_liang
from models.trainer import split_fingerprint


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def assert_identical(a, b):
    assert _same(a.train, b.train)
    assert np.array_equal(a.train_users, b.train_users) and np.array_equal(a.items, b.items)
    for key in ("validation", "test"):
        x, y = getattr(a, key), getattr(b, key)
        assert _same(x.fold_in, y.fold_in) and _same(x.targets, y.targets) and np.array_equal(x.users, y.users)
    assert split_fingerprint(a) == split_fingerprint(b)


@pytest.fixture(scope="module")
def split():
    return load_split("synthetic", progress=False)


def test_the_liang_round_trip_is_identical(tmp_path, split):
    folder = write_liang(split, tmp_path / "liang")
    back = read_liang(folder)
    assert_identical(split, back)
    assert back.name == f"liang:{folder}" and back.report["imported_from"] == str(folder)
    # the files are what Liang et al.'s loaders expect: uid,sid with global uids, held-out parts after training
    train = pd.read_csv(folder / "train.csv")
    test_tr = pd.read_csv(folder / "test_tr.csv")
    assert list(train.columns) == ["uid", "sid"] and train["uid"].max() == split.train.shape[0] - 1
    assert test_tr["uid"].min() >= split.train.shape[0] + split.validation.n_users
    assert len(train) == split.train.nnz and len(test_tr) == split.test.fold_in.nnz
    lines = (folder / "unique_sid.txt").read_text().splitlines()
    assert lines == [str(i) for i in split.items]


def test_a_folder_without_toolkit_metadata_reads_by_liangs_convention(tmp_path, capsys, split):
    """Liang et al.'s notebook writes no metadata and no unique_uid.txt: the parts' sizes come from the uids in
    the files, users are the uids; the matrices are still the same."""
    folder = write_liang(split, tmp_path / "liang")
    (folder / "vaecf_split.json").unlink()
    (folder / "unique_uid.txt").unlink()
    back = read_liang(folder)
    n_train, n_val = split.train.shape[0], split.validation.n_users
    assert _same(back.train, split.train)
    assert _same(back.test.targets, split.test.targets) and _same(back.validation.fold_in, split.validation.fold_in)
    assert back.test.users.tolist() == list(range(n_train + n_val, n_train + n_val + split.test.n_users))
    assert data_main(["info", f"liang:{folder}"]) == 0
    assert f"{split.test.n_users:,} users: fold-in {split.test.fold_in.nnz:,}" in capsys.readouterr().out


def test_string_ids_round_trip(tmp_path):
    from models.readers import RawInteractions
    from models.split import SplitConfig, build_split
    from models.synthetic import make_synthetic

    data = make_synthetic(n_users=300, n_items=80, n_groups=2, cohort_activity=(6, 20, 40), n_far_related_pairs=0)
    raw = RawInteractions(
        user=np.array([f"user-{u}" for u in data.users], dtype=object),
        item=np.array([f"item {i}" for i in data.items], dtype=object),
        rating=None,
        sources=("synthetic",),
    )
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=30), "strings")
    back = read_liang(write_liang(split, tmp_path / "s"))
    assert back.train_users.tolist() == split.train_users.tolist() and back.items.tolist() == split.items.tolist()
    assert _same(back.test.targets, split.test.targets)


def test_export_command_and_training_on_the_folder(tmp_path, capsys):
    from models.train import main as train_main

    folder = tmp_path / "shared-split"
    assert data_main(["export", "synthetic", str(folder), "--format", "liang"]) == 0
    assert f"--dataset liang:{folder}" in capsys.readouterr().out
    assert data_main(["export", "synthetic", str(folder)]) == 2
    assert "exists; choose a new folder" in capsys.readouterr().err
    run = tmp_path / "run"
    flags = ["--hidden", "16", "--latent", "4", "--epochs", "1", "--no-progress", "--out", str(run)]
    assert train_main(["--dataset", f"liang:{folder}", *flags]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == f"liang:{folder.resolve()}"
    assert data_main(["info", f"liang:{folder}", "--heldout", "10"]) == 2
    assert "--heldout: liang:" in capsys.readouterr().err


def test_recbole_files_hold_every_interaction_with_raw_ids(tmp_path, split):
    assert data_main(["export", "synthetic", str(tmp_path / "rb"), "--format", "recbole"]) == 0
    train = pd.read_csv(tmp_path / "rb" / "synthetic.train.inter", sep="\t", dtype=str)
    assert list(train.columns) == ["user_id:token", "item_id:token"] and len(train) == split.train.nnz
    test_te = pd.read_csv(tmp_path / "rb" / "synthetic.test_te.inter", sep="\t", dtype=str)
    rows, cols = split.test.targets.nonzero()
    expected = set(zip(split.test.users[rows].astype(str), split.items[cols].astype(str), strict=True))
    assert set(zip(test_te["user_id:token"], test_te["item_id:token"], strict=True)) == expected


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda f: (f / "test_te.csv").unlink(), "no test_te.csv"),
        (lambda f: (f / "train.csv").write_text("user,item\n1,2\n"), "expected uid,sid"),
        (lambda f: (f / "train.csv").write_text("uid,sid\n0,99999\n"), "outside the part's range"),
        (lambda f: (f / "unique_sid.txt").unlink(), "no unique_sid.txt"),
    ],
)
def test_damaged_folders_give_one_line(tmp_path, capsys, split, damage, needle):
    folder = write_liang(split, tmp_path / "liang")
    damage(folder)
    assert data_main(["info", f"liang:{folder}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
