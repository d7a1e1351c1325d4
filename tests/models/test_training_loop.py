"""The training loop of :func:`models.trainer.train` pinned down on the real trainer (issue 11): RecVAE's phases,
the best-epoch checkpoint and the initialisation. Each test fails when the behaviour it names is broken (decoder
phase given masked input or a KL term, the prior refresh removed, one encoder pass, best.pt written every epoch,
another initialisation)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import models.pia as pia
import models.trainer as trainer
from models.batches import make_batch
from models.io import load_verified
from models.pia import ItemAnchors
from models.trainer import TrainConfig, build_model, make_phases, train
from models.vae import MultiDAE, MultiVAE

TINY = {"hidden": (32,), "latent_dim": 8, "batch_size": 64, "eval_batch_size": 50}


@dataclass
class Spy:
    """What the trainer did to the model, call by call: ``("forward", kl, kept, full, changed)`` and ``("prior",)``.

    ``kept`` / ``full``: entries of the encoder input / of the full history in the batch; ``changed``: names of the
    parameters the previous optimiser step changed (seen at the next forward or prior refresh)."""

    events: list[tuple] = field(default_factory=list)
    last: dict[str, torch.Tensor] = field(default_factory=dict)

    def changed(self, model: torch.nn.Module) -> set[str]:
        now = {k: p.detach().clone() for k, p in model.named_parameters()}
        moved = {k for k in now if k in self.last and not torch.equal(now[k], self.last[k])}
        self.last = now
        return moved


def _spied(monkeypatch) -> Spy:
    spy = Spy()

    def wrap(model):
        forward, refresh = model.forward_train, getattr(model, "update_prior", None)

        def forward_train(batch, eps, compute_kl=True):
            moved = spy.changed(model)
            spy.events.append(
                ("forward", compute_kl, int(batch.indices.numel()), int(batch.target_cols.numel()), moved)
            )
            return forward(batch, eps, compute_kl=compute_kl)

        def update_prior():
            spy.events.append(("prior", spy.changed(model)))
            refresh()

        model.forward_train = forward_train
        if refresh is not None:
            model.update_prior = update_prior

    _recorded_models(monkeypatch, wrap)
    return spy


def _recorded_anchors(monkeypatch) -> list[ItemAnchors]:
    """The PIA anchors the trainer builds (it imports ``ItemAnchors`` from models.pia when it trains), in order;
    each keeps its initial weight as ``initial``."""
    made: list[ItemAnchors] = []

    class Recorded(ItemAnchors):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.initial = self.weight.detach().clone()
            made.append(self)

    monkeypatch.setattr(pia, "ItemAnchors", Recorded)
    return made


def _recorded_models(monkeypatch, on_build=None) -> list[torch.nn.Module]:
    """The models the trainer builds, in order; ``on_build(model)`` may wrap their methods first."""
    built: list[torch.nn.Module] = []
    real_build = trainer.build_model

    def build(config, n_items, n_users=None):
        model = real_build(config, n_items, n_users)
        if on_build is not None:
            on_build(model)
        built.append(model)
        return model

    monkeypatch.setattr(trainer, "build_model", build)
    return built


def _epochs(events: list[tuple], per_epoch: int) -> list[list[tuple]]:
    assert len(events) % per_epoch == 0, len(events)
    return [events[i : i + per_epoch] for i in range(0, len(events), per_epoch)]


ENC_EPOCHS = 3


@pytest.fixture(scope="module")
def recvae_run(tiny_split, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    spy = _spied(mp)
    try:
        config = TrainConfig(model="recvae", epochs=2, rho=0.5, enc_epochs=ENC_EPOCHS, **TINY)
        train(config, tmp_path_factory.mktemp("recvae") / "run", split=tiny_split, progress=False)
    finally:
        mp.undo()
    batches = math.ceil(tiny_split.train.shape[0] / TINY["batch_size"])
    model = build_model(TrainConfig(model="recvae", **TINY), tiny_split.n_items)
    encoder = {k for k, p in model.named_parameters() if any(p is q for q in model.encoder_parameters())}
    decoder = {k for k, p in model.named_parameters() if any(p is q for q in model.decoder_parameters())}
    return spy.events, batches, encoder, decoder


def test_recvae_epoch_is_enc_epochs_encoder_passes_a_prior_refresh_then_one_decoder_pass(recvae_run):
    events, batches, _, _ = recvae_run
    per_epoch = ENC_EPOCHS * batches + 1 + batches
    for epoch in _epochs(events, per_epoch):
        kinds = [e[0] if e[0] == "prior" else ("encoder" if e[1] else "decoder") for e in epoch]
        assert kinds == ["encoder"] * (ENC_EPOCHS * batches) + ["prior"] + ["decoder"] * batches


def test_recvae_encoder_sees_masked_input_and_the_decoder_the_clean_history(recvae_run):
    events = recvae_run[0]
    forwards = [e for e in events if e[0] == "forward"]
    encoder = [e for e in forwards if e[1]]
    decoder = [e for e in forwards if not e[1]]
    assert all(kept == full for _, _, kept, full, _ in decoder)  # no KL and nothing masked
    kept, full = sum(e[2] for e in encoder), sum(e[3] for e in encoder)
    assert 0.45 < kept / full < 0.55  # rho = 0.5 on every encoder pass


def test_each_recvae_phase_updates_only_its_own_parameters(recvae_run):
    events, _, encoder, decoder = recvae_run
    assert encoder and decoder and not encoder & decoder
    seen = {"encoder": set(), "decoder": set()}
    for previous, event in itertools.pairwise(events):
        if previous[0] != "forward":
            continue
        moved = event[-1]  # what the step after `previous` changed
        seen["encoder" if previous[1] else "decoder"] |= moved
    assert seen["encoder"] and seen["encoder"] <= encoder
    assert seen["decoder"] and seen["decoder"] <= decoder


def _scripted_validation(monkeypatch, values: list[float]) -> None:
    calls = iter(values)

    class Scripted:
        def __init__(self, value: float) -> None:
            self.value = value

        def summary(self) -> dict:
            return {m: {"mean": self.value} for m in trainer.VALIDATION_METRICS}

    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: Scripted(next(calls)))


def test_best_pt_holds_the_best_validation_epoch_not_the_last(tmp_path, tiny_split, monkeypatch):
    values = [0.20, 0.60, 0.40, 0.50]  # the best epoch is the second
    config = TrainConfig(model="multvae", epochs=len(values), **TINY)
    _scripted_validation(monkeypatch, values)
    train(config, tmp_path / "long", split=tiny_split, progress=False)
    history = [json.loads(line) for line in (tmp_path / "long" / "metrics.jsonl").read_text().splitlines()]
    assert [h["val_ndcg@100"] for h in history] == values
    best = load_verified(tmp_path / "long" / "best.pt")
    assert best["epoch"] == int(np.argmax(values)) + 1 == 2 and best["val_ndcg@100"] == max(values)
    # its weights are those after epoch 1: the final weights of the same run stopped after two epochs
    _scripted_validation(monkeypatch, values[:2])
    train(TrainConfig(model="multvae", epochs=2, **TINY), tmp_path / "short", split=tiny_split, progress=False)
    after_two = load_verified(tmp_path / "short" / "checkpoint.pt")["model"]
    assert best["model"].keys() == after_two.keys()
    assert all(torch.equal(best["model"][k], after_two[k]) for k in after_two)
    last = load_verified(tmp_path / "long" / "checkpoint.pt")["model"]
    assert not all(torch.equal(best["model"][k], last[k]) for k in last)


@pytest.mark.parametrize("cls", [MultiVAE, MultiDAE])
def test_multvae_and_multdae_start_from_xavier_uniform_weights_and_truncated_normal_biases(cls):
    torch.manual_seed(0)
    model = cls(3000, hidden=(600,), latent_dim=200)
    layers = [(model.input.bag.weight, model.input.bias, 3000, 600)]  # stored (I, H): Linear(I, H)'s fans
    layers += [
        (m.weight, m.bias, m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert len(layers) == 4
    for weight, bias, fan_in, fan_out in layers:
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = weight.detach()
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound  # uniform on [-bound, bound]
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
        b = bias.detach()
        assert float(b.abs().max()) <= 0.002  # N(0, 0.001^2) truncated at two standard deviations
        assert float(b.std()) == pytest.approx(0.001 * 0.8796, rel=0.25)


def _history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("schedule", "steps"),
    [({"anneal_steps": 20}, 20.0), ({"anneal_epochs": 2}, None)],  # None: 2 epochs' updates / beta_cap
)
def test_beta_and_lambda_of_each_epoch_follow_the_update_count_and_the_warm_up(tmp_path, tiny_split, schedule, steps):
    config = TrainConfig(model="multvae", epochs=4, beta_cap=0.2, pia=0.3, pia_warmup=3, **schedule, **TINY)
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    per_epoch = math.ceil(tiny_split.train.shape[0] / TINY["batch_size"])
    steps = steps if steps is not None else 2 * per_epoch / 0.2
    history = _history(tmp_path / "run")
    assert [h["updates"] for h in history] == [per_epoch * (e + 1) for e in range(4)]
    # recorded: the beta of the epoch's last update, computed from the updates made before it
    assert [h["beta"] for h in history] == pytest.approx(
        [min(0.2, (per_epoch * (e + 1) - 1) / steps) for e in range(4)]
    )
    assert [h["lambda_a"] for h in history] == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_pia_moves_separate_anchors_and_never_tied_ones(tiny_split):
    n_items = tiny_split.n_items
    separate = TrainConfig(model="multvae", pia=0.5, **TINY)
    model = build_model(separate, n_items)
    anchors = ItemAnchors(n_items, TINY["latent_dim"])
    (joint,) = make_phases(separate, model, anchors)
    assert joint.use_pia and any(p is anchors.weight_param for p in joint.parameters)
    # tied to RecVAE's decoder: the encoder phase (the one with PIA) steps only the encoder, and the decoder phase,
    # which steps the decoder weights that are the anchors, has no PIA term: PIA moves mu toward the decoder's
    # item vectors, never those vectors toward mu
    tied = TrainConfig(model="recvae", pia=0.5, pia_anchors="tied", **TINY)
    model = build_model(tied, n_items)
    anchors = ItemAnchors(n_items, TINY["latent_dim"], tied_to=model.decoder_output)
    encoder, decoder = make_phases(tied, model, anchors)
    assert encoder.use_pia and not decoder.use_pia
    assert not any(p is model.decoder_output.weight for p in encoder.parameters)
    assert any(p is model.decoder_output.weight for p in decoder.parameters)


def test_training_with_pia_moves_the_separate_anchors(tmp_path, tiny_split, monkeypatch):
    made = _recorded_anchors(monkeypatch)
    config = TrainConfig(model="multvae", epochs=1, pia=0.5, **TINY)
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    start = made[0].initial
    trained = load_verified(tmp_path / "run" / "checkpoint.pt")["anchors"]["weight_param"]
    assert trained.shape == start.shape and float((trained - start).abs().max()) > 1e-4
    # without PIA the same run builds no anchors at all
    train(TrainConfig(model="multvae", epochs=1, **TINY), tmp_path / "plain", split=tiny_split, progress=False)
    assert len(made) == 1 and load_verified(tmp_path / "plain" / "checkpoint.pt")["anchors"] is None


@pytest.mark.parametrize("mode", ["dropout", "bernoulli"])
def test_the_batch_path_keeps_rho_of_the_entries_and_scales_them_by_mode(tiny_split, mode):
    rows = tiny_split.train[:200]
    rho = 0.4
    batch = make_batch(rows, rho=rho, mode=mode, generator=torch.Generator().manual_seed(0))
    n = int(rows.nnz)
    kept = int(batch.indices.numel())
    assert abs(kept - rho * n) < 4 * math.sqrt(n * rho * (1 - rho))  # Binomial(n, rho), 4 standard deviations
    assert torch.equal(batch.target_cols, torch.from_numpy(rows.indices.astype(np.int64)))  # full history targets
    counts = np.diff(rows.indptr)
    kept_counts = np.diff(np.append(batch.offsets.numpy(), kept))
    for r in range(rows.shape[0]):
        w = batch.weights[batch.offsets[r] : batch.offsets[r] + kept_counts[r]]
        if kept_counts[r] == 0:
            continue
        # dropout: L2-normalise the full row, then inverted dropout; bernoulli: L2-normalise what is kept
        want = 1 / (rho * math.sqrt(counts[r])) if mode == "dropout" else 1 / math.sqrt(kept_counts[r])
        assert torch.allclose(w, torch.full_like(w, want)), (mode, r)


def _one_training_user():
    """A split of three users (one to train, one to validate, one to test), five items each."""
    from models.readers import RawInteractions
    from models.split import SplitConfig, build_split

    raw = RawInteractions(user=np.repeat(np.arange(3), 5), item=np.tile(np.arange(5), 3), rating=None, sources=("t",))
    return build_split(raw, SplitConfig(min_rating=None, n_heldout=1), "one-user")


@pytest.mark.parametrize("users", ["many", "one"])
def test_each_step_back_propagates_the_documented_objective(users, tiny_split, tmp_path, monkeypatch):
    """Every loss the trainer back-propagates is (sum_u [nll_u + beta KL_u] + lambda_A sum_u L_A(u)) / B + wd sum
    ||W||^2, recomputed here from the step's own forward pass, with beta = min(cap, updates / anneal_steps) and
    lambda_A constant without warm-up (a sign, a dropped term or swapped arguments in the loss fail it); and each
    epoch's record holds the per-user means of those terms (also over a single training user)."""
    if users == "one":
        tiny_split = _one_training_user()
    cap, lam, wd = 0.3, 0.7, 0.01
    steps: list[tuple[float, float]] = []
    terms: list[list[float]] = []  # per step: sum nll, sum KL, beta sum KL, sum L_A, users
    last: dict = {}
    real_backward = torch.Tensor.backward

    def wrap(model):
        forward = model.forward_train

        def forward_train(batch, eps, compute_kl=True):
            out = forward(batch, eps, compute_kl=compute_kl)
            last.update(model=model, batch=batch, fwd=out)
            return out

        model.forward_train = forward_train

    def backward(loss, *args, **kwargs):
        model, batch, fwd = last["model"], last["batch"], last["fwd"]
        with torch.no_grad():
            beta = min(cap, len(steps) / 1)  # anneal_steps = 1: 0 at the first update, the cap after it
            align = pia.alignment_loss(fwd.mu, fwd.logvar, made[0].weight, batch).sum()
            users = fwd.nll.shape[0]
            expected = (fwd.nll.sum() + beta * fwd.kl.sum() + lam * align) / users + wd * model.weight_penalty()
            nll, kl = float(fwd.nll.sum()), float(fwd.kl.sum())
        steps.append((float(loss.detach()), float(expected)))
        terms.append([nll, kl, beta * kl, float(align), users])
        return real_backward(loss, *args, **kwargs)

    _recorded_models(monkeypatch, wrap)
    made = _recorded_anchors(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    config = TrainConfig(
        model="multvae", epochs=2, rho=0.5, beta_cap=cap, anneal_steps=1, pia=lam, weight_decay=wd, **TINY
    )
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    monkeypatch.undo()
    assert len(made) == 1 and len(steps) == 2 * math.ceil(tiny_split.train.shape[0] / TINY["batch_size"])
    got, want = np.array(steps).T
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)
    # each epoch's record in metrics.jsonl: the per-user means of the same terms over that epoch's steps
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record, epoch in zip(records, np.split(np.array(terms), 2), strict=True):
        nll, kl, kl_weighted, align, users = epoch.sum(axis=0)
        assert record["nll"] == pytest.approx(nll / users) and record["kl"] == pytest.approx(kl / users)
        assert record["pia"] == pytest.approx(align / users)
        assert record["loss"] == pytest.approx((nll + kl_weighted + lam * align) / users)


@pytest.mark.parametrize("kind", ["tied", "separate"])
def test_the_trainer_ties_the_anchors_to_the_decoder_exactly_when_asked(kind, tiny_split, tmp_path, monkeypatch):
    """Through ``train`` itself (RecVAE, whose linear decoder can carry them): ``--pia-anchors tied`` makes the
    anchors the decoder's item vectors, ``separate`` gives them a parameter of their own."""
    made, models = _recorded_anchors(monkeypatch), _recorded_models(monkeypatch)
    config = TrainConfig(model="recvae", epochs=1, pia=0.5, pia_anchors=kind, enc_epochs=1, **TINY)
    train(config, tmp_path / "run", split=tiny_split, progress=False)
    (anchors,), (model,) = made, models
    if kind == "tied":
        assert anchors.tied and anchors.weight is model.decoder_output.weight and anchors.weight_param is None
    else:
        assert not anchors.tied and anchors.weight is anchors.weight_param
        assert anchors.weight_param.shape == model.decoder_output.weight.shape
