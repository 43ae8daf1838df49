# Two entry points (README): `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where there is no NVIDIA GPU, pin the CPU build of torch that these machines hold locally;
# elsewhere pass e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>" to get a CPU build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: quickstart test setup clean proto

quickstart: $(VENV)/.installed
	$(VENV)/bin/ecg-atlas quickstart

test: $(VENV)/.installed
	$(PY) -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default (CUDA) torch build"; \
		$(PY) -m pip install -q 'torch>=2.3,<3'; \
	else \
		echo "no GPU: installing the CPU torch build ($(TORCH_SPEC))"; \
		$(PY) -m pip install -q $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Regenerate the gRPC stubs from proto/ecg_atlas/v1/*.proto (needs grpcio-tools: the dev extra).
proto: $(VENV)/.installed
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
