"""The msme-eval command line: exit codes, messages, and each sub-command's output."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import template_from

import msme_eval as me
from msme_eval import cycle
from msme_eval.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cli-sample")
    return me.synth.write_sample(out, me.synth.generate(n_firms=1000, years=range(2017, 2021),
                                                        seed=5))


def _data_args(sample: dict[str, Path]) -> list[str]:
    return ["--panel", str(sample["panel"]), "--macro", str(sample["macro"]),
            "--targets", str(sample["targets"])]


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("msme-eval")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for cmd in ("run", "validate", "indicators", "sample"):
        assert cmd in res.stdout


@pytest.mark.parametrize("args, text", [
    (["--cycle", "../etc"], "cycle: cycle id '../etc' is not a safe name"),
    (["--cycle", "2024", "--countries", "IDN", "Atlantis"], "unknown country code(s) ['Atlantis']"),
    (["--cycle", "2024", "--baseline-year", "2030"], "must be before target_year"),
    (["--cycle", "2024", "--workers", "0"], "workers: Input should be greater than or equal to 1"),
    (["--cycle", "2024", "--sections", "99_nothing"], "unknown section(s) ['99_nothing']"),
    (["--cycle", "2024", "--kernel", "not-installed", "--no-install-kernel"],
     "ipykernel install --sys-prefix --name not-installed"),
])
def test_run_usage_errors_exit_2(sample, tmp_path: Path, capsys, args: list[str],
                                 text: str) -> None:
    code = main(["run", *args, *_data_args(sample), "--output-root", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and text in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_run_missing_panel_and_bad_yaml(sample, tmp_path: Path, capsys) -> None:
    code = main(["run", "--cycle", "x", "--panel", str(tmp_path / "nope.parquet"),
                 "--no-macro", "--no-targets"])
    assert code == 2 and "panel file not found" in capsys.readouterr().err
    y = tmp_path / "c.yaml"
    y.write_text(f"cycle: x\npanel: {sample['panel']}\napi_token: abc123\n", encoding="utf-8")
    code = main(["run", "-f", str(y)])
    err = capsys.readouterr().err
    assert code == 2 and "secrets are never parameters" in err and "abc123" not in err


def test_run_bad_flag_type_is_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--workers", "many"])
    assert exc.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_run_failing_notebook_exits_1(sample, tmp_path: Path, capsys) -> None:
    template_from(tmp_path / "tpl", "boom", "1 / 0")
    code = main(["run", "--cycle", "cli", *_data_args(sample), "--countries", "ASEAN",
                 "--templates-dir", str(tmp_path / "tpl"), "--output-root", str(tmp_path / "r"),
                 "--timeout", "120"])
    out = capsys.readouterr()
    assert code == 1
    assert "ZeroDivisionError" in out.out and "1 FAILED" in out.out
    assert "1 notebook(s) failed" in out.err
    assert (tmp_path / "r" / "cli" / "boom.html").is_file()


def test_validate(sample, tmp_path: Path, capsys) -> None:
    code = main(["validate", str(sample["panel"]), "--out-dir", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert code == 0 and "valid (" in out
    assert (tmp_path / "p" / "panel.parquet").is_file()
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"firm_id": ["a", "a"], "country": ["IDN", "Narnia"], "year": [2020, 2020],
                  "sector": ["C", "C"], "employees": [5, -1]}).to_csv(bad, index=False)
    code = main(["validate", str(bad), "--out-dir", str(tmp_path / "q")])
    out = capsys.readouterr().out
    assert code == 1 and "INVALID" in out and "ERROR:" in out and "fix:" in out
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_indicators(sample, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ind.csv"
    code = main(["indicators", "--panel", str(sample["panel"]), "--macro", str(sample["macro"]),
                 "--countries", "IDN", "--indicators", "K01", "K02", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out)
    assert set(table["ref_area"]) == {"IDN"} and set(table["indicator"]) == {"K01", "K02"}
    code = main(["indicators", "--panel", str(sample["panel"]), "--countries", "THA",
                 "--indicators", "K09", "--year", "2019"])
    printed = capsys.readouterr().out
    assert code == 0 and "K09" in printed and "THA" in printed and "2019" in printed
    assert main(["indicators", "--panel", str(sample["panel"]), "--out", "x.txt"]) == 2


def test_sample(tmp_path: Path, capsys) -> None:
    code = main(["sample", "--firms", "1000", "--seed", "1", "--first-year", "2018",
                 "--last-year", "2020", "--out", str(tmp_path / "s")])
    assert code == 0 and "wrote panel" in capsys.readouterr().out
    panel = pd.read_parquet(tmp_path / "s" / "panel.parquet")
    assert sorted(panel["year"].unique()) == [2018, 2019, 2020]
    assert (tmp_path / "s" / "targets.csv").is_file()
    assert main(["sample", "--firms", "0", "--out", str(tmp_path / "t")]) == 2


# ------------------------------------------------------------------------------- explicit inputs
def test_own_panel_never_takes_the_sample_tables(sample, tmp_path: Path, capsys) -> None:
    """A real-data run names its macro and targets tables or declines them: the sample's
    illustrative tables are never used for someone else's panel."""
    own = tmp_path / "my_survey.parquet"
    own.write_bytes(Path(sample["panel"]).read_bytes())
    code = main(["run", "--cycle", "own", "--panel", str(own), "--output-root", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "my_survey.parquet" in err and "--macro FILE" in err and "--no-targets" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(cycle.CycleError, match="targets"):
        cycle.load_params(panel=str(own), macro=str(sample["macro"]))
    p = cycle.load_params(panel=str(own), macro=str(sample["macro"]), declined=("targets",))
    assert p.targets is None and p.macro == Path(sample["macro"]).resolve()


def test_cycle_id_reads_its_yaml(sample, tmp_path: Path, monkeypatch, capsys) -> None:
    """`--cycle ID` uses cycles/ID.yaml when it exists (flags still override it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cycles").mkdir()
    (tmp_path / "cycles" / "f25.yaml").write_text(
        f"cycle: f25\npanel: {sample['panel']}\nmacro: {sample['macro']}\n"
        f"targets: {sample['targets']}\nbaseline_year: 2017\ntarget_year: 2030\nworkers: 3\n"
        "countries: [IDN]\n", encoding="utf-8")
    captured = {}
    monkeypatch.setattr(cycle, "run", lambda params, **kw: (captured.update(p=params),
                                                            cycle.CycleResult("f25", tmp_path))[1])
    assert main(["run", "--cycle", "f25", "--workers", "1"]) == 0
    p = captured["p"]
    assert (p.baseline_year, p.target_year, p.countries, p.workers) == (2017, 2030, ["IDN"], 1)
    assert p.previous_cycle is None
    assert main(["run", "--cycle", "f25", "--compare-with", "2023"]) == 0
    assert captured["p"].previous_cycle == "2023"
    assert "cycles/f25.yaml" in capsys.readouterr().out


def test_templates_command_copies_and_own_section_runs(sample, tmp_path: Path, capsys) -> None:
    """A user copies the shipped templates, adds a section of their own and runs the cycle with
    --templates-dir: the new section is rendered beside the shipped ones."""
    dest = tmp_path / "my_templates"
    assert main(["templates", str(dest)]) == 0
    assert sorted(p.stem for p in dest.glob("*.ipynb")) == [
        "00_summary", "10_data_quality", "20_indicators", "30_impact"]
    assert main(["templates", str(dest)]) == 2  # never overwrites
    for p in dest.glob("*.ipynb"):
        if p.stem not in ("10_data_quality", "20_indicators"):
            p.unlink()
    # an economist adds a paragraph to the indicators template, as JupyterLab would save it
    ind = nbformat.read(dest / "20_indicators.ipynb", as_version=4)
    ind.cells.insert(4, nbformat.v4.new_markdown_cell("Note from the ministry: **K05 counts marketplaces.**"))
    nbformat.write(ind, dest / "20_indicators.ipynb")
    template_from(dest, "40_own", 'display(md("Our own **{x}** section", x="ministry"))',
                  title="Ministry section")
    code = main(["run", "--cycle", "own", *_data_args(sample), "--countries", "IDN", "ASEAN",
                 "--templates-dir", str(dest), "--output-root", str(tmp_path / "r"), "--timeout", "300"])
    assert code == 0, capsys.readouterr().out
    page = (tmp_path / "r" / "own" / "40_own.html").read_text(encoding="utf-8")
    assert "Our own <strong>ministry</strong> section" in page
    country = (tmp_path / "r" / "own" / "IDN" / "20_indicators.html").read_text(encoding="utf-8")
    assert "Note from the ministry: <strong>K05 counts marketplaces.</strong>" in country
    index = (tmp_path / "r" / "own" / "index.html").read_text(encoding="utf-8")
    assert "Ministry section" in index


def test_macro_in_billions_stops_the_run_before_any_notebook(sample, tmp_path: Path, capsys) -> None:
    macro = pd.read_csv(sample["macro"])
    macro["gdp"] /= 1e9
    bad = tmp_path / "macro_billions.csv"
    macro.to_csv(bad, index=False)
    code = main(["run", "--cycle", "b", "--panel", str(sample["panel"]), "--macro", str(bad),
                 "--targets", str(sample["targets"]), "--output-root", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "macro_billions.csv" in err and "thousands, millions or billions" in err
    assert not (tmp_path / "r" / "b").exists()


def test_broken_template_and_read_only_root_end_in_one_message(sample, tmp_path: Path, capsys) -> None:
    tpl = tmp_path / "tpl"
    template_from(tpl, "10_ok", "1")
    (tpl / "20_broken.ipynb").write_text('{"cells": [', encoding="utf-8")
    code = main(["run", "--cycle", "x", *_data_args(sample), "--templates-dir", str(tpl),
                 "--output-root", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "20_broken.ipynb cannot be read as a notebook" in err and "Traceback" not in err
    (tpl / "20_broken.ipynb").unlink()
    afile = tmp_path / "reports.txt"  # an output root that cannot be a folder
    afile.write_text("x")
    code = main(["run", "--cycle", "x", *_data_args(sample), "--templates-dir", str(tpl),
                 "--output-root", str(afile / "sub")])
    err = capsys.readouterr().err
    assert code == 1 and "Not a directory" in err and "Traceback" not in err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: nothing to test here
            return
        code = main(["run", "--cycle", "x", *_data_args(sample), "--templates-dir", str(tpl),
                     "--output-root", str(ro / "reports")])
        err = capsys.readouterr().err
        assert code == 1 and "Permission denied" in err and "Traceback" not in err
    finally:
        ro.chmod(0o700)


def test_validate_reads_a_real_delivery_with_flags(tmp_path: Path, capsys) -> None:
    """A ';'-separated cp1252 file with a title line, decimal commas, '.' thousands marks,
    Indonesian yes/no words and a -99 code for 'not known' turnover."""
    lines = ["Survei UMKM 2023 — Dinas Koperasi;;;;;",
             "firm_id;country;year;sector;employees;turnover;owner_female",
             "A1;IDN;2023;C;5;1.250,50;Ya", "A2;IDN;2023;G;7;-99;Tidak",
             "A3;IDN;2023;G;12;10.000,75;Ya"]
    f = tmp_path / "survei.csv"
    f.write_bytes("\n".join(lines).encode("cp1252"))
    out = tmp_path / "processed"
    code = main(["validate", str(f), "--out-dir", str(out), "--sep", ";", "--decimal", ",",
                 "--thousands", ".", "--encoding", "cp1252", "--header-row", "2",
                 "--missing-code", "turnover=-99"])
    text = capsys.readouterr().out
    assert code == 0, text
    panel = pd.read_parquet(out / "survei.parquet").sort_values("firm_id")
    assert panel["turnover"].isna().tolist() == [False, True, False]
    assert panel["turnover"].dropna().tolist() == [1250.5, 10000.75]
    assert panel["owner_female"].tolist() == [True, False, True]
    assert panel["employees"].tolist() == [5, 7, 12]
    # without the flags the same file is not read with a wrong meaning: guesses are reported
    code = main(["validate", str(f), "--out-dir", str(tmp_path / "p2")])
    text = capsys.readouterr().out
    assert "cp1252" in text or code == 1


def test_cycle_reads_a_semicolon_decimal_comma_panel_with_a_codebook(sample, tmp_path: Path, capsys) -> None:
    """panel_options in the cycle file: the same panel as ';' CSV with decimal commas and
    renamed columns (a codebook maps them back) gives the same validated panel."""
    panel = pd.read_parquet(sample["panel"]).rename(columns={"employees": "jumlah_pekerja"})
    csv = tmp_path / "panel_id.csv"
    panel.to_csv(csv, sep=";", decimal=",", index=False)
    book = tmp_path / "codebook.yaml"
    book.write_text("columns:\n  jumlah_pekerja: {rename: employees, label: Jumlah pekerja}\n", encoding="utf-8")
    y = tmp_path / "c.yaml"
    y.write_text(f"cycle: cb\npanel: {csv}\nmacro: {sample['macro']}\ntargets: {sample['targets']}\n"
                 f"panel_options: {{sep: ';', decimal: ',', codebook: {book}}}\n"
                 f"countries: [ASEAN]\nsections: [10_data_quality]\noutput_root: {tmp_path / 'r'}\n",
                 encoding="utf-8")
    code = main(["run", "-f", str(y)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    prov = (tmp_path / "r" / "cb" / "provenance.json").read_text(encoding="utf-8")
    assert "codebook" in prov and '"panel_options"' in prov


def test_weaker_disclosure_needs_an_explicit_flag_and_is_printed(sample, tmp_path: Path, capsys) -> None:
    with pytest.raises(cycle.CycleError, match="min_contributors 2 .default 3.*weaker_disclosure: true"):
        cycle.load_params(min_contributors=2)
    y = tmp_path / "weak.yaml"
    y.write_text(f"cycle: w\npanel: {sample['panel']}\nmacro: {sample['macro']}\ntargets: {sample['targets']}\n"
                 "min_contributors: 2\nweaker_disclosure: true\ncountries: [ASEAN]\nsections: [10_data_quality]\n"
                 f"output_root: {tmp_path / 'r'}\n", encoding="utf-8")
    assert main(["run", "-f", str(y)]) == 0, capsys.readouterr().out
    page = (tmp_path / "r" / "w" / "10_data_quality.html").read_text(encoding="utf-8")
    assert "WEAKER than the defaults" in page


def test_figures_survive_a_server_matplotlib_backend(sample, tmp_path: Path, monkeypatch, capsys) -> None:
    """MPLBACKEND=Agg (usual on servers and CI) must not make the report's figures disappear."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    code = main(["run", "--cycle", "agg", *_data_args(sample), "--countries", "ASEAN",
                 "--sections", "20_indicators", "--output-root", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().out
    page = (tmp_path / "r" / "agg" / "20_indicators.html").read_text(encoding="utf-8")
    assert page.count("<img") >= 1 and "data:image/png;base64," in page


def test_validate_imports_no_cycle_stack(sample: dict[str, Path], tmp_path: Path) -> None:
    """`msme-eval validate` loads the reading and checking modules only: not the cycle's
    papermill/nbconvert/pydantic stack (about 0.1 GB and 1 s more), nor the estimators."""
    code = ("import sys; from msme_eval.cli import main; "
            f"rc = main(['validate', {str(sample['panel'])!r}, '--out-dir', {str(tmp_path)!r}]); "
            "heavy = ('papermill', 'nbconvert', 'msme_eval.cycle', 'msme_eval.report', "
            "'msme_eval.impact', 'msme_eval.indicators'); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in heavy "
            "or m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.strip().splitlines()[-1]
    assert out == "0 []", out
