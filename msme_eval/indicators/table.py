"""Design-based computation of the registry indicators: tidy, SDMX-like rows.

Every value is a ratio of weighted totals (or a weighted total, or the delta-method function
``(A/B)/(C/D)`` for K04) estimated on the full survey design with Taylor-linearised standard
errors (:mod:`msme_eval.survey`). The work has three stages:

1. **Grouped sums over the firm rows** (stage a, where the data live: ``np.bincount`` per
   breakdown in memory; on DuckDB/Spark ONE aggregation at the finest key -- PSU-period x the
   group of every breakdown -- rolled up per breakdown, :mod:`._sql`): weighted sums of every
   indicator's numerator/denominator parts per (country, stratum, PSU, time period, group)
   -- the only step that touches all rows -- and their sums per (stratum, period, group).
2. **Linearisation**: point estimates are ratios of the cells' sums (plus a macro
   denominator); each estimator's linearised variable (``(a - R b) / B`` for a ratio,
   ``R (a/A - b/B - c/C + d/D)`` for K04, ``a`` for a total) is a linear combination of the
   PSU totals, and a second pass over the PSU totals (not the rows) sums its centred squares
   per stratum. The variance algebra is the survey estimator's own (:func:`survey.psu_centre`,
   :func:`survey.stratum_variance`, :func:`survey.satterthwaite_df`, :func:`survey.t_interval`):
   with-replacement PSUs over the full design, Satterthwaite effective df per cell (or the
   nominal df), calibration residuals when the weights are post-stratified. The regional
   aggregate uses the same table with money converted to USD and countries as independent
   strata. Only stage (a) is specific to this table (:mod:`msme_eval.indicators.parts` says
   what it sums; :mod:`msme_eval.indicators._sql` runs it in SQL).
3. **Flags and disclosure control** (``obs_status``, ``comment``, ``conf_status``).

Design conventions (documented in ``rules()``):

* Strata are nested in countries (``country|strata``) and PSUs in strata; a PSU keeps its
  identity across years, so a year or a breakdown group is a *domain* of the full design
  (rows outside it contribute 0) and year-to-year indicators (survival, net jobs) get the
  covariance between waves. No ``strata`` column: one stratum per country; no ``psu``
  column: the firm (``firm_id``) is the PSU; no ``weight`` column: weight 1 (census).
* Missing item values: a record whose value needed by an indicator is missing is left out of
  that indicator's numerator *and* denominator (available-case estimate); the count is given
  in ``comment``. Nothing is imputed.
* ``obs_status`` (SDMX CL_OBS_STATUS): ``A`` normal; ``E`` estimated -- the denominator comes
  from the macro table because the panel has no large firms for that country-year (coverage
  substitution), or an ASEAN aggregate including such a country; ``M`` missing -- not
  available, with the reason in ``comment``. (K03's GDP denominator is always macro by
  definition and is flagged ``A``.)
* Regional aggregate (``ref_area`` = ``contract.REGION``, "ASEAN"): pooled ratio of the sums of country totals over the
  countries where the indicator is available that year (``comment`` lists them); money
  converted with the macro ``usd_per_lcu`` of the country-year; countries are independent
  strata, so the covariance of the pooled totals is the sum of the countries' covariances.
  Not computed for the ``region`` breakdown (regions are national).
* Breakdown cells: ``within_group`` indicators are estimated on the MSMEs of the cell;
  ``share_of_total`` indicators (K01-K03, K06, K07, O04) give the cell's contribution to the
  country-year total (e.g. micro firms' share of employment), and K04 compares the cell's
  MSMEs with all large firms of the country-year. The ``size_class`` breakdown publishes the
  MSME classes only (micro, small, medium). A missing group label is shown as "not stated"
  ("not supported" for ``programme_type``).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import disclosure, engines, survey
from ..contract import MSME_CLASSES, REGION
from ..results import ResultFrame, check_alpha
from ._protect import breakdown_cell_stats, collect_fine_stats, protect_table
from ._sql import stage_for
from .parts import (
    BOOL_LABELS,
    NA_LABELS,
    TOTAL,
    Moments,
    centred_ss,
    disclosure_parts,
    is_share,
    moment_names,
    parts,
    roles,
    share_roles,
)
from .registry import registry as load_registry

__all__ = ["compute", "availability", "OUTPUT_COLUMNS", "OBS_STATUS", "BREAKDOWNS", "FEATURES",
           "rules"]

OUTPUT_COLUMNS: tuple[str, ...] = (
    "indicator", "ref_area", "time_period", "breakdown", "group", "value", "se", "ci_low",
    "ci_high", "n", "obs_status", "conf_status", "unit", "comment", "df", "df_nominal",
    "df_rule", "n_psu",
)
OBS_STATUS: dict[str, str] = {
    "A": "normal value",
    "E": "estimated value: denominator from the macro table (panel has no large firms), "
         "or an ASEAN aggregate including such a country",
    "M": "missing value: indicator not available (reason in comment)",
}
BREAKDOWNS: tuple[str, ...] = ("size_class", "owner_female", "urban", "sector", "region",
                               "programme_type")


def rules() -> dict[str, str]:
    """The estimation, flagging and aggregation rules, for methods notes in reports."""
    return {
        "estimator": "ratio of weighted totals (Horvitz-Thompson), K04 as (A/B)/(C/D), net jobs "
                     "as a weighted total; Taylor-linearised SEs, with-replacement PSUs, strata "
                     "nested in countries, domains on the full design; CI with the "
                     "Satterthwaite effective df of each cell (df='nominal': the country's "
                     "#PSUs - #strata), on the logit scale for percentages of firms and "
                     "shares of a panel total (K02 K06 K07 with the panel's denominator; R "
                     "svyciprop), on the log scale for K04 (a ratio of positive totals; "
                     "symmetric if its value is <= 0), symmetric t otherwise; "
                     "calibrated_to='strata': variance of the "
                     "post-stratification residuals",
        "missing_items": "records with a missing item value are left out of that indicator's "
                         "numerator and denominator (available case); count in comment",
        "macro_fallback": "K02/K06/K07: when the panel has no large firms for the country-year, "
                          "the denominator is the macro total (obs_status E); K03 always uses "
                          "macro GDP; K01/K04 are not available without large firms",
        "asean_aggregate": "pooled ratio of country totals over the countries where the "
                           "indicator is available; money in USD with macro usd_per_lcu; "
                           "countries independent strata (covariances add)",
        "obs_status": "; ".join(f"{k} {v}" for k, v in OBS_STATUS.items()),
        "disclosure": "disclosure.protect on every row (>= 3 contributing firms, (2, 85%) "
                      "dominance on unweighted magnitudes, secondary suppression); K04 also "
                      "needs its comparison group (the large firms of the country-year) to "
                      "pass both rules, else it is suppressed and the comment says so",
    }


# ------------------------------------------------------------------------------------------
# row-level features
# ------------------------------------------------------------------------------------------
def _f(s: pd.Series) -> np.ndarray:
    """Any numeric/boolean column as float64 with NaN for missing."""
    if (isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object
            or pd.api.types.is_string_dtype(s)):
        raise TypeError(f"column {s.name!r} is not numeric or boolean (dtype {s.dtype}).")
    return s.to_numpy(dtype="float64", na_value=np.nan)


def is_proportion(ind: dict[str, Any]) -> bool:
    """True for a percentage of firms: a ``ratio`` with ``scale`` 100 whose denominator counts
    firms (``value: one``) from the panel, so the value is a weighted mean of a 0/1 feature."""
    den = ind.get("denominator_spec") or {}
    return (ind.get("kind") == "ratio" and float(ind.get("scale") or 1) == 100
            and den.get("value") == "one" and not ind.get("macro_only"))


def is_bounded_share(ind: dict[str, Any]) -> bool:
    """True for a percentage share of a panel total: a percentage of firms
    (:func:`is_proportion`), or a ``ratio`` with ``scale`` 100 whose numerator and denominator
    add up the same non-negative measure (``value``) and whose numerator's population is part
    of the denominator's (``msme`` of ``all``): K02, K06, K07 -- the MSMEs' employees, loans,
    exports over all enterprises'. Its value is a proportion of the denominator, in [0, 100]."""
    if is_proportion(ind):
        return True
    num, den = ind.get("numerator_spec") or {}, ind.get("denominator_spec") or {}
    return (ind.get("kind") == "ratio" and float(ind.get("scale") or 1) == 100
            and not ind.get("macro_only") and num.get("value") is not None
            and num.get("value") == den.get("value")
            and den.get("population") in ("all", num.get("population")))


def interval(ind: dict[str, Any], value: np.ndarray, se: np.ndarray, df: np.ndarray,
             alpha: float, macro: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The published ``1 - alpha`` interval of a cell (``t = t_{df, 1 - alpha/2}``):

    * a percentage share of a panel total (:func:`is_bounded_share`: a percentage of firms, or K02 /
      K06 / K07, the MSMEs' share of the enterprises' employees, loans, exports) with its
      value in [0, 100] and its denominator from the panel (``macro`` False: not the macro
      table's total, which is not a sum over the panel): the logit interval
      ``100 * expit(logit(p) -/+ t * se_p / (p (1 - p)))``, the default of R
      ``survey::svyciprop`` and Stata ``svy: proportion``, which stays in [0, 100] and keeps
      coverage in small domains where the estimate and its SE are correlated
      (tests/test_survey_coverage.py: women-owned MSMEs' percentages of firms 91.0-94.2% ->
      94.6-96.4%; their share of employment, K02, 92.0 / 92.3% -> 95.5 / 93.3% at 3 / 8 PSUs
      per stratum, the symmetric interval missing almost only from below);
    * K04 (``kind: relative_ratio``, ``(A/B)/(C/D)``) where the value is > 0: the log-scale
      interval ``value * exp(-/+ t * se / value)`` (:func:`survey.log_interval`). Its estimate
      and SE are positively correlated (the large firms' heavy-tailed value added enters C),
      so the symmetric interval misses mostly from below; on the log scale the women-owned
      cells' coverage goes from 90.4 / 85.9 / 86.6% to 94.0 / 89.5 / 88.9% at 2 / 3 / 8 PSUs
      per stratum, means over 16 simulated seeds (all-MSME cells within about +-1 point:
      +0.7 at 2 PSUs, -0.4 to -0.7 at 8; tests/test_survey_coverage.py, issue #14). A value <= 0 (negative
      value added) keeps the symmetric interval;
    * otherwise the symmetric t interval ``value -/+ t * se``.
    """
    lo, hi = survey.t_interval(value, se, df, alpha)
    if is_bounded_share(ind):
        v = np.asarray(value, dtype=float)
        share = (v >= 0) & (v <= 100) & (True if macro is None else ~np.asarray(macro, bool))
        p_lo, p_hi = survey.logit_interval(np.where(share, v, 50.0) / 100,
                                           np.asarray(se, dtype=float) / 100, df, alpha)
        return np.where(share, 100 * p_lo, lo), np.where(share, 100 * p_hi, hi)
    if ind.get("kind") == "relative_ratio":
        v = np.asarray(value, dtype=float)
        pos = v > 0
        log_lo, log_hi = survey.log_interval(np.where(pos, v, 1.0), se, df, alpha)
        lo, hi = np.where(pos, log_lo, lo), np.where(pos, log_hi, hi)
    return lo, hi


#: the df rules of :mod:`msme_eval.survey` that the indicator table implements
TABLE_DF_RULES = ("satterthwaite", "nominal")


def _check_df_rule(df: str) -> None:
    """Refuse a survey df rule the table does not implement (rather than fall back silently).

    ``df="design"`` (:func:`survey.design_df`, the df from the weights) needs each PSU's sum of
    squared weights per cell, which the indicator stages do not compute; in issue #14's
    coverage simulation it fixes K09 at 3 PSUs (92.6% -> 95.0%) but pushes 14 of the 18
    proportion cells at 2 and 3 PSUs above 97% (up to 99.3%), so Satterthwaite stays the
    default.
    """
    if df not in TABLE_DF_RULES:
        raise ValueError(
            f"indicators.compute supports df in {TABLE_DF_RULES}, got {df!r}. Fix: use "
            "df='satterthwaite' (default) or 'nominal'; for the df from the design use "
            "survey.ratio(..., df='design') on the cell's records.")


class _Ctx:
    """Lazily computed, cached row features of one panel."""

    def __init__(self, panel: pd.DataFrame, year_col: str, area_col: str) -> None:
        self.panel = panel
        self.year_col = year_col
        self.area_col = area_col
        self.cache: dict[str, np.ndarray] = {}
        self._next: np.ndarray | None = None

    def year(self) -> np.ndarray:
        return self.get("__year__")

    def next_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(position of the same firm's row in year t+1 or -1, has-year-t+1-in-country flag)."""
        if self._next is None:
            p = self.panel
            firm, _ = pd.factorize(p["firm_id"])
            year = self.year().astype(np.int64)
            y0 = int(year.min())
            span = int(year.max()) - y0 + 2
            key = firm.astype(np.int64) * span + (year - y0)
            idx = pd.Index(key)
            if not idx.is_unique:
                dup = p.index[idx.duplicated(keep=False)][:10].tolist()
                raise ValueError(f"panel has duplicate (firm_id, {self.year_col}) rows, e.g. index "
                                 f"{dup}. Fix: one row per firm and year (io.read_panel "
                                 "checks it).")
            nxt = idx.get_indexer(key + 1)
            area, _ = pd.factorize(p[self.area_col])
            ckey = area.astype(np.int64) * span + (year - y0)
            has_next_year = pd.Index(np.unique(ckey)).get_indexer(ckey + 1) >= 0
            self._next = (nxt, has_next_year)
        return self._next

    def get(self, name: str) -> np.ndarray:
        if name not in self.cache:
            self.cache[name] = FEATURES[name][1](self) if name in FEATURES else _f(self.panel[name])
        return self.cache[name]


def _size_flag(ctx: _Ctx, classes: Sequence[str]) -> np.ndarray:
    sc = ctx.panel["size_class"]
    flag = sc.isin(classes).to_numpy(dtype=bool)
    return np.where(sc.isna().to_numpy(), np.nan, flag.astype(float))


def _kleene_or(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.where((a == 1) | (b == 1), 1.0, np.where((a == 0) & (b == 0), 0.0, np.nan))
    return out


def _survived(ctx: _Ctx) -> np.ndarray:
    nxt, has_next = ctx.next_index()
    return np.where(has_next, (nxt >= 0).astype(float), np.nan)


def _jobs_change(ctx: _Ctx) -> np.ndarray:
    nxt, has_next = ctx.next_index()
    emp = ctx.get("employees")
    later = np.where(nxt >= 0, emp[np.maximum(nxt, 0)], 0.0)
    return np.where(has_next, later - emp, np.nan)


def _entrant_jobs(ctx: _Ctx) -> np.ndarray:
    born = ctx.get("birth_year")
    emp = ctx.get("employees")
    return np.where(np.isnan(born), np.nan, np.where(born == ctx.year(), emp, 0.0))


def _gt0(col: str) -> Callable[[_Ctx], np.ndarray]:
    def f(ctx: _Ctx) -> np.ndarray:
        v = ctx.get(col)
        return np.where(np.isnan(v), np.nan, (v > 0).astype(float))
    return f


def _age_le(k: int) -> Callable[[_Ctx], np.ndarray]:
    def f(ctx: _Ctx) -> np.ndarray:
        age = ctx.year() - ctx.get("birth_year")
        return np.where(np.isnan(age), np.nan, (age <= k).astype(float))
    return f


#: derived features: name -> (panel columns needed, function of the context)
FEATURES: dict[str, tuple[tuple[str, ...], Callable[[_Ctx], np.ndarray]]] = {
    "__year__": ((), lambda c: _f(c.panel[c.year_col])),
    "one": ((), lambda c: np.ones(len(c.panel))),
    "all": ((), lambda c: np.ones(len(c.panel))),
    "msme": (("size_class",), lambda c: _size_flag(c, MSME_CLASSES)),
    "large": (("size_class",), lambda c: _size_flag(c, ("large",))),
    "age": (("birth_year",), lambda c: c.year() - c.get("birth_year")),
    "start_up": (("birth_year",), _age_le(1)),
    "young": (("birth_year",), _age_le(5)),
    "international": (("exports", "imports_or_gvc"),
                      lambda c: _kleene_or(_gt0("exports")(c), c.get("imports_or_gvc"))),
    "has_loan": (("loans_outstanding",), _gt0("loans_outstanding")),
    "rural": (("urban",), lambda c: 1.0 - c.get("urban")),
    "survived_next": (("firm_id",), _survived),
    "jobs_change_next": (("firm_id", "employees"), _jobs_change),
    "entrant_jobs": (("birth_year", "employees"), _entrant_jobs),
}


# ------------------------------------------------------------------------------------------
# indicator parts
# ------------------------------------------------------------------------------------------
def _needed_columns(ind: dict[str, Any]) -> list[str]:
    cols = list(ind["required_columns"])
    for part in parts(ind):
        for feat in (part.value, part.population):
            cols += list(FEATURES[feat][0]) if feat in FEATURES else [feat]
    return list(dict.fromkeys(cols))


# ------------------------------------------------------------------------------------------
# stage 1: grouped sums per (psu, period, group)
# ------------------------------------------------------------------------------------------
@dataclass
class _Design:
    psu: np.ndarray          # int code per row
    psu_stratum: np.ndarray  # stratum code per psu code
    psu_area: np.ndarray     # area code per psu code
    weight: np.ndarray
    areas: pd.Index
    years: np.ndarray        # sorted distinct years of the panel
    yidx: np.ndarray         # row -> index into years
    notes: list[str]
    strata_labels: np.ndarray  # "country|stratum" per stratum code
    strata_values: np.ndarray  # the strata column's label per stratum code (None: no column)


def _labels(panel: pd.DataFrame, col: str, role: str) -> tuple[np.ndarray, pd.Index]:
    """Codes of a design column (strata or PSU labels); a missing label is an error."""
    codes, uniq = pd.factorize(panel[col])
    if (codes < 0).any():
        raise ValueError(f"{role} column {col!r} is missing in rows "
                         f"{panel.index[codes < 0][:10].tolist()}. Fix: every row needs its "
                         f"{role} label.")
    return codes, uniq


def _design(panel: pd.DataFrame, area_col: str, year_col: str,
            design: Sequence[str]) -> _Design:
    wcol, scol, pcol = (list(design) + [None, None, None])[:3]
    notes = []
    n = len(panel)
    area_codes, areas = pd.factorize(panel[area_col], sort=True)
    if (area_codes < 0).any():
        raise ValueError(f"column {area_col!r} is missing in {int((area_codes < 0).sum())} rows. "
                         "Fix: every row needs its country.")
    if wcol and wcol in panel.columns:
        w = _f(panel[wcol])
        bad = ~np.isfinite(w) | (w <= 0)
        if bad.any():
            raise ValueError(f"weight column {wcol!r} is missing, infinite or <= 0 in rows "
                             f"{panel.index[bad][:10].tolist()}. Fix: weights must be > 0.")
    else:
        w = np.ones(n)
        notes.append("no weight column: weight 1 (census)")
    if scol and scol in panel.columns:
        s_codes, s_uniq = _labels(panel, scol, "strata")
        # strata nested in countries: (country, stratum label) pairs
        strat, suniq = pd.factorize(area_codes.astype(np.int64) * max(len(s_uniq), 1) + s_codes)
        slabels = np.array([f"{areas[k // max(len(s_uniq), 1)]}|{s_uniq[k % max(len(s_uniq), 1)]}"
                            for k in np.asarray(suniq)], dtype=object)
        svalues = np.array([str(s_uniq[k % max(len(s_uniq), 1)]) for k in np.asarray(suniq)],
                           dtype=object)
    else:
        strat = area_codes.astype(np.int64)
        slabels = np.asarray(areas, dtype=object)
        svalues = None
        notes.append("no strata column: one stratum per country")
    if pcol and pcol in panel.columns:
        p_codes, p_uniq = _labels(panel, pcol, "psu")
    else:
        p_codes, p_uniq = pd.factorize(panel["firm_id"])
        notes.append("no psu column: the firm is the PSU")
    # PSUs nested in strata: (stratum, psu label) pairs
    psu, _ = pd.factorize(strat.astype(np.int64) * max(len(p_uniq), 1) + p_codes)
    n_psu = int(psu.max()) + 1
    psu_stratum = np.zeros(n_psu, dtype=np.int64)
    psu_stratum[psu] = strat
    psu_area = np.zeros(n_psu, dtype=np.int64)
    psu_area[psu] = area_codes
    year = _f(panel[year_col])
    if np.isnan(year).any():
        raise ValueError(f"column {year_col!r} has missing values.")
    years, yidx = np.unique(year.astype(np.int64), return_inverse=True)
    return _Design(psu, psu_stratum, psu_area, w, areas, years, yidx, notes, slabels, svalues)


def _group_codes(panel: pd.DataFrame, col: str | None) -> tuple[np.ndarray, list[str]]:
    if col is None:
        return np.zeros(len(panel), dtype=np.int64), [TOTAL]
    s = panel[col]
    na_label = NA_LABELS.get(col, "not stated")
    if col in BOOL_LABELS:
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        lab = np.where(np.isnan(v), 2, v).astype(np.int64)
        return lab, [*BOOL_LABELS[col], na_label]
    codes, uniq = pd.factorize(s, sort=True)
    labels = [str(u) for u in uniq] + [na_label]
    codes = np.where(codes < 0, len(uniq), codes).astype(np.int64)
    return codes, labels


# ------------------------------------------------------------------------------------------
# stage (a): per-(stratum, period, group) moments of the PSU totals
# ------------------------------------------------------------------------------------------
def _dense_or_factorized(keys: list[np.ndarray], size: int, n_rows: int
                         ) -> tuple[list[np.ndarray], np.ndarray | None, int]:
    """Codes for ``np.bincount``: the keys themselves when the key space is small, else
    factorized (returns codes, unique keys or None, number of codes)."""
    if size <= 4 * n_rows + 1_000_000:
        return keys, None, size
    codes, uniq = pd.factorize(np.concatenate(keys))
    out, start = [], 0
    for k in keys:
        out.append(codes[start:start + len(k)])
        start += len(k)
    return out, np.asarray(uniq), len(uniq)


def _decode_cells(keep: np.ndarray, ny: int, sizes: list[int],
                  st: dict[str, np.ndarray]) -> pd.DataFrame:
    """Fine cell codes ``((area*ny + yi)*G0 + g0)*G1 + ...`` -> columns _area, _yi, _g0, ..."""
    cols: dict[str, np.ndarray] = {}
    rest = keep.astype(np.int64)
    for j in range(len(sizes) - 1, -1, -1):
        cols[f"_g{j}"] = rest % sizes[j]
        rest = rest // sizes[j]
    out = {"_area": rest // ny, "_yi": rest % ny}
    out.update({f"_g{j}": cols[f"_g{j}"] for j in range(len(sizes))})
    out["n_contrib"] = st["n_contrib"][keep].astype(np.int64)
    out.update({c: st[c][keep] for c in ("top1", "top2", "total")})
    return pd.DataFrame(out)


class _PandasStage:
    """Stage (a) on an in-memory panel with ``np.bincount`` (the PSU-period key is built once)."""

    def __init__(self, panel: pd.DataFrame, des: _Design, ctx: _Ctx, inds: list[dict[str, Any]],
                 missing_cols: dict[str, list[str]]) -> None:
        self.panel, self.des, self.ctx, self.inds = panel, des, ctx, inds
        self.live = [i for i in inds if not missing_cols[i["id"]]]
        self.ny = len(des.years) + 1
        self.n_strata = int(des.psu_stratum.max()) + 1
        self.shifts = sorted({p.shift for i in self.live for p in parts(i)} | {0})
        n, ny = len(des.weight), self.ny
        base = des.psu.astype(np.int64) * ny + des.yidx
        codes, uniq, self.n_py = _dense_or_factorized([base + s for s in self.shifts],
                                                      (int(des.psu.max()) + 1) * ny, n)
        self.py = dict(zip(self.shifts, codes))
        pk = np.arange(self.n_py) if uniq is None else uniq
        self.py_stratum = des.psu_stratum[pk // ny]
        self.py_yi = pk % ny
        self.areas, self.years, self.notes = des.areas, des.years, des.notes
        self.h_area = np.zeros(self.n_strata, dtype=np.int64)
        self.h_area[des.psu_stratum] = des.psu_area
        self.n_h = np.bincount(des.psu_stratum, minlength=self.n_strata)
        self._strata_labels = des.strata_labels
        self.strata_values = des.strata_values

    def strata_names(self, idx: np.ndarray) -> list[str]:
        return [str(self._strata_labels[i]) for i in idx]

    def columns(self) -> set[str]:
        return set(self.panel.columns)

    def _usable(self, ind: dict[str, Any]) -> dict[str, np.ndarray]:
        ctx = self.ctx
        ps = parts(ind)
        ok = {p.role: ~np.isnan(ctx.get(p.population)) & ((ctx.get(p.population) == 0)
                                                          | ~np.isnan(ctx.get(p.value)))
              for p in ps}
        if ind["kind"] != "total":
            u = np.logical_and.reduce(list(ok.values()))
            ok = {r: u for r in ok}
        return ok

    def fine_stats(self, inds: list[dict[str, Any]], breakdowns: list[str]
                   ) -> dict[str, pd.DataFrame]:
        """Contributors, top-2 |magnitude| and total per fine cell (area, period, group of
        every breakdown), unweighted, on the estimate's records: for each key of
        :func:`parts.disclosure_parts` (the numerator; the comparison group of K04)."""
        des, ny = self.des, self.ny
        codes, sizes = [], []
        for b in breakdowns:
            c, labels = _group_codes(self.panel, b)
            codes.append(c)
            sizes.append(len(labels))
        base = des.psu_area[des.psu].astype(np.int64) * ny + des.yidx
        n_cells = self.n_areas_total() * ny * int(np.prod(sizes, dtype=np.int64))
        out: dict[str, pd.DataFrame] = {}
        for ind in inds:
            usable = self._usable(ind)
            for key, ps in disclosure_parts(ind).items():
                cell, mag = self._contributions(ps, usable, base, codes, sizes)
                st = disclosure.top2_by_code(cell, mag, n_cells)
                seen = np.bincount(cell, minlength=n_cells) > 0
                out[key] = _decode_cells(np.flatnonzero(seen), ny, sizes, st)
        return out

    def _contributions(self, ps: list[Any], usable: dict[str, np.ndarray], base: np.ndarray,
                       codes: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(fine cell code, magnitude) per (cell, contributor): the rows of the parts' population
        with a value, a firm reaching one cell through two parts summed first."""
        ctx = self.ctx
        cells, mags, rows = [], [], []
        for p in ps:
            val, pop = ctx.get(p.value), ctx.get(p.population)
            idx = np.flatnonzero((pop == 1) & ~np.isnan(val) & usable[p.role])
            c = base[idx] + p.shift
            for code, size in zip(codes, sizes):
                c = c * size + code[idx]
            cells.append(c)
            mags.append(val[idx])
            rows.append(idx)
        cell, mag = np.concatenate(cells), np.concatenate(mags)
        if len(ps) > 1:  # a firm may reach one cell through two ps: sum them first
            firm = pd.factorize(self.panel["firm_id"])[0][np.concatenate(rows)]
            pair, uniq = pd.factorize(cell * (int(firm.max()) + 1) + firm)
            mag = np.bincount(pair, weights=mag, minlength=len(uniq))
            cell = np.asarray(uniq) // (int(firm.max()) + 1)
        return cell, mag

    def n_areas_total(self) -> int:
        return len(self.des.areas)

    def moments(self, breakdown: str | None) -> Moments:
        des, ctx, ny = self.des, self.ctx, self.ny
        gcodes, labels = _group_codes(self.panel, breakdown)
        G = len(labels)
        n = len(des.weight)
        keys, uniq, K = _dense_or_factorized([self.py[s] * G + gcodes for s in self.shifts],
                                             self.n_py * G, n)
        key = dict(zip(self.shifts, keys))
        kk = np.arange(K) if uniq is None else uniq
        k_py, k_g = kk // G, kk % G
        cs = (self.py_stratum[k_py] * ny + self.py_yi[k_py]) * G + k_g
        ncs = self.n_strata * ny * G
        shape = (self.n_strata, ny, G)

        def to_cells(x: np.ndarray) -> np.ndarray:
            return np.bincount(cs, weights=x, minlength=ncs).reshape(shape)

        def per_k(s: int, x: np.ndarray | None) -> np.ndarray:
            return np.bincount(key[s], weights=x, minlength=K).astype(float)

        rows0 = per_k(0, None)
        present = rows0 > 0
        for s in self.shifts[1:]:
            present |= per_k(s, None) > 0
        m: dict[str, np.ndarray] = {"__rows__": to_cells(rows0),
                                    "__psus__": to_cells(present.astype(float))}
        if breakdown is None:
            large = np.zeros(n)
            if "size_class" in self.panel.columns:
                large = (self.panel["size_class"] == "large").fillna(False).to_numpy(float)
            m["__large__"] = to_cells(per_k(0, large))
        w = des.weight
        psu_x: dict[str, Any] = {"__w__": per_k(0, w)}  # PSU-period weight totals
        m["__w__"] = to_cells(psu_x["__w__"])
        for ind in self.live:
            iid, ps = ind["id"], parts(ind)
            usable = self._usable(ind)
            X: dict[str, np.ndarray] = {}
            counts: dict[str, np.ndarray] = {}
            for p in ps:
                val, pop = ctx.get(p.value), ctx.get(p.population)
                # records outside the population contribute 0 even with a missing value
                x = np.where(usable[p.role] & (pop != 0), val * pop, 0.0) * w
                X[p.role] = per_k(p.shift, x)
                if p.role not in ("num", "num2"):
                    continue
                inpop = pop == 1
                cnt = usable[p.role] & inpop
                if p.role == "num2":  # entrants: records with a non-zero contribution
                    cnt = cnt & (val != 0)
                    miss = per_k(p.shift, inpop & ~usable[p.role])
                else:
                    miss = None
                npop = per_k(p.shift, inpop)
                nn = per_k(p.shift, cnt)
                miss = npop - nn if miss is None else miss
                # parts in the same block add up (O04: followed firms + entrants)
                for name, arr in (("n", nn), ("pop", npop), ("miss", miss)):
                    counts[name] = counts[name] + arr if name in counts else arr
            if ind["kind"] == "total":
                X = {"tot": X["num"] + X.get("num2", 0.0)}
            for name in ("n", "pop", "miss"):
                m[f"{iid}:{name}"] = to_cells(counts[name])
            for name, a in moment_names(ind).items():
                m[name] = to_cells(X[a])
            psu_x[iid] = X
        return Moments(labels, m, (k_py, k_g, psu_x))

    def release(self, M: Moments | None = None) -> None:
        """Nothing to free: the PSU totals live on ``M`` and go with it."""

    def centred_ss(self, M: Moments, reqs: dict[str, dict[str, Any]]
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Second pass over the PSU totals of ``M`` (:func:`parts.centred_ss`)."""
        return centred_ss(M.psu, M.n_groups, reqs, self.py_stratum * self.ny + self.py_yi,
                          self.n_strata, self.ny)


# ------------------------------------------------------------------------------------------
# the main function
# ------------------------------------------------------------------------------------------
def load_needed(source: Any, reg: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Read only the columns the indicators need from a Parquet path/glob/folder, a DuckDB
    relation, a polars frame or a Spark DataFrame (see :mod:`msme_eval.engines`)."""
    wanted = {*keys, "firm_id", "size_class"}
    for ind in reg.to_dict("records"):
        wanted |= set(_needed_columns(ind))
    return engines.to_pandas(source, [c for c in engines.columns_of(source) if c in wanted])


def _stage(panel: Any, engine: str | None, area_col: str, year_col: str,
           design: tuple, inds: list[dict[str, Any]], breakdowns: list[str],
           con: Any = None, calibrated: bool = False) -> Any:
    """Stage (a) where the data lives: numpy for a DataFrame, SQL for DuckDB/Spark sources."""
    engine = engines.engine_of(panel) if engine is None else engine
    if engine not in engines.ENGINES:
        raise ValueError(f"engine must be one of {engines.ENGINES} or None, got {engine!r}")
    if calibrated and engine != "pandas":
        raise ValueError(
            "calibrated_to is computed by the in-memory stage only (its residual pass needs the "
            "PSU weight totals). Fix: pass engine='pandas' (reads only the needed columns), or "
            "calibrated_to=None.")
    if engine != "pandas":
        return stage_for(panel, engine, area_col, year_col, design, inds, _needed_columns,
                         con=con, breakdowns=breakdowns)
    if not isinstance(panel, pd.DataFrame):
        panel = load_needed(panel, pd.DataFrame(inds), [area_col, year_col, *design,
                                                         *breakdowns])
    for col in (area_col, year_col):
        if col not in panel.columns:
            raise KeyError(f"panel has no column {col!r} (needed by `by`). Columns: "
                           f"{list(panel.columns)}")
    panel = panel.reset_index(drop=True)
    des = _design(panel, area_col, year_col, design)
    ctx = _Ctx(panel, year_col, area_col)
    cols = set(panel.columns)
    return _PandasStage(panel, des, ctx, inds,
                        {i["id"]: [c for c in _needed_columns(i) if c not in cols] for i in inds})


def compute(panel: pd.DataFrame | str | Path, macro: pd.DataFrame | None = None, *,
            by: Sequence[str] = ("country", "year"), breakdowns: Iterable[str] = (),
            indicators: Iterable[str] | None = None, aggregate: bool = True,
            disclosure: bool = True, design: Sequence[str] = ("weight", "strata", "psu"),
            registry: str | Path | pd.DataFrame | None = None, singleton: str = "fail",
            alpha: float = 0.05, df: str = "satterthwaite", calibrated_to: str | None = None,
            min_contributors: int = 3, dominance_n: int = 2, dominance_k: float = 0.85,
            engine: str | None = None, con: Any = None, dom_n: int | None = None,
            dom_k: float | None = None, certainty: Sequence[str] | None = None) -> ResultFrame:
    """Compute the registry indicators for every country-year (and the region) as tidy rows.

    Returns a :class:`~msme_eval.results.ResultFrame` (a DataFrame; ``.choices``, ``.alpha``,
    ``.title``, ``.summary()``; the estimate column is ``value``) with ``OUTPUT_COLUMNS``:
    indicator, ref_area, time_period, breakdown ("total" or the breakdown column), group,
    value (percent for shares), se, ci_low, ci_high (``1 - alpha``; logit for percentages of
    firms, log scale for K04, symmetric t otherwise: :func:`interval`), n (unweighted records
    described), obs_status (A/E/M, see ``OBS_STATUS``), conf_status (disclosure), unit,
    comment (reason for M, macro source, item non-response, regional coverage), df (by the
    ``df`` rule), df_nominal (#PSUs - #strata of the country), df_rule, n_psu (PSUs holding
    records of the cell: few PSUs, few df).

    ``by``: (area column, period column). ``breakdowns``: any of ``BREAKDOWNS`` (or another
    panel column). ``indicators``: ids (default all of the registry). ``aggregate``: add the
    regional (``contract.REGION``) rows. ``disclosure``: apply
    :func:`msme_eval.disclosure.protect` (``False`` only for internal exploration) with
    ``min_contributors`` and the (``dominance_n``, ``dominance_k``) rule. ``design``: (weight,
    strata, psu) column names; ``singleton``, ``df`` ("satterthwaite" effective df per cell,
    or "nominal") and ``calibrated_to`` ("strata": weights post-stratified to the stratum
    counts of every period, so the variance uses the calibration residuals; pandas engine) as
    in :mod:`msme_eval.survey`; ``certainty``: labels of take-all strata (enumerated, e.g. the
    large firms: no variance, no df; ``"THA|large"`` names one country's), the ``singleton``
    rule then applying to the other strata. ``macro``: columns ``country, year, gdp, exports_total,
    business_loans_total, employment_total, usd_per_lcu``. Rules: module docstring /
    :func:`rules`. ``engine``: where stage (a) runs -- ``None`` picks from the source (pandas
    for a DataFrame, DuckDB for a Parquet path/glob/folder, a DuckDB relation or a polars
    frame, Spark for a Spark DataFrame); ``"duckdb"``/``"spark"`` never bring the firm rows
    into pandas (:mod:`msme_eval.indicators._sql`); ``"pandas"`` on a non-DataFrame source
    reads the needed columns into memory. Same numbers (to floating-point summation order)
    whichever engine. ``con``: a DuckDB connection for a Parquet source, e.g.
    ``engines.connect(memory_limit="3GB", temp_directory=...)`` to cap memory out of core.
    ``dom_n``/``dom_k``: deprecated spellings of ``dominance_n``/``dominance_k``.
    """
    dominance_n, dominance_k = _dominance(dominance_n, dominance_k, dom_n, dom_k)
    alpha = check_alpha(alpha)
    survey.check_options(singleton, df, calibrated_to)
    _check_df_rule(df)
    area_col, year_col, reg = _arguments(by, breakdowns, indicators, registry)
    breakdowns = list(breakdowns)
    stage = _stage(panel, engine, area_col, year_col, tuple(design), reg.to_dict("records"),
                   breakdowns, con, calibrated=calibrated_to is not None)
    try:
        est = _Estimator(stage, reg, _macro_table(macro, area_col, year_col), area_col, year_col,
                         singleton, alpha, df, calibrated_to is not None, certainty)
        frames = _estimate_all(est, breakdowns, aggregate, disclosure)
    finally:
        stage.release()
    out = pd.concat(frames, ignore_index=True)
    if disclosure:
        out = protect_table(est, out, min_contributors=min_contributors,
                            dominance_n=dominance_n, dominance_k=dominance_k)
    else:
        out["conf_status"] = pd.Series(pd.NA, index=out.index, dtype="str")
    out = _tidy(out, reg, breakdowns, df)
    out.attrs["rules"] = rules()
    out.attrs["design_notes"] = stage.notes
    choices = {
        "estimator": "ratio of weighted totals, Taylor-linearised SE (survey estimator)",
        "weight": design[0] if len(design) > 0 else None,
        "strata": design[1] if len(design) > 1 else None,
        "psu": design[2] if len(design) > 2 else None, "design_notes": list(stage.notes),
        "singleton": singleton, "certainty": est.certainty_strata or None, "df": df,
        "calibrated_to": calibrated_to, "alpha": alpha,
        "engine": engines.engine_of(panel) if engine is None else engine,
        "aggregate": REGION if aggregate else None,
        "disclosure": (f">= {min_contributors} firms, ({dominance_n}, {dominance_k:.0%}) "
                       "dominance, secondary suppression") if disclosure else "off",
    }
    return ResultFrame.wrap(out, choices=choices, alpha=alpha, title="MSME indicators",
                            estimate_column="value")


def _dominance(dominance_n: int, dominance_k: float, dom_n: int | None,
               dom_k: float | None) -> tuple[int, float]:
    """The (n, k) dominance rule; the old ``dom_n``/``dom_k`` keywords warn and still work."""
    if dom_n is not None or dom_k is not None:
        warnings.warn("indicators.compute(dom_n=, dom_k=) is deprecated: use dominance_n= and "
                      "dominance_k= (the cycle parameters' names)", DeprecationWarning,
                      stacklevel=3)
        dominance_n = dominance_n if dom_n is None else dom_n
        dominance_k = dominance_k if dom_k is None else dom_k
    return dominance_n, dominance_k


def _arguments(by: Sequence[str], breakdowns: Iterable[str], indicators: Iterable[str] | None,
               registry: str | Path | pd.DataFrame | None) -> tuple[str, str, pd.DataFrame]:
    """Check ``by``/``breakdowns``/``indicators``; the registry rows to compute, in order."""
    if len(by) != 2:
        raise ValueError(f"by must be (area column, period column), got {tuple(by)!r}")
    area_col, year_col = by
    reg = registry if isinstance(registry, pd.DataFrame) else load_registry(registry)
    if indicators is not None:
        wanted = list(indicators)
        unknown = [i for i in wanted if i not in set(reg["id"])]
        if unknown:
            raise KeyError(f"unknown indicator id(s) {unknown}; registry has {reg['id'].tolist()}")
        reg = reg.set_index("id").loc[wanted].reset_index()
    bad = [b for b in breakdowns if b in (area_col, year_col)]
    if bad:
        raise ValueError(f"breakdowns {bad} duplicate the `by` columns")
    return area_col, year_col, reg


def _estimate_all(est: _Estimator, breakdowns: list[str], aggregate: bool,
                  disclosure: bool) -> list[pd.DataFrame]:
    """The total rows, then every breakdown's (a breakdown absent from the panel: M rows)."""
    cols = est.stage.columns()
    if disclosure:
        est.want_stats = True
        collect_fine_stats(est, [b for b in breakdowns if b in cols])
    frames = [est.run(None, aggregate)]
    for b in breakdowns:
        if b not in cols:
            frames.append(est.missing_breakdown(b))
        else:
            frames.append(est.run(b, aggregate and b != "region"))
    return frames


def _tidy(out: pd.DataFrame, reg: pd.DataFrame, breakdowns: list[str],
          df_rule: str) -> pd.DataFrame:
    """``OUTPUT_COLUMNS`` in registry / breakdown order; rows without an estimate get
    ``df`` NaN, ``n_psu`` 0."""
    out["df_rule"] = out["df_rule"].fillna(df_rule).astype("str") if "df_rule" in out else df_rule
    for c in ("df_nominal", "n_psu"):
        out[c] = out[c].fillna(0).astype(np.int64) if c in out else 0
    out["df"] = out["df"].astype("float64") if "df" in out else np.nan
    out = out[list(OUTPUT_COLUMNS)]
    order = {"indicator": {k: i for i, k in enumerate(reg["id"])},
             "breakdown": {k: i for i, k in enumerate([TOTAL, *breakdowns])}}
    return out.sort_values(["indicator", "breakdown", "ref_area", "time_period", "group"],
                           key=lambda s: s.map(order[s.name]) if s.name in order else s,
                           kind="stable").reset_index(drop=True)


def availability(result: pd.DataFrame, year: int | None = None) -> pd.DataFrame:
    """Data-availability matrix (indicator x ref_area) from :func:`compute` output.

    Breakdown "total" rows only. Each cell: the number of years with a published value
    (obs_status not M and value not suppressed) out of the years present, e.g. ``"8/10"``;
    with ``year``: that year's status -- "available", "estimated (macro)", "suppressed"
    or "not available".
    """
    tot = result[(result["breakdown"] == TOTAL) & (result["group"] == TOTAL)]
    if year is not None:
        tot = tot[tot["time_period"] == year]
        lab = np.where(tot["obs_status"] == "M", "not available",
                       np.where(tot["value"].isna(), "suppressed",
                                np.where(tot["obs_status"] == "E", "estimated (macro)",
                                         "available")))
        return (tot.assign(status=lab).pivot(index="indicator", columns="ref_area",
                                             values="status"))
    ok = (tot["obs_status"] != "M") & tot["value"].notna()
    g = tot.assign(ok=ok).groupby(["indicator", "ref_area"], sort=False)["ok"]
    cells = (g.sum().astype(int).astype(str) + "/" + g.size().astype(str)).rename("available")
    return cells.reset_index().pivot(index="indicator", columns="ref_area", values="available")


def _macro_table(macro: pd.DataFrame | None, area_col: str, year_col: str) -> pd.DataFrame | None:
    if macro is None:
        return None
    m = macro.copy()
    if "country" in m.columns and area_col != "country":
        m = m.rename(columns={"country": area_col})
    for c in (area_col, year_col):
        if c not in m.columns:
            raise KeyError(f"macro table has no column {c!r}. Fix: columns country, year, gdp, "
                           "exports_total, business_loans_total, employment_total, usd_per_lcu")
    m[year_col] = m[year_col].astype("int64")
    dup = m.duplicated([area_col, year_col])
    if dup.any():
        raise ValueError(f"macro table has duplicate country-years: "
                         f"{m.loc[dup, [area_col, year_col]].values.tolist()[:10]}")
    return m.set_index([area_col, year_col])


class _Estimator:
    """Carries the stage-(a) moments, design and registry through stages 2-3 of one call."""

    def __init__(self, stage: Any, reg: pd.DataFrame, macro: pd.DataFrame | None,
                 area_col: str, year_col: str, singleton: str, alpha: float, df_rule: str,
                 calibrated: bool, certainty: Sequence[str] | None = None) -> None:
        self.stage, self.reg, self.macro = stage, reg, macro
        self.area_col, self.year_col = area_col, year_col
        self.singleton, self.alpha, self.df_rule = singleton, alpha, df_rule
        self.calibrated = calibrated
        self.areas: pd.Index = stage.areas
        self.years: np.ndarray = stage.years
        self.n_areas = len(self.areas)
        self.ny = len(self.years) + 1
        self.h_area: np.ndarray = stage.h_area
        self.n_h: np.ndarray = stage.n_h.astype(float)
        self.n_psu = int(self.n_h.sum())
        if certainty is not None and len(certainty) and stage.strata_values is None:
            raise survey.SurveyDesignError(
                "certainty names take-all strata, but the panel has no strata column. Fix: "
                "pass design=(weight, strata, psu) with the strata column.")
        all_names = stage.strata_names(np.arange(len(self.n_h)))
        #: take-all strata (``certainty``): no variance, no df, not singletons
        self.certain = survey.certainty_mask(
            all_names if stage.strata_values is None else list(stage.strata_values), certainty,
            qualified=all_names)
        self.certainty_strata = [n for n, c in zip(all_names, self.certain) if c]
        self.single = (self.n_h == 1) & ~self.certain
        if self.single.any() and singleton == "fail":
            raise survey.singleton_error(stage.strata_names(np.flatnonzero(self.single)[:20]),
                                         int(self.single.sum()))
        # design df per area: #PSUs - #strata of that country (take-all strata aside)
        sampled = ~self.certain
        n_psu_a = np.bincount(self.h_area, weights=self.n_h * sampled, minlength=self.n_areas)
        n_str_a = np.bincount(self.h_area, weights=sampled.astype(float), minlength=self.n_areas)
        self.df_area = (n_psu_a - n_str_a).astype(float)
        self.inds: list[dict[str, Any]] = reg.to_dict("records")
        cols = stage.columns()
        self.missing_cols = {ind["id"]: [c for c in _needed_columns(ind) if c not in cols]
                             for ind in self.inds}
        self.live = [ind for ind in self.inds if not self.missing_cols[ind["id"]]]
        self.M0: Moments = stage.moments(None)
        rows_ay = self._to_area(self.M0.m["__rows__"])[:, :, 0]
        self.has_year = (rows_ay > 0).ravel()
        self.large_count = self._to_area(self.M0.m["__large__"])[:, :, 0].ravel()
        self._st: dict[str, pd.DataFrame] | None = None
        self.cell_tables: list[pd.DataFrame] = []
        self.want_stats = False
        self.fine_stats: dict[str, pd.DataFrame] | None = None
        self.fine_groups: list[str | None] = []
        self.asean_members: dict[tuple[str, int], list[str]] = {}

    def _to_area(self, x: np.ndarray, dom: np.ndarray | None = None,
                 n_dom: int | None = None) -> np.ndarray:
        """Sum a (stratum, period, group) array over the strata of each domain."""
        dom = self.h_area if dom is None else dom
        n_dom = self.n_areas if n_dom is None else n_dom
        H = np.zeros((len(dom), n_dom))
        H[np.arange(len(dom)), dom] = 1.0
        return np.einsum("hd,hyg->dyg", H, x)

    # -- country-year status (macro fallback, availability) ------------------------------------
    def status(self) -> dict[str, pd.DataFrame]:
        """Per indicator: status/comment/macro/use_macro per country-year key ``area*ny+yi``."""
        if self._st is not None:
            return self._st
        m = self.M0.m
        rows = self._to_area(m["__rows__"])[:, :, 0]
        rows[:, len(self.years):] = 0
        area, yi = np.nonzero(rows > 0)
        ay_key = area * self.ny + yi
        self._st = {}
        for ind in self.live:
            iid = ind["id"]
            tot = {c: self._to_area(m[f"{iid}:{c}"])[area, yi, 0] for c in ("n", "pop", "miss")}
            status, comment, macro_add, use_macro = self._area_year_status(
                ind, area, yi, tot["n"], tot["pop"], tot["miss"])
            self._st[iid] = pd.DataFrame({"status": status, "comment": comment,
                                          "macro": macro_add, "use_macro": use_macro},
                                         index=ay_key)
        return self._st

    def _grid(self, s: pd.Series, fill: float = 0.0) -> np.ndarray:
        """A series indexed by country-year keys -> (n_areas, ny) array."""
        out = np.full(self.n_areas * self.ny, fill, dtype=float)
        out[s.index.to_numpy()] = s.to_numpy(dtype=float)
        return out.reshape(self.n_areas, self.ny)

    # -- stages 2 and 3 --------------------------------------------------------------------
    def run(self, breakdown: str | None, aggregate: bool) -> pd.DataFrame:
        M = self.M0 if breakdown is None else self.stage.moments(breakdown)
        labels = M.labels
        publish = np.ones(M.n_groups, dtype=bool)
        if breakdown == "size_class":
            publish = np.array([lab in MSME_CLASSES for lab in labels])
        if self.want_stats:
            self.cell_tables.append(breakdown_cell_stats(self, breakdown, labels))
        rows = [self._all_missing(ind, M, breakdown, labels, publish)
                for ind in self.inds if self.missing_cols[ind["id"]]]
        live = self.live
        if not live:
            return pd.concat(rows, ignore_index=True)
        st = self.status()
        ones = np.ones((len(self.h_area), self.ny))
        use = {i: self._grid(s["use_macro"].astype(float)) > 0 for i, s in st.items()}
        res = self._estimate(
            live, M, self.h_area, self.n_areas, scale={i: ones for i in st},
            cnt_scale={i: ones for i in st},
            macro={i: self._grid(s["macro"]) for i, s in st.items()},
            den_off={i: u[self.h_area] for i, u in use.items()})
        for ind in live:
            iid = ind["id"]
            est = res[iid]
            key = est["_area"].to_numpy() * self.ny + est["_yi"].to_numpy()
            keep = np.isin(key, st[iid].index.to_numpy())
            est, key = est[keep].copy(), key[keep]
            est["obs_status"] = st[iid]["status"].reindex(key).to_numpy()
            est["comment"] = st[iid]["comment"].reindex(key).to_numpy()
            est["ref_area"] = np.asarray(self.areas)[est["_area"].to_numpy()]
            est["df"] = self.df_area[est["_area"].to_numpy()]
            rows.append(self._finish(ind, est, breakdown, labels, publish))
        if aggregate:
            rows += [self._all_missing(ind, M, breakdown, labels, publish, asean=True)
                     for ind in self.inds if self.missing_cols[ind["id"]]]
            rows += self._asean(live, M, breakdown, labels, publish, st, use)
        if M is not self.M0:
            self.stage.release(M)
        return pd.concat([r for r in rows if len(r)], ignore_index=True)

    def _area_year_status(self, ind: dict[str, Any], area: np.ndarray, yi: np.ndarray,
                          n_total: np.ndarray, pop_total: np.ndarray, miss_total: np.ndarray):
        """Per (area, period) of the total cell: status A/E/M, comment, macro denominator.

        Vectorised over the country-years; the first rule that applies gives the reason.
        """
        k = len(area)
        a_lab = np.asarray(self.areas, dtype=object)[area]
        year = self.years[np.minimum(yi, len(self.years) - 1)]
        where = pd.Series(a_lab, dtype="str") + " " + pd.Series(year).astype("str")
        where = where.to_numpy(dtype=object)
        ay = area * self.ny + yi
        no_large = self.large_count[ay] == 0
        cols = ", ".join(c for c in ind["required_columns"] if c != "size_class") or "size_class"
        shift = max([p.shift for p in parts(ind)] + [0])
        den_spec = ind.get("denominator_spec") if isinstance(ind.get("denominator_spec"),
                                                             dict) else {}
        mcol = den_spec.get("macro")
        reason = np.full(k, None, dtype=object)

        def rule(mask: np.ndarray, text: np.ndarray | str) -> None:
            m = mask & (reason == None)  # noqa: E711 - elementwise on an object array
            reason[m] = text[m] if isinstance(text, np.ndarray) else text

        if shift:
            prev_ok = np.zeros(k, dtype=bool)
            prev_ok[yi > 0] = self.has_year[ay[yi > 0] - 1]
            rule(~prev_ok, np.array([f"no previous year in the panel for {a}: {ind['name']} "
                                     "needs year t-1" for a in a_lab], dtype=object))
        rule(pop_total == 0, "no MSME records for " + where)
        rule(n_total == 0, f"{cols} missing for all MSME records of " + where)
        if ind["needs_large"]:
            why = ("the share of all enterprises needs them and the macro table has no "
                   "enterprise count" if ind["kind"] == "ratio"
                   else "no large firms to compare with")
            rule(no_large, "panel has no large firms for " + where + ": " + why)
        macro_add = np.zeros(k)
        use_macro = np.zeros(k, dtype=bool)
        status = np.full(k, "A", dtype=object)
        comment = np.full(k, "", dtype=object)
        if mcol:
            need = np.ones(k, dtype=bool) if ind["macro_only"] else no_large
            need = need & (reason == None)  # noqa: E711
            if self.macro is None:
                rule(need, f"no macro table supplied: {ind['id']} needs macro {mcol}")
            elif mcol not in self.macro.columns:
                rule(need, f"macro table has no column {mcol}")
            else:
                idx = pd.MultiIndex.from_arrays([a_lab, year])
                mval = self.macro[mcol].reindex(idx).to_numpy(dtype=float)
                bad = ~np.isfinite(mval) | (mval <= 0)
                rule(need & bad, f"macro table has no {mcol} for " + where)
                use_macro = need & ~bad
                macro_add = np.where(use_macro, mval, 0.0)
                if ind["macro_only"]:
                    comment[use_macro] = f"denominator: macro {mcol}"
                else:
                    status[use_macro] = "E"
                    comment[use_macro] = (f"denominator: macro {mcol} (panel has no large firms "
                                          "for " + where[use_macro] + ")")
        missing = reason != None  # noqa: E711
        status[missing] = "M"
        comment[missing] = reason[missing]
        miss = ~missing & (miss_total > 0)
        extra = np.array([f"{int(m)} MSME records with missing {cols} left out"
                          for m in miss_total[miss]], dtype=object)
        comment[miss] = np.where(comment[miss] == "", extra, comment[miss] + "; " + extra)
        return status, comment, macro_add, use_macro

    def _estimate(self, live: list[dict[str, Any]], M: Moments, dom: np.ndarray, n_dom: int, *,
                  scale: dict[str, np.ndarray], cnt_scale: dict[str, np.ndarray],
                  macro: dict[str, np.ndarray], den_off: dict[str, np.ndarray]
                  ) -> dict[str, pd.DataFrame]:
        """Point estimates and linearised SEs of every indicator in every (domain, period, group).

        Inputs are the stage-(a) moments per (stratum h, period, group): ``S_a = sum_i X_ia``
        over the PSUs i of the stratum (``X_ia``: PSU total of the weighted part a), times
        ``scale`` (USD rate for ASEAN money, 0 for an excluded country; ``den`` also 0 where the
        macro denominator replaces it). The estimator's linearised variable is linear in the
        PSU totals, ``u_i = sum_a c_a X_ia`` (Woodruff 1971; :meth:`_linearise`); per stratum
        ``sum u = c.S`` from the moments. The variance is the survey estimator's
        (:func:`survey.psu_centre`, :func:`survey.stratum_variance`: with-replacement PSUs,
        every PSU of the stratum, absent ones with u = 0, singleton strata per ``singleton``;
        calibrated weights: residuals ``u_i - B_h w_i``), its centred sums of squares computed
        by the stage in a second pass over its PSU totals (``stage.centred_ss``): centring
        before squaring avoids the cancellation of ``sum u^2 - (sum u)^2/n_h`` and makes every
        engine agree to ~1e-12. The per-stratum contributions also give the Satterthwaite df.
        """
        reqs: dict[str, dict[str, Any]] = {}
        pending: dict[str, tuple] = {}
        for ind in live:
            req, point, bad, share = self._request(ind, M, dom, n_dom, scale[ind["id"]],
                                                   macro[ind["id"]], den_off[ind["id"]])
            reqs[ind["id"]] = req
            pending[ind["id"]] = (ind, point, bad, share)
        if not reqs:
            return {}
        ss, n_present = self.stage.centred_ss(M, reqs)
        return {iid: self._rows(ind, M, dom, n_dom, point, bad, share, reqs[iid], ss[iid],
                                n_present, cnt_scale[iid])
                for iid, (ind, point, bad, share) in pending.items()}

    @staticmethod
    def _linearise(ind: dict[str, Any], tot: dict[str, np.ndarray], madd: np.ndarray,
                   zero: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Point estimate and coefficients ``c_a`` of the linearised variable per kind:
        ``c = (1/B, -R/B)`` for a ratio ``R = A/B`` (B plus the macro denominator),
        ``c = R (1/A, -1/B, -1/C, 1/D)`` for K04 ``(A/B)/(C/D)``, ``c = 1`` for a total."""
        with np.errstate(divide="ignore", invalid="ignore"):
            if ind["kind"] == "total":
                point = tot["tot"]
                return point, {"tot": np.ones_like(point)}
            if ind["kind"] == "ratio":
                big_b = tot.get("den", zero) + madd
                point = tot["num"] / big_b
                return point, {"num": 1.0 / big_b + zero, "den": -point / big_b + zero}
            a, b, c, d = (tot[r] + zero for r in ("num", "den", "rnum", "rden"))
            point = (a / b) / (c / d)
            return point, {r: np.where(point == 0, 0.0, point / x * sgn) for r, x, sgn in
                           (("num", a, 1), ("den", b, -1), ("rnum", c, -1), ("rden", d, 1))}

    def _request(self, ind: dict[str, Any], M: Moments, dom: np.ndarray, n_dom: int,
                 sc: np.ndarray, madd: np.ndarray, den_off: np.ndarray
                 ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, bool]:
        """Point estimate, and what the stage's second pass needs: the coefficients per role
        and the centre ``c_h`` of u per (stratum, period, group) (calibrated: ``B_h``)."""
        iid, G = ind["id"], M.n_groups
        share = is_share(ind, G)
        gv, dv = share_roles(ind) if share else (roles(ind), [])
        sc = sc[:, :, None]
        fden = sc * np.where(den_off, 0.0, 1.0)[:, :, None]

        def f(role: str) -> np.ndarray:
            return fden if role == "den" else sc

        zero_g = np.zeros((len(dom), self.ny, G))
        Sg = {r: f(r) * M.m[f"{iid}:{r}"] if f"{iid}:{r}" in M.m else zero_g for r in gv}
        S0 = {r: f(r) * self.M0.m[f"{iid}:{r}"] for r in dv}
        tot = {r: self._to_area(Sg[r], dom, n_dom) for r in gv}
        tot.update({r: self._to_area(S0[r], dom, n_dom) for r in dv})
        zero = np.zeros((n_dom, self.ny, G))
        point, coef = self._linearise(ind, tot, madd[:, :, None], zero)
        coef = {r: c for r, c in coef.items() if r in gv or r in dv}
        bad = np.zeros(zero.shape, dtype=bool)
        for c in coef.values():
            bad |= ~np.isfinite(c)
        ch = {r: np.where(bad, 0.0, c)[dom] for r, c in coef.items()}
        su = sum(ch[r] * Sg[r] for r in gv if r in ch) + sum(ch[r] * S0[r] for r in dv)
        nh = self.n_h[:, None, None]
        ub = self._to_area(su, dom, n_dom)[dom] / max(self.n_psu, 1)
        req = {"coef": {r: np.broadcast_to(ch[r] * f(r), ch[r].shape) for r in ch},
               "centre": survey.psu_centre(su, nh, ub, self.single[:, None, None],
                                           self.singleton),
               "domain_roles": set(dv)}
        if self.calibrated:
            # residuals u_i - B_h w_i, B_h = U_h / N_h; they sum to 0 in the stratum
            with np.errstate(divide="ignore", invalid="ignore"):
                n_w = self.M0.m["__w__"].sum(axis=2, keepdims=True)
                req["cal"] = np.where(n_w > 0, su / n_w, 0.0)
            req["centre"] = np.zeros_like(su)
        return req, point, bad, share

    def _rows(self, ind: dict[str, Any], M: Moments, dom: np.ndarray, n_dom: int,
              point: np.ndarray, bad: np.ndarray, share: bool, req: dict[str, Any],
              ss: np.ndarray, n_present: np.ndarray, cnt_sc: np.ndarray) -> pd.DataFrame:
        """Variance (and Satterthwaite terms) per (domain, period, group) -> estimate rows."""
        iid, m = ind["id"], M.m
        nh = self.n_h[:, None, None]
        c = req["centre"]
        # PSUs of the stratum without records in the period have u = 0: (0 - c)^2 each
        full = ss + (nh - n_present[:, :, None]) * c * c
        v = survey.stratum_variance(full, nh, self.single[:, None, None], self.singleton,
                                    calibrated=self.calibrated)
        v = np.where(self.certain[:, None, None], 0.0, v)
        var = np.where(bad, np.nan, self._to_area(v, dom, n_dom))
        v2 = self._to_area(v * v / np.maximum(nh - 1, 1), dom, n_dom)
        cnt = {k: self._to_area(m[f"{iid}:{k}"] * cnt_sc[:, :, None], dom, n_dom)
               for k in ("n", "pop", "miss")}
        psus = self._to_area(m["__psus__"] * (cnt_sc[:, :, None] > 0), dom, n_dom)
        rows = self._to_area(m["__rows__"], dom, n_dom)
        d, y, g = np.nonzero((rows > 0) & (np.arange(self.ny) < len(self.years))[:, None])
        out = pd.DataFrame({
            "_area": d, "_yi": y, "_g": g,
            "_n": cnt["n"][d, y, g], "_pop": cnt["pop"][d, y, g],
            "_miss": cnt["miss"][d, y, g],
            "value": point[d, y, g] * ind["scale"],
            "se": np.sqrt(np.maximum(var[d, y, g], 0.0)) * ind["scale"],
            "n": cnt["n"][d, y, g].astype(np.int64),
            "_var": var[d, y, g], "_v2": v2[d, y, g],
            "n_psu": psus[d, y, g].astype(np.int64)})
        out.loc[np.isnan(var[d, y, g]), "se"] = np.nan
        return out

    def _finish(self, ind: dict[str, Any], est: pd.DataFrame, breakdown: str | None,
                labels: list[str], publish: np.ndarray) -> pd.DataFrame:
        est = est[publish[est["_g"].to_numpy()]].copy()
        value = est["value"].to_numpy(dtype=float)
        se = est["se"].to_numpy(dtype=float)
        status = est["obs_status"].to_numpy(dtype=object).copy()
        comment = est["comment"].to_numpy(dtype=object).copy()
        # cell-level availability inside an available country-year
        empty = (status != "M") & (est["n"].to_numpy() == 0)
        status[empty] = "M"
        comment[empty] = np.where(est["_pop"].to_numpy()[empty] == 0,
                                  "no MSME records in this cell",
                                  "item values missing for all MSME records in this cell")
        undefined = (status != "M") & ~np.isfinite(value)
        status[undefined] = "M"
        comment[undefined] = "denominator is zero in this cell"
        if breakdown is not None:
            miss = (status != "M") & (est["_miss"].to_numpy() > 0)
            cols = ", ".join(c for c in ind["required_columns"] if c != "size_class")
            base = [c.split("; ")[0] if c.startswith("denominator") else "" for c in comment]
            comment = np.where(miss, [
                "; ".join(filter(None, [b, f"{int(m)} MSME records with missing {cols} left out"]))
                for b, m in zip(base, est["_miss"].to_numpy())], np.where(status == "M", comment,
                                                                          base))
        m = status == "M"
        value = np.where(m, np.nan, value)
        se = np.where(m, np.nan, se)
        out = pd.DataFrame({
            "indicator": ind["id"],
            "ref_area": est["ref_area"].to_numpy(),
            "time_period": self.years[np.minimum(est["_yi"].to_numpy(),
                                                     len(self.years) - 1)].astype(np.int64),
            "breakdown": breakdown or TOTAL,
            "group": np.asarray(labels, dtype=object)[est["_g"].to_numpy()],
            "value": value, "se": se, "ci_low": np.nan, "ci_high": np.nan,
            "n": est["n"].to_numpy(dtype=np.int64),
            "obs_status": status, "unit": ind["unit"], "comment": comment,
            **self._degrees_of_freedom(est),
        })
        out["ci_low"], out["ci_high"] = interval(ind, value, se, out["df"].to_numpy(), self.alpha,
                                                 macro=status == "E")
        for c in ("ref_area", "breakdown", "group", "obs_status", "unit", "comment", "indicator"):
            out[c] = out[c].astype("str")
        return out

    def _degrees_of_freedom(self, est: pd.DataFrame) -> dict[str, Any]:
        """``df`` by the chosen rule, ``df_nominal`` (#PSUs - #strata of the country, summed
        over the included countries for the region), ``df_rule``, ``n_psu``."""
        nominal = est["df"].to_numpy(dtype=float)
        _check_df_rule(self.df_rule)
        if self.df_rule == "nominal":
            df = nominal
        else:  # "satterthwaite"
            df = survey.satterthwaite_df(est["_var"].to_numpy(dtype=float),
                                         est["_v2"].to_numpy(dtype=float), nominal,
                                         est["value"].to_numpy(dtype=float))
        return {"df": df, "df_nominal": nominal.astype(np.int64), "df_rule": self.df_rule,
                "n_psu": est["n_psu"].to_numpy(dtype=np.int64)}

    def _all_missing(self, ind: dict[str, Any], M: Moments, breakdown: str | None,
                     labels: list[str], publish: np.ndarray, asean: bool = False) -> pd.DataFrame:
        rows = self._to_area(M.m["__rows__"])
        rows[:, len(self.years):, :] = 0
        rows[:, :, ~publish] = 0
        if asean:
            yi, g = np.nonzero(rows.sum(axis=0) > 0)
            area = np.full(len(yi), REGION, dtype=object)
        else:
            a, yi, g = np.nonzero(rows > 0)
            area = np.asarray(self.areas)[a]
        reason = (f"column(s) {', '.join(self.missing_cols[ind['id']])} not in the panel")
        return pd.DataFrame({
            "indicator": ind["id"], "ref_area": area,
            "time_period": self.years[yi].astype(np.int64),
            "breakdown": breakdown or TOTAL,
            "group": np.asarray(labels, dtype=object)[g],
            "value": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "n": np.zeros(len(yi), dtype=np.int64), "obs_status": "M",
            "unit": ind["unit"], "comment": reason,
        }).astype({c: "str" for c in ("indicator", "ref_area", "breakdown", "group",
                                      "obs_status", "unit", "comment")})

    def missing_breakdown(self, b: str) -> pd.DataFrame:
        """A requested breakdown column absent from the panel: one M row per indicator-area-year."""
        a, yi = np.nonzero(self.has_year.reshape(self.n_areas, self.ny))
        keys = pd.DataFrame({"ref_area": np.asarray(self.areas)[a], "time_period": self.years[yi]})
        keys = keys.sort_values(["ref_area", "time_period"])
        frames = []
        for ind in self.inds:
            f = keys.copy()
            f.insert(0, "indicator", ind["id"])
            f["breakdown"] = b
            f["group"] = "not available"
            f["value"] = f["se"] = f["ci_low"] = f["ci_high"] = np.nan
            f["n"] = 0
            f["obs_status"] = "M"
            f["unit"] = ind["unit"]
            f["comment"] = f"breakdown column {b!r} not in the panel"
            frames.append(f)
        out = pd.concat(frames, ignore_index=True)
        return out.astype({c: "str" for c in ("indicator", "ref_area", "breakdown", "group",
                                              "obs_status", "unit", "comment")})

    # -- ASEAN ------------------------------------------------------------------------------
    def _asean(self, live: list[dict[str, Any]], M: Moments, breakdown: str | None,
               labels: list[str], publish: np.ndarray, st_all: dict[str, pd.DataFrame],
               use: dict[str, np.ndarray]) -> list[pd.DataFrame]:
        """Pooled ASEAN rows: country totals summed (money in USD), countries as strata."""
        names = np.asarray(self.areas)
        scale, cnt_scale, macro = {}, {}, {}
        info: dict[str, pd.DataFrame] = {}
        for ind in live:
            iid = ind["id"]
            st = st_all[iid].copy()
            keys = st.index.to_numpy()
            st["_a"], st["_yi"] = keys // self.ny, keys % self.ny
            st["rate"] = self.usd_rates(keys).to_numpy() if ind["money"] else 1.0
            st["incl"] = (st["status"] != "M") & np.isfinite(st["rate"])
            scale[iid] = self._grid(st["rate"].where(st["incl"], 0.0))[self.h_area]
            cnt_scale[iid] = self._grid(st["incl"].astype(float))[self.h_area]
            inc_arr = st["incl"].to_numpy(dtype=bool)
            y_arr = st["_yi"].to_numpy()
            macro_usd = np.where(inc_arr & st["use_macro"].to_numpy(dtype=bool),
                                 st["macro"].to_numpy() * st["rate"].to_numpy(), 0.0)
            ys = np.unique(y_arr)
            pos = np.searchsorted(ys, y_arr)
            is_e = inc_arr & (st["status"].to_numpy() == "E")
            per = pd.DataFrame({
                "macro": np.bincount(pos, weights=macro_usd, minlength=len(ys)),
                "df": np.bincount(pos, weights=np.where(inc_arr, self.df_area[st["_a"].to_numpy()],
                                                        0.0), minlength=len(ys)),
                "n_incl": np.bincount(pos, weights=inc_arr, minlength=len(ys)),
                "E": np.bincount(pos, weights=is_e, minlength=len(ys)) > 0,
            }, index=ys)
            a_names = names[st["_a"].to_numpy()]
            per["incl_txt"] = [", ".join(a_names[(y_arr == y) & inc_arr]) for y in ys]
            per["excl_txt"] = [", ".join(a_names[(y_arr == y) & ~inc_arr]) for y in ys]
            for y in ys:
                self.asean_members[(iid, int(y))] = list(a_names[(y_arr == y) & inc_arr])
            mg = np.zeros((1, self.ny))
            mg[0, ys] = per["macro"].to_numpy()
            macro[iid] = mg
            info[iid] = per
        res = self._estimate(live, M, np.zeros(len(self.h_area), dtype=np.int64), 1,
                             scale=scale, cnt_scale=cnt_scale, macro=macro,
                             den_off={i: u[self.h_area] for i, u in use.items()})
        out = []
        for ind in live:
            iid = ind["id"]
            per = info[iid]
            est = res[iid].copy()
            yi = est["_yi"].to_numpy()
            n_incl = per["n_incl"].reindex(yi).fillna(0).to_numpy()
            is_e = per["E"].reindex(yi).fillna(False).to_numpy(dtype=bool)
            rule = ("pooled ratio of country totals" if ind["kind"] != "total"
                    else "sum of country totals")
            if ind["money"]:
                rule += ", money in USD (macro usd_per_lcu)"
            inc = per["incl_txt"].reindex(yi).fillna("").to_numpy()
            exc = per["excl_txt"].reindex(yi).fillna("").to_numpy()
            est["obs_status"] = np.where(n_incl == 0, "M", np.where(is_e, "E", "A"))
            est["comment"] = [
                "not available for any country this year" if k == 0 else
                f"{rule}; countries: {i}" + (f"; not available: {e}" if e else "")
                for k, i, e in zip(n_incl, inc, exc)]
            est["ref_area"] = REGION
            est["df"] = per["df"].reindex(yi).fillna(0).to_numpy()
            out.append(self._finish(ind, est, breakdown, labels, publish))
        return out

    def usd_rates(self, ay_keys: np.ndarray) -> pd.Series:
        if self.macro is None or "usd_per_lcu" not in self.macro.columns:
            return pd.Series(np.nan, index=ay_keys)
        a = np.asarray(self.areas)[ay_keys // self.ny]
        yi = ay_keys % self.ny
        last = len(self.years) - 1
        y = np.where(yi <= last, self.years[np.minimum(yi, last)], -1)
        idx = pd.MultiIndex.from_arrays([a, y])
        vals = self.macro["usd_per_lcu"].reindex(idx).to_numpy(dtype=float)
        return pd.Series(vals, index=ay_keys)
