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


# --------------------------------------------------------------------------------------------
# K04: the comparison group (large firms) obeys the rules too, on both engines
# --------------------------------------------------------------------------------------------
BALANCED = [(300, 9000.0), (400, 11000.0), (350, 10000.0), (500, 12000.0)]
#: large firms (employees, value added) per country-year: IDN 2020 has ONE large firm; THA
#: 2021 has three, one of them holding 99.998% of their value added; every other cell is fine
LARGE = {("IDN", 2020): [(300, 9000.0)], ("THA", 2021): [(300, 1e6), (400, 10.0), (350, 10.0)]}
COUNTRIES, YEARS = ("IDN", "THA", "VNM"), (2020, 2021, 2022)


def k04_panel() -> pd.DataFrame:
    """A census (weight 1): 6 MSMEs per country-year (3 women-owned), value added spread
    evenly so their own cells always pass, and the large firms of ``LARGE`` (else BALANCED)."""
    rows = []
    for k, c in enumerate(COUNTRIES):
        for y in YEARS:
            for i in range(6):
                rows.append(dict(firm_id=f"{c}m{i}", country=c, year=y, owner_female=bool(i % 2),
                                 size_class=("micro", "small", "medium")[i % 3],
                                 employees=5 + 3 * i + k, value_added=100.0 + 20 * i + 7 * k + y % 10))
            for j, (emp, va) in enumerate(LARGE.get((c, y), BALANCED)):
                rows.append(dict(firm_id=f"{c}L{j}", country=c, year=y, owner_female=False,
                                 size_class="large", employees=emp + k, value_added=va))
    p = pd.DataFrame(rows)
    p["owner_female"] = p["owner_female"].astype("boolean")
    return p


def k04_by_hand(p: pd.DataFrame, country: str, year: int, female: bool | None = None) -> float:
    """(VA / employee of the cell's MSMEs) / (VA / employee of ALL large firms of the
    country-year), weight 1."""
    cy = p[(p["country"] == country) & (p["year"] == year)]
    m = cy[cy["size_class"] != "large"]
    if female is not None:
        m = m[m["owner_female"] == female]
    large = cy[cy["size_class"] == "large"]
    return (m["value_added"].sum() / m["employees"].sum()) / (
        large["value_added"].sum() / large["employees"].sum())


@pytest.fixture(scope="module")
def k04(tmp_path_factory) -> dict[str, pd.DataFrame]:
    p = k04_panel()
    path = tmp_path_factory.mktemp("k04") / "panel.parquet"
    p.to_parquet(path, index=False)
    macro = pd.DataFrame([(c, y, 1.0) for c in COUNTRIES for y in YEARS],
                         columns=["country", "year", "usd_per_lcu"])
    kw = dict(indicators=["K04"], breakdowns=["owner_female"])
    return {"panel": p, "pandas": me.indicators.compute(p, macro, **kw),
            "duckdb": me.indicators.compute(str(path), macro, engine="duckdb", **kw),
            "raw": me.indicators.compute(p, macro, disclosure=False, **kw)}


def _rows(res: pd.DataFrame, area: str, year: int) -> pd.DataFrame:
    return res[(res["ref_area"] == area) & (res["time_period"] == year)]


def test_k04_suppressed_where_one_large_firm(k04):
    """IDN 2020 (one large firm): the total and every owner_female cell are suppressed (A)
    with a comment naming the comparison group; without disclosure the value is there."""
    res, raw = k04["pandas"], k04["raw"]
    idn = _rows(res, "IDN", 2020)
    assert len(idn) == 3 and (idn["conf_status"] == "A").all() and idn["value"].isna().all()
    assert idn["se"].isna().all() and idn["ci_low"].isna().all()
    assert idn["comment"].str.contains(
        "comparison group (large firms of IDN 2020) has fewer than 3 contributing firms",
        regex=False).all()
    assert (idn["n"] == [6, 3, 3]).all()  # the MSME cells alone would have passed
    unprotected = _rows(raw, "IDN", 2020).set_index("group")["value"]
    assert unprotected["total"] == pytest.approx(k04_by_hand(k04["panel"], "IDN", 2020), rel=1e-12)


def test_k04_suppressed_where_the_large_firms_are_dominated(k04):
    """THA 2021: three large firms, one with 99.998% of their value added -> O, and the
    ASEAN 2021 cells (their union) too; the reason names the failed group."""
    res = k04["pandas"]
    for area, where in (("THA", "large firms of THA 2021"),
                        ("ASEAN", "large firms of the included countries")):
        rows = _rows(res, area, 2021)
        assert len(rows) == 3 and (rows["conf_status"] == "O").all() and rows["value"].isna().all()
        assert rows["comment"].str.contains(f"comparison group ({where}) is dominated",
                                            regex=False).all()


def test_k04_published_elsewhere_with_hand_values(k04):
    """Every cell with enough, undominated large firms is published with the hand value."""
    res, p = k04["pandas"], k04["panel"]
    checked = 0
    for c in COUNTRIES:
        for y in YEARS:
            if (c, y) in LARGE:
                continue
            rows = _rows(res, c, y).set_index("group")
            if (rows["conf_status"] == "D").any():
                continue  # secondary suppression, checked below
            assert (rows["conf_status"] == "F").all()
            assert rows.loc["total", "value"] == pytest.approx(k04_by_hand(p, c, y), rel=1e-12)
            for g, fem in (("female", True), ("male", False)):
                assert rows.loc[g, "value"] == pytest.approx(k04_by_hand(p, c, y, fem), rel=1e-12)
            assert not rows["comment"].str.contains("comparison").any()
            checked += 1
    assert checked >= 4
    assert (_rows(res, "ASEAN", 2022)["conf_status"] == "F").all()


def test_k04_secondary_suppression_across_member_states(k04):
    """IDN 2020 suppressed, ASEAN 2020 published (its 9 large firms pass): IDN would be
    recoverable from ASEAN and the others, so one more member state is suppressed (D); no
    relation (countries -> ASEAN; groups -> total) has exactly one suppressed cell."""
    res = k04["pandas"]
    y20 = res[(res["time_period"] == 2020) & (res["breakdown"] == "total")].set_index("ref_area")
    assert y20.loc["ASEAN", "conf_status"] == "F"
    assert (y20.loc[["THA", "VNM"], "conf_status"] == "D").sum() == 1
    hidden = res["conf_status"] != "F"
    for _, rel in res.assign(hidden=hidden).groupby(["time_period", "breakdown", "group"]):
        members = rel[rel["ref_area"] != "ASEAN"]
        if (rel.loc[rel["ref_area"] == "ASEAN", "conf_status"] == "F").all():
            assert members["hidden"].sum() != 1
    for _, rel in res.assign(hidden=hidden).groupby(["ref_area", "time_period"]):
        total = rel[rel["breakdown"] == "total"]
        if (total["conf_status"] == "F").all():
            assert rel.loc[rel["breakdown"] == "owner_female", "hidden"].sum() != 1


def test_k04_protection_identical_across_engines(k04):
    """DuckDB computes the comparison group's statistics in SQL: same statuses, comments and
    values (1e-9) as pandas."""
    a, b = k04["pandas"], k04["duckdb"]
    assert len(a) == len(b) == 3 * len(YEARS) * (len(COUNTRIES) + 1)
    for col in ("ref_area", "time_period", "group", "conf_status", "obs_status", "comment"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("value", "se", "ci_low", "ci_high"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float),
                                   rtol=1e-9, equal_nan=True)
    assert (a["conf_status"] != "F").sum() >= 9


# --------------------------------------------------------------------------------------------
# data-quality page: a panel with a tiny cell
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(panel) -> tuple[pd.DataFrame, str, int]:
    """The small sample with one country-year cut to 2 firms."""
    country = sorted(panel["country"].astype(str).unique())[0]
    year = int(panel["year"].max())
    cell = (panel["country"].astype(str) == country) & (panel["year"] == year)
    keep = set(panel.loc[cell, "firm_id"].unique()[:2])
    return panel[~cell | panel["firm_id"].isin(keep)].reset_index(drop=True), country, year


def test_coverage_counts_suppress_a_tiny_cell_and_protect_it(tiny):
    """The 2-firm cell is A; its country row and its year column each get a second
    suppression (D), so neither the country's record count nor the region's year total
    reveals it; every published count is the hand count (distinct firms) and >= 3."""
    p, country, year = tiny
    counts = protect.coverage_counts(p)
    by = counts.set_index(["country", "year"])
    assert by.loc[(country, year), "conf_status"] == "A" and pd.isna(by.loc[(country, year), "firms"])
    hidden = counts["conf_status"] != "F"
    assert counts.loc[hidden, "conf_status"].isin(["A", "D"]).all()
    for key in ("country", "year"):  # no row/column keeps a single suppressed cell
        per = hidden.groupby(counts[key]).sum()
        assert not (per == 1).any(), per[per == 1]
    assert hidden.groupby(counts["country"]).sum()[country] >= 2
    hand = p.groupby([p["country"].astype(str), "year"])["firm_id"].nunique()
    pub = counts[~hidden]
    assert (pub["firms"].to_numpy() == hand.loc[list(zip(pub["country"], pub["year"]))].to_numpy()).all()
    assert (pub["firms"] >= 3).all()
    wide = protect.coverage_table(counts, country)
    assert wide["country"].tolist() == [country] and wide.loc[0, str(year)] == "[c]"
    assert len(protect.coverage_table(counts, REGION)) == p["country"].nunique()


def test_outlier_rows_need_enough_firms_with_a_value(tiny, panel):
    """A country page on 2 firms: every variable row is suppressed (A); on the full sample
    nothing is, and the numbers are unchanged."""
    from msme_eval.report import summaries as S

    p, country, year = tiny
    two = p[(p["country"].astype(str) == country) & (p["year"] == year)]
    small = protect.outlier_rows(S.outliers(two), two)
    assert (small["conf_status"] == "A").all()
    assert small.drop(columns=["column", "conf_status"]).isna().all().all()
    full_table = S.outliers(panel)
    full = protect.outlier_rows(full_table, panel)
    assert (full["conf_status"] == "F").all()
    pd.testing.assert_frame_equal(full.drop(columns="conf_status"), full_table)


def test_validation_findings_name_no_row_value_or_stratum(panel):
    """A single-PSU stratum and a negative value: the published findings keep the rule, the
    count of affected records and the fix, never the stratum labels, rows or values."""
    from msme_eval import plausibility

    p = panel.copy()
    p["strata"] = p["strata"].astype(str)
    p["psu"] = p["psu"].astype(str)
    first = p.index[(p["country"] == p["country"].iloc[0]) & (p["year"] == p["year"].iloc[0])]
    p.loc[first[:4], "strata"] = "LONELY"
    p.loc[first[:4], "psu"] = "P-LONELY"
    issues = plausibility.check_inputs(p).table
    single = issues[issues["rule"] == "single_psu_stratum"]
    assert len(single) == 1 and "LONELY" in single["message"].iloc[0]
    schema_like = pd.DataFrame([{
        "file": "panel.csv", "column": "employees", "rule": "negative_employees",
        "severity": "warning", "n_rows": 1, "rows": (7,), "values": (-5,),
        "message": "panel.csv: column 'employees' [negative_employees]: employees is negative; "
                   "1 row, first: row 7 (-5)", "fix": "correct it"}])
    out = protect.validation_findings(pd.concat([single, schema_like], ignore_index=True))
    assert out.columns.tolist() == ["severity", "column", "rule", "n_rows", "finding", "fix"]
    text = " ".join(out["finding"]) + " ".join(out["fix"])
    assert "LONELY" not in text and "row 7" not in text and "-5" not in text
    assert "hold a single PSU" in out["finding"].iloc[0]
    assert out["n_rows"].tolist() == [4, 1]  # the stratum's records; the one bad row
    ids = set(p["firm_id"].astype(str))
    assert not any(tok.strip("(),;") in ids for tok in text.split())


def test_k04_comparison_rule_without_a_magnitude_in_the_registry(k04):
    """A ministry registry with K04's ``magnitude`` null (count rule for its own cells): the
    comparison group is still checked -- IDN 2020 suppressed, the balanced cells published."""
    reg = me.indicators.registry()
    reg.loc[reg["id"] == "K04", "magnitude"] = None
    res = me.indicators.compute(k04["panel"], indicators=["K04"], registry=reg, aggregate=False)
    by = res.set_index(["ref_area", "time_period"])
    assert by.loc[("IDN", 2020), "conf_status"] == "A"
    assert "comparison group (large firms of IDN 2020)" in by.loc[("IDN", 2020), "comment"]
    assert by.loc[("THA", 2021), "conf_status"] == "O"
    assert by.loc[("VNM", 2022), "conf_status"] == "F"
    assert by.loc[("VNM", 2022), "value"] == pytest.approx(k04_by_hand(k04["panel"], "VNM", 2022),
                                                          rel=1e-12)


def test_k04_protection_identical_on_spark(k04, tmp_path):
    """Spark computes the comparison group's statistics with ROW_NUMBER (not DuckDB's
    ``max(x, 2)``): same statuses, comments and values as pandas."""
    pytest.importorskip("pyspark")
    import shutil

    if not shutil.which("java"):
        pytest.skip("Java is not on PATH; pyspark needs a JVM")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("msme-eval-k04")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    try:
        path = tmp_path / "panel.parquet"
        k04["panel"].to_parquet(path, index=False)
        macro = pd.DataFrame([(c, y, 1.0) for c in COUNTRIES for y in YEARS],
                             columns=["country", "year", "usd_per_lcu"])
        got = me.indicators.compute(session.read.parquet(str(path)), macro, engine="spark",
                                    indicators=["K04"], breakdowns=["owner_female"])
    finally:
        session.stop()
    want = k04["pandas"]
    for col in ("ref_area", "time_period", "group", "conf_status", "comment"):
        assert got[col].tolist() == want[col].tolist(), col
    np.testing.assert_allclose(got["value"].to_numpy(float), want["value"].to_numpy(float),
                               rtol=1e-9, equal_nan=True)


def test_counts_beside_a_suppressed_value_are_withheld():
    from msme_eval.report import display
    from msme_eval.report.protect import withhold_counts
    table = pd.DataFrame({"indicator": ["K04", "K04"], "time_period": [2020, 2020],
                          "value": [41.5, np.nan], "n": [10, 2], "n_psu": [4, 1],
                          "df": [3.0, 1.0], "conf_status": ["F", "A"]})
    out = withhold_counts(table)
    assert out.loc[0, ["n", "n_psu", "df"]].tolist() == [10, 4, 3.0]  # published row kept
    assert out.loc[1, ["n", "n_psu", "df"]].isna().all()  # "[c]" never reads "2 firms"
    assert out["time_period"].tolist() == [2020, 2020] and table.loc[1, "n"] == 2
    assert "10,2" not in out.to_csv(index=False) and ",10,4,3.0," in out.to_csv(index=False)
    html = str(display.table(table))
    assert html.count(f">{display.SUPPRESSED}<") == 4  # value, n, PSUs, df of the suppressed row
    assert ">2<" not in html and ">10<" in html


def test_fixed_horizon_jobs_need_enough_firms_observed_at_the_horizon(panel, evaluation):
    """The cost per job at event time e (its own firm count ``n_supported_e``) is withheld
    when fewer than the threshold are observed at e, while the average-horizon row stays."""
    jobs = evaluation.jobs
    assert {"n_supported_e", "cost_per_job_e", "net_jobs_per_firm_e"} <= set(jobs.columns)
    n_e = jobs["n_supported_e"].astype(float)
    cut = int(n_e.max())  # the largest horizon group passes, any smaller one fails
    firms = jobs["n_supported"].astype(float)
    assert (firms >= cut).all(), "every programme keeps enough firms for the average row"
    out = protect.impact_tables(evaluation, panel, rules=protect.Rules(min_contributors=cut))["jobs"]
    small = (n_e < cut).to_numpy()
    assert small.any()
    assert out.loc[small, list(protect.HORIZON_COLUMNS)].isna().all().all()
    assert out.loc[small, "net_jobs_per_firm"].notna().all()  # the average row is published
    assert np.allclose(out.loc[~small, "cost_per_job_e"], jobs.loc[~small, "cost_per_job_e"],
                       equal_nan=True)


def test_coverage_headline_withholds_counts_below_the_threshold(tiny):
    """Two firms (below 3 contributors): the page's record and firm counts are withheld, the
    years and member states stay; three firms are published as counted by hand."""
    from msme_eval.report import summaries
    p, country, _ = tiny
    firms = p["firm_id"].drop_duplicates()
    two = summaries.coverage_summary(p[p["firm_id"].isin(firms.iloc[:2])])
    three = summaries.coverage_summary(p[p["firm_id"].isin(firms.iloc[:3])])
    shown = protect.coverage_headline(two)
    assert shown["n_firms"] is None and shown["n_rows"] is None and shown["first_year"] == two["first_year"]
    assert protect.coverage_headline(three)["n_firms"] == 3
    assert protect.coverage_headline(three, protect.Rules(min_contributors=4))["n_firms"] is None
    assert two["n_firms"] == 2  # the summary itself is untouched (a copy is published)


# --------------------------------------------------------------------------------------------
# K02/K06/K07: an MSME share of an all-firm total reveals the rest of it (the large firms)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k02(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The K04 panel without VNM 2022's large firms (that country-year's total comes from the
    macro table: obs_status E)."""
    p = k04_panel()
    p = p[~((p["country"] == "VNM") & (p["year"] == 2022) & (p["size_class"] == "large"))].reset_index(drop=True)
    path = tmp_path_factory.mktemp("k02") / "panel.parquet"
    p.to_parquet(path, index=False)
    macro = pd.DataFrame([(c, y, 1.0, 5000.0) for c in COUNTRIES for y in YEARS],
                         columns=["country", "year", "usd_per_lcu", "employment_total"])
    kw = dict(indicators=["K02"], breakdowns=["owner_female"])
    return {"panel": p, "pandas": me.indicators.compute(p, macro, **kw),
            "duckdb": me.indicators.compute(str(path), macro, engine="duckdb", **kw)}


def test_k02_suppressed_where_its_total_holds_one_large_firm(k02):
    """IDN 2020 (one large firm): 1 - K02 is that firm's share of the country's employment, so
    the total and both owner_female cells are suppressed (A) naming the rest of the total;
    THA 2021 (three large firms of similar size: the dominance that stops K04 there is on value
    added) is published with the hand value; both engines agree."""
    p = k02["panel"]
    for engine in ("pandas", "duckdb"):
        res = k02[engine]
        idn = _rows(res, "IDN", 2020)
        assert len(idn) == 3 and (idn["conf_status"] == "A").all() and idn["value"].isna().all(), engine
        assert idn["comment"].str.contains(
            "the rest of the total (large firms of IDN 2020) has fewer than 3 contributing firms", regex=False).all()
        tha = _rows(res, "THA", 2021).set_index("group")
        cy = p[(p["country"] == "THA") & (p["year"] == 2021)]
        hand = 100 * cy.loc[cy["size_class"] != "large", "employees"].sum() / cy["employees"].sum()
        assert tha.loc["total", "conf_status"] == "F" and tha.loc["total", "value"] == pytest.approx(hand, rel=1e-12)
    cols = ["ref_area", "time_period", "group", "conf_status"]
    pd.testing.assert_frame_equal(k02["pandas"][cols].sort_values(cols).reset_index(drop=True),
                                  k02["duckdb"][cols].sort_values(cols).reset_index(drop=True))


def test_k02_from_the_macro_total_is_not_held_back_by_absent_large_firms(k02):
    """VNM 2022 has no large firm in the panel: K02 divides by the macro employment total (E)
    and reveals no panel firm's part of it, so it is published (6 MSMEs pass on their own)."""
    vnm = _rows(k02["pandas"], "VNM", 2022).set_index("group")
    assert vnm.loc["total", "obs_status"] == "E" and vnm.loc["total", "conf_status"] == "F"
    msme = k02["panel"].query("country == 'VNM' and year == 2022")["employees"].sum()
    assert vnm.loc["total", "value"] == pytest.approx(100 * msme / 5000.0, rel=1e-12)


def test_which_indicators_carry_the_rest_of_their_total():
    """Shares of an all-firm magnitude total (K02, K06, K07) and K04's comparison group; not
    counts (K01), macro denominators (K03) or within-MSME proportions."""
    from msme_eval.indicators.parts import comparison_of
    from msme_eval.indicators.registry import registry
    have = {ind["id"] for ind in registry().to_dict("records") if comparison_of(ind)}
    assert have == {"K02", "K04", "K06", "K07"}


def test_population_att_is_withheld_with_the_sample_att(panel, evaluation):
    """evaluate(weight=...) puts the population ATT beside the sample ATT: a row resting on too
    few supported firms loses both (the same firms), the others keep their values."""
    import dataclasses
    head = evaluation.headline.copy()
    pop_cols = ["att_population", "se_population", "ci_low_population", "ci_high_population", "pvalue_population"]
    for k, c in enumerate(pop_cols):
        head[c] = 0.5 + k
    ev = dataclasses.replace(evaluation, headline=head)
    cut = int(head["n_treated"].max())
    h = protect.impact_tables(ev, panel, rules=protect.Rules(min_contributors=cut))["headline"]
    small = h["n_treated"] < cut
    assert small.any() and h.loc[small, pop_cols].isna().all().all()
    assert (h.loc[~small, pop_cols].to_numpy() == [0.5 + k for k in range(5)]).all()
