"""Two-way fixed effects baselines via pyfixest: :func:`twfe` and :func:`twfe_event_study`.

y_it = alpha_i + lambda_t + beta' D_it + gamma' X_it + e_it, estimated by within transformation
(pyfixest ``feols``); SEs clustered by ``cluster`` (default: the unit, CRV1 with the small-sample
factor of fixest) or ``vcov="iid"``/``"hetero"``.

With staggered adoption and effects that vary by cohort or over time, the static TWFE coefficient
is a weighted average of 2x2 comparisons, some using already-treated firms as controls and some
with negative weights (Goodman-Bacon 2021, J. Econometrics 225(2); de Chaisemartin and
D'Haultfoeuille 2020, AER 110(9)). It is reported only as a baseline beside :func:`did`;
``TwfeResult.bacon()`` decomposes it into those 2x2 comparisons and their weights (:mod:`.bacon`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.results import Result, check_alpha, inference

from ._checks import ImpactInputError, as_float, check_unit_ids, integer_time, require_columns
from .bacon import BaconResult, bacon
from .results import joint_wald

__all__ = ["TwfeResult", "twfe", "twfe_event_study"]


@dataclass
class TwfeResult(Result):
    """TWFE coefficients: ``coef``/``se`` (Series by term), ``tidy()``, ``choices``, ``model`` (pyfixest Feols)."""

    outcome: str
    coef: pd.Series
    se: pd.Series
    pvalue: pd.Series
    ci: pd.DataFrame
    nobs: int
    n_dropped: int
    vcov: str
    fixed_effects: tuple[str, ...]
    model: Any = field(repr=False)
    alpha: float = 0.05
    covariates: tuple[str, ...] = ()
    unit: str = "firm_id"
    time: str = "year"
    _panel: pd.DataFrame | None = field(default=None, repr=False)
    _bacon: BaconResult | None = field(default=None, repr=False)

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"Two-way fixed effects (baseline): {self.outcome}"

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        return {"estimator": "OLS with unit and time fixed effects (pyfixest feols)",
                "fixed_effects": list(self.fixed_effects), "vcov": self.vcov,
                "covariates": list(self.covariates), "alpha": self.alpha,
                "rows_dropped": f"{self.n_dropped} (missing values or singleton fixed effects)"}

    def tidy(self) -> pd.DataFrame:
        """term, estimate, se, ci_low, ci_high, pvalue, nobs."""
        return pd.DataFrame({
            "term": self.coef.index, "estimate": self.coef.to_numpy(), "se": self.se.to_numpy(),
            "ci_low": self.ci.iloc[:, 0].to_numpy(), "ci_high": self.ci.iloc[:, 1].to_numpy(),
            "pvalue": self.pvalue.to_numpy(), "nobs": self.nobs,
        })

    @property
    def n_units(self) -> int:
        """Units in the estimation sample (levels of the unit fixed effect after pyfixest's drops)."""
        return int(self.model._data["_u"].nunique())

    def bacon(self) -> BaconResult:
        """Goodman-Bacon (2021) decomposition of this coefficient into every 2x2 DiD and its weight
        (:func:`msme_eval.impact.bacon`); needs one 0/1 absorbing treatment, no covariates and a balanced panel."""
        if self._bacon is None:
            if self._panel is None:
                raise ImpactInputError("the Goodman-Bacon decomposition covers one 0/1 treatment without covariates "
                                       f"(this fit has {list(self.coef.index)}); refit twfe() with one treatment "
                                       "and no covariates, or call msme_eval.impact.bacon().")
            treat = self._panel.columns[1]
            self._bacon = bacon(self._panel, self.outcome, treat, unit=self.unit, time=self.time)
        return self._bacon

    def notes(self) -> list[str]:
        out = ["Under staggered adoption with heterogeneous effects the TWFE coefficient mixes 2x2 comparisons, "
               "some using already-treated firms as controls (Goodman-Bacon 2021); a baseline only, beside did()"
               + ("; see .bacon() for the decomposition." if self._panel is not None else ".")]
        if self._bacon is not None:
            out += self._bacon.notes()[:1]
        return out

    def __repr__(self) -> str:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in self.coef.items())
        return f"TwfeResult(outcome={self.outcome!r}, {terms}, vcov={self.vcov!r}, nobs={self.nobs})"


def _vcov_spec(vcov: str | None, cluster: str | None, unit: str) -> tuple[Any, str]:
    if vcov in ("iid", "hetero"):
        if cluster:
            raise ImpactInputError("pass either cluster= or vcov='iid'/'hetero', not both.")
        return vcov, {"iid": "iid (homoskedastic)", "hetero": "heteroskedasticity-robust (HC1)"}[vcov]
    if vcov is not None:
        raise ImpactInputError(f"vcov must be None, 'iid' or 'hetero', got {vcov!r}.")
    c = cluster or unit
    return {"CRV1": c}, f"clustered by {c} (CRV1)"


def _fit(fml: str, frame: pd.DataFrame, vcov: Any) -> Any:
    """pyfixest feols; rows with missing values and singleton fixed effects are dropped by
    pyfixest (as fixest does) and counted by the callers as ``n_dropped``."""
    import warnings

    import pyfixest as pf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*singleton fixed effect.*")
        # pyfixest's own pandas-4 deprecations (inplace=): nothing a user can act on
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyfixest\.")
        return pf.feols(fml, data=frame, vcov=vcov)


def twfe(
    data: pd.DataFrame,
    outcome: str,
    treatment: str | Sequence[str],
    *,
    unit: str = "firm_id",
    time: str = "year",
    covariates: Sequence[str] | None = None,
    cluster: str | None = None,
    vcov: str | None = None,
    alpha: float = 0.05,
) -> TwfeResult:
    """Two-way (unit and time) fixed-effects regression of ``outcome`` on ``treatment`` column(s).

    Rows with a missing outcome/regressor, and singleton fixed-effect groups, are dropped by the
    regression (as in fixest) and counted in ``n_dropped`` (shown in the summary). Published checks in
    the tests: Wooldridge Example 14.1
    (JTRAIN), 13.3 (KIELMC) and 13.4 (INJURY). ``alpha``: intervals have 1 - alpha coverage
    (t reference with pyfixest's degrees of freedom).
    """
    check_alpha(alpha)
    treat = [treatment] if isinstance(treatment, str) else list(treatment)
    covs = list(covariates or [])
    cols = [outcome, *treat, *covs, unit, time, *([cluster] if cluster else [])]
    require_columns(data, cols, "twfe()")
    check_unit_ids(data, unit)
    frame = pd.DataFrame({"_y": as_float(data, outcome)})
    names: dict[str, str] = {}
    for i, c in enumerate([*treat, *covs]):
        frame[f"x{i}"] = as_float(data, c)
        names[f"x{i}"] = c
    frame["_u"] = pd.factorize(data[unit])[0]
    frame["_t"] = pd.factorize(data[time])[0]
    if cluster:
        if data[cluster].isna().any():
            raise ImpactInputError(f"cluster column {cluster!r} has missing values.")
        frame["_c"] = pd.factorize(data[cluster])[0]
    spec, label = _vcov_spec(vcov, cluster and "_c", "_u")
    label = label.replace("_c", str(cluster)).replace("_u", unit)
    if frame["_y"].isna().all():
        raise ImpactInputError(f"outcome {outcome!r} is missing in every row.")
    m = _fit(f"_y ~ {' + '.join(names)} | _u + _t", frame, spec)
    n_drop = len(frame) - int(m._N)
    ren = lambda s: s.rename(index=names)  # noqa: E731
    ci = m.confint(alpha=alpha).rename(index=names)
    panel = data[[outcome, treat[0], unit, time]].copy() if len(treat) == 1 and not covs else None
    return TwfeResult(outcome, ren(m.coef()), ren(m.se()), ren(m.pvalue()), ci, int(m._N), n_drop, label,
                      (unit, time), m, alpha, tuple(covs), unit, time, panel)


def twfe_event_study(
    data: pd.DataFrame,
    outcome: str,
    *,
    unit: str = "firm_id",
    time: str = "year",
    first_treated: str = "first_treated",
    ref: int = -1,
    window: tuple[int, int] | None = None,
    cluster: str | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Dynamic TWFE: y_it = a_i + l_t + sum_{e != ref} b_e 1[t - g_i = e] + u_it.

    Never-treated firms (``first_treated`` NA) have all event dummies zero. ``window=(lo, hi)``
    bins event times beyond the ends into the end points. Returns event_time, estimate, se, ci_low,
    ci_high, pvalue (plus the reference row with att 0), the same columns as
    ``DidResult.event_study`` so both can be plotted together. Under heterogeneous effects the
    b_e are contaminated by other periods' effects (Sun and Abraham 2021, J. Econometrics 225(2)).

    ``attrs["vcov"]``: the (clustered) covariance of the b_e, indexed by event time;
    ``attrs["pretrend"]``: the joint Wald test of the leads, H0: b_e = 0 for every e < 0
    (e != ref), W = b' V^+ b with Hotelling's F reference (a :class:`WaldTest`, as
    ``DidResult.pretrend``; fixest ``wald(m, keep = "::-")`` gives the same W).
    """
    require_columns(data, [outcome, unit, time, first_treated, *([cluster] if cluster else [])],
                    "twfe_event_study()")
    check_unit_ids(data, unit)
    t = integer_time(data, time)
    g = as_float(data, first_treated)
    rel = np.where(np.isnan(g), ref, t - np.nan_to_num(g, nan=0.0)).astype(int)
    if window is not None:
        rel = np.clip(rel, window[0], window[1])
    frame = pd.DataFrame({"_y": as_float(data, outcome), "_rel": rel, "_u": pd.factorize(data[unit])[0],
                          "_t": t})
    if cluster:
        frame["_c"] = pd.factorize(data[cluster])[0]
    spec, _ = _vcov_spec(None, "_c" if cluster else None, "_u")
    m = _fit(f"_y ~ i(_rel, ref={int(ref)}) | _u + _t", frame, spec)
    coef, se = m.coef(), m.se()
    et = [int(str(k).split("::")[-1].split("]")[0].split(".")[-1].replace("T", "")) if "::" in str(k)
          else int(str(k).rsplit("[", 1)[-1].rstrip("]").replace("T.", "")) for k in coef.index]
    out = pd.DataFrame({"event_time": et, "estimate": coef.to_numpy(), "se": se.to_numpy()})
    vcov = pd.DataFrame(np.asarray(m._vcov), index=et, columns=et)
    out = pd.concat([out, pd.DataFrame({"event_time": [int(ref)], "estimate": [0.0], "se": [np.nan]})])
    out = out.sort_values("event_time").reset_index(drop=True)
    inf = inference(out["estimate"].to_numpy(), out["se"].to_numpy(), alpha)
    out["ci_low"], out["ci_high"], out["pvalue"] = inf["ci_low"], inf["ci_high"], inf["pvalue"]
    out["is_reference"] = out["event_time"] == ref
    out.attrs["vcov"] = vcov
    out.attrs["pretrend"] = _leads_wald(coef.to_numpy(), vcov, frame["_c" if cluster else "_u"])
    return out


def _leads_wald(b: np.ndarray, vcov: pd.DataFrame, clusters: pd.Series) -> Any:
    """Joint Wald test of the event-study leads (event time < 0): W = b' V^+ b, rank-K."""
    lead = np.asarray(vcov.index) < 0
    test = joint_wald(b[lead], vcov.to_numpy()[np.ix_(lead, lead)], int(clusters.nunique()))
    return replace(test, hypothesis="all TWFE event-study leads = 0 (parallel pre-trends)")
