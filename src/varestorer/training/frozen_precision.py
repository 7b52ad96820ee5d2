"""Frozen weights stored in bf16 (``train.frozen_weights_dtype``): half the bytes of the frozen base.

The Trainer builds the model in float32 and trains under bf16 autocast, which casts every linear and conv
weight to bf16 at each call. For a frozen weight that cast gives the same tensor every step, so storing it
in bf16 once computes the same thing with half the memory (Infinity-2B's frozen base: 8.5 -> 4.3 GiB) and
without the per-step copies autocast makes (and, for the frozen layers, saves for the backward). What
changes: nothing for frozen linear/conv layers that autocast casts anyway; a LoRA-wrapped weight is summed
with its adapter before the cast (``W + BA``), so there ``W`` itself is rounded to bf16 first: the same
result to bf16 rounding. Norm gains and every trainable tensor stay float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

LOW_PRECISION_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layers whose weight and bias bf16 autocast casts to bf16 at every call."""


def frozen_low_precision_tensors(module: nn.Module) -> list[nn.Parameter]:
    """The frozen weights and biases of ``module``'s :data:`LOW_PRECISION_LAYERS` (LoRA's base weight too)."""
    found: dict[int, nn.Parameter] = {}
    for layer in module.modules():
        if not isinstance(layer, LOW_PRECISION_LAYERS):
            continue
        tensors = list(layer.parameters(recurse=False))
        if parametrize.is_parametrized(layer, "weight"):
            tensors.append(layer.parametrizations["weight"].original)  # type: ignore[index,union-attr]
        for tensor in tensors:
            if not tensor.requires_grad and tensor.is_floating_point():
                found[id(tensor)] = tensor
    return list(found.values())


def store_frozen_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Cast the tensors of :func:`frozen_low_precision_tensors` to ``dtype`` in place; returns how many."""
    tensors = frozen_low_precision_tensors(module)
    for tensor in tensors:
        tensor.data = tensor.data.to(dtype)
    return len(tensors)
