"""schema: column/value normalisation, parsing without silent coercion, the report format, and
each data-quality warning on planted data (plus no false alarms on clean, realistic data)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from msme_eval import schema
from msme_eval.schema import DataValidationError, validate_panel


def base(n_firms: int = 6, years=(2020, 2021), country: str = "VNM", emp: int = 10,
         turnover: float = 2.0e9) -> pd.DataFrame:
    """n_firms identical firms observed in `years` (size_class given: no derivation)."""
    rows = [dict(firm_id=f"{country}{i}", country=country, year=y, sector="C", employees=emp,
                 turnover=turnover * (1 + 0.01 * i), size_class="small")
            for y in years for i in range(n_firms)]
    return pd.DataFrame(rows)


def rules(report: schema.ValidationReport, severity: str | None = None) -> set[str]:
    t = report.table
    return set(t["rule"] if severity is None else t.loc[t["severity"] == severity, "rule"])


def only(report: schema.ValidationReport, rule: str) -> pd.Series:
    t = report.table
    hit = t[t["rule"] == rule]
    assert len(hit) == 1, t[["column", "rule", "n_rows"]]
    return hit.iloc[0]


# ----------------------------------------------------------------------------- names, codes
@pytest.mark.parametrize("raw, norm", [(" Firm ID ", "firm_id"), ("Value-Added", "value_added"),
                                       ("Nb. Employees", "nb_employees"), ("YEAR", "year"),
                                       ("owner__female", "owner_female"), ("psu/cluster", "psu_cluster")])
def test_normalise_column_name(raw: str, norm: str) -> None:
    assert schema.normalise_column_name(raw) == norm


def test_aliases_map_to_contract_columns() -> None:
    assert set(schema.COLUMN_ALIASES.values()) <= set(schema.PANEL_COLUMNS)
    df, issues = schema.rename_columns(pd.DataFrame(columns=["Firm ID", "Sales", "Year Founded",
                                                             "gname"]), "f.csv")
    assert list(df.columns) == ["firm_id", "turnover", "birth_year", "first_treated"] and not issues


def test_every_member_state_by_code_and_name() -> None:
    for iso3, (iso2, name, _cur) in schema.ASEAN.items():
        for spelling in (iso3, iso3.lower(), iso2, name, name.upper()):
            assert schema.COUNTRY_ALIASES[schema.country_key(spelling)] == iso3
    assert len(set(schema.COUNTRY_ALIASES.values())) == 10
    assert schema.country_key("CN") not in schema.COUNTRY_ALIASES


# ----------------------------------------------------------------------------- parsing
def test_integers_parse_only_when_lossless() -> None:
    df = base(3, years=(2020,)).astype({"employees": object})
    df["employees"] = ["12", "1e3", " 7 "]
    typed, rep = validate_panel(df)
    assert rep.ok and typed["employees"].tolist() == [12, 1000, 7]
    df["employees"] = ["12", "12.5", "twelve"]
    _, rep = validate_panel(df)
    assert only(rep, "not_whole_number")["values"] == ["12.5"]
    assert only(rep, "not_a_number")["values"] == ["twelve"]


def test_missing_optional_integer_is_Int64() -> None:
    df = base(3, years=(2020,)).assign(birth_year=[2001.0, np.nan, 1999.0])
    typed, rep = validate_panel(df)
    assert rep.ok and typed["birth_year"].dtype == "Int64"
    assert typed["birth_year"].isna().tolist() == [False, True, False]


@pytest.mark.parametrize("bad", ["maybe", "Y", "2", 2, "oui"])
def test_booleans_are_strict(bad) -> None:
    df = base(3, years=(2020,)).assign(urban=pd.Series(["yes", bad, None], dtype=object))
    typed, rep = validate_panel(df)
    hit = only(rep, "not_boolean")
    assert hit["rows"] == [2] and hit["column"] == "urban"


def test_numeric_ids_become_text_without_decimals() -> None:
    df = base(3, years=(2020,)).assign(firm_id=[101.0, 102.0, 103.0], psu=[1, 2, 2])
    typed, rep = validate_panel(df)
    assert rep.ok and typed["firm_id"].tolist() == ["101", "102", "103"]
    assert typed["psu"].tolist() == ["1", "2", "2"]


def test_codes_are_case_normalised() -> None:
    df = base(3, years=(2020,)).assign(sector=["c", " G ", "a"], size_class=["Micro", "SMALL", "small"])
    typed, rep = validate_panel(df)
    assert rep.ok and typed["sector"].tolist() == ["C", "G", "A"]
    assert typed["size_class"].astype(str).tolist() == ["micro", "small", "small"]


# ----------------------------------------------------------------------------- report format
def test_report_layout_and_row_convention() -> None:
    df = base(8, years=(2020,))
    df.loc[[1, 2, 3, 4, 5, 6, 7], "employees"] = -1
    df.loc[0, "sector"] = "Q9"
    _, rep = validate_panel(df, file="survey.csv")
    t = rep.table
    assert list(t.columns) == list(schema.REPORT_COLUMNS)
    neg = only(rep, "negative_employees")
    assert neg["n_rows"] == 7 and neg["rows"] == [2, 3, 4, 5, 6]  # first 5 of 7, 1-based
    assert neg["file"] == "survey.csv" and neg["severity"] == "error"
    assert "7 rows, first: row 2 (-1)" in neg["message"]
    assert schema.ROW_CONVENTION in rep.text()
    json.dumps(t.to_dict("records"))  # report is JSON-serialisable
    with pytest.raises(DataValidationError) as info:
        rep.raise_for_errors()
    assert set(info.value.errors["rule"]) == {"negative_employees", "unknown_sector"}
    assert info.value.warnings.empty


def test_errors_listed_before_warnings() -> None:
    df = base(6).assign(sectr="x")
    df.loc[0, "country"] = "SG "  # normalised, fine
    df.loc[1, "year"] = 2200
    _, rep = validate_panel(df)
    t = rep.table
    order = t["severity"].map(schema.SEVERITY_ORDER).tolist()
    assert order == sorted(order) and t["severity"].tolist()[-1] == "info"  # 'SG ' -> 'SGP'
    assert {"year_out_of_range"} <= rules(rep, "error") and "unknown_column" in rules(rep, "warning")


def test_unknown_column_kept_and_hinted() -> None:
    df = base(3, years=(2020,)).assign(employes=1, notes="free text")
    typed, rep = validate_panel(df)
    assert rep.ok and list(typed.columns)[-2:] == ["employes", "notes"]
    assert rep.warnings["column"].tolist() == ["employes"]  # likely typo: a warning
    assert "did you mean 'employees'?" in rep.warnings["fix"].iloc[0]
    note = rep.table[rep.table["column"] == "notes"].iloc[0]  # other extra column: a note
    assert note["severity"] == "info" and note["rule"] == "unknown_column"


# ----------------------------------------------------------------------------- warnings
def test_employees_implausible() -> None:
    df = base()
    df.loc[3, "employees"] = 250_000
    df.loc[3, "turnover"] *= 25_000  # keep turnover per employee ordinary
    _, rep = validate_panel(df)
    assert rep.ok and only(rep, "employees_implausible")["rows"] == [4]


def test_value_added_exceeds_turnover() -> None:
    df = base().assign(value_added=1.0e9)
    df.loc[5, "value_added"] = 9.0e9
    _, rep = validate_panel(df)
    hit = only(rep, "value_added_exceeds_turnover")
    assert rep.ok and hit["rows"] == [6] and hit["values"][0].startswith("value_added=9000000000")


def test_turnover_per_employee_extreme_single_row() -> None:
    df = base(8)
    df.loc[2, "turnover"] *= 5_000
    _, rep = validate_panel(df)
    assert rep.ok and only(rep, "turnover_per_employee_extreme")["rows"] == [3]
    assert "mixed_currency_within_year" not in rules(rep)  # one row is not a cluster


def test_mixed_currency_within_a_year() -> None:
    df = base(10, years=(2021,))
    df.loc[[1, 4, 7], "turnover"] /= 24_000  # three firms reported in US dollars
    _, rep = validate_panel(df)
    hit = only(rep, "mixed_currency_within_year")
    assert rep.ok and hit["rows"] == [2, 5, 8] and "VNM 2021: 3 of 10 rows" in hit["message"]


def test_mixed_currency_between_years() -> None:
    df = pd.concat([base(6, years=(2019, 2020)), base(6, years=(2021,), turnover=2e9 / 24_000)],
                   ignore_index=True)
    _, rep = validate_panel(df)
    hit = only(rep, "mixed_currency_between_years")
    assert rep.ok and hit["n_rows"] == 6 and hit["rows"] == [13, 14, 15, 16, 17]
    assert "VNM 2020 -> 2021" in hit["message"]


def test_weights_dispersed() -> None:
    # Kish 1 + CV^2 = n sum(w^2) / sum(w)^2 = 30 (28 + 2e8) / 20028^2 = 14.96 > 10
    df = base(30, years=(2020,)).assign(weight=1.0)
    df.loc[[6, 20], "weight"] = 1.0e4
    _, rep = validate_panel(df)
    hit = only(rep, "weights_dispersed")
    assert rep.ok and hit["rows"] == [7, 21] and "Kish 1+CV^2 = 15" in hit["message"]
    # a stratified design (10 take-all firms with weight 1, 20 sampled with weight 2000):
    # max/min = 2000 but 1 + CV^2 = 30 (10 + 20 * 4e6) / 40010^2 = 1.5 -> no warning
    df["weight"] = [1.0] * 10 + [2000.0] * 20
    _, rep = validate_panel(df)
    assert rep.table.empty


def test_non_consecutive_years() -> None:
    df = base(3, years=(2019, 2020, 2021))
    df = df[~((df["firm_id"] == "VNM1") & (df["year"] == 2020))].reset_index(drop=True)
    _, rep = validate_panel(df)
    hit = only(rep, "non_consecutive_years")
    assert rep.ok and hit["n_rows"] == 1 and hit["values"] == ["firm_id=VNM1, year=2021"]
    assert hit["rows"] == [7]


def test_treatment_warnings() -> None:
    df = base(3, years=(2019, 2020, 2021))
    df["first_treated"] = pd.array([2030, None, 2020] * 3, dtype="Int64")
    df["programme_type"] = ["finance", None, "finance"] * 3
    df.loc[8, "programme_type"] = "market_access"  # VNM2 in 2021
    _, rep = validate_panel(df)
    assert rep.ok
    out = only(rep, "first_treated_outside_panel")
    assert out["rows"] == [1, 4, 7] and "(2019-2021)" in out["message"]
    assert only(rep, "programme_type_varies")["rows"] == [3, 6, 9]


def test_birth_year_implausible() -> None:
    df = base(3, years=(2020,)).assign(birth_year=[1850, 2000, 2010])
    _, rep = validate_panel(df)
    assert rep.ok and only(rep, "birth_year_implausible")["rows"] == [1]


def test_no_false_alarms_on_realistic_data() -> None:
    """Lognormal turnover in each country's own currency scale, moderate weights, no gaps."""
    rng = np.random.default_rng(11)
    scale = {"VNM": 2.0e9, "SGP": 8.0e4, "IDN": 1.5e9, "THA": 3.0e6}
    frames = []
    for c, s in scale.items():
        d = base(40, years=(2019, 2020, 2021), country=c)
        d["employees"] = rng.integers(0, 120, len(d))
        d["turnover"] = np.round(s * np.maximum(d["employees"], 1) * rng.lognormal(0, 0.8, len(d)))
        d["value_added"] = d["turnover"] * rng.uniform(0.2, 0.6, len(d))
        d["weight"] = rng.lognormal(3, 0.6, len(d))
        frames.append(d)
    _, rep = validate_panel(pd.concat(frames, ignore_index=True))
    assert rep.table.empty, rep.table[["rule", "n_rows"]]


def test_data_validation_error_message_names_file_column_rule_fix() -> None:
    df = base(3, years=(2020,))
    df.loc[2, "country"] = "Hong Kong"
    with pytest.raises(DataValidationError) as info:
        schema.validate_panel(df, file="data/raw/s.xlsx")[1].raise_for_errors()
    msg = str(info.value)
    for part in ("data/raw/s.xlsx", "column 'country'", "[unknown_country]", "row 3 ('Hong Kong')",
                 "fix: use an ISO 3166 code"):
        assert part in msg


def test_macro_exchange_rate_jump_and_target_duplicates() -> None:
    macro = pd.DataFrame({"country": ["IDN"] * 3, "year": [2019, 2020, 2021],
                          "gdp": [1.5e16, 1.5e16, 1.6e16],
                          "usd_per_lcu": [7.0e-5, 7.1e-5, 0.071]})  # 2021 typed per 1000 IDR
    _, rep = schema.validate_table(macro, schema.MACRO_SPEC)
    assert rep.ok and only(rep, "usd_per_lcu_jump")["rows"] == [3]
    targets = pd.DataFrame({"indicator": ["K01", "K01"], "country": ["VNM", "Viet Nam"],
                            "baseline_year": [2016, 2016], "baseline_value": [0.9, 0.9],
                            "target_year": [2025, 2025], "target_value": [0.95, None]})
    _, rep = schema.validate_table(targets, schema.TARGETS_SPEC)
    assert only(rep, "duplicate_key")["rows"] == [1, 2]
    assert only(rep, "missing_value")["column"] == "target_value"
