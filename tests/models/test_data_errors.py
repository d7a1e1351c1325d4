"""``python -m models.data`` on bad input: every failure is one ``error:`` line naming the path or the option and
the fix (exit code 2), never a traceback or an argparse usage dump; options are checked before any work; data
values are never silently changed."""

from __future__ import annotations

import bz2
import gzip
import os
import signal
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models import data
from models.data import main
from tests.models.test_data import ml1m_rows, ml1m_text, write

REPO = Path(__file__).resolve().parents[2]


def table_text(n_users: int = 20, n_items: int = 8, rating: bool = False) -> str:
    head = "user,item,rating\n" if rating else "user,item\n"
    return head + "".join(
        f"{u},{i}" + (f",{1 + (u + i) % 5}" if rating else "") + "\n" for u in range(n_users) for i in range(n_items)
    )


PROGRESS = ("building the ", "waiting for ")  # progress lines a load may print before it fails


def only_error_line(err: str) -> str:
    """The one ``error: `` line of a failed command: the last line; before it at most progress lines."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert all(line.startswith(PROGRESS) for line in lines[:-1]), err
    assert "usage:" not in err and "Traceback" not in err
    return lines[-1]


def one_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI in-process; return its only error line (and check that nothing went to stdout)."""
    assert main([str(a) for a in argv]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    return only_error_line(captured.err)


def assert_one_error_line(proc, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    return only_error_line(proc.stderr)


# -------------------------------------------------------------------------------- item 8: options, before work
@pytest.mark.parametrize(
    ("options", "parts"),
    [
        (["--heldout", "inf"], ["--heldout", "finite"]),
        (["--heldout", "nan"], ["--heldout", "finite"]),
        (["--heldout=-inf"], ["--heldout", "finite"]),
        (["--heldout", "1.9"], ["--heldout", "a count must be an integer", "1.9"]),
        (["--heldout", "0.7"], ["--heldout", "a fraction must lie in (0, 0.5)"]),
        (["--heldout", "0"], ["--heldout"]),
        (["--heldout", "-3"], ["--heldout"]),
        (["--heldout", "ten"], ["--heldout", "'ten'"]),
        (["--min-rating", "inf"], ["--min-rating", "finite"]),
        (["--min-rating=-inf"], ["--min-rating", "finite"]),
        (["--min-rating", "nan"], ["--min-rating", "finite"]),
        (["--min-rating", "high"], ["--min-rating", "'high'"]),
        (["--min-uc", "0"], ["--min-uc", ">= 1"]),
        (["--min-uc", "2.5"], ["--min-uc", "integer"]),
        (["--min-sc", "-1"], ["--min-sc", ">= 0"]),
        (["--min-sc", "x"], ["--min-sc", "integer"]),
        (["--sep", ""], ["--sep", "empty"]),
        (["--user-col", ""], ["--user-col", "empty"]),
        (["--user-col", "user", "--item-col", "user"], ["--user-col", "--item-col", "'user'", "differ"]),
        (["--rating-col", "item"], ["--rating-col", "--item-col", "'item'"]),
    ],
    ids=lambda v: " ".join(v) if v and isinstance(v[0], str) and v[0].startswith("--") else "",
)
def test_bad_options_are_one_line_naming_the_option_before_any_work(tmp_path, capsys, monkeypatch, options, parts):
    table = write(tmp_path / "t.csv", table_text())

    def no_work(*args, **kwargs):
        raise AssertionError("options must be checked before any data is read")

    monkeypatch.setattr(data, "read_source", no_work)
    monkeypatch.setattr(data, "fetch", no_work)
    line = one_error(capsys, ["info", f"csv:{table}", *options])
    for part in parts:
        assert part in line, line


def test_argparse_errors_are_one_line_too(capsys):
    line = one_error(capsys, ["info"])
    assert "name" in line and "--help" in line
    line = one_error(capsys, ["info", "ml-1m", "--no-such-option"])
    assert "--no-such-option" in line


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_split", interrupted)
    assert main(["info", "synthetic"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Ctrl-C" in err[0]


def test_sigterm_is_one_line_and_exit_143(capsys, monkeypatch):
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have stopped the work")

    monkeypatch.setattr(data, "load_split", terminated)
    assert main(["info", "synthetic"]) == 143
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "SIGTERM" in err[0]


# --------------------------------------------------------------------------- item 6: OS errors on input files
def test_permission_denied_input_is_one_line(tmp_path, run_unprivileged):
    table = write(tmp_path / "secret.csv", table_text())
    table.chmod(0o000)
    proc = run_unprivileged([sys.executable, "-m", "models.data", "info", f"csv:{table}"], cwd=REPO)
    line = assert_one_error_line(proc)
    assert str(table) in line and "permission denied" in line and "permissions" in line, line


def test_unwritable_cache_is_one_line_naming_it_and_the_variable(tmp_path, run_unprivileged):
    table = write(tmp_path / "t.csv", table_text())
    cache = tmp_path / "readonly-cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = {**os.environ, data.CACHE_ENV: str(cache)}
    proc = run_unprivileged([sys.executable, "-m", "models.data", "info", f"csv:{table}"], cwd=REPO, env=env)
    line = assert_one_error_line(proc)
    assert str(cache) in line and "permission denied" in line and f"set {data.CACHE_ENV}" in line, line


def test_a_cache_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    table = write(tmp_path / "t.csv", table_text())
    blocker = write(tmp_path / "cache-is-a-file", "x")
    monkeypatch.setenv(data.CACHE_ENV, str(blocker))
    line = one_error(capsys, ["info", f"csv:{table}"])
    assert str(blocker) in line and data.CACHE_ENV in line, line


@pytest.mark.parametrize(
    ("name", "text", "argv", "line_no"),
    [
        ("t.csv", b"user,item,title\n1,2,ok\n1,3,caf\xe9\n", lambda p: ["info", f"csv:{p}"], 3),
        ("ratings.dat", b"1::2::5::9\n1::3::5::9\n1::4\xe9::5::9\n", lambda p: ["info", "ml-1m", "--path", p], 3),
        (
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,2\xff,5,9\n",
            lambda p: ["info", "ml-20m", "--path", p],
            2,
        ),
        ("u.data", b"1\t2\t5\t9\n\xe91\t2\t5\t9\n", lambda p: ["info", "ml-100k", "--path", p], 2),
    ],
    ids=["csv", "ratings.dat", "ratings.csv", "u.data"],
)
def test_a_file_that_is_not_utf8_is_named_with_its_line_and_the_fix(tmp_path, capsys, name, text, argv, line_no):
    path = tmp_path / name
    path.write_bytes(text)
    line = one_error(capsys, argv(path))
    for part in (str(path), f"line {line_no}", "not UTF-8", "convert it to UTF-8"):
        assert part in line, line


def test_latin1_csv_reads_with_the_encoding_option(tmp_path, capsys):
    rows = "".join(f"{u},caf\xe9-{i}\n" for u in range(20) for i in range(8))
    path = tmp_path / "t.csv"
    path.write_bytes(("user,item\n" + rows).encode("latin-1"))
    line = one_error(capsys, ["info", f"csv:{path}"])
    assert "--encoding latin-1" in line, line
    assert main(["info", f"csv:{path}", "--encoding", "latin-1", "--json"]) == 0
    assert '"rows_read": 160' in capsys.readouterr().out
    assert "--encoding" in one_error(capsys, ["info", f"csv:{path}", "--encoding", "klingon"])


def test_gowalla_not_utf8(tmp_path, capsys):
    write(tmp_path / "train.txt", "0 1 2\n")
    (tmp_path / "test.txt").write_bytes(b"0 5\n1 \xe96\n")
    line = one_error(capsys, ["info", "gowalla", "--path", tmp_path])
    assert str(tmp_path / "test.txt") in line and "line 2" in line and "UTF-8" in line, line


@pytest.mark.parametrize(
    ("name", "compress", "argv", "how"),
    [
        ("t.csv", gzip.compress, lambda p: ["info", f"csv:{p}"], "gzip"),
        ("ratings.dat", gzip.compress, lambda p: ["info", "ml-1m", "--path", p, "--heldout", "5"], "gzip"),
        ("ratings.dat", bz2.compress, lambda p: ["info", "ml-1m", "--path", p, "--heldout", "5"], "bz2"),
    ],
    ids=["csv-gzip", "ratings.dat-gzip", "ratings.dat-bz2"],
)
def test_a_compressed_file_without_its_suffix_is_read_with_one_note(tmp_path, capsys, name, compress, argv, how):
    text = table_text() if name == "t.csv" else ml1m_text(ml1m_rows())
    path = tmp_path / name
    path.write_bytes(compress(text.encode()))
    assert main([str(a) for a in [*argv(path), "--json"]]) == 0
    captured = capsys.readouterr()
    assert f'"rows_read": {text.count(chr(10)) - (name == "t.csv")}' in captured.out
    lines = captured.err.splitlines()
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1 and str(path) in notes[0] and f"{how}-compressed" in notes[0], captured.err


def test_a_gzip_file_with_its_suffix_is_read_silently(tmp_path, capsys):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(table_text().encode()))
    assert main(["info", f"csv:{path}", "--json"]) == 0
    captured = capsys.readouterr()
    assert '"rows_read": 160' in captured.out and "note:" not in captured.err


def test_a_zip_archive_where_a_file_is_expected(tmp_path, capsys):
    path = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", ml1m_text(ml1m_rows()))
    line = one_error(capsys, ["info", "ml-1m", "--path", path])
    assert str(path) in line and "zip archive" in line and "extract" in line, line


def test_a_folder_where_a_file_is_expected(tmp_path, capsys):
    folder = tmp_path / "t.csv"
    folder.mkdir()
    line = one_error(capsys, ["info", f"csv:{folder}"])
    assert str(folder) in line and "is a folder" in line and "file itself" in line, line
    line = one_error(capsys, ["info", f"parquet:{folder}"])
    assert str(folder) in line and "is a folder" in line, line
    # ratings.dat itself a folder: given directly, or found inside the folder given to --path.
    dat = tmp_path / "ml" / "ratings.dat"
    dat.mkdir(parents=True)
    for given in (dat, dat.parent):
        line = one_error(capsys, ["info", "ml-1m", "--path", given])
        assert str(dat) in line and "is a folder" in line, line
    (tmp_path / "gw" / "train.txt").mkdir(parents=True)
    write(tmp_path / "gw" / "test.txt", "0 1\n")
    line = one_error(capsys, ["info", "gowalla", "--path", tmp_path / "gw"])
    assert str(tmp_path / "gw" / "train.txt") in line and "is a folder" in line, line


# ---------------------------------------------------------------------- item 9: values never silently changed
def test_rating_column_without_min_rating_warns_that_every_row_counts(tmp_path, capsys):
    path = write(tmp_path / "t.csv", table_text(rating=True))
    assert main(["info", f"csv:{path}", "--rating-col", "rating", "--json"]) == 0
    err = capsys.readouterr().err.splitlines()
    (warning,) = [line for line in err if not line.startswith(PROGRESS)]
    assert warning.startswith("warning: "), err
    assert "'rating'" in warning and "every row counts as a positive" in warning and "--min-rating" in warning
    # With a threshold (or an explicit 'none') there is nothing to warn about.
    for threshold in ("1", "none"):
        assert main(["info", f"csv:{path}", "--rating-col", "rating", "--min-rating", threshold, "--json"]) == 0
        assert [line for line in capsys.readouterr().err.splitlines() if not line.startswith(PROGRESS)] == []


def test_the_same_column_for_user_and_item_is_rejected(tmp_path, capsys):
    path = write(tmp_path / "t.csv", "who,what\n" + "".join(f"{u},{u}\n" for u in range(30)))
    line = one_error(capsys, ["info", f"csv:{path}", "--user-col", "who", "--item-col", "who"])
    assert "--user-col" in line and "--item-col" in line and "'who'" in line, line


@pytest.mark.parametrize(
    "big",
    [[2**63, 2**64 - 1, 2**63 + 5], [10**20, 2 * 10**25, -(2**63) - 1]],
    ids=["uint64-range", "beyond-64-bits"],
)
def test_ids_beyond_int64_stay_exact_string_labels(tmp_path, big):
    rows = [(big[u] if u < len(big) else u, i) for u in range(20) for i in range(8)]
    path = write(tmp_path / "t.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    split = data.load_split(f"csv:{path}", progress=False)
    users = [str(u) for u in np.concatenate([split.train_users, split.validation.users, split.test.users])]
    assert sorted(users) == sorted({str(u) for u, _ in rows})  # exact, none wrapped to a negative number


def test_one_user_is_an_error_whose_fix_is_possible(tmp_path, capsys):
    path = write(tmp_path / "t.csv", "user,item\n" + "".join(f"7,{i}\n" for i in range(12)))
    line = one_error(capsys, ["info", f"csv:{path}"])
    assert "1 user" in line and "at least 3 users" in line and "more users" in line, line
    assert "smaller --heldout" not in line  # no --heldout can help


def test_few_users_name_the_heldout_that_works(tmp_path, capsys):
    path = write(tmp_path / "t.csv", table_text(n_users=4))
    line = one_error(capsys, ["info", f"csv:{path}"])  # 10% of 4 users is 0 held-out users
    assert "4 users" in line and "--heldout 1" in line, line
    assert main(["info", f"csv:{path}", "--heldout", "1", "--json"]) == 0
    assert '"n_heldout_per_set": 1' in capsys.readouterr().out
    line = one_error(capsys, ["info", f"csv:{path}", "--heldout", "2"])
    assert "4 users" in line and "--heldout 1" in line, line
