#!/usr/bin/env bash
# Does a longer budget give a better model? elman's defaults (only the text and --time, plus --level
# word --segmenter spaces and WikiText's own validation file at word level) for each budget on each
# reference corpus, scored as the quality table scores them: the exact loss of one stream over the
# validation text (the last 10% of the file; wiki.valid.tokens), from the best checkpoint by
# `elman eval`. Two runs at a time, each on a core of its own with one thread (as
# scripts/quality-table.sh runs elman beside the peer), so a row here is comparable with a row there.
# The longest runs go first and each core takes the next run when it is free, so the cores end
# together.
#
#   scripts/budget-table.sh [OUT] [BUDGETS] [CORPORA]
#   scripts/budget-table.sh runs/budgets "180 600"                 # every corpus: ~40 minutes
#   CELL="elman lstm gru" scripts/budget-table.sh runs/cells "180 600 1800" tinyshakespeare  # ~65 min
#
# Writes OUT/table.md (a row per corpus, cell and budget, with the gain over the budget before) and
# keeps each run (OUT/<corpus>-<cell>-<budget>, scored in OUT/<corpus>-<cell>-<budget>.json). A run
# already scored is kept, so an interrupted table goes on where it stopped. CELL names the cells to
# train (default elman); ARGS adds options to every run (e.g. ARGS="--average 0" to measure without a
# default). Needs ../shared/corpora/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/budgets}
BUDGETS=${2:-180 600}
CORPORA=${3:-tinyshakespeare war_and_peace_en xiyouji_zh sanguoyanyi_zh tang300_zh wikitext-2}
C=../shared/corpora
[ -d "$C" ] || { echo "error: $C not found" >&2; exit 1; }
cargo build --release -q
E=$PWD/target/release/elman
CELLS=${CELL:-elman}
read -r -a EXTRA <<< "${ARGS:-}"
mkdir -p "$OUT/val"
touch "$OUT/table.md"

# One run, on core $1: trains, scores the best checkpoint, writes OUT/<corpus>-<cell>-<budget>.json.
one() {
    local core=$1 corpus=$2 cell=$3 budget=$4
    local run=$OUT/$corpus-$cell-$budget val
    [ -s "$run.json" ] && return 0
    rm -rf "$run"
    if [ "$corpus" = wikitext-2 ]; then
        val=$C/wikitext-2/wiki.valid.tokens
        taskset -c "$core" "$E" --threads 1 train "$C/wikitext-2/wiki.train.tokens" --val "$val" \
            --level word --segmenter spaces --time "${budget}s" --out "$run" -q --cell "$cell" \
            "${EXTRA[@]}"
    else
        val=$OUT/val/$corpus.txt
        taskset -c "$core" "$E" --threads 1 train "$C/$corpus.txt" --time "${budget}s" --out "$run" -q \
            --cell "$cell" "${EXTRA[@]}"
    fi
    taskset -c "$core" "$E" --threads 1 eval --model "$run" "$val" --json -q > "$run.json.tmp"
    mv "$run.json.tmp" "$run.json"
    echo "== $corpus, $cell, $budget s: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nats_per_token'])" "$run.json")" >&2
}

# The validation texts, then the jobs, longest first. Each core takes the next job from a shared
# counter when it is free (a lock keeps two from taking the same one).
for corpus in $CORPORA; do
    if [ "$corpus" != wikitext-2 ]; then
        python3 -c "import sys; t=open(sys.argv[1],encoding='utf-8').read(); open(sys.argv[2],'w',encoding='utf-8').write(t[int(len(t)*0.9):])" \
            "$C/$corpus.txt" "$OUT/val/$corpus.txt"
    fi
done
mapfile -t jobs < <(for b in $BUDGETS; do for corpus in $CORPORA; do for cell in $CELLS; do
    echo "$b $corpus $cell"
done; done; done | sort -s -k1,1nr)
echo 0 > "$OUT/.next"
worker() {
    local core=$1 i
    while :; do
        i=$(flock "$OUT/.next" bash -c 'i=$(cat "$1"); echo $((i + 1)) > "$1"; echo "$i"' _ "$OUT/.next")
        [ "$i" -lt ${#jobs[@]} ] || return 0
        read -r b corpus cell <<< "${jobs[$i]}"
        one "$core" "$corpus" "$cell" "$b"
    done
}
worker 0 &
w0=$!
worker 1
wait "$w0"
rm -f "$OUT/.next"

{
    echo "| corpus | cell | budget | chosen | tokens trained | val (nats/token) | gain over the budget before |"
    echo "|---|---|---|---|---|---|---|"
    for corpus in $CORPORA; do for cell in $CELLS; do
        prev=""
        for b in $(printf '%s\n' $BUDGETS | sort -n); do
            python3 - "$corpus" "$cell" "$b" "$OUT/$corpus-$cell-$b/config.json" "$OUT/$corpus-$cell-$b.json" "$prev" <<'PY'
import json, sys
corpus, cell, budget, cfg, ev, prev = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.load(open(sys.argv[4])), json.load(open(sys.argv[5])), sys.argv[6]
e = ev["nats_per_token"]
t = f"{budget // 60} min" if budget % 60 == 0 else f"{budget} s"
gain = f"{float(prev) - e:+.4f}" if prev else ""
m, tr = cfg["model"], cfg["training"]
chosen = f"H {m['hidden']}" + (f" ×{m['layers']}" if m["layers"] > 1 else "") + f", dropout {tr.get('dropout', 0):g}"
chosen += f", average {tr['average']:g}" if tr.get("average") else ""
print(f"| {corpus} | {cell} | {t} | {chosen} | {cfg['progress']['tokens_seen']:,} | {e:.4f} | {gain} |")
PY
            prev=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nats_per_token'])" "$OUT/$corpus-$cell-$b.json")
        done
    done; done
    cpu=$(lscpu | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2}')
    fam=$(lscpu | awk -F: '/^CPU family/ {gsub(/ /, "", $2); print $2}')
    model=$(lscpu | awk -F: '/^Model:/ {gsub(/ /, "", $2); print $2}')
    echo
    echo "Each run on a core of its own, 1 thread, two at a time; $cpu (family $fam, model $model); ARGS: ${ARGS:-none}."
} > "$OUT/table.md"
cat "$OUT/table.md"
