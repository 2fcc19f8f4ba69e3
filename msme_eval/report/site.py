"""The cycle site: ``<root>/<cycle>/index.html``, ``<root>/index.html`` and table downloads.

Everything shown comes from ``results.json`` (the notebooks' headline numbers) and the run
summary; Jinja autoescape is on, so text from data (programme names, ...) is always escaped.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from msme_eval import io
from msme_eval.contract import ASEAN, COUNTRIES, NO_ASSESSMENT, REGION, STATUSES, area_name
from msme_eval.plots import value_label
from msme_eval.report import export, protect
from msme_eval.report.display import fmt, p_value, status_class, status_symbol
from msme_eval.report.render import environment, stylesheet, write_atomic


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key treating digit runs as numbers ("2024" > "2023b" > "999")."""
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.split(r"(\d+)", name) if p)


def load_results(root: Path, cycle: str | None) -> dict[str, Any] | None:
    """A published cycle's results.json, or None."""
    if not cycle:
        return None
    path = root / cycle / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_cycles(root: Path) -> list[dict[str, Any]]:
    """Published cycles under ``root`` (complete folders only: they have results.json)."""
    out = []
    if not root.exists():
        return out
    for d in sorted(root.iterdir(), key=lambda p: natural_key(p.name), reverse=True):
        if d.name.startswith(".") or not d.is_dir():
            continue
        res = load_results(root, d.name)
        if res is None:
            continue
        prov: dict[str, Any] = {}
        try:
            prov = json.loads((d / "provenance.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        nbs = [v for t in res.get("notebooks", {}).values() for v in t.values()]
        out.append({"cycle": d.name, "status": res.get("status", "unknown"),
                    "n_notebooks": len(nbs),
                    "n_failed": sum(v.get("status") != "ok" for v in nbs),
                    "countries": res.get("parameters", {}).get("countries", []),
                    "started": prov.get("started_utc", "")})
    return out


GENERATOR = '<meta name="generator" content="msme-eval">'


def write_root_index(root: Path) -> bool:
    """``<root>/index.html`` listing every published cycle (written atomically). An existing
    index.html that msme-eval did not write is left alone (returns False)."""
    index = root / "index.html"
    if index.exists() and GENERATOR not in index.read_text(encoding="utf-8", errors="replace")[:4000]:
        return False
    text = environment().get_template("cycles.html.j2").render(
        cycles=list_cycles(root), css=stylesheet())
    write_atomic(index, text)
    return True


def export_tables(csv_files: list[Path], dest: Path) -> list[str]:
    """Copy the notebooks' CSV tables to ``dest`` (text cells neutralised against spreadsheet
    formulas, `io.safe_frame`), bundle them into ``tables.xlsx`` (`export.write_workbook`:
    contents sheet, titles, units, source, notes, frozen headers, number formats, ``[c]``) and
    write the indicator table as SDMX-CSV 2.0 with its structure description
    (`export.write_sdmx`)."""
    import pandas as pd

    if not csv_files:
        return []
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    tables: dict[str, pd.DataFrame] = {}
    for f in csv_files:
        df = pd.read_csv(f)
        df = protect.withhold_counts(df)  # a suppressed row's n/PSUs/df go with its value
        safe = io.safe_frame(df)
        io.atomic_write(dest / f.name, lambda tmp, d=safe: d.to_csv(tmp, index=False,
                                                                     lineterminator="\n"))
        names.append(f.name)
        tables[f.stem] = df
    export.write_workbook(tables, dest / "tables.xlsx")
    tidy = [df for stem, df in tables.items() if stem == "indicators" or stem.startswith("indicators_")]
    if tidy:
        whole = pd.concat(tidy, ignore_index=True).drop_duplicates(
            [c for c in ("indicator", "ref_area", "time_period", "breakdown", "group")
             if c in tidy[0].columns])
        names += export.write_sdmx(whole, dest)
    return names


def table_files(folder: Path) -> list[Path]:
    """The CSV tables the runner collected in ``folder`` (sorted by name; none if it is absent)."""
    return sorted(folder.glob("*.csv")) if folder.exists() else []


def export_folder(tables: str, dest: str) -> list[str]:
    """`export_tables` of every CSV in folder ``tables`` into ``dest`` (string paths, so a
    runner's worker process can run it: `msme_eval.report.execute.KernelWorker.call`)."""
    return export_tables(table_files(Path(tables)), Path(dest))


def _num(x: Any) -> float | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and \
        math.isfinite(x) else None


def _fmt_value(x: Any, unit: str = "") -> str:
    v = _num(x)
    if v is None:
        return "–"
    pct = unit.lower() in ("percent", "%", "share")
    return f"{v:,.1f}{'%' if pct else ''}" if abs(v) >= 1 or pct else f"{v:,.3f}"


def _ci(lo: Any, hi: Any, unit: str = "") -> str:
    if _num(lo) is None or _num(hi) is None:
        return ""
    return f"{_fmt_value(lo, unit)} to {_fmt_value(hi, unit)}"


def _kpis(results: dict[str, Any] | None, area: str = REGION) -> list[dict[str, Any]]:
    if not results:
        return []
    frag = results.get("notebooks", {}).get("20_indicators", {}).get(area, {})
    return list(frag.get("results", {}).get("kpis", []))


def member_progress(results: dict[str, Any] | None, indicator: str) -> str:
    """How the member states stand on one indicator, from their own pages: "3 achieved, 1 on
    track, 2 uncertain" (statuses in the order of the scale; '' when no member has a status)."""
    counts: dict[str, int] = {}
    frags = (results or {}).get("notebooks", {}).get("20_indicators", {})
    for area, frag in frags.items():
        if area == REGION:
            continue
        for k in frag.get("results", {}).get("kpis", []):
            status = k.get("status")
            if k.get("id") == indicator and status and status != NO_ASSESSMENT:
                key = "uncertain" if str(status).startswith("uncertain") else str(status)
                counts[key] = counts.get(key, 0) + 1
    order = [*STATUSES, "uncertain"]
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _changes(results: dict[str, Any], previous: dict[str, Any] | None,
             area: str = REGION) -> list[dict[str, Any]]:
    """KPI by KPI: previous cycle's value and status beside this cycle's (``area`` level)."""
    if not previous:
        return []
    before = {k.get("id"): k for k in _kpis(previous, area)}
    rows = []
    for k in _kpis(results, area):
        p = before.get(k.get("id"), {})
        cur, old = _num(k.get("value")), _num(p.get("value"))
        rows.append({
            "id": k.get("id"), "name": k.get("name", ""),
            "previous": _fmt_value(old, k.get("unit", "")), "previous_year": p.get("year", ""),
            "current": _fmt_value(cur, k.get("unit", "")), "year": k.get("year", ""),
            "change": "–" if cur is None or old is None else f"{cur - old:+,.2f}",
            "previous_status": p.get("status") or "–", "status": k.get("status") or "–",
        })
    return rows


def write_cycle_index(build: Path, *, params: Any, jobs: list[Any], runs: list[Any],
                      results: dict[str, Any], templates: list[Any], previous: str | None,
                      previous_results: dict[str, Any] | None,
                      provenance: dict[str, Any]) -> None:
    """``<cycle>/index.html``: executive summary, links to every page, run summary.

    The summary is the lead area's (`lead_area`): the region's, or in a run without the region
    the first member state's, whose pages then head the index."""
    lead = lead_area(params.countries)
    kpis = [dict(k, value_fmt=_fmt_value(k.get("value"), k.get("unit", "")),
                 ci_fmt=_ci(k.get("ci_low"), k.get("ci_high"), k.get("unit", "")),
                 target_fmt=_fmt_value(k.get("target"), k.get("unit", "")),
                 css=status_class(k.get("status")) if k.get("status") else "st-nodata",
                 symbol=status_symbol(k.get("status") or NO_ASSESSMENT), note=k.get("note") or "",
                 members=member_progress(results, k.get("id")) if lead == REGION else "")
            for k in _kpis(results, lead)]
    notes: dict[str, list[str]] = {}  # one footnote per distinct note, naming its indicators
    for k in kpis:
        if k["note"]:
            notes.setdefault(k["note"], []).append(k.get("id", ""))
    numbers = {text: i for i, text in enumerate(notes, start=1)}
    for k in kpis:
        k["note_n"] = numbers.get(k["note"])
    footnotes = [{"n": numbers[t], "ids": ", ".join(ids), "text": t} for t, ids in notes.items()]
    impact_frag = results.get("notebooks", {}).get("30_impact", {}).get(lead, {})
    impacts = [_impact_row(i) for i in impact_frag.get("results", {}).get("impacts", [])]
    dq = results.get("notebooks", {}).get("10_data_quality", {}).get(lead, {})
    coverage = dq.get("results", {}).get("coverage", {})
    programmes = [dict(p, type_label=value_label(p.get("programme_type", "")))
                  for p in dq.get("results", {}).get("programmes", [])
                  if p.get("area", REGION) in (REGION, lead)]
    by_job = {(r.template, r.country): r for r in runs}
    region_pages = [{"title": j.template.title, "href": j.relpath,
                     "code": j.relpath.replace(".html", ".code.html"),
                     "status": by_job[(j.template.name, j.country)].status}
                    for j in jobs if j.country == lead]
    country_templates = [t for t in templates if "country" in t.scope
                         and (lead != REGION or not getattr(t, "lead_only", False))]
    countries = []
    for c in params.countries:
        if c == REGION:
            continue
        cells = []
        for t in country_templates:
            r = by_job.get((t.name, c))
            cells.append(None if r is None else {"href": r.page, "status": r.status,
                                                 "title": t.title})
        countries.append({"code": c, "name": ASEAN[c][1], "cells": cells})
    run_rows = [{"template": r.template, "country": r.country, "status": r.status,
                 "duration": f"{r.duration:.1f}", "cell": r.failing_cell or "",
                 "error": r.error.splitlines()[0][:200] if r.error else "", "page": r.page}
                for r in runs]
    tables_dir = build / "tables"
    downloads = sorted(p.name for p in tables_dir.iterdir()) if tables_dir.exists() else []
    text = environment().get_template("cycle_index.html.j2").render(
        cycle=params.cycle, css=stylesheet(), status=results.get("status"),
        n_failed=sum(not r.ok for r in runs), n_runs=len(runs), kpis=kpis, footnotes=footnotes,
        impacts=impacts, impact_status=impact_frag.get("status"),
        six_steps=impact_frag.get("results", {}).get("six_steps"),
        coverage=coverage, programmes=programmes, region_pages=region_pages,
        country_templates=country_templates, countries=countries, runs=run_rows,
        previous=previous, changes=_changes(results, previous_results, lead),
        downloads=downloads, params=params, provenance=provenance,
        area=covered_area(coverage.get("countries")) if lead == REGION else area_name(lead),
        statuses=_status_legend(),
        pdfs=[{"href": f"pdf/{p.name}", "name": p.name}
              for p in sorted((build / "pdf").glob("*.pdf"))] if (build / "pdf").exists() else [])
    write_atomic(build / "index.html", text)


def lead_area(countries: list[str]) -> str:
    """The area an index page summarises: the region when it is in the run, else the run's
    first member state (as `msme_eval.cycle.lead_areas`)."""
    return REGION if REGION in countries else countries[0]


def covered_area(countries: Any) -> str:
    """The area a cycle's data cover, in words: "ASEAN (all member states)" only when all ten are
    present, else "ASEAN member states in the data: Thailand, Viet Nam" (as the pages say)."""
    present = [c for c in COUNTRIES if c in set(countries or [])]
    if not present:
        return "ASEAN"
    if len(present) == len(COUNTRIES):
        return "ASEAN (all member states)"
    return "ASEAN member states in the data: " + ", ".join(area_name(c) for c in present)


def _status_legend() -> list[dict[str, str]]:
    return [{"name": s, "css": status_class(s), "symbol": status_symbol(s)}
            for s in (*STATUSES, "uncertain: X or Y", NO_ASSESSMENT)]


def _impact_row(i: dict[str, Any]) -> dict[str, Any]:
    """One headline impact for the index: labels in words, effect and CI by scale."""
    lo, hi = _num(i.get("ci_low")), _num(i.get("ci_high"))
    return dict(i, type_label=value_label(i.get("programme_type", "")),
                outcome_label=value_label(i.get("outcome", "")),
                est_fmt=fmt(_num(i.get("estimate")), 3),
                ci_fmt=f"{fmt(lo, 3)} to {fmt(hi, 3)}" if lo is not None and hi is not None else "–",
                pre_fmt=p_value(_num(i.get("pretrend_pvalue"))))
