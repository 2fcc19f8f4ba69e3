"""Tables that do not fit together are refused or flagged with their rows, never published.

Each case takes the synthetic sample (whose tables fit) and makes one slip a real delivery
makes: the clean sample passes; each slip is caught by the rule named for it.
"""
from __future__ import annotations

import pytest

import msme_eval as me
from msme_eval import plausibility as pl
from msme_eval.survey import SurveyDesignError


@pytest.fixture(scope="module")
def data():
    return me.synth.generate(n_firms=1500, years=range(2016, 2022), seed=2)


def _rules(report, severity=None):
    return {i.rule for i in report.issues if severity is None or i.severity == severity}


def test_the_sample_fits(data):
    rep = pl.check_inputs(data.panel, data.macro, data.targets)
    assert rep.issues == []


@pytest.mark.parametrize("column, factor", [("gdp", 1e-9), ("employment_total", 1e-3),
                                             ("exports_total", 1e-6), ("business_loans_total", 1e-6)])
def test_macro_in_thousands_or_billions_is_refused(data, column, factor):
    macro = data.macro.copy()
    macro[column] *= factor
    rep = pl.check_inputs(data.panel, macro)
    assert _rules(rep, "error") == {"macro_smaller_than_panel"}
    issue = rep.issues[0]
    assert issue.column == column and issue.n_rows == len(macro)  # every country-year named
    with pytest.raises(me.DataValidationError, match="thousands, millions or billions"):
        rep.raise_for_errors()


def test_macro_far_too_large_is_flagged(data):
    macro = data.macro.assign(gdp=data.macro["gdp"] * 1e9)
    rep = pl.check_inputs(data.panel, macro)
    assert _rules(rep) == {"macro_much_larger_than_panel"} and rep.ok


def test_targets_as_shares_unknown_ids_and_range(data):
    t = data.targets.copy()
    pct = t["unit"] == "percent"
    t.loc[pct, ["baseline_value", "target_value"]] /= 100
    assert "target_written_as_share" in _rules(pl.check_inputs(data.panel, targets=t), "error")
    t = data.targets.copy()
    t.loc[t.index[0], "indicator"] = "K11"
    t.loc[t.index[1], "target_value"] = 140.0
    rep = pl.check_inputs(data.panel, targets=t)
    assert _rules(rep, "error") == {"target_unknown_indicator", "target_share_out_of_range"}
    unknown = next(i for i in rep.issues if i.rule == "target_unknown_indicator")
    assert unknown.rows == (1,) and unknown.values == ("K11",)


def test_small_real_percentages_are_not_taken_for_shares(data):
    """Start-up rates of 0.5 % are real: with the observed indicators also below 1 no error."""
    t = data.targets[data.targets["indicator"].isin(["K10"])].copy()
    t[["baseline_value", "target_value"]] = [[0.4, 0.6]] * len(t)
    observed = t[["indicator"]].assign(value=0.5)
    rep = pl.check_inputs(data.panel, targets=t, observed=observed)
    assert "target_written_as_share" not in _rules(rep)


def test_target_against_direction_is_a_warning(data):
    t = data.targets.copy()
    row = t.index[(t["indicator"] == "K05")][0]
    t.loc[row, "target_value"] = t.loc[row, "baseline_value"] - 5
    rep = pl.check_inputs(data.panel, targets=t)
    assert _rules(rep) == {"target_against_direction"} and rep.ok


def test_inverted_exchange_rate_and_jump(data):
    macro = data.macro.copy()
    idn = macro["country"] == "IDN"
    macro.loc[idn, "usd_per_lcu"] = 1 / macro.loc[idn, "usd_per_lcu"]
    rep = pl.check_inputs(data.panel, macro)
    assert _rules(rep, "error") == {"fx_implausible"}
    assert "IDN" in rep.issues[0].values[0]
    macro = data.macro.copy()
    tha_2019 = (macro["country"] == "THA") & (macro["year"] == 2019)
    macro.loc[tha_2019, "usd_per_lcu"] *= 10
    rep = pl.check_inputs(data.panel, macro)
    assert _rules(rep) == {"fx_jump"} and rep.issues[0].n_rows == 2  # 2019 up and 2020 down


def test_missing_country_years_are_named(data):
    macro = data.macro[~((data.macro["country"] == "LAO") & (data.macro["year"] >= 2020))]
    rep = pl.check_inputs(data.panel, macro)
    assert _rules(rep) == {"macro_missing_country_year"} and rep.ok
    assert set(rep.issues[0].values) == {"LAO 2020", "LAO 2021"}


def test_single_psu_strata_are_reported_with_the_rule(data):
    p = data.panel.copy()
    rows = (p["country"] == "BRN") & (p["year"] == 2018)
    first = p.loc[rows, "strata"].iloc[0]
    p.loc[rows & (p["strata"] == first), "psu"] = p.loc[rows & (p["strata"] == first), "psu"].iloc[0]
    rep = pl.check_inputs(p, singleton="centre")
    assert _rules(rep) == {"single_psu_stratum"} and rep.ok
    assert f"BRN 2018 stratum {first}" in rep.issues[0].values
    assert "lonely.psu='adjust'" in rep.issues[0].message
    # a declared take-all stratum needs no variance: not reported (by label or country|label)
    for name in (first, f"BRN|{first}"):
        assert not pl.check_inputs(p, singleton="centre", certainty=[name]).issues
    other = p.loc[p["country"] == "KHM", "strata"].iloc[0]  # another country's stratum
    assert _rules(pl.check_inputs(p, certainty=[f"KHM|{other}"])) == {"single_psu_stratum"}
    with pytest.raises(SurveyDesignError, match=r"certainty names \['BRN\|nope'\]"):
        pl.check_inputs(p, certainty=["BRN|nope"])
