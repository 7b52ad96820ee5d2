"""Optimiser pieces: AdamW parameter groups and the learning-rate schedule (a pure function of the step).

The schedule has no state of its own: the Trainer sets every group's ``lr`` from
:func:`learning_rate_at` after each step, so resuming needs only the step count (and, for a
time-budgeted run, the time spent, which the checkpoint keeps).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from varestorer.training.config import TrainConfig


def learning_rate_at(config: TrainConfig, step: int, time_fraction: float = 0.0) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine or constant.

    ``time_fraction``: the part of ``time_budget_minutes`` spent; the cosine follows whichever of the
    step and time fractions is further along.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, max(progress, time_fraction))
    low = config.learning_rate * config.min_learning_rate_ratio
    return low + (config.learning_rate - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_param_groups(
    module: nn.Module, config: TrainConfig, groups: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]], list[float]]:
    """AdamW groups and their learning-rate multipliers.

    Default: every trainable parameter, 1-D ones (norm gains, biases) without weight decay when
    ``no_decay_norms_and_biases``. Jobs may pass ``groups``: ``{"params": [...], "lr_scale": 0.1,
    "weight_decay": 0.0, "clip_apart": True}`` dicts (the last three optional; ``clip_apart``: the group's
    gradients are clipped on their own, not with the model's, as a discriminator's).
    """
    if groups is not None:
        out = [
            {
                "params": list(g["params"]),
                "weight_decay": g.get("weight_decay", config.weight_decay),
                "clip_apart": bool(g.get("clip_apart", False)),
            }
            for g in groups
        ]
        return out, [float(g.get("lr_scale", 1.0)) for g in groups]
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    if not config.no_decay_norms_and_biases:
        return [{"params": [p for _, p in trainable], "weight_decay": config.weight_decay}], [1.0]
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], [
        1.0,
        1.0,
    ]
