"""Tests of models.split: cross-check against an independent pandas reference of Liang et al.'s
preprocessing (PROTOCOL.md), split invariants on random interaction lists, and errors."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import event, given, settings
from hypothesis import strategies as st

import models.split as split_module
from models.data import default_config, load_split
from models.readers import RawInteractions
from models.split import EmptySplitError, Split, SplitConfig, build_split

SEED = 98765


# ------------------------------------------------------------------------------------- pandas reference
def liang_reference(
    df: pd.DataFrame,
    *,
    user: str,
    item: str,
    n_heldout: int,
    min_rating: float | None = 3.5,
    min_uc: int = 5,
    min_sc: int = 0,
    test_prop: float = 0.2,
    seed: int = SEED,
    item_filter_first: bool = True,
) -> dict:
    """Liang et al. (2018) preprocessing, written from PROTOCOL.md with plain pandas.

    Returns pair sets of raw ids for every part, the user orders and the item vocabulary.
    """
    if min_rating is not None:
        df = df[df["rating"] > min_rating]

    def item_filter(tp):
        if min_sc <= 0:
            return tp
        count = tp.groupby(item).size()
        return tp[tp[item].isin(count.index[count >= min_sc])]

    def user_filter(tp):
        count = tp.groupby(user).size()
        return tp[tp[user].isin(count.index[count >= min_uc])]

    df = user_filter(item_filter(df)) if item_filter_first else item_filter(user_filter(df))
    unique_uid = df.groupby(user).size().index  # sorted raw ids
    # Liang et al. use numpy's global legacy generator; the split must reproduce exactly its draws.
    saved = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    unique_uid = unique_uid[np.random.permutation(unique_uid.size)]  # noqa: NPY002
    n = unique_uid.size
    tr_users = unique_uid[: n - 2 * n_heldout]
    vd_users = unique_uid[n - 2 * n_heldout : n - n_heldout]
    te_users = unique_uid[n - n_heldout :]
    train_plays = df[df[user].isin(tr_users)]
    unique_sid = pd.unique(train_plays[item])

    def pairs(frame) -> set:
        return set(zip(frame[user].tolist(), frame[item].tolist(), strict=True))

    def heldout(users) -> dict:
        plays = df[df[user].isin(users)]
        in_vocab = plays[plays[item].isin(unique_sid)]
        np.random.seed(seed)  # noqa: NPY002
        fold_in, targets, without = [], [], 0
        for _, group in in_vocab.groupby(user):
            n_u = len(group)
            if n_u >= 5:
                mask = np.zeros(n_u, dtype=bool)
                mask[np.random.choice(n_u, size=int(test_prop * n_u), replace=False)] = True  # noqa: NPY002
                fold_in.append(group[~mask])
                targets.append(group[mask])
            else:
                fold_in.append(group)
                without += 1
        without += len(set(users) - set(in_vocab[user]))  # no in-vocabulary row at all
        return {
            "users": list(users),
            "fold_in": set().union(*map(pairs, fold_in)),
            "targets": set().union(*map(pairs, targets)),
            "out_of_vocabulary": len(plays) - len(in_vocab),
            "without_targets": without,
        }

    validation, test = heldout(vd_users), heldout(te_users)
    np.random.set_state(saved)  # noqa: NPY002 (leave the global generator as the caller had it)
    return {
        "train_users": list(tr_users),
        "train": pairs(train_plays),
        "items": list(unique_sid),
        "validation": validation,
        "test": test,
        "kept": df,
    }


def pairs_of(mat: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> set:
    coo = mat.tocoo()
    return set(zip(users[coo.row].tolist(), items[coo.col].tolist(), strict=True))


def assert_matches_reference(split: Split, ref: dict) -> None:
    assert split.train_users.tolist() == ref["train_users"]  # same users, in Liang's numbering order
    assert split.items.tolist() == ref["items"]  # pd.unique order of the training rows
    assert pairs_of(split.train, split.train_users, split.items) == ref["train"]
    for key in ("validation", "test"):
        held, want = getattr(split, key), ref[key]
        assert held.users.tolist() == want["users"]
        assert pairs_of(held.fold_in, held.users, split.items) == want["fold_in"]
        assert pairs_of(held.targets, held.users, split.items) == want["targets"]
        rep = split.report["split"][key]
        assert rep["rows_dropped_out_of_vocabulary"] == want["out_of_vocabulary"]
        assert rep["users_without_targets"] == want["without_targets"]


# ---------------------------------------------------------------------------------------- generated files
def make_ml20m_frame(seed: int = 0) -> pd.DataFrame:
    """A few hundred users in the ML-20M layout, in random file order, unique (user, movie) pairs.

    Activity is heavy-tailed (some users under 5 positives); 30 users also rate their own private movies,
    which become out-of-vocabulary whenever that user is held out.
    """
    rng = np.random.default_rng(seed)
    n_users, n_movies = 320, 400
    user_ids = np.sort(rng.choice(np.arange(1, 50_000), n_users, replace=False))
    movie_ids = rng.choice(np.arange(1, 130_000), n_movies, replace=False)
    popularity = rng.pareto(1.2, n_movies) + 0.05
    popularity /= popularity.sum()
    frames = []
    for k, uid in enumerate(user_ids):
        n = int(np.clip(rng.lognormal(2.8, 1.0), 1, 250))
        movies = rng.choice(movie_ids, size=min(n, n_movies), replace=False, p=popularity)
        if k < 30:
            movies = np.concatenate([movies, 200_000 + 10 * k + np.arange(int(rng.integers(1, 4)))])
        frames.append(pd.DataFrame({"userId": uid, "movieId": movies}))
    df = pd.concat(frames, ignore_index=True)
    stars = np.arange(1, 11) / 2
    weights = np.array([1, 2, 2, 4, 4, 8, 10, 10, 6, 5], dtype=float)
    df["rating"] = rng.choice(stars, size=len(df), p=weights / weights.sum())
    df.loc[df["movieId"] >= 200_000, "rating"] = 5.0
    df["timestamp"] = rng.integers(789_652_009, 1_427_784_002, size=len(df))
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def write_ml20m(df: pd.DataFrame, path: Path) -> Path:
    text = "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{r:.1f},{t}\n" for u, m, r, t in df.itertuples(index=False)
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ml20m(tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    df = make_ml20m_frame()
    return df, write_ml20m(df, tmp_path_factory.mktemp("ml20m") / "ratings.csv")


def test_ml20m_file_matches_the_reference(ml20m):
    df, path = ml20m
    n_heldout = 40
    split = load_split(
        "ml-20m", path=path, config=replace(default_config("ml-20m"), n_heldout=n_heldout), progress=False
    )
    ref = liang_reference(df, user="userId", item="movieId", n_heldout=n_heldout)
    assert_matches_reference(split, ref)
    # The fixture exercises every branch (else the comparison would prove little).
    positives = df[df["rating"] > 3.5].groupby("userId").size()
    assert (positives < 5).sum() > 5 and split.report["user_filter"]["users_dropped"] == (positives < 5).sum()
    for key in ("validation", "test"):
        assert ref[key]["out_of_vocabulary"] > 0
        assert len(ref[key]["targets"]) > 0
    assert ref["validation"]["without_targets"] + ref["test"]["without_targets"] > 0
    assert split.report["after_filtering"]["users"] == len(ref["kept"]["userId"].unique())
    assert split.report["after_filtering"]["interactions"] == len(ref["kept"])


def test_ml20m_file_order_matters(ml20m, tmp_path):
    """The same rows in another file order draw other targets (within-user order is part of the protocol),
    and the reference follows the new order too."""
    df, path = ml20m
    config = replace(default_config("ml-20m"), n_heldout=40)
    shuffled = df.iloc[np.random.default_rng(5).permutation(len(df))].reset_index(drop=True)
    other = load_split("ml-20m", path=write_ml20m(shuffled, tmp_path / "ratings.csv"), config=config, progress=False)
    first = load_split("ml-20m", path=path, config=config, progress=False)
    assert other.train_users.tolist() == first.train_users.tolist()  # the permutation ignores file order
    assert set(other.items.tolist()) == set(first.items.tolist())
    assert pairs_of(other.test.targets, other.test.users, other.items) != pairs_of(
        first.test.targets, first.test.users, first.items
    )
    assert_matches_reference(other, liang_reference(shuffled, user="userId", item="movieId", n_heldout=40))


def make_msd_frame(seed: int = 0) -> pd.DataFrame:
    """Triplets with hex user ids and SO... song ids; popular and unpopular songs around min_sc = 200."""
    rng = np.random.default_rng(seed)
    n_users, n_songs = 520, 120
    users = np.array([f"{x:040x}" for x in rng.integers(0, 2**62, n_users)])
    songs = np.array([f"SO{x:016X}" for x in rng.integers(0, 2**62, n_songs)])
    song_p = np.where(np.arange(n_songs) < 40, 8.0, 1.0)
    song_p /= song_p.sum()
    frames = []
    for u in users:
        n = int(rng.integers(12, 40))
        frames.append(pd.DataFrame({"user": u, "song": rng.choice(songs, n, replace=False, p=song_p)}))
    df = pd.concat(frames, ignore_index=True)
    df["count"] = rng.integers(1, 30, size=len(df))
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_msd_preset_filters_items_before_users(tmp_path):
    df = make_msd_frame()
    path = tmp_path / "train_triplets.txt"
    path.write_text("".join(f"{u}\t{s}\t{c}\n" for u, s, c in df.itertuples(index=False)))
    preset = default_config("msd")
    assert (preset.min_sc, preset.min_uc, preset.min_rating) == (200, 20, None)
    config = replace(preset, n_heldout=60)
    split = load_split("msd", path=path, config=config, progress=False)
    kwargs = dict(user="user", item="song", n_heldout=60, min_rating=None, min_uc=20, min_sc=200)
    ref = liang_reference(df, **kwargs)
    assert_matches_reference(split, ref)
    assert split.items.dtype.kind in "OU" and isinstance(split.items[0], str)
    # The order of the two filters changes the result on this file, so the check above pins it.
    swapped = liang_reference(df, **kwargs, item_filter_first=False)
    assert len(swapped["kept"]) != len(ref["kept"])
    assert split.report["item_filter"]["items_dropped"] > 0 and split.report["user_filter"]["users_dropped"] > 0


# ------------------------------------------------------------------------------------------- invariants
def report_adds_up(split: Split) -> None:
    r = split.report
    b = r["binarise"]
    assert r["rows_read"] == b["rows_dropped_low_rating"] + b["rows_kept"]
    after = r["after_filtering"]
    assert b["rows_kept"] == (
        r["duplicates_merged"]
        + r["item_filter"]["rows_dropped"]
        + r["user_filter"]["rows_dropped"]
        + after["interactions"]
    )
    s = r["split"]
    held = [s[k] for k in ("validation", "test")]
    assert after["interactions"] == s["train_interactions"] + sum(
        h["rows_dropped_out_of_vocabulary"] + h["fold_in_interactions"] + h["target_interactions"] for h in held
    )
    assert after["users"] == s["train_users"] + 2 * s["n_heldout_per_set"]
    assert s["train_interactions"] == split.train.nnz and s["items"] == split.n_items
    for key, h in zip(("validation", "test"), held, strict=True):
        part = getattr(split, key)
        assert h["users"] == part.n_users == s["n_heldout_per_set"]
        assert h["fold_in_interactions"] == part.fold_in.nnz and h["target_interactions"] == part.targets.nnz
        assert h["users_without_targets"] == int((~part.has_targets).sum())


def check_matrix(mat: sp.csr_matrix, n_rows: int, n_items: int) -> None:
    assert isinstance(mat, sp.csr_matrix) and mat.shape == (n_rows, n_items)
    assert mat.indices.dtype == np.int32 and mat.indptr.dtype == np.int32
    assert mat.data.dtype == np.float32 and np.all(mat.data == 1.0)
    assert mat.has_canonical_format


@st.composite
def interactions(draw):
    """Small random interaction lists, with duplicates, low ratings and users of every activity."""
    n_users = draw(st.integers(3, 30))
    n_items = draw(st.integers(1, 14))
    n_rows = draw(st.integers(0, 250))
    user = draw(st.lists(st.integers(0, n_users - 1), min_size=n_rows, max_size=n_rows))
    item = draw(st.lists(st.integers(0, n_items - 1), min_size=n_rows, max_size=n_rows))
    rating = draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]), min_size=n_rows, max_size=n_rows))
    ids = draw(st.permutations(range(100, 100 + 3 * n_users)))[:n_users]  # sparse raw ids, not sorted
    return RawInteractions(
        user=np.array(ids, dtype=np.int64)[np.array(user, dtype=np.int64)],
        item=np.array(item, dtype=np.int64) * 7 + 3,
        rating=np.array(rating, dtype=np.float32),
        sources=("hypothesis",),
    )


@settings(max_examples=60, deadline=None)
@given(raw=interactions(), implicit=st.booleans(), min_uc=st.integers(1, 6), frac=st.floats(0.0, 1.0))
def test_split_invariants(raw, implicit, min_uc, frac):
    if implicit:
        raw = replace(raw, rating=None)
    min_rating = None if implicit else 2.5
    frame = pd.DataFrame({"u": raw.user, "i": raw.item, "rating": raw.rating if not implicit else 5.0})
    positives = frame[frame["rating"] > 2.5] if not implicit else frame
    positives = positives.drop_duplicates(["u", "i"])  # build_split merges repeated pairs (first kept)
    counts = positives.groupby("u").size()
    n_kept = int((counts >= min_uc).sum())
    n_heldout = 1 + int(frac * max(0, (n_kept - 1) // 2 - 1))
    config = SplitConfig(min_rating=min_rating, min_uc=min_uc, n_heldout=n_heldout)
    if n_kept < 2 * n_heldout + 1:
        event("too few users: EmptySplitError")
        with pytest.raises(EmptySplitError):
            build_split(raw, config, "random")
        return
    event("split built")
    split = build_split(raw, config, "random")

    train_users = set(split.train_users.tolist())
    val_users, test_users = set(split.validation.users.tolist()), set(split.test.users.tolist())
    assert not train_users & val_users and not train_users & test_users and not val_users & test_users
    assert train_users | val_users | test_users == set(counts.index[counts >= min_uc].tolist())
    assert len(val_users) == len(test_users) == n_heldout
    check_matrix(split.train, len(train_users), split.n_items)

    history = positives.groupby("u")["i"].apply(list).to_dict()  # per-user items in file order
    vocab = set(split.items.tolist())
    assert vocab == {i for u in train_users for i in history[u]}
    assert len(vocab) == split.n_items
    assert pairs_of(split.train, split.train_users, split.items) == {(u, i) for u in train_users for i in history[u]}
    for part in (split.validation, split.test):
        check_matrix(part.fold_in, n_heldout, split.n_items)
        check_matrix(part.targets, n_heldout, split.n_items)
        assert part.fold_in.multiply(part.targets).nnz == 0  # disjoint
        for row, u in enumerate(part.users.tolist()):
            own = [i for i in history[u] if i in vocab]
            fold = set(split.items[part.fold_in[row].indices].tolist())
            targets = set(split.items[part.targets[row].indices].tolist())
            assert fold | targets == set(own)
            assert len(targets) == (int(0.2 * len(own)) if len(own) >= 5 else 0)
        assert part.has_targets.tolist() == [int(0.2 * n) > 0 for n in part.n_interactions.tolist()]
    report_adds_up(split)
    # Same answer as the reference on the de-duplicated positives.
    ref = liang_reference(
        frame.drop_duplicates(["u", "i"]) if implicit else positives,
        user="u",
        item="i",
        n_heldout=n_heldout,
        min_rating=None,
        min_uc=min_uc,
    )
    assert_matches_reference(split, ref)


def test_seed_stable_and_seed_sensitive(ml20m):
    df, _ = ml20m
    raw = RawInteractions(
        user=df["userId"].to_numpy(np.int64),
        item=df["movieId"].to_numpy(np.int64),
        rating=df["rating"].to_numpy(np.float32),
        sources=("frame",),
    )
    config = SplitConfig(n_heldout=40)
    a, b = build_split(raw, config, "x"), build_split(raw, config, "x")
    for m, n in [
        (a.train, b.train),
        (a.test.targets, b.test.targets),
        (a.validation.fold_in, b.validation.fold_in),
    ]:
        assert (m != n).nnz == 0 and np.array_equal(m.indices, n.indices)
    assert np.array_equal(a.test.users, b.test.users) and np.array_equal(a.items, b.items)
    assert a.report == b.report
    c = build_split(raw, replace(config, seed=1234), "x")
    assert set(c.test.users.tolist()) != set(a.test.users.tolist())
    assert c.report["config"]["seed"] == 1234


def test_duplicates_are_merged_and_counted():
    # user 1 rates item 5 twice (both positive) and item 6 once low then once high.
    user = np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3])
    item = np.array([5, 5, 6, 6, 7, 8, 9, 10, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9])
    rating = np.array([5, 4, 1, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5], dtype=np.float32)
    raw = RawInteractions(user=user, item=item, rating=rating, sources=("planted",))
    split = build_split(raw, SplitConfig(n_heldout=1), "planted")
    assert split.report["binarise"]["rows_dropped_low_rating"] == 1
    assert split.report["duplicates_merged"] == 1
    assert split.report["after_filtering"] == {"users": 3, "items": 6, "interactions": 16}
    report_adds_up(split)


def test_test_prop_below_one_fifth_counts_users_without_targets():
    """With test_prop = 0.1 a user with 5..9 items draws int(0.1 n) = 0 targets: counted as without."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 16, size=60)
    user = np.repeat(np.arange(60), sizes)
    item = np.concatenate([rng.choice(30, s, replace=False) for s in sizes])
    raw = RawInteractions(user=user, item=item, rating=None, sources=("planted",))
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=20, test_prop=0.1), "planted")
    report_adds_up(split)
    assert 0 < split.report["split"]["test"]["users_without_targets"] < 20


# ----------------------------------------------------------------------------------------------- errors
def raw_of(user, item, rating=None) -> RawInteractions:
    return RawInteractions(
        user=np.asarray(user, dtype=np.int64),
        item=np.asarray(item, dtype=np.int64),
        rating=None if rating is None else np.asarray(rating, dtype=np.float32),
        sources=("planted.csv",),
    )


def test_empty_results_raise_empty_split_error():
    with pytest.raises(EmptySplitError, match=r"no interactions were read from planted\.csv"):
        build_split(raw_of([], []), SplitConfig(min_rating=None), "planted")
    with pytest.raises(EmptySplitError, match=r"no row passes the rating rule \(rating > 3\.5\).*--min-rating"):
        build_split(raw_of([1, 2], [1, 1], [3.0, 2.5]), SplitConfig(), "planted")
    many = raw_of(np.repeat(np.arange(10), 4), np.tile(np.arange(4), 10))
    with pytest.raises(EmptySplitError, match=r"no user has >= 5 positives.*--min-uc"):
        build_split(many, SplitConfig(min_rating=None), "planted")
    enough = raw_of(np.repeat(np.arange(10), 5), np.tile(np.arange(5), 10))
    with pytest.raises(EmptySplitError, match=r"10 users cannot give two held-out sets of 5 users.*--heldout"):
        build_split(enough, SplitConfig(min_rating=None, n_heldout=5), "planted")
    assert build_split(enough, SplitConfig(min_rating=None, n_heldout=4), "planted").train.shape[0] == 2


def test_rating_threshold_on_implicit_data():
    with pytest.raises(ValueError, match=r"has no ratings; use min_rating=None"):
        build_split(raw_of([1], [1]), SplitConfig(min_rating=3.5), "planted")


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"n_heldout": 0.5}, r"fraction must lie in \(0, 0\.5\), got 0\.5"),
        ({"n_heldout": 0.0}, r"fraction must lie in \(0, 0\.5\)"),
        ({"n_heldout": 0}, r"n_heldout must be >= 1 user, got 0"),
        ({"test_prop": 0.0}, r"test_prop must lie in \(0, 1\), got 0\.0"),
        ({"test_prop": 1.0}, r"test_prop must lie in \(0, 1\)"),
        ({"test_prop": -0.2}, r"test_prop must lie in \(0, 1\)"),
        ({"min_uc": 0}, r"min_uc must be an integer >= 1, got 0"),
        ({"min_sc": -1}, r"min_sc must be an integer >= 0, got -1"),
        ({"min_rating": float("nan")}, r"min_rating must be a finite number or None"),
    ],
)
def test_impossible_options(options, pattern):
    config = SplitConfig(**options)
    with pytest.raises(ValueError, match=pattern):
        config.validate()
    with pytest.raises(ValueError, match=pattern):
        build_split(raw_of([1], [1], [5.0]), config, "planted")


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"min_uc": 2.5}, r"min_uc must be an integer >= 1, got 2\.5"),
        ({"min_uc": "5"}, r"min_uc must be an integer >= 1, got '5'"),
        ({"min_uc": True}, r"min_uc must be an integer"),
        ({"min_sc": 1.0}, r"min_sc must be an integer >= 0, got 1\.0"),
        ({"min_sc": None}, r"min_sc must be an integer >= 0, got None"),
        ({"n_heldout": float("inf")}, r"n_heldout must be finite, got inf"),
        ({"n_heldout": float("nan")}, r"n_heldout must be finite, got nan"),
        ({"n_heldout": 1.9}, r"n_heldout .*a count must be an integer"),
        ({"n_heldout": "10"}, r"n_heldout must be a count \(integer >= 1\) or a fraction in \(0, 0\.5\), got '10'"),
        ({"n_heldout": False}, r"n_heldout must be a count"),
        ({"test_prop": float("nan")}, r"test_prop must lie in \(0, 1\), got nan"),
        ({"test_prop": "0.2"}, r"test_prop must be a number in \(0, 1\), got '0\.2'"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
        ({"seed": 1.5}, r"seed must be an integer"),
        ({"seed": 2**32}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"min_rating": float("inf")}, r"min_rating must be a finite number or None, got inf"),
        ({"min_rating": -float("inf")}, r"min_rating must be a finite number or None, got -inf"),
        ({"min_rating": "3.5"}, r"min_rating must be a finite number or None, got '3\.5'"),
    ],
)
def test_wrong_types_and_non_finite_values_name_the_field(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        SplitConfig(**options).validate()


def test_numpy_numbers_and_integral_floats_from_config_files_are_accepted():
    SplitConfig(min_uc=np.int64(5), min_sc=np.int32(0), n_heldout=np.int64(10), seed=np.int64(1)).validate()
    SplitConfig(n_heldout=np.float64(0.1), min_rating=np.float32(3.5), test_prop=np.float64(0.2)).validate()
    with pytest.raises(ValueError, match=r"n_heldout .*a count must be an integer \(10, not 10\.0\)"):
        SplitConfig(n_heldout=10.0).validate()  # a float selects the fraction meaning: say so rather than guess


def test_too_few_users_say_what_would_work():
    one = raw_of(np.zeros(8, dtype=np.int64), np.arange(8))
    with pytest.raises(EmptySplitError) as info:
        build_split(one, SplitConfig(min_rating=None, n_heldout=1), "planted")
    message = str(info.value)
    assert "1 user" in message and "at least 3 users" in message and "more users" in message, message
    assert "--heldout" not in message
    many = raw_of(np.repeat(np.arange(7), 5), np.tile(np.arange(5), 7))
    with pytest.raises(EmptySplitError, match=r"7 users .*--heldout 1 to --heldout 3"):
        build_split(many, SplitConfig(min_rating=None, n_heldout=4), "planted")
    with pytest.raises(EmptySplitError, match=r"the fraction 0\.05 of 7 users is 0 users.*--heldout 1 to --heldout 3"):
        build_split(many, SplitConfig(min_rating=None, n_heldout=0.05), "planted")
    assert build_split(many, SplitConfig(min_rating=None, n_heldout=3), "planted").train.shape[0] == 1


def test_a_config_of_numpy_numbers_gives_a_json_report():
    raw = raw_of(np.repeat(np.arange(9), 5), np.tile(np.arange(5), 9))
    config = SplitConfig(min_rating=None, min_uc=np.int64(5), n_heldout=np.int64(2))
    report = build_split(raw, config, "planted").report
    assert json.loads(json.dumps(report))["config"]["n_heldout"] == 2


# ------------------------------------------------------------------------------ defaults and boundaries
def test_split_config_defaults_are_the_protocol_values():
    c = SplitConfig()
    assert (c.min_rating, c.min_uc, c.min_sc, c.n_heldout, c.test_prop, c.seed) == (3.5, 5, 0, 0.1, 0.2, 98765)
    assert c.heldout_is_fraction


def test_config_split_and_held_out_sets_are_frozen():
    raw = raw_of(np.repeat(np.arange(5), 5), np.tile(np.arange(5), 5))
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=1), "planted")
    for obj, name in ((SplitConfig(), "seed"), (split, "name"), (split.test, "users")):
        with pytest.raises(FrozenInstanceError):
            setattr(obj, name, None)


def test_n_heldout_1_is_one_user_and_1_point_0_is_refused_as_a_float():
    raw = raw_of(np.repeat(np.arange(5), 5), np.tile(np.arange(5), 5))
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=1), "planted")
    assert (split.validation.n_users, split.test.n_users, split.train.shape[0]) == (1, 1, 3)
    pattern = (
        r"n_heldout 1\.0 is neither a fraction in \(0, 0\.5\) nor a count: a count must be an integer \(1, not 1\.0\)"
    )
    with pytest.raises(ValueError, match=pattern):
        SplitConfig(n_heldout=1.0).validate()


def test_seed_accepts_both_ends_of_its_range():
    SplitConfig(seed=0).validate()
    SplitConfig(seed=2**32 - 1).validate()  # 2**32 is refused: test_wrong_types_and_non_finite_values_name_the_field


class _Reported(sp.csr_matrix):
    """A CSR matrix that reports ``fake_nnz`` stored entries (no test can store 2**31 of them)."""

    fake_nnz = 0

    @property
    def nnz(self) -> int:
        return self.fake_nnz


@pytest.mark.parametrize(("nnz", "dtype"), [(2**31 - 1, np.int32), (2**31, np.int64)])
def test_indptr_is_int32_while_offsets_fit_and_int64_from_2_31_entries(monkeypatch, nnz, dtype):
    def csr_matrix(*args, **kwargs):
        mat = sp.csr_matrix(*args, **kwargs)
        mat.__class__ = type("Big", (_Reported,), {"fake_nnz": nnz})
        return mat

    monkeypatch.setattr(split_module, "sp", SimpleNamespace(csr_matrix=csr_matrix))
    mat = split_module._binary_csr(np.array([0, 1, 1]), np.array([2, 0, 1]), (2, 3))
    assert mat.indptr.dtype == dtype and mat.indices.dtype == np.int32
    assert mat.indptr.tolist() == [0, 1, 3] and mat.indices.tolist() == [2, 0, 1]


def test_an_item_with_exactly_min_sc_users_is_kept():
    # items 0..4: all 6 users; item 9: users 0, 1, 2; item 8: users 3, 4. min_sc = 3 keeps 9 and drops 8.
    user = np.concatenate([np.repeat(np.arange(6), 5), [0, 1, 2, 3, 4]])
    item = np.concatenate([np.tile(np.arange(5), 6), [9, 9, 9, 8, 8]])
    split = build_split(raw_of(user, item), SplitConfig(min_rating=None, min_sc=3, n_heldout=1), "planted")
    assert split.report["item_filter"] == {"min_users_per_item": 3, "rows_dropped": 2, "items_dropped": 1}
    assert split.report["after_filtering"] == {"users": 6, "items": 6, "interactions": 33}


def test_each_filter_reports_only_what_it_dropped():
    # users 0-5 rate items 0-4; user 6 rates only items 7 and 8, which no one else rates
    user = np.concatenate([np.repeat(np.arange(6), 5), [6, 6]])
    item = np.concatenate([np.tile(np.arange(5), 6), [7, 8]])
    # no item filter: it reports nothing dropped; the user filter drops user 6 (2 positives < 5)
    split = build_split(raw_of(user, item), SplitConfig(min_rating=None, min_sc=0, min_uc=5, n_heldout=1), "p")
    assert split.report["item_filter"] == {"min_users_per_item": 0, "rows_dropped": 0, "items_dropped": 0}
    assert split.report["user_filter"] == {"min_positives_per_user": 5, "users_dropped": 1, "rows_dropped": 2}
    # items 7 and 8 dropped by the item filter take all of user 6's rows: the user filter drops no one
    split = build_split(raw_of(user, item), SplitConfig(min_rating=None, min_sc=2, min_uc=5, n_heldout=1), "p")
    assert split.report["item_filter"] == {"min_users_per_item": 2, "rows_dropped": 2, "items_dropped": 2}
    assert split.report["user_filter"] == {"min_positives_per_user": 5, "users_dropped": 0, "rows_dropped": 0}
    assert split.report["after_filtering"] == {"users": 6, "items": 5, "interactions": 30}


def test_a_fractional_n_heldout_rounds_its_share_of_the_users():
    # 0.2 of 18 users is 3.6: 4 users per held-out set (round, not int), 10 to train
    raw = raw_of(np.repeat(np.arange(18), 5), np.tile(np.arange(5), 18))
    split = build_split(raw, SplitConfig(min_rating=None, n_heldout=0.2), "planted")
    assert split.report["split"]["n_heldout_per_set"] == 4
    assert (split.validation.n_users, split.test.n_users, split.train.shape[0]) == (4, 4, 10)


def test_too_few_users_are_counted_in_singular_and_plural():
    one = raw_of(np.zeros(5), np.arange(5))
    with pytest.raises(EmptySplitError, match=r"^planted: 1 user left after filtering"):
        build_split(one, SplitConfig(min_rating=None, n_heldout=1), "planted")
    two = raw_of(np.repeat([0, 1], 5), np.tile(np.arange(5), 2))
    with pytest.raises(EmptySplitError, match=r"^planted: 2 users left after filtering"):
        build_split(two, SplitConfig(min_rating=None, n_heldout=1), "planted")


def test_the_heldout_hint_names_one_count_or_a_range():
    four = raw_of(np.repeat(np.arange(4), 5), np.tile(np.arange(5), 4))  # at most 1 user per held-out set
    with pytest.raises(EmptySplitError, match=r"sets of 2 users and a training set; pass --heldout 1 \(users per"):
        build_split(four, SplitConfig(min_rating=None, n_heldout=2), "planted")
    five = raw_of(np.repeat(np.arange(5), 5), np.tile(np.arange(5), 5))  # at most 2
    with pytest.raises(EmptySplitError, match=r"sets of 3 users and a training set; pass --heldout 1 to --heldout 2 "):
        build_split(five, SplitConfig(min_rating=None, n_heldout=3), "planted")
