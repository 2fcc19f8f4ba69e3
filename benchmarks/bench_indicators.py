"""Benchmark: the 10 KPIs for every country-year, 3 breakdowns, with SEs.

    .venv/bin/python benchmarks/bench_indicators.py                 # 1M rows
    .venv/bin/python benchmarks/bench_indicators.py --rows 1e6 1e7  # and 10M rows

Compares, on the same synthetic firm-year rows (``synth.generate``; 10M rows are the 1M-row
sample replicated 10 times with new firm and PSU labels and weights divided by 10, i.e. a
10x larger sample of the same strata):

* **ours**: ``indicators.compute(panel, macro, breakdowns=("size_class", "owner_female",
  "urban"), indicators=K01..K10)`` -- estimates, linearised SEs, CIs, flags, ASEAN rows;
  without and with disclosure control;
* **floor**: a bare pandas grouped sum of the same weighted numerator/denominator columns by
  (country, year, group) for the total and the 3 breakdowns (columns prepared outside the
  timer) -- what any engine must at least do;
* **samplics** 0.6 ``TaylorEstimator`` computing the same estimates (ratio / total by domain,
  one call per indicator and breakdown; share-of-total breakdown cells one call per group).
  samplics is timed on a subset (``--samplics-rows``) and extrapolated linearly in rows,
  which is stated in the output. K04 (a ratio of two ratios) is not a samplics parameter: it
  is timed as the two ratios it is made of.

Peak memory of ``compute`` is measured in a separate run with ``tracemalloc`` (numpy and pandas
report their buffers to it) and compared with the bytes of the panel columns it reads.
"""
from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd

from msme_eval import indicators, synth

KPIS = [f"K{i:02d}" for i in range(1, 11)]
BREAKDOWNS = ("size_class", "owner_female", "urban")
USED = ["firm_id", "country", "year", "size_class", "employees", "value_added", "exports",
        "loans_outstanding", "owner_female", "urban", "registered", "sells_online",
        "imports_or_gvc", "birth_year", "weight", "strata", "psu"]
ROWS_PER_FIRM = 6.95  # synth.generate(years=2015-2024) gives about 6.95 firm-years per firm


def make_panel(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """About ``rows`` firm-years: synth.generate for <= 2M rows, replicated beyond."""
    base_rows = min(rows, 2_000_000)
    data = synth.generate(n_firms=int(base_rows / ROWS_PER_FIRM), seed=seed)
    panel = data.panel[USED]
    reps = int(round(rows / len(panel)))
    if reps > 1:
        parts = []
        for k in range(reps):
            p = panel.copy()
            p["firm_id"] = p["firm_id"] + f"#{k}"
            p["psu"] = p["psu"] + f"#{k}"
            p["weight"] = p["weight"] / reps
            parts.append(p)
        panel = pd.concat(parts, ignore_index=True)
        del parts
    return panel, data.macro


def floor_columns(panel: pd.DataFrame) -> pd.DataFrame:
    """Weighted numerator/denominator columns of K01-K10 (prepared outside the timer)."""
    w = panel["weight"].to_numpy()
    sc = panel["size_class"]
    msme = sc.isin(["micro", "small", "medium"]).to_numpy(dtype=float)
    large = (sc == "large").to_numpy(dtype=float)

    def f(c):
        return panel[c].to_numpy(dtype=float, na_value=np.nan)

    emp, va, ex, lo = f("employees"), f("value_added"), f("exports"), f("loans_outstanding")
    age = f("year") - f("birth_year")
    cols = {
        "one": w, "msme": w * msme, "emp": w * emp, "emp_msme": w * emp * msme,
        "va_msme": w * va * msme, "va_large": w * va * large, "emp_large": w * emp * large,
        "online": w * f("sells_online") * msme, "loans": w * lo, "loans_msme": w * lo * msme,
        "exports": w * ex, "exports_msme": w * ex * msme,
        "intl": w * ((ex > 0) | (f("imports_or_gvc") == 1)) * msme,
        "registered": w * f("registered") * msme, "startup": w * (age <= 1) * msme,
    }
    out = pd.DataFrame(cols)
    for c in ("country", "year", *BREAKDOWNS):
        out[c] = panel[c].to_numpy()
    return out


def run_floor(cols: pd.DataFrame) -> float:
    values = [c for c in cols.columns if c not in ("country", "year", *BREAKDOWNS)]
    t = time.perf_counter()
    for b in (None, *BREAKDOWNS):
        keys = ["country", "year"] + ([b] if b else [])
        cols.groupby(keys, observed=True, dropna=False)[values].sum()
    return time.perf_counter() - t


def run_ours(panel: pd.DataFrame, macro: pd.DataFrame, disclosure: bool) -> tuple[float, int]:
    t = time.perf_counter()
    out = indicators.compute(panel, macro, breakdowns=BREAKDOWNS, indicators=KPIS,
                             disclosure=disclosure)
    return time.perf_counter() - t, len(out)


def peak_memory(panel: pd.DataFrame, macro: pd.DataFrame) -> float:
    gc.collect()
    tracemalloc.start()
    indicators.compute(panel, macro, breakdowns=BREAKDOWNS, indicators=KPIS, disclosure=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run_samplics(panel: pd.DataFrame, macro: pd.DataFrame) -> tuple[float, int, pd.DataFrame]:
    """The same estimates with samplics (one call per indicator x breakdown [x group])."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from samplics import PopParam, TaylorEstimator
    p = panel
    w = p["weight"].to_numpy()
    stratum = (p["country"] + "|" + p["strata"]).to_numpy()
    psu = (p["country"] + "|" + p["strata"] + "|" + p["psu"]).to_numpy()
    sc = p["size_class"]
    msme = sc.isin(["micro", "small", "medium"]).to_numpy(dtype=float)
    large = (sc == "large").to_numpy(dtype=float)

    def f(c):
        return p[c].to_numpy(dtype=float, na_value=np.nan)

    emp, va, ex, lo = f("employees"), f("value_added"), f("exports"), f("loans_outstanding")
    age = f("year") - f("birth_year")
    ones = np.ones(len(p))
    intl = ((ex > 0) | (f("imports_or_gvc") == 1)).astype(float)
    lo0 = np.nan_to_num(lo)
    # (kind, y, x): share_of_total -> domain = country-year, y restricted to the group
    specs = {
        "K01": ("share", msme, ones), "K02": ("share", emp * msme, emp),
        "K03": ("total", va * msme, None), "K04a": ("within", va * msme, emp * msme),
        "K04b": ("share", va * large, emp * large), "K05": ("within", f("sells_online"), msme),
        "K06": ("share", lo0 * msme, lo0), "K07": ("share", ex * msme, ex),
        "K08": ("within", intl, msme), "K09": ("within", f("registered"), msme),
        "K10": ("within", (age <= 1).astype(float), msme),
    }
    cy = (p["country"] + "|" + p["year"].astype(str)).to_numpy()
    calls = 0
    results = []

    def call(param, **kw):
        est = TaylorEstimator(param)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                est.estimate(samp_weight=w, stratum=stratum, psu=psu, **kw)
            except ZeroDivisionError:  # samplics' CV of a zero estimate; timing still counts
                return {}, {}
        return est.point_est, est.stderror
    t = time.perf_counter()
    for b in (None, *BREAKDOWNS):
        g = (np.full(len(p), "total") if b is None
             else p[b].astype("str").fillna("not stated").to_numpy())
        for name, (kind, y, x) in specs.items():
            y = np.nan_to_num(y)
            if kind == "within":
                keep = msme == 1
                est, se = call(PopParam.ratio, y=y * keep, x=x * keep,
                               domain=pd.Series(cy + "|" + g))
                calls += 1
                results.append((name, b, est, se))
            elif kind == "total":
                est, se = call(PopParam.total, y=y, domain=pd.Series(cy + "|" + g))
                calls += 1
                results.append((name, b, est, se))
            else:
                for grp in np.unique(g):
                    est, se = call(PopParam.ratio, y=y * (g == grp), x=np.nan_to_num(x),
                                   domain=pd.Series(cy))
                    calls += 1
                    results.append((name, f"{b}={grp}", est, se))
    return time.perf_counter() - t, calls, pd.DataFrame(results,
                                                         columns=["ind", "b", "est", "se"])


def check_against_samplics(panel: pd.DataFrame, macro: pd.DataFrame,
                           sres: pd.DataFrame) -> float:
    """Largest relative difference of K05/K09 estimates and SEs (by owner_female)."""
    ours = indicators.compute(panel, macro, breakdowns=["owner_female"], indicators=["K05", "K09"],
                              disclosure=False, aggregate=False)
    worst = 0.0
    for ind in ("K05", "K09"):
        r = sres[(sres["ind"] == ind) & (sres["b"] == "owner_female")].iloc[0]
        for key, est in r["est"].items():
            c, y, g = key.split("|")
            label = {"True": "female", "False": "male"}.get(g, g)
            o = ours[(ours["indicator"] == ind) & (ours["ref_area"] == c)
                     & (ours["time_period"] == int(y)) & (ours["breakdown"] == "owner_female")
                     & (ours["group"] == label)]
            if len(o) != 1 or not np.isfinite(o["value"].iloc[0]):
                continue
            se = r["se"][key]
            worst = max(worst, abs(o["value"].iloc[0] / 100 - est) / abs(est))
            if se > 0:
                worst = max(worst, abs(o["se"].iloc[0] / 100 - se) / se)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=float, nargs="+", default=[1e6])
    ap.add_argument("--samplics-rows", type=float, nargs=2, default=[7.5e3, 1.5e4],
                    help="two subset sizes: samplics time = a + b * rows is fitted on them")
    ap.add_argument("--samplics-fit", type=float, nargs=2, metavar=("SECONDS", "PER_MILLION"),
                    help="reuse a samplics time model (a + b rows) from an earlier run "
                         "instead of timing samplics again")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    # samplics on two subsets; time = a + b * rows (its cost grows with rows x domains, and
    # the domains are the same country-year-group cells at every size)
    if args.samplics_fit:
        intercept, slope = args.samplics_fit[0], args.samplics_fit[1] / 1e6
    else:
        sizes, times = [], []
        for k, size in enumerate(args.samplics_rows):
            sub, sub_macro = make_panel(int(size), seed=1 + k)
            s_time, s_calls, s_res = run_samplics(sub, sub_macro)
            sizes.append(len(sub))
            times.append(s_time)
            worst = check_against_samplics(sub, sub_macro, s_res)
            print(f"samplics: {s_calls} estimator calls on {len(sub):,} rows in {s_time:.1f} s;"
                  f" ours vs samplics max rel. diff (K05, K09 by owner sex, estimate and SE): "
                  f"{worst:.1e}")
            del sub
        slope = (times[1] - times[0]) / (sizes[1] - sizes[0])
        intercept = max(times[0] - slope * sizes[0], 0.0)
    print(f"samplics time model: {intercept:.1f} s + {slope * 1e6:.0f} s per million rows "
          "(extrapolated below)")
    print(f"{'rows':>12} {'ours s':>8} {'ours+SDC s':>10} {'floor s':>8} {'samplics s*':>11} "
          f"{'samplics/ours':>13} {'ours/floor':>10} {'peak MB':>8} {'input MB':>8} "
          f"{'peak/input':>10}")
    for rows in args.rows:
        panel, macro = make_panel(int(rows))
        n = len(panel)
        cols = floor_columns(panel)
        floor = min(run_floor(cols) for _ in range(args.repeat))
        del cols
        gc.collect()
        ours = min(run_ours(panel, macro, False)[0] for _ in range(args.repeat))
        ours_sdc = run_ours(panel, macro, True)[0]
        peak = peak_memory(panel, macro)
        input_bytes = panel.memory_usage(deep=True, index=False).sum()
        samp = intercept + slope * n
        print(f"{n:>12,} {ours:>8.2f} {ours_sdc:>10.2f} {floor:>8.2f} {samp:>11.0f} "
              f"{samp / ours:>13.1f} {ours / floor:>10.1f} {peak / 1e6:>8.0f} "
              f"{input_bytes / 1e6:>8.0f} {peak / input_bytes:>10.2f}")
        del panel
        gc.collect()
    print("* samplics extrapolated from the subset; floor = pandas groupby-sum of the prepared "
          "weighted columns (no SEs); ours = estimates + SEs + CIs + flags + ASEAN rows, "
          "disclosure off (ours+SDC: with disclosure control)")


if __name__ == "__main__":
    main()
