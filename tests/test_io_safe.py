"""Spreadsheet-safe exports: text a spreadsheet would run as a formula is neutralised in CSV
(leading ') and stored as text in Excel; numbers are left alone."""
from __future__ import annotations

import openpyxl
import pandas as pd
import pytest

from msme_eval import io


@pytest.mark.parametrize("value, expected", [
    ("=1+2", "'=1+2"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"), ("@SUM(A1:A9)", "'@SUM(A1:A9)"), ("\tx", "'\tx"), ("\r=x", "'\r=x"),
    ("-12.5", "-12.5"), ("+3", "+3"), ("-1,234.5", "-1,234.5"), ("Jakarta", "Jakarta"),
    ("", ""), (-12.5, -12.5), (None, None), ("a=b", "a=b"),
])
def test_neutralise_formula(value, expected) -> None:
    assert io.neutralise_formula(value) == expected


def test_safe_frame_and_excel(tmp_path) -> None:
    df = pd.DataFrame({"region": ["=HYPERLINK(\"http://x\",\"a\")", "Hue", None],
                       "value": [-1.5, 2.0, 3.0], "=name": ["-x", "+1", "@y"]})
    safe = io.safe_frame(df)
    assert safe["region"].tolist()[:2] == ["'=HYPERLINK(\"http://x\",\"a\")", "Hue"]
    assert safe["region"].isna().tolist() == [False, False, True]
    assert safe["value"].tolist() == [-1.5, 2.0, 3.0]
    assert list(safe.columns) == ["region", "value", "'=name"]
    assert safe["'=name"].tolist() == ["'-x", "+1", "'@y"]
    assert df["region"].iloc[0].startswith("=")             # the input is not modified
    path = io.write_excel_safe(df, tmp_path / "out.xlsx")
    ws = openpyxl.load_workbook(path).active
    cell = ws["A2"]
    assert cell.data_type == "s" and cell.value == df["region"].iloc[0]   # text, not a formula
    assert ws["B2"].value == -1.5 and ws["B2"].data_type == "n"
    assert ws["A4"].value is None
