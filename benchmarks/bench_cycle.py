"""Benchmark: wall time of the default monitoring cycle with 1 and 2 workers, and the overhead
per notebook of msme-eval's runner against bare papermill.

    .venv/bin/python benchmarks/bench_cycle.py            # default cycle (sample in data/raw/sample)
    .venv/bin/python benchmarks/bench_cycle.py --quick    # two areas only, 2,000 firms

What is measured:
- cycle wall time (validation + cache, every notebook, rendering, site, atomic publish) with
  workers = 1 and 2, and the time per stage: validation and shared tables; notebooks and impact
  fits (to the last one's end); the tail after them (site, downloads, publish), from the log's
  timestamps;
- CPU seconds: the runner process (rendering, site) and its workers with their kernels
  (`resource.getrusage`: children are counted once they have ended, as they have when
  `cycle.run` returns), since wall time on a shared machine is noisy;
- bare papermill: `python -m papermill` on a trivial two-cell notebook (process start, kernel
  start, execution, write), the floor any notebook pays;
- runner per notebook: the same trivial work as a cycle template (msme_eval import and the
  parameter re-check included), executed through a fresh papermill process
  (`cycle.execute_notebook`) and through a kernel worker (`cycle.KernelWorker`, the runner's
  way: one kernel per worker, reset between notebooks, so the kernel start and imports are paid
  once per worker).
Reports go to a temporary folder; nothing under reports/ is touched.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msme_eval as me  # noqa: E402
from msme_eval import cycle  # noqa: E402


def _sample(tmp: Path, firms: int) -> dict[str, Path]:
    default = ROOT / "data" / "raw" / "sample"
    if firms == 20_000 and (default / "panel.parquet").exists():
        return {k: default / f for k, f in (("panel", "panel.parquet"), ("macro", "macro.csv"),
                                             ("targets", "targets.csv"))}
    return me.synth.write_sample(tmp / "sample", me.synth.generate(n_firms=firms))


def _bare_papermill(tmp: Path, n: int) -> list[float]:
    nb = new_notebook(metadata={"kernelspec": {"name": "msme-eval", "language": "python",
                                               "display_name": "msme-eval"},
                                "language_info": {"name": "python"}})
    nb.cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                new_code_cell("print(x)")]
    src = tmp / "bare.ipynb"
    nbformat.write(nb, src)
    times = []
    for i in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "papermill", str(src), str(tmp / f"bare{i}.ipynb"),
                        "-k", "msme-eval", "-p", "x", "2", "--no-progress-bar"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def _trivial_template(tmp: Path) -> Path:
    """A template as a user adds one: the shipped preamble plus one trivial cell."""
    nb = nbformat.read(ROOT / "notebooks" / "10_data_quality.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[: at + 2] + [new_code_cell("print(ctx.country)")]
    src = tmp / "trivial.ipynb"
    nbformat.write(nb, src)
    return src


def _runner_trivial(tmp: Path, params: cycle.CycleParams, n: int) -> tuple[list[float], list[float]]:
    """(fresh papermill process per notebook, kernel worker) times for the trivial template."""
    src = _trivial_template(tmp)
    fresh, reused = [], []
    for i in range(n):
        t = time.perf_counter()
        status, _, err = cycle.execute_notebook(
            src, tmp / f"triv{i}.ipynb", params.notebook_params("ASEAN"), kernel=params.kernel,
            timeout=300, log_path=tmp / f"triv{i}.log")
        assert status == "ok", err
        fresh.append(time.perf_counter() - t)
    worker = cycle.KernelWorker(params.kernel, tmp, None, tmp / "worker.log")
    try:
        for i in range(n + 1):
            t = time.perf_counter()
            status, _, err = worker.run(src, tmp / f"w{i}.ipynb", params.notebook_params("ASEAN"),
                                        timeout=300, log_path=tmp / f"w{i}.log")
            assert status == "ok", err
            if i:  # the first run starts the worker's kernel
                reused.append(time.perf_counter() - t)
    finally:
        worker.close()
    return fresh, reused


def _cpu() -> tuple[float, float]:
    """(CPU seconds of this process, of its ended children) so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _timed_cycle(p: cycle.CycleParams) -> tuple[object, list[str], dict[str, float]]:
    """Run one cycle; (result, log lines, {wall, end of the last notebook or fit, CPU seconds})."""
    log: list[str] = []
    stamps: list[float] = []
    t0, (own0, kids0) = time.perf_counter(), _cpu()

    def say(line: str) -> None:
        log.append(line)
        stamps.append(time.perf_counter() - t0)

    res = cycle.run(p, log=say)
    wall = time.perf_counter() - t0
    own, kids = _cpu()
    jobs_end = max((t for t, ln in zip(stamps, log) if ln.startswith("[")), default=float("nan"))
    return res, log, {"wall": wall, "jobs_end": jobs_end, "cpu_runner": own - own0,
                      "cpu_workers": kids - kids0}


def _trivial_times(tmp: Path, params: cycle.CycleParams, n: int) -> None:
    bare = _bare_papermill(tmp, n)
    fresh, reused = _runner_trivial(tmp, params, n)
    print(f"bare papermill, trivial notebook:        {statistics.median(bare):6.2f} s "
          f"(median of {n})")
    print(f"trivial template, fresh papermill:       {statistics.median(fresh):6.2f} s "
          f"({statistics.median(fresh) / statistics.median(bare):.2f}x bare papermill)")
    print(f"trivial template, kernel worker (reuse): {statistics.median(reused):6.2f} s "
          f"({statistics.median(reused) / statistics.median(bare):.2f}x bare papermill)")


def _fit_times(log: list[str]) -> dict[str, float]:
    """Seconds of each shared impact fit, from the runner's progress lines."""
    out = {}
    for ln in log:
        m = re.search(r" (impact-fit/\S+) ([0-9.]+)s", ln)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _stage(log: list[str], prefix: str) -> float:
    line = next((ln for ln in log if ln.startswith(prefix)), "")
    m = re.search(r"([0-9.]+)s", line)
    return float(m.group(1)) if m else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 areas and 2,000 firms")
    ap.add_argument("--firms", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the trivial notebooks (0: none)")
    a = ap.parse_args()
    firms = a.firms or (2_000 if a.quick else 20_000)
    cycle.check_kernel(cycle.DEFAULT_KERNEL, install=True)
    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as t:
        tmp = Path(t)
        paths = _sample(tmp, firms)
        countries = ["IDN", "ASEAN"] if a.quick else list(cycle.AREAS)
        base = dict(cycle="bench", panel=str(paths["panel"]), macro=str(paths["macro"]),
                    targets=str(paths["targets"]), countries=countries)
        print(f"sample: {firms:,} firms; areas: {' '.join(countries)}; cpus: {os.cpu_count()}")
        if a.repeat > 0:
            _trivial_times(tmp, cycle.CycleParams.model_validate(
                {**base, "output_root": str(tmp / "r0")}), a.repeat)
        rows = []
        for w in a.workers:
            p = cycle.CycleParams.model_validate({**base, "workers": w,
                                                  "output_root": str(tmp / f"r{w}")})
            res, log, m = _timed_cycle(p)
            wall = m["wall"]
            # validation holds everything up; the shared tables then overlap the impact fits
            prep = _stage(log, "validated the inputs")
            prep = _stage(log, "prepared") if prep != prep else prep  # older runners: one step
            rend = _stage(log, "rendering took")
            fits = _fit_times(log)
            nb_sum = sum(r.duration for r in res.notebooks) + sum(fits.values())
            rows.append((w, wall, res.ok))
            slowest = max(res.notebooks, key=lambda r: r.duration)
            fit_max = max(fits.items(), key=lambda kv: kv[1], default=("-", 0.0))
            print(f"workers={w}: cycle wall {wall:6.1f} s, {len(res.notebooks)} notebooks, "
                  f"slowest {slowest.template}/{slowest.country} {slowest.duration:.1f} s; "
                  f"{len(fits)} impact fits {sum(fits.values()):.1f} s in all, slowest "
                  f"{fit_max[0]} {fit_max[1]:.1f} s; {'ok' if res.ok else 'FAILED'}")
            tail = wall - m["jobs_end"]
            print(f"   stage shares of the wall time: validation {prep / wall:5.1%}; "
                  f"notebooks + impact fits {(m['jobs_end'] - prep) / wall:5.1%} ({nb_sum:.1f} s of "
                  f"worker time over {w} worker(s) = {nb_sum / w / wall:5.1%}); rendering {rend:.1f} s "
                  f"({rend / wall:5.1%}, alongside the notebooks); after the last notebook (site, "
                  f"downloads, publish) {tail:.1f} s = {tail / wall:5.1%}")
            print(f"   CPU: runner process {m['cpu_runner']:.1f} s (validation, rendering, site), workers "
                  f"and kernels {m['cpu_workers']:.1f} s; sum {m['cpu_runner'] + m['cpu_workers']:.1f} s "
                  f"on {os.cpu_count()} CPU(s)")
        if len(rows) >= 2:
            print(f"speed-up {rows[0][0]}->{rows[-1][0]} workers: {rows[0][1] / rows[-1][1]:.2f}x")
        return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
