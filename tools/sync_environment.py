"""Write environment.yml from pyproject.toml so conda users get the same dependency list.

    .venv/bin/python tools/sync_environment.py
"""
from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

HEADER = """\
# Conda environment for msme-eval: the same dependency list as pyproject.toml
# (core + lab + test extras), installed with pip inside conda's Python 3.11.
# Regenerate with `python tools/sync_environment.py`; tests/test_project.py checks they agree.
#   conda env create -f environment.yml && conda activate msme-eval
name: msme-eval
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [r for r in extra if r not in reqs]
    lines = [f'      - "{r}"' for r in reqs] + ['      - "-e ."']
    (ROOT / "environment.yml").write_text(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
