# msme-eval — the table of contents.  `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CYCLE  ?= 2024
FIRMS  ?= 20000
SAMPLE := data/raw/sample

.PHONY: help install data report test test-fast lint bench lab clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name msme-eval --display-name "Python (msme-eval)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)  ## create .venv, install the package, register the msme-eval kernel

$(SAMPLE)/panel.parquet: | $(STAMP)
	$(BIN)/msme-eval sample --firms $(FIRMS) --seed 0 --out $(SAMPLE)

data: $(SAMPLE)/panel.parquet  ## generate the embedded synthetic ASEAN sample in data/raw/sample/

report: data  ## run the default monitoring cycle and render reports/$(CYCLE)/index.html
	$(BIN)/msme-eval run --cycle $(CYCLE)

test: data  ## run the test suite
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## the suite without slow simulations and browser checks
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: $(STAMP)  ## ruff (config in pyproject.toml): style, pyflakes, import order, bugbear
	$(BIN)/ruff check msme_eval tests benchmarks tools

bench: data  ## run the benchmarks (prints ratios against the libraries a user would otherwise pick)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: $(STAMP)  ## open JupyterLab on notebooks/ (report templates + tutorial/); installs the `lab` extra
	$(BIN)/python -m pip install --quiet -e '.[test,lab]'
	$(BIN)/jupyter lab notebooks/

clean:  ## remove rendered reports and processed data (never data/raw)
	rm -rf reports/*/ reports/index.html data/processed/*.parquet data/processed/*.json

distclean: clean  ## also remove the environment and the generated sample
	rm -rf $(VENV) $(SAMPLE)
