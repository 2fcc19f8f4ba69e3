"""Covariate balance tables in the spirit of Stata's ``iebaltab`` (DIME, World Bank).

For each covariate x: (weighted) means by arm, difference m1 - m0, standardised difference
(m1 - m0) / sqrt((s1^2 + s0^2) / 2) (Austin 2009, Stat. Med. 28(25)), variance ratio s1^2 / s0^2,
and the p-value of the difference from the regression x = a + b D (WLS when weighted, HC1 SEs).
Joint test (iebaltab ``ftest``): regress D on all covariates and F-test that all slopes are zero
(HC1 Wald F). Rules of thumb: |std. diff| < 0.1 and variance ratio within 0.5-2 (Rubin 2001).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._checks import ImpactInputError, as_float, require_columns

__all__ = ["balance_table"]


def _treat01(data: pd.DataFrame, treatment: str) -> np.ndarray:
    d = as_float(data, treatment)
    if np.isnan(d).any():
        raise ImpactInputError(f"treatment {treatment!r} has missing values at rows "
                               f"{list(data.index[np.isnan(d)][:5])}. Fix: code every row 0 or 1.")
    if not np.isin(d, (0.0, 1.0)).all():
        raise ImpactInputError(f"treatment {treatment!r} must be 0/1 (or boolean).")
    if d.sum() == 0 or d.sum() == len(d):
        raise ImpactInputError(f"treatment {treatment!r} has only one arm; need treated and comparison units.")
    return d


def _wstats(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    m = float(np.average(x, weights=w))
    v = float(np.sum(w * (x - m) ** 2) / np.sum(w) * (len(x) / max(len(x) - 1, 1)))
    return m, v


def balance_table(
    data: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    *,
    weight: str | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Balance of ``covariates`` between treatment arms; see module docstring for the formulas.

    ``weight`` is a column name or an array (e.g. IPW or matching weights) aligned with rows.
    Returns one row per covariate; ``.attrs["joint_test"]`` holds F, df1, df2, pvalue.
    Missing covariate values are refused (not dropped).
    """
    import statsmodels.api as sm

    covariates = list(covariates)
    require_columns(data, [treatment, *covariates, *([weight] if isinstance(weight, str) else [])],
                    "balance_table()")
    d = _treat01(data, treatment)
    if weight is None:
        w = np.ones(len(data))
    elif isinstance(weight, str):
        w = as_float(data, weight)
    else:
        w = np.asarray(weight, dtype=float)
        if w.shape != (len(data),):
            raise ImpactInputError(f"weight array has shape {w.shape}, expected ({len(data)},).")
    if np.isnan(w).any() or (w < 0).any():
        raise ImpactInputError("weights must be non-negative and present.")
    X = np.column_stack([as_float(data, c) for c in covariates]) if covariates else np.empty((len(data), 0))
    bad = np.isnan(X).any(axis=0)
    if bad.any():
        raise ImpactInputError(f"covariate(s) {[c for c, b in zip(covariates, bad) if b]} have missing values. "
                               "Fix: impute explicitly (and add a missing-indicator) or drop them.")
    t, c = (d == 1) & (w > 0), (d == 0) & (w > 0)
    rows = []
    for j, name in enumerate(covariates):
        x = X[:, j]
        m1, v1 = _wstats(x[t], w[t])
        m0, v0 = _wstats(x[c], w[c])
        sd = np.sqrt((v1 + v0) / 2)
        fit = sm.WLS(x[w > 0], sm.add_constant(d[w > 0]), weights=w[w > 0]).fit(cov_type="HC1")
        rows.append({
            "covariate": name, "mean_treated": m1, "mean_control": m0, "difference": m1 - m0,
            "std_diff": (m1 - m0) / sd if sd > 0 else np.nan, "var_ratio": v1 / v0 if v0 > 0 else np.nan,
            "pvalue": float(fit.pvalues[1]), "n_treated": int(t.sum()), "n_control": int(c.sum()),
        })
    out = pd.DataFrame(rows)
    joint = {"F": np.nan, "df1": 0, "df2": 0, "pvalue": np.nan}
    if covariates:
        keep = w > 0
        Z = sm.add_constant(X[keep], has_constant="add")
        fit = sm.WLS(d[keep], Z, weights=w[keep]).fit(cov_type="HC1")
        k = len(covariates)
        R = np.zeros((k, k + 1))
        R[:, 1:] = np.eye(k)
        ft = fit.f_test(R)
        joint = {"F": float(np.squeeze(ft.fvalue)), "df1": int(ft.df_num), "df2": int(ft.df_denom),
                 "pvalue": float(ft.pvalue)}
    out.attrs["joint_test"] = joint
    out.attrs["weighted"] = weight is not None
    return out
