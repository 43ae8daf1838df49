# Two entry points (README): `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3
# One virtual environment per interpreter: `make test PYTHON=python3.13` builds .venv-3.13 beside
# the default .venv instead of reusing an environment of another Python.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYTHON_VERSION),)
$(error $(PYTHON) does not run here (with pyenv, make its version active: PYENV_VERSION=3.13.0 make test PYTHON=python3.13))
endif
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(PYTHON_VERSION))
PY := $(VENV)/bin/python
# Where there is no NVIDIA GPU, pin the CPU build of torch that these machines hold locally;
# elsewhere pass e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>" to get a CPU build.
# With an NVIDIA GPU, the same version as the CUDA build the driver runs (cu126 on R535/R550,
# cu128 on R570, cu130 on R580+: tools/setup_torch.py); TORCH_CUDA=cu126|cu128|cu130|cpu overrides.
# Set-up fails if a GPU is present and the installed torch cannot use it.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
TORCH_CUDA ?=
# Set-up speaks only when something needs a person: no pip version notice, and pip at -qq (errors
# only: a dependency conflict or a failed build still shows; index-location notices of the machine's
# pip configuration and setuptools' note on editable installs do not).
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PIP_QUIET := -qq --no-input

.PHONY: quickstart test test-fast lint setup clean proto bundled-encoder bundled-encoder-v2 bundled-encoder-v1 encoder-quality

quickstart: $(VENV)/.installed
	@$(VENV)/bin/ecg-atlas quickstart

test: $(VENV)/.installed
	$(MAKE) --no-print-directory lint
	@$(PY) -c "import ray" 2>/dev/null || $(PY) -m pip install $(PIP_QUIET) 'ray[data]>=2.9'
	@$(PY) -c "import embedding_atlas" 2>/dev/null || $(PY) -m pip install $(PIP_QUIET) 'embedding-atlas>=0.26'
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(PY) -m pytest -q

# The tests not marked slow (no real server, Ray cluster, browser or whole-corpus pass): under 2 minutes on 2 cores.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# ruff (pyproject.toml [tool.ruff]) and the import graph: no circles, embedder and index apart.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) tools/check_imports.py

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) with $(PYTHON) $(PYTHON_VERSION) (first run only: a few minutes)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@# the torch build the installed NVIDIA driver runs (tools/setup_torch.py), else the CPU build
	@args=$$($(PYTHON) tools/setup_torch.py pip-args --spec '$(TORCH_SPEC)' --cuda '$(TORCH_CUDA)' \
		--pip-args '$(TORCH_PIP_ARGS)') || exit 1; eval "$(PY) -m pip install $(PIP_QUIET) $$args"
	@$(PY) -m pip install $(PIP_QUIET) -e '.[dev]'
	@$(PY) tools/setup_torch.py check
	@touch $@
	@echo "$(VENV) is ready: $(VENV)/bin/ecg-atlas (the README's Tour puts $(VENV)/bin on PATH)"

# Regenerate the gRPC stubs from proto/ecg_atlas/v1/*.proto (needs grpcio-tools: the dev extra).
proto: $(VENV)/.installed
	$(PY) proto/generate.py

# Re-make the bundled encoders exactly as shipped (embedder/bundled/MODEL_CARD.md): v1 (shipped; `make
# bundled-encoder-v1` re-makes it) fine-tuned on PTB-XL folds 1-7 and the labelled train-split ECGs of
# ../shared/data/ecg, fold 8 for every choice (embedder/bundled_recipe.py). v3 (`make bundled-encoder`,
# the current release) also learns the sample set's rhythm/ectopy/axis label groups; v2 (`make
# bundled-encoder-v2`) learns the five superclasses only. Seeded; BUNDLED_TRAIN on a 2-core CPU. Then pin
# the printed sha256 in RELEASES of embedder/weights.py and re-run `make encoder-quality`.
SHARED_ECG ?= ../shared/data/ecg
SHARED_PTBXL ?= ../shared/data/ptbxl
BUNDLED_TRAIN ?= --augment --epochs 40 --minutes 55 --patience 8
BUNDLED_SUPERCLASSES = --target NORM --target MI --target STTC --target CD --target HYP
BUNDLED_OTHER_GROUPS = --target AF_AFL --target RHYTHM_OTHER --target ECTOPY --target AXIS_VOLT_OTHER --min-positives 0
# $(call bundled_release,VERSION,TARGETS,MAKE-TARGET): manifest -> finetune from v1 -> release file
define bundled_release
	rm -rf runs/bundled-$(1)
	$(PY) -m ecg_atlas.embedder.bundled_recipe manifest --ptbxl $(SHARED_PTBXL) --ecg $(SHARED_ECG) \
		--out runs/bundled-$(1)/manifest.csv
	$(VENV)/bin/ecg-atlas finetune $(SHARED_ECG) $(SHARED_PTBXL) --manifest runs/bundled-$(1)/manifest.csv \
		--id-column record --patient-column patient $(2) --train part=train --val part=val --test part=test \
		--checkpoint bundled:v1 --lr 1e-4 $(BUNDLED_TRAIN) --seed 1 --name ecg-atlas-small-$(1) \
		--out runs/bundled-$(1)/finetune --json
	$(PY) -m ecg_atlas.embedder.bundled_recipe release runs/bundled-$(1)/finetune/model.pt \
		embedder/bundled/ecg-atlas-small-v1.pt embedder/bundled/ecg-atlas-small-$(1).pt \
		--name ecg-atlas-small-$(1) --recipe "make $(3)"
endef
bundled-encoder: $(VENV)/.installed
	$(call bundled_release,v3,$(BUNDLED_SUPERCLASSES) $(BUNDLED_OTHER_GROUPS),bundled-encoder)
bundled-encoder-v2: $(VENV)/.installed
	$(call bundled_release,v2,$(BUNDLED_SUPERCLASSES),bundled-encoder-v2)

# The first release, ecg-atlas-small-v1 (embedder/bundled/MODEL_CARD_v1.md): self-supervised pretraining
# on the train split of ../shared/data/ecg, 55 min on a 2-core CPU.
bundled-encoder-v1: $(VENV)/.installed
	$(VENV)/bin/ecg-atlas pretrain $(SHARED_ECG) --manifest $(SHARED_ECG)/manifest.csv --split train \
		--config small --random-offset --noise 0.02 --lr 3e-4 --warmup 150 --max-pairs-per-record 4 \
		--batch-pairs 16 --minutes 55 --max-updates 100000 --save-every 100 --seed 1 --out runs/bundled --json
	$(PY) -m ecg_atlas.embedder.pretrain.export runs/bundled/checkpoint_last.pt \
		embedder/bundled/ecg-atlas-small-v1.pt --name ecg-atlas-small-v1 --recipe "make bundled-encoder-v1"

# The model card's quality table: PTB-XL fold 9 probe, held-out retrieval and probes, beside random init.
encoder-quality: $(VENV)/.installed
	$(PY) benchmarks/encoder_quality.py --json runs/encoder_quality.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
