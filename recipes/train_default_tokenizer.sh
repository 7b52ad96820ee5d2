#!/usr/bin/env bash
# The embedded `default-tokenizer` (issue 15, docs/tokenizer.md): TAEF2 lite under the bitwise quantiser,
# end to end on a CPU, from the repository root. Each stage stops at its time budget and resumes from its
# last checkpoint when re-run; the budgets are those of the shipped run (2-core AMD EPYC, 118 CPU minutes):
#   full     recipes/taef2_full.sh                  the full fine-tuned TAEF2 (start and distillation target)
#   lite     recipes/tokenizer_taef2_lite.toml      stage 1: 12 tensors dropped, latent distillation + L1 +
#                                                   LPIPS-VGG, 50 min (the shipped run: 28 min, resumed for 22)
#   dists    recipes/tokenizer_taef2_lite_dists.toml  + DISTS, three runs of 30, 24 and 14 min, each from the
#                                                   last one's EMA weights (seeds 1, 2, 3; the third at lr 5e-5)
#   export   fp16 + the MIT notice                  -> $OUT (default local/default-tokenizer; the package ships
#                                                   it as src/varestorer/weights/default-tokenizer)
#
#   bash recipes/train_default_tokenizer.sh [full|lite|dists|export|all]
#
# Needs ../shared/data/train (or set [data] train_dirs with --set in the recipes) and the LPIPS/DISTS weights
# (varestorer assets fetch vgg16-imagenet lpips-vgg-v0.1 dists-weights).
set -euo pipefail
VR=${VARESTORER:-varestorer}
PY=${PYTHON:-python}
OUT=${OUT:-local/default-tokenizer}
stage=${1:-all}

if [[ $stage == full || $stage == all ]]; then
  bash recipes/taef2_full.sh local/taef2_full
fi
if [[ $stage == lite || $stage == all ]]; then
  $VR train tokenizer --config recipes/tokenizer_taef2_lite.toml --resume --set train.time_budget_minutes=50
fi
if [[ $stage == dists || $stage == all ]]; then
  $VR train tokenizer --config recipes/tokenizer_taef2_lite_dists.toml --resume
  $VR train tokenizer --config recipes/tokenizer_taef2_lite_dists.toml --resume \
    --set 'model.init_from="local/runs/taef2_lite_dists/model"' --set 'train.output_dir="local/runs/taef2_lite_dists2"' \
    --set train.time_budget_minutes=24 --set train.seed=2
  $VR train tokenizer --config recipes/tokenizer_taef2_lite_dists.toml --resume \
    --set 'model.init_from="local/runs/taef2_lite_dists2/model"' --set 'train.output_dir="local/runs/taef2_lite_dists3"' \
    --set train.time_budget_minutes=14 --set train.seed=3 --set train.learning_rate=5e-5
fi
if [[ $stage == export || $stage == all ]]; then
  $PY benchmarks/tokenizer_report.py export local/runs/taef2_lite_dists3/model "$OUT" --license local/taef2_full/LICENSE-taesd.txt
fi
