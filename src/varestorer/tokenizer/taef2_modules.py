"""The TAEF2 encoder and decoder: flat ``nn.Sequential`` stacks whose indices are the key prefixes.

TAEF2 (``madebyollin/taesd``, MIT) is a tiny distillation of the FLUX.2 image autoencoder: RGB in
[0, 1] at H x W <-> a 32-channel latent at H/8 x W/8. Structure (from the released key names and
shapes; written here, not copied)::

    Block:   ReLU(conv.4(ReLU(conv.2(ReLU(conv.0(x))))) + x)          all 3x3, padding 1
    pooled:  x += pool(x) first, pool = 1x1 conv 64->256 (no bias), GroupNorm(4, 256), ReLU, 1x1 256->64
    Encoder: 0 conv 3->64 | 1 Block | 2 conv s2 | 3-5 Blocks | 6 conv s2 | 7-9 Blocks | 10 conv s2 |
             11-13 pooled Blocks | 14 conv 64->32                        (stride convs have no bias)
    Decoder: 0 tanh(z/3)*3 | 1 conv 32->64 | 2 ReLU | 3-5 pooled Blocks | 6 up x2 (nearest) | 7 conv |
             8-10 Blocks | 11 up | 12 conv | 13-15 Blocks | 16 up | 17 conv | 18 Block | 19 conv 64->3

79 tensors per half (1,338,528 encoder / 1,338,499 decoder parameters at 64 channels). Without the
full-resolution blocks (encoder 1, decoder 18: identities) 73 tensors per half remain.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv3x3(c_in: int, c_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class TAEBlock(nn.Module):
    """Three 3x3 convs with a residual ReLU; ``pooled`` adds a 1x1 GroupNorm bottleneck to the input first."""

    def __init__(self, channels: int, *, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
        )
        self.pool = (
            nn.Sequential(
                nn.Conv2d(channels, 4 * channels, 1, bias=False),
                nn.GroupNorm(4, 4 * channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(4 * channels, channels, 1, bias=False),
            )
            if pooled
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu_(self.conv(x).add_(x))  # in place on the fresh conv output (autograd-safe)


class SoftClamp(nn.Module):
    """``tanh(z / limit) * limit``: keeps a latent within (-limit, limit) smoothly (no weights)."""

    def __init__(self, limit: float = 3.0) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z / self.limit) * self.limit


def taef2_encoder(
    latent_channels: int = 32, channels: int = 64, *, full_resolution_block: bool = True
) -> nn.Sequential:
    """RGB (B, 3, H, W) in [0, 1] -> raw latent (B, latent_channels, H/8, W/8).

    ``full_resolution_block=False``: index 1 (the Block at image resolution) is an ``nn.Identity``, so
    every other index, hence every other key, stays that of the released file.
    """
    c = channels
    return nn.Sequential(
        conv3x3(3, c),
        TAEBlock(c) if full_resolution_block else nn.Identity(),
        conv3x3(c, c, stride=2, bias=False),
        *(TAEBlock(c) for _ in range(3)),
        conv3x3(c, c, stride=2, bias=False),
        *(TAEBlock(c) for _ in range(3)),
        conv3x3(c, c, stride=2, bias=False),
        *(TAEBlock(c, pooled=True) for _ in range(3)),
        conv3x3(c, latent_channels),
    )


def taef2_decoder(
    latent_channels: int = 32, channels: int = 64, *, full_resolution_block: bool = True
) -> nn.Sequential:
    """Raw latent (B, latent_channels, h, w) -> RGB (B, 3, 8h, 8w), about [0, 1] (not clamped).

    ``full_resolution_block=False``: index 18 (the Block at image resolution) is an ``nn.Identity``.
    """
    c = channels
    return nn.Sequential(
        SoftClamp(3.0),
        conv3x3(latent_channels, c),
        nn.ReLU(inplace=True),
        *(TAEBlock(c, pooled=True) for _ in range(3)),
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(c, c, bias=False),
        *(TAEBlock(c) for _ in range(3)),
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(c, c, bias=False),
        *(TAEBlock(c) for _ in range(3)),
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(c, c, bias=False),
        TAEBlock(c) if full_resolution_block else nn.Identity(),
        conv3x3(c, 3),
    )


TAEF2_STRIDE = 8
"""Pixels per latent position along each side."""

__all__ = ["TAEF2_STRIDE", "SoftClamp", "TAEBlock", "taef2_decoder", "taef2_encoder"]
