"""Aggregate tables the report notebooks show (never a firm-level record).

Each function takes the validated panel or the tidy indicator table and returns a small
DataFrame ready for `display.table`; cells resting on fewer than ``min_contributors`` firms are
suppressed (None) so counts cannot identify a firm.
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.contract import REGION, area_name
from msme_eval.impact.evaluate import OUTCOMES, who_counted
from msme_eval.plots import label, value_label
from msme_eval.report.context import is_total
from msme_eval.report.display import bullet_list, details, figure, fmt, suppressed_rows  # noqa: F401 (S.details)
from msme_eval.schema import is_missing

KPI_IDS: tuple[str, ...] = tuple(f"K{i:02d}" for i in range(1, 11))
# published-statistics names (msme_eval/data/asean_msme_statistics.csv) -> indicator id
PUBLISHED_MAP: dict[str, str] = {
    "msme_share_enterprises": "K01", "msme_share_employment": "K02", "msme_share_gdp": "K03",
    "msme_share_business_loans": "K06", "msme_share_exports": "K07",
}
GROUP_ORDER = ("micro", "small", "medium", "large", "female", "male", "True", "False")
# group labels of yes/no breakdowns (column headers of `breakdown`)
BREAKDOWN_GROUPS: dict[str, dict[str, str]] = {
    "owner_female": {"True": "Women-owned", "False": "Men-owned"},
    "urban": {"True": "Urban", "False": "Rural"},
}
FEW_DF = 8  # below this effective (Satterthwaite) df an interval rests on few PSUs
STATUS_COLUMNS = ("status_label", "status", "category", "assessment", "traffic_light", "progress_status")


# --------------------------------------------------------------------------------------------
# Data quality
# --------------------------------------------------------------------------------------------
def coverage(panel: pd.DataFrame) -> pd.DataFrame:
    """Firms (unweighted) by country and year, with the survey-weighted number of enterprises."""
    g = panel.groupby(["country", "year"], observed=True)
    out = g.agg(firms=("firm_id", "nunique")).reset_index()
    if "weight" in panel:
        out["weighted_enterprises"] = g["weight"].sum().to_numpy().round(0)
    wide = out.pivot(index="country", columns="year", values="firms")
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def coverage_summary(panel: pd.DataFrame) -> dict[str, Any]:
    """Headline coverage numbers (JSON-safe)."""
    years = panel["year"]
    return {"n_rows": int(len(panel)), "n_firms": int(panel["firm_id"].nunique()),
            "first_year": int(years.min()), "last_year": int(years.max()),
            "n_countries": int(panel["country"].nunique()),
            "countries": sorted(str(c) for c in panel["country"].unique())}


# missing by design, not a data gap: never-supported firms have no programme or start year
STRUCTURAL_MISSING = ("programme", "programme_type", "first_treated")


def missingness(panel: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Share of rows missing per column, by country (percent); only columns with any gap.
    Columns missing by design (`STRUCTURAL_MISSING`) are left out."""
    cols = [c for c in (columns or panel.columns) if c in panel.columns
            and c not in ("firm_id", "country", "year", *STRUCTURAL_MISSING)]
    miss = panel[cols].isna().groupby(panel["country"], observed=True).mean() * 100
    miss = miss.loc[:, miss.gt(0).any()]
    overall = panel[miss.columns].isna().mean() * 100
    out = miss.T
    out.insert(0, "all", overall)
    out.index.name = "column"
    return out.reset_index()


def outliers(panel: pd.DataFrame, columns: Iterable[str] = (
        "employees", "turnover", "value_added", "assets", "exports", "loans_outstanding"),
        k: float = 3.0) -> pd.DataFrame:
    """Extreme values per column, among *positive* values only, with zeros counted apart.

    Money and employment columns are zero-inflated (most firms do not export; many have no
    loan), so a log-normal rule over all values would call every exporter "extreme". Here a
    value is extreme when ``log(x)`` lies outside ``[Q1 - k IQR, Q3 + k IQR]`` of the positive
    values of its country (Tukey's far-out rule, k = 3; Tukey 1977, *Exploratory Data
    Analysis*), and the share of zeros is reported in its own column. Only counts are shown.
    """
    rows = []
    for col in columns:
        if col not in panel:
            continue
        raw = pd.to_numeric(panel[col], errors="coerce").astype("float64")
        lx = np.log(raw.where(raw > 0))
        grp = lx.groupby(panel["country"], observed=True)
        q1, q3 = grp.transform(lambda s: s.quantile(0.25)), grp.transform(lambda s: s.quantile(0.75))
        iqr = q3 - q1
        far = (lx < q1 - k * iqr) | (lx > q3 + k * iqr)
        n, pos = int(raw.notna().sum()), int((raw > 0).sum())
        rows.append({"column": col, "values": n,
                     "zeros_pct": float(100 * (raw == 0).sum() / n) if n else np.nan,
                     "positive": pos, "extreme": int(far.sum()),
                     "extreme_pct": float(100 * far.sum() / pos) if pos else np.nan,
                     "negative": int((raw < 0).sum())})
    return pd.DataFrame(rows)


def programme_counts(panel: pd.DataFrame, min_contributors: int = 3) -> pd.DataFrame:
    """Supported firms per programme (distinct firm ids); counts below the threshold are
    suppressed (None)."""
    if "programme" not in panel or "first_treated" not in panel:
        return pd.DataFrame(columns=["programme", "programme_type", "firms_supported"])
    sup = panel[panel["first_treated"].notna() & panel["programme"].notna()]
    cols = ["programme", "programme_type"] if "programme_type" in sup else ["programme"]
    out = sup.groupby(cols, observed=True, dropna=False)["firm_id"].nunique() \
        .rename("firms_supported").reset_index()
    out["firms_supported"] = out["firms_supported"].astype("Int64").where(
        out["firms_supported"] >= min_contributors, pd.NA)
    return out.sort_values(cols).reset_index(drop=True)


_ROW_DETAIL = re.compile(r"[;,]?\s*\d[\d,]*\s+rows?,\s*first:.*$", re.DOTALL)


def validation_summary(report: pd.DataFrame | None) -> pd.DataFrame:
    """Validation report without row numbers or row values (which could identify firms):
    the message is cut before its "N rows, first: row ..." detail."""
    cols = ["severity", "column", "rule", "n_rows", "finding", "fix"]
    if report is None or len(report) == 0:
        return pd.DataFrame(columns=cols)
    out = report.copy()
    if "message" in out:
        files = out["file"].astype(str) if "file" in out else pd.Series("", index=out.index)
        out["finding"] = [_ROW_DETAIL.sub("", m.removeprefix(f"{f}: "))
                          for m, f in zip(out["message"].astype(str), files)]
    return out[[c for c in cols if c in out.columns]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Indicators
# --------------------------------------------------------------------------------------------
def totals(ind: pd.DataFrame) -> pd.DataFrame:
    """Rows without a breakdown."""
    mask = ind["breakdown"].map(is_total) if "breakdown" in ind else True
    return ind[mask]


def latest(ind: pd.DataFrame, area: str, year: int | None = None) -> pd.DataFrame:
    """Per indicator, the total row for ``area`` in ``year`` (or its latest year with a value)."""
    t = totals(ind)
    t = t[t["ref_area"] == area]
    if year is not None:
        t = t[t["time_period"] <= year]
    t = t.sort_values(["indicator", "time_period"])
    with_value = t[t["value"].notna()]
    last = with_value.groupby("indicator").tail(1)
    missing = sorted(set(t["indicator"]) - set(last["indicator"]))
    if missing:  # no published value in any year: show the latest (suppressed) row
        last = pd.concat([last, t[t["indicator"].isin(missing)].groupby("indicator").tail(1)])
    return last.sort_values("indicator").reset_index(drop=True)


# registry kinds whose pooled regional value is not comparable with the national ones
NON_COMPARABLE_KINDS = ("relative_ratio",)


def non_comparable_ids(registry: pd.DataFrame | None) -> list[str]:
    """Indicators whose regional value must be an aggregate of national values: a ratio of two
    ratios (K04, productivity of MSMEs relative to large firms) pooled over member states
    mixes their size and price structures and can lie outside every national value."""
    if registry is None or "kind" not in registry:
        return ["K04"]
    return registry.loc[registry["kind"].isin(NON_COMPARABLE_KINDS), "id"].astype(str).tolist()


def regional_aggregates(ind: pd.DataFrame, registry: pd.DataFrame | None = None,
                        region: str = REGION) -> pd.DataFrame:
    """The indicator table with the regional rows of non-comparable ratios
    (`non_comparable_ids`) replaced by the **median of the national values** of the same
    year, breakdown and group (member states with a published value only).

    The median is the documented aggregate: it lies within the national range by construction
    and one member state's composition cannot move it far. It has no sampling CI here
    (``se``/``ci_low``/``ci_high`` empty, ``obs_status`` "E", estimated), and ``comment`` states
    how many national values it summarises, their range and the pooled value it replaces.
    Other indicators are unchanged.
    """
    ids = non_comparable_ids(registry)
    out = ind.copy()
    if "comment" not in out:
        out["comment"] = ""
    out["comment"] = out["comment"].astype(object)
    keys = [c for c in ("indicator", "time_period", "breakdown", "group") if c in out]
    nat = out[(out["ref_area"] != region) & out["indicator"].isin(ids) & out["value"].notna()]
    stats = nat.groupby(keys, dropna=False)["value"].agg(["median", "min", "max", "count"])
    for i in out.index[(out["ref_area"] == region) & out["indicator"].isin(ids)]:
        key = tuple(out.loc[i, keys]) if len(keys) > 1 else out.loc[i, keys[0]]
        pooled = out.at[i, "value"]
        out.loc[i, [c for c in ("value", "se", "ci_low", "ci_high") if c in out]] = np.nan
        if key not in stats.index:
            out.at[i, "comment"] = "no national value to aggregate"
            continue
        m = stats.loc[key]
        out.at[i, "value"] = float(m["median"])
        if "obs_status" in out:
            out.at[i, "obs_status"] = "E"
        pooled_text = "" if is_missing(pooled) else f"; the pooled ratio ({fmt(float(pooled), 2)}) " \
            "is not comparable across member states"
        out.at[i, "comment"] = (f"median of {int(m['count'])} national values "
                                f"(range {fmt(float(m['min']), 2)} to {fmt(float(m['max']), 2)})"
                                f"{pooled_text}")
    return out


def status_column(progress: pd.DataFrame) -> str | None:
    for c in STATUS_COLUMNS:
        if c in progress.columns:
            return c
    return None


def kpi_table(ind: pd.DataFrame, registry: pd.DataFrame | None, area: str,
              progress: pd.DataFrame | None = None, year: int | None = None,
              ids: Iterable[str] = KPI_IDS) -> pd.DataFrame:
    """The key indicators for one area: value, CI, year, confidentiality and progress."""
    last = latest(ind, area, year)
    last = last[last["indicator"].isin(list(ids))]
    names = {} if registry is None else dict(zip(registry["id"], registry["name"]))
    out = pd.DataFrame({
        "id": last["indicator"].astype(str), "name": last["indicator"].map(names).astype(object).fillna(""),
        "year": last["time_period"], "value": last["value"], "ci_low": last["ci_low"],
        "ci_high": last["ci_high"], "unit": last.get("unit", ""),
        "conf_status": last.get("conf_status", ""),
        "note": last["comment"].fillna("").astype(str) if "comment" in last else "",
    })
    if "df" in last:  # the interval's degrees of freedom, and a note where they are few
        out["df"] = last["df"].to_numpy()
        few = (last["df"] < FEW_DF).to_numpy() & last["value"].notna().to_numpy()
        out.loc[few, "note"] = [
            (n + "; " if n else "") + f"rests on few PSUs (effective df {d:.1f}): wide interval"
            for n, d in zip(out.loc[few, "note"], out.loc[few, "df"])]
    out["status"] = None
    out["target"] = np.nan
    out["target_year"] = None
    if progress is not None and len(progress):
        col = status_column(progress)
        p = progress
        area_col = next((c for c in ("ref_area", "country") if c in p.columns), None)
        if area_col:
            p = p[p[area_col] == area]
        id_col = next((c for c in ("indicator", "id") if c in p.columns), None)
        if id_col:
            p = p.drop_duplicates(id_col, keep="last").set_index(id_col)
            if col:
                out["status"] = out["id"].map(p[col]).astype(object).where(
                    out["id"].isin(p.index), None)
            for src, dst in (("target_value", "target"), ("target_year", "target_year")):
                if src in p.columns:
                    out[dst] = out["id"].map(p[src])
    return out.reset_index(drop=True)


CONF_LABELS: dict[str, str] = {
    "F": "published", "A": "suppressed: too few firms", "O": "suppressed: dominance",
    "T": "suppressed: dominance", "D": "suppressed: secondary", "C": "suppressed",
}


def kpi_view(kpis: pd.DataFrame) -> pd.DataFrame:
    """Reviewer view of `kpi_table`: words for confidentiality codes; progress columns only
    when an assessment exists."""
    v = kpis.copy()
    if "conf_status" in v:
        v["conf_status"] = v["conf_status"].map(
            lambda c: CONF_LABELS.get(str(c), str(c)) if not is_missing(c) else "")
        v = v.rename(columns={"conf_status": "confidentiality"})
    if "status" in v and v["status"].isna().all():
        v = v.drop(columns=[c for c in ("status", "target", "target_year") if c in v])
    if "note" in v and not v["note"].fillna("").astype(str).str.strip().any():
        v = v.drop(columns="note")
    return v


KPI_COLUMNS = ("id", "name", "year", "value", "ci_low", "ci_high", "df", "unit", "conf_status",
               "status", "target", "target_year", "note")


def kpi_records(kpis: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows for results.json."""
    recs = []
    for r in kpis.to_dict("records"):
        recs.append({k: (None if is_missing(v) else (int(v) if isinstance(v, (np.integer,)) else v))
                     for k, v in r.items()})
    return recs


def availability(ind: pd.DataFrame, ids: Iterable[str] = KPI_IDS) -> pd.DataFrame:
    """Indicator x area: the latest year with a published (non-suppressed) value, or '–'."""
    t = totals(ind)
    t = t[t["indicator"].isin(list(ids)) & t["value"].notna()]
    last = t.groupby(["indicator", "ref_area"])["time_period"].max().unstack("ref_area")
    last = last.reindex(list(ids))
    out = last.apply(lambda s: s.map(lambda v: "–" if pd.isna(v) else str(int(v))))
    out.index.name = "indicator"
    out.columns = [str(c) for c in out.columns]
    return out.reset_index()


def breakdown(ind: pd.DataFrame, area: str, name: str, year: int | None = None,
              ids: Iterable[str] = KPI_IDS) -> pd.DataFrame:
    """Indicator x group values for one breakdown (e.g. size_class, owner_female)."""
    if "breakdown" not in ind:
        return pd.DataFrame()
    b = ind[(ind["breakdown"].astype(str) == name) & (ind["ref_area"] == area)
            & ind["indicator"].isin(list(ids))]
    if b.empty:
        return pd.DataFrame()
    yr = year if year is not None else int(b["time_period"].max())
    b = b[b["time_period"] == yr]
    wide = b.pivot_table(index="indicator", columns="group", values="value", aggfunc="first",
                         dropna=False)
    wide.columns = [str(c) for c in wide.columns]
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    wide = wide[sorted(wide.columns, key=lambda c: (order.get(c, len(order)), c))]
    wide = wide.rename(columns=BREAKDOWN_GROUPS.get(name, {}))
    wide.insert(0, "year", yr)
    return wide.reset_index()


def series(ind: pd.DataFrame, area: str, ids: Iterable[str] = KPI_IDS) -> pd.DataFrame:
    """Total series per indicator (for trend charts)."""
    t = totals(ind)
    return t[(t["ref_area"] == area) & t["indicator"].isin(list(ids))].sort_values(
        ["indicator", "time_period"])


def published_comparison(ind: pd.DataFrame, area: str | None = None,
                         path: str | Path | None = None) -> pd.DataFrame:
    """Published national figures beside the computed value for the same year (or nearest).

    National MSME definitions differ (DESIGN.md section 4), so differences are expected.
    """
    path = Path(path) if path else Path(__file__).resolve().parents[1] / "data" / \
        "asean_msme_statistics.csv"
    pub = pd.read_csv(path)
    pub = pub[pub["indicator"].isin(list(PUBLISHED_MAP))].copy()
    if area is not None and area != "ASEAN":
        pub = pub[pub["country"] == area]
    t = totals(ind)
    rows = []
    for r in pub.itertuples(index=False):
        kid = PUBLISHED_MAP[r.indicator]
        comp = t[(t["indicator"] == kid) & (t["ref_area"] == r.country) & t["value"].notna()]
        value, year = np.nan, None
        if len(comp):
            idx = (comp["time_period"] - int(r.year)).abs().idxmin()
            value, year = float(comp.loc[idx, "value"]), int(comp.loc[idx, "time_period"])
        rows.append({"country": r.country, "indicator": kid, "published": float(r.value),
                     "published_year": int(r.year), "source_type": r.confidence,
                     "computed": value, "computed_year": year,
                     "difference": value - float(r.value) if year is not None else np.nan})
    return pd.DataFrame(rows).sort_values(["country", "indicator", "published_year"]) \
        .reset_index(drop=True) if rows else pd.DataFrame(rows)


def area_rows(ind: pd.DataFrame, area: str) -> pd.DataFrame:
    """The tidy indicator rows of one area (for the CSV/Excel download)."""
    return ind[ind["ref_area"] == area].reset_index(drop=True)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe list of row dicts (NaN -> None, numpy scalars -> Python)."""
    out = []
    for r in df.to_dict("records"):
        out.append({str(k): (None if is_missing(v) else (v.item() if isinstance(v, np.generic)
                                                      else v)) for k, v in r.items()})
    return out


def kpi_sentence(kpis: pd.DataFrame) -> str:
    """One plain-language sentence on how many indicators are available / on track."""
    n = len(kpis)
    have = int(kpis["value"].notna().sum())
    parts = [f"{have} of {n} key indicators have a publishable value."]
    if "status" in kpis and kpis["status"].notna().any():
        status = kpis["status"].dropna().astype(str)
        status = status[status != "no assessment"]
        uncertain = status.str.startswith("uncertain")
        counts = status[~uncertain].value_counts()
        parts.append("Progress to target: " + "; ".join(
            f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) + ".")
        parts.append(f"{int((~uncertain).sum())} of {len(status)} statuses are stable (the same in at "
                     f"least 80% of draws from the estimates' sampling distributions); "
                     f"{int(uncertain.sum())} are marked uncertain.")
    else:
        parts.append("No progress assessment is available (no targets or too few years).")
    return html.escape(" ".join(parts)).replace("{", "(").replace("}", ")")


def trend_figure(series_df: pd.DataFrame, registry: pd.DataFrame | None = None) -> Any:
    """Small multiples: one panel per indicator, value and CI band over time."""
    if series_df.empty:
        return None
    import matplotlib.pyplot as plt

    ids = list(dict.fromkeys(series_df["indicator"]))
    names = {} if registry is None else dict(zip(registry["id"], registry["name"]))
    ncol = 5
    nrow = -(-len(ids) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(14, 2.6 * nrow), squeeze=False)
    for ax, kid in zip(axes.flat, ids):
        s = series_df[series_df["indicator"] == kid]
        x = s["time_period"].astype(int).to_numpy()
        y = s["value"].astype(float).to_numpy()
        lo = s["ci_low"].astype(float).to_numpy()
        hi = s["ci_high"].astype(float).to_numpy()
        ax.fill_between(x, lo, hi, color="#0072B2", alpha=0.18, linewidth=0)
        ax.plot(x, y, marker="o", color="#0072B2", markersize=3)
        title = f"{kid} {names.get(kid, '')}"
        ax.set_title(title if len(title) < 38 else title[:36] + "…", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ids):]:
        ax.set_visible(False)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------------------------
# Impact
# --------------------------------------------------------------------------------------------
def programme_types_in(panel: pd.DataFrame, wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """(requested programme types present among supported firms, those absent)."""
    if "programme_type" not in panel:
        return [], list(wanted)
    have = set(panel.loc[panel["first_treated"].notna(), "programme_type"].dropna().astype(str))
    wanted = list(wanted)
    return [t for t in wanted if t in have], [t for t in wanted if t not in have]


def impact_records(headline: pd.DataFrame, outcomes: dict[str, tuple[str, str]] | None = None,
                   keep: Iterable[str] = ("log_turnover", "jobs", "survival")) -> list[dict[str, Any]]:
    """Headline effects for results.json and the cycle index (core outcomes only)."""
    outcomes = outcomes or {}
    h = headline[headline["outcome"].isin(list(keep))]
    rows = []
    for r in h.to_dict("records"):
        dim, label = outcomes.get(r["outcome"], ("", r["outcome"]))
        rows.append({"programme_type": r["programme_type"], "outcome": r["outcome"],
                     "dimension": dim, "label": f"{dim}: {label}" if dim else label,
                     "estimate": r.get("estimate", r.get("att")), "se": r.get("se"),
                     "ci_low": r.get("ci_low"),
                     "ci_high": r.get("ci_high"), "pvalue": r.get("pvalue"),
                     "n_treated": r.get("n_treated"),
                     "pretrend_pvalue": r.get("pretrend_pvalue"),
                     "pretrend_pvalue_holm": r.get("pretrend_pvalue_holm")})
    return records(pd.DataFrame(rows)) if rows else []


def effect_column(df: pd.DataFrame) -> str:
    """The effect column of an impact table: ``estimate`` (new results) or ``att``."""
    return "estimate" if "estimate" in df.columns else "att"


def headline_view(headline: pd.DataFrame, outcomes: dict[str, tuple[str, str]] | None = None
                  ) -> pd.DataFrame:
    """Reviewer view of `Evaluation.headline`: outcome, programme type, effect, CI, p-values,
    supported firms and who they are (``firms_counted`` in short words, `who_counted`),
    ``conf_status`` kept so suppressed effects show as [c]."""
    h = headline.copy()
    h["effect"] = h[effect_column(h)]
    if "firms_counted" in h:
        h["firms_counted"] = h["firms_counted"].map(who_counted)
    cols = ["outcome", "programme_type", "effect", "ci_low", "ci_high", "pvalue", "n_treated",
            "firms_counted", "pretrend_pvalue", "pretrend_pvalue_holm", "conf_status"]
    return h[[c for c in cols if c in h.columns]].reset_index(drop=True)


JOBS_AVERAGE_VIEW = ("programme_type", "net_jobs_per_firm", "ci_low", "ci_high", "n_supported", "jobs_created",
                     "support_total", "cost_per_job", "cost_ci_low", "cost_ci_high", "cost_ci_note", "currency",
                     "conf_status")
JOBS_FIXED_VIEW = ("programme_type", "horizon_e", "net_jobs_per_firm_e", "n_supported_e", "jobs_created_e",
                   "support_total_e", "cost_per_job_e", "cost_ci_low_e", "cost_ci_high_e", "cost_ci_note_e",
                   "currency", "conf_status")


def jobs_views(jobs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A jobs table (``Evaluation.jobs``, or its protected version) as a page shows it: (cost per job
    over the average of the post-support years, cost per job at the fixed horizon, the horizon in words).
    The fixed-horizon numbers of a row that is not published (``conf_status`` other than F) are blanked
    with the row's other numbers, so they show as [c]."""
    avg = jobs[[c for c in JOBS_AVERAGE_VIEW if c in jobs.columns]].reset_index(drop=True)
    fixed = jobs[[c for c in JOBS_FIXED_VIEW if c in jobs.columns]].reset_index(drop=True).copy()
    if "conf_status" in fixed:
        hidden = suppressed_rows(fixed)
        numbers = [c for c in fixed.columns if c.endswith("_e") and c not in ("horizon_e", "cost_ci_note_e")]
        fixed[numbers] = fixed[numbers].astype(float)
        fixed.loc[hidden, numbers] = np.nan
    horizons = sorted(set(jobs.get("horizon", pd.Series(dtype=str)).dropna().astype(str)) - {""})
    counted = sorted({who_counted(c) for c in jobs.get("firms_counted", pd.Series(dtype=str)).dropna()} - {"–"})
    text = (f"Horizon: {'; '.join(horizons)}" if horizons else "Horizon: the years after support") + \
        ". Cost per job = support spent / (firms counted x net jobs per firm)" + \
        (f"; firms counted: {' / '.join(c.lower() for c in counted)}." if counted else ".")
    return avg, fixed, text


_OUTCOME_PHRASES = {
    "log_turnover": lambda e: f"turnover by about {100 * (np.exp(e) - 1):+.1f}%",
    "log_value_added": lambda e: f"value added by about {100 * (np.exp(e) - 1):+.1f}%",
    "log_productivity": lambda e: f"labour productivity by about {100 * (np.exp(e) - 1):+.1f}%",
    "jobs": lambda e: f"net jobs by {e:+.1f} per supported firm",
    "employees": lambda e: f"employment by {e:+.1f} employees per surviving firm",
    "survival": lambda e: f"the chance of still operating by {100 * e:+.1f} percentage points",
}


def impact_sentence(tab: pd.DataFrame) -> str:
    """Plain-language reading of the headline effects (one bullet per effect)."""
    if tab is None or tab.empty or "estimate" not in tab:
        return "No impact estimate could be computed."
    lines = []
    for r in tab.itertuples(index=False):
        est, lo, hi = (getattr(r, "estimate", np.nan), getattr(r, "ci_low", np.nan),
                       getattr(r, "ci_high", np.nan))
        if is_missing(est):
            continue
        sig = not (is_missing(lo) or is_missing(hi)) and (lo > 0 or hi < 0)
        phrase = _OUTCOME_PHRASES.get(str(r.outcome))
        what = phrase(est) if phrase else f"{value_label(r.outcome)} by {est:+.3f}"
        verdict = "a clear effect" if sig else "not distinguishable from no effect"
        # Holm-adjusted across the page's pre-trend tests (one rejection among many is expected)
        pre = getattr(r, "pretrend_pvalue_holm", getattr(r, "pretrend_pvalue", np.nan))
        warn = " (pre-trend test fails after Holm's adjustment: read with caution)" \
            if not is_missing(pre) and pre < 0.05 else ""
        lines.append(f"- **{value_label(r.programme_type)}** changed {what}: {verdict}{warn}.")
    return html.escape("\n".join(lines)).replace("{", "(").replace("}", ")") or \
        "No impact estimate could be computed."


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def factor_caveats(texts: Iterable[str], min_repeats: int = 2) -> tuple[list[str], list[str]]:
    """(texts without the sentences they all share, those sentences once each, in order).

    Generated readings repeat the same caveat under every estimate; a page states it once, as
    true "for every estimate". A sentence that only some readings carry (e.g. "the interval
    excludes zero") stays with each of them. Needs at least ``min_repeats`` texts."""
    texts = [str(t) for t in texts]
    split = [_SENTENCE.split(t.strip()) for t in texts]
    counts: dict[str, int] = {}
    for sentences in split:
        for x in dict.fromkeys(sentences):
            counts[x] = counts.get(x, 0) + 1
    common = [x for x in counts if counts[x] == len(texts) and len(texts) >= min_repeats]
    kept = [" ".join(x for x in sentences if x not in common) for sentences in split]
    return kept, common


def choices_text(choices: dict[str, Any]) -> list[str]:
    """Estimation choices as readable lines ("Comparison group: never-supported firms"), lists
    joined with commas, never a Python list."""
    out = []
    for key, value in choices.items():
        if isinstance(value, (list, tuple, set)):
            shown = ", ".join(value_label(v) for v in value) or "none"
        elif value is None:
            shown = "none"
        else:
            shown = value_label(value)
        out.append(f"{label(key)}: {shown}")
    return out


def choices_table(choices: dict[str, Any]) -> pd.DataFrame:
    """`choices_text` as a two-column table (Choice, Value)."""
    rows = [line.split(": ", 1) for line in choices_text(choices)]
    return pd.DataFrame(rows, columns=["Choice", "Value"])


def _published_keys(headline: pd.DataFrame) -> set[tuple[str, str]]:
    ok = headline["conf_status"].astype(str).eq("F") if "conf_status" in headline else \
        pd.Series(True, index=headline.index)
    return set(zip(headline.loc[ok, "outcome"], headline.loc[ok, "programme_type"]))


def published_interpretation(interpretation: pd.DataFrame, headline: pd.DataFrame) -> pd.DataFrame:
    """The readings of published effects only: a suppressed effect's text would give its
    number away."""
    keys = _published_keys(headline)
    mask = [k in keys for k in zip(interpretation["outcome"], interpretation["programme_type"])]
    return interpretation[mask].reset_index(drop=True)


def published_event_studies(event_studies: dict[tuple[str, str], pd.DataFrame],
                            headline: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Event studies of (outcome, programme type) pairs whose headline effect is published."""
    keys = _published_keys(headline)
    return {k: v for k, v in event_studies.items() if k in keys}


def _effect_ci(row: Any, est: str, digits: int = 3) -> str:
    v, lo, hi = row.get(est), row.get("ci_low"), row.get("ci_high")
    if is_missing(v):
        return "[c]" if str(row.get("conf_status", "F")) not in ("F", "nan", "") else "–"
    return f"{fmt(float(v), digits)} ({fmt(float(lo), digits)} to {fmt(float(hi), digits)})"


def inclusion_view(inclusion: pd.DataFrame, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Effects by group side by side: one row per programme type, outcome and group, with the
    effect (95% CI) in the group, in the other supported firms, and the test of the
    difference (the two tables `inclusion` and `inclusion_tests` in one)."""
    if inclusion is None or inclusion.empty:
        return pd.DataFrame()
    est = effect_column(inclusion)
    keys = ["programme_type", "outcome", "subgroup"]
    rows = []
    for key, part in inclusion.groupby(keys, sort=False):
        inside = part[part["level"].astype(str).isin(["True", "1", "true"])]
        outside = part.drop(inside.index)
        grp = inside["label"].iloc[0] if len(inside) and "label" in inside else key[2]
        row = dict(zip(keys, key), group=grp,
                   effect_in_group=_effect_ci(inside.iloc[0], est) if len(inside) else "–",
                   effect_in_others=_effect_ci(outside.iloc[0], est) if len(outside) else "–")
        if tests is not None and len(tests):
            t = tests[(tests["programme_type"] == key[0]) & (tests["outcome"] == key[1])
                      & (tests["subgroup"] == key[2])]
            row["difference_pvalue"] = float(t["pvalue"].iloc[0]) if len(t) else np.nan
        rows.append(row)
    return pd.DataFrame(rows).drop(columns="subgroup")


def robustness_view(robustness: pd.DataFrame) -> pd.DataFrame:
    """Robustness checks side by side: one row per programme type and outcome, one column per
    specification, each cell the effect (95% CI)."""
    if robustness is None or robustness.empty:
        return pd.DataFrame()
    est = effect_column(robustness)
    r = robustness.assign(cell=[_effect_ci(x, est) for x in robustness.to_dict("records")])
    wide = r.pivot_table(index=["programme_type", "outcome"], columns="spec", values="cell",
                         aggfunc="first", sort=False)
    wide.columns = [value_label(c) for c in wide.columns]
    return wide.reset_index()


def jobs_view(jobs: pd.DataFrame) -> pd.DataFrame:
    """Reviewer view of the jobs table: programme type, net jobs per firm (CI), jobs created
    (whole jobs), support and cost per job with currency (suppression kept)."""
    cols = ["programme_type", "net_jobs_per_firm", "ci_low", "ci_high", "jobs_created",
            "support_total", "cost_per_job", "cost_ci_low", "cost_ci_high", "currency",
            "conf_status"]
    return jobs[[c for c in cols if c in jobs.columns]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Executive summary from the cycle's collected fragments
# --------------------------------------------------------------------------------------------
def collected_kpis(res: dict[str, Any], area: str) -> pd.DataFrame | None:
    k = res.get("20_indicators", {}).get(area, {}).get("kpis")
    if not k:
        return None
    df = pd.DataFrame(k)
    first = [c for c in KPI_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def country_overview(res: dict[str, Any]) -> pd.DataFrame | None:
    """Member state x KPI latest values from the country indicator pages."""
    rows = {}
    for area, frag in sorted(res.get("20_indicators", {}).items()):
        if area == "ASEAN" or not frag.get("kpis"):
            continue
        rows[area_name(area)] = {k["id"]: k.get("value") for k in frag["kpis"]}
    if not rows:
        return None
    wide = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(KPI_IDS))
    wide.index.name = "country"
    return wide.astype("float64").reset_index()


def collected_impacts(res: dict[str, Any], area: str = REGION) -> pd.DataFrame | None:
    """Headline effects recorded by ``area``'s impact page (the runner's fragments)."""
    imp = res.get("30_impact", {}).get(area, {}).get("impacts")
    if not imp:
        return None
    cols = ["programme_type", "outcome", "label", "estimate", "ci_low", "ci_high",
            "pretrend_pvalue", "pretrend_pvalue_holm"]
    df = pd.DataFrame(imp)
    return df[[c for c in cols if c in df.columns]]


def bullets(items: Iterable[Any]) -> Any:
    """Escaped HTML bullet list."""
    return bullet_list([str(i) for i in items])


def figure_of(obj: Any, title: str | None = None, alt: str | None = None) -> Any:
    """An Axes/Figure ready to display: titled (one title: ``title`` replaces the suptitle),
    rendered to a PNG sized for the page with alt text (``alt``, else the figure's own
    description, see `display.figure_alt`), and closed so it is shown once."""
    fig = getattr(obj, "figure", obj)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure(fig, alt)


def impact_outcomes() -> dict[str, tuple[str, str]]:
    """`impact.evaluate`'s outcome -> (dimension, label) map."""
    return dict(OUTCOMES)


def progress_view(progress: pd.DataFrame, area: str, ids: Iterable[str] = KPI_IDS
                  ) -> pd.DataFrame:
    """Progress-to-target rows of one area for the key indicators (reviewer columns)."""
    p = progress
    if "ref_area" in p:
        p = p[p["ref_area"] == area]
    if "indicator" in p:
        p = p[p["indicator"].isin(list(ids))]
    cols = ["indicator", "baseline_year", "baseline_value", "latest_year", "latest_value",
            "target_year", "target_value", "projected_value", "status", "status_probability", "reason"]
    if "status_label" in p:  # "uncertain: X or Y" where the status flips in > 20% of draws
        p = p.assign(status=p["status_label"])
    out = p[[c for c in cols if c in p.columns]].sort_values("indicator").reset_index(drop=True)
    if "reason" in out and out["reason"].isna().all():
        out = out.drop(columns="reason")
    return out


_UNIT_IDS = re.compile(r"\s*\((?:firm_id|unit)\s*=[^)]*\)")


def estimation_gaps(notes: Iterable[str]) -> list[str]:
    """The evaluation notes that say why an effect was not estimated, without the firm
    identifiers the library quotes (a report names no firm)."""
    return list(dict.fromkeys(_UNIT_IDS.sub("", str(n)) for n in notes if "not estimated" in str(n)))


def no_estimate_text(area: str) -> str:
    """Why an impact page shows no effect although ``area`` has supported firms."""
    return (f"No effect of support could be estimated for {area}: its supported firms are too "
            "few, or spread over too many start years, for the comparison "
            "(each reason is listed below). Nothing is wrong with the report; more years or "
            "more supported firms are needed.")


def headline_only_text(area: str) -> str:
    """Why a member state's impact page in a regional cycle has no robustness or inclusion."""
    return (f"This cycle reports {area}'s headline effects; robustness checks and the inclusion "
            "breakdowns are estimated for the region (see the regional impact page). Running the "
            "cycle for this member state alone (msme-eval run --countries CODE) gives its full "
            "analysis.")

