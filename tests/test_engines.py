"""Engine parity: stage (a) of the survey estimator on pandas, DuckDB (Parquet) and Spark.

Planted truth = the in-memory pandas path (survey.grouped_sums / survey.ratio, itself tested
against R survey and samplics in test_survey.py); every other engine must give the same table
and the same estimates to relative tolerance 1e-9.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from msme_eval import disclosure, engines, survey, synth

duckdb = pytest.importorskip("duckdb")

RTOL = 1e-9
DESIGNS = {
    "stratified-cluster": dict(weight="weight", strata="strata", psu="psu"),
    "stratified-rows": dict(weight="weight", strata="strata", psu=None),
    "srs-unweighted": dict(weight=None, strata=None, psu=None),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict:
    panel = synth.generate(n_firms=3000, seed=3, missing=0.05).panel
    root = tmp_path_factory.mktemp("engines")
    path = root / "panel.parquet"
    panel.to_parquet(path, index=False)
    part = root / "panel_by_country_year"
    pads.write_dataset(pa.Table.from_pandas(panel, preserve_index=False), part,
                       format="parquet", partitioning=["country", "year"],
                       partitioning_flavor="hive")
    return {"panel": panel, "path": path, "dir": part}


def _norm(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Keys as text (category/boolean/int read back from Parquet may change dtype), sorted."""
    out = frame.copy()
    for k in keys:
        out[k] = out[k].astype("str")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> None:
    a, b = _norm(a, keys), _norm(b, keys)
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    for c in a.columns:
        if c in keys:
            continue
        if not pd.api.types.is_numeric_dtype(a[c]):  # e.g. df_rule
            assert a[c].tolist() == b[c].tolist(), c
            continue
        x, y = a[c].to_numpy(dtype=float), b[c].to_numpy(dtype=float)
        np.testing.assert_allclose(y, x, rtol=RTOL, atol=0, equal_nan=True, err_msg=c)


def _table_keys(table: pd.DataFrame) -> list[str]:
    return [*table.attrs["by"], "__stratum__"] + (
        ["__psu__"] if "__psu__" in table.columns else []) + ["__excluded__"]


# --------------------------------------------------------------------------------------------
# engine choice
# --------------------------------------------------------------------------------------------
def test_engine_of(sample: dict) -> None:
    assert engines.engine_of(sample["panel"]) == "pandas"
    assert engines.engine_of(str(sample["path"])) == "duckdb"
    assert engines.engine_of(sample["dir"]) == "duckdb"
    assert engines.engine_of(engines.scan_parquet(sample["path"])) == "duckdb"
    with pytest.raises(TypeError, match="cannot estimate"):
        engines.engine_of([1, 2, 3])


# --------------------------------------------------------------------------------------------
# DuckDB over Parquet vs pandas
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("by", [["country", "year"], ["country", "year", "size_class"],
                                ["country", "urban"], None])
def test_duckdb_grouped_sums_match_pandas(sample: dict, design: str, by: list[str] | None
                                          ) -> None:
    cols = {"turnover": "turnover", "employees": "employees", "online": "sells_online",
            "one": None}
    kw = dict(DESIGNS[design], by=by, na_rm=True)
    ref = survey.grouped_sums(sample["panel"], cols, **kw)
    got = engines.grouped_sums(sample["path"], cols, **kw)
    assert got.attrs == ref.attrs
    assert got["__excluded__"].any()  # missing items were planted
    _assert_same(ref, got, _table_keys(ref))
    # and the estimates of stage (b)
    t_ref = survey.totals_from_sums(ref, singleton="centre")
    t_got = survey.totals_from_sums(got, singleton="centre")
    keys = list(t_ref.keys.columns)
    a = pd.concat([t_ref.keys, t_ref.estimate], axis=1)
    b = pd.concat([t_got.keys, t_got.estimate], axis=1)
    _assert_same(a, b, keys)
    order_a = _norm(t_ref.keys.assign(i=range(len(t_ref.keys))), keys)["i"].to_numpy()
    order_b = _norm(t_got.keys.assign(i=range(len(t_got.keys))), keys)["i"].to_numpy()
    np.testing.assert_allclose(t_got.cov[order_b], t_ref.cov[order_a], rtol=RTOL,
                               atol=1e-12 * np.abs(t_ref.cov).max())


def test_pandas_table_rows_are_sorted(sample: dict) -> None:
    got = engines.grouped_sums(sample["path"], ["turnover"], weight="weight",
                               strata="strata", psu="psu", by="country", na_rm=True, sort=True)
    keys = _table_keys(got)
    resorted = got.sort_values(["__excluded__", *keys[:-1]], kind="stable")
    assert (resorted.index == got.index).all()


@pytest.mark.parametrize("source", ["path", "dir", "glob", "relation"])
def test_duckdb_ratio_matches_pandas_on_every_source(sample: dict, source: str) -> None:
    data = {"path": sample["path"], "dir": sample["dir"],
            "glob": str(sample["dir"]) + "/**/*.parquet",
            "relation": engines.scan_parquet(sample["path"])}[source]
    kw = dict(weight="weight", strata="strata", psu="psu", by=["country", "year"], na_rm=True)
    ref = survey.ratio(sample["panel"], "value_added", "employees", **kw)
    got = survey.ratio(data, "value_added", "employees", **kw)
    _assert_same(ref, got, ["country", "year"])
    assert {**got.attrs["design"], "engine": "pandas"} == ref.attrs["design"]
    assert got.choices["engine"] == "duckdb" and ref.choices["engine"] == "pandas"


def test_duckdb_means_totals_and_delta_match_pandas(sample: dict) -> None:
    panel, path = sample["panel"], sample["path"]
    kw = dict(weight="weight", strata="strata", psu="psu", na_rm=True)
    # proportion of a nullable boolean, by a domain with missing labels (excluded rows)
    ref = survey.ratio(panel, "sells_online", by=["country", "programme_type"], **kw)
    got = survey.ratio(path, "sells_online", by=["country", "programme_type"], **kw)
    _assert_same(ref, got, ["country", "programme_type"])
    ref = survey.total(panel, "exports", by="year", **kw)
    got = survey.total(path, "exports", by="year", **kw)
    _assert_same(ref, got, ["year"])
    # K04-like ratio of two ratios through survey.delta
    cols = {"A": "value_added", "B": "employees", "C": "turnover", "D": "assets"}

    def f(t: np.ndarray) -> np.ndarray:
        return (t[:, 0] / t[:, 1]) / (t[:, 2] / t[:, 3])

    def g(t: np.ndarray) -> np.ndarray:
        return f(t)[:, None] * np.column_stack([1 / t[:, 0], -1 / t[:, 1], -1 / t[:, 2],
                                                1 / t[:, 3]])

    ref = survey.delta(survey.totals(panel, cols, by="country", **kw), f, g)
    got = survey.delta(survey.totals(path, cols, by="country", **kw), f, g)
    _assert_same(ref, got, ["country"])


def test_duckdb_on_pandas_input_matches_pandas(sample: dict) -> None:
    """engine='duckdb' on an in-memory DataFrame runs the SQL path on the same rows."""
    kw = dict(weight="weight", strata="strata", psu="psu", by=["country", "sector"], na_rm=True)
    ref = survey.grouped_sums(sample["panel"], ["loans_outstanding"], **kw)
    got = engines.grouped_sums(sample["panel"], ["loans_outstanding"], engine="duckdb", **kw)
    _assert_same(ref, got, _table_keys(ref))


def test_nan_in_parquet_counts_as_missing(tmp_path) -> None:
    """Parquet written by other tools may hold NaN (not NULL): treated as missing, like pandas."""
    frame = pd.DataFrame({"y": [1.0, np.nan, 3.0, 4.0], "g": ["a", "a", "b", "b"],
                          "w": [1.0, 2.0, 3.0, 4.0]})
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).set_column(
        0, "y", pa.array([1.0, float("nan"), 3.0, 4.0], from_pandas=False)), path)
    assert pq.read_table(path).column("y").null_count == 0  # a real NaN on disk
    got = survey.ratio(path, "y", weight="w", by="g", na_rm=True)
    # hand-computed: a: (1*1)/1 = 1; b: (3*3 + 4*4)/(3 + 4) = 25/7
    np.testing.assert_allclose(got["estimate"], [1.0, 25 / 7], rtol=1e-15)
    assert got["n"].tolist() == [1, 2]
    with pytest.raises(survey.SurveyDesignError, match=r"column 'y' is missing in 1 row\(s\) "
                                                        r"\(nan.parquet row 1"):
        survey.ratio(path, "y", weight="w", by="g")


# --------------------------------------------------------------------------------------------
# errors are as clear as on the pandas path
# --------------------------------------------------------------------------------------------
def test_duckdb_errors_name_file_rows(tmp_path) -> None:
    frame = pd.DataFrame({"y": [1.0, 2.0, 3.0], "w": [1.0, 0.0, 2.0], "s": ["x", "y", "z"],
                          "h": ["a", None, "b"]})
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(survey.SurveyDesignError, match=r"weight column 'w' is <= 0 in 1 "
                                                        r"row\(s\) \(bad.parquet row 1"):
        survey.total(path, "y", weight="w")
    inf = tmp_path / "inf.parquet"
    frame.assign(y=[1.0, np.inf, 3.0], w=[1.0, 1.0, np.inf]).to_parquet(inf, index=False)
    with pytest.raises(survey.SurveyDesignError, match=r"column 'y' has infinite values in 1 "
                                                        r"row\(s\) \(inf.parquet row 1"):
        survey.total(inf, "y", weight="w")
    with pytest.raises(survey.SurveyDesignError, match=r"weight column 'w' is missing or "
                                                        r"infinite in 1 row\(s\), e.g.\n"):
        survey.total(frame.assign(w=[1.0, 1.0, np.inf]), "y", weight="w", engine="duckdb")
    with pytest.raises(survey.SurveyDesignError, match="strata column 'h' is missing"):
        survey.total(path, "y", strata="h")
    with pytest.raises(TypeError, match="not numeric or boolean"):
        survey.total(path, "s")
    with pytest.raises(KeyError, match=r"\['nope'\] not found"):
        survey.total(path, "nope")
    with pytest.raises(TypeError, match="SQL engines need column names"):
        survey.totals(path, {"y": np.ones(3)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        survey.total(tmp_path / "absent.parquet", "y")


# --------------------------------------------------------------------------------------------
# disclosure magnitudes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,by,contributor", [
    ("turnover", ["country", "year", "sector"], "firm_id"),
    ("employees", ["country", "programme_type"], "firm_id"),
    (None, ["country", "year"], "firm_id"),
    ("exports", None, None),
])
def test_duckdb_cell_stats_match_pandas(sample: dict, value, by, contributor) -> None:
    ref = disclosure.cell_stats(sample["panel"], value, by, contributor=contributor)
    got = disclosure.cell_stats(sample["path"], value, by, contributor=contributor)
    keys = list(by or [])
    if keys:
        _assert_same(ref, got, keys)
    else:
        np.testing.assert_allclose(got.to_numpy(float), ref.to_numpy(float), rtol=RTOL)


def test_cell_stats_hand_computed(tmp_path) -> None:
    frame = pd.DataFrame({"cell": ["a", "a", "a", "a", "b", "b", None],
                          "firm_id": ["f1", "f1", "f2", "f3", "f4", "f5", "f6"],
                          "v": [5.0, -1.0, -7.0, 0.0, np.nan, np.nan, 2.0]})
    path = tmp_path / "cells.parquet"
    frame.to_parquet(path, index=False)
    got = disclosure.cell_stats(path, "v", "cell")
    # a: f1 |5-1| = 4, f2 7, f3 0 (no contribution); b: all missing; NULL cell: 2
    assert got["cell"].isna().tolist() == [False, False, True]
    assert got["n_contrib"].tolist() == [2, 0, 1]
    assert got["top1"].tolist() == [7.0, 0.0, 2.0]
    assert got["top2"].tolist() == [4.0, 0.0, 0.0]
    assert got["total"].tolist() == [11.0, 0.0, 2.0]
    _assert_same(disclosure.cell_stats(frame, "v", "cell"), got, ["cell"])


# --------------------------------------------------------------------------------------------
# out of core: a Parquet input bigger than DuckDB's memory cap
# --------------------------------------------------------------------------------------------
def test_duckdb_completes_under_memory_cap(tmp_path) -> None:
    n, n_psu = 3_000_000, 100_000
    rng = np.random.default_rng(11)
    psu = rng.integers(0, n_psu, n)
    frame = pd.DataFrame({
        "strata": (psu % 50).astype(np.int64), "psu": psu, "region": psu % 7,
        "weight": rng.uniform(1, 50, n), "y": rng.normal(100, 30, n),
        "x": rng.uniform(1, 10, n), "z": rng.normal(0, 1, n),
    })
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, index=False, compression=None, row_group_size=250_000)
    cap_mb = 64
    assert os.path.getsize(path) > 1.5 * cap_mb * 2**20
    kw = dict(weight="weight", strata="strata", psu="psu", by="region")
    cols = ["y", "x", "z"]
    got = engines.grouped_sums(path, cols, memory_limit=f"{cap_mb}MB",
                               temp_directory=tmp_path / "spill", **kw)
    assert len(got) == n_psu
    ref = survey.grouped_sums(frame, cols, **kw)
    _assert_same(ref, got, _table_keys(ref))


def test_indicators_compute_completes_under_memory_cap(tmp_path) -> None:
    """Indicators with a breakdown, DuckDB over a Parquet panel bigger than the cap: the same
    table as in memory. Rows stream (and the next-year self-join spills); what must fit is
    the PSU-total state, PSU-periods x groups x part columns (here ~3,200 PSUs x 11 periods x
    4 groups x 4 indicators' parts: the four include the self-join ones, O03 and O04)."""
    from msme_eval import indicators, synth

    data = synth.generate(n_firms=80_000, years=range(2015, 2025), seed=3)
    path = tmp_path / "panel.parquet"
    data.panel.to_parquet(path, index=False)
    cap_mb = 64
    assert data.panel.memory_usage(deep=True).sum() > 1.5 * cap_mb * 2**20  # the loaded panel
    con = engines.connect(memory_limit=f"{cap_mb}MB", temp_directory=tmp_path / "spill")
    kw = dict(breakdowns=["size_class"], disclosure=False, indicators=["K01", "K02", "O03", "O04"])
    got = indicators.compute(str(path), data.macro, engine="duckdb", con=con, **kw)
    want = indicators.compute(data.panel, data.macro, **kw)
    assert len(got) == len(want) > 1000
    for col in ("value", "se", "n"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)
    assert got["obs_status"].tolist() == want["obs_status"].tolist()


# --------------------------------------------------------------------------------------------
# Spark (local[1]); skipped with the reason when pyspark or Java is missing
# --------------------------------------------------------------------------------------------
def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401  (availability check only)
    except ImportError:
        return "pyspark is not installed (pip install 'msme-eval[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not (shutil.which("java") or (java_home and os.path.exists(
            os.path.join(java_home, "bin", "java")))):
        return "Java (17+) is not on PATH or JAVA_HOME; pyspark needs a JVM"
    return None


@pytest.fixture(scope="module")
def spark():
    reason = _spark_missing()
    if reason:
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("msme-eval-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.memory", "512m").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_matches_pandas(spark, sample: dict) -> None:
    sdf = spark.read.parquet(str(sample["path"]))
    assert engines.engine_of(sdf) == "spark"
    panel = sample["panel"]
    kw = dict(weight="weight", strata="strata", psu="psu", by=["country", "year"], na_rm=True)
    cols = {"turnover": "turnover", "employees": "employees", "online": "sells_online"}
    ref = survey.grouped_sums(panel, cols, **kw)
    got = engines.grouped_sums(sdf, cols, **kw)
    assert got.attrs == ref.attrs
    _assert_same(ref, got, _table_keys(ref))
    for num, den in (("turnover", "employees"), ("sells_online", None)):
        _assert_same(survey.ratio(panel, num, den, **kw), survey.ratio(sdf, num, den, **kw),
                     ["country", "year"])
    rows = dict(weight="weight", strata="strata", by=["country", "programme_type"], na_rm=True)
    _assert_same(survey.total(panel, "exports", **rows), survey.total(sdf, "exports", **rows),
                 ["country", "programme_type"])


def test_spark_cell_stats_and_errors(spark, sample: dict) -> None:
    sdf = spark.read.parquet(str(sample["path"]))
    for value, by in (("turnover", ["country", "year", "sector"]),
                      ("employees", ["country", "programme_type"])):
        _assert_same(disclosure.cell_stats(sample["panel"], value, by),
                     disclosure.cell_stats(sdf, value, by), by)
    with pytest.raises(survey.SurveyDesignError, match="column 'turnover' is missing in"):
        survey.total(sdf, "turnover", weight="weight")
    with pytest.raises(TypeError, match="not numeric or boolean"):
        survey.total(sdf, "sector")


def test_spark_nan_counts_as_missing(spark, tmp_path) -> None:
    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"y": pa.array([1.0, float("nan"), 3.0, 4.0], from_pandas=False),
                             "g": ["a", "a", "b", "b"], "w": [1.0, 2.0, 3.0, 4.0]}), path)
    got = survey.ratio(spark.read.parquet(str(path)), "y", weight="w", by="g", na_rm=True)
    np.testing.assert_allclose(got["estimate"], [1.0, 25 / 7], rtol=1e-15)


def test_polars_frames_run_on_duckdb(sample: dict) -> None:
    pl = pytest.importorskip("polars")
    kw = dict(weight="weight", strata="strata", psu="psu", by=["country", "year"], na_rm=True)
    ref = survey.ratio(sample["panel"], "turnover", "employees", **kw)
    for frame in (pl.scan_parquet(sample["path"]), pl.read_parquet(sample["path"])):
        assert engines.engine_of(frame) == "duckdb"
        _assert_same(ref, survey.ratio(frame, "turnover", "employees", **kw),
                     ["country", "year"])


# --------------------------------------------------------------------------------------------
# synthetic data at scale: chunked, partitioned, deterministic
# --------------------------------------------------------------------------------------------
def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_write_partitioned_is_deterministic_and_consistent(tmp_path) -> None:
    paths = synth.write_partitioned(tmp_path / "a", 3000, chunk_firms=1000, seed=7)
    again = synth.write_partitioned(tmp_path / "b", 3000, chunk_firms=1000, seed=7)
    files = _files(paths["panel"])
    assert files == _files(again["panel"])  # byte-identical
    plan = synth.chunk_plan(3000, 1000, 7)
    assert plan["n_firms"].tolist() == [1000, 1000, 1000] and plan["seed"].iloc[0] == 7
    assert synth.chunk_plan(2500, 1000, 7)["n_firms"].tolist() == [1250, 1250]  # >= 1000 each
    # one file per country-year, holding only that country-year
    assert len(files) == 10 * 10
    panel = duckdb.sql(f"SELECT * FROM read_parquet('{paths['panel']}/**/*.parquet', "
                       "hive_partitioning = true)").df()
    manifest = __import__("json").loads(paths["manifest"].read_text())
    assert manifest["n_rows"] == len(panel) and manifest["chunk_firms"] == 1000
    assert not panel.duplicated(["firm_id", "year"]).any()
    # union of 3 independent samples; weights still sum to the population N_h per stratum-year
    ref = synth.generate(n_firms=1000, seed=7).panel
    got_n = panel.groupby(["strata", "year"])["weight"].sum()
    ref_n = ref.groupby(["strata", "year"])["weight"].sum()
    np.testing.assert_allclose(got_n.sort_index().to_numpy(), ref_n.sort_index().to_numpy(),
                               rtol=1e-12)
    # chunk 0 is generate(800, seed=7) with chunk labels and weights x 1/3
    c0 = panel[panel["firm_id"].str.slice(3, 8) == "0000-"]
    c0 = c0.sort_values(["firm_id", "year"]).reset_index(drop=True)
    r0 = ref.assign(firm_id=ref["firm_id"].str.slice(0, 3) + "0000-" + ref["firm_id"].str.slice(3))
    r0 = r0.sort_values(["firm_id", "year"]).reset_index(drop=True)
    assert c0["firm_id"].tolist() == r0["firm_id"].tolist()
    np.testing.assert_allclose(c0["weight"], r0["weight"] / 3, rtol=1e-12)
    np.testing.assert_array_equal(c0["turnover"], r0["turnover"])
    assert (c0["psu"] == r0["psu"] + "-k0000").all()


def test_write_partitioned_single_chunk_equals_generate(tmp_path) -> None:
    paths = synth.write_partitioned(tmp_path, 1200, chunk_firms=5000, seed=2)
    ref = synth.generate(n_firms=1200, seed=2).panel
    got = pd.read_parquet(paths["panel"])
    got["country"] = got["country"].astype("str")
    got["year"] = got["year"].astype("int64")
    key = ["firm_id", "year"]
    got = got[list(ref.columns)].sort_values(key).reset_index(drop=True)
    ref = ref.sort_values(key).reset_index(drop=True)
    for col in ref.columns:
        pd.testing.assert_series_equal(got[col].astype("str"), ref[col].astype("str"))
    with pytest.raises(ValueError, match="chunk_firms=500 must be >= 1000"):
        synth.write_partitioned(tmp_path, 5000, chunk_firms=500)


def test_to_pandas_restores_contract_dtypes(sample: dict) -> None:
    panel = sample["panel"]
    cols = ["firm_id", "country", "year", "size_class", "owner_female", "sells_online",
            "birth_year", "first_treated", "turnover"]
    assert set(cols) <= set(engines.columns_of(sample["dir"]))
    got = engines.to_pandas(sample["dir"], cols)
    assert got["size_class"].dtype == panel["size_class"].dtype
    assert str(got["sells_online"].dtype) == "boolean"
    assert str(got["first_treated"].dtype) == "Int64"
    key = ["firm_id", "year"]
    got = got.sort_values(key).reset_index(drop=True)
    ref = panel[cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, ref, check_dtype=False)


def test_indicators_compute_from_parquet_equals_in_memory(tmp_path):
    """indicators.compute reads a Parquet path through the engine layer; same rows, same numbers."""
    import msme_eval as me

    d = me.synth.generate(n_firms=2000, seed=3)
    path = tmp_path / "panel.parquet"
    d.panel.to_parquet(path)
    a = me.indicators.compute(d.panel, d.macro, breakdowns=["owner_female"])
    b = me.indicators.compute(str(path), d.macro, breakdowns=["owner_female"])
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float),
                               rtol=1e-9, equal_nan=True)
    assert (a["conf_status"].fillna("") == b["conf_status"].fillna("")).all()


@pytest.mark.parametrize("psu", ["psu", None])
def test_duckdb_calibrated_and_satterthwaite_match_pandas(sample: dict, psu) -> None:
    # the calibration sums (w, and w2*y, w2 when rows are the PSUs) come from the same SQL pass
    kw = dict(weight="weight", strata="strata", psu=psu, by="country", na_rm=True,
              calibrated_to="strata")
    ref = survey.ratio(sample["panel"], "exports", "turnover", **kw)
    got = survey.ratio(sample["path"], "exports", "turnover", **kw)
    _assert_same(ref, got, ["country"])
    assert (ref["df_rule"] == "satterthwaite").all()
    assert (ref["df"] < ref["df_nominal"]).any()


def _record_buckets(monkeypatch) -> list[list[str]]:
    """Patch ``_sql._buckets`` to keep the buckets (lists of Parquet files) it returns."""
    from msme_eval.indicators import _sql

    seen: list[list[str]] = []
    real = _sql._buckets

    def spy(folder: str, rows: float) -> tuple[list[list[str]], int]:
        out, total = real(folder, rows)
        seen.extend(out)
        return out, total

    monkeypatch.setattr(_sql, "_buckets", spy)
    return seen


def _bucket_keys(files: list[str]) -> pd.DataFrame:
    """(country, stratum, PSU) keys and row count of one bucket (read while it exists)."""
    return engines.read_partition(files).select(["a", "h", "p"]).to_pandas()


@pytest.mark.parametrize("psu", ["psu", None])
@pytest.mark.parametrize("mode", ["fine", "table", "bucket", "buckets"])
def test_indicators_sql_stage_matches_pandas(sample: dict, monkeypatch, mode, psu) -> None:
    """Every registry indicator (the year-to-year ones included), three breakdowns, 5 % item
    non-response: the SQL stage (a) gives the pandas rows to 1e-9 whichever way its PSU totals
    go (``FETCH_LIMIT`` against their sizes: the finest key fetched and rolled up in numpy;
    kept in DuckDB and fetched as it has few rows after all; or written out of DuckDB as
    Arrow files partitioned by PSU and read back in one bucket, or in several buckets of at most
    ``BUCKET_ROWS`` rows, each stratum split across buckets),
    with PSUs or with the firm as the PSU."""
    from msme_eval import indicators
    from msme_eval.indicators import _sql

    panel = sample["panel"]
    n_psu = panel.groupby(["country", "strata", psu or "firm_id"]).ngroups
    psu_periods = n_psu * (panel["year"].nunique() + 1)
    sizes = [panel[b].nunique() + 1 for b in ("size_class", "owner_female", "sector")]
    # fine rows: (country, stratum, PSU, period, group of each breakdown)
    fine_keys = ["country", "strata", psu or "firm_id", "year", "size_class", "owner_female",
                 "sector"]
    n_fine = panel.groupby(fine_keys, dropna=False, observed=True).ngroups
    largest = panel.groupby(fine_keys, dropna=False, observed=True).size().groupby(
        level=[0, 1]).size().max()  # fine rows of the largest stratum
    # fine rows x 2 (the year-to-year parts are shifted copies) <= limit < the bound
    limit = {"fine": psu_periods * np.prod(sizes), "table": 2 * n_fine, "bucket": 2 * n_fine - 1,
             "buckets": 0}[mode]
    assert psu_periods * np.prod(sizes) > 2 * n_fine
    monkeypatch.setattr(_sql, "FETCH_LIMIT", limit)
    if mode == "buckets":
        # rows counted with the shifted copies (x 2): a bucket holds half the fine rows of
        # the largest stratum, so that stratum alone is larger than a bucket
        monkeypatch.setattr(_sql, "BUCKET_ROWS", int(largest))
    seen = _record_buckets(monkeypatch)
    keys: list[pd.DataFrame] = []
    real_read = _sql._read_bucket
    monkeypatch.setattr(_sql, "_read_bucket",
                        lambda files: (keys.append(_bucket_keys(files)), real_read(files))[1])
    design = ("weight", "strata", psu) if psu else ("weight", "strata")
    kw = dict(breakdowns=["size_class", "owner_female", "sector"], disclosure=False,
              design=design, singleton="centre")
    want = indicators.compute(sample["panel"], **kw)
    got = indicators.compute(str(sample["dir"]), engine="duckdb", **kw)
    assert len(seen) == {"fine": 0, "table": 0, "bucket": 1, "buckets": len(seen)}[mode]
    if mode == "buckets":  # several buckets; strata split across them, a PSU in one only
        assert len(seen) >= 3 and sum(len(k) for k in keys) == n_fine
        per = pd.concat([k.drop_duplicates().assign(b=j) for j, k in enumerate(keys)])
        assert per.groupby(["a", "h"])["b"].nunique().max() > 1
        assert per.groupby(["a", "h", "p"])["b"].nunique().max() == 1
    assert len(got) == len(want) > 1000
    text = ["indicator", "ref_area", "breakdown", "group", "obs_status", "comment", "df_rule"]
    for col in text:
        assert got[col].fillna("").tolist() == want[col].fillna("").tolist(), col
    # a value or SE that is 0 in exact arithmetic (a net-jobs total, a one-PSU cell) is a
    # rounding residue on either engine: absolute tolerance 1e-12 of the indicator's largest
    # value; the Satterthwaite df of a zero SE (0/0) is compared only where the SE is not 0
    scale = want["value"].abs().groupby(want["indicator"]).transform("max").to_numpy(float)
    real = want["se"].to_numpy(float) > 1e-9 * scale
    for col in ("value", "se", "ci_low", "ci_high", "df", "n", "n_psu", "df_nominal"):
        a, b = got[col].to_numpy(float), want[col].to_numpy(float)
        atol = 1e-12 * scale if col in ("value", "se", "ci_low", "ci_high") else 0.0
        if col == "df":
            a, b = a[real], b[real]
        ok = np.where(np.isnan(b), np.isnan(a), np.abs(a - b) <= RTOL * np.abs(b) + atol)
        assert ok.all(), (col, got.loc[~ok, ["indicator", "ref_area", "group", col]].head(),
                          b[~ok][:5])
    assert got["se"].notna().sum() > 500


def test_indicators_sql_stage_refuses_missing_design(sample: dict, tmp_path) -> None:
    """A missing stratum or a weight <= 0 in the Parquet panel: a clear error naming the
    column and the count of rows (found by the one design scan), not a silent drop."""
    from msme_eval import indicators

    panel = sample["panel"].copy()
    panel.loc[panel.index[:3], "strata"] = None
    panel.to_parquet(tmp_path / "s.parquet", index=False)
    with pytest.raises(ValueError, match=r"strata column 'strata' is missing in 3 rows"):
        indicators.compute(str(tmp_path / "s.parquet"), indicators=["K01"], disclosure=False)
    panel = sample["panel"].copy()
    panel.loc[panel.index[5], "weight"] = 0.0
    panel.to_parquet(tmp_path / "w.parquet", index=False)
    with pytest.raises(ValueError, match=r"weight column 'weight' .* <= 0 in 1 rows"):
        indicators.compute(str(tmp_path / "w.parquet"), indicators=["K01"], disclosure=False)


def test_indicators_sql_stage_with_a_gap_in_the_years(sample: dict, tmp_path) -> None:
    """Years with a gap (no 2018): periods are the years present, survival needs year t+1
    in the panel; DuckDB gives the pandas rows (the period code is a lookup, not year - y0)."""
    from msme_eval import indicators

    panel = sample["panel"][sample["panel"]["year"] != 2018].reset_index(drop=True)
    panel.to_parquet(tmp_path / "gap.parquet", index=False)
    kw = dict(indicators=["K01", "K05", "O03", "O04"], breakdowns=["urban"], disclosure=False,
              singleton="centre")
    want = indicators.compute(panel, **kw)
    got = indicators.compute(str(tmp_path / "gap.parquet"), **kw)
    assert 2018 not in set(want["time_period"]) and len(got) == len(want) > 100
    assert got["comment"].fillna("").tolist() == want["comment"].fillna("").tolist()
    np.testing.assert_allclose(got["value"].to_numpy(float), want["value"].to_numpy(float),
                               rtol=RTOL, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(got["se"].to_numpy(float), want["se"].to_numpy(float),
                               rtol=RTOL, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("limit", [None, 0])
def test_spark_indicators_match_pandas(spark, sample: dict, monkeypatch, limit) -> None:
    """The SQL stage (a) on Spark: PSU totals fetched with ``toArrow`` (default) or bucketed
    (``FETCH_LIMIT`` 0: written by Spark as Parquet partitioned by PSU hash, read back in
    several buckets of ``BUCKET_ROWS``); the pandas rows."""
    from msme_eval import indicators
    from msme_eval.indicators import _sql

    seen = _record_buckets(monkeypatch)
    if limit is not None:
        monkeypatch.setattr(_sql, "FETCH_LIMIT", limit)
        monkeypatch.setattr(_sql, "BUCKET_ROWS", 1000)
    # BRN's and THA's large-firm strata declared take-all (certainty): no variance, no df
    kw = dict(indicators=["K01", "K05", "K07", "O03"], breakdowns=["owner_female", "size_class"],
              disclosure=False, singleton="centre", certainty=["BRN-large", "THA|THA-large"])
    want = indicators.compute(sample["panel"], **kw)
    got = indicators.compute(spark.read.parquet(str(sample["path"])), engine="spark", **kw)
    assert (len(seen) >= 3) if limit is not None else not seen, len(seen)
    assert len(got) == len(want) > 500
    assert got["obs_status"].tolist() == want["obs_status"].tolist()
    assert got.choices["certainty"] == want.choices["certainty"] == ["BRN|BRN-large",
                                                                      "THA|THA-large"]
    plain = indicators.compute(sample["panel"], **{**kw, "certainty": None})
    assert (want["df_nominal"] <= plain["df_nominal"]).all()
    assert (want["df_nominal"] < plain["df_nominal"])[want["ref_area"] == "BRN"].all()
    for col in ("value", "se", "n", "df", "df_nominal"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=RTOL, atol=1e-10, equal_nan=True, err_msg=col)


def test_duckdb_write_partitioned_round_trip(tmp_path) -> None:
    """``write_partitioned`` (DuckDB: record batches streamed into Arrow IPC files, more rows
    than one batch) puts every row in the folder of its key, once; ``partition_rows`` and
    ``read_partition`` read them back (the key column not stored)."""
    n = (1 << 18) + 12345  # two record batches
    frame = pd.DataFrame({"k": np.arange(n) % 7, "x": np.arange(n, dtype=float)})
    run = engines.runner(frame, "duckdb")
    run.write_partitioned("SELECT x, CAST(k AS INTEGER) AS bk FROM __src__", str(tmp_path), "bk")
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [f"bk={j}" for j in range(7)]
    total = 0
    for j in range(7):
        files = [str(f) for f in (tmp_path / f"bk={j}").iterdir()]
        tab = engines.read_partition(files)
        assert tab.column_names == ["x"]
        x = np.sort(tab.column("x").to_numpy())
        np.testing.assert_array_equal(x, np.arange(j, n, 7, dtype=float))
        assert sum(engines.partition_rows(f) for f in files) == len(x)
        total += len(x)
    assert total == n


def test_indicators_bucket_files_removed(sample: dict, monkeypatch, tmp_path) -> None:
    """The bucketed path's temporary files go when compute ends, and when it fails midway."""
    import tempfile

    from msme_eval import indicators
    from msme_eval.indicators import _sql

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_sql, "FETCH_LIMIT", 0)
    monkeypatch.setattr(_sql, "BUCKET_ROWS", 2000)
    kw = dict(indicators=["K01", "O03"], breakdowns=["owner_female"], disclosure=False)
    seen = _record_buckets(monkeypatch)
    out = indicators.compute(str(sample["path"]), engine="duckdb", **kw)
    assert len(seen) >= 3 and out["se"].notna().sum() > 10
    assert list(tmp_path.iterdir()) == []

    def fail(files: list[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_sql, "_read_bucket", fail)
    with pytest.raises(OSError, match="disk full"):
        indicators.compute(str(sample["path"]), engine="duckdb", **kw)
    assert list(tmp_path.iterdir()) == []


def test_indicators_bucket_rows_lost_is_an_error(sample: dict, monkeypatch, tmp_path) -> None:
    """If fewer PSU-total rows come back from the temporary folder than the engine wrote (a
    Spark cluster whose executors write to their own disks), compute stops with the fix
    instead of publishing estimates from part of the data; no file is left behind."""
    import tempfile

    from msme_eval import engines, indicators
    from msme_eval.indicators import _sql

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(_sql, "FETCH_LIMIT", 0)
    monkeypatch.setattr(_sql, "BUCKET_ROWS", 2000)
    write = engines._DuckRunner.write_partitioned

    def write_then_lose_one(self, sql: str, folder: str, partition_by: str) -> None:
        write(self, sql, folder, partition_by)
        next(iter(sorted(Path(folder).glob("bk=*/*")))).unlink()

    monkeypatch.setattr(engines._DuckRunner, "write_partitioned", write_then_lose_one)
    with pytest.raises(RuntimeError, match="rows of PSU totals came back.*TMPDIR"):
        indicators.compute(str(sample["path"]), engine="duckdb", indicators=["K01"],
                           breakdowns=["owner_female"], disclosure=False)
    assert list(tmp_path.iterdir()) == []
