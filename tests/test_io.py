"""io: every input format round-trips; every kind of bad input gives its own specific error
and validate_file writes nothing; value labels, aliases and country names are normalised."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings

import numpy as np
import pandas as pd
import pyreadstat
import pytest

import msme_eval
from msme_eval import io, schema
from msme_eval.schema import DataValidationError


def make_panel() -> pd.DataFrame:
    """4 firms x 2019-2021, two countries, two of them supported (hand-built, all columns)."""
    firms = [  # firm, country, sector, employees, first_treated, programme_type
        ("F1", "VNM", "C", 3, 2020, "finance"),
        ("F2", "VNM", "G", 12, None, None),
        ("F3", "THA", "C", 40, 2021, "capacity_building"),
        ("F4", "THA", "F", 150, None, None),
    ]
    rows = []
    for k, (fid, c, sec, emp, ft, pt) in enumerate(firms):
        for y in (2019, 2020, 2021):
            rows.append(dict(
                firm_id=fid, country=c, year=y, sector=sec, employees=emp,
                turnover=1.0e6 * (k + 1) + 1e4 * (y - 2019), value_added=3.0e5 * (k + 1),
                assets=2.0e6 * (k + 1), exports=0.0 if k % 2 else 5.0e4,
                loans_outstanding=np.nan if k == 1 else 1.0e5,
                size_class=["micro", "small", "medium", "large"][k],
                owner_female=bool(k % 2), urban=k < 2, registered=None if k == 3 else True,
                sells_online=False, imports_or_gvc=k == 2, birth_year=2005 + k,
                weight=1.5 + k, strata=f"s{c}", psu=f"p{k}", region="North" if k < 2 else "South",
                programme="SME Fund" if ft else None, programme_type=pt, first_treated=ft,
                support_amount=(1000.0 if ft and y == ft else 0.0)))
    df = pd.DataFrame(rows)
    df["first_treated"] = df["first_treated"].astype("Int64")
    return df


@pytest.fixture
def panel() -> pd.DataFrame:
    return make_panel()


@pytest.fixture
def typed(panel: pd.DataFrame) -> pd.DataFrame:
    return io.read_panel(panel)


def to_stat(df: pd.DataFrame) -> pd.DataFrame:
    """What a Stata/SPSS user would have: 0/1 numbers for booleans, '' for missing text."""
    out = df.copy()
    for c in out.columns:
        if c in schema.BOOL_COLUMNS:
            out[c] = out[c].astype("boolean").astype("Float64").astype("float64")
        elif c == "first_treated":
            out[c] = out[c].astype("Float64").astype("float64")
        elif out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].astype(object).where(out[c].notna(), "")
    return out


# ----------------------------------------------------------------------------- round trips
def test_typed_dtypes_follow_the_contract(typed: pd.DataFrame) -> None:
    d = typed.dtypes
    assert list(typed.columns) == list(schema.PANEL_COLUMNS)
    assert d["year"] == "int64" and d["employees"] == "int64"
    assert d["birth_year"] == "Int64" and d["first_treated"] == "Int64"
    assert d["turnover"] == "float64" and d["weight"] == "float64"
    assert d["size_class"] == schema.SIZE_CLASS_DTYPE
    assert all(d[c] == "boolean" for c in schema.BOOL_COLUMNS)
    assert all(pd.api.types.is_string_dtype(d[c]) for c in ("firm_id", "country", "sector",
                                                            "programme_type", "psu"))
    assert typed["registered"].isna().sum() == 3 and typed["first_treated"].isna().sum() == 6
    assert isinstance(typed.index, pd.RangeIndex)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xlsx", "dta", "sav", "parquet"])
def test_every_format_round_trips(fmt: str, panel: pd.DataFrame, typed: pd.DataFrame,
                                  tmp_path) -> None:
    path = tmp_path / f"panel.{fmt}"
    if fmt == "csv":
        panel.to_csv(path, index=False)
    elif fmt == "tsv":
        panel.to_csv(path, index=False, sep="\t")
    elif fmt == "xlsx":
        panel.to_excel(path, index=False)
    elif fmt == "dta":
        pyreadstat.write_dta(to_stat(panel), path)
    elif fmt == "sav":
        pyreadstat.write_sav(to_stat(panel), path)
    else:
        panel.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(io.read_panel(path), typed)


def test_semicolon_csv_and_messy_headers(panel: pd.DataFrame, typed: pd.DataFrame,
                                         tmp_path) -> None:
    messy = panel.rename(columns={"firm_id": " Firm ID ", "employees": "Nb-Employees",
                                  "turnover": "Sales", "value_added": "Value Added",
                                  "weight": "sampling weight", "year": "YEAR"})
    path = tmp_path / "panel.csv"
    messy.to_csv(path, index=False, sep=";")
    pd.testing.assert_frame_equal(io.read_panel(path), typed)


def test_parquet_dataset_folder(panel: pd.DataFrame, typed: pd.DataFrame, tmp_path) -> None:
    folder = tmp_path / "panel_ds"
    panel.to_parquet(folder, partition_cols=["country"], index=False)
    got = io.read_panel(folder)
    key = ["firm_id", "year"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  typed.sort_values(key).reset_index(drop=True))


def test_excel_named_sheet(panel: pd.DataFrame, typed: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as xw:
        pd.DataFrame({"note": ["read me"]}).to_excel(xw, sheet_name="readme", index=False)
        panel.to_excel(xw, sheet_name="data", index=False)
    pd.testing.assert_frame_equal(io.read_panel(path, sheet="data"), typed)
    pd.testing.assert_frame_equal(io.read_panel(path, sheet=1), typed)


@pytest.mark.parametrize("fmt", ["dta", "sav"])
def test_value_labels_become_categories_then_codes(fmt: str, tmp_path) -> None:
    df = pd.DataFrame({"firm_id": ["a", "b", "c"], "country": [1.0, 2.0, 3.0],
                       "year": [2020.0, 2020.0, 2021.0], "sector": ["C", "G", "A"],
                       "employees": [3.0, 60.0, 0.0], "owner_female": [0.0, 1.0, np.nan],
                       "size_class": [1.0, 3.0, 1.0]})
    labels = {"country": {1: "Viet Nam", 2: "Lao PDR", 3: "Burma"},
              "owner_female": {0: "No", 1: "Yes"},
              "size_class": {1: "Micro", 2: "Small", 3: "Medium", 4: "Large"}}
    path = tmp_path / f"labelled.{fmt}"
    (pyreadstat.write_dta if fmt == "dta" else pyreadstat.write_sav)(
        df, path, variable_value_labels=labels)
    raw, _ = io.read_raw(path)
    assert isinstance(raw["country"].dtype, pd.CategoricalDtype)
    assert set(raw["country"].cat.categories) == {"Viet Nam", "Lao PDR", "Burma"}
    got = io.read_panel(path)
    assert got["country"].tolist() == ["VNM", "LAO", "MMR"]
    assert got["owner_female"].tolist()[:2] == [False, True] and got["owner_female"].isna()[2]
    assert got["size_class"].tolist() == ["micro", "medium", "micro"]
    assert got["year"].dtype == "int64" and got["employees"].tolist() == [3, 60, 0]


def test_country_codes_and_names_normalised(panel: pd.DataFrame) -> None:
    spellings = ["VN", "Vietnam", "Viet Nam", " vnm ", "Lao People's Democratic Republic", "Laos",
                 "TH", "Thailand", "th", "Burma", "Brunei", "704"]
    expect = ["VNM", "VNM", "VNM", "VNM", "LAO", "LAO", "THA", "THA", "THA", "MMR", "BRN", "VNM"]
    p = panel.copy()
    p["country"] = spellings
    assert io.read_panel(p)["country"].tolist() == expect
    _, rep = schema.validate_panel(p)
    note = rep.table.set_index("rule").loc["respelled"]
    assert note["severity"] == "info" and note["n_rows"] == 12
    assert note["values"][:2] == ["VN -> VNM", "Vietnam -> VNM"]


def test_strings_of_numbers_and_bool_tokens(panel: pd.DataFrame, typed: pd.DataFrame) -> None:
    p = panel.astype({"year": str, "employees": str, "birth_year": str})
    p["employees"] = p["employees"] + ".0"  # "3.0" is a whole number: accepted, lossless
    tokens = ["yes", "No", "TRUE", "false", "1", "0"] * 2
    p["urban"] = tokens
    got = io.read_panel(p)
    assert got["year"].dtype == "int64" and got["employees"].tolist() == typed["employees"].tolist()
    assert got["urban"].tolist() == [True, False, True, False, True, False] * 2


# ----------------------------------------------------------------------------- bad inputs
def _expect(path, out_dir, rule: str, column: str | None = None, rows: list[int] | None = None,
            text: str | None = None, **kw) -> DataValidationError:
    """validate_file must raise naming `rule` (and column/rows/text), and write nothing."""
    with pytest.raises(DataValidationError) as info:
        io.validate_file(path, out_dir=out_dir, **kw)
    err = info.value
    rep = err.report
    assert list(rep.columns) == list(schema.REPORT_COLUMNS)
    hit = rep[(rep["rule"] == rule) & (rep["severity"] == "error")]
    assert len(hit) == 1, rep[["column", "rule"]]
    row = hit.iloc[0]
    if column is not None:
        assert row["column"] == column
    if rows is not None:
        assert row["rows"] == rows
    if text is not None:
        assert text in row["message"] or text in row["fix"], row["message"]
    assert f"[{rule}]" in str(err)
    assert not out_dir.exists(), "validate_file wrote something for an invalid input"
    return err


def _csv(tmp_path, df: pd.DataFrame, name: str = "panel.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


CASES = {
    # name: (mutation of the valid panel, rule, column, 1-based rows)
    "missing column": (lambda p: p.drop(columns="sector"), "missing_column", "sector", []),
    "wrong type": (lambda p: p.astype({"turnover": object}).assign(
        turnover=lambda d: d["turnover"].where(d.index != 4, "12 million")),
        "not_a_number", "turnover", [5]),
    "duplicated firm-year": (lambda p: pd.concat([p, p.iloc[[2]]], ignore_index=True),
                             "duplicate_firm_year", "firm_id+year", [3, 13]),
    "negative employees": (lambda p: p.assign(employees=p["employees"].where(p.index != 0, -2)),
                           "negative_employees", "employees", [1]),
    "unknown country": (lambda p: p.assign(country=p["country"].where(p.index != 7, "China")),
                        "unknown_country", "country", [8]),
    "weight zero": (lambda p: p.assign(weight=p["weight"].where(p.index > 1, 0.0)),
                    "weight_not_positive", "weight", [1, 2]),
    "weight missing": (lambda p: p.assign(weight=p["weight"].where(p.index != 3)),
                       "missing_value", "weight", [4]),
    "birth after year": (lambda p: p.assign(birth_year=p["birth_year"].where(p.index != 9, 2030)),
                         "birth_year_after_year", "birth_year", [10]),
    "year out of range": (lambda p: p.assign(year=p["year"].where(p.index != 5, 1999)),
                          "year_out_of_range", "year", [6]),
    "bad sector letter": (lambda p: p.assign(sector=p["sector"].where(p.index != 1, "C10")),
                          "unknown_sector", "sector", [2]),
    "negative turnover": (lambda p: p.assign(turnover=p["turnover"].where(p.index != 11, -5.0)),
                          "negative_amount", "turnover", [12]),
    "bad size_class": (lambda p: p.assign(size_class=p["size_class"].where(p.index != 0, "tiny")),
                       "unknown_size_class", "size_class", [1]),
    "bad programme_type": (lambda p: p.assign(programme_type=p["programme_type"].where(
        p.index != 0, "grants")), "unknown_programme_type", "programme_type", [1]),
    "first_treated varies": (lambda p: p.assign(first_treated=p["first_treated"].where(
        p.index != 2, 2021)), "first_treated_varies", "first_treated", [1, 2, 3]),
    "first_treated out of range": (lambda p: p.assign(first_treated=p["first_treated"].where(
        ~p["firm_id"].eq("F1"), 1990), support_amount=0.0),
        "first_treated_out_of_range", "first_treated", [1, 2, 3]),
    "non-integer employees": (lambda p: p.assign(employees=p["employees"].astype(float).where(
        p.index != 6, 2.5)), "not_whole_number", "employees", [7]),
    "bool maybe": (lambda p: p.astype({"urban": object}).assign(
        urban=lambda d: d["urban"].where(d.index != 10, "maybe")), "not_boolean", "urban", [11]),
    "missing firm_id": (lambda p: p.assign(firm_id=p["firm_id"].where(p.index != 8)),
                        "missing_value", "firm_id", [9]),
    "programme without treatment": (lambda p: p.assign(programme_type=p["programme_type"].where(
        p.index != 3, "finance")), "programme_type_without_first_treated", "programme_type", [4]),
    "treatment without programme": (lambda p: p.assign(programme_type=p["programme_type"].where(
        p.index != 0)), "first_treated_without_programme_type", "first_treated", [1]),
    "support never treated": (lambda p: p.assign(support_amount=p["support_amount"].where(
        p.index != 4, 50.0)), "support_without_treatment", "support_amount", [5]),
    "support before treatment": (lambda p: p.assign(support_amount=p["support_amount"].where(
        p.index != 0, 50.0)), "support_before_treatment", "support_amount", [1]),
    "negative support": (lambda p: p.assign(support_amount=p["support_amount"].where(
        p.index != 1, -1000.0)), "negative_amount", "support_amount", [2]),
    "two columns for turnover": (lambda p: p.assign(sales=p["turnover"]), "duplicate_column",
                                 "turnover", []),
    "infinite amount": (lambda p: p.assign(assets=p["assets"].where(p.index != 2, np.inf)),
                        "not_finite", "assets", [3]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_panel_is_rejected_with_its_own_rule(case: str, panel: pd.DataFrame, tmp_path) -> None:
    mutate, rule, column, rows = CASES[case]
    path = _csv(tmp_path, mutate(panel.copy()))
    _expect(path, tmp_path / "out", rule, column, rows)


def test_messages_are_specific(panel: pd.DataFrame, tmp_path) -> None:
    out = tmp_path / "out"
    p = panel.copy()
    p.loc[7, "country"] = "China"
    err = _expect(_csv(tmp_path, p), out, "unknown_country", text="not an ASEAN member state")
    row = err.report.iloc[0]
    assert row["values"] == ["China"] and row["n_rows"] == 1 and row["file"].endswith("panel.csv")
    assert "row 8 ('China')" in row["message"] and "VNM" in row["fix"]
    err = _expect(_csv(tmp_path, panel.drop(columns="sector")), out, "missing_column",
                  text="isic_section")
    assert "required column 'sector' is missing" in err.report.iloc[0]["message"]


def test_all_problems_reported_at_once(panel: pd.DataFrame, tmp_path) -> None:
    p = panel.astype({"urban": object})
    p.loc[1, "employees"] = -1
    p.loc[4, "country"] = "XYZ"
    p.loc[6, "urban"] = "perhaps"
    err = _expect(_csv(tmp_path, p), tmp_path / "out", "negative_employees", rows=[2])
    errors = err.errors
    assert set(errors["rule"]) == {"negative_employees", "unknown_country", "not_boolean"}
    assert errors.set_index("rule").loc["unknown_country", "rows"] == [5]
    assert errors.set_index("rule").loc["not_boolean", "values"] == ["perhaps"]
    assert "3 errors" in str(err)


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "panel.csv"
    path.write_bytes(b"")
    _expect(path, tmp_path / "out", "empty_file", text="0 bytes")


def test_header_only_file(panel: pd.DataFrame, tmp_path) -> None:
    path = _csv(tmp_path, panel.iloc[:0])
    _expect(path, tmp_path / "out", "no_data_rows")


def test_missing_file_is_also_file_not_found(tmp_path) -> None:
    err = _expect(tmp_path / "nope.csv", tmp_path / "out", "file_not_found")
    assert isinstance(err, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        msme_eval.read_panel(tmp_path / "nope.parquet")


def test_unknown_extension(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "panel.txt"
    panel.to_csv(path, index=False)
    _expect(path, tmp_path / "out", "unknown_extension", text="'.txt'")
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0 legacy excel")
    _expect(old, tmp_path / "out", "unknown_extension", text=".xlsx")


def test_wrong_sheet_lists_available_sheets(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as xw:
        panel.to_excel(xw, sheet_name="firms", index=False)
        panel.to_excel(xw, sheet_name="firms_2023", index=False)
    err = _expect(path, tmp_path / "out", "sheet_not_found", sheet="Sheet1")
    assert "'firms', 'firms_2023'" in err.report.iloc[0]["message"]


@pytest.mark.parametrize("name, fmt", [("panel.xlsx", "Excel"), ("panel.parquet", "Parquet"),
                                       ("panel.dta", "Stata"), ("panel.sav", "SPSS")])
def test_unreadable_file(name: str, fmt: str, tmp_path) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a real file \x00\x01\x02" * 20)
    _expect(path, tmp_path / "out", "unreadable_file", text=f"cannot be read as {fmt}")


def test_truncated_parquet(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "panel.parquet"
    panel.to_parquet(path)
    path.write_bytes(path.read_bytes()[:200])
    _expect(path, tmp_path / "out", "unreadable_file")


def test_not_utf8_csv_read_as_cp1252_and_said(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "panel.csv"
    p = panel.copy()
    p["programme"] = "Café"
    path.write_bytes(p.to_csv(index=False).encode("cp1252"))
    with pytest.warns(schema.DataQualityWarning, match="encoding_guessed"):
        res = io.validate_file(path, out_dir=tmp_path / "out")
    assert (res.panel["programme"] == "Café").all()
    hit = res.report[res.report["rule"] == "encoding_guessed"].iloc[0]
    assert hit["severity"] == "warning" and "'Café'" in hit["message"]
    declared = io.read_panel(path, encoding="cp1252")   # declared: nothing guessed, no warning
    assert (declared["programme"] == "Café").all()


def test_undecodable_csv(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "panel.csv"
    path.write_bytes(panel.to_csv(index=False).encode() + b"\x81\x8d\xff\xfe")
    _expect(path, tmp_path / "out", "not_utf8", text="CSV UTF-8")


def test_mixed_currency_is_a_warning_and_file_is_written(tmp_path) -> None:
    rng = np.random.default_rng(3)
    n = 12
    rows = pd.DataFrame({"firm_id": [f"F{i}" for i in range(n)] * 2, "country": "VNM",
                         "year": [2020] * n + [2021] * n, "sector": "C",
                         "employees": 10, "size_class": "small",
                         "turnover": np.round(rng.lognormal(np.log(2e9), 0.3, 2 * n))})
    rows.loc[rows["year"] == 2021, "turnover"] /= 24_000  # 2021 reported in US dollars
    path = _csv(tmp_path, rows)
    with pytest.warns(schema.DataQualityWarning, match="mixed_currency_between_years"):
        res = io.validate_file(path, out_dir=tmp_path / "out")
    w = res.report[res.report["severity"] == "warning"]
    hit = w[w["rule"] == "mixed_currency_between_years"].iloc[0]
    assert hit["n_rows"] == n and hit["rows"] == [13, 14, 15, 16, 17]
    assert "VNM 2020 -> 2021" in hit["message"]
    assert res.output_path.exists() and res.manifest_path.exists()


# ----------------------------------------------------------------------------- validate_file
def test_validate_file_writes_typed_parquet_and_manifest(panel: pd.DataFrame, typed: pd.DataFrame,
                                                         tmp_path) -> None:
    path = _csv(tmp_path, panel)
    res = io.validate_file(path, out_dir=tmp_path / "processed")
    assert res.ok and res.output_path == tmp_path / "processed" / "panel.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(res.output_path), typed)
    pd.testing.assert_frame_equal(res.panel, typed)
    man = json.loads(res.manifest_path.read_text())
    assert man["input_file"] == "panel.csv"
    assert man["input_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert man["rows"] == 12 and man["columns"] == list(schema.PANEL_COLUMNS)
    assert man["msme_eval_version"] == msme_eval.__version__
    assert man["created_utc"].endswith("+00:00") and man["n_warnings"] == 0
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "panel.manifest.json", "panel.parquet"]  # no temp files left


def test_validate_file_without_raising(panel: pd.DataFrame, tmp_path) -> None:
    p = panel.copy()
    p.loc[0, "year"] = 3000
    res = io.validate_file(_csv(tmp_path, p), out_dir=tmp_path / "out", raise_on_error=False)
    assert not res.ok and res.panel is None and res.output_path is None
    assert res.report["rule"].tolist()[0] == "year_out_of_range"
    assert not (tmp_path / "out").exists()


def test_validate_file_refuses_to_overwrite_input(panel: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "panel.parquet"
    panel.to_parquet(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        io.validate_file(path, out_dir=tmp_path)
    assert path.read_bytes() == before


def test_sha256_of_file_and_folder(tmp_path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert io.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    d = tmp_path / "ds"
    d.mkdir()
    (d / "x").write_bytes(b"abc")
    line = "x ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    assert io.sha256_file(d) == hashlib.sha256(line.encode()).hexdigest()


# ----------------------------------------------------------------------------- atomic_write
def test_atomic_write_replaces_and_cleans_up(tmp_path) -> None:
    target = tmp_path / "sub" / "out.txt"
    io.atomic_write(target, lambda tmp: tmp.write_text("one"))
    assert target.read_text() == "one"

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_write(target, broken)
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    io.atomic_write(target, lambda tmp: tmp.write_text("two"))
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- macro, targets
def test_read_macro(tmp_path) -> None:
    macro = pd.DataFrame({"Country": ["Viet Nam", "VNM", "TH"], "year": ["2020", "2021", "2020"],
                          "gdp": [8.0e15, 8.5e15, 1.6e13], "exports_total": [6.6e15, 7.1e15, 7e12],
                          "business_loans_total": [np.nan, 4e15, 9e12],
                          "employment_total": [5.4e7, 5.5e7, 3.8e7],
                          "usd_per_lcu": [4.3e-5, 4.3e-5, 0.032]})
    path = _csv(tmp_path, macro, "macro.csv")
    got = io.read_macro(path)
    assert got["country"].tolist() == ["VNM", "VNM", "THA"]
    assert got["year"].dtype == "int64" and got["gdp"].dtype == "float64"
    assert np.isnan(got.loc[0, "business_loans_total"])
    bad = macro.copy()
    bad.loc[1, "Country"] = "Vietnam"
    bad.loc[1, "year"] = "2020"
    bad.loc[2, "gdp"] = -1.0
    with pytest.raises(DataValidationError) as info:
        io.read_macro(bad)
    assert set(info.value.errors["rule"]) == {"duplicate_key", "not_positive"}
    assert info.value.errors.set_index("rule").loc["duplicate_key", "rows"] == [1, 2]


def test_read_targets(tmp_path) -> None:
    targets = pd.DataFrame({"indicator": ["K01", "K05"], "country": ["ASEAN", "Philippines"],
                            "baseline_year": [2016, 2016], "baseline_value": [0.99, 0.10],
                            "target_year": [2025, 2025], "target_value": [0.99, 0.30]})
    got = io.read_targets(targets)
    assert got["country"].tolist() == ["ASEAN", "PHL"]
    assert got["baseline_year"].dtype == "int64"
    bad = targets.assign(target_year=[2025, 2010], country=["ASEAN", "EU"])
    with pytest.raises(DataValidationError) as info:
        io.read_targets(bad)
    assert set(info.value.errors["rule"]) == {"target_before_baseline", "unknown_area"}


# ----------------------------------------------------------------------------- misc contract
def test_error_is_picklable_and_exported(panel: pd.DataFrame) -> None:
    p = panel.copy()
    p.loc[0, "sector"] = "Z"
    with pytest.raises(msme_eval.DataValidationError) as info:
        msme_eval.read_panel(p)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    pd.testing.assert_frame_equal(again.report, info.value.report)


def test_rows_are_positions_for_dataframe_input(panel: pd.DataFrame) -> None:
    p = panel.set_axis(range(100, 112))
    p.loc[105, "employees"] = -1
    with pytest.raises(DataValidationError) as info:
        io.read_panel(p)
    assert info.value.report.iloc[0]["rows"] == [6]


def test_read_panel_warns_but_returns(panel: pd.DataFrame) -> None:
    p = panel.copy()
    p.loc[3, "value_added"] = 9e9
    with pytest.warns(schema.DataQualityWarning, match="value_added_exceeds_turnover"):
        got = io.read_panel(p)
    assert len(got) == 12


def test_valid_panel_has_no_warnings(panel: pd.DataFrame) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.read_panel(panel)


# ----------------------------------------------------------------------------- size_class last
def test_size_class_derived_when_absent(panel: pd.DataFrame, tmp_path) -> None:
    sizeclass = pytest.importorskip("msme_eval.sizeclass")
    no_size = panel.drop(columns="size_class")
    path = _csv(tmp_path, no_size)
    for flag, scheme in ((True, "legal"), (False, "asean_harmonised")):
        got = io.read_panel(path, country_definitions=flag)
        assert got["size_class"].dtype == schema.SIZE_CLASS_DTYPE
        assert list(got.columns) == list(schema.PANEL_COLUMNS)
        expect = sizeclass.classify(got.drop(columns="size_class"), scheme=scheme)
        assert got["size_class"].astype(str).tolist() == pd.Series(expect).astype(str).tolist()
    # a size_class that is present is kept, never re-derived
    assert io.read_panel(panel)["size_class"].astype(str).tolist() == panel["size_class"].tolist()


def test_size_class_derivation_failures_are_errors(panel: pd.DataFrame, tmp_path,
                                                   monkeypatch) -> None:
    sizeclass = pytest.importorskip("msme_eval.sizeclass")
    path = _csv(tmp_path, panel.drop(columns="size_class"))

    def boom(data, *, scheme="legal"):
        raise ValueError("no definition for sector X")

    monkeypatch.setattr(sizeclass, "classify", boom)
    _expect(path, tmp_path / "out", "size_class_not_derived", "size_class",
            text="no definition for sector X")

    def partial(data, *, scheme="legal"):
        return pd.Series(["micro"] * 11 + [None], index=data.index, dtype="category")

    monkeypatch.setattr(sizeclass, "classify", partial)
    _expect(path, tmp_path / "out", "size_class_undetermined", "size_class", rows=[12])
