"""BPR-MF (models/bpr.py): the fold-in ascends the BPR objective with the items frozen, held-out users never
reach training, and on planted blocks the right items are recommended."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from models.baselines import main as baselines_main
from models.bpr import BPRMF


def blocks(n_users: int = 240, seed: int = 0) -> sp.csr_matrix:
    """Two tastes, each over its own 30 of 60 items; 8 items per user."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), 8)
    cols = np.concatenate([30 * (u % 2) + rng.choice(30, size=8, replace=False) for u in range(n_users)])
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_users, 60))


def bpr_objective(w: np.ndarray, y: np.ndarray, b: np.ndarray, x: sp.csr_matrix) -> np.ndarray:
    """Per user, the mean of log sigmoid(x_ui - x_uj) over all (positive i, non-positive j)."""
    scores = w @ y.T + b
    out = np.empty(x.shape[0])
    for u in range(x.shape[0]):
        pos = x[u].indices
        neg = np.setdiff1d(np.arange(y.shape[0]), pos)
        gap = scores[u, pos][:, None] - scores[u, neg][None, :]
        out[u] = np.mean(-np.logaddexp(0.0, -gap))
    return out


def test_the_fold_in_raises_each_users_bpr_objective_with_the_items_frozen():
    x = blocks()
    model = BPRMF.fit(x[:200], factors=4, regularization=0.01, iterations=30, fold_in_steps=300)
    y, b = model.item_parts()
    before = model.item_parts()
    w = model.fold_in(x[200:])
    assert np.array_equal(before[0], model.item_parts()[0]) and np.array_equal(before[1], model.item_parts()[1])
    start = bpr_objective(np.zeros_like(w), y, b, x[200:])
    end = bpr_objective(w, y, b, x[200:])
    assert np.all(end > start)  # every held-out user's objective rose from w = 0
    assert np.allclose(model.score(x[200:]), w @ y.T + b, atol=1e-5)


def test_held_out_users_are_never_seen_in_training_and_an_empty_user_gets_the_biases():
    x = blocks()
    model = BPRMF.fit(x[:200], factors=4, iterations=5)
    assert np.asarray(model.model.user_factors).shape[0] == 200  # training rows only
    empty = sp.csr_matrix((1, 60), dtype=np.float32)
    assert np.allclose(model.score(empty)[0], model.item_parts()[1], atol=1e-6)


def test_on_planted_blocks_the_users_own_block_is_recommended():
    x = blocks()
    model = BPRMF.fit(x[:200], factors=4, regularization=0.01, iterations=50)
    fold = x[200:]
    scores = model.score(fold)
    scores[fold.toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    assert ((top // 30) == (np.arange(200, 240) % 2)[:, None]).all()


def test_the_cli_writes_a_results_json_and_keeps_each_models_options_apart(tmp_path, capsys):
    out = tmp_path / "bpr.json"
    argv = ["bpr", "--dataset", "synthetic", "--factors", "8", "--regularization", "0.01,0.1", "--iterations", "5"]
    assert baselines_main([*argv, "--fold-in-steps", "50", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "bpr" and result["fold_in"] == {"steps": 50, "lr": 0.05}
    assert result["regularization"] in (0.01, 0.1) and len(result["validation"]) == 2
    assert baselines_main(["bpr", "--alpha", "5", "--out", str(tmp_path / "x.json")]) != 0
    assert "--alpha applies to wmf only, not bpr" in capsys.readouterr().err
    assert baselines_main(["ease", "--factors", "8", "--out", str(tmp_path / "y.json")]) != 0
    assert "--factors applies to wmf and bpr only, not ease" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"fold_in_steps": -1}, {"fold_in_lr": 0.0}, {"factors": 0}])
def test_impossible_settings_raise(bad):
    with pytest.raises(ValueError):
        BPRMF.fit(blocks(), **{"factors": 4, "iterations": 1, **bad})


def test_a_seed_fixes_the_factors_and_another_seed_changes_them(tiny_split):
    a, b, c = (BPRMF.fit(tiny_split.train, 8, 0.1, iterations=5, seed=s) for s in (3, 3, 4))
    factors = [np.asarray(m.model.item_factors) for m in (a, b, c)]
    assert np.array_equal(factors[0], factors[1])
    assert not np.array_equal(factors[0], factors[2])
    assert np.array_equal(a.score(tiny_split.test.fold_in), b.score(tiny_split.test.fold_in))
