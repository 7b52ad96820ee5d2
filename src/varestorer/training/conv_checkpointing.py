"""Activation checkpointing of the convolutional parts of a distillation step (``train.conv_checkpointing``).

With the transformer blocks checkpointed (``train.activation_checkpointing``), most of what a 512 px step
saves for the backward is the tokenizer's convolutions at full resolution: the trained encoder (the LQ
resized to the working size) and the frozen decoder the image losses backpropagate through (on CUDA about
2.4 and 4.7 GB per image for Infinity's d32 tokenizer, bf16 autocast; benchmark/memory_model.py reports it by
part). This recomputes each of their units (a ``ResnetBlock``, a down- or upsampling conv) in the backward
from the unit's input, so a unit keeps only its input, and one unit's activations exist at a time.

Same losses and gradients (the units hold no randomness); the cost is one more forward of the encoder and
decoder per step. The memory model finds the same units with :func:`conv_units` and traces them.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint

from varestorer.tokenizer.blocks import Downsample, ResnetBlock, Upsample

UNIT_TYPES: tuple[type[nn.Module], ...] = (ResnetBlock, Downsample, Upsample)
"""The modules recomputed one at a time (the tokenizer's encoder and decoder are chains of them)."""


def conv_units(module: nn.Module) -> list[nn.Module]:
    """The checkpointable units of ``module`` (its tokenizer encoder's and decoder's blocks), in module order."""
    return [m for m in module.modules() if isinstance(m, UNIT_TYPES)]


def _recomputed(forward: Any, *args: Any) -> Any:
    return checkpoint(forward, *args, use_reentrant=False)


def enable_conv_checkpointing(module: nn.Module) -> int:
    """Recompute every unit of :func:`conv_units` in the backward; returns how many (0: none found).

    The unit's own ``forward`` is replaced by a checkpointed call of it (once: a second call changes nothing).
    """
    units = conv_units(module)
    for unit in units:
        if not getattr(unit, "_conv_checkpointed", False):
            unit.forward = functools.partial(_recomputed, unit.forward)  # type: ignore[method-assign]
            unit._conv_checkpointed = True  # type: ignore[assignment]
    return len(units)
