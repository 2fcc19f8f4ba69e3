"""Cycle parameters, the papermill runner and atomic publishing (msme_eval.cycle).

Notebook runs are slow to start, so the runner is exercised with small throwaway templates
written into tmp_path and one shared run that covers success, an exception and a timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import template_from

import msme_eval as me
from msme_eval import cycle
from msme_eval.cycle import CycleError, CycleParams, NotebookParams, load_params

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def sample(small_sample: dict[str, Path]) -> dict[str, Path]:
    """The shared small synthetic sample (tests/conftest.py), written as a ministry would deliver it."""
    return small_sample


def _params(sample: dict[str, Path], tmp: Path, **kw: object) -> CycleParams:
    base = dict(cycle="t", panel=str(sample["panel"]), macro=str(sample["macro"]),
                targets=str(sample["targets"]), output_root=str(tmp / "reports"))
    base.update(kw)
    return CycleParams.model_validate(base)


def _template(folder: Path, name: str, body: str, scope: tuple[str, ...] = ("region",)) -> Path:
    """A minimal template with the standard preamble (parameters + notebook_context)."""
    return template_from(folder, name, body, scope)


# ------------------------------------------------------------------------------- parameters
def test_defaults_are_complete(sample: dict[str, Path], tmp_path: Path) -> None:
    p = _params(sample, tmp_path)
    assert p.countries == [*me.schema.COUNTRIES, "ASEAN"]
    assert (p.min_contributors, p.dominance_n, p.dominance_k) == (3, 2, 0.85)
    assert p.kernel == "msme-eval" and p.workers >= 1 and p.timeout > 0
    assert p.panel.is_absolute() and p.output_root.is_absolute()
    nbp = NotebookParams.model_validate(p.notebook_params("IDN"))
    assert nbp.country == "IDN" and nbp.panel == p.panel


@pytest.mark.parametrize("override, field, text", [
    ({"colour": "red"}, "colour", "unknown parameter"),
    ({"workers": "2"}, "workers", "valid integer"),
    ({"workers": 2.0}, "workers", "valid integer"),
    ({"baseline_year": "2019"}, "baseline_year", "valid integer"),
    ({"timeout": "fast"}, "timeout", "valid number"),
    ({"countries": "IDN"}, "countries", "valid list"),
    ({"countries": ["IDN", "XXX"]}, "countries", "unknown country"),
    ({"countries": []}, "countries", "empty"),
    ({"programme_types": ["grants"]}, "programme_types", "unknown programme type"),
    ({"cycle": "../2023"}, "cycle", "not a safe name"),
    ({"cycle": "2024 final"}, "cycle", "not a safe name"),
    ({"cycle": "a/b"}, "cycle", "not a safe name"),
    ({"cycle": 2024}, "cycle", 'quote it in YAML'),
    ({"panel": "nowhere/panel.parquet"}, "panel", "file not found"),
    ({"baseline_year": 2030}, "(all)", "must be before"),
    ({"dominance_k": 1.5}, "dominance_k", "less than or equal to 1"),
    ({"kernel": "x; rm -rf /"}, "kernel", "not a safe name"),
    ({"db_password": "hunter2"}, "(all)", "secrets are never parameters"),
    ({"engine": "polars"}, "engine", "'pandas', 'duckdb' or 'spark'"),
])
def test_bad_parameters_rejected(sample: dict[str, Path], tmp_path: Path, override: dict,
                                 field: str, text: str) -> None:
    base = dict(panel=str(sample["panel"]), macro=str(sample["macro"]),
                targets=str(sample["targets"]), output_root=str(tmp_path / "reports"))
    with pytest.raises(CycleError) as err:
        load_params(**{**base, **override})
    msg = str(err.value)
    assert f"{field}:" in msg and text in msg
    assert "hunter2" not in msg  # a secret's value is never echoed
    assert not (tmp_path / "reports").exists()  # nothing ran


def test_yaml_file(sample: dict[str, Path], tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f'cycle: "2023"\npanel: {sample["panel"]}\nmacro: null\ntargets: null\n'
                 "countries: [IDN, ASEAN]\nworkers: 1\n", encoding="utf-8")
    p = load_params(f, workers=2)  # flags override the file
    assert (p.cycle, p.countries, p.workers, p.macro) == ("2023", ["IDN", "ASEAN"], 2, None)
    f.write_text("cycle: 2023\nworkrs: 2\n", encoding="utf-8")
    with pytest.raises(CycleError) as err:
        load_params(f)
    assert "workrs: unknown parameter" in str(err.value)
    assert 'cycle: Input should be a valid string' in str(err.value)
    f.write_text("- not\n- a mapping\n", encoding="utf-8")
    with pytest.raises(CycleError, match="mapping"):
        load_params(f)
    with pytest.raises(CycleError, match="cannot read"):
        load_params(tmp_path / "missing.yaml")


def test_notebook_context_rejects_injected_unknowns(sample: dict[str, Path]) -> None:
    ns = {"me": me}
    before = set(ns)
    ns.update(cycle="x", panel=str(sample["panel"]), macro=None, targets=None, country="IDN")
    ctx = cycle.notebook_context(ns, before)
    assert ctx.country == "IDN" and not ctx.is_region
    for bad, text in (({"foo": 1}, "foo: unknown parameter"),
                      ({"country": "Narnia"}, "unknown country"),
                      ({"min_contributors": "3"}, "valid integer")):
        with pytest.raises(CycleError, match=text):
            cycle.notebook_context({**ns, **bad}, before)


def test_plain_papermill_gets_the_same_check(sample: dict[str, Path], tmp_path: Path) -> None:
    """papermill only warns about unknown parameters; the template's check cell stops it."""
    cycle.check_kernel("msme-eval", install=True)
    out = tmp_path / "out.ipynb"
    res = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "10_data_quality.ipynb"),
         str(out), "-k", "msme-eval", "-p", "panel", str(sample["panel"]),
         "-p", "workers", "4", "-p", "baseline_year", "not-a-year"],
        capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "CycleError"
    assert "workers: unknown parameter" in errors[0]["evalue"]
    assert "baseline_year: Input should be a valid integer" in errors[0]["evalue"]
    executed = [c.execution_count for c in nb.cells if c.cell_type == "code"
                and c.execution_count]
    assert max(executed) == 4  # setup, parameters, injected, check: nothing after it ran


# ------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def mixed_run(sample: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """One run of throwaway templates: one ok (region + IDN), one raising, one too slow."""
    tmp = tmp_path_factory.mktemp("mixed")
    tpl = tmp / "templates"
    _template(tpl, "a_ok", "data = ctx.panel()\nctx.record('rows', len(data))\n"
                           "ctx.export_table('counts', S.programme_counts(data))",
              scope=("region", "country"))
    _template(tpl, "b_raises", "ctx.record('before', 1.25)\nraise ValueError('planted failure')")
    pidfile = tmp / "slow.pid"
    _template(tpl, "c_slow", f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))"
                             "\ntime.sleep(600)")
    root = tmp / "reports"
    other = root / "2023"  # a previously published cycle that must stay untouched
    other.mkdir(parents=True)
    (other / "results.json").write_text('{"status": "ok", "notebooks": {}}\n')
    (other / "index.html").write_text("<p>old cycle</p>")
    before = {p: p.read_bytes() for p in other.iterdir()}
    params = _params(sample, tmp, cycle="2024", templates_dir=str(tpl), countries=["IDN", "ASEAN"],
                     timeout=40.0, workers=2, macro=None, targets=None)
    lines: list[str] = []
    result = cycle.run(params, log=lines.append)
    return result, root, before, lines, pidfile


def test_failures_are_kept_marked_and_others_complete(mixed_run) -> None:
    result, root, before, lines, pidfile = mixed_run
    status = {(r.template, r.country): r.status for r in result.notebooks}
    assert status == {("a_ok", "IDN"): "ok", ("a_ok", "ASEAN"): "ok",
                      ("b_raises", "ASEAN"): "failed", ("c_slow", "ASEAN"): "timeout"}
    assert not result.ok and result.exit_code == 1
    failed = {r.template: r for r in result.failed}
    assert failed["b_raises"].error == "ValueError: planted failure"
    assert failed["b_raises"].failing_cell is not None
    assert "40 s" in failed["c_slow"].error and 38 <= failed["c_slow"].duration < 80
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")  # the timed-out kernel is gone
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    cyc = root / "2024"
    for page in ("a_ok.html", "IDN/a_ok.html", "b_raises.html", "c_slow.html",
                 "b_raises.code.html", "index.html", "results.json", "provenance.json"):
        assert (cyc / page).is_file(), page
    html = (cyc / "b_raises.html").read_text()
    assert "planted failure" in html and "This page is incomplete" in html
    assert "time limit" in (cyc / "c_slow.html").read_text()
    index = (cyc / "index.html").read_text()
    assert "2 of 4 report notebooks failed" in index and "timeout" in index
    res = json.loads((cyc / "results.json").read_text())
    assert res["status"] == "failed"
    assert res["notebooks"]["a_ok"]["IDN"]["results"]["rows"] > 0
    assert res["notebooks"]["b_raises"]["ASEAN"] == {
        "status": "failed", "results": {"before": 1.25},
        "error": {"cell": failed["b_raises"].failing_cell,
                  "message": "ValueError: planted failure"}}
    assert (cyc / "tables" / "counts.csv").is_file() and (cyc / "tables" / "tables.xlsx").is_file()
    # the other cycle is untouched, the list of cycles shows both, no temp folder is left
    assert {p: p.read_bytes() for p in (root / "2023").iterdir()} == before
    assert "2023/index.html" in (root / "index.html").read_text()
    assert not [p for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    summary = result.summary()
    assert "b_raises" in summary and "planted failure" in summary and "2 FAILED" in summary
    assert any(line.startswith("[") and "2/4" in line for line in lines)  # live progress


def test_provenance(mixed_run, sample: dict[str, Path]) -> None:
    result, root, *_ = mixed_run
    prov = json.loads((root / "2024" / "provenance.json").read_text())
    assert prov["inputs"]["panel"]["sha256"] == me.io.sha256_file(sample["panel"])
    assert prov["packages"]["pandas"] == pd.__version__
    assert prov["parameters"]["cycle"] == "2024" and prov["kernel"]["name"] == "msme-eval"
    assert prov["parameters"]["engine"] == "pandas"  # where the indicators were computed
    assert len(prov["notebooks"]) == 4 and prov["duration_seconds"] > 0
    assert "environ" not in json.dumps(prov).lower()


def test_missing_kernel_is_explained(sample: dict[str, Path], tmp_path: Path) -> None:
    params = _params(sample, tmp_path, kernel="no-such-kernel")
    with pytest.raises(CycleError) as err:
        cycle.run(params, log=lambda s: None)
    assert "ipykernel install --sys-prefix --name no-such-kernel" in str(err.value)
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------------------- publishing
def test_publish_replaces_atomically_and_leaves_others(tmp_path: Path) -> None:
    root = tmp_path
    for name, text in (("2023", "old 2023"), ("2024", "old 2024")):
        (root / name).mkdir()
        (root / name / "index.html").write_text(text)
    build = root / ".tmp-2024-abc"
    build.mkdir()
    (build / "index.html").write_text("new 2024")
    cycle.publish(build, root / "2024")
    assert (root / "2024" / "index.html").read_text() == "new 2024"
    assert (root / "2023" / "index.html").read_text() == "old 2023"
    assert sorted(p.name for p in root.iterdir()) == ["2023", "2024"]


def test_publish_fallback_restores_old_cycle_on_failure(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "2024").mkdir()
    (tmp_path / "2024" / "index.html").write_text("old")
    build = tmp_path / ".tmp-2024-x"
    build.mkdir()
    (build / "index.html").write_text("new")
    from msme_eval.report import publish as pub

    monkeypatch.setattr(pub, "_renameat2_exchange", lambda a, b: False)
    real = os.rename
    calls = []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # crash between moving the old cycle aside and moving the new in
            raise OSError("disk unplugged")
        return real(a, b)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(OSError, match="unplugged"):
        cycle.publish(build, tmp_path / "2024")
    assert (tmp_path / "2024" / "index.html").read_text() == "old"


def test_interrupted_run_leaves_no_partial_cycle(sample: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash (here Ctrl-C) after notebooks ran but before publishing: the previous version
    of the cycle stays as it was and no temporary folder is left behind."""
    tpl = tmp_path / "tpl"
    _template(tpl, "a_ok", "ctx.record('x', 1)")
    root = tmp_path / "reports"
    (root / "2024").mkdir(parents=True)
    (root / "2024" / "index.html").write_text("previous complete version")
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    from msme_eval.report import site
    monkeypatch.setattr(site, "write_cycle_index", interrupted)
    params = _params(sample, tmp_path, cycle="2024", templates_dir=str(tpl), countries=["ASEAN"],
                     macro=None, targets=None)
    with pytest.raises(KeyboardInterrupt):
        cycle.run(params, log=lambda s: None)
    assert calls
    assert (root / "2024" / "index.html").read_text() == "previous complete version"
    assert sorted(p.name for p in root.iterdir()) == ["2024"]  # no .tmp-*, no lock


def test_canonical_json_is_deterministic() -> None:
    import numpy as np

    a = cycle.dump_json({"b": np.float64(0.1 + 0.2), "a": [np.int64(3), float("nan"), pd.NA]})
    assert a == '{\n  "a": [\n    3,\n    null,\n    null\n  ],\n  "b": 0.3\n}\n'


def test_shipped_cycle_file_is_valid(sample: dict[str, Path], tmp_path: Path) -> None:
    p = load_params(ROOT / "cycles" / "2024.yaml", panel=str(sample["panel"]),
                    macro=str(sample["macro"]), targets=str(sample["targets"]),
                    output_root=str(tmp_path))
    assert p.cycle == "2024" and p.countries == list(cycle.AREAS) and p.kernel == "msme-eval"


def _phased(folder: Path, name: str, body: str, phase: int) -> Path:
    path = _template(folder, name, "import pandas as pd\n" + body)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["msme_eval"]["phase"] = phase
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("last_exports", [False, True])
def test_downloads_written_during_the_last_phase_are_the_final_tables(
        sample: dict[str, Path], tmp_path: Path, last_exports: bool) -> None:
    """The runner writes the downloads on a worker while the last phase runs, from the tables of
    the earlier phases; when the last phase adds a table they are written again, so the
    downloads (CSV and Excel sheets) are always every table the notebooks exported."""
    import openpyxl

    tpl = tmp_path / "templates"
    _phased(tpl, "a_first", "ctx.export_table('first', pd.DataFrame({'x': [1, 2]}))", 1)
    _phased(tpl, "b_last", "ctx.export_table('last', pd.DataFrame({'y': [3]}))" if last_exports
            else "ctx.record('done', 1)", 2)
    params = _params(sample, tmp_path, templates_dir=str(tpl), countries=["ASEAN"], workers=2,
                     macro=None, targets=None)
    lines: list[str] = []
    result = cycle.run(params, log=lines.append)
    assert result.ok, result.summary()
    tables = result.path / "tables"
    want = {"first", "last"} if last_exports else {"first"}
    assert {p.stem for p in tables.glob("*.csv")} == want
    assert set(openpyxl.load_workbook(tables / "tables.xlsx").sheetnames) == {"Contents", *want}
    assert any("export-tables" in line and " ok " in line for line in lines)  # on a worker
    assert (result.path / "_audit" / "logs" / "export-tables.log").is_file()


def test_longest_first_uses_the_last_run_of_the_cycle(sample: dict[str, Path], tmp_path: Path) -> None:
    """Notebooks of a phase are ordered by the seconds they took in the published run of the
    cycle (else of the previous cycle), longest first; by template cost when any is unknown."""
    params = _params(sample, tmp_path, cycle="2024", countries=["IDN", "THA", "ASEAN"])
    dq = cycle.Template("10_dq", Path("a.ipynb"), "DQ", ("region", "country"))
    ind = cycle.Template("20_ind", Path("b.ipynb"), "Indicators", ("region", "country"))
    jobs = [cycle.Job(t, c) for t in (dq, ind) for c in ("IDN", "THA")]
    assert cycle.past_durations(params) == {}
    assert cycle.longest_first(jobs, {}) == jobs  # equal costs: template and area order
    earlier = params.output_root / "2023"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text('{"status": "ok", "notebooks": {}}\n')
    runs = [{"template": j.template.name, "country": j.country, "status": "ok", "duration": d}
            for j, d in zip(jobs, (1.0, 0.9, 2.1, 1.8))]
    (earlier / "provenance.json").write_text(json.dumps({"notebooks": runs}))
    past = cycle.past_durations(params)  # the previous cycle: 2024 has no published run yet
    assert past[("20_ind", "IDN")] == 2.1
    assert [j.key for j in cycle.longest_first(jobs, past)] == \
        ["20_ind/IDN", "20_ind/THA", "10_dq/IDN", "10_dq/THA"]
    assert cycle.longest_first([*jobs, cycle.Job(dq, "ASEAN")], past)[0].key == "10_dq/IDN"


def test_a_page_waiting_for_its_fits_does_not_hold_a_worker() -> None:
    """A worker passes over an impact page whose fits still run and takes the next job; the
    page goes to the first worker free once its area's fits have ended; clear() (interrupt)
    releases a worker waiting for it."""
    import threading

    impact = cycle.Template("30_impact", Path("c.ipynb"), "Impact", ("region",), cost=2.5,
                            needs=("impact",))
    dq = cycle.Template("10_dq", Path("a.ipynb"), "DQ", ("region", "country"))
    fit = cycle.FitJob("ASEAN", {"programme_type": ["finance"]}, "d", 1, 34.0)
    page, other = cycle.Job(impact, "ASEAN"), cycle.Job(dq, "THA")
    gate = cycle._FitGate([fit])
    todo = cycle._Todo([fit, page, other], gate)
    assert todo.take() is fit  # a fit can always start
    assert todo.take() is other  # the page is passed over while its fit runs
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(todo.take()))
    waiter.start()  # only the page is left: this worker waits for the fit
    waiter.join(0.2)
    assert waiter.is_alive() and got == []
    gate.done(fit)
    waiter.join(5)
    assert got == [page] and todo.take() is None
    gate2 = cycle._FitGate([fit])
    todo2 = cycle._Todo([cycle.Job(impact, "ASEAN")], gate2)
    waiter = threading.Thread(target=lambda: got.append(todo2.take()))
    waiter.start()
    waiter.join(0.2)
    todo2.clear()
    waiter.join(5)
    assert not waiter.is_alive() and got[-1] is None
