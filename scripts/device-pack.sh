#!/usr/bin/env bash
# Prepares target/device/ on the CPU machine, for scripts/device-check.sh to run on a GPU machine
# that has no Rust, no network and minutes of time: the CUDA build of elman (built here with
# scripts/build-cuda.sh), tiny Shakespeare and the PyTorch peer from ../shared. Nothing is built
# there. target/device/ is ignored by git; carry it (it is ~10 MB).
#
#   scripts/device-pack.sh [SHARED]      SHARED: the shared folder (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
scripts/build-cuda.sh
pack=target/device
mkdir -p "$pack"
cp target/cuda/release/elman.xz "$pack/elman.xz"
# The CPU build too: the check compares the two on the GPU machine's own CPU.
cargo build --release -q
xz -9 -T0 -c target/release/elman >"$pack/elman-cpu.xz"
cp "$shared/corpora/tinyshakespeare.txt" "$pack/"
cp "$shared/bench/torch_charrnn.py" "$pack/"
du -sh "$pack"
echo "device-pack: carry target/device and run scripts/device-check.sh OUT on the GPU machine"
