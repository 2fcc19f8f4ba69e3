"""ingest.validate_to_dataset: chunked validation gives the same rows, values and report (row
numbers of the original file) as io.read_panel, across chunk boundaries, and writes a
country/year-partitioned dataset all-or-nothing."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

from msme_eval import ingest, io, schema, synth
from msme_eval.cli import main
from msme_eval.schema import DataValidationError

CHUNK = 500
pytestmark = pytest.mark.filterwarnings("ignore::msme_eval.schema.DataQualityWarning")


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    """Synthetic panel, rows shuffled so every firm and country-year spans several chunks;
    one firm-year removed so the gap warning (a whole-file rule) fires."""
    p = synth.generate(n_firms=1000, years=range(2018, 2023), seed=3).panel
    p = p.sample(frac=1.0, random_state=7).reset_index(drop=True)
    counts = p.groupby("firm_id")["year"].agg(["min", "max", "size"])
    firm = counts[(counts["max"] - counts["min"] == 4) & (counts["size"] == 5)].index[0]
    drop = p.index[(p["firm_id"] == firm) & (p["year"] == 2020)]
    return p.drop(drop).reset_index(drop=True)


@pytest.fixture(scope="module")
def files(panel: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ingest")
    panel.to_csv(d / "panel.csv", index=False)
    panel.to_parquet(d / "panel.parquet", index=False)
    return {"csv": d / "panel.csv", "parquet": d / "panel.parquet"}


def full_report(path: Path) -> schema.ValidationReport:
    """What read_panel checks, as a report (errors and warnings) without raising."""
    return io.validate_raw(io.read_file(path))[1]



def issue_set(issues) -> set[tuple]:
    return {(i.column, i.rule, i.severity, i.n_rows, i.rows, i.values, i.message)
            for i in issues}


def refused_as_read_panel_would(frame: pd.DataFrame, path: Path, out: Path) -> schema.ValidationReport:
    """Write ``frame`` to ``path``: streaming validation refuses it, nothing is written to
    ``out``, and its report equals read_panel's on the whole file (returned)."""
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as exc:
        run(path, out)
    ref = full_report(path)
    assert issue_set(exc.value.validation.issues) == issue_set(ref.issues)
    assert not out.exists()
    return ref


def canonical(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Partition columns back to contract dtypes; rows in (firm_id, year) order."""
    df = df.copy()
    df["country"] = df["country"].astype(str)
    df["year"] = df["year"].astype("int64")
    return df[list(columns)].sort_values(["firm_id", "year"]).reset_index(drop=True)


def run(path: Path, out: Path, **kw) -> ingest.IngestResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", schema.DataQualityWarning)
        return ingest.validate_to_dataset(path, out, chunk_rows=CHUNK, **kw)


# ---------------------------------------------------------------------------------------------
# valid input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_dataset_equals_read_panel(files, panel, tmp_path: Path, kind: str) -> None:
    seen: list[tuple[int, int | None]] = []
    res = run(files[kind], tmp_path / "ds", progress=lambda d, t: seen.append((d, t)))
    n = len(panel)
    assert res.rows == n and res.chunks == math.ceil(n / CHUNK) >= 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", schema.DataQualityWarning)
        ref = io.read_panel(files[kind])
    got = pd.read_parquet(tmp_path / "ds")
    assert isinstance(got["country"].dtype, pd.CategoricalDtype)  # partition columns
    pd.testing.assert_frame_equal(canonical(got, ref.columns), canonical(ref, ref.columns))
    back = io.read_panel(tmp_path / "ds")  # the dataset is itself a valid read_panel input
    pd.testing.assert_frame_equal(canonical(back, ref.columns), canonical(ref, ref.columns))
    # hive layout, one folder per country and year present
    parts = {(p.parent.parent.name, p.parent.name) for p in (tmp_path / "ds").rglob("*.parquet")}
    assert parts == {(f"country={c}", f"year={y}")
                     for c, y in panel[["country", "year"]].drop_duplicates().itertuples(
                         index=False)}
    # progress after every chunk, ending at the row count
    assert [d for d, _ in seen] == [min(n, (k + 1) * CHUNK) for k in range(res.chunks)]
    assert {t for _, t in seen} == ({None} if kind == "csv" else {n})


def test_each_chunk_written_per_partition_in_file_order(files, panel, tmp_path: Path) -> None:
    """One file per chunk and country-year, ``part-<chunk>-0.parquet``, holding exactly that
    chunk's rows of the partition in the order of the input file (the panel is shuffled, so
    every chunk spans many partitions), without the partition columns."""
    import pyarrow.parquet as pq

    run(files["csv"], tmp_path / "ds")
    written = sorted((tmp_path / "ds").rglob("*.parquet"))
    expected = {}
    for k in range(math.ceil(len(panel) / CHUNK)):
        chunk = panel.iloc[k * CHUNK:(k + 1) * CHUNK]
        for (c, y), rows in chunk.groupby(["country", "year"], sort=False):
            expected[tmp_path / "ds" / f"country={c}" / f"year={y}" / f"part-{k:05d}-0.parquet"] = \
                list(rows["firm_id"])
    assert written == sorted(expected)
    for path in written:
        table = pq.read_table(path)
        assert "country" not in table.column_names and "year" not in table.column_names
        assert table.column("firm_id").to_pylist() == expected[path]


def test_partition_rows_refuses_missing_keys() -> None:
    df = pd.DataFrame({"country": ["IDN", "IDN", "VNM", None], "year": [2020, 2021, 2020, 2020]})
    assert {k: list(v) for k, v in ingest._partition_rows(df.iloc[:3]).items()} == {
        ("IDN", 2020): [0], ("IDN", 2021): [1], ("VNM", 2020): [2]}
    with pytest.raises(RuntimeError, match=r"missing country or year: rows \[4\]"):
        ingest._partition_rows(df)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_warnings_and_notes_match_read_panel(files, tmp_path: Path, kind: str) -> None:
    res = run(files[kind], tmp_path / "ds")
    ref = full_report(files[kind])
    assert "non_consecutive_years" in {i.rule for i in ref.issues}  # the planted gap
    assert issue_set(res.validation.issues) == issue_set(ref.issues)


def test_manifest(files, panel, tmp_path: Path) -> None:
    res = run(files["csv"], tmp_path / "ds")
    m = json.loads(res.manifest_path.read_text())
    assert res.manifest_path == tmp_path / "ds" / "_manifest.json"
    assert m["input_sha256"] == io.sha256_file(files["csv"]) == res.input_sha256
    assert m["input_file"] == "panel.csv"
    assert m["rows"] == len(panel) and m["chunks"] == res.chunks and m["chunk_rows"] == CHUNK
    assert set(m["columns"]) == set(io.read_panel(files["csv"]).columns)
    assert m["n_warnings"] == len(res.validation.warnings) >= 1
    assert m["partitioning"] == ["country", "year"] and m["created_utc"]


def test_replaces_existing_dataset_and_leaves_no_temp(files, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.parquet").write_bytes(b"old")
    run(files["parquet"], out)
    assert not (out / "stale.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no .ds.tmp-* / .ds.old-* left


def test_single_chunk_and_excel_fallback(panel, tmp_path: Path) -> None:
    small = panel.head(300)
    small.to_excel(tmp_path / "p.xlsx", index=False)
    res = run(tmp_path / "p.xlsx", tmp_path / "ds")
    assert (res.rows, res.chunks) == (300, 1)
    assert len(pd.read_parquet(tmp_path / "ds")) == 300


# ---------------------------------------------------------------------------------------------
# invalid input: same errors and rows as read_panel, nothing written
# ---------------------------------------------------------------------------------------------
def plant(panel: pd.DataFrame, text_errors: bool) -> pd.DataFrame:
    """Errors in chunk 1 (rows 1-500) and chunk 3 (rows 1001-1500); a duplicate (firm_id, year)
    whose two rows are in chunks 1 and 3. Row r of the file is index r - 1."""
    bad = panel.copy()
    bad.loc[9, "employees"] = -5                      # row 10
    bad.loc[1202, "country"] = "Narnia"               # row 1203
    bad.loc[[99, 1299], "weight"] = 0.0               # rows 100, 1300
    bad.loc[1399, ["firm_id", "year"]] = bad.loc[199, ["firm_id", "year"]].to_list()  # 200/1400
    if text_errors:
        bad["year"] = bad["year"].astype(object)
        bad.loc[1249, "year"] = "abc"                 # row 1250
        bad.loc[49, "sector"] = "ZZ"                  # row 50
    return bad


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_errors_match_read_panel(panel, tmp_path: Path, kind: str) -> None:
    bad = plant(panel, text_errors=kind == "csv")
    path = tmp_path / f"bad.{kind}"
    bad.to_csv(path, index=False) if kind == "csv" else bad.to_parquet(path, index=False)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("existing")
    with pytest.raises(DataValidationError) as exc:
        run(path, out)
    got = exc.value.validation
    ref = full_report(path)
    assert issue_set(got.issues) == issue_set(ref.issues)
    rows = {(i.column, i.rule): i.rows for i in got.issues if i.severity == "error"}
    assert rows[("employees", "negative_employees")] == (10,)
    assert rows[("country", "unknown_country")] == (1203,)
    assert rows[("weight", "weight_not_positive")] == (100, 1300)
    assert rows[("firm_id+year", "duplicate_firm_year")] == (200, 1400)
    if kind == "csv":
        assert rows[("year", "not_a_number")] == (1250,)
        assert rows[("sector", "unknown_sector")] == (50,)
    # nothing written, the existing folder untouched, no temporary folder left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad." + kind, "ds"]


def test_firm_rules_across_chunks(panel, tmp_path: Path) -> None:
    """first_treated differing between a firm's rows in chunks 1 and 3 is an error."""
    bad = panel.copy()
    chunk = pd.Series(bad.index // CHUNK, index=bad.index)
    spans = chunk.groupby(bad["firm_id"]).transform("nunique") > 1
    r3 = bad.index[spans & (chunk == 2)][0]  # a row in chunk 3 of a firm in other chunks too
    firm = bad.loc[r3, "firm_id"]
    bad.loc[bad["firm_id"] == firm, ["first_treated", "programme_type"]] = [2019, "finance"]
    bad.loc[r3, "first_treated"] = 2021
    ref = refused_as_read_panel_would(bad, tmp_path / "bad.csv", tmp_path / "ds")
    varies = [i for i in ref.issues if i.rule == "first_treated_varies"][0]
    assert varies.n_rows == int((bad["firm_id"] == firm).sum())
    assert not (tmp_path / "ds").exists()


def test_selected_year_varies_across_chunks(panel, tmp_path: Path) -> None:
    """selected_year (optional register column) differing across chunks is refused like
    read_panel refuses it, naming every row of the firm."""
    bad = panel.copy()
    bad["selected_year"] = bad["first_treated"]
    chunk = pd.Series(bad.index // CHUNK, index=bad.index)
    spans = chunk.groupby(bad["firm_id"]).transform("nunique") > 1
    r3 = bad.index[spans & (chunk == 2)][0]
    firm = bad.loc[r3, "firm_id"]
    bad.loc[bad["firm_id"] == firm, ["first_treated", "selected_year", "programme_type"]] = \
        [2020, 2019, "finance"]
    bad.loc[r3, "selected_year"] = 2018
    ref = refused_as_read_panel_would(bad, tmp_path / "bad.csv", tmp_path / "ds")
    varies = [i for i in ref.issues if i.rule == "selected_year_varies"][0]
    assert varies.n_rows == int((bad["firm_id"] == firm).sum())
    assert not (tmp_path / "ds").exists()


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(schema.DataFileNotFoundError):
        ingest.validate_to_dataset(tmp_path / "nope.csv", tmp_path / "ds")
    (tmp_path / "head.csv").write_text("firm_id,country,year,sector,employees\n")
    with pytest.raises(DataValidationError) as exc:
        ingest.validate_to_dataset(tmp_path / "head.csv", tmp_path / "ds")
    assert list(exc.value.report["rule"]) == ["no_data_rows"]
    (tmp_path / "latin1.csv").write_bytes("firm_id,country\nM\xfcller,IDN\n".encode("latin-1"))
    with pytest.raises(DataValidationError) as exc:
        ingest.validate_to_dataset(tmp_path / "latin1.csv", tmp_path / "ds")
    assert list(exc.value.report["rule"]) == ["not_utf8"]
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ValueError, match="contains the input"):
        ingest.validate_to_dataset(tmp_path / "head.csv", tmp_path)
    with pytest.raises(ValueError, match="chunk_rows"):
        ingest.validate_to_dataset(tmp_path / "head.csv", tmp_path / "ds", chunk_rows=0)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_out_dataset(files, panel, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    code = main(["validate", str(files["csv"]), "--out-dataset", str(out),
                 "--chunk-rows", str(CHUNK)])
    text = capsys.readouterr().out
    assert code == 0 and f"valid ({len(panel):,} rows" in text and "WARNING:" in text
    assert json.loads((out / "_manifest.json").read_text())["chunks"] == math.ceil(
        len(panel) / CHUNK)
    bad = tmp_path / "bad.csv"
    plant(panel, text_errors=True).to_csv(bad, index=False)
    code = main(["validate", str(bad), "--out-dataset", str(tmp_path / "ds2"),
                 "--chunk-rows", str(CHUNK)])
    text = capsys.readouterr().out
    assert code == 1 and "INVALID" in text and "row 1203 ('Narnia')" in text
    assert not (tmp_path / "ds2").exists()
    assert main(["validate", str(tmp_path / "missing.csv"), "--out-dataset",
                 str(tmp_path / "ds3")]) == 1


def test_identifier_spellings_across_chunks(panel, tmp_path: Path) -> None:
    """One firm written 'X' in chunk 1 and 'x\\u200b' in chunk 3: an error naming both rows,
    exactly as read_panel reports it; the rules ran over the spilled key files (DuckDB)."""
    bad = panel.copy()
    firm = bad.loc[10, "firm_id"]
    other = bad.index[(bad["firm_id"] == firm) & (bad.index >= 2 * CHUNK)][0]
    bad.loc[other, "firm_id"] = firm.lower() + "\u200b"
    ref = refused_as_read_panel_would(bad, tmp_path / "ids.csv", tmp_path / "ds")
    hit = [i for i in ref.issues if i.rule == "id_spelling_variants"][0]
    assert other + 1 in hit.rows or hit.n_rows > 5
    assert not list(tmp_path.glob(".ds*"))            # key files removed
