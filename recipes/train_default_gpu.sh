#!/usr/bin/env bash
# Train the embedded default model on one GPU in a fixed time: tokenizer -> teacher -> student.
#
#   DATA=local/gpu/data RUNS=local/gpu/runs bash recipes/train_default_gpu.sh [tokenizer|teacher|student|all]
#
# Same recipes as recipes/train_default.sh (the CPU route); here every stage has a time budget
# (train.time_budget_minutes: the cosine schedule follows the time spent, so each stage ends decayed
# whatever the GPU's speed) instead of a step count. Defaults: 1.6 + 0.7 + 1.5 minutes of training,
# about 5 minutes in all with start-up and validation. The tokenizer is the `small` preset with
# base_channels = 32 and stride 8 (channel_multipliers 1,2,4,4: 32x32 tokens for 256 px, 4x the bits
# of the CPU route's stride 16, which cannot hold enough of a photo). The LPIPS-VGG loss needs the assets
# vgg16-imagenet and lpips-vgg-v0.1 in $VARESTORER_CACHE. DATA must hold train/ and val_mild/{lq,gt}.
set -euo pipefail
DATA=${DATA:-local/gpu/data}
RUNS=${RUNS:-local/gpu/runs}
PY=${PYTHON:-python3}
TOKENIZER_MINUTES=${TOKENIZER_MINUTES:-1.6}
TEACHER_MINUTES=${TEACHER_MINUTES:-0.7}
STUDENT_MINUTES=${STUDENT_MINUTES:-1.5}
TOKENIZER_CHANGES=${TOKENIZER_CHANGES:-"{base_channels = 32, channel_multipliers = [1, 2, 4, 4]}"}
WORKERS=${WORKERS:-14}
TOKENIZER_BATCH=${TOKENIZER_BATCH:-16}
TEACHER_BATCH=${TEACHER_BATCH:-32}
STUDENT_BATCH=${STUDENT_BATCH:-16}
MAX_STEPS=${MAX_STEPS:-1000000}
# LoRA on attention (the paper's targets) and on the FFNs: a briefly trained small teacher needs more change.
LORA_TARGETS='["blocks.*.sa.mat_qkv", "blocks.*.sa.proj", "blocks.*.ca.mat_q", "blocks.*.ca.mat_kv", "blocks.*.ca.proj", "blocks.*.ffn.fc1", "blocks.*.ffn.fc2"]'
VR="$PY -m varestorer"
common=(--set train.max_steps=$MAX_STEPS --set train.num_workers=$WORKERS --set train.ckpt_every=1000000
        --set train.log_every=25 --set train.val_every=0 --set data.repeat=8)
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

stage=${1:-all}
if [[ $stage == tokenizer || $stage == all ]]; then
stamp tokenizer
$VR train tokenizer --config recipes/tokenizer_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/tokenizer_small\"" --set "data.train_dirs=[\"$DATA/train\"]" \
  --set "data.val_dir=\"$DATA/val_mild/gt\"" --set "model.changes=$TOKENIZER_CHANGES" \
  --set train.time_budget_minutes=$TOKENIZER_MINUTES --set train.batch_size=$TOKENIZER_BATCH \
  --set data.crop_size=256 --set train.learning_rate=4e-4 --set train.warmup_steps=200 \
  --set train.ema_decay=0.998 --set loss.perceptual_weight=0.2
fi
if [[ $stage == teacher || $stage == all ]]; then
stamp teacher
$VR train teacher --config recipes/teacher_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/teacher_small\"" --set "model.tokenizer=\"$RUNS/tokenizer_small/model\"" \
  --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_dir=\"$DATA/val_mild/gt\"" \
  --set train.time_budget_minutes=$TEACHER_MINUTES --set train.batch_size=$TEACHER_BATCH \
  --set train.mixed_precision=\"bf16\" --set train.learning_rate=6e-4 --set train.warmup_steps=50 \
  --set train.ema_decay=0.995 --set loss.num_samples=4
fi
if [[ $stage == student || $stage == all ]]; then
stamp student
$VR train student --config recipes/student_small.toml --resume "${common[@]}" \
  --set "train.output_dir=\"$RUNS/student_small\"" --set "job.teacher=\"$RUNS/teacher_small/model\"" \
  --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_lq_dir=\"$DATA/val_mild/lq\"" \
  --set "data.val_gt_dir=\"$DATA/val_mild/gt\"" --set data.max_val_images=19 \
  --set train.time_budget_minutes=$STUDENT_MINUTES --set train.batch_size=$STUDENT_BATCH \
  --set train.mixed_precision=\"bf16\" --set train.learning_rate=4e-4 --set train.warmup_steps=50 \
  --set train.ema_decay=0.995 --set loss.lpips.crop=256 --set loss.lpips.weight=0.5 \
  --set model.lora_rank=32 --set model.lora_alpha=32.0 --set "model.lora_targets=$LORA_TARGETS"
fi
stamp done
