"""The economist's tutorial notebook runs top to bottom on the synthetic sample (as in CI)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "notebooks" / "tutorial" / "tutorial.ipynb"


def test_tutorial_is_committed_without_outputs() -> None:
    nb = nbformat.read(TUTORIAL, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_tutorial_runs_and_recovers_the_planted_effect(tmp_path: Path) -> None:
    out = tmp_path / "tutorial.ipynb"
    pm.execute_notebook(str(TUTORIAL), str(out), parameters={"n_firms": 3000}, kernel_name="msme-eval",
                        cwd=str(tmp_path), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "negative_value" in text or "employees" in text  # the validation report was shown
    assert "pre-period cells" in text or "chi2" in text     # the pre-trend test was printed
