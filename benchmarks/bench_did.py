"""Benchmark: msme_eval.impact.did() vs bare diff-diff, csdid and differences on the same estimate.

    .venv/bin/python benchmarks/bench_did.py            # 100,000 firms x 10 years
    .venv/bin/python benchmarks/bench_did.py --big      # also 1,000,000 firms x 10 years

All fit Callaway-Sant'Anna ATT(g,t) with never-treated controls, no covariates, analytical SEs,
and the simple aggregation; the overall ATTs are printed so the runs can be checked to agree.
"bare diff-diff" gets the user's frame after the minimal preparation a user must do anyway
(first_treated NA -> 0); a second diff-diff row fits the integer-coded frame did() hands it, so
the cost of did()'s checks and coding is visible. did() includes its input checks and the
DidResult; the extra numbers it
adds lazily (event study with bands, pre-trend test, calendar aggregation) are timed separately.
csdid and differences run only on 100,000 firms and only if installed (they are oracles, not
dependencies); each timing is the best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd


def make_panel(n: int, n_years: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = 2015
    cohorts = np.array([0, 2018, 2019, 2020, 2021, 2022])
    g = rng.choice(cohorts, size=n, p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    years = np.arange(t0, t0 + n_years)
    gi = np.repeat(g, n_years)
    yr = np.tile(years, n)
    eff = np.where((gi > 0) & (yr >= gi), 0.1 + 0.02 * (yr - gi), 0.0)
    y = np.repeat(rng.normal(size=n), n_years) + 0.05 * (yr - t0) + eff + rng.normal(scale=0.5, size=n * n_years)
    ft = pd.array(np.where(gi > 0, gi, 0), dtype="Int64")
    ft[gi == 0] = pd.NA
    ids = np.char.add("F", np.repeat(np.arange(n), n_years).astype(str))
    return pd.DataFrame({"firm_id": pd.array(ids, dtype="str"),
                         "year": yr, "log_turnover": y, "first_treated": ft})


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def run(n: int, repeat: int, oracles: bool) -> list[dict[str, Any]]:
    import diff_diff

    from msme_eval.impact import did

    df = make_panel(n)
    rows: list[dict[str, Any]] = []

    def bare() -> float:
        d = df.assign(g=df["first_treated"].fillna(0).astype("int64"))
        return diff_diff.CallawaySantAnna().fit(d, "log_turnover", "firm_id", "year", "g").overall_att

    def ours() -> float:
        return did(df, "log_turnover").overall.att

    t_bare, a_bare = best(bare, repeat)
    rows.append({"n_firms": n, "tool": "diff-diff (bare)", "seconds": t_bare, "att": a_bare})
    from msme_eval.impact import prepare_panel

    coded, *_ = prepare_panel(df, "log_turnover")

    def bare_coded() -> float:
        return diff_diff.CallawaySantAnna().fit(coded, "_y", "_unit", "_time", "_g").overall_att

    t_coded, a_coded = best(bare_coded, repeat)
    rows.append({"n_firms": n, "tool": "diff-diff on did()'s integer-coded frame", "seconds": t_coded, "att": a_coded})
    t_ours, a_ours = best(ours, repeat)
    rows.append({"n_firms": n, "tool": "msme_eval did()", "seconds": t_ours, "att": a_ours})
    r = did(df, "log_turnover")
    t = time.perf_counter()
    r.event_study, r.pretrend, r.aggregate("calendar"), r.aggregate("group")
    rows.append({"n_firms": n, "tool": "  + event study, pre-trend, calendar, group",
                 "seconds": time.perf_counter() - t,
                 "att": np.nan})
    if oracles:
        d = df.assign(id=np.repeat(np.arange(n), 10), g=df["first_treated"].fillna(0).astype("int64"))
        try:
            from csdid.att_gt import ATTgt

            def cs() -> float:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    o = ATTgt(yname="log_turnover", gname="g", idname="id", tname="year", data=d.copy()).fit(
                        est_method="dr", bstrap=False)
                    return float(o.aggte(typec="simple", bstrap=False).atte["overall_att"])

            t_cs, a_cs = best(cs, 1)
            rows.append({"n_firms": n, "tool": "csdid", "seconds": t_cs, "att": a_cs})
        except ImportError:
            rows.append({"n_firms": n, "tool": "csdid (not installed)", "seconds": np.nan, "att": np.nan})
        try:
            import differences

            def dif() -> float:
                x = d.assign(cohort=d["g"].where(d["g"] > 0)).set_index(["id", "year"])[["log_turnover", "cohort"]]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = differences.ATTgt(data=x, cohort_column="cohort")
                    m.fit(formula="log_turnover", est_method="dr", control_group="never_treated", progress_bar=False)
                    return float(m.aggregate("simple").iloc[0, 0])

            t_d, a_d = best(dif, 1)
            rows.append({"n_firms": n, "tool": "differences", "seconds": t_d, "att": a_d})
        except ImportError:
            rows.append({"n_firms": n, "tool": "differences (not installed)", "seconds": np.nan, "att": np.nan})
    for row in rows:
        row["ratio_to_diff_diff"] = row["seconds"] / t_bare
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also run 1,000,000 firms x 10 years")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-oracles", action="store_true")
    a = ap.parse_args()
    rows = run(100_000, a.repeat, not a.no_oracles)
    if a.big:
        rows += run(1_000_000, max(1, a.repeat - 2), False)
    out = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.float_format", lambda x: f"{x:.4f}"):
        print(out.to_string(index=False))
    coded_label = "diff-diff on did()'s integer-coded frame"
    for n, grp in out.groupby("n_firms"):
        t = grp.set_index("tool")["seconds"]
        over_bare = 100 * (t["msme_eval did()"] / t["diff-diff (bare)"] - 1)
        over_coded = 100 * (t["msme_eval did()"] / t[coded_label] - 1)
        print(f"{n:,} firms: did() vs bare diff-diff on the user frame {over_bare:+.1f}%; vs diff-diff on the "
              f"same integer-coded frame {over_coded:+.1f}% (checks + coding + result; target < +20% over bare)")


if __name__ == "__main__":
    main()
