"""What a report notebook works with: checked parameters, shared data, and result outputs.

`msme_eval.cycle.notebook_context` returns a `NotebookContext`. It loads the validated panel
(from the runner's cache when present, else by calling `msme_eval.io.read_panel`), computes or
loads the shared tables, and writes the notebook's headline numbers (`record`) and tables
(`export_table`) where the runner collects them. The indicator table is computed by the
cycle's ``engine``: from the validated panel (pandas) or from the Parquet panel file through
DuckDB or Spark (`compute_indicators`), with the same arguments and the same numbers.

Sections call library functions through `library("module.function")`; a function that is not
part of this version gives ``None`` and the notebook says so plainly instead of inventing
content. A function that exists but fails raises, so the notebook is marked failed.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from msme_eval.report import display

REGION = "ASEAN"
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
# breakdown / group labels meaning "no breakdown" in a tidy indicator table
TOTAL_LABELS = {"", "total", "_t", "_z", "all", "none", "nan", "<na>"}


def library(dotted: str) -> Callable[..., Any] | None:
    """``library("indicators.compute")`` -> the function, or None if this version lacks it.

    Only a *missing* msme_eval module or attribute counts as unavailable; any other import
    error is a bug and is raised.
    """
    module, _, attr = dotted.rpartition(".")
    try:
        mod = importlib.import_module(f"msme_eval.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == f"msme_eval.{module}" or
                         f"msme_eval.{module}".startswith(exc.name + ".")):
            return None
        raise
    fn = getattr(mod, attr, None)
    return fn if callable(fn) else None


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """Call ``fn`` with the keyword arguments its signature accepts.

    Returns (result, names of the keyword arguments it does not accept) so callers can say
    which settings fell back to the library's defaults — nothing is dropped silently.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(*args, **kwargs), []
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return fn(*args, **kwargs), []
    names = {p.name for p in params}
    used = {k: v for k, v in kwargs.items() if k in names}
    return fn(*args, **used), sorted(set(kwargs) - set(used))


def is_total(value: Any) -> bool:
    """True for the 'no breakdown' label of a tidy indicator table."""
    return pd.isna(value) or str(value).strip().lower() in TOTAL_LABELS


def disclosure_kwargs(params: Any) -> dict[str, Any]:
    """The disclosure thresholds under the names the library functions may use."""
    return {"min_contributors": params.min_contributors, "dom_n": params.dominance_n,
            "dom_k": params.dominance_k, "dominance_n": params.dominance_n,
            "dominance_k": params.dominance_k}


def _write_pickle(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        pd.to_pickle(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Shared computations (used by the runner's cache and by notebooks without a cache)
# --------------------------------------------------------------------------------------------
def load_panel(params: Any) -> pd.DataFrame:
    read = library("io.read_panel")
    if read is None:
        raise LookupError("io.read_panel")
    return read(params.panel)


def validate_panel(params: Any, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(typed panel, validation report with warnings) via `io.validate_file`."""
    fn = library("io.validate_file")
    if fn is None:
        raise LookupError("io.validate_file")
    res = fn(params.panel, out_dir=out_dir)
    return res.panel, res.report


def load_table(params: Any, kind: str) -> pd.DataFrame | None:
    path = getattr(params, kind)
    if path is None:
        return None
    read = library(f"io.read_{kind}")
    if read is None:
        raise LookupError(f"io.read_{kind}")
    return read(path)


INDICATOR_BREAKDOWNS = ("size_class", "owner_female")
_ENGINE_LABELS = {"pandas": "pandas (in memory)", "duckdb": "DuckDB (Parquet, out of core)",
                  "spark": "Spark (Parquet)"}


def engine_of(params: Any) -> str:
    """The cycle's indicator engine ("pandas" for parameter objects that predate it)."""
    return getattr(params, "engine", None) or "pandas"


def compute_indicators(params: Any, panel: pd.DataFrame | None,
                       macro: pd.DataFrame | None, *, spark_session: Any = None
                       ) -> tuple[pd.DataFrame, list[str]]:
    """All indicators by country-year, with the report's breakdowns and ASEAN aggregate,
    disclosure control always on.

    ``params.engine`` picks the source handed to ``indicators.compute`` (same arguments
    whatever the engine): "pandas" the validated in-memory ``panel``; "duckdb" the Parquet
    panel *path* (read out of core); "spark" ``spark.read.parquet(path)`` on
    ``spark_session`` (default: `msme_eval.spark.session()`, from the environment). ``panel``
    is not used (and may be None) for duckdb and spark.
    """
    fn = library("indicators.compute")
    if fn is None:
        raise LookupError("indicators.compute")
    engine = engine_of(params)
    source: Any
    if engine == "pandas":
        if panel is None:
            raise LookupError("io.read_panel")
        source = panel
    elif engine == "duckdb":
        source = str(params.panel)
    elif engine == "spark":
        from msme_eval import spark

        session = spark.session() if spark_session is None else spark_session
        source = spark.read_parquet(session, params.panel)
    else:
        raise ValueError(f"unknown engine {engine!r}; use pandas, duckdb or spark")
    return call(fn, source, macro, by=("country", "year"), breakdowns=INDICATOR_BREAKDOWNS,
                aggregate=True, disclosure=True, **disclosure_kwargs(params))


def _compute_shared_indicators(params: Any, panel: pd.DataFrame | None,
                               macro: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """`compute_indicators` for the runner's cache: a Spark session started here is stopped
    afterwards (the notebooks then only read the cached table, no JVM each)."""
    if engine_of(params) != "spark":
        return compute_indicators(params, panel, macro)
    from msme_eval import spark

    with spark.scoped_session() as session:
        return compute_indicators(params, panel, macro, spark_session=session)


def compute_progress(params: Any, indicators: pd.DataFrame,
                     targets: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """Progress to the targets whose target year is the cycle's ``target_year`` (a targets
    file may hold several horizons)."""
    fn = library("progress.assess")
    if fn is None:
        raise LookupError("progress.assess")
    if targets is None:
        raise LookupError("targets table (no targets file in this cycle)")
    if "target_year" in targets.columns:
        targets = targets[targets["target_year"] == params.target_year]
        if targets.empty:
            raise LookupError(f"targets for target year {params.target_year} (the targets "
                              "file has none)")
    return call(fn, indicators, targets)


def build_cache(params: Any, cache: Path) -> list[str]:
    """Validate the inputs once and store the shared tables for every notebook of a cycle.

    Data errors (`DataValidationError`) propagate: no notebook should run on invalid data.
    Returns notes on what could not be prepared (the notebooks then report it themselves).
    """
    notes: list[str] = []
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            panel, report = validate_panel(params, cache / "validated")
        quality = [w for w in caught if "DataQuality" in w.category.__name__]
        if quality:
            notes.append(f"validation: {len(quality)} data-quality warning message(s); "
                         "they are listed on the data quality page")
        for w in caught:
            if w not in quality:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        _write_pickle(report, cache / "validation_report.pkl")
    except LookupError:
        try:
            panel = load_panel(params)
        except LookupError as exc:
            return [f"{exc.args[0]} is not available in this version; notebooks will say so"]
    _write_pickle(panel, cache / "panel.pkl")
    tables: dict[str, pd.DataFrame | None] = {}
    for kind in ("macro", "targets"):
        try:
            tables[kind] = load_table(params, kind)
            _write_pickle(tables[kind], cache / f"{kind}.pkl")
        except LookupError as exc:
            tables[kind] = None
            notes.append(f"{exc.args[0]} not available")
    try:
        ind, ignored = _compute_shared_indicators(params, panel, tables["macro"])
        _write_pickle((ind, ignored), cache / "indicators.pkl")
        try:
            prog, ignored_p = compute_progress(params, ind, tables["targets"])
            _write_pickle((prog, ignored_p), cache / "progress.pkl")
        except LookupError as exc:
            notes.append(f"{exc.args[0]} not available")
    except LookupError as exc:
        notes.append(f"{exc.args[0]} not available")
    except Exception as exc:  # noqa: BLE001 - the indicator notebooks will show the error
        notes.append(f"indicators failed in the shared step ({type(exc).__name__}: {exc}); "
                     "each notebook retries and reports it")
    return notes


# --------------------------------------------------------------------------------------------
# The notebook context
# --------------------------------------------------------------------------------------------
class NotebookContext:
    """Checked parameters plus lazy, cached access to data and shared results."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self.country: str = params.country
        self.is_region = params.country == REGION
        self.results: dict[str, Any] = {}
        self._memo: dict[str, Any] = {}
        self.cache = Path(params.cache_dir) if params.cache_dir else None
        self.output = Path(params.output_dir) if params.output_dir else None

    # ---- labels -------------------------------------------------------------------------
    @property
    def area_name(self) -> str:
        from msme_eval.schema import ASEAN

        return "ASEAN (all member states)" if self.is_region else ASEAN[self.country][1]

    def __repr__(self) -> str:
        return f"NotebookContext(cycle={self.params.cycle!r}, country={self.country!r})"

    # ---- availability ---------------------------------------------------------------------
    def unavailable(self, what: str) -> display._HTML:
        """The plain statement shown where a section's library function is missing."""
        return display.notice(f"This section is not available in this version of msme-eval "
                              f"({what} is not implemented yet). No figures are shown "
                              "rather than placeholders.", "unavailable")

    def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        if name in self._memo:
            return self._memo[name]
        path = self.cache / f"{name}.pkl" if self.cache else None
        if path is not None and path.exists():
            value = pd.read_pickle(path)
        else:
            # validation warnings quote row numbers and values: never print them in a report
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = compute()
            quality = [w for w in caught if "DataQuality" in w.category.__name__]
            if quality and "quality-notice" not in self._memo:
                self._memo["quality-notice"] = True
                _show(display.notice(f"Reading the data raised {len(quality)} data-quality "
                                     "warning(s); they are summarised on the data quality "
                                     "page.", "warning"))
            for w in caught:
                if w not in quality:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._memo[name] = value
        return value

    # ---- data -----------------------------------------------------------------------------
    def panel(self, *, area: bool = True) -> pd.DataFrame | None:
        """The validated panel (this country's rows when ``area`` and not the region);
        None (after showing a notice) when reading is not available in this version."""
        try:
            full = self._cached("panel", lambda: load_panel(self.params))
        except LookupError as exc:
            _show(self.unavailable(exc.args[0]))
            return None
        if area and not self.is_region:
            return full[full["country"] == self.country]
        return full

    def validation_report(self) -> pd.DataFrame | None:
        """Errors and warnings found when validating the panel (None + notice if n/a)."""
        def compute() -> Any:
            with tempfile.TemporaryDirectory() as tmp:
                return validate_panel(self.params, Path(tmp))[1]
        try:
            return self._cached("validation_report", compute)
        except LookupError as exc:
            _show(self.unavailable(exc.args[0]))
            return None

    def macro(self) -> pd.DataFrame | None:
        try:
            return self._cached("macro", lambda: load_table(self.params, "macro"))
        except LookupError:
            return None

    def targets(self) -> pd.DataFrame | None:
        try:
            return self._cached("targets", lambda: load_table(self.params, "targets"))
        except LookupError:
            return None

    def indicators(self) -> pd.DataFrame | None:
        """Tidy indicator table for every area (disclosure applied), or None + notice."""
        def compute() -> Any:
            if engine_of(self.params) != "pandas":  # the engine reads the Parquet file
                return compute_indicators(self.params, None, self.macro())
            panel = self.panel(area=False)
            if panel is None:
                raise LookupError("io.read_panel")
            return compute_indicators(self.params, panel, self.macro())
        try:
            table, ignored = self._cached("indicators", compute)
        except LookupError as exc:
            _show(self.unavailable(exc.args[0]))
            return None
        self._note_ignored("indicators.compute", ignored)
        return table

    def progress(self) -> pd.DataFrame | None:
        """Progress-to-target assessment, or None + notice."""
        ind = self._memo.get("indicators")
        def compute() -> Any:
            table = self.indicators() if ind is None else ind[0]
            if table is None:
                raise LookupError("indicators.compute")
            return compute_progress(self.params, table, self.targets())
        try:
            table, ignored = self._cached("progress", compute)
        except LookupError as exc:
            _show(self.unavailable(exc.args[0]))
            return None
        self._note_ignored("progress.assess", ignored)
        return table

    def _note_ignored(self, fn: str, ignored: list[str]) -> None:
        """Say (once) which requested settings the library function does not take."""
        missing = set(ignored)
        for pair in (("dom_n", "dominance_n"), ("dom_k", "dominance_k")):
            if not set(pair) <= missing:  # one spelling was accepted
                missing -= set(pair)
        key = f"ignored:{fn}"
        if missing and key not in self._memo:
            self._memo[key] = True
            _show(display.notice(f"{fn} in this version does not take the setting(s) "
                                 f"{', '.join(sorted(missing))}; its defaults were used.",
                                 "warning"))

    # ---- outputs --------------------------------------------------------------------------
    def record(self, key: str, value: Any) -> None:
        """Store a headline number (or a dict/list of them) for results.json."""
        from msme_eval.cycle import _clean, dump_json

        self.results[key] = _clean(value)
        if self.output is not None:
            _write_text(dump_json(self.results), self.output / "results.json")

    def export_table(self, name: str, df: pd.DataFrame) -> None:
        """Save an aggregate (disclosure-protected) table for the CSV/Excel downloads."""
        if not _SAFE.match(name):
            raise ValueError(f"table name {name!r} must match {_SAFE.pattern}")
        if "firm_id" in df.columns:
            raise ValueError("refusing to export a table with firm_id: reports publish "
                             "aggregates only")
        if self.output is not None:
            _write_text(df.to_csv(index=False, lineterminator="\n"),
                        self.output / "tables" / f"{name}.csv")

    def collected(self) -> dict[str, dict[str, Any]]:
        """Headline numbers recorded by the cycle's other notebooks (the runner's fragments);
        empty when run on its own."""
        if self.output is None:
            return {}
        base = self.output.parents[1]
        out: dict[str, dict[str, Any]] = {}
        for frag in sorted(base.glob("*/*/results.json")):
            if frag.parent == self.output:
                continue
            out.setdefault(frag.parent.parent.name, {})[frag.parent.name] = \
                json.loads(frag.read_text(encoding="utf-8"))
        return out

    def parameters_table(self) -> display._HTML:
        """The effective parameters (paths shown by file name only)."""
        p = self.params
        rows = [
            ("Cycle", p.cycle), ("Area", self.area_name),
            ("Panel file", Path(p.panel).name),
            ("Macro file", Path(p.macro).name if p.macro else "none"),
            ("Targets file", Path(p.targets).name if p.targets else "none"),
            ("Baseline year", p.baseline_year), ("Target year", p.target_year),
            ("Reporting year", p.report_year or "latest year in the data"),
            ("Programme types", ", ".join(p.programme_types)),
            ("Disclosure", f"≥ {p.min_contributors} firms per cell; dominance rule "
                           f"(n={p.dominance_n}, k={p.dominance_k:.0%})"),
            ("Indicator engine", _ENGINE_LABELS.get(engine_of(p), engine_of(p))),
        ]
        return display.table(pd.DataFrame(rows, columns=["Parameter", "Value"]).astype(str),
                             caption="Parameters of this report")


def _show(obj: Any) -> None:
    try:
        from IPython.display import display as ipy_display
    except ImportError:  # pragma: no cover - outside Jupyter
        print(obj)
        return
    ipy_display(obj)
