# The README's commands. Each target creates the environment and builds what it needs.
#   make test    install into .venv (building sparkle_fast._C, with CUDA when nvcc is found) and run the tests
#   make demo    all five stages on generated clips with tiny random models (CPU, minutes), with an HTML report
#   make bench   bench/vote_pack.py on this machine (GPU if torch sees one), results under bench/results/
#   make build   rebuild sparkle_fast._C after editing csrc/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_INSTALL := $(PIP) install --disable-pip-version-check -q -c requirements/constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install build test test-gpu gpu-check demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.py pyproject.toml requirements/constraints.txt $(wildcard csrc/*)
	$(PIP_INSTALL) -e '.[test]'
	$(PY) -c "import sparkle_fast, json; print(json.dumps(sparkle_fast.build_info()['extension']))"
	touch $(STAMP)

install: $(STAMP)

build: $(STAMP)
	$(PIP) install --disable-pip-version-check -q --no-deps -e .

test: $(STAMP)
	$(PY) -m pytest -q

# On a machine with a GPU: only the gpu-marked tests, then the benchmark.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu
	$(PY) bench/vote_pack.py

# On a machine whose python3 already has torch, triton, pybind11, pytest and hypothesis and no package registry
# (the lent H100/H200 machines): build in place with that python, run the gpu tests, then the benchmark.
gpu-check:
	python3 -m pip install -q --no-deps --no-build-isolation -e .
	python3 -m pytest -q -m gpu
	for script in vote_pack canny_compose camera_motion decode bait; do python3 bench/$$script.py || exit 1; done

demo: $(STAMP)
	$(VENV)/bin/sparkle-fast demo --out out/demo

bench: $(STAMP)
	$(PY) bench/vote_pack.py

clean:
	rm -rf build *.egg-info sparkle_fast/_C*.so out .pytest_cache .hypothesis
