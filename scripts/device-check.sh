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
#   check    GPU and CPU give the same model: four plain-SGD steps of each cell trained on each,
#            both scored by `elman eval` on the CPU (equal within 1e-4 relative); a GPU-trained
#            model resumed and sampled on the CPU. A failed check makes the script exit 1.
#   speed    elman's training tokens/s on the GPU (`bench --device cuda`) at the issue's shapes.
#   peer     PyTorch's cuDNN nn.RNN / nn.LSTM at the same shapes (fp32, TF32 off), when torch is
#            installed.
#   cores    the CPU: training and scoring tokens/s at 1, 2, 4, 8, 16 threads.
#   quality  (only with --quality M) tiny Shakespeare, M minutes on the GPU with the defaults,
#            kept in OUT/quality-model and scored on the CPU on the last 10% (the held-out part).
#
# The GPU machine needs this checkout's scripts/ and target/device/ side by side (copy both, or the
# whole checkout), python3, xz, and CUDA 13's cuBLAS, cuBLASLt, cuRAND, NVRTC and runtime libraries
# (found in /usr/local/cuda*/ or a pip install of PyTorch's nvidia-* wheels); the driver must support
# CUDA 13 (nvidia-smi shows "CUDA Version: 13.x").
set -uo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
out=""
stages=check,speed,peer,cores
quality=0
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --stages) stages=${2:?--stages needs a list, e.g. check,speed}; shift 2 ;;
    --quality) quality=${2:?--quality needs minutes}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -*) echo "device-check: unknown option $1 (scripts/device-check.sh --help)" >&2; exit 2 ;;
    *)
        [ -z "$out" ] || { echo "device-check: one OUT folder only ($out, then $1)" >&2; exit 2; }
        out=$1; shift ;;
    esac
done
[ -n "$out" ] || { echo "usage: scripts/device-check.sh OUT [--stages LIST] [--quality MINUTES] [--dry-run]" >&2; exit 2; }
case "$quality" in *[!0-9]*) echo "device-check: --quality takes whole minutes, not $quality" >&2; exit 2 ;; esac
[ "$quality" = 0 ] || stages="$stages,quality"
pack=target/device
mkdir -p "$out" || { echo "device-check: cannot make the folder $out" >&2; exit 1; }
log=$out/log.txt
: >"$log"
say() { echo "$*" | tee -a "$log"; }
want() { [[ ",$stages," == *",$1,"* ]]; }

# ---- the binaries and the CUDA libraries they link ----
for b in elman elman-cpu; do
    # Unpacked again when a newer pack was copied over an old one.
    if [ -f "$pack/$b.xz" ] && { [ ! -x "$pack/$b" ] || [ "$pack/$b.xz" -nt "$pack/$b" ]; }; then
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
for f in "$gpu" "$cpu" "$pack/tinyshakespeare.txt"; do
    [ -e "$f" ] || {
        echo "device-check: $f is missing: run scripts/device-pack.sh on the CPU machine and carry" \
            "target/device/ with the checkout's scripts/ (or try --dry-run here)" >&2
        exit 1
    }
done
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
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    else
        echo "(no nvidia-smi here)"
    fi
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
failed=0
# ---- check: the same model from either device ----
if want check; then
    say "== check"
    {
        echo "| cell | loss (\`elman eval\`, whole text), trained on GPU | trained on CPU | relative difference |"
        echo "|---|---|---|---|"
    } >"$out/check.md"
    fail=0
    for cell in elman lstm gru; do
        # Plain SGD for a few steps: each update is the gradient itself (Adam's first step is about
        # lr·sign(g), blind to a gradient's size), so a wrong gradient moves the loss.
        one_step=(train "$corpus" --cell "$cell" --hidden 128 --batch 32 --bptt 64 --steps 4
            --optimizer sgd --lr 1 --eval-every 4 --val-tokens 20000 --seed 3 -q)
        timeout 120 "$gpu" --device $dev "${one_step[@]}" --out "$work/$cell-cuda" 2>>"$log"
        timeout 120 "$cpu" "${one_step[@]}" --out "$work/$cell-cpu" 2>>"$log"
        v_gpu=$(timeout 60 "$cpu" eval --model "$work/$cell-cuda" "$corpus" --json -q 2>>"$log" | python3 -c "import json,sys; print(json.load(sys.stdin)['nats_per_token'])" 2>>"$log")
        v_cpu=$(timeout 60 "$cpu" eval --model "$work/$cell-cpu" "$corpus" --json -q 2>>"$log" | python3 -c "import json,sys; print(json.load(sys.stdin)['nats_per_token'])" 2>>"$log")
        rel=$(python3 -c "a,b=float('$v_gpu'),float('$v_cpu'); print(f'{abs(a-b)/abs(b):.2e}')" 2>/dev/null || echo "n/a")
        echo "| $cell | $v_gpu | $v_cpu | $rel |" >>"$out/check.md"
        python3 -c "import sys; sys.exit(0 if float('$rel') <= 1e-4 else 1)" 2>/dev/null || fail=1
    done
    # Trained on the GPU, resumed and sampled on the CPU.
    timeout 120 "$cpu" train --resume "$work/elman-cuda" --steps 6 -q 2>>"$log" &&
        timeout 60 "$cpu" sample --model "$work/elman-cuda" --prompt "ROMEO:" --length 80 --seed 1 >"$out/sample.txt" 2>>"$log" &&
        echo "resumed on the CPU to step 6 and sampled: yes" >>"$out/check.md" ||
        { echo "resumed on the CPU and sampled: FAILED (log.txt)" >>"$out/check.md"; fail=1; }
    [ $fail = 0 ] && echo "check: passed" >>"$out/check.md" || { echo "check: FAILED" >>"$out/check.md"; failed=1; }
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
    if [ ! -s "$out/torch-gpu.jsonl" ]; then
        say "peer: PyTorch gave no figures (log.txt says why)"
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
    # Trained on the whole file as `elman train` splits it (the last 10% held out), kept in OUT,
    # and scored on that last 10% as docs/benchmarks.md's quality tables are.
    python3 -c "import sys; t=open(sys.argv[1],encoding='utf-8').read(); open(sys.argv[2],'w',encoding='utf-8').write(t[int(len(t)*0.9):])" \
        "$corpus" "$work/val.txt"
    timeout $((quality * 60 + 240)) "$gpu" --device $dev train "$corpus" --time "${quality}m" --out "$out/quality-model" -q 2>>"$log"
    timeout 120 "$cpu" eval --model "$out/quality-model" "$work/val.txt" --json -q >"$out/quality.json" 2>>"$log"
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
gpu_rows = (one("elman-gpu-rnn.json") or {}).get("train", []) + (one("elman-gpu-lstm.json") or {}).get("train", [])
if gpu_rows:
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
q = one("quality.json")
if q:
    cfg = json.load(open(os.path.join(out, "quality-model", "config.json")))
    print("\n# Quality on the GPU (tiny Shakespeare, the defaults, scored on the last 10%)\n")
    print("| budget | model | tokens trained | nats/char |")
    print("|---|---|---|---|")
    t = cfg["training"].get("time_limit_s") or 0
    m = cfg["model"]
    print(f"| {t / 60:g} min | {m['cell']}, H {m['hidden']} | {cfg['progress']['tokens_seen']:,} | {q['nats_per_token']:.4f} |")
EOF
rm -rf "$work"
say "device-check: done; tables in $out/tables.md"
if [ $failed = 1 ]; then
    say "device-check: the check stage FAILED (check.md, log.txt)"
    exit 1
fi
