"""The split shared with peers: Liang et al.'s file layout written and read back, and RecBole atomic files.

``python -m models.data export NAME --format liang DIR`` writes a split in the layout of Liang et al.'s
preprocessing notebook (the one the Multi-VAE code and most of its re-implementations read), and
``--dataset liang:DIR`` reads such a folder back (every command that takes ``--dataset``):

=====================  ================================================================================
file                   content
=====================  ================================================================================
``unique_uid.txt``     raw user ids, one per line, in global index order: training users, then
                       validation, then test users (``uid`` in the CSV files is the line number, from 0)
``unique_sid.txt``     raw item ids in column order (``sid`` is the line number, from 0)
``train.csv``          ``uid,sid`` of every training interaction (uids ``0 .. n_train - 1``)
``validation_tr.csv``  ``uid,sid`` of the validation users' fold-in items (global uids)
``validation_te.csv``  ``uid,sid`` of their held-out targets
``test_tr.csv``        the same for the test users
``test_te.csv``
``vaecf_split.json``   this toolkit's addition, ignored by other readers: the user counts per part (a held-out
                       user with no row in a file keeps its place), the ids' type and the split's report
=====================  ================================================================================

Rows within each file are sorted by (uid, sid). As in Liang et al.'s ``load_tr_te_data``, a held-out part's rows
are ``uid - start`` with ``start`` its smallest uid; without ``vaecf_split.json`` the parts' sizes come from the
uids found in the files and the raw user ids default to the uids themselves when ``unique_uid.txt`` is absent
(the original notebook writes only ``unique_sid.txt``). The round trip is exact: the split read back has the
same matrices, ids and fingerprint (``tests/models/test_interchange.py``).

``--format recbole`` writes RecBole atomic files (``NAME.train.inter`` with the training users' interactions,
``NAME.validation_tr.inter`` ... ``NAME.test_te.inter``; tab-separated ``user_id:token  item_id:token`` with the
raw ids), for a peer who trains there and folds in the held-out users' ``_tr`` parts.

Reference: D. Liang, R. G. Krishnan, M. D. Hoffman, T. Jebara, "Variational Autoencoders for Collaborative
Filtering", WWW 2018 (preprocessing notebook of github.com/dawenl/vae_cf).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from models.lazy import lazy_import
from models.split import HeldOut, Split

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")

LIANG_PREFIX = "liang:"
FORMATS = ("liang", "recbole")
META = "vaecf_split.json"
PARTS = ("train", "validation_tr", "validation_te", "test_tr", "test_te")


def _pairs(matrix: sp.csr_matrix, offset: int) -> pd.DataFrame:
    coo = sp.csr_matrix(matrix).tocoo()
    order = np.lexsort((coo.col, coo.row))
    return pd.DataFrame({"uid": coo.row[order].astype(np.int64) + offset, "sid": coo.col[order].astype(np.int64)})


def _parts(split: Split) -> dict[str, tuple[sp.csr_matrix, int]]:
    """Each file's matrix and the global uid of its first row."""
    n_train, n_val = split.train.shape[0], split.validation.n_users
    return {
        "train": (split.train, 0),
        "validation_tr": (split.validation.fold_in, n_train),
        "validation_te": (split.validation.targets, n_train),
        "test_tr": (split.test.fold_in, n_train + n_val),
        "test_te": (split.test.targets, n_train + n_val),
    }


def _id_kind(ids: np.ndarray) -> str:
    return "int" if np.issubdtype(np.asarray(ids).dtype, np.integer) else "str"


def _write_folder(folder: Path, files: dict[str, str]) -> Path:
    """Write the files into a temporary sibling folder renamed into place (a reader never sees half a split);
    an existing folder is an error, so nothing of the user's is overwritten."""
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"{folder} exists; choose a new folder (an export never overwrites files)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_liang(split: Split, folder: Path) -> Path:
    """Write ``split`` in Liang et al.'s layout (see the module docstring) into the new folder ``folder``."""
    users = np.concatenate([np.asarray(split.train_users), split.validation.users, split.test.users])
    files = {
        "unique_uid.txt": "".join(f"{u}\n" for u in users),
        "unique_sid.txt": "".join(f"{i}\n" for i in split.items),
    }
    for name, (matrix, offset) in _parts(split).items():
        files[f"{name}.csv"] = _pairs(matrix, offset).to_csv(index=False)
    meta = {
        "format": "liang",
        "n_train": int(split.train.shape[0]),
        "n_validation": int(split.validation.n_users),
        "n_test": int(split.test.n_users),
        "n_items": int(split.n_items),
        "user_ids": _id_kind(users),
        "item_ids": _id_kind(split.items),
        "dataset": split.name,
        "report": split.report,
    }
    files[META] = json.dumps(meta, indent=2) + "\n"
    return _write_folder(folder, files)


def write_recbole(split: Split, folder: Path) -> Path:
    """Write RecBole atomic ``.inter`` files of every part (raw ids) into the new folder ``folder``."""
    users = np.concatenate([np.asarray(split.train_users), split.validation.users, split.test.users])
    stem = split.name.replace(":", "_").replace("/", "_")
    files = {}
    for name, (matrix, offset) in _parts(split).items():
        pairs = _pairs(matrix, offset)
        table = pd.DataFrame({"user_id:token": users[pairs["uid"]], "item_id:token": split.items[pairs["sid"]]})
        files[f"{stem}.{name}.inter"] = table.to_csv(sep="\t", index=False)
    return _write_folder(folder, files)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _ids(lines: list[str], kind: str) -> np.ndarray:
    if kind == "int":
        return np.array([int(x) for x in lines], dtype=np.int64)
    return np.array(lines, dtype=str)


def _read_part(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(
            f"{folder}: no {path.name}; a Liang folder has {', '.join(p + '.csv' for p in PARTS)}"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    if list(table.columns) != ["uid", "sid"]:
        raise ValueError(f"{path}: columns {', '.join(map(str, table.columns))}; expected uid,sid")
    for col in ("uid", "sid"):
        if not pd.api.types.is_integer_dtype(table[col]) or (len(table) and table[col].min() < 0):
            raise ValueError(f"{path}: column {col} must hold integers >= 0")
    return table


def _matrix(table: pd.DataFrame, start: int, n_rows: int, n_items: int, path: str) -> sp.csr_matrix:
    rows = table["uid"].to_numpy() - start
    cols = table["sid"].to_numpy()
    if len(table) and (rows.min() < 0 or rows.max() >= n_rows or cols.max() >= n_items):
        raise ValueError(
            f"{path}: uid or sid outside the part's range (rows {start}..{start + n_rows - 1}, items < {n_items})"
        )
    if table.duplicated().any():
        raise ValueError(f"{path}: a (uid, sid) pair appears twice")
    m = sp.csr_matrix((np.ones(len(table), dtype=np.float32), (rows, cols)), shape=(n_rows, n_items))
    m.indices = m.indices.astype(np.int32)
    m.indptr = m.indptr.astype(np.int32)
    m.sort_indices()
    return m


def read_liang(folder: Path, name: str | None = None) -> Split:
    """Read a folder in Liang et al.'s layout (see the module docstring) as a :class:`~models.split.Split`.

    Raises
    ------
    ValueError
        One line naming the missing or malformed file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (liang:DIR names a folder written by models.data export)")
    meta_path = folder / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    sid_path = folder / "unique_sid.txt"
    if not sid_path.is_file():
        raise ValueError(f"{folder}: no unique_sid.txt (the item ids in column order)")
    items = _ids(_read_lines(sid_path), meta.get("item_ids", "str"))
    tables = {p: _read_part(folder, p) for p in PARTS}
    n_items = len(items)
    if meta:
        n_train, n_val, n_test = meta["n_train"], meta["n_validation"], meta["n_test"]
        starts = {"train": 0, "validation": n_train, "test": n_train + n_val}
        sizes = {"train": n_train, "validation": n_val, "test": n_test}
    else:  # Liang et al.'s convention: a part spans its smallest to its largest uid
        starts, sizes = {"train": 0}, {"train": int(tables["train"]["uid"].max()) + 1}
        for key in ("validation", "test"):
            uids = pd.concat([tables[f"{key}_tr"]["uid"], tables[f"{key}_te"]["uid"]])
            starts[key], sizes[key] = int(uids.min()), int(uids.max() - uids.min() + 1)
    n_users = starts["test"] + sizes["test"]
    uid_path = folder / "unique_uid.txt"
    if uid_path.is_file():
        users = _ids(_read_lines(uid_path), meta.get("user_ids", "str"))
        if len(users) < n_users:
            raise ValueError(f"{uid_path}: {len(users)} ids for {n_users} users")
    else:
        users = np.arange(n_users, dtype=np.int64)

    def part(key: str, table: str) -> sp.csr_matrix:
        return _matrix(tables[table], starts[key], sizes[key], n_items, str(folder / f"{table}.csv"))

    def heldout(key: str) -> HeldOut:
        return HeldOut(part(key, f"{key}_tr"), part(key, f"{key}_te"), users[starts[key] : starts[key] + sizes[key]])

    split = Split(
        name=name or f"{LIANG_PREFIX}{folder}",
        train=part("train", "train"),
        train_users=users[: sizes["train"]],
        validation=heldout("validation"),
        test=heldout("test"),
        items=items,
        report=dict(meta.get("report") or {}),
    )
    split.report["imported_from"] = str(folder)
    split.report["imported"] = {
        "train_users": int(split.train.shape[0]),
        "train_interactions": int(split.train.nnz),
        "items": int(n_items),
        **{
            key: {"users": h.n_users, "fold_in": int(h.fold_in.nnz), "targets": int(h.targets.nnz)}
            for key, h in (("validation", split.validation), ("test", split.test))
        },
    }
    return split
