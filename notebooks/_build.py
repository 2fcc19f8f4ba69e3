"""Build the report templates in this folder (run: python notebooks/_build.py).

The .ipynb files are generated from this script so they stay thin, consistent and free of
outputs; tests/test_report.py checks the committed files match. Each template:

1. imports msme_eval and records the names defined so far (``_before``);
2. has the ``parameters`` cell (papermill injects its values after it);
3. calls ``me.cycle.notebook_context(globals(), _before)``, which re-checks every parameter
   with the same strict model the runner uses, so plain papermill gets the same protection;
4. calls library functions and explains the results in prose for a ministry reviewer.

Template metadata ``msme_eval``: title, scope (region and/or country), phase (2 = after all
other notebooks, for the executive summary).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = """\
import msme_eval as me
from IPython.display import display
from msme_eval.report import md, notice, table
from msme_eval.report import summaries as S
_before = set(globals())"""

PARAMETERS = """\
cycle = "2024"
country = "ASEAN"
panel = "data/raw/sample/panel.parquet"
macro = "data/raw/sample/macro.csv"
targets = "data/raw/sample/targets.csv"
baseline_year = 2018
target_year = 2025
report_year = None
programme_types = ["finance", "market_access", "capacity_building"]
min_contributors = 3
dominance_n = 2
dominance_k = 0.85
engine = "pandas"
output_dir = ""
cache_dir = \"\""""

CHECK = """\
ctx = me.cycle.notebook_context(globals(), _before)
md("# {title} — {area}\\n\\nMonitoring cycle **{cycle}**", title={title!r},
   area=ctx.area_name, cycle=ctx.params.cycle)"""

PARAMS_TABLE = """\
ctx.parameters_table()"""


def notebook(title: str, scope: list[str], cells: list, phase: int = 1, cost: float = 1.0):
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "msme-eval", "display_name": "Python (msme-eval)",
                       "language": "python"},
        "language_info": {"name": "python"},
        "msme_eval": {"title": title, "scope": scope, "phase": phase, "cost": cost},
    }
    nb.cells = [
        new_code_cell(SETUP),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(CHECK.replace("{title!r}", repr(title))),
        *cells,
        new_markdown_cell("## About this report\n\nThe parameters below produced this page. "
                          "Every number is an aggregate; cells resting on too few firms, or "
                          "dominated by one or two firms, are suppressed and shown as '–'."),
        new_code_cell(PARAMS_TABLE),
    ]
    return nb


M = new_markdown_cell
C = new_code_cell

DATA_QUALITY = notebook("Data quality", ["region", "country"], [
    M("This page checks the data behind the report before anyone relies on the numbers: which "
      "firms and years it covers, what the automatic validation flagged, where values are "
      "missing and how many values are extreme. Serious errors stop the report before it is "
      "produced, so everything here is a *warning*: worth knowing, not fatal."),
    M("## Coverage\n\nNumber of firms observed in each year (unweighted sample counts). A "
      "sudden drop or a missing year usually means a delivery problem, not a real change."),
    C("""\
data = ctx.panel()
if data is not None:
    cov = S.coverage_summary(data)
    ctx.record("coverage", cov)
    display(md("The data hold **{n:,}** firm-year records on **{f:,}** firms from **{y0}** to "
               "**{y1}**, in {k} member state(s).", n=cov["n_rows"], f=cov["n_firms"],
               y0=cov["first_year"], y1=cov["last_year"], k=cov["n_countries"]))
    display(table(S.coverage(data), caption="Firms observed by country and year", digits=0))"""),
    M("## Validation warnings\n\nEach line is one rule that some rows break, with how many "
      "rows. Row numbers and values are left out of the published report on purpose; the "
      "evaluator finds them with `msme-eval validate FILE`. Warnings concern the whole input "
      "file."),
    C("""\
report = ctx.validation_report()
if report is not None:
    summary = S.validation_summary(report)
    ctx.record("validation", {"n_warnings": int((summary["severity"] == "warning").sum())})
    if len(summary):
        display(table(summary, caption="Validation findings", digits=0))
    else:
        display(notice("The validation found no problems in the input file."))"""),
    M("## Missing values\n\nShare of records (%) with no value, by column, for columns with any "
      "gap. Indicators that need a column with many gaps are less precise or not published. "
      "Programme columns are left out: firms that were never supported have no programme by "
      "design."),
    C("""\
if data is not None:
    miss = S.missingness(data)
    if len(miss):
        display(table(miss, caption="Missing values (% of records)", digits=1))
    else:
        display(notice("No column has missing values."))"""),
    M("## Extreme values\n\nValues far outside the usual range for the country (Tukey's "
      "far-out rule on the log scale: beyond three inter-quartile ranges). They are counted, "
      "not removed: a few very large firms are normal, but many extremes can signal unit "
      "errors (e.g. thousands vs units of currency)."),
    C("""\
if data is not None:
    display(table(S.outliers(data), caption="Extreme values by column", digits={"extreme_pct": 2}))"""),
    M("## Support programmes in the data\n\nNumber of distinct firms that received support, by "
      "programme. Counts below the disclosure threshold are suppressed."),
    C("""\
if data is not None:
    progs = S.programme_counts(data, ctx.params.min_contributors)
    ctx.record("programmes", progs.to_dict("records"))
    ctx.export_table("programmes", progs)
    if len(progs):
        display(table(progs, caption="Supported firms by programme", digits=0))
    else:
        display(notice("No firm in these data received programme support."))"""),
])

INDICATORS = notebook("Key indicators", ["region", "country"], [
    M("This page reports the ten key indicators of the ASEAN Strategic Action Plan for SME "
      "Development (SAP SMED) as defined in msme-eval's indicator registry. Each value is a "
      "survey-weighted estimate with a 95% confidence interval (the range that would contain "
      "the true value in 95 of 100 samples). Progress is assessed against the targets with the "
      "UN ESCAP method: the observed pace of change is compared with the pace needed to reach "
      "the target on time."),
    M("## The ten indicators at a glance"),
    C("""\
ind = ctx.indicators()
reg_fn = me.report.context.library("indicators.registry")
reg = reg_fn() if reg_fn is not None else None
prog = ctx.progress() if ind is not None else None
if ind is not None:
    kpis = S.kpi_table(ind, reg, ctx.country, prog, year=ctx.params.report_year)
    ctx.record("kpis", S.kpi_records(kpis))
    ctx.export_table("kpis", kpis)
    display(table(S.kpi_view(kpis), caption=f"Key indicators, {ctx.area_name}",
                  digits={"value": 2, "95% CI low": 2, "95% CI high": 2}, status_col="status"))
    display(md(S.kpi_sentence(kpis)))"""),
    M("## Trends and progress to target\n\nEach panel shows an indicator over time with its "
      "95% confidence band. Where a target exists, the panel also shows the baseline, the "
      "target, and the trend projection to the target year that the traffic-light colour "
      "rests on. Years without a publishable estimate are marked on the axis."),
    C("""\
dash = me.report.context.library("plots.kpi_dashboard")
if ind is not None:
    fig = (dash(ind, prog, country=ctx.country) if dash is not None
           else S.trend_figure(S.series(ind, ctx.country), reg))
    if fig is not None:
        display(S.figure_of(fig))
if prog is not None:
    view = S.progress_view(prog, ctx.country)
    if len(view):
        ctx.export_table("progress", view)
        display(table(view, caption=f"Progress towards the {ctx.params.target_year} targets",
                      digits=2, status_col="status"))"""),
    M("## By firm size and by owner sex\n\nThe same indicators for micro, small, medium and "
      "large firms, and for firms owned by women and by men, in the latest year. Suppressed "
      "cells (too few firms) show '–'."),
    C("""\
if ind is not None:
    for name, label in (("size_class", "firm size"), ("owner_female", "sex of the owner")):
        b = S.breakdown(ind, ctx.country, name, ctx.params.report_year)
        if len(b):
            display(table(b, caption=f"Indicators by {label}", digits=1))
        else:
            display(notice(f"No breakdown by {label} is available for {ctx.area_name}."))"""),
    M("## Which indicators can be computed where\n\nLatest year with a published value for each "
      "indicator and member state ('–' = not computable from the data or suppressed)."),
    C("""\
if ind is not None:
    avail = S.availability(ind)
    if ctx.is_region:
        ctx.export_table("availability", avail)
    display(table(avail, caption="Data availability (latest year with a value)"))"""),
    M("## Published figures beside computed values\n\nOfficial or secondary published shares "
      "(OECD, ADB and national sources) next to the value computed from these data for the "
      "nearest year. **Caveat:** each member state uses its own legal MSME definition "
      "(employees, turnover, assets, with different thresholds), so figures are not strictly "
      "comparable across countries, and a sample survey will not match a census exactly."),
    C("""\
if ind is not None:
    comp = S.published_comparison(ind, ctx.country)
    if len(comp):
        display(table(comp, caption="Published vs computed (percent)", digits=1))
    else:
        display(notice(f"No published figure is on file for {ctx.area_name}."))"""),
    C("""\
if ind is not None:
    ctx.export_table("indicators", S.area_rows(ind, ctx.country))"""),
])

IMPACT = notebook("Impact of support programmes", ["region"], cost=20, cells=[
    M("This page estimates what the support programmes changed for the firms that received "
      "them, following the OECD framework's core outcomes: **growth** (turnover, value added, "
      "productivity), **jobs** (employment, net jobs, cost per job), **survival** and "
      "**inclusion** (effects for women-owned, rural, micro and young firms). Supported firms "
      "are compared with similar firms never supported, before and after support began "
      "(staggered difference-in-differences, Callaway and Sant'Anna 2021)."),
    M("## Headline effects by programme type\n\nAverage effect on supported firms over all "
      "years after support began, with a 95% confidence interval. An interval that includes "
      "zero means the data cannot rule out no effect. Effects on log outcomes times 100 are "
      "roughly percentage changes; survival effects are changes in the probability of still "
      "operating."),
    C("""\
data = ctx.panel()
evaluate = me.report.context.library("impact.evaluate")
ev = None
if data is not None and evaluate is None:
    display(ctx.unavailable("impact.evaluate"))
elif data is not None:
    types, absent = S.programme_types_in(data, ctx.params.programme_types)
    if absent:
        display(notice("No supported firms of type " + ", ".join(absent) + " in these data; "
                       "those programmes are not evaluated."))
    if types:
        ev = evaluate(data, programme_type=types, macro=ctx.macro())
        outcomes = S.impact_outcomes()
        ctx.record("impacts", S.impact_records(ev.headline, outcomes))
        ctx.export_table("impact_headline", ev.headline)
        display(table(S.headline_view(ev.headline, outcomes), caption="Average effect on supported firms",
                      digits=3))
        display(md(S.impact_sentence(S.collected_impacts(
            {"30_impact": {"ASEAN": {"impacts": S.impact_records(ev.headline, outcomes)}}}))))"""),
    M("## What the estimates say\n\nA plain-language reading of each estimate, generated from "
      "the numbers above with the same rules for every programme."),
    C("""\
if ev is not None:
    display(S.bullets(ev.interpretation["text"]))"""),
    M("## Event studies and the pre-trend test\n\nEffects by years since support began. Before "
      "support (negative years) the estimates should be close to zero; the joint test checks "
      "that. A small p-value (< 0.05) warns that supported and comparison firms were already "
      "diverging, so the effects may be biased."),
    C("""\
if ev is not None:
    display(table(ev.pretrends, caption="Joint pre-trend tests", digits=3))
    for pt in types:
        for outcome in ("log_turnover", "jobs", "survival"):
            if (outcome, pt) in ev.results:
                display(S.figure_of(ev.plot_event_study(outcome, pt), f"{pt}: {outcome}"))"""),
    M("## Jobs and cost per job"),
    C("""\
if ev is not None and len(ev.jobs):
    ctx.export_table("impact_jobs", ev.jobs)
    display(table(ev.jobs, caption="Net jobs per supported firm and cost per job", digits=2))"""),
    M("## Inclusion: who benefits\n\nEffects estimated separately for women-owned, rural, micro "
      "and young firms and for the other firms, a test of whether they differ, and the shares "
      "of support and of jobs created that reached each group."),
    C("""\
if ev is not None:
    if len(ev.inclusion):
        ctx.export_table("impact_inclusion", ev.inclusion)
        cols = [c for c in ("programme_type", "outcome", "label", "att", "ci_low", "ci_high",
                            "n_treated") if c in ev.inclusion.columns]
        display(table(ev.inclusion[cols], caption="Effects by group", digits=3))
    if len(ev.inclusion_tests):
        display(table(ev.inclusion_tests, caption="Do effects differ between groups?", digits=3))
    if len(ev.inclusion_shares):
        display(table(ev.inclusion_shares, caption="Shares reaching each group", digits=3))
    if not len(ev.inclusion):
        display(notice("No group breakdown could be estimated from these data."))"""),
    M("## Robustness\n\nThe same question answered with different choices (other comparison "
      "group, covariates, the older two-way fixed-effects regression). If the answers differ a "
      "lot, the headline effect depends on the choice and should be read with care."),
    C("""\
if ev is not None and len(ev.robustness):
    ctx.export_table("impact_robustness", ev.robustness)
    cols = [c for c in ("programme_type", "outcome", "spec", "att", "ci_low", "ci_high",
                        "pvalue") if c in ev.robustness.columns]
    display(table(ev.robustness[cols], caption="Robustness checks", digits=3))"""),
    M("## How strong is the evidence?\n\nThe OECD *Six Steps to Heaven* scale rates evaluation "
      "designs from I (take-up counts) to VI (designs that also remove selection on unobserved "
      "characteristics, such as a randomised trial)."),
    C("""\
if ev is not None:
    ctx.record("six_steps", {"level": ev.six_steps.get("step"), "label": ev.six_steps.get("name"),
                             "maryland_sms": ev.six_steps.get("maryland_sms")})
    display(md("**Step {step}** — {name} (Maryland Scientific Methods Scale {sms}). {reason}",
               step=str(ev.six_steps.get("step")), name=ev.six_steps.get("name", ""),
               sms=str(ev.six_steps.get("maryland_sms", "")), reason=ev.six_steps.get("reason", "")))
    display(md("Estimation choices: {c}", c="; ".join(f"{k} = {v}" for k, v in ev.choices.items())))
    if ev.notes:
        display(S.bullets(ev.notes))"""),
    M("## Reading these results with care\n\n- Firms chose to apply and programmes chose whom "
      "to support. The comparison adjusts for differences that are stable over time and for "
      "common shocks, not for a sudden change that made firms both apply and grow.\n"
      "- Effects are averages over supported firms; individual firms differ widely.\n"
      "- A non-significant effect is not proof of no effect, especially for small "
      "programmes.\n- Survival counts a firm as exited once it disappears from the data; "
      "firms that stop responding but keep operating would bias survival effects."),
])

SUMMARY = notebook("Executive summary", ["region"], phase=2, cells=[
    M("This summary brings together the main results of the cycle: the ten key indicators for "
      "ASEAN and its member states, progress towards the targets, and the measured effects of "
      "support programmes. Details, methods and caveats are in the other sections."),
    M("## Key indicators for ASEAN"),
    C("""\
res = ctx.collected()
kpis = S.collected_kpis(res, "ASEAN")
if kpis is None:
    ind = ctx.indicators()
    if ind is not None:
        reg_fn = me.report.context.library("indicators.registry")
        kpis = S.kpi_table(ind, reg_fn() if reg_fn else None, "ASEAN", ctx.progress(),
                           year=ctx.params.report_year)
if kpis is not None:
    display(table(S.kpi_view(kpis), caption="Key indicators, ASEAN",
                  digits={"value": 2, "95% CI low": 2, "95% CI high": 2}, status_col="status"))
    display(md(S.kpi_sentence(kpis)))"""),
    M("## Member states\n\nLatest value of each key indicator by member state ('–' = not "
      "available or suppressed)."),
    C("""\
wide = S.country_overview(res)
if wide is not None:
    display(table(wide, caption="Key indicators by member state"))
else:
    display(notice("Country results are produced by the full cycle run "
                   "(msme-eval run); none were found for this page."))"""),
    M("## Effects of support programmes"),
    C("""\
imp = S.collected_impacts(res)
if imp is not None:
    display(table(imp, caption="Average effects on supported firms",
                  digits={"estimate": 3, "ci_low": 3, "ci_high": 3, "pretrend_pvalue": 3}))
    display(md(S.impact_sentence(imp)))
else:
    display(notice("Impact estimates come from the impact section of the full cycle run; "
                   "none were found for this page.", "unavailable"))"""),
])

TEMPLATES = {"00_summary": SUMMARY, "10_data_quality": DATA_QUALITY, "20_indicators": INDICATORS,
             "30_impact": IMPACT}


def build(folder: Path = HERE) -> dict[str, str]:
    """Write every template; returns {name: json text}."""
    out = {}
    for name, nb in TEMPLATES.items():
        for i, cell in enumerate(nb.cells):  # stable ids -> reproducible files
            cell["id"] = f"{name}-{i:02d}"
        nbformat.validate(nb)
        text = nbformat.writes(nb) + "\n"
        (folder / f"{name}.ipynb").write_text(text, encoding="utf-8")
        out[name] = text
    return out


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
