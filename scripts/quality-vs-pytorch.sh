#!/usr/bin/env bash
# Quality for the same wall-clock time: the PyTorch peer (../shared/bench/torch_charrnn.py quality) and
# elman train the same model size on tiny Shakespeare (last 10% held out) for SECONDS each, one after
# the other on this machine; prints the validation loss each reached (nats/char, bpc).
#
#   scripts/quality-vs-pytorch.sh [SECONDS] [HIDDEN] [-- extra elman train flags]   (defaults: 180, 512)
#
# Installs nothing: needs `python3 -m pip install torch` and ../shared/corpora/tinyshakespeare.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-180}
HIDDEN=${2:-512}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
[ ${#EXTRA[@]} -eq 0 ] && EXTRA=(--anneal)
C=../shared/corpora/tinyshakespeare.txt
[ -f "$C" ] || { echo "error: $C not found" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "error: needs PyTorch: python3 -m pip install torch" >&2; exit 1; }
cargo build --release -q
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
peer=$(python3 ../shared/bench/torch_charrnn.py quality --corpus "$C" --seconds "$BUDGET" --hidden "$HIDDEN" \
    --batch 64 --bptt 64 --threads 2)
target/release/elman --threads 2 train "$C" --hidden "$HIDDEN" --batch 64 --bptt 64 --time "${BUDGET}s" \
    --out "$OUT/m" -q "${EXTRA[@]}"
python3 - "$peer" "$OUT/m/config.json" "${EXTRA[*]}" <<'PY'
import json, math, sys
p = json.loads(sys.argv[1]); c = json.load(open(sys.argv[2])); extra = sys.argv[3]
e = c["progress"]["best_val_loss"]
print(f"| {p['seconds']:.0f} s, H={p['hidden']}, B=64, T=64, 2 threads | tokens trained | val nats/char | val bpc |")
print("|---|---|---|---|")
print(f"| PyTorch {p['torch']} (torch_charrnn.py) | {p['tokens_trained']:,} | {p['val_nats_per_char']:.4f} | {p['val_bpc']:.4f} |")
print(f"| elman {extra} | {c['progress']['tokens_seen']:,} | {e:.4f} | {e / math.log(2):.4f} |")
PY
