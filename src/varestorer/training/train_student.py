"""``varestorer train student``: distil the one-step VARestorer student from a teacher (paper §3.3-3.4).

Recipe sections (training/student_recipe.py; see ``recipes/student_small.toml``)::

    [train]             TrainConfig (optimiser, schedule, precision, accumulation, EMA, checkpoints, logging)
    [job]               the teacher folder and this run's knobs: kind, use_prompt, precleaner_init,
                        lq_encoder_init, init_from, shared_teacher, teacher_dtype, text_encoder_device,
                        skip_lr_scale
    [model]             the student's StudentConfig (working size, LoRA, attention, what trains, the LQ-bit
    [model.precleaner]  skip and fidelity path...) less what the teacher sets; sub-configs as nested tables
    [model.lq_encoder]  (an SRVGGConfig, an LQEncoderConfig), exactly as in the exported ``config.json``
    [data]              HQ training folders, degradation preset, real camera pairs, paired validation folders
    [loss.NAME]         one table per loss term (mse, kl, lpips, dists, latent: training/loss_terms.py)

The step is ``StudentDistillation`` (training/distillation.py): the student's one-step pass, the frozen
teacher's block-causal pass when a term needs it, and the weighted sum of the recipe's loss terms.
Ablations (paper Table 3) are recipe settings: ``loss.kl.weight = 0`` (no_kl), ``model.attention =
"causal"`` (causal), ``model.precleaner = false`` (no_precleaner), ``job.kind = "lq_conditioned_var"``
(no_distill, trained with its own cross-entropy); see ``recipes/ablations/``. Recipes in the older flat
layout (``[model] teacher = ...``, ``precleaner_features``, ``[loss] lambda_kl``...) still load, translated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from varestorer.archs.srvgg import SRVGGNetCompact
from varestorer.checkpoint import read_config
from varestorer.config import config_from_dict
from varestorer.data.datasets import PairedFolderDataset
from varestorer.data.transforms import to_uint8
from varestorer.families import embedded_folder, families
from varestorer.metrics.fidelity import psnr
from varestorer.models.lq_encoder import LQEncoder
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.training.caption_cache import CaptionCache
from varestorer.training.distillation import StudentDistillation
from varestorer.training.loss_terms import build_loss_terms, random_crop_pair
from varestorer.training.student_recipe import JobConfig, load_student_recipe, student_config, teacher_fields
from varestorer.training.trainer import Trainer, seed_everything
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import load_text_encoder

logger = logging.getLogger(__name__)


def build_student(
    job: JobConfig, model: dict[str, Any]
) -> tuple[Student, MultiScaleTokenizer | None, NextScaleTransformer | None]:
    """Student (of the ``[model]`` table over the ``[job]`` teacher's shapes) + the frozen teacher parts it is
    distilled from; without a teacher, the merged student ``[job] init_from`` names, fine-tuned (no teacher parts).

    Raises:
        ValueError: no teacher and no merged student, an unknown kind, or a ``[model]``/``[job]`` combination that
            does not apply.
    """
    if not job.teacher:
        return fine_tuned_student(job, model), None, None
    teacher = Teacher.from_pretrained(job.teacher)
    tokenizer, transformer = teacher.tokenizer, teacher.transformer
    config = student_config_of(model, teacher, job.teacher)
    if job.kind != "student" and (config.lq_bit_skip or config.fidelity_path):
        raise ValueError("[model] lq_bit_skip and fidelity_path apply to [job] kind = 'student' only")
    if job.precleaner_init and config.precleaner is None:
        raise ValueError("[job] precleaner_init needs a [model.precleaner]")
    if job.lq_encoder_init and config.lq_encoder is None:
        raise ValueError("[job] lq_encoder_init needs a [model.lq_encoder]")
    kinds = {entry.name: entry.model_class for entry in families(trains="student").values()}  # varestorer.families
    if job.kind not in kinds:
        raise ValueError(f"[job] kind must be one of {', '.join(kinds)}, got {job.kind!r}")
    student = kinds[job.kind]().from_teacher(teacher, config)
    if job.precleaner_init:
        load_precleaner_init(student, job.precleaner_init)
    if job.lq_encoder_init:
        load_lq_encoder_init(student, job.lq_encoder_init)
    if job.init_from:
        previous = kinds[job.kind]().from_pretrained(job.init_from)
        own = student.state_dict()
        state = {k: v for k, v in previous.trainable_state_dict().items() if k in own}
        left = sorted(set(previous.trainable_state_dict()) - set(state))
        student.load_state_dict(state, strict=False)
        logger.info(
            "continued from %s (%d tensors; %d it has and this student has not)", job.init_from, len(state), len(left)
        )
    tokenizer.requires_grad_(False).eval()
    transformer.requires_grad_(False).eval()
    return student, tokenizer, transformer


def fine_tuned_student(job: JobConfig, model: dict[str, Any]) -> Student:
    """``[job] init_from`` a merged student (an embedded name such as ``default``, or an export) and no teacher: a
    student that starts as exactly it, with ``[model]``'s adapters at zero (``Student.from_merged``). ``[model]``
    overrides the merged student's own settings (its colour fix, ``predicted_scales``, what trains...); the
    shapes stay its own. No term may need a teacher (``kl``; ``gt_bits`` with the teacher's tokens).

    Raises:
        ValueError: as :func:`fine_tune_config`.
    """
    folder, config = fine_tune_config(job, model)
    student = Student.from_merged(Student.from_pretrained(folder), config)
    logger.info("fine-tuning the merged student %s without a teacher (it starts as exactly that model)", job.init_from)
    return student


def fine_tune_config(job: JobConfig, model: dict[str, Any]) -> tuple[Path, StudentConfig]:
    """The folder of ``[job] init_from`` and the StudentConfig of the student fine-tuned from it without a teacher,
    read from its ``config.json`` alone (``varestorer bench --train`` counts it without loading the weights).

    Raises:
        ValueError: no ``init_from``, an adapter checkpoint, another kind, or a ``*_init`` to start parts from.
    """
    if not job.init_from:
        raise ValueError(
            "[job] teacher must name a teacher folder (with tokenizer/ and transformer/), or [job] init_from a merged "
            "student (an embedded name such as 'default', or an export) to fine-tune it without one"
        )
    if job.kind != "student":
        raise ValueError(f"[job] kind {job.kind!r} is distilled from a teacher: set [job] teacher")
    if job.precleaner_init or job.lq_encoder_init:
        raise ValueError("[job] precleaner_init and lq_encoder_init need a teacher; a merged student brings its own")
    folder = embedded_folder(job.init_from) or Path(job.init_from)
    meta = read_config(folder)
    if meta.get("model_type") != Student.__name__:
        raise ValueError(f"[job] init_from {job.init_from} holds a {meta.get('model_type')}, not a merged Student")
    merged = config_from_dict(StudentConfig, meta["config"], where=f"{folder}/config.json")
    if not merged.merged:
        raise ValueError(f"[job] init_from {job.init_from} is an adapter checkpoint: name its teacher in [job] teacher")
    return folder, Student.fine_tune_config(student_config(model, merged), merged)


def student_config_of(model: dict[str, Any], teacher: Teacher, folder: str | Path) -> StudentConfig:
    """The StudentConfig of a ``[model]`` table distilled from ``teacher`` (saved in ``folder``)."""
    fields = teacher_fields(teacher.tokenizer, teacher.transformer, teacher.config.text_encoder, folder)
    return student_config(model, fields)


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


def skip_param_groups(module: nn.Module, student: Student, scale: float) -> list[dict[str, Any]] | None:
    """AdamW groups of ``module``'s trainable parameters: the student's skip gains and fidelity weights at
    ``scale`` x the learning rate, and the networks a loss term trains itself (the ``gan`` term's discriminator)
    in a group of their own, clipped apart from the model and without weight decay. None (the trainer's default
    groups) when there is neither such a network nor a scale other than 1 for the student's gains."""
    extras = [
        p for p in (getattr(student, "lq_bit_gain", None), getattr(student, "fidelity_weight", None)) if p is not None
    ]
    terms = getattr(module, "terms", {})
    own = [p for term in terms.values() for p in term.parameters() if p.requires_grad]
    if (scale == 1.0 or not extras) and not own:
        return None
    ids = {id(p) for p in [*extras, *own]}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in rest if p.ndim >= 2]},
        {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0},
        {"params": extras, "weight_decay": 0.0, "lr_scale": scale},
        {"params": own, "weight_decay": 0.0, "clip_apart": True},
    ]
    return [group for group in groups if group["params"]]


TEACHER_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def teacher_dtype(name: str) -> torch.dtype | None:
    """``[model] teacher_dtype`` -> a dtype (None for float32: the weights stay as loaded)."""
    if name not in TEACHER_DTYPES:
        raise ValueError(f"[model] teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}, got {name!r}")
    return None if name == "float32" else TEACHER_DTYPES[name]


def caption_cache(student: Student, job: JobConfig) -> CaptionCache | None:
    """A cache over the teacher's text encoder on ``job.text_encoder_device`` (None without an encoder)."""
    encoder = load_text_encoder(student.config.text_encoder, device=job.text_encoder_device)
    return None if encoder is None else CaptionCache(encoder)


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
    parsed = load_student_recipe(recipe, overrides)
    train, data, job = parsed.train, parsed.data, parsed.job
    if not data.train_dirs:
        raise ValueError(f"{recipe}: [data] train_dirs is empty")
    seed_everything(train.seed)
    student, tokenizer, transformer = build_student(job, parsed.model)
    module = StudentDistillation(
        student,
        tokenizer,
        transformer,
        build_loss_terms(parsed.loss, student),
        use_prompt=job.use_prompt,
        shared_teacher=job.shared_teacher,
        teacher_dtype=teacher_dtype(job.teacher_dtype),
        captions=caption_cache(student, job) if job.use_prompt else None,
        color_fix=job.loss_color_fix,
    )
    del tokenizer, transformer  # a shared-base teacher keeps no copy: let the loaded one go
    image_size = student.config.image_size
    hq = data.train_set(image_size, seed=train.seed, hflip=data.hflip)
    dataset = data.pair_set(hq, student.scale, seed=train.seed)

    validate = None
    if data.val_lq_dir and data.val_gt_dir:
        val_set = PairedFolderDataset(data.val_lq_dir, data.val_gt_dir)

        def validate(module: Any) -> dict[str, Any]:  # the job's module
            return validate_student(module.student, val_set, data.max_val_images)

    def export(module: Any, directory: Path) -> None:
        module.student.save_pretrained(directory)

    trainer = Trainer(
        train,
        module,
        resume=resume,
        validate=validate,
        export=export,
        recipe=parsed.as_dict(),
        param_groups=skip_param_groups(module, student, job.skip_lr_scale),
    )
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    logger.info(
        "distilling a %s-attention student (%.2fM trainable parameters) on %d images, %d process(es), device %s",
        student.config.attention,
        trainable / 1e6,
        len(hq.paths),  # images, not items: data.repeat multiplies those
        trainer.world_size,
        trainer.device,
    )
    trainer.fit(dataset)
    return 0


__all__ = ["StudentDistillation", "build_student", "main", "random_crop_pair"]
