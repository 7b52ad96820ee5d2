"""``MultiScaleTokenizer``: image <-> multi-scale token pyramid (Infinity's BSQ-VAE, docs/sources.md).

    x (B, 3, H, W) in [-1, 1] --encoder--> f (B, d, H/s, W/s) (s = ``stride``) --quantizer--> labels per scale, f_hat
    f_hat --decoder--> x_rec (B, 3, H, W) in [-1, 1]

State-dict names follow Infinity (``encoder.*``, ``decoder.*``; with ``infinity_buffers`` also
``quantizer.lfq.mask`` and its duplicate ``quantize.lfq.mask``), so official weights load strictly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from varestorer.checkpoint import PretrainedMixin
from varestorer.tokenizer.blocks import Decoder, Encoder
from varestorer.tokenizer.codebook import CodebookQuantizer
from varestorer.tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.quantizer import BitwiseQuantizer, MultiScaleQuantizer, MultiScaleTokens
from varestorer.tokenizer.scales import Schedule, schedule_for_grid


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


class MultiScaleTokenizer(PretrainedMixin, nn.Module):
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

    def default_schedule(self, height_px: int, width_px: int) -> Schedule:
        """``schedule_for_grid`` of this image size's latent grid."""
        return schedule_for_grid(height_px // self.stride, width_px // self.stride)

    def _check_image(self, x_B3HW: Tensor) -> None:
        if x_B3HW.ndim != 4 or x_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [-1, 1], got shape {tuple(x_B3HW.shape)}")
        if x_B3HW.shape[2] % self.stride or x_B3HW.shape[3] % self.stride:
            raise ValueError(f"image size {tuple(x_B3HW.shape[2:])} is not a multiple of the stride {self.stride}")

    def encode(self, x_B3HW: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1], H and W multiples of ``stride`` -> raw latent f (B, d, H/s, W/s)."""
        self._check_image(x_B3HW)
        return self.encoder(x_B3HW)

    def tokenize(
        self,
        x_B3HW: Tensor,
        schedule: Schedule | None = None,
        *,
        flip_probability: float = 0.0,
        generator: torch.Generator | None = None,
        **quantize_options: Any,
    ) -> MultiScaleTokens:
        """Encode and quantize. ``schedule`` defaults to :meth:`default_schedule` and must fit the latent grid.

        ``flip_probability``/``generator`` enable self-correction flips; ``quantize_options`` go to the
        quantizer (bitwise: ``flip_scales``, ``random_strength``).
        """
        f_BdHW = self.encode(x_B3HW)
        if schedule is None:
            schedule = schedule_for_grid(f_BdHW.shape[2], f_BdHW.shape[3])
        return self.quantizer.quantize(
            f_BdHW, schedule, flip_probability=flip_probability, generator=generator, **quantize_options
        )

    def decode(self, f_hat_BdHW: Tensor, *, clamp: bool = True) -> Tensor:
        """f_hat (B, d, h, w) -> images (B, 3, h*s, w*s), clamped to [-1, 1] unless ``clamp=False``.

        Training losses should use ``clamp=False`` (clamping stops the gradient of saturated pixels).
        """
        if f_hat_BdHW.ndim != 4 or f_hat_BdHW.shape[1] != self.token_dim:
            raise ValueError(f"expected a (B, {self.token_dim}, h, w) latent, got {tuple(f_hat_BdHW.shape)}")
        x_B3HW = self.decoder(f_hat_BdHW)
        return x_B3HW.clamp(-1, 1) if clamp else x_B3HW

    def forward(self, x_B3HW: Tensor, schedule: Schedule | None = None) -> tuple[Tensor, MultiScaleTokens]:
        """Reconstruction (unclamped, for losses) and the tokens: x -> tokenize -> decode."""
        tokens = self.tokenize(x_B3HW, schedule)
        return self.decode(tokens.f_hat, clamp=False), tokens

    def labels_to_f_hat(self, labels: list[Tensor], schedule: Schedule) -> Tensor:
        """Per-scale labels (all scales of ``schedule``) -> f_hat on the grid ``schedule[-1]``."""
        return self.quantizer.labels_to_f_hat(labels, schedule, schedule[-1])

    def labels_to_image(self, labels: list[Tensor], schedule: Schedule) -> Tensor:
        """Per-scale labels -> images (B, 3, stride*h_K, stride*w_K) in [-1, 1]."""
        return self.decode(self.labels_to_f_hat(labels, schedule))


__all__ = ["TOKENIZER_PRESETS", "MultiScaleTokenizer", "TokenizerConfig", "build_quantizer"]
