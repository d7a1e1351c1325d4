"""The command-line contract (models.cli): one line per failure, the right exit code per cause."""

from __future__ import annotations

import argparse
import errno
import os
import signal

import pytest

from models.baselines import EASE_LAMBDAS, default_result_path
from models.cli import EXIT_SIGINT, EXIT_SIGTERM, FolderBusy, OneLineParser, guarded, os_error_line


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/d/x.csv"), "/d/x.csv: permission denied; check its"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/out"), "/ro/out: read-only file system; choose a writable"),
        (OSError(errno.ENOSPC, "No space left on device", "/o/a.pt"), "/o/a.pt: no space left on the device; free"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/d"), "/d: is a folder, expected a file; pass the file"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), "/f/x: a file stands where a folder is"),
        (OSError(errno.EIO, "Input/output error", "/disk"), "/disk: input/output error"),
    ],
)
def test_os_errors_name_the_path_and_the_fix(exc, expected):
    assert os_error_line(exc).startswith(expected)


def _raises(exc: BaseException):
    def work() -> int:
        raise exc

    return work


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (ValueError("--rho must lie in (0, 1]\nsecond line"), 2, "error: --rho must lie in (0, 1] second line"),
        (FileNotFoundError("ml-1m is not available offline"), 2, "error: ml-1m is not available offline"),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), 2, "error: /x: permission denied"),
        (FolderBusy("run folder r is in use by pid 1"), 2, "error: run folder r is in use by pid 1"),
        (KeyboardInterrupt(), EXIT_SIGINT, "interrupted (Ctrl-C): training stopped"),
    ],
)
def test_guarded_gives_one_line_and_the_exit_code(capsys, exc, code, needle):
    assert guarded(_raises(exc), what="training") == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(needle), err


def test_sigterm_becomes_exit_143_and_the_handler_is_restored(capsys):
    before = signal.getsignal(signal.SIGTERM)

    def work() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM must interrupt the work")

    assert guarded(work, what="the job") == EXIT_SIGTERM
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM): the job stopped; finished files are intact"
    assert signal.getsignal(signal.SIGTERM) is before


def test_unexpected_errors_are_not_hidden():
    with pytest.raises(ZeroDivisionError):
        guarded(_raises(ZeroDivisionError("a bug must show its traceback")))


def test_parser_errors_are_one_line(capsys):
    p = OneLineParser(prog="python -m x")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--n", "2.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == ["error: argument --n: invalid int value: '2.5' (see python -m x --help)"]


def test_baseline_results_of_other_settings_get_other_files():
    def args(**kw) -> argparse.Namespace:
        base = {"model": "ease", "dataset": "ml-1m", "lambdas": list(EASE_LAMBDAS)}
        base |= {"dtype": "float32", "path": None, "heldout": None, "min_uc": None, "min_sc": None}
        return argparse.Namespace(**{**base, **kw})

    default = default_result_path(args())
    assert str(default) == "results/ease-ml-1m.json"  # the documented name for the documented settings
    others = [args(lambdas=[10.0]), args(dtype="float64"), args(heldout=100), args(min_rating=4.0)]
    paths = {default, *(default_result_path(a) for a in others)}
    assert len(paths) == 5
    assert default_result_path(args(model="popularity", lambdas=[10.0])) == default_result_path(
        args(model="popularity")
    )
