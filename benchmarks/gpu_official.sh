#!/usr/bin/env bash
# The official VARestorer on a GPU (issue 30) in one call (<= 8 minutes on a bare GPU machine, no downloads).
#
#   benchmarks/gpu_official.sh OUT_DIR [extra gpu_official.py args, e.g. --batches 1,8 --runs 20]
#
# Builds official:varestorer-2b (the released shapes, random weights, no files) once and times it: the
# no-host-sync check, eager at batch 1 (beside Real-ESRGAN x4plus at the same output size), eager at
# batches 4, 8 and 16, then compiled at batch 1 and at the best eager batch. Results: OUT_DIR/summary.json,
# OUT_DIR/official_<dtype>_b<N>[_compiled].json, OUT_DIR/log.txt. Needs only Python + PyTorch with CUDA;
# runs from this checkout with PYTHONPATH=src (no install; the environment: gpu_env.sh).
# On a CPU: benchmarks/gpu_official.sh OUT --model official:tiny --device cpu --compile-backend eager
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_official.sh OUT_DIR [gpu_official.py args]}
shift
source "$(dirname "$0")/gpu_env.sh"  # ROOT, PY, PYTHONPATH, OUT made absolute, safetensors, the log's header
# 450 s for the measurements leaves time for start-up inside the 8-minute budget; SIGINT keeps what finished.
timeout --signal=INT --kill-after=15 "${GPU_OFFICIAL_TIMEOUT:-450}" "$PY" "$ROOT/benchmarks/gpu_official.py" --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
status=${PIPESTATUS[0]}
rm -rf "$OUT/.inductor-cache" "$OUT/.shim"
echo "gpu_official: exit $status; results in $OUT" | tee -a "$OUT/log.txt"
exit "$status"
