# Two entry points (README): `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where there is no NVIDIA GPU, pin the CPU build of torch that these machines hold locally;
# elsewhere pass e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>" to get a CPU build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: quickstart test setup clean proto bundled-encoder encoder-quality

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

# Re-make the bundled open encoder exactly as shipped (embedder/bundled/MODEL_CARD.md): ≤ 60 min on a
# 2-core CPU. Then update BUNDLED_SHA256 in embedder/weights.py and re-run `make encoder-quality`.
SHARED_ECG ?= ../shared/data/ecg
bundled-encoder: $(VENV)/.installed
	$(VENV)/bin/ecg-atlas pretrain $(SHARED_ECG) --manifest $(SHARED_ECG)/manifest.csv --split train \
		--config small --random-offset --noise 0.02 --lr 3e-4 --warmup 150 --max-pairs-per-record 4 \
		--batch-pairs 16 --minutes 55 --max-updates 100000 --save-every 100 --seed 1 --out runs/bundled --json
	$(PY) -m ecg_atlas.embedder.pretrain.export runs/bundled/checkpoint_last.pt \
		embedder/bundled/ecg-atlas-small-v1.pt --name ecg-atlas-small-v1 --recipe "make bundled-encoder"

# The model card's quality table: probes, retrieval and baselines on the patient-disjoint test split.
encoder-quality: $(VENV)/.installed
	$(PY) benchmarks/encoder_quality.py --json runs/encoder_quality.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
