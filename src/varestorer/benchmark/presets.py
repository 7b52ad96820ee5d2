"""What ``varestorer bench`` can measure: a student preset with random weights, or a checkpoint folder.

Speed does not depend on the weights' values, so a preset of the student family (``varestorer.families``:
``STUDENT_PRESETS``, random initialisation, LoRA folded in as a deployed student has it) is a valid
benchmark target.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from varestorer.families import family
from varestorer.foreign.peers import peer_presets
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.tokenizer.scales import Schedule, infinity_schedule, schedule_for_grid


def bench_presets() -> dict[str, StudentConfig]:
    """Named benchmark targets (random weights): the presets of the student family."""
    presets: dict[str, Any] = family("Student").preset_table()
    return presets


def parse_schedule(text: str) -> Schedule:
    """``"1,2,4,8,16,32"`` (square sides) or ``"1x1,2x2,3x4"`` (h x w) -> a schedule."""
    grids = []
    for item in text.replace(" ", "").split(","):
        parts = item.lower().split("x")
        if not item or len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"bad schedule {text!r}: expected sides like 1,2,4,8 or grids like 1x1,2x3")
        grids.append((int(parts[0]), int(parts[-1])))
    return tuple(grids)


def preset_schedule(preset: StudentConfig, size: int) -> Schedule:
    """The preset's schedule for a ``size`` x ``size`` HQ image.

    A preset that fixes Infinity's scale template (``infinity_schedule``) keeps that template at any size;
    the others use the tokenizer's ``schedule_for_grid`` (their fixed schedule only at their own size).
    """
    square = (preset.image_size, preset.image_size)
    if preset.schedule is not None and tuple(preset.schedule) == infinity_schedule(*square):
        return infinity_schedule(size, size)
    if preset.schedule is not None and size == preset.image_size:
        return tuple(preset.schedule)
    stride = preset.tokenizer.stride
    return schedule_for_grid(size // stride, size // stride)


def bench_student(
    model: str,
    *,
    size: int | None = None,
    schedule: Schedule | None = None,
    precleaner: bool = False,
    device: torch.device | str = "cpu",
) -> Student:
    """A student in eval mode on ``device``, LoRA merged.

    Args:
        model: a :func:`bench_presets` name (random weights), an embedded model name (``default``) or a
            student checkpoint folder.
        size: HQ size in px (presets: default ``preset.image_size``; checkpoints: must match their own size).
        schedule: override the token schedule (must end at the latent grid of ``size``).
        precleaner: presets only: add the ``precleaner-1x`` pre-cleaner.
        device: weights are initialised directly there (fast for the 2B on a GPU).
    """
    device = torch.device(device)
    presets = bench_presets()
    if model in presets:
        preset = presets[model]
        size = preset.image_size if size is None else size
        config = replace(
            preset,
            image_size=size,
            schedule=schedule or preset_schedule(preset, size),
            lora_rank=0,
            merged=True,
            precleaner=peer_presets()["precleaner-1x"][1] if precleaner else None,
        )
        with torch.device(device):
            student = Student(config)
        return student.eval()
    from varestorer.families import EMBEDDED_MODELS, embedded_folder

    path = embedded_folder(model) or Path(model)  # "default": the shipped model
    if not path.is_dir():
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(presets)}), an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}) nor a checkpoint folder"
        )
    student = Student.from_pretrained(path, device=device)
    if size is not None and size != student.config.image_size:
        raise ValueError(f"{path} works at {student.config.image_size} px, not {size}")
    if precleaner and student.precleaner is None:
        raise ValueError(f"{path} has no pre-cleaner")
    if not student.config.merged and student.config.lora_rank > 0:
        student = student.merged()
    if schedule is not None:
        config = replace(student.config, schedule=schedule)
        rebuilt = Student(config)
        rebuilt.load_state_dict(student.state_dict())
        student = rebuilt
    return student.to(device).eval()
