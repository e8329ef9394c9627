# The README's two commands are `make demo` and `make test`. Both are idempotent: each
# creates the environments if they are missing, installs what is needed, then does its job.

PY311    ?= python3.11
PY310    ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.13/bin/python
VENV     := .venv
LAVAVENV := .venv-lava
PY       := $(VENV)/bin/python
KERNELS  := build/kernels/libedgekit_et_kernels.so

.PHONY: setup preflight demo test bench clean kernels

setup: preflight $(VENV)/.installed $(LAVAVENV)/.installed $(KERNELS)

# What setup needs from the machine, each missing piece named with its fix.
preflight:
	@command -v $(PY311) >/dev/null || { echo "make: $(PY311) not found — install Python 3.11 or run: make PY311=/path/to/python3.11"; exit 1; }
	@test -x $(PY310) || { echo "make: Python 3.10 for Lava not found at $(PY310) — pyenv install 3.10.13, or run: make PY310=/path/to/python3.10"; exit 1; }
	@command -v g++ >/dev/null || { echo "make: g++ not found — it builds the ExecuTorch kernels (apt-get install g++)"; exit 1; }

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PY311) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: it comes from the local CPU wheel, never the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,quant]'
	touch $@

$(LAVAVENV)/.installed: requirements-lava.txt
	test -x $(LAVAVENV)/bin/python || $(PY310) -m venv $(LAVAVENV)
	$(LAVAVENV)/bin/python -m pip install -q --upgrade pip
	$(LAVAVENV)/bin/python -m pip install -q -r requirements-lava.txt
	touch $@

kernels: $(KERNELS)
$(KERNELS): $(VENV)/.installed $(wildcard kernels/*.cpp kernels/*.h kernels/*.py edgekit/ops/*.py) kernels/build.sh
	bash kernels/build.sh $(PY) $@

demo: setup
	$(VENV)/bin/edgekit demo

test: setup
	$(PY) -m pytest -q -x -n 2 --dist loadfile --durations=15 tests

bench: setup
	$(PY) benchmarks/step_latency.py

clean:
	rm -rf build
