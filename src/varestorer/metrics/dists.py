"""DISTS (Ding et al. 2020): structure and texture similarity of VGG16 features with L2 pooling.

``DISTS()(x, y)`` with (B, 3, H, W) in [0, 1] returns (B,) distances in [0, 1], lower is better.
No resizing (pyiqa's convention; the DISTS_pytorch demo resizes to 256 and gives other numbers).
Features are [raw input, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] (3+64+128+256+512+512 = 1475
channels); per channel, texture term on global means and structure term on global (co)variances,
weighted by the learned alpha/beta (asset ``dists-weights``) normalised to sum to 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.metrics.backbones import load_asset_tensors, vgg16_features
from varestorer.metrics.lpips import check_image_pair

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class L2Pool(nn.Module):
    """sqrt(blur(x^2)) with a 3x3 Hann window (np.hanning(5)[1:-1] outer product), stride 2, padding 1."""

    window: torch.Tensor  # buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])
        window = a[:, None] * a[None, :]
        self.register_buffer("window", (window / window.sum()).expand(channels, 1, 3, 3).clone(), persistent=False)
        self.channels = channels

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x_BCHW.pow(2), self.window, stride=2, padding=1, groups=self.channels)
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """Deep Image Structure and Texture Similarity; frozen, differentiable w.r.t. inputs in [0, 1]."""

    mean: torch.Tensor  # buffer
    std: torch.Tensor  # buffer

    def __init__(self, *, pretrained: bool = True) -> None:
        super().__init__()
        self.features = vgg16_features(pool=L2Pool)
        self.channels = (3, *self.features.channels)
        self.alpha = nn.Parameter(torch.full((1, sum(self.channels), 1, 1), 0.1))
        self.beta = nn.Parameter(torch.full((1, sum(self.channels), 1, 1), 0.1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.features.load_converted(load_asset_tensors("vgg16-imagenet"))
            weights = load_asset_tensors("dists-weights")
            self.alpha.data.copy_(weights["alpha"])
            self.beta.data.copy_(weights["beta"])
        self.requires_grad_(False)
        self.eval()

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
        """(B,) DISTS distance between two image batches of equal shape, inputs in [0, 1]."""
        check_image_pair(x_B3HW, y_B3HW, name="DISTS")
        fx = [x_B3HW, *self.features((x_B3HW - self.mean) / self.std)]
        fy = [y_B3HW, *self.features((y_B3HW - self.mean) / self.std)]
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, list(self.channels), dim=1)
        betas = torch.split(self.beta / total, list(self.channels), dim=1)
        similarity_B = x_B3HW.new_zeros(x_B3HW.shape[0])
        for a, b, alpha, beta in zip(fx, fy, alphas, betas):
            mean_a, mean_b = a.mean(dim=(2, 3), keepdim=True), b.mean(dim=(2, 3), keepdim=True)
            texture = (2 * mean_a * mean_b + eps) / (mean_a.pow(2) + mean_b.pow(2) + eps)
            var_a = (a - mean_a).pow(2).mean(dim=(2, 3), keepdim=True)
            var_b = (b - mean_b).pow(2).mean(dim=(2, 3), keepdim=True)
            cov = (a * b).mean(dim=(2, 3), keepdim=True) - mean_a * mean_b
            structure = (2 * cov + eps) / (var_a + var_b + eps)
            similarity_B = similarity_B + (alpha * texture + beta * structure).sum(dim=(1, 2, 3))
        return 1 - similarity_B
