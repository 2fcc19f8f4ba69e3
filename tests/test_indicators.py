"""Indicators: registry, design-based compute() against hand computation, flags, ASEAN, disclosure.

The hand-made panel has two countries: IDN (2 strata x 2 PSUs, large firms present, one exit
and one entrant between 2020 and 2021) and VNM (MSMEs only -> macro denominators; sells_online
never reported). Reference values are computed in this file from the textbook formulas:
ratio R = sum(w y) / sum(w x); linearised variable u = w (y - R x) / X on the domain (0
outside); V = sum_h n_h/(n_h-1) sum_i (z_hi - zbar_h)^2 over PSU totals z_hi of u, with every
PSU of the stratum (all years) counted.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from msme_eval import indicators
from msme_eval.indicators import compute, registry
from msme_eval.indicators.registry import RegistryError

COLS = ["firm_id", "country", "year", "strata", "psu", "weight", "size_class", "employees",
        "value_added", "exports", "loans_outstanding", "owner_female", "urban", "registered",
        "sells_online", "imports_or_gvc", "birth_year", "sector"]
NA = np.nan
# firm, country, year, strata, psu, w, size, emp, va, exports, loans, female, urban, reg,
# online, gvc, birth, sector
_IDN_2020 = [
    ("f1", "S1", "P1", 10, "micro", 2, 10, 0, 5, 1, 1, 1, 1, 0, 2019, "C"),
    ("f2", "S1", "P1", 10, "small", 10, 80, 20, 0, 0, 1, 1, 0, 1, 2015, "C"),
    ("f3", "S1", "P2", 20, "micro", 3, 12, 0, 0, 1, 0, 0, 0, 0, 2020, "G"),
    ("f4", "S1", "P2", 5, "medium", 60, 600, 100, 200, 0, 1, 1, 1, 1, 2010, "C"),
    ("f5", "S2", "P3", 1, "large", 300, 6000, 3000, 1000, 0, 1, 1, 1, 1, 2000, "C"),
    ("f6", "S2", "P3", 20, "micro", 1, 4, 0, NA, 1, 0, 0, 0, 0, 2018, "A"),
    ("f7", "S2", "P4", 10, "small", 20, 150, 10, 30, 0, 0, 1, 1, 0, 2016, "A"),
    ("f8", "S2", "P4", 1, "large", 500, 9000, 4000, 2000, 0, 1, 1, 0, 1, 1995, "C"),
]
_EMP_2021 = {"f1": 3, "f2": 11, "f4": 58, "f5": 300, "f6": 2, "f7": 22, "f8": 510}
_VNM = [
    ("v1", "T1", "Q1", 50, "micro", 2, 5, 0, 1, 1, 0, 1, NA, 0, 2017, "G"),
    ("v2", "T1", "Q1", 30, "small", 15, 60, 5, 10, 0, 1, 1, NA, 1, 2012, "C"),
    ("v3", "T1", "Q2", 50, "micro", 4, 8, 0, 0, 1, 0, 0, NA, 0, 2020, "G"),
    ("v4", "T1", "Q2", 10, "medium", 80, 400, 50, 100, 0, 1, 1, NA, 1, 2005, "C"),
]
MACRO = pd.DataFrame({
    "country": ["IDN", "IDN", "VNM", "VNM"], "year": [2020, 2021, 2020, 2021],
    "gdp": [100_000.0, 110_000.0, 50_000.0, 52_000.0],
    "exports_total": [10_000.0, 10_500.0, 2_000.0, 2_100.0],
    "business_loans_total": [5_000.0, 5_200.0, 1_000.0, 1_100.0],
    "employment_total": [2_000.0, 2_050.0, 3_000.0, 3_100.0],
    "usd_per_lcu": [1e-4, 1e-4, 4e-5, 4e-5],
})


def _panel() -> pd.DataFrame:
    rows = []
    for r in _IDN_2020:
        rows.append((r[0], "IDN", 2020, *r[1:]))
        if r[0] != "f3":  # f3 exits after 2020
            emp = _EMP_2021[r[0]]
            rows.append((r[0], "IDN", 2021, *r[1:5], emp, *r[6:]))
    rows.append(("f9", "IDN", 2021, "S1", "P2", 20, "micro", 2, 6, 0, 0, 1, 0, 0, 0, 0, 2021, "G"))
    for r in _VNM:
        for y in (2020, 2021):
            rows.append((r[0], "VNM", y, *r[1:]))
    p = pd.DataFrame(rows, columns=COLS)
    for c in ("owner_female", "urban", "registered", "sells_online", "imports_or_gvc"):
        p[c] = p[c].astype("Float64").astype("boolean")
    p["weight"] = p["weight"].astype(float)
    p["size_class"] = pd.Categorical(p["size_class"], ["micro", "small", "medium", "large"])
    return p


PANEL = _panel()


# ---------------------------------------------------------------------------------------------
# the reference ("by hand") estimator
# ---------------------------------------------------------------------------------------------
def design_var(p: pd.DataFrame, u: np.ndarray) -> float:
    """sum_h n_h/(n_h-1) sum_i (z_hi - zbar_h)^2, strata nested in countries, all PSUs counted."""
    z = pd.DataFrame({"c": p["country"], "h": p["strata"], "i": p["psu"], "u": u})
    z = z.groupby(["c", "h", "i"])["u"].sum()
    v = 0.0
    for _, zh in z.groupby(level=[0, 1]):
        n = len(zh)
        v += n / (n - 1) * float(((zh - zh.mean()) ** 2).sum())
    return v


def design_df(p: pd.DataFrame, u: np.ndarray) -> float:
    """Satterthwaite effective df by hand: (sum_h v_h)^2 / sum_h v_h^2/(n_h - 1)."""
    z = pd.DataFrame({"c": p["country"], "h": p["strata"], "i": p["psu"], "u": u})
    z = z.groupby(["c", "h", "i"])["u"].sum()
    v, v2 = 0.0, 0.0
    for _, zh in z.groupby(level=[0, 1]):
        n = len(zh)
        vh = n / (n - 1) * float(((zh - zh.mean()) ** 2).sum())
        v, v2 = v + vh, v2 + vh * vh / (n - 1)
    return v * v / v2


def ref_ratio(p, y, x, dom, macro_den=None, scale=100.0):
    w = p["weight"].to_numpy()
    d = np.asarray(dom, dtype=float)
    y = np.nan_to_num(np.asarray(y, dtype=float)) * d
    x = np.nan_to_num(np.asarray(x, dtype=float)) * d
    big_y = float((w * y).sum())
    if macro_den is not None:
        return scale * big_y / macro_den, scale * math.sqrt(design_var(p, w * y)) / macro_den
    big_x = float((w * x).sum())
    r = big_y / big_x
    return scale * r, scale * math.sqrt(design_var(p, w * (y - r * x) / big_x))


def ref_total(p, y, dom):
    w = p["weight"].to_numpy()
    u = w * np.nan_to_num(np.asarray(y, dtype=float)) * np.asarray(dom, dtype=float)
    return float(u.sum()), math.sqrt(design_var(p, u))


def f(col: str, p: pd.DataFrame = PANEL) -> np.ndarray:
    return p[col].to_numpy(dtype=float, na_value=np.nan)


MSME = PANEL["size_class"].isin(["micro", "small", "medium"]).to_numpy(dtype=float)
LARGE = 1.0 - MSME


def cell(out, ind, area, year, breakdown="total", group="total"):
    r = out[(out["indicator"] == ind) & (out["ref_area"] == area) & (out["time_period"] == year)
            & (out["breakdown"] == breakdown) & (out["group"] == group)]
    assert len(r) == 1, (ind, area, year, breakdown, group, len(r))
    return r.iloc[0]


@pytest.fixture(scope="module")
def out() -> pd.DataFrame:
    return compute(PANEL, MACRO, breakdowns=["owner_female", "size_class"], disclosure=False)


@pytest.fixture(scope="module")
def out_nominal() -> pd.DataFrame:
    return compute(PANEL, MACRO, breakdowns=["owner_female", "size_class"], disclosure=False,
                   df="nominal")


def at(area, year):
    return ((PANEL["country"] == area) & (PANEL["year"] == year)).to_numpy()


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def test_registry_has_the_ten_kpis_with_metadata():
    reg = registry()
    assert [f"K{i:02d}" for i in range(1, 11)] == reg["id"].tolist()[:10]
    assert {"O01", "O02", "O03", "O04", "O05", "O06"} <= set(reg["id"])
    confirmed = set(reg.loc[reg["status"].str.startswith("confirmed"), "id"])
    assert confirmed == {"K03", "K06", "K07", "K08"}
    assert set(reg["status"]) == {"confirmed (JAIF KPI monitoring brief)",
                                  "operational definition (msme-eval)"}
    for col in ("id", "name", "definition", "numerator", "denominator", "unit", "direction",
                "goal", "status", "source", "sdg", "required_columns", "macro_fallback"):
        assert col in reg.columns
    assert reg.set_index("id").loc["O02", "sdg"] == "9.3.2"
    assert reg.set_index("id").loc["K06", "macro_fallback"] == "business_loans_total"
    assert set(reg["goal"]) <= {"A", "B", "C", "D", "E", "overall"}
    assert reg["numerator"].str.len().gt(0).all()


def test_registry_from_a_ministry_file(tmp_path: Path):
    doc = yaml.safe_load(indicators.DEFAULT_PATH.read_text())
    doc["indicators"] = [e for e in doc["indicators"] if e["id"] == "K05"]
    doc["indicators"][0]["id"] = "NAT1"
    doc["indicators"][0]["name"] = "Online sellers (national)"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    reg = registry(path)
    assert reg["id"].tolist() == ["NAT1"]
    res = compute(PANEL, MACRO, registry=path, disclosure=False, aggregate=False)
    assert set(res["indicator"]) == {"NAT1"}
    bad = dict(doc)
    bad["indicators"] = [dict(doc["indicators"][0], direction="sideways")]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(RegistryError, match="NAT1.*direction"):
        registry(path)


# ---------------------------------------------------------------------------------------------
# every indicator against the reference
# ---------------------------------------------------------------------------------------------
def _reference(ind: str, area: str, year: int):
    d = at(area, year)
    emp, va = f("employees"), f("value_added")
    age = f("year") - f("birth_year")

    def macro(col):
        m = MACRO[(MACRO["country"] == area) & (MACRO["year"] == year)]
        return float(m[col].iloc[0])

    if ind == "K01":
        return ref_ratio(PANEL, MSME, np.ones(len(PANEL)), d)
    if ind == "K02":
        return ref_ratio(PANEL, emp * MSME, emp, d)
    if ind == "K03":
        return ref_ratio(PANEL, va * MSME, None, d, macro_den=macro("gdp"))
    if ind == "K04":
        w = PANEL["weight"].to_numpy() * d
        a, b, c, e = w * va * MSME, w * emp * MSME, w * va * LARGE, w * emp * LARGE
        big = [x.sum() for x in (a, b, c, e)]
        r = (big[0] / big[1]) / (big[2] / big[3])
        u = r * (a / big[0] - b / big[1] - c / big[2] + e / big[3])
        return r, math.sqrt(design_var(PANEL, u))
    if ind in ("K05", "K09", "O01"):
        col = {"K05": "sells_online", "K09": "registered", "O01": "owner_female"}[ind]
        return ref_ratio(PANEL, f(col) * MSME, MSME, d)
    if ind in ("K06", "K07"):
        col = {"K06": "loans_outstanding", "K07": "exports"}[ind]
        ok = ~np.isnan(f(col))  # available case: f6's missing loans out of both
        return ref_ratio(PANEL, f(col) * MSME, f(col), d & ok)
    if ind == "K08":
        intl = ((f("exports") > 0) | (f("imports_or_gvc") == 1)).astype(float)
        return ref_ratio(PANEL, intl * MSME, MSME, d)
    if ind == "K10":
        return ref_ratio(PANEL, (age <= 1) * MSME, MSME, d)
    if ind == "O06":
        return ref_ratio(PANEL, (age <= 5) * MSME, MSME, d)
    if ind == "O05":
        return ref_ratio(PANEL, (1 - f("urban")) * MSME, MSME, d)
    if ind == "O02":
        ok = ~np.isnan(f("loans_outstanding"))
        return ref_ratio(PANEL, (f("loans_outstanding") > 0) * MSME, MSME, d & ok)
    prev = at(area, year - 1)
    nxt = PANEL.set_index(["firm_id", "year"])["employees"]
    later = np.array([nxt.get((fid, y + 1), np.nan) for fid, y in zip(PANEL["firm_id"],
                                                                        PANEL["year"])])
    if ind == "O03":
        return ref_ratio(PANEL, (~np.isnan(later)).astype(float) * MSME, MSME, prev)
    if ind == "O04":
        change = np.where(prev, np.nan_to_num(later) - emp, 0.0) * MSME
        entrant = np.where(d & (f("birth_year") == year), emp, 0.0) * MSME
        return ref_total(PANEL, change + entrant, np.ones(len(PANEL)))
    raise AssertionError(ind)


EXPECTED_AVAILABLE = {
    ("IDN", 2020): [f"K{i:02d}" for i in range(1, 11)] + ["O01", "O02", "O05", "O06"],
    ("IDN", 2021): [f"K{i:02d}" for i in range(1, 11)] + [f"O0{i}" for i in range(1, 7)],
}


@pytest.mark.parametrize("area,year,ind", [(a, y, i) for (a, y), ids in EXPECTED_AVAILABLE.items()
                                           for i in ids])
def test_every_indicator_matches_hand_computation(out, out_nominal, area, year, ind):
    value, se = _reference(ind, area, year)
    for table in (out, out_nominal):
        row = cell(table, ind, area, year)
        assert row["obs_status"] in ("A",)
        assert row["value"] == pytest.approx(value, rel=1e-9)
        assert row["se"] == pytest.approx(se, rel=1e-9, abs=1e-12)
        assert row["df_nominal"] == 2  # the country's design: 4 PSUs - 2 strata
    # df="nominal": CI with the country's design df (R svyciprop(method="logit", df=degf) for
    # percentages of firms and shares of a panel total, svymean + confint(df=degf) otherwise)
    row = cell(out_nominal, ind, area, year)
    assert row["df"] == 2 and row["df_rule"] == "nominal"
    lo, hi = _hand_interval(ind, value, se, 2)
    assert row["ci_low"] == pytest.approx(lo, rel=1e-9, abs=1e-12)
    assert row["ci_high"] == pytest.approx(hi, rel=1e-9, abs=1e-12)
    # default: Satterthwaite df in [1, 2] (2 strata of 2 PSUs), CI with it
    row = cell(out, ind, area, year)
    assert row["df_rule"] == "satterthwaite"
    if se > 0:
        assert 1.0 - 1e-9 <= row["df"] <= 2.0 + 1e-9
        lo, hi = _hand_interval(ind, value, se, row["df"])
        assert row["ci_low"] == pytest.approx(lo, rel=1e-9, abs=1e-12)
        assert row["ci_high"] == pytest.approx(hi, rel=1e-9, abs=1e-12)


#: percentages of firms (a mean of a 0/1 feature) and the MSME shares of the panel's
#: employment, loans and exports (K02 K06 K07; these cells' denominators are the panel's, status
#: A): logit interval, as R svyciprop's default
PERCENT_OF_FIRMS = {"K01", "K05", "K08", "K09", "K10", "O01", "O02", "O03", "O05", "O06"}
LOGIT_SCALE = PERCENT_OF_FIRMS | {"K02", "K06", "K07"}


def _hand_interval(ind: str, value: float, se: float, df: float) -> tuple[float, float]:
    from scipy import stats
    t = stats.t.ppf(0.975, df)
    if ind == "K04" and value > 0:  # log scale for the positive ratio (survey.log_interval)
        return value * np.exp(-t * se / value), value * np.exp(t * se / value)
    if ind not in LOGIT_SCALE:
        return value - t * se, value + t * se
    p = value / 100
    if p in (0.0, 1.0):
        return value, value
    half = t * (se / 100) / (p * (1 - p))
    return tuple(100 / (1 + np.exp(-(np.log(p / (1 - p)) + s * half))) for s in (-1, 1))


@pytest.mark.parametrize("ind,num,den", [("K05", "sells_online", None), ("K02", None, None)])
def test_satterthwaite_df_by_hand(out, ind, num, den):
    d = at("IDN", 2020)
    w = PANEL["weight"].to_numpy() * d
    emp = f("employees")
    y, x = (f(num) * MSME, MSME) if ind == "K05" else (emp * MSME, emp)
    y, x = np.nan_to_num(y), np.nan_to_num(x)
    r = (w * y).sum() / (w * x).sum()
    u = w * (y - r * x) / (w * x).sum()
    row = cell(out, ind, "IDN", 2020)
    assert row["df"] == pytest.approx(design_df(PANEL, u), rel=1e-9)
    assert row["n_psu"] == 4


def test_literal_hand_values(out):
    # K05 IDN 2020: MSMEs f1(10, online) f2(10) f3(20) f4(5, online) f6(20) f7(10, online)
    #   = (10 + 5 + 10) / (10 + 10 + 20 + 5 + 20 + 10) = 25 / 75
    assert cell(out, "K05", "IDN", 2020)["value"] == pytest.approx(100 * 25 / 75)
    # K01 IDN 2020: MSME weight 75 of 77
    assert cell(out, "K01", "IDN", 2020)["value"] == pytest.approx(100 * 75 / 77)
    # O04 IDN 2021: 10*(3-2) + 10*(11-10) + 20*(0-3) [exit] + 5*(58-60) + 20*(2-1) + 10*(22-20)
    #   + entrant f9: 20*2 = 10 + 10 - 60 - 10 + 20 + 20 + 40 = 30 jobs
    assert cell(out, "O04", "IDN", 2021)["value"] == pytest.approx(30.0)
    # O03 IDN 2021: f3 (w 20) of 75 did not survive -> 55/75
    assert cell(out, "O03", "IDN", 2021)["value"] == pytest.approx(100 * 55 / 75)
    assert cell(out, "K02", "IDN", 2020)["n"] == 6
    assert set(out["unit"][out["indicator"] == "K04"]) == {"ratio"}


def test_output_columns_and_types(out):
    assert list(out.columns) == list(indicators.OUTPUT_COLUMNS)
    assert out.choices["df"] == "satterthwaite" and out.alpha == 0.05
    assert out.tidy()["estimate"].equals(out["value"]) and out.title == "MSME indicators"
    assert set(out["obs_status"]) <= {"A", "E", "M"}
    assert out["time_period"].dtype == np.int64


# ---------------------------------------------------------------------------------------------
# not available, macro fallback
# ---------------------------------------------------------------------------------------------
def test_missing_column_gives_M_rows_not_an_exception():
    p = PANEL.drop(columns=["sells_online"])
    res = compute(p, MACRO, disclosure=False)
    k05 = res[res["indicator"] == "K05"]
    assert len(k05) == 6  # 2 countries + ASEAN, 2 years
    assert (k05["obs_status"] == "M").all() and k05["value"].isna().all()
    assert k05["comment"].str.contains("sells_online").all()


def test_column_all_missing_for_one_country(out):
    vnm = cell(out, "K05", "VNM", 2020)
    assert vnm["obs_status"] == "M" and math.isnan(vnm["value"])
    assert "sells_online missing for all MSME records of VNM 2020" in vnm["comment"]
    # ASEAN K05 then pools IDN only, and says so
    asean = cell(out, "K05", "ASEAN", 2020)
    assert asean["value"] == pytest.approx(cell(out, "K05", "IDN", 2020)["value"])
    assert "countries: IDN" in asean["comment"] and "not available: VNM" in asean["comment"]


def test_first_year_has_no_survival_or_net_jobs(out):
    for ind in ("O03", "O04"):
        r = cell(out, ind, "IDN", 2020)
        assert r["obs_status"] == "M" and "previous year" in r["comment"]


def test_macro_denominator_when_panel_has_no_large_firms(out):
    d = at("VNM", 2020)
    emp = f("employees")
    value, se = ref_ratio(PANEL, emp * MSME, None, d, macro_den=3000.0)
    r = cell(out, "K02", "VNM", 2020)
    assert r["obs_status"] == "E" and "employment_total" in r["comment"]
    assert r["value"] == pytest.approx(value, rel=1e-12)
    assert r["se"] == pytest.approx(se, rel=1e-9)
    # hand: (50*2 + 30*15 + 50*4 + 10*80) / 3000 = 1550 / 3000
    assert r["value"] == pytest.approx(100 * 1550 / 3000)
    # a macro denominator makes K02 a scaled panel total, not a share of the panel's own
    # employment: the symmetric t interval (the panel-denominator cells: logit)
    from scipy import stats
    half = stats.t.ppf(0.975, r["df"]) * r["se"]
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((r["value"] - half, r["value"] + half),
                                                        rel=1e-12)
    for ind, col in (("K06", "business_loans_total"), ("K07", "exports_total")):
        assert cell(out, ind, "VNM", 2021)["obs_status"] == "E"
        assert col in cell(out, ind, "VNM", 2021)["comment"]
    # K01 and K04 cannot be estimated without large firms
    for ind in ("K01", "K04"):
        r = cell(out, ind, "VNM", 2020)
        assert r["obs_status"] == "M" and "no large firms" in r["comment"]
    # K03 always divides by GDP: normal status
    r = cell(out, "K03", "VNM", 2020)
    assert r["obs_status"] == "A" and r["comment"] == "denominator: macro gdp"
    assert r["value"] == pytest.approx(100 * (50 * 5 + 30 * 60 + 50 * 8 + 10 * 400) / 50_000)
    # IDN has large firms: panel denominators, status A
    assert cell(out, "K02", "IDN", 2020)["obs_status"] == "A"


def test_no_macro_table():
    res = compute(PANEL, None, disclosure=False)
    r = cell(res, "K03", "IDN", 2020)
    assert r["obs_status"] == "M" and "no macro table" in r["comment"]
    assert cell(res, "K02", "VNM", 2020)["obs_status"] == "M"
    assert cell(res, "K02", "IDN", 2020)["obs_status"] == "A"
    # money indicators cannot be pooled without exchange rates
    assert cell(res, "K04", "ASEAN", 2020)["obs_status"] == "M"
    assert cell(res, "K05", "ASEAN", 2020)["obs_status"] == "A"


# ---------------------------------------------------------------------------------------------
# ASEAN aggregate
# ---------------------------------------------------------------------------------------------
def test_asean_pooled_ratio_with_countries_as_strata(out):
    d = (PANEL["year"] == 2021).to_numpy()
    value, se = ref_ratio(PANEL, f("registered") * MSME, MSME, d)
    r = cell(out, "K09", "ASEAN", 2021)
    assert r["value"] == pytest.approx(value, rel=1e-9)
    assert r["se"] == pytest.approx(se, rel=1e-9)
    assert r["n"] == cell(out, "K09", "IDN", 2021)["n"] + cell(out, "K09", "VNM", 2021)["n"]
    assert r["df_nominal"] == 3  # (4 - 2) + (2 - 1)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(_hand_interval("K09", value, se, r["df"]),
                                                        rel=1e-9)
    y, x = np.nan_to_num(f("registered") * MSME), MSME
    w = PANEL["weight"].to_numpy() * d
    ratio = (w * y).sum() / (w * x).sum()
    # Satterthwaite over the strata of both countries (countries are strata of the region)
    assert r["df"] == pytest.approx(design_df(PANEL, w * (y - ratio * x) / (w * x).sum()),
                                    rel=1e-9)


def test_asean_money_in_usd_and_macro_mix(out):
    # K03: sum of MSME value added in USD / sum of GDP in USD
    rate = np.where(PANEL["country"] == "IDN", 1e-4, 4e-5)
    d = (PANEL["year"] == 2020).to_numpy()
    gdp = 100_000 * 1e-4 + 50_000 * 4e-5
    p = PANEL.assign(weight=PANEL["weight"] * rate)
    value, se = ref_ratio(p, f("value_added") * MSME, None, d, macro_den=gdp)
    r = cell(out, "K03", "ASEAN", 2020)
    assert r["value"] == pytest.approx(value, rel=1e-9)
    assert r["se"] == pytest.approx(se, rel=1e-9)
    assert "USD" in r["comment"]
    # K07: IDN panel exports (all firms) + VNM macro exports in the denominator -> status E
    w = PANEL["weight"].to_numpy() * rate * d
    ex = f("exports")
    idn = (PANEL["country"] == "IDN").to_numpy()
    num = float((w * ex * MSME).sum())
    den = float((w * ex * idn).sum()) + 2_000 * 4e-5
    r = cell(out, "K07", "ASEAN", 2020)
    assert r["obs_status"] == "E"
    assert r["value"] == pytest.approx(100 * num / den, rel=1e-9)
    # K01 pools only countries with large firms
    assert "not available: VNM" in cell(out, "K01", "ASEAN", 2020)["comment"]


# ---------------------------------------------------------------------------------------------
# breakdowns
# ---------------------------------------------------------------------------------------------
def test_breakdown_domain_on_the_full_design(out):
    # women-owned MSMEs selling online, IDN 2020: domain estimate (PSU P4 has no women owners)
    fem = f("owner_female") == 1
    d = at("IDN", 2020) & fem
    value, se = ref_ratio(PANEL, f("sells_online") * MSME, MSME, d)
    r = cell(out, "K05", "IDN", 2020, "owner_female", "female")
    assert r["value"] == pytest.approx(value, rel=1e-9)
    assert r["se"] == pytest.approx(se, rel=1e-9)
    assert cell(out, "K05", "IDN", 2020, "owner_female", "male")["n"] == 3


def test_share_of_total_breakdown_is_a_contribution(out):
    # micro firms' share of all employment, IDN 2021 (the denominator is the country total)
    d = at("IDN", 2021)
    micro = (PANEL["size_class"] == "micro").to_numpy(dtype=float)
    emp = f("employees")
    value, se = ref_ratio(PANEL, emp * micro, emp, d)
    r = cell(out, "K02", "IDN", 2021, "size_class", "micro")
    assert r["value"] == pytest.approx(value, rel=1e-9)
    assert r["se"] == pytest.approx(se, rel=1e-9)
    groups = out[(out["indicator"] == "K02") & (out["ref_area"] == "IDN")
                 & (out["time_period"] == 2021) & (out["breakdown"] == "size_class")]
    assert sorted(groups["group"]) == ["medium", "micro", "small"]  # no "large" cell
    assert groups["value"].sum() == pytest.approx(cell(out, "K02", "IDN", 2021)["value"])
    # K04 for micro firms against all large firms of the country-year
    w = PANEL["weight"].to_numpy() * d
    va = f("value_added")
    a, b, c, e = w * va * micro, w * emp * micro, w * va * LARGE, w * emp * LARGE
    big = [x.sum() for x in (a, b, c, e)]
    rr = (big[0] / big[1]) / (big[2] / big[3])
    u = rr * (a / big[0] - b / big[1] - c / big[2] + e / big[3])
    r = cell(out, "K04", "IDN", 2021, "size_class", "micro")
    assert r["value"] == pytest.approx(rr, rel=1e-9)
    assert r["se"] == pytest.approx(math.sqrt(design_var(PANEL, u)), rel=1e-9)


def test_missing_breakdown_column_is_reported():
    res = compute(PANEL, MACRO, breakdowns=["region"], disclosure=False, indicators=["K05"])
    reg = res[res["breakdown"] == "region"]
    assert len(reg) == 4 and (reg["obs_status"] == "M").all()
    assert reg["comment"].str.contains("region").all()


# ---------------------------------------------------------------------------------------------
# disclosure control
# ---------------------------------------------------------------------------------------------
def test_disclosure_suppresses_small_cells():
    res = compute(PANEL, MACRO, breakdowns=["sector"])
    # sector A in IDN 2020 has 2 MSMEs (f6, f7): suppressed for the count rule
    r = cell(res, "K05", "IDN", 2020, "sector", "A")
    assert r["conf_status"] == "A" and math.isnan(r["value"]) and math.isnan(r["se"])
    # ...and its relation partner is secondarily suppressed or itself primary-suppressed
    rel = res[(res["indicator"] == "K05") & (res["ref_area"] == "IDN")
              & (res["time_period"] == 2020) & (res["breakdown"] == "sector")]
    assert (rel["conf_status"] != "F").sum() >= 2
    published = res[res["conf_status"] == "F"]
    assert (published.loc[published["obs_status"] != "M", "n"] >= 3).all()
    # without disclosure (internal exploration) the value is there
    raw = compute(PANEL, MACRO, breakdowns=["sector"], disclosure=False)
    assert not math.isnan(cell(raw, "K05", "IDN", 2020, "sector", "A")["value"])
    assert raw["conf_status"].isna().all()


def test_dominance_on_magnitudes():
    # K07 IDN 2020 MSME exports: f2 20, f4 100, f7 10 -> top two 120/130 > 85 %
    res = compute(PANEL, MACRO, indicators=["K07"], aggregate=False)
    assert cell(res, "K07", "IDN", 2020)["conf_status"] == "T"
    assert math.isnan(cell(res, "K07", "IDN", 2020)["value"])


# ---------------------------------------------------------------------------------------------
# design defaults and argument errors
# ---------------------------------------------------------------------------------------------
def test_census_without_design_columns():
    """No weight/strata/psu: weight 1, one stratum per country, the firm is the PSU."""
    p = PANEL.drop(columns=["weight", "strata", "psu"])
    res = compute(p, MACRO, indicators=["K05"], disclosure=False, aggregate=False)
    r = cell(res, "K05", "IDN", 2020)
    # 3 of 6 MSMEs sell online (f1, f4, f7)
    assert r["value"] == pytest.approx(50.0)
    q = PANEL.assign(weight=1.0, strata=PANEL["country"], psu=PANEL["firm_id"])
    value, se = ref_ratio(q, f("sells_online") * MSME, MSME, at("IDN", 2020))
    assert r["se"] == pytest.approx(se, rel=1e-9)
    assert any("census" in n for n in res.attrs["design_notes"])


def test_argument_errors():
    with pytest.raises(KeyError, match="K99"):
        compute(PANEL, MACRO, indicators=["K99"])
    with pytest.raises(KeyError, match="nation"):
        compute(PANEL, MACRO, by=("nation", "year"))
    with pytest.raises(ValueError, match="weight"):
        compute(PANEL.assign(weight=0.0), MACRO)


def test_rows_are_sorted_total_first(out):
    k05 = out[(out["indicator"] == "K05") & (out["ref_area"] == "IDN")]
    assert k05["breakdown"].iloc[0] == "total"
    assert list(dict.fromkeys(out["indicator"]))[:3] == ["K01", "K02", "K03"]


# ---------------------------------------------------------------------------------------------
# property: no published cell violates the primary rules
# ---------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(4, 14))
def test_published_rows_pass_the_primary_rules(seed, n):
    rng = np.random.default_rng(seed)
    rows = []
    for c in ("IDN", "THA"):
        for i in range(n):
            rows.append(dict(
                firm_id=f"{c}{i}", country=c, year=2020, strata=f"S{i % 2}", psu=f"P{i % 4}",
                weight=float(rng.uniform(1, 30)),
                size_class=rng.choice(["micro", "small", "medium", "large"], p=[.5, .2, .15, .15]),
                employees=int(rng.integers(1, 300)), value_added=float(rng.lognormal(3, 2)),
                exports=float(rng.lognormal(2, 2) * (rng.random() < .5)),
                loans_outstanding=float(rng.lognormal(2, 1)), owner_female=bool(rng.random() < .5),
                urban=bool(rng.random() < .5), registered=bool(rng.random() < .7),
                sells_online=bool(rng.random() < .4), imports_or_gvc=bool(rng.random() < .2),
                birth_year=int(rng.integers(2010, 2021)), sector=str(rng.choice(list("ACG")))))
    p = pd.DataFrame(rows)
    for col in ("owner_female", "urban", "registered", "sells_online", "imports_or_gvc"):
        p[col] = p[col].astype("boolean")
    macro = MACRO.assign(country=MACRO["country"].replace({"VNM": "THA"}))
    res = compute(p, macro, breakdowns=["sector", "owner_female"],
                  indicators=["K02", "K05", "K07"])
    pub = res[(res["conf_status"] == "F") & (res["obs_status"] != "M")]
    assert (pub["n"] >= 3).all()
    assert res.loc[res["conf_status"] != "F", "value"].isna().all()
    # (2, 85%) dominance on MSME exports, country totals
    for _, r in pub[(pub["indicator"] == "K07") & (pub["breakdown"] == "total")
                    & (pub["ref_area"] != "ASEAN")].iterrows():
        q = p[(p["country"] == r["ref_area"]) & (p["size_class"] != "large")]
        ex = np.sort(q["exports"].to_numpy())[::-1]
        assert ex[:2].sum() <= 0.85 * ex.sum() + 1e-9


# ---------------------------------------------------------------------------------------------
# planted truth: the synthetic sample (msme_eval.synth) is calibrated to published shares
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic():
    from msme_eval import synth
    return synth.generate(n_firms=1000, seed=3)


def test_synthetic_calibration_is_reproduced(synthetic):
    d = synthetic
    res = compute(d.panel, d.macro, indicators=["K01", "K02", "K03", "K06", "K07"],
                  disclosure=False, aggregate=False)
    names = {"msme_share_enterprises": "K01", "msme_share_employment": "K02",
             "msme_share_gdp": "K03", "msme_share_business_loans": "K06",
             "msme_share_exports": "K07"}
    cal = d.calibration.assign(ind=d.calibration["indicator"].map(names))
    x = cal.merge(res, left_on=["ind", "country", "year"],
                  right_on=["indicator", "ref_area", "time_period"])
    assert len(x) == len(cal) == 50
    np.testing.assert_allclose(x["value"], x["achieved"], rtol=1e-10)
    assert (x["obs_status"] == "A").all()


def test_macro_fallback_agrees_with_full_coverage(synthetic):
    """synth's macro totals are the weighted totals over all enterprises, so dropping the
    large firms and using the macro denominators must give the same shares (flagged E)."""
    d = synthetic
    ids = ["K02", "K06", "K07"]
    full = compute(d.panel, d.macro, indicators=ids, disclosure=False, aggregate=False)
    msme_only = d.panel[d.panel["size_class"] != "large"]
    part = compute(msme_only, d.macro, indicators=ids, disclosure=False, aggregate=False)
    assert (part["obs_status"] == "E").all() and (full["obs_status"] == "A").all()
    np.testing.assert_allclose(part["value"], full["value"], rtol=1e-9)


def test_availability_matrix(out):
    m = indicators.availability(out)
    assert m.loc["K05", "VNM"] == "0/2" and m.loc["K05", "IDN"] == "2/2"
    assert m.loc["O03", "IDN"] == "1/2"
    y = indicators.availability(out, year=2020)
    assert y.loc["K02", "VNM"] == "estimated (macro)" and y.loc["K01", "VNM"] == "not available"
    assert y.loc["K02", "IDN"] == "available"


# ---------------------------------------------------------------------------------------------
# calibration-aware variance (weights post-stratified to stratum counts per period)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_year_by_size() -> pd.DataFrame:
    """One survey year whose strata are the size classes (the calibration cells)."""
    from msme_eval import synth
    p = synth.generate(n_firms=1500, years=range(2020, 2022), seed=5, missing=0.0).panel
    p = p[p["year"] == 2020].reset_index(drop=True)
    return p.assign(strata=p["size_class"].astype(str))


def test_calibrated_k01_has_zero_se(one_year_by_size):
    # K01 (MSME share of enterprises) is a function of the stratum counts only: known exactly
    # once the weights are calibrated to them
    p = one_year_by_size
    kw = dict(indicators=["K01"], disclosure=False, aggregate=False)
    cal = compute(p, calibrated_to="strata", **kw)
    plain = compute(p, **kw)
    ok = cal["obs_status"] == "A"
    assert ok.sum() >= 5
    np.testing.assert_allclose(cal.loc[ok, "value"], plain.loc[ok, "value"], rtol=1e-12)
    assert (plain.loc[ok, "se"] > 1e-4).all()
    # zero up to rounding (variance ~1e-16 of the uncalibrated one)
    assert (cal.loc[ok, "se"] <= 1e-7 * plain.loc[ok, "se"]).all()
    assert cal.choices["calibrated_to"] == "strata"


def test_calibrated_share_matches_the_survey_estimator(one_year_by_size):
    # K05 (MSMEs selling online / MSMEs), post-stratified: the indicator table's residual pass
    # gives the SE of survey.ratio(..., calibrated_to="strata") on the same design
    from msme_eval import survey
    p = one_year_by_size.assign(
        country_stratum=lambda x: x["country"] + "|" + x["strata"],
        msme=lambda x: x["size_class"].isin(["micro", "small", "medium"]).astype(float),
        online_msme=lambda x: x["sells_online"].astype(float) * x["msme"])
    got = compute(p, indicators=["K05"], calibrated_to="strata", disclosure=False,
                  aggregate=False, df="nominal")
    ref = survey.ratio(p, "online_msme", "msme", weight="weight", strata="country_stratum",
                       psu="psu", by="country", calibrated_to="strata", df="nominal")
    ref = ref.set_index("country")
    got = got[got["obs_status"] == "A"].set_index("ref_area")
    assert len(got) >= 5
    for area, row in got.iterrows():
        assert row["value"] == pytest.approx(100 * ref.loc[area, "estimate"], rel=1e-9)
        assert row["se"] == pytest.approx(100 * ref.loc[area, "se"], rel=1e-8)


def test_calibrated_needs_the_pandas_stage(tmp_path, one_year_by_size):
    path = tmp_path / "p.parquet"
    one_year_by_size.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="engine='pandas'"):
        compute(str(path), indicators=["K01"], calibrated_to="strata", disclosure=False)
    out = compute(str(path), indicators=["K01"], calibrated_to="strata", disclosure=False,
                  engine="pandas", aggregate=False)
    assert (out.loc[out["obs_status"] == "A", "se"] < 1e-6).all()
