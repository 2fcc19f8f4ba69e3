"""Cross-sectional ATT by inverse probability weighting or nearest-neighbour matching.

IPW (``method="ipw"``): logit propensity p(X) = Lambda(X'b); normalised (Hajek) ATT
tau = mean_{D=1} Y - sum_{D=0} w_i Y_i / sum_{D=0} w_i, w_i = p_i / (1 - p_i).
SE by M-estimation (stacked estimating equations for b, mu1, mu0; sandwich A^-1 B A^-T / n), so
the estimation of the propensity score is accounted for (Lunceford and Davidian 2004, Stat. Med.
23(19); Stefanski and Boos 2002, Am. Stat. 56(1); Wooldridge 2010, Econometric Analysis of Cross
Section and Panel Data, 2nd ed., ch. 21.3).

Matching (``method="matching"``): M nearest neighbours with replacement on the covariates, with
the inverse-variance (diagonal) metric, no bias correction; tau = mean_{D=1} (Y_i - mean_{j in
J(i)} Y_j). SE: Abadie and Imbens (2006, Econometrica 74(1), section 4) population-ATT estimator
V = N1^-2 sum_i [D_i (Y_i - Yhat0_i - tau)^2 + (1 - D_i) K_M(i)(K_M(i) - 1)/M^2 sigma2_i],
sigma2_i = J/(J+1) (Y_i - mean of its J nearest same-arm neighbours)^2 with J = 2 (Stata
``teffects nnmatch`` default). The bootstrap is not valid for matching (Abadie and Imbens 2008).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.results import Result, ResultFrame

from ._checks import ImpactInputError, as_float, require_columns
from .balance import _treat01, balance_table
from .results import Estimate, normal_inference

__all__ = ["WeightingResult", "weighting"]


@dataclass
class WeightingResult(Result):
    """ATT with SE (``.att``/``.se`` kept; ``.estimate`` the :class:`Estimate`), ``weights`` (per row:
    1 treated, w_i controls), ``balance`` before/after (a result table), ``choices``."""

    outcome: str
    method: str
    se_method: str
    estimate: Estimate
    n_treated: int
    n_control: int
    weights: np.ndarray = field(repr=False)
    balance: pd.DataFrame = field(repr=False)
    pscore: np.ndarray | None = field(default=None, repr=False)
    covariates: tuple[str, ...] = ()
    n_neighbors: int | None = None

    @property
    def att(self) -> float:
        return self.estimate.estimate

    @property
    def se(self) -> float:
        return self.estimate.se

    @property
    def alpha(self) -> float:  # type: ignore[override]
        return self.estimate.alpha

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"ATT of {self.outcome} by {'inverse probability weighting' if self.method == 'ipw' else 'matching'}"

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        out: dict[str, Any] = {"method": self.method, "covariates": list(self.covariates)}
        if self.method == "ipw":
            out.update({"propensity score": "logit on the covariates (with intercept)",
                        "weights": "treated 1, comparison p/(1-p), normalised (Hajek)",
                        "trimming": "none (refused if scores reach 0 or 1)"})
        else:
            out.update({"neighbours": self.n_neighbors, "metric": "inverse-variance (diagonal Mahalanobis)",
                        "replacement": True, "bias correction": "none", "trimming": "none"})
        out.update({"se": self.se_method, "alpha": self.alpha})
        return out

    def tidy(self) -> pd.DataFrame:
        """outcome, method, estimate, se, ci_low, ci_high, pvalue, n_treated, n_control."""
        return pd.DataFrame([{"outcome": self.outcome, "method": self.method, **self.estimate.to_dict(),
                              "n_treated": self.n_treated, "n_control": self.n_control}])

    def notes(self) -> list[str]:
        worst = float(np.nanmax(np.abs(self.balance["std_diff"]))) if len(self.balance) else np.nan
        return [f"{self.n_treated} treated, {self.n_control} comparison units; largest |std. diff| before/after "
                f"weighting: {worst:.3f} (see .balance)"]

    def __repr__(self) -> str:
        return (f"WeightingResult(outcome={self.outcome!r}, method={self.method!r}, att={self.att:.4g}, "
                f"se={self.se:.4g})")


def _logit(X: np.ndarray, d: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Logit MLE by Newton-Raphson; refuses (quasi-)separation."""
    b = np.zeros(X.shape[1])
    converged = False
    with np.errstate(over="ignore"):
        for _ in range(max_iter):
            p = 1 / (1 + np.exp(-(X @ b)))
            g = X.T @ (d - p)
            H = (X * (p * (1 - p))[:, None]).T @ X
            try:
                step = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                break
            b = b + step
            if not np.all(np.isfinite(b)):
                break
            if np.max(np.abs(step)) < 1e-10:
                converged = True
                break
        p = 1 / (1 + np.exp(-(X @ b)))
    if not converged or p.max() > 1 - 1e-8 or p.min() < 1e-8:
        raise ImpactInputError("the propensity-score logit did not converge or scores reach 0 or 1 "
                               "(perfect separation, or collinear covariates): some covariate values occur "
                               "only among treated or only among comparison units. Fix: coarsen or drop "
                               "that covariate, or trim the sample explicitly.")
    return b


def _ipw(y: np.ndarray, d: np.ndarray, X: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    n, k = X.shape
    b = _logit(X, d)
    p = 1 / (1 + np.exp(-(X @ b)))
    w = p / (1 - p)
    mu1 = y[d == 1].mean()
    mu0 = np.sum((1 - d) * w * y) / np.sum((1 - d) * w)
    psi = np.column_stack([X * (d - p)[:, None], d * (y - mu1), (1 - d) * w * (y - mu0)])
    A = np.zeros((k + 2, k + 2))
    A[:k, :k] = (X * (p * (1 - p))[:, None]).T @ X / n
    A[k, k] = d.mean()
    A[k + 1, k + 1] = np.mean((1 - d) * w)
    A[k + 1, :k] = -((X * ((1 - d) * w * (y - mu0))[:, None]).sum(axis=0)) / n
    B = psi.T @ psi / n
    Ai = np.linalg.inv(A)
    V = Ai @ B @ Ai.T / n
    c = np.zeros(k + 2)
    c[k], c[k + 1] = 1.0, -1.0
    return float(mu1 - mu0), float(np.sqrt(c @ V @ c)), np.where(d == 1, 1.0, w), p


def _nn(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    k = min(k, len(ref))
    _, idx = cKDTree(ref).query(query, k=k)
    return idx.reshape(len(query), k)


def _matching(y: np.ndarray, d: np.ndarray, X: np.ndarray, m: int, j: int = 2) -> tuple[float, float, np.ndarray]:
    sd = X.std(axis=0, ddof=1)
    sd[sd == 0] = 1.0
    Z = X / sd  # inverse-variance (diagonal Mahalanobis) metric
    ti, ci = np.flatnonzero(d == 1), np.flatnonzero(d == 0)
    if len(ci) < m:
        raise ImpactInputError(f"matching needs at least n_neighbors={m} comparison units, got {len(ci)}.")
    nb = ci[_nn(Z[ti], Z[ci], m)]
    y0hat = y[nb].mean(axis=1)
    tau = float(np.mean(y[ti] - y0hat))
    K = np.bincount(nb.ravel(), minlength=len(y)).astype(float)
    # conditional variance by matching within the same arm (exclude self: query k=j+1)
    sig2 = np.zeros(len(y))
    for arm in (ti, ci):
        if len(arm) > 1:
            jj = min(j, len(arm) - 1)
            nn = arm[_nn(Z[arm], Z[arm], jj + 1)]
            own = nn[:, 0] == arm
            nbrs = np.where(own[:, None], nn[:, 1:], nn[:, :jj])
            sig2[arm] = jj / (jj + 1) * (y[arm] - y[nbrs].mean(axis=1)) ** 2
    n1 = len(ti)
    v = (np.sum((y[ti] - y0hat - tau) ** 2) + np.sum((K * (K - 1) / m**2 * sig2)[ci])) / n1**2
    w = np.where(d == 1, 1.0, K / m)
    return tau, float(np.sqrt(v)), w


def weighting(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    covariates: Sequence[str],
    *,
    method: str = "ipw",
    n_neighbors: int = 1,
    alpha: float = 0.05,
) -> WeightingResult:
    """ATT of ``treatment`` (0/1) on ``outcome`` adjusting for ``covariates`` by IPW or matching.

    One row per unit (a cross-section). Missing values are refused. Returns a
    :class:`WeightingResult` with ``.att``, ``.se``, ``.estimate`` (CI, p), ``.balance``
    (before/after weighting) and ``.weights``.
    """
    covariates = list(covariates)
    require_columns(data, [outcome, treatment, *covariates], "weighting()")
    if method not in ("ipw", "matching"):
        raise ImpactInputError(f"method must be 'ipw' or 'matching', got {method!r}.")
    d = _treat01(data, treatment)
    y = as_float(data, outcome)
    if np.isnan(y).any():
        raise ImpactInputError(f"outcome {outcome!r} has {int(np.isnan(y).sum())} missing values; refuse to drop "
                               "them silently. Fix: subset the data explicitly first.")
    X = np.column_stack([as_float(data, c) for c in covariates]) if covariates else np.empty((len(y), 0))
    if np.isnan(X).any():
        raise ImpactInputError("covariates have missing values; impute explicitly or drop those rows first.")
    if method == "ipw":
        att, se, w, p = _ipw(y, d, np.column_stack([np.ones(len(y)), X]))
        se_method = "M-estimation sandwich, accounts for the estimated propensity score (Lunceford-Davidian 2004)"
    else:
        if not covariates:
            raise ImpactInputError("matching needs at least one covariate.")
        att, se, w = _matching(y, d, X, int(n_neighbors))
        p = None
        se_method = f"Abadie-Imbens (2006) matching variance, {n_neighbors} neighbour(s), no bias correction"
    est = normal_inference(att, se, alpha)
    before = balance_table(data, treatment, covariates)
    after = balance_table(data, treatment, covariates, weight=w)
    bal = pd.concat([before.assign(sample="before"), after.assign(sample="after " + method)], ignore_index=True)
    bal = ResultFrame.wrap(bal, choices={**after.choices, "weights": f"none (before) / {method} weights (after)"},
                           alpha=alpha, title=f"Covariate balance before and after {method}",
                           estimate_column="difference")
    return WeightingResult(outcome, method, se_method, est, int(d.sum()), int((d == 0).sum()), w, bal, p,
                           tuple(covariates), int(n_neighbors) if method == "matching" else None)


