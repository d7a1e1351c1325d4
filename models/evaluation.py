"""Full-ranking evaluation of held-out users: Recall@K and NDCG@K exactly as in PROTOCOL.md (Metrics).

For a held-out user with target set ``T`` (the held-out 20%) and fold-in set ``F`` (the model input):

1. every item of ``F`` gets score ``-inf`` before ranking (and an item scored ``-inf`` is never recommended);
2. the remaining items are ranked by score, best first; ``hit_r = 1`` if the item at rank ``r`` is in ``T``;
3. ``Recall@K = sum_{r<=K} hit_r / min(K, |T|)`` (Liang et al. 2018; RecBole and Cornac divide by ``|T|``,
   which is not comparable);
4. ``NDCG@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K} hit_r / log2(r + 1)`` and
   ``IDCG@K = sum_{r=1}^{min(K, |T|)} 1 / log2(r + 1)``.

Users without targets (fewer than 5 interactions in the split) are not scored at all: they are excluded from
every mean and counted (``Evaluation.n_excluded``), so no metric is ever NaN. Means are reported with their
standard error ``se = std(ddof=1) / sqrt(n)``, overall and per user group of the paper's table
(:data:`USER_GROUPS`, by full history length = fold-in + targets).

Memory: users are scored ``batch_size`` rows at a time; the largest allocation is the
``(batch_size, n_items)`` score block of one batch, never ``n_users x n_items``. Hits are looked up in the
batch's target CSR rows by a sorted-key search, so not even a dense boolean target block is built.

Ties: the top-k is taken with :func:`torch.topk` (``sorted=True``). Among items with exactly equal scores,
the order, and therefore which of them enter the top K when the tie straddles rank K, is whatever
``torch.topk`` returns; PyTorch does not specify it, and it can differ between CPU and CUDA. Metrics of users
whose scores tie at the cut-off are therefore implementation-defined. Real-valued model scores practically
never tie; constant scores (e.g. an untrained model) do.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.lazy import lazy_import
from models.split import HeldOut

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")
torch = lazy_import("torch")

__all__ = [
    "DEFAULT_METRICS",
    "USER_GROUPS",
    "Evaluation",
    "evaluate",
    "evaluate_rows",
    "paired_difference",
    "parse_metric",
    "ranking_metrics",
    "top_k_items",
]

DEFAULT_METRICS: tuple[str, ...] = ("recall@20", "recall@50", "ndcg@100")

USER_GROUPS: tuple[tuple[str, float, float], ...] = (
    ("[5-10]", 5, 10),
    ("[11-50]", 11, 50),
    ("[51-100]", 51, 100),
    ("[100+]", 101, math.inf),
)
"""User groups of the paper's table, ``(label, low, high)`` with both bounds inclusive, on the full history
length (fold-in + targets). ``[100+]`` means *more than* 100 interactions (101 and up), so that a user with
exactly 100 interactions falls in ``[51-100]`` only and the groups do not overlap. Users with fewer than 5
interactions fall into no group (counted by :meth:`Evaluation.n_outside_groups`)."""

_METRIC_RE = re.compile(r"^(recall|ndcg)@(-?\d+)$")

ScoreFn = Callable[["sp.csr_matrix"], "np.ndarray | torch.Tensor"]


# --------------------------------------------------------------------------------------------- metric names
def parse_metric(name: str) -> tuple[str, int]:
    """Parse a metric name ``"recall@K"`` or ``"ndcg@K"`` (case-insensitive) into ``(kind, K)``.

    Raises
    ------
    ValueError
        For any other name, or ``K < 1``.
    """
    if not isinstance(name, str):
        raise ValueError(f"metric names must be strings like 'recall@20' or 'ndcg@100', got {name!r}")
    match = _METRIC_RE.match(name.strip().lower())
    if match is None:
        raise ValueError(
            f"unknown metric {name!r}: use 'recall@K' or 'ndcg@K' with an integer K >= 1, e.g. 'recall@20'"
        )
    k = int(match.group(2))
    if k < 1:
        raise ValueError(f"metric {name!r} has K = {k}: K must be an integer >= 1, e.g. 'ndcg@100'")
    return match.group(1), k


def _parse_metrics(metrics: str | Iterable[str]) -> dict[str, tuple[str, int]]:
    """Canonical name -> (kind, K), in the given order, duplicates merged."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    parsed: dict[str, tuple[str, int]] = {}
    for name in metrics:
        kind, k = parse_metric(name)
        parsed[f"{kind}@{k}"] = (kind, k)
    if not parsed:
        raise ValueError("no metric given: pass e.g. metrics=('recall@20', 'recall@50', 'ndcg@100')")
    return parsed


# ------------------------------------------------------------------------------------------ ranking metrics
def _canonical_csr(matrix: sp.spmatrix | sp.sparray, what: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise ValueError(f"{what} must be a scipy.sparse CSR matrix, got {type(matrix).__name__}")
    csr = sp.csr_matrix(matrix)
    if not csr.has_canonical_format:
        # Duplicates would count one target twice and unsorted indices would break the sorted-key search.
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def ranking_metrics(
    topk_items: np.ndarray,
    targets: sp.csr_matrix,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
) -> dict[str, np.ndarray]:
    """Recall@K and NDCG@K of given top-k lists (pure function, no model involved).

    ``Recall@K = h_K / min(K, |T|)`` and ``NDCG@K = (sum_{r<=K} hit_r / log2(r + 1)) /
    (sum_{r<=min(K, |T|)} 1 / log2(r + 1))`` with ``hit_r = [topk_items[:, r - 1] in T]`` and
    ``h_K = sum_{r<=K} hit_r`` (Liang et al. 2018, PROTOCOL.md).

    Parameters
    ----------
    topk_items : numpy.ndarray, shape (B, k), integer
        Item indices, best first, with no repeats in a row. A negative entry means "no item at this rank"
        (e.g. fewer than k items were rankable) and is never a hit.
    targets : scipy.sparse.csr_matrix, shape (B, n_items)
        Target items per row: the stored entries (the sparsity pattern) are the targets, values are ignored.
        Every row must have at least one target.
    metrics : iterable of str
        Names ``"recall@K"`` / ``"ndcg@K"``; ``k`` must be at least ``min(K, n_items)`` for each.

    Returns
    -------
    dict[str, numpy.ndarray]
        Canonical metric name -> float64 array of shape (B,), each value in [0, 1].

    Raises
    ------
    ValueError
        Unknown metric or ``K < 1``; shapes that disagree; item indices out of range or repeated in a row;
        a row without targets; too few columns for the largest K.
    """
    parsed = _parse_metrics(metrics)
    targets = _canonical_csr(targets, "targets")
    topk = np.asarray(topk_items)
    if topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk_items must be a 2-D integer array (B, k), got shape {topk.shape} {topk.dtype}")
    n_rows, n_cols = topk.shape
    n_items = int(targets.shape[1])
    if targets.shape[0] != n_rows:
        raise ValueError(f"topk_items has {n_rows} rows but targets has {targets.shape[0]}: pass matching rows")
    if topk.size and topk.max() >= n_items:
        raise ValueError(f"topk_items holds item {int(topk.max())} but targets has only {n_items} columns")
    k_needed = max(min(k, n_items) for _, k in parsed.values())
    if n_cols < k_needed:
        raise ValueError(f"topk_items has {n_cols} columns but the metrics need {k_needed}: rank max K items per row")
    topk = topk.astype(np.int64, copy=False)
    if n_cols > 1:
        ordered = np.sort(topk, axis=1)
        if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
            raise ValueError("topk_items repeats an item within a row: each row must list distinct items")
    n_targets = np.diff(targets.indptr).astype(np.int64)
    if np.any(n_targets == 0):
        raise ValueError(
            f"{int(np.sum(n_targets == 0))} rows of targets are empty: drop users without targets first "
            "(they are excluded from the metrics, not scored as 0)"
        )

    hits = _hits(topk, targets)  # (B, k) bool
    # Ranks beyond n_items (or beyond the given columns) never occur: no table of length K = 10**9.
    k_max = min(max(k for _, k in parsed.values()), max(n_items, n_cols))
    discount = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))  # rank r -> 1 / log2(r + 1)
    # Same cumulative sums for DCG and IDCG: a perfect top-K then gives NDCG exactly 1.0, never 1 + eps.
    ideal = np.cumsum(discount)  # ideal[m - 1] = IDCG with m relevant items at the top

    out: dict[str, np.ndarray] = {}
    for name, (kind, k) in parsed.items():
        h = hits[:, :k]  # fewer than k columns only when n_items < k
        denom = np.minimum(k, n_targets)
        if kind == "recall":
            out[name] = h.sum(axis=1, dtype=np.float64) / denom
        else:
            dcg = np.cumsum(h * discount[: h.shape[1]], axis=1)[:, -1]
            out[name] = dcg / ideal[denom - 1]
    return out


def _hits(topk: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """``hits[b, r] = topk[b, r] in targets[b]`` by binary search of ``b * n_items + item`` keys.

    Canonical CSR rows are sorted by row then column, so the keys of all stored entries are already sorted.
    """
    n_rows = topk.shape[0]
    if n_rows == 0 or targets.nnz == 0:
        return np.zeros(topk.shape, dtype=bool)
    n_items = np.int64(targets.shape[1])
    entry_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(targets.indptr))
    keys = entry_rows * n_items + targets.indices.astype(np.int64)
    queries = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + topk
    pos = np.minimum(np.searchsorted(keys, queries), keys.size - 1)
    # A padding entry (-1) would alias the previous row's last column, hence the explicit mask.
    return (keys[pos] == queries) & (topk >= 0)


# ----------------------------------------------------------------------------------------------- ranking
def top_k_items(
    scores: np.ndarray | torch.Tensor,
    fold_in: sp.csr_matrix,
    k: int,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Top-k items per row after masking the fold-in items (``score = -inf``).

    Parameters
    ----------
    scores : numpy.ndarray or torch.Tensor, shape (B, n_items)
        Scores of one batch; not modified (a masked copy is ranked). NaN is rejected.
    fold_in : scipy.sparse.csr_matrix, shape (B, n_items)
        The batch's fold-in rows: stored entries are masked.
    k : int
        Number of items to return, ``1 <= k <= n_items``.
    device : str or torch.device, optional
        Where masking and :func:`torch.topk` run; default: the device of ``scores`` (CPU for numpy).

    Returns
    -------
    numpy.ndarray, shape (B, k), int64
        Item indices, best first. Ranks whose best remaining score is ``-inf`` (the user has fewer than k
        items that are neither fold-in nor scored ``-inf``) hold ``-1``, so a masked item is never returned.
        Ties are ordered as :func:`torch.topk` returns them (unspecified, see module docstring).
    """
    fold_in = _canonical_csr(fold_in, "fold_in")
    if sp.issparse(scores):
        scores = scores.toarray()
    t = torch.as_tensor(scores).detach()
    if t.ndim != 2 or tuple(t.shape) != tuple(fold_in.shape):
        raise ValueError(
            f"scores have shape {tuple(t.shape)} but the fold-in batch is {tuple(fold_in.shape)}: "
            "score_fn must return one score per item for every row it is given"
        )
    if not 1 <= k <= t.shape[1]:
        raise ValueError(f"k = {k} must lie in [1, n_items = {t.shape[1]}]")
    target_device = torch.device(device) if device is not None else t.device
    if not t.is_floating_point():
        t = t.to(torch.float64)  # integer scores cannot hold -inf
    # copy=True: the caller's array (numpy memory is shared by as_tensor) must not be masked in place.
    t = t.to(device=target_device, copy=True)
    if torch.isnan(t).any():
        raise ValueError("scores contain NaN: fix the model output (NaN cannot be ranked)")
    if fold_in.nnz:
        rows = np.repeat(np.arange(fold_in.shape[0], dtype=np.int64), np.diff(fold_in.indptr))
        t[
            torch.from_numpy(rows).to(target_device),
            torch.from_numpy(fold_in.indices.astype(np.int64)).to(target_device),
        ] = -math.inf
    values, indices = torch.topk(t, k, dim=1, largest=True, sorted=True)
    indices = indices.masked_fill(values == -math.inf, -1)
    return indices.cpu().numpy().astype(np.int64, copy=False)


# ------------------------------------------------------------------------------------------- summaries
def _summarise(values: np.ndarray) -> dict:
    """``{"mean", "se", "n"}`` with ``se = std(ddof=1) / sqrt(n)`` (0.0 for n = 1, None for n = 0)."""
    n = int(values.size)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = float(np.mean(values, dtype=np.float64))
    se = float(np.std(values, ddof=1, dtype=np.float64) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "se": se, "n": n}


def _check_bins(bins: Sequence[tuple[str, float, float]]) -> None:
    labels = [b[0] for b in bins]
    if len(set(labels)) != len(labels):
        raise ValueError(f"group labels must be distinct, got {labels}")
    spans = sorted((lo, hi, label) for label, lo, hi in bins)
    for lo, hi, label in spans:
        if lo > hi:
            raise ValueError(f"group {label!r} has low {lo} > high {hi}: bounds are inclusive (low, high)")
    for (_, hi_prev, prev), (lo, _, label) in itertools.pairwise(spans):
        if lo <= hi_prev:
            raise ValueError(f"groups {prev!r} and {label!r} overlap: a user must fall into at most one group")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Per-user metrics of the held-out users that have targets.

    Attributes
    ----------
    per_user : dict[str, numpy.ndarray]
        Canonical metric name (``"recall@20"``, ...) -> float64 array (n_evaluated,).
    rows : numpy.ndarray, shape (n_evaluated,), int64
        Row indices of the evaluated users in the :class:`~models.split.HeldOut`, increasing.
    n_interactions : numpy.ndarray, shape (n_evaluated,)
        Full history length (fold-in + targets) of each evaluated user, for the user-group table.
    n_users : int
        All held-out users, with or without targets.
    n_excluded : int
        Held-out users without targets: not scored, excluded from every mean.
    topk : numpy.ndarray, shape (n_evaluated, k), int64, optional
        Each evaluated user's recommended items, best first (``-1``: no item at that rank), ``k`` the largest
        metric cut-off; the input of :meth:`beyond_accuracy`.
    """

    per_user: dict[str, np.ndarray]
    rows: np.ndarray
    n_interactions: np.ndarray
    n_users: int
    n_excluded: int
    topk: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.rows)
        if len(self.n_interactions) != n or any(len(v) != n for v in self.per_user.values()):
            raise ValueError("per_user arrays, rows and n_interactions must all have one entry per evaluated user")
        if n + self.n_excluded != self.n_users:
            raise ValueError(f"{n} evaluated + {self.n_excluded} excluded != n_users = {self.n_users}: counts disagree")
        if n > 1 and np.any(np.diff(self.rows) <= 0):
            raise ValueError("rows must be strictly increasing held-out row indices")
        for name in self.per_user:
            parse_metric(name)
        if self.topk is not None and (self.topk.ndim != 2 or self.topk.shape[0] != n):
            raise ValueError(f"topk has shape {self.topk.shape}; expected one row per evaluated user ({n})")

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names, in evaluation order."""
        return tuple(self.per_user)

    @property
    def n_evaluated(self) -> int:
        return len(self.rows)

    def summary(self) -> dict[str, dict]:
        """``{metric: {"mean", "se", "n"}}`` over the evaluated users, ``se = std(ddof=1) / sqrt(n)``.

        Raises
        ------
        ValueError
            If no user was evaluated (a mean over nobody is undefined, not NaN).
        """
        if self.n_evaluated == 0:
            raise ValueError(f"no held-out user has targets ({self.n_users} users, all excluded): nothing to summarise")
        return {name: _summarise(values) for name, values in self.per_user.items()}

    def _group_masks(self, bins: Sequence[tuple[str, float, float]]) -> dict[str, np.ndarray]:
        _check_bins(bins)
        n = self.n_interactions
        return {label: (n >= lo) & (n <= hi) for label, lo, hi in bins}

    def groups(self, bins: Sequence[tuple[str, float, float]] = USER_GROUPS) -> dict[str, dict[str, dict]]:
        """Summaries per user group: ``{label: {metric: {"mean", "se", "n"}}}``.

        A user belongs to group ``(label, low, high)`` when ``low <= n_interactions <= high`` (fold-in +
        targets); see :data:`USER_GROUPS`. An empty group reports ``n = 0`` and ``mean = se = None``.
        """
        return {
            label: {name: _summarise(values[mask]) for name, values in self.per_user.items()}
            for label, mask in self._group_masks(bins).items()
        }

    def n_outside_groups(self, bins: Sequence[tuple[str, float, float]] = USER_GROUPS) -> int:
        """Evaluated users that fall into none of ``bins`` (e.g. fewer than 5 interactions)."""
        masks = list(self._group_masks(bins).values())
        inside = np.logical_or.reduce(masks) if masks else np.zeros(self.n_evaluated, dtype=bool)
        return int(self.n_evaluated - np.count_nonzero(inside))

    def group_labels(self, bins: Sequence[tuple[str, float, float]] = USER_GROUPS) -> np.ndarray:
        """The group label of every evaluated user, shape (n_evaluated,), ``""`` for a user in no group (the
        bins do not overlap: :func:`_check_bins`)."""
        labels = np.full(self.n_evaluated, "", dtype=object)
        for label, mask in self._group_masks(bins).items():
            labels[mask] = label
        return labels

    def per_user_table(self, users: np.ndarray, bins: Sequence[tuple[str, float, float]] = USER_GROUPS) -> pd.DataFrame:
        """One row per evaluated user: ``user`` (raw id), ``n_interactions``, ``group`` and every metric.

        Parameters
        ----------
        users : numpy.ndarray, shape (n_users,)
            Raw ids of the held-out rows (:attr:`models.split.HeldOut.users`); row ``rows[i]`` is user ``i``.

        Returns
        -------
        pandas.DataFrame, shape (n_evaluated, 3 + number of metrics)
        """
        users = np.asarray(users)
        if users.shape != (self.n_users,):
            raise ValueError(f"users has shape {users.shape}, expected ({self.n_users},): one id per held-out row")
        table = {"user": users[self.rows], "n_interactions": self.n_interactions, "group": self.group_labels(bins)}
        return pd.DataFrame({**table, **self.per_user})

    def beyond_accuracy(
        self,
        popularity: np.ndarray,
        n_train_users: int,
        ks: Sequence[int] | None = None,
        bins: Sequence[tuple[str, float, float]] = USER_GROUPS,
    ) -> dict:
        """Catalogue coverage, Gini, average recommended popularity and novelty of the top-K lists.

        For the users ``U`` of a group (all evaluated users, then each user group) with lists ``L_u`` (the top
        K recommended items, fold-in excluded; fewer when fewer items were rankable) and ``pop(i)`` the number of
        training users with item ``i``:

        * ``coverage@K = |U_u L_u| / n_items``: the share of the catalogue recommended to anyone;
        * ``gini@K = sum_{j=1..n} (2j - n - 1) c_(j) / (n sum_j c_j)`` with ``c_(1) <= ... <= c_(n)`` the sorted
          exposure counts ``c_i = #{u : i in L_u}`` of all ``n = n_items`` items: 0 when every item is recommended
          equally often, ``1 - 1/n`` when one item takes every slot (the Gini index of Fleder & Hosanagar 2009
          as RecBole and Elliot compute it);
        * ``arp@K = mean_u mean_{i in L_u} pop(i)``: average recommendation popularity (Abdollahpouri et al.
          2019);
        * ``novelty@K = mean_u mean_{i in L_u} -log2(pop(i) / n_train_users)``: mean self-information in bits
          (Zhou et al. 2010); an item no training user has (possible only for lists from outside) counts with
          ``pop = 1``.

        Parameters
        ----------
        popularity : numpy.ndarray, shape (n_items,)
            ``pop(i)``: column sums of the training matrix.
        n_train_users : int
        ks : sequence of int, optional
            Cut-offs (default: those of the accuracy metrics); each at most the stored list length.

        Returns
        -------
        dict
            ``{"all": {"coverage@K": ..., "gini@K": ..., "arp@K": ..., "novelty@K": ..., "users": n}, "groups":
            {label: {...}}}``; a group without users has ``None`` values. A K above the number of items
            measures the whole ranked list (as Recall@K does).
        """
        if self.topk is None:
            raise ValueError("this evaluation kept no top-K lists: evaluate again with models.evaluation.evaluate")
        pop = np.asarray(popularity, dtype=np.float64)
        n_items = pop.size
        if ks is None:
            ks = sorted({parse_metric(m)[1] for m in self.metrics})
        stored = self.topk.shape[1]
        for k in ks:
            # lists hold min(max K, n_items) items: a K beyond the catalogue is the whole list, as for Recall@K
            if k < 1 or (k > stored and stored < n_items):
                raise ValueError(f"K = {k} must lie in [1, {stored}] (the stored list length)")
        if n_train_users < 1:
            raise ValueError(f"n_train_users must be >= 1, got {n_train_users}")
        info = -np.log2(np.maximum(pop, 1.0) / n_train_users)

        def measure(mask: np.ndarray) -> dict:
            out: dict = {"users": int(mask.sum())}
            for k in ks:
                lists = self.topk[mask, :k]
                valid = lists >= 0
                names = [f"coverage@{k}", f"gini@{k}", f"arp@{k}", f"novelty@{k}"]
                if not valid.any():
                    out.update(dict.fromkeys(names, None))
                    continue
                counts = np.bincount(lists[valid], minlength=n_items).astype(np.float64)
                ordered = np.sort(counts)
                j = np.arange(1, n_items + 1, dtype=np.float64)
                length = np.maximum(valid.sum(axis=1), 1)
                safe = np.where(valid, lists, 0)
                per_user_pop = np.where(valid, pop[safe], 0.0).sum(axis=1) / length
                per_user_info = np.where(valid, info[safe], 0.0).sum(axis=1) / length
                has = valid.any(axis=1)
                out[names[0]] = float(np.count_nonzero(counts) / n_items)
                out[names[1]] = float(((2 * j - n_items - 1) * ordered).sum() / (n_items * ordered.sum()))
                out[names[2]] = float(per_user_pop[has].mean())
                out[names[3]] = float(per_user_info[has].mean())
            return out

        return {
            "all": measure(np.ones(self.n_evaluated, dtype=bool)),
            "groups": {label: measure(mask) for label, mask in self._group_masks(bins).items()},
        }

    def to_dict(self, bins: Sequence[tuple[str, float, float]] = USER_GROUPS) -> dict:
        """JSON-ready dict (plain floats/ints/None, no NaN).

        Keys: every metric name (``"recall@20"``, ...) -> ``{"mean", "se", "n"}``; ``"n_users"``;
        ``"n_excluded_no_targets"``; ``"groups"`` -> :meth:`groups`; ``"n_outside_groups"``.
        """
        out: dict = dict(self.summary())
        out["n_users"] = int(self.n_users)
        out["n_excluded_no_targets"] = int(self.n_excluded)
        out["groups"] = self.groups(bins)
        out["n_outside_groups"] = self.n_outside_groups(bins)
        return out

    def format_table(self, bins: Sequence[tuple[str, float, float]] = USER_GROUPS, digits: int = 4) -> str:
        """Plain-text table: one row for all users, one per group, cells ``mean ± se``."""
        rows = [("all", self.summary()), *self.groups(bins).items()]
        width = 2 * digits + 7

        def cell(s: dict) -> str:
            return "-" if s["n"] == 0 else f"{s['mean']:.{digits}f} ± {s['se']:.{digits}f}"

        label_w = max(5, *(len(label) for label, _ in rows))
        header = f"{'group':<{label_w}} {'n':>7}  " + "  ".join(f"{m:>{width}}" for m in self.metrics)
        lines = [header, "-" * len(header)]
        for label, summ in rows:
            n = next(iter(summ.values()))["n"]
            lines.append(f"{label:<{label_w}} {n:>7}  " + "  ".join(f"{cell(summ[m]):>{width}}" for m in self.metrics))
        lines.append(
            f"{self.n_users} held-out users: {self.n_evaluated} evaluated, {self.n_excluded} excluded "
            f"(no targets), {self.n_outside_groups(bins)} evaluated outside every group"
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(
    score_fn: ScoreFn,
    heldout: HeldOut,
    *,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Evaluation:
    """Full-ranking Recall@K / NDCG@K of every held-out user with targets, in batches.

    Per batch of ``batch_size`` users with targets: ``scores = score_fn(fold_in[rows])``, fold-in items set
    to ``-inf``, top ``k = min(max K, n_items)`` by :func:`torch.topk`, then :func:`ranking_metrics` against
    the batch's target rows. Users without targets are never passed to ``score_fn``.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(fold_in_batch: csr_matrix (B, n_items)) -> np.ndarray | torch.Tensor (B, n_items)``,
        higher is better; it receives only rows of users with targets, so it must not assume a fixed B.
    heldout : HeldOut
        Validation or test users (``fold_in`` and ``targets`` of the same shape).
    metrics : iterable of str
        ``"recall@K"`` / ``"ndcg@K"`` for any integer ``K >= 1``; default Recall@20, Recall@50, NDCG@100.
    batch_size : int
        Users scored per call; peak memory is about ``batch_size * n_items`` scores.
    device : str or torch.device, optional
        Where masking and top-k run; default the device of the returned scores.
    progress : bool
        Show a tqdm bar over batches.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        Bad metric names, ``batch_size < 1``, mismatched fold-in/target shapes, wrongly shaped or NaN
        scores, or no held-out user with targets.
    """
    return evaluate_rows(
        lambda rows, fold_batch: score_fn(fold_batch),
        heldout,
        metrics=metrics,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )


def evaluate_rows(
    score_rows: Callable[[np.ndarray, sp.csr_matrix], np.ndarray | torch.Tensor],
    heldout: HeldOut,
    *,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Evaluation:
    """:func:`evaluate` for scores that depend on who the user is, not only on the fold-in row (e.g. another
    toolkit's top-K lists, :mod:`models.predictions`).

    ``score_rows(rows, fold_in[rows])`` gets the held-out row indices of the batch and their fold-in rows and
    returns the scores ``(B, n_items)``; ``-inf`` marks an item the model does not rank (never a hit, as a
    masked fold-in item). Everything else (batches, masking, top-k, metrics, exclusions) is :func:`evaluate`'s.
    """
    parsed = _parse_metrics(metrics)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    fold_in = _canonical_csr(heldout.fold_in, "heldout.fold_in")
    targets = _canonical_csr(heldout.targets, "heldout.targets")
    if fold_in.shape != targets.shape:
        raise ValueError(
            f"heldout.fold_in {fold_in.shape} and heldout.targets {targets.shape} differ: they must share "
            "rows (users) and columns (items)"
        )
    n_users, n_items = (int(s) for s in fold_in.shape)
    rows = np.flatnonzero(np.diff(targets.indptr) > 0).astype(np.int64)
    if rows.size == 0:
        raise ValueError(
            f"no held-out user has targets ({n_users} users, all excluded): nothing to evaluate; "
            "check the split (targets need >= 5 interactions per user)"
        )
    k = min(max(kk for _, kk in parsed.values()), n_items)
    per_user = {name: np.empty(rows.size, dtype=np.float64) for name in parsed}
    lists = np.empty((rows.size, k), dtype=np.int64)

    starts = range(0, rows.size, int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch")
    for start in starts:
        batch = rows[start : start + batch_size]
        fold_batch = fold_in[batch]
        with torch.no_grad():
            scores = score_rows(batch, fold_batch)
        topk = top_k_items(scores, fold_batch, k, device=device)
        lists[start : start + batch.size] = topk
        values = ranking_metrics(topk, targets[batch], parsed)
        for name, v in values.items():
            per_user[name][start : start + batch.size] = v

    n_interactions = (np.diff(fold_in.indptr) + np.diff(targets.indptr))[rows]
    return Evaluation(
        per_user=per_user,
        rows=rows,
        n_interactions=n_interactions,
        n_users=n_users,
        n_excluded=int(n_users - rows.size),
        topk=lists,
    )


def paired_difference(a: Evaluation, b: Evaluation, metric: str) -> dict:
    """Mean and standard error of the per-user difference ``a - b`` on one metric.

    ``d_u = a_u - b_u`` over the users evaluated in both (matched by held-out row index);
    returns ``{"mean": mean(d), "se": std(d, ddof=1) / sqrt(n), "n": n}`` (se 0.0 for n = 1). Pairing removes
    the between-user variance, so this se is the one to compare two models on the same held-out users
    (e.g. with and without PIA).

    Raises
    ------
    ValueError
        Unknown metric or one missing from either evaluation; evaluations of different held-out sets;
        no user evaluated in both.
    """
    kind, k = parse_metric(metric)
    name = f"{kind}@{k}"
    for label, ev in (("a", a), ("b", b)):
        if name not in ev.per_user:
            raise ValueError(f"metric {name!r} is missing from evaluation {label} (it has {list(ev.metrics)})")
    if a.n_users != b.n_users:
        raise ValueError(f"evaluations cover {a.n_users} and {b.n_users} held-out users: pair runs on the same HeldOut")
    common, ia, ib = np.intersect1d(a.rows, b.rows, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise ValueError("no held-out user is evaluated in both evaluations: nothing to pair")
    if not np.array_equal(a.n_interactions[ia], b.n_interactions[ib]):
        raise ValueError("the evaluations disagree on users' history lengths: they come from different HeldOuts")
    return _summarise(a.per_user[name][ia] - b.per_user[name][ib])
