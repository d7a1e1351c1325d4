r"""KL to the prior and the KL budget decomposition of PAPER.md section 5.

For posteriors :math:`q_n = q(z \mid x_n) = N(\mu_n, \mathrm{diag}\,\sigma_n^2)`, n = 1..K, and the prior
:math:`p = N(0, I_d)`, the aggregate posterior is the equal-weight mixture
:math:`q_h(z) = \frac{1}{K}\sum_n q_n(z)`, and the mean KL splits exactly as

.. math::
    \frac{1}{K}\sum_n KL(q_n \,\|\, p) \;=\; I_q(X_h; Z) \;+\; KL(q_h \,\|\, p),
    \qquad 0 \le I_q(X_h; Z) \le \log K,

with :math:`I_q(X_h; Z) = \frac{1}{K}\sum_n E_{q_n}[\log q_n(z) - \log q_h(z)]` (Hoffman & Johnson 2016,
"ELBO surgery"). The bound :math:`\log K` holds sample by sample: :math:`\log q_h(z) \ge \log q_n(z) - \log K`.

Estimator (:func:`kl_budget`)
-----------------------------
* mean KL: analytic (:func:`kl_to_standard_normal`), averaged over the K rows.
* Draw S samples :math:`z_{n,s} \sim q_n` from every component (stratified sampling of :math:`q_h`).
* :math:`\log q_h(z) = \mathrm{logsumexp}_m \log q_m(z) - \log K`, computed **exactly over all K components**
  for every sample, in chunks of queries x components (torch, float64). No minibatch approximation, hence no
  minibatch bias. Each log-density block is first one matmul via
  :math:`\sum_k (z_k - \mu_{mk})^2/\sigma_{mk}^2 = [z^2, z] \cdot [\sigma_m^{-2}, -2\mu_m\sigma_m^{-2}] +
  \sum_k \mu_{mk}^2 \sigma_{mk}^{-2}`.
* Stable evaluation. The expanded form cancels when :math:`|\mu|/\sigma` is large (tiny variances): its rounding
  error is at most :math:`\gamma\,(\|z\|^2 \max_k \sigma_{mk}^{-2} + \sum_k \mu_{mk}^2\sigma_{mk}^{-2} + |c_m|)`
  with :math:`\gamma = (2d + 8)\,u`, u the float64 unit roundoff (a standard dot-product bound). Every
  (sample, component) pair whose bound exceeds :data:`EXACT_TOLERANCE` nats and that can matter (its value plus
  the bound is within :data:`LSE_MARGIN` + log K of the sample's own log density, a lower bound of the maximum) is
  recomputed centred, :math:`\sum_k ((z_k - \mu_{mk})/\sigma_{mk})^2`. The own component is always the exact
  :math:`\sum_k \epsilon_k^2` of the standardised draw, so :math:`\log q_h(z) \ge \log q_n(z) - \log K` holds in
  floating point and the estimate of :math:`I_q` never exceeds :math:`\log K` beyond rounding.
* :math:`KL(q_h\|p) \approx \mathrm{mean}_{n,s}[\log q_h(z_{n,s}) - \log p(z_{n,s})]`.
* :math:`I_q \approx \mathrm{mean}_{n,s}[\log q_n(z_{n,s}) - \log q_h(z_{n,s})]`, the direct estimate; every
  term is at most :math:`\log K`, so the estimate never exceeds :math:`\log K`.
* The identity gives a second estimate, ``mean_kl - kl_aggregate``; the gap
  ``mean_kl - (I + KL(q_h||p))`` equals the Monte Carlo error of
  :math:`\mathrm{mean}_{n,s}[\log q_n(z) - \log p(z)]` around the analytic mean KL, with a standard error:
  it is the "three terms add up" check.

Uncertainty, two kinds:

* ``*_se`` (used by :meth:`KLBudget.ci`): **user-clustered** standard errors, the uncertainty if the N users are
  viewed as a sample from a population. A user's M mask draws and S samples are not independent, so the
  per-sample terms (and the analytic KL rows) are first averaged per user, :math:`\bar t_n = \frac{1}{MS}
  \sum_{m,s} t_{m n s}`, and the standard error is :math:`\mathrm{sd}_n(\bar t_n)/\sqrt N` (the naive
  :math:`\mathrm{sd}(t)/\sqrt{MNS}` is too narrow by up to :math:`\sqrt{MS}`). For ``mean_kl`` this is the
  only uncertainty: the mean KL of a fixed sample is exact.
* ``*_mc_se``: Monte Carlo error for the **fixed** set of K posteriors (stratified sampling of :math:`q_h`),
  :math:`\sqrt{\sum_c \widehat{\mathrm{var}}_c(t)/S}\,/K` from the within-component variances (S >= 2); with
  S = 1 the conservative :math:`\mathrm{sd}(t)/\sqrt{K}`. This is the error to compare with a quadrature of
  the same mixture.

Intervals are normal-approximation intervals.

Saturation. Every term of :math:`\hat I` is at most :math:`\log K`, with equality when the sample's own
component dominates :math:`q_h(z)`. When the posteriors barely overlap, :math:`\hat I \approx \log K`: the
estimate then measures K, not the model, and the split of the mean KL into :math:`I_q` and
:math:`KL(q_h\|p)` is **not identifiable at this sample size** (both terms move with N and M for an unchanged
model). The rule, fixed here: ``saturated`` when the gap ``log K - I`` is at most
:data:`SATURATION_FRACTION` (5%) of log K, i.e. the geometric-mean weight of a sample's own component in
:math:`q_h` exceeds :math:`K^{-0.05}` (0.60 at K = 24,170; 0.75 at K = 300). The same rule with log N flags
the user-level :math:`I(X; Z)` (``saturated_users``).

Mask draws: pass ``mu, logvar`` of shape (M, N, d) for M mask draws of N users. The K = M N rows are the
mixture components (each (user, mask) pair weighs 1/(MN)), which estimates :math:`q_h` and
:math:`I_q(X_h; Z)` under the mask distribution, bounded by :math:`\log(MN)`. Because
:math:`I(X_h; Z) = I(X; Z) + I(B; Z \mid X)` for the user X and the mask B, the user-level part
:math:`I(X; Z) = \mathrm{mean}[\log \bar q_n(z) - \log q_h(z)] \le \log N` with
:math:`\bar q_n = \frac{1}{M}\sum_m q(z \mid x_n \odot b_m)` is reported too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from geometry.wasserstein import _check_latent_axis, _coerce
from models.lazy import lazy_import

torch = lazy_import("torch")
stats = lazy_import("scipy.stats")

ArrayLike = Any

__all__ = ["EXACT_TOLERANCE", "LSE_MARGIN", "SATURATION_FRACTION", "KLBudget", "kl_budget", "kl_to_standard_normal"]

_LOG_2PI = math.log(2.0 * math.pi)
_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2.0

SATURATION_FRACTION = 0.05
"""The saturation rule: I(X_h; Z) is flagged when ``log K - I <= SATURATION_FRACTION * log K``."""
EXACT_TOLERANCE = 1e-9
"""Nats: a log density whose expanded-form rounding bound exceeds this is recomputed centred."""
LSE_MARGIN = 50.0
"""Nats below the own log density (plus log K) beyond which a component cannot change log q_h(z)."""


def kl_to_standard_normal(mu: ArrayLike, logvar: ArrayLike) -> ArrayLike:
    r"""KL(N(mu, diag exp(logvar)) || N(0, I)) per row, summed over the latent dimensions.

    .. math::
        KL = \tfrac12 \sum_k \big(\mu_k^2 + e^{\ell_k} - 1 - \ell_k\big),

    with :math:`e^{\ell} - 1` computed by ``expm1`` so that nearly standard posteriors keep their precision.
    Summed, not averaged, over dimensions (PROTOCOL.md pitfall).

    Parameters
    ----------
    mu, logvar : numpy.ndarray or torch.Tensor, broadcastable shapes (..., d)

    Returns
    -------
    numpy.ndarray or torch.Tensor, shape broadcast(...)
        Nonnegative; differentiable for tensors.
    """
    use_torch, (mu, logvar) = _coerce(("mu", "logvar"), (mu, logvar))
    _check_latent_axis(("mu", "logvar"), (mu, logvar))
    if use_torch:
        return 0.5 * (mu**2 + torch.expm1(logvar) - logvar).sum(-1)
    return 0.5 * (mu**2 + np.expm1(logvar) - logvar).sum(-1)


@dataclass(frozen=True)
class KLBudget:
    """Result of :func:`kl_budget`: ``mean_kl = mutual_information + kl_aggregate`` (up to MC error).

    Attributes
    ----------
    n_users, n_mask_draws, n_samples_per_component : int
        N, M and S; K = M N mixture components, K S samples.
    log_n_components : float
        log K, the upper bound on ``mutual_information``.
    mean_kl, mean_kl_se : float
        Analytic mean KL(q_n || p) over the K rows (exact) and its user-clustered standard error (the M draws of a
        user averaged first, then the standard error over the N users).
    mutual_information, mutual_information_se, mutual_information_mc_se : float
        Direct estimate of I_q(X_h; Z) (<= log K); user-clustered and Monte Carlo (fixed posteriors) errors.
    mutual_information_users, mutual_information_users_se, mutual_information_users_mc_se : float
        I(X; Z) with the mask draws of each user pooled (<= log N); equals ``mutual_information`` when M = 1.
    kl_aggregate, kl_aggregate_se, kl_aggregate_mc_se : float
        KL(q_h || p).
    mutual_information_identity : float
        ``mean_kl - kl_aggregate``, the identity-based estimate of I_q(X_h; Z).
    additivity_gap, additivity_gap_se, additivity_gap_mc_se : float
        ``mean_kl - (mutual_information + kl_aggregate)``; zero in expectation.
    mi_gap_to_ceiling, mi_users_gap_to_ceiling : float
        ``log K - mutual_information`` and ``log N - mutual_information_users`` (>= 0 up to rounding).
    saturated, saturated_users : bool
        The saturation rule of the module docstring (gap <= :data:`SATURATION_FRACTION` x ceiling): the estimate
        sits at its ceiling and the split of the mean KL is not identifiable at this sample size.
    n_exact_recomputed : int
        (sample, component) log densities recomputed centred because the expanded form could have lost more than
        :data:`EXACT_TOLERANCE` nats.
    confidence : float
        Level of the intervals returned by :meth:`ci`.
    """

    n_users: int
    n_mask_draws: int
    n_samples_per_component: int
    log_n_components: float
    mean_kl: float
    mean_kl_se: float
    mutual_information: float
    mutual_information_se: float
    mutual_information_users: float
    mutual_information_users_se: float
    kl_aggregate: float
    kl_aggregate_se: float
    mutual_information_identity: float
    additivity_gap: float
    additivity_gap_se: float
    confidence: float = 0.95
    mutual_information_mc_se: float = float("nan")
    mutual_information_users_mc_se: float = float("nan")
    kl_aggregate_mc_se: float = float("nan")
    additivity_gap_mc_se: float = float("nan")
    mi_gap_to_ceiling: float = float("nan")
    mi_users_gap_to_ceiling: float = float("nan")
    saturated: bool = False
    saturated_users: bool = False
    n_exact_recomputed: int = 0

    @property
    def saturation_message(self) -> str | None:
        """``"not identifiable at this sample size: Î = log K - x"`` when :attr:`saturated`, else None."""
        if not self.saturated:
            return None
        return f"not identifiable at this sample size: Î = log K - {self.mi_gap_to_ceiling:.3g}"

    def ci(self, name: str) -> tuple[float, float]:
        """Normal-approximation interval ``estimate -/+ z_{(1+confidence)/2} * se`` (user-clustered se).

        ``name`` is one of "mean_kl", "mutual_information", "mutual_information_users", "kl_aggregate",
        "additivity_gap". The interval is returned even when :attr:`saturated`; callers that report the split
        of the mean KL should then report the flag (:attr:`saturation_message`) instead of the interval.
        """
        if name not in (
            "mean_kl",
            "mutual_information",
            "mutual_information_users",
            "kl_aggregate",
            "additivity_gap",
        ):
            raise ValueError(f"no interval for {name!r}; use one of the estimates with a '_se' field.")
        half = float(stats.norm.ppf(0.5 + self.confidence / 2.0)) * getattr(self, f"{name}_se")
        est = getattr(self, name)
        return est - half, est + half


def _to_float64_numpy(name: str, a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or mask them before calling.")
    return a


def _clustered_mean_se(x: torch.Tensor) -> tuple[float, float]:
    r"""Mean and user-clustered standard error of terms ``x`` of shape (M, N, S) (mask draw, user, sample).

    :math:`\bar x_n = \mathrm{mean}_{m,s}\, x_{mns}`, se :math:`= \mathrm{sd}(\bar x_n) / \sqrt N` (NaN for N = 1).
    """
    per_user = x.mean(dim=(0, 2))
    n = per_user.numel()
    se = float(per_user.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return float(x.mean()), se


def _monte_carlo_se(x: torch.Tensor) -> float:
    r"""Monte Carlo standard error of the stratified mean of ``x`` (M, N, S) for fixed components.

    :math:`\sqrt{\sum_c \widehat{\mathrm{var}}_c / S} / K` over the K = M N components with S >= 2; with S = 1
    the conservative :math:`\mathrm{sd}(x) / \sqrt{K}`.
    """
    flat = x.reshape(-1, x.shape[-1])
    k, s = flat.shape
    if s >= 2:
        return float(math.sqrt(float(flat.var(dim=1, unbiased=True).sum()) / s) / k)
    return float(flat.std(unbiased=True)) / math.sqrt(k) if k > 1 else float("nan")


def _saturated(gap: float, ceiling: float) -> bool:
    return bool(gap <= SATURATION_FRACTION * ceiling)


def kl_budget(
    mu: ArrayLike,
    logvar: ArrayLike,
    *,
    n_samples_per_user: int = 1,
    chunk_size: int = 512,
    component_chunk_size: int = 8192,
    rng: np.random.Generator | int | None = None,
    confidence: float = 0.95,
) -> KLBudget:
    r"""Estimate mean KL, :math:`I_q(X_h; Z)` and :math:`KL(q_h\,\|\,p)` over all posteriors (module docstring).

    .. math::
        \hat I = \frac{1}{KS}\sum_{c,s}\Big[\log q_c(z_{cs}) - \log \tfrac1K \sum_{c'} q_{c'}(z_{cs})\Big]
        \le \log K, \qquad
        \widehat{KL}(q_h\|p) = \frac{1}{KS}\sum_{c,s}\big[\log q_h(z_{cs}) - \log p(z_{cs})\big],

    with :math:`z_{cs} \sim q_c` and :math:`\log q_h` exact over all K components (stable evaluation, module
    docstring), user-clustered standard errors and the saturation flag.

    Parameters
    ----------
    mu, logvar : array (numpy or torch), shape (N, d) or (M, N, d)
        Posterior means and log-variances; a leading axis holds M mask draws of the same N users.
    n_samples_per_user : int
        S, samples drawn from every mixture component (every (user, mask) row).
    chunk_size : int
        Samples per query block.
    component_chunk_size : int
        Components per block of the log-sum-exp; a block holds ``chunk_size * component_chunk_size``
        float64 values (32 MB at the defaults, about three such blocks at a time).
    rng : numpy.random.Generator, int or None
        Draws the standard normals (all K S d of them up front, float64, so results do not depend on the
        chunk sizes).
    confidence : float in (0, 1)

    Returns
    -------
    KLBudget

    Notes
    -----
    Cost: K S x K x 2d multiply-adds and K S K exponentials; about 14 s on a shared 2-core CPU for K = 10,000,
    d = 200, S = 1 (see benchmarks/RESULTS_geometry.md), growing as K^2. The centred recomputation adds d
    operations per flagged pair (none for well-conditioned posteriors; see ``n_exact_recomputed``).

    References
    ----------
    Hoffman & Johnson (2016), "ELBO surgery"; PAPER.md section 5.
    """
    mu_np = _to_float64_numpy("mu", mu)
    lv_np = _to_float64_numpy("logvar", logvar)
    if mu_np.shape != lv_np.shape or mu_np.ndim not in (2, 3):
        raise ValueError(f"mu and logvar must share shape (N, d) or (M, N, d); got {mu_np.shape} and {lv_np.shape}.")
    if n_samples_per_user < 1 or chunk_size < 1 or component_chunk_size < 1:
        raise ValueError("n_samples_per_user, chunk_size and component_chunk_size must all be >= 1.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}.")
    if mu_np.ndim == 2:
        mu_np, lv_np = mu_np[None], lv_np[None]
    m_draws, n_users, d = mu_np.shape
    k = m_draws * n_users
    s = n_samples_per_user
    if k < 1 or d < 1:
        raise ValueError(f"need at least one posterior and one latent dimension; got shape {mu_np.shape}.")

    mu_c = torch.from_numpy(mu_np.reshape(k, d))  # component index c = m * N + n
    lv_c = torch.from_numpy(lv_np.reshape(k, d))
    ivar = torch.exp(-lv_c)
    # log q_c(z) = -0.5 * ([z^2, z] @ B_c + const_c)
    b_mat = torch.cat([ivar, -2.0 * mu_c * ivar], dim=1).T.contiguous()  # (2d, K)
    mu2_ivar = (mu_c**2 * ivar).sum(1)
    lv_sum = lv_c.sum(1)
    const = mu2_ivar + lv_sum + d * _LOG_2PI  # (K,)
    # rounding bound of the expanded form, in nats: 0.5 * gamma * (|z|^2 max ivar + sum mu^2 ivar + |const| terms)
    gamma = 0.5 * (2 * d + 8) * _UNIT_ROUNDOFF
    ivar_max = ivar.max(dim=1).values
    bound_const = gamma * (mu2_ivar + lv_sum.abs() + d * _LOG_2PI)

    kl_rows = kl_to_standard_normal(mu_c, lv_c)  # (K,)
    mean_kl, mean_kl_se = _clustered_mean_se(kl_rows.view(m_draws, n_users, 1))

    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eps = torch.from_numpy(gen.standard_normal((k * s, d)))
    # query q = c * S + j  is the j-th sample of component c
    own = torch.arange(k).repeat_interleave(s)
    log_k = math.log(k)
    log_m = math.log(m_draws)
    margin = LSE_MARGIN + log_k

    t_agg = torch.empty(k * s, dtype=torch.float64)  # log q_h(z) - log p(z)
    t_mi = torch.empty(k * s, dtype=torch.float64)  # log q_own(z) - log q_h(z)
    t_mi_user = torch.empty(k * s, dtype=torch.float64)  # log qbar_user(z) - log q_h(z)
    t_gap = torch.empty(k * s, dtype=torch.float64)  # KL_own - (log q_own(z) - log p(z))
    mu_users = mu_c.view(m_draws, n_users, d)
    lv_users = lv_c.view(m_draws, n_users, d)
    n_exact = 0

    for q0 in range(0, k * s, chunk_size):
        q1 = min(q0 + chunk_size, k * s)
        c = own[q0:q1]
        e = eps[q0:q1]
        z = mu_c[c] + torch.exp(0.5 * lv_c[c]) * e
        feats = torch.cat([z * z, z], dim=1)
        zz = (z * z).sum(1)
        # own density from the standardised draw: (z - mu)^2 / var = eps^2 exactly
        log_own = -0.5 * ((e * e).sum(1) + lv_c[c].sum(1) + d * _LOG_2PI)
        lse = log_own.clone()
        rows = torch.arange(q1 - q0)
        for c0 in range(0, k, component_chunk_size):
            c1 = min(c0 + component_chunk_size, k)
            block = torch.addmm(const[c0:c1][None, :], feats, b_mat[:, c0:c1]).mul_(-0.5)
            mine = (c >= c0) & (c < c1)
            block[rows[mine], c[mine] - c0] = -math.inf  # the own term enters exactly, through log_own
            bound = torch.addr(bound_const[c0:c1][None, :].expand(q1 - q0, -1), zz, gamma * ivar_max[c0:c1])
            redo = (bound > EXACT_TOLERANCE) & (block + bound >= (log_own - margin)[:, None])
            if bool(redo.any()):
                qi, cj = redo.nonzero(as_tuple=True)
                n_exact += int(qi.numel())
                for p0 in range(0, qi.numel(), 65536):
                    a, b = qi[p0 : p0 + 65536], cj[p0 : p0 + 65536] + c0
                    quad = (((z[a] - mu_c[b]) ** 2) * ivar[b]).sum(1)
                    block[a, b - c0] = -0.5 * (quad + lv_sum[b] + d * _LOG_2PI)
            lse = torch.logaddexp(lse, torch.logsumexp(block, dim=1))
        log_qh = lse - log_k
        log_p = -0.5 * (zz + d * _LOG_2PI)
        t_agg[q0:q1] = log_qh - log_p
        t_mi[q0:q1] = log_own - log_qh
        t_gap[q0:q1] = kl_rows[c] - (log_own - log_p)
        if m_draws == 1:
            t_mi_user[q0:q1] = t_mi[q0:q1]
        else:
            user = c % n_users
            mu_u, lv_u = mu_users[:, user].transpose(0, 1), lv_users[:, user].transpose(0, 1)  # (r, M, d)
            dens = -0.5 * (((z[:, None] - mu_u) ** 2 * torch.exp(-lv_u)).sum(2) + lv_u.sum(2) + d * _LOG_2PI)
            t_mi_user[q0:q1] = torch.logsumexp(dens, dim=1) - log_m - log_qh

    shape = (m_draws, n_users, s)
    terms = {name: t.view(shape) for name, t in (("agg", t_agg), ("mi", t_mi), ("mi_u", t_mi_user), ("gap", t_gap))}
    kl_agg, kl_agg_se = _clustered_mean_se(terms["agg"])
    mi, mi_se = _clustered_mean_se(terms["mi"])
    mi_u, mi_u_se = _clustered_mean_se(terms["mi_u"])
    gap, gap_se = _clustered_mean_se(terms["gap"])
    log_n = math.log(n_users)
    return KLBudget(
        n_users=n_users,
        n_mask_draws=m_draws,
        n_samples_per_component=s,
        log_n_components=log_k,
        mean_kl=mean_kl,
        mean_kl_se=mean_kl_se,
        mutual_information=mi,
        mutual_information_se=mi_se,
        mutual_information_users=mi_u,
        mutual_information_users_se=mi_u_se,
        kl_aggregate=kl_agg,
        kl_aggregate_se=kl_agg_se,
        mutual_information_identity=mean_kl - kl_agg,
        additivity_gap=gap,
        additivity_gap_se=gap_se,
        confidence=confidence,
        mutual_information_mc_se=_monte_carlo_se(terms["mi"]),
        mutual_information_users_mc_se=_monte_carlo_se(terms["mi_u"]),
        kl_aggregate_mc_se=_monte_carlo_se(terms["agg"]),
        additivity_gap_mc_se=_monte_carlo_se(terms["gap"]),
        mi_gap_to_ceiling=log_k - mi,
        mi_users_gap_to_ceiling=log_n - mi_u,
        saturated=_saturated(log_k - mi, log_k),
        saturated_users=_saturated(log_n - mi_u, log_n),
        n_exact_recomputed=n_exact,
    )
