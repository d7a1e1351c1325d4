"""Multi-VAE / Multi-DAE building blocks against dense reference computations."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.batches import make_batch
from models.vae import MultiDAE, MultiVAE, multinomial_nll


def _rows(n_rows: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    x = sp.random(n_rows, n_items, density=density, random_state=seed, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    return x


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(2, 40), st.floats(0.05, 0.9), st.integers(0, 10_000))
def test_multinomial_nll_equals_dense_log_softmax(n_rows, n_items, density, seed):
    x = _rows(n_rows, n_items, density, seed)
    logits = torch.randn(n_rows, n_items, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    dense = -(torch.log_softmax(logits, -1) * torch.from_numpy(x.toarray()).double()).sum(1)
    torch.testing.assert_close(multinomial_nll(logits, make_batch(x)), dense)


def test_sparse_first_layer_equals_dense_normalised_input():
    x = _rows(9, 30, 0.3, 1).tolil()
    x[3] = 0  # an empty row must not produce NaN
    x = x.tocsr()
    x.eliminate_zeros()
    model = MultiVAE(30, (16,), 4)
    h_sparse = model.input(make_batch(x))
    dense = torch.from_numpy(x.toarray())
    norm = dense.norm(dim=1, keepdim=True).clamp(min=1e-12)
    h_dense = (dense / norm) @ model.input.weight + model.input.bias
    torch.testing.assert_close(h_sparse, h_dense)
    assert torch.isfinite(h_sparse).all()


def test_vae_kl_and_scoring_use_the_reference_formulas():
    x = _rows(6, 25, 0.3, 2)
    model = MultiVAE(25, (16,), 4)
    batch = make_batch(x)
    mu, logvar = model.encode(batch)
    fwd = model.forward_train(batch, torch.zeros(6, 4))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    torch.testing.assert_close(fwd.kl, torch.distributions.kl_divergence(q, p).sum(1))  # summed over dims
    # eps = 0 gives z = mu, which is what scoring uses (no sampling at prediction): same likelihood.
    torch.testing.assert_close(fwd.nll, multinomial_nll(model.score(x), batch))
    # scores are the decoder's logits at the posterior mean of the clean input, computed layer by layer here
    h = torch.tanh(model.input(batch))
    for layer in model.encoder[:-1]:
        h = torch.tanh(layer(h))
    mean = model.encoder[-1](h)[:, :4]
    torch.testing.assert_close(mu, mean)
    z = mean
    for i, layer in enumerate(model.decoder):
        z = layer(z) if i == len(model.decoder) - 1 else torch.tanh(layer(z))
    torch.testing.assert_close(model.score(x), z)


def test_dae_has_tanh_hidden_layer_and_no_kl():
    x = _rows(5, 20, 0.3, 3)
    model = MultiDAE(20, (), 8)
    batch = make_batch(x)
    code, logvar = model.encode(batch)
    assert logvar is None and code.shape == (5, 8)
    out_layer = model.decoder[-1]
    torch.testing.assert_close(model.decode(code), out_layer(torch.tanh(code)))
    assert float(model.forward_train(batch).kl.abs().sum()) == 0.0
    # weight_penalty covers weights, not biases
    want = sum(float(p.detach().pow(2).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
    assert abs(float(model.weight_penalty().detach()) - want) <= 1e-5 * want


def test_batch_shard_equals_batch_of_the_shard_rows():
    x = _rows(10, 30, 0.3, 4)
    gen = torch.Generator().manual_seed(0)
    full = make_batch(x, rho=0.5, generator=gen)
    shard = full.rows(3, 7)
    ref = make_batch(x[3:7], rho=1.0)
    # same targets (full histories) as a batch made of those rows
    assert torch.equal(shard.target_cols, ref.target_cols) and torch.equal(shard.target_rows, ref.target_rows)
    assert torch.equal(shard.counts, ref.counts)
    # the kept input entries of the shard are exactly those of rows 3..6 in the full batch
    lo, hi = int(full.offsets[3]), int(full.offsets[7])
    assert torch.equal(shard.indices, full.indices[lo:hi])
    assert shard.n_rows == 4 and int(shard.offsets[0]) == 0


def test_reparameterised_sample_is_mu_plus_eps_times_sigma():
    """The training likelihood is the decoder's at z = mu + eps * exp(logvar / 2) for the caller's eps."""
    x = _rows(6, 25, 0.3, 5)
    model = MultiVAE(25, (16,), 4)
    batch = make_batch(x)
    eps = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.encoder[-1].bias[4:] += 0.7  # sigma well away from 1, so that exp(logvar) and exp(logvar / 2) differ
        mu, logvar = model.encode(batch)
        fwd = model.forward_train(batch, eps)
        z = mu + eps * torch.sqrt(torch.exp(logvar))
        torch.testing.assert_close(fwd.nll, multinomial_nll(model.decode(z), batch))
        assert not torch.allclose(fwd.nll, multinomial_nll(model.decode(mu), batch))


def test_default_architectures_are_the_references():
    """Multi-VAE [I-600-200-600-I] (the encoder's last layer outputs mu and logvar: 2 x 200) and Multi-DAE
    [I-200-I], as built without arguments."""
    vae, dae = MultiVAE(30), MultiDAE(30)
    assert tuple(vae.input.weight.shape) == (30, 600) and vae.latent_dim == dae.latent_dim == 200
    assert [tuple(layer.weight.shape) for layer in vae.encoder] == [(400, 600)]
    assert [tuple(layer.weight.shape) for layer in vae.decoder] == [(600, 200), (30, 600)]
    assert tuple(dae.input.weight.shape) == (30, 200) and len(dae.encoder) == 0
    assert [tuple(layer.weight.shape) for layer in dae.decoder] == [(30, 200)]


def test_dae_with_hidden_layers_puts_tanh_between_them():
    x = _rows(5, 20, 0.3, 6)
    model = MultiDAE(20, (12,), 8)
    batch = make_batch(x)
    code, _ = model.encode(batch)
    torch.testing.assert_close(code, model.encoder[0](torch.tanh(model.input(batch))))
