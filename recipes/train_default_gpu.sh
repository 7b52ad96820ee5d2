#!/usr/bin/env bash
# Train the embedded default model on one GPU in a fixed time: tokenizer -> teacher -> student.
#
#   DATA=local/gpu/data RUNS=local/gpu/runs bash recipes/train_default_gpu.sh
#
# Same recipes as recipes/train_default.sh (the CPU route); here every stage has a time budget
# (train.time_budget_minutes: the cosine schedule follows the time spent, so each stage ends decayed
# whatever the GPU's speed) instead of a step count. Defaults: 3.5 + 1.0 + 2.3 minutes of training,
# under 8 minutes in all with start-up and validation. The tokenizer is the `small` preset with
# base_channels = 32 (3.9M parameters; the CPU route keeps 16). The LPIPS-VGG loss needs the assets
# vgg16-imagenet and lpips-vgg-v0.1 in $VARESTORER_CACHE. DATA must hold train/ and val_mild/{lq,gt}.
set -euo pipefail
DATA=${DATA:-local/gpu/data}
RUNS=${RUNS:-local/gpu/runs}
PY=${PYTHON:-python3}
TOKENIZER_MINUTES=${TOKENIZER_MINUTES:-3.5}
TEACHER_MINUTES=${TEACHER_MINUTES:-1.0}
STUDENT_MINUTES=${STUDENT_MINUTES:-2.3}
WORKERS=${WORKERS:-14}
TOKENIZER_BATCH=${TOKENIZER_BATCH:-16}
TEACHER_BATCH=${TEACHER_BATCH:-32}
STUDENT_BATCH=${STUDENT_BATCH:-16}
MAX_STEPS=${MAX_STEPS:-1000000}
VR="$PY -m varestorer"
common=(--set train.max_steps=$MAX_STEPS --set train.num_workers=$WORKERS --set train.ckpt_every=1000000
        --set train.log_every=25 --set train.val_every=0 --set data.repeat=8)
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

stamp tokenizer
$VR train tokenizer --config recipes/tokenizer_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/tokenizer_small\"" --set "data.train_dirs=[\"$DATA/train\"]" \
  --set "data.val_dir=\"$DATA/val_mild/gt\"" --set "model.changes={base_channels = 32}" \
  --set train.time_budget_minutes=$TOKENIZER_MINUTES --set train.batch_size=$TOKENIZER_BATCH \
  --set data.crop_size=256 --set train.learning_rate=4e-4 --set train.warmup_steps=200 \
  --set train.ema_decay=0.998 --set loss.perceptual_weight=0.2

stamp teacher
$VR train teacher --config recipes/teacher_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/teacher_small\"" --set "model.tokenizer=\"$RUNS/tokenizer_small/model\"" \
  --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_dir=\"$DATA/val_mild/gt\"" \
  --set train.time_budget_minutes=$TEACHER_MINUTES --set train.batch_size=$TEACHER_BATCH \
  --set train.mixed_precision=\"bf16\" --set train.learning_rate=6e-4 --set train.warmup_steps=100 \
  --set train.ema_decay=0.995 --set loss.num_samples=4

stamp student
$VR train student --config recipes/student_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/student_small\"" --set "model.teacher=\"$RUNS/teacher_small/model\"" \
  --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_lq_dir=\"$DATA/val_mild/lq\"" \
  --set "data.val_gt_dir=\"$DATA/val_mild/gt\"" --set data.max_val_images=19 \
  --set train.time_budget_minutes=$STUDENT_MINUTES --set train.batch_size=$STUDENT_BATCH \
  --set train.mixed_precision=\"bf16\" --set train.learning_rate=3e-4 --set train.warmup_steps=100 \
  --set train.ema_decay=0.995 --set loss.perceptual_crop=256 --set loss.lambda_perceptual=0.5
stamp done
