"""A ControlNet-style branch (Zhang et al. 2023, arXiv:2302.05543) into a next-scale transformer.

Per-position features (B, L - 1, d) of scales 2..K are embedded to the transformer's width and added to every
block's input through a zero-initialised linear layer each, so a model with the branch starts exactly as the one
without. Used by the ``no_distill`` ablation (models/lq_conditioned.py: the LQ pyramid's inputs) and by the
student's ``lq_residual_control`` (models/student.py: the LQ's own per-scale residuals).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ControlBranch(nn.Module):
    """LQ pyramid inputs (B, L - 1, d) -> one zero-initialised addition (B, L, C) per transformer block."""

    def __init__(self, token_dim: int, width: int, num_blocks: int) -> None:
        super().__init__()
        self.embed = nn.Linear(token_dim, width)
        self.zero = nn.ModuleList(nn.Linear(width, width) for _ in range(num_blocks))
        for layer in self.zero:
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, lq_inputs_BLd: Tensor) -> list[Tensor]:
        """Position 0 (the start token) gets no addition."""
        B = lq_inputs_BLd.shape[0]
        embedded = self.embed(lq_inputs_BLd)
        c_BLC = torch.cat([embedded.new_zeros(B, 1, embedded.shape[-1]), embedded], dim=1)
        return [zero(c_BLC) for zero in self.zero]


__all__ = ["ControlBranch"]
