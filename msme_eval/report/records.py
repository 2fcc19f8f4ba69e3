"""Deterministic JSON for results.json and the notebooks' fragments: same numbers, same bytes."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["clean", "dump_json"]


def clean(value: Any) -> Any:
    """JSON-safe, deterministic values: floats to 10 significant digits, NaN/inf -> None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.10g}")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is pd.NA:
        return None
    return str(value)


def dump_json(data: Any) -> str:
    """Canonical JSON (sorted keys, cleaned numbers, trailing newline)."""
    return json.dumps(clean(data), indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"
