"""Repeated-draw checks of did(): 95% CI coverage and bias of the overall ATT and one event time.

Fast version (CI): 250 draws of 300 firms x 6 years; Monte Carlo SE of coverage is 1.4 points,
so it checks a wider band (91-98.5%) and |bias| < 0.2 SE. The full check demanded by the issue
(1,000 draws: coverage 93-97%, |bias| < 0.1 SE) is marked slow.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from msme_eval.impact import did

TRUE_OFFSETS = {2: 0.5, 4: 0.2}  # cohort first year offset -> effect (constant over event time)


def _draw(rng: np.random.Generator, n: int = 300, T: int = 6, t0: int = 2015) -> tuple[pd.DataFrame, float, float]:
    offs = rng.choice([-1, 2, 4], size=n, p=[0.4, 0.3, 0.3])
    g = np.where(offs < 0, 0, t0 + offs)
    years = np.arange(t0, t0 + T)
    gi = np.repeat(g, T)
    yr = np.tile(years, n)
    eff = np.where((gi > 0) & (yr >= gi), np.where(gi == t0 + 2, 0.5, 0.2), 0.0)
    # AR(1) errors within firm: serial correlation the firm-clustered SE must handle
    e = np.zeros((n, T))
    e[:, 0] = rng.normal(size=n)
    for k in range(1, T):
        e[:, k] = 0.6 * e[:, k - 1] + rng.normal(scale=0.8, size=n)
    y = np.repeat(rng.normal(size=n) + 0.5 * (g > 0), T) + 0.1 * (yr - t0) + eff + e.ravel()
    ft = pd.array(np.where(gi > 0, gi, 0), dtype="Int64")
    ft[gi == 0] = pd.NA
    df = pd.DataFrame({"firm_id": np.repeat(np.arange(n), T).astype(str), "year": yr, "y": y, "first_treated": ft})
    n2, n4 = (g == t0 + 2).sum(), (g == t0 + 4).sum()
    # simple aggregation estimand with the realised cohort sizes: cohort 2 has T-2 post years, cohort 4 has T-4
    simple = (n2 * (T - 2) * 0.5 + n4 * (T - 4) * 0.2) / (n2 * (T - 2) + n4 * (T - 4))
    e0 = (n2 * 0.5 + n4 * 0.2) / (n2 + n4)
    return df, simple, e0


def _run(reps: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    cov_o = cov_e = 0
    err_o, se_o, err_e, se_e = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(reps):
            df, truth, truth_e0 = _draw(rng)
            r = did(df, "y")
            o = r.overall
            cov_o += o.ci_low <= truth <= o.ci_high
            err_o.append(o.att - truth)
            se_o.append(o.se)
            es = r.event_study.set_index("event_time").loc[0]
            cov_e += es["ci_low"] <= truth_e0 <= es["ci_high"]
            err_e.append(es["estimate"] - truth_e0)
            se_e.append(es["se"])
    return {"cov_overall": cov_o / reps, "cov_e0": cov_e / reps,
            "bias_overall_in_se": float(np.mean(err_o) / np.mean(se_o)),
            "bias_e0_in_se": float(np.mean(err_e) / np.mean(se_e)),
            "se_ratio": float(np.std(err_o, ddof=1) / np.mean(se_o))}


def test_coverage_and_bias_fast() -> None:
    s = _run(250, seed=20260101)
    assert 0.91 <= s["cov_overall"] <= 0.985, s
    assert 0.91 <= s["cov_e0"] <= 0.985, s
    assert abs(s["bias_overall_in_se"]) < 0.2 and abs(s["bias_e0_in_se"]) < 0.2, s
    assert 0.85 < s["se_ratio"] < 1.15, s  # analytical SE matches the sampling spread


@pytest.mark.slow
def test_coverage_and_bias_full() -> None:
    s = _run(1000, seed=7)
    assert 0.93 <= s["cov_overall"] <= 0.97, s
    assert 0.93 <= s["cov_e0"] <= 0.97, s
    assert abs(s["bias_overall_in_se"]) < 0.1 and abs(s["bias_e0_in_se"]) < 0.1, s


# ---------------------------------------------------------------- headline outcomes with exit (issue #13 item 4)
def _simple_truth(r, truth) -> float:
    """Simple-aggregation truth with the fit's own cohort masses: sum_cells n_g truth(e) / sum_cells n_g."""
    coh = r._design.cohort
    w = np.array([(coh == g).sum() for g, _ in r._post_cells()], dtype=float)
    return float(w @ np.array([truth(int(t - g)) for g, t in r._post_cells()]) / w.sum())


def _headline_draw(seed: int, n: int, n_psu: int, cluster: str | None) -> dict[str, tuple]:
    """One panel of test_impact_estimands.register_panel (planted effects, exit, PSU-correlated firm
    size): (estimate, truth, pre-trend p) per headline outcome, as evaluate() estimates them."""
    from test_impact_estimands import LOG_EFFECT, TAU, register_panel, truth_jobs, truth_survival

    from msme_eval.impact import build_outcomes
    from msme_eval.impact.survival import survival_did

    f, _ = build_outcomes(register_panel(n, seed, n_psu=n_psu, psu_sd=0.5))
    paid = f[~(f["selected_year"].notna() & f["first_treated"].isna())]  # as evaluate(): paid cohorts
    out = {}
    for o, tr in (("log_turnover", LOG_EFFECT), ("employees", TAU)):
        r = did(paid, o, cluster=cluster)
        out[o] = (r.overall, tr, r.pretrend.pvalue)
    for o, fn in (("survival", truth_survival), ("jobs", truth_jobs)):
        r = survival_did(f, outcome="alive" if o == "survival" else o, selected="selected_year", cluster=cluster)
        out[o] = (r.overall, _simple_truth(r, fn), np.nan)
    return out


def headline_coverage(reps: int, n: int = 3000, n_psu: int = 60, cluster: str | None = "psu") -> pd.DataFrame:
    """Coverage, bias (in mean SE), SE ratio (sd of the error / mean SE) and the 5% pre-trend test's
    rejection rate per headline outcome over ``reps`` planted panels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = [_headline_draw(s, n, n_psu, cluster) for s in range(reps)]
    rows = []
    for o in ("log_turnover", "employees", "survival", "jobs"):
        e = np.array([d[o][0].estimate for d in draws])
        se = np.array([d[o][0].se for d in draws])
        tr = np.array([d[o][1] for d in draws])
        cov = np.mean([d[o][0].ci_low <= d[o][1] <= d[o][0].ci_high for d in draws])
        pre = np.array([d[o][2] for d in draws])
        rows.append({"outcome": o, "coverage": cov, "bias_in_se": (e - tr).mean() / se.mean(),
                     "se_ratio": np.std(e - tr, ddof=1) / se.mean(),
                     "pretrend_size": np.mean(pre < 0.05) if np.isfinite(pre).all() else np.nan})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_headline_outcomes_coverage_with_exit_and_psu_clusters() -> None:
    """350 panels of 3,000 firms in 60 PSUs (~3.5 min). Measured (seeds 0-349, 2026-12-03): coverage
    log turnover 95.7%, employees 95.4%, survival 94.3%, net jobs 93.1%; bias +0.04 / -0.15 / +0.06 /
    +0.10 SE; SE ratio 0.98 / 0.99 / 1.03 / 1.02; 5% pre-trend test size with PSU clusters 5.4% / 6.6%
    (Hotelling F; the chi2 reference rejected 24% / 27% with 60 clusters). Cause of the under-coverage
    of net jobs found in the review: firm size is correlated within PSU and net jobs keep the level of
    exiting firms, so firm-clustered SEs are too small; on synth (8,000 firms, seed 1) the PSU-clustered
    net-jobs SE is 1.16x the firm-clustered one (0.710 vs 0.614), i.e. a nominal 95% interval covers
    ~91% when clustered by firm. evaluate() now clusters by PSU by default.
    Bands asserted: 95% +- 2.5 Monte Carlo SE (2.9 points)."""
    tab = headline_coverage(350).set_index("outcome")
    print(tab.to_string())
    mc = 2.5 * np.sqrt(0.95 * 0.05 / 350)
    assert ((tab["coverage"] - 0.95).abs() < mc).all(), tab
    assert (tab["se_ratio"].between(0.9, 1.1)).all(), tab
    assert (tab["bias_in_se"].abs() < 0.25).all(), tab
    assert (tab["pretrend_size"].dropna() < 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 350)).all(), tab
