#!/usr/bin/env bash
# Quality for the same wall-clock time, elman's defaults against the PyTorch peers' defaults, on every
# reference corpus: elman is given only the text and --time (plus --level word --segmenter spaces and
# WikiText's own validation file at word level); the peer is scripts/torch_curve.py, the training loop
# of ../shared/bench/torch_charrnn.py quality (char level: nn.Embedding + nn.RNN H=256, B=64, T=64,
# Adam 2e-3, clip 5) or of scripts/torch_wordlm.py (WikiText-2, B=32). Both are scored the same way:
# the exact loss of one stream over the validation text (the last 10% of the file; wiki.valid.tokens),
# elman's best checkpoint by `elman eval`, the peer's best of its evaluations (EVALS of them, 8 by
# default, 4 on WikiText; its clock stops while it evaluates, so its whole budget is training, while
# elman's validation runs inside its own budget).
#
#   scripts/quality-table.sh [OUT] [BUDGETS] [CORPORA]
#   scripts/quality-table.sh runs/quality "180 600"        # the README's table: ~85 minutes
#   scripts/quality-table.sh runs/q 60 tinyshakespeare     # one corpus, one minute
#
# By default the two programs run at the same time, each on a core of its own with one thread
# (taskset -c 0 and -c 1): half the wall time of running them one after the other, and neither
# disturbs the other's caches. SEQUENTIAL=1 runs them one after the other with 2 threads each.
# Writes OUT/table.md, each run's metrics (OUT/<corpus>-<budget>-{elman,pytorch}) and a chart of
# both validation curves against time per corpus and budget (OUT/<corpus>-<budget>.svg). A row
# already in OUT/table.md is kept, so an interrupted table goes on where it stopped.
# CELL=lstm (or gru) trains `--cell lstm` against the peer's nn.LSTM instead of the Elman cells.
# Installs nothing: needs `python3 -m pip install torch` and ../shared/corpora/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quality}
BUDGETS=${2:-180 600}
CORPORA=${3:-tinyshakespeare war_and_peace_en xiyouji_zh sanguoyanyi_zh tang300_zh wikitext-2}
C=../shared/corpora
[ -d "$C" ] || { echo "error: $C not found" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || { echo "error: needs PyTorch: python3 -m pip install torch" >&2; exit 1; }
cargo build --release -q
E=$PWD/target/release/elman
mkdir -p "$OUT/val"
if [ "${SEQUENTIAL:-0}" = 1 ]; then
    PIN_E=(); PIN_P=(); THREADS=2
else
    PIN_E=(taskset -c 0); PIN_P=(taskset -c 1); THREADS=1
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
isa=$("$E" bench --only gemm --seconds 0.2 --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin).get('kernels',{}).get('isa','?'))" 2>/dev/null || echo "?")
CELL=${CELL:-elman}
EVALS=${EVALS:-8}
if [ "$CELL" = elman ]; then ELMAN_CELL=(); PEER_CELL=rnn; else ELMAN_CELL=(--cell "$CELL"); PEER_CELL=$CELL; fi
if [ ! -s "$OUT/table.md" ]; then
    echo "| corpus | budget | elman tokens | elman val | PyTorch tokens | PyTorch val | elman − PyTorch |" > "$OUT/table.md"
    echo "|---|---|---|---|---|---|---|" >> "$OUT/table.md"
fi

for budget in $BUDGETS; do
    for corpus in $CORPORA; do
        run="$OUT/$corpus-$budget"
        t=$([ $((budget % 60)) = 0 ] && echo "$((budget / 60)) min" || echo "$budget s")
        if grep -q "^| $corpus | $t |" "$OUT/table.md"; then continue; fi
        rm -rf "$run-elman" "$run-pytorch"
        if [ "$corpus" = wikitext-2 ]; then
            W=$C/wikitext-2
            val=$W/wiki.valid.tokens
            elman_cmd=("${PIN_E[@]}" "$E" --threads "$THREADS" train "$W/wiki.train.tokens" --val "$val"
                       --level word --segmenter spaces --time "${budget}s" --out "$run-elman" -q "${ELMAN_CELL[@]}")
            # Each exact evaluation of WikiText's validation text takes the peer ~25 s of one core.
            peer_cmd=("${PIN_P[@]}" python3 scripts/torch_curve.py --word "$W" --seconds "$budget"
                      --evals 4 --threads "$THREADS" --cell "$PEER_CELL" --out "$run-pytorch")
        else
            val=$OUT/val/$corpus.txt
            python3 -c "import sys; t=open(sys.argv[1],encoding='utf-8').read(); open(sys.argv[2],'w',encoding='utf-8').write(t[int(len(t)*0.9):])" \
                "$C/$corpus.txt" "$val"
            elman_cmd=("${PIN_E[@]}" "$E" --threads "$THREADS" train "$C/$corpus.txt" --time "${budget}s"
                       --out "$run-elman" -q "${ELMAN_CELL[@]}")
            peer_cmd=("${PIN_P[@]}" python3 scripts/torch_curve.py --corpus "$C/$corpus.txt" --seconds "$budget"
                      --evals "$EVALS" --threads "$THREADS" --cell "$PEER_CELL" --out "$run-pytorch")
        fi
        echo "== $corpus, $budget s" >&2
        if [ "${SEQUENTIAL:-0}" = 1 ]; then
            "${elman_cmd[@]}"
            "${peer_cmd[@]}" > "$run-pytorch.json"
        else
            "${elman_cmd[@]}" &
            epid=$!
            "${peer_cmd[@]}" > "$run-pytorch.json"
            wait "$epid"
        fi
        "${PIN_E[@]}" "$E" --threads "$THREADS" eval --model "$run-elman" "$val" --json -q > "$run-elman.json"
        "$E" plot "$run-elman" "$run-pytorch" --x time --validation-only --out "$run.svg" > /dev/null
        python3 - "$corpus" "$budget" "$run-elman/config.json" "$run-elman.json" "$run-pytorch.json" >> "$OUT/table.md" <<'PY'
import json, math, sys
corpus, budget, cfg, ev, peer = sys.argv[1], int(sys.argv[2]), *[json.load(open(p)) for p in sys.argv[3:]]
word = corpus == "wikitext-2"
def show(nats):
    return f"{math.exp(nats):.1f} ppl" if word else f"{nats:.4f} ({nats / math.log(2):.3f} bpc)"
e, p = ev["nats_per_token"], peer["best_val_loss"]
t = f"{budget // 60} min" if budget % 60 == 0 else f"{budget} s"
print(f"| {corpus} | {t} | {cfg['progress']['tokens_seen']:,} | {show(e)} | {peer['tokens_trained']:,} | {show(p)} | {e - p:+.4f} nats |")
PY
        tail -1 "$OUT/table.md" >&2
    done
done
echo "Validation: nats per token ($([ -n "${PIN_E[*]}" ] && echo "each program on a core of its own, 1 thread" || echo "one after the other, 2 threads each")); $cpu, elman kernels: $isa; cell: $CELL." > "$OUT/note.md"
cat "$OUT/table.md" "$OUT/note.md"
