"""Render executed notebooks to self-contained, offline HTML with nbconvert.

Execution and conversion are separate steps (papermill's report mode is not honoured by
nbconvert, and tag removal combined with ``--execute`` is unreliable: nbconvert#1300). We use
nbconvert's ``basic`` template, which emits only the cell markup — no require.js, MathJax or
widget scripts from a CDN — and wrap it in our own page with inline CSS. Two versions:

- ``<name>.html``: for reviewers; code, prompts, the parameters and injected-parameters cells
  and code cells without output removed;
- ``<name>.code.html``: for auditors; the same with the code shown (injected cell still removed,
  the effective parameters are printed by the notebook itself).

Accessibility and layout: every image gets real alt text (the figure's own description from
its output metadata, set by `display.figure`; otherwise "Figure in section <heading>" from the
nearest heading above it, never nbconvert's "No description has been provided" placeholder);
every table sits in a scroll box; the page ``<title>`` is the notebook's own first heading (so
it names the area actually covered, e.g. "ASEAN member states in the data: Thailand, Viet Nam").
"""
from __future__ import annotations

import copy
import html
import os
import re
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

HERE = Path(__file__).parent
REMOVE_TAGS = {"injected-parameters", "remove-cell"}
# mime types that would need scripts to display; they are dropped so pages stay script-free
SCRIPT_MIMES = ("application/javascript", "application/vnd.jupyter.widget-view+json",
                "application/vnd.jupyter.widget-state+json", "text/javascript")


@cache
def environment() -> jinja2.Environment:
    """Jinja environment for site templates; autoescape is always on."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


@cache
def stylesheet() -> str:
    """The shared CSS (site + notebook markup + code highlighting)."""
    from pygments.formatters import HtmlFormatter

    css = (HERE / "static" / "report.css").read_text(encoding="utf-8")
    return css + "\n" + HtmlFormatter(style="default").get_style_defs(".highlight")


def _strip_scripts(cell: Any) -> None:
    for out in cell.get("outputs", []):
        data = out.get("data")
        if data:
            for mime in SCRIPT_MIMES:
                data.pop(mime, None)


_HEADING = re.compile(r"^\s{0,3}(#{1,3})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MD_MARK = re.compile(r"[*_`]")


def _headings(cell: Any) -> list[tuple[int, str]]:
    """(level, text) of the Markdown headings a cell shows (its source or its Markdown output)."""
    texts = [cell.source] if cell.cell_type == "markdown" else [
        "".join(out.get("data", {}).get("text/markdown", ""))
        for out in cell.get("outputs", []) if out.get("data")]
    return [(len(m.group(1)), html.unescape(_MD_MARK.sub("", m.group(2))))
            for text in texts for m in _HEADING.finditer(text)]


def page_heading(nb: Any) -> str | None:
    """The first level-1 heading a code cell displays (templates print their title with the
    area the data cover, ``md("# {title} — {area}")``), if any. A static Markdown cell cannot
    know the area, so it is not used."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for level, text in _headings(cell):
            if level == 1:
                return text
    return None


def _add_alt_text(cell: Any, section: str) -> None:
    """Images without alt text get "Figure in section <heading>" (nbconvert would otherwise
    write a placeholder)."""
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        for mime in ("image/png", "image/jpeg", "image/svg+xml"):
            if mime in data:
                meta = out.setdefault("metadata", {}).setdefault(mime, {})
                if not meta.get("alt"):
                    meta["alt"] = f"Figure in section '{section}'" if section else "Figure"


def prepare(nb: Any, *, show_code: bool) -> Any:
    """Copy of ``nb`` with removed cells dropped, (for reviewers) code-only cells dropped and
    alt text on every image."""
    nb = copy.deepcopy(nb)
    cells = []
    section = ""
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if tags & REMOVE_TAGS:
            continue
        for _, text in _headings(cell):
            section = text
        if cell.cell_type == "code":
            _strip_scripts(cell)
            _add_alt_text(cell, section)
            if not show_code and (not cell.get("outputs") or tags & {"parameters"}):
                continue
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("papermill", None)
    return nb


_BARE_TABLE = re.compile(r"(<table\b(?![^>]*\bme-table\b).*?</table>)", re.DOTALL)


def wrap_tables(body: str) -> str:
    """Put every table not made by `display.table` (e.g. a DataFrame's own HTML) in a scroll box."""
    return _BARE_TABLE.sub(r'<div class="me-scroll" role="region" tabindex="0">\1</div>', body)


_EXPORTERS = threading.local()  # per thread: an exporter keeps state while it converts


def _exporter(show_code: bool) -> Any:
    """This thread's nbconvert ``HTMLExporter`` for one mode, made once: a new exporter compiles
    its Jinja templates again (a third of the rendering time of a page)."""
    made = _EXPORTERS.__dict__
    if show_code not in made:
        from nbconvert import HTMLExporter

        made[show_code] = HTMLExporter(template_name="basic", exclude_input=not show_code,
                                       exclude_input_prompt=not show_code,
                                       exclude_output_prompt=True, embed_images=True,
                                       anchor_link_text="")
    return made[show_code]


def notebook_body(nb: Any, *, show_code: bool) -> str:
    """HTML fragment of the notebook's cells (no scripts, images embedded as data URIs)."""
    body, _ = _exporter(show_code).from_notebook_node(prepare(nb, show_code=show_code))
    return wrap_tables(body)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def page(body: str, *, title: str, cycle: str, depth: int, status: str = "ok",
         error: str = "", failing_cell: int | None = None, alt_href: str = "",
         alt_label: str = "") -> str:
    """A full HTML page around a notebook body (our CSS inline, no external assets)."""
    return environment().get_template("page.html.j2").render(
        title=title, cycle=cycle, root="../" * depth, body=body, css=stylesheet(),
        status=status, error=error, failing_cell=failing_cell, alt_href=alt_href,
        alt_label=alt_label)


def render_pair(nb_path: Path, html_path: Path, *, title: str, cycle: str, status: str = "ok",
                depth: int = 0, error: str = "", failing_cell: int | None = None) -> None:
    """Write the reviewer page ``html_path`` and the auditor page ``*.code.html`` beside it."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    title = page_heading(nb) or title
    code_path = html_path.with_suffix(".code.html")
    for show_code, path, alt, alt_label in (
            (False, html_path, code_path.name, "show code (auditors)"),
            (True, code_path, html_path.name, "hide code")):
        text = page(notebook_body(nb, show_code=show_code), title=title, cycle=cycle,
                    depth=depth, status=status, error=error, failing_cell=failing_cell,
                    alt_href=alt, alt_label=alt_label)
        write_atomic(path, text)


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)
