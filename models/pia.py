"""PIA: Personalized Item Alignment (PAPER.md section 6), a training-only regulariser.

For a user with full history ``S`` (positives), masked input ``x_h`` and posterior
``q(z | x_h) = N(mu, diag sigma^2)``, with learnable item anchors ``e_i`` (rows of ``E``, shape (I, d))::

    L_A = (1 / |S|) sum_{i in S} E_{z ~ q} ||z - e_i||^2
        = ||mu - ebar||^2 + tr Sigma + (1 / |S|) sum_{i in S} ||e_i - ebar||^2      (Proposition 3.1)

with ``ebar = (1 / |S|) sum_{i in S} e_i``. The objective is ``L_VAE + lambda_A * L_A`` (minimised), averaged
over the users of a batch. ``S`` is the **full** history while ``mu, Sigma`` come from the **masked** input, so
masked-out items still pull. Inference never touches the anchors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.batches import SparseBatch


def alignment_loss(
    mu: torch.Tensor, logvar: torch.Tensor | None, anchors: torch.Tensor, batch: SparseBatch
) -> torch.Tensor:
    """Closed-form ``L_A`` per user (Proposition 3.1).

    Parameters
    ----------
    mu : torch.Tensor, shape (B, d)
    logvar : torch.Tensor or None, shape (B, d)
        None for a deterministic code (``tr Sigma = 0``).
    anchors : torch.Tensor, shape (I, d)
    batch : SparseBatch
        Its ``target_rows`` / ``target_cols`` list the full-history positives.

    Returns
    -------
    torch.Tensor, shape (B,)
        ``L_A`` of each user (0 for a user without positives).
    """
    # Means over each user's positives as EmbeddingBag reductions: no (nnz, d) gather is materialised and the
    # backward pass into the anchors is a sparse accumulation (an index_add over nnz x d is several times slower).
    offsets = torch.cumsum(batch.counts, 0) - batch.counts
    # One bag over [e_i, ||e_i||^2]: the mean anchor and the mean squared norm in a single pass (the backward of an
    # embedding bag sorts the indices, so two bags cost two sorts).
    table = torch.cat([anchors, anchors.pow(2).sum(dim=1, keepdim=True)], dim=1)
    means = F.embedding_bag(batch.target_cols, table, offsets, mode="mean")
    ebar, mean_sq = means[:, :-1], means[:, -1]
    # (1/|S|) sum ||e_i - ebar||^2 = mean ||e_i||^2 - ||ebar||^2 (clamped: rounding may go slightly negative)
    spread = (mean_sq - ebar.pow(2).sum(dim=1)).clamp(min=0.0)
    trace = logvar.exp().sum(dim=1) if logvar is not None else torch.zeros_like(spread)
    loss = (mu - ebar).pow(2).sum(dim=1) + trace + spread
    return torch.where(batch.counts > 0, loss, torch.zeros_like(loss))


def alignment_loss_monte_carlo(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    anchors: torch.Tensor,
    batch: SparseBatch,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sampling estimate of ``L_A`` from its definition (for checking :func:`alignment_loss`)."""
    eps = torch.randn(n_samples, *mu.shape, generator=generator, dtype=mu.dtype)
    z = mu + eps * torch.exp(0.5 * logvar)  # (S, B, d)
    diff = z[:, batch.target_rows, :] - anchors[batch.target_cols][None]  # (S, nnz, d)
    per_pos = diff.pow(2).sum(dim=2).mean(dim=0)  # (nnz,)
    total = torch.zeros(batch.n_rows, dtype=mu.dtype).index_add(0, batch.target_rows, per_pos)
    return total / batch.counts.clamp(min=1).to(mu.dtype)


class ItemAnchors(nn.Module):
    """The anchor matrix ``E`` (I x d), separate from the decoder (default) or tied to a linear decoder.

    Tying makes ``e_i`` the decoder's output weight row of item ``i``; it needs a decoder whose output
    layer takes ``z`` directly (RecVAE's linear decoder), since Multi-VAE's output layer has 600 inputs.
    Separate anchors start at ``N(0, init_std^2)``.
    """

    def __init__(self, n_items: int, latent_dim: int, init_std: float = 0.01, tied_to: nn.Linear | None = None):
        super().__init__()
        if tied_to is not None:
            if tied_to.weight.shape != (n_items, latent_dim):
                raise ValueError(
                    f"anchors can only be tied to a decoder layer of shape ({n_items}, {latent_dim}) = (items, "
                    f"latent), got {tuple(tied_to.weight.shape)}: use separate anchors (--pia-anchors separate)."
                )
            self._tied = [tied_to]  # a list keeps the decoder out of this module's parameters
            self.weight_param = None
        else:
            self._tied = []
            self.weight_param = nn.Parameter(torch.randn(n_items, latent_dim) * init_std)

    @property
    def tied(self) -> bool:
        return bool(self._tied)

    @property
    def weight(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied else self.weight_param


@dataclass(frozen=True)
class LambdaSchedule:
    """``lambda_A`` per epoch: constant, or a linear warm-up from 0 over ``warmup_epochs`` epochs.

    ``value(epoch)`` for 0-based epochs: ``lambda_A * min(1, (epoch + 1) / warmup_epochs)``.
    """

    lambda_a: float
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if not self.lambda_a >= 0:
            raise ValueError(f"lambda_A must be >= 0, got {self.lambda_a}")
        if self.warmup_epochs < 0:
            raise ValueError(f"the lambda_A warm-up must be >= 0 epochs, got {self.warmup_epochs}")

    def value(self, epoch: int) -> float:
        if self.warmup_epochs == 0:
            return self.lambda_a
        return self.lambda_a * min(1.0, (epoch + 1) / self.warmup_epochs)
