"""The verified split cache: a manifest checked on read, a damaged part named and rebuilt, identity by content,
leftovers of a killed build cleaned up, one build when several processes want the same split."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import data
from models.data import default_config, load_split
from tests.models.test_data import assert_same_split, ml1m_rows, ml1m_text, split_folders, write

SMALL = replace(default_config("ml-1m"), n_heldout=5)
REPO = Path(__file__).resolve().parents[2]


def build(tmp_path: Path, **kwargs) -> tuple[Path, data.Split]:
    path = tmp_path / "ratings.dat"
    if not path.exists():
        write(path, ml1m_text(ml1m_rows()))
    return path, load_split("ml-1m", path=path, config=SMALL, progress=False, **kwargs)


def count_builds(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = data.build_split

    def counting(raw, config, name):
        calls.append(name)
        return real(raw, config, name)

    monkeypatch.setattr(data, "build_split", counting)
    return calls


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


# ------------------------------------------------------------------------------------------------ manifest
def test_the_manifest_lists_size_and_sha256_of_every_part(tmp_path, cache_root):
    build(tmp_path)
    (folder,) = split_folders(cache_root)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["report.json", "split.npz"]
    for name, entry in manifest["files"].items():
        blob = (folder / name).read_bytes()
        assert entry == {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(p.stat().st_size))  # same size: only the checksum can tell


DAMAGE = {
    "split.npz truncated": ("split.npz", _truncate, "truncated"),
    "split.npz garbage": ("split.npz", _garbage, "checksum"),
    "split.npz missing": ("split.npz", Path.unlink, "missing"),
    "report.json garbage": ("report.json", _garbage, "checksum"),
    "report.json missing": ("report.json", Path.unlink, "missing"),
    "manifest.json missing": ("manifest.json", Path.unlink, "missing"),
    "manifest.json garbage": ("manifest.json", lambda p: p.write_text("{not json"), "unreadable"),
    "manifest.json truncated": ("manifest.json", _truncate, "unreadable"),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_part_is_named_in_one_note_and_the_split_rebuilt(tmp_path, cache_root, monkeypatch, capsys, damage):
    _, first = build(tmp_path)
    (folder,) = split_folders(cache_root)
    part, spoil, word = DAMAGE[damage]
    spoil(folder / part)
    capsys.readouterr()

    builds = count_builds(monkeypatch)
    _, again = build(tmp_path)
    assert builds == ["ml-1m"]  # rebuilt from the raw file, not read from the damaged folder
    assert_same_split(first, again)
    (line,) = notes(capsys.readouterr().err)
    assert str(folder) in line and part in line and word in line and "rebuilding" in line, line
    # The rebuilt folder verifies: the next load reads it, silently.
    _, third = build(tmp_path)
    assert builds == ["ml-1m"] and notes(capsys.readouterr().err) == []
    assert_same_split(first, third)
    assert split_folders(cache_root) == [folder]


def test_a_folder_from_before_manifests_is_rebuilt(tmp_path, cache_root, monkeypatch, capsys):
    _, first = build(tmp_path)
    (folder,) = split_folders(cache_root)
    (folder / "manifest.json").unlink()
    builds = count_builds(monkeypatch)
    assert_same_split(first, build(tmp_path)[1])
    assert builds == ["ml-1m"] and (folder / "manifest.json").is_file()


# ------------------------------------------------------------------------------------------------ identity
def test_the_key_follows_the_content_not_the_mtime(tmp_path, cache_root, monkeypatch):
    path, first = build(tmp_path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))  # touched: same bytes
    builds = count_builds(monkeypatch)
    _, touched = build(tmp_path)
    assert builds == [] and touched.report["cache"] == first.report["cache"]

    # Same size and the same mtime, one byte different (a rating 1 -> 2): a different split.
    text = path.read_bytes()
    pos = text.index(b"::1::")
    changed = text[:pos] + b"::2::" + text[pos + 5 :]
    assert len(changed) == len(text)
    path.write_bytes(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    _, edited = build(tmp_path)
    assert builds == ["ml-1m"] and edited.report["cache"] != first.report["cache"]


def test_a_netflix_folder_is_keyed_by_the_content_of_its_files(tmp_path, cache_root):
    ts = tmp_path / "nf" / "training_set"
    rng = np.random.default_rng(0)
    for movie in range(1, 30):
        users = rng.choice(np.arange(1, 60), size=12, replace=False)
        write(ts / f"mv_{movie:07d}.txt", f"{movie}:\n" + "".join(f"{u},5,2005-01-01\n" for u in users))
    config = replace(default_config("netflix"), n_heldout=3)
    first = load_split("netflix", path=tmp_path / "nf", config=config, progress=False)
    one = ts / "mv_0000003.txt"
    st = ts.stat()
    one.write_text(one.read_text().replace(",5,", ",1,", 1))  # same size, the folder's mtime restored
    os.utime(ts, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = load_split("netflix", path=tmp_path / "nf", config=config, progress=False)
    assert second.report["cache"] != first.report["cache"]
    assert second.report["binarise"]["rows_kept"] == first.report["binarise"]["rows_kept"] - 1


# ---------------------------------------------------------------------------------------- killed builds
KILLED_BUILD = """
import os, signal, sys
from dataclasses import replace
from pathlib import Path
import numpy as np
from models import data

def killed(file, **arrays):
    Path(file).write_bytes(b"PK\\x03\\x04 half a file")
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = killed
data.load_split("ml-1m", path=Path(sys.argv[1]), config=replace(data.default_config("ml-1m"), n_heldout=5),
                progress=False)
"""


@pytest.mark.slow  # two interpreters with torch (about 3 s); the in-process test below covers the same cleanup
def test_the_temp_folder_of_a_sigkilled_build_is_removed_by_the_next_build(tmp_path, cache_root):
    path = write(tmp_path / "ratings.dat", ml1m_text(ml1m_rows()))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    leftovers = [p for p in (cache_root / "splits").iterdir() if p.is_dir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ml-1m-"), leftovers
    assert (leftovers[0] / "split.npz").is_file()

    _, split = build(tmp_path)
    (folder,) = split_folders(cache_root)
    assert not leftovers[0].exists()
    assert sorted(p.name for p in (cache_root / "splits").iterdir()) == sorted([folder.name, f".{folder.name}.lock"])
    assert_same_split(split, data.read_split(folder, "ml-1m"))


@pytest.mark.parametrize("how", ["first build", "damaged", "refresh"])
def test_stale_temp_folders_of_the_key_are_removed_and_other_keys_left_alone(tmp_path, cache_root, how):
    build(tmp_path)
    (folder,) = split_folders(cache_root)
    if how == "first build":  # the killed build never finished: no final folder yet
        shutil.rmtree(folder)
    elif how == "damaged":
        (folder / "split.npz").write_bytes(b"junk")
    stale = cache_root / "splits" / f".{folder.name}.k1ll3d"  # as mkdtemp names them
    aside = cache_root / "splits" / f".{folder.name}.old-99999"  # a damaged folder moved aside, then killed
    other = cache_root / "splits" / ".ml-1m-0123456789abcdef.x"
    for leftover in (stale, aside, other):
        leftover.mkdir()
        (leftover / "split.npz").write_bytes(b"junk")
    build(tmp_path, refresh=how == "refresh")
    assert not stale.exists() and not aside.exists()
    assert other.is_dir()  # another key's temp folder may belong to a live build of that key
    assert split_folders(cache_root) == [folder]


# ------------------------------------------------------------------------------------------------- races
def test_two_loads_of_the_same_split_at_once_build_it_once(tmp_path, cache_root, monkeypatch):
    path = write(tmp_path / "ratings.dat", ml1m_text(ml1m_rows()))
    builds: list[str] = []
    real = data.build_split

    def slow_build(raw, config, name):
        builds.append(name)
        time.sleep(0.4)  # long enough for the other load to arrive while this one builds
        return real(raw, config, name)

    monkeypatch.setattr(data, "build_split", slow_build)
    results: list[data.Split] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(load_split("ml-1m", path=path, config=SMALL, progress=False))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2
    assert builds == ["ml-1m"]
    assert_same_split(results[0], results[1])
    assert len(split_folders(cache_root)) == 1
    assert [p for p in (cache_root / "splits").iterdir() if p.is_dir() and p.name.startswith(".")] == []


RACER = """
import sys
from dataclasses import replace
from pathlib import Path
from models import data
split = data.load_split("ml-1m", path=Path(sys.argv[1]), config=replace(data.default_config("ml-1m"), n_heldout=5),
                        progress=False)
print(split.report["cache"], split.train.nnz)
"""


@pytest.mark.slow  # two interpreters with torch (about 5 s); the two-thread test above takes the same file lock
def test_two_processes_building_the_same_split_agree(tmp_path, cache_root):
    path = write(tmp_path / "ratings.dat", ml1m_text(ml1m_rows(n_users=400)))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    (folder,) = split_folders(cache_root)
    assert outs[0][0].split()[0] == str(folder)
    assert_same_split(load_split("ml-1m", path=path, config=SMALL, progress=False), data.read_split(folder, "ml-1m"))


def test_partial_downloads_of_a_killed_fetch_are_removed_by_the_next_fetch(tmp_path, cache_root, monkeypatch):
    from tests.models.test_data import make_zip, serve

    raw = cache_root / "raw" / "ml-1m"
    raw.mkdir(parents=True)
    partial = raw / ".ml-1m.zip.a8f3k2.part"
    partial.write_bytes(b"PK\x03\x04 the first megabyte")
    make_zip(tmp_path / "www" / "ml-1m.zip", {"ml-1m/ratings.dat": ml1m_text(ml1m_rows())})
    with serve(tmp_path / "www") as url:
        monkeypatch.setenv(data.GROUPLENS_ENV, url)
        source = data.fetch("ml-1m", progress=False)
    assert source.how == "grouplens" and not partial.exists()
    assert sorted(p.name for p in raw.iterdir()) == ["ratings.dat"]
