# streamd: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-ingest bench-overload bench-scale bench-tracks bench-recognition bench-files soak soak-reload int8-report gpu-check gpu-pack install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,speed,bench]"
	touch $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

## make run: demo cameras over RTSP and the daemon on streams.yaml (Ctrl-C stops)
run: system-deps $(STAMP)
	./scripts/run-demo.sh

## make test: ruff, mypy and the whole test suite
test: system-deps $(STAMP) lint
	$(BIN)/pytest -ra --cov --cov-report=term:skip-covered

lint: $(STAMP)
	$(BIN)/ruff check streamd devtools tests
	$(BIN)/ruff format --check streamd devtools tests
	$(BIN)/mypy

## make bench: detection throughput and latency, engine alone vs streamd vs naive, with a plot
bench: system-deps $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING detect --out bench-results

## make bench-ingest: decode rate per core, sampled-rate accuracy, CPU per frame against raw PyAV, keyframes
## against all, then resident memory per 1080p camera against PyAV alone
bench-ingest: system-deps $(STAMP)
	$(BIN)/python -m devtools.bench ingest --cameras 3 --seconds 20
	$(BIN)/python -m devtools.bench --log-level WARNING memory --model "$$(./scripts/prepare-model.sh)" --out bench-results

## make bench-overload: 12 cameras on a deliberately small engine for a minute: fairness and priorities
bench-overload: system-deps $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING overload

## make bench-scale: 50 to 400 synthetic cameras through the real batcher, runner, postprocess and sink
bench-scale: $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING scale --out bench-results

## make bench-recognition: the second stage, batched across cameras against one face at a time
bench-recognition: $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING recognition --out bench-results

## make bench-files: recorded video through streamd detect, against a naive loop and the machine's limit
bench-files: $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING files --out bench-results

## make bench-tracks: trackers on clips of moving faces with ground truth (switches, coverage, events)
bench-tracks: $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING tracks --out bench-results

## make soak: 12 RTSP cameras through a real daemon for 30 minutes (SOAK_CAMERAS, SOAK_MINUTES)
SOAK_CAMERAS ?= 12
SOAK_MINUTES ?= 30
soak: system-deps $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING soak --model "$$(./scripts/prepare-model.sh)" \
		--cameras $(SOAK_CAMERAS) --minutes $(SOAK_MINUTES) --out bench-results

## make soak-reload: reload storms (30 edits each) against one daemon with the detector: memory after each,
## before and after malloc_trim, and Python's own allocations: a leak or the allocator's slack (RELOAD_STORMS)
RELOAD_STORMS ?= 20
soak-reload: system-deps $(STAMP)
	$(BIN)/python -m devtools.bench --log-level WARNING reload-soak --storms $(RELOAD_STORMS) \
		--model "$$(./scripts/prepare-model.sh)" --out bench-results

## make int8-report: prepare, collect frames from photo cameras, quantize to Q/DQ INT8, report against FP32
int8-report: system-deps $(STAMP)
	./scripts/int8-report.sh

## make gpu-check: on a machine with an NVIDIA GPU, prove NVDEC, GPU letterbox, TensorRT and NVML with figures
## (GPU_EXTRA=gpu-cuda13 on a CUDA 13 driver)
GPU_EXTRA ?= gpu-cuda12
gpu-check: system-deps $(STAMP)
	$(BIN)/pip install --quiet -e ".[$(GPU_EXTRA)]"
	$(BIN)/streamd --log-level WARNING gpu-check

## make gpu-pack: .gpucheck/ for an offline GPU box with its system Python (then, there:
## scripts/gpu-check-offline.sh run OUTDIR); see docs/gpu.md "GPU status"
gpu-pack: system-deps $(STAMP)
	./scripts/gpu-check-offline.sh prepare

## make install: the systemd service (root): /opt/streamd, user streamd, /etc/streamd/streams.yaml
install:
	./scripts/install-service.sh

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
