# Sourced by the GPU scripts (gpu_check.sh, gpu_official.sh) after they set OUT: the environment of a bare
# GPU machine (Python + PyTorch with CUDA, no install, no downloads). Sets ROOT, PY and PYTHONPATH=src, makes
# OUT absolute, keeps torch.compile's cache under OUT, and logs the torch build and the GPU to OUT/log.txt.
#
# The one other import the model path needs is safetensors: if it is missing, wheels carried in the
# git-ignored benchmarks/wheels/ are installed offline (--no-deps --no-index); failing that, a stub that only
# satisfies the import is put on the path (presets with random weights never read or write weight files).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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
