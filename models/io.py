"""Small file helpers shared by the CLIs: atomic writes, so a killed run never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def resolve_device(device: str | None = None) -> torch.device:
    """``"auto"`` (or None) picks CUDA when present, else the CPU; any other value is passed to torch."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class FolderLock:
    """An exclusive lock held by one process on a folder it writes (a run folder, a job's output folder).

    ``fcntl.flock`` on a lock file: the operating system releases it when the process exits or dies
    (SIGKILL included), so a stale lock can never block a later run. The holder writes its pid, host, start
    time and command line into the file, so that a refused process can name it.

    Parameters
    ----------
    path : Path
        The lock file (e.g. ``RUN/.lock``); its folder is created.
    label : str
        What is locked, in words, for the error line (e.g. the folder).

    Examples
    --------
    >>> with FolderLock(run / ".lock", str(run)):        # doctest: +SKIP
    ...     train(...)
    """

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or str(self.path.parent)
        self._fd: int | None = None

    def holder(self) -> str:
        """The holder as written in the lock file (``pid N on HOST since TIME: COMMAND``), or a placeholder."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info.get("pid"):
            return "another process"
        return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('started', '?')}: {info.get('command', '')}"

    def acquire(self, *, wait: bool = False, on_wait=None) -> FolderLock:
        """Take the lock; if another process holds it, raise :class:`models.cli.FolderBusy` naming it, or with
        ``wait=True`` call ``on_wait(holder)`` once and block until it is free."""
        import fcntl
        import socket
        import sys
        import time

        from models.cli import FolderBusy

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise FolderBusy(
                        f"{self.label} is in use by {self.holder()}; wait for it to finish, stop it, or choose "
                        "another folder"
                    ) from None
                if on_wait is not None:
                    on_wait(self.holder())
                fcntl.flock(fd, fcntl.LOCK_EX)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (closing the file releases it); the file itself stays, empty."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
