#!/usr/bin/env bash
# Default model v3R (v3M's weights, the transformer over the first four scales), v3M, v3T and v3P before it (issue 32,
# docs/default_model.md "v3R", "v3M", "v3T", "v3P"): the VAR prior at work. End
# to end on a CPU, from the repository root, after v2Q (the embedded default before it: commit 22a9732; its pre-cleaner, encoder, skip
# gains and fidelity weights are the start):
#   teacher  recipes/teacher_default.toml: next-scale teacher on the default tokenizer's tokens (40 min; shipped
#            run: 545 steps x 8, val bit accuracy 0.566, per scale 0.65 / 0.66 / 0.65 / 0.63 / 0.58 / 0.56)
#   bits0    recipes/student_v3p_bits.toml without the control branch: the skip gains calibrate and LoRA learns
#            from the teacher's KL and the GT's bits (shipped run: 350 steps x 8, stopped by hand after 22 min)
#   bits     the same recipe with the control branch, from bits0 (24 min; shipped run: 347 steps x 8): v3P
#   image    recipes/student_v3t.toml: the transformer trained through the frozen decoder with MSE, LPIPS and DISTS
#            beside the bit terms, from bits (30 min; shipped run: 455 steps x 4): v3T
#   camera   recipes/student_v3m.toml: the same stage without the fidelity residual, on camera-like pairs and City100's
#            real camera pairs (recipes/prepare_city100.py), from v3T (50 min; shipped run: 30 min, 466 steps, then
#            --resume to 50 min, 760 steps x 4): v3M
#   export   merged fp16 checkpoint of v3M with the wavelet colour fix at 4 levels and the transformer over the first
#            four scales (PREDICTED_SCALES=4: v3R, session 18; the 16x16 and 32x32 scales keep the LQ's bits) -> $OUT
#            (default local/v3m/model; the package ships it as weights/default); PREDICTED_SCALES=6 exports v3M as it
#            was; EXPORT_FROM=local/runs/student_v3t/model COLOR_FIX=adain PREDICTED_SCALES=6 exports v3T
#   student  (not shipped) recipes/student_v3p.toml: + image losses, decoder fine-tuned: LPIPS 0.322 -> 0.356 on
#            the 11 DRealSR pairs of docs/default_model.md, as every decoder fine-tuning on synthetic pairs so far
#
#   bash recipes/train_default_v3p.sh [teacher|bits0|bits|image|camera|export|all]   (all: every stage but student, in order)
#
# Each stage resumes where it stopped (--resume): rerun the same line to continue a cut-short run, or add time
# with TRAIN_ARGS='--set train.time_budget_minutes=N'. The cosine schedules follow each stage's time budget, so a
# rerun on another machine follows the shipped run's recipe, not its exact steps. GPU: recipes/train_default_v3p_gpu.sh.
set -euo pipefail
VR=${VARESTORER:-varestorer}
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
OUT=${OUT:-local/v3m/model}
EXPORT_FROM=${EXPORT_FROM:-local/runs/student_v3m/model}
COLOR_FIX=${COLOR_FIX:-wavelet}
COLOR_FIX_LEVELS=${COLOR_FIX_LEVELS:-4}   # the wavelet fix's levels (StableSR's 5 left the saturated green 5.8 off)
PREDICTED_SCALES=${PREDICTED_SCALES:-4}   # v3R: v3M's finer predictions cost DRealSR 0.002 LPIPS, 0.0025 DISTS
BITS0=local/runs/student_v3p_bits_nocontrol
stage=${1:-all}

if [[ $stage == teacher || $stage == all ]]; then
  $VR train teacher --config recipes/teacher_default.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == bits0 || $stage == bits || $stage == all ]]; then
  [[ -f local/data/photos/MANIFEST.tsv ]] || bash recipes/fetch_photos.sh local/data/photos  # 48 Debian photos
fi
if [[ $stage == bits0 || $stage == all ]]; then
  $VR train student --config recipes/student_v3p_bits.toml --resume --set model.lq_residual_control=false \
    --set "train.output_dir=\"$BITS0\"" --set train.time_budget_minutes=22 "${EXTRA[@]}"
fi
if [[ $stage == bits || $stage == all ]]; then
  $VR train student --config recipes/student_v3p_bits.toml --resume --set "job.init_from=\"$BITS0/model\"" \
    --set train.time_budget_minutes=24 "${EXTRA[@]}"
fi
if [[ $stage == image || $stage == all ]]; then
  [[ -d local/v2/lq_mild/lq ]] || $VR degrade ../shared/data/val -r --preset mild --scale 4 --crop none --seed 0 \
    -o local/v2/lq_mild
  $VR train student --config recipes/student_v3t.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == camera || $stage == all ]]; then
  [[ -d local/data/city100_x4/lq ]] || "${PYTHON:-python3}" recipes/prepare_city100.py prepare ../shared/data/train_extra/city100_nikon \
    ../shared/data/train_extra/city100_iphone --out local/data/city100_x4
  $VR train student --config recipes/student_v3m.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == export || $stage == all ]]; then
  $VR export "$EXPORT_FROM" -o "$OUT" --merge --dtype float16 --color-fix "$COLOR_FIX" \
    --color-fix-levels "$COLOR_FIX_LEVELS" --predicted-scales "$PREDICTED_SCALES"
fi
if [[ $stage == student ]]; then
  [[ -d local/v2/lq_mild/lq ]] || $VR degrade ../shared/data/val -r --preset mild --scale 4 --crop none --seed 0 \
    -o local/v2/lq_mild
  $VR train student --config recipes/student_v3p.toml --resume "${EXTRA[@]}"
fi
