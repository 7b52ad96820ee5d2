"""``MultiScaleTokenizerBase``: what every tokenizer family offers, written once.

A tokenizer is an autoencoder (``encoder``: images -> latent f, ``decoder``: f_hat -> images) around a
:class:`~varestorer.tokenizer.quantizer.MultiScaleQuantizer`. The transformer, the token KL, the
students, ``varestorer reconstruct`` and ``bench --tokenizer`` use only this interface, so a family
(``autoencoder.MultiScaleTokenizer``, ``taef2.TAEF2Tokenizer``) defines its modules, ``stride`` and
``token_dim`` and inherits the rest.

    x (B, 3, H, W) in [-1, 1] --encode--> f (B, d, H/s, W/s) --quantizer--> labels per scale, f_hat
    f_hat --decode--> x_rec (B, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor, nn

from varestorer.tokenizer.quantizer import MultiScaleQuantizer, MultiScaleTokens
from varestorer.tokenizer.scales import Schedule, schedule_for_grid


class MultiScaleTokenizerBase(nn.Module, abc.ABC):
    """The tokenizer interface over ``self.encoder``, ``self.decoder`` and ``self.quantizer`` (abstract: a family
    defines ``stride`` and ``token_dim``)."""

    encoder: nn.Module
    decoder: nn.Module
    quantizer: MultiScaleQuantizer

    @property
    @abc.abstractmethod
    def stride(self) -> int:
        """Pixels per token along each side."""

    @property
    @abc.abstractmethod
    def token_dim(self) -> int:
        """d: channels of the latent, bits per token for a bitwise quantizer."""

    def default_schedule(self, height_px: int, width_px: int) -> Schedule:
        """``schedule_for_grid`` of this image size's latent grid."""
        return schedule_for_grid(height_px // self.stride, width_px // self.stride)

    def _check_image(self, x_B3HW: Tensor) -> None:
        if x_B3HW.ndim != 4 or x_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [-1, 1], got shape {tuple(x_B3HW.shape)}")
        if x_B3HW.shape[2] % self.stride or x_B3HW.shape[3] % self.stride:
            raise ValueError(f"image size {tuple(x_B3HW.shape[2:])} is not a multiple of the stride {self.stride}")

    def encode(self, x_B3HW: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1], H and W multiples of ``stride`` -> latent f (B, d, H/s, W/s)."""
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


__all__ = ["MultiScaleTokenizerBase"]
