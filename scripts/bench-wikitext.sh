#!/usr/bin/env bash
# WikiText-2 word-level benchmark: elman (sampled softmax, and full softmax) against the PyTorch peer
# (scripts/torch_wordlm.py: nn.Embedding + nn.RNN(tanh) + nn.Linear, Adam, clip 5), same hidden size,
# batch, bptt and wall-clock training budget, one after the other on this machine. Perplexities are
# the exact single-stream ones on wiki.valid.tokens and wiki.test.tokens.
#
#   scripts/bench-wikitext.sh [SECONDS] [HIDDEN]          (defaults: 300 s, 256)
#   THREADS=1 taskset -c 1 scripts/bench-wikitext.sh       (one pinned core for everything)
#
# Installs nothing: it needs `python3 -m pip install torch` and ../shared/corpora/wikitext-2.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-300}
HIDDEN=${2:-256}
THREADS=${THREADS:-2}
W=../shared/corpora/wikitext-2
[ -f "$W/wiki.train.tokens" ] || { echo "error: $W/wiki.train.tokens not found" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "error: needs PyTorch: python3 -m pip install torch" >&2; exit 1; }
cargo build --release -q
E=target/release/elman
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo "WikiText-2, hidden $HIDDEN, batch 32, bptt 64, $BUDGET s of training each, $THREADS thread(s)" >&2
peer=$(python3 scripts/torch_wordlm.py --data "$W" --seconds "$BUDGET" --hidden "$HIDDEN" --threads "$THREADS")
echo "$peer" >&2
rows=()
for K in 4096 0; do
    "$E" --threads "$THREADS" train "$W/wiki.train.tokens" --val "$W/wiki.valid.tokens" --level word \
        --segmenter spaces --hidden "$HIDDEN" --batch 32 --bptt 64 --time "${BUDGET}s" \
        --eval-every 1000000000 --sampled-softmax "$K" --out "$OUT/k$K" -q
    val=$("$E" --threads "$THREADS" eval --model "$OUT/k$K" "$W/wiki.valid.tokens" --json)
    test=$("$E" --threads "$THREADS" eval --model "$OUT/k$K" "$W/wiki.test.tokens" --json)
    steps=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['progress']['tokens_seen'])" "$OUT/k$K/config.json")
    rows+=("$(python3 -c "
import json,sys
v,t=json.loads(sys.argv[1]),json.loads(sys.argv[2])
name='elman, sampled softmax K=$K' if $K else 'elman, full softmax'
print(f\"| {name} | {int(sys.argv[3]):,} | {int(sys.argv[3])/$BUDGET:,.0f} | {v['perplexity']:.1f} | {t['perplexity']:.1f} |\")
" "$val" "$test" "$steps")")
done
echo
echo "| WikiText-2, H=$HIDDEN, ${BUDGET} s, $THREADS thread(s) | tokens trained | tokens/s | valid ppl | test ppl |"
echo "|---|---|---|---|---|"
python3 -c "
import json,sys
p=json.loads(sys.argv[1])
print(f\"| PyTorch {p['torch']} nn.RNN, full softmax | {p['tokens_trained']:,} | {p['tokens_per_s']:,} | {p['val_ppl']:.1f} | {p['test_ppl']:.1f} |\")
" "$peer"
printf '%s\n' "${rows[@]}"
