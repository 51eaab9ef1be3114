# The two commands in the README: `make demo` and `make test`. Each does all set-up itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-federated demo-pacs test lint typecheck pytest install clean test-tools

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

# A PACS (Orthanc), the sitefusion DICOM node and a modality (storescu) on 127.0.0.1: the study
# goes modality -> Orthanc -> node, the SRs come back into Orthanc; every process is stopped.
demo-pacs: $(STAMP) test-tools
	$(BIN)/python pipelines/demo_pacs.py --run runs/demo --out runs/demo-pacs

lint: $(STAMP)
	$(BIN)/ruff check sitefusion pipelines tests benchmarks
	$(BIN)/ruff format --check sitefusion pipelines tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Headless Chromium (renders the HTML report), dciodvfy (validates DICOM SR), Orthanc with its
# DICOMweb plugin (the PACS of the node tests and `make demo-pacs`) and dcmtk's storescu (the
# sending modality) come from Debian's packages. Best effort: without them the tests that need
# them skip with a reason.
TEST_TOOLS := chromium dicom3tools orthanc orthanc-dicomweb dcmtk
test-tools:
	@command -v chromium >/dev/null 2>&1 && command -v dciodvfy >/dev/null 2>&1 && \
	  command -v Orthanc >/dev/null 2>&1 && command -v storescu >/dev/null 2>&1 && \
	  test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || \
	  (timeout 600 apt-get install -y -q --no-install-recommends $(TEST_TOOLS) >/dev/null 2>&1 || \
	   (timeout 300 apt-get update -q >/dev/null 2>&1 && \
	    timeout 600 apt-get install -y -q --no-install-recommends $(TEST_TOOLS) >/dev/null 2>&1) || \
	   echo "note: could not install $(TEST_TOOLS); the report, SR and DICOM node tests will be skipped")

pytest: $(STAMP) test-tools
	$(BIN)/python -m pytest -n 2 -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
