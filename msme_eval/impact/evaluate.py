"""The three evaluation questions in one call: :func:`evaluate` -> :class:`Evaluation`.

Growth (log turnover, log value added, log labour productivity = log(value added / employee)),
jobs (employees; net jobs per supported firm counting exits as zero jobs; cost per job), survival
(a firm x year ``alive`` indicator built from panel presence: exits are outcomes, not dropped),
and inclusion (effects for women-owned, rural, micro and young firms, a test that they differ,
and the shares of support and of jobs created reaching each group), per programme type and
overall, with the evidence a reviewer needs (event studies with pre-trend tests, a robustness
table, the OECD "Six Steps to Heaven" level and plain-language interpretation).

Estimator: :func:`msme_eval.impact.did` (Callaway-Sant'Anna). For a programme type, the sample
is the firms supported by that type plus the never-supported firms; firms supported by another
type are left out (they are neither clean controls nor part of this programme's effect).
"""
from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from msme_eval.contract import ESTIMATE_COLUMNS
from msme_eval.plots import value_label

from ._checks import ImpactInputError, integer_time, require_columns
from .did import did
from .plots import event_study_plot
from .results import DidResult, Notes, _SettingsFace
from .survival import survival_did
from .twfe import twfe

__all__ = ["Evaluation", "evaluate", "combine", "build_outcomes", "holm", "OUTCOMES", "SUBGROUPS"]

OUTCOMES: dict[str, tuple[str, str]] = {
    "log_turnover": ("growth", "log turnover (effect x 100 ~ % change)"),
    "log_value_added": ("growth", "log value added (effect x 100 ~ % change)"),
    "log_productivity": ("growth", "log labour productivity, value added per employee"),
    "employees": ("jobs", "employees of surviving firms"),
    "jobs": ("jobs", "employees counting exited firms as zero (net jobs)"),
    "survival": ("survival", "firm still operating (1) or exited (0)"),
}
CORE = ("log_turnover", "employees", "jobs", "survival")
CORE_SUBGROUP = ("log_turnover", "employees")  # add "survival" via subgroup_outcomes (slower)
# subgroup -> (column built by build_outcomes, label of the True level)
SUBGROUPS: dict[str, str] = {
    "owner_female": "women-owned", "rural": "rural", "micro": "micro (at baseline)",
    "young": "young (<= 5 years old at baseline)",
}
YOUNG_MAX_AGE = 5


def _log_pos(x: pd.Series) -> pd.Series:
    """log(x) where x > 0, NaN elsewhere (counted in the notes by the caller)."""
    v = pd.to_numeric(x, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.full(v.shape, np.nan)
    pos = v > 0
    out[pos] = np.log(v[pos])
    return pd.Series(out, index=x.index)


def build_outcomes(panel: pd.DataFrame, *, unit: str = "firm_id", time: str = "year") -> tuple[pd.DataFrame, list[str]]:
    """Firm x year analysis frame from a contract panel, with outcomes and baseline attributes.

    Each firm gets every year from its first observed year to the panel's last year. ``alive``
    is 1 in observed years, 0 in every year after the firm's last observed year (exit), and
    missing in a gap between two observed years (non-response, not exit). ``jobs`` =
    employees, 0 after exit. Baseline attributes (owner_female, rural, micro, registered, size and
    sector dummies, ...) are the values in the firm's first observed year; ``young`` is age <= 5
    in the first support year (never-supported firms: in the median first-support year).
    Returns (frame, notes).
    """
    require_columns(panel, [unit, time, "first_treated", "employees"], "evaluate()")
    notes: list[str] = []
    t = integer_time(panel, time)
    p = panel.assign(**{time: t}).sort_values([unit, time])
    first = p.groupby(unit, sort=False)[time].transform("min")
    last_year = int(t.max())
    span = p.groupby(unit, sort=False)[time].agg(["min", "max"])
    grid = pd.DataFrame({unit: np.repeat(span.index.to_numpy(), last_year - span["min"].to_numpy() + 1)})
    grid[time] = np.concatenate([np.arange(a, last_year + 1) for a in span["min"].to_numpy()]) if len(span) else []
    keep = [c for c in ("employees", "turnover", "value_added", "support_amount") if c in p.columns]
    out = grid.merge(p[[unit, time, *keep]].assign(_obs=1), on=[unit, time], how="left")
    last_obs = out[unit].map(span["max"])
    observed = out["_obs"].notna()
    out["alive"] = np.where(observed, 1.0, np.where(out[time] > last_obs, 0.0, np.nan))
    n_gap = int(np.isnan(out["alive"]).sum())
    if n_gap:
        notes.append(f"{n_gap} firm-year(s) are gaps between observed years: survival is missing there "
                     "(non-response is not exit).")
    n_exit = int((span["max"] < last_year).sum())
    notes.append(f"{n_exit} firm(s) exit before {last_year} (last observed earlier); they stay in the sample "
                 "as closed (not operating, zero jobs) in the years after they exit.")
    out["survival"] = out["alive"]
    emp = pd.to_numeric(out["employees"]).astype("Float64")
    out["employees"] = emp
    out["jobs"] = emp.where(out["alive"] != 0, 0.0)
    if "turnover" in out:
        out["log_turnover"] = _log_pos(out["turnover"])
    if "value_added" in out:
        out["log_value_added"] = _log_pos(out["value_added"])
        va = pd.to_numeric(out["value_added"]).to_numpy(dtype=np.float64, na_value=np.nan)
        e_ = emp.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["log_productivity"] = _log_pos(pd.Series(np.where(e_ > 0, va / e_, np.nan), index=out.index))
    for c in ("turnover", "value_added"):
        if c in out:
            nonpos = int((pd.to_numeric(out[c]) <= 0).sum())
            if nonpos:
                notes.append(f"{nonpos} firm-year(s) with zero or negative {value_label(c).lower()} have no log "
                             f"{value_label(c).lower()} (log undefined): they are left out of that outcome.")
    out["support_amount"] = pd.to_numeric(out["support_amount"]).fillna(0.0) if "support_amount" in out else 0.0
    base = p[p[time] == first].set_index(unit)
    attrs = pd.DataFrame(index=span.index)
    attrs["first_treated"] = base["first_treated"]
    for c in ("programme_type", "programme", "country", "sector", "region", "owner_female", "urban", "weight",
              "selected_year", "psu", "strata"):
        if c in base:
            attrs[c] = base[c]
    # time-invariant programme info: take it from any row where it is set
    for c in ("programme_type", "programme"):
        if c in p:
            attrs[c] = p.dropna(subset=[c]).groupby(unit)[c].first().reindex(span.index)
    if "owner_female" in base:
        attrs["owner_female"] = base["owner_female"].astype("boolean")
    if "urban" in base:
        attrs["rural"] = ~base["urban"].astype("boolean")
    if "size_class" in base:
        micro = (base["size_class"].astype("str") == "micro").astype("boolean")
        attrs["micro"] = micro.where(base["size_class"].notna())
    if "registered" in base:
        attrs["registered"] = base["registered"].astype("Float64")
    if "size_class" in base:
        attrs["size_class"] = base["size_class"].astype("str")
        for k in ("micro", "small", "medium"):
            attrs[f"size_{k}"] = (base["size_class"].astype("str") == k).astype(float)
    if "sector" in base:
        share = base["sector"].value_counts(normalize=True)
        for sec in sorted(share.index[share >= 0.05]):
            attrs[f"sector_{sec}"] = (base["sector"] == sec).astype(float)
    if "birth_year" in base:
        birth = pd.to_numeric(base["birth_year"]).astype("Float64")
        attrs["birth_year"] = birth
        attrs["baseline_age"] = (span["min"] - birth).astype("Float64")
        # young: age <= 5 in the first support year (treated) or, for never-supported firms, in the
        # median first-support year of the panel (their comparable reference year)
        g_firm = pd.to_numeric(attrs["first_treated"]).astype("Float64")
        ref = g_firm.fillna(float(g_firm.median()) if g_firm.notna().any() else float(span["min"].median()))
        age_ref = ref - birth
        attrs["young"] = (age_ref <= YOUNG_MAX_AGE).astype("boolean").where(age_ref.notna())
    attrs["baseline_log_employees"] = np.log1p(pd.to_numeric(base["employees"]).astype("Float64"))
    out = out.drop(columns=["_obs"]).merge(attrs, left_on=unit, right_index=True, how="left")
    return out, notes


_SHOW = ("outcome", "programme_type", "att", "se", "ci_low", "ci_high", "pvalue", "n_treated", "pretrend_pvalue",
         "pretrend_pvalue_holm")
NOT_BOUNDED = "not bounded: the jobs effect is not distinguishable from zero"


def _jobs_cost(att: float, ci: tuple[float, float], n_treated: int, support: float) -> dict[str, Any]:
    """Cost per job = S / J, S = support spent (known, not estimated), J = n_treated x att (jobs created).

    Interval: Fieller's confidence set for the ratio S / J (Fieller 1954, "Some problems in interval
    estimation", JRSS B 16(2)). With a known numerator (var S = 0) the Fieller set is exactly
    {S / j : j in CI(J)}, CI(J) = n_treated x [att_low, att_high]:

    * J_low > 0: [S / J_high, S / J_low] (bounded);
    * J_low <= 0 < J_high: S / J_high to +infinity (and negative values): NOT bounded - the data are
      consistent with (almost) no jobs created, so no finite upper cost can be stated; ``cost_ci_high``
      is NaN and ``cost_ci_note`` says so in words;
    * J_high <= 0: no interval (the data are not consistent with any job gain at this level).

    The delta method (se = S se(J) / J^2) would give a finite but wrong interval in the second case,
    so it is not used. Returns jobs_created (+ CI), support_total, cost_per_job, cost_ci_low,
    cost_ci_high and cost_ci_note ("" when bounded).
    """
    jobs = n_treated * att
    lo, hi = n_treated * ci[0], n_treated * ci[1]
    cost = support / jobs if jobs > 0 else np.nan
    if lo > 0:
        c_lo, c_hi, note = support / hi, support / lo, ""
    elif hi > 0:
        c_lo, c_hi, note = support / hi, np.nan, f"{NOT_BOUNDED} (at least {support / hi:,.0f} per job)"
    else:
        c_lo, c_hi, note = np.nan, np.nan, "no interval: the data are not consistent with any jobs created"
    if not jobs > 0:
        note = (note + "; " if note else "") + "no cost per job: the estimated jobs effect is not positive"
    return {"jobs_created": jobs, "jobs_ci_low": lo, "jobs_ci_high": hi,
            "support_total": support, "cost_per_job": cost, "cost_ci_low": c_lo, "cost_ci_high": c_hi,
            "cost_ci_note": note}


def cost_text(row: pd.Series | dict[str, Any]) -> str:
    """One line for a jobs-table row: cost per job with its interval, or why there is none."""
    r = dict(row)
    who, cur = r.get("programme_type", ""), r.get("currency", "")
    if not np.isfinite(r["cost_per_job"]):
        return f"{who}: {r['cost_ci_note']}."
    head = f"{who}: {r['cost_per_job']:,.0f} {cur} per job"
    if np.isfinite(r["cost_ci_high"]):
        return f"{head} (CI {r['cost_ci_low']:,.0f} to {r['cost_ci_high']:,.0f})."
    return f"{head}; interval {r['cost_ci_note']}."


def _lower_first(text: str) -> str:
    """'Sector A' -> 'sector A' inside a sentence; acronyms ('PSU') and one-letter words stay."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def in_words(items: Sequence[Any], conjunction: str = "and") -> str:
    """A list as words through the label map (``msme_eval.plots.value_label``), never a Python list:
    ['size_micro', 'registered', 'sector_A'] -> 'micro size class, registered and sector A'."""
    words = [_lower_first(value_label(i)) for i in items]
    if not words:
        return "none"
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def register_sentence(programme_type: str, check: dict[str, Any]) -> str:
    """One sentence on a survival register check (:func:`msme_eval.impact.survival.register_check`):
    exits of cohort firms in their cohort year against the number expected at the comparison firms'
    exit rate, and what it says about the register (lists firms that closed / looks like recipients only)."""
    who = value_label(programme_type)
    n, d = check.get("cohort_firms_alive_before", 0), check.get("exits_in_cohort_year", 0)
    expected = check.get("expected_exits_at_comparison_rate", np.nan)
    if not n or not np.isfinite(expected):
        return (f"{who}: no cohort firm could be compared with comparison firms in its cohort year, so the "
                "register is not checked.")
    head = (f"{who}: {d:,} exits among {n:,} cohort firms in their cohort year ({expected:,.1f} expected at the "
            "comparison firms' rate)")
    before = check.get("exits_before_payment")
    paid = f"; {before:,} selected firms closed before they were paid" if before else ""
    if check.get("recipients_only"):
        p, att0, se0 = (check.get(k, np.nan) for k in ("pvalue_exits", "att_e0", "se_e0"))
        return (f"{head}{paid}: WARNING, the register looks like recipients only (so few exits has p = "
                f"{p:.2g}; first-year survival effect {att0:+.3f}, SE {se0:.3f}), so survival and net jobs are "
                "biased upward. Fix: list every selected firm, including those that closed before they were paid, "
                "with the year it was selected.")
    if d > 0:
        return f"{head}{paid}: the register lists firms that closed, as it should."
    return (f"{head}{paid}: no exit, but with so few firms that is not unusual at the comparison rate "
            f"(p = {check.get('pvalue_exits', np.nan):.2g}), so the register cannot be checked.")


def recipients_only_warning(checks: dict[str, dict[str, Any]]) -> str:
    """The page's warning when a programme register looks like recipients only ('' when none does)."""
    flagged = [pt for pt, c in checks.items() if c.get("recipients_only")]
    if not flagged:
        return ""
    facts = [f"{value_label(pt)}: {checks[pt].get('exits_in_cohort_year', 0):,} exits among "
             f"{checks[pt].get('cohort_firms_alive_before', 0):,} cohort firms, "
             f"{checks[pt].get('expected_exits_at_comparison_rate', np.nan):,.1f} expected "
             f"(p = {checks[pt].get('pvalue_exits', np.nan):.2g})." for pt in flagged]
    return (f"The programme register of {in_words(flagged)} looks like a list of recipients only: no selected "
            "firm closes in its cohort year, far fewer than the comparison firms' exit rate predicts. Firms that "
            "closed before they were paid seem to be missing, so the survival and net-jobs effects below are "
            "biased upward. Fix: list every selected firm with the year it was selected, including those that "
            "closed before payment. " + " ".join(facts))


_CLUSTER_WORDS = {"psu": "the survey's primary sampling unit (PSU): the default when the panel has one; "
                         "firms are nested in PSUs", "firm_id": "the firm"}


def cluster_words(cluster: Any) -> str:
    """'psu' -> the survey's primary sampling unit (PSU); None/'' -> the firm."""
    if cluster is None or cluster == "" or (isinstance(cluster, float) and not np.isfinite(cluster)):
        return "the firm"
    return _CLUSTER_WORDS.get(str(cluster), _lower_first(value_label(cluster)))


def _choice_text(key: str, value: Any, choices: dict[str, Any]) -> Any:
    """One estimation choice in words (see `readable_choices`)."""
    if key in ("covariates_robustness", "survival_covariates", "eligible_sizes", "programme_types", "outcomes",
               "subgroups", "subgroup_outcomes"):
        text = in_words(value or [])
        return text[:1].upper() + text[1:]
    if key == "cluster":
        first = str(value).split(" ", 1)[0]
        return "Primary sampling unit (PSU) of the survey" if first == "psu" else \
            "Firm" if value is None or first == str(choices.get("unit", "firm_id")) else value_label(first)
    if key == "recipients_only":
        return "Yes: see the warning at the top of the page" if value else "No"
    if key == "young_max_age":
        return f"{value} years or younger at baseline"
    return _CHOICE_WORDS.get(key, {}).get(bool(value) if key == "weight" else str(value).split(" ", 1)[0],
                                          value_label(value))


_CHOICE_WORDS: dict[str, dict[Any, str]] = {
    "estimator": {"Callaway-Sant'Anna": "Callaway and Sant'Anna (2021) staggered difference-in-differences; "
                                        "survival and net jobs on firms alive in the year before support"},
    "estimand": {"sample": "Sample ATT: the unweighted average effect on the supported firms in the sample "
                           "(with a survey weight, the population ATT is shown beside it)"},
    "cohort_survival_jobs": {"year": "Year each firm was selected: every selected firm (intention to treat)",
                             "first_treated": "First year supported: the register must list every selected firm, "
                                              "including those that closed before payment (see the register check)"},
    "weight": {False: "None: effects are unweighted sample averages",
               True: "Each firm's survey weight in its first observed year (every headline outcome)"},
    "sample_rule": {"per": "For each programme type: its supported firms and the never-supported eligible firms"},
    "pretrend_rule": {"a": "A page says pre-support trends differ only when a Holm-adjusted pre-trend p-value "
                           "(over the headline tests) is below alpha"},
}
_CHOICE_NAMES = {"control": "Comparison group", "covariates_robustness": "Covariates (robustness row)",
                 "survival_covariates": "Exit drivers (survival and net jobs)",
                 "eligible_sizes": "Eligible firm sizes (at baseline)", "cluster": "Standard errors clustered by",
                 "alpha": "Significance level (alpha)", "cohort_survival_jobs": "Cohort of survival and net jobs",
                 "young_max_age": "Young firms", "weight": "Survey weight", "sample_rule": "Sample",
                 "pretrend_rule": "Pre-trend rule", "recipients_only": "Register looks like recipients only"}


def readable_choices(choices: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's ``choices`` in a reviewer's words, for a page: every value a sentence or a list
    joined in words through the label map (no Python list/dict reprs, no column names), the register
    check as one sentence per programme type (`register_sentence`) in one row. The numbers are those
    of ``choices``."""
    out: dict[str, Any] = {}
    for key, value in choices.items():
        if key == "register_check":
            sentences = [register_sentence(pt, check) for pt, check in (value or {}).items()]
            out["Register check"] = " ".join(sentences) or "Not run (no survival or net-jobs estimate)"
            continue
        out[_CHOICE_NAMES.get(key, key.replace("_", " ").capitalize())] = _choice_text(key, value, choices)
    return out


def who_counted(firms_counted: Any) -> str:
    """Short words (one table line) for a result's ``firms_counted``: selected firms alive at g - 1
    (survival, net jobs) or the supported firms of the estimation sample (growth, employees); the
    table note (`estimand_note`) says it in full."""
    text = "" if firms_counted is None else str(firms_counted)
    if "g - 1" in text:
        return "selected, alive year before"
    return "supported, in the sample" if text else "–"


def estimand_note(headline: pd.DataFrame) -> str:
    """The estimand and clustering of a headline table, said once (for a caption note)."""
    est = set(headline.get("estimand", pd.Series(dtype=str)).dropna().astype(str))
    sample = "sample ATT" if all("sample ATT" in e for e in est) else "ATT"
    clus = sorted({cluster_words(c) for c in headline.get("cluster", pd.Series(dtype=object))})
    return (f"Estimand: {sample}, the unweighted average effect on the supported firms in the sample; survival "
            "and net jobs count every selected firm alive the year before support (intention to treat), the "
            "other outcomes the supported firms observed before and after support. Standard errors clustered by "
            f"{in_words(clus) if clus else 'the firm'}.")


def _row(res: DidResult, outcome: str, pt: str, spec: str = "main") -> dict[str, Any]:
    o, pre, n = res.overall, res.pretrend, res.counts
    return {"outcome": outcome, "programme_type": pt, "spec": spec, "att": o.estimate, "se": o.se,
            "ci_low": o.ci_low, "ci_high": o.ci_high, "pvalue": o.pvalue, "n_units": n["n_units"],
            "n_treated": n["n_treated"], "n_never_treated": n["n_never_treated"], "n_cohorts": n["n_cohorts"],
            "pretrend_stat": pre.stat, "pretrend_df": pre.df, "pretrend_pvalue": pre.pvalue,
            "pretrend_reference": pre.reference, "control": res.choices["control"], "method": res.choices["method"],
            "covariates": ",".join(res.choices["covariates"]), "estimand": res.choices.get("estimand", ""),
            "firms_counted": res.choices.get("firms_counted", ""),
            "cluster": res.choices.get("cluster") or res.choices.get("unit")}


POPULATION_COLUMNS = ("att_population", "se_population", "ci_low_population", "ci_high_population",
                      "pvalue_population")


def _population_columns(res: DidResult | None) -> dict[str, Any]:
    """The population-weighted ATT beside the sample ATT (NaN when not estimated)."""
    if res is None:
        return dict.fromkeys(POPULATION_COLUMNS, np.nan) | {"estimand_population": ""}
    o = res.overall
    return dict(zip(POPULATION_COLUMNS, (o.estimate, o.se, o.ci_low, o.ci_high, o.pvalue))) | {
        "estimand_population": res.choices.get("estimand", "")}


def interpret(row: pd.Series | dict[str, Any], alpha: float = 0.05) -> str:
    """Plain-language reading of one headline row that states CI, significance and the assumption."""
    r = dict(row)
    lvl = int(round(100 * (1 - alpha)))
    label = OUTCOMES.get(r["outcome"], ("", r["outcome"]))[1]
    pt = r["programme_type"]
    who = "all supported firms" if pt == "all" else f"firms supported by {value_label(pt).lower()} programmes"
    if not np.isfinite(r["att"]) or not np.isfinite(r["se"]):
        return f"{label}, {who}: no estimate (too few firms or periods)."
    def fmt(v: float) -> str:
        if r["outcome"].startswith("log_"):
            return f"{100 * v:+.1f} log points (about {100 * np.expm1(v):+.1f}%)"
        if r["outcome"] == "survival":
            return f"{100 * v:+.1f} percentage points"
        return f"{v:+.2f}"
    est = f"{fmt(r['att'])} ({lvl}% CI {fmt(r['ci_low'])} to {fmt(r['ci_high'])})"
    ptxt_ = "p < 0.001" if r["pvalue"] < 0.001 else f"p = {r['pvalue']:.3f}"
    if r["pvalue"] < alpha:
        sig = (f"The interval excludes zero ({ptxt_}): the data are not consistent with no effect at the "
               f"{100 * alpha:g}% significance level")
    else:
        sig = (f"The interval includes zero ({ptxt_}): the data cannot distinguish this from no effect, "
               "which is not evidence that the effect is zero")
    pre = r.get("pretrend_pvalue", np.nan)
    adj = r.get("pretrend_pvalue_holm", pre)  # Holm-adjusted over the headline tests (family-wise)
    adj = pre if adj is None or not np.isfinite(adj) else adj
    if np.isfinite(pre):
        ptxt = (f"Pre-support trends of supported and comparison firms differ (pre-trend test p = {pre:.3f}, "
                f"{adj:.3f} after Holm's adjustment for the number of tests); treat the estimate with caution."
                if adj < alpha else
                f"Before support, the two groups moved in parallel (pre-trend test p = {pre:.2f}"
                + (f", Holm-adjusted {adj:.2f}" if adj != pre else "")
                + "), which is consistent with, but cannot prove, the assumption.")
    elif r["outcome"] in ("survival", "jobs"):
        ptxt = ("Outcomes that include exit are compared among firms alive in the year before support, "
                "adjusting for the characteristics that drive exit; no pre-support trend test is possible, "
                "so this rests on having measured those characteristics.")
    else:
        ptxt = "No pre-support years were available to check parallel trends."
    return (f"{label}, {who}: the average effect in the years after support is estimated at {est}. {sig}. "
            f"This rests on parallel trends: without support, supported firms' outcomes would have evolved "
            f"like those of the comparison firms. {ptxt}")


def six_steps(control: str, headline: pd.DataFrame, pretrend_ok: bool) -> dict[str, str]:
    """OECD Six Steps to Heaven level of the design actually estimated (domain.md section 5).

    Step IV compares assisted firms with typical (unmatched) non-assisted firms; step V with
    matched ones. A headline estimate is "matched" only when it conditions on baseline
    characteristics (doubly robust / IPW reweighting: the ``covariates`` column is not empty); an
    unconditional difference-in-differences removes fixed differences but matches on nothing, so
    it is step IV. Mixed headlines get both, per outcome. Step VI needs randomisation, a
    discontinuity or an instrument, which no estimator here uses.
    """
    covs = headline["covariates"].fillna("").astype(str) if "covariates" in headline else pd.Series(dtype=str)
    conditional = sorted(set(headline.loc[covs != "", "outcome"])) if len(covs) else []
    unconditional = sorted(set(headline.loc[covs == "", "outcome"])) if len(covs) else []
    ctrl = "never-supported" if control == "never_treated" else "not-yet-supported"
    if conditional and not unconditional:
        step, name = "V", (f"comparison with matched non-assisted firms ({ctrl} firms reweighted on "
                           "baseline characteristics)")
    elif conditional:
        step, name = "IV-V", (f"comparison with {ctrl} firms: unmatched for {in_words(unconditional)}; "
                              f"reweighted on baseline characteristics for {in_words(conditional)}")
    else:
        step, name = "IV", f"comparison with typical (unmatched) non-assisted firms ({ctrl} firms)"
    reason = (f"Supported firms are compared with {ctrl} firms followed before and after support; the "
              "difference-in-differences removes fixed differences between the groups"
              + ("" if conditional else ", but the comparison firms are not matched or reweighted on their "
                 "characteristics (the robustness table shows the doubly robust estimate that is)")
              + ". Step VI requires dealing with selection on changing unobservables (randomisation, a "
              "discontinuity or an instrument), which this design does not.")
    if not pretrend_ok:
        reason += " Pre-support trends differ for at least one headline estimate, which weakens the comparison."
    return {"step": step, "name": name, "reason": reason,
            "maryland_sms": "3 (difference-in-differences with a comparison group)"}


@dataclass
class Evaluation(_SettingsFace):
    """Results of :func:`evaluate`: tidy tables, event studies and text. See ``summary()``.

    The tables keep the column ``att`` (read by the report layer); ``tidy()`` gives the common
    vocabulary (``estimate``, se, ci_low, ci_high, pvalue). ``headline`` carries the raw pre-trend
    p-value and its Holm adjustment over the headline tests (``pretrend_pvalue_holm``).
    """

    headline: pd.DataFrame
    robustness: pd.DataFrame
    inclusion: pd.DataFrame
    inclusion_tests: pd.DataFrame
    inclusion_shares: pd.DataFrame
    jobs: pd.DataFrame
    event_studies: dict[tuple[str, str], pd.DataFrame]
    pretrends: pd.DataFrame
    six_steps: dict[str, str]
    interpretation: pd.DataFrame
    settings: dict[str, Any]
    notes: Notes = field(default_factory=Notes)
    results: dict[tuple[str, str], DidResult] = field(default_factory=dict, repr=False)

    title = "Impact evaluation (Callaway-Sant'Anna staggered DiD)"

    @property
    def recipients_only(self) -> bool:
        """True when a survival register check says the register looks like recipients only (the page
        shows it: survival and net jobs are then biased upward; see ``choices["register_check"]``)."""
        return bool(self.settings.get("recipients_only", False))

    def tidy(self) -> pd.DataFrame:
        """Headline, robustness and inclusion effects in one long table (column ``table``), with the
        common columns estimate, se, ci_low, ci_high, pvalue."""
        parts = [self.headline.assign(table="headline"), self.robustness.assign(table="robustness"),
                 self.inclusion.assign(table="inclusion")]
        return pd.concat(parts, ignore_index=True).rename(columns={"att": "estimate"})

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Forest plot of the headline effects (see :meth:`plot_headline`)."""
        return self.plot_headline(ax=ax, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        def recs(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                    for r in df.to_dict(orient="records")]
        return {"headline": recs(self.headline), "robustness": recs(self.robustness),
                "inclusion": recs(self.inclusion), "inclusion_tests": recs(self.inclusion_tests),
                "inclusion_shares": recs(self.inclusion_shares), "jobs": recs(self.jobs),
                "six_steps": self.six_steps, "choices": self.choices, "notes": list(self.notes)}

    def plot_event_study(self, outcome: str = "log_turnover", programme_type: str = "all", ax: Any = None,
                         twfe_baseline: bool = False) -> Any:
        """Event study for one outcome and programme type, with the pre-trend test annotated."""
        key = (outcome, programme_type)
        if key not in self.results:
            raise KeyError(f"no event study for {key}; available: {sorted(self.results)}")
        ax = self.results[key].plot(ax=ax)
        if twfe_baseline and key in self.event_studies and "twfe" in self.event_studies[key].attrs:
            event_study_plot(self.event_studies[key].attrs["twfe"], ax=ax, color="C3", offset=0.15,
                             label="TWFE event study (biased if effects vary)")
        return ax

    def plot_headline(self, outcome: str | None = None, ax: Any = None) -> Any:
        """Forest plot of headline ATTs with CIs by outcome and programme type."""
        import matplotlib.pyplot as plt

        h = self.headline if outcome is None else self.headline[self.headline["outcome"] == outcome]
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.35 * len(h) + 1))
        y = np.arange(len(h))[::-1]
        ax.errorbar(h["att"], y, xerr=[h["att"] - h["ci_low"], h["ci_high"] - h["att"]], fmt="o", capsize=3)
        ax.set_yticks(y, [f"{o} | {p}" for o, p in zip(h["outcome"], h["programme_type"])])
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_xlabel(f"ATT with {int(round(100 * (1 - self.choices['alpha'])))}% CI")
        return ax

    def summary(self) -> str:
        cols = [c for c in _SHOW if c in self.headline.columns]
        lines = ["Impact evaluation (Callaway-Sant'Anna staggered DiD)",
                 f"Design: OECD Six Steps level {self.six_steps['step']} ({self.six_steps['name']}); "
                 f"Maryland SMS {self.six_steps['maryland_sms']}", self.six_steps["reason"], "",
                 self.headline[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"), "",
                 *self.interpretation["text"].tolist()]
        if len(self.jobs):
            lines += ["", "Cost per job (support spent / net jobs created, net jobs averaged over the post-support "
                      "years observed; Fieller interval):", *[f"- {cost_text(r)}" for _, r in self.jobs.iterrows()]]
            if "horizon_e" in self.jobs:
                e = int(self.jobs["horizon_e"].iloc[0])
                keys = ("cost_per_job", "cost_ci_low", "cost_ci_high", "cost_ci_note")
                fixed = [{"programme_type": r["programme_type"], "currency": r["currency"],
                          **{k: r[f"{k}_e"] for k in keys}} for _, r in self.jobs.iterrows()]
                lines += [f"Cost per job at a fixed horizon ({e} years after the cohort year; cohorts observed then):",
                          *[f"- {cost_text(r)}" for r in fixed]]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cols = [c for c in _SHOW if c in self.headline.columns]
        return (f"<div><b>Impact evaluation</b><p>OECD Six Steps level {self.six_steps['step']}: "
                f"{html.escape(self.six_steps['reason'])}</p>"
                + self.headline[cols].to_html(index=False, float_format=lambda x: f"{x:.4f}")
                + "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in self.interpretation["text"]) + "</ul></div>")


def _fit(frame: pd.DataFrame, outcome: str, **kw: Any) -> DidResult | None:
    """did() or, for survival, survival_did(); None (and the reason in ``notes``) if refused."""
    notes = kw.pop("notes")
    surv_covs = kw.pop("survival_covariates", None)
    selected = kw.pop("selected", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if outcome in ("survival", "jobs"):
                # outcomes that include exit: compare firms alive in the year before support (survival.py)
                kw.pop("control", None)
                covs = kw.pop("covariates", surv_covs)
                kw.pop("method", None)
                return survival_did(frame, alive="alive", outcome=outcome, covariates=covs, selected=selected, **kw)
            if selected:  # growth/employees: paid cohorts; selected-but-never-paid firms are no controls
                frame = frame[~(frame[selected].notna() & frame["first_treated"].isna())]
            return did(frame, outcome, **kw)
        except ImpactInputError as exc:
            notes.append(f"{outcome}: not estimated ({exc})")
            return None


def evaluate(
    panel: pd.DataFrame,
    *,
    programme_type: str | Sequence[str] | None = None,
    outcomes: Sequence[str] | None = None,
    control: str = "never_treated",
    covariates: Sequence[str] | None = None,
    survival_covariates: Sequence[str] | None = None,
    eligible_sizes: Sequence[str] | None = ("micro", "small", "medium"),
    cluster: str | None = "auto",
    macro: pd.DataFrame | None = None,
    subgroups: Sequence[str] | None = tuple(SUBGROUPS),
    subgroup_outcomes: Sequence[str] = CORE_SUBGROUP,
    robustness: bool = True,
    alpha: float = 0.05,
    unit: str = "firm_id",
    time: str = "year",
    weight: str | None = None,
) -> Evaluation:
    """Growth, jobs, survival and inclusion effects per programme type and overall.

    ``programme_type``: None = every type in the data plus "all"; or one type / a list.
    ``eligible_sizes``: comparison firms must be eligible for MSME support; by default firms whose
    baseline size class is "large" are left out (they are never supported and follow different
    trends). None keeps every firm.
    ``covariates``: baseline covariates for the robustness row "with covariates" (default
    owner_female, rural, baseline_log_employees, baseline_age where available).
    ``survival_covariates``: the exit-hazard drivers survival comparisons condition on (default:
    size dummies, registered, large-sector dummies, age at support <= 2 and <= 5 years).
    ``macro`` (country, year, usd_per_lcu) converts support to USD for cost per job; without it
    cost per job is in local currency and only computed when the sample has a single country.
    ``subgroups``: inclusion breakdowns (women-owned, rural, micro, young), estimated within the
    subgroup (supported and comparison firms of that group) for ``subgroup_outcomes``.
    Main estimates: ``control`` comparison firms, no covariates (survival: with
    ``survival_covariates``). ``cluster``: "auto" (default) clusters SEs by the survey's primary
    sampling unit ``psu`` when the panel carries one (each firm's baseline PSU), else by firm; None
    = by firm; or a column name. The choice is in ``choices["cluster"]`` and each row's ``cluster``.
    ``selected_year`` in the panel (year selected; DESIGN.md section 3): survival and net jobs are
    then intention-to-treat effects on every selected firm (cohort = year selected); growth and
    employees keep paid cohorts (``first_treated``) and leave selected-but-never-paid firms out.
    ``choices["register_check"]`` / ``recipients_only`` flag a register that looks like recipients
    only (:func:`msme_eval.impact.survival.register_check`).

    ``weight``: a survey-weight column of ``panel`` for population-weighted effects (ATT for the
    population of supported firms the sample represents), reported BESIDE the sample ATT: the
    headline ``att`` is always the unweighted sample ATT (column ``estimand``) and, with ``weight``,
    ``att_population`` (+ se, ci, p; ``estimand_population``) the weighted one. DiD needs one time-invariant weight per
    firm, so each firm gets its weight in its REFERENCE PERIOD = its first observed (baseline) year,
    w_i = weight_{i, first year}, used in every year (sample weights that change within a firm,
    e.g. from non-response adjustment, would otherwise re-weight the before/after comparison).
    Each ATT(g,t) is then the w-weighted DiD of Callaway-Sant'Anna (R ``did``'s ``weightsname``;
    diff-diff's SurveyDesign(weights=...)) and aggregations use weighted cohort masses
    p_g = sum_{i in g} w_i / sum_i w_i. Survival and net jobs (:func:`survival_did`) are weighted
    the same way on each cohort's firms alive in g - 1 (Hajek cells, weighted cohort shares).
    Without ``weight`` every estimate is the unweighted sample ATT.
    """
    frame, notes = build_outcomes(panel, unit=unit, time=time)
    frame = _reference_weight(frame, panel, weight, unit, time, notes)
    frame = _eligible_only(frame, eligible_sizes, unit, notes)
    pts = _programme_types(frame, programme_type)
    outs = _outcome_list(frame, outcomes)
    covs = _robustness_covariates(frame, covariates)
    scovs = _survival_covariates(frame, survival_covariates)
    cluster, cluster_text = _cluster_choice(frame, cluster, unit)
    selected = "selected_year" if "selected_year" in frame and frame["selected_year"].notna().any() else None
    base_kw = {"unit": unit, "time": time, "cluster": cluster, "alpha": alpha, "notes": notes,
               "survival_covariates": scovs, "selected": selected}
    usd = _support_usd(frame, macro, time)
    run = _Run(base_kw=base_kw, control=control, covs=covs, alpha=alpha, unit=unit, time=time, cluster=cluster,
               usd=usd is not None, single_country="country" not in frame or frame["country"].nunique() == 1,
               weight="_w_ref" if weight is not None else None, selected=selected)
    for pt in pts:
        treated = frame["first_treated"].notna() | (frame[selected].notna() if selected else False)
        sample = frame if pt == "all" else frame[~treated | (frame["programme_type"].astype("str") == pt)]
        for o in outs:
            _outcome_rows(run, sample, o, pt, robustness)
        for sg in subgroups or ():
            if sg in sample and not sample[sg].isna().all():
                _subgroup_rows(run, sample, sg, pt, [x for x in subgroup_outcomes if x in outs])
    settings = {"estimator": "Callaway-Sant'Anna via msme_eval.impact.did (survival: survival_did)",
                "control": control, "covariates_robustness": covs, "survival_covariates": scovs,
                "eligible_sizes": list(eligible_sizes) if eligible_sizes is not None else None,
                "cluster": cluster_text, "alpha": alpha, "programme_types": pts, "outcomes": outs,
                "estimand": "sample ATT (unweighted) on supported firms; with weight also the population ATT",
                "cohort_survival_jobs": ("year selected (selected_year): every selected firm, intention to treat"
                                         if selected else "first_treated (the register must list every selected "
                                         "firm; see register_check)"),
                "subgroups": list(subgroups or ()), "subgroup_outcomes": list(subgroup_outcomes),
                "young_max_age": YOUNG_MAX_AGE,
                "weight": (f"{weight} in each firm's first observed year (every headline outcome)"
                           if weight is not None else None),
                "sample_rule": "per programme type: its supported firms + never-supported eligible firms",
                "pretrend_rule": "a page says 'trends differ' only if a Holm-adjusted pre-trend p-value "
                                 "(over the headline tests) is below alpha"}
    return _assemble(run, settings, [*notes, *_closing_notes(run.results, settings)])


def _cluster_choice(frame: pd.DataFrame, cluster: str | None, unit: str) -> tuple[str | None, str]:
    """Resolve ``cluster="auto"``: the survey PSU (each firm's baseline ``psu``) when every firm has
    one and there are >= 2, else the firm. Returns (column or None, text for ``choices``)."""
    if cluster != "auto":
        return cluster, (f"{cluster} (as requested)" if cluster else f"{unit} (firm-level influence function)")
    if "psu" in frame and frame["psu"].notna().all() and frame["psu"].nunique() >= 2:
        return "psu", "psu (survey primary sampling unit, default when the panel has one; firms nested in PSUs)"
    return None, f"{unit} (no psu column in the panel; firm-level influence function)"


def _register_flag(results: dict[tuple[str, str], DidResult], settings: dict[str, Any], notes: list[str]) -> None:
    """Collect the survival register checks; a page shows ``settings["recipients_only"]``."""
    checks: dict[str, dict[str, Any]] = {}
    for (o, pt), r in sorted(results.items(), key=lambda kv: kv[0][0] != "survival"):
        if o in ("survival", "jobs") and pt not in checks:  # survival's check first, else net jobs'
            checks[pt] = r.register_check  # type: ignore[attr-defined]
    settings["register_check"] = checks
    flagged = sorted(pt for pt, c in checks.items() if c.get("recipients_only"))
    settings["recipients_only"] = bool(flagged)
    if flagged:
        notes.append("WARNING: the programme register looks like recipients only (no selected firm exits in its "
                     f"cohort year; {in_words(flagged)}): survival and net jobs are biased upward. Fix: list "
                     "every selected firm, including those that closed before they were paid, with selected_year.")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, controlling the family-wise error rate.

    With the m finite p-values sorted p_(1) <= ... <= p_(m): p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j));
    missing (NaN) p-values stay NaN and do not count in m. Reference: Holm, S. (1979) "A simple
    sequentially rejective multiple test procedure", Scandinavian Journal of Statistics 6(2), 65-70.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


@dataclass
class _Run:
    """What evaluate() collects while it loops over programme types, outcomes and subgroups."""

    base_kw: dict[str, Any]
    control: str
    covs: list[str]
    alpha: float
    unit: str
    time: str
    cluster: str | None
    usd: bool
    single_country: bool
    weight: str | None = None
    selected: str | None = None
    head: list[dict[str, Any]] = field(default_factory=list)
    rob: list[dict[str, Any]] = field(default_factory=list)
    incl: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    shares: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    ess: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    results: dict[tuple[str, str], DidResult] = field(default_factory=dict)


def _reference_weight(frame: pd.DataFrame, panel: pd.DataFrame, weight: str | None, unit: str, time: str,
                      notes: list[str]) -> pd.DataFrame:
    """Each firm's survey weight in its first observed year, held fixed (column ``_w_ref``)."""
    if weight is None:
        return frame
    require_columns(panel, [weight, unit, time], "evaluate(weight=...)")
    first = panel.sort_values([unit, time]).groupby(unit, sort=False)[weight].first()
    w_ref = pd.to_numeric(frame[unit].map(first))
    if w_ref.isna().any() or (w_ref <= 0).any():
        raise ImpactInputError(f"weight {weight!r}: every firm needs a positive weight in its first observed year.")
    frame["_w_ref"] = w_ref.to_numpy(dtype=float)
    notes.append(f"Population-weighted: each firm's survey weight {weight!r} in its first observed year "
                 "(reference period), held fixed across years; survival and net jobs weighted on each cohort's "
                 "firms alive in the year before support.")
    return frame


def _eligible_only(frame: pd.DataFrame, eligible_sizes: Sequence[str] | None, unit: str,
                   notes: list[str]) -> pd.DataFrame:
    if eligible_sizes is None or "size_class" not in frame:
        return frame
    bad = ~frame["size_class"].isin(list(eligible_sizes))
    n_firms = int(frame.loc[bad, unit].nunique())
    if n_firms:
        n_sup = int(frame.loc[bad & frame["first_treated"].notna(), unit].nunique())
        sizes = in_words(eligible_sizes, "or")
        notes.append(f"{n_firms} firm(s) with a baseline size class other than {sizes} left out "
                     f"(not eligible for MSME support; {n_sup} of them supported).")
        return frame[~bad]
    return frame


def _programme_types(frame: pd.DataFrame, programme_type: str | Sequence[str] | None) -> list[str]:
    types_all = sorted(frame["programme_type"].dropna().astype(str).unique()) if "programme_type" in frame else []
    if programme_type is None:
        return [*types_all, "all"]
    pts = [programme_type] if isinstance(programme_type, str) else list(programme_type)
    unknown = [p for p in pts if p != "all" and p not in types_all]
    if unknown:
        raise ImpactInputError(f"programme_type {unknown} not found; the data have {types_all} (or use 'all').")
    return pts


def _outcome_list(frame: pd.DataFrame, outcomes: Sequence[str] | None) -> list[str]:
    missing = [o for o in (outcomes or []) if o not in frame.columns]
    if missing:
        raise ImpactInputError(f"outcome(s) {missing} cannot be built from the panel (columns missing).")
    return [o for o in (outcomes or OUTCOMES) if o in frame.columns]


def _robustness_covariates(frame: pd.DataFrame, covariates: Sequence[str] | None) -> list[str]:
    if covariates is None:
        covariates = [c for c in ("owner_female", "rural", "baseline_log_employees", "baseline_age") if c in frame
                      and frame[c].notna().all()]
    for c in covariates:
        frame[c] = pd.to_numeric(frame[c].astype("Float64") if frame[c].dtype == "boolean" else frame[c])
    return list(covariates)


def _survival_covariates(frame: pd.DataFrame, survival_covariates: Sequence[str] | None) -> list[str]:
    if survival_covariates is not None:
        return list(survival_covariates)
    out = [c for c in ("size_micro", "size_small", "registered") if c in frame
           and frame[c].notna().all() and frame[c].nunique() > 1]
    out += sorted(c for c in frame.columns if c.startswith("sector_"))
    if "birth_year" in frame and frame["birth_year"].notna().all():
        out += ["age_at_support_le2", "age_at_support_le5"]
    return out


def _support_usd(frame: pd.DataFrame, macro: pd.DataFrame | None, time: str) -> np.ndarray | None:
    """Support converted to USD with ``macro``'s usd_per_lcu (column ``support_usd``), or None."""
    if macro is None or "country" not in frame:
        return None
    require_columns(macro, ["country", "year", "usd_per_lcu"], "evaluate(macro=...)")
    rate = macro.set_index(["country", "year"])["usd_per_lcu"]
    usd = frame["support_amount"].to_numpy() * rate.reindex(
        pd.MultiIndex.from_arrays([frame["country"], frame[time]])).to_numpy()
    frame["support_usd"] = usd
    return usd


def _outcome_rows(run: _Run, sample: pd.DataFrame, o: str, pt: str, robustness: bool) -> None:
    """Headline, event study, robustness and jobs rows of one outcome and programme type."""
    res = _fit(sample, o, control=run.control, **run.base_kw)
    if res is None:
        return
    run.results[(o, pt)] = res
    row = _row(res, o, pt)
    pop = None
    if run.weight is not None:
        pop = _fit(sample, o, control=run.control, weight=run.weight, **run.base_kw)
        row.update(_population_columns(pop))
    run.head.append(row)
    run.ess[(o, pt)] = res.event_study
    if robustness and o in CORE:
        run.rob.append(row)
        _robustness_rows(run, sample, o, pt, res)
    if o == "jobs":
        _jobs_row(run, sample, pt, res, pop)


def _robustness_rows(run: _Run, sample: pd.DataFrame, o: str, pt: str, res: DidResult) -> None:
    kw = run.base_kw
    if o in ("survival", "jobs"):
        alt = [("without covariates (unconditional)", _fit(sample, o, covariates=[], **kw))]
    else:
        other = "not_yet_treated" if run.control == "never_treated" else "never_treated"
        alt = [(f"{other} controls", _fit(sample, o, control=other, **kw)),
               ("with covariates (doubly robust)",
                _fit(sample, o, control=run.control, covariates=run.covs, method="dr", **kw) if run.covs else None)]
    run.rob += [_row(r2, o, pt, spec) for spec, r2 in alt if r2 is not None]
    if o in ("survival", "jobs"):
        return
    s2 = sample.assign(_d=((sample[run.time] >= sample["first_treated"]).fillna(False)).astype(float))
    try:
        tw = twfe(s2, o, "_d", unit=run.unit, time=run.time, cluster=run.cluster, alpha=run.alpha)
    except Exception as exc:  # a pyfixest failure is reported, not hidden
        kw["notes"].append(f"TWFE for {o} / {pt} failed: {exc}")
        return
    e = tw.tidy().set_index("term").loc["_d"]
    run.rob.append({"outcome": o, "programme_type": pt, "spec": "TWFE (static, baseline)", "att": e["estimate"],
                    **{k: e[k] for k in ESTIMATE_COLUMNS[1:]},
                    "n_units": res.counts["n_units"], "n_treated": res.counts["n_treated"],
                    "control": "all other firm-years", "method": "ols"})


FIXED_HORIZON = 2  # event time of the fixed-horizon cost per job (years after the cohort year)


def _support_spent(run: _Run, sample: pd.DataFrame, cohorts: Sequence[Any] | None = None) -> tuple[float, str]:
    """Support spent on the selected firms of the sample (of ``cohorts`` only, if given) and its currency."""
    coh = _cohort_column(sample, run.selected)
    sup = sample.loc[coh.notna() if cohorts is None else coh.isin(list(cohorts))]
    if not run.usd and not run.single_country:
        return np.nan, "n/a (several currencies; pass macro with usd_per_lcu)"
    return float(sup["support_usd"].sum() if run.usd else sup["support_amount"].sum()), ("USD" if run.usd else "LCU")


def _cohort_column(sample: pd.DataFrame, selected: str | None) -> pd.Series:
    """Each row's cohort as the survival/net-jobs estimator defines it (selected year, else first_treated)."""
    return sample[selected] if selected else sample["first_treated"]


def _fixed_horizon(run: _Run, sample: pd.DataFrame, res: Any, e: int = FIXED_HORIZON) -> dict[str, Any]:
    """Net jobs per firm at event time ``e`` (cohorts observed e years after their cohort year) and
    cost per job = support spent on those cohorts / (their firms counted x effect at e)."""
    es = res.event_study.set_index("event_time")
    counts = getattr(res, "cell_counts", None) or {}
    cells = [c for c in counts if int(c[1]) - int(c[0]) == e]
    if e not in es.index or not cells:
        return {"horizon_e": e, "net_jobs_per_firm_e": np.nan, "se_e": np.nan, "cost_per_job_e": np.nan,
                "cost_ci_low_e": np.nan, "cost_ci_high_e": np.nan, "n_supported_e": 0,
                "cost_ci_note_e": f"no cohort is observed {e} years after its cohort year"}
    r = es.loc[e]
    n_e = int(sum(counts[c][0] for c in cells))
    money, _ = _support_spent(run, sample, sorted({c[0] for c in cells}))
    c = _jobs_cost(float(r["estimate"]), (float(r["ci_low"]), float(r["ci_high"])), n_e, money)
    return {"horizon_e": e, "net_jobs_per_firm_e": float(r["estimate"]), "se_e": float(r["se"]),
            "n_supported_e": n_e, **{f"{k}_e": c[k] for k in ("cost_per_job", "cost_ci_low", "cost_ci_high",
                                                              "cost_ci_note", "jobs_created", "support_total")}}


def _jobs_row(run: _Run, sample: pd.DataFrame, pt: str, res: DidResult, pop: DidResult | None = None) -> None:
    """Net jobs and cost per job: average over the post-support years (the headline effect) and at a
    fixed horizon (``FIXED_HORIZON`` years after the cohort year); firms counted stated. With a
    survey weight, the population net jobs per firm beside it (``*_population``); cost per job
    stays on the sample (support spent and firms counted are the sample's)."""
    money, cur = _support_spent(run, sample)
    o_ = res.overall
    po = pop.overall if pop is not None else None
    population = {} if run.weight is None else {
        f"{k}_population": (getattr(po, a) if po is not None else np.nan)
        for k, a in (("net_jobs_per_firm", "estimate"), ("se", "se"), ("ci_low", "ci_low"), ("ci_high", "ci_high"))}
    run.jobs.append({"programme_type": pt, "net_jobs_per_firm": o_.estimate, "se": o_.se, "ci_low": o_.ci_low,
                     "ci_high": o_.ci_high, "n_supported": res.counts["n_treated"], "currency": cur,
                     "horizon": "average over the post-support years observed (simple aggregation)",
                     "firms_counted": res.choices.get("firms_counted", ""),
                     **_jobs_cost(o_.estimate, (o_.ci_low, o_.ci_high), res.counts["n_treated"], money),
                     **_fixed_horizon(run, sample, res), **population})


def _subgroup_rows(run: _Run, sample: pd.DataFrame, sg: str, pt: str, sub_outs: list[str]) -> None:
    """Inclusion: effects within each level of subgroup ``sg``, a test that they differ, shares reached."""
    by_level: dict[tuple[str, bool], dict[str, Any]] = {}
    flag = sample[sg].astype("boolean")
    for level in (True, False):
        sub = sample[flag.fillna(not level) == level]
        for o in sub_outs:
            if o == "survival" and sg == "young" and "birth_year" in sample:
                # age is defined at each cohort's support year, for supported and comparison firms
                rng_ = (-np.inf, YOUNG_MAX_AGE) if level else (YOUNG_MAX_AGE + 1, np.inf)
                r3 = _fit(sample, o, age_range=rng_, **run.base_kw)
            else:
                r3 = _fit(sub, o, control=run.control, **run.base_kw)
            if r3 is None:
                continue
            d = _row(r3, o, pt, "subgroup")
            d.update({"subgroup": sg, "level": bool(level),
                      "label": SUBGROUPS[sg] if level else f"not {SUBGROUPS[sg]}"})
            run.incl.append(d)
            by_level[(o, level)] = d
    for o in sub_outs:
        if (o, True) in by_level and (o, False) in by_level:
            run.tests.append(_difference_test(by_level[(o, True)], by_level[(o, False)], o, pt, sg, run.cluster))
    share = _shares(sample, sg, pt, run.unit, by_level)
    if share is not None:
        run.shares.append(share)


def _difference_test(a: dict[str, Any], b: dict[str, Any], o: str, pt: str, sg: str,
                     cluster: str | None) -> dict[str, Any]:
    diff = a["att"] - b["att"]
    se = float(np.hypot(a["se"], b["se"]))
    z = diff / se if se > 0 else np.nan
    return {"outcome": o, "programme_type": pt, "subgroup": sg, "difference": diff, "se": se, "z": z,
            "pvalue": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
            "test": "z-test of equal effects; the two groups are disjoint sets of firms"
                    + (" (clusters may overlap: conservative only if positively correlated)" if cluster else "")}


def _shares(sample: pd.DataFrame, sg: str, pt: str, unit: str,
            by_level: dict[tuple[str, bool], dict[str, Any]]) -> dict[str, Any] | None:
    sup = sample[sample["first_treated"].notna() & sample[sg].notna()]
    if not len(sup):
        return None
    firm = sup.groupby(unit).agg(flag=(sg, "first"), support=("support_amount", "sum"))
    jt, jf = by_level.get(("jobs", True)), by_level.get(("jobs", False))
    jobs_share = np.nan
    if jt and jf:
        jt_n, jf_n = jt["n_treated"] * jt["att"], jf["n_treated"] * jf["att"]
        if jt_n >= 0 and jf_n >= 0 and jt_n + jf_n > 0:
            jobs_share = jt_n / (jt_n + jf_n)
    fl = firm["flag"].astype(bool)
    comp = sample.loc[sample["first_treated"].isna()].groupby(unit)[sg].first().dropna().astype(bool)
    return {"programme_type": pt, "subgroup": sg, "label": SUBGROUPS[sg],
            "share_of_supported_firms": float(fl.mean()),
            "share_of_support": float(firm.loc[fl, "support"].sum() / firm["support"].sum())
            if firm["support"].sum() > 0 else np.nan,
            "share_of_jobs_created": jobs_share,
            "share_in_comparison_firms": float(comp.mean()) if len(comp) else np.nan}


def _assemble(run: _Run, settings: dict[str, Any], notes: list[str]) -> Evaluation:
    """The collected rows of one `evaluate` call as an `Evaluation` (`_evaluation`)."""
    tables = {"headline": pd.DataFrame(run.head), "robustness": pd.DataFrame(run.rob),
              "inclusion": pd.DataFrame(run.incl), "inclusion_tests": pd.DataFrame(run.tests),
              "inclusion_shares": pd.DataFrame(run.shares), "jobs": pd.DataFrame(run.jobs)}
    return _evaluation(tables, run.ess, run.results, settings, notes, run.control, run.alpha)


def _closing_notes(results: dict[tuple[str, str], DidResult], settings: dict[str, Any]) -> list[str]:
    """The notes that depend on every programme type at once: the register check (sets
    ``settings["register_check"]`` / ``["recipients_only"]``) and the survival/net-jobs design note."""
    notes: list[str] = []
    _register_flag(results, settings, notes)
    outs = settings.get("outcomes", ())
    if "survival" in outs or "jobs" in outs:
        notes.append("Survival and net jobs (exits counted as zero jobs): compared among firms alive in the year "
                     f"before support, conditioning on the exit drivers ({in_words(settings['survival_covariates'])}); "
                     "no pre-trend test and no TWFE baseline exist for these outcomes.")
    return notes


def _evaluation(tables: dict[str, pd.DataFrame], event_studies: dict[tuple[str, str], pd.DataFrame],
                results: dict[tuple[str, str], DidResult], settings: dict[str, Any],
                notes: list[str], control: str, alpha: float) -> Evaluation:
    """Tables with the Holm adjustment of the headline pre-trend tests; the page-level flag and each
    interpretation use the adjusted p-values (Holm 1979, see `holm`)."""
    headline = tables["headline"]
    if len(headline):
        headline["pretrend_pvalue_holm"] = holm(headline["pretrend_pvalue"].to_numpy())
    pretrend_ok = bool((headline["pretrend_pvalue_holm"].fillna(1) >= alpha).all()) if len(headline) else True
    pre_cols = ["outcome", "programme_type", "pretrend_stat", "pretrend_df", "pretrend_pvalue", "pretrend_pvalue_holm"]
    pretrends = (headline[pre_cols].rename(columns={"pretrend_stat": "stat", "pretrend_df": "df",
                                                    "pretrend_pvalue": "pvalue", "pretrend_pvalue_holm": "pvalue_holm"})
                 if len(headline) else pd.DataFrame())
    interp = [{"outcome": r["outcome"], "programme_type": r["programme_type"], "text": interpret(r, alpha)}
              for r in headline.to_dict("records")]
    return Evaluation(
        **tables, event_studies=event_studies, pretrends=pretrends,
        six_steps=six_steps(control, headline, pretrend_ok), interpretation=pd.DataFrame(interp),
        settings=settings, notes=notes, results=results,
    )


def combine(parts: Sequence[Evaluation]) -> Evaluation:
    """One `Evaluation` from `evaluate` calls on the same panel with the same options, each for its own
    programme types (disjoint, in the order one call would take them): equal to that one call.

    Every row of a programme type depends only on that type's sample, so the tables are concatenated in
    order; what depends on all headline tests at once is recomputed on the whole: the Holm adjustment of
    the pre-trend p-values, the page-level pre-trend flag, interpretations, the Six Steps level, the
    register check and its warning. Notes are the parts' notes in order, each once. Lets a runner fit
    each programme type on its own worker and still publish the numbers of the one call.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("combine() needs at least one Evaluation")
    if len(parts) == 1:
        return parts[0]
    names = ("headline", "robustness", "inclusion", "inclusion_tests", "inclusion_shares", "jobs")
    tables = {n: pd.concat([getattr(p, n) for p in parts], ignore_index=True) for n in names}
    tables["headline"] = tables["headline"].drop(columns="pretrend_pvalue_holm", errors="ignore")
    settings = {**parts[0].settings, "programme_types": [t for p in parts for t in p.settings["programme_types"]]}
    mismatch = sorted(k for p in parts[1:] for k in settings if k not in _PART_KEYS
                      and p.settings.get(k) != parts[0].settings.get(k))
    if mismatch:
        raise ValueError(f"combine(): the evaluations differ in {sorted(set(mismatch))}; combine only "
                         "calls on the same panel with the same options (other programme types)")
    notes: list[str] = []
    for p in parts:
        closing = _closing_notes(p.results, dict(p.settings))
        notes += [n for n in p.notes if n not in closing]
    results = {k: v for p in parts for k, v in p.results.items()}
    notes = [*dict.fromkeys(notes), *_closing_notes(results, settings)]
    return _evaluation(tables, {k: v for p in parts for k, v in p.event_studies.items()}, results,
                       settings, notes, settings["control"], settings["alpha"])


_PART_KEYS = ("programme_types", "register_check", "recipients_only")  # differ between the parts of combine
