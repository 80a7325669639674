# `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint install dev clean runtime-smoke

$(VENV)/.base: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[train]"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.base

dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(VENV)/bin/oddspot demo

test: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache

# The torch-free runtime from the built wheel: a fresh venv with `oddspot[runtime]` only (no torch)
# scores images with a model exported by the dev venv.
runtime-smoke: $(VENV)/.dev
	rm -rf build/smoke && mkdir -p build/smoke
	$(PY) -m pip wheel --quiet --no-deps --disable-pip-version-check -w build/smoke/dist .
	$(PYTHON) -m venv build/smoke/venv
	build/smoke/venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		"$$(ls build/smoke/dist/oddspot-*.whl)[runtime]"
	! build/smoke/venv/bin/python -c "import torch"
	$(VENV)/bin/oddspot inspect data -o build/smoke/data -c brick --n-train 12 --n-test-good 3 --n-test-bad 3 --tile 64
	$(VENV)/bin/oddspot fit build/smoke/data -c brick -o build/smoke/run
	$(VENV)/bin/oddspot export build/smoke/run --format openvino -o build/smoke/exported
	build/smoke/venv/bin/oddspot predict build/smoke/exported build/smoke/data/brick/test -o build/smoke/scores
	build/smoke/venv/bin/oddspot fit build/smoke/data -c brick -o build/smoke/nofit 2>&1 | grep -q "pip install 'oddspot\[train\]'"
