"""tests/mutate.py, the mutation-testing script: which mutants it makes of a small module, and what it leaves alone."""

from __future__ import annotations

import argparse
import ast

import pytest

from tests.mutate import mutants

SOURCE = '''"""Docstring with 1 < 2 in it."""


def f(x: int = 3) -> bool:
    """Also left alone: 5 + 6."""
    log(x, "y")
    return x < 1 and g(x, 2) * 4
'''


def test_the_mutants_of_a_small_module(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    found = mutants(path)
    assert sorted(m.what for m in found) == sorted(
        [
            "3 -> 4",  # the default value (annotations are skipped, defaults are code)
            "call dropped",  # log(x, "y")
            "first two arguments swapped",  # log(x, "y")
            "Lt -> LtE",
            "1 -> 2",
            "And -> Or",
            "first two arguments swapped",  # g(x, 2)
            "2 -> 3",
            "Mult -> Div",
            "4 -> 5",
        ]
    )
    for m in found:  # every mutant is valid Python that differs from the original
        ast.parse(m.source)
        assert ast.dump(ast.parse(m.source)) != ast.dump(ast.parse(SOURCE))
    assert path.read_text() == SOURCE  # listing mutants never touches the file


MODULE = """def double(x):
    return 2 * x


def half(x):
    if x:
        return x / 2
    return 0
"""

TESTS = """import multiprocessing
import subprocess
import sys

import pytest

import mutmod


@pytest.fixture(scope="module")
def two():
    return mutmod.half(4)


def test_double():
    assert mutmod.double(2) == 4


def test_uses_the_fixture(two):
    assert two == 2


def test_uses_it_again(two):
    assert two == 2


def test_spawns():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_starts_a_process():
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(0,))
    process.start()
    process.join()
    assert process.exitcode == 0
"""


def test_the_recording_picks_the_tests_that_run_a_mutants_line(tmp_path):
    """Per test the lines of the module it runs, a module fixture's lines for every test that asks for it (the
    second test never runs ``half`` itself), tests that start a subprocess or a process of ``multiprocessing`` (as
    ``torch.multiprocessing.spawn`` does: its lines run where no trace sees them) always, and every test for unrun
    lines."""
    from tests.mutate import _pytest

    module, tests = tmp_path / "mutmod.py", tmp_path / "test_mutmod.py"
    module.write_text(MODULE)
    tests.write_text(TESTS)
    status, _, coverage = _pytest([str(tests)], timeout=120, record=module)
    assert status == "survived" and coverage is not None
    names = {t.split("::")[-1]: t for t in coverage.lines}
    starters = ("test_spawns", "test_starts_a_process")
    assert set(names) == {"test_double", "test_uses_the_fixture", "test_uses_it_again", *starters}
    assert coverage.lines[names["test_double"]] == {2}
    assert coverage.lines[names["test_uses_the_fixture"]] == coverage.lines[names["test_uses_it_again"]] == {6, 7}
    assert coverage.spawns == {names[n] for n in starters}
    every = [str(tests)]
    assert coverage.tests_for((2, 2), every) == [names[n] for n in ("test_double", *starters)]
    assert coverage.tests_for((7, 7), every) == [
        names[n] for n in ("test_uses_the_fixture", "test_uses_it_again", *starters)
    ]
    assert coverage.tests_for((8, 8), every) is every  # ``return 0``: no test runs it
    assert coverage.tests_for((1, 1), every) is every  # a def line runs at import only


def test_a_mutant_knows_the_statement_that_holds_it(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(MODULE)
    spans = {(m.line, m.what): m.span for m in mutants(path)}
    assert spans[(2, "2 -> 3")] == (2, 2)
    assert spans[(7, "Div -> Mult")] == (7, 7)
    assert spans[(7, "2 -> 3")] == (7, 7)


def test_a_decorator_or_default_belongs_to_the_code_around_its_definition(tmp_path):
    # run at import for a module-level class or function (every test); by the outer function for a nested one
    path = tmp_path / "m.py"
    path.write_text(
        "@dataclass(frozen=True)\nclass C:\n    x: int = 0\n\n    def f(self, k=1):\n        return k\n\n\n"
        "def g():\n    def h(y=5):\n        return y\n\n    return h()\n"
    )
    spans = {(m.line, m.what): m.span for m in mutants(path)}
    assert spans[(1, "True -> False")] == (0, 0)  # the decorator: not the class's lines 2-6
    assert spans[(3, "0 -> 1")] == (3, 3)  # a field default is a statement of the class body
    assert spans[(5, "1 -> 2")] == (2, 6)  # a method's default: evaluated when the class body runs
    assert spans[(10, "5 -> 6")] == (9, 13)  # a nested function's default: when g runs


@pytest.fixture
def mutmod(tmp_path, monkeypatch):
    """``tests.mutate`` with ``MODULE`` and its ``TESTS`` as the checkout it mutates."""
    from tests import mutate

    (tmp_path / "mutmod.py").write_text(MODULE)
    (tmp_path / "test_mutmod.py").write_text(TESTS)
    monkeypatch.setattr(mutate, "ROOT", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return mutate


def test_a_range_runs_only_those_mutants_and_restores_the_module(tmp_path, mutmod):
    mutate = mutmod
    assert mutate.parse_range("2-3") == (2, 3) and mutate.parse_range("101-") == (101, 0)
    for bad in ("3", "0-2", "5-4", "a-b"):
        with pytest.raises(argparse.ArgumentTypeError):
            mutate.parse_range(bad)
    every = mutants(tmp_path / "mutmod.py")
    row = mutate.run_module("mutmod.py", [str(tmp_path / "test_mutmod.py")], span=(2, 3))
    assert row["mutants"] == 2 and row["module"] == f"mutmod.py, mutants 2-3 of {len(every)}"
    assert (tmp_path / "mutmod.py").read_text() == MODULE and not (tmp_path / "mutmod.py.orig").exists()


def test_lines_run_only_the_mutants_on_those_lines(tmp_path, mutmod):
    mutate = mutmod
    assert mutate.parse_lines("7") == {7} and mutate.parse_lines("2,6-7") == {2, 6, 7}
    for bad in ("", "a", "3-", "0", "5-4", "2,,3"):
        with pytest.raises(argparse.ArgumentTypeError):
            mutate.parse_lines(bad)
    on_7 = [m for m in mutants(tmp_path / "mutmod.py") if m.line == 7]
    row = mutate.run_module("mutmod.py", [str(tmp_path / "test_mutmod.py")], lines=frozenset({7}))
    assert len(on_7) == 2 and row["mutants"] == 2 and row["module"].endswith("on lines 7")
    assert (tmp_path / "mutmod.py").read_text() == MODULE


def test_mutants_face_the_slow_tier_that_the_default_run_leaves_out(tmp_path):
    """A project whose default run deselects ``slow`` tests (as this one's pyproject.toml does): the only test that
    catches the mutant is slow, and it still kills it."""
    from tests.mutate import _pytest

    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\naddopts = "-m \'not slow\'"\nmarkers = ["slow: deselected by default"]\n'
    )
    module, tests = tmp_path / "mutmod.py", tmp_path / "test_mutmod.py"
    module.write_text("def double(x):\n    return 2 * x\n")
    tests.write_text(
        "import pytest\n\nimport mutmod\n\n\ndef test_fast():\n    assert callable(mutmod.double)\n\n\n"
        "@pytest.mark.slow\ndef test_slow():\n    assert mutmod.double(2) == 4\n"
    )
    assert _pytest([str(tests)], timeout=120)[0] == "survived"
    module.write_text("def double(x):\n    return 3 * x\n")
    assert _pytest([str(tests)], timeout=120)[0] == "killed"
