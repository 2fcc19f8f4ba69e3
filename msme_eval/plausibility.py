"""Plausibility at the boundary: the checks that need two tables at once.

Each input passes its own contract in `schema` (types, ranges, duplicates). What no single table
can show is whether the tables *fit together*: a GDP column in billions against a panel in units,
targets written as 0-1 shares for percent indicators, an exchange rate given the wrong way round,
a member state missing from the macro table for some years. Those produce numbers that look
normal (an "MSME contribution to GDP" of 6e10 %, 22 of 22 targets "achieved"), so they are
refused (``error``) or flagged (``warning``) here, with the rows, the values and the fix.

Rules (each names its evidence; none needs an outside figure):

* **targets vs the indicator registry**: unknown indicator ids (error); values outside [0, 100]
  for percent indicators (error); every percent target <= 1 while the indicator's own values are
  well above 1 -> written as 0-1 shares (error); a target on the wrong side of the baseline given
  the registry's direction (warning).
* **macro coverage**: every (country, year) of the panel has a macro row with the columns the
  indicators use (warning naming the country-years; the ASEAN aggregate then covers fewer states).
* **macro scale**: the panel's weighted total of a magnitude (value added, employees, exports,
  loans) is not larger than the macro total it is divided by (x 1.05 tolerance); larger means the
  macro column is in thousands / millions / billions (error). A panel total below 1e-5 of the macro
  total means the opposite slip (warning).
* **survey design**: strata with a single PSU in a country-year (no within-stratum variance
  can be estimated) are reported with the rule the cycle applies to them (warning; ``n_rows``
  counts their records; the stratum labels are listed for the evaluator, and left out of the
  published page by `report.protect.validation_findings`).
* **exchange rates**: a year-on-year change of the rate beyond x2 (warning); a country whose
  median turnover per employee in USD is over 1,000 times (or under 1/1,000 of) the median across
  member states — income differences within ASEAN are far smaller — means its rate is inverted
  (local currency per USD) or in the wrong unit (error).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from msme_eval import indicators, survey
from msme_eval.schema import Issue, ValidationReport

__all__ = ["check_inputs", "MACRO_PAIRS"]

# macro column -> the panel magnitude it is the national total of
MACRO_PAIRS: dict[str, str] = {"gdp": "value_added", "employment_total": "employees",
                               "exports_total": "exports", "business_loans_total": "loans_outstanding"}
SCALE_TOLERANCE = 1.05
TINY_SHARE = 1e-5
FX_JUMP = 2.0
FX_INCOME_SPREAD = 1_000.0
N_SHOW = 5


def _issue(file: str, column: str | None, rule: str, severity: str, rows: Iterable[int],
           values: Iterable[Any], message: str, fix: str) -> Issue:
    rows, values = [int(r) for r in rows], list(values)
    shown = "; ".join(str(v) for v in values[:N_SHOW]) + (" ..." if len(values) > N_SHOW else "")
    message = f"{file}, column {column}: {message}" + (f" ({shown})" if shown else "")
    return Issue(file=file, column=column, rule=rule, severity=severity, n_rows=len(rows),
                 rows=tuple(rows[:N_SHOW]), values=tuple(values[:N_SHOW]), message=message, fix=fix)


def _rows(mask: pd.Series) -> np.ndarray:
    """1-based data rows of a boolean mask (the contract's row convention)."""
    return np.flatnonzero(np.asarray(mask, dtype=bool)) + 1


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
def _target_issues(targets: pd.DataFrame, registry: pd.DataFrame, file: str,
                   observed: pd.DataFrame | None) -> list[Issue]:
    out: list[Issue] = []
    known = set(registry["id"])
    unknown = ~targets["indicator"].isin(known)
    if unknown.any():
        out.append(_issue(file, "indicator", "target_unknown_indicator", "error", _rows(unknown),
                          targets.loc[unknown, "indicator"],
                          "indicator id not in the indicator registry: this target would be lost",
                          f"use one of {', '.join(sorted(known))} (msme_eval/indicators/indicators.yaml)"))
    units = targets["indicator"].map(dict(zip(registry["id"], registry["unit"])))
    pct = units.eq("percent")
    vals = targets[["baseline_value", "target_value"]]
    outside = pct & ((vals < 0) | (vals > 100)).any(axis=1)
    if outside.any():
        out.append(_issue(file, "target_value", "target_share_out_of_range", "error", _rows(outside),
                          targets.loc[outside, "target_value"],
                          "a percent indicator's baseline or target lies outside 0-100",
                          "give percent indicators in percent (e.g. 45.2, not 4520)"))
    out += _share_scale(targets, pct, vals, file, observed)
    out += _direction(targets, registry, file)
    return out


def _share_scale(targets: pd.DataFrame, pct: pd.Series, vals: pd.DataFrame, file: str,
                 observed: pd.DataFrame | None) -> list[Issue]:
    """All percent targets <= 1 where the indicators themselves are mostly above 1 -> 0-1 shares."""
    if pct.sum() < 3 or not (vals[pct].abs() <= 1).all().all():
        return []
    if observed is not None and len(observed):
        obs = observed[observed["indicator"].isin(set(targets.loc[pct, "indicator"]))]["value"]
        if len(obs) and float((obs.abs() <= 1).mean()) > 0.5:
            return []  # the indicators really are that small here
    return [_issue(file, "target_value", "target_written_as_share", "error", _rows(pct),
                   targets.loc[pct, "target_value"],
                   "every baseline and target of a percent indicator is between 0 and 1: they look "
                   "like 0-1 shares, so every one would read as 'achieved' or 'regression'",
                   "multiply the percent indicators' baseline_value and target_value by 100")]


def _direction(targets: pd.DataFrame, registry: pd.DataFrame, file: str) -> list[Issue]:
    direction = targets["indicator"].map(dict(zip(registry["id"], registry["direction"])))
    sign = direction.map({"higher": 1.0, "lower": -1.0})
    worse = (sign * (targets["target_value"] - targets["baseline_value"])) < 0
    if not worse.any():
        return []
    return [_issue(file, "target_value", "target_against_direction", "warning", _rows(worse),
                   targets.loc[worse, "indicator"],
                   "the target is on the worse side of the baseline for the indicator's direction "
                   "(registry: higher or lower is better)",
                   "check the target, or change the indicator's direction in indicators.yaml")]


# --------------------------------------------------------------------------------------------
# macro
# --------------------------------------------------------------------------------------------
def _weighted_totals(panel: pd.DataFrame) -> pd.DataFrame:
    w = panel["weight"] if "weight" in panel else pd.Series(1.0, index=panel.index)
    cols = [c for c in MACRO_PAIRS.values() if c in panel.columns]
    frame = panel[["country", "year"]].copy()
    for c in cols:
        frame[c] = pd.to_numeric(panel[c], errors="coerce").astype(float) * w.astype(float)
    return frame.groupby(["country", "year"], observed=True)[cols].sum(min_count=1)


def _macro_issues(panel: pd.DataFrame, macro: pd.DataFrame, file: str) -> list[Issue]:
    out: list[Issue] = []
    keyed = macro.reset_index(drop=True).assign(_row=lambda d: d.index + 1).set_index(["country", "year"])
    need = sorted(set(panel[["country", "year"]].itertuples(index=False, name=None)))
    missing = [cy for cy in need if cy not in keyed.index]
    if missing:
        out.append(_issue(file, "country", "macro_missing_country_year", "warning", [],
                          [f"{c} {y}" for c, y in missing],
                          f"{len(missing)} country-year(s) of the panel have no macro row: indicators "
                          "divided by a macro total are not computed there, and the ASEAN aggregate "
                          "of those years leaves the country out",
                          "add the missing country-years to the macro table"))
    totals = _weighted_totals(panel)
    for mcol, pcol in MACRO_PAIRS.items():
        if mcol in keyed.columns and pcol in totals.columns:
            out += _scale(totals[pcol], keyed, mcol, pcol, file)
    return out


def _scale(panel_total: pd.Series, keyed: pd.DataFrame, mcol: str, pcol: str, file: str) -> list[Issue]:
    both = pd.concat([panel_total.rename("panel"), keyed[[mcol, "_row"]]], axis=1, join="inner").dropna()
    both = both[both[mcol] > 0]
    ratio = both["panel"] / both[mcol]
    out = []
    big = ratio > SCALE_TOLERANCE
    if big.any():
        out.append(_issue(file, mcol, "macro_smaller_than_panel", "error", both.loc[big, "_row"],
                          [f"{c} {y}: panel/macro = {r:,.3g}" for (c, y), r in ratio[big].items()],
                          f"the panel's weighted total of {pcol} is larger than the national {mcol}: "
                          "the macro column is probably in thousands, millions or billions",
                          f"give {mcol} in the same local currency units as the panel (units, not "
                          "thousands/millions/billions), or fix the panel's weights"))
    tiny = (ratio > 0) & (ratio < TINY_SHARE)
    if tiny.any():
        out.append(_issue(file, mcol, "macro_much_larger_than_panel", "warning", both.loc[tiny, "_row"],
                          [f"{c} {y}: panel/macro = {r:.2g}" for (c, y), r in ratio[tiny].items()],
                          f"the panel's weighted total of {pcol} is below {TINY_SHARE:g} of {mcol}: "
                          "one of the two is probably in the wrong unit",
                          f"check the units of {mcol} and of the panel's {pcol}"))
    return out


def _fx_issues(panel: pd.DataFrame, macro: pd.DataFrame, file: str) -> list[Issue]:
    if "usd_per_lcu" not in macro.columns:
        return []
    out: list[Issue] = []
    m = macro.reset_index(drop=True).assign(_row=lambda d: d.index + 1).sort_values(["country", "year"])
    m = m[m["usd_per_lcu"] > 0]
    jump = m.groupby("country")["usd_per_lcu"].transform(lambda s: (s / s.shift()).abs())
    bad = (jump > FX_JUMP) | (jump < 1 / FX_JUMP)
    if bad.any():
        out.append(_issue(file, "usd_per_lcu", "fx_jump", "warning", m.loc[bad, "_row"],
                          [f"{c} {y}: x{j:.3g}" for c, y, j in zip(m.loc[bad, "country"],
                                                                   m.loc[bad, "year"], jump[bad])],
                          f"the exchange rate changes by more than x{FX_JUMP:g} from one year to the next",
                          "check the rate (USD per unit of local currency) for those years"))
    out += _fx_income(panel, m, file)
    return out


def _fx_income(panel: pd.DataFrame, m: pd.DataFrame, file: str) -> list[Issue]:
    """Median turnover per employee in USD by country against the median across countries."""
    if "turnover" not in panel.columns:
        return []
    p = panel[(panel["employees"] > 0) & (panel["turnover"] > 0)]
    per = (p["turnover"].astype(float) / p["employees"].astype(float)).groupby(
        [p["country"], p["year"]], observed=True).median()
    rate = m.set_index(["country", "year"])["usd_per_lcu"]
    usd = (per * rate.reindex(per.index)).dropna().groupby(level=0).median()
    if len(usd) < 3:
        return []
    rel = usd / usd.median()
    odd = rel[(rel > FX_INCOME_SPREAD) | (rel < 1 / FX_INCOME_SPREAD)]
    if odd.empty:
        return []
    rows = m.loc[m["country"].isin(odd.index), "_row"]
    return [_issue(file, "usd_per_lcu", "fx_implausible", "error", rows,
                   [f"{c}: x{r:.3g} the ASEAN median" for c, r in odd.items()],
                   "in USD, this country's median turnover per employee is over "
                   f"{FX_INCOME_SPREAD:,.0f} times above or below the median across member states: the "
                   "exchange rate is probably inverted (local currency per USD) or in the wrong unit",
                   "give usd_per_lcu as US dollars per one unit of local currency, not local currency per US dollar")]


def _single_psu(panel: pd.DataFrame, file: str, rule: str,
                certainty: Sequence[str] = ()) -> list[Issue]:
    """Strata-years with one PSU, except the take-all strata named in ``certainty`` (a stratum
    label, or "country|label" for one country's; :func:`survey.certainty_mask`, which also
    stops at a name that is no stratum), which need no variance."""
    if not {"strata", "psu"} <= set(panel.columns):
        return []
    keys = ["country", "year", "strata"]
    n_psu = panel.groupby(keys, observed=True)["psu"].nunique()
    named = survey.certainty_mask([h for _, _, h in n_psu.index], certainty,
                                  qualified=[f"{c}|{h}" for c, _, h in n_psu.index])
    single = n_psu[(n_psu == 1).to_numpy() & ~named]
    if single.empty:
        return []
    in_single = pd.MultiIndex.from_frame(panel[keys].astype(object)).isin(list(single.index))
    return [_issue(file, "strata", "single_psu_stratum", "warning", _rows(in_single),
                   [f"{c} {y} stratum {h}" for c, y, h in single.index],
                   f"{len(single)} stratum-year(s) hold a single PSU, so their sampling variance "
                   f"cannot be estimated; they are handled by the rule '{rule}' ("
                   + SINGLETON_RULES.get(rule, rule) + ")",
                   "collapse each with a similar stratum in the survey design, or keep the rule")]


SINGLETON_RULES = {
    "centre": "the PSU's deviation from the grand mean of PSU totals, R survey.lonely.psu='adjust'",
    "certainty": "treated as self-representing, no variance contribution",
    "fail": "estimation stops",
}


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def check_inputs(panel: pd.DataFrame, macro: pd.DataFrame | None = None,
                 targets: pd.DataFrame | None = None, *, observed: pd.DataFrame | None = None,
                 files: dict[str, str] | None = None, registry: pd.DataFrame | None = None,
                 singleton: str = "centre", certainty: Sequence[str] = ()) -> ValidationReport:
    """Cross-table plausibility of a validated panel, macro and targets table (module docstring).

    ``observed`` (optional): an indicator table computed from the panel, to tell real small
    percentages from 0-1 shares; ``singleton`` names the rule applied to single-PSU strata,
    ``certainty`` the take-all strata (not warned about: they need no variance).
    Returns a `ValidationReport`; ``.raise_for_errors()`` raises
    `DataValidationError` listing every error. ``files`` names the inputs in the messages.
    """
    files = {"macro": "macro table", "targets": "targets table", **(files or {})}
    registry = indicators.registry() if registry is None else registry
    issues: list[Issue] = _single_psu(panel, files.get("panel", "panel"), singleton, certainty)
    if targets is not None and len(targets):
        issues += _target_issues(targets.reset_index(drop=True), registry, files["targets"], observed)
    if macro is not None and len(macro):
        issues += _macro_issues(panel, macro, files["macro"])
        issues += _fx_issues(panel, macro, files["macro"])
    checked = [files[k] for k, table in (("macro", macro), ("targets", targets)) if table is not None]
    return ValidationReport(", ".join(checked) or "inputs", issues)
