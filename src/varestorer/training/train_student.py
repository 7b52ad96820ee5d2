"""``varestorer train student``: distil the one-step VARestorer student from a teacher (paper §3.3-3.4).

Recipe sections (see ``recipes/student_small.toml``)::

    [train]  TrainConfig (optimiser, schedule, precision, accumulation, EMA, checkpoints, logging)
    [model]  teacher folder, LoRA rank/alpha/targets, attention full|causal, working size, pre-cleaner
    [data]   HQ training folders, degradation preset, paired validation folders
    [loss]   lambda_kl / lambda_perceptual / lambda_mse / lambda_dists, KL temperature

Per step, on a batch of HQ crops ``gt`` (B, 3, S, S) degraded on the fly into ``lq`` (B, 3, S/s, S/s)::

    teacher (frozen, no grad):  GT -> tokenizer -> GT pyramid -> one block-causal pass -> p_T(r_k | r_<k)
    student:                    LQ -> one full-attention pass -> p_S(r_k | LQ), bits -> f_hat -> sr
    loss = lambda_kl * KL(p_T || p_S) + lambda_perc * LPIPS-VGG(sr, gt) + lambda_mse * ||sr - gt||^2
           [+ lambda_dists * DISTS(sr, gt), off by default: not in the paper]

The image terms reach the logits through the straight-through bits of ``Student.logits_to_f_hat``.
Ablations (paper Table 3) are recipe settings: ``loss.lambda_kl = 0`` (no_kl), ``model.attention =
"causal"`` (causal), ``model.precleaner = false`` (no_precleaner); see ``recipes/ablations/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.archs.srvgg import SRVGGConfig
from varestorer.checkpoint import read_config
from varestorer.config import config_from_dict, config_to_dict
from varestorer.data.datasets import PairedFolderDataset
from varestorer.data.pairs import DegradedPairDataset
from varestorer.data.transforms import to_uint8
from varestorer.metrics.fidelity import psnr
from varestorer.models.lq_conditioned import LQConditionedVAR
from varestorer.models.student import Student
from varestorer.models.student_config import DEFAULT_LORA_TARGETS, StudentConfig
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.loading import load_tokenizer
from varestorer.training.config import PhotoFolderConfig, TrainConfig, load_recipe
from varestorer.training.losses import bitwise_cross_entropy, token_kl
from varestorer.training.trainer import Trainer, seed_everything
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "student"
    """``student``: the one-step VARestorer, distilled. ``lq_conditioned_var``: the no_distill ablation, a
    multi-step VAR with ControlNet-style LQ injection trained with cross-entropy (models/lq_conditioned.py)."""
    teacher: str = ""
    """Teacher folder holding ``tokenizer/`` and ``transformer/`` (``from_pretrained`` folders)."""
    image_size: int = 256
    """Working (HQ) size in px; LQ crops are ``image_size / scale``."""
    scale: int = 4
    attention: str = "full"
    """``full`` (the paper) or ``causal`` (ablation)."""
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    train_encoder: bool = True
    train_decoder: bool = False
    """Fine-tune the decoder too (not in the paper; helps a briefly trained small tokenizer)."""
    precleaner: bool = True
    """Train a same-size SRVGGNetCompact pre-cleaner jointly (False: the no_precleaner ablation)."""
    use_prompt: bool = True
    """Condition teacher and student on the captions (``stem.txt`` sidecars) through the teacher's text
    encoder; False is the no_prompt ablation. Without a text encoder both are unconditional anyway."""
    precleaner_features: int = 32
    precleaner_convs: int = 8
    init_from: str | None = None
    """A student folder to continue from (its adapters, encoder and pre-cleaner)."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    degradation: str = "mild"
    """Degradation preset name (``mild``, ``realesrgan``, ``bicubic``) or a pipeline config file."""
    hflip: bool = True
    val_lq_dir: str | None = None
    val_gt_dir: str | None = None
    max_val_images: int = 16


@dataclass(frozen=True)
class LossConfig:
    lambda_kl: float = 0.1
    lambda_perceptual: float = 0.25
    lambda_mse: float = 0.5
    kl_temperature: float = 1.0
    lambda_dists: float = 0.0
    """Weight of a DISTS term (Ding et al. 2020, who propose it as an optimisation objective) on the same
    crop as LPIPS. Not in the paper; DISTS rewards texture statistics that LPIPS and MSE alone flatten."""
    perceptual_crop: int | None = None
    """Compute LPIPS (and DISTS) on one random crop of this side (same place in SR and GT) instead of the whole image:
    VGG16 dominates a CPU step, a 128 px crop of a 256 px output costs a quarter."""


SECTIONS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig, "loss": LossConfig}


def build_student(model: ModelConfig) -> tuple[Student, MultiScaleTokenizer, NextScaleTransformer]:
    """Student + the frozen teacher parts it is distilled from."""
    if not model.teacher:
        raise ValueError("[model] teacher must name a teacher folder (with tokenizer/ and transformer/)")
    teacher = Path(model.teacher)
    teacher_config = config_from_dict(TeacherConfig, read_config(teacher)["config"])
    tokenizer = load_tokenizer(teacher / "tokenizer")
    transformer = NextScaleTransformer.from_pretrained(teacher / "transformer")
    if model.attention not in ("full", "causal"):
        raise ValueError(f"[model] attention must be 'full' or 'causal', got {model.attention!r}")
    precleaner = (
        SRVGGConfig(num_feat=model.precleaner_features, num_conv=model.precleaner_convs, upscale=1)
        if model.precleaner
        else None
    )
    config = StudentConfig(
        tokenizer=tokenizer.config,
        transformer=transformer.config,
        teacher=str(teacher.resolve()),
        scale=model.scale,
        image_size=model.image_size,
        attention=model.attention,  # type: ignore[arg-type]
        lora_rank=model.lora_rank,
        lora_alpha=model.lora_alpha,
        lora_targets=tuple(model.lora_targets),
        train_encoder=model.train_encoder,
        train_decoder=model.train_decoder,
        precleaner=precleaner,
        text_encoder=teacher_config.text_encoder,
    )
    kinds = {"student": Student, "lq_conditioned_var": LQConditionedVAR}
    if model.kind not in kinds:
        raise ValueError(f"[model] kind must be one of {', '.join(kinds)}, got {model.kind!r}")
    student = kinds[model.kind].from_teacher(tokenizer, transformer, config)
    if model.init_from:
        previous = kinds[model.kind].from_pretrained(model.init_from)
        student.load_state_dict(previous.trainable_state_dict(), strict=False)
    tokenizer.requires_grad_(False).eval()
    transformer.requires_grad_(False).eval()
    return student, tokenizer, transformer


def _perceptual_loss() -> nn.Module:
    from varestorer.metrics.lpips import LPIPS  # needs the cached VGG/LPIPS assets

    return LPIPS(net="vgg").requires_grad_(False).eval()


def _dists_loss() -> nn.Module:
    from varestorer.metrics.dists import DISTS  # needs the cached VGG/DISTS assets

    return DISTS().requires_grad_(False).eval()


class StudentDistillation(nn.Module):
    """Student + frozen teacher + LPIPS (+ DISTS); ``forward(batch, step) -> (loss, logs)``."""

    def __init__(
        self,
        student: Student,
        tokenizer: MultiScaleTokenizer,
        transformer: NextScaleTransformer,
        loss: LossConfig,
        *,
        use_prompt: bool = True,
    ) -> None:
        super().__init__()
        self.use_prompt = use_prompt and student.config.text_encoder.kind != "none"
        self.student = student
        self.teacher_tokenizer = tokenizer
        self.teacher_transformer = transformer
        self.loss_config = loss
        self.perceptual = _perceptual_loss() if loss.lambda_perceptual > 0 else None
        self.dists = _dists_loss() if loss.lambda_dists > 0 else None

    def train(self, mode: bool = True) -> StudentDistillation:
        super().train(mode)
        for frozen in (self.teacher_tokenizer, self.teacher_transformer, self.perceptual, self.dists):
            if frozen is not None:
                frozen.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, gt_B3HW: torch.Tensor, text: TextCondition | None) -> torch.Tensor:
        """p_T(r_k | GT tokens <k): one teacher-forced block-causal pass over the GT pyramid."""
        tokens = self.teacher_tokenizer.tokenize(gt_B3HW * 2 - 1, self.student.schedule)
        return self.teacher_transformer(tokens.inputs, self.student.schedule, text, mask="causal")

    @torch.no_grad()
    def captions(self, batch: dict[str, Any]) -> TextCondition | None:
        """The batch's captions through the (frozen) text encoder, or None when prompts are off."""
        if not self.use_prompt:
            return None
        return self.student.encode_prompts(list(batch["caption"])).to(batch["gt"].device)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.loss_config
        gt, lq = batch["gt"], batch["lq"]
        text = self.captions(batch)
        if isinstance(self.student, LQConditionedVAR):
            return self.conditioned_cross_entropy(gt, lq, text)
        out = self.student.restore(lq, text)
        sr = out.sr.float()
        mse = F.mse_loss(sr, gt)
        loss = weights.lambda_mse * mse
        logs = {"mse": mse.detach()}
        if weights.lambda_kl > 0:
            kl = token_kl(self.teacher_logits(gt, text), out.logits, temperature=weights.kl_temperature)
            loss = loss + weights.lambda_kl * kl
            logs["kl"] = kl.detach()
        if self.perceptual is not None or self.dists is not None:  # one crop, shared by both terms
            sr_crop, gt_crop = random_crop_pair(sr, gt, weights.perceptual_crop)
        if self.perceptual is not None:
            perceptual = self.perceptual(sr_crop * 2 - 1, gt_crop * 2 - 1).mean()
            loss = loss + weights.lambda_perceptual * perceptual
            logs["lpips"] = perceptual.detach()
        if self.dists is not None:
            dists = self.dists(sr_crop.clamp(0, 1), gt_crop).mean()
            loss = loss + weights.lambda_dists * dists
            logs["dists"] = dists.detach()
        return loss, logs

    def conditioned_cross_entropy(
        self, gt: torch.Tensor, lq: torch.Tensor, text: TextCondition | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """no_distill: the teacher's next-scale CE on the GT bits, conditioned on the whole LQ pyramid."""
        with torch.no_grad():
            tokens = self.teacher_tokenizer.tokenize(gt * 2 - 1, self.student.schedule)
        logits = self.student.teacher_forced_logits(tokens.inputs, lq, text)
        uniform_L = torch.full((logits.shape[1],), 1.0 / logits.shape[1])
        loss, accuracy = bitwise_cross_entropy(logits, torch.cat(tokens.labels, dim=1), uniform_L)
        return loss, {"cross_entropy": loss.detach(), "bit_accuracy": accuracy.detach()}


def random_crop_pair(a: torch.Tensor, b: torch.Tensor, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random ``size`` x ``size`` window of two (B, C, H, W) batches (whole images if None/too big)."""
    height, width = a.shape[-2:]
    if size is None or (size >= height and size >= width):
        return a, b
    top = int(torch.randint(0, height - min(size, height) + 1, ()).item())
    left = int(torch.randint(0, width - min(size, width) + 1, ()).item())
    window = (..., slice(top, top + size), slice(left, left + size))
    return a[window], b[window]


@torch.no_grad()
def validate_student(student: Student, dataset: PairedFolderDataset, limit: int) -> dict[str, Any]:
    """PSNR-Y (8-bit, BT.601, border = scale, as ``varestorer evaluate``) of the output on paired LQ/GT crops of
    the working size, plus an image grid."""
    device = next(student.parameters()).device
    size, scale = student.config.image_size, student.scale
    values, grid = [], None
    for index in range(min(limit, len(dataset))):
        item = dataset[index]
        gt = item["gt"][None, :, :size, :size].to(device)
        lq = item["lq"][None, :, : size // scale, : size // scale].to(device)
        if gt.shape[-2:] != (size, size) or lq.shape[-2:] != (size // scale, size // scale):
            continue  # smaller than the working size
        sr = student(lq)
        values.append(psnr(to_uint8(sr[0].float().cpu()), to_uint8(gt[0].cpu()), crop_border=scale))
        if grid is None:
            grid = torch.cat([F.interpolate(lq, size=(size, size), mode="nearest"), sr, gt]).cpu()
    out: dict[str, Any] = {"psnr_y": float(sum(values) / len(values))} if values else {}
    if grid is not None:
        out["lq_sr_gt"] = grid
    return out


def main(recipe: str | Path, *, resume: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the distillation job described by ``recipe``; returns a process exit code."""
    configs = load_recipe(recipe, SECTIONS, overrides)
    train: TrainConfig = configs["train"]
    data: DataConfig = configs["data"]
    model: ModelConfig = configs["model"]
    if not data.train_dirs:
        raise ValueError(f"{recipe}: [data] train_dirs is empty")
    seed_everything(train.seed)
    student, tokenizer, transformer = build_student(model)
    module = StudentDistillation(student, tokenizer, transformer, configs["loss"], use_prompt=model.use_prompt)
    hq = data.train_set(model.image_size, seed=train.seed, hflip=data.hflip)
    dataset = DegradedPairDataset(hq, data.degradation, seed=train.seed)

    validate = None
    if data.val_lq_dir and data.val_gt_dir:
        val_set = PairedFolderDataset(data.val_lq_dir, data.val_gt_dir)

        def validate(module: nn.Module) -> dict[str, Any]:
            return validate_student(module.student, val_set, data.max_val_images)

    def export(module: nn.Module, directory: Path) -> None:
        module.student.save_pretrained(directory)

    recipe_dict = {name: config_to_dict(value) for name, value in configs.items()}
    trainer = Trainer(train, module, resume=resume, validate=validate, export=export, recipe=recipe_dict)
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    logger.info(
        "distilling a %s-attention student (%.2fM trainable parameters) on %d images, %d process(es), device %s",
        model.attention,
        trainable / 1e6,
        len(hq.paths),  # images, not items: data.repeat multiplies those
        trainer.world_size,
        trainer.device,
    )
    trainer.fit(dataset)
    return 0
