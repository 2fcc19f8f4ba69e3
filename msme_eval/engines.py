"""Stage (a) of the design-based estimator on every engine: pandas, DuckDB (Parquet, out of core), Spark.

:mod:`msme_eval.survey` splits estimation into (a) :func:`grouped_sums`, one grouped pass of
weighted sums per (domain, stratum, PSU), and (b) :func:`survey.totals_from_sums`, small numpy
variance algebra on that table. Only (a) touches every row, so only (a) needs to run where the
data live; the estimators (``survey.ratio/total/mean/totals(..., engine=...)``) call it here.
In memory it is :func:`pandas_grouped_sums` (``np.bincount`` over combined key codes); on
DuckDB and Spark the *same table* (same columns, same ``attrs``; the same rows, in the engine's
order unless ``sort=True``) comes from SQL::

    SELECT <by...>, strata AS __stratum__, psu AS __psu__, <missing-value flag> AS __excluded__,
           COUNT(*) AS n, SUM(w * y) AS "w*y", SUM(w * y * x) AS "w*x*y", ...
    FROM data GROUP BY ALL

and stage (b) gives every engine the same estimates and SEs. The table's vocabulary
(``STRATUM``, ``PSU``, ``EXCLUDED``, :func:`product_key`, :func:`sum_name`,
:func:`needed_products`) is public: stage (b) reads the table through it.

The engine is chosen from the input (or forced with ``engine=``):

* ``pandas.DataFrame`` -> ``"pandas"`` (:func:`pandas_grouped_sums`, in memory);
* ``str`` / ``os.PathLike`` of a Parquet file, glob or directory (hive partitions such as
  ``country=VNM/year=2020/`` are read as columns) or a ``duckdb.DuckDBPyRelation`` ->
  ``"duckdb"``: streaming, out of core; ``memory_limit`` (e.g. ``"1GB"``) caps DuckDB's memory,
  spilling to ``temp_directory`` when the hash table does not fit;
* ``pyspark.sql.DataFrame`` -> ``"spark"`` (the same SQL on a temporary view);
* ``polars.DataFrame`` / ``polars.LazyFrame`` -> ``"duckdb"`` (DuckDB scans the Arrow data).

Semantics (identical to the pandas path, by construction of the SQL):

* **Missing values**: SQL ``NULL`` *and* floating ``NaN`` are both "missing" (pandas writes NaN
  as Parquet NULL, other tools may write NaN; SQL ``SUM`` skips NULL but propagates NaN and
  DuckDB sorts NaN above every number, so NaN is turned into NULL first). Missing in a used
  column raises :class:`SurveyDesignError` (also ``survey.SurveyDesignError``) unless ``na_rm=True``, which sets the
  ``__excluded__`` flag exactly as pandas does (rows stay in the design).
* **Excluded rows with a missing domain label**: pandas files them under the smallest label of
  that column; the SQL path does the same (smallest in SQL order) so the tables match. Stage (b)
  never looks at the labels of excluded rows, so this only matters for table equality. For an
  *ordered categorical* domain column read back from Parquet the SQL order is lexical, not the
  category order -- estimates are unaffected.
* **Float summation order** differs (DuckDB and Spark add in parallel, per thread/partition, in
  an unspecified order; pandas adds in row order with ``np.bincount``). Sums agree to a few ulps,
  so parity is tested at relative tolerance 1e-9 (the issue's bar), not bit-for-bit.
* Booleans count as 0/1 (``CAST(... AS DOUBLE)``); text columns are refused, as in pandas.
* Error messages cannot name DataFrame index labels; they name the file and the 0-based row
  within it (``file_row_number``) for Parquet input, else show up to 10 offending rows.

Disclosure magnitudes (:func:`sql_cell_stats`, called by :func:`msme_eval.disclosure.cell_stats`
for a non-pandas input) -- per cell: distinct contributors with a non-zero
contribution, the two largest absolute contributions and the total -- are computed with a
window function (``row_number() OVER (PARTITION BY cell ORDER BY contribution DESC)``) and
match :func:`msme_eval.disclosure.cell_stats`.

References: Lumley (2010) *Complex Surveys*, ch. 2-3 (the estimator); DuckDB "Memory management"
(``memory_limit``, spilling) and Spark SQL reference (``GROUP BY``, window functions).
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .contract import SIZE_CLASS_DTYPE

__all__ = ["ENGINES", "engine_of", "connect", "scan_parquet", "columns_of", "to_pandas",
           "grouped_sums", "pandas_grouped_sums", "sql_cell_stats", "SurveyDesignError",
           "STRATUM", "PSU", "EXCLUDED", "product_key", "sum_name", "needed_products",
           "check_domain_names", "as_list", "factorize"]

ENGINES = ("pandas", "duckdb", "spark")
_MAX_ROWS_SHOWN = 10


# --------------------------------------------------------------------------------------------
# the sums table: names shared by every engine and by stage (b)
# --------------------------------------------------------------------------------------------
STRATUM = "__stratum__"
PSU = "__psu__"
EXCLUDED = "__excluded__"
_MAX_ROWS_NAMED = 10

ProductKey = tuple[int, tuple[int, ...]]


class SurveyDesignError(ValueError):
    """Invalid survey input (weights, design variables, missing values, singleton strata)."""


def as_list(by: str | Sequence[str] | None) -> list[str]:
    """``None`` -> ``[]``, ``"a"`` -> ``["a"]``, a sequence -> a list (domain/cell columns)."""
    if by is None:
        return []
    if isinstance(by, str):
        return [by]
    return list(by)


def product_key(wpow: int, vars_: Sequence[int | None]) -> ProductKey:
    """The key of the product ``w^wpow * y_j * y_l ...`` (``None`` = the constant 1, dropped)."""
    return wpow, tuple(sorted(v for v in vars_ if v is not None))


def sum_name(key: ProductKey, names: Sequence[str]) -> str:
    """Column name of a product in the sums table: ``w*turnover``, ``w2*y*x`` (w2 = w^2),
    ``w4`` (w^4)."""
    wpow, vars_ = key
    parts = ["w" if wpow == 1 else f"w{wpow}"] + [names[v] for v in vars_]
    return "*".join(parts)


def needed_products(k_vars: int, ones: Sequence[bool], *, rows_are_psus: bool, deff: bool,
                    calibrated: bool = False, design_df: bool = False) -> list[ProductKey]:
    """Product columns stage (a) must sum, deduplicated (a constant-1 variable drops out).

    Always ``w*y_j``; for the design effect ``w`` and ``w*y_j*y_l``; when rows are the PSUs
    ``w2*y_j*y_l`` (their squares); for a calibrated variance ``w`` and, when rows are the PSUs,
    ``w2*y_j`` and ``w2`` (cross-products with the calibration variable, the weight); for the
    degrees of freedom from the design (``survey`` ``df="design"``) ``w2`` and, when rows are
    the PSUs, ``w4`` (each PSU's sum of squared weights and its square).
    """
    var = [None if ones[j] else j for j in range(k_vars)]
    keys: list[ProductKey] = []

    def add(key: ProductKey) -> None:
        if key not in keys:
            keys.append(key)

    for j in range(k_vars):
        add(product_key(1, [var[j]]))
    if deff or calibrated:
        add(product_key(1, []))
    for j in range(k_vars):
        for m in range(j, k_vars):
            if deff:
                add(product_key(1, [var[j], var[m]]))
            if rows_are_psus:
                add(product_key(2, [var[j], var[m]]))
    if calibrated and rows_are_psus:
        for j in range(k_vars):
            add(product_key(2, [var[j]]))
        add(product_key(2, []))
    if design_df:
        add(product_key(2, []))
        if rows_are_psus:
            add(product_key(4, []))
    return keys


def check_domain_names(by_cols: Sequence[str], extra_prefixes: tuple[str, ...] = ()) -> None:
    """Refuse domain column names that clash with the sums table's own columns."""
    reserved = [c for c in by_cols if c in ("n", "w", "w2", "w4", STRATUM, PSU, EXCLUDED)
                or c.startswith(("w*", "w2*", *extra_prefixes))]
    if reserved:
        raise ValueError(f"domain column name(s) {reserved} clash with the names of the sums "
                         "table; rename them before estimation")


def _set_table_attrs(table: pd.DataFrame, *, names: list[str], ones: list[bool],
                     by_cols: list[str], weight: str | None, strata: str | None,
                     psu: str | None, deff: bool, calibrated: bool,
                     design_df: bool = False) -> pd.DataFrame:
    table.attrs.update(variables=names, ones=ones, by=by_cols, rows_are_psus=psu is None,
                       deff=deff, calibrated=calibrated, strata=strata, psu=psu, weight=weight,
                       design_df=design_df)
    return table


# --------------------------------------------------------------------------------------------
# stage (a) in memory (pandas + numpy)
# --------------------------------------------------------------------------------------------
def _name_rows(index: pd.Index, mask: np.ndarray) -> str:
    labels = index[mask]
    shown = ", ".join(map(str, labels[:_MAX_ROWS_NAMED].tolist()))
    more = len(labels) - _MAX_ROWS_NAMED
    return f"{len(labels)} row(s) (index {shown}{f' and {more} more' if more > 0 else ''})"


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


def factorize(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Sorted integer codes (int64, -1 for missing) and the distinct labels of a column."""
    codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), pd.Index(uniques)


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


def _check_frame(data: Any, spec: Mapping[str, Any], weight: str | None, strata: str | None,
                 psu: str | None, by_cols: list[str]) -> None:
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
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
    if len(data) == 0:
        raise SurveyDesignError("data has no rows")


def _variables(data: pd.DataFrame, spec: Mapping[str, Any]) -> list[np.ndarray | None]:
    """Each variable as float64 (``None`` = constant 1); infinite values are an error."""
    index, n_rows = data.index, len(data)
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
    return values


def _weights(data: pd.DataFrame, weight: str | None) -> np.ndarray:
    """The weights (1 without a weight column); missing, infinite or <= 0 is an error."""
    if weight is None:
        return np.ones(len(data))
    w = _numeric(data[weight], weight)
    bad = ~np.isfinite(w)
    if bad.any():
        raise SurveyDesignError(
            f"weight column {weight!r} is missing or infinite in {_name_rows(data.index, bad)}. "
            "Fix: every sampled unit needs a finite weight > 0."
        )
    bad = w <= 0
    if bad.any():
        raise SurveyDesignError(
            f"weight column {weight!r} is <= 0 in {_name_rows(data.index, bad)}. Fix: weights "
            "must be > 0 (drop out-of-scope units before estimation, or use a domain)."
        )
    return w


def _missing_values(data: pd.DataFrame, spec: Mapping[str, Any],
                    values: list[np.ndarray | None], na_rm: bool) -> np.ndarray:
    """Rows left out of every domain (``na_rm``); without ``na_rm`` a missing value raises."""
    excluded = np.zeros(len(data), dtype=bool)
    for name, arr in zip(spec, values):
        if arr is None:
            continue
        nan = np.isnan(arr)
        if nan.any():
            if not na_rm:
                raise SurveyDesignError(
                    f"column {spec[name] if isinstance(spec[name], str) else name!r} is missing "
                    f"in {_name_rows(data.index, nan)}. Fix: impute or remove them, or pass "
                    "na_rm=True to leave those rows out of the domains (they stay in the design)."
                )
            excluded |= nan
    return excluded


def _domain_codes(data: pd.DataFrame, by_cols: list[str], na_rm: bool,
                  excluded: np.ndarray) -> tuple[list[np.ndarray], list[pd.Index]]:
    """Codes of the ``by`` columns; a missing label raises, or (``na_rm``) excludes the row."""
    by_codes: list[np.ndarray] = []
    by_uniques: list[pd.Index] = []
    for col in by_cols:
        codes, uniques = factorize(data[col])
        nan = codes < 0
        if nan.any():
            if not na_rm:
                raise SurveyDesignError(
                    f"domain column {col!r} is missing in {_name_rows(data.index, nan)}. Fix: "
                    "fill it with an explicit label (e.g. 'unknown') or pass na_rm=True to leave "
                    "those rows out of every domain."
                )
            if nan.all():
                raise SurveyDesignError(f"domain column {col!r} is missing in every row")
            excluded |= nan
            codes = np.where(nan, 0, codes)
        by_codes.append(codes)
        by_uniques.append(uniques)
    return by_codes, by_uniques


def _design_code(data: pd.DataFrame, role: str, col: str | None) -> tuple[np.ndarray, pd.Index]:
    """Codes of the strata (or PSU) column; a single code 0 without one; missing raises."""
    if col is None:
        return np.zeros(len(data), dtype=np.int64), pd.Index([0])
    codes, uniques = factorize(data[col])
    nan = codes < 0
    if nan.any():
        raise SurveyDesignError(
            f"{role} column {col!r} is missing in {_name_rows(data.index, nan)}. Fix: every row "
            f"needs its {role} label."
        )
    return codes, uniques


def _bincount_products(gid: np.ndarray, n_groups: int, w: np.ndarray,
                       values: list[np.ndarray | None], products: list[ProductKey],
                       names: list[str]) -> dict[str, np.ndarray]:
    """``SUM(w^p * y_j * y_l ...)`` per group, reusing shared prefixes of the products."""
    cache: dict[ProductKey, np.ndarray] = {(1, ()): w}
    for wpow in sorted({wpow for wpow, _ in products} - {1}):
        cache[(wpow, ())] = w**wpow

    def product(key: ProductKey) -> np.ndarray:
        if key not in cache:  # reuse the product of all but the last factor
            wpow, vars_ = key
            cache[key] = product((wpow, vars_[:-1])) * values[vars_[-1]]
        return cache[key]

    prefixes = {(wpow, vars_[:-1]) for wpow, vars_ in products if vars_}
    sums: dict[str, np.ndarray] = {}
    for key in sorted(products, key=lambda kv: (kv[0], len(kv[1]), kv[1])):
        sums[sum_name(key, names)] = np.bincount(gid, weights=product(key), minlength=n_groups)
        if key not in prefixes and key[1]:
            del cache[key]  # keep only what later products reuse (peak memory)
    return {sum_name(k, names): sums[sum_name(k, names)] for k in products}


def pandas_grouped_sums(data: pd.DataFrame, columns: Mapping[str, Any] | Sequence[str], *,
                        weight: str | None = None, strata: str | None = None,
                        psu: str | None = None, by: str | Sequence[str] | None = None,
                        na_rm: bool = False, deff: bool = True,
                        calibrated: bool = False, design_df: bool = False) -> pd.DataFrame:
    """Stage (a) in memory: the small table of weighted sums per (domain, stratum[, PSU]).

    Columns: the ``by`` columns, ``__stratum__``, ``__psu__`` (absent when rows are the PSUs),
    ``__excluded__`` (True for the rows left out of every domain by ``na_rm``), ``n`` (row count)
    and one column per product (:func:`needed_products`), named like ``w*turnover``,
    ``w*turnover*employees``, ``w2*turnover*turnover`` (``w2`` = squared weight; ``design_df``
    adds ``w2`` and, without PSUs, ``w4``). ``columns``
    maps estimate names to column names (or arrays aligned with ``data``); a value of ``None``
    means the constant 1. The table's attrs carry ``variables`` (names, in order),
    ``rows_are_psus`` and the design column names.
    """
    by_cols = as_list(by)
    spec: dict[str, Any] = (dict(columns) if isinstance(columns, Mapping)
                            else {c: c for c in columns})
    _check_frame(data, spec, weight, strata, psu, by_cols)
    names = list(spec)
    values = _variables(data, spec)
    w = _weights(data, weight)
    excluded = _missing_values(data, spec, values, na_rm)
    by_codes, by_uniques = _domain_codes(data, by_cols, na_rm, excluded)
    stratum_codes, stratum_uniques = _design_code(data, "strata", strata)
    if psu is not None:
        psu_codes, psu_uniques = _design_code(data, "psu", psu)
    check_domain_names(by_cols)
    ones = [v is None for v in values]
    products = needed_products(len(names), ones, rows_are_psus=psu is None, deff=deff,
                               calibrated=calibrated, design_df=design_df)

    # one grouped pass: combine the key codes into one group id (excluded flag, domains,
    # stratum, PSU; combined right to left: PSU within stratum), then bincount
    all_codes = [excluded.astype(np.int64), *by_codes, stratum_codes]
    sizes = [2, *[max(len(u), 1) for u in by_uniques], len(stratum_uniques)]
    if psu is not None:
        all_codes.append(psu_codes)
        sizes.append(len(psu_uniques))
    gid, comps = _group_ids(all_codes, sizes, len(data))
    n_groups = len(comps[0])
    out: dict[str, Any] = {col: by_uniques[i].take(comps[1 + i]) for i, col in enumerate(by_cols)}
    out[STRATUM] = stratum_uniques.take(comps[1 + len(by_cols)])
    if psu is not None:
        out[PSU] = psu_uniques.take(comps[-1])
    out[EXCLUDED] = comps[0].astype(bool)
    out["n"] = np.bincount(gid, minlength=n_groups).astype(np.int64)
    clean = [None if v is None else (np.where(excluded, 0.0, v) if excluded.any() else v)
             for v in values]
    out.update(_bincount_products(gid, n_groups, w, clean, products, names))
    # Index objects keep the dtype of the domain columns (category, boolean, str, int)
    table = pd.DataFrame({k: (v.array if isinstance(v, pd.Index) else v) for k, v in out.items()})
    return _set_table_attrs(table, names=names, ones=ones, by_cols=by_cols, weight=weight,
                            strata=strata, psu=psu, deff=deff, calibrated=calibrated,
                            design_df=design_df)


# --------------------------------------------------------------------------------------------
# engine detection and DuckDB sources
# --------------------------------------------------------------------------------------------
def _is_spark(data: Any) -> bool:
    mod = type(data).__module__
    return mod.startswith("pyspark.sql") and type(data).__name__ == "DataFrame"


def _is_polars(data: Any) -> bool:
    return type(data).__module__.startswith("polars") and type(data).__name__ in (
        "DataFrame", "LazyFrame")


def _is_duckdb_relation(data: Any) -> bool:
    return type(data).__name__ == "DuckDBPyRelation"


def engine_of(data: Any) -> str:
    """The engine for an input: ``"pandas"``, ``"duckdb"`` or ``"spark"`` (see module doc)."""
    if isinstance(data, pd.DataFrame):
        return "pandas"
    if isinstance(data, (str, os.PathLike)) or _is_duckdb_relation(data) or _is_polars(data):
        return "duckdb"
    if _is_spark(data):
        return "spark"
    raise TypeError(
        f"cannot estimate on a {type(data).__module__}.{type(data).__name__}. Pass a pandas "
        "DataFrame, a Parquet path/glob/directory, a duckdb relation, a polars frame or a "
        "pyspark DataFrame."
    )


def connect(*, memory_limit: str | None = None, threads: int | None = None,
            temp_directory: str | os.PathLike | None = None) -> Any:
    """A new DuckDB connection with a memory cap (``"512MB"``), thread count and spill folder.

    ``preserve_insertion_order=false`` lets DuckDB stream aggregates without buffering rows.
    ``threads`` defaults to the cores this process may use (``os.sched_getaffinity``; DuckDB's
    own default can see the host's cores inside a container). With a cap and no ``threads``,
    threads = min(cores, cap / 64 MB): each thread's hash
    aggregate needs a few tens of MB before it can spill, so 2 threads under a 64 MB cap run
    out of memory where 1 thread completes (measured on DuckDB 2.0).
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    if threads is None:
        threads = _cores()
        if memory_limit is not None:  # hash aggregation needs ~64 MB per thread (and spill)
            threads = max(1, min(threads, _megabytes(memory_limit) // 64))
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{_plain(memory_limit)}'")
    con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = '{_plain(str(temp_directory))}'")
    return con


def _cores() -> int:
    """The cores this process may run on (CPU affinity / container limits), else the count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _megabytes(size: str) -> int:
    """'64MB', '1.5GB', '512MiB' -> megabytes (int)."""
    text = size.strip().upper().replace("IB", "B")
    for unit, mult in (("TB", 1e6), ("GB", 1e3), ("MB", 1.0), ("KB", 1e-3), ("B", 1e-6)):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * mult)
            except ValueError:
                break
    raise ValueError(f"memory_limit {size!r} is not a size like '512MB' or '4GB'")


def _plain(text: str) -> str:
    if "'" in text:
        raise ValueError(f"quote character not allowed in {text!r}")
    return text


def _parquet_files(path: str | os.PathLike) -> str | list[str]:
    """A Parquet file, glob or directory (searched recursively) -> what read_parquet takes."""
    p = Path(path)
    text = str(path)
    if any(ch in text for ch in "*?["):
        return text
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"no *.parquet files under directory {p}. Fix: point at a "
                                    "Parquet file, glob or partitioned dataset folder.")
        return files
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist. Fix: pass an existing Parquet file, a "
                                "glob such as 'data/processed/panel/**/*.parquet' or a folder.")
    if p.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"{p} is not a Parquet file (suffix {p.suffix!r}); only Parquet is "
                         "read out of core. Fix: convert it, e.g. with io.validate_file.")
    return text


def scan_parquet(path: str | os.PathLike, *, con: Any = None, row_numbers: bool = False) -> Any:
    """Lazy DuckDB relation over Parquet file(s); hive partition folders become columns.

    ``row_numbers=True`` adds ``filename`` and ``file_row_number`` (for error messages).
    """
    con = connect() if con is None else con
    files = _parquet_files(path)
    return con.read_parquet(files, hive_partitioning=True, union_by_name=True,
                            filename=row_numbers, file_row_number=row_numbers)


# --------------------------------------------------------------------------------------------
# SQL dialects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dialect:
    name: str
    q: str  # identifier quote character

    def ident(self, name: str) -> str:
        if self.q in name:
            raise ValueError(f"column name {name!r} contains a {self.q} character")
        return f"{self.q}{name}{self.q}"

    def isinf(self, x: str) -> str:
        if self.name == "duckdb":
            return f"isinf({x})"
        return f"(abs({x}) = CAST('Infinity' AS DOUBLE))"

    def num(self, col: str) -> str:
        """Column as DOUBLE with NaN turned into NULL."""
        c = f"CAST({self.ident(col)} AS DOUBLE)"
        if self.name == "duckdb":
            # not isnan(): DuckDB (2.0) folds isnan(col) to FALSE from Parquet min/max
            # statistics, which leave NaN out, so a NaN stored in Parquet would slip through
            return f"(CASE WHEN isfinite({c}) OR isinf({c}) THEN {c} ELSE NULL END)"
        return f"(CASE WHEN isnan({c}) THEN NULL ELSE {c} END)"

    def distinct_list(self, x: str) -> str:
        """Aggregate: the distinct values of ``x`` in the group as a list (NULLs: dropped by
        the caller)."""
        return f"list(DISTINCT {x})" if self.name == "duckdb" else f"collect_set({x})"

    def null_safe_eq(self, a: str, b: str) -> str:
        return f"({a} IS NOT DISTINCT FROM {b})" if self.name == "duckdb" else f"({a} <=> {b})"


_DUCK = _Dialect("duckdb", '"')
_SPARK = _Dialect("spark", "`")

_NUMERIC_DUCK = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                 "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")


# --------------------------------------------------------------------------------------------
# a thin runner per engine: schema, SQL over the source (as view "__src__"), collect to pandas
# --------------------------------------------------------------------------------------------
class _Runner:
    dialect: _Dialect
    describe: str

    def schema(self) -> dict[str, bool]:  # column -> numeric/boolean?
        raise NotImplementedError

    def query(self, sql: str, *, row_numbers: bool = False) -> pd.DataFrame:
        raise NotImplementedError

    def floats(self) -> set[str]:
        """Floating-point columns (the only ones that can hold NaN)."""
        raise NotImplementedError

    def query_arrow(self, sql: str) -> Any:
        """The result of ``sql`` as a ``pyarrow.Table`` (no pandas conversion: numeric columns
        go to numpy without copies, text columns can be dictionary-encoded)."""
        raise NotImplementedError

    def materialise(self, name: str, sql: str) -> None:
        """Store the result of ``sql`` (over the source ``__src__``) as temporary table ``name``
        (DuckDB: a temp table, spilled to disk under a memory limit; Spark: a persisted view)."""
        raise NotImplementedError

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """Make a small pandas table visible to SQL as ``name``."""
        raise NotImplementedError

    def write_partitioned(self, sql: str, folder: str, partition_by: str) -> None:
        """Write the result of ``sql`` (over ``__src__``) under ``folder``, Hive-partitioned by
        the integer column ``partition_by`` (``folder/<col>=<v>/<files>``, the column itself
        not stored): out of core, one pass. DuckDB: Arrow IPC files (``.arrow``; streamed in
        record batches, no encoding: they are temporary); Spark: Parquet (``partitionBy``).
        :func:`read_partition` reads either."""
        raise NotImplementedError

    def drop(self, name: str) -> None:
        """Forget a table made by :meth:`materialise` or :meth:`register`."""
        raise NotImplementedError


class _DuckRunner(_Runner):
    dialect = _DUCK

    def __init__(self, data: Any, con: Any = None, memory_limit: str | None = None,
                 threads: int | None = None, temp_directory: str | os.PathLike | None = None
                 ) -> None:
        self.path = None
        if isinstance(data, (str, os.PathLike)):
            self.path = data
            self.con = con if con is not None else connect(
                memory_limit=memory_limit, threads=threads, temp_directory=temp_directory)
            self.rel = scan_parquet(data, con=self.con)
            self.describe = f"Parquet {data}"
        else:
            if memory_limit is not None or threads is not None or temp_directory is not None:
                if con is None:
                    con = connect(memory_limit=memory_limit, threads=threads,
                                  temp_directory=temp_directory)
            if _is_duckdb_relation(data):
                # the relation's own connection (DuckDB keeps it as ``_con``; no public name):
                # the second variance pass registers tables on it
                self.con, self.rel = (con if con is not None else getattr(data, "_con", None)), data
            else:
                self.con = con if con is not None else connect()
                if _is_polars(data):
                    frame = data.collect() if type(data).__name__ == "LazyFrame" else data
                    self.rel = self.con.from_arrow(frame.to_arrow())
                elif isinstance(data, pd.DataFrame):
                    self.rel = self.con.from_df(data)
                else:
                    raise TypeError(f"duckdb engine cannot read {type(data).__name__}")
            self.describe = f"{type(data).__name__}"

    def schema(self) -> dict[str, bool]:
        out = {}
        for name, typ in zip(self.rel.columns, self.rel.types):
            out[name] = str(typ).upper().startswith(_NUMERIC_DUCK)
        return out

    def floats(self) -> set[str]:
        return {name for name, typ in zip(self.rel.columns, self.rel.types)
                if str(typ).upper() in ("FLOAT", "DOUBLE", "REAL")}

    def query(self, sql: str, *, row_numbers: bool = False) -> pd.DataFrame:
        rel = self.rel
        if row_numbers and self.path is not None:
            rel = scan_parquet(self.path, con=self.con, row_numbers=True)
        return _arrow_to_pandas(rel.query("__src__", sql).to_arrow_table())

    def query_arrow(self, sql: str) -> Any:
        return self.rel.query("__src__", sql).to_arrow_table()

    def materialise(self, name: str, sql: str) -> None:
        res = self.rel.query("__src__", f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        if res is not None:  # a relation: make sure the statement ran
            res.fetchall()

    def register(self, name: str, frame: pd.DataFrame) -> None:
        if self.con is None:
            raise ValueError("a DuckDB relation needs its connection: pass con=<the connection "
                             "that made the relation>")
        self.con.register(name, frame)

    def write_partitioned(self, sql: str, folder: str, partition_by: str) -> None:
        import pyarrow as pa

        writers: dict[int, Any] = {}
        try:
            for batch in self.rel.query("__src__", sql).to_arrow_reader(1 << 18):
                key = batch.column(partition_by).to_numpy()
                order = np.argsort(key, kind="stable")
                vals, starts = np.unique(key[order], return_index=True)
                rows = batch.drop_columns([partition_by]).take(pa.array(order))
                for v, lo, hi in zip(vals, starts, [*starts[1:], len(key)]):
                    if int(v) not in writers:
                        part = Path(folder) / f"{partition_by}={int(v)}"
                        part.mkdir(parents=True, exist_ok=True)
                        writers[int(v)] = pa.ipc.new_file(str(part / "part.arrow"), rows.schema)
                    writers[int(v)].write_batch(rows.slice(lo, hi - lo))
        finally:
            for w in writers.values():
                w.close()

    def drop(self, name: str) -> None:
        kind = self.con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = ?",
                                [name]).fetchall()
        self.con.execute(f"DROP {'VIEW' if kind else 'TABLE'} IF EXISTS {name}")


class _SparkRunner(_Runner):
    dialect = _SPARK

    def __init__(self, data: Any) -> None:
        self.df = data
        self.spark = data.sparkSession
        self.describe = "Spark DataFrame"

    def schema(self) -> dict[str, bool]:
        from pyspark.sql.types import BooleanType, NumericType

        return {f.name: isinstance(f.dataType, (NumericType, BooleanType))
                for f in self.df.schema.fields}

    def query(self, sql: str, *, row_numbers: bool = False) -> pd.DataFrame:
        view = f"msme_eval_src_{uuid.uuid4().hex}"
        self.df.createOrReplaceTempView(view)
        try:
            res = self.spark.sql(sql.replace("__src__", view))
            if hasattr(res, "toArrow"):  # Spark >= 4: Arrow batches, no per-Row pickling
                return _arrow_to_pandas(res.toArrow())
            names = res.columns
            rows = res.collect()
        finally:
            self.spark.catalog.dropTempView(view)
        return pd.DataFrame([tuple(r) for r in rows], columns=names) if rows else \
            pd.DataFrame({c: pd.Series(dtype="float64") for c in names})

    def floats(self) -> set[str]:
        from pyspark.sql.types import DoubleType, FloatType

        return {f.name for f in self.df.schema.fields
                if isinstance(f.dataType, (DoubleType, FloatType))}

    def query_arrow(self, sql: str) -> Any:
        import pyarrow as pa

        view = f"msme_eval_src_{uuid.uuid4().hex}"
        self.df.createOrReplaceTempView(view)
        try:
            res = self.spark.sql(sql.replace("__src__", view))
            if hasattr(res, "toArrow"):  # Spark >= 4
                return res.toArrow()
            return pa.Table.from_pandas(res.toPandas(), preserve_index=False)
        finally:
            self.spark.catalog.dropTempView(view)

    def materialise(self, name: str, sql: str) -> None:
        view = f"msme_eval_src_{uuid.uuid4().hex}"
        self.df.createOrReplaceTempView(view)
        try:
            res = self.spark.sql(sql.replace("__src__", view)).persist()
            res.count()  # compute now, while the source view exists
        finally:
            self.spark.catalog.dropTempView(view)
        res.createOrReplaceTempView(name)
        self._kept = {**getattr(self, "_kept", {}), name: res}

    def register(self, name: str, frame: pd.DataFrame) -> None:
        self.spark.createDataFrame(frame).createOrReplaceTempView(name)

    def write_partitioned(self, sql: str, folder: str, partition_by: str) -> None:
        view = f"msme_eval_src_{uuid.uuid4().hex}"
        self.df.createOrReplaceTempView(view)
        try:
            self.spark.sql(sql.replace("__src__", view)).write.partitionBy(partition_by) \
                .mode("overwrite").parquet(str(folder))
        finally:
            self.spark.catalog.dropTempView(view)

    def drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        kept = getattr(self, "_kept", {}).pop(name, None)
        if kept is not None:
            kept.unpersist()


def read_partition(files: Sequence[str]) -> Any:
    """The rows of files written by ``write_partitioned`` (Arrow IPC, memory-mapped, or
    Parquet) as one ``pyarrow.Table`` (the partition column not added)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tabs = [pa.ipc.open_file(pa.memory_map(str(f))).read_all() if str(f).endswith(".arrow")
            else pq.ParquetFile(f).read() for f in files]
    return pa.concat_tables(tabs)


def partition_rows(file: str) -> int:
    """Number of rows of a file written by ``write_partitioned`` (from its metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if str(file).endswith(".arrow"):
        r = pa.ipc.open_file(pa.memory_map(str(file)))
        return sum(r.get_batch(i).num_rows for i in range(r.num_record_batches))
    return pq.ParquetFile(file).metadata.num_rows


def _arrow_to_pandas(tab: Any) -> pd.DataFrame:
    return tab.to_pandas()


def runner(data: Any, engine: str | None, **kw: Any) -> _Runner:
    """The SQL runner (schema, query, temporary tables) for a DuckDB or Spark input."""
    engine = engine_of(data) if engine is None else engine
    if engine == "duckdb":
        return _DuckRunner(data, **kw)
    if engine == "spark":
        if not _is_spark(data):
            raise TypeError("engine='spark' needs a pyspark DataFrame; read Parquet with "
                            "spark.read.parquet(path) first")
        if any(v is not None for v in kw.values()):
            raise ValueError("con/memory_limit/threads/temp_directory apply to DuckDB only; "
                             "configure Spark on its session")
        return _SparkRunner(data)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")


def columns_of(data: Any) -> list[str]:
    """Column names of any supported input (a Parquet dataset includes its hive partitions)."""
    if isinstance(data, pd.DataFrame):
        return list(data.columns)
    return list(runner(data, None).schema())


def to_pandas(data: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Materialise (the ``columns`` of) any supported input as a pandas DataFrame.

    Projection is pushed down (only those columns are read). Arrow types are mapped to the
    panel contract's pandas dtypes: booleans -> nullable ``boolean``, integers with missing
    values -> ``Int64``, text -> ``str``, ``size_class`` -> the ordered categorical
    ``schema.SIZE_CLASS_DTYPE``. In memory: for a panel that does not fit, estimate with
    :func:`totals` / :func:`ratio` on the engine instead.
    """
    import pyarrow as pa

    if isinstance(data, pd.DataFrame):
        return data if columns is None else data[list(columns)]
    if _is_spark(data):
        frame = data if columns is None else data.select(*[f"`{c}`" for c in columns])
        tab = frame.toArrow()
    else:
        run = _DuckRunner(data)
        cols = "*" if columns is None else ", ".join(_DUCK.ident(c) for c in columns)
        tab = run.rel.query("__src__", f"SELECT {cols} FROM __src__").to_arrow_table()
    out = {}
    for name, col in zip(tab.column_names, tab.columns):
        typ = col.type
        if pa.types.is_dictionary(typ):
            col, typ = col.cast(typ.value_type), typ.value_type
        if pa.types.is_boolean(typ):
            out[name] = pd.Series(col.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get))
        elif pa.types.is_integer(typ) and col.null_count:
            out[name] = col.to_pandas().astype("Int64")
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            out[name] = col.to_pandas().astype("str")
        else:
            out[name] = col.to_pandas()
        if name == "size_class":
            out[name] = out[name].astype(SIZE_CLASS_DTYPE)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# stage (a)
# --------------------------------------------------------------------------------------------
def _spec(columns: Mapping[str, Any] | Sequence[str]) -> dict[str, str | None]:
    spec = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    if not spec:
        raise ValueError("no columns to estimate: pass at least one column name")
    bad = [k for k, v in spec.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise TypeError(f"variables {bad} are arrays; the SQL engines need column names (or "
                        "None for the constant 1). Fix: add the derived column to the data "
                        "(a Parquet column or a computed column of the relation) first.")
    return spec


def grouped_sums(data: Any, columns: Mapping[str, Any] | Sequence[str], *,
                 weight: str | None = None, strata: str | None = None, psu: str | None = None,
                 by: str | Sequence[str] | None = None, na_rm: bool = False, deff: bool = True,
                 calibrated: bool = False, engine: str | None = None, con: Any = None,
                 memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: str | os.PathLike | None = None,
                 sort: bool = False, design_df: bool = False) -> pd.DataFrame:
    """Stage (a) on the engine of ``data``: the table of weighted sums per (domain, stratum, PSU).

    ``columns``: names or ``{name: column | None}`` (``None`` = constant 1; arrays only in
    memory); ``engine`` (default from the input type, see the module docstring); for DuckDB
    ``con`` / ``memory_limit`` / ``threads`` / ``temp_directory``. The output is the
    :func:`pandas_grouped_sums` table whatever the engine. Rows come in the engine's order
    (stage (b) does not depend on it); ``sort=True`` sorts them by ``__excluded__``, the ``by``
    columns, ``__stratum__``, ``__psu__`` (seconds on millions of groups, hence off by default).
    ``design_df=True`` adds the squared-weight sums the design-based df needs
    (:func:`needed_products`).
    """
    engine = engine_of(data) if engine is None else engine
    if engine == "pandas":
        if not isinstance(data, pd.DataFrame):
            raise TypeError("engine='pandas' needs a pandas DataFrame")
        if any(v is not None for v in (con, memory_limit, threads, temp_directory)):
            raise ValueError("con/memory_limit/threads/temp_directory apply to DuckDB only")
        table = pandas_grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                                    na_rm=na_rm, deff=deff, calibrated=calibrated,
                                    design_df=design_df)
        return _sorted(table) if sort else table
    run = runner(data, engine, con=con, memory_limit=memory_limit, threads=threads,
                  temp_directory=temp_directory)
    design = _SqlDesign(_spec(columns), weight, strata, psu, as_list(by), na_rm, deff, calibrated,
                        design_df)
    table = _sql_grouped_sums(run, design)
    return _sorted(table) if sort else table


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [*table.attrs["by"], STRATUM] + ([PSU] if PSU in table.columns else [])
    attrs = dict(table.attrs)
    out = table.sort_values([EXCLUDED, *keys], kind="stable", na_position="last")
    out = out.reset_index(drop=True)
    out.attrs.update(attrs)
    return out


@dataclass
class _SqlDesign:
    """The arguments of one SQL stage (a) and what follows from them."""

    spec: dict[str, str | None]
    weight: str | None
    strata: str | None
    psu: str | None
    by_cols: list[str]
    na_rm: bool
    deff: bool
    calibrated: bool
    design_df: bool = False

    @property
    def names(self) -> list[str]:
        return list(self.spec)

    @property
    def ones(self) -> list[bool]:
        return [v is None for v in self.spec.values()]

    @property
    def var_cols(self) -> dict[int, str]:
        return {j: c for j, c in enumerate(self.spec.values()) if c is not None}

    @property
    def products(self) -> list[ProductKey]:
        return needed_products(len(self.spec), self.ones, rows_are_psus=self.psu is None,
                               deff=self.deff, calibrated=self.calibrated,
                               design_df=self.design_df)

    @property
    def keys(self) -> list[str]:
        return [*self.by_cols, STRATUM] + ([PSU] if self.psu else []) + [EXCLUDED]


def _sql_check_columns(run: _Runner, s: _SqlDesign) -> None:
    schema = run.schema()
    wanted = [c for c in (s.weight, s.strata, s.psu, *s.by_cols) if c is not None]
    wanted += list(s.var_cols.values())
    missing = [c for c in dict.fromkeys(wanted) if c not in schema]
    if missing:
        raise KeyError(f"column(s) {missing} not found in {run.describe} (columns: "
                       f"{list(schema)}). Fix: pass existing column names.")
    for col in list(s.var_cols.values()) + ([s.weight] if s.weight else []):
        if not schema[col]:
            raise TypeError(
                f"column {col!r} of {run.describe} is not numeric or boolean; survey estimators "
                "need a numeric or boolean column. Fix: cast it (e.g. a 0/1 indicator).")
    check_domain_names(s.by_cols, ("__v",))


def _sql_query(d: _Dialect, s: _SqlDesign) -> str:
    """One grouped pass: the sums, plus three cheap check aggregates (see below)."""
    # row-level projection: keys, weight, variables (NaN -> NULL), exclusion flag
    sel = [d.ident(c) for c in s.by_cols]
    sel.append(f"{d.ident(s.strata)} AS {STRATUM}" if s.strata else f"0 AS {STRATUM}")
    if s.psu:
        sel.append(f"{d.ident(s.psu)} AS {PSU}")
    sel.append(f"{d.num(s.weight)} AS __w" if s.weight else "1.0 AS __w")
    sel += [f"{d.num(col)} AS __v{j}" for j, col in s.var_cols.items()]
    miss_terms = [f"__v{j} IS NULL" for j in s.var_cols] + (
        [f"{d.ident(c)} IS NULL" for c in s.by_cols])
    excl = f"({' OR '.join(miss_terms)})" if (s.na_rm and miss_terms) else "FALSE"
    sel.append(f"{excl} AS {EXCLUDED}")

    def factor(j: int) -> str:
        return f"(CASE WHEN {EXCLUDED} THEN 0.0 ELSE __v{j} END)" if s.na_rm else f"__v{j}"

    aggs = ["COUNT(*) AS n"]
    for key in s.products:
        wpow, vars_ = key
        expr = " * ".join(["__w"] * wpow + [factor(j) for j in vars_])
        aggs.append(f"SUM({expr}) AS {d.ident(sum_name(key, s.names))}")
    # checks folded into the same pass as THREE cheap aggregates (each aggregate state costs
    # hash-table memory per group): largest |value| over the variables and the weight (inf?),
    # smallest weight (<= 0?) and the count of missing values that are errors. Only when one
    # fires are the detailed per-column queries run, to name the column and rows.
    big = [f"abs(__v{j})" for j in s.var_cols] + (["abs(__w)"] if s.weight else [])
    checks = [f"MAX({big[0] if len(big) == 1 else 'GREATEST(' + ', '.join(big) + ')'}) AS __big"]
    if s.weight:
        checks.append("MIN(__w) AS __wmin")
    miss = _sql_error_missing(s)
    if miss:
        flags = " + ".join(f"CAST(({m} IS NULL) AS INT)" for m in miss)
        checks.append(f"CAST(SUM({flags}) AS BIGINT) AS __miss")
    keys = [*[d.ident(c) for c in s.by_cols], *s.keys[len(s.by_cols):]]
    return (f"SELECT {', '.join(keys)}, {', '.join(aggs + checks)} FROM "
            f"(SELECT {', '.join(sel)} FROM __src__) AS r GROUP BY {', '.join(keys)}")


def _sql_error_missing(s: _SqlDesign) -> list[str]:
    """Row-level columns whose missing values are an error (not an exclusion)."""
    return ([] if s.na_rm else [f"__v{j}" for j in s.var_cols]) + (["__w"] if s.weight else [])


def _sql_validate(run: _Runner, s: _SqlDesign, table: pd.DataFrame) -> None:
    """The pandas path's rules, order and fixes; detailed queries only when a check fired."""
    d = run.dialect
    if len(table) == 0 or int(table["n"].sum()) == 0:
        raise SurveyDesignError(f"{run.describe} has no rows")

    def check(cond: str, what: str, fix: str) -> None:
        n_bad = int(run.query(f"SELECT COUNT(*) AS k FROM __src__ WHERE {cond}")["k"].iloc[0])
        if n_bad:
            raise SurveyDesignError(f"{what} in {_show_rows(run, cond)}. Fix: {fix}")

    big_max = float(np.nanmax(table["__big"].to_numpy(dtype="float64", na_value=np.nan),
                              initial=-np.inf))
    fired = (np.isinf(big_max) or (s.weight is not None and float(table["__wmin"].min()) <= 0)
             or (bool(_sql_error_missing(s)) and int(table["__miss"].sum()) > 0))
    if fired:
        for col in s.var_cols.values():
            check(d.isinf(d.num(col)), f"column {col!r} has infinite values",
                  "correct or remove them before estimation.")
        if s.weight:
            check(f"({d.num(s.weight)} IS NULL OR {d.isinf(d.num(s.weight))})",
                  f"weight column {s.weight!r} is missing or infinite",
                  "every sampled unit needs a finite weight > 0.")
            check(f"{d.num(s.weight)} <= 0", f"weight column {s.weight!r} is <= 0",
                  "weights must be > 0 (drop out-of-scope units before estimation, or use a "
                  "domain).")
        if not s.na_rm:
            for col in s.var_cols.values():
                check(f"{d.num(col)} IS NULL", f"column {col!r} is missing",
                      "impute or remove them, or pass na_rm=True to leave those rows out of the "
                      "domains (they stay in the design).")
    if not s.na_rm:
        for col in s.by_cols:
            if table[col].isna().any():
                check(f"{d.ident(col)} IS NULL", f"domain column {col!r} is missing",
                      "fill it with an explicit label (e.g. 'unknown') or pass na_rm=True to "
                      "leave those rows out of every domain.")
    for role, col, key in (("strata", s.strata, STRATUM), ("psu", s.psu, PSU)):
        if col is not None and table[key].isna().any():
            check(f"{d.ident(col)} IS NULL", f"{role} column {col!r} is missing",
                  f"every row needs its {role} label.")


def _file_missing_labels(table: pd.DataFrame, s: _SqlDesign) -> pd.DataFrame:
    """Excluded rows with a missing domain label: filed under the smallest label (as pandas)."""
    if not (s.na_rm and s.by_cols):
        return table
    for col in s.by_cols:
        if table[col].isna().all():
            raise SurveyDesignError(f"domain column {col!r} is missing in every row")
    if not table[s.by_cols].isna().any(axis=1).any():
        return table
    for col in s.by_cols:
        table.loc[table[col].isna(), col] = table[col].dropna().min()
    sums = [c for c in table.columns if c not in s.keys]
    return table.groupby(s.keys, sort=False, dropna=False, observed=True)[sums].sum().reset_index()


def _sql_grouped_sums(run: _Runner, s: _SqlDesign) -> pd.DataFrame:
    """Stage (a) in SQL: one query, validation, then the pandas table's layout and attrs."""
    _sql_check_columns(run, s)
    table = run.query(_sql_query(run.dialect, s))
    _sql_validate(run, s, table)
    table = table.drop(columns=[c for c in ("__big", "__wmin", "__miss") if c in table.columns])
    table = _file_missing_labels(table, s)
    order = [*s.keys[:-1], EXCLUDED, "n", *[sum_name(k, s.names) for k in s.products]]
    table = table[order]
    table[EXCLUDED] = table[EXCLUDED].astype(bool)
    table["n"] = table["n"].astype(np.int64)
    for k in s.products:
        table[sum_name(k, s.names)] = table[sum_name(k, s.names)].astype("float64")
    if s.strata is None:
        table[STRATUM] = table[STRATUM].astype(np.int64)
    return _set_table_attrs(table, names=s.names, ones=s.ones, by_cols=s.by_cols,
                            weight=s.weight, strata=s.strata, psu=s.psu, deff=s.deff,
                            calibrated=s.calibrated, design_df=s.design_df)



def _show_rows(run: _Runner, cond: str) -> str:
    """'N row(s) (...up to 10 examples...)' for a SQL condition on the source rows."""
    n = int(run.query(f"SELECT COUNT(*) AS k FROM __src__ WHERE {cond}")["k"].iloc[0])
    if isinstance(run, _DuckRunner) and run.path is not None:
        ex = run.query(f"SELECT filename, file_row_number FROM __src__ WHERE {cond} "
                       f"ORDER BY filename, file_row_number LIMIT {_MAX_ROWS_SHOWN}",
                       row_numbers=True)
        shown = "; ".join(f"{Path(f).name} row {r}" for f, r in
                          zip(ex["filename"], ex["file_row_number"]))
        return f"{n} row(s) ({shown}{' ...' if n > _MAX_ROWS_SHOWN else ''}; 0-based file rows)"
    ex = run.query(f"SELECT * FROM __src__ WHERE {cond} LIMIT {_MAX_ROWS_SHOWN}")
    return f"{n} row(s), e.g.\n{ex.to_string(max_cols=12)}"



# --------------------------------------------------------------------------------------------
# disclosure magnitudes
# --------------------------------------------------------------------------------------------
def sql_cell_stats(data: Any, value: str | None, by: str | Sequence[str] | None, *,
                   contributor: str | None = "firm_id", top: int = 2, engine: str | None = None,
                   **engine_options: Any) -> pd.DataFrame:
    """:func:`msme_eval.disclosure.cell_stats` on DuckDB or Spark (call that function: it picks
    the engine): per cell of ``by`` the distinct contributors with a non-zero contribution
    ``n_contrib``, ``top1..top{top}`` (largest absolute per-contributor sums, 0 when absent)
    and ``total`` (sum of their absolute values).

    SQL: per (cell, contributor) ``|SUM(value)|`` (NULL/NaN skipped; all missing -> no
    contribution), then per cell ``COUNT``, ``SUM`` and the ``row_number() OVER (PARTITION BY
    cell ORDER BY contribution DESC)`` ranks 1..top; every cell of the data is kept (left join,
    NULL-safe on the labels).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    run = runner(data, engine, **engine_options)
    d = run.dialect
    by_cols = as_list(by)
    schema = run.schema()
    need = [*by_cols, *([value] if value else []), *([contributor] if contributor else [])]
    missing = [c for c in need if c not in schema]
    if missing:
        raise KeyError(f"column(s) {missing} not found in {run.describe} (columns: "
                       f"{list(schema)}). Fix: pass the cell columns, the magnitude column and "
                       "the firm id column.")
    if value is not None and not schema[value]:
        raise TypeError(f"value column {value!r} of {run.describe} is not numeric; need numbers")
    if contributor is not None:
        n_bad = int(run.query(f"SELECT COUNT(*) AS k FROM __src__ WHERE "
                              f"{d.ident(contributor)} IS NULL")["k"].iloc[0])
        if n_bad:
            raise ValueError(f"contributor column {contributor!r} is missing in "
                             f"{_show_rows(run, f'{d.ident(contributor)} IS NULL')}. Fix: every "
                             "row needs its firm id.")
    cells = [d.ident(c) for c in by_cols]
    mag = "1.0" if value is None else d.num(value)
    if contributor is not None:
        contrib = (f"SELECT {', '.join([*cells, ''])}abs(SUM({mag})) AS mag FROM __src__ "
                   f"GROUP BY {', '.join([*cells, d.ident(contributor)])}")
    else:
        contrib = f"SELECT {', '.join([*cells, ''])}abs({mag}) AS mag FROM __src__"
    part = f"PARTITION BY {', '.join(cells)} " if cells else ""
    tops = ", ".join(f"SUM(CASE WHEN rk = {r + 1} THEN mag ELSE 0.0 END) AS top{r + 1}"
                     for r in range(top))
    stats = (f"SELECT {', '.join([*cells, ''])}COUNT(*) AS n_contrib, {tops}, SUM(mag) AS total "
             f"FROM (SELECT *, row_number() OVER ({part}ORDER BY mag DESC) AS rk FROM "
             f"({contrib}) AS f WHERE mag > 0) AS ranked"
             + (f" GROUP BY {', '.join(cells)}" if cells else ""))
    zero = ", ".join(f"COALESCE(s.top{r + 1}, 0.0) AS top{r + 1}" for r in range(top))
    if cells:
        on = " AND ".join(d.null_safe_eq(f"c.{x}", f"s.{x}") for x in cells)
        sql = (f"SELECT {', '.join(f'c.{x}' for x in cells)}, COALESCE(s.n_contrib, 0) AS "
               f"n_contrib, {zero}, COALESCE(s.total, 0.0) AS total FROM "
               f"(SELECT DISTINCT {', '.join(cells)} FROM __src__) AS c LEFT JOIN ({stats}) AS s "
               f"ON {on}")
    else:
        sql = (f"SELECT COALESCE(s.n_contrib, 0) AS n_contrib, {zero}, "
               f"COALESCE(s.total, 0.0) AS total FROM ({stats}) AS s")
    out = run.query(sql)
    if not cells and len(out) == 0:
        out = pd.DataFrame({"n_contrib": [0], **{f"top{r + 1}": [0.0] for r in range(top)},
                            "total": [0.0]})
    out["n_contrib"] = out["n_contrib"].astype(np.int64)
    for c in ["total", *[f"top{r + 1}" for r in range(top)]]:
        out[c] = out[c].astype("float64")
    cols = [*by_cols, "n_contrib", *[f"top{r + 1}" for r in range(top)], "total"]
    if by_cols:
        out = out.sort_values(by_cols, kind="stable").reset_index(drop=True)
    return out[cols]

