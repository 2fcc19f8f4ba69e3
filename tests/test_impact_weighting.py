"""weighting() and balance_table(): hand-computed values and planted effects."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msme_eval.impact import ImpactInputError, balance_table, weighting


def _cross(n: int = 3000, seed: int = 0, tau: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.binomial(1, 0.4, n)
    p = 1 / (1 + np.exp(-(-0.3 + 0.8 * x1 + 0.5 * x2)))
    d = (rng.random(n) < p).astype(int)
    y = 1 + 2 * x1 + x2 + tau * d + rng.normal(size=n)
    return pd.DataFrame({"y": y, "d": d, "x1": x1, "x2": x2})


def test_ipw_without_covariates_equals_difference_in_means_with_hand_se() -> None:
    """Intercept-only propensity: w = n1/n0 for every control, so ATT = ybar1 - ybar0 and the
    sandwich SE reduces to sqrt(sum_T (y - ybar1)^2 / n1^2 + sum_C (y - ybar0)^2 / n0^2)."""
    df = pd.DataFrame({"y": [3.0, 5.0, 4.0, 1.0, 2.0, 0.0, 1.0], "d": [1, 1, 1, 0, 0, 0, 0]})
    r = weighting(df, "y", "d", [])
    assert r.att == pytest.approx(4.0 - 1.0)
    hand = np.sqrt((1 + 1 + 0) / 9 + (0 + 1 + 1 + 0) / 16)
    assert r.se == pytest.approx(hand, rel=1e-10)


def test_ipw_recovers_planted_att_and_improves_balance() -> None:
    df = _cross()
    naive = df.loc[df.d == 1, "y"].mean() - df.loc[df.d == 0, "y"].mean()
    r = weighting(df, "y", "d", ["x1", "x2"])
    assert abs(naive - 1.0) > 0.5  # selection on x biases the raw difference
    assert r.estimate.ci_low <= 1.0 <= r.estimate.ci_high
    b = r.balance
    before = b[b["sample"] == "before"].set_index("covariate")
    after = b[b["sample"] == "after ipw"].set_index("covariate")
    assert (after["std_diff"].abs() < 0.05).all() and (before["std_diff"].abs() > 0.2).any()
    assert "Lunceford" in r.se_method


def test_ipw_sandwich_se_agrees_with_bootstrap() -> None:
    df = _cross(n=1500, seed=3)
    r = weighting(df, "y", "d", ["x1", "x2"])
    rng = np.random.default_rng(0)
    boots = [weighting(df.iloc[rng.integers(0, len(df), len(df))].reset_index(drop=True), "y", "d", ["x1", "x2"]).att
             for _ in range(150)]
    assert r.se == pytest.approx(np.std(boots, ddof=1), rel=0.2)


def test_matching_hand_example_att_and_abadie_imbens_se() -> None:
    """Treated x = 1, 3 (y = 5, 9); controls x = 1.1, 2.9, 10 (y = 2, 4, 0); one neighbour each.
    ATT = ((5-2) + (9-4))/2 = 4. Each used control has K = 1 so the K(K-1) term is 0 and
    V = [(3-4)^2 + (5-4)^2] / 2^2 = 0.5."""
    df = pd.DataFrame({"y": [5.0, 9.0, 2.0, 4.0, 0.0], "d": [1, 1, 0, 0, 0], "x": [1.0, 3.0, 1.1, 2.9, 10.0]})
    r = weighting(df, "y", "d", ["x"], method="matching")
    assert r.att == pytest.approx(4.0)
    assert r.se == pytest.approx(np.sqrt(0.5))
    np.testing.assert_allclose(r.weights, [1, 1, 1, 1, 0])


def test_matching_reused_control_adds_k_k_minus_1_term() -> None:
    """Both treated match the same control (K = 2): extra term K(K-1)/M^2 * sigma2 / N1^2,
    sigma2 of that control = J/(J+1) (y - mean of its J = 2 nearest controls)^2, J = 2."""
    df = pd.DataFrame({"y": [5.0, 7.0, 2.0, 4.0, 0.0], "d": [1, 1, 0, 0, 0], "x": [1.0, 1.2, 1.1, 5.0, 9.0]})
    r = weighting(df, "y", "d", ["x"], method="matching")
    assert r.att == pytest.approx(((5 - 2) + (7 - 2)) / 2)
    sig2 = 2 / 3 * (2.0 - (4.0 + 0.0) / 2) ** 2
    v = ((3 - 4) ** 2 + (5 - 4) ** 2 + 2 * 1 * sig2) / 4
    assert r.se == pytest.approx(np.sqrt(v))


def test_matching_recovers_planted_att() -> None:
    r = weighting(_cross(n=2000, seed=5), "y", "d", ["x1", "x2"], method="matching", n_neighbors=4)
    assert abs(r.att - 1.0) < 3 * r.se
    assert "Abadie-Imbens" in r.se_method


def test_balance_table_hand_values_and_joint_test() -> None:
    df = pd.DataFrame({"d": [1, 1, 1, 0, 0, 0], "x": [1.0, 2.0, 3.0, 1.0, 1.0, 4.0]})
    b = balance_table(df, "d", ["x"])
    row = b.iloc[0]
    assert row["mean_treated"] == pytest.approx(2.0) and row["mean_control"] == pytest.approx(2.0)
    assert row["var_ratio"] == pytest.approx(1.0 / 3.0)  # s1^2 = 1, s0^2 = 3
    assert row["std_diff"] == pytest.approx(0.0)
    assert b.attrs["joint_test"]["df1"] == 1
    w = balance_table(df, "d", ["x"], weight=np.array([1, 1, 1, 2, 1, 0.0]))
    assert w.iloc[0]["mean_control"] == pytest.approx((2 * 1 + 1) / 3)


def test_refusals() -> None:
    df = _cross(n=50)
    with pytest.raises(ImpactInputError, match="only one arm"):
        weighting(df.assign(d=1), "y", "d", ["x1"])
    with pytest.raises(ImpactInputError, match="missing"):
        weighting(df.assign(y=np.where(np.arange(50) == 3, np.nan, df["y"])), "y", "d", ["x1"])
    with pytest.raises(ImpactInputError, match="separation"):
        weighting(df.assign(x3=df["d"]), "y", "d", ["x3"])
    with pytest.raises(ImpactInputError, match="method"):
        weighting(df, "y", "d", ["x1"], method="psm")
