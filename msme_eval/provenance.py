"""Provenance of a cycle: parameters, SHA-256 of every input, git commit, package versions.

Written to ``reports/<cycle>/provenance.json`` so an auditor can tell exactly which data, code
and environment produced a report. Environment variables (where credentials live) are never
recorded.
"""
from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from msme_eval.io import sha256_file

PACKAGES: tuple[str, ...] = (
    "msme-eval", "pandas", "numpy", "scipy", "statsmodels", "matplotlib", "seaborn", "pyarrow",
    "pandera", "pydantic", "papermill", "nbconvert", "nbformat", "nbclient", "ipykernel",
    "jupyter_client", "jinja2", "diff-diff", "pyfixest", "openpyxl", "pyreadstat", "pyyaml",
    "duckdb", "pyspark",
)


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (or of a Parquet folder): the rule of :func:`msme_eval.io.sha256_file`."""
    return sha256_file(path, chunk=chunk)


def input_files(params: Any) -> dict[str, dict[str, Any]]:
    """{role: {path, sha256, bytes}} for the data files and templates a cycle reads."""
    files: dict[str, Path] = {}
    for role in ("panel", "macro", "targets"):
        p = getattr(params, role, None)
        if p is not None:
            files[role] = Path(p)
    codebook = (getattr(params, "panel_options", None) or {}).get("codebook")
    if codebook:
        files["codebook"] = Path(codebook)
    stats = Path(__file__).with_name("data") / "asean_msme_statistics.csv"
    if stats.exists():
        files["published_statistics"] = stats
    templates_dir = getattr(params, "templates_dir", None)
    if templates_dir is not None:
        wanted = getattr(params, "sections", None)
        for path in sorted(Path(templates_dir).glob("*.ipynb")):
            if not path.name.startswith(("_", ".")) and (wanted is None or path.stem in wanted):
                files[f"template:{path.stem}"] = path
    return {role: {"path": str(p), "sha256": sha256(p),
                   "bytes": sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                   if p.is_dir() else p.stat().st_size}
            for role, p in sorted(files.items())}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit hash and whether the working tree has uncommitted changes (read-only git)."""
    root = root or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def collect(params: Any, *, inputs: dict[str, dict[str, Any]] | None = None,
            kernel: dict[str, Any] | None = None, started: float | None = None,
            duration: float | None = None, runs: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """The provenance record of one cycle run (JSON-safe)."""
    started = time.time() if started is None else started
    return {
        "schema": "msme-eval/provenance/1",
        "parameters": params.model_dump(mode="json"),
        "inputs": input_files(params) if inputs is None else inputs,
        "git": git_state(),
        "packages": package_versions(),
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "kernel": kernel,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_seconds": None if duration is None else round(duration, 2),
        "notebooks": runs or [],
    }
