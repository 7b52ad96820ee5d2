"""``varestorer train precleaner``: train the light same-size pre-cleaner on synthetic LQ images.

Recipe sections (see ``recipes/precleaner_small.toml``)::

    [train]  TrainConfig
    [model]  preset (a peer preset name, default ``precleaner-1x``) or init_from (peer weights by
             path: folder, .pth/.safetensors or ncnn, e.g. realesr-general-x4v3 to fine-tune)
    [data]   HQ training folders, crop size, degradation preset, validation folder
    [loss]   L1 / MSE weights

Per step: HQ crop ``gt`` -> degradation pipeline -> ``lq`` at 1/s -> pre-cleaner -> same-size
output, compared with the clean target: ``gt`` downscaled to the LQ size (antialiased bicubic).
So the pre-cleaner learns to remove blur, noise and JPEG artefacts without changing the size,
which is what ``Restorer(precleaner=...)`` feeds to the one-step model. Validation: PSNR (RGB,
[0, 1]) of the cleaned LQ and, for reference, of the raw LQ against the target. The exported
``<output_dir>/model`` loads with ``varestorer restore --precleaner PATH``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.config import config_to_dict
from varestorer.data.datasets import HQFolderDataset
from varestorer.data.pairs import DegradedPairDataset
from varestorer.foreign.peers import build_peer, load_peer
from varestorer.models.precleaner import PreCleaner
from varestorer.training.config import PhotoFolderConfig, TrainConfig, load_recipe
from varestorer.training.losses import batch_psnr
from varestorer.training.trainer import Trainer, seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "precleaner-1x"
    """A peer preset name (``varestorer.foreign.peers.peer_presets``), randomly initialised."""
    init_from: str | None = None
    """Peer weights to fine-tune instead (folder, .pth/.safetensors, ncnn .param)."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    crop_size: int = 256
    """HQ crop side in px (a multiple of the degradation scale; the LQ is crop_size / scale)."""
    degradation: str = "realesrgan"
    """Degradation preset name or recipe path (``varestorer.degradation``)."""
    val_dir: str | None = None
    """Folder of validation HQ images (centre crops, fixed degradation seeds); None skips it."""
    val_crop_size: int = 256
    max_val_images: int = 16


@dataclass(frozen=True)
class LossConfig:
    l1_weight: float = 1.0
    mse_weight: float = 0.0


SECTIONS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig, "loss": LossConfig}


def clean_target(gt_B3HW: torch.Tensor, lq_B3hw: torch.Tensor) -> torch.Tensor:
    """The clean image at the LQ size: ``gt`` downscaled with antialiased bicubic, in [0, 1]."""
    target = F.interpolate(gt_B3HW, size=lq_B3hw.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    return target.clamp(0, 1)


class PreCleanerTraining(nn.Module):
    """``forward({"lq", "gt"}, step) -> (loss, logs)`` for a :class:`PreCleaner`."""

    def __init__(self, precleaner: PreCleaner, loss: LossConfig) -> None:
        super().__init__()
        self.precleaner = precleaner
        self.loss_config = loss

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lq, target = batch["lq"], clean_target(batch["gt"], batch["lq"])
        # Unclamped output for the loss, so gradients flow at the range ends too.
        out = self.precleaner.net(lq)
        if out.shape[-2:] != lq.shape[-2:]:
            out = F.interpolate(out, size=lq.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        l1 = (out - target).abs().mean()
        mse = (out - target).pow(2).mean()
        loss = self.loss_config.l1_weight * l1 + self.loss_config.mse_weight * mse
        return loss, {"l1": l1.detach(), "mse": mse.detach()}


@torch.no_grad()
def evaluate(precleaner: PreCleaner, dataset: DegradedPairDataset, limit: int) -> dict[str, float]:
    """Mean PSNR of the cleaned LQ and of the raw LQ against the clean target."""
    device = next(precleaner.parameters()).device
    cleaned, raw = [], []
    for index in range(min(limit, len(dataset))):
        item = dataset[index]
        lq, gt = item["lq"][None].to(device), item["gt"][None].to(device)
        target = clean_target(gt, lq)
        cleaned.append(batch_psnr(precleaner(lq), target))
        raw.append(batch_psnr(lq, target))
    return {"psnr": float(torch.cat(cleaned).mean()), "psnr_lq": float(torch.cat(raw).mean())}


def main(recipe: str | Path, *, resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the job described by ``recipe``; returns a process exit code."""
    configs = load_recipe(recipe, SECTIONS, overrides)
    train: TrainConfig = configs["train"]
    data: DataConfig = configs["data"]
    model_config: ModelConfig = configs["model"]
    if not data.train_dirs:
        raise ValueError(f"{recipe}: [data] train_dirs is empty")
    seed_everything(train.seed)
    net = load_peer(model_config.init_from) if model_config.init_from else build_peer(model_config.preset)
    module = PreCleanerTraining(PreCleaner(net), configs["loss"])
    hq = data.train_set(data.crop_size, seed=train.seed)
    dataset = DegradedPairDataset(hq, data.degradation, seed=train.seed)

    validate = None
    if data.val_dir is not None:
        val_hq = HQFolderDataset(data.val_dir, crop_size=data.val_crop_size, random_crop=False, hflip=False)
        val_set = DegradedPairDataset(val_hq, data.degradation, seed=1234)

        def validate(module: Any) -> dict[str, Any]:  # the job's module
            return evaluate(module.precleaner, val_set, data.max_val_images)

    def export(module: Any, directory: Path) -> None:
        module.precleaner.net.save_pretrained(directory)

    recipe_dict = {name: config_to_dict(value) for name, value in configs.items()}
    trainer = Trainer(train, module, resume=resume, validate=validate, export=export, recipe=recipe_dict)
    if trainer.is_main:
        logger.info(
            "training pre-cleaner %s (%.3fM parameters, x%d net) on %d images, device %s",
            model_config.init_from or model_config.preset,
            sum(p.numel() for p in net.parameters()) / 1e6,
            getattr(net, "scale", 1),
            len(hq.paths),  # images, not items: data.repeat multiplies those
            trainer.device,
        )
    trainer.fit(dataset)
    return 0
