"""Posteriors of trained models as the analysis jobs read them: sparse rows in, ``mu`` and ``logvar`` out.

Two entry points for the two ways the jobs mask the input:

* :func:`encode_posteriors` masks CSR rows exactly as the trainer does (:func:`models.batches.make_batch`) and
  returns ``(mu, logvar)`` of every row under several mask draws (:mod:`analyses.local_vs_global`,
  :mod:`analyses.kl_budget`, :mod:`analyses.sharing_radius`);
* :func:`mu_encoder` wraps a model as the ``encode_mu`` callable of :mod:`geometry.neighbourhoods`, which masks
  dense batches itself (:mod:`analyses.pia_geometry`, :mod:`analyses.cohorts`).

:func:`mask_generator` gives one reproducible mask stream per quantity, so that two models analysed with the same
seed see the same masks and their per-user differences are paired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from geometry.masking import validate_rho
from models.batches import SparseBatch, make_batch
from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")

if TYPE_CHECKING:  # nn.Module subclasses: torch loads where the work starts
    from models.vae import AutoencoderBase


def encode_posteriors(
    model: AutoencoderBase,
    X: sp.spmatrix,
    *,
    rho: float = 1.0,
    mode: str = "dropout",
    draws: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior parameters of every row of ``X`` under ``draws`` mask draws, as the model sees them in training.

    The encoder input is :func:`models.batches.make_batch` of the rows (L2 normalisation, then the mask of
    keep probability ``rho``, :func:`geometry.masking.mask_sparse_values`); ``rho = 1`` is the clean input of
    evaluation. Runs in the model's dtype (use ``model.double()`` for float64 posteriors).

    Parameters
    ----------
    model : AutoencoderBase
        A VAE (Multi-VAE, RecVAE: ``encode(batch) -> (mu, logvar)``), in evaluation mode.
    X : scipy sparse matrix, shape (N, I)
        Histories, one row per user.
    rho : float
        Keep probability of the mask, in (0, 1].
    mode : {"dropout", "bernoulli"}
        Mask mode of :func:`models.batches.make_batch`.
    draws : int
        Independent mask draws of every row.
    generator : torch.Generator, optional
        Source of the masks (reproducible draws).
    batch_size : int
        Rows per encoder call.

    Returns
    -------
    mu, logvar : numpy.ndarray of float64, shape (draws, N, d)
    """
    rho = validate_rho(rho)
    param = next(model.parameters())
    X = sp.csr_matrix(X)
    n = X.shape[0]
    mus, lvs = [], []
    with torch.no_grad():
        for _ in range(draws):
            mu_d, lv_d = [], []
            for s in range(0, n, batch_size):
                batch = make_batch(X[s : s + batch_size], rho=rho, mode=mode, generator=generator)
                batch.weights = batch.weights.to(param.dtype)
                mu, logvar = model.encode(batch.to(param.device))
                mu_d.append(mu.double().cpu().numpy())
                lv_d.append(logvar.double().cpu().numpy())
            mus.append(np.concatenate(mu_d))
            lvs.append(np.concatenate(lv_d))
    return np.stack(mus), np.stack(lvs)


def mu_encoder(model: AutoencoderBase, mode: str = "dropout") -> Callable[[torch.Tensor], torch.Tensor]:
    """``encode_mu`` for :mod:`geometry.neighbourhoods`: a dense masked batch ``(B, I)`` -> posterior means ``(B, d)``.

    The geometry functions mask with :func:`geometry.masking.mask_input`; the models read a sparse batch whose
    values are the encoder input. In ``"dropout"`` mode ``mask_input`` already returns the model's input (rows
    L2-normalised, then ``b / rho``); in ``"bernoulli"`` mode it returns ``x ⊙ b``, which the models' batches
    L2-normalise after the mask, so this function does too. With ``rho = 1`` the means equal those of
    ``model.score`` (clean input, ``z = mu``).
    """
    if mode not in ("dropout", "bernoulli"):
        raise ValueError(f"mode must be 'dropout' or 'bernoulli', got {mode!r}")
    device = next(model.parameters()).device

    def encode(x: torch.Tensor) -> torch.Tensor:
        if mode == "bernoulli":
            x = torch.nn.functional.normalize(x, p=2.0, dim=1, eps=1e-12)
        rows, cols = x.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=x.shape[0])
        batch = SparseBatch(
            indices=cols,
            offsets=torch.cumsum(counts, 0) - counts,
            weights=x[rows, cols].float(),
            target_rows=rows,
            target_cols=cols,
            counts=counts,
            n_rows=int(x.shape[0]),
        )
        with torch.no_grad():
            mu, _ = model.encode(batch.to(device))
        return mu

    return encode


def mask_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for one quantity (``stream``) of one analysis ``seed``."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
