"""Mutation testing of the toolkit's own modules: does the test suite notice when the code is wrong?

``python -m tests.mutate models/split.py [models/trainer.py ...] [--tests tests/models/test_split.py ...]``

For each module, every mutant (one small change of the source: a comparison flipped, an arithmetic operator
swapped, a number or boolean constant changed, ``and``/``or`` exchanged, a call statement dropped, the first two
arguments of a call swapped) is written over the module in place, the matching tests are run (``pytest -x -q``
in a child forked from a process that imported torch and the other heavy dependencies once, with a time limit
of three times the unmutated run plus 30 s), and the original is put back.

Which tests: the unmutated run records, per test, the lines of the module it executes (``sys.settrace`` on
that file's frames only; the lines a fixture runs count for every test that requests the fixture), and a mutant
runs the tests that execute a line of its statement, plus every test that starts a subprocess (whose lines the
recording cannot see). A mutant on a line no test executes in the recording (a module constant, a ``def`` line:
run at import) runs every test of the modules. ``--all-tests`` turns the selection off.
A mutant is *killed* when the tests fail, *survives* when they pass, *timeout* when they exceed the limit (counted
as killed, as mutmut does). The score is killed / (killed + survived). Survivors are printed with their line, so
each can be read: a survivor is either a missing test or an *equivalent* mutant (one that changes nothing
observable, e.g. ``<`` for ``<=`` where the two sides are never equal).

Not part of CI (a module takes tens of minutes): run it in a clone of its own (it rewrites the modules of the
checkout it lives in, and a job running from that checkout meanwhile would import a mutant), and record the table
in ``docs/testing.md``. ``--list`` shows the mutants, numbered, without running anything; ``--range FIRST-LAST``
runs only those numbers, so that a long module (``models/trainer.py``: 417 mutants) can be measured in slices
across sessions; ``--lines 118,158-164`` runs only the mutants on those lines, to confirm that the survivors of
an earlier run (listed by line) are killed now, while the module is unchanged. The module is restored even when
the run is interrupted by Ctrl-C or SIGTERM (a ``finally`` block; a SIGKILL leaves ``<module>.orig`` beside it to
copy back).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS_FOR = {
    "models/trainer.py": [
        "tests/models/test_trainer.py",
        "tests/models/test_training_loop.py",
        "tests/models/test_cdae.py",  # CDAE's configuration checks live in TrainConfig.validate
        "tests/models/test_run_safety.py",  # the run folder's checks: resume, restart, stale temp files, locks
        "tests/models/test_precision.py",  # the precision a run records in config.json
    ],
    "models/vae.py": ["tests/models/test_vae.py", "tests/models/test_training_loop.py"],
    "models/recvae.py": ["tests/models/test_recvae.py", "tests/models/test_training_loop.py"],
    "models/pia.py": ["tests/models/test_trainer.py", "tests/models/test_training_loop.py"],
    "models/evaluation.py": ["tests/models/test_evaluation.py"],
    "models/split.py": ["tests/models/test_split.py"],
    "geometry/masking.py": ["tests/geometry/test_masking.py", "tests/geometry/test_masking_mutants.py"],
    "geometry/kl.py": ["tests/geometry/test_kl.py", "tests/geometry/test_kl_estimator.py"],
}
"""The test modules run against each module's mutants (default: ``tests/<package>/test_<module>.py``)."""
EVERY_TIER = ("-m", "slow or not slow")
"""Overrides the default ``-m 'not slow'`` of pyproject.toml, so the slow tier runs against every mutant too."""

_SWAP_COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}
_SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    line: int
    what: str
    source: str  # the whole mutated module
    span: tuple[int, int] = (0, 0)  # first and last line of the innermost statement holding the change


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines.update(range(value.lineno, (value.end_lineno or value.lineno) + 1))
    return lines


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside type annotations (mutating them changes nothing at run time)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            notes.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            notes.append(node.returns)
        for note in notes:
            skip.update(id(n) for n in ast.walk(note))
    return skip


def _edits(node: ast.AST) -> Iterator[tuple[str, object]]:
    """The mutations of one node: ``(description, apply)`` where ``apply()`` edits the node in place and returns
    a function that undoes the edit."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAP_COMPARE:
        old = node.ops[0]
        new = _SWAP_COMPARE[type(old)]()

        def flip(node=node, old=old, new=new):
            node.ops[0] = new
            return lambda: node.ops.__setitem__(0, old)

        yield f"{type(old).__name__} -> {type(new).__name__}", flip
    if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BINOP:
        old = node.op
        new = _SWAP_BINOP[type(old)]()

        def swap(node=node, old=old, new=new):
            node.op = new
            return lambda: setattr(node, "op", old)

        yield f"{type(old).__name__} -> {type(new).__name__}", swap
    if isinstance(node, ast.BoolOp):
        old = node.op
        new = ast.Or() if isinstance(old, ast.And) else ast.And()

        def boolop(node=node, old=old, new=new):
            node.op = new
            return lambda: setattr(node, "op", old)

        yield f"{type(old).__name__} -> {type(new).__name__}", boolop
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        old = node.value
        new = (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else old * 2 if old else 1.0)

        def const(node=node, old=old, new=new):
            node.value = new
            return lambda: setattr(node, "value", old)

        yield f"{old!r} -> {new!r}", const
    if isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args):

        def swap_args(node=node):
            node.args[0], node.args[1] = node.args[1], node.args[0]
            return lambda: node.args.__setitem__(slice(0, 2), [node.args[1], node.args[0]])

        yield "first two arguments swapped", swap_args


def _dropped_calls(tree: ast.Module) -> Iterator[tuple[tuple[int, int], str, object]]:
    """Statements that are a bare call (``x.append(y)``, ``f(x)``), replaced by ``pass``."""
    for parent in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(parent, name, None)
            if not isinstance(block, list):
                continue
            for i, stmt in enumerate(block):
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):

                    def drop(block=block, i=i, stmt=stmt):
                        block[i] = ast.copy_location(ast.Pass(), stmt)
                        return lambda: block.__setitem__(i, stmt)

                    yield (stmt.lineno, stmt.end_lineno or stmt.lineno), "call dropped", drop


_HEADERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _header_ids(node: ast.AST) -> set[int]:
    """The parts of a ``def`` or ``class`` statement evaluated when the statement itself runs (decorators, default
    values, bases, keywords), not when its body does."""
    if not isinstance(node, _HEADERS):
        return set()
    parts = [*node.decorator_list, *getattr(node, "bases", []), *getattr(node, "keywords", [])]
    if not isinstance(node, ast.ClassDef):
        parts.append(node.args)
    return {id(part) for part in parts}


def _statement_spans(tree: ast.Module) -> dict[int, tuple[int, int]]:
    """``id(node) -> (first, last line)`` of the innermost statement that holds the node; ``(0, 0)`` (no line:
    every test) for module-level code.

    A ``def`` or ``class`` header (``@dataclass(frozen=True)``, a default value) belongs to the statement around
    the definition, which runs it, not to the definition's own lines: the tests that call a method of a module-level
    class do not cover its decorator, since a test that only meets the decorator's effect (assigning to a frozen
    instance goes through generated code) executes no line of the class."""
    spans: dict[int, tuple[int, int]] = {}

    def visit(node: ast.AST, outer: tuple[int, int]) -> None:
        span = (node.lineno, node.end_lineno or node.lineno) if isinstance(node, ast.stmt) else outer
        spans[id(node)] = span
        header = _header_ids(node)
        for child in ast.iter_child_nodes(node):
            visit(child, outer if id(child) in header else span)

    visit(tree, (0, 0))
    return spans


def mutants(path: Path) -> list[Mutant]:
    """Every mutant of the module at ``path`` (docstrings, annotations and strings are left alone)."""
    source = path.read_text()
    tree = ast.parse(source)
    skip_lines, skip_nodes = _docstring_lines(tree), _annotation_nodes(tree)
    spans = _statement_spans(tree)
    found: list[Mutant] = []

    def emit(line: int, what: str, apply, span: tuple[int, int]) -> None:
        undo = apply()
        try:
            mutated = ast.unparse(tree)
        finally:
            undo()
        found.append(Mutant(line, what, mutated, span))

    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if line is None or line in skip_lines or id(node) in skip_nodes:
            continue
        for what, apply in _edits(node):
            emit(line, what, apply, spans[id(node)])
    for span, what, apply in _dropped_calls(tree):
        if span[0] not in skip_lines:
            emit(span[0], what, apply, span)
    return sorted(found, key=lambda m: (m.line, m.what))


HEAVY = ("torch", "numpy", "scipy.sparse", "scipy.stats", "pandas", "sklearn", "matplotlib.pyplot", "hypothesis")
"""Third-party modules imported once in the parent (:func:`_preload`), so that each mutant's test run, forked from
it, starts in about a second instead of re-importing them (the toolkit's own modules are never imported there:
each child imports the mutated file afresh)."""


def _preload() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in HEAVY:
        importlib.import_module(name)


class LineRecorder:
    """A pytest plugin that records, per test, the lines of one source file the test executes.

    ``lines[nodeid]`` holds the lines run in the test's own setup, call and teardown plus those of every fixture
    in its closure (a module-scoped fixture runs once, inside the first test that asks for it, and its lines
    matter to all of them); ``spawns`` the tests that started a subprocess.
    """

    def __init__(self, target: Path) -> None:
        self.target = str(target)
        self.lines: dict[str, set[int]] = {}
        self.fixtures: dict[str, set[int]] = {}
        self.spawns: set[str] = set()
        self._sinks: list[set[int]] = []
        self._test: str | None = None

    def _global(self, frame, event, arg):
        # called on every new frame: only the target file's frames are traced line by line
        return self._local if frame.f_code.co_filename == self.target else None

    def _local(self, frame, event, arg):
        if event == "line" and self._sinks:
            self._sinks[-1].add(frame.f_lineno)
        return self._local

    # where a child process starts: subprocess's Popen, and multiprocessing's (every start method; what
    # torch.multiprocessing.spawn uses): a child's lines run where no trace of this process sees them
    _STARTS = (("subprocess", "Popen", "_execute_child"), ("multiprocessing.process", "BaseProcess", "start"))

    def __enter__(self) -> LineRecorder:
        import threading

        self._originals = []
        recorder = self
        for module, owner, name in self._STARTS:
            cls = getattr(importlib.import_module(module), owner)
            original = getattr(cls, name)
            self._originals.append((cls, name, original))

            def start(*args, _original=original, **kwargs):
                if recorder._test is not None:
                    recorder.spawns.add(recorder._test)
                return _original(*args, **kwargs)

            setattr(cls, name, start)
        threading.settrace(self._global)
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        import threading

        sys.settrace(None)
        threading.settrace(None)
        for cls, name, original in self._originals:
            setattr(cls, name, original)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self._test = item.nodeid
        self._sinks.append(set())
        yield
        own = self._sinks.pop()
        for name in getattr(item, "fixturenames", ()):
            own |= self.fixtures.get(name, set())
        self.lines[item.nodeid] = own
        self._test = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        self._sinks.append(set())
        yield
        self.fixtures.setdefault(fixturedef.argname, set()).update(self._sinks.pop())


@dataclass
class Coverage:
    """What :class:`LineRecorder` saw in the unmutated run: ``tests_for`` picks a mutant's tests."""

    lines: dict[str, set[int]]
    spawns: set[str]

    def tests_for(self, span: tuple[int, int], every: list[str]) -> list[str]:
        """The tests that execute a line of ``span`` and those that start subprocesses, in collection order;
        ``every`` (all the test modules) when no test executes a line of it."""
        first, last = span
        hit = [t for t, lines in self.lines.items() if any(first <= n <= last for n in lines)]
        if not hit:
            return every
        return [t for t in self.lines if t in self.spawns or t in hit]


def _pytest(tests: list[str], timeout: float, record: Path | None = None) -> tuple[str, float, Coverage | None]:
    """Run ``pytest -x -q tests`` in a child forked from this process; ``(outcome, seconds, coverage)``, the
    coverage of the module at ``record`` when given (then without ``-x``: every test is recorded)."""
    import json
    import tempfile

    start = time.perf_counter()
    report = Path(tempfile.mkstemp(prefix="mutate-", suffix=".json")[1])
    pid = os.fork()
    if pid == 0:  # the child: this checkout's modules, imported afresh, no output, no .pyc written
        code = 3
        try:
            # a mutant of the same size written in the same second as the previous one would otherwise be served
            # the previous one's bytecode (pyc files key on mtime and size)
            sys.dont_write_bytecode = True
            # and the same for the processes the tests start (a CLI run, a killed trainer): this checkout first
            os.environ.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
            os.chdir(ROOT)
            sys.path.insert(0, str(ROOT))
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            # every tier: a mutant must face the slow tests too (the default run deselects them)
            if record is None:
                code = int(pytest.main(["-x", "-q", *EVERY_TIER, *tests]))
            else:
                with LineRecorder(record) as recorder:
                    code = int(pytest.main(["-q", *EVERY_TIER, *tests], plugins=[recorder]))
                lines = {t: sorted(n) for t, n in recorder.lines.items()}
                report.write_text(json.dumps({"lines": lines, "spawns": sorted(recorder.spawns)}))
        finally:
            os._exit(code)
    deadline = start + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                coverage = None
                if record is not None and code == 0:
                    doc = json.loads(report.read_text())
                    coverage = Coverage({t: set(n) for t, n in doc["lines"].items()}, set(doc["spawns"]))
                return ("survived" if code == 0 else "killed"), time.perf_counter() - start, coverage
            if time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout", time.perf_counter() - start, None
            time.sleep(0.05)
    except BaseException:  # interrupted: the child goes too, before the module is put back
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        report.unlink(missing_ok=True)


def parse_range(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` (1-based, inclusive; ``FIRST-`` runs to the end) -> (first, last or 0)."""
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last) if last else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST such as 1-100 or 101-, got {text!r}") from None
    if not sep or lo < 1 or (hi and hi < lo):
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST with 1 <= FIRST <= LAST, got {text!r}")
    return lo, hi


def parse_lines(text: str) -> frozenset[int]:
    """``118,158-164`` -> the line numbers 118 and 158 to 164 (inclusive)."""
    lines: set[int] = set()
    for part in text.split(","):
        try:
            lo, hi = parse_range(part if "-" in part else f"{part}-{part}")
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected line numbers such as 118,158-164, got {text!r}") from None
        if not hi:
            raise argparse.ArgumentTypeError(f"a line range needs its last line, got {part!r} in {text!r}")
        lines.update(range(lo, hi + 1))
    return frozenset(lines)


def run_module(
    module: str,
    tests: list[str],
    select: bool = True,
    span: tuple[int, int] = (1, 0),
    lines: frozenset[int] | None = None,
) -> dict:
    """Mutate ``module`` and run ``tests`` against each mutant numbered within ``span`` (1-based, inclusive; 0 as
    the end: all), so that a long module can be measured in slices across sessions; with ``lines``, only the
    mutants on one of those lines."""
    path = ROOT / module
    every = mutants(path)
    first, last = span[0], span[1] or len(every)
    numbered = [(k, m) for k, m in enumerate(every, 1) if first <= k <= last and (lines is None or m.line in lines)]
    on = "" if lines is None else f" on lines {','.join(map(str, sorted(lines)))} ({len(numbered)} mutants)"
    print(f"{module}: {len(every)} mutants, running {first}-{last}{on}, tests {' '.join(tests)}", file=sys.stderr)
    status, base, coverage = _pytest(tests, timeout=3600, record=path if select else None)
    if status != "survived":
        raise SystemExit(f"error: the tests of {module} do not pass unmutated ({status}); fix them first")
    limit = 3 * base + 30
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    results: list[tuple[Mutant, str]] = []
    try:
        for k, m in numbered:
            chosen = coverage.tests_for(m.span, tests) if coverage is not None else tests
            path.write_text(m.source)
            outcome, seconds, _ = _pytest(chosen, limit)
            results.append((m, outcome))
            print(
                f"  [{k}/{len(every)}] line {m.line}: {m.what}: {outcome} ({seconds:.0f} s, "
                f"{'all tests' if chosen is tests else f'{len(chosen)} tests'})",
                file=sys.stderr,
            )
    finally:
        shutil.copy2(backup, path)
        backup.unlink()
    killed = sum(o in ("killed", "timeout") for _, o in results)
    survivors = [(m.line, m.what) for m, o in results if o == "survived"]
    score = killed / len(results) if results else float("nan")
    shown = module if (first, last) == (1, len(every)) else f"{module}, mutants {first}-{last} of {len(every)}"
    if lines is not None:
        shown += f", on lines {','.join(map(str, sorted(lines)))}"
    return {"module": shown, "mutants": len(results), "killed": killed, "score": score, "survivors": survivors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutate", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+", help="modules to mutate, e.g. models/split.py")
    parser.add_argument("--tests", nargs="+", help="test modules to run (default: TESTS_FOR, else the namesake)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument(
        "--all-tests", action="store_true", help="run every test of the modules on every mutant (no selection)"
    )
    parser.add_argument(
        "--range",
        type=parse_range,
        default=(1, 0),
        metavar="FIRST-LAST",
        help="run only the mutants numbered FIRST to LAST (1-based, as --list and the log number them; '101-': to "
        "the end), to measure a long module in slices",
    )
    parser.add_argument(
        "--lines",
        type=parse_lines,
        metavar="LINES",
        help="run only the mutants on these lines (e.g. 118,158-164), as the log lists survivors: the "
        "survivors of an earlier run, listed by line, while the module is unchanged",
    )
    args = parser.parse_args(argv)
    rows = []
    if not args.list:
        _preload()
        # SIGTERM (kill, a session ending) unwinds like Ctrl-C, so the finally block puts the module back
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for module in args.modules:
        if not (ROOT / module).is_file():
            parser.error(f"{module}: no such module under {ROOT}")
        if args.list:
            for k, m in enumerate(mutants(ROOT / module), 1):
                print(f"{k}: {module}:{m.line}: {m.what}")
            continue
        package, name = Path(module).parent.name, Path(module).stem
        tests = args.tests or TESTS_FOR.get(module, [f"tests/{package}/test_{name}.py"])
        rows.append(run_module(module, tests, select=not args.all_tests, span=args.range, lines=args.lines))
    if rows:
        print("| module | mutants | killed | score | survivors (line: mutation) |\n|---|---:|---:|---:|---|")
        for r in rows:
            gone = "; ".join(f"{line}: {what}" for line, what in r["survivors"]) or "none"
            print(f"| `{r['module']}` | {r['mutants']} | {r['killed']} | {r['score']:.0%} | {gone} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
