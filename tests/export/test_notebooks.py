"""The notebooks run headless on a demo ledger and produce their figures (``make notebooks`` does the same)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist_with_outputs_cleared() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01-session-timeline.ipynb", "02-policy-tuning.ipynb", "03-data-plane-findings.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs before committing"


@pytest.mark.slow
def test_notebooks_execute_and_save_figures(sample_url: str, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "run.py"), "--db", sample_url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed, 0 failed" in proc.stdout
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"01-timeline.png", "02-rule-hits.png", "03-entities.png"} <= set(figures)
    executed = nbformat.read(out / "02-policy-tuning.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "divergent steps" in text
