#!/usr/bin/env bash
# Paper Table 3 at small scale: train every variant with the same budget, then score it on a paired set.
#
#   DATA=local/data RUNS=local/runs STEPS=100 bash benchmarks/run_ablations.sh
#
# Needs the teacher of recipes/train_default.sh ($RUNS/teacher_small/model) and $DATA/val_mild/{lq,gt}.
# Writes $RUNS/ablations/<variant>/ (checkpoints, model/) and $RUNS/ablations/results.md.
set -euo pipefail
DATA=${DATA:-local/data}
RUNS=${RUNS:-local/runs}
STEPS=${STEPS:-100}
THREADS=${THREADS:-2}
VR=${VARESTORER:-varestorer}
OUT=$RUNS/ablations
mkdir -p "$OUT"
declare -A VARIANTS=(
  [full]=""
  [no_kl]="$(cat recipes/ablations/no_kl.args)"
  [causal]="$(cat recipes/ablations/causal.args)"
  [no_precleaner]="$(cat recipes/ablations/no_precleaner.args)"
  [no_distill]="$(cat recipes/ablations/no_distill.args)"
)
methods=()
for variant in full no_kl causal no_precleaner no_distill; do
  overrides=()
  for setting in ${VARIANTS[$variant]}; do overrides+=(--set "$setting"); done
  $VR train student --config recipes/student_small.toml --resume \
    --set "train.output_dir=\"$OUT/$variant\"" --set "model.teacher=\"$RUNS/teacher_small/model\"" \
    --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_lq_dir=\"$DATA/val_mild/lq\"" \
    --set "data.val_gt_dir=\"$DATA/val_mild/gt\"" --set train.max_steps=$STEPS --set train.batch_size=2 \
    --set train.learning_rate=3e-4 --set train.warmup_steps=20 --set train.ema_decay=0.9 \
    --set train.schedule=constant --set train.val_every=0 --set train.ckpt_every=$STEPS \
    --set train.num_workers=1 --set train.cpu_threads=$THREADS --set train.progress=false "${overrides[@]}"
  methods+=(--method "$variant=$OUT/$variant/model")
done
# no_prompt is identical to full here: the small teacher has no text encoder (see recipes/ablations/README.md).
${PYTHON:-python} benchmarks/quality_table.py --set mild="$DATA/val_mild" "${methods[@]}" --out "$OUT/eval" \
  --restore-arg=--color-fix=none
cp "$OUT/eval/results.md" "$OUT/results.md"
