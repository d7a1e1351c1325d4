"""RaCT: ranking-critical fine-tuning of a trained Multi-VAE toward NDCG@100: ``python -m models.ract RUN``.

Reference: S. Lobel, C. Li, J. Gao, L. Carin, "RaCT: Toward Amortized Ranking-Critical Training for Collaborative
Filtering", ICLR 2020, and the authors' public TensorFlow code (``samlobel/RaCT_CF``: ``utils/base_models.py``
class ``CriticModelMixin``, ``utils/models.py`` class ``MultiVAE``, ``utils/training.py`` function ``train``,
``scripts/main_vae.py``), which this module follows; written independently in PyTorch.

The actor is the best epoch of a ``python -m models.train`` Multi-VAE run (:func:`models.trainer.load_trained`).
A critic learns to predict, from three features of the actor's output, the NDCG@100 the actor achieves on the
items masked out of a training user's input; the actor is then trained to maximise the critic's prediction.

Critic features and target
--------------------------
For a batch of ``B`` training users with binary full histories ``x_u`` (item sets ``S_u``), over ``I`` items:

1. **Mask.** Every positive is kept with probability ``rho``, ``b_ui ~ Bernoulli(rho)``: kept set
   ``H0_u = {i in S_u : b_ui = 1}``, masked-out set ``H1_u = S_u minus H0_u``. Encoder input (mode ``dropout``,
   Liang et al. and the original): ``x_h = b_u * x_u / (rho ||x_u||_2)`` (:func:`models.batches.make_batch`).
2. **Actor pass.** ``(mu, logvar) = encode(x_h)``, ``z = mu + eps * exp(logvar / 2)``, ``eps ~ N(0, I)`` (the
   original samples ``z`` in every training phase), logits ``f_u = decode(z)``, shape ``(B, I)``.
3. **Features** (:func:`ract_features`), shape ``(B, 3)``::

       phi_u = [ |H0_u|,  |H1_u|,  NLL_u ],     NLL_u = -sum_{i in S_u} log softmax(f_u)_i

   the numbers of seen (kept) and unseen (masked-out) items and the actor's multinomial negative log-likelihood
   of the **full** history (its MLE loss without the KL; the original's ``actor_error`` with
   ``actor_error_mask = batch_of_users``). Only ``NLL_u`` depends on the actor's parameters.
4. **Critic** (:func:`make_critic`): ``c_u = sigmoid(MLP(standardise(phi_u)))`` with the MLP
   ``3 -> 100 -> 100 -> 10 -> 1`` and ReLU between layers (sigmoid output: NDCG lies in [0, 1]);
   ``standardise(phi) = (phi - m) / sqrt(v + 1e-3)`` with a fixed mean ``m`` and variance ``v`` per feature.
5. **Target** (:func:`critic_targets`): ``y_u`` = NDCG@100 of the ranking of ``f_u`` over the items not in
   ``H0_u`` (kept items excluded, set to ``-inf``), relevant set ``H1_u``::

       y_u = sum_{r <= 100} [item_r in H1_u] / log2(r + 1)  /  sum_{r <= min(100, |H1_u|)} 1 / log2(r + 1)

   computed by :func:`models.evaluation.top_k_items` and :func:`models.evaluation.ranking_metrics`, the
   metric every evaluation of the toolkit uses; ``y_u = 0`` for a user whose mask kept every item.

Training
--------
* **Critic loss** (Adam, ``lr_critic``), per batch::

      L_C = mean_u (y_u - c_u)^2 + 1e-4 * sum_{theta in critic} ||theta||^2 / batch_size

  (the original's ``2 * l2_regularizer(1e-4)`` over the critic's weights and biases, divided by the batch size).
  The features are detached: ``L_C`` never moves the actor.
* **Actor loss** (Adam, ``lr_actor``): ``L_A = -mean_u c_u``, the gradient flowing through the critic into
  ``NLL_u`` and from there into the encoder and decoder (through ``z = mu + eps sigma``); the critic's parameters
  are not moved by ``L_A``. No KL term (``ac_reg_loss_scaler = 0.0`` in ``main_vae.py``).
* **Schedule.** Feature statistics: one pass of the frozen actor over the training users (masks and noise as
  in training) gives ``m`` and ``v``, fixed from then on. Critic phase: ``critic_epochs`` epochs with the actor
  frozen, only ``L_C``. Actor phase: ``actor_epochs`` epochs in which every batch makes one forward pass, both
  gradients are taken from it (``L_C`` for the critic, ``L_A`` for the actor) and both optimisers step, as the
  original runs both training ops in one session call. After every actor epoch the actor is evaluated on the
  validation users with clean input and ``z = mu`` (:func:`models.evaluation.evaluate`, NDCG@100, Recall@20/50);
  the best state is kept, the unchanged actor (epoch 0) included, so the result never validates below it.
  Only training users enter a training step; validation and test users are only ranked.

Defaults (ML-20M, the authors' ``scripts/main_vae.py`` and the classes it uses)
-------------------------------------------------------------------------------
=================  =======  ===============================================================================
option             default  where
=================  =======  ===============================================================================
critic_epochs      50       ``scripts/main_vae.py``, second ``train(...)`` call: ``n_epochs_ac_only=50``
actor_epochs       50       same call: ``n_epochs_pred_and_ac=50``
lr_critic          1e-4     ``utils/models.py``, ``MultiVAE.__init__``: ``lr_critic=1e-4`` (not overridden)
lr_actor           2e-6     same: ``lr_ac=2e-6``, the rate of the actor-critic op (``lr_actor=1e-3`` there is
                            the MLE rate of the pre-training)
rho                0.5      ``utils/training.py``, ``train``: ``keep_prob_ph: 0.5`` in every training phase
batch_size         500      ``scripts/main_vae.py``: ``BATCH_SIZE = 500``
critic             3-100-100-10-1, ReLU, sigmoid; L2 1e-4 / batch: ``utils/base_models.py``,
                   ``CriticModelMixin._create_critic_network``, ``_build_critic_reg``
=================  =======  ===============================================================================

Choices where the paper or the code leaves one
----------------------------------------------
* **Feature normalisation.** The original passes the features through a non-trainable batch normalisation
  (``renorm=True``, no scale, zero offset) that runs in inference mode in both RaCT phases
  (``train_batch_norm: False``): fixed statistics, accumulated while the actor was pre-trained (which of them the
  restore brings back is not clear from the code). Here: the mean and variance of each feature over one pass of
  the frozen actor on the training users, fixed before the critic's first step, ``epsilon = 1e-3`` (TF's
  default), stored as buffers of the critic.
* **Users with nothing masked out** (all positives kept): the original's IDCG is floored at 0.1, so their
  target is 0 and they stay in both losses; the same here.
* **Batches.** The original shuffles through a 10,000-user buffer and drops the last partial batch (in training
  and validation). Here: a full permutation of the training users per epoch (``numpy`` generator seeded with
  ``[seed, epoch]``), the last partial batch used, and every validation / test user ranked.
* **Optimisers.** The critic's Adam continues from the critic phase into the actor phase; the actor's Adam
  starts fresh at the actor phase (in the original its slots are new variables of the RaCT run). Adam's
  defaults (betas 0.9, 0.999, eps 1e-8) are TF's.
* **Best state.** The original saves the model whenever the validation NDCG@100 improves, starting from
  ``-inf`` in the RaCT run, so the unchanged actor of its first critic epoch is the first best. Here the unchanged
  actor is evaluated once (it does not change in the critic phase) as epoch 0, and every actor epoch after it.
* **Critic initialisation.** Xavier-uniform weights and zero biases (``slim.fully_connected``'s defaults),
  from a generator seeded with ``seed``.
* **Mask mode** is the actor run's own (``dropout`` by default, the original's); training runs in float32
  whatever precision the actor was trained in.

Run folder (``--out``)
----------------------
``config.json`` (``model: "ract"``, the actor run, the actor's configuration, the digest of its best weights, the
split's fingerprint, the RaCT settings), ``checkpoint.pt`` (after every epoch, :func:`models.io.save_verified`:
actor, critic, both optimiser states, the generator state, epoch, history), ``metrics.jsonl`` (one line per
epoch, numbered from 1: epochs ``1 .. critic_epochs`` are the critic phase, ``phase`` says which), ``best.pt``
(the actor of the best validation epoch; epoch 0 = the unchanged actor), and at the end ``test_metrics.json``
(RaCT's test metrics at the top level as ``models.evaluate`` writes them, ``model: "ract"``, the actor's under
``actor``, the paired per-user difference RaCT - actor under ``difference``) and ``test_per_user.csv`` (the format
of ``models.evaluate``), so ``python -m models.compare ACTOR_RUN OUT`` compares the two user by user. A killed
run continues from its checkpoint with ``--resume``; a folder holding anything else is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.cli import OneLineParser, end_process, guarded
from models.lazy import lazy_import

torch = lazy_import("torch")
sp = lazy_import("scipy.sparse")

if TYPE_CHECKING:
    from models.batches import SparseBatch
    from models.split import Split
    from models.vae import MultiVAE

NDCG_K = 100
"""The critic's target is NDCG at this cut-off (the original's ``evaluation_metric='NDCG'``)."""
CRITIC_HIDDEN = (100, 100, 10)
CRITIC_L2 = 1e-4
FEATURE_EPS = 1e-3
FEATURES = ("n_seen", "n_unseen", "nll")
VALIDATION_METRICS = ("ndcg@100", "recall@20", "recall@50")
SAFE_ON_RESUME = ("actor_epochs", "eval_batch_size")
"""Settings a resumed run may change: they do not change what the finished epochs computed."""


@dataclass(frozen=True)
class RactSettings:
    """The settings of a RaCT run (defaults: the authors' ML-20M script, see the module docstring)."""

    critic_epochs: int = 50
    actor_epochs: int = 50
    lr_critic: float = 1e-4
    lr_actor: float = 2e-6
    rho: float = 0.5
    batch_size: int = 500
    seed: int = 0
    eval_batch_size: int = 1000

    def validate(self) -> None:
        """One line (``ValueError``) naming the option of an impossible setting."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise ValueError(f"{_flag(f.name)} must be an integer, got {value!r}")
            if f.type == "float" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise ValueError(f"{_flag(f.name)} must be a finite number, got {value!r}")
        checks = [
            (0.0 < self.rho <= 1.0, "rho", "must lie in (0, 1] (keep probability of the input mask)"),
            (self.critic_epochs >= 0, "critic_epochs", "must be >= 0"),
            (self.actor_epochs >= 0, "actor_epochs", "must be >= 0"),
            (self.lr_critic > 0, "lr_critic", "must be > 0"),
            (self.lr_actor > 0, "lr_actor", "must be > 0"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.seed >= 0, "seed", "must be >= 0"),
            (self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{_flag(name)} {rule}, got {getattr(self, name)}")

    @property
    def epochs(self) -> int:
        return self.critic_epochs + self.actor_epochs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


SETTING_NAMES = tuple(f.name for f in fields(RactSettings))


# ------------------------------------------------------------------------------------------------ the critic
_CRITIC_CLASS: Any = None


def _critic_class() -> type:
    """The :class:`Critic` module class, defined on first use so that importing this module loads no torch."""
    global _CRITIC_CLASS
    if _CRITIC_CLASS is not None:
        return _CRITIC_CLASS
    from torch import nn

    class Critic(nn.Module):
        """``c = sigmoid(MLP((phi - m) / sqrt(v + 1e-3)))``: the MLP ``3 -> 100 -> 100 -> 10 -> 1`` with ReLU between
        layers; ``m`` and ``v`` (buffers ``feature_mean``, ``feature_var``) are fixed feature statistics.

        Parameters
        ----------
        hidden : sequence of int
            Hidden widths (default ``(100, 100, 10)``).
        generator : torch.Generator, optional
            Source of the Xavier-uniform initial weights (biases start at 0).
        """

        def __init__(self, hidden: tuple[int, ...] = CRITIC_HIDDEN, generator: torch.Generator | None = None):
            super().__init__()
            dims = [len(FEATURES), *hidden, 1]
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
            for layer in self.layers:
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                nn.init.zeros_(layer.bias)
            self.register_buffer("feature_mean", torch.zeros(len(FEATURES)))
            self.register_buffer("feature_var", torch.ones(len(FEATURES)))

        def standardise(self, features: torch.Tensor) -> torch.Tensor:
            return (features - self.feature_mean) / torch.sqrt(self.feature_var + FEATURE_EPS)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            """``(B, 3)`` features -> ``(B,)`` predicted NDCG@100 in (0, 1)."""
            h = self.standardise(features)
            for layer in self.layers[:-1]:
                h = torch.relu(layer(h))
            return torch.sigmoid(self.layers[-1](h)).squeeze(-1)

        def penalty(self) -> torch.Tensor:
            """``sum ||theta||^2`` over every weight and bias (the original regularises both)."""
            return sum((p.pow(2).sum() for p in self.parameters()), torch.zeros((), device=self.feature_mean.device))

    _CRITIC_CLASS = Critic
    return Critic


def __getattr__(name: str) -> Any:  # PEP 562: ``from models.ract import Critic`` builds the class then
    if name == "Critic":
        return _critic_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_critic(seed: int = 0) -> Any:
    """A new :class:`Critic` initialised from ``torch.Generator().manual_seed(seed)``."""
    return _critic_class()(generator=torch.Generator().manual_seed(int(seed)))


# ------------------------------------------------------------------------------------ features and targets
def ract_features(actor: MultiVAE, batch: SparseBatch, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's features of a masked batch and the actor's logits.

    Parameters
    ----------
    actor : models.vae.MultiVAE
    batch : SparseBatch
        Masked input (kept entries in ``indices`` / ``offsets``) with the full histories as targets.
    eps : torch.Tensor, shape (B, latent_dim)
        Standard normal noise: ``z = mu + eps * exp(logvar / 2)``.

    Returns
    -------
    features : torch.Tensor, shape (B, 3)
        ``[|H0_u|, |H1_u|, NLL_u]`` (seen items, masked-out items, ``-sum_{i in S_u} log softmax(f_u)_i``);
        differentiable in the actor's parameters through ``NLL_u``.
    logits : torch.Tensor, shape (B, I)
    """
    from models.vae import multinomial_nll

    mu, logvar = actor.encode(batch)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = actor.decode(z)
    nll = multinomial_nll(logits, batch)
    ends = torch.cat([batch.offsets[1:], batch.offsets.new_tensor([batch.indices.numel()])])
    n_seen = (ends - batch.offsets).to(logits.dtype)
    n_unseen = batch.counts.to(logits.dtype) - n_seen
    return torch.stack([n_seen, n_unseen, nll], dim=1), logits


def kept_and_dropped(rows: sp.csr_matrix, batch: SparseBatch) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The kept (``H0``) and masked-out (``H1``) items of every row of a batch built by
    :func:`models.batches.make_batch` from ``rows``, as binary CSR matrices of the shape of ``rows``."""
    offsets = batch.offsets.cpu().numpy().astype(np.int64)
    indices = batch.indices.cpu().numpy().astype(np.int64)
    indptr = np.append(offsets, indices.size)
    kept = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=rows.shape)
    full = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    full.data[:] = 1.0
    dropped = full - kept
    dropped.eliminate_zeros()
    if dropped.nnz and dropped.data.min() < 0:
        raise ValueError("the batch keeps an item that is not in its row: it was not built from these rows")
    return kept, dropped


def critic_targets(
    logits: torch.Tensor | np.ndarray, kept: sp.csr_matrix, dropped: sp.csr_matrix, k: int = NDCG_K
) -> np.ndarray:
    """NDCG@k of each row's ranking of ``logits`` with the kept items excluded, relevant = the masked-out items.

    Parameters
    ----------
    logits : (B, I) scores
    kept, dropped : scipy.sparse.csr_matrix, shape (B, I)
        ``H0`` (ranked at ``-inf``) and ``H1`` (the relevant items) of each row.
    k : int

    Returns
    -------
    numpy.ndarray, shape (B,), float64
        0 for a row with nothing masked out (the original floors the IDCG at 0.1, giving 0 there too).
    """
    from models.evaluation import ranking_metrics, top_k_items

    n_rows, n_items = kept.shape
    targets = np.zeros(n_rows, dtype=np.float64)
    rows = np.flatnonzero(np.diff(dropped.indptr) > 0)
    if rows.size:
        t = torch.as_tensor(logits).detach()
        scores = t[torch.as_tensor(rows, device=t.device)]
        topk = top_k_items(scores, kept[rows], min(k, n_items))
        targets[rows] = ranking_metrics(topk, dropped[rows], f"ndcg@{k}")[f"ndcg@{k}"]
    return targets


def ract_step(
    actor: MultiVAE,
    critic: Any,
    batch: SparseBatch,
    eps: torch.Tensor,
    kept: sp.csr_matrix,
    dropped: sp.csr_matrix,
    *,
    critic_optimizer: torch.optim.Optimizer | None = None,
    actor_optimizer: torch.optim.Optimizer | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """One RaCT update on one batch: both gradients from one forward pass, then the optimisers that are given step.

    ``critic_optimizer`` given: a step on ``L_C = mean (y - c)^2 + 1e-4 ||theta_C||^2 / batch_size`` (features
    detached). ``actor_optimizer`` given: a step on ``L_A = -mean c`` (the critic before its own step, as the
    original's simultaneous ops). Neither: only the statistics. Returns sums over the batch's users of the squared
    error, the target, the critic's output and the NLL feature, and ``n``.
    """
    train_actor = actor_optimizer is not None
    with torch.set_grad_enabled(train_actor):
        features, logits = ract_features(actor, batch, eps)
    target = torch.from_numpy(critic_targets(logits.detach(), kept, dropped)).to(features.device, features.dtype)
    predicted = critic(features.detach())
    squared = (target - predicted).pow(2)
    grads: list[tuple[list, tuple]] = []
    if critic_optimizer is not None:
        params = list(critic.parameters())
        loss = squared.mean() + CRITIC_L2 * critic.penalty() / (batch_size or batch.n_rows)
        grads.append((params, torch.autograd.grad(loss, params)))
    if train_actor:
        params = list(actor.parameters())
        grads.append((params, torch.autograd.grad(-critic(features).mean(), params)))
    for params, gs in grads:  # every gradient is taken before any parameter moves
        for p, g in zip(params, gs, strict=True):
            p.grad = g
    for optimizer in (critic_optimizer, actor_optimizer):
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {
        "squared_error": float(squared.detach().sum()),
        "target": float(target.sum()),
        "critic": float(predicted.detach().sum()),
        "nll": float(features[:, 2].detach().sum()),
        "n": int(batch.n_rows),
    }


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def _batches(train: sp.csr_matrix, order: np.ndarray, batch_size: int):
    for b0 in range(0, order.size, batch_size):
        yield train[order[b0 : b0 + batch_size]]


def feature_statistics(
    actor: MultiVAE,
    train: sp.csr_matrix,
    *,
    rho: float,
    mode: str,
    batch_size: int,
    generator: torch.Generator,
    order: np.ndarray,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) variance of each feature over one pass of the frozen actor on ``train`` (masks and
    noise drawn as in training, from ``generator``)."""
    from models.batches import make_batch

    total = torch.zeros(len(FEATURES), dtype=torch.float64)
    square = torch.zeros(len(FEATURES), dtype=torch.float64)
    n = 0
    for rows in _batches(train, order, batch_size):
        batch = make_batch(rows, rho=rho, mode=mode, generator=generator)
        eps = torch.randn(batch.n_rows, actor.latent_dim, generator=generator)
        with torch.no_grad():
            features, _ = ract_features(actor, batch.to(device), eps.to(device))
        f = features.double().cpu()
        total += f.sum(0)
        square += f.pow(2).sum(0)
        n += batch.n_rows
    mean = total / max(n, 1)
    var = (square / max(n, 1) - mean.pow(2)).clamp(min=0.0)
    return mean.float(), var.float()


# ------------------------------------------------------------------------------------------- the training
@dataclass
class RactState:
    """Where a RaCT run stands; epochs numbered from 1, ``best_epoch`` 0 = the unchanged actor."""

    epoch: int = 0
    updates: int = 0
    initial_value: float = -math.inf
    best_value: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    test: dict | None = None


LOCK_NAME = ".lock"
OWN_FILES = ("config.json", "checkpoint.pt", "metrics.jsonl", "best.pt", "test_metrics.json", "test_per_user.csv")


def read_ract_config(out: Path) -> dict | None:
    """The ``config.json`` of a RaCT folder, None when there is none; one line when it holds something else."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{out}: its config.json is not valid JSON; choose another --out") from None
    if not isinstance(doc, dict) or doc.get("model") != "ract" or not isinstance(doc.get("settings"), dict):
        what = f"a {doc.get('model')} run" if isinstance(doc, dict) and doc.get("model") else "something else"
        raise ValueError(f"{out} holds {what}, not a RaCT run; choose another --out")
    return doc


def _identity(doc: dict) -> dict:
    """What must match for a folder to continue a run: everything but the settings safe to change on resume."""
    settings = {k: v for k, v in doc["settings"].items() if k not in SAFE_ON_RESUME}
    keys = ("actor_run", "actor_config", "actor_digest", "split_fingerprint")
    return {**{k: doc.get(k) for k in keys}, "settings": settings}


def _differences(a: dict, b: dict) -> str:
    parts = []
    for key in a:
        if key == "settings":
            parts += [
                f"{_flag(k)} {a[key].get(k)!r} -> {b[key].get(k)!r}" for k in a[key] if a[key].get(k) != b[key].get(k)
            ]
        elif a[key] != b.get(key):
            parts.append(key if key != "actor_run" else f"actor run {a[key]} -> {b.get(key)}")
    return ", ".join(parts)


def _check_folder(out: Path, resume: bool) -> dict | None:
    """Refuse a folder holding anything but this kind of run before any work; its RaCT config when it has one."""
    doc = read_ract_config(out)
    if doc is None:
        if resume:
            raise ValueError(f"{out}: no RaCT run to resume there; start it without --resume")
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file; --out takes a folder")
        names = [p.name for p in out.iterdir()] if out.exists() else []
        stray = sorted(n for n in names if n != LOCK_NAME and not n.endswith(".tmp"))
        if stray:
            raise ValueError(f"{out} is not empty and holds no RaCT run ({', '.join(stray[:3])}); choose another --out")
        return None
    if (out / "checkpoint.pt").exists() and not resume:
        done = len(_read_lines(out / "metrics.jsonl"))
        raise ValueError(
            f"{out} already holds a RaCT run ({done} epoch(s) done); pass --resume to continue it, or choose another "
            "--out"
        )
    return doc


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_actor(actor_run: Path) -> Any:
    """The configuration of a run folder that can be RaCT's actor; one line for a folder that is no run or holds
    another model. Reads ``config.json`` only (no torch)."""
    from models.trainer import read_run_config

    config, _ = read_run_config(actor_run)
    model = config.resolved().model
    if model != "multvae":
        raise ValueError(
            f"{actor_run} holds a {model} run; RaCT fine-tunes a Multi-VAE actor (--model multvae): its critic reads "
            "the NLL of a sampled latent z = mu + eps sigma of the VAE's encoder-decoder, which Multi-DAE (no "
            "posterior) and RecVAE (alternating encoder/decoder training with a composite prior) are not"
        )
    return config


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam with TF's defaults (betas 0.9, 0.999, eps 1e-8); the fused kernel, as :func:`models.trainer.adam`."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def train_ract(
    actor_run: Path,
    out: Path,
    *,
    critic_epochs: int = RactSettings.critic_epochs,
    actor_epochs: int = RactSettings.actor_epochs,
    lr_critic: float = RactSettings.lr_critic,
    lr_actor: float = RactSettings.lr_actor,
    rho: float = RactSettings.rho,
    batch_size: int = RactSettings.batch_size,
    seed: int = RactSettings.seed,
    eval_batch_size: int = RactSettings.eval_batch_size,
    resume: bool = False,
    split: Split | None = None,
    device: str = "auto",
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> RactState:
    """Fine-tune the best epoch of the Multi-VAE run ``actor_run`` with RaCT and write the folder ``out``.

    Parameters
    ----------
    actor_run : Path
        A ``models.train`` run folder of a Multi-VAE.
    out : Path
        The RaCT folder (module docstring), written by this process only (``out/.lock``).
    critic_epochs, actor_epochs, lr_critic, lr_actor, rho, batch_size, seed : see :class:`RactSettings`.
    eval_batch_size : int
        Users ranked at once in validation and test.
    resume : bool
        Continue ``out`` from its checkpoint; only :data:`SAFE_ON_RESUME` may differ from its settings.
    split : Split, optional
        The split the actor was trained on (tests); by default rebuilt from the actor's configuration.
    device : str
    progress : bool
        A tqdm bar over the epochs.
    stop_after_epochs : int, optional
        Return after this many epochs of this call (an interrupted run, for tests).

    Returns
    -------
    RactState
        With ``test`` (the content of ``test_metrics.json``) once every epoch is done.

    Raises
    ------
    ValueError
        Impossible settings, an actor that is no Multi-VAE run, an output folder holding something else or
        another run (one line each); :class:`models.io.DamagedFile` for a damaged checkpoint.
    """
    from models.io import FolderLock

    settings = RactSettings(critic_epochs, actor_epochs, lr_critic, lr_actor, rho, batch_size, seed, eval_batch_size)
    settings.validate()
    actor_run, out = Path(actor_run), Path(out)
    check_actor(actor_run)
    if out.resolve() == actor_run.resolve():
        raise ValueError(f"{out} is the actor's run folder; choose another --out for the RaCT run")
    _check_folder(out, resume)  # refused before the lock creates anything; checked again under it
    with FolderLock(out / LOCK_NAME, f"RaCT folder {out}"):
        return _train(actor_run, out, settings, resume, split, device, progress, stop_after_epochs)


def _train(
    actor_run: Path,
    out: Path,
    s: RactSettings,
    resume: bool,
    split: Split | None,
    device_name: str,
    progress: bool,
    stop_after_epochs: int | None,
) -> RactState:
    from tqdm.auto import tqdm

    from models.batches import make_batch
    from models.evaluation import evaluate
    from models.io import (
        DamagedFile,
        atomic_write_bytes,
        atomic_write_json,
        content_digest,
        load_verified,
        resolve_device,
        save_verified,
    )
    from models.trainer import load_run_split, load_trained, split_fingerprint

    stored = _check_folder(out, resume)
    device = resolve_device(device_name)
    actor, actor_config = load_trained(actor_run, device)
    c = actor_config.resolved()
    if split is None:
        split = load_run_split(actor_config, progress=progress)
    if split.n_items != actor.n_items:
        raise ValueError(f"the split has {split.n_items} items but the actor of {actor_run} scores {actor.n_items}")
    doc = {
        "model": "ract",
        "actor_run": str(actor_run.resolve()),
        "actor_config": c.to_json(),
        "actor_digest": content_digest({k: v for k, v in actor.state_dict().items()}),
        "split_fingerprint": split_fingerprint(split),
        "settings": asdict(s),
        "constants": {
            "features": list(FEATURES),
            "critic_hidden": list(CRITIC_HIDDEN),
            "critic_l2": CRITIC_L2,
            "feature_eps": FEATURE_EPS,
            "ndcg_k": NDCG_K,
            "mask_mode": c.mask_mode,
        },
    }
    if stored is not None and not (out / "checkpoint.pt").exists():
        print(f"note: {out}: the run there never finished an epoch; starting it again from epoch 1", file=sys.stderr)
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        stored, resume = None, False
    if stored is not None:
        diff = _differences(_identity(stored), _identity(doc))
        if diff:
            raise ValueError(
                f"{out} holds another RaCT run ({diff}); choose another --out, or resume it with its own settings"
            )
    for tmp in out.glob(".*.tmp") if out.exists() else ():
        tmp.unlink(missing_ok=True)

    train = _binary(split.train)
    n_train = train.shape[0]
    critic = make_critic(s.seed).to(device)
    critic_optimizer = _adam(list(critic.parameters()), s.lr_critic)
    actor_optimizer = _adam(list(actor.parameters()), s.lr_actor)
    generator = torch.Generator().manual_seed(s.seed)
    state = RactState()
    ckpt_path = out / "checkpoint.pt"

    def validate() -> dict:
        ev = evaluate(actor.score, split.validation, metrics=VALIDATION_METRICS, batch_size=s.eval_batch_size)
        return {f"val_{m}": v["mean"] for m, v in ev.summary().items()}

    def save_best(epoch: int, value: float) -> None:
        save_verified(
            out / "best.pt",
            {"actor": actor.state_dict(), "critic": critic.state_dict(), "epoch": epoch, "val_ndcg@100": value},
        )

    if resume:
        fix = "restore it, or delete the RaCT folder and run again"
        ckpt = load_verified(ckpt_path, map_location=device, fix=fix)
        try:
            actor.load_state_dict(ckpt["actor"])
            critic.load_state_dict(ckpt["critic"])
            critic_optimizer.load_state_dict(ckpt["critic_optimizer"])
            actor_optimizer.load_state_dict(ckpt["actor_optimizer"])
            generator.set_state(ckpt["generator"])
            state = RactState(
                ckpt["epoch"],
                ckpt["updates"],
                ckpt["initial_value"],
                ckpt["best_value"],
                ckpt["best_epoch"],
                list(ckpt["history"]),
            )
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:120]
            raise DamagedFile(f"{ckpt_path}: does not fit this RaCT run ({reason}); {fix}") from None
        derived = (stored or {}).get("derived", {})
        if stored is not None and stored["settings"] != doc["settings"]:
            before = stored["settings"]
            changes = {k: [before.get(k), v] for k, v in doc["settings"].items() if before.get(k) != v}
            derived.setdefault("changes_on_resume", []).append({"at_epoch": state.epoch, **changes})
        atomic_write_json(out / "config.json", {**doc, "derived": derived})
    else:
        out.mkdir(parents=True, exist_ok=True)
        initial = validate()
        derived = {
            "n_items": split.n_items,
            "train_users": n_train,
            "updates_per_epoch": math.ceil(n_train / s.batch_size),
            "actor_validation": initial,
            "torch": torch.__version__,
        }
        atomic_write_json(out / "config.json", {**doc, "derived": derived})
        state.initial_value = state.best_value = initial["val_ndcg@100"]
        if s.rho == 1.0 and s.epochs:
            print("note: --rho 1 masks nothing out: every critic target is 0", file=sys.stderr)
        if s.epochs:
            order = np.random.default_rng([s.seed, 0]).permutation(n_train)
            mean, var = feature_statistics(
                actor,
                train,
                rho=s.rho,
                mode=c.mask_mode,
                batch_size=s.batch_size,
                generator=generator,
                order=order,
                device=device,
            )
            critic.feature_mean.copy_(mean.to(device))
            critic.feature_var.copy_(var.to(device))
        save_best(0, state.best_value)
    atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state.history).encode())

    bar = tqdm(
        range(state.epoch, s.epochs),
        desc=f"ract {c.dataset}",
        disable=not progress,
        initial=state.epoch,
        total=s.epochs,
    )
    done = 0
    for epoch in bar:
        start = time.perf_counter()
        phase = "critic" if epoch < s.critic_epochs else "actor"
        sums = {"squared_error": 0.0, "target": 0.0, "critic": 0.0, "nll": 0.0, "n": 0}
        order = np.random.default_rng([s.seed, epoch + 1]).permutation(n_train)
        for rows in _batches(train, order, s.batch_size):
            batch = make_batch(rows, rho=s.rho, mode=c.mask_mode, generator=generator)
            eps = torch.randn(batch.n_rows, actor.latent_dim, generator=generator)
            kept, dropped = kept_and_dropped(rows, batch)
            step = ract_step(
                actor,
                critic,
                batch.to(device),
                eps.to(device),
                kept,
                dropped,
                critic_optimizer=critic_optimizer,
                actor_optimizer=actor_optimizer if phase == "actor" else None,
                batch_size=s.batch_size,
            )
            state.updates += 1
            for key in sums:
                sums[key] += step[key]
        n = max(sums["n"], 1)
        record: dict = {
            "epoch": epoch + 1,
            "phase": phase,
            "updates": state.updates,
            "critic_mse": sums["squared_error"] / n,
            "target_ndcg": sums["target"] / n,
            "critic_mean": sums["critic"] / n,
            "nll": sums["nll"] / n,
        }
        if phase == "actor":
            record.update(validate())
            value = record["val_ndcg@100"]
            if value > state.best_value:
                state.best_value, state.best_epoch = value, epoch + 1
                save_best(epoch + 1, value)
        record["seconds"] = round(time.perf_counter() - start, 3)
        state.epoch = epoch + 1
        state.history.append(record)
        save_verified(
            ckpt_path,
            {
                "actor": actor.state_dict(),
                "critic": critic.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict(),
                "actor_optimizer": actor_optimizer.state_dict(),
                "generator": generator.get_state(),
                "epoch": state.epoch,
                "updates": state.updates,
                "initial_value": state.initial_value,
                "best_value": state.best_value,
                "best_epoch": state.best_epoch,
                "history": state.history,
            },
        )
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = record.get("val_ndcg@100", state.initial_value)
        bar.set_postfix(phase=phase, critic_mse=f"{record['critic_mse']:.4f}", val_ndcg=f"{shown:.4f}")
        done += 1
        if stop_after_epochs is not None and done >= stop_after_epochs:
            break
    bar.close()
    if state.epoch >= s.epochs:
        state.test = _test(actor_run, out, actor, split, s, state, device)
    return state


def _test(actor_run: Path, out: Path, actor: MultiVAE, split: Split, s: RactSettings, state: RactState, device) -> dict:
    """Test metrics of the best epoch beside the actor's, written as ``test_metrics.json`` and ``test_per_user.csv``."""
    from models.evaluate import Scored, per_user_path
    from models.evaluation import DEFAULT_METRICS, evaluate, paired_difference
    from models.io import atomic_write_bytes, atomic_write_json, load_verified
    from models.trainer import load_trained

    best = load_verified(out / "best.pt", map_location=device, fix="delete the RaCT folder and run again")
    actor.load_state_dict(best["actor"])
    ours = evaluate(actor.score, split.test, batch_size=s.eval_batch_size)
    original, _ = load_trained(actor_run, device)
    theirs = evaluate(original.score, split.test, batch_size=s.eval_batch_size)
    popularity = np.asarray(split.train.sum(axis=0), dtype=np.float64).ravel()
    scored = Scored(ours, split.test.users, popularity, int(split.train.shape[0]))
    epoch = int(best["epoch"])
    table = ours.per_user_table(split.test.users)
    table.insert(3, "epoch", epoch)
    atomic_write_bytes(per_user_path(out, "test"), table.to_csv(index=False).encode())
    doc = {
        **ours.to_dict(),
        "beyond_accuracy": scored.beyond_accuracy(),
        "model": "ract",
        "run": {
            "evaluated_epoch": epoch,
            "epochs_done": state.epoch,
            "epochs_planned": s.epochs,
            "finished": True,
            "val_ndcg@100": float(best["val_ndcg@100"]),
        },
        "actor": {**theirs.to_dict(), "run": str(actor_run), "val_ndcg@100": state.initial_value},
        "difference": {m: paired_difference(ours, theirs, m) for m in DEFAULT_METRICS},
        "settings": asdict(s),
    }
    atomic_write_json(out / "test_metrics.json", doc)
    return doc


# ------------------------------------------------------------------------------------------------------ CLI
def load_ract(out: Path, device: str | torch.device = "cpu") -> MultiVAE:
    """The fine-tuned actor of a RaCT folder's best validation epoch (``best.pt``, read verified with
    ``weights_only=True``), in evaluation mode; its architecture is the actor run's."""
    from models.io import load_verified
    from models.trainer import load_trained

    doc = read_ract_config(out)
    if doc is None or not (Path(out) / "best.pt").is_file():
        raise ValueError(f"{out}: no finished RaCT epoch there; run python -m models.ract first")
    actor, _ = load_trained(Path(doc["actor_run"]), device)
    best = load_verified(Path(out) / "best.pt", map_location=device, fix="delete the RaCT folder and run again")
    actor.load_state_dict(best["actor"])
    return actor.eval()


def default_out(actor_run: Path, settings: dict) -> Path:
    """``out/ract/ract-RUN-NAME``, plus 8 hex digits of the settings that differ from the defaults, if any (the
    ``ract-`` prefix gives ``models.compare RUN OUT`` two distinct labels)."""
    defaults = asdict(RactSettings())
    changed = {k: v for k, v in settings.items() if k in defaults and v != defaults[k] and k not in SAFE_ON_RESUME}
    name = "ract-" + (Path(actor_run).resolve().name or "run")
    if changed:
        name += "-" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return Path("out") / "ract" / name


def build_parser() -> OneLineParser:
    d = RactSettings()
    p = OneLineParser(
        prog="python -m models.ract",
        description="RaCT (Lobel et al., ICLR 2020): fine-tune a trained Multi-VAE toward NDCG@100 with a learned "
        "critic; writes validation metrics per epoch, the best actor, and its test metrics beside the actor's.",
        epilog="Defaults are the authors' ML-20M setting (samlobel/RaCT_CF): epochs from scripts/main_vae.py "
        "(n_epochs_ac_only=50, n_epochs_pred_and_ac=50, BATCH_SIZE=500), learning rates from utils/models.py "
        "MultiVAE (lr_critic=1e-4, lr_ac=2e-6), keep probability from utils/training.py (keep_prob 0.5). Compare "
        "afterwards: python -m models.compare ACTOR_RUN OUT.",
    )
    p.add_argument("actor_run", type=Path, help="run folder of a Multi-VAE written by models.train (its best epoch)")
    p.add_argument(
        "--out", type=Path, help="RaCT folder (default out/ract/ract-RUN-NAME[-HASH of non-default settings])"
    )
    p.add_argument("--critic-epochs", type=int, help=f"critic pre-training epochs, actor frozen ({d.critic_epochs})")
    p.add_argument("--actor-epochs", type=int, help=f"epochs of actor and critic updates ({d.actor_epochs})")
    p.add_argument("--lr-critic", type=float, help=f"Adam rate of the critic ({d.lr_critic:g})")
    p.add_argument("--lr-actor", type=float, help=f"Adam rate of the actor in the RaCT phase ({d.lr_actor:g})")
    p.add_argument("--rho", type=float, help=f"keep probability of the training input mask ({d.rho:g})")
    p.add_argument("--batch-size", type=int, help=f"training users per update ({d.batch_size})")
    p.add_argument("--eval-batch-size", type=int, help=f"users ranked at once in evaluation ({d.eval_batch_size})")
    p.add_argument("--seed", type=int, help=f"seed of the critic, the order, the masks and the noise ({d.seed})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out; unset options take its settings")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_numbers(p: OneLineParser, args: argparse.Namespace) -> None:
    rules = {
        "rho": (lambda v: 0 < v <= 1, "must lie in (0, 1] (keep probability of the input mask)"),
        "critic_epochs": (lambda v: v >= 0, "must be an integer >= 0"),
        "actor_epochs": (lambda v: v >= 0, "must be an integer >= 0"),
        "lr_critic": (lambda v: v > 0, "must be a number > 0"),
        "lr_actor": (lambda v: v > 0, "must be a number > 0"),
        "batch_size": (lambda v: v >= 1, "must be an integer >= 1"),
        "eval_batch_size": (lambda v: v >= 1, "must be an integer >= 1"),
        "seed": (lambda v: v >= 0, "must be an integer >= 0"),
    }
    for name, (ok, rule) in rules.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and ok(value)):
            p.error(f"{_flag(name)} {rule}, got {value:g}")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check_numbers(p, args)
    return guarded(lambda: _run(args), what=f"RaCT fine-tuning of {args.actor_run}")


def _run(args: argparse.Namespace) -> int:
    check_actor(args.actor_run)  # a folder that is no Multi-VAE run is one line before torch loads
    given = {k: getattr(args, k) for k in SETTING_NAMES if getattr(args, k) is not None}
    out = args.out
    if out is None:
        out = default_out(args.actor_run, {**asdict(RactSettings()), **given})
    settings = asdict(RactSettings())
    if args.resume:
        stored = read_ract_config(out)
        if stored is None:
            raise ValueError(f"{out}: no RaCT run to resume there; start it without --resume")
        settings.update({k: v for k, v in stored["settings"].items() if k in settings})
    settings.update(given)
    RactSettings(**settings).validate()
    from models.io import resolve_device

    resolve_device(args.device)
    state = train_ract(
        args.actor_run,
        out,
        **settings,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
    )
    doc = state.test
    print(f"RaCT of {args.actor_run} in {out}")
    print(
        f"validation NDCG@100: actor {state.initial_value:.4f}, best {state.best_value:.4f} at epoch "
        f"{state.best_epoch} (0 = the actor unchanged; epochs 1-{settings['critic_epochs']} train the critic only)"
    )
    if doc is not None:
        print(f"test users: {doc['ndcg@100']['n']}")
        print(f"{'metric':<10} {'actor':>8} {'RaCT':>8}  RaCT - actor (paired SE)")
        for m, d in doc["difference"].items():
            print(f"{m:<10} {doc['actor'][m]['mean']:>8.4f} {doc[m]['mean']:>8.4f}  {d['mean']:+.4f} ({d['se']:.4f})")
        print(
            f"wrote {out / 'test_metrics.json'} and test_per_user.csv; compare: python -m models.compare "
            f"{args.actor_run} {out}"
        )
    return 0


if __name__ == "__main__":
    end_process(main())
