"""The committed documents link only to files that exist (figures, reports, JSON)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    links = [m for m in LINK.findall(doc.read_text(encoding="utf-8")) if "://" not in m]
    missing = [m for m in links if not (doc.parent / m).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_the_walkthrough_embeds_its_figures():
    text = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 20
    assert any(i.startswith("paper-ml1m/") for i in images) and any(i.startswith("paper-synthetic/") for i in images)
    for image in images:  # every embedded figure is committed beside the walkthrough
        assert (ROOT / "docs" / image).is_file(), image


def test_every_test_the_reliability_table_names_exists():
    """docs/reliability.md cites tests as evidence: each one it names must exist (a renamed or deleted test must
    not leave the table pointing at nothing)."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", text)) - {"test_metrics"}
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", path.read_text(encoding="utf-8"), re.M))
    assert len(named) > 40
    assert not sorted(named - defined), f"docs/reliability.md names tests that do not exist: {sorted(named - defined)}"


def test_readme_states_the_committed_claims_ledger():
    """README's ledger table is what docs/claims/claims.json renders to (analyses.claims.verdict_table), so every
    verdict and number it states comes from the committed full run."""
    import json

    from analyses.claims import verdict_table

    rows = json.loads((ROOT / "docs" / "claims" / "claims.json").read_text(encoding="utf-8"))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- claims-table:begin -->", "<!-- claims-table:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    block = text.split(begin)[1].split(end)[0]
    assert block.strip() == verdict_table(rows).strip()
    assert (ROOT / "docs" / "claims" / "claims.md").read_text(encoding="utf-8").count(verdict_table(rows).strip()) == 1


def test_the_readme_baseline_table_is_the_committed_ml1m_result():
    """The README's 3-seed ML-1M baseline table is read from experiments/results_baselines_ml1m.json: every NDCG@100
    mean and paired difference in it must be that file's, rounded as shown."""
    import json

    results = json.loads((ROOT / "experiments" / "results_baselines_ml1m.json").read_text(encoding="utf-8"))["models"]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| model | Recall@20 | Recall@50 | NDCG@100 | Δ NDCG@100 vs Multi-VAE | best epochs |")
    rows = [line for line in text[start:].splitlines()[2:] if line.startswith("|")]
    checked = 0
    for line in rows[: len(results)]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        label = next(k for k in results if cells[0].startswith(k))
        entry = results[label]
        assert cells[3].startswith(f"{entry['metrics']['ndcg@100']['mean']:.4f}"), label
        if "mean" in entry["paired"]["ndcg@100"]:
            assert cells[4].startswith(f"{entry['paired']['ndcg@100']['mean']:+.4f}"), label
        checked += 1
    assert checked == len(results) == 6


def test_the_readme_quotes_the_committed_accuracy_comparison():
    """README's sentence on the ML-1M accuracy comparison quotes the committed ledger's PIA row."""
    import json

    rows = json.loads((ROOT / "docs" / "claims" / "comparison.json").read_text(encoding="utf-8"))
    pia = next(r for r in rows if r["dataset"] == "ml-1m" and r["model"] == "Multi-VAE + PIA")
    quoted = f"{pia['delta']:+.4f} [{pia['delta_ci'][0]:+.4f}, {pia['delta_ci'][1]:+.4f}]"
    assert f"is {quoted} over the same Multi-VAE" in (ROOT / "README.md").read_text(encoding="utf-8")


def _close(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ beyond float rounding (relative 1e-9): the paths, empty when they agree."""
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(1.0, abs(a))
        return [] if ok else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _close(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_committed_ledger_recomputes_from_its_committed_job_files(monkeypatch):
    """Every row of docs/claims/claims.json and comparison.json is what analyses.claims.rows_from_jobs (the rules
    of this version) makes of the job files committed beside it (experiments/publish_claims.py keeps them), so no
    row is edited by hand, left from another run or decided by an older rule."""
    import json

    from analyses.claims import read_ledger, rows_from_jobs

    monkeypatch.chdir(ROOT)  # the ledger names its baselines file relative to the repository, as it ran
    part = read_ledger(ROOT / "docs" / "claims")
    datasets = list(dict.fromkeys(r["dataset"] for r in part.rows))
    assert "ml-1m" in datasets and "ml-100k" in datasets
    rows, comparison = [], []
    for dataset in datasets:
        got, compared = rows_from_jobs(part, dataset)
        rows += got
        comparison += compared
    differences = _close(part.rows, json.loads(json.dumps(rows)))
    differences += _close(part.comparison, json.loads(json.dumps(comparison)), "comparison")
    assert not differences, differences[:5]


def test_ci_runs_the_readme_test_command_with_both_tiers():
    """`.ci/run` runs exactly the README's test command (after its own quiet install), slow tier included."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("**Install and run the tests**", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    install, _, checks = block.partition(" && ruff check . && ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == "ruff check . && " + checks
    assert ci[-2] == install.replace("pip install ", "pip install -q ")
    assert "python -m pytest -q -m slow" in checks.split(" && ")
