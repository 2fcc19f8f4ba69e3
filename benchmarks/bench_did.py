"""Benchmark: msme_eval.impact.did() vs bare diff-diff, csdid, moderndid and differences on the same estimate.

    .venv/bin/python benchmarks/bench_did.py            # 100,000 firms x 10 years
    .venv/bin/python benchmarks/bench_did.py --big      # also 1,000,000 firms x 10 years

All fit Callaway-Sant'Anna ATT(g,t) with never-treated controls, no covariates, analytical SEs,
and the simple aggregation; the overall ATTs are printed and checked to agree (max |difference|
to bare diff-diff per size). "bare diff-diff" gets the user's frame after the minimal preparation a
user must do anyway (first_treated NA -> 0); a second diff-diff row fits the integer-coded frame
did() hands it, so the cost of did()'s checks and coding is visible. did() includes its input
checks and the DidResult; the extra numbers it adds lazily (event study with bands, pre-trend test,
calendar aggregation) are timed separately. ``ratio_to_diff_diff`` is each tool's time over bare
diff-diff's unconditional path on the same panel.

The oracles (csdid ``ATTgt``, moderndid ``att_gt`` + ``aggte``, differences ``ATTgt``) run only if
installed, once each, in a child process that builds the same panel (same seed) and is stopped
after ``--oracle-timeout`` seconds (default 120) or when its resident memory passes
``--oracle-mem-gb`` (default 8; the machine is shared); a stopped oracle is listed with the reason.
differences runs at 100,000 firms only.

Measured 2026-12-03, quiet machine (``--big --oracle-timeout 1200 --oracle-mem-gb 18``; one run):

    n_firms  tool                                       seconds  ratio_to_diff_diff
    100000   diff-diff (bare)                              0.31   1.00
    100000   diff-diff on did()'s integer-coded frame      0.16   0.52
    100000   msme_eval did()                               0.31   1.00
    100000     + event study, pre-trend, calendar, group   0.46   1.48
    100000   csdid                                         1.73   5.58
    100000   moderndid                                     2.20   7.10
    100000   differences                                   7.96  25.7
    1000000  diff-diff (bare)                              4.31   1.00
    1000000  diff-diff on did()'s integer-coded frame      2.15   0.50
    1000000  msme_eval did()                               4.06   0.94
    1000000    + event study, pre-trend, calendar, group   5.52   1.28
    1000000  csdid                                        12.34   2.86
    1000000  moderndid                                    17.65   4.10

An earlier run the same day on a busy machine (other jobs on both cores) gave csdid 24.6x /
10.7x and moderndid 58.1x at 100k, and stopped moderndid at 1M at the default 8 GB cap: the
oracles' ratios move with load far more than did()'s; compare rows of one run only.
Overall ATT 0.146403 (100k) and 0.143963 (1M); all fits agree to < 1e-16.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
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


def oracle_frame(n: int) -> pd.DataFrame:
    """The benchmark panel with an integer unit id and g = 0 for never treated (what the oracles take)."""
    df = make_panel(n)
    return df.assign(id=np.repeat(np.arange(n), 10), g=df["first_treated"].fillna(0).astype("int64"))


def fit_csdid(d: pd.DataFrame) -> float:
    from csdid.att_gt import ATTgt

    o = ATTgt(yname="log_turnover", gname="g", idname="id", tname="year", data=d).fit(est_method="dr", bstrap=False)
    return float(o.aggte(typec="simple", bstrap=False).atte["overall_att"])


def fit_moderndid(d: pd.DataFrame) -> float:
    import moderndid

    mp_ = moderndid.att_gt(d, yname="log_turnover", tname="year", idname="id", gname="g", est_method="dr",
                           boot=False, cband=False, control_group="nevertreated")
    return float(moderndid.aggte(mp_, type="simple", boot=False, cband=False).overall_att)


def fit_differences(d: pd.DataFrame) -> float:
    import differences

    x = d.assign(cohort=d["g"].where(d["g"] > 0)).set_index(["id", "year"])[["log_turnover", "cohort"]]
    m = differences.ATTgt(data=x, cohort_column="cohort")
    m.fit(formula="log_turnover", est_method="dr", control_group="never_treated", progress_bar=False)
    return float(m.aggregate("simple").iloc[0, 0])


ORACLES: dict[str, Callable[[pd.DataFrame], float]] = {
    "csdid": fit_csdid, "moderndid": fit_moderndid, "differences": fit_differences}


def _oracle_child(name: str, n: int, out: Any) -> None:
    try:
        d = oracle_frame(n)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            att = ORACLES[name](d)
            out.put(("ok", time.perf_counter() - t, att))
    except ImportError:
        out.put(("skipped: not installed", np.nan, np.nan))
    except Exception as err:  # report any failure of a third-party oracle as a row, not a crash
        out.put((f"failed: {type(err).__name__}: {str(err)[:80]}", np.nan, np.nan))


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return kb / 2**20
    except (OSError, StopIteration):
        return 0.0


def run_oracle(name: str, n: int, timeout: float, mem_gb: float) -> dict[str, Any]:
    """Time one oracle in a child process (fit only; building the panel is not timed); stop it at
    ``timeout`` seconds or ``mem_gb`` resident memory."""
    ctx = mp.get_context("spawn")  # fork after threaded libraries (polars, BLAS) can deadlock
    out = ctx.Queue()
    proc = ctx.Process(target=_oracle_child, args=(name, n, out), daemon=True)
    proc.start()
    start, reason = time.perf_counter(), None
    while proc.is_alive() and out.empty():
        if time.perf_counter() - start > timeout:
            reason = f"skipped: still running after {timeout:.0f} s"
        elif _rss_gb(proc.pid) > mem_gb:
            reason = f"skipped: over {mem_gb:g} GB resident memory"
        if reason:
            proc.terminate()
            proc.join()
            return {"tool": f"{name} ({reason})", "seconds": np.nan, "att": np.nan}
        time.sleep(0.2)
    proc.join(timeout=30)
    if out.empty():
        return {"tool": f"{name} (failed: child exited with code {proc.exitcode})", "seconds": np.nan, "att": np.nan}
    status, secs, att = out.get()
    return {"tool": name if status == "ok" else f"{name} ({status})", "seconds": secs, "att": att}


def run(n: int, repeat: int, oracles: bool, timeout: float = 120.0, mem_gb: float = 8.0) -> list[dict[str, Any]]:
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
        for name in ORACLES:
            if name == "differences" and n > 100_000:
                continue
            rows.append({"n_firms": n, **run_oracle(name, n, timeout, mem_gb)})
    for row in rows:
        row["ratio_to_diff_diff"] = row["seconds"] / t_bare
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also run 1,000,000 firms x 10 years")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-oracles", action="store_true")
    ap.add_argument("--oracle-timeout", type=float, default=120.0, help="seconds before an oracle is stopped")
    ap.add_argument("--oracle-mem-gb", type=float, default=8.0, help="resident GB before an oracle is stopped")
    a = ap.parse_args()
    rows = run(100_000, a.repeat, not a.no_oracles, a.oracle_timeout, a.oracle_mem_gb)
    if a.big:
        rows += run(1_000_000, max(1, a.repeat - 2), not a.no_oracles, a.oracle_timeout, a.oracle_mem_gb)
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
        atts = grp.dropna(subset=["att"]).set_index("tool")["att"]
        gap = (atts - atts["diff-diff (bare)"]).abs()
        print(f"{n:,} firms: overall ATT {atts['diff-diff (bare)']:.6f}; max |difference| across "
              f"{len(atts)} fits {gap.max():.2e} ({'agree' if gap.max() < 1e-6 else 'DISAGREE: ' + gap.idxmax()})")


if __name__ == "__main__":
    main()
