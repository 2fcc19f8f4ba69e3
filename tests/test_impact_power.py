"""power: MDE and sample size against hand-computed values."""
from __future__ import annotations

import math

import pytest

from msme_eval.impact import ImpactInputError, mde, sample_size
from msme_eval.impact.power import variance_factor

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.80}


def test_mde_two_period_did_by_hand() -> None:
    """N = 1000, P = 0.5, sigma = 1, rho = 0.5, m = r = 1: Var = (1 - .5)(1 + 1) / (.25 * 1000) = 0.004."""
    r = mde(1000, rho=0.5)
    assert r.mde == pytest.approx(Z * math.sqrt(0.004), rel=1e-12)
    assert r.mde == pytest.approx(0.17718, abs=1e-5)


def test_mde_with_clustering_design_effect_by_hand() -> None:
    """20 firms per cluster, ICC 0.05: deff = 1 + 19 * .05 = 1.95; m = 2, r = 3, rho = .3, P = .4,
    sigma = 2, N = 2000: f = .7 (1/2 + 1/3) = .58333; Var = 1.95 * 4 * .58333 / (.24 * 2000)."""
    r = mde(2000, pre_periods=2, post_periods=3, share_treated=0.4, sigma=2.0, rho=0.3, icc=0.05, cluster_size=20)
    var = 1.95 * 4 * (0.7 * (1 / 2 + 1 / 3)) / (0.24 * 2000)
    assert r.design_effect == pytest.approx(1.95)
    assert r.mde == pytest.approx(Z * math.sqrt(var), rel=1e-12)
    assert r.n_clusters == 100


def test_burlig_preonas_woerman_reduces_to_mckenzie_under_equicorrelation() -> None:
    for m, r_, rho in [(1, 1, 0.2), (3, 2, 0.5), (4, 4, 0.7)]:
        assert variance_factor("did", m, r_, rho) == pytest.approx((1 - rho) * (1 / m + 1 / r_))
    # general serial correlation: m = r = 2, psi_B = .6, psi_A = .4, psi_X = .3 (shares of sigma2)
    f = variance_factor("did", 2, 2, 0.0, psi_pre=0.6, psi_post=0.4, psi_cross=0.3)
    assert f == pytest.approx(1.0 + 0.5 * 0.6 + 0.5 * 0.4 - 0.6)


def test_ancova_formula_by_hand() -> None:
    # McKenzie (2012): m = 1, r = 1, rho = .5: 1 - .25 = .75
    assert variance_factor("ancova", 1, 1, 0.5) == pytest.approx(0.75)
    assert variance_factor("post", 1, 3, 0.5) == pytest.approx((1 + 2 * 0.5) / 3)


def test_sample_size_inverts_mde() -> None:
    s = sample_size(0.2, pre_periods=2, post_periods=2, rho=0.4, icc=0.02, cluster_size=10)
    assert s.n_units == math.ceil(Z**2 * 1.18 * 0.6 * 1.0 / (0.25 * 0.04))
    assert mde(s.n_units, pre_periods=2, post_periods=2, rho=0.4, icc=0.02, cluster_size=10).mde <= 0.2


def test_refusals() -> None:
    with pytest.raises(ImpactInputError):
        mde(1000, share_treated=1.2)
    with pytest.raises(ImpactInputError):
        sample_size(0.0)
    with pytest.raises(ImpactInputError):
        variance_factor("rct", 1, 1, 0.1)
