"""File helpers shared by the CLIs: atomic writes (a killed run never leaves a half-written file), self-verifying
PyTorch files that never run code on load, one-writer folder locks, and the device check."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the data layer's locks and writes must not pay ~2 s for it
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
    """``"auto"`` (or None) picks CUDA when present, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``) are
    checked against this machine.

    Raises
    ------
    ValueError
        One line for a name that is not a device or a device this machine does not have.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
                f"{'no GPU found' if torch.backends.cuda.is_built() else 'a CPU-only build'}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available here; use --device cpu or auto")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: only cpu, cuda and mps are supported")
    return dev


def check_output_file(path: Path) -> Path:
    """Check, before any work, that a result file can be written at ``path``: not a folder, its folder creatable
    and writable. Raises the ``OSError`` (or ``IsADirectoryError``) that writing it would raise later."""
    import errno

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(probe)
    return path


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
        return (
            f"pid {info['pid']} on {info.get('host', '?')} since {info.get('started', '?')}: {info.get('command', '')}"
        )

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
                # the program's name and arguments, short enough for one error line
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:160] if sys.argv else "",
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


# ------------------------------------------------------------------------------ self-verifying torch files

DIGEST_KEY = "_sha256"


class DamagedFile(ValueError):
    """A file on disk is truncated, altered or not what the toolkit wrote; the message names it and the fix."""


def _feed(h: hashlib._Hash, obj: object) -> None:
    """Feed a canonical byte form of a checkpoint's content to ``h``: tensors by dtype, shape and raw bytes,
    containers in their (pickle-preserved) order, scalars by ``repr`` (exact for floats)."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            h.update(f"K{key!r}".encode())
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r}".encode())


def content_digest(obj: dict) -> str:
    """sha256 of a checkpoint dictionary's content (every tensor byte and every value), without its digest key."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_verified(path: Path, obj: dict) -> Path:
    """``torch.save`` a dictionary of tensors and plain data atomically, with the sha256 of its content inside.

    The file stays an ordinary PyTorch file (``torch.load(path, weights_only=True)`` reads it); the digest lets
    :func:`load_verified` detect a flipped byte, which PyTorch's zip container does not (it detects truncation).
    """
    import torch

    buf = io.BytesIO()
    torch.save({**obj, DIGEST_KEY: content_digest(obj)}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_verified(path: Path, map_location: str | torch.device | None = "cpu", *, fix: str = "") -> dict:
    """Read a file written by :func:`save_verified`: tensors and plain data only (``weights_only=True``, so a
    crafted pickle runs nothing), its digest checked.

    Parameters
    ----------
    path : Path
    map_location : device
    fix : str
        What the user should do about a damaged file (appended to the error line).

    Raises
    ------
    DamagedFile
        Truncated, not a PyTorch file, holding objects other than tensors and plain data, or a digest that
        does not match the content. A file without a digest (written before digests existed) is accepted.
    """
    import pickle

    import torch

    path = Path(path)
    tail = f"; {fix}" if fix else ""
    if path.is_dir():
        raise DamagedFile(f"{path}: is a folder, expected a checkpoint file{tail}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise DamagedFile(
            f"{path}: refused to load: it holds objects other than tensors and plain data (a file this toolkit "
            f"did not write, possibly malicious); nothing in it was run{tail}"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise DamagedFile(f"{path}: truncated or not a PyTorch file ({reason}){tail}") from None
    if not isinstance(obj, dict):
        raise DamagedFile(f"{path}: not a checkpoint of this toolkit (holds a {type(obj).__name__}){tail}")
    stored = obj.pop(DIGEST_KEY, None)
    if stored is not None and stored != content_digest(obj):
        raise DamagedFile(f"{path}: damaged: its content does not match the checksum written with it{tail}")
    return obj
