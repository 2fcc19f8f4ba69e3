"""Input checks shared by the impact estimators.

Every check refuses bad input with an :class:`ImpactInputError` that names the column, a few
offending rows or units, and how to fix it. Nothing is dropped or coerced silently: the only
lossless conversion is a float time column whose values are all whole numbers.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class ImpactInputError(ValueError):
    """Input that an impact estimator refuses (message says what, where and how to fix)."""


def _show(values: Sequence[object], k: int = 5) -> str:
    vals = list(values)
    more = f" ... ({len(vals)} in all)" if len(vals) > k else ""
    return ", ".join(repr(v) for v in vals[:k]) + more


def require_columns(data: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse when any of ``columns`` is absent from ``data``."""
    if not isinstance(data, pd.DataFrame):
        raise ImpactInputError(f"{what}: `data` must be a pandas DataFrame, got {type(data).__name__}.")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ImpactInputError(
            f"{what}: column(s) {missing} not found in data (columns are {list(data.columns)}). "
            "Fix: pass the right column names."
        )


def check_unit_ids(data: pd.DataFrame, unit: str) -> None:
    """Refuse missing unit identifiers (they cannot be followed over time)."""
    na = data[unit].isna().to_numpy()
    if na.any():
        rows = data.index[na]
        raise ImpactInputError(
            f"column {unit!r} has {int(na.sum())} missing unit id(s) at rows {_show(rows)}. "
            "Fix: every row needs a firm identifier; drop or repair those rows before estimating."
        )


def integer_time(data: pd.DataFrame, time: str) -> np.ndarray:
    """Return the time column as int64; refuse non-integer, missing or non-numeric values.

    A float column is accepted only when every value is a whole number (lossless conversion).
    """
    s = data[time]
    if pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype):
        raise ImpactInputError(
            f"column {time!r} must hold integer periods (e.g. years), got dtype {s.dtype}. "
            "Fix: convert it to integers (e.g. pd.to_numeric(...).astype('Int64'))."
        )
    na = s.isna().to_numpy()
    if na.any():
        raise ImpactInputError(
            f"column {time!r} has {int(na.sum())} missing value(s) at rows {_show(data.index[na])}. "
            "Fix: every row needs its period."
        )
    arr = s.to_numpy(dtype=np.float64) if not pd.api.types.is_integer_dtype(s.dtype) else None
    if arr is not None:
        bad = arr != np.round(arr)
        if bad.any():
            raise ImpactInputError(
                f"column {time!r} must hold integer periods; rows {_show(data.index[bad])} have "
                f"non-integer values {_show(arr[bad])}. Fix: use whole periods (years), not dates "
                "or fractions."
            )
        return arr.astype(np.int64)
    return s.to_numpy(dtype=np.int64)


def unit_codes(data: pd.DataFrame, unit: str) -> tuple[np.ndarray, int]:
    """Integer codes 0..n_units-1 for the unit column, and the number of units."""
    codes, uniques = pd.factorize(data[unit], sort=False)
    return codes.astype(np.int64), len(uniques)


def check_unique_unit_time(
    data: pd.DataFrame, ucode: np.ndarray, n_units: int, t: np.ndarray, unit: str, time: str
) -> None:
    """Refuse duplicate (unit, time) rows."""
    t0 = int(t.min())
    span = int(t.max()) - t0 + 1
    key = ucode * span + (t - t0)
    counts = np.bincount(key, minlength=n_units * span)
    if (counts > 1).any():
        dup = counts[key] > 1
        rows = data.index[dup]
        raise ImpactInputError(
            f"{int(dup.sum())} rows share a ({unit}, {time}) pair with another row, e.g. rows "
            f"{_show(rows)}. Fix: the panel needs one row per firm and year; aggregate or remove "
            "the duplicates."
        )


def unit_constant(
    values: np.ndarray, ucode: np.ndarray, n_units: int, data: pd.DataFrame, unit: str, column: str,
    fix: str,
) -> np.ndarray:
    """Return the per-unit value of a column that must not vary within unit; refuse otherwise.

    ``values`` is float with NaN for missing; NaN and non-NaN mixed within a unit also count as
    varying.
    """
    first = np.full(n_units, np.nan)
    # last write wins; then compare every row against its unit's stored value
    first[ucode] = values
    stored = first[ucode]
    same = (stored == values) | (np.isnan(stored) & np.isnan(values))
    if not same.all():
        bad_units = pd.unique(data[unit].to_numpy()[~same])
        raise ImpactInputError(
            f"column {column!r} varies within unit for {len(bad_units)} unit(s) ({unit} = "
            f"{_show(bad_units)}). {fix}"
        )
    return first


def as_float(data: pd.DataFrame, column: str) -> np.ndarray:
    """Numeric column as float64 with NaN for missing; refuse non-numeric dtypes."""
    s = data[column]
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    if not pd.api.types.is_numeric_dtype(s.dtype):
        raise ImpactInputError(
            f"column {column!r} must be numeric, got dtype {s.dtype}. Fix: convert it to numbers."
        )
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def firm_weights(data: pd.DataFrame, weight: str, ucode: np.ndarray, n_units: int, unit: str) -> np.ndarray:
    """Each unit's survey weight (``ucode``: the unit code of every row of ``data``); refuse missing or
    non-positive weights (naming the rows) and weights that vary within a unit (naming the units): a
    panel DiD re-weights firms, not firm-years."""
    w = as_float(data, weight)
    bad = np.isnan(w) | (w <= 0)
    if bad.any():
        raise ImpactInputError(f"weight column {weight!r} must be > 0 and present; rows {_show(data.index[bad])} "
                               "fail. Fix: give every firm-year its firm's (positive) survey weight.")
    return unit_constant(w, ucode, n_units, data, unit, weight,
                         "Survey weights must be constant within firm for a panel DiD. Fix: use the firm's "
                         "baseline-year weight (or a longitudinal weight) in every row.")
