"""``TransformerConfig``, ``TextEncoderConfig`` and the named transformer presets.

Imports only :mod:`varestorer.config`, so a checkpoint's config can be read without model code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from varestorer.config import lookup


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and behaviour of a :class:`~varestorer.transformer.model.NextScaleTransformer`."""

    token_dim: int = 32
    """d: bits per token (channels of the tokenizer latent and of the teacher-forcing inputs)."""
    codebook_size: int | None = None
    """``None``: bitwise tokens, two logits per bit (Infinity). V: one index of a V-entry codebook per
    token (VAR-style quantizer; the inputs stay d-dimensional codes)."""
    width: int = 2048
    """C: embedding width of the blocks."""
    depth: int = 32
    """Number of blocks."""
    num_heads: int = 16
    """Self- and cross-attention heads; ``width / num_heads`` is the head width (must be divisible by 4)."""
    mlp_ratio: float = 4.0
    """FFN hidden width is ``round(width * mlp_ratio / 256) * 256`` (Infinity's rounding)."""
    text_dim: int = 2048
    """Width of the text-encoder features (flan-t5-xl: 2048)."""
    text_max_length: int = 512
    """Rows of the learned unconditional text tokens ``cfg_uncond`` (longest caption in tokens)."""
    null_text_length: int = 16
    """How many ``cfg_uncond`` rows stand for "no text" when no caption is given at all."""
    pool_head_dim: int = 128
    """The attentive pooling that turns text into the start token has ``text_dim / pool_head_dim`` heads
    splitting the width C (Infinity: 128 for C <= 4096, else 64)."""
    num_levels: int = 15
    """Rows of the level (scale index) embedding; schedules may have at most this many scales."""
    block_chunks: int = 1
    """Blocks are stored as ``block_chunks.{c}.module.{j}`` when > 1 (Infinity-2B: 8), else ``blocks.{i}``."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    rope_extent: Literal["infinity", "last"] = "infinity"
    """Common position grid of all scales: the 1M-pixel template grid of the nearest aspect ratio
    (Infinity's ``rope2d_normalized_by_hw=2``), or the schedule's own last grid."""
    norm_eps: float = 1e-6
    """Epsilon of every LayerNorm / RMSNorm."""
    drop_path: float = 0.0
    """Stochastic-depth rate of the last block (linearly increasing from 0); training only."""
    cond_drop_rate: float = 0.1
    """Probability of replacing a caption by the unconditional tokens in training (for CFG)."""

    def __post_init__(self) -> None:
        if self.width % self.num_heads or (self.width // self.num_heads) % 4:
            raise ValueError(f"width {self.width} must split into {self.num_heads} heads of a width divisible by 4")
        if self.text_dim % self.pool_head_dim:
            raise ValueError(f"text_dim {self.text_dim} must be a multiple of pool_head_dim {self.pool_head_dim}")
        if self.width % (self.text_dim // self.pool_head_dim):
            raise ValueError(f"width {self.width} must split into text_dim / pool_head_dim pooling heads")
        if self.depth % self.block_chunks:
            raise ValueError(f"depth {self.depth} must be a multiple of block_chunks {self.block_chunks}")
        if self.codebook_size is not None and self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 or None, got {self.codebook_size}")
        if not 1 <= self.null_text_length <= self.text_max_length:
            raise ValueError("null_text_length must be in [1, text_max_length]")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def num_outputs(self) -> int:
        """Head width: 2 d logits (bitwise) or V (codebook)."""
        return 2 * self.token_dim if self.codebook_size is None else self.codebook_size

    @property
    def ffn_dim(self) -> int:
        return round(self.width * self.mlp_ratio / 256) * 256


@dataclass(frozen=True)
class TextEncoderConfig:
    """Which text encoder produces the cross-attention tokens."""

    kind: Literal["none", "transformers"] = "none"
    """``none``: no encoder, only the learned unconditional tokens; ``transformers``: an encoder
    (e.g. flan-t5-xl, a ``T5EncoderModel``) and its tokenizer read from :attr:`path`."""
    path: str | None = None
    """Local folder of the ``transformers`` model and tokenizer."""
    max_length: int = 512
    """Captions are truncated to this many tokens."""


# One literal table of named sizes. ``tiny`` is for tests; ``small`` is the CPU default.
TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(
        token_dim=8,
        width=64,
        depth=2,
        num_heads=4,
        text_dim=32,
        text_max_length=8,
        null_text_length=4,
        pool_head_dim=16,
        block_chunks=1,
    ),
    # The embedded default: 7.4M parameters, so the shipped fp16 weights stay under 16 MB per file.
    "small": TransformerConfig(
        token_dim=32,  # the small tokenizer's bits per token
        width=256,
        depth=7,
        num_heads=4,
        mlp_ratio=3.0,
        text_dim=256,
        text_max_length=64,
        null_text_length=8,
        pool_head_dim=64,
        block_chunks=1,
    ),
    "infinity-125m": TransformerConfig(
        token_dim=32,
        width=768,
        depth=12,
        num_heads=8,
        text_dim=2048,
        text_max_length=512,
        block_chunks=4,
    ),
    "infinity-2b": TransformerConfig(
        token_dim=32,
        width=2048,
        depth=32,
        num_heads=16,
        text_dim=2048,
        text_max_length=512,
        block_chunks=8,
    ),
    # Infinity-8B's transformer shapes: 40 blocks of 3584, 28 heads; its tokenizer is the d14 one with a
    # 2x2 spatial patchify, so 4 * 14 = 56 inputs per token (our tokenizers do not patchify: shapes only).
    "infinity-8b": TransformerConfig(
        token_dim=56,
        width=3584,
        depth=40,
        num_heads=28,
        text_dim=2048,
        text_max_length=512,
        block_chunks=8,
    ),
}


def transformer_preset(name: str, **overrides: object) -> TransformerConfig:
    """A preset by name, with optional field overrides."""
    return dataclasses.replace(lookup(TRANSFORMER_PRESETS, name, "transformer preset"), **overrides)  # type: ignore[arg-type]
