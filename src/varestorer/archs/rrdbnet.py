"""RRDBNet: the ESRGAN / Real-ESRGAN x4plus generator (residual-in-residual dense blocks).

Architecture facts (Real-ESRGAN x4plus): 64 features, 23 RRDB blocks, growth 32, LeakyReLU 0.2,
residual scaling 0.2, two nearest x2 upsampling stages. For scales 2 and 1 the input is first
pixel-unshuffled (x2 / x4) so the body always runs at 1/4 of the output size. Parameter names follow
Real-ESRGAN (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.checkpoint import PretrainedMixin
from varestorer.restore_spec import Restorable, RestoreSpec


@dataclass(frozen=True)
class RRDBNetConfig:
    num_in_ch: int = 3
    """Input channels."""
    num_out_ch: int = 3
    """Output channels."""
    num_feat: int = 64
    """Trunk width."""
    num_block: int = 23
    """RRDB blocks in the trunk."""
    num_grow_ch: int = 32
    """Growth channels of each dense block."""
    scale: int = 4
    """Native scale factor: 1, 2 or 4."""


RRDBNET_PRESETS: dict[str, RRDBNetConfig] = {"realesrgan-x4plus": RRDBNetConfig()}
"""Named RRDBNet shapes (random weights): Real-ESRGAN's RealESRGAN_x4plus generator."""


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; the output is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x_BCHW))
        x2 = self.lrelu(self.conv2(torch.cat((x_BCHW, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x_BCHW, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x_BCHW, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x_BCHW, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x_BCHW  # residual scaling 0.2 (ESRGAN) keeps the deep trunk stable


class RRDB(nn.Module):
    """Three dense blocks with an outer residual, scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x_BCHW))) * 0.2 + x_BCHW


class RRDBNet(Restorable, PretrainedMixin, nn.Module):
    """Real-ESRGAN generator; ``forward(lq_BCHW in [0, 1]) -> sr_BC(sH)(sW)`` (not clamped).

    Implements the ``OneStepSR`` protocol: ``scale``, ``input_size`` None (any size),
    ``size_multiple`` (4 // scale for the pixel-unshuffled x1/x2 variants, else 1).
    """

    config_class = RRDBNetConfig

    @property
    def restore_spec(self) -> RestoreSpec:
        scale = self.config.scale
        return RestoreSpec(scale, None, 4 // scale, purpose="restoration" if scale == 1 else "super-resolution")

    def __init__(self, config: RRDBNetConfig | None = None) -> None:
        super().__init__()
        config = config or RRDBNetConfig()
        if config.scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {config.scale}")
        self.config = config
        in_ch = config.num_in_ch * (4 // config.scale) ** 2
        self.conv_first = nn.Conv2d(in_ch, config.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(config.num_feat, config.num_grow_ch) for _ in range(config.num_block)))
        self.conv_body = nn.Conv2d(config.num_feat, config.num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(config.num_feat, config.num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(config.num_feat, config.num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(config.num_feat, config.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(config.num_feat, config.num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, lq_BCHW: torch.Tensor) -> torch.Tensor:
        scale = self.config.scale
        x = lq_BCHW if scale == 4 else F.pixel_unshuffle(lq_BCHW, 4 // scale)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
