"""RecVAE: architecture against a dense re-implementation, composite prior against scipy, Monte Carlo KL
against closed forms, the frozen prior encoder, the optimiser split, and a planted-block training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from torch.nn import functional as F

from models.batches import SparseBatch, make_batch
from models.pia import ItemAnchors
from models.recvae import RecVAE, clean_input, composite_log_prior, gaussian_log_density

N_ITEMS, HIDDEN, LATENT = 24, 16, 4


def _model(seed: int = 0, **kwargs) -> RecVAE:
    torch.manual_seed(seed)
    return RecVAE(N_ITEMS, hidden=HIDDEN, latent_dim=LATENT, **kwargs)


def _random_csr(n_rows: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_rows, n_items)) < density
    dense[np.arange(n_rows), rng.integers(0, n_items, n_rows)] = True  # no empty rows
    return sp.csr_matrix(dense.astype(np.float32))


def _masked_batch(full: sp.csr_matrix, kept: sp.csr_matrix, rho: float) -> SparseBatch:
    """Encoder input = the entries of ``kept`` (a subset of ``full``) with value 1 / (rho sqrt(n_full)),
    i.e. L2 normalisation then inverted dropout; targets = ``full``. Built here without the masking module."""
    full, kept = full.tocsr(), kept.tocsr()
    full.sort_indices()
    kept.sort_indices()
    n_full = np.diff(full.indptr)
    n_kept = np.diff(kept.indptr)
    row_of_kept = np.repeat(np.arange(kept.shape[0]), n_kept)
    weights = 1.0 / (rho * np.sqrt(np.maximum(n_full, 1)))[row_of_kept]
    return SparseBatch(
        indices=torch.from_numpy(kept.indices.astype(np.int64)),
        offsets=torch.from_numpy(kept.indptr[:-1].astype(np.int64)),
        weights=torch.from_numpy(weights.astype(np.float32)),
        target_rows=torch.from_numpy(np.repeat(np.arange(full.shape[0]), n_full).astype(np.int64)),
        target_cols=torch.from_numpy(full.indices.astype(np.int64)),
        counts=torch.from_numpy(n_full.astype(np.int64)),
        n_rows=int(full.shape[0]),
    )


def _dropout(full: sp.csr_matrix, rho: float, rng: np.random.Generator) -> sp.csr_matrix:
    coo = full.tocoo()
    keep = rng.random(coo.nnz) < rho
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=full.shape)


def _dense_reference_encode(model: RecVAE, X: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense re-statement of the reference encoder with the model's weights (no EmbeddingBag)."""
    enc = model.encoder
    x = torch.from_numpy(X.toarray()).float()
    x = x / x.pow(2).sum(dim=1, keepdim=True).sqrt()
    ln = [lambda a, n=n: F.layer_norm(a, (HIDDEN,), n.weight, n.bias, eps=0.1) for n in enc.norms]
    h = [ln[0](F.silu(x @ enc.input.weight + enc.input.bias))]
    for k, layer in enumerate(enc.layers, start=1):
        h.append(ln[k](F.silu(F.linear(h[-1], layer.weight, layer.bias) + sum(h))))
    return enc.fc_mu(h[-1]), enc.fc_logvar(h[-1])


# ------------------------------------------------------------------------------------------------------------
# Shapes, interface, parameter split, initialisation
# ------------------------------------------------------------------------------------------------------------


def test_shapes_and_tied_anchors() -> None:
    model = _model()
    batch = make_batch(_random_csr(7, N_ITEMS, 0.2, 1))
    mu, logvar = model.encode(batch)
    assert mu.shape == logvar.shape == (7, LATENT)
    assert model.decode(mu).shape == (7, N_ITEMS)
    fwd = model.forward_train(batch, torch.randn(7, LATENT))
    assert fwd.nll.shape == fwd.kl.shape == (7,)
    assert fwd.mu.shape == fwd.logvar.shape == (7, LATENT)
    assert bool((fwd.nll > 0).all())
    assert model.n_items == N_ITEMS and model.latent_dim == LATENT
    assert model.decoder_output.weight.shape == (N_ITEMS, LATENT)
    anchors = ItemAnchors(N_ITEMS, LATENT, tied_to=model.decoder_output)
    assert anchors.weight is model.decoder_output.weight
    assert model.score(_random_csr(3, N_ITEMS, 0.2, 2)).shape == (3, N_ITEMS)
    no_kl = model.forward_train(batch, torch.zeros(7, LATENT), compute_kl=False)
    assert torch.equal(no_kl.kl, torch.zeros(7))
    with pytest.raises(ValueError, match="eps"):
        model.forward_train(batch, torch.zeros(7, LATENT + 1))


def test_default_sizes_follow_the_reference() -> None:
    model = RecVAE(50)
    assert len(model.encoder.norms) == 5 and len(model.encoder.layers) == 4
    assert all(n.eps == 0.1 and n.normalized_shape == (600,) for n in model.encoder.norms)
    assert model.encoder.fc_mu.weight.shape == model.encoder.fc_logvar.weight.shape == (200, 600)
    assert model.encoder.input.weight.shape == (50, 600)
    assert model.mixture_weights == pytest.approx((0.15, 0.75, 0.1)) and model.gamma == 0.005
    assert model.uniform_logvar == 10.0 and model.prior_form == "per_dimension"
    assert len(RecVAE(50, n_layers=1).encoder.norms) == 1 and RecVAE(1, hidden=1, latent_dim=1).encoder.fc_mu


def test_parameter_split_is_disjoint_and_complete() -> None:
    model = _model()
    enc = {id(p) for p in model.encoder_parameters()}
    dec = {id(p) for p in model.decoder_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert enc and dec and not enc & dec
    assert enc | dec == trainable == {id(p) for p in model.parameters()}
    assert len(model.encoder_parameters()) == 2 + 2 * 4 + 2 * 5 + 4  # input, dense, LayerNorms, heads
    # The frozen encoder is no parameter, but all of it is saved.
    prior_keys = {k for k in model.state_dict() if k.startswith("prior_encoder.")}
    assert prior_keys == {"prior_encoder." + k for k in model.encoder.state_dict()}
    assert not any(name.startswith("prior_encoder") for name, _ in model.named_parameters())


def test_initialisation_is_pytorch_default_linear() -> None:
    model = RecVAE(400, hidden=300, latent_dim=8)
    bound = 1.0 / math.sqrt(400)
    w = model.encoder.input.weight.detach()
    assert float(w.abs().max()) <= bound and float(model.encoder.input.bias.detach().abs().max()) <= bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform, not Xavier/N(0,1)
    # the bias too (300 draws of U(-bound, bound): its spread within 15% of bound / sqrt 3), not left at zero
    assert float(model.encoder.input.bias.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)
    layer = model.encoder.layers[0]
    assert float(layer.weight.detach().abs().max()) <= 1 / math.sqrt(300)
    assert float(model.decoder_output.weight.detach().abs().max()) <= 1 / math.sqrt(8)
    assert torch.equal(model.encoder.norms[0].weight, torch.ones(300))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mixture_weights"):
        RecVAE(10, mixture_weights=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="mixture_weights"):  # the sum may miss 1 by rounding only (1e-6)
        RecVAE(10, mixture_weights=(0.5, 0.5, 1.5e-6))
    RecVAE(10, mixture_weights=(0.5, 0.5, 5e-7))
    with pytest.raises(ValueError, match="mixture_weights"):
        RecVAE(10, mixture_weights=(1.2, -0.2, 0.0))
    with pytest.raises(ValueError, match="gamma"):
        RecVAE(10, gamma=-1.0)
    with pytest.raises(ValueError, match="prior_form"):
        RecVAE(10, prior_form="mixture")
    with pytest.raises(ValueError, match="n_layers"):
        RecVAE(10, n_layers=0)
    batch = make_batch(_random_csr(2, N_ITEMS, 0.2, 0))
    for beta in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="beta"):
            _model(gamma=0.0).kl_weights(batch, beta)
    assert _model(gamma=0.0).kl_weights(batch, 0.0).tolist() == [0.0, 0.0]  # beta 0 is allowed
    for kwargs in ({"hidden": 2.5}, {"latent_dim": 0}, {"n_items": 0}, {"ln_eps": 0.0}, {"ln_eps": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            RecVAE(**{"n_items": 10, **kwargs})


# ------------------------------------------------------------------------------------------------------------
# Encoder: sparse input and architecture against a dense computation
# ------------------------------------------------------------------------------------------------------------


def test_sparse_first_layer_and_encoder_match_dense_computation() -> None:
    model = _model(3)
    X = _random_csr(9, N_ITEMS, 0.3, 4)
    batch = make_batch(X)
    x = torch.from_numpy(X.toarray())
    x = x / x.sum(dim=1, keepdim=True).sqrt()
    dense_first = x @ model.encoder.input.weight + model.encoder.input.bias
    torch.testing.assert_close(model.encoder.input(batch), dense_first, rtol=1e-5, atol=1e-6)
    mu, logvar = model.encode(batch)
    ref_mu, ref_logvar = _dense_reference_encode(model, X)
    torch.testing.assert_close(mu, ref_mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar, ref_logvar, rtol=1e-5, atol=1e-5)


def test_clean_input_weighs_a_one_item_user_by_one_and_leaves_an_empty_user_empty() -> None:
    """1 / sqrt(n_u) with n_u = 1 is 1; a user without positives gets no entries (zero input)."""
    X = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=np.float32))
    batch = clean_input(make_batch(X))
    assert batch.weights.tolist() == pytest.approx([1.0, *[1 / math.sqrt(3)] * 3])
    assert batch.offsets.tolist() == [0, 1, 1] and batch.indices.tolist() == [1, 0, 1, 3]


def test_clean_input_rebuilds_the_unmasked_normalised_history() -> None:
    X = _random_csr(6, N_ITEMS, 0.3, 5)
    kept = _dropout(X, 0.5, np.random.default_rng(0))
    masked = _masked_batch(X, kept, 0.5)
    # Scramble the target order: clean_input must regroup the rows for the EmbeddingBag.
    perm = torch.randperm(masked.target_rows.numel(), generator=torch.Generator().manual_seed(0))
    scrambled = SparseBatch(
        masked.indices,
        masked.offsets,
        masked.weights,
        masked.target_rows[perm],
        masked.target_cols[perm],
        masked.counts,
        masked.n_rows,
    )
    model = _model(1)
    want = model.encode(make_batch(X))
    for b in (masked, scrambled):
        got = model.encode(clean_input(b))
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])


# ------------------------------------------------------------------------------------------------------------
# Composite prior and Monte Carlo KL
# ------------------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    d=st.integers(1, 4),
    w=st.sampled_from([(3 / 20, 3 / 4, 1 / 10), (0.5, 0.0, 0.5), (0.2, 0.3, 0.5), (0.0, 1.0, 0.0)]),
    uniform_logvar=st.sampled_from([10.0, 2.0]),
)
def test_composite_prior_matches_scipy(seed: int, d: int, w: tuple, uniform_logvar: float) -> None:
    rng = np.random.default_rng(seed)
    z, mu = rng.normal(size=(2, 5, d)) * 2
    logvar = rng.normal(size=(5, d))
    sd_u = math.exp(uniform_logvar / 2)
    comp = np.stack(
        [stats.norm.logpdf(z), stats.norm.logpdf(z, mu, np.exp(logvar / 2)), stats.norm.logpdf(z, 0, sd_u)], -1
    )  # (5, d, 3)
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    per_dim = special.logsumexp(comp + log_w, axis=-1).sum(axis=1)
    joint_comp = np.stack(
        [
            [stats.multivariate_normal.logpdf(z[b], np.zeros(d), np.eye(d)) for b in range(5)],
            [stats.multivariate_normal.logpdf(z[b], mu[b], np.diag(np.exp(logvar[b]))) for b in range(5)],
            [stats.multivariate_normal.logpdf(z[b], np.zeros(d), sd_u**2 * np.eye(d)) for b in range(5)],
        ],
        -1,
    )
    joint = special.logsumexp(joint_comp + log_w, axis=-1)
    args = [torch.from_numpy(a) for a in (z, mu, logvar)]
    got_per_dim = composite_log_prior(*args, w, uniform_logvar, "per_dimension").numpy()
    got_joint = composite_log_prior(*args, w, uniform_logvar, "joint").numpy()
    np.testing.assert_allclose(got_per_dim, per_dim, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_joint, joint, rtol=1e-10, atol=1e-10)
    if d == 1:  # one dimension: the two forms coincide
        np.testing.assert_allclose(got_per_dim, got_joint, rtol=1e-12)


def test_the_training_pass_samples_z_as_mu_plus_eps_sigma() -> None:
    """forward_train's z = mu + eps * exp(logvar / 2) for the caller's eps: its NLL is the decoder's at that z."""
    from models.vae import multinomial_nll

    model = _model(2)
    _shift_heads(model)
    batch = make_batch(_random_csr(5, N_ITEMS, 0.3, 7))
    eps = torch.randn(5, LATENT, generator=torch.Generator().manual_seed(1))
    out = model.forward_train(batch, eps)
    mu, logvar = model.encode(batch)
    expected = multinomial_nll(model.decode(mu + eps * torch.exp(0.5 * logvar)), batch)
    torch.testing.assert_close(out.nll, expected)
    assert not torch.allclose(out.nll, multinomial_nll(model.decode(mu - eps * torch.exp(0.5 * logvar)), batch))


def test_composite_prior_defaults_are_the_reference_mixture() -> None:
    """Called with no mixture options: weights 3/20, 3/4, 1/10 and the broad component's log-variance 10 (the
    reference code), the per-dimension form (mutation survivors of models/recvae.py lines 70-71)."""
    rng = np.random.default_rng(4)
    z, mu = rng.normal(size=(2, 3, 2)) * 3
    logvar = rng.normal(size=(3, 2))
    comp = np.stack(
        [stats.norm.logpdf(z), stats.norm.logpdf(z, mu, np.exp(logvar / 2)), stats.norm.logpdf(z, 0, math.exp(5.0))],
        -1,
    )
    expected = special.logsumexp(comp + np.log([0.15, 0.75, 0.1]), axis=-1).sum(axis=1)
    got = composite_log_prior(*(torch.from_numpy(a) for a in (z, mu, logvar))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize(
    "shapes", [((3, 2), (3, 3), (3, 2)), ((3, 2), (3, 2), (3, 1)), ((6,), (6,), (6,)), ((1, 3, 2),) * 3]
)
def test_composite_prior_refuses_shapes_that_are_not_one_batch(shapes) -> None:
    """z, the posterior mean and its log-variance: one (B, d) shape for all three, each mismatch refused."""
    z, mu, logvar = (torch.zeros(s, dtype=torch.float64) for s in shapes)
    with pytest.raises(ValueError, match=r"must all have shape \(B, d\)"):
        composite_log_prior(z, mu, logvar)


def _repeat(X: sp.csr_matrix, n: int) -> sp.csr_matrix:
    return X[np.repeat(np.arange(X.shape[0]), n)]


def _gauss_kl(mu, logvar, mu2, logvar2) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(mu2, e^logvar2)), diagonal, summed over dims."""
    return 0.5 * (logvar2 - logvar + (logvar.exp() + (mu - mu2).pow(2)) / logvar2.exp() - 1.0).sum(dim=-1)


def _shift_heads(model: RecVAE) -> None:
    """Move the posterior away from N(0, I) so that the KLs below are far from zero."""
    with torch.no_grad():
        model.encoder.fc_mu.bias.add_(torch.linspace(-0.8, 0.8, LATENT))
        model.encoder.fc_logvar.bias.add_(torch.linspace(-1.0, 0.5, LATENT))


@pytest.mark.parametrize("prior_form", ["per_dimension", "joint"])
def test_monte_carlo_kl_to_standard_normal_matches_closed_form(prior_form: str) -> None:
    model = _model(2, mixture_weights=(1.0, 0.0, 0.0), prior_form=prior_form)
    _shift_heads(model)
    X = _random_csr(3, N_ITEMS, 0.3, 6)
    n_draws = 4000
    batch = make_batch(_repeat(X, n_draws))
    eps = torch.randn(3 * n_draws, LATENT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kl = model.forward_train(batch, eps).kl.double().reshape(3, n_draws)
        mu, logvar = model.encode(make_batch(X))
    analytic = _gauss_kl(mu.double(), logvar.double(), torch.zeros(()), torch.zeros(()))
    se = kl.std(dim=1) / math.sqrt(n_draws)
    assert bool((analytic > 0.3).all())
    assert bool(((kl.mean(dim=1) - analytic).abs() < 4 * se + 1e-4).all()), (kl.mean(dim=1), analytic, se)


def test_monte_carlo_kl_to_previous_posterior() -> None:
    """Weights (0, 1, 0): the prior is the frozen encoder's posterior on the clean full history."""
    model = _model(4, mixture_weights=(0.0, 1.0, 0.0))
    _shift_heads(model)
    model.update_prior()
    X = _random_csr(3, N_ITEMS, 0.4, 7)
    eps = torch.randn(3, LATENT)
    with torch.no_grad():
        # Clean input and prior == encoder: log q(z) = log p(z) for every z.
        torch.testing.assert_close(model.forward_train(make_batch(X), eps).kl, torch.zeros(3), atol=1e-4, rtol=0)
        kept = _dropout(X, 0.5, np.random.default_rng(3))
        n_draws = 4000
        batch = _masked_batch(_repeat(X, n_draws), _repeat(kept, n_draws), 0.5)
        eps = torch.randn(3 * n_draws, LATENT, generator=torch.Generator().manual_seed(2))
        kl = model.forward_train(batch, eps).kl.double().reshape(3, n_draws)
        mu, logvar = model.encode(_masked_batch(X, kept, 0.5))
        mu_old, logvar_old = model.encode(make_batch(X))
    analytic = _gauss_kl(mu.double(), logvar.double(), mu_old.double(), logvar_old.double())
    se = kl.std(dim=1) / math.sqrt(n_draws)
    assert bool((analytic > 0.01).all())
    assert bool(((kl.mean(dim=1) - analytic).abs() < 4 * se + 1e-4).all()), (kl.mean(dim=1), analytic, se)


def test_kl_gradient_reaches_the_encoder_through_z_only() -> None:
    model = _model(5)
    batch = make_batch(_random_csr(4, N_ITEMS, 0.3, 8))
    z = torch.randn(4, LATENT, requires_grad=True)
    model.log_prior(batch, z).sum().backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all()) and float(z.grad.abs().sum()) > 0
    # The per-element density is the textbook one.
    want = stats.norm.logpdf(0.3, loc=-0.2, scale=math.exp(0.25))
    got = gaussian_log_density(torch.tensor(0.3), torch.tensor(-0.2), torch.tensor(0.5))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_kl_weights() -> None:
    X = _random_csr(5, N_ITEMS, 0.3, 9)
    batch = make_batch(X)
    counts = torch.from_numpy(np.diff(X.indptr)).float()
    torch.testing.assert_close(_model(gamma=0.005).kl_weights(batch, beta=0.7), 0.005 * counts)
    torch.testing.assert_close(_model(gamma=0.0).kl_weights(batch, beta=0.7), torch.full((5,), 0.7))


# ------------------------------------------------------------------------------------------------------------
# Frozen prior encoder, state, training
# ------------------------------------------------------------------------------------------------------------


def _prior_state(model: RecVAE) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.prior_encoder.state_dict().items()}


def test_prior_encoder_is_frozen_copy() -> None:
    model = _model(6)
    enc = model.encoder.state_dict()
    # Before the first update the prior encoder is an independent random encoder (as in the reference).
    assert not torch.equal(model.prior_encoder.state_dict()["input.bag.weight"], enc["input.bag.weight"])
    model.update_prior()
    prior = _prior_state(model)
    assert all(torch.equal(prior[k], v) for k, v in model.encoder.state_dict().items())
    assert all(not t.requires_grad for t in model.prior_encoder.state_dict().values())

    opt = torch.optim.Adam(model.encoder_parameters(), lr=1e-2)
    batch = _masked_batch(
        *(lambda X: (X, _dropout(X, 0.5, np.random.default_rng(0))))(_random_csr(8, N_ITEMS, 0.3, 10)), 0.5
    )
    fwd = model.forward_train(batch, torch.randn(8, LATENT))
    (fwd.nll + model.kl_weights(batch, 0.0) * fwd.kl).mean().backward()
    assert all(p.grad is not None for p in model.encoder_parameters())
    assert all(t.grad is None for t in model.prior_encoder.state_dict(keep_vars=True).values())
    opt.step()
    after = model.prior_encoder.state_dict()
    assert all(torch.equal(prior[k], after[k]) for k in prior)  # the prior did not move
    assert not torch.equal(after["input.bag.weight"], model.encoder.state_dict()["input.bag.weight"])
    assert not torch.equal(after["fc_mu.weight"], model.encoder.state_dict()["fc_mu.weight"])


def _train_steps(model: RecVAE, X: sp.csr_matrix, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.encoder_parameters(), lr=1e-2)
    for _ in range(steps):
        batch = _masked_batch(X, _dropout(X, 0.5, rng), 0.5)
        fwd = model.forward_train(batch, torch.randn(X.shape[0], LATENT))
        opt.zero_grad()
        (fwd.nll + model.kl_weights(batch, 0.0) * fwd.kl).mean().backward()
        opt.step()


def test_state_dict_round_trip_reproduces_scores_and_prior() -> None:
    X = _random_csr(12, N_ITEMS, 0.3, 11)
    model = _model(7)
    _train_steps(model, X, 3, 0)
    model.update_prior()
    _train_steps(model, X, 2, 1)  # encoder and prior now differ
    clone = _model(8)
    clone.load_state_dict(model.state_dict())
    fold_in = _random_csr(5, N_ITEMS, 0.3, 12)
    assert torch.equal(clone.score(fold_in), model.score(fold_in))
    batch = make_batch(X)
    eps = torch.randn(12, LATENT)
    with torch.no_grad():
        a, b = model.forward_train(batch, eps), clone.forward_train(batch, eps)
    assert torch.equal(a.nll, b.nll) and torch.equal(a.kl, b.kl)
    assert torch.equal(model.log_prior(batch, eps), clone.log_prior(batch, eps))


def _blocks(n_users_per_block: int, n_blocks: int, block: int, per_user: int, seed: int):
    rng = np.random.default_rng(seed)
    rows, cols, labels = [], [], []
    for u in range(n_users_per_block * n_blocks):
        g = u % n_blocks
        items = g * block + rng.choice(block, per_user, replace=False)
        rows += [u] * per_user
        cols += list(items)
        labels.append(g)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(labels), n_blocks * block))
    return X, np.array(labels)


def test_alternating_training_on_planted_blocks() -> None:
    n_blocks, block = 4, 6
    X, _ = _blocks(40, n_blocks, block, 4, seed=0)
    X_test, labels = _blocks(15, n_blocks, block, 2, seed=1)
    torch.manual_seed(0)
    model = RecVAE(n_blocks * block, hidden=HIDDEN, latent_dim=LATENT, gamma=0.005)
    enc_opt = torch.optim.Adam(model.encoder_parameters(), lr=2e-2)
    dec_opt = torch.optim.Adam(model.decoder_parameters(), lr=2e-2)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    clean = make_batch(X)
    eps_eval = torch.randn(X.shape[0], LATENT, generator=gen)

    def loss_of(batch: SparseBatch, eps: torch.Tensor) -> torch.Tensor:
        fwd = model.forward_train(batch, eps)
        return (fwd.nll + model.kl_weights(batch, 0.0) * fwd.kl).mean()

    def top_block_accuracy() -> float:
        scores = model.score(X_test).numpy()
        scores[X_test.toarray() > 0] = -np.inf
        return float(np.mean(scores.argmax(axis=1) // block == labels))

    with torch.no_grad():
        before = float(loss_of(clean, eps_eval))
    acc_before = top_block_accuracy()
    for _ in range(8):
        for _ in range(3):  # encoder epochs, dropout 0.5
            for idx in np.array_split(rng.permutation(X.shape[0]), 4):
                batch = _masked_batch(X[idx], _dropout(X[idx], 0.5, rng), 0.5)
                enc_opt.zero_grad()
                loss_of(batch, torch.randn(len(idx), LATENT, generator=gen)).backward()
                enc_opt.step()
        model.update_prior()
        for idx in np.array_split(rng.permutation(X.shape[0]), 4):  # decoder epoch, clean input
            dec_opt.zero_grad()
            model.forward_train(make_batch(X[idx]), torch.randn(len(idx), LATENT, generator=gen)).nll.mean().backward()
            dec_opt.step()
    with torch.no_grad():
        after = float(loss_of(clean, eps_eval))
    acc_after = top_block_accuracy()
    # Uniform scores give nll = 4 log 24 = 12.7; perfect block recovery 4 log 6 = 7.2.
    assert after < before - 2.0, (before, after)
    assert acc_after >= 0.95 > acc_before + 0.3, (acc_before, acc_after)
