"""Posteriors as the jobs read them (``analyses.encoding``), checked against the models' own sparse batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from analyses.encoding import encode_posteriors, mask_generator, mu_encoder
from geometry.neighbourhoods import encode_masked
from models.batches import make_batch
from models.vae import MultiVAE


def _model_and_rows(n_items: int = 30, n_users: int = 12) -> tuple[MultiVAE, sp.csr_matrix]:
    torch.manual_seed(0)
    model = MultiVAE(n_items, (8,), 3).eval()
    rng = np.random.default_rng(0)
    dense = (rng.random((n_users, n_items)) < 0.3).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # at least one positive per user
    return model, sp.csr_matrix(dense)


def test_encode_posteriors_masks_like_training():
    model, X = _model_and_rows()
    model = model.double()
    clean_mu, clean_lv = encode_posteriors(model, X, batch_size=5)  # several batches, concatenated in order
    assert clean_mu.shape == (1, 12, 3) and clean_lv.shape == (1, 12, 3)
    with torch.no_grad():
        batch = make_batch(X, rho=1.0)
        batch.weights = batch.weights.double()
        direct_mu, direct_lv = model.encode(batch)
    np.testing.assert_allclose(clean_mu[0], direct_mu.numpy(), rtol=1e-12)
    np.testing.assert_allclose(clean_lv[0], direct_lv.numpy(), rtol=1e-12)
    mu, _ = encode_posteriors(model, X, rho=0.5, draws=4, generator=torch.Generator().manual_seed(0))
    assert mu.shape == (4, 12, 3)
    assert not np.allclose(mu[0], mu[1]) and not np.allclose(mu[0], clean_mu[0])
    # the masks are the trainer's: the same generator state gives the same draw through make_batch
    again, _ = encode_posteriors(model, X, rho=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = make_batch(X, rho=0.5, generator=torch.Generator().manual_seed(0))
        batch.weights = batch.weights.double()
        direct_mu, _ = model.encode(batch)
    np.testing.assert_allclose(again[0], direct_mu.numpy(), rtol=1e-12)
    with pytest.raises(ValueError):
        encode_posteriors(model, X, rho=0.0)


def test_mu_encoder_matches_the_models_own_batches():
    model, X = _model_and_rows()
    with torch.no_grad():
        direct, _ = model.encode(make_batch(X, rho=1.0))
    via = encode_masked(mu_encoder(model), X, 1.0)
    np.testing.assert_allclose(via, direct.numpy(), rtol=1e-5, atol=1e-6)
    # bernoulli mode: x ⊙ b, then the L2 normalisation the models' batches apply after the mask
    keep = np.random.default_rng(0).random(X.nnz) < 0.5
    kept = sp.csr_matrix((X.data * keep, X.indices, X.indptr), shape=X.shape)
    kept.eliminate_zeros()
    with torch.no_grad():
        direct, _ = model.encode(make_batch(kept, rho=1.0))
        via = mu_encoder(model, "bernoulli")(torch.from_numpy(kept.toarray()))
    np.testing.assert_allclose(via.numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        mu_encoder(model, "other")


def test_mask_generator_streams_are_reproducible_and_distinct():
    a = torch.rand(5, generator=mask_generator(1, 2))
    assert torch.equal(a, torch.rand(5, generator=mask_generator(1, 2)))
    assert not torch.equal(a, torch.rand(5, generator=mask_generator(1, 3)))
    assert not torch.equal(a, torch.rand(5, generator=mask_generator(2, 2)))
