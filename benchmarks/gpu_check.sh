#!/usr/bin/env bash
# Every GPU measurement of issue 8 in one go (<= 8 minutes on a bare GPU machine).
#
#   benchmarks/gpu_check.sh OUT_DIR [extra gpu_check.py args, e.g. --runs 20]
#
# Needs only Python + PyTorch with CUDA. Runs from this checkout with PYTHONPATH=src (no install).
# The one other import the model path needs is safetensors: if it is missing, wheels carried in the
# git-ignored benchmarks/wheels/ are installed offline (--no-deps --no-index); failing that, a stub
# that only satisfies the import is put on the path (presets with random weights never read or write
# weight files). Results: OUT_DIR/summary.json, OUT_DIR/<config>.json, OUT_DIR/log.txt.
#
# GPU_CHECK_SECTIONS (default "inference") picks the sections: "train" runs the distillation check of
# issue 19 instead (Infinity-2B student at 512 px, LoRA 32, bf16: batch 1 and 4 with activation
# checkpointing, batch 4 without, and issue 29's batch 4 and 8 with the tokenizer's convs checkpointed too
# and batch 4 with the frozen weights in bf16 as well;
# peak memory measured beside the memory model's prediction, each into OUT_DIR/train_<name>.json with the
# top allocations of torch's CUDA memory snapshot at the peak; about 4-7 minutes, each run capped by
# GPU_TRAIN_RUN_TIMEOUT=70 s). GPU_TRAIN_MODEL/SIZE/DEVICE=tiny/64/cpu run the same end to end on a CPU (tests;
# GPU_TRAIN_ARGS adds bench flags after the others, e.g. "--runs 1 --warmup 0").
# "inference,train" runs both (over 8 minutes: give it two calls instead).
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [gpu_check.py args]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$OUT/.inductor-cache}"

if ! "$PY" -c "import safetensors" 2>/dev/null; then
    if compgen -G "$ROOT/benchmarks/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install --quiet --no-deps --no-index "$ROOT"/benchmarks/wheels/*.whl 2>&1 | tail -2
    fi
fi
if ! "$PY" -c "import safetensors" 2>/dev/null; then
    echo "safetensors missing: using an import stub (no weight files are read)" | tee -a "$OUT/log.txt"
    SHIM="$OUT/.shim/safetensors"
    mkdir -p "$SHIM"
    printf 'class SafetensorError(Exception):\n    pass\n' >"$SHIM/__init__.py"
    printf 'def load_file(*a, **k):\n    raise RuntimeError("safetensors is not installed")\n\n\nsave_file = load_file\n' >"$SHIM/torch.py"
    export PYTHONPATH="$PYTHONPATH:$OUT/.shim"
fi

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/log.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/log.txt"
SECTIONS=${GPU_CHECK_SECTIONS:-inference}
status=0
if [[ ",$SECTIONS," == *",inference,"* ]]; then
    # 470 s for the measurements leaves time for start-up inside the 8-minute budget.
    timeout --signal=INT --kill-after=15 "${GPU_CHECK_TIMEOUT:-470}" "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
    status=${PIPESTATUS[0]}
fi
if [[ ",$SECTIONS," == *",train,"* ]]; then
    # Distillation at the paper's scale (docs/training.md, "Memory"): predicted vs measured peak per setting.
    TRAIN=(--model "${GPU_TRAIN_MODEL:-infinity-2b}" --size "${GPU_TRAIN_SIZE:-512}" --lora-rank 32 --dtype bf16 --train
        --device "${GPU_TRAIN_DEVICE:-cuda}" --runs 3 --warmup 1 --memory-snapshot)
    for run in "b1_ckpt:--batch-size 1 --activation-checkpointing" \
        "b4_ckpt:--batch-size 4 --activation-checkpointing" \
        "b4_plain:--batch-size 4" \
        "b4_ckpt_convs:--batch-size 4 --activation-checkpointing --conv-checkpointing" \
        "b8_ckpt_convs:--batch-size 8 --activation-checkpointing --conv-checkpointing" \
        "b4_ckpt_convs_bf16w:--batch-size 4 --activation-checkpointing --conv-checkpointing --set train.frozen_weights_dtype=bfloat16"; do
        name=${run%%:*}
        # shellcheck disable=SC2086  # the options are words
        timeout --signal=INT --kill-after=15 "${GPU_TRAIN_RUN_TIMEOUT:-70}" "$PY" -m varestorer bench "${TRAIN[@]}" \
            ${run#*:} ${GPU_TRAIN_ARGS:-} --json "$OUT/train_$name.json" --overwrite 2>&1 | tee -a "$OUT/log.txt"
        code=${PIPESTATUS[0]}
        echo "train $name: exit $code" | tee -a "$OUT/log.txt"
        [[ $code -ne 0 && $status -eq 0 ]] && status=$code
    done
fi
rm -rf "$OUT/.inductor-cache" "$OUT/.shim"
echo "gpu_check: exit $status; results in $OUT" | tee -a "$OUT/log.txt"
exit "$status"
