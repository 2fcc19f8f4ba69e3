"""The firm-year panel data contract (DESIGN.md section 3) and its validation.

Column names, types and the rules every input must satisfy live here; `io.read_panel`
reads a file and hands the frame to `validate_panel`, which collects *every* problem
into one `DataValidationError`.
"""
from __future__ import annotations

import math
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

with warnings.catch_warnings():  # pandera imports pyspark.pandas when pyspark is installed (the
    # spark extra) -- at import and, through its built-in checks, at the first validation -- which
    # warns about pandas >= 3 for a module msme-eval does not use
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support", category=FutureWarning)
    import pandera.backends.pandas.builtin_checks  # noqa: F401
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

from msme_eval import sizeclass
from msme_eval.contract import (  # noqa: F401  (re-exported: the column vocabulary)
    AGGREGATE_AREA,
    ASEAN,
    BOOL_COLUMNS,
    BOOL_FALSE,
    BOOL_TRUE,
    COLUMN_ALIASES,
    COUNTRIES,
    COUNTRY_ALIASES,
    ISIC_SECTIONS,
    MACRO_COLUMNS,
    MACRO_KINDS,
    MACRO_REQUIRED,
    MONEY_COLUMNS,
    MSME_CLASSES,
    N_SHOW,
    NA_TOKENS,
    OPTIONAL_COLUMNS,
    PANEL_COLUMNS,
    PANEL_KINDS,
    PANEL_NOT_NULL,
    PROGRAMME_TYPES,
    REGISTER_COLUMNS,
    REQUIRED_COLUMNS,
    ROW_CONVENTION,
    SIZE_CLASS_DTYPE,
    SIZE_CLASSES,
    TARGET_COLUMNS,
    TARGET_KINDS,
    YEAR_MAX,
    YEAR_MIN,
    country_key,
)

# Warning thresholds (implausible, not impossible, values).
MAX_PLAUSIBLE_EMPLOYEES = 100_000
TURNOVER_PER_EMPLOYEE_FACTOR = 1_000   # row vs country-year median turnover per employee
CURRENCY_JUMP_FACTOR = 100             # country median turnover/employee between years
CURRENCY_CLUSTER_FACTOR = 100          # rows this far from the country-year median ...
CURRENCY_CLUSTER_SHARE = 0.05          # ... making up at least this share (and >= 3 rows)
WEIGHT_DEFF_MAX = 10.0                 # Kish 1 + CV^2 of weights within a country-year
MIN_PLAUSIBLE_BIRTH_YEAR = 1900
MIN_GROUP_FOR_STATS = 5                # country-year cells smaller than this are not screened


# ---------------------------------------------------------------------------------------------
# Problems, reports and the exception
# ---------------------------------------------------------------------------------------------
# rule -> (severity, what is wrong, how to fix it). Templates use {column} and rule-specific keys.
RULES: dict[str, tuple[str, str, str]] = {
    # file level
    "file_not_found": ("error", "file not found", "check the path and file name (the path is "
                       "resolved from the working directory {cwd})"),
    "unknown_extension": ("error", "unknown file type '{ext}'", "save the data as .csv, .tsv, "
                          ".xlsx, .dta, .sav or .parquet (a Parquet dataset may be a folder)"),
    "empty_file": ("error", "the file is empty (0 bytes)", "re-export the data; the file has no "
                   "content at all"),
    "no_data_rows": ("error", "the file has no data rows", "check that the right file/sheet was "
                     "exported and that the data are below a single header row"),
    "unreadable_file": ("error", "cannot be read as {fmt}: {detail}", "check that the file is a "
                        "valid, complete {fmt} file: open it in the program that produced it and "
                        "save/export it again"),
    "not_utf8": ("error", "the text is not UTF-8 encoded ({detail})", "save the file as 'CSV UTF-8'"
                 " (Excel: File > Save As > CSV UTF-8), or pass its encoding (e.g. "
                 "encoding='cp1252')"),
    "sheet_not_found": ("error", "sheet {sheet!r} not found; available sheets: {available}",
                        "pass sheet= one of: {available}"),
    # columns
    "missing_column": ("error", "required column '{column}' is missing (columns found: {found})",
                       "add the column '{column}'{aliases}"),
    "duplicate_column": ("error", "several input columns map to '{column}': {sources}",
                         "keep only one of {sources}, or rename the others"),
    "unknown_column": ("warning", "column '{column}' is not part of the data contract and is kept "
                       "unchanged", "rename it if it was meant to be a contract column ({hint})"),
    # types
    "missing_value": ("error", "{column} is required but missing", "fill in {column} or remove "
                      "those rows from the file"),
    "not_a_number": ("error", "{column} must be a number but contains text", "write plain numbers: "
                     "no units or currency signs; leave the cell empty if unknown. If the file "
                     "groups thousands or uses a decimal comma, say so when reading: "
                     "thousands=',' / thousands='.' / decimal=','"),
    "not_whole_number": ("error", "{column} must be a whole number", "{column} counts or dates "
                         "years: round or correct these values"),
    "not_finite": ("error", "{column} is infinite", "replace infinite values by the true value or "
                   "leave the cell empty"),
    "not_boolean": ("error", "{column} must be yes/no, true/false or 1/0",
                    "recode {column} to yes/no (or 1/0); leave it empty if unknown"),
    "not_text": ("error", "{column} must be a text code or a whole number",
                 "store {column} as text"),
    "respelled": ("info", "{column} values written in an accepted variant were rewritten to "
                  "the contract's spelling", "none needed"),
    "size_class_not_derived": ("error", "size_class is absent and could not be derived with "
                               "scheme {scheme!r}: {detail}", "add a size_class column "
                               "(micro/small/medium/large) or supply the columns the size "
                               "definition needs"),
    "size_class_undetermined": ("error", "size_class is absent and the {scheme!r} size "
                                "definition cannot classify these rows", "fill in the columns the "
                                "definition needs (employees, turnover, assets) or add size_class"),
    # values (errors)
    "unknown_country": ("error", "country is not an ASEAN member state",
                        "use an ISO 3166 code (alpha-3 like VNM, or alpha-2 like VN) or an English "
                        "name of: {allowed}"),
    "unknown_area": ("error", "country is neither an ASEAN member state nor 'ASEAN'",
                     "use an ISO 3166 alpha-3 code of a member state ({allowed}) or ASEAN"),
    "year_out_of_range": ("error", "{column} is outside {lo}-{hi}", "correct {column}: four-digit "
                          "calendar year between {lo} and {hi}"),
    "unknown_sector": ("error", "sector is not an ISIC Rev.4 section letter A-U",
                       "map the activity code to its ISIC Rev.4 section letter (e.g. C for "
                       "manufacturing, G for trade)"),
    "negative_employees": ("error", "employees is negative", "employees is a headcount and must "
                           "be >= 0 (0 for an own-account firm without employees): correct it"),
    "negative_amount": ("error", "{column} is negative", "{column} is an amount in local currency "
                        "and must be >= 0; correct it or leave the cell empty if unknown"),
    "unknown_size_class": ("error", "size_class is not one of micro/small/medium/large",
                           "recode size_class to micro, small, medium or large, or drop the "
                           "column to derive it from employees/turnover/assets"),
    "weight_not_positive": ("error", "weight is zero or negative", "survey weights must be > 0 "
                            "(1 for a census); drop out-of-scope records instead of weighting "
                            "them 0"),
    "unknown_programme_type": ("error", "programme_type is not one of {allowed}",
                               "recode programme_type to finance, market_access or "
                               "capacity_building (empty for firms never supported)"),
    "duplicate_firm_year": ("error", "firm_id and year together are not unique (the same firm "
                            "appears twice in a year)", "keep one record per firm and year "
                            "(aggregate or remove the duplicates)"),
    "duplicate_key": ("error", "{keys} together are not unique", "keep one row per {keys}"),
    "birth_year_after_year": ("error", "birth_year is after the survey year",
                              "correct birth_year (the year the firm was founded) or year"),
    "first_treated_out_of_range": ("error", "first_treated is outside {lo}-{hi}",
                                   "first_treated is the calendar year of first support; leave "
                                   "it empty for firms never supported (0 or 9999 as 'never' "
                                   "codes are not accepted)"),
    "first_treated_varies": ("error", "first_treated differs between years of the same firm",
                             "first_treated is a firm attribute (first year of support): use the "
                             "same value in every year of the firm"),
    "programme_type_without_first_treated": (
        "error", "programme_type is filled in but first_treated (and selected_year) is empty",
        "give the first year of support in first_treated (or, for a selected firm never paid, "
        "the year it was selected in selected_year), or empty programme_type for firms never "
        "supported"),
    "selected_year_out_of_range": ("error", "selected_year is outside {lo}-{hi}",
                                   "selected_year is the calendar year the firm was selected "
                                   "(approved); leave it empty for firms never selected"),
    "selected_year_varies": ("error", "selected_year differs between years of the same firm",
                             "selected_year is a firm attribute (year of selection): use the same "
                             "value in every year of the firm"),
    "selected_after_first_treated": (
        "error", "selected_year is after first_treated (paid before being selected)",
        "selected_year is the year of selection/approval and first_treated the first year of "
        "payment, so selected_year <= first_treated: correct one of them"),
    "first_treated_without_selected_year": (
        "error", "first_treated is filled in but selected_year is empty (the column is given)",
        "when the register has selected_year, fill it in for every supported firm (the year it "
        "was selected), so survival and net jobs count every selected firm"),
    "first_treated_without_programme_type": (
        "error", "first_treated is filled in but programme_type is empty",
        "fill in programme_type (finance, market_access or capacity_building) for every row of a "
        "supported firm"),
    "support_without_treatment": ("error", "support_amount > 0 for a firm never supported "
                                  "(first_treated empty)", "fill in first_treated or set "
                                  "support_amount to 0"),
    "support_before_treatment": ("error", "support_amount > 0 in a year before first_treated",
                                 "first_treated must be the first year with support: correct "
                                 "first_treated or support_amount"),
    "not_positive": ("error", "{column} must be > 0", "correct {column} or leave it empty if "
                     "unknown"),
    "target_before_baseline": ("error", "target_year is not after baseline_year",
                               "set target_year later than baseline_year"),
    # reading: what was guessed or declared (info/warning), and what cannot be read (error)
    "title_row_skipped": ("info", "{n} row(s) above the header skipped (title: {title!r}); the "
                          "header is line {line}", "pass header_row={line} to say so, or "
                          "header_row=1 if the first line is the header"),
    "header_row": ("info", "header read from line {line} (declared)", "none needed"),
    "separator_sniffed": ("info", "read as {sep_name}-separated (sniffed from the first lines)",
                          "pass sep= if this is wrong"),
    "decimal_comma_sniffed": ("info", "',' read as the decimal mark (the file is ';'-separated "
                              "and numbers like {example!r} use a decimal comma)",
                              "pass decimal='.' if this is wrong"),
    "encoding_guessed": ("warning", "the file is not UTF-8; read as {encoding} ({name}), e.g. "
                         "{example!r}", "check the accents in the text columns; pass "
                         "encoding= to choose another, or save the file as 'CSV UTF-8'"),
    "ambiguous_thousands": ("error", "{column}: '.' is a thousands mark in some values "
                            "({evidence}), so values like these cannot be read safely",
                            "pass thousands='.' (and decimal=',') if '.' groups thousands in "
                            "this file, or correct the values"),
    "dot_may_be_thousands": ("warning", "every decimal value of {column} has exactly three "
                             "digits after '.', as if '.' grouped thousands; read as decimals",
                             "if '.' groups thousands in this file pass thousands='.' and "
                             "decimal=','"),
    "missing_code_applied": ("info", "{column} values {codes} read as missing (declared "
                             "missing-value codes)", "none needed"),
    "possible_missing_code": ("warning", "{column} holds {value}, a typical missing-value code, "
                              "far from the column's other values (median {median:,.4g})",
                              "if {value} means 'missing', declare it: missing_codes="
                              "{{'{column}': [{value}]}}; otherwise check the values"),
    "bool_words": ("info", "{column}: yes/no words read as {pairs}", "pass true_words=/"
                   "false_words= if a word is read wrongly"),
    "excel_error_cell": ("error", "Excel error value in the cell (formula result {code})",
                         "correct the formula in the spreadsheet (or type the value) and "
                         "save again"),
    "formula_without_value": ("error", "formula cell without a saved result ({formula}); the "
                              "file was written by a program that does not calculate formulas",
                              "open the file in Excel or LibreOffice, recalculate and save, or "
                              "paste the values"),
    "codebook_applied": ("info", "codebook {name} (sha256 {sha}) applied: {detail}",
                         "none needed"),
    "codebook_column_absent": ("warning", "codebook {name} lists column '{column}' which is not "
                               "in the file", "remove it from the codebook or check the file"),
    "codebook_unmapped_values": ("warning", "{column} values not in the codebook's recode "
                                 "list were kept as written", "add them to the codebook's "
                                 "recode list for {column}"),
    "id_spelling_variants": ("error", "{column} values that differ only by case, spaces or "
                             "invisible characters (zero-width space, no-break space, BOM): "
                             "one firm written two ways, or two firms that cannot be told apart",
                             "write each identifier one way (remove the invisible characters "
                             "and spaces; use one case)"),
    "invisible_characters": ("warning", "{column} contains invisible characters (zero-width "
                             "space, no-break space, BOM, control characters)",
                             "remove them from {column}"),
    "punctuation_only": ("error", "{column} holds only punctuation (no letter or digit)",
                         "write the real {column} or leave the cell empty if unknown"),
    "size_class_contradicts_employees": (
        "warning", "size_class is two or more classes away from what the employee count allows "
        "under the country's legal definition (whatever the turnover and assets)", "check size_class and employees; "
        "drop size_class to derive it with sizeclass.classify"),
    # warnings (implausible values; they do not stop the pipeline)
    "employees_implausible": ("warning", "employees above {limit:,}", "check for unit or typing "
                              "errors (e.g. turnover typed into employees)"),
    "turnover_per_employee_extreme": (
        "warning", "turnover per employee is more than {factor:,}x above or below the median of "
        "its country and year", "check the unit (thousands/millions), currency and employees"),
    "value_added_exceeds_turnover": ("warning", "value_added is larger than turnover",
                                     "check both amounts (same unit and currency, same year)"),
    "non_consecutive_years": ("warning", "firm is missing in some year between its first and "
                              "last year (shown: the row after each gap)", "check firm_id "
                              "linkage across years; gaps are allowed but affect survival "
                              "indicators"),
    "weights_dispersed": ("warning", "weights are extremely dispersed within a country-year "
                          "({detail})", "check the weights (trimming or calibration may be "
                          "needed); estimates will have large variance"),
    "mixed_currency_between_years": (
        "warning", "median turnover per employee of a country jumps by {factor:,}x or more "
        "between consecutive years ({detail}): mixed currencies or units suspected",
        "convert all amounts of a country to its local currency and the same unit"),
    "mixed_currency_within_year": (
        "warning", "a cluster of rows is {factor:,}x or more away from the median turnover per "
        "employee of its country-year ({detail}): mixed currencies or units suspected",
        "convert these rows to the local currency and the same unit as the others"),
    "birth_year_implausible": ("warning", "birth_year before {limit}", "check birth_year"),
    "first_treated_outside_panel": (
        "warning", "first_treated is outside the years in the data ({lo}-{hi}); the firm is "
        "never observed on one side of its treatment", "check first_treated; such firms carry no "
        "information for difference-in-differences"),
    "programme_type_varies": ("warning", "programme_type differs between years of the same firm",
                              "impact by programme type uses one type per firm: check the coding"),
    "usd_per_lcu_jump": ("warning", "usd_per_lcu changes by {factor}x or more from the previous "
                         "year", "check the exchange rate (direction: US dollars per unit of "
                         "local currency) and redenominations"),
}


def _fmt_value(v: Any) -> Any:
    """A JSON-friendly scalar for the report."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 1e15 else f
    if isinstance(v, np.bool_):
        return bool(v)
    return v if isinstance(v, (int, float, bool, str)) else str(v)


@dataclass(frozen=True)
class Issue:
    """One problem: a rule broken by some rows of one column (or by the whole file)."""

    file: str
    column: str | None
    rule: str
    severity: str
    n_rows: int
    rows: tuple[int, ...]
    values: tuple[Any, ...]
    message: str
    fix: str


def make_issue(file: str, column: str | None, rule: str, rows: Sequence[int] = (),
               values: Sequence[Any] = (), *, n_rows: int | None = None, quote: bool = True,
               severity: str | None = None, **fmt: Any) -> Issue:
    """Build an Issue from the RULES catalogue. `rows` are 1-based data rows."""
    default_severity, what, fix = RULES[rule]
    severity = severity or default_severity
    fmt = {"column": column, **fmt}
    what, fix = what.format(**fmt), fix.format(**fmt)
    rows = tuple(int(r) for r in rows)
    n = len(rows) if n_rows is None else n_rows
    shown_rows = rows[:N_SHOW]
    shown_vals = tuple(_fmt_value(v) for v in list(values)[:N_SHOW])
    where = f"{file}: column '{column}'" if column else f"{file}"
    msg = f"{where} [{rule}]: {what}"
    if n:
        msg += f"; {n} row{'s' if n != 1 else ''}, first: " + ", ".join(
            (f"row {r} ({v!r})" if quote else f"row {r} ({v})") if i < len(shown_vals)
            else f"row {r}"
            for i, (r, v) in enumerate(zip(shown_rows, list(shown_vals) + [None] * N_SHOW)))
    elif shown_vals:
        msg += f" ({', '.join(map(repr, shown_vals))})"
    return Issue(file, column, rule, severity, n, shown_rows, shown_vals, msg, fix)


SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}  # info: noted in the report only
REPORT_COLUMNS = ("file", "column", "rule", "severity", "n_rows", "rows", "values", "message", "fix")


def issues_frame(issues: Iterable[Issue]) -> pd.DataFrame:
    """Tidy report: one row per (file, column, rule); errors first."""
    recs = [{k: (list(getattr(i, k)) if k in ("rows", "values") else getattr(i, k))
             for k in REPORT_COLUMNS} for i in issues]
    df = pd.DataFrame(recs, columns=list(REPORT_COLUMNS))
    if len(df):
        df["_o"] = df["severity"].map(SEVERITY_ORDER)
        df = df.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    df["n_rows"] = df["n_rows"].astype("int64")
    return df


@dataclass
class ValidationReport:
    """All problems found in one input: `.errors` stop the pipeline, `.warnings` do not."""

    file: str
    issues: list[Issue] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return issues_frame(self.issues)

    @property
    def errors(self) -> pd.DataFrame:
        return issues_frame(i for i in self.issues if i.severity == "error")

    @property
    def warnings(self) -> pd.DataFrame:
        return issues_frame(i for i in self.issues if i.severity == "warning")

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    def text(self) -> str:
        errs = [i for i in self.issues if i.severity == "error"]
        warns = [i for i in self.issues if i.severity == "warning"]
        notes = [i for i in self.issues if i.severity == "info"]
        head = (f"{self.file}: {len(errs)} error{'s' if len(errs) != 1 else ''}, "
                f"{len(warns)} warning{'s' if len(warns) != 1 else ''} ({ROW_CONVENTION}).")
        lines = [head]
        for title, group in (("Errors", errs), ("Warnings", warns), ("Notes", notes)):
            if group:
                lines.append(f"{title}:")
                lines += [f"  - {i.message}\n      fix: {i.fix}" for i in group]
        return "\n".join(lines)

    __str__ = text

    def _repr_html_(self) -> str:  # pragma: no cover - Jupyter display
        return f"<p>{self.text().splitlines()[0]}</p>" + self.table.to_html(index=False)

    def raise_for_errors(self) -> None:
        """Raise DataValidationError if any error was found."""
        if not self.ok:
            raise DataValidationError(self)


class DataValidationError(Exception):
    """Input data break the contract. `.report` lists every problem (errors, then warnings);
    `.errors` / `.warnings` split it; str(err) is a readable summary with fixes."""

    def __init__(self, validation: ValidationReport):
        self.validation = validation
        super().__init__(validation.text())

    def __reduce__(self):  # keep picklable (multiprocessing, papermill)
        return (self.__class__, (self.validation,))

    @property
    def report(self) -> pd.DataFrame:
        return self.validation.table

    @property
    def errors(self) -> pd.DataFrame:
        return self.validation.errors

    @property
    def warnings(self) -> pd.DataFrame:
        return self.validation.warnings

    @property
    def file(self) -> str:
        return self.validation.file


class DataFileNotFoundError(DataValidationError, FileNotFoundError):
    """The input path does not exist (also a FileNotFoundError)."""


class DataQualityWarning(UserWarning):
    """Implausible values found in an otherwise valid input (see the validation report)."""


def file_error(file: str, rule: str, **fmt: Any) -> DataValidationError:
    """A DataValidationError for a problem with the file itself (no column, no rows)."""
    report = ValidationReport(file, [make_issue(file, None, rule, **fmt)])
    cls = DataFileNotFoundError if rule == "file_not_found" else DataValidationError
    return cls(report)


# ---------------------------------------------------------------------------------------------
# Column names
# ---------------------------------------------------------------------------------------------
def normalise_column_name(name: Any) -> str:
    """' Firm ID ' -> 'firm_id': strip, lower-case, runs of non-alphanumerics -> '_'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def rename_columns(df: pd.DataFrame, file: str, aliases: Mapping[str, str] = COLUMN_ALIASES,
                   ) -> tuple[pd.DataFrame, list[Issue]]:
    """Normalise names and apply aliases; two inputs mapping to one name is an error."""
    targets: dict[str, list[str]] = {}
    new_names = []
    for col in df.columns:
        norm = normalise_column_name(col)
        norm = aliases.get(norm, norm)
        targets.setdefault(norm, []).append(str(col))
        new_names.append(norm)
    issues = [make_issue(file, tgt, "duplicate_column", sources=", ".join(map(repr, src)))
              for tgt, src in targets.items() if len(src) > 1]
    out = df.copy()
    out.columns = new_names
    if issues:  # keep the first of each duplicated name so other checks still run
        out = out.loc[:, ~pd.Index(new_names).duplicated()]
    return out, issues


def _aliases_for(column: str) -> str:
    names = [k for k, v in COLUMN_ALIASES.items() if v == column]
    return f" (accepted names: {column}, {', '.join(names)})" if names else ""


# ---------------------------------------------------------------------------------------------
# Parsing options: number marks, yes/no words, declared missing-value codes
# ---------------------------------------------------------------------------------------------
#: yes/no words read by default (compared after Unicode NFC and case folding): English,
#: Indonesian and Malay (ya/tidak), Vietnamese (có/không, also without accents), Thai
#: (ใช่/ไม่ใช่), Filipino (oo/hindi). Extend per file with ParseOptions(true_words=...).
#: Single letters (Y/N) are not accepted by default: add them per file if the codebook says so.
DEFAULT_TRUE_WORDS: frozenset[str] = frozenset({*BOOL_TRUE, "ya", "có", "co", "ใช่", "oo"})
DEFAULT_FALSE_WORDS: frozenset[str] = frozenset({*BOOL_FALSE, "tidak", "không", "khong",
                                                 "ไม่ใช่", "hindi"})
#: values that survey software and analysts often use for "missing" (checked, never applied
#: unless declared in ParseOptions.missing_codes)
TYPICAL_MISSING_CODES: tuple[float, ...] = (
    -9, -99, -999, -9999, -99999, 99, 999, 9999, 99999, 999999, 9999999, 99999999, 999999999)
THOUSANDS_MARKS: tuple[str, ...] = (".", ",", " ", "'", "\u00a0", "\u202f")


def word_key(value: Any) -> str:
    """Comparison key of a yes/no word: Unicode NFC, stripped, case-folded."""
    return unicodedata.normalize("NFC", str(value)).strip().casefold()


@dataclass(frozen=True)
class ParseOptions:
    """How text cells become numbers and booleans, and which codes mean "missing".

    decimal: "." or ","; thousands: None (no grouping allowed) or one of THOUSANDS_MARKS, e.g.
    "." for "8.806.000,50"; true_words/false_words: added to the defaults; missing_codes:
    {column: codes} read as missing in that column ("*" = every numeric column), e.g.
    {"employees": [999], "*": [-99]}."""

    decimal: str = "."
    thousands: str | None = None
    true_words: Iterable[str] = ()
    false_words: Iterable[str] = ()
    missing_codes: Mapping[str, Iterable[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decimal not in (".", ","):
            raise ValueError(f"decimal must be '.' or ',', not {self.decimal!r}")
        if self.thousands is not None and (self.thousands not in THOUSANDS_MARKS
                                           or self.thousands == self.decimal):
            raise ValueError(f"thousands must be None or one of {THOUSANDS_MARKS} other than "
                             f"the decimal mark {self.decimal!r}, not {self.thousands!r}")
        true = DEFAULT_TRUE_WORDS | {word_key(w) for w in self.true_words}
        false = DEFAULT_FALSE_WORDS | {word_key(w) for w in self.false_words}
        both = (true & false) - (DEFAULT_TRUE_WORDS & DEFAULT_FALSE_WORDS)
        if both:
            raise ValueError(f"words given as both true and false: {sorted(both)}")
        object.__setattr__(self, "true_words", frozenset(true))
        object.__setattr__(self, "false_words", frozenset(false))
        codes = {str(k): tuple(float(c) for c in v) for k, v in dict(self.missing_codes).items()}
        object.__setattr__(self, "missing_codes", codes)

    def codes_for(self, column: str) -> tuple[float, ...]:
        return (*self.missing_codes.get(column, ()), *self.missing_codes.get("*", ()))


DEFAULT_PARSE = ParseOptions()
_NUM = r"[+-]?\d+(?:[eE][+-]?\d+)?"


def _grouped(th: str, dec: str) -> re.Pattern[str]:
    """A number grouped in thousands by `th`, with an optional decimal part."""
    return re.compile(rf"[+-]?\d{{1,3}}(?:{re.escape(th)}\d{{3}})+(?:{re.escape(dec)}\d+)?")


_DOT_GROUPED = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+")            # 8.806 or 12.345.678
_DOT_EVIDENCE = re.compile(r"[+-]?\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?|[+-]?\d{1,3}(?:\.\d{3})+,\d+")
_THREE_DECIMALS = re.compile(r"[+-]?\d{1,3}\.\d{3}")


def _strings(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(the text cells as a "str" Series, NaN elsewhere; mask of non-text, non-missing cells
    such as Excel numbers and booleans) of a cleaned object Series."""
    is_str = _umap(raw, lambda v: isinstance(v, str)).astype(bool)
    text = pd.Series(raw.where(is_str, None), index=raw.index).astype("str")
    return text, raw.notna() & ~is_str


def _text_cells(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`_strings(_clean(s))` of a raw column: its text cells stripped, blanks missing, as a
    "str" Series, and the mask of non-text cells. A string-dtype column is stripped in Arrow
    without making a Python object per cell (the same values, far less memory)."""
    if _is_string_dtype(s):
        t = s.str.strip()
        return t.where(t != "").astype("str"), pd.Series(False, index=s.index)
    return _strings(_clean(s))


def _fullmatch(text: pd.Series, pattern: re.Pattern[str] | str) -> pd.Series:
    pat = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return text.str.fullmatch(pat).fillna(False).astype(bool)


def _number_texts(text: pd.Series, opts: ParseOptions) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Text rewritten with '.' as decimal mark and no grouping, for pd.to_numeric, with the
    masks of cells whose marks do not fit (bad) and of cells where '.' may group thousands
    but thousands='.' was not declared (ambiguous). Vectorised string operations."""
    th, dec = opts.thousands, opts.decimal
    text = text.str.replace("\u2212", "-", regex=False)            # Unicode minus sign
    bad = pd.Series(False, index=text.index)
    amb = pd.Series(False, index=text.index)
    if th is not None:
        has = text.str.contains(th, regex=False).fillna(False).astype(bool)
        bad |= has & ~_fullmatch(text, _grouped(th, dec))
        text = text.where(~has, text.str.replace(th, "", regex=False))
    if dec == ",":
        dot = text.str.contains(".", regex=False).fillna(False).astype(bool)
        amb |= dot & _fullmatch(text, _grouped(".", dec))
        bad |= dot & ~amb
        text = text.str.replace(",", ".", regex=False)
    elif th is None and _fullmatch(text, _DOT_EVIDENCE).any():
        amb |= _fullmatch(text, _DOT_GROUPED)
    return text, bad, amb


def _to_number(s: pd.Series, opts: ParseOptions = DEFAULT_PARSE
               ) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """-> (float64 values with NaN for missing/bad, missing mask, not-a-number mask,
    ambiguous-thousands mask)."""
    none = pd.Series(False, index=s.index)
    if pd.api.types.is_bool_dtype(s.dtype):
        return (pd.Series(np.nan, index=s.index), s.isna(), s.notna(), none)
    if pd.api.types.is_numeric_dtype(s.dtype):
        num = pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index)
        return num, s.isna(), none, none
    raw = None if _is_string_dtype(s) else _clean(s)  # text only: no object copy needed
    text, other = _text_cells(s) if raw is None else _strings(raw)
    missing = text.isna() if raw is None else raw.isna()
    text, bad_text, amb = _number_texts(text, opts)
    is_bool = other & _umap(raw, lambda v: isinstance(v, (bool, np.bool_))).astype(bool) \
        if other.any() else other
    num = pd.to_numeric(text.where(~bad_text & ~amb), errors="coerce").astype("float64")
    if other.any():  # Excel numbers in a text column
        num = num.where(~other, pd.to_numeric(raw.where(other & ~is_bool, None),
                                              errors="coerce").astype("float64"))
    bad = (~missing & num.isna() & ~amb) | is_bool
    return num.where(~bad & ~amb), missing, bad, amb


def _is_string_dtype(s: pd.Series) -> bool:
    return s.dtype != object and pd.api.types.is_string_dtype(s.dtype)


def _three_decimals(raw: pd.Series) -> pd.Series:
    """Rows whose text is d.ddd, dd.ddd or ddd.ddd, when every decimal value looks like that
    (>= 3 of them): '.' may group thousands."""
    text, _ = _text_cells(raw)
    three = _fullmatch(text, _THREE_DECIMALS)
    if three.sum() >= 3:
        decimal = text.str.contains(".", regex=False).fillna(False).astype(bool)
        if (three == decimal).all():
            return three
    return pd.Series(False, index=raw.index)


# ---------------------------------------------------------------------------------------------
# Parsing raw values into contract types (never silently: every failure is an Issue)
# ---------------------------------------------------------------------------------------------
def _umap(s: pd.Series, func: Callable[[Any], Any]) -> pd.Series:
    """`s.map(func)` evaluated once per distinct value (missing -> func(None)); object result."""
    codes, uniques = pd.factorize(s.to_numpy(dtype=object), use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [func(u) for u in uniques]
    mapped[-1] = func(None)
    return pd.Series(mapped[codes], index=s.index, dtype=object)


def _clean(s: pd.Series) -> pd.Series:
    """Object series; categories -> values; strings stripped; blank strings -> None."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if s.dtype != object and pd.api.types.is_string_dtype(s.dtype):  # vectorised fast path
        t = s.str.strip()
        t = t.where(t != "")
        return pd.Series(t.to_numpy(dtype=object, na_value=None), index=s.index, dtype=object)
    if s.dtype == object:
        s = _umap(s, lambda v: (v.strip() or None) if isinstance(v, str) else (
            None if v is None or is_missing(v) else v))
    return s


def is_missing(v: Any) -> bool:
    """True for None, NaN, pd.NA and NaT; False for anything pd.isna cannot judge (lists, ...)."""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _rows(mask: pd.Series) -> np.ndarray:
    """1-based row numbers where mask is True (the frame has a RangeIndex)."""
    return np.flatnonzero(mask.to_numpy(dtype=bool)) + 1


class _Reporter:
    """Collects the Issues of one column (rows are 1-based; values shown from `raw`)."""

    def __init__(self, column: str, file: str):
        self.column, self.file, self.issues = column, file, []

    def __call__(self, rule: str, mask: pd.Series, raw: pd.Series, **fmt: Any) -> None:
        if mask.any():
            r = _rows(mask)
            self.issues.append(make_issue(self.file, self.column, rule, r,
                                          raw.to_numpy()[r[:N_SHOW] - 1], n_rows=len(r), **fmt))


def _evidence(raw: pd.Series) -> str:
    """Up to three values showing '.' as a thousands mark, for the ambiguity message."""
    text, _ = _text_cells(raw)
    texts = pd.unique(text[_fullmatch(text, _DOT_EVIDENCE)])[:3]
    return ", ".join(repr(v) for v in texts) or "the file uses a decimal comma"


def _declared_missing(num: pd.Series, codes: tuple[float, ...], report: _Reporter,
                      raw: pd.Series) -> pd.Series:
    """Mask of values equal to a declared missing-value code (reported as info)."""
    hit = num.isin(codes) if codes else pd.Series(False, index=num.index)
    report("missing_code_applied", hit, raw,
           codes=", ".join(f"{c:g}" for c in codes))
    return hit.astype(bool)


def _sentinel_suspects(num: pd.Series, report: _Reporter, raw: pd.Series) -> None:
    """Warn about a typical missing-value code far outside the column's other values: at
    least 10x their 99th percentile, at most 1/1000 of their 1st percentile (non-zero
    magnitudes), or a negative code."""
    is_code = num.isin(TYPICAL_MISSING_CODES)
    if not is_code.any():
        return
    others = num[~is_code & num.notna() & (num != 0)].abs()
    hi = float(others.quantile(0.99)) if len(others) else float("nan")
    lo = float(others.quantile(0.01)) if len(others) else float("nan")
    for value in sorted(set(num[is_code].tolist())):
        far = value < 0 or (hi == hi and (abs(value) >= 10 * hi or abs(value) <= lo / 1000))
        if far:
            report("possible_missing_code", (num == value).astype(bool), raw,
                   value=f"{value:g}", median=float(others.median()) if len(others) else 0.0)


def _coerce_number(s: pd.Series, kind: str, report: _Reporter, opts: ParseOptions
                   ) -> tuple[pd.Series, pd.Series]:
    """int / Int64 / float column -> (typed series, declared-missing mask)."""
    num, _missing, bad, amb = _to_number(s, opts)
    report("not_a_number", bad, s)
    if amb.any():
        report("ambiguous_thousands", amb, s, evidence=_evidence(s))
    is_text = s.dtype == object or pd.api.types.is_string_dtype(s.dtype)
    if opts.thousands is None and opts.decimal == "." and is_text and not amb.any():
        report("dot_may_be_thousands", _three_decimals(s), s)
    declared = _declared_missing(num, opts.codes_for(report.column), report, s)
    num = num.where(~declared)
    _sentinel_suspects(num, report, s)
    inf = num.notna() & ~np.isfinite(num.fillna(0))
    report("not_finite", inf, s)
    num = num.where(~inf)
    if kind == "float":
        return num.astype("float64"), declared
    frac = num.notna() & (num != np.round(num))
    report("not_whole_number", frac, s)
    num = num.where(~frac)
    out = num.astype("Float64").astype("Int64")
    if kind == "int" and not out.isna().any():
        out = out.astype("int64")
    return out, declared


def _coerce_bool(s: pd.Series, report: _Reporter, opts: ParseOptions) -> pd.Series:
    """yes/no column -> boolean; words outside English yes/no/true/false are reported."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    raw = _clean(s) if not pd.api.types.is_numeric_dtype(s.dtype) else s.astype(object)

    def parse(v: Any) -> Any:
        if v is None or is_missing(v):
            return None
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, float, np.integer, np.floating)):
            return {1: True, 0: False}.get(v, "bad") if float(v) in (0.0, 1.0) else "bad"
        t = word_key(v)
        return True if t in opts.true_words else False if t in opts.false_words else "bad"

    parsed = _umap(raw, parse)
    bad = _umap(parsed, lambda v: isinstance(v, str)).astype(bool)
    report("not_boolean", bad, s)
    _codes, uniques = pd.factorize(raw.to_numpy(dtype=object), use_na_sentinel=True)
    words = {v: p for v in uniques if isinstance(v, str)
             for p in [parse(v)] if isinstance(p, bool) and word_key(v) not in BOOL_TRUE | BOOL_FALSE}
    if words:
        used = _umap(raw, lambda v: isinstance(v, str) and v in words).astype(bool)
        report("bool_words", used, s, pairs=", ".join(
            f"{w!r} -> {'yes' if p else 'no'}" for w, p in sorted(words.items())))
    return pd.array(parsed.where(~bad, None).tolist(), dtype="boolean")


def _coerce_text(s: pd.Series, kind: str, report: _Reporter) -> pd.Series:
    """text / country / area / sector / code column -> str; respellings are reported."""
    raw = _clean(s)

    def as_text(v: Any) -> Any:
        if v is None or is_missing(v):
            return None
        if isinstance(v, (float, np.floating)):
            return str(int(v)) if float(v).is_integer() else "\x00bad"
        if isinstance(v, (bool, np.bool_)):
            return "\x00bad"
        return str(v)

    text = _umap(raw, as_text)
    bad = _umap(text, lambda v: isinstance(v, str) and v.startswith("\x00")).astype(bool)
    report("not_text", bad, s)
    text = text.where(~bad, None)
    written = text
    if kind in ("country", "area"):
        def norm_country(v: Any) -> Any:
            if v is None:
                return None
            key = country_key(v)
            if kind == "area" and key == "asean":
                return AGGREGATE_AREA
            return COUNTRY_ALIASES.get(key, v)  # unknown: kept as written, flagged by the rule
        text = _umap(text, norm_country)
    elif kind == "sector":
        text = _umap(text, lambda v: v.upper() if isinstance(v, str) else v)
    elif kind == "code":
        text = _umap(text, lambda v: re.sub(r"[\s\-]+", "_", v.lower())
                     if isinstance(v, str) else v)
    if kind in ("country", "area", "sector", "code"):  # say what was respelled (audit trail)
        changed = (text.notna() & written.notna() & (text != written)).astype(bool)
        if changed.any():
            r = _rows(changed)
            pairs = [f"{a} -> {b}" for a, b in zip(written.to_numpy()[r[:N_SHOW] - 1],
                                                   text.to_numpy()[r[:N_SHOW] - 1])]
            report.issues.append(make_issue(report.file, report.column, "respelled", r, pairs,
                                            n_rows=len(r), quote=False))
    return pd.Series(text.tolist(), index=s.index, dtype="str")


def _coerce_column(s: pd.Series, kind: str, column: str, file: str,
                   opts: ParseOptions = DEFAULT_PARSE
                   ) -> tuple[pd.Series, list[Issue], pd.Series | None]:
    """Parse one column to its contract dtype. Bad cells become missing in the returned
    series and are reported; values needing a *rule* check (codes, ranges) are kept.
    Returns (typed, issues, mask of declared missing-value codes or None)."""
    report = _Reporter(column, file)
    if kind in ("int", "Int64", "float"):
        typed, declared = _coerce_number(s, kind, report, opts)
        return typed, report.issues, declared
    if kind == "bool":
        return _coerce_bool(s, report, opts), report.issues, None
    return _coerce_text(s, kind, report), report.issues, None


def coerce_table(df: pd.DataFrame, kinds: Mapping[str, str], not_null: Iterable[str],
                 file: str, opts: ParseOptions = DEFAULT_PARSE
                 ) -> tuple[pd.DataFrame, list[Issue]]:
    """Parse every known column; report unparseable and missing required values (declared
    missing-value codes count as missing)."""
    out = df.reset_index(drop=True).copy()
    issues: list[Issue] = []
    not_null = set(not_null)
    for col in out.columns:
        if col not in kinds:
            continue
        before_missing = _missing_mask(out[col])
        typed, col_issues, declared = _coerce_column(out[col], kinds[col], col, file, opts)
        issues += col_issues
        if declared is not None:
            before_missing = before_missing | declared
        if col in not_null and before_missing.any():
            r = _rows(before_missing)
            issues.append(make_issue(file, col, "missing_value", r, [None] * min(len(r), N_SHOW),
                                     n_rows=len(r)))
        out[col] = typed
    return out, issues


def _missing_mask(s: pd.Series) -> pd.Series:
    if _is_string_dtype(s):  # `_clean(s).isna()` without an object copy of the column
        t = s.str.strip()
        return (t.isna() | (t == "")).fillna(True).astype(bool)
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype) or isinstance(
            s.dtype, pd.CategoricalDtype):
        return _clean(s).isna()
    return s.isna()


# ---------------------------------------------------------------------------------------------
# Rules (checked with pandera, lazily: every failure is collected)
# ---------------------------------------------------------------------------------------------
Fmt = Mapping[str, Any] | Callable[[pd.DataFrame, pd.Series], Mapping[str, Any]]


@dataclass(frozen=True)
class ColumnRule:
    """A rule on one column: `check(series) -> bool Series` (True = fine; missing skipped)."""

    column: str
    rule: str
    check: Callable[[pd.Series], pd.Series]
    fmt: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowRule:
    """A rule across columns: `check(frame) -> bool Series` (True = fine), reported on `column`
    with the values of `needs` shown for the first offending rows."""

    column: str
    rule: str
    needs: tuple[str, ...]
    check: Callable[[pd.DataFrame], pd.Series]
    fmt: Fmt = field(default_factory=dict)
    optional: tuple[str, ...] = ()  # passed to `check` too when present (the rule runs without them)


@dataclass(frozen=True)
class TableSpec:
    """Everything needed to validate one kind of table."""

    name: str
    columns: tuple[str, ...]          # canonical order
    kinds: Mapping[str, str]
    required: tuple[str, ...]
    not_null: frozenset[str]
    column_rules: tuple[ColumnRule, ...]
    row_rules: tuple[RowRule, ...]
    unique: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)


def _ok(mask: pd.Series) -> pd.Series:
    """Nullable comparison result -> plain bool, missing counted as fine."""
    return mask.astype("boolean").fillna(True).astype(bool)


def _in(allowed: Sequence[str]) -> Callable[[pd.Series], pd.Series]:
    allowed = set(allowed)
    return lambda s: s.isin(allowed)


def _between(lo: float, hi: float) -> Callable[[pd.Series], pd.Series]:
    return lambda s: _ok((s >= lo) & (s <= hi))


def _ge(v: float) -> Callable[[pd.Series], pd.Series]:
    return lambda s: _ok(s >= v)


def _gt(v: float) -> Callable[[pd.Series], pd.Series]:
    return lambda s: _ok(s > v)


def _le(v: float) -> Callable[[pd.Series], pd.Series]:
    return lambda s: _ok(s <= v)


def _varies_within(key: str, col: str) -> Callable[[pd.DataFrame], pd.Series]:
    """False for every row of a `key` group holding more than one distinct `col` (NA counts)."""
    def check(df: pd.DataFrame) -> pd.Series:
        n = df[[key, col]].drop_duplicates().groupby(key, dropna=False).size()
        return ~df[key].map(n).fillna(1).gt(1).astype(bool)
    return check


def _log_tpe(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """log10 turnover per employee (employees 0 counted as 1) and its deviation from the
    median of the row's country-year (NaN where the cell has < MIN_GROUP_FOR_STATS values)."""
    t = df["turnover"].astype("float64")
    e = df["employees"].astype("Float64").astype("float64").clip(lower=1)
    lt = np.log10(t.where(t > 0) / e)
    g = lt.groupby([df["country"], df["year"]], dropna=False)
    med = g.transform("median").where(g.transform("count") >= MIN_GROUP_FOR_STATS)
    return lt, lt - med


def _tpe_extreme(df: pd.DataFrame) -> pd.Series:
    _, dev = _log_tpe(df)
    return ~(dev.abs() > math.log10(TURNOVER_PER_EMPLOYEE_FACTOR))


def _currency_cluster_bad(df: pd.DataFrame) -> pd.Series:
    _, dev = _log_tpe(df)
    lim = math.log10(CURRENCY_CLUSTER_FACTOR)
    bad = pd.Series(False, index=df.index)
    keys = [df["country"], df["year"]]
    n = dev.groupby(keys, dropna=False).transform("count")
    for side in (dev < -lim, dev > lim):
        k = side.astype(int).groupby(keys, dropna=False).transform("sum")
        bad |= side & (k >= np.maximum(3, CURRENCY_CLUSTER_SHARE * n))
    return bad


def _currency_cluster_fmt(df: pd.DataFrame, bad: pd.Series) -> dict[str, Any]:
    cells = df.loc[bad, ["country", "year"]].drop_duplicates().head(N_SHOW)
    return {"factor": CURRENCY_CLUSTER_FACTOR,
            "detail": "; ".join(f"{c} {y}: {int(((df.country == c) & (df.year == y) & bad).sum())}"
                                f" of {int(((df.country == c) & (df.year == y)).sum())} rows"
                                for c, y in cells.itertuples(index=False))}


def _country_year_medians(df: pd.DataFrame) -> pd.DataFrame:
    lt, _ = _log_tpe(df)
    m = lt.groupby([df["country"], df["year"]]).agg(["median", "count"]).reset_index()
    m = m[m["count"] >= MIN_GROUP_FOR_STATS].sort_values(["country", "year"])
    m["jump"] = m.groupby("country")["median"].diff()
    m["prev_year"] = m.groupby("country")["year"].shift()
    m["prev_median"] = m.groupby("country")["median"].shift()
    return m[m["jump"].abs() >= math.log10(CURRENCY_JUMP_FACTOR)]


def _currency_jump_ok(df: pd.DataFrame) -> pd.Series:
    jumps = _country_year_medians(df)
    flagged = set(zip(jumps["country"], jumps["year"]))
    if not flagged:
        return pd.Series(True, index=df.index)
    return ~pd.Series([k in flagged for k in zip(df["country"], df["year"])], index=df.index)


def _currency_jump_fmt(df: pd.DataFrame, bad: pd.Series) -> dict[str, Any]:
    j = _country_year_medians(df).head(N_SHOW)
    return {"factor": CURRENCY_JUMP_FACTOR, "detail": "; ".join(
        f"{r.country} {int(r.prev_year)} -> {int(r.year)}: median {10 ** r.prev_median:,.4g} -> "
        f"{10 ** r.median:,.4g} (x{10 ** r.jump:,.3g})" for r in j.itertuples())}


def _weights_stats(df: pd.DataFrame) -> pd.DataFrame:
    w = df["weight"].astype("float64")
    g = w.groupby([df["country"], df["year"]])
    st = pd.DataFrame({"n": g.count(), "s1": g.sum(), "s2": (w ** 2).groupby(
        [df["country"], df["year"]]).sum(), "mx": g.max(), "mn": g.min()}).reset_index()
    st["deff"] = st["n"] * st["s2"] / st["s1"] ** 2
    st["ratio"] = st["mx"] / st["mn"]
    # Only Kish's 1 + CV^2 flags: a large max/min is normal in stratified business surveys
    # (take-all large firms with weight 1 next to sampled micro firms).
    return st[(st["n"] >= MIN_GROUP_FOR_STATS) & (st["deff"] > WEIGHT_DEFF_MAX)]


def _weights_ok(df: pd.DataFrame) -> pd.Series:
    st = _weights_stats(df)
    if st.empty:
        return pd.Series(True, index=df.index)
    flagged = set(zip(st["country"], st["year"]))
    in_cell = pd.Series([k in flagged for k in zip(df["country"], df["year"])], index=df.index)
    w = df["weight"].astype("float64")
    med = w.groupby([df["country"], df["year"]]).transform("median")
    extreme = (w >= 10 * med) | (w <= med / 10)
    return ~(in_cell & extreme)


def _weights_fmt(df: pd.DataFrame, bad: pd.Series) -> dict[str, Any]:
    st = _weights_stats(df).head(N_SHOW)
    return {"detail": "; ".join(f"{r.country} {int(r.year)}: Kish 1+CV^2 = {r.deff:.3g}, "
                                f"max/min = {r.ratio:,.0f}" for r in st.itertuples())
            + f"; limit {WEIGHT_DEFF_MAX:g}; rows shown: weights 10x above or below the "
            f"cell median"}


def _gap_ok(df: pd.DataFrame) -> pd.Series:
    s = df[["firm_id", "year"]].sort_values(["firm_id", "year"], kind="stable")
    gap = (s["year"].diff() > 1) & (s["firm_id"] == s["firm_id"].shift())
    return ~gap.reindex(df.index).fillna(False).astype(bool)


def _panel_range_fmt(df: pd.DataFrame, bad: pd.Series) -> dict[str, Any]:
    return {"lo": int(df["year"].min()), "hi": int(df["year"].max())}


def _outside_panel_ok(df: pd.DataFrame) -> pd.Series:
    ft = df["first_treated"]
    return _ok(~((ft < df["year"].min()) | (ft > df["year"].max())))


def _has_alnum(s: pd.Series) -> pd.Series:
    """True where the text holds a letter or digit (any script)."""
    return s.astype("str").str.contains(r"[^\W_]", regex=True).fillna(True).astype(bool)


def _size_class_contradictions(df: pd.DataFrame, file: str) -> list[Issue]:
    """Rows whose size_class is two classes or more away from every class the legal rule
    allows for the employee count whatever the other criteria
    (`sizeclass.employee_class_range`), e.g. micro with 300 employees. One class off is
    common and not flagged: a survey's size_class is often the sampling-frame stratum, and
    firms grow across a threshold after sampling."""
    lo, hi = sizeclass.employee_class_range(df)
    given = df["size_class"].map({c: k for k, c in enumerate(SIZE_CLASSES)}).to_numpy(
        dtype="float64", na_value=np.nan)
    bad = pd.Series((given <= lo - 2) | (given >= hi + 2), index=df.index)
    if not bad.any():
        return []
    r = _rows(bad)
    vals = [f"employees={_fmt_value(df['employees'].iloc[i - 1])}, size_class="
            f"{df['size_class'].iloc[i - 1]}, legal: {SIZE_CLASSES[int(lo[i - 1])]}"
            + (f"-{SIZE_CLASSES[int(hi[i - 1])]}" if hi[i - 1] > lo[i - 1] else "")
            for i in r[:N_SHOW]]
    return [make_issue(file, "size_class", "size_class_contradicts_employees", r, vals,
                       n_rows=len(r), quote=False)]


_MONEY_NONNEG = tuple(c for c in (*MONEY_COLUMNS, "support_amount") if c != "value_added")

PANEL_SPEC = TableSpec(
    name="panel",
    columns=(*PANEL_COLUMNS, *REGISTER_COLUMNS),
    kinds=PANEL_KINDS,
    required=REQUIRED_COLUMNS,
    not_null=PANEL_NOT_NULL,
    aliases=COLUMN_ALIASES,
    unique=("firm_id", "year"),
    column_rules=(
        ColumnRule("country", "unknown_country", _in(COUNTRIES), {"allowed": ", ".join(COUNTRIES)}),
        ColumnRule("year", "year_out_of_range", _between(YEAR_MIN, YEAR_MAX),
                   {"lo": YEAR_MIN, "hi": YEAR_MAX}),
        ColumnRule("sector", "unknown_sector", _in(ISIC_SECTIONS)),
        ColumnRule("employees", "negative_employees", _ge(0)),
        ColumnRule("employees", "employees_implausible", _le(MAX_PLAUSIBLE_EMPLOYEES),
                   {"limit": MAX_PLAUSIBLE_EMPLOYEES}),
        *(ColumnRule(c, "negative_amount", _ge(0)) for c in _MONEY_NONNEG),
        ColumnRule("size_class", "unknown_size_class", _in(SIZE_CLASSES)),
        *(ColumnRule(c, "punctuation_only", _has_alnum)
          for c in ("firm_id", "strata", "psu", "region", "programme")),
        ColumnRule("birth_year", "birth_year_implausible", _ge(MIN_PLAUSIBLE_BIRTH_YEAR),
                   {"limit": MIN_PLAUSIBLE_BIRTH_YEAR}),
        ColumnRule("weight", "weight_not_positive", _gt(0)),
        ColumnRule("programme_type", "unknown_programme_type", _in(PROGRAMME_TYPES),
                   {"allowed": "/".join(PROGRAMME_TYPES)}),
        ColumnRule("first_treated", "first_treated_out_of_range", _between(YEAR_MIN, YEAR_MAX),
                   {"lo": YEAR_MIN, "hi": YEAR_MAX}),
        ColumnRule("selected_year", "selected_year_out_of_range", _between(YEAR_MIN, YEAR_MAX),
                   {"lo": YEAR_MIN, "hi": YEAR_MAX}),
    ),
    row_rules=(
        RowRule("birth_year", "birth_year_after_year", ("birth_year", "year"),
                lambda d: _ok(d["birth_year"] <= d["year"])),
        RowRule("first_treated", "first_treated_varies", ("firm_id", "first_treated"),
                _varies_within("firm_id", "first_treated")),
        RowRule("programme_type", "programme_type_without_first_treated",
                ("programme_type", "first_treated"),
                lambda d: ~(d["programme_type"].notna() & d["first_treated"].isna()
                            & (d["selected_year"].isna() if "selected_year" in d else True)),
                optional=("selected_year",)),
        RowRule("selected_year", "selected_year_varies", ("firm_id", "selected_year"),
                _varies_within("firm_id", "selected_year")),
        RowRule("selected_year", "selected_after_first_treated", ("selected_year", "first_treated"),
                lambda d: _ok(d["selected_year"] <= d["first_treated"])),
        RowRule("selected_year", "first_treated_without_selected_year",
                ("selected_year", "first_treated"),
                lambda d: ~(d["first_treated"].notna() & d["selected_year"].isna())),
        RowRule("first_treated", "first_treated_without_programme_type",
                ("first_treated", "programme_type"),
                lambda d: ~(d["first_treated"].notna() & d["programme_type"].isna())),
        RowRule("support_amount", "support_without_treatment", ("support_amount", "first_treated"),
                lambda d: ~((d["support_amount"] > 0) & d["first_treated"].isna())),
        RowRule("support_amount", "support_before_treatment",
                ("support_amount", "year", "first_treated"),
                lambda d: _ok(~((d["support_amount"] > 0) & (d["year"] < d["first_treated"])))),
        # warnings
        RowRule("value_added", "value_added_exceeds_turnover", ("value_added", "turnover"),
                lambda d: _ok(~(d["value_added"] > d["turnover"]))),
        RowRule("turnover", "turnover_per_employee_extreme",
                ("country", "year", "turnover", "employees"), _tpe_extreme,
                {"factor": TURNOVER_PER_EMPLOYEE_FACTOR}),
        RowRule("turnover", "mixed_currency_within_year",
                ("country", "year", "turnover", "employees"),
                lambda d: ~_currency_cluster_bad(d), _currency_cluster_fmt),
        RowRule("turnover", "mixed_currency_between_years",
                ("country", "year", "turnover", "employees"), _currency_jump_ok,
                _currency_jump_fmt),
        RowRule("weight", "weights_dispersed", ("country", "year", "weight"), _weights_ok,
                _weights_fmt),
        RowRule("year", "non_consecutive_years", ("firm_id", "year"), _gap_ok),
        RowRule("first_treated", "first_treated_outside_panel", ("first_treated", "year"),
                _outside_panel_ok, _panel_range_fmt),
        RowRule("programme_type", "programme_type_varies", ("firm_id", "programme_type"),
                _varies_within("firm_id", "programme_type")),
    ),
)


def _usd_jump_ok(df: pd.DataFrame) -> pd.Series:
    s = df[["country", "year", "usd_per_lcu"]].sort_values(["country", "year"])
    prev = s.groupby("country")["usd_per_lcu"].shift()
    r = s["usd_per_lcu"] / prev
    bad = (r >= 10) | (r <= 0.1)
    return ~bad.reindex(df.index).fillna(False).astype(bool)


MACRO_SPEC = TableSpec(
    name="macro",
    columns=MACRO_COLUMNS,
    kinds=MACRO_KINDS,
    required=MACRO_REQUIRED,
    not_null=frozenset(MACRO_REQUIRED),
    unique=("country", "year"),
    aliases={"iso3": "country", "country_code": "country", "exports": "exports_total",
             "employment": "employment_total"},
    column_rules=(
        ColumnRule("country", "unknown_country", _in(COUNTRIES), {"allowed": ", ".join(COUNTRIES)}),
        ColumnRule("year", "year_out_of_range", _between(YEAR_MIN, YEAR_MAX),
                   {"lo": YEAR_MIN, "hi": YEAR_MAX}),
        *(ColumnRule(c, "not_positive", _gt(0)) for c in ("gdp", "employment_total", "usd_per_lcu")),
        *(ColumnRule(c, "negative_amount", _ge(0)) for c in ("exports_total", "business_loans_total")),
    ),
    row_rules=(
        RowRule("usd_per_lcu", "usd_per_lcu_jump", ("country", "year", "usd_per_lcu"),
                _usd_jump_ok, {"factor": 10}),
    ),
)

TARGETS_SPEC = TableSpec(
    name="targets",
    columns=TARGET_COLUMNS,
    kinds=TARGET_KINDS,
    required=TARGET_COLUMNS,
    not_null=frozenset(TARGET_COLUMNS),
    unique=("indicator", "country"),
    aliases={"ref_area": "country", "indicator_id": "indicator"},
    column_rules=(
        ColumnRule("country", "unknown_area", _in((*COUNTRIES, AGGREGATE_AREA)),
                   {"allowed": ", ".join(COUNTRIES)}),
        *(ColumnRule(c, "year_out_of_range", _between(YEAR_MIN, YEAR_MAX),
                     {"lo": YEAR_MIN, "hi": YEAR_MAX}) for c in ("baseline_year", "target_year")),
    ),
    row_rules=(
        RowRule("target_year", "target_before_baseline", ("baseline_year", "target_year"),
                lambda d: _ok(d["target_year"] > d["baseline_year"])),
    ),
)


def _first_rows(idx: Iterable[Any]) -> np.ndarray:
    return np.array(sorted({int(i) for i in idx if i is not None and not is_missing(i)}), dtype=int)


def _failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as e:
        return e.failure_cases
    return pd.DataFrame(columns=["column", "check", "failure_case", "index"])


def check_rules(df: pd.DataFrame, spec: TableSpec, file: str) -> list[Issue]:
    """Run the spec's column rules, row rules and key uniqueness through pandera (lazy
    validation) and turn the failure cases into Issues. `df` must have a RangeIndex."""
    issues: list[Issue] = []
    present = set(df.columns)
    col_checks: dict[str, list[pa.Check]] = {}
    fmts: dict[str, Mapping[str, Any]] = {}
    for r in spec.column_rules:
        if r.column in present:
            col_checks.setdefault(r.column, []).append(pa.Check(r.check, name=r.rule))
            fmts[(r.column, r.rule)] = r.fmt
    unique = list(spec.unique) if set(spec.unique) <= present else None
    schema = pa.DataFrameSchema(
        {c: pa.Column(None, checks, nullable=True) for c, checks in col_checks.items()},
        unique=unique, report_duplicates="all")
    fc = _failures(schema, df)
    for (col, check), grp in fc.groupby(["column", "check"], dropna=False, sort=False):
        if check == "multiple_fields_uniqueness":
            continue
        rows = _first_rows(grp["index"])  # 0-based positions
        vals = df[col].to_numpy()[rows[:N_SHOW]] if len(rows) else grp["failure_case"].head(N_SHOW)
        issues.append(make_issue(file, col, check, rows + 1, list(vals), n_rows=len(rows),
                                 **fmts.get((col, check), {})))
    if unique and (fc["check"] == "multiple_fields_uniqueness").any():
        rows = _first_rows(fc.loc[fc["check"] == "multiple_fields_uniqueness", "index"])
        shown = df.iloc[rows[:N_SHOW]]
        vals = [", ".join(f"{k}={v}" for k, v in zip(unique, t))
                for t in shown[unique].itertuples(index=False)]
        rule = "duplicate_firm_year" if spec.name == "panel" else "duplicate_key"
        issues.append(make_issue(file, "+".join(unique), rule, rows + 1, vals, n_rows=len(rows),
                                 quote=False, keys=" + ".join(unique)))
    for r in spec.row_rules:
        if not set(r.needs) <= present:
            continue
        cols = [*r.needs, *(c for c in r.optional if c in present)]
        frame = df[cols]
        sch = pa.DataFrameSchema(checks=[pa.Check(r.check, name=r.rule, ignore_na=False)])
        fc = _failures(sch, frame)
        if fc.empty:
            continue
        err = fc[fc["index"].isna()]
        if len(err):  # the check itself crashed: report it instead of hiding it
            raise RuntimeError(f"validation rule {r.rule} failed to run: "
                               f"{err['failure_case'].iloc[0]}")
        rows = _first_rows(fc["index"])
        bad = pd.Series(False, index=df.index)
        bad.iloc[rows] = True
        shown = frame.iloc[rows[:N_SHOW]]
        vals = [", ".join(f"{k}={_fmt_value(v)}" for k, v in zip(cols, t))
                for t in shown.itertuples(index=False)]
        fmt = r.fmt(frame, bad) if callable(r.fmt) else r.fmt
        issues.append(make_issue(file, r.column, r.rule, rows + 1, vals, n_rows=len(rows),
                                 quote=False, **fmt))
    return issues


# ---------------------------------------------------------------------------------------------
# Whole-table validation
# ---------------------------------------------------------------------------------------------
def _unknown_column_hint(col: str, spec: TableSpec) -> str:
    import difflib
    near = difflib.get_close_matches(col, [*spec.columns, *spec.aliases], n=1, cutoff=0.75)
    if near:
        return f"did you mean '{spec.aliases.get(near[0], near[0])}'?"
    return "contract columns: " + ", ".join(spec.columns)


_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u00a0\u202f\u2007"
                        "\x00-\x08\x0b-\x1f\x7f]")
ID_COLUMNS: tuple[str, ...] = ("firm_id",)


def id_key(value: str) -> str:
    """Identity of an identifier as a person reads it: Unicode NFKC, invisible characters and
    all whitespace removed, case-folded ("ab 1", "AB1", "ab\u200b1" -> "ab1")."""
    t = _INVISIBLE.sub("", unicodedata.normalize("NFKC", value))
    return re.sub(r"\s+", "", t).casefold()


def id_spelling_groups(spellings: Iterable[str]) -> tuple[dict[str, list[str]], set[str],
                                                          set[str]]:
    """For distinct spellings in order of first appearance: {id_key: spellings}, the
    spellings sharing their key with another (twins), and other spellings holding invisible
    characters."""
    keys: dict[str, list[str]] = {}
    for u in spellings:
        keys.setdefault(id_key(u), []).append(u)
    twins = {u for group in keys.values() if len(group) > 1 for u in group}
    odd = {u for group in keys.values() for u in group if _INVISIBLE.search(u)} - twins
    return keys, twins, odd


def id_issues(groups: tuple[dict[str, list[str]], set[str], set[str]],
              rows_of: Callable[[set[str]], tuple[Sequence[int], int, list[str]]], column: str,
              file: str) -> list[Issue]:
    """Issues for `id_spelling_groups`; `rows_of(spellings)` gives the first (at least
    N_SHOW) sorted 1-based rows holding any of them, how many rows hold them in all, and the
    spellings of the first N_SHOW of those rows."""
    keys, twins, odd = groups
    issues: list[Issue] = []
    if twins:
        r, n, shown = rows_of(twins)
        vals = [" ~ ".join(repr(v) for v in keys[id_key(u)]) for u in shown]
        issues.append(make_issue(file, column, "id_spelling_variants", r, vals, n_rows=n,
                                 quote=False))
    if odd:
        r, n, shown = rows_of(odd)
        issues.append(make_issue(file, column, "invisible_characters", r,
                                 [repr(u) for u in shown], n_rows=n, quote=False))
    return issues


def identifier_issues(raw: pd.Series, column: str, file: str) -> list[Issue]:
    """Spellings of one identifier that differ only by case, spaces or invisible characters
    (error, both spellings and their rows named); invisible characters in any other value
    (warning). Never merges or splits identifiers itself."""
    values = raw.to_numpy(dtype=object)
    _codes, uniques = pd.factorize(values, use_na_sentinel=True)
    groups = id_spelling_groups(u for u in uniques if isinstance(u, str))

    def rows_of(spellings: set[str]) -> tuple[np.ndarray, int, list[str]]:
        r = np.flatnonzero(np.isin(values, list(spellings))) + 1
        return r[:N_SHOW], len(r), [values[i - 1] for i in r[:N_SHOW]]

    return id_issues(groups, rows_of, column, file)


def validate_table(data: pd.DataFrame, spec: TableSpec, *, file: str = "<DataFrame>",
                   parse: ParseOptions | None = None) -> tuple[pd.DataFrame, ValidationReport]:
    """Rename, parse and check `data` against `spec`. Returns the typed frame (canonical
    columns first, unknown columns after, RangeIndex) and the report; never raises for data
    problems (see `ValidationReport.raise_for_errors`). `parse`: number marks, yes/no words
    and declared missing-value codes (default: ParseOptions())."""
    if data.shape[0] == 0:
        return data, ValidationReport(file, [make_issue(file, None, "no_data_rows")])
    df, issues = rename_columns(data, file, spec.aliases)
    for col in spec.required:
        if col not in df.columns:
            issues.append(make_issue(file, col, "missing_column", found=", ".join(
                map(str, data.columns)) or "none", aliases=_aliases_for(col)
                if spec.name == "panel" else ""))
    for col in df.columns:
        if col not in spec.kinds:  # a likely typo is a warning; any other extra column a note
            hint = _unknown_column_hint(col, spec)
            issues.append(make_issue(file, col, "unknown_column", hint=hint, severity=(
                "warning" if hint.startswith("did you mean") else "info")))
    for col in ID_COLUMNS:
        if col in df.columns and spec.kinds.get(col) == "text":
            issues += identifier_issues(df[col].reset_index(drop=True), col, file)
    df, type_issues = coerce_table(df, spec.kinds, spec.not_null, file, parse or DEFAULT_PARSE)
    issues += type_issues
    issues += check_rules(df, spec, file)
    order = [c for c in spec.columns if c in df.columns] + [c for c in df.columns
                                                            if c not in spec.kinds]
    return df[order], ValidationReport(file, issues)


def validate_panel(data: pd.DataFrame, *, file: str = "<DataFrame>",
                   size_scheme: str | None = "legal", parse: ParseOptions | None = None
                   ) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate a firm-year panel (DESIGN.md section 3) and return (typed panel, report).

    When `size_class` is absent and the data are otherwise valid it is derived with
    `sizeclass.classify(panel, scheme=size_scheme)` (None: not derived)."""
    df, report = validate_table(data, PANEL_SPEC, file=file, parse=parse)
    if report.ok and "size_class" in df.columns and size_scheme == "legal":
        report.issues += _size_class_contradictions(df, file)
    if report.ok and "size_class" not in df.columns and size_scheme is not None:
        try:
            derived = sizeclass.classify(df, scheme=size_scheme)
        except DataValidationError as exc:
            report.issues += exc.validation.issues
            return df, report
        except Exception as exc:  # reported, not swallowed: the panel cannot be completed
            report.issues.append(make_issue(file, "size_class", "size_class_not_derived",
                                            scheme=size_scheme, detail=exc))
            return df, report
        derived = pd.Series(derived, index=df.index).astype(object)
        df["size_class"] = pd.Series(derived.where(derived.notna(), None).tolist(), dtype="str")
        undetermined = df["size_class"].isna()
        if undetermined.any():
            r = _rows(undetermined)
            report.issues.append(make_issue(file, "size_class", "size_class_undetermined", r,
                                            [None] * min(N_SHOW, len(r)), n_rows=len(r),
                                            scheme=size_scheme))
        report.issues += check_rules(df[["size_class"]], TableSpec(
            "panel", ("size_class",), {"size_class": "code"}, (), frozenset(),
            tuple(r for r in PANEL_SPEC.column_rules if r.column == "size_class"), (), ()), file)
        df = df[[c for c in PANEL_SPEC.columns if c in df.columns]
                + [c for c in df.columns if c not in PANEL_KINDS]]
    if "size_class" in df.columns and report.ok:
        df["size_class"] = df["size_class"].astype(SIZE_CLASS_DTYPE)
    return df, report
