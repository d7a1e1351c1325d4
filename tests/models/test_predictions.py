"""models.predictions and ``models.evaluate --predictions``: another toolkit's top-K lists scored exactly as the
built-in models are (the toolkit's own EASE written to a file and read back gives identical per-user values),
and every row that cannot be used reported, never dropped silently."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.baselines import EASE
from models.data import load_split
from models.evaluate import main
from models.evaluation import evaluate, top_k_items


@pytest.fixture(scope="module")
def ease_lists():
    """The synthetic split (as ``--dataset synthetic`` loads it), EASE fitted on it, its test users' evaluation
    and top-100 lists (raw ids, fold-in excluded)."""
    split = load_split("synthetic", progress=False)
    ease = EASE.fit(split.train, lam=50.0)
    test = split.test
    rows = np.flatnonzero(test.has_targets)
    scores = ease.score(test.fold_in[rows]).numpy().astype(np.float64)
    topk = top_k_items(scores, test.fold_in[rows], 100)
    lists = pd.DataFrame(
        {
            "user": np.repeat(test.users[rows], 100).astype(str),
            "item": split.items[topk.ravel()].astype(str),
            "rank": np.tile(np.arange(1, 101), rows.size),
            "score": np.take_along_axis(scores, topk, axis=1).ravel(),
        }
    )
    return split, evaluate(ease.score, test), lists


def _score(tmp_path, table: pd.DataFrame, capsys, *extra: str) -> tuple[pd.DataFrame, dict, str]:
    path = tmp_path / "lists.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "scored"
    assert main(["--predictions", str(path), "--dataset", "synthetic", "--out", str(out), *extra]) == 0
    err = capsys.readouterr().err
    per_user = pd.read_csv(out / "test_per_user.csv", dtype={"user": str})
    return per_user, json.loads((out / "test_metrics.json").read_text()), err


@pytest.mark.parametrize("kind", ["rank", "score"])
def test_the_toolkits_own_ease_scored_as_a_file_gives_identical_numbers(tmp_path, capsys, ease_lists, kind):
    split, built_in, lists = ease_lists
    per_user, doc, err = _score(tmp_path, lists[["user", "item", kind]], capsys)
    for metric in ("recall@20", "recall@50", "ndcg@100"):
        assert per_user[metric].to_numpy() == pytest.approx(built_in.per_user[metric], abs=0, rel=0)
        assert doc[metric]["mean"] == built_in.summary()[metric]["mean"]
    assert per_user["user"].tolist() == [str(u) for u in split.test.users[built_in.rows]]
    assert doc["predictions"]["users_without_predictions"] == 0 and "note:" not in err


def test_fold_in_items_are_removed_and_the_list_moves_up(tmp_path, capsys, ease_lists):
    """Each user's first fold-in item put at rank 1 (the others one rank down): the same numbers as before, and
    the count reported."""
    split, built_in, lists = ease_lists
    test = split.test
    rows = built_in.rows
    first_fold_in = split.items[[test.fold_in[r].indices[0] for r in rows]].astype(str)
    extra = pd.DataFrame({"user": test.users[rows].astype(str), "item": first_fold_in, "rank": 1})
    shifted = lists[["user", "item", "rank"]].assign(rank=lists["rank"] + 1)
    per_user, doc, err = _score(tmp_path, pd.concat([extra, shifted]), capsys)
    assert per_user["ndcg@100"].to_numpy() == pytest.approx(built_in.per_user["ndcg@100"], abs=0, rel=0)
    assert doc["predictions"]["fold_in_items_listed"] == rows.size
    assert f"{rows.size} listed items are in the user's fold-in" in err


def test_unusable_rows_and_missing_users_are_reported(tmp_path, capsys, ease_lists):
    _, built_in, lists = ease_lists
    first = lists["user"].iloc[0]
    kept = lists[lists["user"] != first][["user", "item", "rank"]]
    other = str(kept["user"].iloc[0])
    junk = pd.DataFrame({"user": ["nobody", other], "item": ["1", "no-such-item"], "rank": [1, 500]})
    per_user, doc, err = _score(tmp_path, pd.concat([kept, junk]), capsys)
    assert per_user.loc[per_user["user"] == first, ["recall@20", "ndcg@100"]].to_numpy().tolist() == [[0.0, 0.0]]
    others = per_user["user"] != first
    assert per_user.loc[others, "ndcg@100"].to_numpy() == pytest.approx(built_in.per_user["ndcg@100"][1:], abs=0)
    p = doc["predictions"]
    assert (p["users_without_predictions"], p["rows_outside_heldout"], p["rows_unknown_items"]) == (1, 1, 1)
    assert "1 held-out users with targets have no prediction: scored 0" in err
    assert "1 rows name items the split does not know (e.g. no-such-item)" in err
    assert "1 rows of 1 users outside the held-out set: ignored" in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("user,item\n1,2\n", "expected user,item,rank or user,item,score"),
        ("user,item,rank,score\n1,2,1,0.5\n", "expected user,item,rank or user,item,score"),
        ("user,item,rank\n1,2,0\n", "line 2: rank '0' is not an integer >= 1"),
        ("user,item,rank\n1,2,1.5\n", "rank '1.5' is not an integer >= 1"),
        ("user,item,score\n1,2,nan\n", "score 'nan' is not a finite number"),
        ("user,item,rank\n1,2,1\n1,2,2\n", "line 3: user '1' lists item '2' twice"),
        ("user,item,rank\n1,2,1\n1,3,1\n", "line 3: user '1' has rank 1 twice"),
        ("user,item,rank\nnobody,2,1\n", "no row names a held-out user and an item of the split"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_prediction_files_give_one_line(tmp_path, capsys, text, needle):
    path = tmp_path / "p.csv"
    path.write_text(text)
    assert main(["--predictions", str(path), "--dataset", "synthetic", "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("building the synthetic")]
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give a run folder or --predictions FILE --dataset NAME"),
        (["--predictions", "p.csv"], "--predictions needs --dataset NAME"),
        (["run", "--dataset", "synthetic"], "--dataset and --out go with --predictions"),
        (["run", "--path", "x", "--min-uc", "3"], "--path: a run folder reloads the data options it was trained with; "
         "drop --path --min-uc"),
    ],
)  # fmt: skip
def test_the_two_modes_do_not_mix(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and needle in err[0], err
