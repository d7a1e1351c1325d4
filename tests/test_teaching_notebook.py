"""docs/teaching.ipynb: in sync with its text form docs/teaching.py, stored without outputs, and it runs top to
bottom on the synthetic data (nbclient, a fresh kernel, in a scratch folder)."""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "teaching.ipynb"
TEXT = ROOT / "docs" / "teaching.py"


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_the_notebook_and_its_text_form_hold_the_same_cells():
    # after an edit of either: jupytext --sync docs/teaching.py
    assert _cells(nbformat.read(NOTEBOOK, as_version=4)) == _cells(jupytext.read(TEXT))


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    assert all(c.outputs == [] and c.execution_count is None for c in code)  # strip: jupyter nbconvert --clear-output


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures (CI sets Agg)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails here, naming the cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # the law of one pair and the three jobs' figures are shown
    assert (tmp_path / "teaching-out" / "pia" / "summary.json").is_file()
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "Pr[D' >= d]" in printed and "aligned with its own items" in printed
    assert not any(o.get("output_type") == "error" for o in outputs)
