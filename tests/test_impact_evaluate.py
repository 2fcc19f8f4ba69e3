"""evaluate(), build_outcomes() and survival_did(): planted truth (own DGP and msme_eval.synth)."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_impact_helpers import contract_panel

import msme_eval as me
from msme_eval.impact import build_outcomes, evaluate
from msme_eval.impact.evaluate import (
    estimand_note,
    in_words,
    readable_choices,
    recipients_only_warning,
    register_sentence,
    who_counted,
)
from msme_eval.impact.survival import survival_did
from msme_eval.plots import value_label
from msme_eval.report import summaries as S
from msme_eval.report.display import table

Z99 = stats.norm.ppf(0.995)


# ---------------------------------------------------------------- build_outcomes
def test_alive_indicator_keeps_exits_and_leaves_gaps_missing() -> None:
    p = pd.DataFrame({
        "firm_id": ["a", "a", "a", "b", "b", "c", "c", "c"],
        "year": [2015, 2016, 2017, 2015, 2017, 2016, 2017, 2018],
        "employees": [3, 4, 5, 2, 2, 7, 8, 9],
        "turnover": [10.0, 0.0, 12.0, 5.0, 6.0, 1.0, 1.0, 1.0],
        "first_treated": pd.array([pd.NA, pd.NA, pd.NA, 2017, 2017, pd.NA, pd.NA, pd.NA], dtype="Int64"),
    })
    f, notes = build_outcomes(p)
    a = f.set_index(["firm_id", "year"])
    # a exits after 2017 -> alive 0 in 2018, jobs 0; b has a gap in 2016 -> alive missing there
    assert a.loc[("a", 2018), "alive"] == 0 and a.loc[("a", 2018), "jobs"] == 0
    assert pd.isna(a.loc[("a", 2018), "employees"])
    assert pd.isna(a.loc[("b", 2016), "alive"]) and a.loc[("b", 2018), "alive"] == 0
    assert ("c", 2015) not in a.index  # firms enter in their first observed year
    assert pd.isna(a.loc[("a", 2016), "log_turnover"])  # log(0) -> missing, counted in notes
    assert any("zero or negative turnover have no log turnover" in n for n in notes)
    assert any("exit" in n for n in notes)
    assert len(f) == 4 + 4 + 3


# ---------------------------------------------------------------- survival estimator, hand truth
def test_survival_did_recovers_hazard_effect_by_event_time() -> None:
    """contract_panel: yearly exit hazard 6% unsupported, 3% from the first support year on, no
    selection. Among firms alive in g - 1: ATT(e) = 0.97^(e+1) - 0.94^(e+1)."""
    p, _ = contract_panel(n=6000, n_years=8, seed=1)
    f, _ = build_outcomes(p)
    r = survival_did(f)
    es = r.event_study.set_index("event_time")
    for e in range(0, 4):
        truth = 0.97 ** (e + 1) - 0.94 ** (e + 1)
        assert abs(es.loc[e, "estimate"] - truth) < Z99 * es.loc[e, "se"], (e, es.loc[e, "estimate"], truth)
    assert np.isnan(r.pretrend.pvalue) and r.pretrend.df == 0
    assert "year before support" in r.summary()


def test_survival_aggregations_are_consistent() -> None:
    p, _ = contract_panel(n=1500, n_years=7, seed=2)
    f, _ = build_outcomes(p)
    r = survival_did(f)
    cal = r.aggregate("calendar")
    assert cal["level"].iloc[-1] == "overall"
    assert cal["estimate"].iloc[-1] == pytest.approx(cal["estimate"].iloc[:-1].mean())
    grp = r.aggregate("group")
    gt = r.att_gt
    for _, row in grp[grp["level"] != "overall"].iterrows():
        assert row["estimate"] == pytest.approx(gt.loc[gt["cohort"] == row["level"], "estimate"].mean())


# ---------------------------------------------------------------- evaluate on own DGP
@pytest.fixture(scope="module")
def ev_own() -> me.impact.Evaluation:
    p, _ = contract_panel(n=3000, n_years=8, seed=3)
    return evaluate(p, subgroups=("owner_female", "micro"))


def test_evaluate_tables_and_planted_turnover(ev_own) -> None:
    h = ev_own.headline.set_index(["outcome", "programme_type"])
    # log turnover: 0.20 (finance) / 0.10 (market access) x (1 + 0.5 female); female share ~ 0.4
    for pt, beta in (("finance", 0.20), ("market_access", 0.10)):
        row = h.loc[("log_turnover", pt)]
        assert abs(row["att"] - beta * 1.2) < Z99 * row["se"] + 0.02  # female share is sampled
    assert {"outcome", "programme_type", "att", "se", "ci_low", "ci_high", "pvalue", "n_units"} <= set(h.reset_index())
    assert set(ev_own.robustness["spec"]) >= {"main", "not_yet_treated controls", "with covariates (doubly robust)",
                                              "TWFE (static, baseline)", "without covariates (unconditional)"}
    json.dumps(ev_own.to_dict(), default=str)


def test_evaluate_inclusion_detects_planted_female_difference(ev_own) -> None:
    t = ev_own.inclusion_tests.set_index(["outcome", "programme_type", "subgroup"])
    assert t.loc[("log_turnover", "finance", "owner_female"), "pvalue"] < 0.01   # +50% for women-owned
    s = ev_own.inclusion_shares
    assert s[["share_of_supported_firms", "share_of_support"]].apply(lambda c: c.between(0, 1)).all().all()


def test_jobs_cost_per_job_interval_brackets_estimate(ev_own) -> None:
    j = ev_own.jobs.set_index("programme_type")
    for pt in j.index:
        r = j.loc[pt]
        assert r["jobs_created"] == pytest.approx(r["n_supported"] * r["net_jobs_per_firm"])
        if r["jobs_ci_low"] > 0:
            assert r["cost_ci_low"] <= r["cost_per_job"] <= r["cost_ci_high"]
        else:
            assert np.isnan(r["cost_ci_high"]) and "not bounded" in r["cost_ci_note"]
        assert r["cost_per_job"] == pytest.approx(r["support_total"] / r["jobs_created"])
        assert r["currency"] == "LCU"


def test_interpretation_and_six_steps_do_not_overstate(ev_own) -> None:
    for text in ev_own.interpretation["text"]:
        assert "CI" in text and "parallel trends" in text
        assert "caused" not in text and "proves" not in text
    # the label follows the design estimated: unconditional growth estimates are step IV
    # (unmatched comparison firms); doubly robust ones with covariates step V
    h = ev_own.headline
    unconditional = set(h.loc[h["covariates"].fillna("") == "", "outcome"])
    conditional = set(h.loc[h["covariates"].fillna("") != "", "outcome"])
    expected = "IV-V" if unconditional and conditional else ("V" if conditional else "IV")
    assert ev_own.six_steps["step"] == expected
    if unconditional:
        assert "unmatched" in ev_own.six_steps["name"] and "matched non-assisted" not in ev_own.six_steps["name"]
    assert "Step VI" in ev_own.six_steps["reason"]
    assert "Six Steps" in ev_own.summary()


def test_interpret_insignificant_wording() -> None:
    row = {"outcome": "employees", "programme_type": "all", "att": 0.1, "se": 0.2, "ci_low": -0.29,
           "ci_high": 0.49, "pvalue": 0.62, "pretrend_pvalue": 0.5}
    text = me.impact.interpret(row)
    assert "includes zero" in text and "not evidence that the effect is zero" in text


def test_evaluate_plots(ev_own) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = ev_own.plot_event_study("log_turnover", "finance")
    assert any("Pre-trend" in t.get_text() for t in ax.texts)
    ev_own.plot_headline("log_turnover")
    plt.close("all")


# ---------------------------------------------------------------- evaluate against msme_eval.synth truth
@pytest.fixture(scope="module")
def synth_run() -> tuple[me.impact.Evaluation, pd.DataFrame]:
    synth = pytest.importorskip("msme_eval.synth")
    data = synth.generate(n_firms=12_000, seed=1)
    ev = evaluate(data.panel, outcomes=["log_turnover", "employees", "survival"], robustness=False,
                  subgroups=("owner_female", "rural", "micro", "young"), macro=data.macro)
    return ev, data.truth


# synth truth level -> (subgroup, level) in Evaluation.inclusion
SYNTH_LEVELS = {"owner_female=True": ("owner_female", True), "owner_female=False": ("owner_female", False),
                "urban=False": ("rural", True), "size_class=micro": ("micro", True), "young=True": ("young", True)}


def assert_subgroups_recovered(ev, truth, fwer: float = 0.01) -> int:
    """Every planted subgroup effect (synth .truth, aggregation "subgroup") that evaluate() estimated
    is within z* SE of the truth, z* = Bonferroni critical value for the K checks at family-wise
    level ``fwer``: with 40+ checks per sample, per-check 99% intervals would fail on about a third
    of the seeds by chance alone (60-seed study, n = 12,000: |z| > 2.576 in 0.9% of 2,880 checks,
    the largest |z| per seed up to 3.6). Returns K."""
    sub = truth[truth["aggregation"] == "subgroup"]
    inc = ev.inclusion.set_index(["outcome", "programme_type", "subgroup", "level"])
    pairs = []
    for _, r in sub[sub["level"].isin(SYNTH_LEVELS)].iterrows():
        key = (r["outcome"], r["programme_type"], *SYNTH_LEVELS[r["level"]])
        if key in inc.index:
            pairs.append((key, float(inc.loc[key, "att"]), float(inc.loc[key, "se"]), float(r["att"])))
    z_crit = stats.norm.ppf(1 - fwer / (2 * len(pairs)))
    bad = [(k, a, t, (a - t) / s) for k, a, s, t in pairs if not abs(a - t) < z_crit * s]
    assert not bad, (z_crit, bad)
    return len(pairs)


def test_synth_headline_effects_recovered(synth_run) -> None:
    ev, truth = synth_run
    tr = truth[truth["aggregation"] == "simple"].set_index(["outcome", "programme_type"])["att"]
    h = ev.headline.set_index(["outcome", "programme_type"])
    checked = 0
    for key, row in h.iterrows():
        if key in tr.index:
            assert abs(row["att"] - tr[key]) < Z99 * row["se"], (key, row["att"], tr[key], row["se"])
            checked += 1
    assert checked == 12  # 3 outcomes x (3 programme types + all)


def test_synth_event_study_and_subgroups_recovered(synth_run) -> None:
    ev, truth = synth_run
    es = ev.event_studies[("log_turnover", "all")].set_index("event_time")
    tr = truth[(truth["outcome"] == "log_turnover") & (truth["programme_type"] == "all")
               & (truth["aggregation"] == "dynamic") & (truth["level"] != "overall")]
    for _, r in tr.iterrows():
        e = int(r["level"])
        if e in es.index and np.isfinite(es.loc[e, "se"]):
            assert es.loc[e, "band_low"] <= r["att"] <= es.loc[e, "band_high"], e
    # every group: women-owned / not, rural, micro, young x log turnover, employees x 4 programme groups
    assert assert_subgroups_recovered(ev, truth) == 40


# ---------------------------------------------------------------- cost per job (Fieller), hand values
def test_cost_per_job_fieller_bounded_hand_values() -> None:
    """S = 1,000,000 spent on n = 100 firms; att = 2.0 jobs/firm, CI [1.0, 4.0] -> J = 200, CI [100, 400].
    Cost = 1e6 / 200 = 5,000; Fieller set with known S = [1e6/400, 1e6/100] = [2,500, 10,000]."""
    from msme_eval.impact.evaluate import _jobs_cost, cost_text

    c = _jobs_cost(2.0, (1.0, 4.0), 100, 1_000_000.0)
    assert c["jobs_created"] == 200 and (c["jobs_ci_low"], c["jobs_ci_high"]) == (100, 400)
    assert c["cost_per_job"] == 5000.0
    assert (c["cost_ci_low"], c["cost_ci_high"]) == (2500.0, 10000.0)
    assert c["cost_ci_note"] == ""
    assert cost_text({**c, "programme_type": "finance", "currency": "USD"}) == \
        "finance: 5,000 USD per job (CI 2,500 to 10,000)."


def test_cost_per_job_not_bounded_when_jobs_ci_includes_zero() -> None:
    """att = 0.5, CI [-0.2, 1.2], n = 50, S = 60,000: J = 25, CI [-10, 60]. Cost = 2,400; the Fieller set
    is (-inf, -6,000] U [1,000, +inf): at least 1,000 per job, no finite upper bound."""
    from msme_eval.impact.evaluate import NOT_BOUNDED, _jobs_cost, cost_text

    c = _jobs_cost(0.5, (-0.2, 1.2), 50, 60_000.0)
    assert c["cost_per_job"] == pytest.approx(2400.0)
    assert c["cost_ci_low"] == pytest.approx(1000.0)
    assert np.isnan(c["cost_ci_high"]) and not np.isinf(c["cost_ci_low"])
    assert c["cost_ci_note"].startswith(NOT_BOUNDED) and "at least 1,000" in c["cost_ci_note"]
    text = cost_text({**c, "programme_type": "all", "currency": "USD"})
    assert "not bounded: the jobs effect is not distinguishable from zero" in text and "inf" not in text
    # no positive jobs estimate at all: no cost, said in words
    c2 = _jobs_cost(-0.1, (-0.5, 0.3), 50, 60_000.0)
    assert np.isnan(c2["cost_per_job"]) and "not positive" in c2["cost_ci_note"]


# ---------------------------------------------------------------- survey weights in evaluate()
@pytest.fixture(scope="module")
def weighted_panel() -> pd.DataFrame:
    p, _ = contract_panel(n=3000, n_years=8, seed=5)
    return p


def _headline(ev) -> pd.DataFrame:
    return ev.headline.set_index(["outcome", "programme_type"])


def test_constant_weights_equal_unweighted(weighted_panel) -> None:
    """The population ATT with constant weights equals the sample ATT; both are shown and labelled."""
    kw = {"outcomes": ["log_turnover", "employees"], "subgroups": (), "robustness": False}
    a = evaluate(weighted_panel, **kw)
    b = evaluate(weighted_panel.assign(w=7.0), weight="w", **kw)
    ha, hb = _headline(a), _headline(b)
    assert np.allclose(ha["att"], hb["att_population"], rtol=1e-9, atol=1e-12)
    assert np.allclose(ha["se"], hb["se_population"], rtol=1e-6)
    assert np.allclose(ha["att"], hb["att"], rtol=1e-12)  # the headline att stays the sample ATT
    assert (hb["estimand"].str.startswith("sample ATT")).all()
    assert (hb["estimand_population"].str.startswith("population ATT (weighted by _w_ref")).all()
    assert "att_population" not in a.headline  # no weight, no population column
    assert any("first observed year" in n for n in b.notes)


def test_weights_use_the_first_observed_year_and_move_towards_weighted_truth(weighted_panel) -> None:
    """Planted: finance log-turnover effect 0.20 x (1 + 0.5 female). Women-owned firms get weight 5 in
    their first year (1 later, which must be ignored), others 1. Weighted truth = 0.20 x (1 + 0.5 s_w),
    s_w the weight-share of women-owned among finance-supported firms; unweighted truth uses the
    head-count share s. The weighted estimate must cover the weighted truth (99%) and sit closer to it."""
    p = weighted_panel.copy()
    first = p.groupby("firm_id")["year"].transform("min") == p["year"]
    fem = p["owner_female"].astype(bool)
    p["w"] = np.where(fem & first, 5.0, 1.0)
    ev = evaluate(p, weight="w", outcomes=["log_turnover"], subgroups=(), robustness=False)
    un = evaluate(p, outcomes=["log_turnover"], subgroups=(), robustness=False)
    sup = p[p["programme_type"] == "finance"].groupby("firm_id")["owner_female"].first().astype(bool)
    s, s_w = sup.mean(), (5 * sup).sum() / (5 * sup + ~sup).sum()
    truth, truth_w = 0.20 * (1 + 0.5 * s), 0.20 * (1 + 0.5 * s_w)
    row = ev.headline.set_index(["outcome", "programme_type"]).loc[("log_turnover", "finance")]
    rw = {"att": row["att_population"], "se": row["se_population"]}
    ru = un.headline.set_index(["outcome", "programme_type"]).loc[("log_turnover", "finance")]
    assert row["att"] == pytest.approx(ru["att"], rel=1e-12)  # sample ATT beside the population ATT
    assert abs(rw["att"] - truth_w) < Z99 * rw["se"], (rw["att"], truth_w)
    assert abs(ru["att"] - truth) < Z99 * ru["se"], (ru["att"], truth)
    assert abs(rw["att"] - truth_w) < abs(rw["att"] - truth)
    assert rw["att"] > ru["att"]  # women-owned firms (larger effect) weigh more
    assert "first observed year" in ev.choices["weight"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_synth_all_group_effects_recovered_more_seeds(seed) -> None:
    """Slow: headline effects and all subgroup effects (log turnover, employees) on further synth
    seeds, each against its planted truth (Bonferroni over the subgroup checks). Survival by subgroup
    is NOT asserted yet: micro firms, all programmes, seed 0 sit at +4.4 SE
    (open question: the synth survival truth for micro firms vs the alive-at-t-1 estimand)."""
    synth = pytest.importorskip("msme_eval.synth")
    data = synth.generate(n_firms=12_000, seed=seed)
    ev = evaluate(data.panel, outcomes=["log_turnover", "employees", "survival"], robustness=False,
                  subgroups=("owner_female", "rural", "micro", "young"))
    tr = data.truth[data.truth["aggregation"] == "simple"].set_index(["outcome", "programme_type"])["att"]
    for key, row in ev.headline.set_index(["outcome", "programme_type"]).iterrows():
        assert abs(row["att"] - tr[key]) < stats.norm.ppf(1 - 0.01 / 24) * row["se"], key
    assert assert_subgroups_recovered(ev, data.truth) == 40


# ---------------------------------------------------------------- what a reviewer reads (words, no raw names)
_REPR = re.compile(r"[{}\[\]]|'\w+':|', '")
_SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")


def _visible(html_text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", html_text))


def test_choices_table_reads_as_words(ev_own) -> None:
    """The page's estimation-choices table: no dict/list reprs, no snake_case, the register check
    as one sentence per programme type with the check's own numbers."""
    shown = S.choices_table(readable_choices(ev_own.choices))
    text = _visible(str(table(shown, caption="Estimation choices", labels=False)))
    assert not _REPR.search(text), _REPR.search(text)
    assert not _SNAKE.search(text), _SNAKE.search(text)
    row = shown.set_index("Choice")
    checks = ev_own.choices["register_check"]
    assert set(checks) == {"finance", "market_access", "all"}
    for pt, c in checks.items():
        sentence = (f"{value_label(pt)}: {c['exits_in_cohort_year']:,} exits among "
                    f"{c['cohort_firms_alive_before']:,} cohort firms in their cohort year "
                    f"({c['expected_exits_at_comparison_rate']:,.1f} expected at the comparison firms' rate): "
                    "the register lists firms that closed, as it should.")
        assert sentence in row.loc["Register check", "Value"]
    assert row.loc["Register looks like recipients only", "Value"] == "No"
    assert row.loc["Standard errors clustered by", "Value"] == "Firm"  # contract_panel has no psu


def test_register_sentence_by_hand() -> None:
    ok = {"cohort_firms_alive_before": 1015, "exits_in_cohort_year": 59,
          "expected_exits_at_comparison_rate": 63.334633, "pvalue_exits": 0.314, "recipients_only": False,
          "exits_before_payment": None}
    assert register_sentence("finance", ok) == (
        "Finance: 59 exits among 1,015 cohort firms in their cohort year (63.3 expected at the comparison "
        "firms' rate): the register lists firms that closed, as it should.")
    bad = {**ok, "exits_in_cohort_year": 0, "pvalue_exits": 1.6e-28, "att_e0": 0.061, "se_e0": 0.004,
           "recipients_only": True}
    text = register_sentence("market_access", bad)
    assert text.startswith("Market access: 0 exits among 1,015") and "WARNING" in text and "recipients only" in text
    assert "p = 1.6e-28" in text and "+0.061" in text
    warn = recipients_only_warning({"finance": ok, "market_access": bad})
    assert "register of market access looks like a list of recipients only" in warn and "Finance:" not in warn
    assert warn.endswith("Market access: 0 exits among 1,015 cohort firms, 63.3 expected (p = 1.6e-28).")
    assert recipients_only_warning({"finance": ok}) == ""
    small = {**ok, "cohort_firms_alive_before": 12, "exits_in_cohort_year": 0,
             "expected_exits_at_comparison_rate": 1.3, "pvalue_exits": 0.26}
    assert "cannot be checked" in register_sentence("finance", small)


def test_recipients_only_choice_is_a_visible_yes() -> None:
    checks = {"finance": {"cohort_firms_alive_before": 500, "exits_in_cohort_year": 0,
                          "expected_exits_at_comparison_rate": 30.0, "pvalue_exits": 1e-13, "att_e0": 0.06,
                          "se_e0": 0.01, "recipients_only": True}}
    words = readable_choices({"register_check": checks, "recipients_only": True})
    assert words["Register looks like recipients only"].startswith("Yes")
    assert "WARNING" in words["Register check"]


def test_generated_text_uses_labels_not_column_names(ev_own) -> None:
    texts = [*ev_own.interpretation["text"], ev_own.six_steps["name"], *ev_own.notes]
    for t in texts:
        for raw in ("market_access", "log_turnover", "log_value_added", "log_productivity", "size_micro",
                    "age_at_support", "['", "{'"):
            assert raw not in t, (raw, t)
    assert any("firms supported by market access programmes" in t for t in ev_own.interpretation["text"])
    assert "unmatched for employees of surviving firms, labour productivity (log points)" in ev_own.six_steps["name"]
    assert any("exit drivers (micro size class, small size class, aged 2 years or less at support and aged 5 "
               "years or less at support)" in n for n in ev_own.notes)


def test_in_words_joins_labels() -> None:
    assert in_words(["size_micro", "registered", "sector_A"]) == \
        "micro size class, registered and sector A (agriculture and fishing)"
    assert in_words(["micro", "small", "medium"], "or") == "micro (at baseline), small or medium"
    assert in_words(["psu"]) == "primary sampling unit (PSU)" and in_words([]) == "none"


def test_headline_says_who_is_counted_and_the_estimand(ev_own) -> None:
    h = ev_own.headline
    counted = h["firms_counted"].map(who_counted)
    exit_rows = h["outcome"].isin(["survival", "jobs"])
    assert (counted[exit_rows] == "selected, alive year before").all()
    assert (counted[~exit_rows] == "supported, in the sample").all()
    view = S.headline_view(h)  # the page's table carries it right after the firm count
    assert list(view.columns[view.columns.get_loc("n_treated"):][:2]) == ["n_treated", "firms_counted"]
    assert view["firms_counted"].tolist() == counted.tolist()
    # the two counts differ because they count different firms (alive at g - 1 vs the selected cohort)
    fin = h[h["programme_type"] == "finance"].set_index("outcome")["n_treated"]
    assert fin["survival"] == fin["jobs"] and fin["survival"] <= fin["log_turnover"]
    note = estimand_note(h)
    assert note.startswith("Estimand: sample ATT") and note.endswith("clustered by the firm.")
    psu = estimand_note(h.assign(cluster="psu"))
    assert "clustered by the survey's primary sampling unit (PSU)" in psu


def test_jobs_views_show_both_horizons_and_blank_suppressed_rows(ev_own) -> None:
    jobs = ev_own.jobs.assign(conf_status=["F", "A", "F"])
    avg, fixed, horizon = S.jobs_views(jobs)
    assert horizon.startswith("Horizon: average over the post-support years")
    assert horizon.endswith("firms counted: selected, alive year before.")
    assert list(fixed["horizon_e"]) == [2, 2, 2]
    assert fixed.loc[1, ["cost_per_job_e", "cost_ci_low_e", "n_supported_e"]].isna().all()
    pd.testing.assert_series_equal(fixed.loc[0, ["cost_per_job_e", "n_supported_e"]].astype(float),
                                   jobs.iloc[0][["cost_per_job_e", "n_supported_e"]].astype(float),
                                   check_names=False)
    assert avg["cost_per_job"].equals(jobs["cost_per_job"].reset_index(drop=True))  # numbers unchanged
    text = _visible(str(table(fixed, digits=2)))
    assert "Cost per job at the fixed horizon" in text and "Fixed horizon (years after support)" in text
    assert "[c]" in text and not _SNAKE.search(text)
