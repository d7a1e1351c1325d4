"""The contract of every command line of the toolkit: one line per failure, clean interrupts, one exit code each.

Every ``python -m models.*`` and ``python -m analyses.*`` entry point runs its work through :func:`guarded`:

* a problem the user can fix (``ValueError`` and its subclasses: bad option, malformed file, impossible
  configuration; ``FileNotFoundError``; :class:`FolderBusy`) prints **one** ``error: ...`` line on stderr and
  exits with :data:`EXIT_USAGE` (2);
* any other ``OSError`` (permission denied, read-only file system, disk full, a folder where a file is expected,
  ...) prints one line naming the path and the fix (:func:`os_error_line`), exit code 2;
* Ctrl-C (SIGINT) prints one line; the process then ends by SIGINT itself (:func:`end_process`), so shells
  report 130 and a shell loop of runs stops too. SIGTERM prints one line and exits with 143 (128 + the signal
  number, as shells do). Outputs stay consistent because every write is atomic (:mod:`models.io`) and jobs
  publish their output folder only when complete.

:class:`OneLineParser` makes argparse's own errors one line too (no usage dump).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

EXIT_USAGE = 2
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock (see :class:`models.io.FolderLock`)."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (a ``BaseException``, like Ctrl-C's
    ``KeyboardInterrupt``, so that ``except Exception`` blocks do not swallow it)."""


def one_line(text: object, limit: int = 600) -> str:
    """Collapse whitespace (e.g. a multi-line tool error) into one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


_FIXES = {
    errno.EACCES: ("permission denied", "check its permissions, or choose a path you can use"),
    errno.EPERM: ("operation not permitted", "check its permissions, or choose a path you can use"),
    errno.EROFS: ("read-only file system", "choose a writable location (e.g. --out on a writable disk)"),
    errno.ENOSPC: ("no space left on the device", "free some space, or choose a location on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or choose a location on another disk"),
    errno.EISDIR: ("is a folder, expected a file", "pass the file itself, not its folder"),
    errno.ENOTDIR: ("a file stands where a folder is expected", "remove or rename that file, or choose another path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EEXIST: ("already exists", "remove it, or choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or run fewer processes at once"),
}


def os_error_parts(exc: OSError) -> tuple[str, str]:
    """What went wrong and how to fix it, in words, for an operating-system error (the fix may be empty)."""
    return _FIXES.get(exc.errno, (one_line(exc.strerror or exc, 160).lower(), ""))


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path, what went wrong and how to fix it.

    >>> os_error_line(PermissionError(13, "Permission denied", "/data/x.csv"))
    '/data/x.csv: permission denied; check its permissions, or choose a path you can use'
    """
    path = exc.filename
    if exc.filename2:
        path = f"{exc.filename} -> {exc.filename2}"
    what, fix = os_error_parts(exc)
    head = f"{path}: {what}" if path else what
    return f"{head}; {fix}" if fix else head


def error_line(exc: BaseException) -> str:
    """The one line printed for a user-fixable failure (``error: `` excluded)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        return os_error_line(exc)  # raised by the OS itself; our own messages carry no errno
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8"
    return one_line(exc)


def fail(message: str) -> int:
    """Print ``error: message`` as one line on stderr and return :data:`EXIT_USAGE`."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def _dropped_signal(info: object) -> int | None:
    """The signal whose exception CPython dropped as "unraisable" (``info``: :func:`sys.unraisablehook`'s
    argument), or None for any other exception."""
    exc_type = getattr(info, "exc_type", None)
    if exc_type is None or threading.current_thread() is not threading.main_thread():
        return None  # signal handlers run in the main thread only: a drop elsewhere is not theirs
    if issubclass(exc_type, Terminated):
        return signal.SIGTERM
    return signal.SIGINT if issubclass(exc_type, KeyboardInterrupt) else None


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread, and a SIGTERM or Ctrl-C whose
    exception CPython dropped is sent again (both restored afterwards).

    A signal's Python handler runs wherever the main thread is when the signal comes, finalisers included
    (``__del__``, weakref callbacks, which the garbage collector may start at any allocation). CPython does not
    let an exception leave a finaliser: it prints "Exception ignored in ..." with a traceback and the program goes
    on, so the interrupt would be lost and the run would go on to its end. While inside, :data:`sys.unraisablehook`
    catches such a drop, prints nothing, and a timer thread sends the same signal to the process again a
    millisecond later, when the main thread is back in ordinary code. The signal goes through whatever handler is
    then in place, so a block that defers signals (:func:`analyses.common._signals_deferred`) still defers it.
    Timers still pending at the exit are cancelled: the work they would interrupt has ended.
    """

    def handler(signum: int, frame: object) -> NoReturn:
        raise Terminated(signum)

    timers: list[threading.Timer] = []

    def resend(info: object) -> None:
        signum = _dropped_signal(info)
        if signum is None:
            previous_hook(info)
            return
        timer = threading.Timer(0.001, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        timers.append(timer)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave signals alone
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = resend
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for timer in timers:
            timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def guarded(work: Callable[[], int], *, what: str = "the run") -> int:
    """Run ``work()`` under the command-line contract above and return the exit code.

    Parameters
    ----------
    work : callable
        The command's body; returns its exit code.
    what : str
        What was interrupted, for the interrupt line (e.g. ``"training"``).
    """
    try:
        with sigterm_raises():
            return work()
    except KeyboardInterrupt:
        print(f"interrupted (Ctrl-C): {what} stopped; finished files are intact", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print(f"terminated (SIGTERM): {what} stopped; finished files are intact", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        return EXIT_USAGE  # stdout closed by the reader (e.g. `| head`): nothing left to say
    except (ValueError, OSError, FolderBusy) as exc:
        return fail(error_line(exc))


def end_process(code: int) -> NoReturn:
    """End a ``python -m`` entry point with the exit code :func:`guarded` returned.

    After Ctrl-C (``code == EXIT_SIGINT``) the process ends by SIGINT itself, with the default disposition, as
    POSIX asks of a program that handled the interrupt (https://www.cons.org/cracauer/sigint.html) and as
    CPython does after an uncaught one: the calling shell reports 130 and a loop of runs
    (``for s in 0 1 2; do python -m ...; done``) stops instead of starting the next run. It also makes the end
    deterministic: CPython 3.11 ends a ``-m`` program by SIGINT anyway whenever the KeyboardInterrupt was raised
    inside code run by ``exec`` of a string (``dataclasses`` builds its methods that way), even when the program
    caught it, so a plain ``sys.exit(130)`` gave 130 or death by SIGINT depending on where the signal landed.
    Other codes are ``sys.exit(code)``.
    """
    if code == EXIT_SIGINT:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # the one line is printed; nothing runs after the signal
            except (OSError, ValueError):
                pass
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)  # returns only if SIGINT is blocked: then exit with 130 below
    raise SystemExit(code)


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one line (``error: ... (see PROG --help)``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")
