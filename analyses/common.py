"""Helpers shared by the analysis jobs: the command line, one-line errors, option checks, dataset loading, the output
folder and its files.

Every job (``python -m analyses.<name>``) follows the same contract:

* **One line per failure.** ``main(argv)`` is :func:`run_main`, which runs the job under
  :func:`models.cli.guarded`: a bad option, unavailable data or an OS error (permission denied, disk full, ...)
  prints **one** ``error: ...`` line on stderr and exits with code 2; Ctrl-C prints one line and exits with 130,
  SIGTERM with 143. Argparse errors are one line too (:class:`JobArgumentParser`).
* **Options checked before any work.** Every numeric option is checked for type, range and finiteness
  (:func:`check_int`, :func:`check_float`, :func:`check_seed`; the dataset options in their parsers,
  :func:`models.data.add_dataset_arguments`) before any data is loaded
  or model trained; the error names the flag.
* **The output folder is checked before any work and written as a whole.** After its checks and before loading
  data, a job calls :func:`stage_output` with its final folder ``OUT``, which

  - refuses, in one line naming the path and the fix, an ``OUT`` that is a file, a symbolic link, a folder that is
    not a finished output of the same job (a marker-less folder with other files is never replaced), or a place
    where the job cannot create or write files (read-only or permission denied);
  - takes an exclusive lock on the sibling lock file ``OUT.parent/.OUT.name.lock``
    (:class:`models.io.FolderLock`, released by the OS when the process dies): a second job into the same
    ``--out`` stops at once with one line naming the process that holds it;
  - removes what a killed job (SIGKILL) left behind for the same folder (staging and moved-aside folders), and
    puts a finished folder back in place if a kill fell between the two renames of a replacement;
  - returns the staging folder ``OUT.parent/.OUT.name.partial-PID``, where the job writes every file.

  When the job returns, :func:`run_main` writes the completion marker :data:`COMPLETE_MARKER` (``OUT/COMPLETE``:
  JSON with ``"complete": true``, the job, the options that decide the results and their hash, the command and
  the time) and renames the staging folder into place; a previous finished ``OUT`` is first moved aside
  (``.OUT.name.old-PID``) and then deleted. If the job fails or is interrupted, the staging folder is deleted, so
  ``OUT`` is either the previous finished folder or the new one, never a mix of two runs. **A folder is finished
  if and only if it holds** ``COMPLETE``; every job lists it among its files. The one exception is a job that
  resumes its own work (the claims ledger, ``stage_output(..., resume_from=...)``): its staging folder is kept
  when it fails or is interrupted, and the next run of the same command takes it over; ``OUT`` itself is still
  only ever replaced by a finished folder.
* **Default folders never mix settings.** :func:`default_out_dir` names the folder
  ``out/JOB/DATASET-TAG[-quick]-HASH``: a readable tag (e.g. ``rho0.5``) and the first 8 hex digits of the
  SHA-256 of every option that can change the results (:func:`result_options`; resolved values, so an option
  given at its default names the same folder). Those options and their hash are written into the job's JSON
  (``options``, ``options_hash``) and into ``COMPLETE``. ``--quick`` means synthetic data unless ``--dataset`` is
  given, and its folders carry ``-quick``, so a quick run never lands in the full-run folder.

A job supplies ``build_parser()`` (with :func:`add_job_arguments`) and ``run(args) -> output folder`` (calling
:func:`stage_output`, ending with :func:`save_result` and :func:`print_done`); :mod:`analyses.paper_figures` runs
the other jobs inside its own staging folder (nested jobs take no lock of their own: the report's lock covers
them). The options of trained models live in :mod:`analyses.model_options`, the encoders in
:mod:`analyses.encoding`.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from models.cli import FolderBusy, OneLineParser, error_line, fail, guarded, one_line, os_error_parts
from models.data import DatasetUnavailable, dataset_names, split_from_args
from models.io import FolderLock, atomic_write_bytes, atomic_write_json
from models.lazy import lazy_import
from models.split import Split

pd = lazy_import("pandas")
sp = lazy_import("scipy.sparse")

OUT_ROOT = Path("out")
EXIT_USAGE = 2
DATASET_EPILOG = "Default dataset ml-1m is fetched and cached on first use; offline, use --dataset synthetic."
COMPLETE_MARKER = "COMPLETE"
"""Name of the file that marks a finished output folder (JSON, see the module docstring)."""
NOT_RESULT_OPTIONS = frozenset({"out", "no_progress", "refresh", "workers"})
"""Options that never change a job's numbers (where they go, progress bars, rebuilding a cached split, how many
processes train the models)."""
ABSENT_UNLESS_GIVEN = frozenset({"run"})
"""Options added after results were first stored: left out of a job's options when not given, so that the
options (and their hash, the default output folder) of every earlier result stay the same."""
HASH_DIGITS = 8


class JobError(ValueError):
    """A problem the user can fix (bad option, data not available); printed as one line, exit code 2.

    A ``ValueError``, so that :func:`models.cli.guarded` prints it like every other user error."""


class JobArgumentParser(OneLineParser):
    """``argparse`` parser whose errors are one line (``error: ...``) and exit code 2, without the usage dump."""


# ------------------------------------------------------------------------------------------ the option checks


def check_int(flag: str, value: int | None, low: int, high: int | None = None, why: str = "") -> None:
    """Raise :class:`JobError` naming ``flag`` unless ``value`` (None: not given) is an integer in [low, high].

    ``why`` is appended to the range, e.g. ``" (a variance needs two draws)"``.
    """
    if value is None:
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    ok = ok and (high is None or value <= high)
    if not ok:
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise JobError(f"{flag} must be an integer {span}{why}, got {value}")


def check_float(
    flag: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> None:
    """Raise :class:`JobError` naming ``flag`` unless ``value`` (None: not given) is finite and inside the range.

    ``low_open`` / ``high_open`` exclude the end points, e.g. ``low=0, low_open=True`` for "> 0".
    """
    if value is None:
        return
    x = float(value)
    inside = math.isfinite(x)
    inside = inside and (low is None or (x > low if low_open else x >= low))
    inside = inside and (high is None or (x < high if high_open else x <= high))
    if not inside:
        if low is not None and high is not None:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            span = f"{'<' if high_open else '<='} {high:g}"
        else:
            span = ""
        raise JobError(f"{flag} must be a finite number {span}{why}, got {value}".replace("  ", " "))


def check_seed(args: argparse.Namespace) -> None:
    """``--seed`` (and ``--train-seed`` where the job has it) must be integers >= 0 (numpy's seeds)."""
    check_int("--seed", args.seed, 0)
    check_int("--train-seed", vars(args).get("train_seed"), 0)


def job_dataset(args: argparse.Namespace) -> str:
    """``--dataset``, else synthetic with ``--quick`` and ml-1m without."""
    return args.dataset or ("synthetic" if args.quick else "ml-1m")


def load_job_split(name: str, args: argparse.Namespace, *, progress: bool = True) -> Split:
    """The split of ``name`` from the dataset options; unavailable data becomes a one-line :class:`JobError`.

    Downloads happen on first use (``models.data`` prints its progress to stderr) and the split is cached.
    """
    try:
        return split_from_args(name, args, progress=progress)
    except DatasetUnavailable as exc:
        reason = one_line(str(exc))
        # models.data words it "NAME is not available offline: WHY. It is HOW. `--dataset synthetic` ..."
        for prefix in (f"{name} is not available offline: ", f"{name} is not available offline"):
            reason = reason.removeprefix(prefix)
        reason = reason.split(" It is ")[0].split(" `--dataset synthetic`")[0].rstrip(". ") or "no source reachable"
        message = f"{name} is not available offline ({one_line(reason, 160)}); run with --dataset synthetic"
        raise JobError(message) from None


# ---------------------------------------------------------------------------------------------- output folder


def parsed_arguments(args: argparse.Namespace) -> dict:
    """Every parsed option, as a job's JSON records them (``arguments``): without what ``--run`` checks given
    options against, and without the options of :data:`ABSENT_UNLESS_GIVEN` when not given."""
    return {k: v for k, v in vars(args).items() if k != "run_fixed" and not (k in ABSENT_UNLESS_GIVEN and v is None)}


def result_options(args: argparse.Namespace, ignore: Sequence[str] = (), **resolved: object) -> dict:
    """The options that decide a job's results: every parsed option except :data:`NOT_RESULT_OPTIONS` and
    ``ignore``, with ``resolved`` values (e.g. the dataset and the sizes ``--quick`` chose) in place of the parsed
    ones, as JSON values (paths as strings, tuples as lists)."""
    skip = NOT_RESULT_OPTIONS | set(ignore)
    options = {k: v for k, v in parsed_arguments(args).items() if k not in skip}
    options.update(resolved)
    return {k: _plain(v) for k, v in sorted(options.items())}


def _plain(value: object) -> object:
    """A JSON value for an option (the display mapping of :func:`to_jsonable` does not apply: options name no
    staging folder)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def options_hash(options: Mapping[str, object]) -> str:
    """First :data:`HASH_DIGITS` hex digits of the SHA-256 of ``options`` as canonical JSON."""
    blob = json.dumps(_plain(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_DIGITS]


def default_out_dir(job: str, dataset: str, tag: str, options: Mapping[str, object]) -> Path:
    """``out/JOB/DATASET-TAG[-quick]-HASH``: readable, and different for any change of ``options``.

    ``-quick`` is added when ``options["quick"]`` is true; ``HASH`` is :func:`options_hash` of ``options``.
    Characters unsafe in a folder name (``:``, ``/``) are replaced; a long name keeps its end (the hash).
    """
    name = f"{dataset}-{tag}" if tag else dataset
    name += "-quick" if options.get("quick") else ""
    safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in f"{name}-{options_hash(options)}")
    return OUT_ROOT / job / safe.strip("._")[-100:]


# One list of open output folders per job main running in this process, innermost last (paper_figures runs the
# other jobs' mains inside its own).
_SESSIONS: list[list[OutputFolder]] = []
_COMMANDS: list[str | None] = []  # the command line of each of those mains, for the completion marker


def _out_error(final: Path, exc: OSError) -> JobError:
    """One line for an ``--out`` the job cannot create or write: the folder, what went wrong where, the fix."""
    what, fix = os_error_parts(exc)
    where = f" at {exc.filename}" if exc.filename and Path(exc.filename) != final else ""
    return JobError(f"--out {final}: cannot write there ({what}{where}); {fix or 'choose another --out'}")


def _read_marker(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("complete") is True else None


def _legacy_job(folder: Path) -> str | None:
    """The job of a finished folder written before the completion marker existed (its JSON names the job)."""
    for name in ("summary.json", "results.json", "paper_figures.json"):
        try:
            doc = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("job"), str):
            return doc["job"]
    return None


class OutputFolder:
    """A job's output folder while the job writes it: checks, lock, staging folder, publication (module docstring).

    Parameters
    ----------
    final : Path
        The folder the job's results end up in (``--out``), as the user gave it (shown in messages).
    job : str
        The job's name (recorded in the marker; a finished folder of another job is never replaced).
    options : mapping
        The options that decide the results (:func:`result_options`).
    """

    def __init__(
        self,
        final: Path,
        job: str,
        options: Mapping[str, object],
        resume_from: Callable[[Path], bool] | None = None,
    ) -> None:
        self.final = Path(final)
        self.resume_from = resume_from
        self.resumed = False
        self.job = job
        self.options = dict(options)
        self.hash = options_hash(self.options)
        self.real = Path(os.path.abspath(self.final))  # a name and a parent even for --out . or ..
        self.staging = self.real.parent / f".{self.real.name}.partial-{os.getpid()}"
        self.lock: FolderLock | None = None
        self.extra: dict[str, object] = {}  # more facts for the completion marker (mark_output)
        self.command = " ".join(sys.argv)

    def _sibling(self, kind: str) -> str:
        return glob.escape(str(self.real.parent / f".{self.real.name}.{kind}-")) + "*"

    def _refusal(self) -> str | None:
        """Why the existing ``final`` must not be replaced, or None when it may be (absent, empty, ours)."""
        path, final = self.real, self.final
        if path.is_symlink():
            return f"--out {final} is a symbolic link; pass the folder it points to, or choose another --out"
        if not path.exists():
            return None
        if not path.is_dir():
            return f"--out {final} is a file, not a folder; remove it or choose another --out"
        marker = _read_marker(path)
        owner = marker.get("job") if marker else _legacy_job(path)
        if owner is None and not any(path.iterdir()):
            return None
        if owner is None:
            return (
                f"--out {final} exists and is not a finished output folder (it has no {COMPLETE_MARKER} file), so it "
                "is not replaced; remove it or choose another --out"
            )
        if owner != self.job:
            return f"--out {final} holds the output of analyses.{owner}; choose another --out for analyses.{self.job}"
        return None

    def open(self) -> Path:
        """Check ``final``, take the lock (unless inside another job's staging folder), clean up after a killed
        run, create the staging folder and return it."""
        refusal = self._refusal()
        if refusal:
            raise JobError(refusal)
        nested = any(_inside(self.real, f.staging) for folders in _SESSIONS for f in folders)
        try:
            self.real.parent.mkdir(parents=True, exist_ok=True)
            if not nested:  # the outer job's lock covers what it runs inside its staging folder
                self.lock = FolderLock(self.real.parent / f".{self.real.name}.lock", f"--out {self.final}").acquire()
            self._clean_up_after_killed_runs()
            # said before the staging folder appears: whoever sees the folder (a test, a user's Ctrl-C) has the note
            self._note_replacement()
            if not self.resumed:
                self.staging.mkdir()
        except OSError as exc:
            self.release()
            raise _out_error(self.final, exc) from None
        except BaseException:
            self.release()
            raise
        return self.staging

    def _clean_up_after_killed_runs(self) -> None:
        # Holding the lock, no live process writes this folder: every staging folder is a killed run's.
        olds = sorted(Path(p) for p in glob.glob(self._sibling("old")))
        if not self.real.exists():
            # a kill between the two renames of a replacement: the previous finished folder is put back
            for old in olds:
                if _read_marker(old) is not None:
                    os.rename(old, self.real)
                    note = f"note: restored the finished folder {self.final} (a replacement of it was interrupted)"
                    print(note, file=sys.stderr)
                    break
        partials = sorted((Path(p) for p in glob.glob(self._sibling("partial"))), key=_mtime, reverse=True)
        if self.resume_from is not None:
            taken = next((p for p in partials if p.is_dir() and self.resume_from(p)), None)
            if taken is not None:  # the newest interrupted run of the same work: its finished parts are kept
                os.rename(taken, self.staging)
                self.resumed = True
                partials.remove(taken)
        for leftover in [*partials, *glob.glob(self._sibling("old"))]:
            shutil.rmtree(leftover, ignore_errors=True)

    def _note_replacement(self) -> None:
        marker = _read_marker(self.real)
        if not marker or marker.get("options_hash") == self.hash:
            return
        before = marker.get("options") or {}
        changed = [k for k in sorted({*before, *self.options}) if before.get(k) != self.options.get(k)]
        shown = ", ".join(f"{k} {before.get(k)!r} -> {self.options.get(k)!r}" for k in changed[:6])
        print(
            f"note: --out {self.final} holds a finished run with other options ({shown or 'unrecorded'}); it is "
            "replaced when this run completes",
            file=sys.stderr,
        )

    def publish(self, extra: Mapping[str, object] | None = None) -> None:
        """Write the completion marker, then rename the staging folder into place (replacing a finished one)."""
        marker = {
            "complete": True,
            "job": self.job,
            "options_hash": self.hash,
            "options": self.options,
            "command": self.command[:1000],
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            **self.extra,
            **(extra or {}),
        }
        atomic_write_json(self.staging / COMPLETE_MARKER, _plain(marker))
        # Ctrl-C between the two renames would leave no folder at OUT, and after them the replaced folder behind
        with _signals_deferred():
            refusal = self._refusal()
            if refusal:  # someone put something at OUT while the job ran: keep both, delete nothing
                kept = self.real.parent / f"{self.real.name}.new-{time.strftime('%Y%m%d-%H%M%S')}"
                os.rename(self.staging, kept)
                raise JobError(f"{refusal}; this run's results are in {kept}")
            old = None
            if self.real.exists():
                old = self.real.parent / f".{self.real.name}.old-{os.getpid()}"
                os.rename(self.real, old)
            os.rename(self.staging, self.real)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self.release()

    def discard(self) -> None:
        """Delete the staging folder (the job failed or was interrupted) and give the lock back; a resumable job's
        staging folder is kept for the next run of the same command (``resume_from``)."""
        if self.resume_from is None:
            shutil.rmtree(self.staging, ignore_errors=True)
        elif self.staging.exists():
            print(
                f"note: kept what this run finished in {display_path(self.staging)}; the same command resumes it",
                file=sys.stderr,
            )
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends; each one that came is then raised again, once, for the
    handlers in place before the block (Ctrl-C's ``KeyboardInterrupt``, :func:`models.cli.sigterm_raises`).

    Done with Python-level handlers that only record the signal, not with ``pthread_sigmask``: a signal mask is
    per thread, and with torch's worker threads running the kernel hands a blocked signal to another thread, whose
    C handler still makes the main thread raise at its next bytecode, inside the block.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    came: list[int] = []

    def record(signum: int, frame: object) -> None:
        came.append(signum)

    # a handler set outside Python (getsignal() is None) cannot be put back: such a signal is left alone
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, record) for s in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)  # the restored handler acts on it now (ignored if it was SIG_IGN)


@contextmanager
def output_session(command: str | None = None) -> Iterator[list[OutputFolder]]:
    """The output folders opened by :func:`stage_output` inside the block: published when the block ends normally,
    discarded (staging deleted, lock released) when it raises or is interrupted. An OS error about a file in a
    staging folder is reported with the file's final path. ``command`` (default: this process's command line) is
    recorded in the completion markers."""
    opened: list[OutputFolder] = []
    _SESSIONS.append(opened)
    _COMMANDS.append(command)
    try:
        try:
            yield opened
            for folder in opened:
                folder.publish()
        except BaseException as exc:
            if isinstance(exc, OSError):
                for name in ("filename", "filename2"):
                    if getattr(exc, name):
                        setattr(exc, name, str(display_path(getattr(exc, name))))
            for folder in opened:
                folder.discard()
            raise
    finally:
        _SESSIONS.pop()
        _COMMANDS.pop()


def stage_output(
    final: Path, job: str, options: Mapping[str, object], resume_from: Callable[[Path], bool] | None = None
) -> Path:
    """Check ``final`` (``--out``), lock it and return the staging folder the job writes into (module docstring).

    Call it after the option checks and before loading data, inside :func:`run_main` (or :func:`output_session`).
    ``resume_from``: for a job that can resume its own staging folder (the claims ledger). The newest staging
    folder left by a killed, failed or interrupted run of ``final`` for which it returns True becomes this run's
    staging folder (the others are deleted), and this run's is kept when it fails or is interrupted.

    Raises
    ------
    JobError
        ``final`` is a file, a link, a folder that is not a finished output of ``job``, or not writable.
    models.cli.FolderBusy
        Another process writes the same folder.
    """
    if not _SESSIONS:
        raise RuntimeError("stage_output() runs inside run_main() or output_session()")
    folder = OutputFolder(final, job, options, resume_from)
    if _COMMANDS[-1] is not None:
        folder.command = _COMMANDS[-1]
    staging = folder.open()
    _SESSIONS[-1].append(folder)
    return staging


def current_options() -> tuple[dict, str] | None:
    """``(options, hash)`` of the innermost open output folder, or None."""
    for folders in reversed(_SESSIONS):
        if folders:
            return folders[-1].options, folders[-1].hash
    return None


def mark_output(**facts: object) -> None:
    """Record ``facts`` (JSON values) in the completion marker of the innermost open output folder."""
    for folders in reversed(_SESSIONS):
        if folders:
            folders[-1].extra.update(facts)
            return


def display_path(path: str | Path) -> Path:
    """``path`` with any staging folder of a job running in this process replaced by its final folder, for what a
    job prints and records (a staging folder is gone once the job ends)."""
    shown = Path(path)
    for folders in reversed(_SESSIONS):
        for folder in folders:
            real = Path(os.path.abspath(shown))
            if _inside(real, folder.staging):
                shown = folder.final / real.relative_to(folder.staging)
    return shown


def _shown_token(token: str) -> str:
    """A command-line word with a staging folder in it replaced by the final folder (:func:`display_path`)."""
    shown = display_path(token)
    return str(shown) if shown != Path(token) else token


def to_jsonable(obj: object) -> object:
    """Numpy scalars and arrays, paths and NaN (-> None) made JSON-serialisable, recursively.

    Paths are recorded as :func:`display_path` shows them: a job's JSON names final folders, never staging ones.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(display_path(obj))
    return obj


def read_json_doc(path: Path, where: str, wanted: str) -> object:
    """A JSON file's content, or one JobError line naming ``where``, the problem and ``wanted``."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise JobError(f"{where}: cannot read it ({exc.strerror or exc}); give {wanted}") from None
    except ValueError as exc:
        raise JobError(f"{where}: not JSON ({exc}); give {wanted}") from None


def write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN written as null)."""
    return atomic_write_json(path, to_jsonable(obj))


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    """Write a table as CSV atomically (no index column; floats at full precision)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)  # shortest round-trip repr: values read back exactly
    return atomic_write_bytes(path, buf.getvalue().encode())


def format_table(table: pd.DataFrame, formats: Mapping[str, str], headers: Mapping[str, str] | None = None) -> str:
    """Fixed-width text table of the columns in ``formats`` (``{column: format spec}``), NaN shown as ``-``.

    ``headers`` renames columns for display. Numbers are right-aligned, text left-aligned.
    """
    headers = headers or {}
    cols = list(formats)
    cells = []
    for _, row in table.iterrows():
        line = []
        for col in cols:
            value = row[col]
            if isinstance(value, (float, np.floating)) and not np.isfinite(value):
                line.append("-")
            else:
                line.append(format(value, formats[col]))
        cells.append(line)
    names = [headers.get(c, c) for c in cols]
    widths = [max([len(n)] + [len(r[j]) for r in cells]) for j, n in enumerate(names)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in cols]

    def render(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(names), rule, *(render(r) for r in cells)])


def report_failure(exc: BaseException) -> int:
    """:func:`fail` with the line :func:`models.cli.guarded` prints for ``exc`` (OS errors name path and fix)."""
    return fail(error_line(exc))


# ------------------------------------------------------------------------------------------- the command line


def job_parser(job: str, description: str, note: str = "") -> JobArgumentParser:
    """The parser of ``python -m analyses.JOB``; its epilog is ``note`` and where the default dataset comes from."""
    return JobArgumentParser(
        prog=f"python -m analyses.{job}", description=description, epilog=f"{note} {DATASET_EPILOG}".strip()
    )


def add_job_arguments(
    parser: argparse.ArgumentParser, *, out: str, seed: str, quick: str, dataset: str | None = None
) -> None:
    """The options every job takes: ``--dataset``, ``--seed``, ``--out``, ``--quick`` and ``--no-progress``.

    Parameters
    ----------
    out : str
        The default output folder in words, e.g. ``out/JOB/DATASET-rhoR``.
    seed : str
        What ``--seed`` seeds.
    quick : str
        What ``--quick`` does.
    dataset : str, optional
        Fixed default dataset; None (every job today): ml-1m, or synthetic with ``--quick`` (:func:`job_dataset`).
    """
    default = f"default {dataset}" if dataset else "default ml-1m; --quick: synthetic"
    parser.add_argument("--dataset", default=dataset, help=f"one of {', '.join(dataset_names())} ({default})")
    parser.add_argument("--seed", type=int, default=0, help=f"{seed} (0)")
    parser.add_argument("--out", type=Path, help=f"output folder (default {out})")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def option_sizes(
    args: argparse.Namespace,
    defaults: Mapping[str, object],
    quick: Mapping[str, object],
    minimum: Mapping[str, int] | None = None,
) -> dict:
    """The job's sizes: each option of ``defaults`` as given, else its default (``quick`` with ``--quick``).

    ``minimum`` maps options to their smallest valid value; a smaller one raises :class:`JobError` naming the flag.
    """
    base = quick if args.quick else defaults
    sizes = {key: getattr(args, key) if getattr(args, key) is not None else base[key] for key in base}
    for key, low in (minimum or {}).items():
        check_int(f"--{key.replace('_', '-')}", sizes[key], low)
    return sizes


def run_main(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Path], argv: Sequence[str] | None
) -> int:
    """A job's ``main``: parse ``argv``, ``run`` (which writes into :func:`stage_output`'s folder), publish the
    folder and print where it is; returns the exit code.

    Runs under :func:`models.cli.guarded`: a problem the user can fix (:class:`JobError` and every ``ValueError``,
    ``FileNotFoundError``, any other ``OSError``, a busy folder) is one ``error:`` line on stderr and exit code 2
    (bad options already are while parsing); Ctrl-C is one line and 130, SIGTERM one line and 143. Inside another
    job's main (``paper_figures``) interrupts pass on to that job, which reports them once.
    """
    job = parser.prog.removeprefix("python -m analyses.")

    def work() -> int:
        args = parser.parse_args(argv)
        given = sys.argv[1:] if argv is None else list(argv)
        # as it reruns the job: a nested job's --out (inside paper_figures' staging folder) shown as its final path
        command = shlex.join([*parser.prog.split(), *(_shown_token(a) for a in given)])
        with output_session(command):
            shown = display_path(run(args))  # the final folder, while the staging one is still known
        print(f"output folder: {shown}")
        return 0

    if _SESSIONS:
        try:
            return work()
        except (ValueError, OSError, FolderBusy) as exc:
            return report_failure(exc)
    return guarded(work, what=f"analyses.{job}")


# ------------------------------------------------------------------------------------------------- the data


def binary(X: sp.spmatrix) -> sp.csr_matrix:
    """``X`` as a CSR matrix with every stored entry set to 1 (float32)."""
    X = sp.csr_matrix(X)
    return sp.csr_matrix((np.ones(X.nnz, dtype=np.float32), X.indices, X.indptr), shape=X.shape)


def planted_labels(split: Split) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The synthetic generator's ground truth for the split's training rows, or None and why not.

    ``models.data`` generates the synthetic split from ``models.synthetic.make_synthetic()`` defaults; the
    interaction counts of the rows are checked against the generator, so a changed filter is detected.

    Returns
    -------
    labels : dict or None
        ``make_synthetic().labels_for(split.train_users)`` (``taste_group``, ``cohort``, ``target_activity``,
        ``n_interactions``, ... per training row), plus ``pairs`` (int64, shape (M, 2): the generator's
        far-but-related pairs whose two users are training users, as training rows) and ``cohort_activity``
        (the planted cohorts' activity). None for other datasets or when the rows are not the generator's.
    note : str or None
        Why a synthetic split has no labels.
    """
    if split.name != "synthetic":
        return None, None
    from models.synthetic import make_synthetic

    data = make_synthetic()
    ids = np.asarray(split.train_users)
    if not np.issubdtype(ids.dtype, np.integer) or ids.size == 0 or ids.min() < 0 or ids.max() >= data.n_users:
        return None, "synthetic labels skipped: the split's user ids are not the generator's ids"
    labels = data.labels_for(ids)
    if not np.array_equal(labels["n_interactions"], np.diff(sp.csr_matrix(split.train).indptr)):
        return None, "synthetic labels skipped: the split's rows differ from make_synthetic() (filters changed?)"
    row_of = np.full(data.n_users, -1, dtype=np.int64)
    row_of[ids] = np.arange(ids.size)
    rows = row_of[data.far_related_pairs]
    labels["pairs"] = rows[(rows >= 0).all(axis=1)]
    labels["cohort_activity"] = data.cohort_activity
    return labels, None


# ------------------------------------------------------------------------------------------------ the output


def save_result(out: Path, name: str, result: dict, files: Sequence[Path], timing: Mapping[str, float]) -> Path:
    """Write the job's JSON ``out/name``: ``result`` completed with ``options`` and ``options_hash`` (what decides
    the results, as :func:`stage_output` recorded them), ``timing_seconds`` and ``files`` (the names of ``files``,
    of the JSON itself and of the completion marker written when the job returns: everything in the folder)."""
    recorded = current_options()
    if recorded is not None:
        result["options"], result["options_hash"] = recorded
    result["timing_seconds"] = {k: round(v, 3) for k, v in timing.items()}
    result["files"] = [p.name for p in files] + [name] + ([COMPLETE_MARKER] if recorded is not None else [])
    return write_json(out / name, result)


def print_done(out: Path, result: Mapping, timing: Mapping[str, float], notes: Sequence[str] = ()) -> None:
    """The job's closing lines: its ``notes``, one ``note:`` line each, then the total time and the number of files
    written (after :func:`save_result`)."""
    for note in notes:
        print(f"note: {note}")
    print(f"\ndone in {timing['total']:.1f} s; wrote {len(result['files'])} files to {display_path(out)}")
