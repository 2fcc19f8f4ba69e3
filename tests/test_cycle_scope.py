"""Which pages a cycle runs for which areas, and the shared impact fits (msme_eval.cycle,
msme_eval.report.context).

- A run without the region (``--countries IDN KHM``) gives each member state its executive
  summary and impact page, naming it; the index summarises the first of them (indicators shown).
- The impact tables a page publishes equal a direct ``impact.evaluate`` call on the area's firms
  (the runner splits it into independent calls on its workers and merges them).
- The cache key changes with every input byte and parameter that shapes an estimate.
- A member state with too few supported firms gets a page that says so, not a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

import msme_eval as me
from msme_eval import cycle
from msme_eval.impact.evaluate import combine
from msme_eval.report import context, execute
from msme_eval.report.execute import KernelWorker

TYPES = ["finance", "market_access", "capacity_building"]
TABLES = ("headline", "robustness", "inclusion", "inclusion_tests", "inclusion_shares", "jobs")


def _evaluate(panel: pd.DataFrame, macro: pd.DataFrame, **kw: object) -> me.impact.Evaluation:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return me.impact.evaluate(panel, macro=macro, **kw)


# ------------------------------------------------------------------------------ the split
@pytest.fixture(scope="module")
def region(small_sample: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return me.read_panel(small_sample["panel"]), me.io.read_macro(small_sample["macro"])


def _counting_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record every estimator fit `evaluate` makes (outcome and options)."""
    ev_module = sys.modules["msme_eval.impact.evaluate"]  # the attribute is the function
    calls: list[tuple[str, ...]] = []
    real = ev_module._fit

    def counted(frame: pd.DataFrame, outcome: str, **kw: object) -> object:
        calls.append((outcome, *sorted(f"{k}={v}" for k, v in kw.items() if k != "notes")))
        return real(frame, outcome, **kw)

    monkeypatch.setattr(ev_module, "_fit", counted)
    return calls


def test_split_calls_merge_to_the_one_evaluate_call(region, monkeypatch: pytest.MonkeyPatch) -> None:
    """combine(impact_calls) == evaluate(programme_type=types): every table to 1e-9, the
    event studies, the Holm-adjusted pre-trend tests, the evidence level and the text; and the
    split makes exactly the fits of the one call (none twice)."""
    panel, macro = region
    fits = _counting_fits(monkeypatch)
    direct = _evaluate(panel, macro, programme_type=TYPES)
    n_direct = len(fits)
    parts = [_evaluate(panel, macro, **call) for call in context.impact_calls(TYPES)]
    merged = combine(parts)
    assert len(parts) == len(TYPES)  # one per programme type
    assert n_direct > 0 and len(fits) - n_direct == n_direct  # each fit runs once
    assert list(merged.notes) == list(direct.notes)
    assert merged.settings["recipients_only"] == direct.settings["recipients_only"]
    for name in (*TABLES, "pretrends", "interpretation"):
        want, got = getattr(direct, name), getattr(merged, name)
        assert len(want) > 0, name
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12, obj=name)
    assert merged.event_studies.keys() == direct.event_studies.keys()
    for k, es in direct.event_studies.items():
        pd.testing.assert_frame_equal(merged.event_studies[k], es, rtol=1e-9, atol=1e-12)
    assert merged.six_steps == direct.six_steps
    assert merged.settings == direct.settings
    assert set(merged.notes) == set(direct.notes)


def test_combine_refuses_calls_with_other_options(region) -> None:
    panel, macro = region
    a = _evaluate(panel, macro, programme_type=["finance"], subgroups=[], robustness=False)
    b = _evaluate(panel, macro, programme_type=["market_access"], subgroups=[], robustness=False,
                  control="not_yet_treated")
    with pytest.raises(ValueError, match="differ in \\['control'\\]"):
        combine([a, b])


def test_headline_depth_is_the_headline_of_the_full_call(region) -> None:
    panel, macro = region
    full = _evaluate(panel, macro, programme_type=TYPES)
    (call,) = context.impact_calls(TYPES, "headline")
    light = _evaluate(panel, macro, **call)
    pd.testing.assert_frame_equal(light.headline, full.headline, rtol=1e-9, atol=1e-12)
    assert light.robustness.empty and light.inclusion.empty
    with pytest.raises(ValueError, match="'full' or 'headline'"):
        context.impact_calls(TYPES, "some")


# ------------------------------------------------------------------------------ cache key
def test_cache_key_changes_with_every_input_byte_and_parameter(small_sample: dict[str, Path],
                                                               tmp_path: Path) -> None:
    params = cycle.load_params(panel=str(small_sample["panel"]), macro=str(small_sample["macro"]),
                               targets=str(small_sample["targets"]))
    inputs = context.input_hashes(params)
    call = context.impact_calls(TYPES)[0]
    key = context.impact_key(inputs, params, "ASEAN", call)
    assert key == context.impact_key(dict(inputs), params, "ASEAN", dict(call))  # deterministic
    # one byte of the panel file changed -> another hash -> another key
    copy = tmp_path / "panel.parquet"
    shutil.copyfile(small_sample["panel"], copy)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    changed = context.input_hashes(params.model_copy(update={"panel": copy}))
    assert changed["panel"] != inputs["panel"] and changed["macro"] == inputs["macro"]
    others = {
        "panel byte": context.impact_key(changed, params, "ASEAN", call),
        "macro": context.impact_key({**inputs, "macro": "0" * 64}, params, "ASEAN", call),
        "area": context.impact_key(inputs, params, "IDN", call),
        "programme types": context.impact_key(inputs, params, "ASEAN",
                                              {**call, "programme_type": TYPES[:2]}),
        "robustness": context.impact_key(inputs, params, "ASEAN", {**call, "robustness": True}),
        "panel_options": context.impact_key(
            inputs, params.model_copy(update={"panel_options": {"sep": ";"}}), "ASEAN", call),
        "estimator code": context.impact_key(inputs, params, "ASEAN", call, code="0" * 64),
    }
    assert key not in others.values()
    assert len(set(others.values())) == len(others), others


# ------------------------------------------------------------------------------ planning
def _jobs(sample: dict[str, Path], **kw: object) -> set[str]:
    params = cycle.load_params(panel=str(sample["panel"]), macro=str(sample["macro"]),
                               targets=str(sample["targets"]), **kw)
    return {j.key for j in cycle.plan(params, cycle.discover_templates(params.templates_dir))}


def test_lead_areas_get_the_summary_and_impact(small_sample: dict[str, Path]) -> None:
    default = _jobs(small_sample)
    assert {k for k in default if k.startswith(("00_summary", "30_impact"))} == \
        {"00_summary/ASEAN", "30_impact/ASEAN"}
    assert len(default) == 24
    wide = _jobs(small_sample, country_impact=True)
    assert wide - default == {f"30_impact/{c}" for c in me.schema.COUNTRIES}
    assert _jobs(small_sample, countries=["THA", "VNM"]) == {
        f"{t}/{c}" for t in ("00_summary", "10_data_quality", "20_indicators", "30_impact")
        for c in ("THA", "VNM")}
    assert cycle.lead_areas(["THA", "ASEAN"]) == ["ASEAN"]


def test_worker_runs_library_functions_and_reports_errors(tmp_path: Path) -> None:
    worker = KernelWorker(cycle.DEFAULT_KERNEL, tmp_path, 1, tmp_path / "worker.log")
    try:
        assert worker.call("msme_eval.contract:area_name", {"code": "THA"}, timeout=120,
                           log_path=tmp_path / "a.log") == ("ok", "")
        status, err = worker.call("msme_eval.contract:no_such_function", {}, timeout=120,
                                  log_path=tmp_path / "b.log")
        assert status == "failed" and "AttributeError" in err and "no_such_function" in err
        assert "Traceback" in (tmp_path / "b.log").read_text(encoding="utf-8")
    finally:
        worker.close()


# ------------------------------------------------------------------------------ a country-only run
@pytest.fixture(scope="module")
def country_run(small_sample: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """IDN and KHM without the region; KHM keeps only two supported firms (too few)."""
    folder = tmp_path_factory.mktemp("scope")
    panel = pd.read_parquet(small_sample["panel"])
    khm_sup = panel.loc[(panel["country"] == "KHM") & panel["first_treated"].notna(), "firm_id"]
    drop = sorted(khm_sup.unique())[2:]
    panel[~panel["firm_id"].isin(drop)].to_parquet(folder / "panel.parquet", index=False)
    params = cycle.load_params(cycle="scope", panel=str(folder / "panel.parquet"),
                               macro=str(small_sample["macro"]), targets=str(small_sample["targets"]),
                               countries=["IDN", "KHM"], output_root=str(folder / "reports"))
    result = cycle.run(params, log=lambda s: None)
    return params, result


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_country_run_has_summary_and_impact_naming_the_country(country_run) -> None:
    params, result = country_run
    assert result.ok, result.summary()
    out = result.path
    for code, name in (("IDN", "Indonesia"), ("KHM", "Cambodia")):
        for page in ("00_summary", "30_impact"):
            html = _text(out / code / f"{page}.html")
            assert f"— {name}" in html, (code, page)
    summary = _text(out / "IDN" / "00_summary.html")
    assert "Key indicators: Indonesia" in summary and "Effects of support programmes" in summary
    assert "none were found" not in summary
    index = _text(out / "index.html")
    assert "Key indicators: Indonesia" in index and "not available in this cycle" not in index
    assert 'href="IDN/00_summary.html"' in index
    res = json.loads(_text(out / "results.json"))["notebooks"]
    assert res["30_impact"]["IDN"]["results"]["impacts"]
    assert set(res["00_summary"]) == {"IDN", "KHM"}


def test_too_few_supported_firms_is_said_not_failed(country_run) -> None:
    _, result = country_run
    html = _text(result.path / "KHM" / "30_impact.html")
    assert "No effect of support could be estimated for Cambodia" in html
    assert "[firm id removed]" not in html  # the reasons are given without firm identifiers


_DIRECT = """
import sys, warnings
import msme_eval as me
from msme_eval.report import protect
panel, macro, out = sys.argv[1], sys.argv[2], sys.argv[3]
data = me.read_panel(panel)
data = data[data["country"] == "IDN"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ev = me.impact.evaluate(data, programme_type=%r, macro=me.io.read_macro(macro))
for name, table in protect.impact_tables(ev, data, rules=protect.Rules(3, 2, 0.85)).items():
    protect.withhold_counts(table).to_csv(f"{out}/{name}.csv", index=False, lineterminator="\\n")
""" % (TYPES,)


def test_country_page_tables_equal_a_direct_evaluate_call(country_run, tmp_path: Path) -> None:
    """The published IDN tables (from the runner's split, cached fits) equal one
    ``evaluate(IDN firms, programme_type=types, macro=macro)`` with the same disclosure rules,
    run in the environment the runner gives its workers (thread caps and hash seed: TWFE's
    fixed-effect demeaning depends on the string-hash seed at ~1e-7 relative, not on the split)."""
    params, result = country_run
    threads = max(1, (os.cpu_count() or 1) // params.workers)
    subprocess.run([sys.executable, "-c", _DIRECT, str(params.panel), str(params.macro),
                    str(tmp_path)], check=True, env=execute._environment(threads),
                   capture_output=True)
    for name in ("headline", "robustness", "inclusion", "jobs"):
        got = pd.read_csv(result.path / "tables" / f"impact_{name}_IDN.csv")
        want = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(want) > 0, name
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12, obj=name)


def test_member_state_impact_pages_in_a_regional_cycle_are_headline_only(
        small_sample: dict[str, Path], tmp_path: Path) -> None:
    """country_impact: the member state's page gives its headline effects (the same numbers as the
    first of the split calls on its firms) and says where robustness and inclusion are."""
    params = cycle.load_params(cycle="wide", panel=str(small_sample["panel"]),
                               macro=str(small_sample["macro"]), targets=str(small_sample["targets"]),
                               countries=["IDN", "ASEAN"], country_impact=True, sections=["30_impact"],
                               output_root=str(tmp_path / "reports"))
    result = cycle.run(params, log=lambda s: None)
    assert result.ok, result.summary()
    html = _text(result.path / "IDN" / "30_impact.html")
    assert "— Indonesia" in html and "robustness checks and the inclusion breakdowns" in html
    tables = {p.name for p in (result.path / "tables").glob("impact_*_IDN.csv")}
    assert tables == {"impact_headline_IDN.csv", "impact_jobs_IDN.csv"}
    assert (result.path / "tables" / "impact_robustness.csv").exists()  # the region's, in full


def test_impact_page_waits_for_its_areas_fits_only() -> None:
    """A page that needs the impact fits starts once every fit of its area has ended (ok or
    not); other pages and areas never wait."""
    import threading

    page = cycle.Template("30_impact", Path("x.ipynb"), "Impact", ("region", "country"), 1, 1.0,
                          ("impact",))
    other = cycle.Template("10_dq", Path("y.ipynb"), "DQ", ("region", "country"))
    fits = [cycle.FitJob("ASEAN", {"programme_type": [t]}, t, 1, 34.0) for t in TYPES]
    gate = cycle._FitGate(fits)
    assert gate.is_open(cycle.Job(other, "ASEAN"))  # starts at once
    assert gate.is_open(cycle.Job(page, "IDN"))  # no fit for IDN: nothing to wait for
    todo = cycle._Todo([cycle.Job(page, "ASEAN")], gate)
    started = threading.Event()
    waiter = threading.Thread(target=lambda: (todo.take(), started.set()))
    waiter.start()
    for f in fits[:-1]:
        gate.done(f)
        assert not started.wait(0.2)
    gate.done(fits[-1])
    assert started.wait(5)
    waiter.join()
