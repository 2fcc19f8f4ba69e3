"""Report correctness and readability: outliers on positive values, the regional K04 median,
numbers by kind, labels, caveats once, alt text, and the Excel / SDMX-CSV downloads."""
from __future__ import annotations

import base64
import json

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import openpyxl  # noqa: E402
import pandas as pd  # noqa: E402
from nbformat.v4 import new_code_cell, new_notebook, new_output  # noqa: E402

from msme_eval import plots  # noqa: E402
from msme_eval.report import display, export, render, site  # noqa: E402
from msme_eval.report import summaries as S  # noqa: E402


def test_outliers_look_at_positive_values_and_count_zeros_apart() -> None:
    # 10 firms: 6 non-exporters (0), 4 exporters with similar values, one 10^6 times larger
    panel = pd.DataFrame({"country": ["THA"] * 10,
                          "exports": [0, 0, 0, 0, 0, 0, 100.0, 120.0, 90.0, 1e8]})
    out = S.outliers(panel, columns=["exports"]).iloc[0]
    assert out["zeros_pct"] == 60.0 and out["positive"] == 4
    # log values 4.61, 4.79, 4.50, 18.42: Q1 = 4.58, Q3 = 8.20, far-out upper 19.07 -> none
    assert out["extreme"] == 0 and out["extreme_pct"] == 0.0
    panel2 = pd.DataFrame({"country": ["THA"] * 12,
                           "exports": [0.0] * 4 + [100, 110, 120, 90, 95, 105, 115, 1e9]})
    out2 = S.outliers(panel2, columns=["exports"]).iloc[0]
    assert out2["extreme"] == 1 and out2["extreme_pct"] == 12.5  # 1 of 8 positive values


def test_regional_k04_is_the_median_of_national_values() -> None:
    rows = [("K04", "THA", 0.39), ("K04", "VNM", 0.03), ("K04", "IDN", 0.20),
            ("K04", "ASEAN", 1.08), ("K01", "ASEAN", 99.0), ("K01", "THA", 98.0)]
    ind = pd.DataFrame([dict(indicator=i, ref_area=a, time_period=2024, breakdown="total",
                             group="total", value=v, se=0.01, ci_low=v - 0.02, ci_high=v + 0.02,
                             obs_status="A", conf_status="F", unit="ratio") for i, a, v in rows])
    out = S.regional_aggregates(ind)
    k04 = out[(out["indicator"] == "K04") & (out["ref_area"] == "ASEAN")].iloc[0]
    assert k04["value"] == 0.20 and np.isnan(k04["ci_low"]) and k04["obs_status"] == "E"
    assert "median of 3 national values" in k04["comment"] and "0.03 to 0.39" in k04["comment"]
    assert "1.08" in k04["comment"]
    k01 = out[(out["indicator"] == "K01") & (out["ref_area"] == "ASEAN")].iloc[0]
    assert k01["value"] == 99.0  # comparable indicators untouched
    kpis = S.kpi_table(out, None, "ASEAN", ids=["K01", "K04"])
    assert kpis.set_index("id").loc["K04", "note"].startswith("median of 3")


def test_numbers_by_kind_and_labels() -> None:
    assert display.p_value(0.0004) == "< 0.001" and display.p_value(0.0312) == "0.031"
    assert display.fmt(-0.00001, 1) == "0.0" and display.fmt(-0.04, 2) == "-0.04"
    assert display.format_number(3355.55, display.number_kind("jobs_created")) == "3,356"
    assert display.format_number(0.253, display.number_kind("share_of_support")) == "25.3%"
    assert display.format_number(2024.0, display.number_kind("baseline_year")) == "2024"
    assert display.format_number(132692.4, "money", currency="USD") == "132,692 USD"
    for raw in ("baseline_year", "pretrend_pvalue", "log_turnover", "capacity_building"):
        shown = plots.label(raw) if raw in plots.LABELS else plots.value_label(raw)
        assert "_" not in shown, shown
    html = display.table(pd.DataFrame({"programme_type": ["capacity_building"],
                                       "covariates": [["owner_female", "rural"]],
                                       "pretrend_pvalue": [0.0001]})).text
    assert "Capacity building" in html and "Women-owned, Rural" in html and "&lt; 0.001" in html
    assert "[" not in html.replace("[c]", "") and "pretrend_pvalue" not in html


def test_status_has_word_and_symbol_and_confidential_cells_are_marked() -> None:
    df = pd.DataFrame({"id": ["K01", "K02"], "value": [np.nan, 5.0], "conf_status": ["A", "F"],
                       "status": ["on track", None]})
    html = display.table(df, status_col="status").text
    assert '<td class="st-ontrack"><span aria-hidden="true">▲</span> on track</td>' in html
    assert "no assessment" in html and ">[c]<" in html and "[c] confidential" in html
    assert "Confidentiality" not in html  # conf_status is shown through the [c] mark


def test_caveats_are_said_once() -> None:
    texts = ["Effect A is 1. This rests on parallel trends. Pre-trend p = 0.1.",
             "Effect B is 2. This rests on parallel trends. Pre-trend p = 0.5."]
    kept, common = S.factor_caveats(texts)
    assert common == ["This rests on parallel trends."]
    assert kept == ["Effect A is 1. Pre-trend p = 0.1.", "Effect B is 2. Pre-trend p = 0.5."]
    # a sentence only some readings carry is not said "for every estimate"
    three = [*texts, "Effect C is 0. The interval includes zero. This rests on parallel trends."]
    kept, common = S.factor_caveats([t.replace("Effect A is 1.", "Effect A is 1. The interval excludes zero.")
                                     for t in three])
    assert common == ["This rests on parallel trends."]
    assert "The interval excludes zero." in kept[0] and "The interval includes zero." in kept[2]
    lines = S.choices_text({"covariates_robustness": ["owner_female", "rural"], "alpha": 0.05})
    assert lines == ["Covariates robustness: Women-owned, Rural", "Alpha: 0.05"]


def test_every_image_gets_alt_text() -> None:
    fig = plots.impact_forest(pd.DataFrame({
        "outcome": ["log_turnover", "survival"], "programme_type": ["finance", "finance"],
        "att": [0.09, 0.01], "ci_low": [0.08, -0.01], "ci_high": [0.1, 0.03]}))
    assert len(fig.axes) == 2  # one panel per outcome: different scales never share an axis
    shown = display.figure(fig)
    png, meta = shown._repr_png_()
    assert png[:4] == b"\x89PNG" and meta["alt"].startswith("Average effect on supported firms")
    nb = new_notebook()
    nb.cells = [new_code_cell("md('## Jobs')", outputs=[new_output(
                    "display_data", data={"text/markdown": "## Jobs and cost", "text/plain": ""})]),
                new_code_cell("plot()", outputs=[new_output("display_data", data={
                    "image/png": base64.b64encode(b"\x89PNG x").decode(), "text/plain": "f"})])]
    body = render.notebook_body(nbformat.from_dict(nb), show_code=False)
    assert "alt=\"Figure in section 'Jobs and cost'\"" in body
    assert "No description has been provided" not in body


def test_covered_area_names_what_the_data_hold() -> None:
    assert site.covered_area(["THA", "VNM"]) == \
        "ASEAN member states in the data: Thailand, Viet Nam"
    assert site.covered_area(list(plots.KPI_IDS)[:0] + list(export.ASEAN)) == \
        "ASEAN (all member states)"


def _indicator_frame() -> pd.DataFrame:
    return pd.DataFrame([
        dict(indicator="K01", ref_area="THA", time_period=2024, breakdown="total", group="total",
             value=99.1, obs_status="A", conf_status="F", unit="percent", comment=""),
        dict(indicator="K01", ref_area="ASEAN", time_period=2024, breakdown="size_class",
             group="micro", value=np.nan, obs_status="A", conf_status="A", unit="percent",
             comment="=HYPERLINK(\"x\")")])


def test_sdmx_csv_2_format_and_structure(tmp_path) -> None:
    names = export.write_sdmx(_indicator_frame(), tmp_path)
    assert names == ["indicators.sdmx.csv", "indicators.dsd.json"]
    text = (tmp_path / names[0]).read_text().splitlines()
    assert text[0] == ("STRUCTURE,STRUCTURE_ID,ACTION,INDICATOR,REF_AREA,TIME_PERIOD,BREAKDOWN,"
                       "GROUP,OBS_VALUE,OBS_STATUS,CONF_STATUS,UNIT_MEASURE,COMMENT")
    frame = pd.read_csv(tmp_path / names[0], keep_default_na=False)
    assert set(frame["STRUCTURE"]) == {"dataflow"} and set(frame["ACTION"]) == {"I"}
    assert frame["STRUCTURE_ID"].iloc[0] == "MSME_EVAL:DF_MSME_SAP(1.0)"
    assert sorted(frame["REF_AREA"]) == ["ASEAN", "TH"]
    asean = frame[frame["REF_AREA"] == "ASEAN"].iloc[0]
    assert asean["OBS_VALUE"] == "" and asean["CONF_STATUS"] == "A"
    assert asean["BREAKDOWN"] == "SIZE_CLASS" and asean["GROUP"] == "MICRO"
    assert asean["COMMENT"].startswith("'=")  # never a live formula
    assert frame.loc[frame["REF_AREA"] == "TH", "GROUP"].iloc[0] == "_T"
    dsd = json.loads((tmp_path / names[1]).read_text())
    assert [d["id"] for d in dsd["dimensions"]] == list(export.DIMENSIONS)
    assert "ASEAN" in dsd["dimensions"][1]["codes"]


def test_workbook_contents_titles_formats_and_text_cells(tmp_path) -> None:
    progs = pd.DataFrame({"programme": ["=cmd|' /C calc'!A0", "P2"], "programme_type": ["finance"] * 2,
                          "firms_supported": [12, np.nan], "conf_status": ["F", "A"]})
    path = export.write_workbook({"programmes": progs, "indicators_THA": _indicator_frame()},
                                 tmp_path / "tables.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Contents", "programmes", "indicators_THA"]
    contents = [[c.value for c in r] for r in book["Contents"].iter_rows(min_row=2)]
    assert contents[0][0] == "programmes" and contents[0][1].startswith("Supported firms")
    assert contents[1][1].endswith("Thailand") and contents[0][5] == 2
    sheet = book["programmes"]
    assert sheet["A1"].value.startswith("Supported firms by programme")
    assert sheet["A2"].value.startswith("Units:") and sheet["A3"].value.startswith("Source:")
    assert sheet.freeze_panes == "A7"
    assert [c.value for c in sheet[6]] == ["Programme", "Programme type", "Firms supported",
                                           "Confidentiality"]
    assert sheet["A7"].value == "'=cmd|' /C calc'!A0" and sheet["A7"].data_type == "s"
    assert sheet["C7"].value == 12 and sheet["C7"].number_format == "#,##0"
    assert sheet["C8"].value == "[c]"
