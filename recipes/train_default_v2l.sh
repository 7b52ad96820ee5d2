#!/usr/bin/env bash
# Default model v2L (issue 16, docs/default_model.md), the embedded default on 2026-12-02 until v2Q (embedded
# since as int8, `--model v2l`; recipes/train_default_v2q.sh starts from this run): v2 moved onto
# the lite TAEF2 tokenizer (the embedded `default-tokenizer`), end to end on a CPU, from the repository root:
#   v2       recipes/train_default_v2.sh teacher + student   v2's teacher (full-TAEF2 tokens) and student
#   lite     recipes/train_default_tokenizer.sh              the lite tokenizer (local/runs/taef2_lite_dists3)
#   teacher  v2's teacher folder with the lite tokenizer in place of the full one (same whitening, gains and
#            token space; the transformer is v2's teacher unchanged)  -> local/v2l/teacher
#   student  recipes/student_v2.toml from v2's student (its transformer LoRA, skip gains, fidelity weights
#            and decoder; the decoder's Block 18 is not in the lite decoder), 45 min, seed 1
#   export   merged fp16 checkpoint, tile overlap 6 -> $OUT (default local/v2l/model_v2l; the package ships it
#            as src/varestorer/weights/default)
#
#   bash recipes/train_default_v2l.sh [v2|lite|teacher|student|export|all]
#
# The shipped run: the student stage alone, 893 steps x 2 in 45 min on the 2-core AMD EPYC (2.6-3 s per step).
set -euo pipefail
VR=${VARESTORER:-varestorer}
OUT=${OUT:-local/v2l/model_v2l}
LITE=${LITE:-local/runs/taef2_lite_dists3/model}
stage=${1:-all}

if [[ $stage == v2 || $stage == all ]]; then
  bash recipes/train_default_v2.sh teacher
  bash recipes/train_default_v2.sh student
fi
if [[ $stage == lite || $stage == all ]]; then
  bash recipes/train_default_tokenizer.sh full
  bash recipes/train_default_tokenizer.sh lite
  bash recipes/train_default_tokenizer.sh dists
fi
if [[ $stage == teacher || $stage == all ]]; then
  if [[ ! -d local/v2l/teacher ]]; then
    mkdir -p local/v2l
    cp -r local/runs/teacher_taef2/model local/v2l/teacher.part
    rm -rf local/v2l/teacher.part/tokenizer
    cp -r "$LITE" local/v2l/teacher.part/tokenizer
    mv local/v2l/teacher.part local/v2l/teacher
  fi
fi
if [[ $stage == student || $stage == all ]]; then
  $VR train student --config recipes/student_v2.toml --resume \
    --set 'job.teacher="local/v2l/teacher"' --set 'job.init_from="local/runs/student_v2/model"' \
    --set 'train.output_dir="local/runs/student_v2l"' --set train.time_budget_minutes=45 --set train.seed=1
fi
if [[ $stage == export || $stage == all ]]; then
  $VR export local/runs/student_v2l/model -o "$OUT" --merge --dtype float16 --tile-overlap 6
fi
