r"""Certified bounds on posterior distances: the transport bound and the encoder's Lipschitz constant.

Transport bound (PAPER.md sections 3 and 5)
--------------------------------------------
The standard normal satisfies Talagrand's T2 inequality :math:`W_2(q, p)^2 \le 2\,KL(q\,\|\,p)` (constant
C = 1 in every dimension), which implies T1. With the triangle inequality,

.. math::
    W_1(q_u, q_v) \le W_2(q_u, q_v) \le \sqrt{2 KL(q_u\|p)} + \sqrt{2 KL(q_v\|p)} .

The checks here use the closed-form W2 in place of W1, which is stronger (a pair with W2 under the bound
has W1 under it too), so any violation is a bug, not sampling noise. The bound is tight: for
:math:`q_u = N(a, I)`, :math:`q_v = N(-a, I)` both sides equal :math:`2\lVert a\rVert`, hence the small
relative tolerance. Averaging over pairs and Jensen give the expected pairwise bound

.. math::
    E_{u \ne v}\, W_1(q_u, q_v) \le 2\sqrt{2C}\; E_u \sqrt{KL_u} \le 2\sqrt{2C}\,\sqrt{E_u KL_u}.

Lipschitz encoder (Lemma 2.4)
-----------------------------
We certify :math:`W_1(q_u, q_v) \le W_2(q_u, q_v) \le L\,\lVert x_u - x_v\rVert_1` for an encoder made of
a trunk (a chain of linear maps, activations and layer norms) and two linear heads for mu and logvar,
sigma = exp(logvar / 2). Since :math:`W_2 = \lVert(\Delta\mu, \Delta\sigma)\rVert_2` and, by the mean value
theorem per coordinate, :math:`|\Delta\sigma_k| \le \tfrac12 e^{\bar\ell_k/2} |\Delta\ell_k|` where
:math:`\bar\ell_k` is any upper bound of logvar_k over the two inputs,

.. math::
    W_2 \le \big\lVert H\,\Delta h \big\rVert_2, \qquad
    H = \begin{pmatrix} W_\mu \\ \mathrm{diag}(\tfrac12 e^{\bar\ell/2})\, W_\ell \end{pmatrix},

and :math:`\lVert\Delta h\rVert_2` is bounded through the trunk by products of operator norms. The first
linear layer maps an L1 difference to L2: :math:`\lVert W\Delta n\rVert_2 \le \min(\kappa_1 \lVert W
\rVert_{1\to2},\ \kappa_2 \lVert W\rVert_{2\to2})\,\lVert\Delta x\rVert_1`, with
:math:`\lVert W\rVert_{1\to2}` the largest column norm and :math:`\kappa_{1,2}` the Lipschitz constants of the
input preprocessing from :math:`(\{0,1\}^I, \ell_1)` to :math:`\ell_1` and :math:`\ell_2`:

* raw binary or real inputs: :math:`\kappa_1 = \kappa_2 = 1` (:math:`\lVert v\rVert_2 \le \lVert v\rVert_1`).
* L2-normalised binary inputs :math:`n(x) = x/\lVert x\rVert_2` (Multi-VAE, RecVAE), each with at least one
  positive (an empty row cannot be normalised): :math:`\kappa_1 = 1`, :math:`\kappa_2 = \sqrt{2-\sqrt2}
  \approx 0.765`. Proof sketch, with a = |S_u| <= b = |S_v|, c = |S_u ∩ S_v|, d = a + b - 2c:
  :math:`\lVert \Delta n\rVert_1 = \sqrt a + \sqrt b - 2c/\sqrt b`, and the ratio to d increases with c
  (derivative sign :math:`\sqrt a(1 - \sqrt{a/b}) \ge 0`); at c = a < b it equals
  :math:`(1+2t)/(\sqrt b(1+t))` with :math:`t = \sqrt{a/b} \le \sqrt{1 - 1/b}`, at most 1 (equality at
  a = 1, b = 2), and for a = b it is :math:`1/\sqrt a \le 1`. In L2,
  :math:`\lVert\Delta n\rVert_2 \le 2\lVert\Delta x\rVert_2/(\lVert x_u\rVert + \lVert x_v\rVert)
  \le \sqrt d \le d` (expand both squares: the difference is :math:`(s-t)^2(1+\cos)/2 \ge 0`), which is at
  most :math:`1/\sqrt2` per unit of d once d >= 2, while d = 1 gives
  :math:`\sqrt{2 - 2\sqrt{a/(a+1)}} \le \sqrt{2-\sqrt2}` (a = 1). Both constants are attained and are
  checked by enumeration in the tests. The normalisation is not Lipschitz on real inputs near 0: this is
  why the certificate is stated on binary inputs.

Activations: tanh, relu and identity are 1-Lipschitz, sigmoid 1/4, swish :math:`x\sigma(x)` has
:math:`\sup|\mathrm{swish}'| = \mathrm{swish}'(x^*) \approx 1.09984` at the root :math:`x^* \approx 2.39936`
of :math:`x\tanh(x/2) = 2` (:func:`swish_lipschitz`). A layer norm :math:`\gamma\odot(y-\bar y)/\sqrt{\mathrm{var}
(y)+\epsilon} + \beta` is :math:`\max|\gamma|/\sqrt\epsilon`-Lipschitz (its Jacobian has eigenvalues
:math:`1/r` and :math:`\epsilon/r^3`, :math:`r = \sqrt{\mathrm{var}+\epsilon}`).

The logvar upper bound :math:`\bar\ell` comes either from interval bound propagation over the whole input
domain (certified for every pair of valid inputs; tanh trunks give a finite, often loose, box) or from
``logvar_max`` supplied by the caller, e.g. the coordinatewise maximum of logvar over a data set, which
certifies every pair **within** that set (the mean value point lies between the two observed values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from geometry.kl import kl_to_standard_normal
from geometry.wasserstein import _coerce, _triangle_blocks, w2_diag_gaussian
from models.lazy import lazy_import

torch = lazy_import("torch")
optimize = lazy_import("scipy.optimize")
special = lazy_import("scipy.special")

ArrayLike = Any

__all__ = [
    "ExpectedBoundCheck",
    "LayerNorm",
    "Linear",
    "LipschitzCertificate",
    "LipschitzRatios",
    "TransportCheck",
    "certified_lipschitz",
    "check_expected_pairwise_bound",
    "count_lipschitz_violations",
    "empirical_lipschitz_ratios",
    "expected_pairwise_bound",
    "layers_from_torch",
    "split_head",
    "swish_lipschitz",
    "transport_bound",
    "transport_bound_check",
    "transport_slack",
]


# ---------------------------------------------------------------------------------------------------------
# transport bound
# ---------------------------------------------------------------------------------------------------------


def transport_bound(kl_u: ArrayLike, kl_v: ArrayLike, c: float = 1.0) -> ArrayLike:
    r"""Per-pair transport bound :math:`\sqrt{2C\,KL_u} + \sqrt{2C\,KL_v}` (elementwise, numpy or torch).

    Parameters
    ----------
    kl_u, kl_v : array, broadcastable, >= 0
        KL(q || p) of each posterior (e.g. :func:`geometry.kl.kl_to_standard_normal`).
    c : float
        Transport constant of the prior (C = 1 for N(0, I)).
    """
    if not c > 0:
        raise ValueError(f"c must be > 0; got {c}.")
    use_torch, (kl_u, kl_v) = _coerce(("kl_u", "kl_v"), (kl_u, kl_v))
    if bool((kl_u < 0).any()) or bool((kl_v < 0).any()):
        raise ValueError("KL values must be >= 0; got negative entries (check the KL formula or rounding).")
    lib = torch if use_torch else np
    return lib.sqrt(2.0 * c * kl_u) + lib.sqrt(2.0 * c * kl_v)


def transport_slack(mu_u: ArrayLike, logvar_u: ArrayLike, mu_v: ArrayLike, logvar_v: ArrayLike) -> ArrayLike:
    r"""Slack :math:`\sqrt{2KL_u} + \sqrt{2KL_v} - W_2(q_u, q_v) \ge 0` per pair (a lower bound on the W1 slack).

    Parameters
    ----------
    mu_u, logvar_u, mu_v, logvar_v : array (numpy or torch), broadcastable shapes (..., d)

    Returns
    -------
    array, shape broadcast(...); negative only through rounding (relative size ~1e-12) or a bug.
    """
    use_torch, (mu_u, logvar_u, mu_v, logvar_v) = _coerce(
        ("mu_u", "logvar_u", "mu_v", "logvar_v"), (mu_u, logvar_u, mu_v, logvar_v)
    )
    lib = torch if use_torch else np
    w2 = w2_diag_gaussian(mu_u, lib.exp(0.5 * logvar_u), mu_v, lib.exp(0.5 * logvar_v))
    bound = transport_bound(kl_to_standard_normal(mu_u, logvar_u), kl_to_standard_normal(mu_v, logvar_v))
    return bound - w2


def expected_pairwise_bound(mean_kl: float, c: float = 1.0) -> float:
    r"""Expected pairwise bound :math:`2\sqrt{2C}\sqrt{E\,KL}` of PAPER.md section 5.

    Bounds :math:`E_{u,v,b}\,W_1(q(\cdot|x_u\odot b_u), q(\cdot|x_v\odot b_v))` for independent users and masks,
    with or without u = v; E KL is over users and masks (:attr:`geometry.kl.KLBudget.mean_kl`).
    """
    if not (math.isfinite(mean_kl) and mean_kl >= 0):
        raise ValueError(f"mean_kl must be a finite value >= 0; got {mean_kl}.")
    if not c > 0:
        raise ValueError(f"c must be > 0; got {c}.")
    return 2.0 * math.sqrt(2.0 * c) * math.sqrt(mean_kl)


@dataclass(frozen=True)
class ExpectedBoundCheck:
    """Mean pairwise distance against :func:`expected_pairwise_bound`.

    Attributes
    ----------
    mean_pairwise_w, bound, slack : float
        ``slack = bound - mean_pairwise_w``.
    holds : bool
        ``mean_pairwise_w <= bound * (1 + rtol)``.
    """

    mean_pairwise_w: float
    bound: float
    slack: float
    holds: bool


def check_expected_pairwise_bound(
    mean_pairwise_w: float, mean_kl: float, c: float = 1.0, rtol: float = 1e-9
) -> ExpectedBoundCheck:
    """Compare a mean pairwise W1 (or its W2 upper bound, which makes the check stronger) with the bound.

    Parameters
    ----------
    mean_pairwise_w : float
        E.g. :attr:`geometry.wasserstein.PairwiseW1Summary.mean_upper`.
    mean_kl : float
    c : float
    rtol : float
        Relative rounding tolerance.
    """
    if not (math.isfinite(mean_pairwise_w) and mean_pairwise_w >= 0):
        raise ValueError(f"mean_pairwise_w must be a finite value >= 0; got {mean_pairwise_w}.")
    bound = expected_pairwise_bound(mean_kl, c)
    return ExpectedBoundCheck(
        mean_pairwise_w=float(mean_pairwise_w),
        bound=bound,
        slack=bound - float(mean_pairwise_w),
        holds=bool(mean_pairwise_w <= bound * (1.0 + rtol) + 1e-300),
    )


@dataclass(frozen=True)
class TransportCheck:
    """All-pairs check of ``W2(q_i, q_j) <= sqrt(2 KL_i) + sqrt(2 KL_j)`` over pairs i < j.

    Attributes
    ----------
    n, n_pairs : int
    n_violations : int
        Pairs with W2 above the bound by more than ``rtol`` relative (must be 0).
    min_slack, min_relative_slack, mean_slack : float
        Slack = bound - W2; relative slack = slack / bound (pairs with bound 0 count as relative slack 0).
    mean_w2 : float
        Mean W2 over pairs (an upper bound on the mean W1).
    mean_pair_bound : float
        Mean of the per-pair bound over pairs, ``2 mean_u sqrt(2 KL_u)``.
    expected_bound : float
        ``2 sqrt(2) sqrt(mean KL)`` (>= mean_pair_bound by Jensen).
    mean_kl : float
    """

    n: int
    n_pairs: int
    n_violations: int
    min_slack: float
    min_relative_slack: float
    mean_slack: float
    mean_w2: float
    mean_pair_bound: float
    expected_bound: float
    mean_kl: float


def transport_bound_check(
    mu: ArrayLike, logvar: ArrayLike, *, chunk_size: int = 512, rtol: float = 1e-9
) -> TransportCheck:
    """Check the transport bound on all n (n - 1) / 2 pairs of n posteriors, in row chunks.

    Parameters
    ----------
    mu, logvar : array (numpy or torch), shape (n, d), n >= 2
        Flatten mask draws first (``reshape(-1, d)``): the bound holds for every pair of rows.
    chunk_size : int
    rtol : float
        Relative tolerance for rounding; the bound can be attained exactly.

    Returns
    -------
    TransportCheck
    """
    mu_t = mu.detach().cpu().double() if isinstance(mu, torch.Tensor) else torch.as_tensor(mu).double()
    lv_t = logvar.detach().cpu().double() if isinstance(logvar, torch.Tensor) else torch.as_tensor(logvar).double()
    if mu_t.ndim != 2 or mu_t.shape != lv_t.shape:
        raise ValueError(f"mu and logvar must share shape (n, d); got {tuple(mu_t.shape)} and {tuple(lv_t.shape)}.")
    n = mu_t.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 posteriors for pairs; got n = {n}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    kl = kl_to_standard_normal(mu_t, lv_t)
    root = torch.sqrt(2.0 * kl)
    n_viol = 0
    min_slack = math.inf
    min_rel = math.inf
    sum_slack = 0.0
    sum_w2 = 0.0
    blocks = _triangle_blocks(mu_t.numpy(), torch.exp(0.5 * lv_t).numpy(), chunk_size)
    for start, stop, _, upper in blocks:
        r = stop - start
        bound = root[start:stop, None] + root[None, start:]
        # the leading square holds pairs j <= i too: keep its strict upper triangle only
        keep = torch.ones(r, r, dtype=torch.bool).triu_(1)
        for up, bd in ((upper[:, :r][keep], bound[:, :r][keep]), (upper[:, r:], bound[:, r:])):
            if up.numel() == 0:
                continue
            slack = bd - up
            n_viol += int((up > bd * (1.0 + rtol) + 1e-12).sum())
            min_slack = min(min_slack, float(slack.min()))
            rel = torch.where(bd > 0, slack / bd, torch.zeros_like(slack))
            min_rel = min(min_rel, float(rel.min()))
            sum_slack += float(slack.sum())
            sum_w2 += float(up.sum())
    kl = kl.numpy()
    root = root.numpy()
    n_pairs = n * (n - 1) // 2
    mean_kl = float(kl.mean())
    return TransportCheck(
        n=n,
        n_pairs=n_pairs,
        n_violations=n_viol,
        min_slack=min_slack,
        min_relative_slack=min_rel,
        mean_slack=sum_slack / n_pairs,
        mean_w2=sum_w2 / n_pairs,
        mean_pair_bound=float(2.0 * root.mean()),
        expected_bound=expected_pairwise_bound(mean_kl),
        mean_kl=mean_kl,
    )


# ---------------------------------------------------------------------------------------------------------
# Lipschitz constant of the encoder
# ---------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def swish_lipschitz() -> float:
    r"""Lipschitz constant of swish (SiLU) :math:`x\sigma(x)`: :math:`\sup_x |\mathrm{swish}'(x)| \approx 1.0998393`.

    :math:`\mathrm{swish}'(x) = \sigma(x)(1 + x(1 - \sigma(x)))`, :math:`\mathrm{swish}''(x) =
    \sigma(x)(1-\sigma(x))(2 - x\tanh(x/2))`; the maximum is at the positive root of
    :math:`x\tanh(x/2) = 2` (Brent's method), the minimum :math:`\approx -0.0998` at its negative, smaller in
    absolute value.
    """
    x0 = optimize.brentq(lambda x: 2.0 - x * math.tanh(x / 2.0), 1.0, 4.0, xtol=1e-15)
    s = float(special.expit(x0))
    return s * (1.0 + x0 * (1.0 - s))


@lru_cache(maxsize=1)
def _swish_argmin() -> float:
    """Where swish' = 0 (swish's minimum), solved once on first use rather than at import."""
    return optimize.brentq(lambda x: 1.0 + x * float(special.expit(-x)), -3.0, 0.0, xtol=1e-15)


def _activation_table() -> dict[str, float]:
    return {"tanh": 1.0, "relu": 1.0, "identity": 1.0, "sigmoid": 0.25, "swish": swish_lipschitz()}


def _np(a: ArrayLike | None) -> np.ndarray | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("layer parameters contain NaN or infinite values.")
    return a


@dataclass(frozen=True)
class Linear:
    """Affine layer ``y = W x + b`` (torch convention, weight of shape (out, in))."""

    weight: ArrayLike
    bias: ArrayLike | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        w = _np(self.weight)
        if w is None or w.ndim != 2:
            raise ValueError("Linear.weight must be a 2-D (out, in) matrix.")
        b = _np(self.bias)
        b = np.zeros(w.shape[0]) if b is None else b
        if b.shape != (w.shape[0],):
            raise ValueError(f"Linear.bias must have shape ({w.shape[0]},); got {b.shape}.")
        return w, b


@dataclass(frozen=True)
class LayerNorm:
    """Layer norm ``gamma * (y - mean) / sqrt(var + eps) + beta`` (biased variance, as torch)."""

    weight: ArrayLike | None = None
    bias: ArrayLike | None = None
    eps: float = 1e-5


def split_head(head: Linear | tuple[ArrayLike, ArrayLike | None], latent_dim: int) -> tuple[Linear, Linear]:
    """Split a joint (2 d, h) head whose first d outputs are mu and last d logvar (Multi-VAE) into two heads."""
    head = head if isinstance(head, Linear) else Linear(*head)
    w, b = head.arrays()
    if w.shape[0] != 2 * latent_dim:
        raise ValueError(f"head has {w.shape[0]} outputs; expected 2 * latent_dim = {2 * latent_dim}.")
    return Linear(w[:latent_dim], b[:latent_dim]), Linear(w[latent_dim:], b[latent_dim:])


def layers_from_torch(modules: Iterable[torch.nn.Module]) -> list[Linear | LayerNorm | str]:
    """Describe a chain of torch modules (Linear, Tanh, SiLU, ReLU, Sigmoid, Identity, Dropout, LayerNorm).

    Dropout is skipped (the certificate is for the evaluation-time encoder).
    """
    out: list[Linear | LayerNorm | str] = []
    names = {
        torch.nn.Tanh: "tanh",
        torch.nn.SiLU: "swish",
        torch.nn.ReLU: "relu",
        torch.nn.Sigmoid: "sigmoid",
        torch.nn.Identity: "identity",
    }
    for m in modules:
        if isinstance(m, torch.nn.Linear):
            out.append(Linear(m.weight, m.bias))
        elif isinstance(m, torch.nn.LayerNorm):
            out.append(LayerNorm(m.weight, m.bias, float(m.eps)))
        elif isinstance(m, torch.nn.Dropout):
            continue
        elif type(m) in names:
            out.append(names[type(m)])
        else:
            raise ValueError(f"unsupported module {type(m).__name__}; describe it with Linear/LayerNorm/str.")
    return out


_INPUT_DOMAINS = ("l2_normalised_binary", "binary", "unit_box")


@dataclass(frozen=True)
class LipschitzCertificate:
    """Certified constants for ``||x_u - x_v||_1`` -> posterior distances (module docstring).

    Attributes
    ----------
    l_w2 : float
        ``W1 <= W2 <= l_w2 * ||x_u - x_v||_1``: the certificate for Lemma 2.4.
    l_mu : float
        ``||mu_u - mu_v||_2 <= l_mu * ||x_u - x_v||_1``.
    l_sigma : float
        ``||sigma_u - sigma_v||_2 <= l_sigma * ||x_u - x_v||_1``; ``l_w2 <= sqrt(l_mu^2 + l_sigma^2)``.
    l_trunk : float
        Constant of the trunk, input (L1) to last hidden layer (L2); 1 for an empty trunk.
    input_factor : float
        The first linear layer's factor ``min(kappa_1 ||W||_{1->2}, kappa_2 ||W||_2)`` (already in l_trunk).
    input_route : str
        "l1" or "l2", whichever gave input_factor.
    logvar_max : numpy.ndarray, shape (d,)
        Upper bound of logvar per coordinate used for sigma.
    logvar_max_source : str
        "interval" (whole input domain) or "given" (caller's bound, e.g. observed over a data set).
    input_domain : str
    """

    l_w2: float
    l_mu: float
    l_sigma: float
    l_trunk: float
    input_factor: float
    input_route: str
    logvar_max: np.ndarray = field(repr=False)
    logvar_max_source: str
    input_domain: str


def _spectral(w: np.ndarray) -> float:
    return float(torch.linalg.matrix_norm(torch.from_numpy(w), ord=2))


def _first_layer_factor(w: np.ndarray, domain: str) -> tuple[float, str]:
    kappa2 = math.sqrt(2.0 - math.sqrt(2.0)) if domain == "l2_normalised_binary" else 1.0
    l1 = float(np.sqrt((w**2).sum(0)).max())  # ||W||_{1->2}: largest column norm
    l2 = kappa2 * _spectral(w)
    return (l1, "l1") if l1 <= l2 else (l2, "l2")


def _interval_input(w: np.ndarray, b: np.ndarray, domain: str) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = np.maximum(w, 0.0), np.maximum(-w, 0.0)
    if domain == "l2_normalised_binary":
        # inputs are nonnegative unit vectors: w.n <= w+.n <= ||w+||_2 and >= -||w-||_2
        return b - np.sqrt((neg**2).sum(1)), b + np.sqrt((pos**2).sum(1))
    return b - neg.sum(1), b + pos.sum(1)  # inputs in [0, 1]^I


def _interval_activation(name: str, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if name == "identity":
        return lo, hi
    if name in ("tanh", "relu", "sigmoid"):
        f = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "sigmoid": special.expit}[name]
        return f(lo), f(hi)
    if name == "swish":
        f = lambda x: x * special.expit(x)  # noqa: E731
        flo, fhi = f(lo), f(hi)
        argmin = _swish_argmin()
        inside = (lo <= argmin) & (argmin <= hi)
        return np.where(inside, f(argmin), np.minimum(flo, fhi)), np.maximum(flo, fhi)
    raise ValueError(f"no interval rule for activation {name!r}.")


def certified_lipschitz(
    trunk: Sequence[Linear | LayerNorm | str | tuple[ArrayLike, ArrayLike | None] | ArrayLike],
    mu_head: Linear | tuple[ArrayLike, ArrayLike | None],
    logvar_head: Linear | tuple[ArrayLike, ArrayLike | None],
    *,
    input_domain: str = "l2_normalised_binary",
    activation_lipschitz: Mapping[str, float] | None = None,
    logvar_max: ArrayLike | None = None,
) -> LipschitzCertificate:
    r"""Certified Lipschitz constant of x -> (mu, sigma) from L1 inputs to W2 (hence W1) between posteriors.

    Parameters
    ----------
    trunk : sequence
        The layers from the (preprocessed) input to the last hidden layer, in order: :class:`Linear` (or a
        bare (out, in) weight, or a (weight, bias) pair), :class:`LayerNorm`, or an activation name ("tanh",
        "swish", "relu", "sigmoid", "identity"). Must start with a linear layer if not empty. Multi-VAE:
        ``[Linear(W1, b1), "tanh"]`` with heads from :func:`split_head` of the (2 d, 600) output layer.
    mu_head, logvar_head : Linear or (weight, bias)
        Heads applied to the last hidden layer (the input itself when the trunk is empty).
    input_domain : {"l2_normalised_binary", "binary", "unit_box"}
        What the first linear layer sees: x / ||x||_2 for binary x with at least one positive (the Multi-VAE
        and RecVAE default), raw binary x, or any x in [0, 1]^I (the Lipschitz part then holds for all real
        inputs; the domain only shapes the logvar interval).
    activation_lipschitz : mapping, optional
        Overrides of the activation constants (tanh 1, relu 1, identity 1, sigmoid 0.25, swish
        :func:`swish_lipschitz`).
    logvar_max : array, shape (d,) or scalar, optional
        Upper bound of logvar per coordinate. Default: interval bound propagation over the whole input
        domain. Pass ``logvar.max(0)`` over a data set to certify the pairs within that set.

    Returns
    -------
    LipschitzCertificate
    """
    if input_domain not in _INPUT_DOMAINS:
        raise ValueError(f"input_domain must be one of {_INPUT_DOMAINS}; got {input_domain!r}.")
    table = _activation_table()
    if activation_lipschitz is not None:
        table.update({k: float(v) for k, v in activation_lipschitz.items()})
    layers: list[Linear | LayerNorm | str] = []
    for item in trunk:
        if isinstance(item, (Linear, LayerNorm, str)):
            layers.append(item)
        elif isinstance(item, tuple):
            layers.append(Linear(*item))
        else:
            layers.append(Linear(item))
    if layers and not isinstance(layers[0], Linear):
        raise ValueError("the trunk must start with a linear layer (the input preprocessing is input_domain).")
    w_mu, _ = (mu_head if isinstance(mu_head, Linear) else Linear(*mu_head)).arrays()
    w_lv, b_lv = (logvar_head if isinstance(logvar_head, Linear) else Linear(*logvar_head)).arrays()
    if w_mu.shape != w_lv.shape:
        raise ValueError(f"mu and logvar heads must have the same shape; got {w_mu.shape} and {w_lv.shape}.")

    # Lipschitz constant and interval box of the trunk
    l_trunk, factor, route = 1.0, 1.0, "none"
    lo = hi = None
    for i, layer in enumerate(layers):
        if isinstance(layer, Linear):
            w, b = layer.arrays()
            if lo is not None and w.shape[1] != lo.shape[0]:
                raise ValueError(f"layer {i}: weight expects {w.shape[1]} inputs, previous layer has {lo.shape[0]}.")
            if i == 0:
                factor, route = _first_layer_factor(w, input_domain)
                l_trunk *= factor
                lo, hi = _interval_input(w, b, input_domain)
            else:
                l_trunk *= _spectral(w)
                c, r = (lo + hi) / 2.0, (hi - lo) / 2.0
                c, r = w @ c + b, np.abs(w) @ r
                lo, hi = c - r, c + r
        elif isinstance(layer, LayerNorm):
            if not layer.eps > 0:
                raise ValueError(f"layer {i}: LayerNorm eps must be > 0 for a finite Lipschitz constant.")
            gamma = _np(layer.weight)
            beta = _np(layer.bias)
            width = lo.shape[0]
            gamma = np.ones(width) if gamma is None else gamma
            beta = np.zeros(width) if beta is None else beta
            l_trunk *= float(np.abs(gamma).max()) / math.sqrt(layer.eps)
            # normalised entries satisfy sum = 0, sum of squares < width, so |entry| <= sqrt(width - 1)
            half = np.abs(gamma) * math.sqrt(max(width - 1, 0))
            lo, hi = beta - half, beta + half
        else:
            if layer not in table:
                raise ValueError(f"layer {i}: unknown activation {layer!r}; pass activation_lipschitz for it.")
            l_trunk *= table[layer]
            lo, hi = _interval_activation(layer, lo, hi)
    if lo is not None and w_mu.shape[1] != lo.shape[0]:
        raise ValueError(f"heads expect {w_mu.shape[1]} inputs, the trunk outputs {lo.shape[0]}.")

    # logvar upper bound per coordinate
    d = w_lv.shape[0]
    if logvar_max is None:
        if lo is None:
            _, lv_hi = _interval_input(w_lv, b_lv, input_domain)
        else:
            c, r = (lo + hi) / 2.0, (hi - lo) / 2.0
            lv_hi = w_lv @ c + b_lv + np.abs(w_lv) @ r
        lv_max, source = lv_hi, "interval"
    else:
        lv_max = np.broadcast_to(_np(logvar_max), (d,)).astype(np.float64)
        source = "given"
    s = 0.5 * np.exp(0.5 * lv_max)
    w_sigma = s[:, None] * w_lv
    joint = np.concatenate([w_mu, w_sigma], axis=0)

    if layers:
        l_mu = l_trunk * _spectral(w_mu)
        l_sigma = l_trunk * _spectral(w_sigma)
        l_w2 = l_trunk * _spectral(joint)
    else:
        # the heads are the first linear layer: apply the L1 -> L2 input factor to each of them
        l_mu = _first_layer_factor(w_mu, input_domain)[0]
        l_sigma = _first_layer_factor(w_sigma, input_domain)[0]
        l_w2, route = _first_layer_factor(joint, input_domain)
        factor = 1.0
    return LipschitzCertificate(
        l_w2=float(l_w2),
        l_mu=float(l_mu),
        l_sigma=float(l_sigma),
        l_trunk=float(l_trunk),
        input_factor=float(factor),
        input_route=route,
        logvar_max=np.asarray(lv_max, dtype=np.float64),
        logvar_max_source=source,
        input_domain=input_domain,
    )


@dataclass(frozen=True)
class LipschitzRatios:
    """Empirical ratios ``w / ||x_u - x_v||_1`` over pairs with distinct inputs.

    Attributes
    ----------
    n_pairs : int
        Pairs with ``l1 > 0`` (the ratios' sample).
    n_zero_distance : int
        Pairs with identical inputs, left out (their w must be 0 for a deterministic encoder).
    max : float
        Largest ratio; ``inf`` if some pair with identical inputs has ``w > 0``.
    argmax : int
        Index (into the input arrays) of the pair attaining ``max``; -1 if there is none.
    quantile_levels, quantiles : numpy.ndarray
    """

    n_pairs: int
    n_zero_distance: int
    max: float
    argmax: int
    quantile_levels: np.ndarray
    quantiles: np.ndarray


def _pairs_1d(w: ArrayLike, l1: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    w = _np(w)
    l1 = _np(l1)
    if w is None or l1 is None or w.shape != l1.shape or w.ndim != 1:
        raise ValueError("w and l1 must be 1-D arrays of the same length (one entry per pair).")
    if (w < 0).any() or (l1 < 0).any():
        raise ValueError("w and l1 are distances and must be >= 0.")
    return w, l1


def empirical_lipschitz_ratios(
    w: ArrayLike, l1: ArrayLike, quantiles: Sequence[float] = (0.5, 0.9, 0.99, 0.999)
) -> LipschitzRatios:
    """Max and quantiles of ``w / ||x_u - x_v||_1`` (Lemma 2.4's ratio) over pairs.

    Parameters
    ----------
    w : array, shape (n_pairs,)
        Posterior distances of the pairs (W1 estimates, or W2 / mean-distance bounds).
    l1 : array, shape (n_pairs,)
        Input L1 distances ``||x_u - x_v||_1`` (for binary rows: the size of the symmetric difference).
    quantiles : sequence of float in [0, 1]
    """
    w, l1 = _pairs_1d(w, l1)
    levels = np.asarray(quantiles, dtype=np.float64)
    if levels.ndim != 1 or ((levels < 0) | (levels > 1)).any():
        raise ValueError(f"quantiles must be levels in [0, 1]; got {quantiles!r}.")
    zero = l1 == 0
    ratios = w[~zero] / l1[~zero]
    if ratios.size == 0:
        raise ValueError("no pair with distinct inputs (all l1 == 0); ratios are undefined.")
    idx = np.flatnonzero(~zero)
    k = int(np.argmax(ratios))
    mx, arg = float(ratios[k]), int(idx[k])
    if (w[zero] > 0).any():
        mx, arg = math.inf, int(np.flatnonzero(zero & (w > 0))[0])
    return LipschitzRatios(
        n_pairs=int(ratios.size),
        n_zero_distance=int(zero.sum()),
        max=mx,
        argmax=arg,
        quantile_levels=levels,
        quantiles=np.quantile(ratios, levels),
    )


def count_lipschitz_violations(w: ArrayLike, l1: ArrayLike, lipschitz: float, rtol: float = 1e-9) -> int:
    """Number of pairs with ``w > lipschitz * l1 * (1 + rtol)`` (must be 0 for a certified constant)."""
    w, l1 = _pairs_1d(w, l1)
    if not (math.isfinite(lipschitz) and lipschitz >= 0):
        raise ValueError(f"lipschitz must be a finite value >= 0; got {lipschitz}.")
    return int((w > lipschitz * l1 * (1.0 + rtol) + 1e-12).sum())
