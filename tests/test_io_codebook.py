"""Codebooks (YAML and Excel) rename, recode and label columns once, before validation; the
applied codebook is in the report and, with its SHA-256, in the manifest."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from msme_eval import io
from msme_eval.schema import DataValidationError

RAW = pd.DataFrame({
    "id_usaha": ["A1", "A1", "B2", "B2"],
    "negara": ["IDN", "IDN", "IDN", "IDN"],
    "tahun": [2020, 2021, 2020, 2021],
    "kbli": ["C", "C", "G", "G"],
    "q1_tk": [3, 4, 12, 14],
    "q7": [1, 1, 2, 2],           # 1 = woman owner, 2 = man
    "q9": ["1", "1.0", "2", "2"],  # 1 = urban
})
YAML = """
columns:
  id_usaha: {rename: firm_id, label: "Nomor usaha"}
  negara: {rename: country}
  tahun: {rename: year}
  kbli: {rename: sector, label: "KBLI section"}
  q1_tk: {rename: employees, label: "Tenaga kerja 31 Desember"}
  q7: {rename: owner_female, recode: {1: "yes", 2: "no"}}
  q9: {rename: urban, recode: {1: "yes", 2: "no"}}
"""


def _csv(tmp_path: Path, df: pd.DataFrame = RAW) -> Path:
    path = tmp_path / "survei.csv"
    df.to_csv(path, index=False)
    return path


def _xlsx_codebook(tmp_path: Path) -> Path:
    book = openpyxl.Workbook()
    cols = book.active
    cols.title = "columns"
    cols.append(["column", "rename", "label"])
    for old, new, label in [("id_usaha", "firm_id", "Nomor usaha"), ("negara", "country", None),
                            ("tahun", "year", None), ("kbli", "sector", "KBLI section"),
                            ("q1_tk", "employees", "Tenaga kerja"), ("q7", "owner_female", None),
                            ("q9", "urban", None)]:
        cols.append([old, new, label])
    rec = book.create_sheet("recode")
    rec.append(["column", "from", "to"])
    for col in ("q7", "q9"):
        rec.append([col, 1, "yes"])
        rec.append([col, 2, "no"])
    path = tmp_path / "codebook.xlsx"
    book.save(path)
    return path


@pytest.mark.parametrize("kind", ["yaml", "xlsx"])
def test_codebook_renames_recodes_and_labels(kind, tmp_path: Path) -> None:
    if kind == "yaml":
        book = tmp_path / "codebook.yaml"
        book.write_text(YAML, encoding="utf-8")
    else:
        book = _xlsx_codebook(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = io.validate_file(_csv(tmp_path), out_dir=tmp_path / "out", codebook=book)
    p = res.panel
    assert p["firm_id"].tolist() == ["A1", "A1", "B2", "B2"]
    assert p["employees"].tolist() == [3, 4, 12, 14]
    assert p["owner_female"].tolist() == [True, True, False, False]
    assert p["urban"].tolist() == [True, True, False, False]   # "1" and "1.0" both match 1
    assert not (res.report["rule"] == "codebook_unmapped_values").any()
    assert p.attrs["column_labels"]["sector"] == "KBLI section"
    note = res.report[res.report["rule"] == "codebook_applied"].iloc[0]
    sha = hashlib.sha256(book.read_bytes()).hexdigest()
    assert sha[:12] in note["message"] and "q7 (4 cells)" in note["message"]
    manifest = json.loads(res.manifest_path.read_text())
    assert manifest["codebook"]["sha256"] == sha
    assert manifest["codebook"]["renames"]["q1_tk"] == "employees"
    assert io.codebook_provenance(book)["sha256"] == sha


def test_codebook_unmapped_and_absent_are_reported(tmp_path: Path) -> None:
    book = tmp_path / "codebook.yaml"
    book.write_text(YAML + "  q99: {rename: region}\n", encoding="utf-8")
    raw = RAW.assign(q7=[1, 1, 2, 3])   # 3 is not in the recode list
    with pytest.raises(DataValidationError) as err:
        io.read_panel(_csv(tmp_path, raw), codebook=book)
    rep = err.value.report
    unmapped = rep[rep["rule"] == "codebook_unmapped_values"].iloc[0]
    assert unmapped["column"] == "q7" and unmapped["rows"] == [4]
    assert (rep["rule"] == "codebook_column_absent").any()
    bad = rep[(rep["rule"] == "not_boolean")].iloc[0]   # 3 kept as written, then refused
    assert bad["column"] == "owner_female" and bad["rows"] == [4]


def test_codebook_errors_are_clear(tmp_path: Path) -> None:
    book = tmp_path / "cb.yaml"
    book.write_text("columns:\n  a: {rename: employees}\n  b: {rename: employees}\n")
    with pytest.raises(ValueError, match="several columns renamed to"):
        io.read_codebook(book)
    book.write_text("- just a list\n")
    with pytest.raises(ValueError, match="'columns:'"):
        io.read_codebook(book)
    with pytest.raises(FileNotFoundError):
        io.read_codebook(tmp_path / "none.yaml")
