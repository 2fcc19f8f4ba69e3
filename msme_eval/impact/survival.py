"""Effect of support on firm survival: :func:`survival_did` -> :class:`SurvivalResult`.

Why not plain :func:`did` on an ``alive`` indicator: a firm can only be supported while it is
alive, so supported firms are, by construction, alive in their first support year g, while
comparison firms may already have exited. A DiD on the firm-year alive indicator then (i) finds
a mechanical "pre-trend" (supported firms never exit before g) and (ii) mixes firms that exited
before the base period (change 0) into the comparison mean. The estimand that matches the
OECD "track survivors and non-survivors" advice is, for cohort g and year t >= g,

    ATT_surv(g, t) = P(alive_t | supported in g) - P(alive_t without support | supported in g),

estimated here per cohort on the firms alive in the base year g - 1: cohort-g firms versus
never-supported firms alive in g - 1, outcome ``alive`` in years g-1..T. Each
ATT(g, t) is a Callaway-Sant'Anna cell computed by :func:`did` (doubly robust when covariates
are given: exit hazards differ by size, age, registration and sector, so survival comparisons
need selection on observables - the "unconditional parallel trends" of the growth outcomes do not
carry over).

Cells of different cohorts share comparison firms, so their influence functions are mapped back
to firms and combined: aggregations (simple, by cohort, event time, calendar year, as R
``did::aggte``, with the weight-influence term) and their SEs use
:func:`msme_eval.impact.results._aggregate_psi`, clustered by firm (a firm used as a control
for several cohorts is one cluster) or by ``cluster``. There is no pre-trend test: the sample is
conditioned on being alive in g - 1, so earlier survival is 1 for everyone by construction.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._checks import ImpactInputError, require_columns
from .did import did
from .results import DidResult, Estimate, WaldTest, _Design, _se, _vcov_from_psi, normal_inference

__all__ = ["SurvivalResult", "survival_did"]


@dataclass
class SurvivalResult(DidResult):
    """Survival effects; same surface as :class:`DidResult` (overall, att_gt, event_study, aggregate ...)."""

    cells: dict[tuple[int, int], float] | None = None
    influence: dict[tuple[int, int], dict[str, np.ndarray]] | None = None
    cell_counts: dict[tuple[int, int], tuple[int, int]] | None = None

    @property
    def title(self) -> str:  # type: ignore[override]
        return f"Survival DiD (firms alive before support): {self.outcome}"

    def _cell_effects(self) -> dict[tuple[Any, Any], float]:
        return dict(self.cells or {})

    def _post_cells(self) -> list[tuple[Any, Any]]:
        return sorted(self.cells or {})

    @property
    def _influence(self) -> dict:
        return self.influence or {}

    @property
    def overall(self) -> Estimate:
        if "overall" not in self._cache:
            theta, psi = self._agg(self._post_cells())
            self._cache["overall"] = normal_inference(theta, _se(psi, self._design), self.alpha)
        return self._cache["overall"]

    @property
    def att_gt(self) -> pd.DataFrame:
        rows = []
        for (g, t) in self._post_cells():
            _, psi = self._agg([(g, t)])
            e = normal_inference(self._cell_effects()[(g, t)], _se(psi, self._design), self.alpha)
            nt, nc = self.cell_counts[(g, t)]  # type: ignore[index]
            rows.append({"cohort": g, "time": t, "event_time": t - g, "period": "post", **e.to_dict(),
                         "n_treated": nt, "n_control": nc, "is_reference": False})
        return pd.DataFrame(rows)

    @property
    def event_study(self) -> pd.DataFrame:
        if "event_study" not in self._cache:
            post = self._post_cells()
            rows, psis = [], {}
            for i, e in enumerate(sorted({c[1] - c[0] for c in post})):
                keep = [c for c in post if c[1] - c[0] == e]
                theta, psis[i] = self._agg(keep)
                est = normal_inference(theta, _se(psis[i], self._design), self.alpha)
                rows.append({"event_time": int(e), **est.to_dict(), "n_cohorts": len(keep)})
            out = pd.DataFrame(rows)
            crit = self._uniform_crit(_vcov_from_psi(np.column_stack([psis[i] for i in sorted(psis)]),
                                                     self._design))
            out["band_low"] = out["estimate"] - crit * out["se"]
            out["band_high"] = out["estimate"] + crit * out["se"]
            out["period"] = "post"
            out["is_reference"] = False
            out.attrs["uniform_crit"] = crit
            out.attrs["band_method"] = "sup-t from the analytical covariance (simulated)"
            self._cache["dynamic_overall"] = self._dynamic_overall(out, psis)
            self._cache["event_study"] = out
        return self._cache["event_study"].copy()

    @property
    def pretrend(self) -> WaldTest:
        return WaldTest(np.nan, 0, np.nan, 0,
                        "not applicable: supported firms are alive before support by construction")

    def choices_text(self) -> list[str]:
        lines = super().choices_text()
        lines[0] = ("Estimator: survival ATT per cohort on firms alive in the year before support (Callaway-Sant'Anna "
                    "cells via diff-diff, combined by firm-level influence functions)")
        return lines


def _cov_frame(frame: pd.DataFrame, g: int, covariates: Sequence[str], time: str) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for c in covariates:
        if c.startswith("age_at_support"):
            age = (g - pd.to_numeric(frame["birth_year"])).astype(float)
            out[c] = age if c == "age_at_support" else (age <= int(c.rsplit("_le", 1)[1])).astype(float)
        else:
            col = frame[c].astype("Float64") if frame[c].dtype == "boolean" else frame[c]
            out[c] = pd.to_numeric(col).astype(float)
    return out


def survival_did(
    frame: pd.DataFrame,
    *,
    alive: str = "alive",
    unit: str = "firm_id",
    time: str = "year",
    first_treated: str = "first_treated",
    covariates: Sequence[str] | None = None,
    method: str = "dr",
    cluster: str | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    age_range: tuple[float, float] | None = None,
    outcome: str | None = None,
) -> SurvivalResult:
    """Survival effect of support (see module docstring). ``frame`` is a firm x year grid with an
    ``alive`` 0/1 column (e.g. from :func:`msme_eval.impact.build_outcomes`), ``first_treated``
    constant within firm, and time-invariant ``covariates``. ``"age_at_support"`` (years since
    birth in the cohort year g) and ``"age_at_support_leK"`` (indicator age <= K) are computed per
    cohort from ``birth_year``. ``age_range=(lo, hi)`` keeps, per cohort, only firms aged lo..hi
    in year g (a subgroup defined at support, e.g. young firms). ``outcome``: estimate the effect
    on another column (e.g. ``"jobs"`` = employees with 0 after exit, net jobs) on the same
    sample of firms alive in g - 1 (default: ``alive`` itself)."""
    covariates = list(covariates or [])
    y_col = outcome or alive
    a, t, gser = _checked_inputs(frame, alive, y_col, unit, time, first_treated, covariates, age_range)
    cohorts = sorted(int(x) for x in gser.dropna().unique())
    uid, ucode = np.unique(frame[unit].to_numpy().astype(str), return_inverse=True)
    gv = gser.fillna(0).to_numpy(dtype=float)
    g_unit = np.zeros(len(uid))
    g_unit[ucode] = gv
    acc = _Cells(used=np.zeros(len(uid), dtype=bool))
    for g in cohorts:
        sub = _cohort_sample(frame, g, a, t, gv, ucode, acc, unit=unit, time=time, y_col=y_col,
                             cluster=cluster, covariates=covariates, age_range=age_range)
        if sub is None or g > int(t.max()):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = did(sub, y_col, unit=unit, time=time, first_treated="_ft", control="never_treated",
                    covariates=covariates or None, method=method if covariates else "dr",
                    cluster=cluster, alpha=alpha, seed=seed)
        _collect_cells(r, sub[unit], uid, g, acc)
    design = _restrict_design(frame, cluster, ucode, g_unit, acc)
    keep = np.flatnonzero(acc.used)
    n_tr = int((g_unit[keep] > 0).sum())
    counts_all = {"n_obs": int(sum(np.isfinite(a))), "n_units": int(len(keep)), "n_treated": n_tr,
                  "n_never_treated": int(len(keep) - n_tr), "n_cohorts": len(cohorts),
                  "n_periods": int(len(np.unique(t))), "first_period": int(t.min()), "last_period": int(t.max()),
                  "n_clusters": int(design.cluster.max() + 1) if design.cluster is not None else int(len(keep))}
    acc.notes.append("Survival is compared among firms alive in the year before each cohort's support starts; "
                     "no pre-trend test is possible for this outcome.")
    settings = {"unit": unit, "time": time, "first_treated": first_treated, "treatment": None,
                "control": "never_treated", "covariates": covariates, "method": method if covariates else "dr",
                "anticipation": 0, "base_period": "year before support, g - 1 (per cohort)", "cluster": cluster,
                "weight": None, "alpha": alpha, "n_bootstrap": 0, "seed": seed,
                "engine": "msme_eval.impact.survival_did", "engine_version": __import__("diff_diff").__version__}
    return SurvivalResult(outcome=y_col, settings=settings, counts=counts_all, notes=acc.notes, raw=None,
                          _design=design, cells=acc.cells, influence=acc.infl, cell_counts=acc.counts)


@dataclass
class _Cells:
    """Survival cells collected over cohorts: effect, influence (global firm index), counts."""

    used: np.ndarray
    cells: dict[tuple[int, int], float] = field(default_factory=dict)
    infl: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    counts: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _checked_inputs(frame: pd.DataFrame, alive: str, y_col: str, unit: str, time: str, first_treated: str,
                    covariates: list[str], age_range: Any) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Required columns present, ``alive`` 0/1/missing, at least one supported firm."""
    need = [alive, y_col, unit, time, first_treated, *[c for c in covariates if not c.startswith("age_at_support")]]
    if any(c.startswith("age_at_support") for c in covariates) or age_range is not None:
        need.append("birth_year")
    require_columns(frame, need, "survival_did()")
    a = pd.to_numeric(frame[alive]).to_numpy(dtype=float, na_value=np.nan)
    if not (np.isnan(a) | np.isin(a, (0.0, 1.0))).all():
        raise ImpactInputError(f"{alive!r} must be 0/1 (or missing for gaps).")
    gser = pd.to_numeric(frame[first_treated]).astype("Float64")
    gser = gser.where(gser != 0)  # 0 = never treated (R, Stata, diff-diff convention)
    if gser.dropna().empty:
        raise ImpactInputError("no supported firms: nothing to estimate.")
    return a, pd.to_numeric(frame[time]).to_numpy(), gser


def _cohort_sample(frame: pd.DataFrame, g: int, a: np.ndarray, t: np.ndarray, gv: np.ndarray, ucode: np.ndarray,
                   acc: _Cells, *, unit: str, time: str, y_col: str, cluster: str | None, covariates: list[str],
                   age_range: Any) -> pd.DataFrame | None:
    """Cohort g and never-supported firms alive in g - 1, years g - 1 onwards (None: no base year)."""
    b = g - 1  # base period: the year before support starts
    if b < int(t.min()):
        acc.notes.append(f"cohort {g}: no year before support in the panel; not estimable for survival.")
        return None
    alive_u = np.zeros(len(acc.used), dtype=bool)
    alive_u[ucode[(t == b) & (a == 1)]] = True
    coh = gv == g
    n_dead = len(np.unique(ucode[coh & ~alive_u[ucode]]))
    if n_dead:
        acc.notes.append(f"cohort {g}: {n_dead} selected firm(s) not alive in {b} are outside the survival "
                         "comparison (as in the estimand: firms alive in the base year).")
    sel = alive_u[ucode] & (coh | (gv == 0)) & (t >= b)
    if age_range is not None:
        age = g - pd.to_numeric(frame["birth_year"]).to_numpy(dtype=float, na_value=np.nan)
        sel &= (age >= age_range[0]) & (age <= age_range[1])
    sub = frame.loc[sel, list(dict.fromkeys([unit, time, y_col, *([cluster] if cluster else [])]))].copy()
    sub["_ft"] = pd.array(np.where(coh[sel], g, np.nan), dtype="Float64").round().astype("Int64")
    for c, v in _cov_frame(frame.loc[sel], g, covariates, time).items():
        sub[c] = v.to_numpy()
    acc.used[ucode[sel]] = True
    return sub


def _collect_cells(r: DidResult, sub_unit: pd.Series, uid: np.ndarray, g: int, acc: _Cells) -> None:
    """Post cells of a cohort fit, with influence indices mapped to the global firm index."""
    kit = r.raw._aggregation_kit
    sub_units = np.asarray(kit.bookkeeping["all_units"]).astype(np.int64)
    # did() codes units by pd.factorize order of the sub-frame's unit column
    glob = np.searchsorted(uid, np.asarray(pd.factorize(sub_unit)[1]).astype(str))[sub_units]
    for (gg, tt), d in r.raw.group_time_effects.items():
        if tt < gg or d.get("is_reference", False) or not np.isfinite(d["effect"]):
            continue
        info = kit.influence[(gg, tt)]
        acc.cells[(g, int(tt))] = float(d["effect"])
        acc.infl[(g, int(tt))] = {"treated_idx": glob[info["treated_idx"]], "control_idx": glob[info["control_idx"]],
                                  "treated_inf": np.asarray(info["treated_inf"]),
                                  "control_inf": np.asarray(info["control_inf"])}
        acc.counts[(g, int(tt))] = (int(d.get("n_treated", 0)), int(d.get("n_control", 0)))


def _restrict_design(frame: pd.DataFrame, cluster: str | None, ucode: np.ndarray, g_unit: np.ndarray,
                     acc: _Cells) -> _Design:
    """Design over the firms used in some cohort sample; influence indices remapped to it."""
    keep = np.flatnonzero(acc.used)
    remap = -np.ones(len(acc.used), dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    for info in acc.infl.values():
        info["treated_idx"] = remap[info["treated_idx"]]
        info["control_idx"] = remap[info["control_idx"]]
    clus = None
    if cluster:
        clus_unit = np.zeros(len(acc.used), dtype=np.int64)
        clus_unit[ucode] = pd.factorize(frame[cluster])[0]
        clus = pd.factorize(clus_unit[keep])[0].astype(np.int64)
    return _Design(cohort=g_unit[keep], survey_w=None, cluster=clus, n_units=len(keep))
