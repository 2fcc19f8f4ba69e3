"""R-exact doubly robust and IPW DiD cells for panel data (Sant'Anna and Zhao 2020; R ``DRDID``).

R ``did::att_gt`` computes each covariate-adjusted ATT(g,t) with ``DRDID::drdid_panel``
(``est_method="dr"``, the locally efficient DR estimator with a logit propensity score and an OLS
outcome model for the comparison units) or ``DRDID::std_ipw_did_panel`` (``est_method="ipw"``,
the normalised / Hajek IPW estimator). For a two-period panel with dY = Y_t - Y_b, treatment
indicator D, covariates X (with intercept), logit score p(X) and sampling weights w (mean 1):

    w1 = w D,   w0 = w p(X) (1 - D) / (1 - p(X))   (comparison units with p(X) >= trim dropped)
    IPW:  ATT = sum w1 dY / sum w1 - sum w0 dY / sum w0
    DR:   ATT = sum w1 (dY - m(X)) / sum w1 - sum w0 (dY - m(X)) / sum w0,
          m(X) = X'b, b the w-weighted OLS of dY on X among comparison units.

The augmentation is normalised by the sum of the comparison weights (Hajek), not by the number of
treated units, and comparison units whose score reaches ``trim`` (R's ``trim.level = 0.995``) are
dropped; scores are clipped to [1e-6, 1 - 1e-6] only to keep the weights finite (as DRDID).
The influence functions add the estimation effect of the logit and OLS coefficients exactly as
DRDID (``drdid_panel.R``, ``std_ipw_did_panel.R``); Var(ATT) = mean(IF^2) / n.

Reference: Sant'Anna, P.H.C. and Zhao, J. (2020) "Doubly robust difference-in-differences
estimators", Journal of Econometrics 219(1), 101-122; R package DRDID (pedrohcgs/DRDID).
"""
from __future__ import annotations

import numpy as np

from ._checks import ImpactInputError

__all__ = ["drdid_panel", "std_ipw_panel", "logit_scores", "R_TRIM"]

R_TRIM = 0.995  # R DRDID trim.level: comparison units with p(X) >= 0.995 are dropped


def logit_scores(X: np.ndarray, d: np.ndarray, w: np.ndarray, max_iter: int = 25) -> np.ndarray:
    """Weighted logit MLE by Newton-Raphson (R ``glm(family=binomial, weights=w)``); fitted p(X).

    As ``glm`` (``maxit = 25``), a (quasi-)separated cell does not stop the estimation: the
    iterations end after ``max_iter`` steps with scores near 0 or 1, which the caller clips to
    [1e-6, 1 - 1e-6] and trims, as DRDID does. Steps use a least-squares solve, so a singular
    Hessian (separation) is handled; aliased columns are removed beforehand (:func:`independent_columns`).
    """
    b = np.zeros(X.shape[1])
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(-np.clip(X @ b, -700, 700)))
        H = (X * (w * p * (1 - p))[:, None]).T @ X
        step = np.linalg.lstsq(H, X.T @ (w * (d - p)), rcond=None)[0]
        b = b + step
        if np.max(np.abs(step)) < 1e-12 * (1 + np.max(np.abs(b))):
            break
    return 1 / (1 + np.exp(-np.clip(X @ b, -700, 700)))


def _weights(d: np.ndarray, ps: np.ndarray, w: np.ndarray, trim: float) -> tuple[np.ndarray, np.ndarray]:
    """Treated weights w D and comparison weights w p/(1-p) (1-D), comparison p >= trim set to 0."""
    keep = np.where(d == 1, True, ps < trim)
    w1 = keep * w * d
    w0 = keep * w * ps * (1 - d) / (1 - ps)
    if w1.sum() == 0 or w0.sum() == 0:
        raise ImpactInputError(f"no treated or no comparison unit left after dropping comparison units with "
                               f"propensity score >= {trim}. Fix: coarsen the covariates or raise pscore_trim.")
    return w1, w0


def _ps_linear_rep(X: np.ndarray, d: np.ndarray, ps: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Asymptotic linear representation of the logit coefficients: score x n H^-1."""
    n = len(d)
    hess = np.linalg.pinv(X.T @ (X * (ps * (1 - ps) * w)[:, None])) * n  # pinv: separated cells
    return (X * (w * (d - ps))[:, None]) @ hess


def independent_columns(X: np.ndarray) -> np.ndarray:
    """Indices of a maximal set of linearly independent columns of X, in order (the columns R's
    ``lm``/``glm`` keep when others are aliased; diff-diff drops the same). A covariate constant
    within a cell (e.g. a sector dummy no firm of the cell has) is collinear with the intercept.

    One Householder QR without pivoting, X = QR: |R_jj| is the distance of column j from the span
    of the columns before it (those kept span the same space as all of them), so column j is
    kept when |R_jj| > 1e-10 max(1, max|X|) -- the sequential rule R's ``dqrdc2`` applies, at
    the cost of one factorisation instead of one rank computation per column."""
    if X.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    r = np.abs(np.diag(np.linalg.qr(X, mode="r")))
    tol = 1e-10 * max(1.0, float(np.abs(X).max()))
    return np.flatnonzero(r > tol).astype(np.int64)


def _prepare(dy: np.ndarray, d: np.ndarray, X: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    w = np.ones(len(d)) if w is None else np.asarray(w, dtype=float)
    w = w / w.mean()
    ps = np.clip(logit_scores(X, d, w), 1e-6, 1 - 1e-6)
    return w, ps


def std_ipw_panel(dy: np.ndarray, d: np.ndarray, X: np.ndarray, w: np.ndarray | None = None,
                  trim: float = R_TRIM) -> tuple[float, np.ndarray]:
    """Normalised (Hajek) IPW DiD, R ``DRDID::std_ipw_did_panel``: (ATT, influence function)."""
    w, ps = _prepare(dy, d, X, w)
    w1, w0 = _weights(d, ps, w, trim)
    m1, m0 = w1.mean(), w0.mean()
    att1, att0 = np.mean(w1 * dy) / m1, np.mean(w0 * dy) / m0
    inf1 = (w1 * dy - w1 * att1) / m1
    inf0 = (w0 * dy - w0 * att0) / m0
    mom = np.mean((w0 * (dy - att0))[:, None] * X, axis=0) / m0
    inf0_ps = _ps_linear_rep(X, d, ps, w) @ mom
    return float(att1 - att0), inf1 - (inf0 + inf0_ps)


def drdid_panel(dy: np.ndarray, d: np.ndarray, X: np.ndarray, w: np.ndarray | None = None,
                trim: float = R_TRIM) -> tuple[float, np.ndarray]:
    """Locally efficient DR DiD, R ``DRDID::drdid_panel`` (what R ``did`` uses for "dr"): (ATT, IF)."""
    n = len(d)
    w, ps = _prepare(dy, d, X, w)
    wc = w * (1 - d)
    xtwx = X.T @ (X * wc[:, None])
    beta = np.linalg.lstsq(xtwx, X.T @ (wc * dy), rcond=None)[0]
    resid = dy - X @ beta
    w1, w0 = _weights(d, ps, w, trim)
    m1, m0 = w1.mean(), w0.mean()
    eta1, eta0 = np.mean(w1 * resid) / m1, np.mean(w0 * resid) / m0
    ols_rep = (X * (wc * resid)[:, None]) @ np.linalg.inv(xtwx / n)
    inf_treat = (w1 * resid - w1 * eta1 - ols_rep @ np.mean(w1[:, None] * X, axis=0)) / m1
    ps_term = _ps_linear_rep(X, d, ps, w) @ np.mean(((w0 * resid) - w0 * eta0)[:, None] * X, axis=0)
    inf_cont = (w0 * resid - w0 * eta0 + ps_term - ols_rep @ np.mean(w0[:, None] * X, axis=0)) / m0
    return float(eta1 - eta0), inf_treat - inf_cont
