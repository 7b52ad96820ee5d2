"""``varestorer train tokenizer``: train a tokenizer (MultiScaleTokenizer or TAEF2Tokenizer) on image folders.

Recipe sections (see ``recipes/tokenizer_small.toml``, ``recipes/tokenizer_taef2.toml``)::

    [train]  TrainConfig (optimiser, schedule, precision, checkpoints, logging)
    [model]  preset, changes to the preset's config, optional init_from checkpoint; for a TAEF2 preset,
             pretrained_dir (the released .pth files) and the calibration of latent statistics and gains;
             init_from + changes derives a variant (e.g. lite TAEF2); distill_from; trainable parts
    [data]   training folders, crop size, validation folder
    [loss]   L1 / MSE / LPIPS-VGG / DISTS weights, optional PatchGAN (hinge) discriminator

Per step: HQ crops in [0, 1] -> x in [-1, 1] -> encode -> multi-scale bitwise quantisation
(straight-through) -> decode -> loss = w_l1 |x_rec - x| + w_mse (x_rec - x)^2 [+ w_lpips LPIPS]
[+ w_dists DISTS] [+ w_distill (f - f_teacher)^2] [+ w_gan hinge generator term after ``gan_start_step``; the
discriminator is trained by its hinge loss in the same backward pass through detached copies, see ``discriminator.py``].
Validation: PSNR (RGB, [0, 1], whole centre crop) of the clamped reconstruction on the validation
folder. Each checkpoint holds ``model/``, loadable with ``tokenizer.loading.load_tokenizer``;
the last one is also exported to ``<output_dir>/model``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from varestorer.config import config_from_dict, config_to_dict
from varestorer.data.datasets import HQFolderDataset
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import TokenizerConfig, tokenizer_preset
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.tokenizer.scales import schedule_for_grid
from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Config, TAEF2Tokenizer, derive_taef2, load_taef2
from varestorer.training.config import PhotoFolderConfig, TrainConfig, load_recipe
from varestorer.training.discriminator import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from varestorer.training.losses import batch_psnr
from varestorer.training.trainer import Trainer, seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "small"
    """A TOKENIZER_PRESETS or TAEF2_PRESETS name to start from."""
    changes: dict[str, Any] = field(default_factory=dict)
    """Config fields that replace the preset's (e.g. ``{token_dim = 24}``)."""
    init_from: str | None = None
    """A tokenizer folder (any family) to fine-tune instead of a random initialisation."""
    pretrained_dir: str | None = None
    """TAEF2 presets: folder of ``taef2_encoder.pth`` / ``taef2_decoder.pth`` (sha256 checked) to start from."""
    calibration_images: int = 32
    """TAEF2 from ``pretrained_dir``: random training crops that fit the latent transform and the gains."""
    calibration_crop_size: int = 256
    """Side of those crops (256 px: a 32x32 grid, the 10-scale schedule)."""
    verify_sha256: bool = True
    """TAEF2: refuse ``pretrained_dir`` files whose sha256 is not the released one (False for re-saved files)."""
    distill_from: str | None = None
    """A tokenizer folder whose encoder the trained one learns to reproduce: ``loss.distill_weight`` times
    the MSE between the two normalised latents f (a student sharing its token space, e.g. a lite TAEF2)."""
    trainable: tuple[str, ...] = ("encoder", "decoder", "quantizer")
    """Parts that learn; the others are frozen. ``("decoder",)`` keeps the tokens of the start exactly."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    crop_size: int = 256
    """Side of the random training crops in px (a multiple of the tokenizer stride)."""
    hflip: bool = True
    """Random horizontal flips."""
    val_dir: str | None = None
    """Folder of validation images (centre crops); None skips validation."""
    val_crop_size: int = 256
    """Side of the validation centre crops in px (smaller images are reflect-padded)."""
    max_val_images: int = 32
    """Validate on at most this many images (sorted by path)."""


@dataclass(frozen=True)
class LossConfig:
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    commitment_weight: float = 0.25
    """Weight of mean((f - sg(f_hat))^2), which keeps the encoder's features near their codes (VAR's beta)."""
    perceptual_weight: float = 0.0
    """LPIPS-VGG weight; > 0 needs ``varestorer.metrics.lpips`` and its cached VGG/LPIPS weights."""
    dists_weight: float = 0.0
    """DISTS weight (structure + texture statistics); > 0 needs its cached VGG/DISTS weights."""
    distill_weight: float = 0.0
    """Weight of mean((f - f_teacher)^2) with ``model.distill_from``'s encoder as the teacher."""
    gan_weight: float = 0.0
    """Hinge generator-term weight; > 0 adds a PatchGAN discriminator (trained from step 0)."""
    gan_start_step: int = 0
    """Step from which the generator term is applied (the discriminator learns before it)."""
    discriminator_channels: int = 64
    discriminator_layers: int = 3


SECTIONS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig, "loss": LossConfig}


Tokenizer = MultiScaleTokenizer | TAEF2Tokenizer


def build_tokenizer(config: ModelConfig, calibration: torch.Tensor | None = None) -> Tokenizer:
    """The tokenizer of ``config``: preset (+ changes) randomly initialised, or loaded from ``init_from``.

    A TAEF2 preset with ``pretrained_dir`` loads the released weights and, given ``calibration``
    images (B, 3, S, S) in [-1, 1], sets its latent statistics and gains from them.
    """
    if config.init_from is not None:
        start = load_tokenizer(config.init_from).float()  # a shipped fp16 folder trains in fp32
        if not config.changes:
            return start
        if not isinstance(start, TAEF2Tokenizer):
            raise ValueError("model.changes with model.init_from needs a TAEF2 tokenizer folder")
        changed = config_from_dict(
            TAEF2Config, config_to_dict(start.config) | dict(config.changes), where="model.changes"
        )
        derived, dropped = derive_taef2(start, changed)
        logger.info("started from %s; left out %d tensors: %s", config.init_from, len(dropped), ", ".join(dropped))
        return derived
    if config.preset in TAEF2_PRESETS:
        base = config_to_dict(TAEF2_PRESETS[config.preset])
        taef2 = config_from_dict(TAEF2Config, base | dict(config.changes), where="model.changes")
        if config.pretrained_dir is None:
            return TAEF2Tokenizer(taef2)
        tokenizer = load_taef2(config.pretrained_dir, taef2, check_sha256=config.verify_sha256)
        if calibration is not None:
            tokenizer.calibrate(calibration)  # the preset's latent_transform (changes may replace it)
        return tokenizer
    if config.pretrained_dir is not None:
        raise ValueError(
            f"model.pretrained_dir needs a TAEF2 preset ({', '.join(TAEF2_PRESETS)}), not {config.preset!r}"
        )
    base = config_to_dict(tokenizer_preset(config.preset))
    return MultiScaleTokenizer(config_from_dict(TokenizerConfig, base | dict(config.changes), where="model.changes"))


def set_trainable(tokenizer: Tokenizer, parts: tuple[str, ...] | list[str]) -> None:
    """Let only ``parts`` (of encoder, decoder, quantizer) learn; one clear error for anything else."""
    names = ("encoder", "decoder", "quantizer")
    if not parts or set(parts) - set(names):
        raise ValueError(f"model.trainable takes encoder, decoder, quantizer (at least one), got {list(parts)}")
    for part in names:
        getattr(tokenizer, part).requires_grad_(part in parts)


def _perceptual_loss() -> nn.Module:
    try:
        from varestorer.metrics.lpips import LPIPS
    except ImportError:
        raise ValueError(
            "loss.perceptual_weight > 0 needs varestorer.metrics.lpips, absent from this install"
        ) from None
    return LPIPS(net="vgg").requires_grad_(False).eval()


def _dists_loss() -> nn.Module:
    try:
        from varestorer.metrics.dists import DISTS
    except ImportError:
        raise ValueError("loss.dists_weight > 0 needs varestorer.metrics.dists, absent from this install") from None
    return DISTS().requires_grad_(False).eval()


class TokenizerTraining(nn.Module):
    """Tokenizer + optional discriminator/LPIPS; ``forward(batch, step) -> (loss, logs)``."""

    def __init__(self, tokenizer: Tokenizer, loss: LossConfig, distill_teacher: Tokenizer | None = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.loss_config = loss
        if loss.distill_weight > 0 and distill_teacher is None:
            raise ValueError("loss.distill_weight > 0 needs model.distill_from (the tokenizer to reproduce)")
        self.distill_teacher = distill_teacher.requires_grad_(False).eval() if distill_teacher is not None else None
        self.perceptual = _perceptual_loss() if loss.perceptual_weight > 0 else None
        self.dists = _dists_loss() if loss.dists_weight > 0 else None
        self.discriminator = (
            PatchDiscriminator(loss.discriminator_channels, loss.discriminator_layers) if loss.gan_weight > 0 else None
        )

    def train(self, mode: bool = True) -> TokenizerTraining:
        super().train(mode)
        for metric in (self.perceptual, self.dists, self.distill_teacher):
            if metric is not None:
                metric.eval()  # a fixed metric network
        return self

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Batch ``{"gt": (B, 3, H, W) in [0, 1]}`` -> total loss and its parts."""
        weights = self.loss_config
        x_B3HW = batch["gt"] * 2 - 1
        f_BdHW = self.tokenizer.encode(x_B3HW)
        tokens = self.tokenizer.quantizer.quantize(f_BdHW, schedule_for_grid(f_BdHW.shape[2], f_BdHW.shape[3]))
        rec_B3HW = self.tokenizer.decode(tokens.f_hat, clamp=False).float()
        l1 = (rec_B3HW - x_B3HW).abs().mean()
        mse = (rec_B3HW - x_B3HW).pow(2).mean()
        loss = weights.l1_weight * l1 + weights.mse_weight * mse
        logs = {"l1": l1.detach(), "mse": mse.detach()}
        if self.distill_teacher is not None and weights.distill_weight > 0:
            with torch.no_grad():
                target = self.distill_teacher.encode(x_B3HW)
            distill = (f_BdHW.float() - target.float()).pow(2).mean()
            loss = loss + weights.distill_weight * distill
            logs["distill"] = distill.detach()
        if weights.commitment_weight > 0 and tokens.commitment_loss is not None:
            commitment = tokens.commitment_loss + (tokens.codebook_loss if tokens.codebook_loss is not None else 0)
            loss = loss + weights.commitment_weight * commitment
            logs["commitment"] = commitment.detach()
        if self.perceptual is not None:
            perceptual = self.perceptual(rec_B3HW, x_B3HW).mean()
            loss = loss + weights.perceptual_weight * perceptual
            logs["lpips"] = perceptual.detach()
        if self.dists is not None:
            dists = self.dists((rec_B3HW.clamp(-1, 1) + 1) / 2, (x_B3HW + 1) / 2).mean()
            loss = loss + weights.dists_weight * dists
            logs["dists"] = dists.detach()
        if self.discriminator is not None:
            if step >= weights.gan_start_step:
                generator = hinge_generator_loss(self.discriminator.frozen_call(rec_B3HW))
                loss = loss + weights.gan_weight * generator
                logs["gan_generator"] = generator.detach()
            disc = hinge_discriminator_loss(self.discriminator(x_B3HW), self.discriminator(rec_B3HW.detach()))
            loss = loss + disc
            logs["gan_discriminator"] = disc.detach()
        return loss, logs


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: Tokenizer, dataset: HQFolderDataset, *, batch_size: int = 4, limit: int | None = None
) -> tuple[float, torch.Tensor]:
    """Mean reconstruction PSNR over ``dataset`` and a (2B, 3, H, W) grid source (GT rows, then recs)."""
    device = next(tokenizer.parameters()).device
    count = len(dataset) if limit is None else min(limit, len(dataset))
    values, shown = [], None
    for start in range(0, count, batch_size):
        gt = torch.stack([dataset[i]["gt"] for i in range(start, min(count, start + batch_size))]).to(device)  # type: ignore[misc]
        rec = (tokenizer.decode(tokenizer.tokenize(gt * 2 - 1).f_hat) + 1) / 2
        values.append(batch_psnr(rec, gt).cpu())
        if shown is None:
            shown = torch.cat([gt, rec]).cpu()
    return float(torch.cat(values).mean()), shown  # type: ignore[return-value]


def main(recipe: str | Path, *, resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the job described by ``recipe``; returns a process exit code."""
    configs = load_recipe(recipe, SECTIONS, overrides)
    train: TrainConfig = configs["train"]
    data: DataConfig = configs["data"]
    if not data.train_dirs:
        raise ValueError(f"{recipe}: [data] train_dirs is empty")
    seed_everything(train.seed)
    model: ModelConfig = configs["model"]
    calibration = None
    if model.preset in TAEF2_PRESETS and model.pretrained_dir is not None and model.init_from is None:
        crops = data.train_set(model.calibration_crop_size, seed=train.seed, hflip=False)
        count = min(model.calibration_images, len(crops))
        picks = [round(i * (len(crops) - 1) / max(count - 1, 1)) for i in range(count)]  # spread over the folders
        calibration = torch.stack([crops[i]["gt"] for i in picks]) * 2 - 1  # type: ignore[misc]
    tokenizer = build_tokenizer(model, calibration)
    set_trainable(tokenizer, model.trainable)
    distill_teacher = load_tokenizer(model.distill_from).float() if model.distill_from is not None else None
    for name, size in (("crop_size", data.crop_size), ("val_crop_size", data.val_crop_size)):
        if size % tokenizer.stride:
            raise ValueError(f"data.{name} = {size} is not a multiple of the tokenizer stride {tokenizer.stride}")
    module = TokenizerTraining(tokenizer, configs["loss"], distill_teacher)
    dataset = data.train_set(data.crop_size, seed=train.seed, hflip=data.hflip)

    validate = None
    if data.val_dir is not None:
        val_set = HQFolderDataset(data.val_dir, crop_size=data.val_crop_size, random_crop=False, hflip=False)

        def validate(module: Any) -> dict[str, Any]:  # the job's module
            value, shown = evaluate_reconstruction(module.tokenizer, val_set, limit=data.max_val_images)
            return {"psnr": value, "reconstructions": shown}

    def export(module: Any, directory: Path) -> None:
        module.tokenizer.save_pretrained(directory)

    recipe_dict = {name: config_to_dict(value) for name, value in configs.items()}
    trainer = Trainer(train, module, resume=resume, validate=validate, export=export, recipe=recipe_dict)
    if trainer.is_main:
        logger.info(
            "training %s tokenizer (%.2fM parameters) on %d images, %d process(es), device %s",
            configs["model"].preset,
            sum(p.numel() for p in tokenizer.parameters()) / 1e6,
            len(dataset.paths),  # images, not items: data.repeat multiplies those
            trainer.world_size,
            trainer.device,
        )
    trainer.fit(dataset)
    return 0


__all__ = [
    "SECTIONS",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "TokenizerTraining",
    "build_tokenizer",
    "main",
    "set_trainable",
]
