"""Tests for msme_eval.disclosure: each rule by hand, and a property-based check that no
published cell breaks a rule and no suppressed cell can be recovered from a published total."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msme_eval import disclosure as dc


# --------------------------------------------------------------------------------------------
# cell statistics
# --------------------------------------------------------------------------------------------
def test_cell_stats_by_hand():
    micro = pd.DataFrame({
        "firm_id": ["a", "a", "b", "c", "d", "e", "f"],
        "cell":    ["x", "x", "x", "x", "x", "y", "y"],
        # firm a reports twice (two years): 30 + 50 = 80; b negative value added -> |-20|;
        # c zero and d missing do not contribute
        "va":      [30.0, 50.0, -20.0, 0.0, np.nan, 7.0, 3.0],
    })
    cs = dc.cell_stats(micro, "va", "cell").set_index("cell")
    assert cs.loc["x", "n_contrib"] == 2
    assert cs.loc["x", "top1"] == 80.0 and cs.loc["x", "top2"] == 20.0
    assert cs.loc["x", "total"] == 100.0
    assert cs.loc["y"].tolist() == [2, 7.0, 3.0, 10.0]
    counts = dc.cell_stats(micro, None, "cell").set_index("cell")
    assert counts["n_contrib"].tolist() == [4, 2]  # every firm counts in a count table
    rows = dc.cell_stats(micro, "va", "cell", contributor=None, top=3).set_index("cell")
    assert rows.loc["x", "n_contrib"] == 3 and rows.loc["x", "top3"] == 20.0


def test_cell_stats_keeps_empty_cells_and_names_missing_ids():
    micro = pd.DataFrame({"firm_id": ["a", "b"], "cell": ["x", "y"], "v": [0.0, 1.0]})
    cs = dc.cell_stats(micro, "v", ["cell"])
    assert cs["n_contrib"].tolist() == [0, 1]
    micro.loc[1, "firm_id"] = None
    with pytest.raises(ValueError, match="'firm_id' is missing in 1 row"):
        dc.cell_stats(micro, "v", "cell")


# --------------------------------------------------------------------------------------------
# primary rules
# --------------------------------------------------------------------------------------------
def stats_row(n, tops, total):
    return {"n_contrib": n, **{f"top{i + 1}": t for i, t in enumerate(tops)}, "total": total}


def test_primary_codes_by_hand():
    t = pd.DataFrame([
        stats_row(2, [5, 4, 0], 9),        # 2 firms < 3                     -> A
        stats_row(5, [90, 2, 2], 100),     # top1 = 90% > 85%                -> O
        stats_row(5, [50, 40, 5], 100),    # top1+top2 = 90% > 85%, top1 50% -> T
        stats_row(5, [50, 35, 10], 100),   # 85% exactly is not "more than"  -> F
        stats_row(3, [1, 1, 1], 3),        # count table, 3 firms            -> F
    ])
    assert dc.primary(t).tolist() == ["A", "O", "T", "F", "F"]
    # (3, 0.9) dominance: 50+35+10 = 95% > 90% with top1+top2 = 85% -> M
    assert dc.primary(t, dominance_n=3, dominance_k=0.9).tolist()[3] == "M"
    # p% rule p=10: rest = 100 - 50 - 35 = 15 >= 5 -> safe; p=40: 15 < 20 -> M
    assert dc.primary(t, p_percent=10).tolist()[3] == "F"
    assert dc.primary(t, p_percent=40).tolist()[3] == "M"
    assert dc.primary(t, min_contributors=6).tolist() == ["A"] * 5


# --------------------------------------------------------------------------------------------
# secondary suppression
# --------------------------------------------------------------------------------------------
def breakdown_table() -> pd.DataFrame:
    """One indicator/country/year, two breakdowns (size, sex) sharing one total row."""
    rows = [
        ("_T", "_T", 12, [100, 50], 400),
        ("size", "micro", 6, [20, 15], 90),
        ("size", "small", 4, [40, 30], 110),
        ("size", "medium", 2, [100, 50], 200),   # 2 firms -> A
        ("sex", "female", 5, [30, 20], 100),
        ("sex", "male", 7, [100, 50], 300),
    ]
    t = pd.DataFrame([{"indicator": "K02", "ref_area": "IDN", "time_period": 2024,
                       "breakdown": b, "group": g, **stats_row(n, tops, tot), "value": tot,
                       "se": tot / 10} for b, g, n, tops, tot in rows])
    return t


KEYS = ["indicator", "ref_area", "time_period", "breakdown", "group"]


def test_secondary_picks_fewest_contributors_and_blanks_values():
    out = dc.protect(breakdown_table(), keys=KEYS, group_col="group",
                     margin={"breakdown": "_T", "group": "_T"})
    status = dict(zip(out["group"], out["conf_status"]))
    # medium is A; within size the other cell with fewest contributors (small, 4) goes D;
    # union medium+small = 6 firms, (100+50)/310 = 48% -> safe; total and sex untouched
    assert status == {"_T": "F", "micro": "F", "small": "D", "medium": "A", "female": "F",
                      "male": "F"}
    hidden = out["conf_status"] != "F"
    assert out.loc[hidden, ["value", "se"]].isna().all().all()
    assert out.loc[~hidden, "value"].notna().all()
    assert not {"top1", "top2", "total"} & set(out.columns)
    assert out.attrs["disclosure"]["counts"] == {"F": 4, "D": 1, "A": 1}


def test_suppressed_total_cascades_to_other_breakdowns():
    t = breakdown_table()
    t.loc[t.group == "_T", ["top1", "top2"]] = [380.0, 10.0]  # total dominated by one firm -> O
    t.loc[t.group == "male", ["top1", "top2"]] = [380.0, 10.0]
    t.loc[t.group == "male", "total"] = 390.0
    out = dc.protect(t, keys=KEYS, group_col="group", margin={"breakdown": "_T", "group": "_T"})
    status = dict(zip(out["group"], out["conf_status"]))
    assert status["_T"] == "O" and status["male"] == "O" and status["medium"] == "A"
    # the sex relation has total + male suppressed: fine; the size relation has total +
    # medium suppressed: fine -- neither can be recovered from one equation
    assert status["female"] == "F" and status["micro"] == "F"


def test_two_single_firm_cells_need_a_third():
    # each suppressed cell has 1 firm: each could subtract its own value from the revealed
    # sum, so the union (2 firms) fails the frequency rule and a third cell is suppressed
    t = pd.DataFrame([{"cell": c, **stats_row(n, tops, tot)} for c, n, tops, tot in [
        ("a", 1, [10, 0], 10), ("b", 1, [12, 0], 12), ("c", 3, [5, 5], 15),
        ("d", 9, [5, 5], 40)]])
    out = dc.protect(t, keys=["cell"], group_col="cell", margin=None)
    assert out["conf_status"].tolist() == ["A", "A", "D", "F"]


def test_two_way_table_rows_and_columns():
    # 2 x 2 table with margins; one primary cell forces a rectangle of suppressions
    cells = {("r1", "c1"): 1, ("r1", "c2"): 5, ("r2", "c1"): 6, ("r2", "c2"): 7}
    rows = [{"row": r, "col": c, **stats_row(n, [1, 1], n)} for (r, c), n in cells.items()]
    rows += [{"row": r, "col": "_T", **stats_row(sum(v for (rr, _), v in cells.items()
                                                      if rr == r), [1, 1], 0)}
             for r in ("r1", "r2")]
    rows += [{"row": "_T", "col": c, **stats_row(sum(v for (_, cc), v in cells.items()
                                                      if cc == c), [1, 1], 0)}
             for c in ("c1", "c2")]
    rows += [{"row": "_T", "col": "_T", **stats_row(19, [1, 1], 0)}]
    t = pd.DataFrame(rows)
    t["total"] = t["n_contrib"].astype(float)
    out = dc.protect(t, keys=["row", "col"], group_col=["col", "row"],
                     margin=[{"col": "_T"}, {"row": "_T"}])
    s = {(r, c): v for r, c, v in zip(out["row"], out["col"], out["conf_status"])}
    assert s[("r1", "c1")] == "A"
    hidden = {k for k, v in s.items() if v != "F"}
    assert hidden == {("r1", "c1"), ("r1", "c2"), ("r2", "c1"), ("r2", "c2")}


def test_protect_input_errors():
    t = breakdown_table()
    with pytest.raises(ValueError, match="share the same cell keys"):
        dc.protect(t, keys=["indicator"], group_col="indicator")
    with pytest.raises(KeyError, match="cell_stats"):
        dc.protect(t.drop(columns="top2"), keys=KEYS, group_col="group")
    with pytest.raises(ValueError, match="label in 'group'"):
        dc.protect(t, keys=KEYS, group_col="group", margin={"breakdown": "_T"})


# --------------------------------------------------------------------------------------------
# comparison groups (a ratio against another group: K04's large firms)
# --------------------------------------------------------------------------------------------
def comparison_row(cell, own, cmp):
    """A cell with its own statistics and, prefixed cmp_, its comparison group's (or None)."""
    row = {"cell": cell, **stats_row(*own), "value": 1.0}
    c = stats_row(*cmp) if cmp is not None else dict.fromkeys(stats_row(0, [0, 0], 0))
    return {**row, **{f"cmp_{k}": (np.nan if cmp is None else v) for k, v in c.items()}}


def test_comparison_group_primary_rules_by_hand():
    """The cell's own statistics pass everywhere; its comparison group decides: 1 firm -> A,
    top firm 95% -> O, top two 90% -> T, balanced -> F, no comparison group -> F."""
    t = pd.DataFrame([
        comparison_row("a", (6, [10, 10], 60), (1, [100, 0], 100)),
        comparison_row("b", (6, [10, 10], 60), (4, [95, 2], 100)),
        comparison_row("c", (6, [10, 10], 60), (4, [50, 40], 100)),
        comparison_row("d", (6, [10, 10], 60), (4, [30, 30], 100)),
        comparison_row("e", (6, [10, 10], 60), None),
        comparison_row("f", (2, [10, 10], 20), (4, [30, 30], 100)),  # own count fails first
    ])
    out = dc.protect(t, keys=["cell"], group_col="cell", margin=None, comparison="cmp_")
    primary = out.set_index("cell")
    assert primary.loc[["a", "b", "c", "f"], "conf_status"].tolist() == ["A", "O", "T", "A"]
    assert primary.loc[["a", "b", "c"], "conf_group"].eq("comparison").all()
    assert primary.loc["f", "conf_group"] == "cell"
    assert primary.loc[["a", "b", "c", "f"], "value"].isna().all()
    # firm-level magnitudes of both groups are dropped; the counts stay for the caller
    assert not {"cmp_top1", "cmp_top2", "cmp_total", "top1", "total"} & set(out.columns)
    assert {"n_contrib", "cmp_n_contrib"} <= set(out.columns)
    with pytest.raises(KeyError, match="cmp_n_contrib"):
        dc.protect(t.drop(columns="cmp_n_contrib"), keys=["cell"], group_col="cell",
                   comparison="cmp_")


def test_union_of_suppressed_comparison_groups_needs_a_third_cell():
    """a and b each rest on one comparison firm (A); their own cells together pass (10 firms,
    20%), but the total minus the published cells reveals a ratio against the union of their
    comparison groups -- 2 firms -- so a third cell (c: fewest own contributors) goes D.
    Without the comparison columns nothing is suppressed at all."""
    t = pd.DataFrame([
        comparison_row("a", (5, [10, 10], 50), (1, [100, 0], 100)),
        comparison_row("b", (5, [10, 10], 50), (1, [120, 0], 120)),
        comparison_row("c", (6, [10, 10], 60), (5, [50, 50], 250)),
        comparison_row("d", (9, [10, 10], 90), (5, [50, 50], 250)),
    ])
    out = dc.protect(t, keys=["cell"], group_col="cell", margin=None, comparison="cmp_")
    assert out["conf_status"].tolist() == ["A", "A", "D", "F"]
    assert out["conf_group"].tolist() == ["comparison", "comparison", "secondary", ""]
    plain = dc.protect(t.drop(columns=[c for c in t if c.startswith("cmp_")]), keys=["cell"],
                       group_col="cell", margin=None)
    assert (plain["conf_status"] == "F").all()


# --------------------------------------------------------------------------------------------
# property-based: no published row violates the rules; nothing is recoverable
# --------------------------------------------------------------------------------------------
def passes_rules(values: np.ndarray, min_contributors=3, dominance_n=2, dominance_k=0.85) -> bool:
    """Independent re-implementation on the firms' contributions (one value per firm)."""
    v = np.sort(np.abs(values[values != 0]))[::-1]
    if len(v) < min_contributors:
        return False
    return not (v.sum() > 0 and v[:dominance_n].sum() > dominance_k * v.sum())


firm = st.tuples(st.integers(0, 3), st.integers(0, 2),
                 st.one_of(st.just(0.0), st.floats(0.5, 1e5), st.floats(1e5, 1e7)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(firm, min_size=1, max_size=40))
def test_property_two_way_table_with_margins(firms):
    micro = pd.DataFrame(firms, columns=["cat", "region", "v"]).astype(
        {"cat": "str", "region": "str"})
    micro["firm_id"] = [f"f{i}" for i in range(len(micro))]
    parts = [dc.cell_stats(micro, "v", ["cat", "region"]),
             dc.cell_stats(micro, "v", ["cat"]).assign(region="_T"),
             dc.cell_stats(micro, "v", ["region"]).assign(cat="_T"),
             dc.cell_stats(micro, "v", None).assign(cat="_T", region="_T")]
    table = pd.concat(parts, ignore_index=True)
    sums = {}
    for cat, region in zip(table["cat"], table["region"]):
        m = np.ones(len(micro), bool)
        if cat != "_T":
            m &= micro["cat"].to_numpy() == cat
        if region != "_T":
            m &= micro["region"].to_numpy() == region
        sums[(cat, region)] = micro.loc[m, "v"].to_numpy()
    table["value"] = [sums[k].sum() for k in zip(table["cat"], table["region"])]
    out = dc.protect(table, keys=["cat", "region"], group_col=["cat", "region"],
                     margin=[{"cat": "_T"}, {"region": "_T"}])
    status = {k: s for k, s in zip(zip(out["cat"], out["region"]), out["conf_status"])}
    value = {k: v for k, v in zip(zip(out["cat"], out["region"]), out["value"])}

    for key, s in status.items():
        # 1. every published row passes the rules; every failing row is suppressed
        assert (s == "F") == passes_rules(sums[key]) or s == "D"
        if s != "F":
            assert np.isnan(value[key])
        else:
            assert value[key] == pytest.approx(sums[key].sum())

    # 2. relations: categories within a region (and within the region total), and regions
    #    within a category: a published total minus the published cells must not reveal a
    #    single suppressed cell, nor a disclosive sum of suppressed cells
    cats = sorted({c for c, _ in status if c != "_T"})
    regions = sorted({r for _, r in status if r != "_T"})
    relations = [([(c, r) for c in cats if (c, r) in status], (("_T", r)))
                 for r in [*regions, "_T"]]
    relations += [([(c, r) for r in regions if (c, r) in status], ((c, "_T")))
                  for c in [*cats, "_T"]]
    for cells, total in relations:
        if not cells:
            continue
        hidden = [k for k in cells if status[k] != "F"]
        if status[total] == "F":
            assert len(hidden) != 1, (cells, status)
            if hidden:
                revealed = value[total] - sum(value[k] for k in cells if status[k] == "F")
                union = np.concatenate([sums[k] for k in hidden])
                assert revealed == pytest.approx(union.sum(), rel=1e-9, abs=1e-6)
                assert passes_rules(union) or out.attrs["disclosure"]["unprotectable"]
        else:
            assert hidden, (cells, total, status)


@settings(max_examples=60, deadline=None)
@given(st.lists(firm, min_size=1, max_size=30), st.integers(1, 5), st.floats(0.5, 0.95))
def test_property_one_way_implicit_total(firms, min_contributors, dominance_k):
    micro = pd.DataFrame(firms, columns=["cat", "region", "v"]).astype({"cat": "str"})
    micro["firm_id"] = np.arange(len(micro))
    table = dc.cell_stats(micro, "v", "cat")
    out = dc.protect(table, keys=["cat"], group_col="cat", min_contributors=min_contributors,
                     dominance_k=dominance_k, drop_stats=False)
    hidden = out["conf_status"] != "F"
    for cat, s in zip(out["cat"], out["conf_status"]):
        v = micro.loc[micro["cat"] == cat, "v"].to_numpy()
        if s == "F":
            assert passes_rules(v, min_contributors, 2, dominance_k)
    assert hidden.sum() != 1 or out.attrs["disclosure"]["unprotectable"]
