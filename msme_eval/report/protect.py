"""Disclosure control for everything a report publishes beyond the indicator table.

The indicator table is protected where it is computed (`indicators.compute`, `disclosure`).
The impact section and the programme counts publish other numbers about small groups of firms:
effects of a programme with two supported firms, the total support of one firm, the share of
support that one woman-owned firm received. The same rules apply to them (DESIGN.md section 4):

* **minimum contributors** (default 3 firms) for the group *and* for its comparison: an effect
  needs ``min_contributors`` supported and comparison firms; a subgroup share needs them in the
  subgroup and in the rest of the supported firms (else 1 - share reveals the rest);
* **(n, k) dominance** on magnitudes: total support, cost per job and a subgroup's share of
  support are suppressed when the ``n`` largest recipients hold more than ``k`` of the total;
* **secondary suppression** across the published hierarchy: programme counts by member state
  add up to the ASEAN count, so one suppressed country count is protected by suppressing a
  second one (`disclosure.protect` with the countries as a relation);
* a difference between two subgroups is suppressed with either of them.

Suppressed cells are NaN with an SDMX ``conf_status`` (``A`` count, ``O``/``T`` dominance, ``D``
secondary); published cells are ``F``.

**Data-quality page** (``notebooks/10_data_quality.ipynb``). What each table publishes and why
it may (decisions under DESIGN.md section 4: a cell describing firms needs ``min_contributors``
of them; a count of *problems* may describe fewer when it reveals no firm's value):

* firms observed by country and year (`coverage_counts`, `coverage_table`): a count of firms
  per cell, so fewer than ``min_contributors`` is suppressed, with secondary suppression along
  the country (years add up to the country's published record count) and the year (countries
  add up to the region's);
* zeros and extreme values by variable (`outlier_rows`): shares and counts among the firms of
  the area with a value; the row is suppressed when those firms are fewer than
  ``min_contributors`` (a share of zeros or the count of negative values of one or two firms
  is their value); with enough firms, the counts of extreme and negative values are counts of
  problems, as a proportion's numerator is (K05, K08);
* missing values (% of records with no value, by country and column): published at any size:
  item non-response is a count of problems, not a value a firm reported;
* validation findings (`validation_findings`): the rule, how many records break it and the
  fix; never the row numbers, the values or the listed strata/country-years that the full
  report names (a single-PSU stratum list names design cells of possibly one firm; a
  panel/macro ratio is the panel's weighted total of a country-year);
* supported firms by programme (`programme_counts`) as above. No table carries a firm id.

**Counts beside a suppressed value** (`withhold_counts`): a suppressed row's record count,
PSU count and degrees of freedom are withheld with its value in every published table (the
pages show ``[c]`` for them, `display.table`), so a ``[c]`` cell never reads "2 firms".
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from msme_eval import disclosure
from msme_eval.contract import REGION
from msme_eval.impact import build_outcomes
from msme_eval.report.display import SUPPRESSED, number_kind, suppressed_rows

__all__ = ["Rules", "impact_tables", "programme_counts", "coverage_counts", "coverage_table",
           "outlier_rows", "validation_findings", "withhold_counts"]

EFFECT_COLUMNS = ("att", "estimate", "se", "ci_low", "ci_high", "pvalue", "pretrend_stat",
                  "pretrend_pvalue", "pvalue_adjusted", "pretrend_pvalue_holm",
                  # the population ATT beside the sample ATT (evaluate(weight=...)): the same firms
                  "att_population", "se_population", "ci_low_population", "ci_high_population",
                  "pvalue_population")
JOB_COLUMNS = ("net_jobs_per_firm", "se", "ci_low", "ci_high", "jobs_created", "jobs_ci_low",
               "jobs_ci_high", "net_jobs_per_firm_population", "se_population", "ci_low_population",
               "ci_high_population")
MONEY_COLUMNS = ("support_total", "cost_per_job", "cost_ci_low", "cost_ci_high",
                 "cost_per_job_fixed_horizon")
# the fixed-horizon (event time e) version of the jobs row: its own firm count
HORIZON_COLUMNS = ("net_jobs_per_firm_e", "se_e", "jobs_created_e", "cost_per_job_e",
                   "cost_ci_low_e", "cost_ci_high_e", "support_total_e")
SHARE_COLUMNS = ("share_of_supported_firms", "share_of_support", "share_of_jobs_created")


class Rules:
    """The thresholds: ``min_contributors`` firms; ``(dominance_n, dominance_k)`` dominance."""

    def __init__(self, min_contributors: int = 3, dominance_n: int = 2, dominance_k: float = 0.85):
        self.m, self.n, self.k = int(min_contributors), int(dominance_n), float(dominance_k)

    def dominated(self, amounts: np.ndarray) -> str:
        """``"O"``/``"T"`` when the largest one/``n`` amounts exceed ``k`` of the total, else ``"F"``."""
        a = np.sort(np.abs(amounts[np.isfinite(amounts)]))[::-1]
        total = a.sum()
        if total <= 0:
            return "F"
        if a[0] > self.k * total:
            return "O"
        return "T" if a[: self.n].sum() > self.k * total else "F"


def _blank(table: pd.DataFrame, mask: pd.Series, columns: tuple[str, ...], code: str) -> None:
    cols = [c for c in columns if c in table.columns]
    table.loc[mask, cols] = np.nan
    table.loc[mask & (table["conf_status"] == "F"), "conf_status"] = code


def _effects(table: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Effect rows need ``m`` supported firms and ``m`` comparison firms."""
    out = table.copy()
    out["conf_status"] = "F"
    if not len(out):
        return out
    treated = out.get("n_treated", pd.Series(np.inf, index=out.index)).astype(float)
    if "n_never_treated" in out:
        comparison = out["n_never_treated"].astype(float)
    else:
        comparison = out.get("n_units", treated + rules.m).astype(float) - treated
    _blank(out, (treated < rules.m) | (comparison < rules.m), EFFECT_COLUMNS, "A")
    return out


def _firm_support(panel: pd.DataFrame, unit: str) -> pd.DataFrame:
    """One row per supported firm: programme type, total support, baseline subgroup flags."""
    frame, _ = build_outcomes(panel, unit=unit)
    first = frame.sort_values([unit, "year"]).groupby(unit, sort=False).first()
    support = panel.groupby(unit)["support_amount"].sum(min_count=1) if "support_amount" in panel \
        else pd.Series(np.nan, index=first.index)
    first["support"] = support.reindex(first.index)
    return first[first["first_treated"].notna()]


def _jobs(table: pd.DataFrame, firms: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    out = table.copy()
    out["conf_status"] = "F"
    for i, row in out.iterrows():
        mine = firms[firms["programme_type"] == row["programme_type"]]
        if len(mine) < rules.m:
            _blank(out, out.index == i, JOB_COLUMNS + MONEY_COLUMNS + HORIZON_COLUMNS, "A")
            continue
        code = rules.dominated(mine["support"].to_numpy(dtype=float))
        if code != "F":
            _blank(out, out.index == i, MONEY_COLUMNS + HORIZON_COLUMNS[3:], code)
        if float(row.get("n_supported_e", np.inf)) < rules.m:  # too few firms observed at e
            out.loc[i, [c for c in HORIZON_COLUMNS if c in out.columns]] = np.nan
    return out


def _shares(table: pd.DataFrame, firms: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """A subgroup's shares need ``m`` firms in it and in the rest; its support share also fails
    when its or the rest's support is dominated."""
    out = table.copy()
    out["conf_status"] = "F"
    for i, row in out.iterrows():
        mine = firms[firms["programme_type"] == row["programme_type"]]
        col = row["subgroup"]
        if col not in mine.columns:
            continue
        inside = mine[col].astype("boolean").fillna(False).astype(bool)
        if min(inside.sum(), (~inside).sum()) < rules.m:
            _blank(out, out.index == i, SHARE_COLUMNS, "A")
            continue
        for part in (mine.loc[inside, "support"], mine.loc[~inside, "support"]):
            code = rules.dominated(part.to_numpy(dtype=float))
            if code != "F":
                _blank(out, out.index == i, ("share_of_support",), code)
                break
    return out


def _tests(tests: pd.DataFrame, inclusion: pd.DataFrame) -> pd.DataFrame:
    """A difference between subgroups is suppressed when either subgroup's effect is."""
    out = tests.copy()
    out["conf_status"] = "F"
    if not len(out) or "conf_status" not in inclusion:
        return out
    hidden = inclusion[inclusion["conf_status"] != "F"]
    keys = set(zip(hidden["outcome"], hidden["programme_type"], hidden["subgroup"]))
    mask = pd.Series([k in keys for k in zip(out["outcome"], out["programme_type"], out["subgroup"])],
                     index=out.index)
    _blank(out, mask, ("difference", "se", "z", "pvalue"), "D")
    return out


def impact_tables(ev: Any, panel: pd.DataFrame, *, unit: str = "firm_id",
                  rules: Rules | None = None) -> dict[str, pd.DataFrame]:
    """The publishable versions of an `impact.evaluate` result's tables (module docstring):
    ``headline``, ``robustness``, ``inclusion``, ``inclusion_tests``, ``jobs``,
    ``inclusion_shares``, each with a ``conf_status`` column."""
    rules = rules or Rules()
    firms = _firm_support(panel, unit)
    out = {name: _effects(getattr(ev, name), rules) for name in ("headline", "robustness", "inclusion")}
    out["inclusion_tests"] = _tests(ev.inclusion_tests, out["inclusion"])
    out["jobs"] = _jobs(ev.jobs, firms, rules)
    out["inclusion_shares"] = _shares(ev.inclusion_shares, firms, rules)
    return out


def programme_counts(panel: pd.DataFrame, *, unit: str = "firm_id", rules: Rules | None = None,
                     areas: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Supported firms per programme and area (each member state and ``REGION``), with primary
    and secondary suppression across the member states that add up to the regional count."""
    rules = rules or Rules()
    cols = ["programme", "programme_type"] if "programme_type" in panel else ["programme"]
    if "programme" not in panel or "first_treated" not in panel:
        return pd.DataFrame(columns=[*cols, "area", "firms_supported", "conf_status"])
    sup = panel[panel["first_treated"].notna() & panel["programme"].notna()]
    firms = sup.drop_duplicates([unit, *cols])
    by_country = disclosure.cell_stats(firms, None, [*cols, "country"], contributor=unit, top=rules.n)
    region = disclosure.cell_stats(firms, None, cols, contributor=unit, top=rules.n).assign(country=REGION)
    table = pd.concat([by_country, region], ignore_index=True)
    table["firms_supported"] = table["n_contrib"].astype(float)
    protected = disclosure.protect(table, keys=[*cols, "country"], group_col="country",
                                   margin={"country": REGION}, min_contributors=rules.m,
                                   dominance_n=rules.n, dominance_k=rules.k,
                                   value_cols=["firms_supported"])
    protected["firms_supported"] = protected["firms_supported"].astype("Int64")
    out = protected.rename(columns={"country": "area"})
    return out[[*cols, "area", "firms_supported", "conf_status"]].sort_values([*cols, "area"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# data-quality page
# --------------------------------------------------------------------------------------------
def coverage_counts(panel: pd.DataFrame, *, unit: str = "firm_id", rules: Rules | None = None
                    ) -> pd.DataFrame:
    """Firms observed (distinct ``unit``) per country and year of the *whole* panel, protected:
    columns country, year, firms, conf_status.

    A cell with fewer than ``min_contributors`` firms is suppressed (A). The table is two-way
    with both margins published elsewhere (a country's record count on its page; the
    region's), so `disclosure.protect` runs with the years and the countries as relations
    (implicit totals): no country row or year column keeps a single suppressed cell (D).
    """
    rules = rules or Rules()
    stats = disclosure.cell_stats(panel, None, ["country", "year"], contributor=unit, top=rules.n)
    stats["country"] = stats["country"].astype(str)
    stats["firms"] = stats["n_contrib"].astype(float)
    out = disclosure.protect(stats, keys=["country", "year"], group_col=["year", "country"],
                             margin=[None, None], min_contributors=rules.m, dominance_n=rules.n,
                             dominance_k=rules.k, value_cols=["firms"])
    out["firms"] = out["firms"].astype("Int64")
    return out[["country", "year", "firms", "conf_status"]].sort_values(
        ["country", "year"]).reset_index(drop=True)


def coverage_headline(summary: Mapping[str, Any], rules: Rules | None = None) -> dict[str, Any]:
    """The data-quality page's headline counts (`summaries.coverage_summary`) as published: the
    record and firm counts are withheld (None) when the area holds fewer than ``min_contributors``
    firms, since a count of firms below the threshold is itself a small cell."""
    rules = rules or Rules()
    out = dict(summary)
    if out["n_firms"] < rules.m:
        out.update(n_rows=None, n_firms=None)
    return out


def coverage_table(counts: pd.DataFrame, area: str | None = None) -> pd.DataFrame:
    """`coverage_counts` as the page shows it: one row per country (``area``: that country
    only; None or ``REGION``: all), one column per year, suppressed cells ``[c]``, years
    without records blank."""
    if area is not None and area != REGION:
        counts = counts[counts["country"] == area]
    text = counts["firms"].astype(object).where(counts["conf_status"] == "F", SUPPRESSED)
    wide = counts.assign(firms=text).pivot(index="country", columns="year", values="firms")
    wide.columns = [str(c) for c in wide.columns]
    return wide.astype(object).where(wide.notna(), None).reset_index()


def outlier_rows(table: pd.DataFrame, panel: pd.DataFrame, *, unit: str = "firm_id",
                 rules: Rules | None = None) -> pd.DataFrame:
    """Rows of the zeros-and-extremes table (one per variable, ``column``) with ``conf_status``:
    a row whose variable has a value for fewer than ``min_contributors`` firms of ``panel`` (the
    area) has its numbers suppressed (A). See the module docstring for why the rest may show."""
    rules = rules or Rules()
    out = table.copy()
    out["conf_status"] = "F"
    numbers = tuple(c for c in out.columns if c not in ("column", "conf_status"))
    for i, col in out["column"].items():
        firms = panel.loc[panel[col].notna(), unit].nunique() if col in panel else 0
        if firms < rules.m:
            _blank(out, out.index == i, numbers, "A")
    return out


_DETAIL = re.compile(r"[;,]?\s*\d[\d,]*\s+rows?,\s*first:.*$", re.DOTALL)


def validation_findings(report: pd.DataFrame | None) -> pd.DataFrame:
    """The validation report as the page publishes it: severity, column, rule, n_rows (records
    breaking the rule: a count of problems), finding, fix. The finding is the message without
    its file prefix and without any detail that names rows or values: the schema's "N rows,
    first: row ... (value)" and the cross-table checks' value list "(KHM 2020 stratum S3; ...)"
    (the issue's ``values``, cut where the first one starts)."""
    cols = ["severity", "column", "rule", "n_rows", "finding", "fix"]
    if report is None or len(report) == 0:
        return pd.DataFrame(columns=cols)
    out = report.copy()
    files = out["file"].astype(str) if "file" in out else pd.Series("", index=out.index)
    values = out["values"] if "values" in out else pd.Series([()] * len(out), index=out.index)
    out["finding"] = [_finding(str(m), f, v) for m, f, v in zip(out["message"], files, values)]
    return out[[c for c in cols if c in out.columns]].reset_index(drop=True)


def _finding(message: str, file: str, values: Any) -> str:
    text = _DETAIL.sub("", message.removeprefix(f"{file}: ").removeprefix(f"{file}, "))
    shown = [str(v) for v in (values if isinstance(values, (list, tuple, np.ndarray)) else ())]
    if shown:
        cut = text.find(f" ({shown[0]}")
        text = text[:cut] if cut >= 0 else text
    return text.strip()


def withhold_counts(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the count columns (``display.number_kind`` "count": ``n``, ``n_psu``,
    ``df``, ``n_*``) blanked on rows whose ``conf_status`` is not F; unchanged without one."""
    hidden = suppressed_rows(table)
    counts = [c for c in table.columns if number_kind(c) == "count"]
    if not hidden.any() or not counts:
        return table
    out = table.copy()
    for c in counts:
        out[c] = out[c].astype("Int64" if out[c].dtype.kind in "iu" else out[c].dtype)
        out.loc[hidden, c] = np.nan
    return out
