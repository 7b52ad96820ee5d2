"""The shared Trainer: device, data-parallel, AdamW, LR schedule, AMP, accumulation, EMA, logs, checkpoints.

Every ``varestorer train ...`` job is one file that builds a *training module* (an ``nn.Module``
whose ``forward(batch, step)`` returns ``(loss, logs)``; it holds the model, any frozen teacher or
discriminator, and the loss) and a dataset, then runs this loop::

    seed_everything(cfg.seed)                       # identical initialisation on every process
    module = MyTrainingModule(...)
    trainer = Trainer(cfg, module, resume=resume, validate=validate_fn, export=export_fn)
    loader = trainer.make_loader(dataset)
    for batch in trainer.batches(loader):          # micro-batches on the device, until max_steps
        with trainer.autocast():
            loss, logs = trainer.model(batch, trainer.step)
        trainer.backward_step(loss, logs)           # backward; optimiser step every grad_accum_steps
    trainer.close()                                 # final checkpoint + export, closes the logs

``trainer.fit(dataset)`` is exactly that loop; every job in this package uses it.

Optional ``param_groups`` (``{"params", "lr_scale", "weight_decay"}`` dicts) replace the default
AdamW groups, e.g. a smaller learning rate for a fine-tuned encoder than for LoRA adapters.
``trainer.model`` is the DDP-wrapped module (call it for the forward so gradients are averaged);
``trainer.module`` is the plain one. ``validate(module) -> {name: float | (B,3,H,W) image in [0,1]}``
runs on rank 0 with EMA weights every ``val_every`` steps and at the end; ``export(module, dir)``
writes a loadable model into each checkpoint (``checkpoints/step_X/model``) and ``output_dir/model``.

Data-parallel: launch the same command with ``torchrun --nproc_per_node N``; the trainer reads
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and uses gloo on CPU, NCCL on CUDA. This file is the only
one in the package that touches ``torch.distributed``. ``train.sharding = "fsdp"`` replaces DDP by
FSDP2 over the frozen weights (:func:`shard_frozen_weights`); the trainable tensors stay whole and
their gradients are averaged here, so checkpoints are the same as under DDP. Under sharding every
process runs the validation (the weights are gathered collectively). ``train.activation_checkpointing``
switches on per-block recomputation in every submodule that offers it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from varestorer.config import config_to_dict
from varestorer.io.atomic import disk_full_error, is_disk_full
from varestorer.training import checkpoints as ckpt
from varestorer.training.config import TrainConfig
from varestorer.training.conv_checkpointing import enable_conv_checkpointing
from varestorer.training.ema import ExponentialMovingAverage
from varestorer.training.frozen_precision import store_frozen_weights
from varestorer.training.loader import ResumableDistributedSampler, epoch_seed, make_loader, move_to
from varestorer.training.optim import build_param_groups, learning_rate_at

logger = logging.getLogger(__name__)

ValidateFn = Callable[[nn.Module], dict[str, Any]]
ExportFn = Callable[[nn.Module, Path], None]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str | None, local_rank: int | None = None) -> torch.device:
    """CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU; ``name`` overrides."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def image_grid(images_B3HW: torch.Tensor, columns: int = 4, pad: int = 2) -> torch.Tensor:
    """Tile images in [0, 1] into one (3, H', W') grid with ``pad`` pixels of white between them."""
    images = images_B3HW.detach().float().clamp(0, 1).cpu()
    count, channels, height, width = images.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    grid = torch.ones(channels, rows * (height + pad) + pad, columns * (width + pad) + pad)
    for index in range(count):
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid


def shard_frozen_weights(module: nn.Module, *, reshard_after_forward: bool = True) -> int:
    """FSDP2 over ``module``'s frozen weights: one ``fully_shard`` unit per transformer block (any submodule
    with a ``block_list()``), then the rest; trainable parameters are left out (``ignored_params``) and stay
    whole on every process. Returns the number of units. Needs an initialised process group."""
    from torch.distributed.fsdp import fully_shard

    trainable = {p for p in module.parameters() if p.requires_grad}
    listers: list[Any] = [getattr(m, "block_list", None) for m in module.modules()]
    blocks: list[nn.Module] = [block for lister in listers if callable(lister) for block in lister()]
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, ignored_params=trainable)
    fully_shard(module, reshard_after_forward=reshard_after_forward, ignored_params=trainable)
    return len(blocks) + 1


def _average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """All-reduce (mean) the gradients of replicated parameters in one flat buffer (what DDP does)."""
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for param in params:
        count = param.numel()
        param.grad.copy_(flat[offset : offset + count].view_as(param))  # type: ignore[union-attr]
        offset += count


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Switch on per-block activation checkpointing in every submodule that offers it (an
    ``activation_checkpointing`` attribute, e.g. ``NextScaleTransformer``); returns how many."""
    found = [m for m in module.modules() if isinstance(getattr(m, "activation_checkpointing", None), bool)]
    if not found:
        raise ValueError("train.activation_checkpointing is on but this job's model has no checkpointable blocks")
    for submodule in found:
        setattr(submodule, "activation_checkpointing", True)  # noqa: B010  # a plain attribute, not a tensor
    return len(found)


class Trainer:
    """Owns everything about a training run except the model, data and loss (see the module docstring)."""

    def __init__(
        self,
        config: TrainConfig,
        module: nn.Module,
        *,
        resume: bool = False,
        validate: ValidateFn | None = None,
        export: ExportFn | None = None,
        recipe: dict[str, Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self._spent_before = 0.0  # training seconds of earlier (resumed) runs
        self._run_start = time.perf_counter()
        self.validate_fn, self.export_fn = validate, export
        self.recipe = recipe or {"train": config_to_dict(config)}
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":  # fixed crop sizes: let cuDNN pick kernels; TF32 for float32 matmuls
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self._owns_process_group = False
        if self.world_size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self._owns_process_group = True
        self.is_main = self.rank == 0
        if config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"

        self.module = module.to(self.device).train()
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.module)
        if config.conv_checkpointing and enable_conv_checkpointing(self.module) == 0:
            raise ValueError("train.conv_checkpointing is on but this job's model has no tokenizer blocks")
        if config.frozen_weights_dtype != "float32":
            store_frozen_weights(self.module, getattr(torch, config.frozen_weights_dtype))
        self.model: nn.Module = self.module
        self.sharded = self.world_size > 1 and config.sharding != "ddp"
        if self.sharded:
            shard_frozen_weights(self.module, reshard_after_forward=config.sharding == "fsdp")
        elif self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
        groups, self._lr_scales = build_param_groups(self.module, config, param_groups)
        # foreach: PyTorch defaults to the per-tensor loop on CPU, 14% of a CPU teacher step here.
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, foreach=True)
        self._set_learning_rate(0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision == "fp16")
        self.ema = ExponentialMovingAverage(self.module, config.ema_decay) if config.ema_decay else None
        self.step = 0  # completed optimiser steps
        self._epoch, self._batch_in_epoch, self._micro = 0, 0, 0
        self._logs: dict[str, float] = {}
        self._log_count = 0
        self._last_saved = self._last_validated = -1
        self._writer: Any = None
        self._bar: Any = None
        self._clock, self._clock_step = time.perf_counter(), 0  # for steps_per_second

        existing = ckpt.find_latest(self.checkpoint_root)
        if existing is not None and not resume:
            raise FileExistsError(f"{self.output_dir} already holds checkpoints; pass --resume or a new output_dir")
        if existing is not None:
            self._load(existing)
        elif resume:
            logger.info("no checkpoint under %s: starting from scratch", self.checkpoint_root)
        self._run_start = time.perf_counter()
        # Different streams per process for augmentation/noise; restored states win on resume.
        if existing is None:
            seed_everything(config.seed + 1 + self.rank)
        self.optimizer.zero_grad(set_to_none=True)

    # ----- data -------------------------------------------------------------------------------
    def make_loader(
        self, dataset: Dataset, *, batch_size: int | None = None, collate_fn: Callable | None = None
    ) -> DataLoader:
        """A shuffled, sharded, resumable loader of ``batch_size`` (default ``config.batch_size``) per process."""
        return make_loader(
            dataset,
            batch_size=batch_size or self.config.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.config.seed,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_fn,
        )

    def batches(self, loader: DataLoader) -> Iterator[Any]:
        """Yield device micro-batches, epoch after epoch, until ``max_steps`` optimiser steps are done."""
        sampler = loader.sampler
        if not isinstance(sampler, ResumableDistributedSampler):
            raise ValueError("use Trainer.make_loader: the loader needs a ResumableDistributedSampler")
        if self.is_main and self.config.progress and self._bar is None:
            from tqdm.auto import tqdm

            total = None if self.config.time_budget_minutes else self.config.max_steps  # a budget: no step total
            self._bar = tqdm(total=total, initial=self.step, desc="train", dynamic_ncols=True)
        while not self.finished:
            sampler.set_epoch(self._epoch)
            if callable(getattr(loader.dataset, "set_epoch", None)):
                loader.dataset.set_epoch(self._epoch)  # type: ignore[attr-defined]  # seeded augmentation
            sampler.skip = self._batch_in_epoch * (loader.batch_size or 1)
            if loader.generator is not None:
                loader.generator.manual_seed(epoch_seed(self.config.seed, self.rank, self._epoch))
            for batch in loader:
                self._batch_in_epoch += 1
                last_micro = self._micro == self.config.grad_accum_steps - 1
                sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
                if isinstance(self.model, DistributedDataParallel) and not last_micro:
                    sync = self.model.no_sync()  # all-reduce only on the last micro-batch
                with sync:
                    yield move_to(batch, self.device)
                if self._micro == 0 and self.finished:
                    return
            self._epoch, self._batch_in_epoch = self._epoch + 1, 0

    @property
    def time_spent(self) -> float:
        """Seconds of training so far, earlier resumed runs included."""
        return self._spent_before + time.perf_counter() - self._run_start

    @property
    def finished(self) -> bool:
        """``max_steps`` done or ``time_budget_minutes`` spent."""
        budget = self.config.time_budget_minutes
        if self.step >= self.config.max_steps:
            return True
        if budget is None:
            return False
        done = self.time_spent >= budget * 60
        if self.world_size > 1:  # every process must stop at the same step
            flag = torch.tensor(float(done), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done = bool(flag.item())
        return done

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op when ``mixed_precision = "no"``)."""
        if self.config.mixed_precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ----- optimisation -----------------------------------------------------------------------
    def backward_step(self, loss: torch.Tensor, logs: dict[str, Any] | None = None) -> bool:
        """Backward one micro-batch; every ``grad_accum_steps`` calls, clip and step. True if a step ran."""
        if not torch.isfinite(loss.detach()):
            raise ValueError(f"non-finite loss {loss.item()} at step {self.step}")
        self.scaler.scale(loss / self.config.grad_accum_steps).backward()
        for key, value in {"loss": loss, **(logs or {})}.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self._logs[key] = self._logs.get(key, 0.0) + value
        self._log_count += 1
        self._micro += 1
        if self._micro < self.config.grad_accum_steps:
            return False
        self._micro = 0
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.sharded:
            _average_gradients(params, self.world_size)
        self.scaler.unscale_(self.optimizer)
        limit = self.config.grad_clip or float("inf")
        groups = self.optimizer.param_groups
        for group in groups:  # a discriminator's gradients do not scale the model's down
            if group.get("clip_apart", False):
                torch.nn.utils.clip_grad_norm_(group["params"], limit)
        norm = torch.nn.utils.clip_grad_norm_(
            [p for group in groups if not group.get("clip_apart", False) for p in group["params"]], limit
        )
        self._logs["grad_norm"] = self._logs.get("grad_norm", 0.0) + float(norm) * self.config.grad_accum_steps
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._set_learning_rate(min(self.step, self.config.max_steps - 1))
        if self.ema is not None:
            self.ema.update(self.module)
        if self._bar is not None:
            self._bar.update(1)
        if self.step % self.config.log_every == 0 or self.step == self.config.max_steps:
            self._flush_logs()
        if self.validate_fn is not None and self.config.val_every and self.step % self.config.val_every == 0:
            self.run_validation()
        if self.step % self.config.ckpt_every == 0 or self.step == self.config.max_steps:
            self.save()
        return True

    def _set_learning_rate(self, step: int) -> None:
        budget = self.config.time_budget_minutes
        fraction = self.time_spent / (budget * 60) if budget is not None else 0.0
        for group, scale in zip(self.optimizer.param_groups, self._lr_scales):
            group["lr"] = learning_rate_at(self.config, step, fraction) * scale

    # ----- logging ----------------------------------------------------------------------------
    @property
    def writer(self) -> Any:
        """The TensorBoard SummaryWriter on rank 0 (None elsewhere or when disabled)."""
        if self._writer is None and self.is_main and self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ValueError(
                    "TensorBoard logging needs the 'tensorboard' package: pip install 'varestorer[train]' "
                    "or set train.tensorboard = false"
                ) from error
            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._writer

    def _flush_logs(self) -> None:
        if not self._log_count:
            return
        keys = sorted(self._logs)
        values = torch.tensor([self._logs[k] / self._log_count for k in keys], dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        self._logs, self._log_count = {}, 0
        now = time.perf_counter()
        scalars = dict(zip(keys, values.tolist()))
        scalars["lr"] = self.optimizer.param_groups[0]["lr"]
        scalars["steps_per_second"] = (self.step - self._clock_step) / max(1e-9, now - self._clock)
        self._clock, self._clock_step = now, self.step
        self.log(scalars, prefix="train")
        if self._bar is not None:
            self._bar.set_postfix({k: f"{scalars[k]:.4g}" for k in ("loss", "lr") if k in scalars})

    def log(self, values: dict[str, Any], *, prefix: str) -> None:
        """Write scalars (numbers) and image grids ((B,3,H,W) in [0,1]) under ``prefix/`` on rank 0."""
        if not self.is_main:
            return
        text = " ".join(f"{k}={float(v):.5g}" for k, v in values.items() if not _is_image(v))
        logger.info("step %d %s %s", self.step, prefix, text)
        writer = self.writer
        if writer is None:
            return
        for key, value in values.items():
            if _is_image(value):
                writer.add_image(f"{prefix}/{key}", image_grid(value), self.step)
            else:
                writer.add_scalar(f"{prefix}/{key}", float(value), self.step)
        writer.flush()

    @contextlib.contextmanager
    def eval_module(self) -> Iterator[nn.Module]:
        """The plain module in eval mode, with EMA weights loaded when EMA is on; restored afterwards."""
        self.module.eval()
        try:
            with torch.no_grad(), self.ema.applied(self.module) if self.ema else contextlib.nullcontext():
                yield self.module
        finally:
            self.module.train()

    def run_validation(self) -> dict[str, Any]:
        """Run ``validate`` on rank 0 and log its values under ``val/``; other ranks wait."""
        results: dict[str, Any] = {}
        # Sharded weights are gathered collectively: every process runs the validation forward.
        if (self.is_main or self.sharded) and self.validate_fn is not None:
            if self.sharded:  # the job may call submodules directly, past the root unit's gathering hook
                self.module.unshard()  # type: ignore[operator]
            # bf16 frozen weights need autocast's casts in the validation forward too
            low = self.config.frozen_weights_dtype != "float32"
            with self.eval_module() as module, self.autocast() if low else contextlib.nullcontext():
                results = self.validate_fn(module)
            if self.sharded:
                self.module.reshard()  # type: ignore[operator]
            self.log(results, prefix="val")
        self._last_validated = self.step
        self._barrier()
        return results

    # ----- checkpoints ------------------------------------------------------------------------
    def _trainable_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        tensors.update(dict(self.module.named_buffers()))
        return tensors

    def save(self) -> None:
        """Write a resumable checkpoint (rank 0 writes; every process contributes its RNG state)."""
        rng = [ckpt.capture_rng()]
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if self.is_main:
            tensors = {"trainable": self._trainable_tensors()}
            if self.ema is not None:
                tensors["ema"] = self.ema.state_dict()
            state = {
                "step": self.step,
                "epoch": self._epoch,
                "batch_in_epoch": self._batch_in_epoch,
                "ema_updates": self.ema.num_updates if self.ema else 0,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "world_size": self.world_size,
                "time_spent": self.time_spent,
                "recipe": self.recipe,
            }
            export = None
            if self.export_fn is not None:

                def export(directory: Path) -> None:
                    with self.eval_module() as module:
                        self.export_fn(module, directory)  # type: ignore[misc]

            path = ckpt.save_checkpoint(
                self.checkpoint_root, self.step, tensors, state, export=export, keep_last=self.config.keep_last
            )
            logger.info("saved checkpoint %s", path)
        self._last_saved = self.step
        self._barrier()

    def _load(self, folder: Path) -> None:
        folder, tensors, state = ckpt.load_checkpoint_or_older(folder)  # a corrupt latest: the one before
        own = self._trainable_tensors()
        saved = tensors.get("trainable", {})
        missing = sorted(set(own) - set(saved))
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensor(s), e.g. {missing[0]}")
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in tensors:
            self.ema.load_state_dict(tensors["ema"], state["ema_updates"])
        self.step, self._epoch, self._batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self._clock_step = self.step
        self._spent_before = float(state.get("time_spent", 0.0))  # absent in checkpoints of older versions
        self._set_learning_rate(min(self.step, self.config.max_steps - 1))  # follows a changed max_steps too
        self._last_saved = self.step
        rng = state["rng"]
        if len(rng) == self.world_size:
            ckpt.restore_rng(rng[self.rank])
        else:
            logger.warning("checkpoint came from %d process(es), now %d: reseeding", len(rng), self.world_size)
            seed_everything(self.config.seed + 1 + self.rank + self.step)
        logger.info("resumed from %s (step %d)", folder, self.step)

    def fit(self, dataset: Dataset) -> None:
        """The standard job loop over ``dataset``: forward under autocast, ``backward_step``, then ``close``.

        Jobs with a special loop write it out with ``batches``/``autocast``/``backward_step`` themselves.
        """
        for batch in self.batches(self.make_loader(dataset)):
            with self.autocast():
                loss, logs = self.model(batch, self.step)
            self.backward_step(loss, logs)
        self.close()

    def close(self) -> None:
        """Validate and checkpoint the final step if not done yet, export ``output_dir/model``, close logs."""
        self._flush_logs()
        if self.validate_fn is not None and self._last_validated != self.step:
            self.run_validation()
        if self._last_saved != self.step:
            self.save()
        if self.is_main and self.export_fn is not None:
            self._export_final()
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        self._barrier()
        if self._owns_process_group:
            dist.destroy_process_group()

    def _export_final(self) -> None:
        final = self.output_dir / "model"
        fresh = self.output_dir / f".model.new-{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            with self.eval_module() as module:
                self.export_fn(module, fresh)  # type: ignore[misc]
        except Exception as error:  # a full disk: one line; the checkpoint just saved holds the same weights
            if not is_disk_full(error, self.output_dir):
                raise
            shutil.rmtree(fresh, ignore_errors=True)
            raise disk_full_error(
                self.output_dir, "the final model", "the last checkpoint holds it; free some space"
            ) from None
        old = self.output_dir / f".model.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(fresh, final)
        shutil.rmtree(old, ignore_errors=True)

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _is_image(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4
