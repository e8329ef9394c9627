#!/usr/bin/env bash
# Build every kernels/*.cpp (edgekit's ExecuTorch kernels) and runtime/*.cpp (its native runner, a
# runtime over ExecuTorch's Method, not an op kernel) into ONE shared library.
#
#   bash kernels/build.sh PYTHON OUT.so
#
# PYTHON is the interpreter whose executorch wheel supplies the headers and libexecutorch.so
# (the same library the Python runtime registers kernels into). One library on purpose: two
# different .so files registering the same op abort the process at load time.
# Rebuilds only when a source/header/this script/libexecutorch.so is newer than OUT (~2 s).
# Extra flags: EDGEKIT_KERNEL_CXXFLAGS (e.g. "-march=native"); EDGEKIT_KERNEL_FORCE=1 rebuilds.
# EDGEKIT_SIMD=off builds the scalar fallbacks (what a CPU without AVX2/FMA runs): no -mavx2/-mfma,
# and -mno-avx after EDGEKIT_KERNEL_CXXFLAGS, so no `__AVX2__`/`__FMA__` path is compiled in.
# Give it its own OUT (tests/test_kernels_scalar.py: build/kernels-scalar/): the up-to-date
# check compares times, not flags.
set -euo pipefail

PY=${1:?usage: build.sh PYTHON OUT.so}
OUT=${2:?usage: build.sh PYTHON OUT.so}
SIMD=${EDGEKIT_SIMD:-auto}
case "$SIMD" in auto|off) ;; *) echo "build.sh: EDGEKIT_SIMD must be auto or off, got '$SIMD'" >&2; exit 1;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CXX=${CXX:-g++}

shopt -s nullglob
RUNTIME="$ROOT/runtime"
SRCS=("$HERE"/*.cpp "$RUNTIME"/*.cpp)
[ ${#SRCS[@]} -gt 0 ] || { echo "build.sh: no kernels/*.cpp found" >&2; exit 1; }

# executorch is a namespace package in the 1.x wheels (executorch.__file__ is None).
ET=$("$PY" -c 'import executorch; print(list(executorch.__path__)[0])')
[ -f "$ET/lib/libexecutorch.so" ] || { echo "build.sh: $ET/lib/libexecutorch.so not found" >&2; exit 1; }

# Up to date unless a source, a header, this script or the wheel's libexecutorch.so is newer.
# When it is, touch OUT so make (whose other prerequisites may be newer) stops asking.
if [ -f "$OUT" ] && [ "${EDGEKIT_KERNEL_FORCE:-0}" != 1 ]; then
  stale=0
  for f in "${SRCS[@]}" "$HERE"/*.h "$RUNTIME"/*.h "$HERE/build.sh" "$ET/lib/libexecutorch.so" "$ROOT"/edgekit/ops/*.py "$HERE/gen_checks.py"; do
    [ "$f" -nt "$OUT" ] && stale=1
  done
  if [ $stale = 0 ]; then touch "$OUT"; echo "build.sh: $OUT is up to date"; exit 0; fi
fi

# The library is built on the machine that runs it (make setup): AVX2/FMA when this CPU has
# them (a build/ copied to a CPU without AVX2 needs `make kernels` again), else the x86-64-v2
# baseline; not -march=native, which would tie it to one CPU model. No -ffast-math: the
# reductions vectorize through `omp simd reduction` (-fopenmp-simd, no OpenMP runtime).
# EDGEKIT_SIMD=off: the x86-64-v2 baseline whatever this CPU has, and NOSIMD (after the extra
# flags) turns AVX/AVX2/FMA off even under "-march=native". On aarch64 the NEON paths
# (edgekit_simd.h; qlinear's needs the dot product, ARMv8.2) are built where the CPU has
# asimddp, and EDGEKIT_SIMD=off builds without Advanced SIMD (+nosimd): the scalar loops.
ARCH=()
NOSIMD=()
if [ "$(uname -m)" = x86_64 ]; then
  if [ "$SIMD" = off ]; then
    ARCH=(-march=x86-64-v2)
    NOSIMD=(-mno-avx -mno-fma)
  elif grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null; then
    ARCH=(-march=x86-64-v2 -mavx2 -mfma)
  else
    ARCH=(-march=x86-64-v2)
  fi
elif [ "$(uname -m)" = aarch64 ]; then
  if [ "$SIMD" = off ]; then
    NOSIMD=(-march=armv8-a+nosimd)
  elif grep -qw asimddp /proc/cpuinfo 2>/dev/null; then
    ARCH=(-march=armv8.2-a+dotprod)
  fi
fi

mkdir -p "$(dirname "$OUT")"
TMP="$OUT.tmp.$$"
GEN="$(dirname "$OUT")/generated"
trap 'rm -f "$TMP"' EXIT
# The kernels' argument checks, generated from the op specs (kernels/gen_checks.py), so the
# C++ kernels refuse a bad call with the Python validator's words.
mkdir -p "$GEN"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$HERE/gen_checks.py" "$GEN/edgekit_op_checks.h"
# shellcheck disable=SC2086
"$CXX" -std=c++17 -O3 -shared -fPIC -fopenmp-simd "${ARCH[@]}" ${EDGEKIT_KERNEL_CXXFLAGS:-} "${NOSIMD[@]}" \
  -Wall -Wextra -Wno-unused-parameter \
  -DC10_USING_CUSTOM_GENERATED_MACROS -DET_EVENT_TRACER_ENABLED \
  -I"$HERE" -I"$RUNTIME" -I"$GEN" -I"$ET/include" -I"$ET/include/executorch/runtime/core/portable_type/c10" \
  "${SRCS[@]}" -o "$TMP" \
  -L"$ET/lib" -lexecutorch -Wl,-rpath,"$ET/lib"
mv -f "$TMP" "$OUT"  # atomic: a process that already mapped the old file keeps it intact
if [ "$SIMD" = off ]; then echo "build.sh: built $OUT from ${#SRCS[@]} source(s), SIMD off"
else echo "build.sh: built $OUT from ${#SRCS[@]} source(s)"; fi
