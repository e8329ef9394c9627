# The README's two commands are `make demo` and `make test`. Both are idempotent: each
# creates the environments if they are missing, installs what is needed, then does its job.

PY311    ?= python3.11
PY310    ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.13/bin/python
VENV     := .venv
LAVAVENV := .venv-lava
PY       := $(VENV)/bin/python
KERNELS  := build/kernels/libedgekit_et_kernels.so

.PHONY: setup preflight demo test test-arm64 arm64-tools bench clean kernels

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
$(KERNELS): $(VENV)/.installed $(wildcard kernels/*.cpp kernels/*.h kernels/*.py runtime/*.cpp runtime/*.h edgekit/ops/*.py) kernels/build.sh
	bash kernels/build.sh $(PY) $@

demo: setup
	$(VENV)/bin/edgekit demo

# The suite includes the aarch64 kernels under qemu (tests/test_kernels_arm64.py): their tools
# are installed first, and EDGEKIT_REQUIRE_ARM64=1 turns a missing one into a failure. On a
# machine without apt-get, `make test ARM64=skip` runs the rest (those tests then skip, saying so).
ARM64 ?= require
ifeq ($(ARM64),skip)
test: setup
	$(PY) -m pytest -q -x -n 2 --dist loadfile --durations=15 tests
else
test: setup arm64-tools
	EDGEKIT_REQUIRE_ARM64=1 $(PY) -m pytest -q -x -n 2 --dist loadfile --durations=15 tests
endif

# The C++ kernels cross-compiled for aarch64 (NEON + dot product) and replayed under
# qemu-aarch64 against the op references: the transcript of issue 17's arm64 item.
test-arm64: setup arm64-tools
	EDGEKIT_REQUIRE_ARM64=1 $(PY) -m pytest -q -s tests/test_kernels_arm64.py "tests/test_op_cfc_step.py::test_tanh8_accuracy"

# Debian's cross compiler and user-mode qemu, installed when missing (apt-get: root, or sudo).
ARM64_TOOLS := aarch64-linux-gnu-g++ aarch64-linux-gnu-objdump qemu-aarch64
arm64-tools:
	@missing=0; for t in $(ARM64_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "make: the arm64 tools are missing ($(ARM64_TOOLS)) and this user cannot apt-get — run as root: apt-get install g++-aarch64-linux-gnu qemu-user, or make test ARM64=skip"; exit 1; fi; \
	  command -v apt-get >/dev/null || { echo "make: the arm64 tools are missing and there is no apt-get — install an aarch64 g++ cross compiler and qemu-user (qemu-aarch64)"; exit 1; }; \
	  echo "make: installing g++-aarch64-linux-gnu and qemu-user (apt-get)"; \
	  $$SUDO apt-get install -y -q --no-install-recommends g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user >/dev/null; } \
	    || { echo "make: apt-get could not install g++-aarch64-linux-gnu qemu-user"; exit 1; }; \
	fi

bench: setup
	$(PY) benchmarks/step_latency.py

clean:
	rm -rf build
