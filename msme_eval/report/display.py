"""Display helpers for report notebooks: every value that comes from data is HTML-escaped.

Markdown outputs are rendered by nbconvert with raw HTML allowed, so a programme called
``<script>alert(1)</script>`` would run in the reviewer's browser if it were pasted into
Markdown unescaped. `md` escapes the values it formats; `table` uses pandas' escaping.
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

STATUS_CLASSES: dict[str, str] = {
    # progress-to-target categories (DESIGN.md section 4) -> CSS class
    "achieved": "st-achieved", "on track": "st-ontrack", "on_track": "st-ontrack",
    "acceleration": "st-accel", "limited": "st-limited", "regression": "st-regress",
    "insufficient": "st-nodata", "no data": "st-nodata",
}


def status_class(label: Any) -> str:
    """CSS class of a progress status label (matches by keyword, case-insensitive)."""
    text = str(label).lower()
    for key, css in STATUS_CLASSES.items():
        if key in text:
            return css
    return "st-nodata"


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """Human format: thousands separators, fixed digits, '–' for missing/suppressed."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        s = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
        return f"{s}{unit}"
    return str(value)


class _HTML:
    """Minimal rich-display object (avoids importing IPython outside notebooks)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_html_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


class _Markdown:
    """Minimal Markdown display object."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def md(template: str, /, **values: Any) -> _Markdown:
    """Markdown with ``{name}`` placeholders filled by HTML-escaped values.

    Numbers keep their type so format specs work (``{n:,}``); everything else is escaped.
    """
    safe = {k: v if isinstance(v, (int, float)) and not isinstance(v, bool)
            else esc(v) for k, v in values.items()}
    return _Markdown(template.format(**safe))


def notice(text: str, kind: str = "info") -> _HTML:
    """A coloured call-out box (kind: info, warning, unavailable, error); text is escaped."""
    label = {"info": "Note", "warning": "Caution", "unavailable": "Not available",
             "error": "Problem"}.get(kind, "Note")
    return _HTML(f'<div class="me-callout me-{esc(kind)}"><strong>{label}.</strong> '
                 f"{esc(text)}</div>")


def _is_year(column: Any) -> bool:
    name = str(column).lower()
    return "year" in name or name in ("time_period", "cohort", "time")


def table(df: pd.DataFrame, *, caption: str | None = None, digits: int | Mapping[str, int] = 1,
          index: bool = False, status_col: str | None = None,
          max_rows: int = 400) -> _HTML:
    """An escaped, styled HTML table; numbers formatted, missing/suppressed cells as '–'.

    ``status_col`` colours that column by progress status.
    """
    if len(df) > max_rows:
        raise ValueError(f"table has {len(df)} rows; reports show at most {max_rows} "
                         "(aggregate it or export it with ctx.export_table)")
    shown = df.copy()
    if index:
        shown = shown.reset_index()
    cols = list(shown.columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for row in shown.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(cols, row):
            d = digits.get(str(c), 1) if isinstance(digits, Mapping) else digits
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if num else ""
            if status_col is not None and c == status_col:
                cls = f' class="{status_class(v)}"'
            if num and _is_year(c) and float(v).is_integer():
                text = str(int(v))  # years without thousands separators
            else:
                text = fmt(v, d)
            cells.append(f"<td{cls}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return _HTML(f'<table class="me-table">{cap}<thead><tr>{head}</tr></thead>'
                 f"<tbody>{''.join(body)}</tbody></table>")


def bullet_list(items: Sequence[str]) -> _HTML:
    """An escaped HTML bullet list."""
    return _HTML("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")


def key_figures(figures: Sequence[tuple[str, str, str]]) -> _HTML:
    """Big-number tiles: (label, value, note) each escaped."""
    tiles = "".join(
        f'<div class="me-tile"><div class="me-tile-value">{esc(v)}</div>'
        f'<div class="me-tile-label">{esc(label)}</div>'
        f'<div class="me-tile-note">{esc(note)}</div></div>' for label, v, note in figures)
    return _HTML(f'<div class="me-tiles">{tiles}</div>')
