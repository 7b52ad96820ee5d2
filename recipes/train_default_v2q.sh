#!/usr/bin/env bash
# Default model v2Q (issue 16, docs/default_model.md): v2L with lighter TAEF2 halves for CPU speed, end to end on
# a CPU from the repository root, after recipes/train_default_v2l.sh (its teacher folder and student run):
#   latent   recipes/student_v2q_latent.toml: the encoder without its three Blocks at 128 px regressed to v2L's
#            LQ latent (20 min)
#   student  recipes/student_v2q.toml: v2L's losses, decoder without Blocks 14 and 15 fine-tuned (55 min:
#            1477 steps x 2 on the 2-core AMD EPYC in the shipped run)
#   export   merged fp16 checkpoint, tile overlap 6 -> $OUT (default local/v2q/model_v2q)
#
#   bash recipes/train_default_v2q.sh [v2l|latent|student|export|all]
#
# Each stage resumes where it stopped (--resume): rerun the same line to continue a cut-short run.
# The training runs on CUDA when there is one; TRAIN_ARGS adds options to both stages, e.g. on one GPU
#   TRAIN_ARGS='--set train.mixed_precision="bf16" --set train.batch_size=16 --set train.num_workers=8'
# (the time budgets then buy many more steps; the shipped run is the CPU one below).
set -euo pipefail
VR=${VARESTORER:-varestorer}
read -r -a EXTRA <<< "${TRAIN_ARGS:-}"
OUT=${OUT:-local/v2q/model_v2q}
stage=${1:-all}

if [[ $stage == v2l || $stage == all ]]; then
  [[ -d local/runs/student_v2l/model ]] || bash recipes/train_default_v2l.sh all
fi
if [[ $stage == latent || $stage == all ]]; then
  $VR train student --config recipes/student_v2q_latent.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == student || $stage == all ]]; then
  $VR train student --config recipes/student_v2q.toml --resume "${EXTRA[@]}"
fi
if [[ $stage == export || $stage == all ]]; then
  $VR export local/runs/student_v2q/model -o "$OUT" --merge --dtype float16 --tile-overlap 6
fi
