"""Tests for msme_eval.sizeclass: every legal threshold on both sides (and at the boundary
value itself), every combining rule, the two cross-country schemes, fallbacks and flags,
and the vectorised interpreter against an independent row-by-row reference.

Legal texts are cited by the source ids of msme_eval/data/size_definitions.yaml.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from msme_eval import sizeclass as sc
from msme_eval.schema import COUNTRIES, SIZE_CLASSES

NAN = float("nan")


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["country", "sector", "employees", "turnover", "assets"])


def detail(country: str, sector: str, employees: float, turnover: float = NAN,
           assets: float = NAN, **kw) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.classify_detail(frame([(country, sector, employees, turnover, assets)]), **kw).iloc[0]


# ---------------------------------------------------------------------------------------------
# 1. Thresholds, criterion by criterion: (country, sector, criterion, value, class by that
#    criterion alone). Both sides of every ceiling and the ceiling itself.
# ---------------------------------------------------------------------------------------------
B = 1_000_000_000
M = 1_000_000
CEILINGS = [
    # Brunei, MOFE [S45]: revenue "less than B$100,000" / "B$100,000 to less than B$1 million" /
    # "B$1 million to less than B$5 million" / "B$5 million and above"
    *[("BRN", "G", "turnover", v, c) for v, c in [
        (99_999.99, "micro"), (100_000, "small"), (999_999.99, "small"), (1 * M, "medium"),
        (4_999_999.99, "medium"), (5 * M, "large")]],
    # employees 1-9 / 10-29 / 30-99 / 100 and above
    *[("BRN", "G", "employees", v, c) for v, c in [
        (0, "micro"), (9, "micro"), (10, "small"), (29, "small"), (30, "medium"), (99, "medium"),
        (100, "large")]],
    # assets less than B$60,000 / B$60,000 to less than 600,000 / 600,000 to less than 3 m / 3 m+
    *[("BRN", "G", "assets", v, c) for v, c in [
        (59_999.99, "micro"), (60_000, "small"), (599_999.99, "small"), (600_000, "medium"),
        (2_999_999.99, "medium"), (3 * M, "large")]],
    # Cambodia, Council of Ministers 2021 [S46], USD (usd_per_lcu=1 below): agriculture small
    # 5-49 staff, revenue $62,500-250,000, assets $50,000-250,000; medium 50-199 staff,
    # revenue $250,001-1 m, assets $250,001-500,000. Micro = below the small lower bounds.
    *[("KHM", "A", "employees", v, c) for v, c in [
        (4, "micro"), (5, "small"), (49, "small"), (50, "medium"), (199, "medium"), (200, "large")]],
    *[("KHM", "A", "turnover", v, c) for v, c in [
        (62_499.99, "micro"), (62_500, "small"), (250_000, "small"), (250_001, "medium"),
        (1 * M, "medium"), (1_000_001, "large")]],
    *[("KHM", "A", "assets", v, c) for v, c in [
        (49_999.99, "micro"), (50_000, "small"), (250_000, "small"), (250_001, "medium"),
        (500_000, "medium"), (500_001, "large")]],
    # industry: revenue $62,500-400,000 small, $400,001-2 m medium; assets $50,000-500,000 small
    *[("KHM", "C", "turnover", v, c) for v, c in [
        (400_000, "small"), (400_001, "medium"), (2 * M, "medium"), (2_000_001, "large")]],
    *[("KHM", "C", "assets", v, c) for v, c in [(49_999.99, "micro"), (500_000, "small")]],
    # services (fallback): MEF Prakas 2024 [S47] employee bands 1-4 / 5-49 / 50-199
    *[("KHM", "G", "employees", v, c) for v, c in [
        (4, "micro"), (5, "small"), (49, "small"), (50, "medium"), (199, "medium"), (200, "large")]],
    # Indonesia, PP 7/2021 [S48]: sales <= Rp2 bn / > 2-15 bn / > 15-50 bn;
    # capital <= Rp1 bn / > 1-5 bn / > 5-10 bn
    *[("IDN", "C", "turnover", v, c) for v, c in [
        (2 * B, "micro"), (2 * B + 1, "small"), (15 * B, "small"), (15 * B + 1, "medium"),
        (50 * B, "medium"), (50 * B + 1, "large")]],
    *[("IDN", "C", "assets", v, c) for v, c in [
        (1 * B, "micro"), (1 * B + 1, "small"), (5 * B, "small"), (5 * B + 1, "medium"),
        (10 * B, "medium"), (10 * B + 1, "large")]],
    # BPS workers [S49][S50]: micro 1-4, small 5-19, medium 20-99
    *[("IDN", "C", "employees", v, c) for v, c in [
        (4, "micro"), (5, "small"), (19, "small"), (20, "medium"), (99, "medium"), (100, "large")]],
    # Lao Decree 25/2017 [S51]: micro (commodity production) 1-5 persons; assets < 100 m kip
    ("LAO", "C", "employees", 5, "micro"), ("LAO", "C", "assets", 99_999_999, "micro"),
    # Malaysia, SME Corp [S52]: micro sales < RM300k or < 5 FTE; manufacturing small RM300k-<15 m
    # or 5-<75; medium RM15 m-<=50 m or 75-<=200
    *[("MYS", "C", "turnover", v, c) for v, c in [
        (299_999.99, "micro"), (300_000, "small"), (14_999_999.99, "small"), (15 * M, "medium"),
        (50 * M, "medium"), (50 * M + 0.01, "large")]],
    *[("MYS", "C", "employees", v, c) for v, c in [
        (4, "micro"), (5, "small"), (74, "small"), (75, "medium"), (200, "medium"), (201, "large")]],
    # services & others: small RM300k-<3 m or 5-<30; medium RM3 m-<=20 m or 30-<=75
    *[("MYS", "G", "turnover", v, c) for v, c in [
        (299_999.99, "micro"), (300_000, "small"), (2_999_999.99, "small"), (3 * M, "medium"),
        (20 * M, "medium"), (20 * M + 0.01, "large")]],
    *[("MYS", "A", "employees", v, c) for v, c in [
        (4, "micro"), (5, "small"), (29, "small"), (30, "medium"), (75, "medium"), (76, "large")]],
    # Myanmar Law 23/2015 [S55]: manufacturing medium up to 300 staff / capital MMK 500 m-1,000 m
    *[("MMR", "C", "employees", v, c) for v, c in [(51, "medium"), (300, "medium"), (301, "large")]],
    *[("MMR", "C", "assets", v, c) for v, c in [
        (500 * M + 1, "medium"), (1000 * M, "medium"), (1000 * M + 1, "large")]],
    # Philippines RA 9501 [S58]: assets <= PHP3 m / 3,000,001-15 m / 15,000,001-100 m
    *[("PHL", "K", "assets", v, c) for v, c in [
        (3 * M, "micro"), (3 * M + 1, "small"), (15 * M, "small"), (15 * M + 1, "medium"),
        (100 * M, "medium"), (100 * M + 1, "large")]],
    # PSA employment bands [S57][S35]: 1-9 / 10-99 / 100-199
    *[("PHL", "K", "employees", v, c) for v, c in [
        (9, "micro"), (10, "small"), (99, "small"), (100, "medium"), (199, "medium"), (200, "large")]],
    # Singapore [S60]: SME = sales <= S$100 m or employment <= 200
    ("SGP", "K", "employees", 201, "large"), ("SGP", "K", "turnover", 100 * M + 1, "large"),
    # Thailand B.E. 2562 [S62]: "not more than" = <=. Manufacturing: revenue <= 1.8 m micro,
    # > 1.8-100 m small, > 100-500 m medium; employees <= 5, 6-50, 51-200
    *[("THA", "C", "turnover", v, c) for v, c in [
        (1_800_000, "micro"), (1_800_000.01, "small"), (100 * M, "small"), (100 * M + 1, "medium"),
        (500 * M, "medium"), (500 * M + 1, "large")]],
    *[("THA", "C", "employees", v, c) for v, c in [
        (5, "micro"), (6, "small"), (50, "small"), (51, "medium"), (200, "medium"), (201, "large")]],
    # trade & services: > 1.8-50 m small, > 50-300 m medium; 6-30, 31-100
    *[("THA", "G", "turnover", v, c) for v, c in [
        (1_800_000, "micro"), (1_800_001, "small"), (50 * M, "small"), (50 * M + 1, "medium"),
        (300 * M, "medium"), (300 * M + 1, "large")]],
    *[("THA", "I", "employees", v, c) for v, c in [
        (5, "micro"), (6, "small"), (30, "small"), (31, "medium"), (100, "medium"), (101, "large")]],
    # Viet Nam Decree 80/2021 [S63]: agri/industry/construction employees <= 10 / 100 / 200,
    # revenue <= 3 / 50 / 200 bn, capital <= 3 / 20 / 100 bn
    *[("VNM", "F", "employees", v, c) for v, c in [
        (10, "micro"), (11, "small"), (100, "small"), (101, "medium"), (200, "medium"), (201, "large")]],
    *[("VNM", "A", "turnover", v, c) for v, c in [
        (3 * B, "micro"), (3 * B + 1, "small"), (50 * B, "small"), (50 * B + 1, "medium"),
        (200 * B, "medium"), (200 * B + 1, "large")]],
    *[("VNM", "C", "assets", v, c) for v, c in [
        (3 * B, "micro"), (3 * B + 1, "small"), (20 * B, "small"), (20 * B + 1, "medium"),
        (100 * B, "medium"), (100 * B + 1, "large")]],
    # trade & services: employees <= 10 / 50 / 100, revenue <= 10 / 100 / 300 bn,
    # capital <= 3 / 50 / 100 bn
    *[("VNM", "G", "employees", v, c) for v, c in [
        (10, "micro"), (11, "small"), (50, "small"), (51, "medium"), (100, "medium"), (101, "large")]],
    *[("VNM", "J", "turnover", v, c) for v, c in [
        (10 * B, "micro"), (10 * B + 1, "small"), (100 * B, "small"), (100 * B + 1, "medium"),
        (300 * B, "medium"), (300 * B + 1, "large")]],
    *[("VNM", "G", "assets", v, c) for v, c in [
        (3 * B, "micro"), (3 * B + 1, "small"), (50 * B, "small"), (50 * B + 1, "medium"),
        (100 * B, "medium"), (100 * B + 1, "large")]],
]


@pytest.mark.parametrize(("country", "sector", "criterion", "value", "expected"), CEILINGS)
def test_threshold_by_criterion(country, sector, criterion, value, expected):
    values = {"employees": 1, "turnover": NAN, "assets": NAN, criterion: value}
    row = detail(country, sector, **values, usd_per_lcu=1.0)
    assert row[f"by_{criterion}"] == expected


def test_every_country_has_threshold_cases():
    assert {c[0] for c in CEILINGS} == set(COUNTRIES)


# ---------------------------------------------------------------------------------------------
# 2. Combining rules and open ranges -> final class
# ---------------------------------------------------------------------------------------------
RULES = [
    # Malaysia [S52]: OR basis; if criteria point to different sizes the SMALLER applies
    ("MYS", "C", 3, 20 * M, NAN, "micro", False),
    ("MYS", "C", 100, 1 * M, NAN, "small", False),
    ("MYS", "C", 201, 60 * M, NAN, "large", False),
    ("MYS", "F", 50, 10 * M, NAN, "medium", False),   # construction = services & others
    # Thailand [S62]: employment and revenue in different classes -> the HIGHER applies
    ("THA", "C", 3, 200 * M, NAN, "medium", False),
    ("THA", "G", 60, 1 * M, NAN, "medium", False),
    ("THA", "G", 5, 1_800_000, NAN, "micro", False),
    # Viet Nam Decree 80/2021 [S63]: employees AND (revenue OR capital)
    ("VNM", "C", 5, 100 * B, 1 * B, "micro", False),     # capital qualifies -> micro
    ("VNM", "C", 5, 100 * B, 50 * B, "medium", False),   # neither money criterion micro
    ("VNM", "C", 150, 1 * B, 1 * B, "medium", False),    # employees bind
    ("VNM", "G", 60, 400 * B, 10 * B, "medium", False),
    ("VNM", "G", 101, 1 * B, 1 * B, "large", False),
    # Brunei [S45]: >= 2 of 3 criteria; else revenue decides, then employees, then assets
    ("BRN", "C", 15, 500_000, 5 * M, "small", False),    # revenue + employees agree
    ("BRN", "C", 50, 50_000, 1 * M, "medium", False),    # employees + assets agree
    ("BRN", "C", 15, 50_000, 1 * M, "micro", False),     # all differ -> revenue
    ("BRN", "C", 150, 2 * M, 10_000, "medium", False),   # all differ -> revenue
    ("BRN", "C", 15, NAN, 1 * M, "small", True),         # revenue missing -> employees
    ("BRN", "C", 50, NAN, 1 * M, "medium", True),        # two available and agree
    # Cambodia [S46] (USD, rate 1): employees AND the higher of revenue / assets
    ("KHM", "A", 10, 300_000, 10_000, "medium", False),
    ("KHM", "A", 10, 10_000, 300_000, "medium", False),
    ("KHM", "A", 60, 10_000, 10_000, "medium", False),
    ("KHM", "A", 3, 10_000, 10_000, "micro", False),
    ("KHM", "C", 3, 10_000, 600_000, "medium", True),    # assets > 500k: medium or large
    ("KHM", "C", 60, 10_000, 600_000, "medium", True),   #   -> harmonised employee band
    ("KHM", "C", 250, 10_000, 600_000, "large", False),  # 200+ staff: large by law anyway
    ("KHM", "C", 3, 3 * M, 600_000, "large", False),     # revenue makes it large anyway
    ("KHM", "H", 60, 1e12, 1e12, "medium", True),        # services: Prakas employee band
    # Indonesia [S48]: sales decide for programmes (capital ignored when sales known)
    ("IDN", "G", 3, 1 * B, 20 * B, "micro", False),
    ("IDN", "G", 300, 20 * B, 1, "medium", False),
    ("IDN", "G", 300, NAN, 2 * B, "small", True),        # capital fallback
    ("IDN", "G", 30, NAN, NAN, "medium", True),          # BPS workers fallback
    # Philippines [S58]: total assets only; PSA employment bands if assets missing
    ("PHL", "C", 500, 1e12, 1 * M, "micro", False),
    ("PHL", "C", 150, 1, NAN, "medium", True),
    # Lao [S51]: micro if labour OR assets qualify; above micro: harmonised band (flagged)
    ("LAO", "A", 20, NAN, 50 * M, "micro", False),
    ("LAO", "A", 3, NAN, 1 * B, "micro", False),
    ("LAO", "C", 6, NAN, 1 * B, "small", True),          # band says micro; law says > micro
    ("LAO", "C", 250, NAN, 1 * B, "large", True),
    ("LAO", "G", 7, 1, 1, "micro", True),                # trade/services: band only
    ("LAO", "G", 60, 1, 1, "medium", True),
    # Myanmar [S55]: staff OR capital/income; no micro class; non-manufacturing medium not
    # captured -> open ranges split by the harmonised band
    ("MMR", "C", 50, NAN, NAN, "small", True),          # legal small; band 50 = medium -> small
    ("MMR", "C", 5, NAN, NAN, "micro", True),           # legal small; band micro
    ("MMR", "C", 400, NAN, 500 * M, "small", True),     # capital qualifies for small (OR)
    ("MMR", "C", 400, NAN, 500 * M + 1, "medium", False),  # medium capital, large staff -> min
    ("MMR", "C", 100, NAN, 2 * B, "medium", False),
    ("MMR", "G", 30, 1 * B, NAN, "small", True),
    ("MMR", "G", 31, 1 * B, NAN, "medium", True),       # medium-or-large; band small -> medium
    ("MMR", "G", 500, 50 * M, NAN, "small", True),      # retail income <= MMK 50 m
    ("MMR", "G", 500, 50 * M + 1, NAN, "large", True),
    ("MMR", "H", 100, 100 * M, NAN, "small", True),     # services income <= MMK 100 m
    ("MMR", "H", 100, 100 * M + 1, NAN, "medium", True),
    ("MMR", "A", 100, 50 * M + 1, NAN, "medium", True),  # other sectors income <= MMK 50 m
    # Singapore [S60]: SME = sales <= S$100 m OR employment <= 200; split by harmonised band
    ("SGP", "K", 200, 200 * M, NAN, "medium", True),
    ("SGP", "K", 201, 100 * M, NAN, "medium", True),
    ("SGP", "K", 201, 100 * M + 1, NAN, "large", False),
    ("SGP", "K", 5, 1 * M, NAN, "micro", True),
    ("SGP", "K", 30, 1 * M, NAN, "small", True),
]


@pytest.mark.parametrize(("country", "sector", "employees", "turnover", "assets", "expected",
                          "flagged"), RULES)
def test_combining_rules(country, sector, employees, turnover, assets, expected, flagged):
    row = detail(country, sector, employees, turnover, assets, usd_per_lcu=1.0)
    assert row["size_class"] == expected
    assert row["fallback"] is flagged or row["fallback"] == flagged
    assert (row["fallback_reason"] != "") == flagged


def test_decided_by_names_the_binding_criterion():
    assert detail("MYS", "C", 3, 20 * M)["decided_by"] == "employees"       # smaller wins
    assert detail("THA", "C", 3, 200 * M)["decided_by"] == "turnover"       # higher wins
    assert detail("BRN", "C", 15, 50_000, 1 * M)["decided_by"] == "turnover"  # all differ
    assert detail("BRN", "C", 15, 500_000, 5 * M)["decided_by"] == "turnover+employees"
    row = detail("IDN", "G", 30)
    assert (row["rule"], row["decided_by"]) == ("employees", "employees")
    row = detail("SGP", "K", 5, 1 * M)
    assert row["decided_by"] == "employees+turnover+employee_band"
    assert "micro-medium" in row["fallback_reason"]


# ---------------------------------------------------------------------------------------------
# 3. Cross-country schemes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("employees", "expected"), [
    (0, "micro"), (1, "micro"), (9, "micro"), (10, "small"), (49, "small"), (50, "medium"),
    (199, "medium"), (200, "large"), (5000, "large")])
def test_asean_harmonised(employees, expected):
    panel = pd.DataFrame({"employees": [employees]})   # no country/sector needed
    assert sc.classify(panel, scheme="asean_harmonised").iloc[0] == expected
    assert not sc.classify_detail(panel, scheme="asean_harmonised")["fallback"].iloc[0]


@pytest.mark.parametrize(("employees", "expected", "flagged"), [
    (0, "micro", True), (4, "micro", True), (5, "small", False), (19, "small", False),
    (20, "medium", False), (99, "medium", False), (100, "large", False)])
def test_world_bank(employees, expected, flagged):
    out = sc.classify_detail(pd.DataFrame({"employees": [employees]}), scheme="world_bank").iloc[0]
    assert out["size_class"] == expected
    assert bool(out["fallback"]) is flagged
    if flagged:
        assert "Enterprise Survey" in out["fallback_reason"]


def test_schemes_ignore_country_and_money():
    panel = frame([("MYS", "C", 3, 60 * M, NAN), ("THA", "C", 3, 600 * M, NAN)])
    assert list(sc.classify(panel, scheme="asean_harmonised")) == ["micro", "micro"]
    assert list(sc.classify(panel)) == ["micro", "large"]


# ---------------------------------------------------------------------------------------------
# 4. Output shape, fallbacks, missing data, errors
# ---------------------------------------------------------------------------------------------
def test_output_is_categorical_on_the_same_index():
    panel = frame([("THA", "C", 3, 1, 1), ("VNM", "G", 60, 1, 1)]).set_axis(["x", "y"])
    out = sc.classify(panel)
    assert out.index.equals(panel.index)
    assert isinstance(out.dtype, pd.CategoricalDtype)
    assert list(out.cat.categories) == list(SIZE_CLASSES)
    assert list(out) == ["micro", "medium"]
    d = sc.classify_detail(panel)
    assert d.index.equals(panel.index)
    assert {"size_class", "definition_id", "rule", "decided_by", "fallback", "fallback_reason",
            "completeness"} <= set(d.columns)
    assert list(d["definition_id"]) == ["THA-manufacturing", "VNM-trade-services"]


def test_missing_money_columns_are_flagged_not_silent():
    panel = pd.DataFrame({"country": ["MYS", "PHL", "IDN", "VNM", "THA"],
                          "sector": ["C", "C", "C", "C", "C"],
                          "employees": [100, 150, 30, 5, 3]})
    d = sc.classify_detail(panel)   # no turnover, no assets column at all
    assert list(d["size_class"]) == ["medium", "medium", "medium", "micro", "micro"]
    assert d["fallback"].all()
    assert "turnover missing" in d["fallback_reason"].iloc[0]
    assert "fallback to 'employees'" in d["fallback_reason"].iloc[1]      # PSA bands
    assert "fallback to 'employees'" in d["fallback_reason"].iloc[2]      # BPS bands
    assert "turnover missing" in d["fallback_reason"].iloc[3]
    assert "assets missing" in d["fallback_reason"].iloc[3]


def test_rule_not_needing_the_missing_column_is_not_flagged():
    # Thailand uses employees and revenue only: a missing assets value changes nothing
    assert not detail("THA", "C", 3, 1 * M, NAN)["fallback"]
    # Indonesia uses sales: missing capital changes nothing
    assert not detail("IDN", "C", 3, 1 * M, NAN)["fallback"]


def test_cambodia_needs_an_exchange_rate():
    panel = frame([("KHM", "A", 10, 1.2e9, 1e8), ("KHM", "G", 10, 1.0, 1.0)])
    with pytest.warns(UserWarning, match="usd_per_lcu"):
        d = sc.classify_detail(panel)
    # without a rate: employees only (small), flagged
    assert d["size_class"].iloc[0] == "small" and d["fallback"].iloc[0]
    assert d["fallback_reason"].iloc[0] == ("turnover/assets not used: thresholds in USD, "
                                            "no usd_per_lcu rate")
    # KHR 1.2 bn at 4,000 KHR/USD = US$300,000 -> medium revenue (250,001-1 m)
    for rate in (1 / 4000, {"KHM": 1 / 4000}, pd.Series(1 / 4000, index=panel.index)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            d = sc.classify_detail(panel, usd_per_lcu=rate)
        assert d["size_class"].iloc[0] == "medium" and not d["fallback"].iloc[0]
    assert d["by_turnover"].iloc[0] == "medium"


def test_no_usable_criterion_gives_missing_class_with_warning():
    panel = frame([("PHL", "C", NAN, NAN, NAN), ("PHL", "C", 5, NAN, 1.0)])
    with pytest.warns(UserWarning, match="no usable criterion"):
        d = sc.classify_detail(panel)
    assert pd.isna(d["size_class"].iloc[0]) and d["fallback"].iloc[0]
    assert "not determinable" in d["fallback_reason"].iloc[0]
    assert d["size_class"].iloc[1] == "micro"


def test_empty_panel():
    empty = frame([]).astype({"employees": "int64", "turnover": float, "assets": float})
    assert len(sc.classify(empty)) == 0
    assert list(sc.classify_detail(empty).columns)[:2] == ["size_class", "definition_id"]


def test_fallback_chain_reason_lists_everything_missing():
    row = detail("IDN", "C", 30)
    assert "turnover, assets missing: fallback to 'employees'" in row["fallback_reason"]


def test_nullable_integer_employees():
    panel = frame([("THA", "C", 3, 1.0, 1.0), ("THA", "C", 60, 1.0, 1.0)])
    panel["employees"] = panel["employees"].astype("Int64")
    panel["sector"] = panel["sector"].astype("category")
    assert list(sc.classify(panel)) == ["micro", "medium"]


@pytest.mark.parametrize(("rows", "match"), [
    ([("XXX", "C", 3, 1, 1)], "unknown country or ISIC section"),
    ([("THA", "Z", 3, 1, 1)], "unknown country or ISIC section"),
    ([("THA", "C", 3, -1, 1)], "negative values"),
    ([("THA", "C", -3, 1, 1)], "negative values"),
])
def test_bad_input_raises_with_rows(rows, match):
    with pytest.raises(ValueError, match=match) as info:
        sc.classify(frame(rows))
    assert "first row labels: [0]" in str(info.value)


def test_bad_scheme_and_missing_required_columns():
    with pytest.raises(ValueError, match="unknown scheme"):
        sc.classify(frame([("THA", "C", 3, 1, 1)]), scheme="eu")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sector'\]"):
        sc.classify(pd.DataFrame({"country": ["THA"], "employees": [3]}))
    with pytest.raises(ValueError, match="employees"):
        sc.classify(pd.DataFrame({"turnover": [3.0]}), scheme="world_bank")


# ---------------------------------------------------------------------------------------------
# 5. The definitions table and the editable data file
# ---------------------------------------------------------------------------------------------
def test_definitions_table_has_sources_and_years():
    d = sc.definitions()
    legal = d[d["scheme"] == "legal"]
    assert set(legal["country"]) == set(COUNTRIES)
    assert legal["law"].str.len().gt(0).all()
    assert legal["urls"].str.startswith("http").all()
    assert set(d["completeness"]) <= {"complete", "partial", "none"}
    assert legal.loc[legal["country"] != "BRN", "year"].notna().all()   # MOFE page has no year
    row = d[(d["definition_id"] == "MYS-manufacturing") & (d["criterion"] == "turnover")
            & (d["size_class"] == "small")].iloc[0]
    assert (row["operator"], row["threshold"], row["unit"]) == ("<", 15e6, "MYR")
    khm = d[(d["country"] == "KHM") & (d["criterion"] == "turnover")]
    assert set(khm["unit"]) == {"USD"}
    assert set(d["scheme"]) == {"legal", "asean_harmonised", "world_bank"}


def test_every_sector_of_every_country_is_classified():
    panel = pd.DataFrame([(c, s, 10, 1.0, 1.0) for c in COUNTRIES for s in "ABCDEFGHIJKLMNOPQRSTU"],
                         columns=["country", "sector", "employees", "turnover", "assets"])
    assert sc.classify(panel, usd_per_lcu=1.0).notna().all()


def test_edited_definitions_file_is_used(tmp_path):
    raw = yaml.safe_load(sc.DEFINITIONS_FILE.read_text(encoding="utf-8"))
    mys = next(d for d in raw["definitions"] if d["id"] == "MYS-manufacturing")
    mys["criteria"]["employees"]["micro"] = "< 10"
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    panel = frame([("MYS", "C", 7, 1 * M, NAN)])
    assert sc.classify(panel).iloc[0] == "small"
    assert sc.classify(panel, path=path).iloc[0] == "micro"

    mys["sections"] = "C,D"     # D now in two Malaysian groups
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match="MYS: sector groups must cover"):
        sc.definitions(bad)
    mys["sections"] = "C"
    mys["criteria"]["employees"]["micro"] = "about 10"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match="ceiling 'about 10'"):
        sc.definitions(bad)
    mys["criteria"]["employees"]["micro"] = "< 5"
    mys["rule"] = "employees or turnover"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match="use employees, turnover, assets and min, max, majority"):
        sc.definitions(bad)


# ---------------------------------------------------------------------------------------------
# 6. Vectorised interpreter == independent row-by-row reference
# ---------------------------------------------------------------------------------------------
def _reference(panel: pd.DataFrame, rate: float) -> list[str | None]:
    """Plain-Python, one row at a time, from the definitions() table."""
    defs = sc.definitions()
    band = [9, 49, 199]   # ASEAN harmonised employee ceilings (<=)

    tables: dict = {}   # (country, sector) -> {criterion: [(operator, threshold)] * 3}, rule row

    def lookup(country: str, sector: str):
        if (country, sector) not in tables:
            sub = defs[(defs["scheme"] == "legal") & (defs["country"] == country)
                       & defs["isic_sections"].str.contains(sector)]
            ceil = {c: list(zip(g["operator"], g["threshold"])) for c, g in sub.groupby("criterion")}
            tables[country, sector] = (ceil, sub.iloc[0], (sub["unit"] == "USD").any())
        return tables[country, sector]

    def crit_range(ceil: dict, crit: str, v: float):
        if math.isnan(v):
            return None
        prev = -1
        for k, (op, x) in enumerate(ceil[crit]):   # micro, small, medium in file order
            if math.isnan(x):
                continue
            if (v < x) if op == "<" else (v <= x):
                return (prev + 1, k)
            prev = k
        return (prev + 1, 3)

    def pick(agg):
        def f(*args):
            args = [a for a in args if a is not None]
            return (agg(a[0] for a in args), agg(a[1] for a in args)) if args else None
        return f

    def majority(*args):
        avail = [a for a in args if a is not None]
        for i, a in enumerate(avail):
            if any(a == b for b in avail[i + 1:]):
                return a
        return avail[0] if avail else None

    out = []
    for row in panel.itertuples(index=False):
        ceil, first, usd = lookup(row.country, row.sector)
        money = rate if usd else 1.0
        env = {"min": pick(min), "max": pick(max), "majority": majority}
        for crit, v in (("employees", row.employees), ("turnover", row.turnover * money),
                        ("assets", row.assets * money)):
            env[crit] = crit_range(ceil, crit, v) if crit in ceil else None
        rules = [first["rule"]] if isinstance(first["rule"], str) else []
        if isinstance(first["fallback_rules"], str):
            rules += first["fallback_rules"].split("; ")
        res = (0, 3) if not rules else None
        for r in rules:
            res = eval(r, {"__builtins__": {}}, env)  # noqa: S307 - test-only, trusted formulas
            if res is not None:
                break
        if res is None:
            out.append(None)
            continue
        lo, hi = res
        if lo < hi:
            e = next((k for k, c in enumerate(band) if row.employees <= c), 3)
            lo = min(max(e, lo), hi)
        out.append(SIZE_CLASSES[lo])
    return out


def test_vectorised_equals_row_by_row_reference():
    rng = np.random.default_rng(20240601)
    n = 1500
    panel = pd.DataFrame({
        "country": rng.choice(COUNTRIES, n),
        "sector": rng.choice(list("ABCDEFGHIJKLMNOPQRSTU"), n),
        "employees": rng.integers(0, 320, n),
        # money spread over 10^4 .. 10^12 so that every band of every currency is hit
        "turnover": 10 ** rng.uniform(4, 12, n),
        "assets": 10 ** rng.uniform(4, 12, n),
    })
    panel.loc[rng.random(n) < 0.15, "turnover"] = NAN
    panel.loc[rng.random(n) < 0.15, "assets"] = NAN
    # exact boundary values too
    panel.loc[:99, "turnover"] = rng.choice([300_000, 1_800_000, 2e9, 3e9, 15e6, 100e6, 50e6], 100)
    panel.loc[100:199, "employees"] = rng.choice([4, 5, 9, 10, 29, 30, 49, 50, 75, 99, 100, 200], 100)
    panel.index = pd.RangeIndex(1000, 1000 + n)
    rate = 1 / 4000
    got = sc.classify(panel, usd_per_lcu=rate)
    want = _reference(panel, rate)
    assert [None if pd.isna(g) else g for g in got] == want
    assert got.value_counts().min() > 50            # every class is exercised
    # order-independent: classifying a shuffled frame gives the same label per row
    shuffled = panel.sample(frac=1.0, random_state=1)
    assert sc.classify(shuffled, usd_per_lcu=rate).reindex(panel.index).equals(got)


def test_reference_agrees_on_rules_table():
    panel = frame([r[:5] for r in RULES])
    assert _reference(panel, 1.0) == [r[5] for r in RULES]


def test_yaml_ceilings_parse_like_python_numbers():
    text = sc.DEFINITIONS_FILE.read_text(encoding="utf-8")
    for _op, num in re.findall(r'"(<=|<) ([0-9_]+)"', text):
        assert float(num) == int(num.replace("_", ""))


# ----------------------------------------------------------------------- class bounds
def test_class_bounds_read_from_the_definitions_file():
    """Bounds are the YAML ceilings: "< 5" persons -> micro 1-4, small from 5; money bounds are
    the ceilings as written; 'decides_large' follows the rule's combinator."""
    khm = {b.definition_id: b for b in sc.class_bounds("KHM")}
    agri = khm["KHM-agriculture"]
    assert agri.bounds["employees"] == ((None, 4), (5, 49), (50, 199), (200, None))
    assert agri.bounds["turnover"][1] == (62_500, 250_000) and agri.currency == "USD"
    assert agri.complete and not any(agri.decides_large.values())      # max(): higher applies
    assert not khm["KHM-industry"].complete                             # medium assets missing
    mys = sc.class_bounds("MYS")[0]
    assert mys.decides_large == {"turnover": True, "employees": True}   # min(): OR, smaller
    brn = sc.class_bounds("BRN")[0]
    assert not any(brn.decides_large.values())                          # majority of three
    phl = sc.class_bounds("PHL")[0]
    assert phl.decides_large == {"assets": True, "employees": False}    # employees: fallback
    assert sc.harmonised_band() == ((1, 9), (10, 49), (50, 199), (200, None))
    with pytest.raises(ValueError, match="no legal definition"):
        sc.class_bounds("FRA")
