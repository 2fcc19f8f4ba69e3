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
    # a target on the worse side of the baseline was met at baseline: still met -> achieved,
    # with the note asking to check the target
    bad = pd.DataFrame([target("K10", "AAA", 2018, 20.0, 2028, 30.0)])
    rb = progress.assess(series("K10", "AAA", [(2020, 25)]), bad, registry=reg).iloc[0]
    assert rb["status"] == "achieved" and "already met at baseline" in rb["reason"]
    assert "check the target" in rb["reason"] and pd.isna(rb["ratio"])


def test_non_positive_values_use_annual_changes():
    """Growth rates need positive values; otherwise R = ratio of average annual changes."""
    ind = pd.concat([series("O04", "AAA", [(2020, -5)]), series("O04", "BBB", [(2020, -4)]),
                     series("O04", "CCC", [(2020, 10)])])
    tg = pd.DataFrame([target("O04", "AAA", 2018, 10.0, 2028, 100.0),
                       target("O04", "BBB", 2018, -10.0, 2028, 20.0),
                       target("O04", "CCC", 2018, 0.0, 2028, 100.0)])
    r = progress.assess(ind, tg).set_index("ref_area")
    # 10 -> -5 in 2 years: -7.5 a year against +9 a year needed: R = -0.8333, regression
    assert r.loc["AAA", "cr_actual"] == pytest.approx(-7.5)
    assert r.loc["AAA", "cr_required"] == pytest.approx(9.0)
    assert r.loc["AAA", "ratio"] == pytest.approx(-7.5 / 9)
    assert r.loc["AAA", "status"] == "regression"
    assert r.loc["AAA", "csi"] == pytest.approx(-15 / 90)
    assert r.loc["AAA", "ratio_form"] == "annual change"
    assert "zero or negative" in r.loc["AAA", "reason"]
    # -10 -> -4: +3 a year, needed (20 + 10) / 10 = 3 a year: R = 1, on track; CSI 6 / 30
    assert r.loc["BBB", "ratio"] == pytest.approx(1.0)
    assert r.loc["BBB", "status"] == "on track" and r.loc["BBB", "csi"] == pytest.approx(0.2)
    # zero baseline: +5 a year against 10 needed: R = 0.5, limited progress; CSI 0.1
    assert r.loc["CCC", "ratio"] == pytest.approx(0.5)
    assert r.loc["CCC", "status"] == "limited progress"
    assert r.loc["CCC", "csi"] == pytest.approx(0.1)
    # API from the two-point line: BBB -4 + 3 * 8 = 20 in 2028 -> API 1, expected to meet
    assert r.loc["BBB", "projected_value"] == pytest.approx(20.0)
    assert r.loc["BBB", "api"] == pytest.approx(1.0)
    assert r.loc["BBB", "anticipated"] == "expected to meet"


def test_zero_target_lower_is_better():
    reg = registry()
    reg.loc[reg["id"] == "K10", "direction"] = "lower"
    tg = pd.DataFrame([target("K10", "AAA", 2018, 8.0, 2028, 0.0)])
    r = progress.assess(series("K10", "AAA", [(2020, 6)]), tg, registry=reg).iloc[0]
    # -1 a year against -0.8 a year needed: R = 1.25, on track; CSI (6 - 8) / (0 - 8) = 0.25
    assert r["ratio"] == pytest.approx(1.25) and r["status"] == "on track"
    assert r["csi"] == pytest.approx(0.25) and r["ratio_form"] == "annual change"


def test_target_met_at_baseline():
    """Baseline 50 already above the target 40 (higher is better)."""
    ind = pd.concat([series("K05", "AAA", [(2020, 55)]), series("K05", "BBB", [(2020, 35)])])
    tg = pd.DataFrame([target("K05", a, 2018, 50.0, 2028, 40.0) for a in ("AAA", "BBB")])
    r = progress.assess(ind, tg).set_index("ref_area")
    # still met: achieved, CSI 1; line 50 -> 55 gives 75 in 2028: API 1 - (40 - 75) / 10 = 4.5
    assert r.loc["AAA", "status"] == "achieved" and r.loc["AAA", "csi"] == 1.0
    assert r.loc["AAA", "projected_value"] == pytest.approx(75.0)
    assert r.loc["AAA", "api"] == pytest.approx(4.5)
    assert r.loc["AAA", "anticipated"] == "expected to meet"
    assert pd.isna(r.loc["AAA", "ratio"]) and "already met at baseline" in r.loc["AAA", "reason"]
    # lost: regression; CSI 1 - (40 - 35) / 10 = 0.5; line 50 -> 35 gives -25 in 2028:
    # API 1 - (40 + 25) / 10 = -5.5, gap 6.5, no progress expected
    assert r.loc["BBB", "status"] == "regression"
    assert r.loc["BBB", "csi"] == pytest.approx(0.5)
    assert r.loc["BBB", "api"] == pytest.approx(-5.5) and r.loc["BBB", "gap"] == pytest.approx(6.5)
    assert r.loc["BBB", "anticipated"] == "no progress expected"
    # target equal to the baseline: met -> achieved, moved away -> regression
    eq = pd.DataFrame([target("K05", a, 2018, 40.0, 2028, 40.0) for a in ("AAA", "BBB")])
    ind2 = pd.concat([series("K05", "AAA", [(2020, 41)]), series("K05", "BBB", [(2020, 39)])])
    r2 = progress.assess(ind2, eq).set_index("ref_area")
    assert r2.loc["AAA", "status"] == "achieved" and r2.loc["AAA", "csi"] == 1.0
    assert r2.loc["BBB", "status"] == "regression" and pd.isna(r2.loc["BBB", "csi"])


def test_target_year_passed():
    ind = pd.concat([series("K05", "AAA", [(2023, 50)]), series("K05", "BBB", [(2023, 61)]),
                     series("K05", "CCC", [(2021, 50)])])
    tg = pd.DataFrame([target("K05", a, 2018, 40.0, 2022, 60.0) for a in ("AAA", "BBB", "CCC")])
    r = progress.assess(ind, tg).set_index("ref_area")
    assert r.loc["AAA", "status"] == "not achieved" and bool(r.loc["AAA", "target_passed"])
    assert "target year 2022 reached" in r.loc["AAA", "reason"]
    assert r.loc["BBB", "status"] == "achieved"
    # latest 2021 < 2022: still a pace judgement, (50/40)^(1/3) - 1 over 1.5^(1/4) - 1 = 0.0772 / 0.1067 = 0.7238
    ratio = (1.25 ** (1 / 3) - 1) / (1.5 ** 0.25 - 1)
    assert r.loc["CCC", "ratio"] == pytest.approx(ratio) and ratio == pytest.approx(0.7238, abs=1e-4)
    assert r.loc["CCC", "status"] == "acceleration needed"
    assert not bool(r.loc["CCC", "target_passed"])
    # assessed in 2024, the 2022 deadline has passed: not achieved
    late = progress.assess(ind, tg, as_of=2024).set_index("ref_area")
    assert late.loc["CCC", "status"] == "not achieved"
    assert late.loc["CCC", "ratio"] == pytest.approx(ratio)  # the pace is still reported


def test_one_status_vocabulary():
    from msme_eval import contract
    assert progress.STATUSES is contract.STATUSES
    assert "not achieved" in contract.STATUSES
    assert progress.PROBABILITY_COLUMNS == tuple(
        "p_" + s.replace(" ", "_") for s in contract.STATUSES)


def test_result_frame_and_direction_rationale(result):
    assert isinstance(result, pd.DataFrame)
    r = progress.assess(series("K05", "AAA", [(2020, 44)]),
                        pd.DataFrame([target("K05", "AAA", 2018, 40.0, 2028, 60.0)]))
    assert {"thresholds", "projection", "uncertainty", "stability threshold"} <= set(r.choices)
    assert r.alpha == 0.05 and "digitalisation" in r["direction_rationale"].iloc[0]
    assert set(progress.OUTPUT_COLUMNS) == set(r.columns)
    # no se in the table: probabilities unknown, the label is the point status
    assert pd.isna(r["status_probability"].iloc[0]) and r["status_label"].iloc[0] == "on track"
    assert result.loc["FFF", "status_label"] == progress.NO_ASSESSMENT


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


# ---------------------------------------------------------------------------------------------
# traffic lights with confidence
# ---------------------------------------------------------------------------------------------
ON_EDGE = 40 * (1 + 0.95 * REQ) ** 2  # latest value with R = 0.95 exactly (on-track threshold)


def noisy(area, value, se, df=np.nan, ind="K05"):
    out = series(ind, area, [(2020, value)])
    out["se"], out["df"] = se, df
    return out


@pytest.fixture(scope="module")
def confident():
    ind = pd.concat([noisy("EDGE", ON_EDGE, 0.5), noisy("FAR", 61.0, 0.1),
                     noisy("EXACT", 43.0, 0.0), noisy("TDF", 44.0, 1.0, df=3.0),
                     noisy("NORM", 44.0, 1.0)])
    tg = pd.DataFrame([target("K05", a, 2018, 40.0, 2028, 60.0)
                       for a in ("EDGE", "FAR", "EXACT", "TDF", "NORM")])
    return ind, tg, progress.assess(ind, tg, n_draws=20000).set_index("ref_area")


def test_value_on_a_threshold_is_uncertain(confident):
    r = confident[2].loc["EDGE"]
    assert r["ratio"] == pytest.approx(0.95) and r["status"] == "on track"
    # R is monotone in the latest value: P(on track) = P(latest >= edge) = 0.5
    assert r["status_probability"] == pytest.approx(0.5, abs=0.015)
    assert r["p_acceleration_needed"] == pytest.approx(0.5 - r["p_limited_progress"], abs=0.015)
    assert not r["status_stable"]
    assert r["status_alternative"] == "acceleration needed"
    assert set(r["status_label"].removeprefix("uncertain: ").split(" or ")) == \
        {"on track", "acceleration needed"}


def test_far_from_threshold_and_exact_values_are_stable(confident):
    r = confident[2]
    assert r.loc["FAR", "status"] == "achieved" and r.loc["FAR", "status_probability"] == 1.0
    assert r.loc["FAR", "status_stable"] and r.loc["FAR", "status_label"] == "achieved"
    # se = 0: every draw is the point value
    e = r.loc["EXACT"]
    assert e["status_probability"] == 1.0 and e["status_label"] == e["status"]
    assert pd.isna(e["status_alternative"])
    assert e["csi_ci_low"] == pytest.approx(e["csi"]) and e["csi_ci_high"] == pytest.approx(e["csi"])
    assert e["projected_ci_low"] == pytest.approx(e["projected_value"])
    assert sum(e[c] for c in progress.PROBABILITY_COLUMNS) == pytest.approx(1.0)


def test_percentile_intervals_by_hand(confident):
    """CSI = (latest - 40) / 20 is linear in the latest value: its interval is
    (44 - 40 +- q se) / 20 with q the normal (1.960) or t(3) (3.182) 97.5% quantile; the
    two-point projection 40 + (latest - 40) * 5 has interval 60 +- 5 q se."""
    r = confident[2]
    for area, q in (("NORM", 1.959964), ("TDF", 3.182446)):
        assert r.loc[area, "csi_ci_low"] == pytest.approx((4 - q) / 20, abs=0.004)
        assert r.loc[area, "csi_ci_high"] == pytest.approx((4 + q) / 20, abs=0.004)
        assert r.loc[area, "projected_ci_high"] == pytest.approx(60 + 5 * q, abs=0.4)
        assert r.loc[area, "api_ci_low"] == pytest.approx((20 - 5 * q) / 20, abs=0.02)


def test_same_seed_same_output_and_summary(confident):
    ind, tg, _ = confident
    a = progress.assess(ind, tg, n_draws=500, seed=7)
    b = progress.assess(ind, tg, n_draws=500, seed=7)
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b))
    c = progress.assess(ind, tg, n_draws=500, seed=8)
    assert not np.array_equal(a["p_on_track"].to_numpy(), c["p_on_track"].to_numpy())
    s = progress.stability_summary(a)
    # EDGE (p 0.5), NORM (0.786) and TDF (0.76) are below 0.80: see test_probability_by_hand
    assert (s["n"], s["stable"], s["uncertain"], s["unknown"]) == (5, 2, 3, 0)
    assert s["text"] == "2 of 5 statuses are stable; 3 uncertain"
    strict = progress.stability_summary(progress.assess(ind, tg, n_draws=500, stability=0.999))
    assert strict["uncertain"] >= 1
    with pytest.raises(ValueError, match="stability"):
        progress.assess(ind, tg, stability=0.3)


def test_baseline_from_the_series_carries_its_se():
    ind = series("K05", "AAA", [(2018, 40.0), (2020, 44.0)])
    ind["se"] = [1.0, 0.0]
    tg = pd.DataFrame([target("K05", "AAA", 2018, np.nan, 2028, 60.0)])
    r = progress.assess(ind, tg, n_draws=20000).iloc[0]
    # CSI = (44 - I_0) / (60 - I_0): a baseline with se 1 makes it uncertain
    assert r["csi_ci_high"] - r["csi_ci_low"] > 0.15
    stated = pd.DataFrame([target("K05", "AAA", 2018, 39.0, 2028, 60.0)])  # not the series'
    r2 = progress.assess(ind, stated, n_draws=2000).iloc[0]
    assert r2["csi_ci_low"] == pytest.approx(r2["csi_ci_high"])  # a stated reference is exact


def test_probability_by_hand(confident):
    """Latest 44 with se 1 is on track iff the draw is >= the R = 0.95 edge 43.2067:
    P = Phi((44 - 43.2067) / 1) = Phi(0.7933) = 0.786, just below the 0.80 stability bar."""
    r = confident[2].loc["NORM"]
    z = 44.0 - ON_EDGE
    assert z == pytest.approx(0.7933, abs=1e-4)
    p = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert r["status_probability"] == pytest.approx(p, abs=0.01)
    assert r["status"] == "on track" and not r["status_stable"]
    assert r["status_label"] == "uncertain: on track or acceleration needed"
