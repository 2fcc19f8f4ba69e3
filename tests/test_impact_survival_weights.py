"""Population-weighted survival and net-jobs ATT (issue #13, item 4): ``survival_did(weight=...)``.

Planted truth (``stratified_sample``): a population of firms observed 2014-2021, all alive in 2014,
20% in stratum B. The sample over-represents B: inclusion probability pi_B = 0.5, pi_A = 0.1, weight
w = 1 / pi. 40% of sampled firms are selected, cohort g one of ``COHORTS`` with equal
probability (the parity and by-hand tests tilt stratum B to the later cohort, so weighting moves
the cohort shares). Annual exit hazard H0 = 0.10 for every firm before support; from its cohort
year on a selected firm exits at H1[s]
(A: 0.10, no effect; B: 0.02). Among cohort firms alive in g - 1 the strata keep their population
shares (same hazard before g), so at e = t - g

    ATT_s(e) = (1 - H1[s])^(e+1) - (1 - H0)^(e+1),
    population ATT(e) = 0.2 ATT_B(e) (+ 0.8 ATT_A(e) = 0); sample ATT(e) = s_B ATT_B(e),

s_B = 0.2 pi_B / (0.2 pi_B + 0.8 pi_A) = 5/9 the stratum-B share of the sample. The simple
aggregation weights cohort g by its mass among firms alive in g - 1, m_g proportional to
(1 - H0)^(g - 1 - 2014) (equal cohort probabilities), over its cells e = 0..2021 - g.
"""
from __future__ import annotations

import warnings

import moderndid
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import msme_eval as me
from msme_eval.impact import evaluate
from msme_eval.impact._checks import ImpactInputError
from msme_eval.impact.survival import survival_did

YEARS = np.arange(2014, 2022)
COHORTS = (2017, 2019)
H0, H1, SHARE_B, PI = 0.10, {"A": 0.10, "B": 0.02}, 0.2, {"A": 0.1, "B": 0.5}
Z99 = stats.norm.ppf(0.995)


def stratified_sample(n_pop: int, seed: int, late_b: float = 0.5) -> pd.DataFrame:
    """Firm x year grid of the sampled firms (module docstring): alive 0/1 (0 after exit), jobs
    (employees, 0 after exit), first_treated (NaN = comparison), weight w = 1/pi, covariate x.
    ``late_b``: probability that a selected stratum-B firm is in the later cohort (0.5 = as stratum A;
    otherwise the weighted and unweighted cohort shares differ, and the truth formula does not apply)."""
    rng = np.random.default_rng(seed)
    b = rng.random(n_pop) < SHARE_B
    b = b[rng.random(n_pop) < np.where(b, PI["B"], PI["A"])]
    n, T = len(b), len(YEARS)
    late = rng.random(n) < np.where(b, late_b, 0.5)
    g = np.where(rng.random(n) < 0.4, np.where(late, COHORTS[1], COHORTS[0]), 0)
    alive = np.ones((n, T), dtype=bool)
    for k in range(1, T):
        h = np.where((g > 0) & (g <= YEARS[k]), np.where(b, H1["B"], H1["A"]), H0)
        alive[:, k] = alive[:, k - 1] & (rng.random(n) >= h)
    size = 1 + rng.poisson(6, size=n)
    jobs = np.where(alive, size[:, None] + rng.normal(0, 1, size=(n, T)), 0.0)
    return pd.DataFrame({
        "firm_id": np.repeat([f"f{i:06d}" for i in range(n)], T), "year": np.tile(YEARS, n),
        "alive": alive.ravel().astype(float), "jobs": jobs.ravel(),
        "first_treated": np.repeat(np.where(g > 0, g, np.nan), T),
        "w": np.repeat(1 / np.where(b, PI["B"], PI["A"]), T), "x": np.repeat(rng.normal(size=n), T),
        "region": np.repeat(rng.integers(0, 40, size=n), T),
    })


def truth(share_b: float) -> float:
    """Simple aggregation of the planted survival ATT with stratum-B share ``share_b``."""
    num = den = 0.0
    for g in COHORTS:
        m_g = (1 - H0) ** (g - 1 - YEARS[0])
        e = np.arange(0, YEARS[-1] - g + 1)
        num += m_g * share_b * ((1 - H1["B"]) ** (e + 1) - (1 - H0) ** (e + 1)).sum()
        den += m_g * len(e)
    return num / den


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return stratified_sample(20_000, seed=1, late_b=0.85)  # weighting changes the cohort shares


# ---------------------------------------------------------------- constant weights = unweighted
@pytest.mark.parametrize("kw", [{}, {"cluster": "region"}, {"covariates": ["x"]}, {"outcome": "jobs"}])
def test_constant_weights_give_the_unweighted_result(panel, kw) -> None:
    un = survival_did(panel, **kw)
    cw = survival_did(panel.assign(w=7.5), weight="w", **kw)
    assert cw.overall.estimate == pytest.approx(un.overall.estimate, abs=1e-12)
    assert cw.overall.se == pytest.approx(un.overall.se, abs=1e-12)
    for a, b in ((un.att_gt, cw.att_gt), (un.event_study, cw.event_study),
                 (un.aggregate("group"), cw.aggregate("group")), (un.aggregate("calendar"), cw.aggregate("calendar"))):
        np.testing.assert_allclose(b[["estimate", "se"]].to_numpy(float), a[["estimate", "se"]].to_numpy(float),
                                   rtol=0, atol=1e-12)
    assert un.choices["estimand"].startswith("sample ATT") and un.choices["weight"] is None
    assert cw.choices["estimand"].startswith("population ATT (weighted by w")
    assert "survey weight w" in cw.choices["firms_counted"]


# ---------------------------------------------------------------- parity with R did (moderndid)
def cohort_sample(frame: pd.DataFrame, g: int) -> pd.DataFrame:
    """The survival comparison of cohort g: cohort-g and never-supported firms alive in g - 1, years
    g - 1 onwards (moderndid's gname: 0 = never treated)."""
    alive_before = frame.loc[(frame["year"] == g - 1) & (frame["alive"] == 1), "firm_id"]
    keep = (frame["firm_id"].isin(alive_before) & (frame["first_treated"].isna() | (frame["first_treated"] == g))
            & (frame["year"] >= g - 1))
    s = frame[keep].copy()
    s["gname"] = s["first_treated"].fillna(0).astype(int)
    s["id"] = pd.factorize(s["firm_id"])[0]
    return s


def moderndid_fit(sample: pd.DataFrame, y: str, xformla: str | None) -> moderndid.did.container.MPResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return moderndid.att_gt(sample, yname=y, tname="year", idname="id", gname="gname", xformla=xformla,
                                weightsname="w", est_method="dr", boot=False, cband=False)


@pytest.mark.parametrize(("y", "covs"), [("alive", []), ("alive", ["x"]), ("jobs", [])])
def test_weighted_cells_match_r_did_on_each_cohort_sample(panel, y, covs) -> None:
    """Each weighted ATT(g,t) and its SE equal R did's (moderndid, weightsname) on cohort g's sample
    of firms alive in g - 1 (doubly robust; with covariates the R DRDID weighted cell)."""
    r = survival_did(panel, outcome=y, covariates=covs, weight="w")
    gt = r.att_gt.set_index(["cohort", "time"])
    for g in COHORTS:
        m = moderndid_fit(cohort_sample(panel, g), y, "~x" if covs else None)
        ours = gt.loc[[(g, int(t)) for t in m.times]]
        np.testing.assert_allclose(ours["estimate"].to_numpy(), m.att_gt, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours["se"].to_numpy(), m.se_gt, rtol=1e-5)


def test_one_cohort_overall_matches_r_aggte(panel) -> None:
    """With one cohort the weighted simple aggregation (and its SE, WIF included) is R
    ``aggte(type="simple")`` on that cohort's sample."""
    g = COHORTS[0]
    one = panel[panel["first_treated"].isna() | (panel["first_treated"] == g)]
    r = survival_did(one, weight="w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg = moderndid.aggte(moderndid_fit(cohort_sample(one, g), "alive", None), type="simple")
    assert r.overall.estimate == pytest.approx(agg.overall_att, abs=1e-6)
    assert r.overall.se == pytest.approx(agg.overall_se, rel=1e-5)


# ---------------------------------------------------------------- two cohorts: by hand
def hand_cells(frame: pd.DataFrame) -> tuple[dict, pd.Series, pd.Series, pd.Series]:
    """Weighted (Hajek) ATT(g,t) and influence functions psi_i = +-w_i (dY_i - mean_w) / sum w per
    group, on each cohort's sample of firms alive in g - 1; the firms used, their weight and cohort."""
    cells, used = {}, set()
    firm = frame.groupby("firm_id").first()
    for g in COHORTS:
        s = cohort_sample(frame, g)
        used |= set(s["firm_id"])
        wide = s.pivot(index="firm_id", columns="year", values="alive")
        tr = firm.loc[wide.index, "first_treated"].eq(g).to_numpy()
        w = firm.loc[wide.index, "w"].to_numpy()
        for t in range(g, YEARS[-1] + 1):
            dy = (wide[t] - wide[g - 1]).to_numpy()
            mt, mc = np.average(dy[tr], weights=w[tr]), np.average(dy[~tr], weights=w[~tr])
            psi = np.where(tr, w * (dy - mt) / w[tr].sum(), -w * (dy - mc) / w[~tr].sum())
            cells[(g, t)] = (mt - mc, pd.Series(psi, index=wide.index))
    ids = sorted(used)
    return cells, firm.loc[ids, "w"], firm.loc[ids, "first_treated"].fillna(0), pd.Series(0.0, index=ids)


def test_two_cohort_overall_and_se_by_hand(panel) -> None:
    """theta = sum_k p_{g_k} ATT_k / sum_k p_{g_k}, p_g = sum of weights of cohort g among the firms
    used (R aggte with weightsname); SE from psi = sum_k (p_k/S) IF_k + WIF with R's centred
    ``did:::wif`` (weights normalised to mean 1 over the n firms used: p_g = mean(w 1{G = g}))."""
    cells, w, g_of, zero = hand_cells(panel)
    keys = sorted(cells)
    n = len(w)
    wn = w * n / w.sum()
    pg = np.array([(wn * (g_of == g)).mean() for g, _ in keys])
    att = np.array([cells[k][0] for k in keys])
    s = pg.sum()
    theta = pg @ att / s
    psi = zero.copy()
    for k, key in enumerate(keys):
        psi = psi.add(cells[key][1] * pg[k] / s, fill_value=0.0)
    ind = np.column_stack([wn * (g_of == g) - pg[k] for k, (g, _) in enumerate(keys)])
    wif = (ind / s - np.outer(ind.sum(axis=1), pg) / s**2) @ att
    se = np.sqrt(((psi + wif / n) ** 2).sum())
    r = survival_did(panel, weight="w")
    assert r.overall.estimate == pytest.approx(theta, abs=1e-10)
    assert r.overall.se == pytest.approx(se, rel=1e-10)
    by_g = r.aggregate("group").set_index("level")["estimate"]
    p_c = {g: w[g_of == g].sum() for g in COHORTS}
    theta_g = {g: np.mean([cells[k][0] for k in keys if k[0] == g]) for g in COHORTS}
    for g in COHORTS:
        assert by_g[g] == pytest.approx(theta_g[g], abs=1e-10)
    assert by_g["overall"] == pytest.approx(sum(p_c[g] * theta_g[g] for g in COHORTS) / sum(p_c.values()),
                                            abs=1e-10)


# ---------------------------------------------------------------- planted truth
def test_weighted_survival_att_recovers_the_population_truth() -> None:
    """Weighted: covers the population truth (99% CI) in each seed and the mean over seeds is within
    2 Monte Carlo SE of it. Unweighted: centred on the over-sampled composition (s_B = 5/9), far
    from the population truth."""
    truth_pop, truth_sample = truth(SHARE_B), truth(5 / 9)
    est_w, se_w, est_u, se_u = [], [], [], []
    for seed in range(6):
        p = stratified_sample(40_000, seed=100 + seed)
        rw, ru = survival_did(p, weight="w").overall, survival_did(p).overall
        assert abs(rw.estimate - truth_pop) < Z99 * rw.se, (seed, rw.estimate, truth_pop)
        est_w.append(rw.estimate), se_w.append(rw.se), est_u.append(ru.estimate), se_u.append(ru.se)
    k = len(est_w)
    mc_w, mc_u = np.sqrt(np.mean(np.square(se_w)) / k), np.sqrt(np.mean(np.square(se_u)) / k)
    assert abs(np.mean(est_w) - truth_pop) < 2 * mc_w, (np.mean(est_w), truth_pop, mc_w)
    assert abs(np.mean(est_u) - truth_sample) < 2 * mc_u, (np.mean(est_u), truth_sample, mc_u)
    assert np.mean(est_u) - truth_pop > 10 * mc_u  # the unweighted ATT leans to the over-sampled stratum


# ---------------------------------------------------------------- bad input
def test_bad_weights_are_refused_with_the_firms_or_rows(panel) -> None:
    varying = panel.copy()
    varying.loc[varying.index[:3], "w"] = [1.0, 2.0, 3.0]
    with pytest.raises(ImpactInputError, match=r"'w' varies within unit .*f000000"):
        survival_did(varying, weight="w")
    bad = panel.copy()
    bad.loc[bad.index[5], "w"] = 0.0
    with pytest.raises(ImpactInputError, match=r"'w' must be > 0 and present; rows 5 "):
        survival_did(bad, weight="w")
    with pytest.raises(ImpactInputError, match="wgt"):
        survival_did(panel, weight="wgt")


# ---------------------------------------------------------------- evaluate()
@pytest.fixture(scope="module")
def synth_panel() -> pd.DataFrame:
    return me.synth.generate(n_firms=3000).panel


def test_evaluate_fills_population_columns_for_survival_and_jobs(synth_panel) -> None:
    """With ``weight`` the survival and net-jobs rows carry the population ATT (the survey weights
    move it away from the sample ATT; constant weights give the sample ATT back); without it there is
    no population column."""
    kw = {"programme_type": "finance", "outcomes": ["survival", "jobs"], "subgroups": (), "robustness": False}
    ev = evaluate(synth_panel, weight="weight", **kw).headline.set_index("outcome")
    const = evaluate(synth_panel.assign(weight=3.0), weight="weight", **kw).headline.set_index("outcome")
    pop = ["att_population", "se_population", "ci_low_population", "ci_high_population", "pvalue_population"]
    for o in ("survival", "jobs"):
        assert np.isfinite(ev.loc[o, pop].astype(float)).all()
        assert ev.loc[o, "estimand_population"].startswith("population ATT (weighted by _w_ref: the selected firms "
                                                           "alive in the year before their cohort year (g - 1)")
        assert ev.loc[o, "att"] == pytest.approx(const.loc[o, "att"], abs=1e-12)  # headline: the sample ATT
        assert abs(ev.loc[o, "att_population"] - ev.loc[o, "att"]) > 1e-3
        assert const.loc[o, "att_population"] == pytest.approx(const.loc[o, "att"], abs=1e-10)
        assert const.loc[o, "se_population"] == pytest.approx(const.loc[o, "se"], rel=1e-9)
    un = evaluate(synth_panel, survival_covariates=[], **kw).headline
    assert set(un["outcome"]) == {"survival", "jobs"}
    assert not any(c.endswith("_population") for c in un.columns)


def test_jobs_table_carries_the_population_net_jobs_beside_the_sample(synth_panel) -> None:
    """The jobs table's population net jobs per firm is the headline's population ATT for jobs;
    constant weights give the sample value back; cost per job stays on the sample."""
    kw = {"programme_type": "finance", "outcomes": ["jobs"], "subgroups": (), "robustness": False,
          "macro": me.synth.generate(n_firms=3000).macro}
    ev = evaluate(synth_panel, weight="weight", **kw)
    j, h = ev.jobs.iloc[0], ev.headline.set_index("outcome").loc["jobs"]
    assert j["net_jobs_per_firm_population"] == pytest.approx(h["att_population"], rel=1e-12)
    assert j["se_population"] == pytest.approx(h["se_population"], rel=1e-12)
    assert j["net_jobs_per_firm"] == pytest.approx(h["att"], rel=1e-12)
    const = evaluate(synth_panel.assign(weight=3.0), weight="weight", **kw).jobs.iloc[0]
    assert const["net_jobs_per_firm_population"] == pytest.approx(const["net_jobs_per_firm"], abs=1e-10)
    assert np.isfinite(j["cost_per_job"]) and const["cost_per_job"] == pytest.approx(j["cost_per_job"], rel=1e-12)
    assert "net_jobs_per_firm_population" not in evaluate(synth_panel, **kw).jobs.columns
