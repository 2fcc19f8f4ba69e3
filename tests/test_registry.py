"""Registry direction and its rationale: stated for every built-in indicator, editable in the
data file, and read by progress.assess."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from msme_eval import progress
from msme_eval.indicators import registry
from msme_eval.indicators.registry import DEFAULT_PATH, NO_RATIONALE


def test_every_builtin_direction_has_a_rationale():
    reg = registry()
    assert "direction_rationale" in reg.columns
    assert (reg["direction_rationale"].str.len() > 20).all()
    assert not (reg["direction_rationale"] == NO_RATIONALE).any()
    # the normative choices are said to be normative, and no default was flipped silently
    for ind in ("K01", "K02"):
        text = reg.set_index("id").loc[ind, "direction_rationale"]
        assert text.startswith("Normative choice") and "grow into large firms" in text
    assert set(reg["direction"]) == {"higher"}


def _ministry_file(tmp_path: Path, **changes) -> Path:
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    entry = next(e for e in doc["indicators"] if e["id"] == "K05")
    entry.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del entry[k]
    doc["indicators"] = [entry]
    path = tmp_path / "ministry.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_missing_rationale_is_said(tmp_path: Path):
    reg = registry(_ministry_file(tmp_path, direction_rationale=None))
    assert reg["direction_rationale"].tolist() == [NO_RATIONALE]


def test_direction_from_the_data_file_drives_the_status(tmp_path: Path):
    ind = pd.DataFrame({"indicator": "K05", "ref_area": "THA", "time_period": 2020,
                        "breakdown": "total", "group": "total", "value": [36.0]})
    tg = pd.DataFrame({"indicator": ["K05"], "country": ["THA"], "baseline_year": [2018],
                       "baseline_value": [40.0], "target_year": [2028], "target_value": [30.0]})
    path = _ministry_file(tmp_path, direction="lower",
                          direction_rationale="Lower: fewer firms online is our aim (test).")
    r = progress.assess(ind, tg, registry=path).iloc[0]
    # lower is better: (36/40)^(1/2) - 1 over (30/40)^(1/10) - 1 = -0.05132 / -0.02836 = 1.81
    assert r["direction"] == "lower" and r["status"] == "on track"
    assert r["ratio"] == (0.9 ** 0.5 - 1) / (0.75 ** 0.1 - 1)
    assert r["direction_rationale"] == "Lower: fewer firms online is our aim (test)."
    # the built-in (higher is better) reads the same target as met at baseline
    r0 = progress.assess(ind, tg).iloc[0]
    assert r0["status"] == "achieved" and "already met at baseline" in r0["reason"]
