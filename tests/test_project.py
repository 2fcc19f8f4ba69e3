"""Project set-up: the conda environment file and pyproject list the same dependencies."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    """'Pandas >=2.2, <4' -> 'pandas>=2.2,<4' (PEP 503 name, no spaces)."""
    req = req.replace(" ", "")
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", req).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + spec


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(r) for r in reqs}


def _environment_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_norm(r) for r in pip if not r.startswith("-")}  # "-e ." installs the project


def test_environment_yml_matches_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert py - env == set(), f"in pyproject.toml but not environment.yml: {sorted(py - env)}"
    assert env - py == set(), f"in environment.yml but not pyproject.toml: {sorted(env - py)}"


def test_environment_yml_pins_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_norm_is_strict_about_versions():
    # the comparison must notice a changed bound, not only a changed name
    assert _norm("pandas>=2.2,<4") != _norm("pandas>=2.2,<3")
    assert _norm("Diff_Diff >=3.13, <3.14") == "diff-diff>=3.13,<3.14"
