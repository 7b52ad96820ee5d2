"""``TokenizerConfig`` and the named tokenizer presets (one literal dict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from varestorer.config import lookup


@dataclass(frozen=True)
class TokenizerConfig:
    """Shape of a :class:`~varestorer.tokenizer.autoencoder.MultiScaleTokenizer` (FLUX-style AE + BSQ)."""

    token_dim: int = 32
    """d: channels of the latent f, bits per token."""
    base_channels: int = 128
    """Channels of the full-resolution level (Infinity: 128)."""
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4, 4)
    """Per-level channel multipliers; the stride is 2 ** (levels - 1)."""
    num_res_blocks: int = 2
    """Res blocks per encoder level (the decoder has one more per level)."""
    quantizer: Literal["bitwise", "codebook"] = "bitwise"
    """Which multi-scale quantizer: ``bitwise`` (Infinity's BSQ) or ``codebook`` (VAR's VQ with phi convs)."""
    codebook_size: int = 4096
    """V, codes of the ``codebook`` quantizer (VAR: 4096); unused by ``bitwise``."""
    num_phi: int = 4
    """Partially shared phi convs of the ``codebook`` quantizer (VAR: 4); unused by ``bitwise``."""
    input_interpolation: Literal["bilinear", "area"] = "bilinear"
    """How accumulated f_hat is resized to the next scale for teacher forcing. Infinity's training
    (bitwise self-correction) and inference use trilinear = bilinear for one frame; its VAE's own
    ``var_inputs`` and NSARM use area."""
    infinity_buffers: bool = False
    """Register Infinity's quantizer buffers (``quantizer.lfq.mask`` and its duplicate
    ``quantize.lfq.mask``) so official checkpoints load strictly."""

    def __post_init__(self) -> None:
        if self.token_dim < 1 or self.base_channels < 1 or self.num_res_blocks < 1:
            raise ValueError("token_dim, base_channels and num_res_blocks must be positive")
        if not self.channel_multipliers or any(m < 1 for m in self.channel_multipliers):
            raise ValueError(f"channel_multipliers must be positive, got {self.channel_multipliers}")

    @property
    def stride(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.channel_multipliers) - 1)


def _infinity(bits: int) -> TokenizerConfig:
    return TokenizerConfig(
        token_dim=bits,
        base_channels=128,
        channel_multipliers=(1, 2, 4, 4, 4),
        num_res_blocks=2,
        infinity_buffers=True,
    )


TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
    # Unit tests: stride 16 like Infinity's (the embedded default is stride 8), ~40k parameters, milliseconds at 64x64.
    "tiny": TokenizerConfig(token_dim=8, base_channels=8, channel_multipliers=(1, 2, 2, 2, 2), num_res_blocks=1),
    # The embedded default, sized for CPU: encode + 10-scale quantize + decode of one 512x512 image costs
    # ~1.5 CPU-seconds with 2 torch threads (~0.75 s wall on an idle 2-core box; 9.6 GMAC, 1.0M params).
    # Full-resolution levels dominate, so they stay at 16 channels; d = 32 bits like Infinity-2B's
    # tokenizer (more bits = better fidelity; the extra cost is only the latent convs).
    "small": TokenizerConfig(token_dim=32, base_channels=16, channel_multipliers=(1, 1, 2, 4, 4), num_res_blocks=1),
    # Infinity's released tokenizers (Infinity `bsq_vae/vae.py`, docs/sources.md); -d32 is Infinity-2B's.
    "infinity-d16": _infinity(16),
    "infinity-d24": _infinity(24),
    "infinity-d32": _infinity(32),
    "infinity-d64": _infinity(64),
}
"""Named tokenizer shapes."""


def tokenizer_preset(name: str) -> TokenizerConfig:
    """The preset ``name`` (one-line ``ValueError`` listing the names when unknown)."""
    return lookup(TOKENIZER_PRESETS, name, "tokenizer preset")
