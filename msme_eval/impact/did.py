"""Staggered difference-in-differences: :func:`did` (Callaway and Sant'Anna 2021).

The group-time ATT(g,t), their influence functions, the simple/group/dynamic aggregations and the
multiplier bootstrap come from diff-diff (pinned 3.13; its numbers are checked in the tests
against csdid and differences). This module adds what a programme evaluation needs around it:
refusing bad panels clearly (single-unit cohorts, treatment switching off, no valid controls,
non-integer periods, missing ids, all-missing outcome), stating and recording every choice, and
the extra inference in :mod:`msme_eval.impact.results` (calendar aggregation, pre-trend Wald
test, analytical uniform bands).

Reference: Callaway, B. and Sant'Anna, P.H.C. (2021) "Difference-in-Differences with multiple
time periods", Journal of Econometrics 225(2), 200-230.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._checks import (
    ImpactInputError,
    _show,
    as_float,
    check_unique_unit_time,
    check_unit_ids,
    firm_weights,
    integer_time,
    require_columns,
    unit_codes,
    unit_constant,
)
from .drdid import R_TRIM, drdid_panel, independent_columns, std_ipw_panel
from .results import DidResult, _Design, _if_matrix, _se, _vcov_from_psi, normal_inference

__all__ = ["did", "prepare_panel"]

_CONTROLS = ("never_treated", "not_yet_treated")
_METHODS = ("dr", "ipw", "reg")
_BASES = ("varying", "universal")
_PANELS = ("pairwise", "balanced", "rcs")


def _first_treated_from_indicator(
    data: pd.DataFrame, treatment: str, ucode: np.ndarray, n_units: int, t: np.ndarray, unit: str
) -> np.ndarray:
    """Per-row first treated period from a 0/1 indicator; refuse an indicator going 1 -> 0."""
    d = as_float(data, treatment)
    if np.isnan(d).any():
        rows = data.index[np.isnan(d)]
        raise ImpactInputError(f"treatment column {treatment!r} has missing values at rows {_show(rows)}. "
                               "Fix: code every firm-year 0 or 1.")
    if not np.isin(d, (0.0, 1.0)).all():
        raise ImpactInputError(f"treatment column {treatment!r} must be 0/1, got values "
                               f"{_show(np.unique(d[~np.isin(d, (0.0, 1.0))]))}.")
    order = np.lexsort((t, ucode))
    du, dd = ucode[order], d[order]
    same_unit = du[1:] == du[:-1]
    off = same_unit & (dd[1:] < dd[:-1])
    if off.any():
        bad = pd.unique(data[unit].to_numpy()[order[1:][off]])
        raise ImpactInputError(
            f"treatment {treatment!r} switches off (1 then 0) for {len(bad)} unit(s) ({unit} = {_show(bad)}). "
            "This estimator assumes support, once started, stays 'on' (staggered adoption). Fix: code "
            "first_treated as the first year of support and analyse exit/cessation separately."
        )
    g = np.full(n_units, np.inf)
    np.minimum.at(g, ucode[d == 1], t[d == 1].astype(float))
    return g[ucode]


def _checked_outcome(data: pd.DataFrame, outcome: str) -> np.ndarray:
    y = as_float(data, outcome)
    if np.isnan(y).all():
        raise ImpactInputError(f"outcome {outcome!r} is missing in every row. Fix: choose an outcome with data.")
    if np.isinf(y).any():
        rows = data.index[np.isinf(y)]
        raise ImpactInputError(f"outcome {outcome!r} has infinite values at rows {_show(rows)} "
                               "(log of zero?). Fix: set them to missing or use log(1 + x).")
    return y


def _first_treated_rows(data: pd.DataFrame, first_treated: str, treatment: str | None, ucode: np.ndarray,
                        n_units: int, t: np.ndarray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row first treated period (inf = never) and per-unit value (NaN = never).

    ``first_treated`` NA or 0 means never treated (0 is the R ``did``, Stata ``csdid`` and diff-diff
    convention); negative values are refused. A 0/1 ``treatment`` column, if given, must agree.
    """
    if first_treated not in data.columns:
        g_row = _first_treated_from_indicator(data, treatment, ucode, n_units, t, unit)  # type: ignore[arg-type]
        g_unit = np.full(n_units, np.nan)
        g_unit[ucode] = np.where(np.isinf(g_row), np.nan, g_row)
        return g_row, g_unit
    g_row = as_float(data, first_treated)
    g_row = np.where(g_row == 0, np.nan, g_row)
    finite = ~np.isnan(g_row)
    if (g_row[finite] != np.round(g_row[finite])).any():
        raise ImpactInputError(f"{first_treated!r} must hold integer periods (NA or 0 = never treated).")
    if (g_row[finite] < 0).any():
        rows = data.index[finite & (g_row < 0)]
        raise ImpactInputError(f"{first_treated!r} has negative values at rows {_show(rows)}; use NA or 0 for "
                               "never-treated firms and the first period of support otherwise.")
    g_row = np.where(finite, g_row, np.inf)
    g_unit = unit_constant(
        np.where(np.isinf(g_row), np.nan, g_row), ucode, n_units, data, unit, first_treated,
        "The first year of support must be one value per firm (treatment cannot switch off or "
        "restart). Fix: set first_treated to the firm's first year of support in every row.")
    if treatment is not None:
        _first_treated_from_indicator(data, treatment, ucode, n_units, t, unit)  # refuses 1 -> 0
        bad = as_float(data, treatment) != (t >= g_row).astype(float)
        if bad.any():
            raise ImpactInputError(
                f"{treatment!r} disagrees with {first_treated!r} at rows {_show(data.index[bad])} "
                f"(expected {treatment} = 1 exactly from {first_treated} onwards). Fix one of them.")
    return g_row, g_unit


def _exclude_always_treated(data: pd.DataFrame, unit: str, ucode: np.ndarray, g_unit: np.ndarray, t_min: int,
                            anticipation: int, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Units treated in (or before) the first period, net of anticipation, have no untreated base
    period: excluded with a warning and a note (as R did). Returns (per-unit flag, per-row keep)."""
    early_u = ~np.isnan(g_unit) & (g_unit - anticipation <= t_min)
    keep = ~early_u[ucode]
    if early_u.any():
        ids = pd.unique(data[unit].to_numpy()[~keep])
        msg = (f"{int(early_u.sum())} unit(s) first treated in or before the first period {t_min} "
               f"(minus anticipation {anticipation}) have no pre-treatment period and were excluded, as in "
               f"R did")
        # the interactive warning names the units; the note travels into reports, so it carries no ids
        warnings.warn(f"{msg} ({unit} = {_show(ids)}).", UserWarning, stacklevel=4)
        notes.append(msg + ".")
    return early_u, keep


def _check_cohorts(data: pd.DataFrame, unit: str, ucode: np.ndarray, g_unit: np.ndarray, early_u: np.ndarray,
                   keep: np.ndarray, control: str, t_max: int, notes: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Refuse one-firm cohorts, no treated units, or no valid comparison group; note late cohorts."""
    g_kept = g_unit[~early_u]
    cohorts, sizes = np.unique(g_kept[~np.isnan(g_kept)], return_counts=True)
    single = cohorts[sizes == 1]
    if len(single):
        ids = [pd.unique(data[unit].to_numpy()[(g_unit[ucode] == c) & keep]) for c in single]
        raise ImpactInputError(
            f"cohort(s) first treated in {_show([int(c) for c in single])} contain a single unit "
            f"({unit} = {_show([i[0] for i in ids])}); a one-firm cohort's ATT(g,t) has no valid standard "
            "error. Fix: pool it with a neighbouring cohort, or drop it explicitly and say so.")
    n_never = int(np.isnan(g_kept).sum())
    if len(cohorts) == 0:
        raise ImpactInputError("no treated units: first_treated is missing (never treated) for every "
                               "firm (after excluding always-treated firms). Nothing to estimate.")
    if control == "never_treated" and n_never == 0:
        raise ImpactInputError(
            "control='never_treated' but no firm is never treated (first_treated is set for all). "
            "Fix: use control='not_yet_treated' (firms supported later serve as controls until their "
            "support starts).")
    if control == "not_yet_treated" and n_never == 0 and len(cohorts) < 2:
        raise ImpactInputError(
            "control='not_yet_treated' needs never-treated firms or at least two cohorts; all treated "
            f"firms start in {int(cohorts[0])}, so no firm is 'not yet treated'. Nothing to compare with.")
    late = cohorts[cohorts > t_max]
    if len(late):
        notes.append(f"{int(sizes[cohorts > t_max].sum())} unit(s) in cohort(s) {_show([int(c) for c in late])} "
                     f"are first treated after the last period {t_max}: they contribute pre-period "
                     "(placebo) cells and, with not-yet-treated controls, serve as controls.")
    return cohorts, sizes, n_never


def _add_covariates(frame: pd.DataFrame, data: pd.DataFrame, covariates: list[str], keep: np.ndarray) -> None:
    for c in covariates:
        x = as_float(data, c)[keep]
        if np.isnan(x).any():
            rows = data.index[keep][np.isnan(x)]
            raise ImpactInputError(f"covariate {c!r} has {int(np.isnan(x).sum())} missing value(s) at rows "
                                   f"{_show(rows)}. Fix: impute explicitly or drop the covariate.")
        frame[c] = x


def _add_cluster(frame: pd.DataFrame, data: pd.DataFrame, cluster: str, ucode: np.ndarray, n_units: int,
                 unit: str, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster code per row (column ``_cluster``) and per unit; refuse missing/varying/single clusters."""
    if data[cluster].isna().any():
        rows = data.index[data[cluster].isna().to_numpy()]
        raise ImpactInputError(f"cluster column {cluster!r} has missing values at rows {_show(rows)}.")
    ccode, n_clusters = pd.factorize(data[cluster])[0], data[cluster].nunique()
    unit_constant(ccode.astype(float), ucode, n_units, data, unit, cluster,
                  "A firm must stay in one cluster. Fix: use the firm's baseline region.")
    if n_clusters < 2:
        raise ImpactInputError(f"cluster column {cluster!r} has a single cluster; clustered SEs need >= 2.")
    frame["_cluster"] = ccode[keep]
    cluster_unit = np.zeros(n_units, dtype=np.int64)
    cluster_unit[ucode] = ccode
    return cluster_unit, int(n_clusters)


def _add_weight(frame: pd.DataFrame, data: pd.DataFrame, weight: str, ucode: np.ndarray, n_units: int,
                unit: str, keep: np.ndarray) -> None:
    frame["_w"] = firm_weights(data, weight, ucode, n_units, unit)[ucode][keep]


def prepare_panel(
    data: pd.DataFrame,
    outcome: str,
    *,
    unit: str = "firm_id",
    time: str = "year",
    first_treated: str = "first_treated",
    treatment: str | None = None,
    control: str = "never_treated",
    covariates: Sequence[str] | None = None,
    cluster: str | None = None,
    weight: str | None = None,
    anticipation: int = 0,
) -> tuple[pd.DataFrame, dict[str, int], list[str], np.ndarray | None]:
    """Check a firm-year panel and return the frame diff-diff fits on.

    Returns (frame with columns _unit, _time, _y, _g [0 = never], covariates, [_cluster], [_w];
    counts; notes; cluster code per unit or None). Raises :class:`ImpactInputError`.
    """
    if control not in _CONTROLS:
        raise ImpactInputError(f"control must be one of {_CONTROLS}, got {control!r}.")
    covariates = list(covariates or [])
    use_ft = treatment is None or first_treated in data.columns
    cols = [unit, time, outcome, *([first_treated] if use_ft else []), *([treatment] if treatment else []),
            *covariates, *([cluster] if cluster else []), *([weight] if weight else [])]
    require_columns(data, cols, "did()")
    if len(data) == 0:
        raise ImpactInputError("did(): data has no rows.")
    check_unit_ids(data, unit)
    t = integer_time(data, time)
    ucode, n_units = unit_codes(data, unit)
    check_unique_unit_time(data, ucode, n_units, t, unit, time)
    y = _checked_outcome(data, outcome)
    notes: list[str] = []
    g_row, g_unit = _first_treated_rows(data, first_treated if use_ft else "\0", treatment, ucode, n_units, t, unit)
    t_min, t_max = int(t.min()), int(t.max())
    early_u, keep = _exclude_always_treated(data, unit, ucode, g_unit, t_min, anticipation, notes)
    cohorts, sizes, n_never = _check_cohorts(data, unit, ucode, g_unit, early_u, keep, control, t_max, notes)
    frame = pd.DataFrame({
        "_unit": ucode[keep], "_time": t[keep], "_y": y[keep],
        "_g": np.where(np.isinf(g_row[keep]), 0, g_row[keep]).astype(np.int64),
    })
    _add_covariates(frame, data, covariates, keep)
    cluster_unit, n_clusters = (_add_cluster(frame, data, cluster, ucode, n_units, unit, keep) if cluster
                                else (None, 0))
    if weight:
        _add_weight(frame, data, weight, ucode, n_units, unit, keep)
    n_missing = int(np.isnan(frame["_y"]).sum())
    if n_missing:
        notes.append(f"{n_missing} unit-period(s) have a missing {outcome}; each ATT(g,t) uses the firms "
                     "observed in both its base period and period t (unbalanced panel).")
    kept_units = np.unique(frame["_unit"])
    counts = {
        "n_obs": int(len(frame)), "n_units": int(len(kept_units)), "n_treated": int(sizes.sum()),
        "n_never_treated": n_never, "n_cohorts": int(len(cohorts)), "n_periods": int(len(np.unique(t))),
        "first_period": t_min, "last_period": t_max, "n_excluded_always_treated": int(early_u.sum()),
        "n_missing_outcome": n_missing, "n_clusters": int(n_clusters) if cluster else int(len(kept_units)),
    }
    return frame, counts, notes, cluster_unit


def _check_panel_option(panel: str, covariates: list[str], weight: str | None, n_bootstrap: int) -> None:
    if panel not in _PANELS:
        raise ImpactInputError(f"panel must be one of {_PANELS}, got {panel!r}.")
    if panel == "rcs" and (covariates or weight or n_bootstrap):
        raise ImpactInputError(
            "panel='rcs' (R's allow_unbalanced_panel = TRUE) is available without covariates, weights and bootstrap "
            "only. Fix: use panel='pairwise' (default) or 'balanced' for those.")


def _balanced_rows(data: pd.DataFrame, outcome: str, unit: str, time: str, covariates: list[str],
                   notes: list[str]) -> tuple[pd.DataFrame, int]:
    """R ``did``'s balanced panel: complete cases (outcome, covariates), then only firms observed in every
    period (``BMisc::makeBalancedPanel``). Returns (rows kept, firms dropped); the drop is noted."""
    ok = data[[outcome, *covariates]].notna().all(axis=1).to_numpy()
    d = data.loc[ok]
    per_unit = d.groupby(unit, sort=False)[time].nunique()
    keep = per_unit.index[per_unit == d[time].nunique()]
    n_drop = int(data[unit].nunique() - len(keep))
    if n_drop:
        notes.append(f"panel='balanced': {n_drop} firm(s) not observed with {outcome} in every period were dropped "
                     f"(R did's default); {len(keep)} firm(s) used.")
    return d[d[unit].isin(keep)], n_drop


def _rcs_unit_design(raw: Any, frame: pd.DataFrame, cluster_unit: np.ndarray | None, alpha: float) -> _Design:
    """R ``allow_unbalanced_panel = TRUE``: diff-diff's per-observation influence functions summed by firm
    (duplicate indices add up in the sparse IF matrix), cohort masses per firm, and each cell's SE from
    V = sum_i psi_i^2 over firms (R: no G/(G-1) factor; diff-diff's own cell SEs carry it)."""
    book = raw._aggregation_kit.bookkeeping
    obs = np.asarray(book["all_units"]).astype(np.int64)
    units, uidx = np.unique(frame["_unit"].to_numpy()[obs], return_inverse=True)
    cohort = np.zeros(len(units))
    cohort[uidx] = np.asarray(book["unit_cohorts"], dtype=float)
    design = _Design(cohort=cohort, survey_w=None, n_units=len(units),
                     cluster=None if cluster_unit is None else pd.factorize(cluster_unit[units])[0].astype(np.int64))
    for cell, info in raw._aggregation_kit.influence.items():
        info["treated_idx"] = uidx[np.asarray(info["treated_idx"], dtype=np.int64)]
        info["control_idx"] = uidx[np.asarray(info["control_idx"], dtype=np.int64)]
        d = raw.group_time_effects[cell]
        psi = _if_matrix(raw._aggregation_kit.influence, [cell], len(units)).toarray().ravel()
        e = normal_inference(d["effect"], _se(psi, design), alpha)
        d.update({"se": e.se, "t_stat": e.estimate / e.se if e.se > 0 else np.nan, "p_value": e.pvalue,
                  "conf_int": (e.ci_low, e.ci_high)})
    return design


def _check_options(method: str, base_period: str, anticipation: int, alpha: float, pscore_trim: float,
                   covariates: list[str], n_bootstrap: int) -> None:
    if method not in _METHODS:
        raise ImpactInputError(f"method must be one of {_METHODS}, got {method!r}.")
    if base_period not in _BASES:
        raise ImpactInputError(f"base_period must be one of {_BASES}, got {base_period!r}.")
    if isinstance(anticipation, bool) or not isinstance(anticipation, (int, np.integer)) or anticipation < 0:
        raise ImpactInputError(f"anticipation must be a non-negative integer, got {anticipation!r}.")
    if not 0 < alpha < 1:
        raise ImpactInputError(f"alpha must be in (0, 1), got {alpha!r}.")
    if not 0.5 < pscore_trim <= 1:
        raise ImpactInputError(f"pscore_trim must be in (0.5, 1] (R DRDID trim.level, default 0.995), got "
                               f"{pscore_trim!r}.")
    if covariates and method != "reg" and n_bootstrap:
        raise ImpactInputError(
            "n_bootstrap > 0 with covariates and method 'dr'/'ipw' is not available: the covariate cells are "
            "R DRDID's, computed here, and diff-diff's bootstrap would resample its own (different) cells. "
            "Fix: use analytical SEs (n_bootstrap=0, as R did's bstrap=FALSE) or method='reg'.")


def _base_period(g: int, t: int, periods: list[int], base_period: str, anticipation: int) -> int | None:
    """R ``did``'s base period of cell (g, t): the last period before g - anticipation, or for a
    pre-treatment cell with a varying base the period just before t."""
    if base_period == "varying" and t < g - anticipation:
        earlier = [p for p in periods if p < t]
    else:
        earlier = [p for p in periods if p < g - anticipation]
    return earlier[-1] if earlier else None


def _r_drdid_cells(raw: Any, frame: pd.DataFrame, covariates: list[str], method: str, trim: float,
                   design: _Design, base_period: str, anticipation: int, alpha: float) -> None:
    """Replace diff-diff's covariate ATT(g,t) cells by R DRDID's (:mod:`msme_eval.impact.drdid`).

    Why: diff-diff 3.13 normalises the IPW/DR comparison term by the number of treated units and
    clips scores to [0.01, 0.99]; R ``did`` (``DRDID::drdid_panel`` / ``std_ipw_did_panel``)
    normalises by the sum of comparison weights and drops comparison units with p >= 0.995. On the
    NSW panel R gives DR -871.33 and IPW -1021.61, diff-diff -849.6 and -501.0. The treated and
    comparison units of each cell are diff-diff's (identical to R's); effect, influence function
    (scaled to diff-diff's sum-of-squares convention: IF / n_cell), SE, CI and p are replaced.
    """
    kit = raw._aggregation_kit
    units = np.asarray(kit.bookkeeping["all_units"]).astype(np.int64)
    periods = sorted(int(p) for p in np.unique(frame["_time"]))
    wide = frame.pivot(index="_unit", columns="_time")
    estimator = drdid_panel if method == "dr" else std_ipw_panel
    for (g, t), d in raw.group_time_effects.items():
        if d.get("is_reference", False) or (g, t) not in kit.influence:
            continue
        info = kit.influence[(g, t)]
        base = _base_period(int(g), int(t), periods, base_period, anticipation)
        idx = np.concatenate([np.asarray(info["treated_idx"]), np.asarray(info["control_idx"])]).astype(np.int64)
        n1 = len(info["treated_idx"])
        rows = wide.loc[units[idx]]
        dy = (rows[("_y", int(t))] - rows[("_y", base)]).to_numpy(dtype=float)
        X = np.column_stack([np.ones(len(idx)), *[rows[(c, base)].to_numpy(dtype=float) for c in covariates]])
        X = X[:, independent_columns(X)]  # aliased covariates dropped within the cell, as R lm/glm and diff-diff
        treat = np.r_[np.ones(n1), np.zeros(len(idx) - n1)]
        w = None if design.survey_w is None else design.survey_w[idx]
        att, inf = estimator(dy, treat, X, w, trim)
        psi = inf / len(idx)
        info["treated_inf"], info["control_inf"] = psi[:n1], psi[n1:]
        full = np.zeros(design.n_units)
        full[idx] = psi
        e = normal_inference(att, float(np.sqrt(_vcov_from_psi(full[:, None], design)[0, 0])), alpha)
        d.update({"effect": e.estimate, "se": e.se, "t_stat": e.estimate / e.se if e.se > 0 else np.nan,
                  "p_value": e.pvalue, "conf_int": (e.ci_low, e.ci_high)})


def did(
    data: pd.DataFrame,
    outcome: str,
    *,
    unit: str = "firm_id",
    time: str = "year",
    first_treated: str = "first_treated",
    treatment: str | None = None,
    control: str = "never_treated",
    covariates: Sequence[str] | None = None,
    method: str = "dr",
    anticipation: int = 0,
    base_period: str = "varying",
    cluster: str | None = None,
    weight: str | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = 0,
    seed: int = 0,
    pscore_trim: float = R_TRIM,
    panel: str = "pairwise",
) -> DidResult:
    """Callaway-Sant'Anna staggered DiD on a firm-year panel.

    ATT(g,t) = E[Y_t - Y_b | G = g] - E[Y_t - Y_b | C], b the base period, C the control group
    (never-treated, or not-yet-treated by t + anticipation); ``method`` "dr" (doubly robust,
    Sant'Anna-Zhao 2020), "ipw" or "reg" when ``covariates`` are given. ``first_treated`` is the
    first period of support (NA or 0 = never); alternatively pass a 0/1 ``treatment`` indicator
    (refused if it goes 1 -> 0). SEs: analytical influence-function SEs clustered by firm, or by
    ``cluster``; ``n_bootstrap`` > 0 switches to diff-diff's multiplier bootstrap (and its sup-t
    bands). ``weight``: firm-constant sampling weights.

    With covariates and ``method`` "dr"/"ipw" each ATT(g,t) is R ``did``'s: ``DRDID::drdid_panel`` /
    ``std_ipw_did_panel`` (Hajek-normalised), computed in :mod:`msme_eval.impact.drdid`;
    ``pscore_trim``: comparison units with propensity score >= pscore_trim are dropped from a cell
    (R's ``trim.level``, default 0.995; 1 keeps all).

    ``panel`` (firms missing in some years): "pairwise" (default) - each ATT(g,t) uses the firms
    observed in its base period and in t, aggregated with cohort masses fixed over all firms;
    "balanced" - R ``did``'s default, firms not observed in every period dropped first
    (``allow_unbalanced_panel = FALSE``); "rcs" - R's ``allow_unbalanced_panel = TRUE``, the
    repeated-cross-section levels estimator with influence functions summed by firm (no covariates
    or weights). The choice and the firms used are in ``choices``/``counts``/``notes``.

    Returns a :class:`DidResult` (``.overall``, ``.att_gt``, ``.event_study``, ``.pretrend``,
    ``.aggregate()``, ``.summary()``, ``.tidy()``, ``.plot()``, ``.choices``).
    """
    import diff_diff
    from diff_diff import CallawaySantAnna

    covariates = list(covariates or [])
    _check_options(method, base_period, anticipation, alpha, pscore_trim, covariates, n_bootstrap)
    _check_panel_option(panel, covariates, weight, n_bootstrap)
    pre_notes: list[str] = []
    n_dropped = 0
    if panel == "balanced":
        data, n_dropped = _balanced_rows(data, outcome, unit, time, covariates, pre_notes)
    frame, counts, notes, cluster_unit = prepare_panel(
        data, outcome, unit=unit, time=time, first_treated=first_treated, treatment=treatment,
        control=control, covariates=covariates, cluster=cluster, weight=weight, anticipation=int(anticipation),
    )
    notes[:0] = pre_notes
    counts["n_units_dropped_unbalanced"] = n_dropped
    if panel == "rcs":  # complete cases, as R's pre_process_did (diff-diff drops them too)
        frame = frame[np.isfinite(frame["_y"].to_numpy())].reset_index(drop=True)
    est = CallawaySantAnna(
        control_group=control, anticipation=int(anticipation), estimation_method=method, alpha=alpha,
        cluster="_cluster" if cluster else None, n_bootstrap=int(n_bootstrap), seed=seed,
        base_period=base_period, cband=True, allow_unbalanced_panel=panel == "rcs",
    )
    survey = diff_diff.SurveyDesign(weights="_w") if weight else None
    raw = est.fit(frame, "_y", "_unit", "_time", "_g", covariates=covariates or None, survey_design=survey)
    book = raw._aggregation_kit.bookkeeping
    all_units = np.asarray(book["all_units"]).astype(np.int64)
    sw = book.get("survey_weights")
    design = _Design(
        cohort=np.asarray(book["unit_cohorts"], dtype=float),
        survey_w=None if sw is None else np.asarray(sw, dtype=float),
        cluster=None if cluster_unit is None else pd.factorize(cluster_unit[all_units])[0].astype(np.int64),
        n_units=len(all_units),
    )
    if panel == "rcs" and not book["is_panel"]:
        design = _rcs_unit_design(raw, frame, cluster_unit, alpha)
        notes.append(f"panel='rcs': {design.n_units} firm(s), {len(frame)} firm-year(s) pooled as repeated "
                     "cross-sections (R allow_unbalanced_panel = TRUE).")
    r_cells = bool(covariates) and method in ("dr", "ipw")
    if r_cells:
        _r_drdid_cells(raw, frame, covariates, method, pscore_trim, design, base_period, int(anticipation), alpha)
    settings = {
        "unit": unit, "time": time, "first_treated": first_treated, "treatment": treatment,
        "control": control, "covariates": covariates, "method": method, "anticipation": int(anticipation),
        "base_period": base_period, "cluster": cluster, "weight": weight, "alpha": alpha,
        "n_bootstrap": int(n_bootstrap), "seed": seed, "engine": "diff_diff.CallawaySantAnna",
        "engine_version": diff_diff.__version__, "cells": "R DRDID" if r_cells else "diff-diff",
        "pscore_trim": pscore_trim if r_cells else None, "panel": panel,
        "estimand": (f"population ATT (weighted by {weight}: the supported firms the sample represents)" if weight
                     else "sample ATT (unweighted average over the supported firms in the sample)"),
        "firms_counted": "firms of the supported cohorts in the estimation sample (each ATT(g,t) uses those "
                         "observed in its base period and in t)",
    }
    return DidResult(outcome=outcome, settings=settings, counts=counts, notes=notes, raw=raw, _design=design)
