"""Shared fixtures: every test runs against a throw-away dataset cache (never the user's) and one torch thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

CACHE_ENV = "VAECF_CACHE_DIR"  # read by models.data.cache_dir


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Cache root for module- and session-scoped fixtures, set before any of them runs."""
    root = tmp_path_factory.mktemp("vaecf-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache root per test (``$VAECF_CACHE_DIR``); the path is returned for inspection. The
    trainer's once-per-process notes are forgotten too, so each test sees them as a fresh process would."""
    from models import trainer

    trainer._NOTED.clear()
    root = tmp_path / "vaecf-cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread() -> Iterator[None]:
    """Tests use tiny tensors: on a busy two-core machine the intra-op thread pool costs far more than it saves
    (a tiny training step took 0.29 s with two threads and 0.024 s with one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


DROP_CAPS = "-dac_override,-dac_read_search,-fowner"


def unprivileged_prefix() -> list[str]:
    """Command prefix that runs a program without root's permission override.

    As root, ``setpriv`` drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding and
    inheritable sets, so file modes apply as they would for an ordinary user; as an ordinary user, no prefix.
    """
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot drop the permission override")
    return [setpriv, f"--bounding-set={DROP_CAPS}", f"--inh-caps={DROP_CAPS}"]


@pytest.fixture
def run_unprivileged():
    """``run_unprivileged(argv, **kwargs)``: ``subprocess.run`` of ``argv`` (text, captured output, no check)
    as a process that file permissions bind (see :func:`unprivileged_prefix`)."""
    import subprocess

    def run(argv, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 300)
        return subprocess.run([*unprivileged_prefix(), *argv], check=False, **kwargs)

    return run
