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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._checks import ImpactInputError, require_columns
from .did import did
from .results import DidResult, Estimate, WaldTest, _aggregate_psi, _Design, _vcov_from_psi, normal_inference

__all__ = ["SurvivalResult", "survival_did"]


@dataclass
class SurvivalResult(DidResult):
    """Survival effects; same surface as :class:`DidResult` (overall, att_gt, event_study, ...)."""

    cells: dict[tuple[int, int], float] | None = None
    influence: dict[tuple[int, int], dict[str, np.ndarray]] | None = None
    cell_counts: dict[tuple[int, int], tuple[int, int]] | None = None

    def _post(self) -> list[tuple[int, int]]:
        assert self.cells is not None
        return sorted(self.cells)

    def _agg(self, keep: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
        assert self.cells is not None and self.influence is not None
        return _aggregate_psi(keep, np.array([self.cells[c] for c in keep]), self.influence, self._design)

    def _se(self, psi: np.ndarray) -> float:
        return float(np.sqrt(_vcov_from_psi(psi[:, None], self._design)[0, 0]))

    @property
    def overall(self) -> Estimate:
        if "overall" not in self._cache:
            theta, psi = self._agg(self._post())
            self._cache["overall"] = normal_inference(theta, self._se(psi), self.alpha)
        return self._cache["overall"]

    @property
    def att_gt(self) -> pd.DataFrame:
        rows = []
        for (g, t) in self._post():
            _, psi = self._agg([(g, t)])
            e = normal_inference(self.cells[(g, t)], self._se(psi), self.alpha)  # type: ignore[index]
            nt, nc = self.cell_counts[(g, t)]  # type: ignore[index]
            rows.append({"cohort": g, "time": t, "event_time": t - g, "period": "post", "att": e.att, "se": e.se,
                         "ci_low": e.ci_low, "ci_high": e.ci_high, "pvalue": e.pvalue, "n_treated": nt,
                         "n_control": nc, "is_reference": False})
        return pd.DataFrame(rows)

    def _by(self, key: Any) -> list[tuple[Any, float, np.ndarray, int]]:
        out = []
        for lv in sorted({key(c) for c in self._post()}):
            keep = [c for c in self._post() if key(c) == lv]
            theta, psi = self._agg(keep)
            out.append((lv, theta, psi, len({c[0] for c in keep})))
        return out

    @property
    def event_study(self) -> pd.DataFrame:
        if "event_study" not in self._cache:
            by = self._by(lambda c: c[1] - c[0])
            rows = []
            for e, theta, psi, k in by:
                est = normal_inference(theta, self._se(psi), self.alpha)
                rows.append({"event_time": int(e), "att": est.att, "se": est.se, "ci_low": est.ci_low,
                             "ci_high": est.ci_high, "pvalue": est.pvalue, "n_cohorts": k})
            out = pd.DataFrame(rows)
            psis = np.column_stack([p for _, _, p, _ in by])
            crit = self._uniform_crit(_vcov_from_psi(psis, self._design))
            out["band_low"] = out["att"] - crit * out["se"]
            out["band_high"] = out["att"] + crit * out["se"]
            out["period"] = "post"
            out["is_reference"] = False
            out.attrs["uniform_crit"] = crit
            out.attrs["band_method"] = "sup-t from the analytical covariance (simulated)"
            self._cache["event_study"] = out
        return self._cache["event_study"].copy()

    @property
    def pretrend(self) -> WaldTest:
        return WaldTest(np.nan, 0, np.nan, 0, "not applicable: supported firms are alive before support by construction")

    def aggregate(self, kind: str = "dynamic") -> pd.DataFrame:
        kind = {"event_study": "dynamic", "event": "dynamic", "cohort": "group", "time": "calendar"}.get(kind, kind)
        if kind == "simple":
            d = {k: v for k, v in self.overall.to_dict().items() if k != "alpha"}
            df = pd.DataFrame([{"level": "overall", **d}])
        elif kind == "dynamic":
            df = self.event_study.rename(columns={"event_time": "level"})
        elif kind in ("group", "calendar"):
            key = (lambda c: c[0]) if kind == "group" else (lambda c: c[1])
            rows, psis = [], []
            for lv, theta, psi, k in self._by(key):
                if kind == "group":  # R: theta(g) = mean over its post cells (equal weights)
                    keep = [c for c in self._post() if c[0] == lv]
                    theta = float(np.mean([self.cells[c] for c in keep]))  # type: ignore[index]
                    _, psi = self._agg(keep)  # same cohort -> same weights -> equal-weight mean
                psis.append(psi)
                e = normal_inference(theta, self._se(psi), self.alpha)
                rows.append({"level": int(lv), **{a: b for a, b in e.to_dict().items() if a != "alpha"}})
            if kind == "calendar" and rows:
                theta = float(np.mean([r["att"] for r in rows]))
                e = normal_inference(theta, self._se(np.mean(np.vstack(psis), axis=0)), self.alpha)
                rows.append({"level": "overall", **{a: b for a, b in e.to_dict().items() if a != "alpha"}})
            df = pd.DataFrame(rows)
        else:
            raise ValueError(f"aggregate(): kind must be 'simple', 'group', 'dynamic' or 'calendar', got {kind!r}")
        df.insert(0, "aggregation", kind)
        return df

    def choices_text(self) -> list[str]:
        lines = super().choices_text()
        lines[0] = ("Estimator: survival ATT per cohort on firms alive in the year before support (Callaway-Sant'Anna "
                    "cells via diff-diff, combined by firm-level influence functions)")
        return lines

    def __repr__(self) -> str:
        o = self.overall
        return f"SurvivalResult(att={o.att:.4g}, se={o.se:.4g})"


def _cov_frame(frame: pd.DataFrame, g: int, covariates: Sequence[str], time: str) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for c in covariates:
        if c.startswith("age_at_support"):
            age = (g - pd.to_numeric(frame["birth_year"])).astype(float)
            out[c] = age if c == "age_at_support" else (age <= int(c.rsplit("_le", 1)[1])).astype(float)
        else:
            out[c] = pd.to_numeric(frame[c].astype("Float64") if frame[c].dtype == "boolean" else frame[c]).astype(float)
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
    need = [alive, y_col, unit, time, first_treated, *[c for c in covariates if not c.startswith("age_at_support")]]
    if any(c.startswith("age_at_support") for c in covariates) or age_range is not None:
        need.append("birth_year")
    require_columns(frame, need, "survival_did()")
    a = pd.to_numeric(frame[alive]).to_numpy(dtype=float, na_value=np.nan)
    ok = np.isnan(a) | np.isin(a, (0.0, 1.0))
    if not ok.all():
        raise ImpactInputError(f"{alive!r} must be 0/1 (or missing for gaps).")
    t = pd.to_numeric(frame[time]).to_numpy()
    gser = pd.to_numeric(frame[first_treated]).astype("Float64")
    t_max = int(t.max())
    cohorts = sorted(int(x) for x in gser.dropna().unique())
    if not cohorts:
        raise ImpactInputError("no supported firms: nothing to estimate.")
    never = gser.isna().to_numpy()
    firm_ids = frame[unit].to_numpy()
    uid, ucode = np.unique(firm_ids.astype(str), return_inverse=True)
    g_unit = np.zeros(len(uid))
    gv = gser.fillna(0).to_numpy(dtype=float)
    g_unit[ucode] = gv
    clus_unit = None
    if cluster:
        cc = pd.factorize(frame[cluster])[0]
        clus_unit = np.zeros(len(uid), dtype=np.int64)
        clus_unit[ucode] = cc

    cells: dict[tuple[int, int], float] = {}
    infl: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    used = np.zeros(len(uid), dtype=bool)
    notes: list[str] = []
    t_min = int(t.min())
    for g in cohorts:
        b = g - 1  # base period: the year before support starts
        if b < t_min:
            notes.append(f"cohort {g}: no year before support in the panel; not estimable for survival.")
            continue
        alive_u = np.zeros(len(uid), dtype=bool)
        alive_u[ucode[(t == b) & (a == 1)]] = True
        coh = (gv == g)
        n_dead = len(np.unique(ucode[coh & ~alive_u[ucode]]))
        if n_dead:
            notes.append(f"cohort {g}: {n_dead} selected firm(s) not alive in {b} are outside the survival "
                         "comparison (as in the estimand: firms alive in the base year).")
        sel = alive_u[ucode] & (coh | never) & (t >= b)
        if age_range is not None:
            age = g - pd.to_numeric(frame["birth_year"]).to_numpy(dtype=float, na_value=np.nan)
            sel &= (age >= age_range[0]) & (age <= age_range[1])
        sub = frame.loc[sel, list(dict.fromkeys([unit, time, y_col, *([cluster] if cluster else [])]))].copy()
        sub["_ft"] = pd.array(np.where(coh[sel], g, np.nan), dtype="Float64").round().astype("Int64")
        for c, v in _cov_frame(frame.loc[sel], g, covariates, time).items():
            sub[c] = v.to_numpy()
        used[ucode[sel]] = True
        if g > t_max:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = did(sub, y_col, unit=unit, time=time, first_treated="_ft", control="never_treated",
                    covariates=[c for c in covariates] or None, method=method if covariates else "dr",
                    cluster=cluster, alpha=alpha, seed=seed)
        kit = r.raw._aggregation_kit
        sub_units = np.asarray(kit.bookkeeping["all_units"]).astype(np.int64)
        # did() codes units by pd.factorize order of the sub-frame's unit column
        sub_codes, sub_uniques = pd.factorize(sub[unit])
        glob = np.searchsorted(uid, np.asarray(sub_uniques).astype(str))[sub_units]
        for (gg, tt), d in r.raw.group_time_effects.items():
            if tt < gg or d.get("is_reference", False) or not np.isfinite(d["effect"]):
                continue
            info = kit.influence[(gg, tt)]
            cells[(g, int(tt))] = float(d["effect"])
            infl[(g, int(tt))] = {"treated_idx": glob[info["treated_idx"]], "control_idx": glob[info["control_idx"]],
                                  "treated_inf": np.asarray(info["treated_inf"]),
                                  "control_inf": np.asarray(info["control_inf"])}
            counts[(g, int(tt))] = (int(d.get("n_treated", 0)), int(d.get("n_control", 0)))
    # restrict the design to firms used in some cohort sample, keeping index alignment
    keep = np.flatnonzero(used)
    remap = -np.ones(len(uid), dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    for c, info in infl.items():
        info["treated_idx"] = remap[info["treated_idx"]]
        info["control_idx"] = remap[info["control_idx"]]
    design = _Design(cohort=g_unit[keep], survey_w=None,
                     cluster=None if clus_unit is None else pd.factorize(clus_unit[keep])[0].astype(np.int64),
                     n_units=len(keep))
    n_tr = int((g_unit[keep] > 0).sum())
    counts_all = {"n_obs": int(sum(np.isfinite(a))), "n_units": int(len(keep)), "n_treated": n_tr,
                  "n_never_treated": int(len(keep) - n_tr), "n_cohorts": len(cohorts),
                  "n_periods": int(len(np.unique(t))), "first_period": int(t.min()), "last_period": t_max,
                  "n_clusters": int(design.cluster.max() + 1) if design.cluster is not None else int(len(keep))}
    notes.append("Survival is compared among firms alive in the year before each cohort's support starts; "
                 "no pre-trend test is possible for this outcome.")
    choices = {"unit": unit, "time": time, "first_treated": first_treated, "treatment": None,
               "control": "never_treated", "covariates": covariates, "method": method if covariates else "dr",
               "anticipation": 0, "base_period": "year before support, g - 1 (per cohort)", "cluster": cluster, "weight": None,
               "alpha": alpha, "n_bootstrap": 0, "seed": seed, "engine": "msme_eval.impact.survival_did",
               "engine_version": __import__("diff_diff").__version__}
    return SurvivalResult(outcome=y_col, choices=choices, counts=counts_all, notes=notes, raw=None, _design=design,
                          cells=cells, influence=infl, cell_counts=counts)
