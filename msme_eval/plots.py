"""Figures and tables for notebooks and reports (matplotlib/seaborn; nothing is shown).

* :func:`kpi_dashboard` -- 10 small multiples: value and CI by year, target, trend projection,
  status colour *and* status word/marker (progress table), "not available" / suppressed points.
* :func:`country_comparison` -- one indicator across countries for a year, with CIs and the
  ASEAN aggregate as a reference line.
* :func:`impact_forest` -- headline effects with CIs, one panel per outcome (outcomes are on
  different scales: log points, employees, probability), programme types on one axis.
* :func:`event_study_grid` -- every event study of an evaluation in one faceted figure
  (rows: outcomes, each with its own y scale; columns: programme types).
* :func:`styled_table` -- a pandas ``Styler`` a reviewer reads without help: readable column
  labels, formatted numbers, status colours, confidential cells shown as ``[c]`` and missing
  ones as ``n/a`` with a legend in the caption.
* :data:`LABELS` / :func:`label` / :func:`value_label` -- the one label map (column names,
  outcomes, programme types, breakdowns) shared by tables, figures and text.

Colours are the Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008, "Color Universal
Design"); status is also shown by marker shape and by its word. Every figure carries a one-line
description in ``fig.alt_text`` (used as the image's alt text in the HTML report).
Every function returns the object (``Figure`` / ``Styler``); none calls ``plt.show()``.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from msme_eval.indicators import registry

__all__ = ["kpi_dashboard", "country_comparison", "impact_forest", "event_study_grid",
           "styled_table", "STATUS_COLOURS", "STATUS_MARKERS", "STATUS_SYMBOLS", "OKABE_ITO",
           "LABELS", "VALUE_LABELS", "label", "value_label"]

# Okabe-Ito palette (colour-blind safe); black text on every status colour has contrast >= 4.5
OKABE_ITO: dict[str, str] = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
STATUS_COLOURS: dict[str, str] = {
    "achieved": OKABE_ITO["green"],
    "on track": OKABE_ITO["sky_blue"],
    "acceleration needed": OKABE_ITO["yellow"],
    "limited progress": OKABE_ITO["orange"],
    "regression": OKABE_ITO["vermillion"],
    "not achieved": OKABE_ITO["purple"],
    "no assessment": "#d9d9d9",
}
# the same status by shape (matplotlib marker) and by symbol (text), never by colour alone
STATUS_MARKERS: dict[str, str] = {
    "achieved": "*", "on track": "^", "acceleration needed": "D", "limited progress": "v",
    "regression": "X", "not achieved": "P", "no assessment": "o",
}
STATUS_SYMBOLS: dict[str, str] = {
    "achieved": "\u2605", "on track": "\u25b2", "acceleration needed": "\u25c6",
    "limited progress": "\u25bc", "regression": "\u2716", "not achieved": "\u25a0",
    "uncertain": "?", "no assessment": "\u25cb",
}
KPI_IDS: tuple[str, ...] = tuple(f"K{i:02d}" for i in range(1, 11))
SUPPRESSED_MARK = "[c]"
MISSING_MARK = "n/a"
LABELS: dict[str, str] = {
    # indicator table (tidy, SDMX-like)
    "indicator": "Indicator", "id": "Indicator", "name": "Indicator name", "ref_area": "Area",
    "country": "Member state", "area": "Area", "time_period": "Year", "year": "Year",
    "breakdown": "Breakdown", "group": "Group", "value": "Value",
    "se": "Std. error", "ci_low": "95% CI low", "ci_high": "95% CI high", "df": "Degrees of freedom",
    "n": "Firms (n)", "obs_status": "Obs. status", "conf_status": "Confidentiality",
    "confidentiality": "Confidentiality",
    "unit": "Unit", "comment": "Note", "direction": "Better if", "note": "Note",
    # progress to target
    "baseline_year": "Baseline year", "baseline_value": "Baseline", "latest_year": "Latest year",
    "latest_value": "Latest", "target_year": "Target year", "target_value": "Target",
    "target": "Target",
    "n_points": "Points", "cr_actual": "Growth p.a. (actual)",
    "cr_required": "Growth p.a. (required)", "ratio": "Actual / required", "status": "Status",
    "csi": "Current status index", "projected_value": "Projected at target year",
    "api": "Anticipated progress index", "gap": "Anticipated gap", "anticipated": "Outlook",
    "reason": "Notes on the assessment", "status_probability": "Probability of this status",
    "status_stable": "Status stable under sampling error", "status_alternative": "Next most likely status",
    # data quality
    "column": "Variable", "all": "All", "values": "Values", "positive": "Positive values",
    "zeros": "Zeros", "zeros_pct": "Zeros (%)", "extreme": "Extreme (positive values)",
    "extreme_pct": "Extreme (% of positive)", "negative": "Negative", "severity": "Severity",
    "rule": "Rule", "n_rows": "Rows", "finding": "Finding", "fix": "How to fix",
    "programme": "Programme", "programme_type": "Programme type",
    "firms_supported": "Firms supported",
    "published": "Published", "published_year": "Published year", "source_type": "Source",
    "computed": "Computed", "computed_year": "Computed year", "difference": "Difference",
    # impact
    "dimension": "Dimension", "outcome": "Outcome", "effect": "Effect", "att": "Effect",
    "estimate": "Effect", "pvalue": "p-value", "pvalue_holm": "p-value (Holm)",
    "pvalue_adjusted": "p-value (adjusted)", "n_treated": "Supported firms",
    "n_units": "Firms", "n_never_treated": "Comparison firms", "n_cohorts": "Cohorts",
    "pretrend_pvalue": "Pre-trend test p", "pretrend_pvalue_holm": "Pre-trend p (Holm)",
    "pretrend_stat": "Pre-trend statistic", "pretrend_df": "Pre-trend df", "stat": "Test statistic",
    "spec": "Specification", "control": "Comparison group",
    "effect_in_group": "Effect in the group (95% CI)",
    "effect_in_others": "Effect in the other supported firms (95% CI)",
    "difference_pvalue": "Difference: p-value", "method": "Method",
    "covariates": "Covariates", "subgroup": "Group", "level": "Level", "label": "Group",
    "z": "z", "test": "Test",
    "net_jobs_per_firm": "Net jobs per supported firm", "jobs_created": "Jobs created",
    "jobs_ci_low": "Jobs created, 95% CI low", "jobs_ci_high": "Jobs created, 95% CI high",
    "support_total": "Support spent", "cost_per_job": "Cost per job",
    "cost_ci_low": "Cost per job, 95% CI low", "cost_ci_high": "Cost per job, 95% CI high",
    "cost_per_job_fixed_horizon": "Cost per job (fixed horizon)", "currency": "Currency",
    "n_supported": "Supported firms",
    "share_of_supported_firms": "Share of supported firms", "share_of_support": "Share of support",
    "share_of_jobs_created": "Share of jobs created",
    "share_in_comparison_firms": "Share among comparison firms",
    "event_time": "Years since support",
    # panel columns (missing-value table rows, outcomes)
    "employees": "Employees", "turnover": "Turnover", "value_added": "Value added",
    "assets": "Assets", "exports": "Exports", "loans_outstanding": "Loans outstanding",
    "size_class": "Firm size", "owner_female": "Owner sex", "urban": "Urban",
    "registered": "Registered", "sells_online": "Sells online",
    "imports_or_gvc": "Imports or in a value chain", "birth_year": "Birth year",
    "weight": "Survey weight", "strata": "Stratum", "psu": "Primary sampling unit",
    "region": "Region", "sector": "Sector", "first_treated": "First year supported",
    "support_amount": "Support amount",
    # who is counted, what is estimated, horizons (impact tables)
    "firms_counted": "Firms counted", "estimand": "Estimand", "cluster": "Standard errors clustered by",
    "horizon": "Horizon of cost per job", "horizon_e": "Fixed horizon (years after support)",
    "net_jobs_per_firm_e": "Net jobs per firm at the fixed horizon",
    "n_supported_e": "Supported firms observed at the fixed horizon",
    "cost_per_job_e": "Cost per job at the fixed horizon",
    "cost_ci_low_e": "Cost per job at the fixed horizon, 95% CI low",
    "cost_ci_high_e": "Cost per job at the fixed horizon, 95% CI high",
    "jobs_created_e": "Jobs created at the fixed horizon", "support_total_e": "Support spent on those cohorts",
    "cost_ci_note": "About the cost interval", "cost_ci_note_e": "About the fixed-horizon cost interval",
    "att_population": "Effect on the population", "ci_low_population": "Population 95% CI low",
    "ci_high_population": "Population 95% CI high", "pvalue_population": "Population p-value",
    "recipients_only": "Register looks like recipients only", "register_check": "Register check",
}
# ISIC Rev. 4 sections (short names), for the sector dummies the impact text names
ISIC_SECTIONS: dict[str, str] = {
    "A": "agriculture and fishing", "B": "mining", "C": "manufacturing", "D": "energy supply",
    "E": "water and waste", "F": "construction", "G": "wholesale/retail trade", "H": "transport and storage",
    "I": "accommodation and food", "J": "information and communication", "K": "finance and insurance",
    "L": "real estate", "M": "professional services", "N": "administrative services",
    "O": "public administration", "P": "education", "Q": "health and social work", "R": "arts and recreation",
    "S": "other services", "T": "households as employers", "U": "extraterritorial bodies",
}
# values shown in cells and figure labels (outcomes, programme types, breakdown groups)
VALUE_LABELS: dict[str, str] = {
    "finance": "Finance", "market_access": "Market access",
    "capacity_building": "Capacity building", "all": "All programmes",
    "log_turnover": "Turnover (log points)", "log_value_added": "Value added (log points)",
    "log_productivity": "Labour productivity (log points)",
    "employees": "Employees of surviving firms", "jobs": "Net jobs (exits count as zero)",
    "survival": "Survival (probability)",
    "growth": "Growth", "survival_dim": "Survival",
    "main": "Main (never-supported comparison)", "not_yet_treated": "Not-yet-supported comparison",
    "never_treated": "Never-supported comparison", "twfe": "Two-way fixed effects",
    "covariates": "With covariates",
    "owner_female": "Women-owned", "rural": "Rural", "micro": "Micro (at baseline)",
    "young": "Young (5 years or less)", "size_class": "Firm size",
    "True": "Yes", "False": "No", "total": "Total",
    # covariates and exit drivers named in the impact text
    "size_micro": "Micro size class", "size_small": "Small size class", "size_medium": "Medium size class",
    "registered": "Registered", "age_at_support_le2": "Aged 2 years or less at support",
    "age_at_support_le5": "Aged 5 years or less at support", "baseline_log_employees": "Baseline log employees",
    "baseline_age": "Baseline age", "psu": "Primary sampling unit (PSU)",
    **{f"sector_{k}": f"Sector {k} ({v})" for k, v in ISIC_SECTIONS.items()},
}
# outcome -> scale word for axis labels (effects on different scales never share an axis)
OUTCOME_SCALES: dict[str, str] = {
    "log_turnover": "log points", "log_value_added": "log points",
    "log_productivity": "log points", "employees": "employees per firm",
    "jobs": "jobs per firm", "survival": "probability",
}


def label(name: Any) -> str:
    """Reader's label of a column name: the map above, else the name with '_' as spaces and a
    capital first letter (never raw snake_case)."""
    text = str(name)
    if text in LABELS:
        return LABELS[text]
    text = text.replace("_", " ")
    return text[:1].upper() + text[1:]


def value_label(value: Any) -> str:
    """Reader's label of a categorical value (programme type, outcome, subgroup)."""
    text = str(value)
    if text in VALUE_LABELS:
        return VALUE_LABELS[text]
    if "_" in text and " " not in text:
        text = text.replace("_", " ")
        return text[:1].upper() + text[1:]
    return text
_PCT_COLS = ("cr_actual", "cr_required")
_INT_COLS = ("n", "n_points")
_YEAR_COLS = ("time_period", "baseline_year", "latest_year", "target_year")


def _names() -> dict[str, str]:
    reg = registry()
    return dict(zip(reg["id"], reg["name"]))


def _series(indicators: pd.DataFrame, ind: str, area: str) -> pd.DataFrame:
    s = indicators[(indicators["indicator"] == ind) & (indicators["ref_area"] == area)]
    if "breakdown" in s.columns:
        s = s[(s["breakdown"] == "total") & (s["group"] == "total")]
    return s.sort_values("time_period")


def kpi_dashboard(indicators: pd.DataFrame, progress: pd.DataFrame | None = None,
                  country: str = "ASEAN", *, ids: Sequence[str] = KPI_IDS,
                  ncols: int = 5) -> Figure:
    """Small multiples, one per indicator: value with 95% CI by year for ``country``.

    With ``progress`` (:func:`msme_eval.progress.assess` output): the target (dashed line and
    star at the target year), baseline, the time-weighted trend projection to the target year
    (dotted) and the panel tinted with the status colour. Years without a published value are
    marked on the x axis ("x": suppressed or not available).
    """
    names = _names()
    ids = list(ids)
    nrows = int(np.ceil(len(ids) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows + 0.8),
                             squeeze=False)
    prog = None
    if progress is not None:
        prog = progress[progress["ref_area"] == country].set_index("indicator")
    for ax, ind in zip(axes.flat, ids):
        s = _series(indicators, ind, country)
        title = f"{ind} {names.get(ind, '')}".strip()
        ax.set_title("\n".join(textwrap.wrap(title, 34)), fontsize=8.5)
        unit = s["unit"].iloc[0] if len(s) and "unit" in s else ""
        ax.set_ylabel(unit, fontsize=8)
        ok = s["value"].notna()
        pub = s[ok]
        status = "no assessment"
        if prog is not None and ind in prog.index:
            p = prog.loc[ind]
            if isinstance(p.get("status"), str) and p["status"] in STATUS_COLOURS:
                status = p["status"]
            if pd.notna(p.get("target_value")) and pd.notna(p.get("target_year")):
                ax.axhline(p["target_value"], color="0.3", ls="--", lw=1)
                ax.plot([p["target_year"]], [p["target_value"]], marker="*", color="0.2", ms=9)
                if pd.notna(p.get("baseline_value")) and pd.notna(p.get("projected_value")):
                    ax.plot([p["baseline_year"], p["target_year"]],
                            [p["baseline_value"], p["projected_value"]], ls=":", color="0.4",
                            lw=1.2)
        _mark_status(ax, status)
        if len(pub):
            x = pub["time_period"].to_numpy(dtype=float)
            ax.plot(x, pub["value"], marker="o", ms=3, color=OKABE_ITO["blue"], lw=1.4)
            if {"ci_low", "ci_high"} <= set(pub.columns):
                ax.fill_between(x, pub["ci_low"], pub["ci_high"], color=OKABE_ITO["blue"], alpha=0.2,
                                lw=0)
        gaps = s[~ok]
        if len(gaps):
            ax.plot(gaps["time_period"], np.full(len(gaps), 0.0), marker="x", ls="none",
                    color="0.5", transform=ax.get_xaxis_transform(), clip_on=False)
        if not len(pub):
            ax.text(0.5, 0.5, "not available", ha="center", va="center", color="0.4",
                    transform=ax.transAxes)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(ids):]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker=STATUS_MARKERS[k], ls="none", markersize=8,
                      markerfacecolor=c, markeredgecolor="0.2", label=k)
               for k, c in STATUS_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7.5,
               frameon=False, title="Progress status (marker and word in each panel); "
               "x on the axis = no published value", title_fontsize=7.5)
    fig.suptitle(f"Key MSME indicators: {country}", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.alt_text = (f"Ten small charts, one per key indicator for {country}: value by year with "
                    "its 95% confidence band, target and projected trend where a target exists, "
                    "and the progress status written in each chart.")
    return fig


def _mark_status(ax: Any, status: str) -> None:
    """Status by colour, marker shape *and* word (top left of the panel)."""
    colour = STATUS_COLOURS[status]
    ax.set_facecolor(colour + "30")
    for side in ax.spines.values():
        side.set_edgecolor(colour)
        side.set_linewidth(2)
    ax.plot([0.05], [0.9], marker=STATUS_MARKERS[status], ms=8, transform=ax.transAxes,
            markerfacecolor=colour, markeredgecolor="0.2", ls="none", clip_on=False)
    ax.text(0.1, 0.9, status, transform=ax.transAxes, va="center", fontsize=7, color="0.1")


def country_comparison(indicators: pd.DataFrame, indicator_id: str, year: int, *,
                       breakdown: str = "total", group: str = "total") -> Figure:
    """Horizontal bars of one indicator by country for one year, 95% CI whiskers, ASEAN line.

    Countries without a published value are listed with "suppressed" or "not available".
    """
    names = _names()
    s = indicators[(indicators["indicator"] == indicator_id)
                   & (indicators["time_period"] == year)]
    if "breakdown" in s.columns:
        s = s[(s["breakdown"] == breakdown) & (s["group"] == group)]
    asean = s[s["ref_area"] == "ASEAN"]
    s = s[s["ref_area"] != "ASEAN"].sort_values("value", na_position="first")
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * max(len(s), 3) + 1.4))
    y = np.arange(len(s))
    vals = s["value"].to_numpy(dtype=float)
    ax.barh(y, np.nan_to_num(vals), color=OKABE_ITO["blue"], alpha=0.85)
    if {"ci_low", "ci_high"} <= set(s.columns):
        lo = vals - s["ci_low"].to_numpy(dtype=float)
        hi = s["ci_high"].to_numpy(dtype=float) - vals
        ax.errorbar(vals, y, xerr=np.vstack([lo, hi]), fmt="none", ecolor="0.2", capsize=2)
    for yi, (_, r) in zip(y, s.iterrows()):
        if np.isnan(r["value"]):
            conf = r.get("conf_status")
            txt = ("suppressed" if isinstance(conf, str) and conf not in ("F", "")
                   and r.get("obs_status") != "M" else "not available")
            ax.text(0, yi, f" {txt}", va="center", fontsize=8, color="0.35")
    ax.set_yticks(y, s["ref_area"].tolist())
    if len(asean) and pd.notna(asean["value"].iloc[0]):
        ax.axvline(asean["value"].iloc[0], color=OKABE_ITO["vermillion"], ls="--", lw=1.2,
                   label=f"ASEAN {asean['value'].iloc[0]:.3g}")
        ax.legend(fontsize=8, loc="lower right")
    unit = s["unit"].iloc[0] if len(s) and "unit" in s else ""
    ax.set_xlabel(f"{unit} (bars: estimate; whiskers: 95% CI)")
    ax.set_title(f"{indicator_id} {names.get(indicator_id, '')}, {year}", fontsize=10)
    fig.tight_layout()
    fig.alt_text = (f"Bar chart of {indicator_id} {names.get(indicator_id, '')} by member state "
                    f"in {year} with 95% confidence intervals and the ASEAN value as a line.")
    return fig


def _fmt_num(v: object, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{float(v):,.{digits}f}"


def styled_table(df: pd.DataFrame, *, digits: int = 1,
                 caption: str | None = None) -> "pd.io.formats.style.Styler":
    """A readable Styler for an indicators or progress table.

    Numbers formatted (``digits`` decimals; growth rates in %; counts with separators);
    values of confidential cells (``conf_status`` not F) shown as ``[c]`` and missing ones as
    ``n/a``; ``status`` cells coloured; column labels in words; a legend in the caption.
    """
    show = df.copy()
    suppressed = np.zeros(len(show), dtype=bool)
    missing = np.zeros(len(show), dtype=bool)
    if "value" in show.columns:
        isnan = show["value"].isna().to_numpy()
        if "conf_status" in show.columns:
            cs = show["conf_status"]
            suppressed = isnan & cs.notna().to_numpy() & (cs != "F").fillna(False).to_numpy()
        missing = isnan & ~suppressed
    for c in show.columns:
        col = show[c]
        if c in _YEAR_COLS:
            show[c] = [str(int(v)) if pd.notna(v) else "" for v in col]
        elif c in _INT_COLS:
            show[c] = [_fmt_num(int(v), 0) if pd.notna(v) else "" for v in col]
        elif c in _PCT_COLS:
            show[c] = [f"{100 * v:.2f}%" if pd.notna(v) else "" for v in col]
        elif pd.api.types.is_float_dtype(col):
            d = 3 if c in ("ratio", "csi", "api", "gap") else digits
            show[c] = [_fmt_num(v, d) for v in col]
        else:
            show[c] = [("" if pd.isna(v) else str(v)) for v in col]
    if "value" in show.columns:
        show.loc[suppressed, "value"] = SUPPRESSED_MARK
        show.loc[missing, "value"] = MISSING_MARK
    show = show.rename(columns={c: LABELS.get(c, c) for c in show.columns})
    status_label = LABELS["status"]

    def colour(v: object) -> str:
        c = STATUS_COLOURS.get(str(v))
        return f"background-color: {c}" if c else ""

    def mark(v: object) -> str:
        return "color: #777; font-style: italic" if v in (SUPPRESSED_MARK, MISSING_MARK) else ""

    sty = show.style.hide(axis="index")
    if status_label in show.columns:
        sty = sty.map(colour, subset=[status_label])
    if LABELS["value"] in show.columns:
        sty = sty.map(mark, subset=[LABELS["value"]])
    legend = (f"{SUPPRESSED_MARK} confidential: suppressed by disclosure control (A fewer than "
              "3 firms, O/T dominance of 1/2 firms, D secondary suppression); "
              f"{MISSING_MARK} not available (see Note). Status colours: "
              + ", ".join(STATUS_COLOURS))
    sty = sty.set_caption(f"{caption + '. ' if caption else ''}{legend}")
    sty = sty.set_table_styles([
        {"selector": "caption", "props": "caption-side: bottom; font-size: 0.85em; "
                                         "color: #444; text-align: left"},
        {"selector": "th", "props": "text-align: left; background-color: #f2f2f2"},
    ])
    return sty


# --------------------------------------------------------------------------------------------
# Impact figures (seaborn facets: one panel per outcome, each with its own scale)
# --------------------------------------------------------------------------------------------
def _effect_column(df: pd.DataFrame) -> str:
    """The effect column of an impact table (``estimate``, or ``att`` in older results)."""
    for col in ("estimate", "att", "effect"):
        if col in df.columns:
            return col
    raise KeyError(f"no effect column (estimate/att) among {list(df.columns)}")


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def impact_forest(headline: pd.DataFrame, *, outcomes: Sequence[str] | None = None,
                  col_wrap: int = 3, title: str = "Average effect on supported firms") -> Figure:
    """Headline effects with 95% CIs: one panel per outcome (its own x scale, named in the
    axis label), one row per programme type; suppressed or missing effects are written out.

    ``headline``: one row per (outcome, programme_type) with the effect (``estimate`` or
    ``att``), ``ci_low`` and ``ci_high`` (`impact.evaluate(...).headline`).
    """
    import seaborn as sns

    est = _effect_column(headline)
    order = [o for o in (outcomes or dict.fromkeys(headline["outcome"]))
             if o in set(headline["outcome"])]
    data = headline[headline["outcome"].isin(order)].copy()
    types = list(dict.fromkeys(data["programme_type"]))
    data["y"] = data["programme_type"].map({t: -i for i, t in enumerate(types)}).astype(float)

    def draw(*_: Any, data: pd.DataFrame, **__: Any) -> None:
        frame = data
        ax = plt.gca()
        ok = frame[est].notna()
        f = frame[ok]
        ax.errorbar(f[est], f["y"], xerr=[f[est] - f["ci_low"], f["ci_high"] - f[est]],
                    fmt="o", color=OKABE_ITO["blue"], ecolor=OKABE_ITO["blue"], capsize=3, ms=5)
        for y in frame.loc[~ok, "y"]:
            ax.text(0.02, y, "suppressed / n.a.", transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8, color="0.3")
        ax.axvline(0, color="0.35", lw=0.8, ls="--")

    with sns.axes_style("whitegrid"):
        g = sns.FacetGrid(data, col="outcome", col_order=order, col_wrap=min(col_wrap, len(order)),
                          sharex=False, sharey=True, height=1.35 + 0.32 * len(types), aspect=1.9,
                          despine=False)
        g.map_dataframe(draw)
    for outcome, ax in g.axes_dict.items():
        ax.set_title(value_label(outcome), fontsize=9)
        ax.set_xlabel(f"effect ({OUTCOME_SCALES.get(outcome, 'units of the outcome')})", fontsize=8)
        ax.set_yticks([-i for i in range(len(types))], [value_label(t) for t in types])
        ax.set_ylim(-len(types) + 0.5, 0.5)
        ax.tick_params(labelsize=8)
    g.set_ylabels("")
    g.figure.suptitle(title, fontsize=11)
    g.figure.tight_layout()
    fig = g.figure
    fig.alt_text = (f"{title}: dots with 95% confidence intervals for "
                    f"{', '.join(value_label(t) for t in types)}, one panel per outcome "
                    f"({', '.join(value_label(o) for o in order)}), each on its own scale; "
                    "the dashed line is no effect.")
    plt.close(fig)
    return fig


def event_study_grid(event_studies: Mapping[tuple[str, str], pd.DataFrame], *,
                     outcomes: Sequence[str] | None = None,
                     programme_types: Sequence[str] | None = None,
                     pretrends: pd.DataFrame | None = None,
                     title: str = "Effects by years since support began") -> Figure | None:
    """Every event study in one figure: rows are outcomes (each row its own y scale), columns
    programme types; before-support estimates (which should be near zero) and after-support
    estimates in different colours *and* markers, with 95% CIs; the joint pre-trend test p-value
    in each panel when ``pretrends`` (outcome, programme_type, pvalue) is given."""
    import seaborn as sns

    parts = [df.assign(outcome=o, programme_type=t) for (o, t), df in event_studies.items()
             if (outcomes is None or o in outcomes)
             and (programme_types is None or t in programme_types) and len(df)]
    if not parts:
        return None
    data = pd.concat(parts, ignore_index=True)
    rows = [o for o in (outcomes or dict.fromkeys(data["outcome"])) if o in set(data["outcome"])]
    cols = [t for t in (programme_types or dict.fromkeys(data["programme_type"]))
            if t in set(data["programme_type"])]
    est = _effect_column(data)
    pvals = {} if pretrends is None else {
        (r.outcome, r.programme_type): r.pvalue for r in pretrends.itertuples()
        if pd.notna(getattr(r, "pvalue", np.nan))}

    def draw(*_: Any, data: pd.DataFrame, **__: Any) -> None:
        frame = data
        ax = plt.gca()
        post = frame["event_time"] >= 0
        for part, colour, marker in ((frame[~post], OKABE_ITO["blue"], "s"),
                                     (frame[post], OKABE_ITO["vermillion"], "o")):
            ax.errorbar(part["event_time"], part[est],
                        yerr=[part[est] - part["ci_low"], part["ci_high"] - part[est]],
                        fmt=marker, ms=3.5, color=colour, ecolor=colour, capsize=1.5, lw=0.9)
        ax.axhline(0, color="0.35", lw=0.8)
        ax.axvline(-0.5, color="0.55", lw=0.8, ls=":")
        p = pvals.get((frame["outcome"].iloc[0], frame["programme_type"].iloc[0]))
        if p is not None:
            ax.text(0.03, 0.93, f"pre-trend {_p_text(p)}", transform=ax.transAxes, fontsize=7,
                    va="top", color="0.15")

    with sns.axes_style("whitegrid"):
        g = sns.FacetGrid(data, row="outcome", col="programme_type", row_order=rows, col_order=cols,
                          sharex=True, sharey="row", height=1.65, aspect=1.9, despine=False)
        g.map_dataframe(draw)
    for (o, t), ax in g.axes_dict.items():
        ax.set_title(f"{value_label(t)}: {value_label(o)}" if len(cols) > 1 else value_label(o),
                     fontsize=8)
        ax.set_ylabel(OUTCOME_SCALES.get(o, "effect"), fontsize=7.5)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    g.set_xlabels("years since support began", fontsize=7.5)
    handles = [Line2D([], [], marker="s", color=OKABE_ITO["blue"], ls="none", label="before support"),
               Line2D([], [], marker="o", color=OKABE_ITO["vermillion"], ls="none",
                      label="after support (95% CI)")]
    g.figure.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncol=2)
    g.figure.suptitle(title, fontsize=11, x=0.02, ha="left")
    g.figure.tight_layout(rect=(0, 0, 1, 0.97))
    fig = g.figure
    fig.alt_text = (f"{title}: a grid of event-study charts, one row per outcome "
                    f"({', '.join(value_label(o) for o in rows)}) and one column per programme type "
                    f"({', '.join(value_label(t) for t in cols)}), estimates with 95% confidence "
                    "intervals before and after support began.")
    plt.close(fig)
    return fig
