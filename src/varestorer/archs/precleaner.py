"""The light pre-cleaner run on the LQ image before the restorer (the paper's role for SwinIR).

Design decision: the pre-cleaner keeps the LQ size, because the one-step restorer takes the LQ at
its own resolution. Two variants share one wrapper:

- a same-size network (``precleaner-1x`` in ``PEER_ARCHS``: SRVGGNetCompact, 32 features,
  8 convolutions, upscale 1), trained with ``varestorer train precleaner``; and
- a published x4 restorer (realesr-general-x4v3, loaded by path from ncnn or ``.pth``): it cleans
  and upsamples x4, and the result is resized back to the LQ size with antialiased bicubic, which
  keeps its denoising and deblurring while discarding the invented detail.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PreCleaner(nn.Module):
    """``forward(lq_B3HW in [0, 1]) -> cleaned_B3HW`` in [0, 1], same size as the input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.scale = int(getattr(net, "scale", 1))

    def forward(self, lq_B3HW: torch.Tensor) -> torch.Tensor:
        height, width = lq_B3HW.shape[-2:]
        out = self.net(lq_B3HW)
        if out.shape[-2:] != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return out.clamp(0, 1)


def load_precleaner(path: str | Path) -> PreCleaner:
    """A pre-cleaner from peer weights (folder, ``.pth``/``.safetensors`` or ncnn ``.param``/``.bin``)."""
    from varestorer.archs.registry import load_peer

    return PreCleaner(load_peer(path)).eval()
