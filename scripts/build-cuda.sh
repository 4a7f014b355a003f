#!/usr/bin/env bash
# Builds elman with its GPU path (`--features cuda`) on a machine with no GPU and no CUDA toolkit:
# NVIDIA's compiler and libraries come from PyPI, pinned to one CUDA version, and the binary is
# linked against a stub libcuda (the real driver library is loaded on the GPU machine).
#
#   scripts/build-cuda.sh            release binary: target/cuda/release/elman (+ elman.xz)
#   scripts/build-cuda.sh --check    compile only, no linking (cargo clippy: nvcc builds every
#                                    kernel to PTX, rustc checks and lints the CUDA bodies); needs
#                                    only the compiler wheels; what .ci/run does
#
# Environment:
#   ELMAN_CUDA_VERSION   the toolkit's CUDA version, 13.0 (default): at most the GPU driver's
#                        version, or the driver rejects the PTX ("Unsupported .version")
#   CUDA_COMPUTE_CAP     the GPU's compute capability, 90 (default: H100 and H200)
#   ELMAN_CUDA_TOOLKIT   where the toolkit is installed (default ~/.cache/elman/cuda-VERSION)
#
# On the GPU machine the binary needs libcublas, libcublasLt, libcurand, libnvrtc and libcudart of
# the same major version on LD_LIBRARY_PATH (scripts/device-check.sh looks for them). See
# docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
--check) mode=check ;;
"") ;;
*)
    echo "usage: scripts/build-cuda.sh [--check]" >&2
    exit 2
    ;;
esac

version=${ELMAN_CUDA_VERSION:-13.0}
major=${version%%.*}
tk=${ELMAN_CUDA_TOOLKIT:-$HOME/.cache/elman/cuda-$version}
cu=$tk/pkgs/nvidia/cu$major

pip_in() {
    local dir=$1
    shift
    python3 -m pip install -q --disable-pip-version-check --target "$dir" "$@"
}
# The compiler (what --check needs): nvcc, its front end and NVVM, the runtime's headers, and
# CCCL's (cuda_fp16.h includes <nv/target>).
if [ ! -f "$tk/.compiler" ]; then
    echo "build-cuda: installing CUDA $version's compiler from PyPI into $tk"
    mkdir -p "$tk"
    pip_in "$tk/pkgs" "nvidia-cuda-nvcc==$version.*" "nvidia-cuda-crt==$version.*" \
        "nvidia-cuda-runtime==$version.*" "nvidia-nvvm==$version.*"
    pip_in "$tk/cccl" "nvidia-cuda-cccl==$version.*"
    cp -rn "$tk/cccl/nvidia/cu$major/include/." "$cu/include/"
    touch "$tk/.compiler"
fi
# The libraries the binary links (a full build only; cuBLAS alone is ~500 MB).
if [ "$mode" = build ] && [ ! -f "$tk/.libraries" ]; then
    echo "build-cuda: installing CUDA $version's libraries from PyPI into $tk"
    pip_in "$tk/pkgs" "nvidia-cuda-nvrtc==$version.*" "nvidia-cublas==$version.*" "nvidia-curand==10.*"
    touch "$tk/.libraries"
fi

# The link folder: the wheels' libraries under the names the linker asks for, and a stub libcuda
# defining every driver function cudarc declares (the linker only needs the names).
lib=$tk/link
mkdir -p "$lib"
if [ "$mode" = build ] && [ ! -f "$lib/libcuda.so" ]; then
    mkdir -p "$lib"
    for so in cublas cublasLt nvrtc cudart curand; do
        ln -sf "$(ls "$cu"/lib/lib$so.so.* | grep -v alt | head -1)" "$lib/lib$so.so"
    done
    cudarc=$(ls -d ~/.cargo/registry/src/*/cudarc-* 2>/dev/null | tail -1)
    if [ -z "$cudarc" ]; then
        cargo fetch -q
        cudarc=$(ls -d ~/.cargo/registry/src/*/cudarc-* | tail -1)
    fi
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" |
        sort -u | sed -E 's/^pub unsafe fn (.*)/int \1(void) { return 999; }/' >"$lib/stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$lib/stub.c"
fi

export PATH=$cu/bin:$PATH
export CUDA_ROOT=$cu CUDA_PATH=$cu
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="${RUSTFLAGS:-} -L $lib"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
nvcc --version | tail -1

if [ "$mode" = check ]; then
    # clippy checks what check does (nvcc builds every kernel to PTX; rustc checks the CUDA
    # bodies), and lints them.
    cargo clippy --release --features cuda --all-targets -- -D warnings
    echo "build-cuda: the CUDA build compiles and is lint-clean (CUDA $version, compute $CUDA_COMPUTE_CAP)"
else
    cargo build --release --features cuda
    bin=$CARGO_TARGET_DIR/release/elman
    xz -9 -T0 -k -f "$bin"
    echo "build-cuda: $bin ($(du -h "$bin" | cut -f1); $(du -h "$bin.xz" | cut -f1) as $bin.xz)"
fi
