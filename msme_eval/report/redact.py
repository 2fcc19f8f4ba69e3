"""Safety net: remove firm identifiers from everything notebooks produced before rendering.

Reports publish aggregates only. Library messages can still quote a firm id (e.g. "a cohort
with a single unit, firm_id = ..."); the runner replaces every whole token equal to a firm id
of the panel with ``REDACTED`` in executed notebooks, logs, result fragments, tables and error
messages, and says how many it removed.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REDACTED = "[firm id removed]"
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


def firm_id_redactor(ids: Iterable[str]) -> tuple[Callable[[str], tuple[str, int]], int]:
    """A function replacing whole tokens equal to a firm id with ``REDACTED``.

    Only ids with a letter and at least 4 characters are redacted (purely numeric ids cannot
    be told apart from statistics); returns (function, number of ids not protectable).
    """
    ids = {str(i) for i in ids}
    usable = {i for i in ids if len(i) >= 4 and any(ch.isalpha() for ch in i)
              and _TOKEN.fullmatch(i)}

    def redact(text: str) -> tuple[str, int]:
        count = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal count
            tok = m.group(0)
            if tok in usable:
                count += 1
                return REDACTED
            # ids glued to punctuation such as "firm_id='MYS0538'" or "MYS0538."
            core = tok.strip("._-")
            if core in usable:
                count += 1
                return tok.replace(core, REDACTED)
            return tok
        return _TOKEN.sub(sub, text), count
    return redact, len(ids) - len(usable)


def redact_firm_ids(work: Path, runs: list[Any]) -> int:
    """Remove firm identifiers from everything notebooks produced (executed notebooks, logs,
    result fragments, tables, error messages) before rendering: a safety net under the rule
    that reports show aggregates only. Returns the number of replacements."""
    cache = work / "cache" / "panel.pkl"
    if not cache.exists():
        return 0
    import pandas as pd

    panel = pd.read_pickle(cache)
    if "firm_id" not in panel:
        return 0
    redact, _ = firm_id_redactor(panel["firm_id"].dropna().unique())
    total = 0
    for sub in ("executed", "logs", "results", "tables"):
        for f in sorted((work / sub).rglob("*")) if (work / sub).exists() else []:
            if f.suffix not in (".ipynb", ".log", ".json", ".csv") or not f.is_file():
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            new, n = redact(text)
            if n:
                f.write_text(new, encoding="utf-8")
                total += n
    for r in runs:
        r.error, n = redact(r.error)
        total += n
    return total
