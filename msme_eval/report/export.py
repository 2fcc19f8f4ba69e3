"""Downloads a statistician can use: ``tables.xlsx`` and SDMX-CSV 2.0 for the indicator table.

**Excel** (`write_workbook`): a *Contents* sheet (sheet, title, units, source, notes, rows),
then one sheet per table with its title, units, source and notes above the header row, the
header labelled as on the HTML pages (`msme_eval.plots.label`), frozen below the header,
number formats by kind (`display.number_kind`: years without separators, counts as integers,
p-values and shares with fixed decimals), confidential cells (``conf_status`` not F) written
``[c]`` as on the pages, and every text cell stored as text (after `io.neutralise_formula`), so
a programme called ``=HYPERLINK(...)`` is shown, never run.

**SDMX-CSV 2.0** (`write_sdmx`): one row per observation with the columns ``STRUCTURE,
STRUCTURE_ID, ACTION`` (dataflow ``MSME_EVAL:DF_MSME_SAP(1.0)``, action ``I``, information),
dimensions ``INDICATOR, REF_AREA, TIME_PERIOD, BREAKDOWN, GROUP``, the measure ``OBS_VALUE`` and
the attributes ``OBS_STATUS, CONF_STATUS, UNIT_MEASURE, COMMENT``. ``REF_AREA`` uses ISO 3166
alpha-2 codes (as SDMX REF_AREA code lists do) and ``ASEAN_CODE`` ("ASEAN") for the regional
aggregate; the data structure (code lists included) is written beside it as
``indicators.dsd.json`` (`dsd`). Reference: SDMX-CSV 2.0 field guide (SDMX Technical Working
Group, github.com/sdmx-twg/sdmx-csv), SDMX 3.0 information model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from msme_eval import io
from msme_eval.contract import ASEAN, REGION
from msme_eval.plots import label
from msme_eval.report.display import SUPPRESSED, number_kind, suppressed_rows

SOURCE = ("msme-eval monitoring cycle: design-based estimates from the firm-level panel "
          "(survey weights, strata, primary sampling units)")
SUPPRESSION_NOTE = ("[c] = confidential, suppressed by disclosure control (fewer than the "
                    "minimum number of firms, or one or two firms dominate the total); "
                    "empty = not available.")
# table name (file stem before the _ISO3 suffix) -> (title, units, notes)
TABLES: dict[str, tuple[str, str, str]] = {
    "kpis": ("Key indicators: latest value and progress to target",
             "percent unless the Unit column says otherwise (K04: ratio)",
             "Regional K04 is the median of national values (see Note)."),
    "indicators": ("All indicators by area, year and breakdown (tidy)",
                   "see the unit column", "SDMX-like columns; the SDMX-CSV file holds the same."),
    "progress": ("Progress towards the targets (UN ESCAP method)", "as the indicator",
                 "Status from the ratio of actual to required growth."),
    "availability": ("Latest year with a published value, by indicator and member state",
                     "year", "'–' = not computable or suppressed."),
    "programmes": ("Supported firms by programme", "firms (distinct)", "Suppressed as counts."),
    "impact_headline": ("Average effect on supported firms (staggered DiD)",
                        "log points for log outcomes; employees; probability for survival",
                        "Callaway and Sant'Anna (2021); 95% confidence intervals."),
    "impact_jobs": ("Net jobs per supported firm and cost per job", "jobs; currency column",
                    "Cost per job = support spent / jobs created (Fieller interval)."),
    "impact_inclusion": ("Effects by group (inclusion)", "as the outcome", ""),
    "impact_robustness": ("Robustness checks", "as the outcome", ""),
}
NUMBER_FORMATS = {"year": "0", "count": "#,##0", "pvalue": "0.000", "percent": "0.0",
                  "share": "0.0%", "money": "#,##0", "plain": "#,##0.000"}
HEADER_ROW = 6  # title, units, source, notes, blank, header


def table_meta(stem: str) -> tuple[str, str, str, str]:
    """(title, units, source, notes) of an exported table from its file stem."""
    base, _, area = stem.rpartition("_")
    if area in ASEAN:
        title, units, notes = TABLES.get(base, (base, "", ""))
        title = f"{title} — {ASEAN[area][1]}"
    else:
        title, units, notes = TABLES.get(stem, (label(stem), "", ""))
        if stem in TABLES:
            title = f"{title} — {REGION}"
    return title, units, SOURCE, notes


def _cell(value: Any, suppressed: bool) -> Any:
    if isinstance(value, str):
        return io.neutralise_formula(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return SUPPRESSED if suppressed else None
    return value.item() if hasattr(value, "item") else value


def _write_sheet(book: Any, name: str, df: pd.DataFrame, meta: tuple[str, str, str, str]) -> None:
    from openpyxl.styles import Font

    sheet = book.create_sheet(name)
    title, units, source, notes = meta
    for row, text in enumerate((title, f"Units: {units}", f"Source: {source}",
                                f"Notes: {' '.join(x for x in (notes, SUPPRESSION_NOTE) if x)}"), 1):
        sheet.cell(row=row, column=1, value=io.neutralise_formula(text)).data_type = "s"
    sheet.cell(row=1, column=1).font = Font(bold=True, size=12)
    hidden = suppressed_rows(df).to_numpy(dtype=bool)  # per row, read once per cell: no .iloc
    for j, col in enumerate(df.columns, 1):
        head = sheet.cell(row=HEADER_ROW, column=j, value=io.neutralise_formula(label(col)))
        head.font, head.data_type = Font(bold=True), "s"
        sheet.column_dimensions[head.column_letter].width = max(10, min(40, len(label(col)) + 2))
    kinds = [number_kind(c) for c in df.columns]
    for i, row in enumerate(df.itertuples(index=False), HEADER_ROW + 1):
        for j, (value, kind) in enumerate(zip(row, kinds), 1):
            cell = sheet.cell(row=i, column=j, value=_cell(value, bool(hidden[i - HEADER_ROW - 1])))
            if isinstance(cell.value, str):
                cell.data_type = "s"
            elif isinstance(cell.value, (int, float)):
                cell.number_format = NUMBER_FORMATS[kind]
    sheet.freeze_panes = sheet.cell(row=HEADER_ROW + 1, column=1)


def write_workbook(tables: dict[str, pd.DataFrame], path: Path) -> Path:
    """``tables.xlsx``: Contents sheet + one sheet per table (module docstring)."""
    import openpyxl
    from openpyxl.styles import Font

    book = openpyxl.Workbook()
    contents = book.active
    contents.title = "Contents"
    contents.append(["Sheet", "Title", "Units", "Source", "Notes", "Rows"])
    for cell in contents[1]:
        cell.font = Font(bold=True)
    for sheet, (stem, df) in _sheet_names(tables).items():
        meta = table_meta(stem)
        _write_sheet(book, sheet, df, meta)
        contents.append([io.neutralise_formula(x) for x in (sheet, *meta)] + [len(df)])
    for row in contents.iter_rows(min_row=2):
        for cell in row[:5]:
            cell.data_type = "s"
    contents.freeze_panes = "A2"
    for col, width in zip("ABCDEF", (22, 60, 30, 40, 60, 8)):
        contents.column_dimensions[col].width = width
    io.atomic_write(path, book.save)
    return path


def _sheet_names(tables: dict[str, pd.DataFrame]) -> dict[str, tuple[str, pd.DataFrame]]:
    """Unique sheet names of at most 31 characters."""
    out: dict[str, tuple[str, pd.DataFrame]] = {}
    for stem, df in tables.items():
        sheet, i = stem[:31], 1
        while sheet in out or sheet == "Contents":
            i += 1
            sheet = f"{stem[:28]}~{i}"
        out[sheet] = (stem, df)
    return out


# --------------------------------------------------------------------------------------------
# SDMX-CSV 2.0
# --------------------------------------------------------------------------------------------
DATAFLOW = "MSME_EVAL:DF_MSME_SAP(1.0)"
ASEAN_CODE = "ASEAN"
DIMENSIONS = ("INDICATOR", "REF_AREA", "TIME_PERIOD", "BREAKDOWN", "GROUP")
ATTRIBUTES = ("OBS_STATUS", "CONF_STATUS", "UNIT_MEASURE", "COMMENT")
SDMX_COLUMNS = ("STRUCTURE", "STRUCTURE_ID", "ACTION", *DIMENSIONS, "OBS_VALUE", *ATTRIBUTES)
TOTAL_CODE = "_T"  # SDMX code for "total" (no breakdown)


def ref_area_code(area: str) -> str:
    """ISO 3166 alpha-2 code of a member state; ``ASEAN_CODE`` for the regional aggregate."""
    if area == REGION:
        return ASEAN_CODE
    if area in ASEAN:
        return ASEAN[area][0]
    raise ValueError(f"unknown ref_area {area!r}: expected one of {sorted(ASEAN)} or {REGION}")


def _code(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return TOTAL_CODE if text.strip().lower() in ("", "total", "_t", "_z", "nan", "<na>") \
        else text.upper().replace(" ", "_")


def sdmx_frame(ind: pd.DataFrame) -> pd.DataFrame:
    """The tidy indicator table as SDMX-CSV 2.0 rows (module docstring)."""
    def col(name: str, default: Any = "") -> pd.Series:
        return ind[name] if name in ind else pd.Series(default, index=ind.index)

    out = pd.DataFrame({
        "STRUCTURE": "dataflow", "STRUCTURE_ID": DATAFLOW, "ACTION": "I",
        "INDICATOR": ind["indicator"].astype(str),
        "REF_AREA": ind["ref_area"].astype(str).map(ref_area_code),
        "TIME_PERIOD": ind["time_period"].astype(int).astype(str),
        "BREAKDOWN": col("breakdown").map(_code), "GROUP": col("group").map(_code),
        "OBS_VALUE": pd.to_numeric(ind["value"], errors="coerce"),
        "OBS_STATUS": col("obs_status", "A").fillna("A").astype(str),
        "CONF_STATUS": col("conf_status", "F").fillna("F").astype(str),
        "UNIT_MEASURE": col("unit").fillna("").astype(str).str.upper(),
        "COMMENT": col("comment").fillna("").astype(str).map(io.neutralise_formula),
    }, index=ind.index)
    return out.sort_values(list(DIMENSIONS)).reset_index(drop=True)[list(SDMX_COLUMNS)]


def dsd(frame: pd.DataFrame) -> dict[str, Any]:
    """A small data structure description of ``sdmx_frame`` output: concepts, roles, code
    lists (with the codes used) and the meaning of each attribute value."""
    areas = {ASEAN[c][0]: ASEAN[c][1] for c in ASEAN}
    areas[ASEAN_CODE] = "ASEAN aggregate of the member states in the data (not an ISO code)"
    return {
        "dataflow": DATAFLOW, "format": "SDMX-CSV 2.0", "action": {"I": "information"},
        "dimensions": [
            {"id": "INDICATOR", "codes": sorted(frame["INDICATOR"].unique()),
             "description": "indicator id of the msme-eval registry (K01-K10 key indicators)"},
            {"id": "REF_AREA", "codelist": "ISO 3166-1 alpha-2 + ASEAN",
             "codes": {k: v for k, v in areas.items() if k in set(frame["REF_AREA"])}},
            {"id": "TIME_PERIOD", "format": "YYYY (calendar year)"},
            {"id": "BREAKDOWN", "codes": sorted(frame["BREAKDOWN"].unique()),
             "description": "_T = no breakdown; else the panel column the group comes from"},
            {"id": "GROUP", "codes": sorted(frame["GROUP"].unique()),
             "description": "_T = total; size classes; TRUE/FALSE for yes/no breakdowns"}],
        "measure": {"id": "OBS_VALUE", "description": "estimate; empty when suppressed or "
                    "not available (see CONF_STATUS / OBS_STATUS)"},
        "attributes": [
            {"id": "OBS_STATUS", "codes": {"A": "normal", "E": "estimated (regional median of "
                                           "national values)", "M": "missing"}},
            {"id": "CONF_STATUS", "codes": {"F": "free", "A": "primary: too few firms",
                                            "O": "primary: one firm dominates",
                                            "T": "primary: two firms dominate",
                                            "D": "secondary suppression", "C": "confidential"}},
            {"id": "UNIT_MEASURE", "codes": sorted(frame["UNIT_MEASURE"].unique())},
            {"id": "COMMENT", "description": "free text (how a regional value is aggregated)"}],
    }


def write_sdmx(ind: pd.DataFrame, dest: Path, stem: str = "indicators") -> list[str]:
    """``<stem>.sdmx.csv`` and ``<stem>.dsd.json`` in ``dest``; returns the file names."""
    frame = sdmx_frame(ind)
    csv = dest / f"{stem}.sdmx.csv"
    io.atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
    desc = dest / f"{stem}.dsd.json"
    io.atomic_write(desc, lambda tmp: Path(tmp).write_text(
        json.dumps(dsd(frame), indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8"))
    return [csv.name, desc.name]
