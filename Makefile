# The README's commands. Each sets up .venv (once, and again when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLE := data/sample/ground_truth.json
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: report test lab sample clean browser java

report: $(STAMP) $(SAMPLE)   ## run every notebook on the default sample into reports/
	@# the helpers' bytecode, written once, read by the runner, the kernel server and the workers: where
	@# PYTHONDONTWRITEBYTECODE is set, each of them compiled clm_helpers again (0.1 s apiece, at start-up)
	@$(BIN)/python -m compileall -q clm_helpers
	$(BIN)/clm run --dataset sample

test: $(STAMP) $(SAMPLE) browser java   ## unit tests and notebooks (nbval)
	$(BIN)/python -m pytest

# The report-security tests open rendered reports in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the report-security tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	else \
		echo "note: no chromium found; tests/test_report_security.py will fail until it is installed (apt-get install chromium) or CLM_CHROMIUM is set"; \
	fi

# The Spark engine tests (tests/test_spark.py) start a local Spark, which needs Java 17+ (Debian's headless JRE).
java:
	@if java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's openjdk-17-jre-headless for the Spark engine tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null; }; \
	else \
		echo "error: the Spark engine tests need Java 17 or newer (apt-get install openjdk-17-jre-headless, or set JAVA_HOME)" >&2; exit 1; \
	fi

lab: $(STAMP) $(SAMPLE)      ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

sample: $(STAMP)             ## (re)generate the default synthetic company
	$(BIN)/clm sample --out data/sample

$(SAMPLE): | $(STAMP)
	$(BIN)/clm sample --out data/sample

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) data/sample reports/2* reports/latest
