#!/usr/bin/env bash
# The embedded default restorer stored as int8 vs as shipped (fp16): size, load time and quality on
# Set5 + Set14 degraded with --preset mild (docs/architecture.md, "Checkpoint storage").
# Usage: benchmarks/int8_default.sh SET5_DIR SET14_DIR [WORK_DIR]; never touches the shipped folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SET5=${1:?SET5_DIR}; SET14=${2:?SET14_DIR}; WORK=${3:-$(mktemp -d)}
PY=${PYTHON:-python}
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SHIPPED=src/varestorer/weights/default
$PY - "$SHIPPED" "$WORK/int8" <<'EOF'
import sys
from varestorer.models.student import Student
Student.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], dtype="int8", max_shard_bytes=16_000_000)
EOF
$PY -m varestorer degrade "$SET5" "$SET14" -o "$WORK/deg" --preset mild --scale 4 --crop none --seed 0 --quiet
for name in fp16 int8; do
    model=$([ "$name" = fp16 ] && echo "$SHIPPED" || echo "$WORK/int8")
    echo "$name: $(du -b "$model" | cut -f1) bytes"
    nice $PY -m varestorer restore "$WORK/deg/lq" -o "$WORK/sr_$name" --model "$model" --device cpu --quiet
    nice $PY -m varestorer evaluate --pred "$WORK/sr_$name" --gt "$WORK/deg/gt" --metrics psnr,ssim,lpips,dists --quiet
done
$PY - "$SHIPPED" "$WORK/int8" <<'EOF'
import statistics, sys, time
from varestorer.models.student import Student
for folder in sys.argv[1:]:
    Student.from_pretrained(folder)  # page cache warm
    times = []
    for _ in range(7):
        start = time.perf_counter()
        Student.from_pretrained(folder)
        times.append(time.perf_counter() - start)
    print(f"{folder}: Student.from_pretrained median {statistics.median(times):.3f} s")
EOF
