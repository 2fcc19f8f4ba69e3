"""model_table(): several results side by side, exact numbers from each tidy(), LaTeX/Excel/Word/HTML."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from test_impact_helpers import simulate

from msme_eval.impact import did, model_table, twfe, weighting
from msme_eval.impact.tables import BACON_ROW, SPEC_ROWS, tex_escape


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    df = simulate(n=600, n_years=6, seed=4)
    df["post"] = ((df["year"] >= df["first_treated"]) & df["first_treated"].notna()).astype(int)
    return df


@pytest.fixture(scope="module")
def fits(panel):
    return {"cs_never": did(panel, "y"), "cs_notyet": did(panel, "y", control="not_yet_treated"),
            "twfe": twfe(panel, "y", "post")}


@pytest.fixture(scope="module")
def table(fits):
    return model_table({"CS never": fits["cs_never"], "TWFE": fits["twfe"]}, labels={"post": "ATT"},
                       aggregations=("simple", "dynamic"))


def _stars(p: float) -> str:
    return "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.10 else ""


def test_values_are_exactly_each_results_tidy(table, fits):
    v = table.values.set_index(["model", "row"])
    cs = fits["cs_never"].tidy()
    for kind, row in (("simple", "ATT"), ("dynamic", "ATT (event time)")):
        ref = cs[(cs["aggregation"] == kind) & (cs["level"] == "overall")].iloc[0]
        for col in ("estimate", "se", "ci_low", "ci_high", "pvalue"):
            assert v.loc[("CS never", row), col] == ref[col]  # exact, not approximate
    tw = fits["twfe"].tidy().iloc[0]
    for col in ("estimate", "se", "ci_low", "ci_high", "pvalue"):
        assert v.loc[("TWFE", "ATT"), col] == tw[col]
    assert ("TWFE", "ATT (event time)") not in v.index  # no made-up cell


def test_display_cells_round_the_same_numbers(table, fits):
    cells = table.df
    o = fits["cs_never"].overall
    cell = cells.loc[("coef", "ATT")].iloc[0]
    assert cell == f"{o.estimate:.3f}{_stars(o.pvalue)} \n ({o.se:.3f})"
    t = fits["twfe"].tidy().iloc[0]
    assert cells.loc[("coef", "ATT")].iloc[1] == f"{t['estimate']:.3f}{_stars(t['pvalue'])} \n ({t['se']:.3f})"
    assert cells.loc[("coef", "ATT (event time)")].iloc[1] == ""


def test_specification_rows_state_every_choice(table, fits, panel):
    spec = table.specification
    assert list(spec.index) == [*SPEC_ROWS, BACON_ROW]
    share = fits["twfe"].bacon().forbidden_weight
    assert 0 < share < 1 and spec.loc[BACON_ROW, "TWFE"] == f"{100 * share:.1f}%"
    assert spec.loc[BACON_ROW, "CS never"] == "n/a"
    assert spec.loc["Control group", "CS never"] == "never treated"
    assert spec.loc["Base period", "CS never"] == "varying"
    assert spec.loc["Anticipation", "CS never"] == "0"
    assert spec.loc["N firms", "CS never"] == panel["firm_id"].nunique() == 600
    assert spec.loc["N obs", "CS never"] == len(panel)
    assert spec.loc["N obs", "TWFE"] == fits["twfe"].nobs
    assert "clustered by firm_id" in spec.loc["Clustering", "TWFE"]
    nyt = model_table([fits["cs_notyet"]], names=["nyt"]).specification
    assert nyt.loc["Control group", "nyt"] == "not yet treated" and BACON_ROW not in nyt.index
    cov = model_table({"cov": twfe(panel, "y", "post", covariates=["x"])}).specification
    assert cov.loc[BACON_ROW, "cov"].startswith("n/a (not a single 0/1 treatment")
    assert BACON_ROW not in model_table({"t": fits["twfe"]}, bacon=False).specification.index


def test_ci_layout_and_alpha_checks(panel, fits):
    tab = model_table([fits["cs_never"]], show="ci", stars=False, digits=4)
    o = fits["cs_never"].overall
    assert tab.df.iloc[0, 0] == f"{o.estimate:.4f} \n [{o.ci_low:.4f}, {o.ci_high:.4f}]"
    assert "95% confidence intervals" in " ".join(tab.notes())
    other = did(panel, "y", alpha=0.10)
    with pytest.raises(ValueError, match="different alpha"):
        model_table([fits["cs_never"], other], show="ci")
    model_table([fits["cs_never"], other], show="se")  # SEs do not depend on alpha
    with pytest.raises(ValueError, match="show must be"):
        model_table([other], show="t")
    with pytest.raises(ValueError, match="aggregations"):
        model_table([other], aggregations=("overall",))
    with pytest.raises(ValueError, match="one name per result"):
        model_table([other], names=["a", "b"])
    with pytest.raises(TypeError, match="cannot tabulate"):
        model_table([object()])


def test_weighting_result_column(panel):
    cross = panel[panel["year"] == 2020].assign(treated=lambda d: d["first_treated"].notna().astype(int))
    w = weighting(cross, "y", "treated", ["x"])
    tab = model_table({"IPW": w})
    ref = w.tidy().iloc[0]
    got = tab.values.iloc[0]
    assert got["row"] == "ATT" and got["estimate"] == ref["estimate"] and got["se"] == ref["se"]
    assert tab.specification.loc["N firms", "IPW"] == len(cross)
    assert tab.specification.loc["Covariates", "IPW"] == "x"


def _balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_latex_is_booktabs_balanced_and_escaped(fits):
    tab = model_table({"log_turnover & co": fits["cs_never"], "TWFE 100%": fits["twfe"]}, labels={"post": "ATT"})
    tex = tab.to_latex()
    assert _balanced(tex)
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1 and r"\midrule" in tex
    for env in ("threeparttable", "tabularx"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert r"log\_turnover \& co" in tex and r"TWFE 100\%" in tex and "firm\\_id" in tex
    assert " & co" not in tex.replace(r"\& co", "")  # no unescaped ampersand from the name
    assert tex_escape("a_b<c") == r"a\_b$<$c"
    body = tex.split(r"\midrule")[1]
    o = fits["cs_never"].overall
    assert f"{o.estimate:.3f}" in body


def test_excel_rereads_with_the_same_numbers_and_no_formula(tmp_path, table, fits):
    import openpyxl

    path = table.to_excel(tmp_path / "models.xlsx")
    back = pd.read_excel(path, keep_default_na=False, na_values=[""])
    att = back[back["row"] == "ATT"].set_index("statistic")
    o = fits["cs_never"].overall
    # openpyxl writes numbers with 16 significant digits ("%.16g"; Excel itself keeps 15)
    same = lambda x: pytest.approx(x, rel=1e-15, abs=0)  # noqa: E731
    assert att.loc["estimate", "CS never"] == same(o.estimate) and att.loc["se", "CS never"] == same(o.se)
    assert att.loc["ci_low", "CS never"] == same(o.ci_low) and att.loc["ci_high", "CS never"] == same(o.ci_high)
    assert att.loc["pvalue", "TWFE"] == same(fits["twfe"].pvalue.iloc[0])
    assert back.loc[back["row"] == "ATT (event time)", "TWFE"].isna().all()  # absent, not zero
    spec = back[back["statistic"].isna()].set_index("row")
    assert spec.loc["Control group", "CS never"] == "never treated"
    assert int(spec.loc["N obs", "TWFE"]) == fits["twfe"].nobs
    evil = model_table({"=HYPERLINK(\"http://x\")": fits["twfe"]}).to_excel(tmp_path / "evil.xlsx")
    cell = openpyxl.load_workbook(evil).active.cell(row=1, column=3)
    assert cell.value.startswith("=HYPERLINK") and cell.data_type == "s"


def test_docx_holds_the_cells(tmp_path, table, fits):
    import docx

    path = table.to_docx(tmp_path / "models.docx")
    doc = docx.Document(str(path))
    text = [c.text for t in doc.tables for row in t.rows for c in row.cells]
    joined = "\n".join(text)
    o = fits["cs_never"].overall
    assert f"{o.estimate:.3f}{_stars(o.pvalue)}" in joined and f"({o.se:.3f})" in joined
    for word in ("CS never", "TWFE", "Control group", "never treated", "N firms", "600"):
        assert word in joined


def test_html_display(table, fits):
    html = table._repr_html_()
    assert "<table" in html and "CS never" in html and "Control group" in html
    assert f"{fits['cs_never'].overall.estimate:.3f}" in html
    assert np.isfinite(table.values["estimate"]).all()


def test_any_result_with_tidy_and_choices(panel):
    """The generic path (here impact.match): rows from tidy()'s term, choices by name, counts from tidy()."""
    from msme_eval.impact import match

    cross = panel[panel["year"] == 2020].assign(treated=lambda d: d["first_treated"].notna().astype(int))
    m = match(cross, "treated", ["x"], outcome="y")
    tab = model_table({"NN": m})
    ref = m.tidy().iloc[0]
    got = tab.values.iloc[0]
    assert got["row"] == ref["term"] and got["estimate"] == ref["estimate"] and got["se"] == ref["se"]
    spec = tab.specification["NN"]
    assert spec["Estimator"] == m.choices["method"] and spec["Covariates"] == "x"
    assert spec["N firms"] == int(ref["n_focal"] + ref["n_comparison"]) == len(cross)
    assert spec["Base period"] == "n/a"
