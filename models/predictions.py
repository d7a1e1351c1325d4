"""Another toolkit's recommendations scored under this protocol: top-K lists read from a file.

``python -m models.evaluate --predictions FILE --dataset NAME`` reads one row per recommended item,
``user,item,rank`` (rank 1 = best) or ``user,item,score`` (higher = better), with the raw user and item ids of
the dataset, and scores them exactly as the built-in models are scored (:func:`models.evaluation.evaluate_rows`):
the same held-out users, fold-in items removed from each list (the items below move up, as when a model's
fold-in scores are set to ``-inf``), the same metrics and user groups. An item the list does not name is never
recommended (it counts as no item at that rank), so a list shorter than K scores as a model that stops there.

Nothing is dropped silently (:attr:`Predictions.report`): rows of users outside the held-out set, rows naming items
the split does not know (not rankable), predicted fold-in items, and held-out users without any prediction
(scored 0 on every metric, as a model that recommends nothing would be).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.lazy import lazy_import
from models.split import HeldOut

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")

KINDS = ("rank", "score")


@dataclass(frozen=True)
class Predictions:
    """Listed items of the held-out users, as scores.

    Attributes
    ----------
    scores : scipy.sparse.csr_matrix, shape (n_heldout, n_items), float64
        Stored entries are the listed items (explicit zeros included), values their score, higher = better:
        ``-rank`` for rank files, the given score for score files.
    kind : str
        ``"rank"`` or ``"score"``.
    report : dict
        Counts of what was read and what could not be used (see the module docstring).
    """

    scores: sp.csr_matrix
    kind: str
    report: dict = field(default_factory=dict)

    def score_rows(self) -> Callable[[np.ndarray, sp.csr_matrix], np.ndarray]:
        """The ``score_rows`` of :func:`models.evaluation.evaluate_rows`: listed items keep their score, every
        other item is ``-inf`` (never recommended)."""
        indptr, indices, data = self.scores.indptr, self.scores.indices, self.scores.data
        n_items = self.scores.shape[1]

        def score_rows(rows: np.ndarray, fold_batch: sp.csr_matrix) -> np.ndarray:
            out = np.full((rows.size, n_items), -np.inf)
            for b, r in enumerate(rows):
                lo, hi = indptr[r], indptr[r + 1]
                out[b, indices[lo:hi]] = data[lo:hi]
            return out

        return score_rows


def _examples(values: pd.Series, n: int = 3) -> str:
    return ", ".join(map(str, pd.unique(values)[:n]))


@dataclass(frozen=True)
class PredictionTable:
    """A prediction file, checked on its own (before any split is loaded): ``user`` and ``item`` as text,
    ``value`` the rank or score, ``kind`` which."""

    path: Path
    user: pd.Series
    item: pd.Series
    value: pd.Series
    kind: str


def read_prediction_table(path: Path, *, sep: str = ",") -> PredictionTable:
    """Read and check a prediction file.

    Parameters
    ----------
    path : Path
        CSV with a header: ``user``, ``item`` and exactly one of ``rank`` (integers >= 1, distinct per user) or
        ``score`` (finite numbers); other columns are an error.
    sep : str
        Field separator.

    Raises
    ------
    ValueError
        One line naming the problem: unreadable file, wrong columns, non-numeric or missing values, a repeated
        (user, item) pair or rank.
    """
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such prediction file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    columns = set(table.columns)
    kinds = [k for k in KINDS if k in columns]
    if not {"user", "item"} <= columns or len(kinds) != 1 or len(columns) != 3:
        raise ValueError(
            f"{path}: columns {', '.join(map(str, table.columns))}; expected user,item,rank or user,item,score "
            "(a header line naming them; --predictions-sep for another separator)"
        )
    kind = kinds[0]
    value = pd.to_numeric(table[kind].str.strip(), errors="coerce")
    bad = value.isna() | ~np.isfinite(value) | ((value < 1) | (value % 1 != 0) if kind == "rank" else False)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        want = "an integer >= 1" if kind == "rank" else "a finite number"
        raise ValueError(f"{path}: line {row + 2}: {kind} {table[kind].iloc[row]!r} is not {want}")
    user, item = table["user"].str.strip(), table["item"].str.strip()
    pair = pd.DataFrame({"user": user, "item": item})
    dup = pair.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{path}: line {row + 2}: user {user.iloc[row]!r} lists item {item.iloc[row]!r} twice")
    if kind == "rank":
        same_rank = pd.DataFrame({"user": user, "rank": value}).duplicated()
        if same_rank.any():
            row = int(np.flatnonzero(same_rank.to_numpy())[0])
            raise ValueError(f"{path}: line {row + 2}: user {user.iloc[row]!r} has rank {int(value.iloc[row])} twice")
    return PredictionTable(Path(path), user, item, value, kind)


def read_predictions(table: PredictionTable, heldout: HeldOut, items: np.ndarray) -> Predictions:
    """Match a prediction table to a split's held-out users and item vocabulary.

    Parameters
    ----------
    table : PredictionTable
        From :func:`read_prediction_table`.
    heldout : HeldOut
        The users to score (``users`` are their raw ids, matched as text).
    items : numpy.ndarray, shape (n_items,)
        Raw item ids of the split's columns (:attr:`models.split.Split.items`), matched as text.

    Raises
    ------
    ValueError
        No row names a held-out user and a known item.
    """
    path, user, item, value, kind = table.path, table.user, table.item, table.value, table.kind
    user_index = pd.Series(np.arange(heldout.n_users), index=[str(u) for u in heldout.users])
    item_index = pd.Series(np.arange(len(items)), index=[str(i) for i in items])
    rows = user_index.reindex(user).to_numpy()
    cols = item_index.reindex(item).to_numpy()
    outside = np.isnan(rows)
    unknown = ~outside & np.isnan(cols)
    keep = ~outside & ~unknown
    if not keep.any():
        raise ValueError(
            f"{path}: no row names a held-out user and an item of the split ({int(outside.sum())} rows of users "
            f"outside the held-out set, e.g. {_examples(user[outside])}; {int(unknown.sum())} of unknown items): "
            "check --dataset, --on and that the ids are the raw ids of the data"
        )
    r, c = rows[keep].astype(np.int64), cols[keep].astype(np.int64)
    v = (-value[keep] if kind == "rank" else value[keep]).to_numpy(dtype=np.float64)
    scores = sp.csr_matrix((v, (r, c)), shape=(heldout.n_users, len(items)))
    scores.sort_indices()

    fold_hits = heldout.fold_in.multiply(sp.csr_matrix((np.ones_like(v), (r, c)), shape=scores.shape))
    has_targets = heldout.has_targets
    listed = np.diff(scores.indptr)
    report = {
        "file": str(path),
        "kind": kind,
        "rows": len(user),
        "rows_used": int(keep.sum()),
        "rows_outside_heldout": int(outside.sum()),
        "users_outside_heldout": int(user[outside].nunique()),
        "rows_unknown_items": int(unknown.sum()),
        "unknown_item_examples": _examples(item[unknown]) if unknown.any() else "",
        "fold_in_items_listed": int(fold_hits.nnz),
        "heldout_users": int(heldout.n_users),
        "users_without_predictions": int(np.count_nonzero(has_targets & (listed == 0))),
        "longest_list": int(listed.max()),
        "shortest_list": int(listed[has_targets & (listed > 0)].min()) if np.any(has_targets & (listed > 0)) else 0,
    }
    return Predictions(scores, kind, report)


def report_lines(report: dict, k_max: int) -> list[str]:
    """What a reader of the metrics must know about the file: one line each, empty when all is well."""
    lines = []
    if report["rows_outside_heldout"]:
        lines.append(
            f"{report['rows_outside_heldout']} rows of {report['users_outside_heldout']} users outside the held-out "
            "set: ignored"
        )
    if report["rows_unknown_items"]:
        lines.append(
            f"{report['rows_unknown_items']} rows name items the split does not know (e.g. "
            f"{report['unknown_item_examples']}): not rankable, ignored"
        )
    if report["fold_in_items_listed"]:
        lines.append(
            f"{report['fold_in_items_listed']} listed items are in the user's fold-in: removed from the lists, the "
            "items below moved up (as for the built-in models)"
        )
    if report["users_without_predictions"]:
        lines.append(
            f"{report['users_without_predictions']} held-out users with targets have no prediction: scored 0 on "
            "every metric"
        )
    if report["longest_list"] < k_max:
        lines.append(
            f"the longest list has {report['longest_list']} items, fewer than K = {k_max}: the metrics at K count "
            "only the listed items"
        )
    return lines
