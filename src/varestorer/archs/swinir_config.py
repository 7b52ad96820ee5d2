"""``SwinIRConfig``: the shape of :class:`varestorer.archs.swinir.SwinIR` (no model code, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SwinIRConfig:
    """Shape of a :class:`SwinIR` (defaults: DiffBIR's ``general_swinir_v1``)."""

    embed_dim: int = 180
    depths: tuple[int, ...] = (6,) * 8
    """Blocks per residual group."""
    num_heads: tuple[int, ...] = (6,) * 8
    window_size: int = 8
    mlp_ratio: float = 2.0
    upscale: int = 8
    """Upsampler factor (``sf``); with ``unshuffle`` equal to it the net keeps the image size."""
    unshuffle: int | None = 8
    """Pixel-unshuffle factor before the first conv, or None."""
    upsampler: Literal["nearest+conv"] = "nearest+conv"

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError("depths and num_heads must be non-empty and of equal length")
        if self.upscale not in (2, 4, 8):
            raise ValueError(f"the nearest+conv upsampler supports x2, x4, x8, got {self.upscale}")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ValueError(f"embed_dim {self.embed_dim} must split into {self.num_heads} heads")

    @property
    def scale(self) -> float:
        """Output size / input size."""
        return self.upscale / (self.unshuffle or 1)
