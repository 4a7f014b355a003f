#!/usr/bin/env bash
# The big-text benchmark (docs/benchmarks.md, "Big texts"): preparation speed, peak private memory
# (RssAnon: file pages the kernel can drop do not count) while preparing and while training, and
# the time to a first step when the token cache already holds the text. Run it alone on the machine.
#
#   scripts/big-text-bench.sh OUT GB [ARGS...]
#
# Writes OUT/big.txt (GB gigabytes: scripts/big-text.py, from ../shared/corpora) unless it is there,
# caches into OUT/cache, and prints one table row per phase. ARGS go to `elman train` (default:
# --hidden 512 --time 2m --val-tokens 200000). Needs about 3 × GB of free disk (the text, and a token
# file of 2 bytes per character for a text with Chinese).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1
GB=$2
shift 2
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then ARGS=(--hidden 512 --time 2m --val-tokens 200000); fi
BIN=${BIN:-target/release/elman}
mkdir -p "$OUT"
[ -f "$OUT/big.txt" ] || python3 scripts/big-text.py "$OUT/big.txt" "$GB"

# Runs `elman train` with the args, sampling its RssAnon every 0.1 s; prints the peaks before and
# after the run says what the token cache did (preparation, then training), and the seconds to
# that line.
measure() {
    local log=$OUT/run.log samples=$OUT/rss.txt
    : >"$samples"
    local t0
    t0=$(date +%s.%N)
    "$BIN" train "$OUT/big.txt" --cache-dir "$OUT/cache" --out "$OUT/ck" --force "$@" >"$log" 2>&1 &
    local pid=$! prepared=""
    while kill -0 "$pid" 2>/dev/null; do
        local rss
        rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [ -z "$prepared" ] && grep -q "token cache:" "$log"; then
            prepared=$(echo "$(date +%s.%N) - $t0" | bc)
            echo "--" >>"$samples"
        fi
        [ -n "$rss" ] && echo "$rss" >>"$samples"
        sleep 0.1
    done
    wait "$pid" || { cat "$log"; exit 1; }
    awk -v prep="$prepared" '
        BEGIN {phase = 0}
        /^--/ {phase = 1; next}
        { if ($1 > max[phase]) max[phase] = $1 }
        END { printf "peak RssAnon: preparing %.0f MB, training %.0f MB; cache line after %.1f s\n", max[0] / 1024, max[1] / 1024, prep }
    ' "$samples"
    grep "token cache:" "$log"
    grep -E "^step" "$log" | tail -1 || true
}

echo "== $(lscpu | grep -m1 'Model name' | sed 's/ *Model name: *//'), family $(lscpu | awk '/^CPU family/ {print $3}') model $(lscpu | awk '/^Model:/ {print $2}')"
echo "== $(du -hL "$OUT/big.txt" | cut -f1) text; first run (the token file is written)"
rm -rf "$OUT/cache"
measure "${ARGS[@]}"
echo "== second run (the token file is read back)"
measure "${ARGS[@]}"
