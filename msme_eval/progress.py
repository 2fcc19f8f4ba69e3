"""Progress to target: baseline, latest value, growth-rate ratio, ESCAP-style CSI and API.

:func:`assess` compares each indicator series (``indicators.compute`` output, breakdown
"total") with its target (``indicator, country|ref_area, baseline_year, baseline_value,
target_year, target_value``). Formulas (domain.md 4.2; growth-rate form of the ESCAP 2017
working-paper lineage, categories as Statistics Canada / Open SDG):

    CR_actual   = (I_cr / I_0) ** (1 / (t - t0)) - 1        latest value I_cr in year t
    CR_required = (TV   / I_0) ** (1 / (T - t0)) - 1        target TV in year T
    R           = CR_actual / CR_required

Status: ``achieved`` when the latest value has reached the target (``d (I_cr - TV) >= 0`` with
``d = +1`` if higher is better, ``-1`` if lower is better, from the registry); otherwise
``on track`` (R >= 0.95), ``acceleration needed`` (0.60 <= R < 0.95), ``limited progress``
(0 <= R < 0.60), ``regression`` (R < 0); thresholds are parameters. A lower-is-better
indicator needs no special case in R: its required and actual growth rates are both negative
when it moves the right way, so R > 0.

ESCAP indices (operational form; ESCAP's exact scale, caps and cut-offs were not available):

    CSI = min((I_cr - I_0) / (TV - I_0), 1)                 share of the required distance covered
    API = (Î_T - I_0) / (TV - I_0)                          >= 1: target expected to be met
    gap = 1 - API

``Î_T`` is the value at the target year from a **time-weighted linear trend**: weighted least
squares of value on year over the baseline and every later observation, with weight
``w_j = t_j - t_first + 1`` (1 for the earliest point, growing by 1 per year, so recent
observations count more). ESCAP uses a time-weighted regression (Working Paper SD/WP/04,
2017) whose exact weights were not available; these linear weights are our documented choice
(``trend_weights="equal"`` gives ordinary least squares). ``anticipated``: "expected to meet"
(API >= 1), "needs acceleration" (0 < API < 1), "no progress expected" (API <= 0).

Never a guess: fewer than two points (baseline and one later observation), no target, a
non-positive value in the growth-rate form, or a target that contradicts the registry
direction give ``status`` NaN and the reason in ``reason``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["assess", "STATUSES", "trend", "OUTPUT_COLUMNS"]

STATUSES: tuple[str, ...] = ("achieved", "on track", "acceleration needed", "limited progress",
                             "regression")
OUTPUT_COLUMNS: tuple[str, ...] = (
    "indicator", "ref_area", "breakdown", "direction", "baseline_year", "baseline_value",
    "latest_year", "latest_value", "target_year", "target_value", "n_points", "cr_actual",
    "cr_required", "ratio", "status", "csi", "projected_value", "api", "gap", "anticipated",
    "reason",
)


def _weights(years: np.ndarray, how: str | Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if callable(how):
        return np.asarray(how(years), dtype=float)
    if how == "linear":
        return years - years.min() + 1.0
    if how == "equal":
        return np.ones(len(years))
    raise ValueError(f"trend_weights must be 'linear', 'equal' or a callable, got {how!r}")


def trend(years: Sequence[float], values: Sequence[float], at: float, *,
          weights: str | Callable[[np.ndarray], np.ndarray] = "linear") -> float:
    """Time-weighted least-squares line through (years, values), evaluated at year ``at``."""
    t = np.asarray(years, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(t) < 2 or len(np.unique(t)) < 2:
        return float("nan")
    w = _weights(t, weights)
    tm = np.sum(w * t) / np.sum(w)
    vm = np.sum(w * v) / np.sum(w)
    slope = np.sum(w * (t - tm) * (v - vm)) / np.sum(w * (t - tm) ** 2)
    return float(vm + slope * (at - tm))


def _directions(registry: str | Path | pd.DataFrame | None) -> dict[str, str]:
    from .indicators import registry as load_registry
    reg = registry if isinstance(registry, pd.DataFrame) else load_registry(registry)
    return dict(zip(reg["id"], reg["direction"]))


def _status(r: float, thresholds: tuple[float, float]) -> str:
    on, acc = thresholds
    if r >= on:
        return "on track"
    if r >= acc:
        return "acceleration needed"
    if r >= 0:
        return "limited progress"
    return "regression"


def _change(value: float, i0: float, tv: float) -> float:
    """``value - i0``, with a change below 1e-9 of the indicator's scale (max |i0|, |target|)
    taken as none: a flat series projects to its baseline up to rounding (~1e-14), and that
    rounding must not flip "no progress expected" to "needs acceleration"."""
    diff = value - i0
    return 0.0 if abs(diff) <= 1e-9 * max(abs(i0), abs(tv)) else diff


def _anticipated(api: float) -> object:
    if not np.isfinite(api):
        return np.nan
    return ("expected to meet" if api >= 1 else "needs acceleration" if api > 0
            else "no progress expected")


def assess(indicators: pd.DataFrame, targets: pd.DataFrame, *,
           thresholds: tuple[float, float] = (0.95, 0.60),
           registry: str | Path | pd.DataFrame | None = None,
           trend_weights: str | Callable[[np.ndarray], np.ndarray] = "linear",
           breakdown: str = "total", group: str = "total") -> pd.DataFrame:
    """Progress of every indicator x ref_area towards its target (one row each).

    ``indicators``: tidy rows from :func:`msme_eval.indicators.compute` (rows with obs_status
    M or a suppressed value are not data points). ``targets``: ``indicator``, ``country`` (or
    ``ref_area``), ``baseline_year``, ``baseline_value`` (NaN: taken from the series at the
    baseline year), ``target_year``, ``target_value``. Series without a target and targets
    without data are kept with ``status`` NaN and a ``reason``. Columns: ``OUTPUT_COLUMNS``;
    formulas in the module docstring.
    """
    on, acc = thresholds
    if not (0 <= acc <= on):
        raise ValueError(f"thresholds must be (on_track, acceleration) with 0 <= second <= "
                         f"first, got {thresholds!r}")
    need = ["indicator", "ref_area", "time_period", "value"]
    miss = [c for c in need if c not in indicators.columns]
    if miss:
        raise KeyError(f"indicators table lacks {miss}; pass indicators.compute() output")
    tg = targets.rename(columns={"country": "ref_area"}) if "ref_area" not in targets.columns \
        else targets.copy()
    tmiss = [c for c in ("indicator", "ref_area", "baseline_year", "baseline_value",
                         "target_year", "target_value") if c not in tg.columns]
    if tmiss:
        raise KeyError(f"targets table lacks {tmiss}; columns: indicator, country, "
                       "baseline_year, baseline_value, target_year, target_value")
    dup = tg.duplicated(["indicator", "ref_area"], keep=False)
    if dup.any():
        pairs = tg.loc[dup, ["indicator", "ref_area"]].drop_duplicates().values.tolist()
        raise ValueError(f"targets has several rows for {pairs[:5]}; one target per indicator "
                         "and area")
    directions = _directions(registry)
    sel = indicators
    if "breakdown" in sel.columns:
        sel = sel[(sel["breakdown"] == breakdown) & (sel["group"] == group)]
    ok = sel["value"].notna()
    if "obs_status" in sel.columns:
        ok &= sel["obs_status"] != "M"
    pts = sel[ok]
    series = {k: g.sort_values("time_period") for k, g in
              pts.groupby(["indicator", "ref_area"], sort=True)}
    all_keys = sel[["indicator", "ref_area"]].drop_duplicates()
    keys = pd.concat([tg[["indicator", "ref_area"]], all_keys]).drop_duplicates()
    targets_by = tg.set_index(["indicator", "ref_area"])
    rows = []
    for ind, area in keys.itertuples(index=False):
        row: dict[str, object] = {c: np.nan for c in OUTPUT_COLUMNS}
        row.update(indicator=ind, ref_area=area, breakdown=breakdown,
                   direction=directions.get(ind, np.nan), n_points=0)
        s = series.get((ind, area))
        if (ind, area) not in targets_by.index:
            row["reason"] = "no target for this indicator and area"
            if s is not None:
                row.update(latest_year=int(s["time_period"].iloc[-1]),
                           latest_value=float(s["value"].iloc[-1]), n_points=len(s))
            rows.append(row)
            continue
        tgt = targets_by.loc[(ind, area)]
        t0, tv_year = int(tgt["baseline_year"]), int(tgt["target_year"])
        tv = float(tgt["target_value"])
        row.update(baseline_year=t0, target_year=tv_year, target_value=tv)
        years = s["time_period"].to_numpy(dtype=float) if s is not None else np.array([])
        vals = s["value"].to_numpy(dtype=float) if s is not None else np.array([])
        i0 = float(tgt["baseline_value"]) if pd.notna(tgt["baseline_value"]) else np.nan
        if np.isnan(i0) and (years == t0).any():
            i0 = float(vals[years == t0][0])
        row["baseline_value"] = i0
        later = years > t0
        py = np.concatenate([[t0], years[later]])
        pv = np.concatenate([[i0], vals[later]])
        row["n_points"] = int(np.isfinite(pv).sum())
        if later.any():
            row.update(latest_year=int(years[later][-1]), latest_value=float(vals[later][-1]))
        reasons = []
        if not np.isfinite(tv):
            reasons.append("no target value")
        if np.isnan(i0):
            reasons.append(f"no baseline value (none given and no observation in {t0})")
        if not later.any():
            reasons.append(f"fewer than 2 points: no observation after the baseline year {t0}")
        if tv_year <= t0:
            reasons.append("target year is not after the baseline year")
        if reasons:
            row["reason"] = "; ".join(reasons)
            rows.append(row)
            continue
        t = int(row["latest_year"])
        icr = i0 + _change(float(row["latest_value"]), i0, tv)  # rounding is no change
        d = 1.0 if directions.get(ind, "higher") == "higher" else -1.0
        dist = tv - i0
        if dist != 0:
            row["csi"] = min((icr - i0) / dist, 1.0)
            proj = trend(py, pv, tv_year, weights=trend_weights)
            row["projected_value"] = proj
            row["api"] = _change(proj, i0, tv) / dist
            row["gap"] = 1.0 - row["api"]
            row["anticipated"] = _anticipated(row["api"])
        else:
            row["projected_value"] = trend(py, pv, tv_year, weights=trend_weights)
        if d * dist < 0:
            row["reason"] = (f"target {tv:g} is {'below' if dist < 0 else 'above'} the baseline "
                             f"{i0:g} but the registry says {directions.get(ind)} is better: "
                             "check the target")
            rows.append(row)
            continue
        if d * (icr - tv) >= 0:
            row["status"] = "achieved"
            row["csi"] = 1.0
        if min(i0, icr, tv) <= 0:
            row["reason"] = "growth-rate form needs positive baseline, latest and target values"
            rows.append(row)
            continue
        cr_act = (icr / i0) ** (1.0 / (t - t0)) - 1.0
        cr_req = (tv / i0) ** (1.0 / (tv_year - t0)) - 1.0
        row.update(cr_actual=cr_act, cr_required=cr_req)
        if cr_req == 0:
            if row["status"] != "achieved":
                row["status"] = "regression"
                row["reason"] = "target equals the baseline and the latest value moved away"
            rows.append(row)
            continue
        row["ratio"] = cr_act / cr_req
        if row["status"] != "achieved":
            row["status"] = _status(row["ratio"], thresholds)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    for c in ("baseline_year", "latest_year", "target_year"):
        out[c] = out[c].astype("Int64")
    out["n_points"] = out["n_points"].astype("int64")
    for c in ("status", "anticipated", "reason", "direction"):
        out[c] = out[c].astype("str")
    out.attrs["method"] = {
        "thresholds": {"on track": on, "acceleration needed": acc},
        "trend_weights": trend_weights if isinstance(trend_weights, str) else "custom",
        "reference": "UN ESCAP CSI/API (operational form, domain.md 4.2); Statistics Canada / "
                     "Open SDG categories for R",
    }
    return out.sort_values(["indicator", "ref_area"], kind="stable").reset_index(drop=True)
