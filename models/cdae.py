"""CDAE, the collaborative denoising auto-encoder (Wu, DuBois, Zheng and Ester 2016), with a sparse first layer.

Architecture ``[I-K-I]`` with a user node (the paper's eq. 1-2)::

    z_u = sigmoid(W^T y~_u + V_u + b),        y^_u = sigmoid(W'^T z_u + b'),

``y~_u`` the corrupted binary history: every positive dropped with probability ``q = 1 - rho`` and the kept ones
scaled by ``1 / rho`` (the paper's unbiased corruption, ``delta = 1 / (1 - q)``); ``V_u`` (K,) one learned vector per
training user. The loss is the logistic (binary cross-entropy) loss over **all** items, summed per user::

    l_u = -sum_i [y_ui log y^_ui + (1 - y_ui) log(1 - y^_ui)]
        = sum_i softplus(s_ui) - sum_{i in S_u} s_ui,      s_u = W'^T z_u + b' (the logits),

plus ``lambda sum ||W||^2`` over the weight matrices and the user vectors (the trainer's ``--weight-decay``; the
paper's regulariser also covers the biases, which the trainer leaves out for every model). The
paper samples negatives to save time; the full sum costs the same ``(B, I)`` pass as Multi-VAE's softmax here and is
the exact objective, so nothing is sampled.

**Strong generalization.** Held-out users were never training users, so they have no ``V_u``: at validation and
test their user node is zero (``z_u = sigmoid(W^T y_u + b)``), as strong-generalization reproductions of CDAE do
(Liang et al. 2018 compare against it this way). Training users' vectors are used in training only.

The first layer is an :class:`torch.nn.EmbeddingBag` over the kept items, as for Multi-VAE: the trainer's batches
carry the L2-normalised input of :func:`geometry.masking.mask_sparse_values` (``dropout`` mode:
``b_i / (rho sqrt(n_u))``), so CDAE multiplies that sum by ``sqrt(n_u)`` to read the unnormalised
``b_i / rho`` of the paper (exact: the sum is linear). Hence CDAE takes ``--mask dropout`` only.

Defaults (:data:`models.trainer.MODEL_DEFAULTS`): ``K = --latent`` (200, as Multi-DAE; the paper's main table uses
K = 50: ``--latent 50``), sigmoid hidden and output (the paper's best-reported mapping with the logistic loss),
``rho = 0.5``, Adam at ``lr = 1e-3``, ``lambda = 0.01``, 200 epochs, batches of 500 users.

Reference: Y. Wu, C. DuBois, A. X. Zheng, M. Ester, "Collaborative Denoising Auto-Encoders for Top-N Recommender
Systems", WSDM 2016.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.batches import SparseBatch
from models.precision import full_precision
from models.vae import AutoencoderBase, Forward, SparseInput, _init_linear


def logistic_nll(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """``-sum_i [x_ui log sigmoid(s_ui) + (1 - x_ui) log(1 - sigmoid(s_ui))]`` per user, shape (B,).

    Written as ``sum_i softplus(s_ui) - sum_{i in S_u} s_ui`` (the same value: ``-log sigmoid(s) = softplus(-s)``
    and ``softplus(-s) = softplus(s) - s``), so only the positives need indexing. Float32 under bf16 autocast.
    """
    logits = full_precision(logits)
    return F.softplus(logits).sum(dim=-1) - batch.target_sum(logits)


class CDAE(AutoencoderBase):
    """Collaborative denoising auto-encoder ``[I-K-I]`` with a user node for each training user.

    Parameters
    ----------
    n_items : int
    n_users : int
        Training users (rows of ``split.train``); one user vector each.
    latent_dim : int
        K, the hidden width.

    Attributes
    ----------
    users : nn.Embedding, (n_users, K)
        ``V``; Xavier-uniform like the other weights (the paper initialises all parameters at random).
    """

    def __init__(self, n_items: int, n_users: int, latent_dim: int = 200) -> None:
        super().__init__()
        if n_users < 1:
            raise ValueError(f"CDAE needs at least one training user, got {n_users}")
        self.n_items, self.n_users, self.latent_dim = n_items, n_users, latent_dim
        self.input = SparseInput(n_items, latent_dim)
        self.users = nn.Embedding(n_users, latent_dim)
        nn.init.xavier_uniform_(self.users.weight)
        self.output = nn.Linear(latent_dim, n_items)
        _init_linear(self.output.weight, self.output.bias)

    def encode(self, batch: SparseBatch) -> tuple[torch.Tensor, None]:
        """``z = sigmoid(sqrt(n_u) x_h W + b + V_u)``: ``sqrt(n_u)`` undoes the batch's L2 normalisation; ``V_u`` is
        zero for rows without a training user (``batch.users`` None: held-out users)."""
        summed = self.input.bag(batch.indices, batch.offsets, per_sample_weights=batch.weights)
        pre = summed * batch.counts.to(summed.dtype).sqrt().unsqueeze(1) + self.input.bias
        if batch.users is not None:
            pre = pre + self.users(batch.users)
        return torch.sigmoid(pre), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(z)

    def forward_train(self, batch: SparseBatch, eps: torch.Tensor | None = None, compute_kl: bool = True) -> Forward:
        """One training pass: the logistic loss of every item; no KL, no noise (``eps`` is ignored)."""
        if batch.users is None:
            raise ValueError("CDAE trains on rows of training users: the batch must carry their indices (users)")
        code, _ = self.encode(batch)
        code = full_precision(code)
        return Forward(
            logistic_nll(self.decode(code), batch), torch.zeros(batch.n_rows, device=code.device), code, None
        )
