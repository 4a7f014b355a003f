#!/usr/bin/env bash
# Prepares target/device/ on the CPU machine, for scripts/device-check.sh to run on a GPU machine
# that has no Rust, no network and minutes of time: the CUDA build of elman (built here with
# scripts/build-cuda.sh), tiny Shakespeare and the PyTorch peer from ../shared. Nothing is built
# there. target/device/ is ignored by git; carry it (it is ~10 MB).
#
#   scripts/device-pack.sh [SHARED]      SHARED: the shared folder (default ../shared)
#
# It runs scripts/build-cuda.sh, which the first time downloads NVIDIA's compiler and libraries
# from PyPI (~1 GB, into ~/.cache/elman) and builds candle's kernels (~15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
-*) echo "device-pack: unknown option $1 (scripts/device-pack.sh --help)" >&2; exit 2 ;;
esac
shared=${1:-../shared}
# What the pack carries from SHARED, checked before the long build.
for f in "$shared/corpora/tinyshakespeare.txt" "$shared/bench/torch_charrnn.py"; do
    [ -f "$f" ] || { echo "device-pack: $f not found (give the shared folder: scripts/device-pack.sh SHARED)" >&2; exit 1; }
done
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
echo "device-pack: carry target/device/ with scripts/ (or the whole checkout) and run scripts/device-check.sh OUT on the GPU machine"
