#!/usr/bin/env bash
# Continue distilling the default student on a CPU after the GPU route (recipes/train_default_gpu.sh).
#
#   RUNS=local/gpu/runs2 OUT=local/runs/student_cpu MINUTES=65 bash recipes/finetune_default_cpu.sh
#
# Starts from the GPU student's weights (job.init_from; fresh optimiser), same teacher, same losses;
# batch 2, 2 threads, a time budget instead of a step count. INIT names another student to start from
# (e.g. the previous CPU round's model); LAMBDA_DISTS > 0 adds a DISTS term to the loss.
set -euo pipefail
DATA=${DATA:-local/gpu/data}
RUNS=${RUNS:-local/gpu/runs}
OUT=${OUT:-local/runs/student_cpu}
MINUTES=${MINUTES:-60}
THREADS=${THREADS:-2}
PY=${PYTHON:-python3}
INIT=${INIT:-$RUNS/student_small/model}
LAMBDA_DISTS=${LAMBDA_DISTS:-0}
LR=${LR:-1.5e-4}
LAMBDA_PERCEPTUAL=${LAMBDA_PERCEPTUAL:-0.5}
LORA_TARGETS='["blocks.*.sa.mat_qkv", "blocks.*.sa.proj", "blocks.*.ca.mat_q", "blocks.*.ca.mat_kv", "blocks.*.ca.proj", "blocks.*.ffn.fc1", "blocks.*.ffn.fc2"]'
$PY -m varestorer train student --config recipes/student_small.toml --resume \
  --set "train.output_dir=\"$OUT\"" --set "job.teacher=\"$RUNS/teacher_small/model\"" \
  --set "job.init_from=\"$INIT\"" \
  --set "data.train_dirs=[\"$DATA/train\"]" --set "data.val_lq_dir=\"$DATA/val_mild/lq\"" \
  --set "data.val_gt_dir=\"$DATA/val_mild/gt\"" --set data.max_val_images=19 --set data.repeat=8 \
  --set train.max_steps=1000000 --set train.time_budget_minutes=$MINUTES --set train.batch_size=2 \
  --set train.learning_rate=$LR --set train.warmup_steps=20 --set train.ema_decay=0.99 \
  --set train.val_every=0 --set train.ckpt_every=50 --set train.log_every=10 --set train.num_workers=1 \
  --set train.cpu_threads=$THREADS --set loss.lpips.weight=$LAMBDA_PERCEPTUAL --set loss.lpips.crop=192 \
  --set loss.dists.weight=$LAMBDA_DISTS --set loss.dists.crop=192 \
  --set model.lora_rank=32 --set model.lora_alpha=32.0 --set "model.lora_targets=$LORA_TARGETS"
