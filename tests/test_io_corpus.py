"""A corpus of malformed real-world inputs: each case is a small file and the one outcome it
must have - refused with a named rule (and rows), accepted with a named warning, or accepted
with the values it really means. No case may be read with a wrong meaning, and none may fail
with anything but a DataValidationError report."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openpyxl
import pandas as pd
import pytest

from msme_eval import io

HEADER = ["firm_id", "country", "year", "sector", "employees", "turnover", "size_class",
          "urban", "region"]
BASE = [  # VNM C micro <= 10 employees; THA G small 6-30 employees (size_definitions.yaml)
    ["F1", "VNM", "2020", "C", "3", "1000.5", "micro", "yes", "North"],
    ["F1", "VNM", "2021", "C", "4", "1200", "micro", "yes", "North"],
    ["F2", "THA", "2020", "G", "12", "5000", "small", "no", "South"],
    ["F2", "THA", "2021", "G", "14", "5200", "small", "no", "South"],
]
COL = {c: i for i, c in enumerate(HEADER)}


def rows(**cells: dict[int, str]) -> list[list[str]]:
    """BASE with cells replaced: rows(turnover={0: "8.806"}) (row index 0-based)."""
    out = [list(r) for r in BASE]
    for col, values in cells.items():
        for i, v in values.items():
            out[i][COL[col]] = v
    return out


def text(data: list[list[str]], sep: str = ",", header: list[str] = HEADER,
         above: tuple[str, ...] = ()) -> str:
    def line(r: list[str]) -> str:
        return sep.join(f'"{v}"' if sep in v or '"' in v else v for v in r)
    return "".join(f"{a}\n" for a in above) + "\n".join(line(r) for r in [header, *data]) + "\n"


@dataclass
class Case:
    """outcome: "refused" (rule = the error), "warning" (rule = the warning), "accepted"."""

    name: str
    content: Callable[[Path], Path]
    outcome: str
    rule: str | None = None
    rows: tuple[int, ...] | None = None
    values: dict[str, list[Any]] = field(default_factory=dict)
    note: str | None = None          # an info rule that must be in the report
    kwargs: dict[str, Any] = field(default_factory=dict)


def csv_file(body: str | bytes, name: str = "panel.csv") -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
        return path
    return make


def xlsx_file(data: list[list[Any]], *, formulas: dict[tuple[int, int], str] | None = None,
              above: tuple[str, ...] = (), sheet: str | None = None) -> Callable[[Path], Path]:
    """An Excel file; `formulas` {(data row, column): "=..."} written without a cached value
    (openpyxl never calculates), `sheet` puts the data on a second sheet of that name."""
    def make(folder: Path) -> Path:
        book = openpyxl.Workbook()
        ws = book.active
        if sheet:
            ws.title = "notes"
            ws.append(["see the other sheet"])
            ws = book.create_sheet(sheet)
        for a in above:
            ws.append([a])
        ws.append(HEADER)
        for r in data:
            ws.append([_excel_cell(v) for v in r])
        for (r, c), f in (formulas or {}).items():
            ws.cell(row=len(above) + 2 + r, column=COL[c] + 1, value=f)
        path = folder / "panel.xlsx"
        book.save(path)
        return path
    return make


def _excel_cell(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v
    return v


def xlsx_with_errors(cells: dict[tuple[int, str], str]) -> Callable[[Path], Path]:
    """An Excel file whose cells hold cached error values (#DIV/0!, #N/A, ...), as Excel
    saves them: a formula with t="e" and the error text as cached value."""
    def make(folder: Path) -> Path:
        path = xlsx_file(BASE)(folder)
        book = openpyxl.load_workbook(path)
        ws = book.active
        for (r, c), code in cells.items():
            ws.cell(row=2 + r, column=COL[c] + 1, value=code)
            ws.cell(row=2 + r, column=COL[c] + 1).data_type = "e"
        book.save(path)
        return path
    return make


def dta_file(data: list[list[str]]) -> Callable[[Path], Path]:
    """A Stata file of the rows (numbers stored as numbers)."""
    def make(folder: Path) -> Path:
        import pyreadstat

        df = pd.DataFrame(data, columns=HEADER)
        for c in ("year", "employees", "turnover"):
            df[c] = df[c].astype(float)
        path = folder / "panel.dta"
        pyreadstat.write_dta(df, str(path))
        return path
    return make


TURNOVER = [1000.5, 1200.0, 5000.0, 5200.0]
CASES = [
    # ----------------------------------------------------------------- layout
    Case("baseline", csv_file(text(BASE)), "accepted", values={"turnover": TURNOVER},
         note="separator_sniffed"),
    Case("title_row", csv_file(text(BASE, above=("MSME survey 2024 - Viet Nam and Thailand",))),
         "accepted", values={"turnover": TURNOVER}, note="title_row_skipped"),
    Case("title_and_blank_rows", csv_file(text(BASE, above=("Survey 2024", "", "source: MoI"))),
         "accepted", values={"employees": [3, 4, 12, 14]}, note="title_row_skipped"),
    Case("title_row_excel_export", csv_file(text(BASE, sep=";", above=("Survey 2024;;;;;;;;",))),
         "accepted", values={"turnover": TURNOVER}, note="title_row_skipped"),
    Case("header_row_declared", csv_file(text(BASE, above=("x,y", "a,b"))), "accepted",
         values={"turnover": TURNOVER}, note="header_row", kwargs={"header_row": 3}),
    Case("semicolon_decimal_comma", csv_file(text(rows(turnover={0: "1000,5"}), sep=";")),
         "accepted", values={"turnover": TURNOVER}, note="decimal_comma_sniffed"),
    Case("tab_in_csv", csv_file(text(BASE, sep="\t")), "accepted",
         values={"turnover": TURNOVER}),
    Case("pipe", csv_file(text(BASE, sep="|")), "accepted", values={"turnover": TURNOVER}),
    Case("utf8_bom", csv_file("\ufeff" + text(BASE)), "accepted",
         values={"firm_id": ["F1", "F1", "F2", "F2"]}),
    Case("empty_file", csv_file(""), "refused", "empty_file"),
    Case("header_only", csv_file(text([])), "refused", "no_data_rows"),
    Case("missing_column", csv_file(text([r[:3] + r[4:] for r in BASE],
                                         header=HEADER[:3] + HEADER[4:])),
         "refused", "missing_column"),
    # ----------------------------------------------------------------- numbers
    Case("dot_thousands_next_to_grouped", csv_file(text(rows(turnover={
        0: "8.806", 1: "12.345.678"}))), "refused", "ambiguous_thousands", rows=(1, 2)),
    Case("dot_thousands_decimal_comma_undeclared", csv_file(text(rows(turnover={
        0: "1.000,5", 2: "5.000"}), sep=";")), "refused", "ambiguous_thousands", rows=(1, 3)),
    Case("dot_thousands_declared", csv_file(text(rows(turnover={
        0: "1.000,5", 2: "5.000"}), sep=";")), "accepted", values={"turnover": TURNOVER},
         kwargs={"thousands": "."}),
    Case("all_three_decimals", csv_file(text(rows(turnover={
        0: "8.806", 1: "1.234", 2: "5.500", 3: "2.750"}))), "warning", "dot_may_be_thousands",
         values={"turnover": [8.806, 1.234, 5.5, 2.75]}),
    Case("comma_grouping_undeclared", csv_file(text(rows(turnover={0: "1,000.5"})))
         , "refused", "not_a_number", rows=(1,)),
    Case("comma_grouping_declared", csv_file(text(rows(turnover={0: "1,000.5"}))), "accepted",
         values={"turnover": TURNOVER}, kwargs={"thousands": ","}),
    Case("decimal_comma_in_comma_file", csv_file(text(rows(turnover={0: "1000,5"}))),
         "refused", "not_a_number", rows=(1,)),
    Case("space_grouping_declared", csv_file(text(rows(turnover={2: "5 000"}))), "accepted",
         values={"turnover": TURNOVER}, kwargs={"thousands": " "}),
    Case("unit_in_number", csv_file(text(rows(turnover={1: "1200 USD"}))), "refused",
         "not_a_number", rows=(2,)),
    Case("unicode_minus_negative_amount", csv_file(text(rows(turnover={1: "\u22121200"}))),
         "refused", "negative_amount", rows=(2,)),
    Case("na_token", csv_file(text(rows(turnover={1: "NA"}))), "accepted",
         values={"turnover": [1000.5, np.nan, 5000.0, 5200.0]}),
    Case("year_with_decimals", csv_file(text(rows(year={0: "2020.0"}))), "accepted",
         values={"year": [2020, 2021, 2020, 2021]}),
    Case("fractional_employees", csv_file(text(rows(employees={0: "3.5"}))), "refused",
         "not_whole_number", rows=(1,)),
    # ----------------------------------------------------------------- encodings
    Case("cp1252", csv_file(text(rows(region={2: "Hu\u00e9"})).encode("cp1252")), "warning",
         "encoding_guessed", values={"region": ["North", "North", "Hu\u00e9", "South"]}),
    Case("cp1252_declared", csv_file(text(rows(region={2: "Hu\u00e9"})).encode("cp1252")),
         "accepted", values={"region": ["North", "North", "Hu\u00e9", "South"]},
         kwargs={"encoding": "cp1252"}),
    Case("undecodable", csv_file(text(BASE).encode() + b"\x81\x8d\x8f\n"), "refused",
         "not_utf8"),
    # ----------------------------------------------------------------- yes/no words
    Case("indonesian_ya_tidak", csv_file(text(rows(urban={0: "Ya", 1: "ya", 2: "Tidak",
                                                          3: "TIDAK"}))),
         "accepted", values={"urban": [True, True, False, False]}, note="bool_words"),
    Case("vietnamese_co_khong", csv_file(text(rows(urban={0: "C\u00f3", 1: "c\u00f3",
                                                          2: "Kh\u00f4ng", 3: "kh\u00f4ng"}))),
         "accepted", values={"urban": [True, True, False, False]}, note="bool_words"),
    Case("vietnamese_decomposed_accents", csv_file(text(rows(urban={
        0: "Co\u0301", 1: "Co\u0301", 2: "Kho\u0302ng", 3: "Kho\u0302ng"}))), "accepted",
         values={"urban": [True, True, False, False]}),
    Case("thai", csv_file(text(rows(urban={0: "\u0e43\u0e0a\u0e48", 1: "\u0e43\u0e0a\u0e48",
                                           2: "\u0e44\u0e21\u0e48\u0e43\u0e0a\u0e48",
                                           3: "\u0e44\u0e21\u0e48\u0e43\u0e0a\u0e48"}))),
         "accepted", values={"urban": [True, True, False, False]}),
    Case("filipino_oo_hindi", csv_file(text(rows(urban={0: "Oo", 1: "oo", 2: "Hindi",
                                                        3: "hindi"}))),
         "accepted", values={"urban": [True, True, False, False]}),
    Case("single_letters_refused", csv_file(text(rows(urban={0: "Y", 2: "N"}))), "refused",
         "not_boolean", rows=(1, 3)),
    Case("single_letters_declared", csv_file(text(rows(urban={0: "Y", 1: "Y", 2: "N",
                                                              3: "N"}))),
         "accepted", values={"urban": [True, True, False, False]},
         kwargs={"true_words": ("Y",), "false_words": ("N",)}),
    Case("french_oui", csv_file(text(rows(urban={0: "oui"}))), "refused", "not_boolean",
         rows=(1,)),
    # ----------------------------------------------------------------- missing-value codes
    Case("sentinel_999_undeclared", csv_file(text(rows(employees={3: "999"}))), "warning",
         "possible_missing_code", rows=(4,), values={"employees": [3, 4, 12, 999]}),
    Case("sentinel_999_declared_required", csv_file(text(rows(employees={3: "999"}))),
         "refused", "missing_value", rows=(4,), kwargs={"missing_codes": {"employees": [999]}}),
    Case("sentinel_minus99_declared", csv_file(text(rows(turnover={1: "-99"}))), "accepted",
         values={"turnover": [1000.5, np.nan, 5000.0, 5200.0]}, note="missing_code_applied",
         kwargs={"missing_codes": {"*": [-99]}}),
    Case("sentinel_minus99_undeclared", csv_file(text(rows(turnover={1: "-99"}))), "refused",
         "negative_amount", rows=(2,)),
    # ----------------------------------------------------------------- identifiers and text
    Case("id_case", csv_file(text(rows(firm_id={1: "f1"}))), "refused", "id_spelling_variants",
         rows=(1, 2)),
    Case("id_zero_width_space", csv_file(text(rows(firm_id={1: "F1\u200b"}))), "refused",
         "id_spelling_variants", rows=(1, 2)),
    Case("id_surrounding_space", csv_file(text(rows(firm_id={1: " F1"}))), "refused",
         "id_spelling_variants", rows=(1, 2)),
    Case("id_inner_space_nbsp", csv_file(text(rows(firm_id={0: "F 2", 1: "F 2",
                                                            2: "F\u00a02", 3: "F\u00a02"}))),
         "refused", "id_spelling_variants", rows=(1, 2, 3, 4)),
    Case("id_bom_inside", csv_file(text(rows(firm_id={3: "\ufeffF2"}))), "refused",
         "id_spelling_variants", rows=(3, 4)),
    Case("id_invisible_no_twin", csv_file(text(rows(firm_id={2: "F\u200b2", 3: "F\u200b2"}))),
         "warning", "invisible_characters", rows=(3, 4)),
    Case("region_dotdot", csv_file(text(rows(region={1: ".."}))), "refused", "punctuation_only",
         rows=(2,)),
    Case("region_dash", csv_file(text(rows(region={3: "-"}))), "refused", "punctuation_only",
         rows=(4,)),
    Case("size_class_contradicts_employees", csv_file(text(rows(employees={0: "300",
                                                                           1: "300"}))),
         "warning", "size_class_contradicts_employees", rows=(1, 2)),
    Case("duplicate_firm_year", csv_file(text(rows(year={1: "2020"}))), "refused",
         "duplicate_firm_year", rows=(1, 2)),
    Case("unknown_country", csv_file(text(rows(country={0: "XXX"}))), "refused",
         "unknown_country", rows=(1,)),
    Case("stata_999_undeclared", dta_file(rows(employees={2: "999"})), "warning",
         "possible_missing_code", rows=(3,), values={"employees": [3, 4, 999, 14]}),
    Case("stata_minus99_declared", dta_file(rows(turnover={3: "-99"})), "accepted",
         values={"turnover": [1000.5, 1200.0, 5000.0, np.nan]}, note="missing_code_applied",
         kwargs={"missing_codes": {"turnover": [-99]}}),
    # ----------------------------------------------------------------- Excel
    Case("excel_baseline", xlsx_file(BASE), "accepted", values={"turnover": TURNOVER}),
    Case("excel_title_row", xlsx_file(BASE, above=("MSME survey 2024",)), "accepted",
         values={"employees": [3, 4, 12, 14]}, note="title_row_skipped"),
    Case("excel_named_sheet", xlsx_file(BASE, sheet="data"), "accepted",
         values={"turnover": TURNOVER}, kwargs={"sheet": "data"}),
    Case("excel_div0", xlsx_with_errors({(1, "turnover"): "#DIV/0!"}), "refused",
         "excel_error_cell", rows=(2,)),
    Case("excel_na_in_required", xlsx_with_errors({(2, "employees"): "#N/A"}), "refused",
         "excel_error_cell", rows=(3,)),
    Case("excel_value_ref", xlsx_with_errors({(0, "turnover"): "#VALUE!",
                                              (3, "turnover"): "#REF!"}),
         "refused", "excel_error_cell", rows=(1, 4)),
    Case("excel_formula_without_value", xlsx_file(BASE, formulas={(1, "turnover"): "=F2*1.2"}),
         "refused", "formula_without_value", rows=(2,)),
    Case("excel_ya_tidak", xlsx_file(rows(urban={0: "Ya", 1: "Ya", 2: "Tidak", 3: "Tidak"})),
         "accepted", values={"urban": [True, True, False, False]}),
]


def _run(case: Case, tmp_path: Path) -> io.ValidationResult:
    path = case.content(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return io.validate_file(path, out_dir=tmp_path / "out", raise_on_error=False,
                                **case.kwargs)


def _equal(got: pd.Series, want: list[Any]) -> bool:
    got = got.astype(object).where(got.notna(), None).tolist()
    want = [None if isinstance(w, float) and np.isnan(w) else w for w in want]
    return got == want


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(case: Case, tmp_path: Path) -> None:
    res = _run(case, tmp_path)       # anything but a validation report fails the test here
    rep = res.report
    errors = rep[rep["severity"] == "error"]
    if case.outcome == "refused":
        assert not res.ok and res.output_path is None
        hit = errors[errors["rule"] == case.rule]
        assert len(hit) == 1, errors[["column", "rule", "rows"]]
        if case.rows is not None:
            assert set(case.rows) <= set(hit.iloc[0]["rows"])
        assert hit.iloc[0]["fix"]
        return
    assert res.ok, errors[["column", "rule", "message"]].to_string()
    warned = set(rep.loc[rep["severity"] == "warning", "rule"])
    if case.outcome == "warning":
        assert case.rule in warned
        hit = rep[rep["rule"] == case.rule].iloc[0]
        if case.rows is not None:
            assert set(case.rows) <= set(hit["rows"])
    else:
        assert not warned, rep.loc[rep["severity"] == "warning", "message"].tolist()
    if case.note:
        assert case.note in set(rep.loc[rep["severity"] == "info", "rule"])
    for column, want in case.values.items():
        assert _equal(res.panel[column], want), (column, res.panel[column].tolist())


def test_corpus_is_large_and_mixed() -> None:
    kinds = pd.Series([c.outcome for c in CASES]).value_counts()
    assert len({c.name for c in CASES}) == len(CASES) >= 40
    assert kinds["refused"] >= 20 and kinds["accepted"] >= 15 and kinds["warning"] >= 5


def test_read_options_are_checked_and_recorded(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown read option"):
        io.read_options(thousand=".")
    with pytest.raises(ValueError, match="thousands must be"):
        io.ReadOptions(decimal=",", thousands=",")
    with pytest.raises(ValueError, match="header_row"):
        io.ReadOptions(header_row=0)
    with pytest.raises(ValueError, match="both true and false"):
        io.ReadOptions(true_words=("si",), false_words=("SI",))
    assert io.ReadOptions(thousands=".").default_decimal == ","
    path = csv_file(text(rows(turnover={0: "1000,5"}), sep=";"))(tmp_path)
    res = io.validate_file(path, out_dir=tmp_path / "out", thousands=" ")
    manifest = pd.read_json(res.manifest_path, typ="series")
    assert manifest["read_options"]["thousands"] == " "
    assert {n["rule"] for n in manifest["notes"]} >= {"separator_sniffed"}
    assert res.panel["turnover"].tolist() == TURNOVER     # decimal comma still sniffed


def test_no_missing_code_alarm_on_realistic_counts() -> None:
    """Employees of 99 or 999 are common in a real size distribution: not flagged there."""
    from msme_eval import schema, synth

    panel = synth.generate(n_firms=20_000, seed=1).panel
    assert panel["employees"].isin([99, 999]).sum() > 0
    _, rep = schema.validate_panel(panel)
    assert "possible_missing_code" not in set(rep.table["rule"])


def test_file_options_refused_for_a_dataframe() -> None:
    df = pd.DataFrame([dict(zip(HEADER, r)) for r in BASE])
    with pytest.raises(ValueError, match="header_row apply to files"):
        io.read_panel(df, header_row=2)
    out = io.read_panel(df.assign(urban=["Ya", "Ya", "Tidak", "Tidak"]), thousands=",")
    assert out["urban"].tolist() == [True, True, False, False]
