# Every target installs what it needs into .venv first; outputs go under build/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.toml
DB ?= build/corpus.duckdb
WORKERS ?= 2

# numba (UMAP) caches its JIT here so later runs skip compilation; figures never open windows.
export NUMBA_CACHE_DIR := $(CURDIR)/build/numba-cache
export MPLBACKEND := Agg

.PHONY: setup report test figures bench lint clean

setup: $(STAMP)

# torch is pinned and installed first, alone, so pip takes the CPU wheel on disk rather than
# resolving a newer CUDA build for another package's looser requirement. backpack (curvlinops'
# dependency) pulls a torchvision wheel built for another torch: nothing here imports it, and a user's
# `import torchvision` failing inside it would be worse than its absence, so it is uninstalled.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip uninstall --quiet --yes torchvision
	touch $(STAMP)

report: setup
	$(PY) -m pipeline all --config $(CONFIG) --db $(DB) --workers $(WORKERS)

figures: setup
	$(PY) -m pipeline figures --config $(CONFIG) --db $(DB)

# Two pytest-xdist workers, one per core; whole files go to one worker so module fixtures are built once.
test: setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -rs -n 2 --dist loadfile

# The bench extra adds PyHessian (benchmarks/anchors.py). Re-resolving .[dev] reinstalls backpack's
# torchvision (pip's dry run: torchvision alone, torch kept), so it is uninstalled again as in setup.
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m pip uninstall --quiet --yes torchvision
	$(PY) benchmarks/corpus.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/curvature.py
	$(PY) benchmarks/analyses.py
	$(PY) benchmarks/topology.py
	$(PY) benchmarks/margins.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/model_size.py
	$(PY) benchmarks/coupling.py
	$(PY) benchmarks/calibration.py --refit
	$(PY) benchmarks/anchors.py

lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf build
