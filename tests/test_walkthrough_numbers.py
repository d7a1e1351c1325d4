"""Every result number of docs/walkthrough.md is traceable to a key of a committed JSON file (issue 10).

Annotations (HTML comments, invisible once rendered)
----------------------------------------------------
* ``<!-- numbers: docs/paper-ml1m/kl_budget/summary.json -->`` sets the *current file* for what follows.
* ``0.632<!-- #table[stratum=near]/p_expansion_masked -->`` annotates the number written immediately before
  the comment (no space) with a key of the current file; ``<!-- docs/x.json#key -->`` names the file itself.
* A key path is a ``/``-separated list of dictionary keys (spaces allowed: ``summary[...]/no PIA``). A segment
  may carry selectors for lists: ``[3]`` (index) or ``[field=value,field2=value2]`` (the one record whose
  fields equal those values; quote a value with ``"`` if it holds ``,`` or ``]``; numbers compare as numbers;
  quote a whole key that holds brackets: ``groups/"[100+]"/n``).
  A selector that matches no record, or several, is an error. ``*`` takes every value of a dictionary or list;
  the written number must then equal each of them (``lipschitz/violations/*``: 0 violations of every kind).
* A table is annotated by one comment just before it (it may span lines)::

      <!-- table row: [path.json]#<prefix> cols: c1 | c2 | ... -->      (or rows: p1 ; p2 ; ... one per row)

  with one column spec per column: ``-`` (nothing to check there), or a key path appended to the row prefix,
  or ``a ± b`` for a cell written ``x ± y``. ``$N`` is replaced by cell N of the row (1-based; its first
  inline-code span if it has one, else its text). Cells used as ``$N`` select the record, so their numbers
  are checked by the match.

The check
---------
The written number must equal the JSON value rounded at its last written digit (0.632 for 0.63196 passes,
0.61 fails; an integer such as 1999000 must be exact): ``|written - value| <= 0.5 * 10**exponent``. Every
annotated file must be committed (``git ls-files``; without git: exists and is not under ``out/``).

Every other number of the prose and tables, outside fenced code, inline code and headings, must fit one of these
rules of non-result numbers:

1. names and ranges: digits that are part of a word or name (ML-1M, W1, NDCG@100, q0.5, 10-NN, 2-core,
   15-epoch, 10⁻³), of a range ``a-b`` or of a user-group label such as ``[100+]``;
2. integers up to 20: counts, small parameters (k = 10, 5 draws, at least 3 shared), equation constants;
3. cross-references: the number of a section of this document, or one after Theorem, Lemma, Proposition,
   Result or section;
4. percentages (``95%`` intervals, ``top 10%``, a ``5%`` criterion): levels and thresholds, not results;
5. parameter phrases: a number right after ``ρ``, ``β``, ``β cap(s)``, ``λ_A``, ``η``, ``k``, ``K`` or ``lr``,
   with an optional ``=``, ``<``, ``∈ {...}``; and the configuration phrases ``N units``, ``N epochs``,
   ``latent dimension N``, ``batch N``;
6. cohort names: a number after ``≈`` (the ≈5, ≈50, ≈350 cohorts of the paper);
7. the year of a citation: four digits after an upper-case venue (``ICLR 2026``).

The whole walkthrough is checked: sections 2, 4.1 and 4.2 read the synthetic ``--quick`` run committed in
``docs/paper-synthetic`` (report, figures and every job's JSON), the other sections ``docs/paper-ml1m``. Both
committed reports must be what their JSON files render to (a test of this module re-renders them), so the
walkthrough, the reports and the JSON files cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
PUBLISHED_JSON = ROOT / "docs" / "paper-published.json"
REPORT_FOLDERS = ("paper-ml1m", "paper-synthetic")  # committed paper_figures runs under docs/

# ----------------------------------------------------------------------------------------------- key paths


class KeyPathError(LookupError):
    """A key path that does not lead to a number of the JSON document."""


SEGMENT = re.compile(r"([^\[\]/]*)((?:\[(?:[^\]\"]|\"[^\"]*\")*\])*)")
SELECTOR = re.compile(r"\[((?:[^\]\"]|\"[^\"]*\")*)\]")


def split_path(path: str) -> list[str]:
    """Split at ``/`` outside selectors and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in path:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "[":
            depth += 1
        elif not quoted and char == "]":
            depth -= 1
        if char == "/" and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _conditions(text: str) -> list[tuple[str, str]]:
    out, field, quoted, current = [], None, False, ""
    for char in text + ",":
        if char == '"':
            quoted = not quoted
        elif char == "=" and not quoted and field is None:
            field, current = current.strip(), ""
        elif char == "," and not quoted:
            if field is None:
                raise KeyPathError(f"selector [{text}]: expected field=value")
            out.append((field, current.strip()))
            field, current = None, ""
        else:
            current += char
    return out


def _equal(value: Any, text: str) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == value
        except ValueError:
            return False
    return str(value) == text


def _select(node: Any, selector: str, where: str) -> Any:
    if not isinstance(node, list):
        raise KeyPathError(f"{where}: [{selector}] needs a list, found {type(node).__name__}")
    if re.fullmatch(r"-?\d+", selector.strip()):
        index = int(selector)
        if not -len(node) <= index < len(node):
            raise KeyPathError(f"{where}: index [{index}] outside a list of {len(node)}")
        return node[index]
    conditions = _conditions(selector)
    hits = [r for r in node if isinstance(r, dict) and all(f in r and _equal(r[f], v) for f, v in conditions)]
    if len(hits) != 1:
        what = "no record" if not hits else f"{len(hits)} records"
        raise KeyPathError(f"{where}: selector [{selector}] matches {what} (it must match exactly one)")
    return hits[0]


def resolve(document: Any, path: str) -> list[Any]:
    """The values at ``path`` (one, or several when a segment is ``*``)."""
    nodes = [document]
    done = ""
    for segment in split_path(path):
        quoted = re.fullmatch(r'"([^"]*)"((?:\[.*\])*)', segment)  # a key holding [ ] or /: "[100+]"
        match = quoted or SEGMENT.fullmatch(segment)
        if match is None:
            raise KeyPathError(f"{path}: cannot parse segment {segment!r}")
        name, selectors = match.group(1).strip(), SELECTOR.findall(match.group(2))
        done = f"{done}/{segment}" if done else segment
        following = []
        for node in nodes:
            if name == "*":
                following += list(node.values()) if isinstance(node, dict) else list(node)
            elif name:
                if not isinstance(node, dict) or name not in node:
                    raise KeyPathError(f"{done}: no key {name!r}")
                following.append(node[name])
            else:
                following.append(node)
        for selector in selectors:
            following = [_select(node, selector, done) for node in following]
        nodes = following
    if not nodes:
        raise KeyPathError(f"{path}: '*' found nothing")
    return nodes


def resolve_number(document: Any, path: str) -> list[float]:
    values = resolve(document, path)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KeyPathError(f"{path}: {value!r} is not a number")
    return values


# ------------------------------------------------------------------------------------------- numbers

NUMBER = re.compile(
    r"(?<![\w.@/^\-−+])([−+]?)(\d+(?:\.\d+)?(?:e[+−-]?\d+)?)(?![\w⁰¹²³⁴⁵⁶⁷⁸⁹⁻]|\.\d|-[\w\d])", re.UNICODE
)


def as_decimal(sign: str, digits: str) -> Decimal:
    return Decimal(("-" if sign == "−" else "") + digits.replace("−", "-"))


def agrees(written: Decimal, value: float) -> bool:
    """``written`` is ``value`` rounded at written's last digit (exact ties accept either neighbour)."""
    exponent = written.as_tuple().exponent
    assert isinstance(exponent, int)
    return abs(written - Decimal(value)) <= Decimal(5) * Decimal(10) ** (exponent - 1)


# ---------------------------------------------------------------------------------- allowlist rules

SECTION_WORD = re.compile(r"(?:Theorem|Lemma|Proposition|Result|[Ss]ections?)\s+(?:[\d.]+(?:,\s*|\s+and\s+))*$")
PARAMETER = re.compile(r"(?:ρ|β(?: caps?)?|λ_A|η|\bk|\bK|\blr)\s*(?:[=<≤]\s*)?(?:∈\s*\{(?:[\d.]+,\s*)*)?$")
CONFIG_BEFORE = re.compile(r"(?:latent dimension|batch)\s+$")
CONFIG_AFTER = re.compile(r"^\s+(?:units|epochs)\b")
GROUP_LABEL = re.compile(r"\[\d+(?:-\d+|\+)\]")


def allowed(line: str, match: re.Match[str], sections: set[str], previous: str = "") -> str | None:
    """The rule (1-7 of the module docstring) that lets an unannotated number stand, or None.

    ``previous`` is the end of the preceding line of the paragraph, for a phrase broken across lines."""
    token = match.group(2)
    before, after = " ".join((previous + " " + line[: match.start()]).split()[-12:]), line[match.end() :]
    if line[: match.start()].endswith(" "):
        before += " "
    if re.fullmatch(r"\d+", token) and int(token) <= 20:
        return "small integer"
    if token in sections or SECTION_WORD.search(before):
        return "cross-reference"
    if after.startswith("%"):
        return "percentage"
    if PARAMETER.search(before) or CONFIG_BEFORE.search(before) or CONFIG_AFTER.match(after):
        return "parameter"
    if before.endswith("≈"):
        return "cohort name"
    if re.fullmatch(r"(19|20)\d\d", token) and re.search(r"\b[A-Z]{3,}\s$", before):
        return "year"
    return None


# ------------------------------------------------------------------------------------------ the parser

COMMENT = re.compile(r"<!--(.*?)-->", re.S)
INLINE = re.compile(r"^\s*([^\s#]*)#(.+?)\s*$", re.S)
CODE_SPAN = re.compile(r"`[^`]*`")


@dataclass
class Finding:
    line: int
    section: str
    text: str
    problem: str


@dataclass
class Report:
    checked: int = 0
    selector_cells: int = 0
    allowed: dict[str, int] | None = None
    errors: list[Finding] | None = None
    unannotated: list[Finding] | None = None


@cache
def committed_files() -> frozenset[str] | None:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return frozenset(out.splitlines())


@cache
def load(path: str) -> Any:
    committed = committed_files()
    if path.startswith("out/") or (committed is not None and path not in committed):
        raise KeyPathError(f"{path} is not a committed file")
    if not (ROOT / path).is_file():
        raise KeyPathError(f"{path} does not exist")
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def blank_code(text: str) -> str:
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)


def check(text: str) -> Report:
    """Check every annotation of ``text`` (a walkthrough) and list the numbers that have none."""
    report = Report(allowed={}, errors=[], unannotated=[])
    assert report.allowed is not None and report.errors is not None and report.unannotated is not None
    lines = text.splitlines()
    sections = set(re.findall(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", text, re.M))
    state: dict[str, Any] = {"file": None, "section": "", "table": None, "previous": ""}

    def error(n: int, snippet: str, problem: str) -> None:
        report.errors.append(Finding(n, state["section"], snippet, problem))

    def verify(n: int, path_text: str, written: Decimal, snippet: str) -> None:
        file, _, key = path_text.partition("#") if "#" in path_text else ("", "", path_text)
        file = file.strip() or state["file"]
        if not file:
            error(n, snippet, "no file: add <!-- numbers: docs/....json --> or name it before '#'")
            return
        try:
            values = resolve_number(load(file), key.strip())
        except KeyPathError as exc:
            error(n, snippet, f"{file}#{key.strip()}: {exc}")
            return
        report.checked += 1
        for value in values:
            if not agrees(written, value):
                error(n, snippet, f"written {written}, but {file}#{key.strip()} is {value!r}")

    def free_numbers(n: int, line: str, previous: str = "") -> None:
        """Numbers with no annotation: each must fit an allowlist rule (in the checked sections)."""
        line = GROUP_LABEL.sub(lambda m: " " * len(m.group(0)), line)
        for match in NUMBER.finditer(line):
            rule = allowed(line, match, sections, previous)
            if rule is not None:
                report.allowed[rule] = report.allowed.get(rule, 0) + 1
            else:
                start = max(0, match.start() - 30)
                report.unannotated.append(Finding(n, state["section"], line[start : match.end() + 30], "unannotated"))

    def table_row(n: int, raw: str, spec: dict[str, Any], body_index: int) -> None:
        cells = [c.strip() for c in raw.strip().strip("|").split("|")]
        cols: list[str] = spec["cols"]
        if len(cols) != len(cells):
            error(n, raw[:60], f"table annotation has {len(cols)} columns, the row {len(cells)}")
            return
        if spec["rows"] is not None:
            if body_index >= len(spec["rows"]):
                error(n, raw[:60], "more table rows than 'rows:' entries")
                return
            prefix = spec["rows"][body_index]
        else:
            prefix = spec["row"]

        def substitute(template: str) -> str:
            def cell(m: re.Match[str]) -> str:
                content = cells[int(m.group(1)) - 1]
                code = CODE_SPAN.search(content)
                return code.group(0).strip("`") if code else content.replace("*", "")

            return re.sub(r"\$(\d+)", cell, template)

        used = {int(i) - 1 for i in re.findall(r"\$(\d+)", prefix + " ".join(cols))}
        for i, (col, content) in enumerate(zip(cols, cells, strict=True)):
            if i in used:
                report.selector_cells += 1
                continue
            if col == "-":
                prose(n, content)
                continue
            file, _, key_prefix = prefix.partition("#") if "#" in prefix else ("", "", prefix)
            keys = []
            for part in col.split("±"):
                part = part.strip()
                joined = key_prefix + (part if part.startswith("[") or not key_prefix else "/" + part)
                keys.append((file + "#" if file else "") + substitute(joined))
            found = list(NUMBER.finditer(GROUP_LABEL.sub("", blank_code(content))))
            if len(found) != len(keys):
                error(n, content, f"{len(found)} numbers in the cell, {len(keys)} keys in the column spec")
                continue
            for match, key in zip(found, keys, strict=True):
                verify(n, key, as_decimal(match.group(1), match.group(2)), content)

    def prose(n: int, line: str, previous: str = "") -> None:
        """Directives, inline annotations and free numbers of a line of prose (or of a '-' table cell)."""
        code_free = blank_code(line)
        rest, last = "", 0
        for comment in COMMENT.finditer(code_free):
            body = comment.group(1).strip()
            before = code_free[last : comment.start()]
            if body.startswith("numbers:"):
                state["file"] = body.removeprefix("numbers:").strip()
            elif body.startswith("table"):
                spec = parse_table(body)
                if spec is None:
                    error(n, body[:60], "cannot parse the table annotation")
                state["table"] = spec
            elif INLINE.match(body):
                numbers = list(NUMBER.finditer(before))
                if not numbers or numbers[-1].end() != len(before):
                    error(n, before[-30:], "an annotation must follow its number directly")
                else:
                    m = numbers[-1]
                    verify(n, body, as_decimal(m.group(1), m.group(2)), before[-30:])
                    before = before[: m.start()] + " " * len(m.group(0))
            else:
                error(n, body[:60], "unknown comment (not an annotation)")
            rest += before + " " * len(comment.group(0))
            last = comment.end()
        free_numbers(n, rest + code_free[last:], previous)

    fenced, pending, table_body = False, "", -1
    for n, raw in enumerate(lines, start=1):
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if pending:  # inside a comment that spans lines
            pending += "\n" + raw
            if "-->" not in raw:
                continue
            line, pending = pending, ""
        elif "<!--" in raw and "-->" not in raw.split("<!--", 1)[1]:
            pending = raw
            continue
        else:
            line = raw
        heading = re.match(r"^#{1,4}\s+(\d+(?:\.\d+)*|\S+)", line)
        if heading:
            state["section"] = heading.group(1)
            continue
        if line.startswith("|") and state["table"] is not None:
            spec = state["table"]
            if table_body >= 0:
                table_row(n, line, spec, table_body)
                table_body += 1
            elif re.fullmatch(r"\|[\s|:-]+\|?", line.strip()):
                table_body = 0
            else:
                prose(n, line)  # the header row
            continue
        if state["table"] is not None and table_body >= 0:
            rows = state["table"]["rows"]
            if rows is not None and table_body != len(rows):
                error(n, "", f"table has {table_body} rows, its 'rows:' {len(rows)}")
            state["table"], table_body = None, -1
        elif state["table"] is not None and line.strip():
            error(n, line[:60], "a table annotation not followed by a table")
            state["table"] = None
        prose(n, line, state["previous"])
        state["previous"] = COMMENT.sub(" ", blank_code(line)) if line.strip() else ""
    return report


def parse_table(body: str) -> dict[str, Any] | None:
    flat = " ".join(body.split())
    m = re.fullmatch(r"table\s+(?:row:\s*(?P<row>.*?)|rows:\s*(?P<rows>.*?))\s+cols:\s*(?P<cols>.*)", flat)
    if m is None:
        return None
    rows = None if m.group("rows") is None else [r.strip() for r in m.group("rows").split(";")]
    row = (m.group("row") or "").strip()
    if row.startswith("#"):
        row = row[1:]
    rows = None if rows is None else [r[1:] if r.startswith("#") else r for r in rows]
    return {"row": row, "rows": rows, "cols": [c.strip() for c in m.group("cols").split("|")]}


def format_findings(findings: list[Finding]) -> str:
    return "\n".join(f"  line {f.line} (section {f.section}): {f.problem}: {f.text!r}" for f in findings)


# ---------------------------------------------------------------------------------------- the tests


def test_every_annotation_of_the_walkthrough_resolves_and_agrees():
    report = check(WALKTHROUGH.read_text(encoding="utf-8"))
    assert not report.errors, "walkthrough annotations that fail:\n" + format_findings(report.errors)
    assert report.checked > 600  # the whole walkthrough, synthetic sections included


def test_every_number_of_the_checked_sections_is_annotated_or_allowlisted():
    report = check(WALKTHROUGH.read_text(encoding="utf-8"))
    assert not report.unannotated, (
        "numbers with no annotation and no allowlist rule (see this module's docstring):\n"
        + format_findings(report.unannotated)
    )


def test_editing_an_annotated_number_is_caught():
    """Mutation check: change one annotated number of the real walkthrough in memory; the checker reports it."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    target = "0.632<!-- #table[stratum=near]/p_expansion_masked -->"
    assert target in text
    report = check(text.replace(target, target.replace("0.632", "0.61"), 1))
    assert any("written 0.61" in e.problem for e in report.errors), format_findings(report.errors or [])
    # a table cell too: the near stratum's Pr[D' ≥ δ_m] in the table of 3.1
    row = next(line for line in text.splitlines() if line.startswith("| near | 2000 |"))
    mutated = check(text.replace(row, row.replace("| 0.632 |", "| 0.633 |"), 1))
    assert any("written 0.633" in e.problem for e in mutated.errors or [])
    # and a number whose annotation is dropped no longer counts as traced
    dropped = check(text.replace(target, "0.632", 1))
    assert any("0.632" in f.text for f in dropped.unannotated or [])


def test_editing_a_synthetic_number_is_caught():
    """The synthetic sections are checked too: a prose number, a table cell and a dropped annotation of section 2.2."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    target = "0.3149<!-- #table[stratum=planted]/p_contraction -->"
    assert target in text
    report = check(text.replace(target, target.replace("0.3149", "0.32", 1), 1))
    assert any("written 0.32," in e.problem for e in report.errors or []), format_findings(report.errors or [])
    row = next(line for line in text.splitlines() if line.startswith("| planted | 120 |"))
    mutated = check(text.replace(row, row.replace("| 0.3149 |", "| 0.3148 |"), 1))
    assert any("written 0.3148," in e.problem for e in mutated.errors or [])
    dropped = check(text.replace(target, "0.3149", 1))
    assert any("0.3149" in f.text and f.section == "2.2" for f in dropped.unannotated or [])


@pytest.mark.parametrize("name", REPORT_FOLDERS)
def test_the_committed_report_tables_are_what_its_json_renders_to(name: str):
    """docs/<name>/report.md re-rendered from the committed JSON has the committed tables, number for number, and
    every figure the run lists is committed with it."""
    from analyses.paper_figures import JOBS, JobResult, render_report

    folder = ROOT / "docs" / name
    manifest = json.loads((folder / "paper_figures.json").read_text(encoding="utf-8"))
    results = []
    for job in manifest["jobs"]:
        assert job["status"] == "ok", job["name"]
        results.append(
            JobResult(
                name=job["name"],
                command=job["command"],
                out=folder / job["out"],
                status=job["status"],
                exit_code=job["exit_code"],
                seconds=job["seconds"],
                doc=json.loads((folder / job["json"]).read_text(encoding="utf-8")),
                figures=[Path(f).stem for f in job["figures"]],
            )
        )
        for figure in job["figures"]:
            assert (folder / figure).is_file(), figure
    assert [r.name for r in results] == list(JOBS)  # every job of the toolkit is in the committed run
    header = {
        "command": manifest["command"],
        "dataset": manifest["dataset"],
        "seed": str(manifest["seed"]),
        "quick": "yes" if manifest["quick"] else "no",
        "seconds": f"{manifest['total_seconds']:.1f}",
    }

    def numbers(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(("|", "- "))]

    rendered = numbers(render_report(results, header))
    committed = numbers((folder / "report.md").read_text(encoding="utf-8"))
    assert len(committed) > 60
    assert rendered == committed


def test_the_synthetic_folder_is_the_quick_synthetic_run_the_walkthrough_reads():
    """docs/paper-synthetic is a --quick synthetic run, and the walkthrough reads every model job's JSON of it (the
    results table of ``reproduce`` is not quoted)."""
    manifest = json.loads((ROOT / "docs" / "paper-synthetic" / "paper_figures.json").read_text(encoding="utf-8"))
    assert (manifest["dataset"], manifest["seed"], manifest["quick"]) == ("synthetic", 0, True)
    text = WALKTHROUGH.read_text(encoding="utf-8")
    annotated = set(re.findall(r"docs/paper-synthetic/[\w/.-]+\.json", text))
    assert {f"docs/paper-synthetic/{j['json']}" for j in manifest["jobs"] if j["name"] != "reproduce"} <= annotated


PUBLISHED_COMMAND = 'python -c "from tests.test_walkthrough_numbers import write_published; write_published()"'


def published_document() -> dict[str, Any]:
    """The paper's published metrics as analyses.results transcribes them (docs/paper-published.json)."""
    from analyses import results

    return {
        "command": PUBLISHED_COMMAND,
        "note": "the paper's published test metrics, transcribed in analyses/results.py; no training, no data",
        "source": results.PUBLISHED_SOURCE,
        "published": results.PUBLISHED,
        "baselines": results.PUBLISHED_BASELINES,
        "baselines_source": results.PUBLISHED_BASELINES_SOURCE,
        "groups": results.PUBLISHED_GROUPS,
        "ablation": results.PUBLISHED_ABLATION,
    }


def write_published() -> None:
    text = json.dumps(published_document(), indent=2, ensure_ascii=False)
    PUBLISHED_JSON.write_text(text + "\n", encoding="utf-8")


def test_the_published_numbers_file_is_what_analyses_results_holds():
    """docs/paper-published.json is written from analyses.results (the paper's tables); it must not drift."""
    assert json.loads(PUBLISHED_JSON.read_text(encoding="utf-8")) == published_document()


# ------------------------------------------------------------------------------- the resolver's own tests

DOC = {
    "table": [
        {"stratum": "near", "rho": 0.5, "p": 0.63196},
        {"stratum": "far", "rho": 0.5, "p": 0.3007},
        {"stratum": "far", "rho": 1.0, "p": 0.2},
        {"stratum": "[100+]", "rho": 1.0, "p": 0.1},
    ],
    "nested": {"a b": {"x": 1, "y": 0}, "flag": True, "name": "n", "[100+]": {"n": 186}},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("table[0]/p", [0.63196]),
        ("table[-1]/p", [0.1]),
        ("table[stratum=near]/p", [0.63196]),
        ("table[stratum=far,rho=1]/p", [0.2]),
        ('table[stratum="[100+]"]/p', [0.1]),
        ("nested/a b/x", [1]),
        ("nested/a b/*", [1, 0]),
        ('nested/"[100+]"/n', [186]),
    ],
)
def test_resolve_finds_the_value(path: str, expected: list[float]):
    assert resolve_number(DOC, path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("table[stratum=none]/p", "matches no record"),
        ("table[stratum=far]/p", "matches 2 records"),
        ("table[9]/p", "outside a list of 4"),
        ("nested/missing", "no key 'missing'"),
        ("nested[0]", "needs a list"),
        ("nested/flag", "not a number"),
        ("nested/name", "not a number"),
        ("table[stratum]/p", "expected field=value"),
    ],
)
def test_resolve_fails_clearly(path: str, message: str):
    with pytest.raises(KeyPathError, match=re.escape(message)):
        resolve_number(DOC, path)


@pytest.mark.parametrize(
    ("written", "value", "ok"),
    [
        ("0.632", 0.6319643373187839, True),
        ("0.61", 0.6319643373187839, False),
        ("1999000", 1999000, True),
        ("1999000", 1999001, False),
        ("3.119e-08", 3.1191e-08, True),
        ("−2.71", -2.7100905216959625, True),
        ("2.71", -2.7100905216959625, False),
        ("1", 0.9999935742436291, True),
        ("0", 0.0, True),
        ("0", 0.4, True),
        ("0", 0.6, False),
        ("0.12", 0.125, True),
        ("0.13", 0.125, True),
    ],
)
def test_a_written_number_agrees_at_its_last_digit(written: str, value: float, ok: bool):
    sign = "−" if written.startswith("−") else ""
    assert agrees(as_decimal(sign, written.lstrip("−")), value) is ok


def test_the_checker_on_a_small_document(monkeypatch: pytest.MonkeyPatch):
    original = load
    monkeypatch.setitem(globals(), "load", lambda path: DOC if path == "docs/x.json" else original(path))
    text = "\n".join(
        [
            "## 3.1 A section",
            "<!-- numbers: docs/x.json -->",
            "Near is 0.632<!-- #table[stratum=near]/p --> at ρ = 0.5, in 95% of cases (section 3.1); k = 10.",
            "",
            "<!-- table row: #table[stratum=$1,rho=$2]",
            "     cols: - | - | p -->",
            "",
            "| stratum | ρ | p |",
            "|---|---:|---:|",
            "| far | 1 | 0.2 |",
            "| far | 0.5 | 0.31 |",
            "",
            "An orphan 123.4 and a wrong 0.5<!-- #table[stratum=far,rho=1]/p -->, a missing 7<!-- #nope -->.",
        ]
    )
    report = check(text)
    problems = [e.problem for e in report.errors or []]
    assert report.checked == 4
    assert report.selector_cells == 4
    assert any("written 0.31" in p for p in problems)
    assert any("written 0.5" in p for p in problems)
    assert any("no key 'nope'" in p for p in problems)
    assert len(problems) == 3
    assert len(report.unannotated or []) == 1 and "123.4" in (report.unannotated or [])[0].text


def test_an_uncommitted_or_out_file_is_refused():
    with pytest.raises(KeyPathError, match="not a committed file"):
        load("out/paper-ml1m/masking_contraction/summary.json")
