"""RaCT (models/ract.py): the critic's target and features against their definitions, what each phase moves, that
only training users train, the best epoch, exact resumption, the folder and CLI contracts, and planted data."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import models.evaluation
from geometry.masking import mask_sparse_values
from models import ract
from models.batches import make_batch
from models.evaluation import evaluate
from models.io import load_verified
from models.readers import RawInteractions
from models.split import SplitConfig, build_split
from models.synthetic import make_synthetic
from models.trainer import TrainConfig, load_trained, train
from models.vae import MultiVAE

TINY = {"hidden": (32,), "latent_dim": 8, "batch_size": 64, "eval_batch_size": 50, "anneal_epochs": 2}
FAST = {"lr_critic": 1e-2, "lr_actor": 1e-4, "batch_size": 64, "eval_batch_size": 50, "seed": 1}


@pytest.fixture(scope="module")
def actor_run(tmp_path_factory, tiny_split) -> Path:
    run = tmp_path_factory.mktemp("actor") / "run"
    train(TrainConfig(model="multvae", epochs=4, seed=0, **TINY), run, split=tiny_split, progress=False)
    return run


def _ract(actor_run, out, split, **kw):
    settings = {**FAST, "critic_epochs": 2, "actor_epochs": 2, **kw}
    return ract.train_ract(actor_run, out, split=split, progress=False, **settings)


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# ------------------------------------------------------------------------------------- target and features
def _brute_force_ndcg(scores: np.ndarray, kept: set, dropped: set, k: int = 100) -> float:
    if not dropped:
        return 0.0
    ranked = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in kept][:k]
    dcg = sum(1.0 / math.log2(r + 1) for r, item in enumerate(ranked, start=1) if item in dropped)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, len(dropped)) + 1))
    return dcg / idcg


@pytest.mark.parametrize("n_items", [60, 250])  # fewer items than the cut-off, and more
def test_the_critic_target_is_the_ndcg_at_100_of_the_masked_out_items_with_the_kept_ones_excluded(n_items):
    rng = np.random.default_rng(n_items)
    n_rows = 8
    scores = rng.normal(size=(n_rows, n_items))
    kept_sets, dropped_sets = [], []
    for u in range(n_rows):
        history = rng.choice(n_items, size=int(rng.integers(5, 40)), replace=False)
        keep = rng.random(history.size) < 0.5
        if u == 0:
            keep[:] = True  # nothing masked out: target 0
        kept_sets.append({int(i) for i in history[keep]})
        dropped_sets.append({int(i) for i in history[~keep]})
    # the kept items get the best scores of their rows: a ranking that forgot to exclude them would lose every hit
    for u, kept in enumerate(kept_sets):
        scores[u, list(kept)] += 100.0

    def csr(sets):
        return sp.csr_matrix(
            (
                [1.0] * sum(map(len, sets)),
                ([u for u, s in enumerate(sets) for _ in s], [i for s in sets for i in sorted(s)]),
            ),
            shape=(n_rows, n_items),
        )

    targets = ract.critic_targets(torch.from_numpy(scores), csr(kept_sets), csr(dropped_sets))
    expected = [_brute_force_ndcg(scores[u], kept_sets[u], dropped_sets[u]) for u in range(n_rows)]
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-12)
    assert targets[0] == 0.0 and targets[1:].max() > 0


def test_kept_and_dropped_split_each_row_into_the_batch_input_and_the_rest(tiny_split):
    rows = tiny_split.train[:40]
    batch = make_batch(rows, rho=0.5, generator=torch.Generator().manual_seed(3))
    kept, dropped = ract.kept_and_dropped(rows, batch)
    full = (rows > 0).astype(np.float32)
    assert (kept + dropped != full).nnz == 0 and kept.multiply(dropped).nnz == 0
    keep, _ = mask_sparse_values(
        torch.from_numpy(rows.indptr.astype(np.int64)), 0.5, generator=torch.Generator().manual_seed(3)
    )
    np.testing.assert_array_equal(kept.indices, rows.indices[keep.numpy()])


def test_the_features_equal_their_definitions_on_a_hand_made_batch():
    torch.manual_seed(0)
    actor = MultiVAE(12, hidden=(6,), latent_dim=3).double()
    histories = [[0, 3, 5, 7, 11], [1, 2], [4, 5, 6, 8, 9, 10]]
    rows = sp.csr_matrix(
        ([1.0] * 13, ([u for u, h in enumerate(histories) for _ in h], [i for h in histories for i in h])),
        shape=(3, 12),
    )
    rho = 0.5
    batch = make_batch(rows, rho=rho, generator=torch.Generator().manual_seed(7))
    batch.weights = batch.weights.double()
    keep, _ = mask_sparse_values(
        torch.from_numpy(rows.indptr.astype(np.int64)), rho, generator=torch.Generator().manual_seed(7)
    )
    keep = keep.numpy()
    eps = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    features, logits = ract.ract_features(actor, batch, eps)

    # the definitions, dense and in float64, without the toolkit's sparse path
    full = torch.from_numpy(rows.toarray())
    mask = torch.zeros(3, 12, dtype=torch.float64)
    mask[
        torch.from_numpy(np.repeat(np.arange(3), np.diff(rows.indptr))[keep]), torch.from_numpy(rows.indices[keep])
    ] = 1
    x_h = full * mask / (rho * full.norm(dim=1, keepdim=True))
    h = actor.encoder[0](torch.tanh(x_h @ actor.input.weight + actor.input.bias))
    mu, logvar = h[:, :3], h[:, 3:]
    z = mu + eps * torch.exp(0.5 * logvar)
    expected_logits = actor.decoder[1](torch.tanh(actor.decoder[0](z)))
    n_seen = mask.sum(1)
    expected = torch.stack([n_seen, full.sum(1) - n_seen, -(torch.log_softmax(expected_logits, 1) * full).sum(1)], 1)
    assert features.shape == (3, 3) and n_seen.tolist() != [5, 2, 6]  # the mask dropped something
    # (the batch stores its input values in float32: agreement to float32's precision, the counts exactly)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(features, expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(features[:, :2], expected[:, :2])
    assert features.requires_grad  # the NLL feature carries the actor's gradient


# ------------------------------------------------------------------------------------------ what trains
def _fixed_data(actor, split, seed: int = 123):
    """Features and targets of every training user under one fixed draw of masks and noise."""
    g = torch.Generator().manual_seed(seed)
    batch = make_batch(split.train, rho=0.5, generator=g)
    eps = torch.randn(batch.n_rows, actor.latent_dim, generator=g)
    kept, dropped = ract.kept_and_dropped(split.train, batch)
    with torch.no_grad():
        features, logits = ract.ract_features(actor, batch, eps)
    return batch, eps, kept, dropped, features, torch.from_numpy(ract.critic_targets(logits, kept, dropped)).float()


def test_critic_pretraining_reduces_its_error_on_fixed_data_and_leaves_the_actor_alone(tmp_path, actor_run, tiny_split):
    out = tmp_path / "ract"
    _ract(actor_run, out, tiny_split, critic_epochs=6, actor_epochs=0)
    ckpt = load_verified(out / "checkpoint.pt")
    actor, _ = load_trained(actor_run)
    assert all(torch.equal(ckpt["actor"][k], v) for k, v in actor.state_dict().items())
    *_, features, target = _fixed_data(actor, tiny_split)
    before = ract.make_critic(FAST["seed"])
    before.feature_mean.copy_(ckpt["critic"]["feature_mean"])
    before.feature_var.copy_(ckpt["critic"]["feature_var"])
    after = ract.make_critic(0)
    after.load_state_dict(ckpt["critic"])
    with torch.no_grad():
        mse_before = float((before(features) - target).pow(2).mean())
        mse_after = float((after(features) - target).pow(2).mean())
    assert mse_after < 0.5 * mse_before, (mse_before, mse_after)
    # the fixed feature statistics are those of the training users' features
    np.testing.assert_allclose(ckpt["critic"]["feature_mean"].numpy(), features.mean(0).numpy(), rtol=0.1)
    assert [h["phase"] for h in _lines(out)] == ["critic"] * 6


def test_the_actor_step_raises_the_critics_mean_output_and_moves_only_the_actor(tmp_path, actor_run, tiny_split):
    out = tmp_path / "ract"
    _ract(actor_run, out, tiny_split, critic_epochs=6, actor_epochs=0)
    critic = ract.make_critic(0)
    critic.load_state_dict(load_verified(out / "checkpoint.pt")["critic"])
    actor, _ = load_trained(actor_run)
    batch, eps, kept, dropped, features, _ = _fixed_data(actor, tiny_split)
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    actor_before = {k: v.clone() for k, v in actor.state_dict().items()}
    optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    with torch.no_grad():
        start = float(critic(features).mean())
    for _ in range(5):
        ract.ract_step(actor, critic, batch, eps, kept, dropped, actor_optimizer=optimizer)
    with torch.no_grad():
        end = float(critic(ract.ract_features(actor, batch, eps)[0]).mean())
    assert end > start
    assert all(torch.equal(critic.state_dict()[k], v) for k, v in critic_before.items())
    assert not all(torch.equal(actor.state_dict()[k], v) for k, v in actor_before.items())


def test_only_training_users_enter_a_training_step(tmp_path, actor_run, tiny_split, monkeypatch):
    import models.batches

    seen: list[tuple[int, ...]] = []
    real = models.batches.make_batch

    def spy(rows, **kw):
        rows = rows.tocsr()
        seen.extend(tuple(rows.indices[rows.indptr[u] : rows.indptr[u + 1]].tolist()) for u in range(rows.shape[0]))
        return real(rows, **kw)

    monkeypatch.setattr(models.batches, "make_batch", spy)
    _ract(actor_run, tmp_path / "ract", tiny_split, critic_epochs=1, actor_epochs=2)
    train_rows = tiny_split.train
    rows = [
        tuple(train_rows.indices[train_rows.indptr[u] : train_rows.indptr[u + 1]].tolist())
        for u in range(train_rows.shape[0])
    ]
    # the statistics pass and three epochs: every training user four times, nobody else
    assert sorted(seen) == sorted(rows * 4)


# -------------------------------------------------------------------------------------- best and resume
def test_best_pt_holds_the_best_validation_epoch_of_metrics_jsonl(tmp_path, actor_run, tiny_split, monkeypatch):
    bonus = iter([0.0, 0.0, 0.5, 0.2])  # the unchanged actor, then actor epochs 3, 4, 5: the 4th is the best
    real = models.evaluation.evaluate

    def scripted(score_fn, heldout, **kw):
        ev = real(score_fn, heldout, **kw)
        if heldout is not tiny_split.validation:
            return ev
        per_user = {**ev.per_user, "ndcg@100": ev.per_user["ndcg@100"] + next(bonus)}
        return replace(ev, per_user=per_user)

    monkeypatch.setattr(models.evaluation, "evaluate", scripted)
    out = tmp_path / "ract"
    state = _ract(actor_run, out, tiny_split, actor_epochs=3)
    lines = _lines(out)
    assert [h["phase"] for h in lines] == ["critic", "critic", "actor", "actor", "actor"]
    assert "val_ndcg@100" not in lines[0] and "val_ndcg@100" in lines[2]
    candidates = [(0, state.initial_value)] + [(h["epoch"], h["val_ndcg@100"]) for h in lines if "val_ndcg@100" in h]
    epoch, value = max(candidates, key=lambda c: c[1])
    best = load_verified(out / "best.pt")
    assert best["epoch"] == epoch == state.best_epoch == 4 and best["val_ndcg@100"] == value
    # its weights are those of epoch 4: evaluated again they give the recorded number (minus the scripted bonus)
    actor, _ = load_trained(actor_run)
    actor.load_state_dict(best["actor"])
    again = real(actor.score, tiny_split.validation, metrics=ract.VALIDATION_METRICS, batch_size=50)
    assert again.summary()["ndcg@100"]["mean"] + 0.5 == pytest.approx(value, abs=1e-12)
    last = load_verified(out / "checkpoint.pt")["actor"]
    assert not all(torch.equal(best["actor"][k], last[k]) for k in last)
    # the test files describe that epoch
    doc = json.loads((out / "test_metrics.json").read_text())
    assert doc["run"]["evaluated_epoch"] == 4
    assert set((out / "test_per_user.csv").read_text().splitlines()[1].split(",")[3:4]) == {"4"}


def test_resume_after_stops_gives_the_history_of_an_uninterrupted_run(tmp_path, actor_run, tiny_split):
    full = _ract(actor_run, tmp_path / "full", tiny_split, actor_epochs=3)
    cut = tmp_path / "cut"
    _ract(actor_run, cut, tiny_split, actor_epochs=3, stop_after_epochs=1)  # inside the critic phase
    assert not (cut / "test_metrics.json").exists()
    _ract(actor_run, cut, tiny_split, actor_epochs=3, resume=True, stop_after_epochs=2)  # inside the actor phase
    resumed = _ract(actor_run, cut, tiny_split, actor_epochs=3, resume=True)
    assert _timeless(resumed.history) == _timeless(full.history) and len(full.history) == 5
    assert _timeless(_lines(cut)) == _timeless(_lines(tmp_path / "full"))
    for name in ("checkpoint.pt", "best.pt"):
        a, b = load_verified(tmp_path / "full" / name), load_verified(cut / name)
        for part in ("actor", "critic"):
            assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), (name, part)
    a, b = (json.loads((p / "test_metrics.json").read_text()) for p in (tmp_path / "full", cut))
    assert a == b
    assert (tmp_path / "full" / "test_per_user.csv").read_text() == (cut / "test_per_user.csv").read_text()


def test_a_folder_holding_something_else_is_refused_in_one_line(tmp_path, actor_run, tiny_split):
    out = tmp_path / "ract"
    _ract(actor_run, out, tiny_split, critic_epochs=1, actor_epochs=0)
    cases = [
        (dict(out=actor_run), "actor's run folder"),
        (dict(out=out), "pass --resume"),
        (dict(out=out, resume=True, lr_critic=0.5), "--lr-critic 0.01 -> 0.5"),
        (dict(out=out, resume=True, seed=2), "--seed 1 -> 2"),
        (dict(out=tmp_path / "empty", resume=True), "no RaCT run to resume"),
    ]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    cases.append((dict(out=tmp_path / "other"), "not empty and holds no RaCT run"))
    for kw, words in cases:
        target = kw.pop("out")
        with pytest.raises(ValueError) as err:
            _ract(actor_run, target, tiny_split, **{"critic_epochs": 1, "actor_epochs": 0, **kw})
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    # more actor epochs on resume is allowed: the finished epochs stay as they were
    before = _lines(out)
    longer = _ract(actor_run, out, tiny_split, critic_epochs=1, actor_epochs=1, resume=True)
    assert _timeless(longer.history[:1]) == _timeless(before) and longer.history[1]["phase"] == "actor"
    assert json.loads((out / "config.json").read_text())["derived"]["changes_on_resume"][0]["actor_epochs"] == [0, 1]


# ---------------------------------------------------------------------------------------------------- CLI
def _one_line_error(capsys, argv) -> str:
    try:
        code = ract.main(argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--rho", "0"], "--rho must lie in (0, 1]"),
        (["--rho", "1.5"], "--rho must lie in (0, 1]"),
        (["--critic-epochs", "-1"], "--critic-epochs must be an integer >= 0"),
        (["--actor-epochs", "-2"], "--actor-epochs must be an integer >= 0"),
        (["--lr-critic", "0"], "--lr-critic must be a number > 0"),
        (["--lr-actor=-1e-3"], "--lr-actor must be a number > 0"),
        (["--lr-actor", "nan"], "--lr-actor must be a number > 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    ],
)
def test_the_cli_refuses_bad_numbers_in_one_line(capsys, tmp_path, options, words):
    assert words in _one_line_error(capsys, [str(tmp_path), *options])


@pytest.mark.parametrize("model", ["multdae", "recvae"])
def test_the_cli_refuses_an_actor_that_is_not_a_multi_vae_with_the_reason(capsys, tmp_path, model):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": model, "dataset": "synthetic"}))
    err = _one_line_error(capsys, [str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert f"holds a {model} run; RaCT fine-tunes a Multi-VAE actor" in err
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_a_folder_that_is_no_run(capsys, tmp_path):
    assert "is not a run folder" in _one_line_error(capsys, [str(tmp_path), "--out", str(tmp_path / "out")])


def test_the_cli_run_writes_what_models_compare_reads(capsys, tmp_path, monkeypatch):
    """End to end on the named synthetic dataset: train a Multi-VAE, fine-tune it from the command line, compare."""
    from models.compare import main as compare_main

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(model="multvae", dataset="synthetic", epochs=2, seed=0, **{**TINY, "batch_size": 500})
    train(config, tmp_path / "actor", progress=False)
    code = ract.main(["actor", "--critic-epochs", "1", "--actor-epochs", "1", "--lr-actor", "1e-4", "--no-progress"])
    printed = capsys.readouterr().out
    out = ract.default_out(Path("actor"), {"critic_epochs": 1, "actor_epochs": 1, "lr_actor": 1e-4})
    assert code == 0 and out.parent == Path("out/ract") and out.is_dir() and "RaCT - actor" in printed, printed
    doc = json.loads((out / "test_metrics.json").read_text())
    assert doc["model"] == "ract" and doc["run"]["finished"]
    for m in ("recall@20", "recall@50", "ndcg@100"):
        assert set(doc[m]) == {"mean", "se", "n"} and set(doc["actor"][m]) == {"mean", "se", "n"}
        assert doc["difference"][m]["n"] == doc[m]["n"] == doc["actor"][m]["n"]
    header = (out / "test_per_user.csv").read_text().splitlines()[0]
    assert header == "user,n_interactions,group,epoch,recall@20,recall@50,ndcg@100"
    # a run folder (evaluated in memory) against the RaCT folder, and against its CSV file
    for other in (out, out / "test_per_user.csv"):
        assert compare_main(["actor", str(other), "--out", "cmp"]) == 0
        rows = json.loads(Path("cmp/compare.json").read_text())["rows"]
        assert [r["metric"] for r in rows] == ["recall@20", "recall@50", "ndcg@100"]
        by_metric = {r["metric"]: r for r in rows}
        assert by_metric["ndcg@100"]["diff"] == pytest.approx(doc["difference"]["ndcg@100"]["mean"], abs=1e-12)
    # --resume without options takes the run's own settings (the defaults would be another run: refused)
    assert ract.main(["actor", "--out", str(out), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    assert "--lr-actor 0.0001 -> 2e-06" in _one_line_error(
        capsys, ["actor", "--out", str(out), "--lr-actor", "2e-6", "--resume"]
    )


# ------------------------------------------------------------------------------------------ planted data
def test_on_planted_taste_groups_the_fine_tuned_actor_still_recommends_the_planted_items(tmp_path):
    data = make_synthetic(
        n_users=500, n_items=120, n_groups=3, cohort_activity=(10, 20, 40), affinity=0.9, n_far_related_pairs=0, seed=5
    )
    raw = RawInteractions(user=data.users, item=data.items, rating=None, sources=("synthetic",))
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=60), "planted")
    train(TrainConfig(model="multvae", epochs=12, seed=0, **TINY), tmp_path / "actor", split=split, progress=False)
    out = tmp_path / "ract"
    state = ract.train_ract(
        tmp_path / "actor", out, split=split, progress=False, **{**FAST, "critic_epochs": 4, "actor_epochs": 3}
    )
    actor, _ = load_trained(tmp_path / "actor")
    tuned, _ = load_trained(tmp_path / "actor")
    tuned.load_state_dict(load_verified(out / "checkpoint.pt")["actor"])  # the last epoch, not the best
    assert not all(torch.equal(tuned.state_dict()[k], v) for k, v in actor.state_dict().items())

    def in_group_share(model) -> float:
        ev = evaluate(model.score, split.validation, metrics=("ndcg@10",))
        users = split.validation.users[ev.rows]
        clusters = data.item_cluster[split.items[ev.topk]]
        return float(np.mean(clusters == data.taste_group[users][:, None]))

    assert in_group_share(actor) > 0.8
    assert in_group_share(tuned) > in_group_share(actor) - 0.05
    for h in _lines(out):
        if h["phase"] == "actor":
            assert h["val_ndcg@100"] >= state.initial_value - 0.03, h
    assert state.best_value >= state.initial_value
