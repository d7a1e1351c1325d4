"""``python -m analyses.paper_figures``: a quick run of two jobs, its report checked against the jobs' own files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

import analyses.masking_contraction
import analyses.sharing_radius
from analyses.paper_figures import JOBS, MISSING, format_value, lookup, main

SUBSET = ("masking_contraction", "sharing_radius")
SOURCE = re.compile(r"^Source: `([^`]+)`, (?:list `([^`]+)`(?:, rows where (.*))?|one value per row.*)\.$")
FIELD = re.compile(r"\(`([^`]+)`\)$")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    """One quick run of two jobs on synthetic data, in a throw-away dataset cache and run cache."""
    root = tmp_path_factory.mktemp("paper_figures")
    out = root / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAECF_CACHE_DIR", str(root / "cache"))
        mp.setenv("VAECF_RUNS_DIR", str(root / "runs"))
        code, stdout, stderr = _run(["--quick", "--jobs", *SUBSET, "--out", str(out), "--no-progress"])
    assert code == 0, stderr
    return {
        "out": out,
        "stdout": stdout,
        "stderr": stderr,
        "report": (out / "report.md").read_text(),
        "manifest": json.loads((out / "paper_figures.json").read_text()),
    }


def _sections(report: str) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    current = None
    for line in report.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            parts[current] = []
        elif current is not None:
            parts[current].append(line)
    return parts


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _tables(lines: list[str]) -> list[tuple[re.Match, list[str], list[list[str]]]]:
    """(source match, header cells, body rows) of every table that follows a ``Source:`` line."""
    found = []
    for i, line in enumerate(lines):
        m = SOURCE.match(line)
        if not m:
            continue
        j = i + 1
        while not lines[j].startswith("|"):
            j += 1
        header = _cells(lines[j])
        body = []
        j += 2  # skip the alignment row
        while j < len(lines) and lines[j].startswith("|"):
            body.append(_cells(lines[j]))
            j += 1
        found.append((m, header, body))
    return found


def _resolve(doc: object, path: str) -> object:
    # independent of analyses.paper_figures.lookup: walk keys and list indices by hand
    node = doc
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _same(cell: str, value: object) -> bool:
    """The cell shows ``value``: integers in full, floats rounded to 4 significant digits (whole numbers from
    10^4 on), null or NaN as the missing sign."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return cell == MISSING
    if isinstance(value, bool):
        return cell == ("yes" if value else "no")
    if isinstance(value, int):
        return cell == str(value)
    if isinstance(value, float):
        if abs(value) >= 1e4:
            return float(cell) == round(value)
        digits = 3 - math.floor(math.log10(abs(value))) if value else 0
        return float(cell) == pytest.approx(round(value, digits), rel=1e-12, abs=1e-300)
    return cell == str(value)


@pytest.mark.slow
def test_report_exists_and_the_run_says_where(quick_run):
    out, manifest = quick_run["out"], quick_run["manifest"]
    assert quick_run["stdout"].rstrip().splitlines()[-1] == f"report: {out / 'report.md'}"
    assert [j["name"] for j in manifest["jobs"]] == list(SUBSET) and manifest["not_run"] == []
    for job in manifest["jobs"]:
        assert job["status"] == "ok" and job["exit_code"] == 0 and job["error"] is None and job["seconds"] > 0
        # the dataset and mode are passed explicitly to every job
        assert "--dataset synthetic" in job["command"] and "--quick" in job["command"]
        assert f"`{job['command']}`" in quick_run["report"]
    progress = [ln for ln in quick_run["stderr"].splitlines() if re.match(r"^\[\d/2\] ", ln)]
    assert len(progress) == 4 and progress[-1].startswith("[2/2] sharing_radius: ok in ")
    assert set(_sections(quick_run["report"])) == set(SUBSET)


@pytest.mark.slow
def test_every_linked_image_exists_and_every_figure_is_linked(quick_run):
    out, report = quick_run["out"], quick_run["report"]
    links = IMAGE.findall(report)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        assert (out / link).read_bytes().startswith(b"\x89PNG"), link
    written = {p.relative_to(out).as_posix() for job in SUBSET for p in (out / job).glob("*.png")}
    assert set(links) == written
    for job in SUBSET:
        listed = {f for f in json.loads((out / job / JOBS[job].json_name).read_text())["files"] if f.endswith(".png")}
        assert {Path(link).name for link in links if link.startswith(f"{job}/")} == listed


@pytest.mark.slow
def test_every_number_in_the_report_is_the_jobs_json_value(quick_run):
    out = quick_run["out"]
    checked = 0
    for job, lines in _sections(quick_run["report"]).items():
        tables = _tables(lines)
        assert tables, job
        for m, header, body in tables:
            doc = json.loads((out / m.group(1)).read_text())
            assert m.group(1) == f"{job}/{JOBS[job].json_name}"
            assert body, f"{job}: empty table from {m.group(2)}"
            if m.group(2) is None:  # one value per row, its key in the last column
                for label, cell, key in body:
                    path = key.strip("`")
                    assert _same(cell, _resolve(doc, path)), (job, label, path, cell)
                    checked += 1
                continue
            records = _resolve(doc, m.group(2))
            where = dict(re.findall(r"`([^`]+)` = `([^`]+)`", m.group(3) or ""))
            fields = [FIELD.search(h).group(1) for h in header]
            for row in body:
                cells = dict(zip(fields, row, strict=True))
                matches = [
                    r
                    for r in records
                    if all(str(r.get(f)) == v for f, v in where.items())
                    and all(_same(cells[f], r.get(f)) for f in fields)
                ]
                assert len(matches) >= 1, (job, m.group(2), row)
                checked += len(fields)
            # every record passing the filter is shown
            assert len(body) == sum(all(str(r.get(f)) == v for f, v in where.items()) for r in records)
    assert checked > 50


@pytest.mark.slow
def test_report_numbers_match_the_jobs_csv_files(quick_run):
    """A second source written by the jobs themselves: the CSV tables."""
    out, sections = quick_run["out"], _sections(quick_run["report"])
    summary = pd.read_csv(out / "masking_contraction" / "summary.csv")
    (_source, header, body), *_ = _tables(sections["masking_contraction"])
    fields = [FIELD.search(h).group(1) for h in header]
    for row in body:
        cells = dict(zip(fields, row, strict=True))
        ref = summary[(summary["stratum"] == cells["stratum"]) & (summary["rho"] == float(cells["rho"]))]
        assert len(ref) == 1
        for f in ("p_contraction", "p_expansion", "p_contraction_masked", "mean_d", "pairs"):
            assert _same(cells[f], float(ref[f].iloc[0])), f
    bins = pd.read_csv(out / "sharing_radius" / "bins.csv")
    bin_table = next(t for t in _tables(sections["sharing_radius"]) if t[0].group(2) == "bins")
    shown = [float(r[[FIELD.search(h).group(1) for h in bin_table[1]].index("help_share")]) for r in bin_table[2]]
    assert shown == pytest.approx(bins["help_share"].tolist(), rel=5e-4)


def test_unknown_job_names_are_one_clear_error(tmp_path):
    code, stdout, stderr = _run(
        ["--quick", "--jobs", "masking_contraction,figures_of_doom", "--out", str(tmp_path / "x")]
    )
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "figures_of_doom" in lines[0] and "masking_contraction" in lines[0]
    assert not (tmp_path / "x").exists()


def _fake_job(folder_of: dict, calls: list, *, fail: str | None = None, crash: bool = False):
    def job_main(argv: list[str]) -> int:
        name = folder_of["name"]
        calls.append(name)
        if crash:
            raise RuntimeError("the fake job crashed")
        if fail:
            print(f"error: {fail}", file=sys.stderr)
            return 2
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        doc = {
            "radius": {"estimate": 1.23456, "ci": [1.0, 2.0]},
            "strata": [{"stratum": "near", "pairs": 3, "mean_gain": float("nan")}],
            "files": ["fake.png", "summary.json"],
        }
        (out / "summary.json").write_text(json.dumps(doc).replace("NaN", "null"))
        return 0

    return job_main


def test_a_failing_job_stops_the_run_with_one_error_naming_it(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(analyses.masking_contraction, "main", _fake_job({"name": "mc"}, calls, fail="no data here"))
    monkeypatch.setattr(analyses.sharing_radius, "main", _fake_job({"name": "sr"}, calls))
    code, stdout, stderr = _run(["--quick", "--jobs", *SUBSET, "--out", str(tmp_path)])
    assert code == 1 and calls == ["mc"]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: job")]
    assert len(errors) == 1 and "masking_contraction" in errors[0] and "no data here" in errors[0]
    assert "python -m analyses.masking_contraction --dataset synthetic" in errors[0]
    manifest = json.loads((tmp_path / "paper_figures.json").read_text())
    assert [j["status"] for j in manifest["jobs"]] == ["failed"] and manifest["not_run"] == ["sharing_radius"]
    assert "This job failed" in (tmp_path / "report.md").read_text()
    assert stdout.rstrip().endswith(f"report: {tmp_path / 'report.md'}")


def test_keep_going_runs_the_rest_and_reports_the_failure(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(analyses.masking_contraction, "main", _fake_job({"name": "mc"}, calls, crash=True))
    monkeypatch.setattr(analyses.sharing_radius, "main", _fake_job({"name": "sr"}, calls))
    code, _, stderr = _run(["--quick", "--jobs", *SUBSET, "--out", str(tmp_path), "--keep-going"])
    assert code == 1 and calls == ["mc", "sr"]
    assert "job masking_contraction failed (RuntimeError: the fake job crashed)" in stderr
    report = (tmp_path / "report.md").read_text()
    sections = _sections(report)
    assert "This job failed" in "\n".join(sections["masking_contraction"])
    sr = "\n".join(sections["sharing_radius"])
    assert "![fake](sharing_radius/fake.png)" in sr
    assert (
        "| r_share | 1.235 | `radius/estimate` |" in sr and "| r_share, 95% interval high | 2 | `radius/ci/1` |" in sr
    )
    # a null in the JSON reads as the missing-value sign; fields absent from every record are left out
    assert f"| near | 3 | {MISSING} |" in sr and "cos(g_u, g_v)" not in sr
    manifest = json.loads((tmp_path / "paper_figures.json").read_text())
    assert [j["status"] for j in manifest["jobs"]] == ["failed", "ok"]


def test_lookup_and_format_value():
    doc = {"a": {"b": [10, {"c": 0.5}]}, "x@1": 2.0}
    assert lookup(doc, "a/b/0") == 10 and lookup(doc, "a/b/1/c") == 0.5 and lookup(doc, "x@1") == 2.0
    for bad in ("a/z", "a/b/2", "a/b/c", "x@1/y"):
        with pytest.raises(KeyError, match=re.escape(repr(bad))):
            lookup(doc, bad)
    assert format_value(None) == MISSING and format_value(float("nan")) == MISSING
    assert format_value(True) == "yes" and format_value(7) == "7" and format_value(2.0) == "2"
    assert format_value(0.123456) == "0.1235" and format_value(123456.7) == "123457"
    assert format_value("a|b") == "a\\|b"
