"""``GainedBitwiseQuantizer``: Infinity's multi-scale BSQ with a learned code gain per scale.

A latent that was not trained for BSQ (TAEF2's) has residuals whose size falls steadily from the
coarsest scale to the finest; Infinity's fixed code length 1/sqrt(d) per scale fits none of them.
Here the code of a scale is ``gain(t) * sign(r) / sqrt(d)``. The gain is a function of how many
octaves the scale lies below the final grid, ``t = 0.5 * log2(H * W / (h * w))`` (0 for the final
grid, 5 for 1x1 on a 32x32 grid): piecewise linear over learned knots at ``t = 0, spacing,
2 * spacing, ...`` and constant beyond the last. Indexing by t rather than by position in the
schedule gives a 13-scale full-size schedule the same gains per band as the 10-scale 256 px one.

The labels stay sign bits, so the transformer, the token KL and the sampler see the same interface;
gains enter through :meth:`scale_codes`, which ``quantize`` and ``add_scale`` both apply.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from varestorer.tokenizer.quantizer import BitwiseQuantizer


def octaves_below(hw: tuple[int, int], grid_hw: tuple[int, int]) -> float:
    """t = 0.5 * log2(grid area / scale area): octaves of a scale below the final grid."""
    return 0.5 * math.log2((grid_hw[0] * grid_hw[1]) / (hw[0] * hw[1]))


class GainedBitwiseQuantizer(BitwiseQuantizer):
    """Bitwise residual quantizer whose code length per scale is a learned ``gain(t)`` (see module doc)."""

    def __init__(
        self,
        token_dim: int,
        *,
        num_knots: int = 17,
        knot_spacing: float = 0.5,
        upsample_mode: Literal["bilinear", "bicubic"] = "bicubic",
        input_interpolation: Literal["bilinear", "area"] = "bilinear",
    ) -> None:
        super().__init__(token_dim, input_interpolation=input_interpolation)
        if num_knots < 1 or knot_spacing <= 0:
            raise ValueError(f"need num_knots >= 1 and knot_spacing > 0, got {num_knots}, {knot_spacing}")
        if upsample_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"upsample_mode must be bilinear or bicubic, got {upsample_mode!r}")
        self.upsample_mode = upsample_mode
        self.knot_spacing = knot_spacing
        self.gains = nn.Parameter(torch.ones(num_knots))
        """Code length (in units of the normalised latent) at t = 0, spacing, 2 * spacing, ..."""

    def gain(self, t: float) -> Tensor:
        """The (differentiable) gain at ``t`` octaves below the final grid."""
        position = min(max(t / self.knot_spacing, 0.0), float(self.gains.numel() - 1))
        low = int(math.floor(position))
        high = min(low + 1, self.gains.numel() - 1)
        frac = position - low
        return self.gains[low] * (1.0 - frac) + self.gains[high] * frac

    def scale_codes(self, codes_Bdhw: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        hw = (codes_Bdhw.shape[-2], codes_Bdhw.shape[-1])
        return codes_Bdhw * (self.gain(octaves_below(hw, grid_hw)) * math.sqrt(self.token_dim)).to(codes_Bdhw.dtype)

    @torch.no_grad()
    def set_gains_from_scales(self, octaves: list[float], values: list[float]) -> None:
        """Knots by linear interpolation of per-scale gains ``values`` measured at ``octaves`` (clamped ends)."""
        if not octaves or len(octaves) != len(values):
            raise ValueError("need one value per octave position")
        order = sorted(range(len(octaves)), key=lambda i: octaves[i])
        xs = torch.tensor([octaves[i] for i in order], dtype=torch.float64)
        ys = torch.tensor([values[i] for i in order], dtype=torch.float64)
        knots = torch.arange(self.gains.numel(), dtype=torch.float64) * self.knot_spacing
        out = torch.empty_like(knots)
        for j, x in enumerate(knots):
            if x <= xs[0]:
                out[j] = ys[0]
            elif x >= xs[-1]:
                out[j] = ys[-1]
            else:
                i = int(torch.searchsorted(xs, x).item())
                w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
                out[j] = ys[i - 1] * (1 - w) + ys[i] * w
        self.gains.copy_(out.to(self.gains.dtype))


__all__ = ["GainedBitwiseQuantizer", "octaves_below"]
