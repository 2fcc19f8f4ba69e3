"""The rendered pages as a reviewer meets them: on a laptop (1400 px), a phone (390 px) and paper.

A small real cycle (Indonesia and the region, own templates) is opened in headless Chromium over
the DevTools protocol; a script run in each page reports, at each width:

* tables wider than the page that are not inside a horizontal scroll box;
* visible table headers still in snake_case (a raw column name);
* figures without real alt text (missing, empty, or nbconvert's placeholder);
* text whose contrast with its background is below 4.5:1 (WCAG AA), computed from the
  rendered colours (the first opaque background up the tree).

Then `msme-eval pdf` prints one PDF per area and every column header of the HTML tables must
be in the PDF's text (pdftotext): nothing clipped off the page.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CHROMIUM, devtools

from msme_eval import cycle
from msme_eval.cli import main

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian chromium (.ci/run installs it)")]

AUDIT = r"""
(() => {
  const out = {wide: [], snake: [], noalt: [], contrast: [], height: document.documentElement.scrollHeight};
  const vw = document.documentElement.clientWidth;
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  for (const t of document.querySelectorAll('table')) {
    if (!visible(t) || t.getBoundingClientRect().width <= vw + 1) continue;
    let p = t.parentElement, boxed = false;
    while (p && p !== document.body) {
      const scrolls = /(auto|scroll)/.test(getComputedStyle(p).overflowX);
      if (scrolls && p.getBoundingClientRect().width <= vw + 1) { boxed = true; break; }
      p = p.parentElement;
    }
    if (!boxed) out.wide.push((t.caption ? t.caption.textContent : t.textContent).slice(0, 60));
  }
  for (const th of document.querySelectorAll('th')) {
    const s = th.textContent.trim();
    if (visible(th) && /^[a-z0-9]+(_[a-z0-9]+)+$/.test(s)) out.snake.push(s);
  }
  for (const img of document.querySelectorAll('img')) {
    const a = (img.getAttribute('alt') || '').trim();
    if (!a || /no description has been provided/i.test(a)) out.noalt.push(img.src.slice(0, 40));
  }
  const rgb = s => (s.match(/[\d.]+/g) || [0, 0, 0, 0]).map(Number);
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                     return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0.5) return c;
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !visible(el) || el.closest('svg')) continue;
    const fg = lum(rgb(getComputedStyle(el).color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) out.contrast.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return out;
})()
"""


async def _evaluate(url: str, js: str, width: int) -> dict:
    """Open ``url`` at ``width`` px in headless Chromium and return the value of ``js``."""
    async with devtools() as send:
        await send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                   mobile=width < 600)
        await send("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = await send("Runtime.evaluate", expression="document.readyState", returnByValue=True)
            if r.get("result", {}).get("value") == "complete":
                break
            await asyncio.sleep(0.2)
        r = await send("Runtime.evaluate", expression=js, returnByValue=True)
        return r["result"]["value"]


@pytest.fixture(scope="module")
def site(small_sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    params = cycle.CycleParams(cycle="b", panel=small_sample["panel"], macro=small_sample["macro"],
                               targets=small_sample["targets"], countries=["IDN", "ASEAN"],
                               output_root=root / "reports", workers=2, timeout=600.0)
    result = cycle.run(params, log=lambda s: None)
    assert result.ok, result.summary()
    return result.path


PAGES = ["index.html", "00_summary.html", "20_indicators.html", "30_impact.html", "10_data_quality.html",
         "IDN/20_indicators.html"]


@pytest.mark.parametrize("width", [1400, 390])
def test_pages_fit_read_and_contrast_at_laptop_and_phone_width(site: Path, width: int) -> None:
    problems = {}
    for page in PAGES:
        path = site / page
        if not path.exists():
            continue
        found = asyncio.run(_evaluate(path.as_uri(), AUDIT, width))
        bad = {k: v for k, v in found.items() if k != "height" and v}
        if bad:
            problems[page] = bad
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)[:3000]


def _html_headers(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    heads = {re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", text, re.S)}
    return {re.sub(r"\s+", " ", h) for h in heads if h and not h.isdigit()}


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs poppler-utils (pdftotext)")
def test_pdf_per_area_holds_every_table_header(site: Path, capsys) -> None:
    assert main(["pdf", str(site)]) == 0
    pdfs = {p.stem: p for p in (site / "pdf").glob("*.pdf")}
    assert pdfs, capsys.readouterr()
    region = next(p for name, p in pdfs.items() if "ASEAN" in name or "region" in name.lower())
    text = subprocess.run(["pdftotext", "-layout", str(region), "-"], capture_output=True, text=True,
                          check=True).stdout
    flat = re.sub(r"\s+", " ", text)
    pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(region)], capture_output=True,
                                                          text=True).stdout).group(1))
    assert pages > 1
    # every word of every header, whole (a header may wrap between words, never inside one,
    # and nothing may be cut off at the page edge)
    words = set(re.findall(r"[^\W\d_]{3,}", flat))
    missing = sorted({w for page in ("20_indicators.html", "30_impact.html")
                      for h in _html_headers(site / page) for w in re.findall(r"[^\W\d_]{3,}", h)} - words)
    assert not missing, missing[:20]
