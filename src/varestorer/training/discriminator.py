"""PatchGAN discriminator and hinge losses for adversarial tokenizer training.

The discriminator (Isola et al. 2017, "pix2pix" §3.2.2; used by taming-transformers and Infinity's
tokenizer training) scores overlapping patches: strided 4x4 convolutions with LeakyReLU(0.2) and
GroupNorm (instead of BatchNorm, so it has no running statistics and behaves the same under DDP
and at batch size 1), ending in a one-channel logit map.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call


class PatchDiscriminator(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> patch logits (B, 1, H', W') (H' ~ H / 2**num_layers)."""

    def __init__(self, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if channels < 1 or num_layers < 1:
            raise ValueError(f"discriminator channels and layers must be >= 1, got {channels}, {num_layers}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for index in range(1, num_layers + 1):
            out = channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(math.gcd(32, out), out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(x_B3HW)

    def frozen_call(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Forward with detached weights: gradients reach the input only (the generator's adversarial term)."""
        detached = {name: param.detach() for name, param in self.named_parameters()}
        return functional_call(self, detached, (x_B3HW,))


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) (Lim & Ye 2017, geometric GAN)."""
    return torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean(D(fake)): the generator raises the discriminator's score of its outputs."""
    return -fake_logits.mean()
