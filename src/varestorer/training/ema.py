"""Exponential moving average of a module's trainable weights.

``shadow <- decay * shadow + (1 - decay) * weight`` after every optimiser step, with the usual
warm-up ``decay_t = min(decay, (1 + t) / (10 + t))`` so that early averages are not dominated by the
random initialisation. Only parameters with ``requires_grad`` are tracked; buffers and frozen weights
are shared with the live module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """Float32 shadow copies of the trainable parameters of ``module``, keyed by parameter name."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: param.detach().float().clone() for name, param in module.named_parameters() if param.requires_grad
        }

    def current_decay(self) -> float:
        """The decay used by the next update (warm-up: small while few updates have happened)."""
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold the current trainable weights of ``module`` into the average."""
        decay = self.current_decay()
        params = dict(module.named_parameters())
        for name, shadow in self.shadow.items():
            shadow.lerp_(params[name].detach().float(), 1.0 - decay)
        self.num_updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``module`` (for validation or export)."""
        params = dict(module.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        for name, shadow in self.shadow.items():
            params[name].copy_(shadow)
        try:
            yield module
        finally:
            for name, saved in backup.items():
                params[name].copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensor(s), e.g. {missing[0]}")
        for name in self.shadow:
            self.shadow[name] = state[name].detach().float().clone().to(self.shadow[name].device)
        self.num_updates = num_updates
