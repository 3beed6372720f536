# The project's two commands: `make demo` and `make test`. Both create .venv when missing.
# `make notebook` re-executes docs/walkthrough.ipynb in a clean kernel and stores its outputs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-avx2 install lint bench notebook fuzz soak floors clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[train,scale,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/murakit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the suite with numpy, OpenCV, OpenBLAS, libm and oneDNN held to AVX2 (as on an AMD EPYC without
# AVX-512; onnxruntime has no such switch): docs/compatibility.md, "Across CPUs"
test-avx2: $(STAMP)
	$(BIN)/python benchmarks/as_avx2.py -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check edge baseline deep export murakit tests benchmarks docs

notebook: $(STAMP)
	$(BIN)/python docs/run_notebook.py docs/walkthrough.ipynb --write --timings

# the bench extra (OpenVINO) is installed for the benchmarks only, never by `make install`
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py --run runs/default

# the full fuzz campaign (hostile models, golden sets, CLI values, data, interruptions,
# concurrency, DICOM headers; ~25-45 min); `make test` runs its fast slice (tests/test_fuzz.py)
# `make fuzz BEFORE=DIR` runs the same cases against another checkout first (before/after tables)
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_campaign.py $(if $(BEFORE),--before $(BEFORE))

# 10,000 requests (valid, malformed, stalled, oversized) against a real edge-serve at
# concurrency 32 (~1 min); `make test` runs 500 of them (tests/test_serve_soak.py)
soak: $(STAMP)
	$(BIN)/python benchmarks/soak_serve.py

# the edge runtime at pyproject.toml's lower bounds, in clean venvs cached in .venv-floors/
# (docs/compatibility.md): the base install at every floor, OpenCV's floor beside the newest
# numpy and onnxruntime (`make test` runs these two too, tests/test_floors.py), and the dicom +
# serve extras at their floors. Stdlib only (Python >= 3.11 for tomllib): needs no .venv.
floors:
	$(PYTHON) benchmarks/floors.py
	$(PYTHON) benchmarks/floors.py --free numpy --free onnxruntime
	$(PYTHON) benchmarks/floors.py --extras dicom,serve

clean:
	rm -rf $(VENV) .venv-floors runs build *.egg-info
