"""Typed cycle parameters: what a monitoring cycle and each of its notebooks may be given.

`CycleParams` (the runner's) and `NotebookParams` (what a template receives) are strict pydantic
models: an unknown or ill-typed parameter is an error naming the field, checked before anything
runs (papermill itself only warns: nteract/papermill#667, #818). Secrets are never parameters.

Inputs are explicit: when a cycle is given its own panel, the macro and targets tables must be
given too or declined (``macro: null`` / ``--no-macro``), so a real-data run never quietly uses
the synthetic sample's tables.
"""
from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from msme_eval import io, spark
from msme_eval.contract import AREAS, COUNTRIES, PROGRAMME_TYPES, REGION

__all__ = ["CycleError", "CycleParams", "NotebookParams", "load_params", "format_validation_error",
           "default_templates", "check_engine", "is_parquet", "SAMPLE_INPUTS"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
DEFAULT_KERNEL = "msme-eval"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SECRET_WORDS = re.compile(r"pass(word|wd)?|secret|token|credential|api_?key|auth|private_?key",
                           re.IGNORECASE)
# the embedded synthetic sample (`msme-eval sample` writes it): the defaults of a demo cycle
SAMPLE_INPUTS: dict[str, Path] = {
    "panel": Path("data/raw/sample/panel.parquet"),
    "macro": Path("data/raw/sample/macro.csv"),
    "targets": Path("data/raw/sample/targets.csv"),
}


def default_templates() -> Path:
    """The report templates: shipped inside the package (``msme_eval/templates`` in a wheel), or
    the repository's ``notebooks/`` folder in a source checkout (editable install)."""
    packaged = PACKAGE_DIR / "templates"
    return packaged if packaged.is_dir() else PROJECT_ROOT / "notebooks"


class CycleError(RuntimeError):
    """A cycle cannot start (bad parameters, missing input, missing kernel); exit code 2."""

    exit_code = 2


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
        if importlib.util.find_spec("duckdb") is None:
            raise CycleError("engine 'duckdb' needs the duckdb package. Fix: pip install "
                             "'msme-eval[scale]'")
    elif engine == "spark":
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
    weaker_disclosure: bool = Field(False, description="must be true to publish with thresholds "
                                    "weaker than DESIGN.md's (fewer than 3 firms, n < 2 or k > 85%); "
                                    "the pages then print the thresholds used")
    panel_options: dict[str, Any] = Field(
        default_factory=dict, description="how to read the panel file (io.ReadOptions): sheet, "
        "header_row, sep, decimal, thousands, encoding, true_words, false_words, missing_codes, "
        "codebook; what is not given is sniffed and reported")
    calibrated_to: Literal["strata"] | None = Field(
        None, description="'strata' when the survey weights are calibrated to the register's stratum "
        "counts (they add up to them in every stratum-year): variances then use the calibration "
        "residuals (GREG), so shares fixed by the calibration, e.g. K01, have SE 0; None = fixed weights")
    singleton: Literal["centre", "certainty", "fail"] = Field(
        "centre", description="strata with a single PSU: 'centre' (deviation from the grand mean of "
        "PSU totals, R survey.lonely.psu='adjust'), 'certainty' (self-representing, no variance) or "
        "'fail' (stop); validation lists such strata on the data-quality page")
    certainty: list[str] = Field(
        default_factory=list, description="labels of take-all strata (every firm enumerated, e.g. "
        "the large firms of a business survey): they add no variance and no degrees of freedom, "
        "whatever their PSUs, and 'singleton' applies to the other strata; 'THA|large' names one "
        "country's stratum")
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

    @field_validator("panel_options")
    @classmethod
    def _read_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - set(io.READ_OPTION_NAMES))
        if unknown:
            raise ValueError(f"unknown panel_options {unknown}; use {list(io.READ_OPTION_NAMES)}")
        if v.get("codebook") is not None:
            v = {**v, "codebook": str(_check_input_file(Path(v["codebook"]), "codebook"))}
        io.ReadOptions(**v)  # checks the values (e.g. sep is one character)
        return v

    @field_validator("programme_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        return _known_once(v, PROGRAMME_TYPES, "programme type", f"choose from {list(PROGRAMME_TYPES)}")

    @model_validator(mode="after")
    def _years_ordered(self) -> _DataParams:
        if self.baseline_year >= self.target_year:
            raise ValueError(f"baseline_year ({self.baseline_year}) must be before "
                             f"target_year ({self.target_year})")
        return self

    @model_validator(mode="after")
    def _disclosure_not_weaker_by_accident(self) -> _DataParams:
        weaker = [f"{name} {value} (default {default})" for name, value, default, bad in (
            ("min_contributors", self.min_contributors, 3, self.min_contributors < 3),
            ("dominance_n", self.dominance_n, 2, self.dominance_n < 2),
            ("dominance_k", self.dominance_k, 0.85, self.dominance_k > 0.85)) if bad]
        if weaker and not self.weaker_disclosure:
            raise ValueError("disclosure thresholds weaker than the defaults publish cells that could "
                             f"identify firms: {', '.join(weaker)}. Fix: keep the defaults, or set "
                             "weaker_disclosure: true to confirm (the pages then print the thresholds)")
        return self

    @model_validator(mode="after")
    def _calibration_in_memory(self) -> _DataParams:
        if self.calibrated_to is not None and self.engine != "pandas":
            raise ValueError(f"calibrated_to={self.calibrated_to!r} is computed by the pandas engine "
                             "only (its residual pass needs the rows in memory). Fix: engine: pandas, "
                             "or calibrated_to: null")
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
    templates_dir: PathParam = Field(default_factory=default_templates, description="folder of .ipynb templates")
    workers: int = Field(2, ge=1, le=64)
    timeout: float = Field(600.0, gt=0, description="wall-clock limit per notebook, seconds")
    kernel: str = Field(DEFAULT_KERNEL, description="Jupyter kernel name (installed kernelspec)")
    output_root: PathParam = Field(Path("reports"), description="where cycles are published")
    previous_cycle: str | None = Field(None, description="cycle to compare with; None = the "
                                                         "latest earlier cycle in output_root")
    country_impact: bool = Field(False, description="in a cycle with the region, also give each "
                                 "member state an impact page with its headline effects (each "
                                 "costs a few seconds); a run without the region always has them")

    @model_validator(mode="after")
    def _explicit_inputs(self) -> CycleParams:
        """Own panel -> macro and targets given or declined, never the sample's by default."""
        given = self.model_fields_set
        if "panel" not in given or self.panel.as_posix().endswith(SAMPLE_INPUTS["panel"].as_posix()):
            return self
        missing = [k for k in ("macro", "targets") if k not in given]
        if missing:
            raise ValueError(
                f"the panel is your own file ({self.panel.name}), so the synthetic "
                f"sample's {' and '.join(missing)} table(s) are not used for it. Fix: give "
                + " and ".join(f"--{k} FILE (cycle file: `{k}: path`)" for k in missing)
                + ", or decline with " + " ".join(f"--no-{k}" for k in missing)
                + " (cycle file: " + ", ".join(f"`{k}: null`" for k in missing) + "); the report "
                "then says which indicators or assessments that leaves out")
        return self

    @field_validator("countries")
    @classmethod
    def _known_areas(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("countries is empty; give at least one of " + " ".join(AREAS))
        return _known_once(v, AREAS, "country code", "use ISO 3166 alpha-3 codes of ASEAN members "
                           f"({' '.join(COUNTRIES)}) or {REGION!r}")

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


def _known_once(values: list[str], allowed: tuple[str, ...], what: str, hint: str) -> list[str]:
    """Every value allowed and none repeated, else a ValueError naming them."""
    unknown = [x for x in values if x not in allowed]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; {hint}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s repeated: {values}")
    return values


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


def load_params(file: str | os.PathLike[str] | None = None, *, declined: tuple[str, ...] = (),
                **overrides: Any) -> CycleParams:
    """Build `CycleParams` from a YAML file and/or keyword overrides (None values are ignored;
    the inputs named in ``declined``, e.g. ``("macro",)``, are set to None explicitly).

    Raises `CycleError` with a readable message for every problem at once.
    """
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
    data.update({k: None for k in declined})
    try:
        return CycleParams.model_validate(data)
    except ValidationError as exc:
        raise CycleError(format_validation_error(exc, source)) from None
