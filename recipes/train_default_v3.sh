#!/usr/bin/env bash
# Default model v3 (issue 16, docs/default_model.md), on a CPU, from the repository root. It starts from v2:
#   v2       default model v2 from git history (commit 353f1a6 shipped it as weights/default) -> local/v2/model_v2,
#            and v2's unmerged student (local/runs/student_v2/model: bash recipes/train_default_v2.sh student)
#   latent   recipes/student_v3_latent.toml  the LQ encoder alone, regressed to v2's LQ latent (20 CPU min)
#   student  recipes/student_v3.toml         image losses + the latent term, decoder fine-tuned (60 CPU min)
#   export   merged fp16 checkpoint          -> $OUT (default local/v3/model_v3; the package ships it as weights/default)
#
#   bash recipes/train_default_v3.sh [v2|latent|student|export|all]
#
# Each stage stops at its time budget and resumes from its last checkpoint when re-run (add
# --set train.time_budget_minutes=N to spend more).
set -euo pipefail
VR=${VARESTORER:-varestorer}
OUT=${OUT:-local/v3/model_v3}
stage=${1:-all}

if [[ $stage == v2 || $stage == all ]]; then
  if [[ ! -f local/v2/model_v2/config.json ]]; then
    mkdir -p local/v2/model_v2
    for name in config.json model.safetensors; do
      git show "353f1a6:src/varestorer/weights/default/$name" > "local/v2/model_v2/$name"
    done
  fi
  [[ -f local/runs/student_v2/model/config.json ]] || bash recipes/train_default_v2.sh student
fi
if [[ $stage == latent || $stage == all ]]; then
  $VR train student --config recipes/student_v3_latent.toml --resume
fi
if [[ $stage == student || $stage == all ]]; then
  $VR train student --config recipes/student_v3.toml --resume
fi
if [[ $stage == export || $stage == all ]]; then
  $VR export local/runs/student_v3/model -o "$OUT" --merge --dtype float16 --tile-overlap 8
fi
