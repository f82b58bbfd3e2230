# matbackprop — matrix backpropagation for deep networks with structured layers.
# `make help` lists the targets. Every target installs what it needs first.

SHELL        := /bin/bash
PYTHON_SYS   ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
PIP          := $(VENV)/bin/pip
# torch/torchvision pair that import together (override e.g. TORCH_SPEC="torch==2.9.1 torchvision==0.24.1").
TORCH_SPEC   ?= torch==2.14.1 torchvision==0.29.1
STAMP        := $(VENV)/.installed
DEVICE       ?= cpu
export WANDB_SILENT ?= true

.DEFAULT_GOAL := help
.PHONY: help install test lint bench bench-peers demo data-coco data-bsds weights prepare-coco check-data reproduce-coco reproduce-bsds tables sync-wandb dashboards gpu-report clean

help:  ## List the targets (colours only on a terminal)
	@if [ -t 1 ]; then c='\033[36m'; r='\033[0m'; fi; grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -v c="$$c" -v r="$$r" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-16s%s %s\n", c, $$1, r, $$2}'

install: $(STAMP)  ## Create .venv and install the project with the experiments, dev and bench extras (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[experiments,dev,bench]'
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@touch $(STAMP)

test: install  ## Run the test suite (W&B disabled, no downloads)
	WANDB_MODE=disabled $(PY) -m pytest -q -n 2 --dist loadfile   # two workers (this machine has 2 cores); a file stays in one worker

lint: install  ## Ruff lint + format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

bench: install  ## Benchmarks (tables + CSV under outputs/bench/); DEVICE=cuda on a GPU box
	$(PY) scripts/bench_spectral.py --device $(DEVICE)
	$(PY) scripts/bench_training.py --device $(DEVICE)
	$(PY) scripts/bench_deepncut.py --device $(DEVICE)
	$(PY) scripts/bench_covering.py
	$(PY) scripts/bench_scale.py

bench-peers: install  ## Spectral layers vs the peers (eigh+autograd, torchspd, Newton–Schulz): one table [PEERS_ARGS="--quick"]
	$(PY) scripts/bench_peers.py --device $(DEVICE) $(PEERS_ARGS)

gpu-report: install  ## All GPU figures (spectral, training fp32/bf16, DeepNCut, eigh GPU vs CPU, loader, 50 steps) -> outputs/bench/gpu_report.md
	$(PY) scripts/gpu_report.py

demo: install  ## Main job on built-in synthetic data (CPU, a few minutes)
	WANDB_MODE=$${WANDB_MODE:-disabled} $(PY) -m matbackprop.demo

data-coco: install  ## Download MSCOCO 2014 train/val images + instance annotations into data/coco
	$(PY) scripts/download_coco.py --root data/coco

data-bsds: install  ## Download the BSDS500 archive (BSR) into data/bsds
	$(PY) scripts/download_bsds.py --root data/bsds

weights: install  ## Pre-fetch AlexNet + VGG-16 ImageNet weights into TORCH_HOME (for nodes without internet)
	$(PY) scripts/fetch_weights.py

prepare-coco: install  ## One-time fast region store for MSCOCO (resumable, all cores) [PREPARE_ARGS="--root DIR"]
	$(PY) scripts/prepare_coco.py --root data/coco $(PREPARE_ARGS)

check-data: install  ## Decode every image/.mat of data/coco and data/bsds once; list bad files (exit 2) [CHECK_ARGS]
	$(PY) scripts/check_data.py $(CHECK_ARGS)

reproduce-coco: install  ## Table 1 (DeepO2P on MSCOCO) on real data [REPRO_ARGS="--data-root DIR overrides"]
	$(PY) scripts/reproduce.py coco $(REPRO_ARGS)

reproduce-bsds: install  ## Table 2 (DeepNCut on BSDS) on real data [REPRO_ARGS="--data-root DIR overrides"]
	$(PY) scripts/reproduce.py bsds $(REPRO_ARGS)

tables: install  ## Results tables next to the paper's numbers, and training curves
	$(PY) scripts/make_tables.py --runs outputs --out outputs/tables

sync-wandb: install  ## Upload offline W&B runs, resumed ones as one run (needs `wandb login`)
	$(PY) scripts/sync_wandb.py --runs outputs

dashboards: install  ## W&B workspace views for Table 1 / 2 (needs `wandb login` + make sync-wandb)
	$(PY) scripts/wandb_dashboards.py $(DASHBOARD_ARGS)

clean:  ## Remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
