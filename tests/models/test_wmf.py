"""WMF (models/wmf.py): the fold-in is the closed-form ALS solve, held-out users never reach training, and on
planted blocks the right items are recommended."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from models.baselines import main as baselines_main
from models.wmf import WMF, select_wmf


def test_the_fold_in_is_one_closed_form_als_solve_with_the_item_factors_fixed(tiny_split):
    lam, alpha = 0.5, 4.0
    wmf = WMF.fit(tiny_split.train, factors=8, regularization=lam, alpha=alpha, iterations=5, seed=1)
    Y = wmf.item_factors.astype(np.float64)
    fold = tiny_split.test.fold_in[:20]
    got = wmf.fold_in(fold)
    for r in range(fold.shape[0]):
        items = fold[r].indices
        # u = (Y^T C_u Y + lambda I)^-1 Y^T C_u p_u with c = 1 + alpha on the user's items, 1 elsewhere
        a = Y.T @ Y + alpha * Y[items].T @ Y[items] + lam * np.eye(Y.shape[1])
        b = (1.0 + alpha) * Y[items].sum(axis=0)
        assert np.allclose(got[r], np.linalg.solve(a, b), rtol=1e-3, atol=1e-4)
    assert np.allclose(wmf.score(fold), got @ Y.T, atol=1e-4)


def test_held_out_users_are_never_seen_in_training(tiny_split):
    wmf = WMF.fit(tiny_split.train, factors=8, iterations=3)
    users, items = np.asarray(wmf.model.user_factors).shape[0], wmf.item_factors.shape[0]
    assert (users, items) == (tiny_split.train.shape[0], tiny_split.n_items)  # training rows only
    before = wmf.item_factors.copy(), np.asarray(wmf.model.user_factors).copy()
    wmf.score(tiny_split.test.fold_in)  # folding users in changes neither factor matrix
    assert np.array_equal(before[0], wmf.item_factors)
    assert np.array_equal(before[1], np.asarray(wmf.model.user_factors))


def test_on_planted_blocks_the_users_own_block_is_recommended():
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(240):  # two tastes, each over its own 30 items
        block = u % 2
        for i in rng.choice(30, size=8, replace=False):
            rows.append(u)
            cols.append(30 * block + i)
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(240, 60))
    wmf = WMF.fit(x[:200], factors=4, regularization=0.1, alpha=10.0, iterations=10)
    fold = x[200:]
    scores = wmf.score(fold)
    scores[fold.toarray() > 0] = -np.inf  # as the evaluation: fold-in items are not recommended
    top = np.argsort(-scores, axis=1)[:, :10]
    own = (top // 30) == (np.arange(200, 240) % 2)[:, None]
    assert own.all()


def test_the_grid_search_keeps_the_best_validation_setting(tiny_split):
    model, search = select_wmf(tiny_split, [4, 8], [0.1], [1.0, 20.0], iterations=3)
    values = [r["validation"]["ndcg@100"]["mean"] for r in search["grid"]]
    best = search["grid"][int(np.argmax(values))]
    assert len(search["grid"]) == 4
    assert search["best"] == {k: best[k] for k in ("factors", "regularization", "alpha")}
    assert (model.factors, model.alpha) == (best["factors"], best["alpha"])


def test_the_cli_writes_a_results_json_and_refuses_bad_grids(tmp_path, capsys):
    out = tmp_path / "wmf.json"
    argv = ["wmf", "--dataset", "synthetic", "--factors", "8", "--regularization", "0.1", "--alpha", "2,8"]
    assert baselines_main([*argv, "--iterations", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "wmf" and {"recall@20", "ndcg@100", "factors", "alpha", "validation"} <= set(result)
    assert result["alpha"] in (2.0, 8.0) and len(result["validation"]) == 2
    with pytest.raises(SystemExit):
        baselines_main(["wmf", "--alpha", "0", "--out", str(tmp_path / "x.json")])
    assert "--alpha" in capsys.readouterr().err
