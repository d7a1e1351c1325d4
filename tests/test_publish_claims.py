"""experiments/publish_claims.py: what a finished ledger leaves in docs/claims (the rows' sources, nothing else)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _publish_module():
    spec = importlib.util.spec_from_file_location("publish_claims", ROOT / "experiments" / "publish_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ledger(root: Path) -> Path:
    ledger = root / "ledger"
    seed = ledger / "runs" / "synthetic" / "seed0"
    for folder in (seed / "masking_contraction", seed / "cohorts", ledger / "runs" / "synthetic" / "pia_uplift"):
        folder.mkdir(parents=True)
    (ledger / "COMPLETE").write_text(json.dumps({"job": "claims", "complete": True}))
    for name in ("claims.json", "comparison.json", "ledger.json"):
        (ledger / name).write_text("[]")
    (ledger / "claims.md").write_text("# Claims ledger\n")
    (ledger / "claims.png").write_bytes(b"png")
    (ledger / "runs" / "synthetic" / "pia_uplift" / "uplift.json").write_text("{}")
    (ledger / "runs" / "synthetic" / "pia_uplift" / "per_seed.csv").write_text("seed\n0\n")
    (seed / "masking_contraction" / "summary.json").write_text('{"job": "masking_contraction"}')
    (seed / "masking_contraction" / "probability_vs_rho.png").write_bytes(b"png")
    (seed / "cohorts" / "summary.json").write_text('{"job": "cohorts"}')
    with open(seed / "masking_contraction" / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rho", "stratum", "anchor", "d", "p_contraction_masked", "mc"])
        writer.writerows([[0.5, "far", 3, 120, 0.25, 0.3], [0.5, "far-related", 4, 130, 0.125, 0.1]])
    return ledger


def test_publish_keeps_the_rows_sources_and_replaces_the_destination(tmp_path):
    publish = _publish_module().publish
    ledger = _ledger(tmp_path)
    dest = tmp_path / "docs" / "claims"
    (dest / "runs" / "old").mkdir(parents=True)
    (dest / "runs" / "old" / "stale.json").write_text("{}")  # from an earlier ledger: must not survive
    written = publish(ledger, dest)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == sorted(str(p.relative_to(dest)) for p in written)
    assert kept == sorted(
        [
            "COMPLETE",
            "claims.json",
            "claims.md",
            "claims.png",
            "comparison.json",
            "ledger.json",
            "runs/synthetic/pia_uplift/uplift.json",
            "runs/synthetic/seed0/cohorts/summary.json",
            "runs/synthetic/seed0/masking_contraction/pairs.csv",
            "runs/synthetic/seed0/masking_contraction/summary.json",
        ]
    )
    with open(dest / "runs" / "synthetic" / "seed0" / "masking_contraction" / "pairs.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["stratum", "anchor", "p_contraction_masked"], ["far", "3", "0.25"], ["far-related", "4", "0.125"]]
    assert not list(tmp_path.joinpath("docs").glob(".claims.*")), "a staging or old folder was left behind"


def test_an_unfinished_ledger_is_not_published(tmp_path):
    publish = _publish_module().publish
    ledger = _ledger(tmp_path)
    (ledger / "COMPLETE").write_text(json.dumps({"job": "claims", "complete": False}))
    with pytest.raises(ValueError, match="not a finished claims ledger"):
        publish(ledger, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
