"""The shared vocabulary of msme-eval: member states, column names, codes and status words.

The bottom layer of the package: it imports nothing from msme_eval, so every other module can
use it (see `tests/test_layers.py` for the import direction). One home for each constant;
`schema` re-exports the column constants for code written against it.
"""
from __future__ import annotations

import re

import pandas as pd

# ASEAN member states: ISO 3166 alpha-3 -> (alpha-2, English short name, currency ISO 4217)
ASEAN: dict[str, tuple[str, str, str]] = {
    "BRN": ("BN", "Brunei Darussalam", "BND"),
    "KHM": ("KH", "Cambodia", "KHR"),
    "IDN": ("ID", "Indonesia", "IDR"),
    "LAO": ("LA", "Lao PDR", "LAK"),
    "MYS": ("MY", "Malaysia", "MYR"),
    "MMR": ("MM", "Myanmar", "MMK"),
    "PHL": ("PH", "Philippines", "PHP"),
    "SGP": ("SG", "Singapore", "SGD"),
    "THA": ("TH", "Thailand", "THB"),
    "VNM": ("VN", "Viet Nam", "VND"),
}
COUNTRIES: tuple[str, ...] = tuple(ASEAN)
SIZE_CLASSES: tuple[str, ...] = ("micro", "small", "medium", "large")
MSME_CLASSES: tuple[str, ...] = ("micro", "small", "medium")
ISIC_SECTIONS: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTU")
PROGRAMME_TYPES: tuple[str, ...] = ("finance", "market_access", "capacity_building")

MONEY_COLUMNS: tuple[str, ...] = (
    "turnover", "value_added", "assets", "exports", "loans_outstanding",
)
BOOL_COLUMNS: tuple[str, ...] = (
    "owner_female", "urban", "registered", "sells_online", "imports_or_gvc",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("firm_id", "country", "year", "sector", "employees")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    *MONEY_COLUMNS, "size_class", *BOOL_COLUMNS, "birth_year", "weight", "strata", "psu",
    "region", "programme", "programme_type", "first_treated", "support_amount",
)

# Canonical layout, dtypes and accepted spellings.
PANEL_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
# Optional programme-register columns, accepted and typed when given, never added (outside the
# survey layout PANEL_COLUMNS): selected_year = year the firm was selected/approved (the
# intention-to-treat cohort of survival and net jobs), distinct from first_treated (first year paid).
REGISTER_COLUMNS: tuple[str, ...] = ("selected_year",)
SIZE_CLASS_DTYPE = pd.CategoricalDtype(list(SIZE_CLASSES), ordered=True)
YEAR_MIN, YEAR_MAX = 2000, 2100
ROW_CONVENTION = (
    "rows are 1-based data rows: row 1 is the first record below the header "
    "(in a spreadsheet or CSV, line = row + 1)"
)
N_SHOW = 5  # offending rows / values shown per problem

# Column kind -> how raw values are parsed (see `_coerce_column`).
PANEL_KINDS: dict[str, str] = {
    "firm_id": "text", "country": "country", "year": "int", "sector": "sector",
    "employees": "int", **{c: "float" for c in MONEY_COLUMNS}, "size_class": "code",
    **{c: "bool" for c in BOOL_COLUMNS}, "birth_year": "Int64", "weight": "float",
    "strata": "text", "psu": "text", "region": "text", "programme": "text",
    "programme_type": "code", "first_treated": "Int64", "support_amount": "float",
    "selected_year": "Int64",
}
PANEL_NOT_NULL: frozenset[str] = frozenset({*REQUIRED_COLUMNS, "weight"})

MACRO_COLUMNS: tuple[str, ...] = (
    "country", "year", "gdp", "exports_total", "business_loans_total", "employment_total",
    "usd_per_lcu",
)
MACRO_REQUIRED: tuple[str, ...] = ("country", "year")
MACRO_KINDS: dict[str, str] = {
    "country": "country", "year": "int", **{c: "float" for c in MACRO_COLUMNS[2:]},
}
TARGET_COLUMNS: tuple[str, ...] = (
    "indicator", "country", "baseline_year", "baseline_value", "target_year", "target_value",
)
TARGET_KINDS: dict[str, str] = {
    "indicator": "text", "country": "area", "baseline_year": "int", "baseline_value": "float",
    "target_year": "int", "target_value": "float",
}
AGGREGATE_AREA = "ASEAN"  # accepted as `country` in the targets table (regional target); = REGION

# Explicit column-name aliases, applied after `normalise_column_name`. Kept short on purpose:
# anything not listed is kept under its own (normalised) name and reported as unknown.
COLUMN_ALIASES: dict[str, str] = {
    "firmid": "firm_id", "firm": "firm_id", "enterprise_id": "firm_id", "establishment_id": "firm_id",
    "country_code": "country", "iso3": "country", "country_iso3": "country",
    "isic_section": "sector", "sector_isic": "sector", "isic": "sector",
    "n_employees": "employees", "nb_employees": "employees", "num_employees": "employees",
    "number_of_employees": "employees", "employee_count": "employees",
    "sales": "turnover", "revenue": "turnover",
    "firm_size": "size_class", "size": "size_class",
    "female_owner": "owner_female", "female_owned": "owner_female", "women_owned": "owner_female",
    "year_founded": "birth_year", "founding_year": "birth_year", "year_established": "birth_year",
    "sampling_weight": "weight", "survey_weight": "weight", "wgt": "weight", "pweight": "weight",
    "stratum": "strata", "cluster": "psu",
    "first_treat": "first_treated", "first_year_treated": "first_treated", "gname": "first_treated",
    "support": "support_amount", "support_lcu": "support_amount",
}

# ISO 3166-1 numeric codes (accepted as country codes, e.g. from registry extracts).
_ISO_NUMERIC = {"BRN": "096", "KHM": "116", "IDN": "360", "LAO": "418", "MYS": "458",
                "MMR": "104", "PHL": "608", "SGP": "702", "THA": "764", "VNM": "704"}
# English names and common variants beyond the short names in ASEAN.
_COUNTRY_VARIANTS = {
    "BRN": ["Brunei", "Brunei Darussalam", "Negara Brunei Darussalam"],
    "KHM": ["Cambodia", "Kingdom of Cambodia"],
    "IDN": ["Indonesia", "Republic of Indonesia"],
    "LAO": ["Laos", "Lao", "Lao PDR", "Lao P.D.R.", "Lao People's Democratic Republic"],
    "MYS": ["Malaysia"],
    "MMR": ["Myanmar", "Burma", "Republic of the Union of Myanmar"],
    "PHL": ["Philippines", "The Philippines", "Philippines (the)", "Republic of the Philippines"],
    "SGP": ["Singapore", "Republic of Singapore"],
    "THA": ["Thailand", "Kingdom of Thailand"],
    "VNM": ["Viet Nam", "Vietnam", "Socialist Republic of Viet Nam"],
}


def country_key(value: str) -> str:
    """Case- and punctuation-insensitive key: "Lao P.D.R." -> "lao p d r"."""
    return re.sub(r"[^a-z0-9]+", " ", value.lower().replace("'", "")).strip()


COUNTRY_ALIASES: dict[str, str] = {}
for _iso3, (_iso2, _name, _cur) in ASEAN.items():
    for _v in (_iso3, _iso2, _name, _ISO_NUMERIC[_iso3], _ISO_NUMERIC[_iso3].lstrip("0"),
               *_COUNTRY_VARIANTS[_iso3]):
        COUNTRY_ALIASES[country_key(_v)] = _iso3

BOOL_TRUE: frozenset[str] = frozenset({"yes", "true", "1", "1.0"})
BOOL_FALSE: frozenset[str] = frozenset({"no", "false", "0", "0.0"})
# Text read as missing in CSV files (besides the empty cell).
NA_TOKENS: tuple[str, ...] = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "#N/A", ".")


# The regional aggregate: reference-area code of the ASEAN total in tables, targets and reports.
REGION = "ASEAN"
AREAS: tuple[str, ...] = (*COUNTRIES, REGION)

# Progress-to-target categories (UN ESCAP; DESIGN.md section 4), best first, then the verdict
# once the target year has passed without the target being met (`progress.assess`), and the
# label of an indicator that cannot be assessed.
STATUSES: tuple[str, ...] = ("achieved", "on track", "acceleration needed", "limited progress",
                             "regression", "not achieved")
NO_ASSESSMENT = "no assessment"

# The common columns of every estimate a user sees (`msme_eval.results`).
ESTIMATE_COLUMNS: tuple[str, ...] = ("estimate", "se", "ci_low", "ci_high", "pvalue")


def area_name(code: str) -> str:
    """English name of a member state or of the region: 'THA' -> 'Thailand'."""
    return "ASEAN (region)" if code == REGION else ASEAN[code][1]
