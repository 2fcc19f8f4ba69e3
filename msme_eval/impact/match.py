"""Greedy nearest-neighbour matching as R MatchIt's ``matchit(method = "nearest")`` does it.

Steps (Ho, Imai, King and Stuart 2011, J. Stat. Softw. 42(8); MatchIt 4.x source
``R/matchit2nearest.R``, ``src/nn_matchC_vec.cpp``, ``src/internal.cpp``):

1. **Distance.** ``distance="glm"``: propensity score e(X) = Lambda(a + X'b) by logit MLE (MatchIt's
   default ``distance = "glm", link = "logit"``); units are matched on |e_i - e_j| (probability
   scale). ``distance="mahalanobis"``: d_ij = sqrt((x_i - x_j)' S^-1 (x_i - x_j)) with S the pooled
   within-group covariance sum_g sum_{i in g} (x_i - xbar_g)(x_i - xbar_g)' / (n - 2) (MatchIt's
   ``transform_covariates``; Rubin 1980); constant covariates are dropped. ``distance`` may also
   name a numeric column of ``data`` holding a score computed elsewhere (MatchIt: a numeric
   ``distance`` vector). ``mahvars``: Mahalanobis distance on these columns for the matching while
   the score (``glm`` or the column) sets the caliper and the order (Rosenbaum and Rubin 1985,
   Am. Stat. 39(1): Mahalanobis matching within propensity-score calipers; MatchIt ``mahvars``).
2. **Order.** Focal units (treated for the ATT, controls for the ATC) are matched one by one in
   ``m_order``: MatchIt's default is ``"largest"`` (descending score) for the ATT and
   ``"smallest"`` for the ATC when matching on a propensity score, ``"data"`` for Mahalanobis;
   ties keep data order (R ``order`` is stable). With replacement the order does not matter.
   ``"closest"`` / ``"farthest"`` (MatchIt >= 4.5, ``nn_matchC_*_closest.cpp``): every focal unit's
   nearest eligible comparison unit is found first (focal units in data order), the pairs are
   sorted by their distance (ascending / descending, stable) and assigned in that order; when a
   pair's comparison unit has been taken meanwhile, the focal unit's next nearest is found and the
   pair re-inserted at its new distance (``std::lower_bound`` over the rest of the list, then
   ``std::rotate``, as MatchIt does), once per round of ``ratio``.
3. **Match.** Each focal unit takes its nearest eligible comparison unit; with ``ratio=k`` and
   without replacement this is done in k rounds (every focal unit gets a first match before any
   gets a second; MatchIt's ``reuse.max = 1`` loop); a focal unit with no match in round 1 is
   dropped. With replacement each focal unit takes its k nearest at once. Candidates must share
   the ``exact`` cells and lie within the ``caliper``: |e_i - e_j| <= caliper x sd(e) (``std_caliper``,
   sd over all units, n - 1) or <= caliper (raw). Ties on the score between the nearest
   candidate below and above are broken as MatchIt's scan does (the one fewer sorted positions
   away; the lower one on equal steps); Mahalanobis ties go to the first in data order.
4. **Weights** (MatchIt ``get_weights_from_subclass`` / ``weights_matrixC``, ``normalize = TRUE``):
   focal units 1; a comparison unit gets sum over the focal units it serves of 1 / (number of
   comparison units matched to that focal unit); unmatched 0. Non-zero weights are then scaled
   within each arm to average 1. Without replacement each focal unit and its matches form a
   ``subclass`` (pair / matched set).
5. **Effect** (MatchIt vignette "Estimating Effects After Matching"): the weighted difference in
   means of the outcome in the matched sample, i.e. the coefficient of D in the WLS fit
   y = a + tau D with the matching weights (``lm(y ~ treat, weights = weights)``).
   ``adjust=True``: y = a + tau D + Xc'b + D Xc'g with Xc the covariates centred at the matched
   focal units' mean; tau is then the g-computation effect over the focal units (vignette:
   ``lm(y ~ treat * (covariates), weights)`` + ``avg_comparisons(newdata = subset(treat == 1))``).
   SE without replacement: cluster-robust by subclass, CR1 as ``sandwich::vcovCL`` (type HC1),
   V = G/(G-1) (n-1)/(n-k) B^-1 [sum_g s_g s_g'] B^-1, s_g = sum_{i in g} w_i x_i e_i,
   B = X'WX (Abadie and Spiess 2022, JASA 117(538)). With replacement: HC3 robust
   V = B^-1 [sum_i w_i^2 x_i x_i' e_i^2 / (1 - h_ii)^2] B^-1, h_ii = w_i x_i' B^-1 x_i, as the
   vignette recommends (``vcov = "HC3"``; Hill and Reiter 2006, Stat. Med. 25(13)). Normal
   reference as ``marginaleffects``. The SE treats the matched sample as given (no correction for
   the estimated score), as MatchIt's workflow does.

Balance before/after uses :func:`balance_table` (cobalt / MatchIt conventions: s.d. of the focal
group in the full sample), with the score as the first row ``distance`` as in ``summary.matchit``.
Categorical covariates (object / category / bool columns) are expanded to one 0/1 column per level
named column + level (R: ``raceblack``); the logit drops the first level.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.results import Result, ResultFrame, check_alpha

from ._checks import ImpactInputError, as_float, require_columns
from .balance import _treat01, balance_table
from .results import Estimate, normal_inference
from .weighting import _logit

__all__ = ["match", "MatchResult", "love_plot", "M_ORDERS"]

M_ORDERS = ("largest", "smallest", "data", "random", "closest", "farthest")
DISTANCES = ("glm", "mahalanobis")


@dataclass
class MatchResult(Result):
    """Matched sample (``weights``, ``subclass``, ``match_matrix``), balance and, with an outcome, the effect.

    ``weights``: MatchIt's matching weights per row (0 = unmatched); ``subclass``: pair / matched-set
    id per row (-1 unmatched; all -1 with replacement); ``match_matrix``: row positions of the
    comparison units matched to each focal unit (focal units in data order, -1 = none);
    ``distance``: the propensity score (None for Mahalanobis); ``balance``: before/after table;
    ``estimate``: the :class:`Estimate` of the effect (None without ``outcome``).
    """

    outcome: str | None
    estimand: str
    estimate: Estimate | None
    weights: np.ndarray = field(repr=False)
    subclass: np.ndarray = field(repr=False)
    match_matrix: np.ndarray = field(repr=False)
    distance: np.ndarray | None = field(repr=False)
    balance: pd.DataFrame = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def att(self) -> float:
        return np.nan if self.estimate is None else self.estimate.estimate

    @property
    def se(self) -> float:
        return np.nan if self.estimate is None else self.estimate.se

    @property
    def alpha(self) -> float:  # type: ignore[override]
        return float(self.options.get("alpha", 0.05))

    @property
    def title(self) -> str:  # type: ignore[override]
        what = f"{self.estimand} of {self.outcome}" if self.outcome else "Covariate balance"
        return f"{what} after nearest-neighbour matching"

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self.options)

    def tidy(self) -> pd.DataFrame:
        """The effect (term, estimate, se, ci_low, ci_high, pvalue, counts); without an outcome, the
        after-matching balance differences."""
        if self.estimate is None:
            after = self.balance[self.balance["sample"] == "after matching"]
            return after.rename(columns={"difference": "estimate"}).reset_index(drop=True)
        return pd.DataFrame([{"outcome": self.outcome, "term": self.estimand, **self.estimate.to_dict(),
                              **self.counts}])

    def notes(self) -> list[str]:
        after = self.balance[self.balance["sample"] == "after matching"]
        worst = float(np.nanmax(np.abs(after["std_diff"]))) if len(after) else np.nan
        out = [f"{self.counts['matched_focal']} of {self.counts['n_focal']} focal units matched to "
               f"{self.counts['matched_comparison']} of {self.counts['n_comparison']} comparison units; "
               f"largest |std. diff| after matching {worst:.3f} (see .balance, .plot())"]
        if self.counts["matched_focal"] < self.counts["n_focal"]:
            out.append(f"{self.counts['n_focal'] - self.counts['matched_focal']} focal unit(s) found no match "
                       "(caliper / exact / too few comparison units): the effect is for the matched focal units "
                       f"only, not the full {self.estimand} population")
        return out

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Love plot of |std. diff| before and after matching (see :func:`love_plot`)."""
        return love_plot(self.balance, ax=ax, **kwargs)

    def love_plot(self, ax: Any = None, **kwargs: Any) -> Any:
        return love_plot(self.balance, ax=ax, **kwargs)

    def matched_data(self, data: pd.DataFrame) -> pd.DataFrame:
        """MatchIt's ``match_data()``: the matched rows of ``data`` with weights, subclass and distance."""
        keep = self.weights > 0
        out = data.loc[keep].copy()
        out["weights"] = self.weights[keep]
        out["subclass"] = self.subclass[keep]
        if self.distance is not None:
            out["distance"] = self.distance[keep]
        return out

    def __repr__(self) -> str:
        est = "" if self.estimate is None else f", {self.estimand}={self.att:.4g}, se={self.se:.4g}"
        return f"MatchResult(outcome={self.outcome!r}{est})"


def love_plot(balance: pd.DataFrame, *, ax: Any = None, threshold: float = 0.1,
              title: str = "Covariate balance: absolute standardised mean differences") -> Any:
    """Love plot: |std. diff| per covariate before (open) and after (filled) matching, line at ``threshold``."""
    import matplotlib.pyplot as plt

    samples = list(dict.fromkeys(balance["sample"]))
    covs = list(dict.fromkeys(balance["covariate"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.32 * len(covs) + 1.4))
    y = np.arange(len(covs))[::-1]
    for k, s in enumerate(samples):
        part = balance[balance["sample"] == s].set_index("covariate").reindex(covs)
        ax.scatter(np.abs(part["std_diff"]), y, label=s, zorder=3,
                   facecolors="none" if k == 0 else "#1f4e79", edgecolors="#1f4e79" if k else "#888888")
    ax.axvline(threshold, color="#b22222", ls="--", lw=0.9, label=f"threshold {threshold:g}")
    ax.set_yticks(y, covs)
    ax.set_xlabel("absolute standardised mean difference")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return ax


# ---------------------------------------------------------------- input


def _design(data: pd.DataFrame, covariates: list[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Numeric design: numeric columns as they are, categorical ones as one 0/1 column per level.

    Returns the expanded frame, all its column names (balance) and those for the logit (first
    level of each categorical dropped, as R's treatment contrasts)."""
    parts, names, logit_names = [], [], []
    for c in covariates:
        s = data[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            if s.isna().any():
                raise ImpactInputError(f"covariate {c!r} has missing values at rows {list(data.index[s.isna()][:5])}. "
                                       "Fix: code missing as its own level or drop those rows explicitly.")
            dummies = pd.get_dummies(s, prefix=c, prefix_sep="", dtype=float)
            parts.append(dummies)
            names += list(dummies.columns)
            logit_names += list(dummies.columns[1:])
        else:
            col = pd.DataFrame({c: as_float(data, c)}, index=data.index)
            if col[c].isna().any():
                raise ImpactInputError(f"covariate {c!r} has missing values at rows "
                                       f"{list(data.index[col[c].isna()][:5])}. Fix: impute explicitly "
                                       "(and add a missing-indicator) or drop those rows.")
            parts.append(col)
            names.append(c)
            logit_names.append(c)
    return pd.concat(parts, axis=1), names, logit_names


def _exact_cells(data: pd.DataFrame, exact: Sequence[str]) -> np.ndarray:
    """Integer code of the joint cell of the ``exact`` columns (all rows one cell when none)."""
    if not exact:
        return np.zeros(len(data), dtype=np.int64)
    bad = [c for c in exact if data[c].isna().any()]
    if bad:
        raise ImpactInputError(f"exact-matching column(s) {bad} have missing values. Fix: code missing as its "
                               "own category or drop those rows.")
    codes = data.groupby(list(exact), sort=True, observed=True).ngroup()
    return codes.to_numpy(dtype=np.int64)


def _check_options(ratio: int, m_order: str | None, distance: str, estimand: str, caliper: float | None,
                   alpha: float, mahvars: Sequence[str] = ()) -> None:
    check_alpha(alpha)
    if not isinstance(distance, str):
        raise ImpactInputError(f"distance must be one of {DISTANCES} or the name of a numeric score column, "
                               f"got {distance!r}.")
    if mahvars and distance == "mahalanobis":
        raise ImpactInputError("mahvars is for Mahalanobis matching within a propensity-score caliper: use "
                               "distance='glm' (or a score column) with mahvars, or distance='mahalanobis' alone.")
    if estimand not in ("ATT", "ATC"):
        raise ImpactInputError(f"estimand must be 'ATT' or 'ATC' for nearest-neighbour matching, got {estimand!r}.")
    if not (isinstance(ratio, (int, np.integer)) and ratio >= 1):
        raise ImpactInputError(f"ratio must be a whole number >= 1 (k:1 matching), got {ratio!r}.")
    if m_order is not None and m_order not in M_ORDERS:
        raise ImpactInputError(f"m_order must be one of {M_ORDERS} or None (MatchIt's default), got {m_order!r}.")
    if distance == "mahalanobis" and m_order in ("largest", "smallest"):
        raise ImpactInputError(f"m_order={m_order!r} orders by the propensity score; with distance='mahalanobis' "
                               "use 'data' or 'random'.")
    if caliper is not None:
        if distance == "mahalanobis":
            raise ImpactInputError("caliper is set on the propensity score; use distance='glm' (or a score column) "
                                   "with a caliper, with mahvars for Mahalanobis matching within it, or drop caliper.")
        if not (np.isfinite(caliper) and caliper > 0):
            raise ImpactInputError(f"caliper must be a positive number, got {caliper!r}.")


# ---------------------------------------------------------------- distances


def _pscore(Xl: np.ndarray, focal: np.ndarray) -> np.ndarray:
    """Logit propensity of being treated (P(D = 1 | X)) with an intercept."""
    X = np.column_stack([np.ones(len(Xl)), Xl])
    b = _logit(X, focal)
    return 1 / (1 + np.exp(-(X @ b)))


def _mahalanobis_space(X: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Coordinates Z with ||z_i - z_j|| the Mahalanobis distance under the pooled within-group covariance."""
    keep = np.ptp(X, axis=0) >= np.sqrt(np.finfo(float).eps)
    if not keep.any():
        raise ImpactInputError("every covariate is constant; Mahalanobis matching has nothing to match on.")
    X = X[:, keep] / X[:, keep].std(axis=0, ddof=1)  # scaled first, as MatchIt (distances unchanged)
    centred = X.copy()
    for g in (0.0, 1.0):
        centred[d == g] -= X[d == g].mean(axis=0)
    S = centred.T @ centred / (len(X) - 2)
    Sinv = np.linalg.pinv(S)  # the inverse, or MatchIt's generalised inverse when S is singular
    vals, vecs = np.linalg.eigh((Sinv + Sinv.T) / 2)
    return X @ (vecs * np.sqrt(np.clip(vals, 0, None)))


# ---------------------------------------------------------------- matching on a score


def _nearest_two_sided(pos_t: int, s_t: float, cands: np.ndarray, score_at: np.ndarray,
                       cal: float) -> int:
    """Index into ``cands`` (sorted positions of eligible comparison units) of the nearest one, -1 if none.

    MatchIt's scan: the first eligible below and above in sorted order; the smaller |score gap|
    wins; equal gaps go to the one fewer positions away, the lower one on equal steps."""
    k = int(np.searchsorted(cands, pos_t))
    best, best_key = -1, None
    for j, steps in ((k - 1, 2 * (pos_t - cands[k - 1]) - 1 if k > 0 else 0),
                     (k, 2 * (cands[k] - pos_t) if k < len(cands) else 0)):
        if 0 <= j < len(cands):
            gap = abs(s_t - score_at[cands[j]])
            if gap <= cal and (best_key is None or (gap, steps) < best_key):
                best, best_key = j, (gap, steps)
    return best


def _score_with_replacement(score: np.ndarray, focal: np.ndarray, cell: np.ndarray, ratio: int,
                            cal: float) -> np.ndarray:
    """Each focal unit takes its ``ratio`` nearest comparison units in its cell (reuse allowed)."""
    focal_rows = np.flatnonzero(focal)
    mm = np.full((len(focal_rows), ratio), -1, dtype=np.int64)
    for c in np.unique(cell):
        ctrl = np.flatnonzero((~focal) & (cell == c))
        rows_t = np.flatnonzero(focal[focal_rows] & (cell[focal_rows] == c))
        if len(ctrl) == 0 or len(rows_t) == 0:
            continue
        ctrl = ctrl[np.argsort(score[ctrl], kind="stable")]
        s_t = score[focal_rows[rows_t]]
        ins = np.searchsorted(score[ctrl], s_t)
        offs = np.arange(-ratio, ratio)
        cand = ins[:, None] + offs[None, :]
        ok = (cand >= 0) & (cand < len(ctrl))
        candc = np.clip(cand, 0, len(ctrl) - 1)
        gap = np.where(ok, np.abs(s_t[:, None] - score[ctrl][candc]), np.inf)
        steps = np.where(offs < 0, -2 * offs - 1, 2 * offs + 2)[None, :].repeat(len(rows_t), 0)
        pick = np.lexsort((steps, gap), axis=1)[:, :ratio]
        gsel = np.take_along_axis(gap, pick, 1)
        sel = np.take_along_axis(candc, pick, 1)
        mm[rows_t, :min(ratio, sel.shape[1])] = np.where(gsel <= cal, ctrl[sel], -1)
    return mm


# ---------------------------------------------------------------- Mahalanobis matching


def _k_nearest_free(tree: Any, rows: np.ndarray, free: np.ndarray, z: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` rows (of ``rows``, indexed by ``tree``) nearest to ``z`` among those still ``free``.

    Distances equal to 1e-10 relative count as ties and go to the first in data order; the KD-tree
    query widens until the k-th free candidate's ties are all in view."""
    q = min(len(rows), 4 * k + 4)
    while True:
        dist, idx = tree.query(z, k=q)
        dist, idx = np.atleast_1d(dist), np.atleast_1d(idx)
        ok = free[rows[idx]]
        if ok.sum() >= k or q == len(rows):
            cand_d, cand = dist[ok], rows[idx[ok]]
            if len(cand) == 0:
                return cand
            bound = cand_d[min(k, len(cand)) - 1] * (1 + 1e-10)
            if dist[-1] > bound or q == len(rows):
                scale = max(cand_d[0], 1e-300)
                keep = cand_d <= bound
                pick = np.lexsort((cand[keep], np.round(cand_d[keep] / scale, 9)))[:k]
                return cand[keep][pick]
        q = min(len(rows), 4 * q)


def _within(score: np.ndarray | None, cal: float, i: int, free: np.ndarray) -> np.ndarray:
    """``free`` restricted to the units within the score caliper of row ``i`` (``mahvars``)."""
    if score is None or not np.isfinite(cal):
        return free
    return free & (np.abs(score - score[i]) <= cal)


def _mahalanobis_with_replacement(Z: np.ndarray, focal: np.ndarray, cell: np.ndarray, ratio: int,
                                  score: np.ndarray | None = None, cal: float = np.inf) -> np.ndarray:
    """Each focal unit takes its ``ratio`` nearest comparison units by Euclidean distance in
    Mahalanobis coordinates Z (KD-tree per exact cell; ties to the first in data order; reuse
    allowed). With a ``score`` (``mahvars``), only units within ``cal`` of the focal unit's score."""
    from scipy.spatial import cKDTree

    focal_rows = np.flatnonzero(focal)
    mm = np.full((len(focal_rows), ratio), -1, dtype=np.int64)
    comparison = ~focal
    pools = {c: np.flatnonzero(comparison & (cell == c)) for c in np.unique(cell)}
    trees = {c: cKDTree(Z[rows]) for c, rows in pools.items() if len(rows)}
    for t, i in enumerate(focal_rows):
        if cell[i] in trees:
            take = _k_nearest_free(trees[cell[i]], pools[cell[i]], _within(score, cal, i, comparison), Z[i], ratio)
            mm[t, :len(take)] = take
    return mm


# ---------------------------------------------------------------- closest / farthest first


class _Nearest:
    """The nearest eligible comparison unit of a focal row, on the score (MatchIt's sorted scan,
    `_nearest_two_sided`) or, with coordinates ``Z``, by Mahalanobis distance within the score
    caliper (``mahvars``); ``use`` takes a unit out of the pool."""

    def __init__(self, focal: np.ndarray, cell: np.ndarray, score: np.ndarray | None, Z: np.ndarray | None,
                 cal: float) -> None:
        self.cell, self.score, self.Z, self.cal = cell, score, Z, cal
        self.free = ~focal
        if Z is None:
            self.sort = np.argsort(score, kind="stable")
            self.pos_of = np.empty(len(score), dtype=np.int64)
            self.pos_of[self.sort] = np.arange(len(score))
            self.sorted_score = score[self.sort]
            self.pools = {c: np.sort(self.pos_of[self.free & (cell == c)]) for c in np.unique(cell)}
        else:
            from scipy.spatial import cKDTree
            self.pools = {c: np.flatnonzero(self.free & (cell == c)) for c in np.unique(cell)}
            self.trees = {c: cKDTree(Z[rows]) for c, rows in self.pools.items() if len(rows)}

    def find(self, i: int) -> tuple[int, float]:
        """(row, distance) of the nearest eligible comparison unit of focal row ``i``; (-1, inf) if none."""
        c = self.cell[i]
        if self.Z is None:
            pool = self.pools[c]
            j = _nearest_two_sided(self.pos_of[i], self.score[i], pool, self.sorted_score, self.cal) \
                if len(pool) else -1
            return (-1, np.inf) if j < 0 else (int(self.sort[pool[j]]), abs(self.score[i] - self.sorted_score[pool[j]]))
        take = _k_nearest_free(self.trees[c], self.pools[c], _within(self.score, self.cal, i, self.free),
                               self.Z[i], 1) if c in self.trees else []
        return (-1, np.inf) if len(take) == 0 else (int(take[0]), float(np.linalg.norm(self.Z[i] - self.Z[take[0]])))

    def use(self, row: int) -> None:
        self.free[row] = False
        if self.Z is None:
            pool = self.pools[self.cell[row]]
            self.pools[self.cell[row]] = pool[pool != self.pos_of[row]]


def _reinsert(heap: list[int], i: int, dist: np.ndarray, close: bool) -> None:
    """Move ``heap[i]`` (its distance just grew) to its place in ``heap[i:]`` as MatchIt does:
    ``std::lower_bound`` with ``dist[a] < dist[h]`` (closest) or ``dist[a] >= dist[h]`` (farthest)
    over ``heap[i:]``, then ``std::rotate``."""
    h = heap[i]
    first, count = i, len(heap) - i
    while count > 0:
        step = count // 2
        a = heap[first + step]
        if (dist[a] < dist[h]) if close else (dist[a] >= dist[h]):
            first, count = first + step + 1, count - step - 1
        else:
            count = step
    if first > i + 1:
        heap[i:first] = heap[i + 1:first] + [h]


def _closest_match(near: _Nearest, focal: np.ndarray, ratio: int, close: bool) -> np.ndarray:
    """Greedy matching without replacement in order of pair distance (``m_order`` "closest" /
    "farthest"; module docstring, step 2), ``ratio`` rounds."""
    focal_rows = np.flatnonzero(focal)
    mm = np.full((len(focal_rows), ratio), -1, dtype=np.int64)
    alive = np.ones(len(focal_rows), dtype=bool)
    for r in range(ratio):
        pairs = []
        for t in np.flatnonzero(alive):
            j, d = near.find(focal_rows[t])
            if j < 0:
                alive[t] = False
            else:
                pairs.append((t, j, d))
        ctrl = [p[1] for p in pairs]
        dist = np.array([p[2] for p in pairs])
        heap = list(np.argsort(dist if close else -dist, kind="stable"))
        i = 0
        while i < len(heap) and near.free.any():
            h = heap[i]
            t = pairs[h][0]
            if not alive[t]:
                i += 1
            elif not near.free[ctrl[h]]:  # taken meanwhile: next nearest, re-inserted at its distance
                ctrl[h], dist[h] = near.find(focal_rows[t])
                if ctrl[h] < 0:
                    alive[t] = False
                else:
                    _reinsert(heap, i, dist, close)
            else:
                mm[t, r] = ctrl[h]
                near.use(ctrl[h])
                i += 1
    return mm


def _greedy(near: _Nearest, focal: np.ndarray, order: np.ndarray, ratio: int) -> np.ndarray:
    """Greedy k:1 matching without replacement, focal units in ``order``: each takes its nearest
    free comparison unit, in ``ratio`` rounds (every focal unit gets a first match before any gets a
    second, MatchIt's loop); a focal unit with no first match is dropped."""
    focal_rows = np.flatnonzero(focal)
    mm = np.full((len(focal_rows), ratio), -1, dtype=np.int64)
    alive = np.ones(len(focal_rows), dtype=bool)
    for r in range(ratio):
        for t in order:
            if not alive[t]:
                continue
            j, _ = near.find(focal_rows[t])
            if j < 0:
                alive[t] = r > 0  # no first match: dropped; no further match: keeps its earlier ones
                continue
            mm[t, r] = j
            near.use(j)
    return mm


# ---------------------------------------------------------------- weights and effect


def _weights_and_subclass(mm: np.ndarray, focal: np.ndarray, replace: bool) -> tuple[np.ndarray, np.ndarray]:
    """MatchIt's matching weights (normalised to mean 1 within arm among the matched) and subclasses."""
    n = len(focal)
    w = np.zeros(n)
    sub = np.full(n, -1, dtype=np.int64)
    focal_rows = np.flatnonzero(focal)
    k_i = (mm >= 0).sum(axis=1)
    matched = np.flatnonzero(k_i > 0)
    w[focal_rows[matched]] = 1.0
    for s, t in enumerate(matched):
        ctrl = mm[t][mm[t] >= 0]
        np.add.at(w, ctrl, 1.0 / k_i[t])
        if not replace:
            sub[focal_rows[t]] = s
            sub[ctrl] = s
    for arm in (focal, ~focal):
        nz = arm & (w > 0)
        w[nz] = w[nz] * nz.sum() / w[nz].sum()
    return w, sub


def _outcome_design(d: np.ndarray, Xcov: np.ndarray | None, focal: np.ndarray) -> np.ndarray:
    """(1, D) or, with covariates, (1, D, Xc, D Xc) with Xc centred at the focal units' mean, so the
    coefficient of D is the g-computation effect averaged over the focal units (marginaleffects
    ``avg_comparisons(newdata = focal)`` for a linear model); aliased columns are dropped."""
    base = np.column_stack([np.ones(len(d)), d])
    if Xcov is None or Xcov.shape[1] == 0:
        return base
    Xc = Xcov - Xcov[focal].mean(axis=0)
    X = np.column_stack([base, Xc, d[:, None] * Xc])
    keep = [0, 1]
    for j in range(2, X.shape[1]):
        if np.linalg.matrix_rank(X[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    return X[:, keep]


def _effect(y: np.ndarray, X: np.ndarray, w: np.ndarray, sub: np.ndarray, replace: bool) -> tuple[float, float]:
    """WLS of y on X (column 1 = D) with weights w in the matched sample; CR1-by-subclass or HC3 SE
    (module docstring; k = number of columns of X in (n - 1)/(n - k))."""
    keep = w > 0
    y, X, w, sub = y[keep], X[keep], w[keep], sub[keep]
    Binv = np.linalg.inv((X * w[:, None]).T @ X)
    beta = Binv @ ((X * w[:, None]).T @ y)
    e = y - X @ beta
    n, k = X.shape
    if replace:
        h = w * np.einsum("ij,jk,ik->i", X, Binv, X)
        u = X * (w * e / (1 - h))[:, None]
        meat = u.T @ u
    else:
        codes, G = pd.factorize(sub)[0], len(np.unique(sub))
        s = np.zeros((G, k))
        np.add.at(s, codes, X * (w * e)[:, None])
        meat = s.T @ s * G / (G - 1) * (n - 1) / (n - k)
    V = Binv @ meat @ Binv
    return float(beta[1]), float(np.sqrt(V[1, 1]))


# ---------------------------------------------------------------- main


def _focal_order(score: np.ndarray | None, focal: np.ndarray, m_order: str, seed: int) -> np.ndarray:
    """Positions (among focal units, data order) in the order they are matched."""
    n_f = int(focal.sum())
    if m_order == "data":
        return np.arange(n_f)
    if m_order == "random":
        return np.random.default_rng(seed).permutation(n_f)
    s = score[focal]
    return np.argsort(-s if m_order == "largest" else s, kind="stable")


def _run_matching(score: np.ndarray | None, Z: np.ndarray | None, focal: np.ndarray, cell: np.ndarray,
                  m_order: str, seed: int, ratio: int, replace: bool, cal: float) -> np.ndarray:
    """The match matrix: on the score, or in Mahalanobis space Z (within the score caliper when
    both are given: ``mahvars``); closest/farthest-first or in a fixed focal order."""
    if replace:  # the order does not matter
        if Z is None:
            return _score_with_replacement(score, focal, cell, ratio, cal)
        return _mahalanobis_with_replacement(Z, focal, cell, ratio, score, cal)
    near = _Nearest(focal, cell, score, Z, cal)
    if m_order in ("closest", "farthest"):
        return _closest_match(near, focal, ratio, m_order == "closest")
    return _greedy(near, focal, _focal_order(score, focal, m_order, seed), ratio)


def _score(data: pd.DataFrame, distance: str, Xl: np.ndarray, d: np.ndarray, treatment: str) -> np.ndarray | None:
    """The score matched on (or setting the caliper and order, with ``mahvars``): the logit
    propensity score, a user's score column, or None for full Mahalanobis matching."""
    if distance == "mahalanobis":
        return None
    if distance == "glm":
        return _score_or_refuse(Xl, d, treatment)
    s = as_float(data, distance)
    bad = ~np.isfinite(s)
    if bad.any():
        raise ImpactInputError(f"distance column {distance!r} must be a finite number in every row; rows "
                               f"{list(data.index[bad][:5])} are not. Fix: compute the score for every unit.")
    return s


def _distance_words(distance: str, mahvars: list[str]) -> str:
    score = "logit propensity score" if distance == "glm" else (
        "Mahalanobis (pooled within-group cov.)" if distance == "mahalanobis" else f"score in column {distance!r}")
    if mahvars:
        return f"Mahalanobis on {', '.join(mahvars)} (pooled within-group cov.), within the caliper of the {score}"
    return score


def _score_or_refuse(Xl: np.ndarray, d: np.ndarray, treatment: str) -> np.ndarray:
    """Propensity score; a logit that separates the arms means the groups do not overlap."""
    try:
        return _pscore(Xl, d)
    except ImpactInputError as err:
        raise ImpactInputError(f"no overlap between the arms of {treatment!r}: {err} Matching cannot compare "
                               "units that only one arm contains.") from err


def _refuse_empty(mm: np.ndarray, caliper: float | None, exact: Sequence[str], cal: float) -> None:
    if (mm >= 0).any():
        return
    if caliper is not None:
        raise ImpactInputError(f"caliper={caliper:g} (a gap of {cal:.3g} on the propensity score) leaves no focal "
                               "unit with a match. Fix: widen `caliper` (0.2 s.d. is common), set "
                               "std_caliper as intended, or drop `caliper`.")
    raise ImpactInputError(f"no focal unit has a comparison unit in its `exact` cell ({list(exact)}). "
                           "Fix: drop or coarsen the `exact` columns.")


def _balance(expanded: pd.DataFrame, names: list[str], d: np.ndarray, w: np.ndarray, score: np.ndarray | None,
             estimand: str, alpha: float) -> ResultFrame:
    frame = expanded[names].copy()
    frame.insert(0, "_treat", d)
    cols = list(names)
    if score is not None:
        frame.insert(1, "distance", score)
        cols = ["distance", *cols]
    before = balance_table(frame, "_treat", cols, estimand=estimand, alpha=alpha)
    after = balance_table(frame, "_treat", cols, weight=w, estimand=estimand, alpha=alpha)
    bal = pd.concat([before.assign(sample="before matching"), after.assign(sample="after matching")],
                    ignore_index=True)
    return ResultFrame.wrap(bal, choices={**after.choices, "weights": "none (before) / matching weights (after)"},
                            alpha=alpha, title="Covariate balance before and after matching",
                            estimate_column="difference")


def match(
    data: pd.DataFrame,
    treatment: str,
    covariates: Sequence[str],
    *,
    outcome: str | None = None,
    distance: str = "glm",
    ratio: int = 1,
    replace: bool = False,
    caliper: float | None = None,
    std_caliper: bool = True,
    exact: Sequence[str] | None = None,
    m_order: str | None = None,
    mahvars: Sequence[str] | None = None,
    estimand: str = "ATT",
    adjust: bool = False,
    seed: int = 0,
    alpha: float = 0.05,
) -> MatchResult:
    """Nearest-neighbour matching as MatchIt's ``matchit(method="nearest")``; see the module docstring.

    ``treatment`` 0/1; ``covariates`` numeric or categorical columns (one row per unit);
    ``outcome`` optional (without it only the matched sample and balance are returned);
    ``distance`` "glm" (logit propensity score), "mahalanobis", or a numeric column of ``data``
    holding a score; ``ratio`` k:1; ``replace``; ``caliper`` on the score, in s.d. of the score
    when ``std_caliper``; ``exact`` columns that must agree within a match; ``m_order`` "largest" /
    "smallest" / "data" / "random" / "closest" / "farthest" (None: MatchIt's default, "largest"
    for the ATT on a score, "smallest" for the ATC, "data" for Mahalanobis; "random" uses
    ``seed``); ``mahvars`` columns for Mahalanobis matching within the score's caliper (the
    score still orders the focal units and is the balance table's ``distance`` row);
    ``estimand`` "ATT" (treated focal) or "ATC";
    ``adjust`` adds the covariates and their interactions with D to the outcome model
    (g-computation over the focal units, the vignette's recommended estimate).
    """
    covariates, exact, mahvars = list(covariates), list(exact or []), list(mahvars or [])
    _check_options(ratio, m_order, distance, estimand, caliper, alpha, mahvars)
    score_column = [distance] if distance not in DISTANCES else []
    if score_column and distance not in data.columns:
        raise ImpactInputError(f"distance must be one of {DISTANCES} or the name of a numeric score column of the "
                               f"data; {distance!r} is neither.")
    require_columns(data, [treatment, *covariates, *exact, *mahvars, *score_column,
                           *([outcome] if outcome else [])], "match()")
    if not covariates:
        raise ImpactInputError("match() needs at least one covariate.")
    d = _treat01(data, treatment)
    focal = d == (1.0 if estimand == "ATT" else 0.0)
    expanded, names, logit_names = _design(data, covariates)
    score = _score(data, distance, expanded[logit_names].to_numpy(float), d, treatment)
    Z = _mahalanobis_space(_design(data, mahvars)[0].to_numpy(float) if mahvars else expanded[names].to_numpy(float),
                           d) if (mahvars or score is None) else None
    order_rule = m_order or ("data" if score is None else ("largest" if estimand == "ATT" else "smallest"))
    cal = np.inf if caliper is None else caliper * (float(np.std(score, ddof=1)) if std_caliper else 1.0)
    cell = _exact_cells(data, exact)
    mm = _run_matching(score, Z, focal, cell, order_rule, seed, int(ratio), bool(replace), cal)
    _refuse_empty(mm, caliper, exact, cal)
    w, sub = _weights_and_subclass(mm, focal, bool(replace))
    est = None
    if outcome is not None:
        y = as_float(data, outcome)
        if np.isnan(y[w > 0]).any():
            raise ImpactInputError(f"outcome {outcome!r} is missing for matched rows "
                                   f"{list(data.index[(w > 0) & np.isnan(y)][:5])}. Fix: drop them before matching.")
        Xcov = expanded[logit_names].to_numpy(float) if adjust else None
        X = _outcome_design(d, Xcov, focal & (w > 0))
        est = normal_inference(*_effect(np.nan_to_num(y), X, w, sub, bool(replace)), alpha, term=estimand)
    options = {"method": "nearest neighbour (greedy), as MatchIt matchit(method='nearest')",
               "distance": _distance_words(distance, mahvars),
               "estimand": estimand, "ratio": int(ratio), "replace": bool(replace),
               "caliper": "none" if caliper is None else f"{caliper:g} {'s.d. of the score' if std_caliper else 'raw'}"
               f" (= {cal:.4g})", "exact": exact, "m_order": order_rule,
               "weights": "focal 1; comparison sum of 1/k per focal unit served, normalised to mean 1 per arm",
               "effect": ("g-computation from WLS y ~ D * covariates (centred at the focal mean)" if adjust
                          else "weighted difference in means (WLS y ~ D)") if outcome else "none (no outcome)",
               "se": "HC3 robust (with replacement)" if replace else "cluster-robust CR1 by matched subclass",
               "covariates": names, "alpha": alpha}
    counts = {"n_focal": int(focal.sum()), "n_comparison": int((~focal).sum()),
              "matched_focal": int((focal & (w > 0)).sum()), "matched_comparison": int((~focal & (w > 0)).sum())}
    bal = _balance(expanded, names, d, w, score, estimand, alpha)
    return MatchResult(outcome, estimand, est, w, sub, mm, score, bal, options, counts)
