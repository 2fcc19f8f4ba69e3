"""Figures and tables for notebooks and reports (matplotlib/seaborn; nothing is shown).

* :func:`kpi_dashboard` -- 10 small multiples: value and CI by year, target, trend projection,
  status colour (progress table), "not available" / suppressed points marked.
* :func:`country_comparison` -- one indicator across countries for a year, with CIs and the
  ASEAN aggregate as a reference line.
* :func:`styled_table` -- a pandas ``Styler`` a reviewer reads without help: readable column
  labels, formatted numbers, status colours, confidential cells shown as ``[c]`` and missing
  ones as ``n/a`` with a legend in the caption.

Every function returns the object (``Figure`` / ``Styler``); none calls ``plt.show()``.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["kpi_dashboard", "country_comparison", "styled_table", "STATUS_COLOURS", "LABELS"]

STATUS_COLOURS: dict[str, str] = {
    "achieved": "#1a9850",
    "on track": "#91cf60",
    "acceleration needed": "#fee08b",
    "limited progress": "#fc8d59",
    "regression": "#d73027",
    "no assessment": "#d9d9d9",
}
KPI_IDS: tuple[str, ...] = tuple(f"K{i:02d}" for i in range(1, 11))
SUPPRESSED_MARK = "[c]"
MISSING_MARK = "n/a"
LABELS: dict[str, str] = {
    "indicator": "Indicator", "name": "Indicator name", "ref_area": "Area",
    "time_period": "Year", "breakdown": "Breakdown", "group": "Group", "value": "Value",
    "se": "Std. error", "ci_low": "95% CI low", "ci_high": "95% CI high",
    "n": "Firms (n)", "obs_status": "Obs. status", "conf_status": "Confidentiality",
    "unit": "Unit", "comment": "Note", "direction": "Better if",
    "baseline_year": "Baseline year", "baseline_value": "Baseline", "latest_year": "Latest year",
    "latest_value": "Latest", "target_year": "Target year", "target_value": "Target",
    "n_points": "Points", "cr_actual": "Growth p.a. (actual)",
    "cr_required": "Growth p.a. (required)", "ratio": "Actual / required", "status": "Status",
    "csi": "Current status index", "projected_value": "Projected at target year",
    "api": "Anticipated progress index", "gap": "Anticipated gap", "anticipated": "Outlook",
    "reason": "Why no status",
}
_PCT_COLS = ("cr_actual", "cr_required")
_INT_COLS = ("n", "n_points")
_YEAR_COLS = ("time_period", "baseline_year", "latest_year", "target_year")


def _names() -> dict[str, str]:
    try:
        from .indicators import registry
        reg = registry()
        return dict(zip(reg["id"], reg["name"]))
    except Exception:  # pragma: no cover - a broken registry must not break a figure
        return {}


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
        ax.set_facecolor(STATUS_COLOURS[status] + "40")
        for side in ax.spines.values():
            side.set_edgecolor(STATUS_COLOURS[status])
            side.set_linewidth(2)
        if len(pub):
            x = pub["time_period"].to_numpy(dtype=float)
            ax.plot(x, pub["value"], marker="o", ms=3, color="#2c5f8a", lw=1.4)
            if {"ci_low", "ci_high"} <= set(pub.columns):
                ax.fill_between(x, pub["ci_low"], pub["ci_high"], color="#2c5f8a", alpha=0.2,
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
    handles = [Patch(facecolor=c, edgecolor=c, label=k) for k, c in STATUS_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7.5,
               frameon=False, title="status (ratio of actual to required growth); "
               "x = no published value", title_fontsize=7.5)
    fig.suptitle(f"Key MSME indicators - {country}", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return fig


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
    ax.barh(y, np.nan_to_num(vals), color="#2c5f8a", alpha=0.85)
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
        ax.axvline(asean["value"].iloc[0], color="#d73027", ls="--", lw=1.2,
                   label=f"ASEAN {asean['value'].iloc[0]:.3g}")
        ax.legend(fontsize=8, loc="lower right")
    unit = s["unit"].iloc[0] if len(s) and "unit" in s else ""
    ax.set_xlabel(f"{unit} (bars: estimate; whiskers: 95% CI)")
    ax.set_title(f"{indicator_id} {names.get(indicator_id, '')}, {year}", fontsize=10)
    fig.tight_layout()
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
