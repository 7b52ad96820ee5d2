"""``varestorer train teacher``: next-scale prediction on image folders (Infinity-style teacher).

Recipe sections (see ``recipes/teacher_small.toml``)::

    [train]  TrainConfig (optimiser, warm-up + cosine, precision, EMA, checkpoints, logging)
    [model]  the tokenizer folder (frozen), the transformer preset (+ changes) or a teacher to fine-tune,
             the text encoder
    [data]   training folders, crop size, validation folder
    [loss]   per-scale reweighting, bitwise self-correction, caption dropout, sample-grid settings

Per step (Infinity `trainer.py`, docs/sources.md): HQ crops in [0, 1] -> x in [-1, 1] -> frozen tokenizer
encoder -> multi-scale bitwise quantisation over the crop's schedule (with bitwise self-correction:
random bit flips re-quantised into the inputs of later scales) -> teacher-forcing inputs and labels ->
one block-causal pass -> per-bit cross-entropy, averaged over bits, weighted over tokens (uniform
1/L, or sqrt(A_K / A_k) for a token of scale k normalised to sum 1) and averaged over the batch.
Captions come from ``stem.txt`` sidecars and the text encoder; images without one, and a random
``caption_dropout`` fraction of the rest, use the learned unconditional tokens (for CFG). Without a
text encoder the model is unconditional.
Validation: the same loss and bit accuracy on held-out centre crops, and a grid of sampled images.
Each checkpoint's ``model/`` (and ``<output_dir>/model``) is a Teacher folder for ``varestorer generate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from varestorer.config import config_from_dict, config_to_dict
from varestorer.data.datasets import HQFolderDataset
from varestorer.models.teacher import Teacher
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.training.config import PhotoFolderConfig, TrainConfig, load_recipe
from varestorer.training.losses import accuracy_per_scale, bitwise_cross_entropy, scale_weights
from varestorer.training.trainer import Trainer, seed_everything
from varestorer.transformer.config import TextEncoderConfig, TransformerConfig, transformer_preset
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition, TextEncoder, load_text_encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    tokenizer: str | None = None
    """A trained tokenizer folder (``MultiScaleTokenizer.from_pretrained``); frozen during training."""
    tokenizer_preset: str | None = None
    """Instead of ``tokenizer``: a randomly initialised tokenizer preset (smoke tests only)."""
    preset: str = "small"
    """A TRANSFORMER_PRESETS name to start from."""
    changes: dict[str, Any] = field(default_factory=dict)
    """TransformerConfig fields that replace the preset's (e.g. ``{depth = 6}``)."""
    init_from: str | None = None
    """A Teacher folder to fine-tune (its tokenizer and transformer replace the three fields above)."""
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """``kind = "none"`` (unconditional) or a local ``transformers`` encoder folder."""
    scales: tuple[int, ...] | None = None
    """Square token-grid sides at the crop size (e.g. ``[1, 2, 4, 8, 16, 32]``); None: the tokenizer's schedule."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    crop_size: int = 256
    """Side of the random square training crops in px (a multiple of the tokenizer stride)."""
    hflip: bool = True
    """Random horizontal flips."""
    val_dir: str | None = None
    """Folder of validation images (centre crops of ``crop_size``); None skips the validation loss."""
    max_val_images: int = 32
    """Validate on at most this many images."""


@dataclass(frozen=True)
class LossConfig:
    reweight_by_scale: bool = False
    """Weight a token of scale k by sqrt(A_K / A_k) (normalised) instead of uniformly (Infinity's option)."""
    flip_probability: float = 0.0
    """Bitwise self-correction: max bit-flip probability per scale (Infinity trains with 0.3); 0 disables."""
    flip_scales: int | None = None
    """Apply the flips on the first this-many scales only (None: all)."""
    caption_dropout: float = 0.1
    """Fraction of captions replaced by the unconditional tokens (classifier-free guidance)."""
    num_samples: int = 8
    """Images sampled for the grid at each validation (0 disables)."""
    sample_cfg: float = 3.0
    """CFG weight of the sample grid (with captions)."""
    sample_top_p: float = 0.97
    """Nucleus per bit of the sample grid."""


SECTIONS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig, "loss": LossConfig}


# Infinity keeps these out of weight decay (Infinity `trainer.py`, docs/sources.md), besides 1-D parameters.
_NO_DECAY = ("cfg_uncond", "pos_start", "lvl_embed", "ada_gss", "scale_mul", "text_proj_for_sos.ca.mat_q")


def teacher_param_groups(transformer: NextScaleTransformer) -> list[dict[str, Any]]:
    """AdamW groups: decayed weight matrices; no decay for 1-D parameters and Infinity's embedding-like tensors."""
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for name, parameter in transformer.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or any(k in name for k in _NO_DECAY) else decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_teacher(config: ModelConfig, crop_size: int) -> Teacher:
    """The teacher to train: ``init_from`` folder, or a frozen tokenizer + a fresh transformer preset."""
    teacher_config = TeacherConfig(text_encoder=config.text_encoder, image_size=crop_size, scales=config.scales)
    if config.init_from is not None:
        loaded = Teacher.from_pretrained(config.init_from)
        return Teacher(loaded.tokenizer, loaded.transformer, teacher_config)
    if (config.tokenizer is None) == (config.tokenizer_preset is None):
        raise ValueError("[model] needs exactly one of tokenizer (a trained folder) or tokenizer_preset")
    if config.tokenizer is not None:
        tokenizer = load_tokenizer(config.tokenizer)
    else:
        tokenizer = MultiScaleTokenizer.from_preset(config.tokenizer_preset)  # type: ignore[arg-type]
    quantizer = tokenizer.quantizer
    base = config_to_dict(transformer_preset(config.preset)) | {
        "token_dim": tokenizer.token_dim,
        "codebook_size": None if quantizer.bitwise else quantizer.num_classes,
    }
    transformer_config = config_from_dict(TransformerConfig, base | dict(config.changes), where="model.changes")
    return Teacher(tokenizer, NextScaleTransformer(transformer_config), teacher_config)


class TeacherTraining(nn.Module):
    """Frozen tokenizer + trainable transformer; ``forward(batch, step) -> (loss, logs)``."""

    def __init__(self, teacher: Teacher, loss: LossConfig, text_encoder: TextEncoder | None) -> None:
        super().__init__()
        self.teacher = teacher
        self.loss_config = loss
        teacher.tokenizer.requires_grad_(False)
        # The text encoder is frozen and not part of the trained state: kept outside the module tree.
        self.__dict__["text_encoder"] = text_encoder

    def train(self, mode: bool = True) -> TeacherTraining:
        super().train(mode)
        self.teacher.tokenizer.eval()  # frozen
        return self

    def encode_text(self, captions: list[str]) -> tuple[TextCondition | None, Tensor | None]:
        """Text tokens for the captions and the (B,) bool "use the unconditional tokens" mask."""
        encoder: TextEncoder | None = self.__dict__["text_encoder"]
        if encoder is None:
            return None, None
        device = self.teacher.transformer.pos_start.device
        if next(encoder.model.parameters()).device != device:
            encoder.model.to(device)
        empty = torch.tensor([not c.strip() for c in captions], device=device)
        text = encoder([c if c.strip() else "." for c in captions]).to(device)
        return text, empty

    def loss(self, batch: dict[str, Any], *, flip_probability: float, dropout: float) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, bit accuracy and bit accuracy per scale (K,) of one teacher-forced pass."""
        x_B3HW = batch["gt"] * 2 - 1
        schedule = self.teacher.schedule(x_B3HW.shape[2], x_B3HW.shape[3])
        with torch.no_grad():
            f_BdHW = self.teacher.tokenizer.encode(x_B3HW).float()
            tokens = self.teacher.tokenizer.quantizer.quantize(  # type: ignore[call-arg]  # bitwise only
                f_BdHW, schedule, flip_probability=flip_probability, flip_scales=self.loss_config.flip_scales
            )
        text, drop = self.encode_text(list(batch["caption"]))
        if drop is not None and dropout > 0:
            drop = drop | (torch.rand(drop.shape, device=drop.device) < dropout)
        logits = self.teacher.transformer(tokens.inputs.detach(), schedule, text, mask="causal", drop=drop)
        labels_BLd = torch.cat(tokens.labels, dim=1)
        weights = scale_weights(schedule, self.loss_config.reweight_by_scale)
        loss, accuracy = bitwise_cross_entropy(logits, labels_BLd, weights)
        return loss, accuracy, accuracy_per_scale(logits.detach(), labels_BLd, schedule)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Batch ``{"gt": (B, 3, H, W) in [0, 1], "caption": list[str]}`` -> loss and bit accuracy."""
        cfg = self.loss_config
        loss, accuracy, _ = self.loss(batch, flip_probability=cfg.flip_probability, dropout=cfg.caption_dropout)
        return loss, {"bit_accuracy": accuracy.detach()}


@torch.no_grad()
def validate_teacher(
    module: TeacherTraining, dataset: HQFolderDataset | None, *, limit: int, batch_size: int = 4
) -> dict[str, Any]:
    """Validation loss, bit accuracy (all bits, and ``bit_accuracy_HxW`` per scale; no flips, no dropout) and a
    sample grid in [0, 1]."""
    results: dict[str, Any] = {}
    device = module.teacher.transformer.pos_start.device
    if dataset is not None and len(dataset):
        count = min(limit, len(dataset))
        losses, accuracies, per_scale = [], [], []
        for start in range(0, count, batch_size):
            items: list[dict[str, Any]] = [dataset[i] for i in range(start, min(count, start + batch_size))]
            gt = torch.stack([it["gt"] for it in items]).to(device)
            batch = {"gt": gt, "caption": [it["caption"] for it in items]}
            loss, accuracy, scales = module.loss(batch, flip_probability=0.0, dropout=0.0)
            losses.append(float(loss) * len(items))
            accuracies.append(float(accuracy) * len(items))
            per_scale.append(scales * len(items))
        results["loss"] = sum(losses) / count
        results["bit_accuracy"] = sum(accuracies) / count
        schedule = module.teacher.schedule(gt.shape[2], gt.shape[3])
        for (h, w), value in zip(schedule, torch.stack(per_scale).sum(0) / count, strict=True):
            results[f"bit_accuracy_{h}x{w}"] = float(value)
    cfg = module.loss_config
    if cfg.num_samples > 0:
        captions = None
        if module.__dict__["text_encoder"] is not None and dataset is not None:
            captions = [str(dataset[i % len(dataset)]["caption"]) or "." for i in range(cfg.num_samples)]
        teacher = module.teacher
        text = module.encode_text(captions)[0] if captions else None
        from varestorer.transformer.sampler import sample_scales

        schedule = teacher.schedule()
        generator = torch.Generator(device=device).manual_seed(0)
        labels = sample_scales(
            teacher.transformer,
            teacher.tokenizer.quantizer,
            schedule,
            text,
            batch_size=None if text is not None else cfg.num_samples,
            cfg_scale=cfg.sample_cfg,
            top_p=cfg.sample_top_p,
            generator=generator,
        )
        results["samples"] = (teacher.tokenizer.labels_to_image(labels, schedule) + 1) / 2
    return results


def main(recipe: str | Path, *, resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the job described by ``recipe``; returns a process exit code."""
    configs = load_recipe(recipe, SECTIONS, overrides)
    train: TrainConfig = configs["train"]
    data: DataConfig = configs["data"]
    model: ModelConfig = configs["model"]
    if not data.train_dirs:
        raise ValueError(f"{recipe}: [data] train_dirs is empty")
    seed_everything(train.seed)
    teacher = build_teacher(model, data.crop_size)
    if data.crop_size % teacher.tokenizer.stride:
        raise ValueError(f"data.crop_size = {data.crop_size} is not a multiple of {teacher.tokenizer.stride}")
    text_encoder = load_text_encoder(model.text_encoder)
    if text_encoder is not None and text_encoder.dim != teacher.transformer.config.text_dim:
        raise ValueError(
            f"text encoder width {text_encoder.dim} != transformer text_dim {teacher.transformer.config.text_dim}"
        )
    module = TeacherTraining(teacher, configs["loss"], text_encoder)
    dataset = data.train_set(data.crop_size, seed=train.seed, hflip=data.hflip)
    val_set = None
    if data.val_dir is not None:
        val_set = HQFolderDataset(data.val_dir, crop_size=data.crop_size, random_crop=False, hflip=False)

    def validate(module: Any) -> dict[str, Any]:
        return validate_teacher(module, val_set, limit=data.max_val_images)  # type: ignore[arg-type]

    def export(module: Any, directory: Path) -> None:
        module.teacher.save_pretrained(directory)

    recipe_dict = {name: config_to_dict(value) for name, value in configs.items()}
    trainer = Trainer(
        train,
        module,
        resume=resume,
        validate=validate,
        export=export,
        recipe=recipe_dict,
        param_groups=teacher_param_groups(teacher.transformer),
    )
    logger.info(
        "training a %s teacher (%.2fM transformer parameters) on %d images, schedule %s, %d process(es), device %s",
        model.preset,
        sum(p.numel() for p in teacher.transformer.parameters()) / 1e6,
        len(dataset.paths),  # images, not items: data.repeat multiplies those
        teacher.schedule(),
        trainer.world_size,
        trainer.device,
    )
    trainer.fit(dataset)
    return 0


__all__ = ["SECTIONS", "DataConfig", "LossConfig", "ModelConfig", "TeacherTraining", "build_teacher", "main"]
