#!/usr/bin/env bash
# Every GPU measurement of issue 8 in one go (<= 8 minutes on a bare GPU machine).
#
#   benchmarks/gpu_check.sh OUT_DIR [extra gpu_check.py args, e.g. --runs 20]
#
# Needs only Python + PyTorch with CUDA. Runs from this checkout with PYTHONPATH=src (no install; the
# environment and the safetensors fallback: gpu_env.sh). Results: OUT_DIR/summary.json,
# OUT_DIR/<config>.json, OUT_DIR/log.txt.
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
source "$(dirname "$0")/gpu_env.sh"  # ROOT, PY, PYTHONPATH, OUT made absolute, safetensors, the log's header
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
