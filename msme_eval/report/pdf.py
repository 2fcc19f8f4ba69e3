"""One printable PDF per area of a published cycle, printed by headless Chromium.

For each area the reviewer pages are bundled into one HTML document in the order a ministry
reads them: executive summary, indicators, impact, data quality, then the methods notes of the
cycle index. Each part starts on a new page (print stylesheet in ``report.css``: no navigation
bars, table headers repeated on every page, tables wrapped to the paper width), folded
``<details>`` are printed open, and the document is printed with
``chromium --headless --print-to-pdf``. Without Chromium `write_pdfs` raises `PdfError` with a
message saying how to install it; nothing else in the cycle depends on it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from msme_eval.contract import COUNTRIES, REGION, area_name
from msme_eval.report.render import stylesheet

ORDER = ("00_summary", "20_indicators", "30_impact", "10_data_quality")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_MAIN = re.compile(r"<main[^>]*>(.*?)</main>", re.DOTALL)
_METHODS = re.compile(r'(<h2 id="downloads">.*?)<h2 id="run">', re.DOTALL)


class PdfError(RuntimeError):
    """The PDF could not be produced (no Chromium, or Chromium failed)."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None ($MSME_EVAL_CHROMIUM wins)."""
    env = os.environ.get("MSME_EVAL_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _main_of(page: Path) -> str:
    m = _MAIN.search(page.read_text(encoding="utf-8"))
    return m.group(1) if m else ""


def bundle(cycle_dir: Path, area: str) -> str | None:
    """The HTML document of one area's PDF, or None when the area has no page."""
    folder = cycle_dir if area == REGION else cycle_dir / area
    parts = [_main_of(folder / f"{name}.html") for name in ORDER
             if (folder / f"{name}.html").is_file()]
    if not parts:
        return None
    index = cycle_dir / "index.html"
    methods = _METHODS.search(index.read_text(encoding="utf-8")) if index.is_file() else None
    if methods:
        parts.append("<h1>Methods and data</h1>" + methods.group(1))
    body = "".join(f'<section class="me-part">{p}</section>' for p in parts)
    body = body.replace("<details", "<details open")
    title = f"MSME monitoring report — {area_name(area)} — cycle {cycle_dir.name}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{stylesheet()}</style></head><body class=\"me-bundle\"><main class=\"me-main\">"
            f"{body}</main></body></html>")


def print_pdf(html_path: Path, pdf_path: Path, chromium: str, timeout: float = 180) -> None:
    """Print one HTML file to PDF with headless Chromium (offline: no network, no profile)."""
    profile = tempfile.mkdtemp(prefix="msme-eval-chromium-")
    try:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={pdf_path}", html_path.as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise PdfError(f"chromium could not print {html_path.name} (exit {proc.returncode}): "
                       f"{proc.stderr.strip()[-300:]}")


def write_pdfs(cycle_dir: Path, *, chromium: str | None = None,
               areas: list[str] | None = None) -> list[Path]:
    """``<cycle_dir>/pdf/<AREA>.pdf`` for the region and every member state with pages."""
    cycle_dir = Path(cycle_dir)
    if not (cycle_dir / "index.html").is_file():
        raise PdfError(f"{cycle_dir} is not a published cycle folder (no index.html)")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise PdfError("no Chromium found to print the PDF: install it (Debian/Ubuntu: "
                       "apt-get install chromium) or set MSME_EVAL_CHROMIUM to its path")
    out_dir = cycle_dir / "pdf"
    out_dir.mkdir(exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=cycle_dir, prefix=".pdf-") as tmp:
        for area in areas or [REGION, *COUNTRIES]:
            doc = bundle(cycle_dir, area)
            if doc is None:
                continue
            src = Path(tmp) / f"{area}.html"
            src.write_text(doc, encoding="utf-8")
            print_pdf(src, out_dir / f"{area}.pdf", chromium)
            written.append(out_dir / f"{area}.pdf")
    return written
