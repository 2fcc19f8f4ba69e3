"""Display helpers for report notebooks: every value that comes from data is HTML-escaped.

Markdown outputs are rendered by nbconvert with raw HTML allowed, so a programme called
``<script>alert(1)</script>`` would run in the reviewer's browser if it were pasted into
Markdown unescaped. `md` escapes the values it formats; `table` escapes every cell and header.

Tables speak the reader's language: headers through the one label map (`msme_eval.plots.label`),
categorical values (programme types, outcomes) through `plots.value_label`, numbers formatted
by kind (`number_kind`: year, count, percent, share, p-value, money with its currency, plain),
never ``-0.0``; confidential cells (``conf_status`` other than F) shown as ``[c]``; the progress
status as a word with a shape symbol as well as a colour. Every table sits in its own scroll box
so a wide table never widens the page. Figures go through `figure` so each image carries alt text.
"""
from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from msme_eval.plots import STATUS_SYMBOLS, label, value_label

STATUS_CLASSES: dict[str, str] = {
    # progress-to-target categories (DESIGN.md section 4) -> CSS class; a status that flips in
    # more than 20% of draws of the sampling distribution reads "uncertain: X or Y"
    "uncertain": "st-uncertain", "not achieved": "st-notachieved", "achieved": "st-achieved",
    "on track": "st-ontrack", "on_track": "st-ontrack",
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


def status_symbol(label_: Any) -> str:
    """The shape symbol of a status (same vocabulary as the figures' markers)."""
    css = status_class(label_)
    for name, sym in STATUS_SYMBOLS.items():
        if status_class(name) == css:
            return sym
    return STATUS_SYMBOLS["no assessment"]


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too)."""
    return html.escape(str(value), quote=True)


_NEG_ZERO = re.compile(r"^-(0(?:[.,]0*)?)(\D*)$")


def _no_negative_zero(text: str) -> str:
    """'-0.0' -> '0.0' (a value that rounds to zero has no sign)."""
    m = _NEG_ZERO.match(text)
    return m.group(1) + m.group(2) if m else text


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    """Human format: thousands separators, fixed digits, '–' for missing/suppressed, no '-0.0'."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        s = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
        return _no_negative_zero(f"{s}{unit}")
    return str(value)


def p_value(p: Any) -> str:
    """A p-value as readers expect it: '< 0.001' below 0.001, else three decimals."""
    if not _finite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


COUNT_COLUMNS = frozenset({"n", "n_rows", "n_treated", "n_units", "n_never_treated", "n_cohorts",
                           "n_points", "n_supported", "firms", "firms_supported", "values",
                           "positive", "zeros", "extreme", "negative", "jobs_created",
                           "jobs_ci_low", "jobs_ci_high", "n_psu", "df", "pretrend_df", "jobs_created_e"})
MONEY_COLUMNS = frozenset({"support_total", "cost_per_job", "cost_ci_low", "cost_ci_high",
                           "cost_per_job_fixed_horizon", "cost_per_job_e", "cost_ci_low_e", "cost_ci_high_e",
                           "support_total_e"})
_TEXT_COLUMNS = frozenset({"id", "indicator", "name", "country", "ref_area", "area"})
CATEGORY_COLUMNS = ("programme_type", "outcome", "subgroup", "spec", "dimension", "breakdown",
                    "control", "method", "level")


def number_kind(column: Any) -> str:
    """How a column's numbers are shown: year, count, pvalue, percent (already x100), share
    (a 0-1 fraction shown x100), money, or plain."""
    name = str(column).lower()
    if _is_year(name):
        return "year"
    if "pvalue" in name or name in ("p", "p-value") or name.endswith(" p"):
        return "pvalue"
    if name in COUNT_COLUMNS or name.startswith("n_"):
        return "count"
    if name.endswith(("_pct", "(%)", "%")):
        return "percent"
    if name.startswith("share_"):
        return "share"
    if name in MONEY_COLUMNS:
        return "money"
    return "plain"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def format_number(v: Any, kind: str, digits: int = 1, currency: str = "") -> str:
    """One number as text for its kind (see `number_kind`)."""
    if not _finite(v):
        return fmt(v, digits)
    if kind == "year" and float(v).is_integer():
        return str(int(v))
    if kind == "pvalue":
        return p_value(v)
    if kind == "count":
        return fmt(int(round(v)), 0)
    if kind == "percent":
        return fmt(float(v), digits, "%")
    if kind == "share":
        return fmt(100 * float(v), digits, "%")
    if kind == "money":
        unit = f" {currency}" if currency and len(currency) <= 4 else ""
        return fmt(float(v), 0, unit)
    return fmt(v, digits)


class _Text:
    """Minimal rich-display object (avoids importing IPython outside notebooks)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class _HTML(_Text):
    def _repr_html_(self) -> str:
        return self.text


class _Markdown(_Text):
    def _repr_markdown_(self) -> str:
        return self.text


def md(template: str, /, **values: Any) -> _Markdown:
    """Markdown with ``{name}`` placeholders filled by HTML-escaped values.

    Numbers keep their type so format specs work (``{n:,}``); everything else is escaped.
    """
    safe = {k: v if isinstance(v, (int, float)) and not isinstance(v, bool)
            else esc(", ".join(value_label(i) for i in v) if isinstance(v, (list, tuple, set))
                     else v) for k, v in values.items()}
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


SUPPRESSED = "[c]"
SUPPRESSED_NOTE = ("[c] confidential: suppressed by disclosure control (too few firms, or one "
                   "or two firms dominate the total); – not available.")
_PUBLISHED = {"F", "", "nan", "None", "<NA>"}


def suppressed_rows(df: pd.DataFrame) -> pd.Series:
    """Rows whose ``conf_status`` marks them confidential (anything but F/blank)."""
    if "conf_status" not in df.columns:
        return pd.Series(False, index=df.index)
    return ~df["conf_status"].astype(str).isin(_PUBLISHED)


def _digits_for(digits: int | Mapping[str, int], column: Any) -> int:
    if isinstance(digits, Mapping):
        return digits.get(str(column), digits.get(label(column), 1))
    return digits


def cell_text(value: Any, column: Any, *, digits: int = 1, currency: str = "",
              suppressed: bool = False) -> str:
    """The text a reader sees in one cell (numbers by `number_kind`, categories labelled)."""
    num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if num:
        if suppressed and (not math.isfinite(value) or number_kind(column) == "count"):
            return SUPPRESSED  # a confidential cell's firm count is withheld with its value
        return format_number(value, number_kind(column), digits, currency)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return SUPPRESSED if suppressed else "–"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(value_label(v) for v in value)
    if str(column) in CATEGORY_COLUMNS:
        return value_label(value)
    if str(column) == "column":
        return label(value)
    return str(value)


def _status_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = "no assessment"
    return (f'<td class="{status_class(value)}"><span aria-hidden="true">'
            f"{status_symbol(value)}</span> {esc(value)}</td>")


def table(df: pd.DataFrame, *, caption: str | None = None, digits: int | Mapping[str, int] = 1,
          index: bool = False, status_col: str | None = None,
          max_rows: int = 400, labels: bool = True, note: str | None = None) -> _HTML:
    """An escaped, styled HTML table in its own horizontal scroll box.

    Headers go through the label map (``labels=False`` keeps them); numbers are formatted by
    kind (`number_kind`; ``digits`` per column name or label); rows whose ``conf_status`` is
    not F show missing numbers and counts (``n``, PSUs, df) as ``[c]`` (with the legend below
    the table); ``status_col``
    shows the progress status as symbol + word + colour. ``conf_status`` itself and a
    ``currency`` column (appended to money values) are not shown as columns.
    """
    if len(df) > max_rows:
        raise ValueError(f"table has {len(df)} rows; reports show at most {max_rows} "
                         "(aggregate it or export it with ctx.export_table)")
    shown = df.reset_index() if index else df.copy()
    hidden = suppressed_rows(shown)
    currency = shown["currency"].astype(str) if "currency" in shown.columns else None
    cols = [c for c in shown.columns if c not in ("conf_status", "currency")]
    head = "".join(f'<th scope="col">{esc(label(c) if labels else c)}</th>' for c in cols)
    body = []
    for i, (_, row) in enumerate(shown.iterrows()):
        cells = []
        for c in cols:
            v = row[c]
            if status_col is not None and c == status_col:
                cells.append(_status_cell(v))
                continue
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = cell_text(v, c, digits=_digits_for(digits, c), suppressed=bool(hidden.iloc[i]),
                             currency="" if currency is None else currency.iloc[i])
            cls = ' class="num"' if num else (' class="nw"' if len(text) <= 34 else "")
            cells.append(f"<td{cls}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    notes = [SUPPRESSED_NOTE] if hidden.any() else []
    if note:
        notes.append(note)
    foot = "".join(f'<p class="me-small me-tnote">{esc(n)}</p>' for n in notes)
    aria = f' aria-label="{esc(caption)}"' if caption else ""
    return _HTML(f'<div class="me-scroll" role="region" tabindex="0"{aria}>'
                 f'<table class="me-table">{cap}<thead><tr>{head}</tr></thead>'
                 f"<tbody>{''.join(body)}</tbody></table></div>{foot}")


class _Figure:
    """A figure as PNG with alt text and display width in its output metadata (nbconvert puts
    them on the ``<img>``)."""

    def __init__(self, png: bytes, alt: str, width: int) -> None:
        self.png, self.alt, self.width = png, alt, width

    def _repr_png_(self) -> tuple[bytes, dict[str, Any]]:
        return self.png, {"alt": self.alt, "width": self.width}


def figure_alt(fig: Any) -> str:
    """A figure's one-sentence description: ``fig.alt_text`` (set by `msme_eval.plots`), else
    its suptitle, else its axes titles."""
    alt = getattr(fig, "alt_text", None)
    if alt:
        return str(alt)
    sup = getattr(fig, "_suptitle", None)
    titles = [ax.get_title() for ax in getattr(fig, "axes", []) if ax.get_title()]
    if sup is not None and sup.get_text():
        return f"Chart: {sup.get_text()}" + (f" ({'; '.join(titles[:4])})" if titles else "")
    if titles:
        return "Chart: " + "; ".join(titles[:4])
    return "Chart (no title given)"


def figure(obj: Any, alt: str | None = None, *, dpi: int = 110, max_width: int = 1050) -> _Figure:
    """Display a matplotlib Figure/Axes as a PNG sized for the page, with alt text (``alt`` or
    `figure_alt`); the figure is closed so it is not shown twice."""
    import matplotlib.pyplot as plt

    fig = getattr(obj, "figure", obj)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    width = min(int(fig.get_figwidth() * 96), max_width)
    text = alt or figure_alt(fig)
    plt.close(fig)
    return _Figure(buf.getvalue(), text, width)


def bullet_list(items: Sequence[str]) -> _HTML:
    """An escaped HTML bullet list."""
    return _HTML("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")


def details(summary: str, items: Sequence[str]) -> _HTML:
    """A folded, escaped bullet list (``<details>``: no script; the PDF prints it open)."""
    body = "".join(f"<li>{esc(i)}</li>" for i in items)
    return _HTML(f'<details class="me-details"><summary>{esc(summary)}</summary>'
                 f"<ul>{body}</ul></details>")


def key_figures(figures: Sequence[tuple[str, str, str]]) -> _HTML:
    """Big-number tiles: (label, value, note) each escaped."""
    tiles = "".join(
        f'<div class="me-tile"><div class="me-tile-value">{esc(v)}</div>'
        f'<div class="me-tile-label">{esc(label)}</div>'
        f'<div class="me-tile-note">{esc(note)}</div></div>' for label, v, note in figures)
    return _HTML(f'<div class="me-tiles">{tiles}</div>')
