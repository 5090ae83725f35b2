# ShardGuard: `make demo` runs the main job, `make test` ruff, mypy and the test suite,
# `make bench` the benchmarks. Each first creates .venv and installs everything (scripts/setup.sh).
# PyTorch is pinned to the CPU build; override with e.g. `make demo TORCH=torch==2.12.0`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
export PYTHON VENV TORCH

BIN := $(VENV)/bin

.PHONY: setup dataset chromium netns-tools demo test bench clean

setup:
	@scripts/setup.sh

dataset:
	@scripts/ensure-dataset.sh

chromium:
	@scripts/ensure-chromium.sh

netns-tools:
	@scripts/ensure-netns-tools.sh

demo: setup dataset
	$(BIN)/shardguard demo

test: setup dataset chromium netns-tools
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: setup dataset
	@# PyTorchFI is for the comparison benchmark only: kept out of the package's environment
	@test -d benchmarks/.deps/pytorchfi || $(BIN)/python -m pip install --quiet --no-deps \
		--target benchmarks/.deps pytorchfi==0.6.0
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
