"""`edgekit bundle ARTIFACT --device NAME -o DIR`: a self-contained folder an app developer
builds on the device's toolchain.

The folder holds the `.pte` and its edgekit.json (and tokenizer.json), in kernels/ the C++
sources of the edgekit kernels that program calls (with edgekit's threadpool and the
argument-check header generated from the op specs), in runtime/ edgekit's native runner and
`edgekit_runner.h` (its C API), a
CMakeLists.txt that builds them against an ExecuTorch install found by
`find_package(executorch CONFIG)` (the pip wheel's folder works, as do the SDK builds), a C
example of about fifty lines that streams tokens (`stream.c`), and a README with the build
lines for that device. tests/test_bundle.py builds it on this x86-64 host against the pip
ExecuTorch, runs the example and compares its tokens with the Python session's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgekit.errors import EdgekitError

# the kernels' and the runner's sources: a wheel's copy (setup.py), else the source tree's
# kernels/ and runtime/
_PACKAGED = Path(__file__).resolve().parent / "_kernels" / "src"
_TREE = Path(__file__).resolve().parent.parent
KERNELS = _PACKAGED if _PACKAGED.is_dir() else _TREE / "kernels"
RUNTIME = KERNELS / "runtime" if _PACKAGED.is_dir() else _TREE / "runtime"
# the ops whose C++ lives in a file named after another op
KERNEL_FILE = {"silu_mul": "gated", "gelu_tanh_mul": "gated", "causal_conv1d_silu": "causal_conv1d"}
ALWAYS = ("threadpool.cpp", "edgekit_kernel.h", "edgekit_simd.h", "edgekit_threadpool.h")
RUNNER = ("edgekit_runner.cpp", "edgekit_runner.h")


def kernel_sources(ops_used: list[str]) -> list[str]:
    """The kernels/*.cpp files that define the given edgekit ops (names as the manifest lists
    them: "edgekit::mamba_step.out", "edgekit::rwkv7_wkv_inplace.out")."""
    from edgekit.ops import REGISTRY
    files = set()
    for op in ops_used:
        base = op.removeprefix("edgekit::").removesuffix(".out").removesuffix("_inplace")
        if base not in REGISTRY:                 # a manifest is untrusted: never a path
            raise EdgekitError(f"the manifest names edgekit op {op[:60]!r}, which edgekit does not have",
                               expected="ops of " + ", ".join(sorted(REGISTRY)),
                               fix="the manifest was edited or damaged; export the model again")
        name = KERNEL_FILE.get(base, base) + ".cpp"
        if not (KERNELS / name).is_file():
            raise EdgekitError(f"no C++ kernel for edgekit::{base} (looked for kernels/{name})",
                               fix="this edgekit checkout is incomplete; reinstall it")
        files.add(name)
    return sorted(files)


def bundle(artifact: Path, device: str, out: Path) -> Path:
    """Write the bundle (module docstring) into out, a new or empty folder; returns out."""
    import tempfile

    from edgekit import artifact as contract
    from edgekit.profiles import load_profile
    profile = load_profile(device)
    if "pte" not in profile.formats:
        raise EdgekitError(f"device '{device}' runs {', '.join(profile.formats)}, and a bundle is for an "
                           "ExecuTorch .pte", fix="bundle for android-arm64, ios-arm64 or raspberry-pi-5")
    manifest, mpath = contract.read(artifact)
    if "pte" not in manifest.artifacts:
        have = ", ".join(manifest.artifacts) or "nothing"
        raise EdgekitError(f"'{artifact}' holds {have}, and a bundle for '{device}' needs a .pte",
                           fix=f"export one first: edgekit export SRC --device {device} -o DIR")
    entry = manifest.artifacts["pte"]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgekitError(f"output '{out}' exists and is not empty", fix="pass -o with a new folder")
    sources = kernel_sources(list(entry.ops_used.get("edgekit", ())))
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgekit-bundle-", dir=parent))
    try:
        (tmp / "kernels").mkdir()
        for name in (*sources, *ALWAYS):
            shutil.copyfile(KERNELS / name, tmp / "kernels" / name)
        (tmp / "runtime").mkdir()
        for name in RUNNER:
            shutil.copyfile(RUNTIME / name, tmp / "runtime" / name)
        from edgekit.ops import REGISTRY
        from edgekit.ops.cpp_checks import write
        write(str(tmp / "kernels" / "edgekit_op_checks.h"), REGISTRY)
        for name in (entry.file, contract.FILENAME, manifest.tokenizer_file):
            if name:
                shutil.copyfile(mpath.parent / name, tmp / name)
        (tmp / "CMakeLists.txt").write_text(CMAKE)
        (tmp / "stream.c").write_text(EXAMPLE)
        (tmp / "README.md").write_text(_readme(profile, entry.file, sources))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


CMAKE = """\
# edgekit bundle: the edgekit kernels this model calls, the native runner (C API in
# runtime/edgekit_runner.h) and an example, built against an ExecuTorch install.
#   cmake -S . -B build -DCMAKE_PREFIX_PATH=<ExecuTorch install, e.g. the pip wheel's folder>
#   cmake --build build -j
cmake_minimum_required(VERSION 3.19)
project(edgekit_bundle C CXX)
find_package(executorch CONFIG REQUIRED)

file(GLOB EDGEKIT_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/kernels/*.cpp ${CMAKE_CURRENT_SOURCE_DIR}/runtime/*.cpp)
add_library(edgekit_runner SHARED ${EDGEKIT_SOURCES})
target_include_directories(edgekit_runner PRIVATE kernels runtime ${EXECUTORCH_INCLUDE_DIRS})
target_compile_definitions(edgekit_runner PRIVATE ${EXECUTORCH_COMPILE_DEFINITIONS})
target_compile_features(edgekit_runner PRIVATE cxx_std_17)
target_compile_options(edgekit_runner PRIVATE -O3 -fopenmp-simd)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND NOT EDGEKIT_NO_AVX2)
  # edgekit's vector paths are AVX2 + FMA on x86-64
  target_compile_options(edgekit_runner PRIVATE -march=x86-64-v2 -mavx2 -mfma)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64|ARM64" AND NOT EDGEKIT_ARM_BASELINE)
  # and NEON on arm64, with the dot-product instructions for the quantized kernel (ARMv8.2,
  # every target profile's CPU); what tests/test_kernels_arm64.py replays under qemu.
  # -DEDGEKIT_ARM_BASELINE=ON for an ARMv8.0 core (Cortex-A53/A57/A72: Pi 4, Jetson Nano):
  # NEON float paths still, qlinear's scalar dot products
  target_compile_options(edgekit_runner PRIVATE -march=armv8.2-a+dotprod)
endif()
target_link_libraries(edgekit_runner PRIVATE ${EXECUTORCH_LIBRARIES})
set_target_properties(edgekit_runner PROPERTIES BUILD_RPATH "${EXECUTORCH_RUNTIME_LIBRARY_DIR}")

add_executable(stream stream.c)
target_include_directories(stream PRIVATE runtime)
# --no-as-needed: the stock kernels and the XNNPACK backend register themselves at load time
target_link_libraries(stream PRIVATE -Wl,--no-as-needed edgekit_runner ${EXECUTORCH_LIBRARIES})
set_target_properties(stream PROPERTIES BUILD_RPATH "${EXECUTORCH_RUNTIME_LIBRARY_DIR};$<TARGET_FILE_DIR:edgekit_runner>")
"""

EXAMPLE = r"""/* Stream tokens through an edgekit .pte: feed the prompt's token ids, then print N greedy
 * tokens, one step per token, the recurrent state kept inside the program (constant memory).
 *   ./build/stream model.pte N THREADS TOKEN [TOKEN ...]
 * edgekit.json beside the model lists its input and output. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgekit_runner.h"

static int fail(void) {
  fprintf(stderr, "stream: %s\n", edgekit_runner_last_error());
  return 1;
}

static int64_t argmax(const float* y, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (y[i] > y[best]) best = i;
  return best;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s model.pte N THREADS TOKEN [TOKEN ...]\n", argv[0]);
    return 2;
  }
  if (edgekit_runner_threadpool(atoi(argv[3])) < 0) return fail();
  void* r = edgekit_runner_open(argv[1], "forward");
  if (r == NULL) return fail();
  int64_t in_bytes = 0, out_bytes = 0;
  int64_t* token = (int64_t*)edgekit_runner_input(r, 0, &in_bytes);
  if (token == NULL || in_bytes != (int64_t)sizeof(int64_t)) return fail();
  for (int i = 4; i < argc; ++i) {           /* the prompt */
    *token = atoll(argv[i]);
    if (edgekit_runner_step(r) != 0) return fail();
  }
  int n = atoi(argv[2]);
  for (int t = 0; t < n; ++t) {              /* greedy generation */
    const float* logits = (const float*)edgekit_runner_output(r, 0, &out_bytes);
    if (logits == NULL) return fail();
    *token = argmax(logits, out_bytes / (int64_t)sizeof(float));
    printf("%lld%c", (long long)*token, t + 1 < n ? ' ' : '\n');
    if (edgekit_runner_step(r) != 0) return fail();
  }
  edgekit_runner_close(r);
  return 0;
}
"""


def _readme(profile, pte: str, sources: list[str]) -> str:
    build = {
        "android-arm64": "cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake "
                         "-DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-26 "
                         "-DCMAKE_PREFIX_PATH=<ExecuTorch built for arm64-v8a>",
        "ios-arm64": "cmake -S . -B build -G Xcode -DCMAKE_SYSTEM_NAME=iOS -DCMAKE_OSX_ARCHITECTURES=arm64 "
                     "-DCMAKE_PREFIX_PATH=<ExecuTorch built for iOS>",
        "raspberry-pi-5": "cmake -S . -B build -DCMAKE_PREFIX_PATH=$(python3 -c 'import executorch; "
                          "print(list(executorch.__path__)[0])')   # on the Pi, with the executorch wheel",
    }.get(profile.name, "cmake -S . -B build -DCMAKE_PREFIX_PATH=<ExecuTorch install>")
    return f"""# edgekit bundle for {profile.name}

{profile.description}.

- `{pte}`, `edgekit.json`: the model (one step per call; the recurrent state lives inside it).
- `kernels/`: edgekit's kernels this model calls ({', '.join(sources) or 'none'}) and their
  threadpool.
- `runtime/`: the native runner (`edgekit_runner.cpp`) and its C API (`edgekit_runner.h`).
- `stream.c`: feeds prompt token ids and prints greedy tokens.

Build and run:

```sh
{build}
cmake --build build -j
./build/stream {pte} 32 {profile.threads} 1 2 3
```

On this x86-64 host: `cmake -S . -B build -DCMAKE_PREFIX_PATH=$(python -c 'import executorch;
print(list(executorch.__path__)[0])')`. edgekit's kernels have AVX2 paths on x86-64 and NEON
paths (with the dot-product instructions) on arm64. The arm64 build is checked under
qemu-aarch64 against the op references (`make test-arm64` in the edgekit repository); its
speed on arm64 hardware has not been measured. The arm64 build targets ARMv8.2 with the dot
product (`-march=armv8.2-a+dotprod`); for an older core (a Pi 4, a Jetson Nano) add
`-DEDGEKIT_ARM_BASELINE=ON` to the cmake line.
"""
