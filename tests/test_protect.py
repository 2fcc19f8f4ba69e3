"""Every published number outside the indicator table obeys the disclosure rules."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import msme_eval as me
from msme_eval.contract import REGION
from msme_eval.report import protect


@pytest.fixture(scope="module")
def panel(small_data) -> pd.DataFrame:
    return small_data.panel


def test_programme_counts_secondary_suppression_across_member_states(panel):
    """One country with 2 supported firms in a programme: its count is suppressed (A), and a
    second country's count too (D), so ASEAN minus the others does not reveal it."""
    p = panel.copy()
    sup = p[p["first_treated"].notna()]
    prog = sup["programme"].value_counts().index[0]
    in_prog = sup[sup["programme"] == prog]
    country = in_prog["country"].value_counts().index[-1]
    keep = set(in_prog.loc[in_prog["country"] == country, "firm_id"].unique()[:2])
    drop = (p["programme"] == prog) & (p["country"] == country) & ~p["firm_id"].isin(keep)
    p.loc[drop, ["programme", "programme_type", "first_treated", "support_amount"]] = [None, None, pd.NA, np.nan]
    counts = protect.programme_counts(p)
    rows = counts[counts["programme"] == prog].set_index("area")
    assert rows.loc[country, "conf_status"] == "A" and pd.isna(rows.loc[country, "firms_supported"])
    others = rows.drop(index=[country, REGION])
    assert (others["conf_status"] == "D").sum() >= 1 or len(others) == 0
    published = rows[rows["conf_status"] == "F"]
    if REGION in published.index:  # the total minus the published countries never gives 2 alone
        rest = published.drop(index=REGION)["firms_supported"].sum()
        assert rows.loc[REGION, "firms_supported"] - rest != 2 or (rows["conf_status"] == "D").sum() > 0


@pytest.fixture(scope="module")
def evaluation(panel):
    return me.impact.evaluate(panel, programme_type=["finance", "market_access"])


def test_impact_effects_need_enough_treated_and_comparison_firms(panel, evaluation):
    """Rows resting on fewer supported firms than the threshold are suppressed (A); the others
    are published unchanged; a subgroup difference goes with a suppressed subgroup (D)."""
    head = evaluation.headline
    est = "estimate" if "estimate" in head else "att"
    cut = int(head["n_treated"].max())  # the largest group passes, every smaller one fails
    out = protect.impact_tables(evaluation, panel, rules=protect.Rules(min_contributors=cut))
    h = out["headline"]
    small = h["n_treated"] < cut
    assert small.any() and (~small).any()
    assert (h.loc[small, "conf_status"] == "A").all() and h.loc[small, est].isna().all()
    assert (h.loc[~small, "conf_status"] == "F").all()
    assert np.allclose(h.loc[~small, est], head.loc[~small.to_numpy(), est])
    inc = out["inclusion"]
    hidden = inc[inc["conf_status"] == "A"]
    tests = out["inclusion_tests"]
    for _, row in hidden.iterrows():
        t = tests[(tests["outcome"] == row["outcome"]) & (tests["programme_type"] == row["programme_type"])
                  & (tests["subgroup"] == row["subgroup"])]
        assert (t["conf_status"] == "D").all() and t["difference"].isna().all()


def test_support_totals_and_shares_obey_dominance(panel, evaluation):
    """One firm holding almost all of a programme's support: total support, cost per job and
    the support share of its subgroup are suppressed (O), effects stay."""
    p = panel.copy()
    fin = p[(p["programme_type"] == "finance") & p["support_amount"].notna()]
    whale = fin["firm_id"].iloc[0]
    p.loc[p["firm_id"] == whale, "support_amount"] = fin["support_amount"].sum() * 100
    out = protect.impact_tables(evaluation, p)
    jobs = out["jobs"].set_index("programme_type")
    assert jobs.loc["finance", "conf_status"] == "O" and pd.isna(jobs.loc["finance", "support_total"])
    assert jobs.loc["market_access", "conf_status"] == "F"
    shares = out["inclusion_shares"]
    fin_shares = shares[shares["programme_type"] == "finance"]
    assert fin_shares["share_of_support"].isna().all()  # the whale is inside or outside each group
    assert (out["headline"]["conf_status"] == "F").all()


def test_dominance_rule():
    rules = protect.Rules(3, 2, 0.85)
    assert rules.dominated(np.array([90.0, 5, 5])) == "O"
    assert rules.dominated(np.array([50.0, 40, 5, 5])) == "T"
    assert rules.dominated(np.array([30.0, 30, 20, 20])) == "F"
