"""Multi-VAE and Multi-DAE (Liang et al. 2018), with a sparse first layer.

Architectures (PROTOCOL.md): Multi-VAE ``[I-600-200-600-I]``, tanh between layers and none on the outputs;
the last encoder layer emits ``2 x 200`` numbers, ``mu`` and ``logvar``. Multi-DAE ``[I-200-I]``, tanh. Weights
Xavier-uniform, biases truncated normal with std 0.001 (the reference initialisation). The input is the
L2-normalised history, masked as :func:`geometry.masking.mask_sparse_values` says; the first layer is an
``EmbeddingBag`` (sum of the weight rows of the kept items, times their values), i.e. ``x_h @ W_1`` without a
dense input.

Loss (minimised, means over the users of a batch)::

    L = -sum_i x_ui log softmax(f(z_u))_i + beta * KL(q(z | x_h,u) || N(0, I)) + lambda_wd * sum ||W||^2,

with the KL summed over latent dimensions, ``z = mu + eps * sigma``, ``eps ~ N(0, 1)`` while training and
``z = mu`` at evaluation. Multi-DAE has no KL, ``z`` is the hidden code, and ``lambda_wd = 0.01``
(the reference's ``2 x l2_regularizer(0.01)`` on weights only).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import scipy.sparse as sp
import torch
from torch import nn

from models.batches import SparseBatch, make_batch
from models.precision import full_precision


@dataclass
class Forward:
    """What one training forward pass produced."""

    nll: torch.Tensor  # (B,) -sum_i x_ui log pi_ui
    kl: torch.Tensor  # (B,) KL to the prior (zeros for a DAE)
    mu: torch.Tensor  # (B, d) posterior mean (DAE: the code)
    logvar: torch.Tensor | None  # (B, d) posterior log-variance (None for a DAE)


def _init_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    nn.init.xavier_uniform_(weight)
    if bias is not None:
        nn.init.trunc_normal_(bias, std=0.001, a=-0.002, b=0.002)


class SparseInput(nn.Module):
    """First layer ``x_h @ W + b`` for a sparse ``x_h`` (EmbeddingBag in sum mode); ``W`` is (I, H)."""

    def __init__(self, n_items: int, out_features: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_items, out_features, mode="sum")
        self.bias = nn.Parameter(torch.empty(out_features))
        # Xavier for a Linear(I, H): the same fan-in/fan-out whichever way the matrix is stored.
        _init_linear(self.bag.weight, self.bias)

    @property
    def weight(self) -> torch.Tensor:
        """(I, H): row i is item i's input weight vector."""
        return self.bag.weight

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        out = self.bag(batch.indices, batch.offsets, per_sample_weights=batch.weights)
        return out + self.bias


def _mlp(dims: Sequence[int]) -> nn.ModuleList:
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
    for layer in layers:
        _init_linear(layer.weight, layer.bias)
    return layers


def _run(layers: nn.ModuleList, h: torch.Tensor, first_done: bool = False) -> torch.Tensor:
    """tanh between layers, none after the last; ``first_done`` when ``h`` already passed a layer."""
    for layer in layers:
        h = layer(torch.tanh(h)) if first_done else layer(h)
        first_done = True
    return h


class AutoencoderBase(nn.Module):
    """Shared scoring logic: clean input (rho = 1), ``z = mu``, logits over all items."""

    latent_dim: int

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        """Logits for a batch of fold-in rows, clean input, ``z = mu`` (no sampling at prediction)."""
        device = next(self.parameters()).device
        mu, _ = self.encode(make_batch(fold_in, rho=1.0, device=device))
        return self.decode(mu)

    def kl_weights(self, batch: SparseBatch, beta: float) -> torch.Tensor:
        """Per-user weight of the KL term (B,): the annealed ``beta`` (RecVAE overrides it with ``gamma |x_u|``)."""
        return torch.full((batch.n_rows,), float(beta), device=batch.counts.device)

    def weight_penalty(self) -> torch.Tensor:
        """``sum ||W||^2`` over weight matrices (not biases), for the explicit L2 term."""
        return sum((p.pow(2).sum() for n, p in self.named_parameters() if n.endswith("weight")), torch.zeros(()))


def multinomial_nll(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """``-sum_i x_ui log softmax(logits_u)_i = |S_u| logsumexp(logits_u) - sum_{i in S_u} logits_ui`` per user.

    The right-hand form never materialises the ``(B, I)`` log-softmax (one pass fewer over the largest
    tensor of the step, forward and backward). Computed in float32 when the decoder ran under bf16 autocast.
    """
    logits = full_precision(logits)
    return batch.counts.to(logits.dtype) * torch.logsumexp(logits, dim=-1) - batch.target_sum(logits)


class MultiVAE(AutoencoderBase):
    """Multi-VAE with a multinomial likelihood.

    Parameters
    ----------
    n_items : int
    hidden : sequence of int
        Hidden widths of the encoder (mirrored in the decoder); default ``(600,)``.
    latent_dim : int
        200 in the reference.
    """

    def __init__(self, n_items: int, hidden: Sequence[int] = (600,), latent_dim: int = 200) -> None:
        super().__init__()
        hidden = tuple(hidden)
        self.n_items, self.latent_dim = n_items, latent_dim
        enc_dims = [*hidden, 2 * latent_dim]
        self.input = SparseInput(n_items, enc_dims[0])
        self.encoder = _mlp(enc_dims)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_items])

    def encode(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        h = _run(self.encoder, self.input(batch), first_done=True)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return _run(self.decoder, z)

    def forward_train(self, batch: SparseBatch, eps: torch.Tensor, compute_kl: bool = True) -> Forward:
        """One training pass; ``eps`` (B, d) standard normal noise drawn by the caller (seeded). The posterior and
        the KL are float32 under bf16 autocast too (:mod:`models.precision`)."""
        mu, logvar = self.encode(batch)
        mu, logvar = full_precision(mu), full_precision(logvar)
        z = mu + eps * torch.exp(0.5 * logvar)
        kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0).sum(dim=1) if compute_kl else torch.zeros_like(mu[:, 0])
        return Forward(multinomial_nll(self.decode(z), batch), kl, mu, logvar)


class MultiDAE(AutoencoderBase):
    """Multi-DAE: ``[I-200-I]`` with tanh, no KL; trained with input dropout and weight decay."""

    def __init__(self, n_items: int, hidden: Sequence[int] = (), latent_dim: int = 200) -> None:
        super().__init__()
        hidden = tuple(hidden)
        self.n_items, self.latent_dim = n_items, latent_dim
        enc_dims = [*hidden, latent_dim]
        self.input = SparseInput(n_items, enc_dims[0])
        self.encoder = _mlp(enc_dims)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_items])

    def encode(self, batch: SparseBatch) -> tuple[torch.Tensor, None]:
        return _run(self.encoder, self.input(batch), first_done=True), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        # tanh between the code and the output layer: the reference [I-200-I] has tanh after its hidden layer.
        return _run(self.decoder, z, first_done=True)

    def forward_train(self, batch: SparseBatch, eps: torch.Tensor | None = None, compute_kl: bool = True) -> Forward:
        code, _ = self.encode(batch)
        code = full_precision(code)
        return Forward(
            multinomial_nll(self.decode(code), batch), torch.zeros(batch.n_rows, device=code.device), code, None
        )
