"""progress.assess: each status category, lower-is-better, too few points, no target, CSI/API."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from msme_eval import progress
from msme_eval.indicators import registry


def series(ind, area, points, **extra):
    return pd.DataFrame({
        "indicator": ind, "ref_area": area, "time_period": [p[0] for p in points],
        "breakdown": "total", "group": "total", "value": [p[1] for p in points],
        "obs_status": extra.get("obs_status", ["A"] * len(points)), "unit": "percent"})


def target(ind, area, by, bv, ty, tv):
    return {"indicator": ind, "country": area, "baseline_year": by, "baseline_value": bv,
            "target_year": ty, "target_value": tv}


# baseline 40 in 2018, target 60 in 2028: required growth (60/40)^(1/10) - 1
REQ = 1.5 ** 0.1 - 1


@pytest.fixture(scope="module")
def result():
    ind = pd.concat([
        series("K05", "AAA", [(2018, 40), (2019, 45), (2020, 61)]),     # achieved
        series("K05", "BBB", [(2019, 42), (2020, 44)]),                 # on track
        series("K05", "CCC", [(2019, 42), (2020, 43)]),                 # acceleration needed
        series("K05", "DDD", [(2020, 41)]),                             # limited progress
        series("K05", "EEE", [(2020, 38)]),                             # regression
        series("K05", "FFF", [(2018, 40)]),                             # too few points
        series("K05", "GGG", [(2019, 41), (2020, 45)]),                 # no target
        series("K05", "HHH", [(2018, 40), (2019, 42), (2020, 43)]),     # baseline from series
        series("K05", "III", [(2019, 99), (2020, 44)], obs_status=["M", "A"]),  # M excluded
    ], ignore_index=True)
    tg = pd.DataFrame([
        target("K05", a, 2018, 40.0, 2028, 60.0) for a in ("AAA", "BBB", "CCC", "DDD", "EEE",
                                                           "FFF", "III")
    ] + [target("K05", "HHH", 2018, np.nan, 2028, 60.0),
         target("K05", "ZZZ", 2018, 40.0, 2028, 60.0)])
    return progress.assess(ind, tg).set_index("ref_area")


def test_each_category_with_hand_numbers(result):
    r = result
    assert r.loc["AAA", "status"] == "achieved" and r.loc["AAA", "csi"] == 1.0
    # on track: (44/40)^(1/2) - 1 = 0.048809 vs 0.041380 -> R = 1.1795
    assert r.loc["BBB", "cr_actual"] == pytest.approx(1.1 ** 0.5 - 1)
    assert r.loc["BBB", "cr_required"] == pytest.approx(REQ)
    assert r.loc["BBB", "ratio"] == pytest.approx((1.1 ** 0.5 - 1) / REQ)
    assert r.loc["BBB", "ratio"] == pytest.approx(1.17953, abs=1e-5)
    assert r.loc["BBB", "status"] == "on track"
    # (43/40)^(1/2) - 1 = 0.036822 -> R = 0.8899: acceleration needed
    assert r.loc["CCC", "ratio"] == pytest.approx(0.88985, abs=1e-5)
    assert r.loc["CCC", "status"] == "acceleration needed"
    # (41/40)^(1/2) - 1 = 0.012423 -> R = 0.3002: limited progress
    assert r.loc["DDD", "ratio"] == pytest.approx(0.30022, abs=1e-5)
    assert r.loc["DDD", "status"] == "limited progress"
    # (38/40)^(1/2) - 1 < 0: regression; CSI = (38 - 40) / 20 = -0.1
    assert r.loc["EEE", "ratio"] < 0 and r.loc["EEE", "status"] == "regression"
    assert r.loc["EEE", "csi"] == pytest.approx(-0.1)
    assert r.loc["BBB", "csi"] == pytest.approx(0.2)
    assert r.loc["BBB", "latest_year"] == 2020 and r.loc["BBB", "n_points"] == 3


def test_thresholds_are_parameters():
    ind = series("K05", "CCC", [(2020, 43)])
    tg = pd.DataFrame([target("K05", "CCC", 2018, 40.0, 2028, 60.0)])
    assert progress.assess(ind, tg, thresholds=(0.85, 0.5))["status"].iloc[0] == "on track"


def test_time_weighted_projection_by_hand(result):
    # points (2018, 40), (2019, 42), (2020, 43), weights 1, 2, 3:
    # weighted means 2019.333 / 42.1667; slope = 4.6667 / 3.3333 = 1.4;
    # value in 2028 = 42.1667 + 1.4 * 8.6667 = 54.3; API = (54.3 - 40) / 20 = 0.715
    r = result.loc["HHH"]
    assert r["baseline_value"] == 40.0  # taken from the series at the baseline year
    assert r["projected_value"] == pytest.approx(54.3)
    assert r["api"] == pytest.approx(0.715)
    assert r["gap"] == pytest.approx(0.285)
    assert r["anticipated"] == "needs acceleration"
    # ordinary least squares: mean 2019 / 41.6667, slope 1.5 -> 41.6667 + 1.5 * 9
    assert progress.trend([2018, 2019, 2020], [40, 42, 43], 2028, weights="equal") == \
        pytest.approx(125 / 3 + 13.5)


def test_too_few_points_and_no_target_give_no_status(result):
    for area, words in (("FFF", "fewer than 2 points"), ("GGG", "no target"),
                        ("ZZZ", "fewer than 2 points")):
        r = result.loc[area]
        assert pd.isna(r["status"]) and words in r["reason"]
        assert pd.isna(r["ratio"])
    # a missing (M) observation is not a data point
    assert result.loc["III", "n_points"] == 2
    assert result.loc["III", "latest_value"] == 44.0


def test_lower_is_better():
    reg = registry()
    reg.loc[reg["id"] == "K10", "direction"] = "lower"
    ind = pd.concat([series("K10", "AAA", [(2020, 18)]), series("K10", "BBB", [(2020, 9)]),
                     series("K10", "CCC", [(2020, 22)])])
    tg = pd.DataFrame([target("K10", a, 2018, 20.0, 2028, 10.0) for a in ("AAA", "BBB", "CCC")])
    r = progress.assess(ind, tg, registry=reg).set_index("ref_area")
    # (18/20)^(1/2) - 1 = -0.05132; (10/20)^(1/10) - 1 = -0.06697; R = 0.7663
    assert r.loc["AAA", "ratio"] == pytest.approx((0.9 ** 0.5 - 1) / (0.5 ** 0.1 - 1))
    assert r.loc["AAA", "status"] == "acceleration needed"
    assert r.loc["AAA", "direction"] == "lower"
    assert r.loc["BBB", "status"] == "achieved"
    assert r.loc["CCC", "status"] == "regression"
    assert r.loc["AAA", "csi"] == pytest.approx(0.2)
    # a target that contradicts the direction is not assessed
    bad = pd.DataFrame([target("K10", "AAA", 2018, 20.0, 2028, 30.0)])
    rb = progress.assess(series("K10", "AAA", [(2020, 25)]), bad, registry=reg)
    assert pd.isna(rb["status"].iloc[0]) and "check the target" in rb["reason"].iloc[0]


def test_non_positive_values_get_no_growth_status():
    ind = series("O04", "AAA", [(2020, -5)])
    tg = pd.DataFrame([target("O04", "AAA", 2018, 10.0, 2028, 100.0)])
    r = progress.assess(ind, tg).iloc[0]
    assert pd.isna(r["status"]) and "positive" in r["reason"]
    assert r["csi"] == pytest.approx(-15 / 90)


def test_bad_targets_table():
    with pytest.raises(KeyError, match="target_value"):
        progress.assess(series("K05", "AAA", [(2020, 1)]),
                        pd.DataFrame({"indicator": ["K05"], "country": ["AAA"]}))
    assert math.isnan(progress.trend([2020], [1.0], 2030))


def test_flat_series_up_to_rounding_projects_no_progress():
    """A flat series (40 every year, one value off by 1e-13 as engines may add) projects to its
    baseline: API 0 and "no progress expected", not "needs acceleration" from rounding."""
    flat = [(2018, 40.0), (2019, 40.0), (2020, 40.0 + 4e-12), (2021, 40.0)]
    tg = pd.DataFrame([target("K05", "AAA", 2018, 40.0, 2028, 60.0)])
    r = progress.assess(series("K05", "AAA", flat), tg).iloc[0]
    assert r["api"] == 0.0 and r["anticipated"] == "no progress expected"
    # a real (if small) upward trend still counts: 40 -> 40.4 over three years
    up = [(2018, 40.0), (2019, 40.1), (2020, 40.3), (2021, 40.4)]
    r2 = progress.assess(series("K05", "AAA", up), tg).iloc[0]
    assert 0 < r2["api"] < 1 and r2["anticipated"] == "needs acceleration"
