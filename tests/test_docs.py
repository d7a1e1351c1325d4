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
    assert any(i.startswith("paper-ml1m/") for i in images) and any(i.startswith("figures/") for i in images)
