"""Colour fixes of the restored image against the LQ input (AdaIN and wavelet), as in StableSR.

Generative restorers can drift in global colour; both fixes take the colour from the LQ:
AdaIN matches per-channel mean and std; the wavelet fix keeps the restored high frequencies and
replaces the low frequencies by those of the (upsampled) LQ.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from varestorer.restore_spec import WAVELET_LEVELS

ColorFix = Literal["none", "adain", "wavelet"]


def adain_color_fix(sr_BCHW: torch.Tensor, lq_BCHW: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match each channel's mean and std of ``sr`` to ``lq`` (any sizes, same B and C)."""
    sr_mean = sr_BCHW.mean(dim=(-2, -1), keepdim=True)
    sr_std = sr_BCHW.std(dim=(-2, -1), keepdim=True) if sr_BCHW[0, 0].numel() > 1 else torch.ones_like(sr_mean)
    lq_mean = lq_BCHW.mean(dim=(-2, -1), keepdim=True)
    lq_std = lq_BCHW.std(dim=(-2, -1), keepdim=True) if lq_BCHW[0, 0].numel() > 1 else torch.zeros_like(lq_mean)
    return (sr_BCHW - sr_mean) / (sr_std + eps) * lq_std + lq_mean


def wavelet_low_frequency(x_BCHW: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """Low-frequency part after ``levels`` a-trous blurs (3x3 binomial kernel, dilation 2**i)."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=x_BCHW.device) / 16
    channels = x_BCHW.shape[1]
    kernel = kernel.to(x_BCHW.dtype).expand(channels, 1, 3, 3)
    low = x_BCHW
    for level in range(levels):
        dilation = 2**level
        height, width = low.shape[-2:]
        mode = "reflect" if dilation < min(height, width) else "replicate"
        padded = F.pad(low, (dilation,) * 4, mode=mode)
        low = F.conv2d(padded, kernel, groups=channels, dilation=dilation)
    return low


def wavelet_color_fix(sr_BCHW: torch.Tensor, lq_BCHW: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """High frequencies of ``sr`` plus low frequencies of ``lq`` resized (bicubic) to ``sr``'s size."""
    if lq_BCHW.shape[-2:] != sr_BCHW.shape[-2:]:
        lq_BCHW = F.interpolate(lq_BCHW, size=sr_BCHW.shape[-2:], mode="bicubic", align_corners=False)
    return sr_BCHW - wavelet_low_frequency(sr_BCHW, levels) + wavelet_low_frequency(lq_BCHW, levels)


def apply_color_fix(
    sr_BCHW: torch.Tensor, lq_BCHW: torch.Tensor, method: ColorFix, *, levels: int = WAVELET_LEVELS
) -> torch.Tensor:
    """Dispatch on ``method``: "none", "adain" or "wavelet" (with ``levels`` a-trous levels)."""
    if levels < 1:
        raise ValueError(f"the wavelet fix needs at least 1 level, got {levels}")
    if method == "none":
        return sr_BCHW
    if method == "adain":
        return adain_color_fix(sr_BCHW, lq_BCHW)
    if method == "wavelet":
        return wavelet_color_fix(sr_BCHW, lq_BCHW, levels)
    raise ValueError(f"color fix must be none, adain or wavelet, got {method!r}")
