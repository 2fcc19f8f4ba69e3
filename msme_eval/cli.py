"""The ``msme-eval`` command: run a cycle, validate a file, compute indicators, write a sample.

Exit codes: 0 success; 1 a notebook failed, data are invalid or a step failed; 2 bad usage
(unknown or ill-typed parameter, unsafe cycle id, missing input file, missing kernel).

Each command imports only what it runs (``validate`` reads and checks a file: 0.14 GB and
0.5 s of imports, against 0.25 GB and 1.5 s for the cycle's papermill, nbconvert and
pydantic stack), so the package modules are imported inside the command functions.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# pandera imports pyspark.pandas when pyspark is installed (the `spark` extra), which warns about
# pandas 3 on every command: nothing a user can act on
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

from msme_eval import io  # noqa: E402
from msme_eval.contract import AREAS  # noqa: E402
from msme_eval.schema import DataValidationError  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(msg: str) -> None:
    print(f"msme-eval: {msg}", file=sys.stderr, flush=True)


def _read_flags(p: argparse.ArgumentParser) -> None:
    """How to read a real file (`io.ReadOptions`); what is not given is sniffed and reported."""
    g = p.add_argument_group("reading the file (default: sniffed, and the guess is reported)")
    g.add_argument("--header-row", type=int, metavar="N", help="1-based line of the header "
                   "(e.g. 3 when two title lines sit above it)")
    g.add_argument("--sep", help="CSV separator, e.g. ';'")
    g.add_argument("--decimal", choices=(".", ","), help="decimal mark")
    g.add_argument("--thousands", help="thousands mark, e.g. '.' or ','")
    g.add_argument("--encoding", help="text encoding, e.g. cp1252")
    g.add_argument("--true-words", nargs="+", metavar="WORD", help="extra words read as yes")
    g.add_argument("--false-words", nargs="+", metavar="WORD", help="extra words read as no")
    g.add_argument("--missing-code", action="append", metavar="COLUMN=CODE[,CODE]",
                   help="codes read as missing, e.g. employees=999 or '*=-99' (every numeric column)")
    g.add_argument("--codebook", help="YAML or Excel codebook: rename, recode and label columns "
                   "before validation (recorded in the manifest)")


def _read_options(a: argparse.Namespace) -> io.ReadOptions:
    codes: dict[str, list[float]] = {}
    for item in a.missing_code or ():
        col, _, vals = item.partition("=")
        if not col or not vals:
            raise ValueError(f"--missing-code takes COLUMN=CODE[,CODE], not {item!r}")
        codes.setdefault(col.strip(), []).extend(float(v) for v in vals.split(","))
    return io.read_options(header_row=a.header_row, sep=a.sep, decimal=a.decimal,
                           thousands=a.thousands, encoding=a.encoding,
                           true_words=tuple(a.true_words or ()), false_words=tuple(a.false_words or ()),
                           missing_codes=codes, codebook=a.codebook)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="msme-eval",
        description="Monitoring and evaluation of MSME programmes in ASEAN.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a monitoring cycle and publish its HTML report",
                       description="Validate the parameters and data, execute the report "
                       "notebooks (region + countries) with papermill, render HTML and publish "
                       "reports/<cycle>/ atomically. Flags override the YAML file.")
    r.add_argument("--cycle", help="cycle id (letters, digits, _ and -), e.g. 2024; reads "
                   "cycles/<id>.yaml when it exists and no --file is given")
    r.add_argument("-f", "--file", help="YAML file of cycle parameters (e.g. cycles/2024.yaml)")
    r.add_argument("--panel", help="firm-year panel file")
    r.add_argument("--macro", help="macro table (country-year)")
    r.add_argument("--targets", help="targets table")
    r.add_argument("--no-macro", action="store_true", help="run without a macro table")
    r.add_argument("--no-targets", action="store_true", help="run without targets")
    r.add_argument("--countries", nargs="+", metavar="ISO3",
                   help="member states and/or ASEAN (default: all ten + ASEAN)")
    r.add_argument("--sections", nargs="+", metavar="TEMPLATE",
                   help="only these templates (e.g. 20_indicators)")
    r.add_argument("--baseline-year", type=int)
    r.add_argument("--target-year", type=int)
    r.add_argument("--report-year", type=int)
    r.add_argument("--programme-types", nargs="+", metavar="TYPE")
    r.add_argument("--workers", type=int, help="notebooks run in parallel (default 2)")
    r.add_argument("--timeout", type=float, help="wall-clock limit per notebook, seconds")
    r.add_argument("--kernel", help="Jupyter kernel name (default msme-eval)")
    r.add_argument("--output-root", help="folder of published cycles (default reports)")
    r.add_argument("--compare-with", metavar="CYCLE",
                   help="published cycle to compare with (default: the latest earlier one)")
    r.add_argument("--templates-dir", help="folder of notebook templates (default: the ones "
                   "shipped with msme-eval; `msme-eval templates DIR` copies them to edit)")
    r.add_argument("--no-install-kernel", action="store_true",
                   help="fail instead of registering the msme-eval kernel when it is missing")
    r.add_argument("--engine", choices=("pandas", "duckdb", "spark"),
                   help="where the indicator table is computed (default pandas, in memory); "
                        "duckdb and spark read the Parquet panel; Spark's master and settings "
                        "come from MSME_EVAL_SPARK_MASTER / MSME_EVAL_SPARK_CONF / SPARK_REMOTE")
    r.add_argument("--pdf", action="store_true",
                   help="also print one PDF per area into <cycle>/pdf/ (needs Chromium)")
    d = sub.add_parser("pdf", help="print one PDF per area of a published cycle folder",
                       description="Bundle each area's pages (summary, indicators, impact, data "
                                   "quality, methods) and print them with headless Chromium.")
    d.add_argument("cycle_dir", help="published cycle folder, e.g. reports/2024")

    t = sub.add_parser("templates", help="copy the report templates to a folder to edit them",
                       description="Copy the shipped notebook templates into DIR (refuses to "
                       "overwrite). Edit them in JupyterLab, add your own section (a notebook "
                       "with a 'parameters' cell), then run with --templates-dir DIR.")
    t.add_argument("dir")

    v = sub.add_parser("validate", help="validate a data file and store the typed version",
                       description="Check every rule of the data contract; print the report; "
                       "on success write the typed table and a SHA-256 manifest.")
    v.add_argument("file")
    v.add_argument("--table", choices=("panel", "macro", "targets"), default="panel")
    v.add_argument("--out-dir", default="data/processed")
    v.add_argument("--sheet", help="Excel sheet name")
    _read_flags(v)
    v.add_argument("--out-dataset", metavar="DIR",
                   help="stream the panel in chunks (bounded memory) and write a Parquet "
                        "dataset partitioned by country and year to DIR (msme_eval.ingest)")
    v.add_argument("--chunk-rows", type=int, default=250_000, metavar="N",
                   help="rows per chunk with --out-dataset (default 250,000: about 1.3 GB peak)")

    i = sub.add_parser("indicators", help="compute the indicator table from a panel")
    i.add_argument("--panel", default="data/raw/sample/panel.parquet")
    i.add_argument("--macro", default=None, help="macro table (optional)")
    i.add_argument("--countries", nargs="+", metavar="ISO3", help="only these areas")
    i.add_argument("--indicators", nargs="+", metavar="ID", help="only these ids, e.g. K01")
    i.add_argument("--breakdowns", nargs="+", default=(), metavar="COLUMN")
    i.add_argument("--year", type=int, help="only this year")
    i.add_argument("--out", help="write the table to .csv, .xlsx or .parquet")

    s = sub.add_parser("sample", help="write the embedded synthetic sample data")
    s.add_argument("--firms", type=int, default=20_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--first-year", type=int, default=2015)
    s.add_argument("--last-year", type=int, default=2024)
    s.add_argument("--out", default="data/raw/sample")
    s.add_argument("--chunk-firms", type=int, default=100_000,
                   help="above this many firms, write a country/year-partitioned Parquet panel "
                        "chunk by chunk in bounded memory (synth.write_partitioned)")
    return p


def _cycle_file(a: argparse.Namespace) -> str | None:
    """The YAML of the cycle: --file, else cycles/<--cycle>.yaml when that file exists."""
    if a.file or not a.cycle:
        return a.file
    path = Path("cycles") / f"{a.cycle}.yaml"
    return str(path) if path.is_file() else None


def _cmd_run(a: argparse.Namespace) -> int:
    from msme_eval import cycle

    overrides: dict[str, Any] = {
        "cycle": a.cycle, "panel": a.panel, "macro": a.macro, "targets": a.targets,
        "countries": a.countries, "sections": a.sections, "baseline_year": a.baseline_year,
        "target_year": a.target_year, "report_year": a.report_year,
        "programme_types": a.programme_types, "workers": a.workers, "timeout": a.timeout,
        "kernel": a.kernel, "output_root": a.output_root, "templates_dir": a.templates_dir,
        "engine": a.engine, "previous_cycle": a.compare_with,
    }
    declined = tuple(k for k, flag in (("macro", a.no_macro), ("targets", a.no_targets)) if flag)
    file = _cycle_file(a)
    if file and file != a.file:
        print(f"cycle parameters: {file}")
    params = cycle.load_params(file, declined=declined, **overrides)
    result = cycle.run(params, install_missing_kernel=not a.no_install_kernel)
    if getattr(a, "pdf", False) and _write_pdfs(result.path) != 0:
        return EXIT_FAILED
    if not result.ok:
        _err(f"{len(result.failed)} notebook(s) failed; see the summary above and "
             f"{result.path / 'index.html'}")
    return result.exit_code


def _write_pdfs(cycle_dir: Any) -> int:
    from msme_eval.report import pdf as report_pdf

    try:
        for path in report_pdf.write_pdfs(Path(cycle_dir)):
            print(f"pdf: {path}")
    except report_pdf.PdfError as exc:
        _err(str(exc))
        return EXIT_FAILED
    return 0


def _cmd_pdf(a: argparse.Namespace) -> int:
    return _write_pdfs(a.cycle_dir)


def _cmd_templates(a: argparse.Namespace) -> int:
    dest = Path(a.dir)
    if dest.exists() and any(dest.iterdir()):
        _err(f"{dest} exists and is not empty; choose a new folder")
        return EXIT_USAGE
    from msme_eval import cycle

    src = cycle.default_templates()
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*", "__pycache__", "tutorial"),
                    dirs_exist_ok=True)
    print(f"copied {len(list(dest.glob('*.ipynb')))} templates from {src} to {dest}; "
          f"run with: msme-eval run --templates-dir {dest}")
    return EXIT_OK


def _cmd_validate(a: argparse.Namespace) -> int:
    if a.out_dataset:  # chunked, bounded memory: msme_eval.ingest
        from msme_eval import ingest

        if a.table != "panel" or a.sheet is not None or a.chunk_rows < 1:
            _err("--out-dataset takes a panel (no --table macro/targets, no --sheet) and "
                 "--chunk-rows >= 1")
            return EXIT_USAGE

        def show(report: Any) -> tuple[int, int]:
            for r in report.to_dict("records"):
                print(f"{r['severity'].upper()}: {r['message']}")
                if r.get("fix"):
                    print(f"    fix: {r['fix']}")
            return tuple(int((report["severity"] == s).sum()) if len(report) else 0
                         for s in ("error", "warning"))  # type: ignore[return-value]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings are part of the printed report
            try:
                res = ingest.validate_to_dataset(a.file, a.out_dataset, chunk_rows=a.chunk_rows,
                                                 progress=True, options=_read_options(a))
            except DataValidationError as exc:
                n_err, n_warn = show(exc.report)
                print(f"{a.file}: INVALID — {n_err} error(s), {n_warn} warning(s); "
                      "nothing written.")
                return EXIT_FAILED
        n_warn = show(res.report)[1]
        print(f"{a.file}: valid ({res.rows:,} rows, {res.chunks} chunk(s)), "
              f"{n_warn} warning(s).")
        print(f"wrote {res.out_dir}\nwrote {res.manifest_path}")
        return EXIT_OK
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are part of the printed report
        res = io.validate_file(a.file, out_dir=a.out_dir, table=a.table, sheet=a.sheet,
                               raise_on_error=False, options=_read_options(a))
    report = res.report
    n_err = int((report["severity"] == "error").sum()) if len(report) else 0
    n_warn = int((report["severity"] == "warning").sum()) if len(report) else 0
    for r in report.to_dict("records"):
        print(f"{r['severity'].upper()}: {r['message']}")
        if r.get("fix"):
            print(f"    fix: {r['fix']}")
    if not res.ok:
        print(f"{a.file}: INVALID — {n_err} error(s), {n_warn} warning(s); nothing written.")
        return EXIT_FAILED
    print(f"{a.file}: valid ({len(res.panel):,} rows), {n_warn} warning(s).")
    print(f"wrote {res.output_path}\nwrote {res.manifest_path}")
    return EXIT_OK


def _cmd_indicators(a: argparse.Namespace) -> int:
    from msme_eval import indicators

    panel = io.read_panel(a.panel)
    macro = io.read_macro(a.macro) if a.macro else None
    if a.countries:
        bad = [c for c in a.countries if c not in AREAS]
        if bad:
            _err(f"unknown country code(s) {bad}")
            return EXIT_USAGE
    table = indicators.compute(panel, macro, breakdowns=tuple(a.breakdowns), indicators=a.indicators)
    if a.countries:
        table = table[table["ref_area"].isin(a.countries)]
    if a.year is not None:
        table = table[table["time_period"] == a.year]
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        writers = {".csv": lambda p: table.to_csv(p, index=False),
                   ".xlsx": lambda p: table.to_excel(p, index=False),
                   ".parquet": lambda p: table.to_parquet(p, index=False)}
        if out.suffix not in writers:
            _err(f"--out must end in .csv, .xlsx or .parquet, not {out.suffix!r}")
            return EXIT_USAGE
        io.atomic_write(out, writers[out.suffix])
        print(f"wrote {len(table):,} rows to {out}")
    else:
        cols = [c for c in ("indicator", "ref_area", "time_period", "breakdown", "group",
                            "value", "ci_low", "ci_high", "conf_status") if c in table.columns]
        with pd.option_context("display.max_rows", 200, "display.width", 140):
            print(table[cols].to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
    return EXIT_OK


def _cmd_sample(a: argparse.Namespace) -> int:
    if a.firms <= 0 or a.last_year < a.first_year:
        _err("--firms must be positive and --last-year >= --first-year")
        return EXIT_USAGE
    from msme_eval import synth

    years = range(a.first_year, a.last_year + 1)
    if a.firms > a.chunk_firms:
        paths = synth.write_partitioned(a.out, a.firms, chunk_firms=a.chunk_firms, seed=a.seed,
                                        years=years,
                                        progress=lambda done, n: print(f"  {done:,} / {n:,} firms"))
    else:
        paths = synth.write_sample(a.out, synth.generate(n_firms=a.firms, years=years, seed=a.seed))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``msme-eval`` console script; returns the exit code."""
    # this process only reads notebooks: skip jsonschema's slow optional IRI checker (see
    # msme_eval.cycle._PAPERMILL_MAIN)
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "validate": _cmd_validate, "indicators": _cmd_indicators,
                "sample": _cmd_sample, "templates": _cmd_templates, "pdf": _cmd_pdf}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        _err("interrupted; nothing was published (the previous report, if any, is unchanged)")
        return 130
    except OSError as exc:  # read-only folder, full disk, missing permission: say which file
        where = f" ({exc.filename})" if exc.filename else ""
        _err(f"{exc.strerror or exc}{where}. Nothing was published; the previous report, if any, "
             "is unchanged. Fix: free disk space, or choose a writable --output-root")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a clear one-line message, then non-zero
        params = sys.modules.get("msme_eval.report.params")  # imported by the commands using it
        if params is not None and isinstance(exc, params.CycleError):
            _err(str(exc))
            return exc.exit_code
        name = type(exc).__name__
        if isinstance(exc, DataValidationError) or name == "DataFileNotFoundError":
            _err(str(exc))
            return EXIT_FAILED
        if name in ("ValueError", "TypeError", "ImpactInputError", "RegistryError"):
            _err(f"{name}: {exc}")
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
