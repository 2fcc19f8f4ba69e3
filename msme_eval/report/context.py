"""What a report notebook works with: checked parameters, shared data, and result outputs.

`msme_eval.cycle.notebook_context` returns a `NotebookContext`. It loads the validated panel
(from the runner's cache when present, else by calling `msme_eval.io.read_panel`), computes or
loads the shared tables, and writes the notebook's headline numbers (`record`) and tables
(`export_table`) where the runner collects them. The indicator table is computed by the
cycle's ``engine``: from the validated panel (pandas) or from the Parquet panel file through
DuckDB or Spark (`compute_indicators`), with the same arguments and the same numbers.

Templates import the library directly (``import msme_eval as me``): a renamed or failing
function fails the notebook, which the runner marks failed; nothing degrades silently.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

import msme_eval
from msme_eval import impact, indicators, io, plausibility, progress, spark
from msme_eval.contract import COUNTRIES, REGION, area_name
from msme_eval.impact.evaluate import combine
from msme_eval.report import display, protect
from msme_eval.report.params import CycleError, NotebookParams, format_validation_error
from msme_eval.report.records import clean, dump_json

_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
# breakdown / group labels meaning "no breakdown" in a tidy indicator table
TOTAL_LABELS = {"", "total", "_t", "_z", "all", "none", "nan", "<na>"}


def is_total(value: Any) -> bool:
    """True for the 'no breakdown' label of a tidy indicator table."""
    return pd.isna(value) or str(value).strip().lower() in TOTAL_LABELS


def disclosure_kwargs(params: Any) -> dict[str, Any]:
    """The cycle's disclosure thresholds as `indicators.compute` takes them."""
    return {"min_contributors": params.min_contributors, "dominance_n": params.dominance_n,
            "dominance_k": params.dominance_k}


def _write_pickle(obj: Any, path: Path) -> None:
    io.atomic_write(path, lambda tmp: pd.to_pickle(obj, tmp))


def _write_text(text: str, path: Path) -> None:
    io.atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Shared computations (used by the runner's cache and by notebooks without a cache)
# --------------------------------------------------------------------------------------------
def read_options(params: Any) -> io.ReadOptions:
    """How the cycle reads its panel file (`panel_options`; sniffed where not given)."""
    return io.ReadOptions(**getattr(params, "panel_options", {}))


def load_panel(params: Any) -> pd.DataFrame:
    return io.read_panel(params.panel, options=read_options(params))


def validate_panel(params: Any, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(typed panel, validation report with warnings) via `io.validate_file`."""
    res = io.validate_file(params.panel, out_dir=out_dir, options=read_options(params))
    return res.panel, res.report


def load_table(params: Any, kind: str) -> pd.DataFrame | None:
    """The macro or targets table of the cycle, None when the cycle declined it."""
    path = getattr(params, kind)
    if path is None:
        return None
    return io.read_macro(path) if kind == "macro" else io.read_targets(path)


INDICATOR_BREAKDOWNS = ("size_class", "owner_female")
_ENGINE_LABELS = {"pandas": "pandas (in memory)", "duckdb": "DuckDB (Parquet, out of core)",
                  "spark": "Spark (Parquet)"}


def engine_of(params: Any) -> str:
    """The cycle's indicator engine ("pandas" for parameter objects that predate it)."""
    return getattr(params, "engine", None) or "pandas"


def compute_indicators(params: Any, panel: pd.DataFrame | None,
                       macro: pd.DataFrame | None, *, spark_session: Any = None
                       ) -> pd.DataFrame:
    """All indicators by country-year, with the report's breakdowns and ASEAN aggregate,
    disclosure control always on.

    ``params.engine`` picks the source handed to ``indicators.compute`` (same arguments
    whatever the engine): "pandas" the validated in-memory ``panel``; "duckdb" the Parquet
    panel *path* (read out of core); "spark" ``spark.read.parquet(path)`` on
    ``spark_session`` (default: `msme_eval.spark.session()`, from the environment). ``panel``
    is not used (and may be None) for duckdb and spark.
    """
    engine = engine_of(params)
    source: Any
    if engine == "pandas":
        source = panel
    elif engine == "duckdb":
        source = str(params.panel)
    elif engine == "spark":
        session = spark.session() if spark_session is None else spark_session
        source = spark.read_parquet(session, params.panel)
    else:
        raise ValueError(f"unknown engine {engine!r}; use pandas, duckdb or spark")
    return indicators.compute(source, macro, by=("country", "year"), breakdowns=INDICATOR_BREAKDOWNS,
                              aggregate=True, disclosure=True, singleton=params.singleton,
                              certainty=params.certainty, calibrated_to=params.calibrated_to,
                              **disclosure_kwargs(params))


def _compute_shared_indicators(params: Any, panel: pd.DataFrame | None,
                               macro: pd.DataFrame | None) -> pd.DataFrame:
    """`compute_indicators` for the runner's cache: a Spark session started here is stopped
    afterwards (the notebooks then only read the cached table, no JVM each)."""
    if engine_of(params) != "spark":
        return compute_indicators(params, panel, macro)
    with spark.scoped_session() as session:
        return compute_indicators(params, panel, macro, spark_session=session)


def compute_progress(params: Any, table: pd.DataFrame, targets: pd.DataFrame | None
                     ) -> pd.DataFrame | None:
    """Progress to the targets whose target year is the cycle's ``target_year`` (a targets
    file may hold several horizons); None when the cycle has no targets for that year."""
    if targets is None:
        return None
    if "target_year" in targets.columns:
        targets = targets[targets["target_year"] == params.target_year]
    if targets.empty:
        return None
    return progress.assess(table, targets)


def check_plausibility(params: Any, panel: pd.DataFrame, tables: Mapping[str, pd.DataFrame | None]
                       ) -> pd.DataFrame:
    """Cross-table checks (`plausibility.check_inputs`): errors stop the cycle before any
    notebook runs (`DataValidationError`); warnings join the validation report."""
    files = {k: Path(getattr(params, k)).name for k in ("macro", "targets") if getattr(params, k)}
    checked = plausibility.check_inputs(panel, tables["macro"], tables["targets"], files=files,
                                        singleton=params.singleton,
                                        certainty=params.certainty)
    checked.raise_for_errors()
    return checked.table


def build_cache(params: Any, cache: Path) -> list[str]:
    """Validate the inputs once and store the shared tables for every notebook of a cycle
    (`cache_inputs`, then `cache_shared_tables`).

    Data errors (`DataValidationError`) propagate: no notebook should run on invalid data.
    Returns notes for the run log.
    """
    notes, tables = cache_inputs(params, cache)
    return notes + cache_shared_tables(params, cache, tables)


def cache_inputs(params: Any, cache: Path) -> tuple[list[str], dict[str, pd.DataFrame | None]]:
    """The validated panel, its validation report (with the cross-table checks) and the macro and
    targets tables, stored in ``cache``: all that the impact fits read. Returns (notes for the run
    log, {"panel", "macro", "targets"}). Data errors (`DataValidationError`) propagate."""
    notes: list[str] = []
    cache.mkdir(parents=True, exist_ok=True)
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
    tables = {kind: load_table(params, kind) for kind in ("macro", "targets")}
    report = pd.concat([report, check_plausibility(params, panel, tables)], ignore_index=True)
    _write_pickle(report, cache / "validation_report.pkl")
    _write_pickle(panel, cache / "panel.pkl")
    for kind, table in tables.items():
        _write_pickle(table, cache / f"{kind}.pkl")
        if table is None:
            notes.append(f"no {kind} table in this cycle (declined)")
    return notes, {"panel": panel, **tables}


def cache_shared_tables(params: Any, cache: Path, tables: Mapping[str, pd.DataFrame | None]
                        ) -> list[str]:
    """The indicator table (by the cycle's engine) and progress to target, stored in ``cache``
    from `cache_inputs`' ``tables``. A failure is a note, not an error: each indicator notebook
    then computes the table itself and shows the error."""
    try:
        ind = _compute_shared_indicators(params, tables["panel"], tables["macro"])
    except Exception as exc:  # noqa: BLE001 - each indicator notebook retries and shows the error
        return [f"indicators failed in the shared step ({type(exc).__name__}: {exc}); "
                "each notebook retries and reports it"]
    _write_pickle(ind, cache / "indicators.pkl")
    _write_pickle(compute_progress(params, ind, tables["targets"]), cache / "progress.pkl")
    return []


# --------------------------------------------------------------------------------------------
# Impact fits: split into independent calls, run by the runner's workers, cached by a key
# --------------------------------------------------------------------------------------------
IMPACT_DIR = "impact"
# depth of an area's impact page: "full" (headline, robustness, inclusion) or "headline"
IMPACT_PLAN_FILE = "impact_plan.json"
_KEY_INPUTS = ("panel", "macro", "codebook")  # the files an impact estimate reads


def impact_calls(programme_types: Sequence[str], depth: str = "full") -> list[dict[str, Any]]:
    """The independent `impact.evaluate` calls that together give
    ``evaluate(data, programme_type=programme_types, macro=macro)`` (joined by
    `msme_eval.impact.evaluate.combine`).

    ``depth="full"``: one call per programme type (its headline, event studies, jobs, robustness and
    inclusion rows depend only on that type's sample), so each fit runs exactly once and the types
    run in parallel; `combine` recomputes what depends on every headline test at once (Holm).
    ``depth="headline"``: one call for the headline effects of every type (no robustness, no
    inclusion).
    """
    if depth not in ("full", "headline"):
        raise ValueError(f"impact depth {depth!r}: use 'full' or 'headline'")
    if depth == "headline":
        return [{"programme_type": list(programme_types), "subgroups": [], "robustness": False}]
    return [{"programme_type": [pt]} for pt in programme_types]


def code_fingerprint() -> str:
    """SHA-256 of the impact package's source and the msme_eval version: a changed estimator
    never reads an estimate cached by the old one."""
    h = hashlib.sha256(msme_eval.__version__.encode())
    for path in sorted(Path(impact.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def impact_key(inputs: Mapping[str, str], params: Any, area: str, call: Mapping[str, Any],
               code: str | None = None) -> str:
    """Cache key of one impact call: SHA-256 over the input files' SHA-256 (``inputs``: role ->
    hash), the parameters that shape the validated panel, the area, the call's arguments and the
    estimator's code (``code``, default `code_fingerprint`; the runner takes it once, at the start,
    as it hashes the inputs). Any changed byte or parameter gives another key."""
    payload = {"inputs": {k: inputs.get(k) for k in _KEY_INPUTS},
               "panel_options": getattr(params, "panel_options", {}),
               "area": area, "call": dict(call), "code": code or code_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def input_hashes(params: Any) -> dict[str, str]:
    """SHA-256 of the files an impact estimate reads (`io.sha256_file`)."""
    paths = {"panel": params.panel, "macro": params.macro,
             "codebook": (getattr(params, "panel_options", None) or {}).get("codebook")}
    return {k: io.sha256_file(p) for k, p in paths.items() if p is not None}


def area_rows(panel: pd.DataFrame, area: str) -> pd.DataFrame:
    """The panel rows of ``area`` (all rows for the region)."""
    return panel if area == REGION else panel[panel["country"] == area]


def supported_types(panel: pd.DataFrame, wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """(requested programme types with supported firms in ``panel``, those without)."""
    wanted = list(wanted)
    if "programme_type" not in panel or "first_treated" not in panel:
        return [], wanted
    have = set(panel.loc[panel["first_treated"].notna(), "programme_type"].dropna().astype(str))
    return [t for t in wanted if t in have], [t for t in wanted if t not in have]


def run_impact_call(cache_dir: str, area: str, call: dict[str, Any], key: str) -> str:
    """Compute one impact call on the cached panel of ``area`` and store it as
    ``<cache>/impact/<key>.pkl`` (what the runner's workers execute). Returns the path."""
    cache = Path(cache_dir)
    panel = area_rows(pd.read_pickle(cache / "panel.pkl"), area)
    macro = pd.read_pickle(cache / "macro.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = impact.evaluate(panel, macro=macro, **call)
    path = cache / IMPACT_DIR / f"{key}.pkl"
    _write_pickle(ev, path)
    return str(path)


def plan_impact(params: Any, cache: Path, areas: Sequence[str], lead: Sequence[str],
                inputs: Mapping[str, str]) -> list[tuple[str, dict[str, Any], str]]:
    """The impact calls of a cycle as (area, call, key), written with each area's page depth to
    ``<cache>/impact_plan.json``: the lead areas get the full analysis, the others the headline
    effects only. Areas without supported firms get no call (their page says so)."""
    panel = pd.read_pickle(cache / "panel.pkl")
    plan: dict[str, str] = {}
    code = code_fingerprint()
    calls: list[tuple[str, dict[str, Any], str]] = []
    for area in areas:
        types, _ = supported_types(area_rows(panel, area), params.programme_types)
        plan[area] = "full" if area in lead else "headline"
        for call in impact_calls(types, plan[area]) if types else []:
            calls.append((area, call, impact_key(inputs, params, area, call, code)))
    _write_text(json.dumps({"depth": plan, "inputs": dict(inputs), "code": code}, sort_keys=True),
                cache / IMPACT_PLAN_FILE)
    return calls


def notebook_context(namespace: Mapping[str, Any], before: Iterable[str] = ()) -> NotebookContext:
    """Check a notebook's parameters and return its `NotebookContext`.

    Call it in the cell after the parameters cell as
    ``ctx = me.cycle.notebook_context(globals(), _before)`` where ``_before`` is
    ``set(globals())`` taken just before the parameters cell: every name defined since then
    (the defaults and papermill's injected parameters) must be a `NotebookParams` field, so an
    unknown or ill-typed parameter stops the notebook here with a clear message.
    """
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
        """The area this page covers, named as the data allow: "ASEAN" only when all ten member
        states are in the panel, else "ASEAN member states in the data: Thailand, Viet Nam"."""
        if not self.is_region:
            return area_name(self.country)
        present = [c for c in COUNTRIES if c in set(self.panel(area=False)["country"].unique())]
        if len(present) == len(COUNTRIES):
            return "ASEAN (all member states)"
        return "ASEAN member states in the data: " + ", ".join(area_name(c) for c in present)

    def __repr__(self) -> str:
        return f"NotebookContext(cycle={self.params.cycle!r}, country={self.country!r})"

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
    def panel(self, *, area: bool = True) -> pd.DataFrame:
        """The validated panel (this country's rows when ``area`` and not the region)."""
        full = self._cached("panel", lambda: load_panel(self.params))
        if area and not self.is_region:
            return full[full["country"] == self.country]
        return full

    def validation_report(self) -> pd.DataFrame:
        """Errors and warnings found when validating the panel."""
        def compute() -> Any:
            with tempfile.TemporaryDirectory() as tmp:
                return validate_panel(self.params, Path(tmp))[1]
        return self._cached("validation_report", compute)

    def macro(self) -> pd.DataFrame | None:
        """The macro table, None when the cycle declined it."""
        return self._cached("macro", lambda: load_table(self.params, "macro"))

    def targets(self) -> pd.DataFrame | None:
        """The targets table, None when the cycle declined it."""
        return self._cached("targets", lambda: load_table(self.params, "targets"))

    def indicators(self) -> pd.DataFrame:
        """Tidy indicator table for every area (disclosure applied)."""
        def compute() -> Any:
            panel = None if engine_of(self.params) != "pandas" else self.panel(area=False)
            return compute_indicators(self.params, panel, self.macro())
        return self._cached("indicators", compute)

    def progress(self) -> pd.DataFrame | None:
        """Progress-to-target assessment; None (after saying why) when there are no targets."""
        table = self._cached("progress", lambda: compute_progress(self.params, self.indicators(),
                                                                  self.targets()))
        if table is None and "progress-notice" not in self._memo:
            self._memo["progress-notice"] = True
            why = ("this cycle has no targets table (declined)" if self.params.targets is None
                   else f"the targets table has no target for {self.params.target_year}")
            _show(display.notice(f"Progress to target is not assessed: {why}.", "warning"))
        return table

    # ---- published tables beyond the indicators (disclosure applied: report.protect) ---------
    def rules(self) -> protect.Rules:
        """The cycle's disclosure thresholds."""
        p = self.params
        return protect.Rules(p.min_contributors, p.dominance_n, p.dominance_k)

    def programme_counts(self) -> pd.DataFrame:
        """Supported firms per programme in this area, suppressed as the whole hierarchy needs
        (a country's count is never recoverable as the ASEAN count minus the others)."""
        table = self._cached("programme_counts", lambda: protect.programme_counts(
            self.panel(area=False), rules=self.rules()))
        return table[table["area"] == self.country].drop(columns="area").reset_index(drop=True)

    def impact_plan(self) -> dict[str, Any]:
        """The runner's impact plan (``impact_plan.json``): page depth per area and the input
        hashes; empty without a runner cache."""
        path = self.cache / IMPACT_PLAN_FILE if self.cache else None
        if path is None or not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def impact_depth(self) -> str:
        """"full" (headline, robustness, inclusion) or "headline" (the runner's choice for a
        member state when the region leads the cycle); "full" when run on its own."""
        return self.impact_plan().get("depth", {}).get(self.country, "full")

    def impact(self, programme_types: list[str]) -> tuple[Any, dict[str, pd.DataFrame]]:
        """`impact.evaluate` on this area's panel (at `impact_depth`) and the publishable
        (protected) tables. In a cycle the estimates come from the runner's cache
        (`run_impact_call`, found by `impact_key`); a call missing there is computed here."""
        def compute() -> Any:
            data = self.panel()
            ev = self._evaluate(data, list(programme_types))
            return ev, protect.impact_tables(ev, data, rules=self.rules())
        return self._cached(f"impact-{self.country}", compute)

    def _evaluate(self, data: pd.DataFrame, types: list[str]) -> Any:
        plan = self.impact_plan()
        if not plan:  # on its own: the one reference call
            return impact.evaluate(data, programme_type=types, macro=self.macro())
        parts = []
        for call in impact_calls(types, self.impact_depth()):
            key = impact_key(plan["inputs"], self.params, self.country, call, plan["code"])
            path = self.cache / IMPACT_DIR / f"{key}.pkl"
            if not path.exists():
                run_impact_call(str(self.cache), self.country, call, key)
            parts.append(pd.read_pickle(path))
        return combine(parts)

    # ---- outputs --------------------------------------------------------------------------
    def record(self, key: str, value: Any) -> None:
        """Store a headline number (or a dict/list of them) for results.json."""
        self.results[key] = clean(value)
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
            ("Programme types", ", ".join(display.value_label(t) for t in p.programme_types)),
            ("Disclosure", f"≥ {p.min_contributors} firms per cell; dominance rule "
                           f"(n={p.dominance_n}, k={p.dominance_k:.0%})"
                           + ("; WEAKER than the defaults (3 firms; n=2, k=85%), confirmed by the "
                              "evaluator" if p.weaker_disclosure else "")),
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
