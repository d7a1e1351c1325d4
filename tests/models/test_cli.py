"""The command-line contract (models.cli): one line per failure, the right exit code per cause."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from models.baselines import EASE_LAMBDAS, default_result_path
from models.cli import EXIT_SIGINT, EXIT_SIGTERM, FolderBusy, OneLineParser, guarded, os_error_line

REPO = Path(__file__).resolve().parents[2]


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


_PROBE = """
import os, signal
from models.cli import end_process, guarded

def work():
    print("written before the interrupt")
    {body}
    return 0

end_process(guarded(work, what="the probe"))
"""
_LANDS = {
    "in plain code": "os.kill(os.getpid(), signal.SIGINT)\n    for _ in range(10**7): pass",
    # CPython 3.11 then ends a -m program by SIGINT even though guarded caught the interrupt (dataclasses
    # builds its methods with exec: a Ctrl-C during an import landed there, and `sys.exit(130)` became -2)
    "inside exec of a string": 'exec("os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**7): pass")',
}


def _run_probe(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    (tmp_path / "probe.py").write_text(_PROBE.format(body=body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def default_sigint() -> None:  # a background parent may ignore SIGINT; Python then never raises Ctrl-C
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    argv = [sys.executable, "-m", "probe"]
    return subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, preexec_fn=default_sigint
    )


@pytest.mark.parametrize("where", _LANDS)
def test_ctrl_c_ends_the_process_by_sigint_wherever_it_lands(tmp_path, where):
    proc = _run_probe(tmp_path, _LANDS[where])
    # the shell reports 130 and stops a loop of runs; what was printed before is not lost
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr)
    assert proc.stdout == "written before the interrupt\n"
    assert proc.stderr.strip() == "interrupted (Ctrl-C): the probe stopped; finished files are intact"


# CPython prints and then drops an exception raised inside a finaliser (``__del__``, a weakref callback), and a
# signal's handler runs wherever the main thread is, finalisers included: in CI a job given SIGTERM there printed
# the traceback and went on working for two more minutes
_IN_A_FINALISER = "\n    ".join(
    [
        "class Dropped:",
        "    def __del__(self):",
        "        os.kill(os.getpid(), signal.{name})",
        "        for _ in range(1000): pass",
        "Dropped()",
        "for _ in range(10**7): pass",
    ]
)


@pytest.mark.parametrize(
    ("name", "code", "line"),
    [
        ("SIGINT", -signal.SIGINT, "interrupted (Ctrl-C): the probe stopped; finished files are intact"),
        ("SIGTERM", EXIT_SIGTERM, "terminated (SIGTERM): the probe stopped; finished files are intact"),
    ],
)
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_run_with_one_line(tmp_path, name, code, line):
    proc = _run_probe(tmp_path, _IN_A_FINALISER.format(name=name))
    assert proc.returncode == code and proc.stderr.strip() == line, (proc.returncode, proc.stderr)
    assert proc.stdout == "written before the interrupt\n"


def test_other_exit_codes_end_the_process_with_that_code(tmp_path):
    proc = _run_probe(tmp_path, "raise ValueError('--rho must lie in (0, 1]')")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --rho must lie in (0, 1]", proc.stderr


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
        base |= {"dtype": "float32", "solver": "auto", "path": None, "heldout": None, "min_uc": None, "min_sc": None}
        return argparse.Namespace(**{**base, **kw})

    default = default_result_path(args())
    assert str(default) == "out/baselines/ease-ml-1m.json"  # the documented name for the documented settings
    others = [args(lambdas=[10.0]), args(dtype="float64"), args(heldout=100), args(min_rating=4.0)]
    others += [args(solver="eigen"), args(dataset="csv:x", sep=";"), args(dataset="csv:x", user_col="who")]
    others += [args(dataset="csv:x", no_header=True), args(min_uc=3)]
    paths = {default, *(default_result_path(a) for a in others)}
    assert len(paths) == 10
    # a hash of the options given, as before any of the later ones existed: earlier results keep their names
    assert (
        default_result_path(args(min_rating=4.0)).name
        == "ease-ml-1m-"
        + hashlib.sha256(json.dumps({"min_rating": "4.0"}, sort_keys=True).encode()).hexdigest()[:8]
        + ".json"
    )
    assert default_result_path(args(model="popularity", lambdas=[10.0])) == default_result_path(
        args(model="popularity")
    )
