#!/usr/bin/env bash
# `elman serve` under load with a reload in the middle (docs/benchmarks.md): trains a model on the
# bundled corpus into OUT/m, serves it with --watch, runs scripts/serve-load.py (CLIENTS clients for
# SECONDS) and, half-way, resumes the run so that it saves a new checkpoint into the served folder.
# Prints the latency table and fails on any failed request or mixed-up model. Run it alone.
#
#   scripts/serve-load.sh OUT [SECONDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1
SECONDS_=${2:-10}
CLIENTS=${3:-64}
BIN=${BIN:-target/release/elman}
mkdir -p "$OUT"
"$BIN" train corpora/elman-demo.txt --out "$OUT/m" --force --steps 200 --eval-every 100 \
    --schedule plateau -q
"$BIN" serve --model "$OUT/m" --watch --port 0 2>"$OUT/serve.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening on" "$OUT/serve.log" && break; sleep 0.1; done
BASE=$(grep -o "http://[0-9.:]*" "$OUT/serve.log" | head -1)
python3 scripts/serve-load.py "$BASE" "$SECONDS_" "$CLIENTS" &
LOAD=$!
sleep "$(echo "$SECONDS_ / 4" | bc -l)"
"$BIN" train --resume "$OUT/m" --steps 230 -q
wait $LOAD
grep "reloaded" "$OUT/serve.log"
