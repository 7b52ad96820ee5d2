#!/usr/bin/env bash
# The CPU-only route to a small model (tokenizer -> teacher -> student -> merged int8 export), stride-16 tokenizer.
# The shipped default came from the GPU route instead: recipes/train_default_gpu.sh (one GPU, ~5 minutes),
# then recipes/finetune_default_cpu.sh, then the export stage below (see docs/default_model.md).
#
#   DATA=local/data RUNS=local/runs bash recipes/train_default.sh [tokenizer|teacher|student|export|all]
#
# DATA must hold train/ (HQ photos, searched recursively) and val_mild/{lq,gt} (made with
# `varestorer degrade VAL_HR -o $DATA/val_mild --preset mild --crop none`). Every stage resumes from its
# last checkpoint when re-run, so a CPU budget can be spent in several sittings. Step counts and batch
# sizes below are what fits a few hours of a 2-core CPU; on a GPU raise them (and set mixed_precision=bf16).
set -euo pipefail
DATA=${DATA:-local/data}
RUNS=${RUNS:-local/runs}
THREADS=${THREADS:-2}
TOKENIZER_STEPS=${TOKENIZER_STEPS:-1400}
TEACHER_STEPS=${TEACHER_STEPS:-400}
STUDENT_STEPS=${STUDENT_STEPS:-300}
STUDENT_SCHEDULE=${STUDENT_SCHEDULE:-cosine}   # "constant" when a run may be stopped early
VR=${VARESTORER:-varestorer}
stage=${1:-all}

if [[ $stage == tokenizer || $stage == all ]]; then
  $VR train tokenizer --config recipes/tokenizer_small.toml --resume \
    --set "train.output_dir=\"$RUNS/tokenizer_small\"" --set "data.train_dirs=[\"$DATA/train\"]" \
    --set "data.val_dir=\"$DATA/val_mild/gt\"" --set train.max_steps=$TOKENIZER_STEPS --set train.batch_size=4 \
    --set train.learning_rate=4e-4 --set train.warmup_steps=100 --set train.ema_decay=0.99 \
    --set train.val_every=200 --set train.ckpt_every=100 --set train.num_workers=1 --set train.cpu_threads=$THREADS
fi
if [[ $stage == teacher || $stage == all ]]; then
  $VR train teacher --config recipes/teacher_small.toml --resume \
    --set "train.output_dir=\"$RUNS/teacher_small\"" --set "model.tokenizer=\"$RUNS/tokenizer_small/model\"" \
    --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_dir=\"$DATA/val_mild/gt\"" \
    --set train.max_steps=$TEACHER_STEPS --set train.batch_size=4 --set train.learning_rate=6e-4 \
    --set train.warmup_steps=40 --set train.ema_decay=0.98 --set train.val_every=200 --set train.ckpt_every=50 \
    --set train.num_workers=1 --set train.cpu_threads=$THREADS --set loss.num_samples=4
fi
if [[ $stage == student || $stage == all ]]; then
  $VR train student --config recipes/student_small.toml --resume \
    --set "train.output_dir=\"$RUNS/student_small\"" --set "job.teacher=\"$RUNS/teacher_small/model\"" \
    --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_lq_dir=\"$DATA/val_mild/lq\"" \
    --set "data.val_gt_dir=\"$DATA/val_mild/gt\"" --set train.max_steps=$STUDENT_STEPS --set train.batch_size=2 \
    --set train.learning_rate=3e-4 --set train.warmup_steps=20 --set train.ema_decay=0.98 \
    --set train.schedule=$STUDENT_SCHEDULE --set train.val_every=100 --set train.ckpt_every=25 \
    --set train.num_workers=1 --set train.cpu_threads=$THREADS
fi
if [[ $stage == export || $stage == all ]]; then
  # STUDENT picks another student folder (the default: local/runs/student_cpu/model). int8 storage (one
  # scale per output channel; half of fp16, same scores: docs/default_model.md) and 15 MB shards keep the
  # shipped files small; the wavelet colour fix restores the LQ's colours, which the briefly trained small
  # tokenizer reproduces poorly.
  $VR export "${STUDENT:-$RUNS/student_small/model}" -o src/varestorer/weights/default --merge --dtype int8 \
    --color-fix wavelet --max-shard-size 15MB --overwrite
fi
