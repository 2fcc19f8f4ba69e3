"""Design-based estimation: totals, means, proportions and ratios by domain.

Estimators are Horvitz-Thompson (weighted) totals ``Y_d = sum_i w_i y_i 1{i in d}`` and smooth
functions of several such totals (ratio ``R_d = Y_d / X_d``; a mean or proportion is the ratio
with ``x = 1``; any ``g(Y_1, ..., Y_k)`` through :func:`delta`). Variances use Taylor
linearisation for stratified multi-stage designs with the *with-replacement* approximation for
primary sampling units (PSUs) -- the "ultimate cluster" estimator of R ``survey`` (Lumley 2010,
ch. 2-3), Stata ``svy`` and ``samplics`` with ``fpc=1``:

    V(Y_d) = sum_h  n_h / (n_h - 1) * sum_{i=1..n_h} (z_hi - zbar_h)(z_hi - zbar_h)^T

where ``z_hi`` is the PSU total of ``w * y * 1{d}`` and ``n_h`` counts *every* PSU of stratum
``h`` in the full sample. Domains are estimated on the full design, never by subsetting: a PSU
without members of the domain contributes ``z_hi = 0``. For ``g(Y)`` the variance is
``grad(g)^T V grad(g)`` (equivalent to the linearised variable ``u = sum_j dg/dY_j y_j``;
for a ratio ``u = (y - R x) / X``, Woodruff 1971).

The computation has two stages so that stage (a) can run wherever the data live (``engine=``:
pandas in memory, DuckDB over Parquet, Spark; see :mod:`msme_eval.engines`):

(a) :func:`grouped_sums` -- one vectorised pass, "GROUP BY domain, stratum, psu; SUM(...)" of a
    few product columns (``w*y_j``, and for the design effect ``w*y_j*y_l``; without PSUs, where
    each row is its own PSU, the keys are (domain, stratum) and ``w^2*y_j*y_l`` is added). In SQL::

        SELECT <by...>, strata, psu, COUNT(*) AS n, SUM(w) AS w, SUM(w*y) AS "w*y", ...
        FROM data GROUP BY <by...>, strata, psu

(b) :func:`totals_from_sums` -- small variance algebra in numpy on that table. The algebra's
    building blocks (:func:`psu_centre`, :func:`stratum_variance`, :func:`satterthwaite_df`,
    :func:`t_interval`) are public: the indicator table (:mod:`msme_eval.indicators`) computes
    its PSU totals in its own grouped pass and then uses these same functions, so the variance
    and degrees-of-freedom rules exist once.

Conventions (and why):

* **PSUs are nested in strata**: a PSU is the pair (stratum, psu label), as Stata and R with
  ``nest=TRUE``.
* **No design information** (no ``strata``/``psu``): simple random sampling with replacement of
  rows (each row its own PSU, one stratum); ``strata`` only: each row is its own PSU within
  its stratum.
* **Degrees of freedom** (``df=``, :data:`DF_RULES`): by default (``"satterthwaite"``) the effective df of each
  estimate, ``df_eff = (sum_h v_h)^2 / sum_h (v_h^2 / (n_h - 1))`` with ``v_h`` stratum h's
  contribution to the estimate's variance and ``n_h`` its PSUs (Satterthwaite 1946; Korn &
  Graubard 1999, *Analysis of Health Surveys*, sec. 5.2; Valliant, Dever & Kreuter 2018,
  *Practical Tools for Designing and Weighting Survey Samples*, sec. 15.4): it matches the
  information an estimate rests on (a domain in few strata, or a variance dominated by a
  stratum with 2 PSUs, gets few df) and is never above the nominal df. ``df="nominal"`` gives
  ``#PSUs - #strata`` of the full design (R ``degf()``, samplics, Stata) for parity. Both are
  in the output (``df``, ``df_nominal``, ``df_rule``) with ``n_psu``, the PSUs holding members
  of the domain. Intervals ``estimate +- t_{df, 1-alpha/2} * se`` (``ci="logit"``: for a
  proportion, on the logit scale, :func:`logit_interval`; ``ci="log"``: for a positive ratio,
  on the log scale, :func:`log_interval`); ``df <= 0`` gives NaN
  intervals; an estimate with zero variance keeps the nominal df.
  ``df="design"``: the df from the weights, PSUs and domain only, not the outcome
  (:func:`design_df`: ``(tr A)^2 / tr A^2`` of the variance estimator's quadratic form under
  independent unit residuals; Bell & McCaffrey 2002, Kott 1994, Valliant & Rust 2010); it
  ignores calibration. Known limit of Satterthwaite (issue #14,
  ``tests/test_survey_coverage.py``): ``df_eff`` is estimated from the same PSU totals as the
  variance, so when one stratum dominates the variance and has few PSUs, an underestimated
  ``v_h`` of that stratum also *raises* ``df_eff``: with 3 PSUs per stratum, a proportion
  whose linearised variance is unbiased covers 92.6% in one set of 1000 samples (logit
  interval; the true, unknown df: 95%) but 94.3% over 16 such sets: the mechanism costs
  ~0.7 points, the rest of that cell's shortfall was Monte Carlo error. ``df="design"`` lifts
  that sample to 95.0% but over-covers: 14 of the 18 proportion cells at 2 and 3 PSUs go
  above 97% (up to 99.3%; its df is no larger than Satterthwaite's on average and does not
  adapt), so Satterthwaite stays the default. At 2 PSUs per stratum (df ~1.4) Satterthwaite
  over-covers slightly (K08 97.3% over 16 sets); ``df="nominal"`` under-covers (84-92%).
* **Calibrated weights** (``calibrated_to="strata"``): weights post-stratified to known stratum
  counts ``N_h`` (``sum_{i in h} w_i = N_h``). The variance is that of the calibration
  residuals (GREG form; Deville & Sarndal 1992; Sarndal, Swensson & Wretman 1992, sec. 7.6; R
  ``survey::postStratify``/``calibrate``): every PSU total ``z_hi`` of a domain's variable is
  replaced by ``z_hi - B_h w_hi`` with ``w_hi`` the PSU's weight total and ``B_h = Z_h / N_h``
  the stratum's mean per unit of weight, so a calibrated count has variance 0 and a
  post-stratified mean gets ``sum_h n_h/(n_h-1) sum_i (z_hi - B_h w_hi - mean)^2``. Singleton
  strata then contribute 0 (their single residual is 0).
* **Singleton strata** (one PSU): ``singleton="fail"`` raises naming them; ``"certainty"``
  treats them as self-representing (zero contribution; R ``survey.lonely.psu="certainty"``,
  samplics ``SinglePSUEst.skip``); ``"centre"`` deviates the lone PSU total from the grand mean
  of the PSU totals over the whole design, ``Z_d / #PSUs`` (R ``"adjust"``, as revised in
  ReGenesees / survey 4.2; for the linearised variable of a ratio or mean the grand mean is 0).
  Singleton strata are listed in ``result.attrs["design"]["singleton_strata"]``.
* **Take-all (certainty) strata** (``certainty=[labels]``) -- e.g. large enterprises
  enumerated completely, as structural business statistics and enterprise surveys do: the
  named strata contribute 0 to the variance whatever their PSUs (one, or each firm its own
  PSU as files often record them), as R ``survey`` with ``fpc`` = the stratum size
  (sampling fraction 1) and samplics with ``fpc=0`` for that stratum, and they add no
  degrees of freedom (their PSUs and the stratum leave ``#PSUs - #strata``; R ``degf()``
  would count their units as PSUs). ``singleton`` then applies to the *other* strata only,
  so ``singleton="fail"`` still stops at an accidental lone PSU. A name that is no stratum of
  the data is an error (a misspelt label would otherwise charge the stratum a variance it
  does not have). Without ``certainty``, a take-all stratum written as one PSU with
  ``singleton="certainty"`` gives the same numbers
  (``tests/test_survey.py::test_oracle_take_all_stratum_as_one_certainty_psu_matches_samplics_fpc_zero``).
* **Design effect** (R ``svymean(..., deff=TRUE)``, Kish): design variance divided by the
  variance of the same estimator under simple random sampling *without* replacement of ``n_d``
  units from a population of ``N_d = sum_d w``:
  ``V_srs = (1 - n_d/N_d) * N_d^2 / n_d * s_u^2`` with ``s_u^2 = n_d/(n_d-1) * sum_d w (u -
  ubar)^2 / N_d`` and ``u`` the row-level linearised variable (``u = y`` for a total,
  ``(y - R x) / X_d * N_d`` scaled so that this reduces to R's formula for a mean).
  NaN when ``n_d < 2`` or ``N_d <= n_d`` (e.g. unweighted data, where the SRSWOR variance is 0).
* **Missing values**: as R ``survey`` (``na.rm=FALSE``), a missing value in a used column is an
  error that names the rows. With ``na_rm=True`` rows with a missing numerator, denominator,
  total column or ``by`` value are left out of every *domain* (complete cases across the
  columns) but stay in the *design* (their PSUs still count), like R's ``na.rm=TRUE``.
  Weights, strata and PSUs may never be missing; weights must be finite and > 0.

References: Woodruff (1971) JASA 66:411-414; Wolter (2007) *Introduction to Variance
Estimation*, ch. 6; Lumley (2010) *Complex Surveys*; R ``survey`` ``svyrecvar``; Korn &
Graubard (1999); Deville & Sarndal (1992) JASA 87:376-382.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from . import engines
from .engines import EXCLUDED, PSU, STRATUM, SurveyDesignError, product_key, sum_name
from .results import ResultFrame, check_alpha

__all__ = [
    "SurveyDesignError", "Totals", "ratio", "total", "mean", "totals", "delta",
    "grouped_sums", "totals_from_sums", "psu_centre", "stratum_variance", "satterthwaite_df",
    "design_df_terms", "design_df", "t_interval", "logit_interval", "log_interval",
    "check_options", "certainty_mask", "singleton_error", "SINGLETON_OPTIONS", "DF_RULES", "CALIBRATION_OPTIONS",
    "CI_METHODS",
]

SINGLETON_OPTIONS = ("fail", "certainty", "centre")
DF_RULES = ("satterthwaite", "nominal", "design")
CALIBRATION_OPTIONS = (None, "strata")
CI_METHODS = ("wald", "logit", "log")
VARIANCE_METHOD = "Taylor linearisation, with-replacement PSUs (ultimate cluster)"


# --------------------------------------------------------------------------------------------
# the variance algebra, shared with the indicator table
# --------------------------------------------------------------------------------------------
def psu_centre(stratum_total: np.ndarray, n_h: np.ndarray, grand: np.ndarray,
               single: np.ndarray, singleton: str) -> np.ndarray:
    """Centre ``c_h`` of the PSU totals of stratum h: ``Z_h / n_h``; for a singleton stratum
    under ``singleton="centre"`` the grand mean of the PSU totals ``Z / #PSUs`` (R "adjust").

    Arrays broadcast: ``stratum_total`` and ``grand`` (cells, ...), ``n_h`` and ``single``
    shaped to broadcast against them.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        c = stratum_total / n_h
    return np.where(single & (singleton == "centre"), grand, c)


def stratum_variance(ss: np.ndarray, n_h: np.ndarray, single: np.ndarray,
                     singleton: str, *, calibrated: bool = False) -> np.ndarray:
    """Stratum h's contribution to the with-replacement variance: ``v_h = n_h/(n_h-1) SS_h``.

    ``SS_h = sum_i (z_hi - c_h)(z_hi - c_h)^T`` over *all* ``n_h`` PSUs of the stratum (those
    without members of the domain at ``z = 0``), ``c_h`` from :func:`psu_centre`. Singleton
    strata: ``"certainty"`` 0; ``"centre"`` ``SS_h`` itself (deviation from the grand mean, no
    ``n/(n-1)``); calibrated (residual) totals 0, as the lone residual is 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = n_h / np.maximum(n_h - 1, 1) * ss
    lone = ss if (singleton == "centre" and not calibrated) else np.zeros_like(ss)
    return np.where(single, lone, scaled)


NO_VARIANCE = 1e-9  # an SE below this share of |estimate| is rounding noise: no variance


def satterthwaite_df(v_sum: np.ndarray, v2_sum: np.ndarray, nominal: Any,
                     estimate: Any = None) -> np.ndarray:
    """Effective degrees of freedom ``(sum_h v_h)^2 / sum_h v_h^2 / (n_h - 1)``.

    ``v_sum`` = the variance ``sum_h v_h``, ``v2_sum`` = ``sum_h v_h^2 / max(n_h - 1, 1)``
    (a singleton stratum kept by ``singleton="centre"`` counts as one df). Where the variance
    is 0 (nothing to estimate) the nominal df is returned; with ``estimate``, so is it where the
    SE is below ``NO_VARIANCE`` x |estimate| (rounding noise, whose ratio would be arbitrary and
    differ between engines). Korn & Graubard (1999) sec. 5.2.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        df = v_sum * v_sum / v2_sum
    ok = (v_sum > 0) & (v2_sum > 0) & np.isfinite(df)
    if estimate is not None:
        scale = np.abs(np.nan_to_num(np.asarray(estimate, dtype=float)))
        ok &= np.sqrt(np.maximum(v_sum, 0)) > NO_VARIANCE * scale
    return np.where(ok, df, np.asarray(nominal, dtype=float))


def design_df_terms(s1: np.ndarray, s2: np.ndarray, n_h: np.ndarray, single: np.ndarray,
                    singleton: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratum h's terms ``tr(A_h)`` and ``tr(A_h^2)`` of the design-based df (:func:`design_df`).

    The with-replacement variance of a domain estimate is a quadratic form ``v = e' A e`` in
    the unit residuals ``e`` of its linearised variable; under a working model of independent
    residuals of equal variance (the weights and PSUs fixed, the outcome not used) the PSU
    totals ``z_hi`` have variances proportional to ``d_hi = sum_{k in PSU hi, k in domain}
    w_k^2``, and with ``c_h = n_h / (n_h - 1)``, ``S1 = sum_i d_hi``, ``S2 = sum_i d_hi^2`` over
    the stratum's ``n_h`` PSUs (absent ones at ``d = 0``)::

        tr(A_h)   = c_h (1 - 1/n_h) S1 = S1
        tr(A_h^2) = c_h^2 [(1 - 2/n_h) S2 + S1^2 / n_h^2]

    (``A_h = c_h W_h' (I - J/n_h) W_h``, ``W_h W_h' = diag(d_h)``). Singleton strata:
    ``"certainty"`` 0 and 0; ``"centre"`` ``S1`` and ``S2`` (no centring within the stratum).
    Arrays broadcast (one entry per (domain, stratum) cell).
    """
    n = np.asarray(n_h, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = n / np.maximum(n - 1, 1)
        tr2 = c * c * ((1 - 2 / n) * s2 + s1 * s1 / (n * n))
    lone_tr, lone_tr2 = (s1, s2) if singleton == "centre" else (0 * s1, 0 * s2)
    return np.where(single, lone_tr, s1), np.where(single, lone_tr2, tr2)


def design_df(tr: np.ndarray, tr2: np.ndarray, nominal: Any) -> np.ndarray:
    """Degrees of freedom from the design: ``(sum_h tr A_h)^2 / sum_h tr(A_h^2)``.

    The Satterthwaite (1946) df of the quadratic form ``e' A e`` under the working model of
    :func:`design_df_terms` -- ``E v = sigma^2 tr A``, ``Var v = 2 sigma^4 tr A^2`` for normal
    residuals -- i.e. the Bell & McCaffrey (2002, *Survey Methodology* 28:169-181) df with an
    independence working model, as in Kott's (1994, *Survey Methodology* 20:159-164) df "from
    the weights" and Valliant & Rust (2010, *J. Official Statistics* 26:585-602). It depends
    on the weights, PSUs and domain only, not on the outcome: equal ``d_hi`` give the nominal
    ``sum_h (n_h - 1)``; a domain in few PSUs or unequal weights give fewer. ``tr``/``tr2``
    are the per-domain sums of :func:`design_df_terms`; ``nominal`` where ``tr2 = 0``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        df = tr * tr / tr2
    ok = (tr2 > 0) & np.isfinite(df)
    return np.where(ok, df, np.asarray(nominal, dtype=float))


def t_interval(estimate: np.ndarray, se: np.ndarray, df: np.ndarray,
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``estimate -/+ t_{df, 1 - alpha/2} se``; NaN where ``df <= 0``."""
    d = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        tq = np.where(d > 0, stats.t.ppf(1 - alpha / 2, np.where(d > 0, d, 1.0)), np.nan)
    return estimate - tq * se, estimate + tq * se


def logit_interval(estimate: np.ndarray, se: np.ndarray, df: np.ndarray,
                   alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval for a proportion ``p`` on the logit scale, mapped back to (0, 1):

        expit( logit(p) -/+ t_{df, 1 - alpha/2} * se / (p (1 - p)) )

    (delta-method SE of ``logit(p)``; R ``survey::svyciprop(method="logit")``, samplics
    ``PopParam.prop``; Korn & Graubard 1999 sec. 5.3). It is asymmetric and stays inside
    [0, 1]: for small domains and proportions away from 1/2 the estimate and its SE are
    correlated and the symmetric interval misses mostly on one side (issue #14's coverage
    simulation: women-owned MSMEs, 91-93% -> 94.5-95.5%). ``p`` of exactly 0 or 1 gives the
    degenerate interval [p, p] (as both references); NaN where ``df <= 0`` or ``p`` is NaN.
    ``estimate`` must be proportions in [0, 1] (divide percentages by 100 first).
    """
    p = np.asarray(estimate, dtype=float)
    if np.any(np.isfinite(p) & ((p < 0) | (p > 1))):
        raise ValueError("logit_interval needs proportions in [0, 1] (the mean of a 0/1 or "
                         f"boolean column), got values from {np.nanmin(p)} to {np.nanmax(p)}. "
                         "Fix: divide percentages by 100, or use the symmetric t interval.")
    inner = (p > 0) & (p < 1)
    q = np.where(inner, p, 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = t_interval(np.log(q / (1 - q)), np.asarray(se, dtype=float) / (q * (1 - q)),
                            df, alpha)
    lo, hi = 1 / (1 + np.exp(-lo)), 1 / (1 + np.exp(-hi))
    ok = np.isfinite(lo)  # df > 0
    return np.where(inner, lo, np.where(ok, p, np.nan)), np.where(inner, hi, np.where(ok, p, np.nan))


def log_interval(estimate: np.ndarray, se: np.ndarray, df: np.ndarray,
                 alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval for a positive ratio ``R`` on the log scale, mapped back to (0, inf):

        R * exp( -/+ t_{df, 1 - alpha/2} * se / R )

    (delta-method SE of ``log R`` is ``se / R``; the log-scale interval of a ratio of positive
    quantities, as for a risk ratio: Katz, Baptista, Azen & Pike 1978, *Biometrics*
    34:469-474; the delta method for ``log g(Y)``: Wolter 2007, ch. 6). It is
    asymmetric, longer above, and never below 0: when the estimate and its SE are positively
    correlated -- a ratio whose denominator total is heavy-tailed, as K04's large-firm value
    added -- the symmetric interval misses mostly from below (issue #14, with the large firms
    sampled: K04 for women-owned MSMEs covers 90.4 / 85.9 / 86.6% at 2 / 3 / 8 PSUs per
    stratum with the symmetric t interval and 94.0 / 89.5 / 88.9% with this one, means over
    16 simulated seeds x 1000 samples; ``tests/test_survey_coverage.py``, which also gives the
    coverage with the large firms enumerated). NaN where ``df <= 0``, ``R`` or ``se`` is NaN.
    ``estimate`` must be > 0 (the log of a ratio of positive totals).
    """
    r = np.asarray(estimate, dtype=float)
    if np.any(np.isfinite(r) & (r <= 0)):
        raise ValueError("log_interval needs positive estimates (a ratio of positive totals), "
                         f"got values down to {np.nanmin(r)}. Fix: use the symmetric t interval "
                         "(ci='wald') for estimates that can be 0 or negative.")
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = t_interval(np.log(r), np.asarray(se, dtype=float) / r, df, alpha)
    return np.exp(lo), np.exp(hi)


def check_options(singleton: str, df: str, calibrated_to: Any) -> None:
    """Validate the ``singleton``, ``df`` and ``calibrated_to`` options (shared with the
    indicator table)."""
    if singleton not in SINGLETON_OPTIONS:
        raise ValueError(f"singleton must be one of {SINGLETON_OPTIONS}, got {singleton!r}")
    if df not in DF_RULES:
        raise ValueError(f"df must be one of {DF_RULES}, got {df!r}")
    if calibrated_to not in CALIBRATION_OPTIONS:
        raise ValueError(
            f"calibrated_to must be None or 'strata' (weights post-stratified to the stratum "
            f"counts), got {calibrated_to!r}. Fix: for post-strata other than the design "
            "strata, calibrate and estimate with them as the strata column.")


def grouped_sums(data: Any, columns: Mapping[str, Any] | Sequence[str], *,
                 weight: str | None = None, strata: str | None = None, psu: str | None = None,
                 by: str | Sequence[str] | None = None, na_rm: bool = False, deff: bool = True,
                 calibrated: bool = False, engine: str | None = None,
                 design_df: bool = False, **engine_options: Any) -> pd.DataFrame:
    """Stage (a) on any engine: :func:`msme_eval.engines.grouped_sums` (see there)."""
    return engines.grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                                na_rm=na_rm, deff=deff, calibrated=calibrated, engine=engine,
                                design_df=design_df, **engine_options)


# --------------------------------------------------------------------------------------------
# stage (b): variance algebra on the small table
# --------------------------------------------------------------------------------------------
@dataclass
class Totals:
    """Estimated totals of ``k`` variables in each domain, with their covariance matrices.

    ``keys`` (DataFrame, one row per domain, the ``by`` columns), ``columns`` (the k variable
    names), ``estimate`` (DataFrame n_domains x k), ``cov`` (ndarray n_domains x k x k, Taylor
    linearised), ``n`` (ndarray of unweighted rows per domain), ``df`` (nominal design degrees
    of freedom), ``design`` (dict: n_psu, n_strata, df, singleton option and strata, variance
    method, calibration). ``strata_cov`` / ``strata_domain`` / ``strata_df`` hold each
    (domain, stratum) cell's contribution ``v_h``, its domain and ``max(n_h - 1, 1)`` (for
    the Satterthwaite df); ``absent_single`` counts, per domain, the singleton strata without
    members that ``singleton="centre"`` charges ``grand grand^T`` (``grand``);
    ``design_terms`` (n_domains x 2) the sums of ``tr A_h`` and ``tr A_h^2``
    (:func:`design_df_terms`) when the table has the squared weights. ``n_psu``: PSUs
    with members of each domain. ``moments`` keeps what the design effect needs (sum of
    weights ``N_d`` and ``M_d[j, l] = sum_d w y_j y_l``).
    """

    keys: pd.DataFrame
    columns: list[str]
    estimate: pd.DataFrame
    cov: np.ndarray
    n: np.ndarray
    df: int
    alpha: float = 0.05
    df_rule: str = "satterthwaite"
    design: dict[str, Any] = field(default_factory=dict)
    moments: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    n_psu: np.ndarray | None = field(default=None, repr=False)
    strata_cov: np.ndarray | None = field(default=None, repr=False)
    strata_domain: np.ndarray | None = field(default=None, repr=False)
    strata_df: np.ndarray | None = field(default=None, repr=False)
    absent_single: np.ndarray | None = field(default=None, repr=False)
    grand: np.ndarray | None = field(default=None, repr=False)
    design_terms: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"Totals({len(self.keys)} domains x {len(self.columns)} columns "
                f"{self.columns}, df={self.df})")

    def to_frame(self) -> pd.DataFrame:
        """One row per domain and column: estimate, se, ci, n, df (like :func:`total`)."""
        frames = []
        for j, col in enumerate(self.columns):
            grad = np.zeros((len(self.keys), len(self.columns)))
            grad[:, j] = 1.0
            res = pd.DataFrame(delta(self, lambda t, j=j: t[:, j], lambda t, g=grad: g))
            res.insert(len(self.keys.columns), "variable", col)
            frames.append(res)
        return pd.concat(frames, ignore_index=True)


def _outer_sum(idx: np.ndarray, a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
    """sum over rows r with idx[r] = d of a[r] b[r]^T -> (size, k, k) (a, b: (rows, k))."""
    k = a.shape[1]
    out = np.zeros((size, k, k))
    for j in range(k):
        for m in range(k):
            out[:, j, m] = np.bincount(idx, weights=a[:, j] * b[:, m], minlength=size)
    return out


def _sym_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a b^T + b a^T`` per cell (a, b: (cells, k))."""
    return a[:, :, None] * b[:, None, :] + b[:, :, None] * a[:, None, :]


@dataclass
class _Layout:
    """Strata, PSUs and domains of a sums table (stage b's view of the design)."""

    h_codes: np.ndarray       # stratum code per table row
    h_uniques: pd.Index
    n_h: np.ndarray           # PSUs (rows when rows are PSUs) per stratum, full sample
    psu_id: np.ndarray | None  # PSU code per table row (None when rows are the PSUs)
    keys: pd.DataFrame        # the domains
    d_codes: np.ndarray       # domain per table row; excluded rows -> n_dom
    excluded: np.ndarray
    certain: np.ndarray       # take-all strata (``certainty=``): no variance, no df

    @property
    def n_strata(self) -> int:
        return len(self.h_uniques)

    @property
    def n_dom(self) -> int:
        return len(self.keys)

    @property
    def single(self) -> np.ndarray:
        """Strata with one PSU that the ``singleton`` rule handles (take-all strata aside)."""
        return (self.n_h == 1) & ~self.certain

    @property
    def df_nominal(self) -> int:
        """``#PSUs - #strata`` over the sampled (not take-all) strata."""
        return int(self.n_h[~self.certain].sum()) - int((~self.certain).sum())


def certainty_mask(labels: Sequence[Any], certainty: Sequence[Any] | None,
                   qualified: Sequence[str] | None = None) -> np.ndarray:
    """Which strata are take-all: ``labels[i]`` (compared as text) is named in ``certainty``,
    or ``qualified[i]`` is (e.g. ``"THA|large"`` for one country's stratum of the indicator
    table). A name matching no stratum raises :class:`SurveyDesignError`."""
    if certainty is None or len(certainty) == 0:
        return np.zeros(len(labels), dtype=bool)
    want = {str(c) for c in ([certainty] if isinstance(certainty, str) else certainty)}
    raw = np.array([str(x) for x in labels], dtype=object)
    names = [raw] if qualified is None else [raw, np.asarray(qualified, dtype=object)]
    unknown = sorted(want - set().union(*(set(n) for n in names)))
    if unknown:
        shown = sorted(set(raw))
        raise SurveyDesignError(
            f"certainty names {unknown}, not a stratum of the data (strata: {shown[:20]}"
            f"{' ...' if len(shown) > 20 else ''}). Fix: give the labels of the take-all strata "
            "exactly as in the strata column.")
    return np.logical_or.reduce([np.isin(n, list(want)) for n in names])


def _layout(table: pd.DataFrame, certainty: Sequence[Any] | None = None) -> _Layout:
    h_codes, h_uniques = engines.factorize(table[STRATUM])
    cnt = table["n"].to_numpy()
    if table.attrs["rows_are_psus"]:
        n_h = np.bincount(h_codes, weights=cnt, minlength=len(h_uniques))
        psu_id = None
    else:
        p_codes, _ = engines.factorize(table[PSU])
        pair = h_codes * (int(p_codes.max()) + 1) + p_codes
        psu_id, first = pd.factorize(pair)
        psu_id = psu_id.astype(np.int64)
        n_h = np.bincount(np.asarray(first) // (int(p_codes.max()) + 1),
                          minlength=len(h_uniques)).astype(float)
    excluded = table[EXCLUDED].to_numpy(dtype=bool)
    keys, d_codes = _domains(table, list(table.attrs["by"]), excluded)
    if certainty is not None and len(certainty) and table.attrs.get("strata") is None:
        raise SurveyDesignError("certainty names take-all strata, but the design has no strata "
                                "column. Fix: pass strata=<column>.")
    certain = certainty_mask(list(h_uniques), certainty)
    return _Layout(h_codes, h_uniques, n_h, psu_id, keys, d_codes, excluded, certain)


def _domains(table: pd.DataFrame, by_cols: list[str],
             excluded: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The domains (sorted ``by`` combinations of included rows) and each table row's domain;
    excluded rows are kept for the design only, in an extra slot ``n_dom``."""
    incl = ~excluded
    if by_cols:
        dom_frame = table.loc[incl, by_cols]
        d_incl = dom_frame.groupby(by_cols, sort=True, observed=True, dropna=False).ngroup()
        d_incl = d_incl.to_numpy()
        keys = (dom_frame.assign(_d=d_incl).drop_duplicates("_d").sort_values("_d")
                .drop(columns="_d").reset_index(drop=True))
    else:
        d_incl = np.zeros(int(incl.sum()), dtype=np.int64)
        keys = pd.DataFrame(index=range(1 if incl.any() else 0))
    d_codes = np.full(len(table), len(keys), dtype=np.int64)
    d_codes[incl] = d_incl
    return keys, d_codes


def singleton_error(names: Sequence[Any], count: int) -> SurveyDesignError:
    """The error for ``singleton="fail"``: ``count`` strata with a single PSU, the first 20 of
    ``names`` shown, and the ways out (shared with the indicator table)."""
    return SurveyDesignError(
        f"{count} stratum/strata have a single PSU: {list(names)[:20]}"
        f"{' ...' if count > 20 else ''}. Fix: name a stratum whose firms are all enumerated "
        "(take-all) in certainty=[...]; collapse an accidental one with a neighbouring stratum, "
        "or pass singleton='certainty' (self-representing: no variance contribution) or "
        "singleton='centre' (deviation from the grand mean, R's survey.lonely.psu='adjust').")


def _singleton_strata(lay: _Layout, table: pd.DataFrame, singleton: str) -> list[Any]:
    single = lay.single
    names = lay.h_uniques[single].tolist() if table.attrs.get("strata") is not None else (
        ["(the only stratum)"] if single.any() else [])
    if single.any() and singleton == "fail":
        raise singleton_error(names, int(single.sum()))
    return names


class _Sums:
    """Column access to a sums table by product key (variables by position)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self.names: list[str] = list(table.attrs["variables"])
        self.ones: list[bool] = list(table.attrs["ones"])
        self.k = len(self.names)

    def col(self, wpow: int, vars_: Sequence[int]) -> np.ndarray:
        key = product_key(wpow, [None if self.ones[v] else v for v in vars_])
        return self.table[sum_name(key, self.names)].to_numpy(dtype="float64")

    def stack(self, wpow: int, vars_: Sequence[int] = ()) -> np.ndarray:
        """(rows, k): column ``w^wpow * y_j * vars_`` for every variable j."""
        return np.column_stack([self.col(wpow, [*vars_, j]) for j in range(self.k)])


@dataclass
class _Cells:
    """Per (domain, stratum) cell: its domain, stratum, the table rows' cell and ``Z_dh``."""

    d: np.ndarray
    h: np.ndarray
    inv: np.ndarray     # table row -> cell
    s1: np.ndarray      # (cells, k) domain totals within the stratum
    m: np.ndarray       # PSUs (rows) of the cell present in the table


def _cells(lay: _Layout, z: np.ndarray) -> _Cells:
    dh = lay.d_codes * lay.n_strata + lay.h_codes
    dh_u, inv = np.unique(dh, return_inverse=True)
    n_cells = len(dh_u)
    s1 = np.column_stack([np.bincount(inv, weights=z[:, j], minlength=n_cells)
                          for j in range(z.shape[1])])
    return _Cells(dh_u // lay.n_strata, dh_u % lay.n_strata, inv, s1,
                  np.bincount(inv, minlength=n_cells).astype(float))


def _cross_sums(sums: _Sums, lay: _Layout, wpow: int, idx: np.ndarray,
                size: int) -> np.ndarray:
    """``sum w^wpow y_j y_l`` over the included table rows of each ``idx`` -> (size, k, k)."""
    out = np.zeros((size, sums.k, sums.k))
    for j in range(sums.k):
        for m in range(j, sums.k):
            vals = np.where(lay.excluded, 0.0, sums.col(wpow, [j, m]))
            out[:, j, m] = np.bincount(idx, weights=vals, minlength=size)
            out[:, m, j] = out[:, j, m]
    return out


def _full_ss(lay: _Layout, sums: _Sums, z: np.ndarray, cells: _Cells, c: np.ndarray,
             cnt: np.ndarray) -> np.ndarray:
    """``SS_h`` of every cell over all ``n_h`` PSUs (absent ones at z = 0)."""
    n_cells = len(cells.d)
    nh = lay.n_h[cells.h]
    if lay.psu_id is None:
        # rows are the PSUs: SS = Q - c S1^T - S1 c^T + n_h c c^T with Q = sum (w y)(w y)^T
        q = _cross_sums(sums, lay, 2, cells.inv, n_cells)
        return q - _sym_outer(c, cells.s1) + nh[:, None, None] * c[:, :, None] * c[:, None, :]
    # exact centring on the PSU totals present, plus (n_h - m) absent PSUs at z = 0
    dev = z - c[cells.inv]
    ss = _outer_sum(cells.inv, dev, dev, n_cells)
    return ss + (nh - cells.m)[:, None, None] * c[:, :, None] * c[:, None, :]


def _design_terms(lay: _Layout, sums: _Sums, cells: _Cells, singleton: str,
                  n_slots: int) -> np.ndarray:
    """Per domain, ``sum_h tr A_h`` and ``sum_h tr A_h^2`` (:func:`design_df_terms`) from the
    PSU sums of squared weights ``d_hi`` (``w2``; rows as PSUs: ``w2`` and ``w4`` give ``S1``,
    ``S2`` directly). Rows left out by ``na_rm`` are not in any domain."""
    n_cells = len(cells.d)
    d = np.where(lay.excluded, 0.0, sums.col(2, []))
    d2 = (np.where(lay.excluded, 0.0, sums.col(4, [])) if lay.psu_id is None else d * d)
    s1 = np.bincount(cells.inv, weights=d, minlength=n_cells)
    s2 = np.bincount(cells.inv, weights=d2, minlength=n_cells)
    tr, tr2 = design_df_terms(s1, s2, lay.n_h[cells.h], lay.single[cells.h], singleton)
    sampled = ~lay.certain[cells.h]  # take-all strata: no variance, no df
    tr, tr2 = tr * sampled, tr2 * sampled
    return np.column_stack([np.bincount(cells.d, weights=tr, minlength=n_slots),
                            np.bincount(cells.d, weights=tr2, minlength=n_slots)])


def _calibrated_ss(lay: _Layout, sums: _Sums, z: np.ndarray, cells: _Cells, c: np.ndarray,
                   ss: np.ndarray) -> np.ndarray:
    """``SS_h`` of the calibration residuals ``r_hi = z_hi - B_h w_hi``, ``B_h = Z_dh / N_h``:

    ``SS_r = SS_zz - B S_zw^T - S_zw B^T + S_ww B B^T`` with ``S_zw = sum_i (z_hi - zbar_h)
    (w_hi - wbar_h)`` and ``S_ww = sum_i (w_hi - wbar_h)^2`` over all PSUs of the stratum.
    """
    n_cells = len(cells.d)
    wcol = sums.col(1, [])
    big_n = np.bincount(lay.h_codes, weights=wcol, minlength=lay.n_strata)  # N_h, all rows
    wbar = big_n / lay.n_h
    if lay.psu_id is None:
        w2 = np.bincount(lay.h_codes, weights=sums.col(2, []), minlength=lay.n_strata)
        s_ww = w2 - big_n * wbar
        p = np.where(lay.excluded[:, None], 0.0, sums.stack(2))  # sum w^2 y per row group
        pz = np.column_stack([np.bincount(cells.inv, weights=p[:, j], minlength=n_cells)
                              for j in range(sums.k)])
        s_zw = pz - cells.s1 * wbar[cells.h][:, None]
    else:
        zw = np.bincount(lay.psu_id, weights=wcol)  # weight total of each PSU, all rows
        psu_h = np.zeros(len(zw), dtype=np.int64)
        psu_h[lay.psu_id] = lay.h_codes
        s_ww = np.bincount(psu_h, weights=(zw - wbar[psu_h]) ** 2, minlength=lay.n_strata)
        wdev = zw[lay.psu_id] - wbar[lay.h_codes]
        wdev_sum = np.bincount(cells.inv, weights=wdev, minlength=n_cells)
        s_zw = np.column_stack([
            np.bincount(cells.inv, weights=(z[:, j] - c[cells.inv, j]) * wdev, minlength=n_cells)
            for j in range(sums.k)]) + c * wdev_sum[:, None]
    b = cells.s1 / big_n[cells.h][:, None]
    return (ss - _sym_outer(b, s_zw)
            + s_ww[cells.h][:, None, None] * b[:, :, None] * b[:, None, :])


def _moments(sums: _Sums, lay: _Layout, n_slots: int) -> dict[str, np.ndarray]:
    """Sum of weights and ``sum w y_j y_l`` per domain (for the design effect)."""
    sw = np.bincount(lay.d_codes, weights=np.where(lay.excluded, 0.0, sums.col(1, [])),
                     minlength=n_slots)
    mm = _cross_sums(sums, lay, 1, lay.d_codes, n_slots)
    return {"sum_w": sw[:lay.n_dom], "m": mm[:lay.n_dom]}


def totals_from_sums(table: pd.DataFrame, *, singleton: str = "fail", alpha: float = 0.05,
                     df: str = "satterthwaite", calibrated_to: str | None = None,
                     certainty: Sequence[Any] | None = None) -> Totals:
    """Stage (b): domain totals and their Taylor covariance from :func:`grouped_sums` output.

    Only the small table is touched. Per domain d and stratum h with ``n_h`` PSUs (all PSUs of
    the full sample), ``C_dh = sum_i (z_hi - c)(z_hi - c)^T`` over all ``n_h`` PSUs (absent PSUs
    have ``z = 0``) with ``c`` from :func:`psu_centre`; ``V_d = sum_h`` :func:`stratum_variance`.
    Singleton strata per ``singleton``: "fail" raises, "certainty" adds 0, "centre" adds
    ``(z - Z_d/P)(z - Z_d/P)^T`` with ``P`` the number of PSUs in the design (also for the
    singleton strata without members of the domain). ``calibrated_to="strata"``: residuals
    of the post-stratification (module docstring; the table needs ``calibrated=True``).
    ``certainty``: labels of take-all strata, which add 0 and no df (module docstring).
    """
    check_options(singleton, df, calibrated_to)
    alpha = check_alpha(alpha)
    calibrated = calibrated_to is not None
    if calibrated and not table.attrs.get("calibrated", False):
        raise ValueError("calibrated_to needs the weight sums: build the table with "
                         "grouped_sums(..., calibrated=True)")
    if df == "design" and not table.attrs.get("design_df", False):
        raise ValueError("df='design' needs the squared weights: build the table with "
                         "grouped_sums(..., design_df=True)")
    lay = _layout(table, certainty)
    singleton_strata = _singleton_strata(lay, table, singleton)
    sums = _Sums(table)
    n_slots = lay.n_dom + 1
    z = np.where(lay.excluded[:, None], 0.0, sums.stack(1))  # group totals of w*y_j
    est = np.column_stack([np.bincount(lay.d_codes, weights=z[:, j], minlength=n_slots)
                           for j in range(sums.k)])
    n_psu_total = int(lay.n_h.sum())
    grand = est / max(n_psu_total, 1)  # grand mean of PSU totals per domain (for "centre")
    cells = _cells(lay, z)
    single = lay.single[cells.h]
    c = psu_centre(cells.s1, lay.n_h[cells.h][:, None], grand[cells.d], single[:, None],
                   singleton)
    ss = _full_ss(lay, sums, z, cells, c, table["n"].to_numpy())
    if calibrated:
        ss = _calibrated_ss(lay, sums, z, cells, c, ss)
    v = stratum_variance(ss, lay.n_h[cells.h][:, None, None], single[:, None, None], singleton,
                         calibrated=calibrated)
    v = np.where(lay.certain[cells.h][:, None, None], 0.0, v)
    cov = np.zeros((n_slots, sums.k, sums.k))
    np.add.at(cov, cells.d, v)
    absent = np.zeros(n_slots)
    if singleton == "centre" and lay.single.any() and not calibrated:
        # singleton strata holding no member of the domain: their PSU total is 0 -> grand^2
        absent = lay.single.sum() - np.bincount(cells.d, weights=single.astype(float),
                                                minlength=n_slots)
        cov += absent[:, None, None] * grand[:, :, None] * grand[:, None, :]
    cnt = table["n"].to_numpy()
    incl = ~lay.excluded
    n_dom_rows = np.bincount(lay.d_codes, weights=np.where(incl, cnt, 0), minlength=n_slots)
    n_psu = (n_dom_rows if lay.psu_id is None
             else np.bincount(lay.d_codes[incl], minlength=n_slots).astype(float))
    df_nominal = lay.df_nominal
    keep = cells.d < lay.n_dom
    design = {
        "variance": VARIANCE_METHOD, "n_psu": n_psu_total, "n_strata": lay.n_strata,
        "df": df_nominal, "df_rule": df,
        "psu": "rows" if lay.psu_id is None else table.attrs.get("psu"),
        "strata": table.attrs.get("strata"), "weight": table.attrs.get("weight"),
        "singleton": singleton, "singleton_strata": singleton_strata,
        "certainty_strata": lay.h_uniques[lay.certain].tolist(),
        "calibrated_to": calibrated_to, "excluded_rows": int(cnt[lay.excluded].sum()),
    }
    return Totals(
        keys=lay.keys, columns=sums.names,
        estimate=pd.DataFrame(est[:lay.n_dom], columns=sums.names),
        cov=cov[:lay.n_dom], n=n_dom_rows[:lay.n_dom].astype(np.int64), df=df_nominal,
        alpha=alpha, df_rule=df, design=design,
        moments=_moments(sums, lay, n_slots) if table.attrs.get("deff", False) else {},
        n_psu=n_psu[:lay.n_dom].astype(np.int64), strata_cov=v[keep],
        strata_domain=cells.d[keep], strata_df=np.maximum(lay.n_h[cells.h[keep]] - 1, 1),
        absent_single=absent[:lay.n_dom], grand=grand[:lay.n_dom],
        design_terms=(_design_terms(lay, sums, cells, singleton, n_slots)[:lay.n_dom]
                      if table.attrs.get("design_df", False) else None),
    )


def totals(data: Any, columns: Mapping[str, Any] | Sequence[str], *,
           weight: str | None = None, strata: str | None = None, psu: str | None = None,
           by: str | Sequence[str] | None = None, singleton: str = "fail",
           alpha: float = 0.05, df: str = "satterthwaite",
           calibrated_to: str | None = None, na_rm: bool = False, deff: bool = True,
           engine: str | None = None, certainty: Sequence[Any] | None = None,
           **engine_options: Any) -> Totals:
    """Weighted totals of several columns per domain with their joint covariance.

    ``columns``: list of column names, or a mapping ``{name: column name | array | None}``
    (``None`` = the constant 1, i.e. the estimated population size; arrays in memory only).
    Feed the result to :func:`delta` for any smooth function of the totals, e.g. K04
    ``(A/B)/(C/D)``. One grouped pass over the data on its ``engine`` (pandas, DuckDB, Spark;
    ``engine_options`` such as ``con``/``memory_limit`` go to DuckDB), then small numpy algebra.
    ``certainty``: labels of take-all strata (no variance, no df; module docstring).
    """
    alpha = check_alpha(alpha)
    check_options(singleton, df, calibrated_to)
    engine = engines.engine_of(data) if engine is None else engine
    table = grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                         na_rm=na_rm, deff=deff, calibrated=calibrated_to is not None,
                         engine=engine, design_df=df == "design", **engine_options)
    t = totals_from_sums(table, singleton=singleton, alpha=alpha, df=df,
                         calibrated_to=calibrated_to, certainty=certainty)
    t.design.update(engine=engine, na_rm=na_rm)
    return t


def _df(totals: Totals, gr: np.ndarray, var: np.ndarray, rule: str, estimate: np.ndarray) -> np.ndarray:
    """Degrees of freedom per domain: nominal, from the design (:func:`design_df`), or
    Satterthwaite from the strata's ``v_h``."""
    nominal = np.full(len(var), float(totals.df))
    if rule == "design":
        if totals.design_terms is None:
            raise ValueError("df='design' needs the squared weights, which these totals lack. "
                             "Fix: compute them with survey.totals(..., df='design').")
        return design_df(totals.design_terms[:, 0], totals.design_terms[:, 1], nominal)
    if rule == "nominal" or totals.strata_cov is None:
        return nominal
    gd = gr[totals.strata_domain]
    v_h = np.maximum(np.einsum("cj,cjm,cm->c", gd, totals.strata_cov, gd), 0.0)
    v2 = np.bincount(totals.strata_domain, weights=v_h * v_h / totals.strata_df,
                     minlength=len(var))
    if totals.absent_single is not None and totals.absent_single.any():
        g0 = np.einsum("dj,dj->d", gr, totals.grand) ** 2
        v2 = v2 + totals.absent_single * g0 * g0
    return satterthwaite_df(var, v2, nominal, estimate)


def _choices(totals: Totals, alpha: float, rule: str, estimator: str,
             ci: str) -> dict[str, Any]:
    d = totals.design
    return {"estimator": estimator, "variance": d.get("variance", VARIANCE_METHOD),
            "weight": d.get("weight"), "strata": d.get("strata"), "psu": d.get("psu"),
            "singleton": d.get("singleton"), "certainty": d.get("certainty_strata") or None,
            "df": rule, "calibrated_to": d.get("calibrated_to"),
            "na_rm": d.get("na_rm", False), "alpha": alpha, "engine": d.get("engine", "pandas"),
            "ci": ci}


def delta(totals: Totals, func: Callable[[np.ndarray], np.ndarray],
          grad: Callable[[np.ndarray], np.ndarray], *, alpha: float | None = None,
          df: str | None = None, title: str = "Smooth function of survey totals",
          estimator: str = "delta method g(Y)", ci: str = "wald") -> ResultFrame:
    """Estimate ``g(Y_1..Y_k)`` per domain with the delta-method (linearised) variance.

    ``func(T)`` and ``grad(T)`` take ``T = totals.estimate.to_numpy()`` (n_domains x k, columns
    in ``totals.columns`` order) and return ``g`` (n_domains,) and ``dg/dY`` (n_domains x k).
    ``var = grad^T cov grad``. Returns a :class:`~msme_eval.results.ResultFrame`: the ``by``
    columns, estimate, se, ci_low, ci_high, n, df, deff (see the module docstring for the
    design effect), n_psu, df_nominal, df_rule. ``alpha``/``df`` default to the ``totals``'.
    ``ci``: "wald" (``g +- t se``, :func:`t_interval`), "log" (:func:`log_interval`, for a
    positive ``g`` such as K04) or "logit" (:func:`logit_interval`,
    for a proportion ``g`` in [0, 1]).

    Example (K04, relative productivity ``(A/B)/(C/D)``)::

        t = survey.totals(panel, {"A": va_msme, "B": emp_msme, "C": va_large, "D": emp_large}, ...)
        f = lambda T: (T[:, 0] / T[:, 1]) / (T[:, 2] / T[:, 3])
        g = lambda T: f(T)[:, None] * np.column_stack(
            [1 / T[:, 0], -1 / T[:, 1], -1 / T[:, 2], 1 / T[:, 3]])
        survey.delta(t, f, g)
    """
    alpha = check_alpha(totals.alpha if alpha is None else alpha)
    rule = totals.df_rule if df is None else df
    if rule not in DF_RULES:
        raise ValueError(f"df must be one of {DF_RULES}, got {rule!r}")
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    tt = totals.estimate.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.asarray(func(tt), dtype="float64").reshape(-1)
        gr = np.asarray(grad(tt), dtype="float64")
    n_dom, k = tt.shape
    if g.shape != (n_dom,):
        raise ValueError(f"func must return {n_dom} values (one per domain), got shape {g.shape}")
    if gr.shape != (n_dom, k):
        raise ValueError(f"grad must return an array of shape {(n_dom, k)}, got {gr.shape}")
    # a quadratic form in a positive semi-definite matrix: clip rounding noise below 0
    var = np.maximum(np.einsum("dj,djm,dm->d", gr, totals.cov, gr), 0.0)
    se = np.sqrt(var)
    dfs = _df(totals, np.where(np.isfinite(gr), gr, 0.0), var, rule, g)
    out = totals.keys.copy()
    out["estimate"] = g
    out["se"] = se
    out["ci_low"], out["ci_high"] = _INTERVALS[ci](g, se, dfs, alpha)
    out["n"] = totals.n.astype(np.int64)
    out["df"] = dfs.astype(np.int64) if rule == "nominal" else dfs
    out["deff"] = _deff(totals, gr, var)
    out["n_psu"] = (totals.n_psu if totals.n_psu is not None
                    else np.full(n_dom, -1)).astype(np.int64)
    out["df_nominal"] = np.full(n_dom, totals.df, dtype=np.int64)
    out["df_rule"] = rule
    out.attrs["design"] = dict(totals.design)
    return ResultFrame.wrap(out, choices=_choices(totals, alpha, rule, estimator, ci),
                            alpha=alpha, title=title)


_INTERVALS = {"wald": t_interval, "logit": logit_interval, "log": log_interval}


def _deff(totals: Totals, gr: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Design effect against SRS without replacement (R svymean deff=TRUE convention)."""
    if not totals.moments:
        return np.full(len(var), np.nan)
    n = totals.n.astype(float)
    big_n = totals.moments["sum_w"]
    tt = totals.estimate.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        # u_i = sum_j g_j y_ij : weighted mean and second moment of u in the domain
        mean_u = np.einsum("dj,dj->d", gr, tt) / big_n
        m2_u = np.einsum("dj,djm,dm->d", gr, totals.moments["m"], gr) / big_n
        s2 = n / (n - 1) * np.maximum(m2_u - mean_u**2, 0.0)
        v_srs = (1 - n / big_n) * big_n**2 / n * s2
        out = var / v_srs
    ok = (n >= 2) & (big_n > n) & (v_srs > 0)
    return np.where(ok, out, np.nan)


# --------------------------------------------------------------------------------------------
# user-facing estimators
# --------------------------------------------------------------------------------------------
def _ratio_f(tt: np.ndarray) -> np.ndarray:
    return tt[:, 0] / tt[:, 1]


def _ratio_g(tt: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 / tt[:, 1], -tt[:, 0] / tt[:, 1] ** 2])


def ratio(data: Any, numerator: str, denominator: str | None = None, *,
          weight: str | None = None, strata: str | None = None, psu: str | None = None,
          by: str | Sequence[str] | None = None, singleton: str = "fail",
          alpha: float = 0.05, df: str = "satterthwaite",
          calibrated_to: str | None = None, na_rm: bool = False, deff: bool = True,
          engine: str | None = None, ci: str = "wald",
          certainty: Sequence[Any] | None = None, **engine_options: Any) -> ResultFrame:
    """Ratio of weighted totals ``R_d = sum_d w y / sum_d w x`` per domain, linearised SE.

    ``denominator=None`` gives the mean (proportion for a 0/1 or boolean column),
    ``x = 1``. Variance of the linearised variable ``u = (y - R_d x) / X_d`` over the full
    design (Woodruff 1971). Returns a :class:`~msme_eval.results.ResultFrame`, one row per
    domain: ``by`` columns, estimate, se, ci_low, ci_high (t, ``1 - alpha``), n (unweighted
    rows), df (``df=`` rule), deff, n_psu, df_nominal, df_rule; ``.choices`` lists every
    choice. A domain with ``X_d = 0`` has estimate NaN. ``data`` may be any input of
    :mod:`msme_eval.engines` (``engine=`` forces one). ``ci="logit"``: the interval of a
    proportion on the logit scale (:func:`logit_interval`; R ``svyciprop(method="logit")``),
    better than the symmetric default ``"wald"`` for small domains and proportions near 0 or 1;
    ``ci="log"``: on the log scale (:func:`log_interval`), for a ratio of positive totals.
    ``certainty``: labels of take-all strata (enumerated: no variance, no df).
    """
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    cols = {numerator: numerator, (denominator if denominator is not None else "__one__"):
            denominator}
    if denominator == numerator:
        cols = {numerator: numerator, "__denominator__": denominator}
    t = totals(data, cols, weight=weight, strata=strata, psu=psu, by=by, singleton=singleton,
               alpha=alpha, df=df, calibrated_to=calibrated_to, na_rm=na_rm, deff=deff,
               engine=engine, certainty=certainty, **engine_options)
    what = f"{numerator} / {denominator}" if denominator is not None else f"mean of {numerator}"
    return delta(t, _ratio_f, _ratio_g, title=f"Survey ratio: {what}",
                 estimator="ratio of weighted totals" if denominator is not None
                 else "weighted mean (ratio with x = 1)", ci=ci)


def mean(data: Any, column: str, **kwargs: Any) -> ResultFrame:
    """Weighted mean (a proportion for a 0/1 or boolean column): ``ratio(data, column)``."""
    return ratio(data, column, None, **kwargs)


def total(data: Any, column: str, *, by: str | Sequence[str] | None = None,
          **options: Any) -> ResultFrame:
    """Weighted total ``Y_d = sum_d w y`` per domain with its Taylor SE (columns as ratio()).

    ``options``: the keyword arguments of :func:`ratio` (weight, strata, psu, singleton, alpha,
    df, calibrated_to, na_rm, deff, engine, certainty and the engine's options).
    """
    t = totals(data, [column], by=by, **options)
    return delta(t, lambda tt: tt[:, 0], lambda tt: np.ones_like(tt),
                 title=f"Survey total: {column}", estimator="weighted total (Horvitz-Thompson)")
