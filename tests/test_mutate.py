"""tests/mutate.py, the mutation-testing script: which mutants it makes of a small module, and what it leaves alone."""

from __future__ import annotations

import ast

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
