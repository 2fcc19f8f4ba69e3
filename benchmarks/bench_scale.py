"""Scale benchmark ("Registry scale"): the 10 KPIs (K01-K10) with SEs for every country-year,
total + 3 breakdowns (size_class, owner_female, urban), on large firm-year panels.

Every case is ``indicators.compute(source, macro, breakdowns=..., indicators=K01..K10,
disclosure=False)`` -- estimates, linearised SEs, CIs, flags, ASEAN rows -- except the floor:

* ``pandas``:  the needed columns read from Parquet into a DataFrame (read time reported apart,
  not in ``wall_s``), then ``engine="pandas"``;
* ``duckdb``:  ``engine="duckdb"`` on the Parquet dataset with ``con=engines.connect(
  memory_limit=--memory-limit, threads=--threads, temp_directory=--temp-dir)`` (for a
  ``compute`` without ``con=``: a relation from that connection, which carries its settings);
* ``duckdb_default``: ``compute(<parquet folder>)`` as a user calls it (DuckDB defaults: no
  cap given, i.e. 80 % of RAM, all cores);
* ``spark``:   ``engine="spark"`` on ``spark.read.parquet`` from ``msme_eval.spark.session()``
  (``local[2]``; ``MSME_EVAL_SPARK_CONF`` from ``--spark-conf``);
* ``floor``:   a bare DuckDB ``SELECT country, year, [group,] strata, psu, COUNT(*),
  SUM(weight), SUM(weight * x) ... GROUP BY ...`` over the same Parquet columns the 10 KPIs read,
  once for the total and once per breakdown (same connection settings as ``duckdb``) -- what
  any engine must at least do. ``ratio`` = wall time / floor wall time on the same data.

Each case runs in its own subprocess. Peak memory: ``peak_tree_gb`` = the largest sum of the
RSS of the case process and all its descendants (the Spark JVM included), sampled every 0.1 s
with psutil; ``maxrss_gb`` = ``getrusage`` max RSS of the single largest process.

    python benchmarks/bench_scale.py --quick                      # seconds: 20k firms in /tmp
    python benchmarks/bench_scale.py --rows 1e6 1e7 1e8 --cases floor,pandas,duckdb \
        --memory-limit 1GB      # one run, one table: 1M, 10M, 100M rows (pandas skipped above
                                # --max-pandas-rows); datasets made in --data-root if missing
    python benchmarks/bench_scale.py --data /work/bench_data/f1m44 \
        --cases floor,pandas,duckdb,spark --memory-limit 3GB       # ~10M rows

Datasets: ``msme-eval sample --firms N --seed 0 --out DIR`` (``synth.write_partitioned``,
about 6.95 firm-years per firm: 1.44M firms ~ 10M rows, 14.4M firms ~ 100M rows). A missing
``--data`` folder is generated with ``--firms``. Results are appended to ``--csv``.

Measured on the 2-core machine, 2026-12-03, session 7 (``--memory-limit 1GB``, threads 2;
ratio to the floor of the same run; peak = process tree RSS; datasets with ``--chunk-firms``
100,000 unless said; the machine shared with other engineers' test runs, load ~1.5-2):

==========  ======  =======  =======  ===============================================
rows        case    wall s   peak GB  x floor
==========  ======  =======  =======  ===============================================
1.0M        floor   0.5      0.30     1.00
1.0M        duckdb  1.0      0.43     2.07 (session 6: 1.0 s, 2.13x)
10.0M       floor   3.0      0.89     1.00
10.0M       duckdb  5.1      1.25     1.73 (5.1-5.5 s over runs; session 6: 4.9 s, 1.77x;
                                           the session-6 code on the same machine: 5.3 s)
95.3M       floor   13.4     1.10     1.00 (``--rows 9.76e7 --chunk-firms 1000000``: 0.99M
                                           PSU-period cells)
95.3M       duckdb  18.8     2.41     1.40 (fine table fetched from the temp table; session 6
                                           on a 97.6M dataset: 31.3 s, 1.41x)
100.0M      floor   31.9     3.22     1.00 (chunk 100,000: 5.19M PSU-period cells)
100.0M      duckdb  63.7     2.30     2.00 (bucketed path; session 6: 195.0 s, 5.93x, 3.95 GB;
                                           the session-6 code here: 218.7 s, 4.2 GB, busy)
==========  ======  =======  =======  ===============================================

Session 6, for comparison: 1M pandas 1.2 s / 0.75 GB (2.76x, +0.3 s read into memory); 10M
pandas 10.6 s / 4.75 GB (3.83x, +2.4 s read).

One run on a quiet machine, session 7 (``--rows 1e6 1e7 1e8 --cases floor,pandas,duckdb
--memory-limit 1GB --threads 2``; wall s / peak GB / x floor): 1M floor 0.4 / 0.29, pandas
1.3 / 0.76 / 3.13 (+0.4 s read), duckdb 0.9 / 0.43 / 2.19; 10M floor 2.7 / 0.82, pandas
10.9 / 4.84 / 3.99 (+2.5 s read), duckdb 4.9 / 1.42 / 1.80; 100M floor 31.6 / 3.29, duckdb
64.6 / 2.30 / 2.04 (pandas not run: 100M rows do not fit in memory).

The PSU labels of ``synth.write_partitioned`` carry the chunk, so the number of PSUs grows
with the number of chunks; a survey has hundreds to thousands of PSUs, a register used as its
own PSUs (one firm = one PSU) has millions. When the PSU totals at the finest key (PSU-period
x the group of every breakdown) exceed ``_sql.FETCH_LIMIT`` rows (6M; 10.3M fine rows at
100M rows), the DuckDB engine takes the bucketed path: the fine table (one aggregation, kept
as a temp table, ~28 s of the 64 s) is streamed in Arrow batches into Arrow IPC files
partitioned by a hash of the PSU (~5 s), read back bucket by bucket (``_sql.BUCKET_ROWS`` =
2M rows: 7 buckets of ~1.5M) and rolled up in numpy (~10 s); the centred second pass
runs per bucket over the saved per-PSU arrays (~13 s over the 8 passes, plus ~5 s saving
and loading them). Session 6 ran that case as SQL joins on text keys: moments ~90 s and
centred pass ~100 s of 195 s. The two agree on all 8,700 rows of that case (value 2e-14,
SE 2.4e-12, df 1.1e-12 relative; counts, statuses and flags identical).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

KPIS = [f"K{i:02d}" for i in range(1, 11)]
BREAKDOWNS = ["size_class", "owner_female", "urban"]
#: numeric panel columns read by K01-K10 (registry required_columns, without size_class)
FLOOR_VALUES = ["employees", "value_added", "exports", "imports_or_gvc", "loans_outstanding",
                "registered", "sells_online", "birth_year", "owner_female"]
ROWS_PER_FIRM = 6.95
DEFAULT_CSV = Path(__file__).with_name("results") / "scale.csv"


def _gb(kb: float) -> float:
    return kb / 2**20


# --------------------------------------------------------------------------------------------
# one case, inside its subprocess
# --------------------------------------------------------------------------------------------
def _duck_con(args: argparse.Namespace):
    from msme_eval import engines

    tmp = args.temp_dir or str(Path(args.data) / ".duckdb_tmp")
    con = engines.connect(memory_limit=args.memory_limit, threads=args.threads,
                          temp_directory=tmp)
    for stmt in filter(None, (args.duckdb_set or "").split(";")):
        con.execute(stmt)  # extra settings, e.g. SET disabled_optimizers = 'window_self_join'
    return con


def run_case(case: str, args: argparse.Namespace) -> dict:
    import pandas as pd

    from msme_eval import engines, indicators

    data = Path(args.data)
    panel = data / "panel"
    macro = pd.read_csv(data / "macro.csv")
    kw = dict(breakdowns=BREAKDOWNS, indicators=KPIS, disclosure=args.disclosure)
    import msme_eval

    res: dict = {"case": case, "package": str(Path(msme_eval.__file__).parent)}
    t0 = time.perf_counter()
    if case == "floor":
        con = _duck_con(args)
        rel = engines.scan_parquet(panel, con=con)
        sums = ", ".join(["COUNT(*) AS n", "SUM(CAST(weight AS DOUBLE)) AS w"] +
                         [f"SUM(CAST(weight AS DOUBLE) * CAST({c} AS DOUBLE)) AS s_{c}"
                          for c in FLOOR_VALUES])
        n = 0
        for b in [None, *BREAKDOWNS]:
            keys = ", ".join(["country", "year", *([b] if b else []), "strata", "psu"])
            tab = rel.query("s", f"SELECT {keys}, {sums} FROM s GROUP BY {keys}").to_arrow_table()
            n = int(pd.Series(tab.column("n").to_pylist()).sum())
        res.update(rows=n, out_rows=tab.num_rows)
    else:
        if case == "pandas":
            from msme_eval.indicators.registry import registry
            from msme_eval.indicators.table import load_needed

            reg = registry()
            reg = reg[reg["id"].isin(KPIS)]
            src = load_needed(str(panel), reg, ["country", "year", "weight", "strata",
                                                   "psu", *BREAKDOWNS])
            res["read_s"] = time.perf_counter() - t0
            res["read_peak_gb"] = _gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            t0 = time.perf_counter()
            out = indicators.compute(src, macro, engine="pandas", **kw)
        elif case == "duckdb":
            import inspect

            con = _duck_con(args)
            if "con" in inspect.signature(indicators.compute).parameters:
                out = indicators.compute(str(panel), macro, engine="duckdb", con=con, **kw)
            else:  # older compute(): a relation carries its connection's settings
                rel = engines.scan_parquet(panel, con=con)
                out = indicators.compute(rel, macro, engine="duckdb", **kw)
        elif case == "duckdb_default":
            out = indicators.compute(str(panel), macro, engine="duckdb", **kw)
        elif case == "spark":
            from msme_eval import spark as sp

            os.environ.setdefault(sp.ENV_MASTER, f"local[{args.threads}]")
            if args.spark_conf:
                os.environ[sp.ENV_CONF] = args.spark_conf
            t = time.perf_counter()
            session = sp.session(app_name="bench_scale")
            src = session.read.parquet(str(panel))
            res["start_s"] = time.perf_counter() - t
            t0 = time.perf_counter()
            out = indicators.compute(src, macro, engine="spark", **kw)
        else:
            raise ValueError(f"unknown case {case!r}")
        tot = out[(out["breakdown"] == "total") & (out["ref_area"] != "ASEAN")]
        man = data / "manifest.json"
        res.update(rows=json.loads(man.read_text())["n_rows"] if man.exists() else None,
                   k01_n=int(tot.loc[tot["indicator"] == "K01", "n"].sum()), out_rows=len(out),
                   se_ok=int(out["se"].notna().sum()))
    res["wall_s"] = time.perf_counter() - t0
    if case == "spark":
        session.stop()
    res["maxrss_gb"] = _gb(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    return res


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def _tree_rss(proc) -> int:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def spawn(case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--run", case, "--data", str(args.data),
           "--memory-limit", args.memory_limit, "--threads", str(args.threads)]
    if args.temp_dir:
        cmd += ["--temp-dir", args.temp_dir]
    if args.spark_conf:
        cmd += ["--spark-conf", args.spark_conf]
    if args.disclosure:
        cmd += ["--disclosure"]
    if args.duckdb_set:
        cmd += ["--duckdb-set", args.duckdb_set]
    peak = [0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc))
            done.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        return {"case": case, "failed": f"exit {proc.returncode}: {tail}",
                "peak_tree_gb": peak[0] / 2**30, "process_s": elapsed}
    res = json.loads(out.strip().splitlines()[-1])
    res.update(peak_tree_gb=peak[0] / 2**30, process_s=elapsed)
    return res


def ensure_data(path: Path, firms: int, chunk_firms: int) -> None:
    if (path / "panel").is_dir() and (path / "macro.csv").exists():
        return
    from msme_eval import synth

    t = time.perf_counter()
    synth.write_partitioned(path, firms, chunk_firms=chunk_firms, seed=0)
    print(f"generated {firms:,} firms into {path} in {time.perf_counter() - t:.1f} s")


def _datasets(args: argparse.Namespace) -> list[Path]:
    """``--data`` folders, or one folder per ``--rows`` size under ``--data-root``
    (generated when missing: ``rows / ROWS_PER_FIRM`` firms)."""
    if args.rows:
        out = []
        for rows in args.rows:
            path = Path(args.data_root) / f"rows_{int(rows):d}"
            ensure_data(path, int(round(rows / ROWS_PER_FIRM)), args.chunk_firms)
            out.append(path)
        return out
    for d in args.data:
        ensure_data(Path(d), args.firms, args.chunk_firms)
    return [Path(d) for d in args.data]


def run_dataset(data: Path, args: argparse.Namespace) -> list[dict]:
    """Every case on one dataset (each in its own process); ``ratio`` = wall / floor wall."""
    args.data = str(data)
    size = sum(f.stat().st_size for f in (data / "panel").rglob("*.parquet")) / 2**30
    print(f"data: {data}/panel ({size:.2f} GB Parquet); {os.cpu_count()} cores; "
          f"DuckDB memory_limit={args.memory_limit} threads={args.threads}", flush=True)
    man = data / "manifest.json"
    n_rows = json.loads(man.read_text())["n_rows"] if man.exists() else 0
    results = []
    for case in args.cases.split(","):
        if case == "pandas" and n_rows > args.max_pandas_rows:
            print(f"pandas skipped: {n_rows:,} rows > --max-pandas-rows (in memory)", flush=True)
            continue
        r = spawn(case, args)
        r["data"] = str(data)
        results.append(r)
        print(json.dumps(r), flush=True)
    floor = next((r["wall_s"] for r in results if r["case"] == "floor" and "wall_s" in r), None)
    for r in results:
        r["ratio"] = r["wall_s"] / floor if floor and "wall_s" in r else float("nan")
    return results


def print_table(results: list[dict]) -> None:
    """One table for every dataset and case: rows, wall, peak memory, ratio to the floor."""
    head = (f"{'case':15s} {'rows':>12s} {'wall s':>8s} {'read s':>7s} {'peak GB':>8s} "
            f"{'maxrss GB':>9s} {'x floor':>8s}")
    print("\n" + head)
    for r in results:
        if "failed" in r:
            print(f"{r['case']:15s} FAILED (peak {r['peak_tree_gb']:.2f} GB): {r['failed'][-300:]}")
            continue
        print(f"{r['case']:15s} {r['rows'] or 0:12,d} {r['wall_s']:8.1f} "
              f"{r.get('read_s', float('nan')):7.1f} {r['peak_tree_gb']:8.2f} "
              f"{r['maxrss_gb']:9.2f} {r['ratio']:8.2f}")


def append_csv(results: list[dict], args: argparse.Namespace) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    rows = [{"when": stamp, "label": args.label, "data": r["data"],
             "memory_limit": args.memory_limit, "threads": args.threads,
             "duckdb_set": args.duckdb_set,
             "disclosure": args.disclosure, "case": r["case"], "rows": r.get("rows"),
             "wall_s": round(r.get("wall_s", float("nan")), 2),
             "read_s": round(r.get("read_s", float("nan")), 2),
             "peak_tree_gb": round(r["peak_tree_gb"], 3),
             "maxrss_gb": round(r.get("maxrss_gb", float("nan")), 3),
             "ratio_to_floor": round(r.get("ratio", float("nan")), 2),
             "failed": r.get("failed", "")[-200:].replace("\n", " | ")} for r in results]
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    fields, old = list(rows[0]), []
    if args.csv.exists():  # keep earlier runs; widen the header if columns were added
        with args.csv.open(newline="") as fh:
            old = list(csv.DictReader(fh))
        fields += [k for r in old for k in r if k not in fields]
    with args.csv.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(old + rows)
    print(f"appended to {args.csv}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=None,
                    help="dataset folder(s) with panel/ and macro.csv")
    ap.add_argument("--rows", type=float, nargs="+", default=None,
                    help="dataset sizes, e.g. 1e6 1e7 1e8: DATA_ROOT/rows_N (made if missing)")
    ap.add_argument("--data-root", default="/tmp/msme_bench", help="where --rows datasets live")
    ap.add_argument("--firms", type=int, default=1_440_000, help="to generate a missing --data")
    ap.add_argument("--chunk-firms", type=int, default=100_000)
    ap.add_argument("--cases", default="floor,pandas,duckdb,spark")
    ap.add_argument("--max-pandas-rows", type=float, default=3e7,
                    help="skip the in-memory pandas case above this many rows")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit (duckdb, floor)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="DuckDB threads / Spark local[N] (default: the machine's cores)")
    ap.add_argument("--temp-dir", default=None, help="DuckDB spill folder (default DATA/.duckdb_tmp)")
    ap.add_argument("--spark-conf", default="spark.driver.memory=3g",
                    help="MSME_EVAL_SPARK_CONF for the spark case")
    ap.add_argument("--duckdb-set", default="",
                    help="extra DuckDB statements for duckdb/floor, ';'-separated")
    ap.add_argument("--disclosure", action="store_true", help="also run disclosure control")
    ap.add_argument("--quick", action="store_true", help="20k firms in /tmp: a smoke run")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="append results here")
    ap.add_argument("--label", default="", help="free text stored in the CSV")
    ap.add_argument("--run", help=argparse.SUPPRESS)  # internal: one case, print JSON
    args = ap.parse_args(argv)
    if args.run:
        args.data = args.data[0]
        print(json.dumps(run_case(args.run, args)))
        return
    if args.quick:
        args.data = args.data or ["/tmp/msme_bench_quick"]
        args.firms, args.chunk_firms = 20_000, 10_000
    if args.data is None and args.rows is None:
        ap.error("--data, --rows (or --quick) is required")
    results = []
    for data in _datasets(args):
        results += run_dataset(data, args)
    print_table(results)
    append_csv(results, args)


if __name__ == "__main__":
    main()
