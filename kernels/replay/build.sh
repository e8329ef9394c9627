#!/usr/bin/env bash
# Build the replay driver (kernels/replay/replay.cpp): every kernel and its generated argument
# checks, without ExecuTorch, for this host or, cross-compiled, for aarch64.
#
#   bash kernels/replay/build.sh PYTHON OUT [host|aarch64]
#
# PYTHON generates the checks header from the op specs (the same header build.sh generates).
# host: the host's compiler and kernels/build.sh's flags (AVX2/FMA where the CPU has them).
# aarch64: aarch64-linux-gnu-g++, -march=armv8.2-a+dotprod (every phone SoC since 2017,
# Jetson Orin's Cortex-A78AE, Raspberry Pi 5's Cortex-A76), linked static for qemu-aarch64.
set -euo pipefail

PY=${1:?usage: build.sh PYTHON OUT [host|aarch64]}
OUT=${2:?usage: build.sh PYTHON OUT [host|aarch64]}
TARGET=${3:-host}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KERNELS=$(dirname "$HERE")
ROOT=$(dirname "$KERNELS")

case "$TARGET" in
  host)
    CXX=${CXX:-g++}
    ARCH=()
    if [ "$(uname -m)" = x86_64 ]; then
      ARCH=(-march=x86-64-v2)
      if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then ARCH+=(-mavx2 -mfma); fi
    fi
    LINK=() ;;
  aarch64)
    CXX=${CROSS_CXX:-aarch64-linux-gnu-g++}
    command -v "$CXX" >/dev/null || { echo "build.sh: $CXX not found — apt-get install g++-aarch64-linux-gnu (make test-arm64 does)" >&2; exit 1; }
    ARCH=(-march=armv8.2-a+dotprod)
    LINK=(-static) ;;
  *) echo "build.sh: the target must be host or aarch64, got '$TARGET'" >&2; exit 1 ;;
esac

# Every kernel source (the native runner, a runtime over ExecuTorch's Method, is in runtime/).
SRCS=("$KERNELS"/*.cpp)
mkdir -p "$(dirname "$OUT")"
GEN="$(dirname "$OUT")/generated-$TARGET"
mkdir -p "$GEN"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$KERNELS/gen_checks.py" "$GEN/edgekit_op_checks.h"
# One object per source, kept in OBJ (the test reads each kernel's instruction mix from its
# own object), two compiles at a time; then the driver linked from them.
OBJ="$(dirname "$OUT")/obj-$TARGET"
rm -rf "$OBJ"
mkdir -p "$OBJ"
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
# The same optimization flags as the kernel library (kernels/build.sh): -O3, -fopenmp-simd.
FLAGS=(-std=c++17 -O3 -fopenmp-simd "${ARCH[@]}" -DEDGEKIT_REPLAY -Wall -Wextra -Wno-unused-parameter
       -I"$KERNELS" -I"$GEN")
running=()
for f in "${SRCS[@]}" "$HERE/replay.cpp"; do
  "$CXX" "${FLAGS[@]}" -c "$f" -o "$OBJ/$(basename "$f" .cpp).o" &
  running+=("$!")
  if [ "${#running[@]}" -ge 2 ]; then wait "${running[0]}"; running=("${running[@]:1}"); fi
done
for p in "${running[@]}"; do wait "$p"; done
"$CXX" "$OBJ"/*.o -o "$TMP" -pthread "${LINK[@]}"
mv -f "$TMP" "$OUT"
echo "build.sh: built $OUT ($TARGET, ${#SRCS[@]} kernel sources)"
