"""Tests for geometry.bounds: the transport bound and the certified Lipschitz constant of small encoders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geometry.bounds import (
    LayerNorm,
    Linear,
    certified_lipschitz,
    check_expected_pairwise_bound,
    count_lipschitz_violations,
    empirical_lipschitz_ratios,
    expected_pairwise_bound,
    layers_from_torch,
    split_head,
    swish_lipschitz,
    transport_bound,
    transport_bound_check,
    transport_slack,
)
from geometry.kl import kl_to_standard_normal
from geometry.wasserstein import w2_diag_gaussian

N_ITEMS, HIDDEN, LATENT = 60, 32, 8


# --- fixtures: small Multi-VAE-like encoders on random binary data ---------------------------------------


def _binary_users(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, N_ITEMS)) < 0.1).astype(np.float64)
    x[x.sum(1) == 0, 0] = 1.0
    # add one-bit neighbours: the pairs at L1 distance 1 are where the ratio W / L1 peaks
    y = x.copy()
    j = rng.integers(0, N_ITEMS, n)
    y[np.arange(n), j] = 1.0 - y[np.arange(n), j]
    return np.concatenate([x, y[y.sum(1) > 0]])


def _encoder(act: str, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layer = torch.nn.Tanh() if act == "tanh" else torch.nn.SiLU()
    return torch.nn.Sequential(torch.nn.Linear(N_ITEMS, HIDDEN), layer, torch.nn.Linear(HIDDEN, 2 * LATENT)).double()


def _encode(model: torch.nn.Module, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(x)
    out = model(xt / xt.norm(dim=1, keepdim=True))  # Multi-VAE: L2-normalised input
    return out[:, :LATENT], out[:, LATENT:]


def _train(model: torch.nn.Sequential, x: np.ndarray, steps: int = 100) -> torch.nn.Sequential:
    torch.manual_seed(1)
    decoder = torch.nn.Linear(LATENT, N_ITEMS).double()
    opt = torch.optim.Adam([*model.parameters(), *decoder.parameters()], lr=1e-2)
    xt = torch.as_tensor(x)
    for _ in range(steps):
        mu, logvar = _encode(model, x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = -(torch.log_softmax(decoder(z), 1) * xt).sum(1).mean()
        loss = recon + 0.2 * kl_to_standard_normal(mu, logvar).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module", params=["tanh-random", "tanh-trained", "swish-random", "swish-trained"])
def encoded(request):
    act, state = request.param.split("-")
    x = _binary_users(150, seed=0)
    model = _encoder(act, seed=2)
    if state == "trained":
        model = _train(model, x[:150])
    with torch.no_grad():
        mu, logvar = _encode(model, x)
    return request.param, model, x, mu.numpy(), logvar.numpy()


def _all_pairs(x, mu, logvar):
    i, j = np.triu_indices(len(x), 1)
    w2 = w2_diag_gaussian(mu[i], np.exp(0.5 * logvar[i]), mu[j], np.exp(0.5 * logvar[j]))
    return w2, np.abs(x[i] - x[j]).sum(1)


def _certificate(model, **kw):
    mu_head, lv_head = split_head(layers_from_torch([model[2]])[0], LATENT)
    return certified_lipschitz(layers_from_torch(model[:2]), mu_head, lv_head, **kw)


# --- Lipschitz certificate ----------------------------------------------------------------------------


def test_no_pair_exceeds_the_certified_lipschitz_bound(encoded):
    name, model, x, mu, logvar = encoded
    w2, l1 = _all_pairs(x, mu, logvar)
    ratios = empirical_lipschitz_ratios(w2, l1)
    for cert in (_certificate(model), _certificate(model, logvar_max=logvar.max(0))):
        assert count_lipschitz_violations(w2, l1, cert.l_w2) == 0, (name, cert.logvar_max_source)
        assert ratios.max <= cert.l_w2
        assert cert.l_w2 <= math.hypot(cert.l_mu, cert.l_sigma) * (1 + 1e-12)
        # observed on these fixtures: certificate / worst pair between 1.8 and 7.9
        assert cert.l_w2 / ratios.max < 20.0, (name, cert.l_w2 / ratios.max)
    # the interval box really contains every logvar the encoder produces, even on unseen dense inputs
    dense = (np.random.default_rng(3).random((200, N_ITEMS)) < 0.6).astype(np.float64)
    with torch.no_grad():
        _, lv_dense = _encode(model, dense)
    assert (lv_dense.numpy() <= _certificate(model).logvar_max + 1e-12).all()
    assert (logvar <= _certificate(model).logvar_max + 1e-12).all()


def test_certificate_dominates_the_jacobian_on_real_inputs():
    # without normalisation the certificate holds for all real inputs in [0, 1]^I, so it must bound the
    # local L1 -> L2 operator norm (the largest column norm) of the Jacobian of (mu, sigma) everywhere
    model = _train(_encoder("swish", seed=4), _binary_users(100, seed=5)[:100], steps=40)

    def mu_sigma(v):
        out = model(v)
        return torch.cat([out[:LATENT], torch.exp(0.5 * out[LATENT:])])

    points = torch.rand(30, N_ITEMS, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        lv_points = model(points)[:, LATENT:].numpy()
    worst = max(float(torch.func.jacrev(mu_sigma)(p).detach().norm(dim=0).max()) for p in points)
    # whole box: the interval logvar bound is honest but loose (the box holds dense inputs with large
    # pre-activations); at these points the observed logvar maximum bounds the local derivative of sigma
    box = _certificate(model, input_domain="unit_box")
    local = _certificate(model, input_domain="unit_box", logvar_max=lv_points.max(0))
    assert worst <= local.l_w2 <= box.l_w2
    assert local.l_w2 / worst < 30.0  # observed: about 1.3


@pytest.mark.parametrize(
    ("domain", "expected"), [("l2_normalised_binary", math.sqrt(2 - math.sqrt(2))), ("binary", 1.0)]
)
def test_input_constants_are_exact_by_enumeration(domain, expected):
    # identity mu head, constant logvar: the certificate is the preprocessing's own constant
    n = 5
    cert = certified_lipschitz([], Linear(np.eye(n)), Linear(np.zeros((n, n)), np.full(n, 0.3)), input_domain=domain)
    vecs = [np.array(v, float) for v in itertools.product([0, 1], repeat=n) if sum(v) > 0]
    prep = (lambda v: v / np.linalg.norm(v)) if domain == "l2_normalised_binary" else (lambda v: v)
    worst = max(np.linalg.norm(prep(a) - prep(b)) / np.abs(a - b).sum() for a in vecs for b in vecs if (a != b).any())
    assert worst == pytest.approx(expected, rel=1e-12)
    assert cert.l_w2 == pytest.approx(expected, rel=1e-12)
    # the L1 route constant (kappa_1 = 1) is attained too: x = {1}, y = {1, 2}
    a, b = np.array([1.0, 0, 0]), np.array([1.0, 1, 0])
    assert np.abs(a / np.linalg.norm(a) - b / np.linalg.norm(b)).sum() == pytest.approx(1.0)


def test_swish_constant_matches_autograd():
    x = torch.linspace(-12, 12, 400_001, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.silu(x).sum().backward()
    assert float(x.grad.abs().max()) == pytest.approx(swish_lipschitz(), abs=1e-9)
    assert swish_lipschitz() == pytest.approx(1.0998393, abs=1e-7)


def test_layernorm_constant_is_attained_near_constant_inputs():
    eps = 0.1
    cert = certified_lipschitz(
        [Linear(np.eye(6)), LayerNorm(None, None, eps)],
        Linear(np.eye(6)),
        Linear(np.zeros((6, 6))),
        input_domain="unit_box",
    )
    assert cert.l_trunk == pytest.approx(1.0 / math.sqrt(eps))
    ln = torch.nn.LayerNorm(6, eps=eps, elementwise_affine=False).double()
    base = torch.full((6,), 0.7, dtype=torch.float64)
    delta = 1e-6 * torch.tensor([1.0, -1, 0, 0, 0, 0], dtype=torch.float64)
    ratio = float((ln(base + delta) - ln(base)).norm() / delta.norm())
    assert ratio == pytest.approx(1.0 / math.sqrt(eps), rel=1e-4)


def test_recvae_like_chain_with_layernorm_is_certified():
    torch.manual_seed(7)
    trunk = torch.nn.Sequential(
        torch.nn.Linear(N_ITEMS, HIDDEN),
        torch.nn.SiLU(),
        torch.nn.LayerNorm(HIDDEN, eps=0.1),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.SiLU(),
        torch.nn.LayerNorm(HIDDEN, eps=0.1),
    ).double()
    heads = torch.nn.Linear(HIDDEN, 2 * LATENT).double()
    x = _binary_users(80, seed=8)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        out = heads(trunk(xt / xt.norm(dim=1, keepdim=True)))
    mu, logvar = out[:, :LATENT].numpy(), out[:, LATENT:].numpy()
    w2, l1 = _all_pairs(x, mu, logvar)
    mu_head, lv_head = split_head(Linear(heads.weight, heads.bias), LATENT)
    cert = certified_lipschitz(layers_from_torch(trunk), mu_head, lv_head)
    assert count_lipschitz_violations(w2, l1, cert.l_w2) == 0
    assert (logvar <= cert.logvar_max).all()


def test_lipschitz_helpers_detect_planted_values():
    l1 = np.array([1.0, 2.0, 4.0, 0.0])
    w = np.array([2.0, 4.0, 8.0, 0.0])
    r = empirical_lipschitz_ratios(w, l1, quantiles=(0.5,))
    assert r.max == 2.0 and r.n_pairs == 3 and r.n_zero_distance == 1 and r.quantiles[0] == 2.0
    assert count_lipschitz_violations(w, l1, 2.0) == 0
    assert count_lipschitz_violations(w, l1, 1.9) == 3
    assert empirical_lipschitz_ratios(np.array([1.0, 0.5]), np.array([1.0, 0.0])).max == math.inf


def test_lipschitz_rejects_bad_input():
    with pytest.raises(ValueError, match="input_domain"):
        certified_lipschitz([], Linear(np.eye(2)), Linear(np.eye(2)), input_domain="gaussian")
    with pytest.raises(ValueError, match="start with a linear"):
        certified_lipschitz(["tanh"], Linear(np.eye(2)), Linear(np.eye(2)))
    with pytest.raises(ValueError, match="unsupported module"):
        layers_from_torch([torch.nn.Conv1d(1, 1, 1)])
    with pytest.raises(ValueError, match="unknown activation"):
        certified_lipschitz([Linear(np.eye(2)), "gelu"], Linear(np.eye(2)), Linear(np.eye(2)))
    with pytest.raises(ValueError, match="same length"):
        empirical_lipschitz_ratios(np.ones(3), np.ones(2))


# --- transport bound ------------------------------------------------------------------------------------


def test_transport_bound_has_no_violation_on_encoders(encoded):
    name, _, _, mu, logvar = encoded
    check = transport_bound_check(mu, logvar, chunk_size=64)
    assert check.n_violations == 0, name
    assert check.min_slack > -1e-9
    assert check.mean_w2 <= check.mean_pair_bound <= check.expected_bound * (1 + 1e-12)
    assert check_expected_pairwise_bound(check.mean_w2, check.mean_kl).holds


def test_transport_check_matches_brute_force():
    rng = np.random.default_rng(9)
    mu, logvar = rng.normal(size=(30, 4)), rng.normal(scale=0.8, size=(30, 4))
    check = transport_bound_check(torch.tensor(mu), torch.tensor(logvar), chunk_size=7)
    i, j = np.triu_indices(30, 1)
    slack = transport_slack(mu[i], logvar[i], mu[j], logvar[j])
    assert check.n_pairs == 435
    assert check.min_slack == pytest.approx(slack.min(), rel=1e-9)
    assert check.mean_slack == pytest.approx(slack.mean(), rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    d=st.integers(1, 6),
    data=st.data(),
)
def test_transport_slack_is_nonnegative(d, data):
    mu_u, mu_v = (data.draw(arrays(np.float64, d, elements=st.floats(-6, 6))) for _ in range(2))
    lv_u, lv_v = (data.draw(arrays(np.float64, d, elements=st.floats(-6, 4))) for _ in range(2))
    bound = transport_bound(kl_to_standard_normal(mu_u, lv_u), kl_to_standard_normal(mu_v, lv_v))
    assert transport_slack(mu_u, lv_u, mu_v, lv_v) >= -1e-9 * (1 + bound)


def test_transport_bound_is_attained_by_opposite_unit_gaussians():
    a = np.array([0.6, -1.2, 0.3])
    slack = transport_slack(a, np.zeros(3), -a, np.zeros(3))
    assert abs(slack) < 1e-12
    assert transport_bound(0.5 * a @ a, 0.5 * a @ a) == pytest.approx(2 * np.linalg.norm(a))
    sl = transport_slack(torch.tensor(a), torch.zeros(3, dtype=torch.float64), torch.tensor(-a), torch.zeros(3))
    assert isinstance(sl, torch.Tensor)


def test_expected_pairwise_bound_formula_and_failure_detection():
    assert expected_pairwise_bound(2.0) == pytest.approx(2 * math.sqrt(2) * math.sqrt(2.0))
    assert expected_pairwise_bound(2.0, c=0.5) == pytest.approx(2.0 * math.sqrt(2.0))
    bad = check_expected_pairwise_bound(5.0, mean_kl=1.0)
    assert not bad.holds and bad.slack == pytest.approx(2 * math.sqrt(2) - 5.0)
    with pytest.raises(ValueError, match="mean_kl"):
        expected_pairwise_bound(-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        transport_bound(np.array([-1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="share shape"):
        transport_bound_check(np.zeros((3, 2)), np.zeros((3, 3)))
