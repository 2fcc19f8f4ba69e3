"""Rendering, escaping, the templates, and one small real cycle end to end.

The end-to-end cycle (real templates, two areas, tiny synthetic data with a hostile programme
name) is run twice: results.json must be byte-identical, no firm identifier may appear in any
published file, and text from data must be escaped. A browser test opens the pages in Debian's
chromium when it is installed.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import CHROMIUM, devtools
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import msme_eval as me
from msme_eval import cycle
from msme_eval.report import display, render

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script>"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
DATA_URI = re.compile(r"data:[a-z/+.-]+;base64,[A-Za-z0-9+/=]+")


# ------------------------------------------------------------------------------- units
def test_md_and_table_escape_data_text() -> None:
    m = display.md("Programme **{p}** reached {n:,} firms", p=HOSTILE, n=12345)
    assert m._repr_markdown_() == \
        "Programme **&lt;script&gt;alert(1)&lt;/script&gt;** reached 12,345 firms"
    t = display.table(pd.DataFrame({"programme": [HOSTILE], "firms": [3], "share": [0.12345]}),
                      caption=HOSTILE, digits={"share": 2})._repr_html_()
    # caption, the scroll box's aria-label and the cell: all escaped
    assert HOSTILE not in t and t.count("&lt;script&gt;") == 3 and ">0.12<" in t
    assert HOSTILE not in display.notice(HOSTILE)._repr_html_()
    with pytest.raises(ValueError, match="at most"):
        display.table(pd.DataFrame({"x": range(500)}))


def test_status_classes() -> None:
    assert display.status_class("On track") == "st-ontrack"
    assert display.status_class("Acceleration needed") == "st-accel"
    assert display.status_class("regression") == "st-regress"
    assert display.status_class(None) == "st-nodata"


def _executed_notebook() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": {"name": "msme-eval", "language": "python",
                                               "display_name": "x"}})
    png = base64.b64encode(b"\x89PNG fake").decode()
    nb.cells = [
        new_code_cell("cycle = '2024'", metadata={"tags": ["parameters"]}),
        new_code_cell("api_user = 'SECRET-INJECTED'", metadata={"tags": ["injected-parameters"]}),
        new_markdown_cell("# Heading\n\nSome prose."),
        new_code_cell("x = 1"),  # no output: dropped from the reviewer page
        new_code_cell("plot()", outputs=[new_output("display_data", data={
            "image/png": png, "text/plain": "<Figure>"})]),
        new_code_cell("js()", outputs=[new_output("display_data", data={
            "application/javascript": "alert(2)", "text/plain": "js"})]),
        new_code_cell("print('hidden source marker')", outputs=[
            new_output("stream", name="stdout", text="visible output\n")]),
    ]
    return nb


def test_render_pair_offline_code_hidden(tmp_path: Path) -> None:
    src = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), src)
    out = tmp_path / "site" / "IDN" / "20_indicators.html"
    render.render_pair(src, out, title=f"Indicators {HOSTILE}", cycle="2024", depth=1)
    page, code = out.read_text(), out.with_suffix(".code.html").read_text()
    for text in (page, code):
        assert "<script" not in text.lower()  # no require.js, MathJax, widgets or JS outputs
        assert not EXTERNAL.search(text), EXTERNAL.search(text)
        assert "SECRET-INJECTED" not in text  # injected-parameters cell removed
        assert "data:image/png;base64," in text  # figure embedded
        assert "&lt;script&gt;alert(1)" in text  # title escaped
        assert 'href="../index.html"' in text
    assert "visible output" in page and "hidden source marker" not in page
    assert "hidden source marker" in code and ">cycle<" in code  # parameters cell shown
    assert 'href="20_indicators.code.html"' in page


def test_failed_page_shows_error(tmp_path: Path) -> None:
    src = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), src)
    render.render_pair(src, tmp_path / "p.html", title="t", cycle="c", status="failed",
                       error=f"ValueError: {HOSTILE}", failing_cell=7)
    text = (tmp_path / "p.html").read_text()
    assert "failed at code cell 7" in text and "ValueError: &lt;script&gt;" in text


TEMPLATES = sorted((ROOT / "notebooks").glob("[!_.]*.ipynb"))


def _parameters_cell(nb) -> str:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a template has exactly one cell tagged 'parameters'"
    return cells[0].source


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_is_clean_and_its_parameters_match_the_typed_model(path: Path) -> None:
    """What matters in a template, not its bytes: no outputs (they could carry data), the
    parameters cell declares exactly the typed `NotebookParams` (with their defaults), and the
    cell after it re-checks them; no firm-level view; the library is imported, not looked up."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
    params_src = _parameters_cell(nb)
    namespace: dict = {}
    exec(params_src, namespace)  # noqa: S102 - our own template's literal assignments
    declared = {k: v for k, v in namespace.items() if not k.startswith("__")}
    assert set(declared) == set(cycle.NotebookParams.model_fields)
    cycle.NotebookParams.model_validate(declared)  # the defaults themselves are valid
    after = code[[c.source for c in code].index(params_src) + 1].source
    assert "notebook_context(globals(), _before)" in after
    joined = "\n".join(c.source for c in code)
    assert ".head(" not in joined and "firm_id" not in joined
    assert "library(" not in joined and "importlib" not in joined
    meta = nb.metadata["msme_eval"]
    assert meta["title"] and set(meta["scope"]) <= {"region", "country"}


def test_templates_ship_with_the_package() -> None:
    """The setuptools mapping puts notebooks/*.ipynb into the wheel as msme_eval/templates."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert conf["package-dir"]["msme_eval.templates"] == "notebooks"
    assert "msme_eval.templates" in conf["packages"]
    assert conf["package-data"]["msme_eval.templates"] == ["*.ipynb"]
    assert cycle.default_templates() == ROOT / "notebooks"  # source checkout


# ------------------------------------------------------------------------------- end to end
def _hostile_sample(out: Path) -> dict[str, Path]:
    data = me.synth.generate(n_firms=1000, years=range(2016, 2022), seed=11)
    panel = data.panel.copy()
    treated = panel["first_treated"].notna()
    first_type = panel.loc[treated, "programme_type"].iloc[0]
    panel.loc[treated & (panel["programme_type"] == first_type), "programme"] = HOSTILE
    import dataclasses

    return me.synth.write_sample(out, dataclasses.replace(data, panel=panel))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("e2e")
    paths = _hostile_sample(tmp / "data")
    params = cycle.CycleParams(cycle="e2e", panel=paths["panel"], macro=paths["macro"],
                               targets=paths["targets"], countries=["IDN", "ASEAN"],
                               output_root=tmp / "reports", workers=2, timeout=600.0)
    t0 = time.perf_counter()
    result = cycle.run(params, log=lambda s: None)
    return result, params, paths, time.perf_counter() - t0


def test_small_cycle_end_to_end(e2e) -> None:
    result, params, _, _ = e2e
    assert result.ok, result.summary()
    cyc = result.path
    pages = sorted(str(p.relative_to(cyc)) for p in cyc.rglob("*.html"))
    assert pages == sorted([
        "00_summary.html", "00_summary.code.html", "10_data_quality.html",
        "10_data_quality.code.html", "20_indicators.html", "20_indicators.code.html",
        "30_impact.html", "30_impact.code.html", "IDN/10_data_quality.html",
        "IDN/10_data_quality.code.html", "IDN/20_indicators.html",
        "IDN/20_indicators.code.html", "index.html"])
    res = json.loads((cyc / "results.json").read_text())
    assert res["status"] == "ok"
    kpis = res["notebooks"]["20_indicators"]["ASEAN"]["results"]["kpis"]
    assert [k["id"] for k in kpis] == [f"K{i:02d}" for i in range(1, 11)]
    index = (cyc / "index.html").read_text()
    for k in kpis:
        assert k["id"] in index
    for link in ("10_data_quality.html", "IDN/20_indicators.html", "30_impact.html",
                 "results.json", "provenance.json", "tables/tables.xlsx"):
        assert f'href="{link}"' in index
    assert (cyc / "tables" / "kpis.csv").is_file() and (cyc / "tables" / "kpis_IDN.csv").is_file()
    for page in cyc.rglob("*.html"):  # reviewers see prose and tables, not stray warnings
        if not page.name.endswith(".code.html"):
            assert "output_stderr output_text" not in page.read_text(), page
    assert "e2e/index.html" in (params.output_root / "index.html").read_text()


def _published_text(folder: Path) -> dict[Path, str]:
    out = {}
    for p in folder.rglob("*"):
        if p.suffix in (".html", ".json", ".csv", ".ipynb", ".log"):
            out[p] = DATA_URI.sub("", p.read_text(encoding="utf-8", errors="replace"))
        elif p.suffix == ".xlsx":
            xl = pd.read_excel(p, sheet_name=None)
            out[p] = "\n".join(df.to_csv() for df in xl.values())
    return out


def test_no_firm_identifier_in_any_published_file(e2e) -> None:
    result, _, paths, _ = e2e
    ids = set(pd.read_parquet(paths["panel"], columns=["firm_id"])["firm_id"].astype(str))
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, ids)) + r")(?![0-9])")
    files = _published_text(result.path)
    assert len(files) > 20
    leaks = {str(p): m.group(0) for p, text in files.items() if (m := pattern.search(text))}
    assert not leaks


def test_hostile_text_is_escaped(e2e) -> None:
    result, *_ = e2e
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    seen = []
    for p in result.path.rglob("*.html"):
        text = p.read_text()
        assert HOSTILE not in text, p
        assert "<script" not in text.lower(), p
        if escaped in text:
            seen.append(p.name)
    assert "10_data_quality.html" in seen and "index.html" in seen


def test_pages_have_no_network_assets(e2e) -> None:
    result, *_ = e2e
    for p in result.path.rglob("*.html"):
        m = EXTERNAL.search(p.read_text())
        assert m is None, (p, m and m.group(0))


def test_results_json_identical_across_runs(e2e, tmp_path: Path) -> None:
    result, params, _, _ = e2e
    again = cycle.run(params.model_copy(update={"output_root": tmp_path}), log=lambda s: None)
    assert again.ok, again.summary()
    assert (tmp_path / "e2e" / "results.json").read_bytes() == \
        (result.path / "results.json").read_bytes()


# ------------------------------------------------------------------------------- browser


async def _browse(url: str, shot: Path) -> tuple[list[str], list[str]]:
    """Open ``url`` in headless chromium over the DevTools protocol; return (console errors,
    network URLs other than file://) and save a screenshot."""
    errors: list[str] = []
    requests: list[str] = []

    def handle(msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(str(p.get("args")))
        elif m == "Runtime.exceptionThrown":
            errors.append(str(p.get("exceptionDetails")))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(p["entry"].get("text", ""))
        elif m == "Network.requestWillBeSent":
            u = p["request"]["url"]
            if not u.startswith(("file://", "data:")):
                requests.append(u)

    async with devtools(handle) as send:
        for domain in ("Page", "Runtime", "Log", "Network"):
            await send(f"{domain}.enable")
        await send("Page.navigate", url=url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                msg = json.loads(await asyncio.wait_for(send.ws.read_message(), 0.5))
            except asyncio.TimeoutError:
                continue
            handle(msg)
            if msg.get("method") == "Page.loadEventFired":
                break
        await asyncio.sleep(0.5)
        img = await send("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(img["data"]))
    return errors, requests


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_pages_open_in_headless_chromium(e2e, tmp_path: Path) -> None:
    result, *_ = e2e
    for page in ("index.html", "20_indicators.html"):
        shot = tmp_path / f"{page}.png"
        errors, requests = asyncio.run(_browse((result.path / page).as_uri(), shot))
        assert errors == [], (page, errors)
        assert requests == [], (page, requests)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # rendered content


# ------------------------------------------------------------------------------- site units
def test_changes_since_previous_cycle_and_cycle_list(tmp_path: Path) -> None:
    from msme_eval.report import site

    def res(v: float, status: str) -> dict:
        return {"status": "ok", "parameters": {"countries": ["ASEAN"]}, "notebooks": {
            "20_indicators": {"ASEAN": {"status": "ok", "results": {"kpis": [
                {"id": "K01", "name": "MSME share", "value": v, "unit": "percent",
                 "year": 2024, "status": status}]}}}}}

    rows = site._changes(res(99.5, "on track"), res(99.25, "limited progress"))
    assert rows == [{"id": "K01", "name": "MSME share", "previous": "99.2%",
                     "previous_year": 2024, "current": "99.5%", "year": 2024,
                     "change": "+0.25", "previous_status": "limited progress",
                     "status": "on track"}]
    assert site._changes(res(1.0, "x"), None) == []
    for name in ("2023", "2024", "2024b", ".tmp-2025-abc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res(1.0, "ok")))
    (tmp_path / "incomplete").mkdir()  # no results.json: not a published cycle
    assert [c["cycle"] for c in site.list_cycles(tmp_path)] == ["2024b", "2024", "2023"]
    assert site.natural_key("2024") > site.natural_key("999")


def test_summary_tables_hide_firm_detail() -> None:
    from msme_eval.report import summaries as S

    report = pd.DataFrame([{
        "file": "p.csv", "severity": "warning", "column": "weight", "rule": "weights_dispersed",
        "n_rows": 12, "fix": "check weights", "rows": [5, 9],
        "message": "p.csv: column 'weight' [weights_dispersed]: weights vary (IDN 2015: "
                   "max/min = 14); 12 rows, first: row 5 (country=IDN, weight=52549.26)"}])
    out = S.validation_summary(report)
    assert list(out.columns) == ["severity", "column", "rule", "n_rows", "finding", "fix"]
    assert out.loc[0, "finding"] == \
        "column 'weight' [weights_dispersed]: weights vary (IDN 2015: max/min = 14)"
    panel = pd.DataFrame({
        "firm_id": ["a", "a", "b", "c", "d", "e"], "year": [2020, 2021, 2020, 2020, 2020, 2020],
        "programme": ["P1", "P1", "P1", "P1", "P2", None],
        "programme_type": ["finance"] * 5 + [None],
        "first_treated": pd.array([2020, 2020, 2021, 2020, 2021, None], dtype="Int64")})
    counts = S.programme_counts(panel, min_contributors=3)
    assert counts["programme"].tolist() == ["P1", "P2"]
    assert counts["firms_supported"].iloc[0] == 3 and pd.isna(counts["firms_supported"].iloc[1])


def test_firm_id_redactor() -> None:
    from msme_eval.report.redact import REDACTED, firm_id_redactor

    redact, unprotected = firm_id_redactor(["MYS0538", "BRN001", "123456", "ab"])
    text, n = redact("cohort with one unit (firm_id = 'MYS0538'); MYS0538. BRN0011 BRN001 "
                     "123456 data:image/png;base64,QUFBTVlTMDUzOA==")
    # purely numeric and short ids are redacted only where quoted or keyed (tests/test_redact.py)
    assert n == 3 and unprotected == 0
    assert text == (f"cohort with one unit (firm_id = '{REDACTED}'); {REDACTED}. BRN0011 "
                    f"{REDACTED} 123456 data:image/png;base64,QUFBTVlTMDUzOA==")
