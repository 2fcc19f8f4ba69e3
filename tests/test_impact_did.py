"""did(): planted truth, oracle parity (csdid, differences), hand-written inference, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_impact_helpers import COHORT_EFFECT, SLOPE, planted_att, simulate, truth_simple

import msme_eval as me
from msme_eval.impact import ImpactInputError, did
from msme_eval.impact.results import _aggregate_psi, _vcov_from_psi


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return simulate(n=3000, n_years=8, seed=11)


@pytest.fixture(scope="module")
def res(panel: pd.DataFrame) -> me.impact.DidResult:
    return did(panel, "y")


Z99 = stats.norm.ppf(0.995)


def _covers(est: float, lo: float, hi: float, truth: float) -> bool:
    return lo <= truth <= hi


# ---------------------------------------------------------------- planted truth
def test_overall_recovers_planted_simple_att(res, panel) -> None:
    o = res.overall
    truth = truth_simple(panel)
    assert _covers(o.att, o.ci_low, o.ci_high, truth)
    assert abs(o.att - truth) < 3 * o.se
    z = stats.norm.ppf(0.975)
    assert o.ci_high - o.ci_low == pytest.approx(2 * z * o.se)


def test_att_gt_and_cohorts_recover_planted(res) -> None:
    gt = res.att_gt
    post = gt[gt["period"] == "post"]
    truth = [planted_att(c - 2015, e) for c, e in zip(post["cohort"], post["event_time"])]
    # cells of a cohort share its base period, so their errors are correlated: test jointly
    from msme_eval.impact.results import _if_matrix

    cells = [(c, t) for c, t in zip(post["cohort"], post["time"])]
    v = _vcov_from_psi(_if_matrix(res._influence, cells, res._design.n_units), res._design)
    dev = post["estimate"].to_numpy() - np.array(truth)
    wald = float(dev @ np.linalg.solve(v, dev))
    assert stats.chi2.sf(wald, len(cells)) > 0.001
    grp = res.aggregate("group").set_index("level")
    for off, base in COHORT_EFFECT.items():
        g = 2015 + off
        n_post = 2015 + 7 - g + 1
        truth_g = base + SLOPE * (n_post - 1) / 2
        # families of levels are checked at 99% (several 95% checks would miss by chance)
        assert abs(grp.loc[g, "estimate"] - truth_g) < Z99 * grp.loc[g, "se"]


def test_event_study_recovers_planted_and_bands_are_wider(res) -> None:
    es = res.event_study
    assert {"event_time", "estimate", "se", "ci_low", "ci_high", "band_low", "band_high", "pvalue"} <= set(es.columns)
    e0 = es.set_index("event_time")
    # e = 0: both cohorts, cohort-size weighted planted effect
    n = res.att_gt.drop_duplicates("cohort").set_index("cohort")["n_treated"]
    w3, w5 = n[2018], n[2020]
    truth0 = (w3 * COHORT_EFFECT[3] + w5 * COHORT_EFFECT[5]) / (w3 + w5)
    assert e0.loc[0, "band_low"] <= truth0 <= e0.loc[0, "band_high"]
    pre = es[es["event_time"] < 0]
    assert ((pre["band_low"] <= 0) & (0 <= pre["band_high"])).all()
    assert (es["band_high"] - es["band_low"] >= es["ci_high"] - es["ci_low"] - 1e-12).all()
    assert 2.0 < es.attrs["uniform_crit"] < 4.0


def test_calendar_aggregation_recovers_planted(res, panel) -> None:
    cal = res.aggregate("calendar")
    assert cal["level"].iloc[-1] == "overall"
    n = res.att_gt.drop_duplicates("cohort").set_index("cohort")["n_treated"]
    for _, r in cal.iloc[:-1].iterrows():
        t = int(r["level"])
        cs = [g for g in n.index if g <= t]
        truth = sum(n[g] * planted_att(g - 2015, t - g) for g in cs) / sum(n[g] for g in cs)
        assert abs(r["estimate"] - truth) < Z99 * r["se"]


def test_pretrend_not_rejected_under_parallel_trends_and_rejected_when_violated(res, panel) -> None:
    pt = res.pretrend
    assert pt.df == pt.n_cells == (res.att_gt["period"] == "pre").sum()
    assert pt.pvalue > 0.01
    bad = panel.copy()
    trend = np.where(bad["first_treated"].isna(), 0.0, 0.08 * (bad["year"] - 2015))
    bad["y"] = bad["y"] + trend  # treated firms on a steeper trend: violates parallel trends
    assert did(bad, "y").pretrend.pvalue < 1e-4


def test_pretrend_variance_matches_cell_standard_errors(res) -> None:
    cells = res._cells(post=False)
    from msme_eval.impact.results import _if_matrix

    v = _vcov_from_psi(_if_matrix(res._influence, cells, res._design.n_units), res._design)
    ses = np.array([res.raw.group_time_effects[c]["se"] for c in cells])
    np.testing.assert_allclose(np.sqrt(np.diag(v)), ses, rtol=1e-8)


# ---------------------------------------------------------------- hand-written aggregation parity
@pytest.mark.parametrize("kw", [{}, {"cluster": "region"}, {"weight": "w"}])
def test_hand_aggregator_reproduces_diff_diff_simple(panel, kw) -> None:
    data = panel.assign(w=np.repeat(np.random.default_rng(1).uniform(0.5, 2, panel["firm_id"].nunique()), 8))
    r = did(data, "y", **kw)
    cells = r._cells(post=True)
    eff = np.array([r.raw.group_time_effects[c]["effect"] for c in cells])
    theta, psi = _aggregate_psi(cells, eff, r._influence, r._design)
    se = float(np.sqrt(_vcov_from_psi(psi[:, None], r._design)[0, 0]))
    assert theta == pytest.approx(r.overall.att, rel=1e-10)
    assert se == pytest.approx(r.overall.se, rel=1e-8)


def test_cluster_and_weight_are_recorded(panel) -> None:
    r = did(panel, "y", cluster="region")
    assert r.counts["n_clusters"] == panel["region"].nunique()
    assert "by region" in r.summary()
    assert r.overall.se != pytest.approx(did(panel, "y").overall.se)


# ---------------------------------------------------------------- oracles: csdid and differences
@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    d = simulate(n=800, n_years=7, seed=5)
    d["id"] = d["firm_id"].str[1:].astype(int)
    d["g"] = d["first_treated"].fillna(0).astype(int)
    return d


@pytest.mark.parametrize("control", ["never_treated", "not_yet_treated"])
def test_matches_csdid(small, control) -> None:
    att_gt_mod = pytest.importorskip("csdid.att_gt")
    out = att_gt_mod.ATTgt(yname="y", gname="g", idname="id", tname="year", data=small.copy(),
                           control_group=["nevertreated" if control == "never_treated" else "notyettreated"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = out.fit(est_method="dr", bstrap=False)
    ours = did(small, "y", control=control).att_gt
    ours = ours[~ours["is_reference"]].set_index(["cohort", "time"])
    res = out.results
    assert len(res["att"]) == len(ours)
    for g, t, att, se in zip(res["group"], res["year"], res["att"], res["se"]):
        assert ours.loc[(int(g), int(t)), "estimate"] == pytest.approx(att, abs=1e-8)
        assert ours.loc[(int(g), int(t)), "se"] == pytest.approx(se, rel=1e-4)


def test_matches_differences_including_calendar(small) -> None:
    differences = pytest.importorskip("differences")
    d = small.rename(columns={"g": "cohort"}).assign(cohort=lambda x: x["cohort"].where(x["cohort"] > 0))
    att = differences.ATTgt(data=d.set_index(["id", "year"]), cohort_column="cohort")
    att.fit(formula="y", est_method="dr", control_group="never_treated", progress_bar=False)
    r = did(small, "y")
    simple = att.aggregate("simple")
    assert r.overall.att == pytest.approx(float(simple.iloc[0, 0]), abs=1e-8)
    assert r.overall.se == pytest.approx(float(simple.iloc[0, 1]), rel=1e-6)
    cal = att.aggregate("time")
    ours = r.aggregate("calendar").iloc[:-1].set_index("level")
    for t, row in cal.iterrows():
        assert ours.loc[int(t), "estimate"] == pytest.approx(float(row.iloc[0]), abs=1e-8)
        assert ours.loc[int(t), "se"] == pytest.approx(float(row.iloc[1]), rel=1e-6)
    overall = att.aggregate("time", overall=True)
    assert r.aggregate("calendar").iloc[-1]["estimate"] == pytest.approx(float(overall.iloc[0, 0]), abs=1e-8)
    assert r.aggregate("calendar").iloc[-1]["se"] == pytest.approx(float(overall.iloc[0, 1]), rel=1e-6)
    ev = att.aggregate("event").iloc[:, :2]
    es = r.event_study.set_index("event_time")
    for e, row in ev.iterrows():
        assert es.loc[int(e), "estimate"] == pytest.approx(float(row.iloc[0]), abs=1e-8)
        assert es.loc[int(e), "se"] == pytest.approx(float(row.iloc[1]), rel=1e-6)


# ---------------------------------------------------------------- reporting
def test_summary_html_tidy_state_every_choice(panel) -> None:
    r = did(panel, "y", control="not_yet_treated", covariates=["x"], method="ipw", anticipation=0,
            base_period="universal", cluster="region")
    text = r.summary()
    for needle in ("not-yet-treated", "Base period: universal", "Anticipation: 0", "inverse probability",
                   "by region", "Weights: none", "cohorts", "periods", "units", "Pre-trend test"):
        assert needle in text, needle
    h = r._repr_html_()
    assert "not-yet-treated" in h and "universal" in h and "region" in h
    t = r.tidy()
    assert set(t["aggregation"]) == {"simple", "group", "dynamic", "calendar"}
    assert list(t.columns[:3]) == ["outcome", "aggregation", "level"]


def test_plot_returns_axes_with_pretrend_annotation(res) -> None:
    import matplotlib

    matplotlib.use("Agg")
    ax = res.plot()
    assert any("Pre-trend" in t.get_text() for t in ax.texts)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_bootstrap_path_gives_diff_diff_bands(panel) -> None:
    r = did(panel.iloc[: 8 * 600], "y", n_bootstrap=99, seed=3)
    es = r.event_study
    assert es["band_low"].notna().all()
    assert "bootstrap" in es.attrs["band_method"]
    assert "multiplier bootstrap" in r.summary()


def test_treatment_indicator_equivalent_to_first_treated(panel) -> None:
    d = panel.assign(D=((panel["year"] >= panel["first_treated"]).fillna(False)).astype(int))
    a = did(d, "y")
    b = did(d.drop(columns=["first_treated"]), "y", treatment="D")
    assert a.overall.att == pytest.approx(b.overall.att, abs=1e-12)


# ---------------------------------------------------------------- bad input
def _base() -> pd.DataFrame:
    return simulate(n=120, n_years=5, seed=2)


def test_refuses_no_never_treated() -> None:
    d = _base()
    d = d[d["first_treated"].notna()]
    with pytest.raises(ImpactInputError, match="no firm is never treated"):
        did(d, "y")
    did(d, "y", control="not_yet_treated")  # works with two cohorts


def test_refuses_no_not_yet_treated() -> None:
    d = _base()
    d = d[d["first_treated"].eq(2018).fillna(False)]
    with pytest.raises(ImpactInputError, match="not yet treated"):
        did(d, "y", control="not_yet_treated")


def test_refuses_single_unit_cohort() -> None:
    d = _base()
    one = d["firm_id"] == d.loc[d["first_treated"].isna(), "firm_id"].iloc[0]
    d.loc[one, "first_treated"] = 2017
    with pytest.raises(ImpactInputError, match="single unit"):
        did(d, "y")


def test_refuses_first_treated_varying_within_unit() -> None:
    d = _base()
    fid = d.loc[d["first_treated"].notna(), "firm_id"].iloc[0]
    idx = d.index[d["firm_id"] == fid][-1]
    d.loc[idx, "first_treated"] = pd.NA  # support "switches off" in the last year
    with pytest.raises(ImpactInputError, match="varies within unit"):
        did(d, "y")


def test_refuses_treatment_indicator_switching_off() -> None:
    d = _base().drop(columns=["first_treated"])
    d["D"] = 0
    fid = d["firm_id"].iloc[0]
    d.loc[(d["firm_id"] == fid) & d["year"].isin([2016, 2017]), "D"] = 1  # 0 1 1 0 0
    with pytest.raises(ImpactInputError, match="switches off"):
        did(d, "y", treatment="D")


def test_refuses_all_missing_outcome() -> None:
    d = _base().assign(y=np.nan)
    with pytest.raises(ImpactInputError, match="missing in every row"):
        did(d, "y")


def test_refuses_non_integer_time() -> None:
    d = _base()
    d["year"] = d["year"] + 0.5
    with pytest.raises(ImpactInputError, match="integer periods"):
        did(d, "y")
    d["year"] = pd.to_datetime(d["year"].astype(int).astype(str))
    with pytest.raises(ImpactInputError, match="integer periods"):
        did(d, "y")


def test_refuses_missing_unit_ids_and_duplicates() -> None:
    d = _base()
    d.loc[3, "firm_id"] = None
    with pytest.raises(ImpactInputError, match="missing unit id"):
        did(d, "y")
    d = _base()
    with pytest.raises(ImpactInputError, match="share a"):
        did(pd.concat([d, d.iloc[:2]]), "y")


def test_refuses_bad_options_and_missing_columns() -> None:
    d = _base()
    with pytest.raises(ImpactInputError, match="control"):
        did(d, "y", control="everyone")
    with pytest.raises(ImpactInputError, match="not found"):
        did(d, "sales")
    with pytest.raises(ImpactInputError, match="method"):
        did(d, "y", method="ols")


def test_always_treated_units_are_excluded_with_a_warning() -> None:
    d = _base()
    fid = d.loc[d["first_treated"].isna(), "firm_id"].unique()[:3]
    d.loc[d["firm_id"].isin(fid), "first_treated"] = 2015
    with pytest.warns(UserWarning, match="no pre-treatment period"):
        r = did(d, "y")
    assert r.counts["n_excluded_always_treated"] == 3
    assert any("excluded" in n for n in r.notes)


def test_pretrend_small_sample_reference_by_hand(panel) -> None:
    """Hotelling: F = W (G - K) / (K (G - 1)) ~ F(K, G - K); W = 10, K = 2, G = 20 -> F = 180/38."""
    from scipy import stats as st

    from msme_eval.impact.results import small_sample_wald

    w = small_sample_wald(10.0, 2, 20, 3)
    assert w.pvalue == pytest.approx(st.f.sf(180 / 38, 2, 18), rel=1e-12)
    assert w.pvalue_chi2 == pytest.approx(st.chi2.sf(10.0, 2), rel=1e-12) and w.pvalue > w.pvalue_chi2
    assert small_sample_wald(10.0, 4, 4, 4).pvalue == pytest.approx(st.chi2.sf(10.0, 4))  # G <= K: chi2
    none = small_sample_wald(0.0, 0, 20, 2)  # pre-period cells without variance: rank 0, no test
    assert none.df == 0 and np.isnan(none.pvalue) and "not available" in str(none)
    r = did(panel, "y", cluster="region")
    g = r.counts["n_clusters"]
    assert r.pretrend.reference == f"Hotelling F({r.pretrend.df}, {g - r.pretrend.df}), G = {g} clusters"


def test_independent_columns_keeps_r_lm_columns_in_order() -> None:
    """Aliased columns dropped as R's lm keeps them (the first of a dependent set stays): an
    intercept, x, 2x + 1 (aliased), a dummy, an all-zero column, its complement 1 - d (aliased),
    money in the millions and a 1e-3-scale covariate (both kept); equal to the rank-by-rank rule."""
    from msme_eval.impact.drdid import independent_columns
    rng = np.random.default_rng(0)
    n = 500
    x, d = rng.normal(size=n), (rng.random(n) < 0.3).astype(float)
    money, small = rng.lognormal(14, 1, n), rng.normal(0, 1e-3, n)
    X = np.column_stack([np.ones(n), x, 2 * x + 1, d, np.zeros(n), 1 - d, money, small, money + 3 * x])
    keep = independent_columns(X)
    np.testing.assert_array_equal(keep, [0, 1, 3, 6, 7])
    by_rank: list[int] = []  # the definition: add a column only if it raises the rank
    for j in range(X.shape[1]):
        cand = X[:, [*by_rank, j]]
        if np.linalg.matrix_rank(cand, tol=1e-10 * max(1.0, float(np.abs(cand).max()))) == len(by_rank) + 1:
            by_rank.append(j)
    np.testing.assert_array_equal(keep, by_rank)
    assert len(independent_columns(np.zeros((5, 0)))) == 0
