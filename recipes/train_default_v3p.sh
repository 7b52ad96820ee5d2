#!/usr/bin/env bash
# Default model v3P (issue 32, docs/default_model.md "v3P"): the VAR prior at work. End to end on a CPU, from the
# repository root, after v2Q (the embedded default before it: commit 22a9732; its pre-cleaner, encoder, skip
# gains and fidelity weights are the start):
#   teacher  recipes/teacher_default.toml: next-scale teacher on the default tokenizer's tokens (40 min; shipped
#            run: 545 steps x 8, val bit accuracy 0.566, per scale 0.65 / 0.66 / 0.65 / 0.63 / 0.58 / 0.56)
#   bits0    recipes/student_v3p_bits.toml without the control branch: the skip gains calibrate and LoRA learns
#            from the teacher's KL and the GT's bits (shipped run: 350 steps x 8, stopped by hand after 22 min)
#   bits     the same recipe with the control branch, from bits0 (24 min; shipped run: 347 steps x 8)
#   export   merged fp16 checkpoint -> $OUT (default local/v3p/model_v3p; the package ships it as weights/default)
#   student  (not shipped) recipes/student_v3p.toml: + image losses, decoder fine-tuned: LPIPS 0.322 -> 0.356 on
#            the 11 DRealSR pairs of docs/default_model.md, as every decoder fine-tuning on synthetic pairs so far
#
#   bash recipes/train_default_v3p.sh [teacher|bits0|bits|export|all]     (all: teacher, bits0, bits, export)
#
# Each stage resumes where it stopped (--resume): rerun the same line to continue a cut-short run, or add time
# with TRAIN_ARGS='--set train.time_budget_minutes=N'. The cosine schedules follow each stage's time budget, so a
# rerun on another machine follows the shipped run's recipe, not its exact steps. GPU: recipes/train_default_v3p_gpu.sh.
set -euo pipefail
VR=${VARESTORER:-varestorer}
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
OUT=${OUT:-local/v3p/model_v3p}
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
if [[ $stage == export || $stage == all ]]; then
  $VR export local/runs/student_v3p_bits/model -o "$OUT" --merge --dtype float16
fi
if [[ $stage == student ]]; then
  [[ -d local/v2/lq_mild/lq ]] || $VR degrade ../shared/data/val -r --preset mild --scale 4 --crop none --seed 0 \
    -o local/v2/lq_mild
  $VR train student --config recipes/student_v3p.toml --resume "${EXTRA[@]}"
fi
