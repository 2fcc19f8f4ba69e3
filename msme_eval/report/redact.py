"""Safety net: remove firm identifiers from everything notebooks produced before rendering.

Reports publish aggregates only. Library messages can still quote a firm id (e.g. "a cohort
with a single unit, firm_id = ..."); as each notebook ends, the runner replaces every firm id
of the panel (`panel_redactor`) with ``REDACTED`` in its executed notebook, log, result fragment
and tables (`redact_files`) and in its error message, and says how many it removed.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

REDACTED = "[firm id removed]"
_TOKEN = re.compile(r"[A-Za-z0-9_./-]+")
# a numeric or very short id is only recognisable where it is quoted or keyed as an id:
# "'10234'", firm_id=10234, unit: 7A
_KEYED = re.compile(r"""(?P<pre>(?:firm_id|firm|unit|id)\s*[=:]\s*['"]?|['"])(?P<id>[\w./-]+)(?=['"]|\b)""")
_DATA_URI = re.compile(r"(data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+)")
MIN_FREE_ID = 3  # shorter ids are redacted only where quoted or keyed


def firm_id_redactor(ids: Iterable[Any]) -> tuple[Callable[[str], tuple[str, int]], int]:
    """A function replacing firm ids in text with ``REDACTED``; returns (function, 0).

    Ids of 3+ characters with a letter are replaced as whole tokens (also glued to punctuation,
    e.g. ``firm_id='MYS0538'``, or holding '/', e.g. ``KH/2019/001``); ids with spaces by plain
    replacement; purely numeric or shorter ids, which cannot be told apart from statistics or
    words in free text, wherever they are quoted or keyed as an id (``'10234'``,
    ``firm_id=10234``, ``unit: 7A``). Embedded base64 images are left alone. The second value is
    kept for compatibility: every id form is now protected.
    """
    ids = {str(i).strip() for i in ids if str(i).strip()}
    keyed = {i for i in ids if i.isdigit() or len(i) < MIN_FREE_ID}
    spaced = sorted((i for i in ids if any(ch.isspace() for ch in i)), key=len, reverse=True)
    tokens = ids - keyed - set(spaced)

    def sub_token(m: re.Match[str], count: list[int]) -> str:
        tok = m.group(0)
        for core in (tok, tok.strip("._/-")):
            if core in tokens:
                count[0] += 1
                return tok.replace(core, REDACTED)
        return tok

    def sub_keyed(m: re.Match[str], count: list[int]) -> str:
        if m.group("id") in keyed:
            count[0] += 1
            return m.group("pre") + REDACTED
        return m.group(0)

    def redact_part(text: str, count: list[int]) -> str:
        for sid in spaced:
            if sid in text:
                count[0] += text.count(sid)
                text = text.replace(sid, REDACTED)
        text = _TOKEN.sub(lambda m: sub_token(m, count), text)
        return _KEYED.sub(lambda m: sub_keyed(m, count), text) if keyed else text

    def redact(text: str) -> tuple[str, int]:
        count = [0]
        parts = _DATA_URI.split(text)  # odd parts are embedded images: left as they are
        out = "".join(p if k % 2 else redact_part(p, count) for k, p in enumerate(parts))
        return out, count[0]
    return redact, 0


def panel_redactor(work: Path) -> Callable[[str], tuple[str, int]] | None:
    """The redactor for the cycle's panel (from the runner's cache), None without a panel."""
    cache = work / "cache" / "panel.pkl"
    if not cache.exists():
        return None
    panel = pd.read_pickle(cache)
    if "firm_id" not in panel:
        return None
    return firm_id_redactor(panel["firm_id"].dropna().unique())[0]


def redact_files(paths: Iterable[Path], redact: Callable[[str], tuple[str, int]]) -> int:
    """Redact every notebook, log, JSON and CSV file among ``paths`` (folders searched)."""
    total = 0
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.suffix not in (".ipynb", ".log", ".json", ".csv") or not f.is_file():
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            new, n = redact(text)
            if n:
                f.write_text(new, encoding="utf-8")
                total += n
    return total
