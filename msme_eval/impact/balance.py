"""Covariate balance tables with cobalt's / MatchIt's conventions (and iebaltab's joint test).

For each covariate x: (weighted) means by arm m1, m0, difference m1 - m0, standardised mean
difference (m1 - m0) / s with the s.d. denominator set by the estimand (R ``cobalt::bal.tab``
``s.d.denom``; Greifer 2024, cobalt vignette "Using cobalt"):

* ``estimand="ATT"``: s = s1, the treated group's s.d. (MatchIt's ``summary()`` "Std. Mean Diff.");
* ``estimand="ATE"``: s = sqrt((s1^2 + s0^2) / 2), the pooled s.d. (Austin 2009, Stat. Med. 28(25));
* ``estimand="ATC"``: s = s0.

For a 0/1 covariate the group s.d. is sqrt(p (1 - p)) and no variance ratio is reported (it is
fixed by the means), as MatchIt's ``summary()``. The denominator is always computed in the
unweighted sample, so a table after weighting or
matching uses the same s as before and the change in std_diff reflects only the change in means
(cobalt and MatchIt do the same). Variance ratio v1 / v0 of the (weighted) variances, each
sum v (x - m)^2 / (1 - sum v^2) with v = w / sum w (MatchIt's ``wvar``); SE, CI and
p-value of the difference from the regression x = a + b D (WLS when weighted, HC1 SEs, normal
reference).
Joint test (Stata ``iebaltab`` ``ftest``): regress D on all covariates and F-test that all slopes
are zero (HC1 Wald F); reachable as ``table.choices["joint_test"]`` (and ``.attrs["joint_test"]``).
Rules of thumb: |std. diff| < 0.1 and variance ratio within 0.5-2 (Rubin 2001).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from msme_eval.results import ResultFrame, inference

from ._checks import ImpactInputError, as_float, require_columns

__all__ = ["balance_table", "ESTIMANDS"]

ESTIMANDS = {"ATT": "treated group's s.d.", "ATE": "pooled s.d. sqrt((s1^2 + s0^2) / 2)",
             "ATC": "comparison group's s.d."}


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
    """Weighted mean and reliability-weights variance sum v (x - m)^2 / (1 - sum v^2), v = w / sum w
    (MatchIt ``wvar``, cobalt, R ``cov.wt``); with equal weights the usual n - 1 variance."""
    v = w / np.sum(w)
    m = float(np.sum(v * x))
    denom = 1 - float(np.sum(v**2))
    return m, float(np.sum(v * (x - m) ** 2) / denom) if denom > 0 else np.nan


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def _sd_denominator(x: np.ndarray, d: np.ndarray, estimand: str) -> float:
    """s.d. for std_diff from the unweighted sample; binary x: sqrt(p (1 - p)) per group (MatchIt)."""
    if _is_binary(x):
        p1, p0 = x[d == 1].mean(), x[d == 0].mean()
        v1, v0 = p1 * (1 - p1), p0 * (1 - p0)
    else:
        v1, v0 = np.var(x[d == 1], ddof=1), np.var(x[d == 0], ddof=1)
    return float(np.sqrt({"ATT": v1, "ATC": v0, "ATE": (v1 + v0) / 2}[estimand]))


def _weights(data: pd.DataFrame, weight: str | np.ndarray | pd.Series | None) -> np.ndarray:
    if weight is None:
        return np.ones(len(data))
    if isinstance(weight, str):
        w = as_float(data, weight)
    else:
        w = np.asarray(weight, dtype=float)
        if w.shape != (len(data),):
            raise ImpactInputError(f"weight array has shape {w.shape}, expected ({len(data)},).")
    if np.isnan(w).any() or (w < 0).any():
        raise ImpactInputError("weights must be non-negative and present.")
    return w


def _independent_columns(X: np.ndarray) -> np.ndarray:
    """Columns of X that are linearly independent of the intercept and earlier columns (e.g. all
    levels of a categorical: the last is dropped, as R's ``lm`` aliases it)."""
    keep: list[int] = []
    for j in range(X.shape[1]):
        trial = np.column_stack([np.ones(len(X)), X[:, keep + [j]]])
        if np.linalg.matrix_rank(trial) == len(keep) + 2:
            keep.append(j)
    return X[:, keep]


def _joint_test(X: np.ndarray, d: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """HC1 Wald F that all slopes of D ~ covariates are zero (iebaltab ``ftest``); collinear
    columns are left out first."""
    import statsmodels.api as sm

    X = _independent_columns(X)
    k = X.shape[1]
    if k == 0:
        return {"F": np.nan, "df1": 0, "df2": 0, "pvalue": np.nan}
    keep = w > 0
    fit = sm.WLS(d[keep], sm.add_constant(X[keep], has_constant="add"), weights=w[keep]).fit(cov_type="HC1")
    R = np.zeros((k, k + 1))
    R[:, 1:] = np.eye(k)
    ft = fit.f_test(R)
    return {"F": float(np.squeeze(ft.fvalue)), "df1": int(ft.df_num), "df2": int(ft.df_denom),
            "pvalue": float(ft.pvalue)}


def balance_table(
    data: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    *,
    weight: str | np.ndarray | pd.Series | None = None,
    estimand: str = "ATT",
    alpha: float = 0.05,
) -> ResultFrame:
    """Balance of ``covariates`` between treatment arms; see module docstring for the formulas.

    ``weight`` is a column name or an array (e.g. IPW or matching weights) aligned with rows.
    ``estimand`` ("ATT", "ATE", "ATC") sets the s.d. denominator of std_diff. Returns a
    :class:`~msme_eval.results.ResultFrame` (a DataFrame), one row per covariate: covariate,
    mean_treated, mean_control, difference, std_diff, var_ratio, se, ci_low, ci_high, pvalue,
    n_treated, n_control (``tidy()`` names the difference ``estimate``);
    ``.choices`` states the denominator, weights and estimand and holds the joint test
    (also in ``.attrs["joint_test"]``: F, df1, df2, pvalue). Missing covariate values are refused.
    """
    import statsmodels.api as sm

    covariates = list(covariates)
    if estimand not in ESTIMANDS:
        raise ImpactInputError(f"estimand must be one of {list(ESTIMANDS)}, got {estimand!r}.")
    require_columns(data, [treatment, *covariates, *([weight] if isinstance(weight, str) else [])],
                    "balance_table()")
    d = _treat01(data, treatment)
    w = _weights(data, weight)
    X = np.column_stack([as_float(data, c) for c in covariates]) if covariates else np.empty((len(data), 0))
    bad = np.isnan(X).any(axis=0)
    if bad.any():
        raise ImpactInputError(f"covariate(s) {[c for c, b in zip(covariates, bad) if b]} have missing values. "
                               "Fix: impute explicitly (and add a missing-indicator) or drop them.")
    t, c = (d == 1) & (w > 0), (d == 0) & (w > 0)
    rows = []
    for j, name in enumerate(covariates):
        x = X[:, j]
        (m1, v1), (m0, v0) = _wstats(x[t], w[t]), _wstats(x[c], w[c])
        sd = _sd_denominator(x, d, estimand)
        fit = sm.WLS(x[w > 0], sm.add_constant(d[w > 0]), weights=w[w > 0]).fit(cov_type="HC1")
        inf = inference(m1 - m0, float(fit.bse[1]), alpha)
        rows.append({
            "covariate": name, "mean_treated": m1, "mean_control": m0, "difference": m1 - m0,
            "std_diff": (m1 - m0) / sd if sd > 0 else np.nan,
            "var_ratio": v1 / v0 if v0 > 0 and not _is_binary(x) else np.nan,
            "se": inf["se"], "ci_low": inf["ci_low"], "ci_high": inf["ci_high"], "pvalue": inf["pvalue"],
            "n_treated": int(t.sum()), "n_control": int(c.sum()),
        })
    out = pd.DataFrame(rows, columns=["covariate", "mean_treated", "mean_control", "difference", "std_diff",
                                      "var_ratio", "se", "ci_low", "ci_high", "pvalue", "n_treated", "n_control"])
    joint = _joint_test(X, d, w)
    out.attrs["joint_test"] = joint
    out.attrs["weighted"] = weight is not None
    choices = {"estimand": estimand, "sd_denominator": ESTIMANDS[estimand] + ", unweighted sample",
               "weights": "none" if weight is None else (weight if isinstance(weight, str) else "supplied array"),
               "difference_test": "WLS of x on D, HC1 SEs", "joint_test": joint, "alpha": alpha}
    return ResultFrame.wrap(out, choices=choices, alpha=alpha, title="Covariate balance",
                            estimate_column="difference")
