"""Stage (a) of :func:`msme_eval.indicators.compute` in SQL (DuckDB or Spark), out of core.

The firm rows never leave the engine, and they are read twice for the whole table (total and
every breakdown), whatever the number of indicators and breakdowns:

0. one design scan (:meth:`SqlStage._design`): the checks (missing country/year/weight/
   strata/PSU), the PSUs per stratum, the years and the labels of the text breakdowns;
1. one aggregation (:meth:`SqlStage._fine_sql`): the row features (``msme``, ``start_up``,
   ... and the next-year ones ``survived_next`` / ``jobs_change_next`` with a self-join on
   ``(firm_id, year + 1)``), the weighted part values ``w * value * population`` with the
   available-case rule, and the record counts (0/1 TINYINT flags summed as BIGINT; each
   distinct expression once) summed per *fine* key: (country, stratum, PSU, period, the group
   of every breakdown). Parts with a one-year shift move to period ``yi + 1`` afterwards, on
   this small table (``UNION ALL``), not on the rows.

Each breakdown (and the total) is a roll-up of the fine table -- no re-scan. Where the
roll-ups happen depends on the size of the fine table (see :meth:`SqlStage._psu_totals`):

* at most ``FETCH_LIMIT`` rows (bound: PSU-periods x groups): fetched once through Arrow (text
  keys dictionary-encoded to integer codes) and rolled up in numpy -- the usual case:
  PSU-periods x groups are far fewer than firm rows;
* else kept in the engine (DuckDB temp table spilled under ``memory_limit``; Spark persisted
  view) and, if it has at most ``FETCH_LIMIT`` rows after all, fetched once the same way;
* else (millions of PSUs: the firm as the PSU of a large census, or a register) *bucketed*
  (:meth:`SqlStage._bucket_pass`): the fine table is written out of core in files
  partitioned by a hash of the PSU (DuckDB: Arrow record batches streamed into Arrow IPC
  files; Spark: ``partitionBy`` Parquet); they are read back in buckets of at most
  ``BUCKET_ROWS`` rows, each rolled up in numpy exactly like the fetched table, and the
  buckets' moments added up (a PSU lies in one bucket; every moment is a sum over PSUs).
  Each bucket's per-PSU arrays are kept on disk for the second pass (temporary folder,
  removed by :meth:`SqlStage.release`).

Either way the estimator (:class:`table._Estimator`) turns the cell sums into point
estimates and linearisation coefficients, and the centred second pass over the PSU totals
(:func:`parts.centred_ss` in numpy, bucket by bucket on the bucketed path; its sums and
PSU-period counts add up over buckets too) gives the variance. No SQL join on text keys
and no table of the size of the PSU totals held in Python: memory is bounded by
``FETCH_LIMIT`` or ``BUCKET_ROWS`` rows plus the engine's own ``memory_limit``. The numbers agree with the
pandas path to ~1e-12 (summation order only). Disclosure cell statistics (contributors,
top-2 magnitudes, total per fine cell) are one more query (DuckDB ``max(x, 2)``; Spark
``row_number``).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import engines
from ..contract import MSME_CLASSES
from .parts import BOOL_LABELS, NA_LABELS, TOTAL, Moments, centred_ss, disclosure_parts, moment_names, parts

_BOOL = ("owner_female", "urban")
#: most rows of PSU totals fetched into numpy at once (about 40 columns of 8 bytes for the 10
#: KPIs: ~2 GB at the limit); above it they go through buckets (see SqlStage._psu_totals)
FETCH_LIMIT = 6_000_000
#: rows (the shifted copies of the year-to-year parts counted) read into numpy per bucket of
#: the bucketed path (~0.7 GB for the 10 KPIs), and the most buckets the engine writes
BUCKET_ROWS = 2_000_000
MAX_BUCKETS = 256


class SqlStage:
    """Stage (a) for a DuckDB/Spark source; same interface as ``compute._PandasStage``."""

    def __init__(self, run: Any, area_col: str, year_col: str, design: tuple,
                 inds: list[dict[str, Any]], missing_cols: dict[str, list[str]],
                 breakdowns: list[str] = ()) -> None:
        self.run, self.d = run, run.dialect
        self.schema = run.schema()
        self.area_col, self.year_col = area_col, year_col
        wcol, scol, pcol = (list(design) + [None, None, None])[:3]
        self.notes: list[str] = []
        q = self.d.ident
        for c in (area_col, year_col):
            if c not in self.schema:
                raise KeyError(f"{run.describe} has no column {c!r} (needed by `by`). "
                               f"Columns: {list(self.schema)}")
        self.w = f"CAST({q(wcol)} AS DOUBLE)" if wcol in self.schema else "1.0"
        if wcol not in self.schema:
            self.notes.append("no weight column: weight 1 (census)")
        self.h = f"CAST({q(scol)} AS STRING)" if scol in self.schema else "''"
        if scol not in self.schema:
            self.notes.append("no strata column: one stratum per country")
        self.p = f"CAST({q(pcol)} AS STRING)" if pcol in self.schema else \
            f"CAST({q('firm_id')} AS STRING)"
        if pcol not in self.schema:
            self.notes.append("no psu column: the firm is the PSU")
        if self.d.name == "duckdb":
            self.h, self.p = self.h.replace("STRING", "VARCHAR"), self.p.replace("STRING", "VARCHAR")
        self.inds = inds
        self.breakdowns = list(breakdowns)
        self._groups: dict[str, tuple[str, list[str]]] = {}
        self._fine: str | None = None
        self._local: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._bucketed: dict[str | None, Moments] = {}
        self._dir: str | None = None
        self.fetch_limit, self.bucket_rows = FETCH_LIMIT, BUCKET_ROWS
        self.live = [i for i in inds if not missing_cols[i["id"]]]
        self._design(wcol, scol, pcol)

    # -- design -------------------------------------------------------------------------------
    def _str(self, x: str) -> str:
        return f"CAST({x} AS {'VARCHAR' if self.d.name == 'duckdb' else 'STRING'})"

    def _design(self, wcol: str | None, scol: str | None, pcol: str | None) -> None:
        q, a, y = self.d.ident, self.d.ident(self.area_col), self.d.ident(self.year_col)
        checks = [f"SUM(CASE WHEN {a} IS NULL THEN 1 ELSE 0 END) AS bad_area",
                  f"SUM(CASE WHEN {y} IS NULL THEN 1 ELSE 0 END) AS bad_year"]
        if wcol in self.schema:
            checks.append(f"SUM(CASE WHEN {self.d.num(wcol)} IS NULL OR {self.d.num(wcol)} <= 0 "
                          f"OR {self.d.isinf(self.d.num(wcol))} THEN 1 ELSE 0 END) AS bad_w")
        if scol in self.schema:
            checks.append(f"SUM(CASE WHEN {q(scol)} IS NULL THEN 1 ELSE 0 END) AS bad_s")
        psu_src = pcol if pcol in self.schema else "firm_id"
        checks.append(f"SUM(CASE WHEN {q(psu_src)} IS NULL THEN 1 ELSE 0 END) AS bad_p")
        # ONE scan: the checks, PSUs per stratum, the years and the labels of the text
        # breakdowns (distinct lists per stratum)
        texts = [b for b in self.breakdowns if b in self.schema and b not in BOOL_LABELS]
        lists = [f"{self.d.distinct_list(f'CAST({y} AS BIGINT)')} AS ys",
                 *[f"{self.d.distinct_list(self._str(q(b)))} AS l{j}" for j, b in enumerate(texts)]]
        t = self.run.query(
            f"SELECT {self._str(a)} AS a, {self.h} AS h, COUNT(DISTINCT {self.p}) AS n_h, "
            f"{', '.join(checks + lists)} FROM __src__ GROUP BY 1, 2")
        chk = t[[c.rsplit(" AS ", 1)[1] for c in checks]].sum()
        what = {"bad_area": f"column {self.area_col!r} is missing",
                "bad_year": f"column {self.year_col!r} has missing values",
                "bad_w": f"weight column {wcol!r} is missing, infinite or <= 0",
                "bad_s": f"strata column {scol!r} is missing",
                "bad_p": f"psu column {psu_src!r} is missing"}
        for k, msg in what.items():
            if k in chk.index and (chk[k] or 0) > 0:
                raise ValueError(f"{self.run.describe}: {msg} in {int(chk[k])} rows. Fix: "
                                 "every row needs its country, year, weight > 0, stratum "
                                 "and PSU (or drop the design column).")
        self._labels = {b: _distinct(t[f"l{j}"]) for j, b in enumerate(texts)}
        years = np.asarray(_distinct(t["ys"]), dtype=np.int64)
        self.years = np.sort(years)
        self.ny = len(self.years) + 1
        t = t.sort_values(["a", "h"], kind="stable").reset_index(drop=True)
        self.areas = pd.Index(sorted(t["a"].unique()))
        self.h_area = self.areas.get_indexer(t["a"]).astype(np.int64)
        self.n_h = t["n_h"].to_numpy(dtype=np.int64)
        self._strata = pd.Index(list(zip(t["a"], t["h"])))
        self._strata_txt = [f"{a}|{h}" for a, h in zip(t["a"], t["h"])]
        self.strata_values = (np.asarray(t["h"].astype(str), dtype=object)
                              if scol in self.schema else None)
        if len(self.years) and self.years[-1] - self.years[0] == len(self.years) - 1:
            self.yi = f"(CAST({y} AS BIGINT) - {int(self.years[0])})"  # consecutive years
        else:
            self.yi = ("(CASE " + " ".join(f"WHEN {y} = {int(v)} THEN {i}"
                                          for i, v in enumerate(self.years)) + " END)")

    def strata_names(self, idx: np.ndarray) -> list[str]:
        return [self._strata_txt[i] for i in idx]

    def columns(self) -> set[str]:
        return set(self.schema)

    # -- row features ---------------------------------------------------------------------------
    def _needs_next(self) -> bool:
        feats = {f for i in self.live for p in parts(i) for f in (p.value, p.population)}
        return bool(feats & {"survived_next", "jobs_change_next"})

    def _base(self, groups: dict[str, str], extra: dict[str, str] | None = None
              ) -> tuple[str, list[str]]:
        """FROM clause + select list of the row columns. The row features (``msme``, ...)
        are computed ONCE per row in an inner SELECT (source alias s, next year nx, cy) and
        the part expressions refer to them by name (:meth:`_value`)."""
        q, d = self.d.ident, self.d
        a, y = q(self.area_col), q(self.year_col)
        floats = self.run.floats()  # NaN -> NULL only where NaN can be
        num = {c: (d.num(c) if c in floats else f"CAST({q(c)} AS DOUBLE)").replace(
            q(c), f"s.{q(c)}") for c in self.schema if self.schema[c]}
        frm = "__src__ s"
        sc = f"{self._str('s.' + q('size_class'))}" if "size_class" in self.schema else "NULL"
        classes = ", ".join(f"'{c}'" for c in MSME_CLASSES)
        by = f"(CAST(s.{y} AS DOUBLE) - {num.get('birth_year', 'NULL')})"

        def gt0(c: str) -> str:
            v = num.get(c, "NULL")
            return f"(CASE WHEN {v} IS NULL THEN NULL WHEN {v} > 0 THEN 1.0 ELSE 0.0 END)"

        def age_le(k: int) -> str:
            return f"(CASE WHEN {by} IS NULL THEN NULL WHEN {by} <= {k} THEN 1.0 ELSE 0.0 END)"

        ex, imp = gt0("exports"), num.get("imports_or_gvc", "NULL")
        emp = num.get("employees", "NULL")
        feats = {
            "one": "1.0", "all": "1.0",
            "msme": f"(CASE WHEN {sc} IS NULL THEN NULL WHEN {sc} IN ({classes}) THEN 1.0 "
                    "ELSE 0.0 END)",
            "large": f"(CASE WHEN {sc} IS NULL THEN NULL WHEN {sc} = 'large' THEN 1.0 "
                     "ELSE 0.0 END)",
            "age": by, "start_up": age_le(1), "young": age_le(5),
            "international": f"(CASE WHEN {ex} = 1 OR {imp} = 1 THEN 1.0 WHEN {ex} = 0 AND "
                             f"{imp} = 0 THEN 0.0 ELSE NULL END)",
            "has_loan": gt0("loans_outstanding"),
            "rural": f"(1.0 - {num.get('urban', 'NULL')})",
            "entrant_jobs": f"(CASE WHEN {num.get('birth_year', 'NULL')} IS NULL THEN NULL "
                            f"WHEN {num.get('birth_year', 'NULL')} = s.{y} THEN {emp} "
                            "ELSE 0.0 END)",
        }
        if self._needs_next():
            fid = q("firm_id")
            emp_nx = d.num("employees").replace(q("employees"), f"n.{q('employees')}") \
                if "employees" in self.schema else "NULL"
            frm = (f"__src__ s LEFT JOIN (SELECT {fid} AS nf, CAST({y} AS BIGINT) AS ny_, "
                   f"{emp_nx} AS ne FROM __src__ n) nx ON nx.nf = s.{fid} AND "
                   f"nx.ny_ = CAST(s.{y} AS BIGINT) + 1 LEFT JOIN (SELECT DISTINCT {a} AS ca, "
                   f"CAST({y} AS BIGINT) AS cyr FROM __src__) cy ON cy.ca = s.{a} AND "
                   f"cy.cyr = CAST(s.{y} AS BIGINT) + 1")
            feats["survived_next"] = ("(CASE WHEN cy.cyr IS NULL THEN NULL WHEN nx.nf IS NOT "
                                      "NULL THEN 1.0 ELSE 0.0 END)")
            feats["jobs_change_next"] = (f"(CASE WHEN cy.cyr IS NULL THEN NULL ELSE (CASE WHEN "
                                         f"nx.nf IS NULL THEN 0.0 ELSE nx.ne END) - {emp} END)")
        self._vals = {**{c: f"c_{_safe(c)}" for c in num}, **{k: f"f_{k}" for k in feats}}
        extra = extra or {}
        inner = [f"{self._str('s.' + a)} AS a",
                 f"{self._prefixed(self.h)} AS h", f"{self._prefixed(self.p)} AS p",
                 f"{self._prefixed(self.yi)} AS yi", f"{self._prefixed(self.w)} AS w",
                 f"{_flag(feats['large'] + ' = 1')} AS lg"]
        inner += [f"{e} AS {k}" for k, e in {**groups, **extra}.items()]
        inner += [f"{e} AS c_{_safe(c)}" for c, e in num.items()]
        inner += [f"{e} AS f_{k}" for k, e in feats.items()]
        frm = f"(SELECT {', '.join(inner)} FROM {frm}) s2"
        return frm, ["a", "h", "p", "yi", "w", "lg", *groups, *extra]

    def _prefixed(self, expr: str) -> str:
        """Qualify the source columns of a design expression with the alias s."""
        out = expr
        for c in self.schema:
            out = out.replace(self.d.ident(c), f"s.{self.d.ident(c)}")
        return out

    def _value(self, name: str) -> str:
        """The row column of a feature or numeric source column (NULL when absent)."""
        return self._vals.get(name, "NULL")

    def _group_expr(self, b: str | None) -> tuple[str, list[str]]:
        """SQL group code of a breakdown and its labels (same labels as compute._group_codes)."""
        if b is None:
            return "0", [TOTAL]
        q = self.d.ident
        na = NA_LABELS.get(b, "not stated")
        if b in BOOL_LABELS:
            v = f"CAST(s.{q(b)} AS DOUBLE)"
            return (f"(CASE WHEN {v} IS NULL THEN 2 WHEN {v} = 1 THEN 1 ELSE 0 END)",
                    [*BOOL_LABELS[b], na])
        vals = self._labels.get(b)
        if vals is None:
            vals = self.run.query(f"SELECT DISTINCT {self._str(q(b))} AS v FROM __src__ "
                                  f"WHERE {q(b)} IS NOT NULL")["v"].tolist()
        if b == "size_class":
            order = {c: i for i, c in enumerate([*MSME_CLASSES, "large"])}
            vals = sorted(vals, key=lambda v: (order.get(v, 99), v))
        else:
            vals = sorted(vals)
        case = " ".join(f"WHEN {self._str('s.' + q(b))} = '{_lit(v)}' THEN {i}"
                        for i, v in enumerate(vals))
        return (f"(CASE {case} ELSE {len(vals)} END)" if vals else "0"), [*map(str, vals), na]

    # -- parts ------------------------------------------------------------------------------
    def _part_columns(self) -> tuple[dict[int, list[str]], list[tuple]]:
        """Per shift: the row-level select expressions (each distinct expression once: e.g.
        the MSME flag is the population count of several indicators); and per indicator part
        the logical columns ``(indicator, column, kind, shift, role, sign)``, kind x (weighted
        part), n (records counted), pop (records in the population), miss (in the population,
        value missing: ``pop - n`` for a numerator, its own flag for ``num2``)."""
        per_shift: dict[int, list[str]] = {}
        cols: list[tuple] = []
        made: dict[tuple[str, int], str] = {}

        def column(expr: str, name: str, shift: int) -> str:
            if (expr, shift) not in made:
                made[(expr, shift)] = name
                per_shift.setdefault(shift, []).append(f"{expr} AS {name}")
            return made[(expr, shift)]

        for ind in self.live:
            iid = ind["id"]
            ps = parts(ind)

            def ok(p: Any) -> str:
                v, pop = self._value(p.value), self._value(p.population)
                return f"({pop} IS NOT NULL AND ({pop} = 0 OR {v} IS NOT NULL))"

            all_ok = " AND ".join(ok(p) for p in ps)
            for p in ps:
                v, pop = self._value(p.value), self._value(p.population)
                use = ok(p) if ind["kind"] == "total" else all_ok
                x = f"(CASE WHEN {use} AND {pop} <> 0 THEN {v} * {pop} ELSE 0.0 END) * w"
                cols.append((iid, column(x, f"x_{iid}_{p.role}", p.shift), "x", p.shift, p.role, 1))
                if p.role not in ("num", "num2"):
                    continue
                inpop = f"{pop} = 1"
                cnt = f"{use} AND {inpop}" + (f" AND {v} <> 0" if p.role == "num2" else "")
                n = column(_flag(cnt), f"n_{iid}_{p.role}", p.shift)
                npop = column(_flag(inpop), f"pop_{iid}_{p.role}", p.shift)
                cols += [(iid, n, "n", p.shift, p.role, 1), (iid, npop, "pop", p.shift, p.role, 1)]
                if p.role == "num2":
                    miss = column(_flag(f"{inpop} AND NOT ({use})"), f"miss_{iid}_{p.role}",
                                  p.shift)
                    cols.append((iid, miss, "miss", p.shift, p.role, 1))
                else:
                    cols += [(iid, npop, "miss", p.shift, p.role, 1),
                             (iid, n, "miss", p.shift, p.role, -1)]
        return per_shift, cols

    @property
    def _phys(self) -> list[tuple[str, str, int]]:
        """The physical columns (name, kind, shift) behind the logical ones, each once."""
        return list(dict.fromkeys((c[1], c[2] if c[2] == "x" else "n", c[3])
                                  for c in self._cols))

    def _psu_totals(self) -> None:
        """ONE scan of the source for every breakdown: the PSU totals at the finest key
        (country, stratum, PSU, period and the group of every breakdown; :meth:`_fine_sql`).
        Where they go depends on their size:

        * bound ``PSU-periods x prod(groups)`` at most ``FETCH_LIMIT`` rows: fetched at once
          (Arrow), every breakdown rolled up from them in numpy;
        * else kept in the engine (DuckDB temp table, spilled under a memory limit; Spark:
          persisted) and fetched at once if it has few rows after all (``FETCH_LIMIT``);
        * else bucketed (:meth:`_bucket_pass`): written out of core in files partitioned by
          a hash of the PSU, read back a bucket at a time (``BUCKET_ROWS`` rows).
        """
        if self._fine is not None:
            return
        groups: dict[str, str] = {}
        for j, b in enumerate(b for b in self.breakdowns if b in self.schema):
            gexpr, labels = self._group_expr(b)
            groups[f"g{j}"] = gexpr
            self._groups[b] = (f"g{j}", labels)
        frm, sel = self._base(groups)
        per_shift, cols = self._part_columns()
        self._cols = cols
        self._shifts = sorted(set(per_shift) | {0})
        sel = sel + [e for s in self._shifts for e in per_shift.get(s, [])]
        row_sql = f"SELECT {', '.join(sel)} FROM {frm}"
        fine = self._fine_sql(list(groups))
        self._psu_periods = int(self.n_h.sum()) * self.ny
        sizes = [len(labels) for _, labels in self._groups.values()]
        bound = self._psu_periods * float(np.prod(sizes))
        if bound <= self.fetch_limit:
            self._fine = "local"
            L = self._fetch(f"WITH rows_ AS ({row_sql}), fine AS ({fine}) "
                            + self._shifted("fine", list(groups)))
            self._local = (L, self._cell_counts(L))
            return
        self._fine = "buckets"
        table = f"msme_fine_{uuid.uuid4().hex}"
        self.run.materialise(table, f"WITH rows_ AS ({row_sql}) {fine}")
        try:
            n = int(self.run.query(f"SELECT COUNT(*) AS n FROM {table}")["n"].iloc[0])
            if n * len(self._shifts) <= self.fetch_limit:  # fewer rows than the bound said
                L = self._fetch(self._shifted(table, list(groups)))
                self._local = (L, self._cell_counts(L))
            else:
                self._bucket_pass(table, n * len(self._shifts))
        except BaseException:
            self.release()  # no bucket files left behind (the caller has no stage yet)
            raise
        finally:
            self.run.drop(table)  # its memory (or spill file) goes now

    # -- the bucketed path -------------------------------------------------------------------
    def _bucket_pass(self, table: str, rows: int) -> None:
        """Every breakdown's moments from fine PSU totals too many to fetch at once.

        The fine table ``table`` (``rows`` rows with the shifted copies) is written in files
        partitioned by ``bk = hash(country, stratum, PSU) mod K`` (``K`` such that a
        partition holds about ``BUCKET_ROWS / 1.2`` rows, room for the spread of the hash;
        ``engines`` ``write_partitioned``: DuckDB streams Arrow record batches into Arrow IPC
        files, Spark writes Parquet) in a temporary folder (``tempfile``: ``TMPDIR``; on a
        Spark cluster it must be a folder the driver and executors share). Consecutive
        partitions are read back in buckets of at most ``BUCKET_ROWS`` rows (file metadata),
        each rolled up in numpy like the fetched path (:meth:`_local_moments`).
        A PSU (all its periods and groups) lies in one bucket, so every moment -- a sum over
        the PSUs of a (stratum, period, group) cell -- is the sum of the buckets' moments, and
        so are the centred sums ``sum_i (u_i - c)^2`` and the PSU-periods counted by
        :func:`parts.centred_ss` (each PSU-period in one bucket): the result is exact however
        a stratum is split. Each bucket's per-PSU arrays for the second pass are kept in a
        temporary folder (``np.savez``), removed by :meth:`release`. One bucket only: its rows
        are kept as the fetched table (each breakdown rolled up when asked for).
        """
        k = int(min(MAX_BUCKETS, max(1, math.ceil(1.2 * rows / max(self.bucket_rows, 1)))))
        self._dir = tempfile.mkdtemp(prefix="msme_eval_psu_")
        folder = os.path.join(self._dir, "fine")
        bk = "0" if k == 1 else (f"CAST(hash(a, h, p) % {k} AS INTEGER)"
                                 if self.d.name == "duckdb" else f"pmod(hash(a, h, p), {k})")
        self.run.write_partitioned(f"SELECT *, {bk} AS bk FROM {table}", folder, "bk")
        self.run.drop(table)  # the engine's memory goes before the buckets are read
        names: list[str | None] = [None, *self._groups]
        sums: dict[str | None, dict[str, np.ndarray]] = {b: {} for b in names}
        paths: dict[str | None, list[str]] = {b: [] for b in names}
        buckets, written = _buckets(folder, self.bucket_rows / len(self._shifts))
        if written != rows // len(self._shifts):  # e.g. executors wrote to their own disks
            raise RuntimeError(
                f"{self.run.describe}: {written:,} of the {rows // len(self._shifts):,} rows of "
                f"PSU totals came back from the temporary folder {self._dir}. Fix: on a Spark "
                "cluster set TMPDIR (Python's tempfile folder) to a path the driver and every "
                "executor share, or compute with engine='duckdb'.")
        for j, files in enumerate(buckets):
            L = self._arrays(self._shift_arrow(_read_bucket(files)))
            C = self._cell_counts(L)
            if len(buckets) == 1:  # few rows after all: the fetched path
                self._local = (L, C)
                break
            for b in names:
                gcol, labels = (None, [TOTAL]) if b is None else self._groups[b]
                M = self._local_moments(L, C, gcol, labels, b is None)
                for name, x in M.m.items():
                    sums[b][name] = sums[b][name] + x if name in sums[b] else x
                paths[b].append(_save_psu(os.path.join(self._dir, f"psu{j}_{b}.npz"), M.psu))
            del L, C
        shutil.rmtree(folder, ignore_errors=True)
        for b in names if self._local is None else []:
            labels = [TOTAL] if b is None else self._groups[b][1]
            self._bucketed[b] = Moments(labels, sums[b], _Buckets(paths[b]))

    def _cell_counts(self, L: dict[str, Any]) -> dict[str, Any]:
        """The record counts of fine rows ``L`` summed per fine cell (stratum-period and the
        group of every breakdown, no PSU): the ``C`` of :meth:`_local_moments`, so that each
        breakdown sums the counts over cells, not over PSU rows. The count columns leave
        ``L``."""
        key = L["hy"]
        for g, labels in self._groups.values():
            key = key * len(labels) + L[g]
        cells, inv = np.unique(key, return_inverse=True)
        C: dict[str, Any] = {}
        for g, labels in reversed(list(self._groups.values())):
            C[g] = cells % len(labels)
            cells = cells // len(labels)
        C["hy"] = cells
        for c in ["r0", "lg", *(n for n, kd, _ in self._phys if kd != "x")]:
            C[c] = np.bincount(inv, weights=L.pop(c), minlength=len(C["hy"]))
        return C

    def _shift_arrow(self, tab: Any) -> Any:
        """:meth:`_shifted` on an Arrow table of fine rows (a bucket): per shift s, the rows
        at period ``yi + s`` with the parts of other shifts (and the counts r0/lg if s != 0)
        set to 0."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._shifts == [0]:
            return tab
        shift_of = {n: sh for n, _, sh in self._phys}
        blocks = []
        for s in self._shifts:
            cols = []
            for name in tab.column_names:
                col = tab.column(name)
                if name == "yi":
                    col = pc.add(col, pa.scalar(s, col.type))
                elif (name in ("r0", "lg") and s != 0) or shift_of.get(name, s) != s:
                    col = pa.array(np.zeros(len(tab), dtype=col.type.to_pandas_dtype()))
                cols.append(col)
            blocks.append(pa.table(cols, names=tab.column_names))
        return pa.concat_tables(blocks)

    def _fine_sql(self, groups: list[str]) -> str:
        """ONE hash aggregate over the rows ``rows_`` at the finest key: weighted parts
        (DOUBLE), record counts (0/1 TINYINT flags summed, as BIGINT) and ``r0 = COUNT(*)``
        -- no re-scan of the rows per breakdown (each is a roll-up of this table)."""
        keys = ", ".join(["a", "h", "p", "yi", *groups])
        return (f"SELECT {keys}, COUNT(*) AS r0, {_total('lg', 'n')} AS lg, "
                + ", ".join(f"{_total(n, kd)} AS {n}" for n, kd, _ in self._phys)
                + f" FROM rows_ WHERE yi IS NOT NULL GROUP BY {keys}")

    def _shifted(self, src: str, groups: list[str]) -> str:
        """The rows of ``src`` (fine table) with the parts of a one-year shift moved to period
        ``yi + s`` (``UNION ALL``; a key may repeat: the consumer sums); the record counts
        ``r0``/``lg`` stay at shift 0. :meth:`_shift_arrow` does the same on a bucket."""
        blocks = []
        for s in self._shifts:
            items = [n if sh == s else f"CAST(0 AS {'DOUBLE' if kd == 'x' else 'BIGINT'})"
                     for n, kd, sh in self._phys]
            head = ["a", "h", "p", f"yi + {s} AS yi", *groups,
                    "r0" if s == 0 else "CAST(0 AS BIGINT) AS r0",
                    "lg" if s == 0 else "CAST(0 AS BIGINT) AS lg"]
            blocks.append(f"SELECT {', '.join(head)}, "
                          + ", ".join(f"{e} AS {c[0]}" for e, c in zip(items, self._phys))
                          + f" FROM {src}")
        return " UNION ALL ".join(blocks)

    def _fetch(self, sql: str) -> dict[str, Any]:
        """PSU totals (or cell counts: no ``p`` column) as numpy arrays (one query, Arrow, text
        keys dictionary-encoded): ``hy`` = stratum * ny + period of each row and, with PSUs,
        the PSU-period index ``py`` (``py_hy``: the ``hy`` of each)."""
        return self._arrays(self.run.query_arrow(sql))

    def _arrays(self, tab: Any) -> dict[str, Any]:
        """:meth:`_fetch` of an Arrow table."""
        a, a_lab = _codes(tab.column("a"))
        h, h_lab = _codes(tab.column("h"))
        ah, first = np.unique(a * len(h_lab) + h, return_inverse=True)
        pairs = pd.MultiIndex.from_arrays([a_lab[ah // len(h_lab)], h_lab[ah % len(h_lab)]])
        hs = self._strata.get_indexer(pairs).astype(np.int64)[first]
        yi = _ints(tab.column("yi"))
        out: dict[str, Any] = {"hy": hs * self.ny + yi}
        if "p" in tab.column_names:
            p, p_lab = _codes(tab.column("p"))
            n_p = max(len(p_lab), 1)
            py, uniq = pd.factorize((hs * n_p + p) * self.ny + yi)
            uniq = np.asarray(uniq, dtype=np.int64)
            out.update(py=py.astype(np.int64),
                       py_hy=(uniq // self.ny // n_p) * self.ny + uniq % self.ny)
        keys = {"a", "h", "p", "yi", "g", *(gn for gn, _ in self._groups.values())}
        for c in tab.column_names:
            if c in keys - {"a", "h", "p", "yi"}:
                out[c] = _ints(tab.column(c))
            elif c not in keys:
                out[c] = tab.column(c).to_numpy()
                tab = tab.drop_columns([c])  # its Arrow buffers go as soon as numpy has them
        return out

    def _recipe(self) -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, list]]]:
        """Per indicator: its PSU-level roles -> x columns (num + num2 for a total), and
        n/pop/miss -> (count column, sign) (summed over the parts)."""
        X = {(c[0], c[4]): c[1] for c in self._cols if c[2] == "x"}
        xcol: dict[str, dict[str, list[str]]] = {}
        counts: dict[str, dict[str, list]] = {}
        for ind in self.live:
            iid = ind["id"]
            xcol[iid] = {role: ([X[(iid, r)] for r in ("num", "num2") if (iid, r) in X]
                                if ind["kind"] == "total" else [X[(iid, role)]])
                         for role in moment_names(ind).values()}
            counts[iid] = {kind: [(c[1], c[5]) for c in self._cols if c[0] == iid and c[2] == kind]
                           for kind in ("n", "pop", "miss")}
        return xcol, counts

    def _local_moments(self, L: dict[str, Any], C: dict[str, Any], gcol: str | None,
                       labels: list[str], total: bool) -> Moments:
        """:meth:`moments` from fetched PSU totals ``L`` (numpy): the weighted parts summed
        per (PSU-period, group) pair (kept for the centred pass), then per (stratum, period,
        group) cell; the counts per cell straight from their rows ``C`` (``L`` or a table of
        counts per fine cell)."""
        G = len(labels)
        g = np.zeros(len(L["py"]), dtype=np.int64) if gcol is None else L[gcol]
        pair, inv = np.unique(L["py"] * G + g, return_inverse=True)
        k_py, k_g = pair // G, pair % G
        size = len(self.n_h) * self.ny * G
        row_cell = C["hy"] * G + (0 if gcol is None else C[gcol])

        def arr(cell: np.ndarray, x: np.ndarray | None) -> np.ndarray:
            out = np.bincount(cell, weights=x, minlength=size)
            return out.reshape(len(self.n_h), self.ny, G)

        pair_cell = L["py_hy"][k_py] * G + k_g
        done: dict[str, np.ndarray] = {}

        def per_pair(col: str) -> np.ndarray:  # a shared column is summed once
            if col not in done:
                done[col] = np.bincount(inv, weights=L[col], minlength=len(pair))
            return done[col]

        m = {"__rows__": arr(row_cell, C["r0"]), "__psus__": arr(pair_cell, None).astype(float)}
        if total:
            m["__large__"] = arr(row_cell, C["lg"])
        xcol, counts = self._recipe()
        psu_x: dict[str, dict[str, np.ndarray]] = {}
        for ind in self.live:
            iid = ind["id"]
            psu_x[iid] = {role: per_pair(cs[0]) if len(cs) == 1 else  # no copy of a column
                          sum(per_pair(c) for c in cs) for role, cs in xcol[iid].items()}
            m.update({name: arr(pair_cell, psu_x[iid][role])
                      for name, role in moment_names(ind).items()})
            m.update({f"{iid}:{kind}": sum(sign * arr(row_cell, C[c]) for c, sign in cs)
                      for kind, cs in counts[iid].items()})
        return Moments(labels, m, (k_py, k_g, psu_x, L["py_hy"]))

    def moments(self, breakdown: str | None) -> Any:
        self._psu_totals()
        gcol, labels = (None, [TOTAL]) if breakdown is None else self._groups[breakdown]
        if self._local is not None:
            return self._local_moments(*self._local, gcol, labels, breakdown is None)
        return self._bucketed[breakdown]

    def centred_ss(self, M: Any, reqs: dict[str, dict[str, Any]]
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Second pass of ``compute._PandasStage.centred_ss`` over the PSU totals of ``M``:
        :func:`parts.centred_ss` in numpy on the fetched ones, or bucket by bucket (the
        buckets' sums add up: a PSU lies in one bucket; :meth:`_bucket_pass`)."""
        n_s, ny = len(self.n_h), self.ny
        if not isinstance(M.psu, _Buckets):  # fetched PSU totals
            k_py, k_g, psu_x, py_hy = M.psu
            return centred_ss((k_py, k_g, psu_x), M.n_groups, reqs, py_hy, n_s, ny)
        ss: dict[str, np.ndarray] = {}
        n_present = np.zeros((n_s, ny))
        for path in M.psu.paths:
            k_py, k_g, psu_x, py_hy = _load_psu(path, reqs)
            part, n = centred_ss((k_py, k_g, psu_x), M.n_groups, reqs, py_hy, n_s, ny)
            n_present += n
            for iid, x in part.items():
                ss[iid] = ss[iid] + x if iid in ss else x
        return ss, n_present

    def release(self, M: Any = None) -> None:
        """Delete the bucket files of ``M`` (default: every file this stage made)."""
        if M is not None:
            if isinstance(M.psu, _Buckets):
                for path in M.psu.paths:
                    Path(path).unlink(missing_ok=True)
            return
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- disclosure ---------------------------------------------------------------------------
    def fine_stats(self, inds: list[dict[str, Any]], breakdowns: list[str]
                   ) -> dict[str, pd.DataFrame]:
        """Contributors, top-2 |magnitude| and total per (key, fine cell) in SQL, one query:
        the keys of :func:`parts.disclosure_parts` (numerator; K04's comparison group)."""
        if not inds:
            return {}
        gexprs, sizes = {}, []
        for j, b in enumerate(breakdowns):
            e, labels = self._group_expr(b)
            gexprs[f"g{j}"] = e
            sizes.append(len(labels))
        fid = self._prefixed(self.d.ident("firm_id")) if "firm_id" in self.schema else \
            self._prefixed(self.p)
        frm, sel = self._base(gexprs, {"fid": fid})
        gcols = "".join(f", g{j}" for j in range(len(breakdowns)))
        pieces, multi = [], []
        for ind in inds:
            ps = parts(ind)

            def ok(p: Any) -> str:
                v, pop = self._value(p.value), self._value(p.population)
                return f"({pop} IS NOT NULL AND ({pop} = 0 OR {v} IS NOT NULL))"

            for key, mine in disclosure_parts(ind).items():  # numerator; K04's comparison
                for p in mine:
                    v, pop = self._value(p.value), self._value(p.population)
                    use = ok(p) if ind["kind"] == "total" else " AND ".join(ok(x) for x in ps)
                    k = len(pieces)
                    sel.append(f"(CASE WHEN {pop} = 1 AND {v} IS NOT NULL AND {use} THEN {v} "
                               f"ELSE NULL END) AS mag{k}")
                    pieces.append(f"SELECT '{key}' AS ind, a, yi + {p.shift} AS yi{gcols}, "
                                  f"fid, mag{k} AS mag FROM rows_ WHERE mag{k} IS NOT NULL "
                                  "AND yi IS NOT NULL")
                if len(mine) > 1:
                    multi.append(key)
        row_sql = f"SELECT {', '.join(sel)} FROM {frm}"
        keys = f"ind, a, yi{gcols}"
        contrib = (f"SELECT {keys}, fid, ABS(SUM(mag)) AS m FROM ({' UNION ALL '.join(pieces)}) u "
                   f"GROUP BY {keys}, fid") if multi else \
            f"SELECT {keys}, fid, ABS(mag) AS m FROM ({' UNION ALL '.join(pieces)}) u"
        if self.d.name == "duckdb":
            agg = (f"SELECT {keys}, SUM(CASE WHEN m > 0 THEN 1 ELSE 0 END) AS n_contrib, "
                   "SUM(m) AS total, max(m, 2) AS tops FROM c GROUP BY " + keys)
            sql = f"WITH rows_ AS ({row_sql}), c AS ({contrib}) {agg}"
            res = self.run.query(sql)
            tops = res.pop("tops")
            res["top1"] = [float(t[0]) if t is not None and len(t) > 0 else 0.0 for t in tops]
            res["top2"] = [float(t[1]) if t is not None and len(t) > 1 else 0.0 for t in tops]
        else:
            rk = (f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY m DESC) AS rk "
                  "FROM c")
            agg = (f"SELECT {keys}, SUM(CASE WHEN m > 0 THEN 1 ELSE 0 END) AS n_contrib, "
                   "SUM(m) AS total, MAX(CASE WHEN rk = 1 THEN m ELSE 0.0 END) AS top1, "
                   "MAX(CASE WHEN rk = 2 THEN m ELSE 0.0 END) AS top2 FROM r GROUP BY " + keys)
            sql = f"WITH rows_ AS ({row_sql}), c AS ({contrib}), r AS ({rk}) {agg}"
            res = self.run.query(sql)
        out = {}
        res["_area"] = self.areas.get_indexer(res["a"])
        for iid, f in res.groupby("ind", sort=False):
            d = {"_area": f["_area"].to_numpy(np.int64), "_yi": f["yi"].to_numpy(np.int64)}
            d.update({f"_g{j}": f[f"g{j}"].to_numpy(np.int64) for j in range(len(breakdowns))})
            d["n_contrib"] = f["n_contrib"].to_numpy(np.int64)
            d.update({c: f[c].to_numpy(float) for c in ("top1", "top2", "total")})
            out[str(iid)] = pd.DataFrame(d)
        return out


class _Buckets:
    """The per-bucket PSU arrays of one breakdown (``np.savez`` files, see _save_psu)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths


def _buckets(folder: str, rows: float) -> tuple[list[list[str]], int]:
    """The files of a ``bk``-partitioned folder (``engines`` ``write_partitioned``) in
    buckets: consecutive partitions (ascending ``bk``) with at most ``rows`` rows together (a
    partition alone may have more); and the rows of all files (file metadata)."""
    parts_ = sorted(Path(folder).glob("bk=*"), key=lambda d: int(d.name.split("=", 1)[1]))
    out: list[list[str]] = []
    n = total = 0
    for d in parts_:
        files = sorted(str(f) for f in d.iterdir() if f.suffix in (".arrow", ".parquet"))
        size = sum(engines.partition_rows(f) for f in files)
        total += size
        if out and n + size <= rows:
            out[-1] += files
            n += size
        else:
            out.append(files)
            n = size
    return out, total


def _read_bucket(files: list[str]) -> Any:
    """The rows of a bucket's files as one Arrow table (:func:`engines.read_partition`)."""
    return engines.read_partition(files)


def _save_psu(path: str, psu: tuple) -> str:
    """Write a Moments' ``psu`` tuple ``(k_py, k_g, psu_x, py_hy)`` to ``path`` (npz); an
    array shared by several indicators/roles (one part column) is stored once."""
    k_py, k_g, psu_x, py_hy = psu
    keys: dict[int, str] = {}
    arrays: dict[str, np.ndarray] = {}
    names = []
    for iid, xs in psu_x.items():
        for role, x in xs.items():
            if id(x) not in keys:
                keys[id(x)] = f"a{len(keys)}"
                arrays[keys[id(x)]] = x
            names.append(f"{iid}|{role}|{keys[id(x)]}")
    np.savez(path, k_py=k_py, k_g=k_g, py_hy=py_hy, names=np.array(names), **arrays)
    return path


def _load_psu(path: str, want: Any) -> tuple:
    """:func:`_save_psu` read back, the PSU totals of the indicators in ``want`` only."""
    with np.load(path) as f:
        psu_x: dict[str, dict[str, np.ndarray]] = {}
        got: dict[str, np.ndarray] = {}
        for name in f["names"]:
            iid, role, key = str(name).split("|")
            if iid in want:
                if key not in got:
                    got[key] = f[key]
                psu_x.setdefault(iid, {})[role] = got[key]
        return f["k_py"], f["k_g"], psu_x, f["py_hy"]


def _flag(cond: str) -> str:
    """A 0/1 record flag as TINYINT (NULL condition -> 0): summed exactly, as BIGINT."""
    return f"CAST((CASE WHEN {cond} THEN 1 ELSE 0 END) AS TINYINT)"


def _distinct(lists: pd.Series) -> list[Any]:
    """The union of per-group distinct lists (NULL dropped), sorted."""
    out = set()
    for v in lists:
        if v is not None:
            out.update(x for x in v if x is not None and x == x)
    return sorted(out)


def _total(col: str, kind: str) -> str:
    """SUM of a weighted part (DOUBLE) or of a record count (exact, BIGINT)."""
    return f"SUM({col})" if kind == "x" else f"CAST(SUM({col}) AS BIGINT)"


def _codes(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and labels of an Arrow text column (dictionary-encoded, no Python strings
    per row)."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col).combine_chunks()
    return (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
            np.asarray(enc.dictionary.to_pylist(), dtype=object))


def _ints(col: Any) -> np.ndarray:
    """An Arrow integer column as int64 (NULL -> 0: the group column outside its set)."""
    import pyarrow.compute as pc

    return pc.fill_null(col, 0).to_numpy().astype(np.int64, copy=False)


def _lit(v: str) -> str:
    return str(v).replace("'", "''")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def stage_for(source: Any, engine: str | None, area_col: str, year_col: str, design: tuple,
              inds: list[dict[str, Any]], needed: Any, con: Any = None,
              breakdowns: list[str] = ()) -> SqlStage:
    """The SQL stage for a Parquet path/glob/folder, DuckDB relation, polars or Spark frame."""
    run = engines.runner(source, engine, **({"con": con} if con is not None else {}))
    cols = set(run.schema())
    missing = {i["id"]: [c for c in needed(i) if c not in cols] for i in inds}
    return SqlStage(run, area_col, year_col, design, inds, missing, breakdowns)
