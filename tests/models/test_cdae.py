"""CDAE (models/cdae.py) in the training core: its loss is the logistic loss of every item, its input the paper's
unbiased corruption, its user node is each training row's own and absent for held-out users, and trained by the real
trainer it recommends the planted block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from models.batches import make_batch
from models.cdae import CDAE, logistic_nll
from models.readers import RawInteractions
from models.split import SplitConfig, build_split
from models.trainer import ConfigError, TrainConfig, build_model, load_trained, train

TINY = {"latent_dim": 8, "batch_size": 64, "eval_batch_size": 50}


def _rows(n_users: int = 6, n_items: int = 12, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.4).astype(np.float32)
    x[:, 0] = 1.0  # no empty row
    return sp.csr_matrix(x)


def test_the_loss_is_the_binary_cross_entropy_of_every_item():
    rows = _rows()
    batch = make_batch(rows)
    logits = torch.randn(rows.shape[0], rows.shape[1], dtype=torch.float64) * 3
    dense = torch.from_numpy(rows.toarray()).double()
    expected = F.binary_cross_entropy_with_logits(logits, dense, reduction="none").sum(dim=1)
    assert torch.allclose(logistic_nll(logits, batch), expected, atol=1e-10)


def test_the_code_reads_the_unnormalised_corrupted_input_and_the_rows_own_user_vector():
    rows = _rows(n_users=8, n_items=20, seed=1)
    model = CDAE(n_items=20, n_users=30, latent_dim=5).double()
    users = np.array([3, 29, 0, 7, 11, 12, 4, 5])
    rho = 0.4
    batch = make_batch(rows, rho=rho, generator=torch.Generator().manual_seed(2), users=users)
    batch.weights = batch.weights.double()
    # the corrupted history of the paper: kept positives at 1 / rho, dropped ones at 0
    kept = np.zeros(rows.shape)
    starts = [*batch.offsets.tolist(), batch.indices.numel()]
    for r in range(rows.shape[0]):
        kept[r, batch.indices[starts[r] : starts[r + 1]].numpy()] = 1.0 / rho
    assert 0 < (kept > 0).sum() < rows.nnz  # some entries dropped, some kept
    w, b = model.input.weight.detach(), model.input.bias.detach()
    v = model.users.weight.detach()[torch.from_numpy(users)]
    expected = torch.sigmoid(torch.from_numpy(kept) @ w + b + v)
    code, logvar = model.encode(batch)
    assert logvar is None
    assert torch.allclose(code, expected, atol=1e-12)


def test_held_out_users_are_scored_without_a_user_vector():
    rows = _rows(n_users=5, n_items=12, seed=3)
    model = CDAE(n_items=12, n_users=10, latent_dim=4)
    w, b = model.input.weight.detach(), model.input.bias.detach()
    expected = torch.sigmoid(torch.from_numpy(rows.toarray()) @ w + b) @ model.output.weight.detach().T
    expected = expected + model.output.bias.detach()
    scores = model.score(rows)
    assert torch.allclose(scores, expected, atol=1e-5)
    with torch.no_grad():
        model.users.weight.add_(5.0)  # the user node of training users: never read for held-out rows
    assert torch.equal(model.score(rows), scores)
    with torch.no_grad():
        model.input.bag.weight.add_(0.1)  # positive control: the encoder is read
    assert not torch.allclose(model.score(rows), scores)


def test_training_needs_the_user_indices():
    model = CDAE(n_items=12, n_users=10, latent_dim=4)
    with pytest.raises(ValueError, match="training users"):
        model.forward_train(make_batch(_rows()))


def test_each_training_batch_carries_its_own_rows_user_indices_and_only_training_rows(tiny_split, tmp_path):
    """The user vector a row trains is that row's: its targets are the history of training row ``users[k]``;
    every training row is seen once per epoch and nothing else (held-out users never reach training)."""
    seen: list[tuple[np.ndarray, list[set]]] = []
    original = CDAE.forward_train

    def spy(self, batch, eps=None, compute_kl=True):
        users = batch.users.numpy().copy()
        targets = [set() for _ in users]
        for r, c in zip(batch.target_rows.tolist(), batch.target_cols.tolist(), strict=True):
            targets[r].add(c)
        seen.append((users, targets))
        return original(self, batch, eps, compute_kl)

    CDAE.forward_train = spy
    try:
        train(
            TrainConfig(model="cdae", dataset="synthetic", epochs=2, **TINY),
            tmp_path / "r",
            split=tiny_split,
            progress=False,
        )
    finally:
        CDAE.forward_train = original
    n_train = tiny_split.train.shape[0]
    all_users = np.concatenate([u for u, _ in seen])
    assert np.array_equal(np.sort(all_users), np.sort(np.tile(np.arange(n_train), 2)))  # each row once an epoch
    for users, targets in seen:
        for u, t in zip(users, targets, strict=True):
            assert t == set(tiny_split.train[u].indices.tolist())
    model, _ = load_trained(tmp_path / "r")
    assert model.users.weight.shape == (n_train, 8)  # one vector per training row, none for held-out users


def test_the_configuration_refuses_what_cdae_cannot_take():
    TrainConfig(model="cdae", dataset="synthetic").validate()  # the defaults are valid
    assert TrainConfig(model="cdae").resolved().hidden == ()
    for bad, flag in [
        ({"hidden": (16,)}, "--hidden"),
        ({"mask_mode": "bernoulli"}, "--mask"),
        ({"pia": 0.1}, "--pia"),
    ]:
        with pytest.raises(ConfigError, match=flag):
            TrainConfig(model="cdae", dataset="synthetic", **bad).validate()
    TrainConfig(model="multdae", dataset="synthetic", pia=0.1, hidden=(16,)).validate()  # the limits are CDAE's only
    with pytest.raises(ValueError, match="training users"):
        build_model(TrainConfig(model="cdae"), 10)


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_split, tmp_path):
    config = TrainConfig(model="cdae", dataset="synthetic", epochs=3, **TINY)
    train(config, tmp_path / "whole", split=tiny_split, progress=False)
    train(config, tmp_path / "parts", split=tiny_split, progress=False, stop_after_epochs=1)
    train(config, tmp_path / "parts", split=tiny_split, progress=False, resume=True)
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    parts = [json.loads(line) for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(whole, parts, strict=True):
        assert a["loss"] == b["loss"] and a["val_ndcg@100"] == b["val_ndcg@100"]
    a, _ = load_trained(tmp_path / "whole")
    b, _ = load_trained(tmp_path / "parts")
    assert torch.equal(a.users.weight, b.users.weight)


def _planted_split():
    """Two tastes over their own 30 items; each user has 8 of their block's items."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(600):
        block = u % 2
        for i in rng.choice(30, size=8, replace=False):
            users.append(u)
            items.append(30 * block + i)
    raw = RawInteractions(user=np.array(users), item=np.array(items), rating=None, sources=("planted",))
    return build_split(raw, SplitConfig(min_rating=None, n_heldout=60), "planted")


def test_on_planted_blocks_the_users_own_block_is_recommended(tmp_path):
    split = _planted_split()
    config = TrainConfig(model="cdae", dataset="synthetic", epochs=15, lr=1e-2, **TINY)
    train(config, tmp_path / "r", split=split, progress=False)
    model, _ = load_trained(tmp_path / "r")
    fold = split.test.fold_in
    scores = model.score(fold).numpy()
    scores[fold.toarray() > 0] = -np.inf  # as the evaluation: fold-in items are not recommended
    top = np.argsort(-scores, axis=1)[:, :10]
    block_of_item = split.items[top] // 30  # raw item ids name the block
    own = split.items[fold.indices[fold.indptr[:-1]]] // 30  # the block of each user's first fold-in item
    assert (block_of_item == own[:, None]).mean() > 0.95
