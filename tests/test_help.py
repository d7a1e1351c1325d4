"""Every command line's --help renders (a stray '%' in a help text makes argparse crash on --help), and every one
ends its process through ``models.cli.end_process`` (Ctrl-C ends it by SIGINT: tests/models/test_cli.py)."""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(
    f"{path.parent.name}.{path.stem}"
    for folder in ("analyses", "models")
    for path in (ROOT / folder).glob("*.py")
    if "\ndef main(" in path.read_text()
)
"""Every command line of the project: each module of analyses/ and models/ that defines ``main``."""


def test_the_commands_are_found():
    assert {"analyses.claims", "analyses.pia_uplift", "analyses.masking_contraction", "models.train"} <= set(COMMANDS)


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


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_ends_its_process_through_end_process(module):
    # `sys.exit(main())` would end a Ctrl-C'd run with 130 or by SIGINT depending on where the signal landed
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert source.rstrip().endswith('if __name__ == "__main__":\n    end_process(main())'), module
