"""EASE and popularity: closed form against numpy, a planted fixture, the lambda search and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from models.baselines import (
    EASE,
    EigenEASE,
    GramEigen,
    Popularity,
    ease_weights,
    gram,
    main,
    select_ease_lambda,
)
from models.compare import main as compare_main
from models.evaluation import evaluate
from models.split import HeldOut, Split


def _blocks(n_users: int, n_blocks: int, block: int, rng: np.random.Generator, keep: float = 0.8) -> sp.csr_matrix:
    """Users of block b consume a random ``keep`` share of block b's items (block-diagonal 'checkerboard')."""
    rows, cols = [], []
    for u in range(n_users):
        b = u % n_blocks
        items = np.flatnonzero(rng.random(block) < keep) + b * block
        rows += [u] * items.size
        cols += items.tolist()
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_blocks * block), dtype=np.float32
    )


def test_ease_weights_match_numpy_closed_form():
    x = sp.random(60, 25, density=0.2, random_state=1, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    lam = 7.0
    g = x.T.toarray().astype(np.float64) @ x.toarray()
    p = np.linalg.inv(g + lam * np.eye(25))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    got = ease_weights(gram(x, torch.device("cpu"), torch.float64), lam).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(got) == 0)
    assert (got < 0).any(), "negative weights are kept"
    # float32 default agrees to single precision
    got32 = ease_weights(gram(x, torch.device("cpu")), lam).numpy()
    np.testing.assert_allclose(got32, expected, atol=2e-5)


def test_ease_rejects_nonpositive_lambda():
    g = torch.eye(3)
    for lam in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lambda must be > 0"):
            ease_weights(g, lam)


def _split_from(train: sp.csr_matrix, fold_in: sp.csr_matrix, targets: sp.csr_matrix) -> Split:
    held = HeldOut(fold_in=fold_in, targets=targets, users=np.arange(fold_in.shape[0]))
    return Split("planted", train, np.arange(train.shape[0]), held, held, np.arange(train.shape[1]), {})


def test_ease_recommends_the_right_block_and_beats_popularity():
    rng = np.random.default_rng(3)
    n_blocks, block = 4, 10
    train = _blocks(200, n_blocks, block, rng)
    # Held-out users: fold-in = 3 items of their block, targets = 3 other items of the same block.
    # Block 0 is made the most popular, so popularity recommends block 0 to everyone.
    extra = _blocks(120, 1, block, rng, keep=0.9)
    train = sp.vstack([train, sp.hstack([extra, sp.csr_matrix((120, (n_blocks - 1) * block))])]).tocsr()
    fi_rows, fi_cols, t_rows, t_cols = [], [], [], []
    for u in range(40):
        b = 1 + u % (n_blocks - 1)
        items = rng.permutation(block)[:6] + b * block
        fi_rows += [u] * 3
        fi_cols += items[:3].tolist()
        t_rows += [u] * 3
        t_cols += items[3:].tolist()
    shape = (40, n_blocks * block)
    fold_in = sp.csr_matrix((np.ones(len(fi_rows), np.float32), (fi_rows, fi_cols)), shape=shape)
    targets = sp.csr_matrix((np.ones(len(t_rows), np.float32), (t_rows, t_cols)), shape=shape)
    split = _split_from(train, fold_in, targets)

    model, search = select_ease_lambda(split, (1.0, 10.0, 100.0))
    assert search.best in (1.0, 10.0, 100.0)
    top = torch.topk(model.score(fold_in).masked_fill(torch.from_numpy(fold_in.toarray() > 0), -np.inf), 7).indices
    blocks_of_user = 1 + np.arange(40) % (n_blocks - 1)
    # The 7 best unseen items of every user are exactly the rest of the user's own block.
    assert np.all(top.numpy() // block == blocks_of_user[:, None])
    ease = evaluate(model.score, split.test, metrics=("recall@7", "ndcg@10")).summary()
    pop = evaluate(Popularity.fit(train).score, split.test, metrics=("recall@7", "ndcg@10")).summary()
    assert ease["recall@7"]["mean"] == pytest.approx(1.0)
    assert pop["recall@7"]["mean"] < 0.5


def test_popularity_scores_are_training_counts():
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0]], dtype=np.float32))
    scores = Popularity.fit(train).score(sp.csr_matrix((2, 3), dtype=np.float32))
    assert scores.shape == (2, 3)
    np.testing.assert_array_equal(scores[0].numpy(), [3.0, 1.0, 1.0])


def test_ease_sparse_scoring_equals_dense():
    x = sp.random(30, 12, density=0.3, random_state=2, format="csr", dtype=np.float32)
    x.data[:] = 1
    model = EASE.fit(x, 5.0)
    np.testing.assert_allclose(model.score(x).numpy(), x.toarray() @ model.weights.numpy(), rtol=1e-5, atol=1e-6)


def test_cli_writes_results_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAECF_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    rows = []
    for u in range(150):
        b = u % 3
        for i in rng.choice(20, size=12, replace=False):
            rows.append((f"u{u}", f"i{b * 20 + i}"))
    csv = tmp_path / "plays.csv"
    csv.write_text("user,item\n" + "\n".join(f"{u},{i}" for u, i in rows) + "\n")
    out = tmp_path / "ease.json"
    code = main(["ease", "--dataset", f"csv:{csv}", "--lambdas", "1,10,100", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("recall@20", "recall@50", "ndcg@100"):
        assert set(result[key]) >= {"mean", "se", "n"}
        assert 0.0 <= result[key]["mean"] <= 1.0
    assert result["lambda"] in (1.0, 10.0, 100.0)
    assert "ease on csv:" in capsys.readouterr().out
    pop_out = tmp_path / "pop.json"
    assert main(["popularity", "--dataset", f"csv:{csv}", "--out", str(pop_out)]) == 0
    pop = json.loads(pop_out.read_text())
    assert result["ndcg@100"]["mean"] > pop["ndcg@100"]["mean"]
    # the per-user values beside each JSON: their means are the JSON's, and models.compare pairs the two files
    per_user = {name: pd.read_csv(tmp_path / f"{name}_per_user.csv") for name in ("ease", "pop")}
    for name, res in (("ease", result), ("pop", pop)):
        assert len(per_user[name]) == res["ndcg@100"]["n"]
        assert per_user[name]["ndcg@100"].mean() == pytest.approx(res["ndcg@100"]["mean"], abs=1e-12)
    assert list(per_user["ease"]["user"]) == list(per_user["pop"]["user"])
    assert (
        compare_main(
            [str(tmp_path / "pop_per_user.csv"), str(tmp_path / "ease_per_user.csv"), "--out", str(tmp_path / "cmp")]
        )
        == 0
    )
    row = next(
        r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"] if r["metric"] == "ndcg@100"
    )
    diff = per_user["ease"]["ndcg@100"] - per_user["pop"]["ndcg@100"]
    assert row["diff"] == pytest.approx(diff.mean(), abs=1e-12) and row["n"] == len(diff)


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert main(["ease", "--dataset", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    for grid in ("0,10", "10,inf", "10,abc"):
        with pytest.raises(SystemExit) as exit_:
            main(["ease", "--dataset", "synthetic", "--lambdas", grid])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: argument --lambdas")


def _random_split(seed: int, users: int = 150, items: int = 40) -> Split:
    rng = np.random.default_rng(seed)
    train = _blocks(users, 4, items // 4, rng, keep=0.5)
    fold_in = _blocks(30, 4, items // 4, rng, keep=0.3)
    targets = _blocks(30, 4, items // 4, rng, keep=0.2)
    return _split_from(train, fold_in, targets - targets.multiply(fold_in))


@pytest.mark.parametrize("lam", [0.5, 20.0, 3000.0])
def test_eigen_ease_scores_and_weights_are_those_of_the_inverse(lam):
    """x B from one eigendecomposition, for lambdas from below the smallest eigenvalue gap to far above the largest
    eigenvalue: the closed form of the inverse to float64 rounding, the diagonal of B zero."""
    split = _random_split(0)
    g = gram(split.train, torch.device("cpu"), torch.float64)
    direct = EASE(ease_weights(g, lam), lam)
    eigen = EigenEASE(GramEigen.of(g), lam)
    x = split.validation.fold_in
    np.testing.assert_allclose(eigen.score(x).double().numpy(), direct.score(x).double().numpy(), rtol=1e-5, atol=1e-6)
    weights = eigen.to_ease().weights
    np.testing.assert_allclose(weights.numpy(), direct.weights.numpy(), rtol=1e-9, atol=1e-11)
    assert torch.all(weights.diagonal() == 0)
    with pytest.raises(ValueError, match="lambda must be > 0"):
        EigenEASE(GramEigen.of(g), 0.0)


def test_the_two_solvers_choose_the_same_lambda_with_the_same_validation_scores(capsys):
    split = _random_split(1)
    grid = (1.0, 10.0, 100.0, 1000.0)
    runs = {
        solver: select_ease_lambda(split, grid, solver=solver, dtype=torch.float64, progress=True)
        for solver in ("inverse", "eigen")
    }
    (m_inv, s_inv), (m_eig, s_eig) = runs["inverse"], runs["eigen"]
    assert s_inv.best == s_eig.best == m_eig.lam
    for lam in grid:
        assert s_eig.scores[lam]["ndcg@100"]["mean"] == pytest.approx(s_inv.scores[lam]["ndcg@100"]["mean"], abs=1e-12)
    np.testing.assert_allclose(m_eig.weights.numpy(), m_inv.weights.numpy(), rtol=1e-9, atol=1e-11)
    err = capsys.readouterr().err
    assert "eigendecomposition of the Gram matrix" in err and err.count("validation ndcg@100") == 2 * len(grid)
    with pytest.raises(ValueError, match="unknown EASE solver 'qr'"):
        select_ease_lambda(split, grid, solver="qr")


def test_auto_takes_the_solver_the_benchmark_measured_faster():
    """benchmarks/RESULTS_ease.md: at 17,000 items and 3,000 validation users the default grid of 7 lambdas is
    faster by eigendecomposition (716 against 898 s), at 5,000 items by a hair (31.28 against 31.32 s); one lambda, or
    a short grid with many validation users for the items, by inverse."""
    from models.baselines import EASE_LAMBDAS, faster_solver

    assert faster_solver(len(EASE_LAMBDAS), 17_000, 3_000) == "eigen"
    assert faster_solver(len(EASE_LAMBDAS), 5_000, 3_000) == "eigen"
    assert faster_solver(4, 17_000, 3_000) == "inverse" and faster_solver(len(EASE_LAMBDAS), 5_000, 4_000) == "inverse"
    assert faster_solver(1, 40_000, 100) == "inverse"
    assert faster_solver(len(EASE_LAMBDAS), 3_500, 600) == "eigen"
