"""did() against published R `did` results on mpdta (Callaway and Sant'Anna 2021).

Data: msme_eval/data/mpdta.csv (provenance, licence and SHA-256 in msme_eval/data/mpdta.md).
Reference numbers: R `did` (att_gt + aggte, analytical SEs: bstrap=FALSE, cband=FALSE), as
written by csdid's csdid/test_csdid/r_ref/generate_reference.R to
csdid/test_csdid/r_ref/ref_aggte.csv (https://github.com/d2cml-ai/csdid, commit 1c28556f).
(The `did` vignette "Getting Started with the did Package" runs the same att_gt/aggte calls on
mpdta, with bootstrap SEs; only the analytical numbers are compared here.)
"""
from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from msme_eval.impact import did

SHA256 = "2283bea1221a152420f98dfa20f633c5d054ea51d881115c8cd702a97bcd3167"

# scenario -> aggregation -> {level: (att, se)}; "overall" = aggte()$overall.att / overall.se.
# Source: csdid r_ref/ref_aggte.csv (R did output), rows mpdta_nev_dr, mpdta_nyt_dr, mpdta_nev_reg_cov.
R_DID = {
    ("never_treated", "dr", ()): {
        "simple": {"overall": (-0.0399512751551763, 0.0120340127701854)},
        "group": {2004: (-0.0797491265747291, 0.0263677994350273),
                  2006: (-0.0229095392495403, 0.0167033302551619),
                  2007: (-0.0260544107191966, 0.0166554353492522)},
        "dynamic": {-3: (0.0305066555832928, 0.01503356028013),
                    -2: (-0.000563084626385429, 0.01329164473655),
                    -1: (-0.0244587449711696, 0.0142364022105193),
                    0: (-0.0199318167892593, 0.0118263640580582),
                    1: (-0.0509573670651939, 0.016893476268678),
                    2: (-0.137258738889403, 0.0364356642876865),
                    3: (-0.100811363085404, 0.0343592258346733)},
        "calendar": {2004: (-0.0105032462209624, 0.0232510363681664),
                     2005: (-0.0704231581031467, 0.0309847667572767),
                     2006: (-0.0488159842650431, 0.0201258612605003),
                     2007: (-0.0370593399359766, 0.0137470791411185),
                     "overall": (-0.0417004321312822, 0.01597185188456)},
    },
    ("not_yet_treated", "dr", ()): {
        "simple": {"overall": (-0.0397636256230437, 0.0120524247873419)},
        "group": {2004: (-0.0836942930380162, 0.0257015997680069),
                  2006: (-0.0182817976131207, 0.0159222358245001),
                  2007: (-0.0260544107191966, 0.0166554353492522)},
        "dynamic": {-3: (0.0297593647610311, 0.0145335416386514),
                    -2: (-0.00244615388606511, 0.0131203504342708),
                    -1: (-0.0242689034145076, 0.0144636816758019),
                    0: (-0.0189221990834249, 0.0120445686892691),
                    1: (-0.0535893473848319, 0.016946385539125),
                    2: (-0.136274346328678, 0.03540338496891),
                    3: (-0.100811363085404, 0.0343592258346733)},
        "calendar": {2004: (-0.0193723636759221, 0.0223101128836806),
                     2005: (-0.0783190990620607, 0.0303902285433972),
                     2006: (-0.0423175312295752, 0.0190562576431668),
                     2007: (-0.0370593399359766, 0.0137470791411185),
                     "overall": (-0.0442670834758837, 0.0155709044211449)},
    },
    ("never_treated", "reg", ("lpop",)): {
        "simple": {"overall": (-0.0419686124215432, 0.0114448297682151)},
        "group": {2004: (-0.0851329850145115, 0.0242512163971128),
                  2006: (-0.0203850557514647, 0.0174025032538199),
                  2007: (-0.0287894881938243, 0.0161678672536918)},
        "dynamic": {-3: (0.0263658317469803, 0.0140189493226751),
                    -2: (-0.00412971201229991, 0.0129174707430671),
                    -1: (-0.0234649547538384, 0.0144416499564523),
                    0: (-0.0211467366918448, 0.0114810443929097),
                    1: (-0.0533558653415673, 0.0162930738253423),
                    2: (-0.141080104628588, 0.0348362869536185),
                    3: (-0.107544274673046, 0.032737692643412)},
        "calendar": {2004: (-0.014911237790361, 0.0220556930763196),
                     2005: (-0.0769963229660512, 0.0283597455101496),
                     2006: (-0.0465163515252653, 0.020998373312028),
                     2007: (-0.0397054131310205, 0.0128658596749845),
                     "overall": (-0.0445323313531745, 0.0148850278130483)},
    },
}


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    raw = resources.files("msme_eval").joinpath("data/mpdta.csv").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SHA256  # the vendored bytes are the recorded ones
    df = pd.read_csv(resources.files("msme_eval").joinpath("data/mpdta.csv"))
    df["first_treated"] = df["first.treat"].where(df["first.treat"] > 0)  # 0 (never) -> missing
    return df


def test_mpdta_shape(mpdta) -> None:
    assert mpdta.shape == (2500, 7)
    firms = mpdta.groupby("countyreal")["first.treat"].first().value_counts().to_dict()
    assert firms == {0: 309, 2007: 131, 2006: 40, 2004: 20}


@pytest.mark.parametrize("spec", list(R_DID), ids=lambda s: f"{s[0]}-{s[1]}{'-' + s[2][0] if s[2] else ''}")
def test_did_matches_r_did_on_mpdta(mpdta, spec) -> None:
    control, method, covs = spec
    r = did(mpdta, "lemp", unit="countyreal", time="year", control=control, method=method,
            covariates=list(covs) or None)
    ref = R_DID[spec]
    att, se = ref["simple"]["overall"]
    assert r.overall.att == pytest.approx(att, abs=1e-9)
    assert r.overall.se == pytest.approx(se, rel=1e-6)
    for kind in ("group", "dynamic", "calendar"):
        got = r.aggregate(kind).set_index("level")
        for level, (a, s) in ref[kind].items():
            assert got.loc[level, "estimate"] == pytest.approx(a, abs=1e-9), (kind, level)
            assert got.loc[level, "se"] == pytest.approx(s, rel=1e-6), (kind, level)


def test_mpdta_group_time_cells_match_r(mpdta) -> None:
    """ATT(g,t) of cohort 2004 with never-treated controls. Cohort 2004 is the only treated cohort in
    2004 and 2005 and the only one at event times 2 and 3, so R's calendar 2004/2005 and dynamic
    e = 2/3 aggregates in ref_aggte.csv ARE these cells (point and analytical SE)."""
    r = did(mpdta, "lemp", unit="countyreal", time="year")
    gt = r.att_gt.set_index(["cohort", "time"])
    cells = {(2004, 2004): (-0.0105032462209624, 0.0232510363681664),
             (2004, 2005): (-0.0704231581031467, 0.0309847667572767),
             (2004, 2006): (-0.137258738889403, 0.0364356642876865),
             (2004, 2007): (-0.100811363085404, 0.0343592258346733)}
    for key, (a, s) in cells.items():
        assert gt.loc[key, "estimate"] == pytest.approx(a, abs=1e-9)
        assert gt.loc[key, "se"] == pytest.approx(s, rel=1e-6)
    assert np.isfinite(r.pretrend.pvalue)
