#!/usr/bin/env bash
# Default model v3P (issue 32, docs/default_model.md): the VAR prior at work. End to end on a CPU, from the
# repository root, after v2Q (the embedded default before it, which gives the pre-cleaner, encoder and decoder):
#   teacher  recipes/teacher_default.toml: next-scale teacher on the default tokenizer's tokens (40 min)
#   bits     recipes/student_v3p_bits.toml: the transformer learns the GT's bits from the LQ's (30 min)
#   student  recipes/student_v3p.toml: + image losses, decoder fine-tuned to the new bits (35 min)
#   export   merged fp16 checkpoint -> $OUT (default local/v3p/model_v3p)
#
#   bash recipes/train_default_v3p.sh [teacher|bits|student|export|all]
#
# Each stage resumes where it stopped (--resume): rerun the same line to continue a cut-short run, or add
# time with TRAIN_ARGS='--set train.time_budget_minutes=N'. On one GPU: recipes/train_default_v3p_gpu.sh.
set -euo pipefail
VR=${VARESTORER:-varestorer}
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
OUT=${OUT:-local/v3p/model_v3p}
stage=${1:-all}

if [[ $stage == teacher || $stage == all ]]; then
  $VR train teacher --config recipes/teacher_default.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == bits || $stage == all ]]; then
  [[ -f local/data/photos/MANIFEST.tsv ]] || bash recipes/fetch_photos.sh local/data/photos  # 48 Debian photos
  $VR train student --config recipes/student_v3p_bits.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == student || $stage == all ]]; then
  [[ -d local/v2/lq_mild/lq ]] || $VR degrade ../shared/data/val -r --preset mild --scale 4 --crop none --seed 0 \
    -o local/v2/lq_mild
  $VR train student --config recipes/student_v3p.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == export || $stage == all ]]; then
  $VR export local/runs/student_v3p/model -o "$OUT" --merge --dtype float16
fi
