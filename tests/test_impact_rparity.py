"""R-exact covariate cells, R aggte overall rows and first_treated = 0, against R `did`/`DRDID`.

References: R `did`/`DRDID` as ported by moderndid 0.2.0 (pip `moderndid`, a test dependency),
whose att_gt/aggte/drdid/ipwdid reproduce R's to machine precision; the published NSW numbers
(DRDID README / Sant'Anna and Zhao 2020 application: DR -871.33, normalised IPW -1021.61, R did's
att_gt on the NSW-CPS panel); mpdta aggregations from the `did` vignette (analytical SEs).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from msme_eval.impact import ImpactInputError, did
from msme_eval.impact.drdid import drdid_panel, logit_scores, std_ipw_panel

md = pytest.importorskip("moderndid")

NSW_X = ["age", "educ", "black", "married", "nodegree", "hisp", "re74"]


@pytest.fixture(scope="module")
def nsw() -> pd.DataFrame:
    df = md.load_nsw().to_pandas()
    df["first_treated"] = np.where(df["experimental"] == 1, 1978, 0)  # 0 = never (R convention)
    return df


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    df = md.load_mpdta().to_pandas()
    df["first_treated"] = df["first.treat"]  # 0 = never treated, accepted as is
    return df


def _nsw_arrays(nsw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    wide = nsw.pivot(index="id", columns="year", values="re")
    base = nsw[nsw["year"] == 1975].set_index("id").loc[wide.index]
    X = np.column_stack([np.ones(len(base)), *[base[c].to_numpy(float) for c in NSW_X]])
    return (wide[1978].to_numpy(), wide[1975].to_numpy(), (wide[1978] - wide[1975]).to_numpy(),
            base["experimental"].to_numpy(float), X)


@pytest.mark.parametrize("method, att, se", [("dr", -871.3271491447535, 396.02109358480584),
                                             ("ipw", -1021.6094768551479, 397.5200727441317)])
def test_nsw_did_reproduces_r(nsw, method, att, se) -> None:
    """R did::att_gt(est_method=...) on the NSW-CPS panel: DR -871.33 and IPW -1021.61 (diff-diff's
    own cells give -849.6 and -501.0: other normalisation and score clipping)."""
    r = did(nsw, "re", unit="id", time="year", covariates=NSW_X, method=method)
    assert r.overall.att == pytest.approx(att, abs=1e-6)
    assert r.overall.se == pytest.approx(se, rel=1e-6)
    assert round(r.overall.estimate, 2) == {"dr": -871.33, "ipw": -1021.61}[method]
    assert r.choices["cells"] == "R DRDID" and r.choices["pscore_trim"] == 0.995


@pytest.mark.parametrize("trim", [0.995, 0.5, 0.2])
def test_drdid_cells_match_drdid_estimators_with_trimming(nsw, trim) -> None:
    """Our DRDID estimators equal moderndid's drdid_panel / std_ipw_did_panel at any trim level,
    including ones that drop comparison units (0.5 drops 122, 0.2 drops 392 on NSW)."""
    from moderndid.drdid.estimators.drdid_panel import drdid_panel as r_dr
    from moderndid.drdid.estimators.std_ipw_did_panel import std_ipw_did_panel as r_ipw

    y1, y0, dy, d, X = _nsw_arrays(nsw)
    ps = logit_scores(X, d, np.ones(len(d)))
    assert int(((ps >= trim) & (d == 0)).sum()) == {0.995: 0, 0.5: 122, 0.2: 392}[trim]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dr = r_dr(y1, y0, d, X, influence_func=True, trim_level=trim)
        ref_ipw = r_ipw(y1, y0, d, X, influence_func=True, trim_level=trim)
    for ours, ref in ((drdid_panel(dy, d, X, None, trim), ref_dr), (std_ipw_panel(dy, d, X, None, trim), ref_ipw)):
        assert ours[0] == pytest.approx(ref.att, rel=1e-9)
        np.testing.assert_allclose(ours[1], ref.att_inf_func, rtol=1e-6, atol=1e-6 * np.abs(ref.att_inf_func).max())


def _md_fit(mp: pd.DataFrame, method: str, control: str, xformla: str | None):
    import polars as pl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.att_gt(pl.from_pandas(mp.drop(columns=["first_treated"])), yname="lemp", tname="year",
                         idname="countyreal", gname="first.treat", xformla=xformla, est_method=method,
                         control_group={"never_treated": "nevertreated", "not_yet_treated": "notyettreated"}[control],
                         boot=False, cband=False)


@pytest.mark.parametrize("method", ["dr", "ipw"])
@pytest.mark.parametrize("control", ["never_treated", "not_yet_treated"])
def test_mpdta_lpop_cells_and_aggregations_match_r(mpdta, method, control) -> None:
    r = did(mpdta, "lemp", unit="countyreal", time="year", covariates=["lpop"], method=method, control=control)
    ref = _md_fit(mpdta, method, control, "~lpop")
    gt = r.att_gt.set_index(["cohort", "time"])
    for g, t, a, s in zip(ref.groups, ref.times, ref.att_gt, ref.se_gt):
        assert gt.loc[(int(g), int(t)), "estimate"] == pytest.approx(a, abs=1e-6), (g, t)
        assert gt.loc[(int(g), int(t)), "se"] == pytest.approx(s, rel=1e-5), (g, t)
    for kind in ("simple", "group", "dynamic", "calendar"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agg = md.aggte(ref, type=kind, boot=False, cband=False)
        ours = r.aggregate(kind).set_index("level")
        assert ours.loc["overall", "estimate"] == pytest.approx(agg.overall_att, abs=1e-6), kind
        assert ours.loc["overall", "se"] == pytest.approx(agg.overall_se, rel=1e-5), kind
        if kind != "simple":
            for lv, a, s in zip(agg.event_times, agg.att_by_event, agg.se_by_event):
                assert ours.loc[int(lv), "estimate"] == pytest.approx(a, abs=1e-6), (kind, lv)
                assert ours.loc[int(lv), "se"] == pytest.approx(s, rel=1e-5), (kind, lv)


# R did::aggte on mpdta, unconditional, analytical SEs (did vignette; digits from moderndid 0.2.0)
R_OVERALL = {
    "never_treated": {"group": (-0.031018282228748518, 0.01244605932099789),
                      "dynamic": (-0.07723982145731488, 0.019964989061849178),
                      "calendar": (-0.04170043213128195, 0.015971851884559744)},
    "not_yet_treated": {"group": (-0.030462228112565055, 0.012575120131681779),
                        "dynamic": (-0.07739931397058447, 0.01956017694639415),
                        "calendar": (-0.044267083475883394, 0.015570904421144666)},
}


@pytest.mark.parametrize("control", list(R_OVERALL))
def test_overall_row_of_every_aggregation(mpdta, control) -> None:
    r = did(mpdta, "lemp", unit="countyreal", time="year", control=control)
    for kind, (att, se) in R_OVERALL[control].items():
        tab = r.aggregate(kind)
        assert tab["level"].iloc[-1] == "overall"
        assert tab.iloc[-1]["estimate"] == pytest.approx(att, abs=1e-9), kind
        assert tab.iloc[-1]["se"] == pytest.approx(se, rel=1e-6), kind
    if control == "never_treated":  # the vignette's rounded figures
        assert round(r.aggregate("group").iloc[-1]["estimate"], 3) == -0.031
        assert round(r.aggregate("dynamic").iloc[-1]["estimate"], 4) == -0.0772
    dyn = r.aggregate("dynamic")
    post = dyn[(dyn["level"] != "overall") & (dyn["period"] == "post")]
    assert dyn.iloc[-1]["estimate"] == pytest.approx(post["estimate"].mean(), rel=1e-12)


def test_first_treated_zero_is_never_treated(mpdta) -> None:
    a = did(mpdta, "lemp", unit="countyreal", time="year")
    b = did(mpdta.assign(first_treated=mpdta["first.treat"].where(mpdta["first.treat"] > 0)), "lemp",
            unit="countyreal", time="year")
    assert a.counts == b.counts and a.counts["n_never_treated"] == 309
    assert a.overall.att == pytest.approx(b.overall.att, abs=1e-15)


def test_negative_first_treated_refused(mpdta) -> None:
    bad = mpdta.assign(first_treated=mpdta["first.treat"].replace(0, -1))
    with pytest.raises(ImpactInputError, match="negative values"):
        did(bad, "lemp", unit="countyreal", time="year")


def test_bootstrap_with_r_cells_refused(mpdta) -> None:
    with pytest.raises(ImpactInputError, match="n_bootstrap"):
        did(mpdta, "lemp", unit="countyreal", time="year", covariates=["lpop"], n_bootstrap=99)
    with pytest.raises(ImpactInputError, match="pscore_trim"):
        did(mpdta, "lemp", unit="countyreal", time="year", covariates=["lpop"], pscore_trim=0.2)


def test_unconditional_cells_untouched(mpdta) -> None:
    r = did(mpdta, "lemp", unit="countyreal", time="year")
    assert r.choices["cells"] == "diff-diff" and r.choices["pscore_trim"] is None


def test_separated_cell_is_estimated_like_r_glm() -> None:
    """All treated firms have z = 1 (z = 0 predicts 'never treated' perfectly): the logit separates,
    R glm stops with scores ~0 for z = 0 comparison firms and the IPW ATT equals the plain DiD
    against the z = 1 comparison firms (a binary covariate is saturated: exact reweighting)."""
    rng = np.random.default_rng(11)
    n, years = 300, np.arange(2015, 2020)
    g = np.where(np.arange(n) < 60, 2017, 0)
    z = np.where(g > 0, 1.0, (rng.random(n) < 0.5).astype(float))
    rows = [{"firm_id": i, "year": t, "first_treated": g[i], "z": z[i],
             "y": 2.0 * z[i] * (t - 2015) + 1.0 * (g[i] > 0 and t >= g[i]) + rng.normal()}
            for i in range(n) for t in years]
    df = pd.DataFrame(rows)
    r = did(df, "y", covariates=["z"], method="ipw")
    plain = did(df[(df["z"] == 1)], "y")
    assert np.isfinite(r.overall.se)
    assert r.overall.att == pytest.approx(plain.overall.att, rel=1e-4)


# ---------------------------------------------------------------- unbalanced panels: panel = "balanced" / "rcs"
@pytest.fixture(scope="module")
def mpdta_unbalanced(mpdta) -> pd.DataFrame:
    """mpdta with 120 of its 2,500 county-years dropped (fixed seed): 113 counties lose a year."""
    rng = np.random.default_rng(42)
    return mpdta.drop(index=mpdta.index[rng.choice(len(mpdta), size=120, replace=False)]).reset_index(drop=True)


def _md_unbalanced(mu: pd.DataFrame, allow: bool):
    import polars as pl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # R flips panel to FALSE itself when allow_unbalanced_panel = TRUE meets an unbalanced panel;
        # moderndid 0.2.0 needs panel=False passed with it
        return md.att_gt(pl.from_pandas(mu.drop(columns=["first_treated"])), yname="lemp", tname="year",
                         idname="countyreal", gname="first.treat", est_method="dr", control_group="nevertreated",
                         boot=False, cband=False, allow_unbalanced_panel=allow, panel=not allow)


def _assert_cells(r, ref) -> None:
    gt = r.att_gt.set_index(["cohort", "time"])
    for g, t, a, s in zip(ref.groups, ref.times, ref.att_gt, ref.se_gt):
        assert gt.loc[(int(g), int(t)), "estimate"] == pytest.approx(a, abs=1e-6), (g, t)
        assert gt.loc[(int(g), int(t)), "se"] == pytest.approx(s, rel=1e-5), (g, t)


def _assert_overall(r, ref, se: bool = True) -> None:
    for kind in ("simple", "group", "dynamic", "calendar"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agg = md.aggte(ref, type=kind, boot=False, cband=False)
        o = r.aggregate(kind).set_index("level").loc["overall"]
        assert o["estimate"] == pytest.approx(agg.overall_att, abs=1e-6), kind
        if se:
            assert o["se"] == pytest.approx(agg.overall_se, rel=1e-5), kind


def test_balanced_panel_option_matches_r_default(mpdta_unbalanced) -> None:
    """panel='balanced' = R did's default (allow_unbalanced_panel = FALSE): firms missing a year dropped."""
    r = did(mpdta_unbalanced, "lemp", unit="countyreal", time="year", panel="balanced")
    ref = _md_unbalanced(mpdta_unbalanced, allow=False)
    _assert_cells(r, ref)
    _assert_overall(r, ref)
    assert r.counts["n_units"] == 387 and r.counts["n_units_dropped_unbalanced"] == 113
    assert r.choices["panel"] == "balanced" and any("113 firm(s) not observed" in n for n in r.notes())
    assert "Unbalanced panel: balanced" in r.summary()


def test_rcs_panel_option_matches_r_allow_unbalanced(mpdta_unbalanced) -> None:
    """panel='rcs' = R's allow_unbalanced_panel = TRUE: every ATT(g,t) and SE, and every aggregated ATT.

    Aggregated SEs: moderndid 0.2.0 orders its unit-level cohort vector ``G`` by cohort but the
    influence-function rows by id on this path, so its weight-influence term is misaligned (SEs off by
    up to 0.4% here); with ``G`` put in id order its aggte equals ours to machine precision."""
    mu = mpdta_unbalanced
    r = did(mu, "lemp", unit="countyreal", time="year", panel="rcs")
    ref = _md_unbalanced(mu, allow=True)
    _assert_cells(r, ref)
    _assert_overall(r, ref, se=False)
    ids = np.sort(mu["countyreal"].unique())
    g = mu.drop_duplicates("countyreal").set_index("countyreal").loc[ids, "first.treat"].to_numpy(float)
    _assert_overall(r, ref._replace(G=np.where(g == 0, np.inf, g)))  # MPResult is a NamedTuple
    assert r.counts["n_units"] == 500 and r.choices["panel"] == "rcs"
    pair = did(mu, "lemp", unit="countyreal", time="year")
    assert pair.choices["panel"] == "pairwise"
    assert abs(pair.overall.estimate - r.overall.estimate) > 1e-3  # three different estimands on this panel


def test_panel_option_refusals(mpdta) -> None:
    with pytest.raises(ImpactInputError, match="panel must be one of"):
        did(mpdta, "lemp", unit="countyreal", time="year", panel="unbalanced")
    with pytest.raises(ImpactInputError, match="without covariates"):
        did(mpdta, "lemp", unit="countyreal", time="year", panel="rcs", covariates=["lpop"])


def test_rcs_on_a_balanced_panel_is_the_panel_estimator(mpdta) -> None:
    """As in R, allow_unbalanced_panel is inert on a balanced panel."""
    a = did(mpdta, "lemp", unit="countyreal", time="year", panel="rcs").overall
    b = did(mpdta, "lemp", unit="countyreal", time="year").overall
    assert a.estimate == b.estimate and a.se == b.se
