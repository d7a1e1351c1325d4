"""Modules imported on first use, so that ``--help`` and argument errors answer before torch and pandas load.

``torch = lazy_import("torch")`` at the top of a module binds a stand-in; the real ``import torch`` runs the first
time an attribute is read (``torch.zeros``, ``torch.Tensor``), then every read goes to the module. Importing torch,
pandas, matplotlib, seaborn, scikit-learn and SciPy's statistics takes seconds and hundreds of MB on these
machines; every command line of the toolkit builds its parser and checks its arguments without them
(``tests/test_fast_cli.py`` asserts it for each CLI). Code that runs at import time (a class deriving from
``nn.Module``, a default argument ``torch.float32``) reads an attribute and so imports the module at once: such
modules (``models/vae.py``) are imported by the jobs only where the work starts.

The stand-in forwards reads, writes and ``dir()``; it is not the module object itself, so ``sys.modules`` holds the
real module once loaded and ``is`` comparisons against the module object are not supported (none are made).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stand-in for the module ``name``, imported on the first attribute read.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"torch.nn.functional"``; a missing module raises ``ModuleNotFoundError`` at first
        use, naming it.
    """

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def _load(self) -> ModuleType:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            object.__setattr__(self, "_module", module)
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._load(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"


def lazy_import(name: str) -> Any:
    """Return a stand-in for the module ``name`` that imports it on first attribute read (see the module docstring).

    Typed ``Any`` so that call sites read as the module (``torch.zeros(3)``).
    """
    return LazyModule(name)
