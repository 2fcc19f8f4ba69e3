"""Benchmark: survey.ratio by domain vs samplics, and vs the floor (a bare grouped sum).

    .venv/bin/python benchmarks/bench_survey.py --rows 1000000
    .venv/bin/python benchmarks/bench_survey.py --rows 10000000 --samplics-max-rows 0

Workload: a stratified two-stage design (10 countries x 20 strata, 30 PSUs per stratum,
unequal weights); the ratio turnover / employees (the shape of K04 and of every share) with
Taylor-linearised SEs by (country, size_class) = 40 domains and by (country, year, size_class)
= 400 domains. Floors: pandas ``groupby(by + [strata, psu]).sum()`` and DuckDB ``SELECT ...,
SUM(w*y), SUM(w*x) GROUP BY ...`` of the same two weighted columns -- what any design-based
estimator must at least do. samplics 0.6 (TaylorEstimator, domain=) computes the same
estimates (checked to 1e-9 on a sample of rows before timing). Peak memory of survey.ratio is
measured with tracemalloc (numpy and pandas buffers) and compared with the bytes of the input
columns it reads. Times are the best of ``--repeat`` runs (samplics: one run).
"""
from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd

from msme_eval import survey

COUNTRIES = ["BRN", "KHM", "IDN", "LAO", "MYS", "MMR", "PHL", "SGP", "THA", "VNM"]


def make_data(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    country = rng.integers(0, 10, n)
    stratum = country * 20 + rng.integers(0, 20, n)
    psu = stratum * 30 + rng.integers(0, 30, n)
    size = rng.choice(np.array(["micro", "small", "medium", "large"]), n, p=[.7, .2, .07, .03])
    employees = np.maximum(1, rng.lognormal(1.5, 1.0, n).round())
    return pd.DataFrame({
        "country": pd.Series(np.array(COUNTRIES)[country], dtype="str"),
        "year": rng.integers(2015, 2025, n),
        "size_class": pd.Series(size, dtype="str"),
        "strata": pd.Series(stratum.astype(str), dtype="str"),
        "psu": pd.Series(psu.astype(str), dtype="str"),
        "weight": rng.uniform(1.0, 200.0, n),
        "turnover": employees * rng.lognormal(3.0, 0.8, n),
        "employees": employees,
    })


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def ours(df: pd.DataFrame, by: list[str], deff: bool = True) -> pd.DataFrame:
    return survey.ratio(df, "turnover", "employees", weight="weight", strata="strata",
                        psu="psu", by=by, deff=deff)


def floor_pandas(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    tmp = pd.DataFrame({c: df[c] for c in [*by, "strata", "psu"]})
    tmp["wy"] = df["weight"].to_numpy() * df["turnover"].to_numpy()
    tmp["wx"] = df["weight"].to_numpy() * df["employees"].to_numpy()
    return tmp.groupby([*by, "strata", "psu"], sort=False, observed=True)[["wy", "wx"]].sum()


def floor_duckdb(con, by: list[str]) -> pd.DataFrame:
    keys = ", ".join([*by, "strata", "psu"])
    return con.execute(
        f"SELECT {keys}, SUM(weight*turnover) AS wy, SUM(weight*employees) AS wx "
        f"FROM df GROUP BY {keys}").df()


def samplics_ratio(df: pd.DataFrame, by: list[str]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from samplics import PopParam, TaylorEstimator
        domain = df[by[0]].astype(str)
        for c in by[1:]:
            domain = domain + "|" + df[c].astype(str)
        est = TaylorEstimator(PopParam.ratio)
        est.estimate(y=df["turnover"].to_numpy(), x=df["employees"].to_numpy(),
                     samp_weight=df["weight"].to_numpy(), stratum=df["strata"].to_numpy(),
                     psu=df["psu"].to_numpy(), domain=domain.to_numpy())
    return {"estimate": est.point_est, "se": est.stderror}


def check_against_samplics(df: pd.DataFrame, by: list[str]) -> float:
    res = ours(df, by)
    ref = samplics_ratio(df, by)
    labels = res[by[0]].astype(str)
    for c in by[1:]:
        labels = labels + "|" + res[c].astype(str)
    worst = 0.0
    for col in ("estimate", "se"):
        exp = np.array([ref[col][k] for k in labels])
        worst = max(worst, float(np.max(np.abs(res[col].to_numpy() / exp - 1))))
    return worst


def peak_memory(fn) -> int:
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def input_bytes(df: pd.DataFrame, cols: list[str]) -> int:
    return int(sum(df[c].memory_usage(deep=True, index=False) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--samplics-max-rows", type=int, default=1_000_000,
                    help="skip samplics above this many rows (it is slow); 0 = never run it")
    ap.add_argument("--no-duckdb", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = make_data(args.rows)
    print(f"rows {args.rows:,}; data generated in {time.perf_counter() - t0:.1f} s; "
          f"design: {df['strata'].nunique()} strata, {df['psu'].nunique()} PSUs")
    err = check_against_samplics(df.head(20_000), ["country", "size_class"])
    print(f"check vs samplics on 20,000 rows, 40 domains: max relative difference {err:.1e}")

    con = None
    if not args.no_duckdb:
        try:
            import duckdb
            con = duckdb.connect()
            con.register("df", df)
            print(f"duckdb {duckdb.__version__}, threads "
                  f"{con.execute('SELECT current_setting(%s)' % repr('threads')).fetchone()[0]}")
        except ImportError:
            print("duckdb not installed: `.venv/bin/pip install duckdb` for the DuckDB floor")

    used = ["turnover", "employees", "weight", "strata", "psu"]
    for by in (["country", "size_class"], ["country", "year", "size_class"]):
        t_ours, res = best_of(lambda by=by: ours(df, by), args.repeat)
        t_nodeff, _ = best_of(lambda by=by: ours(df, by, deff=False), args.repeat)
        t_pd, fl = best_of(lambda by=by: floor_pandas(df, by), args.repeat)
        line = (f"\nby {by}: {len(res)} domains, {len(fl):,} (domain, stratum, PSU) groups\n"
                f"  survey.ratio (se, ci, deff)   {t_ours:8.3f} s\n"
                f"  survey.ratio (deff=False)     {t_nodeff:8.3f} s\n"
                f"  floor: pandas groupby sum     {t_pd:8.3f} s   "
                f"ratio ours/floor {t_ours / t_pd:5.2f} (deff=False {t_nodeff / t_pd:5.2f})")
        if con is not None:
            t_db, _ = best_of(lambda by=by: floor_duckdb(con, by), args.repeat)
            line += (f"\n  floor: DuckDB GROUP BY sum     {t_db:8.3f} s   "
                     f"ratio ours/floor {t_ours / t_db:5.2f} (deff=False {t_nodeff / t_db:5.2f})")
        if 0 < args.rows <= args.samplics_max_rows and len(by) == 2:
            t0 = time.perf_counter()
            samplics_ratio(df, by)
            t_s = time.perf_counter() - t0
            line += (f"\n  samplics TaylorEstimator      {t_s:8.3f} s   "
                     f"samplics/ours {t_s / t_ours:6.1f}x")
        elif len(by) == 2:
            line += "\n  samplics: skipped (--samplics-max-rows)"
        print(line, flush=True)
    cols = [*used, "country", "size_class"]
    peak = peak_memory(lambda: ours(df, ["country", "size_class"]))
    base = input_bytes(df, cols)
    print(f"\npeak memory of survey.ratio (tracemalloc) {peak / 1e6:.0f} MB = "
          f"{peak / base:.2f} x the {base / 1e6:.0f} MB of input columns it reads")


if __name__ == "__main__":
    main()
