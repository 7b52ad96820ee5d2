"""An encoder fed the LQ image at its own resolution: a light stem plus the tail of the TAEF2 encoder.

Beyond the paper (opt-in, ``StudentConfig.lq_encoder``). The paper tokenizes a pre-cleaned LQ image that
has been brought to the output size, so the encoder runs at the HQ resolution although the upsample
adds no information: in default model v2 (x4v3 at x4 -> TAEF2 encoder at 256 px) that is 430 of 930 CPU
ms per tile (docs/default_model_v2_design.md). This encoder reads the 64 px LQ directly::

    lq (B, 3, h, w) in [0, 1]
      -> stem: 3x3 conv 3->F, PReLU, ``stem_convs`` x (3x3 conv F->F, PReLU), 3x3 conv F->C   at h x w
         (the layout of SRVGGNetCompact's body, so realesr-general-x4v3's first convs can initialise it)
      -> the TAEF2 encoder's own layers from index ``tail_from`` on (a copy, trained with the student)
      -> the tokenizer's latent normalisation -> f (B, d, h * s / 8, w * s / 8), s the SR scale

``tail_from`` must be a layer of the TAEF2 encoder that sees the image at stride ``scale`` (index 7, 8,
9 or 10 for x4): the stem stands in for the layers before it, fed pixels that are ``scale`` times coarser.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from varestorer.tokenizer.taef2 import LatentNormalised, TAEF2Encoder, mix_channels


@dataclass(frozen=True)
class LQEncoderConfig:
    features: int = 64
    """Width F of the stem (64: realesr-general-x4v3's)."""
    stem_convs: int = 6
    """Hidden F->F convs of the stem after its first conv (each followed by a PReLU)."""
    tail_from: int = 10
    """Index of the first TAEF2 encoder layer kept: 10 enters at the last stride-2 conv (the 64 px Blocks
    7-9 are left to the stem), 7 keeps them."""

    def __post_init__(self) -> None:
        if self.features < 1 or self.stem_convs < 0:
            raise ValueError(f"LQEncoderConfig needs features >= 1 and stem_convs >= 0, got {self}")


def layer_strides(net: nn.Sequential) -> list[int]:
    """The input stride (relative to the image) of every layer of a conv stack, from its stride-2 convs."""
    strides, stride = [], 1
    for layer in net:
        strides.append(stride)
        if isinstance(layer, nn.Conv2d):
            stride *= layer.stride[0]
    return strides


class LQEncoder(LatentNormalised):
    """LQ (B, 3, h, w) in [-1, 1] -> the tokenizer's normalised latent; same contract as ``TAEF2Encoder``
    (which reads the image at the working size), so it slots in as ``Student.encoder``. ``net`` is the tail."""

    def __init__(self, config: LQEncoderConfig, encoder: TAEF2Encoder, *, scale: int) -> None:
        """Build the stem (random) and the tail with ``encoder``'s shapes (call :meth:`init_from` for its weights).

        Raises:
            ValueError: ``encoder`` is no TAEF2 encoder, or layer ``tail_from`` does not see stride ``scale``.
        """
        if not isinstance(encoder, TAEF2Encoder):
            raise ValueError(f"an LQ encoder needs a TAEF2 tokenizer's encoder, got a {type(encoder).__name__}")
        strides = layer_strides(encoder.net)
        if not 0 < config.tail_from < len(encoder.net) or strides[config.tail_from] != scale:
            valid = [i for i, s in enumerate(strides) if s == scale and i > 0]
            raise ValueError(f"lq_encoder.tail_from must be a TAEF2 encoder layer at stride {scale}: one of {valid}")
        tail = encoder.net[config.tail_from :]
        super().__init__(copy.deepcopy(tail), encoder.latent_shift.numel())
        channels = next(m for m in tail if isinstance(m, nn.Conv2d)).in_channels
        self.config = config
        width = config.features
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.PReLU(width)]
        for _ in range(config.stem_convs):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.PReLU(width)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.stem = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def init_from(self, encoder: TAEF2Encoder) -> None:
        """Copy the tail's weights and the latent normalisation from ``encoder`` (the teacher tokenizer's)."""
        self.net.load_state_dict(encoder.net[self.config.tail_from :].state_dict())
        for name in ("latent_shift", "latent_whiten", "latent_unwhiten"):
            getattr(self, name).copy_(getattr(encoder, name))

    def init_stem_from_srvgg(self, body: nn.ModuleList) -> int:
        """Copy the first ``1 + stem_convs`` convs and PReLUs of an SRVGGNetCompact ``body`` into the stem
        (the last stem conv stays random: it maps into the TAEF2 features). Returns the tensors copied.

        Raises:
            ValueError: the body is narrower, shallower or of another width than the stem.
        """
        count = 2 * (self.config.stem_convs + 1)
        if len(body) < count + 1:
            raise ValueError(f"an SRVGGNetCompact of {len(body)} layers cannot fill a stem of {count} layers")
        copied = 0
        for index in range(count):
            source, target = body[index].state_dict(), self.stem[index].state_dict()
            if {k: v.shape for k, v in source.items()} != {k: v.shape for k, v in target.items()}:
                raise ValueError(
                    f"SRVGGNetCompact layer {index} does not have the stem's shape (features {self.config.features})"
                )
            self.stem[index].load_state_dict(source)
            copied += len(source)
        return copied

    def forward(self, lq_B3hw: Tensor) -> Tensor:
        z = self.net(self.stem(((lq_B3hw + 1) * 0.5).contiguous(memory_format=torch.channels_last)))
        return mix_channels(z - self._shift(z), self.latent_whiten).contiguous()


__all__ = ["LQEncoder", "LQEncoderConfig", "layer_strides"]
