"""plots: structure of the dashboard, the comparison chart and the styled table (smoke tests)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from msme_eval import plots, progress  # noqa: E402


def _indicators() -> pd.DataFrame:
    rows = []
    for ind in [f"K{i:02d}" for i in range(1, 11)]:
        for area, base in (("ASEAN", 40.0), ("IDN", 50.0), ("VNM", 30.0)):
            for k, year in enumerate(range(2018, 2022)):
                v = base + k
                conf, obs = "F", "A"
                if ind == "K07" and area == "VNM" and year == 2021:
                    v, conf = np.nan, "A"
                if ind == "K06":
                    v, obs = np.nan, "M"
                rows.append(dict(indicator=ind, ref_area=area, time_period=year,
                                 breakdown="total", group="total", value=v, se=1.0,
                                 ci_low=v - 2, ci_high=v + 2, n=100, obs_status=obs,
                                 conf_status=conf, unit="percent", comment=""))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data():
    ind = _indicators()
    tg = pd.DataFrame([{"indicator": f"K{i:02d}", "country": "ASEAN", "baseline_year": 2018,
                        "baseline_value": 40.0, "target_year": 2025, "target_value": 50.0}
                       for i in range(1, 11)])
    return ind, progress.assess(ind, tg)


def test_kpi_dashboard_structure(data):
    ind, prog = data
    fig = plots.kpi_dashboard(ind, prog, country="ASEAN")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 10
    assert axes[0].get_title().startswith("K01")
    assert axes[4].get_title().startswith("K05")
    assert fig.legends and "status" in fig.legends[0].get_title().get_text()
    # K06 has no data: the panel says so
    k06 = axes[5]
    assert any(t.get_text() == "not available" for t in k06.texts)
    # the target line is drawn at 50
    assert any(np.allclose(line.get_ydata(), 50.0) for line in axes[0].lines
               if len(line.get_ydata()) == 2)
    plt.close(fig)
    fig = plots.kpi_dashboard(ind, None, country="IDN")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 10
    plt.close(fig)


def test_country_comparison_structure(data):
    ind, _ = data
    fig = plots.country_comparison(ind, "K07", 2021)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == ["IDN", "VNM"]
    assert "K07" in ax.get_title() and "2021" in ax.get_title()
    assert any("suppressed" in t.get_text() for t in ax.texts)
    assert ax.get_legend() is not None  # the ASEAN reference line
    plt.close(fig)


def test_styled_table_marks_and_labels(data):
    ind, prog = data
    sty = plots.styled_table(ind[ind["indicator"].isin(["K06", "K07"])])
    shown = sty.data
    assert "Value" in shown.columns and "Year" in shown.columns
    assert (shown["Value"] == plots.SUPPRESSED_MARK).sum() == 1
    assert (shown["Value"] == plots.MISSING_MARK).sum() == 12
    assert shown["Year"].iloc[0] == "2018"
    html = sty.to_html()
    assert "confidential" in html and "[c]" in html
    sty2 = plots.styled_table(prog)
    assert "Status" in sty2.data.columns
    html2 = sty2.to_html()
    # ASEAN: (43/40)^(1/3) - 1 vs (50/40)^(1/7) - 1 -> R = 0.75, acceleration needed (K06: none)
    assert (prog.loc[prog["ref_area"] == "ASEAN", "status"].dropna()
            == "acceleration needed").sum() == 9
    assert plots.STATUS_COLOURS["acceleration needed"] in html2
