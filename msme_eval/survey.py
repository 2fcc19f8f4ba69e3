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

The computation has two stages so that stage (a) can run wherever the data live:

(a) :func:`grouped_sums` -- one vectorised pass, "GROUP BY domain, stratum, psu; SUM(...)" of a
    few product columns (``w*y_j``, and for the design effect ``w*y_j*y_l``; without PSUs, where
    each row is its own PSU, the keys are (domain, stratum) and ``w^2*y_j*y_l`` is added). In SQL::

        SELECT <by...>, strata, psu, COUNT(*) AS n, SUM(w) AS w, SUM(w*y) AS "w*y", ...
        FROM data GROUP BY <by...>, strata, psu

(b) :func:`totals_from_sums` -- small variance algebra in numpy on that table.

Conventions (and why):

* **PSUs are nested in strata**: a PSU is the pair (stratum, psu label), as Stata and R with
  ``nest=TRUE``.
* **No design information** (no ``strata``/``psu``): simple random sampling with replacement of
  rows (each row its own PSU, one stratum); ``strata`` only: each row is its own PSU within
  its stratum.
* **Degrees of freedom** ``df = #PSUs - #strata`` of the full design (R ``degf()``, samplics,
  Stata); confidence intervals ``estimate +- t_{df, (1+level)/2} * se``. ``df <= 0`` gives NaN
  intervals.
* **Singleton strata** (one PSU): ``singleton="fail"`` raises naming them; ``"certainty"``
  treats them as self-representing (zero contribution; R ``survey.lonely.psu="certainty"``,
  samplics ``SinglePSUEst.skip``); ``"centre"`` deviates the lone PSU total from the grand mean
  of the PSU totals over the whole design, ``Z_d / #PSUs`` (R ``"adjust"``, as revised in
  ReGenesees / survey 4.2; for the linearised variable of a ratio or mean the grand mean is 0).
  Singleton strata are listed in ``result.attrs["design"]["singleton_strata"]``.
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
Estimation*, ch. 6; Lumley (2010) *Complex Surveys*; R ``survey`` ``svyrecvar``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "SurveyDesignError", "Totals", "ratio", "total", "totals", "delta",
    "grouped_sums", "totals_from_sums",
]

SINGLETON_OPTIONS = ("fail", "certainty", "centre")
_STRATUM = "__stratum__"
_PSU = "__psu__"
_EXCLUDED = "__excluded__"
_MAX_ROWS_NAMED = 10


class SurveyDesignError(ValueError):
    """Invalid survey input (weights, design variables, missing values, singleton strata)."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _name_rows(index: pd.Index, mask: np.ndarray) -> str:
    labels = index[mask]
    shown = ", ".join(map(str, labels[:_MAX_ROWS_NAMED].tolist()))
    more = len(labels) - _MAX_ROWS_NAMED
    return f"{len(labels)} row(s) (index {shown}{f' and {more} more' if more > 0 else ''})"


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    if isinstance(by, str):
        return [by]
    return list(by)


def _numeric(series: pd.Series, name: str) -> np.ndarray:
    """Float64 view of a numeric/boolean column with NaN for missing; refuse text columns."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    ):
        raise TypeError(
            f"column {name!r} has dtype {dtype}; survey estimators need a numeric or boolean "
            f"column. Fix: convert it (e.g. `data[{name!r}] = data[{name!r}].astype(float)` or "
            "a 0/1 indicator)."
        )
    return series.to_numpy(dtype="float64", na_value=np.nan)


def _factorize(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), pd.Index(uniques)


# --------------------------------------------------------------------------------------------
# stage (a): one grouped pass of weighted sums
# --------------------------------------------------------------------------------------------
def _product_key(wpow: int, vars_: Sequence[int | None]) -> tuple[int, tuple[int, ...]]:
    return wpow, tuple(sorted(v for v in vars_ if v is not None))


def _sum_name(key: tuple[int, tuple[int, ...]], names: Sequence[str]) -> str:
    wpow, vars_ = key
    parts = ["w" if wpow == 1 else "w2"] + [names[v] for v in vars_]
    return "*".join(parts)


def _needed_products(k_vars: int, ones: Sequence[bool], *, rows_are_psus: bool,
                     deff: bool) -> list[tuple[int, tuple[int, ...]]]:
    """Product columns stage (a) must sum, deduplicated (a constant-1 variable drops out)."""
    var = [None if ones[j] else j for j in range(k_vars)]
    keys: list[tuple[int, tuple[int, ...]]] = []

    def add(key: tuple[int, tuple[int, ...]]) -> None:
        if key not in keys:
            keys.append(key)

    for j in range(k_vars):
        add(_product_key(1, [var[j]]))
    if deff:
        add(_product_key(1, []))
    for j in range(k_vars):
        for m in range(j, k_vars):
            if deff:
                add(_product_key(1, [var[j], var[m]]))
            if rows_are_psus:
                add(_product_key(2, [var[j], var[m]]))
    return keys


def _group_ids(codes: list[np.ndarray], sizes: list[int],
               n_rows: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group id per row for the combination of several integer code arrays.

    Codes are combined right to left (PSU with stratum first: nested, so few pairs), and the
    running key is compressed to the observed combinations after every step -- with a
    bincount/lookup table when the key space is small, else a hash factorisation -- so keys
    never overflow. Returns the group ids and, per input, the code of each group.
    """
    dense_limit = max(4 * n_rows, 1 << 20)
    gid = codes[-1].astype(np.int64, copy=False)
    n_groups = sizes[-1]
    comps = [np.arange(n_groups, dtype=np.int64)]
    for c, size in zip(reversed(codes[:-1]), reversed(sizes[:-1])):
        if size == 1:
            comps.insert(0, np.zeros(len(comps[0]), dtype=np.int64))
            continue
        space = n_groups * size
        key = c * n_groups + gid  # c major, previous groups minor
        if space <= dense_limit:
            seen = np.bincount(key, minlength=space)
            uniq = np.flatnonzero(seen)
            lut = np.zeros(space, dtype=np.int64)
            lut[uniq] = np.arange(len(uniq))
            gid = lut[key]
        else:
            gid, uniq = pd.factorize(key, sort=False)
            gid = gid.astype(np.int64, copy=False)
            uniq = np.asarray(uniq, dtype=np.int64)
        prev = uniq % n_groups
        comps = [uniq // n_groups] + [comp[prev] for comp in comps]
        n_groups = len(uniq)
    return gid, comps


def grouped_sums(data: pd.DataFrame, columns: Mapping[str, Any] | Sequence[str], *,
                 weight: str | None = None, strata: str | None = None,
                 psu: str | None = None, by: str | Sequence[str] | None = None,
                 na_rm: bool = False, deff: bool = True) -> pd.DataFrame:
    """Stage (a): the small table of weighted sums per (domain, stratum[, PSU]).

    Columns: the ``by`` columns, ``__stratum__``, ``__psu__`` (absent when rows are the PSUs),
    ``__excluded__`` (True for the rows left out of every domain by ``na_rm``), ``n`` (row count)
    and one column per product, named like ``w*turnover``, ``w*turnover*employees``,
    ``w2*turnover*turnover`` (``w2`` = squared weight). ``columns`` maps estimate names to
    column names (or arrays aligned with ``data``); a value of ``None`` means the constant 1.
    The table's attrs carry ``variables`` (names, in order) and ``rows_are_psus``.
    """
    by_cols = _as_list(by)
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    spec: dict[str, Any] = (dict(columns) if isinstance(columns, Mapping)
                            else {c: c for c in columns})
    if not spec:
        raise ValueError("no columns to estimate: pass at least one column name")
    wanted = [c for c in (weight, strata, psu, *by_cols) if c is not None]
    wanted += [v for v in spec.values() if isinstance(v, str)]
    missing = [c for c in dict.fromkeys(wanted) if c not in data.columns]
    if missing:
        raise KeyError(
            f"column(s) {missing} not found in data (columns: {list(data.columns)}). Fix: pass "
            "existing column names to survey.ratio/total/totals."
        )
    n_rows = len(data)
    if n_rows == 0:
        raise SurveyDesignError("data has no rows")
    index = data.index

    # -- variables ---------------------------------------------------------------------
    names = list(spec)
    values: list[np.ndarray | None] = []
    for name, src in spec.items():
        if src is None:
            values.append(None)
            continue
        if isinstance(src, str):
            arr = _numeric(data[src], src)
        else:
            s = src if isinstance(src, pd.Series) else pd.Series(np.asarray(src), index=index)
            if len(s) != n_rows:
                raise ValueError(f"array for {name!r} has {len(s)} values, data has {n_rows} rows")
            arr = _numeric(s, name)
        if np.isinf(arr).any():
            raise SurveyDesignError(
                f"column {name!r} has infinite values in {_name_rows(index, np.isinf(arr))}. "
                "Fix: correct or remove them before estimation."
            )
        values.append(arr)

    # -- weights -------------------------------------------------------------------------
    if weight is None:
        w = np.ones(n_rows)
    else:
        w = _numeric(data[weight], weight)
        bad = ~np.isfinite(w)
        if bad.any():
            raise SurveyDesignError(
                f"weight column {weight!r} is missing or infinite in {_name_rows(index, bad)}. "
                "Fix: every sampled unit needs a finite weight > 0."
            )
        bad = w <= 0
        if bad.any():
            raise SurveyDesignError(
                f"weight column {weight!r} is <= 0 in {_name_rows(index, bad)}. Fix: weights must "
                "be > 0 (drop out-of-scope units before estimation, or use a domain)."
            )

    # -- missing values in variables and domains -------------------------------------------
    excluded = np.zeros(n_rows, dtype=bool)
    for name, arr in zip(names, values):
        if arr is None:
            continue
        nan = np.isnan(arr)
        if nan.any():
            if not na_rm:
                raise SurveyDesignError(
                    f"column {spec[name] if isinstance(spec[name], str) else name!r} is missing "
                    f"in {_name_rows(index, nan)}. Fix: impute or remove them, or pass "
                    "na_rm=True to leave those rows out of the domains (they stay in the design)."
                )
            excluded |= nan

    by_codes: list[np.ndarray] = []
    by_uniques: list[pd.Index] = []
    for col in by_cols:
        codes, uniques = _factorize(data[col])
        nan = codes < 0
        if nan.any():
            if not na_rm:
                raise SurveyDesignError(
                    f"domain column {col!r} is missing in {_name_rows(index, nan)}. Fix: fill it "
                    "with an explicit label (e.g. 'unknown') or pass na_rm=True to leave those "
                    "rows out of every domain."
                )
            if nan.all():
                raise SurveyDesignError(f"domain column {col!r} is missing in every row")
            excluded |= nan
            codes = np.where(nan, 0, codes)
        by_codes.append(codes)
        by_uniques.append(uniques)

    design_codes: list[np.ndarray] = []
    design_uniques: list[pd.Index] = []
    for role, col in (("strata", strata), ("psu", psu)):
        if col is None:
            continue
        codes, uniques = _factorize(data[col])
        nan = codes < 0
        if nan.any():
            raise SurveyDesignError(
                f"{role} column {col!r} is missing in {_name_rows(index, nan)}. Fix: every row "
                f"needs its {role} label."
            )
        design_codes.append(codes)
        design_uniques.append(uniques)

    reserved = [c for c in by_cols if c in ("n", "w", _STRATUM, _PSU, _EXCLUDED)
                or c.startswith(("w*", "w2*"))]
    if reserved:
        raise ValueError(f"domain column name(s) {reserved} clash with the names of the sums "
                         "table; rename them before estimation")
    rows_are_psus = psu is None
    ones = [v is None for v in values]
    products = _needed_products(len(names), ones, rows_are_psus=rows_are_psus, deff=deff)

    # -- one grouped pass: combine the key codes into one group id, then bincount ----------
    # order: excluded flag, domains, stratum, PSU (combined right to left: PSU within stratum)
    stratum_codes = design_codes[0] if strata is not None else np.zeros(n_rows, dtype=np.int64)
    stratum_uniques = design_uniques[0] if strata is not None else pd.Index([0])
    all_codes = [excluded.astype(np.int64), *by_codes, stratum_codes]
    sizes = [2, *[max(len(u), 1) for u in by_uniques], len(stratum_uniques)]
    if psu is not None:
        all_codes.append(design_codes[-1])
        sizes.append(len(design_uniques[-1]))
    gid, comps = _group_ids(all_codes, sizes, n_rows)
    n_groups = len(comps[0])
    counts = np.bincount(gid, minlength=n_groups)

    out: dict[str, Any] = {}
    for i, col in enumerate(by_cols):
        out[col] = by_uniques[i].take(comps[1 + i])
    out[_STRATUM] = stratum_uniques.take(comps[1 + len(by_cols)])
    if psu is not None:
        out[_PSU] = design_uniques[-1].take(comps[-1])
    out[_EXCLUDED] = comps[0].astype(bool)
    out["n"] = counts.astype(np.int64)
    any_excluded = bool(excluded.any())
    clean = [None if v is None else (np.where(excluded, 0.0, v) if any_excluded else v)
             for v in values]
    cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {(1, ()): w}
    if any(wpow == 2 for wpow, _ in products):
        cache[(2, ())] = w * w

    def product(key: tuple[int, tuple[int, ...]]) -> np.ndarray:
        if key not in cache:  # reuse the product of all but the last factor
            wpow, vars_ = key
            cache[key] = product((wpow, vars_[:-1])) * clean[vars_[-1]]
        return cache[key]

    prefixes = {(wpow, vars_[:-1]) for wpow, vars_ in products if vars_}
    sums: dict[str, np.ndarray] = {}
    for key in sorted(products, key=lambda kv: (kv[0], len(kv[1]), kv[1])):
        sums[_sum_name(key, names)] = np.bincount(gid, weights=product(key), minlength=n_groups)
        if key not in prefixes and key[1]:
            del cache[key]  # keep only what later products reuse (peak memory)
    del cache
    out.update({_sum_name(k, names): sums[_sum_name(k, names)] for k in products})
    # Index objects keep the dtype of the domain columns (category, boolean, str, int)
    table = pd.DataFrame({k: (v.array if isinstance(v, pd.Index) else v)
                          for k, v in out.items()})
    table.attrs.update(variables=names, ones=ones, by=by_cols, rows_are_psus=rows_are_psus,
                       deff=deff, strata=strata, psu=psu, weight=weight)
    return table


# --------------------------------------------------------------------------------------------
# stage (b): variance algebra on the small table
# --------------------------------------------------------------------------------------------
@dataclass
class Totals:
    """Estimated totals of ``k`` variables in each domain, with their covariance matrices.

    ``keys`` (DataFrame, one row per domain, the ``by`` columns), ``columns`` (the k variable
    names), ``estimate`` (DataFrame n_domains x k), ``cov`` (ndarray n_domains x k x k, Taylor
    linearised), ``n`` (ndarray of unweighted rows per domain), ``df`` (design degrees of
    freedom), ``design`` (dict: n_psu, n_strata, df, singleton option and strata, variance
    method). ``moments`` keeps what the design effect needs (sum of weights ``N_d`` and
    ``M_d[j, l] = sum_d w y_j y_l``).
    """

    keys: pd.DataFrame
    columns: list[str]
    estimate: pd.DataFrame
    cov: np.ndarray
    n: np.ndarray
    df: int
    level: float = 0.95
    design: dict[str, Any] = field(default_factory=dict)
    moments: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"Totals({len(self.keys)} domains x {len(self.columns)} columns "
                f"{self.columns}, df={self.df})")

    def to_frame(self) -> pd.DataFrame:
        """One row per domain and column: estimate, se, ci, n, df (like :func:`total`)."""
        frames = []
        for j, col in enumerate(self.columns):
            grad = np.zeros((len(self.keys), len(self.columns)))
            grad[:, j] = 1.0
            res = delta(self, lambda t, j=j: t[:, j], lambda t, g=grad: g)
            res.insert(len(self.keys.columns), "variable", col)
            frames.append(res)
        return pd.concat(frames, ignore_index=True)


def _outer_sum(idx: np.ndarray, a: np.ndarray, b: np.ndarray, size: int,
               scale: np.ndarray | None = None) -> np.ndarray:
    """sum over rows r with idx[r] = d of scale[r] * a[r] b[r]^T -> (size, k, k)."""
    k = a.shape[1]
    out = np.zeros((size, k, k))
    for j in range(k):
        for m in range(j, k):
            prod = a[:, j] * b[:, m] if scale is None else scale * a[:, j] * b[:, m]
            out[:, j, m] = np.bincount(idx, weights=prod, minlength=size)
            out[:, m, j] = out[:, j, m]
    return out


def totals_from_sums(table: pd.DataFrame, *, singleton: str = "fail",
                     level: float = 0.95) -> Totals:
    """Stage (b): domain totals and their Taylor covariance from :func:`grouped_sums` output.

    Only the small table is touched. Per domain d and stratum h with ``n_h`` PSUs (all PSUs of
    the full sample), ``C_dh = sum_i (z_hi - c)(z_hi - c)^T`` over all ``n_h`` PSUs (absent PSUs
    have ``z = 0``) with ``c = zbar_h``; ``V_d = sum_h n_h/(n_h-1) C_dh``. Singleton strata per
    ``singleton``: "fail" raises, "certainty" adds 0, "centre" adds ``(z - Z_d/P)(z - Z_d/P)^T``
    with ``P`` the number of PSUs in the design.
    """
    if singleton not in SINGLETON_OPTIONS:
        raise ValueError(f"singleton must be one of {SINGLETON_OPTIONS}, got {singleton!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    attrs = table.attrs
    names: list[str] = list(attrs["variables"])
    ones: list[bool] = list(attrs["ones"])
    by_cols: list[str] = list(attrs["by"])
    rows_are_psus: bool = bool(attrs["rows_are_psus"])
    k = len(names)

    def col(wpow: int, vars_: Sequence[int]) -> np.ndarray:
        key = _product_key(wpow, [None if ones[v] else v for v in vars_])
        return table[_sum_name(key, names)].to_numpy(dtype="float64")

    # strata and PSUs of the full design (every row of the data is in some group of the table)
    h_codes, h_uniques = _factorize(table[_STRATUM])
    n_strata = len(h_uniques)
    cnt = table["n"].to_numpy()
    if rows_are_psus:
        n_h = np.bincount(h_codes, weights=cnt, minlength=n_strata)
    else:
        p_codes, _ = _factorize(table[_PSU])
        pairs = np.unique(h_codes * (int(p_codes.max()) + 1) + p_codes)
        n_h = np.bincount(pairs // (int(p_codes.max()) + 1), minlength=n_strata).astype(float)
    n_psu = int(n_h.sum())
    df = n_psu - n_strata
    single = n_h == 1
    singleton_strata = h_uniques[single].tolist() if attrs.get("strata") is not None else (
        ["(the only stratum)"] if single.any() else [])
    if single.any() and singleton == "fail":
        raise SurveyDesignError(
            f"{int(single.sum())} stratum/strata have a single PSU: {singleton_strata[:20]}"
            f"{' ...' if single.sum() > 20 else ''}. Fix: collapse them with a neighbouring "
            "stratum, or pass singleton='certainty' (self-representing: no variance "
            "contribution) or singleton='centre' (deviation from the grand mean, R's "
            "survey.lonely.psu='adjust')."
        )

    # domains (excluded rows are kept for the design only)
    excluded = table[_EXCLUDED].to_numpy(dtype=bool)
    incl = ~excluded
    if by_cols:
        dom_frame = table.loc[incl, by_cols]
        d_codes_incl = dom_frame.groupby(by_cols, sort=True, observed=True, dropna=False).ngroup()
        d_codes_incl = d_codes_incl.to_numpy()
        keys = (dom_frame.assign(_d=d_codes_incl).drop_duplicates("_d").sort_values("_d")
                .drop(columns="_d").reset_index(drop=True))
        n_dom = len(keys)
    else:
        d_codes_incl = np.zeros(int(incl.sum()), dtype=np.int64)
        n_dom = 1 if incl.any() else 0
        keys = pd.DataFrame(index=range(n_dom))
    d_codes = np.full(len(table), n_dom, dtype=np.int64)  # excluded -> extra slot n_dom
    d_codes[incl] = d_codes_incl
    n_slots = n_dom + 1

    z = np.column_stack([col(1, [j]) for j in range(k)])  # group totals of w*y_j
    z[excluded] = 0.0
    est = np.zeros((n_slots, k))
    for j in range(k):
        est[:, j] = np.bincount(d_codes, weights=z[:, j], minlength=n_slots)
    n_dom_rows = np.bincount(d_codes, weights=np.where(excluded, 0, cnt),
                             minlength=n_slots).astype(np.int64)

    # per (domain, stratum) cells
    dh = d_codes * n_strata + h_codes
    dh_u, dh_inv = np.unique(dh, return_inverse=True)
    cell_d, cell_h = dh_u // n_strata, dh_u % n_strata
    n_cells = len(dh_u)
    s1 = np.zeros((n_cells, k))
    for j in range(k):
        s1[:, j] = np.bincount(dh_inv, weights=z[:, j], minlength=n_cells)
    nh_cell = n_h[cell_h]
    grand = est / max(n_psu, 1)  # grand mean of PSU totals per domain (for "centre")
    centre_cell = single[cell_h] & (singleton == "centre")
    c = np.where(centre_cell[:, None], grand[cell_d], s1 / nh_cell[:, None])
    scale = np.where(single[cell_h], 1.0 if singleton == "centre" else 0.0,
                     nh_cell / np.maximum(nh_cell - 1, 1))

    if rows_are_psus:
        # rows are the PSUs: C = Q - c S1^T - S1 c^T + n_h c c^T with Q = sum (w y)(w y)^T
        q = np.zeros((n_cells, k, k))
        for j in range(k):
            for m in range(j, k):
                vals = col(2, [j, m])
                vals = np.where(excluded, 0.0, vals)
                q[:, j, m] = np.bincount(dh_inv, weights=vals, minlength=n_cells)
                q[:, m, j] = q[:, j, m]
        cell_cov = (q - c[:, :, None] * s1[:, None, :] - s1[:, :, None] * c[:, None, :]
                    + nh_cell[:, None, None] * c[:, :, None] * c[:, None, :])
    else:
        # exact centring on the PSU totals present, plus (n_h - m) absent PSUs at z = 0
        dev = z - c[dh_inv]
        cell_cov = _outer_sum(dh_inv, dev, dev, n_cells)
        m_present = np.bincount(dh_inv, minlength=n_cells)
        cell_cov += (nh_cell - m_present)[:, None, None] * c[:, :, None] * c[:, None, :]
    cov = np.zeros((n_slots, k, k))
    np.add.at(cov, cell_d, scale[:, None, None] * cell_cov)
    if singleton == "centre" and single.any():
        # singleton strata holding no member of the domain: their PSU total is 0 -> grand^2
        present = np.bincount(cell_d, weights=single[cell_h].astype(float), minlength=n_slots)
        absent = single.sum() - present
        cov += absent[:, None, None] * grand[:, :, None] * grand[:, None, :]

    moments: dict[str, np.ndarray] = {}
    if attrs.get("deff", False):
        sw = np.bincount(d_codes, weights=np.where(excluded, 0.0, col(1, [])),
                         minlength=n_slots)
        mm = np.zeros((n_slots, k, k))
        for j in range(k):
            for m in range(j, k):
                vals = np.where(excluded, 0.0, col(1, [j, m]))
                mm[:, j, m] = np.bincount(d_codes, weights=vals, minlength=n_slots)
                mm[:, m, j] = mm[:, j, m]
        moments = {"sum_w": sw[:n_dom], "m": mm[:n_dom]}

    design = {
        "variance": "Taylor linearisation, with-replacement PSUs (ultimate cluster)",
        "n_psu": n_psu, "n_strata": n_strata, "df": df,
        "psu": "rows" if rows_are_psus else attrs.get("psu"),
        "strata": attrs.get("strata"), "weight": attrs.get("weight"),
        "singleton": singleton, "singleton_strata": singleton_strata,
        "excluded_rows": int(cnt[excluded].sum()),
    }
    return Totals(
        keys=keys, columns=names,
        estimate=pd.DataFrame(est[:n_dom], columns=names),
        cov=cov[:n_dom], n=n_dom_rows[:n_dom], df=df, level=level, design=design,
        moments=moments,
    )


def totals(data: pd.DataFrame, columns: Mapping[str, Any] | Sequence[str], *,
           weight: str | None = None, strata: str | None = None, psu: str | None = None,
           by: str | Sequence[str] | None = None, singleton: str = "fail",
           level: float = 0.95, na_rm: bool = False, deff: bool = True) -> Totals:
    """Weighted totals of several columns per domain with their joint covariance.

    ``columns``: list of column names, or a mapping ``{name: column name | array | None}``
    (``None`` = the constant 1, i.e. the estimated population size). Feed the result to
    :func:`delta` for any smooth function of the totals, e.g. K04
    ``(A/B)/(C/D)``. One grouped pass over the data, then small numpy algebra.
    """
    table = grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                         na_rm=na_rm, deff=deff)
    return totals_from_sums(table, singleton=singleton, level=level)


def delta(totals: Totals, func: Callable[[np.ndarray], np.ndarray],
          grad: Callable[[np.ndarray], np.ndarray], *, level: float | None = None) -> pd.DataFrame:
    """Estimate ``g(Y_1..Y_k)`` per domain with the delta-method (linearised) variance.

    ``func(T)`` and ``grad(T)`` take ``T = totals.estimate.to_numpy()`` (n_domains x k, columns
    in ``totals.columns`` order) and return ``g`` (n_domains,) and ``dg/dY`` (n_domains x k).
    ``var = grad^T cov grad``. Returns the ``by`` columns, estimate, se, ci_low, ci_high, n, df,
    deff (see the module docstring for the design-effect definition).

    Example (K04, relative productivity ``(A/B)/(C/D)``)::

        t = survey.totals(panel, {"A": va_msme, "B": emp_msme, "C": va_large, "D": emp_large}, ...)
        f = lambda T: (T[:, 0] / T[:, 1]) / (T[:, 2] / T[:, 3])
        g = lambda T: f(T)[:, None] * np.column_stack(
            [1 / T[:, 0], -1 / T[:, 1], -1 / T[:, 2], 1 / T[:, 3]])
        survey.delta(t, f, g)
    """
    level = totals.level if level is None else level
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
    df = totals.df
    tq = stats.t.ppf((1 + level) / 2, df) if df > 0 else np.nan
    out = totals.keys.copy()
    out["estimate"] = g
    out["se"] = se
    out["ci_low"] = g - tq * se
    out["ci_high"] = g + tq * se
    out["n"] = totals.n.astype(np.int64)
    out["df"] = np.full(n_dom, df, dtype=np.int64)
    out["deff"] = _deff(totals, gr, var)
    out.attrs["design"] = dict(totals.design)
    return out


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
def ratio(data: pd.DataFrame, numerator: str, denominator: str | None = None, *,
          weight: str | None = None, strata: str | None = None, psu: str | None = None,
          by: str | Sequence[str] | None = None, singleton: str = "fail",
          level: float = 0.95, na_rm: bool = False, deff: bool = True) -> pd.DataFrame:
    """Ratio of weighted totals ``R_d = sum_d w y / sum_d w x`` per domain, linearised SE.

    ``denominator=None`` gives the mean (proportion for a 0/1 or boolean column),
    ``x = 1``. Variance of the linearised variable ``u = (y - R_d x) / X_d`` over the full
    design (Woodruff 1971). Returns one row per domain: ``by`` columns, estimate, se, ci_low,
    ci_high (t with df = #PSUs - #strata), n (unweighted rows), df, deff. A domain with
    ``X_d = 0`` has estimate NaN. ``result.attrs["design"]`` describes the design used.
    """
    cols = {numerator: numerator, (denominator if denominator is not None else "__one__"):
            denominator}
    if denominator == numerator:
        cols = {numerator: numerator, "__denominator__": denominator}
    t = totals(data, cols, weight=weight, strata=strata, psu=psu, by=by, singleton=singleton,
               level=level, na_rm=na_rm, deff=deff)

    def f(tt: np.ndarray) -> np.ndarray:
        return tt[:, 0] / tt[:, 1]

    def g(tt: np.ndarray) -> np.ndarray:
        return np.column_stack([1.0 / tt[:, 1], -tt[:, 0] / tt[:, 1] ** 2])

    return delta(t, f, g)


def total(data: pd.DataFrame, column: str, *, weight: str | None = None,
          strata: str | None = None, psu: str | None = None,
          by: str | Sequence[str] | None = None, singleton: str = "fail",
          level: float = 0.95, na_rm: bool = False, deff: bool = True) -> pd.DataFrame:
    """Weighted total ``Y_d = sum_d w y`` per domain with its Taylor SE (columns as ratio())."""
    t = totals(data, [column], weight=weight, strata=strata, psu=psu, by=by,
               singleton=singleton, level=level, na_rm=na_rm, deff=deff)
    return delta(t, lambda tt: tt[:, 0], lambda tt: np.ones_like(tt))
