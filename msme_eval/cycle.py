"""Monitoring cycles: typed parameters, the papermill fan-out, rendering and atomic publish.

A *cycle* is one validated parameter set (`CycleParams`). `run(params)`:

1. checks everything before any notebook starts (parameters, input files, kernel, templates);
2. validates the panel once and caches the typed panel and shared tables for the notebooks
   (the N kernel workers start meanwhile; the indicator table is computed while the workers
   run the impact fits, which need only the validated inputs);
3. executes every template x country with papermill on the workers, phase by phase, longest
   first, each with a wall-clock limit (the worker is killed when it is exceeded); the impact
   fits run first, one job per programme type of a lead area (`FitJob`), and a page that needs
   them waits for its area's;
4. renders each executed notebook to HTML with nbconvert on threads of its own (code hidden,
   injected parameters removed, figures embedded, no network assets) plus a "show code" copy;
5. writes the tables as CSV and Excel on a worker while the last phase runs (`ExportJob`), then
   the site (index pages), ``results.json`` (headline numbers, deterministic) and
   ``provenance.json`` into ``<root>/.tmp-<cycle>-<random>/`` and only then swaps that folder
   into ``<root>/<cycle>`` (atomic; other cycles untouched).

``engine`` ("pandas", "duckdb" or "spark") says where the indicator table is computed: the
in-memory validated panel, or the Parquet panel *file* read by DuckDB (out of core) or by Spark
(`msme_eval.spark.session()`, master and settings from the environment). Everything else uses
the validated pandas panel. The engine is checked (Parquet panel, engine installed) before
any notebook starts.

papermill itself only *warns* about unknown parameters (nteract/papermill#667, #818), so every
template re-checks its parameters with `notebook_context` in the cell after the parameters cell.
Secrets are never parameters: credentials come from the environment and are never rendered.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from msme_eval import provenance, spark
from msme_eval.contract import AREAS, REGION, area_name
from msme_eval.report import render, site
from msme_eval.report.context import (
    cache_inputs,
    cache_shared_tables,
    notebook_context,
    plan_impact,
)
from msme_eval.report.execute import KernelWorker, Status, execute_notebook, stop_all
from msme_eval.report.params import (
    DEFAULT_KERNEL,
    SAFE_NAME,
    CycleError,
    CycleParams,
    NotebookParams,
    check_engine,
    default_templates,
    format_validation_error,
    is_parquet,
    load_params,
)
from msme_eval.report.publish import CycleLock, publish, restore_interrupted_publish
from msme_eval.report.records import dump_json
from msme_eval.report.redact import panel_redactor, redact_files

__all__ = ["run", "CycleParams", "NotebookParams", "CycleResult", "NotebookRun", "CycleError",
           "load_params", "notebook_context", "discover_templates", "plan", "check_kernel",
           "format_validation_error", "check_engine", "is_parquet", "default_templates", "dump_json",
           "AREAS", "REGION", "execute_notebook", "KernelWorker"]

KERNEL_FIX = (
    "{python} -m ipykernel install --sys-prefix --name {name} "
    "--display-name 'Python (msme-eval)'"
)


# --------------------------------------------------------------------------------------------
# Templates and jobs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A notebook template and how the runner fans it out (from its `msme_eval` metadata)."""

    name: str
    path: Path
    title: str
    scope: tuple[str, ...] = ("region",)  # "region" and/or "country"
    phase: int = 1  # later phases (impact pages, the summary) run after the earlier ones
    cost: float = 1.0  # relative run time; costly notebooks start first (shorter makespan)
    needs: tuple[str, ...] = ()  # shared work the runner does first: "impact" (`plan_impact`)
    lead_only: bool = False  # metadata "lead": true -> only for the run's `lead_areas` (summary)


def discover_templates(folder: Path, sections: Iterable[str] | None = None) -> list[Template]:
    """Read the templates in ``folder`` (sorted by name; files starting with '_' are skipped)."""
    found: list[Template] = []
    for path in sorted(folder.glob("*.ipynb")):
        if path.name.startswith(("_", ".")):
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # noqa: BLE001 - invalid JSON or notebook format: say which file
            raise CycleError(f"template {path} cannot be read as a notebook ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}). Fix: restore it from "
                             "`msme-eval templates DIR` or repair it in JupyterLab") from None
        meta = nb.metadata.get("msme_eval", {})
        has_params = any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        if not has_params:
            raise CycleError(f"template {path} has no cell tagged 'parameters'")
        if not SAFE_NAME.match(path.stem):
            raise CycleError(f"template name {path.stem!r} is not a safe name")
        found.append(Template(name=path.stem, path=path, title=meta.get("title", path.stem),
                              scope=tuple(meta.get("scope", ["region"])),
                              phase=int(meta.get("phase", 1)),
                              cost=float(meta.get("cost", 1.0)),
                              needs=tuple(meta.get("needs", [])),
                              lead_only=bool(meta.get("lead", False))))
    if sections is not None:
        wanted = list(sections)
        missing = sorted(set(wanted) - {t.name for t in found})
        if missing:
            raise CycleError(f"unknown section(s) {missing}; templates in {folder}: "
                             f"{[t.name for t in found]}")
        found = [t for t in found if t.name in wanted]
    if not found:
        raise CycleError(f"no notebook templates (*.ipynb) in {folder}")
    return found


@dataclass
class Job:
    template: Template
    country: str

    @property
    def key(self) -> str:
        return f"{self.template.name}/{self.country}"

    @property
    def relpath(self) -> str:
        """Page path inside the cycle folder (region pages at the top, countries in folders)."""
        if self.country == REGION:
            return f"{self.template.name}.html"
        return f"{self.country}/{self.template.name}.html"


def lead_areas(countries: Iterable[str]) -> list[str]:
    """The areas a run reports on first (its executive summary and full impact analysis): the
    region when it is in the run, otherwise each member state of the run. A ministry running
    its own country reads one summary of its own country, not an aggregate of the set."""
    countries = list(countries)
    return [REGION] if REGION in countries else countries


def _in_scope(template: Template, area: str, lead: list[str], country_impact: bool) -> bool:
    if area not in lead and (template.lead_only or ("impact" in template.needs and not country_impact)):
        return False  # member-state impact pages in a regional cycle are opt-in (country_impact)
    return (area == REGION and "region" in template.scope) or \
        (area != REGION and "country" in template.scope)


def plan(params: CycleParams, templates: list[Template]) -> list[Job]:
    """Every (template, area) pair to run: region templates once, country ones per country;
    templates marked ``lead`` (the summary) only for the `lead_areas`. Pages that need the
    impact fits run for the lead areas, and for every member state when ``country_impact``."""
    lead = lead_areas(params.countries)
    wide = bool(getattr(params, "country_impact", False))
    jobs = [Job(t, area) for t in templates for area in params.countries
            if _in_scope(t, area, lead, wide)]
    if not jobs:
        raise CycleError(f"nothing to run: templates {[t.name for t in templates]} have no "
                         f"scope matching countries {params.countries}")
    return jobs


@dataclass
class FitJob:
    """One shared impact computation (`msme_eval.report.context.run_impact_call`) run on a
    worker before the impact pages, which then read it from the cache by its key."""

    area: str
    call: dict[str, Any]
    digest: str
    phase: float
    cost: float

    @property
    def key(self) -> str:
        types = self.call["programme_type"]
        part = "headline" if self.call.get("robustness") is False else "+".join(types)
        return f"impact-fit/{self.area}/{part}"


def fit_jobs(params: CycleParams, jobs: list[Job], cache: Path,
             inputs: dict[str, str]) -> list[FitJob]:
    """The impact calls of the areas whose pages need them (`plan_impact`), first in the run's
    first phase, costly first (by rows and programme types); a page that needs them waits for
    its area's fits (`_FitGate`), so a page in that phase costs no barrier."""
    needing = [j for j in jobs if "impact" in j.template.needs]
    if not needing:
        return []
    phase = min(j.template.phase for j in jobs)
    areas = list(dict.fromkeys(j.country for j in needing))
    calls = plan_impact(params, cache, areas, lead_areas(params.countries), inputs)
    out = [FitJob(area, call, digest, phase, len(call["programme_type"]) * (
        1.0 if call.get("robustness") is False else 3.4) * (10 if area == REGION else 1))
        for area, call, digest in calls]
    return sorted(out, key=lambda f: -f.cost)


@dataclass
class ExportJob:
    """The table downloads (`site.export_folder`: CSV, ``tables.xlsx``, SDMX) written on a worker
    while the last phase runs, from the tables the earlier phases collected (the last phase, the
    summary, usually exports none). `current` says whether they are still the run's tables;
    when the last phase changed or added one, the runner writes the downloads again."""

    tables: Path
    dest: Path
    snapshot: dict[str, str] = field(default_factory=dict)
    status: str = "pending"
    key: str = "export-tables"

    def take_snapshot(self) -> None:
        self.snapshot = _digests(self.tables)

    def current(self) -> bool:
        return self.status == "ok" and _digests(self.tables) == self.snapshot


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every collected table (name -> digest)."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in site.table_files(folder)}


class _FitGate:
    """Each area's impact fits done or not: a page that needs them waits for its area's."""

    def __init__(self, fits: list[FitJob]) -> None:
        self.left: dict[str, int] = {}
        for f in fits:
            self.left[f.area] = self.left.get(f.area, 0) + 1
        self.changed = threading.Condition()

    def done(self, fit: FitJob) -> None:
        """One fit ended (ok or not: a page computes what a failed fit left out)."""
        with self.changed:
            self.left[fit.area] -= 1
            self.changed.notify_all()

    def is_open(self, job: Job | FitJob | ExportJob) -> bool:
        """False for a page whose area's fits still run (`_Todo` hands out open jobs only)."""
        return not (isinstance(job, Job) and "impact" in job.template.needs
                    and self.left.get(job.country, 0) > 0)


class _Todo:
    """The jobs of a phase in order. A worker takes the first one it can start now: a page
    whose impact fits still run is passed over (it does not hold a worker idle while other
    jobs are left) and taken as soon as its fits end."""

    def __init__(self, jobs: list[Job | FitJob | ExportJob], gate: _FitGate) -> None:
        self.jobs, self.gate = list(jobs), gate

    def take(self) -> Job | FitJob | ExportJob | None:
        """The first job that can start (waits while only pages waiting for fits are left);
        None when there is none left."""
        with self.gate.changed:
            while self.jobs:
                for i, job in enumerate(self.jobs):
                    if self.gate.is_open(job):
                        return self.jobs.pop(i)
                self.gate.changed.wait()
            return None

    def clear(self) -> None:
        """No job starts after this (interrupt); waiting workers return."""
        with self.gate.changed:
            self.jobs.clear()
            self.gate.changed.notify_all()


class _Background:
    """Work the runner does not wait for at once (stopping idle workers, removing the work
    folder), run in threads; `join` waits for all of it."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        while self.threads:
            self.threads.pop().join()


# --------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------
def kernel_fix(name: str = DEFAULT_KERNEL) -> str:
    return KERNEL_FIX.format(python=sys.executable, name=name)


def install_kernel(name: str = DEFAULT_KERNEL) -> None:
    """Register this interpreter as kernel ``name`` inside its own prefix (the venv)."""
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                    "--name", name, "--display-name", "Python (msme-eval)"],
                   check=True, capture_output=True, text=True)


def check_kernel(name: str, *, install: bool = False) -> dict[str, Any]:
    """Return the kernelspec of ``name``; install it when missing and ``install`` is set.

    Raises `CycleError` naming the exact command that fixes a missing or broken kernel.
    """
    def find() -> Any:
        try:
            return KernelSpecManager().get_kernel_spec(name)
        except NoSuchKernel:
            return None

    spec = find()
    if spec is None and install and name == DEFAULT_KERNEL:
        install_kernel(name)
        spec = find()
    if spec is None:
        raise CycleError(f"Jupyter kernel {name!r} is not installed. Fix: {kernel_fix(name)}")
    exe = spec.argv[0] if spec.argv else ""
    if exe and os.path.isabs(exe) and not os.path.exists(exe):
        raise CycleError(f"kernel {name!r} points to a missing interpreter {exe}. "
                         f"Fix: {kernel_fix(name)}")
    return {"name": name, "argv0": exe, "resource_dir": spec.resource_dir,
            "language": spec.language}


# --------------------------------------------------------------------------------------------
# Run outcomes
# --------------------------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """Outcome of one executed notebook (durations are in provenance, not results.json)."""

    template: str
    country: str
    status: Status
    duration: float
    page: str
    failing_cell: int | None = None
    error: str = ""
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class CycleResult:
    """What `run` produced: the published folder and every notebook's outcome."""

    cycle: str
    path: Path
    notebooks: list[NotebookRun] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.notebooks)

    @property
    def failed(self) -> list[NotebookRun]:
        return [n for n in self.notebooks if not n.ok]

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        return summary_table(self.notebooks)


def summary_table(runs: list[NotebookRun]) -> str:
    """Plain-text table: notebook, country, status, duration, failing cell and error."""
    rows = [("notebook", "country", "status", "seconds", "cell", "error")]
    for r in runs:
        rows.append((r.template, r.country, r.status, f"{r.duration:.1f}",
                     "" if r.failing_cell is None else str(r.failing_cell),
                     r.error.splitlines()[0][:90] if r.error else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    out = []
    for j, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
        if j == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    n_bad = sum(not r.ok for r in runs)
    out.append(f"{len(runs) - n_bad} of {len(runs)} notebooks succeeded"
               + (f"; {n_bad} FAILED" if n_bad else ""))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------
def _prepare_cache(params: CycleParams, cache: Path, log: Callable[[str], None]) -> _SharedTables:
    """Validate the inputs once and cache what every notebook needs (best effort).

    Data errors stop the run here, before any notebook. The shared tables (indicators,
    progress) are then computed on a thread of the runner while the workers start the impact
    fits, which need only the validated inputs (with the pandas engine; Spark and DuckDB run
    here, before any notebook). A library function that is missing or fails there is *not*
    fatal: notebooks then compute it themselves and report the problem in their own page.
    """
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if params.engine != "pandas":
        where = "DuckDB, out of core"
        if params.engine == "spark":
            where = spark.describe()  # never the full URL: it may carry a token
        log(f"indicators: engine {params.engine} ({where}) on {params.panel.name}")
    notes, tables = cache_inputs(params, cache)
    for note in notes:
        log(f"  cache: {note}")
    log(f"validated the inputs in {time.perf_counter() - t0:.1f}s")
    shared = _SharedTables(params, cache, tables, log, t0)
    if params.engine == "pandas":
        threading.Thread(target=shared.run, daemon=True, name="shared-tables").start()
    else:
        shared.run()
    return shared


class _SharedTables:
    """`context.cache_shared_tables` on a thread; `wait` holds a notebook until the tables are
    cached (and raises what that step raised)."""

    def __init__(self, params: CycleParams, cache: Path, tables: dict[str, Any],
                 log: Callable[[str], None], t0: float) -> None:
        self.params, self.cache, self.tables, self.log, self.t0 = params, cache, tables, log, t0
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for note in cache_shared_tables(self.params, self.cache, self.tables):
                self.log(f"  cache: {note}")
            self.log(f"prepared shared data in {time.perf_counter() - self.t0:.1f}s")
        except BaseException as exc:  # raised in the notebooks' threads by `wait`
            self.error = exc
        finally:
            self.tables = {}
            self.done.set()

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise self.error


def _previous_cycle(params: CycleParams) -> str | None:
    if params.previous_cycle:
        return params.previous_cycle
    earlier = [c["cycle"] for c in site.list_cycles(params.output_root)
               if site.natural_key(c["cycle"]) < site.natural_key(params.cycle)]
    return max(earlier, key=site.natural_key) if earlier else None


def run(params: CycleParams, *, log: Callable[[str], None] | None = None,
        install_missing_kernel: bool = True) -> CycleResult:
    """Execute, render and publish one cycle; see the module docstring for the steps.

    Failed or timed-out notebooks are kept, rendered with their error and marked failed
    (`CycleResult.ok` is False); the other notebooks still run. A failed run never replaces a
    published cycle: it is published in ``<root>/_failed/<cycle>/`` instead (the first run of a
    cycle, with nothing to protect, is published in place, marked failed).
    """
    say = log or (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    started = time.time()
    templates, jobs, kernel = _preflight(params, say, install_missing_kernel)
    inputs = provenance.input_files(params)  # hashed now: a file replaced mid-run is not ours
    root = params.output_root
    root.mkdir(parents=True, exist_ok=True)
    background = _Background()
    with CycleLock(root, params.cycle), _terminate_as_interrupt():
        restore_interrupted_publish(root, params.cycle)
        for stale in root.glob(f".tmp-{params.cycle}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        build = Path(tempfile.mkdtemp(prefix=f".tmp-{params.cycle}.", dir=root))
        try:
            runs = _build(params, build, templates, jobs, inputs, say, background,
                          provenance_extra={"kernel": kernel, "started": started, "t0": t0})
            target = _target(params, runs)
            make_readable(build)
            publish(build, target)
        except BaseException:
            background.join()
            shutil.rmtree(build, ignore_errors=True)
            raise
        if not site.write_root_index(root):
            say(f"note: {root / 'index.html'} was not written by msme-eval; left as it is")
        background.join()  # the work folder is removed (under the lock: a next run's to clean)
    result = CycleResult(params.cycle, target, runs, time.perf_counter() - t0)
    say(result.summary())
    if target != root / params.cycle:
        say(f"the run failed, so the published cycle {root / params.cycle} was left as it was; "
            f"this run's report (with the errors) is in {target}")
    say(f"report: {result.path / 'index.html'}  ({result.duration:.1f}s)")
    return result


def _preflight(params: CycleParams, say: Callable[[str], None], install_kernel: bool
               ) -> tuple[list[Template], list[Job], dict[str, Any]]:
    """Everything checked before any notebook starts: engine, templates, the kernel."""
    check_engine(params.engine)
    templates = discover_templates(params.templates_dir, params.sections)
    jobs = plan(params, templates)
    kernel = check_kernel(params.kernel, install=install_kernel)
    if kernel["argv0"] and os.path.isabs(kernel["argv0"]) and \
            Path(kernel["argv0"]).parent != Path(sys.executable).parent:  # other env
        say(f"note: kernel {params.kernel!r} runs {kernel['argv0']}, not this interpreter "
            f"({sys.executable}); if that is another environment, fix: "
            f"{kernel_fix(params.kernel)}")
    return templates, jobs, kernel


def _build(params: CycleParams, build: Path, templates: list[Template], jobs: list[Job],
           inputs: dict[str, dict[str, Any]], say: Callable[[str], None], background: _Background,
           provenance_extra: dict[str, Any]) -> list[NotebookRun]:
    """Run the notebooks and write the whole site into ``build`` (not yet published). The table
    downloads are written by a worker during the last phase (`ExportJob`); workers are stopped
    and the work folder removed in the ``background``."""
    root = params.output_root
    work = build / "_work"
    workers = start_workers(params, work)  # their kernels start while the inputs are validated
    try:
        shared = _prepare_cache(params, work / "cache", say)
        fits = fit_jobs(params, jobs, work / "cache", {k: v["sha256"] for k, v in inputs.items()})
    except BaseException:
        for w in workers:
            w.close(force=True)
        raise
    export = ExportJob(work / "tables", build / "tables")
    with _Finisher(params, work, build) as finish:
        runs = _run_jobs(params, jobs, work, say, finish, fits, export, background, workers,
                         ready=shared.wait, past=past_durations(params))
        finish.wait()
    shared.done.wait()
    if finish.n_redacted:
        say(f"WARNING: removed {finish.n_redacted} firm identifier(s) that notebook output quoted "
            "(library messages); the published report shows '[firm id removed]'")
    results = _merge_results(params, jobs, runs, work, inputs)
    (build / "results.json").write_text(dump_json(results), encoding="utf-8")
    if not export.current():  # not run early, failed, or the last phase changed the tables
        shutil.rmtree(build / "tables", ignore_errors=True)
        site.export_tables(site.table_files(work / "tables"), build / "tables")
    prov = provenance.collect(params, inputs=inputs, kernel=provenance_extra["kernel"],
                              started=provenance_extra["started"],
                              duration=time.perf_counter() - provenance_extra["t0"],
                              runs=[asdict(r) for r in runs])
    (build / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True), encoding="utf-8")
    prev = _previous_cycle(params)
    site.write_cycle_index(build, params=params, jobs=jobs, runs=runs, results=results,
                           templates=templates, previous=prev,
                           previous_results=site.load_results(root, prev), provenance=prov)
    background.join()  # the workers' logs are complete once they have stopped
    _keep_logs(work, build)
    trash = build.with_name(f"{build.name}-work")  # matches the stale-build pattern of `run`
    os.rename(work, trash)
    background.start(shutil.rmtree, trash, True)
    say(f"rendering took {sum(finish.seconds):.1f}s (alongside the notebooks)")
    return runs


class _Finisher:
    """What happens to each notebook as it ends: firm identifiers its output quoted are redacted
    at once (a later phase reads its results and tables), and its two pages are rendered on
    threads of their own alongside the runs, so a phase never waits for a page to render."""

    def __init__(self, params: CycleParams, work: Path, build: Path) -> None:
        self.params, self.work, self.build = params, work, build
        self.redact = panel_redactor(work)
        self.n_redacted = 0
        self.seconds: list[float] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=params.workers, thread_name_prefix="render")
        self.pages: list[Future[None]] = []

    def __enter__(self) -> _Finisher:
        return self

    def __call__(self, job: Job, r: NotebookRun) -> None:
        if self.redact is not None:
            n = redact_files([self.work / "executed" / f"{job.key}.ipynb", self.work / r.log,
                              self.work / "results" / job.template.name / job.country], self.redact)
            r.error, m = self.redact(r.error)
            with self.lock:
                self.n_redacted += n + m
        self.pages.append(self.pool.submit(self._render, job, r))

    def _render(self, job: Job, r: NotebookRun) -> None:
        t = time.perf_counter()
        render.render_pair(self.work / "executed" / f"{job.key}.ipynb", self.build / r.page,
                           title=f"{job.template.title} — {area_name(job.country)}",
                           cycle=self.params.cycle, status=r.status, depth=r.page.count("/"),
                           error=r.error, failing_cell=r.failing_cell)
        self.seconds.append(time.perf_counter() - t)

    def wait(self) -> None:
        """Every page rendered (a rendering error is raised here)."""
        for page in self.pages:
            page.result()

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _target(params: CycleParams, runs: list[NotebookRun]) -> Path:
    """Where this run is published: the cycle folder, unless the run failed and a published
    cycle would be replaced (then ``<root>/_failed/<cycle>``)."""
    target = params.output_root / params.cycle
    if all(r.ok for r in runs) or not (target / "results.json").exists():
        return target
    failed = params.output_root / "_failed"
    failed.mkdir(exist_ok=True)
    return failed / params.cycle


def make_readable(folder: Path) -> None:
    """Published files as any report: readable by all (0644 / 0755 less the umask), not the
    0600 / 0700 that temporary files and folders are created with."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


class _terminate_as_interrupt:
    """Within the block, SIGTERM (and SIGHUP) stop the run as Ctrl-C does: notebooks and
    kernels are stopped, nothing is published, the previous report stays."""

    def __enter__(self) -> None:
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self.saved[sig] = signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _keep_logs(work: Path, build: Path) -> None:
    """Keep the executed notebooks and papermill logs as the audit trail (under _audit/)."""
    audit = build / "_audit"
    for sub in ("executed", "logs"):
        if (work / sub).exists():
            shutil.copytree(work / sub, audit / sub)


def _run_jobs(params: CycleParams, jobs: list[Job], work: Path, say: Callable[[str], None],
              finish: Callable[[Job, NotebookRun], None], fits: list[FitJob] | None = None,
              export: ExportJob | None = None, background: _Background | None = None,
              workers: list[KernelWorker] | None = None,
              ready: Callable[[], None] | None = None,
              past: dict[tuple[str, str], float] | None = None) -> list[NotebookRun]:
    """Run jobs phase by phase on ``params.workers`` kernel workers (one kernel each, reused
    from notebook to notebook), longest first (a freed worker takes the next job in that order);
    ``finish`` each as soon as it ends. ``fits`` (shared impact computations) run on the same
    workers, first in their phase; ``export`` (the table downloads) first in the last phase when
    there are earlier ones. In the last phase a worker with no job left is stopped at once (in
    the ``background``), not after the others. ``workers``: already started ones
    (`start_workers`), else they start with their first job. ``ready`` is called before each
    notebook (it waits for the shared tables). ``past``: seconds per (template, area) in an
    earlier run (`past_durations`), which order the notebooks when known."""
    fits = fits or []
    results: dict[str, NotebookRun] = {}
    threads = worker_threads(params)
    workers = workers or [KernelWorker(params.kernel, work, threads, work / "logs" / f"_worker{i}.log")
                          for i in range(params.workers)]
    phases = sorted({j.template.phase for j in jobs} | {f.phase for f in fits})
    early = export if export is not None and len(phases) > 1 else None
    progress = _Progress(len(jobs) + len(fits) + (early is not None), say)

    gate = _FitGate(fits)

    def one(job: Job | FitJob | ExportJob, worker: KernelWorker) -> NotebookRun | None:
        if not isinstance(job, Job):
            try:
                return _call(params, job, work, worker, progress)
            finally:
                if isinstance(job, FitJob):
                    gate.done(job)
        if ready is not None:
            ready()
        r = _execute(params, job, work, worker, progress)
        finish(job, r)
        return progress.done(job, r)

    say(f"running {len(jobs)} notebooks ({len(fits)} shared impact fits first) on "
        f"{params.workers} kernel worker(s) x {threads} thread(s), kernel {params.kernel!r}, "
        f"limit {params.timeout:g}s each")
    ok = False
    try:
        for phase in phases:
            batch: list[Job | FitJob | ExportJob] = [f for f in fits if f.phase == phase]
            batch += longest_first([j for j in jobs if j.template.phase == phase], past)
            if early is not None and phase == phases[-1]:
                early.take_snapshot()
                batch.insert(0, early)
            done = background.start if background is not None and phase == phases[-1] else None
            _run_batch(_Todo(batch, gate), workers, one, results, say, done)
            _collect_tables(work, [j for j in batch if isinstance(j, Job)])
        ok = True
    finally:
        if not ok or background is None:  # else each was stopped when the last phase left it idle
            for w in workers:
                w.close()
    return [results[j.key] for j in jobs]


def past_durations(params: CycleParams) -> dict[tuple[str, str], float]:
    """Seconds each (template, area) took in the published run of this cycle, else of the
    previous cycle (their ``provenance.json``); empty when there is none."""
    for cyc in dict.fromkeys((params.cycle, _previous_cycle(params))):
        path = params.output_root / cyc / "provenance.json" if cyc else None
        try:
            runs = json.loads(path.read_text(encoding="utf-8"))["notebooks"] if path else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if runs:
            return {(r["template"], r["country"]): float(r["duration"]) for r in runs
                    if r.get("status") == "ok"}
    return {}


def longest_first(jobs: list[Job], past: dict[tuple[str, str], float] | None = None) -> list[Job]:
    """The jobs of a phase, longest first (the makespan of N workers is then within 4/3 of the
    best: Graham 1969, LPT): by their seconds in ``past`` when every one is known, else by
    their template's relative ``cost`` (stable: template and area order among equals)."""
    if past and all((j.template.name, j.country) in past for j in jobs):
        return sorted(jobs, key=lambda j: -past[(j.template.name, j.country)])
    return sorted(jobs, key=lambda j: -j.template.cost)


def worker_threads(params: CycleParams) -> int:
    """BLAS/OpenMP threads per worker: the CPUs shared out (N notebooks x all-core pools would
    oversubscribe them)."""
    return max(1, (os.cpu_count() or 1) // params.workers)


def start_workers(params: CycleParams, work: Path) -> list[KernelWorker]:
    """``params.workers`` kernel workers, started now (process and kernel start in the
    background: the runner validates the inputs meanwhile)."""
    work.mkdir(parents=True, exist_ok=True)
    workers = [KernelWorker(params.kernel, work, worker_threads(params),
                            work / "logs" / f"_worker{i}.log") for i in range(params.workers)]
    for w in workers:
        w.start()
    return workers


def _run_batch(todo: _Todo, workers: list[KernelWorker],
               one: Callable[[Job | FitJob | ExportJob, KernelWorker], NotebookRun | None],
               results: dict[str, NotebookRun], say: Callable[[str], None],
               idle_worker: Callable[[Callable[[], None]], None] | None = None) -> None:
    """One phase: each worker, on a thread of its own, takes the next job it can start from
    ``todo`` (in order) until none is left; outcomes into ``results``. ``idle_worker`` (in the
    last phase) gets the ``close`` of a worker that has found nothing left to do."""

    def loop(worker: KernelWorker) -> None:
        while (job := todo.take()) is not None:
            r = one(job, worker)
            if r is not None:
                results[job.key] = r
        if idle_worker is not None:
            idle_worker(worker.close)  # nothing left for it in this run

    pool = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="worker")
    try:
        for future in as_completed([pool.submit(loop, w) for w in workers]):
            future.result()  # the first error stops the phase at once
    except BaseException:  # Ctrl-C / SIGTERM: stop every notebook now, not at its limit
        todo.clear()  # no job starts after this one
        pool.shutdown(wait=False, cancel_futures=True)
        n = stop_all()
        say(f"interrupted: stopped {n} notebook worker(s); nothing was published")
        raise
    pool.shutdown()


def _call(params: CycleParams, job: FitJob | ExportJob, work: Path, worker: KernelWorker,
          progress: _Progress) -> None:
    """One library function on a worker: a shared impact fit (`context.run_impact_call`) or the
    table downloads (`site.export_folder`). A failure is logged, not fatal: the impact page then
    computes that part itself and shows the error where it occurs; the runner writes the
    downloads itself (and raises their error)."""
    logp = work / "logs" / f"{job.key}.log"
    logp.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(job, FitJob):
        function, kwargs = "msme_eval.report.context:run_impact_call", {
            "cache_dir": str(work / "cache"), "area": job.area, "call": job.call, "key": job.digest}
    else:
        function, kwargs = "msme_eval.report.site:export_folder", {
            "tables": str(job.tables), "dest": str(job.dest)}
    progress.start(job)
    t = time.perf_counter()
    status, err = worker.call(function, kwargs, timeout=params.timeout, log_path=logp)
    if isinstance(job, ExportJob):
        job.status = status
    progress.finished(job.key, status, time.perf_counter() - t, err)
    return None


def _execute(params: CycleParams, job: Job, work: Path, worker: KernelWorker,
             progress: _Progress) -> NotebookRun:
    """One notebook on one worker, with its parameters, output folder and log."""
    out = work / "executed" / f"{job.key}.ipynb"
    logp = work / "logs" / f"{job.key}.log"
    logp.parent.mkdir(parents=True, exist_ok=True)
    outdir = work / "results" / job.template.name / job.country
    outdir.mkdir(parents=True, exist_ok=True)
    nbp = params.notebook_params(job.country, output_dir=str(outdir), cache_dir=str(work / "cache"))
    progress.start(job)
    t = time.perf_counter()
    status, cell, err = worker.run(job.template.path, out, nbp, timeout=params.timeout, log_path=logp)
    return NotebookRun(job.template.name, job.country, status, time.perf_counter() - t,
                       job.relpath, cell, err, log=str(logp.relative_to(work)))


class _Progress:
    """Thread-safe progress lines: start, then a bar with the outcome of each notebook."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say, self.n = total, say, 0
        self.lock = threading.Lock()

    def start(self, job: Job | FitJob | ExportJob) -> None:
        with self.lock:
            self.say(f"  start  {job.key}")

    def done(self, job: Job, r: NotebookRun) -> NotebookRun:
        self.finished(job.key, r.status, r.duration, r.error,
                      f"  cell {r.failing_cell}: " if r.error else "")
        return r

    def finished(self, key: str, status: str, seconds: float, error: str = "",
                 where: str = "  ") -> None:
        with self.lock:
            self.n += 1
            bar = "#" * int(20 * self.n / self.total)
            self.say(f"[{bar:<20}] {self.n}/{self.total} {status:<7} {key} {seconds:.1f}s"
                     + (f"{where}{error.splitlines()[0][:80]}" if error else ""))


def _collect_tables(work: Path, jobs: list[Job]) -> None:
    """Copy the tables notebooks exported into one folder, named <table>[_<country>].csv."""
    dest = work / "tables"
    dest.mkdir(exist_ok=True)
    for job in jobs:
        src = work / "results" / job.template.name / job.country / "tables"
        for f in sorted(src.glob("*.csv")) if src.exists() else []:
            suffix = "" if job.country == REGION else f"_{job.country}"
            shutil.copyfile(f, dest / f"{f.stem}{suffix}.csv")


def _merge_results(params: CycleParams, jobs: list[Job], runs: list[NotebookRun],
                   work: Path, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json: inputs' SHA-256, parameters that shape numbers, each notebook's fragment.

    Contains no paths, timestamps or durations, so identical inputs give identical bytes.
    """
    notebooks: dict[str, Any] = {}
    for job, r in zip(jobs, runs):
        frag = work / "results" / job.template.name / job.country / "results.json"
        data = json.loads(frag.read_text(encoding="utf-8")) if frag.exists() else {}
        notebooks.setdefault(job.template.name, {})[job.country] = {
            "status": r.status, "results": data,
            "error": None if r.ok else {"cell": r.failing_cell, "message": r.error},
        }
    shaped = params.model_dump(mode="json", include={
        "cycle", "countries", "baseline_year", "target_year", "report_year", "programme_types",
        "min_contributors", "dominance_n", "dominance_k", "sections"})
    return {
        "schema": "msme-eval/results/1",
        "cycle": params.cycle,
        "parameters": shaped,
        "inputs": {k: v["sha256"] for k, v in inputs.items()},
        "status": "ok" if all(r.ok for r in runs) else "failed",
        "notebooks": notebooks,
    }


