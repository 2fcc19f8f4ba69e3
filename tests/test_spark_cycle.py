"""The cycle's indicator engine (pandas / duckdb / spark) and the Spark session from the
environment (msme_eval.spark).

The parity tests run the *same* path a report uses (`NotebookContext.indicators` and the
runner's shared cache, `report.context.build_cache`) with engine=duckdb and engine=spark and
compare every number with engine=pandas at relative tolerance 1e-9. Spark runs for real, in
local mode (pyspark 4 is part of the `test` extra; .ci/run installs Java 17 when missing).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import msme_eval as me
from msme_eval import cli, cycle, spark
from msme_eval.cycle import CycleError, CycleParams, NotebookParams, load_params
from msme_eval.report import context as rc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "raw" / "sample"
SPARK_ENV = (spark.ENV_MASTER, spark.ENV_CONF, spark.ENV_REMOTE)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The embedded sample of `make data` (data/raw/sample); generated when it is absent."""
    if (SAMPLE / "panel.parquet").is_file():
        return {k: SAMPLE / f"{k}.{ext}" for k, ext in
                (("panel", "parquet"), ("macro", "csv"), ("targets", "csv"))}
    out = tmp_path_factory.mktemp("sample")
    data = me.synth.generate(n_firms=3000, years=range(2015, 2025), seed=0)
    return me.synth.write_sample(out, data)


@pytest.fixture(scope="module")
def small(small_sample: dict[str, Path]) -> dict[str, Path]:
    return small_sample


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in SPARK_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def needs_spark():
    reason = spark.available({})
    if reason:
        pytest.skip(f"Spark engine not testable here: {reason}")
    yield
    _stop_active()


def _stop_active() -> None:
    if spark.available({}) is None:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


def _side(paths: dict[str, Path]) -> dict[str, str]:
    """macro and targets of a sample (the defaults need `make data`)."""
    return {"macro": str(paths["macro"]), "targets": str(paths["targets"])}


def _nb_params(paths: dict[str, Path], engine: str, **kw: object) -> NotebookParams:
    return NotebookParams.model_validate(dict(
        cycle="t", panel=str(paths["panel"]), macro=str(paths["macro"]), targets=None,
        engine=engine, **kw))


def _assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every column equal; floats to 1e-9 relative (the engines add in different orders), or
    1e-12 absolute for values that are 0 up to rounding (e.g. a progress rate of 0.0)."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True),
                                  check_exact=False, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("bad", ["polars", "Spark", "", 1])
def test_unknown_engine_is_rejected(small: dict[str, Path], tmp_path: Path, bad: object) -> None:
    with pytest.raises(CycleError) as err:
        load_params(panel=str(small["panel"]), output_root=str(tmp_path / "r"), engine=bad,
                    **_side(small))
    assert "engine: Input should be 'pandas', 'duckdb' or 'spark'" in str(err.value)
    assert not (tmp_path / "r").exists()
    with pytest.raises(CycleError, match="engine: Input should be"):  # the notebook's check
        cycle.notebook_context({"cycle": "x", "panel": str(small["panel"]), "engine": bad,
                                **_side(small)}, set())


def test_engine_none_is_not_a_default(small: dict[str, Path], tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="engine"):
        CycleParams.model_validate({"panel": str(small["panel"]), "engine": None,
                                    "output_root": str(tmp_path), **_side(small)})


@pytest.mark.parametrize("engine", ["pandas", "duckdb", "spark"])
def test_engine_from_yaml_flag_and_notebook_params(small: dict[str, Path], tmp_path: Path,
                                                   engine: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f'cycle: "e"\npanel: {small["panel"]}\nmacro: null\ntargets: null\n'
                 f"engine: {engine}\n", encoding="utf-8")
    p = load_params(f)
    assert p.engine == engine
    assert load_params(f, engine="pandas").engine == "pandas"  # the flag overrides the file
    nbp = p.notebook_params("ASEAN")
    assert nbp["engine"] == engine  # injected into every notebook ...
    ns = {**nbp}
    ctx = cycle.notebook_context(ns, set())  # ... and re-checked there
    assert ctx.params.engine == engine
    assert CycleParams.model_validate({"panel": str(small["panel"]), **_side(small)}
                                      ).engine == "pandas"


def test_cli_engine_flag() -> None:
    a = cli._parser().parse_args(["run", "--engine", "spark"])
    assert a.engine == "spark"
    assert cli._parser().parse_args(["run"]).engine is None  # the YAML file's value is kept
    with pytest.raises(SystemExit) as ex:
        cli._parser().parse_args(["run", "--engine", "polars"])
    assert ex.value.code == 2


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_engine_needs_a_parquet_panel(small: dict[str, Path], tmp_path: Path, engine: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "panel.csv"
    pd.read_parquet(small["panel"]).to_csv(csv, index=False)
    assert load_params(panel=str(csv), engine="pandas", **_side(small)).panel == csv
    with pytest.raises(CycleError) as err:
        load_params(panel=str(csv), engine=engine, **_side(small))
    msg = str(err.value)
    assert f"engine {engine!r} reads the panel file itself and needs Parquet" in msg
    assert "msme-eval validate panel.csv" in msg
    # the command stops before anything runs: usage error, nothing published
    out = tmp_path / "reports"
    code = cli.main(["run", "--panel", str(csv), "--engine", engine, "--output-root", str(out),
                     "--macro", str(small["macro"]), "--targets", str(small["targets"])])
    assert code == 2 and "needs Parquet" in capsys.readouterr().err
    assert not out.exists()
    # a partitioned dataset folder is Parquet too
    folder = tmp_path / "ds" / "country=IDN"
    folder.mkdir(parents=True)
    pd.read_parquet(small["panel"]).head(10).to_parquet(folder / "part-0.parquet")
    ds = load_params(panel=str(tmp_path / "ds"), engine=engine, **_side(small))
    assert ds.engine == engine
    (tmp_path / "empty").mkdir()
    with pytest.raises(CycleError, match="needs Parquet"):
        load_params(panel=str(tmp_path / "empty"), engine=engine, **_side(small))


def test_missing_spark_stops_the_cycle_before_anything_runs(
        small: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(spark, "available",
                        lambda env=None: "pyspark is not installed. Fix: pip install x")
    params = load_params(panel=str(small["panel"]), macro=str(small["macro"]),
                         targets=str(small["targets"]), engine="spark",
                         output_root=str(tmp_path / "reports"))
    with pytest.raises(CycleError, match="engine 'spark' cannot run here: pyspark is not"):
        cycle.run(params, log=lambda s: None)
    assert not (tmp_path / "reports").exists()
    code = cli.main(["run", "--panel", str(small["panel"]), "--engine", "spark",
                     "--output-root", str(tmp_path / "reports"), "--macro", str(small["macro"]),
                     "--targets", str(small["targets"])])
    assert code == 2 and "pip install" in capsys.readouterr().err


# ------------------------------------------------------------------------------- msme_eval.spark
def test_settings_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    s = spark.settings()
    assert (s.master, s.remote, s.conf, s.local) == ("local[2]", None, {}, True)
    clean_env.setenv(spark.ENV_MASTER, "spark://head:7077")
    clean_env.setenv(spark.ENV_CONF, " spark.executor.memory=4g ; ;spark.x.opts=-Da=b=c ")
    s = spark.settings()
    assert s.master == "spark://head:7077" and not s.local
    assert s.conf == {"spark.executor.memory": "4g", "spark.x.opts": "-Da=b=c"}
    assert spark.describe(s) == "Spark master spark://head:7077"
    clean_env.setenv(spark.ENV_REMOTE, "sc://gw.example:15002/;token=SECRET123")
    s = spark.settings()
    assert s.remote == "sc://gw.example:15002/;token=SECRET123" and not s.local
    assert spark.describe(s) == "Spark Connect sc://gw.example:15002"  # no token
    clean_env.delenv(spark.ENV_REMOTE)
    clean_env.setenv(spark.ENV_MASTER, "sc://user:pw@gw:15002")
    assert spark.settings().remote == "sc://user:pw@gw:15002"
    assert "pw" not in spark.describe()
    assert spark.settings({spark.ENV_MASTER: "yarn"}).master == "yarn"  # explicit mapping


@pytest.mark.parametrize("text, problem", [
    ("spark.a=1;garbage", "item 2 is not key=value"),
    ("=hunter2", "item 1 is not key=value"),
    ("spark a=hunter2", "item 1 has an invalid key"),
    ("spark.a=1;spark.a=hunter2", "key 'spark.a' is given twice"),
])
def test_bad_conf_string_is_a_clear_error(clean_env: pytest.MonkeyPatch, text: str,
                                          problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        spark.parse_conf(text)
    assert "hunter2" not in str(err.value)  # values may be credentials: never echoed
    clean_env.setenv(spark.ENV_CONF, text)
    with pytest.raises(spark.SparkUnavailable) as err2:
        spark.session()  # refused before any JVM starts
    assert spark.ENV_CONF in str(err2.value) and problem in str(err2.value)
    assert "hunter2" not in str(err2.value)
    assert problem in (spark.available() or "")


def test_available_explains_what_is_missing(clean_env: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    clean_env.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "pyspark" else real(name, *a))
    assert "pip install 'msme-eval[spark]'" in (spark.available() or "")
    clean_env.setattr(importlib.util, "find_spec", real)
    if real("pyspark") is None:
        pytest.skip("pyspark not installed: the Java check is not reached")
    clean_env.delenv("JAVA_HOME", raising=False)
    clean_env.setenv("PATH", "/nonexistent")
    reason = spark.available()
    assert reason is not None and "Java (17+)" in reason and "openjdk-17" in reason
    with pytest.raises(spark.SparkUnavailable, match="Java"):
        spark.session()
    with pytest.raises(CycleError, match="engine 'spark' cannot run here: Java"):
        cycle.check_engine("spark")
    cycle.check_engine("pandas")  # never needs anything


def test_java_version_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    class R:
        stdout = ""

        def __init__(self, text: str) -> None:
            self.stderr = text

    for text, major in (('openjdk version "17.0.15" 2025-04-15', 17),
                        ('java version "1.8.0_392"', 8), ('openjdk version "21" 2023-09-19', 21),
                        ("garbage", None)):
        monkeypatch.setattr(subprocess, "run", lambda *a, _t=text, **k: R(_t))
        assert spark._java_version("java") == major


def test_session_honours_the_environment(needs_spark, clean_env: pytest.MonkeyPatch) -> None:
    from pyspark.sql import SparkSession

    _stop_active()  # static settings only apply to a new session
    clean_env.setenv(spark.ENV_MASTER, "local[1]")
    clean_env.setenv(spark.ENV_CONF, "spark.sql.shuffle.partitions=3;"
                                     "spark.msme.probe=a=b;spark.driver.memory=512m")
    with spark.scoped_session(app_name="msme-eval-probe") as s:
        assert s.sparkContext.master == "local[1]"
        assert s.sparkContext.appName == "msme-eval-probe"
        assert s.conf.get("spark.sql.shuffle.partitions") == "3"  # user value beats default
        assert s.conf.get("spark.msme.probe") == "a=b"
        assert s.sparkContext.getConf().get("spark.ui.enabled") == "false"  # local: UI off
        assert s.range(5).count() == 5
        assert spark.session() is s  # same process: the running session is reused
    assert SparkSession.getActiveSession() is None  # started by the scope -> stopped
    clean_env.delenv(spark.ENV_MASTER)
    clean_env.delenv(spark.ENV_CONF)
    s = spark.session()
    assert s.sparkContext.master == "local[2]"  # the default
    with spark.scoped_session() as s2:  # a session that was running is left alone
        assert s2 is s
    assert SparkSession.getActiveSession() is s


# ------------------------------------------------------------------------------- parity
@pytest.fixture(scope="module")
def pandas_indicators(sample: dict[str, Path]) -> pd.DataFrame:
    ctx = rc.NotebookContext(_nb_params(sample, "pandas"))
    table = ctx.indicators()
    assert table is not None and len(table) > 1000
    return table


def test_duckdb_engine_matches_pandas(sample: dict[str, Path],
                                      pandas_indicators: pd.DataFrame) -> None:
    ctx = rc.NotebookContext(_nb_params(sample, "duckdb"))
    table = ctx.indicators()
    assert "panel" not in ctx._memo  # the engine read the file; no pandas panel was loaded
    _assert_same_table(table, pandas_indicators)


def test_spark_engine_matches_pandas(needs_spark, clean_env: pytest.MonkeyPatch,
                                     sample: dict[str, Path],
                                     pandas_indicators: pd.DataFrame) -> None:
    seen = []
    real = spark.read_parquet
    clean_env.setattr(spark, "read_parquet",
                      lambda s, p: seen.append(type(real(s, p)).__module__) or real(s, p))
    ctx = rc.NotebookContext(_nb_params(sample, "spark"))
    table = ctx.indicators()
    assert seen and seen[0].startswith("pyspark.sql")  # indicators.compute got a Spark frame
    assert "panel" not in ctx._memo
    _assert_same_table(table, pandas_indicators)
    # progress (pandas, from the indicator table) is unchanged too
    targets = me.io.read_targets(sample["targets"])
    p_pd = _nb_params(sample, "pandas")
    want = rc.compute_progress(p_pd, pandas_indicators, targets)
    got = rc.compute_progress(p_pd, table, targets)
    _assert_same_table(got, want)


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_runner_cache_uses_the_engine(request: pytest.FixtureRequest, small: dict[str, Path],
                                      tmp_path: Path, engine: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """build_cache (the runner's shared step, what every notebook of a cycle reads) computes
    the indicators through the engine and keeps the validated pandas panel for the rest."""
    if engine == "spark":
        request.getfixturevalue("needs_spark")
    base = dict(panel=str(small["panel"]), macro=str(small["macro"]),
                targets=str(small["targets"]), output_root=str(tmp_path / "r"))
    sources: list[object] = []  # what indicators.compute was given
    real_compute = rc.indicators.compute
    monkeypatch.setattr(rc.indicators, "compute",
                        lambda source, *a, **k: (sources.append(source), real_compute(source, *a, **k))[1])
    tables = {}
    for eng in ("pandas", engine):
        cache = tmp_path / eng
        notes = rc.build_cache(CycleParams.model_validate({**base, "engine": eng}), cache)
        assert not [n for n in notes if "failed" in n], notes
        tables[eng] = pd.read_pickle(cache / "indicators.pkl")
        panel = pd.read_pickle(cache / "panel.pkl")
        assert isinstance(panel, pd.DataFrame) and len(panel) > 0
    assert isinstance(sources[0], pd.DataFrame)
    if engine == "duckdb":
        assert sources[1] == str(small["panel"].resolve())  # the Parquet path, out of core
    else:
        assert type(sources[1]).__module__.startswith("pyspark.sql")
    _assert_same_table(tables[engine], tables["pandas"])


# ------------------------------------------------------------------------------- end to end
def _float_frame_close(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for col in a.columns:
        if pd.api.types.is_float_dtype(a[col]) or pd.api.types.is_float_dtype(b[col]):
            x, y = a[col].to_numpy(float), b[col].to_numpy(float)
            assert np.array_equal(np.isnan(x), np.isnan(y)), col
            assert np.allclose(x, y, rtol=1e-9, atol=0, equal_nan=True), col
        else:
            assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


def test_small_cycle_with_spark_engine_end_to_end(needs_spark, clean_env: pytest.MonkeyPatch,
                                                  small: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """`msme-eval run --engine spark` on a small sample: the indicators section renders, its
    tables equal the pandas run's, and the engine is on the page and in provenance."""
    out = {}
    for engine in ("pandas", "spark"):
        root = tmp_path / engine
        code = cli.main(["run", "--cycle", "e", "--panel", str(small["panel"]),
                         "--macro", str(small["macro"]), "--targets", str(small["targets"]),
                         "--countries", "ASEAN", "--sections", "20_indicators",
                         "--workers", "1", "--timeout", "300", "--output-root", str(root),
                         "--engine", engine])
        assert code == 0, (root / "e").exists() and (root / "e" / "index.html").read_text()
        out[engine] = root / "e"
    prov = json.loads((out["spark"] / "provenance.json").read_text())
    assert prov["parameters"]["engine"] == "spark"
    assert "Spark (Parquet)" in (out["spark"] / "20_indicators.html").read_text()
    assert "pandas (in memory)" in (out["pandas"] / "20_indicators.html").read_text()
    for name in ("indicators.csv", "kpis.csv"):
        _float_frame_close(pd.read_csv(out["spark"] / "tables" / name),
                           pd.read_csv(out["pandas"] / "tables" / name))
    res = {e: json.loads((out[e] / "results.json").read_text()) for e in out}
    assert res["spark"]["status"] == "ok"
    kp = [res[e]["notebooks"]["20_indicators"]["ASEAN"]["results"]["kpis"] for e in out]
    assert [k["id"] for k in kp[0]] == [k["id"] for k in kp[1]]
    for a, b in zip(*kp):
        for key in a:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-8), (a["id"], key)
            else:
                assert a[key] == b[key], (a["id"], key)


def test_ci_installs_pyspark() -> None:
    """The Spark tests above must run in CI, not skip: pyspark is in the `test` extra."""
    import importlib.util

    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(r.replace(" ", "").startswith("pyspark>=4") for r in extras["test"])
    if os.environ.get("CI"):
        assert importlib.util.find_spec("pyspark") is not None
