"""RecVAE (Shenbin et al. 2020) with a sparse first layer and a frozen-encoder composite prior.

Reference: I. Shenbin, A. Alekseev, E. Tutubalina, V. Malykh, S. I. Nikolenko, "RecVAE: a New Variational
Autoencoder for Top-N Recommendations with Implicit Feedback", WSDM 2020, and the authors' public code
(``ilya-shenbin/RecVAE``, ``model.py`` / ``run.py``), which this module follows; written independently.

Encoder (input ``x``: the L2-normalised, masked history, given as an EmbeddingBag batch)::

    h_1 = LN_1(swish(W_1 x + b_1))
    h_k = LN_k(swish(W_k h_{k-1} + b_k + h_1 + ... + h_{k-1})),   k = 2 .. n_layers (5)
    mu = W_mu h_L + b_mu,   logvar = W_lv h_L + b_lv

``swish(a) = a * sigmoid(a)``; the residual sum is *inside* the activation, LayerNorms (eps 0.1, affine)
come last, as in the reference. Decoder: ``logits = W_d z + b_d`` (one linear layer latent -> items).

Loss per user ``u`` (minimised; the trainer averages over the batch)::

    nll_u = -sum_i x_ui log softmax(W_d z + b_d)_i          (full history x_u)
    kl_u  = log q(z | x_h) - log p(z | x_u),   z = mu + eps * sigma   (one-sample Monte Carlo)
    L_u   = nll_u + w_u * kl_u,   w_u = gamma * |x_u|  (gamma > 0)  or  beta  (gamma = 0)

Composite prior, with ``(w_1, w_2, w_3) = (3/20, 3/4, 1/10)`` and the posterior ``q_old`` of a frozen copy of
the encoder taken at the last :meth:`RecVAE.update_prior`, evaluated on the user's *clean* full history::

    p(z | x) = w_1 N(z | 0, I) + w_2 q_old(z | x) + w_3 N(z | 0, e^10 I)

The reference code evaluates this mixture **per latent dimension** and sums the log-densities over the
dimensions, ``log p(z | x) = sum_j logsumexp_k [log w_k + log N(z_j | m_kj, v_kj)]``, i.e. a product of
one-dimensional mixtures, whereas the paper writes one mixture of multivariate Gaussians,
``logsumexp_k [log w_k + sum_j log N(z_j | m_kj, v_kj)]``. ``prior_form="per_dimension"`` (default) is the
code that produced the published numbers; ``prior_form="joint"`` is the paper's formula.

Initialisation: the reference uses PyTorch's default ``nn.Linear`` initialisation for every linear layer
(weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) and the default LayerNorm (weight 1, bias 0);
the same is done here, including the sparse first layer (fan-in = ``n_items``). Before the first
:meth:`RecVAE.update_prior` the frozen encoder is an independently initialised random encoder, as in the
reference. Training (PROTOCOL.md): per outer epoch, 3 encoder epochs (dropout 0.5, encoder optimiser only),
``update_prior()``, then 1 decoder epoch (clean input, decoder optimiser only; the KL has no decoder
gradient); Adam lr 5e-4 for each part; ``z`` is sampled in both phases and ``z = mu`` at evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from models.batches import SparseBatch
from models.precision import full_precision
from models.vae import AutoencoderBase, Forward, SparseInput, multinomial_nll

PRIOR_FORMS = ("per_dimension", "joint")
_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise ``log N(z | mu, e^logvar) = -(logvar + log 2 pi + (z - mu)^2 / e^logvar) / 2``.

    All arguments broadcast against each other; the result has their broadcast shape (no sum over dims).
    """
    return -0.5 * (logvar + _LOG_2PI + (z - mu).pow(2) * torch.exp(-logvar))


def composite_log_prior(
    z: torch.Tensor,
    post_mu: torch.Tensor,
    post_logvar: torch.Tensor,
    mixture_weights: Sequence[float] = (3 / 20, 3 / 4, 1 / 10),
    uniform_logvar: float = 10.0,
    prior_form: str = "per_dimension",
) -> torch.Tensor:
    """Log-density of RecVAE's composite prior at ``z``, summed over latent dimensions.

    Components: ``N(0, I)``, ``N(post_mu, diag e^post_logvar)`` (the frozen encoder's posterior) and
    ``N(0, e^uniform_logvar I)``, with weights ``mixture_weights``.

    - ``"per_dimension"`` (reference code): ``sum_j logsumexp_k [log w_k + log N(z_j | m_kj, v_kj)]``;
    - ``"joint"`` (paper): ``logsumexp_k [log w_k + sum_j log N(z_j | m_kj, v_kj)]``.

    Parameters
    ----------
    z, post_mu, post_logvar : torch.Tensor, shape (B, d)
    mixture_weights : sequence of 3 floats
        Non-negative, summing to 1 (a zero weight drops its component).
    uniform_logvar : float
        Log-variance of the broad component (10 in the reference).
    prior_form : {"per_dimension", "joint"}

    Returns
    -------
    torch.Tensor, shape (B,)
    """
    weights = _check_mixture_weights(mixture_weights)
    if prior_form not in PRIOR_FORMS:
        raise ValueError(f"prior_form must be one of {PRIOR_FORMS}, got {prior_form!r}")
    if z.shape != post_mu.shape or z.shape != post_logvar.shape or z.dim() != 2:
        raise ValueError(
            f"z, post_mu and post_logvar must all have shape (B, d); got {tuple(z.shape)}, "
            f"{tuple(post_mu.shape)}, {tuple(post_logvar.shape)}"
        )
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    components = torch.stack(
        [
            gaussian_log_density(z, zero, zero),
            gaussian_log_density(z, post_mu, post_logvar),
            gaussian_log_density(z, zero, zero + uniform_logvar),
        ],
        dim=-1,
    )  # (B, d, 3)
    # log 0 = -inf drops a component; logsumexp and its gradient handle -inf entries exactly.
    log_w = torch.log(torch.tensor(weights, dtype=z.dtype, device=z.device))
    if prior_form == "per_dimension":
        return torch.logsumexp(components + log_w, dim=-1).sum(dim=1)
    return torch.logsumexp(components.sum(dim=1) + log_w, dim=-1)


def _check_mixture_weights(mixture_weights: Sequence[float]) -> tuple[float, float, float]:
    weights = tuple(float(w) for w in mixture_weights)
    if len(weights) != 3 or not all(math.isfinite(w) and w >= 0.0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(
            "mixture_weights must be 3 non-negative numbers summing to 1 (standard normal, previous "
            f"posterior, broad normal), e.g. (3/20, 3/4, 1/10); got {tuple(mixture_weights)!r}"
        )
    return weights  # type: ignore[return-value]


def clean_input(batch: SparseBatch) -> SparseBatch:
    """The unmasked, L2-normalised full history of ``batch`` as an EmbeddingBag batch (weights 1/sqrt(n_u)).

    Targets and counts are carried over unchanged; a user without positives gets an empty bag (zero input).
    """
    rows, cols = batch.target_rows, batch.target_cols
    if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):
        # EmbeddingBag needs each row's entries contiguous and in row order.
        order = torch.argsort(rows, stable=True)
        rows, cols = rows[order], cols[order]
    counts = batch.counts
    offsets = torch.cumsum(counts, 0) - counts
    weights = counts.clamp(min=1).to(torch.float32).rsqrt()[rows]
    return SparseBatch(cols, offsets, weights, rows, cols, counts, batch.n_rows)


class RecVAEEncoder(nn.Module):
    """RecVAE's encoder: sparse first layer, densely connected swish + LayerNorm blocks, mu/logvar heads."""

    def __init__(self, n_items: int, hidden: int, latent_dim: int, n_layers: int, ln_eps: float) -> None:
        super().__init__()
        self.input = SparseInput(n_items, hidden)
        # PyTorch's default Linear(n_items, hidden) init; computed by hand because the EmbeddingBag stores
        # the matrix transposed, so init.kaiming_uniform_ would take the wrong fan-in.
        bound = 1.0 / math.sqrt(n_items)
        nn.init.uniform_(self.input.weight, -bound, bound)
        nn.init.uniform_(self.input.bias, -bound, bound)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden, eps=ln_eps) for _ in range(n_layers))
        self.fc_mu = nn.Linear(hidden, latent_dim)
        self.fc_logvar = nn.Linear(hidden, latent_dim)

    def forward(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norms[0](F.silu(self.input(batch)))
        total = h  # h_1 + ... + h_{k-1}
        for layer, norm in zip(self.layers, self.norms[1:], strict=True):
            h = norm(F.silu(layer(h) + total))
            total = total + h
        return self.fc_mu(h), self.fc_logvar(h)


def _freeze_as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` (in place) into a persistent buffer.

    Buffers stay in ``state_dict()`` under the same names and follow ``.to(device)``, but are neither in
    ``parameters()`` nor touched by autograd, which is what a frozen copy must be.
    """
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, param.detach().clone())
    return module


class RecVAE(AutoencoderBase):
    """RecVAE: dense residual swish/LayerNorm encoder, linear decoder, composite prior (see module docstring).

    Parameters
    ----------
    n_items : int
    hidden : int
        Width of the dense layers (600).
    latent_dim : int
        200 in the reference.
    n_layers : int
        Number of dense blocks (5).
    ln_eps : float
        LayerNorm epsilon (0.1).
    gamma : float
        KL weight per positive: ``w_u = gamma * |x_u|``; 0 switches to the constant ``beta`` of
        :meth:`kl_weights`.
    mixture_weights : 3 floats
        Weights of ``N(0, I)``, the frozen posterior and ``N(0, e^uniform_logvar I)``.
    uniform_logvar : float
        Log-variance of the broad component (10).
    prior_form : {"per_dimension", "joint"}
        Mixture per latent dimension (reference code, default) or over the whole vector (paper).

    Attributes
    ----------
    encoder : RecVAEEncoder
        The trained encoder.
    prior_encoder : RecVAEEncoder
        Frozen copy (all tensors are buffers: in ``state_dict()``, not in ``parameters()``).
    decoder_output : nn.Linear
        ``latent_dim -> n_items``, weight (n_items, latent_dim); PIA anchors may be tied to it.
    """

    def __init__(
        self,
        n_items: int,
        hidden: int = 600,
        latent_dim: int = 200,
        n_layers: int = 5,
        ln_eps: float = 0.1,
        gamma: float = 0.005,
        mixture_weights: Sequence[float] = (3 / 20, 3 / 4, 1 / 10),
        uniform_logvar: float = 10.0,
        prior_form: str = "per_dimension",
    ) -> None:
        super().__init__()
        for name, value in (("n_items", n_items), ("hidden", hidden), ("latent_dim", latent_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1 (5 in RecVAE), got {n_layers!r}")
        if not (math.isfinite(ln_eps) and ln_eps > 0):
            raise ValueError(f"ln_eps must be a positive number (0.1 in RecVAE), got {ln_eps!r}")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be >= 0 (0.005 in RecVAE; 0 = constant beta), got {gamma!r}")
        if not math.isfinite(uniform_logvar):
            raise ValueError(f"uniform_logvar must be finite (10 in RecVAE), got {uniform_logvar!r}")
        if prior_form not in PRIOR_FORMS:
            raise ValueError(f"prior_form must be one of {PRIOR_FORMS}, got {prior_form!r}")
        self.n_items, self.latent_dim = int(n_items), int(latent_dim)
        self.gamma = float(gamma)
        self.mixture_weights = _check_mixture_weights(mixture_weights)
        self.uniform_logvar = float(uniform_logvar)
        self.prior_form = prior_form
        self.encoder = RecVAEEncoder(self.n_items, int(hidden), self.latent_dim, int(n_layers), float(ln_eps))
        # Independently initialised, as the reference's encoder_old before its first update.
        self.prior_encoder = _freeze_as_buffers(
            RecVAEEncoder(self.n_items, int(hidden), self.latent_dim, int(n_layers), float(ln_eps))
        )
        self.decoder_output = nn.Linear(self.latent_dim, self.n_items)

    # -- the two halves -------------------------------------------------------------------------------------

    def encode(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)``, each (B, latent_dim), of the (already normalised, masked) input."""
        return self.encoder(batch)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_items) of a code ``z`` (B, latent_dim)."""
        return self.decoder_output(z)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder optimiser: sparse input layer, dense layers, LayerNorms, heads."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the decoder optimiser: the output layer."""
        return list(self.decoder_output.parameters())

    # -- composite prior ------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_prior(self) -> None:
        """Copy the current encoder into the frozen prior encoder (after each encoder phase)."""
        self.prior_encoder.load_state_dict(self.encoder.state_dict())

    @torch.no_grad()
    def prior_posterior(self, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the frozen encoder on the clean full history of ``batch``."""
        return self.prior_encoder(clean_input(batch))

    def log_prior(self, batch: SparseBatch, z: torch.Tensor) -> torch.Tensor:
        """``log p(z | x_u)`` (B,) under the composite prior; differentiable in ``z`` only."""
        post_mu, post_logvar = (full_precision(t) for t in self.prior_posterior(batch))
        return composite_log_prior(z, post_mu, post_logvar, self.mixture_weights, self.uniform_logvar, self.prior_form)

    # -- training -------------------------------------------------------------------------------------------

    def forward_train(self, batch: SparseBatch, eps: torch.Tensor, compute_kl: bool = True) -> Forward:
        """One training pass with ``z = mu + eps * sigma``; ``eps`` (B, d) standard normal, drawn by the caller.

        Returns per-user ``nll`` (over the full history) and the one-sample Monte Carlo ``kl``
        ``log q(z | x_h) - log p(z | x_u)`` (summed over dims; it can be negative for a single draw).
        ``compute_kl=False`` skips the prior encoder and returns zeros (the decoder phase, where the KL
        has no gradient w.r.t. the decoder).
        """
        mu, logvar = self.encode(batch)
        mu, logvar = full_precision(mu), full_precision(logvar)  # the KL and the prior in float32 under autocast
        if eps.shape != mu.shape:
            raise ValueError(f"eps must have the posterior's shape {tuple(mu.shape)}, got {tuple(eps.shape)}")
        z = mu + eps * torch.exp(0.5 * logvar)
        nll = multinomial_nll(self.decode(z), batch)
        if compute_kl:
            kl = gaussian_log_density(z, mu, logvar).sum(dim=1) - self.log_prior(batch, z)
        else:
            kl = torch.zeros_like(nll)
        return Forward(nll, kl, mu, logvar)

    def kl_weights(self, batch: SparseBatch, beta: float) -> torch.Tensor:
        """Per-user KL weight (B,): ``gamma * |x_u|`` if ``gamma > 0``, else the constant ``beta``."""
        if self.gamma > 0:
            return self.gamma * batch.counts.to(torch.float32)
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0 when gamma = 0, got {beta!r}")
        return torch.full((batch.n_rows,), float(beta), device=batch.counts.device)

    def extra_repr(self) -> str:
        return (
            f"gamma={self.gamma}, mixture_weights={self.mixture_weights}, "
            f"uniform_logvar={self.uniform_logvar}, prior_form={self.prior_form!r}"
        )


__all__ = [
    "PRIOR_FORMS",
    "RecVAE",
    "RecVAEEncoder",
    "clean_input",
    "composite_log_prior",
    "gaussian_log_density",
]
