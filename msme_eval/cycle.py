"""Monitoring cycles: typed parameters, the papermill fan-out, rendering and atomic publish.

A *cycle* is one validated parameter set (`CycleParams`). `run(params)`:

1. checks everything before any notebook starts (parameters, input files, kernel, templates);
2. validates the panel once and caches the typed panel and shared tables for the notebooks;
3. executes every template x country with papermill, one subprocess per notebook, N at a time,
   each with a wall-clock limit (the process group is killed when it is exceeded);
4. renders each executed notebook to HTML with nbconvert as a separate step (code hidden,
   injected parameters removed, figures embedded, no network assets) plus a "show code" copy;
5. writes the site (index pages), ``results.json`` (headline numbers, deterministic),
   ``provenance.json`` and the tables as CSV and Excel into ``<root>/.tmp-<cycle>-<random>/``
   and only then swaps that folder into ``<root>/<cycle>`` (atomic; other cycles untouched).

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

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from msme_eval.report.execute import Status, execute_notebook
from msme_eval.report.publish import CycleLock, publish
from msme_eval.report.redact import redact_firm_ids
from msme_eval.schema import COUNTRIES, PROGRAMME_TYPES

REGION = "ASEAN"
AREAS: tuple[str, ...] = (*COUNTRIES, REGION)
DEFAULT_KERNEL = "msme-eval"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATES = PROJECT_ROOT / "notebooks"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SECRET_WORDS = re.compile(r"pass(word|wd)?|secret|token|credential|api_?key|auth|private_?key",
                           re.IGNORECASE)
KERNEL_FIX = (
    "{python} -m ipykernel install --sys-prefix --name {name} "
    "--display-name 'Python (msme-eval)'"
)


class CycleError(RuntimeError):
    """A cycle cannot start (bad parameters, missing input, missing kernel); exit code 2."""

    exit_code = 2


class NotAvailable(RuntimeError):
    """A library function a notebook section needs is not part of this version."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
PathParam = Annotated[Path, Field(strict=False)]


def _check_input_file(value: Path | None, name: str) -> Path | None:
    """Resolve an input path (relative to the working directory, then the project root)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, PROJECT_ROOT / path]
    for cand in candidates:
        if cand.is_file() or (name == "panel" and cand.is_dir()):  # parquet dataset folder
            return cand.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    hint = (" Create the embedded sample with `msme-eval sample` (or `make data`)."
            if "sample" in str(path) else "")
    raise ValueError(f"{name} file not found: {value} (looked in: {tried}).{hint}")


def is_parquet(path: Path) -> bool:
    """A Parquet file (.parquet/.pq) or a folder holding Parquet files (a partitioned dataset)."""
    if path.is_dir():
        return next(path.rglob("*.parquet"), None) is not None
    return path.suffix.lower() in (".parquet", ".pq")


def check_engine(engine: str) -> None:
    """Raise `CycleError` (before any notebook starts) when ``engine`` cannot run here."""
    if engine == "duckdb":
        import importlib.util

        if importlib.util.find_spec("duckdb") is None:
            raise CycleError("engine 'duckdb' needs the duckdb package. Fix: pip install "
                             "'msme-eval[scale]'")
    elif engine == "spark":
        from msme_eval import spark

        reason = spark.available()
        if reason is not None:
            raise CycleError(f"engine 'spark' cannot run here: {reason}")


class _DataParams(BaseModel):
    """Parameters shared by the runner and every notebook (strict, unknown keys refused)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, validate_default=True)

    cycle: str = Field("2024", min_length=1, max_length=64,
                       description="cycle id; a safe name [A-Za-z0-9_-]+ (used as folder name)")
    panel: PathParam = Field(Path("data/raw/sample/panel.parquet"),
                             description="firm-year panel (csv, xlsx, dta, sav, parquet)")
    macro: PathParam | None = Field(Path("data/raw/sample/macro.csv"),
                                    description="country-year macro table, or None")
    targets: PathParam | None = Field(Path("data/raw/sample/targets.csv"),
                                      description="indicator targets table, or None")
    baseline_year: int = Field(2018, ge=2000, le=2100)
    target_year: int = Field(2025, ge=2000, le=2100)
    report_year: int | None = Field(None, ge=2000, le=2100,
                                    description="latest year reported; None = last year in data")
    programme_types: list[str] = Field(default_factory=lambda: list(PROGRAMME_TYPES))
    min_contributors: int = Field(3, ge=1, description="disclosure: minimum firms per cell")
    dominance_n: int = Field(2, ge=1, description="disclosure: n of the (n, k) dominance rule")
    dominance_k: float = Field(0.85, gt=0, le=1, description="disclosure: k of the (n, k) rule")
    engine: Literal["pandas", "duckdb", "spark"] = Field(
        "pandas", description="where the indicator table is computed: pandas (in memory), "
        "duckdb (out of core, from the Parquet panel) or spark (the Parquet panel read by "
        "Spark; master and settings from MSME_EVAL_SPARK_* environment variables)")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            bad = sorted(k for k in data if isinstance(k, str) and k not in cls.model_fields
                         and _SECRET_WORDS.search(k))
            if bad:
                raise ValueError(
                    f"{', '.join(bad)}: secrets are never parameters (they would be written into "
                    "the executed notebooks). Set credentials as environment variables "
                    "(e.g. MSME_EVAL_DB_PASSWORD) and read them with os.environ in the library.")
        return data

    @field_validator("cycle")
    @classmethod
    def _safe_cycle(cls, v: str) -> str:
        if not SAFE_NAME.match(v):
            raise ValueError(f"cycle id {v!r} is not a safe name: use only letters, digits, "
                             "'_' and '-' (it becomes a folder name under reports/)")
        return v

    @field_validator("panel")
    @classmethod
    def _panel_exists(cls, v: Path) -> Path:
        return _check_input_file(v, "panel")  # type: ignore[return-value]

    @field_validator("macro")
    @classmethod
    def _macro_exists(cls, v: Path | None) -> Path | None:
        return _check_input_file(v, "macro")

    @field_validator("targets")
    @classmethod
    def _targets_exists(cls, v: Path | None) -> Path | None:
        return _check_input_file(v, "targets")

    @field_validator("programme_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in PROGRAMME_TYPES]
        if unknown:
            raise ValueError(f"unknown programme type(s) {unknown}; choose from "
                             f"{list(PROGRAMME_TYPES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"programme types repeated: {v}")
        return v

    @model_validator(mode="after")
    def _years_ordered(self) -> _DataParams:
        if self.baseline_year >= self.target_year:
            raise ValueError(f"baseline_year ({self.baseline_year}) must be before "
                             f"target_year ({self.target_year})")
        return self

    @model_validator(mode="after")
    def _engine_reads_parquet(self) -> _DataParams:
        if self.engine != "pandas" and not is_parquet(self.panel):
            raise ValueError(
                f"engine {self.engine!r} reads the panel file itself and needs Parquet (a "
                f".parquet file or a folder of them), not {self.panel.suffix or 'a folder'!r} "
                f"({self.panel.name}). Fix: convert it with `msme-eval validate "
                f"{self.panel.name}` (writes data/processed/{self.panel.stem}.parquet) and "
                "point panel at that file, or use engine: pandas")
        return self


class CycleParams(_DataParams):
    """One monitoring cycle: data, areas, years, disclosure thresholds and how to run it."""

    countries: list[str] = Field(default_factory=lambda: list(AREAS),
                                 description="ISO3 codes of member states and/or 'ASEAN'")
    sections: list[str] | None = Field(None, description="template names to run; None = all")
    templates_dir: PathParam = Field(DEFAULT_TEMPLATES, description="folder of .ipynb templates")
    workers: int = Field(2, ge=1, le=64)
    timeout: float = Field(600.0, gt=0, description="wall-clock limit per notebook, seconds")
    kernel: str = Field(DEFAULT_KERNEL, description="Jupyter kernel name (installed kernelspec)")
    output_root: PathParam = Field(Path("reports"), description="where cycles are published")
    previous_cycle: str | None = Field(None, description="cycle to compare with; None = the "
                                                         "latest earlier cycle in output_root")

    @field_validator("countries")
    @classmethod
    def _known_areas(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("countries is empty; give at least one of " + " ".join(AREAS))
        unknown = [c for c in v if c not in AREAS]
        if unknown:
            raise ValueError(f"unknown country code(s) {unknown}; use ISO 3166 alpha-3 codes of "
                             f"ASEAN members ({' '.join(COUNTRIES)}) or {REGION!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"countries repeated: {v}")
        return v

    @field_validator("kernel", "previous_cycle")
    @classmethod
    def _safe_names(cls, v: str | None) -> str | None:
        if v is not None and not SAFE_NAME.match(v):
            raise ValueError(f"{v!r} is not a safe name ([A-Za-z0-9_-]+)")
        return v

    @field_validator("templates_dir")
    @classmethod
    def _templates_exist(cls, v: Path) -> Path:
        path = v if v.is_absolute() else Path.cwd() / v
        if not path.is_dir():
            raise ValueError(f"templates folder not found: {path}")
        return path.resolve()

    @field_validator("output_root")
    @classmethod
    def _absolute_root(cls, v: Path) -> Path:
        return (v if v.is_absolute() else Path.cwd() / v).resolve()

    def notebook_params(self, country: str, *, output_dir: str = "",
                        cache_dir: str = "") -> dict[str, Any]:
        """The parameters injected into one notebook (JSON-safe; checked by NotebookParams)."""
        data = self.model_dump(mode="json", include=set(_DataParams.model_fields))
        data.update(country=country, output_dir=output_dir, cache_dir=cache_dir)
        return data


class NotebookParams(_DataParams):
    """What a template receives: the data parameters plus its area and output folders."""

    country: str = Field(REGION, description="ISO3 member code or 'ASEAN' for the region")
    output_dir: str = Field("", description="where the runner collects results and tables; "
                                            "'' = do not write (interactive use)")
    cache_dir: str = Field("", description="runner cache with the validated panel; '' = none")

    @field_validator("country")
    @classmethod
    def _known_area(cls, v: str) -> str:
        if v not in AREAS:
            raise ValueError(f"unknown country {v!r}; use one of {' '.join(AREAS)}")
        return v


def format_validation_error(err: ValidationError, source: str = "parameters") -> str:
    """One line per problem: `field: message (got value)`, plus hints for common slips."""
    lines = [f"Invalid cycle {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(all)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown parameter (not part of CycleParams; check spelling)"
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden",) or isinstance(got, Mapping) \
            else f" (got {got!r}: {type(got).__name__})"
        hint = ""
        if loc == "cycle" and isinstance(got, int):
            hint = ' -- quote it in YAML: cycle: "2024"'
        lines.append(f"  {loc}: {msg}{shown}{hint}")
    return "\n".join(lines)


def load_params(file: str | os.PathLike[str] | None = None, **overrides: Any) -> CycleParams:
    """Build `CycleParams` from a YAML file and/or keyword overrides (None values are ignored).

    Raises `CycleError` with a readable message for every problem at once.
    """
    import yaml

    data: dict[str, Any] = {}
    source = "parameters"
    if file is not None:
        source = f"file {file}"
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CycleError(f"cannot read cycle file {file}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CycleError(f"cycle file {file} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise CycleError(f"cycle file {file} must be a mapping of parameter: value")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CycleParams.model_validate(data)
    except ValidationError as exc:
        raise CycleError(format_validation_error(exc, source)) from None


# --------------------------------------------------------------------------------------------
# Notebook side: re-check the parameters in the first cell
# --------------------------------------------------------------------------------------------
def notebook_context(namespace: Mapping[str, Any], before: Iterable[str] = ()) -> Any:
    """Check a notebook's parameters and return its `NotebookContext`.

    Call it in the cell after the parameters cell as
    ``ctx = me.cycle.notebook_context(globals(), _before)`` where ``_before`` is
    ``set(globals())`` taken just before the parameters cell: every name defined since then
    (the defaults and papermill's injected parameters) must be a `NotebookParams` field, so an
    unknown or ill-typed parameter stops the notebook here with a clear message.
    """
    from msme_eval.report.context import NotebookContext

    skip = set(before)
    values = {k: v for k, v in namespace.items()
              if k not in skip and not k.startswith("_")
              and not callable(v) and type(v).__name__ != "module"}
    try:
        params = NotebookParams.model_validate(values)
    except ValidationError as exc:
        raise CycleError(format_validation_error(exc, "notebook parameters")) from None
    return NotebookContext(params)


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
    phase: int = 1  # phase-2 templates (the summary) run after all phase-1 notebooks
    cost: float = 1.0  # relative run time; costly notebooks start first (shorter makespan)


def discover_templates(folder: Path, sections: Iterable[str] | None = None) -> list[Template]:
    """Read the templates in ``folder`` (sorted by name; files starting with '_' are skipped)."""
    import nbformat

    found: list[Template] = []
    for path in sorted(folder.glob("*.ipynb")):
        if path.name.startswith(("_", ".")):
            continue
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata.get("msme_eval", {})
        has_params = any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        if not has_params:
            raise CycleError(f"template {path} has no cell tagged 'parameters'")
        if not SAFE_NAME.match(path.stem):
            raise CycleError(f"template name {path.stem!r} is not a safe name")
        found.append(Template(name=path.stem, path=path, title=meta.get("title", path.stem),
                              scope=tuple(meta.get("scope", ["region"])),
                              phase=int(meta.get("phase", 1)),
                              cost=float(meta.get("cost", 1.0))))
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


def plan(params: CycleParams, templates: list[Template]) -> list[Job]:
    """Every (template, area) pair to run: region templates once, country ones per country."""
    jobs: list[Job] = []
    for t in templates:
        for area in params.countries:
            if (area == REGION and "region" in t.scope) or \
               (area != REGION and "country" in t.scope):
                jobs.append(Job(t, area))
    if not jobs:
        raise CycleError(f"nothing to run: templates {[t.name for t in templates]} have no "
                         f"scope matching countries {params.countries}")
    return jobs


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
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

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
def _prepare_cache(params: CycleParams, cache: Path, log: Callable[[str], None]) -> None:
    """Validate the inputs once and cache what every notebook needs (best effort).

    A library function that is missing or fails here is *not* fatal: notebooks then compute
    it themselves and report the problem in their own page.
    """
    from msme_eval.report.context import build_cache

    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if params.engine != "pandas":
        where = "DuckDB, out of core"
        if params.engine == "spark":
            from msme_eval import spark

            where = spark.describe()  # never the full URL: it may carry a token
        log(f"indicators: engine {params.engine} ({where}) on {params.panel.name}")
    notes = build_cache(params, cache)
    for note in notes:
        log(f"  cache: {note}")
    log(f"prepared shared data in {time.perf_counter() - t0:.1f}s")


def _previous_cycle(params: CycleParams) -> str | None:
    if params.previous_cycle:
        return params.previous_cycle
    from msme_eval.report.site import list_cycles, natural_key

    earlier = [c["cycle"] for c in list_cycles(params.output_root)
               if natural_key(c["cycle"]) < natural_key(params.cycle)]
    return max(earlier, key=natural_key) if earlier else None


def run(params: CycleParams, *, log: Callable[[str], None] | None = None,
        install_missing_kernel: bool = True) -> CycleResult:
    """Execute, render and publish one cycle; see the module docstring for the steps.

    Failed or timed-out notebooks are kept, rendered with their error and marked failed
    (`CycleResult.ok` is False); the other notebooks still run and the cycle is published.
    """
    from msme_eval import provenance
    from msme_eval.report import render, site

    say = log or (lambda s: print(s, flush=True))
    started = time.time()
    t0 = time.perf_counter()
    check_engine(params.engine)
    templates = discover_templates(params.templates_dir, params.sections)
    jobs = plan(params, templates)
    kernel = check_kernel(params.kernel, install=install_missing_kernel)
    if kernel["argv0"] and os.path.isabs(kernel["argv0"]) and \
            Path(kernel["argv0"]).parent != Path(sys.executable).parent:  # other env
        say(f"note: kernel {params.kernel!r} runs {kernel['argv0']}, not this interpreter "
            f"({sys.executable}); if that is another environment, fix: "
            f"{kernel_fix(params.kernel)}")
    root = params.output_root
    root.mkdir(parents=True, exist_ok=True)

    with CycleLock(root, params.cycle):
        for stale in root.glob(f".tmp-{params.cycle}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        build = Path(tempfile.mkdtemp(prefix=f".tmp-{params.cycle}-", dir=root))
        try:
            work = build / "_work"
            _prepare_cache(params, work / "cache", say)
            runs = _run_jobs(params, jobs, build, work, say)
            n_red = redact_firm_ids(work, runs)
            if n_red:
                say(f"WARNING: removed {n_red} firm identifier(s) that notebook output quoted "
                    "(library messages); the published report shows '[firm id removed]'")
            say("rendering HTML ...")
            t_render = time.perf_counter()
            for r, job in zip(runs, jobs):
                render.render_pair(work / "executed" / f"{job.key}.ipynb", build / r.page,
                                   title=f"{job.template.title} — {_area_name(job.country)}",
                                   cycle=params.cycle, status=r.status, depth=r.page.count("/"),
                                   error=r.error, failing_cell=r.failing_cell)
            results = _merge_results(params, jobs, runs, work)
            (build / "results.json").write_text(dump_json(results), encoding="utf-8")
            tables = sorted((work / "tables").glob("*.csv")) if (work / "tables").exists() else []
            site.export_tables(tables, build / "tables")
            prov = provenance.collect(params, kernel=kernel, started=started,
                                      duration=time.perf_counter() - t0,
                                      runs=[asdict(r) for r in runs])
            (build / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True),
                                                   encoding="utf-8")
            prev = _previous_cycle(params)
            site.write_cycle_index(build, params=params, jobs=jobs, runs=runs, results=results,
                                   templates=templates, previous=prev,
                                   previous_results=site.load_results(root, prev),
                                   provenance=prov)
            _keep_logs(work, build)
            shutil.rmtree(work)
            say(f"rendered in {time.perf_counter() - t_render:.1f}s")
            publish(build, root / params.cycle)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        site.write_root_index(root)
    result = CycleResult(params.cycle, root / params.cycle, runs, time.perf_counter() - t0)
    say(result.summary())
    say(f"report: {result.path / 'index.html'}  ({result.duration:.1f}s)")
    return result


def _area_name(code: str) -> str:
    from msme_eval.schema import ASEAN

    return "ASEAN (region)" if code == REGION else ASEAN[code][1]


def _keep_logs(work: Path, build: Path) -> None:
    """Keep the executed notebooks and papermill logs as the audit trail (under _audit/)."""
    audit = build / "_audit"
    for sub in ("executed", "logs"):
        if (work / sub).exists():
            shutil.copytree(work / sub, audit / sub)


def _run_jobs(params: CycleParams, jobs: list[Job], build: Path, work: Path,
              say: Callable[[str], None]) -> list[NotebookRun]:
    """Run jobs phase by phase with ``params.workers`` concurrent papermill processes."""
    results: dict[str, NotebookRun] = {}
    threads = max(1, (os.cpu_count() or 1) // params.workers)
    total = len(jobs)
    done = 0
    lock = threading.Lock()

    def one(job: Job) -> NotebookRun:
        nonlocal done
        out = work / "executed" / f"{job.key}.ipynb"
        logp = work / "logs" / f"{job.key}.log"
        logp.parent.mkdir(parents=True, exist_ok=True)
        outdir = work / "results" / job.template.name / job.country
        outdir.mkdir(parents=True, exist_ok=True)
        nbp = params.notebook_params(job.country, output_dir=str(outdir),
                                     cache_dir=str(work / "cache"))
        with lock:
            say(f"  start  {job.key}")
        t = time.perf_counter()
        status, cell, err = execute_notebook(job.template.path, out, nbp, kernel=params.kernel,
                                             timeout=params.timeout, log_path=logp,
                                             cwd=work, threads=threads)
        r = NotebookRun(job.template.name, job.country, status, time.perf_counter() - t,
                        job.relpath, cell, err, log=str(logp.relative_to(work)))
        with lock:
            done += 1
            bar = "#" * int(20 * done / total)
            say(f"[{bar:<20}] {done}/{total} {status:<7} {job.key} {r.duration:.1f}s"
                + (f"  cell {cell}: {err.splitlines()[0][:80]}" if err else ""))
        return r

    say(f"running {total} notebooks with {params.workers} worker(s) x {threads} thread(s), "
        f"kernel {params.kernel!r}, limit {params.timeout:g}s each")
    for phase in sorted({j.template.phase for j in jobs}):
        batch = sorted((j for j in jobs if j.template.phase == phase),
                       key=lambda j: -j.template.cost)  # longest first; sort is stable
        with ThreadPoolExecutor(max_workers=params.workers) as pool:
            for job, r in zip(batch, pool.map(one, batch)):
                results[job.key] = r
        _collect_tables(work, batch)
    return [results[j.key] for j in jobs]


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
                   work: Path) -> dict[str, Any]:
    """results.json: inputs' SHA-256, parameters that shape numbers, each notebook's fragment.

    Contains no paths, timestamps or durations, so identical inputs give identical bytes.
    """
    from msme_eval import provenance

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
        "inputs": {k: v["sha256"] for k, v in provenance.input_files(params).items()},
        "status": "ok" if all(r.ok for r in runs) else "failed",
        "notebooks": notebooks,
    }


def _clean(value: Any) -> Any:
    """JSON-safe, deterministic values: floats to 10 significant digits, NaN/inf -> None."""
    import math

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    try:
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.10g}")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is getattr(__import__("pandas"), "NA", object()):
        return None
    return str(value)


def dump_json(data: Any) -> str:
    """Canonical JSON (sorted keys, cleaned numbers, trailing newline)."""
    return json.dumps(_clean(data), indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"
