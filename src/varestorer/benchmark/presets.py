"""What ``varestorer bench`` can measure: named student shapes with random weights, or a checkpoint folder.

Speed does not depend on the weights' values, so a preset (tokenizer preset + transformer preset,
random initialisation, LoRA folded in as a deployed student has it) is a valid benchmark target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from varestorer.archs.registry import PEER_ARCHS
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.tokenizer.scales import Schedule, infinity_schedule, schedule_for_grid
from varestorer.transformer.config import transformer_preset


@dataclass(frozen=True)
class BenchPreset:
    """A student shape to benchmark with random weights."""

    tokenizer: str
    """``TOKENIZER_PRESETS`` name."""
    transformer: str
    """``TRANSFORMER_PRESETS`` name."""
    schedule: Literal["tokenizer", "infinity"] = "tokenizer"
    """Default schedule for a size: the tokenizer's ``schedule_for_grid`` or Infinity's template (pn from size)."""
    size: int = 512
    """Default HQ size in px (the LQ is ``size / 4``)."""


BENCH_PRESETS: dict[str, BenchPreset] = {
    # Unit tests: milliseconds.
    "tiny": BenchPreset("tiny", "tiny", size=64),
    # The embedded CPU default.
    "small": BenchPreset("small", "small"),
    # Infinity-shaped students (research/infinity_var.md §2): the 2B is the paper's.
    "infinity-125m": BenchPreset("infinity-d32", "infinity-125m", schedule="infinity"),
    "infinity-2b": BenchPreset("infinity-d32", "infinity-2b", schedule="infinity"),
}
"""Named benchmark targets (random weights)."""


def parse_schedule(text: str) -> Schedule:
    """``"1,2,4,8,16,32"`` (square sides) or ``"1x1,2x2,3x4"`` (h x w) -> a schedule."""
    grids = []
    for item in text.replace(" ", "").split(","):
        parts = item.lower().split("x")
        if not item or len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"bad schedule {text!r}: expected sides like 1,2,4,8 or grids like 1x1,2x3")
        grids.append((int(parts[0]), int(parts[-1])))
    return tuple(grids)


def preset_schedule(preset: BenchPreset, size: int) -> Schedule:
    """The preset's default schedule for a ``size`` x ``size`` HQ image."""
    stride = tokenizer_preset(preset.tokenizer).stride
    if preset.schedule == "infinity":
        return infinity_schedule(size, size)
    return schedule_for_grid(size // stride, size // stride)


def build_student(
    model: str,
    *,
    size: int | None = None,
    schedule: Schedule | None = None,
    precleaner: bool = False,
    device: torch.device | str = "cpu",
) -> Student:
    """A student in eval mode on ``device``, LoRA merged.

    Args:
        model: a ``BENCH_PRESETS`` name (random weights), an embedded model name (``default``) or a
            student checkpoint folder.
        size: HQ size in px (presets: default ``preset.size``; checkpoints: must match their own size).
        schedule: override the token schedule (must end at the latent grid of ``size``).
        precleaner: presets only: add the ``precleaner-1x`` pre-cleaner.
        device: weights are initialised directly there (fast for the 2B on a GPU).
    """
    device = torch.device(device)
    if model in BENCH_PRESETS:
        preset = BENCH_PRESETS[model]
        size = preset.size if size is None else size
        config = StudentConfig(
            tokenizer=tokenizer_preset(preset.tokenizer),
            transformer=transformer_preset(preset.transformer),
            image_size=size,
            schedule=schedule or preset_schedule(preset, size),
            lora_rank=0,
            merged=True,
            precleaner=PEER_ARCHS["precleaner-1x"][1] if precleaner else None,
        )
        with torch.device(device):
            student = Student(config)
        return student.eval()
    from varestorer.inference.restorer import EMBEDDED_MODELS, model_path

    path = model_path(model) if model in EMBEDDED_MODELS else Path(model)  # "default": the shipped model
    if not path.is_dir():
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(BENCH_PRESETS)}), an embedded model "
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
