"""Seeded synthetic implicit-feedback data with planted structure and ground truth.

The offline dataset that always works: no download, a few hundred milliseconds, and every property the
geometry analyses look for is planted on purpose and returned as a label.

Generative model (all draws from one ``numpy.random.Generator(seed)``):

1. **Item clusters.** The ``I`` items are cut into ``G`` contiguous clusters of sizes differing by at most
   one: ``cluster(i) = floor(i G / I)`` (contiguous so a plotted matrix shows the blocks). Inside each cluster
   the items get a random popularity rank ``r_i in {1, ..., |C_g|}`` and a Zipf weight

       w_i = r_i ** (-popularity_exponent),

   so every cluster has a few popular items and a long tail, as in real CF data (exponent 0: uniform).
2. **Users.** Cohort sizes are ``shares * N`` rounded by largest remainder; inside each cohort the taste
   groups are dealt round-robin (so groups are balanced in every cohort), then users are shuffled.
3. **Activity.** User u of cohort c draws ``n_u = clip(rint(a_c (1 + U)), 5, I)``, ``U ~ Uniform(-j, j)``
   (``j = activity_jitter``, default 0.2): about 5, 50 and 350 interactions by default.
4. **Taste.** ``k_in ~ Binomial(n_u, affinity)`` distinct items come from the user's own cluster and
   ``k_out = n_u - k_in`` from the other clusters, each set drawn **without replacement with probability
   proportional to** ``w_i`` (successive sampling, done for all users at once by exponential races: the
   k smallest of ``E_i / w_i``, ``E_i ~ Exp(1)``, i.e. the Gumbel top-k trick). ``affinity`` is therefore
   the expected fraction of a user's items inside its cluster. When the cluster is too small
   (``k_in > |C_g|``, e.g. 350 x 0.85 items from a 200-item cluster) the user takes the whole cluster and
   the excess comes from outside.
5. **Far-but-related pairs** (section 4 of PAPER.md: masking can bring such users into each other's sharing
   radius). In the *planting cohort* (the largest-activity cohort whose expected in-cluster draw
   ``affinity * max n_u`` fits in half a cluster, else the largest one whose ``max n_u`` fits in half the
   catalogue), pairs of same-group users are restricted to the two disjoint halves of the catalogue
   (items of odd / even popularity rank, so both halves keep the same popularity profile): one user draws
   only from half 0, the other only from half 1, with the same affinity, so they share **no** item. The
   returned pairs are matched planted pairs, topped up by other (half 0, half 1) combinations of the same
   group and cohort, and each returned pair satisfies the criterion below.

Far-but-related criterion (checked on the final data for every returned pair ``(u, v)``, ``u < v``):

    taste_group[u] == taste_group[v],   cohort[u] == cohort[v],
    |S_u ∩ S_v| <= FAR_MAX_SHARED (= 1),
    |S_u Δ S_v| = ||x_u - x_v||_1 > far_threshold,

with ``far_threshold`` the median (``numpy.median`` convention) of ``|S_u Δ S_v|`` over all unordered pairs
of distinct users of the same taste group. Same cohort keeps the distance from being an activity artefact.

References: PAPER.md sections 3-4 (input distance, masking contracts far-but-related pairs) and the cohort
figure (users with about 5, 50 and 350 interactions).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.lazy import lazy_import

sp = lazy_import("scipy.sparse")

MIN_ACTIVITY = 5
FAR_MAX_SHARED = 1
# Dense scratch (keys, co-occurrence blocks) is processed in row chunks of about this many entries.
_CHUNK_ENTRIES = 1 << 22
# Sampling keys scale as rank ** exponent; beyond this they would overflow float64 for large clusters.
_MAX_EXPONENT = 20.0


@dataclass(frozen=True, eq=False)
class SyntheticData:
    """Synthetic interactions and their ground truth (the arrays are made read-only on construction).

    Attributes
    ----------
    users, items : numpy.ndarray, shape (nnz,), int64
        The interaction list (0-based ids), sorted by user then item, without duplicates.
    taste_group : numpy.ndarray, shape (n_users,), int64
        Planted taste group g of each user (= the index of its preferred item cluster).
    cohort : numpy.ndarray, shape (n_users,), int64
        Activity cohort c of each user, an index into ``cohort_activity``.
    cohort_activity : tuple of int
        Target number of interactions of each cohort, e.g. ``(5, 50, 350)``.
    item_cluster : numpy.ndarray, shape (n_items,), int64
        Cluster of each item (cluster g is the home of taste group g).
    item_rank : numpy.ndarray, shape (n_items,), int64
        1-based popularity rank of each item inside its cluster (sampling weight ``rank ** -exponent``).
    far_related_pairs : numpy.ndarray, shape (P, 2), int64
        Far-but-related user pairs ``(u, v)``, ``u < v``, rows sorted; see the module docstring.
    far_threshold : float
        Median of ``|S_u Δ S_v|`` over same-group user pairs, the distance every far pair exceeds
        (NaN when no group has two users).
    far_half : numpy.ndarray, shape (n_users,), int64
        -1 for ordinary users; 0 or 1 for users restricted to one half of the catalogue (planted far pairs).
    """

    users: np.ndarray
    items: np.ndarray
    taste_group: np.ndarray
    cohort: np.ndarray
    cohort_activity: tuple[int, ...]
    item_cluster: np.ndarray
    item_rank: np.ndarray
    far_related_pairs: np.ndarray
    far_threshold: float
    far_half: np.ndarray

    def __post_init__(self) -> None:
        arrays = (self.users, self.items, self.taste_group, self.cohort, self.item_cluster, self.item_rank)
        for array in (*arrays, self.far_related_pairs, self.far_half):
            array.setflags(write=False)

    @property
    def n_users(self) -> int:
        return int(self.taste_group.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_cluster.shape[0])

    @property
    def n_interactions(self) -> np.ndarray:
        """Number of interactions per user, shape (n_users,)."""
        return np.bincount(self.users, minlength=self.n_users)

    def matrix(self) -> sp.csr_matrix:
        """Binary user x item matrix X, ``X[u, i] = 1`` iff (u, i) is an interaction.

        Returns
        -------
        scipy.sparse.csr_matrix, shape (n_users, n_items), float32 data, int32 indices, sorted indices.
        """
        indptr = np.zeros(self.n_users + 1, dtype=np.int32)
        np.cumsum(self.n_interactions, out=indptr[1:])
        data = np.ones(self.items.shape[0], dtype=np.float32)
        x = sp.csr_matrix((data, self.items.astype(np.int32), indptr), shape=(self.n_users, self.n_items), copy=False)
        x.has_sorted_indices = True
        return x

    def labels_for(self, user_ids: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Per-user ground truth for raw user ids, in the given order (e.g. the rows of a split).

        Parameters
        ----------
        user_ids : array-like of int, shape (n,)
            Raw (0-based) user ids, each in ``[0, n_users)``.

        Returns
        -------
        dict with arrays of shape (n,): ``taste_group``, ``cohort``, ``target_activity``
        (``cohort_activity[cohort]``), ``n_interactions`` and ``far_half``.
        """
        ids = np.asarray(user_ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"user_ids must be a 1-D array of integer user ids, got shape {ids.shape} and dtype "
                f"{ids.dtype}; pass e.g. split.train_users."
            )
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_users):
            raise ValueError(
                f"user_ids must lie in [0, {self.n_users}), got values in [{ids.min()}, {ids.max()}]; "
                "pass raw ids of this dataset."
            )
        return {
            "taste_group": self.taste_group[ids],
            "cohort": self.cohort[ids],
            "target_activity": np.asarray(self.cohort_activity, dtype=np.int64)[self.cohort[ids]],
            "n_interactions": self.n_interactions[ids],
            "far_half": self.far_half[ids],
        }


def make_synthetic(
    n_users: int = 3000,
    n_items: int = 1200,
    n_groups: int = 6,
    cohort_activity: Sequence[int] = (5, 50, 350),
    cohort_shares: Sequence[float] = (0.4, 0.4, 0.2),
    affinity: float = 0.85,
    popularity_exponent: float = 1.0,
    n_far_related_pairs: int = 200,
    seed: int = 0,
    activity_jitter: float = 0.2,
) -> SyntheticData:
    """Generate seeded implicit-feedback data with taste groups, activity cohorts and far-but-related pairs.

    The generative model and the far-but-related criterion are in the module docstring.

    Parameters
    ----------
    n_users, n_items : int
        Matrix size N x I (``n_items >= 5``).
    n_groups : int
        Number G of taste groups = item clusters, ``1 <= G <= n_items``.
    cohort_activity : sequence of int
        Target interactions per user of each cohort, each in ``[5, n_items]``.
    cohort_shares : sequence of float
        Fraction of users in each cohort (non-negative, summing to 1, same length as ``cohort_activity``).
    affinity : float in [0, 1]
        Expected fraction of a user's items drawn from its own cluster (``k_in ~ Binomial(n_u, affinity)``).
    popularity_exponent : float in [0, 20]
        Zipf exponent s of the in-cluster popularity ``w_i = rank_i ** -s``.
    n_far_related_pairs : int >= 0
        Number P of far-but-related pairs to plant and return.
    seed : int >= 0
        Seed of the ``numpy.random.Generator``; the output is a deterministic function of all arguments.
    activity_jitter : float in [0, 1)
        Relative half-width j of the uniform jitter of each user's activity around its cohort target.

    Returns
    -------
    SyntheticData

    Raises
    ------
    ValueError
        On impossible parameters, or when fewer than P pairs satisfy the far-but-related criterion.
    """
    activity, shares = _validate(
        n_users,
        n_items,
        n_groups,
        cohort_activity,
        cohort_shares,
        affinity,
        popularity_exponent,
        n_far_related_pairs,
        seed,
        activity_jitter,
    )
    rng = np.random.default_rng(seed)

    # Items: contiguous clusters, random popularity rank inside each, halves by rank parity.
    item_cluster = (np.arange(n_items, dtype=np.int64) * n_groups) // n_items
    cluster_size = np.bincount(item_cluster, minlength=n_groups)
    item_rank = np.empty(n_items, dtype=np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(item_cluster == g)
        item_rank[members] = rng.permutation(members.size) + 1
    inv_w = item_rank.astype(np.float64) ** float(popularity_exponent)  # 1 / w_i
    item_half = (item_rank - 1) % 2
    half_in = np.stack([np.bincount(item_cluster[item_half == h], minlength=n_groups) for h in (0, 1)])
    half_total = half_in.sum(axis=1)  # (2,)

    # Users: exact cohort counts, groups dealt round-robin inside each cohort, then shuffled.
    counts = _largest_remainder(shares, n_users)
    cohort_sorted = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    group_sorted = np.concatenate([np.arange(c, dtype=np.int64) % n_groups for c in counts])
    perm = rng.permutation(n_users)
    cohort = cohort_sorted[perm]
    taste_group = group_sorted[perm]

    jitter = rng.uniform(-activity_jitter, activity_jitter, size=n_users)
    n_u = np.clip(np.rint(activity[cohort] * (1.0 + jitter)).astype(np.int64), MIN_ACTIVITY, n_items)

    far_half, matched = _plant_halves(
        rng,
        n_far_related_pairs,
        taste_group,
        cohort,
        counts,
        activity,
        activity_jitter,
        affinity,
        n_items,
        n_groups,
        half_in,
        half_total,
    )

    restricted = far_half >= 0
    h_u = np.where(restricted, far_half, 0)
    cap_in = np.where(restricted, half_in[h_u, taste_group], cluster_size[taste_group])
    cap_out = np.where(restricted, half_total[h_u] - half_in[h_u, taste_group], n_items - cluster_size[taste_group])
    n_u = np.minimum(n_u, cap_in + cap_out)
    k_in = np.clip(rng.binomial(n_u, affinity), n_u - cap_out, cap_in)
    k_out = n_u - k_in

    users_parts, items_parts = [], []
    n_cohorts = counts.size
    for g in range(n_groups):
        in_cluster = item_cluster == g
        for c in range(n_cohorts):
            # One block per (group, cohort): similar k per row keeps the partial sort short.
            members = np.flatnonzero((taste_group == g) & (cohort == c))
            for cols, k in ((np.flatnonzero(in_cluster), k_in), (np.flatnonzero(~in_cluster), k_out)):
                rows_per_chunk = max(1, _CHUNK_ENTRIES // max(cols.size, 1))
                for start in range(0, members.size, rows_per_chunk):
                    block = members[start : start + rows_per_chunk]
                    keys = rng.standard_exponential(size=(block.size, cols.size)) * inv_w[cols][None, :]
                    half = far_half[block]
                    # Restricted users never see the other half of the catalogue.
                    keys[(half[:, None] >= 0) & (item_half[cols][None, :] != half[:, None])] = np.inf
                    rows, picked = _smallest_k(keys, k[block])
                    users_parts.append(block[rows])
                    items_parts.append(cols[picked])
    # One int64 key per (user, item): a single sort is much faster than lexsort on two columns.
    keys = np.sort(np.concatenate(users_parts) * n_items + np.concatenate(items_parts))
    users, items = keys // n_items, keys % n_items

    partial = SyntheticData(
        users=users,
        items=items,
        taste_group=taste_group,
        cohort=cohort,
        cohort_activity=tuple(int(a) for a in activity),
        item_cluster=item_cluster,
        item_rank=item_rank,
        far_related_pairs=np.empty((0, 2), dtype=np.int64),
        far_threshold=float("nan"),
        far_half=far_half,
    )
    x = partial.matrix()
    threshold = same_group_distance_median(x, taste_group)
    pairs = _select_far_pairs(rng, x, taste_group, far_half, matched, threshold, n_far_related_pairs, n_groups)
    return SyntheticData(
        users=users,
        items=items,
        taste_group=taste_group,
        cohort=cohort,
        cohort_activity=partial.cohort_activity,
        item_cluster=item_cluster,
        item_rank=item_rank,
        far_related_pairs=pairs,
        far_threshold=threshold,
        far_half=far_half,
    )


NULL_PARAMETERS: dict = {
    "n_groups": 1,
    "cohort_activity": (50,),
    "cohort_shares": (1.0,),
    "popularity_exponent": 0.0,
    "n_far_related_pairs": 0,
}
"""What :func:`make_null_synthetic` changes in :func:`make_synthetic`'s defaults: nothing planted."""


def make_null_synthetic(seed: int = 0) -> SyntheticData:
    """The null counterpart of :func:`make_synthetic`: same size, nothing planted.

    One item cluster (no taste groups), uniform item popularity (exponent 0), one activity cohort of about 50
    interactions (jitter 20%: 40 to 60) and no far-but-related pairs: every user draws its items uniformly
    without replacement, independently of every other user. Any structure an analysis finds here (a
    sharing radius that depends on taste, cohort separation, pairs whose overlap exceeds half their distance)
    is produced by the estimator, not the data; the claims ledger (:mod:`analyses.claims`) checks that its
    verdicts on the planted structure are not ``supported`` here. Dataset name ``synthetic-null`` in
    :mod:`models.data`.
    """
    return make_synthetic(seed=seed, **NULL_PARAMETERS)


def same_group_distance_median(x: sp.csr_matrix, taste_group: np.ndarray) -> float:
    """Median of ``|S_u Δ S_v| = n_u + n_v - 2 |S_u ∩ S_v|`` over unordered same-group user pairs.

    Exact: the integer distances are histogrammed group by group from column slabs of ``X_g X_g^T``, so
    memory is O(chunk + I) rather than O(pairs).

    Parameters
    ----------
    x : scipy.sparse.csr_matrix, shape (n_users, n_items)
        Binary interactions.
    taste_group : numpy.ndarray, shape (n_users,)
        Group label of each row.

    Returns
    -------
    float
        The median (mean of the two middle order statistics for an even count), NaN if there is no pair.
    """
    x = sp.csr_matrix(x, dtype=np.float32)
    n = np.diff(x.indptr).astype(np.int64)
    hist = np.zeros(2 * x.shape[1] + 1, dtype=np.int64)
    for g in np.unique(taste_group):
        members = np.flatnonzero(taste_group == g)
        if members.size < 2:
            continue
        xg, ng = x[members], n[members]
        # Sparse times a dense slab of X_g^T: much faster than sparse x sparse with a dense result.
        rows_per_chunk = max(1, _CHUNK_ENTRIES // max(members.size, x.shape[1]))
        for start in range(0, members.size, rows_per_chunk):
            stop = min(start + rows_per_chunk, members.size)
            shared = np.rint(xg @ xg[start:stop].T.toarray()).astype(np.int64)  # (n_g, chunk)
            dist = ng[:, None] + ng[None, start:stop] - 2 * shared
            upper = np.arange(members.size)[:, None] > np.arange(start, stop)[None, :]
            hist += np.bincount(dist[upper], minlength=hist.size)
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    cum = np.cumsum(hist)
    lo = np.searchsorted(cum, (total - 1) // 2, side="right")
    hi = np.searchsorted(cum, total // 2, side="right")
    return float(lo + hi) / 2.0


def _smallest_k(keys: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the ``k[r]`` smallest keys of every row r.

    With ``keys = E / w``, ``E ~ Exp(1)`` i.i.d. (exponential races; equivalently the Gumbel top-k trick,
    since ``-log(E / w) = log w + Gumbel(0, 1)``), this draws ``k[r]`` distinct columns by successive
    sampling proportional to ``w`` (Efraimidis & Spirakis 2006; Kool et al. 2019), the same law as
    ``Generator.choice(n, k, replace=False, p=w / w.sum())``.

    Parameters
    ----------
    keys : numpy.ndarray, shape (m, n)
    k : numpy.ndarray, shape (m,), int, ``0 <= k[r] <=`` number of finite keys of row r

    Returns
    -------
    rows, cols : numpy.ndarray, shape (sum k,), int64, grouped by row.
    """
    rows = np.repeat(np.arange(keys.shape[0], dtype=np.int64), k)
    k_max = int(k.max()) if k.size else 0
    if k_max == 0:
        return rows, np.empty(0, dtype=np.int64)
    if k_max < keys.shape[1]:
        # Partial sort: only the k_max smallest per row need ordering.
        part = np.argpartition(keys, k_max - 1, axis=1)[:, :k_max]
        order = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, axis=1), axis=1), axis=1)
    else:
        order = np.argsort(keys, axis=1)
    take = np.arange(k_max)[None, :] < k[:, None]
    return rows, order[take].astype(np.int64)


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``shares * total`` (Hamilton's method)."""
    raw = shares * total
    counts = np.floor(raw).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _plant_halves(
    rng: np.random.Generator,
    n_pairs: int,
    taste_group: np.ndarray,
    cohort: np.ndarray,
    counts: np.ndarray,
    activity: np.ndarray,
    jitter: float,
    affinity: float,
    n_items: int,
    n_groups: int,
    half_in: np.ndarray,
    half_total: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the users restricted to catalogue half 0 / 1 and the matched pairs among them.

    Returns ``far_half`` (n_users,) in {-1, 0, 1} and ``matched`` (m, 2) of (half-0 user, half-1 user).
    """
    far_half = np.full(taste_group.shape[0], -1, dtype=np.int64)
    matched = np.empty((0, 2), dtype=np.int64)
    if n_pairs == 0:
        return far_half, matched
    max_n = np.minimum(np.rint(activity * (1.0 + jitter)).astype(np.int64), n_items)
    populated = counts >= 2
    fits_total = populated & (max_n <= half_total.min())
    fits_cluster = fits_total & (affinity * max_n <= half_in.min())
    candidates = np.flatnonzero(fits_cluster if fits_cluster.any() else fits_total)
    if candidates.size == 0:
        raise ValueError(
            f"cannot plant {n_pairs} far-but-related pairs: no cohort with at least two users has an "
            f"activity (with jitter) within half the catalogue ({half_total.min()} items); add a lighter "
            "cohort, raise n_items or set n_far_related_pairs=0."
        )
    planting = candidates[np.argmax(activity[candidates])]
    per_group = np.full(n_groups, n_pairs // n_groups, dtype=np.int64)
    per_group[: n_pairs % n_groups] += 1
    pairs = []
    for g in range(n_groups):
        pool = rng.permutation(np.flatnonzero((taste_group == g) & (cohort == planting)))
        m = int(min(per_group[g], pool.size // 2))
        far_half[pool[:m]] = 0
        far_half[pool[m : 2 * m]] = 1
        pairs.append(np.stack([pool[:m], pool[m : 2 * m]], axis=1))
    return far_half, np.concatenate(pairs).astype(np.int64)


def _select_far_pairs(
    rng: np.random.Generator,
    x: sp.csr_matrix,
    taste_group: np.ndarray,
    far_half: np.ndarray,
    matched: np.ndarray,
    threshold: float,
    n_pairs: int,
    n_groups: int,
) -> np.ndarray:
    """Return ``n_pairs`` pairs meeting the criterion: matched planted pairs first, then other
    (half 0, half 1) combinations of the same group (and planting cohort), group by group."""
    if n_pairs == 0:
        return np.empty((0, 2), dtype=np.int64)
    per_group = np.full(n_groups, n_pairs // n_groups, dtype=np.int64)
    per_group[: n_pairs % n_groups] += 1
    first, spare = [], []
    for g in range(n_groups):
        own = matched[taste_group[matched[:, 0]] == g]
        a = np.flatnonzero((far_half == 0) & (taste_group == g))
        b = np.flatnonzero((far_half == 1) & (taste_group == g))
        cross = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
        is_matched = np.isin(cross[:, 0] * x.shape[0] + cross[:, 1], own[:, 0] * x.shape[0] + own[:, 1])
        cross = cross[~is_matched][rng.permutation(int((~is_matched).sum()))]
        ranked = np.concatenate([own, cross])
        ranked = ranked[_satisfies_far_criterion(x, ranked, threshold)]
        first.append(ranked[: per_group[g]])
        spare.append(ranked[per_group[g] :])
    chosen = np.concatenate(first + spare)[:n_pairs]
    if chosen.shape[0] < n_pairs:
        raise ValueError(
            f"only {chosen.shape[0]} of the requested {n_pairs} far-but-related pairs satisfy the criterion "
            f"(distance > {threshold}, shared <= {FAR_MAX_SHARED}); lower n_far_related_pairs or add users."
        )
    chosen = np.sort(chosen, axis=1)
    return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]


def _satisfies_far_criterion(x: sp.csr_matrix, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean (P,): ``|S_u ∩ S_v| <= FAR_MAX_SHARED`` and ``|S_u Δ S_v| > threshold``."""
    if pairs.shape[0] == 0 or not np.isfinite(threshold):
        return np.zeros(pairs.shape[0], dtype=bool)
    n = np.diff(x.indptr).astype(np.int64)
    shared = np.rint(np.asarray(x[pairs[:, 0]].multiply(x[pairs[:, 1]]).sum(axis=1)).ravel()).astype(np.int64)
    dist = n[pairs[:, 0]] + n[pairs[:, 1]] - 2 * shared
    return (shared <= FAR_MAX_SHARED) & (dist > threshold)


def _validate(
    n_users: int,
    n_items: int,
    n_groups: int,
    cohort_activity: Sequence[int],
    cohort_shares: Sequence[float],
    affinity: float,
    popularity_exponent: float,
    n_far_related_pairs: int,
    seed: int,
    activity_jitter: float,
) -> tuple[np.ndarray, np.ndarray]:
    def integer(name: str, value: object, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")

    integer("n_users", n_users, 1)
    integer("n_items", n_items, MIN_ACTIVITY)
    integer("n_groups", n_groups, 1)
    integer("n_far_related_pairs", n_far_related_pairs, 0)
    integer("seed", seed, 0)
    if n_groups > n_items:
        raise ValueError(f"n_groups ({n_groups}) must not exceed n_items ({n_items}): every group needs items.")
    activity = np.asarray(cohort_activity)
    if activity.ndim != 1 or activity.size == 0 or not np.issubdtype(activity.dtype, np.integer):
        raise ValueError(f"cohort_activity must be a non-empty sequence of integers, got {cohort_activity!r}.")
    if activity.min() < MIN_ACTIVITY or activity.max() > n_items:
        raise ValueError(
            f"cohort_activity values must lie in [{MIN_ACTIVITY}, n_items={n_items}] (users need at least "
            f"{MIN_ACTIVITY} items and at most the catalogue), got {tuple(activity.tolist())}."
        )
    shares = np.asarray(cohort_shares, dtype=np.float64)
    if shares.shape != activity.shape:
        raise ValueError(f"cohort_shares needs one share per cohort ({activity.size}), got {shares.size} values.")
    if not np.all(np.isfinite(shares)) or shares.min() < 0 or abs(shares.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"cohort_shares must be non-negative and sum to 1, got {tuple(shares.tolist())} "
            f"(sum {shares.sum():.6g}); normalise them."
        )
    if not (isinstance(affinity, numbers.Real) and np.isfinite(affinity) and 0.0 <= affinity <= 1.0):
        raise ValueError(f"affinity must be a probability in [0, 1], got {affinity!r}.")
    if not (
        isinstance(popularity_exponent, numbers.Real)
        and np.isfinite(popularity_exponent)
        and 0 <= popularity_exponent <= _MAX_EXPONENT
    ):
        raise ValueError(
            f"popularity_exponent must lie in [0, {_MAX_EXPONENT}] (0 = uniform popularity; real CF data is "
            f"near 1), got {popularity_exponent!r}."
        )
    if not (isinstance(activity_jitter, numbers.Real) and np.isfinite(activity_jitter) and 0 <= activity_jitter < 1):
        raise ValueError(f"activity_jitter must lie in [0, 1), got {activity_jitter!r}.")
    return activity.astype(np.int64), shares
