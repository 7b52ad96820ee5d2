"""``TrainConfig`` (the ``[train]`` section every job shares) and the recipe loader.

A recipe is one TOML (or JSON) file with a fixed set of sections per job, e.g.::

    [train]   # TrainConfig: optimiser, schedule, precision, logging, checkpoints
    [data]    # the job's data config
    [model]   # the job's model config
    [loss]    # the job's loss config

Unknown sections and unknown keys are errors (strict :func:`varestorer.config.config_from_dict`).
Command-line overrides ``section.key=value`` are applied to the raw tables before validation; the
value is parsed as a TOML value when it can be (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``"x"``) and
kept as a bare string otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from varestorer.config import config_from_dict, read_config_tables
from varestorer.data.datasets import HQFolderDataset


@dataclass(frozen=True)
class PhotoFolderConfig:
    """The ``[data]`` keys of every job that trains on folders of high-quality photos (its DataConfig's base)."""

    train_dirs: tuple[str, ...] = ()
    """Folders (searched recursively), files or globs of high-quality training images (+ optional
    ``stem.txt`` captions)."""
    repeat: int = 1
    """Each training image appears this many times per epoch (own crop each time): fewer epoch ends,
    and so fewer DataLoader worker restarts, for small folders."""

    def train_set(self, crop_size: int, *, seed: int, hflip: bool = True) -> HQFolderDataset:
        """The random-crop training dataset over ``train_dirs``."""
        return HQFolderDataset(self.train_dirs, crop_size=crop_size, hflip=hflip, seed=seed, repeat=self.repeat)


@dataclass(frozen=True)
class TrainConfig:
    """Everything the shared Trainer needs; model, data and loss settings live in the job's sections."""

    output_dir: str = "runs/train"
    """Folder for ``checkpoints/``, ``tensorboard/`` and the exported model."""
    max_steps: int = 1000
    """Number of optimiser steps (one step = ``grad_accum_steps`` micro-batches on every process)."""
    time_budget_minutes: float | None = None
    """Also stop once this much training time is spent (summed over resumed runs; validation and
    checkpoints count too). The cosine schedule then follows the larger of the step and time fractions,
    so the learning rate has decayed when the budget ends: for a rented GPU of unknown speed."""
    batch_size: int = 8
    """Micro-batch size per process. Effective batch = batch_size * grad_accum_steps * world size."""
    learning_rate: float = 1e-4
    """Peak learning rate (reached after the warm-up)."""
    min_learning_rate_ratio: float = 0.1
    """The cosine schedule ends at learning_rate * this ratio."""
    weight_decay: float = 0.0
    """AdamW weight decay (decoupled)."""
    no_decay_norms_and_biases: bool = True
    """Put 1-D parameters (norm gains, biases) into a parameter group without weight decay."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``learning_rate`` over this many steps."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate shape after the warm-up."""
    grad_clip: float | None = 1.0
    """Clip the global gradient L2 norm to this value; None disables clipping."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast dtype for forward passes; fp16 adds a GradScaler. Weights stay float32."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the trainable weights (e.g. 0.999); None disables it."""
    log_every: int = 10
    """Write scalars to TensorBoard every this many steps."""
    val_every: int = 0
    """Run the job's validation every this many steps (0 = only at the end)."""
    ckpt_every: int = 500
    """Save a resumable checkpoint every this many steps (and always at the end)."""
    keep_last: int = 3
    """Keep only this many most recent checkpoints (0 keeps all)."""
    seed: int = 0
    """Seeds model initialisation, data order, augmentation and every other random draw."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    device: str | None = None
    """``cuda``, ``cuda:1``, ``cpu``; None picks CUDA when available. Under torchrun, ``cuda:LOCAL_RANK``."""
    cpu_threads: int | None = None
    """``torch.set_num_threads`` for CPU runs; None leaves the default."""
    tensorboard: bool = True
    """Write TensorBoard event files (needs the ``tensorboard`` package)."""
    progress: bool = True
    """Show a tqdm progress bar on rank 0."""
    sharding: Literal["ddp", "fsdp", "fsdp_grad_op"] = "ddp"
    """Several processes: ``ddp`` keeps a full copy of the model on each; ``fsdp`` shards every frozen
    weight across the processes with PyTorch's FSDP2 (``fully_shard`` per transformer block, gathered one
    block at a time, ZeRO-3 style); ``fsdp_grad_op`` keeps a block's gathered weights from the forward
    to the backward (less communication, more memory). Trainable tensors stay whole on every process
    (their gradients are averaged), so checkpoints resume on any number of processes."""
    activation_checkpointing: bool = False
    """Recompute every transformer block's activations in the backward pass instead of storing them
    (less memory, about one more forward pass of time); same losses and gradients."""
    conv_checkpointing: bool = False
    """Also recompute the tokenizer encoder's and decoder's blocks in the backward (training/conv_checkpointing.py):
    at 512 px most of what a step saves once the transformer blocks are checkpointed; same losses and
    gradients, about one more forward of the encoder and decoder of time."""
    frozen_weights_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage of the frozen linear and conv weights (training/frozen_precision.py). ``bfloat16`` (with
    ``mixed_precision = "bf16"``, whose autocast casts them to bf16 at every call anyway) halves the frozen
    base; same losses and gradients to bf16 rounding. Not with ``sharding = "fsdp"``/``"fsdp_grad_op"``."""

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps", "log_every", "ckpt_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_every", "keep_last", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.sharding not in ("ddp", "fsdp", "fsdp_grad_op"):
            raise ValueError(f"train.sharding must be ddp, fsdp or fsdp_grad_op, got {self.sharding!r}")
        if self.frozen_weights_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"train.frozen_weights_dtype must be float32 or bfloat16, got {self.frozen_weights_dtype!r}"
            )
        if self.frozen_weights_dtype == "bfloat16" and self.mixed_precision != "bf16":
            raise ValueError('train.frozen_weights_dtype = "bfloat16" needs train.mixed_precision = "bf16"')
        if self.frozen_weights_dtype == "bfloat16" and self.sharding != "ddp":
            raise ValueError('train.frozen_weights_dtype = "bfloat16" is not supported with FSDP sharding')
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError(f"train.time_budget_minutes must be > 0 or unset, got {self.time_budget_minutes}")
        if self.learning_rate <= 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_learning_rate_ratio <= 1:
            raise ValueError(f"train.min_learning_rate_ratio must be in [0, 1], got {self.min_learning_rate_ratio}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in (0, 1) or unset, got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"train.grad_clip must be > 0 or unset, got {self.grad_clip}")


def read_recipe_tables(path: Path) -> dict[str, Any]:
    """The raw tables of a ``.toml`` or ``.json`` recipe file (one-line, path-prefixed errors)."""
    return read_config_tables(path, what="recipe")


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into (section, key, value); the value is parsed as TOML when possible."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except ValueError:
        value = raw.strip()
    return section, key.strip(), value


def load_recipe(
    path: str | Path, sections: dict[str, type], overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a recipe into one config dataclass per section.

    Args:
        path: a ``.toml`` or ``.json`` recipe.
        sections: section name -> config dataclass; a section absent from the file gets its defaults.
        overrides: ``section.key=value`` strings applied before validation.

    Returns:
        section name -> config instance.

    Raises:
        FileNotFoundError: no such recipe.
        ValueError: unknown section or key, wrong type, or a malformed override.
    """
    path = Path(path)
    tables = read_recipe_tables(path)
    unknown = sorted(set(tables) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; valid: {', '.join(sections)}")
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in sections:
            raise ValueError(f"override {text!r}: unknown section {section!r}; valid: {', '.join(sections)}")
        table = tables.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{section}] is not a table")
        table[key] = value
    out: dict[str, Any] = {}
    for name, cls in sections.items():
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] is not a table")
        out[name] = config_from_dict(cls, table, where=f"{path.name}[{name}]")
    return out
