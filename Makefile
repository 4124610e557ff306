# squarenet — `make demo` runs the whole loop on this machine; `make test` runs every test.
# Both create the virtualenv (.venv) when it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= trainer,predictor,predictor-tensorflow,dev
PYTEST_ARGS ?=

.PHONY: venv proto vendor-js test test-fast lint demo bench images clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed ## create or update the virtualenv

proto: venv ## regenerate squarenet/v1 from protos/ (the committed code must match)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/squarenet/v1/predictor.proto

vendor-js: ## fetch the dashboard's Chart.js and the tests' axe-core from npm (pinned; committed)
	bash scripts/vendor-js.sh

test: venv ## the whole suite: unit, integration (real processes), containers, manifests
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## the quick subset for the edit-test loop (no training-heavy or container tests)
	$(PY) -m pytest -m "not slow and not docker" $(PYTEST_ARGS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: venv ## train with the article's settings, serve it, print predictions, stop everything
	$(PY) scripts/demo.py

bench: venv ## speed and accuracy against baselines measured in the same run
	$(PY) bench/run_all.py

images: ## build the trainer and predictor images (needs a Docker engine)
	bash scripts/build-images.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
