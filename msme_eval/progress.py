"""Progress to target: baseline, latest value, pace ratio, ESCAP-style CSI and API, with confidence.

:func:`assess` compares each indicator series (``indicators.compute`` output, breakdown
"total") with its target (``indicator, country|ref_area, baseline_year, baseline_value,
target_year, target_value``). Notation (domain.md 4.2): baseline ``I_0`` in year ``t0``, latest
value ``I_cr`` in year ``t``, target ``TV`` in year ``T``, ``d = +1`` if higher is better and
``-1`` if lower is better (registry ``direction``, with its ``direction_rationale``).

Pace ratio (growth-rate form of the ESCAP 2017 working-paper lineage; categories and thresholds
of Statistics Canada / Open SDG, domain.md [S76]):

    CR_actual   = (I_cr / I_0) ** (1 / (t - t0)) - 1
    CR_required = (TV   / I_0) ** (1 / (T - t0)) - 1
    R           = CR_actual / CR_required

A lower-is-better indicator needs no special case in R: both rates are negative when it moves
the right way. Status, in this order (vocabulary: ``contract.STATUSES``):

1. ``achieved`` when the latest value meets the target, ``d (I_cr - TV) >= 0``, whatever the
   trend (Statistics Canada / Open SDG: a series that achieves its target is "Target achieved"
   regardless of the underlying trend [S76]).
2. ``not achieved`` when the target year has passed (latest observation in or after ``T``, or
   ``as_of > T``) and the target is not met. Rule ours: a deadline that has passed leaves no
   pace to judge; Open SDG uses the same two words for targets judged met / not met [S76].
3. ``regression`` when the target was already met at baseline (``d (TV - I_0) <= 0``) and the
   latest value no longer meets it. Rule ours (ESCAP's sources seen are silent): no progress
   was needed, the indicator moved the wrong way past the target. ``R`` is not defined (the
   required pace is zero or has the wrong sign) and stays NaN; ``reason`` says "target already
   met at baseline" so a ministry can check a target set below its own baseline.
4. otherwise ``on track`` (R >= 0.95), ``acceleration needed`` (0.60 <= R < 0.95),
   ``limited progress`` (0 <= R < 0.60), ``regression`` (R < 0); thresholds are parameters.

Zero or negative values (net jobs, O04, can be negative). The growth-rate form has no real
value when ``I_0``, ``I_cr`` or ``TV`` is <= 0. Statistics Canada replaces a zero base or
target by 0.001 (and warns the result depends on that choice), needs all values of one sign
and otherwise reports "unable to assess" [S76]; ESCAP's rules for such series (Working Paper
SD/WP/05, 2017, "measuring the otherwise ambiguous progress") were not available in full. Our
rule: when any of the three is <= 0, R is the ratio of average annual *changes*,

    CR_actual = (I_cr - I_0) / (t - t0),   CR_required = (TV - I_0) / (T - t0),

same thresholds (column ``ratio_form`` = "annual change"; otherwise "growth rate"). It is
defined for any signs, does not depend on the unit, and is the pace counterpart of CSI and
API, which are differences already.

ESCAP indices (operational form, domain.md 4.2; ESCAP's exact scale and caps were not
available), written so they also hold when the target was met at baseline:

    CSI = min((I_cr - I_0) / (TV - I_0), 1)   = min(1 - d (TV - I_cr) / |TV - I_0|, 1)
    API = (Î_T - I_0) / (TV - I_0)            = 1 - d (TV - Î_T) / |TV - I_0|
    gap = 1 - API

The left forms hold when the target lies on the better side of the baseline; the right forms
(the shortfall from the target in units of the distance baseline-target) are used otherwise
(ours), so API >= 1 still means "the projection meets the target". When ``TV = I_0`` CSI is 1
if the target is met and NaN otherwise; API likewise. ``Î_T``: the value at ``T`` from a
time-weighted linear trend through the baseline and every later observation, weights
``w_j = t_j - t_first + 1`` (ESCAP uses a time-weighted regression, Working Paper SD/WP/04,
2017, whose exact weights were not available; ``trend_weights="equal"`` gives OLS).
``anticipated``: "expected to meet" (API >= 1), "needs acceleration" (0 < API < 1), "no progress
expected" (API <= 0).

Confidence (parametric bootstrap, ours). Every value used (baseline, each later observation)
is drawn ``n_draws`` times, independently across years, from ``value + se * e`` with ``e``
standard normal, or Student t with the table's ``df`` when it has one (a stated baseline that
is not the series' value is exact). Each draw goes through the same rules; ``p_<status>`` is the
share of draws giving each status, ``status_probability`` the share giving the published
``status``, ``status_stable`` whether that share is >= ``stability`` (0.80), and
``status_label`` the status when stable, else "uncertain: X or Y" (the two most likely
statuses). ``csi_ci_*``, ``api_ci_*`` and ``projected_ci_*`` are percentile intervals of the
draws at ``alpha``. Draws ignore the correlation between years of a panel survey (it would
narrow the intervals of changes), so they are conservative for CSI and R. Fixed ``seed``: the
same inputs give identical output. A series without a standard error gets NaN probabilities.

Never a guess: fewer than two points, no target, no baseline or a target year not after the
baseline year give ``status`` NaN and the reason in ``reason`` (``status_label`` reads
``contract.NO_ASSESSMENT``).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .contract import NO_ASSESSMENT, STATUSES
from .indicators import registry as load_registry
from .results import ResultFrame, check_alpha

__all__ = ["assess", "STATUSES", "NO_ASSESSMENT", "trend", "trend_coefficients",
           "OUTPUT_COLUMNS", "POINT_COLUMNS", "UNCERTAINTY_COLUMNS", "stability_summary"]

PROBABILITY_COLUMNS: tuple[str, ...] = tuple("p_" + s.replace(" ", "_") for s in STATUSES)
POINT_COLUMNS: tuple[str, ...] = (
    "indicator", "ref_area", "breakdown", "direction", "direction_rationale", "baseline_year",
    "baseline_value", "latest_year", "latest_value", "target_year", "target_value", "n_points",
    "cr_actual", "cr_required", "ratio", "ratio_form", "status", "csi", "projected_value", "api",
    "gap", "anticipated", "target_passed", "reason",
)
UNCERTAINTY_COLUMNS: tuple[str, ...] = (
    "status_probability", "status_stable", "status_alternative", "status_label",
    *PROBABILITY_COLUMNS, "csi_ci_low", "csi_ci_high", "api_ci_low", "api_ci_high",
    "projected_ci_low", "projected_ci_high",
)
OUTPUT_COLUMNS: tuple[str, ...] = (*POINT_COLUMNS, *UNCERTAINTY_COLUMNS)
_TARGET_COLUMNS = ("indicator", "ref_area", "baseline_year", "baseline_value", "target_year",
                   "target_value")
_ROUNDING = 1e-9  # a change below this share of the scale is rounding (see _settle)


# ---------------------------------------------------------------------------------------------
# the rules, vectorised: the point estimate and every bootstrap draw go through the same code
# ---------------------------------------------------------------------------------------------
def _settle(value: Any, i0: Any, tv: Any) -> Any:
    """``value``, or ``i0`` when ``|value - i0| <= 1e-9 * max(|i0|, |TV|)``: a flat series
    projects to its baseline up to rounding (~1e-14), and that rounding must not flip "no
    progress expected" to "needs acceleration"."""
    tol = _ROUNDING * np.maximum(np.abs(i0), np.abs(tv))
    return np.where(np.abs(value - i0) <= tol, i0, value)


def _rates(i0: Any, icr: Any, tv: Any, done: Any, needed: Any) -> tuple[Any, Any, Any]:
    """Actual and required pace: growth rates when I_0, I_cr and TV are all > 0, else average
    annual changes (module docstring). Returns (actual, required, growth_form)."""
    growth = (i0 > 0) & (icr > 0) & (tv > 0)
    with np.errstate(all="ignore"):
        act = np.where(growth, np.abs(icr / i0) ** (1.0 / done) - 1.0, (icr - i0) / done)
        req = np.where(growth, np.abs(tv / i0) ** (1.0 / needed) - 1.0, (tv - i0) / needed)
    return act, req, growth


def _classify(i0: Any, icr: Any, tv: Any, d: Any, done: Any, needed: Any, passed: Any,
              thresholds: tuple[float, float]) -> tuple[Any, Any, Any, Any, Any]:
    """Status code (index into ``STATUSES``), ratio, actual and required pace, growth form."""
    icr = _settle(icr, i0, tv)
    act, req, growth = _rates(i0, icr, tv, done, needed)
    met = d * (icr - tv) >= 0
    met_at_baseline = d * (tv - i0) <= 0
    with np.errstate(all="ignore"):
        ratio = np.where(met_at_baseline, np.nan, act / req)
    on, acc = thresholds
    code = np.select([ratio >= on, ratio >= acc, ratio >= 0], [1, 2, 3], 4)
    code = np.where(met_at_baseline, 4, code)
    code = np.where(passed & ~met, 5, code)
    code = np.where(met, 0, code)
    return code, ratio, act, req, growth


def _indices(i0: Any, icr: Any, proj: Any, tv: Any, d: Any) -> tuple[Any, Any]:
    """CSI and API (module docstring), elementwise."""
    icr, proj = _settle(icr, i0, tv), _settle(proj, i0, tv)
    dist, scale = tv - i0, np.abs(tv - i0)
    usual = d * dist > 0
    with np.errstate(all="ignore"):
        csi = np.where(usual, (icr - i0) / dist, 1.0 - d * (tv - icr) / scale)
        api = np.where(usual, (proj - i0) / dist, 1.0 - d * (tv - proj) / scale)
    csi = np.minimum(csi, 1.0)
    csi = np.where(scale > 0, csi, np.where(d * (icr - tv) >= 0, 1.0, np.nan))
    api = np.where(scale > 0, api, np.where(d * (proj - tv) >= 0, 1.0, np.nan))
    return csi, api


def _anticipated(api: float) -> object:
    if not np.isfinite(api):
        return np.nan
    return ("expected to meet" if api >= 1 else "needs acceleration" if api > 0
            else "no progress expected")


# ---------------------------------------------------------------------------------------------
# the time-weighted trend
# ---------------------------------------------------------------------------------------------
def _weights(years: np.ndarray, how: str | Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    if callable(how):
        return np.asarray(how(years), dtype=float)
    if how == "linear":
        return years - years.min() + 1.0
    if how == "equal":
        return np.ones(len(years))
    raise ValueError(f"trend_weights must be 'linear', 'equal' or a callable, got {how!r}")


def trend_coefficients(years: Sequence[float], at: float, *,
                       weights: str | Callable[[np.ndarray], np.ndarray] = "linear") -> np.ndarray:
    """``a`` with ``trend(years, values, at) = a @ values``: the weighted least-squares line is
    linear in the values, ``a_j = w_j / W + (at - t̄) w_j (t_j - t̄) / S`` with ``W = Σ w``,
    ``t̄ = Σ w t / W``, ``S = Σ w (t - t̄)²``. NaN when fewer than two distinct years."""
    t = np.asarray(years, dtype=float)
    if len(t) < 2 or len(np.unique(t)) < 2:
        return np.full(len(t), np.nan)
    w = _weights(t, weights)
    tm = np.sum(w * t) / np.sum(w)
    return w / np.sum(w) + (at - tm) * w * (t - tm) / np.sum(w * (t - tm) ** 2)


def trend(years: Sequence[float], values: Sequence[float], at: float, *,
          weights: str | Callable[[np.ndarray], np.ndarray] = "linear") -> float:
    """Time-weighted least-squares line through (years, values), evaluated at year ``at``."""
    a = trend_coefficients(years, at, weights=weights)
    return float(a @ np.asarray(values, dtype=float)) if len(a) else float("nan")


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _check_targets(targets: pd.DataFrame) -> pd.DataFrame:
    tg = targets.rename(columns={"country": "ref_area"}) if "ref_area" not in targets.columns \
        else targets.copy()
    tmiss = [c for c in _TARGET_COLUMNS if c not in tg.columns]
    if tmiss:
        raise KeyError(f"targets table lacks {tmiss}; columns: indicator, country, "
                       "baseline_year, baseline_value, target_year, target_value")
    dup = tg.duplicated(["indicator", "ref_area"], keep=False)
    if dup.any():
        pairs = tg.loc[dup, ["indicator", "ref_area"]].drop_duplicates().values.tolist()
        raise ValueError(f"targets has several rows for {pairs[:5]}; one target per indicator "
                         "and area")
    return tg


def _check_parameters(thresholds: tuple[float, float], n_draws: int, stability: float,
                      alpha: float) -> None:
    on, acc = thresholds
    if not (0 <= acc <= on):
        raise ValueError(f"thresholds must be (on_track, acceleration) with 0 <= second <= "
                         f"first, got {thresholds!r}")
    if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 0):
        raise ValueError(f"n_draws must be an integer >= 0 (0: no uncertainty), got {n_draws!r}")
    if not 0.5 < stability <= 1:
        raise ValueError(f"stability must be in (0.5, 1] (share of draws), got {stability!r}")
    check_alpha(alpha)


def _points(indicators: pd.DataFrame, breakdown: str, group: str) -> tuple[pd.DataFrame, dict]:
    """The selected rows and, per (indicator, ref_area), the usable points sorted by year."""
    miss = [c for c in ("indicator", "ref_area", "time_period", "value")
            if c not in indicators.columns]
    if miss:
        raise KeyError(f"indicators table lacks {miss}; pass indicators.compute() output")
    sel = indicators
    if "breakdown" in sel.columns:
        sel = sel[(sel["breakdown"] == breakdown) & (sel["group"] == group)]
    ok = sel["value"].notna()
    if "obs_status" in sel.columns:
        ok &= sel["obs_status"] != "M"
    pts = sel[ok].copy()
    for c in ("se", "df"):
        pts[c] = pts[c].astype(float) if c in pts.columns else np.nan
    series = {k: g.sort_values("time_period") for k, g in
              pts.groupby(["indicator", "ref_area"], sort=True)}
    return sel, series


# ---------------------------------------------------------------------------------------------
# one indicator x area
# ---------------------------------------------------------------------------------------------
@dataclass
class _Case:
    """Everything the rules need for one assessable indicator x area."""
    years: np.ndarray   # baseline year, then every later observation
    values: np.ndarray
    se: np.ndarray      # 0 for a stated baseline; NaN when unknown
    df: np.ndarray      # NaN: normal draws
    coef: np.ndarray    # trend coefficients at the target year
    tv: float
    d: float
    done: float         # t - t0
    needed: float       # T - t0
    passed: bool
    row: int            # index into the output rows


def _baseline(tgt: pd.Series, years: np.ndarray, vals: np.ndarray, ses: np.ndarray,
              dfs: np.ndarray) -> tuple[float, float, float]:
    """(I_0, its se, its df): the stated baseline, or the series' value in the baseline year. A
    stated baseline that equals the series' value (up to rounding) carries the series' se;
    another stated baseline is a fixed reference (se 0)."""
    at = years == int(tgt["baseline_year"])
    stated = float(tgt["baseline_value"]) if pd.notna(tgt["baseline_value"]) else np.nan
    if not at.any():
        return stated, 0.0, np.nan
    v, s, f = float(vals[at][0]), float(ses[at][0]), float(dfs[at][0])
    if np.isnan(stated) or abs(stated - v) <= _ROUNDING * max(abs(v), abs(stated)):
        return (v if np.isnan(stated) else stated), s, f
    return stated, 0.0, np.nan


def _unassessable(t0: int, T: int, i0: float, tv: float, later: np.ndarray) -> str:
    reasons = []
    if not np.isfinite(tv):
        reasons.append("no target value")
    if np.isnan(i0):
        reasons.append(f"no baseline value (none given and no observation in {t0})")
    if not later.any():
        reasons.append(f"fewer than 2 points: no observation after the baseline year {t0}")
    if T <= t0:
        reasons.append("target year is not after the baseline year")
    return "; ".join(reasons)


def _case(row: dict, tgt: pd.Series, s: pd.DataFrame | None, d: float, as_of: int | None,
          trend_weights: Any, index: int) -> _Case | None:
    """Fill the target fields of ``row``; the case to assess, or None (``reason`` says why)."""
    t0, T, tv = int(tgt["baseline_year"]), int(tgt["target_year"]), float(tgt["target_value"])
    row.update(baseline_year=t0, target_year=T, target_value=tv)
    cols = {c: (s[c].to_numpy(dtype=float) if s is not None else np.array([]))
            for c in ("time_period", "value", "se", "df")}
    years, vals = cols["time_period"], cols["value"]
    i0, se0, df0 = _baseline(tgt, years, vals, cols["se"], cols["df"])
    row["baseline_value"] = i0
    later = years > t0
    row["n_points"] = int(np.isfinite(i0)) + int(later.sum())
    if later.any():
        row.update(latest_year=int(years[later][-1]), latest_value=float(vals[later][-1]))
    why = _unassessable(t0, T, i0, tv, later)
    if why:
        row["reason"] = why
        return None
    t = int(row["latest_year"])
    py = np.concatenate([[t0], years[later]])
    return _Case(years=py, values=np.concatenate([[i0], vals[later]]),
                 se=np.concatenate([[se0], cols["se"][later]]),
                 df=np.concatenate([[df0], cols["df"][later]]),
                 coef=trend_coefficients(py, T, weights=trend_weights), tv=tv, d=d,
                 done=float(t - t0), needed=float(T - t0),
                 passed=bool(t >= T or (as_of is not None and as_of > T)), row=index)


def _notes(c: _Case, growth: bool, direction: str) -> list[str]:
    i0 = c.values[0]
    notes = []
    if c.d * (c.tv - i0) <= 0:
        notes.append(f"target already met at baseline ({i0:g} vs target {c.tv:g}, {direction} "
                     "is better): check the target")
    if not growth:
        notes.append("zero or negative value: pace ratio of average annual changes")
    if c.passed:
        notes.append(f"target year {int(c.years[0] + c.needed)} reached")
    return notes


def _point(c: _Case, row: dict, thresholds: tuple[float, float]) -> None:
    """The published figures of one case (the rules applied to the values themselves)."""
    i0, icr = c.values[0], c.values[-1]
    code, ratio, act, req, growth = _classify(i0, icr, c.tv, c.d, c.done, c.needed,
                                              np.bool_(c.passed), thresholds)
    proj = float(c.coef @ c.values)
    csi, api = _indices(i0, icr, proj, c.tv, c.d)
    row.update(cr_actual=float(act), cr_required=float(req), ratio=float(ratio),
               ratio_form="growth rate" if growth else "annual change",
               status=STATUSES[int(code)], csi=float(csi), projected_value=proj,
               api=float(api), gap=1.0 - float(api), anticipated=_anticipated(float(api)),
               target_passed=c.passed)
    notes = _notes(c, bool(growth), str(row["direction"]))
    if notes:
        row["reason"] = "; ".join(notes)


# ---------------------------------------------------------------------------------------------
# confidence: parametric bootstrap of every case at once
# ---------------------------------------------------------------------------------------------
def _stack(cases: list[_Case]) -> dict[str, np.ndarray]:
    """Cases padded to a common number of points (padding: value 0, se 0, coefficient 0)."""
    m = max(len(c.values) for c in cases)
    out = {k: np.zeros((len(cases), m)) for k in ("values", "se", "coef")}
    out["df"] = np.full((len(cases), m), np.nan)
    for r, c in enumerate(cases):
        n = len(c.values)
        for k in ("values", "se", "coef", "df"):
            out[k][r, :n] = getattr(c, k)
    out["last"] = np.array([len(c.values) - 1 for c in cases])
    for k in ("tv", "d", "done", "needed", "passed"):
        out[k] = np.array([getattr(c, k) for c in cases])[:, None]
    return out


def _draw(st: dict[str, np.ndarray], n_draws: int, seed: int) -> np.ndarray:
    """Values drawn from value + se * e, e ~ N(0, 1) or Student t(df): (cases, draws, points)."""
    rng = np.random.default_rng(seed)
    shape = (st["values"].shape[0], n_draws, st["values"].shape[1])
    e = rng.standard_normal(shape)
    has_t = np.isfinite(st["df"]) & (st["df"] > 0)
    if has_t.any():
        dfx = np.where(has_t, st["df"], 1.0)[:, None, :]
        e = np.where(has_t[:, None, :], e * np.sqrt(dfx / rng.chisquare(dfx, size=shape)), e)
    return st["values"][:, None, :] + np.nan_to_num(st["se"])[:, None, :] * e


def _interval(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, said in docs
        lo, hi = np.nanquantile(x, [alpha / 2, 1 - alpha / 2], axis=1)
    return lo, hi


def _simulate(cases: list[_Case], thresholds: tuple[float, float], n_draws: int, seed: int,
              alpha: float) -> dict[str, np.ndarray]:
    """Status probabilities and percentile intervals for every case (vectorised)."""
    st = _stack(cases)
    v = _draw(st, n_draws, seed)
    i0 = v[:, :, 0]
    icr = np.take_along_axis(v, st["last"][:, None, None], axis=2)[:, :, 0]
    proj = np.einsum("rbm,rm->rb", v, st["coef"])
    code = _classify(i0, icr, st["tv"], st["d"], st["done"], st["needed"],
                     st["passed"].astype(bool), thresholds)[0]
    csi, api = _indices(i0, icr, proj, st["tv"], st["d"])
    out = {"p": np.stack([(code == k).mean(axis=1) for k in range(len(STATUSES))], axis=1)}
    for name, x in (("csi", csi), ("api", api), ("projected", proj)):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _interval(x, alpha)
    return out


def _label(status: str, p: np.ndarray, stability: float) -> dict[str, object]:
    """status_probability, status_stable, status_alternative, status_label for one case."""
    k = STATUSES.index(status)
    order = [j for j in np.argsort(-p, kind="stable") if p[j] > 0]
    others = [j for j in order if j != k]
    stable = bool(p[k] >= stability)
    top = order[:2] if len(order) >= 2 else [*order, k]
    label = status if stable else "uncertain: " + " or ".join(STATUSES[j] for j in top)
    return {"status_probability": float(p[k]), "status_stable": stable,
            "status_alternative": STATUSES[others[0]] if others else np.nan,
            "status_label": label}


def _confidence(cases: list[_Case], rows: list[dict], thresholds: tuple[float, float],
                n_draws: int, seed: int, alpha: float, stability: float) -> None:
    """Fill the uncertainty columns of ``rows`` (cases whose every se is known)."""
    known = [c for c in cases if np.isfinite(c.se).all()]
    if not known or n_draws == 0:
        return
    sim = _simulate(known, thresholds, n_draws, seed, alpha)
    for r, c in enumerate(known):
        row = rows[c.row]
        row.update(dict(zip(PROBABILITY_COLUMNS, sim["p"][r].tolist())))
        row.update({k: float(v[r]) for k, v in sim.items() if k != "p"})
        row.update(_label(str(row["status"]), sim["p"][r], stability))


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def _frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    for c in ("baseline_year", "latest_year", "target_year"):
        out[c] = out[c].astype("Int64")
    out["n_points"] = out["n_points"].astype("int64")
    for c in ("status", "anticipated", "reason", "direction"):
        out[c] = out[c].astype("str")
    out["target_passed"] = out["target_passed"].astype("boolean")
    out["status_stable"] = out["status_stable"].astype("boolean")
    no_status = out["status"].isna() | (out["status"] == "nan")
    label = out["status_label"].astype(object)
    label = label.where(label.notna(), out["status"].astype(object))
    out["status_label"] = label.where(~no_status, NO_ASSESSMENT)
    return out.sort_values(["indicator", "ref_area"], kind="stable").reset_index(drop=True)


def _choices(thresholds: tuple[float, float], trend_weights: Any, n_draws: int, seed: int,
             stability: float, as_of: int | None, registry_path: str) -> dict[str, object]:
    on, acc = thresholds
    return {
        "method": "UN ESCAP CSI/API (operational form, domain.md 4.2); pace ratio R with "
                  "Statistics Canada / Open SDG categories",
        "thresholds": f"on track R >= {on}, acceleration needed R >= {acc}, limited progress "
                      "R >= 0, regression R < 0",
        "pace ratio": "growth rates when baseline, latest and target > 0, else average annual "
                      "changes",
        "projection": "time-weighted least squares, weights "
                      + (trend_weights if isinstance(trend_weights, str) else "custom"),
        "target year passed": "achieved / not achieved"
                              + (f" (as of {as_of})" if as_of is not None else ""),
        "direction": f"registry {registry_path}",
        "uncertainty": f"parametric bootstrap, {n_draws} draws, seed {seed}, normal or t(df)",
        "stability threshold": stability,
    }


def assess(indicators: pd.DataFrame, targets: pd.DataFrame, *,
           thresholds: tuple[float, float] = (0.95, 0.60),
           registry: str | Path | pd.DataFrame | None = None,
           trend_weights: str | Callable[[np.ndarray], np.ndarray] = "linear",
           breakdown: str = "total", group: str = "total", as_of: int | None = None,
           n_draws: int = 1000, seed: int = 12345, stability: float = 0.80,
           alpha: float = 0.05) -> ResultFrame:
    """Progress of every indicator x ref_area towards its target (one row each).

    ``indicators``: tidy rows from :func:`msme_eval.indicators.compute` (rows with obs_status
    M or a suppressed value are not data points; ``se`` and ``df`` feed the confidence).
    ``targets``: ``indicator``, ``country`` (or ``ref_area``), ``baseline_year``,
    ``baseline_value`` (NaN: taken from the series), ``target_year``, ``target_value``.
    Series without a target and targets without data are kept with ``status`` NaN and a
    ``reason``. ``as_of``: the assessment year (None: the data decide whether the target year
    has passed). Columns ``OUTPUT_COLUMNS``; rules and formulas in the module docstring.
    Returns a :class:`msme_eval.results.ResultFrame` whose ``choices`` list every rule used.
    """
    _check_parameters(thresholds, n_draws, stability, alpha)
    tg = _check_targets(targets)
    reg = registry if isinstance(registry, pd.DataFrame) else load_registry(registry)
    info = reg.set_index("id")
    sel, series = _points(indicators, breakdown, group)
    keys = pd.concat([tg[["indicator", "ref_area"]],
                      sel[["indicator", "ref_area"]].drop_duplicates()]).drop_duplicates()
    targets_by = tg.set_index(["indicator", "ref_area"])
    rows: list[dict] = []
    cases: list[_Case] = []
    for ind, area in keys.itertuples(index=False):
        known = ind in info.index
        row: dict[str, object] = {c: np.nan for c in OUTPUT_COLUMNS}
        row.update(indicator=ind, ref_area=area, breakdown=breakdown, n_points=0,
                   direction=info.at[ind, "direction"] if known else np.nan,
                   direction_rationale=info["direction_rationale"].get(ind, np.nan)
                   if "direction_rationale" in info.columns else np.nan)
        s = series.get((ind, area))
        rows.append(row)
        if (ind, area) not in targets_by.index:
            row["reason"] = "no target for this indicator and area"
            if s is not None:
                row.update(latest_year=int(s["time_period"].iloc[-1]),
                           latest_value=float(s["value"].iloc[-1]), n_points=len(s))
            continue
        d = -1.0 if row["direction"] == "lower" else 1.0
        case = _case(row, targets_by.loc[(ind, area)], s, d, as_of, trend_weights, len(rows) - 1)
        if case is not None:
            _point(case, row, thresholds)
            cases.append(case)
    _confidence(cases, rows, thresholds, n_draws, seed, alpha, stability)
    out = _frame(rows)
    out.attrs["method"] = _choices(thresholds, trend_weights, n_draws, seed, stability, as_of,
                                   str(reg.attrs.get("path", "given as a DataFrame")))
    return ResultFrame.wrap(out, choices=out.attrs["method"], alpha=alpha,
                            title="Progress to target", estimate_column="csi")


def stability_summary(progress: pd.DataFrame) -> dict[str, object]:
    """How many published statuses are stable, for the page.

    Returns ``n`` (indicator x area with a status), ``stable``, ``uncertain``, ``unknown``
    (no standard error) and ``text``: "k of n statuses are stable; m uncertain" (plus "; u
    without a standard error" when u > 0).
    """
    has = progress["status"].notna() & (progress["status"].astype(str) != "nan")
    st = progress.loc[has, "status_stable"]
    n, stable, unknown = int(has.sum()), int((st == True).sum()), int(st.isna().sum())  # noqa: E712
    uncertain = n - stable - unknown
    text = f"{stable} of {n} statuses are stable; {uncertain} uncertain"
    if unknown:
        text += f"; {unknown} without a standard error"
    return {"n": n, "stable": stable, "uncertain": uncertain, "unknown": unknown, "text": text}
