"""Small simulated panels with planted effects for the impact tests (known DGP, known ATT(g,t)).

``simulate`` draws a contract-like firm-year panel: firm effect a_i, common year effects,
staggered first support (never / cohorts), and a planted effect that varies by cohort and event
time (so static TWFE is biased) and, optionally, by owner sex. Exits are optional: a treated
firm's exit hazard can be lowered by support (planted survival effect).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

COHORT_EFFECT = {3: 0.30, 5: 0.10}   # offset of first-support year from the first panel year -> base effect
SLOPE = 0.05                          # extra effect per year since support


def planted_att(offset: int, e: int) -> float:
    """Planted ATT for cohort (first year + offset) at event time e (>= 0), female effect excluded."""
    return COHORT_EFFECT[offset] + SLOPE * e if e >= 0 else 0.0


def simulate(n: int = 1500, n_years: int = 8, seed: int = 0, t0: int = 2015, female_extra: float = 0.0,
             noise: float = 0.5, homogeneous: bool = False) -> pd.DataFrame:
    """Balanced panel, columns firm_id, year, first_treated (Int64, NA = never), y, owner_female, x.
    ``homogeneous``: both cohorts get the same dynamic path 0.2 + SLOPE * e."""
    rng = np.random.default_rng(seed)
    offs = rng.choice([-1, 3, 5], size=n, p=[0.5, 0.25, 0.25])
    g = np.where(offs < 0, -1, t0 + offs)
    female = rng.random(n) < 0.4
    a = rng.normal(size=n) + 0.3 * (offs >= 0)   # selection on levels only (DiD removes it)
    years = np.arange(t0, t0 + n_years)
    fid = np.array([f"F{i:05d}" for i in range(n)])
    df = pd.DataFrame({"firm_id": np.repeat(fid, n_years), "year": np.tile(years, n)})
    gi, fem = np.repeat(g, n_years), np.repeat(female, n_years)
    e = df["year"].to_numpy() - gi
    treated_now = (gi > 0) & (e >= 0)
    off_row = np.repeat(offs, n_years)
    base = np.where(off_row == 3, COHORT_EFFECT[3], np.where(off_row == 5, COHORT_EFFECT[5], 0.0))
    if homogeneous:
        base = np.where(off_row >= 0, 0.2, 0.0)
    eff = np.where(treated_now, (base + SLOPE * e) * (1 + female_extra * fem), 0.0)
    lam = 0.05 * (df["year"].to_numpy() - t0) + 0.02 * np.sin(df["year"].to_numpy())
    df["y"] = np.repeat(a, n_years) + lam + eff + rng.normal(scale=noise, size=len(df))
    df["first_treated"] = pd.array(np.where(gi > 0, gi, 0), dtype="Int64")
    df.loc[gi < 0, "first_treated"] = pd.NA
    df["owner_female"] = pd.array(fem, dtype="boolean")
    df["x"] = np.repeat(rng.normal(size=n), n_years)
    df["region"] = np.repeat(np.array([f"R{k}" for k in rng.integers(0, 30, size=n)]), n_years)
    return df


def truth_simple(df: pd.DataFrame, female_extra: float = 0.0) -> float:
    """Simple-aggregation estimand: cohort-size weighted mean of post ATT(g,t) (sample cohort sizes)."""
    t0, t1 = int(df["year"].min()), int(df["year"].max())
    units = df.groupby("firm_id").agg(g=("first_treated", "first"), f=("owner_female", "first"))
    num = den = 0.0
    for g, grp in units.dropna(subset=["g"]).groupby("g"):
        mult = float(np.mean(1 + female_extra * grp["f"].astype(float)))
        for t in range(int(g), t1 + 1):
            num += len(grp) * planted_att(int(g) - t0, t - int(g)) * mult
            den += len(grp)
    return num / den


def contract_panel(n: int = 2000, n_years: int = 8, seed: int = 0, t0: int = 2015) -> tuple[pd.DataFrame, dict]:
    """Contract-like panel (employees, turnover, value_added, support, size_class, birth_year, urban,
    programme_type) with planted effects: log turnover +0.20 (finance) / +0.10 (market_access), jobs
    +2 employees (finance) / +1 (market_access) for surviving firms, yearly exit hazard 6% (never
    supported) vs 3% once supported (survival effect), women-owned firms' turnover effect +0.10 extra.
    Returns (panel, truth dict)."""
    rng = np.random.default_rng(seed)
    types = rng.choice(["none", "finance", "market_access"], size=n, p=[0.5, 0.25, 0.25])
    offs = rng.choice([2, 4], size=n)
    g = np.where(types == "none", -1, t0 + offs)
    female = rng.random(n) < 0.4
    urban = rng.random(n) < 0.6
    birth = t0 - rng.integers(0, 20, size=n)
    a = rng.normal(size=n)
    emp0 = rng.integers(1, 40, size=n)
    rows = []
    eff_t = {"finance": 0.20, "market_access": 0.10, "none": 0.0}
    eff_j = {"finance": 2.0, "market_access": 1.0, "none": 0.0}
    for i in range(n):
        for k, yr in enumerate(range(t0, t0 + n_years)):
            treated = g[i] > 0 and yr >= g[i]
            if k > 0:
                hazard = 0.03 if treated else 0.06
                if rng.random() < hazard:
                    break
            e_t = eff_t[types[i]] * (1 + 0.5 * female[i]) if treated else 0.0
            e_j = eff_j[types[i]] if treated else 0.0
            emp = max(0, int(round(emp0[i] + 0.2 * k + e_j + rng.normal(scale=1.5))))
            lt = 10 + 0.08 * np.log1p(emp0[i]) + a[i] + 0.03 * k + e_t + rng.normal(scale=0.3)
            rows.append((f"F{i:05d}", yr, emp, float(np.exp(lt)), float(np.exp(lt) * 0.4),
                         types[i] if types[i] != "none" else None, g[i] if g[i] > 0 else None,
                         float(rng.uniform(500, 1500)) if (g[i] > 0 and yr == g[i]) else 0.0,
                         bool(female[i]), bool(urban[i]), int(birth[i])))
    p = pd.DataFrame(rows, columns=["firm_id", "year", "employees", "turnover", "value_added", "programme_type",
                                    "first_treated", "support_amount", "owner_female", "urban", "birth_year"])
    p["first_treated"] = p["first_treated"].astype("Int64")
    p["owner_female"] = p["owner_female"].astype("boolean")
    p["urban"] = p["urban"].astype("boolean")
    p["country"] = "THA"
    p["size_class"] = pd.Categorical(np.where(p["employees"] < 10, "micro", "small"),
                                     categories=["micro", "small", "medium", "large"])
    truth = {"log_turnover": eff_t, "female_extra": 0.5, "employees": eff_j}
    return p, truth


def test_simulate_is_deterministic_and_balanced() -> None:
    a, b = simulate(n=50, seed=3), simulate(n=50, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("firm_id").size().eq(8).all()
    assert a["first_treated"].isna().any() and a["first_treated"].notna().any()
