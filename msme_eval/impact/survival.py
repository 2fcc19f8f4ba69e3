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

Survey weights (``weight``, population ATT). With a firm-constant weight w_i (inverse inclusion
probability) each cell is the weighted (Hajek) DiD on cohort g's sample,

    ATT_w(g, t) = sum_{i in g} w_i dY_i / sum_{i in g} w_i - sum_{i in C} w_i dY_i / sum_{i in C} w_i,

dY_i = Y_it - Y_i,g-1, C the comparison firms alive in g - 1 (with covariates: R DRDID's weighted
doubly robust cell), with influence function w_i (dY_i - mean_w) / sum w over each group. The
aggregations weight cohort g by its population size among the firms used, p_g = sum_{i in g} w_i /
sum_i w_i (Callaway and Sant'Anna 2021, J. Econometrics 225(2), section 4; R ``did::att_gt`` /
``aggte`` with ``weightsname``), and the WIF of p_g carries w_i (see
:mod:`msme_eval.impact.results`). SEs are clustered as without weights (by firm or ``cluster``);
the firms counted are the same, each standing for w_i firms of the population. The register
check stays unweighted: it tests the register itself, not the population.

Selected, not paid (intention to treat). The estimand is about SELECTED firms: cohort g = the
year a firm was selected (``selected``, e.g. the register's ``selected_year``), so a selected firm
that closes before it is paid counts as a selected firm that did not survive. Without
``selected`` the cohort is ``first_treated``, which is right only if that column lists every
selected firm under its scheduled year. A register of RECIPIENTS only is alive when paid by
construction, which biases survival and net jobs upward. :func:`register_check` tests that
pattern: among cohort firms alive in g - 1, D = number not alive in g (the cohort year). If the
cohort exited at the comparison firms' rate h_g, D ~ sum_g Binomial(n_g, h_g); the register
"looks like recipients only" when D = 0, P(D = 0) = prod_g (1 - h_g)^{n_g} < alpha, and the
event-time-0 survival effect is > 0 with one-sided p < alpha (a programme cannot make exit in its
first year impossible). The result then carries ``register_check["recipients_only"] = True`` and
a warning in ``notes()``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ._checks import ImpactInputError, _show, firm_weights, require_columns
from .did import did
from .results import DidResult, Estimate, WaldTest, _Design, _se, _vcov_from_psi, normal_inference

__all__ = ["SurvivalResult", "survival_did", "register_check"]

ESTIMAND = "sample ATT on selected firms alive in the year before their cohort year (g - 1), intention to treat"


@dataclass
class SurvivalResult(DidResult):
    """Survival effects; same surface as :class:`DidResult` (overall, att_gt, event_study, aggregate ...)."""

    cells: dict[tuple[int, int], float] | None = None
    influence: dict[tuple[int, int], dict[str, np.ndarray]] | None = None
    cell_counts: dict[tuple[int, int], tuple[int, int]] | None = None
    register: dict[str, Any] = field(default_factory=dict)

    @property
    def register_check(self) -> dict[str, Any]:
        """The recipients-only check (module docstring): exits in the cohort year, their p-value
        under the comparison hazard, the event-time-0 effect and the flag ``recipients_only``."""
        return dict(self.register)

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
        cohort = self.settings.get("cohort")
        if cohort:
            lines.insert(1, f"Cohort: {cohort}")
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
    selected: str | None = None,
    weight: str | None = None,
) -> SurvivalResult:
    """Survival effect of support (see module docstring). ``frame`` is a firm x year grid with an
    ``alive`` 0/1 column (e.g. from :func:`msme_eval.impact.build_outcomes`), ``first_treated``
    constant within firm, and time-invariant ``covariates``. ``"age_at_support"`` (years since
    birth in the cohort year g) and ``"age_at_support_leK"`` (indicator age <= K) are computed per
    cohort from ``birth_year``. ``age_range=(lo, hi)`` keeps, per cohort, only firms aged lo..hi
    in year g (a subgroup defined at support, e.g. young firms). ``outcome``: estimate the effect
    on another column (e.g. ``"jobs"`` = employees with 0 after exit, net jobs) on the same
    sample of firms alive in g - 1 (default: ``alive`` itself). ``selected``: column with the year
    each firm was selected (intention-to-treat cohort; see the module docstring); firms with
    neither ``selected`` nor ``first_treated`` are the comparison firms.

    ``weight``: a firm-constant survey weight w_i (e.g. the inverse inclusion probability) for the
    POPULATION ATT (module docstring, "Survey weights"); without it the sample ATT."""
    covariates = list(covariates or [])
    y_col = outcome or alive
    a, t, gser = _checked_inputs(frame, alive, y_col, unit, time, first_treated, covariates, age_range, selected)
    cohorts = sorted(int(x) for x in gser.dropna().unique())
    uid, ucode = np.unique(frame[unit].to_numpy().astype(str), return_inverse=True)
    w_unit = _firm_weights(frame, weight, unit, ucode, len(uid))
    gv = gser.fillna(0).to_numpy(dtype=float)
    g_unit = np.zeros(len(uid))
    g_unit[ucode] = gv
    acc = _Cells(used=np.zeros(len(uid), dtype=bool))
    for g in cohorts:
        sub = _cohort_sample(frame, g, a, t, gv, ucode, acc, unit=unit, time=time, y_col=y_col,
                             cluster=cluster, covariates=covariates, age_range=age_range, weight=weight)
        if sub is None or g > int(t.max()):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diff-diff says it rescales the weights to mean 1 (ratios unchanged)
            r = did(sub, y_col, unit=unit, time=time, first_treated="_ft", control="never_treated",
                    covariates=covariates or None, method=method if covariates else "dr",
                    cluster=cluster, weight=weight, alpha=alpha, seed=seed)
        _collect_cells(r, sub[unit], uid, g, acc)
    design = _restrict_design(frame, cluster, ucode, g_unit, acc, w_unit)
    check = register_check(a, t, gv, ucode, cohorts, alpha)
    keep = np.flatnonzero(acc.used)
    n_tr = int((g_unit[keep] > 0).sum())
    counts_all = {"n_obs": int(sum(np.isfinite(a))), "n_units": int(len(keep)), "n_treated": n_tr,
                  "n_never_treated": int(len(keep) - n_tr), "n_cohorts": len(cohorts),
                  "n_periods": int(len(np.unique(t))), "first_period": int(t.min()), "last_period": int(t.max()),
                  "n_clusters": int(design.cluster.max() + 1) if design.cluster is not None else int(len(keep))}
    if w_unit is not None:
        counts_all["population_treated"] = float(w_unit[keep][g_unit[keep] > 0].sum())
    acc.notes.append("Survival is compared among firms alive in the year before each cohort's support starts; "
                     "no pre-trend test is possible for this outcome.")
    settings = _settings(unit=unit, time=time, first_treated=first_treated, selected=selected, covariates=covariates,
                         method=method, cluster=cluster, weight=weight, alpha=alpha, seed=seed)
    res = SurvivalResult(outcome=y_col, settings=settings, counts=counts_all, notes=acc.notes, raw=None,
                         _design=design, cells=acc.cells, influence=acc.infl, cell_counts=acc.counts)
    _finish_register_check(res, check, alpha, selected, frame, first_treated, ucode, gv, a, t)
    return res


def _settings(*, unit: str, time: str, first_treated: str, selected: str | None, covariates: list[str], method: str,
              cluster: str | None, weight: str | None, alpha: float, seed: int) -> dict[str, Any]:
    """Every estimation choice of :func:`survival_did`, with the estimand and the firms it counts."""
    firms = "selected firms alive in the year before their cohort year (g - 1)"
    return {"unit": unit, "time": time, "first_treated": first_treated, "treatment": None,
            "selected": selected,
            "estimand": (f"population ATT (weighted by {weight}: the {firms} that the sample represents), intention "
                         "to treat" if weight else ESTIMAND),
            "cohort": (f"year selected ({selected}): every selected firm, paid or not (intention to treat)"
                       if selected else f"{first_treated} (must list every selected firm, see register_check)"),
            "firms_counted": firms + (f", each counted with its survey weight {weight} (cohort shares are the "
                                      "weighted cohort sizes)" if weight else ""),
            "control": "never_treated", "covariates": covariates, "method": method if covariates else "dr",
            "anticipation": 0, "base_period": "year before support, g - 1 (per cohort)", "cluster": cluster,
            "weight": weight, "alpha": alpha, "n_bootstrap": 0, "seed": seed,
            "engine": "msme_eval.impact.survival_did", "engine_version": __import__("diff_diff").__version__}


def _firm_weights(frame: pd.DataFrame, weight: str | None, unit: str, ucode: np.ndarray,
                  n_units: int) -> np.ndarray | None:
    """The survey weight of each firm (None without ``weight``; checks: `_checks.firm_weights`)."""
    if weight is None:
        return None
    require_columns(frame, [weight], "survival_did(weight=...)")
    return firm_weights(frame, weight, ucode, n_units, unit)


@dataclass
class _Cells:
    """Survival cells collected over cohorts: effect, influence (global firm index), counts."""

    used: np.ndarray
    cells: dict[tuple[int, int], float] = field(default_factory=dict)
    infl: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    counts: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _checked_inputs(frame: pd.DataFrame, alive: str, y_col: str, unit: str, time: str, first_treated: str,
                    covariates: list[str], age_range: Any,
                    selected: str | None) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Required columns present, ``alive`` 0/1/missing, at least one supported firm; the cohort per
    row (``selected`` when given, else ``first_treated``; NaN = comparison firm)."""
    need = [alive, y_col, unit, time, first_treated, *([selected] if selected else []),
            *[c for c in covariates if not c.startswith("age_at_support")]]
    if any(c.startswith("age_at_support") for c in covariates) or age_range is not None:
        need.append("birth_year")
    require_columns(frame, need, "survival_did()")
    a = pd.to_numeric(frame[alive]).to_numpy(dtype=float, na_value=np.nan)
    if not (np.isnan(a) | np.isin(a, (0.0, 1.0))).all():
        raise ImpactInputError(f"{alive!r} must be 0/1 (or missing for gaps).")
    gser = pd.to_numeric(frame[first_treated]).astype("Float64")
    gser = gser.where(gser != 0)  # 0 = never treated (R, Stata, diff-diff convention)
    if selected:
        gser = _selected_cohort(frame, selected, first_treated, unit, gser)
    if gser.dropna().empty:
        raise ImpactInputError("no supported firms: nothing to estimate.")
    return a, pd.to_numeric(frame[time]).to_numpy(), gser


def _selected_cohort(frame: pd.DataFrame, selected: str, first_treated: str, unit: str,
                     paid: pd.Series) -> pd.Series:
    """Cohort = year selected; refuse a paid firm without a selection year or selected after payment."""
    sel = pd.to_numeric(frame[selected]).astype("Float64")
    sel = sel.where(sel != 0)
    bad = paid.notna() & sel.isna()
    if bad.any():
        ids = pd.unique(frame.loc[bad.to_numpy(), unit])
        raise ImpactInputError(
            f"{len(ids)} firm(s) have {first_treated!r} but no {selected!r} ({unit} = {_show(ids)}). Fix: give "
            f"every supported firm the year it was selected in {selected!r}.")
    late = (sel > paid).fillna(False)
    if late.any():
        ids = pd.unique(frame.loc[late.to_numpy(), unit])
        raise ImpactInputError(
            f"{selected!r} is after {first_treated!r} for {len(ids)} firm(s) ({unit} = {_show(ids)}): a firm is "
            "selected before it is paid. Fix one of the two columns.")
    if (sel.groupby(frame[unit].to_numpy()).nunique() > 1).any():
        raise ImpactInputError(f"{selected!r} must be one value per firm (the year it was selected).")
    return sel


def _cohort_sample(frame: pd.DataFrame, g: int, a: np.ndarray, t: np.ndarray, gv: np.ndarray, ucode: np.ndarray,
                   acc: _Cells, *, unit: str, time: str, y_col: str, cluster: str | None, covariates: list[str],
                   age_range: Any, weight: str | None = None) -> pd.DataFrame | None:
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
    extra = [c for c in (cluster, weight) if c]
    sub = frame.loc[sel, list(dict.fromkeys([unit, time, y_col, *extra]))].copy()
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
                     acc: _Cells, w_unit: np.ndarray | None = None) -> _Design:
    """Design over the firms used in some cohort sample; influence indices remapped to it; the
    firms' survey weights (cohort masses p_g = sum of weights of cohort g, and the WIF) when given."""
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
    return _Design(cohort=g_unit[keep], survey_w=None if w_unit is None else w_unit[keep], cluster=clus,
                   n_units=len(keep))


def _binomial_sum_cdf(d: int, n: np.ndarray, h: np.ndarray) -> float:
    """P(D <= d) for D = sum_g Binomial(n_g, h_g) (exact, by convolving the pmfs up to d)."""
    pmf = np.zeros(d + 1)
    pmf[0] = 1.0
    for n_g, h_g in zip(n, h):
        part = stats.binom.pmf(np.arange(d + 1), int(n_g), float(h_g))
        pmf = np.convolve(pmf, part)[: d + 1]
    return float(min(1.0, pmf.sum()))


def register_check(a: np.ndarray, t: np.ndarray, gv: np.ndarray, ucode: np.ndarray, cohorts: list[int],
                   alpha: float) -> dict[str, Any]:
    """Exits in the cohort year among cohort firms alive in g - 1, against the comparison hazard.

    Per cohort g: n_g cohort firms alive in g - 1 and observed (0/1) in g, d_g of them not alive in
    g; h_g = exit rate in g of comparison firms (gv = 0) alive in g - 1. Under "the cohort exits at
    the comparison rate" D = sum d_g ~ sum_g Binomial(n_g, h_g); ``pvalue_exits`` = P(D <= d)
    (one-sided: too few exits). A recipients-only register gives d = 0 by construction.
    """
    n_units = int(ucode.max()) + 1 if len(ucode) else 0
    n, d, h = [], [], []
    for g in cohorts:
        alive_b, state_g = np.zeros(n_units, bool), np.full(n_units, np.nan)
        alive_b[ucode[(t == g - 1) & (a == 1)]] = True
        state_g[ucode[t == g]] = a[t == g]
        g_u = np.zeros(n_units)
        g_u[ucode] = gv
        coh = alive_b & (g_u == g) & ~np.isnan(state_g)
        comp = alive_b & (g_u == 0) & ~np.isnan(state_g)
        if coh.sum() == 0 or comp.sum() == 0:
            continue
        n.append(int(coh.sum()))
        d.append(int((state_g[coh] == 0).sum()))
        h.append(float((state_g[comp] == 0).mean()))
    d_tot = int(sum(d))
    p = _binomial_sum_cdf(d_tot, np.array(n), np.array(h)) if n else np.nan
    return {"cohort_firms_alive_before": int(sum(n)), "exits_in_cohort_year": d_tot,
            "expected_exits_at_comparison_rate": float(np.dot(n, h)) if n else np.nan,
            "pvalue_exits": p, "alpha": alpha}


def _finish_register_check(res: SurvivalResult, check: dict[str, Any], alpha: float, selected: str | None,
                           frame: pd.DataFrame, first_treated: str, ucode: np.ndarray, gv: np.ndarray,
                           a: np.ndarray, t: np.ndarray) -> None:
    """Add the event-time-0 effect and exits before payment; set the flag and the warning note."""
    es = res.event_study.set_index("event_time")
    e0 = es.loc[0] if 0 in es.index else None
    att0, se0 = (float(e0["estimate"]), float(e0["se"])) if e0 is not None else (np.nan, np.nan)
    p0 = float(stats.norm.sf(att0 / se0)) if se0 > 0 else np.nan
    check.update({"att_e0": att0, "se_e0": se0, "pvalue_att_e0_positive": p0,
                  "exits_before_payment": _exits_before_payment(frame, first_treated, ucode, gv, a, t)
                  if selected else None})
    flag = bool(check["exits_in_cohort_year"] == 0 and check["pvalue_exits"] < alpha and p0 < alpha)
    check["recipients_only"] = flag
    check["rule"] = ("no cohort firm exits in its cohort year, P(no exit | comparison hazard) < alpha, and the "
                     "event-time-0 survival effect > 0 (one-sided p < alpha)")
    res.register.update(check)
    if flag:
        res.notes.append(
            f"WARNING: the register looks like recipients only: none of the {check['cohort_firms_alive_before']} "
            f"cohort firms exits in its cohort year, where {check['expected_exits_at_comparison_rate']:.1f} exits "
            f"are expected at the comparison firms' rate (p = {check['pvalue_exits']:.2g}), and the survival effect "
            f"in the first year is {att0:+.3f} (SE {se0:.3f}). Firms that closed before they were paid seem to be "
            "missing, which biases survival and net jobs upward. Fix: list every selected firm and give the "
            "selection year in selected_year.")


def _exits_before_payment(frame: pd.DataFrame, first_treated: str, ucode: np.ndarray, gv: np.ndarray,
                          a: np.ndarray, t: np.ndarray) -> int:
    """Selected firms that exit before their first year paid (or are never paid and exit)."""
    n_units = int(ucode.max()) + 1
    paid = np.full(n_units, np.nan)
    paid[ucode] = pd.to_numeric(frame[first_treated]).to_numpy(dtype=float, na_value=np.nan)
    exit_year = np.full(n_units, np.inf)
    dead = a == 0
    np.minimum.at(exit_year, ucode[dead], t[dead].astype(float))
    g_u = np.zeros(n_units)
    g_u[ucode] = gv
    sel = g_u > 0
    before = np.isfinite(exit_year) & (np.isnan(paid) | (exit_year <= paid))
    return int((sel & before).sum())
