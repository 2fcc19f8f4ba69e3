"""Disclosure control glue for :func:`msme_eval.indicators.compute` (the indicator table).

Contributor statistics per published cell, then :func:`msme_eval.disclosure.protect`:

* Indicators with a ``magnitude`` in the registry (K02-K04, K06, K07, O04): the unweighted
  numerator contributions of each firm (e.g. MSME value added for K03, the employment change
  for O04) go through :func:`msme_eval.disclosure.cell_stats` (contributors = distinct firms
  with a non-zero contribution, top-2 magnitudes, total).
* Count/proportion indicators: every record described by the cell is a contributor with
  magnitude 1 -- exactly what ``cell_stats(data, None, by)`` returns -- so ``n_contrib = n``,
  ``top1 = min(n, 1)``, ``top2 = min(n - 1, 1)``, ``total = n`` (no extra pass over the rows).
* Comparison groups: K04 is a ratio against the large firms of the country-year (every
  breakdown cell compares with all of them), so it reveals their value added per employee as
  much as the MSMEs'; one large firm -> its productivity. Their statistics (the ``rnum`` part,
  large firms' value added: :func:`parts.disclosure_parts`, key ``K04:cmp``) are computed by
  the same engine pass and passed to :func:`msme_eval.disclosure.protect` as ``cmp_*``
  columns: the same count and dominance rules, a cell failing only there is suppressed with
  A/O/T and ``comment`` "suppressed: the comparison group (large firms of IDN 2020) has fewer
  than 3 contributing firms"; secondary suppression checks the union of suppressed cells'
  comparison groups too. An MSME share of an all-firm magnitude total (K02 employment, K06
  loans, K07 exports) reveals the rest of that total, the large firms' part (1 - share), so the
  large firms in it are its comparison group in the same way (:func:`parts.rest_of_total`),
  except where the total is the macro table's (``obs_status`` E: no large firm in the panel).
* ASEAN cells: the union of the included countries' cells (firms are national), so
  ``n_contrib`` and ``total`` add up (magnitudes in USD) and the top two are the two largest
  of the countries' top twos.
* Relations for secondary suppression: the groups of each breakdown add up to the country's
  ``total`` row; the countries add up to the ASEAN row. Rows with ``obs_status`` M are not
  published and are left out (``conf_status`` F: nothing confidential to withhold).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import disclosure
from ..contract import REGION
from .parts import COMPARISON, comparison_of

_STAT_COLS = ("n_contrib", "top1", "top2", "total")


def _has_magnitude(ind: dict[str, Any]) -> bool:
    """True when the registry names a magnitude column (dominance rule applies)."""
    mag = ind.get("magnitude")
    return isinstance(mag, str) and bool(mag)


def collect_fine_stats(est: Any, breakdowns: list[str]) -> None:
    """Contributor statistics of every magnitude indicator, and of every comparison group
    (also of an indicator whose own cells are counts), on the finest cells.

    Cells are (country, period, group of every breakdown), computed by the stage-(a) engine
    (``stage.fine_stats``: numpy for pandas, SQL for DuckDB/Spark); a firm has one row per
    year, so coarser cells are unions of fine cells: contributors and totals add up and the
    top two are the two largest of the fine cells' top twos (see :func:`_merge_tops`).
    """
    inds = [ind for ind in est.inds if (_has_magnitude(ind) or comparison_of(ind))
            and not est.missing_cols[ind["id"]]]
    est.fine_stats = est.stage.fine_stats(inds, list(breakdowns))
    est.fine_groups = list(breakdowns)


def _merge_tops(c: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Union of disjoint cells: n_contrib and total add, top two of the parts' top twos."""
    agg = c.groupby(keys, sort=False).agg(n_contrib=("n_contrib", "sum"), total=("total", "sum"))
    both = pd.concat([c[[*keys, "top1"]].rename(columns={"top1": "v"}),
                      c[[*keys, "top2"]].rename(columns={"top2": "v"})], ignore_index=True)
    both = both.sort_values("v", ascending=False, kind="stable")
    both["rank"] = both.groupby(keys, sort=False).cumcount()
    both = both[both["rank"] < 2]
    tops = both.set_index([*keys, "rank"])["v"].unstack("rank")
    agg["top1"] = tops.get(0, pd.Series(dtype=float)).reindex(agg.index).fillna(0.0)
    agg["top2"] = tops.get(1, pd.Series(dtype=float)).reindex(agg.index).fillna(0.0)
    return agg.reset_index()


def breakdown_cell_stats(est: Any, breakdown: str | None, labels: list[str]) -> pd.DataFrame:
    """Magnitude statistics per (key, area, period, group) for one breakdown; key = indicator
    id, or id + ``COMPARISON`` for its comparison group. A share-of-total indicator compares
    every group of a breakdown with the whole country-year's comparison group (K04: all large
    firms), so those statistics are the country-year's, repeated for every group."""
    frames = []
    scope = {ind["id"]: ind["scope"] for ind in est.inds}
    for key, fine in (est.fine_stats or {}).items():
        iid = key.removesuffix(COMPARISON)
        gcol = None if breakdown is None else f"_g{est.fine_groups.index(breakdown)}"
        whole = gcol is None or (key != iid and scope[iid] != "within_group")
        f = fine.assign(_gt=0) if whole else fine
        cs = _merge_tops(f, ["_area", "_yi", "_gt" if whole else gcol])
        cs = cs.rename(columns={"_gt" if whole else gcol: "_g"})
        if whole and gcol is not None:
            cs = cs.loc[cs.index.repeat(len(labels))].reset_index(drop=True)
            cs["_g"] = np.tile(np.arange(len(labels)), len(cs) // len(labels))
        cs = cs[cs["_yi"] < len(est.years)]
        frames.append(pd.DataFrame({
            "indicator": key,
            "ref_area": np.asarray(est.areas)[cs["_area"].to_numpy()],
            "time_period": est.years[cs["_yi"].to_numpy()].astype(np.int64),
            "breakdown": breakdown or "total",
            "group": np.asarray(labels, dtype=object)[cs["_g"].to_numpy()],
            "_yi": cs["_yi"].to_numpy(),
            **{c: cs[c].to_numpy() for c in _STAT_COLS}}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _asean_stats(est: Any, country: pd.DataFrame) -> pd.DataFrame:
    """ASEAN magnitude stats from the included countries' cell stats (USD for money): the
    union of the countries' cells, and of their comparison groups."""
    if not len(country) or not est.asean_members:
        return pd.DataFrame()
    money = {ind["id"]: bool(ind["money"]) for ind in est.inds}
    keys = [(i, y, a) for (i, y), areas in est.asean_members.items() for a in areas]
    mem = pd.DataFrame(keys, columns=["_iid", "_yi", "ref_area"])
    base = country["indicator"].str.removesuffix(COMPARISON)
    c = country.assign(_iid=base).merge(mem, on=["_iid", "_yi", "ref_area"], how="inner")
    if not len(c):
        return pd.DataFrame()
    areas = pd.Index(est.areas)
    ay = areas.get_indexer(c["ref_area"]) * est.ny + c["_yi"].to_numpy()
    rate = est.usd_rates(ay).to_numpy()
    is_money = c["_iid"].map(money).to_numpy(dtype=bool)
    rate = np.where(is_money, rate, 1.0)
    c = c.assign(top1=c["top1"] * rate, top2=c["top2"] * rate, total=c["total"] * rate)
    out = _merge_tops(c, ["indicator", "time_period", "breakdown", "group"])
    out["ref_area"] = REGION
    return out


_KEYS = ["indicator", "ref_area", "time_period", "breakdown", "group"]
#: column prefix of the comparison group's statistics (``disclosure.protect(comparison=)``)
CMP = "cmp_"


def _cell_stats(est: Any, table: pd.DataFrame, stats: pd.DataFrame) -> None:
    """The cell's own contributor statistics, in place: the magnitude statistics for
    indicators with a ``magnitude``, else every record is a contributor of magnitude 1."""
    mag_ids = {ind["id"] for ind in est.inds if _has_magnitude(ind)}
    is_mag = table["indicator"].isin(mag_ids).to_numpy()
    n = table["n"].to_numpy(dtype=float)
    table["n_contrib"] = n
    table["top1"] = np.minimum(n, 1.0)
    table["top2"] = np.clip(n - 1.0, 0.0, 1.0)
    table["total"] = n
    if is_mag.any():
        m = table.loc[is_mag, _KEYS].merge(stats, on=_KEYS, how="left")
        for c in _STAT_COLS:
            table.loc[is_mag, c] = m[c].fillna(0.0).to_numpy() if c in m else 0.0


def _comparison_stats(est: Any, table: pd.DataFrame, stats: pd.DataFrame) -> None:
    """The comparison group's statistics (``cmp_*``), in place: NaN for indicators without
    one; 0 contributors when the group has no usable record in the cell."""
    for c in _STAT_COLS:
        table[CMP + c] = np.nan
    cmp_ids = {ind["id"] for ind in est.inds if comparison_of(ind)}
    has = table["indicator"].isin(cmp_ids).to_numpy()
    if not has.any():
        return
    m = table.loc[has, _KEYS].assign(indicator=lambda d: d["indicator"] + COMPARISON)
    m = m.merge(stats, on=_KEYS, how="left")
    for c in _STAT_COLS:
        table.loc[has, CMP + c] = m[c].fillna(0.0).to_numpy() if c in m else 0.0
    # a share whose total is the macro table's (E) reveals no panel firm's part of it
    macro = has & (table["obs_status"].to_numpy() == "E")
    table.loc[macro, [CMP + c for c in _STAT_COLS]] = np.nan


def _comparison_comments(est: Any, out: pd.DataFrame, min_contributors: int,
                         dominance_n: int, dominance_k: float) -> None:
    """Say in ``comment`` which group failed when only the comparison group did."""
    rows = out["conf_group"].to_numpy() == "comparison"
    if not rows.any():
        return
    pop = {ind["id"]: ("the comparison group" if ind["kind"] == "relative_ratio" else "the rest of the total")
           + f" ({comparison_of(ind)} firms of " for ind in est.inds if comparison_of(ind)}
    why = np.where(out.loc[rows, "conf_status"].to_numpy() == "A",
                   f"has fewer than {min_contributors} contributing firms",
                   f"is dominated by its largest firm(s) (({dominance_n}, {dominance_k:.0%}) rule)")
    sub = out.loc[rows]
    where = np.where(sub["ref_area"] == REGION, "the included countries",
                     sub["ref_area"].astype(str) + " " + sub["time_period"].astype(str))
    text = [f"suppressed: {pop[i]}{w}) {y}"
            for i, w, y in zip(sub["indicator"], where, why)]
    old = sub["comment"].fillna("").astype(str).to_numpy()
    out.loc[rows, "comment"] = [f"{o}; {t}" if o else t for o, t in zip(old, text)]


def protect_table(est: Any, out: pd.DataFrame, *, min_contributors: int = 3,
                  dominance_n: int = 2, dominance_k: float = 0.85) -> pd.DataFrame:
    """conf_status for every row; suppressed values (value, se, ci) set to NaN.

    The rules apply to each cell's contributors and, for a ratio against a comparison group
    (K04), to that group's too (``disclosure.protect(comparison=)``): a K04 cell whose large
    firms are fewer than ``min_contributors`` or dominated is suppressed with A/O/T and a
    ``comment`` naming the comparison group; secondary suppression then protects it.
    """
    country = (pd.concat([c for c in est.cell_tables if len(c)], ignore_index=True)
               if any(len(c) for c in est.cell_tables) else pd.DataFrame(columns=_KEYS))
    stats = pd.concat([country, _asean_stats(est, country)], ignore_index=True)
    stats = stats.reindex(columns=[*_KEYS, *_STAT_COLS]).astype({"time_period": "int64"})
    pub = out["obs_status"].to_numpy() != "M"
    table = out[pub].copy()
    _cell_stats(est, table, stats)
    _comparison_stats(est, table, stats)
    groups = ["group"]
    margins: list[dict[str, Any] | None] = [{"breakdown": "total", "group": "total"}]
    if (table["ref_area"] == REGION).any():
        groups.append("ref_area")
        margins.append({"ref_area": REGION})
    protected = disclosure.protect(table, keys=_KEYS, group_col=groups, margin=margins,
                                   min_contributors=min_contributors, dominance_n=dominance_n,
                                   dominance_k=dominance_k, n_col="n_contrib", comparison=CMP)
    _comparison_comments(est, protected, min_contributors, dominance_n, dominance_k)
    protected = protected.drop(columns=["n_contrib", CMP + "n_contrib", "conf_group"])
    rest = out[~pub].copy()
    rest["conf_status"] = "F"
    res = pd.concat([protected, rest], ignore_index=True)
    res["conf_status"] = res["conf_status"].astype("str")
    res.attrs["disclosure"] = protected.attrs.get("disclosure", {})
    return res
