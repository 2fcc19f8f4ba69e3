"""Scale benchmark: 10 indicators x (total + 3 breakdowns) x every country-year, with SEs.

For each engine the work is the estimator's two stages (msme_eval.engines):

* stage (a): per breakdown, ONE grouped pass of weighted sums of the 11 variables the 10
  ratios need, per (country, year, group, stratum, PSU) -- ``engines.totals(..., deff=False)``;
* stage (b): Taylor covariance of the 11 totals per domain (numpy) and the 10 ratios with
  delta-method SEs (``survey.delta``).

Engines (each run in its own subprocess so peak memory is its own):

* ``pandas``: the panel read into memory (read time reported apart), then the pandas path;
* ``duckdb``: straight from the partitioned Parquet dataset, out of core, under
  ``--memory-limit``;
* ``bare``: a bare DuckDB ``SELECT keys, COUNT(*), SUM(weight*col)... GROUP BY keys`` over the
  same columns and groups, no checks and no variance -- the floor the engine is compared to;
* ``spark``: pyspark local[2] on the same Parquet dataset.

Peak memory = max resident set size of the subprocess and of its children (the Spark JVM).

    python benchmarks/bench_scale.py --rows 10_000_000 --data /tmp/msme_bench \
        --engines pandas,duckdb,bare,spark --memory-limit 2GB

The dataset is made once with ``synth.write_partitioned`` (about 6.9 firm-years per firm;
reused when ``manifest.json`` matches).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIABLES = {
    "employees": "employees", "turnover": "turnover", "value_added": "value_added",
    "assets": "assets", "exports": "exports", "loans": "loans_outstanding",
    "female": "owner_female", "online": "sells_online", "registered": "registered",
    "support": "support_amount", "one": None,
}
#: 10 indicators as (numerator, denominator) of the variables above
INDICATORS = {
    "mean_employees": ("employees", "one"), "labour_productivity": ("value_added", "employees"),
    "mean_turnover": ("turnover", "one"), "export_intensity": ("exports", "turnover"),
    "leverage": ("loans", "assets"), "share_female_owned": ("female", "one"),
    "share_online": ("online", "one"), "share_registered": ("registered", "one"),
    "support_per_firm": ("support", "one"), "value_added_ratio": ("value_added", "turnover"),
}
BREAKDOWNS = [None, "size_class", "sector", "urban"]
DESIGN = dict(weight="weight", strata="strata", psu="psu")
ROWS_PER_FIRM = 6.94  # synth.generate, 10 years with entry and exit


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def ensure_data(root: Path, rows: int, chunk_firms: int, seed: int = 0) -> Path:
    from msme_eval import synth

    firms = max(1000, int(round(rows / ROWS_PER_FIRM)))
    manifest = root / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m["n_firms"] == firms and m["chunk_firms"] == chunk_firms and m["seed"] == seed:
            return root / "panel"
    t = time.perf_counter()
    synth.write_partitioned(root, firms, chunk_firms=chunk_firms, seed=seed, missing=0.02,
                            progress=lambda d, n: print(f"  generated {d:,}/{n:,} firms",
                                                        file=sys.stderr, flush=True))
    print(f"dataset: {firms:,} firms in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return root / "panel"


def _ratios(tot) -> dict:
    from msme_eval import survey

    cols = tot.columns
    out = {}
    for name, (num, den) in INDICATORS.items():
        i, j = cols.index(num), cols.index(den)
        out[name] = survey.delta(
            tot, lambda t, i=i, j=j: t[:, i] / t[:, j],
            lambda t, i=i, j=j: _grad(t, i, j))
    return out


def _grad(t: np.ndarray, i: int, j: int) -> np.ndarray:
    g = np.zeros_like(t)
    g[:, i] = 1.0 / t[:, j]
    g[:, j] = -t[:, i] / t[:, j] ** 2
    return g


def run_engine(engine: str, panel_dir: Path, memory_limit: str, threads: int) -> dict:
    from msme_eval import engines, survey

    res: dict = {"engine": engine}
    t0 = time.perf_counter()
    if engine == "pandas":
        import pandas as pd

        cols = [c for c in VARIABLES.values() if c] + ["country", "year", "size_class",
                                                      "sector", "urban", *DESIGN.values()]
        data = pd.read_parquet(panel_dir, columns=cols)
        data["country"] = data["country"].astype("str")
        data["year"] = data["year"].astype("int64")
        res["read_s"] = time.perf_counter() - t0
        opts: dict = {}
    elif engine == "spark":
        from pyspark.sql import SparkSession

        spark = (SparkSession.builder.master(f"local[{threads}]").appName("bench_scale")
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false")
                 .config("spark.driver.memory", "3g")
                 .config("spark.sql.shuffle.partitions", str(4 * threads)).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        data = spark.read.parquet(str(panel_dir))
        res["start_s"] = time.perf_counter() - t0
        opts = {}
    elif engine in ("duckdb", "bare"):
        data = str(panel_dir)
        opts = dict(memory_limit=memory_limit, threads=threads)
    else:
        raise ValueError(engine)

    t_a = t_b = 0.0
    n_rows = n_domains = 0
    if engine == "bare":
        con = engines.connect(memory_limit=memory_limit, threads=threads)
        rel = engines.scan_parquet(panel_dir, con=con)
        for b in BREAKDOWNS:
            keys = ["country", "year", *([b] if b else []), "strata", "psu"]
            sums = ", ".join(f"SUM(weight * CAST({c} AS DOUBLE))" for c in VARIABLES.values()
                             if c) + ", SUM(weight)"
            t = time.perf_counter()
            tab = rel.query("s", f"SELECT {', '.join(keys)}, COUNT(*) AS n, {sums} FROM s "
                                 f"GROUP BY {', '.join(keys)}").to_arrow_table()
            t_a += time.perf_counter() - t
            n_rows = int(np.asarray(tab.column("n")).sum())
    else:
        for b in BREAKDOWNS:
            by = ["country", "year", *([b] if b else [])]
            t = time.perf_counter()
            table = engines.grouped_sums(data, VARIABLES, by=by, na_rm=True, deff=False,
                                         **DESIGN, **opts)
            t_a += time.perf_counter() - t
            t = time.perf_counter()
            tot = survey.totals_from_sums(table, singleton="centre")
            out = _ratios(tot)
            t_b += time.perf_counter() - t
            n_rows = int(table["n"].sum())
            n_domains += len(out["mean_employees"])
        if engine == "spark":
            spark.stop()
            time.sleep(2)  # let the JVM exit so its peak RSS is counted among the children
    res.update(stage_a_s=t_a, stage_b_s=t_b, total_s=time.perf_counter() - t0, rows=n_rows,
               domains=n_domains, peak_mb=_peak_mb())
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=10_000_000)
    ap.add_argument("--data", type=Path, default=Path("/tmp/msme_bench"))
    ap.add_argument("--engines", default="pandas,duckdb,bare")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk-firms", type=int, default=100_000)
    ap.add_argument("--run", help=argparse.SUPPRESS)  # internal: one engine, print JSON
    args = ap.parse_args(argv)
    root = args.data / f"rows_{int(args.rows)}"
    if args.run:
        print(json.dumps(run_engine(args.run, root / "panel", args.memory_limit, args.threads)))
        return
    panel_dir = ensure_data(root, int(args.rows), args.chunk_firms)
    size = sum(f.stat().st_size for f in panel_dir.rglob("*.parquet")) / 2**20
    print(f"data: {panel_dir} ({size:,.0f} MB Parquet); machine: {os.cpu_count()} cores")
    results = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--run", engine, "--rows", str(int(args.rows)),
               "--data", str(args.data), "--memory-limit", args.memory_limit,
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{engine}: FAILED\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    bare = next((r for r in results if r["engine"] == "bare"), None)
    print(f"\n{'engine':8s} {'rows':>12s} {'domains':>8s} {'stage a s':>10s} {'stage b s':>10s} "
          f"{'total s':>8s} {'peak MB':>8s} {'x bare':>7s}")
    for r in results:
        ratio = (r["stage_a_s"] + r["stage_b_s"]) / bare["stage_a_s"] if bare else float("nan")
        print(f"{r['engine']:8s} {r['rows']:12,d} {r['domains']:8d} {r['stage_a_s']:10.2f} "
              f"{r['stage_b_s']:10.2f} {r['total_s']:8.2f} {r['peak_mb']:8.0f} {ratio:7.2f}")


if __name__ == "__main__":
    main()
