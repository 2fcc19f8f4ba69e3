"""HonestDiD sensitivity of an event study to violations of parallel trends (Rambachan and Roth 2023).

    res = me.impact.did(panel, "employees", base_period="universal")
    hd = me.impact.honest_did(res, restriction="relative_magnitude", m=[0.5, 1, 1.5, 2])
    hd.tidy(); hd.breakdown; hd.plot()

The event-study coefficients beta = (beta_pre, beta_post) are biased by the difference in trends
delta = (delta_pre, delta_post); the target theta = l' tau_post is partially identified once
delta is restricted to a set Delta (Rambachan and Roth 2023, Rev. Econ. Stud. 90(5), 2555-2591):

* relative magnitudes Delta^RM(Mbar): every post-period change |delta_{t+1} - delta_t| is at most
  Mbar times the largest pre-period change; robust CI by the conditional least-favourable hybrid
  test (C-LF, Andrews, Roth and Pakes 2023) inverted over a grid;
* smoothness Delta^SD(M): |(delta_{t+1} - delta_t) - (delta_t - delta_{t-1})| <= M (M = 0: linear
  pre-trend extrapolated); robust CI the optimal fixed-length CI (FLCI, section 4.1).

These are R ``HonestDiD``'s defaults (``createSensitivityResults_relativeMagnitudes`` and
``createSensitivityResults``), computed by moderndid's port (optional extra ``msme-eval[honest]``,
which needs cvxpy). diff-diff 3.13 also has ``HonestDiD``, but its Delta^RM interval is the
identified set widened by z * se, not R's C-LF (on R's Medicaid README example it gives
[0.0113, 0.0816] at Mbar = 2 where R reports [-0.0011, 0.0883]), so it is not used. Like R, the
C-LF grid is [-20, 20] standard errors of theta with 1,000 points, so interval ends are exact up
to one grid step; the least-favourable critical value is simulated with a fixed seed (0), so a
re-run gives identical intervals. C-LF is slow (cvxpy solves: ~10-25 s per Mbar on 7 coefficients).

From a :class:`DidResult`: beta and its covariance come from the event-time aggregation (R
``aggte(type="dynamic")``) and its influence functions, V = psi' psi (clustered as the fit); as R's
``honest_did.AGGTEobj``, the fit must use ``base_period="universal"`` (pre-period coefficients
relative to the reference period, not short differences) and the event times must be consecutive.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.results import Result, check_alpha

from ._checks import ImpactInputError
from .results import DidResult, _vcov_from_psi

__all__ = ["HonestResult", "honest_did", "honest_bounds", "event_study_inputs", "RESTRICTIONS"]

RESTRICTIONS = {"relative_magnitude": "relative magnitudes, Delta^RM(Mbar)",
                "smoothness": "smoothness, Delta^SD(M)"}
_DEFAULT_M = {"relative_magnitude": (0.5, 1.0, 1.5, 2.0), "smoothness": None}


@dataclass
class HonestResult(Result):
    """Robust confidence intervals for theta = l' tau_post, one row per M (``bounds``), beside the original
    interval that assumes exact parallel trends (``original``); ``breakdown`` is the largest M in the grid
    whose robust interval still excludes 0."""

    restriction: str
    method: str
    bounds: pd.DataFrame          # m, ci_low, ci_high
    original: tuple[float, float]
    estimate: float
    se: float
    l_vec: np.ndarray
    event_times: list[int]
    n_pre: int
    n_post: int
    alpha: float = 0.05
    outcome: str = ""
    grid_points: int = 1000
    raw: Any = field(default=None, repr=False)

    @property
    def title(self) -> str:  # type: ignore[override]
        return "HonestDiD sensitivity (Rambachan and Roth 2023)" + (f": {self.outcome}" if self.outcome else "")

    @property
    def m_name(self) -> str:
        return "Mbar" if self.restriction == "relative_magnitude" else "M"

    @property
    def breakdown(self) -> float:
        """Largest M such that the robust CI excludes 0 at every grid value up to it (NaN if the smallest
        M's interval already includes 0)."""
        best = np.nan
        for r in self.bounds.sort_values("m").itertuples():
            if r.ci_low <= 0 <= r.ci_high:
                break
            best = float(r.m)
        return best

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        post = [e for e in self.event_times if e >= 0]
        return {"restriction": RESTRICTIONS[self.restriction], "robust CI": self.method,
                "target": f"l' tau_post with l = {np.round(self.l_vec, 4).tolist()} over event times {post}",
                "pre-periods": self.n_pre, "post-periods": self.n_post, "alpha": self.alpha,
                "engine": "moderndid.didhonest (port of R HonestDiD)"
                + (f", C-LF grid {self.grid_points} points over theta -/+ 20 se" if self.method != "FLCI" else "")}

    def tidy(self) -> pd.DataFrame:
        """One row per M (plus the original CI as m = NaN, restriction "none"): estimate = l' beta_post,
        se, robust ci_low/ci_high; pvalue NaN (robust sets are inverted tests, no p-value)."""
        lo, hi = self.original
        rows = [{"restriction": "none (parallel trends)", "m": np.nan, "ci_low": lo, "ci_high": hi}]
        rows += [{"restriction": self.restriction, "m": float(r.m), "ci_low": float(r.ci_low),
                  "ci_high": float(r.ci_high)} for r in self.bounds.itertuples()]
        out = pd.DataFrame(rows)
        out.insert(2, "estimate", self.estimate)
        out.insert(3, "se", self.se)
        out["pvalue"] = np.nan
        return out[["restriction", "m", "estimate", "se", "ci_low", "ci_high", "pvalue"]]

    def notes(self) -> list[str]:
        b = self.breakdown
        what = (f"The effect stays significant for {self.m_name} up to {b:g} (breakdown value on this grid)."
                if np.isfinite(b) else f"No {self.m_name} on this grid keeps the robust interval away from 0.")
        return [what]

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Sensitivity plot: the original interval and the robust interval at each M."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 3.8))
        t = self.tidy()
        x = np.arange(len(t))
        ax.vlines(x, t["ci_low"], t["ci_high"], color=["#7f7f7f"] + ["#1f4e79"] * (len(t) - 1), lw=3, **kwargs)
        ax.axhline(0, color="#555555", lw=0.8, ls="--")
        ax.set_xticks(x, ["original"] + [f"{m:g}" for m in t["m"].iloc[1:]])
        ax.set_xlabel(self.m_name)
        ax.set_ylabel(f"{round(100 * (1 - self.alpha))}% robust CI")
        ax.set_title(self.title)
        return ax


def _engine() -> Any:
    try:
        from moderndid.didhonest import sensitivity
    except ImportError as err:
        raise ImportError("HonestDiD bounds need moderndid's didhonest module (and cvxpy): "
                          "pip install 'msme-eval[honest]'") from err
    return sensitivity


def _target(l_vec: Sequence[float] | None, event_time: int, post_times: list[int]) -> np.ndarray:
    if l_vec is not None:
        vec = np.asarray(l_vec, dtype=float)
        if vec.shape != (len(post_times),):
            raise ValueError(f"l_vec must have one weight per post period ({len(post_times)}: event times "
                             f"{post_times}), got {vec.shape[0] if vec.ndim else 'a scalar'}.")
        return vec
    if event_time not in post_times:
        raise ValueError(f"event_time={event_time} is not a post period; choose among {post_times}.")
    vec = np.zeros(len(post_times))
    vec[post_times.index(event_time)] = 1.0
    return vec


def _check_inputs(beta: np.ndarray, sigma: np.ndarray, n_pre: int, n_post: int) -> None:
    if beta.ndim != 1 or sigma.shape != (beta.size, beta.size):
        raise ValueError(f"sigma must be {beta.size} x {beta.size} to match betahat, got {sigma.shape}.")
    if n_pre < 1 or n_post < 1 or n_pre + n_post != beta.size:
        raise ValueError(f"need n_pre >= 1 and n_post >= 1 with n_pre + n_post = len(betahat) = {beta.size}, "
                         f"got {n_pre} + {n_post}.")
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(sigma))):
        raise ValueError("betahat and sigma must be finite (an event time without an estimate? drop it with window=).")
    if np.linalg.eigvalsh((sigma + sigma.T) / 2).min() < -1e-12 * max(1.0, float(np.abs(sigma).max())):
        raise ValueError("sigma is not positive semi-definite.")


def honest_bounds(betahat: Sequence[float], sigma: np.ndarray, n_pre: int, n_post: int, *,
                  restriction: str = "relative_magnitude", m: Sequence[float] | None = None,
                  l_vec: Sequence[float] | None = None, alpha: float = 0.05, grid_points: int = 1000,
                  event_times: Sequence[int] | None = None, outcome: str = "") -> HonestResult:
    """Robust CIs for l' tau_post from any event study: ``betahat`` (pre coefficients first, reference period
    excluded) and its covariance ``sigma`` (module docstring). ``m``: the grid of Mbar (relative magnitudes,
    default 0.5, 1, 1.5, 2) or M (smoothness, default R's data-driven grid). ``l_vec`` default: the first
    post period (R's default)."""
    check_alpha(alpha)
    if restriction not in RESTRICTIONS:
        raise ValueError(f"restriction must be one of {list(RESTRICTIONS)}, got {restriction!r}.")
    beta, sig = np.asarray(betahat, dtype=float).ravel(), np.asarray(sigma, dtype=float)
    _check_inputs(beta, sig, int(n_pre), int(n_post))
    times = list(event_times) if event_times is not None else list(range(-n_pre - 1, -1)) + list(range(n_post))
    post_times = times[n_pre:]
    vec = _target(l_vec, post_times[0], post_times)  # default: the first post period, as R
    grid = _DEFAULT_M[restriction] if m is None else tuple(float(x) for x in m)
    if grid is not None and (len(grid) == 0 or min(grid) < 0):
        raise ValueError(f"m must be a non-empty list of non-negative values, got {list(grid)}.")
    sens = _engine()
    se = float(np.sqrt(vec @ sig[n_pre:, n_pre:] @ vec))
    if restriction == "relative_magnitude":
        raw = sens.create_sensitivity_results_rm(beta, sig, n_pre, n_post, m_bar_vec=np.asarray(grid), l_vec=vec,
                                                 alpha=alpha, grid_points=grid_points, grid_lb=-20 * se,
                                                 grid_ub=20 * se)
        col, method = "Mbar", "C-LF"
    else:
        raw = sens.create_sensitivity_results_sm(beta, sig, n_pre, n_post, m_vec=None if grid is None
                                                 else np.asarray(grid), l_vec=vec, alpha=alpha, method="FLCI")
        col, method = "m", "FLCI"
    frame = raw.to_pandas()
    bounds = pd.DataFrame({"m": frame[col].astype(float), "ci_low": frame["lb"].astype(float),
                           "ci_high": frame["ub"].astype(float)})
    orig = sens.construct_original_cs(beta, sig, n_pre, n_post, l_vec=vec, alpha=alpha)
    return HonestResult(restriction, method, bounds, (float(orig.lb), float(orig.ub)),
                        float(vec @ beta[n_pre:]), se, vec, [int(t) for t in times], int(n_pre), int(n_post),
                        alpha, outcome, grid_points, raw)


def event_study_inputs(result: DidResult, window: tuple[int, int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """(beta, V, event_times, n_pre) of a DiD event study, reference period removed: beta_e the event-time
    aggregation (R ``aggte(type="dynamic")``, cohort-share weights), V from its influence functions
    (clustered as the fit). Needs ``base_period="universal"`` and consecutive event times."""
    if not isinstance(result, DidResult):
        raise TypeError(f"honest_did() takes a did() result, got {type(result).__name__}; for another event "
                        "study pass its coefficients and covariance to honest_bounds().")
    if result.settings["base_period"] != "universal":
        raise ImpactInputError("HonestDiD needs event-study coefficients relative to one reference period: refit "
                               "did(..., base_period='universal') (as R's honest_did requires).")
    es = result.event_study
    ref = es.loc[es["is_reference"], "event_time"]
    ref_e = int(ref.iloc[0]) if len(ref) else -1 - int(result.settings["anticipation"])
    cells = result._cells(post=True) + result._cells(post=False)
    times = sorted({int(t - g) for g, t in cells} - {ref_e})
    if window is not None:
        times = [e for e in times if window[0] <= e <= window[1]]
    full = list(range(min(times), max(times) + 1)) if times else []
    if sorted(set(full) - {ref_e}) != times:
        raise ImpactInputError(f"event times {times} are not consecutive around the reference period {ref_e}; "
                               "HonestDiD needs consecutive periods: narrow them with window=(lo, hi).")
    betas, psis = [], []
    for e in times:
        theta, psi = result._agg(sorted(c for c in cells if int(c[1] - c[0]) == e))
        betas.append(theta)
        psis.append(psi)
    v = _vcov_from_psi(np.column_stack(psis), result._design)
    return np.asarray(betas), v, times, sum(1 for e in times if e < ref_e)


def honest_did(result: DidResult, *, restriction: str = "relative_magnitude", m: Sequence[float] | None = None,
               event_time: int = 0, l_vec: Sequence[float] | None = None, window: tuple[int, int] | None = None,
               alpha: float | None = None, grid_points: int = 1000) -> HonestResult:
    """HonestDiD robust CIs for the event study of a :func:`did` fit (module docstring).

    ``event_time``: the post period whose effect is the target (R's ``e``, default 0 = on impact), or
    ``l_vec`` weights over all post periods (e.g. equal weights for the average effect). ``window=(lo, hi)``
    keeps event times lo..hi (R's ``min_e``/``max_e``). ``alpha`` defaults to the fit's.
    """
    beta, v, times, n_pre = event_study_inputs(result, window)
    n_post = len(times) - n_pre
    post = times[n_pre:]
    vec = _target(l_vec, event_time, post)
    return honest_bounds(beta, v, n_pre, n_post, restriction=restriction, m=m, l_vec=vec,
                         alpha=result.alpha if alpha is None else alpha, grid_points=grid_points,
                         event_times=times, outcome=result.outcome)
