"""Design-based computation of the registry indicators: tidy, SDMX-like rows.

Every value is a ratio of weighted totals (or a weighted total, or the delta-method function
``(A/B)/(C/D)`` for K04) estimated on the full survey design with Taylor-linearised standard
errors (:mod:`msme_eval.survey`). The work has three stages:

1. **One grouped pass per breakdown** over the firm rows: weighted sums of every indicator's
   numerator/denominator parts per (country, time period, stratum, PSU, group) with
   ``np.bincount`` -- the only step that touches all rows.
2. **Linearisation** on that PSU-level table: point estimates are ratios of the cells' sums
   (plus a macro denominator); each estimator's linearised variable (``(a - R b) / B`` for a
   ratio, ``R (a/A - b/B - c/C + d/D)`` for K04, ``a`` for a total) is summed per PSU and
   :func:`msme_eval.survey.totals_from_sums` (stage b of the survey module) gives the design
   variance of its total over the full design. The ASEAN aggregate uses the same table with
   money converted to USD and countries as independent strata.
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
* ASEAN aggregate (``ref_area="ASEAN"``): pooled ratio of the sums of country totals over the
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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import survey
from ..schema import MSME_CLASSES
from .registry import registry as load_registry

__all__ = ["compute", "availability", "OUTPUT_COLUMNS", "OBS_STATUS", "BREAKDOWNS", "FEATURES",
           "rules"]

OUTPUT_COLUMNS: tuple[str, ...] = (
    "indicator", "ref_area", "time_period", "breakdown", "group", "value", "se", "ci_low",
    "ci_high", "n", "obs_status", "conf_status", "unit", "comment",
)
OBS_STATUS: dict[str, str] = {
    "A": "normal value",
    "E": "estimated value: denominator from the macro table (panel has no large firms), "
         "or an ASEAN aggregate including such a country",
    "M": "missing value: indicator not available (reason in comment)",
}
BREAKDOWNS: tuple[str, ...] = ("size_class", "owner_female", "urban", "sector", "region",
                               "programme_type")
_BOOL_LABELS = {"owner_female": ("male", "female"), "urban": ("rural", "urban")}
_NA_LABEL = {"programme_type": "not supported"}
_ASEAN = "ASEAN"
TOTAL = "total"


def rules() -> dict[str, str]:
    """The estimation, flagging and aggregation rules, for methods notes in reports."""
    return {
        "estimator": "ratio of weighted totals (Horvitz-Thompson), K04 as (A/B)/(C/D), net jobs "
                     "as a weighted total; Taylor-linearised SEs, with-replacement PSUs, strata "
                     "nested in countries, domains on the full design; CI: t with the country's "
                     "design df (#PSUs - #strata)",
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
                      "dominance on unweighted magnitudes, secondary suppression)",
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
@dataclass
class _Part:
    role: str            # num, den, rnum, rden, num2
    value: str
    population: str
    shift: int


def _parts(ind: dict[str, Any]) -> list[_Part]:
    out = []
    shift0 = int(ind.get("shift") or 0)
    for role, key in (("num", "numerator_spec"), ("den", "denominator_spec"),
                      ("rnum", "reference_numerator_spec"), ("rden", "reference_denominator_spec"),
                      ("num2", "numerator_2_spec")):
        spec = ind.get(key)
        if not isinstance(spec, dict) or "value" not in spec:
            continue
        out.append(_Part(role, spec["value"], spec.get("population", "all"),
                         int(spec.get("shift", shift0))))
    return out


def _needed_columns(ind: dict[str, Any]) -> list[str]:
    cols = list(ind["required_columns"])
    for part in _parts(ind):
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
        s_codes, s_uniq = pd.factorize(panel[scol])
        if (s_codes < 0).any():
            raise ValueError(f"strata column {scol!r} is missing in rows "
                             f"{panel.index[s_codes < 0][:10].tolist()}.")
        # strata nested in countries: (country, stratum label) pairs
        strat, _ = pd.factorize(area_codes.astype(np.int64) * max(len(s_uniq), 1) + s_codes)
    else:
        strat = area_codes.astype(np.int64)
        notes.append("no strata column: one stratum per country")
    if pcol and pcol in panel.columns:
        p_codes, p_uniq = pd.factorize(panel[pcol])
        if (p_codes < 0).any():
            raise ValueError(f"psu column {pcol!r} is missing in rows "
                             f"{panel.index[p_codes < 0][:10].tolist()}.")
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
    return _Design(psu, psu_stratum, psu_area, w, areas, years, yidx, notes)


def _group_codes(panel: pd.DataFrame, col: str | None) -> tuple[np.ndarray, list[str]]:
    if col is None:
        return np.zeros(len(panel), dtype=np.int64), [TOTAL]
    s = panel[col]
    na_label = _NA_LABEL.get(col, "not stated")
    if col in _BOOL_LABELS:
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        lab = np.where(np.isnan(v), 2, v).astype(np.int64)
        return lab, [*_BOOL_LABELS[col], na_label]
    codes, uniq = pd.factorize(s, sort=True)
    labels = [str(u) for u in uniq] + [na_label]
    codes = np.where(codes < 0, len(uniq), codes).astype(np.int64)
    return codes, labels


# ------------------------------------------------------------------------------------------
# the main function
# ------------------------------------------------------------------------------------------
def _load_needed(source: Any, reg: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Read only the columns the indicators need from a Parquet path/glob/folder, a DuckDB
    relation, a polars frame or a Spark DataFrame (see :mod:`msme_eval.engines`)."""
    from .. import engines
    wanted = {*keys, "firm_id", "size_class"}
    for ind in reg.to_dict("records"):
        wanted |= set(_needed_columns(ind))
    return engines.to_pandas(source, [c for c in engines.columns_of(source) if c in wanted])


def compute(panel: pd.DataFrame | str | Path, macro: pd.DataFrame | None = None, *,
            by: Sequence[str] = ("country", "year"), breakdowns: Iterable[str] = (),
            indicators: Iterable[str] | None = None, aggregate: bool = True,
            disclosure: bool = True, design: Sequence[str] = ("weight", "strata", "psu"),
            registry: str | Path | pd.DataFrame | None = None, singleton: str = "fail",
            level: float = 0.95, min_contributors: int = 3, dom_n: int = 2,
            dom_k: float = 0.85) -> pd.DataFrame:
    """Compute the registry indicators for every country-year (and ASEAN) as tidy rows.

    Returns ``OUTPUT_COLUMNS``: indicator, ref_area, time_period, breakdown ("total" or the
    breakdown column), group, value (percent for shares), se, ci_low, ci_high, n (unweighted
    records described), obs_status (A/E/M, see ``OBS_STATUS``), conf_status (disclosure),
    unit, comment (reason for M, macro source, item non-response, ASEAN coverage).

    ``by``: (area column, period column). ``breakdowns``: any of ``BREAKDOWNS`` (or another
    panel column). ``indicators``: ids (default all of the registry). ``aggregate``: add the
    ASEAN rows. ``disclosure``: apply :func:`msme_eval.disclosure.protect` (``False`` only for
    internal exploration). ``design``: (weight, strata, psu) column names. ``macro``: columns
    ``country, year, gdp, exports_total, business_loans_total, employment_total, usd_per_lcu``.
    Rules: module docstring / :func:`rules`.
    """
    if len(by) != 2:
        raise ValueError(f"by must be (area column, period column), got {tuple(by)!r}")
    area_col, year_col = by
    reg = registry if isinstance(registry, pd.DataFrame) else load_registry(registry)
    breakdowns = list(breakdowns)
    if not isinstance(panel, pd.DataFrame):
        panel = _load_needed(panel, reg, [*by, *design, *breakdowns])
    for col in (area_col, year_col):
        if col not in panel.columns:
            raise KeyError(f"panel has no column {col!r} (needed by `by`). Columns: "
                           f"{list(panel.columns)}")
    if indicators is not None:
        wanted = list(indicators)
        unknown = [i for i in wanted if i not in set(reg["id"])]
        if unknown:
            raise KeyError(f"unknown indicator id(s) {unknown}; registry has {reg['id'].tolist()}")
        reg = reg.set_index("id").loc[wanted].reset_index()
    bad = [b for b in breakdowns if b in (area_col, year_col)]
    if bad:
        raise ValueError(f"breakdowns {bad} duplicate the `by` columns")

    panel = panel.reset_index(drop=True)
    des = _design(panel, area_col, year_col, design)
    ctx = _Ctx(panel, year_col, area_col)
    macro_t = _macro_table(macro, area_col, year_col)
    est = _Estimator(panel, reg, des, ctx, macro_t, area_col, year_col, singleton, level)
    if disclosure:
        est.want_stats = True
        _fine_stats(est, [b for b in breakdowns if b in panel.columns])
    frames = [est.run(None, aggregate)]
    for b in breakdowns:
        if b not in panel.columns:
            frames.append(est.missing_breakdown(b))
        else:
            frames.append(est.run(b, aggregate and b != "region"))
    out = pd.concat(frames, ignore_index=True)
    if disclosure:
        out = est.protect(out, breakdowns, min_contributors=min_contributors, dom_n=dom_n,
                          dom_k=dom_k)
    else:
        out["conf_status"] = pd.Series(pd.NA, index=out.index, dtype="str")
    out = out[list(OUTPUT_COLUMNS)]
    order = {"indicator": {k: i for i, k in enumerate(reg["id"])},
             "breakdown": {k: i for i, k in enumerate([TOTAL, *breakdowns])}}
    out = out.sort_values(["indicator", "breakdown", "ref_area", "time_period", "group"],
                          key=lambda s: s.map(order[s.name]) if s.name in order else s,
                          kind="stable").reset_index(drop=True)
    out.attrs["rules"] = rules()
    out.attrs["design_notes"] = des.notes
    return out


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
    """Carries the panel, design and registry through the stages for one compute() call."""

    def __init__(self, panel: pd.DataFrame, reg: pd.DataFrame, des: _Design, ctx: _Ctx,
                 macro: pd.DataFrame | None, area_col: str, year_col: str, singleton: str,
                 level: float) -> None:
        self.panel, self.reg, self.des, self.ctx, self.macro = panel, reg, des, ctx, macro
        self.area_col, self.year_col = area_col, year_col
        self.singleton, self.level = singleton, level
        self.n_areas = len(des.areas)
        self.ny = len(des.years) + 1
        # large firms per (area, year) -- decides the macro fallback
        if "size_class" in panel.columns:
            large = (panel["size_class"] == "large").fillna(False).to_numpy(dtype=bool)
        else:
            large = np.zeros(len(panel), dtype=bool)
        ay = des.psu_area[des.psu] * self.ny + des.yidx
        self.large_count = np.bincount(ay, weights=large, minlength=self.n_areas * self.ny)
        self.has_year = np.bincount(ay, minlength=self.n_areas * self.ny) > 0
        # design df per area: #PSUs - #strata of that country
        n_psu = np.bincount(des.psu_area, minlength=self.n_areas)
        strata_area = np.zeros(int(des.psu_stratum.max()) + 1, dtype=np.int64)
        strata_area[des.psu_stratum] = des.psu_area
        n_str = np.bincount(strata_area, minlength=self.n_areas)
        self.df_area = (n_psu - n_str).astype(float)
        self.inds: list[dict[str, Any]] = reg.to_dict("records")
        self.missing_cols = {}
        for ind in self.inds:
            miss = [c for c in _needed_columns(ind) if c not in panel.columns]
            self.missing_cols[ind["id"]] = miss
        self.cell_stats: list[pd.DataFrame] = []
        self.want_stats = False
        self.fine_stats: dict[str, pd.DataFrame] | None = None
        self.fine_groups: list[str | None] = []
        self.asean_members: dict[tuple[str, int], list[str]] = {}

    # -- stage 1 ---------------------------------------------------------------------------
    def _psu_table(self, gcodes: np.ndarray, n_groups: int) -> tuple[pd.DataFrame, dict]:
        """Weighted sums per (psu, period, group) of every part, plus unweighted counts."""
        des, ctx = self.des, self.ctx
        w = des.weight
        key0 = (des.psu.astype(np.int64) * self.ny + des.yidx) * n_groups + gcodes
        blocks: dict[int, tuple[np.ndarray, pd.Index, dict[str, np.ndarray]]] = {}
        meta: dict[str, dict[str, Any]] = {}

        def block(shift: int):
            if shift not in blocks:
                inv, uniq = pd.factorize(key0 + shift * n_groups)
                blocks[shift] = (inv, uniq, {})
            return blocks[shift]

        block(0)[2]["__rows__"] = np.bincount(block(0)[0], minlength=len(block(0)[1])).astype(float)
        for ind in self.inds:
            iid = ind["id"]
            if self.missing_cols[iid]:
                continue
            parts = _parts(ind)
            vals = {p.role: ctx.get(p.value) for p in parts}
            pops = {p.role: ctx.get(p.population) for p in parts}
            # usable: every part known for rows in its population (per part for totals)
            if ind["kind"] == "total":
                usable = {p.role: ~np.isnan(pops[p.role]) & ((pops[p.role] == 0)
                                                             | ~np.isnan(vals[p.role]))
                          for p in parts}
            else:
                u = np.ones(len(w), dtype=bool)
                for p in parts:
                    u &= ~np.isnan(pops[p.role]) & ((pops[p.role] == 0) | ~np.isnan(vals[p.role]))
                usable = {p.role: u for p in parts}
            meta[iid] = {"parts": parts}
            for p in parts:
                inv, uniq, sums = block(p.shift)
                x = np.where(usable[p.role], vals[p.role] * pops[p.role], 0.0)
                x *= w
                sums[f"{iid}:{p.role}"] = np.bincount(inv, weights=x, minlength=len(uniq))
                if p.role not in ("num", "num2"):
                    continue
                inpop = pops[p.role] == 1
                # records in the population: shared by indicators with the same population
                pkey = f"__pop__{p.population}"
                if pkey not in sums:
                    sums[pkey] = np.bincount(inv, weights=inpop, minlength=len(uniq))
                cnt = usable[p.role] & inpop
                if p.role == "num2":  # entrants: records with a non-zero contribution
                    cnt &= vals[p.role] != 0
                    miss = np.bincount(inv, weights=inpop & ~usable[p.role], minlength=len(uniq))
                else:
                    miss = None
                n = np.bincount(inv, weights=cnt, minlength=len(uniq))
                if miss is None:
                    miss = sums[pkey] - n
                # parts in the same block add up (O04: followed firms + entrants)
                for name, arr in ((f"{iid}:n", n), (f"{iid}:pop", sums[pkey]),
                                  (f"{iid}:miss", miss)):
                    sums[name] = sums[name] + arr if name in sums else arr
        for _, _, sums in blocks.values():
            for k in [k for k in sums if k.startswith("__pop__")]:
                del sums[k]
        frames = []
        for shift, (inv, uniq, sums) in blocks.items():
            f = pd.DataFrame(sums, index=pd.Index(np.asarray(uniq), name="key"))
            frames.append(f)
        tab = pd.concat(frames).fillna(0.0).groupby(level=0).sum() if len(frames) > 1 else frames[0]
        key = tab.index.to_numpy()
        g = key % n_groups
        rest = key // n_groups
        yi = rest % self.ny
        psu = rest // self.ny
        tab = tab.reset_index(drop=True)
        tab["_psu"] = psu
        tab["_stratum"] = des.psu_stratum[psu]
        tab["_area"] = des.psu_area[psu]
        tab["_yi"] = yi
        tab["_g"] = g
        return tab, meta

    # -- stages 2 and 3 --------------------------------------------------------------------
    def run(self, breakdown: str | None, aggregate: bool) -> pd.DataFrame:
        gcodes, labels = _group_codes(self.panel, breakdown)
        n_groups = len(labels)
        tab, meta = self._psu_table(gcodes, n_groups)
        publish = np.ones(n_groups, dtype=bool)
        if breakdown == "size_class":
            publish = np.array([lab in MSME_CLASSES for lab in labels])
        if self.want_stats:
            self.cell_stats.append(_cell_stats(self, breakdown, labels))
        live = [ind for ind in self.inds if not self.missing_cols[ind["id"]]]
        rows = [self._all_missing(ind, tab, breakdown, labels, publish)
                for ind in self.inds if self.missing_cols[ind["id"]]]
        if not live:
            return pd.concat(rows, ignore_index=True)
        # -- country-year status (macro fallback, availability) ------------------------------
        cnt_cols = [f"{ind['id']}:{c}" for ind in live for c in ("n", "pop", "miss")]
        t_ay = tab.groupby(["_area", "_yi"], sort=True)[[*cnt_cols, "__rows__"]].sum()
        t_ay = t_ay[(t_ay["__rows__"] > 0).to_numpy()
                    & (t_ay.index.get_level_values(1) < len(self.des.years))]
        area = t_ay.index.get_level_values(0).to_numpy()
        yi = t_ay.index.get_level_values(1).to_numpy()
        ay_key = area * self.ny + yi
        st: dict[str, pd.DataFrame] = {}
        t = tab.copy()
        ay_tab = t["_area"].to_numpy() * self.ny + t["_yi"].to_numpy()
        for ind in live:
            iid = ind["id"]
            status, comment, macro_add, use_macro = self._area_year_status(
                ind, area, yi, t_ay[f"{iid}:n"].to_numpy(), t_ay[f"{iid}:pop"].to_numpy(),
                t_ay[f"{iid}:miss"].to_numpy())
            st[iid] = pd.DataFrame({"status": status, "comment": comment, "macro": macro_add,
                                    "use_macro": use_macro}, index=ay_key)
            if f"{iid}:den" in t.columns and use_macro.any():
                t.loc[np.isin(ay_tab, ay_key[use_macro]), f"{iid}:den"] = 0.0
        res = self._estimate_all(live, t, ["_area", "_yi"], n_groups,
                                 {i: s["macro"] for i, s in st.items()},
                                 lambda d: d["_area"].to_numpy() * self.ny + d["_yi"].to_numpy())
        for ind in live:
            iid = ind["id"]
            est = res[iid]
            key = est["_area"].to_numpy() * self.ny + est["_yi"].to_numpy()
            est = est[np.isin(key, ay_key)].copy()
            key = est["_area"].to_numpy() * self.ny + est["_yi"].to_numpy()
            est["obs_status"] = st[iid]["status"].reindex(key).to_numpy()
            est["comment"] = st[iid]["comment"].reindex(key).to_numpy()
            est["ref_area"] = np.asarray(self.des.areas)[est["_area"].to_numpy()]
            est["df"] = self.df_area[est["_area"].to_numpy()]
            rows.append(self._finish(ind, est, breakdown, labels, publish))
        if aggregate:
            rows += [self._all_missing(ind, tab, breakdown, labels, publish, asean=True)
                     for ind in self.inds if self.missing_cols[ind["id"]]]
            rows += self._asean(live, t, breakdown, labels, publish, st)
        return pd.concat([r for r in rows if len(r)], ignore_index=True)

    def _area_year_status(self, ind: dict[str, Any], area: np.ndarray, yi: np.ndarray,
                          n_total: np.ndarray, pop_total: np.ndarray, miss_total: np.ndarray):
        """Per (area, period) of the total cell: status A/E/M, comment, macro denominator.

        Vectorised over the country-years; the first rule that applies gives the reason.
        """
        k = len(area)
        a_lab = np.asarray(self.des.areas, dtype=object)[area]
        year = self.des.years[np.minimum(yi, len(self.des.years) - 1)]
        where = pd.Series(a_lab, dtype="str") + " " + pd.Series(year).astype("str")
        where = where.to_numpy(dtype=object)
        ay = area * self.ny + yi
        no_large = self.large_count[ay] == 0
        cols = ", ".join(c for c in ind["required_columns"] if c != "size_class") or "size_class"
        shift = max([p.shift for p in _parts(ind)] + [0])
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

    def _estimate_all(self, live: list[dict[str, Any]], t: pd.DataFrame, domain: list[str],
                      n_groups: int, macro_add: dict[str, pd.Series],
                      ay_of: Callable[[pd.DataFrame], np.ndarray]) -> dict[str, pd.DataFrame]:
        """Point estimates and linearised SEs of every indicator in every (domain, group) cell.

        ``t`` has one row per (PSU, period, group) with the weighted sums of the parts. The
        estimates are ratios of sums over the cell's rows (plus a macro denominator); the SEs
        come from the linearised variable of each estimator (Woodruff 1971), e.g.
        ``u = (a - R b) / B`` for a ratio, ``R (a/A - b/B - c/C + d/D)`` for K04, ``u = a``
        for a total, summed per PSU; :func:`msme_eval.survey.totals_from_sums` (stage b)
        gives the design variance of its total over the full design (strata, every PSU).
        Share-of-total cells use a PSU x period table so the group numerator and the
        country-year denominator share their PSU totals.
        """
        ny = self.ny
        dom = t[domain[0]].to_numpy(dtype=np.int64) * ny + t["_yi"].to_numpy(dtype=np.int64)
        g = t["_g"].to_numpy(dtype=np.int64)
        cell_code, cell_uniq = pd.factorize(dom * n_groups + g)
        n_cells = len(cell_uniq)
        cell_dom = np.asarray(cell_uniq) // n_groups
        cell_g = np.asarray(cell_uniq) % n_groups
        dom_code, dom_uniq = pd.factorize(dom)
        n_dom = len(dom_uniq)
        cell_domc = pd.Index(np.asarray(dom_uniq)).get_indexer(cell_dom)

        def csum(x: np.ndarray) -> np.ndarray:
            return np.bincount(cell_code, weights=x, minlength=n_cells)

        def dsum(x: np.ndarray) -> np.ndarray:
            return np.bincount(dom_code, weights=x, minlength=n_dom)

        rows_cell = csum(t["__rows__"].to_numpy())
        # PSU x period table (share-of-total cells)
        pw_code = None
        strat = t["_stratum"].to_numpy()
        psu = t["_psu"].to_numpy()
        long_u: dict[str, np.ndarray] = {}
        wide_u: dict[str, dict[int, np.ndarray]] = {}
        point: dict[str, np.ndarray] = {}
        for ind in live:
            iid = ind["id"]
            roles = {p.role for p in _parts(ind)}
            col = {r: t[f"{iid}:{r}"].to_numpy(dtype=float) for r in roles}
            madd_dom = macro_add[iid].reindex(np.asarray(dom_uniq)).fillna(0.0).to_numpy()
            share = not (ind["kind"] == "total" or ind["scope"] == "within_group"
                         or n_groups == 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                if ind["kind"] == "total":
                    u = col["num"] + col.get("num2", 0.0)
                    point[iid] = csum(u)
                    long_u[iid] = u
                    continue
                if not share:
                    # the cell is the domain: every part summed over the cell
                    big = {r: csum(col[r]) for r in roles}
                    if "den" not in big:
                        big["den"] = np.zeros(n_cells)
                        col["den"] = np.zeros(len(t))
                    big["den"] = big["den"] + madd_dom[cell_domc]
                    if ind["kind"] == "ratio":
                        r_ = big["num"] / big["den"]
                        u = (col["num"] - r_[cell_code] * col["den"]) / big["den"][cell_code]
                    else:
                        r_ = (big["num"] / big["den"]) / (big["rnum"] / big["rden"])
                        u = r_[cell_code] * (col["num"] / big["num"][cell_code]
                                             - col["den"] / big["den"][cell_code]
                                             - col["rnum"] / big["rnum"][cell_code]
                                             + col["rden"] / big["rden"][cell_code])
                    point[iid] = r_
                    long_u[iid] = np.nan_to_num(u)
                    continue
                # share of the country-year total: group parts over the domain's totals
                if pw_code is None:
                    pw_code, pw_uniq = pd.factorize(psu.astype(np.int64) * ny
                                                    + t["_yi"].to_numpy(dtype=np.int64))
                    first = np.zeros(len(pw_uniq), dtype=np.int64)
                    first[pw_code[::-1]] = np.arange(len(t))[::-1]
                gp = ("num", "den") if ind["kind"] == "relative_ratio" else ("num",)
                tp = [r for r in roles if r not in gp]
                big_c = {r: csum(col[r]) for r in gp}
                big_d = {r: dsum(col[r]) for r in tp}
                if ind["kind"] == "ratio":
                    if "den" not in big_d:
                        big_d["den"] = np.zeros(n_dom)
                        col["den"] = np.zeros(len(t))
                    big_d["den"] = big_d["den"] + madd_dom
                    den_c = big_d["den"][cell_domc]
                    r_ = big_c["num"] / den_c
                else:
                    r_ = ((big_c["num"] / big_c["den"])
                          / (big_d["rnum"][cell_domc] / big_d["rden"][cell_domc]))
                point[iid] = r_
                wide_u[iid] = {}
                for gg in np.unique(cell_g):
                    in_g = (g == gg).astype(float)
                    # R_g and the totals of the group's cell in each domain (row's domain)
                    sel = np.full(n_dom, np.nan)
                    idx = np.flatnonzero(cell_g == gg)
                    sel[cell_domc[idx]] = idx
                    ci = sel[dom_code]
                    ok = ~np.isnan(ci)
                    ci = np.where(ok, ci, 0).astype(np.int64)
                    rr = np.where(ok, r_[ci], 0.0)
                    if ind["kind"] == "ratio":
                        dd = big_d["den"][dom_code]
                        u = (col["num"] * in_g - rr * col["den"]) / dd
                    else:
                        u = rr * (col["num"] * in_g / big_c["num"][ci]
                                  - col["den"] * in_g / big_c["den"][ci]
                                  - col["rnum"] / big_d["rnum"][dom_code]
                                  + col["rden"] / big_d["rden"][dom_code])
                    u = np.where(ok, np.nan_to_num(u), 0.0)
                    wide_u[iid][int(gg)] = np.bincount(pw_code, weights=u,
                                                       minlength=len(pw_uniq))
        # stage (b): design variance of the linearised totals
        var = {iid: np.full(n_cells, np.nan) for iid in point}
        if long_u:
            tot = self._stage_b({"_dom": dom, "_g": g}, strat, psu, t["__rows__"].to_numpy(),
                                long_u)
            kd = tot.keys["_dom"].to_numpy(dtype=np.int64) * n_groups \
                + tot.keys["_g"].to_numpy(dtype=np.int64)
            pos = pd.Index(np.asarray(cell_uniq)).get_indexer(kd)
            okp = pos >= 0
            for j, iid in enumerate(tot.columns):
                var[iid][pos[okp]] = tot.cov[okp, j, j]
        for iid, cols in wide_u.items():
            names = {f"{iid}@{gg}": v for gg, v in cols.items()}
            tot = self._stage_b({"_dom": dom[first]}, strat[first], psu[first],
                                np.bincount(pw_code, minlength=len(first)), names)
            kd = tot.keys["_dom"].to_numpy(dtype=np.int64)
            for j, (gg, _) in enumerate(cols.items()):
                pos = pd.Index(np.asarray(cell_uniq)).get_indexer(kd * n_groups + gg)
                okp = pos >= 0
                var[iid][pos[okp]] = tot.cov[okp, j, j]
        # cells table
        keys = {domain[0]: cell_dom // ny, "_yi": cell_dom % ny, "_g": cell_g}
        keep = (rows_cell > 0) & (keys["_yi"] < len(self.des.years))
        out: dict[str, pd.DataFrame] = {}
        for ind in live:
            iid = ind["id"]
            res = pd.DataFrame({k: v[keep] for k, v in keys.items()})
            for c in ("n", "pop", "miss"):
                res[f"_{c}"] = csum(t[f"{iid}:{c}"].to_numpy())[keep]
            res["value"] = point[iid][keep] * ind["scale"]
            res["se"] = np.sqrt(np.maximum(var[iid][keep], 0.0)) * ind["scale"]
            res["n"] = res["_n"].astype(np.int64)
            out[iid] = res
        return out

    def _stage_b(self, by: dict[str, np.ndarray], strat: np.ndarray, psu: np.ndarray,
                 n: np.ndarray, cols: dict[str, np.ndarray]) -> survey.Totals:
        """survey.totals_from_sums on a table already summed per (domain, stratum, PSU).

        The table has the documented stage-(a) layout of :func:`msme_eval.survey.grouped_sums`
        (by columns, ``__stratum__``, ``__psu__``, ``__excluded__``, ``n``, ``w*<name>``);
        the rows' values are PSU totals of the weighted linearised variables (weight 1).
        """
        names = list(cols)
        data: dict[str, Any] = dict(by)
        data.update({"__stratum__": strat, "__psu__": psu,
                     "__excluded__": np.zeros(len(strat), dtype=bool),
                     "n": np.asarray(n, dtype=np.int64)})
        data.update({f"w*{k}": v for k, v in cols.items()})
        table = pd.DataFrame(data)
        table.attrs.update(variables=names, ones=[False] * len(names), by=list(by),
                           rows_are_psus=False, deff=False, strata="_stratum", psu="_psu",
                           weight=None)
        return survey.totals_from_sums(table, singleton=self.singleton, level=self.level)

    def _finish(self, ind: dict[str, Any], est: pd.DataFrame, breakdown: str | None,
                labels: list[str], publish: np.ndarray) -> pd.DataFrame:
        est = est[publish[est["_g"].to_numpy()]].copy()
        df = est["df"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            tq = np.where(df > 0, stats.t.ppf((1 + self.level) / 2, np.maximum(df, 1)), np.nan)
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
            "time_period": self.des.years[np.minimum(est["_yi"].to_numpy(),
                                                     len(self.des.years) - 1)].astype(np.int64),
            "breakdown": breakdown or TOTAL,
            "group": np.asarray(labels, dtype=object)[est["_g"].to_numpy()],
            "value": value, "se": se,
            "ci_low": value - tq * se, "ci_high": value + tq * se,
            "n": est["n"].to_numpy(dtype=np.int64),
            "obs_status": status, "unit": ind["unit"], "comment": comment,
        })
        for c in ("ref_area", "breakdown", "group", "obs_status", "unit", "comment", "indicator"):
            out[c] = out[c].astype("str")
        return out

    def _all_missing(self, ind: dict[str, Any], tab: pd.DataFrame, breakdown: str | None,
                     labels: list[str], publish: np.ndarray, asean: bool = False) -> pd.DataFrame:
        cells = tab.groupby(["_area", "_yi", "_g"], sort=True)["__rows__"].sum().reset_index()
        cells = cells[(cells["__rows__"] > 0) & publish[cells["_g"].to_numpy()]]
        cells = cells[cells["_yi"] < len(self.des.years)]
        reason = (f"column(s) {', '.join(self.missing_cols[ind['id']])} not in the panel")
        if asean:
            cells = cells.drop_duplicates(["_yi", "_g"])
            area = np.full(len(cells), _ASEAN, dtype=object)
        else:
            area = np.asarray(self.des.areas)[cells["_area"].to_numpy()]
        return pd.DataFrame({
            "indicator": ind["id"], "ref_area": area,
            "time_period": self.des.years[cells["_yi"].to_numpy()].astype(np.int64),
            "breakdown": breakdown or TOTAL,
            "group": np.asarray(labels, dtype=object)[cells["_g"].to_numpy()],
            "value": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "n": np.zeros(len(cells), dtype=np.int64), "obs_status": "M",
            "unit": ind["unit"], "comment": reason,
        }).astype({c: "str" for c in ("indicator", "ref_area", "breakdown", "group",
                                      "obs_status", "unit", "comment")})

    def missing_breakdown(self, b: str) -> pd.DataFrame:
        """A requested breakdown column absent from the panel: one M row per indicator-area-year."""
        area = np.asarray(self.des.areas)[self.des.psu_area[self.des.psu]]
        keys = pd.DataFrame({"ref_area": area, "time_period": self.des.years[self.des.yidx]})
        keys = keys.drop_duplicates().sort_values(["ref_area", "time_period"])
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
    def _asean(self, live: list[dict[str, Any]], tab: pd.DataFrame, breakdown: str | None,
               labels: list[str], publish: np.ndarray,
               st_all: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
        """Pooled ASEAN rows: country totals summed (money in USD), countries as strata."""
        t = tab.copy()
        t["_one"] = 0
        ay = t["_area"].to_numpy() * self.ny + t["_yi"].to_numpy()
        names = np.asarray(self.des.areas)
        macro_add: dict[str, pd.Series] = {}
        info: dict[str, pd.DataFrame] = {}
        new_cols: dict[str, np.ndarray] = {}
        for ind in live:
            iid = ind["id"]
            st = st_all[iid].copy()
            keys = st.index.to_numpy()
            st["_a"], st["_yi"] = keys // self.ny, keys % self.ny
            st["rate"] = self._usd(keys).to_numpy() if ind["money"] else 1.0
            st["incl"] = (st["status"] != "M") & np.isfinite(st["rate"])
            rate = st["rate"].where(st["incl"], 0.0).reindex(ay).fillna(0.0).to_numpy()
            incl = st["incl"].reindex(ay).fillna(False).to_numpy(dtype=bool)
            upd = {f"{iid}:{r}": t[f"{iid}:{r}"].to_numpy() * rate
                   for r in (p.role for p in _parts(ind))}
            upd.update({c: np.where(incl, t[c].to_numpy(), 0.0)
                        for c in (f"{iid}:n", f"{iid}:pop", f"{iid}:miss")})
            new_cols.update(upd)
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
            macro_add[iid] = per["macro"]
            info[iid] = per
        t = pd.concat([t.drop(columns=list(new_cols)), pd.DataFrame(new_cols, index=t.index)],
                      axis=1)
        res = self._estimate_all(live, t, ["_one", "_yi"], len(labels), macro_add,
                                 lambda d: d["_yi"].to_numpy())
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
            est["ref_area"] = _ASEAN
            est["df"] = per["df"].reindex(yi).fillna(0).to_numpy()
            out.append(self._finish(ind, est, breakdown, labels, publish))
        return out

    def _usd(self, ay_keys: np.ndarray) -> pd.Series:
        if self.macro is None or "usd_per_lcu" not in self.macro.columns:
            return pd.Series(np.nan, index=ay_keys)
        a = np.asarray(self.des.areas)[ay_keys // self.ny]
        yi = ay_keys % self.ny
        last = len(self.des.years) - 1
        y = np.where(yi <= last, self.des.years[np.minimum(yi, last)], -1)
        idx = pd.MultiIndex.from_arrays([a, y])
        vals = self.macro["usd_per_lcu"].reindex(idx).to_numpy(dtype=float)
        return pd.Series(vals, index=ay_keys)

    # -- disclosure -------------------------------------------------------------------------
    def protect(self, out: pd.DataFrame, breakdowns: list[str], **params: Any) -> pd.DataFrame:
        return _protect(self, out, breakdowns, **params)


# disclosure glue lives in its own module (imported last: it uses names defined above)
from ._protect import _cell_stats, _fine_stats, _protect  # noqa: E402
