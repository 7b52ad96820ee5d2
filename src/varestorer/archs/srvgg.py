"""SRVGGNetCompact: the compact VGG-style restorer of realesr-general-x4v3 (Real-ESRGAN).

A plain stack of 3x3 convolutions with PReLU activations at the low resolution, a final
convolution to ``3 * upscale**2`` channels, a pixel shuffle, and a nearest-upsampled copy of the
input added as a residual. Parameter names follow Real-ESRGAN (``body.N.weight``) so its ``.pth``
files and converted ncnn files load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.checkpoint import PretrainedMixin
from varestorer.restore_spec import Restorable, RestoreSpec


@dataclass(frozen=True)
class SRVGGConfig:
    num_in_ch: int = 3
    """Input channels."""
    num_out_ch: int = 3
    """Output channels."""
    num_feat: int = 64
    """Width of every hidden convolution."""
    num_conv: int = 32
    """Hidden 3x3 convolutions between the first and the last one."""
    upscale: int = 4
    """Native scale factor (1 gives a same-size restorer: no shuffle, identity residual)."""
    act_type: Literal["prelu", "relu", "leakyrelu"] = "prelu"
    """Activation after every convolution but the last."""


SRVGG_PRESETS: dict[str, SRVGGConfig] = {
    # Real-ESRGAN's realesr-general-x4v3 (64 features, 32 convolutions, x4).
    "realesr-general-x4v3": SRVGGConfig(),
    # Our light same-size pre-cleaner for `varestorer train precleaner` (about 75k parameters).
    "precleaner-1x": SRVGGConfig(num_feat=32, num_conv=8, upscale=1),
}
"""Named SRVGGNetCompact shapes (random weights)."""


def _activation(kind: str, num_feat: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)


class SRVGGNetCompact(Restorable, PretrainedMixin, nn.Module):
    """Compact real-world SR network; input and output images in [0, 1].

    ``forward(lq_BCHW) -> sr_BC(sH)(sW)`` with ``s = config.upscale``. Works at any size
    (``size_multiple`` 1); it implements the ``OneStepSR`` protocol of ``varestorer.inference``.
    """

    config_class = SRVGGConfig

    @property
    def restore_spec(self) -> RestoreSpec:
        scale = self.config.upscale
        return RestoreSpec(scale, None, purpose="restoration" if scale == 1 else "super-resolution")

    def __init__(self, config: SRVGGConfig | None = None) -> None:
        super().__init__()
        config = config or SRVGGConfig()
        if config.upscale < 1 or config.num_conv < 0 or config.num_feat < 1:
            raise ValueError(f"invalid SRVGGConfig: {config}")
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(config.num_in_ch, config.num_feat, 3, 1, 1)]
        layers.append(_activation(config.act_type, config.num_feat))
        for _ in range(config.num_conv):
            layers.append(nn.Conv2d(config.num_feat, config.num_feat, 3, 1, 1))
            layers.append(_activation(config.act_type, config.num_feat))
        layers.append(nn.Conv2d(config.num_feat, config.num_out_ch * config.upscale**2, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(config.upscale)

    def forward(self, lq_BCHW: torch.Tensor) -> torch.Tensor:
        feat = lq_BCHW
        for layer in self.body:
            feat = layer(feat)
        sr_BCHW = self.upsampler(feat)
        # The network predicts a residual over nearest-neighbour upsampling of the input.
        scale = self.config.upscale
        base = lq_BCHW if scale == 1 else F.interpolate(lq_BCHW, scale_factor=scale, mode="nearest")
        if base.shape[1] != sr_BCHW.shape[1]:
            base = base[:, : sr_BCHW.shape[1]]
        return sr_BCHW + base
