# Two entry points: `make demo` (the main job) and `make test`. Each creates or reuses the
# virtualenv in $(VENV) and installs what it needs.
#
# CPU torch is pinned (torch==2.13.0): a bare `torch` would pull gigabytes of CUDA wheels.
# GPU users install their own torch build into the venv first and pass TORCH_SPEC= (empty)
# so it is kept, e.g.:
#   python3 -m venv .venv && .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu128
#   make demo TORCH_SPEC=

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robustloss-installed
# glibc keeps freed memory for reuse instead of refaulting it at every step: the `robustloss` command sets
# this itself (src/robustloss/launch.py); pytest is not that command, so the test target sets it here.
TUNED_MALLOC := MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296

.PHONY: demo test install clean

demo: $(STAMP)
	$(VENV)/bin/robustloss demo

test: $(STAMP)
	$(TUNED_MALLOC) $(PY) -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e '.[dev]'
	# torchattacks is a reference implementation for tests and benchmarks only. It declares
	# torchvision (which has no CPU build and would replace torch) but never imports it.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache src/*.egg-info
