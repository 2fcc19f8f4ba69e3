"""Tests for msme_eval.survey: hand computations on small tables and samplics as an oracle.

samplics conventions we match explicitly: with-replacement PSUs (fpc=1, its default),
df = #PSUs - #strata over the full sample, symmetric t intervals (PopParam.mean/ratio/total;
its PopParam.prop uses logit intervals, so proportions are compared as means of a 0/1 column),
domains on the full design (its ``domain=`` argument; its ``by=`` subsets and is not used).
samplics SinglePSUEst.skip (singleton strata contribute nothing) = our singleton="certainty".
"""
from __future__ import annotations

import warnings
from fractions import Fraction as Fr

import numpy as np
import pandas as pd
import pytest

from msme_eval import survey

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # samplics announces its successor `svy`
    from samplics import PopParam, SinglePSUEst, TaylorEstimator

RTOL = 1e-9
T975_DF3 = 3.182446305284263  # scipy.stats.t.ppf(0.975, 3)


# --------------------------------------------------------------------------------------------
# a small table computed by hand
# --------------------------------------------------------------------------------------------
def hand_table() -> pd.DataFrame:
    """2 strata, 5 PSUs, 6 rows, domains A/B."""
    return pd.DataFrame({
        "stratum": ["h1", "h1", "h1", "h2", "h2", "h2"],
        "psu":     ["a", "a", "b", "c", "d", "e"],
        "w":       [2.0, 2.0, 1.0, 3.0, 3.0, 1.0],
        "y":       [1.0, 3.0, 4.0, 2.0, 0.0, 5.0],
        "x":       [2.0, 1.0, 2.0, 1.0, 3.0, 5.0],
        "dom":     ["A", "B", "A", "A", "B", "B"],
    })


SUMS_DESIGN = dict(weight="w", strata="stratum", psu="psu")
# parity with samplics / R / hand computations: the nominal df (#PSUs - #strata)
DESIGN = dict(SUMS_DESIGN, df="nominal")


def test_total_by_domain_hand():
    # Domain A: Y = 2*1 + 1*4 + 3*2 = 12. PSU totals of w*y*1{A}: a=2, b=4 | c=6, d=0, e=0
    # (d and e hold no A member but count as zeros: full design, not a subset).
    # h1: mean 3, SS = 1+1 = 2, x 2/1 -> 4; h2: mean 2, SS = 16+4+4 = 24, x 3/2 -> 36. V = 40.
    res = survey.total(hand_table(), "y", by="dom", **DESIGN)
    a = res.set_index("dom").loc["A"]
    assert a["estimate"] == pytest.approx(12.0, rel=1e-12)
    assert a["se"] == pytest.approx(np.sqrt(40.0), rel=1e-12)
    assert a["df"] == 5 - 2
    assert a["ci_low"] == pytest.approx(12 - T975_DF3 * np.sqrt(40), rel=1e-12)
    assert a["ci_high"] == pytest.approx(12 + T975_DF3 * np.sqrt(40), rel=1e-12)
    assert a["n"] == 3
    assert list(res.columns) == ["dom", "estimate", "se", "ci_low", "ci_high", "n", "df", "deff",
                                 "n_psu", "df_nominal", "df_rule"]
    assert a["n_psu"] == 3 and a["df_nominal"] == 3 and a["df_rule"] == "nominal"


def test_ratio_by_domain_hand():
    # Domain A: Y = 12, X = 2*2 + 1*2 + 3*1 = 9, R = 4/3. Linearised PSU totals
    # u = (z_y - R z_x) / X: a = (2 - 16/3)/9 = -10/27, b = (4 - 8/3)/9 = 4/27, c = (6-4)/9 = 6/27,
    # d = e = 0. h1: mean -3/27, SS = 2*(7/27)^2 -> x2 = 196/729; h2: mean 2/27,
    # SS = (16+4+4)/729 -> x 3/2 = 36/729. V = 232/729.
    res = survey.ratio(hand_table(), "y", "x", by="dom", **DESIGN).set_index("dom")
    assert res.loc["A", "estimate"] == pytest.approx(4 / 3, rel=1e-12)
    assert res.loc["A", "se"] == pytest.approx(np.sqrt(232 / 729), rel=1e-12)


def test_mean_by_domain_and_deff_hand():
    # Domain B mean of y: Y = 2*3 + 3*0 + 1*5 = 11, N = 2+3+1 = 6, ybar = 11/6.
    # u = w (y - ybar) / N at PSU level: a = 7/18, b = 0 | c = 0, d = -11/12, e = 19/36.
    ybar = Fr(11, 6)
    u = {"a": 2 * (3 - ybar) / 6, "b": Fr(0), "c": Fr(0), "d": 3 * (0 - ybar) / 6,
         "e": 1 * (5 - ybar) / 6}
    v = Fr(0)
    for psus in (["a", "b"], ["c", "d", "e"]):
        m = sum(u[p] for p in psus) / len(psus)
        v += Fr(len(psus), len(psus) - 1) * sum((u[p] - m) ** 2 for p in psus)
    assert v == Fr(20457, 11664)
    # deff (R svymean convention): s2 = n/(n-1) sum w (y-ybar)^2 / N; V_srs = (1-n/N) s2 / n
    rows = [(2, 3), (3, 0), (1, 5)]
    s2 = Fr(3, 2) * sum(w * (y - ybar) ** 2 for w, y in rows) / 6
    v_srs = (1 - Fr(3, 6)) * s2 / 3
    res = survey.ratio(hand_table(), "y", by="dom", **DESIGN).set_index("dom")
    assert res.loc["B", "estimate"] == pytest.approx(11 / 6, rel=1e-12)
    assert res.loc["B", "se"] == pytest.approx(float(v) ** 0.5, rel=1e-12)
    assert res.loc["B", "deff"] == pytest.approx(float(v / v_srs), rel=1e-12)
    assert res.loc["B", "n"] == 3


def test_srs_without_design_hand():
    # no weights, no design: SRS with replacement of rows; se = sd / sqrt(n)
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0, 6.0]})
    res = survey.ratio(data, "y", df="nominal")
    assert res["estimate"].item() == pytest.approx(3.0)
    assert res["se"].item() == pytest.approx(np.sqrt(14 / 3 / 4), rel=1e-12)
    assert res["df"].item() == 3
    assert np.isnan(res["deff"].item())  # unweighted: N = n, the SRSWOR variance is 0
    tot = survey.total(data, "y")
    assert tot["se"].item() == pytest.approx(4 * np.sqrt(14 / 3 / 4), rel=1e-12)


def test_total_deff_hand():
    # deff of a total: V_srs = (1 - n/N) N^2 s2 / n, s2 = n/(n-1) sum w (y - ybar)^2 / N
    d = hand_table()
    n, big_n = 6, d.w.sum()
    ybar = (d.w * d.y).sum() / big_n
    s2 = n / (n - 1) * (d.w * (d.y - ybar) ** 2).sum() / big_n
    v_srs = (1 - n / big_n) * big_n**2 * s2 / n
    res = survey.total(d, "y", **DESIGN)
    assert res["deff"].item() == pytest.approx(res["se"].item() ** 2 / v_srs, rel=1e-12)


# --------------------------------------------------------------------------------------------
# singleton strata
# --------------------------------------------------------------------------------------------
def singleton_table() -> pd.DataFrame:
    extra = pd.DataFrame({"stratum": ["h3"], "psu": ["f"], "w": [2.0], "y": [3.0],
                          "x": [1.0], "dom": ["A"]})
    return pd.concat([hand_table(), extra], ignore_index=True)


def test_singleton_fail_names_strata():
    with pytest.raises(survey.SurveyDesignError, match=r"single PSU: \['h3'\]"):
        survey.total(singleton_table(), "y", by="dom", **DESIGN)


def test_singleton_certainty_and_centre_hand():
    d = singleton_table()
    cert = survey.total(d, "y", by="dom", singleton="certainty", **DESIGN).set_index("dom")
    # A: Y = 12 + 2*3 = 18; h3 is self-representing -> V = 40 as before; df = 6 PSUs - 3 strata
    assert cert.loc["A", "estimate"] == pytest.approx(18.0)
    assert cert.loc["A", "se"] == pytest.approx(np.sqrt(40.0), rel=1e-12)
    assert cert.loc["A", "df"] == 3
    assert cert.attrs["design"]["singleton_strata"] == ["h3"]
    centre = survey.total(d, "y", by="dom", singleton="centre", **DESIGN).set_index("dom")
    # centre: lone PSU total deviates from the grand mean of the 6 PSU totals.
    # A: grand = 18/6 = 3, z_f = 6 -> +9 -> V = 49.
    assert centre.loc["A", "se"] == pytest.approx(7.0, rel=1e-12)
    # B: Y = 11, no B member in h3 (z_f = 0), grand = 11/6 -> + (11/6)^2.
    # B without h3: PSU totals a=6, b=0 | c=0, d=0, e=5: h1 SS=18 x2=36; h2 mean 5/3,
    # SS = 25/9+25/9+100/9 = 150/9 x 3/2 = 25 -> 61.
    assert cert.loc["B", "se"] == pytest.approx(np.sqrt(61.0), rel=1e-12)
    assert centre.loc["B", "se"] == pytest.approx(np.sqrt(61 + (11 / 6) ** 2), rel=1e-12)


def test_singleton_centre_ratio_is_zero_centred():
    # for a ratio the linearised PSU totals sum to 0 over the design, so the grand mean is 0
    d = singleton_table()
    res = survey.ratio(d, "y", "x", singleton="centre", **DESIGN)
    y, x = (d.w * d.y).sum(), (d.w * d.x).sum()
    r = y / x
    u = ((d.w * (d.y - r * d.x)) / x).groupby([d.stratum, d.psu]).sum()
    v = 0.0
    for _h, uh in u.groupby(level=0):
        v += uh.pow(2).sum() if len(uh) == 1 else len(uh) / (len(uh) - 1) * ((uh - uh.mean()) ** 2).sum()
    assert res["se"].item() == pytest.approx(np.sqrt(v), rel=1e-12)


def test_singleton_rows_as_psus():
    d = pd.DataFrame({"s": ["a", "a", "b"], "y": [1.0, 2.0, 4.0]})
    with pytest.raises(survey.SurveyDesignError, match="'b'"):
        survey.ratio(d, "y", strata="s")
    res = survey.ratio(d, "y", strata="s", singleton="certainty")
    assert res.attrs["design"]["singleton_strata"] == ["b"]
    # u = (y - 7/3)/3: a-stratum -> 2/1 * sum (u - mean)^2 = 2 * 2 * (1/6)^2
    assert res["se"].item() == pytest.approx(np.sqrt(4 / 36), rel=1e-12)


# --------------------------------------------------------------------------------------------
# samplics as an oracle
# --------------------------------------------------------------------------------------------
def synthetic(n: int = 1500, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stratum = rng.choice(["s1", "s2", "s3", "s4", "s5"], n)
    d = pd.DataFrame({
        "stratum": stratum,
        "psu": pd.Series(stratum) + "-" + rng.integers(0, 6, n).astype(str),
        "w": rng.uniform(0.5, 40.0, n),
        "turnover": rng.lognormal(4, 1.2, n),
        "employees": rng.integers(1, 60, n).astype(float),
        "online": rng.random(n) < 0.35,
        "size": rng.choice(["micro", "small", "medium"], n, p=[0.6, 0.3, 0.1]),
        "female": rng.random(n) < 0.4,
    })
    return d


def oracle(param: PopParam, y, **kw) -> dict:
    est = TaylorEstimator(param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.estimate(y=y, **kw)
    return {"estimate": est.point_est, "se": est.stderror, "ci_low": est.lower_ci,
            "ci_high": est.upper_ci, "df": est.degree_of_freedom}


def check(ours: pd.DataFrame, ref: dict, by: str | None = None) -> None:
    for col in ("estimate", "se", "ci_low", "ci_high"):
        if by is None:
            expected = np.array([float(ref[col])])
        else:
            expected = np.array([float(ref[col][k]) for k in ours[by]])
        np.testing.assert_allclose(ours[col].to_numpy(), expected, rtol=RTOL, atol=0)
    assert (ours["df"] == ref["df"]).all()


def test_oracle_stratified_clustered_ratio_by_domain():
    d = synthetic()
    ours = survey.ratio(d, "turnover", "employees", by="size", **DESIGN)
    ref = oracle(PopParam.ratio, d.turnover, x=d.employees, samp_weight=d.w,
                 stratum=d.stratum, psu=d.psu, domain=d["size"])
    check(ours, ref, "size")
    assert ours["size"].tolist() == ["medium", "micro", "small"]


def test_oracle_stratified_only_mean():
    d = synthetic(seed=3)
    ours = survey.ratio(d, "turnover", weight="w", strata="stratum", df="nominal")
    ref = oracle(PopParam.mean, d.turnover, samp_weight=d.w, stratum=d.stratum)
    check(ours, ref)


def test_oracle_proportion_by_domain_clustered():
    d = synthetic(seed=11)
    ours = survey.ratio(d, "online", by="female", **DESIGN)
    ref = oracle(PopParam.mean, d.online.astype(float), samp_weight=d.w, stratum=d.stratum,
                 psu=d.psu, domain=d.female)
    check(ours, ref, "female")


def test_oracle_domain_totals_clustered_no_strata():
    d = synthetic(seed=5)
    ours = survey.total(d, "turnover", weight="w", psu="psu", by="size", df="nominal")
    ref = oracle(PopParam.total, d.turnover, samp_weight=d.w, psu=d.psu, domain=d["size"])
    check(ours, ref, "size")


def test_oracle_srs_weighted_ratio():
    d = synthetic(n=400, seed=2)
    ours = survey.ratio(d, "turnover", "employees", weight="w", by="size", df="nominal")
    ref = oracle(PopParam.ratio, d.turnover, x=d.employees, samp_weight=d.w, domain=d["size"])
    check(ours, ref, "size")


def test_oracle_singleton_certainty_matches_samplics_skip():
    d = synthetic(seed=9)
    lone = pd.DataFrame({"stratum": ["s9", "s9"], "psu": ["s9-0", "s9-0"], "w": [3.0, 5.0],
                         "turnover": [50.0, 80.0], "employees": [4.0, 9.0],
                         "online": [True, False], "size": ["micro", "small"],
                         "female": [True, True]})
    d = pd.concat([d, lone], ignore_index=True)
    ours = survey.ratio(d, "turnover", "employees", by="size", singleton="certainty", **DESIGN)
    ref = oracle(PopParam.ratio, d.turnover, x=d.employees, samp_weight=d.w, stratum=d.stratum,
                 psu=d.psu, domain=d["size"], single_psu=SinglePSUEst.skip)
    check(ours, ref, "size")
    assert ours.attrs["design"]["singleton_strata"] == ["s9"]


def test_oracle_take_all_stratum_as_one_certainty_psu_matches_samplics_fpc_zero():
    # A take-all (certainty) stratum -- every large firm enumerated, weight 1, as business
    # surveys do -- written as one PSU with singleton="certainty" gives the variance R survey
    # and samplics give with each firm its own PSU and sampling fraction 1 (samplics fpc =
    # 1 - f = 0 for that stratum; R fpc = N_h = n_h): the stratum contributes 0. Without the
    # fpc (each firm a with-replacement PSU) it would be charged a variance it does not have.
    d = synthetic(seed=21)
    rng = np.random.default_rng(21)
    big = pd.DataFrame({"stratum": "large", "psu": [f"large-{i}" for i in range(7)], "w": 1.0,
                        "turnover": rng.lognormal(8, 1.0, 7), "employees": rng.integers(250, 900, 7)
                        .astype(float), "online": rng.random(7) < 0.5, "size": "large",
                        "female": rng.random(7) < 0.2})
    d = pd.concat([d, big], ignore_index=True)
    one_psu = d.assign(psu=np.where(d["stratum"] == "large", "large-all", d["psu"]))
    ours = survey.ratio(one_psu, "turnover", "employees", by="female", singleton="certainty",
                        **DESIGN)
    fpc = {h: (0.0 if h == "large" else 1.0) for h in sorted(d["stratum"].unique())}
    ref = oracle(PopParam.ratio, d.turnover, x=d.employees, samp_weight=d.w, stratum=d.stratum,
                 psu=d.psu, domain=d.female, fpc=fpc)
    for col in ("estimate", "se"):
        np.testing.assert_allclose(ours[col].to_numpy(),
                                   [float(ref[col][k]) for k in ours["female"]], rtol=RTOL)
    # df: the certainty stratum adds no df (1 PSU - 1 stratum); R's degf and samplics count
    # its 7 firms as PSUs (7 - 1 = 6 more)
    assert (ours["df"] == ref["df"] - 6).all()
    assert ours.attrs["design"]["singleton_strata"] == ["large"]
    no_fpc = survey.ratio(d, "turnover", "employees", by="female", **DESIGN)
    assert (no_fpc["se"].to_numpy() > ours["se"].to_numpy()).all()
    # certainty=["large"] declares the stratum take-all as the file records it (each firm its
    # own PSU): samplics' fpc numbers, the same df as the one-PSU form, and nothing left to
    # the singleton rule
    named = survey.ratio(d, "turnover", "employees", by="female", certainty=["large"], **DESIGN)
    for col in ("estimate", "se", "ci_low", "ci_high", "df", "df_nominal"):
        np.testing.assert_allclose(named[col].to_numpy(), ours[col].to_numpy(), rtol=1e-12)
    assert named.attrs["design"]["certainty_strata"] == ["large"]
    assert named.attrs["design"]["singleton_strata"] == []
    assert named.choices["certainty"] == ["large"] and no_fpc.choices["certainty"] is None


def test_certainty_strata_leave_accidental_singletons_to_the_singleton_rule():
    # A take-all stratum of one PSU and an accidental singleton stratum: certainty= covers the
    # first only, so singleton="fail" still stops at the second (the old way, one rule for
    # every singleton, could not tell them apart); with singleton="centre" the accidental one
    # is charged its deviation from the grand mean and the take-all one nothing.
    d = synthetic(seed=22)
    lone = d["stratum"] == d["stratum"].iloc[0]
    d = d.assign(psu=np.where(lone, "only-psu", d["psu"]))  # accidental singleton stratum
    big = pd.DataFrame({"stratum": "large", "psu": "large-all", "w": 1.0, "turnover": [9e3, 2e4],
                        "employees": [300.0, 700.0], "online": [True, False], "size": "large",
                        "female": [False, True]})
    d = pd.concat([d, big], ignore_index=True)
    with pytest.raises(survey.SurveyDesignError, match=rf"single PSU: \['{d['stratum'].iloc[0]}'\].*certainty="):
        survey.total(d, "turnover", certainty=["large"], **DESIGN)
    named = survey.total(d, "turnover", certainty=["large"], singleton="centre", **DESIGN)
    # by hand: the take-all stratum out of the design entirely (its total is fixed) plus, for
    # the accidental singleton, (z - Z / #PSUs)^2 over the sampled strata's PSUs and the
    # take-all PSU (R "adjust": the grand mean over all PSUs of the design)
    rest = d[d["stratum"] != "large"]
    z = (rest["w"] * rest["turnover"]).groupby([rest["stratum"], rest["psu"]]).sum()
    big_z = float((big["w"] * big["turnover"]).sum())
    grand = (z.sum() + big_z) / (len(z) + 1)
    v = 0.0
    for _, zh in z.groupby(level=0):
        n = len(zh)
        v += ((zh.iloc[0] - grand) ** 2 if n == 1
              else n / (n - 1) * ((zh - zh.mean()) ** 2).sum())
    assert named["estimate"].iloc[0] == pytest.approx(z.sum() + big_z, rel=1e-12)
    assert named["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-10)
    assert named["df_nominal"].iloc[0] == len(z) - rest["stratum"].nunique()
    assert named.attrs["design"]["singleton_strata"] == [d["stratum"].iloc[0]]
    with pytest.raises(survey.SurveyDesignError, match=r"certainty names \['Large'\].*strata:"):
        survey.total(d, "turnover", certainty=["Large"], singleton="centre", **DESIGN)
    with pytest.raises(survey.SurveyDesignError, match="no strata column"):
        survey.total(d, "turnover", weight="w", certainty=["large"])


def test_totals_cov_and_delta_against_oracle():
    # K04-like (A/B)/(C/D): the delta-method variance equals the variance of the total of the
    # row-level linearised variable u = sum_j dg/dY_j * y_j, which samplics computes directly.
    d = synthetic(seed=13)
    micro = (d["size"] == "micro").astype(float)
    cols = {"A": d.turnover * micro, "B": d.employees * micro,
            "C": d.turnover * (1 - micro), "D": d.employees * (1 - micro)}
    t = survey.totals(d, cols, by="female", **DESIGN)
    assert t.cov.shape == (2, 4, 4) and list(t.columns) == ["A", "B", "C", "D"]

    def f(tt):
        return (tt[:, 0] / tt[:, 1]) / (tt[:, 2] / tt[:, 3])

    def grad(tt):
        return f(tt)[:, None] * np.column_stack(
            [1 / tt[:, 0], -1 / tt[:, 1], -1 / tt[:, 2], 1 / tt[:, 3]])

    res = survey.delta(t, f, grad)
    for i, dom in enumerate(res["female"]):
        g = grad(t.estimate.to_numpy())[i]
        u = sum(g[j] * cols[c] for j, c in enumerate("ABCD"))
        ref = oracle(PopParam.total, u, samp_weight=d.w, stratum=d.stratum, psu=d.psu,
                     domain=d.female)
        assert res["se"].iloc[i] == pytest.approx(float(ref["se"][dom]), rel=RTOL)
        # variance of a sum of two totals from the covariance matrix
        ref2 = oracle(PopParam.total, cols["A"] + cols["C"], samp_weight=d.w,
                      stratum=d.stratum, psu=d.psu, domain=d.female)
        c = t.cov[i]
        assert c[0, 0] + c[2, 2] + 2 * c[0, 2] == pytest.approx(float(ref2["se"][dom]) ** 2,
                                                                rel=RTOL)
    assert (res["estimate"] > 0).all()


# --------------------------------------------------------------------------------------------
# stage (a) / stage (b) split: another engine's grouped sums give the same answer
# --------------------------------------------------------------------------------------------
def test_stage_b_accepts_a_plain_groupby_table():
    d = synthetic(n=600, seed=4)
    ref_table = survey.grouped_sums(d, ["turnover", "employees"], by="size", **SUMS_DESIGN)
    # what "SELECT size, stratum, psu, COUNT(*), SUM(w*...) GROUP BY ..." on any engine returns
    e = d.assign(**{
        "w*turnover": d.w * d.turnover, "w*employees": d.w * d.employees,
        "w*turnover*turnover": d.w * d.turnover**2,
        "w*turnover*employees": d.w * d.turnover * d.employees,
        "w*employees*employees": d.w * d.employees**2, "n": 1,
        "__stratum__": d.stratum, "__psu__": d.psu, "__excluded__": False})
    cols = [c for c in ref_table.columns if c not in ("size", "__stratum__", "__psu__",
                                                      "__excluded__")]
    other = (e.groupby(["size", "__stratum__", "__psu__", "__excluded__"], as_index=False)[cols]
             .sum().sample(frac=1.0, random_state=1))  # any row order
    other.attrs = dict(ref_table.attrs)
    a = survey.totals_from_sums(ref_table)
    b = survey.totals_from_sums(other)
    np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-12)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-10)
    pd.testing.assert_frame_equal(a.keys, b.keys)


# --------------------------------------------------------------------------------------------
# input rules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [(0.0, "<= 0"), (-1.0, "<= 0"),
                                        (np.nan, "missing or infinite")])
def test_bad_weights_are_errors_naming_rows(bad, match):
    d = hand_table()
    d.loc[4, "w"] = bad
    with pytest.raises(survey.SurveyDesignError, match=match) as info:
        survey.ratio(d, "y", **DESIGN)
    assert "index 4" in str(info.value)


def test_missing_values_error_or_na_rm():
    d = hand_table()
    d.loc[[1, 3], "y"] = np.nan
    with pytest.raises(survey.SurveyDesignError, match=r"'y' is missing in 2 row\(s\) \(index 1, 3\)"):
        survey.ratio(d, "y", "x", by="dom", **DESIGN)
    got = survey.ratio(d, "y", "x", by="dom", na_rm=True, **DESIGN)
    # na_rm: rows leave the domains but stay in the design -> same as zero contributions
    filled = d.assign(y=d.y.fillna(0.0), x=d.x.where(d.y.notna(), 0.0))
    ref = survey.ratio(filled, "y", "x", by="dom", **DESIGN)
    np.testing.assert_allclose(got[["estimate", "se"]], ref[["estimate", "se"]], rtol=1e-12)
    assert got["n"].tolist() == [2, 2]
    assert got["df"].tolist() == [3, 3]
    assert got.attrs["design"]["excluded_rows"] == 2


def test_missing_domain_and_design_labels():
    d = hand_table().astype({"dom": "str"})
    d.loc[2, "dom"] = None
    with pytest.raises(survey.SurveyDesignError, match="domain column 'dom' is missing"):
        survey.total(d, "y", by="dom", **DESIGN)
    res = survey.total(d, "y", by="dom", na_rm=True, **DESIGN)
    assert res["n"].tolist() == [2, 3]
    d = hand_table()
    d.loc[0, "psu"] = None
    with pytest.raises(survey.SurveyDesignError, match="psu column 'psu' is missing"):
        survey.total(d, "y", **DESIGN)


def test_text_column_and_unknown_column():
    d = hand_table()
    with pytest.raises(TypeError, match="'dom' has dtype"):
        survey.ratio(d, "dom")
    with pytest.raises(KeyError, match="nope"):
        survey.ratio(d, "nope", by="dom")
    with pytest.raises(ValueError, match="singleton must be"):
        survey.ratio(d, "y", singleton="skip")


def test_domain_dtypes_and_order_kept():
    d = synthetic(n=300, seed=1)
    d["size"] = pd.Categorical(d["size"], categories=["micro", "small", "medium"])
    d["female"] = d["female"].astype("boolean")
    res = survey.ratio(d, "online", by=["size", "female"], **DESIGN)
    assert isinstance(res["size"].dtype, pd.CategoricalDtype)
    assert res["female"].dtype == "boolean"
    assert res["size"].astype(str).tolist()[:2] == ["micro", "micro"]
    assert res["female"].tolist()[:2] == [False, True]
    assert res["n"].sum() == len(d)


def test_alpha_changes_interval_only():
    d = synthetic(n=300, seed=1)
    a = survey.ratio(d, "turnover", **DESIGN)
    b = survey.ratio(d, "turnover", alpha=0.1, **DESIGN)
    assert a["se"].item() == b["se"].item()
    assert b["ci_high"].item() < a["ci_high"].item()


def test_ratio_deff_matches_linearised_srswor_formula():
    # deff of a ratio: V / V_srs with V_srs = (1 - n/N) N^2/n * s_u^2 on the row-level
    # linearised variable u = (y - R x) / X, s_u^2 = n/(n-1) sum w (u - ubar)^2 / N
    d = synthetic(n=500, seed=21)
    res = survey.ratio(d, "turnover", "employees", **DESIGN)
    w, y, x = d.w.to_numpy(), d.turnover.to_numpy(), d.employees.to_numpy()
    n, big_n = len(d), w.sum()
    r = (w * y).sum() / (w * x).sum()
    u = (y - r * x) / (w * x).sum()
    ubar = (w * u).sum() / big_n
    s2 = n / (n - 1) * (w * (u - ubar) ** 2).sum() / big_n
    v_srs = (1 - n / big_n) * big_n**2 / n * s2
    assert res["deff"].item() == pytest.approx(res["se"].item() ** 2 / v_srs, rel=1e-9)


def test_totals_to_frame_and_delta_shape_errors():
    t = survey.totals(hand_table(), ["y", "x"], by="dom", **DESIGN)
    frame = t.to_frame()
    assert frame[["dom", "variable"]].values.tolist() == [["A", "y"], ["B", "y"],
                                                          ["A", "x"], ["B", "x"]]
    # X_B = 2*1 + 3*3 + 1*5 = 16
    assert frame["estimate"].tolist() == [12.0, 11.0, 9.0, 16.0]
    assert frame["se"].iloc[0] == pytest.approx(np.sqrt(40.0))
    with pytest.raises(ValueError, match="grad must return"):
        survey.delta(t, lambda tt: tt[:, 0], lambda tt: tt[:, :1])
    with pytest.raises(ValueError, match="func must return 2 values"):
        survey.delta(t, lambda tt: tt, lambda tt: tt)


# --------------------------------------------------------------------------------------------
# design degrees of freedom: Satterthwaite effective df (default) vs nominal
# --------------------------------------------------------------------------------------------
def test_satterthwaite_df_hand_two_strata():
    # Domain A total (see test_total_by_domain_hand): stratum contributions v_h1 = 4 (n_h = 2
    # PSUs), v_h2 = 36 (n_h = 3). df_eff = (4 + 36)^2 / (4^2/1 + 36^2/2) = 1600/664.
    out = survey.total(hand_table(), "y", by="dom", **SUMS_DESIGN)
    assert out.choices["df"] == "satterthwaite"
    a = out.set_index("dom").loc["A"]
    df_eff = 1600 / 664
    assert a["df"] == pytest.approx(df_eff, rel=1e-12)
    assert a["df_rule"] == "satterthwaite" and a["df_nominal"] == 3
    from scipy import stats
    q = stats.t.ppf(0.975, df_eff)
    assert stats.t.ppf(0.975, 3) < q < stats.t.ppf(0.975, 2)  # fewer df than nominal: wider
    assert a["ci_high"] == pytest.approx(12 + q * np.sqrt(40), rel=1e-12)
    assert a["se"] == pytest.approx(np.sqrt(40.0), rel=1e-12)  # the SE does not change


def test_satterthwaite_df_never_above_nominal_and_one_stratum_equal():
    d = synthetic(seed=17)
    res = survey.ratio(d, "turnover", "employees", by="size", **SUMS_DESIGN)
    assert (res["df"] <= res["df_nominal"] + 1e-9).all()
    assert (res["df"] > 0).all()
    # one stratum holding the whole variance: (v)^2 / (v^2/(n-1)) = n - 1 = nominal
    one = d.assign(stratum="s")
    r1 = survey.ratio(one, "turnover", weight="w", strata="stratum", psu="psu")
    assert r1["df"].item() == pytest.approx(r1["df_nominal"].item(), rel=1e-12)


def test_nominal_df_reproduces_the_nominal_intervals():
    d = synthetic(seed=8)
    nom = survey.ratio(d, "online", by="female", **DESIGN)
    sat = survey.ratio(d, "online", by="female", **SUMS_DESIGN)
    np.testing.assert_array_equal(nom["se"], sat["se"])
    from scipy import stats
    q = stats.t.ppf(0.975, nom["df"].to_numpy())
    np.testing.assert_allclose(nom["ci_low"], nom["estimate"] - q * nom["se"], rtol=1e-12)
    assert (nom["df"] == nom["df_nominal"]).all() and nom["df"].dtype == np.int64


# --------------------------------------------------------------------------------------------
# degrees of freedom from the design (df="design"): (tr A)^2 / tr A^2, outcome not used
# --------------------------------------------------------------------------------------------
def test_design_df_hand():
    # d_hi = sum of w^2 over the PSU's members of the domain. Domain A: h1 a=4, b=1 (n=2):
    # tr = 5, tr A^2 = 2^2 (0 * 17 + 5^2/4) = 25; h2 c=9, d=e=0 (n=3): tr = 9,
    # tr A^2 = (3/2)^2 ((1 - 2/3) 81 + 9^2/9) = 81 -> df = 14^2 / 106.
    # Domain B: h1 a=4, b=0: 16; h2 c=0, d=9, e=1: S1 = 10, S2 = 82, 9/4 (82/3 + 100/9)
    # = 86.5 -> df = 14^2 / 102.5.
    out = survey.total(hand_table(), "y", by="dom", df="design", **SUMS_DESIGN)
    by = out.set_index("dom")
    assert by.loc["A", "df"] == pytest.approx(float(Fr(196, 106)), rel=1e-12)
    assert by.loc["B", "df"] == pytest.approx(float(Fr(392, 205)), rel=1e-12)
    assert (out["df_rule"] == "design").all() and out.choices["df"] == "design"
    # the df does not depend on the outcome: any column of the domain gives the same
    other = survey.ratio(hand_table(), "x", "y", by="dom", df="design", **SUMS_DESIGN)
    np.testing.assert_allclose(other["df"], out["df"], rtol=1e-12)
    from scipy import stats
    q = stats.t.ppf(0.975, by.loc["A", "df"])
    assert by.loc["A", "ci_high"] == pytest.approx(12 + q * np.sqrt(40), rel=1e-12)
    # rows as PSUs (strata only): A: h1 d = 4, 0, 1 (n=3) -> 9/4 (17/3 + 25/9) = 19; h2 81
    rows = survey.total(hand_table(), "y", by="dom", df="design", weight="w",
                        strata="stratum").set_index("dom")
    assert rows.loc["A", "df"] == pytest.approx(196 / 100, rel=1e-12)


def _quadratic_form(d: pd.DataFrame, member: np.ndarray) -> np.ndarray:
    """The matrix A of the with-replacement variance estimator of a domain total,
    ``v = y' A y``, built row by row: A = sum_h n_h/(n_h-1) W_h' (I - J/n_h) W_h."""
    n = len(d)
    a = np.zeros((n, n))
    for _, rows in d.groupby("stratum").indices.items():
        psus, pos = np.unique(d["psu"].to_numpy()[rows], return_inverse=True)
        k = len(psus)
        w = np.zeros((k, n))
        w[pos, rows] = d["w"].to_numpy()[rows] * member[rows]
        a += k / (k - 1) * w.T @ (np.eye(k) - 1.0 / k) @ w
    return a


def test_design_df_is_the_df_of_the_variance_quadratic_form():
    # Bell & McCaffrey (2002) with an independence working model: v = y' A y, df =
    # (tr A)^2 / tr(A^2). A is built directly from the rows; that y' A y is the published
    # variance checks that A is the estimator's quadratic form.
    d = synthetic(n=300, seed=21)
    d = d.assign(psu=d["stratum"] + "-" + (d["psu"].astype(str).str[-1:]))
    res = survey.total(d, "turnover", by="female", df="design", **SUMS_DESIGN).set_index("female")
    y = d["turnover"].to_numpy()
    for grp in (False, True):
        a = _quadratic_form(d, (d["female"] == grp).to_numpy())
        assert y @ a @ y == pytest.approx(res.loc[grp, "se"] ** 2, rel=1e-9)
        assert res.loc[grp, "df"] == pytest.approx(np.trace(a) ** 2 / np.trace(a @ a), rel=1e-9)
        assert 0 < res.loc[grp, "df"] < res.loc[grp, "df_nominal"]


def test_design_df_equal_weights_balanced_is_nominal_and_certainty_drops_singletons():
    d = pd.DataFrame({"stratum": np.repeat(["a", "b", "c"], 8), "psu": np.tile(np.repeat(
        [1, 2, 3, 4], 2), 3), "w": 2.5, "y": np.arange(24.0) % 5})
    r = survey.mean(d, "y", df="design", **SUMS_DESIGN)
    assert r["df"].item() == pytest.approx(9.0, rel=1e-12) and r["df_nominal"].item() == 9
    # a singleton stratum under "certainty" adds nothing (its variance term is 0)
    one = pd.concat([d, pd.DataFrame({"stratum": ["z"], "psu": [9], "w": [7.0], "y": [1.0]})])
    r1 = survey.mean(one, "y", df="design", singleton="certainty", **SUMS_DESIGN)
    assert r1["df"].item() == pytest.approx(9.0, rel=1e-12)


def test_design_df_same_on_duckdb(tmp_path):
    pytest.importorskip("duckdb")
    d = synthetic(n=800, seed=5)
    d.loc[d.index[::17], "turnover"] = np.nan
    path = tmp_path / "d.parquet"
    d.to_parquet(path)
    for design in (SUMS_DESIGN, dict(weight="w", strata="stratum")):
        mem = survey.ratio(d, "turnover", by="female", df="design", na_rm=True, **design)
        sql = survey.ratio(str(path), "turnover", by="female", df="design", na_rm=True,
                           **design)
        np.testing.assert_allclose(sql["df"], mem["df"], rtol=1e-9)
        assert (mem["df"] < mem["df_nominal"]).all()


def test_design_df_needs_the_squared_weights():
    t = survey.totals(hand_table(), ["y"], by="dom", **SUMS_DESIGN)
    with pytest.raises(ValueError, match="survey.totals\\(..., df='design'\\)"):
        survey.delta(t, lambda tt: tt[:, 0], np.ones_like, df="design")
    table = survey.grouped_sums(hand_table(), ["y"], by="dom", **SUMS_DESIGN)
    with pytest.raises(ValueError, match="design_df=True"):
        survey.totals_from_sums(table, df="design")
    with pytest.raises(ValueError, match="df must be one of"):
        survey.total(hand_table(), "y", df="kott", **SUMS_DESIGN)
    # the indicator table does not implement it: refused, not silently nominal
    from msme_eval import indicators
    with pytest.raises(ValueError, match="indicators.compute supports df in"):
        indicators.compute(hand_table(), df="design")


# --------------------------------------------------------------------------------------------
# calibration-aware variance (weights post-stratified to stratum counts)
# --------------------------------------------------------------------------------------------
def _post_stratified(seed: int = 4, clustered: bool = True) -> pd.DataFrame:
    """Size classes are the strata; weights scaled so sum_h w = N_h exactly."""
    rng = np.random.default_rng(seed)
    big_n = {"micro": 9000.0, "small": 2500.0, "medium": 400.0, "large": 100.0}
    rows = []
    for h, n_h in zip(big_n, (60, 40, 25, 12)):
        w = rng.uniform(0.5, 1.5, n_h)
        rows.append(pd.DataFrame({
            "stratum": h, "w": w * big_n[h] / w.sum(),
            "psu": [f"{h}-{i // 3 if clustered else i}" for i in range(n_h)],
            "msme": float(h != "large"), "y": rng.gamma(2.0, 10.0, n_h),
            "online": rng.random(n_h) < 0.3, "dom": rng.choice(["a", "b"], n_h)}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("clustered", [True, False])
def test_calibrated_stratum_share_has_zero_se(clustered):
    # K01 (MSME share of enterprises) with the size classes as calibration strata: every
    # stratum's count is known, so the share is known exactly -> SE 0. Uncalibrated: SE > 0.
    d = _post_stratified(clustered=clustered)
    kw = dict(weight="w", strata="stratum", psu="psu" if clustered else None)
    cal = survey.ratio(d, "msme", calibrated_to="strata", **kw)
    plain = survey.ratio(d, "msme", **kw)
    assert cal["estimate"].item() == pytest.approx(11900 / 12000, rel=1e-12)
    assert plain["se"].item() > 1e-4
    # zero up to rounding: the variance is ~1e-16 of the uncalibrated one (machine epsilon)
    assert cal["se"].item() ** 2 <= 1e-14 * plain["se"].item() ** 2
    count = survey.total(d, "msme", calibrated_to="strata", **kw)
    assert count["se"].item() == pytest.approx(0.0, abs=1e-9)
    assert cal.choices["calibrated_to"] == "strata"


def test_post_stratified_mean_se_matches_the_textbook_formula():
    # rows are the PSUs, equal weights within post-stratum: V = sum_h W_h^2 s_h^2 / n_h
    # (post-stratified mean, with-replacement, no fpc; Cochran 1977 eq. 5.46 without fpc)
    d = _post_stratified(seed=2, clustered=False)
    d["w"] = d.groupby("stratum")["w"].transform("mean")
    res = survey.ratio(d, "y", weight="w", strata="stratum", calibrated_to="strata")
    big_n = d.groupby("stratum")["w"].sum()
    g = d.groupby("stratum")["y"]
    v = ((big_n / big_n.sum()) ** 2 * g.var(ddof=1) / g.size()).sum()
    assert res["se"].item() == pytest.approx(np.sqrt(v), rel=1e-10)
    # a domain mean: residuals of u = 1{d} (y - R_d) / X_d against the stratum weight means
    dom = survey.ratio(d, "y", by="dom", weight="w", strata="stratum",
                       calibrated_to="strata").set_index("dom")
    assert dom.loc["a", "se"] == pytest.approx(_residual_se(d, "a"), rel=1e-10)


def _residual_se(d: pd.DataFrame, dom: str, psu: str | None = None) -> float:
    """Brute force: calibration residuals r_i = w u_i - B_h w_i per PSU, then
    sum_h n_h/(n_h-1) sum_i (r_hi - rbar_h)^2."""
    ind = (d["dom"] == dom).to_numpy(float)
    w, y = d["w"].to_numpy(), d["y"].to_numpy()
    big_x = (w * ind).sum()
    r_d = (w * ind * y).sum() / big_x
    z = w * ind * (y - r_d) / big_x
    b = pd.Series(z).groupby(d["stratum"]).transform("sum") / d.groupby("stratum")["w"].transform(
        "sum")
    r = pd.Series(z - b.to_numpy() * w)
    keys = [d["stratum"]] + ([d[psu]] if psu else [d.index])
    per_psu = r.groupby(keys).sum()
    total = 0.0
    for _, rh in per_psu.groupby(level=0):
        n_h = len(rh)
        total += n_h / (n_h - 1) * ((rh - rh.mean()) ** 2).sum()
    return float(np.sqrt(total))


def test_calibrated_domain_ratio_clustered_matches_brute_force():
    d = _post_stratified(seed=9, clustered=True)
    res = survey.ratio(d, "y", by="dom", weight="w", strata="stratum", psu="psu",
                       calibrated_to="strata").set_index("dom")
    for dom in ("a", "b"):
        assert res.loc[dom, "se"] == pytest.approx(_residual_se(d, dom, "psu"), rel=1e-10)


# samplics 0.6.1 calibrates weights (SampleWeight.poststratify / .calibrate) but estimates as if
# they were design weights: its CalibrateEstimator.estimate is an empty stub (``pass``) and
# TaylorEstimator has no calibration argument. The GREG variance (Deville & Sarndal 1992;
# Sarndal, Swensson & Wretman 1992, eq. 6.6.4; R survey::calibrate) is the Taylor variance of the
# calibrated-weight total of the residuals e = u - x'B (here x = the stratum dummies, so
# B_h = sum_h w u / sum_h w): samplics computes that variance from residuals formed here.
def _raw_and_samplics_weights(seed: int, clustered: bool) -> tuple[pd.DataFrame, dict]:
    d = _post_stratified(seed=seed, clustered=clustered)
    big_n = d.groupby("stratum")["w"].sum().round().to_dict()
    rng = np.random.default_rng(seed + 100)
    raw = d["w"].to_numpy() * rng.uniform(0.6, 1.4, len(d))  # design weights before calibration
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from samplics import SampleWeight
        d["w"] = SampleWeight().poststratify(samp_weight=raw, control=big_n,
                                             domain=d["stratum"].to_numpy())
        dummies = pd.get_dummies(d["stratum"]).astype(float)
        greg = SampleWeight().calibrate(samp_weight=raw, aux_vars=dummies.to_numpy(),
                                        control={k: big_n[k] for k in dummies.columns})
    # linear calibration on the stratum dummies is post-stratification
    np.testing.assert_allclose(greg, d["w"], rtol=1e-10)
    return d, big_n


def _greg_residuals(d: pd.DataFrame, u: np.ndarray) -> np.ndarray:
    """e_i = u_i - B_h, B_h = sum_{i in h} w_i u_i / sum_{i in h} w_i."""
    w = d["w"].to_numpy()
    b = (pd.Series(w * u).groupby(d["stratum"]).transform("sum")
         / d.groupby("stratum")["w"].transform("sum")).to_numpy()
    return u - b


@pytest.mark.parametrize("clustered", [True, False])
def test_calibrated_ses_match_samplics(clustered):
    d, big_n = _raw_and_samplics_weights(seed=21, clustered=clustered)
    design = dict(weight="w", strata="stratum", psu="psu" if clustered else None, df="nominal")
    psu = d["psu"] if clustered else None
    taylor = dict(samp_weight=d["w"], stratum=d["stratum"], psu=psu)
    # K01 with the size classes as calibration strata: the share is known -> SE 0; samplics,
    # blind to the calibration, reports a positive SE for the same weights
    k01 = survey.ratio(d, "msme", calibrated_to="strata", **design)
    naive = oracle(PopParam.mean, d["msme"], **taylor)
    assert float(naive["se"]) > 1e-4 and k01["se"].item() < 1e-7 * float(naive["se"])
    assert k01["estimate"].item() == pytest.approx(
        sum(v for k, v in big_n.items() if k != "large") / sum(big_n.values()), rel=1e-12)
    # a total: residuals of y
    tot = survey.total(d, "y", calibrated_to="strata", **design)
    ref = oracle(PopParam.total, _greg_residuals(d, d["y"].to_numpy()), **taylor)
    assert tot["se"].item() == pytest.approx(float(ref["se"]), rel=RTOL)
    # a mean and a ratio in domains: residuals of the linearised variable of each domain
    y, x, w = d["y"].to_numpy(), d["msme"].to_numpy() + 1.0, d["w"].to_numpy()
    for num, den in (("y", None), ("y", "x")):
        data = d.assign(x=x)
        res = survey.ratio(data, num, den, by="dom", calibrated_to="strata",
                           **design).set_index("dom")
        xs = np.ones(len(d)) if den is None else x
        for dom in ("a", "b"):
            ind = (d["dom"] == dom).to_numpy(float)
            big_x = (w * ind * xs).sum()
            r_d = (w * ind * y).sum() / big_x
            u = ind * (y - r_d * xs) / big_x
            ref = oracle(PopParam.total, _greg_residuals(d, u), **taylor)
            assert res.loc[dom, "estimate"] == pytest.approx(r_d, rel=1e-12)
            assert res.loc[dom, "se"] == pytest.approx(float(ref["se"]), rel=RTOL)
            assert res.loc[dom, "df"] == ref["df"]


def test_calibrated_to_rejects_unknown_values():
    with pytest.raises(ValueError, match="calibrated_to must be None or 'strata'"):
        survey.ratio(hand_table(), "y", calibrated_to="size_class", **DESIGN)


# --------------------------------------------------------------------------------------------
# logit intervals for proportions (samplics PopParam.prop, R svyciprop(method="logit"))
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("by", [None, "female"])
def test_logit_interval_matches_samplics_prop(by):
    d = synthetic(seed=11)
    ours = survey.ratio(d, "online", by=by, ci="logit", **DESIGN)
    kw = dict(samp_weight=d.w, stratum=d.stratum, psu=d.psu)
    ref = oracle(PopParam.prop, d.online.astype(int), **kw, **({"domain": d[by]} if by else {}))
    for i in range(len(ours)):
        level = {k: v[ours[by].iloc[i]] for k, v in ref.items() if k != "df"} if by else ref
        for col in ("estimate", "se", "ci_low", "ci_high"):
            assert ours[col].iloc[i] == pytest.approx(level[col][1], rel=RTOL)
    assert (ours["df"] == ref["df"]).all() and ours.choices["ci"] == "logit"
    wald = survey.ratio(d, "online", by=by, **DESIGN)
    np.testing.assert_array_equal(wald["se"], ours["se"])
    assert wald.choices["ci"] == "wald" and not np.allclose(wald["ci_low"], ours["ci_low"])


def test_logit_interval_hand_and_edges():
    # p = 0.2, se = 0.05, df = 10: logit(0.2) = -ln 4, se of the logit 0.05 / 0.16 = 0.3125
    from scipy import stats
    q = stats.t.ppf(0.975, 10)
    lo, hi = survey.logit_interval(np.array([0.2, 0.0, 1.0, 0.3, np.nan]),
                                   np.array([0.05, 0.0, 0.0, 0.1, 0.1]),
                                   np.array([10, 10, 10, 0, 10]), 0.05)
    expit = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert lo[0] == pytest.approx(expit(-np.log(4) - q * 0.3125), rel=1e-12)
    assert hi[0] == pytest.approx(expit(-np.log(4) + q * 0.3125), rel=1e-12)
    assert 0 < lo[0] < 0.2 < hi[0] < 1 and hi[0] - 0.2 > 0.2 - lo[0]  # asymmetric, inside (0,1)
    assert (lo[1], hi[1], lo[2], hi[2]) == (0.0, 0.0, 1.0, 1.0)  # degenerate, as samplics/R
    assert np.isnan([lo[3], hi[3], lo[4], hi[4]]).all()            # df <= 0, missing p
    with pytest.raises(ValueError, match="proportions in \\[0, 1\\].*divide percentages"):
        survey.logit_interval(np.array([35.0]), np.array([2.0]), np.array([10]), 0.05)
    with pytest.raises(ValueError, match="ci must be one of"):
        survey.mean(hand_table(), "y", ci="wilson", **DESIGN)
    with pytest.raises(ValueError, match="proportions in"):
        survey.mean(hand_table(), "y", ci="logit", **DESIGN)  # a mean of 23/12 is no proportion


# --------------------------------------------------------------------------------------------
# log-scale intervals for positive ratios (K04; Katz et al. 1978)
# --------------------------------------------------------------------------------------------
def test_log_interval_ratio_by_hand():
    # domain A of the hand table: R = 12/9 = 4/3, V = 232/729 (test_ratio_by_domain_hand),
    # df 3: [R exp(-t se / R), R exp(t se / R)], se / R = sqrt(232)/27 * 3/4 = sqrt(232)/36
    full = survey.ratio(hand_table(), "y", "x", by="dom", ci="log", **DESIGN)
    res = full.set_index("dom")
    a = res.loc["A"]
    half = T975_DF3 * np.sqrt(232.0) / 36
    assert a["estimate"] == pytest.approx(4 / 3, rel=1e-12)
    assert a["se"] == pytest.approx(np.sqrt(232.0) / 27, rel=1e-12)
    assert a["ci_low"] == pytest.approx(4 / 3 * np.exp(-half), rel=1e-12)
    assert a["ci_high"] == pytest.approx(4 / 3 * np.exp(half), rel=1e-12)
    # asymmetric, longer above, positive, the estimate is the geometric mean of the bounds
    assert 0 < a["ci_low"] and a["ci_high"] - 4 / 3 > 4 / 3 - a["ci_low"]
    assert np.sqrt(a["ci_low"] * a["ci_high"]) == pytest.approx(4 / 3, rel=1e-12)
    assert full.choices["ci"] == "log"
    wald = survey.ratio(hand_table(), "y", "x", by="dom", **DESIGN)
    np.testing.assert_array_equal(wald["se"].to_numpy(), res["se"].to_numpy())


def test_log_interval_delta_of_four_totals_and_edges():
    # K04-shaped (A/B)/(C/D) through delta(ci="log") equals log_interval on its estimate/SE/df
    d = hand_table().assign(a=lambda f: f.y * (f.dom == "A"), b=lambda f: f.x * (f.dom == "A"),
                            c=lambda f: f.y * (f.dom == "B"), e=lambda f: f.x * (f.dom == "B"))
    tt = survey.totals(d, ["a", "b", "c", "e"], **DESIGN)
    f = lambda t: (t[:, 0] / t[:, 1]) / (t[:, 2] / t[:, 3])  # noqa: E731
    g = lambda t: f(t)[:, None] * np.column_stack(  # noqa: E731
        [1 / t[:, 0], -1 / t[:, 1], -1 / t[:, 2], 1 / t[:, 3]])
    sym, lg = survey.delta(tt, f, g), survey.delta(tt, f, g, ci="log")
    # A: 12/9; B: (2*3 + 3*0 + 1*5) / (2*1 + 3*3 + 1*5) = 11/16 -> K04 = (4/3) / (11/16)
    assert lg["estimate"].iloc[0] == pytest.approx(64 / 33, rel=1e-12)
    lo, hi = survey.log_interval(lg["estimate"].to_numpy(), lg["se"].to_numpy(),
                                 lg["df"].to_numpy(), 0.05)
    assert (lg["ci_low"].iloc[0], lg["ci_high"].iloc[0]) == pytest.approx((lo[0], hi[0]), rel=1e-12)
    assert lg["ci_low"].iloc[0] > sym["ci_low"].iloc[0] and lg["ci_high"].iloc[0] > sym["ci_high"].iloc[0]
    # NaN where df <= 0 or the estimate is missing; non-positive estimates are refused
    lo, hi = survey.log_interval(np.array([2.0, np.nan]), np.array([0.5, 0.5]),
                                 np.array([0, 5]), 0.05)
    assert np.isnan([lo[0], hi[0], lo[1], hi[1]]).all()
    with pytest.raises(ValueError, match="positive estimates.*ci='wald'"):
        survey.log_interval(np.array([0.5, -1.0]), np.array([0.1, 0.1]), np.array([5, 5]), 0.05)
    with pytest.raises(ValueError, match="ci must be one of"):
        survey.delta(tt, f, g, ci="exp")


def test_indicator_table_interval_rules():
    # indicators.compute's interval per kind: K04 on the log scale where its value is > 0 and
    # symmetric t where it is <= 0 (negative value added), logit for percentages of firms and
    # shares of a panel total, symmetric t for other ratios; NaN stays NaN
    from scipy import stats

    from msme_eval.indicators import registry, table
    reg = registry().set_index("id")
    k04, k02, k05 = (dict(reg.loc[i], id=i) for i in ("K04", "K02", "K05"))
    value, se, df = np.array([0.8, -0.2, np.nan]), np.array([0.1, 0.1, 0.1]), np.full(3, 6.0)
    t = stats.t.ppf(0.975, 6)
    lo, hi = table.interval(k04, value, se, df, 0.05)
    assert (lo[0], hi[0]) == pytest.approx((0.8 * np.exp(-t * 0.125), 0.8 * np.exp(t * 0.125)),
                                           rel=1e-12)
    assert (lo[1], hi[1]) == pytest.approx((-0.2 - t * 0.1, -0.2 + t * 0.1), rel=1e-12)
    assert np.isnan([lo[2], hi[2]]).all()
    plo, phi = survey.logit_interval(np.array([0.4]), np.array([0.05]), df[:1], 0.05)
    lo, hi = table.interval(k05, value[:1] * 50, se[:1] * 50, df[:1], 0.05)
    assert (lo[0], hi[0]) == pytest.approx((100 * plo[0], 100 * phi[0]), rel=1e-12)
    # K02 (MSME share of employment): logit where the denominator is the panel's and the value
    # a percentage; symmetric t for a macro-table denominator (status E, a scaled total) and
    # for a value outside [0, 100]
    v2, s2, d2 = np.array([40.0, 40.0, 104.0]), np.full(3, 5.0), np.full(3, 6.0)
    lo, hi = table.interval(k02, v2, s2, d2, 0.05, macro=np.array([False, True, False]))
    assert (lo[0], hi[0]) == pytest.approx((100 * plo[0], 100 * phi[0]), rel=1e-12)
    assert (lo[1], hi[1]) == pytest.approx((40 - t * 5, 40 + t * 5), rel=1e-12)
    assert (lo[2], hi[2]) == pytest.approx((104 - t * 5, 104 + t * 5), rel=1e-12)
    assert [i for i in reg.index if table.is_bounded_share(dict(reg.loc[i], id=i))
            and not table.is_proportion(dict(reg.loc[i], id=i))] == ["K02", "K06", "K07"]
    assert not table.is_bounded_share(k04) and not table.is_bounded_share(dict(reg.loc["K03"], id="K03"))


# --------------------------------------------------------------------------------------------
# one result interface
# --------------------------------------------------------------------------------------------
def test_result_frame_choices_alpha_title():
    res = survey.ratio(hand_table(), "y", "x", by="dom", alpha=0.1, **DESIGN)
    assert isinstance(res, pd.DataFrame) and res.alpha == 0.1
    assert res.choices["weight"] == "w" and res.choices["df"] == "nominal"
    assert res.choices["engine"] == "pandas" and res.choices["singleton"] == "fail"
    assert "y / x" in res.title
    assert "estimate" in res.tidy().columns and "df: nominal" in res.summary()
    with pytest.raises(ValueError, match="alpha"):
        survey.ratio(hand_table(), "y", alpha=95, **DESIGN)
    assert survey.mean(hand_table(), "y", **DESIGN)["estimate"].item() == pytest.approx(
        survey.ratio(hand_table(), "y", **DESIGN)["estimate"].item())


# --------------------------------------------------------------------------------------------
# coverage of the intervals (issue 14): Satterthwaite df vs the nominal rule, few PSUs
# --------------------------------------------------------------------------------------------
def _census(seed: int = 0, n_strata: int = 5, n_clusters: int = 200) -> pd.DataFrame:
    """A census-like population: strata of unequal variability, clusters (PSUs) of 10-40 firms
    with a cluster effect on a 0/1 outcome and on productivity (turnover / employees)."""
    rng = np.random.default_rng(seed)
    parts = []
    for h in range(n_strata):
        logit0 = np.log((0.15 + 0.12 * h) / (0.85 - 0.12 * h))
        for i in range(n_clusters):
            n = int(rng.integers(10, 40))
            effect = rng.normal(0.0, 0.8 + 0.3 * h)
            p = 1.0 / (1.0 + np.exp(-(logit0 + effect)))
            emp = rng.lognormal(1.0 + 0.2 * h, 0.5, n)
            parts.append(pd.DataFrame({
                "h": h, "psu": f"{h}-{i}", "online": (rng.random(n) < p).astype(float),
                "female": rng.random(n) < 0.3 + 0.05 * h, "employees": emp,
                "turnover": emp * rng.lognormal(2.0 + 0.1 * h + 0.2 * effect, 0.3, n)}))
    return pd.concat(parts, ignore_index=True)


def _two_stage_samples(pop: pd.DataFrame, n_psu: int, per_psu: int, reps: int,
                       seed: int) -> pd.DataFrame:
    """``reps`` stratified two-stage samples stacked: n_psu clusters per stratum (SRSWOR), then
    ``per_psu`` firms per cluster (SRSWOR); weight = M_h/n_psu * N_i/m_i. Each replicate has
    its own strata (``rep|h``), so a replicate is a domain whose variance and Satterthwaite df
    involve only its own strata (other replicates' PSUs contribute 0)."""
    rng = np.random.default_rng(seed)
    members = pop.groupby("psu").indices
    clusters = pop.groupby("h")["psu"].unique()
    take, weight, rep = [], [], []
    for r in range(reps):
        for labels in clusters:
            for c in rng.choice(labels, n_psu, replace=False):
                idx = members[c]
                pick = rng.choice(idx, min(per_psu, len(idx)), replace=False)
                take.append(pick)
                weight.append(np.full(len(pick), len(labels) / n_psu * len(idx) / len(pick)))
                rep.append(np.full(len(pick), r))
    s = pop.iloc[np.concatenate(take)].reset_index(drop=True)
    s["w"] = np.concatenate(weight)
    s["rep"] = np.concatenate(rep)
    s["stratum"] = s["rep"].astype(str) + "|" + s["h"].astype(str)
    return s


@pytest.mark.slow
@pytest.mark.parametrize("n_psu", [2, 3, 8])
def test_interval_coverage_with_effective_df(n_psu):
    # Coverage of 95% intervals over 1000 samples (Monte Carlo SE ~0.7 points) for a
    # proportion and a ratio, overall and in a domain (women-owned firms). The Satterthwaite
    # intervals must cover at least as often as the nominal-df ones (t with 5 (n_psu - 1) df)
    # and stay near 95%. Measured (seed fixed): n_psu=2: 97.1 97.2 97.6 95.3 (nominal 92.6
    # 92.9 92.1 88.9); 3: 95.9 95.0 92.6 91.6 (94.6 93.6 88.5 87.2); 8: 95.8 94.1 94.7 93.3
    # (95.7 93.8 94.2 92.1) -- the ratio's shortfall at 3 PSUs is its small-sample skewness,
    # which no df rule fixes.
    from scipy import stats
    pop = _census()
    s = _two_stage_samples(pop, n_psu, per_psu=6, reps=1000, seed=n_psu)
    kw = dict(weight="w", strata="stratum", psu="psu")
    fem = pop[pop["female"]]
    cases = {
        "proportion": (survey.ratio(s, "online", by="rep", **kw), pop["online"].mean()),
        "proportion, women": (survey.ratio(s, "online", by=["rep", "female"], **kw),
                              fem["online"].mean()),
        "ratio": (survey.ratio(s, "turnover", "employees", by="rep", **kw),
                  pop["turnover"].sum() / pop["employees"].sum()),
        "ratio, women": (survey.ratio(s, "turnover", "employees", by=["rep", "female"], **kw),
                         fem["turnover"].sum() / fem["employees"].sum()),
    }
    q_nominal = stats.t.ppf(0.975, 5 * (n_psu - 1))
    for name, (res, truth) in cases.items():
        if "female" in res.columns:
            res = res[res["female"]]
        assert len(res) == 1000
        assert (res["df"] <= 5 * (n_psu - 1) + 1e-9).all(), name
        cover = ((res["ci_low"] <= truth) & (truth <= res["ci_high"])).mean()
        nominal = ((res["estimate"] - q_nominal * res["se"] <= truth)
                   & (truth <= res["estimate"] + q_nominal * res["se"])).mean()
        assert 0.91 <= cover <= 0.98, (name, cover)
        assert cover >= nominal - 0.002, (name, cover, nominal)
