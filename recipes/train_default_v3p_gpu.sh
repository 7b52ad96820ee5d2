#!/usr/bin/env bash
# Default model v3M (issue 32, recipes/train_default_v3p.sh is the CPU route) on one GPU in ONE call of at most
# 8 minutes on a bare machine (Python + PyTorch with CUDA, no install, no downloads): the next-scale teacher
# (recipes/teacher_default.toml), the student's bits stage (recipes/student_v3p_bits.toml: the transformer learns
# the GT's bits; v3P), its image stage (STUDENT_RECIPE, recipes/student_v3t.toml: the transformer trained through
# the frozen decoder; v3T; skipped with STUDENT_MINUTES=0), its camera stage (CAMERA_RECIPE, recipes/student_v3m.toml:
# no fidelity residual, camera-like pairs; v3M; skipped with CAMERA_MINUTES=0; City100's real pairs are not carried,
# so here it trains on the `camera,mild` degradations alone), the merged fp16 export (of the last stage that ran; the
# wavelet colour fix and the transformer over the first four scales after the camera stage, as the shipped v3R), and
# the prior checks on three DRealSR pairs.
# Every stage has a time budget (train.time_budget_minutes: the cosine schedule follows the time spent, so each
# stage ends decayed whatever the GPU's speed); the recipes are used as they are, with the GPU's settings passed as
# --set.
#
# 1. Here, once (CPU machine, needs ../shared/data, local/data/photos and the LPIPS/DISTS assets in
#    $VARESTORER_CACHE): compacts the training photos (webp q80, long side 512; the union of the recipes'
#    train_dirs, which replaces each stage's), the mild validation pairs and three DRealSR pairs into
#    local/gpu_v3p/data and the VGG16/LPIPS/DISTS assets (large tensors int8, recipes/carry_assets.py) into
#    local/gpu_v3p/assets, then checks that tracked files + untracked files + that folder stay under the
#    device's 64 MiB (30.0 + 30.8 MiB when written):
#        bash recipes/train_default_v3p_gpu.sh prepare
# 2. The device call (the `run` tool of this workplace; docs/training.md, "GPU route of default model v3P"):
#        command:   bash recipes/train_default_v3p_gpu.sh "$OUT"
#        carry:     ["local/gpu_v3p"]
#        timeout_s: 540
#    Results under OUT (8 files at most come back, two folders down): log.txt (every stage's output),
#    summary.json (per stage: exit, seconds, steps, last train/val lines; the teacher's validation bit accuracy
#    per scale, the students' bit_gain per scale, the prior checks), model_v3p/ (the merged student, fp16:
#    Restorer.from_pretrained(OUT/model_v3p)), teacher.tar.gz (the teacher folder, for the CPU route's
#    stage 2 or more training), runs.tar.gz (the stages' logs and TensorBoard events) and prior_checks.md.
#
# A second call on a machine still warm resumes the stages in RUNS (their budgets are totals, so it adds nothing):
# set RUNS to a new folder to train again there. Every stage stops at its budget + SLACK_S (90 s) and at
# DEADLINE_S - 20 s (465), so the summary is written even when a stage hangs.
# Knobs (environment): TEACHER_MINUTES BITS_MINUTES STUDENT_MINUTES CAMERA_MINUTES (1.8, 1.5, 1.0, 1.0), STUDENT_RECIPE,
# CAMERA_RECIPE, TEACHER_BATCH BITS_BATCH
# STUDENT_BATCH (64, 32, 16), WORKERS (14), PRECISION (bf16), MAX_STEPS, VAL_IMAGES (19), IMAGE_LOSS_CROP (256),
# PRIOR_CHECKS_UNTIL_S (the prior checks start only before this many seconds, 400), PRIOR_STAGES (all),
# DEVICE (cuda), extra --set words per stage in TEACHER_SETS BITS_SETS STUDENT_SETS CAMERA_SETS; CARRY (local/gpu_v3p) and
# RUNS (local/gpu_v3p_runs).
# For prepare: TRAIN_SOURCES VAL_SOURCE PAIRS_SOURCE PAIR_STEMS QUALITY LONG_SIDE. tests/test_train_v3p_gpu.py
# runs both steps end to end on the CPU at a tiny budget.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
CARRY=${CARRY:-local/gpu_v3p}
DATA=$CARRY/data
RUNS=${RUNS:-local/gpu_v3p_runs}
stamp() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

prepare() {
    set -e
    local py=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3)}
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    # The union of the recipes' train_dirs (the students' add the photos of recipes/fetch_photos.sh); every stage
    # trains on it.
    local sources=${TRAIN_SOURCES:-"../shared/data/train ../shared/data/train_extra/misc_photos local/data/photos"}
    local val=${VAL_SOURCE:-../shared/data/val} pairs=${PAIRS_SOURCE:-../shared/data/real_pairs/drealsr}
    local stems=${PAIR_STEMS:-"Canon_10_x1 DSC_1233_x1 IMG_118_x1"}  # three cameras, from local/e/subset11.txt
    local quality=${QUALITY:-80} long_side=${LONG_SIDE:-512}
    for source in $sources; do
        [[ -d $source ]] || { echo "error: $source is missing (local/data/photos: bash recipes/fetch_photos.sh)"; exit 2; }
    done
    rm -rf "$DATA" "$CARRY/assets"
    for source in $sources; do
        stamp "compacting $source"
        "$py" recipes/compact_data.py "$source" "$DATA/train/$(basename "$source")" --long-side "$long_side" \
            --format webp --quality "$quality"
    done
    stamp "mild validation pairs of $val"
    "$py" -m varestorer degrade "$val" -r --preset mild --scale 4 --crop none --seed 0 -q -o "$CARRY/.val_mild"
    mkdir -p "$DATA/val_mild"
    mv "$CARRY/.val_mild/lq" "$DATA/val_mild/lq"
    "$py" recipes/compact_data.py "$CARRY/.val_mild/gt" "$DATA/val_mild/gt" --long-side 100000 --format webp \
        --quality 95
    rm -rf "$CARRY/.val_mild"
    mkdir -p "$DATA/pairs/lq" "$DATA/pairs/gt"
    for stem in $stems; do
        cp "$pairs/lq/$stem".png "$DATA/pairs/lq/" && cp "$pairs/gt/$stem".png "$DATA/pairs/gt/"
    done
    stamp "assets"
    "$py" recipes/carry_assets.py pack vgg16-imagenet lpips-vgg-v0.1 dists-weights -o "$CARRY/assets"
    # The device's limit counts the whole working tree that travels, not only the carried folder.
    "$py" - "$CARRY" "${LIMIT_MIB:-64}" <<'EOF'
import os, subprocess, sys

def files(*args):
    out = subprocess.run(["git", "ls-files", "-z", *args], capture_output=True, check=True).stdout
    return [name.decode() for name in out.split(b"\0") if name]

def size(paths):
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p) and not os.path.islink(p))

carry = [os.path.join(d, f) for d, _, names in os.walk(sys.argv[1]) for f in names]
parts = {"tracked": size(files()), "untracked": size(files("--others", "--exclude-standard")), "carry": size(carry)}
for folder in sorted({os.path.relpath(os.path.dirname(p), sys.argv[1]).split(os.sep)[0] for p in carry}):
    print(f"  {folder:<10} {size([p for p in carry if p.startswith(os.path.join(sys.argv[1], folder))]) / 2**20:7.2f} MiB")
total, limit = sum(parts.values()), float(sys.argv[2]) * 2**20
print("  " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in parts.items()) + f": {total / 2**20:.2f} of {limit / 2**20:.0f} MiB")
sys.exit(0 if total <= limit else "error: the device call would carry more than its limit (lower QUALITY or LONG_SIDE)")
EOF
    stamp "prepared $CARRY"
}

if [[ ${1:-} == prepare ]]; then
    prepare
    exit $?
fi

OUT=${1:?usage: recipes/train_default_v3p_gpu.sh prepare | OUT_DIR}
source "$ROOT/benchmarks/gpu_env.sh"  # PY, PYTHONPATH=src, OUT made absolute, the log's header (torch, GPU)
cd "$ROOT" || exit 1
TEACHER_MINUTES=${TEACHER_MINUTES:-1.8}
BITS_MINUTES=${BITS_MINUTES:-1.5}
# Stage 2: v3T's image stage (the shipped default's last stage); STUDENT_MINUTES=0 stops at v3P's bits stage, and
# STUDENT_RECIPE=recipes/student_v3p.toml runs the decoder fine-tuning that was measured worse (LPIPS 0.322 -> 0.356).
STUDENT_MINUTES=${STUDENT_MINUTES:-1.0}
STUDENT_RECIPE=${STUDENT_RECIPE:-recipes/student_v3t.toml}
# Stage 3: v3M's camera stage, from stage 2 (the shipped default's last stage); CAMERA_MINUTES=0 stops at v3T.
CAMERA_MINUTES=${CAMERA_MINUTES:-1.0}
CAMERA_RECIPE=${CAMERA_RECIPE:-recipes/student_v3m.toml}
TEACHER_BATCH=${TEACHER_BATCH:-64}
BITS_BATCH=${BITS_BATCH:-32}
STUDENT_BATCH=${STUDENT_BATCH:-16}
WORKERS=${WORKERS:-14}
PRECISION=${PRECISION:-bf16}
MAX_STEPS=${MAX_STEPS:-1000000}
VAL_IMAGES=${VAL_IMAGES:-19}
IMAGE_LOSS_CROP=${IMAGE_LOSS_CROP:-256}
PRIOR_CHECKS_UNTIL_S=${PRIOR_CHECKS_UNTIL_S:-400}
DEVICE=${DEVICE:-cuda}
SLACK_S=${SLACK_S:-90}  # start-up and the final validation, beyond each stage's budget, before `timeout` stops it
DEADLINE_S=${DEADLINE_S:-465}  # and no stage runs past this (20 s before it), so the results are always written
read -r -a TEACHER_EXTRA <<<"${TEACHER_SETS:-}"
read -r -a BITS_EXTRA <<<"${BITS_SETS:-}"
read -r -a STUDENT_EXTRA <<<"${STUDENT_SETS:-}"
read -r -a CAMERA_EXTRA <<<"${CAMERA_SETS:-}"
mkdir -p "$RUNS/logs"
RUNS=$(cd "$RUNS" && pwd)
LOGS=$RUNS/logs
[[ -d $DATA/train ]] || { echo "error: $DATA/train is missing: run 'bash $0 prepare' here and carry $CARRY" | tee -a "$OUT/log.txt"; exit 2; }

# Float32 assets from the carried int8 copies, in a cache of this call's own.
export VARESTORER_CACHE="$RUNS/cache"
"$PY" recipes/carry_assets.py unpack "$CARRY/assets" -o "$VARESTORER_CACHE/assets" 2>&1 | tee -a "$OUT/log.txt"

sets() { for item in "$@"; do printf -- '--set\n%s\n' "$item"; done; }
common=(train.max_steps=$MAX_STEPS train.num_workers=$WORKERS train.ckpt_every=1000000 train.log_every=25
    train.progress=false data.repeat=64 "data.train_dirs=[\"$DATA/train\"]")
summary_args=()
status=0
# stage NAME MINUTES COMMAND...: run under a hard limit, log to RUNS/logs/NAME.log and OUT/log.txt.
stage() {
    local name=$1 minutes=$2 start=$SECONDS code
    shift 2
    stamp "$name (budget $minutes min)" | tee -a "$OUT/log.txt"
    local limit
    limit=$("$PY" -c "print(max(1, min(int($minutes * 60 + $SLACK_S), $DEADLINE_S - 20 - $SECONDS)))")
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" | tee -a "$OUT/log.txt"
    code=${PIPESTATUS[0]}
    stamp "$name: exit $code after $((SECONDS - start)) s" | tee -a "$OUT/log.txt"
    summary_args+=(--stage "$name=$LOGS/$name.log:$code:$((SECONDS - start))")
    [[ $code -ne 0 && $status -eq 0 ]] && status=$code
    return "$code"
}

mapfile -t teacher_sets < <(sets "${common[@]}" "train.output_dir=\"$RUNS/teacher\"" "data.val_dir=\"$DATA/val_mild/gt\"" \
    train.time_budget_minutes="$TEACHER_MINUTES" train.batch_size="$TEACHER_BATCH" "train.mixed_precision=\"$PRECISION\"" \
    train.warmup_steps=100 train.val_every=500 data.max_val_images="$VAL_IMAGES" "${TEACHER_EXTRA[@]}")
mapfile -t bits_sets < <(sets "${common[@]}" "train.output_dir=\"$RUNS/bits\"" "job.teacher=\"$RUNS/teacher/model\"" \
    train.time_budget_minutes="$BITS_MINUTES" train.batch_size="$BITS_BATCH" "train.mixed_precision=\"$PRECISION\"" \
    "${BITS_EXTRA[@]}")
mapfile -t student_sets < <(sets "${common[@]}" "train.output_dir=\"$RUNS/student\"" "job.teacher=\"$RUNS/teacher/model\"" \
    "job.init_from=\"$RUNS/bits/model\"" "data.val_lq_dir=\"$DATA/val_mild/lq\"" "data.val_gt_dir=\"$DATA/val_mild/gt\"" \
    data.max_val_images="$VAL_IMAGES" train.val_every=0 train.time_budget_minutes="$STUDENT_MINUTES" \
    train.batch_size="$STUDENT_BATCH" "train.mixed_precision=\"$PRECISION\"" loss.lpips.crop="$IMAGE_LOSS_CROP" \
    loss.dists.crop="$IMAGE_LOSS_CROP" "${STUDENT_EXTRA[@]}")
mapfile -t camera_sets < <(sets "${common[@]}" "train.output_dir=\"$RUNS/camera\"" "job.teacher=\"$RUNS/teacher/model\"" \
    "job.init_from=\"$RUNS/student/model\"" "data.val_lq_dir=\"$DATA/val_mild/lq\"" "data.val_gt_dir=\"$DATA/val_mild/gt\"" \
    data.max_val_images="$VAL_IMAGES" train.val_every=0 train.time_budget_minutes="$CAMERA_MINUTES" \
    train.batch_size="$STUDENT_BATCH" "train.mixed_precision=\"$PRECISION\"" loss.lpips.crop="$IMAGE_LOSS_CROP" \
    loss.dists.crop="$IMAGE_LOSS_CROP" "data.real_pairs=[]" "${CAMERA_EXTRA[@]}")

VR=("$PY" -m varestorer)
final=$RUNS/bits/model
color_fix=adain
predicted=()  # after the camera stage: --predicted-scales 4, as the shipped v3R
positive() { "$PY" -c "import sys; sys.exit(0 if float('$1') > 0 else 1)"; }
second_stage() {  # stage 2 unless STUDENT_MINUTES is 0, then stage 3 unless CAMERA_MINUTES is 0
    positive "$STUDENT_MINUTES" || return 0
    final=$RUNS/student/model
    stage student "$STUDENT_MINUTES" "${VR[@]}" train student --config "$STUDENT_RECIPE" --resume "${student_sets[@]}" ||
        return
    positive "$CAMERA_MINUTES" || return 0
    final=$RUNS/camera/model
    color_fix=wavelet
    predicted=(--predicted-scales 4)
    stage camera "$CAMERA_MINUTES" "${VR[@]}" train student --config "$CAMERA_RECIPE" --resume "${camera_sets[@]}"
}
stage teacher "$TEACHER_MINUTES" "${VR[@]}" train teacher --config recipes/teacher_default.toml --resume "${teacher_sets[@]}" &&
    stage bits "$BITS_MINUTES" "${VR[@]}" train student --config recipes/student_v3p_bits.toml --resume "${bits_sets[@]}" &&
    second_stage &&
    stage export 0.5 "${VR[@]}" export "$final" -o "$OUT/model_v3p" --merge --dtype float16 --color-fix "$color_fix" \
        --color-fix-levels 4 "${predicted[@]}" --overwrite

if [[ -f $OUT/model_v3p/config.json && $SECONDS -lt $PRIOR_CHECKS_UNTIL_S ]]; then
    # psnr, ssim, dists: LPIPS-alex (the table's LPIPS) is not carried; the CPU route scores all 93 pairs.
    stage prior_checks 1.0 "$PY" benchmarks/prior_checks.py --model "$OUT/model_v3p" --pairs "$DATA/pairs" \
        --out "$RUNS/prior_checks" --metrics psnr,ssim,dists --device "$DEVICE" ${PRIOR_STAGES:+--stages "$PRIOR_STAGES"}
    cp "$RUNS/prior_checks/prior_checks.md" "$OUT/" 2>/dev/null
elif [[ -f $OUT/model_v3p/config.json ]]; then
    stamp "prior checks skipped: ${SECONDS} s spent (PRIOR_CHECKS_UNTIL_S=$PRIOR_CHECKS_UNTIL_S)" | tee -a "$OUT/log.txt"
fi

[[ -d $RUNS/teacher/model ]] && tar -czf "$OUT/teacher.tar.gz" -C "$RUNS/teacher" model
tar -czf "$OUT/runs.tar.gz" --exclude=checkpoints --exclude=model --exclude=cache --exclude='*.png' \
    --exclude=_gt_subset -C "$RUNS" .
"$PY" recipes/gpu_run_summary.py "${summary_args[@]}" -o "$OUT/summary.json" \
    --extra "minutes=teacher $TEACHER_MINUTES, bits $BITS_MINUTES, student $STUDENT_MINUTES, camera $CAMERA_MINUTES" \
    --extra "batches=teacher $TEACHER_BATCH, bits $BITS_BATCH, student $STUDENT_BATCH" \
    --extra "precision=$PRECISION" --extra "total_seconds=$SECONDS" \
    --extra "device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)" \
    --json "prior_checks=$RUNS/prior_checks/prior_checks.json"
rm -rf "$OUT/.inductor-cache" "$OUT/.shim"
stamp "train_default_v3p_gpu: exit $status; results in $OUT" | tee -a "$OUT/log.txt"
exit "$status"
