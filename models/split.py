"""Strong-generalization split of Liang et al. (2018), exactly as in PROTOCOL.md.

Steps, each counted in the split report:

1. binarise (keep ratings above a threshold, or every row for implicit data);
2. merge duplicate (user, item) pairs;
3. item filter (``min_sc``, e.g. 200 users for MSD), then user filter (``min_uc`` = 5), one pass each;
4. ``numpy.random.seed(98765)``; permute the users (sorted by raw id); the last ``H`` users are test,
   the ``H`` before them validation, the rest training;
5. item vocabulary = items of the training users, numbered by first appearance; held-out interactions on
   other items are dropped (and counted);
6. per held-out user with ``n >= 5`` items (in file order), a fresh ``RandomState(98765)`` per held-out set
   draws ``int(0.2 n)`` targets with ``choice(n, size, replace=False)``; the rest is the fold-in input.
   Users with fewer items get no targets: they are kept, counted, and excluded from metric means.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

import numpy as np

from models.lazy import lazy_import
from models.readers import RawInteractions

sp = lazy_import("scipy.sparse")


@dataclass(frozen=True)
class HeldOut:
    """Validation or test users of a strong-generalization split.

    Attributes
    ----------
    fold_in : scipy.sparse.csr_matrix, shape (n_users, n_items), float32, int32 indices
        The 80% of each user's history given to the model as input.
    targets : scipy.sparse.csr_matrix, shape (n_users, n_items)
        The held-out 20% to be ranked; an empty row for a user with fewer than 5 items.
    users : numpy.ndarray, shape (n_users,)
        Raw user ids, in the row order of both matrices.
    """

    fold_in: sp.csr_matrix
    targets: sp.csr_matrix
    users: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.fold_in.shape[0])

    @property
    def has_targets(self) -> np.ndarray:
        """Boolean mask (n_users,) of users that take part in metric means."""
        return np.diff(self.targets.indptr) > 0

    @property
    def n_interactions(self) -> np.ndarray:
        """Full history length per user (fold-in + targets), used for the user-group table."""
        return np.diff(self.fold_in.indptr) + np.diff(self.targets.indptr)


@dataclass(frozen=True)
class Split:
    """A cached strong-generalization split.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"ml-1m"``.
    train : scipy.sparse.csr_matrix, shape (n_train_users, n_items), float32, int32 indices
        Full histories of the training users (binary).
    train_users : numpy.ndarray, shape (n_train_users,)
        Raw user ids of the training rows.
    validation, test : HeldOut
        Held-out users.
    items : numpy.ndarray, shape (n_items,)
        Raw item ids of the columns (the training-user vocabulary).
    report : dict
        Counts at every preprocessing step (JSON-serialisable).
    """

    name: str
    train: sp.csr_matrix
    train_users: np.ndarray
    validation: HeldOut
    test: HeldOut
    items: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])


@dataclass(frozen=True)
class SplitConfig:
    """Preprocessing and split options (PROTOCOL.md).

    Attributes
    ----------
    min_rating : float or None
        Keep rows with ``rating > min_rating`` (3.5 for MovieLens and Netflix); None keeps every row
        (implicit data such as Gowalla, MSD play counts).
    min_uc : int
        Minimum positives per user (5).
    min_sc : int
        Minimum users per item, applied before the user filter (0; 200 for MSD).
    n_heldout : int or float
        Users per held-out set (validation and test each): a count, or a fraction of users when < 1.
    test_prop : float
        Share of each held-out user's items held out as targets (0.2).
    seed : int
        Seed of the user permutation and of the target draws (98765).
    """

    min_rating: float | None = 3.5
    min_uc: int = 5
    min_sc: int = 0
    n_heldout: int | float = 0.1
    test_prop: float = 0.2
    seed: int = 98765

    def validate(self) -> None:
        """Raise a ValueError naming the field for a wrong-typed, non-finite or impossible option.

        Types are checked, not coerced: configs also come from JSON files, where ``"5"`` or ``2.5`` for a count
        is a mistake to report, and a float ``n_heldout`` means a fraction (so ``10.0`` is refused, not guessed).
        """
        if not _is_int(self.min_uc) or self.min_uc < 1:
            raise ValueError(f"min_uc must be an integer >= 1, got {self.min_uc!r}.")
        if not _is_int(self.min_sc) or self.min_sc < 0:
            raise ValueError(f"min_sc must be an integer >= 0, got {self.min_sc!r}.")
        h = self.n_heldout
        if _is_int(h):
            if h < 1:
                raise ValueError(f"n_heldout must be >= 1 user, got {h}.")
        elif _is_real(h):
            if not np.isfinite(h):
                raise ValueError(f"n_heldout must be finite, got {h}.")
            if h >= 1:
                hint = f" ({int(h)}, not {h})" if float(h).is_integer() else ""
                raise ValueError(
                    f"n_heldout {h} is neither a fraction in (0, 0.5) nor a count: a count must be an integer{hint}."
                )
            if not 0.0 < h < 0.5:
                raise ValueError(f"n_heldout as a fraction must lie in (0, 0.5), got {h}.")
        else:
            raise ValueError(f"n_heldout must be a count (integer >= 1) or a fraction in (0, 0.5), got {h!r}.")
        if not _is_real(self.test_prop):
            raise ValueError(f"test_prop must be a number in (0, 1), got {self.test_prop!r}.")
        if not 0.0 < self.test_prop < 1.0:  # also false for NaN
            raise ValueError(f"test_prop must lie in (0, 1), got {self.test_prop}.")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:  # numpy's RandomState accepts no other seed
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}.")
        if self.min_rating is not None and (not _is_real(self.min_rating) or not np.isfinite(self.min_rating)):
            raise ValueError(f"min_rating must be a finite number or None, got {self.min_rating!r}.")

    def as_dict(self) -> dict:
        """The options as plain Python values (numpy numbers from a caller converted), ready for JSON."""
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(self).items()}

    @property
    def heldout_is_fraction(self) -> bool:
        """Whether ``n_heldout`` is a fraction of the users (a float) rather than a count."""
        return not _is_int(self.n_heldout)


def _is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


class EmptySplitError(ValueError):
    """Filtering left too little data for the requested split."""


def _binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary CSR with int32 indices and sorted columns (rows/cols are unique pairs)."""
    mat = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows.astype(np.int64), cols.astype(np.int64))), shape=shape
    )
    mat.sum_duplicates()
    mat.indices = mat.indices.astype(np.int32, copy=False)
    mat.indptr = mat.indptr.astype(np.int32 if mat.nnz < 2**31 else np.int64, copy=False)
    return mat


def _fold_in_targets(user_rows: np.ndarray, users_sorted: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, int]:
    """Boolean target mask over the held-out rows, drawn as Liang et al. do.

    ``user_rows`` are the held-out rows' user codes in file order, ``users_sorted`` the set's users sorted by
    raw id. A fresh ``RandomState(seed)`` is consumed user by user in sorted order; a user with ``n >= 5``
    rows gets ``choice(n, int(test_prop * n), replace=False)`` of its rows (in file order) as targets.
    Returns the mask and the number of users left without targets.
    """
    order = np.argsort(user_rows, kind="stable")  # group rows by user, keeping file order inside a user
    grouped = user_rows[order]
    starts = np.searchsorted(grouped, users_sorted, side="left")
    ends = np.searchsorted(grouped, users_sorted, side="right")
    rs = np.random.RandomState(config.seed)
    is_target = np.zeros(user_rows.size, dtype=bool)
    without = 0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        n = end - start
        if n >= 5:
            picked = rs.choice(n, size=int(config.test_prop * n), replace=False)
            is_target[order[start + picked]] = True
        # also a user whose int(test_prop * n) is 0 (test_prop < 0.2): no targets, excluded from metrics
        without += n < 5 or int(config.test_prop * n) == 0
    return is_target, without


def _raw_ids(compact: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    return compact if labels is None else labels[compact]


def build_split(raw: RawInteractions, config: SplitConfig, name: str) -> Split:
    """Preprocess raw interactions and split them by users, exactly as Liang et al. (2018).

    Parameters
    ----------
    raw : RawInteractions
        Rows in file order.
    config : SplitConfig
        Thresholds, held-out size and seed.
    name : str
        Dataset name, recorded in the report.

    Returns
    -------
    Split
        Train matrix, validation and test fold-in/targets, raw ids, and a report with counts at every step.

    Raises
    ------
    EmptySplitError
        When filtering leaves no users, or too few users for two held-out sets and a training set.
    """
    config.validate()
    sources = ", ".join(raw.sources) or name
    report: dict = {"dataset": name, "sources": list(raw.sources), "config": config.as_dict()}
    report["rows_read"] = raw.n_rows
    report["users_read"] = int(np.unique(raw.user).size)
    report["items_read"] = int(np.unique(raw.item).size)
    if raw.n_rows == 0:
        raise EmptySplitError(f"{name}: no interactions were read from {sources}; check the file.")
    user, item = raw.user, raw.item

    if config.min_rating is not None:
        if raw.rating is None:
            raise ValueError(
                f"{name}: a rating threshold ({config.min_rating}) was given but the data has no ratings; "
                "use min_rating=None (--min-rating none) for implicit data."
            )
        keep = raw.rating > config.min_rating
        user, item = user[keep], item[keep]
        report["binarise"] = {
            "rule": f"rating > {config.min_rating}",
            "rows_dropped_low_rating": int(keep.size - keep.sum()),
            "rows_kept": int(keep.sum()),
        }
    else:
        report["binarise"] = {"rule": "implicit: every row is a positive", "rows_dropped_low_rating": 0}
        report["binarise"]["rows_kept"] = int(user.size)
    if user.size == 0:
        raise EmptySplitError(
            f"{name}: no row passes the rating rule ({report['binarise']['rule']}); lower --min-rating."
        )

    # Compact codes (sorted by raw id), so keys cannot overflow whatever the raw ids are.
    user_vals, u = np.unique(user, return_inverse=True)
    item_vals, i = np.unique(item, return_inverse=True)
    _, first = np.unique(u.astype(np.int64) * item_vals.size + i, return_index=True)
    first.sort()  # keep the first occurrence of each (user, item), in file order
    report["duplicates_merged"] = int(u.size - first.size)
    u, i = u[first], i[first]

    rows_before = int(u.size)
    if config.min_sc > 0:
        keep = (np.bincount(i, minlength=item_vals.size) >= config.min_sc)[i]
        u, i = u[keep], i[keep]
    report["item_filter"] = {
        "min_users_per_item": int(config.min_sc),
        "rows_dropped": rows_before - int(u.size),
        "items_dropped": int(np.unique(item).size - np.unique(i).size) if config.min_sc > 0 else 0,
    }
    rows_before = int(u.size)
    counts = np.bincount(u, minlength=user_vals.size)
    keep = (counts >= config.min_uc)[u]
    users_before = int((counts > 0).sum())
    u, i = u[keep], i[keep]
    kept_users = np.unique(u)
    report["user_filter"] = {
        "min_positives_per_user": int(config.min_uc),
        "users_dropped": users_before - int(kept_users.size),
        "rows_dropped": rows_before - int(u.size),
    }
    n_users = int(kept_users.size)
    report["after_filtering"] = {
        "users": n_users,
        "items": int(np.unique(i).size),
        "interactions": int(u.size),
    }
    if n_users == 0:
        raise EmptySplitError(
            f"{name}: no user has >= {config.min_uc} positives after filtering "
            f"({report['binarise']['rule']}); lower --min-uc or --min-rating."
        )

    n_heldout = round(config.n_heldout * n_users) if config.heldout_is_fraction else int(config.n_heldout)
    most = (n_users - 1) // 2  # the largest held-out set that leaves one training user
    if most < 1:
        dropped = report["user_filter"]["users_dropped"]
        lower = (
            f", or lower --min-uc (now {config.min_uc}) or --min-rating: filtering dropped {dropped:,} users"
            if dropped
            else ""
        )
        raise EmptySplitError(
            f"{name}: {n_users} user{'s' if n_users != 1 else ''} left after filtering, but a split needs at least "
            f"3 users (one to train on and one per held-out set); use data with more users{lower}."
        )
    if n_heldout < 1 or n_heldout > most:
        given = (
            f"the fraction {config.n_heldout} of {n_users} users is {n_heldout} users per held-out set"
            if config.heldout_is_fraction
            else f"{n_users} users cannot give two held-out sets of {n_heldout} users and a training set"
        )
        counts = "--heldout 1" if most == 1 else f"--heldout 1 to --heldout {most}"
        raise EmptySplitError(f"{name}: {given}; pass {counts} (users per held-out set).")
    perm = kept_users[np.random.RandomState(config.seed).permutation(n_users)]
    sets = {
        "train": perm[: n_users - 2 * n_heldout],
        "validation": perm[n_users - 2 * n_heldout : n_users - n_heldout],
        "test": perm[n_users - n_heldout :],
    }
    role = np.full(user_vals.size, -1, dtype=np.int8)
    row_of = np.full(user_vals.size, -1, dtype=np.int64)
    for code, members in enumerate(sets.values()):
        role[members] = code
        row_of[members] = np.arange(members.size)
    row_role = role[u]

    # Item vocabulary: items of training users, numbered by first appearance (pandas.unique order).
    train_items = i[row_role == 0]
    vocab_vals, vocab_first = np.unique(train_items, return_index=True)
    vocab = vocab_vals[np.argsort(vocab_first, kind="stable")]
    col_of = np.full(item_vals.size, -1, dtype=np.int64)
    col_of[vocab] = np.arange(vocab.size)
    n_items = int(vocab.size)

    train_mask = row_role == 0
    train = _binary_csr(row_of[u[train_mask]], col_of[i[train_mask]], (sets["train"].size, n_items))
    heldout: dict[str, HeldOut] = {}
    split_report: dict = {
        "n_heldout_per_set": n_heldout,
        "train_users": int(sets["train"].size),
        "items": n_items,
        "train_interactions": int(train.nnz),
    }
    for code, key in ((1, "validation"), (2, "test")):
        rows = np.flatnonzero(row_role == code)
        cols = col_of[i[rows]]
        in_vocab = cols >= 0
        rows, cols = rows[in_vocab], cols[in_vocab]
        is_target, without = _fold_in_targets(u[rows], np.sort(sets[key]), config)
        shape = (sets[key].size, n_items)
        r = row_of[u[rows]]
        heldout[key] = HeldOut(
            fold_in=_binary_csr(r[~is_target], cols[~is_target], shape),
            targets=_binary_csr(r[is_target], cols[is_target], shape),
            users=_raw_ids(user_vals[sets[key]], raw.user_labels),
        )
        split_report[key] = {
            "users": int(sets[key].size),
            "rows_dropped_out_of_vocabulary": int((~in_vocab).sum()),
            "users_without_targets": without,
            "fold_in_interactions": int((~is_target).sum()),
            "target_interactions": int(is_target.sum()),
        }
    report["split"] = split_report
    return Split(
        name=name,
        train=train,
        train_users=_raw_ids(user_vals[sets["train"]], raw.user_labels),
        validation=heldout["validation"],
        test=heldout["test"],
        items=_raw_ids(item_vals[vocab], raw.item_labels),
        report=report,
    )
