"""``MultiScaleTokenizer``: image <-> multi-scale token pyramid (Infinity's BSQ-VAE, docs/sources.md).

    x (B, 3, H, W) in [-1, 1] --encoder--> f (B, d, H/s, W/s) (s = ``stride``) --quantizer--> labels per scale, f_hat
    f_hat --decoder--> x_rec (B, 3, H, W) in [-1, 1]

State-dict names follow Infinity (``encoder.*``, ``decoder.*``; with ``infinity_buffers`` also
``quantizer.lfq.mask`` and its duplicate ``quantize.lfq.mask``), so official weights load strictly.
"""

from __future__ import annotations

from varestorer.checkpoint import PretrainedMixin
from varestorer.tokenizer.base import MultiScaleTokenizerBase
from varestorer.tokenizer.blocks import Decoder, Encoder
from varestorer.tokenizer.codebook import CodebookQuantizer
from varestorer.tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.quantizer import BitwiseQuantizer, MultiScaleQuantizer


def build_quantizer(config: TokenizerConfig) -> MultiScaleQuantizer:
    """The quantizer named by ``config.quantizer`` (one literal table)."""
    builders = {
        "bitwise": lambda: BitwiseQuantizer(
            config.token_dim,
            input_interpolation=config.input_interpolation,
            infinity_buffers=config.infinity_buffers,
        ),
        "codebook": lambda: CodebookQuantizer(config.token_dim, config.codebook_size, config.num_phi),
    }
    if config.quantizer not in builders:
        raise ValueError(f"unknown quantizer {config.quantizer!r}; choose from {', '.join(builders)}")
    return builders[config.quantizer]()


class MultiScaleTokenizer(PretrainedMixin, MultiScaleTokenizerBase):
    """Conv autoencoder + multi-scale residual quantizer.

    ``encode`` / ``decode`` are the continuous halves; ``tokenize`` adds the quantizer. The decoder path
    only sees f_hat, so it does not care which quantizer produced it.
    """

    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TokenizerConfig()
        args = (config.base_channels, config.channel_multipliers, config.num_res_blocks)
        self.encoder = Encoder(*args, out_dim=config.token_dim)
        self.decoder = Decoder(*args, in_dim=config.token_dim)
        self.quantizer = build_quantizer(config)
        if config.infinity_buffers:
            # Infinity registers its quantizer twice; the duplicate name appears in its state dict.
            self.quantize = self.quantizer

    @classmethod
    def from_preset(cls, name: str) -> MultiScaleTokenizer:
        """A randomly initialised tokenizer of preset ``name`` (see ``TOKENIZER_PRESETS``)."""
        return cls(tokenizer_preset(name))

    @property
    def stride(self) -> int:
        """Pixels per token along each side (16 for every preset)."""
        return self.config.stride

    @property
    def token_dim(self) -> int:
        return self.config.token_dim


__all__ = ["TOKENIZER_PRESETS", "MultiScaleTokenizer", "TokenizerConfig", "build_quantizer"]
