"""The indicator registry: the 10 SAP SMED key indicators (K01-K10) and operational ones.

The registry is data (``indicators.yaml`` next to this module) so a ministry can edit it or
pass its own file. Each entry carries SDG-metadata-style fields (definition, numerator,
denominator, unit, direction and why, goal, status/source, SDG link, required columns, macro
fallback) and a small computation spec read by :func:`msme_eval.indicators.compute`.

``direction`` (``higher`` | ``lower``) tells :func:`msme_eval.progress.assess` which way is
progress; ``direction_rationale`` says why, and says so where the choice is normative (K01/K02
fall when MSMEs grow into large firms). It is optional in a ministry's file; when absent the
registry reads ``NO_RATIONALE``, so the pages show that nobody stated a reason.

Status values: ``"confirmed (JAIF KPI monitoring brief)"`` for the four KPIs named in the JAIF
KPI-monitoring project brief (K03, K06, K07, K08; domain.md 1.3) and
``"operational definition (msme-eval)"`` for everything else (domain.md 1.4: the other KPI
names of SAP SMED 2025 could not be verified).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = ["registry", "DEFAULT_PATH", "RegistryError", "META_COLUMNS", "NO_RATIONALE"]

DEFAULT_PATH = Path(__file__).with_name("indicators.yaml")

META_COLUMNS: tuple[str, ...] = (
    "id", "name", "definition", "numerator", "denominator", "unit", "direction",
    "direction_rationale", "goal", "status", "source", "sdg", "required_columns", "macro_fallback",
)
_OPTIONAL_KEYS = ("direction_rationale",)
_REQUIRED_KEYS = (*(c for c in META_COLUMNS if c not in _OPTIONAL_KEYS), "kind", "scope", "scale",
                  "money", "numerator_spec")
NO_RATIONALE = "not stated (the registry file gives no direction_rationale)"
_KINDS = ("ratio", "relative_ratio", "total")
_SCOPES = ("within_group", "share_of_total")
_GOALS = ("A", "B", "C", "D", "E", "overall")
_DIRECTIONS = ("higher", "lower")


class RegistryError(ValueError):
    """The registry file is malformed; the message names the file, indicator, field and fix."""


def _load(path: Path) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"indicator registry {path} does not exist. Fix: pass an existing "
                            "YAML file or None for the built-in registry.") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"indicator registry {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("indicators"), list):
        raise RegistryError(f"indicator registry {path} must be a mapping with a list under "
                            "'indicators' (see msme_eval/indicators/indicators.yaml).")
    return doc["indicators"]


def _normalise(entry: dict[str, Any], path: Path, pos: int) -> dict[str, Any]:
    ident = entry.get("id", f"entry #{pos + 1}")

    def fail(field: str, msg: str) -> RegistryError:
        return RegistryError(f"{path}: indicator {ident!r}, field {field!r}: {msg}")

    row = dict(entry)
    row.setdefault("denominator", "")
    rationale = row.get("direction_rationale")
    row["direction_rationale"] = str(rationale).strip() if rationale else NO_RATIONALE
    missing = [k for k in _REQUIRED_KEYS if k not in row]
    if missing:
        raise fail(missing[0], f"missing (required fields: {list(_REQUIRED_KEYS)}). Fix: add it.")
    if row["kind"] not in _KINDS:
        raise fail("kind", f"{row['kind']!r} not in {_KINDS}")
    if row["scope"] not in _SCOPES:
        raise fail("scope", f"{row['scope']!r} not in {_SCOPES}")
    if row["direction"] not in _DIRECTIONS:
        raise fail("direction", f"{row['direction']!r} not in {_DIRECTIONS}")
    if str(row["goal"]) not in _GOALS:
        raise fail("goal", f"{row['goal']!r} not in {_GOALS}")
    if not isinstance(row["required_columns"], list):
        raise fail("required_columns", "must be a list of panel column names")
    if row["kind"] in ("ratio", "relative_ratio") and "denominator_spec" not in row:
        raise fail("denominator", "a ratio needs a denominator mapping {value, population} "
                   "or {macro: column}")
    if row["kind"] == "relative_ratio" and not {"reference_numerator_spec",
                                                 "reference_denominator_spec"} <= set(row):
        raise fail("reference_numerator", "relative_ratio needs reference_numerator and "
                   "reference_denominator mappings")
    den = row.get("denominator_spec") or {}
    if row.get("macro_only") and "macro" not in den:
        raise fail("denominator", "macro_only needs denominator: {macro: <macro column>}")
    row.setdefault("macro_only", False)
    row.setdefault("needs_large", False)
    row.setdefault("shift", 0)
    row.setdefault("magnitude", None)
    row["goal"] = str(row["goal"])
    row["scale"] = float(row["scale"])
    return row


def registry(path: str | Path | None = None) -> pd.DataFrame:
    """The indicator registry as a DataFrame (one row per indicator, registry order).

    ``path=None`` reads the built-in ``msme_eval/indicators/indicators.yaml``; a ministry can
    pass its own file with the same fields. Columns: ``META_COLUMNS`` (id, name, definition,
    numerator, denominator, unit, direction, direction_rationale, goal, status, source, sdg,
    required_columns, macro_fallback) followed by the computation fields (kind, scope, scale, money, macro_only,
    needs_large, shift, magnitude and the ``*_spec`` mappings).
    Raises :class:`RegistryError` naming the file, indicator and field when an entry is invalid.
    """
    p = DEFAULT_PATH if path is None else Path(path)
    entries = _load(p)
    rows = [_normalise(e, p, i) for i, e in enumerate(entries)]
    ids = [r["id"] for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise RegistryError(f"{p}: duplicate indicator id(s) {dup}. Fix: ids must be unique.")
    frame = pd.DataFrame(rows)
    first = list(META_COLUMNS)
    rest = [c for c in frame.columns if c not in first]
    frame = frame[first + rest]
    frame.attrs["path"] = str(p)
    return frame
