"""Shared fixtures: one small synthetic sample, generated once per test session.

`small_data` is `synth.generate(n_firms=1000, years=2016..2021, seed=3)` (planted effects and
truth included); `small_sample` is the same written to files as a ministry would deliver it
(panel.parquet, macro.csv, targets.csv, truth.csv, ...). Tests that need other sizes or seeds
generate their own.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import msme_eval as me


@pytest.fixture(scope="session")
def small_data() -> me.synth.SyntheticData:
    return me.synth.generate(n_firms=1000, years=range(2016, 2022), seed=3)


@pytest.fixture(scope="session")
def small_sample(small_data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return me.synth.write_sample(tmp_path_factory.mktemp("small-sample"), small_data)


ROOT = Path(__file__).resolve().parents[1]


def template_from(folder: Path, name: str, body: str, scope: tuple[str, ...] = ("region",),
                  title: str | None = None) -> Path:
    """A template as a user would add one: the standard preamble of a shipped template (imports,
    the `parameters` cell, `notebook_context`) followed by one code cell ``body``."""
    import nbformat
    from nbformat.v4 import new_code_cell

    nb = nbformat.read(ROOT / "notebooks" / "10_data_quality.ipynb", as_version=4)
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[: params_at + 2] + [new_code_cell(body)]
    nb.metadata["msme_eval"] = {"title": title or name, "scope": list(scope), "phase": 1, "cost": 1.0}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name}-{i}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path
