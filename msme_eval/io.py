"""Reading inputs into validated, typed tables, and writing outputs atomically.

    panel = read_panel("data/raw/survey_2024.dta")      # csv, tsv, xlsx, dta, sav, parquet
    result = validate_file("data/raw/survey_2024.dta")  # + typed parquet and a JSON manifest

Every reader returns the contract dtypes (see `schema.PANEL_KINDS`) or raises one
`schema.DataValidationError` listing every problem (file, column, rule, rows, values, fix).
Row numbers are 1-based data rows: row 1 is the first record below the header.
Implausible-but-possible values are warnings (`schema.DataQualityWarning`), not errors.

Formats: CSV/TSV (UTF-8; delimiter , ; tab or | detected from the header line; the tokens in
`schema.NA_TOKENS` are missing), Excel .xlsx/.xlsm (first sheet unless `sheet=`), Stata .dta
and SPSS .sav/.zsav via pyreadstat (value labels applied, read as categories, then normalised
like any text), Parquet file or dataset folder (pyarrow).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import schema
from .schema import DataValidationError, ValidationReport, file_error

PathLike = str | os.PathLike
FORMATS: dict[str, str] = {
    ".csv": "CSV", ".tsv": "TSV", ".xlsx": "Excel", ".xlsm": "Excel", ".dta": "Stata",
    ".sav": "SPSS", ".zsav": "SPSS", ".parquet": "Parquet", ".pq": "Parquet",
}
_SPECS = {"panel": schema.PANEL_SPEC, "macro": schema.MACRO_SPEC, "targets": schema.TARGETS_SPEC}


# ---------------------------------------------------------------------------------------------
# Raw reading (file-level problems raise at once: there is nothing else to check)
# ---------------------------------------------------------------------------------------------
def _format_of(path: Path) -> str:
    if path.is_dir():
        if any(p.suffix.lower() in (".parquet", ".pq") for p in path.rglob("*") if p.is_file()):
            return "Parquet"
        raise file_error(str(path), "unknown_extension", ext="folder without .parquet files")
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise file_error(str(path), "unknown_extension", ext=ext or "(no extension)")
    return FORMATS[ext]


def _sniff_delimiter(path: Path) -> str:
    """The most frequent of , ; tab | in the header line (',' if none)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        header = fh.readline()
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_delimited(path: Path, fmt: str) -> pd.DataFrame:
    sep = "\t" if fmt == "TSV" else _sniff_delimiter(path)
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                           na_values=list(schema.NA_TOKENS), encoding="utf-8-sig",
                           quoting=csv.QUOTE_MINIMAL)
    except UnicodeDecodeError as exc:
        raise file_error(str(path), "not_utf8", detail=str(exc)[:200]) from None
    except pd.errors.EmptyDataError:
        raise file_error(str(path), "empty_file") from None


def _read_excel(path: Path, sheet: str | int | None) -> pd.DataFrame:
    book = pd.ExcelFile(path, engine="openpyxl")
    try:
        names = list(book.sheet_names)
        if sheet is None:
            name = names[0]
        elif isinstance(sheet, int) and not isinstance(sheet, bool) and 0 <= sheet < len(names):
            name = names[sheet]
        elif isinstance(sheet, str) and sheet in names:
            name = sheet
        else:
            raise file_error(str(path), "sheet_not_found", sheet=sheet,
                             available=", ".join(repr(n) for n in names))
        return pd.read_excel(book, sheet_name=name, dtype=object)
    finally:
        book.close()


def _read_stat(path: Path, fmt: str) -> pd.DataFrame:
    import pyreadstat

    reader = pyreadstat.read_dta if fmt == "Stata" else pyreadstat.read_sav
    df, _meta = reader(str(path), apply_value_formats=True, formats_as_category=True)
    return df


def read_raw(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None
             ) -> tuple[pd.DataFrame, str]:
    """Read a file as it is (no renaming or typing). Returns (frame, file label).

    Raises DataValidationError for a missing file (also a FileNotFoundError), unknown
    extension, empty or unreadable file, missing sheet."""
    if isinstance(path_or_df, pd.DataFrame):
        return path_or_df, "<DataFrame>"
    path = Path(path_or_df)
    label = str(path)
    if not path.exists():
        raise file_error(label, "file_not_found", cwd=os.getcwd())
    fmt = _format_of(path)
    if path.is_file() and path.stat().st_size == 0:
        raise file_error(label, "empty_file")
    if sheet is not None and fmt != "Excel":
        raise ValueError(f"sheet= only applies to Excel files, not to {fmt} ({label})")
    try:
        if fmt in ("CSV", "TSV"):
            df = _read_delimited(path, fmt)
        elif fmt == "Excel":
            df = _read_excel(path, sheet)
        elif fmt in ("Stata", "SPSS"):
            df = _read_stat(path, fmt)
        else:
            df = pd.read_parquet(path)
    except DataValidationError:
        raise
    except Exception as exc:  # any reader failure = the file is not valid `fmt`
        raise file_error(label, "unreadable_file", fmt=fmt,
                         detail=f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    return df, label


# ---------------------------------------------------------------------------------------------
# Public readers
# ---------------------------------------------------------------------------------------------
def _warn(report: ValidationReport) -> None:
    if not report.warnings.empty:
        lines = [i.message for i in report.issues if i.severity == "warning"]
        warnings.warn(schema.DataQualityWarning(
            f"{report.file}: {len(lines)} data-quality warning(s) ({schema.ROW_CONVENTION}):\n  - "
            + "\n  - ".join(lines)), stacklevel=3)


def _size_scheme(country_definitions: bool) -> str:
    return "legal" if country_definitions else "asean_harmonised"


def read_panel(path_or_df: PathLike | pd.DataFrame, *, country_definitions: bool = True,
               sheet: str | int | None = None) -> pd.DataFrame:
    """Read and validate a firm-year panel; return it with the contract dtypes.

    size_class, when absent, is derived by `sizeclass.classify` with each country's legal
    definition (`country_definitions=True`) or the ASEAN harmonised one (False).
    Raises DataValidationError listing every problem; warns (DataQualityWarning) about
    implausible values."""
    raw, label = read_raw(path_or_df, sheet=sheet)
    panel, report = schema.validate_panel(raw, file=label,
                                          size_scheme=_size_scheme(country_definitions))
    report.raise_for_errors()
    _warn(report)
    return panel


def read_macro(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None
               ) -> pd.DataFrame:
    """Read and validate the country-year macro table (country, year, gdp, exports_total,
    business_loans_total, employment_total, usd_per_lcu; values may be missing)."""
    return _read_table(path_or_df, "macro", sheet)


def read_targets(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None
                 ) -> pd.DataFrame:
    """Read and validate the targets table (indicator, country [ISO3 or ASEAN], baseline_year,
    baseline_value, target_year, target_value; one row per indicator and country)."""
    return _read_table(path_or_df, "targets", sheet)


def _read_table(path_or_df: PathLike | pd.DataFrame, table: str, sheet: str | int | None
                ) -> pd.DataFrame:
    raw, label = read_raw(path_or_df, sheet=sheet)
    df, report = schema.validate_table(raw, _SPECS[table], file=label)
    report.raise_for_errors()
    _warn(report)
    return df


# ---------------------------------------------------------------------------------------------
# Hashes, atomic writes, validate-and-store
# ---------------------------------------------------------------------------------------------
def sha256_file(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's raw bytes. For a folder (Parquet dataset): SHA-256 of the
    lines "<relative path> <sha256>" of its files in sorted order."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n"
                 for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: PathLike, writer: Callable[[Path], Any]) -> Path:
    """Write `path` all-or-nothing: `writer(tmp_path)` writes a temporary file in the same
    folder, which is then renamed over `path` (os.replace, atomic on POSIX and Windows).
    On any failure the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@dataclass
class ValidationResult:
    """Outcome of `validate_file`: the typed table (None if invalid), the report (errors and
    warnings), and where the table and its manifest were written (None if nothing written)."""

    panel: pd.DataFrame | None
    report: pd.DataFrame
    output_path: Path | None
    manifest_path: Path | None
    validation: ValidationReport | None = None

    @property
    def ok(self) -> bool:
        return self.panel is not None


def _version() -> str:
    from . import __version__
    return __version__


def validate_file(path: PathLike, out_dir: PathLike = "data/processed", *,
                  table: str = "panel", country_definitions: bool = True,
                  sheet: str | int | None = None, raise_on_error: bool = True
                  ) -> ValidationResult:
    """Validate `path`; if valid, write `<out_dir>/<stem>.parquet` (typed) and
    `<out_dir>/<stem>.manifest.json` (input name, SHA-256 of the input bytes, rows, columns,
    dtypes, warnings, msme_eval version, UTC time), each atomically. If invalid, write
    nothing and raise DataValidationError (or, with raise_on_error=False, return a result with
    panel/output_path/manifest_path None). `table` is "panel", "macro" or "targets"."""
    if table not in _SPECS:
        raise ValueError(f"table must be one of {sorted(_SPECS)}, not {table!r}")
    src = Path(path)
    try:
        raw, label = read_raw(src, sheet=sheet)
        if table == "panel":
            data, report = schema.validate_panel(
                raw, file=label, size_scheme=_size_scheme(country_definitions))
        else:
            data, report = schema.validate_table(raw, _SPECS[table], file=label)
        report.raise_for_errors()
    except DataValidationError as exc:
        if raise_on_error:
            raise
        return ValidationResult(None, exc.report, None, None, exc.validation)
    input_sha = sha256_file(src)
    stem = src.name if src.is_dir() else src.stem
    out_dir = Path(out_dir)
    out = out_dir / f"{stem}.parquet"
    manifest = out_dir / f"{stem}.manifest.json"
    if out.resolve() == src.resolve():
        raise ValueError(f"refusing to overwrite the input {src}: choose another out_dir")
    atomic_write(out, lambda tmp: data.to_parquet(tmp, index=False))
    info = {
        "input_file": src.name,
        "input_path": str(src),
        "input_sha256": input_sha,
        "table": table,
        "sheet": sheet,
        "output_file": out.name,
        "output_sha256": sha256_file(out),
        "rows": int(len(data)),
        "columns": [str(c) for c in data.columns],
        "dtypes": {str(c): str(t) for c, t in data.dtypes.items()},
        "size_scheme": _size_scheme(country_definitions) if table == "panel" else None,
        "n_warnings": int(len(report.warnings)),
        "warnings": report.warnings[["column", "rule", "n_rows"]].to_dict("records"),
        "msme_eval_version": _version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        atomic_write(manifest, lambda tmp: tmp.write_text(
            json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8"))
    except BaseException:
        out.unlink(missing_ok=True)  # a table without its manifest is not a valid output
        raise
    _warn(report)
    return ValidationResult(data, report.table, out, manifest, report)
