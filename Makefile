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

.PHONY: install build test test-gpu gpu-check gpu-wheels demo bench clean

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
# (the lent H100/H200 machines), in one call of under 9 minutes on one H200: install the wheels carried in .whl/ (if
# any), build in place with that python, then bench/gpu_check.py: `sparkle-fast selftest` (parity on every backend
# at Sparkle sizes, decode, bench, compute-sanitizer), the gpu-marked tests whose imports resolve there, and the
# bench/ scripts; results in bench/results/ (gpu_check-<device>.json, selftest-<device>.json) with the device named.
# Nothing there imports PyAV, diffusers or transformers at module level on this path; test files and scripts that
# need a module the machine lacks are listed as skipped with the module's name. `make gpu-wheels` (here, with the
# registry) puts opencv-python-headless (58 MiB, abi3: any python) in .whl/: the references of canny, control_video,
# track_points and dilate_mask need it. PyAV (cp-specific, ~35 MB) does not fit beside it in the 64 MiB carry, so
# decode parity and the video gpu tests stay skipped there.
gpu-check:
	if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps .whl/*.whl; fi
	python3 -m pip install -q --no-deps --no-build-isolation -e .
	python3 bench/gpu_check.py

gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(PIP) download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 -d .whl \
		"opencv-python-headless$$(grep -i '^opencv-python-headless' requirements/constraints.txt | sed 's/^[^=<>]*//')"

demo: $(STAMP)
	$(VENV)/bin/sparkle-fast demo --out out/demo

bench: $(STAMP)
	$(PY) bench/vote_pack.py

clean:
	rm -rf build *.egg-info sparkle_fast/_C*.so out .pytest_cache .hypothesis
