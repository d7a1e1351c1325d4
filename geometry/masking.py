"""Input masking and the exact law of masked distances (PAPER.md sections 1 and 4, Theorem 2.6).

One module holds the mask operators shared by training and the geometry analyses, and the mathematics of
what masking does to distances between binary user histories.

Mask operators
--------------
``rho`` is always the **keep** probability: ``rho = 1`` is clean input, smaller ``rho`` masks more.

* :func:`mask_input` (torch, dense ``(B, I)`` batches) in two modes:

  - ``"dropout"`` (default, Multi-VAE / RecVAE as published): L2-normalise each row, then inverted dropout
    with keep probability ``rho`` (kept entries scaled by ``1 / rho``);
  - ``"bernoulli"``: ``x * b`` with ``b ~ Bernoulli(rho)^I``, exactly the paper's ``x ⊙ b``, with neither
    normalisation nor rescaling (a model may normalise ``x ⊙ b`` itself afterwards).

* :func:`mask_csr` (scipy CSR rows): keep each stored entry with probability ``rho``, with independent
  masks per row or one mask over items shared by all rows, without densifying.

Masked-distance law (Result 3)
------------------------------
For binary histories with supports ``S_u`` and ``S_v``, ``d = |S_u Δ S_v| = ||x_u - x_v||_1`` and
``c = |S_u ∩ S_v|``. With independent masks ``b_u, b_v ~ Bernoulli(rho)^I`` and ``x' = x ⊙ b``,

    D' = ||x'_u - x'_v||_1 ~ Binomial(d, rho) + Binomial(c, 2 rho (1 - rho))   (independent parts),
    E[D'] = rho d + 2 rho (1 - rho) c,
    Var[D'] = d rho (1 - rho) + c q (1 - q),   q = 2 rho (1 - rho):

an item of ``S_u Δ S_v`` counts when its owner's mask keeps it (probability ``rho``); an item of
``S_u ∩ S_v`` counts when exactly one of the two masks keeps it (probability ``q``). With one mask shared
by both users only the first part remains, ``D' ~ Binomial(d, rho)``, so distances can only shrink.

``D'`` is integer-valued, so for a real threshold ``delta``

    contraction  Pr[D' <= delta] = Pr[D' <= floor(delta)],
    expansion    Pr[D' >= delta] = Pr[D' >= ceil(delta)].

Thresholds: an absolute distance is used as is; a threshold relative to the clean distance is
``delta = r * d`` (:func:`relative_threshold`); a neighbourhood-rank threshold (the distance of a user's
k-th nearest neighbour, in clean space or in expected masked distances) comes from
:func:`geometry.neighbourhoods.rank_threshold`.

References
----------
Vuong et al., "On the Mechanisms of Collaborative Learning in VAE Recommenders", ICLR 2026, Theorem 2.6.
Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018 (dropout masking).
Hoeffding, "Probability inequalities for sums of bounded random variables", JASA 1963.
Wilson, "Probable inference, the law of succession, and statistical inference", JASA 1927.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")
signal = lazy_import("scipy.signal")
special = lazy_import("scipy.special")
stats = lazy_import("scipy.stats")

MaskMode = Literal["dropout", "bernoulli"]

# Above this many multiply-adds a pmf convolution goes through the FFT (absolute error ~1e-16).
_DIRECT_CONVOLUTION_LIMIT = 1 << 20
# Elements per working array in the chunked pair and Monte Carlo computations (bounds peak memory).
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------------


def validate_rho(rho: float) -> float:
    """Check a keep probability and return it as a float.

    Parameters
    ----------
    rho : float
        Keep probability of the mask, in ``(0, 1]`` (``1`` = clean input).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``rho`` is not a finite number in ``(0, 1]``.
    """
    try:
        value = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a number in (0, 1] (keep probability), got {rho!r}") from None
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"rho must be in (0, 1] (keep probability; 1 = clean input), got {rho!r}; "
            "pass rho = 1 - p for a drop probability p"
        )
    return value


def _rho_array(rho: float | np.ndarray) -> np.ndarray:
    arr = np.asarray(rho, dtype=np.float64)
    if not np.all((arr > 0.0) & (arr <= 1.0)):  # also rejects NaN
        raise ValueError(
            "rho must lie in (0, 1] (keep probability; 1 = clean input); "
            f"got values outside it, e.g. {arr[~((arr > 0.0) & (arr <= 1.0))].ravel()[:3]}"
        )
    return arr


def _count_array(x: np.ndarray | int, name: str) -> np.ndarray:
    arr = np.asarray(x)
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == bool or not numeric:
        raise ValueError(f"{name} must hold non-negative integer counts, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.floor(arr)):
            raise ValueError(f"{name} must hold non-negative integer counts, got non-integer or NaN values")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative (a count of items), got a minimum of {arr.min()}")
    return arr


def _threshold_array(delta: float | np.ndarray) -> np.ndarray:
    arr = np.asarray(delta, dtype=np.float64)
    if np.any(np.isnan(arr)):
        raise ValueError("delta must not be NaN; use +inf or -inf for a threshold beyond every distance")
    return arr


def _binary_csr(X: sp.spmatrix | sp.sparray, name: str = "X") -> sp.csr_matrix:
    """The support of ``X`` as a canonical CSR matrix with float32 ones (no copy when already so)."""
    if not sp.issparse(X):
        raise ValueError(f"{name} must be a scipy sparse matrix (CSR preferred), got {type(X).__name__}")
    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if np.any(np.isnan(X.data)):
        raise ValueError(f"{name} contains NaN entries; histories must be binary (0/1)")
    if np.any(X.data == 0):
        X = X.copy()
        X.eliminate_zeros()
    if X.dtype != np.float32 or not np.all(X.data == 1):
        X = sp.csr_matrix((np.ones(X.nnz, dtype=np.float32), X.indices, X.indptr), shape=X.shape, copy=False)
    return X


def _row_index(idx: np.ndarray | list[int], n_rows: int, name: str) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{name} must be a 1-D array of integer row indices, got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_rows):
        raise ValueError(f"{name} holds row indices outside [0, {n_rows}); got {arr.min()}..{arr.max()}")
    return arr


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


# --------------------------------------------------------------------------------------------------------
# Mask operators
# --------------------------------------------------------------------------------------------------------


def mask_input(
    x: torch.Tensor,
    rho: float,
    mode: MaskMode = "dropout",
    generator: torch.Generator | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Mask a dense batch of user histories (the encoder input ``x_h``).

    ``"dropout"`` (default; Multi-VAE as published)::

        x_n = x / max(||x||_2, 1e-12)            (row-wise; an empty row stays zero)
        x_h = x_n ⊙ b / rho,   b ~ Bernoulli(rho)^(B x I)

    ``"bernoulli"`` (the paper's idealisation)::

        x_h = x ⊙ b,   b ~ Bernoulli(rho)^(B x I)

    without normalisation or rescaling; a model that normalises its input does so after the mask.

    Parameters
    ----------
    x : torch.Tensor, shape (B, I)
        Dense batch of histories (binary or weighted); non-floating tensors are cast to float32.
    rho : float
        Keep probability in ``(0, 1]``. ``rho = 1`` applies no mask.
    mode : {"dropout", "bernoulli"}
        Masking mode, see above.
    generator : torch.Generator, optional
        Source of the mask draws (on ``x``'s device), for reproducible masks.
    training : bool
        ``False`` applies no mask (evaluation): ``"dropout"`` returns the normalised rows and
        ``"bernoulli"`` returns ``x`` itself.

    Returns
    -------
    torch.Tensor, shape (B, I)
        The masked batch. With ``rho = 1`` or ``training=False`` this is the normalised input
        (``"dropout"``) or ``x`` itself, not a copy (``"bernoulli"``).

    Raises
    ------
    ValueError
        If ``rho`` is outside ``(0, 1]``, ``mode`` is unknown, or ``x`` is not 2-D.
    """
    rho = validate_rho(rho)
    if mode not in ("dropout", "bernoulli"):
        raise ValueError(f"mode must be 'dropout' or 'bernoulli', got {mode!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D torch.Tensor (batch x items), got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        x = x.float()
    if mode == "dropout":
        x = torch.nn.functional.normalize(x, p=2.0, dim=1, eps=1e-12)
    if not training or rho == 1.0:
        return x
    keep = torch.empty_like(x).bernoulli_(rho, generator=generator)
    if mode == "dropout":
        return x * keep / rho
    return x * keep


def _filter_csr(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """Keep the stored entries of ``X`` flagged in ``keep`` (a boolean array over ``X.data``)."""
    kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    indptr = kept_before[X.indptr].astype(X.indptr.dtype)
    return sp.csr_matrix((X.data[keep], X.indices[keep], indptr), shape=X.shape, copy=False)


def mask_csr(
    X: sp.spmatrix | sp.sparray,
    rho: float,
    rng: np.random.Generator | int | None = None,
    shared: bool = False,
) -> sp.csr_matrix:
    """Mask the stored entries of sparse rows: ``X ⊙ B`` with ``B ~ Bernoulli(rho)``, never densified.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Rows to mask (converted to CSR); values of kept entries are unchanged (no rescaling).
    rho : float
        Keep probability in ``(0, 1]``; ``rho = 1`` returns a copy of ``X``.
    rng : numpy.random.Generator or int, optional
        Source of randomness (a seed is turned into ``default_rng(seed)``).
    shared : bool
        ``False``: an independent mask per row (``B_ui`` i.i.d.). ``True``: one mask ``b`` over items shared
        by every row (``B_ui = b_i``), under which distances between rows can only shrink.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (N, I)
        The masked rows, with the index dtype of ``X`` (int32 for int32 input).
    """
    rho = validate_rho(rho)
    if not sp.issparse(X):
        raise ValueError(f"X must be a scipy sparse matrix (CSR preferred), got {type(X).__name__}")
    X = sp.csr_matrix(X)
    if rho == 1.0:
        return X.copy()
    gen = _as_generator(rng)
    if shared:
        keep = (gen.random(X.shape[1]) < rho)[X.indices]
    else:
        keep = gen.random(X.nnz) < rho
    return _filter_csr(X, keep)


# --------------------------------------------------------------------------------------------------------
# Pair distances from sparse rows
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairOverlap:
    """Clean L1 distance and overlap of pairs of binary histories.

    Attributes
    ----------
    d : numpy.ndarray of int64, shape (P,)
        ``|S_u Δ S_v| = ||x_u - x_v||_1``.
    c : numpy.ndarray of int64, shape (P,)
        ``|S_u ∩ S_v| = <x_u, x_v>``.
    """

    d: np.ndarray
    c: np.ndarray


def pair_overlaps(
    X: sp.spmatrix | sp.sparray,
    u: np.ndarray | list[int],
    v: np.ndarray | list[int],
    chunk_size: int | None = None,
) -> PairOverlap:
    """``d`` and ``c`` of many row pairs of a sparse binary matrix, from sparse dot products.

    ``c_p = <x_{u_p}, x_{v_p}>`` (row-wise sparse product ``X[u] ⊙ X[v]`` summed over items) and
    ``d_p = |S_{u_p}| + |S_{v_p}| - 2 c_p``. Every stored non-zero entry counts as a positive (explicit zeros
    do not). Pairs are processed in chunks; no Python loop over pairs and nothing dense of size N x I.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Binary histories (CSR preferred).
    u, v : array_like of int, shape (P,)
        Row indices of the pairs.
    chunk_size : int, optional
        Pairs per chunk (default: about 2M stored entries per chunk).

    Returns
    -------
    PairOverlap
    """
    B = _binary_csr(X)
    u = _row_index(u, B.shape[0], "u")
    v = _row_index(v, B.shape[0], "v")
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same length, got {u.shape[0]} and {v.shape[0]}")
    sizes = np.diff(B.indptr).astype(np.int64)
    if chunk_size is None:
        mean_row = max(1.0, B.nnz / max(B.shape[0], 1))
        # ~2M stored entries per side and chunk: the row gathers and the product stay cache-friendly
        chunk_size = max(1024, int(_CHUNK_ELEMENTS / 2 / mean_row))
    c = np.empty(u.shape[0], dtype=np.int64)
    for start in range(0, u.shape[0], chunk_size):
        uu = u[start : start + chunk_size]
        vv = v[start : start + chunk_size]
        prod = B[uu].multiply(B[vv])
        c[start : start + chunk_size] = np.rint(np.asarray(prod.sum(axis=1)).ravel())
    d = sizes[u] + sizes[v] - 2 * c
    return PairOverlap(d=d, c=c)


# --------------------------------------------------------------------------------------------------------
# Exact law of D'
# --------------------------------------------------------------------------------------------------------


def masked_distance_moments(
    d: np.ndarray | int, c: np.ndarray | int, rho: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the masked distance ``D'`` (broadcast over the arguments).

    ``E[D'] = rho d + q c`` and ``Var[D'] = d rho (1 - rho) + c q (1 - q)`` with ``q = 2 rho (1 - rho)``.
    ``E[D'] > d`` exactly when ``c / d > 1 / (2 rho)``: close neighbours drift apart on average.

    Parameters
    ----------
    d, c : array_like of int
        Clean distance ``|S_u Δ S_v|`` and overlap ``|S_u ∩ S_v|``.
    rho : array_like of float
        Keep probability in ``(0, 1]``.

    Returns
    -------
    mean, var : numpy.ndarray
        Arrays of the broadcast shape.
    """
    d = _count_array(d, "d")
    c = _count_array(c, "c")
    rho = _rho_array(rho)
    q = 2.0 * rho * (1.0 - rho)
    mean = rho * d + q * c
    var = d * rho * (1.0 - rho) + c * q * (1.0 - q)
    return mean, var


def _fill_binomial_cache(n: np.ndarray, p: np.ndarray, cache: dict[tuple[int, float], np.ndarray]) -> None:
    """Binomial pmfs for all distinct ``(n, p)`` pairs, in few vectorised calls over ragged ``0..n`` ranges."""
    pairs = {(int(a), float(b)) for a, b in zip(n.tolist(), p.tolist(), strict=True)} - cache.keys()
    if not pairs:
        return
    todo = sorted(pairs)
    start = 0
    while start < len(todo):
        # bounded batches: total length at most _CHUNK_ELEMENTS (or one oversized pmf)
        stop, total = start, 0
        while stop < len(todo) and (stop == start or total + todo[stop][0] + 1 <= _CHUNK_ELEMENTS):
            total += todo[stop][0] + 1
            stop += 1
        ns = np.array([t[0] for t in todo[start:stop]], dtype=np.int64)
        ps = np.array([t[1] for t in todo[start:stop]], dtype=np.float64)
        lengths = ns + 1
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        ks = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        values = stats.binom.pmf(ks, np.repeat(ns, lengths), np.repeat(ps, lengths))
        for j, key in enumerate(todo[start:stop]):
            cache[key] = values[offsets[j] : offsets[j + 1]]
        start = stop


def _binomial_pmf(n: int, p: float, cache: dict[tuple[int, float], np.ndarray]) -> np.ndarray:
    key = (n, p)
    pmf = cache.get(key)
    if pmf is None:
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        cache[key] = pmf
    return pmf


def _pmf(d: int, c: int, rho: float, cache: dict[tuple[int, float], np.ndarray]) -> np.ndarray:
    """pmf of ``Bin(d, rho) + Bin(c, 2 rho (1 - rho))`` over ``0..d+c`` (exact convolution)."""
    a = _binomial_pmf(d, rho, cache)
    b = _binomial_pmf(c, 2.0 * rho * (1.0 - rho), cache)
    if a.size * b.size > _DIRECT_CONVOLUTION_LIMIT:
        pmf = np.clip(signal.fftconvolve(a, b), 0.0, None)
        return pmf / pmf.sum()
    return np.convolve(a, b)


def masked_distance_pmf(d: int, c: int, rho: float) -> np.ndarray:
    """Exact pmf of the masked distance of one pair under independent masks.

    ``D' ~ Binomial(d, rho) + Binomial(c, 2 rho (1 - rho))``; the pmf is the convolution of the two binomial
    pmfs (direct, or by FFT for very large ``d * c``).

    Parameters
    ----------
    d : int
        Clean distance ``|S_u Δ S_v|`` (>= 0).
    c : int
        Overlap ``|S_u ∩ S_v|`` (>= 0).
    rho : float
        Keep probability in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray, shape (d + c + 1,)
        ``pmf[k] = Pr[D' = k]``.
    """
    d_arr, c_arr = _count_array(d, "d"), _count_array(c, "c")
    if d_arr.ndim or c_arr.ndim:
        raise ValueError("masked_distance_pmf takes one pair (scalar d and c); use contraction_probability")
    return _pmf(int(d_arr), int(c_arr), validate_rho(rho), {})


def masked_distance_cdf(d: int, c: int, rho: float) -> np.ndarray:
    """Exact cdf ``F[k] = Pr[D' <= k]``, ``k = 0..d+c``, of one pair (see :func:`masked_distance_pmf`)."""
    return np.clip(np.cumsum(masked_distance_pmf(d, c, rho)), 0.0, 1.0)


def _tail(d: np.ndarray, c: np.ndarray, rho: np.ndarray, k: np.ndarray, upper: bool) -> np.ndarray:
    """``Pr[D' <= k]`` (``upper=False``) or ``Pr[D' >= k]`` (``upper=True``); flat int arrays, float rho.

    Queries outside ``0..d+c`` are settled at once; the others are evaluated once per distinct
    ``(d, c, rho, k)`` and scattered back.
    """
    n = d + c
    out = np.zeros(d.shape, dtype=np.float64)
    if upper:
        out[k <= 0] = 1.0
        active = np.flatnonzero((k > 0) & (k <= n))
    else:
        out[k >= n] = 1.0
        active = np.flatnonzero((k >= 0) & (k < n))
    if active.size == 0:
        return out
    da, ca, ra, ka = d[active], c[active], rho[active], k[active]
    groups = _distinct_queries(da, ca, ra, ka)
    if groups is None:
        out[active] = _active_tail(da, ca, ra, ka, upper)
    else:
        first, inverse = groups
        out[active] = _active_tail(da[first], ca[first], ra[first], ka[first], upper)[inverse]
    return np.clip(out, 0.0, 1.0)


def _distinct_queries(
    d: np.ndarray, c: np.ndarray, rho: np.ndarray, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Representatives and inverse of the distinct ``(d, c, rho, k)`` rows; ``None`` when not worth it."""
    if d.size < 4096:
        return None
    if rho.min() == rho.max():
        rho_index, n_rho = np.zeros(d.size, dtype=np.int64), 1
    else:
        rho_values, rho_index = np.unique(rho, return_inverse=True)
        n_rho = rho_values.size
    radices = (int(d.max()) + 1, int(c.max()) + 1, int(k.max()) + 1)  # active k lies in 0..d+c
    if float(n_rho) * radices[0] * radices[1] * radices[2] >= 2.0**62:
        return None  # the mixed-radix key would overflow int64 (astronomical d, c): no grouping
    key = rho_index.astype(np.int64)
    for radix, part in zip(radices, (d, c, k), strict=True):
        key = key * radix + part
    # sort the keys only (no argsort), then locate each key among the distinct ones: a few times
    # faster than np.unique(return_inverse=True) when keys repeat a lot, as pair laws do
    sorted_key = np.sort(key)
    distinct = sorted_key[np.concatenate(([True], sorted_key[1:] != sorted_key[:-1]))]
    if distinct.size > 0.8 * d.size:  # hardly any repeats: grouping would only add work
        return None
    inverse = np.searchsorted(distinct, key)
    first = np.empty(distinct.size, dtype=np.int64)
    first[inverse] = np.arange(d.size)
    return first, inverse


def _active_tail(d: np.ndarray, c: np.ndarray, rho: np.ndarray, k: np.ndarray, upper: bool) -> np.ndarray:
    """The tails of :func:`_tail` for queries with ``k`` inside the support (no trivial cases)."""
    out = np.empty(d.shape, dtype=np.float64)
    clean = rho == 1.0  # no mask: D' = d surely
    out[clean] = (d[clean] >= k[clean]) if upper else (d[clean] <= k[clean])
    # one binomial part only: a closed-form incomplete-beta tail, fully vectorised
    for part, n_part, p_part in (
        (~clean & (c == 0), d, rho),
        (~clean & (c > 0) & (d == 0), c, 2.0 * rho * (1.0 - rho)),
    ):
        if upper:
            out[part] = special.bdtrc(k[part] - 1, n_part[part], p_part[part])
        else:
            out[part] = special.bdtr(k[part], n_part[part], p_part[part])

    mixed = np.flatnonzero(~clean & (c > 0) & (d > 0))
    if mixed.size:
        # group identical (d, c, rho): each distinct law is convolved once
        order = mixed[np.lexsort((rho[mixed], c[mixed], d[mixed]))]
        ds, cs, rs = d[order], c[order], rho[order]
        breaks = np.flatnonzero((ds[1:] != ds[:-1]) | (cs[1:] != cs[:-1]) | (rs[1:] != rs[:-1])) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [order.size]))
        cache: dict[tuple[int, float], np.ndarray] = {}
        _fill_binomial_cache(ds[starts], rs[starts], cache)
        _fill_binomial_cache(cs[starts], 2.0 * rs[starts] * (1.0 - rs[starts]), cache)
        for s, e in zip(starts, ends, strict=True):
            pmf = _pmf(int(ds[s]), int(cs[s]), float(rs[s]), cache)
            # survival by a reversed cumsum keeps small upper tails accurate (1 - cdf would cancel)
            tail = np.cumsum(pmf[::-1])[::-1] if upper else np.cumsum(pmf)
            idx = order[s:e]
            out[idx] = tail[k[idx]]
    return out


def _broadcast_law(
    d: np.ndarray | int, c: np.ndarray | int, rho: np.ndarray | float, delta: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    d_arr = _count_array(d, "d")
    c_arr = _count_array(c, "c")
    rho_arr = _rho_array(rho)
    delta_arr = _threshold_array(delta)
    try:
        shape = np.broadcast_shapes(d_arr.shape, c_arr.shape, rho_arr.shape, delta_arr.shape)
    except ValueError:
        raise ValueError(
            f"d, c, rho and delta must broadcast together, got shapes {d_arr.shape}, {c_arr.shape}, "
            f"{rho_arr.shape}, {delta_arr.shape}"
        ) from None
    flat = [np.broadcast_to(a, shape).ravel() for a in (d_arr, c_arr, rho_arr, delta_arr)]
    return flat[0], flat[1], flat[2], flat[3], shape


def _integer_threshold(delta: np.ndarray, n: np.ndarray, upper: bool) -> np.ndarray:
    # clip first so that infinite thresholds become finite integers just outside 0..n
    clipped = np.clip(delta, -1.0, n + 1.0)
    return (np.ceil(clipped) if upper else np.floor(clipped)).astype(np.int64)


def contraction_probability(
    d: np.ndarray | int, c: np.ndarray | int, rho: np.ndarray | float, delta: np.ndarray | float
) -> np.ndarray:
    """Exact probability that masking brings a pair within distance ``delta``: ``Pr[D' <= delta]``.

    ``D' ~ Binomial(d, rho) + Binomial(c, 2 rho (1 - rho))`` is integer-valued, so
    ``Pr[D' <= delta] = Pr[D' <= floor(delta)]``. Vectorised over broadcastable arguments; identical
    ``(d, c, rho)`` laws are computed once, single-binomial cases (``c = 0`` or ``d = 0``) in closed form.

    Parameters
    ----------
    d, c : array_like of int
        Clean distance ``|S_u Δ S_v|`` and overlap ``|S_u ∩ S_v|`` (see :func:`pair_overlaps`).
    rho : array_like of float
        Keep probability in ``(0, 1]``.
    delta : array_like of float
        Absolute distance threshold (``±inf`` allowed, NaN not). See :func:`relative_threshold` and
        :func:`geometry.neighbourhoods.rank_threshold` for relative and rank thresholds.

    Returns
    -------
    numpy.ndarray of float64
        Probabilities of the broadcast shape (a numpy scalar for scalar arguments).
    """
    d_f, c_f, rho_f, delta_f, shape = _broadcast_law(d, c, rho, delta)
    k = _integer_threshold(delta_f, d_f + c_f, upper=False)
    return _tail(d_f, c_f, rho_f, k, upper=False).reshape(shape)[()]


def expansion_probability(
    d: np.ndarray | int, c: np.ndarray | int, rho: np.ndarray | float, delta: np.ndarray | float
) -> np.ndarray:
    """Exact probability that masking puts a pair at distance ``delta`` or more: ``Pr[D' >= delta]``.

    ``Pr[D' >= delta] = Pr[D' >= ceil(delta)]`` (``D'`` is integer-valued), computed from the upper tail
    directly so that small probabilities keep their relative accuracy. Arguments and vectorisation as in
    :func:`contraction_probability`.

    Returns
    -------
    numpy.ndarray of float64
        Probabilities of the broadcast shape (a numpy scalar for scalar arguments).
    """
    d_f, c_f, rho_f, delta_f, shape = _broadcast_law(d, c, rho, delta)
    k = _integer_threshold(delta_f, d_f + c_f, upper=True)
    return _tail(d_f, c_f, rho_f, k, upper=True).reshape(shape)[()]


def relative_threshold(d: np.ndarray | int, ratio: np.ndarray | float) -> np.ndarray:
    """Absolute threshold ``delta = ratio * d`` relative to the clean distance of each pair.

    ``contraction_probability(d, c, rho, relative_threshold(d, r))`` is ``Pr[D' <= r d]``; ``r = 1`` asks
    whether masking brings the pair closer than it is in clean space.

    Parameters
    ----------
    d : array_like of int
        Clean distances.
    ratio : array_like of float
        Non-negative ratios.

    Returns
    -------
    numpy.ndarray of float64
    """
    d_arr = _count_array(d, "d")
    r = np.asarray(ratio, dtype=np.float64)
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError("ratio must be a non-negative number (threshold = ratio * d)")
    return r * d_arr


def _hoeffding(
    d: np.ndarray | int,
    c: np.ndarray | int,
    rho: np.ndarray | float,
    delta: np.ndarray | float,
    upper: bool,
    integer: bool,
) -> np.ndarray:
    d_f, c_f, rho_f, delta_f, shape = _broadcast_law(d, c, rho, delta)
    n = d_f + c_f
    mean = rho_f * d_f + 2.0 * rho_f * (1.0 - rho_f) * c_f
    if upper:
        edge = (np.ceil(delta_f) - 1.0) if integer else delta_f
        gap = mean - edge
    else:
        edge = (np.floor(delta_f) + 1.0) if integer else delta_f
        gap = edge - mean
    exponent = np.full(gap.shape, np.inf)
    finite = (n > 0) & np.isfinite(gap)
    exponent[finite] = 2.0 * gap[finite] ** 2 / n[finite]
    bound = np.where(gap > 0, -np.expm1(-exponent), 0.0)
    return bound.reshape(shape)[()]


def hoeffding_contraction_bound(
    d: np.ndarray | int,
    c: np.ndarray | int,
    rho: np.ndarray | float,
    delta: np.ndarray | float,
    integer: bool = True,
) -> np.ndarray:
    """Hoeffding lower bound on ``Pr[D' <= delta]``.

    ``D'`` is a sum of ``n = d + c`` independent Bernoulli variables with mean ``m = E[D']``. Hoeffding's
    inequality ``Pr[D' - m >= s] <= exp(-2 s^2 / n)`` gives

        Pr[D' <= delta] >= 1 - exp(-2 s^2 / n)   when s > 0, else 0 (vacuous),

    with ``s = floor(delta) + 1 - m`` (``integer=True``, default: ``D' > delta`` means
    ``D' >= floor(delta) + 1``) or ``s = delta - m`` (``integer=False``, the textbook form, never larger).
    For ``n = 0`` (``D' = 0`` surely) the bound is 1 when ``s > 0``.

    Parameters
    ----------
    d, c, rho, delta : array_like
        As in :func:`contraction_probability` (broadcast together).
    integer : bool
        Use the integer-aware (tighter) gap.

    Returns
    -------
    numpy.ndarray of float64
    """
    return _hoeffding(d, c, rho, delta, upper=False, integer=integer)


def hoeffding_expansion_bound(
    d: np.ndarray | int,
    c: np.ndarray | int,
    rho: np.ndarray | float,
    delta: np.ndarray | float,
    integer: bool = True,
) -> np.ndarray:
    """Hoeffding lower bound on ``Pr[D' >= delta]``.

    ``Pr[D' >= delta] >= 1 - exp(-2 s^2 / n)`` when ``s > 0``, else 0 (vacuous), with
    ``s = m - ceil(delta) + 1`` (``integer=True``, default: ``D' < delta`` means ``D' <= ceil(delta) - 1``)
    or ``s = m - delta`` (``integer=False``), ``m = E[D']`` and ``n = d + c``.

    Parameters
    ----------
    d, c, rho, delta : array_like
        As in :func:`expansion_probability` (broadcast together).
    integer : bool
        Use the integer-aware (tighter) gap.

    Returns
    -------
    numpy.ndarray of float64
    """
    return _hoeffding(d, c, rho, delta, upper=True, integer=integer)


# --------------------------------------------------------------------------------------------------------
# Monte Carlo masking of real rows
# --------------------------------------------------------------------------------------------------------


def wilson_interval(successes: np.ndarray | int, n: int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions.

    With ``p = successes / n`` and ``z`` the ``(1 + confidence) / 2`` normal quantile::

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    Parameters
    ----------
    successes : array_like of int
        Number of successes, in ``0..n``.
    n : int
        Number of trials (> 0).
    confidence : float
        Coverage in ``(0, 1)``.

    Returns
    -------
    low, high : numpy.ndarray
    """
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n <= 0:
        raise ValueError(f"n must be a positive number of trials, got {n}")
    p = np.asarray(successes, dtype=np.float64) / n
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * np.sqrt(np.clip(p * (1.0 - p), 0.0, None) / n + z * z / (4.0 * n * n))
    # the interval reaches 0 and 1 exactly at p = 0 and p = 1; rounding would leave it just inside
    low = np.where(p <= 0.0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(p >= 1.0, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def _masked_distance_chunks(
    X: sp.spmatrix | sp.sparray,
    u: np.ndarray | list[int],
    v: np.ndarray | list[int],
    rho: float,
    n_draws: int,
    rng: np.random.Generator | int | None,
    shared: bool,
) -> Iterator[np.ndarray]:
    """Yield ``(chunk, P)`` arrays of masked distances, ``n_draws`` rows in all."""
    rho = validate_rho(rho)
    if int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
    n_draws = int(n_draws)
    B = _binary_csr(X)
    u = _row_index(u, B.shape[0], "u")
    v = _row_index(v, B.shape[0], "v")
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same length, got {u.shape[0]} and {v.shape[0]}")
    gen = _as_generator(rng)
    # restrict to the rows and items the pairs touch, so a shared mask only draws the items that matter
    rows, inverse = np.unique(np.concatenate((u, v)), return_inverse=True)
    sub = B[rows]
    items, local_cols = np.unique(sub.indices, return_inverse=True)
    sub = sp.csr_matrix((sub.data, local_cols.astype(np.int32), sub.indptr), shape=(rows.size, max(items.size, 1)))
    pu, pv = inverse[: u.size], inverse[u.size :]
    n_rows, n_cols, nnz, n_pairs = sub.shape[0], sub.shape[1], sub.nnz, u.size
    per_draw = max(nnz, n_pairs, n_cols if shared else 0, 1)
    chunk = int(max(1, min(n_draws, _CHUNK_ELEMENTS // per_draw)))
    row_sizes = np.diff(sub.indptr)
    done = 0
    while done < n_draws:
        m = min(chunk, n_draws - done)
        # m independent copies of the rows stacked vertically: draw j owns rows j*n_rows..(j+1)*n_rows-1
        indptr = np.concatenate(([0], np.cumsum(np.tile(row_sizes, m)))).astype(np.int64)
        tiled = sp.csr_matrix(
            (np.ones(m * nnz, dtype=np.float32), np.tile(sub.indices, m), indptr),
            shape=(m * n_rows, n_cols),
        )
        if shared:
            item_keep = gen.random((m, n_cols)) < rho
            draw_of_entry = np.repeat(np.arange(m), nnz)
            keep = item_keep[draw_of_entry, tiled.indices]
        else:
            keep = gen.random(m * nnz) < rho
        masked = _filter_csr(tiled, keep)
        offset = (np.arange(m, dtype=np.int64) * n_rows)[:, None]
        po = pair_overlaps(masked, (offset + pu).ravel(), (offset + pv).ravel())
        yield po.d.reshape(m, n_pairs)
        done += m


def sample_masked_distances(
    X: sp.spmatrix | sp.sparray,
    u: np.ndarray | list[int],
    v: np.ndarray | list[int],
    rho: float,
    n_draws: int,
    rng: np.random.Generator | int | None = None,
    shared: bool = False,
) -> np.ndarray:
    """Masked distances ``D'`` of row pairs over independent mask draws of the real sparse rows.

    In each draw every row involved is masked once (``x' = x ⊙ b``; independent masks per row, or one
    mask over items shared by all rows when ``shared``), and ``D'_p = ||x'_{u_p} - x'_{v_p}||_1``.
    A row in several pairs uses the same mask in all of them within a draw.

    Parameters
    ----------
    X : scipy sparse matrix, shape (N, I)
        Binary histories.
    u, v : array_like of int, shape (P,)
        Row indices of the pairs.
    rho : float
        Keep probability in ``(0, 1]``.
    n_draws : int
        Number of mask draws.
    rng : numpy.random.Generator or int, optional
        Source of randomness.
    shared : bool
        One mask shared by all rows (``D' ~ Binomial(d, rho)``) instead of independent masks.

    Returns
    -------
    numpy.ndarray of int64, shape (n_draws, P)
    """
    return np.concatenate(list(_masked_distance_chunks(X, u, v, rho, n_draws, rng, shared)), axis=0)


@dataclass(frozen=True)
class MonteCarloEstimate:
    """Monte Carlo estimates of the masked-distance probabilities of pairs.

    Attributes
    ----------
    contraction, contraction_low, contraction_high : numpy.ndarray, shape (P,)
        Estimated ``Pr[D' <= delta]`` and its Wilson interval.
    expansion, expansion_low, expansion_high : numpy.ndarray, shape (P,)
        Estimated ``Pr[D' >= delta]`` and its Wilson interval.
    mean, mean_stderr : numpy.ndarray, shape (P,)
        Sample mean of ``D'`` and its standard error.
    n_draws : int
    confidence : float
    """

    contraction: np.ndarray
    contraction_low: np.ndarray
    contraction_high: np.ndarray
    expansion: np.ndarray
    expansion_low: np.ndarray
    expansion_high: np.ndarray
    mean: np.ndarray
    mean_stderr: np.ndarray
    n_draws: int
    confidence: float


def monte_carlo_probabilities(
    X: sp.spmatrix | sp.sparray,
    u: np.ndarray | list[int],
    v: np.ndarray | list[int],
    rho: float,
    delta: np.ndarray | float,
    n_draws: int,
    rng: np.random.Generator | int | None = None,
    shared: bool = False,
    confidence: float = 0.95,
) -> MonteCarloEstimate:
    """Estimate ``Pr[D' <= delta]`` and ``Pr[D' >= delta]`` by masking the real rows ``n_draws`` times.

    The estimator of :func:`contraction_probability` / :func:`expansion_probability` that makes no use of
    the binomial law: it masks the actual sparse rows (see :func:`sample_masked_distances`) and counts.
    Intervals are Wilson score intervals at ``confidence``. Memory is bounded: draws are processed in
    chunks and only counts are kept.

    Parameters
    ----------
    X, u, v, rho, n_draws, rng, shared
        As in :func:`sample_masked_distances`.
    delta : array_like of float, broadcastable to (P,)
        Absolute thresholds.
    confidence : float
        Coverage of the intervals.

    Returns
    -------
    MonteCarloEstimate
    """
    if np.ndim(u) != 1:
        raise ValueError(f"u must be a 1-D array of row indices, got shape {np.shape(u)}")
    n_pairs = len(u)
    delta_arr = _threshold_array(delta)
    try:
        delta_arr = np.broadcast_to(delta_arr, (n_pairs,))
    except ValueError:
        raise ValueError(
            f"delta must broadcast to the number of pairs ({n_pairs}), got shape {delta_arr.shape}"
        ) from None
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n_le = np.zeros(n_pairs, dtype=np.int64)
    n_ge = np.zeros(n_pairs, dtype=np.int64)
    total = np.zeros(n_pairs, dtype=np.float64)
    total_sq = np.zeros(n_pairs, dtype=np.float64)
    for block in _masked_distance_chunks(X, u, v, rho, n_draws, rng, shared):
        n_le += (block <= delta_arr).sum(axis=0)
        n_ge += (block >= delta_arr).sum(axis=0)
        total += block.sum(axis=0)
        total_sq += (block.astype(np.float64) ** 2).sum(axis=0)
    n = int(n_draws)
    mean = total / n
    var = np.clip(total_sq / n - mean**2, 0.0, None) * (n / max(n - 1, 1))
    c_lo, c_hi = wilson_interval(n_le, n, confidence)
    e_lo, e_hi = wilson_interval(n_ge, n, confidence)
    return MonteCarloEstimate(
        contraction=n_le / n,
        contraction_low=c_lo,
        contraction_high=c_hi,
        expansion=n_ge / n,
        expansion_low=e_lo,
        expansion_high=e_hi,
        mean=mean,
        mean_stderr=np.sqrt(var / n),
        n_draws=n,
        confidence=confidence,
    )


def mask_sparse_values(
    indptr: torch.Tensor,
    rho: float,
    *,
    mode: str = "dropout",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask and normalise binary CSR rows given by their ``indptr``; the sparse twin of :func:`mask_input`.

    For a row with ``n`` positives and Bernoulli keep indicators ``b_i ~ Bern(rho)``:

    - ``"dropout"`` (Multi-VAE, Liang et al. 2018; default): L2-normalise, then inverted dropout,
      ``x_i -> b_i / (rho * sqrt(n))``;
    - ``"bernoulli"`` (the paper's ``x ⊙ b``, then the encoder's L2 normalisation):
      ``x_i -> b_i / sqrt(sum_j b_j)``; a row whose entries are all dropped becomes empty (no division by zero).

    With ``rho = 1`` both give ``1 / sqrt(n)`` and draw no random numbers.

    Parameters
    ----------
    indptr : torch.Tensor, shape (B + 1,), int64
        CSR row pointer of the batch (all stored values are 1).
    rho : float
        Keep probability in (0, 1].
    mode : {"dropout", "bernoulli"}
    generator : torch.Generator, optional
        Source of the ``nnz`` uniform draws.

    Returns
    -------
    keep : torch.Tensor, shape (nnz,), bool
        Entries that survive.
    values : torch.Tensor, shape (nnz,), float32
        Input value of every entry (0 where dropped).
    """
    rho = validate_rho(rho)
    if mode not in ("dropout", "bernoulli"):
        raise ValueError(f"mask mode must be 'dropout' or 'bernoulli', got {mode!r}")
    counts = indptr[1:] - indptr[:-1]
    nnz = int(indptr[-1])
    row_of = torch.repeat_interleave(torch.arange(counts.numel(), device=indptr.device), counts)
    if rho < 1.0:
        keep = torch.rand(nnz, generator=generator, device=indptr.device) < rho
    else:
        keep = torch.ones(nnz, dtype=torch.bool, device=indptr.device)
    if mode == "dropout" or rho == 1.0:
        scale = 1.0 / (counts.clamp(min=1).float().sqrt() * rho)
    else:
        kept = torch.zeros(counts.numel(), device=indptr.device).index_add_(0, row_of, keep.float())
        scale = 1.0 / kept.clamp(min=1.0).sqrt()
    values = scale[row_of] * keep.float()
    return keep, values
