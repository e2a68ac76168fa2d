#!/usr/bin/env bash
# Speed and memory at the papers' scale on one NVIDIA GPU, in under 8 minutes (issue #12).
#
# Run from anywhere on a GPU machine with the checkout and its .venv (no network needed):
#     bench/gpu.sh                       # or: bash bench/gpu.sh 2>&1 | tee gpu-bench.txt
# CPU smoke run at tiny sizes (a few minutes):  bench/gpu.sh --tiny --device cpu
#     (or SOFTREF_BENCH_TINY=1 SOFTREF_BENCH_DEVICE=cpu bench/gpu.sh)
#
# Parts, each under its own `timeout` so that a slow one cannot eat the others' time:
#   (a) image extraction: Unicom ViT-B/32, random weights, 224 px, fp16 autocast, JPEGs decoded by
#       DataLoader workers, against the model-only forward        (bench/gpu_extract.py)
#   (b) a CUSA training step of CLIP ViT-B/32 (open_clip, random init) at batch 128, fp32 and
#       bf16 autocast: ms per step, peak GPU memory               (bench/gpu_train_step.py)
#   (c) evaluation at COCO 5K (5,000 x 25,000, D 512) on the GPU with softref's metrics against
#       one GEMM                                                   (bench/scale.py --sections eval)
#   (d) faiss-gpu against faiss-cpu on a reference-sized index, if this venv's FAISS has GPU
#       support (it says so if not)                                (bench/gpu_faiss.py)
# A summary at the end names each part OK, FAILED (exit status) or TIMED OUT; the script exits 1
# if any part did not finish cleanly. Environment: PYTHON (default .venv/bin/python),
# SOFTREF_BENCH_BUDGET (seconds for the whole run, default 465).
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-$REPO/.venv/bin/python}"
# The checkout's package, wherever the venv's editable install was made.
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

TINY="${SOFTREF_BENCH_TINY:-0}"
DEVICE="${SOFTREF_BENCH_DEVICE:-cuda}"
BUDGET="${SOFTREF_BENCH_BUDGET:-465}"
while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --device) DEVICE="${2:?--device needs a value (cuda or cpu)}"; shift ;;
        --device=*) DEVICE="${1#--device=}" ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument '$1' (expected --tiny, --device cuda|cpu)" >&2; exit 2 ;;
    esac
    shift
done
KILL_AFTER=5

if [ ! -x "$PY" ]; then
    echo "bench/gpu.sh: no Python at $PY (set PYTHON, or carry the checkout's .venv along)" >&2
    exit 2
fi

echo "== softref GPU benchmarks: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $DEVICE$([ "$TINY" = 1 ] && echo ', TINY sizes (smoke run, numbers mean nothing)')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/   GPU: /'
fi
if ! "$PY" - "$DEVICE" <<'EOF'
import sys
import torch
device = sys.argv[1]
cuda = torch.cuda.is_available()
print(f"   python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"CUDA available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
if device.startswith("cuda") and not cuda:
    print("bench/gpu.sh: --device cuda but torch sees no GPU; for a CPU smoke run use --tiny --device cpu")
    sys.exit(1)
EOF
then
    exit 2
fi

if [ "$TINY" = 1 ]; then
    ARGS_A=(--images 16 --batch-size 8 --num-workers 2 --repeats 1)
    ARGS_B=(--architecture softref-tiny --batch-size 8 --steps 2 --warmup 1 --image-dim 64 --text-dim 32)
    ARGS_C=(--images 200 --captions 1000 --dim 64 --repeats 1)
    ARGS_D=(--rows 2000 --dim 128 --repeats 1)
else
    ARGS_A=(--images 4096 --batch-size 256 --repeats 3)
    ARGS_B=(--architecture ViT-B-32 --batch-size 128 --steps 20 --warmup 3)
    ARGS_C=(--images 5000 --captions 25000 --dim 512 --repeats 3)
    ARGS_D=(--rows 11003 --dim 1280 --repeats 3)
fi

declare -a SUMMARY=()
FAILED=0

# part LABEL LIMIT_SECONDS COMMAND...: run COMMAND under timeout, capped by what is left of BUDGET.
part() {
    local label="$1" limit="$2"
    shift 2
    local left=$((BUDGET - SECONDS - KILL_AFTER))
    if [ "$left" -lt "$limit" ]; then limit="$left"; fi
    echo
    echo "== part $label (limit ${limit}s): $*"
    if [ "$limit" -lt 10 ]; then
        echo "== part $label SKIPPED: ${left}s left of the ${BUDGET}s budget"
        SUMMARY+=("part $label: SKIPPED (budget spent)")
        FAILED=1
        return
    fi
    local start=$SECONDS rc
    timeout --kill-after="$KILL_AFTER" "$limit" "$@"
    rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("part $label: OK (${took}s)")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "== part $label TIMED OUT after ${took}s (limit ${limit}s)"
        SUMMARY+=("part $label: TIMED OUT after ${took}s (limit ${limit}s)")
        FAILED=1
    else
        echo "== part $label FAILED: exit status $rc after ${took}s"
        SUMMARY+=("part $label: FAILED (exit status $rc after ${took}s)")
        FAILED=1
    fi
}

part "(a) extraction, Unicom ViT-B/32" 140 "$PY" bench/gpu_extract.py --device "$DEVICE" "${ARGS_A[@]}"
part "(b) CUSA step fp32 / bf16" 100 "$PY" bench/gpu_train_step.py --device "$DEVICE" "${ARGS_B[@]}"
part "(c) evaluation at COCO 5K" 150 "$PY" bench/scale.py --sections eval --device "$DEVICE" "${ARGS_C[@]}"
part "(d) faiss-gpu / faiss-cpu" 60 "$PY" bench/gpu_faiss.py "${ARGS_D[@]}"

echo
echo "== summary (${SECONDS}s in all, budget ${BUDGET}s)"
for line in "${SUMMARY[@]}"; do echo "   $line"; done
exit "$FAILED"
