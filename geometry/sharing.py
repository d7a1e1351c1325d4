r"""The latent sharing radius (PAPER.md section 2, Theorem 2.3): how one SGD step on user v changes user u's loss.

Theorem 2.3. Write :math:`g_u = \nabla_\theta L_u(\theta)` for the gradient of user u's loss with respect to the
decoder parameters. One SGD step on v, :math:`\theta^+ = \theta - \eta g_v`, changes u's loss by

.. math::
    L_u(\theta^+) - L_u(\theta) = -\eta \langle g_u, g_v\rangle + R_{uv}(\eta),
    \qquad R_{uv}(\eta) = \tfrac12 \eta^2\, g_v^\top \nabla^2 L_u(\xi)\, g_v = O(\eta^2),

and, since :math:`\langle g_u, g_v\rangle = \lVert g_u\rVert^2 + \langle g_u, g_v - g_u\rangle \ge
\lVert g_u\rVert(\lVert g_u\rVert - \lVert g_u - g_v\rVert)` with :math:`\lVert g_u - g_v\rVert \le D_{uv} =
L_{\theta z} W_1(q_u, q_v) + \Delta_x(u, v)`,

.. math::
    L_u(\theta^+) - L_u(\theta) \le -\eta \lVert g_u\rVert (\lVert g_u\rVert - D_{uv}) + O(\eta^2).

So v helps u to first order when :math:`W_1(q_u, q_v) < r_{share}(u, v) = [\lVert g_u\rVert - \Delta_x(u,
v)]_+ / L_{\theta z}`. In terms of the *normalised gain* of u,

.. math::
    \mathrm{gain}_{uv} = -\frac{L_u(\theta^+) - L_u(\theta)}{\eta \lVert g_u\rVert}
    \;\ge\; \lVert g_u\rVert - \Delta_x(u, v) - L_{\theta z} W_1(q_u, q_v) + O(\eta),

a bound that falls linearly with W1 and vanishes at :math:`r_{share}`.

This module measures the quantities of the theorem on any differentiable per-user loss:

* :func:`sharing_effects`: for pairs (u, v), the gradients' norms, cosine and distance, the first-order
  prediction :math:`-\eta\langle g_u, g_v\rangle`, the measured change after one real step on v, and the
  second-order remainder (measured - predicted).
* :func:`sign_agreement`: how often the measured change has the sign of the first-order prediction.
* :func:`estimate_sharing_radius`: an *empirical* r_share, where a least-squares line of gain against W1
  crosses zero, and where a binned mean of gain crosses zero; reported only when the bootstrap interval of the
  slope lies below 0 and that of the intercept above 0 (:data:`RADIUS_RULE`), the bootstrap resampling
  clusters of pairs that share a user.
* :func:`first_order_check`, :func:`choose_eta`: is a step size in the first-order regime (median second-order
  remainder under 5% of the median first-order prediction), and the largest such step size of a grid.
* :func:`pair_w1_bounds`: the closed-form sandwich :math:`\lVert\mu_u - \mu_v\rVert \le W_1 \le W_2` per pair
  (:mod:`geometry.wasserstein`), and :func:`sample_pairs` to draw pairs.

The module is model-agnostic: it takes a per-user loss callable and the list of parameter tensors to step
(e.g. the decoder's), never a model class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geometry.wasserstein import w1_bounds
from models.lazy import lazy_import

torch = lazy_import("torch")

__all__ = [
    "ETA_GRID",
    "FIRST_ORDER_TOL",
    "RADIUS_RULE",
    "BinnedGain",
    "EtaChoice",
    "FirstOrderCheck",
    "SharingEffects",
    "SharingRadius",
    "SignAgreement",
    "choose_eta",
    "estimate_sharing_radius",
    "first_order_check",
    "pair_w1_bounds",
    "sample_pairs",
    "select_eta",
    "sharing_effects",
    "sharing_effects_grid",
    "sign_agreement",
]

LossFn = Callable[[Sequence[int]], "torch.Tensor"]

# per-pair dot products are taken on chunks of this many gradient entries (about 64 MB in float64 per operand)
_CHUNK_ENTRIES = 1 << 23


# ---------------------------------------------------------------------------------------------------------
# per-pair effects of one SGD step
# ---------------------------------------------------------------------------------------------------------


def _nan_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b != 0)


@dataclass(frozen=True)
class SharingEffects:
    r"""Per-pair effect of one SGD step on v on the loss of u (Theorem 2.3); all arrays have shape (n_pairs,).

    Attributes
    ----------
    u, v : numpy.ndarray of int64
        The pairs: u is the user whose loss is watched, v the user the step is taken on.
    eta : float
        The step size.
    loss_u : numpy.ndarray
        :math:`L_u(\theta)` before the step.
    predicted : numpy.ndarray
        First-order prediction :math:`-\eta \langle g_u, g_v\rangle`.
    measured : numpy.ndarray
        :math:`L_u(\theta - \eta g_v) - L_u(\theta)`, both losses evaluated by the same ``loss_fn`` call
        pattern so that the difference carries only the rounding of the two loss values.
    grad_norm_u, grad_norm_v : numpy.ndarray
        :math:`\lVert g_u\rVert_2, \lVert g_v\rVert_2`.
    cosine : numpy.ndarray
        :math:`\langle g_u, g_v\rangle / (\lVert g_u\rVert \lVert g_v\rVert)`; NaN where a norm is 0.
    grad_distance : numpy.ndarray
        :math:`\lVert g_u - g_v\rVert_2`, the gradient mismatch that :math:`D_{uv}` bounds from above
        (so ``grad_distance / W1`` is a lower estimate of :math:`L_{\theta z}` where :math:`\Delta_x = 0`).
    loss_resolution : numpy.ndarray
        :math:`\epsilon_{\mathrm{mach}} \cdot |L_u(\theta)|` in the loss dtype: the rounding scale of
        ``measured``; measured changes of that size carry no sign information (use float64 or a larger eta).

    Derived (properties)
    --------------------
    remainder = measured - predicted, the :math:`O(\eta^2)` term.
    gain = -measured / (eta ||g_u||), the normalised improvement of u (NaN where ||g_u|| = 0).
    predicted_gain = <g_u, g_v> / ||g_u|| = ||g_v|| cos, its first-order value.
    gain_lower_bound = ||g_u|| - ||g_u - g_v||, the theorem's first-order bound with the measured mismatch in
    place of D_uv; ``predicted_gain >= gain_lower_bound`` always (Cauchy-Schwarz).
    """

    u: np.ndarray
    v: np.ndarray
    eta: float
    loss_u: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    grad_norm_u: np.ndarray
    grad_norm_v: np.ndarray
    cosine: np.ndarray
    grad_distance: np.ndarray
    loss_resolution: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.u.shape[0])

    @property
    def remainder(self) -> np.ndarray:
        return self.measured - self.predicted

    @property
    def gain(self) -> np.ndarray:
        return _nan_divide(-self.measured, self.eta * self.grad_norm_u)

    @property
    def predicted_gain(self) -> np.ndarray:
        return _nan_divide(-self.predicted, self.eta * self.grad_norm_u)

    @property
    def gain_lower_bound(self) -> np.ndarray:
        return self.grad_norm_u - self.grad_distance


def _check_pairs(pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]], n_users: int | None = None) -> np.ndarray:
    if isinstance(pairs, torch.Tensor):
        pairs = pairs.detach().cpu().numpy()
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"pairs must be a non-empty (n_pairs, 2) array of user indices (u, v); got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pairs must hold integer user indices; got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if (arr < 0).any() or (n_users is not None and (arr >= n_users).any()):
        bound = f"[0, {n_users})" if n_users is not None else ">= 0"
        raise ValueError(f"pairs must hold user indices in {bound}; got values from {arr.min()} to {arr.max()}.")
    return arr


def _check_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    params = list(params)
    if not params:
        raise ValueError(
            "params is empty; pass the list of parameter tensors to step, e.g. list(decoder.parameters())."
        )
    for k, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point() or not p.requires_grad or not p.is_leaf:
            raise ValueError(
                f"params[{k}] must be a floating-point leaf tensor with requires_grad=True (an nn.Parameter)."
            )
    if len({p.device for p in params}) != 1:
        raise ValueError("params live on several devices; pass parameters of one device.")
    return params


def _call_loss(loss_fn: LossFn, users: np.ndarray) -> torch.Tensor:
    out = loss_fn([int(x) for x in users])
    if not isinstance(out, torch.Tensor) or out.shape != (len(users),):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"loss_fn(users) must return a tensor of shape (len(users),) = ({len(users)},); got {shape}.")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("loss_fn returned NaN or infinite losses; check the model and the users passed.")
    return out


def _user_gradients(
    loss_fn: LossFn, params: list[torch.Tensor], users: np.ndarray, dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray]:
    """Flattened gradients ``G[k] = grad L_{users[k]}`` (n, P) and the losses, one forward/backward per user.

    One user per pass keeps the cost linear in the number of users: a backward through a batched forward
    visits the whole batch's graph for every row.
    """
    n_params = sum(p.numel() for p in params)
    grads = torch.empty(len(users), n_params, dtype=dtype, device=params[0].device)
    losses = np.empty(len(users))
    for k, user in enumerate(users):
        with torch.enable_grad():
            loss = _call_loss(loss_fn, np.array([user]))[0]
            if not loss.requires_grad:
                raise ValueError(
                    "loss_fn's output does not depend on params (requires_grad is False); compute the loss from "
                    "params with autograd enabled."
                )
            parts = torch.autograd.grad(loss, params, allow_unused=True)
        grads[k] = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1).to(dtype)
                for g, p in zip(parts, params, strict=True)
            ]
        )
        losses[k] = float(loss.detach())
    return grads, losses


def _pair_products(
    grads: torch.Tensor, iu: np.ndarray, iv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: <g_u, g_v>, ||g_u||, ||g_v||, ||g_u - g_v|| in float64, on chunks of pairs."""
    n_params = grads.shape[1]
    chunk = max(1, _CHUNK_ENTRIES // max(n_params, 1))
    out = np.empty((4, iu.shape[0]))
    tu_all = torch.as_tensor(iu, device=grads.device)
    tv_all = torch.as_tensor(iv, device=grads.device)
    for s in range(0, iu.shape[0], chunk):
        gu = grads[tu_all[s : s + chunk]].double()
        gv = grads[tv_all[s : s + chunk]].double()
        stats = torch.stack(
            [(gu * gv).sum(1), gu.norm(dim=1), gv.norm(dim=1), (gu - gv).norm(dim=1)]  # direct, no cancellation
        )
        out[:, s : s + chunk] = stats.cpu().numpy()
    return out[0], out[1], out[2], out[3]


def sharing_effects(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
    eta: float,
    *,
    max_gradient_bytes: int = 2 << 30,
) -> SharingEffects:
    r"""Measure, for each pair (u, v), how one SGD step on v changes u's loss (Theorem 2.3).

    For every distinct user w of ``pairs`` the gradient :math:`g_w = \nabla_\theta L_w(\theta)` is computed
    once (one forward/backward of ``loss_fn([w])``) and flattened; pair quantities are then dot products:

    .. math::
        \text{predicted}_{uv} = -\eta \langle g_u, g_v\rangle, \qquad
        \text{measured}_{uv} = L_u(\theta - \eta g_v) - L_u(\theta).

    The measured step is grouped by v: for each distinct v, ``loss_fn`` is called on all u paired with v
    (under ``torch.no_grad``), the step :math:`\theta \leftarrow \theta - \eta g_v` is applied in place, the
    same call is repeated, and the parameters are copied back from a saved clone, so they are restored
    bit-exactly (also if ``loss_fn`` raises). Cost: one forward/backward per distinct user plus two forward
    calls per distinct v; memory: the gradient matrix, ``n_distinct_users x n_params`` entries.

    Precision: ``measured`` is a difference of two losses, so it carries a rounding error of about
    :math:`\epsilon_{\mathrm{mach}} |L_u|` (``loss_resolution``); in float32 (:math:`\epsilon \approx 1.2
    \cdot 10^{-7}`) small steps drown in it. Run the model in float64 (``model.double()``) for small eta.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(users: Sequence[int]) -> torch.Tensor`` of shape ``(len(users),)``: each user's loss
        :math:`L_u(\theta)` as a **deterministic** function of ``params`` (fix z, e.g. ``z = mu`` computed
        once and detached, or fixed eps draws per user; resampling inside ``loss_fn`` is detected and
        rejected). A user's loss must not depend on which other users are in the call.
    params : sequence of torch.Tensor
        The parameters :math:`\theta` to differentiate and step (leaf tensors with ``requires_grad``), e.g.
        ``list(model.decoder.parameters())``. Their ``.grad`` fields are not touched.
    pairs : array-like of int, shape (n_pairs, 2)
        Rows (u, v): the step is taken on v, u's loss is watched. u == v is allowed (the self-effect).
    eta : float
        Step size, > 0.
    max_gradient_bytes : int
        Refuse (ValueError) when the gradient matrix would exceed this size; pass fewer distinct users per
        call (split ``pairs``) or fewer parameters (e.g. the decoder's last layer).

    Returns
    -------
    SharingEffects
        Arrays in the order of ``pairs``.
    """
    return _effects_on_grid(loss_fn, params, pairs, [eta], max_gradient_bytes)[0]


def _check_eta(eta: object) -> float:
    try:
        value = float(eta)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a finite step size > 0; got {eta!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"eta must be a finite step size > 0; got {eta!r}.")
    return value


def sharing_effects_grid(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
    etas: Sequence[float],
    *,
    max_gradient_bytes: int = 2 << 30,
) -> list[SharingEffects]:
    r""":func:`sharing_effects` for several step sizes, computing the gradients once.

    The gradients :math:`g_w` and the pair products do not depend on :math:`\eta`; only the measured step does
    (two forward calls per distinct v and step size). ``result[k]`` equals ``sharing_effects(..., etas[k])``.

    Parameters
    ----------
    loss_fn, params, pairs, max_gradient_bytes
        As in :func:`sharing_effects`.
    etas : sequence of float
        Step sizes, each finite and > 0 (at least one).

    Returns
    -------
    list of SharingEffects
        One per step size, in the order of ``etas``.
    """
    return _effects_on_grid(loss_fn, params, pairs, etas, max_gradient_bytes)


def _effects_on_grid(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
    etas: Sequence[float],
    max_gradient_bytes: int,
) -> list[SharingEffects]:
    etas = [_check_eta(e) for e in etas]
    if not etas:
        raise ValueError("etas is empty; pass at least one step size.")
    params = _check_params(params)
    pairs = _check_pairs(pairs)
    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    users, inverse = np.unique(pairs, return_inverse=True)
    inverse = inverse.reshape(pairs.shape)
    n_params = sum(p.numel() for p in params)
    need = len(users) * n_params * torch.finfo(dtype).bits // 8
    if need > max_gradient_bytes:
        raise ValueError(
            f"the gradients of {len(users)} distinct users x {n_params} parameters need {need / 2**30:.2f} GiB, over "
            f"max_gradient_bytes = {max_gradient_bytes / 2**30:.2f} GiB; split pairs into smaller calls, pass fewer "
            "params, or raise max_gradient_bytes."
        )
    grads, single_losses = _user_gradients(loss_fn, params, users, dtype)
    dot, norm_u, norm_v, distance = _pair_products(grads, inverse[:, 0], inverse[:, 1])
    eps = torch.finfo(dtype).eps
    single = single_losses[inverse[:, 0]]
    cosine = _nan_divide(dot, norm_u * norm_v)
    out = []
    for eta in etas:
        before, after = _measured_step(loss_fn, params, pairs, inverse, grads, eta)
        if not np.allclose(before, single, rtol=math.sqrt(eps), atol=math.sqrt(eps)):
            worst = int(np.argmax(np.abs(before - single)))
            raise ValueError(
                f"loss_fn is not deterministic: user {pairs[worst, 0]} got loss {single[worst]!r} alone and "
                f"{before[worst]!r} in a batch; fix z (e.g. z = mu or fixed eps per user) and make each user's loss "
                "independent of the other users in the call."
            )
        out.append(
            SharingEffects(
                u=pairs[:, 0].copy(),
                v=pairs[:, 1].copy(),
                eta=eta,
                loss_u=before,
                predicted=-eta * dot,
                measured=after - before,
                grad_norm_u=norm_u,
                grad_norm_v=norm_v,
                cosine=cosine,
                grad_distance=distance,
                loss_resolution=eps * np.abs(before),
            )
        )
    return out


def _measured_step(
    loss_fn: LossFn,
    params: list[torch.Tensor],
    pairs: np.ndarray,
    inverse: np.ndarray,
    grads: torch.Tensor,
    eta: float,
) -> tuple[np.ndarray, np.ndarray]:
    """u's losses before and after the step ``theta - eta g_v``, grouped by v; parameters restored bit-exactly."""
    n = pairs.shape[0]
    before = np.empty(n)
    after = np.empty(n)
    order = np.argsort(pairs[:, 1], kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pairs[order, 1]) != 0])
    bounds = np.r_[starts, n]
    sizes = [p.numel() for p in params]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for a, b in itertools.pairwise(bounds):
                idx = order[a:b]
                us = pairs[idx, 0]
                before[idx] = _call_loss(loss_fn, us).double().cpu().numpy()
                step = grads[inverse[idx[0], 1]].split(sizes)
                for p, g in zip(params, step, strict=True):
                    p.sub_(g.view_as(p).to(p.dtype), alpha=eta)
                after[idx] = _call_loss(loss_fn, us).double().cpu().numpy()
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return before, after


# ---------------------------------------------------------------------------------------------------------
# sign agreement of the first-order prediction
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignAgreement:
    """Sign agreement of predicted and measured changes.

    Attributes
    ----------
    fraction : float or None
        ``n_agree / (n_agree + n_disagree)``; None when no pair has two nonzero values.
    n_agree, n_disagree : int
        Pairs where both values are nonzero and have the same / opposite sign.
    n_zero : int
        Pairs where at least one value is exactly 0 (left out of the fraction).
    """

    fraction: float | None
    n_agree: int
    n_disagree: int
    n_zero: int


def _paired_arrays(**arrays: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Per-pair inputs as finite 1-D float64 arrays of one common length (one clear error otherwise)."""
    out = []
    for name, a in arrays.items():
        a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array with one value per pair; got shape {a.shape}.")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values; drop those pairs (e.g. ||g_u|| = 0) first.")
        out.append(a)
    if len({a.shape for a in out}) > 1:
        raise ValueError(f"{' and '.join(arrays)} must have the same length; got {[a.shape[0] for a in out]}.")
    return out


def sign_agreement(predicted: np.ndarray | torch.Tensor, measured: np.ndarray | torch.Tensor) -> SignAgreement:
    r"""Fraction of pairs whose measured change has the sign of the first-order prediction.

    .. math::
        \frac{\#\{k : \mathrm{sign}(p_k) = \mathrm{sign}(m_k) \ne 0\}}{\#\{k : p_k \ne 0,\ m_k \ne 0\}}

    Exact zeros (e.g. a parameter block that u's loss does not touch) carry no sign: they are counted in
    ``n_zero`` and left out of the fraction.

    Parameters
    ----------
    predicted, measured : array, shape (n,)
        E.g. ``SharingEffects.predicted`` and ``SharingEffects.measured``.

    Returns
    -------
    SignAgreement
    """
    p, m = _paired_arrays(predicted=predicted, measured=measured)
    nonzero = (p != 0) & (m != 0)
    same = nonzero & (np.sign(p) == np.sign(m))
    n_agree, n_cmp = int(same.sum()), int(nonzero.sum())
    return SignAgreement(
        fraction=n_agree / n_cmp if n_cmp else None,
        n_agree=n_agree,
        n_disagree=n_cmp - n_agree,
        n_zero=int(p.shape[0] - n_cmp),
    )


# ---------------------------------------------------------------------------------------------------------
# empirical sharing radius
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinnedGain:
    """Mean gain in quantile bins of W1.

    Attributes
    ----------
    edges : numpy.ndarray, shape (n_bins + 1,)
        Bin edges (quantiles of W1; duplicate quantiles merged, so there may be fewer bins than asked).
    w1_mean, gain_mean : numpy.ndarray, shape (n_bins,)
        Mean W1 and mean gain of the pairs in each bin.
    counts : numpy.ndarray of int64, shape (n_bins,)
    crossing : float or None
        W1 where the binned mean gain first turns non-positive, linearly interpolated between the mean W1
        of the last positive bin and of the first non-positive bin after it; None with ``reason`` otherwise.
    reason : str or None
        Why there is no crossing.
    """

    edges: np.ndarray
    w1_mean: np.ndarray
    gain_mean: np.ndarray
    counts: np.ndarray
    crossing: float | None
    reason: str | None


RADIUS_RULE = (
    "a radius only when the bootstrap interval (at the estimator's level, resampling clusters of pairs) of the slope "
    "of gain on W1 lies entirely below 0 and that of the intercept entirely above 0, so that the gain at W1 = 0 is "
    "positive, falls with W1, and the line crosses zero at a finite r > 0; otherwise no radius, with the reason. "
    "The binned crossing follows the same rule."
)
"""The decision rule of :func:`estimate_sharing_radius`, in words (fixed before any result is seen)."""


@dataclass(frozen=True)
class SharingRadius:
    r"""Empirical estimate of the sharing radius from (W1, gain) pairs.

    Attributes
    ----------
    radius : float or None
        :math:`\hat r = -a / b` for the least-squares line ``gain = a + b W1``, reported only under the rule
        :data:`RADIUS_RULE`: the bootstrap interval of b lies below 0 and that of a above 0. None otherwise
        (see ``reason``).
    ci : tuple of float or None
        Percentile bootstrap interval of the radius at level ``level`` (clusters resampled with replacement). A
        resample whose slope is not negative has no crossing and counts as radius :math:`+\infty`, one whose
        intercept is not positive as radius 0. None when ``radius`` is None.
    level : float
    intercept, slope : float
        The fitted line (a, b), always finite.
    intercept_ci, slope_ci : tuple of float
        Percentile bootstrap intervals of a and b at level ``level``.
    residual_std : float
        Standard deviation of the fit residuals.
    extrapolated : bool
        The crossing lies beyond the largest observed W1 (the line, not the data, reaches zero).
    boot_no_crossing : float
        Share of bootstrap resamples whose slope was not negative.
    n_pairs, n_boot : int
    n_clusters : int
        Resampling units of the bootstrap (``n_pairs`` when no clusters were given).
    binned : BinnedGain
        The model-free check: the crossing of the binned mean gain, under the same rule.
    reason : str or None
        Why ``radius`` is None.
    rule : str
        :data:`RADIUS_RULE`.
    """

    radius: float | None
    ci: tuple[float, float] | None
    level: float
    intercept: float
    slope: float
    intercept_ci: tuple[float, float]
    slope_ci: tuple[float, float]
    residual_std: float
    extrapolated: bool
    boot_no_crossing: float
    n_pairs: int
    n_boot: int
    n_clusters: int
    binned: BinnedGain
    reason: str | None
    rule: str = RADIUS_RULE


def _line_fits(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares intercepts and slopes of rows of (m, n) x against y; slope NaN-free (0 when var x = 0)."""
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(-1)
    sxy = ((x - xm) * (y - ym)).sum(-1)
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 0)
    return ym[..., 0] - slope * xm[..., 0], slope


def _cluster_bootstrap_lines(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, n_boot: int, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r"""Intercepts and slopes of the least-squares line on ``n_boot`` cluster-bootstrap resamples.

    A resample draws the ``C`` clusters with replacement and keeps every pair of each drawn cluster. With
    :math:`m_c` the number of times cluster c is drawn and the per-cluster sums :math:`S_c = (n_c, \sum x,
    \sum y, \sum x^2, \sum xy)` of the centred data, the resample's sums are :math:`\sum_c m_c S_c`, so the
    fit is one matrix product per block of resamples (exactly the fit on the resampled pairs).
    """
    n_clusters = int(cluster.max()) + 1
    x0, y0 = float(x.mean()), float(y.mean())
    xc, yc = x - x0, y - y0
    stats = np.stack(
        [np.bincount(cluster, weights=w, minlength=n_clusters) for w in (np.ones_like(xc), xc, yc, xc * xc, xc * yc)],
        axis=1,
    )
    boot_a = np.empty(n_boot)
    boot_b = np.empty(n_boot)
    rows = max(1, (1 << 22) // n_clusters)  # bounded (rows, n_clusters) count blocks
    for s in range(0, n_boot, rows):
        m = min(rows, n_boot - s)
        draw = gen.integers(0, n_clusters, size=(m, n_clusters))
        flat = (np.arange(m)[:, None] * n_clusters + draw).ravel()
        counts = np.bincount(flat, minlength=m * n_clusters).reshape(m, n_clusters).astype(np.float64)
        n, sx, sy, sxx, sxy = (counts @ stats).T
        mx, my = sx / n, sy / n
        vxx = sxx - n * mx * mx
        vxy = sxy - n * mx * my
        slope = np.divide(vxy, vxx, out=np.zeros_like(vxy), where=vxx > 1e-12 * np.maximum(sxx, 1e-300))
        boot_b[s : s + m] = slope
        boot_a[s : s + m] = y0 + my - slope * (x0 + mx)
    return boot_a, boot_b


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


def _binned(w1: np.ndarray, gain: np.ndarray, n_bins: int, blocked: str | None) -> BinnedGain:
    edges = np.unique(np.quantile(w1, np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.shape[0] < 2:
        edges = np.array([w1.min(), w1.max()])
    # right-closed interior edges, the first bin also holds the minimum
    which = np.clip(np.searchsorted(edges, w1, side="left") - 1, 0, edges.shape[0] - 2)
    counts = np.bincount(which, minlength=edges.shape[0] - 1)
    keep = counts > 0
    w1_mean = np.bincount(which, weights=w1, minlength=counts.shape[0])[keep] / counts[keep]
    gain_mean = np.bincount(which, weights=gain, minlength=counts.shape[0])[keep] / counts[keep]
    counts = counts[keep].astype(np.int64)
    crossing, reason = None, None
    if blocked is not None:
        reason = f"not reported, as for the line: {blocked}"
    elif gain_mean[0] <= 0:
        reason = "the mean gain is not positive even in the nearest W1 bin"
    else:
        down = np.flatnonzero(gain_mean <= 0)
        if down.size == 0:
            reason = "the binned mean gain stays positive over the observed W1 range"
        else:
            j = int(down[0])
            x0, x1, y0, y1 = w1_mean[j - 1], w1_mean[j], gain_mean[j - 1], gain_mean[j]
            crossing = float(x0 + (x1 - x0) * y0 / (y0 - y1))
    return BinnedGain(edges, w1_mean, gain_mean, counts, crossing, reason)


def _cluster_codes(clusters: np.ndarray | torch.Tensor | Sequence[int] | None, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    arr = np.asarray(clusters.detach().cpu() if isinstance(clusters, torch.Tensor) else clusters)
    if arr.shape != (n,):
        raise ValueError(f"clusters must hold one label per pair, shape ({n},); got shape {arr.shape}.")
    return np.unique(arr, return_inverse=True)[1].reshape(n)


def estimate_sharing_radius(
    w1: np.ndarray | torch.Tensor,
    gain: np.ndarray | torch.Tensor,
    *,
    clusters: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    n_bins: int = 10,
    n_boot: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> SharingRadius:
    r"""Empirical sharing radius: where the gain of u from a step on v, fitted linearly in W1, reaches zero.

    Theorem 2.3 bounds the normalised gain from below by a line that falls with W1,
    :math:`\mathrm{gain}_{uv} \ge \lVert g_u\rVert - \Delta_x(u, v) - L_{\theta z} W_1(q_u, q_v)`, vanishing at
    :math:`r_{share}`. We fit :math:`\mathrm{gain} \approx a + b\, W_1` by least squares over pairs and report
    :math:`\hat r = -a/b`, with a percentile bootstrap interval, plus the crossing of the mean gain in quantile
    bins of W1 as a model-free check.

    **Decision rule** (:data:`RADIUS_RULE`, fixed before results are seen). With :math:`[b_{lo}, b_{hi}]` and
    :math:`[a_{lo}, a_{hi}]` the percentile bootstrap intervals at ``level`` of the slope and the intercept,

    .. math::
        \hat r = -a / b \ \text{is reported} \iff b_{hi} < 0 \ \text{and}\ a_{lo} > 0,

    otherwise ``radius`` is None with the reason (e.g. "slope interval [-0.02, 0.01] includes 0"). A point
    estimate :math:`b < 0 < a` is not enough: on data where the gain does not depend on W1 it holds about half
    the time. Under such a null the slope interval misses 0 on the low side with probability about
    :math:`(1 - \text{level}) / 2` (2.5% at 95%), so a radius is reported at most that often; the binned
    crossing is withheld whenever the line's is.

    **Resampling units.** Pairs that share a user are not independent: in :mod:`analyses.sharing_radius` every
    anchor u appears in two pairs, and its gradient norm :math:`\lVert g_u\rVert` and latent neighbourhood move
    both pairs' gain and W1 together. Pass ``clusters`` (e.g. the anchor u of each pair) and the bootstrap
    resamples clusters with replacement, keeping all pairs of a drawn cluster (the cluster bootstrap; Cameron,
    Gelbach and Miller, "Bootstrap-based improvements for inference with clustered errors", 2008). Without
    ``clusters`` each pair is its own cluster. Dependence through a shared partner v across clusters is not
    modelled (in the job, partners rarely repeat).

    This is an **empirical estimate**, not the theorem's radius. It assumes (i) the mean gain falls about
    linearly with W1 over the observed range (the theorem bounds the gain, it does not say the mean is
    linear); (ii) one radius for all pairs: :math:`r_{share}(u, v)` varies with :math:`\lVert g_u\rVert` and
    :math:`\Delta_x(u, v)`, so :math:`\hat r` is a population-level summary; (iii) the step is small enough for
    the :math:`O(\eta)` part of the gain to be negligible (:func:`first_order_check`); (iv) the W1 passed is W1
    or a consistent proxy: the radius is in the units of whatever was passed (e.g. the lower or upper end of
    :func:`pair_w1_bounds`).

    Parameters
    ----------
    w1 : array, shape (n,)
        W1(q_u, q_v) per pair (>= 0).
    gain : array, shape (n,)
        Normalised gain per pair, e.g. ``SharingEffects.gain`` (finite; drop NaN pairs first).
    clusters : array, shape (n,), optional
        Label of each pair's resampling unit (any hashable values, e.g. the user u); None: pairs independent.
    n_bins : int
        Quantile bins of W1 for the binned mean.
    n_boot : int
        Bootstrap resamples (>= 1).
    level : float
        Level of the bootstrap intervals, in (0, 1).
    rng : numpy.random.Generator, int or None

    Returns
    -------
    SharingRadius
        ``radius`` None with ``reason`` when the rule does not hold.
    """
    w1, gain = _paired_arrays(w1=w1, gain=gain)
    if w1.shape[0] < 3:
        raise ValueError(f"need at least 3 pairs to fit a line with residuals; got {w1.shape[0]}.")
    if (w1 < 0).any():
        raise ValueError("w1 must be >= 0 (a distance); got negative values.")
    if np.ptp(w1) == 0:
        raise ValueError(
            "all w1 values are equal, so gain cannot be fitted against W1; pass pairs at varied distances."
        )
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}.")
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ValueError(f"n_boot must be an integer >= 1; got {n_boot!r}.")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level!r}.")
    n_bins, n_boot = int(n_bins), int(n_boot)
    n = w1.shape[0]
    cluster = _cluster_codes(clusters, n)
    n_clusters = int(cluster.max()) + 1
    if n_clusters < 3:
        raise ValueError(f"need at least 3 clusters to resample; got {n_clusters}.")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    a, b = _line_fits(w1, gain)
    a, b = float(a), float(b)
    residual_std = float(np.std(gain - (a + b * w1)))

    boot_a, boot_b = _cluster_bootstrap_lines(w1, gain, cluster, n_boot, gen)
    falls = boot_b < 0
    boot_r = np.full(n_boot, np.inf)
    boot_r[falls] = np.maximum(-boot_a[falls] / boot_b[falls], 0.0)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    # order statistics, not interpolation: the sample may hold inf
    r_lo, r_hi = (float(q) for q in np.quantile(boot_r, [lo_q, hi_q], method="inverted_cdf"))
    s_lo, s_hi = (float(q) for q in np.quantile(boot_b, [lo_q, hi_q], method="inverted_cdf"))
    a_lo, a_hi = (float(q) for q in np.quantile(boot_a, [lo_q, hi_q], method="inverted_cdf"))

    pct = f"{100 * level:g}%"
    radius, ci, reason, extrapolated = None, None, None, False
    if not s_hi < 0:
        where = "lies above 0" if s_lo > 0 else "includes 0"
        reason = (
            f"the {pct} interval of the slope of gain on W1, {_interval(s_lo, s_hi)}, {where}: the gain does not "
            f"fall with W1 (estimate {b:.3g})"
        )
    elif not a_lo > 0:
        reason = (
            f"the {pct} interval of the intercept, {_interval(a_lo, a_hi)}, does not lie above 0: no pair is "
            f"reliably predicted to gain, even at W1 = 0 (estimate {a:.3g})"
        )
    else:
        radius = -a / b
        ci = (r_lo, r_hi)
        extrapolated = bool(radius > w1.max())
    return SharingRadius(
        radius=radius,
        ci=ci,
        level=float(level),
        intercept=a,
        slope=b,
        intercept_ci=(a_lo, a_hi),
        slope_ci=(s_lo, s_hi),
        residual_std=residual_std,
        extrapolated=extrapolated,
        boot_no_crossing=float(1.0 - falls.mean()),
        n_pairs=n,
        n_boot=n_boot,
        n_clusters=n_clusters,
        binned=_binned(w1, gain, n_bins, reason),
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------------------
# the first-order regime: choosing eta
# ---------------------------------------------------------------------------------------------------------

ETA_GRID = (1e-3, 1e-4, 1e-5, 1e-6)
"""Step sizes tried by :func:`choose_eta`, largest first."""
FIRST_ORDER_TOL = 0.05
"""Largest median |remainder| / median |first-order prediction| accepted as the first-order regime."""


@dataclass(frozen=True)
class FirstOrderCheck:
    r"""Is a step size in the first-order regime of Theorem 2.3?

    Attributes
    ----------
    eta : float
    remainder_ratio : float or None
        :math:`\mathrm{median}_{uv} |R_{uv}(\eta)| / \mathrm{median}_{uv} |\eta \langle g_u, g_v\rangle|`, the
        second-order remainder against the first-order prediction; None when every prediction is 0.
    median_relative_remainder : float or None
        :math:`\mathrm{median}_{uv} |R_{uv}| / |\eta\langle g_u, g_v\rangle|` over pairs with a nonzero prediction
        (a per-pair ratio: heavy-tailed where the prediction is near 0, so not the criterion).
    tol : float
    holds : bool
        ``remainder_ratio < tol``.
    """

    eta: float
    remainder_ratio: float | None
    median_relative_remainder: float | None
    tol: float
    holds: bool


def first_order_check(effects: SharingEffects, tol: float = FIRST_ORDER_TOL) -> FirstOrderCheck:
    r"""Check the first-order regime of one step size on measured effects.

    For a step :math:`\eta`, Taylor's theorem gives :math:`L_u(\theta - \eta g_v) - L_u(\theta) = -\eta\langle
    g_u, g_v\rangle + R_{uv}(\eta)` with :math:`R_{uv}(\eta) = \tfrac12 \eta^2 g_v^\top \nabla^2 L_u(\xi) g_v`
    (Theorem 2.3, PAPER.md section 2). The step is in the first-order regime when

    .. math::
        \frac{\mathrm{median}_{uv} |R_{uv}(\eta)|}{\mathrm{median}_{uv} |\eta \langle g_u, g_v\rangle|} < \text{tol}
        \quad (\text{default } 0.05).

    Since :math:`R = O(\eta^2)` and the prediction is :math:`O(\eta)`, the ratio falls about linearly with
    :math:`\eta` until the loss's rounding (``SharingEffects.loss_resolution``) takes over.

    Parameters
    ----------
    effects : SharingEffects
    tol : float
        In (0, 1).

    Returns
    -------
    FirstOrderCheck
    """
    if not (0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), e.g. 0.05; got {tol!r}.")
    prediction = np.abs(effects.predicted)
    remainder = np.abs(effects.remainder)
    scale = float(np.median(prediction))
    ratio = float(np.median(remainder)) / scale if scale > 0 else None
    nonzero = prediction > 0
    relative = float(np.median(remainder[nonzero] / prediction[nonzero])) if nonzero.any() else None
    return FirstOrderCheck(
        eta=float(effects.eta),
        remainder_ratio=ratio,
        median_relative_remainder=relative,
        tol=float(tol),
        holds=ratio is not None and ratio < tol,
    )


@dataclass(frozen=True)
class EtaChoice:
    """The step size chosen by :func:`select_eta` / :func:`choose_eta`.

    Attributes
    ----------
    eta : float
        The largest step size of the grid in the first-order regime, else the smallest tried.
    effects : SharingEffects
        The effects at ``eta``.
    check : FirstOrderCheck
        The check at ``eta``.
    tried : tuple of FirstOrderCheck
        The checks of the step sizes tried, largest first, up to and including ``eta``.
    holds : bool
        ``check.holds``: False when no step size of the grid is in the first-order regime.
    """

    eta: float
    effects: SharingEffects
    check: FirstOrderCheck
    tried: tuple[FirstOrderCheck, ...]
    holds: bool


def select_eta(candidates: Sequence[SharingEffects], tol: float = FIRST_ORDER_TOL) -> EtaChoice:
    """From effects measured at several step sizes, the largest step size in the first-order regime.

    The step sizes are tried from the largest down; the first whose :func:`first_order_check` holds is chosen
    (a larger step keeps the measured change furthest above the loss's rounding). When none holds, the smallest
    is returned with ``holds`` False.

    Parameters
    ----------
    candidates : sequence of SharingEffects
        Effects of the same pairs at distinct step sizes (any order).
    tol : float

    Returns
    -------
    EtaChoice
    """
    if not candidates:
        raise ValueError("candidates is empty; pass effects at one or more step sizes.")
    ordered = sorted(candidates, key=lambda e: -e.eta)
    tried = []
    for effects in ordered:
        check = first_order_check(effects, tol)
        tried.append(check)
        if check.holds:
            break
    return EtaChoice(eta=effects.eta, effects=effects, check=check, tried=tuple(tried), holds=check.holds)


def choose_eta(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
    *,
    grid: Sequence[float] = ETA_GRID,
    tol: float = FIRST_ORDER_TOL,
    max_gradient_bytes: int = 2 << 30,
) -> EtaChoice:
    r"""The largest step size of ``grid`` whose median second-order remainder is under ``tol`` of the median
    first-order prediction (:func:`first_order_check`), with its effects.

    The gradients are computed once (:func:`sharing_effects_grid`); each step size costs two forward calls per
    distinct v.

    Parameters
    ----------
    loss_fn, params, pairs, max_gradient_bytes
        As in :func:`sharing_effects`.
    grid : sequence of float
        Step sizes to try (default :data:`ETA_GRID`, 1e-3 to 1e-6).
    tol : float
        Default :data:`FIRST_ORDER_TOL` (0.05).

    Returns
    -------
    EtaChoice
    """
    effects = sharing_effects_grid(loss_fn, params, pairs, list(grid), max_gradient_bytes=max_gradient_bytes)
    return select_eta(effects, tol)


# ---------------------------------------------------------------------------------------------------------
# pairs and their W1
# ---------------------------------------------------------------------------------------------------------


def sample_pairs(n_users: int, n_pairs: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Uniform random ordered pairs (u, v) of distinct users, with replacement across pairs.

    Parameters
    ----------
    n_users : int
        >= 2.
    n_pairs : int
        >= 1.
    rng : numpy.random.Generator, int or None

    Returns
    -------
    numpy.ndarray of int64, shape (n_pairs, 2)
    """
    if n_users < 2:
        raise ValueError(f"need at least 2 users to form pairs; got n_users = {n_users}.")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1; got {n_pairs}.")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    u = gen.integers(0, n_users, n_pairs)
    v = gen.integers(0, n_users - 1, n_pairs)
    v = v + (v >= u)  # uniform over the n_users - 1 others
    return np.stack([u, v], axis=1).astype(np.int64)


def pair_w1_bounds(
    mu: np.ndarray | torch.Tensor,
    logvar: np.ndarray | torch.Tensor,
    pairs: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
    *,
    lower: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    r"""Closed-form sandwich of W1 per pair, ``lower <= W1(q_u, q_v) <= W2(q_u, q_v)``.

    With :math:`\sigma = \exp(\mathrm{logvar}/2)`, this is :func:`geometry.wasserstein.w1_bounds` on the rows
    of each pair: ``lower="mean"`` gives :math:`\lVert\mu_u - \mu_v\rVert`, ``"projection"`` the sharper
    one-dimensional-projection bound; the upper end is the closed-form
    :math:`W_2^2 = \lVert\mu_u - \mu_v\rVert^2 + \lVert\sigma_u - \sigma_v\rVert^2`.

    Parameters
    ----------
    mu, logvar : array, shape (n_users, d)
        Posterior means and log-variances.
    pairs : array-like of int, shape (n_pairs, 2)
    lower : {"mean", "projection"}

    Returns
    -------
    (lower, upper) : two float64 numpy arrays of shape (n_pairs,)
    """
    arrs = []
    for name, a in (("mu", mu), ("logvar", logvar)):
        a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape (n_users, d); got {a.shape}.")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        arrs.append(a)
    mu, logvar = arrs
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape (n_users, d); got {mu.shape} and {logvar.shape}.")
    pairs = _check_pairs(pairs, n_users=mu.shape[0])
    sigma = np.exp(0.5 * logvar)
    u, v = pairs[:, 0], pairs[:, 1]
    low, up = w1_bounds(mu[u], sigma[u], mu[v], sigma[v], lower=lower)
    return np.asarray(low, dtype=np.float64), np.asarray(up, dtype=np.float64)
