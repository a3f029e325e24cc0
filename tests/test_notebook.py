"""notebooks/analysis.ipynb runs top to bottom on runs the tests make themselves (the small
mismatch experiment's three trained cells) and shows what it promises: learning curves, the
mismatch table and heatmap, and traces of a failing and a succeeding team."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def text_and_images(nb) -> tuple[str, int]:
    text, images = [], 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", o
            text.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
            images += "image/png" in o.get("data", {})
    return "\n".join(text), images


@pytest.mark.e2e
def test_analysis_notebook_runs_top_to_bottom(mismatch_experiment, monkeypatch):
    out, _, _ = mismatch_experiment
    monkeypatch.setenv("MARL_RUNS", str(out))
    monkeypatch.setenv("MARL_MISMATCH", str(out))
    monkeypatch.delenv("MARL_WANDB_PROJECT", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text, images = text_and_images(nb)
    assert "3 runs under" in text
    assert "deploy team, roles swapped" in text  # the mismatch table
    assert "A failing team" in text and "A succeeding team" in text
    assert "--- turn 0 tool" in text  # a trace is printed, not only its heading
    assert images >= 2  # learning curves and the heatmap
