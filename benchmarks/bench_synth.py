"""Benchmark msme_eval.synth.generate: wall time and peak memory by sample size.

    python benchmarks/bench_synth.py [n_firms ...]      (default: 20000 200000 1000000)

Each size runs in a fresh subprocess so peak resident memory (ru_maxrss) is per run.
"""
from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, resource, sys, time
from msme_eval import synth
n = int(sys.argv[1])
t0 = time.perf_counter()
d = synth.generate(n_firms=n)
dt = time.perf_counter() - t0
print(json.dumps({"n_firms": n, "rows": len(d.panel), "seconds": round(dt, 2),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                  "panel_gb": round(d.panel.memory_usage(deep=True).sum() / 1e9, 2)}))
"""


def main(sizes: list[int]) -> None:
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CODE, str(n)], capture_output=True,
                             text=True, check=True)
        print(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20_000, 200_000, 1_000_000])
