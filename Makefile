# ACE Music Studio: `make run` serves the Studio, `make test` runs the whole suite.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
TINY_MODELS ?= tiny-models

.PHONY: run run-tiny test lint format browsers bench-dit container-test clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

## Serve the Studio on http://localhost:$(PORT) with the models from the settings.
run: $(VENV)/.installed
	$(BIN)/streamlit run Home.py --server.port $(PORT)

## Serve the Studio on the tiny random-weight test models (no downloads, runs on a CPU).
run-tiny: $(VENV)/.dev-installed
	$(BIN)/python -m tests.tiny $(TINY_MODELS) > $(TINY_MODELS).env
	. ./$(TINY_MODELS).env && ACE_STUDIO_DATA_DIR=data-tiny $(BIN)/streamlit run Home.py --server.port $(PORT)

## Debian's Chromium for the browser tests (never `playwright install`), ffmpeg for m4a/aac.
browsers:
	@if [ ! -x /usr/bin/chromium ] || ! command -v ffmpeg >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			chromium ffmpeg fonts-noto-color-emoji >/dev/null; \
	fi

lint: $(VENV)/.dev-installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The whole suite: lint, core tests on tiny models, AppTest pages, Playwright in Chromium.
test: $(VENV)/.dev-installed browsers lint
	PYTHONPATH=. $(BIN)/pytest -q

## DiT speed and memory on a GPU (see docs/benchmarks.md).
bench-dit: $(VENV)/.installed
	PYTHONPATH=. $(BIN)/python bench/bench_dit.py

## Build the Docker image from this checkout and serve it from the image (root, podman, no
## Docker engine needed; minutes and ~10 GB of disk, so not part of `test`). See docs/container.md.
container-test: $(VENV)/.dev-installed browsers
	bash tests/container/smoke.sh

clean:
	rm -rf $(VENV) test-artifacts $(TINY_MODELS) $(TINY_MODELS).env data-tiny
