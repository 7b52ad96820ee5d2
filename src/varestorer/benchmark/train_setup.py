"""One distillation step to predict or measure: a student config, its loss terms and the training knobs.

The memory model (benchmark/memory_model.py) and ``varestorer bench --train`` (benchmark/train_bench.py) both
take a :class:`DistillSetup` and build from it the training module a run would train,
``StudentDistillation`` with its loss terms (training/distillation.py), with random weights: on the meta
device to count and trace it, on a real device to time it. A setup comes from a preset (with ``[model]``
overrides, as a recipe's table) or from a ``train student`` recipe on a preset's teacher shapes, or on the shapes
of the merged student a recipe without a teacher fine-tunes (``[job] init_from``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from varestorer.archs.srvgg import SRVGG_PRESETS
from varestorer.benchmark.presets import bench_presets, preset_schedule
from varestorer.config import config_to_dict
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.tokenizer.loading import build_tokenizer
from varestorer.training.config import TrainConfig
from varestorer.training.distillation import StudentDistillation
from varestorer.training.loss_terms import LOSS_TERMS, CropOffsets, LossTerm, LossTermConfig, build_loss_terms
from varestorer.training.student_recipe import PAPER_LOSS, TEACHER_FIELDS, StudentRecipe, student_config
from varestorer.training.train_student import fine_tune_config, teacher_dtype
from varestorer.transformer.model import NextScaleTransformer

COMPUTE_DTYPES: dict[str, torch.dtype] = {"no": torch.float32, "bf16": torch.bfloat16}
"""``train.mixed_precision`` values the memory model and the bench support -> the autocast dtype."""

PAPER_TERMS: tuple[LossTermConfig, ...] = tuple(
    LossTermConfig(name, entry["weight"], {k: v for k, v in entry.items() if k != "weight"})
    for name, entry in PAPER_LOSS.items()
)


@dataclass(frozen=True)
class DistillSetup:
    """What one distillation step holds and computes (the ``varestorer bench --train`` options)."""

    student: StudentConfig
    """The student trained (its teacher's shapes are its tokenizer and transformer)."""
    loss: tuple[LossTermConfig, ...] = PAPER_TERMS
    """The loss terms, as a recipe's ``[loss]`` table gives them."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=1))
    """The knobs read: ``batch_size`` (per process), ``mixed_precision`` (no or bf16), ``activation_checkpointing``,
    ``sharding`` and ``ema_decay`` (set: an EMA copy of the trainable weights)."""
    shared_teacher: bool = True
    """``[job] shared_teacher``: the teacher pass runs on the student's own base."""
    teacher_dtype: str = "float32"
    """``[job] teacher_dtype`` of a separate teacher transformer."""
    world_size: int = 1
    """Processes (torchrun's); a measured run is one."""
    name: str = ""
    """A label for reports (the preset, or the merged student a teacher-free recipe starts from)."""
    with_teacher: bool = True
    """False: a merged student fine-tuned without its teacher (``[job] teacher = ""``): no teacher pass."""

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.train.mixed_precision not in COMPUTE_DTYPES:
            precision = self.train.mixed_precision
            raise ValueError(f"the memory model supports mixed_precision no or bf16, got {precision!r}")
        teacher_dtype(self.teacher_dtype)  # validates

    @property
    def compute_dtype(self) -> torch.dtype:
        return COMPUTE_DTYPES[self.train.mixed_precision]


RECIPE_PRECLEANER: dict[str, Any] = config_to_dict(SRVGG_PRESETS["precleaner-1x"])
"""The pre-cleaner of ``recipes/student_small.toml`` and ``student_infinity_2b.toml`` (a preset has none)."""


def preset_student(name: str, model: dict[str, Any] | None = None) -> StudentConfig:
    """A ``[model]`` table (as a recipe's) over the teacher of the ``bench_presets()`` student ``name``: its
    tokenizer and transformer, its working size unless the table sets one, and its schedule at that size.

    Raises:
        ValueError: unknown preset, or a bad ``[model]`` key or value.
    """
    presets = bench_presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
    preset, model = presets[name], model or {}
    size = int(model.get("image_size") or preset.image_size)
    schedule = [list(grid) for grid in preset_schedule(preset, size)]
    teacher = {k: v for k, v in config_to_dict(preset).items() if k in TEACHER_FIELDS}
    return student_config({"image_size": size, "schedule": schedule, **model}, teacher)


def recipe_setup(recipe: StudentRecipe, preset: str | None, *, world_size: int = 1) -> DistillSetup:
    """The step of a ``train student`` recipe (:func:`~varestorer.training.student_recipe.parse_student_recipe`):
    with the teacher of the preset ``preset`` (a recipe's teacher folder is not needed), or, for a recipe without
    a teacher and with ``[job] init_from`` (a merged student), on that student's shapes read from its
    ``config.json``.

    Raises:
        ValueError: a teacher-free recipe with a preset, or a recipe with a teacher and none.
    """
    job = recipe.job
    if not job.teacher and job.init_from:
        if preset is not None:
            raise ValueError(
                f"the recipe has no teacher: its student is [job] init_from's ({job.init_from}); leave out --model"
            )
        _, config = fine_tune_config(job, recipe.model)
        student, name, with_teacher = config, str(job.init_from), False
    elif preset is None:
        raise ValueError(
            "the recipe's student takes a preset's teacher shapes: give --model (e.g. tiny, small), or set "
            "[job] init_from to a merged student to fine-tune it without a teacher"
        )
    else:
        student, name, with_teacher = preset_student(preset, recipe.model), preset, True
    return DistillSetup(
        student=student,
        loss=recipe.loss,
        train=recipe.train,
        shared_teacher=job.shared_teacher,
        teacher_dtype=job.teacher_dtype,
        world_size=world_size,
        name=name,
        with_teacher=with_teacher,
    )


def fixed_offsets(rows: int, columns: int) -> tuple[int, int]:
    """Crops at the top-left corner (where a crop sits changes no shape)."""
    return 0, 0


def build_distillation(
    setup: DistillSetup,
    device: torch.device | str = "cpu",
    *,
    registry: dict[str, type[LossTerm]] = LOSS_TERMS,
    crop_offsets: CropOffsets | None = None,
) -> StudentDistillation:
    """The training module of ``setup`` with random weights (teacher and loss networks too), on ``device``
    (``meta``: shapes only). No captions (the bench's batches have none)."""
    config = setup.student
    tokenizer: Any = None
    transformer: NextScaleTransformer | None = None
    with torch.device(device):
        if setup.with_teacher:
            tokenizer = build_tokenizer(config.tokenizer_type, config.tokenizer)
            transformer = NextScaleTransformer(config.transformer)
            student = Student.from_teacher(Teacher(tokenizer, transformer), config)
            tokenizer.requires_grad_(False).eval()
            transformer.requires_grad_(False).eval()
        else:  # a merged student fine-tuned without its teacher: its weights are the frozen base
            student = Student(config)
        terms = build_loss_terms(setup.loss, student, pretrained=False, registry=registry)
    extra: dict[str, Any] = {} if crop_offsets is None else {"crop_offsets": crop_offsets}
    return StudentDistillation(
        student,
        tokenizer,
        transformer,
        terms,
        use_prompt=False,
        shared_teacher=setup.shared_teacher,
        teacher_dtype=teacher_dtype(setup.teacher_dtype),
        **extra,
    )
