"""Execute one notebook with papermill in its own process group, under a wall-clock limit.

The runner (`msme_eval.cycle.run`) calls `execute_notebook` once per (template, area). The
output notebook is always kept: on an exception papermill stores the partial notebook; on a
timeout the process group (papermill and its kernel, which runs in a session of its own) is
killed and a banner cell says where it stopped. `_first_error` / `_running_cell` read the
failing cell back for the run summary.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import nbformat
import yaml

Status = Literal["ok", "failed", "timeout"]


def _first_error(nb_path: Path) -> tuple[int | None, str]:
    """(execution count or cell index, 'ename: evalue') of the first error in an output nb."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # noqa: BLE001 - a killed papermill may leave no readable notebook
        return None, ""
    code_i = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_i += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return cell.get("execution_count") or code_i, \
                    f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
    return None, ""


def _running_cell(nb_path: Path) -> int | None:
    """The code cell papermill was executing when the notebook was stopped (1-based)."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # noqa: BLE001
        return None
    code_i = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_i += 1
        status = cell.metadata.get("papermill", {}).get("status")
        if status == "running":
            return code_i
    return None


def _mark_stopped(nb_src: Path, nb_out: Path, message: str) -> None:
    """Make sure the output notebook exists and starts with a visible failure banner."""
    try:
        nb = nbformat.read(nb_out, as_version=4)
    except Exception:  # noqa: BLE001 - unreadable or missing: fall back to the template
        nb = nbformat.read(nb_src, as_version=4)
    banner = nbformat.v4.new_markdown_cell(message, metadata={"tags": ["msme-eval-error"]})
    nb.cells.insert(0, banner)
    nbformat.write(nb, nb_out)


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Stop papermill and its kernel (the kernel runs in a session of its own)."""
    kids = _descendants(proc.pid)
    for target in (proc.pid, *kids):
        try:
            os.killpg(os.getpgid(target), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    for target in (proc.pid, *kids):
        try:
            os.killpg(os.getpgid(target), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


# Notebook processes still running, so an interrupted cycle can stop them all at once.
_LIVE: set[subprocess.Popen[Any]] = set()
_LIVE_LOCK = threading.Lock()


def stop_all() -> int:
    """Stop every papermill process this runner started (and their kernels); returns how many."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            _kill_group(proc)
    return len(procs)


def _die_with_parent() -> None:
    """In the papermill child, before exec: SIGTERM when the runner dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def papermill_child() -> None:
    """Entry point of the papermill process: on SIGTERM (the runner stopped, or died) stop the
    kernel (in a session of its own, so it would survive) before exiting; then papermill's CLI.

    nbformat -> jsonschema imports the optional `rfc3987_syntax`, which compiles a grammar at
    import time (1.5-3 s) for "iri"/"uri" formats notebook validation never uses: `_PAPERMILL_MAIN`
    blocks it before anything imports jsonschema.
    """
    _stop_kernel_on_sigterm()
    from papermill.cli import papermill  # imported here: only the child process needs it

    papermill(prog_name="papermill")


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "RAYON_NUM_THREADS", "POLARS_MAX_THREADS")
_PAPERMILL_MAIN = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
                   "from msme_eval.report.execute import papermill_child; papermill_child()")
# Figures reach the page through the inline backend; a server's MPLBACKEND=Agg would make every
# figure silently disappear from the report.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def _environment(threads: int | None) -> dict[str, str]:
    """The papermill/kernel environment: unbuffered, inline figures, quiet, capped threads,
    a fixed hash seed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYDEVD_DISABLE_FILE_VALIDATION="1",
               MPLBACKEND=INLINE_BACKEND)
    # one string-hash seed for every kernel and worker: set iteration order reaches some numerics
    # (pyfixest's fixed-effect demeaning: TWFE SEs moved ~1e-7 between processes), and the same
    # inputs must give the same numbers in every run
    env.setdefault("PYTHONHASHSEED", "0")
    # pandera imports pyspark.pandas whenever pyspark is installed, which warns about the
    # pandas version on every import: noise on every report page, unrelated to the results
    quiet = "ignore:PySpark does not yet fully support pandas:FutureWarning"
    env["PYTHONWARNINGS"] = ",".join(x for x in (env.get("PYTHONWARNINGS"), quiet) if x)
    if threads is not None:  # N notebooks x all-core BLAS/numba pools would oversubscribe
        # OpenBLAS threads spin while they wait: on busy cores one impact fit took 24 s with 2
        # threads against 3.5 s with 1 (the estimators' matrices are small; one thread loses little)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        for var in THREAD_VARS:
            env.setdefault(var, str(threads))
    return env


def execute_notebook(src: Path, out: Path, parameters: Mapping[str, Any], *, kernel: str,
                     timeout: float, log_path: Path, cwd: Path | None = None,
                     threads: int | None = None) -> tuple[Status, int | None, str]:
    """Run one notebook with papermill in its own process group under a wall-clock limit.

    Returns (status, failing cell, 'ename: evalue'). The output notebook is always left at
    ``out`` (partially executed, with a failure banner when it failed or timed out).
    ``threads`` caps the kernel's BLAS/OpenMP/numba thread pools (unless the environment
    already sets them), so parallel notebooks do not oversubscribe the CPUs.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    params_file = out.with_suffix(".params.yaml")
    params_file.write_text(yaml.safe_dump(dict(parameters), sort_keys=True), encoding="utf-8")
    cmd = [sys.executable, "-c", _PAPERMILL_MAIN, str(src), str(out), "-k", kernel,
           "-f", str(params_file), "--execution-timeout", str(int(max(1, timeout))),
           "--no-progress-bar", "--log-output", "--request-save-on-cell-execute"]
    if cwd is not None:
        cmd += ["--cwd", str(cwd)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=_environment(threads), preexec_fn=_die_with_parent)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            params_file.unlink(missing_ok=True)
            return _timed_out(src, out, timeout)
        finally:
            if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): never orphan
                _kill_group(proc)
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    params_file.unlink(missing_ok=True)
    return _outcome(src, out, rc == 0, log_path, f"papermill exited with code {rc}")


def _timed_out(src: Path, out: Path, timeout: float) -> tuple[Status, int | None, str]:
    cell = _running_cell(out)
    msg = (f"**This notebook was stopped after {timeout:g} s** (the cycle's time limit "
           f"per notebook){'' if cell is None else f' while running code cell {cell}'}."
           " Its results below are incomplete and it is marked failed.")
    _mark_stopped(src, out, msg)
    return "timeout", cell, f"TimeoutError: exceeded {timeout:g} s wall-clock limit"


def _outcome(src: Path, out: Path, ok: bool, log_path: Path, fallback: str
             ) -> tuple[Status, int | None, str]:
    """(status, failing cell, error) of a finished run, with a banner when it failed early."""
    if ok:
        return "ok", None, ""
    cell, err = _first_error(out)
    if not out.exists() or not err:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines() \
            if log_path.exists() else []
        err = err or (tail[-1] if tail else fallback)
        _mark_stopped(src, out, "**This notebook failed before it could run.** "
                      f"papermill reported: `{err[:300]}`")
    return "failed", cell, err


# --------------------------------------------------------------------------------------------
# A worker: one papermill process with a started kernel, reused for many notebooks
# --------------------------------------------------------------------------------------------
_WORKER_MAIN = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
                "from msme_eval.report.execute import worker_main; worker_main()")
# Run in the kernel before each notebook: a clean namespace and no figure left open, so one
# notebook never sees another's variables (modules stay imported: that is the saving).
_RESET = ("get_ipython().reset(new_session=False, aggressive=False)\n"
          "import matplotlib.pyplot as _plt; _plt.close('all'); del _plt")


class KernelWorker:
    """Runs notebooks one after another on one kernel, each under a wall-clock limit.

    Starting a kernel and importing the library costs about a second per notebook; a worker
    pays it once. Each notebook starts from a reset namespace (`_RESET`). A notebook that
    exceeds its limit, or a worker that dies, costs only the worker: it is stopped (kernel
    included) and a fresh one starts for the next notebook.
    """

    def __init__(self, kernel: str, cwd: Path, threads: int | None, log_path: Path) -> None:
        self.kernel, self.cwd, self.threads, self.log_path = kernel, cwd, threads, log_path
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process, closed in close()
        # no PDEATHSIG here: it fires when the *thread* that started the process ends, and a
        # worker outlives the pool thread that (re)started it; the worker watches its parent
        proc = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, self.kernel, str(self.cwd)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True, env=_environment(self.threads))
        log.close()
        with _LIVE_LOCK:
            _LIVE.add(proc)
        return proc

    def start(self) -> None:
        """Start the worker process and its kernel now (without waiting for them), so the
        first job does not pay for the start; a stopped or dead worker is started again."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()

    def run(self, src: Path, out: Path, parameters: Mapping[str, Any], *, timeout: float,
            log_path: Path) -> tuple[Status, int | None, str]:
        """Execute ``src`` into ``out``; same contract as `execute_notebook`."""
        out.parent.mkdir(parents=True, exist_ok=True)
        job = {"src": str(src), "out": str(out), "parameters": dict(parameters),
               "timeout": timeout, "log": str(log_path)}
        reply = self._send(job, timeout)
        if reply is None:  # the wall-clock limit: stop this worker, the next job gets a new one
            return _timed_out(src, out, timeout)
        if not reply:  # the worker died (e.g. killed, out of memory)
            return _outcome(src, out, False, log_path, "the notebook worker stopped unexpectedly")
        done = json.loads(reply)
        return _outcome(src, out, done["ok"], log_path, done.get("error") or "papermill failed")

    def call(self, function: str, kwargs: Mapping[str, Any], *, timeout: float,
             log_path: Path) -> tuple[Status, str]:
        """Run ``function`` ("package.module:name", JSON-safe ``kwargs``) in the worker process
        (not its kernel) under the same wall-clock limit; returns (status, 'ename: evalue').
        The runner fans library work out this way (e.g. impact fits) on the notebook workers."""
        reply = self._send({"call": function, "kwargs": dict(kwargs), "log": str(log_path)}, timeout)
        if reply is None:
            return "timeout", f"TimeoutError: exceeded {timeout:g} s wall-clock limit"
        if not reply:
            return "failed", "the worker stopped unexpectedly"
        done = json.loads(reply)
        return ("ok" if done["ok"] else "failed"), done.get("error", "")

    def _send(self, job: dict[str, Any], timeout: float) -> str | None:
        """One job to the worker; its reply line, None on timeout, '' when the worker died
        (a worker that timed out or died is stopped; the next job starts a fresh one)."""
        self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            reply = self.proc.stdout.readline() if ready else None
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            self.close(force=True)
        return reply

    def close(self, force: bool = False) -> None:
        """Stop the worker and its kernel (at once when ``force``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if not force and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()  # end of jobs: the worker shuts its kernel down and exits
                proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if proc.poll() is None:
            _kill_group(proc)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def worker_main() -> None:
    """The worker process: start the kernel, then run each job read from stdin (JSON lines),
    replying ``{"ok": bool, "error": str}`` on the protocol channel (the original stdout; the
    process's own stdout goes to the log, so nothing stray can corrupt the protocol)."""
    import logging

    import papermill as pm  # imported here: only the worker process needs it
    from jupyter_client.manager import KernelManager

    _stop_kernel_on_sigterm()
    _watch_parent()
    kernel, cwd = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    km = KernelManager(kernel_name=kernel)
    km.start_kernel(cwd=cwd)
    logger = logging.getLogger("papermill")
    logger.setLevel(logging.INFO)
    try:
        for line in sys.stdin:
            job = json.loads(line)
            handler = logging.FileHandler(job["log"], mode="w", encoding="utf-8")
            logger.addHandler(handler)
            try:
                if "call" in job:
                    _call(job, logger)
                else:
                    _notebook(job, km, kernel, pm)
                reply = {"ok": True, "error": ""}
            except Exception as exc:  # noqa: BLE001 - reported to the runner, which reads the notebook
                if "call" in job:
                    logger.exception("%s failed", job["call"])
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
            finally:
                logger.removeHandler(handler)
                handler.close()
                _stop_kernel_on_sigterm()  # nbclient resets SIGTERM to the default when it ends
            protocol.write(json.dumps(reply) + "\n")
            protocol.flush()
    finally:
        km.shutdown_kernel(now=True)


def _notebook(job: dict[str, Any], km: Any, kernel: str, pm: Any) -> None:
    """One notebook job on the worker's kernel (namespace reset first)."""
    if not km.is_alive():
        km.restart_kernel(now=True)
    _reset_kernel(km)
    pm.execute_notebook(job["src"], job["out"], parameters=job["parameters"],
                        kernel_name=kernel, km=km, progress_bar=False, log_output=True,
                        request_save_on_cell_execute=True,
                        execution_timeout=int(max(1, job["timeout"])))


def _call(job: dict[str, Any], logger: Any) -> None:
    """One function job ("module:name" with keyword arguments) in this worker process."""
    module, _, name = job["call"].partition(":")
    t = time.perf_counter()
    getattr(importlib.import_module(module), name)(**job["kwargs"])
    logger.info("%s done in %.2f s", job["call"], time.perf_counter() - t)


def _watch_parent(interval: float = 0.5) -> None:
    """Stop the kernel and exit as soon as the runner is gone (even killed by SIGKILL): the
    parent process id changes when a process is orphaned."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        _stop_descendants_and_exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _reset_kernel(km: Any) -> None:
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive(_RESET, store_history=False, timeout=60)
    finally:
        kc.stop_channels()


def _stop_kernel_on_sigterm() -> None:
    """On SIGTERM (the runner stopped, or died: PDEATHSIG) stop the kernel, in a session of its
    own so it would survive, before exiting."""
    signal.signal(signal.SIGTERM, lambda signum, frame: _stop_descendants_and_exit(128 + signum))


def _stop_descendants_and_exit(code: int) -> None:
    """Kill every process this one started (the kernel runs in a session of its own) and exit."""
    for pid in _descendants(os.getpid()):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    os._exit(code)
