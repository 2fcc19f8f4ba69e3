"""Benchmark: wall time of the default monitoring cycle with 1 and 2 workers, and the overhead
per notebook of msme-eval's runner against bare papermill.

    .venv/bin/python benchmarks/bench_cycle.py            # default cycle (sample in data/raw/sample)
    .venv/bin/python benchmarks/bench_cycle.py --quick    # two areas only, 2,000 firms

What is measured:
- cycle wall time (validation + cache, every notebook, rendering, site, atomic publish) with
  workers = 1 and 2, and the time per phase;
- bare papermill: `python -m papermill` on a trivial two-cell notebook (process start, kernel
  start, execution, write), the floor any notebook pays;
- runner per notebook: the same trivial work as a cycle template (msme_eval import and the
  parameter re-check included), executed through `cycle.execute_notebook`.
Reports go to a temporary folder; nothing under reports/ is touched.
"""
from __future__ import annotations

import argparse
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


def _runner_trivial(tmp: Path, params: cycle.CycleParams, n: int) -> list[float]:
    sys.path.insert(0, str(ROOT / "notebooks"))
    import _build

    nb = _build.notebook("trivial", ["region"], [new_code_cell("print(ctx.country)")])
    src = tmp / "trivial.ipynb"
    nbformat.write(nb, src)
    times = []
    for i in range(n):
        t = time.perf_counter()
        status, _, err = cycle.execute_notebook(
            src, tmp / f"triv{i}.ipynb", params.notebook_params("ASEAN"), kernel=params.kernel,
            timeout=300, log_path=tmp / f"triv{i}.log")
        assert status == "ok", err
        times.append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 areas and 2,000 firms")
    ap.add_argument("--firms", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="runs of the trivial notebooks")
    a = ap.parse_args()
    firms = a.firms or (2_000 if a.quick else 20_000)
    cycle.check_kernel(cycle.DEFAULT_KERNEL, install=True)
    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as t:
        tmp = Path(t)
        paths = _sample(tmp, firms)
        countries = ["IDN", "ASEAN"] if a.quick else list(cycle.AREAS)
        base = dict(cycle="bench", panel=str(paths["panel"]), macro=str(paths["macro"]),
                    targets=str(paths["targets"]), countries=countries)
        print(f"sample: {firms:,} firms; areas: {' '.join(countries)}; cpus: "
              f"{__import__('os').cpu_count()}")
        bare = _bare_papermill(tmp, a.repeat)
        params = cycle.CycleParams.model_validate({**base, "output_root": str(tmp / "r0")})
        ours = _runner_trivial(tmp, params, a.repeat)
        print(f"bare papermill, trivial notebook:     {statistics.median(bare):6.2f} s "
              f"(median of {a.repeat})")
        print(f"msme-eval runner, trivial template:   {statistics.median(ours):6.2f} s "
              f"-> overhead {statistics.median(ours) - statistics.median(bare):+.2f} s per "
              "notebook (msme_eval import + parameter re-check)")
        rows = []
        for w in a.workers:
            p = cycle.CycleParams.model_validate({**base, "workers": w,
                                                  "output_root": str(tmp / f"r{w}")})
            log: list[str] = []
            t0 = time.perf_counter()
            res = cycle.run(p, log=log.append)
            wall = time.perf_counter() - t0
            prep = next((ln for ln in log if ln.startswith("prepared")), "")
            rend = next((ln for ln in log if ln.startswith("rendered")), "")
            nb_sum = sum(r.duration for r in res.notebooks)
            rows.append((w, wall, len(res.notebooks), nb_sum, prep, rend, res.ok))
            slowest = max(res.notebooks, key=lambda r: r.duration)
            print(f"workers={w}: cycle wall {wall:6.1f} s, {len(res.notebooks)} notebooks "
                  f"(sum {nb_sum:.1f} s, mean {nb_sum / len(res.notebooks):.1f} s, slowest "
                  f"{slowest.template}/{slowest.country} {slowest.duration:.1f} s); {prep}; "
                  f"{rend}; {'ok' if res.ok else 'FAILED'}")
        if len(rows) >= 2:
            print(f"speed-up {rows[0][0]}->{rows[-1][0]} workers: {rows[0][1] / rows[-1][1]:.2f}x")
        return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
