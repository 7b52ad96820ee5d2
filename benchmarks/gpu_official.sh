#!/usr/bin/env bash
# The official VARestorer on a GPU (issue 30) in one call (<= 8 minutes on a bare GPU machine, no downloads).
#
#   benchmarks/gpu_official.sh OUT_DIR [extra gpu_official.py args, e.g. --batches 1,8 --runs 20]
#
# Builds official:varestorer-2b (the released shapes, random weights, no files) once and times it: the
# no-host-sync check, eager at batch 1 (beside Real-ESRGAN x4plus at the same output size), eager at
# batches 4, 8 and 16, then compiled at batch 1 and at the best eager batch. Results: OUT_DIR/summary.json,
# OUT_DIR/official_<dtype>_b<N>[_compiled].json, OUT_DIR/log.txt. Needs only Python + PyTorch with CUDA;
# runs from this checkout with PYTHONPATH=src (no install). safetensors is handled as in gpu_check.sh.
# On a CPU: benchmarks/gpu_official.sh OUT --model official:tiny --device cpu --compile-backend eager
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_official.sh OUT_DIR [gpu_official.py args]}
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
# 450 s for the measurements leaves time for start-up inside the 8-minute budget; SIGINT keeps what finished.
timeout --signal=INT --kill-after=15 "${GPU_OFFICIAL_TIMEOUT:-450}" "$PY" "$ROOT/benchmarks/gpu_official.py" --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
status=${PIPESTATUS[0]}
rm -rf "$OUT/.inductor-cache" "$OUT/.shim"
echo "gpu_official: exit $status; results in $OUT" | tee -a "$OUT/log.txt"
exit "$status"
