"""Reading inputs into validated, typed tables, and writing outputs atomically.

    panel = read_panel("data/raw/survey_2024.dta")      # csv, tsv, xlsx, dta, sav, parquet
    panel = read_panel("survei.csv", thousands=".", codebook="codebook.yaml")
    result = validate_file("data/raw/survey_2024.dta")  # + typed parquet and a JSON manifest

Every reader returns the contract dtypes (see `schema.PANEL_KINDS`) or raises one
`schema.DataValidationError` listing every problem (file, column, rule, rows, values, fix).
Row numbers are 1-based data rows: row 1 is the first record below the header.
Implausible-but-possible values are warnings (`schema.DataQualityWarning`), not errors.

Real files: `ReadOptions` (or the same names as keyword arguments of `read_panel`,
`validate_file`, `ingest.validate_to_dataset`) say how to read a file - header_row, sheet,
sep, decimal, thousands, encoding, true_words, false_words, missing_codes, codebook. What is
not said is sniffed, and every guess is a note (info) or warning in the report, never silent:
one-cell title lines above the header, the separator (, ; tab |), a decimal comma in a
';'-separated file, cp1252 when the text is not UTF-8. A number column that groups thousands
with '.' somewhere refuses values like "8.806" until thousands="." is declared; ASEAN yes/no
words (Ya/Tidak, Có/Không, ใช่/ไม่ใช่, Oo/Hindi) are read and noted; missing-value codes
(999, -99) are applied only when declared, and look-alikes far from the other values are
warned about. Excel files are read with openpyxl: error cells (#DIV/0!, #N/A, ...) and
formulas without a saved result are errors naming their rows. A codebook (YAML or Excel,
like ietoolkit's iecodebook) renames, recodes and labels columns before validation and is
recorded with its SHA-256 (`codebook_provenance`).

Formats: CSV/TSV, Excel .xlsx/.xlsm (first sheet unless `sheet=`), Stata .dta and SPSS
.sav/.zsav via pyreadstat (value labels applied, read as categories, then normalised like any
text), Parquet file or dataset folder (pyarrow).

Exports for spreadsheet users: `neutralise_formula` / `safe_frame` (CSV) and
`write_excel_safe` (text cells stored as text) keep "=..." text from running as a formula.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import __version__, schema
from .schema import DataValidationError, ValidationReport, file_error

PathLike = str | os.PathLike
FORMATS: dict[str, str] = {
    ".csv": "CSV", ".tsv": "TSV", ".xlsx": "Excel", ".xlsm": "Excel", ".dta": "Stata",
    ".sav": "SPSS", ".zsav": "SPSS", ".parquet": "Parquet", ".pq": "Parquet",
}
_SPECS = {"panel": schema.PANEL_SPEC, "macro": schema.MACRO_SPEC, "targets": schema.TARGETS_SPEC}


# ---------------------------------------------------------------------------------------------
# Read options (every guess is reported as an info/warning issue in the validation report)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadOptions:
    """How to read a real file. Every field defaults to "sniff and say so".

    sheet: Excel sheet name or 0-based index (first sheet if None).
    header_row: 1-based line (spreadsheet row) of the header; None = the first line, or the
        first line with 2+ filled cells when only one-cell title lines are above it (reported).
    sep: CSV separator; None = sniffed among , ; tab | (reported).
    decimal: "." or ","; None = "." ("," with thousands="."; for a ';'-separated file ","
        when its numbers show a decimal comma - reported).
    thousands: thousands mark (".", ",", " ", "'"); None = numbers are not grouped (a column
        that groups with '.' elsewhere then refuses values like "8.806").
    encoding: text encoding; None = UTF-8, else cp1252 (reported as a warning).
    true_words / false_words: extra yes/no words (defaults: English, Indonesian/Malay,
        Vietnamese, Thai, Filipino; see schema.DEFAULT_TRUE_WORDS).
    missing_codes: {column: codes} read as missing ("*" = every numeric column), e.g.
        {"employees": [999], "*": [-99]}; undeclared look-alikes only get a warning.
    codebook: YAML or Excel codebook applied before validation (see `read_codebook`)."""

    sheet: str | int | None = None
    header_row: int | None = None
    sep: str | None = None
    decimal: str | None = None
    thousands: str | None = None
    encoding: str | None = None
    true_words: tuple[str, ...] = ()
    false_words: tuple[str, ...] = ()
    missing_codes: Mapping[str, Sequence[float]] = field(default_factory=dict)
    codebook: PathLike | None = None

    def __post_init__(self) -> None:
        if self.header_row is not None and (not isinstance(self.header_row, int)
                                            or self.header_row < 1):
            raise ValueError(f"header_row must be a line number >= 1, not {self.header_row!r}")
        if self.sep is not None and (not isinstance(self.sep, str) or len(self.sep) != 1):
            raise ValueError(f"sep must be one character, not {self.sep!r}")
        for name in ("true_words", "false_words"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        self.parse_options(self.default_decimal)  # check decimal/thousands/words now

    @property
    def default_decimal(self) -> str:
        """The declared decimal mark; "," when thousands="." is declared; else "."."""
        return self.decimal or ("," if self.thousands == "." else ".")

    def parse_options(self, decimal: str) -> schema.ParseOptions:
        return schema.ParseOptions(decimal=decimal, thousands=self.thousands,
                                   true_words=self.true_words, false_words=self.false_words,
                                   missing_codes=self.missing_codes)


READ_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ReadOptions))


def read_options(options: ReadOptions | None = None, **kwargs: Any) -> ReadOptions:
    """`options` updated with keyword arguments (the ReadOptions field names); None values
    in kwargs are ignored, so CLI flags can be passed through as they are."""
    unknown = set(kwargs) - set(READ_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown read option(s) {sorted(unknown)}; use {READ_OPTION_NAMES}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    return replace(options or ReadOptions(), **given)


@dataclass
class RawRead:
    """A file read as it is: the frame, its label, what was sniffed or found while reading
    (issues, incl. errors such as Excel error cells), and the parse options to type it."""

    frame: pd.DataFrame
    label: str
    issues: list[schema.Issue]
    parse: schema.ParseOptions


_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_TEXT_NA = list(schema.NA_TOKENS)


def _decode(path: Path, label: str, encoding: str | None) -> tuple[str, list[schema.Issue]]:
    """The file's text: `encoding` if given, else UTF-8 (BOM allowed), else cp1252 (said)."""
    data = path.read_bytes()
    if encoding:
        try:
            return data.decode(encoding), []
        except (UnicodeDecodeError, LookupError) as exc:
            raise file_error(label, "unreadable_file", fmt=f"text in {encoding}",
                             detail=str(exc)[:200]) from None
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise file_error(label, "not_utf8", detail=str(exc)[:200]) from None
        at = len(data[:exc.start].decode("cp1252"))
        word = re.findall(r"[^\s,;|\t]+", text[max(0, at - 15): at + 15])
        example = next((w for w in word if any(ord(ch) > 127 for ch in w)), text[at])
        return text, [schema.make_issue(label, None, "encoding_guessed", encoding="cp1252",
                                        name="Windows Western European", example=example)]


def _sniff_sep(lines: list[str]) -> str:
    """The candidate of , ; tab | with the highest median count over the first lines."""
    lines = [ln for ln in lines if ln.strip()][:20]
    best, best_count = ",", 0.0
    for d in (",", ";", "\t", "|"):
        count = float(np.median([ln.count(d) for ln in lines])) if lines else 0.0
        if count > best_count:
            best, best_count = d, count
    return best


def _looks_like_header(row: Sequence[Any]) -> bool:
    cells = [c for c in row if c is not None and str(c).strip()]
    text = [c for c in cells if isinstance(c, str) and not re.fullmatch(r"[\d.,+\-\s]+", c)]
    return len(cells) >= 2 and len(text) >= 0.5 * len(cells)


def _header_index(rows: list[Sequence[Any]], header_row: int | None, label: str
                  ) -> tuple[int, list[schema.Issue]]:
    """0-based index of the header row and the issue saying how it was found."""
    if header_row is not None:
        if header_row > len(rows):
            raise file_error(label, "no_data_rows")
        return header_row - 1, [schema.make_issue(label, None, "header_row", line=header_row)]
    filled = [sum(1 for c in r if c is not None and str(c).strip()) for r in rows[:12]]
    for i, k in enumerate(filled):
        if k >= 2:
            if i == 0 or not _looks_like_header(rows[i]):
                return 0, []
            title = next((str(c).strip() for r in rows[:i] for c in r
                          if c is not None and str(c).strip()), "")
            return i, [schema.make_issue(label, None, "title_row_skipped", n=i, title=title,
                                         line=i + 1)]
    return 0, []


_COMMA_DECIMAL = re.compile(r"[+-]?\d+(?:\.\d{3})*,\d+")
_DOT_DECIMAL = re.compile(r"[+-]?\d+\.\d+")
_DOT_GROUPS = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+")


def sniff_decimal(df: pd.DataFrame, label: str, sep: str, opts: ReadOptions
                  ) -> tuple[str, list[schema.Issue]]:
    """The declared decimal mark; else, for a ';'-separated file, "," when some cells are
    decimal-comma numbers and no cell is a dot-decimal number (other than d.ddd, which may be
    a thousands group); else "."."""
    if opts.decimal is not None or opts.thousands in (".", ",") or sep != ";":
        return opts.default_decimal, []
    values = pd.unique(df.to_numpy(dtype=object).ravel())
    texts = [v.strip() for v in values if isinstance(v, str)]
    comma = [t for t in texts if _COMMA_DECIMAL.fullmatch(t)]
    dot = [t for t in texts if _DOT_DECIMAL.fullmatch(t) and not _DOT_GROUPS.fullmatch(t)]
    if comma and not dot:
        return ",", [schema.make_issue(label, None, "decimal_comma_sniffed", example=comma[0])]
    return ".", []


def text_layout(head: str, fmt: str, label: str, opts: ReadOptions
                ) -> tuple[str, int, list[str], list[schema.Issue]]:
    """Separator, 0-based header line, header names and what was sniffed, from the first
    lines of a delimited file (shared by `read_file` and `ingest`)."""
    lines = head.splitlines()[:40]
    sep = opts.sep or ("\t" if fmt == "TSV" else _sniff_sep(lines))
    issues = []
    if opts.sep is None and fmt != "TSV":
        issues.append(schema.make_issue(label, None, "separator_sniffed",
                                        sep_name=f"{_SEP_NAMES.get(sep, repr(sep))} ({sep!r})"))
    rows = list(csv.reader(_io.StringIO("\n".join(lines)), delimiter=sep))
    h, found = _header_index(rows, opts.header_row, label)
    names = rows[h] if h < len(rows) else []
    return sep, h, names, issues + found


def _read_delimited(path: Path, fmt: str, label: str, opts: ReadOptions) -> RawRead:
    text, issues = _decode(path, label, opts.encoding)
    if not text.strip():
        raise file_error(label, "empty_file")
    sep, h, _names, found = text_layout(text[:200_000], fmt, label, opts)
    issues += found
    try:
        df = pd.read_csv(_io.StringIO(text), sep=sep, skiprows=h, dtype=str,
                         keep_default_na=False, na_values=_TEXT_NA, quoting=csv.QUOTE_MINIMAL,
                         skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise file_error(label, "empty_file") from None
    decimal, sniffed = sniff_decimal(df, label, sep, opts)
    return RawRead(df, label, issues + sniffed, opts.parse_options(decimal))


def _sheet_name(names: list[str], sheet: str | int | None, label: str) -> str:
    if sheet is None:
        return names[0]
    if isinstance(sheet, int) and not isinstance(sheet, bool) and 0 <= sheet < len(names):
        return names[sheet]
    if isinstance(sheet, str) and sheet in names:
        return sheet
    raise file_error(label, "sheet_not_found", sheet=sheet,
                     available=", ".join(repr(n) for n in names))


def _excel_value(cell: Any) -> Any:
    v = cell.value
    if isinstance(v, float) and v.is_integer() and cell.data_type == "n":
        return int(v)  # as pandas.read_excel: 5.0 -> 5
    return v


def _excel_cells(path: Path, sheet: str | int | None, label: str
                 ) -> tuple[list[list[Any]], list[tuple[str, int, int, str]]]:
    """Cached cell values of the sheet (openpyxl data_only=True) and the problem cells:
    ("excel_error_cell", row, col, "#DIV/0!") and ("formula_without_value", row, col,
    "=A1/B1") found by reading the formulas too (data_only=False). Rows/cols 0-based."""
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        name = _sheet_name(list(book.sheetnames), sheet, label)
        rows, problems = [], []
        for r, row in enumerate(book[name].iter_rows()):
            values = []
            for c, cell in enumerate(row):
                if cell.data_type == "e":
                    problems.append(("excel_error_cell", r, c, str(cell.value)))
                    values.append(None)
                else:
                    values.append(_excel_value(cell))
            rows.append(values)
    finally:
        book.close()
    formulas = openpyxl.load_workbook(path, read_only=True, data_only=False)
    try:
        for r, row in enumerate(formulas[name].iter_rows(values_only=True)):
            for c, v in enumerate(row):
                if isinstance(v, str) and v.startswith("=") and r < len(rows) and (
                        c >= len(rows[r]) or rows[r][c] is None) and not any(
                        p[1:3] == (r, c) for p in problems if p[1] == r):
                    problems.append(("formula_without_value", r, c, v))
    finally:
        formulas.close()
    return rows, problems


def _excel_frame(rows: list[list[Any]], h: int) -> pd.DataFrame:
    """Header row h and the rows below it (trailing empty rows and unnamed empty columns
    dropped, as a spreadsheet user sees them)."""
    width = max((len(r) for r in rows), default=0)
    grid = [list(r) + [None] * (width - len(r)) for r in rows]
    body = grid[h + 1:]
    while body and all(v is None or (isinstance(v, str) and not v.strip()) for v in body[-1]):
        body.pop()
    names = [str(v).strip() if v is not None else f"Unnamed: {j}" for j, v in enumerate(grid[h])]
    df = pd.DataFrame(body, columns=names, dtype=object)
    keep = [j for j in range(width) if grid[h][j] is not None or df.iloc[:, j].notna().any()]
    return df.iloc[:, keep] if len(keep) < len(names) else df


def _read_excel(path: Path, label: str, opts: ReadOptions) -> RawRead:
    rows, problems = _excel_cells(path, opts.sheet, label)
    if not rows:
        raise file_error(label, "no_data_rows")
    h, issues = _header_index(rows, opts.header_row, label)
    df = _excel_frame(rows, h)
    header = [str(v).strip() if v is not None else f"Unnamed: {j}" for j, v in
              enumerate(rows[h] + [None] * (max(len(r) for r in rows) - len(rows[h])))]
    grouped: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for rule, r, c, value in problems:
        if r > h:  # 1-based data row = sheet row below the header
            grouped.setdefault((rule, header[c]), []).append((r - h, value))
    for (rule, column), cells in sorted(grouped.items()):
        rows_, values = zip(*sorted(cells))
        issues.append(schema.make_issue(label, column, rule, rows_, values,
                                        code=", ".join(sorted(set(values))),
                                        formula=values[0]))
    return RawRead(df, label, issues, opts.parse_options(opts.default_decimal))


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


def _read_stat(path: Path, fmt: str) -> pd.DataFrame:
    import pyreadstat

    reader = pyreadstat.read_dta if fmt == "Stata" else pyreadstat.read_sav
    df, _meta = reader(str(path), apply_value_formats=True, formats_as_category=True)
    return df


def read_file(path_or_df: PathLike | pd.DataFrame, options: ReadOptions | None = None
              ) -> RawRead:
    """Read a file as it is (no renaming or typing), with what was sniffed while reading.

    Raises DataValidationError for a missing file (also a FileNotFoundError), unknown
    extension, empty or unreadable file, missing sheet."""
    opts = options or ReadOptions()
    if isinstance(path_or_df, pd.DataFrame):
        given = [n for n in ("sheet", "header_row", "sep", "encoding") if getattr(opts, n)]
        if given:
            raise ValueError(f"{', '.join(given)} apply to files, not to a DataFrame")
        return RawRead(path_or_df, "<DataFrame>", [], opts.parse_options(opts.default_decimal))
    path = Path(path_or_df)
    label = str(path)
    if not path.exists():
        raise file_error(label, "file_not_found", cwd=os.getcwd())
    fmt = _format_of(path)
    if path.is_file() and path.stat().st_size == 0:
        raise file_error(label, "empty_file")
    if opts.sheet is not None and fmt != "Excel":
        raise ValueError(f"sheet= only applies to Excel files, not to {fmt} ({label})")
    if fmt not in ("CSV", "TSV", "Excel") and (opts.header_row or opts.sep or opts.encoding):
        raise ValueError(f"header_row/sep/encoding apply to CSV/TSV/Excel files, not to {fmt} "
                         f"({label})")
    try:
        if fmt in ("CSV", "TSV"):
            return _read_delimited(path, fmt, label, opts)
        if fmt == "Excel":
            return _read_excel(path, label, opts)
        df = _read_stat(path, fmt) if fmt in ("Stata", "SPSS") else pd.read_parquet(path)
    except DataValidationError:
        raise
    except Exception as exc:  # any reader failure = the file is not valid `fmt`
        raise file_error(label, "unreadable_file", fmt=fmt,
                         detail=f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    return RawRead(df, label, [], opts.parse_options(opts.default_decimal))


def read_raw(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None,
             options: ReadOptions | None = None) -> tuple[pd.DataFrame, str]:
    """Read a file as it is (no renaming or typing). Returns (frame, file label); see
    `read_file` for what was sniffed while reading."""
    raw = read_file(path_or_df, read_options(options, sheet=sheet))
    return raw.frame, raw.label


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


def validate_raw(raw: RawRead, table: str = "panel", *, country_definitions: bool = True,
                 codebook: PathLike | Codebook | None = None
                 ) -> tuple[pd.DataFrame, ValidationReport]:
    """Apply the codebook, then validate; the reading and codebook issues come first in the
    report. Never raises for data problems (see ValidationReport.raise_for_errors)."""
    if table not in _SPECS:
        raise ValueError(f"table must be one of {sorted(_SPECS)}, not {table!r}")
    frame, issues = raw.frame, list(raw.issues)
    labels: dict[str, str] = {}
    if codebook is not None:
        book = codebook if isinstance(codebook, Codebook) else read_codebook(codebook)
        frame, cb_issues = apply_codebook(frame, book, raw.label)
        issues += cb_issues
        labels = frame.attrs.get("column_labels", {})
    if table == "panel":
        data, report = schema.validate_panel(frame, file=raw.label, parse=raw.parse,
                                             size_scheme=_size_scheme(country_definitions))
    else:
        data, report = schema.validate_table(frame, _SPECS[table], file=raw.label,
                                             parse=raw.parse)
    report.issues[:0] = issues
    if labels:
        data.attrs["column_labels"] = {schema.normalise_column_name(k): v
                                       for k, v in labels.items()}
    return data, report


def read_panel(path_or_df: PathLike | pd.DataFrame, *, country_definitions: bool = True,
               sheet: str | int | None = None, options: ReadOptions | None = None,
               **read_kwargs: Any) -> pd.DataFrame:
    """Read and validate a firm-year panel; return it with the contract dtypes.

    size_class, when absent, is derived by `sizeclass.classify` with each country's legal
    definition (`country_definitions=True`) or the ASEAN harmonised one (False).
    `options` / keyword arguments: how to read the file (`ReadOptions` fields: header_row,
    sep, decimal, thousands, encoding, true_words, false_words, missing_codes, codebook).
    Raises DataValidationError listing every problem; warns (DataQualityWarning) about
    implausible values and guesses made while reading."""
    opts = read_options(options, sheet=sheet, **read_kwargs)
    panel, report = validate_raw(read_file(path_or_df, opts), "panel",
                                 country_definitions=country_definitions,
                                 codebook=opts.codebook)
    report.raise_for_errors()
    _warn(report)
    return panel


def read_macro(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None,
               options: ReadOptions | None = None, **read_kwargs: Any) -> pd.DataFrame:
    """Read and validate the country-year macro table (country, year, gdp, exports_total,
    business_loans_total, employment_total, usd_per_lcu; values may be missing)."""
    return _read_table(path_or_df, "macro", read_options(options, sheet=sheet, **read_kwargs))


def read_targets(path_or_df: PathLike | pd.DataFrame, *, sheet: str | int | None = None,
                 options: ReadOptions | None = None, **read_kwargs: Any) -> pd.DataFrame:
    """Read and validate the targets table (indicator, country [ISO3 or ASEAN], baseline_year,
    baseline_value, target_year, target_value; one row per indicator and country)."""
    return _read_table(path_or_df, "targets", read_options(options, sheet=sheet, **read_kwargs))


def _read_table(path_or_df: PathLike | pd.DataFrame, table: str, opts: ReadOptions
                ) -> pd.DataFrame:
    df, report = validate_raw(read_file(path_or_df, opts), table, codebook=opts.codebook)
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


def _options_record(opts: ReadOptions) -> dict[str, Any]:
    """The read options as given (JSON-friendly; the codebook path as text)."""
    return {f.name: (str(v) if f.name == "codebook" and v is not None else
                     dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple)
                     else v) for f in fields(ReadOptions) for v in [getattr(opts, f.name)]}


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
    return __version__


def validate_file(path: PathLike, out_dir: PathLike = "data/processed", *,
                  table: str = "panel", country_definitions: bool = True,
                  sheet: str | int | None = None, raise_on_error: bool = True,
                  options: ReadOptions | None = None, **read_kwargs: Any
                  ) -> ValidationResult:
    """Validate `path`; if valid, write `<out_dir>/<stem>.parquet` (typed) and
    `<out_dir>/<stem>.manifest.json` (input name, SHA-256 of the input bytes, read options,
    codebook and its SHA-256, rows, columns, dtypes, warnings and notes, msme_eval version,
    UTC time), each atomically. If invalid, write nothing and raise DataValidationError (or,
    with raise_on_error=False, return a result with panel/output_path/manifest_path None).
    `table` is "panel", "macro" or "targets"; `options` / keyword arguments as `read_panel`."""
    if table not in _SPECS:
        raise ValueError(f"table must be one of {sorted(_SPECS)}, not {table!r}")
    src = Path(path)
    opts = read_options(options, sheet=sheet, **read_kwargs)
    try:
        data, report = validate_raw(read_file(src, opts), table,
                                    country_definitions=country_definitions,
                                    codebook=opts.codebook)
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
        "sheet": opts.sheet,
        "read_options": _options_record(opts),
        "codebook": codebook_provenance(opts.codebook) if opts.codebook else None,
        "notes": report.table.loc[report.table["severity"] == "info",
                                  ["column", "rule", "message"]].to_dict("records"),
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


# ---------------------------------------------------------------------------------------------
# Codebook: rename, recode and label columns once (like ietoolkit's iecodebook)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Codebook:
    """A codebook read from YAML or Excel.

    YAML::

        columns:
          q1_emp: {rename: employees, label: "Employees at 31 December"}
          q7: {rename: owner_female, recode: {1: "yes", 2: "no"}}

    Excel: sheet ``columns`` (headers ``column``, ``rename``, ``label``) and optional sheet
    ``recode`` (headers ``column``, ``from``, ``to``; ``column`` is the name in the file).
    Recode keys match cell values written as text ("1", 1 and 1.0 all match 1)."""

    path: str
    sha256: str
    renames: dict[str, str]
    recodes: dict[str, dict[str, Any]]
    labels: dict[str, str]

    def describe(self) -> dict[str, Any]:
        """For provenance: file, SHA-256 and what the codebook does."""
        return {"codebook": Path(self.path).name, "path": self.path, "sha256": self.sha256,
                "renames": dict(self.renames),
                "recodes": {c: {str(k): v for k, v in m.items()} for c, m in self.recodes.items()},
                "labels": dict(self.labels)}


def _code_key(value: Any) -> str | None:
    """Recode key of a cell or codebook value: text, stripped; whole numbers without '.0'."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool):
        return str(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+(?:\.0*)?", text):   # 1, 1.0 and "1.0" are the code 1
        return str(int(float(text)))
    return text


def _codebook_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        cols = raw.get("columns") if isinstance(raw, dict) else None
        if not isinstance(cols, dict):
            raise ValueError(f"codebook {path}: expected a 'columns:' mapping of column -> "
                             "{rename:, recode:, label:}")
        columns = [{"column": str(k), **(v or {})} for k, v in cols.items()]
        recodes = [{"column": c["column"], "from": a, "to": b} for c in columns
                   for a, b in (c.get("recode") or {}).items()]
        return columns, recodes
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        sheets = pd.read_excel(path, sheet_name=None, dtype=object)
        if "columns" not in sheets:
            raise ValueError(f"codebook {path}: needs a sheet named 'columns' (column, rename, "
                             f"label); sheets found: {list(sheets)}")
        columns = sheets["columns"].astype(object).where(sheets["columns"].notna(), None)
        rec = sheets.get("recode", pd.DataFrame(columns=["column", "from", "to"]))
        rec = rec.astype(object).where(rec.notna(), None)
        return columns.to_dict("records"), rec.to_dict("records")
    raise ValueError(f"codebook {path}: use a .yaml/.yml or .xlsx file")


def read_codebook(path: PathLike) -> Codebook:
    """Read and check a codebook (see `Codebook` for the two formats)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"codebook not found: {path}")
    columns, recodes = _codebook_rows(path)
    renames, labels, maps = {}, {}, {}
    for c in columns:
        name = str(c.get("column") or "").strip()
        if not name:
            raise ValueError(f"codebook {path}: a row without 'column' ({c})")
        if c.get("rename"):
            renames[name] = str(c["rename"]).strip()
        if c.get("label"):
            labels[name] = str(c["label"]).strip()
    for r in recodes:
        key = _code_key(r.get("from"))
        if r.get("column") is None or key is None:
            raise ValueError(f"codebook {path}: recode rows need column and from ({r})")
        maps.setdefault(str(r["column"]).strip(), {})[key] = r.get("to")
    targets = list(renames.values())
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise ValueError(f"codebook {path}: several columns renamed to {dup}")
    return Codebook(str(path), sha256_file(path), renames, maps, labels)


def codebook_provenance(path: PathLike) -> dict[str, Any]:
    """The description and SHA-256 of a codebook file, for provenance.json."""
    return read_codebook(path).describe()


def apply_codebook(df: pd.DataFrame, codebook: Codebook, file: str
                   ) -> tuple[pd.DataFrame, list[schema.Issue]]:
    """Recode, then rename the columns of `df` (names as in the file); every step reported."""
    name = Path(codebook.path).name
    issues, out = [], df.copy()
    present = {str(c): c for c in df.columns}
    for col in sorted(set(codebook.renames) | set(codebook.recodes) | set(codebook.labels)):
        if col not in present:
            issues.append(schema.make_issue(file, col, "codebook_column_absent", name=name))
    recoded = []
    for col, mapping in codebook.recodes.items():
        if col not in present:
            continue
        keys = out[present[col]].map(_code_key)
        hit = keys.isin(list(mapping))
        unmapped = (keys.notna() & ~hit).reset_index(drop=True)
        if unmapped.any():
            r = np.flatnonzero(unmapped.to_numpy()) + 1
            issues.append(schema.make_issue(file, col, "codebook_unmapped_values", r,
                                            out[present[col]].to_numpy()[r[:schema.N_SHOW] - 1],
                                            n_rows=len(r)))
        out[present[col]] = out[present[col]].astype(object).where(
            ~hit, keys.map(lambda k, m=mapping: m.get(k)))
        recoded.append(f"{col} ({int(hit.sum())} cells)")
    out = out.rename(columns={present[c]: new for c, new in codebook.renames.items()
                              if c in present})
    detail = "; ".join(filter(None, [
        "renamed " + ", ".join(f"{a} -> {b}" for a, b in codebook.renames.items()
                               if a in present) if codebook.renames else "",
        "recoded " + ", ".join(recoded) if recoded else "",
        f"labels for {len(codebook.labels)} column(s)" if codebook.labels else ""]))
    issues.insert(0, schema.make_issue(file, None, "codebook_applied", name=name,
                                       sha=codebook.sha256[:12], detail=detail or "nothing"))
    out.attrs["column_labels"] = {codebook.renames.get(c, c): lab
                                  for c, lab in codebook.labels.items()}
    return out, issues


# ---------------------------------------------------------------------------------------------
# Safe spreadsheets: text that a spreadsheet would run as a formula
# ---------------------------------------------------------------------------------------------
FORMULA_TRIGGERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def _is_number_text(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return text.strip() == text


def neutralise_formula(value: Any) -> Any:
    """`value` with a leading ' when it is text a spreadsheet would run as a formula (starts
    with = + - @ tab or CR and is not a plain number); anything else unchanged. OWASP
    "CSV injection" guidance."""
    if isinstance(value, str) and value[:1] in FORMULA_TRIGGERS and not _is_number_text(value):
        return "'" + value
    return value


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` for CSV export: text cells and column names passed through
    `neutralise_formula`; numbers, dates and booleans unchanged."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            out[col] = s.map(neutralise_formula, na_action="ignore").astype(s.dtype)
    out.columns = [neutralise_formula(c) for c in out.columns]
    return out


def write_excel_safe(df: pd.DataFrame, path: PathLike, *, sheet_name: str = "data") -> Path:
    """Write `df` to .xlsx with every text cell stored as text (openpyxl data_type "s"), so a
    value like "=HYPERLINK(...)" is shown, never run. Written atomically."""
    import openpyxl

    def write(tmp: Path) -> None:
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.title = sheet_name
        sheet.append([str(c) for c in df.columns])
        for row in df.itertuples(index=False):
            sheet.append([None if (not isinstance(v, str) and pd.isna(v)) else
                          (v.item() if hasattr(v, "item") else v) for v in row])
        for row in sheet.iter_rows():
            for cell in row:
                if isinstance(cell.value, str):
                    cell.data_type = "s"
        book.save(tmp)

    return atomic_write(path, write)
