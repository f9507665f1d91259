# The README's commands. Each sets up .venv (once, and again when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLE := data/sample/ground_truth.json
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: report test lab sample clean

report: $(STAMP) $(SAMPLE)   ## run every notebook on the default sample into reports/
	$(BIN)/clm run --dataset sample

test: $(STAMP) $(SAMPLE)     ## unit tests and notebooks (nbval)
	$(BIN)/python -m pytest

lab: $(STAMP) $(SAMPLE)      ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

sample: $(STAMP)             ## (re)generate the default synthetic company
	$(BIN)/clm sample --out data/sample

$(SAMPLE): | $(STAMP)
	$(BIN)/clm sample --out data/sample

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) data/sample reports/2* reports/latest
