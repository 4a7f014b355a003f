#!/usr/bin/env bash
# The GPU and many-core check, run on the GPU machine from target/device/ (scripts/device-pack.sh
# makes it on the CPU machine: nothing is built here). Writes its tables to OUT, stage by stage, so
# whatever finished before a time limit is kept. About 7 minutes without --quality.
#
#   scripts/device-check.sh OUT [--stages check,speed,peer,cores] [--quality MINUTES] [--dry-run]
#
# --dry-run runs every stage on a machine without a GPU (the CPU build in the GPU build's place,
# `--device cpu`, the peer on the CPU, 1 and 2 threads): a check of the script and its tables,
# with no GPU figure in them. Without a pack it uses target/release/elman and ../shared.
#
# Stages:
#   check    GPU and CPU give the same model: one step of each cell trained on each, both scored
#            by `elman eval` on the CPU (equal within 1e-4 relative); a GPU-trained model
#            resumed and sampled on the CPU.
#   speed    elman's training tokens/s on the GPU (`bench --device cuda`) at the issue's shapes.
#   peer     PyTorch's cuDNN nn.RNN / nn.LSTM at the same shapes (fp32, TF32 off), when torch is
#            installed.
#   cores    the CPU: training and scoring tokens/s at 1, 2, 4, 8, 16 threads.
#   quality  (only with --quality M) tiny Shakespeare, M minutes on the GPU with the defaults,
#            scored on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/device-check.sh OUT [--stages LIST] [--quality MINUTES] [--dry-run]}
shift
stages=check,speed,peer,cores
quality=0
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
    --stages) stages=$2; shift 2 ;;
    --quality) quality=$2; stages="$stages,quality"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
pack=target/device
mkdir -p "$out"
log=$out/log.txt
say() { echo "$*" | tee -a "$log"; }
want() { [[ ",$stages," == *",$1,"* ]]; }

# ---- the binaries and the CUDA libraries they link ----
for b in elman elman-cpu; do
    if [ ! -x "$pack/$b" ] && [ -f "$pack/$b.xz" ]; then
        xz -dc "$pack/$b.xz" >"$pack/$b" && chmod +x "$pack/$b"
    fi
done
gpu=$pack/elman
cpu=$pack/elman-cpu
dev=cuda
thread_counts="1 2 4 8 16"
if [ $dry = 1 ]; then
    # Without a pack: this checkout's release build and ../shared.
    [ -x "$cpu" ] || cpu=target/release/elman
    for f in tinyshakespeare.txt:../shared/corpora torch_charrnn.py:../shared/bench; do
        [ -f "$pack/${f%%:*}" ] || { mkdir -p "$pack" && cp "${f#*:}/${f%%:*}" "$pack/"; }
    done
    gpu=$cpu dev=cpu thread_counts="1 2"
fi
libdirs=$(ls -d /usr/local/cuda*/targets/x86_64-linux/lib /usr/local/cuda*/lib64 2>/dev/null | tr '\n' ':')
pylibs=$(python3 - 2>/dev/null <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(r + "/nvidia/**/lib*.so*", recursive=True)})))
EOF
)
export LD_LIBRARY_PATH=${libdirs}${pylibs}:${LD_LIBRARY_PATH:-}
{
    echo "# Machine"
    echo
    [ $dry = 1 ] && echo "DRY RUN: no GPU used, every 'GPU' figure is the CPU's"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    echo
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|CPU family|^Model:|Flags" | sed 's/Flags:.*avx512f.*/Flags: … avx512f …/'
    echo
    echo "missing libraries:"
    ldd "$gpu" | grep "not found" || echo "  none"
} >"$out/machine.md" 2>&1
cat "$out/machine.md" | tee -a "$log"
if ldd "$gpu" | grep -q "not found"; then
    say "device-check: the CUDA build cannot find its libraries (see machine.md); set LD_LIBRARY_PATH"
    exit 1
fi

corpus=$pack/tinyshakespeare.txt
work=$(mktemp -d)
# ---- check: the same model from either device ----
if want check; then
    say "== check"
    {
        echo "| cell | val loss, trained on GPU | trained on CPU | relative difference |"
        echo "|---|---|---|---|"
    } >"$out/check.md"
    fail=0
    for cell in elman lstm gru; do
        one_step=(train "$corpus" --cell "$cell" --hidden 128 --batch 32 --bptt 64 --steps 1
            --eval-every 1 --val-tokens 20000 --seed 3 -q)
        timeout 120 "$gpu" --device $dev "${one_step[@]}" --out "$work/$cell-cuda" 2>>"$log"
        timeout 120 "$cpu" "${one_step[@]}" --out "$work/$cell-cpu" 2>>"$log"
        v_gpu=$(timeout 60 "$cpu" eval --model "$work/$cell-cuda" "$corpus" --json -q 2>>"$log" | python3 -c "import json,sys; print(json.load(sys.stdin)['nats_per_token'])" 2>>"$log")
        v_cpu=$(timeout 60 "$cpu" eval --model "$work/$cell-cpu" "$corpus" --json -q 2>>"$log" | python3 -c "import json,sys; print(json.load(sys.stdin)['nats_per_token'])" 2>>"$log")
        rel=$(python3 -c "a,b=float('$v_gpu'),float('$v_cpu'); print(f'{abs(a-b)/abs(b):.2e}')" 2>/dev/null || echo "n/a")
        echo "| $cell | $v_gpu | $v_cpu | $rel |" >>"$out/check.md"
        python3 -c "import sys; sys.exit(0 if float('$rel') <= 1e-4 else 1)" 2>/dev/null || fail=1
    done
    # Trained on the GPU, resumed and sampled on the CPU.
    timeout 120 "$cpu" train --resume "$work/elman-cuda" --steps 3 -q 2>>"$log" &&
        timeout 60 "$cpu" sample --model "$work/elman-cuda" --prompt "ROMEO:" --length 80 --seed 1 >"$out/sample.txt" 2>>"$log" &&
        echo "resumed on the CPU to step 3 and sampled: yes" >>"$out/check.md" ||
        { echo "resumed on the CPU and sampled: FAILED (log.txt)" >>"$out/check.md"; fail=1; }
    [ $fail = 0 ] && echo "check: passed" >>"$out/check.md" || echo "check: FAILED" >>"$out/check.md"
    cat "$out/check.md" | tee -a "$log"
fi

shapes=(256,64,64 1024,128,64 1024,512,128)
# ---- speed: elman on the GPU ----
if want speed; then
    say "== speed"
    args=()
    for s in "${shapes[@]}"; do args+=(--shape "$s"); done
    timeout 150 "$gpu" --device $dev bench --only train "${args[@]}" --seconds 5 --json >"$out/elman-gpu-rnn.json" 2>>"$log"
    timeout 60 "$gpu" --device $dev bench --only train --cell lstm --shape 512,64,100 --seconds 5 --json >"$out/elman-gpu-lstm.json" 2>>"$log"
fi

# ---- peer: PyTorch cuDNN on the same GPU ----
if want peer; then
    say "== peer"
    if [ $dry = 1 ] || python3 -c "import torch; assert torch.cuda.is_available()" 2>>"$log"; then
        : >"$out/torch-gpu.jsonl"
        for s in "${shapes[@]}"; do
            IFS=, read -r h b t <<<"$s"
            timeout 60 python3 "$pack/torch_charrnn.py" speed --device $dev --hidden "$h" --batch "$b" \
                --bptt "$t" --seconds 5 >>"$out/torch-gpu.jsonl" 2>>"$log"
        done
        timeout 60 python3 "$pack/torch_charrnn.py" speed --device $dev --cell lstm --hidden 512 --batch 64 \
            --bptt 100 --seconds 5 >>"$out/torch-gpu.jsonl" 2>>"$log"
    else
        say "peer: no PyTorch with CUDA here; the peer's figures are missing"
    fi
fi

# ---- cores: the CPU at 1 … 16 threads ----
if want cores; then
    say "== cores"
    : >"$out/cores.jsonl"
    for n in $thread_counts; do
        timeout 90 "$cpu" --threads "$n" bench --only train,eval --shape 512,64,100 --shape 1024,128,64 \
            --seconds 3 --json 2>>"$log" | python3 -c "import json,sys; print(json.dumps(json.load(sys.stdin)))" >>"$out/cores.jsonl"
    done
fi

# ---- quality: the defaults on the GPU for M minutes ----
if want quality && [ "$quality" != 0 ]; then
    say "== quality ($quality min)"
    timeout $((quality * 60 + 240)) "$gpu" --device $dev train "$corpus" --time "${quality}m" --out "$work/quality" -q 2>>"$log"
    timeout 120 "$cpu" eval --model "$work/quality" "$corpus" --json -q >"$out/quality.json" 2>>"$log"
fi

# ---- the tables ----
python3 - "$out" <<'EOF' | tee "$out/tables.md"
import json, os, sys
out = sys.argv[1]
def lines(p):
    p = os.path.join(out, p)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
def one(p):
    p = os.path.join(out, p)
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
machine = os.path.join(out, "machine.md")
if os.path.exists(machine) and "DRY RUN" in open(machine).read():
    print("**DRY RUN: no GPU was used; the 'GPU' and 'cuDNN' columns are CPU figures.**\n")
print("# GPU training tokens/s (fp32)\n")
print("| cell | H, B, T | elman `--device cuda` | PyTorch cuDNN | ratio |")
print("|---|---|---|---|---|")
torch = lines("torch-gpu.jsonl")
def peer(cell, h, b, t):
    for r in torch:
        if r.get("hidden") == h and r.get("batch") == b and r.get("bptt") == t and r.get("cell", "rnn") == cell:
            return r.get("tokens_per_s")
for f, cell in (("elman-gpu-rnn.json", "rnn"), ("elman-gpu-lstm.json", "lstm")):
    r = one(f)
    for x in (r or {}).get("train", []):
        p = peer(cell, x["hidden"], x["batch"], x["bptt"])
        ratio = f"{x['tokens_per_s'] / p:.2f}×" if p else "n/a"
        print(f"| {cell} | {x['hidden']}, {x['batch']}, {x['bptt']} | {x['tokens_per_s']:,.0f} | {p and f'{p:,.0f}' or 'n/a'} | {ratio} |")
cores = lines("cores.jsonl")
if cores:
    print("\n# CPU threads: training and scoring tokens/s\n")
    print("| threads | train 512/64/100 | train 1024/128/64 | score H=512 | score H=1024 | train 1024 vs 2 threads |")
    print("|---|---|---|---|---|---|")
    base = next((c for c in cores if c["threads"] == 2), None)
    for c in cores:
        t = {x["hidden"]: x["tokens_per_s"] for x in c["train"]}
        e = {x["hidden"]: x["per_s"] for x in c["eval_tokens_per_s"]}
        b2 = base and {x["hidden"]: x["tokens_per_s"] for x in base["train"]}.get(1024)
        sc = f"{t.get(1024, 0) / b2:.2f}×" if b2 else "n/a"
        print(f"| {c['threads']} | {t.get(512, 0):,.0f} | {t.get(1024, 0):,.0f} | {e.get(512, 0):,.0f} | {e.get(1024, 0):,.0f} | {sc} |")
q = os.path.join(out, "quality.json")
if os.path.exists(q):
    print("\n# Quality on the GPU\n")
    print(open(q).read())
EOF
rm -rf "$work"
say "device-check: done; tables in $out/tables.md"
