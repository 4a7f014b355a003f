#!/usr/bin/env bash
# elman against the PyTorch peer on this machine, interleaved (A B A B …), medians and ratios.
#
#   scripts/bench-vs-pytorch.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds, 4 s per measurement)
#   BASELINE=/path/to/older/elman scripts/bench-vs-pytorch.sh   also runs that binary in every round
#                                                                (a before/after column, same run)
#   CELL=lstm scripts/bench-vs-pytorch.sh                      an LSTM (or gru) on both sides: elman
#                                                                --cell, the peer's nn.LSTM / nn.GRU
#
# Needs python3 with torch (python3 -m pip install torch): this script installs nothing. It builds
# elman in release mode, then for every item runs `elman bench` and the peer
# (../shared/bench/torch_charrnn.py, plus scripts/torch_eval_peer.py for scoring and GEMM) in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-4}
peer=../shared/bench/torch_charrnn.py
[ -f "$peer" ] || { echo "error: $peer not found (../shared must sit beside this repository)" >&2; exit 1; }
python3 -c "import torch" 2>/dev/null || {
  echo "error: PyTorch is not installed; install it yourself with: python3 -m pip install torch" >&2; exit 1; }
cargo build --release --quiet
elman=target/release/elman
threads=${THREADS:-2}
cell=${CELL:-elman}
case "$cell" in
  elman) peer_cell=rnn ;;
  lstm|gru) peer_cell=$cell ;;
  *) echo "error: CELL=$cell: expected elman, lstm or gru" >&2; exit 1 ;;
esac
# Every elman binary measured, as "who:path": this build, and BASELINE's when given.
bins="elman:$elman"
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || { echo "error: BASELINE=$BASELINE is not an executable" >&2; exit 1; }
  [ "$cell" = elman ] || { echo "error: BASELINE compares Elman cells only" >&2; exit 1; }
  bins="$bins before:$BASELINE"
fi
# An older build knows no --cell: it is only ever asked for the Elman cell, which it defaults to.
cell_for() { if [ "$1" = elman ] && [ "$cell" = elman ]; then echo "--cell elman"; elif [ "$1" = elman ]; then echo "--cell $cell"; fi; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  for shape in "128 32 64" "256 64 64" "512 64 100" "1024 128 64"; do
    set -- $shape
    for b in $bins; do
      "${b#*:}" --threads "$threads" bench $(cell_for "${b%%:*}") --only train --shape "$1,$2,$3" --seconds "$secs" --json |
        python3 -c "import json,sys; r=json.load(sys.stdin)['train'][0]; print(json.dumps({'who':'${b%%:*}','item':'train $1/$2/$3','v':r['tokens_per_s']}))" >> "$out"
    done
    python3 "$peer" speed --cell "$peer_cell" --hidden "$1" --batch "$2" --bptt "$3" --seconds "$secs" --threads "$threads" |
      python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(json.dumps({'who':'torch','item':'train $1/$2/$3','v':r['tokens_per_s']}))" >> "$out"
  done
  for h in 256 512; do
    for b in $bins; do
      "${b#*:}" --threads "$threads" bench $(cell_for "${b%%:*}") --only sample --seconds "$secs" --json |
        python3 -c "import json,sys; [print(json.dumps({'who':'${b%%:*}','item':'sample %d' % x['hidden'],'v':x['per_s']})) for x in json.load(sys.stdin)['sample_chars_per_s'] if x['hidden']==$h]" >> "$out"
    done
    python3 "$peer" sample --cell "$peer_cell" --hidden "$h" --chars 3000 --threads "$threads" |
      python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(json.dumps({'who':'torch','item':'sample $h','v':r['chars_per_s']}))" >> "$out"
    for b in $bins; do
      "${b#*:}" --threads "$threads" bench $(cell_for "${b%%:*}") --only eval --seconds "$secs" --json |
        python3 -c "import json,sys; [print(json.dumps({'who':'${b%%:*}','item':'eval %d' % x['hidden'],'v':x['per_s']})) for x in json.load(sys.stdin)['eval_tokens_per_s'] if x['hidden']==$h]" >> "$out"
    done
    python3 scripts/torch_eval_peer.py eval --cell "$peer_cell" --hidden "$h" --seconds "$secs" --threads "$threads" |
      python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(json.dumps({'who':'torch','item':'eval $h','v':r['tokens_per_s']}))" >> "$out"
  done
  $elman --threads "$threads" bench --only gemm --seconds "$secs" --json |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'who':'elman','item':'gemm','v':r['gemm_gflops'],'kernels':r.get('kernels')}))" >> "$out"
  python3 scripts/torch_eval_peer.py gemm --seconds "$secs" --threads "$threads" |
    python3 -c "import json,sys; print(json.dumps({'who':'torch','item':'gemm','v':json.loads(sys.stdin.read())['gflops']}))" >> "$out"
done

python3 - "$out" "$threads" "$cell" <<'PY'
import json, statistics, sys, platform
rows = [json.loads(l) for l in open(sys.argv[1])]
items = list(dict.fromkeys(r["item"] for r in rows))
whos = [w for w in ("elman", "before", "torch") if any(r["who"] == w for r in rows)]
med = {(w, i): statistics.median([r["v"] for r in rows if r["who"] == w and r["item"] == i])
       for w in whos for i in items if any(r["who"] == w and r["item"] == i for r in rows)}
before = "before" in whos
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
avx512 = any("avx512f" in l for l in open("/proc/cpuinfo") if l.startswith("flags"))
rounds = len([r for r in rows if r["who"] == "torch" and r["item"] == items[0]])
cell = sys.argv[3]
peer_module = {"elman": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}[cell]
print(f"\nmachine: {cpu} ({'AVX-512' if avx512 else 'AVX2, no AVX-512'}), {sys.argv[2]} threads, fp32; medians of {rounds} interleaved runs")
print(f"cell: elman --cell {cell} against PyTorch's {peer_module}\n")
unit = {"train": "tokens/s", "sample": "chars/s", "eval": "tokens/s", "gemm": "GFLOP/s"}
head = f"| {'measurement':<42} | {'elman':>10} |"
rule = f"|{'-'*44}|{'-'*12}|"
if before:
    head += f" {'before':>10} | {'after/before':>12} |"
    rule += f"{'-'*12}|{'-'*14}|"
print(head + f" {'PyTorch':>10} | {'ratio':>6} |")
print(rule + f"{'-'*12}|{'-'*8}|")
for i in items:
    kind, arg = (i.split() + [""])[:2]
    if kind == "train":
        label = "training H/B/T " + arg
    elif kind == "sample":
        label = "sampling H=" + arg + " (batch 1)"
    elif kind == "eval":
        label = "scoring H=" + arg + " (64 streams)"
    else:
        label = "GEMM 2048³"
    e, t = med[("elman", i)], med[("torch", i)]
    line = f"| {label + ' (' + unit[kind] + ')':<42} | {e:>10.0f} |"
    if before:
        b = med.get(("before", i))
        line += (f" {b:>10.0f} | {e / b:>11.2f}× |" if b else f" {'—':>10} | {'—':>12} |")
    print(line + f" {t:>10.0f} | {e / t:>5.2f}× |")
peak = max(med[("elman", "gemm")], med[("torch", "gemm")])
h = 1024
tok = med[("elman", "train 1024/128/64")]
gates = {"elman": 1, "lstm": 4, "gru": 3}[cell]
useful = 6 * (gates * h * h + h * 65) * tok / 1e9
print(f"\nH=1024 useful work: 6·({gates if gates > 1 else ''}H²+H·V)·tokens/s = {useful:.1f} GFLOP/s = {100 * useful / peak:.0f}% of the machine's "
      f"best 2048³ GEMM rate ({peak:.0f} GFLOP/s)")
k = next((r.get("kernels") for r in rows if r["who"] == "elman" and r.get("kernels")), None)
if k:
    print(f"elman's kernels: {k['isa']} (recurrence: {k['packed']}; large products: {k['gemm']}; element-wise: {k['elementwise']})")
PY
