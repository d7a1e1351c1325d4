"""Wasserstein distances between diagonal-Gaussian posteriors q_u = N(mu_u, diag sigma_u^2).

The latent sharing radius of PAPER.md (Theorem 2.3) is stated in W1, the optimal-transport cost with the
Euclidean (not squared) ground cost. W1 between two Gaussians with different covariances has no closed form
for d > 1, so this module offers

* the closed-form sandwich (PAPER.md section 3)::

      ||mu_u - mu_v||_2  <=  W1(q_u, q_v)  <=  W2(q_u, q_v),
      W2(q_u, q_v)^2 = ||mu_u - mu_v||_2^2 + ||sigma_u - sigma_v||_2^2

  (left: W1 is at least the distance between the means, by Jensen on any coupling; right: Cauchy-Schwarz),
  plus a sharper lower bound from one-dimensional projections (:func:`w1_bounds` with
  ``lower="projection"``);
* the exact 1-D closed form :func:`w1_gaussian_1d`;
* exact W1 between finite samples with POT (``ot.emd2`` on a Euclidean cost matrix) and a Monte Carlo
  estimate :func:`w1_diag_gaussian_mc` built on it;
* sliced W1 (POT), a different, smaller metric;
* all-pairs bounds for many users, in row chunks (:func:`iter_pairwise_w1_bounds` is the primitive that
  other analyses, e.g. k nearest neighbours in W2, consume), summarised by :func:`pairwise_w1_bounds` or
  materialised by :func:`pairwise_w1_bounds_dense`.

Array convention: the last axis is the latent dimension d and is reduced; other axes broadcast. The
elementwise functions accept numpy arrays or torch tensors and return the same kind.

References: Peyré & Cuturi (2019), Computational Optimal Transport, remark 2.31 (Gaussian W2); POT
(Flamary et al., JMLR 2021) for ``ot.emd2``, ``ot.dist``, ``ot.sliced_wasserstein_distance``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.lazy import lazy_import

ot = lazy_import("ot")
torch = lazy_import("torch")

ArrayLike = Any  # numpy.ndarray or torch.Tensor

__all__ = [
    "PairwiseBoundsChunk",
    "PairwiseW1Summary",
    "iter_pairwise_w1_bounds",
    "mean_distance",
    "pairwise_w1_bounds",
    "pairwise_w1_bounds_dense",
    "sliced_w1_diag_gaussian",
    "w1_bounds",
    "w1_diag_gaussian_mc",
    "w1_gaussian_1d",
    "w1_samples",
    "w2_diag_gaussian",
]


# ---------------------------------------------------------------------------------------------------------
# array helpers (shared with geometry.kl and geometry.bounds)
# ---------------------------------------------------------------------------------------------------------


def _is_torch(*args: ArrayLike) -> bool:
    return any(isinstance(a, torch.Tensor) for a in args)


def _coerce(names: Sequence[str], args: Sequence[ArrayLike]) -> tuple[bool, list[ArrayLike]]:
    """Convert arguments to one floating array kind (torch if any is a tensor) and check finiteness."""
    use_torch = _is_torch(*args)
    out: list[ArrayLike] = []
    if use_torch:
        ref = next(a for a in args if isinstance(a, torch.Tensor))
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.get_default_dtype()
        for a in args:
            t = torch.as_tensor(a, device=ref.device)
            dtype = torch.promote_types(dtype, t.dtype) if t.dtype.is_floating_point else dtype
            out.append(t)
        out = [t.to(dtype) for t in out]
        for name, t in zip(names, out, strict=True):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or infinite values; clean or mask them before calling.")
    else:
        arrs = [np.asarray(a) for a in args]
        dtype = np.result_type(*arrs, np.float32)
        out = [a.astype(dtype, copy=False) for a in arrs]
        for name, a in zip(names, out, strict=True):
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or infinite values; clean or mask them before calling.")
    return use_torch, out


def _check_latent_axis(names: Sequence[str], args: Sequence[ArrayLike]) -> None:
    dims = {int(a.shape[-1]) if a.ndim else None for a in args}
    if None in dims:
        raise ValueError(f"{', '.join(names)} must have a last (latent) axis; got a 0-d value. Pass shape (..., d).")
    shapes = [tuple(a.shape) for a in args]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            f"shapes of {', '.join(names)} do not broadcast: {shapes}. Use (..., d) arrays with the same d."
        ) from None


def _check_nonnegative(name: str, a: ArrayLike) -> None:
    bad = bool((a < 0).any())
    if bad:
        raise ValueError(f"{name} must be >= 0 (standard deviations, not log-variances); got negative entries.")


def _as_2d_numpy(name: str, a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d); got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or mask them before calling.")
    return a


# ---------------------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------------------


def w2_diag_gaussian(mu_u: ArrayLike, sigma_u: ArrayLike, mu_v: ArrayLike, sigma_v: ArrayLike) -> ArrayLike:
    r"""Closed-form 2-Wasserstein distance between diagonal Gaussians.

    .. math::
        W_2(q_u, q_v)^2 = \lVert \mu_u - \mu_v \rVert_2^2 + \lVert \sigma_u - \sigma_v \rVert_2^2 ,

    the Bures-Wasserstein formula (Peyré & Cuturi 2019, remark 2.31; ``ot.gaussian.bures_wasserstein_distance``)
    with commuting covariances, where :math:`\mathrm{tr}(\Sigma_u + \Sigma_v - 2(\Sigma_u^{1/2}\Sigma_v
    \Sigma_u^{1/2})^{1/2}) = \sum_k (\sigma_{uk} - \sigma_{vk})^2`.

    Parameters
    ----------
    mu_u, sigma_u, mu_v, sigma_v : numpy.ndarray or torch.Tensor, broadcastable shapes (..., d)
        Means and standard deviations (not variances, not log-variances); sigma >= 0.

    Returns
    -------
    numpy.ndarray or torch.Tensor, shape broadcast(...)
        W2 per broadcast row; a tensor if any argument is a tensor (differentiable).
    """
    names = ("mu_u", "sigma_u", "mu_v", "sigma_v")
    use_torch, (mu_u, sigma_u, mu_v, sigma_v) = _coerce(names, (mu_u, sigma_u, mu_v, sigma_v))
    _check_latent_axis(names, (mu_u, sigma_u, mu_v, sigma_v))
    _check_nonnegative("sigma_u", sigma_u)
    _check_nonnegative("sigma_v", sigma_v)
    sq = (mu_u - mu_v) ** 2 + (sigma_u - sigma_v) ** 2
    if use_torch:
        return torch.sqrt(sq.sum(-1))
    return np.sqrt(sq.sum(-1))


def mean_distance(mu_u: ArrayLike, mu_v: ArrayLike) -> ArrayLike:
    r"""Distance between posterior means, :math:`\lVert \mu_u - \mu_v \rVert_2`, a lower bound on W1.

    For any coupling :math:`\pi` of :math:`q_u, q_v`, Jensen gives
    :math:`E_\pi \lVert z_u - z_v \rVert \ge \lVert E_\pi (z_u - z_v) \rVert = \lVert \mu_u - \mu_v \rVert`.

    Parameters
    ----------
    mu_u, mu_v : numpy.ndarray or torch.Tensor, broadcastable shapes (..., d)

    Returns
    -------
    numpy.ndarray or torch.Tensor, shape broadcast(...)
    """
    names = ("mu_u", "mu_v")
    use_torch, (mu_u, mu_v) = _coerce(names, (mu_u, mu_v))
    _check_latent_axis(names, (mu_u, mu_v))
    sq = ((mu_u - mu_v) ** 2).sum(-1)
    return torch.sqrt(sq) if use_torch else np.sqrt(sq)


def _folded_normal_mean(m: ArrayLike, s: ArrayLike, use_torch: bool) -> ArrayLike:
    """E|m + s Z| for Z ~ N(0, 1), s >= 0, elementwise; equals |m| where s == 0."""
    lib = torch if use_torch else np
    safe_s = lib.where(s > 0, s, lib.ones_like(s))
    t = m / (math.sqrt(2.0) * safe_s)
    erf = torch.erf(t) if use_torch else _np_erf(t)
    val = s * math.sqrt(2.0 / math.pi) * lib.exp(-(t**2)) + m * erf
    return lib.where(s > 0, val, lib.abs(m))


def _np_erf(t: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(t)


def w1_gaussian_1d(mu_u: ArrayLike, sigma_u: ArrayLike, mu_v: ArrayLike, sigma_v: ArrayLike) -> ArrayLike:
    r"""Exact W1 between univariate Gaussians N(mu_u, sigma_u^2) and N(mu_v, sigma_v^2), elementwise.

    In one dimension :math:`W_1 = \int_0^1 |F_u^{-1}(t) - F_v^{-1}(t)|\,dt` and the quantile functions are
    :math:`\mu + \sigma \Phi^{-1}(t)`, so with :math:`Z \sim N(0,1)`, :math:`m = \mu_u - \mu_v` and
    :math:`s = |\sigma_u - \sigma_v|`,

    .. math::
        W_1 = E\,|m + s Z| = s \sqrt{2/\pi}\, e^{-m^2 / (2 s^2)} + m\, \mathrm{erf}\!\big(m / (\sqrt{2}\, s)\big),

    the mean of a folded normal; it reduces to :math:`|m|` when the standard deviations are equal.

    Parameters
    ----------
    mu_u, sigma_u, mu_v, sigma_v : numpy.ndarray or torch.Tensor, broadcastable shapes
        No axis is reduced.

    Returns
    -------
    numpy.ndarray or torch.Tensor, broadcast shape
    """
    names = ("mu_u", "sigma_u", "mu_v", "sigma_v")
    use_torch, (mu_u, sigma_u, mu_v, sigma_v) = _coerce(names, (mu_u, sigma_u, mu_v, sigma_v))
    _check_nonnegative("sigma_u", sigma_u)
    _check_nonnegative("sigma_v", sigma_v)
    lib = torch if use_torch else np
    return _folded_normal_mean(mu_u - mu_v, lib.abs(sigma_u - sigma_v), use_torch)


def w1_bounds(
    mu_u: ArrayLike,
    sigma_u: ArrayLike,
    mu_v: ArrayLike,
    sigma_v: ArrayLike,
    *,
    lower: str = "mean",
) -> tuple[ArrayLike, ArrayLike]:
    r"""Closed-form bounds ``lower <= W1(q_u, q_v) <= W2(q_u, q_v)`` for diagonal Gaussians.

    ``lower="mean"`` gives :math:`\lVert \mu_u - \mu_v \rVert_2` (PAPER.md section 3). ``lower="projection"``
    gives a sharper bound: W1 cannot increase under a 1-Lipschitz map, so it is at least the 1-D W1
    (:func:`w1_gaussian_1d`) of the projections on any unit direction. We take the maximum over the
    direction :math:`\theta = (\mu_u - \mu_v)/\lVert \mu_u - \mu_v \rVert` (projections
    :math:`N(\theta^\top\mu, \sum_k \theta_k^2 \sigma_k^2)`) and the d coordinate axes. It is always
    :math:`\ge \lVert \mu_u - \mu_v \rVert` (a folded-normal mean exceeds the absolute mean) and strictly
    positive when only the standard deviations differ.

    Parameters
    ----------
    mu_u, sigma_u, mu_v, sigma_v : numpy.ndarray or torch.Tensor, broadcastable shapes (..., d)
    lower : {"mean", "projection"}

    Returns
    -------
    (lower, upper) : two arrays (or tensors) of shape broadcast(...)
    """
    if lower not in ("mean", "projection"):
        raise ValueError(f"lower must be 'mean' or 'projection'; got {lower!r}.")
    upper = w2_diag_gaussian(mu_u, sigma_u, mu_v, sigma_v)
    use_torch, (mu_u, sigma_u, mu_v, sigma_v) = _coerce(
        ("mu_u", "sigma_u", "mu_v", "sigma_v"), (mu_u, sigma_u, mu_v, sigma_v)
    )
    if lower == "mean":
        return mean_distance(mu_u, mu_v), upper
    lib = torch if use_torch else np
    dm = mu_u - mu_v
    norm = lib.sqrt((dm**2).sum(-1))
    safe = lib.where(norm > 0, norm, lib.ones_like(norm))
    theta2 = dm**2 / safe[..., None] ** 2
    s_u = lib.sqrt((theta2 * sigma_u**2).sum(-1))
    s_v = lib.sqrt((theta2 * sigma_v**2).sum(-1))
    along_mean = _folded_normal_mean(norm, lib.abs(s_u - s_v), use_torch)
    per_axis = _folded_normal_mean(dm, lib.abs(sigma_u - sigma_v), use_torch)
    axis_max = per_axis.amax(-1) if use_torch else per_axis.max(-1)
    # when the means coincide the projection direction is undefined; the mean-direction term is then |0|
    along_mean = lib.where(norm > 0, along_mean, lib.zeros_like(along_mean))
    low = lib.maximum(along_mean, axis_max)
    # rounding must not let the lower bound cross the exact upper bound
    return lib.minimum(low, upper), upper


# ---------------------------------------------------------------------------------------------------------
# optimal transport between samples (POT)
# ---------------------------------------------------------------------------------------------------------


def w1_samples(
    x: ArrayLike,
    y: ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    num_iter_max: int = 10_000_000,
) -> float:
    r"""Exact W1 between two weighted point clouds, by linear programming (``ot.emd2``).

    .. math::
        W_1(\hat\mu, \hat\nu) = \min_{\pi \in \Pi(a, b)} \sum_{ij} \pi_{ij} \lVert x_i - y_j \rVert_2 ,

    with the Euclidean cost matrix ``ot.dist(x, y, metric="euclidean")`` (POT's default ``"sqeuclidean"``
    would give W2 squared instead).

    Parameters
    ----------
    x : array, shape (n, d) or (n,)
    y : array, shape (m, d) or (m,)
        One-dimensional input is treated as d = 1.
    a, b : array, shape (n,) and (m,), optional
        Nonnegative weights (normalised here to sum 1); uniform when omitted.
    num_iter_max : int
        Network-simplex iteration cap passed to POT (its default 1e5 is too small beyond ~1,000 points).

    Returns
    -------
    float
    """
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with the same d; got {x.shape} and {y.shape}.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x or y contains NaN or infinite values; clean them before calling.")
    weights = []
    for name, w, n in (("a", a, x.shape[0]), ("b", b, y.shape[0])):
        if w is None:
            weights.append(np.full(n, 1.0 / n))
            continue
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name} must be {n} finite nonnegative weights with a positive sum.")
        weights.append(w / w.sum())
    cost = ot.dist(x, y, metric="euclidean")
    return float(ot.emd2(weights[0], weights[1], cost, numItermax=num_iter_max))


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _single_pair(mu_u: ArrayLike, sigma_u: ArrayLike, mu_v: ArrayLike, sigma_v: ArrayLike) -> tuple[np.ndarray, ...]:
    arrs = []
    for name, a in (("mu_u", mu_u), ("sigma_u", sigma_u), ("mu_v", mu_v), ("sigma_v", sigma_v)):
        a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"{name} must have shape (d,) for a single pair; got {a.shape}.")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        arrs.append(a)
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"mu_u, sigma_u, mu_v, sigma_v must share one shape (d,); got {[a.shape for a in arrs]}.")
    _check_nonnegative("sigma_u", arrs[1])
    _check_nonnegative("sigma_v", arrs[3])
    return tuple(arrs)


def w1_diag_gaussian_mc(
    mu_u: ArrayLike,
    sigma_u: ArrayLike,
    mu_v: ArrayLike,
    sigma_v: ArrayLike,
    n_samples: int = 500,
    rng: np.random.Generator | int | None = None,
    *,
    coupling: str = "common",
) -> float:
    r"""Monte Carlo estimate of W1(q_u, q_v) for one pair: exact OT (:func:`w1_samples`) between samples.

    ``coupling="common"`` (default) draws one set of standard normals :math:`\varepsilon_k` and uses
    :math:`x_k = \mu_u + \sigma_u \odot \varepsilon_k`, :math:`y_k = \mu_v + \sigma_v \odot \varepsilon_k`
    (common random numbers). Both empirical measures converge to their Gaussians, so the estimate is
    consistent, and it inherits the sandwich exactly up to the noise of the sample mean:
    :math:`\lVert \mu_u - \mu_v + (\sigma_u - \sigma_v)\odot\bar\varepsilon \rVert \le \hat W_1 \le
    \frac{1}{n}\sum_k \lVert \mu_u - \mu_v + (\sigma_u - \sigma_v)\odot\varepsilon_k \rVert`; with equal
    sigmas it is exactly :math:`\lVert \mu_u - \mu_v \rVert`. ``coupling="independent"`` draws the two
    samples independently: the textbook plug-in estimator, biased upwards by the empirical-measure error
    :math:`O(n^{-1/d})`, hence useless beyond a few dimensions. Cost: O(n^3) time, O(n^2) memory.

    Parameters
    ----------
    mu_u, sigma_u, mu_v, sigma_v : array, shape (d,)
    n_samples : int
        Samples per distribution (a 1,000 x 1,000 LP takes about a second).
    rng : numpy.random.Generator, int or None
    coupling : {"common", "independent"}

    Returns
    -------
    float
    """
    if coupling not in ("common", "independent"):
        raise ValueError(f"coupling must be 'common' or 'independent'; got {coupling!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}.")
    mu_u, sigma_u, mu_v, sigma_v = _single_pair(mu_u, sigma_u, mu_v, sigma_v)
    gen = _rng(rng)
    eps_u = gen.standard_normal((n_samples, mu_u.shape[0]))
    eps_v = eps_u if coupling == "common" else gen.standard_normal((n_samples, mu_u.shape[0]))
    return w1_samples(mu_u + sigma_u * eps_u, mu_v + sigma_v * eps_v)


def sliced_w1_diag_gaussian(
    mu_u: ArrayLike,
    sigma_u: ArrayLike,
    mu_v: ArrayLike,
    sigma_v: ArrayLike,
    *,
    n_projections: int = 200,
    n_samples: int | None = 2000,
    rng: np.random.Generator | int | None = None,
    projections: np.ndarray | None = None,
) -> float:
    r"""Sliced W1 between two diagonal Gaussians.

    .. math::
        SW_1(q_u, q_v) = E_{\theta \sim U(S^{d-1})}\, W_1(\theta_\# q_u, \theta_\# q_v) \;\le\; W_1(q_u, q_v).

    Sliced W1 is a different metric, smaller than W1 by a factor of order :math:`\sqrt{d}` for spread-out
    differences (a random direction sees about :math:`1/\sqrt{d}` of a vector): use it to compare pairs with
    one another, not as an estimate of W1.

    With ``n_samples`` set, the value is POT's ``ot.sliced_wasserstein_distance(x, y, p=1)`` on samples
    (the method asked for; sampling error :math:`O(n^{-1/2})`). With ``n_samples=None`` each projection is a
    univariate Gaussian :math:`N(\theta^\top\mu, \sum_k \theta_k^2\sigma_k^2)`, and its W1 is computed
    exactly (:func:`w1_gaussian_1d`), so only the projection average is random.

    Parameters
    ----------
    mu_u, sigma_u, mu_v, sigma_v : array, shape (d,)
    n_projections : int
        Number of random directions (ignored if ``projections`` is given).
    n_samples : int or None
        Samples per distribution for the POT estimate; None for the exact per-projection form.
    rng : numpy.random.Generator, int or None
    projections : array, shape (d, n_projections), optional
        Unit directions in columns (POT's convention), e.g. to compare both methods on the same directions.

    Returns
    -------
    float
    """
    mu_u, sigma_u, mu_v, sigma_v = _single_pair(mu_u, sigma_u, mu_v, sigma_v)
    gen = _rng(rng)
    d = mu_u.shape[0]
    if projections is None:
        if n_projections < 1:
            raise ValueError(f"n_projections must be >= 1; got {n_projections}.")
        projections = gen.standard_normal((d, n_projections))
        projections /= np.linalg.norm(projections, axis=0, keepdims=True)
    else:
        projections = np.asarray(projections, dtype=np.float64)
        if projections.ndim != 2 or projections.shape[0] != d:
            raise ValueError(f"projections must have shape (d={d}, n_projections); got {projections.shape}.")
    if n_samples is None:
        m = projections.T @ (mu_u - mu_v)
        s_u = np.sqrt((projections**2).T @ sigma_u**2)
        s_v = np.sqrt((projections**2).T @ sigma_v**2)
        return float(np.mean(_folded_normal_mean(m, np.abs(s_u - s_v), use_torch=False)))
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1 or None; got {n_samples}.")
    x = mu_u + sigma_u * gen.standard_normal((n_samples, d))
    y = mu_v + sigma_v * gen.standard_normal((n_samples, d))
    return float(ot.sliced_wasserstein_distance(x, y, p=1, projections=projections))


# ---------------------------------------------------------------------------------------------------------
# all pairs, in row chunks
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairwiseBoundsChunk:
    """Rows ``start:stop`` of the all-pairs W1 bound matrices.

    Attributes
    ----------
    start, stop : int
        Row range of the first set.
    lower : numpy.ndarray, shape (stop - start, n_cols), float64
        ``||mu_i - mu_j||_2`` (lower bound on W1).
    upper : numpy.ndarray, shape (stop - start, n_cols), float64
        Closed-form ``W2(q_i, q_j)`` (upper bound on W1).
    """

    start: int
    stop: int
    lower: np.ndarray
    upper: np.ndarray


def _pairwise_inputs(
    mu: ArrayLike, sigma: ArrayLike, mu_other: ArrayLike | None, sigma_other: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    mu = _as_2d_numpy("mu", mu)
    sigma = _as_2d_numpy("sigma", sigma)
    if mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must have the same shape (n, d); got {mu.shape} and {sigma.shape}.")
    _check_nonnegative("sigma", sigma)
    if (mu_other is None) != (sigma_other is None):
        raise ValueError("pass both mu_other and sigma_other, or neither.")
    if mu_other is None:
        return mu, sigma, mu, sigma, True
    mu_o = _as_2d_numpy("mu_other", mu_other)
    sigma_o = _as_2d_numpy("sigma_other", sigma_other)
    if mu_o.shape != sigma_o.shape or mu_o.shape[1] != mu.shape[1]:
        raise ValueError(
            f"mu_other and sigma_other must be (m, d={mu.shape[1]}); got {mu_o.shape} and {sigma_o.shape}."
        )
    _check_nonnegative("sigma_other", sigma_o)
    return mu, sigma, mu_o, sigma_o, False


def _sq_dist(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    # ||a||^2 + ||b||^2 - 2 a.b in float64: the expansion turns an (r, n, d) broadcast into one matmul;
    # float64 keeps the cancellation error near 1e-16 * ||a||^2, negligible for posterior parameters
    return torch.clamp_(torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, alpha=-2.0), min=0.0)


def iter_pairwise_w1_bounds(
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    mu_other: ArrayLike | None = None,
    sigma_other: ArrayLike | None = None,
    chunk_size: int = 512,
) -> Iterator[PairwiseBoundsChunk]:
    r"""Iterate over row chunks of the all-pairs bounds ``||mu_i - mu_j|| <= W1(q_i, q_j) <= W2(q_i, q_j)``.

    The primitive for all-pairs analyses (means, quantiles, k nearest neighbours in W2): each chunk holds
    ``chunk_size`` full rows, so peak memory is about ``4 * chunk_size * n_cols * 8`` bytes
    (about 160 MB for 512 rows x 10,000 columns). Squared distances use the expansion
    :math:`\lVert a\rVert^2 + \lVert b\rVert^2 - 2a^\top b` in float64 (torch matmul); the diagonal of the
    self-comparison is set to exactly 0.

    Parameters
    ----------
    mu, sigma : array, shape (n, d)
        Means and standard deviations of the first set (numpy or torch; copied to float64 numpy).
    mu_other, sigma_other : array, shape (m, d), optional
        Second set; default the first set (all pairs within one set, diagonal included).
    chunk_size : int
        Rows per chunk.

    Yields
    ------
    PairwiseBoundsChunk
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    mu, sigma, mu_o, sigma_o, same = _pairwise_inputs(mu, sigma, mu_other, sigma_other)
    tm, ts = torch.from_numpy(mu), torch.from_numpy(sigma)
    tmo, tso = torch.from_numpy(mu_o), torch.from_numpy(sigma_o)
    mo_sq, so_sq = (tmo**2).sum(1), (tso**2).sum(1)
    for start in range(0, mu.shape[0], chunk_size):
        stop = min(start + chunk_size, mu.shape[0])
        a, s = tm[start:stop], ts[start:stop]
        d_mu = _sq_dist(a, (a**2).sum(1), tmo, mo_sq)
        upper = d_mu + _sq_dist(s, (s**2).sum(1), tso, so_sq)
        lower = d_mu.sqrt_()
        upper.sqrt_()
        if same:
            idx = torch.arange(start, stop)
            lower[idx - start, idx] = 0.0
            upper[idx - start, idx] = 0.0
        yield PairwiseBoundsChunk(start, stop, lower.numpy(), upper.numpy())


@dataclass(frozen=True)
class PairwiseW1Summary:
    """Summary of the W1 bounds over all unordered pairs i < j of n posteriors.

    Attributes
    ----------
    n : int
        Number of posteriors; ``n_pairs = n (n - 1) / 2``.
    n_pairs : int
    mean_lower, mean_upper : float
        Exact means over all pairs of ``||mu_i - mu_j||`` and of ``W2``; the mean of W1 lies between.
    min_lower, max_upper : float
        Exact extremes.
    quantile_levels : numpy.ndarray, shape (k,)
    quantiles_lower, quantiles_upper : numpy.ndarray, shape (k,)
        Quantiles of the two bounds over pairs: exact when ``quantiles_exact``, otherwise computed on a
        uniform sample (with replacement) of ``n_quantile_pairs`` pairs i < j (rank error about
        ``sqrt(q (1 - q) / n_quantile_pairs)``).
    quantiles_exact : bool
    n_quantile_pairs : int
    row_mean_lower, row_mean_upper : numpy.ndarray, shape (n,)
        Per-posterior mean bound to the n - 1 others (e.g. to relate to interaction counts).
    """

    n: int
    n_pairs: int
    mean_lower: float
    mean_upper: float
    min_lower: float
    max_upper: float
    quantile_levels: np.ndarray
    quantiles_lower: np.ndarray
    quantiles_upper: np.ndarray
    quantiles_exact: bool
    n_quantile_pairs: int
    row_mean_lower: np.ndarray
    row_mean_upper: np.ndarray


def _triangle_blocks(
    mu: np.ndarray, sigma: np.ndarray, chunk_size: int
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Upper-triangle blocks: rows ``start:stop`` against columns ``start:n`` (torch float64).

    Entries of the leading (stop - start) square on or below its diagonal (pairs j <= i) are set to 0, so
    sums over a block are sums over pairs i < j; half the work of full rows.
    """
    tm, ts = torch.from_numpy(mu), torch.from_numpy(sigma)
    m_sq, s_sq = (tm**2).sum(1), (ts**2).sum(1)
    n = mu.shape[0]
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        r = stop - start
        d_mu = _sq_dist(tm[start:stop], m_sq[start:stop], tm[start:], m_sq[start:])
        upper = d_mu + _sq_dist(ts[start:stop], s_sq[start:stop], ts[start:], s_sq[start:])
        lower = d_mu.sqrt_()
        upper.sqrt_()
        keep = torch.ones(r, r, dtype=torch.bool).triu_(1)
        lower[:, :r].masked_fill_(~keep, 0.0)
        upper[:, :r].masked_fill_(~keep, 0.0)
        yield start, stop, lower, upper


def _block_min(block: torch.Tensor, r: int) -> float:
    """Minimum over the valid (i < j) entries of a triangle block."""
    keep = torch.ones(r, r, dtype=torch.bool).triu_(1)
    square = block[:, :r][keep]
    best = float(square.min()) if square.numel() else math.inf
    if block.shape[1] > r:
        best = min(best, float(block[:, r:].min()))
    return best


def pairwise_w1_bounds(
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    chunk_size: int = 512,
    quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99),
    n_quantile_pairs: int = 1_000_000,
    rng: np.random.Generator | int | None = 0,
) -> PairwiseW1Summary:
    """Means, extremes and quantiles of the W1 bounds over all n (n - 1) / 2 pairs, in chunks.

    For n = 10,000 that is 5e7 pairs. Only the upper triangle is computed (rows ``start:stop`` against
    columns ``start:n``); exact means, extremes and per-row means (row and column sums, by symmetry) are
    accumulated in float64. Quantiles are exact when there are at most ``n_quantile_pairs`` pairs; otherwise
    they come from a uniform random sample of that many distinct pairs (with replacement), read off the
    blocks as they pass. Use :func:`iter_pairwise_w1_bounds` for anything else (e.g. kNN in W2) and
    :func:`pairwise_w1_bounds_dense` for the full matrices.

    Parameters
    ----------
    mu, sigma : array, shape (n, d), n >= 2
    chunk_size : int
    quantiles : sequence of float in [0, 1]
    n_quantile_pairs : int
    rng : numpy.random.Generator, int or None
        Only for the quantile sample.

    Returns
    -------
    PairwiseW1Summary
    """
    mu, sigma, _, _, _ = _pairwise_inputs(mu, sigma, None, None)
    n = mu.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 posteriors for pairs; got n = {n}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    levels = np.asarray(quantiles, dtype=np.float64)
    if levels.ndim != 1 or ((levels < 0) | (levels > 1)).any():
        raise ValueError(f"quantiles must be a sequence of levels in [0, 1]; got {quantiles!r}.")
    if n_quantile_pairs < 1:
        raise ValueError(f"n_quantile_pairs must be >= 1; got {n_quantile_pairs}.")
    n_pairs = n * (n - 1) // 2
    exact = n_pairs <= n_quantile_pairs
    if not exact:
        gen = _rng(rng)
        i = gen.integers(0, n, n_quantile_pairs)
        j = gen.integers(0, n - 1, n_quantile_pairs)
        j = j + (j >= i)  # uniform over ordered pairs i != j, then put the smaller index first
        i, j = np.minimum(i, j), np.maximum(i, j)
        order = np.argsort(i, kind="stable")
        i_t, j_t = torch.from_numpy(i[order]), torch.from_numpy(j[order])
        bounds = np.searchsorted(i[order], np.arange(0, n + chunk_size, chunk_size))
    row_lo = torch.zeros(n, dtype=torch.float64)
    row_up = torch.zeros(n, dtype=torch.float64)
    min_lo, max_up = math.inf, 0.0
    kept_lo: list[torch.Tensor] = []
    kept_up: list[torch.Tensor] = []
    for k, (start, stop, lower, upper) in enumerate(_triangle_blocks(mu, sigma, chunk_size)):
        r = stop - start
        row_lo[start:stop] += lower.sum(1)
        row_up[start:stop] += upper.sum(1)
        row_lo[start:] += lower.sum(0)
        row_up[start:] += upper.sum(0)
        max_up = max(max_up, float(upper.max()))
        min_lo = min(min_lo, _block_min(lower, r))
        if exact:
            keep = torch.ones(r, r, dtype=torch.bool).triu_(1)
            kept_lo += [lower[:, :r][keep], lower[:, r:].reshape(-1)]
            kept_up += [upper[:, :r][keep], upper[:, r:].reshape(-1)]
        else:
            sel = slice(bounds[k], bounds[k + 1])
            ii, jj = i_t[sel] - start, j_t[sel] - start
            kept_lo.append(lower[ii, jj])
            kept_up.append(upper[ii, jj])
    q_lo = np.quantile(torch.cat(kept_lo).numpy(), levels)
    q_up = np.quantile(torch.cat(kept_up).numpy(), levels)
    return PairwiseW1Summary(
        n=n,
        n_pairs=n_pairs,
        mean_lower=float(row_lo.sum()) / (2 * n_pairs),
        mean_upper=float(row_up.sum()) / (2 * n_pairs),
        min_lower=min_lo,
        max_upper=max_up,
        quantile_levels=levels,
        quantiles_lower=q_lo,
        quantiles_upper=q_up,
        quantiles_exact=exact,
        n_quantile_pairs=n_pairs if exact else n_quantile_pairs,
        row_mean_lower=(row_lo / (n - 1)).numpy(),
        row_mean_upper=(row_up / (n - 1)).numpy(),
    )


def pairwise_w1_bounds_dense(
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    chunk_size: int = 512,
    max_bytes: int = 2 * 1024**3,
) -> tuple[np.ndarray, np.ndarray]:
    """Full n x n float32 matrices of the lower (``||mu_i - mu_j||``) and upper (W2) bounds on W1.

    Memory is ``8 n^2`` bytes for the pair (800 MB at n = 10,000); refused above ``max_bytes``.

    Parameters
    ----------
    mu, sigma : array, shape (n, d)
    chunk_size : int
    max_bytes : int
        Guard against accidental huge allocations; raise it deliberately if needed.

    Returns
    -------
    lower, upper : numpy.ndarray, shape (n, n), float32, symmetric with zero diagonal
    """
    mu = _as_2d_numpy("mu", mu)
    n = mu.shape[0]
    need = 2 * 4 * n * n
    if need > max_bytes:
        raise ValueError(
            f"dense bounds for n = {n} need {need / 1e9:.1f} GB > max_bytes = {max_bytes / 1e9:.1f} GB; "
            "use pairwise_w1_bounds / iter_pairwise_w1_bounds, or raise max_bytes."
        )
    lower = np.empty((n, n), dtype=np.float32)
    upper = np.empty((n, n), dtype=np.float32)
    for ch in iter_pairwise_w1_bounds(mu, sigma, chunk_size=chunk_size):
        lower[ch.start : ch.stop] = ch.lower
        upper[ch.start : ch.stop] = ch.upper
    return lower, upper
