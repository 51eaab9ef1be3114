# The two commands in the README: `make demo` and `make test`. Each does all set-up itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-federated test lint typecheck pytest install clean test-tools

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipelines/demo.py --out runs/demo

# The same synthetic set trained across real Flower processes on 127.0.0.1: a SuperLink and one
# SuperNode per site, started and stopped by the pipeline.
demo-federated: $(STAMP)
	$(BIN)/python pipelines/federated.py --out runs/demo-federated

lint: $(STAMP)
	$(BIN)/ruff check sitefusion pipelines tests benchmarks
	$(BIN)/ruff format --check sitefusion pipelines tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Headless Chromium (renders the HTML report) and dciodvfy (validates DICOM SR) come from
# Debian's packages. Best effort: without them the two tests that need them skip with a reason.
test-tools:
	@command -v chromium >/dev/null 2>&1 && command -v dciodvfy >/dev/null 2>&1 || \
	  (timeout 600 apt-get install -y -q --no-install-recommends chromium dicom3tools >/dev/null 2>&1 || \
	   (timeout 300 apt-get update -q >/dev/null 2>&1 && \
	    timeout 600 apt-get install -y -q --no-install-recommends chromium dicom3tools >/dev/null 2>&1) || \
	   echo "note: could not install chromium/dicom3tools; the report and SR tests will be skipped")

pytest: $(STAMP) test-tools
	$(BIN)/python -m pytest -n 2 -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
