"""Student-shaped checkpoints: the trainable tensors plus a reference to the teacher folder, or every tensor
once merged (``Student`` and the ``no_distill`` ablation ``LQConditionedVAR`` share this format).

A student-shaped model has a ``StudentConfig`` as ``config``, ``trainable_state_dict()``, and (unless merged)
``from_teacher(teacher, config)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from varestorer.build_limits import build_within_limits
from varestorer.checkpoint import (
    StorageDtype,
    buffer_names,
    load_weights,
    read_config,
    save_pretrained,
)
from varestorer.config import config_from_dict
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher

M = TypeVar("M", bound=nn.Module)


def save_adapter_checkpoint(
    model: Any,
    directory: str | Path,
    *,
    overwrite: bool = False,
    dtype: StorageDtype = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a student-shaped model (``config``, ``trainable_state_dict()``): its trainable tensors and the
    teacher reference, or every tensor once ``config.merged`` or without a teacher (a student fine-tuned from a
    merged one, ``Student.from_merged``); ``dtype`` converts floating-point tensors (``"int8"`` quantises weight
    matrices, never buffers)."""
    whole = model.config.merged or model.config.teacher is None
    state = model.state_dict() if whole else model.trainable_state_dict()
    return save_pretrained(
        directory,
        type(model).__name__,
        model.config,
        state,
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes,
        dtype=dtype,
        keep_float=buffer_names(model),
    )


class AdapterCheckpointMixin:
    """``save_pretrained`` in the student-shaped format, for every model that writes it (``Student``,
    ``LQConditionedVAR``); each keeps its own ``from_pretrained`` (they differ in the legacy keys they remap)."""

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        overwrite: bool = False,
        dtype: StorageDtype = None,
        max_shard_bytes: int | None = None,
    ) -> Path:
        """Adapters + encoder (+ pre-cleaner) and the teacher reference; merged exports store everything.

        ``dtype`` stores floating-point tensors in another precision (e.g. float16 to halve the size, or
        ``"int8"``: weight matrices as int8 with per-channel scales, see :mod:`varestorer.storage`);
        loading copies them back into the float32 model. ``max_shard_bytes`` splits the weights into
        Hugging Face shards no bigger than that (see :func:`varestorer.checkpoint.save_pretrained`).
        """
        return save_adapter_checkpoint(
            self, directory, overwrite=overwrite, dtype=dtype, max_shard_bytes=max_shard_bytes
        )


def load_adapter_checkpoint(
    cls: type[M],
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    remap: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> M:
    """Rebuild what :func:`save_adapter_checkpoint` wrote: merged checkpoints and those without a teacher (fine-tuned
    from a merged student) strictly from their own tensors, adapter checkpoints from
    ``Teacher.from_pretrained(config.teacher)`` plus their trainable tensors (exactly those, else ``ValueError``).
    ``remap`` renames the keys of older layouts."""
    directory = Path(directory)
    meta = read_config(directory)
    if meta["model_type"] != cls.__name__:
        raise ValueError(f"{directory} holds a {meta['model_type']}, not a {cls.__name__}")
    config = config_from_dict(StudentConfig, meta["config"])
    state = load_weights(directory)
    state = remap(state) if remap is not None else state
    if config.merged or config.teacher is None:
        model: Any = build_within_limits(lambda: cls(config), directory, state=state)  # type: ignore[call-arg]
        missing = sorted(set(model.state_dict()) - set(state))
        if missing and not config.merged:
            raise ValueError(
                f"{directory}: an adapter checkpoint without a teacher path must hold every tensor; "
                f"missing {missing[:4]}"
            )
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()
    teacher = Path(config.teacher)
    teacher = teacher if teacher.is_absolute() else directory / teacher
    model = cls.from_teacher(Teacher.from_pretrained(teacher), config)  # type: ignore[attr-defined]
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{directory}: adapter checkpoint mismatch; missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()
