"""Stage (a) of the design-based estimator on other engines: DuckDB (Parquet, out of core), Spark.

:mod:`msme_eval.survey` splits estimation into (a) :func:`survey.grouped_sums`, one grouped pass
of weighted sums per (domain, stratum, PSU), and (b) :func:`survey.totals_from_sums`, small numpy
variance algebra on that table. Only (a) touches every row, so only (a) needs to run where the
data live. This module computes the *same table* (same columns, same ``attrs``; the same rows,
in the engine's order unless ``sort=True``) with SQL::

    SELECT <by...>, strata AS __stratum__, psu AS __psu__, <missing-value flag> AS __excluded__,
           COUNT(*) AS n, SUM(w * y) AS "w*y", SUM(w * y * x) AS "w*x*y", ...
    FROM data GROUP BY ALL

and then hands it to stage (b), so every engine gives the same estimates and SEs.

The engine is chosen from the input (or forced with ``engine=``):

* ``pandas.DataFrame`` -> ``"pandas"`` (:func:`survey.grouped_sums`, in memory);
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
  column raises :class:`survey.SurveyDesignError` unless ``na_rm=True``, which sets the
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

Disclosure magnitudes (:func:`cell_stats`) -- per cell: distinct contributors with a non-zero
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

from . import disclosure, survey
from .survey import _EXCLUDED, _PSU, _STRATUM, SurveyDesignError, _as_list, _needed_products, _sum_name

__all__ = ["ENGINES", "engine_of", "connect", "scan_parquet", "columns_of", "to_pandas",
           "grouped_sums", "totals", "ratio", "total", "cell_stats"]

ENGINES = ("pandas", "duckdb", "spark")
_MAX_ROWS_SHOWN = 10


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
    With a cap and no ``threads``, threads = min(cores, cap / 64 MB): each thread's hash
    aggregate needs a few tens of MB before it can spill, so 2 threads under a 64 MB cap run
    out of memory where 1 thread completes (measured on DuckDB 2.0).
    """
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{_plain(memory_limit)}'")
        if threads is None:  # hash aggregation needs ~64 MB per thread to run (and spill)
            threads = max(1, min(os.cpu_count() or 1, _megabytes(memory_limit) // 64))
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = '{_plain(str(temp_directory))}'")
    return con


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

    def materialise(self, name: str, sql: str) -> None:
        """Store the result of ``sql`` (over the source ``__src__``) as temporary table ``name``
        (DuckDB: a temp table, spilled to disk under a memory limit; Spark: a persisted view)."""
        raise NotImplementedError

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """Make a small pandas table visible to SQL as ``name``."""
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

    def query(self, sql: str, *, row_numbers: bool = False) -> pd.DataFrame:
        rel = self.rel
        if row_numbers and self.path is not None:
            rel = scan_parquet(self.path, con=self.con, row_numbers=True)
        return _arrow_to_pandas(rel.query("__src__", sql).to_arrow_table())

    def materialise(self, name: str, sql: str) -> None:
        res = self.rel.query("__src__", f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        if res is not None:  # a relation: make sure the statement ran
            res.fetchall()

    def register(self, name: str, frame: pd.DataFrame) -> None:
        if self.con is None:
            raise ValueError("a DuckDB relation needs its connection: pass con=<the connection "
                             "that made the relation>")
        self.con.register(name, frame)

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

    def drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        kept = getattr(self, "_kept", {}).pop(name, None)
        if kept is not None:
            kept.unpersist()


def _arrow_to_pandas(tab: Any) -> pd.DataFrame:
    return tab.to_pandas()


def _runner(data: Any, engine: str | None, **kw: Any) -> _Runner:
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
    return list(_runner(data, None).schema())


def to_pandas(data: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Materialise (the ``columns`` of) any supported input as a pandas DataFrame.

    Projection is pushed down (only those columns are read). Arrow types are mapped to the
    panel contract's pandas dtypes: booleans -> nullable ``boolean``, integers with missing
    values -> ``Int64``, text -> ``str``, ``size_class`` -> the ordered categorical
    ``schema.SIZE_CLASS_DTYPE``. In memory: for a panel that does not fit, estimate with
    :func:`totals` / :func:`ratio` on the engine instead.
    """
    import pyarrow as pa

    from .schema import SIZE_CLASS_DTYPE

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
                 engine: str | None = None, con: Any = None, memory_limit: str | None = None,
                 threads: int | None = None,
                 temp_directory: str | os.PathLike | None = None,
                 sort: bool = False) -> pd.DataFrame:
    """Stage (a) on the engine of ``data``: the :func:`survey.grouped_sums` table.

    Same arguments and output as :func:`survey.grouped_sums` (``columns``: names or
    ``{name: column | None}``, ``None`` = constant 1), plus ``engine`` (default from the input
    type), and for DuckDB ``con`` / ``memory_limit`` / ``threads`` / ``temp_directory``.
    Rows come in the engine's order (stage (b) does not depend on it); ``sort=True`` sorts
    them by ``__excluded__``, the ``by`` columns, ``__stratum__``, ``__psu__`` (seconds on
    millions of groups, hence off by default).
    """
    engine = engine_of(data) if engine is None else engine
    if engine == "pandas":
        if not isinstance(data, pd.DataFrame):
            raise TypeError("engine='pandas' needs a pandas DataFrame")
        table = survey.grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                                    na_rm=na_rm, deff=deff)
        return _sorted(table) if sort else table
    run = _runner(data, engine, con=con, memory_limit=memory_limit, threads=threads,
                  temp_directory=temp_directory)
    table = _sql_grouped_sums(run, _spec(columns), weight=weight, strata=strata, psu=psu,
                              by_cols=_as_list(by), na_rm=na_rm, deff=deff)
    return _sorted(table) if sort else table


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [*table.attrs["by"], _STRATUM] + ([_PSU] if _PSU in table.columns else [])
    attrs = dict(table.attrs)
    out = table.sort_values([_EXCLUDED, *keys], kind="stable", na_position="last")
    out = out.reset_index(drop=True)
    out.attrs.update(attrs)
    return out


def _sql_grouped_sums(run: _Runner, spec: dict[str, str | None], *, weight: str | None,
                      strata: str | None, psu: str | None, by_cols: list[str], na_rm: bool,
                      deff: bool) -> pd.DataFrame:
    d = run.dialect
    schema = run.schema()
    wanted = [c for c in (weight, strata, psu, *by_cols) if c is not None]
    wanted += [v for v in spec.values() if v is not None]
    missing = [c for c in dict.fromkeys(wanted) if c not in schema]
    if missing:
        raise KeyError(f"column(s) {missing} not found in {run.describe} (columns: "
                       f"{list(schema)}). Fix: pass existing column names.")
    for col in [v for v in spec.values() if v is not None] + ([weight] if weight else []):
        if not schema[col]:
            raise TypeError(
                f"column {col!r} of {run.describe} is not numeric or boolean; survey estimators "
                "need a numeric or boolean column. Fix: cast it (e.g. a 0/1 indicator).")
    reserved = [c for c in by_cols if c in ("n", "w", _STRATUM, _PSU, _EXCLUDED)
                or c.startswith(("w*", "w2*")) or c.startswith("__v")]
    if reserved:
        raise ValueError(f"domain column name(s) {reserved} clash with the names of the sums "
                         "table; rename them before estimation")

    names = list(spec)
    ones = [v is None for v in spec.values()]
    rows_are_psus = psu is None
    products = _needed_products(len(names), ones, rows_are_psus=rows_are_psus, deff=deff)
    var_cols = {j: spec[n] for j, n in enumerate(names) if spec[n] is not None}

    # row-level projection: keys, weight, variables (NaN -> NULL), exclusion flag
    sel = [d.ident(c) for c in by_cols]
    sel.append(f"{d.ident(strata)} AS {_STRATUM}" if strata else f"0 AS {_STRATUM}")
    if psu:
        sel.append(f"{d.ident(psu)} AS {_PSU}")
    sel.append(f"{d.num(weight)} AS __w" if weight else "1.0 AS __w")
    for j, col in var_cols.items():
        sel.append(f"{d.num(col)} AS __v{j}")
    miss_terms = [f"__v{j} IS NULL" for j in var_cols] + (
        [f"{d.ident(c)} IS NULL" for c in by_cols])
    excl = f"({' OR '.join(miss_terms)})" if (na_rm and miss_terms) else "FALSE"
    sel.append(f"{excl} AS {_EXCLUDED}")

    def factor(j: int) -> str:
        return f"(CASE WHEN {_EXCLUDED} THEN 0.0 ELSE __v{j} END)" if na_rm else f"__v{j}"

    aggs = ["COUNT(*) AS n"]
    for key in products:
        wpow, vars_ = key
        expr = " * ".join(["__w"] * wpow + [factor(j) for j in vars_])
        aggs.append(f"SUM({expr}) AS {d.ident(_sum_name(key, names))}")
    # checks folded into the same pass as THREE cheap aggregates (each aggregate state costs
    # hash-table memory per group): largest |value| over the variables and the weight (inf?),
    # smallest weight (<= 0?) and the count of missing values that are errors. Only when one
    # fires are the detailed per-column queries run, to name the column and rows.
    big = [f"abs(__v{j})" for j in var_cols] + (["abs(__w)"] if weight else [])
    checks = [f"MAX({big[0] if len(big) == 1 else 'GREATEST(' + ', '.join(big) + ')'}) AS __big"]
    if weight:
        checks.append("MIN(__w) AS __wmin")
    miss = ([] if na_rm else [f"__v{j}" for j in var_cols]) + (["__w"] if weight else [])
    if miss:
        flags = " + ".join(f"CAST(({m} IS NULL) AS INT)" for m in miss)
        checks.append(f"CAST(SUM({flags}) AS BIGINT) AS __miss")
    keys = [*[d.ident(c) for c in by_cols], _STRATUM] + ([_PSU] if psu else []) + [_EXCLUDED]
    sql = (f"SELECT {', '.join(keys)}, {', '.join(aggs + checks)} FROM "
           f"(SELECT {', '.join(sel)} FROM __src__) AS r GROUP BY {', '.join(keys)}")
    table = run.query(sql)

    # -- validation, with the same rules, order and fixes as the pandas path -------------------
    if len(table) == 0 or int(table["n"].sum()) == 0:
        raise SurveyDesignError(f"{run.describe} has no rows")

    def check(cond: str, what: str, fix: str) -> None:
        n_bad = int(run.query(f"SELECT COUNT(*) AS k FROM __src__ WHERE {cond}")["k"].iloc[0])
        if n_bad:
            raise SurveyDesignError(f"{what} in {_show_rows(run, cond)}. Fix: {fix}")

    big_max = float(np.nanmax(table["__big"].to_numpy(dtype="float64", na_value=np.nan),
                              initial=-np.inf))
    fired = (np.isinf(big_max) or (weight is not None and float(table["__wmin"].min()) <= 0)
             or (bool(miss) and int(table["__miss"].sum()) > 0))
    if fired:
        for col in var_cols.values():
            check(d.isinf(d.num(col)), f"column {col!r} has infinite values",
                  "correct or remove them before estimation.")
        if weight:
            check(f"({d.num(weight)} IS NULL OR {d.isinf(d.num(weight))})",
                  f"weight column {weight!r} is missing or infinite",
                  "every sampled unit needs a finite weight > 0.")
            check(f"{d.num(weight)} <= 0", f"weight column {weight!r} is <= 0",
                  "weights must be > 0 (drop out-of-scope units before estimation, or use a "
                  "domain).")
        if not na_rm:
            for col in var_cols.values():
                check(f"{d.num(col)} IS NULL", f"column {col!r} is missing",
                      "impute or remove them, or pass na_rm=True to leave those rows out of the "
                      "domains (they stay in the design).")
    if not na_rm:
        for col in by_cols:
            if table[col].isna().any():
                check(f"{d.ident(col)} IS NULL", f"domain column {col!r} is missing",
                      "fill it with an explicit label (e.g. 'unknown') or pass na_rm=True to "
                      "leave those rows out of every domain.")
    for role, col in (("strata", strata), ("psu", psu)):
        if col is not None and table[_STRATUM if role == "strata" else _PSU].isna().any():
            check(f"{d.ident(col)} IS NULL", f"{role} column {col!r} is missing",
                  f"every row needs its {role} label.")
    table = table.drop(columns=[c for c in ("__big", "__wmin", "__miss") if c in table.columns])

    # -- excluded rows with a missing domain label: file them under the smallest label -------
    if na_rm and by_cols:
        for col in by_cols:
            if table[col].isna().all():
                raise SurveyDesignError(f"domain column {col!r} is missing in every row")
        nulls = table[by_cols].isna().any(axis=1).to_numpy()
        if nulls.any():
            for col in by_cols:
                smallest = table[col].dropna().min()
                table.loc[table[col].isna(), col] = smallest
            plain_keys = [*by_cols, _STRATUM, *([_PSU] if psu else []), _EXCLUDED]
            sums = [c for c in table.columns if c not in plain_keys]
            table = table.groupby(plain_keys, sort=False, dropna=False,
                                  observed=True)[sums].sum().reset_index()

    # -- the pandas table's layout, dtypes and attrs -------------------------------------------
    order = [*by_cols, _STRATUM] + ([_PSU] if psu else []) + [_EXCLUDED, "n"]
    order += [_sum_name(k, names) for k in products]
    table = table[order]
    table[_EXCLUDED] = table[_EXCLUDED].astype(bool)
    table["n"] = table["n"].astype(np.int64)
    for k in products:
        table[_sum_name(k, names)] = table[_sum_name(k, names)].astype("float64")
    if strata is None:
        table[_STRATUM] = table[_STRATUM].astype(np.int64)
    table.attrs.update(variables=names, ones=ones, by=by_cols, rows_are_psus=rows_are_psus,
                       deff=deff, strata=strata, psu=psu, weight=weight)
    return table


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
# stage (a) + (b): estimators on any engine
# --------------------------------------------------------------------------------------------
def totals(data: Any, columns: Mapping[str, Any] | Sequence[str], *, weight: str | None = None,
           strata: str | None = None, psu: str | None = None,
           by: str | Sequence[str] | None = None, singleton: str = "fail", level: float = 0.95,
           na_rm: bool = False, deff: bool = True, engine: str | None = None,
           **engine_options: Any) -> survey.Totals:
    """:func:`survey.totals` on any engine: stage (a) there, stage (b) in numpy."""
    table = grouped_sums(data, columns, weight=weight, strata=strata, psu=psu, by=by,
                         na_rm=na_rm, deff=deff, engine=engine, **engine_options)
    return survey.totals_from_sums(table, singleton=singleton, level=level)


def ratio(data: Any, numerator: str, denominator: str | None = None, *,
          weight: str | None = None, strata: str | None = None, psu: str | None = None,
          by: str | Sequence[str] | None = None, singleton: str = "fail", level: float = 0.95,
          na_rm: bool = False, deff: bool = True, engine: str | None = None,
          **engine_options: Any) -> pd.DataFrame:
    """:func:`survey.ratio` (``R_d = sum_d w y / sum_d w x``, Woodruff SE) on any engine."""
    cols: dict[str, str | None] = {numerator: numerator,
                                   (denominator if denominator is not None else "__one__"):
                                   denominator}
    if denominator == numerator:
        cols = {numerator: numerator, "__denominator__": denominator}
    t = totals(data, cols, weight=weight, strata=strata, psu=psu, by=by, singleton=singleton,
               level=level, na_rm=na_rm, deff=deff, engine=engine, **engine_options)
    return survey.delta(t, _ratio_f, _ratio_g)


def _ratio_f(tt: np.ndarray) -> np.ndarray:
    return tt[:, 0] / tt[:, 1]


def _ratio_g(tt: np.ndarray) -> np.ndarray:
    return np.column_stack([1.0 / tt[:, 1], -tt[:, 0] / tt[:, 1] ** 2])


def total(data: Any, column: str, *, weight: str | None = None, strata: str | None = None,
          psu: str | None = None, by: str | Sequence[str] | None = None,
          singleton: str = "fail", level: float = 0.95, na_rm: bool = False,
          deff: bool = True, engine: str | None = None, **engine_options: Any) -> pd.DataFrame:
    """:func:`survey.total` (``Y_d = sum_d w y`` with its Taylor SE) on any engine."""
    t = totals(data, [column], weight=weight, strata=strata, psu=psu, by=by,
               singleton=singleton, level=level, na_rm=na_rm, deff=deff, engine=engine,
               **engine_options)
    return survey.delta(t, lambda tt: tt[:, 0], lambda tt: np.ones_like(tt))


# --------------------------------------------------------------------------------------------
# disclosure magnitudes
# --------------------------------------------------------------------------------------------
def cell_stats(data: Any, value: str | None, by: str | Sequence[str] | None, *,
               contributor: str | None = "firm_id", top: int = 2, engine: str | None = None,
               **engine_options: Any) -> pd.DataFrame:
    """:func:`disclosure.cell_stats` on any engine: per cell of ``by`` the distinct contributors
    with a non-zero contribution ``n_contrib``, ``top1..top{top}`` (largest absolute
    per-contributor sums, 0 when absent) and ``total`` (sum of their absolute values).

    SQL: per (cell, contributor) ``|SUM(value)|`` (NULL/NaN skipped; all missing -> no
    contribution), then per cell ``COUNT``, ``SUM`` and the ``row_number() OVER (PARTITION BY
    cell ORDER BY contribution DESC)`` ranks 1..top; every cell of the data is kept (left join,
    NULL-safe on the labels).
    """
    engine = engine_of(data) if engine is None else engine
    if engine == "pandas":
        return disclosure.cell_stats(data, value, by, contributor=contributor, top=top)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    run = _runner(data, engine, **engine_options)
    d = run.dialect
    by_cols = _as_list(by)
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
