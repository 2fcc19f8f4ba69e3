"""Statistical disclosure control for published tables of enterprise data.

Two steps, as in tau-Argus and R ``sdcTable`` (see DESIGN.md section 4 and the Eurostat
business-statistics SDC practice):

1. :func:`cell_stats` -- from the *microdata*, per published cell: the number of contributing
   firms and the largest unweighted contributions (weights only scale estimates; dominance is
   judged on what firms actually reported).
2. :func:`protect` -- primary suppression (minimum contributors; (n, k) dominance; optional p%
   rule) and secondary suppression so that no suppressed cell can be recovered by subtracting
   published cells from a published total. Suppressed cells get their value, se and interval
   set to NaN and an SDMX ``CL_CONF_STATUS`` code:

   ===== =================================================================================
   F     free (published)
   A     primary confidentiality due to small counts (fewer than ``min_contributors`` firms)
   O     primary confidentiality due to dominance by one unit (largest firm > k% of total)
   T     primary confidentiality due to dominance by two units (two largest > k%)
   M     primary confidentiality due to other concentration measures (``dominance_n`` > 2, p% rule)
   D     secondary confidentiality set by the sender, not for publication
   ===== =================================================================================

Definitions (parameters default to sdcTable / DESIGN.md: 3 firms; n=2, k=85%):

* A *contributor* is a distinct ``firm_id`` in the cell whose summed contribution to the cell's
  magnitude is non-zero (rows of one firm, e.g. several years, are summed first; missing values
  contribute nothing). For a count/proportion table (``value=None``) every firm in the cell is a
  contributor with magnitude 1. Magnitudes are absolute values (value added can be negative).
* Frequency rule: unsafe if ``n_contrib < min_contributors`` (so 3 means "at least 3 firms";
  note sdcTable's ``maxN`` flags counts ``<= maxN``).
* (n, k) dominance: unsafe if the ``n`` largest contributions exceed ``k`` x cell total.
* p% rule (optional): unsafe if ``total - top1 - top2 < p/100 * top1`` (the second-largest firm
  could estimate the largest within p%).
* Secondary: cells that add up to a total form a *relation* (the categories of one breakdown
  for one indicator/country/year, plus their total). If exactly one member of a relation is
  suppressed, or the suppressed cells together (their sum, which total minus published cells
  reveals) fail the primary rules, the least informative other member -- fewest contributors,
  then smallest magnitude; the total only as a last resort -- is suppressed with ``D``; this
  repeats over all relations until nothing changes. When the total is not in the table it is
  assumed published.

Not covered (documented limits): consistency of the suppression pattern across reference
periods, and linear-programming attacks on many interlocking relations (tau-Argus' optimal
methods); both matter for large multi-dimensional tables, less for our one-way breakdowns.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import engines

__all__ = ["cell_stats", "top2_by_code", "primary", "protect", "CONF_STATUS"]

CONF_STATUS: dict[str, str] = {
    "F": "Free",
    "A": "Primary confidentiality due to small counts",
    "O": "Primary confidentiality due to dominance by one unit",
    "T": "Primary confidentiality due to dominance by two units",
    "M": "Primary confidentiality due to data declared confidential based on other measures "
         "of concentration",
    "D": "Secondary confidentiality set by the sender, not for publication",
}
PRIMARY_CODES = ("A", "O", "T", "M")
DEFAULT_VALUE_COLS = ("value", "estimate", "se", "ci_low", "ci_high")


# --------------------------------------------------------------------------------------------
# cell statistics from microdata
# --------------------------------------------------------------------------------------------
def cell_stats(data: Any, value: str | None, by: str | Sequence[str] | None, *,
               contributor: str | None = "firm_id", top: int = 2, engine: str | None = None,
               **engine_options: Any) -> pd.DataFrame:
    """Unweighted contributor statistics per cell of ``by``, on any engine.

    Returns the ``by`` columns, ``n_contrib`` (distinct contributors with a non-zero
    contribution), ``top1`` ... ``top{top}`` (largest absolute contributions, 0 when absent) and
    ``total`` (sum of absolute contributions). ``value=None``: count table, each firm counts 1.
    ``contributor=None``: each row is its own contributor. Every cell present in ``data``
    appears, including cells whose contributions are all zero or missing (``n_contrib = 0``).
    ``data``: a pandas DataFrame (in memory) or any input of :mod:`msme_eval.engines` (a
    Parquet path, DuckDB relation, polars or Spark frame: the same statistics in SQL,
    :func:`msme_eval.engines.sql_cell_stats`); ``engine`` forces the choice.
    """
    engine = engines.engine_of(data) if engine is None else engine
    if engine != "pandas":
        return engines.sql_cell_stats(data, value, by, contributor=contributor, top=top,
                                      engine=engine, **engine_options)
    if not isinstance(data, pd.DataFrame):
        raise TypeError("engine='pandas' needs a pandas DataFrame")
    by_cols = engines.as_list(by)
    need = [*by_cols, *( [value] if value is not None else []),
            *([contributor] if contributor is not None else [])]
    missing = [c for c in need if c not in data.columns]
    if missing:
        raise KeyError(f"column(s) {missing} not found in data (columns: {list(data.columns)}). "
                       "Fix: pass the cell columns, the magnitude column and the firm id column.")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    frame = pd.DataFrame({c: data[c] for c in by_cols})
    if contributor is not None:
        ids = data[contributor]
        if ids.isna().any():
            raise ValueError(
                f"contributor column {contributor!r} is missing in "
                f"{int(ids.isna().sum())} row(s) (index {ids.index[ids.isna()][:10].tolist()}). "
                "Fix: every row needs its firm id.")
        frame["__id__"] = ids.to_numpy()
    else:
        frame["__id__"] = np.arange(len(data))
    if value is None:
        frame["__mag__"] = 1.0
    else:
        v = data[value]
        if not (pd.api.types.is_numeric_dtype(v.dtype) or pd.api.types.is_bool_dtype(v.dtype)):
            raise TypeError(f"value column {value!r} has dtype {v.dtype}; need numbers")
        frame["__mag__"] = v.to_numpy(dtype="float64", na_value=np.nan)
    keys = [*by_cols, "__id__"]
    if by_cols:
        cells = (frame[by_cols].drop_duplicates().reset_index(drop=True))
    else:
        cells = pd.DataFrame(index=range(1))
    # 1) per (cell, firm) contribution; 2) per cell: count, total, largest contributions
    firm = frame.groupby(keys, sort=False, dropna=False, observed=True)["__mag__"].sum(
        min_count=1).abs().reset_index()
    if value is None:
        firm["__mag__"] = 1.0
    firm = firm[firm["__mag__"].fillna(0) > 0]
    firm = firm.sort_values("__mag__", ascending=False, kind="stable")
    if by_cols:
        grp = firm.groupby(by_cols, sort=False, dropna=False, observed=True)
        stats = grp["__mag__"].agg(n_contrib="count", total="sum").reset_index()
        firm["__rank__"] = grp.cumcount()
    else:
        stats = pd.DataFrame({"n_contrib": [len(firm)], "total": [firm["__mag__"].sum()]})
        firm["__rank__"] = np.arange(len(firm))
    topn = firm[firm["__rank__"] < top]
    for r in range(top):
        tr = topn[topn["__rank__"] == r][[*by_cols, "__mag__"]].rename(
            columns={"__mag__": f"top{r + 1}"})
        stats = stats.merge(tr, on=by_cols, how="left") if by_cols else stats.assign(
            **{f"top{r + 1}": tr[f"top{r + 1}"].iloc[0] if len(tr) else 0.0})
    out = cells.merge(stats, on=by_cols, how="left") if by_cols else stats
    out["n_contrib"] = out["n_contrib"].fillna(0).astype(np.int64)
    for c in ["total", *[f"top{r + 1}" for r in range(top)]]:
        out[c] = out[c].fillna(0.0).astype("float64")
    cols = [*by_cols, "n_contrib", *[f"top{r + 1}" for r in range(top)], "total"]
    if by_cols:
        out = out.sort_values(by_cols, kind="stable").reset_index(drop=True)
    return out[cols]


def top2_by_code(cell: np.ndarray, mag: np.ndarray, n_cells: int) -> dict[str, np.ndarray]:
    """:func:`cell_stats` on integer cell codes in ``[0, n_cells)``, one contributor per row.

    Vectorised, O(rows), no sort: ``n_contrib`` = rows with ``|mag| > 0`` (NaN counts as 0),
    ``total`` = sum of ``|mag|``, ``top1`` = per-cell maximum (``np.maximum.at``), ``top2`` =
    the maximum after removing one instance of ``top1`` (ties give ``top2 = top1``). Use it when
    each contributor has a single row per cell (e.g. one row per firm and year); otherwise sum
    the rows per (cell, contributor) first.
    """
    a = np.abs(np.nan_to_num(np.asarray(mag, dtype="float64")))
    cell = np.asarray(cell, dtype=np.int64)
    n = np.bincount(cell, weights=a > 0, minlength=n_cells)
    total = np.bincount(cell, weights=a, minlength=n_cells)
    top1 = np.zeros(n_cells)
    np.maximum.at(top1, cell, a)
    at_max = np.flatnonzero((a == top1[cell]) & (a > 0))[::-1]
    first = np.full(n_cells, -1, dtype=np.int64)
    first[cell[at_max]] = at_max  # reversed: the first row at the maximum wins
    a2 = a.copy()
    a2[first[first >= 0]] = 0.0
    top2 = np.zeros(n_cells)
    np.maximum.at(top2, cell, a2)
    return {"n_contrib": n, "top1": top1, "top2": top2, "total": total}


# --------------------------------------------------------------------------------------------
# primary rules
# --------------------------------------------------------------------------------------------
def _rule_codes(n: np.ndarray, tops: np.ndarray, total: np.ndarray, *, min_contributors: int,
                dominance_n: int, dominance_k: float, p_percent: float | None) -> np.ndarray:
    """Primary status per cell: "A", "O", "T", "M" or "F" (frequency rule first)."""
    codes = np.full(len(n), "F", dtype=object)
    with np.errstate(invalid="ignore"):
        if dominance_n and dominance_n > 0:
            cum = np.cumsum(tops[:, :dominance_n], axis=1)
            limit = dominance_k * total
            dominated = (total > 0) & (cum[:, -1] > limit)
            codes[dominated] = "M"
            if dominance_n >= 2:
                codes[dominated & (cum[:, 1] > limit)] = "T"
            codes[dominated & (cum[:, 0] > limit)] = "O"
        if p_percent is not None:
            if tops.shape[1] < 2:
                raise ValueError("the p% rule needs top1 and top2")
            rest = total - tops[:, 0] - tops[:, 1]
            p_bad = (total > 0) & (rest < p_percent / 100.0 * tops[:, 0]) & (codes == "F")
            codes[p_bad] = "M"
    codes[n < min_contributors] = "A"
    return codes


def _stat_arrays(table: pd.DataFrame, *, n_col: str, dominance_n: int,
                 p_percent: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_top = max(dominance_n or 0, 2 if p_percent is not None else 0)
    needed = [n_col] + ([f"top{i + 1}" for i in range(n_top)] + ["total"] if n_top else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise KeyError(
            f"table lacks column(s) {missing} needed by the disclosure rules. Fix: merge "
            "disclosure.cell_stats(microdata, value, by, top=dominance_n) into the table on the cell "
            "columns before calling protect().")
    n = table[n_col].to_numpy(dtype="float64", na_value=np.nan)
    if np.isnan(n).any():
        raise ValueError(f"column {n_col!r} has missing contributor counts in "
                         f"{int(np.isnan(n).sum())} row(s); every published cell needs them")
    if n_top:
        tops = np.column_stack([table[f"top{i + 1}"].to_numpy(dtype="float64", na_value=0.0)
                                for i in range(n_top)])
        total = table["total"].to_numpy(dtype="float64", na_value=0.0)
    else:
        tops = np.zeros((len(table), 0))
        total = np.zeros(len(table))
    return n, tops, total


def primary(table: pd.DataFrame, *, min_contributors: int = 3, dominance_n: int = 2,
            dominance_k: float = 0.85, p_percent: float | None = None,
            n_col: str = "n_contrib") -> pd.Series:
    """Primary confidentiality status per row of a table carrying :func:`cell_stats` columns."""
    n, tops, total = _stat_arrays(table, n_col=n_col, dominance_n=dominance_n, p_percent=p_percent)
    return pd.Series(_rule_codes(n, tops, total, min_contributors=min_contributors, dominance_n=dominance_n,
                                 dominance_k=dominance_k, p_percent=p_percent),
                     index=table.index, name="conf_status", dtype="str")


# --------------------------------------------------------------------------------------------
# relations (cells that add up to a total) and secondary suppression
# --------------------------------------------------------------------------------------------
def _relations(table: pd.DataFrame, keys: list[str], group_cols: list[str],
               margins: list[dict[str, Any] | None]) -> pd.DataFrame:
    """Long table (rel, row, is_margin) of relation membership; row = position in table."""
    parts = []
    offset = 0
    pos = np.arange(len(table))
    for g, spec in zip(group_cols, margins):
        if spec:
            is_m = np.ones(len(table), dtype=bool)
            for c, label in spec.items():
                is_m &= (table[c] == label).fillna(False).to_numpy(dtype=bool)
        else:
            is_m = np.zeros(len(table), dtype=bool)
        rel_keys = [k for k in keys if k != g]
        cells = table.loc[~is_m, rel_keys] if rel_keys else table.loc[~is_m, []]
        if rel_keys:
            rel = cells.groupby(rel_keys, sort=False, dropna=False, observed=True).ngroup()
            rel = rel.to_numpy()
        else:
            rel = np.zeros(len(cells), dtype=np.int64)
        if len(cells) == 0:
            continue
        cell_rows = pos[~is_m]
        parts.append(pd.DataFrame({"rel": rel + offset, "row": cell_rows, "is_margin": False}))
        if spec and is_m.any():
            mkeys = [k for k in keys if k not in spec]
            first = pd.DataFrame({"r": rel + offset, "p": cell_rows}).drop_duplicates("r")
            left = table.iloc[first["p"].to_numpy()][mkeys].reset_index(drop=True)
            left["__rel__"] = first["r"].to_numpy()
            right = table.loc[is_m, mkeys].reset_index(drop=True)
            right["__row__"] = pos[is_m]
            if right.duplicated(mkeys).any():
                raise ValueError(f"more than one total row matches margin {spec} for the same "
                                 f"{mkeys}; each relation needs at most one total")
            found = left.merge(right, on=mkeys, how="inner") if mkeys else left.assign(
                __row__=right["__row__"].iloc[0])
            parts.append(pd.DataFrame({"rel": found["__rel__"].to_numpy(),
                                       "row": found["__row__"].to_numpy(), "is_margin": True}))
        offset += int(rel.max()) + 1
    if not parts:
        return pd.DataFrame({"rel": np.array([], dtype=np.int64),
                             "row": np.array([], dtype=np.int64), "is_margin": np.array([], bool)})
    return pd.concat(parts, ignore_index=True)


def _union_fails(rel: np.ndarray, rows: np.ndarray, n: np.ndarray, tops: np.ndarray,
                 total: np.ndarray, n_rel: int, rule_kw: dict[str, Any]) -> np.ndarray:
    """Per relation: do the cells ``rows`` (relation ``rel``) taken together fail the primary
    rules? Contributors and totals add; the top contributions are the largest of the cells'."""
    u_n = np.bincount(rel, weights=n[rows], minlength=n_rel)
    u_total = np.bincount(rel, weights=total[rows], minlength=n_rel)
    k = tops.shape[1]
    u_tops = np.zeros((n_rel, k))
    if k and len(rows):
        long = pd.DataFrame({"rel": np.repeat(rel, k), "v": tops[rows].reshape(-1)})
        long = long.sort_values(["rel", "v"], ascending=[True, False], kind="stable")
        long["r"] = long.groupby("rel").cumcount()
        long = long[long["r"] < k]
        u_tops[long["rel"].to_numpy(), long["r"].to_numpy()] = long["v"].to_numpy()
    return _rule_codes(u_n, u_tops, u_total, **rule_kw) != "F"


def _unsafe_relations(mem: pd.DataFrame, supp: np.ndarray, n: np.ndarray, tops: np.ndarray,
                      total: np.ndarray, rule_kw: dict[str, Any],
                      comparison: tuple | None = None) -> np.ndarray:
    """Relation ids where a suppressed cell is recoverable (or their sum, or the union of their
    comparison groups, is disclosive)."""
    if mem.empty:
        return np.array([], dtype=np.int64)
    m = mem.assign(s=supp[mem["row"].to_numpy()])
    cells = m[~m["is_margin"]]
    margin = m[m["is_margin"]]
    n_rel = int(m["rel"].max()) + 1
    n_supp = np.bincount(cells["rel"], weights=cells["s"].astype(float), minlength=n_rel)
    margin_supp = np.zeros(n_rel, dtype=bool)
    margin_supp[margin.loc[margin["s"], "rel"].to_numpy()] = True
    # union of the suppressed cells of each relation: its sum is revealed when the total is out
    sc = cells[cells["s"]]
    rows = sc["row"].to_numpy()
    rel = sc["rel"].to_numpy()
    union_bad = _union_fails(rel, rows, n, tops, total, n_rel, rule_kw)
    if comparison is not None:  # ... and so is the union of their comparison groups
        c_n, c_tops, c_total, has = comparison
        keep = has[rows]
        with_cmp = np.bincount(rel[keep], minlength=n_rel) > 0
        union_bad |= with_cmp & _union_fails(rel[keep], rows[keep], c_n, c_tops, c_total,
                                             n_rel, rule_kw)
    unsafe = np.where(margin_supp, n_supp == 0,
                      (n_supp == 1) | ((n_supp >= 2) & union_bad))
    has_any = np.bincount(m["rel"], weights=m["s"].astype(float), minlength=n_rel) > 0
    return np.flatnonzero(unsafe & has_any)


def protect(table: pd.DataFrame, *, keys: Sequence[str], group_col: str | Sequence[str],
            margin: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
            min_contributors: int = 3, dominance_n: int = 2, dominance_k: float = 0.85,
            p_percent: float | None = None, n_col: str = "n_contrib",
            value_cols: Sequence[str] | None = None, drop_stats: bool = True,
            max_iter: int = 1000, comparison: str | None = None) -> pd.DataFrame:
    """Apply primary and secondary suppression to a published table.

    ``table``: one row per published cell, with the :func:`cell_stats` columns (``n_contrib``,
    ``top1..top{dominance_n}``, ``total``) merged in. ``keys``: the columns identifying a cell (unique
    per row), e.g. ``["indicator", "ref_area", "time_period", "breakdown", "group"]``.
    ``group_col``: the column along which cells add up to a total (e.g. ``"group"``: the
    categories of one breakdown), or a list of such columns (several relations, e.g. the rows
    and columns of a two-way table, or countries adding up to ASEAN). ``margin``: how the total
    row of each relation is labelled -- a dict of column -> label (``{"breakdown": "_T",
    "group": "_T"}``: the total row shares the other key values), a list of such dicts (one per
    group column; ``None`` entries allowed), or ``None``. A relation whose total row is not in
    the table is treated as having a *published* total that cannot be suppressed.

    Returns a copy with ``conf_status`` (F/A/O/T/M/D, see module docstring); suppressed rows
    have ``value_cols`` (default: those of value, estimate, se, ci_low, ci_high present) set to
    NaN; ``top*`` and ``total`` are dropped (firm-level magnitudes) unless ``drop_stats=False``.
    ``result.attrs["disclosure"]`` records the parameters and counts; relations that could not
    be protected (every member already suppressed but their sum still disclosive) are listed
    there as ``unprotectable`` row positions.

    ``comparison``: the prefix of a second set of :func:`cell_stats` columns (e.g. ``"cmp_"``:
    ``cmp_n_contrib``, ``cmp_top1``, ...) describing each cell's *comparison group*, for a
    value that is a ratio against another group (K04: MSMEs' productivity relative to the
    large firms'; with one large firm the ratio reveals its productivity). The same primary
    rules apply to that group; a cell whose own statistics pass but whose comparison group
    fails gets the failed rule's code (A, O, T, M). Rows with a missing ``{comparison}{n_col}``
    have no comparison group. Secondary suppression also checks the union of the suppressed
    cells' comparison groups (the countries' large firms adding up to the region's). The
    result then has ``conf_group``: "" (published), "cell" (own statistics failed),
    "comparison" (only the comparison group failed) or "secondary".

    Example (tidy indicator rows; the national total has breakdown = group = "total")::

        stats = pd.concat([
            disclosure.cell_stats(panel, "employees", ["country", "year"])
                .assign(breakdown="total", group="total"),
            disclosure.cell_stats(panel, "employees", ["country", "year", "size_class"])
                .rename(columns={"size_class": "group"}).assign(breakdown="size_class"),
        ]).rename(columns={"country": "ref_area", "year": "time_period"})
        table = rows.merge(stats, on=["ref_area", "time_period", "breakdown", "group"])
        disclosure.protect(table, keys=["indicator", "ref_area", "time_period", "breakdown",
                                        "group"], group_col="group",
                           margin={"breakdown": "total", "group": "total"})

    Which magnitude to test: the numerator's magnitude for a share of a money or employment
    total (K02, K03, K06, K07); ``value=None`` (firm counts) for proportions of firms.
    """
    keys = list(keys)
    group_cols = engines.as_list(group_col)
    missing = [c for c in [*keys, *group_cols] if c not in table.columns]
    if missing:
        raise KeyError(f"column(s) {missing} not in the table (columns: {list(table.columns)})")
    for g in group_cols:
        if g not in keys:
            keys.append(g)
    dup = table.duplicated(keys, keep=False)
    if dup.any():
        raise ValueError(
            f"{int(dup.sum())} rows share the same cell keys {keys} (first: "
            f"{table.loc[dup, keys].head(3).to_dict('records')}). Fix: pass all the columns "
            "that identify a published cell as keys.")
    margins = _margins(margin, group_cols, keys)
    if not 0 < dominance_k <= 1:
        raise ValueError(f"dominance_k is a share in (0, 1], got {dominance_k}")

    rule_kw = dict(min_contributors=min_contributors, dominance_n=dominance_n, dominance_k=dominance_k,
                   p_percent=p_percent)
    n, tops, total = _stat_arrays(table, n_col=n_col, dominance_n=dominance_n, p_percent=p_percent)
    status = _rule_codes(n, tops, total, **rule_kw)
    cmp = None if comparison is None else _comparison_stats(
        table, comparison, n_col=n_col, dominance_n=dominance_n, p_percent=p_percent)
    by_comparison = np.zeros(len(table), dtype=bool)
    if cmp is not None:
        c_codes = np.where(cmp[3], _rule_codes(*cmp[:3], **rule_kw), "F")
        by_comparison = (status == "F") & (c_codes != "F")
        status = np.where(status == "F", c_codes, status).astype(object)
    mem = _relations(table, keys, group_cols, margins)

    unprotectable = _secondary(status, mem, n, tops, total, rule_kw, max_iter, cmp)

    out = _publish(table, status, value_cols, drop_stats, unprotectable,
                   {**rule_kw, "min_contributors": min_contributors}, comparison or "")
    if comparison is not None:
        group = np.where(status == "F", "", np.where(status == "D", "secondary", "cell")).astype(object)
        group[by_comparison] = "comparison"
        out["conf_group"] = pd.array(group.astype(str), dtype="str")
    return out


def _comparison_stats(table: pd.DataFrame, prefix: str, *, n_col: str, dominance_n: int,
                      p_percent: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        np.ndarray]:
    """(n, tops, total, has) of the comparison groups: the ``prefix`` columns; ``has`` False
    where the cell has no comparison group (missing count)."""
    if f"{prefix}{n_col}" not in table.columns:
        raise KeyError(f"comparison={prefix!r} needs column '{prefix}{n_col}' (and {prefix}top1.., "
                       f"{prefix}total). Fix: merge the comparison group's disclosure.cell_stats "
                       f"with its columns prefixed {prefix!r}.")
    sub = table[[c for c in table.columns if c.startswith(prefix)]]
    sub = sub.rename(columns=lambda c: c[len(prefix):])
    has = sub[n_col].notna().to_numpy()
    n, tops, total = _stat_arrays(sub.fillna(0.0), n_col=n_col, dominance_n=dominance_n,
                                  p_percent=p_percent)
    return n, tops, total, has


def _margins(margin: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None,
             group_cols: list[str], keys: list[str]) -> list[dict[str, Any] | None]:
    """One margin spec (total row labels) per group column, checked against the keys."""
    if margin is None or isinstance(margin, Mapping):
        margins: list[dict[str, Any] | None] = (
            [dict(margin) if margin is not None else None] if len(group_cols) == 1
            else ([None] * len(group_cols) if margin is None else None))  # type: ignore[list-item]
        if margins is None:
            raise ValueError("with several group columns pass margin as a list (one dict per "
                             "group column)")
    else:
        margins = [dict(m) if m is not None else None for m in margin]
        if len(margins) != len(group_cols):
            raise ValueError(f"margin has {len(margins)} entries for {len(group_cols)} "
                             "group columns")
    for g, spec in zip(group_cols, margins):
        if spec is not None:
            if g not in spec:
                raise ValueError(f"margin {spec} must give the total's label in {g!r}")
            bad = [c for c in spec if c not in keys]
            if bad:
                raise ValueError(f"margin columns {bad} are not cell keys {keys}")
    return margins


def _secondary(status: np.ndarray, mem: pd.DataFrame, n: np.ndarray, tops: np.ndarray,
               total: np.ndarray, rule_kw: dict[str, Any], max_iter: int,
               comparison: tuple | None = None) -> list[int]:
    """Secondary suppression in place on ``status`` (``D``); returns unprotectable rows."""
    order_key = mem.assign(n=n[mem["row"]], t=total[mem["row"]])
    unprotectable: list[int] = []
    for _ in range(max_iter):
        supp = status != "F"
        bad = _unsafe_relations(mem, supp, n, tops, total, rule_kw, comparison)
        if len(bad) == 0:
            break
        cand = order_key[order_key["rel"].isin(bad) & ~supp[order_key["row"].to_numpy()]]
        cand = cand.sort_values(["rel", "is_margin", "n", "t", "row"], kind="stable")
        pick = cand.drop_duplicates("rel")
        stuck = np.setdiff1d(bad, pick["rel"].to_numpy())
        if len(pick) == 0:
            unprotectable = sorted(mem.loc[mem["rel"].isin(stuck), "row"].unique().tolist())
            break
        status[pick["row"].to_numpy()] = "D"
    else:  # pragma: no cover - each round suppresses at least one more cell
        raise RuntimeError("secondary suppression did not converge")

    return unprotectable


def _is_magnitude(col: str) -> bool:
    """A firm-level magnitude column of :func:`cell_stats` (``total``, ``top1``, ...)."""
    return col == "total" or (col.startswith("top") and col[3:].isdigit())


def _publish(table: pd.DataFrame, status: np.ndarray, value_cols: Sequence[str] | None,
             drop_stats: bool, unprotectable: list[int], params: dict[str, Any],
             comparison: str = "") -> pd.DataFrame:
    """The table with ``conf_status``, suppressed values NaN, magnitudes dropped, attrs."""
    out = table.copy()
    out["conf_status"] = pd.array(status.astype(str), dtype="str")
    cols = [c for c in (value_cols if value_cols is not None else DEFAULT_VALUE_COLS)
            if c in out.columns]
    hidden = status != "F"
    for c in cols:
        out[c] = out[c].astype("float64")
        out.loc[hidden, c] = np.nan
    if drop_stats:
        out = out.drop(columns=[c for c in out.columns if _is_magnitude(c) or (
            comparison and c.startswith(comparison) and _is_magnitude(c[len(comparison):]))])
    counts = pd.Series(status).value_counts().to_dict()
    out.attrs["disclosure"] = {
        **params, "counts": {k: int(v) for k, v in counts.items()},
        "unprotectable": unprotectable,
    }
    return out
