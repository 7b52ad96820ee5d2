"""``varestorer train student``: distil the one-step VARestorer student from a teacher (paper §3.3-3.4).

Recipe sections (see ``recipes/student_small.toml``)::

    [train]  TrainConfig (optimiser, schedule, precision, accumulation, EMA, checkpoints, logging)
    [model]  teacher folder, LoRA rank/alpha/targets, attention full|causal, working size, pre-cleaner (its
             resolution, init, frozen or not), the LQ-bit skip and fidelity path (beyond the paper)
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.archs.srvgg import SRVGG_PRESETS, SRVGGNetCompact
from varestorer.config import config_to_dict
from varestorer.data.datasets import PairedFolderDataset
from varestorer.data.pairs import DegradedPairDataset
from varestorer.data.transforms import to_uint8
from varestorer.families import families
from varestorer.metrics.fidelity import psnr
from varestorer.models.lq_encoder import LQEncoder, LQEncoderConfig
from varestorer.models.student import Student
from varestorer.models.student_config import DEFAULT_LORA_TARGETS, StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.training.caption_cache import CaptionCache
from varestorer.training.config import PhotoFolderConfig, TrainConfig, load_recipe
from varestorer.training.losses import bitwise_cross_entropy, token_kl
from varestorer.training.teacher_pass import TeacherPass
from varestorer.training.trainer import Trainer, seed_everything
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition, load_text_encoder

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
    precleaner_upscale: int = 1
    """The pre-cleaner's own factor (4 with ``precleaner_resolution = "output"``: realesr-general-x4v3's shape
    is features 64, convs 32, upscale 4)."""
    precleaner_resolution: str = "lq"
    """``lq``: its output is resized back to the LQ size (today's default). ``output``: an upscaling
    pre-cleaner's output goes straight to the encoder at the working size."""
    train_precleaner: bool = True
    """False keeps the pre-cleaner frozen (e.g. the pretrained x4v3 of ``precleaner_init``)."""
    precleaner_init: str | None = None
    """Initialise the pre-cleaner from an SRVGGNetCompact checkpoint folder (``config.json`` + safetensors, e.g.
    ``src/varestorer/weights/realesr-general-x4v3``) or peer weights (an ncnn ``.param``/``.bin`` pair or a
    Real-ESRGAN ``.pth``); its shape must be the one the fields above describe."""
    lq_bit_skip: bool = False
    """Beyond the paper: the LQ's own bits added to the student's logits with a learned gain per scale."""
    lq_bit_gain_init: float = 4.0
    fidelity_path: bool = False
    """Beyond the paper: the LQ latent's quantisation residual added to the decoder input (per-channel weight)."""
    skip_lr_scale: float = 1.0
    """Learning-rate multiplier of the skip gains and fidelity weights (no weight decay)."""
    lq_encoder: bool = False
    """Beyond the paper: encode the LQ at its own resolution (``models/lq_encoder.py``; needs a TAEF2 teacher and
    ``precleaner = false``): a stem of ``lq_encoder_stem_convs`` convs at width ``lq_encoder_features``, then the
    teacher encoder's layers from ``lq_encoder_tail_from`` on."""
    lq_encoder_features: int = 64
    lq_encoder_stem_convs: int = 6
    lq_encoder_tail_from: int = 10
    lq_encoder_init: str | None = None
    """Initialise the LQ encoder's stem from the first convs of an SRVGGNetCompact (as ``precleaner_init``,
    e.g. ``realesr-general-x4v3``); its last conv and the tail start as they are (random / the teacher's)."""
    decoder_skip_blocks: tuple[int, ...] = ()
    """TAEF2 decoder Blocks to leave out for speed (``StudentConfig.decoder_skip_blocks``), e.g. [15, 18]."""
    encoder_skip_blocks: tuple[int, ...] = ()
    """TAEF2 encoder Blocks to leave out for speed (``StudentConfig.encoder_skip_blocks``), e.g. [3, 4, 5]."""
    latent_teacher: str | None = None
    """A student folder whose LQ latent (``f_LQ`` of its own pre-cleaner and encoder) the student's encoder is
    regressed to with ``loss.lambda_latent``: e.g. default model v2, to carry its x4v3 + TAEF2 encoder path
    over to an LQ encoder at a tenth of its cost."""
    init_from: str | None = None
    """A student folder to continue from (its adapters, encoder, decoder and pre-cleaner, where this student has
    them: tensors of layers this one has not, e.g. skipped decoder Blocks, are left out)."""
    shared_teacher: bool = True
    """Run the teacher as the student's own frozen base with the adapters switched off (no second copy of
    the transformer; training/teacher_pass.py). False keeps a separate frozen teacher copy."""
    teacher_dtype: str = "float32"
    """``float32`` or ``bfloat16``: weight dtype of a separate (not shared) teacher transformer."""
    text_encoder_device: str = "cpu"
    """Where the caption encoder runs; each distinct caption is encoded once and cached in host memory
    (training/caption_cache.py), so the encoder need not sit on the training device."""


@dataclass(frozen=True)
class DataConfig(PhotoFolderConfig):
    degradation: str = "mild"
    """Degradation preset name (``mild``, ``realesrgan``, ``bicubic``), several joined by commas (each pair
    uses one, drawn per item: ``"mild,realesrgan"``), or a pipeline config file."""
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
    lambda_latent: float = 0.0
    """Weight of the MSE between the student's LQ latent and ``[model] latent_teacher``'s (per element)."""
    perceptual_crop: int | None = None
    """Compute LPIPS (and DISTS) on one random crop of this side (same place in SR and GT) instead of the whole image:
    VGG16 dominates a CPU step, a 128 px crop of a 256 px output costs a quarter."""


SECTIONS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig, "loss": LossConfig}


def build_student(model: ModelConfig) -> tuple[Student, MultiScaleTokenizer, NextScaleTransformer]:
    """Student + the frozen teacher parts it is distilled from."""
    if not model.teacher:
        raise ValueError("[model] teacher must name a teacher folder (with tokenizer/ and transformer/)")
    teacher = Teacher.from_pretrained(model.teacher)
    tokenizer, transformer = teacher.tokenizer, teacher.transformer
    if model.attention not in ("full", "causal"):
        raise ValueError(f"[model] attention must be 'full' or 'causal', got {model.attention!r}")
    if model.precleaner_resolution not in ("lq", "output"):
        raise ValueError(f"[model] precleaner_resolution must be 'lq' or 'output', got {model.precleaner_resolution!r}")
    if model.kind != "student" and (model.lq_bit_skip or model.fidelity_path):
        raise ValueError("[model] lq_bit_skip and fidelity_path apply to kind = 'student' only")
    precleaner = (
        replace(
            SRVGG_PRESETS["precleaner-1x"],
            num_feat=model.precleaner_features,
            num_conv=model.precleaner_convs,
            upscale=model.precleaner_upscale,
        )
        if model.precleaner
        else None
    )
    if model.precleaner_init and precleaner is None:
        raise ValueError("[model] precleaner_init needs precleaner = true")
    if model.lq_encoder_init and not model.lq_encoder:
        raise ValueError("[model] lq_encoder_init needs lq_encoder = true")
    lq_encoder = (
        LQEncoderConfig(model.lq_encoder_features, model.lq_encoder_stem_convs, model.lq_encoder_tail_from)
        if model.lq_encoder
        else None
    )
    config = StudentConfig(
        tokenizer=tokenizer.config,
        tokenizer_type=type(tokenizer).__name__,
        transformer=transformer.config,
        teacher=str(Path(model.teacher).resolve()),
        scale=model.scale,
        image_size=model.image_size,
        attention=model.attention,  # type: ignore[arg-type]
        lora_rank=model.lora_rank,
        lora_alpha=model.lora_alpha,
        lora_targets=tuple(model.lora_targets),
        train_encoder=model.train_encoder,
        train_decoder=model.train_decoder,
        precleaner=precleaner,
        precleaner_resolution=model.precleaner_resolution,  # type: ignore[arg-type]
        train_precleaner=model.train_precleaner,
        lq_bit_skip=model.lq_bit_skip,
        lq_bit_gain_init=model.lq_bit_gain_init,
        fidelity_path=model.fidelity_path,
        lq_encoder=lq_encoder,
        decoder_skip_blocks=tuple(model.decoder_skip_blocks),
        encoder_skip_blocks=tuple(model.encoder_skip_blocks),
        text_encoder=teacher.config.text_encoder,
    )
    kinds = {entry.name: entry.model_class for entry in families(trains="student").values()}  # varestorer.families
    if model.kind not in kinds:
        raise ValueError(f"[model] kind must be one of {', '.join(kinds)}, got {model.kind!r}")
    student = kinds[model.kind]().from_teacher(teacher, config)
    if model.precleaner_init:
        load_precleaner_init(student, model.precleaner_init)
    if model.lq_encoder_init:
        load_lq_encoder_init(student, model.lq_encoder_init)
    if model.init_from:
        previous = kinds[model.kind]().from_pretrained(model.init_from)
        own = student.state_dict()
        state = {k: v for k, v in previous.trainable_state_dict().items() if k in own}
        left = sorted(set(previous.trainable_state_dict()) - set(state))
        student.load_state_dict(state, strict=False)
        logger.info(
            "continued from %s (%d tensors; %d it has and this student has not)", model.init_from, len(state), len(left)
        )
    tokenizer.requires_grad_(False).eval()
    transformer.requires_grad_(False).eval()
    return student, tokenizer, transformer


def load_srvgg(path: str | Path, option: str) -> SRVGGNetCompact:
    """SRVGGNetCompact weights from a checkpoint folder, ncnn pair, ``.pth`` or an embedded peer name such as
    ``realesr-general-x4v3`` (``option`` names the recipe key in errors).

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: not an SRVGGNetCompact.
    """
    from varestorer.foreign.peers import load_peer, peer_weights

    if not peer_weights(path).exists():
        raise FileNotFoundError(f"[model] {option} not found: {path}")
    peer = load_peer(path)
    if not isinstance(peer, SRVGGNetCompact):
        raise ValueError(f"[model] {option} {path} holds a {type(peer).__name__}, not an SRVGGNetCompact")
    return peer.float()


def load_precleaner_init(student: Student, path: str | Path) -> None:
    """Copy SRVGGNetCompact weights (:func:`load_srvgg`) into the student's pre-cleaner.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: not an SRVGGNetCompact, or not the shape of the student's pre-cleaner.
    """
    assert student.precleaner is not None
    peer = load_srvgg(path, "precleaner_init")
    ours = student.config.precleaner
    if peer.config != ours:
        raise ValueError(f"[model] precleaner_init {path} is {peer.config}, the recipe's pre-cleaner is {ours}")
    student.precleaner.net.load_state_dict(peer.state_dict())
    logger.info("pre-cleaner initialised from %s", path)


def load_lq_encoder_init(student: Student, path: str | Path) -> None:
    """Copy the first convs of SRVGGNetCompact weights (:func:`load_srvgg`) into the stem of the student's
    LQ encoder.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: not an SRVGGNetCompact, or narrower or shallower than the stem.
    """
    assert isinstance(student.encoder, LQEncoder)
    copied = student.encoder.init_stem_from_srvgg(load_srvgg(path, "lq_encoder_init").body)
    logger.info("LQ encoder stem: %d tensors from %s", copied, path)


def skip_param_groups(student: Student, scale: float) -> list[dict[str, Any]] | None:
    """AdamW groups with the skip gains and fidelity weights at ``scale`` x the learning rate (None: the
    trainer's default groups, when ``scale`` is 1 or the student has neither)."""
    extras = [
        p for p in (getattr(student, "lq_bit_gain", None), getattr(student, "fidelity_weight", None)) if p is not None
    ]
    if scale == 1.0 or not extras:
        return None
    ids = {id(p) for p in extras}
    rest = [p for p in student.parameters() if p.requires_grad and id(p) not in ids]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in rest if p.ndim >= 2]},
        {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0},
        {"params": extras, "weight_decay": 0.0, "lr_scale": scale},
    ]
    return [group for group in groups if group["params"]]


TEACHER_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def teacher_dtype(name: str) -> torch.dtype | None:
    """``[model] teacher_dtype`` -> a dtype (None for float32: the weights stay as loaded)."""
    if name not in TEACHER_DTYPES:
        raise ValueError(f"[model] teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}, got {name!r}")
    return None if name == "float32" else TEACHER_DTYPES[name]


def caption_cache(student: Student, model: ModelConfig) -> CaptionCache | None:
    """A cache over the teacher's text encoder on ``model.text_encoder_device`` (None without an encoder)."""
    encoder = load_text_encoder(student.config.text_encoder, device=model.text_encoder_device)
    return None if encoder is None else CaptionCache(encoder)


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
        shared_teacher: bool = True,
        teacher_dtype: torch.dtype | None = None,
        captions: CaptionCache | None = None,
        latent_teacher: Student | None = None,
    ) -> None:
        super().__init__()
        self.use_prompt = use_prompt and student.config.text_encoder.kind != "none"
        self.student = student
        # The no_distill ablation (LQConditionedVAR) wraps a student-shaped ``base``: the teacher pass shares it.
        backbone: Student = getattr(student, "base", student)
        self.teacher = TeacherPass(backbone, tokenizer, transformer, shared=shared_teacher, dtype=teacher_dtype)
        self.caption_cache = captions
        self.loss_config = loss
        self.perceptual = _perceptual_loss() if loss.lambda_perceptual > 0 else None
        self.dists = _dists_loss() if loss.lambda_dists > 0 else None
        if (loss.lambda_latent > 0) != (latent_teacher is not None):
            raise ValueError("loss.lambda_latent > 0 and [model] latent_teacher go together")
        self.latent_teacher = latent_teacher.requires_grad_(False).eval() if latent_teacher is not None else None

    def train(self, mode: bool = True) -> StudentDistillation:
        super().train(mode)
        for frozen in (self.teacher, self.perceptual, self.dists, self.latent_teacher):
            if frozen is not None:
                frozen.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, gt_B3HW: torch.Tensor, text: TextCondition | None) -> torch.Tensor:
        """p_T(r_k | GT tokens <k): one teacher-forced block-causal pass over the GT pyramid."""
        return self.teacher(gt_B3HW, text, self.student)

    @torch.no_grad()
    def captions(self, batch: dict[str, Any]) -> TextCondition | None:
        """The batch's captions through the (frozen) text encoder, or None when prompts are off."""
        if not self.use_prompt:
            return None
        if self.caption_cache is not None:
            return self.caption_cache(list(batch["caption"]), batch["gt"].device)
        return self.student.encode_prompts(list(batch["caption"])).to(batch["gt"].device)

    def forward(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.loss_config
        gt, lq = batch["gt"], batch["lq"]
        text = self.captions(batch)
        if self.student.objective == "cross_entropy":  # the model says how it learns (no_distill ablation)
            return self.conditioned_cross_entropy(gt, lq, text)
        out = self.student.restore(lq, text)
        sr = out.sr.float()
        if weights.lambda_mse > 0:
            mse = F.mse_loss(sr, gt)
            loss = weights.lambda_mse * mse
        else:  # logged only: no gradient through the decoder (a latent-only stage leaves it untouched)
            mse = F.mse_loss(sr.detach(), gt)
            loss = sr.new_zeros(())
        logs = {"mse": mse.detach()}
        if weights.lambda_kl > 0:
            kl = token_kl(self.teacher_logits(gt, text), out.logits, temperature=weights.kl_temperature)
            loss = loss + weights.lambda_kl * kl
            logs["kl"] = kl.detach()
        if self.latent_teacher is not None:
            assert out.f_lq is not None
            with torch.no_grad():
                target = self.latent_teacher.lq_tokens(self.latent_teacher.preclean(lq))[0]
            latent = F.mse_loss(out.f_lq.float(), target.float())
            loss = loss + weights.lambda_latent * latent
            logs["latent"] = latent.detach()
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
        tokens = self.teacher.tokens(gt, getattr(self.student, "base", self.student))
        logits = self.student.teacher_forced_logits(tokens.inputs, lq, text)  # type: ignore[operator]
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
        item: dict[str, Any] = dataset[index]
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
    module = StudentDistillation(
        student,
        tokenizer,
        transformer,
        configs["loss"],
        use_prompt=model.use_prompt,
        shared_teacher=model.shared_teacher,
        teacher_dtype=teacher_dtype(model.teacher_dtype),
        captions=caption_cache(student, model) if model.use_prompt else None,
        latent_teacher=Student.from_pretrained(model.latent_teacher) if model.latent_teacher else None,
    )
    del tokenizer, transformer  # a shared-base teacher keeps no copy: let the loaded one go
    hq = data.train_set(model.image_size, seed=train.seed, hflip=data.hflip)
    dataset = DegradedPairDataset(hq, data.degradation, seed=train.seed)

    validate = None
    if data.val_lq_dir and data.val_gt_dir:
        val_set = PairedFolderDataset(data.val_lq_dir, data.val_gt_dir)

        def validate(module: Any) -> dict[str, Any]:  # the job's module
            return validate_student(module.student, val_set, data.max_val_images)

    def export(module: Any, directory: Path) -> None:
        module.student.save_pretrained(directory)

    recipe_dict = {name: config_to_dict(value) for name, value in configs.items()}
    trainer = Trainer(
        train,
        module,
        resume=resume,
        validate=validate,
        export=export,
        recipe=recipe_dict,
        param_groups=skip_param_groups(student, model.skip_lr_scale),
    )
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
