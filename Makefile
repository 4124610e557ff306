# squarenet — `make demo` runs the whole loop on this machine; `make test` runs every test.
# Both create the virtualenv (.venv) when it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= trainer,predictor,predictor-tensorflow,dev
PYTEST_ARGS ?=
ROUNDS ?= 1

.PHONY: venv proto vendor-js test test-fast test-under-load lint demo bench client-venvs bench-venvs images cluster-build cluster-up cluster-down clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed ## create or update the virtualenv

PROTOS := protos/squarenet/v1/predictor.proto $(sort $(shell find protos/squarenet/third_party -name '*.proto'))

proto: venv ## regenerate squarenet/v1 and squarenet/third_party from protos/ (the committed code must match)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	find squarenet/third_party -type d -exec sh -c 'test -e "$$1/__init__.py" || : > "$$1/__init__.py"' _ {} \;

vendor-js: ## fetch the dashboard's Chart.js and the tests' axe-core from npm (pinned; committed)
	bash scripts/vendor-js.sh

test: venv ## the whole suite: unit, integration (real processes), containers, manifests
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## the quick subset for the edit-test loop (no training-heavy, container or cluster tests)
	$(PY) -m pytest -m "not slow and not docker and not cluster and not node" $(PYTEST_ARGS)

test-under-load: venv ## the suite (or PYTEST_ARGS) with every core saturated by stress-ng, ROUNDS times in a row
	bash scripts/under-load.sh --rounds $(ROUNDS) $(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff, mypy and the import contracts (pyproject.toml's [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: venv ## train with the article's settings, serve it, print predictions, stop everything
	$(PY) scripts/demo.py

client-venvs: ## the virtualenvs of the third-party clients the protocol tests drive (cached)
	bash scripts/client-venv.sh triton >/dev/null
	bash scripts/client-venv.sh tfserving >/dev/null

bench-venvs: ## the virtualenvs of the servers bench/protocols.py compares with (cached)
	bash scripts/client-venv.sh mlserver >/dev/null || echo "MLServer cannot be installed: see above"
	bash scripts/client-venv.sh kserve >/dev/null || echo "KServe cannot be installed: see above"

bench: venv bench-venvs ## speed and accuracy against baselines measured in the same run
	$(PY) bench/run_all.py

images: ## build the trainer and predictor images (needs a Docker engine)
	bash scripts/build-images.sh

cluster-build: ## build the control plane's binaries once per version (~/.cache/squarenet-cluster); NODE=real adds the node's
	NODE=$(NODE) bash scripts/cluster/cluster.sh build

cluster-up: ## start etcd, API server, controller manager, scheduler and kwok nodes (NODE=real: one real node); var/cluster/kubeconfig
	NODE=$(NODE) bash scripts/cluster/cluster.sh up

cluster-down: ## stop the control plane (by PID) and remove var/cluster
	bash scripts/cluster/cluster.sh down

clean:
	bash scripts/cluster/cluster.sh down
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
