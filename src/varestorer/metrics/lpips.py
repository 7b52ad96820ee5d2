"""LPIPS (Zhang et al. 2018, v0.1) with AlexNet or VGG16 features; differentiable, usable as a training loss.

``LPIPS(net)(x, y)`` with ``x, y`` (B, 3, H, W) in [-1, 1] (or [0, 1] with ``normalize=True``) returns
(B,) distances, lower is more similar. Per tapped layer: unit-normalise features along channels,
square the difference, weight channels with the learned 1x1 head, average over space; sum the layers.
The backbone and heads are frozen (no parameter needs grad) but gradients flow to the inputs.
Weights: assets ``alexnet-imagenet``/``vgg16-imagenet`` + ``lpips-{alex,vgg}-v0.1``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from varestorer.metrics.backbones import BACKBONE_ASSETS, alexnet_features, load_asset_tensors, vgg16_features

# LPIPS' ScalingLayer: inputs in [-1, 1] are shifted/scaled to ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def check_image_pair(x: torch.Tensor, y: torch.Tensor, *, name: str) -> None:
    """One-line ValueErrors for the usual mistakes: rank, channels, shape mismatch, non-float."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected (B, 3, H, W) images, got shape {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"{name}: image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if not x.is_floating_point() or not y.is_floating_point():
        raise ValueError(f"{name}: expected float tensors, got {x.dtype} and {y.dtype}")


def normalize_channels(f_BCHW: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm (+eps)."""
    return f_BCHW / (f_BCHW.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity.

    Args:
        net: "vgg" (VGG16, the usual training loss) or "alex" (AlexNet, the usual evaluation metric).
        normalize: inputs are in [0, 1] (True) instead of [-1, 1] (False, the LPIPS convention).
        pretrained: load the cached weights (False: random weights, for shape tests only).

    Raises:
        AssetMissingError: the weights were not fetched (the message names the command).
    """

    shift: torch.Tensor  # buffer
    scale: torch.Tensor  # buffer

    def __init__(self, net: Literal["vgg", "alex"] = "vgg", *, normalize: bool = False, pretrained: bool = True):
        super().__init__()
        if net not in BACKBONE_ASSETS:
            raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_ASSETS)}, got {net!r}")
        self.net = net
        self.normalize = normalize
        self.features: Any = alexnet_features() if net == "alex" else vgg16_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.features.channels)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.features.load_converted(load_asset_tensors(BACKBONE_ASSETS[net]))
            heads = load_asset_tensors(f"lpips-{net}-v0.1")
            for index, head in enumerate(self.heads):
                head.weight.data.copy_(heads[f"lin{index}.weight"])  # type: ignore[operator]  # Conv2d
        self.requires_grad_(False)
        self.eval()

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """(B,) LPIPS distance between two image batches of equal shape."""
        check_image_pair(x_B3HW, y_B3HW, name="LPIPS")
        if self.normalize:
            x_B3HW, y_B3HW = x_B3HW * 2 - 1, y_B3HW * 2 - 1
        fx = self.features((x_B3HW - self.shift) / self.scale)
        fy = self.features((y_B3HW - self.shift) / self.scale)
        total_B = x_B3HW.new_zeros(x_B3HW.shape[0])
        for head, a, b in zip(self.heads, fx, fy):
            diff = (normalize_channels(a) - normalize_channels(b)).pow(2)
            total_B = total_B + head(diff).mean(dim=(1, 2, 3))
        return total_B
