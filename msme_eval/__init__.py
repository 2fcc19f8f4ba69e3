"""msme-eval: monitoring and evaluation of MSME programmes in ASEAN.

    import msme_eval as me
    panel = me.read_panel("data/raw/sample/panel.parquet")
    me.indicators.compute(panel)
    me.impact.did(panel, outcome="employees")

Submodules are imported on first use, so ``import msme_eval`` stays fast and a
notebook only pays for what it touches.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "schema", "io", "sizeclass", "synth", "survey", "indicators", "progress",
    "disclosure", "impact", "cycle", "plots", "cli", "provenance", "engines", "ingest", "spark",
    "contract", "results", "plausibility",
}
_ATTRS = {
    "read_panel": ("io", "read_panel"),
    "read_macro": ("io", "read_macro"),
    "read_targets": ("io", "read_targets"),
    "ReadOptions": ("io", "ReadOptions"),
    "DataValidationError": ("schema", "DataValidationError"),
}

__all__ = sorted(_SUBMODULES | set(_ATTRS)) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ATTRS:
        module, attr = _ATTRS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module 'msme_eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
