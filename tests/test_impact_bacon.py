"""bacon(): Goodman-Bacon decomposition of TWFE (published R bacondecomp numbers, paper weights, exact sums)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyfixest as pf
import pytest
from test_impact_helpers import simulate

from msme_eval.impact import ImpactInputError, twfe
from msme_eval.impact.bacon import bacon

CASTLE = Path(__file__).parent / "data" / "bacondecomp_castle.csv"


def _twfe_coef(df: pd.DataFrame, y: str, d: str, unit: str, time: str) -> float:
    return float(pf.feols(f"{y} ~ {d} | {unit} + {time}", data=df).coef().iloc[0])


@pytest.fixture(scope="module")
def staggered() -> pd.DataFrame:
    df = simulate(n=400, n_years=8, seed=11)   # cohorts 2018 and 2020, dynamic effects: TWFE is biased
    df["post"] = ((df["year"] >= df["first_treated"]) & df["first_treated"].notna()).astype(int)
    return df


def test_castle_doctrine_matches_r_bacondecomp():
    """R bacondecomp (evanjflack/bacondecomp, index.ipynb; data castle.rda = Cheng and Hoekstra 2013,
    converted to tests/data/bacondecomp_castle.csv with full precision) prints for
    bacon(l_homicide ~ post, castle, id_var = "state", time_var = "year"):
    Two-way FE estimate = 0.0818116169306475; weights Early vs Late 0.05976325, Late vs Early 0.03189818,
    Treated vs Untreated 0.90833857; largest 2x2: 2006 vs untreated, estimate 0.06823587, weight 0.5923947."""
    castle = pd.read_csv(CASTLE)
    r = bacon(castle, "l_homicide", "post", unit="state", time="year")
    assert r.twfe_estimate == pytest.approx(0.0818116169306475, abs=1e-12)
    w = r.by_type.set_index("type")["weight"]
    assert w["earlier_vs_later"] == pytest.approx(0.05976325, abs=5e-9)
    assert w["later_vs_earlier"] == pytest.approx(0.03189818, abs=5e-9)
    assert w["treated_vs_never"] == pytest.approx(0.90833857, abs=5e-9)
    top = r.comparisons.sort_values("weight").iloc[-1]
    assert top["treated"] == 2006 and top["control"] == "untreated"
    assert top["estimate"] == pytest.approx(0.06823587, abs=5e-9)
    assert top["weight"] == pytest.approx(0.5923947, abs=5e-8)
    assert (r.comparisons["weight"] * r.comparisons["estimate"]).sum() == pytest.approx(
        _twfe_coef(castle, "l_homicide", "post", "state", "year"), abs=1e-10)


def test_weighted_sum_is_the_twfe_coefficient_exactly(staggered):
    fit = twfe(staggered, "y", "post")
    r = fit.bacon()
    c = r.comparisons
    assert c["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (c["weight"] > 0).all()
    assert float((c["weight"] * c["estimate"]).sum()) == pytest.approx(float(fit.coef["post"]), abs=1e-10)
    assert r.twfe_estimate == pytest.approx(float(fit.coef["post"]), abs=1e-10)
    assert set(c["type"]) == {"treated_vs_never", "earlier_vs_later", "later_vs_earlier"}
    assert len(c) == 2 + 2   # 2 cohorts vs U, and the two timing comparisons
    assert fit.bacon() is r  # cached
    assert "already-treated" in " ".join(fit.notes())


def test_two_by_two_is_the_hand_computed_did(staggered):
    """Earlier (2018) vs later (2020) before 2020: the plain 2x2 DiD of means over [2015, 2019] with
    pre = 2015-2017 and post = 2018-2019 (Goodman-Bacon 2021, eq. 10b)."""
    df = staggered
    r = bacon(df, "y", "post")
    c = r.comparisons.set_index(["treated", "control"])
    win = df[df["year"] < 2020]
    g = win["first_treated"]
    mean = lambda m, post: win.loc[m & ((win["year"] >= 2018) == post), "y"].mean()  # noqa: E731
    e, lt = (g == 2018).fillna(False), (g == 2020).fillna(False)
    hand = (mean(e, True) - mean(e, False)) - (mean(lt, True) - mean(lt, False))
    assert c.loc[(2018, 2020), "estimate"] == pytest.approx(hand, abs=1e-10)


def test_goodman_bacon_figure_2_weights():
    """Paper's Figure 2 set-up (as R bacondecomp's test_bacon_weights): T = 100, an early group treated at
    34, a late group at 85, one untreated unit. Published weights: s_kU .365, s_lU .222, s_kl^k .278,
    s_kl^l .135. The weights do not depend on the outcome."""
    rng = np.random.default_rng(0)
    t = np.tile(np.arange(1, 101), 3)
    unit = np.repeat([1, 2, 3], 100)
    d = np.concatenate([np.zeros(100), (np.arange(1, 101) >= 34), (np.arange(1, 101) >= 85)]).astype(int)
    df = pd.DataFrame({"id": unit, "time": t, "treated": d, "y": rng.normal(size=300)})
    c = bacon(df, "y", "treated", unit="id", time="time").comparisons.set_index(["treated", "control"])
    assert round(c.loc[(34, "untreated"), "weight"], 3) == 0.365
    assert round(c.loc[(85, "untreated"), "weight"], 3) == 0.222
    assert round(c.loc[(34, 85), "weight"], 3) == 0.278
    assert round(c.loc[(85, 34), "weight"], 3) == 0.135
    assert c.loc[(85, 34), "type"] == "later_vs_earlier"


def test_refusals_name_the_problem(staggered):
    with pytest.raises(ImpactInputError, match="not balanced"):
        bacon(staggered.iloc[1:], "y", "post")
    off = staggered.copy()
    off.loc[(off["firm_id"] == off.loc[off["post"] == 1, "firm_id"].iloc[0]) & (off["year"] == 2021), "post"] = 0
    with pytest.raises(ImpactInputError, match="switches off"):
        bacon(off, "y", "post")
    frac = staggered.assign(post=staggered["post"] * 0.5)
    with pytest.raises(ImpactInputError, match="must be 0/1"):
        bacon(frac, "y", "post")
    miss = staggered.copy()
    miss.loc[miss.index[3], "y"] = np.nan
    with pytest.raises(ImpactInputError, match="missing in 1 row"):
        bacon(miss, "y", "post")
    with pytest.raises(ImpactInputError, match="without covariates"):
        twfe(staggered, "y", "post", covariates=["x"]).bacon()


def test_result_interface(staggered):
    r = bacon(staggered, "y", "post")
    tidy = r.tidy()
    assert list(tidy.columns[:8]) == ["treated", "control", "type", "estimate", "se", "ci_low", "ci_high", "pvalue"]
    bt = r.by_type.set_index("type")
    assert bt["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert r.forbidden_weight == bt.loc["later_vs_earlier", "weight"] > 0
    assert "Goodman-Bacon" in r.summary()
    import matplotlib

    matplotlib.use("Agg")
    ax = r.plot()
    assert ax.get_xlabel() == "weight"
