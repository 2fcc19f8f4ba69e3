"""Planning a difference-in-differences evaluation: minimum detectable effect and sample size.

Variance of the DiD estimate with N firms, a share P treated, m pre- and r post-treatment
periods (Burlig, Preonas and Woerman 2020, "Panel data and experimental design", J. Dev. Econ.
144, eq. 7; unit fixed effects removed):

    Var = deff / (P (1 - P) N) * [ (m + r)/(m r) sigma2 + (m - 1)/m psi_B + (r - 1)/r psi_A - 2 psi_X ]

sigma2: variance of the idiosyncratic error; psi_B, psi_A, psi_X: average covariance of the
errors between two pre periods, two post periods, and a pre and a post period. Under
equicorrelation (all covariances rho sigma2) this is McKenzie's (2012, "Beyond baseline and
follow-up", J. Dev. Econ. 99(2)) DiD formula sigma2 (1 - rho)(1/m + 1/r); McKenzie's ANCOVA:
sigma2 [(1 + (r - 1) rho)/r - m rho^2 / (1 + (m - 1) rho)]; a post-only comparison:
sigma2 (1 + (r - 1) rho)/r.

Clustering (firms sampled or assigned in clusters of c firms, intra-cluster correlation ICC):
design effect deff = 1 + (c - 1) ICC (Kish 1965; Duflo, Glennerster and Kremer 2007, Handbook of
Dev. Econ. 4, section 4). MDE = (z_{1-alpha/2} + z_{power}) sqrt(Var) (normal approximation;
with few clusters use t quantiles instead, i.e. a larger MDE).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from msme_eval.results import Result

from ._checks import ImpactInputError

__all__ = ["PowerResult", "mde", "sample_size", "variance_factor"]


@dataclass(frozen=True)
class PowerResult(Result):
    """Inputs and result of a power calculation (``mde`` in outcome units, ``n_units`` firms).

    ``tidy()``: one row, estimate = the MDE (or the effect a sample size was computed for) and se =
    the standard error of the DiD estimate it implies, se = MDE / (z_{1-alpha/2} + z_power).
    """

    mde: float
    n_units: int
    n_clusters: float
    design: str
    pre_periods: int
    post_periods: int
    share_treated: float
    sigma: float
    rho: float
    icc: float
    cluster_size: int
    design_effect: float
    alpha: float
    power: float = 0.8  # (defaults only because Result gives alpha one; both are always passed)

    title = "Power of a difference-in-differences design"

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        d = asdict(self)
        d.pop("mde")
        return d

    def tidy(self) -> pd.DataFrame:
        se = self.mde / (stats.norm.ppf(1 - self.alpha / 2) + stats.norm.ppf(self.power))
        return pd.DataFrame([{"term": "minimum detectable effect", "estimate": self.mde, "se": se,
                              "ci_low": np.nan, "ci_high": np.nan, "pvalue": np.nan, "n_units": self.n_units}])


def variance_factor(
    design: str, m: int, r: int, rho: float, *, psi_pre: float | None = None, psi_post: float | None = None,
    psi_cross: float | None = None,
) -> float:
    """Per-unit variance multiplier f (in units of sigma2): Var = deff sigma2 f / (P (1-P) N).

    For ``design="did"`` the psi_* (as shares of sigma2) default to ``rho`` (equicorrelation).
    """
    if m < 1 or r < 1:
        raise ImpactInputError("pre_periods and post_periods must be >= 1.")
    if not -1 < rho < 1:
        raise ImpactInputError(f"rho must be in (-1, 1), got {rho}.")
    if design == "did":
        pb = rho if psi_pre is None else psi_pre
        pa = rho if psi_post is None else psi_post
        px = rho if psi_cross is None else psi_cross
        return (m + r) / (m * r) + (m - 1) / m * pb + (r - 1) / r * pa - 2 * px
    if design == "ancova":
        return (1 + (r - 1) * rho) / r - m * rho**2 / (1 + (m - 1) * rho)
    if design == "post":
        return (1 + (r - 1) * rho) / r
    raise ImpactInputError(f"design must be 'did', 'ancova' or 'post', got {design!r}.")


def _check(share_treated: float, icc: float, cluster_size: int, alpha: float, power: float, sigma: float) -> float:
    if not 0 < share_treated < 1:
        raise ImpactInputError("share_treated must be in (0, 1).")
    if not 0 <= icc < 1 or cluster_size < 1:
        raise ImpactInputError("icc must be in [0, 1) and cluster_size >= 1.")
    if not 0 < alpha < 1 or not 0 < power < 1 or sigma <= 0:
        raise ImpactInputError("alpha and power must be in (0, 1) and sigma > 0.")
    return 1 + (cluster_size - 1) * icc


def mde(
    n_units: int, *, pre_periods: int = 1, post_periods: int = 1, share_treated: float = 0.5, sigma: float = 1.0,
    rho: float = 0.0, icc: float = 0.0, cluster_size: int = 1, alpha: float = 0.05, power: float = 0.8,
    design: str = "did", psi_pre: float | None = None, psi_post: float | None = None,
    psi_cross: float | None = None,
) -> PowerResult:
    """Minimum detectable effect (outcome units) for ``n_units`` firms; see module docstring."""
    deff = _check(share_treated, icc, cluster_size, alpha, power, sigma)
    if n_units < 2:
        raise ImpactInputError("n_units must be >= 2.")
    f = variance_factor(design, pre_periods, post_periods, rho, psi_pre=psi_pre, psi_post=psi_post,
                        psi_cross=psi_cross)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    var = deff * sigma**2 * f / (share_treated * (1 - share_treated) * n_units)
    return PowerResult(float(z * math.sqrt(var)), int(n_units), n_units / cluster_size, design, pre_periods,
                       post_periods, share_treated, sigma, rho, icc, cluster_size, deff, alpha, power)


def sample_size(
    effect: float, *, pre_periods: int = 1, post_periods: int = 1, share_treated: float = 0.5, sigma: float = 1.0,
    rho: float = 0.0, icc: float = 0.0, cluster_size: int = 1, alpha: float = 0.05, power: float = 0.8,
    design: str = "did", psi_pre: float | None = None, psi_post: float | None = None,
    psi_cross: float | None = None,
) -> PowerResult:
    """Firms needed to detect ``effect`` (outcome units): N = (z_a + z_b)^2 deff sigma2 f / (P(1-P) effect^2)."""
    deff = _check(share_treated, icc, cluster_size, alpha, power, sigma)
    if effect == 0:
        raise ImpactInputError("effect must be non-zero.")
    f = variance_factor(design, pre_periods, post_periods, rho, psi_pre=psi_pre, psi_post=psi_post,
                        psi_cross=psi_cross)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = math.ceil(z**2 * deff * sigma**2 * f / (share_treated * (1 - share_treated) * effect**2))
    return PowerResult(abs(float(effect)), int(n), n / cluster_size, design, pre_periods, post_periods,
                       share_treated, sigma, rho, icc, cluster_size, deff, alpha, power)
