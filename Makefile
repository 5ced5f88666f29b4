# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment first (torch 2.13 CPU from pip's find-links when present).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# torch first, pinned to the CPU build, so that `torch>=2.1` in the extras installs nothing more.
TORCH ?= torch==2.13.0
# The tritonserver binary (Triton 2.51, Python backend, CPU) for the serving tests and serve-demo.
PYTRITON ?= nvidia-pytriton==0.7.0

.PHONY: venv test lint test-unit test-integration demo demo-bpnet serve-demo gpu-check bench images docker-up docker-down slurm-up slurm-down clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[local,dev,cluster,serve]'
	$(BIN)/python -m pip install -q --no-deps "$(PYTRITON)"
	rm -f $(VENV)/.installed-*
	touch $@

# Unit + integration tests. Docker tests skip when no engine answers, unless POSE_REQUIRE_DOCKER=1.
test: venv
	$(BIN)/python -m pytest -q -ra

# ruff on the whole tree, mypy on the launcher (settings in pyproject.toml); tests/test_lint.py
# runs the same two, so `make test` enforces them too.
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

test-unit: venv
	$(BIN)/python -m pytest -q -ra tests/launcher tests/workloads

test-integration: venv
	$(BIN)/python -m pytest -q -ra tests/integration

# Simple Pose on the embedded synthetic dataset, local runner when there is no Docker.
demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

demo-bpnet: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_bpnet.sh

# What only a GPU can show (AMP, NCCL, TensorRT parity, throughput), as one table: ~8 min on one
# modern GPU. scripts/gpu_check.py --quick runs the same code small on a CPU.
gpu-check: venv
	$(BIN)/python scripts/gpu_check.py

# The demo's model served by tritonserver (Python backend, CPU): export, start, query, stop.
serve-demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/serve_demo.sh

# Every benchmark runs; the ones whose gate failed are listed at the end (and make fails).
bench: venv
	@failed=; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "gates not met:$$failed"; exit 1; fi

clean:
	rm -rf demo_data results .pytest_cache

# --- Docker engine and images (scripts/; see containers/README.md) --------------------------
# A private engine on its own socket, so that CI and the container tests never touch (or need)
# a system engine. Point DOCKER_HOST elsewhere to build on another engine.
POSE_DOCKER_DIR ?= /tmp/pose-docker
POSE_DOCKER_HOST ?= unix://$(POSE_DOCKER_DIR)/docker.sock

docker-up:
	POSE_DOCKER_DIR=$(POSE_DOCKER_DIR) bash scripts/dockerd.sh start
	@echo "use it with: export DOCKER_HOST=$(POSE_DOCKER_HOST)"

docker-down:
	POSE_DOCKER_DIR=$(POSE_DOCKER_DIR) bash scripts/dockerd.sh stop

# A private 2-node Slurm cluster on this machine (slurm-wlm + munge from apt) for --runner slurm.
slurm-up:
	bash scripts/slurm.sh start

slurm-down:
	bash scripts/slurm.sh stop

# pose-pytorch on a debootstrapped Debian base with the CPU torch wheel (what CI builds). With
# NVIDIA's images at hand, run `pose images build pytorch|tensorrt` instead.
images: venv docker-up
	DOCKER_HOST=$(POSE_DOCKER_HOST) bash scripts/make_base_image.sh pose-base:bookworm
	DOCKER_HOST=$(POSE_DOCKER_HOST) PATH="$(CURDIR)/$(BIN):$$PATH" POSE_BASE_IMAGE=pose-base:bookworm \
		bash scripts/build_image.sh pytorch
