"""Every command line's --help renders (a stray '%' in a help text makes argparse crash on --help)."""

from __future__ import annotations

import contextlib
import importlib
import io

import pytest

COMMANDS = [
    *(f"analyses.{job}" for job in ("masking_contraction", "local_vs_global", "kl_budget", "sharing_radius")),
    *(f"analyses.{job}" for job in ("pia_geometry", "cohorts", "reproduce", "paper_figures")),
    "models.train",
    "models.evaluate",
    "models.baselines",
    "models.data",
]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_renders(module):
    main = importlib.import_module(module).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(["--help"])
        except SystemExit as exc:  # argparse's own exit after printing the help
            code = exc.code
    assert code in (0, None)
    assert out.getvalue().startswith("usage: python -m ")
    assert "%(" not in out.getvalue()  # every help placeholder was filled in
