"""Enterprise size classes (micro / small / medium / large) from each ASEAN member's legal
MSME definition, or from a cross-country employee-band scheme.

The definitions are DATA (``msme_eval/data/size_definitions.yaml``: thresholds, combining rule,
legal source and year per country and sector group); this module is one vectorised
interpreter for them.

For one firm and one criterion c (employees, turnover, assets) the legal ceilings give a class
*range* [lo_c, hi_c] (a single class when every ceiling is known; wider when the law has no
such class or the source did not capture a ceiling). The rule combines the ranges with
``min`` (criteria joined by OR: the smaller class applies), ``max`` (AND, or "the higher class
applies") or ``majority`` (Brunei: the class met by >= 2 criteria, else revenue, employees,
assets in that order). A range left open is split by the ASEAN harmonised employee band
(1-9 / 10-49 / 50-199 / 200+) clipped to the range. Missing criteria are dropped from the rule,
then the definition's ``fallback`` formulas are tried; every such row is flagged in
:func:`classify_detail`.

Conventions: firms with 0 employees (own-account) fall in the lowest employee band (micro)
under every scheme; under ``world_bank`` firms with fewer than 5 employees are outside the
Enterprise Survey frame and are labelled micro with a flag.
"""
from __future__ import annotations

import ast
import functools
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from msme_eval.contract import ASEAN, ISIC_SECTIONS, SIZE_CLASSES

DEFINITIONS_FILE = Path(__file__).parent / "data" / "size_definitions.yaml"
SCHEMES: tuple[str, ...] = ("legal", "asean_harmonised", "world_bank")
CRITERIA: tuple[str, ...] = ("employees", "turnover", "assets")
MONEY: tuple[str, ...] = ("turnover", "assets")
SIZE_DTYPE = pd.CategoricalDtype(list(SIZE_CLASSES))
_LADDER = SIZE_CLASSES[:-1]  # classes with a ceiling; above the medium ceiling = large
_LARGE = len(SIZE_CLASSES) - 1
_CEILING = re.compile(r"^\s*(<=|<)\s*([0-9_]+(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*$")
_FUNCS = ("min", "max", "majority")


@dataclass(frozen=True)
class Criterion:
    """Class ceilings of one criterion: per class in ``_LADDER`` (operator, value) or None."""

    name: str
    ceilings: tuple[tuple[str, float] | None, ...]
    basis: str
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Definition:
    """One country x sector-group definition (or one cross-country scheme)."""

    id: str
    scheme: str
    country: str | None
    sector_group: str
    sections: tuple[str, ...]
    currency: str | None
    rule: str | None
    fallback: tuple[str, ...]
    criteria: dict[str, Criterion]
    law: str
    year: int | None
    sources: tuple[str, ...]
    completeness: str
    basis: str
    note: str
    flag_classes: dict[str, str] = field(default_factory=dict)
    uses: dict[str, tuple[str, ...]] = field(default_factory=dict)  # formula -> criteria


# ----------------------------------------------------------------------------- loading
def _fail(path: Path, where: str, msg: str) -> None:
    raise ValueError(f"{path}: {where}: {msg}")


def _sections(spec: str, path: Path, where: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in str(spec).replace(" ", "").split(","):
        a, _, b = part.partition("-")
        b = b or a
        if a not in ISIC_SECTIONS or b not in ISIC_SECTIONS or a > b:
            _fail(path, where, f"bad ISIC section range {part!r} (use letters A-U, e.g. 'A-F,H')")
        out += [s for s in ISIC_SECTIONS if a <= s <= b]
    return tuple(out)


def _rule_names(rule: str, path: Path, where: str) -> tuple[str, ...]:
    """Validate a rule formula and return the criteria it uses (in order)."""
    try:
        tree = ast.parse(rule, mode="eval").body
    except SyntaxError:
        _fail(path, where, f"cannot parse rule {rule!r}")
    names: list[str] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.Name) and node.id in CRITERIA:
            names.append(node.id)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in _FUNCS and node.args and not node.keywords):
            if node.func.id == "majority" and not all(isinstance(a, ast.Name) for a in node.args):
                _fail(path, where, "majority() takes criterion names only")
            for a in node.args:
                walk(a)
        else:
            _fail(path, where,
                  f"rule {rule!r}: use {', '.join(CRITERIA)} and {', '.join(_FUNCS)}()")

    walk(tree)
    return tuple(dict.fromkeys(names))


def _criterion(name: str, spec: object, d: dict, path: Path, where: str) -> Criterion:
    if not isinstance(spec, dict):
        _fail(path, f"{where}.{name}", "give ceilings as {micro: '<= 9', small: ..., medium: ...}")
    ceil_spec = spec.get("ceilings", spec)
    meta = {"basis", "sources", "note"} if ceil_spec is spec else set()
    extra = set(ceil_spec) - set(_LADDER) - meta
    if extra:
        _fail(path, f"{where}.{name}",
              f"unknown keys {sorted(extra)} (classes are {list(_LADDER)})")
    ceilings: list[tuple[str, float] | None] = []
    last = -np.inf
    for cls in _LADDER:
        raw = ceil_spec.get(cls)
        if raw is None:
            ceilings.append(None)
            continue
        m = _CEILING.match(str(raw))
        if not m:
            _fail(path, f"{where}.{name}.{cls}",
                  f"ceiling {raw!r} must look like '<= 9' or '< 100_000'")
        value = float(m.group(2))
        if value <= last:
            _fail(path, f"{where}.{name}", "ceilings must increase from micro to medium")
        last = value
        ceilings.append((m.group(1), value))
    return Criterion(name, tuple(ceilings), spec.get("basis", d.get("basis", "legal")),
                     tuple(spec.get("sources", d.get("sources", []))), spec.get("note", ""))


def _definition(d: dict, scheme: str, path: Path) -> Definition:
    where = f"definition {d.get('id', '?')!r}"
    criteria = {n: _criterion(n, s, d, path, where) for n, s in (d.get("criteria") or {}).items()}
    if set(criteria) - set(CRITERIA):
        _fail(path, where, f"unknown criteria {sorted(set(criteria) - set(CRITERIA))}")
    rules = ([d["rule"]] if d.get("rule") else []) + list(d.get("fallback") or [])
    uses = {r: _rule_names(r, path, where) for r in rules}
    for r in rules:
        missing = set(uses[r]) - set(criteria)
        if missing:
            _fail(path, where, f"rule {r!r} uses {sorted(missing)} without ceilings")
    return Definition(
        id=d["id"], scheme=scheme, country=d.get("country"), sector_group=d["sector_group"],
        sections=_sections(d["sections"], path, where), currency=d.get("currency"),
        rule=d.get("rule"), fallback=tuple(d.get("fallback") or ()), criteria=criteria,
        law=d["law"], year=d.get("year"), sources=tuple(d.get("sources", ())),
        completeness=d["completeness"], basis=d.get("basis", "legal"),
        note=" ".join(str(d.get("note", "")).split()), flag_classes=d.get("flag_classes") or {},
        uses=uses,
    )


def _load(path: Path = DEFINITIONS_FILE) -> tuple[tuple[Definition, ...], dict[str, str]]:
    """Read and check the definitions file: (definitions incl. schemes, source id -> text).
    Cached per file version, so an edited file is re-read."""
    return _load_version(Path(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_version(path: Path, mtime_ns: int) -> tuple[tuple[Definition, ...], dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    defs = [_definition(d, "legal", path) for d in raw["definitions"]]
    defs += [_definition(d, name, path) for name, d in raw["schemes"].items()]
    sources = {str(k): str(v) for k, v in raw.get("sources", {}).items()}
    for country in ASEAN:
        covered = [s for d in defs if d.country == country for s in d.sections]
        if sorted(covered) != list(ISIC_SECTIONS):
            _fail(path, country, "sector groups must cover ISIC sections A-U exactly once "
                  f"(got {''.join(sorted(covered))})")
    for d in defs:
        unknown = [s for c in [*d.criteria.values(), d] for s in c.sources if s not in sources]
        if unknown:
            _fail(path, d.id, f"source ids {sorted(set(unknown))} missing from 'sources'")
    for name in SCHEMES[1:]:
        if not any(d.scheme == name for d in defs):
            _fail(path, "schemes", f"scheme {name!r} missing")
    return tuple(defs), sources


# ----------------------------------------------------------------------------- interpreter
def _ranges(values: np.ndarray, crit: Criterion) -> tuple[np.ndarray, np.ndarray]:
    """Class range [lo, hi] (class codes 0..3, NaN where the value is missing)."""
    lo = np.full(values.shape, np.nan)
    hi = np.full(values.shape, np.nan)
    todo = ~np.isnan(values)
    prev = -1
    for k, c in enumerate(crit.ceilings):
        if c is None:
            continue
        inside = todo & ((values < c[1]) if c[0] == "<" else (values <= c[1]))
        lo[inside], hi[inside] = prev + 1, k
        todo &= ~inside
        prev = k
    lo[todo], hi[todo] = prev + 1, _LARGE
    return lo, hi


def _majority(vals: list[np.ndarray]) -> np.ndarray:
    """Value shared by >= 2 of the arguments; else the first non-missing, in argument order."""
    out = np.full(vals[0].shape, np.nan)
    for i in range(len(vals)):
        for j in range(i + 1, len(vals)):
            agree = np.isnan(out) & (vals[i] == vals[j])
            out[agree] = vals[i][agree]
    for v in vals:
        take = np.isnan(out) & ~np.isnan(v)
        out[take] = v[take]
    return out


def _evaluate(node: ast.AST, rng: dict[str, tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a rule formula on class ranges; missing (NaN) arguments are skipped."""
    if isinstance(node, ast.Name):
        return rng[node.id]
    args = [_evaluate(a, rng) for a in node.args]
    combine = {"min": lambda v: functools.reduce(np.fmin, v),
               "max": lambda v: functools.reduce(np.fmax, v),
               "majority": _majority}[node.func.id]
    return combine([a[0] for a in args]), combine([a[1] for a in args])


def _append(target: np.ndarray, mask: np.ndarray, text: str, sep: str) -> None:
    """target[mask] += sep + text (no separator where target is empty), vectorised."""
    if mask.any():
        cur = target[mask]
        target[mask] = cur + np.where(cur == "", "", sep).astype(object) + text


@dataclass
class _Applied:
    """One definition applied to its rows."""

    size: np.ndarray                                   # class code 0..3, NaN = undetermined
    split: np.ndarray                                  # open legal range split by employee band
    used: np.ndarray                                   # formula used per row ("" = none)
    ranges: dict[str, tuple[np.ndarray, np.ndarray]]   # per-criterion class range
    notes: list[tuple[np.ndarray, str]]                # (rows, reason) for the fallback flag


def _apply(d: Definition, vals: dict[str, np.ndarray], missing: dict[str, np.ndarray],
           employees: np.ndarray, band: Criterion) -> _Applied:
    """Rule, then fallback formulas, then the employee band for open ranges (see module doc).
    ``missing``: criterion -> rows where the panel value is missing (for the reasons)."""
    m = len(employees)
    rng = {c: _ranges(v, d.criteria[c]) for c, v in vals.items()}
    notes: list[tuple[np.ndarray, str]] = []
    lo, hi = np.zeros(m), np.full(m, float(_LARGE))     # no rule: any class is possible
    used = np.full(m, d.rule or "", dtype=object)
    if d.rule:
        lo, hi = _evaluate(ast.parse(d.rule, mode="eval").body, rng)
        for c in d.uses[d.rule]:
            notes.append((missing[c] & ~np.isnan(lo), f"{c} missing: rule applied without it"))
        tried = list(d.uses[d.rule])
        for fb in d.fallback:
            todo = np.isnan(lo)
            f_lo, f_hi = _evaluate(ast.parse(fb, mode="eval").body, rng)
            lo[todo], hi[todo], used[todo] = f_lo[todo], f_hi[todo], fb
            notes.append((todo & ~np.isnan(f_lo),
                          f"{', '.join(dict.fromkeys(tried))} missing: fallback to '{fb}'"))
            tried += d.uses[fb]
    else:
        notes.append((np.ones(m, bool), "no legal thresholds captured for this sector group"))
    if d.basis == "fallback":
        notes.append((np.ones(m, bool), f"not the legal definition: {d.law}"))
    split = lo < hi
    size = np.where(split, np.clip(_ranges(employees, band)[0], lo, hi), lo)
    for a in range(_LARGE):
        for b in range(a + 1, _LARGE + 1):
            notes.append((split & (lo == a) & (hi == b),
                          f"legal definition gives {SIZE_CLASSES[a]}-{SIZE_CLASSES[b]}: "
                          "split by ASEAN harmonised employee band"))
    notes.append((np.isnan(size), "size not determinable: no usable criterion"))
    notes += [(size == SIZE_CLASSES.index(cls), why) for cls, why in d.flag_classes.items()]
    return _Applied(size, split, used, rng, notes)


def _explain(d: Definition, r: _Applied) -> dict[str, np.ndarray]:
    """decided_by, rule, fallback_reason and by_<criterion> for one definition's rows."""
    m = len(r.size)
    decided = np.full(m, "", dtype=object)
    for formula in filter(None, [d.rule, *d.fallback]):
        for c in d.uses[formula]:
            c_lo, c_hi = r.ranges[c]
            _append(decided, (r.used == formula) & (c_lo <= r.size) & (r.size <= c_hi), c, "+")
    _append(decided, r.split, "employee_band", "+")
    reason = np.full(m, "", dtype=object)
    for mask, text in r.notes:
        _append(reason, mask, text, "; ")
    out = {"decided_by": decided, "fallback_reason": reason,
           "rule": np.where(r.split & (r.used == ""), "employee_band", r.used)}
    for c, (c_lo, c_hi) in r.ranges.items():
        out[f"by_{c}"] = np.where(c_lo == c_hi, c_lo, np.nan)
    return out


def _numeric(panel: pd.DataFrame, col: str) -> np.ndarray:
    if col not in panel.columns:
        return np.full(len(panel), np.nan)
    try:
        return pd.to_numeric(panel[col]).to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sizeclass: column {col!r} must be numeric ({exc}); "
                         "fix the column type before classifying") from exc


def _check(panel: pd.DataFrame, cols: list[str], rows: np.ndarray, what: str, fix: str) -> None:
    if rows.any():
        idx = list(panel.index[rows][:5])
        raise ValueError(f"sizeclass: {int(rows.sum())} rows with {what} in column(s) {cols} "
                         f"(first row labels: {idx}); {fix}")


def _usd_rate(usd_per_lcu: float | Mapping[str, float] | pd.Series | None,
              panel: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    if usd_per_lcu is None:
        return np.full(int(rows.sum()), np.nan)
    if isinstance(usd_per_lcu, pd.Series):
        return usd_per_lcu.reindex(panel.index).to_numpy(dtype=float)[rows]
    if isinstance(usd_per_lcu, Mapping):
        return panel["country"].map(usd_per_lcu).to_numpy(dtype=float)[rows]
    return np.full(int(rows.sum()), float(usd_per_lcu))


def _definition_per_row(panel: pd.DataFrame, defs: tuple[Definition, ...],
                        scheme: str) -> np.ndarray:
    """Index into ``defs`` for every row (by country and ISIC section for the legal scheme)."""
    if scheme != "legal":
        return np.full(len(panel), next(i for i, d in enumerate(defs) if d.scheme == scheme))
    table = {(d.country, s): i for i, d in enumerate(defs) if d.scheme == "legal"
             for s in d.sections}
    keys = pd.MultiIndex.from_arrays([panel["country"].astype("str"),
                                      panel["sector"].astype("str")])
    which = pd.Index(list(table)).get_indexer(keys)
    _check(panel, ["country", "sector"], which < 0, "an unknown country or ISIC section",
           f"country must be one of {list(ASEAN)} and sector an upper-case letter A-U")
    return np.asarray(list(table.values()))[which]


def _classify(panel: pd.DataFrame, scheme: str,
              usd_per_lcu: float | Mapping[str, float] | pd.Series | None,
              path: str | Path | None, detail: bool) -> pd.DataFrame | pd.Series:
    if scheme not in SCHEMES:
        raise ValueError(f"sizeclass: unknown scheme {scheme!r}; use one of {SCHEMES}")
    defs, _ = _load(Path(path) if path else DEFINITIONS_FILE)
    need = ["employees"] + (["country", "sector"] if scheme == "legal" else [])
    absent = [c for c in need if c not in panel.columns]
    if absent:
        raise ValueError(f"sizeclass: panel lacks column(s) {absent} needed for scheme "
                         f"{scheme!r}; add them (see DESIGN.md section 3)")
    values = {c: _numeric(panel, c) for c in CRITERIA}
    for c in CRITERIA:
        _check(panel, [c], values[c] < 0, "negative values", "values must be >= 0")
    which = _definition_per_row(panel, defs, scheme)
    band = next(d for d in defs if d.scheme == "asean_harmonised").criteria["employees"]

    n = len(panel)
    size = np.full(n, np.nan)
    info = {k: np.full(n, "", dtype=object) for k in ("rule", "decided_by", "fallback_reason")}
    info.update({f"by_{c}": np.full(n, np.nan) for c in CRITERIA})
    no_rate = 0
    for i in np.unique(which):                      # loop over definitions, not rows
        d, rows = defs[i], which == i
        vals = {c: values[c][rows] for c in d.criteria}
        missing = {c: np.isnan(v) for c, v in vals.items()}
        lost = np.zeros(int(rows.sum()), bool)
        if d.currency == "USD" and set(MONEY) & set(d.criteria):
            rate = _usd_rate(usd_per_lcu, panel, rows)
            for c in set(MONEY) & set(d.criteria):
                lost |= ~np.isnan(vals[c]) & np.isnan(rate)
                vals[c] = vals[c] * rate
            no_rate += int(lost.sum())
        r = _apply(d, vals, missing, values["employees"][rows], band)
        r.notes.insert(0, (lost, "turnover/assets not used: thresholds in USD, "
                                 "no usd_per_lcu rate"))
        size[rows] = r.size
        if detail:
            for k, v in _explain(d, r).items():
                info[k][rows] = v
    if no_rate:
        warnings.warn(f"sizeclass: {no_rate} rows have thresholds in USD (Cambodia) but no "
                      "usd_per_lcu rate: their turnover/assets were not used (flagged); pass "
                      "usd_per_lcu= (USD per unit of local currency) to use them", stacklevel=3)
    if np.isnan(size).any():
        warnings.warn(f"sizeclass: {int(np.isnan(size).sum())} rows have no usable criterion "
                      "(employees and money columns missing); their size_class is missing",
                      stacklevel=3)
    out = pd.Series(_categorical(size), index=panel.index, name="size_class")
    if not detail:
        return out
    ids = pd.Categorical.from_codes(which, categories=[d.id for d in defs])
    reason = info["fallback_reason"]
    res = pd.DataFrame({
        "size_class": out, "definition_id": ids,
        "rule": pd.array(info["rule"], dtype="str"),
        "decided_by": pd.array(info["decided_by"], dtype="str"),
        "fallback": reason != "", "fallback_reason": pd.array(reason, dtype="str"),
        "completeness": pd.Categorical(np.array([d.completeness for d in defs])[which]),
    }, index=panel.index)
    for c in CRITERIA:
        res[f"by_{c}"] = _categorical(info[f"by_{c}"])
    return res


def _categorical(codes: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(np.where(np.isnan(codes), -1, codes).astype(np.int8),
                                     dtype=SIZE_DTYPE)


# ----------------------------------------------------------------------------- public API
def classify(panel: pd.DataFrame, *, scheme: str = "legal",
             usd_per_lcu: float | Mapping[str, float] | pd.Series | None = None,
             path: str | Path | None = None) -> pd.Series:
    """Size class of every row: Categorical micro/small/medium/large, same index as ``panel``.

    scheme: "legal" (the country's legal definition for the row's ISIC section; columns
    country, sector, employees, turnover, assets), "asean_harmonised" (employees 1-9 / 10-49 /
    50-199 / 200+) or "world_bank" (Enterprise Surveys: <5 micro (flagged), 5-19, 20-99, 100+).
    usd_per_lcu: USD per KHR for Cambodia's USD thresholds (a number, a {country: rate}
    mapping, or a Series aligned on the panel's index, e.g. from the macro table); without it
    Cambodian money criteria are not used (warning; flagged in :func:`classify_detail`).
    path: an edited copy of the definitions file. Missing rows are never dropped.
    """
    return _classify(panel, scheme, usd_per_lcu, path, detail=False)


def classify_detail(panel: pd.DataFrame, *, scheme: str = "legal",
                    usd_per_lcu: float | Mapping[str, float] | pd.Series | None = None,
                    path: str | Path | None = None) -> pd.DataFrame:
    """:func:`classify` with its reasons, one row per panel row.

    Columns: size_class; definition_id; rule (formula used: the definition's rule, a fallback
    formula, or "employee_band"); decided_by (criteria consistent with the class, joined by
    "+", plus "employee_band" when an open legal range was split); fallback (bool: anything
    other than the full legal rule on complete data was used); fallback_reason; completeness
    of the definition; by_employees / by_turnover / by_assets (class by each criterion alone
    where it is a single class).
    """
    return _classify(panel, scheme, usd_per_lcu, path, detail=True)


def definitions(path: str | Path | None = None) -> pd.DataFrame:
    """Every rule and threshold with its legal source and year: one row per definition,
    criterion and class ceiling (threshold NaN = class not in the law / not captured)."""
    defs, sources = _load(Path(path) if path else DEFINITIONS_FILE)
    rows = []
    for d in defs:
        unit = {"employees": "persons", "turnover": d.currency, "assets": d.currency}
        items = [(c.name, cls, c.ceilings[k], c) for c in d.criteria.values()
                 for k, cls in enumerate(_LADDER)] or [(None, None, None, None)]
        for name, cls, ceiling, c in items:
            srcs = c.sources if c else d.sources
            rows.append({
                "scheme": d.scheme, "definition_id": d.id, "country": d.country,
                "sector_group": d.sector_group, "isic_sections": "".join(d.sections),
                "rule": d.rule, "fallback_rules": "; ".join(d.fallback) or None,
                "criterion": name, "size_class": cls,
                "operator": ceiling[0] if ceiling else None,
                "threshold": ceiling[1] if ceiling else np.nan,
                "unit": unit.get(name) if name else None,
                "basis": c.basis if c else d.basis, "law": d.law, "year": d.year,
                "sources": ", ".join(srcs),
                "urls": " ".join(sources[s].split(" | ")[-1] for s in srcs),
                "completeness": d.completeness,
                "note": " ".join(filter(None, [d.note, c.note if c else ""])),
            })
    out = pd.DataFrame(rows)
    out["year"] = out["year"].astype("Int64")
    return out


@dataclass(frozen=True)
class ClassBounds:
    """The legal bounds of each size class under one definition (country x sector group).

    ``bounds[criterion][k] = (lo, hi)`` for class k (micro, small, medium, large); None where
    the law gives no bound (micro's floor, large's ceiling, or a ceiling not captured).
    Employees are whole persons: a "< 5" ceiling gives hi = 4 and the next class lo = 5.
    Money bounds are the ceilings as written, in ``currency``. ``decides_large[c]`` is True
    when a firm whose criterion c is only medium cannot be large under the rule (c binds);
    ``complete`` is False when a criterion of the rule lacks a ceiling, so the ASEAN
    harmonised employee band may settle the class."""

    definition_id: str
    country: str
    sections: tuple[str, ...]
    currency: str | None
    rule: str | None
    complete: bool
    bounds: dict[str, tuple[tuple[float | None, float | None], ...]]
    decides_large: dict[str, bool]


def _criterion_bounds(crit: Criterion) -> tuple[tuple[float | None, float | None], ...]:
    """(lo, hi) per class from the ceilings (see ClassBounds)."""
    out: list[tuple[float | None, float | None]] = []
    lo: float | None = None
    for ceiling in (*crit.ceilings, None):
        if ceiling is None:
            out.append((lo, None))
            lo = None
            continue
        op, value = ceiling
        if crit.name == "employees":
            hi = value if op == "<=" else math.ceil(value) - 1
            out.append((lo, hi))
            lo = hi + 1
        else:
            out.append((lo, value))
            lo = value
    return tuple(out)


def _binds_large(d: Definition, criterion: str) -> bool:
    """Would the rule make a firm with `criterion` at medium and every other one large not
    large? (Evaluated with the rule's own combinator on single-class ranges.)"""
    if not d.rule or criterion not in d.uses[d.rule]:
        return False
    ranges = {c: (np.array([float(_LARGE - (c == criterion))]),) * 2 for c in d.uses[d.rule]}
    lo, _ = _evaluate(ast.parse(d.rule, mode="eval").body, ranges)
    return bool(lo[0] < _LARGE)


def class_bounds(country: str, *, path: str | Path | None = None) -> tuple[ClassBounds, ...]:
    """The legal class bounds of `country`, one :class:`ClassBounds` per sector group, read
    from the definitions file (the synthetic sample draws firms inside them)."""
    defs, _ = _load(Path(path) if path else DEFINITIONS_FILE)
    out = []
    for d in defs:
        if d.scheme != "legal" or d.country != country:
            continue
        used = d.uses.get(d.rule, ()) if d.rule else ()
        out.append(ClassBounds(
            definition_id=d.id, country=country, sections=d.sections, currency=d.currency,
            rule=d.rule, complete=bool(d.rule) and all(
                None not in d.criteria[c].ceilings for c in used),
            bounds={c: _criterion_bounds(crit) for c, crit in d.criteria.items()},
            decides_large={c: _binds_large(d, c) for c in d.criteria}))
    if not out:
        raise ValueError(f"sizeclass: no legal definition for country {country!r}; "
                         f"use one of {list(ASEAN)}")
    return tuple(out)


def harmonised_band(path: str | Path | None = None) -> tuple[tuple[int, int | None], ...]:
    """The ASEAN harmonised employee band per class as (lo, hi) persons (large: hi None)."""
    defs, _ = _load(Path(path) if path else DEFINITIONS_FILE)
    band = next(d for d in defs if d.scheme == "asean_harmonised").criteria["employees"]
    bounds = _criterion_bounds(band)
    return tuple((int(lo) if lo is not None else 1, int(hi) if hi is not None else None)
                 for lo, hi in bounds)


def employee_class_range(panel: pd.DataFrame, *, path: str | Path | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The classes (codes lo..hi, 0 = micro) the legal rule of each row allows given only its
    employee count, whatever the other criteria: employees' class range combined by the rule
    with every other criterion free (any class). NaN where employees or the definition is
    missing; (0, 3) where the rule does not use employees. Needs country, sector, employees."""
    defs, _ = _load(Path(path) if path else DEFINITIONS_FILE)
    n = len(panel)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    keys = pd.MultiIndex.from_arrays([panel["country"].astype("str"),
                                      panel["sector"].astype("str")])
    table = {(d.country, s): i for i, d in enumerate(defs) if d.scheme == "legal"
             for s in d.sections}
    which = pd.Index(list(table)).get_indexer(keys)
    which = np.where(which >= 0, np.asarray(list(table.values()))[np.maximum(which, 0)], -1)
    employees = _numeric(panel, "employees")
    for i in np.unique(which[which >= 0]):
        d, rows = defs[i], which == i
        emp = employees[rows]
        if not d.rule or "employees" not in d.uses[d.rule]:
            r_lo, r_hi = np.zeros(len(emp)), np.full(len(emp), float(_LARGE))
        else:
            free = (np.zeros(len(emp)), np.full(len(emp), float(_LARGE)))
            ranges = {c: free for c in d.uses[d.rule]}
            ranges["employees"] = _ranges(emp, d.criteria["employees"])
            r_lo, r_hi = _evaluate(ast.parse(d.rule, mode="eval").body, ranges)
        known = ~np.isnan(emp)
        lo[np.flatnonzero(rows)[known]] = r_lo[known]
        hi[np.flatnonzero(rows)[known]] = r_hi[known]
    return lo, hi
