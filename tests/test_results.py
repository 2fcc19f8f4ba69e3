"""The one result interface: every estimate answers to tidy / choices / summary / plot / alpha."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from msme_eval.results import ResultFrame, check_alpha, inference  # noqa: E402


def test_inference_normal_and_t_by_hand() -> None:
    r = inference(2.0, 0.5, alpha=0.10)
    q = stats.norm.ppf(0.95)
    assert r["ci_low"] == pytest.approx(2 - q * 0.5) and r["ci_high"] == pytest.approx(2 + q * 0.5)
    assert r["pvalue"] == pytest.approx(2 * stats.norm.sf(4.0))
    t = inference(np.array([2.0, 1.0]), np.array([0.5, 0.0]), alpha=0.05, df=np.array([4, 4]))
    assert t["ci_high"][0] == pytest.approx(2 + stats.t.ppf(0.975, 4) * 0.5)
    assert np.isnan(t["ci_low"][1]) and np.isnan(t["pvalue"][1])  # no SE, no interval
    with pytest.raises(ValueError, match="alpha"):
        check_alpha(95)


def test_result_frame_is_a_dataframe_with_the_common_face() -> None:
    table = pd.DataFrame({"indicator": ["K01", "K02"], "value": [97.0, 60.0], "se": [0.5, 1.0],
                          "ci_low": [96.0, 58.0], "ci_high": [98.0, 62.0], "pvalue": [0.0, 0.0]})
    rf = ResultFrame.wrap(table, choices={"weight": "weight", "df": "satterthwaite"}, alpha=0.05,
                          title="Indicators", estimate_column="value")
    assert isinstance(rf, pd.DataFrame) and rf.alpha == 0.05 and rf.choices["df"] == "satterthwaite"
    assert list(rf.tidy().columns[:2]) == ["indicator", "estimate"]
    assert "df: satterthwaite" in rf.summary() and "<li>weight: weight</li>" in rf._repr_html_()
    assert type(rf[rf["value"] > 90]) is pd.DataFrame  # derived frames carry nothing stale
    ax = rf.plot()
    assert len(ax.get_yticklabels()) == 2


def test_interval_columns_named_after_the_estimate() -> None:
    t = pd.DataFrame({"indicator": ["K05"], "csi": [0.8], "csi_ci_low": [0.5], "csi_ci_high": [1.1]})
    tidy = ResultFrame.wrap(t, choices={}, estimate_column="csi").tidy()
    assert tidy[["estimate", "ci_low", "ci_high"]].iloc[0].tolist() == [0.8, 0.5, 1.1]
