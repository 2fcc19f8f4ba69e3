"""Estimands stated and correct (issue #13, items 2-4): selected vs paid, recipients-only check,
PSU clustering by default, sample vs population ATT, cost per job with its horizon.

Planted truth (``register_panel``): firms observed 2014-2021; 40% are selected, in a year g drawn
from 2016-2019, and paid from g + 1 if still operating (a selected firm that closes in g or g + 1 is
never paid). Annual exit hazard h0 = 0.08, and h1 = 0.03 for paid firms in the years after their
first payment. Employees = base_i (1 + Poisson(9), mean MU = 10) + iid noise, + TAU = 2 while paid.
Among cohort firms alive in g - 1 (intention to treat, cohort = year selected), at e = t - g:
S_T(e) = (1 - h0)^(e+1) for e <= 1 and (1 - h0)^2 (1 - h1)^(e-1) for e >= 2; S_C(e) = (1 - h0)^(e+1);
survival ATT(e) = S_T - S_C; net jobs (0 after exit) ATT(e) = S_T (MU + TAU 1[e >= 1]) - S_C MU.
Paid cohorts (first_treated = g + 1): employees of survivors + TAU, log turnover + LOG_EFFECT.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from msme_eval.impact import build_outcomes, evaluate
from msme_eval.impact.survival import survival_did

H0, H1, MU, TAU, LOG_EFFECT = 0.08, 0.03, 10.0, 2.0, 0.1
YEARS = np.arange(2014, 2022)
Z99 = stats.norm.ppf(0.995)


def truth_survival(e: int) -> float:
    s_t = (1 - H0) ** (e + 1) if e <= 1 else (1 - H0) ** 2 * (1 - H1) ** (e - 1)
    return s_t - (1 - H0) ** (e + 1)


def truth_jobs(e: int) -> float:
    s_t = (1 - H0) ** (e + 1) if e <= 1 else (1 - H0) ** 2 * (1 - H1) ** (e - 1)
    return s_t * (MU + TAU * (e >= 1)) - (1 - H0) ** (e + 1) * MU


def register_panel(n: int, seed: int, n_psu: int = 0, psu_sd: float = 0.0) -> pd.DataFrame:
    """Contract panel of the planted design: every selected firm listed, with selected_year.
    ``psu_sd`` > 0: firm size correlated within PSU (base_i = 1 + Poisson((MU - 1) m_psu), m_psu
    mean-one lognormal with log-sd psu_sd, drawn from a separate stream), so E[base] = MU still."""
    rng = np.random.default_rng(seed)
    T = len(YEARS)
    sel = rng.random(n) < 0.4
    g = np.where(sel, rng.choice([2016, 2017, 2018, 2019], size=n), 0)
    pay = np.where(sel, g + 1, 0)
    alive = np.ones((n, T), dtype=bool)
    paid_by = np.zeros(n, dtype=bool)
    for k in range(1, T):
        y = YEARS[k]
        h = np.where(sel & (pay < y) & alive[:, k - 1], H1, H0)  # reduced hazard after the first paid year
        alive[:, k] = alive[:, k - 1] & (rng.random(n) >= h)
        paid_by |= sel & (pay == y) & alive[:, k]
    paid_year = np.where(paid_by, pay, 0)
    base = base_plain = 1 + rng.poisson(MU - 1, size=n)
    paid_now = (paid_year[:, None] > 0) & (YEARS >= paid_year[:, None])
    emp = base[:, None] + rng.normal(0, 1.5, size=(n, T)) + TAU * paid_now
    psu = rng.integers(0, n_psu, size=n) if n_psu else np.arange(n)
    if psu_sd > 0:  # separate stream: the other draws stay as they are
        prng = np.random.default_rng([seed, 1])
        m = np.exp(prng.normal(-psu_sd**2 / 2, psu_sd, size=n_psu))
        base = 1 + prng.poisson((MU - 1) * m[psu])
        emp = emp + (base - base_plain)[:, None]
    fi, ti = np.nonzero(alive)
    ft = pd.array(np.where(paid_year[fi] > 0, paid_year[fi], 0), dtype="Int64")
    ft[paid_year[fi] == 0] = pd.NA
    sy = pd.array(np.where(sel[fi], g[fi], 0), dtype="Int64")
    sy[~sel[fi]] = pd.NA
    return pd.DataFrame({
        "firm_id": [f"f{i:05d}" for i in fi], "year": YEARS[ti], "employees": np.round(emp[fi, ti], 3),
        "turnover": np.exp(np.log(base[fi]) + 0.1 * ti + rng.normal(0, 0.2, len(fi))
                           + LOG_EFFECT * paid_now[fi, ti]),
        "first_treated": ft, "selected_year": sy,
        "programme_type": pd.array(np.where(sel[fi], "finance", None), dtype="string"),
        "support_amount": np.where(paid_year[fi] == YEARS[ti], 1000.0, 0.0),
        "psu": [f"p{c}" for c in psu[fi]],
    })


def recipients_only(panel: pd.DataFrame) -> pd.DataFrame:
    """The same firms as a register of recipients would list them: never-paid selected firms gone,
    no selection year."""
    never_paid = panel["selected_year"].notna() & panel.groupby("firm_id")["first_treated"].transform("count").eq(0)
    return panel.loc[~never_paid].drop(columns="selected_year")


@pytest.fixture(scope="module")
def itt() -> pd.DataFrame:
    return register_panel(8000, seed=11)


def _es(r) -> pd.DataFrame:
    return r.event_study.set_index("event_time")


@pytest.mark.parametrize("outcome, truth", [("alive", truth_survival), ("jobs", truth_jobs)])
def test_itt_on_selected_firms_recovers_planted_truth(itt, outcome, truth) -> None:
    f, _ = build_outcomes(itt)
    r = survival_did(f, outcome=outcome, selected="selected_year")
    es = _es(r)
    for e in range(0, 4):
        est, se = es.loc[e, "estimate"], es.loc[e, "se"]
        assert abs(est - truth(e)) < Z99 * se, (outcome, e, est, truth(e))
    assert not r.register_check["recipients_only"]
    assert r.register_check["exits_in_cohort_year"] > 0 and r.register_check["exits_before_payment"] > 0
    assert "intention to treat" in r.choices["cohort"] and "WARNING" not in " ".join(r.notes())
    assert "Estimand: sample ATT on selected firms" in r.summary()


def test_recipients_only_register_warns_and_is_biased(itt) -> None:
    f, _ = build_outcomes(recipients_only(itt))
    r = survival_did(f)
    chk = r.register_check
    assert chk["recipients_only"] and chk["exits_in_cohort_year"] == 0
    assert chk["pvalue_exits"] < 1e-6 and chk["att_e0"] > 0
    assert any(n.startswith("WARNING: the register looks like recipients only") for n in r.notes())
    # the bias the warning is about: the e = 0 survival effect is the comparison exit rate, not 0
    assert abs(_es(r).loc[0, "estimate"] - H0) < Z99 * _es(r).loc[0, "se"]


def test_register_check_counts_by_hand() -> None:
    """Two cohorts; cohort firms exit in their cohort year or not; P(D <= d) by the binomial sum."""
    rows = []
    # comparison: 10 firms alive in 2015, 2 exit in 2016 (h = 0.2), 1 in 2017 among 8 alive in 2016
    for i in range(10):
        last = 2015 if i < 2 else (2016 if i < 3 else 2018)
        rows += [(f"c{i}", y, pd.NA) for y in range(2014, last + 1)]
    for i in range(4):  # cohort 2016: no exit in 2016
        rows += [(f"a{i}", y, 2016) for y in range(2014, 2019)]
    for i in range(3):  # cohort 2017: none exit in 2017
        rows += [(f"b{i}", y, 2017) for y in range(2014, 2019)]
    p = pd.DataFrame(rows, columns=["firm_id", "year", "first_treated"]).assign(employees=3.0)
    p["first_treated"] = p["first_treated"].astype("Int64")
    f, _ = build_outcomes(p)
    chk = survival_did(f).register_check
    h16, h17 = 2 / 10, 1 / 8
    assert chk["exits_in_cohort_year"] == 0 and chk["cohort_firms_alive_before"] == 7
    assert chk["pvalue_exits"] == pytest.approx((1 - h16) ** 4 * (1 - h17) ** 3)
    assert chk["expected_exits_at_comparison_rate"] == pytest.approx(4 * h16 + 3 * h17)
    assert not chk["recipients_only"]  # 0.26 > alpha: too few firms to tell


def test_selected_year_refusals(itt) -> None:
    f, _ = build_outcomes(itt)
    paid_firm = f.loc[f["first_treated"].notna(), "firm_id"].iloc[0]
    bad = f.assign(selected_year=f["selected_year"].where(f["firm_id"] != paid_firm))
    with pytest.raises(Exception, match="no 'selected_year'"):
        survival_did(bad, selected="selected_year")
    late = f.assign(selected_year=f["selected_year"] + 5)
    with pytest.raises(Exception, match="is after"):
        survival_did(late, selected="selected_year")


# ---------------------------------------------------------------- evaluate(): defaults shown
@pytest.fixture(scope="module")
def ev_psu():
    p = register_panel(4000, seed=12, n_psu=60)
    return p, evaluate(p, outcomes=["employees", "jobs", "survival"], subgroups=(), robustness=False)


def test_evaluate_clusters_by_psu_by_default_and_says_so(ev_psu) -> None:
    from msme_eval.impact import did

    p, ev = ev_psu
    assert ev.choices["cluster"].startswith("psu (survey primary sampling unit")
    h = ev.headline[ev.headline["programme_type"] == "all"].set_index("outcome")
    assert (h["cluster"] == "psu").all()
    f, _ = build_outcomes(p)
    f = f[~(f["selected_year"].notna() & f["first_treated"].isna())]  # selected, never paid: not controls
    ref = did(f, "employees", cluster="psu").overall
    firm = did(f, "employees").overall
    assert h.loc["employees", "att"] == pytest.approx(ref.estimate, rel=1e-12)
    assert h.loc["employees", "se"] == pytest.approx(ref.se, rel=1e-10)
    assert h.loc["employees", "se"] != pytest.approx(firm.se, rel=1e-3)
    ev_firm = evaluate(p, outcomes=["employees"], subgroups=(), robustness=False, cluster=None)
    assert ev_firm.headline.set_index("programme_type").loc["all", "se"] == pytest.approx(firm.se, rel=1e-10)
    assert ev_firm.choices["cluster"].startswith("firm_id")


def test_evaluate_itt_register_and_stated_estimands(ev_psu) -> None:
    _, ev = ev_psu
    assert not ev.recipients_only and "intention to treat" in ev.choices["cohort_survival_jobs"]
    h = ev.headline[ev.headline["programme_type"] == "all"].set_index("outcome")
    assert abs(h.loc["survival", "att"] - np.mean([truth_survival(e) for e in range(4)])) < 0.05  # sanity
    assert h.loc["survival", "estimand"].startswith("sample ATT on selected firms")
    assert "alive in the year before" in h.loc["jobs", "firms_counted"]
    assert "supported cohorts" in h.loc["employees", "firms_counted"]
    j = ev.jobs.set_index("programme_type").loc["all"]
    assert j["horizon"].startswith("average over the post-support years")
    assert j["horizon_e"] == 2
    assert abs(j["net_jobs_per_firm_e"] - truth_jobs(2)) < Z99 * j["se_e"]
    assert j["cost_per_job_e"] == pytest.approx(j["support_total_e"] / (j["n_supported_e"] * j["net_jobs_per_firm_e"]))
    assert j["n_supported_e"] == j["n_supported"]  # every cohort (2016-2019) is observed at e = 2 by 2021


def test_evaluate_flags_a_recipients_only_register() -> None:
    p = recipients_only(register_panel(4000, seed=12, n_psu=60))
    ev = evaluate(p, outcomes=["survival"], subgroups=(), robustness=False)
    assert ev.recipients_only and ev.choices["register_check"]["all"]["recipients_only"]
    assert any(n.startswith("WARNING: the programme register looks like recipients only") for n in ev.notes())
    assert "first_treated (the register must list every selected" in ev.choices["cohort_survival_jobs"]


def test_summary_states_both_cost_per_job_horizons(ev_psu) -> None:
    _, ev = ev_psu
    text = ev.summary()
    assert "net jobs averaged over the post-support years observed" in text
    assert "Cost per job at a fixed horizon (2 years after the cohort year" in text
    j = ev.jobs.set_index("programme_type").loc["all"]
    assert f"{j['cost_per_job_e']:,.0f} LCU per job" in text and f"{j['cost_per_job']:,.0f} LCU per job" in text
