"""Every command line's --help renders (a stray '%' in a help text makes argparse crash on --help), answers without
importing the heavy libraries (torch and the others load where the work starts: :mod:`models.lazy`), and every one
ends its process through ``models.cli.end_process`` (Ctrl-C ends it by SIGINT: tests/models/test_cli.py)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
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


HEAVY = ("torch", "pandas", "matplotlib", "seaborn", "ot", "umap", "sklearn", "scipy")
"""Libraries that take seconds and hundreds of MB to import on these machines (torch alone: about 2 s, 220 MB)."""


def imported_by(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m ARGV`` from the checkout; its result and the top-level packages it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return done, names


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


@pytest.mark.parametrize("module", COMMANDS)
def test_help_and_argument_errors_answer_without_the_heavy_libraries(module):
    done, names = imported_by(module, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m "), done.stderr[-500:]
    assert "numpy" in names  # positive control: the import record is read
    assert not names & set(HEAVY), f"{module} --help imports {sorted(names & set(HEAVY))}"
    done, names = imported_by(module, "--no-such-option")
    assert done.returncode == 2 and done.stderr.splitlines()[-1].startswith("error: ")
    assert not names & set(HEAVY), f"{module} with a bad option imports {sorted(names & set(HEAVY))}"


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["analyses.masking_contraction", "--dataset", "ml1m"], "(did you mean ml-1m?)"),
        (["models.train", "--dataset", "gowala", "--out", "unused"], "(did you mean gowalla?)"),
        (["analyses.claims", "--datasets", "ml-1m", "ml100k"], "(did you mean ml-100k?)"),
    ],
)
def test_a_mistyped_dataset_names_the_closest_one_at_once(argv, suggestion):
    done, names = imported_by(*argv)
    assert done.returncode != 0 and suggestion in done.stderr, done.stderr[-500:]
    assert len(done.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in done.stderr
    assert not names & set(HEAVY), f"{argv} imports {sorted(names & set(HEAVY))}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["models.train", "--rho", "2", "--out", "unused"], "rho (--rho) must lie in (0, 1]"),
        (
            ["models.train", "--epochs", "0", "--dataset", "synthetic", "--out", "unused"],
            "epochs (--epochs) must be > 0",
        ),
        (["models.evaluate", "no-such-run"], "is not a run folder"),
        (["models.baselines", "ease", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["models.compare", "no-such-a", "no-such-b"], "no such run folder"),
        (["models.tune", "--space", "no-such-space.toml"], "file not found (--space)"),
        (["analyses.kl_budget", "--rho", "3"], "rho must be in (0, 1]"),
        (["analyses.pia_uplift", "--seeds", "-1"], "--seeds must be an integer >= 0"),
        (["analyses.cohorts", "--k", "0"], "--k must be an integer >= 1"),
        (["analyses.sharing_radius", "--eta", "-1"], "--eta must be 'auto' or a finite step size > 0"),
        (["analyses.local_vs_global", "--dataset", "nope"], "unknown dataset 'nope'"),
    ],
)
def test_argument_errors_found_after_parsing_answer_without_the_heavy_libraries(argv, needle):
    done, names = imported_by(*argv)
    assert done.returncode != 0 and needle in done.stderr.splitlines()[-1], done.stderr[-500:]
    assert not names & set(HEAVY), f"{argv} imports {sorted(names & set(HEAVY))}"
